//! The indexer: keeps the index ConfigMap current. `pushroll index` scans
//! once; `index --watch` follows the workloads with watches, rebuilds the
//! index incrementally and writes it (debounced, only when it changed) while
//! it holds the Lease. `serve --indexer` runs the same [`watch`] in the
//! server process and also receives each index it builds ([`Publish`]).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::coordination::v1::LeaseSpec;
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, ResourceExt as _};
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;

use crate::index::{Index, Kind};
use crate::index_builder::{Entry, IndexBuilder, Workload};
use crate::index_writer::ConfigMapRef;
use crate::index_writer::{Payload, read_configmap};
use crate::k8s::{Kube, KubeError};
use crate::metrics::{Metrics, ResultLabels};
use crate::plan::{NamespaceFilter, resource_of};

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
    /// A task of the watch that spends longer than this on one step is
    /// stalled, and `/healthz` fails (see [`Progress`]).
    pub stall_timeout: Duration,
}

/// Receives every index the watch builds, on every replica, leader or not:
/// once the initial lists are done, then after each debounced change.
/// `serve --indexer` puts it in its index store (see `lookup`).
pub type Publish = Box<dyn Fn(Arc<Index>) + Send + Sync>;

/// The tasks of a running watch: one follower per kind, and the loop that
/// builds and writes the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    Follow(Kind),
    Write,
}

impl Task {
    const ALL: [Task; 4] = [
        Task::Follow(Kind::Deployment),
        Task::Follow(Kind::StatefulSet),
        Task::Follow(Kind::DaemonSet),
        Task::Write,
    ];

    fn slot(self) -> usize {
        match self {
            Task::Follow(Kind::Deployment) => 0,
            Task::Follow(Kind::StatefulSet) => 1,
            Task::Follow(Kind::DaemonSet) => 2,
            Task::Write => 3,
        }
    }

    fn describe(self) -> String {
        match self {
            Task::Follow(kind) => format!("the {} watch", resource_of(kind)),
            Task::Write => "the index writer".to_owned(),
        }
    }
}

/// When each task of the watch started the step it is on, for `/healthz`.
///
/// A follower that waits on its stream is following: kube-runtime handles
/// bookmarks itself (they never reach us) and re-opens a watch that has
/// been silent for 295 s. A task that stays on one step is stuck, as a
/// follower once was on a full channel while holding the builder lock:
/// nothing was indexed again while the Lease was renewed and `/readyz`
/// said ready. Only a restart gets such a process going again, so
/// `/healthz` fails and the kubelet restarts it.
pub struct Progress {
    epoch: Instant,
    /// Milliseconds since `epoch` plus one when the step began; 0: waiting.
    busy_since: [AtomicU64; 4],
}

impl Default for Progress {
    fn default() -> Progress {
        Progress {
            epoch: Instant::now(),
            busy_since: Default::default(),
        }
    }
}

/// Marks a task busy until dropped.
pub struct Busy<'a> {
    progress: &'a Progress,
    task: Task,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.progress.busy_since[self.task.slot()].store(0, Ordering::Release);
    }
}

impl Progress {
    /// `task` starts a step; it is waiting again when the guard is dropped.
    pub fn busy(&self, task: Task) -> Busy<'_> {
        let since = self.epoch.elapsed().as_millis() as u64 + 1;
        self.busy_since[task.slot()].store(since, Ordering::Release);
        Busy {
            progress: self,
            task,
        }
    }

    /// The tasks that have been on one step for longer than `bound`.
    pub fn stalled(&self, bound: Duration) -> Option<String> {
        self.stalled_at(Instant::now(), bound)
    }

    fn stalled_at(&self, now: Instant, bound: Duration) -> Option<String> {
        let now_ms = now.saturating_duration_since(self.epoch).as_millis() as u64 + 1;
        let stuck: Vec<String> = Task::ALL
            .into_iter()
            .filter_map(|task| {
                let since = self.busy_since[task.slot()].load(Ordering::Acquire);
                let busy = Duration::from_millis(now_ms.saturating_sub(since));
                (since != 0 && busy > bound).then(|| {
                    format!(
                        "{} has been on one step for {}s (bound {}s)",
                        task.describe(),
                        busy.as_secs(),
                        bound.as_secs()
                    )
                })
            })
            .collect();
        (!stuck.is_empty()).then(|| stuck.join("; "))
    }
}

/// Shared state of a running watch, for probes.
#[derive(Default)]
pub struct WatchState {
    /// Every kind has finished its initial list.
    pub synced: AtomicBool,
    pub leader: AtomicBool,
    /// As leader, the index has been written (or found current) once.
    pub written: AtomicBool,
    pub progress: Progress,
}

impl WatchState {
    /// Ready: the initial lists are done and, when leader, the first write.
    pub fn is_ready(&self) -> bool {
        self.synced.load(Ordering::Acquire)
            && (!self.leader.load(Ordering::Acquire) || self.written.load(Ordering::Acquire))
    }

    /// Live: no task of the watch is stalled (see [`Progress`]).
    pub fn is_live(&self, stall_timeout: Duration) -> Result<(), String> {
        match self.progress.stalled(stall_timeout) {
            None => Ok(()),
            Some(why) => Err(format!("the indexer is stalled: {why}")),
        }
    }
}

/// What the followers share with the loop that builds and writes.
struct Shared {
    builder: Mutex<IndexBuilder>,
    /// A change to the index that the loop has not built yet.
    changed: Notify,
    /// The kinds whose initial list is done. Setting it never waits, so a
    /// follower can re-list any number of times (every 410, every API
    /// server restart) without anyone reading it.
    listed: tokio::sync::watch::Sender<BTreeSet<Kind>>,
    state: Arc<WatchState>,
    metrics: Arc<Metrics>,
}

/// Follows one kind of workload into the shared builder. The builder lock
/// is held for one apply, delete or reset at a time, never across a wait.
async fn follow<W: Workload>(kube: Kube, namespaces: NamespaceFilter, shared: Arc<Shared>) {
    // One namespace: watch it alone; otherwise watch all and filter.
    let api: Api<W> = match namespaces.include.as_slice() {
        [one] => Api::namespaced(kube.watch_client().clone(), one),
        _ => Api::all(kube.watch_client().clone()),
    };
    let label = ResultLabels {
        result: resource_of(W::KIND),
    };
    let mut listing: Vec<Entry> = Vec::new();
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    loop {
        let next = stream.try_next().await;
        let _busy = shared.state.progress.busy(Task::Follow(W::KIND));
        let event = match next {
            Ok(Some(event)) => event,
            Ok(None) => return,
            Err(e) => {
                shared.metrics.watch_errors.get_or_create(&label).inc();
                tracing::warn!(kind = %W::KIND, error = %e, "watch error; retrying with backoff");
                continue;
            }
        };
        let did_change = match event {
            watcher::Event::Init => {
                listing.clear();
                false
            }
            watcher::Event::InitApply(obj) => {
                listing.push(Entry::of(&obj));
                false
            }
            watcher::Event::InitDone => {
                let listed = std::mem::take(&mut listing);
                let changed = shared.builder.lock().await.reset(W::KIND, &listed);
                shared.listed.send_modify(|kinds| {
                    kinds.insert(W::KIND);
                });
                shared.metrics.watch_lists.get_or_create(&label).inc();
                changed
            }
            watcher::Event::Apply(obj) => shared.builder.lock().await.apply(&Entry::of(&obj)),
            watcher::Event::Delete(obj) => shared.builder.lock().await.delete(
                W::KIND,
                &obj.namespace().unwrap_or_default(),
                &obj.name_any(),
            ),
        };
        // Changes are counted before events, so that an observer who sees
        // an event counted also sees whether it changed the index.
        if did_change {
            shared.metrics.index_changes.inc();
        }
        shared.metrics.watch_events.get_or_create(&label).inc();
        if did_change {
            shared.changed.notify_one();
        }
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

/// Reads the Lease; recreates it when it is gone. kube-lease-manager
/// creates the Lease only when it starts: once deleted (a common operator
/// fix for a stuck Lease), it reports an error on every loop, never a loss
/// of leadership, and nobody would write the index again.
async fn read_lease(
    kube: &Kube,
    config: &WatchConfig,
    metrics: &Metrics,
) -> Result<k8s_openapi::api::coordination::v1::Lease, KubeError> {
    let ns = &config.configmap.namespace;
    let lease = kube.get_lease(ns, &config.lease_name).await;
    if let Err(KubeError::NotFound) = &lease {
        let created = kube.create_lease(ns, &config.lease_name).await;
        let result = if created.is_ok() {
            "recreated"
        } else {
            "error"
        };
        metrics
            .lease_recreations
            .get_or_create(&ResultLabels { result })
            .inc();
        match created {
            Ok(()) => {
                tracing::warn!(lease = %format!("{ns}/{}", config.lease_name), "the Lease was deleted; recreated it, and the election starts over")
            }
            Err(e) => {
                tracing::error!(lease = %format!("{ns}/{}", config.lease_name), error = %e, "the Lease was deleted and cannot be recreated")
            }
        }
    }
    lease
}

async fn lease_is_ours(kube: &Kube, config: &WatchConfig, metrics: &Metrics) -> bool {
    let lease = read_lease(kube, config, metrics).await;
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

/// Leader election through a coordination.k8s.io Lease.
async fn elect(
    kube: &Kube,
    config: &WatchConfig,
) -> anyhow::Result<(
    tokio::sync::watch::Receiver<bool>,
    tokio::task::JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
)> {
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
    Ok(lease.watch().await)
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
    let (listed, mut listed_rx) = tokio::sync::watch::channel(BTreeSet::new());
    let shared = Arc::new(Shared {
        builder: Mutex::new(IndexBuilder::new(config.namespaces.clone())),
        changed: Notify::new(),
        listed,
        state: state.clone(),
        metrics: metrics.clone(),
    });
    let mut tasks = tokio::task::JoinSet::new();
    let ns = &config.namespaces;
    tasks.spawn(follow::<Deployment>(
        kube.clone(),
        ns.clone(),
        shared.clone(),
    ));
    tasks.spawn(follow::<StatefulSet>(
        kube.clone(),
        ns.clone(),
        shared.clone(),
    ));
    tasks.spawn(follow::<DaemonSet>(
        kube.clone(),
        ns.clone(),
        shared.clone(),
    ));

    let (mut leader_rx, mut lease_task) = elect(&kube, &config).await?;

    // Wait for the initial lists of all three kinds.
    tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        all = listed_rx.wait_for(|kinds| kinds.len() == Kind::ALL.len()) => {
            all.map(drop).context("the watches ended before their initial lists")?;
        }
        done = tasks.join_next() => {
            anyhow::bail!("a watch task ended before its initial list: {done:?}");
        }
    }
    state.synced.store(true, Ordering::Release);
    let count = shared.builder.lock().await.workload_count();
    tracing::info!(workloads = count, "initial lists done");

    // `dirty`: the ConfigMap may not hold what the builder holds.
    // `built`: the index of the builder's current content, built only when
    // someone needs it (the leader's write, or `publish` on every replica),
    // so that a follower of `index --watch` never builds at all.
    let mut dirty = true;
    let mut built: Option<Arc<Index>> = None;
    // Every replica looks at the Lease this often, to recreate it when it
    // has been deleted (see `read_lease`).
    let mut lease_check =
        tokio::time::interval((config.lease_duration / 3).max(Duration::from_secs(1)));
    lease_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut check_lease = false;
    loop {
        {
            let _busy = state.progress.busy(Task::Write);
            if std::mem::take(&mut check_lease) {
                let _ = read_lease(&kube, &config, &metrics).await;
            }
            let leader = *leader_rx.borrow_and_update();
            if leader != state.leader.swap(leader, Ordering::AcqRel) {
                tracing::info!(identity = %config.identity, leader, "leadership changed");
                metrics.indexer_leader.set(i64::from(leader));
                if leader {
                    // A new leader makes sure the ConfigMap holds what it
                    // sees, as of now (a fresh generatedAt).
                    dirty = true;
                    built = None;
                    state.written.store(false, Ordering::Release);
                }
            }
            if built.is_none() && (publish.is_some() || (leader && dirty)) {
                let index = Arc::new(
                    shared
                        .builder
                        .lock()
                        .await
                        .build(Some(jiff::Timestamp::now())),
                );
                if let Some(publish) = &publish {
                    publish(index.clone());
                }
                built = Some(index);
            }
            if leader
                && dirty
                && let Some(index) = &built
            {
                // Leadership may have moved while building: check right
                // before writing, with the Lease itself (see `holds_lease`).
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
        }
        let retry = if dirty && state.leader.load(Ordering::Acquire) {
            config.debounce
        } else {
            Duration::from_secs(3600)
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = shared.changed.notified() => {
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
            _ = lease_check.tick() => check_lease = true,
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
    fn a_task_on_one_step_past_the_bound_is_stalled() {
        let progress = Progress::default();
        let bound = Duration::from_secs(60);
        let later = |secs| progress.epoch + Duration::from_secs(secs);
        assert_eq!(progress.stalled_at(later(3600), bound), None, "all waiting");
        let busy = progress.busy(Task::Follow(Kind::StatefulSet));
        assert_eq!(
            progress.stalled_at(later(59), bound),
            None,
            "inside the bound"
        );
        let why = progress.stalled_at(later(61), bound).expect("stalled");
        assert!(why.contains("statefulsets watch"), "{why}");
        let writer = progress.busy(Task::Write);
        let why = progress.stalled_at(later(120), bound).expect("stalled");
        assert!(
            why.contains("statefulsets") && why.contains("index writer"),
            "{why}"
        );
        drop(busy);
        drop(writer);
        assert_eq!(
            progress.stalled_at(later(3600), bound),
            None,
            "waiting again"
        );
    }

    /// A follower frozen on the builder lock is reported stalled once past
    /// the bound, and recovers when the lock is free again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_frozen_follower_is_seen_stalled() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let fake = fake_apiserver::FakeApiServer::start().await;
        let config = kube::Config::new(fake.url().parse().unwrap());
        let metrics = Metrics::new();
        let kube = Kube::new(kube::Client::try_from(config).unwrap(), metrics.clone());
        let (listed, mut listed_rx) = tokio::sync::watch::channel(BTreeSet::new());
        let state = Arc::new(WatchState::default());
        let shared = Arc::new(Shared {
            builder: Mutex::new(IndexBuilder::new(NamespaceFilter::default())),
            changed: Notify::new(),
            listed,
            state: state.clone(),
            metrics,
        });
        // Freeze: hold the lock the follower needs for its first list.
        let frozen = shared.builder.lock().await;
        let task = tokio::spawn(follow::<Deployment>(
            kube,
            NamespaceFilter::default(),
            shared.clone(),
        ));
        let slot = &state.progress.busy_since[Task::Follow(Kind::Deployment).slot()];
        let deadline = Instant::now() + Duration::from_secs(10);
        while slot.load(Ordering::Acquire) == 0 {
            assert!(Instant::now() < deadline, "the follower never got its list");
            tokio::task::yield_now().await;
        }
        let bound = Duration::from_millis(200);
        let why = state
            .progress
            .stalled_at(Instant::now() + Duration::from_secs(1), bound)
            .expect("a frozen follower is stalled");
        assert!(why.contains("deployments watch"), "{why}");
        assert!(state.is_live(Duration::from_secs(3600)).is_ok());
        // Unfrozen, it lists and waits on its stream again.
        drop(frozen);
        tokio::time::timeout(
            Duration::from_secs(10),
            listed_rx.wait_for(|k| k.contains(&Kind::Deployment)),
        )
        .await
        .expect("the list completes")
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while state
            .progress
            .stalled_at(Instant::now() + Duration::from_secs(1), bound)
            .is_some()
        {
            assert!(Instant::now() < deadline, "the follower stays busy");
            tokio::task::yield_now().await;
        }
        task.abort();
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
