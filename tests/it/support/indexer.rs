//! The indexer as tests drive it: `index --watch` started against a
//! cluster, and the index ConfigMap read back.

use std::time::Duration;

use serde_json::Value;

use super::cluster::Cluster;
use super::{Pushroll, eventually, metric};

pub fn kubeconfig_env(c: &Cluster) -> Vec<(&'static str, String)> {
    vec![("KUBECONFIG", c.kubeconfig.to_string_lossy().into_owned())]
}

/// [`kubeconfig_env`], running as the pod `pod` (the Lease holder's name).
fn pod_env(c: &Cluster, pod: &str) -> Vec<(&'static str, String)> {
    let mut env = kubeconfig_env(c);
    env.push(("POD_NAME", pod.to_owned()));
    env
}

/// The ConfigMap's index `images`, or `None` when it has none yet.
pub async fn configmap_images(c: &Cluster, ns: &str) -> Option<Value> {
    let cm = c.get("ConfigMap", ns, "pushroll-index").await?;
    let text = if let Some(json) = cm["data"]["index.json"].as_str() {
        json.to_owned()
    } else {
        use base64::Engine as _;
        use std::io::Read as _;
        let b64 = cm["binaryData"]["index.json.gz"].as_str()?;
        let gz = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let mut out = String::new();
        flate2::read::GzDecoder::new(gz.as_slice())
            .read_to_string(&mut out)
            .unwrap();
        out
    };
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["version"], 1);
    Some(v["images"].clone())
}

pub fn start_watch(c: &Cluster, cm_ns: &str, namespaces: &str, pod: &str) -> Pushroll {
    start_watch_with(c, cm_ns, namespaces, pod, &[])
}

/// `index --watch` as `pod`, with short debounce and lease, and `extra`
/// flags.
pub fn start_watch_with(
    c: &Cluster,
    cm_ns: &str,
    namespaces: &str,
    pod: &str,
    extra: &[&str],
) -> Pushroll {
    let cm = format!("{cm_ns}/pushroll-index");
    let env = pod_env(c, pod);
    let args = [
        "index",
        "--watch",
        "--listen",
        "127.0.0.1:0",
        "--index-configmap",
        &cm,
        "--namespace",
        namespaces,
        "--debounce",
        "200ms",
    ];
    // A short lease unless `extra` names its own.
    let lease: &[&str] = if extra.contains(&"--lease-duration") {
        &[]
    } else {
        &["--lease-duration", "3s"]
    };
    Pushroll::start_env(&[&args, lease, extra].concat(), &env)
}

/// How long `index --watch` may take to become ready
/// ([`Pushroll::wait_ready`]).
pub const READY_LIMIT: Duration = Duration::from_secs(30);

/// Waits up to `limit` for the index ConfigMap in `ns` to list `image`.
pub async fn configmap_lists(c: &Cluster, ns: &str, image: &str, limit: Duration) -> bool {
    eventually(limit, || async {
        configmap_images(c, ns)
            .await
            .filter(|i| i.get(image).is_some())
    })
    .await
    .is_some()
}

/// Waits until exactly one of two replicas leads and has written; returns
/// (leader, follower).
pub async fn leader_and_follower<'a>(
    a: &'a mut Pushroll,
    b: &'a mut Pushroll,
) -> (&'a mut Pushroll, &'a mut Pushroll) {
    let a_leads = eventually(Duration::from_secs(30), || async {
        let (ma, mb) = (a.metrics().await, b.metrics().await);
        let written = |m: &str| metric(m, "pushroll_index_writes_total{result=\"written\"}");
        match (
            metric(&ma, "pushroll_indexer_leader"),
            metric(&mb, "pushroll_indexer_leader"),
        ) {
            (1.0, 0.0) if written(&ma) >= 1.0 => Some(true),
            (0.0, 1.0) if written(&mb) >= 1.0 => Some(false),
            _ => None,
        }
    })
    .await
    .expect("one replica leads and writes");
    if a_leads { (a, b) } else { (b, a) }
}

/// Starts `serve --indexer` (no token check) whose watch covers `ns` and
/// whose Lease and ConfigMap are in `cm_ns`; `file` is the index file.
pub fn start_serve_indexer(
    c: &Cluster,
    cm_ns: &str,
    ns: &str,
    file: &std::path::Path,
    pod: &str,
) -> Pushroll {
    start_serve_indexer_with(c, cm_ns, ns, file, pod, &[])
}

/// The same, with `extra` flags.
pub fn start_serve_indexer_with(
    c: &Cluster,
    cm_ns: &str,
    ns: &str,
    file: &std::path::Path,
    pod: &str,
    extra: &[&str],
) -> Pushroll {
    start_serve_indexer_env(c, cm_ns, ns, file, pod, extra, &[])
}

/// [`start_serve_indexer_with`] with more environment (the Pub/Sub
/// emulator's `PUBSUB_EMULATOR_HOST`).
pub fn start_serve_indexer_env(
    c: &Cluster,
    cm_ns: &str,
    ns: &str,
    file: &std::path::Path,
    pod: &str,
    extra: &[&str],
    more_env: &[(&'static str, String)],
) -> Pushroll {
    let cm = format!("{cm_ns}/pushroll-index");
    let mut env = pod_env(c, pod);
    env.extend(more_env.iter().cloned());
    let args = [
        "--index-file",
        file.to_str().unwrap(),
        "--index-configmap",
        &cm,
        "--namespace",
        ns,
        "--debounce",
        "200ms",
        "--lease-duration",
        "3s",
    ];
    Pushroll::start_env(&[SERVE_INDEXER, &args, extra].concat(), &env)
}

/// `serve --indexer` on a free loopback port, tokens unchecked.
pub const SERVE_INDEXER: &[&str] = &[
    "serve",
    "--indexer",
    "--listen",
    "127.0.0.1:0",
    "--auth",
    "none",
];
