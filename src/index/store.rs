//! Where a push is looked up: the in-memory index (from the mounted file),
//! then the index ConfigMap through the API, rate-limited and shared by
//! concurrent misses. Hits never call the API. With `serve --indexer`, the
//! index of the process's own watch answers everything once it is there.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use serde::Serialize;

use crate::index::configmap::{CONFIGMAP_GZ_KEY, CONFIGMAP_KEY, ConfigMapRef, stored_bytes};
use crate::index::scan::scan;
use crate::index::{Index, IndexError, Limits, LoadReport};
use crate::k8s::{Kube, KubeError};
use crate::metrics::Metrics;
use crate::workload::WorkloadRef;

/// Which index answered a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    File,
    Configmap,
    Scan,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::File => "file",
            Source::Configmap => "configmap",
            Source::Scan => "scan",
        }
    }
}

/// What a lookup that finds nothing in the mounted index does (`--on-miss`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnMiss {
    /// Answer no-match: zero API calls.
    None,
    /// Refresh from the index ConfigMap (one GET, rate-limited), then answer.
    Configmap,
    /// Then scan the cluster's workloads (one shared scan per --scan-interval) and write what it finds back.
    Scan,
}

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// No index is loaded and no fallback answered: Pub/Sub should retry.
    #[error("no index is loaded and the index ConfigMap is not available: {0}")]
    Unavailable(String),
}

/// The result of a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub workloads: Vec<WorkloadRef>,
    pub source: Source,
}

/// `--on-miss scan`: list the cluster's workloads when the file and the
/// ConfigMap both miss.
pub(crate) struct Scanner {
    /// Namespaces to scan (all when empty). Exclusions apply at restart time.
    pub namespaces: Vec<String>,
    pub interval: Duration,
}

/// The indexes in memory and the fallback chain.
pub struct IndexStore {
    /// `serve --indexer`: the index built by this process's own watch.
    watched: ArcSwapOption<Index>,
    file: ArcSwapOption<Index>,
    configmap: ArcSwapOption<Index>,
    scanned: ArcSwapOption<Index>,
    fallback: Option<(Kube, ConfigMapRef)>,
    scanner: Option<Scanner>,
    /// When the cluster was last scanned; the lock makes concurrent misses
    /// share one scan.
    last_scan: tokio::sync::Mutex<Option<Instant>>,
    on_miss: OnMiss,
    refresh_interval: Duration,
    /// When the ConfigMap was last fetched; the lock makes concurrent
    /// misses share one GET.
    last_refresh: tokio::sync::Mutex<Option<Instant>>,
    /// The resourceVersion of the ConfigMap last parsed: an unchanged one
    /// is not parsed again.
    configmap_version: std::sync::Mutex<Option<String>>,
    /// [`crate::index::content_hash`] of the mounted file's index.
    file_hash: std::sync::Mutex<Option<u64>>,
    /// How much of an index (the file's or the ConfigMap's) is read.
    limits: Limits,
    metrics: Arc<Metrics>,
}

impl IndexStore {
    pub fn new(
        fallback: Option<(Kube, ConfigMapRef)>,
        on_miss: OnMiss,
        refresh_interval: Duration,
        metrics: Arc<Metrics>,
    ) -> IndexStore {
        IndexStore {
            watched: ArcSwapOption::empty(),
            file: ArcSwapOption::empty(),
            configmap: ArcSwapOption::empty(),
            scanned: ArcSwapOption::empty(),
            fallback,
            scanner: None,
            last_scan: tokio::sync::Mutex::new(None),
            on_miss,
            refresh_interval,
            last_refresh: tokio::sync::Mutex::new(None),
            configmap_version: std::sync::Mutex::new(None),
            file_hash: std::sync::Mutex::new(None),
            limits: Limits::default(),
            metrics,
        }
    }

    /// Bounds what reading an index may take (`--max-index-bytes`).
    pub(crate) fn with_limits(mut self, limits: Limits) -> IndexStore {
        self.limits = limits;
        self
    }

    /// The bounds every index read by this store (and its file watch) obeys.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Enables `--on-miss scan` (needs the API fallback).
    pub(crate) fn with_scanner(mut self, scanner: Scanner) -> IndexStore {
        self.scanner = Some(scanner);
        self
    }

    /// Replaces the index read from the mounted file.
    pub fn set_file(&self, index: Index) {
        // The watch's index supersedes the file's (see `set_watched`).
        if self.watched.load().is_some() {
            return;
        }
        self.publish(Source::File, &index);
        self.file.store(Some(Arc::new(index)));
    }

    /// Records the hash of the file's bytes, so that a ConfigMap holding
    /// the same bytes (the mount's source) is not parsed a second time.
    pub(crate) fn set_file_hash(&self, hash: u64) {
        *self.file_hash.lock().expect("lock") = Some(hash);
    }

    /// Replaces the index of the in-process watch (`serve --indexer`).
    ///
    /// Its lookups report `source: configmap`: the contract allows only
    /// `file | configmap | scan`, and this is exactly the index the leader
    /// writes to the ConfigMap (same watch, same builder), only received
    /// without waiting for the kubelet's volume sync or an API GET. `file`
    /// would claim the mounted volume answered, and `scan` names the
    /// on-demand listing of `--on-miss scan`, with its own rate limit.
    pub(crate) fn set_watched(&self, index: Arc<Index>) {
        self.publish(Source::Configmap, &index);
        self.watched.store(Some(index));
        // It answers everything from now on: the older copies would only
        // hold memory.
        self.file.store(None);
        self.configmap.store(None);
        self.scanned.store(None);
        for gone in [Source::File, Source::Scan] {
            self.metrics.index.dropped_source(gone.as_str());
        }
    }

    fn set_configmap(&self, index: Index) {
        self.publish(Source::Configmap, &index);
        self.configmap.store(Some(Arc::new(index)));
    }

    fn publish(&self, source: Source, index: &Index) {
        self.metrics
            .index
            .held(source.as_str(), index.len(), index.generated_at);
    }

    /// Whether any index is loaded (for `/readyz`).
    pub(crate) fn is_loaded(&self) -> bool {
        self.watched.load().is_some()
            || self.file.load().is_some()
            || self.configmap.load().is_some()
            || self.scanned.load().is_some()
    }

    /// Whether the ConfigMap fallback is configured.
    pub(crate) fn has_fallback(&self) -> bool {
        self.fallback.is_some()
    }

    /// The workloads that run `key` (a normalized tagged reference).
    pub async fn lookup(&self, key: &str) -> Result<Found, LookupError> {
        let started = Instant::now();
        let result = self.lookup_inner(key).await;
        if let Ok(found) = &result {
            self.metrics
                .lookup
                .answered(found.source.as_str(), started.elapsed());
        }
        result
    }

    async fn lookup_inner(&self, key: &str) -> Result<Found, LookupError> {
        // The watch's own index is the freshest view of the cluster (the
        // file and the ConfigMap are copies of some watch's earlier one):
        // it answers hits and misses alike, with no API call.
        if let Some(index) = self.watched.load().as_deref() {
            return Ok(Found {
                workloads: index.lookup(key),
                source: Source::Configmap,
            });
        }
        if let Some(found) = self.in_memory(key) {
            return Ok(found);
        }
        let loaded = self.is_loaded();
        // The file is missing (nothing loaded) or a miss asks for a refresh.
        if self.fallback.is_some() && (!loaded || self.on_miss != OnMiss::None) {
            let error = self.refresh_configmap(false).await.err();
            if let Some(found) = self.in_memory(key) {
                return Ok(found);
            }
            if self.on_miss == OnMiss::Scan {
                self.scan_if_due().await;
                if let Some(found) = self.in_memory(key) {
                    return Ok(found);
                }
            }
            if !self.is_loaded() {
                let why =
                    error.map_or_else(|| "fetched too recently".to_string(), |e| e.to_string());
                return Err(LookupError::Unavailable(why));
            }
        } else if !loaded {
            return Err(LookupError::Unavailable(
                "no index file and no ConfigMap fallback".into(),
            ));
        }
        let source = self
            .newest()
            .map_or(Source::Configmap, |(_, source)| source);
        Ok(Found {
            workloads: Vec::new(),
            source,
        })
    }

    /// The newest index in memory, by `generatedAt`. Each is a copy of some
    /// view of the cluster at its time: an older copy's hit can lack a
    /// workload added since, or name one removed since, so the newest
    /// answers alone, hit or miss. One without `generatedAt` counts as the
    /// oldest. Ties go to the scan (made now), then the ConfigMap read
    /// through the API, which is never older than the volume mounted from
    /// it, then the file.
    fn newest(&self) -> Option<(Arc<Index>, Source)> {
        let slots = [
            (&self.scanned, Source::Scan),
            (&self.configmap, Source::Configmap),
            (&self.file, Source::File),
        ];
        let mut best: Option<(Arc<Index>, Source)> = None;
        for (slot, source) in slots {
            if let Some(index) = slot.load_full()
                && best
                    .as_ref()
                    .is_none_or(|(b, _)| index.generated_at > b.generated_at)
            {
                best = Some((index, source));
            }
        }
        best
    }

    fn in_memory(&self, key: &str) -> Option<Found> {
        let (index, source) = self.newest()?;
        let workloads = index.lookup(key);
        (!workloads.is_empty()).then_some(Found { workloads, source })
    }

    /// Fetches the index ConfigMap unless that was done less than
    /// `--miss-refresh-interval` ago (`force` skips the interval). Callers
    /// that arrive while a fetch is running wait for it and reuse its result.
    pub(crate) async fn refresh_configmap(&self, force: bool) -> Result<(), RefreshError> {
        let Some((kube, cm)) = &self.fallback else {
            return Ok(());
        };
        let mut last = self.last_refresh.lock().await;
        if !force && last.is_some_and(|t| t.elapsed() < self.refresh_interval) {
            return Ok(());
        }
        *last = Some(Instant::now());
        let seen = self.configmap_version.lock().expect("lock").clone();
        let file_hash = *self.file_hash.lock().expect("lock");
        let result = fetch_configmap(kube, cm, seen.as_deref(), file_hash, &self.limits).await;
        let label = match &result {
            // Nothing parsed: what it holds is in memory already.
            Ok(Fetched::Unchanged | Fetched::SameAsFile(_)) => "configmap-unchanged",
            Ok(Fetched::Parsed(Some(_), _)) => "configmap-ok",
            Ok(Fetched::Parsed(None, _)) => "configmap-empty",
            Err(RefreshError::Api(KubeError::NotFound)) => "configmap-missing",
            Err(_) => "configmap-error",
        };
        self.metrics.index.reload(label);
        match result {
            // What it holds is in memory already.
            Ok(Fetched::Unchanged) => Ok(()),
            Ok(Fetched::SameAsFile(version)) => {
                *self.configmap_version.lock().expect("lock") = version;
                self.configmap.store(None);
                Ok(())
            }
            Ok(Fetched::Parsed(Some((index, report)), version)) => {
                *self.configmap_version.lock().expect("lock") = version;
                log_report(&report, "configmap", &self.metrics);
                // The same images as the mounted file (its source, written
                // again): keep one copy in memory, not two.
                if self
                    .file
                    .load()
                    .as_deref()
                    .is_some_and(|file| file.same_images(&index))
                {
                    self.publish(Source::Configmap, &index);
                    self.configmap.store(None);
                } else {
                    self.set_configmap(index);
                }
                Ok(())
            }
            Ok(Fetched::Parsed(None, _)) => Err(RefreshError::Empty),
            Err(e) => {
                tracing::warn!(error = %e, configmap = %cm, "index ConfigMap not read; keeping what is in memory");
                Err(e)
            }
        }
    }
}

impl IndexStore {
    /// Scans the cluster unless that was done less than `--scan-interval`
    /// ago (a miss inside the interval answers from memory: the negative
    /// cache). Concurrent misses wait for the one scan. What it finds is used
    /// at once, and written back to the ConfigMap when it covered every
    /// namespace (RBAC permitting).
    async fn scan_if_due(&self) {
        let (Some((kube, cm)), Some(scanner)) = (&self.fallback, &self.scanner) else {
            return;
        };
        let mut last = self.last_scan.lock().await;
        if last.is_some_and(|t| t.elapsed() < scanner.interval) {
            return;
        }
        *last = Some(Instant::now());
        let filter = crate::workload::NamespaceFilter {
            include: scanner.namespaces.clone(),
            exclude: Vec::new(),
        };
        let scanned = scan(kube, &filter, "cluster scanned for a missing image").await;
        let index = match scanned {
            Ok(index) => index,
            Err(e) => {
                self.metrics.index.scan("error");
                tracing::warn!(error = %e, "scan for a missing image failed");
                return;
            }
        };
        self.metrics.index.scan("success");
        let index = Arc::new(index);
        self.publish(Source::Scan, &index);
        self.scanned.store(Some(index.clone()));
        if scanner.namespaces.is_empty() {
            let (kube, cm, metrics) = (kube.clone(), cm.clone(), self.metrics.clone());
            // Off the request path: the push is answered from memory now.
            tokio::spawn(async move {
                if let Err(e) = crate::index::configmap::write(&kube, &cm, &index, &metrics).await {
                    tracing::warn!(error = %e, "scan result not written back to the index ConfigMap (RBAC may not allow it)");
                }
            });
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum RefreshError {
    #[error("reading the index ConfigMap: {0}")]
    Api(#[from] KubeError),
    #[error("the index ConfigMap is broken: {0}")]
    Index(#[from] IndexError),
    #[error("the index ConfigMap has neither {CONFIGMAP_KEY} nor {CONFIGMAP_GZ_KEY}")]
    Empty,
}

/// A fetched index ConfigMap.
enum Fetched {
    /// The resourceVersion last parsed: not parsed again.
    Unchanged,
    /// The bytes the mounted file holds (its index is in memory): not
    /// parsed again.
    SameAsFile(Option<String>),
    /// Its index (`None`: it holds none), and its resourceVersion.
    Parsed(Option<(Index, LoadReport)>, Option<String>),
}

async fn fetch_configmap(
    kube: &Kube,
    cm: &ConfigMapRef,
    seen: Option<&str>,
    file_hash: Option<u64>,
    limits: &Limits,
) -> Result<Fetched, RefreshError> {
    let map = kube.get_configmap(&cm.namespace, &cm.name).await?;
    let version = map.metadata.resource_version.clone();
    if version.is_some() && version.as_deref() == seen {
        return Ok(Fetched::Unchanged);
    }
    let (json, gz) = stored_bytes(&map);
    let present = json.is_some() || gz.is_some();
    if present && file_hash == Some(crate::index::content_hash(json, gz)) {
        return Ok(Fetched::SameAsFile(version));
    }
    Ok(Fetched::Parsed(
        crate::index::newest(json, gz, limits)?,
        version,
    ))
}

/// Logs what loading skipped, once per load, and counts dropped entries.
pub(crate) fn log_report(report: &LoadReport, source: &'static str, metrics: &Metrics) {
    if !report.dropped.is_empty() {
        for (why, n) in &report.dropped {
            metrics.index.entries_dropped(source, why.as_str(), *n);
        }
        tracing::warn!(
            source,
            count = report.dropped_count(),
            by_reason = ?report.dropped.iter().map(|(k, v)| (k.as_str(), v)).collect::<Vec<_>>(),
            examples = ?report.dropped_examples,
            "index entries whose namespace, name or container is not a Kubernetes name were dropped"
        );
    }
    if !report.invalid_keys.is_empty() {
        // A few name the problem; a hostile index may hold millions.
        let keys = &report.invalid_keys[..report.invalid_keys.len().min(10)];
        tracing::warn!(source, count = report.invalid_keys.len(), keys = ?keys, "index keys that are not image references were skipped");
    }
    if !report.pinned_keys.is_empty() {
        tracing::info!(
            source,
            count = report.pinned_keys.len(),
            "index keys pinned by digest were skipped: they never match a push"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(image: &str, name: &str) -> Index {
        let json = serde_json::json!({"version": 1, "images": {image: [
            {"kind": "Deployment", "namespace": "ns", "name": name, "containers": ["app"]}]}});
        Index::from_json(json.to_string().as_bytes()).unwrap().0
    }

    fn index_at(at: &str, image: &str, names: &[&str]) -> Index {
        let entries: Vec<_> = names
            .iter()
            .map(|n| serde_json::json!({"kind": "Deployment", "namespace": "ns", "name": n}))
            .collect();
        let json = serde_json::json!({"version": 1, "generatedAt": at, "images": {image: entries}});
        Index::from_json(json.to_string().as_bytes()).unwrap().0
    }

    #[tokio::test]
    async fn the_newest_index_answers_not_the_first_with_a_hit() {
        let img = "docker.io/library/app:v1";
        let other = "docker.io/library/other:v1";
        let (older, newer) = ("2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z");
        let names =
            |f: &Found| -> Vec<String> { f.workloads.iter().map(|w| w.name.clone()).collect() };
        let store = || {
            IndexStore::new(
                None,
                OnMiss::Configmap,
                Duration::from_secs(10),
                Metrics::new(),
            )
        };
        // (file, ConfigMap) → which source answers and with what.
        type Case<'a> = (Index, Index, Source, &'a [&'a str], &'a str);
        let cases: [Case; 4] = [
            // A workload added since the file was written.
            (
                index_at(older, img, &["a"]),
                index_at(newer, img, &["a", "b"]),
                Source::Configmap,
                &["a", "b"],
                "added since",
            ),
            // A workload removed since: the stale hit is not used.
            (
                index_at(older, img, &["a"]),
                index_at(newer, other, &["x"]),
                Source::Configmap,
                &[],
                "removed since",
            ),
            // The file is the newer copy.
            (
                index_at(newer, img, &["a"]),
                index_at(older, img, &["a", "old"]),
                Source::File,
                &["a"],
                "file newer",
            ),
            // Equal times: the ConfigMap, never older than its mount.
            (
                index_at(older, img, &["a"]),
                index_at(older, img, &["a", "b"]),
                Source::Configmap,
                &["a", "b"],
                "tie",
            ),
        ];
        for (file, configmap, source, want, case) in cases {
            let s = store();
            s.set_file(file);
            s.set_configmap(configmap);
            let found = s.lookup(img).await.unwrap();
            assert_eq!(
                (found.source, names(&found)),
                (source, want.iter().map(|n| n.to_string()).collect()),
                "{case}"
            );
        }
        // No generatedAt counts as the oldest.
        let s = store();
        let undated = Index::from_json(br#"{"version":1,"images":{"docker.io/library/app:v1":[{"kind":"Deployment","namespace":"ns","name":"a"}]}}"#).unwrap().0;
        s.set_file(undated);
        s.set_configmap(index_at(older, img, &["a", "b"]));
        assert_eq!(names(&s.lookup(img).await.unwrap()), ["a", "b"]);
    }

    #[tokio::test]
    async fn the_watched_index_answers_hits_and_misses_before_the_file() {
        let store = IndexStore::new(
            None,
            OnMiss::Configmap,
            Duration::from_secs(10),
            Metrics::new(),
        );
        assert!(!store.is_loaded());
        // Before the watch has synced, the file answers as before.
        store.set_file(index("docker.io/library/app:v1", "old"));
        let found = store.lookup("docker.io/library/app:v1").await.unwrap();
        assert_eq!(
            (found.source, found.workloads[0].name.as_str()),
            (Source::File, "old")
        );
        // Then the watch's index answers, hits and misses, over the file.
        store.set_watched(Arc::new(index("docker.io/library/app:v1", "new")));
        let found = store.lookup("docker.io/library/app:v1").await.unwrap();
        assert_eq!(
            (found.source, found.workloads[0].name.as_str()),
            (Source::Configmap, "new")
        );
        store.set_watched(Arc::new(index("docker.io/library/app:v2", "new")));
        let found = store.lookup("docker.io/library/app:v1").await.unwrap();
        assert_eq!(found.source, Source::Configmap);
        assert!(
            found.workloads.is_empty(),
            "the file's stale entry is not used"
        );
        // And no older copy is kept beside it, nor taken in later.
        assert!(store.file.load().is_none());
        store.set_file(index("docker.io/library/app:v1", "older"));
        assert!(store.file.load().is_none());
        assert!(store.configmap.load().is_none() && store.scanned.load().is_none());
    }
}
