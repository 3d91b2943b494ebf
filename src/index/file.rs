//! The mounted index: `--index-file` and its `index.json.gz` sibling, kept
//! current as kubelet updates the ConfigMap volume.
//!
//! Kubelet updates a ConfigMap volume by writing a new timestamped directory
//! and atomically swapping the `..data` symlink, so a watch on the file
//! itself fires once and then goes deaf. We watch the directory, debounce,
//! re-read through the stable path, skip unchanged content by hash, and keep
//! a periodic re-read as a safety net. A broken new file leaves the last
//! good index in use.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};
use tokio_util::sync::CancellationToken;

use crate::index::store::{IndexStore, log_report};
use crate::index::{Limits, content_hash, newest};
use crate::metrics::Metrics;

/// Quiet time after a file event before re-reading: kubelet's swap is a
/// burst of events.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Where the index is read from.
#[derive(Debug, Clone)]
pub struct IndexFile {
    pub path: PathBuf,
    /// A copy compiled into the binary (`serve --demo`), used when the path
    /// does not exist, so the demo works from any directory.
    pub embedded: Option<&'static str>,
}

/// The memory limit of this process's container, `None` when there is
/// none: cgroup v2 `memory.max`, else cgroup v1 `memory.limit_in_bytes`.
pub(crate) fn memory_limit() -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    parse_memory_limit(
        read("/sys/fs/cgroup/memory.max").as_deref(),
        read("/sys/fs/cgroup/memory/memory.limit_in_bytes").as_deref(),
    )
}

/// The limit in the cgroup files' contents. v2 says `max` for none; v1
/// says a number near 2^63 (its page counter's maximum).
pub(crate) fn parse_memory_limit(v2: Option<&str>, v1: Option<&str>) -> Option<u64> {
    let bytes = |s: &str| {
        s.trim()
            .parse::<u64>()
            .ok()
            .filter(|n| (1..1 << 60).contains(n))
    };
    match v2 {
        Some(s) => bytes(s),
        None => v1.and_then(bytes),
    }
}

/// The bytes of `index.json` and `index.json.gz`, each when present.
type RawIndex = (Option<Vec<u8>>, Option<Vec<u8>>);

#[derive(Debug, thiserror::Error)]
pub(crate) enum FileError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl IndexFile {
    /// `index.json.gz` beside `index.json`.
    pub(crate) fn gz_path(&self) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(".gz");
        self.path.with_file_name(name)
    }

    /// Reads the raw bytes (JSON, gzip), `None` for each that is absent.
    /// Each is read up to one byte over the bound, which is enough for the
    /// parser to refuse it as too large without reading a huge file whole.
    fn read_raw(&self, limits: &Limits) -> Result<RawIndex, FileError> {
        let read = |p: &Path| {
            let io = |source| FileError::Io {
                path: p.to_owned(),
                source,
            };
            let file = match std::fs::File::open(p) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io(e)),
            };
            let mut bytes = Vec::new();
            file.take(limits.max_index_bytes.saturating_add(1))
                .read_to_end(&mut bytes)
                .map_err(io)?;
            Ok(Some(bytes))
        };
        let json = read(&self.path)?;
        let gz = read(&self.gz_path())?;
        if json.is_none() && gz.is_none() {
            return Ok((self.embedded.map(|s| s.as_bytes().to_vec()), None));
        }
        Ok((json, gz))
    }
}

/// Keeps `store`'s file index current until `shutdown`.
pub struct FileWatch {
    file: IndexFile,
    store: Arc<IndexStore>,
    metrics: Arc<Metrics>,
    last_hash: Option<u64>,
}

impl FileWatch {
    pub fn new(file: IndexFile, store: Arc<IndexStore>, metrics: Arc<Metrics>) -> FileWatch {
        FileWatch {
            file,
            store,
            metrics,
            last_hash: None,
        }
    }

    /// Reads the file now; returns whether an index is loaded from it.
    pub fn reload(&mut self) -> bool {
        let limits = self.store.limits();
        let raw = match self.file.read_raw(&limits) {
            Ok(raw) => raw,
            Err(e) => {
                self.count("file-unreadable");
                tracing::error!(error = %e, "index file unreadable; keeping the last good index");
                return self.last_hash.is_some();
            }
        };
        let (json, gz) = raw;
        if json.is_none() && gz.is_none() {
            if self.last_hash.is_some() {
                tracing::warn!(path = %self.file.path.display(), "index file disappeared; keeping the last good index");
            }
            return self.last_hash.is_some();
        }
        let hash = content_hash(json.as_deref(), gz.as_deref());
        if self.last_hash == Some(hash) {
            return true;
        }
        match newest(json.as_deref(), gz.as_deref(), &limits) {
            Ok(Some((index, report))) => {
                log_report(&report, "file", &self.metrics);
                tracing::info!(
                    path = %self.file.path.display(),
                    images = index.len(),
                    generated_at = %index.generated_at.map(|t| t.to_string()).unwrap_or_default(),
                    "index loaded"
                );
                self.store.set_file(index);
                self.store.set_file_hash(hash);
                self.last_hash = Some(hash);
                self.count("file-ok");
                true
            }
            Ok(None) => self.last_hash.is_some(),
            Err(e) => {
                self.count("file-error");
                tracing::error!(path = %self.file.path.display(), error = %e, "index file is broken; keeping the last good index");
                self.last_hash.is_some()
            }
        }
    }

    fn count(&self, result: &'static str) {
        self.metrics.index.reload(result);
    }

    /// Watches the file's directory and re-reads every `interval` as well.
    pub async fn run(mut self, interval: Duration, shutdown: CancellationToken) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let dir = match self.file.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        // The watcher lives as long as this task; dropping it stops the watch.
        let _watcher = match notify::recommended_watcher(move |event| {
            let _ = tx.send(event);
        }) {
            Ok(mut w) => match w.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => Some(w),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the index directory; re-reading every {interval:?}");
                    None
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "no file watcher; re-reading every {interval:?}");
                None
            }
        };
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await; // the first tick is immediate; the caller just loaded
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
                event = rx.recv() => {
                    if event.is_none() {
                        // The watcher is gone; fall back to the ticker alone.
                        ticker.tick().await;
                    } else {
                        // Let the burst settle, then read once.
                        while let Ok(Some(_)) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
                    }
                }
            }
            let file = self.file.clone();
            // File reads block: keep them off the async workers.
            let this = tokio::task::spawn_blocking(move || {
                self.reload();
                self
            });
            self = match this.await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, path = %file.path.display(), "index reload panicked; stopping the file watch");
                    return;
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_limit_from_cgroup_files() {
        let mib = 1024 * 1024;
        let table: &[(Option<&str>, Option<&str>, Option<u64>)] = &[
            (Some("134217728\n"), None, Some(128 * mib)),
            (Some("max\n"), None, None),
            // v2 present: v1 is not consulted.
            (Some("max\n"), Some("134217728\n"), None),
            (None, Some("268435456\n"), Some(256 * mib)),
            // v1's "unlimited".
            (None, Some("9223372036854771712\n"), None),
            (None, Some("0"), None),
            (None, Some("garbage"), None),
            (None, None, None),
        ];
        for &(v2, v1, want) in table {
            assert_eq!(parse_memory_limit(v2, v1), want, "{v2:?} {v1:?}");
        }
    }
}
