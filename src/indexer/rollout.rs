//! The rollout follower: every rollout pushroll started, followed to its
//! end from the workload watches the indexer already has (no polling, no
//! watch of its own), and reported by the Lease holder with an Event, a
//! metric and a log line. Judging is pure (`crate::rollout`); this holds
//! the little state the follower needs and makes its API calls.
//!
//! Which rollouts are pushroll's: only those whose workload carries the
//! record of pushroll's own restart at the generation that write produced
//! (`rollout::ours`). A template that came any other way (a person's
//! rollback, restart or edit, a sync, pushroll's own undo) moves the
//! generation on, and its rollout is never judged.
//!
//! Every replica tracks, only the leader reports: a replica that takes over
//! mid-rollout already knows where each rollout stands. Reports are Events
//! with deterministic names (create, 409 = already reported), so a leader
//! change, a restart or a redelivered watch event never reports twice. A
//! report that fails is retried with backoff (up to 5 minutes), holding a
//! report slot only while it makes its calls, and is told and counted
//! once however many attempts it takes. A re-list forgets what it no
//! longer shows (`retain`).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt as _;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::k8s::{EventKind, Kube, KubeError, rollout_event};
use crate::metrics::Metrics;
use crate::notify::{Happening, Notifier, Subject, What};
use crate::rollout::{Followed, Progress, Pushed, StalePod, ours, selector_query, stale_pods};
use crate::workload::Kind;

/// Reports made at once (each is one pods LIST and one or two Events).
const CONCURRENT_REPORTS: usize = 4;
/// Entries that ended stay this long past their timeout, so that watch
/// events repeating them cost nothing.
const KEEP_ENDED: Duration = Duration::from_secs(60);
/// A failed report's retries: from this, doubling, up to the cap.
const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(300);

type Key = (Kind, String, String);

/// How a rollout ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ending {
    /// At `at`, when the watch showed it complete.
    Complete {
        at: jiff::Timestamp,
        /// Already complete when first seen (an indexer that started
        /// late): when it completed is unknown, so no duration.
        late: bool,
    },
    Failed {
        why: String,
        at: jiff::Timestamp,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    Following,
    /// Ended; reported when this replica leads.
    Ended(Ending),
    Reporting,
    Reported,
    /// Not rolled by its controller (`OnDelete`): nothing to follow.
    Unfollowable,
}

/// One followed rollout: a few fields, not the object.
#[derive(Debug, Clone)]
struct Entry {
    pushed: Pushed,
    /// The first rolled container's image, as notifications name it.
    image: Option<String>,
    uid: Option<String>,
    selector: Option<String>,
    stage: Stage,
}

impl Entry {
    fn deadline(&self, timeout: Duration) -> jiff::Timestamp {
        self.pushed.restarted_at + jiff::SignedDuration::try_from(timeout).unwrap_or_default()
    }
}

#[derive(Default)]
struct Tracker {
    leader: bool,
    entries: HashMap<Key, Entry>,
}

pub(super) struct Rollouts {
    tracker: Mutex<Tracker>,
    /// A new deadline, or leadership: the timer looks again.
    wake: Notify,
    kube: Kube,
    metrics: Arc<Metrics>,
    timeout: Duration,
    reports: Arc<Semaphore>,
    /// Tells `--notify-url` of each rollout's end (once, with its Event).
    notifier: Notifier,
}

/// What a report needs, copied out of the tracker.
struct Job {
    key: Key,
    entry: Entry,
    ending: Ending,
}

impl Rollouts {
    pub(super) fn new(
        kube: Kube,
        metrics: Arc<Metrics>,
        timeout: Duration,
        notifier: Notifier,
    ) -> Arc<Rollouts> {
        Arc::new(Rollouts {
            tracker: Mutex::new(Tracker::default()),
            wake: Notify::new(),
            kube,
            metrics,
            timeout,
            reports: Arc::new(Semaphore::new(CONCURRENT_REPORTS)),
            notifier,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tracker> {
        // A panic while holding it leaves plain data behind: keep going.
        self.tracker.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A workload as a list or watch saw it.
    pub(super) fn observe<W: Followed>(self: &Arc<Self>, obj: &W) {
        let key = (W::KIND, obj.namespace().unwrap_or_default(), obj.name_any());
        let Some(pushed) = ours(obj.annotations(), obj.meta().generation) else {
            // Never rolled by pushroll (most workloads), or its template
            // has moved on since pushroll's write: nothing is kept.
            let mut tracker = self.lock();
            if let Some(entry) = tracker.entries.remove(&key) {
                if entry.stage == Stage::Following {
                    tracing::info!(kind = %key.0, namespace = %key.1, name = %key.2, digest = %entry.pushed.digest, "rollout no longer followed: the workload changed since pushroll's restart (a rollback, a restart, an edit); it is not pushroll's to judge");
                }
                self.set_in_progress(&tracker);
            }
            return;
        };
        let now = jiff::Timestamp::now();
        let progress = obj.progress();
        let mut tracker = self.lock();
        // The same push, its record carried to a later generation by
        // pushroll's own annotation write (a Deployment), is the same
        // rollout: followed on, never restarted.
        let known = match tracker.entries.get_mut(&key) {
            Some(e) if e.pushed.same_push(&pushed) => {
                e.pushed.generation = pushed.generation;
                true
            }
            _ => false,
        };
        if !known {
            let image = pushed.image.clone().or_else(|| {
                obj.template()
                    .and_then(|t| t.spec.as_ref())
                    .and_then(|spec| {
                        let first = pushed.containers.first()?;
                        spec.containers.iter().find(|c| &c.name == first)
                    })
                    .and_then(|c| c.image.clone())
            });
            let entry = Entry {
                pushed,
                image,
                uid: obj.uid(),
                selector: obj.selector().and_then(selector_query),
                stage: Stage::Following,
            };
            // Past its timeout when first seen (an indexer starting late):
            // not ours to report again.
            if entry.deadline(self.timeout) < now {
                tracker.entries.remove(&key);
                return;
            }
            tracker.entries.insert(key.clone(), entry);
            self.wake.notify_one();
        }
        let entry = tracker.entries.get_mut(&key).expect("inserted above");
        if entry.stage != Stage::Following {
            return;
        }
        entry.stage = match progress {
            Progress::Waiting(_) => Stage::Following,
            Progress::Complete => Stage::Ended(Ending::Complete {
                at: now,
                late: !known,
            }),
            Progress::Failed(why) => Stage::Ended(Ending::Failed { why, at: now }),
            Progress::Unfollowable(why) => {
                tracing::info!(kind = %key.0, namespace = %key.1, name = %key.2, why, "rollout not followed");
                Stage::Unfollowable
            }
        };
        self.report_ended(tracker, std::slice::from_ref(&key));
    }

    /// A workload deleted: its rollout ends with it, unreported.
    pub(super) fn forget(&self, kind: Kind, namespace: &str, name: &str) {
        let mut tracker = self.lock();
        if tracker
            .entries
            .remove(&(kind, namespace.to_owned(), name.to_owned()))
            .is_some()
        {
            self.set_in_progress(&tracker);
        }
    }

    /// A re-list of `kind` ended: a workload it did not show was deleted
    /// while the watch was down, and is forgotten unreported.
    pub(super) fn retain(&self, kind: Kind, listed: &BTreeSet<(String, String)>) {
        let mut tracker = self.lock();
        let before = tracker.entries.len();
        tracker
            .entries
            .retain(|k, _| k.0 != kind || listed.contains(&(k.1.clone(), k.2.clone())));
        if tracker.entries.len() != before {
            self.set_in_progress(&tracker);
        }
    }

    /// Leadership as the election says; a new leader reports what ended
    /// while nobody did.
    pub(super) fn set_leader(self: &Arc<Self>, leader: bool) {
        let mut tracker = self.lock();
        if tracker.leader == leader {
            return;
        }
        tracker.leader = leader;
        let keys: Vec<Key> = tracker.entries.keys().cloned().collect();
        self.report_ended(tracker, &keys);
        self.wake.notify_one();
    }

    /// Starts the reports of those of `keys` that ended (when this replica
    /// leads), outside the lock.
    fn report_ended(
        self: &Arc<Self>,
        mut tracker: std::sync::MutexGuard<'_, Tracker>,
        keys: &[Key],
    ) {
        let jobs: Vec<Job> = keys
            .iter()
            .filter_map(|k| self.take_job(&mut tracker, k))
            .collect();
        self.set_in_progress(&tracker);
        drop(tracker);
        for job in jobs {
            self.spawn_report(job);
        }
    }

    /// The report to make now for `key`, if it ended and this replica leads.
    fn take_job(&self, tracker: &mut Tracker, key: &Key) -> Option<Job> {
        if !tracker.leader {
            return None;
        }
        let entry = tracker.entries.get_mut(key)?;
        let Stage::Ended(ending) = &entry.stage else {
            return None;
        };
        let ending = ending.clone();
        entry.stage = Stage::Reporting;
        Some(Job {
            key: key.clone(),
            entry: entry.clone(),
            ending,
        })
    }

    fn set_in_progress(&self, tracker: &Tracker) {
        let n = if tracker.leader {
            tracker
                .entries
                .values()
                .filter(|e| {
                    matches!(
                        e.stage,
                        Stage::Following | Stage::Ended(_) | Stage::Reporting
                    )
                })
                .count()
        } else {
            0
        };
        self.metrics.rollout.in_progress(n);
    }

    /// The one timer: sleeps until the next rollout's timeout, fails what
    /// is past it, forgets what ended long ago.
    pub(super) async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        super::run_timer(shutdown, &self.wake, |now| self.tick(now)).await;
    }

    /// One pass at `now`; returns the next time one is due.
    fn tick(self: &Arc<Self>, now: jiff::Timestamp) -> Option<jiff::Timestamp> {
        let keep = jiff::SignedDuration::try_from(KEEP_ENDED).unwrap_or_default();
        let mut tracker = self.lock();
        let mut next: Option<jiff::Timestamp> = None;
        let mut due = Vec::new();
        tracker.entries.retain(|key, entry| {
            let deadline = entry.deadline(self.timeout);
            match &entry.stage {
                Stage::Following if deadline <= now => {
                    entry.stage = Stage::Ended(Ending::Failed {
                        why: format!(
                            "not complete within --rollout-timeout ({})",
                            humantime::format_duration(self.timeout)
                        ),
                        at: now,
                    });
                    due.push(key.clone());
                }
                Stage::Following => {
                    next = Some(next.map_or(deadline, |n| n.min(deadline)));
                    return true;
                }
                Stage::Reporting => return true,
                _ => {}
            }
            let forget_at = deadline + keep;
            if forget_at <= now {
                return false;
            }
            next = Some(next.map_or(forget_at, |n| n.min(forget_at)));
            true
        });
        self.report_ended(tracker, &due);
        next
    }

    fn spawn_report(self: &Arc<Self>, job: Job) {
        let this = self.clone();
        tokio::spawn(async move {
            this.report_until_done(job).await;
        });
    }

    /// Retries with backoff while this replica leads and the rollout is
    /// still the one tracked: every step is safe to repeat. A slot is held
    /// only for an attempt's calls, never across the wait, so a report
    /// that keeps failing never holds up the others.
    async fn report_until_done(self: &Arc<Self>, job: Job) {
        let mut delays = backon::BackoffBuilder::build(
            backon::ExponentialBuilder::default()
                .with_min_delay(FIRST_RETRY)
                .with_max_delay(MAX_RETRY)
                .without_max_times(),
        );
        // Events this job created, or may have (an attempt that timed out):
        // a retry that meets them (409) still counts and tells them, once.
        let mut ours = BTreeSet::new();
        let mut told = BTreeSet::new();
        let mut failures = 0u32;
        loop {
            let attempt = {
                let _permit = self.reports.clone().acquire_owned().await;
                self.report(&job, &mut ours, &mut told).await
            };
            match attempt {
                Ok(()) => {
                    self.finish(&job, Stage::Reported);
                    return;
                }
                Err(e) => {
                    failures += 1;
                    let delay = delays.next().unwrap_or(MAX_RETRY);
                    // The first failure and every tenth at warn, the rest
                    // at debug: a stuck report stays visible without
                    // flooding the log.
                    if failures == 1 || failures.is_multiple_of(10) {
                        tracing::warn!(kind = %job.key.0, namespace = %job.key.1, name = %job.key.2, error = %e, attempts = failures, retry_in_seconds = delay.as_secs_f64(), "could not report the rollout's end; retrying with backoff");
                    } else {
                        tracing::debug!(kind = %job.key.0, namespace = %job.key.1, name = %job.key.2, error = %e, attempts = failures, retry_in_seconds = delay.as_secs_f64(), "could not report the rollout's end; retrying with backoff");
                    }
                    tokio::time::sleep(delay).await;
                }
            }
            let tracker = self.lock();
            let current = tracker.entries.get(&job.key).is_some_and(|e| {
                e.pushed.same_push(&job.entry.pushed) && e.stage == Stage::Reporting
            });
            if !tracker.leader || !current {
                drop(tracker);
                // Another leader reports it (the same Event names), or it
                // is gone.
                self.finish(&job, Stage::Ended(job.ending.clone()));
                return;
            }
        }
    }

    fn finish(&self, job: &Job, stage: Stage) {
        let mut tracker = self.lock();
        if let Some(e) = tracker.entries.get_mut(&job.key)
            && e.pushed.same_push(&job.entry.pushed)
            && e.stage == Stage::Reporting
        {
            e.stage = stage;
        }
        self.set_in_progress(&tracker);
    }

    /// The report: for a completion, one LIST of the pods first (what they
    /// run), then the Events. Metrics and the log line count only Events
    /// this call created, so a rollout is counted once.
    async fn report(
        &self,
        job: &Job,
        ours: &mut BTreeSet<EventKind>,
        told: &mut BTreeSet<EventKind>,
    ) -> Result<(), KubeError> {
        let (kind, ns, name) = &job.key;
        let pushed = &job.entry.pushed;
        let meta = ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            uid: job.entry.uid.clone(),
            ..ObjectMeta::default()
        };
        let now = jiff::Timestamp::now();
        let event = |what, message| rollout_event(*kind, &meta, what, &pushed.digest, message, now);
        match &job.ending {
            Ending::Complete { at, late } => {
                let took = (!late).then(|| since(pushed.restarted_at, *at));
                let stale = match &job.entry.selector {
                    Some(selector) => {
                        let pods = self.kube.list_pods(ns, selector).await?;
                        stale_pods(&pods, &pushed.containers, &pushed.digest)
                    }
                    None => Vec::new(),
                };
                let message = match took {
                    Some(took) => format!(
                        "Rollout of {} complete after {}",
                        pushed.digest,
                        humantime::format_duration(round(took))
                    ),
                    None => format!("Rollout of {} complete", pushed.digest),
                };
                let first = self
                    .create_once(
                        EventKind::RolloutComplete,
                        &event(EventKind::RolloutComplete, message.clone()),
                        ours,
                        told,
                    )
                    .await?;
                let stale_text = stale_message(pushed, &stale);
                let stale_first = !stale.is_empty()
                    && self
                        .create_once(
                            EventKind::ImageStale,
                            &event(EventKind::ImageStale, stale_text.clone()),
                            ours,
                            told,
                        )
                        .await?;
                // Told once, as the Events are recorded once.
                if first {
                    self.tell(job, What::RolloutComplete, message);
                }
                if stale_first {
                    self.tell(job, What::ImageStale, stale_text);
                }
                if first {
                    let result = if stale.is_empty() {
                        "complete"
                    } else {
                        "stale"
                    };
                    self.metrics.rollout.ended(kind.as_str(), result, took);
                    tracing::info!(kind = %kind, namespace = %ns, name = %name, digest = %pushed.digest, result, duration_seconds = took.map(|t| t.as_secs_f64()), stale_pods = stale.len(), "rollout finished");
                } else {
                    tracing::debug!(kind = %kind, namespace = %ns, name = %name, digest = %pushed.digest, "rollout already reported");
                }
            }
            Ending::Failed { why, at } => {
                let took = since(pushed.restarted_at, *at);
                let message = format!("Rollout of {} failed: {why}", pushed.digest);
                let first = self
                    .create_once(
                        EventKind::RolloutFailed,
                        &event(EventKind::RolloutFailed, message.clone()),
                        ours,
                        told,
                    )
                    .await?;
                if first {
                    self.tell(job, What::RolloutFailed, message.clone());
                    self.metrics.rollout.ended(kind.as_str(), "failed", None);
                    tracing::warn!(kind = %kind, namespace = %ns, name = %name, digest = %pushed.digest, result = "failed", duration_seconds = took.as_secs_f64(), why, "rollout finished");
                }
                // Whether or not this call recorded the failure: a leader
                // that died between the Event and the undo left it to us.
                let undone = super::undo::undo(
                    &self.kube,
                    &self.metrics,
                    (*kind, ns, name),
                    pushed,
                    job.entry.selector.as_deref(),
                )
                .await?;
                if let Some(message) = undone
                    && told.insert(EventKind::RolloutUndone)
                {
                    self.tell(job, What::Undone, message);
                }
            }
        }
        Ok(())
    }
}

impl Rollouts {
    /// Creates the Event `kind`; true when this job created it and has not
    /// told it yet (so it is counted and told once, however many attempts
    /// the report takes). Event names are deterministic, so a 409 means it
    /// exists: ours if an earlier attempt of this job created it or timed
    /// out trying (the API server may have applied it), else another
    /// leader's.
    async fn create_once(
        &self,
        kind: EventKind,
        event: &Event,
        ours: &mut BTreeSet<EventKind>,
        told: &mut BTreeSet<EventKind>,
    ) -> Result<bool, KubeError> {
        if told.contains(&kind) {
            return Ok(false);
        }
        let created = match self.kube.create_event(event).await {
            Ok(()) => {
                ours.insert(kind);
                true
            }
            Err(KubeError::Conflict(_)) => ours.contains(&kind),
            Err(e) => {
                if matches!(e, KubeError::Unavailable(_)) {
                    ours.insert(kind);
                }
                return Err(e);
            }
        };
        Ok(created && told.insert(kind))
    }

    /// A notification of a rollout's end (`--notify-url`).
    fn tell(&self, job: &Job, what: What, message: String) {
        let ((kind, ns, name), pushed) = (&job.key, &job.entry.pushed);
        self.notifier.send(Happening {
            event: what,
            workload: Subject {
                kind: *kind,
                namespace: ns.clone(),
                name: name.clone(),
            },
            image: job.entry.image.clone(),
            digest: pushed.digest.clone(),
            message_id: None,
            time: jiff::Timestamp::now(),
            message,
        });
    }
}

fn since(from: jiff::Timestamp, to: jiff::Timestamp) -> Duration {
    Duration::try_from(to.duration_since(from)).unwrap_or_default()
}

fn round(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64 / 100 * 100)
}

/// Names every stale pod (a bounded number), its node and what it runs.
fn stale_message(pushed: &Pushed, stale: &[StalePod]) -> String {
    const SHOWN: usize = 10;
    let mut pods: Vec<String> = stale
        .iter()
        .take(SHOWN)
        .map(|s| {
            format!(
                "{} on {} runs {} in {}",
                s.pod, s.node, s.digest, s.container
            )
        })
        .collect();
    if stale.len() > SHOWN {
        pods.push(format!("and {} more", stale.len() - SHOWN));
    }
    format!(
        "Rollout complete, but pods do not run the pushed digest {} (a cached image: see imagePullPolicy, or pushroll.io/mode: pin): {}",
        pushed.digest,
        pods.join("; ")
    )
}
