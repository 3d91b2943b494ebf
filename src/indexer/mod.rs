//! The indexer: keeps the index ConfigMap current. `pushroll index` scans
//! once (`index::scan`); `index --watch` follows the workloads with
//! watches (`follow.rs`), rebuilds the index incrementally and writes it
//! (debounced, only when it changed) while it holds the Lease ([`lease`]).
//! `serve --indexer` runs the same [`watch`] in the server process and also
//! receives each index it builds ([`Publish`]).

mod follow;
pub mod lease;
mod pending;
pub mod progress;
mod rollout;
mod undo;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use self::follow::Shared;
use self::lease::{Election, lease_is_ours, read_lease};
use self::pending::Waiting;
use self::progress::{Progress, Task};
use self::rollout::Rollouts;
use crate::index::Index;
use crate::index::configmap::{ConfigMapRef, WriteError, write};
use crate::k8s::Kube;
use crate::metrics::Metrics;
use crate::workload::{Kind, NamespaceFilter};

/// The watch's own settings (`--debounce`, `--lease-*`, `--stall-timeout`,
/// and who this replica is), shared by `index --watch` and `serve --indexer`.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    pub debounce: Duration,
    pub lease_name: String,
    pub lease_duration: Duration,
    /// This replica's name in the Lease.
    pub identity: String,
    /// A task of the watch that spends longer than this on one step is
    /// stalled, and `/healthz` fails (see [`Progress`]).
    pub stall_timeout: Duration,
    /// A followed rollout not complete by then is reported failed.
    pub rollout_timeout: Duration,
    /// Where rollouts' ends and undos are told (`--notify-url`).
    pub notify: crate::notify::NotifyConfig,
}

impl WatchSettings {
    /// What to watch and where to write: the Lease lives beside the ConfigMap.
    pub fn config(self, namespaces: NamespaceFilter, configmap: ConfigMapRef) -> WatchConfig {
        WatchConfig {
            bounds: namespaces.clone(),
            namespaces,
            configmap,
            settings: self,
        }
    }
}

/// Everything a running watch needs.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// What the watch indexes.
    pub namespaces: NamespaceFilter,
    /// Where the Lease holder acts (releases, reports, undos): the full
    /// `--namespace` / `--exclude-namespace`. `serve --indexer` indexes
    /// excluded namespaces too (serve answers `excluded` for them), so
    /// its `namespaces` drop the exclusions and these keep them; for
    /// `index --watch` both are the same.
    pub bounds: NamespaceFilter,
    pub configmap: ConfigMapRef,
    pub settings: WatchSettings,
}

/// Receives every index the watch builds, on every replica, leader or not:
/// once the initial lists are done, then after each debounced change.
/// `serve --indexer` puts it in its index store (see `lookup`).
pub type Publish = Box<dyn Fn(Arc<Index>) + Send + Sync>;

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
    pub(crate) fn is_ready(&self) -> bool {
        self.synced.load(Ordering::Acquire)
            && (!self.leader.load(Ordering::Acquire) || self.written.load(Ordering::Acquire))
    }

    /// Live: no task of the watch is stalled (see [`Progress`]).
    pub(crate) fn is_live(&self, stall_timeout: Duration) -> Result<(), String> {
        match self.progress.stalled(stall_timeout) {
            None => Ok(()),
            Some(why) => Err(format!("the indexer is stalled: {why}")),
        }
    }
}

/// The one timer of the rollout follower and of the waiting pushes: runs
/// `tick` now, then sleeps until the time it returns (an hour when
/// nothing is due) or a `wake`, until `shutdown`.
pub(super) async fn run_timer(
    shutdown: CancellationToken,
    wake: &tokio::sync::Notify,
    mut tick: impl FnMut(jiff::Timestamp) -> Option<jiff::Timestamp>,
) {
    loop {
        let next = tick(jiff::Timestamp::now());
        let sleep = next.map_or(Duration::from_secs(3600), |at| {
            let left = at.duration_since(jiff::Timestamp::now());
            Duration::try_from(left).unwrap_or_default() + Duration::from_millis(5)
        });
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
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
    let notifier = crate::notify::Notifier::from_config(&config.settings.notify, metrics.clone());
    let rollouts = Rollouts::new(
        kube.clone(),
        metrics.clone(),
        config.settings.rollout_timeout,
        notifier.clone(),
    );
    // The trackers and the executor are bounded by `bounds`, not by what
    // the watch indexes (see `WatchConfig::bounds`).
    let waiting = Waiting::new(
        kube.clone(),
        metrics.clone(),
        notifier,
        config.bounds.clone(),
    );
    let (shared, mut listed) = Shared::new(
        config.namespaces.clone(),
        config.bounds.clone(),
        state.clone(),
        metrics.clone(),
        rollouts.clone(),
        waiting.clone(),
    );
    let mut followers = follow::spawn_all(&kube, &config.namespaces, &shared);
    let timer = tokio::spawn(rollouts.run(shutdown.child_token()));
    let waiting_timer = tokio::spawn(waiting.run(shutdown.child_token()));
    let mut election = Election::start(&kube, &config).await?;
    tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        all = listed.wait_for(|kinds| kinds.len() == Kind::ALL.len()) => {
            all.map(drop).context("the watches ended before their initial lists")?;
        }
        done = followers.join_next() => {
            anyhow::bail!("a watch task ended before its initial list: {done:?}");
        }
    }
    state.synced.store(true, Ordering::Release);
    let count = shared.builder.lock().await.workload_count();
    tracing::info!(workloads = count, "initial lists done");
    let mut writer = Writer {
        kube,
        config,
        shared,
        metrics,
        publish,
        dirty: true,
        built: None,
    };
    let result = writer.run(&mut election, &mut followers, &shutdown).await;
    timer.abort();
    waiting_timer.abort();
    result?;
    election.release().await;
    followers.abort_all();
    Ok(())
}

/// The loop that builds the index and, as leader, writes it.
struct Writer {
    kube: Kube,
    config: WatchConfig,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    publish: Option<Publish>,
    /// The ConfigMap may not hold what the builder holds.
    dirty: bool,
    /// The index of the builder's current content, built only when someone
    /// needs it (the leader's write, or `publish` on every replica), so that
    /// a follower of `index --watch` never builds at all.
    built: Option<Arc<Index>>,
}

impl Writer {
    /// Until `shutdown`; an error when a follower or the lease task ends.
    async fn run(
        &mut self,
        election: &mut Election,
        followers: &mut JoinSet<()>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        // Every replica looks at the Lease this often, to recreate it when
        // it has been deleted (see `read_lease`).
        let mut lease_check = tokio::time::interval(
            (self.config.settings.lease_duration / 3).max(Duration::from_secs(1)),
        );
        lease_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut check_lease = false;
        loop {
            self.step(election, std::mem::take(&mut check_lease)).await;
            let retry = if self.dirty && self.shared.state.leader.load(Ordering::Acquire) {
                self.config.settings.debounce
            } else {
                Duration::from_secs(3600)
            };
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = self.shared.changed.notified() => {
                    // Debounce: let a burst of changes settle.
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(self.config.settings.debounce) => {}
                    }
                    self.dirty = true;
                    self.built = None;
                }
                changed = election.changed() => changed?,
                _ = lease_check.tick() => check_lease = true,
                _ = tokio::time::sleep(retry) => {}
                done = followers.join_next() => {
                    anyhow::bail!("a watch task ended unexpectedly: {done:?}");
                }
            }
        }
    }

    /// One pass: note leadership, build what is needed, write as leader.
    async fn step(&mut self, election: &mut Election, check_lease: bool) {
        let state = self.shared.state.clone();
        let _busy = state.progress.busy(Task::Write);
        if check_lease {
            let _ = read_lease(&self.kube, &self.config, &self.metrics).await;
        }
        let leader = election.leads();
        self.note_leadership(leader);
        if self.built.is_none() && (self.publish.is_some() || (leader && self.dirty)) {
            self.build().await;
        }
        if leader && self.dirty {
            self.write_if_ours(election).await;
        }
    }

    fn note_leadership(&mut self, leader: bool) {
        let state = &self.shared.state;
        if leader == state.leader.swap(leader, Ordering::AcqRel) {
            return;
        }
        tracing::info!(identity = %self.config.settings.identity, leader, "leadership changed");
        self.metrics.indexer.set_leader(leader);
        self.shared.rollouts.set_leader(leader);
        self.shared.waiting.set_leader(leader);
        if leader {
            // A new leader makes sure the ConfigMap holds what it sees, as
            // of now (a fresh generatedAt).
            self.dirty = true;
            self.built = None;
            state.written.store(false, Ordering::Release);
        }
    }

    async fn build(&mut self) {
        let builder = self.shared.builder.lock().await;
        let index = Arc::new(builder.build(Some(jiff::Timestamp::now())));
        drop(builder);
        if let Some(publish) = &self.publish {
            publish(index.clone());
        }
        self.built = Some(index);
    }

    async fn write_if_ours(&mut self, election: &Election) {
        let Some(index) = &self.built else {
            return;
        };
        // Leadership may have moved while building: check right before
        // writing, with the Lease itself (see `lease::holds_lease`).
        let ours =
            election.still_leads() && lease_is_ours(&self.kube, &self.config, &self.metrics).await;
        if !ours {
            return;
        }
        match write(&self.kube, &self.config.configmap, index, &self.metrics).await {
            Ok(_) => {
                self.dirty = false;
                self.shared.state.written.store(true, Ordering::Release);
            }
            // Too large stays too large until the cluster changes.
            Err(WriteError::TooLarge(_)) => self.dirty = false,
            Err(WriteError::Api(_)) => {}
        }
    }
}
