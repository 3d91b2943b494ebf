//! pushroll: restarts Kubernetes workloads the moment a new container image
//! is pushed (Artifact Registry → Pub/Sub push → `POST /push`).
//!
//! A push is parsed in [`push`], verified in [`auth`], looked up in
//! [`lookup`] (the index format is [`index`], the mounted file
//! [`index_file`]), turned into patches in [`plan`] and carried out by
//! [`restart`] through the thin Kubernetes edge [`k8s`]. [`server`] is the
//! HTTP edge and [`http_error`] the one place errors become status codes.

#![forbid(unsafe_code)]

pub mod auth;
pub mod cli;
pub mod http_error;
pub mod index;
pub mod index_builder;
pub mod index_file;
pub mod index_writer;
pub mod indexer;
pub mod k8s;
pub mod lookup;
pub mod metrics;
pub mod plan;
pub mod push;
pub mod reference;
pub mod restart;
pub mod server;

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::cli::ConnLimits;
use crate::cli::{
    AuthMode, Cli, Command, IndexCmdArgs, IndexConfig, LogArgs, LogFormat, LookupArgs, ServeConfig,
};
use crate::index_file::{FileWatch, IndexFile};
use crate::index_writer::ConfigMapRef;
use crate::k8s::Kube;
use crate::lookup::IndexStore;
use crate::metrics::Metrics;
use crate::restart::Restarter;
use crate::server::AppState;

/// Runs a parsed command line to completion.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    init_logging(&cli.log);
    match cli.command {
        Command::Serve(args) => {
            let config = args.resolve()?;
            let shutdown = CancellationToken::new();
            tokio::spawn(cancel_on_signal(shutdown.clone()));
            serve(config, shutdown).await
        }
        Command::Index(args) => {
            let shutdown = CancellationToken::new();
            tokio::spawn(cancel_on_signal(shutdown.clone()));
            index(args, shutdown).await
        }
        Command::Lookup(args) => lookup(args).await,
    }
}

fn init_logging(args: &LogArgs) {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = match args.log_format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
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

/// SIGTERM (kubelet) or SIGINT (Ctrl-C) starts the graceful shutdown.
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

/// Builds the index store: the Kubernetes client when one is configured, the
/// file loaded once, the ConfigMap read when the file gave nothing.
/// `require_cluster`: why a missing cluster configuration is an error
/// (`None`: answer from the index alone). Returns the client with the index
/// ConfigMap it reads.
async fn build_store(
    config: &IndexConfig,
    namespaces_to_scan: &[String],
    offline: bool,
    require_cluster: Option<&str>,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<(Arc<IndexStore>, Option<(Kube, ConfigMapRef)>, FileWatch)> {
    let kube = if offline {
        tracing::info!("demo mode: no cluster is contacted");
        None
    } else {
        match k8s::connect(config.api_timeout, metrics.clone()).await {
            Ok(connected) => Some(connected),
            Err(e) => match require_cluster {
                None => {
                    tracing::warn!(error = %e, "no Kubernetes configuration; answering from the index alone");
                    None
                }
                Some(why) => {
                    return Err(e).context(format!(
                        "no Kubernetes configuration (in-cluster service account, KUBECONFIG or ~/.kube/config); {why}"
                    ));
                }
            },
        }
    };
    let fallback = kube
        .as_ref()
        .map(|(k, ns)| (k.clone(), config.configmap(ns)));
    if let Some((_, cm)) = &fallback {
        tracing::info!(configmap = %format!("{}/{}", cm.namespace, cm.name), "index ConfigMap fallback");
    }
    let limits = index_limits(config);
    let store = IndexStore::new(
        fallback.clone(),
        config.on_miss,
        config.miss_refresh_interval,
        metrics.clone(),
    );
    let store = Arc::new(
        store
            .with_scanner(lookup::Scanner {
                namespaces: namespaces_to_scan.to_vec(),
                interval: config.scan_interval,
            })
            .with_limits(limits),
    );
    let file = IndexFile {
        path: config.file.clone(),
        embedded: config.embedded,
    };
    let mut watch = FileWatch::new(file, store.clone(), metrics.clone());
    let (loaded, watch) = tokio::task::spawn_blocking(move || (watch.reload(), watch)).await?;
    if !loaded && store.has_fallback() {
        tracing::info!(path = %config.file.display(), "no index file; reading the index ConfigMap");
        let _ = store.refresh_configmap(true).await;
    }
    Ok((store, fallback, watch))
}

/// `--max-index-bytes`, or the bound the container's memory limit allows.
fn index_limits(config: &IndexConfig) -> index::Limits {
    match config.max_index_bytes {
        Some(n) => {
            tracing::info!(max_index_bytes = n, "index size bound (--max-index-bytes)");
            index::Limits::new(n)
        }
        None => {
            let memory_limit = index_file::memory_limit();
            let limits = index::Limits::for_memory_limit(memory_limit);
            tracing::info!(
                max_index_bytes = limits.max_index_bytes,
                memory_limit,
                "index size bound (from the memory limit; --max-index-bytes sets it)"
            );
            limits
        }
    }
}

/// `pushroll serve`: runs until `shutdown` is cancelled and in-flight pushes
/// have drained.
pub async fn serve(config: ServeConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let metrics = Metrics::new();
    let auth = match config.auth.mode {
        AuthMode::None => Authenticator::None,
        AuthMode::Google => Authenticator::Google(auth::GoogleVerifier::start_with(
            config.auth.clone(),
            config.max_key_age,
            metrics.clone(),
            shutdown.clone(),
        )),
    };
    if let Some(warning) = auth.warning() {
        tracing::warn!("{warning}");
    }
    let require_cluster = if config.indexer.is_some() {
        Some("--indexer watches the cluster's workloads and needs one")
    } else if !config.dry_run {
        Some("use --dry-run or --demo to run without a cluster")
    } else {
        None
    };
    let (store, kube, watch) = build_store(
        &config.index,
        &config.namespaces.include,
        config.offline,
        require_cluster,
        &metrics,
    )
    .await?;
    // `--indexer`: the watch of `index --watch`, in this process. It also
    // hands every index it builds to the store, on every replica.
    let mut live: Option<server::Check> = None;
    let indexer = match (&config.indexer, &kube) {
        (None, _) => None,
        (Some(_), None) => anyhow::bail!("--indexer needs a cluster, and --demo contacts none"),
        (Some(args), Some((kube, configmap))) => {
            // Index what may be restarted; exclusions apply at restart time
            // (reported `excluded`), as with the separate indexer and the scan.
            let namespaces = plan::NamespaceFilter {
                include: config.namespaces.include.clone(),
                exclude: Vec::new(),
            };
            let watch_config = args.config(namespaces, configmap.clone());
            let watch_state = Arc::new(indexer::WatchState::default());
            let stall_timeout = watch_config.stall_timeout;
            let probe_state = watch_state.clone();
            live = Some(Arc::new(move || probe_state.is_live(stall_timeout)));
            tracing::info!(identity = %watch_config.identity, lease = %watch_config.lease_name, "indexer: watching workloads in this process");
            let sink = store.clone();
            let publish: indexer::Publish = Box::new(move |index| sink.set_watched(index));
            let task = indexer::watch(
                kube.clone(),
                watch_config,
                watch_state,
                metrics.clone(),
                Some(publish),
                shutdown.clone(),
            );
            let shutdown = shutdown.clone();
            Some(tokio::spawn(async move {
                let result = task.await;
                if let Err(e) = &result {
                    // Serving on from an index nobody updates would be a
                    // silent failure: stop, exit non-zero, get restarted.
                    tracing::error!(error = %e, "the indexer stopped; shutting down");
                    shutdown.cancel();
                }
                result
            }))
        }
    };
    if !store.is_loaded() {
        if indexer.is_some() {
            // Expected on a fresh install: the watch's lists are the index.
            tracing::info!(
                "no index yet: /readyz and pushes answer 503 until the watch has listed the workloads"
            );
        } else {
            tracing::warn!("no index loaded yet: /readyz answers 503 and pushes 503 until one is");
        }
    }
    tokio::spawn(watch.run(config.index.reload_interval, shutdown.clone()));
    if store.has_fallback() {
        tokio::spawn(retry_configmap_until_loaded(
            store.clone(),
            config.index.reload_interval,
            shutdown.clone(),
        ));
    }
    if config.dry_run {
        tracing::info!("dry run: nothing will be patched");
    }
    let restarter = Restarter::new(
        kube.map(|(k, _)| k),
        config.namespaces.clone(),
        config.dry_run,
        config.max_concurrent_restarts,
        metrics.clone(),
    );
    let state = Arc::new(AppState {
        auth,
        store,
        restarter,
        metrics,
        max_body_bytes: config.max_body_bytes,
        request_timeout: config.request_timeout,
        dry_run: config.dry_run,
        live,
    });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    let limits = ConnLimits {
        max_header_bytes: config.max_header_bytes,
        header_read_timeout: config.header_read_timeout,
        idle_timeout: config.idle_timeout,
        max_connections: config.max_connections,
    };
    let metrics = state.metrics.clone();
    server::serve(
        listener,
        server::router(state),
        limits,
        metrics,
        shutdown,
        config.shutdown_timeout,
    )
    .await;
    // After SIGTERM the indexer releases its Lease; after its failure, its
    // error is the process's.
    if let Some(task) = indexer {
        task.await.context("the indexer task")??;
    }
    Ok(())
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

/// `pushroll lookup IMAGE`.
async fn lookup(args: LookupArgs) -> anyhow::Result<()> {
    let config = args.index.resolve(false)?;
    let reference = reference::Reference::parse(&args.image)
        .with_context(|| format!("{:?} is not an image reference", args.image))?;
    anyhow::ensure!(
        !reference.is_pinned(),
        "{} is pinned by digest: pinned images never match a push",
        args.image
    );
    let metrics = Metrics::new();
    let (store, _, _) = build_store(&config, &[], false, None, &metrics).await?;
    let key = reference.tagged();
    let found = store.lookup(&key).await?;
    if args.json {
        let body = serde_json::json!({
            "image": key,
            "source": found.source,
            "workloads": found.workloads,
        });
        println!("{body}");
    } else if found.workloads.is_empty() {
        println!("no workload uses {key} (source: {})", found.source.as_str());
    } else {
        println!(
            "{:<12} {:<24} {:<32} CONTAINERS",
            "KIND", "NAMESPACE", "NAME"
        );
        for w in &found.workloads {
            println!(
                "{:<12} {:<24} {:<32} {}",
                w.kind.as_str(),
                w.namespace,
                w.name,
                w.containers.join(",")
            );
        }
    }
    Ok(())
}

/// `pushroll index`: one scan to the ConfigMap or `--output`; with
/// `--watch`, the incremental indexer with leader election.
async fn index(args: IndexCmdArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let (cm_namespace, cm_name) = cli::parse_configmap(&args.index_configmap)?;
    let namespaces = plan::NamespaceFilter {
        include: args.namespace.clone(),
        exclude: args.exclude_namespace.clone(),
    };
    let metrics = Metrics::new();
    let (kube, default_ns) = k8s::connect(args.api_timeout, metrics.clone()).await.context(
        "no Kubernetes configuration (in-cluster service account, KUBECONFIG or ~/.kube/config)",
    )?;
    let configmap = IndexConfig::configmap_ref(cm_namespace, cm_name, &default_ns);
    if !args.watch {
        let started = std::time::Instant::now();
        let builder = indexer::scan(&kube, &namespaces).await?;
        let index = builder.build(Some(jiff::Timestamp::now()));
        tracing::info!(
            workloads = builder.workload_count(),
            images = index.len(),
            took_ms = started.elapsed().as_secs_f64() * 1000.0,
            "scanned"
        );
        return match args.output.as_deref() {
            Some("-") => {
                use std::io::Write as _;
                let mut out = std::io::stdout().lock();
                out.write_all(&index.to_json())?;
                out.write_all(b"\n")?;
                Ok(())
            }
            Some(path) => {
                std::fs::write(path, index.to_json()).with_context(|| format!("writing {path}"))
            }
            None => indexer::write(&kube, &configmap, &index, &metrics)
                .await
                .map(drop)
                .map_err(Into::into),
        };
    }
    let config = args.watch_args.config(namespaces, configmap);
    let state = Arc::new(indexer::WatchState::default());
    let listener = tokio::net::TcpListener::bind(cli::parse_listen(&args.listen)?)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(addr = %listener.local_addr()?, "listening");
    let ready_state = state.clone();
    let ready: server::Check = Arc::new(move || {
        if ready_state.is_ready() {
            Ok(())
        } else if !ready_state
            .synced
            .load(std::sync::atomic::Ordering::Acquire)
        {
            Err("the initial lists of workloads are not done".to_owned())
        } else {
            Err("leader, and the index has not been written yet".to_owned())
        }
    });
    let (live_state, stall_timeout) = (state.clone(), config.stall_timeout);
    let live: server::Check = Arc::new(move || live_state.is_live(stall_timeout));
    let router = server::probe_router(metrics.clone(), ready, live);
    let limits = ConnLimits::with_defaults(16 * 1024);
    let http = tokio::spawn(server::serve(
        listener,
        router,
        limits,
        metrics.clone(),
        shutdown.clone(),
        Duration::from_secs(5),
    ));
    let result = indexer::watch(kube, config, state, metrics, None, shutdown.clone()).await;
    shutdown.cancel();
    let _ = http.await;
    result
}
