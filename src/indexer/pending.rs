//! The controller of waiting pushes (`pushroll.io/pending`): carries each
//! out as soon as its condition clears, by the same rules, patch and
//! Events as serve (`restart::Executor`), and removes the record in the
//! same write.
//!
//! Fed by the workload watches the indexer already has: an approval, a
//! changed annotation or a new record is seen as a watch event and acted
//! on at once; windows and intervals wait on one timer, set for the next
//! due time. Every replica tracks the few waiting pushes; only the Lease
//! holder acts. Exactly once: the write carries the resourceVersion it
//! read, so of two replicas that both believe they lead, one gets 409,
//! re-reads, and finds the push carried out.

use std::collections::HashMap;
use std::hash::{Hash as _, Hasher as _};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::ResourceExt as _;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::k8s::Kube;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::policy::pending::{Pending, Reason};
use crate::policy::{APPROVAL, APPROVE, MIN_INTERVAL, PENDING, Settings, WINDOW};
use crate::restart::{Executor, Origin, Push};
use crate::workload::{Kind, Workload, WorkloadRef};

/// Waiting pushes carried out at once.
const CONCURRENT: usize = 4;
/// After a failed attempt (the API server down), the next one.
const RETRY: Duration = Duration::from_secs(5);
/// The annotations whose change may clear a condition.
const WATCHED: [&str; 6] = [
    PENDING,
    APPROVE,
    APPROVAL,
    WINDOW,
    MIN_INTERVAL,
    crate::plan::OPT_OUT,
];

type Key = (Kind, String, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    Now,
    At(jiff::Timestamp),
    /// Until the workload changes (an approval, a fixed annotation).
    Never,
}

#[derive(Debug)]
struct Entry {
    pending: Pending,
    /// A hash of the annotations in [`WATCHED`], as last seen.
    seen: u64,
    /// When the record itself says it is next due.
    own: Due,
    due: Due,
    /// Being carried out; `again`: it changed meanwhile, look once more.
    busy: bool,
    again: bool,
    /// The job carrying it out now. A job that outlived its entry (the
    /// record was removed and a newer one written meanwhile) must not
    /// settle the newer entry: its retry would be lost.
    job: u64,
}

#[derive(Default)]
struct State {
    leader: bool,
    entries: HashMap<Key, Entry>,
    jobs: u64,
}

pub(super) struct Waiting {
    state: Mutex<State>,
    wake: Notify,
    kube: Kube,
    metrics: Arc<Metrics>,
    notifier: Notifier,
    permits: Arc<Semaphore>,
}

/// When a record is next worth deciding again, by itself.
fn due_of(pending: &Pending, approve: Option<&str>) -> Due {
    match (pending.reason, pending.not_before) {
        (Reason::Approval, _) if approve.map(str::trim) == Some(pending.digest.as_str()) => {
            Due::Now
        }
        (Reason::Window | Reason::Interval, Some(at)) => Due::At(at),
        _ => Due::Never,
    }
}

fn fingerprint(annotations: &std::collections::BTreeMap<String, String>) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for key in WATCHED {
        annotations.get(key).hash(&mut h);
    }
    h.finish()
}

impl Waiting {
    pub(super) fn new(kube: Kube, metrics: Arc<Metrics>, notifier: Notifier) -> Arc<Waiting> {
        Arc::new(Waiting {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            kube,
            metrics,
            notifier,
            permits: Arc::new(Semaphore::new(CONCURRENT)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A workload as a list or watch saw it.
    pub(super) fn observe<W: Workload>(&self, obj: &W) {
        let key = (W::KIND, obj.namespace().unwrap_or_default(), obj.name_any());
        let annotations = obj.annotations();
        let mut state = self.lock();
        let Some(pending) = Pending::of(annotations) else {
            if state.entries.remove(&key).is_some() {
                self.set_gauge(&state);
            }
            return;
        };
        let seen = fingerprint(annotations);
        let due = due_of(&pending, annotations.get(APPROVE).map(String::as_str));
        match state.entries.get_mut(&key) {
            Some(entry) => {
                let changed = entry.seen != seen;
                entry.seen = seen;
                entry.pending = pending;
                entry.own = due;
                entry.due = if changed { Due::Now } else { due };
                if entry.busy && changed {
                    entry.again = true;
                }
            }
            None => {
                // New to this replica: decided once (what changed while
                // nobody watched), then by its own due time.
                state.entries.insert(
                    key,
                    Entry {
                        pending,
                        seen,
                        own: due,
                        due: Due::Now,
                        busy: false,
                        again: false,
                        job: 0,
                    },
                );
            }
        }
        self.set_gauge(&state);
        drop(state);
        self.wake.notify_one();
    }

    pub(super) fn forget(&self, kind: Kind, namespace: &str, name: &str) {
        let mut state = self.lock();
        if state
            .entries
            .remove(&(kind, namespace.to_owned(), name.to_owned()))
            .is_some()
        {
            self.set_gauge(&state);
        }
    }

    /// A new leader decides every waiting push once: whatever cleared
    /// while nobody led is carried out now.
    pub(super) fn set_leader(&self, leader: bool) {
        let mut state = self.lock();
        if state.leader == leader {
            return;
        }
        state.leader = leader;
        if leader {
            for entry in state.entries.values_mut() {
                entry.due = Due::Now;
            }
        }
        self.set_gauge(&state);
        drop(state);
        self.wake.notify_one();
    }

    fn set_gauge(&self, state: &State) {
        let counts = Reason::ALL.map(|reason| {
            let n = if state.leader {
                state
                    .entries
                    .values()
                    .filter(|e| e.pending.reason == reason)
                    .count()
            } else {
                0
            };
            (reason.as_str(), n)
        });
        self.metrics.policy.pending(&counts);
    }

    /// The one timer: sleeps until the next due time, or a wake.
    pub(super) async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        super::run_timer(shutdown, &self.wake, |now| self.start_due(now)).await;
    }

    /// Starts what is due at `now` (when leading); returns the next due time.
    fn start_due(self: &Arc<Self>, now: jiff::Timestamp) -> Option<jiff::Timestamp> {
        let mut state = self.lock();
        if !state.leader {
            return None;
        }
        let mut next: Option<jiff::Timestamp> = None;
        let mut starts = Vec::new();
        let State { entries, jobs, .. } = &mut *state;
        for (key, entry) in entries.iter_mut() {
            if entry.busy {
                continue;
            }
            match entry.due {
                Due::Now => {}
                Due::At(at) if at <= now => {}
                Due::At(at) => {
                    next = Some(next.map_or(at, |n| n.min(at)));
                    continue;
                }
                Due::Never => continue,
            }
            entry.busy = true;
            entry.again = false;
            *jobs += 1;
            entry.job = *jobs;
            starts.push((key.clone(), entry.pending.clone(), *jobs));
        }
        drop(state);
        for (key, pending, job) in starts {
            let this = self.clone();
            tokio::spawn(async move {
                let _permit = this.permits.clone().acquire_owned().await;
                let ok = this.carry_out(&key, &pending).await;
                this.done(&key, job, ok);
            });
        }
        next
    }

    /// Decides the waiting push again and does what that says.
    async fn carry_out(&self, key: &Key, pending: &Pending) -> bool {
        let (kind, namespace, name) = key;
        let w = WorkloadRef {
            kind: *kind,
            namespace: namespace.clone(),
            name: name.clone(),
            containers: Vec::new(),
        };
        let push = Push {
            image_key: &pending.image,
            digest: &pending.digest,
            message_id: pending.message_id.as_deref(),
            published: pending.publish_time,
        };
        let executor = Executor {
            kube: &self.kube,
            metrics: &self.metrics,
            notifier: &self.notifier,
            settings: Settings {
                mode: pending.mode,
                opt_in: pending.opt_in,
            },
            dry_run: false,
            origin: Origin::Waiting,
        };
        match executor.carry_out(&push, &w).await {
            Ok(handled) => {
                tracing::debug!(kind = %kind, namespace, name, digest = %pending.digest, result = handled.result.as_str(), "waiting push decided");
                true
            }
            Err(e) => {
                tracing::warn!(kind = %kind, namespace, name, digest = %pending.digest, error = %e, "could not carry out a waiting push; retrying");
                false
            }
        }
    }

    fn done(&self, key: &Key, job: u64, ok: bool) {
        let mut state = self.lock();
        if let Some(entry) = state.entries.get_mut(key)
            && entry.job == job
        {
            entry.busy = false;
            entry.due = if entry.again {
                Due::Now
            } else if !ok {
                Due::At(
                    jiff::Timestamp::now()
                        + jiff::SignedDuration::try_from(RETRY).unwrap_or_default(),
                )
            } else {
                // Decided and still waiting: its own due time, never one
                // already past (that would decide it again at once).
                match entry.own {
                    Due::Now => Due::Never,
                    Due::At(at) if at <= jiff::Timestamp::now() => {
                        Due::At(jiff::Timestamp::now() + jiff::SignedDuration::from_secs(1))
                    }
                    due => due,
                }
            };
        }
        drop(state);
        self.wake.notify_one();
    }
}
