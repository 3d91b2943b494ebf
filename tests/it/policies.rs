//! Policies: approvals, windows, intervals, undo on failure, and the races
//! around them, against the real kube-apiserver and kube-controller-manager
//! with the simulated kubelet (real rollouts). The waiting push lives on
//! the workload (`pushroll.io/pending`), so these tests kill pushroll's
//! processes and look for it there. They skip without a real server (a
//! failure under CI).

use std::time::{Duration, Instant};

use crate::support::cluster::Cluster;
use crate::support::indexer::*;
use crate::support::kubelet::*;
use crate::support::rollout::*;
use crate::support::*;
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(60);

fn annotation(w: &Value, key: &str) -> Option<String> {
    w["metadata"]["annotations"][key]
        .as_str()
        .map(str::to_owned)
}

fn template_digest(w: &Value) -> Option<String> {
    w["spec"]["template"]["metadata"]["annotations"]["digest.pushroll.io/app"]
        .as_str()
        .map(str::to_owned)
}

/// The Deployment controller's revision: one more per template change
/// (the generation also counts changes to the workload's annotations,
/// where the waiting push is kept).
fn revision(w: &Value) -> i64 {
    annotation(w, "deployment.kubernetes.io/revision")
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

async fn workload(c: &Cluster, ns: &str, name: &str) -> Value {
    c.get("Deployment", ns, name)
        .await
        .expect("the workload exists")
}

/// The waiting push on `name` (the workloads here run one image, so the
/// list holds one record), parsed.
async fn pending(c: &Cluster, ns: &str, name: &str) -> Option<Value> {
    let w = workload(c, ns, name).await;
    let list: Value = serde_json::from_str(&annotation(&w, "pushroll.io/pending")?).unwrap();
    let records = list.as_array().expect("a list of records, one per image");
    assert_eq!(records.len(), 1, "{list}");
    Some(records[0].clone())
}

/// Waits until the template records `digest`; returns when.
async fn rolled_to(c: &Cluster, ns: &str, name: &str, digest: &str, limit: Duration) -> Instant {
    eventually(limit, || async {
        let w = workload(c, ns, name).await;
        (template_digest(&w).as_deref() == Some(digest)).then(Instant::now)
    })
    .await
    .unwrap_or_else(|| panic!("{name} never rolled to {digest}"))
}

fn cli(c: &Cluster, args: &[&str]) -> (bool, String, String) {
    let (status, out, err) =
        Pushroll::run_within(args, &kubeconfig_env(c), Duration::from_secs(30));
    (status.success(), out, err)
}

/// Must show 1: a push to a workload that needs approval waits, rolls
/// nothing, and outlives every pushroll process; `pushroll approve` rolls
/// it once, to the pushed digest, within 2 s; a redelivery afterwards is
/// already current.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_outlives_every_process_and_rolls_once() {
    let Some((c, ns, k)) = real_with_kubelet("approve", 2).await else {
        return;
    };
    let image = format!("{REPO}:stable");
    let (old, new) = (digest('a'), digest('b'));
    k.push(&image, &old);
    let mut w = pod_deployment(&ns, "gate", &[("app", &image, "Always")]);
    w["spec"]["replicas"] = json!(2);
    w["metadata"]["annotations"] = json!({"pushroll.io/approval": "required"});
    c.create(w).await;
    k.wait_rollout("Deployment", &ns, "gate", LIMIT).await;
    let before = workload(&c, &ns, "gate").await;
    let (mut p, _) = serve_indexer(&c, &ns, "approve-0", &[]).await;
    k.push(&image, &new);
    let push = wrapped(&insert(REPO, "stable", &new), "m-1", SUBSCRIPTION);
    let body = push_until_found(&p, &push, 1).await;
    assert_eq!(body["workloads"][0]["result"], "pending-approval", "{body}");
    let record = pending(&c, &ns, "gate").await.expect("the pending record");
    assert_eq!(record["digest"], new.as_str());
    assert_eq!(record["reason"], "approval");
    assert_eq!(record["messageId"], "m-1");
    let waiting = workload(&c, &ns, "gate").await;
    assert_eq!(
        waiting["spec"]["template"], before["spec"]["template"],
        "nothing rolled"
    );
    assert_eq!(template_digest(&waiting), None);
    assert_eq!(events(&c, &ns, "gate", "PushDeferred").await.len(), 1);

    // Every pushroll process killed: the push waits on the workload.
    p.kill();
    let record_after = pending(&c, &ns, "gate").await.expect("survives the kill");
    assert_eq!(record_after, record);
    let (p, _) = serve_indexer(&c, &ns, "approve-1", &[]).await;
    // A redelivery to the new process writes nothing (same resourceVersion).
    let rv = workload(&c, &ns, "gate").await["metadata"]["resourceVersion"].clone();
    for _ in 0..5 {
        let (status, body) = post(&http(), &p, push.clone()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["workloads"][0]["result"], "pending-approval", "{body}");
    }
    assert_eq!(
        workload(&c, &ns, "gate").await["metadata"]["resourceVersion"],
        rv
    );
    assert_eq!(events(&c, &ns, "gate", "PushDeferred").await.len(), 1);

    // `pushroll pending` shows it, as a table and as JSON.
    let (ok, out, err) = cli(&c, &["pending", "-n", &ns]);
    assert!(ok, "{err}");
    assert!(
        out.contains("deployment/gate") && out.contains("approval"),
        "{out}"
    );
    let (ok, out, err) = cli(&c, &["pending", "-o", "json"]);
    assert!(ok, "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["name"] == "gate"
                && w["namespace"] == ns.as_str()
                && w["pending"]["digest"] == new.as_str()),
        "{out}"
    );

    // A wrong digest approves nothing.
    let (ok, _, err) = cli(
        &c,
        &["approve", "deployment/gate", "-n", &ns, "--digest", &old],
    );
    assert!(!ok && err.contains("waits for"), "{err}");
    let (ok, out, err) = cli(&c, &["approve", "deploy/gate", "-n", &ns]);
    assert!(ok, "{err}");
    assert!(out.contains(&new), "{out}");
    let approved = Instant::now();
    let at = rolled_to(&c, &ns, "gate", &new, Duration::from_secs(10)).await;
    let took = at.duration_since(approved);
    // The figure the closing note reports (`--nocapture`).
    eprintln!("approval written → template rolled: {took:?}");
    assert!(
        took < Duration::from_secs(2),
        "rolled {took:?} after the approval"
    );
    k.wait_rollout("Deployment", &ns, "gate", LIMIT).await;
    assert_runs(&k, "Deployment", &ns, "gate", 2, &new, "approved").await;
    let after = workload(&c, &ns, "gate").await;
    assert_eq!(revision(&after), revision(&before) + 1, "rolled once");
    assert_eq!(annotation(&after, "pushroll.io/pending"), None);
    assert_eq!(annotation(&after, "pushroll.io/approve"), None);
    assert_eq!(events(&c, &ns, "gate", "PushApproved").await.len(), 1);
    assert_eq!(events(&c, &ns, "gate", "PushRestart").await.len(), 1);
    let (status, body) = post(&http(), &p, push.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(body["workloads"][0]["result"], "already-current", "{body}");
    let m = p.metrics().await;
    assert_eq!(
        metric(&m, "pushroll_policy_decisions_total{result=\"released\"}"),
        1.0,
        "{m}"
    );
    k.stop().await;
}

/// `HH:MM:SS` of `t` in UTC.
fn clock(t: jiff::Timestamp) -> String {
    t.strftime("%H:%M:%S").to_string()
}

/// Must show 2: a push outside the window is deferred and carried out when
/// it opens; a newer push while waiting replaces it, and only the newer
/// digest rolls; an interval defers the second of two close pushes; a
/// malformed window never rolls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_and_intervals_defer_until_they_allow() {
    let Some((c, ns, k)) = real_with_kubelet("window", 2).await else {
        return;
    };
    let image = format!("{REPO}:stable");
    let (old, first, second) = (digest('a'), digest('c'), digest('d'));
    k.push(&image, &old);
    // Opens a few seconds from now (windows are wall-clock times: these
    // are computed from the current time) and stays open an hour.
    let opens = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(6);
    let window = format!(
        "{}-{} UTC",
        clock(opens),
        clock(opens + jiff::SignedDuration::from_secs(3600))
    );
    let specs = [
        ("later", json!({"pushroll.io/window": window})),
        (
            "broken",
            json!({"pushroll.io/window": "Mon-Fri 9 to 5 UTC"}),
        ),
        ("calm", json!({"pushroll.io/min-interval": "5s"})),
    ];
    for (name, annotations) in &specs {
        let mut w = pod_deployment(&ns, name, &[("app", &image, "Always")]);
        w["spec"]["replicas"] = json!(1);
        w["metadata"]["annotations"] = annotations.clone();
        c.create(w).await;
    }
    for (name, _) in &specs {
        k.wait_rollout("Deployment", &ns, name, LIMIT).await;
    }
    let revisions: Vec<i64> = {
        let mut g = Vec::new();
        for (name, _) in &specs {
            g.push(revision(&workload(&c, &ns, name).await));
        }
        g
    };
    let (p, _) = serve_indexer(&c, &ns, "window-0", &[]).await;
    k.push(&image, &first);
    let t1 = jiff::Timestamp::now();
    let body = push_until_found(
        &p,
        &wrapped_at(&insert(REPO, "stable", &first), "m-1", SUBSCRIPTION, t1),
        3,
    )
    .await;
    assert_eq!(result_of(&body, "later")["result"], "deferred", "{body}");
    assert_eq!(result_of(&body, "broken")["result"], "deferred", "{body}");
    // Never restarted by pushroll: no interval to wait for.
    assert_eq!(result_of(&body, "calm")["result"], "restarted", "{body}");
    let record = pending(&c, &ns, "later").await.unwrap();
    let not_before: jiff::Timestamp = record["notBefore"].as_str().unwrap().parse().unwrap();
    assert_eq!(not_before.as_second(), opens.as_second(), "{record}");

    // A newer push while waiting replaces the first.
    k.push(&image, &second);
    let t2 = t1 + jiff::SignedDuration::from_secs(1);
    let (status, body) = post(
        &http(),
        &p,
        wrapped_at(&insert(REPO, "stable", &second), "m-2", SUBSCRIPTION, t2),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(result_of(&body, "later")["result"], "deferred", "{body}");
    assert_eq!(result_of(&body, "calm")["result"], "deferred", "{body}");
    assert_eq!(
        pending(&c, &ns, "later").await.unwrap()["digest"],
        second.as_str()
    );
    assert_eq!(
        pending(&c, &ns, "calm").await.unwrap()["reason"],
        "interval"
    );
    // The first, redelivered now, is older than the waiting one.
    let (_, body) = post(
        &http(),
        &p,
        wrapped_at(&insert(REPO, "stable", &first), "m-1", SUBSCRIPTION, t1),
    )
    .await;
    assert_eq!(result_of(&body, "later")["result"], "superseded", "{body}");

    // Once per waiting push written: the first, then the one replacing it.
    let invalid = wait_event(
        &c,
        &p,
        &ns,
        "broken",
        "PushPolicyInvalid",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(invalid["type"], "Warning");
    assert!(
        invalid["message"]
            .as_str()
            .unwrap()
            .contains("pushroll.io/window"),
        "{invalid}"
    );
    let invalid_total = "pushroll_policy_invalid_total{annotation=\"pushroll.io/window\"}";
    assert_eq!(metric(&p.metrics().await, invalid_total), 2.0);

    rolled_to(&c, &ns, "later", &second, Duration::from_secs(30)).await;
    // An upper bound (the poll is 10 ms), from the whole second the window
    // names: reported in the closing note.
    let opened = jiff::Timestamp::from_second(opens.as_second()).unwrap();
    eprintln!(
        "window opens → template rolled: {} ms",
        jiff::Timestamp::now().duration_since(opened).as_millis()
    );
    let later = workload(&c, &ns, "later").await;
    let restarted: jiff::Timestamp =
        later["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
    assert!(
        restarted.as_second() >= opens.as_second(),
        "rolled at {restarted}, the window opens at {opens}"
    );
    k.wait_rollout("Deployment", &ns, "later", LIMIT).await;
    let later = workload(&c, &ns, "later").await;
    assert_eq!(
        revision(&later),
        revisions[0] + 1,
        "only the newer digest rolled"
    );
    let restarts = events(&c, &ns, "later", "PushRestart").await;
    assert_eq!(restarts.len(), 1);
    assert!(restarts[0]["message"].as_str().unwrap().contains(&second));
    rolled_to(&c, &ns, "calm", &second, Duration::from_secs(30)).await;
    k.wait_rollout("Deployment", &ns, "calm", LIMIT).await;
    let calm = workload(&c, &ns, "calm").await;
    assert_eq!(
        revision(&calm),
        revisions[2] + 2,
        "both pushes, one after the other"
    );
    assert_runs(&k, "Deployment", &ns, "later", 1, &second, "in the window").await;

    // The malformed window, past the time the good one opened: never rolled,
    // and redeliveries add nothing.
    for _ in 0..3 {
        let (_, body) = post(
            &http(),
            &p,
            wrapped_at(&insert(REPO, "stable", &second), "m-2", SUBSCRIPTION, t2),
        )
        .await;
        assert_eq!(result_of(&body, "broken")["result"], "deferred", "{body}");
    }
    let broken = workload(&c, &ns, "broken").await;
    assert_eq!(
        revision(&broken),
        revisions[1],
        "a malformed window never rolls"
    );
    assert_eq!(template_digest(&broken), None);
    assert_eq!(
        events(&c, &ns, "broken", "PushPolicyInvalid").await.len(),
        2
    );
    assert_eq!(metric(&p.metrics().await, invalid_total), 2.0);
    k.stop().await;
}

/// Must show 3: pin mode, `on-failure: undo` and a digest that crashes:
/// `PushRolloutFailed`, then `PushRolloutUndone`, the pods back on the
/// previous digest; the bad push is refused on redelivery, and a newer
/// good digest rolls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_pin_is_undone_and_its_digest_refused() {
    let Some((c, ns, k)) = real_with_kubelet("undo", 2).await else {
        return;
    };
    let image = format!("{REPO}:stable");
    let (old, bad, good) = (digest('a'), digest('e'), digest('f'));
    k.push(&image, &old);
    let mut w = pod_deployment(&ns, "shop", &[("app", &image, "IfNotPresent")]);
    w["spec"]["replicas"] = json!(2);
    w["spec"]["progressDeadlineSeconds"] = json!(10);
    w["metadata"]["annotations"] =
        json!({"pushroll.io/mode": "pin", "pushroll.io/on-failure": "undo"});
    c.create(w).await;
    k.wait_rollout("Deployment", &ns, "shop", LIMIT).await;
    let (p, _) = serve_indexer(&c, &ns, "undo-0", &[]).await;

    k.push(&image, &bad);
    k.crash(&bad);
    let t1 = jiff::Timestamp::now();
    let bad_push = wrapped_at(&insert(REPO, "stable", &bad), "m-bad", SUBSCRIPTION, t1);
    let body = push_until_found(&p, &bad_push, 1).await;
    assert_eq!(body["workloads"][0]["result"], "restarted", "{body}");
    let failed = wait_event(&c, &p, &ns, "shop", "PushRolloutFailed", LIMIT).await;
    let undone = wait_event(
        &c,
        &p,
        &ns,
        "shop",
        "PushRolloutUndone",
        Duration::from_secs(20),
    )
    .await;
    assert!(
        undone["message"].as_str().unwrap().contains(&bad),
        "{undone}"
    );
    let at = |e: &Value| {
        e["firstTimestamp"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap()
    };
    assert!(at(&failed) <= at(&undone), "failed, then undone");
    let shop = workload(&c, &ns, "shop").await;
    // The template that ran before, pinned to the digest its pods ran (its
    // tag now names the failed digest).
    assert_eq!(
        shop["spec"]["template"]["spec"]["containers"][0]["image"],
        format!("{image}@{old}"),
        "the template that ran before is back"
    );
    assert_eq!(
        annotation(&shop, "failed.pushroll.io/app").as_deref(),
        Some(bad.as_str())
    );
    k.wait_rollout("Deployment", &ns, "shop", LIMIT).await;
    assert_runs(&k, "Deployment", &ns, "shop", 2, &old, "undone").await;

    // The bad push, redelivered again and again: refused.
    for _ in 0..5 {
        let (status, body) = post(&http(), &p, bad_push.clone()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["workloads"][0]["result"], "refused", "{body}");
    }
    assert_eq!(events(&c, &ns, "shop", "PushRolloutUndone").await.len(), 1);
    assert_eq!(
        metric(
            &p.metrics().await,
            "pushroll_policy_decisions_total{result=\"undone\"}"
        ),
        1.0
    );

    // A newer, good digest rolls normally and clears the record.
    k.push(&image, &good);
    let t2 = t1 + jiff::SignedDuration::from_secs(5);
    let (_, body) = post(
        &http(),
        &p,
        wrapped_at(&insert(REPO, "stable", &good), "m-good", SUBSCRIPTION, t2),
    )
    .await;
    assert_eq!(body["workloads"][0]["result"], "restarted", "{body}");
    wait_event(&c, &p, &ns, "shop", "PushRolloutComplete", LIMIT).await;
    assert_runs(&k, "Deployment", &ns, "shop", 2, &good, "the good digest").await;
    let shop = workload(&c, &ns, "shop").await;
    assert_eq!(annotation(&shop, "failed.pushroll.io/app"), None);
    assert_eq!(
        shop["spec"]["template"]["spec"]["containers"][0]["image"],
        format!("{image}@{good}")
    );
    k.stop().await;
}

/// Undo for the kinds whose revisions are ControllerRevisions: a DaemonSet
/// and a StatefulSet pinned to a crashing digest fail by `--rollout-timeout`
/// and get their previous template back; the DaemonSet's pods return to
/// the previous digest. (A StatefulSet's controller does not replace a pod
/// stuck on a broken revision by itself, kubernetes/kubernetes#67250: its
/// template and record are checked, not its pods.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_and_stateful_sets_are_undone_from_their_revisions() {
    let Some((c, ns, k)) = real_with_kubelet("undo-kinds", 2).await else {
        return;
    };
    let image = format!("{REPO}:stable");
    let (old, bad) = (digest('a'), digest('e'));
    k.push(&image, &old);
    let policy = json!({"pushroll.io/mode": "pin", "pushroll.io/on-failure": "undo"});
    let mut ds = pod_workload("DaemonSet", &ns, "agent", &[("app", &image, "Always")]);
    ds["spec"]["template"]["spec"]["nodeSelector"] = k.node_selector();
    ds["metadata"]["annotations"] = policy.clone();
    c.create(ds).await;
    let mut sts = pod_workload("StatefulSet", &ns, "db", &[("app", &image, "Always")]);
    sts["spec"]["replicas"] = json!(2);
    sts["metadata"]["annotations"] = policy;
    c.create(sts).await;
    k.wait_rollout("DaemonSet", &ns, "agent", LIMIT).await;
    k.wait_rollout("StatefulSet", &ns, "db", LIMIT).await;
    let (p, _) = serve_indexer(&c, &ns, "undo-kinds-0", &["--rollout-timeout", "6s"]).await;
    k.push(&image, &bad);
    k.crash(&bad);
    let body = push_until_found(&p, &insert(REPO, "stable", &bad), 2).await;
    for name in ["agent", "db"] {
        assert_eq!(result_of(&body, name)["result"], "restarted", "{body}");
    }
    for (kind, name) in [("DaemonSet", "agent"), ("StatefulSet", "db")] {
        wait_event(&c, &p, &ns, name, "PushRolloutFailed", LIMIT).await;
        wait_event(
            &c,
            &p,
            &ns,
            name,
            "PushRolloutUndone",
            Duration::from_secs(20),
        )
        .await;
        let w = c.get(kind, &ns, name).await.unwrap();
        assert_eq!(
            w["spec"]["template"]["spec"]["containers"][0]["image"],
            format!("{image}@{old}"),
            "{kind}: the previous revision's template is back, pinned to what it ran"
        );
        assert_eq!(
            annotation(&w, "failed.pushroll.io/app").as_deref(),
            Some(bad.as_str())
        );
        let (_, body) = post(&http(), &p, insert(REPO, "stable", &bad)).await;
        assert_eq!(result_of(&body, name)["result"], "refused", "{body}");
    }
    k.wait_rollout("DaemonSet", &ns, "agent", LIMIT).await;
    assert_runs(&k, "DaemonSet", &ns, "agent", 2, &old, "undone").await;
    k.stop().await;
}

fn signal(p: &Pushroll, sig: i32) {
    assert_eq!(unsafe { libc::kill(p.pid() as i32, sig) }, 0);
}

/// Must show 4: twenty concurrent deliveries of one push to a workload
/// that needs approval leave one pending record (one write); with two
/// indexer replicas, a leader stopped before the approval and killed
/// after it is replaced, and the survivor rolls the workload exactly
/// once, three rounds in a row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_deliveries_and_a_lost_leader_roll_once() {
    let Some((c, ns, k)) = real_with_kubelet("race", 1).await else {
        return;
    };
    let image = format!("{REPO}:stable");
    k.push(&image, &digest('a'));
    let mut w = pod_deployment(&ns, "vault", &[("app", &image, "Always")]);
    w["spec"]["replicas"] = json!(1);
    w["metadata"]["annotations"] = json!({"pushroll.io/approval": "required"});
    c.create(w).await;
    k.wait_rollout("Deployment", &ns, "vault", LIMIT).await;
    let cm_ns = c.ns("pushroll");
    c.ensure_namespace(&cm_ns).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("index.json");
    let start = |pod: &str| start_serve_indexer_with(&c, &cm_ns, &ns, &file, pod, &[]);
    let (mut a, mut b) = (start("race-0"), start("race-1"));
    for p in [&a, &b] {
        p.wait_ready(READY_LIMIT).await;
    }
    for round in 0..3u8 {
        let (leader, survivor) = leading(&mut a, &mut b).await;
        let d = digest((b'b' + round) as char);
        k.push(&image, &d);
        let push = wrapped(
            &insert(REPO, "stable", &d),
            &format!("m-{round}"),
            SUBSCRIPTION,
        );
        push_until_found(survivor, &push, 1).await;
        let client = http();
        let answers = futures::future::join_all((0..20).map(|i| {
            let target: &Pushroll = if i % 2 == 0 { leader } else { survivor };
            post(&client, target, push.clone())
        }))
        .await;
        for (status, body) in &answers {
            assert_eq!(*status, 200, "{body}");
            assert_eq!(body["workloads"][0]["result"], "pending-approval", "{body}");
        }
        let deferred: Vec<Value> = events(&c, &ns, "vault", "PushDeferred")
            .await
            .into_iter()
            .filter(|e| e["message"].as_str().unwrap().contains(&d))
            .collect();
        assert_eq!(deferred.len(), 1, "one pending write for 20 deliveries");
        assert_eq!(
            pending(&c, &ns, "vault").await.unwrap()["digest"],
            d.as_str()
        );
        let before = revision(&workload(&c, &ns, "vault").await);

        // The leader stops before the approval and dies after it.
        signal(leader, libc::SIGSTOP);
        let (ok, _, err) = cli(&c, &["approve", "deployment/vault", "-n", &ns]);
        assert!(ok, "{err}");
        leader.kill();
        rolled_to(&c, &ns, "vault", &d, Duration::from_secs(30)).await;
        k.wait_rollout("Deployment", &ns, "vault", LIMIT).await;
        let after = workload(&c, &ns, "vault").await;
        assert_eq!(revision(&after), before + 1, "round {round}: rolled once");
        let approved: Vec<Value> = events(&c, &ns, "vault", "PushApproved")
            .await
            .into_iter()
            .filter(|e| e["message"].as_str().unwrap().contains(&d))
            .collect();
        assert_eq!(approved.len(), 1, "round {round}");
        // A replacement replica joins for the next round.
        let replacement = start(&format!("race-{}", round + 2));
        replacement.wait_ready(READY_LIMIT).await;
        *leader = replacement;
    }
    k.stop().await;
}
