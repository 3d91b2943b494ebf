//! The controller's promises under faults, on the fake API server (the
//! test plays the controllers, writing statuses, and injects each fault
//! many times in a row): namespaces bound everything, retries back off
//! and a permanent refusal is recorded once, what a re-list no longer
//! shows is forgotten, an undo that keeps failing is told once and holds
//! up no other report, and the counters count each answer once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::cluster::{Cluster, workload};
use crate::support::indexer::{READY_LIMIT, SERVE_INDEXER};
use crate::support::kubelet::digest;
use crate::support::rollout::push_until_found;
use crate::support::*;
use fake_apiserver::{FakeApiServer, FaultRule};
use serde_json::{Value, json};

/// Many times in a row: more than any test can use up.
const MANY: usize = 10_000;
const ROLLOUT: &str = "pushroll.io/rollout";
const PENDING: &str = "pushroll.io/pending";

fn image() -> String {
    format!("{REPO}:v1")
}

/// `serve --indexer` (tokens unchecked) as `pod`, its Lease and ConfigMap
/// in `cm_ns`, `extra` flags (namespaces among them) after; returns once
/// it is ready and leads.
async fn start_indexer(c: &Cluster, cm_ns: &str, pod: &str, extra: &[&str]) -> Pushroll {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("index.json");
    let mut args: Vec<&str> = SERVE_INDEXER.to_vec();
    args.extend(["--index-file", file.to_str().unwrap()]);
    args.extend_from_slice(extra);
    start_leading(c, cm_ns, pod, &args).await
}

/// `index --watch`, as [`start_indexer`] starts `serve --indexer`.
async fn start_index_watch(c: &Cluster, cm_ns: &str, pod: &str, extra: &[&str]) -> Pushroll {
    let mut args = vec!["index", "--watch", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    start_leading(c, cm_ns, pod, &args).await
}

/// Starts `pushroll ARGS…` writing `cm_ns/pushroll-index` as `pod`, and
/// waits until it is ready and leads.
async fn start_leading(c: &Cluster, cm_ns: &str, pod: &str, args: &[&str]) -> Pushroll {
    c.ensure_namespace(cm_ns).await;
    let cm = format!("{cm_ns}/pushroll-index");
    let mut args = args.to_vec();
    args.extend(["--index-configmap", &cm, "--debounce", "200ms"]);
    // A lease that outlasts a busy machine's pauses: leadership stays put.
    if !args.contains(&"--lease-duration") {
        args.extend(["--lease-duration", "15s"]);
    }
    let env = [
        ("KUBECONFIG", c.kubeconfig.to_string_lossy().into_owned()),
        ("POD_NAME", pod.to_owned()),
    ];
    let p = Pushroll::start_env(&args, &env);
    p.wait_ready(READY_LIMIT).await;
    eventually(Duration::from_secs(30), || async {
        (metric(&p.metrics().await, "pushroll_indexer_leader") == 1.0).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("{pod} does not lead:\n{}", p.logs().join("\n")));
    p
}

/// `pushroll.io/rollout` as pushroll's restart writes it.
fn rollout_record(digest: &str, generation: i64, restarted_at: jiff::Timestamp) -> String {
    json!({
        "digest": digest, "containers": ["app"],
        "restartedAt": restarted_at.to_string(),
        "generation": generation, "image": image(),
    })
    .to_string()
}

/// One waiting record (`pushroll.io/pending` holds a list of them).
fn waiting_record(digest: &str, reason: &str, not_before: Option<jiff::Timestamp>) -> Value {
    let now = jiff::Timestamp::now().to_string();
    let mut r = json!({
        "image": image(), "digest": digest, "publishTime": now,
        "containers": ["app"], "reason": reason, "since": now,
        "mode": "restart", "optIn": false,
    });
    if let Some(at) = not_before {
        r["notBefore"] = json!(at.to_string());
    }
    r
}

/// A Deployment of one container `app` running `REPO:v1`.
fn deployment(ns: &str, name: &str, annotations: Value) -> Value {
    let mut w = workload(
        "Deployment",
        ns,
        name,
        &[("app", &image())],
        &[],
        annotations,
    );
    w["spec"]["replicas"] = json!(1);
    w
}

/// A push of `digest` waiting for approval, approved (its condition
/// cleared) when `approved`.
fn gate(ns: &str, name: &str, digest: &str, approved: bool) -> Value {
    let mut annotations = json!({
        "pushroll.io/approval": "required",
        PENDING: json!([waiting_record(digest, "approval", None)]).to_string(),
    });
    if approved {
        annotations["pushroll.io/approve"] = json!(digest);
    }
    deployment(ns, name, annotations)
}

/// Creates `w` (a workload carrying a rollout record made for generation
/// 1) and checks the generation it got.
async fn create_at_generation_1(c: &Cluster, w: Value) -> Value {
    let created = c.create(w).await;
    assert_eq!(
        created["metadata"]["generation"], 1,
        "the record names the generation of the create: {created}"
    );
    created
}

/// A Deployment whose rollout pushroll started (its record current).
async fn followed(c: &Cluster, ns: &str, name: &str, digest: &str, at: jiff::Timestamp) -> Value {
    let mut w = deployment(ns, name, json!({ROLLOUT: rollout_record(digest, 1, at)}));
    w["spec"]["template"]["metadata"]["annotations"] = json!({
        "digest.pushroll.io/app": digest,
        "kubectl.kubernetes.io/restartedAt": at.to_string(),
    });
    create_at_generation_1(c, w).await
}

/// A pin-mode Deployment asking for undo, rolled by pushroll to `bad`
/// (its record current, its template pinned to `bad`): everything the
/// undo checks before it looks for the previous revision; its status says
/// ProgressDeadlineExceeded. (The fake serves no ReplicaSets: an undo
/// that gets that far fails at their list, 404, and is retried.)
async fn failing_pin(c: &Cluster, fake: &FakeApiServer, ns: &str, name: &str, bad: &str) {
    let at = jiff::Timestamp::now();
    let mut w = workload(
        "Deployment",
        ns,
        name,
        &[("app", &format!("{}@{bad}", image()))],
        &[],
        json!({
            "pushroll.io/mode": "pin",
            "pushroll.io/on-failure": "undo",
            "deployment.kubernetes.io/revision": "2",
            ROLLOUT: rollout_record(bad, 1, at),
        }),
    );
    w["spec"]["replicas"] = json!(1);
    w["spec"]["template"]["metadata"]["annotations"] = json!({
        "digest.pushroll.io/app": bad,
        "kubectl.kubernetes.io/restartedAt": at.to_string(),
    });
    create_at_generation_1(c, w).await;
    set_status(fake, ns, name, |w| deployment_status(w, false, true));
}

/// The undo's list of a namespace's ReplicaSets (unparsed by the fake,
/// which does not serve them: known by its path).
fn replica_set_lists(fake: &FakeApiServer, ns: &str) -> usize {
    let path = format!("/apis/apps/v1/namespaces/{ns}/replicasets");
    fake.requests().iter().filter(|r| r.path == path).count()
}

/// A Deployment's status as its controller writes it: `complete`, or
/// still rolling; `deadline`: ProgressDeadlineExceeded.
fn deployment_status(w: &Value, complete: bool, deadline: bool) -> Value {
    let mut status = json!({
        "observedGeneration": w["metadata"]["generation"],
        "replicas": 1, "updatedReplicas": i64::from(complete),
        "readyReplicas": 1, "availableReplicas": 1,
    });
    if deadline {
        status["conditions"] = json!([{"type": "Progressing", "status": "False",
            "reason": "ProgressDeadlineExceeded", "message": "timed out"}]);
    }
    status
}

/// Writes a Deployment's status as its controller would, without an API
/// request (so no request in the fake's log is the test's own): its
/// generation stays.
fn set_status(fake: &FakeApiServer, ns: &str, name: &str, status: impl Fn(&Value) -> Value) {
    let mut obj = fake.get("apps/v1", "Deployment", ns, name).unwrap();
    let generation = obj["metadata"]["generation"].clone();
    obj["status"] = status(&obj);
    let stored = fake.insert(obj);
    assert_eq!(
        stored["metadata"]["generation"], generation,
        "a status write"
    );
}

/// Sets (or, `None`, removes) one annotation of a Deployment behind
/// pushroll's back, without an API request (which an injected fault
/// could hit). Returns the stored object.
fn annotate(fake: &FakeApiServer, ns: &str, name: &str, key: &str, value: Option<&str>) -> Value {
    let mut obj = fake.get("apps/v1", "Deployment", ns, name).unwrap();
    let annotations = &mut obj["metadata"]["annotations"];
    if !annotations.is_object() {
        *annotations = json!({});
    }
    let annotations = annotations.as_object_mut().unwrap();
    match value {
        Some(v) => annotations.insert(key.to_owned(), json!(v)),
        None => annotations.remove(key),
    };
    fake.insert(obj)
}

fn deployment_now(fake: &FakeApiServer, ns: &str, name: &str) -> Value {
    fake.get("apps/v1", "Deployment", ns, name)
        .unwrap_or_else(|| panic!("no Deployment {ns}/{name}"))
}

/// The Events with `reason` about `name` in `ns`, read from the store.
fn events(fake: &FakeApiServer, ns: &str, name: &str, reason: &str) -> Vec<Value> {
    fake.list("v1", "Event", Some(ns))
        .into_iter()
        .filter(|e| e["reason"] == reason && e["involvedObject"]["name"] == name)
        .collect()
}

/// Whether the push of `digest` waiting on `ns/name` was carried out:
/// the template rolled to it and the record is gone.
fn released(fake: &FakeApiServer, ns: &str, name: &str, digest: &str) -> bool {
    let w = deployment_now(fake, ns, name);
    w["spec"]["template"]["metadata"]["annotations"]["digest.pushroll.io/app"] == digest
        && w["metadata"]["annotations"].get(PENDING).is_none()
}

/// The requests for `ns/name` with `verb`.
fn requests_for_name(
    fake: &FakeApiServer,
    verb: &str,
    ns: &str,
    name: &str,
) -> Vec<fake_apiserver::RequestRecord> {
    fake.requests()
        .into_iter()
        .filter(|r| {
            r.verb == verb && r.namespace.as_deref() == Some(ns) && r.name.as_deref() == Some(name)
        })
        .collect()
}

/// The JSON log lines of `p` whose message is `message` and whose `name`
/// field is `name`.
fn log_lines(p: &Pushroll, message: &str, name: &str) -> Vec<Value> {
    p.logs()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == message && v["name"] == name)
        .collect()
}

fn log_time(line: &Value) -> jiff::Timestamp {
    line["timestamp"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no timestamp: {line}"))
}

fn seconds(d: jiff::SignedDuration) -> f64 {
    d.as_secs_f64()
}

/// Panics with `p`'s log when `cond` never holds within `limit`.
async fn wait_until(p: &Pushroll, limit: Duration, what: &str, cond: impl Fn() -> bool) {
    let ok = eventually(limit, || async { cond().then_some(()) }).await;
    assert!(
        ok.is_some(),
        "{what} (within {limit:?}):\n{}",
        p.logs().join("\n")
    );
}

/// Waits until `series` in `p`'s metrics is `want`.
async fn wait_metric(p: &Pushroll, series: &str, want: f64, limit: Duration) {
    let got = eventually(limit, || async {
        let m = p.metrics().await;
        (metric(&m, series) == want).then_some(())
    })
    .await;
    assert!(
        got.is_some(),
        "{series} never {want} (now {}):\n{}",
        metric(&p.metrics().await, series),
        p.logs().join("\n")
    );
}

fn rollouts(result: &str) -> String {
    format!("pushroll_rollouts_total{{kind=\"Deployment\",result=\"{result}\"}}")
}

fn restarts(result: &str) -> String {
    format!("pushroll_restarts_total{{kind=\"Deployment\",result=\"{result}\"}}")
}

fn pending_gauge(reason: &str) -> String {
    format!("pushroll_pending{{reason=\"{reason}\"}}")
}

const IN_PROGRESS: &str = "pushroll_rollouts_in_progress";

/// What a notification receiver was sent, in order.
type Got = Arc<Mutex<Vec<Value>>>;

/// A receiver of `--notify-url` on loopback that keeps every body.
async fn receiver() -> (String, Got, tokio::sync::oneshot::Sender<()>) {
    let got: Got = Arc::new(Mutex::new(Vec::new()));
    let seen = got.clone();
    let app = axum::Router::new().route(
        "/hooks/{key}",
        axum::routing::post(move |body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                let doc: Value = serde_json::from_slice(&body).expect("a JSON body");
                seen.lock().unwrap().push(doc);
                "ok"
            }
        }),
    );
    let (addr, stop) = serve_local(app).await;
    (format!("http://{addr}/hooks/faults"), got, stop)
}

fn told(got: &Got, event: &str, name: &str) -> usize {
    got.lock()
        .unwrap()
        .iter()
        .filter(|d| d["event"] == event && d["workload"]["name"] == name)
        .count()
}

/// 1. `--exclude-namespace X`: a waiting record in X whose condition
/// clears is never released, a pushroll rollout there that completes or
/// fails is never reported, and no undo is tried; the same objects in an
/// allowed namespace are acted on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_excluded_namespace_is_left_alone_by_serve_indexer() {
    excluded_namespace_is_left_alone(true).await;
}

/// 1, the same with the separate indexer (`index --watch`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_excluded_namespace_is_left_alone_by_index_watch() {
    excluded_namespace_is_left_alone(false).await;
}

async fn excluded_namespace_is_left_alone(serve: bool) {
    let started = Instant::now();
    let c = Cluster::fake().await;
    let fake = c.fake_server().unwrap().clone();
    let (off, on) = ("ctl-excluded", "ctl-allowed");
    let (wanted, bad) = (digest('c'), digest('b'));
    for ns in [off, on] {
        c.create(gate(ns, "gate", &wanted, false)).await;
        followed(&c, ns, "done", &wanted, jiff::Timestamp::now()).await;
        set_status(&fake, ns, "done", |w| deployment_status(w, false, false));
        failing_pin(&c, &fake, ns, "bad", &bad).await;
        // Not failed yet: rolling.
        set_status(&fake, ns, "bad", |w| deployment_status(w, false, false));
    }
    let first = fake.requests().len();
    let flags = ["--exclude-namespace", off];
    let p = if serve {
        start_indexer(&c, "pushroll-ctl", "excl-0", &flags).await
    } else {
        start_index_watch(&c, "pushroll-ctl", "excl-0", &flags).await
    };
    // Only the allowed namespace's waiting push is counted.
    wait_metric(&p, &pending_gauge("approval"), 1.0, Duration::from_secs(10)).await;
    let before: BTreeMap<&str, Value> = ["gate", "done", "bad"]
        .map(|n| (n, deployment_now(&fake, off, n)))
        .into();

    // The conditions clear and the rollouts end, in both namespaces.
    for ns in [off, on] {
        annotate(&fake, ns, "gate", "pushroll.io/approve", Some(&wanted));
        set_status(&fake, ns, "done", |w| deployment_status(w, true, false));
        set_status(&fake, ns, "bad", |w| deployment_status(w, false, true));
    }
    let states: BTreeMap<&str, Value> = ["gate", "done", "bad"]
        .map(|n| (n, deployment_now(&fake, off, n)))
        .into();
    // The control: all three acted on where allowed.
    let limit = Duration::from_secs(15);
    wait_until(&p, limit, "the allowed gate is released", || {
        released(&fake, on, "gate", &wanted)
    })
    .await;
    for (name, reason) in [
        ("done", "PushRolloutComplete"),
        ("bad", "PushRolloutFailed"),
    ] {
        wait_until(&p, limit, &format!("{reason} on {on}/{name}"), || {
            events(&fake, on, name, reason).len() == 1
        })
        .await;
    }
    // The undo is tried: the workload read again, its revisions listed.
    wait_until(&p, limit, &format!("an undo of {on}/bad is tried"), || {
        !requests_for_name(&fake, "get", on, "bad").is_empty() && replica_set_lists(&fake, on) > 0
    })
    .await;
    // The excluded namespace, watched for a while past that: no request
    // there at all (no GET, PATCH, ReplicaSet list or Event), nothing
    // changed, no Event.
    let there_prefix = format!("/namespaces/{off}/");
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(5) {
        let there: Vec<String> = fake.requests()[first..]
            .iter()
            .filter(|r| r.namespace.as_deref() == Some(off) || r.path.contains(&there_prefix))
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        assert!(
            there.is_empty(),
            "requests in the excluded namespace: {there:?}\n{}",
            p.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (name, then) in &states {
        let now = deployment_now(&fake, off, name);
        assert_eq!(&now, then, "{off}/{name} was left as it was");
    }
    assert_eq!(
        states["gate"]["metadata"]["annotations"][PENDING],
        before["gate"]["metadata"]["annotations"][PENDING],
        "the waiting record in {off} is left as it is"
    );
    assert!(
        fake.list("v1", "Event", Some(off)).is_empty(),
        "no Event in {off}"
    );
    let m = p.metrics().await;
    assert_eq!(metric(&m, &rollouts("complete")), 1.0, "{m}");
    assert_eq!(metric(&m, &rollouts("failed")), 1.0, "{m}");
    assert_eq!(metric(&m, &restarts("restarted")), 1.0, "{m}");
    assert_eq!(metric(&m, &pending_gauge("approval")), 0.0, "{m}");
    eprintln!(
        "an_excluded_namespace_is_left_alone (serve --indexer: {serve}): {:?}",
        started.elapsed()
    );
}

/// 2a. A release refused for good (422, injected for every attempt) is
/// tried once in a minute, recorded once (one PushRestartRejected, one
/// `rejected`), whatever status updates come; a change of the workload's
/// annotations makes it try again; once the API server takes the patch,
/// a change releases it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_release_is_recorded_once_and_waits_for_a_change() {
    let started = Instant::now();
    let c = Cluster::fake().await;
    let fake = c.fake_server().unwrap().clone();
    let ns = "ctl-rejected";
    let d = digest('d');
    c.create(gate(ns, "x", &d, true)).await;
    fake.fail_next(
        FaultRule::status(422)
            .verb("patch")
            .resource("deployments")
            .namespace(ns)
            .name("x")
            .times(MANY),
    );
    let p = start_indexer(&c, "pushroll-ctl", "rej-0", &["--namespace", ns]).await;
    let patches = || requests_for_name(&fake, "patch", ns, "x");
    wait_until(
        &p,
        Duration::from_secs(10),
        "the release is rejected",
        || events(&fake, ns, "x", "PushRestartRejected").len() == 1,
    )
    .await;
    // A minute of status updates (every 5 s, as a controller's resyncs):
    // at most 3 attempts (one is expected).
    let window = Instant::now();
    let mut writes = 0u32;
    while window.elapsed() < Duration::from_secs(60) {
        if window.elapsed() >= Duration::from_secs(5) * writes {
            set_status(&fake, ns, "x", |w| {
                deployment_status(w, writes.is_multiple_of(2), false)
            });
            writes += 1;
        }
        let n = patches().len();
        assert!(n <= 3, "{n} PATCH attempts within {:?}", window.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tried = patches();
    eprintln!(
        "422: {} PATCH attempt(s) in the 60 s after the first ({writes} status writes)",
        tried.len()
    );
    assert!(tried.iter().all(|r| r.status == 422), "only refused ones");
    assert_eq!(events(&fake, ns, "x", "PushRestartRejected").len(), 1);
    let m = p.metrics().await;
    assert_eq!(metric(&m, &restarts("rejected")), 1.0, "{m}");
    assert!(
        deployment_now(&fake, ns, "x")["metadata"]["annotations"]
            .get(PENDING)
            .is_some()
    );

    // A change of its annotations: tried again (and refused again, so
    // parked again, once more recorded once).
    let before = patches().len();
    annotate(&fake, ns, "x", "example.com/owner", Some("team-a"));
    wait_until(
        &p,
        Duration::from_secs(5),
        "an annotation change makes it try again",
        || patches().len() == before + 1,
    )
    .await;
    wait_until(
        &p,
        Duration::from_secs(5),
        "the second refusal is recorded",
        || events(&fake, ns, "x", "PushRestartRejected").len() == 2,
    )
    .await;
    wait_metric(&p, &restarts("rejected"), 2.0, Duration::from_secs(5)).await;
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(3) {
        assert_eq!(patches().len(), before + 1, "parked again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The API server takes the patch now; the next change releases it.
    fake.clear_faults();
    annotate(&fake, ns, "x", "example.com/owner", Some("team-b"));
    wait_until(
        &p,
        Duration::from_secs(10),
        "released after the fix and a change",
        || released(&fake, ns, "x", &d),
    )
    .await;
    wait_metric(&p, &restarts("restarted"), 1.0, Duration::from_secs(5)).await;
    assert_eq!(events(&fake, ns, "x", "PushRestartRejected").len(), 2);
    eprintln!(
        "a_rejected_release_is_recorded_once_and_waits_for_a_change: {:?}",
        started.elapsed()
    );
}

/// 2b. A release refused with 403 (injected for every attempt) is retried
/// at growing intervals (1 s, 2 s, 4 s, 8 s), each gap at least the one
/// before; when the rule is fixed, the next attempt releases it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_release_backs_off_and_goes_through_once_allowed() {
    let started = Instant::now();
    let c = Cluster::fake().await;
    let fake = c.fake_server().unwrap().clone();
    let ns = "ctl-forbidden";
    let d = digest('f');
    c.create(gate(ns, "y", &d, true)).await;
    fake.fail_next(
        FaultRule::status(403)
            .verb("patch")
            .resource("deployments")
            .namespace(ns)
            .name("y")
            .times(MANY),
    );
    let p = start_indexer(&c, "pushroll-ctl", "forbid-0", &["--namespace", ns]).await;
    const WARN: &str = "could not carry out a waiting push; retrying with backoff";
    const FAILED: usize = 4;
    wait_until(&p, Duration::from_secs(30), "four refused attempts", || {
        log_lines(&p, WARN, "y").len() >= FAILED
    })
    .await;
    // The rule is fixed: the attempt due 8 s after the fourth goes through.
    fake.clear_faults();
    let lines = log_lines(&p, WARN, "y");
    assert_eq!(lines.len(), FAILED, "no fifth refusal yet");
    let delays: Vec<f64> = lines
        .iter()
        .map(|l| l["retry_in_seconds"].as_f64().unwrap())
        .collect();
    assert_eq!(delays, [1.0, 2.0, 4.0, 8.0], "the backoff doubles");
    let times: Vec<jiff::Timestamp> = lines.iter().map(log_time).collect();
    wait_until(
        &p,
        Duration::from_secs(20),
        "released on the next attempt",
        || released(&fake, ns, "y", &d),
    )
    .await;
    let restarted = p
        .log_line(Duration::from_secs(5), |l| {
            l.contains("\"message\":\"restarted\"") && l.contains("\"name\":\"y\"")
        })
        .await
        .expect("the restart's log line");
    let restarted_at = log_time(&serde_json::from_str(&restarted).unwrap());
    let mut gaps: Vec<f64> = times
        .windows(2)
        .map(|w| seconds(w[1].duration_since(w[0])))
        .collect();
    gaps.push(seconds(restarted_at.duration_since(times[FAILED - 1])));
    eprintln!("403: gaps between attempts {gaps:?} s (delays {delays:?})");
    for (i, gap) in gaps.iter().enumerate() {
        let due = [1.0, 2.0, 4.0, 8.0][i];
        assert!(*gap >= due - 0.05, "gap {i}: {gap} s, due after {due} s");
        assert!(*gap < due + 3.0, "gap {i}: {gap} s, due after {due} s");
        if i > 0 {
            assert!(
                *gap >= gaps[i - 1],
                "each gap at least the one before: {gaps:?}"
            );
        }
    }
    let tried = requests_for_name(&fake, "patch", ns, "y");
    let codes: Vec<u16> = tried.iter().map(|r| r.status).collect();
    assert_eq!(
        codes,
        [403, 403, 403, 403, 200],
        "four refused, then the release"
    );
    wait_metric(&p, &restarts("restarted"), 1.0, Duration::from_secs(5)).await;
    eprintln!(
        "a_forbidden_release_backs_off_and_goes_through_once_allowed: {:?}",
        started.elapsed()
    );
}

/// Completed lists per kind.
fn lists(metrics: &str) -> [f64; 3] {
    ["deployments", "statefulsets", "daemonsets"].map(|kind| {
        metric(
            metrics,
            &format!("pushroll_watch_lists_total{{result=\"{kind}\"}}"),
        )
    })
}

/// Watch errors per kind.
fn watch_errors(metrics: &str) -> [f64; 3] {
    ["deployments", "statefulsets", "daemonsets"].map(|kind| {
        metric(
            metrics,
            &format!("pushroll_watch_errors_total{{result=\"{kind}\"}}"),
        )
    })
}

/// `HH:MM:SS` of `t` in UTC.
fn clock(t: jiff::Timestamp) -> String {
    t.strftime("%H:%M:%S").to_string()
}

/// 3. Ten rounds of workloads with waiting pushes and rollouts in
/// progress, deleted while the API server is down, followed by a re-list
/// (the watch history compacted): every tracker forgets them. The gauges
/// count only what exists, nobody GETs them, nothing reports them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ghosts_deleted_while_the_watch_was_down_are_forgotten() {
    let started = Instant::now();
    let c = Cluster::fake().await;
    let fake = c.fake_server().unwrap().clone();
    let ns = "ctl-ghosts";
    let d = digest('9');
    // Alive throughout: what each re-list shows is kept.
    c.create(gate(ns, "keep-wait", &d, false)).await;
    followed(&c, ns, "keep-roll", &d, jiff::Timestamp::now()).await;
    // A lease that outlives the outages: leadership, and so the gauges,
    // stay put.
    let p = start_indexer(
        &c,
        "pushroll-ctl",
        "ghost-0",
        &["--namespace", ns, "--lease-duration", "60s"],
    )
    .await;
    let gauges = |m: &str| {
        [
            metric(m, &pending_gauge("approval")),
            metric(m, &pending_gauge("window")),
            metric(m, IN_PROGRESS),
        ]
    };
    let settle = |want: [f64; 3], what: String| {
        let p = &p;
        async move {
            let got = eventually(Duration::from_secs(10), || async {
                let m = p.metrics().await;
                (gauges(&m) == want && metric(&m, "pushroll_indexer_leader") == 1.0).then_some(())
            })
            .await;
            assert!(
                got.is_some(),
                "{what}: gauges (approval, window, in progress) {:?}, want {want:?}:\n{}",
                gauges(&p.metrics().await),
                p.logs().join("\n")
            );
        }
    };
    settle([1.0, 0.0, 1.0], "the keepers".into()).await;
    const ROUNDS: usize = 10;
    const OPENS_IN: i64 = 20;
    let mut last_opens = jiff::Timestamp::now();
    // Per round: the ghosts' names, and where the request log stood once
    // the re-list had forgotten them.
    let mut ghosts: Vec<(Vec<String>, usize)> = Vec::new();
    for round in 1..=ROUNDS {
        let names: Vec<String> = ["wait-a", "wait-w", "wait-s", "roll-d", "roll-s"]
            .iter()
            .map(|n| format!("g{round}-{n}"))
            .collect();
        // Waiting for approval (a Deployment, a StatefulSet), for a window
        // that opens in a few seconds (if it were kept, the controller
        // would GET it then), and two rollouts in progress.
        c.create(gate(ns, &names[0], &d, false)).await;
        // Far enough that it opens after the ghost is gone, however slow
        // the round; soon enough that a ghost kept by mistake would be
        // read (every second, once open) before the test ends.
        let opens =
            jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() + OPENS_IN).unwrap();
        last_opens = opens;
        let window = format!(
            "{}-{} UTC",
            clock(opens),
            clock(opens + jiff::SignedDuration::from_secs(1800))
        );
        c.create(deployment(
            ns,
            &names[1],
            json!({
                "pushroll.io/window": window,
                PENDING: json!([waiting_record(&d, "window", Some(opens))]).to_string(),
            }),
        ))
        .await;
        let mut sts = workload(
            "StatefulSet",
            ns,
            &names[2],
            &[("app", &image())],
            &[],
            json!({
                "pushroll.io/approval": "required",
                PENDING: json!([waiting_record(&d, "approval", None)]).to_string(),
            }),
        );
        sts["spec"]["replicas"] = json!(1);
        c.create(sts).await;
        followed(&c, ns, &names[3], &d, jiff::Timestamp::now()).await;
        let at = jiff::Timestamp::now();
        let mut sts = workload(
            "StatefulSet",
            ns,
            &names[4],
            &[("app", &image())],
            &[],
            json!({ROLLOUT: rollout_record(&d, 1, at)}),
        );
        sts["spec"]["replicas"] = json!(1);
        sts["spec"]["template"]["metadata"]["annotations"] = json!({"digest.pushroll.io/app": d, "kubectl.kubernetes.io/restartedAt": at.to_string()});
        create_at_generation_1(&c, sts).await;
        settle(
            [3.0, 1.0, 3.0],
            format!("round {round}: the ghosts counted"),
        )
        .await;
        // Each waiting one decided once (as it is new), before the outage.
        wait_until(
            &p,
            Duration::from_secs(10),
            "the waiting ghosts decided",
            || {
                names[..3]
                    .iter()
                    .all(|n| !log_lines(&p, "waiting push decided", n).is_empty())
            },
        )
        .await;

        // The outage: every watch notices it; the ghosts are deleted
        // meanwhile and the history compacted, so the watches re-list.
        let (lists_before, errors_before) = {
            let m = p.metrics().await;
            (lists(&m), watch_errors(&m))
        };
        fake.set_down(true);
        let cut = eventually(Duration::from_secs(90), || async {
            let now = watch_errors(&p.metrics().await);
            now.iter()
                .zip(&errors_before)
                .all(|(n, b)| n > b)
                .then_some(())
        })
        .await;
        if cut.is_none() {
            // Seen once in five CI runs (not reproduced): say which watch
            // stayed quiet, and what the process logged meanwhile.
            let now = watch_errors(&p.metrics().await);
            let logs = p.logs();
            let tail = logs[logs.len().saturating_sub(60)..].join("\n");
            panic!(
                "round {round}: the watches noticed the outage: watch errors {errors_before:?} -> {now:?} (deployments, statefulsets, daemonsets)\n{tail}"
            );
        }
        for (i, name) in names.iter().enumerate() {
            let kind = if i == 2 || i == 4 {
                "StatefulSet"
            } else {
                "Deployment"
            };
            if i == 1 {
                let w = deployment_now(&fake, ns, name);
                assert!(
                    w["metadata"]["annotations"].get(PENDING).is_some(),
                    "round {round}: {name}'s window opened before it was deleted: slow round"
                );
            }
            assert!(fake.delete("apps/v1", kind, ns, name), "{name}");
        }
        fake.insert(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("bump-{round}"), "namespace": "default"},
            "data": {}
        }));
        fake.compact();
        fake.set_down(false);
        let relisted = eventually(Duration::from_secs(90), || async {
            let now = lists(&p.metrics().await);
            now.iter()
                .zip(&lists_before)
                .all(|(n, b)| n > b)
                .then_some(())
        })
        .await;
        assert!(
            relisted.is_some(),
            "round {round}: every watch re-listed:\n{}",
            p.logs().join("\n")
        );
        ghosts.push((names, fake.requests().len()));
        settle([1.0, 0.0, 1.0], format!("round {round}: after the re-list")).await;
        eprintln!(
            "round {round}: re-listed, ghosts forgotten ({:?})",
            started.elapsed()
        );
    }
    // A while of requests after the last re-list, past the last window's
    // opening: nothing names a ghost after the re-list that forgot it.
    let quiet = Instant::now();
    let until = last_opens + jiff::SignedDuration::from_secs(3);
    while quiet.elapsed() < Duration::from_secs(5) || jiff::Timestamp::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = fake.requests();
    for (names, mark) in &ghosts {
        let about: Vec<String> = log[*mark..]
            .iter()
            .filter(|r| r.name.as_ref().is_some_and(|n| names.contains(n)))
            .map(|r| format!("{} {:?} {:?}", r.verb, r.resource, r.name))
            .collect();
        assert!(about.is_empty(), "requests for ghosts: {about:?}");
    }
    let all_ghosts: Vec<&String> = ghosts.iter().flat_map(|(n, _)| n).collect();
    let reported: Vec<Value> = fake
        .list("v1", "Event", Some(ns))
        .into_iter()
        .filter(|e| {
            e["involvedObject"]["name"]
                .as_str()
                .is_some_and(|n| all_ghosts.iter().any(|g| g.as_str() == n))
        })
        .collect();
    assert!(reported.is_empty(), "Events about ghosts: {reported:#?}");
    assert!(
        !p.logs().iter().any(|l| l.contains("rollout finished")),
        "no report:\n{}",
        p.logs().join("\n")
    );
    settle([1.0, 0.0, 1.0], "at the end".into()).await;
    // The keepers deleted the ordinary way: nothing left is counted.
    c.delete("Deployment", ns, "keep-wait").await;
    c.delete("Deployment", ns, "keep-roll").await;
    settle([0.0, 0.0, 0.0], "all deleted".into()).await;
    eprintln!(
        "ghosts_deleted_while_the_watch_was_down_are_forgotten: {:?}",
        started.elapsed()
    );
}

/// 4. Four failed pin rollouts whose undo keeps failing (409, 403, 500 on
/// the undo's read of the workload, injected for every attempt; and the
/// list of ReplicaSets, which the fake does not serve: 404), retried for
/// 20 s: each is Evented, counted and told once, retried with growing
/// delays; a healthy rollout completing meanwhile is reported within 1 s.
/// (The fake serves no ReplicaSets, so an undo never reaches its PATCH
/// here: faults on it could not be told from the list's 404.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_undos_are_told_once_and_hold_up_no_report() {
    let started = Instant::now();
    let c = Cluster::fake().await;
    let fake = c.fake_server().unwrap().clone();
    let (a, b) = ("ctl-stuck", "ctl-stuck-list");
    let (bad, fine) = (digest('b'), digest('7'));
    let stuck = [
        (a, "conflict", 409u16),
        (a, "forbidden", 403),
        (a, "broken", 500),
    ];
    for (ns, name, code) in stuck {
        failing_pin(&c, &fake, ns, name, &bad).await;
        fake.fail_next(
            FaultRule::status(code)
                .verb("get")
                .resource("deployments")
                .namespace(ns)
                .name(name)
                .times(MANY),
        );
    }
    failing_pin(&c, &fake, b, "unlisted", &bad).await;
    followed(&c, a, "healthy", &fine, jiff::Timestamp::now()).await;
    set_status(&fake, a, "healthy", |w| deployment_status(w, false, false));
    let (url, got, _stop) = receiver().await;
    let namespaces = format!("{a},{b}");
    let p = start_indexer(
        &c,
        "pushroll-ctl",
        "stuck-0",
        &["--namespace", &namespaces, "--notify-url", &url],
    )
    .await;
    let all: Vec<(&str, &str)> = stuck
        .iter()
        .map(|(ns, n, _)| (*ns, *n))
        .chain([(b, "unlisted")])
        .collect();
    // The undo attempts: the refused reads, and the failed lists.
    let attempts = |ns: &str, name: &str| -> usize {
        if name == "unlisted" {
            replica_set_lists(&fake, ns)
        } else {
            let tried = requests_for_name(&fake, "get", ns, name);
            assert!(
                tried.iter().all(|r| r.status >= 400),
                "{name}: {}",
                tried.len()
            );
            tried.len()
        }
    };
    wait_until(
        &p,
        Duration::from_secs(15),
        "every stuck one failed",
        || {
            all.iter()
                .all(|(ns, n)| events(&fake, ns, n, "PushRolloutFailed").len() == 1)
        },
    )
    .await;
    let failed_at = Instant::now();
    wait_until(&p, Duration::from_secs(10), "each undo retried", || {
        all.iter().all(|(ns, n)| attempts(ns, n) >= 2)
    })
    .await;
    // The healthy rollout completes now, while the undos keep failing.
    set_status(&fake, a, "healthy", |w| deployment_status(w, true, false));
    let completed = Instant::now();
    wait_until(
        &p,
        Duration::from_secs(10),
        "the healthy one is reported",
        || events(&fake, a, "healthy", "PushRolloutComplete").len() == 1,
    )
    .await;
    let took = completed.elapsed();
    eprintln!("healthy rollout reported {took:?} after its complete status");
    assert!(took <= Duration::from_secs(1), "reported after {took:?}");
    // 20 s of retries: never a second Event.
    while failed_at.elapsed() < Duration::from_secs(20) {
        for (ns, n) in &all {
            assert_eq!(events(&fake, ns, n, "PushRolloutFailed").len(), 1, "{n}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let m = p.metrics().await;
    assert_eq!(metric(&m, &rollouts("failed")), 4.0, "{m}");
    assert_eq!(metric(&m, &rollouts("complete")), 1.0, "{m}");
    assert_eq!(
        metric(&m, "pushroll_policy_decisions_total{result=\"undone\"}"),
        0.0
    );
    const REPORT: &str = "could not report the rollout's end; retrying with backoff";
    for (ns, n) in &all {
        assert!(events(&fake, ns, n, "PushRolloutUndone").is_empty(), "{n}");
        assert_eq!(told(&got, "rollout-failed", n), 1, "{n}: told once");
        assert_eq!(told(&got, "undone", n), 0, "{n}");
        let tried = attempts(ns, n);
        let delays: Vec<f64> = log_lines(&p, REPORT, n)
            .iter()
            .map(|l| l["retry_in_seconds"].as_f64().unwrap())
            .collect();
        eprintln!("{ns}/{n}: {tried} undo attempts, retried after {delays:?} s");
        // 0, 0.5, 1.5, 3.5, 7.5, 15.5 s: growing, never a fast loop.
        assert!((4..=9).contains(&tried), "{n}: {tried} attempts in ~20 s");
        assert!(delays.windows(2).all(|w| w[1] >= w[0]), "{n}: {delays:?}");
        assert_eq!(delays.first(), Some(&0.5), "{n}: {delays:?}");
    }
    assert_eq!(told(&got, "rollout-complete", "healthy"), 1);
    eprintln!(
        "stuck_undos_are_told_once_and_hold_up_no_report: {:?}",
        started.elapsed()
    );
}

/// 5a. `refused` is counted once per answer: redeliveries count once
/// each; an answer reached through a 409 (the first read found the digest
/// not yet refused, the write met a changed object) counts once; a read
/// that fails counts nothing; dry-run counts nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_is_counted_once_per_answer() {
    let started = Instant::now();
    let c = Cluster::fake().await;
    let fake = c.fake_server().unwrap().clone();
    let ns = "ctl-refused";
    let d = digest('e');
    c.create(deployment(ns, "w", json!({"failed.pushroll.io/app": d})))
        .await;
    let p = start_indexer(&c, "pushroll-ctl", "refused-0", &["--namespace", ns]).await;
    let refused = "pushroll_policy_decisions_total{result=\"refused\"}";
    let push = insert(REPO, "v1", &d);
    let client = http();
    let body = push_until_found(&p, &push, 1).await;
    assert_eq!(body["workloads"][0]["result"], "refused", "{body}");
    let mut answers = 1.0;
    assert_eq!(metric(&p.metrics().await, refused), answers);
    for _ in 0..4 {
        let (status, body) = post(&client, &p, push.clone()).await;
        assert_eq!(
            (status, &body["workloads"][0]["result"]),
            (200, &json!("refused"))
        );
        answers += 1.0;
        assert_eq!(metric(&p.metrics().await, refused), answers);
    }
    // Through a 409, round after round: the record is gone when pushroll
    // reads, its restart's PATCH is held and refused (409) while the
    // record comes back, and the second read refuses.
    for round in 0..3 {
        annotate(&fake, ns, "w", "failed.pushroll.io/app", None);
        let gets = requests_for_name(&fake, "get", ns, "w").len();
        let conflicts = requests_for_name(&fake, "patch", ns, "w")
            .iter()
            .filter(|r| r.status == 409)
            .count();
        fake.fail_next(
            FaultRule::delay(Duration::from_millis(1500))
                .with_status(409)
                .verb("patch")
                .resource("deployments")
                .namespace(ns)
                .name("w")
                .times(1),
        );
        let meddle = async {
            eventually(Duration::from_secs(10), || async {
                (requests_for_name(&fake, "get", ns, "w").len() > gets).then_some(())
            })
            .await
            .expect("pushroll reads the workload");
            annotate(&fake, ns, "w", "failed.pushroll.io/app", Some(&d));
        };
        let ((status, body), ()) = tokio::join!(post(&client, &p, push.clone()), meddle);
        assert_eq!(
            (status, &body["workloads"][0]["result"]),
            (200, &json!("refused")),
            "round {round}: {body}"
        );
        let after = requests_for_name(&fake, "patch", ns, "w")
            .iter()
            .filter(|r| r.status == 409)
            .count();
        assert_eq!(after, conflicts + 1, "round {round}: through one 409");
        answers += 1.0;
        assert_eq!(
            metric(&p.metrics().await, refused),
            answers,
            "round {round}: once"
        );
    }
    // Reads that fail (409 on the GET, three deliveries in a row): no
    // answer, nothing counted; the next delivery is refused, once.
    fake.fail_next(
        FaultRule::status(409)
            .verb("get")
            .resource("deployments")
            .namespace(ns)
            .name("w")
            .times(3),
    );
    for _ in 0..3 {
        let (status, body) = post(&client, &p, push.clone()).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(metric(&p.metrics().await, refused), answers);
    }
    let (status, body) = post(&client, &p, push.clone()).await;
    assert_eq!(
        (status, &body["workloads"][0]["result"]),
        (200, &json!("refused"))
    );
    answers += 1.0;
    assert_eq!(metric(&p.metrics().await, refused), answers);
    // Dry-run: the same answers, none counted.
    let dry = start_indexer(
        &c,
        "pushroll-dry",
        "dry-0",
        &["--namespace", ns, "--dry-run"],
    )
    .await;
    let body = push_until_found(&dry, &push, 1).await;
    assert_eq!(body["workloads"][0]["result"], "refused", "{body}");
    for _ in 0..4 {
        let (status, body) = post(&client, &dry, push.clone()).await;
        assert_eq!(
            (status, &body["workloads"][0]["result"]),
            (200, &json!("refused"))
        );
    }
    assert_eq!(metric(&dry.metrics().await, refused), 0.0);
    assert_eq!(metric(&p.metrics().await, refused), answers);
    eprintln!(
        "a_refusal_is_counted_once_per_answer: {:?}",
        started.elapsed()
    );
}

/// 5b and 5c. A waiting push released by the controller counts in
/// `pushroll_restarts_total{result="restarted"}`; a rollout first seen
/// already complete (the indexer started after it completed, within
/// --rollout-timeout) is reported and counted without a duration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_counts_as_a_restart_and_a_late_completion_has_no_duration() {
    let started = Instant::now();
    let c = Cluster::fake().await;
    let fake = c.fake_server().unwrap().clone();
    let ns = "ctl-late";
    let (d1, d2) = (digest('1'), digest('2'));
    let at = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(30);
    followed(&c, ns, "done", &d1, at).await;
    set_status(&fake, ns, "done", |w| deployment_status(w, true, false));
    c.create(gate(ns, "gate", &d2, true)).await;
    let p = start_indexer(&c, "pushroll-ctl", "late-0", &["--namespace", ns]).await;
    wait_metric(&p, &rollouts("complete"), 1.0, Duration::from_secs(10)).await;
    let duration = "pushroll_rollout_duration_seconds_count{kind=\"Deployment\"}";
    assert_eq!(metric(&p.metrics().await, duration), 0.0);
    let complete = events(&fake, ns, "done", "PushRolloutComplete");
    assert_eq!(complete.len(), 1);
    let message = complete[0]["message"].as_str().unwrap();
    assert!(
        message.contains(&d1) && !message.contains("after"),
        "no duration: {message}"
    );
    wait_until(
        &p,
        Duration::from_secs(10),
        "the waiting push is released",
        || released(&fake, ns, "gate", &d2),
    )
    .await;
    wait_metric(&p, &restarts("restarted"), 1.0, Duration::from_secs(5)).await;
    let m = p.metrics().await;
    assert_eq!(
        metric(&m, "pushroll_policy_decisions_total{result=\"released\"}"),
        1.0,
        "{m}"
    );
    assert_eq!(metric(&m, duration), 0.0, "{m}");
    assert_eq!(metric(&m, &rollouts("complete")), 1.0, "{m}");
    eprintln!(
        "a_release_counts_as_a_restart_and_a_late_completion_has_no_duration: {:?}",
        started.elapsed()
    );
}
