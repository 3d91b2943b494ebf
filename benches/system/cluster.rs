//! The cluster one size runs against: a fake API server seeded with the
//! synthetic workloads of `benches/common` and the index ConfigMap, the
//! index file as kubelet would mount it, and clients for both the direct
//! and the byte-counted way in.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use kube::config::Kubeconfig;
use pushroll::index::configmap::Payload;
use pushroll::metrics::Metrics;
use pushroll::restart::Restarter;
use pushroll::workload::NamespaceFilter;
use serde_json::{Value, json};

use crate::common;
use crate::proxy::counting_proxy;
use crate::support::cluster::{client_for, config_for};

/// The user agent of the bench's own bare client (the fake's own time in
/// `hits`), whose requests [`Cluster::verbs`] leaves out.
pub const BARE_AGENT: &str = "pushroll-bench-bare";

/// Digests new for the whole run, one per push, so that each push of a
/// workload's image restarts it.
pub struct Digests(AtomicU64);

impl Digests {
    pub fn new() -> Digests {
        Digests(AtomicU64::new(1))
    }

    pub fn fresh(&self) -> String {
        common::digest(self.0.fetch_add(1, Ordering::Relaxed))
    }
}

/// Sizes of what a [`Cluster`] was seeded with: `(N, objects as JSON,
/// index as stored, stored gzipped)`, for the report.
pub type Seeded = (usize, usize, usize, bool);

/// A fake API server holding workloads `0..n` and the index ConfigMap,
/// and the mounted index file as kubelet would write it.
pub struct Cluster {
    pub n: usize,
    pub fake: fake_apiserver::FakeApiServer,
    pub client: kube::Client,
    /// What `client` was built from, for pushroll's own connection.
    config: kube::Config,
    /// The same API server through a byte-counting proxy.
    pub counted: kube::Client,
    pub proxy_bytes: Arc<AtomicU64>,
    _dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    pub index_file: PathBuf,
    pub index_bytes: usize,
    pub gzip: bool,
    pub object_bytes: usize,
}

impl Cluster {
    pub async fn start(n: usize) -> Cluster {
        let fake = fake_apiserver::FakeApiServer::start_with(fake_apiserver::Options::default());
        let object_bytes = seed_workloads(&fake, n);
        let index = common::index(n);
        let payload = Payload::encode(&index).expect("the index fits in a ConfigMap");
        let dir = tempfile::tempdir().unwrap();
        let (file, bytes, data) = stored(&payload);
        // serve's --index-file names index.json; the .gz beside it is read too.
        std::fs::write(dir.path().join(file), &bytes).unwrap();
        fake.insert(index_configmap(data));
        let kubeconfig = fake.write_kubeconfig_ns(dir.path(), common::INDEX_NS);
        let config = config_for(yaml(&fake.kubeconfig(common::INDEX_NS))).await;
        let client = kube::Client::try_from(config.clone()).unwrap();
        let (proxy, proxy_bytes) = counting_proxy(fake.addr()).await;
        let counted_config = fake
            .kubeconfig(common::INDEX_NS)
            .replace(&fake.url(), &format!("http://{proxy}"));
        let counted = client_for(yaml(&counted_config)).await;
        Cluster {
            n,
            fake,
            client,
            config,
            counted,
            proxy_bytes,
            index_file: dir.path().join("index.json"),
            kubeconfig,
            _dir: dir,
            index_bytes: bytes.len(),
            gzip: payload.is_gzip(),
            object_bytes,
        }
    }

    /// What the report says of this cluster.
    pub fn seeded(&self) -> Seeded {
        (self.n, self.object_bytes, self.index_bytes, self.gzip)
    }

    /// pushroll's restart code (GET, PATCH, Event through kube-rs) against
    /// this cluster, as `serve` builds it.
    pub fn restarter(&self) -> Restarter {
        let metrics = Metrics::new();
        Restarter::new(
            Some(
                pushroll::k8s::connect_with(
                    self.config.clone(),
                    std::time::Duration::from_secs(5),
                    metrics.clone(),
                )
                .unwrap(),
            ),
            NamespaceFilter::default(),
            false,
            pushroll::policy::Settings::default(),
            8,
            metrics.clone(),
            pushroll::notify::Notifier::disabled(metrics),
        )
    }

    /// pushroll's API requests in the fake's log, by verb and resource.
    pub fn verbs(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for r in self.fake.requests() {
            if r.user_agent.as_deref() == Some(BARE_AGENT) {
                continue;
            }
            let what = format!("{} {}", r.verb, r.resource.unwrap_or_default());
            *out.entry(what).or_default() += 1;
        }
        out
    }
}

/// Inserts workloads `0..n`; the size of their JSON.
fn seed_workloads(fake: &fake_apiserver::FakeApiServer, n: usize) -> usize {
    let mut object_bytes = 0;
    for i in 0..n {
        let obj = common::workload(i);
        object_bytes += serde_json::to_vec(&obj).unwrap().len();
        fake.insert(obj);
    }
    object_bytes
}

/// The index as stored: the mounted file's name, its bytes, and the
/// ConfigMap's `data` or `binaryData`.
fn stored(payload: &Payload) -> (&'static str, Vec<u8>, Value) {
    match payload {
        Payload::Json(s) => (
            "index.json",
            s.as_bytes().to_vec(),
            json!({"data": {"index.json": s}}),
        ),
        Payload::Gzip(b) => (
            "index.json.gz",
            b.clone(),
            json!({"binaryData": {"index.json.gz": base64::engine::general_purpose::STANDARD.encode(b)}}),
        ),
    }
}

/// The index ConfigMap holding `data` (see [`stored`]).
fn index_configmap(data: Value) -> Value {
    let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": common::INDEX_CM, "namespace": common::INDEX_NS}});
    for (k, v) in data.as_object().unwrap() {
        cm[k] = v.clone();
    }
    cm
}

fn yaml(kubeconfig: &str) -> Kubeconfig {
    Kubeconfig::from_yaml(kubeconfig).unwrap()
}
