//! `pushroll index`: one scan written to the ConfigMap or a file; with
//! `--watch`, the incremental indexer with leader election, and its probes.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use super::{Cluster, ClusterConfig, NO_CLUSTER, bind, liveness};
use crate::index::configmap::write;
use crate::index::scan::scan;
use crate::indexer::{self, WatchSettings, WatchState};
use crate::metrics::Metrics;
use crate::server::conn::ConnLimits;
use crate::server::{self, Check};
use crate::workload::NamespaceFilter;

/// Everything `index` needs, as plain data.
#[derive(Debug, Clone)]
pub struct IndexConfig {
    pub cluster: ClusterConfig,
    pub namespaces: NamespaceFilter,
    pub mode: IndexMode,
}

#[derive(Debug, Clone)]
pub enum IndexMode {
    /// Scan once; write the ConfigMap, or `output` when given.
    Once { output: Option<Output> },
    /// `--watch`: keep the ConfigMap current; probes and metrics on `listen`.
    Watch {
        listen: SocketAddr,
        settings: WatchSettings,
    },
}

/// Where a one-off scan's index goes instead of the ConfigMap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// `--output -`.
    Stdout,
    File(PathBuf),
}

/// Runs to completion (a scan) or until `shutdown` (`--watch`).
pub async fn run(config: IndexConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let metrics = Metrics::new();
    let cluster = Cluster::connect(&config.cluster, &metrics)
        .await
        .context(NO_CLUSTER)?;
    match config.mode {
        IndexMode::Once { output } => {
            scan_once(&cluster, &config.namespaces, output, &metrics).await
        }
        IndexMode::Watch { listen, settings } => {
            let watch_config = settings.config(config.namespaces, cluster.configmap.clone());
            watch(cluster, watch_config, listen, metrics, shutdown).await
        }
    }
}

async fn scan_once(
    cluster: &Cluster,
    namespaces: &NamespaceFilter,
    output: Option<Output>,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    let index = scan(&cluster.kube, namespaces, "scanned").await?;
    match output {
        Some(Output::Stdout) => {
            let mut out = std::io::stdout().lock();
            out.write_all(&index.to_json())?;
            out.write_all(b"\n")?;
            Ok(())
        }
        Some(Output::File(path)) => std::fs::write(&path, index.to_json())
            .with_context(|| format!("writing {}", path.display())),
        None => write(&cluster.kube, &cluster.configmap, &index, metrics)
            .await
            .map(drop)
            .map_err(Into::into),
    }
}

/// `--watch`: the watch, and `/healthz`, `/readyz`, `/metrics` beside it.
async fn watch(
    cluster: Cluster,
    config: indexer::WatchConfig,
    listen: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let state = Arc::new(WatchState::default());
    let listener = bind(listen).await?;
    let live = liveness(state.clone(), config.settings.stall_timeout);
    let router = server::probe_router(metrics.clone(), readiness(state.clone()), live);
    let http = tokio::spawn(server::conn::serve(
        listener,
        router,
        ConnLimits::with_defaults(16 * 1024),
        metrics.clone(),
        shutdown.clone(),
        Duration::from_secs(5),
    ));
    let result = indexer::watch(cluster.kube, config, state, metrics, None, shutdown.clone()).await;
    shutdown.cancel();
    let _ = http.await;
    result
}

/// Ready once the initial lists are done and, as leader, the index written.
fn readiness(state: Arc<WatchState>) -> Check {
    Arc::new(move || {
        if state.is_ready() {
            Ok(())
        } else if !state.synced.load(Ordering::Acquire) {
            Err("the initial lists of workloads are not done".to_owned())
        } else {
            Err("leader, and the index has not been written yet".to_owned())
        }
    })
}
