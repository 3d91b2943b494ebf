//! RBAC proven, not assumed: pushroll runs as the ServiceAccounts of
//! `deploy/`, bound by exactly the roles `deploy/base/rbac-*.yaml` define,
//! and a rule taken away makes the push fail with 503 and a log line that
//! names the missing permission.
//!
//! The roles are cluster-wide and the ServiceAccounts the same for every
//! test, so taking a rule away would break the tests running beside this
//! one: on the real server it runs on a private control plane of its own
//! (`on_both_private!`).

use std::time::Duration;

use crate::support::cluster::{Cluster, deploy_objects, index_for, workload};
use crate::support::rollout::play_restart;
use crate::support::*;
use serde_json::{Value, json};

on_both_private!(deployed_rbac_is_enough_and_needed);

/// Serve and the indexer share the index ConfigMap the roles name, so the
/// two run one after the other.
async fn deployed_rbac_is_enough_and_needed(c: Cluster) {
    serve_runs_with_exactly_the_deployed_rbac(&c).await;
    indexer_runs_with_exactly_the_deployed_rbac(&c).await;
}

/// The deployed roles, with one verb optionally taken away from the rule
/// that grants it on `resource`.
fn roles_without(file: &str, resource: &str, verb: &str) -> Vec<Value> {
    let mut objects = deploy_objects(file);
    for obj in &mut objects {
        if let Some(rules) = obj.get_mut("rules").and_then(Value::as_array_mut) {
            for rule in &mut *rules {
                let on = rule["resources"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r == resource);
                if on {
                    rule["verbs"].as_array_mut().unwrap().retain(|v| v != verb);
                }
            }
            // A rule left with no verb is invalid (422): drop it.
            rules.retain(|rule| !rule["verbs"].as_array().unwrap().is_empty());
        }
    }
    objects
}

async fn apply_all(c: &Cluster, objects: &[Value]) {
    for obj in objects {
        c.apply(obj).await;
    }
}

async fn serve_runs_with_exactly_the_deployed_rbac(c: &Cluster) {
    let kubeconfig = c.service_account_kubeconfig("pushroll");
    apply_all(c, &deploy_objects("rbac-serve.yaml")).await;
    let ns = c.ns("rbac");
    let img = format!("{REPO}:v1");
    c.create(workload(
        "Deployment",
        &ns,
        "web",
        &[("web", &img)],
        &[],
        json!({}),
    ))
    .await;
    // The mounted file is missing: the index comes from the ConfigMap the
    // Role grants by name.
    c.write_index_configmap(
        "pushroll",
        "pushroll-index",
        &index_for(&img, &[("Deployment", &ns, "web", &["web"])]),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("index.json");
    let p = Pushroll::serve_open(
        &kubeconfig,
        &[
            "--index-file",
            missing.to_str().unwrap(),
            "--index-configmap",
            "pushroll/pushroll-index",
        ],
    );
    let client = http();
    let (status, body) = post(&client, &p, insert(REPO, "v1", DIGEST)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["source"], "configmap");
    assert_eq!(body["workloads"][0]["result"], "restarted", "{body}");
    let events = c.list("Event", &ns).await;
    assert!(
        events.iter().any(|e| e["reason"] == "PushRestart"),
        "the Event was allowed: {events:?}"
    );

    // Take `patch` away: the push answers 503 (Pub/Sub keeps it) and the
    // log names the missing permission.
    apply_all(c, &roles_without("rbac-serve.yaml", "deployments", "patch")).await;
    // The real authorizer sees the change through its informer, a moment
    // later: each attempt pushes a fresh digest, so one that still gets
    // through does not make the later ones no-ops.
    let attempt = std::sync::atomic::AtomicU32::new(2);
    let (msg, refused) = eventually(Duration::from_secs(20), || async {
        let n = attempt.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let msg = insert(REPO, "v1", &format!("sha256:{n:064x}"));
        let (status, body) = post(&client, &p, msg.clone()).await;
        (status == 503).then_some((msg, body))
    })
    .await
    .expect("the push fails once the rule is gone");
    assert_eq!(refused["error"], "restart-failed", "{refused}");
    let detail = refused["failed"][0]["error"].as_str().unwrap();
    assert!(
        detail.contains("forbidden") && detail.contains("cannot patch resource \"deployments\""),
        "{detail}"
    );
    let named = p
        .log_line(Duration::from_secs(5), |l| {
            l.contains("cannot patch resource \\\"deployments\\\"")
        })
        .await;
    assert!(
        named.is_some(),
        "the log names the permission:\n{}",
        p.logs().join("\n")
    );

    // Put it back: the redelivery completes the push.
    apply_all(c, &deploy_objects("rbac-serve.yaml")).await;
    let done = eventually(Duration::from_secs(20), || async {
        let (status, body) = post(&client, &p, msg.clone()).await;
        (status == 200).then_some(body)
    })
    .await
    .expect("the redelivery succeeds once the rule is back");
    assert_eq!(done["workloads"][0]["result"], "restarted", "{done}");
}

async fn indexer_runs_with_exactly_the_deployed_rbac(c: &Cluster) {
    let kubeconfig = c.service_account_kubeconfig("pushroll-indexer");
    apply_all(c, &deploy_objects("rbac-indexer.yaml")).await;
    let ns = c.ns("rbac-idx");
    let img = format!("{REPO}:indexed");
    c.create(workload(
        "Deployment",
        &ns,
        "web",
        &[("web", &img)],
        &[],
        json!({}),
    ))
    .await;
    // The ConfigMap may exist from another run: the indexer must update it.
    let p = Pushroll::start_env(
        &[
            "index",
            "--watch",
            "--listen",
            "127.0.0.1:0",
            "--index-configmap",
            "pushroll/pushroll-index",
            "--debounce",
            "200ms",
            "--lease-duration",
            "3s",
        ],
        &[("KUBECONFIG", kubeconfig.to_string_lossy().into_owned())],
    );
    let written = eventually(Duration::from_secs(30), || async {
        let cm = c.get("ConfigMap", "pushroll", "pushroll-index").await?;
        let index: Value = serde_json::from_str(cm["data"]["index.json"].as_str()?).ok()?;
        index["images"].get(&img).cloned()
    })
    .await;
    assert!(
        written.is_some(),
        "the indexer wrote the ConfigMap under its own RBAC:\n{}",
        p.logs().join("\n")
    );
    let lease = c
        .get("Lease", "pushroll", "pushroll-indexer")
        .await
        .expect("the Lease exists");
    assert!(lease["spec"]["holderIdentity"].is_string(), "{lease}");

    // The rollout follower, under the same roles: a rollout pushroll
    // started (its annotations, as serve writes them) on a workload of no
    // replicas completes at once; the follower lists its pods and records
    // the Event. Without `list` on pods, it retries, logging the missing
    // permission, until the rule is back.
    let replicas = json!({"spec": {"replicas": 0}});
    play_restart(c, "Deployment", &ns, "web", "web", DIGEST, replicas.clone()).await;
    assert!(
        follower_reported(c, &ns, DIGEST).await,
        "the follower reported under its own RBAC:\n{}",
        p.logs().join("\n")
    );
    apply_all(c, &roles_without("rbac-indexer.yaml", "pods", "list")).await;
    // The authorizer sees the change a moment later: a fresh digest per
    // attempt until the follower is refused.
    let attempt = std::sync::atomic::AtomicU32::new(3);
    let refused = eventually(Duration::from_secs(30), || async {
        let n = attempt.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let digest = format!("sha256:{n:064x}");
        play_restart(
            c,
            "Deployment",
            &ns,
            "web",
            "web",
            &digest,
            replicas.clone(),
        )
        .await;
        play_controller(c, &ns).await;
        p.log_line(Duration::from_secs(3), |l| {
            l.contains("could not report") && l.contains("cannot list resource")
        })
        .await
        .map(|_| digest)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "the follower is refused without pods list:\n{}",
            p.logs().join("\n")
        )
    });
    apply_all(c, &deploy_objects("rbac-indexer.yaml")).await;
    // Its retries go through once the rule is back.
    assert!(
        follower_reported(c, &ns, &refused).await,
        "reported once the rule is back:\n{}",
        p.logs().join("\n")
    );

    // The controller of waiting pushes, under the same roles: an approved
    // push waiting on the workload (as serve writes it) rolls, by one GET
    // and one PATCH. Without `patch` on workloads it retries, logging the
    // missing permission, until the rule is back.
    let approved = |digest: &str| {
        let record = json!({
            "image": img, "digest": digest,
            "publishTime": jiff::Timestamp::now().to_string(),
            "containers": ["web"], "reason": "approval",
            "since": jiff::Timestamp::now().to_string(),
        });
        json!({"metadata": {"annotations": {
            "pushroll.io/approval": "required",
            "pushroll.io/approve": digest,
            "pushroll.io/pending": record.to_string(),
        }}})
    };
    let first = format!("sha256:{:064x}", 0xa1);
    c.merge_patch("Deployment", &ns, "web", approved(&first))
        .await;
    assert!(
        released(c, &ns, &first).await,
        "the waiting push rolled under the indexer's RBAC:\n{}",
        p.logs().join("\n")
    );
    apply_all(
        c,
        &roles_without("rbac-indexer.yaml", "deployments", "patch"),
    )
    .await;
    let attempt = std::sync::atomic::AtomicU32::new(0xb0);
    let refused = eventually(Duration::from_secs(30), || async {
        let n = attempt.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let digest = format!("sha256:{n:064x}");
        c.merge_patch("Deployment", &ns, "web", approved(&digest))
            .await;
        p.log_line(Duration::from_secs(3), |l| {
            l.contains("could not carry out a waiting push") && l.contains("cannot patch resource")
        })
        .await
        .map(|_| digest)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "the controller is refused without patch:\n{}",
            p.logs().join("\n")
        )
    });
    apply_all(c, &deploy_objects("rbac-indexer.yaml")).await;
    assert!(
        released(c, &ns, &refused).await,
        "released once the rule is back:\n{}",
        p.logs().join("\n")
    );
}

/// Whether the push of `digest` waiting on `ns/web` is carried out (the
/// template rolled to it, the record gone) within 30 s.
async fn released(c: &Cluster, ns: &str, digest: &str) -> bool {
    eventually(Duration::from_secs(30), || async {
        let w = c.get("Deployment", ns, "web").await?;
        let rolled =
            w["spec"]["template"]["metadata"]["annotations"]["digest.pushroll.io/web"] == digest;
        let waiting = w["metadata"]["annotations"]
            .get("pushroll.io/pending")
            .is_some();
        (rolled && !waiting).then_some(())
    })
    .await
    .is_some()
}

/// On the fake, which has no controllers: the status the Deployment
/// controller writes for a workload of no replicas (complete at once).
async fn play_controller(c: &Cluster, ns: &str) {
    if c.backend == crate::support::cluster::Backend::Fake {
        c.put_status(
            "Deployment",
            ns,
            "web",
            |w| json!({"observedGeneration": w["metadata"]["generation"], "replicas": 0}),
        )
        .await;
    }
}

/// Whether the follower records `PushRolloutComplete` for `digest` on
/// `ns/web` within 30 s.
async fn follower_reported(c: &Cluster, ns: &str, digest: &str) -> bool {
    eventually(Duration::from_secs(30), || async {
        play_controller(c, ns).await;
        c.list("Event", ns).await.into_iter().find(|e| {
            e["reason"] == "PushRolloutComplete"
                && e["message"].as_str().unwrap_or_default().contains(digest)
        })
    })
    .await
    .is_some()
}
