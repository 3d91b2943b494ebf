//! `pushroll serve`: the Pub/Sub push endpoint, and with `--indexer` the
//! watch indexer in the same process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Cluster, OpenIndex, SourceConfig, bind, liveness, open_index};
use crate::auth::{AuthConfig, Authenticator};
use crate::index::file::FileWatch;
use crate::index::store::IndexStore;
use crate::indexer::{self, WatchSettings, WatchState};
use crate::metrics::Metrics;
use crate::policy::Settings;
use crate::pull::{self, PullConfig};
use crate::restart::Restarter;
use crate::server::conn::ConnLimits;
use crate::server::pipeline::Pipeline;
use crate::server::webhooks::{RESOLVE_TIMEOUT, Webhooks};
use crate::server::{self, AppState, Check};
use crate::webhook::resolve::Resolver;
use crate::webhook::verify::Secrets;
use crate::workload::{Mode, NamespaceFilter};

/// Everything `serve` needs, as plain data.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub index: SourceConfig,
    pub dry_run: bool,
    /// `--mode`: how a push rolls a workload that names no mode.
    pub mode: Mode,
    /// `--opt-in`: only workloads annotated `pushroll.io/restart: "true"`.
    pub opt_in: bool,
    /// `--notify-url`, `--notify-format`.
    pub notify: crate::notify::NotifyConfig,
    /// Run without any cluster (`--demo`).
    pub offline: bool,
    pub auth: AuthConfig,
    pub namespaces: NamespaceFilter,
    /// `--indexer`: the in-process watch's settings.
    pub indexer: Option<WatchSettings>,
    pub max_body_bytes: usize,
    pub conn: ConnLimits,
    pub max_concurrent_restarts: usize,
    pub request_timeout: Duration,
    pub shutdown_timeout: Duration,
    /// `--pull-subscription`: also receive these subscriptions by pull.
    pub pull: Option<PullConfig>,
    /// `--webhook-secrets`: a file per registry webhook source.
    pub webhook_secrets: std::path::PathBuf,
    /// `--registry-endpoint HOST=URL`.
    pub registry_endpoints: std::collections::BTreeMap<String, String>,
}

/// Runs until `shutdown` is cancelled and in-flight pushes have drained.
pub async fn run(config: ServeConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let metrics = Metrics::new();
    let auth = Authenticator::start(config.auth.clone(), metrics.clone(), shutdown.clone());
    if let Some(warning) = auth.warning() {
        tracing::warn!("{warning}");
    }
    let cluster = Cluster::connect_unless(
        config.offline,
        &config.index.cluster,
        why_cluster(&config),
        &metrics,
    )
    .await?;
    let OpenIndex { store, file_watch } = open_index(
        &config.index,
        cluster.as_ref(),
        &config.namespaces.include,
        &metrics,
    )
    .await?;
    let indexer = match (&config.indexer, &cluster) {
        (None, _) => None,
        (Some(_), None) => anyhow::bail!("--indexer needs a cluster, and --demo contacts none"),
        (Some(settings), Some(cluster)) => Some(start_indexer(
            settings,
            &config.namespaces,
            cluster,
            &store,
            &metrics,
            &shutdown,
        )),
    };
    log_missing_index(&store, indexer.is_some());
    keep_index_current(&store, file_watch, config.index.reload_interval, &shutdown);
    if config.dry_run {
        tracing::info!("dry run: nothing will be patched");
    }
    let restarter = Restarter::new(
        cluster.map(|c| c.kube),
        config.namespaces.clone(),
        config.dry_run,
        Settings {
            mode: config.mode,
            opt_in: config.opt_in,
        },
        config.max_concurrent_restarts,
        metrics.clone(),
        crate::notify::Notifier::from_config(&config.notify, metrics.clone()),
    );
    let (live, indexer) = indexer.unzip();
    let pipeline = Arc::new(Pipeline {
        store,
        restarter,
        metrics: metrics.clone(),
        timeout: config.request_timeout,
        dry_run: config.dry_run,
    });
    // Pulled messages take the pipeline /push takes (`pull` is thin).
    let pulling = match &config.pull {
        None => None,
        Some(pull) => Some(
            pull::start(
                pull,
                pipeline.clone(),
                shutdown.clone(),
                config.shutdown_timeout,
            )
            .await
            .context("starting the Pub/Sub pull")?,
        ),
    };
    let (mut ready, mut live): (Vec<Check>, Vec<Check>) = (Vec::new(), live.into_iter().collect());
    if let Some(p) = &pulling {
        ready.extend(p.ready.iter().cloned());
        live.extend(p.live.iter().cloned());
    }
    let state = Arc::new(AppState {
        auth,
        pipeline,
        max_body_bytes: config.max_body_bytes,
        ready,
        live,
        webhooks: Webhooks {
            secrets: Secrets::new(&config.webhook_secrets),
            resolver: Resolver::new(config.registry_endpoints.clone(), RESOLVE_TIMEOUT),
        },
    });
    let listener = bind(config.listen).await?;
    // After SIGTERM, the HTTP drain and the pull drain (stop receiving,
    // finish and ack what is in hand) run side by side; both end before
    // the process does.
    let http = server::conn::serve(
        listener,
        server::router(state),
        config.conn,
        metrics,
        shutdown,
        config.shutdown_timeout,
    );
    let pulled = async {
        if let Some(p) = pulling {
            p.drained().await;
        }
    };
    tokio::join!(http, pulled);
    // After SIGTERM the indexer releases its Lease; after its failure, its
    // error is the process's.
    if let Some(task) = indexer {
        task.await.context("the indexer task")??;
    }
    Ok(())
}

/// Why a missing cluster configuration is an error (`None`: it is not).
fn why_cluster(config: &ServeConfig) -> Option<&'static str> {
    if config.indexer.is_some() {
        Some("--indexer watches the cluster's workloads and needs one")
    } else if !config.dry_run {
        Some("use --dry-run or --demo to run without a cluster")
    } else {
        None
    }
}

/// `--indexer`: the watch of `index --watch`, in this process. It also hands
/// every index it builds to the store, on every replica. Returns its
/// liveness check for `/healthz` and its task.
fn start_indexer(
    settings: &WatchSettings,
    namespaces: &NamespaceFilter,
    cluster: &Cluster,
    store: &Arc<IndexStore>,
    metrics: &Arc<Metrics>,
    shutdown: &CancellationToken,
) -> (Check, JoinHandle<anyhow::Result<()>>) {
    // Index what may be restarted; exclusions apply at restart time
    // (reported `excluded`), as with the separate indexer and the scan.
    let namespaces_given = namespaces;
    let namespaces = NamespaceFilter {
        include: namespaces.include.clone(),
        exclude: Vec::new(),
    };
    let mut watch_config = settings
        .clone()
        .config(namespaces, cluster.configmap.clone());
    // The controller (releases, rollout reports, undos) stays inside every
    // bound, exclusions included: nothing is acted on in an excluded
    // namespace (see `WatchConfig::bounds`).
    watch_config.bounds = namespaces_given.clone();
    let watch_state = Arc::new(WatchState::default());
    let live = liveness(watch_state.clone(), watch_config.settings.stall_timeout);
    tracing::info!(identity = %settings.identity, lease = %settings.lease_name, "indexer: watching workloads in this process");
    let sink = store.clone();
    let publish: indexer::Publish = Box::new(move |index| sink.set_watched(index));
    let task = indexer::watch(
        cluster.kube.clone(),
        watch_config,
        watch_state,
        metrics.clone(),
        Some(publish),
        shutdown.clone(),
    );
    let shutdown = shutdown.clone();
    let task = tokio::spawn(async move {
        let result = task.await;
        if let Err(e) = &result {
            // Serving on from an index nobody updates would be a silent
            // failure: stop, exit non-zero, get restarted.
            tracing::error!(error = %e, "the indexer stopped; shutting down");
            shutdown.cancel();
        }
        result
    });
    (live, task)
}

fn log_missing_index(store: &IndexStore, indexer: bool) {
    if store.is_loaded() {
        return;
    }
    if indexer {
        // Expected on a fresh install: the watch's lists are the index.
        tracing::info!(
            "no index yet: /readyz and pushes answer 503 until the watch has listed the workloads"
        );
    } else {
        tracing::warn!("no index loaded yet: /readyz answers 503 and pushes 503 until one is");
    }
}

/// Follows the mounted file; with no index at all, also retries the
/// ConfigMap until one loads.
fn keep_index_current(
    store: &Arc<IndexStore>,
    file_watch: FileWatch,
    every: Duration,
    shutdown: &CancellationToken,
) {
    tokio::spawn(file_watch.run(every, shutdown.clone()));
    if store.has_fallback() {
        tokio::spawn(retry_configmap_until_loaded(
            store.clone(),
            every,
            shutdown.clone(),
        ));
    }
}

/// With no index at all, keep trying the ConfigMap so that readiness
/// recovers without waiting for a push.
async fn retry_configmap_until_loaded(
    store: Arc<IndexStore>,
    every: Duration,
    shutdown: CancellationToken,
) {
    while !store.is_loaded() {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let _ = store.refresh_configmap(false).await;
    }
}
