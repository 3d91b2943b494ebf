//! What both benches share. The synthetic cluster: N workloads shaped like what
//! `kubectl get deploy -o json` returns on a real cluster (labels,
//! annotations, managedFields, two containers with env, ports, probes and
//! resources, a status), about 3 KiB of JSON each, and the index that
//! pushroll's indexer builds from them.
//!
//! Deterministic: workload `i` is a Deployment (80 %), StatefulSet (15 %)
//! or DaemonSet (5 %) named `svc-i` in namespace `team-(i / 50)`, running
//! its own image `us-east1-docker.pkg.dev/acme/team-…/svc-i:1.<i%10>.0`
//! (so a push of it restarts exactly one workload), a shared Envoy sidecar
//! (one of 4 tags) in every other workload and a shared busybox init
//! container in every tenth.
//!
//! And the index store as `serve` holds it, and where results are written.
#![allow(dead_code)] // each bench uses a different part

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use pushroll::index::Index;
use pushroll::index::builder::{IndexBuilder, Observed};
use pushroll::index::store::{IndexStore, OnMiss};
use pushroll::metrics::Metrics;
use pushroll::workload::Kind;
use pushroll::workload::NamespaceFilter;
use serde_json::{Value, json};

/// Workloads per namespace.
pub const PER_NAMESPACE: usize = 50;
/// The namespace and name of the index ConfigMap in the fake cluster.
pub const INDEX_NS: &str = "pushroll";
pub const INDEX_CM: &str = "pushroll-index";

pub fn kind_of(i: usize) -> Kind {
    match i % 20 {
        0..=15 => Kind::Deployment,
        16..=18 => Kind::StatefulSet,
        _ => Kind::DaemonSet,
    }
}

pub fn namespace_of(i: usize) -> String {
    format!("team-{}", i / PER_NAMESPACE)
}

pub fn name_of(i: usize) -> String {
    format!("svc-{i}")
}

pub fn repo_of(i: usize) -> String {
    format!(
        "us-east1-docker.pkg.dev/acme/team-{}/svc-{i}",
        i / PER_NAMESPACE
    )
}

/// The image workload `i` runs (its own repository and tag).
pub fn image_of(i: usize) -> String {
    format!("{}:1.{}.0", repo_of(i), i % 10)
}

/// An image no workload runs: a commit tag, as most pushes are.
pub fn miss_image(i: usize) -> String {
    format!("{}:git-{:07x}", repo_of(i), 0x05ee_d000 + i)
}

/// A digest that is new for every `seq`.
pub fn digest(seq: u64) -> String {
    format!("sha256:{seq:064x}")
}

/// Workload `i` as the API server would store it.
pub fn workload(i: usize) -> Value {
    let kind = kind_of(i);
    let ns = namespace_of(i);
    let name = name_of(i);
    let labels = json!({
        "app.kubernetes.io/name": name, "app.kubernetes.io/part-of": ns,
        "app.kubernetes.io/version": format!("1.{}.0", i % 10),
        "app.kubernetes.io/managed-by": "argocd", "tier": "backend"
    });
    let mut spec = json!({
        "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
        "template": {
            "metadata": {"labels": labels, "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9090"}},
            "spec": pod_spec(i)
        },
        "revisionHistoryLimit": 10
    });
    let status = rollout(kind, &name, &mut spec);
    json!({
        "apiVersion": "apps/v1", "kind": kind,
        "metadata": {
            "name": name, "namespace": ns, "labels": labels,
            "annotations": {
                "deployment.kubernetes.io/revision": "4",
                "argocd.argoproj.io/tracking-id": format!("{ns}:apps/{kind}:{ns}/{name}")
            },
            "managedFields": [{
                "manager": "argocd-controller", "operation": "Apply", "apiVersion": "apps/v1",
                "time": "2026-11-25T10:00:00Z", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:labels": {"f:app.kubernetes.io/name": {}, "f:app.kubernetes.io/part-of": {}, "f:app.kubernetes.io/version": {}, "f:tier": {}}},
                             "f:spec": {"f:selector": {}, "f:template": {"f:metadata": {"f:labels": {}}, "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {".": {}, "f:image": {}, "f:env": {}, "f:ports": {}, "f:resources": {}}}}}}}
            }]
        },
        "spec": spec,
        "status": status
    })
}

/// The pod template's spec of workload `i`: its app container, the Envoy
/// sidecar in every other workload, the busybox init container in every
/// tenth.
fn pod_spec(i: usize) -> Value {
    let mut containers = vec![app_container(i)];
    if i.is_multiple_of(2) {
        containers.push(json!({
            "name": "envoy", "image": format!("docker.io/envoyproxy/envoy:v1.3{}.0", i % 4),
            "args": ["--config-path", "/etc/envoy/envoy.yaml"],
            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}}
        }));
    }
    let mut pod_spec = json!({
        "containers": containers, "serviceAccountName": name_of(i),
        "restartPolicy": "Always", "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler",
        "securityContext": {"fsGroup": 2000}
    });
    if i.is_multiple_of(10) {
        pod_spec["initContainers"] = json!([{"name": "wait-db", "image": "busybox:1.36", "command": ["sh", "-c", "until nc -z db 5432; do sleep 1; done"]}]);
    }
    pod_spec
}

/// The container `app` running workload `i`'s own image.
fn app_container(i: usize) -> Value {
    let env: Vec<Value> = [
        ("LOG_LEVEL", "info"),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://otel-collector.observability:4317",
        ),
        ("GOMAXPROCS", "2"),
        ("DATABASE_POOL_SIZE", "20"),
        ("FEATURE_FLAGS", "checkout-v2,new-search"),
    ]
    .iter()
    .map(|(k, v)| json!({"name": k, "value": v}))
    .collect();
    let probe = |path: &str| {
        json!({"httpGet": {"path": path, "port": 8080, "scheme": "HTTP"},
               "initialDelaySeconds": 5, "periodSeconds": 10, "timeoutSeconds": 1,
               "successThreshold": 1, "failureThreshold": 3})
    };
    json!({
        "name": "app", "image": image_of(i), "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"},
                  {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}],
        "env": env,
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                      "limits": {"cpu": "1", "memory": "512Mi"}},
        "readinessProbe": probe("/readyz"), "livenessProbe": probe("/healthz"),
        "securityContext": {"runAsNonRoot": true, "readOnlyRootFilesystem": true,
                            "allowPrivilegeEscalation": false,
                            "capabilities": {"drop": ["ALL"]}},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File"
    })
}

/// Adds `kind`'s own fields (replicas, update strategy) to `spec`; the
/// status of a finished rollout.
fn rollout(kind: Kind, name: &str, spec: &mut Value) -> Value {
    match kind {
        Kind::Deployment => {
            spec["replicas"] = json!(3);
            spec["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}});
            spec["progressDeadlineSeconds"] = json!(600);
            json!({"observedGeneration": 4, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3,
                   "conditions": [
                     {"type": "Available", "status": "True", "lastUpdateTime": "2026-11-20T10:00:00Z", "lastTransitionTime": "2026-11-20T10:00:00Z", "reason": "MinimumReplicasAvailable", "message": "Deployment has minimum availability."},
                     {"type": "Progressing", "status": "True", "lastUpdateTime": "2026-11-25T10:00:00Z", "lastTransitionTime": "2026-11-01T10:00:00Z", "reason": "NewReplicaSetAvailable", "message": format!("ReplicaSet \"{name}-7d9f8b6c5d\" has successfully progressed.")}]})
        }
        Kind::StatefulSet => {
            spec["replicas"] = json!(3);
            spec["serviceName"] = json!(name);
            spec["podManagementPolicy"] = json!("OrderedReady");
            spec["updateStrategy"] =
                json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}});
            json!({"observedGeneration": 4, "replicas": 3, "readyReplicas": 3, "currentReplicas": 3, "updatedReplicas": 3,
                   "currentRevision": format!("{name}-6c8f9d7b4"), "updateRevision": format!("{name}-6c8f9d7b4"), "collisionCount": 0, "availableReplicas": 3})
        }
        Kind::DaemonSet => {
            spec["updateStrategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}});
            json!({"currentNumberScheduled": 12, "numberMisscheduled": 0, "desiredNumberScheduled": 12, "numberReady": 12,
                   "observedGeneration": 4, "updatedNumberScheduled": 12, "numberAvailable": 12})
        }
    }
}

/// The index pushroll's indexer builds from workloads `0..n` (the same
/// code path: typed objects → `Observed::of` → `IndexBuilder`).
pub fn index(n: usize) -> Index {
    let mut builder = IndexBuilder::new(NamespaceFilter::default());
    for i in 0..n {
        let obj = workload(i);
        let entry = match kind_of(i) {
            Kind::Deployment => Observed::of(&serde_json::from_value::<Deployment>(obj).unwrap()),
            Kind::StatefulSet => Observed::of(&serde_json::from_value::<StatefulSet>(obj).unwrap()),
            Kind::DaemonSet => Observed::of(&serde_json::from_value::<DaemonSet>(obj).unwrap()),
        };
        builder.apply(&entry);
    }
    builder.build(Some("2026-11-26T12:00:00Z".parse().unwrap()))
}

/// An index store as `serve` holds it (ConfigMap fallback on a miss, no
/// cluster client), loaded with `index`.
pub fn store(index: Index) -> IndexStore {
    let store = IndexStore::new(
        None,
        OnMiss::Configmap,
        Duration::from_secs(10),
        Metrics::new(),
    );
    store.set_file(index);
    store
}

/// Cargo's target directory (`CARGO_TARGET_DIR`, else `target/` in the
/// package), where the benches write their results.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}
