//! The subcommands, one file each. Each takes its plain config (built by
//! `cli`, or directly by tests) and wires the parts together; what they
//! share lives here: logging, signals, the cluster connection, and opening
//! the index with its fallbacks.

pub mod approve;
pub mod index;
pub mod lookup;
pub mod pending;
pub mod serve;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::index::Limits;
use crate::index::configmap::ConfigMapRef;
use crate::index::file::{FileWatch, IndexFile, memory_limit};
use crate::index::store::{IndexStore, OnMiss, Scanner};
use crate::indexer::WatchState;
use crate::k8s::{self, Kube};
use crate::metrics::Metrics;
use crate::server::Check;

/// How to reach the cluster and its index ConfigMap.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `None`: the pod's namespace (`POD_NAMESPACE`), else the kubeconfig's.
    pub configmap_namespace: Option<String>,
    pub configmap_name: String,
    /// Timeout of each API call.
    pub api_timeout: Duration,
}

/// Where the index comes from: the mounted file, then the cluster.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub file: PathBuf,
    /// Stands in for a missing `file` (the demo's compiled-in index).
    pub embedded: Option<&'static str>,
    pub cluster: ClusterConfig,
    pub on_miss: OnMiss,
    pub miss_refresh_interval: Duration,
    pub scan_interval: Duration,
    pub reload_interval: Duration,
    /// `--max-index-bytes`; `None`: derived from the memory limit.
    pub max_index_bytes: Option<u64>,
}

/// Logs to stderr: JSON lines in a cluster, readable text on a terminal.
pub fn init_logging(filter: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // Ignore "already set": tests may run several commands in one process.
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    } else {
        builder.try_init()
    };
}

/// A token cancelled by SIGTERM (kubelet) or SIGINT (Ctrl-C): the start of
/// the graceful shutdown.
pub fn shutdown_on_signal() -> CancellationToken {
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    shutdown
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => tracing::info!("SIGINT received"),
            _ = term.recv() => tracing::info!("SIGTERM received"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    shutdown.cancel();
}

pub(crate) const NO_CLUSTER: &str =
    "no Kubernetes configuration (in-cluster service account, KUBECONFIG or ~/.kube/config)";

/// A connected cluster: the client, and the index ConfigMap it holds.
#[derive(Clone)]
pub(crate) struct Cluster {
    pub kube: Kube,
    pub configmap: ConfigMapRef,
}

impl Cluster {
    /// Connects by kube-rs' usual inference (in-cluster, `KUBECONFIG`,
    /// `~/.kube/config`).
    pub async fn connect(
        config: &ClusterConfig,
        metrics: &Arc<Metrics>,
    ) -> Result<Cluster, kube::Error> {
        let (kube, default_namespace) = k8s::connect(config.api_timeout, metrics.clone()).await?;
        let configmap = ConfigMapRef::resolve(
            config.configmap_namespace.as_deref(),
            &config.configmap_name,
            &default_namespace,
        );
        Ok(Cluster { kube, configmap })
    }

    /// Connects unless `offline`. Without a configuration: an error saying
    /// `why` one is needed, or (`why` is `None`) no cluster.
    pub(crate) async fn connect_unless(
        offline: bool,
        config: &ClusterConfig,
        why: Option<&str>,
        metrics: &Arc<Metrics>,
    ) -> anyhow::Result<Option<Cluster>> {
        if offline {
            tracing::info!("demo mode: no cluster is contacted");
            return Ok(None);
        }
        match (Cluster::connect(config, metrics).await, why) {
            (Ok(cluster), _) => Ok(Some(cluster)),
            (Err(e), None) => {
                tracing::warn!(error = %e, "no Kubernetes configuration; answering from the index alone");
                Ok(None)
            }
            (Err(e), Some(why)) => Err(e).context(format!("{NO_CLUSTER}; {why}")),
        }
    }
}

/// The index store and the watch of its mounted file (not yet running).
pub(crate) struct OpenIndex {
    pub store: Arc<IndexStore>,
    pub file_watch: FileWatch,
}

/// Opens the index: the store with its fallbacks (the ConfigMap and, with
/// `--on-miss scan`, the cluster scan of `scan_namespaces`), the file loaded
/// once, and the ConfigMap read when the file gave nothing.
pub(crate) async fn open_index(
    config: &SourceConfig,
    cluster: Option<&Cluster>,
    scan_namespaces: &[String],
    metrics: &Arc<Metrics>,
) -> anyhow::Result<OpenIndex> {
    let fallback = cluster.map(|c| (c.kube.clone(), c.configmap.clone()));
    if let Some((_, cm)) = &fallback {
        tracing::info!(configmap = %cm, "index ConfigMap fallback");
    }
    let store = IndexStore::new(
        fallback,
        config.on_miss,
        config.miss_refresh_interval,
        metrics.clone(),
    )
    .with_scanner(Scanner {
        namespaces: scan_namespaces.to_vec(),
        interval: config.scan_interval,
    })
    .with_limits(index_limits(config));
    let store = Arc::new(store);
    let file = IndexFile {
        path: config.file.clone(),
        embedded: config.embedded,
    };
    let mut watch = FileWatch::new(file, store.clone(), metrics.clone());
    let (loaded, file_watch) = tokio::task::spawn_blocking(move || (watch.reload(), watch)).await?;
    if !loaded && store.has_fallback() {
        tracing::info!(path = %config.file.display(), "no index file; reading the index ConfigMap");
        let _ = store.refresh_configmap(true).await;
    }
    Ok(OpenIndex { store, file_watch })
}

/// `/healthz` of a process that runs the watch: live while no task of the
/// watch is stalled past `stall_timeout`.
pub(crate) fn liveness(state: Arc<WatchState>, stall_timeout: Duration) -> Check {
    Arc::new(move || state.is_live(stall_timeout))
}

/// Binds the HTTP listener and says where.
pub(crate) async fn bind(addr: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, "listening");
    Ok(listener)
}

/// `--max-index-bytes`, or the bound the container's memory limit allows.
fn index_limits(config: &SourceConfig) -> Limits {
    match config.max_index_bytes {
        Some(n) => {
            tracing::info!(max_index_bytes = n, "index size bound (--max-index-bytes)");
            Limits::new(n)
        }
        None => {
            let memory_limit = memory_limit();
            let limits = Limits::for_memory_limit(memory_limit);
            tracing::info!(
                max_index_bytes = limits.max_index_bytes,
                memory_limit,
                "index size bound (from the memory limit; --max-index-bytes sets it)"
            );
            limits
        }
    }
}
