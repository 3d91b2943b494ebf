//! What the rollout and policy tests share: `serve --indexer` against a
//! real cluster, pushes until the watch has indexed their workloads, and
//! the Events pushroll recorded.

use std::time::Duration;

use serde_json::Value;

use super::cluster::Cluster;
use super::indexer::{READY_LIMIT, start_serve_indexer_with};
use super::{Pushroll, eventually, http, metric, post};

/// The Events with `reason` about workload `name` in `ns`.
pub async fn events(c: &Cluster, ns: &str, name: &str, reason: &str) -> Vec<Value> {
    c.list("Event", ns)
        .await
        .into_iter()
        .filter(|e| e["reason"] == reason && e["involvedObject"]["name"] == name)
        .collect()
}

/// Waits up to `limit` for an Event `reason` on `name`; returns it. On
/// failure, says what the workload and `p`'s log show.
pub async fn wait_event(
    c: &Cluster,
    p: &Pushroll,
    ns: &str,
    name: &str,
    reason: &str,
    limit: Duration,
) -> Value {
    let found = eventually(limit, || async {
        events(c, ns, name, reason).await.into_iter().next()
    })
    .await;
    match found {
        Some(e) => e,
        None => {
            let kinds = ["Deployment", "StatefulSet", "DaemonSet"];
            let mut objects = Vec::new();
            for kind in kinds {
                if let Some(w) = c.get(kind, ns, name).await {
                    objects.push(w);
                }
            }
            panic!(
                "no {reason} Event for {ns}/{name} within {limit:?}\n{objects:#?}\n{}",
                p.logs().join("\n")
            )
        }
    }
}

/// `serve --indexer`: one process that answers pushes and follows the
/// rollouts it starts (the Lease holder of its own election).
pub async fn serve_indexer(c: &Cluster, ns: &str, pod: &str, extra: &[&str]) -> (Pushroll, String) {
    let cm_ns = c.ns("pushroll");
    c.ensure_namespace(&cm_ns).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("index.json");
    let p = start_serve_indexer_with(c, &cm_ns, ns, &file, pod, extra);
    p.wait_ready(READY_LIMIT).await;
    eventually(Duration::from_secs(30), || async {
        (metric(&p.metrics().await, "pushroll_indexer_leader") == 1.0).then_some(())
    })
    .await
    .expect("the only replica leads");
    (p, cm_ns)
}

/// Posts `body` until the push names `want` workloads (the watch indexes
/// a workload created a moment ago within its debounce); returns the body.
pub async fn push_until_found(p: &Pushroll, body: &str, want: usize) -> Value {
    let client = http();
    eventually(Duration::from_secs(30), || async {
        let (status, answer) = post(&client, p, body.to_owned()).await;
        assert_eq!(status, 200, "{answer}");
        (answer["workloads"].as_array().map_or(0, Vec::len) >= want).then_some(answer)
    })
    .await
    .unwrap_or_else(|| panic!("the push never found {want} workloads"))
}

pub fn result_of<'a>(body: &'a Value, name: &str) -> &'a Value {
    body["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {body}"))
}

/// Waits until exactly one of two replicas leads; returns (leader, other).
/// (A leader that takes over finds the ConfigMap current and writes
/// nothing, so leadership is all there is to wait for.)
pub async fn leading<'a>(
    a: &'a mut Pushroll,
    b: &'a mut Pushroll,
) -> (&'a mut Pushroll, &'a mut Pushroll) {
    let a_leads = eventually(Duration::from_secs(30), || async {
        let leader = |m: String| metric(&m, "pushroll_indexer_leader");
        match (leader(a.metrics().await), leader(b.metrics().await)) {
            (1.0, 0.0) => Some(true),
            (0.0, 1.0) => Some(false),
            _ => None,
        }
    })
    .await
    .expect("one replica leads");
    if a_leads { (a, b) } else { (b, a) }
}

/// The patch of a restart pushroll made (its template annotations and
/// its rollout record, at the generation the patch produces), for tests
/// that play pushroll's write themselves; merged onto `name`.
pub async fn play_restart(
    c: &Cluster,
    kind: &str,
    ns: &str,
    name: &str,
    container: &str,
    digest: &str,
    extra: Value,
) {
    let w = c.get(kind, ns, name).await.expect("the workload exists");
    let generation = w["metadata"]["generation"].as_i64().unwrap_or(0);
    let now = jiff::Timestamp::now();
    let at = jiff::Timestamp::from_second(now.as_second())
        .unwrap()
        .to_string();
    let record = serde_json::json!({
        "digest": digest, "containers": [container], "restartedAt": at,
        "generation": generation + 1,
    });
    let mut patch = serde_json::json!({
        "metadata": {"annotations": {"pushroll.io/rollout": record.to_string()}},
        "spec": {"template": {"metadata": {"annotations": {
            "kubectl.kubernetes.io/restartedAt": at,
            format!("digest.pushroll.io/{container}"): digest,
            format!("published.pushroll.io/{container}"): now.to_string(),
        }}}},
    });
    json_patch::merge(&mut patch, &extra);
    c.merge_patch(kind, ns, name, patch).await;
}
