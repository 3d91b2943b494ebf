//! The indexer: keeps the index ConfigMap current. `pushroll index` scans
//! once; `index --watch` follows the workloads with watches, rebuilds the
//! index incrementally and writes it (debounced, only when it changed) while
//! it holds the Lease. `serve --indexer` runs the same [`watch`] in the
//! server process and also receives each index it builds ([`Publish`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::coordination::v1::LeaseSpec;
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, ResourceExt as _};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::index::{Index, Kind};
use crate::index_builder::{Entry, IndexBuilder, Workload};
use crate::index_writer::{Payload, read_configmap};
use crate::k8s::{Kube, KubeError};
use crate::lookup::ConfigMapRef;
use crate::metrics::{Metrics, ResultLabels};
use crate::plan::NamespaceFilter;

/// Lists every workload of the allowed namespaces into a builder.
pub async fn scan(kube: &Kube, namespaces: &NamespaceFilter) -> Result<IndexBuilder, KubeError> {
    let mut builder = IndexBuilder::new(namespaces.clone());
    let scopes: Vec<Option<&str>> = if namespaces.include.is_empty() {
        vec![None]
    } else {
        namespaces
            .include
            .iter()
            .map(|n| Some(n.as_str()))
            .collect()
    };
    for scope in scopes {
        kube.list_each::<Deployment>(scope, |w| {
            builder.apply(&Entry::of(w));
        })
        .await?;
        kube.list_each::<StatefulSet>(scope, |w| {
            builder.apply(&Entry::of(w));
        })
        .await?;
        kube.list_each::<DaemonSet>(scope, |w| {
            builder.apply(&Entry::of(w));
        })
        .await?;
    }
    Ok(builder)
}

/// Why an index was not written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    TooLarge(#[from] crate::index_writer::TooLarge),
    #[error("writing the index ConfigMap: {0}")]
    Api(#[from] KubeError),
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub changed: bool,
    pub gzip: bool,
    pub bytes: usize,
}

/// Writes `index` to the ConfigMap unless it already holds the same images.
pub async fn write(
    kube: &Kube,
    cm: &ConfigMapRef,
    index: &Index,
    metrics: &Metrics,
) -> Result<Written, WriteError> {
    let started = Instant::now();
    let result = async {
        let payload = Payload::encode(index)?;
        let same = |existing: &k8s_openapi::api::core::v1::ConfigMap| {
            read_configmap(existing).is_some_and(|old| old.same_images(index))
        };
        let changed = kube.write_index_configmap(cm, &payload, same).await?;
        Ok::<_, WriteError>(Written {
            changed,
            gzip: payload.is_gzip(),
            bytes: payload.len(),
        })
    }
    .await;
    let label = match &result {
        Ok(w) if w.changed => "written",
        Ok(_) => "unchanged",
        Err(WriteError::TooLarge(_)) => "too-large",
        Err(WriteError::Api(_)) => "error",
    };
    metrics
        .index_writes
        .get_or_create(&ResultLabels { result: label })
        .inc();
    match &result {
        Ok(w) if w.changed => tracing::info!(
            configmap = %format!("{}/{}", cm.namespace, cm.name),
            images = index.len(),
            bytes = w.bytes,
            gzip = w.gzip,
            took_ms = started.elapsed().as_secs_f64() * 1000.0,
            "index written"
        ),
        Ok(_) => tracing::debug!("index unchanged; nothing written"),
        Err(e) => tracing::error!(error = %e, "index not written"),
    }
    result
}

/// Settings of `index --watch` and `serve --indexer`.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    pub namespaces: NamespaceFilter,
    pub configmap: ConfigMapRef,
    pub debounce: Duration,
    pub lease_name: String,
    pub lease_duration: Duration,
    pub identity: String,
}

impl WatchConfig {
    /// The Lease lives beside the ConfigMap; the holder is the pod
    /// (`POD_NAME`), or this process when not in a pod.
    pub fn new(
        args: &crate::cli::WatchArgs,
        namespaces: NamespaceFilter,
        configmap: ConfigMapRef,
    ) -> WatchConfig {
        let identity = std::env::var("POD_NAME")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("pushroll-indexer-{}", std::process::id()));
        WatchConfig {
            namespaces,
            configmap,
            debounce: args.debounce,
            lease_name: args.lease_name.clone(),
            lease_duration: args.lease_duration,
            identity,
        }
    }
}

/// Receives every index the watch builds, on every replica, leader or not:
/// once the initial lists are done, then after each debounced change.
/// `serve --indexer` puts it in its [`crate::lookup::IndexStore`].
pub type Publish = Box<dyn Fn(Arc<Index>) + Send + Sync>;

/// Shared state of a running watch, for probes.
#[derive(Default)]
pub struct WatchState {
    /// Every kind has finished its initial list.
    pub synced: AtomicBool,
    pub leader: AtomicBool,
    /// As leader, the index has been written (or found current) once.
    pub written: AtomicBool,
}

impl WatchState {
    /// Ready: the initial lists are done and, when leader, the first write.
    pub fn is_ready(&self) -> bool {
        self.synced.load(Ordering::Acquire)
            && (!self.leader.load(Ordering::Acquire) || self.written.load(Ordering::Acquire))
    }
}

/// Follows one kind of workload into the shared builder.
async fn follow<W: Workload>(
    kube: Kube,
    builder: Arc<Mutex<IndexBuilder>>,
    changed: Arc<tokio::sync::Notify>,
    synced: tokio::sync::mpsc::Sender<Kind>,
    namespaces: NamespaceFilter,
    metrics: Arc<Metrics>,
) {
    // One namespace: watch it alone; otherwise watch all and filter.
    let api: Api<W> = match namespaces.include.as_slice() {
        [one] => Api::namespaced(kube.watch_client().clone(), one),
        _ => Api::all(kube.watch_client().clone()),
    };
    let mut buffer: Vec<Entry> = Vec::new();
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    loop {
        let event = match stream.try_next().await {
            Ok(Some(event)) => event,
            Ok(None) => return,
            Err(e) => {
                metrics
                    .watch_errors
                    .get_or_create(&ResultLabels {
                        result: kind_label(W::KIND),
                    })
                    .inc();
                tracing::warn!(kind = %W::KIND, error = %e, "watch error; retrying with backoff");
                continue;
            }
        };
        let did_change = {
            let mut b = builder.lock().await;
            match event {
                watcher::Event::Init => {
                    buffer.clear();
                    false
                }
                watcher::Event::InitApply(obj) => {
                    buffer.push(Entry::of(&obj));
                    false
                }
                watcher::Event::InitDone => {
                    let changed = b.reset(W::KIND, &std::mem::take(&mut buffer));
                    let _ = synced.send(W::KIND).await;
                    changed
                }
                watcher::Event::Apply(obj) => b.apply(&Entry::of(&obj)),
                watcher::Event::Delete(obj) => b.delete(
                    W::KIND,
                    &obj.namespace().unwrap_or_default(),
                    &obj.name_any(),
                ),
            }
        };
        // Changes are counted before events, so that an observer who sees
        // an event counted also sees whether it changed the index.
        if did_change {
            metrics.index_changes.inc();
        }
        metrics
            .watch_events
            .get_or_create(&ResultLabels {
                result: kind_label(W::KIND),
            })
            .inc();
        if did_change {
            changed.notify_one();
        }
    }
}

fn kind_label(kind: Kind) -> &'static str {
    match kind {
        Kind::Deployment => "deployments",
        Kind::StatefulSet => "statefulsets",
        Kind::DaemonSet => "daemonsets",
    }
}

/// Whether `lease` names `identity` as its holder and has not expired at
/// `now`. kube-lease-manager reports changes of leadership, not failed
/// renewals: a leader cut off from its Lease goes on believing it leads
/// while another replica takes over. So the Lease is read before each
/// write (writes are debounced and rare) and a stale belief writes nothing.
pub fn holds_lease(lease: &LeaseSpec, identity: &str, now: jiff::Timestamp) -> bool {
    let (Some(holder), Some(renewed), Some(secs)) = (
        lease.holder_identity.as_deref(),
        lease.renew_time.as_ref(),
        lease.lease_duration_seconds,
    ) else {
        return false;
    };
    holder == identity
        && renewed
            .0
            .checked_add(jiff::SignedDuration::from_secs(i64::from(secs)))
            .is_ok_and(|expires| now < expires)
}

async fn lease_is_ours(kube: &Kube, config: &WatchConfig, metrics: &Metrics) -> bool {
    let lease = kube
        .get_lease(&config.configmap.namespace, &config.lease_name)
        .await;
    let ours = match &lease {
        Ok(lease) => lease
            .spec
            .as_ref()
            .is_some_and(|spec| holds_lease(spec, &config.identity, jiff::Timestamp::now())),
        Err(_) => false,
    };
    if !ours {
        let holder = lease
            .as_ref()
            .ok()
            .and_then(|l| l.spec.as_ref()?.holder_identity.clone());
        let error = lease.as_ref().err().map(ToString::to_string);
        tracing::warn!(identity = %config.identity, ?holder, ?error, "the Lease is not held by this replica (expired, taken over, or unreadable): not writing");
        metrics
            .index_writes
            .get_or_create(&ResultLabels {
                result: "not-lease-holder",
            })
            .inc();
    }
    ours
}

/// Runs the watch until `shutdown`. Returns an error when leader election
/// fails for good, so the process exits non-zero and is restarted.
/// `publish`, when given, receives each index built (see [`Publish`]).
pub async fn watch(
    kube: Kube,
    config: WatchConfig,
    state: Arc<WatchState>,
    metrics: Arc<Metrics>,
    publish: Option<Publish>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let builder = Arc::new(Mutex::new(IndexBuilder::new(config.namespaces.clone())));
    let changed = Arc::new(tokio::sync::Notify::new());
    let (synced_tx, mut synced_rx) = tokio::sync::mpsc::channel(8);
    let mut tasks = tokio::task::JoinSet::new();
    macro_rules! spawn_follow {
        ($t:ty) => {
            tasks.spawn(follow::<$t>(
                kube.clone(),
                builder.clone(),
                changed.clone(),
                synced_tx.clone(),
                config.namespaces.clone(),
                metrics.clone(),
            ))
        };
    }
    spawn_follow!(Deployment);
    spawn_follow!(StatefulSet);
    spawn_follow!(DaemonSet);
    drop(synced_tx);

    // Leader election through a coordination.k8s.io Lease.
    let duration_secs = config.lease_duration.as_secs().max(2);
    let lease =
        kube_lease_manager::LeaseManagerBuilder::new(kube.client().clone(), &config.lease_name)
            .with_namespace(&config.configmap.namespace)
            .with_identity(&config.identity)
            .with_duration(duration_secs)
            .with_grace((duration_secs / 3).max(1))
            .with_field_manager(crate::k8s::FIELD_MANAGER)
            .build()
            .await
            .with_context(|| {
                format!(
                    "starting the leader election on the Lease {}/{}",
                    config.configmap.namespace, config.lease_name
                )
            })?;
    let (mut leader_rx, mut lease_task) = lease.watch().await;

    // Wait for the initial lists of all three kinds.
    let mut pending: std::collections::HashSet<Kind> = Kind::ALL.into_iter().collect();
    while !pending.is_empty() {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            kind = synced_rx.recv() => match kind {
                Some(kind) => { pending.remove(&kind); }
                None => anyhow::bail!("the watches ended before their initial lists"),
            },
        }
    }
    state.synced.store(true, Ordering::Release);
    let count = builder.lock().await.workload_count();
    tracing::info!(workloads = count, "initial lists done");

    // `dirty`: the ConfigMap may not hold what the builder holds.
    // `built`: the index of the builder's current content, built only when
    // someone needs it (the leader's write, or `publish` on every replica),
    // so that a follower of `index --watch` never builds at all.
    let mut dirty = true;
    let mut built: Option<Arc<Index>> = None;
    loop {
        let leader = *leader_rx.borrow_and_update();
        if leader != state.leader.swap(leader, Ordering::AcqRel) {
            tracing::info!(identity = %config.identity, leader, "leadership changed");
            metrics.indexer_leader.set(i64::from(leader));
            if leader {
                // A new leader makes sure the ConfigMap holds what it sees,
                // as of now (a fresh generatedAt).
                dirty = true;
                built = None;
                state.written.store(false, Ordering::Release);
            }
        }
        if built.is_none() && (publish.is_some() || (leader && dirty)) {
            let index = Arc::new(builder.lock().await.build(Some(jiff::Timestamp::now())));
            if let Some(publish) = &publish {
                publish(index.clone());
            }
            built = Some(index);
        }
        if leader
            && dirty
            && let Some(index) = &built
        {
            // Leadership may have moved while building: check right before
            // writing, with the Lease itself (see `holds_lease`).
            let ours = *leader_rx.borrow() && lease_is_ours(&kube, &config, &metrics).await;
            if ours {
                match write(&kube, &config.configmap, index, &metrics).await {
                    Ok(_) => {
                        dirty = false;
                        state.written.store(true, Ordering::Release);
                    }
                    // Too large stays too large until the cluster changes.
                    Err(WriteError::TooLarge(_)) => dirty = false,
                    Err(WriteError::Api(_)) => {}
                }
            }
        }
        let retry = if dirty && leader {
            config.debounce
        } else {
            Duration::from_secs(3600)
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = changed.notified() => {
                // Debounce: let a burst of changes settle.
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(config.debounce) => {}
                }
                dirty = true;
                built = None;
            }
            r = leader_rx.changed() => {
                if r.is_err() {
                    anyhow::bail!("the lease task ended: {:?}", (&mut lease_task).await);
                }
            }
            _ = tokio::time::sleep(retry) => {}
            done = tasks.join_next() => {
                anyhow::bail!("a watch task ended unexpectedly: {done:?}");
            }
        }
    }
    // Dropping the receiver makes the lease task release the Lease.
    drop(leader_rx);
    match tokio::time::timeout(Duration::from_secs(5), lease_task).await {
        Ok(Ok(Ok(_))) => tracing::info!("lease released"),
        other => tracing::warn!(?other, "lease not released cleanly"),
    }
    tasks.abort_all();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn lease(holder: Option<&str>, renewed: Option<&str>, secs: Option<i32>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(Into::into),
            renew_time: renewed.map(|t| MicroTime(t.parse().unwrap())),
            lease_duration_seconds: secs,
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_write_needs_an_unexpired_lease_naming_us() {
        let now: jiff::Timestamp = "2026-11-27T12:00:10Z".parse().unwrap();
        let renewed = Some("2026-11-27T12:00:00Z");
        let cases = [
            (lease(Some("me"), renewed, Some(15)), true, "held and fresh"),
            (
                lease(Some("me"), renewed, Some(10)),
                false,
                "expired at now",
            ),
            (lease(Some("me"), renewed, Some(5)), false, "expired"),
            (lease(Some("other"), renewed, Some(15)), false, "taken over"),
            (lease(None, renewed, Some(15)), false, "released"),
            (lease(Some("me"), None, Some(15)), false, "never renewed"),
            (lease(Some("me"), renewed, None), false, "no duration"),
            (
                lease(Some("me"), Some("2026-11-27T12:00:20Z"), Some(15)),
                true,
                "renewed by a clock ahead of ours",
            ),
        ];
        for (spec, want, case) in cases {
            assert_eq!(holds_lease(&spec, "me", now), want, "{case}");
        }
    }
}
