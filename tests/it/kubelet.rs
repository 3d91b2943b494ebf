//! The simulated kubelet (`support::kubelet`) against the real
//! kube-apiserver and kube-controller-manager: real rollouts through the
//! real controllers, and the image each new pod runs decided by a node
//! cache that honours `imagePullPolicy`. Later tests of pushroll's rollout
//! follower stand on this, so it proves what they will rely on. Skipped
//! without a real API server (a failure under CI).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::support::REPO;
use crate::support::kubelet::*;
use serde_json::{Value, json};

/// Far above the 1-3 s a rollout of a few pods takes here.
const LIMIT: Duration = Duration::from_secs(60);

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_roll_out_and_the_node_cache_decides_the_digest() {
    let Some((c, ns, k)) = real_with_kubelet("kubelet-cache", 3).await else {
        return;
    };
    let image = format!("{REPO}:stable");
    let (old, new) = (digest('a'), digest('b'));
    k.push(&image, &old);

    // Three Deployments of the same tag: the trap (IfNotPresent), the
    // fix by policy (Always), and the fix by pinning (IfNotPresent, the
    // image later pinned, with an Always sidecar: the policy does not matter).
    let started = Instant::now();
    c.create(pod_deployment(
        &ns,
        "trap",
        &[("app", &image, "IfNotPresent")],
    ))
    .await;
    c.create(pod_deployment(&ns, "always", &[("app", &image, "Always")]))
        .await;
    c.create(pod_deployment(
        &ns,
        "pinned",
        &[
            ("app", &image, "IfNotPresent"),
            ("sidecar", &image, "Always"),
        ],
    ))
    .await;
    let mut first = Vec::new();
    for name in ["trap", "always", "pinned"] {
        k.wait_rollout("Deployment", &ns, name, LIMIT).await;
        first.push(started.elapsed());
        let pods = assert_runs(&k, "Deployment", &ns, name, 3, &old, "first rollout").await;
        let nodes: HashSet<_> = pods.iter().map(|(_, n)| n).collect();
        assert_eq!(nodes.len(), 3, "{name}: one pod per node: {pods:?}");
    }
    for node in k.nodes() {
        assert_eq!(
            k.cached(node, &image),
            Some(old.clone()),
            "{node} pulled the tag"
        );
    }

    // The push moves the tag; `kubectl rollout restart` follows.
    k.push(&image, &new);
    let mut restarts = Vec::new();
    for name in ["trap", "always"] {
        let before = assert_runs(&k, "Deployment", &ns, name, 3, &old, "before").await;
        let t = Instant::now();
        restart(&c.client, "Deployment", &ns, name).await;
        k.wait_rollout("Deployment", &ns, name, LIMIT).await;
        restarts.push(t.elapsed());
        let expected = if name == "trap" { &old } else { &new };
        let why = if name == "trap" {
            "IfNotPresent on a node that holds the tag starts the cached, old image"
        } else {
            "Always resolves the tag again"
        };
        let after = assert_runs(&k, "Deployment", &ns, name, 3, expected, why).await;
        for (pod, _) in &after {
            assert!(
                !before.iter().any(|(p, _)| p == pod),
                "{name}: {pod} is not a new pod (before: {before:?})"
            );
        }
    }

    // Pinned: the template's images become `R:T@sha256:NEW`, as pin mode
    // patches them; every node still holds the tag at the old digest.
    let pinned = format!("{image}@{new}");
    let t = Instant::now();
    c.merge_patch(
        "Deployment",
        &ns,
        "pinned",
        json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": pinned, "imagePullPolicy": "IfNotPresent"},
            {"name": "sidecar", "image": pinned, "imagePullPolicy": "Always"},
        ]}}}}),
    )
    .await;
    k.wait_rollout("Deployment", &ns, "pinned", LIMIT).await;
    restarts.push(t.elapsed());
    assert_runs(
        &k,
        "Deployment",
        &ns,
        "pinned",
        3,
        &new,
        "a digest reference",
    )
    .await;
    for r in k.running("Deployment", &ns, "pinned").await {
        assert_eq!(r.image, pinned, "{}/{}", r.pod, r.container);
    }
    for node in k.nodes() {
        assert_eq!(
            k.cached(node, &image),
            Some(new.clone()),
            "{node}: the Always pods pulled the tag again"
        );
    }
    eprintln!(
        "3 replicas: first rollouts complete after {first:?}; restart → complete {restarts:?} (median {:?})",
        median(restarts.clone())
    );
    k.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_digest_exceeds_the_progress_deadline() {
    let Some((c, ns, k)) = real_with_kubelet("kubelet-crash", 3).await else {
        return;
    };
    let image = format!("{REPO}:crash");
    let (good, bad) = (digest('c'), digest('d'));
    k.push(&image, &good);
    let mut d = pod_deployment(&ns, "web", &[("app", &image, "Always")]);
    d["spec"]["progressDeadlineSeconds"] = json!(10);
    c.create(d).await;
    k.wait_rollout("Deployment", &ns, "web", LIMIT).await;

    k.push(&image, &bad);
    k.crash(&bad);
    let t = Instant::now();
    restart(&c.client, "Deployment", &ns, "web").await;
    let failed = watch_until(&c.client, "Deployment", &ns, "web", LIMIT, |w| {
        matches!(rollout_status("Deployment", w), Rollout::Failed(_))
    })
    .await;
    let took = t.elapsed();
    let (w, _) = failed.unwrap_or_else(|last| {
        panic!(
            "no ProgressDeadlineExceeded after {took:?}; last status: {}\nkubelet:\n{}",
            last.map_or(Value::Null, |w| w["status"].clone()),
            k.log()
        )
    });
    let progressing = w["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Progressing")
        .unwrap();
    eprintln!(
        "crashing digest: ProgressDeadlineExceeded {took:?} after the restart: {}",
        progressing["message"]
    );
    assert_eq!(progressing["status"], "False", "{progressing}");
    // The controller reports it only once the deadline has passed (its
    // clock has whole seconds).
    assert!(took >= Duration::from_secs(9), "too early: {took:?}");
    assert!(took < Duration::from_secs(30), "too late: {took:?}");
    // maxSurge 1, maxUnavailable 0: one new pod that never gets ready, the
    // three old ones still serve.
    let status = &w["status"];
    assert_eq!(
        (
            &status["updatedReplicas"],
            &status["availableReplicas"],
            &status["replicas"]
        ),
        (&json!(1), &json!(3), &json!(4)),
        "{status}"
    );
    let running = k.running("Deployment", &ns, "web").await;
    let crashing: Vec<_> = running.iter().filter(|r| r.digest == bad).collect();
    assert!(
        crashing.len() == 1 && !crashing[0].ready,
        "one new pod, not ready: {running:#?}"
    );
    assert_eq!(
        running
            .iter()
            .filter(|r| r.digest == good && r.ready)
            .count(),
        3,
        "{running:#?}"
    );
    k.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statefulset_and_a_daemonset_roll_out_after_a_restart() {
    let Some((c, ns, k)) = real_with_kubelet("kubelet-sets", 2).await else {
        return;
    };
    let image = format!("{REPO}:sets");
    let (old, new) = (digest('e'), digest('f'));
    k.push(&image, &old);
    let mut sts = pod_workload("StatefulSet", &ns, "db", &[("app", &image, "Always")]);
    sts["spec"]["replicas"] = json!(2);
    c.create(sts).await;
    let mut ds = pod_workload("DaemonSet", &ns, "agent", &[("app", &image, "Always")]);
    // Only this kubelet's nodes: the server is shared.
    ds["spec"]["template"]["spec"]["nodeSelector"] = k.node_selector();
    c.create(ds).await;
    k.wait_rollout("StatefulSet", &ns, "db", LIMIT).await;
    k.wait_rollout("DaemonSet", &ns, "agent", LIMIT).await;
    assert_runs(&k, "StatefulSet", &ns, "db", 2, &old, "first rollout").await;
    let pods = assert_runs(&k, "DaemonSet", &ns, "agent", 2, &old, "first rollout").await;
    let nodes: HashSet<_> = pods.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(
        nodes,
        k.nodes().iter().map(String::as_str).collect(),
        "one per node"
    );
    let revision =
        c.get("StatefulSet", &ns, "db").await.unwrap()["status"]["updateRevision"].clone();

    k.push(&image, &new);
    let t = Instant::now();
    restart(&c.client, "StatefulSet", &ns, "db").await;
    restart(&c.client, "DaemonSet", &ns, "agent").await;
    k.wait_rollout("StatefulSet", &ns, "db", LIMIT).await;
    let sts_took = t.elapsed();
    k.wait_rollout("DaemonSet", &ns, "agent", LIMIT).await;
    let ds_took = t.elapsed();
    eprintln!("restart → complete: StatefulSet (2) {sts_took:?}, DaemonSet (2 nodes) {ds_took:?}");

    let sts = c.get("StatefulSet", &ns, "db").await.unwrap();
    let s = &sts["status"];
    assert!(
        s["currentRevision"] == s["updateRevision"]
            && s["updateRevision"] != revision
            && s["readyReplicas"] == 2,
        "StatefulSet: a new revision, current and ready: {s}"
    );
    assert_runs(
        &k,
        "StatefulSet",
        &ns,
        "db",
        2,
        &new,
        "Always after a restart",
    )
    .await;
    let ds = c.get("DaemonSet", &ns, "agent").await.unwrap();
    let s = &ds["status"];
    assert!(
        s["desiredNumberScheduled"] == 2
            && s["updatedNumberScheduled"] == 2
            && s["numberAvailable"] == 2,
        "DaemonSet: desired = updated = available = 2 nodes: {s}"
    );
    let pods = assert_runs(
        &k,
        "DaemonSet",
        &ns,
        "agent",
        2,
        &new,
        "Always after a restart",
    )
    .await;
    let nodes: HashSet<_> = pods.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(nodes.len(), 2, "one per node: {pods:?}");
    k.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_node_runs_what_its_own_cache_holds() {
    let Some((c, ns, k)) = real_with_kubelet("kubelet-warm", 2).await else {
        return;
    };
    let image = format!("{REPO}:warm");
    let (cached, pushed) = (digest('1'), digest('2'));
    // Only the first node holds the tag, from before the push.
    k.prewarm(&k.nodes()[0], &image, &cached);
    k.push(&image, &pushed);
    let mut d = pod_deployment(&ns, "web", &[("app", &image, "IfNotPresent")]);
    d["spec"]["replicas"] = json!(2);
    c.create(d).await;
    k.wait_rollout("Deployment", &ns, "web", LIMIT).await;
    let mut by_node: Vec<(String, String)> = k
        .running("Deployment", &ns, "web")
        .await
        .into_iter()
        .map(|r| (r.node, r.digest))
        .collect();
    by_node.sort();
    assert_eq!(
        by_node,
        [
            (k.nodes()[0].clone(), cached),
            (k.nodes()[1].clone(), pushed.clone())
        ],
        "the warm node runs its cached digest, the cold one pulls\nkubelet:\n{}",
        k.log()
    );
    assert_eq!(k.cached(&k.nodes()[1], &image), Some(pushed));
    k.stop().await;
}

#[test]
fn references_as_a_container_runtime_reads_them() {
    let cases = [
        ("nginx", "docker.io/library/nginx", Some("latest"), None),
        ("team/app:v1", "docker.io/team/app", Some("v1"), None),
        (
            "localhost:5000/app",
            "localhost:5000/app",
            Some("latest"),
            None,
        ),
        (
            "reg:5000/a/b:v2@sha256:ab",
            "reg:5000/a/b",
            Some("v2"),
            Some("sha256:ab"),
        ),
        (
            "gcr.io/p/app@sha256:cd",
            "gcr.io/p/app",
            None,
            Some("sha256:cd"),
        ),
    ];
    for (image, repo, tag, digest) in cases {
        let r = ImageRef::parse(image);
        assert_eq!(
            (r.repo.as_str(), r.tag.as_deref(), r.digest.as_deref()),
            (repo, tag, digest),
            "{image}"
        );
    }
}
