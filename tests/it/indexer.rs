//! The indexer end to end: `pushroll index` (once, and `--watch` with
//! leader election) against the fake API server, and the real one where the
//! scenario does not need the fake's request log.

use std::time::{Duration, Instant};

use crate::support::cluster::{Backend, Cluster, deploy_objects, workload};
use crate::support::indexer::*;
use crate::support::*;
use fake_apiserver::FaultRule;
use serde_json::{Value, json};

on_both!(
    index_output_is_exactly_the_expected_index,
    watch_keeps_the_configmap_current,
    only_the_leader_writes,
    a_deleted_lease_is_recreated_every_time,
    serve_indexer_answers_from_its_own_watch
);

async fn index_output_is_exactly_the_expected_index(c: Cluster) {
    let (a, b) = (c.ns("idx-a"), c.ns("idx-b"));
    let d = DIGEST;
    for obj in [
        workload(
            "Deployment",
            &a,
            "web",
            &[
                ("web", "us-east1-docker.pkg.dev/p/r/web:v1"),
                ("proxy", "nginx"),
            ],
            &[],
            json!({}),
        ),
        workload(
            "Deployment",
            &a,
            "upper",
            &[("web", "US-EAST1-DOCKER.pkg.dev/p/r/web:v1")],
            &[],
            json!({}),
        ),
        workload(
            "StatefulSet",
            &a,
            "db",
            &[("pg", "postgres:16")],
            &[("migrate", "us-east1-docker.pkg.dev/p/r/web:v1")],
            json!({}),
        ),
        workload(
            "DaemonSet",
            &b,
            "agent",
            &[("agent", "docker.io/library/nginx:latest")],
            &[],
            json!({}),
        ),
        workload(
            "Deployment",
            &b,
            "pinned",
            &[("web", &format!("us-east1-docker.pkg.dev/p/r/web:v1@{d}"))],
            &[],
            json!({}),
        ),
        workload(
            "Deployment",
            &b,
            "digest-only",
            &[("web", &format!("us-east1-docker.pkg.dev/p/r/web@{d}"))],
            &[],
            json!({}),
        ),
    ] {
        c.create(obj).await;
    }
    let ns_flag = format!("{a},{b}");
    let (status, out, err) = Pushroll::run(
        &["index", "--output", "-", "--namespace", &ns_flag],
        &kubeconfig_env(&c),
    );
    assert!(status.success(), "{err}");
    let index: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(index["version"], 1);
    assert!(
        index["generatedAt"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .is_ok()
    );
    let w = |kind: &str, ns: &str, name: &str, cs: &[&str]| json!({"kind": kind, "namespace": ns, "name": name, "containers": cs});
    let expected = json!({
        "docker.io/library/nginx:latest": [w("Deployment", &a, "web", &["proxy"]), w("DaemonSet", &b, "agent", &["agent"])],
        "docker.io/library/postgres:16": [w("StatefulSet", &a, "db", &["pg"])],
        "us-east1-docker.pkg.dev/p/r/web:v1": [
            w("Deployment", &a, "upper", &["web"]),
            w("Deployment", &a, "web", &["web"]),
            w("StatefulSet", &a, "db", &["migrate"]),
        ],
    });
    assert_eq!(
        index["images"],
        expected,
        "{}",
        serde_json::to_string_pretty(&index).unwrap()
    );
}

/// Starts `index --watch` writing to `cm_ns`.
async fn watch_keeps_the_configmap_current(c: Cluster) {
    let (ns, cm_ns) = (c.ns("watch"), c.ns("pushroll"));
    c.ensure_namespace(&cm_ns).await;
    let img = |t: &str| format!("{REPO}:{t}");
    c.deploy(&ns, "one", &img("v1")).await;
    let p = start_watch(&c, &cm_ns, &ns, "indexer-0");
    p.wait_ready(READY_LIMIT).await;
    let entry = |name: &str| json!([{"kind": "Deployment", "namespace": ns, "name": name, "containers": ["app"]}]);

    // Created, changed, deleted: the ConfigMap follows within the debounce.
    let follows = |want: Value| {
        let (c, cm_ns) = (&c, &cm_ns);
        async move {
            let started = Instant::now();
            let seen = eventually(Duration::from_secs(10), || {
                let want = want.clone();
                async move { (configmap_images(c, cm_ns).await == Some(want.clone())).then_some(()) }
            })
            .await;
            assert!(seen.is_some(), "the ConfigMap did not become {want}");
            started.elapsed()
        }
    };
    // Once it leads, the indexer writes what it found.
    follows(json!({ img("v1"): entry("one") })).await;
    c.create(workload(
        "StatefulSet",
        &ns,
        "two",
        &[("app", &img("v1"))],
        &[],
        json!({}),
    ))
    .await;
    let took = follows(json!({ img("v1"): [entry("one")[0].clone(), {"kind": "StatefulSet", "namespace": ns, "name": "two", "containers": ["app"]}] })).await;
    eprintln!("create → ConfigMap: {took:?}");
    c.merge_patch("StatefulSet", &ns, "two", json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": img("v2")}]}}}})).await;
    follows(json!({ img("v1"): entry("one"), img("v2"): [{"kind": "StatefulSet", "namespace": ns, "name": "two", "containers": ["app"]}] })).await;
    c.delete("StatefulSet", &ns, "two").await;
    follows(json!({ img("v1"): entry("one") })).await;

    // A change that does not touch images (replicas) changes nothing and
    // writes nothing: wait until the indexer has processed its event.
    let before = p.metrics().await;
    let events = metric(
        &before,
        "pushroll_watch_events_total{result=\"deployments\"}",
    );
    c.merge_patch("Deployment", &ns, "one", json!({"spec": {"replicas": 3}}))
        .await;
    let after = eventually(Duration::from_secs(10), || async {
        let m = p.metrics().await;
        (metric(&m, "pushroll_watch_events_total{result=\"deployments\"}") > events).then_some(m)
    })
    .await
    .expect("the replica change is seen");
    assert_eq!(
        metric(&after, "pushroll_index_changes_total"),
        metric(&before, "pushroll_index_changes_total")
    );
    assert_eq!(
        metric(&after, "pushroll_index_writes_total{result=\"written\"}"),
        metric(&before, "pushroll_index_writes_total{result=\"written\"}")
    );
    assert_eq!(metric(&after, "pushroll_indexer_leader"), 1.0);
}

async fn only_the_leader_writes(c: Cluster) {
    let (ns, cm_ns) = (c.ns("lease"), c.ns("pushroll"));
    c.ensure_namespace(&cm_ns).await;
    c.deploy(&ns, "one", &format!("{REPO}:v1")).await;
    let mut a = start_watch(&c, &cm_ns, &ns, "indexer-a");
    let mut b = start_watch(&c, &cm_ns, &ns, "indexer-b");
    // One of them leads and writes; the other follows and never writes.
    let (lead, follow) = leader_and_follower(&mut a, &mut b).await;
    lead.wait_ready(READY_LIMIT).await;
    follow.wait_ready(READY_LIMIT).await;
    c.deploy(&ns, "two", &format!("{REPO}:v2")).await;
    eventually(Duration::from_secs(10), || async {
        configmap_images(&c, &cm_ns)
            .await
            .filter(|i| i.get(format!("{REPO}:v2")).is_some())
    })
    .await
    .expect("the leader writes the change");
    let fm = follow.metrics().await;
    assert_eq!(
        metric(&fm, "pushroll_index_writes_total{result=\"written\"}"),
        0.0,
        "the follower never writes"
    );

    // The leader dies without releasing the Lease: the other takes over
    // within the lease duration and writes what changed meanwhile.
    lead.kill();
    let killed = Instant::now();
    c.deploy(&ns, "three", &format!("{REPO}:v3")).await;
    eventually(Duration::from_secs(20), || async {
        configmap_images(&c, &cm_ns)
            .await
            .filter(|i| i.get(format!("{REPO}:v3")).is_some())
    })
    .await
    .expect("the new leader writes");
    let took = killed.elapsed();
    eprintln!("leader killed → new leader wrote after {took:?} (lease 3 s)");
    assert!(took < Duration::from_secs(3 + 3), "took {took:?}");
    let fm = follow.metrics().await;
    assert_eq!(metric(&fm, "pushroll_indexer_leader"), 1.0);
}

/// Deleting the Lease (an operator's fix for a stuck one) must not stop
/// index writes: kube-lease-manager creates it only at start. Ten times in
/// a row, each followed by a change that must reach the ConfigMap.
async fn a_deleted_lease_is_recreated_every_time(c: Cluster) {
    let (ns, cm_ns) = (c.ns("lease-gone"), c.ns("pushroll"));
    c.ensure_namespace(&cm_ns).await;
    c.deploy(&ns, "first", &format!("{REPO}:v0")).await;
    let p = start_watch(&c, &cm_ns, &ns, "indexer-0");
    p.wait_ready(READY_LIMIT).await;
    let lease_duration = Duration::from_secs(3);
    for round in 1..=10 {
        c.delete("Lease", &cm_ns, "pushroll-indexer").await;
        let deleted = Instant::now();
        let tag = format!("l{round}");
        c.deploy(&ns, &format!("after-{round}"), &format!("{REPO}:{tag}"))
            .await;
        let seen = configmap_lists(
            &c,
            &cm_ns,
            &format!("{REPO}:{tag}"),
            lease_duration + Duration::from_secs(5),
        )
        .await;
        assert!(
            seen,
            "round {round}: the index stopped following after the Lease was deleted:\n{}",
            p.logs().join("\n")
        );
        eprintln!(
            "round {round}: Lease deleted → change written after {:?}",
            deleted.elapsed()
        );
        let lease = c
            .get("Lease", &cm_ns, "pushroll-indexer")
            .await
            .expect("the Lease exists again");
        assert_eq!(
            lease["spec"]["holderIdentity"], "indexer-0",
            "round {round}"
        );
    }
    let m = p.metrics().await;
    assert!(
        metric(&m, "pushroll_lease_recreations_total{result=\"recreated\"}") >= 10.0,
        "{m}"
    );
}

/// An idle watch outlives `--api-timeout`: the short read timeout is for
/// calls, and would otherwise cut every quiet watch and re-open it (a WARN
/// and three new watches every few seconds, for ever). Fake only: the real
/// server may send bookmarks, which would hide the bug.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_watch_is_not_cut_by_the_api_timeout() {
    let c = Cluster::fake().await;
    let (ns, cm_ns) = (c.ns("idle"), c.ns("pushroll"));
    c.ensure_namespace(&cm_ns).await;
    c.deploy(&ns, "one", &format!("{REPO}:v1")).await;
    let p = start_watch_with(&c, &cm_ns, &ns, "indexer-0", &["--api-timeout", "300ms"]);
    let written = |m: &str| metric(m, "pushroll_index_writes_total{result=\"written\"}");
    let first = eventually(Duration::from_secs(10), || async {
        (written(&p.metrics().await) >= 1.0).then_some(())
    })
    .await;
    assert!(first.is_some(), "{}", p.logs().join("\n"));
    // Idle for many read timeouts: the time itself is what is tested.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let m = p.metrics().await;
    let errors: f64 = m
        .lines()
        .filter(|l| l.starts_with("pushroll_watch_errors_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(errors, 0.0, "{m}");
    // And the watch still delivers.
    c.deploy(&ns, "two", &format!("{REPO}:v2")).await;
    let seen = eventually(Duration::from_secs(5), || async {
        configmap_images(&c, &cm_ns)
            .await
            .filter(|i| i.get(format!("{REPO}:v2")).is_some())
    })
    .await;
    assert!(seen.is_some(), "{}", p.logs().join("\n"));
}

/// A leader that cannot confirm its Lease writes nothing (another replica
/// may hold it by now: the lease library only reports changes it saw), and
/// writes again once the Lease is confirmed. Fake only: it needs faults on
/// the Lease alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_confirm_its_lease_does_not_write() {
    let c = Cluster::fake().await;
    let fake = c.fake_server().unwrap().clone();
    let (ns, cm_ns) = (c.ns("cutoff"), c.ns("pushroll"));
    c.ensure_namespace(&cm_ns).await;
    let img = |t: &str| format!("{REPO}:{t}");
    c.deploy(&ns, "one", &img("v1")).await;
    let p = start_watch(&c, &cm_ns, &ns, "indexer-0");
    p.wait_ready(READY_LIMIT).await;
    let has = |tag: &'static str| {
        let (c, cm_ns) = (&c, &cm_ns);
        async move {
            configmap_images(c, cm_ns)
                .await
                .is_some_and(|i| i.get(img(tag)).is_some())
        }
    };
    let first = eventually(Duration::from_secs(10), || async {
        has("v1").await.then_some(())
    })
    .await;
    assert!(first.is_some(), "the leader writes what it found");

    // The Lease can be neither read nor renewed; a change comes in.
    for verb in ["get", "patch"] {
        fake.fail_next(
            FaultRule::status(500)
                .verb(verb)
                .resource("leases")
                .times(1_000_000),
        );
    }
    let written = |m: &str| metric(m, "pushroll_index_writes_total{result=\"written\"}");
    let before = written(&p.metrics().await);
    c.deploy(&ns, "two", &img("v2")).await;
    let refused = eventually(Duration::from_secs(10), || async {
        let m = p.metrics().await;
        (metric(
            &m,
            "pushroll_index_writes_total{result=\"not-lease-holder\"}",
        ) >= 1.0)
            .then_some(m)
    })
    .await
    .expect("the write is refused while the Lease cannot be confirmed");
    assert_eq!(written(&refused), before, "nothing was written");
    assert!(!has("v2").await, "the ConfigMap is unchanged");
    assert_eq!(
        metric(&refused, "pushroll_indexer_leader"),
        1.0,
        "it still believes it leads"
    );

    // The Lease is reachable again: renewed, confirmed, written.
    fake.clear_faults();
    let caught_up = eventually(Duration::from_secs(15), || async {
        has("v2").await.then_some(())
    })
    .await;
    assert!(
        caught_up.is_some(),
        "the change is written once the Lease is confirmed:\n{}",
        p.logs().join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_miss_scan_shares_one_scan_and_writes_back() {
    let c = Cluster::fake().await;
    let fake = c.fake_server().unwrap().clone();
    let (ns, cm_ns) = (c.ns("scan"), c.ns("pushroll"));
    c.ensure_namespace(&cm_ns).await;
    let img = format!("{REPO}:fresh");
    c.deploy(&ns, "web", &img).await;
    // The mounted index and the ConfigMap both lack the image.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("index.json");
    std::fs::write(&file, json!({"version": 1, "images": {}}).to_string()).unwrap();
    c.write_index_configmap(
        &cm_ns,
        "pushroll-index",
        &json!({"version": 1, "images": {}}),
    )
    .await;
    let cm = format!("{cm_ns}/pushroll-index");
    let p = Pushroll::serve_open(
        &c.kubeconfig,
        &[
            "--index-file",
            file.to_str().unwrap(),
            "--index-configmap",
            &cm,
            "--on-miss",
            "scan",
        ],
    );
    fake.clear_requests();
    let client = http();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (client, url, body) = (
            client.clone(),
            p.url("/push"),
            insert(REPO, "fresh", DIGEST),
        );
        tasks.push(tokio::spawn(async move {
            let r = client.post(url).body(body).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }));
    }
    let mut restarted = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["source"], "scan", "{body}");
        let result = body["workloads"][0]["result"].as_str().unwrap().to_owned();
        assert!(
            result == "restarted" || result == "already-current",
            "{body}"
        );
        restarted += usize::from(result == "restarted");
    }
    assert_eq!(restarted, 1, "the workload rolled once");
    let lists = fake.requests_for("list", Some("deployments"));
    assert_eq!(lists.len(), 1, "50 concurrent misses share one scan");
    // The scan result is written back to the ConfigMap.
    let images = eventually(Duration::from_secs(10), || async {
        configmap_images(&c, &cm_ns)
            .await
            .filter(|i| i.get(&img).is_some())
    })
    .await
    .expect("the ConfigMap gains the entry");
    assert_eq!(images[&img][0]["name"], "web");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_workloads_are_written_compressed_and_read_back() {
    let c = Cluster::fake().await;
    let fake = c.fake_server().unwrap().clone();
    let cm_ns = "pushroll";
    fake.ensure_namespace(cm_ns);
    const N: usize = 20_000;
    for i in 0..N {
        let ns = format!("team-{}", i % 100);
        let image = format!(
            "us-east1-docker.pkg.dev/project-{}/repo/service-{i}:v{}",
            i % 37,
            i % 5
        );
        fake.insert(workload(
            "Deployment",
            &ns,
            &format!("svc-{i}"),
            &[("app", &image)],
            &[],
            json!({}),
        ));
    }
    let env = kubeconfig_env(&c);
    let started = Instant::now();
    let (status, _, err) = Pushroll::run(
        &["index", "--index-configmap", "pushroll/pushroll-index"],
        &env,
    );
    assert!(status.success(), "{err}");
    let one_shot = started.elapsed();
    let cm = c.get("ConfigMap", cm_ns, "pushroll-index").await.unwrap();
    assert!(
        cm["data"]["index.json"].is_null(),
        "over 900 KiB the JSON key is absent"
    );
    let gz_len = cm["binaryData"]["index.json.gz"].as_str().unwrap().len() * 3 / 4;
    let images = configmap_images(&c, cm_ns).await.unwrap();
    assert_eq!(images.as_object().unwrap().len(), N);

    // The watch indexer over the same cluster: its memory once written.
    let p = start_watch_all(&c);
    p.wait_ready(READY_LIMIT).await;
    let rss_kib = p.rss_kib();
    eprintln!(
        "20,000 workloads: one-shot scan+write {one_shot:?}, gzip {gz_len} bytes, index --watch RSS {rss_kib} KiB (debug build)"
    );

    // serve reads the compressed index back through the API fallback.
    let missing = tempfile::tempdir().unwrap();
    let file = missing.path().join("index.json");
    let s = Pushroll::serve_open(
        &c.kubeconfig,
        &[
            "--dry-run",
            "--index-file",
            file.to_str().unwrap(),
            "--index-configmap",
            "pushroll/pushroll-index",
        ],
    );
    let i = 12_345;
    let repo = format!(
        "us-east1-docker.pkg.dev/project-{}/repo/service-{i}",
        i % 37
    );
    let (status, body) = post(&http(), &s, insert(&repo, &format!("v{}", i % 5), DIGEST)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["source"], "configmap");
    assert_eq!(body["workloads"][0]["name"], "svc-12345");
    assert_eq!(c.backend, Backend::Fake);
}

fn start_watch_all(c: &Cluster) -> Pushroll {
    Pushroll::start_env(
        &[
            "index",
            "--watch",
            "--listen",
            "127.0.0.1:0",
            "--index-configmap",
            "pushroll/pushroll-index",
            "--debounce",
            "200ms",
        ],
        &kubeconfig_env(c),
    )
}

/// Every `pushroll_index_reloads_total{result="configmap-…"}`: the GETs of
/// the index ConfigMap that lookups made.
fn configmap_reads(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("pushroll_index_reloads_total{result=\"configmap"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One Deployment that serves and indexes: two `serve --indexer` replicas
/// and no index file. Both answer from their own watch (a workload created
/// later is found by either within seconds, long before a kubelet would sync
/// a mounted ConfigMap), a miss asks the API nothing, one leader writes the
/// ConfigMap, and SIGTERM ends both cleanly with the Lease released.
async fn serve_indexer_answers_from_its_own_watch(c: Cluster) {
    let (ns, cm_ns) = (c.ns("single"), c.ns("pushroll"));
    c.ensure_namespace(&cm_ns).await;
    let img = |t: &str| format!("{REPO}:{t}");
    c.deploy(&ns, "web", &img("v1")).await;
    let missing = tempfile::tempdir().unwrap();
    let file = missing.path().join("index.json");
    let mut a = start_serve_indexer(&c, &cm_ns, &ns, &file, "serve-a");
    let mut b = start_serve_indexer(&c, &cm_ns, &ns, &file, "serve-b");
    // Ready without any file: the watch's initial lists are an index.
    a.wait_ready(READY_LIMIT).await;
    b.wait_ready(READY_LIMIT).await;
    let (lead, follow) = leader_and_follower(&mut a, &mut b).await;
    let client = http();

    // The follower restarts what runs the pushed image, from its own watch.
    let (status, body) = post(&client, follow, insert(REPO, "v1", DIGEST)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "restarted", "{body}");
    assert_eq!(body["source"], "configmap", "{body}");
    let mut entries = body["workloads"].clone();
    // `c.deploy` sets no pull policy, so `:v1` gets IfNotPresent: warned about.
    let warnings = entries[0]
        .as_object_mut()
        .and_then(|w| w.remove("warnings"));
    assert!(
        warnings.is_some_and(|w| w.to_string().contains("IfNotPresent")),
        "{body}"
    );
    assert_eq!(
        entries,
        json!([{"kind": "Deployment", "namespace": ns, "name": "web", "result": "restarted"}])
    );
    let web = c.get("Deployment", &ns, "web").await.unwrap();
    assert_eq!(
        web["spec"]["template"]["metadata"]["annotations"]["digest.pushroll.io/app"],
        DIGEST
    );

    // A miss is final: no ConfigMap GET.
    let before = configmap_reads(&follow.metrics().await);
    let (status, body) = post(&client, follow, insert(REPO, "unused", DIGEST)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["outcome"], &body["source"]),
        (&json!("no-match"), &json!("configmap")),
        "{body}"
    );
    assert_eq!(configmap_reads(&follow.metrics().await), before);

    // A workload created now is found by both replicas within seconds.
    c.deploy(&ns, "late", &img("v2")).await;
    let created = Instant::now();
    for p in [&*follow, &*lead] {
        let body = eventually(Duration::from_secs(5), || async {
            let (status, body) = post(&client, p, insert(REPO, "v2", DIGEST2)).await;
            assert_eq!(status, 200, "{body}");
            (body["outcome"] != "no-match").then_some(body)
        })
        .await
        .expect("the new workload is found within 5 s");
        assert_eq!(body["workloads"][0]["name"], "late", "{body}");
        let result = body["workloads"][0]["result"].as_str().unwrap();
        assert!(["restarted", "already-current"].contains(&result), "{body}");
    }
    eprintln!("created → found by both replicas: {:?}", created.elapsed());

    // The leader writes the ConfigMap; the follower never does.
    let images = eventually(Duration::from_secs(10), || async {
        configmap_images(&c, &cm_ns)
            .await
            .filter(|i| i.get(img("v2")).is_some())
    })
    .await
    .expect("the leader writes the new workload to the ConfigMap");
    assert_eq!(images[img("v1")][0]["name"], "web");
    let fm = follow.metrics().await;
    assert_eq!(
        metric(&fm, "pushroll_index_writes_total{result=\"written\"}"),
        0.0
    );
    assert_eq!(metric(&fm, "pushroll_indexer_leader"), 0.0);
    assert!(metric(&fm, "pushroll_watch_events_total{result=\"deployments\"}") >= 2.0);

    // SIGTERM: both exit 0, and the leader releases the Lease (the follower
    // goes first, so that nobody takes it over).
    for p in [follow, lead] {
        p.terminate();
        let status = p.wait_exit(Duration::from_secs(20)).expect("exits");
        assert!(status.success(), "{status:?}:\n{}", p.logs().join("\n"));
    }
    let lease = c
        .get("Lease", &cm_ns, "pushroll-indexer")
        .await
        .expect("the Lease");
    assert!(
        lease["spec"]["holderIdentity"].is_null(),
        "the Lease is released: {lease}"
    );
}

/// The RBAC of `deploy/overlays/single` is enough for `serve --indexer`:
/// serve's ServiceAccount with the indexer's roles bound to it as well (what
/// the overlay does; tests/it/deploy.rs checks that it grants exactly that)
/// watches, restarts and writes the ConfigMap with no request refused. Fake
/// only: it rebinds the cluster-wide roles other tests use on a real server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_indexer_runs_with_the_single_overlays_rbac() {
    let c = Cluster::fake().await;
    let kubeconfig = c.service_account_kubeconfig("pushroll");
    let roles = deploy_objects("rbac-serve.yaml")
        .into_iter()
        .chain(deploy_objects("rbac-indexer.yaml"));
    for mut obj in roles {
        for subject in obj
            .get_mut("subjects")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            subject["name"] = json!("pushroll");
        }
        c.apply(&obj).await;
    }
    let ns = c.ns("team");
    c.deploy(&ns, "web", &format!("{REPO}:v1")).await;
    let missing = tempfile::tempdir().unwrap();
    let file = missing.path().join("index.json");
    let p = Pushroll::start_env(
        &[
            SERVE_INDEXER,
            &[
                "--index-file",
                file.to_str().unwrap(),
                "--debounce",
                "200ms",
            ],
        ]
        .concat(),
        &[
            ("KUBECONFIG", kubeconfig.to_string_lossy().into_owned()),
            ("POD_NAMESPACE", "pushroll".to_owned()),
            ("POD_NAME", "pushroll-0".to_owned()),
        ],
    );
    p.wait_ready(READY_LIMIT).await;
    let (status, body) = post(&http(), &p, insert(REPO, "v1", DIGEST)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["workloads"][0]["result"], "restarted", "{body}");
    let written = eventually(Duration::from_secs(10), || async {
        configmap_images(&c, "pushroll")
            .await
            .filter(|i| i.get(format!("{REPO}:v1")).is_some())
    })
    .await;
    assert!(
        written.is_some(),
        "the leader writes pushroll/pushroll-index:\n{}",
        p.logs().join("\n")
    );
    let m = p.metrics().await;
    assert!(!m.contains("outcome=\"forbidden\""), "{m}");
    assert_eq!(
        metric(&m, "pushroll_watch_errors_total{result=\"deployments\"}"),
        0.0
    );
    assert_eq!(metric(&m, "pushroll_indexer_leader"), 1.0);
}

/// The indexer is part of serve: when it cannot run (here the leader
/// election cannot read its Lease), serve exits non-zero and says why,
/// rather than serving from an index nobody keeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_exits_non_zero_when_its_indexer_fails() {
    let c = Cluster::fake().await;
    let fake = c.fake_server().unwrap().clone();
    fake.fail_next(
        FaultRule::status(403)
            .verb("get")
            .resource("leases")
            .times(1_000_000),
    );
    let missing = tempfile::tempdir().unwrap();
    let file = missing.path().join("index.json");
    let args = [
        "--index-file",
        file.to_str().unwrap(),
        "--index-configmap",
        "pushroll/pushroll-index",
    ];
    let (status, _, err) = Pushroll::run_within(
        &[SERVE_INDEXER, &args].concat(),
        &kubeconfig_env(&c),
        Duration::from_secs(30),
    );
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("starting the leader election on the Lease pushroll/pushroll-indexer"),
        "{err}"
    );
}

/// `--indexer` needs a cluster: with `--demo`, or with no Kubernetes
/// configuration, serve refuses to start and says why.
#[test]
fn serve_indexer_without_a_cluster_is_refused() {
    let (status, _, err) = Pushroll::run_within(
        &["serve", "--demo", "--indexer"],
        &[],
        Duration::from_secs(20),
    );
    assert!(!status.success(), "{err}");
    assert!(err.contains("--indexer"), "{err}");
    assert!(err.contains("cannot run with --demo"), "{err}");
    let (status, _, err) = Pushroll::run_within(
        &[
            "serve",
            "--indexer",
            "--auth",
            "none",
            "--dry-run",
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
        Duration::from_secs(20),
    );
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("no Kubernetes configuration")
            && err.contains("--indexer watches the cluster's workloads and needs one"),
        "{err}"
    );
}
