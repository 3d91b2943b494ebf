//! End to end through real HTTP: `pushroll serve` as a process, a cluster
//! behind it (the fake API server, and the real one when available), and
//! the exact restarts a push causes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::support::cluster::{Backend, Cluster, index_for, workload};
use crate::support::*;
use fake_apiserver::{FaultRule, RequestRecord};
use serde_json::{Value, json};

on_both!(
    restarts_exactly_the_right_workloads,
    a_miss_refresh_parses_only_what_is_new,
    redelivery_and_concurrent_duplicates_roll_once,
    a_failed_patch_answers_503_and_redelivery_finishes,
    dry_run_patches_nothing,
    a_push_after_a_quiet_spell_is_not_timed_out,
    configmap_fallbacks,
    graceful_shutdown_finishes_in_flight_pushes,
    an_abandoned_push_is_finished_and_logged,
    a_rejected_patch_is_acked_and_recorded,
    an_older_push_never_rolls_a_workload_back,
    a_pull_policy_that_can_keep_the_old_image_is_reported,
);

const IMAGE_TAG: &str = "v1";

fn image() -> String {
    format!("{REPO}:{IMAGE_TAG}")
}

/// The cluster of Must-show 1: two Deployments in two namespaces, a
/// StatefulSet whose init container runs the image, a DaemonSet, one
/// opted-out workload, one pinned by digest, one in an excluded namespace,
/// and a stale index entry for a workload that is gone.
struct Fixture {
    c: Cluster,
    /// pushroll runs as the serve ServiceAccount with exactly deploy/'s RBAC.
    serve_kubeconfig: PathBuf,
    prod: String,
    staging: String,
    sandbox: String,
    index: tempfile::TempDir,
}

impl Fixture {
    async fn new(c: Cluster) -> Fixture {
        let (prod, staging, sandbox) = (c.ns("prod"), c.ns("staging"), c.ns("sandbox"));
        let img = image();
        let pinned = format!("{REPO}:{IMAGE_TAG}@{DIGEST2}");
        let none = json!({});
        for obj in [
            workload(
                "Deployment",
                &prod,
                "web",
                &[("web", &img)],
                &[],
                none.clone(),
            ),
            workload(
                "Deployment",
                &staging,
                "web",
                &[("web", &img)],
                &[],
                none.clone(),
            ),
            workload(
                "StatefulSet",
                &prod,
                "db",
                &[("pg", "postgres:16")],
                &[("migrate", &img)],
                none.clone(),
            ),
            workload(
                "DaemonSet",
                &prod,
                "agent",
                &[("agent", &img), ("sidecar", "busybox")],
                &[],
                none.clone(),
            ),
            workload(
                "Deployment",
                &prod,
                "optout",
                &[("web", &img)],
                &[],
                json!({"pushroll.io/restart": "false"}),
            ),
            workload(
                "Deployment",
                &prod,
                "pinned",
                &[("web", &pinned)],
                &[],
                none.clone(),
            ),
            workload(
                "Deployment",
                &sandbox,
                "web",
                &[("web", &img)],
                &[],
                none.clone(),
            ),
        ] {
            c.create(obj).await;
        }
        let index = index_for(
            &img,
            &[
                ("Deployment", &prod, "web", &["web"]),
                ("Deployment", &staging, "web", &["web"]),
                ("StatefulSet", &prod, "db", &["migrate"]),
                ("DaemonSet", &prod, "agent", &["agent"]),
                ("Deployment", &prod, "optout", &["web"]),
                ("Deployment", &prod, "pinned", &["web"]),
                ("Deployment", &sandbox, "web", &["web"]),
                ("Deployment", &prod, "gone", &["web"]),
            ],
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.json"), index.to_string()).unwrap();
        let serve_kubeconfig = c.serve_identity().await;
        let f = Fixture {
            c,
            serve_kubeconfig,
            prod,
            staging,
            sandbox,
            index: dir,
        };
        // On the real server, the controller must have rolled the first
        // revision before any push; else it rolls only the patched
        // template, and there is never a second ReplicaSet to count.
        for (ns, name) in [(&f.prod, "web"), (&f.staging, "web"), (&f.prod, "optout")] {
            if let Some(n) = f.revisions(ns, name).await {
                assert_eq!(n, 1, "{ns}/{name} has its first ReplicaSet");
            }
        }
        f
    }

    fn index_file(&self) -> PathBuf {
        self.index.path().join("index.json")
    }

    /// Starts serve as the ServiceAccount deploy/ defines.
    fn start(&self, extra: &[&str]) -> Pushroll {
        self.start_as(&self.serve_kubeconfig, extra)
    }

    fn start_as(&self, kubeconfig: &std::path::Path, extra: &[&str]) -> Pushroll {
        let index = self.index_file();
        let mut args = vec![
            "--index-file",
            index.to_str().unwrap(),
            "--exclude-namespace",
            &self.sandbox,
        ];
        args.extend_from_slice(extra);
        Pushroll::serve_open(kubeconfig, &args)
    }

    /// The restarted workloads' expected digest annotations.
    fn restarted(&self) -> Vec<(&'static str, String, &'static str, &'static str)> {
        vec![
            ("Deployment", self.prod.clone(), "web", "web"),
            ("Deployment", self.staging.clone(), "web", "web"),
            ("StatefulSet", self.prod.clone(), "db", "migrate"),
            ("DaemonSet", self.prod.clone(), "agent", "agent"),
        ]
    }

    async fn generation(&self, kind: &str, ns: &str, name: &str) -> i64 {
        let obj = self.c.get(kind, ns, name).await.unwrap();
        obj["metadata"]["generation"].as_i64().unwrap()
    }

    /// On the real server: waits until the Deployment controller has
    /// observed `ns/name`'s latest generation, then returns how many
    /// ReplicaSets (revisions) it owns. `None` on the fake (no controllers).
    async fn revisions(&self, ns: &str, name: &str) -> Option<usize> {
        if self.c.backend != Backend::Real {
            return None;
        }
        let observed = eventually(Duration::from_secs(20), || async {
            let d = self.c.get("Deployment", ns, name).await.unwrap();
            let generation = d["metadata"]["generation"].as_i64();
            (d["status"]["observedGeneration"].as_i64() == generation).then_some(())
        })
        .await;
        assert!(observed.is_some(), "the controller observes {ns}/{name}");
        let owned = self
            .c
            .list("ReplicaSet", ns)
            .await
            .into_iter()
            .filter(|rs| {
                rs["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|o| {
                        o.iter()
                            .any(|r| r["kind"] == "Deployment" && r["name"] == name)
                    })
            })
            .count();
        Some(owned)
    }

    /// Generations of every workload of the fixture.
    async fn generations(&self) -> BTreeMap<String, i64> {
        let mut out = BTreeMap::new();
        for (kind, ns, name) in [
            ("Deployment", &self.prod, "web"),
            ("Deployment", &self.staging, "web"),
            ("StatefulSet", &self.prod, "db"),
            ("DaemonSet", &self.prod, "agent"),
            ("Deployment", &self.prod, "optout"),
            ("Deployment", &self.prod, "pinned"),
            ("Deployment", &self.sandbox, "web"),
        ] {
            out.insert(
                format!("{kind}/{ns}/{name}"),
                self.generation(kind, ns, name).await,
            );
        }
        out
    }
}

fn results(body: &Value) -> BTreeMap<String, String> {
    body["workloads"]
        .as_array()
        .unwrap_or_else(|| panic!("no workloads: {body}"))
        .iter()
        .map(|w| {
            let key = format!(
                "{}/{}/{}",
                w["kind"].as_str().unwrap(),
                w["namespace"].as_str().unwrap(),
                w["name"].as_str().unwrap()
            );
            (key, w["result"].as_str().unwrap().to_owned())
        })
        .collect()
}

/// Successful PATCHes of workloads in the fake's log.
fn patches(log: &[RequestRecord]) -> Vec<&RequestRecord> {
    let workload = |r: &RequestRecord| {
        matches!(
            r.resource.as_deref(),
            Some("deployments" | "statefulsets" | "daemonsets")
        )
    };
    log.iter()
        .filter(|r| r.verb == "patch" && r.status == 200 && workload(r))
        .collect()
}

async fn restarts_exactly_the_right_workloads(c: Cluster) {
    let f = Fixture::new(c).await;
    let before = f.generations().await;
    let p = f.start(&[]);
    let client = http();
    if let Some(fake) = f.c.fake_server() {
        fake.clear_requests();
    }
    let body = wrapped(
        &insert(REPO, IMAGE_TAG, DIGEST),
        "m-1",
        "projects/demo-project/subscriptions/gcr-push",
    );
    let (status, body) = post(&client, &p, body).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "restarted");
    assert_eq!(body["source"], "file");
    assert_eq!(body["messageId"], "m-1");
    assert_eq!(body["image"], image());
    assert_eq!(body["digest"], DIGEST);
    let (prod, staging, sandbox) = (&f.prod, &f.staging, &f.sandbox);
    let want: BTreeMap<String, String> = [
        (format!("Deployment/{prod}/web"), "restarted"),
        (format!("Deployment/{staging}/web"), "restarted"),
        (format!("StatefulSet/{prod}/db"), "restarted"),
        (format!("DaemonSet/{prod}/agent"), "restarted"),
        (format!("Deployment/{prod}/optout"), "excluded"),
        (format!("Deployment/{prod}/pinned"), "not-found"),
        (format!("Deployment/{sandbox}/web"), "excluded"),
        (format!("Deployment/{prod}/gone"), "not-found"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_owned()))
    .collect();
    assert_eq!(results(&body), want);

    // The API requests the push made, before the test reads anything.
    let log = f.c.fake_server().map(|fake| fake.requests());
    // Each restarted workload carries exactly the contract's annotations and
    // rolled once (generation +1); the others are untouched.
    let after = f.generations().await;
    for (key, gen_before) in &before {
        let restarted = want.get(key).map(String::as_str) == Some("restarted");
        assert_eq!(after[key], gen_before + i64::from(restarted), "{key}");
    }
    for (kind, ns, name, container) in f.restarted() {
        let obj = f.c.get(kind, &ns, name).await.unwrap();
        let ann = &obj["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(
            ann[format!("digest.pushroll.io/{container}")],
            DIGEST,
            "{kind}/{ns}/{name}: {ann}"
        );
        let at = ann["kubectl.kubernetes.io/restartedAt"].as_str().unwrap();
        assert!(
            at.parse::<jiff::Timestamp>().is_ok(),
            "restartedAt {at:?} is RFC 3339"
        );
        // The push was a bare notification: its receipt is its publish time.
        let published = ann[format!("published.pushroll.io/{container}")]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok());
        assert!(published.is_some(), "{kind}/{ns}/{name}: {ann}");
        let keys: Vec<&String> = ann.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 3, "{kind}/{ns}/{name}: {ann}");
    }
    // On the real server the Deployment controller rolls a new revision.
    for ns in [prod, staging] {
        if let Some(n) = f.revisions(ns, "web").await {
            assert_eq!(n, 2, "{ns}/web has a second ReplicaSet after the restart");
        }
    }
    if let Some(n) = f.revisions(prod, "optout").await {
        assert_eq!(n, 1, "an excluded Deployment keeps its one ReplicaSet");
    }
    // An Event tells `kubectl describe` why each one rolled.
    for ns in [prod, staging] {
        let events = f.c.list("Event", ns).await;
        let ours: Vec<&Value> = events
            .iter()
            .filter(|e| e["reason"] == "PushRestart")
            .collect();
        let expected = f.restarted().iter().filter(|(_, n, _, _)| n == ns).count();
        assert_eq!(ours.len(), expected, "{ns}: {events:?}");
        for e in ours {
            assert_eq!(e["type"], "Normal");
            let msg = e["message"].as_str().unwrap();
            assert!(
                msg.contains(&image()) && msg.contains(DIGEST) && msg.contains("m-1"),
                "{msg}"
            );
        }
    }

    // `kubectl get events` shows why the workload rolled.
    match kubectl_get_events(&f.c, prod) {
        Some(out) => assert!(
            out.contains("PushRestart") && out.contains("deployment/web"),
            "{out}"
        ),
        None => eprintln!("SKIPPED kubectl get events: kubectl is not on PATH"),
    }
    if let Some(log) = &log {
        let patched = patches(log);
        assert_eq!(patched.len(), 4, "{patched:#?}");
        for r in &patched {
            assert_eq!(
                r.content_type.as_deref(),
                Some("application/strategic-merge-patch+json")
            );
            assert_eq!(r.field_manager.as_deref(), Some("pushroll"));
            let b = r.body.as_ref().unwrap();
            assert!(
                b["metadata"]["resourceVersion"].is_string(),
                "the patch carries the resourceVersion guard: {b}"
            );
            let ann = b["spec"]["template"]["metadata"]["annotations"]
                .as_object()
                .unwrap();
            assert!(ann.contains_key("kubectl.kubernetes.io/restartedAt"));
            // restartedAt, and the container's digest and publish time.
            assert_eq!(ann.len(), 3, "{b}");
            assert!(
                ann.keys().any(|k| k.starts_with("published.pushroll.io/")),
                "{b}"
            );
        }
        // Must-show 2: a hit makes no lookup call: only per-workload GET and
        // PATCH, plus the Events.
        for r in log {
            let ok = matches!(
                (r.verb.as_str(), r.resource.as_deref()),
                ("get", Some("deployments" | "statefulsets" | "daemonsets"))
                    | ("patch", Some("deployments" | "statefulsets" | "daemonsets"))
                    | ("create", Some("events"))
            );
            assert!(
                ok,
                "unexpected API request on a hit: {} {}",
                r.method, r.path
            );
        }
        // The excluded namespace was never even read.
        assert!(
            log.iter()
                .all(|r| r.namespace.as_deref() != Some(sandbox.as_str()))
        );
    }
    // Metrics count what happened.
    let metrics = p.metrics().await;
    assert!(
        metrics.contains("pushroll_restarts_total{kind=\"Deployment\",result=\"restarted\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("pushroll_kube_api_requests_total{verb=\"patch\",resource=\"deployments\",outcome=\"success\"} 2"), "{metrics}");
    assert!(
        metrics.contains("pushroll_lookups_total{source=\"file\"} 1"),
        "{metrics}"
    );
}

async fn redelivery_and_concurrent_duplicates_roll_once(c: Cluster) {
    let f = Fixture::new(c).await;
    let p = f.start(&[]);
    let client = http();
    let first = wrapped(&insert(REPO, IMAGE_TAG, DIGEST), "m-1", "s");
    let (status, body) = post(&client, &p, first.clone()).await;
    assert_eq!(status, 200, "{body}");
    let rolled = f.generations().await;

    // The same message again: already current, nothing patched.
    if let Some(fake) = f.c.fake_server() {
        fake.clear_requests();
    }
    let (status, body) = post(&client, &p, first).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["outcome"], "unchanged",
        "nothing was restarted: {body}"
    );
    for (key, result) in results(&body) {
        assert!(
            ["already-current", "excluded", "not-found"].contains(&result.as_str()),
            "{key}: {result}"
        );
    }
    assert_eq!(f.generations().await, rolled);
    if let Some(fake) = f.c.fake_server() {
        assert!(patches(&fake.requests()).is_empty());
    }
    if let Some(n) = f.revisions(&f.prod, "web").await {
        assert_eq!(n, 2, "a redelivery creates no new revision");
    }

    // A new digest delivered 20 times at once: each workload rolls exactly once.
    if let Some(fake) = f.c.fake_server() {
        fake.clear_requests();
    }
    let second = wrapped(&insert(REPO, IMAGE_TAG, DIGEST2), "m-2", "s");
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (client, url, body) = (client.clone(), p.url("/push"), second.clone());
        tasks.push(tokio::spawn(async move {
            let r = client.post(url).body(body).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }));
    }
    let mut restarted = BTreeMap::<String, usize>::new();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200, "{body}");
        for (key, result) in results(&body) {
            if result == "restarted" {
                *restarted.entry(key).or_default() += 1;
            }
        }
    }
    assert_eq!(restarted.len(), 4, "{restarted:?}");
    assert!(
        restarted.values().all(|n| *n == 1),
        "each workload is reported restarted by exactly one delivery: {restarted:?}"
    );
    let after = f.generations().await;
    for (key, generation) in &rolled {
        let bump = i64::from(restarted.contains_key(key));
        assert_eq!(after[key], generation + bump, "{key}");
    }
    for ns in [&f.prod, &f.staging] {
        if let Some(n) = f.revisions(ns, "web").await {
            assert_eq!(
                n, 3,
                "20 concurrent duplicates create exactly one new revision in {ns}"
            );
        }
    }
    if let Some(fake) = f.c.fake_server() {
        let log = fake.requests();
        let mut per_workload = BTreeMap::<String, usize>::new();
        for r in patches(&log) {
            *per_workload.entry(r.path.clone()).or_default() += 1;
        }
        assert_eq!(per_workload.len(), 4);
        assert!(per_workload.values().all(|n| *n == 1), "{per_workload:?}");
        // The losers of the race were refused by the resourceVersion guard.
        let conflicts = log
            .iter()
            .filter(|r| r.verb == "patch" && r.status == 409)
            .count();
        eprintln!(
            "20 concurrent duplicates: {} PATCHes refused with 409",
            conflicts
        );
    }
}

async fn a_failed_patch_answers_503_and_redelivery_finishes(c: Cluster) {
    // Fault injection needs the fake; on the real server, RBAC plays the
    // failing part (see the RBAC test).
    let Some(fake) = c.fake_server().cloned() else {
        eprintln!("SKIPPED on the real server: fault injection is the fake's");
        return;
    };
    let f = Fixture::new(c).await;
    let p = f.start(&[]);
    let client = http();
    // A 500 is not retried inside the delivery; a 429 is, briefly, so it
    // takes three in a row to fail the push.
    for (round, status_code, times) in [(1, 500u16, 1), (2, 429, 3)] {
        let digest = if round == 1 { DIGEST } else { DIGEST2 };
        let before = f.generations().await;
        fake.clear_requests();
        fake.fail_next(
            FaultRule::status(status_code)
                .verb("patch")
                .resource("statefulsets")
                .times(times),
        );
        let msg = wrapped(&insert(REPO, IMAGE_TAG, digest), &format!("m-{round}"), "s");
        let (status, body) = post(&client, &p, msg.clone()).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"], "restart-failed");
        // The failure's log line names the message and the image.
        let id = format!("m-{round}");
        let line = p
            .log_line(Duration::from_secs(5), |l| {
                l.contains("\"message\":\"push\"")
                    && l.contains("\"status\":503")
                    && l.contains(&id)
            })
            .await
            .unwrap_or_else(|| panic!("no 503 push line for {id}:\n{}", p.logs().join("\n")));
        let line: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(line["message_id"], id.as_str(), "{line}");
        assert_eq!(line["image"], image(), "{line}");
        let failed = body["failed"].as_array().unwrap();
        assert_eq!(failed.len(), 1, "{body}");
        assert_eq!(failed[0]["kind"], "StatefulSet");
        // What succeeded stays done.
        let done = results(&body);
        assert_eq!(
            done.values().filter(|r| *r == "restarted").count(),
            3,
            "{body}"
        );

        // Pub/Sub redelivers: the StatefulSet now rolls, the others are current.
        let (status, body) = post(&client, &p, msg).await;
        assert_eq!(status, 200, "{body}");
        let r = results(&body);
        assert_eq!(r[&format!("StatefulSet/{}/db", f.prod)], "restarted");
        assert_eq!(
            r.values().filter(|v| *v == "already-current").count(),
            3,
            "{body}"
        );
        let after = f.generations().await;
        for (key, generation) in &before {
            let restarted = f
                .restarted()
                .iter()
                .any(|(k, ns, n, _)| key == &format!("{k}/{ns}/{n}"));
            assert_eq!(
                after[key],
                generation + i64::from(restarted),
                "{key}: patched exactly once"
            );
        }
        let log = fake.requests();
        let per_path: Vec<&String> = patches(&log).iter().map(|r| &r.path).collect();
        let mut unique = per_path.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            per_path.len(),
            "nothing patched twice: {per_path:?}"
        );
    }
    // A single 429 is absorbed by the bounded retry: no 503, rolled once.
    let digest3 = "sha256:3333333333333333333333333333333333333333333333333333333333333333";
    fake.clear_requests();
    fake.fail_next(
        FaultRule::status(429)
            .verb("patch")
            .resource("statefulsets"),
    );
    let (status, body) = post(
        &client,
        &p,
        wrapped(&insert(REPO, IMAGE_TAG, digest3), "m-4", "s"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        results(&body)[&format!("StatefulSet/{}/db", f.prod)],
        "restarted"
    );
    let sts_patches: Vec<u16> = fake
        .requests_for("patch", Some("statefulsets"))
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(sts_patches, [429, 200]);
    // The API server gone entirely: 503, then recovery.
    fake.set_down(true);
    let msg = wrapped(&insert(REPO, IMAGE_TAG, DIGEST), "m-3", "s");
    let (status, body) = post(&client, &p, msg.clone()).await;
    assert_eq!(status, 503, "{body}");
    fake.set_down(false);
    let (status, body) = post(&client, &p, msg).await;
    assert_eq!(status, 200, "{body}");
}

async fn dry_run_patches_nothing(c: Cluster) {
    let f = Fixture::new(c).await;
    let before = f.generations().await;
    let p = f.start(&["--dry-run"]);
    let client = http();
    let (status, body) = post(&client, &p, insert(REPO, IMAGE_TAG, DIGEST)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "dry-run");
    let r = results(&body);
    assert_eq!(
        r.values().filter(|v| *v == "would-restart").count(),
        4,
        "{body}"
    );
    assert_eq!(r[&format!("Deployment/{}/optout", f.prod)], "excluded");
    assert_eq!(f.generations().await, before);
    if let Some(fake) = f.c.fake_server() {
        assert!(patches(&fake.requests()).is_empty());
    }
}

/// `--api-timeout` bounds each request, not the quiet before it: a push
/// after the client's pooled connections sat idle for longer than the
/// timeout is answered normally (kube-rs warns that without
/// `reset_reader_on_write` the idle time can count against the read
/// timeout; `k8s::connect` sets it).
async fn a_push_after_a_quiet_spell_is_not_timed_out(c: Cluster) {
    let f = Fixture::new(c).await;
    let p = f.start(&["--api-timeout", "500ms"]);
    let client = http();
    let digests = [DIGEST, DIGEST2];
    for (i, digest) in digests.into_iter().enumerate() {
        if i > 0 {
            // Quiet for longer than the timeout: the time is what is tested.
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        let (status, body) = post(&client, &p, insert(REPO, IMAGE_TAG, digest)).await;
        assert_eq!(status, 200, "push {i}: {body}");
        assert_eq!(body["outcome"], "restarted", "push {i}: {body}");
    }
}

async fn configmap_fallbacks(c: Cluster) {
    let f = Fixture::new(c).await;
    let cm_ns = f.c.ns("pushroll");
    let other = format!("{REPO}:v9");
    // The ConfigMap knows an image the file does not.
    let cm_index = index_for(&other, &[("Deployment", &f.staging, "web", &["web"])]);
    f.c.write_index_configmap(&cm_ns, "pushroll-index", &cm_index)
        .await;
    let cm_arg = format!("{cm_ns}/pushroll-index");
    let client = http();
    // The ConfigMap is per test (a shared real server), where deploy/'s Role
    // does not reach: this scenario is about the fallback logic, and runs as
    // admin; tests/it/rbac.rs covers the Role.
    let admin = f.c.kubeconfig.clone();
    let configmap_gets = |c: &Cluster| {
        c.fake_server()
            .map(|f| f.requests_for("get", Some("configmaps")).len())
    };

    // --on-miss none: a miss makes no API call at all.
    {
        let p = f.start_as(&admin, &["--on-miss", "none", "--index-configmap", &cm_arg]);
        if let Some(fake) = f.c.fake_server() {
            fake.clear_requests();
        }
        let (status, body) = post(&client, &p, insert(REPO, "v9", DIGEST)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["outcome"], "no-match");
        if let Some(fake) = f.c.fake_server() {
            assert!(fake.requests().is_empty(), "{:?}", fake.requests());
        }
    }
    // --on-miss configmap: concurrent misses share one GET, and the entry is found.
    {
        let p = f.start_as(
            &admin,
            &[
                "--index-configmap",
                &cm_arg,
                "--miss-refresh-interval",
                "1h",
            ],
        );
        if let Some(fake) = f.c.fake_server() {
            fake.clear_requests();
        }
        let mut tasks = Vec::new();
        for i in 0..10 {
            let (client, url) = (client.clone(), p.url("/push"));
            // Distinct commit tags nobody runs: all misses.
            let body = insert(REPO, &format!("commit-{i}"), DIGEST);
            tasks.push(tokio::spawn(async move {
                client
                    .post(url)
                    .body(body)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), 200);
        }
        assert_eq!(
            configmap_gets(&f.c).unwrap_or(1),
            1,
            "misses share one GET per interval"
        );
        // Inside the interval, the ConfigMap's content answers from memory.
        let (status, body) = post(&client, &p, insert(REPO, "v9", DIGEST)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["source"], "configmap");
        assert_eq!(
            results(&body)[&format!("Deployment/{}/web", f.staging)],
            "not-found",
            "the workload runs v1, not v9: the index was stale"
        );
        assert_eq!(configmap_gets(&f.c).unwrap_or(1), 1);
    }
    // No file at all: the ConfigMap is read once at start and answers hits.
    {
        let missing = f.index.path().join("absent/index.json");
        let cm_index = index_for(&image(), &[("Deployment", &f.prod, "web", &["web"])]);
        f.c.write_index_configmap(&cm_ns, "pushroll-index", &cm_index)
            .await;
        if let Some(fake) = f.c.fake_server() {
            fake.clear_requests();
        }
        let p = Pushroll::serve_open(
            &f.c.kubeconfig,
            &[
                "--index-file",
                missing.to_str().unwrap(),
                "--index-configmap",
                &cm_arg,
                "--dry-run",
            ],
        );
        assert_eq!(
            client.get(p.url("/readyz")).send().await.unwrap().status(),
            200
        );
        let (status, body) = post(&client, &p, insert(REPO, IMAGE_TAG, DIGEST)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["source"], "configmap");
        assert_eq!(
            results(&body)[&format!("Deployment/{}/web", f.prod)],
            "would-restart"
        );
        assert_eq!(
            configmap_gets(&f.c).unwrap_or(1),
            1,
            "one GET at start, none for the hit"
        );
    }
    // No file and no ConfigMap: not ready, and pushes answer 503 to be retried.
    {
        let missing = f.index.path().join("absent/index.json");
        let p = Pushroll::serve_open(
            &f.c.kubeconfig,
            &[
                "--index-file",
                missing.to_str().unwrap(),
                "--index-configmap",
                &format!("{cm_ns}/nope"),
                "--miss-refresh-interval",
                "1h",
            ],
        );
        assert_eq!(
            client.get(p.url("/readyz")).send().await.unwrap().status(),
            503
        );
        let (status, body) = post(&client, &p, insert(REPO, IMAGE_TAG, DIGEST)).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"], "index-unavailable");
    }
}

async fn graceful_shutdown_finishes_in_flight_pushes(c: Cluster) {
    let Some(fake) = c.fake_server().cloned() else {
        eprintln!("SKIPPED on the real server: holding a request in flight needs the fake's delay");
        return;
    };
    let f = Fixture::new(c).await;
    let mut p = f.start(&[]);
    let client = http();
    // Hold every PATCH for a while so the push is in flight at SIGTERM.
    fake.fail_next(
        FaultRule {
            delay: Some(Duration::from_millis(800)),
            times: 10,
            ..FaultRule::default()
        }
        .verb("patch"),
    );
    let url = p.url("/push");
    let body = insert(REPO, IMAGE_TAG, DIGEST);
    let c2 = client.clone();
    // Only this push's PATCHes count: the fixture's RBAC went in by
    // server-side apply, which is a PATCH too.
    fake.clear_requests();
    let inflight = tokio::spawn(async move { c2.post(url).body(body).send().await.unwrap() });
    let workloads = ["deployments", "statefulsets", "daemonsets"];
    fake.wait_for_request(Duration::from_secs(5), |r| {
        r.verb == "patch" && workloads.contains(&r.resource.as_deref().unwrap_or_default())
    })
    .await
    .expect("a PATCH is in flight");
    p.terminate();
    let r = inflight.await.unwrap();
    assert_eq!(r.status(), 200, "the in-flight push finished");
    let status = p
        .wait_exit(Duration::from_secs(10))
        .expect("exited after draining");
    assert!(status.success(), "{status:?}");
    // Every workload the push touched was fully restarted, none half-done.
    for (kind, ns, name, container) in f.restarted() {
        let obj = f.c.get(kind, &ns, name).await.unwrap();
        assert_eq!(
            obj["spec"]["template"]["metadata"]["annotations"]
                [format!("digest.pushroll.io/{container}")],
            DIGEST
        );
    }
    assert_eq!(f.c.backend, Backend::Fake);
}

/// Events of `reason` in `ns`.
async fn events(c: &Cluster, ns: &str, reason: &str) -> Vec<Value> {
    c.list("Event", ns)
        .await
        .into_iter()
        .filter(|e| e["reason"] == reason)
        .collect()
}

/// A client that gives up on a push mid-way (Pub/Sub past its deadline, a
/// load balancer's 30 s) does not cut the push short: every PATCH that was
/// started gets its Event, the push its log line and metrics, and the
/// in-flight gauge comes down. Fake only: it needs a slow PATCH.
async fn an_abandoned_push_is_finished_and_logged(c: Cluster) {
    let Some(fake) = c.fake_server().cloned() else {
        eprintln!("SKIPPED on the real server: a slow PATCH needs the fake's delay");
        return;
    };
    let f = Fixture::new(c).await;
    let p = f.start(&[]);
    fake.fail_next(
        FaultRule {
            delay: Some(Duration::from_millis(1500)),
            times: 10,
            ..FaultRule::default()
        }
        .verb("patch"),
    );
    fake.clear_requests();
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let gone = impatient
        .post(p.url("/push"))
        .body(wrapped(&insert(REPO, IMAGE_TAG, DIGEST), "m-gone", "s"))
        .send()
        .await;
    assert!(gone.is_err(), "the client gave up: {gone:?}");
    let line = p
        .log_line(Duration::from_secs(15), |l| {
            l.contains("\"message\":\"push\"") && l.contains("m-gone")
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "no log line for the abandoned push:\n{}",
                p.logs().join("\n")
            )
        });
    let line: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(line["outcome"], "restarted", "{line}");
    assert_eq!(line["client_gone"], true, "{line}");
    for (kind, ns, name, container) in f.restarted() {
        let obj = f.c.get(kind, &ns, name).await.unwrap();
        assert_eq!(
            obj["spec"]["template"]["metadata"]["annotations"]
                [format!("digest.pushroll.io/{container}")],
            DIGEST,
            "{kind} {ns}/{name}"
        );
        let recorded = events(&f.c, &ns, "PushRestart").await;
        assert!(
            recorded.iter().any(|e| e["involvedObject"]["name"] == name && e["involvedObject"]["kind"] == kind),
            "{kind} {ns}/{name} has its PushRestart Event"
        );
    }
    let m = p.metrics().await;
    assert_eq!(metric(&m, "pushroll_inflight_pushes"), 0.0, "{m}");
    assert_eq!(
        metric(
            &m,
            "pushroll_pushes_total{source=\"pubsub\",outcome=\"restarted\",code=\"200\"}"
        ),
        1.0,
        "{m}"
    );
}

/// A patch the API server refuses for good (400, 422: validation or an
/// admission webhook) would be refused again on every redelivery, for the
/// days Pub/Sub keeps the message: it is acked with `rejected`, a Warning
/// Event and a metric, and the other workloads restart. Fake only: the
/// real 1.20 server here has no admission webhook to refuse with.
async fn a_rejected_patch_is_acked_and_recorded(c: Cluster) {
    let Some(fake) = c.fake_server().cloned() else {
        eprintln!("SKIPPED on the real server: a 422 on one workload needs the fake's faults");
        return;
    };
    let f = Fixture::new(c).await;
    let p = f.start(&[]);
    // As an admission webhook or validation would: 422, once.
    let refuse_prod_web = || {
        fake.fail_next(
            FaultRule::status(422)
                .verb("patch")
                .resource("deployments")
                .namespace(&f.prod)
                .name("web"),
        )
    };
    refuse_prod_web();
    let (status, body) = post(&http(), &p, insert(REPO, IMAGE_TAG, DIGEST)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "restarted", "the others restarted: {body}");
    let r = results(&body);
    let rejected = format!("Deployment/{}/web", f.prod);
    assert_eq!(r[&rejected], "rejected", "{body}");
    assert_eq!(r[&format!("Deployment/{}/web", f.staging)], "restarted");
    let entry = body["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["namespace"] == f.prod.as_str() && w["name"] == "web")
        .unwrap();
    assert!(
        entry["detail"].as_str().is_some_and(|d| d.contains("422")),
        "{entry}"
    );
    let warnings = events(&f.c, &f.prod, "PushRestartRejected").await;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0]["type"], "Warning");
    assert_eq!(warnings[0]["involvedObject"]["name"], "web");
    let m = p.metrics().await;
    assert_eq!(
        metric(
            &m,
            "pushroll_restarts_total{kind=\"Deployment\",result=\"rejected\"}"
        ),
        1.0,
        "{m}"
    );
    // Alone, a rejection is not a restart.
    refuse_prod_web();
    let (status, body) = post(&http(), &p, insert(REPO, IMAGE_TAG, DIGEST)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "unchanged", "{body}");
}

/// Pushes arrive out of order (redeliveries, replays): one published
/// before the push a workload last rolled to is `superseded` and patches
/// nothing, however often it comes back; a newer one rolls as usual.
async fn an_older_push_never_rolls_a_workload_back(c: Cluster) {
    let f = Fixture::new(c).await;
    let p = f.start(&[]);
    let client = http();
    let t0: jiff::Timestamp = "2026-12-01T10:00:00.250Z".parse().unwrap();
    let later = |secs: i64| {
        t0.checked_add(jiff::SignedDuration::from_secs(secs))
            .unwrap()
    };
    let old = wrapped_at(&insert(REPO, IMAGE_TAG, DIGEST), "m-old", "s", t0);
    let new = wrapped_at(&insert(REPO, IMAGE_TAG, DIGEST2), "m-new", "s", later(60));
    let (status, body) = post(&client, &p, new.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "restarted", "{body}");
    let rolled = f.generations().await;
    // The older push, delivered late, and redelivered ten times in a row.
    for round in 1..=10 {
        if let Some(fake) = f.c.fake_server() {
            fake.clear_requests();
        }
        let (status, body) = post(&client, &p, old.clone()).await;
        assert_eq!(status, 200, "round {round}: {body}");
        assert_eq!(body["outcome"], "unchanged", "round {round}: {body}");
        let r = results(&body);
        for (kind, ns, name, _) in f.restarted() {
            assert_eq!(
                r[&format!("{kind}/{ns}/{name}")],
                "superseded",
                "round {round}: {body}"
            );
        }
        assert_eq!(
            f.generations().await,
            rolled,
            "round {round}: nothing rolled"
        );
        if let Some(fake) = f.c.fake_server() {
            assert!(patches(&fake.requests()).is_empty(), "round {round}");
        }
    }
    for (kind, ns, name, container) in f.restarted() {
        let obj = f.c.get(kind, &ns, name).await.unwrap();
        let ann = &obj["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(
            ann[format!("digest.pushroll.io/{container}")],
            DIGEST2,
            "{ann}"
        );
        assert_eq!(
            ann[format!("published.pushroll.io/{container}")]
                .as_str()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok()),
            Some(later(60)),
            "{ann}"
        );
    }
    // The newer push redelivered: current, not superseded.
    let (_, body) = post(&client, &p, new).await;
    for (kind, ns, name, _) in f.restarted() {
        assert_eq!(
            results(&body)[&format!("{kind}/{ns}/{name}")],
            "already-current",
            "{body}"
        );
    }
    // A push newer still (the tag moved back to the first digest) rolls.
    let newest = wrapped_at(
        &insert(REPO, IMAGE_TAG, DIGEST),
        "m-newest",
        "s",
        later(120),
    );
    let (status, body) = post(&client, &p, newest).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "restarted", "{body}");
    let after = f.generations().await;
    for (kind, ns, name, _) in f.restarted() {
        let key = format!("{kind}/{ns}/{name}");
        assert_eq!(after[&key], rolled[&key] + 1, "{key}");
    }
    let m = p.metrics().await;
    assert_eq!(
        metric(
            &m,
            "pushroll_restarts_total{kind=\"Deployment\",result=\"superseded\"}"
        ),
        20.0,
        "two Deployments, ten rounds: {m}"
    );
}

/// A restart does not bring the pushed digest to a node that already holds
/// the tag unless the pull policy is `Always`: the 200 body warns, a
/// `PushPullPolicy` Warning Event and a metric record it, and the restart
/// still happens. The fixture's containers set no policy, so Kubernetes'
/// default for a `:v1` tag (`IfNotPresent`) applies; one is made `Always`.
async fn a_pull_policy_that_can_keep_the_old_image_is_reported(c: Cluster) {
    let f = Fixture::new(c).await;
    let img = image();
    f.c.merge_patch(
        "Deployment",
        &f.staging,
        "web",
        json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": img, "imagePullPolicy": "Always"}
        ]}}}}),
    )
    .await;
    let p = f.start(&[]);
    let (status, body) = post(&http(), &p, insert(REPO, IMAGE_TAG, DIGEST)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "restarted", "{body}");
    let entry = |ns: &str, name: &str| -> Value {
        body["workloads"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["namespace"] == ns && w["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{ns}/{name} in {body}"))
    };
    for (ns, name, container) in [
        (&f.prod, "web", "web"),
        (&f.prod, "db", "migrate"),
        (&f.prod, "agent", "agent"),
    ] {
        let e = entry(ns, name);
        assert_eq!(e["result"], "restarted", "{e}");
        let warnings = e["warnings"]
            .as_array()
            .unwrap_or_else(|| panic!("no warnings: {e}"));
        assert_eq!(warnings.len(), 1, "{e}");
        let w = warnings[0].as_str().unwrap();
        assert!(
            w.contains(&format!("\"{container}\""))
                && w.contains("IfNotPresent")
                && w.contains("imagePullPolicy: Always"),
            "{w}"
        );
    }
    let always = entry(&f.staging, "web");
    assert_eq!(always["result"], "restarted", "{always}");
    assert!(
        always.get("warnings").is_none(),
        "Always is not warned about: {always}"
    );
    let recorded = events(&f.c, &f.prod, "PushPullPolicy").await;
    let mut named: Vec<&str> = recorded
        .iter()
        .map(|e| e["involvedObject"]["name"].as_str().unwrap())
        .collect();
    named.sort();
    assert_eq!(named, ["agent", "db", "web"], "{recorded:?}");
    assert!(
        recorded.iter().all(|e| e["type"] == "Warning"),
        "{recorded:?}"
    );
    assert!(events(&f.c, &f.staging, "PushPullPolicy").await.is_empty());
    // Each restarted workload also has its PushRestart Event.
    assert_eq!(events(&f.c, &f.prod, "PushRestart").await.len(), 3);
    let m = p.metrics().await;
    assert_eq!(
        metric(&m, "pushroll_pull_policy_warnings_total"),
        3.0,
        "{m}"
    );
}

/// `kubectl get events -n NS` against the cluster, or `None` without kubectl.
fn kubectl_get_events(c: &Cluster, ns: &str) -> Option<String> {
    let kubeconfig = c.kubeconfig.to_string_lossy().into_owned();
    let cache = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("kubectl")
        .args([
            "--kubeconfig",
            &kubeconfig,
            "--cache-dir",
            cache.path().to_str().unwrap(),
            "get",
            "events",
            "-n",
            ns,
        ])
        .output();
    match out {
        Ok(out) if out.status.success() => Some(String::from_utf8_lossy(&out.stdout).into_owned()),
        Ok(out) => panic!(
            "kubectl get events failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(_) => {
            assert!(
                std::env::var("PUSHROLL_REQUIRE_KUBECTL").as_deref() != Ok("1"),
                "PUSHROLL_REQUIRE_KUBECTL=1 but kubectl is not on PATH"
            );
            None
        }
    }
}

/// A miss refresh GETs the index ConfigMap, but parses it only when it
/// holds something new: the mounted file's own bytes (the volume is that
/// ConfigMap) or the resourceVersion parsed last time cost one GET and no
/// parse, and no second copy of the index stays in memory.
async fn a_miss_refresh_parses_only_what_is_new(c: Cluster) {
    let (ns, cm_ns) = (c.ns("refresh"), c.ns("pushroll"));
    c.ensure_namespace(&cm_ns).await;
    let v1 = format!("{REPO}:v1");
    let index = index_for(&v1, &[("Deployment", &ns, "web", &["web"])]);
    c.write_index_configmap(&cm_ns, "pushroll-index", &index)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("index.json");
    std::fs::write(&file, index.to_string()).unwrap();
    let cm_arg = format!("{cm_ns}/pushroll-index");
    let p = Pushroll::serve_open(
        &c.kubeconfig,
        &[
            "--dry-run",
            "--index-file",
            file.to_str().unwrap(),
            "--index-configmap",
            &cm_arg,
            "--miss-refresh-interval",
            "1ms",
        ],
    );
    let client = http();
    let reloads = |m: &str, r: &str| {
        metric(
            m,
            &format!("pushroll_index_reloads_total{{result=\"{r}\"}}"),
        )
    };
    let misses = |from: usize| {
        let (client, p) = (&client, &p);
        async move {
            for i in from..from + 3 {
                let (status, body) =
                    post(client, p, insert(REPO, &format!("commit-{i}"), DIGEST)).await;
                assert_eq!(status, 200, "{body}");
                assert_eq!(body["outcome"], "no-match", "{body}");
                // Past the interval, so that the next miss GETs again.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };

    // The ConfigMap holds the file's bytes: GET, never parsed.
    misses(0).await;
    let m = p.metrics().await;
    assert!(reloads(&m, "configmap-unchanged") >= 3.0, "{m}");
    assert_eq!(reloads(&m, "configmap-ok"), 0.0, "{m}");
    let (_, body) = post(&client, &p, insert(REPO, "v1", DIGEST)).await;
    assert_eq!(body["source"], "file", "one copy, the file's: {body}");

    // The ConfigMap moves ahead of the file: parsed once, used at once…
    let v2 = format!("{REPO}:v2");
    let mut newer = index.clone();
    newer["images"][&v2] =
        index_for(&v2, &[("Deployment", &ns, "web2", &["web"])])["images"][&v2].clone();
    c.write_index_configmap(&cm_ns, "pushroll-index", &newer)
        .await;
    let (status, body) = post(&client, &p, insert(REPO, "v2", DIGEST)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["source"], "configmap", "{body}");
    assert_eq!(body["workloads"][0]["name"], "web2", "{body}");
    let m = p.metrics().await;
    assert_eq!(reloads(&m, "configmap-ok"), 1.0, "{m}");
    // …and not again while its resourceVersion stays.
    let unchanged = reloads(&m, "configmap-unchanged");
    misses(10).await;
    let m = p.metrics().await;
    assert_eq!(reloads(&m, "configmap-ok"), 1.0, "{m}");
    assert!(reloads(&m, "configmap-unchanged") >= unchanged + 3.0, "{m}");
}

/// Index entries go into API request paths: ones whose namespace or name
/// is not a Kubernetes name (`../../api`, `a/b`) are dropped when the
/// index is read, and counted, and never reach the API server; the good
/// entry beside them still restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_entries_that_are_not_kubernetes_names_never_reach_the_api() {
    let c = Cluster::fake().await;
    let ns = c.ns("prod");
    let img = image();
    c.create(workload(
        "Deployment",
        &ns,
        "web",
        &[("web", &img)],
        &[],
        json!({}),
    ))
    .await;
    let index = index_for(
        &img,
        &[
            ("Deployment", "../../api", "web", &["web"]),
            ("Deployment", &ns, "a/b", &["web"]),
            ("Deployment", &ns, "../../../api/v1/secrets", &["web"]),
            ("Deployment", &ns, "web", &["web"]),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("index.json");
    std::fs::write(&file, index.to_string()).unwrap();
    let kubeconfig = c.serve_identity().await;
    let fake = c.fake_server().unwrap().clone();
    fake.clear_requests();
    let p = Pushroll::serve_open(&kubeconfig, &["--index-file", file.to_str().unwrap()]);
    let client = http();
    let (status, body) = post(&client, &p, insert(REPO, IMAGE_TAG, DIGEST)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        results(&body),
        BTreeMap::from([(format!("Deployment/{ns}/web"), "restarted".to_owned())]),
        "{body}"
    );
    let m = p.metrics().await;
    let dropped = |reason: &str| {
        metric(
            &m,
            &format!("pushroll_index_dropped_entries_total{{source=\"file\",reason=\"{reason}\"}}"),
        )
    };
    assert_eq!((dropped("namespace"), dropped("name")), (1.0, 2.0), "{m}");
    assert!(
        p.logs()
            .iter()
            .any(|l| l.contains("WARN") && l.contains("were dropped") && l.contains("a/b")),
        "{:?}",
        p.logs()
    );
    for r in fake.requests() {
        assert!(
            !r.path.contains("..") && !r.path.contains("a/b") && !r.path.contains("%2F"),
            "a bad entry reached the API: {} {}",
            r.method,
            r.path
        );
        if r.resource.as_deref() == Some("deployments") {
            assert_eq!(
                (r.namespace.as_deref(), r.name.as_deref()),
                (Some(ns.as_str()), Some("web")),
                "{} {}",
                r.method,
                r.path
            );
        }
    }
}
