//! The real `kubectl` against the fake. Skipped (with a message) when
//! kubectl is not on PATH.

mod common;

use std::path::Path;

use common::*;
use fake_apiserver::FakeApiServer;
use serde_json::{Value, json};

/// Whether kubectl can run; under CI (`PUSHROLL_REQUIRE_KUBECTL=1`) its
/// absence is a failure, not a skip.
fn kubectl_available() -> bool {
    let present = std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        present || std::env::var("PUSHROLL_REQUIRE_KUBECTL").as_deref() != Ok("1"),
        "PUSHROLL_REQUIRE_KUBECTL=1 but kubectl is not on PATH"
    );
    present
}

/// Runs kubectl with a private kubeconfig and discovery cache.
async fn kubectl(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(dir.join("kubeconfig"))
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .args(args)
        .output()
        .await
        .expect("running kubectl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn kubectl_rollout_restart_get_and_events() {
    if !kubectl_available() {
        eprintln!("SKIPPED kubectl_rollout_restart_get_and_events: kubectl is not on PATH");
        return;
    }
    let s = FakeApiServer::start().await;
    let mut d = deployment("ns", "x", "app:v1");
    d["status"] =
        json!({"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1, "availableReplicas": 1});
    s.insert(d);
    s.insert(json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "x.restart", "namespace": "ns"},
        "involvedObject": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x", "namespace": "ns"},
        "reason": "PushRestart", "message": "restarted for app:v1", "type": "Normal",
        "firstTimestamp": "2026-11-26T12:00:00Z", "lastTimestamp": "2026-11-26T12:00:00Z", "count": 1,
        "source": {"component": "pushroll"}
    }));
    let dir = tempfile::tempdir().unwrap();
    s.write_kubeconfig(dir.path());

    let (ok, out, err) = kubectl(
        dir.path(),
        &["rollout", "restart", "deployment/x", "-n", "ns"],
    )
    .await;
    assert!(ok, "rollout restart failed: {out} {err}");
    assert!(out.contains("deployment.apps/x restarted"), "{out}");

    let (ok, out, err) = kubectl(
        dir.path(),
        &["get", "deployment", "x", "-n", "ns", "-o", "json"],
    )
    .await;
    assert!(ok, "{err}");
    let obj: Value = serde_json::from_str(&out).unwrap();
    let at =
        &obj["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"];
    assert!(at.as_str().is_some_and(|t| t.starts_with("20")), "{obj}");
    assert_eq!(obj["metadata"]["generation"], 2);

    let patch = s
        .requests_for("patch", Some("deployments"))
        .pop()
        .expect("kubectl patched");
    assert_eq!(
        patch.content_type.as_deref(),
        Some("application/strategic-merge-patch+json")
    );
    assert_eq!(patch.field_manager.as_deref(), Some("kubectl-rollout"));

    let (ok, out, err) = kubectl(dir.path(), &["get", "deployments", "-n", "ns"]).await;
    assert!(ok, "{err}");
    let mut lines = out.lines();
    let header = lines.next().unwrap_or("");
    assert!(
        header.starts_with("NAME") && header.contains("READY"),
        "{out}"
    );
    let row = lines.next().unwrap_or("");
    assert!(row.starts_with("x ") && row.contains("1/1"), "{out}");
    // kubectl asked for a Table.
    let list = s.requests_for("list", Some("deployments")).pop().unwrap();
    assert!(list.accept.unwrap_or_default().contains("as=Table"));

    let (ok, out, err) = kubectl(dir.path(), &["get", "events", "-n", "ns"]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("PushRestart") && out.contains("deployment/x"),
        "{out}"
    );

    // Short names resolve through discovery, and errors come through.
    let (ok, out, _) = kubectl(dir.path(), &["get", "deploy", "-A"]).await;
    assert!(ok && out.contains("ns") && out.contains('x'), "{out}");
    let (ok, _, err) = kubectl(dir.path(), &["get", "cm", "missing", "-n", "ns"]).await;
    assert!(!ok);
    assert!(
        err.contains("NotFound") && err.contains("configmaps \"missing\" not found"),
        "{err}"
    );
}

#[tokio::test]
async fn kubectl_create_apply_delete_from_json_files() {
    if !kubectl_available() {
        eprintln!("SKIPPED kubectl_create_apply_delete_from_json_files: kubectl is not on PATH");
        return;
    }
    let s = FakeApiServer::start().await;
    s.ensure_namespace("ns");
    let dir = tempfile::tempdir().unwrap();
    s.write_kubeconfig_ns(dir.path(), "ns");
    let file = dir.path().join("cm.json");
    std::fs::write(&file, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}}).to_string()).unwrap();
    let f = file.to_str().unwrap();
    let (ok, _, err) = kubectl(dir.path(), &["create", "-f", f]).await;
    assert!(ok, "{err}");
    let (ok, _, err) = kubectl(dir.path(), &["create", "-f", f]).await;
    assert!(!ok && err.contains("AlreadyExists"), "{err}");
    std::fs::write(&file, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "2"}}).to_string()).unwrap();
    let (ok, _, err) = kubectl(dir.path(), &["apply", "-f", f]).await;
    assert!(ok, "{err}");
    assert_eq!(
        s.get("v1", "ConfigMap", "ns", "c").unwrap()["data"]["a"],
        "2"
    );
    let (ok, _, err) = kubectl(dir.path(), &["delete", "configmap", "c"]).await;
    assert!(ok, "{err}");
    assert!(s.get("v1", "ConfigMap", "ns", "c").is_none());
}
