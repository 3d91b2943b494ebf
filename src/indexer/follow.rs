//! The followers: one watch per workload kind, feeding the shared builder.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, ResourceExt as _};
use tokio::sync::{Mutex, Notify};
use tokio::task::JoinSet;

use super::WatchState;
use super::pending::Waiting;
use super::progress::Task;
use super::rollout::Rollouts;
use crate::index::builder::{IndexBuilder, Observed};
use crate::k8s::Kube;
use crate::metrics::Metrics;
use crate::rollout::Followed;
use crate::workload::{Kind, NamespaceFilter};

/// What the followers share with the loop that builds and writes.
pub(super) struct Shared {
    pub(super) builder: Mutex<IndexBuilder>,
    /// Where the trackers act: workloads outside never reach them (see
    /// `WatchConfig::bounds`; the builder's own filter may be wider).
    pub(super) bounds: NamespaceFilter,
    /// A change to the index that the loop has not built yet.
    pub(super) changed: Notify,
    /// The kinds whose initial list is done. Setting it never waits, so a
    /// follower can re-list any number of times (every 410, every API
    /// server restart) without anyone reading it.
    pub(super) listed: tokio::sync::watch::Sender<BTreeSet<Kind>>,
    pub(super) state: Arc<WatchState>,
    pub(super) metrics: Arc<Metrics>,
    /// Every workload seen also goes to the rollout follower and to the
    /// controller of waiting pushes.
    pub(super) rollouts: Arc<Rollouts>,
    pub(super) waiting: Arc<Waiting>,
}

impl Shared {
    pub(super) fn new(
        namespaces: NamespaceFilter,
        bounds: NamespaceFilter,
        state: Arc<WatchState>,
        metrics: Arc<Metrics>,
        rollouts: Arc<Rollouts>,
        waiting: Arc<Waiting>,
    ) -> (Arc<Shared>, tokio::sync::watch::Receiver<BTreeSet<Kind>>) {
        let (listed, listed_rx) = tokio::sync::watch::channel(BTreeSet::new());
        let shared = Shared {
            builder: Mutex::new(IndexBuilder::new(namespaces)),
            bounds,
            changed: Notify::new(),
            listed,
            state,
            metrics,
            rollouts,
            waiting,
        };
        (Arc::new(shared), listed_rx)
    }
}

/// Objects per page of a watch's list (its first, and every relist). A
/// page is held whole as typed objects until the builder has taken each:
/// at kube's default of 500 (client-go's), the indexer peaked 14 MiB higher
/// at 50,000 workloads (`scripts/measure-indexer.sh`); 100 costs five times
/// as many list requests, about half a second more there.
const LIST_PAGE_SIZE: u32 = 100;

/// Starts one follower per kind.
pub(super) fn spawn_all(
    kube: &Kube,
    namespaces: &NamespaceFilter,
    shared: &Arc<Shared>,
) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    tasks.spawn(follow::<Deployment>(
        kube.clone(),
        namespaces.clone(),
        shared.clone(),
    ));
    tasks.spawn(follow::<StatefulSet>(
        kube.clone(),
        namespaces.clone(),
        shared.clone(),
    ));
    tasks.spawn(follow::<DaemonSet>(
        kube.clone(),
        namespaces.clone(),
        shared.clone(),
    ));
    tasks
}

/// Follows one kind of workload into the shared builder, the rollout
/// follower and the waiting pushes. The builder lock is held for one event
/// at a time, never across a wait. A relist is collected in the builder
/// (see `IndexBuilder::begin_relist`); the trackers are told, at its end,
/// which workloads it showed, and forget the others (deleted while the
/// watch was down), as a reflector store's re-list does. Workloads in
/// namespaces outside `--namespace` / `--exclude-namespace` never reach
/// the trackers: nothing is released, reported or undone there.
async fn follow<W: Followed>(kube: Kube, namespaces: NamespaceFilter, shared: Arc<Shared>) {
    // One namespace: watch it alone; otherwise watch all and filter.
    let api: Api<W> = match namespaces.include.as_slice() {
        [one] => Api::namespaced(kube.watch_client().clone(), one),
        _ => Api::all(kube.watch_client().clone()),
    };
    let resource = W::KIND.plural();
    let mut stream = watcher(api, watcher::Config::default().page_size(LIST_PAGE_SIZE))
        .default_backoff()
        .boxed();
    // The workloads the current relist has shown so far that a tracker may
    // hold: those with a pushroll record. The others have no entry to keep
    // (observing them removed any), and at 50,000 workloads a set of every
    // name cost 7 MiB of the indexer's peak.
    let mut relisted: BTreeSet<(String, String)> = BTreeSet::new();
    let has_record = |obj: &W| {
        let a = obj.annotations();
        a.contains_key(crate::policy::PENDING) || a.contains_key(crate::rollout::ROLLOUT)
    };
    let track = |obj: &W| {
        let ns = obj.namespace().unwrap_or_default();
        // `bounds`, not the watch's `namespaces`: serve --indexer watches
        // excluded namespaces too, to answer `excluded` for them.
        if shared.bounds.allows(&ns) {
            shared.rollouts.observe(obj);
            shared.waiting.observe(obj);
            true
        } else {
            false
        }
    };
    loop {
        let next = stream.try_next().await;
        let _busy = shared.state.progress.busy(Task::Follow(W::KIND));
        let event = match next {
            Ok(Some(event)) => event,
            Ok(None) => return,
            Err(e) => {
                shared.metrics.indexer.watch_error(resource);
                tracing::warn!(kind = %W::KIND, error = %e, "watch error; retrying with backoff");
                continue;
            }
        };
        let did_change = match event {
            watcher::Event::Init => {
                relisted.clear();
                shared.builder.lock().await.begin_relist(W::KIND);
                false
            }
            watcher::Event::InitApply(obj) => {
                if track(&obj) && has_record(&obj) {
                    relisted.insert((obj.namespace().unwrap_or_default(), obj.name_any()));
                }
                shared.builder.lock().await.relisted(&Observed::of(&obj));
                false
            }
            watcher::Event::InitDone => {
                let listed = std::mem::take(&mut relisted);
                shared.rollouts.retain(W::KIND, &listed);
                shared.waiting.retain(W::KIND, &listed);
                let changed = shared.builder.lock().await.finish_relist(W::KIND);
                shared.listed.send_modify(|kinds| {
                    kinds.insert(W::KIND);
                });
                shared.metrics.indexer.watch_list(resource);
                changed
            }
            watcher::Event::Apply(obj) => {
                track(&obj);
                shared.builder.lock().await.apply(&Observed::of(&obj))
            }
            watcher::Event::Delete(obj) => {
                let (ns, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
                shared.rollouts.forget(W::KIND, &ns, &name);
                shared.waiting.forget(&(W::KIND, ns.clone(), name.clone()));
                shared.builder.lock().await.delete(W::KIND, &ns, &name)
            }
        };
        shared.metrics.indexer.watch_event(resource, did_change);
        if did_change {
            shared.changed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    use super::*;

    /// A follower frozen on the builder lock is reported stalled once past
    /// the bound, and recovers when the lock is free again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_frozen_follower_is_seen_stalled() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let fake = fake_apiserver::FakeApiServer::start().await;
        let config = kube::Config::new(fake.url().parse().unwrap());
        let metrics = Metrics::new();
        let kube =
            crate::k8s::connect_with(config, Duration::from_secs(5), metrics.clone()).unwrap();
        let state = Arc::new(WatchState::default());
        let notifier = crate::notify::Notifier::disabled(metrics.clone());
        let rollouts = Rollouts::new(
            kube.clone(),
            metrics.clone(),
            Duration::from_secs(600),
            notifier.clone(),
        );
        let waiting = Waiting::new(
            kube.clone(),
            metrics.clone(),
            notifier,
            NamespaceFilter::default(),
        );
        let (shared, mut listed_rx) = Shared::new(
            NamespaceFilter::default(),
            NamespaceFilter::default(),
            state.clone(),
            metrics,
            rollouts,
            waiting,
        );
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
}
