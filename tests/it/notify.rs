//! Notifications end to end, to receivers on loopback. Against the fake
//! API server: serve tells of a restart once, with the documented fields
//! (`openapi.yaml`'s webhook schema), never logging the URL's path or
//! query, and its `slack` bodies are what an incoming webhook takes.
//! Against the real kube-apiserver and controller-manager with the
//! simulated kubelet: a restart and its completed rollout each arrive
//! once, whatever is redelivered (skipped without one; a failure under CI).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::cluster::{Cluster, index_for, workload};
use crate::support::kubelet::{digest, pod_deployment, real_with_kubelet};
use crate::support::rollout::{events, push_until_found, serve_indexer, wait_event};
use crate::support::*;
use serde_json::{Value, json};

/// What a receiver was sent: each body, in order.
type Got = Arc<Mutex<Vec<Value>>>;

/// A receiver on loopback that keeps every JSON body and answers 200.
async fn receiver() -> (String, Got, tokio::sync::oneshot::Sender<()>) {
    receiver_checking(|_, _| Ok(())).await
}

/// A receiver that answers 400 with `check`'s complaint (as Slack does)
/// when a request is not what it takes, else keeps the body and answers 200.
async fn receiver_checking(
    check: fn(&axum::http::HeaderMap, &[u8]) -> Result<(), String>,
) -> (String, Got, tokio::sync::oneshot::Sender<()>) {
    let got: Got = Arc::new(Mutex::new(Vec::new()));
    let seen = got.clone();
    let app = axum::Router::new().route(
        "/hooks/{key}",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let seen = seen.clone();
                async move {
                    if let Err(why) = check(&headers, &body) {
                        return (axum::http::StatusCode::BAD_REQUEST, why);
                    }
                    let doc: Value = serde_json::from_slice(&body).expect("a JSON body");
                    seen.lock().unwrap().push(doc);
                    (axum::http::StatusCode::OK, "ok".to_owned())
                }
            },
        ),
    );
    let (addr, stop) = serve_local(app).await;
    (
        format!("http://{addr}/hooks/PATHSECRET?token=QUERYSECRET"),
        got,
        stop,
    )
}

/// What a Slack incoming webhook takes: a JSON object with a non-empty
/// `text` and only the fields it knows; `invalid_payload` / `no_text`
/// otherwise (Google Chat's webhook takes the same `text`).
fn slack_incoming_webhook(headers: &axum::http::HeaderMap, body: &[u8]) -> Result<(), String> {
    let json_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    if !json_type {
        return Err("invalid_payload: not application/json".into());
    }
    let doc: Value = serde_json::from_slice(body).map_err(|e| format!("invalid_payload: {e}"))?;
    let fields = doc.as_object().ok_or("invalid_payload: not an object")?;
    const KNOWN: [&str; 11] = [
        "text",
        "blocks",
        "attachments",
        "thread_ts",
        "mrkdwn",
        "username",
        "icon_emoji",
        "icon_url",
        "channel",
        "unfurl_links",
        "unfurl_media",
    ];
    if let Some(unknown) = fields.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(format!("invalid_payload: unknown field {unknown}"));
    }
    match fields.get("text").and_then(Value::as_str) {
        Some(t) if !t.trim().is_empty() => Ok(()),
        _ => Err("no_text".into()),
    }
}

/// Every notification validates against `openapi.yaml`'s schema for it.
fn documented(doc: &Value, schema: &str) {
    crate::support::openapi::check(
        &crate::support::openapi::spec(),
        &format!("/components/schemas/{schema}"),
        doc,
        "a notification",
    );
}

/// `serve` against the fake API server with one Deployment `web` running
/// `REPO:v1` (with `annotations` on its metadata), its index in the
/// ConfigMap, telling `url` with `extra` flags.
async fn serve_telling(
    url: &str,
    annotations: Value,
    extra: &[&str],
) -> (Cluster, String, Pushroll, tempfile::TempDir) {
    let c = Cluster::fake().await;
    let ns = c.ns("notify");
    let img = format!("{REPO}:v1");
    c.create(workload(
        "Deployment",
        &ns,
        "web",
        &[("web", &img)],
        &[],
        annotations,
    ))
    .await;
    c.write_index_configmap(
        "pushroll",
        "pushroll-index",
        &index_for(&img, &[("Deployment", &ns, "web", &["web"])]),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("index.json");
    let mut args = vec![
        "--index-file",
        missing.to_str().unwrap(),
        "--index-configmap",
        "pushroll/pushroll-index",
        "--notify-url",
        url,
    ];
    args.extend_from_slice(extra);
    let p = Pushroll::serve_open(&c.kubeconfig, &args);
    (c, ns, p, dir)
}

/// Must show 1 (a restart) and 3: told once, with the documented fields;
/// the URL's path and query never logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_is_told_once_with_the_documented_fields() {
    let (url, got, _stop) = receiver().await;
    let (_c, ns, p, _dir) = serve_telling(&url, json!({}), &[]).await;
    let img = format!("{REPO}:v1");
    let client = http();
    let push = wrapped(&insert(REPO, "v1", DIGEST), "m-7", SUBSCRIPTION);
    let (status, body) = post(&client, &p, push.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["workloads"][0]["result"], "restarted", "{body}");
    // A redelivery is already current: nothing more to tell.
    let (_, body) = post(&client, &p, push).await;
    assert_eq!(body["workloads"][0]["result"], "already-current", "{body}");
    let told = eventually(Duration::from_secs(10), || async {
        let got = got.lock().unwrap().clone();
        (!got.is_empty()).then_some(got)
    })
    .await
    .expect("the receiver is told");
    let delivered = eventually(Duration::from_secs(10), || async {
        let m = p.metrics().await;
        (metric(&m, "pushroll_notifications_total{result=\"delivered\"}") == 1.0).then_some(())
    })
    .await;
    assert!(delivered.is_some(), "{}", p.metrics().await);
    assert_eq!(told.len(), 1, "{told:?}");
    let doc = &told[0];
    documented(doc, "Happening");
    assert_eq!(doc["event"], "restarted");
    assert_eq!(
        doc["workload"],
        json!({"kind": "Deployment", "namespace": ns, "name": "web"})
    );
    assert_eq!(doc["image"], img.as_str());
    assert_eq!(doc["digest"], DIGEST);
    assert_eq!(doc["messageId"], "m-7");
    assert!(
        doc["time"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .is_ok()
    );
    let logs = p.logs().join("\n");
    assert!(logs.contains("notifications on"), "{logs}");
    assert!(
        !logs.contains("PATHSECRET") && !logs.contains("QUERYSECRET"),
        "{logs}"
    );
}

/// Must show 2: `--notify-format slack` bodies, for a restart and for a
/// push left waiting, are what an incoming webhook takes (the receiver
/// answers 400 otherwise, which would count as `refused`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_bodies_are_what_an_incoming_webhook_takes() {
    let (url, got, _stop) = receiver_checking(slack_incoming_webhook).await;
    let (c, ns, p, _dir) = serve_telling(&url, json!({}), &["--notify-format", "slack"]).await;
    let client = http();
    let push = wrapped(&insert(REPO, "v1", DIGEST), "m-1", SUBSCRIPTION);
    let (status, body) = post(&client, &p, push).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["workloads"][0]["result"], "restarted", "{body}");
    // Now an approval is required: the next push waits (`pending`).
    c.merge_patch(
        "Deployment",
        &ns,
        "web",
        json!({"metadata": {"annotations": {"pushroll.io/approval": "required"}}}),
    )
    .await;
    let push = wrapped(&insert(REPO, "v1", DIGEST2), "m-2", SUBSCRIPTION);
    let (status, body) = post(&client, &p, push).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["workloads"][0]["result"], "pending-approval", "{body}");
    let delivered = eventually(Duration::from_secs(10), || async {
        let m = p.metrics().await;
        (metric(&m, "pushroll_notifications_total{result=\"delivered\"}") == 2.0).then_some(m)
    })
    .await
    .unwrap_or_else(|| panic!("{}", p.logs().join("\n")));
    assert_eq!(
        metric(
            &delivered,
            "pushroll_notifications_total{result=\"refused\"}"
        ),
        0.0
    );
    let told = got.lock().unwrap().clone();
    assert_eq!(told.len(), 2, "{told:?}");
    for (doc, event) in told.iter().zip(["restarted", "pending"]) {
        documented(doc, "SlackMessage");
        let text = doc["text"].as_str().unwrap();
        assert!(
            text.contains(event) && text.contains(&format!("{ns}/web")),
            "{text}"
        );
    }
}

/// Must show 1 (a restart and a completed rollout, each once): serve tells
/// of the restart, the Lease holder of the rollout's completion. Five
/// redeliveries tell nothing more: a restart of another workload, queued
/// behind anything they could have queued, arrives next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_and_its_completed_rollout_are_each_told_once() {
    let Some((c, ns, k)) = real_with_kubelet("notify-real", 1).await else {
        return;
    };
    let (image, fence_image) = (format!("{REPO}:stable"), format!("{REPO}:fence"));
    let (old, new) = (digest('a'), digest('b'));
    k.push(&image, &old);
    k.push(&fence_image, &old);
    c.create(pod_deployment(&ns, "web", &[("app", &image, "Always")]))
        .await;
    c.create(pod_deployment(
        &ns,
        "fence",
        &[("app", &fence_image, "Always")],
    ))
    .await;
    k.wait_rollout("Deployment", &ns, "web", Duration::from_secs(60))
        .await;
    let (url, got, _stop) = receiver().await;
    let (p, _) = serve_indexer(&c, &ns, "notify-0", &["--notify-url", &url]).await;

    k.push(&image, &new);
    let push = wrapped(&insert(REPO, "stable", &new), "m-41", SUBSCRIPTION);
    let body = push_until_found(&p, &push, 1).await;
    assert_eq!(body["workloads"][0]["result"], "restarted", "{body}");
    wait_event(
        &c,
        &p,
        &ns,
        "web",
        "PushRolloutComplete",
        Duration::from_secs(60),
    )
    .await;
    let about_web = |got: &Got| -> Vec<Value> {
        got.lock()
            .unwrap()
            .iter()
            .filter(|d| d["workload"]["name"] == "web")
            .cloned()
            .collect()
    };
    let told = eventually(Duration::from_secs(10), || async {
        let docs = about_web(&got);
        (docs.len() >= 2).then_some(docs)
    })
    .await
    .unwrap_or_else(|| panic!("{:?}\n{}", got.lock().unwrap(), p.logs().join("\n")));
    let client = http();
    for _ in 0..5 {
        let (status, body) = post(&client, &p, push.clone()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["workloads"][0]["result"], "already-current", "{body}");
    }
    k.push(&fence_image, &new);
    let fence = wrapped(&insert(REPO, "fence", &new), "m-42", SUBSCRIPTION);
    let (_, body) = post(&client, &p, fence).await;
    assert_eq!(body["workloads"][0]["result"], "restarted", "{body}");
    eventually(Duration::from_secs(10), || async {
        let fenced = got
            .lock()
            .unwrap()
            .iter()
            .any(|d| d["workload"]["name"] == "fence" && d["event"] == "restarted");
        fenced.then_some(())
    })
    .await
    .expect("the fence's restart is told");

    assert_eq!(about_web(&got), told, "nothing more about web");
    let events: Vec<&str> = told.iter().map(|d| d["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["restarted", "rollout-complete"], "{told:#?}");
    for doc in &told {
        documented(doc, "Happening");
        assert_eq!(
            doc["workload"],
            json!({"kind": "Deployment", "namespace": ns, "name": "web"})
        );
        assert_eq!(doc["digest"], new.as_str());
        assert_eq!(doc["image"], image.as_str(), "{doc}");
    }
    assert_eq!(told[0]["messageId"], "m-41");
    assert_eq!(
        events_named(&c, &ns, "PushRolloutComplete").await,
        1,
        "one Event, one notification"
    );
    k.stop().await;
}

async fn events_named(c: &Cluster, ns: &str, reason: &str) -> usize {
    events(c, ns, "web", reason).await.len()
}

/// Must show 3, at start-up: a `--notify-url` that does not parse (a
/// scheme forgotten) is refused with exit code 2, naming the flag and why,
/// and never echoing the URL, from the flag or from the environment.
#[test]
fn a_malformed_notify_url_is_refused_without_being_echoed() {
    let secret = "hooks.slack.com/services/T000/PATHSECRET?token=QUERYSECRET";
    let by_flag = Pushroll::run(&["serve", "--demo", "--notify-url", secret], &[]);
    let by_env = Pushroll::run(
        &["index", "--watch"],
        &[("PUSHROLL_NOTIFY_URL", secret.to_owned())],
    );
    for (status, stdout, stderr) in [by_flag, by_env] {
        assert_eq!(status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("--notify-url") && stderr.contains("relative URL without a base"),
            "{stderr}"
        );
        for out in [&stdout, &stderr] {
            assert!(
                !out.contains("PATHSECRET") && !out.contains("QUERYSECRET"),
                "{out}"
            );
        }
    }
}
