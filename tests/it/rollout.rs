//! The pushed digest really runs: pin mode, order, and the rollout follower
//! (`PushRolloutComplete`, `PushRolloutFailed`, `PushImageStale`), against
//! the real kube-apiserver and kube-controller-manager with the simulated
//! kubelet (real rollouts, a node image cache that honours the pull
//! policy), and on the fake, where the test plays the controller and
//! counts every request the follower makes. Real-server tests skip without
//! one (a failure under CI).

use std::time::{Duration, Instant};

// The emulator's driver, shared with the pubsub module.
use crate::pubsub::emulator;

use crate::support::cluster::Cluster;
use crate::support::indexer::*;
use crate::support::kubelet::*;
use crate::support::rollout::*;
use crate::support::*;
use serde_json::{Value, json};

/// Far above the 1-3 s a rollout of a few pods takes here.
const LIMIT: Duration = Duration::from_secs(60);

fn rollouts(metrics: &str, kind: &str, result: &str) -> f64 {
    metric(
        metrics,
        &format!("pushroll_rollouts_total{{kind=\"{kind}\",result=\"{result}\"}}"),
    )
}

/// Must show 1: `restart` mode with `IfNotPresent` on nodes that cached the
/// tag is warned about, completes, and is then reported stale, naming the
/// pods; with `Always` it completes on the pushed digest, with no stale
/// Event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_tag_is_reported_stale_and_always_is_not() {
    let Some((c, ns, k)) = real_with_kubelet("stale", 3).await else {
        return;
    };
    let image = format!("{REPO}:stable");
    let (old, new) = (digest('a'), digest('b'));
    k.push(&image, &old);
    c.create(pod_deployment(
        &ns,
        "trap",
        &[("app", &image, "IfNotPresent")],
    ))
    .await;
    // Its own tag: pods of `always` pulling the push would otherwise put
    // the new digest in the node caches under the trap's feet.
    let edge = format!("{REPO}:edge");
    k.push(&edge, &old);
    c.create(pod_deployment(&ns, "always", &[("app", &edge, "Always")]))
        .await;
    for name in ["trap", "always"] {
        k.wait_rollout("Deployment", &ns, name, LIMIT).await;
    }
    let (p, _) = serve_indexer(&c, &ns, "stale-0", &[]).await;
    k.push(&image, &new);
    k.push(&edge, &new);
    let body = push_until_found(&p, &insert(REPO, "stable", &new), 1).await;
    let trap = result_of(&body, "trap");
    assert_eq!(trap["result"], "restarted", "{body}");
    let warning = trap["warnings"][0].as_str().unwrap_or_default();
    assert!(
        warning.contains("IfNotPresent") && warning.contains("pushroll.io/mode: pin"),
        "{body}"
    );
    let body = push_until_found(&p, &insert(REPO, "edge", &new), 1).await;
    assert_eq!(result_of(&body, "always")["result"], "restarted");
    assert!(
        result_of(&body, "always").get("warnings").is_none(),
        "{body}"
    );

    let complete = wait_event(&c, &p, &ns, "trap", "PushRolloutComplete", LIMIT).await;
    assert_eq!(complete["type"], "Normal");
    assert!(
        complete["message"].as_str().unwrap().contains(&new),
        "{complete}"
    );
    let stale = wait_event(
        &c,
        &p,
        &ns,
        "trap",
        "PushImageStale",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(stale["type"], "Warning");
    let message = stale["message"].as_str().unwrap();
    // Every pod still on the old digest is named, with its node.
    let running = k.running("Deployment", &ns, "trap").await;
    assert_eq!(running.len(), 3, "{running:?}");
    for r in &running {
        assert_eq!(r.digest, old, "the trap keeps the cached image: {r:?}");
        assert!(
            message.contains(&r.pod) && message.contains(&r.node) && message.contains(&old),
            "{message} should name {r:?}"
        );
    }

    wait_event(&c, &p, &ns, "always", "PushRolloutComplete", LIMIT).await;
    assert_runs(
        &k,
        "Deployment",
        &ns,
        "always",
        3,
        &new,
        "Always pulls the push",
    )
    .await;
    let m = eventually(Duration::from_secs(10), || async {
        let m = p.metrics().await;
        (rollouts(&m, "Deployment", "complete") == 1.0).then_some(m)
    })
    .await
    .expect("the complete rollout is counted");
    assert_eq!(rollouts(&m, "Deployment", "stale"), 1.0, "{m}");
    assert_eq!(metric(&m, "pushroll_pull_policy_warnings_total"), 1.0);
    assert!(
        events(&c, &ns, "always", "PushImageStale").await.is_empty(),
        "Always runs the pushed digest: no stale Event"
    );
    let finished = p
        .logs()
        .iter()
        .filter(|l| l.contains("rollout finished"))
        .count();
    assert_eq!(
        finished,
        2,
        "one log line per rollout:\n{}",
        p.logs().join("\n")
    );
    k.stop().await;
}

/// Must show 2: `pin` mode runs exactly the pushed digest whatever the pull
/// policy and cache, re-pins on the next push, and an older push delivered
/// afterwards is `superseded`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_mode_runs_the_pushed_digest_and_never_goes_back() {
    let Some((c, ns, k)) = real_with_kubelet("pin", 3).await else {
        return;
    };
    let image = format!("{REPO}:stable");
    let (old, first, second) = (digest('a'), digest('c'), digest('d'));
    k.push(&image, &old);
    let mut w = pod_deployment(&ns, "pinned", &[("app", &image, "IfNotPresent")]);
    w["metadata"]["annotations"] = json!({"pushroll.io/mode": "pin"});
    c.create(w).await;
    k.wait_rollout("Deployment", &ns, "pinned", LIMIT).await;
    let (p, _) = serve_indexer(&c, &ns, "pin-0", &[]).await;

    let t1 = jiff::Timestamp::now();
    let first_push = wrapped_at(&insert(REPO, "stable", &first), "m-1", SUBSCRIPTION, t1);
    k.push(&image, &first);
    let body = push_until_found(&p, &first_push, 1).await;
    assert_eq!(body["workloads"][0]["result"], "restarted", "{body}");
    assert!(
        body["workloads"][0].get("warnings").is_none(),
        "pin mode needs no warning: {body}"
    );
    wait_event(&c, &p, &ns, "pinned", "PushRolloutComplete", LIMIT).await;
    assert_runs(
        &k,
        "Deployment",
        &ns,
        "pinned",
        3,
        &first,
        "pinned, IfNotPresent, cached",
    )
    .await;
    let image_of = || async {
        c.get("Deployment", &ns, "pinned").await.unwrap()["spec"]["template"]["spec"]["containers"]
            [0]["image"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(image_of().await, format!("{image}@{first}"));

    // The next push re-pins.
    let t2 = t1 + jiff::SignedDuration::from_secs(5);
    k.push(&image, &second);
    let (status, body) = post(
        &http(),
        &p,
        wrapped_at(&insert(REPO, "stable", &second), "m-2", SUBSCRIPTION, t2),
    )
    .await;
    assert_eq!(
        (status, &body["workloads"][0]["result"]),
        (200, &json!("restarted")),
        "{body}"
    );
    assert_eq!(image_of().await, format!("{image}@{second}"));
    k.wait_rollout("Deployment", &ns, "pinned", LIMIT).await;
    assert_runs(&k, "Deployment", &ns, "pinned", 3, &second, "re-pinned").await;
    // Both rollouts reported, each once, and neither stale.
    let both = eventually(LIMIT, || async {
        let done = events(&c, &ns, "pinned", "PushRolloutComplete").await;
        (done.len() == 2).then_some(done)
    })
    .await
    .expect("a PushRolloutComplete per pushed digest");
    assert!(
        both.iter()
            .any(|e| e["message"].as_str().unwrap().contains(&second))
    );
    assert!(events(&c, &ns, "pinned", "PushImageStale").await.is_empty());

    // The first message, redelivered (again and again): superseded.
    for _ in 0..5 {
        let (status, body) = post(&http(), &p, first_push.clone()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["workloads"][0]["result"], "superseded", "{body}");
    }
    assert_eq!(image_of().await, format!("{image}@{second}"));
    assert_runs(
        &k,
        "Deployment",
        &ns,
        "pinned",
        3,
        &second,
        "after the redeliveries",
    )
    .await;
    k.stop().await;
}

/// Must show 3: a digest that never becomes ready, under a short
/// `progressDeadlineSeconds`, is `PushRolloutFailed` soon after the
/// deadline; a StatefulSet and a DaemonSet are followed to the end too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_and_every_kind_are_followed_to_the_end() {
    let Some((c, ns, k)) = real_with_kubelet("kinds", 2).await else {
        return;
    };
    let image = format!("{REPO}:stable");
    let (old, bad, good) = (digest('a'), digest('e'), digest('f'));
    k.push(&image, &old);
    let deadline = 10;
    // The bad digest only reaches the Deployment: it runs another tag.
    let bad_image = format!("{REPO}:canary");
    k.push(&bad_image, &old);
    let mut crash = pod_deployment(&ns, "crash", &[("app", &bad_image, "Always")]);
    crash["spec"]["replicas"] = json!(2);
    crash["spec"]["progressDeadlineSeconds"] = json!(deadline);
    c.create(crash).await;
    let mut sts = pod_workload("StatefulSet", &ns, "db", &[("app", &image, "Always")]);
    sts["spec"]["replicas"] = json!(2);
    c.create(sts).await;
    let mut ds = pod_workload("DaemonSet", &ns, "agent", &[("app", &image, "Always")]);
    ds["spec"]["template"]["spec"]["nodeSelector"] = k.node_selector();
    c.create(ds).await;
    k.wait_rollout("Deployment", &ns, "crash", LIMIT).await;
    k.wait_rollout("StatefulSet", &ns, "db", LIMIT).await;
    k.wait_rollout("DaemonSet", &ns, "agent", LIMIT).await;
    let (p, _) = serve_indexer(&c, &ns, "kinds-0", &[]).await;

    k.push(&bad_image, &bad);
    k.crash(&bad);
    let pushed = Instant::now();
    let body = push_until_found(&p, &insert(REPO, "canary", &bad), 1).await;
    assert_eq!(body["workloads"][0]["result"], "restarted", "{body}");
    let failed = wait_event(&c, &p, &ns, "crash", "PushRolloutFailed", LIMIT).await;
    let took = pushed.elapsed();
    assert_eq!(failed["type"], "Warning");
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("ProgressDeadlineExceeded"),
        "{failed}"
    );
    // The controller marks it a little after the deadline (its resync);
    // the follower reports it from the same watch event.
    assert!(
        took < Duration::from_secs(deadline + 10),
        "PushRolloutFailed {took:?} after the push, deadline {deadline} s"
    );
    assert!(
        events(&c, &ns, "crash", "PushRolloutComplete")
            .await
            .is_empty()
    );

    k.push(&image, &good);
    let body = push_until_found(&p, &insert(REPO, "stable", &good), 2).await;
    for name in ["db", "agent"] {
        assert_eq!(result_of(&body, name)["result"], "restarted", "{body}");
    }
    wait_event(&c, &p, &ns, "db", "PushRolloutComplete", LIMIT).await;
    wait_event(&c, &p, &ns, "agent", "PushRolloutComplete", LIMIT).await;
    assert_runs(&k, "StatefulSet", &ns, "db", 2, &good, "StatefulSet rolled").await;
    assert_runs(&k, "DaemonSet", &ns, "agent", 2, &good, "DaemonSet rolled").await;
    let m = p.metrics().await;
    assert_eq!(rollouts(&m, "Deployment", "failed"), 1.0, "{m}");
    assert_eq!(rollouts(&m, "StatefulSet", "complete"), 1.0, "{m}");
    assert_eq!(rollouts(&m, "DaemonSet", "complete"), 1.0, "{m}");
    k.stop().await;
}

/// Must show 4: two replicas; the leader is killed mid-rollout, again and
/// again. The other reports each completion, and each workload and digest
/// has exactly one `PushRolloutComplete`. A replica started after the
/// rollouts finished reports none of them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_mid_rollout_is_replaced_and_reports_once() {
    let Some((c, ns, k)) = real_with_kubelet("handover", 3).await else {
        return;
    };
    let image = format!("{REPO}:stable");
    k.push(&image, &digest('a'));
    let mut w = pod_deployment(&ns, "web", &[("app", &image, "Always")]);
    // Slow enough to kill the leader mid-rollout: each new pod counts as
    // available 2 s after it is ready.
    w["spec"]["minReadySeconds"] = json!(2);
    c.create(w).await;
    k.wait_rollout("Deployment", &ns, "web", LIMIT).await;
    let cm_ns = c.ns("pushroll");
    c.ensure_namespace(&cm_ns).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("index.json");
    let start = |pod: &str| start_serve_indexer(&c, &cm_ns, &ns, &file, pod);
    let mut a = start("handover-0");
    let mut b = start("handover-1");
    const ROUNDS: usize = 3;
    for round in 0..ROUNDS {
        let d = digest(char::from(b'1' + round as u8));
        let (lead, follow) = leading(&mut a, &mut b).await;
        k.push(&image, &d);
        // Pushed through the follower, so that only the leader dies.
        let body = push_until_found(follow, &insert(REPO, "stable", &d), 1).await;
        assert_eq!(body["workloads"][0]["result"], "restarted", "{body}");
        lead.kill();
        let status = c.get("Deployment", &ns, "web").await.unwrap();
        assert_ne!(
            rollout_status("Deployment", &status),
            Rollout::Complete,
            "round {round}: the leader must die mid-rollout"
        );
        let complete = eventually(LIMIT, || async {
            let found: Vec<Value> = events(&c, &ns, "web", "PushRolloutComplete")
                .await
                .into_iter()
                .filter(|e| e["message"].as_str().unwrap().contains(&d))
                .collect();
            (!found.is_empty()).then_some(found)
        })
        .await
        .unwrap_or_else(|| panic!("round {round}: the survivor never reported"));
        assert_eq!(complete.len(), 1, "round {round}: {complete:?}");
        // The log line follows the Event's create (and the pods LIST): wait
        // for it rather than race the process writing it.
        let reported = follow
            .log_line(Duration::from_secs(10), |l| {
                l.contains("rollout finished") && l.contains(&d)
            })
            .await
            .is_some();
        assert!(
            reported,
            "round {round}: the survivor reported it:\n{}",
            follow.logs().join("\n")
        );
        // The killed one comes back as a new replica.
        let dead = lead.pid();
        let pod = format!("handover-{}", round + 2);
        if a.pid() == dead {
            a = start(&pod);
        } else {
            b = start(&pod);
        }
    }
    assert_eq!(
        events(&c, &ns, "web", "PushRolloutComplete").await.len(),
        ROUNDS,
        "one Event per digest"
    );
    // A replica started after the last rollout finished, alone: it sees
    // that rollout complete, tries, finds it reported (409), counts nothing.
    a.kill();
    b.kill();
    let late = start("handover-late");
    let tried = eventually(Duration::from_secs(60), || async {
        let m = late.metrics().await;
        let conflicts = metric(
            &m,
            "pushroll_kube_api_requests_total{verb=\"create\",resource=\"events\",outcome=\"conflict\"}",
        );
        (conflicts >= 1.0).then_some(m)
    })
    .await
    .expect("the late leader looks at the finished rollout");
    assert_eq!(rollouts(&tried, "Deployment", "complete"), 0.0, "{tried}");
    assert!(!late.logs().iter().any(|l| l.contains("rollout finished")));
    assert_eq!(
        events(&c, &ns, "web", "PushRolloutComplete").await.len(),
        ROUNDS
    );
    k.stop().await;
}

/// A Deployment's status as its controller writes it when `updated` of
/// `replicas` run the new template and all are available; `deadline`: the
/// Progressing condition says ProgressDeadlineExceeded.
fn deployment_status(w: &Value, updated: i64, deadline: bool) -> Value {
    let replicas = w["spec"]["replicas"].as_i64().unwrap_or(1);
    let mut status = json!({
        "observedGeneration": w["metadata"]["generation"],
        "replicas": replicas, "updatedReplicas": updated,
        "readyReplicas": replicas, "availableReplicas": replicas,
    });
    if deadline {
        status["conditions"] = json!([{"type": "Progressing", "status": "False",
            "reason": "ProgressDeadlineExceeded", "message": "timed out"}]);
    }
    status
}

/// The requests the follower makes, counted on the fake where the test
/// plays the controller: no new watch, one pods LIST per finished rollout,
/// one Event per workload and digest however often the same status is seen
/// again or the push is redelivered; a deadline and the rollout timeout
/// fail a rollout once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_follower_watches_nothing_new_and_lists_pods_once_per_rollout() {
    let c = Cluster::fake().await;
    let fake = c.fake_server().unwrap();
    let ns = c.ns("follow");
    c.deploy(&ns, "api", &format!("{REPO}:v1")).await;
    let (p, _) = serve_indexer(&c, &ns, "follow-0", &["--rollout-timeout", "4s"]).await;
    let watches = || fake.requests_for("watch", None).len();
    let pod_lists = || fake.requests_for("list", Some("pods")).len();
    let watching = watches();
    assert_eq!(watching, 3, "one watch per kind");

    // Two pods of it, as a kubelet reports them: one on the pushed digest,
    // one still on the cached old one; and a pod of another workload.
    for (pod, app, runs) in [
        ("api-1", "api", DIGEST),
        ("api-2", "api", DIGEST2),
        ("other-1", "other", DIGEST2),
    ] {
        c.create(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod, "namespace": ns, "labels": {"app": app}},
            "spec": {"nodeName": format!("node-{pod}"), "containers": [{"name": "app", "image": format!("{REPO}:v1")}]}}))
            .await;
        c.put_status("Pod", &ns, pod, |_| {
            json!({"phase": "Running", "containerStatuses": [
            {"name": "app", "image": format!("{REPO}:v1"), "imageID": format!("{REPO}@{runs}"),
             "ready": true, "restartCount": 0}]})
        })
        .await;
    }
    let push = insert(REPO, "v1", DIGEST);
    let body = push_until_found(&p, &push, 1).await;
    assert_eq!(body["workloads"][0]["result"], "restarted", "{body}");
    // The same status, seen again and again (controller resyncs, re-lists)
    // and the push redelivered: one report.
    const REPEATS: usize = 10;
    for i in 0..REPEATS {
        c.put_status("Deployment", &ns, "api", |w| deployment_status(w, 1, false))
            .await;
        let (status, body) = post(&http(), &p, push.clone()).await;
        assert_eq!(
            (status, &body["workloads"][0]["result"]),
            (200, &json!("already-current")),
            "{i}: {body}"
        );
    }
    wait_event(
        &c,
        &p,
        &ns,
        "api",
        "PushRolloutComplete",
        Duration::from_secs(10),
    )
    .await;
    let stale = wait_event(
        &c,
        &p,
        &ns,
        "api",
        "PushImageStale",
        Duration::from_secs(10),
    )
    .await;
    let message = stale["message"].as_str().unwrap();
    assert!(
        message.contains("api-2") && message.contains("node-api-2") && message.contains(DIGEST2),
        "{message}"
    );
    assert!(
        !message.contains("api-1") && !message.contains("other-1"),
        "{message}"
    );
    let m = eventually(Duration::from_secs(10), || async {
        let m = p.metrics().await;
        (rollouts(&m, "Deployment", "stale") == 1.0).then_some(m)
    })
    .await
    .expect("counted once, as stale");
    assert_eq!(rollouts(&m, "Deployment", "complete"), 0.0, "{m}");
    assert_eq!(events(&c, &ns, "api", "PushRolloutComplete").await.len(), 1);
    assert_eq!(events(&c, &ns, "api", "PushImageStale").await.len(), 1);
    assert_eq!(pod_lists(), 1, "one pods LIST per finished rollout");
    assert_eq!(metric(&m, "pushroll_rollouts_in_progress"), 0.0);
    assert!(
        metric(
            &m,
            "pushroll_rollout_duration_seconds_count{kind=\"Deployment\"}"
        ) == 1.0,
        "{m}"
    );

    // A newer digest past its progress deadline: failed, once.
    let body = push_until_found(&p, &insert(REPO, "v1", DIGEST2), 1).await;
    assert_eq!(body["workloads"][0]["result"], "restarted", "{body}");
    assert_eq!(
        metric(&p.metrics().await, "pushroll_rollouts_in_progress"),
        1.0
    );
    for _ in 0..REPEATS {
        c.put_status("Deployment", &ns, "api", |w| deployment_status(w, 0, true))
            .await;
    }
    let failed = wait_event(
        &c,
        &p,
        &ns,
        "api",
        "PushRolloutFailed",
        Duration::from_secs(10),
    )
    .await;
    assert!(
        failed["message"].as_str().unwrap().contains(DIGEST2),
        "{failed}"
    );

    // A third that never completes: failed by --rollout-timeout (4 s after
    // its restartedAt, from the follower's one timer).
    let third = format!("sha256:{}", "3".repeat(64));
    let body = push_until_found(&p, &insert(REPO, "v1", &third), 1).await;
    assert_eq!(body["workloads"][0]["result"], "restarted", "{body}");
    let timed_out = eventually(Duration::from_secs(15), || async {
        events(&c, &ns, "api", "PushRolloutFailed")
            .await
            .into_iter()
            .find(|e| e["message"].as_str().unwrap().contains(&third))
    })
    .await
    .expect("the timeout fails it");
    assert!(
        timed_out["message"]
            .as_str()
            .unwrap()
            .contains("rollout-timeout"),
        "{timed_out}"
    );
    let m = p.metrics().await;
    assert_eq!(rollouts(&m, "Deployment", "failed"), 2.0, "{m}");
    assert_eq!(events(&c, &ns, "api", "PushRolloutFailed").await.len(), 2);
    assert_eq!(pod_lists(), 1, "failures list no pods");
    assert_eq!(watches(), watching, "no watch connection was added");
}

/// The name pushroll gives a rollout's Event (deterministic, so that
/// every leader records it once): `src/k8s.rs`, `rollout_event`.
fn rollout_event_name(kind: &str, workload: &str, digest: &str, reason: &str) -> String {
    use sha2::Digest as _;
    let hash = sha2::Sha256::digest(format!("{kind}/{workload}/{digest}").as_bytes());
    let hex: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{workload}.{}.{hex}", reason.to_ascii_lowercase())
}

/// An Event create whose answer is lost (here a 500) although the API
/// server stored it: the retry meets 409. The rollout is still counted,
/// and told, exactly once; round after round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_whose_answer_was_lost_is_counted_once() {
    let c = Cluster::fake().await;
    let fake = c.fake_server().unwrap();
    let ns = c.ns("lost");
    c.deploy(&ns, "api", &format!("{REPO}:v1")).await;
    let (p, _) = serve_indexer(&c, &ns, "lost-0", &[]).await;
    const ROUNDS: usize = 5;
    for round in 1..=ROUNDS {
        let digest = format!(
            "sha256:{}",
            char::from(b'a' + round as u8).to_string().repeat(64)
        );
        // serve records its PushRestart before it answers; the next Event
        // create is the follower's.
        let body = push_until_found(&p, &insert(REPO, "v1", &digest), 1).await;
        assert_eq!(body["workloads"][0]["result"], "restarted", "{body}");
        let creates = fake.requests_for("create", Some("events")).len();
        fake.fail_next(
            fake_apiserver::FaultRule::status(500)
                .verb("create")
                .resource("events")
                .times(1),
        );
        c.put_status("Deployment", &ns, "api", |w| deployment_status(w, 1, false))
            .await;
        // The refused attempt; then the API server "had stored it".
        eventually(Duration::from_secs(10), || async {
            (fake.requests_for("create", Some("events")).len() > creates).then_some(())
        })
        .await
        .expect("the follower tries to record the end");
        let name = rollout_event_name("Deployment", "api", &digest, "PushRolloutComplete");
        c.create(json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": ns},
            "involvedObject": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api", "namespace": ns},
            "reason": "PushRolloutComplete", "message": format!("Rollout of {digest} complete"),
            "type": "Normal"
        }))
        .await;
        let counted = eventually(Duration::from_secs(10), || async {
            let m = p.metrics().await;
            (rollouts(&m, "Deployment", "complete") + rollouts(&m, "Deployment", "stale")
                == round as f64)
                .then_some(m)
        })
        .await;
        assert!(
            counted.is_some(),
            "round {round}: {}\n{}",
            p.metrics().await,
            p.logs().join("\n")
        );
        let conflicts = fake
            .requests_for("create", Some("events"))
            .into_iter()
            .skip(creates)
            .filter(|r| r.status == 409)
            .count();
        assert!(
            conflicts >= 1,
            "round {round}: the retry met the stored Event"
        );
    }
    let m = p.metrics().await;
    assert_eq!(metric(&m, "pushroll_rollouts_in_progress"), 0.0, "{m}");
}

/// The API requests pushroll made, by `verb resource`, from its metrics.
fn api_requests(metrics: &str) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("pushroll_kube_api_requests_total{"))
    {
        let field = |name: &str| {
            let start = line.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
            line[start..].split('"').next().unwrap().to_owned()
        };
        let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        let key = match field("outcome").as_str() {
            "success" => format!("{} {}", field("verb"), field("resource")),
            other => format!("{} {} ({other})", field("verb"), field("resource")),
        };
        *out.entry(key).or_default() += n;
    }
    out
}

/// Must show 5: end to end through the real Pub/Sub emulator. Each publish
/// ends with every pod of two Deployments (IfNotPresent, pin mode by
/// `serve --mode pin`) Ready on the pushed digest, reported complete. Prints
/// the median time from publish to the last pod Ready on the new digest,
/// beside the controller's own time for the same rollout started by
/// `kubectl rollout restart`, and the API requests per restarted workload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_to_every_pod_on_the_pushed_digest() {
    let Some(c) = Cluster::real().await else {
        return;
    };
    let Some(emu) = emulator::Emulator::start().await else {
        return;
    };
    let ns = c.ns("e2e-rollout");
    let k = SimKubelet::start(&c, &[&ns], 3).await.unwrap();
    let image = format!("{REPO}:stable");
    k.push(&image, &digest('0'));
    let names = ["api", "worker"];
    for name in names {
        c.create(pod_deployment(
            &ns,
            name,
            &[("app", &image, "IfNotPresent")],
        ))
        .await;
    }
    for name in names {
        k.wait_rollout("Deployment", &ns, name, LIMIT).await;
    }
    let (p, _) = serve_indexer(&c, &ns, "e2e-0", &["--mode", "pin"]).await;
    let project = "rollout-e2e";
    emu.create_topic(project, "gcr").await;
    emu.create_push_subscription(project, "gcr-push", "gcr", &p.url("/push"), None, 10)
        .await;
    // Found by the watch's index before the first publish.
    eventually(Duration::from_secs(30), || async {
        let (_, body) = post(&http(), &p, insert(REPO, "stable", &digest('0'))).await;
        (body["workloads"].as_array().map_or(0, Vec::len) == 2).then_some(())
    })
    .await
    .expect("both Deployments indexed");
    let before = api_requests(&p.metrics().await);

    const ROUNDS: usize = 3;
    let mut to_ready = Vec::new();
    for round in 0..ROUNDS {
        let d = digest(char::from(b'1' + round as u8));
        k.push(&image, &d);
        let t0 = Instant::now();
        emu.publish(project, "gcr", &insert(REPO, "stable", &d), json!({}))
            .await;
        let mut last = Duration::ZERO;
        for name in names {
            let pinned = format!("{image}@{d}");
            let done = watch_until(&c.client, "Deployment", &ns, name, LIMIT, |w| {
                w["spec"]["template"]["spec"]["containers"][0]["image"] == pinned.as_str()
                    && rollout_status("Deployment", w) == Rollout::Complete
            })
            .await;
            assert!(
                done.is_ok(),
                "round {round}: {name} not rolled to {d}: {:?}\n{}",
                done.err(),
                p.logs().join("\n")
            );
            last = last.max(t0.elapsed());
            assert_runs(&k, "Deployment", &ns, name, 3, &d, "after the publish").await;
        }
        to_ready.push(last);
        for name in names {
            let done = eventually(LIMIT, || async {
                events(&c, &ns, name, "PushRolloutComplete")
                    .await
                    .into_iter()
                    .find(|e| e["message"].as_str().unwrap().contains(&d))
            })
            .await;
            assert!(
                done.is_some(),
                "round {round}: {name}: no PushRolloutComplete for {d}"
            );
        }
    }
    // The follower's requests are made after the Event is visible: wait
    // for the last one to be counted.
    let after = eventually(Duration::from_secs(10), || async {
        let m = p.metrics().await;
        (rollouts(&m, "Deployment", "complete") == (ROUNDS * names.len()) as f64)
            .then(|| api_requests(&m))
    })
    .await
    .expect("every rollout counted");
    // Requests made during the rounds, by `verb resource (outcome)`, for
    // the resources a push touches (not the Lease or the index ConfigMap).
    let made: std::collections::BTreeMap<String, f64> = after
        .iter()
        .filter(|(k, _)| {
            ["deployments", "events", "pods"]
                .iter()
                .any(|r| k.contains(r))
        })
        .map(|(k, n)| (k.clone(), n - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, n)| *n > 0.0)
        .collect();
    let workloads = (ROUNDS * names.len()) as f64;
    let per_workload: Vec<(String, f64)> = made
        .iter()
        .map(|(k, n)| (k.clone(), n / workloads))
        .collect();
    // A PATCH refused for a stale resourceVersion (the controller wrote
    // the status between pushroll's GET and PATCH) is re-read and retried:
    // it costs one GET and one PATCH more, counted apart.
    let conflicts = made
        .get("patch deployments (conflict)")
        .copied()
        .unwrap_or(0.0);
    let count = |k: &str| made.get(k).copied().unwrap_or(0.0);
    // serve: GET, PATCH, the PushRestart Event; the follower: one pods
    // LIST and the PushRolloutComplete Event. Pin mode: no pull-policy Event.
    assert_eq!(
        [
            count("get deployments") - conflicts,
            count("patch deployments"),
            count("create events"),
            count("list pods"),
        ],
        [workloads, workloads, 2.0 * workloads, workloads],
        "API requests per restarted workload: {per_workload:?}"
    );
    assert_eq!(
        made.len() - usize::from(conflicts > 0.0),
        4,
        "nothing else: {made:?}"
    );

    // The same rollouts without pushroll: `kubectl rollout restart` of
    // both Deployments at once, to the last of them complete.
    let mut controller = Vec::new();
    for round in 0..ROUNDS {
        let t0 = Instant::now();
        for name in names {
            restart(&c.client, "Deployment", &ns, name).await;
        }
        for name in names {
            let at =
                c.get("Deployment", &ns, name).await.unwrap()["metadata"]["generation"].clone();
            let done = watch_until(&c.client, "Deployment", &ns, name, LIMIT, |w| {
                w["status"]["observedGeneration"] == at
                    && rollout_status("Deployment", w) == Rollout::Complete
            })
            .await;
            assert!(done.is_ok(), "restart {round} of {name}: {:?}", done.err());
        }
        controller.push(t0.elapsed());
    }
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    eprintln!(
        "publish → last pod Ready on the pushed digest (two Deployments × 3 pods, pin mode): median {:?} over {ROUNDS} (all: {to_ready:?}); the controllers alone (kubectl rollout restart of both → the last complete): median {:?} (all: {controller:?}); API requests per restarted workload: {per_workload:?}",
        median(to_ready.clone()),
        median(controller.clone()),
    );
    k.stop().await;
}
