//! The HTTP contract without a cluster (`serve --demo`): the demo itself,
//! malformed and hostile requests, and hot reload of the mounted index.

use std::path::Path;
use std::time::Duration;

use crate::support::*;
use base64::Engine as _;
use serde_json::{Value, json};

/// The README's quick start: the demo and its curl print the would-restart list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_answers_the_readme_curl() {
    let p = Pushroll::demo(&[]);
    let client = http();
    let sample = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ar-insert-tag.json"),
    )
    .unwrap();
    // curl -d sends application/x-www-form-urlencoded.
    let r = client
        .post(p.url("/push"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(sample)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["outcome"], "dry-run");
    assert_eq!(body["source"], "file");
    assert_eq!(body["image"], format!("{REPO}:v1.4"));
    assert_eq!(body["digest"], DIGEST);
    let got: Vec<(String, String, String, String)> = body["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let s = |k: &str| w[k].as_str().unwrap().to_owned();
            (s("kind"), s("namespace"), s("name"), s("result"))
        })
        .collect();
    let want = [
        ("Deployment", "production", "web"),
        ("Deployment", "staging", "web"),
        ("StatefulSet", "production", "web-cache"),
    ];
    assert_eq!(got.len(), want.len(), "{body}");
    for (k, ns, n) in want {
        assert!(
            got.contains(&(k.into(), ns.into(), n.into(), "would-restart".into())),
            "{body}"
        );
    }
    // The wrapped and unwrapped samples give the same list.
    let wrapped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/push-wrapped.json"),
    )
    .unwrap();
    let (status, w) = post(&client, &p, wrapped).await;
    assert_eq!((status, &w["workloads"]), (200, &body["workloads"]));
    assert_eq!(w["messageId"], "43");
    let unwrapped = client
        .post(p.url("/push"))
        .header("x-goog-pubsub-message-id", "44")
        .header(
            "x-goog-pubsub-subscription-name",
            "projects/demo-project/subscriptions/gcr-push-raw",
        )
        .body(insert(REPO, "v1.4", DIGEST))
        .send()
        .await
        .unwrap();
    assert_eq!(unwrapped.status(), 200);
    let u: Value = unwrapped.json().await.unwrap();
    assert_eq!(
        (&u["messageId"], &u["workloads"]),
        (&json!("44"), &body["workloads"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_the_contract_codes() {
    let p = Pushroll::demo(&["--max-body-bytes", "4096"]);
    let client = http();
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    let env_with = |data: String| json!({"message": {"data": data, "messageId": "1"}}).to_string();
    let bare = |tag: &str| {
        json!({"action": "INSERT", "digest": format!("{REPO}@{DIGEST}"), "tag": tag}).to_string()
    };
    let huge_tag = format!("{REPO}:{}", "v".repeat(2000));
    let deep = "[".repeat(3000);
    let too_big = "x".repeat(5000);
    // (name, content-type, extra header, body, expected status, expected outcome for 200)
    type Case = (
        &'static str,
        Option<&'static str>,
        Option<(&'static str, &'static str)>,
        Vec<u8>,
        u16,
        Option<&'static str>,
    );
    let cases: Vec<Case> = vec![
        ("empty body", None, None, vec![], 400, None),
        ("not JSON", None, None, b"hello".to_vec(), 400, None),
        (
            "truncated JSON",
            None,
            None,
            b"{\"action\":".to_vec(),
            400,
            None,
        ),
        ("JSON array", None, None, b"[1,2]".to_vec(), 400, None),
        ("JSON number", None, None, b"42".to_vec(), 400, None),
        ("JSON string", None, None, b"\"INSERT\"".to_vec(), 400, None),
        ("empty object", None, None, b"{}".to_vec(), 400, None),
        (
            "message not an object",
            None,
            None,
            br#"{"message":"x"}"#.to_vec(),
            400,
            None,
        ),
        (
            "message null",
            None,
            None,
            br#"{"message":null}"#.to_vec(),
            400,
            None,
        ),
        (
            "data a number",
            None,
            None,
            br#"{"message":{"data":5}}"#.to_vec(),
            400,
            None,
        ),
        (
            "data not base64",
            None,
            None,
            br#"{"message":{"data":"!!!"}}"#.to_vec(),
            400,
            None,
        ),
        (
            "data bad base64 length",
            None,
            None,
            br#"{"message":{"data":"a"}}"#.to_vec(),
            400,
            None,
        ),
        (
            "data base64 of text",
            None,
            None,
            env_with(b64(b"not json")).into_bytes(),
            200,
            Some("ignored"),
        ),
        (
            "data base64 of binary",
            None,
            None,
            env_with(b64(&[0xff, 0xfe, 0x00, 0x80])).into_bytes(),
            200,
            Some("ignored"),
        ),
        (
            "data empty",
            None,
            None,
            env_with(String::new()).into_bytes(),
            200,
            Some("ignored"),
        ),
        (
            "action a number",
            None,
            None,
            br#"{"action":1}"#.to_vec(),
            400,
            None,
        ),
        (
            "tag a number",
            None,
            None,
            br#"{"action":"INSERT","tag":5}"#.to_vec(),
            400,
            None,
        ),
        (
            "DELETE",
            None,
            None,
            br#"{"action":"DELETE","tag":"a/b:c"}"#.to_vec(),
            200,
            Some("ignored"),
        ),
        (
            "digest-only INSERT",
            None,
            None,
            format!(r#"{{"action":"INSERT","digest":"{REPO}@{DIGEST}"}}"#).into_bytes(),
            200,
            Some("ignored"),
        ),
        (
            "invalid reference",
            None,
            None,
            bare("UPPER/Case:v1").into_bytes(),
            200,
            Some("ignored"),
        ),
        (
            "unicode reference",
            None,
            None,
            bare("ünï/cödé:v1").into_bytes(),
            200,
            Some("ignored"),
        ),
        (
            "pinned tag",
            None,
            None,
            bare(&format!("{REPO}:v1@{DIGEST}")).into_bytes(),
            200,
            Some("ignored"),
        ),
        (
            "huge tag",
            None,
            None,
            bare(&huge_tag).into_bytes(),
            200,
            Some("ignored"),
        ),
        (
            "escaped unicode action",
            None,
            None,
            br#"{"action":"INS\u0000ERT\ud83d\ude00","tag":"a:b"}"#.to_vec(),
            200,
            Some("ignored"),
        ),
        (
            "lone surrogate",
            None,
            None,
            br#"{"action":"\ud800"}"#.to_vec(),
            400,
            None,
        ),
        ("deeply nested", None, None, deep.into_bytes(), 400, None),
        (
            "body too large",
            None,
            None,
            too_big.into_bytes(),
            413,
            None,
        ),
        (
            "form-encoded fields",
            Some("application/x-www-form-urlencoded"),
            None,
            b"action=INSERT&tag=x".to_vec(),
            400,
            None,
        ),
        (
            "multipart",
            Some("multipart/form-data; boundary=x"),
            None,
            b"--x\r\n\r\n--x--".to_vec(),
            400,
            None,
        ),
        (
            "text/plain notification",
            Some("text/plain"),
            None,
            insert(REPO, "v1.4", DIGEST).into_bytes(),
            200,
            Some("dry-run"),
        ),
        (
            "odd content type",
            Some("image/png"),
            None,
            insert(REPO, "nothere", DIGEST).into_bytes(),
            200,
            Some("no-match"),
        ),
        (
            "unwrapped non-JSON",
            None,
            Some(("x-goog-pubsub-message-id", "9")),
            b"\x00\x01binary".to_vec(),
            200,
            Some("ignored"),
        ),
        (
            "unwrapped empty",
            None,
            Some(("x-goog-pubsub-message-id", "9")),
            vec![],
            200,
            Some("ignored"),
        ),
        (
            "gzip claimed, not gzip",
            None,
            Some(("content-encoding", "gzip")),
            b"\x1f\x8bnope".to_vec(),
            400,
            None,
        ),
        (
            "duplicate keys",
            None,
            None,
            br#"{"action":"INSERT","action":"DELETE","tag":"a:b"}"#.to_vec(),
            200,
            Some("ignored"),
        ),
        (
            "invalid UTF-8",
            None,
            None,
            b"{\"action\":\"\xff\xfe\"}".to_vec(),
            400,
            None,
        ),
    ];
    assert!(cases.len() >= 25);
    for (name, ct, extra, body, want, outcome) in cases {
        let mut req = client.post(p.url("/push")).body(body);
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        if let Some((k, v)) = extra {
            req = req.header(k, v);
        }
        let r = req.send().await.unwrap_or_else(|e| panic!("{name}: {e}"));
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        let json: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{name}: not JSON: {text}"));
        assert_eq!(status, want, "{name}: {json}");
        match outcome {
            Some(o) => assert_eq!(json["outcome"], o, "{name}: {json}"),
            None => assert!(
                json["error"].is_string() && json["detail"].is_string(),
                "{name}: {json}"
            ),
        }
    }
    // A body streamed without Content-Length is bounded too.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..10).map(|_| Ok(vec![b' '; 1000])).collect();
    let stream = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let r = client
        .post(p.url("/push"))
        .body(stream)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // The unread rest of the body is still on the wire: the connection is
    // closed, and the client told so (else its next request on it fails).
    assert_eq!(
        r.headers().get("connection").map(|v| v.to_str().unwrap()),
        Some("close")
    );
    // Wrong methods and paths.
    assert_eq!(
        client.get(p.url("/push")).send().await.unwrap().status(),
        405
    );
    assert_eq!(
        client.post(p.url("/nope")).send().await.unwrap().status(),
        404
    );
    // Still serving, never panicked, never a 500.
    assert_eq!(
        client.get(p.url("/healthz")).send().await.unwrap().status(),
        200
    );
    let (status, _) = post(&client, &p, insert(REPO, "v1.4", DIGEST)).await;
    assert_eq!(status, 200);
    let logs = p.logs().join("\n");
    assert!(!logs.contains("panicked"), "{logs}");
    let metrics = p.metrics().await;
    assert!(!metrics.contains("code=\"500\""), "{metrics}");
}

fn index_json(image: &str, names: &[&str]) -> String {
    let workloads: Vec<Value> = names
        .iter()
        .map(|n| json!({"kind": "Deployment", "namespace": "default", "name": n, "containers": ["app"]}))
        .collect();
    json!({"version": 1, "generatedAt": "2026-11-26T12:00:00Z", "images": {image: workloads}})
        .to_string()
}

/// Lays out a directory the way kubelet lays out a ConfigMap volume:
/// `..data -> ..<ts>`, `index.json -> ..data/index.json`.
struct ConfigMapVolume {
    dir: tempfile::TempDir,
    generation: u32,
}

impl ConfigMapVolume {
    fn new(content: &str) -> ConfigMapVolume {
        let mut v = ConfigMapVolume {
            dir: tempfile::tempdir().unwrap(),
            generation: 0,
        };
        v.swap(content);
        std::os::unix::fs::symlink("..data/index.json", v.dir.path().join("index.json")).unwrap();
        v
    }

    /// Writes a new timestamped directory and atomically swaps `..data`.
    fn swap(&mut self, content: &str) {
        self.generation += 1;
        let ts = format!(
            "..2026_11_26_00_00_{:02}.{}",
            self.generation,
            std::process::id()
        );
        let root = self.dir.path();
        std::fs::create_dir(root.join(&ts)).unwrap();
        std::fs::write(root.join(&ts).join("index.json"), content).unwrap();
        let tmp = root.join("..data_tmp");
        std::os::unix::fs::symlink(&ts, &tmp).unwrap();
        std::fs::rename(&tmp, root.join("..data")).unwrap();
    }

    fn path(&self) -> String {
        self.dir
            .path()
            .join("index.json")
            .to_string_lossy()
            .into_owned()
    }
}

async fn names_for(client: &reqwest::Client, p: &Pushroll, tag: &str) -> Vec<String> {
    let (status, body) = post(client, p, insert(REPO, tag, DIGEST)).await;
    assert_eq!(status, 200, "{body}");
    body["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_volume_swap_is_used_without_a_restart() {
    let image = format!("{REPO}:v2");
    let mut volume = ConfigMapVolume::new(&index_json(&image, &["one"]));
    // A long safety-net interval: only the directory watch can explain a fast reload.
    let p = Pushroll::demo(&[
        "--index-file",
        &volume.path(),
        "--index-reload-interval",
        "1h",
    ]);
    let client = http();
    assert_eq!(names_for(&client, &p, "v2").await, ["one"]);

    volume.swap(&index_json(&image, &["one", "two"]));
    // Seconds, not the hour of the safety net: only the directory watch
    // explains it (10 s, not 2: the suite runs tests side by side).
    let seen = eventually(Duration::from_secs(10), || async {
        let names = names_for(&client, &p, "v2").await;
        (names.len() == 2).then_some(names)
    })
    .await;
    assert_eq!(
        seen.expect("the swapped index is used within 10 s"),
        ["one", "two"]
    );

    // A corrupt new index leaves the old one in use.
    let reloads_before = metric(
        &p.metrics().await,
        "pushroll_index_reloads_total{result=\"file-error\"}",
    );
    volume.swap("{ this is not an index");
    eventually(Duration::from_secs(2), || async {
        (metric(
            &p.metrics().await,
            "pushroll_index_reloads_total{result=\"file-error\"}",
        ) > reloads_before)
            .then_some(())
    })
    .await
    .expect("the broken index is noticed");
    assert_eq!(names_for(&client, &p, "v2").await, ["one", "two"]);
    assert_eq!(
        client.get(p.url("/readyz")).send().await.unwrap().status(),
        200
    );

    // And the next good one is picked up again.
    volume.swap(&index_json(&image, &["three"]));
    let seen = eventually(Duration::from_secs(2), || async {
        let names = names_for(&client, &p, "v2").await;
        (names == ["three"]).then_some(())
    })
    .await;
    assert!(seen.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gz_sibling_is_read_and_no_index_means_not_ready() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.json");
    let p = Pushroll::demo(&[
        "--index-file",
        path.to_str().unwrap(),
        "--index-reload-interval",
        "1h",
    ]);
    let client = http();
    // No file, no cluster: not ready, and a push is 503 so Pub/Sub retries.
    let r = client.get(p.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let (status, body) = post(&client, &p, insert(REPO, "v3", DIGEST)).await;
    assert_eq!(status, 503, "{body}");
    // The indexer writes gzip for large indexes: index.json.gz beside index.json.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(index_json(&format!("{REPO}:v3"), &["zipped"]).as_bytes())
        .unwrap();
    std::fs::write(dir.path().join("index.json.gz"), gz.finish().unwrap()).unwrap();
    let seen = eventually(Duration::from_secs(2), || async {
        let (status, body) = post(&client, &p, insert(REPO, "v3", DIGEST)).await;
        (status == 200).then_some(body)
    })
    .await
    .expect("the .gz index is loaded");
    assert_eq!(seen["workloads"][0]["name"], "zipped");
    assert_eq!(
        client.get(p.url("/readyz")).send().await.unwrap().status(),
        200
    );
}

#[test]
fn lookup_prints_the_workloads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.json");
    std::fs::write(
        &path,
        index_json("docker.io/library/nginx:latest", &["web", "edge"]),
    )
    .unwrap();
    let file = path.to_string_lossy().into_owned();
    let (status, out, err) =
        Pushroll::run(&["lookup", "nginx", "--index-file", &file, "--json"], &[]);
    assert!(status.success(), "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["image"], "docker.io/library/nginx:latest");
    assert_eq!(v["source"], "file");
    assert_eq!(v["workloads"].as_array().unwrap().len(), 2);
    let (status, out, _) = Pushroll::run(
        &[
            "lookup",
            "nginx:1.0",
            "--index-file",
            &file,
            "--on-miss",
            "none",
        ],
        &[],
    );
    assert!(status.success());
    assert!(
        out.contains("no workload uses docker.io/library/nginx:1.0"),
        "{out}"
    );
    let (status, _, err) = Pushroll::run(&["lookup", "Not An Image", "--index-file", &file], &[]);
    assert!(!status.success());
    assert!(err.contains("not an image reference"), "{err}");
}

/// What a pod under deploy/'s 128Mi memory limit reads at most
/// (`Limits::for_memory_limit`: an eighth of it). Given explicitly so the
/// test does not depend on the memory limit of the machine running it.
const MAX_INDEX_BYTES_AT_128MI: &str = "16777216";
/// serve's memory limit in deploy/, in KiB, and the peak a bomb may cause:
/// well under it.
const POD_LIMIT_KIB: u64 = 128 * 1024;
const PEAK_BOUND_KIB: u64 = POD_LIMIT_KIB * 3 / 4;

/// A gzip bomb a ConfigMap can hold (~450 KiB; `binaryData` holds up to
/// 740 KiB, the review's was 712 KiB) that inflates to 63.2 MiB of valid
/// index JSON (just under the old 64 MiB cap): 2,100,001 tiny entries,
/// which took `pushroll lookup` to a peak of over 500 MiB before reading
/// was bounded.
///
/// Compressing 63 MiB in a debug build takes a minute, so one 1 MiB chunk
/// is compressed after a full flush (which resets deflate's dictionary, so
/// the chunk's bytes refer only to themselves) and its bytes repeated.
fn gzip_bomb() -> Vec<u8> {
    use flate2::{Compress, Compression, Crc, FlushCompress};
    let head = br#"{"version":1,"images":{"docker.io/library/app:v1":["#;
    let tail = br#"{"namespace":"a","name":"last"}]}}"#;
    // Names repeat every 250 entries (~7 KB, inside deflate's window).
    let period: String = (0..250)
        .map(|i| format!(r#"{{"namespace":"a","name":"w{i}"}},"#))
        .collect();
    let chunk = period.repeat(140);
    let repeats = 60;
    let mut deflate = Compress::new(Compression::best(), false);
    let mut part = |input: &[u8], flush| {
        let mut out = Vec::with_capacity(input.len() + 1024);
        let before = deflate.total_in();
        deflate.compress_vec(input, &mut out, flush).unwrap();
        assert_eq!(
            deflate.total_in() - before,
            input.len() as u64,
            "all compressed"
        );
        out
    };
    let (h, c, t) = (
        part(head, FlushCompress::Full),
        part(chunk.as_bytes(), FlushCompress::Full),
        part(tail, FlushCompress::Finish),
    );
    let mut crc = Crc::new();
    crc.update(head);
    let mut chunk_crc = Crc::new();
    chunk_crc.update(chunk.as_bytes());
    for _ in 0..repeats {
        crc.combine(&chunk_crc);
    }
    crc.update(tail);
    let mut bomb = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 255];
    bomb.extend_from_slice(&h);
    for _ in 0..repeats {
        bomb.extend_from_slice(&c);
    }
    bomb.extend_from_slice(&t);
    bomb.extend_from_slice(&crc.sum().to_le_bytes());
    bomb.extend_from_slice(&crc.amount().to_le_bytes());
    bomb
}

#[test]
fn lookup_refuses_a_gzip_bomb_within_the_memory_limit() {
    let dir = tempfile::tempdir().unwrap();
    let bomb = gzip_bomb();
    eprintln!("the bomb: {} KiB of gzip", bomb.len() / 1024);
    std::fs::write(dir.path().join("index.json.gz"), bomb).unwrap();
    let file = dir.path().join("index.json");
    let (code, out, err, peak_kib) = Pushroll::run_peak_rss(
        &[
            "lookup",
            "docker.io/library/app:v1",
            "--index-file",
            file.to_str().unwrap(),
        ],
        &[(
            "PUSHROLL_MAX_INDEX_BYTES",
            MAX_INDEX_BYTES_AT_128MI.to_owned(),
        )],
        Duration::from_secs(120),
    );
    eprintln!("pushroll lookup of a gzip bomb: peak RSS {peak_kib} KiB");
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("index is too large"), "{err}");
    assert!(
        peak_kib < PEAK_BOUND_KIB,
        "peak RSS {peak_kib} KiB, the pod's limit is {POD_LIMIT_KIB} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_bomb_after_a_good_index_leaves_the_good_one_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.json");
    std::fs::write(&path, index_json(&format!("{REPO}:v2"), &["one"])).unwrap();
    let p = Pushroll::start_env(
        &[
            "serve",
            "--demo",
            "--listen",
            "127.0.0.1:0",
            "--index-file",
            path.to_str().unwrap(),
            "--index-reload-interval",
            "1h",
        ],
        &[(
            "PUSHROLL_MAX_INDEX_BYTES",
            MAX_INDEX_BYTES_AT_128MI.to_owned(),
        )],
    );
    let client = http();
    assert_eq!(names_for(&client, &p, "v2").await, ["one"]);
    let errors = "pushroll_index_reloads_total{result=\"file-error\"}";
    let before = metric(&p.metrics().await, errors);
    // The ConfigMap changes from `data` to `binaryData`: the bomb arrives
    // as index.json.gz and index.json goes.
    std::fs::write(dir.path().join("index.json.gz"), gzip_bomb()).unwrap();
    std::fs::remove_file(&path).unwrap();
    eventually(Duration::from_secs(30), || async {
        (metric(&p.metrics().await, errors) > before).then_some(())
    })
    .await
    .expect("the bomb is read and refused");
    assert_eq!(names_for(&client, &p, "v2").await, ["one"]);
    assert_eq!(
        client.get(p.url("/readyz")).send().await.unwrap().status(),
        200
    );
    let peak_kib = p.peak_rss_kib();
    eprintln!("serve after a gzip bomb: peak RSS {peak_kib} KiB");
    assert!(
        peak_kib < PEAK_BOUND_KIB,
        "peak RSS {peak_kib} KiB, the pod's limit is {POD_LIMIT_KIB} KiB"
    );
    let logs = p.logs().join("\n");
    assert!(logs.contains("index is too large"), "{logs}");
}
