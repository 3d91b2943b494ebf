//! The controller of waiting pushes (`pushroll.io/pending`, one record per
//! image): carries each out as soon as its condition clears, by the same
//! rules, patch and Events as serve (`restart::Executor`), and removes its
//! record in the same write.
//!
//! Fed by the workload watches the indexer already has: an approval, a
//! changed policy annotation (on the workload or its pod template) or a
//! new record is seen as a watch event and acted on at once; windows and
//! intervals wait on one timer, set for the next due time. A re-list is a
//! store's re-list: what it no longer shows is forgotten (`retain`).
//! Every replica tracks the few waiting pushes; only the Lease holder
//! acts. Exactly once: the write carries the resourceVersion it read, so
//! of two replicas that both believe they lead, one gets 409, re-reads,
//! and finds the push carried out.
//!
//! Retries back off: a failed attempt (the API server down, a 403) is
//! tried again after 1 s, 2 s, 4 s … up to 5 minutes; a permanent refusal
//! (400/422) is recorded once and parked until the workload's generation
//! or annotations change. The bookkeeping is a pure state machine
//! ([`State`]), tested without a cluster.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash as _, Hasher as _};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::ResourceExt as _;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::k8s::Kube;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::plan::RestartResult;
use crate::policy::pending::{self, Pending, Reason};
use crate::policy::{APPROVAL, APPROVE, MIN_INTERVAL, PENDING, Settings, WINDOW};
use crate::restart::{Executor, Origin, Push};
use crate::workload::{Kind, NamespaceFilter, Workload, WorkloadRef};

/// Waiting pushes carried out at once.
const CONCURRENT: usize = 4;
/// The first retry after a failed attempt; each next one waits twice as
/// long, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// The annotations whose change may clear a condition, on the workload
/// or on its pod template.
const WATCHED: [&str; 6] = [
    PENDING,
    APPROVE,
    APPROVAL,
    WINDOW,
    MIN_INTERVAL,
    crate::plan::OPT_OUT,
];

/// A workload: kind, namespace, name.
pub(super) type Workload3 = (Kind, String, String);
/// One waiting push: its workload and its image.
type Key = (Kind, String, String, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Due {
    Now,
    At(jiff::Timestamp),
    /// Until the workload changes (an approval, a fixed annotation).
    Never,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Decided: carried out, still waiting, or dropped as obsolete.
    Decided,
    /// Refused for good (400/422): parked until the workload changes.
    Rejected,
    /// Failed (the API server down, a 403, conflicts): retried with backoff.
    Failed,
}

/// What a watch event says about one workload.
#[derive(Debug, Clone)]
pub(super) struct Seen {
    pub(super) records: Vec<Pending>,
    /// The approval on the workload, if any.
    pub(super) approve: Option<String>,
    /// A hash of the [`WATCHED`] annotations, the workload's and its
    /// template's.
    pub(super) watched: u64,
    /// A hash of the generation and every workload annotation: what a
    /// parked (rejected) push waits to see change. Status does not count.
    pub(super) spec: u64,
}

#[derive(Debug)]
struct Entry {
    pending: Pending,
    watched: u64,
    spec: u64,
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
    /// Failed attempts in a row: the backoff.
    failures: u32,
    /// Rejected for good at this `spec` hash.
    parked: Option<u64>,
}

/// The controller's bookkeeping, without I/O or clock: every time comes in
/// as an argument.
#[derive(Debug, Default)]
pub(super) struct State {
    leader: bool,
    entries: HashMap<Key, Entry>,
    jobs: u64,
}

/// A push to carry out now: the key, the record, the job number.
pub(super) type Start = (Key, Pending, u64);

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

/// The backoff after `failures` failed attempts in a row.
pub(super) fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    (FIRST_BACKOFF * 2u32.pow(exp)).min(MAX_BACKOFF)
}

fn plus(at: jiff::Timestamp, d: Duration) -> jiff::Timestamp {
    at + jiff::SignedDuration::try_from(d).unwrap_or_default()
}

impl State {
    /// A workload as a list or watch saw it: one entry per waiting record,
    /// the others of the workload forgotten. Returns whether the timer
    /// should look again.
    pub(super) fn observe(&mut self, workload: &Workload3, seen: Seen) -> bool {
        let (kind, ns, name) = workload;
        let images: BTreeSet<&str> = seen.records.iter().map(|r| r.image.as_str()).collect();
        let before = self.entries.len();
        self.entries.retain(|k, _| {
            !(k.0 == *kind && k.1 == *ns && k.2 == *name) || images.contains(k.3.as_str())
        });
        let mut wake = self.entries.len() != before;
        for pending in seen.records {
            let key = (*kind, ns.clone(), name.clone(), pending.image.clone());
            let own = due_of(&pending, seen.approve.as_deref());
            match self.entries.get_mut(&key) {
                Some(entry) => {
                    let changed = entry.watched != seen.watched || entry.pending != pending;
                    let unparked = entry.parked.is_some_and(|at| at != seen.spec);
                    if unparked {
                        entry.parked = None;
                    }
                    entry.watched = seen.watched;
                    entry.spec = seen.spec;
                    entry.pending = pending;
                    entry.own = own;
                    if entry.parked.is_some() {
                        entry.due = Due::Never;
                        continue;
                    }
                    if changed || unparked {
                        // Something a person or a write changed: decided
                        // again now, its backoff forgotten.
                        entry.due = Due::Now;
                        entry.failures = 0;
                        if entry.busy {
                            entry.again = true;
                        }
                        wake = true;
                    }
                }
                None => {
                    // New to this replica: decided once (what changed while
                    // nobody watched), then by its own due time.
                    self.entries.insert(
                        key,
                        Entry {
                            pending,
                            watched: seen.watched,
                            spec: seen.spec,
                            own,
                            due: Due::Now,
                            busy: false,
                            again: false,
                            job: 0,
                            failures: 0,
                            parked: None,
                        },
                    );
                    wake = true;
                }
            }
        }
        wake
    }

    /// A workload deleted: its waiting pushes go with it.
    pub(super) fn forget(&mut self, (kind, ns, name): &Workload3) {
        self.entries
            .retain(|k, _| !(k.0 == *kind && k.1 == *ns && k.2 == *name));
    }

    /// A re-list of `kind` is done: what it did not show (deleted while
    /// the watch was down) is forgotten.
    pub(super) fn retain(&mut self, kind: Kind, listed: &BTreeSet<(String, String)>) {
        self.entries
            .retain(|k, _| k.0 != kind || listed.contains(&(k.1.clone(), k.2.clone())));
    }

    /// A new leader decides every waiting push once: whatever cleared
    /// while nobody led is carried out now (parked ones stay parked).
    pub(super) fn set_leader(&mut self, leader: bool) -> bool {
        if self.leader == leader {
            return false;
        }
        self.leader = leader;
        if leader {
            for entry in self.entries.values_mut() {
                if entry.parked.is_none() {
                    entry.due = Due::Now;
                    entry.failures = 0;
                }
            }
        }
        true
    }

    /// The waiting pushes by reason, as the leader counts them.
    pub(super) fn counts(&self) -> [(&'static str, usize); 3] {
        Reason::ALL.map(|reason| {
            let n = if self.leader {
                self.entries
                    .values()
                    .filter(|e| e.pending.reason == reason)
                    .count()
            } else {
                0
            };
            (reason.as_str(), n)
        })
    }

    /// What is due at `now` (when leading), marked busy; and the next due
    /// time.
    pub(super) fn start_due(
        &mut self,
        now: jiff::Timestamp,
    ) -> (Vec<Start>, Option<jiff::Timestamp>) {
        if !self.leader {
            return (Vec::new(), None);
        }
        let mut next: Option<jiff::Timestamp> = None;
        let mut starts = Vec::new();
        for (key, entry) in self.entries.iter_mut() {
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
            self.jobs += 1;
            entry.job = self.jobs;
            starts.push((key.clone(), entry.pending.clone(), self.jobs));
        }
        (starts, next)
    }

    /// Job `job` on `key` ended with `outcome` at `now`. Returns the delay
    /// before the next attempt when it failed (for the log).
    pub(super) fn done(
        &mut self,
        key: &Key,
        job: u64,
        outcome: Outcome,
        now: jiff::Timestamp,
    ) -> Option<Duration> {
        let entry = self.entries.get_mut(key).filter(|e| e.job == job)?;
        entry.busy = false;
        let mut retry = None;
        entry.due = match outcome {
            _ if entry.again => {
                entry.failures = 0;
                Due::Now
            }
            Outcome::Failed => {
                entry.failures = entry.failures.saturating_add(1);
                let delay = backoff(entry.failures);
                retry = Some(delay);
                Due::At(plus(now, delay))
            }
            Outcome::Rejected => {
                entry.failures = 0;
                entry.parked = Some(entry.spec);
                Due::Never
            }
            Outcome::Decided => {
                entry.failures = 0;
                // Decided and still waiting: its own due time, never one
                // already past (that would decide it again at once).
                match entry.own {
                    Due::Now => Due::Never,
                    Due::At(at) if at <= now => Due::At(plus(now, FIRST_BACKOFF)),
                    due => due,
                }
            }
        };
        retry
    }
}

/// What the watches tell the controller of one workload.
pub(super) fn seen<W: Workload>(obj: &W) -> Seen {
    let annotations = obj.annotations();
    let records = pending::all(annotations);
    if records.is_empty() {
        // Most workloads: nothing waits, and the hashes would only be
        // compared for entries this workload no longer has.
        return Seen {
            records,
            approve: None,
            watched: 0,
            spec: 0,
        };
    }
    let empty = BTreeMap::new();
    let template = obj
        .template()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .unwrap_or(&empty);
    let mut watched = std::collections::hash_map::DefaultHasher::new();
    for key in WATCHED {
        annotations.get(key).hash(&mut watched);
        template.get(key).hash(&mut watched);
    }
    let mut spec = std::collections::hash_map::DefaultHasher::new();
    obj.meta().generation.hash(&mut spec);
    annotations.hash(&mut spec);
    Seen {
        records,
        approve: annotations.get(APPROVE).cloned(),
        watched: watched.finish(),
        spec: spec.finish(),
    }
}

pub(super) struct Waiting {
    state: Mutex<State>,
    wake: Notify,
    kube: Kube,
    metrics: Arc<Metrics>,
    notifier: Notifier,
    namespaces: NamespaceFilter,
    permits: Arc<Semaphore>,
}

impl Waiting {
    pub(super) fn new(
        kube: Kube,
        metrics: Arc<Metrics>,
        notifier: Notifier,
        namespaces: NamespaceFilter,
    ) -> Arc<Waiting> {
        Arc::new(Waiting {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            kube,
            metrics,
            notifier,
            namespaces,
            permits: Arc::new(Semaphore::new(CONCURRENT)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_gauge(&self, state: &State) {
        self.metrics.policy.pending(&state.counts());
    }

    /// A workload as a list or watch saw it.
    pub(super) fn observe<W: Workload>(&self, obj: &W) {
        let key = (W::KIND, obj.namespace().unwrap_or_default(), obj.name_any());
        let mut state = self.lock();
        let wake = state.observe(&key, seen(obj));
        self.set_gauge(&state);
        drop(state);
        if wake {
            self.wake.notify_one();
        }
    }

    pub(super) fn forget(&self, workload: &Workload3) {
        let mut state = self.lock();
        state.forget(workload);
        self.set_gauge(&state);
    }

    /// A re-list of `kind` ended: see [`State::retain`].
    pub(super) fn retain(&self, kind: Kind, listed: &BTreeSet<(String, String)>) {
        let mut state = self.lock();
        state.retain(kind, listed);
        self.set_gauge(&state);
    }

    pub(super) fn set_leader(&self, leader: bool) {
        let mut state = self.lock();
        let changed = state.set_leader(leader);
        self.set_gauge(&state);
        drop(state);
        if changed {
            self.wake.notify_one();
        }
    }

    /// The one timer: sleeps until the next due time, or a wake.
    pub(super) async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        super::run_timer(shutdown, &self.wake, |now| self.start_due(now)).await;
    }

    /// Starts what is due at `now` (when leading); returns the next due time.
    fn start_due(self: &Arc<Self>, now: jiff::Timestamp) -> Option<jiff::Timestamp> {
        let (starts, next) = self.lock().start_due(now);
        for (key, pending, job) in starts {
            let this = self.clone();
            tokio::spawn(async move {
                let (outcome, error) = {
                    let _permit = this.permits.clone().acquire_owned().await;
                    this.carry_out(&key, &pending).await
                };
                let retry = this.lock().done(&key, job, outcome, jiff::Timestamp::now());
                if let Some(delay) = retry {
                    let (kind, ns, name, _) = &key;
                    tracing::warn!(kind = %kind, namespace = %ns, name = %name, digest = %pending.digest, error = error.as_deref().unwrap_or_default(), retry_in_seconds = delay.as_secs_f64(), "could not carry out a waiting push; retrying with backoff");
                }
                this.wake.notify_one();
            });
        }
        next
    }

    /// Decides the waiting push again and does what that says.
    async fn carry_out(&self, key: &Key, pending: &Pending) -> (Outcome, Option<String>) {
        let (kind, namespace, name, _) = key;
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
            namespaces: &self.namespaces,
            settings: Settings {
                mode: pending.mode,
                opt_in: pending.opt_in,
            },
            dry_run: false,
            origin: Origin::Waiting,
        };
        match executor.carry_out(&push, &w).await {
            Ok(handled) => {
                let result = handled.result;
                tracing::debug!(kind = %kind, namespace, name, digest = %pending.digest, result = result.as_str(), "waiting push decided");
                // The controller's own restarts count with serve's.
                if matches!(result, RestartResult::Restarted | RestartResult::Rejected) {
                    self.metrics.restart.handled(kind.as_str(), result.as_str());
                }
                if result == RestartResult::Rejected {
                    (Outcome::Rejected, None)
                } else {
                    (Outcome::Decided, None)
                }
            }
            Err(e) => (Outcome::Failed, Some(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::Mode;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn ts(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    fn record(image: &str, digest: &str, reason: Reason, not_before: Option<&str>) -> Pending {
        Pending {
            image: image.into(),
            digest: digest.into(),
            publish_time: ts("2026-12-01T10:00:00Z"),
            message_id: None,
            containers: vec!["app".into()],
            reason,
            since: ts("2026-12-01T10:00:00Z"),
            not_before: not_before.map(ts),
            error: None,
            mode: Mode::Restart,
            opt_in: false,
        }
    }

    fn seen(records: Vec<Pending>, watched: u64, spec: u64) -> Seen {
        Seen {
            records,
            approve: None,
            watched,
            spec,
        }
    }

    fn api() -> Workload3 {
        (Kind::Deployment, "prod".into(), "api".into())
    }

    fn leading() -> State {
        let mut s = State::default();
        s.set_leader(true);
        s
    }

    const NOW: &str = "2026-12-01T10:00:00Z";

    /// The race a timing-dependent test once showed: a job outlives its
    /// entry (its own write removed the record, then a newer one was
    /// written). Its end must not settle the newer entry, whose own job
    /// then runs.
    #[test]
    fn a_job_that_outlived_its_entry_never_settles_the_newer_one() {
        let mut s = leading();
        let now = ts(NOW);
        let app = "r.example/app:v1";
        s.observe(
            &api(),
            seen(vec![record(app, D1, Reason::Approval, None)], 1, 1),
        );
        let (starts, _) = s.start_due(now);
        let (key, _, job1) = starts[0].clone();
        // The job's write removed the record; the watch says so.
        s.observe(&api(), seen(vec![], 2, 2));
        // A newer push waits again, while job 1 is still finishing.
        s.observe(
            &api(),
            seen(vec![record(app, D2, Reason::Approval, None)], 3, 3),
        );
        let (starts, _) = s.start_due(now);
        assert_eq!(starts.len(), 1, "the newer record is decided");
        let job2 = starts[0].2;
        assert_ne!(job1, job2);
        // Job 1 ends (failed): nothing of the newer entry changes.
        assert_eq!(s.done(&key, job1, Outcome::Failed, now), None);
        assert!(s.entries[&key].busy, "job 2 still holds it");
        // Job 2 fails: it is retried with backoff, not lost.
        assert_eq!(
            s.done(&key, job2, Outcome::Failed, now),
            Some(Duration::from_secs(1))
        );
        let (starts, next) = s.start_due(now);
        assert!(starts.is_empty());
        assert_eq!(next, Some(plus(now, Duration::from_secs(1))));
        let (starts, _) = s.start_due(plus(now, Duration::from_secs(1)));
        assert_eq!(starts.len(), 1, "the retry runs");
    }

    #[test]
    fn failures_back_off_to_five_minutes() {
        let delays: Vec<u64> = (1..=12).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        let mut s = leading();
        let mut now = ts(NOW);
        s.observe(
            &api(),
            seen(
                vec![record("r/app:v1", D1, Reason::Window, Some(NOW))],
                1,
                1,
            ),
        );
        let mut waits = Vec::new();
        for _ in 0..10 {
            let (starts, next) = s.start_due(now);
            let (key, _, job) = starts.into_iter().next().expect("due");
            assert_eq!(next, None);
            let delay = s.done(&key, job, Outcome::Failed, now).unwrap();
            waits.push(delay.as_secs());
            // Nothing runs before the delay is over.
            let (early, _) = s.start_due(plus(now, delay - Duration::from_millis(1)));
            assert!(early.is_empty());
            now = plus(now, delay);
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]);
        let (starts, _) = s.start_due(now);
        let (key, _, job) = starts.into_iter().next().expect("due");
        assert_eq!(s.done(&key, job, Outcome::Failed, now), Some(MAX_BACKOFF));
        // The same workload seen again (status only): the backoff stays.
        s.observe(
            &api(),
            seen(
                vec![record("r/app:v1", D1, Reason::Window, Some(NOW))],
                1,
                1,
            ),
        );
        let (starts, _) = s.start_due(plus(now, Duration::from_secs(1)));
        assert!(
            starts.is_empty(),
            "a status update does not reset the backoff"
        );
    }

    #[test]
    fn a_rejected_push_waits_for_the_workload_to_change() {
        let mut s = leading();
        let now = ts(NOW);
        let r = record("r/app:v1", D1, Reason::Window, Some(NOW));
        s.observe(&api(), seen(vec![r.clone()], 1, 1));
        let (starts, _) = s.start_due(now);
        let (key, _, job) = starts[0].clone();
        assert_eq!(s.done(&key, job, Outcome::Rejected, now), None);
        // Seen again and again unchanged (status updates), and a new leader:
        // never tried again.
        for i in 0..9 {
            s.observe(&api(), seen(vec![r.clone()], 1, 1));
            if i == 4 {
                s.set_leader(false);
                s.set_leader(true);
            }
            let (starts, next) = s.start_due(plus(now, Duration::from_secs(3600)));
            assert!(starts.is_empty() && next.is_none(), "parked");
        }
        // Its annotations or generation changed: tried at once.
        s.observe(&api(), seen(vec![r], 1, 2));
        let (starts, _) = s.start_due(now);
        assert_eq!(starts.len(), 1);
    }

    #[test]
    fn two_images_wait_side_by_side() {
        let mut s = leading();
        let now = ts(NOW);
        let app = record("r/app:v1", D1, Reason::Window, Some("2026-12-01T12:00:00Z"));
        let side = record(
            "r/side:v1",
            D2,
            Reason::Window,
            Some("2026-12-01T12:00:00Z"),
        );
        s.observe(&api(), seen(vec![app.clone(), side.clone()], 1, 1));
        assert_eq!(s.counts()[1], ("window", 2));
        let (starts, _) = s.start_due(now);
        for (key, _, job) in starts {
            s.done(&key, job, Outcome::Decided, now);
        }
        let (starts, next) = s.start_due(now);
        assert!(starts.is_empty());
        assert_eq!(next, Some(ts("2026-12-01T12:00:00Z")));
        let (starts, _) = s.start_due(ts("2026-12-01T12:00:00Z"));
        let mut images: Vec<String> = starts.iter().map(|s| s.1.image.clone()).collect();
        images.sort();
        assert_eq!(
            images,
            ["r/app:v1", "r/side:v1"],
            "both roll when the window opens"
        );
        // The app's record removed by its restart: the sidecar's stays.
        s.observe(&api(), seen(vec![side], 2, 2));
        assert_eq!(s.counts()[1], ("window", 1));
    }

    #[test]
    fn a_relist_forgets_what_it_no_longer_shows() {
        let mut s = leading();
        let r = record("r/app:v1", D1, Reason::Approval, None);
        for round in 0..10 {
            for name in ["a", "b", "c"] {
                s.observe(
                    &(Kind::Deployment, "prod".into(), name.into()),
                    seen(vec![r.clone()], 1, 1),
                );
            }
            s.observe(
                &(Kind::StatefulSet, "prod".into(), "db".into()),
                seen(vec![r.clone()], 1, 1),
            );
            // "b" and "c" were deleted while the watch was down.
            let listed: BTreeSet<(String, String)> = [("prod".into(), "a".into())].into();
            s.retain(Kind::Deployment, &listed);
            let names: BTreeSet<&str> = s.entries.keys().map(|k| k.2.as_str()).collect();
            assert_eq!(names, ["a", "db"].into(), "round {round}");
            s.retain(Kind::Deployment, &BTreeSet::new());
            s.retain(Kind::StatefulSet, &BTreeSet::new());
            assert!(s.entries.is_empty(), "round {round}");
            assert_eq!(s.counts()[0], ("approval", 0));
        }
    }

    #[test]
    fn a_changed_annotation_wakes_at_once() {
        let mut s = leading();
        let now = ts(NOW);
        let r = record("r/app:v1", D1, Reason::Approval, None);
        s.observe(&api(), seen(vec![r.clone()], 1, 1));
        let (starts, _) = s.start_due(now);
        s.done(&starts[0].0, starts[0].2, Outcome::Decided, now);
        assert!(s.start_due(now).0.is_empty(), "waits for a change");
        // A template-level policy annotation changed (the watched hash).
        assert!(s.observe(&api(), seen(vec![r], 2, 2)));
        assert_eq!(s.start_due(now).0.len(), 1);
    }
}
