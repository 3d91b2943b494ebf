//! The designs comparison: four ways to find the workloads of a push,
//! each measured in this process against the same fake and the same index.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams};
use pushroll::index::file::FileWatch;
use pushroll::index::store::{IndexStore, OnMiss};
use pushroll::metrics::Metrics;
use pushroll::reference::{Reference, match_key};
use pushroll::restart::{Push, Restarter};
use pushroll::workload::Workload;
use pushroll::workload::{Kind, WorkloadRef};
use serde::{Deserialize, Serialize};

use crate::cluster::{Cluster, Digests};
use crate::common;
use crate::options::Options;
use crate::stats::{Stats, human, human_bytes, stats};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Design {
    V1,
    V2,
    V3,
    Pushroll,
}

impl Design {
    pub const ALL: [Design; 4] = [Design::V1, Design::V2, Design::V3, Design::Pushroll];

    pub fn label(self) -> &'static str {
        match self {
            Design::V1 => "V1 list all workloads",
            Design::V2 => "V2 GET index ConfigMap",
            Design::V3 => "V3 read mounted file",
            Design::Pushroll => "pushroll in-memory index",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Design::V1 => "V1",
            Design::V2 => "V2",
            Design::V3 => "V3",
            Design::Pushroll => "pushroll",
        }
    }

    pub fn color(self) -> &'static str {
        match self {
            Design::V1 => "#d62728",
            Design::V2 => "#ff7f0e",
            Design::V3 => "#9467bd",
            Design::Pushroll => "#2ca02c",
        }
    }
}

/// The seed's cache format, read the way its Go CLI reads it: a typed
/// decode into a map (unknown fields such as `containers` skipped).
#[derive(Deserialize)]
struct SeedIndex {
    images: HashMap<String, Vec<SeedEntry>>,
}

#[derive(Deserialize)]
struct SeedEntry {
    #[serde(default = "deployment")]
    kind: Kind,
    namespace: String,
    name: String,
}

fn deployment() -> Kind {
    Kind::Deployment
}

fn seed_lookup(json: &[u8], key: &str) -> Vec<WorkloadRef> {
    let index: SeedIndex = serde_json::from_slice(json).expect("index JSON");
    index
        .images
        .get(key)
        .map(|ws| {
            ws.iter()
                .map(|w| WorkloadRef {
                    kind: w.kind,
                    namespace: w.namespace.clone(),
                    name: w.name.clone(),
                    containers: Vec::new(),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("gzip");
    out
}

/// What each design needs.
struct Finder {
    store: std::sync::Arc<IndexStore>,
    index_file: PathBuf,
}

impl Finder {
    fn new(cluster: &Cluster) -> Finder {
        // serve loads the mounted file once (and on change), not per push.
        let file = pushroll::index::file::IndexFile {
            path: cluster.index_file.clone(),
            embedded: None,
        };
        let metrics = Metrics::new();
        let store = std::sync::Arc::new(IndexStore::new(
            None,
            OnMiss::Configmap,
            Duration::from_secs(10),
            metrics.clone(),
        ));
        let mut watch = FileWatch::new(file, store.clone(), metrics);
        assert!(watch.reload(), "the index file loads");
        Finder {
            store,
            index_file: cluster.index_file.clone(),
        }
    }

    /// The workloads that run `image`, found the way `design` finds them.
    async fn find(&self, design: Design, client: &kube::Client, image: &str) -> Vec<WorkloadRef> {
        let key = Reference::parse(image).unwrap().tagged();
        match design {
            Design::Pushroll => self.store.lookup(&key).await.unwrap().workloads,
            Design::V3 => {
                let json = match std::fs::read(&self.index_file) {
                    Ok(b) => b,
                    Err(_) => {
                        gunzip(&std::fs::read(self.index_file.with_extension("json.gz")).unwrap())
                    }
                };
                seed_lookup(&json, &key)
            }
            Design::V2 => {
                let api: Api<ConfigMap> = Api::namespaced(client.clone(), common::INDEX_NS);
                let cm = api.get(common::INDEX_CM).await.unwrap();
                let json = match cm.data.as_ref().and_then(|d| d.get("index.json")) {
                    Some(s) => s.as_bytes().to_vec(),
                    None => gunzip(&cm.binary_data.as_ref().unwrap()["index.json.gz"].0),
                };
                seed_lookup(&json, &key)
            }
            Design::V1 => {
                let mut found = Vec::new();
                list_matching::<Deployment>(client, &key, &mut found).await;
                list_matching::<StatefulSet>(client, &key, &mut found).await;
                list_matching::<DaemonSet>(client, &key, &mut found).await;
                found
            }
        }
    }
}

/// V1: every `W` in all namespaces, page by page (as `kubectl get -A`
/// does), keeping those with a container or init container running `key`.
async fn list_matching<W: Workload>(
    client: &kube::Client,
    key: &str,
    found: &mut Vec<WorkloadRef>,
) {
    let api: Api<W> = Api::all(client.clone());
    let mut token: Option<String> = None;
    loop {
        let mut params = ListParams::default().limit(500);
        if let Some(t) = &token {
            params = params.continue_token(t);
        }
        let page = api.list(&params).await.unwrap();
        for w in &page.items {
            let Some(spec) = w.template().and_then(|t| t.spec.as_ref()) else {
                continue;
            };
            let containers: Vec<String> = spec
                .init_containers
                .iter()
                .flatten()
                .chain(&spec.containers)
                .filter(|c| c.image.as_deref().and_then(match_key).as_deref() == Some(key))
                .map(|c| c.name.clone())
                .collect();
            if !containers.is_empty() {
                found.push(WorkloadRef {
                    kind: W::KIND,
                    namespace: kube::ResourceExt::namespace(w).unwrap_or_default(),
                    name: kube::ResourceExt::name_any(w),
                    containers,
                });
            }
        }
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            return;
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DesignResult {
    pub n: usize,
    pub design: Design,
    pub lookup: Stats,
    pub requests_per_push: f64,
    pub bytes_per_push: f64,
    pub hit: Stats,
}

/// Every design at the size of `cluster`, pushing workload n/2's image.
pub async fn run_designs(
    opts: &Options,
    cluster: &Cluster,
    digests: &Digests,
) -> Vec<DesignResult> {
    let finder = Finder::new(cluster);
    let n = cluster.n;
    let target = n / 2;
    let image = common::image_of(target);
    let key = Reference::parse(&image).unwrap().tagged();
    let restarter = cluster.restarter();
    let mut results = Vec::new();
    for design in Design::ALL {
        let trial = Trial {
            finder: &finder,
            design,
            cluster,
            image: &image,
        };
        trial.check(target).await;
        let lookup = trial.lookup_latency(opts).await;
        let (requests, bytes) = trial.api_cost(opts).await;
        let hit = trial
            .hit_latency(hit_iters(opts, &lookup), &key, &restarter, digests)
            .await;
        eprintln!(
            "  N={n:<6} {:<26} lookup p50 {:>9} ({} runs)  {:>5.1} req/push {:>10}/push  hit p50 {:>9}",
            design.label(),
            human(lookup.p50_ns),
            lookup.n,
            requests,
            human_bytes(bytes),
            human(hit.p50_ns)
        );
        results.push(DesignResult {
            n,
            design,
            lookup,
            requests_per_push: requests,
            bytes_per_push: bytes,
            hit,
        });
    }
    results
}

/// How many whole hits to time: about 2 s worth of lookups, 3 to 200.
fn hit_iters(opts: &Options, lookup: &Stats) -> usize {
    if opts.quick {
        1
    } else {
        (Duration::from_secs(2).as_nanos() as f64 / lookup.p50_ns).clamp(3.0, 200.0) as usize
    }
}

/// One design, measured against one cluster for one image.
struct Trial<'a> {
    finder: &'a Finder,
    design: Design,
    cluster: &'a Cluster,
    image: &'a str,
}

impl Trial<'_> {
    async fn find(&self, client: &kube::Client, image: &str) -> Vec<WorkloadRef> {
        self.finder.find(self.design, client, image).await
    }

    /// Correctness first: the design finds exactly workload `target`, and
    /// nothing for a commit tag of its repository.
    async fn check(&self, target: usize) {
        let (design, n) = (self.design, self.cluster.n);
        let found = self.find(&self.cluster.client, self.image).await;
        assert_eq!(found.len(), 1, "{design:?} at {n}: {found:?}");
        assert_eq!(found[0].name, common::name_of(target), "{design:?}");
        let miss = self
            .find(&self.cluster.client, &common::miss_image(target))
            .await;
        assert!(miss.is_empty(), "{design:?} found a commit tag");
    }

    /// Latency of the lookup, over the time budget.
    async fn lookup_latency(&self, opts: &Options) -> Stats {
        let (min_iters, max_iters) = if opts.quick { (1, 1) } else { (5, 200_000) };
        let mut samples = Vec::new();
        let started = Instant::now();
        while samples.len() < min_iters
            || (started.elapsed() < opts.budget && samples.len() < max_iters)
        {
            let t = Instant::now();
            let found = self.find(&self.cluster.client, self.image).await;
            samples.push(t.elapsed().as_nanos() as u64);
            std::hint::black_box(found);
        }
        stats(&mut samples)
    }

    /// API requests and bytes per lookup, through the counting proxy.
    async fn api_cost(&self, opts: &Options) -> (f64, f64) {
        let cluster = self.cluster;
        let passes = if opts.quick { 1 } else { 3 };
        cluster.fake.clear_requests();
        let before = cluster.proxy_bytes.load(Ordering::Relaxed);
        for _ in 0..passes {
            self.find(&cluster.counted, self.image).await;
        }
        let requests = cluster.fake.requests().len() as f64 / passes as f64;
        let bytes = (cluster.proxy_bytes.load(Ordering::Relaxed) - before) as f64 / passes as f64;
        (requests, bytes)
    }

    /// A whole hit: the lookup, then the restart every design shares.
    async fn hit_latency(
        &self,
        iters: usize,
        key: &str,
        restarter: &Restarter,
        digests: &Digests,
    ) -> Stats {
        let mut samples = Vec::new();
        for _ in 0..iters {
            let digest = digests.fresh();
            let t = Instant::now();
            let found = self.find(&self.cluster.client, self.image).await;
            let push = Push {
                image_key: key,
                digest: &digest,
                message_id: Some("bench"),
                published: jiff::Timestamp::now(),
            };
            let (done, failed) = restarter.restart_all(&push, &found).await;
            samples.push(t.elapsed().as_nanos() as u64);
            assert!(failed.is_empty(), "{failed:?}");
            assert_eq!(done.len(), 1);
        }
        stats(&mut samples)
    }
}
