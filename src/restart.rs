//! The executor: carries out the planner's decisions through the API,
//! a bounded number of workloads at a time.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::Semaphore;

use kube::api::DynamicObject;

use crate::k8s::{EventKind, Kube, KubeError, restart_event, workload_event};
use crate::metrics::Metrics;
use crate::notify::{Happening, Notifier, Subject, What};
use crate::plan::{RestartResult, restart_patch, workload_view};
use crate::policy::{
    Decision, Facts, Settings, decide, drop_waiting, metadata_patch, set_annotations,
};
use crate::workload::{Kind, NamespaceFilter, WorkloadRef};

/// How often a patch refused for a stale resourceVersion is re-read and
/// re-planned before the push is answered 503 (the controller: retried
/// with backoff).
const CONFLICT_ATTEMPTS: usize = 5;
/// The pause before the first re-read after a conflict; each next one
/// waits twice as long (25, 50, 100, 200 ms: at most 375 ms in all).
/// Right after a template change (a person's edit that releases a waiting
/// push, a rollout) the Deployment controller writes the status several
/// times within ~100-200 ms, and each write moves the resourceVersion:
/// re-reading at once lost all of three attempts on the real API server
/// (tests/it/controller.rs), and the waiting push then waited for the
/// controller's 1 s backoff instead of being released within a second.
const CONFLICT_PAUSE: std::time::Duration = std::time::Duration::from_millis(25);

/// The outcome for one workload, as the 200 body lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkloadResult {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub result: RestartResult,
    /// Why, when the API server rejected the patch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Why the restart may not bring the pushed digest (the pull policy).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// A workload that could not be handled; a redelivery can finish it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadFailure {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub error: String,
}

/// What one push asks the executor to do.
pub struct Push<'a> {
    /// The normalized tagged image (`domain/path:tag`).
    pub image_key: &'a str,
    pub digest: &'a str,
    pub message_id: Option<&'a str>,
    /// When the message was published: an older push than the one a
    /// workload last rolled to is `superseded`.
    pub published: jiff::Timestamp,
}

pub struct Restarter {
    /// `None` when running without a cluster (`serve --demo`): every
    /// allowed workload is reported as `would-restart` from the index alone.
    kube: Option<Kube>,
    namespaces: NamespaceFilter,
    dry_run: bool,
    /// `serve --mode` and `--opt-in`.
    settings: Settings,
    /// Bounds API work across all pushes in flight (`--max-concurrent-restarts`).
    permits: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    /// Tells `--notify-url` of restarts and waiting pushes.
    notifier: Notifier,
}

impl Restarter {
    pub fn new(
        kube: Option<Kube>,
        namespaces: NamespaceFilter,
        dry_run: bool,
        settings: Settings,
        max_concurrent: usize,
        metrics: Arc<Metrics>,
        notifier: Notifier,
    ) -> Restarter {
        Restarter {
            kube,
            namespaces,
            dry_run,
            settings,
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
            metrics,
            notifier,
        }
    }

    /// Handles every workload; failures do not stop the others, so what
    /// succeeded stays done and a redelivery finishes the rest.
    pub async fn restart_all(
        &self,
        push: &Push<'_>,
        workloads: &[WorkloadRef],
    ) -> (Vec<WorkloadResult>, Vec<WorkloadFailure>) {
        // The semaphore inside restart_one bounds the API work.
        let pending: Vec<_> = workloads
            .iter()
            .map(|w| self.restart_one(push, w))
            .collect();
        let outcomes = futures::future::join_all(pending).await;
        let mut done = Vec::with_capacity(outcomes.len());
        let mut failed = Vec::new();
        for (w, outcome) in workloads.iter().zip(outcomes) {
            match outcome {
                Ok(Handled {
                    result,
                    detail,
                    warnings,
                }) => {
                    self.metrics
                        .restart
                        .handled(w.kind.as_str(), result.as_str());
                    done.push(WorkloadResult {
                        kind: w.kind,
                        namespace: w.namespace.clone(),
                        name: w.name.clone(),
                        result,
                        detail,
                        warnings,
                    });
                }
                Err(e) => {
                    self.metrics.restart.handled(w.kind.as_str(), "failed");
                    tracing::warn!(kind = %w.kind, namespace = %w.namespace, name = %w.name, error = %e, "restart failed; the push will be retried");
                    failed.push(WorkloadFailure {
                        kind: w.kind,
                        namespace: w.namespace.clone(),
                        name: w.name.clone(),
                        error: e.to_string(),
                    });
                }
            }
        }
        (done, failed)
    }

    async fn restart_one(&self, push: &Push<'_>, w: &WorkloadRef) -> Result<Handled, KubeError> {
        let Some(kube) = &self.kube else {
            if !self.namespaces.allows(&w.namespace) {
                return Ok(RestartResult::Excluded.into());
            }
            return Ok(if self.dry_run {
                RestartResult::WouldRestart
            } else {
                RestartResult::NotFound
            }
            .into());
        };
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let executor = Executor {
            kube,
            metrics: &self.metrics,
            notifier: &self.notifier,
            namespaces: &self.namespaces,
            settings: self.settings,
            dry_run: self.dry_run,
            origin: Origin::Delivery,
        };
        executor.carry_out(push, w).await
    }
}

/// Where a push being carried out comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A delivery to serve.
    Delivery,
    /// A waiting push (`pushroll.io/pending`), carried out by the
    /// indexer's controller: a record that turns out obsolete is removed.
    Waiting,
}

/// Carries out one push on one workload: read, decide ([`decide`]), write
/// with the resourceVersion read, record. Serve and the controller share
/// it, so both apply the same rules, patch and Events, and the same
/// namespace bounds: every path that writes a workload passes here.
pub(crate) struct Executor<'a> {
    pub(crate) kube: &'a Kube,
    pub(crate) metrics: &'a Metrics,
    pub(crate) notifier: &'a Notifier,
    /// `--namespace` / `--exclude-namespace`: outside them nothing is
    /// read or written, and a waiting record there is left as it is.
    pub(crate) namespaces: &'a NamespaceFilter,
    pub(crate) settings: Settings,
    pub(crate) dry_run: bool,
    pub(crate) origin: Origin,
}

impl Executor<'_> {
    pub(crate) async fn carry_out(
        &self,
        push: &Push<'_>,
        w: &WorkloadRef,
    ) -> Result<Handled, KubeError> {
        if !self.namespaces.allows(&w.namespace) {
            return Ok(RestartResult::Excluded.into());
        }
        let kube = self.kube;
        let facts = Facts {
            image_key: push.image_key,
            digest: push.digest,
            published: push.published,
            message_id: push.message_id,
        };
        for attempt in 0..CONFLICT_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(CONFLICT_PAUSE * (1 << (attempt - 1))).await;
            }
            let obj = match kube.get_workload(w.kind, &w.namespace, &w.name).await {
                Ok(obj) => obj,
                Err(KubeError::NotFound) => return Ok(RestartResult::NotFound.into()),
                Err(e) => return Err(e),
            };
            let mut view = workload_view(&obj);
            view.annotations_move_generation = w.kind == Kind::Deployment;
            let now = jiff::Timestamp::now();
            let decision = decide(&view, &facts, self.settings, now);
            let result = decision.result(self.dry_run);
            let rv = view.resource_version.as_deref();
            // What to write, if anything; the Skip and Wait answers are
            // final once written.
            let patch = match &decision {
                Decision::Skip(_) => {
                    let obsolete = self.origin == Origin::Waiting
                        && !self.dry_run
                        && crate::policy::pending::of_image(&view.annotations, push.image_key)
                            .is_some_and(|p| p.digest == push.digest);
                    if !obsolete {
                        return Ok(self.skipped(result));
                    }
                    metadata_patch(rv, &drop_waiting(&view, push.image_key))
                }
                Decision::Wait {
                    write, metadata, ..
                } => {
                    if self.dry_run || !write {
                        return Ok(result.into());
                    }
                    metadata_patch(rv, metadata)
                }
                Decision::Restart { warnings, .. } if self.dry_run => {
                    return Ok(Handled::warned(RestartResult::WouldRestart, warnings));
                }
                Decision::Restart {
                    containers,
                    pins,
                    metadata,
                    ..
                } => {
                    let mut patch =
                        restart_patch(rv, containers, pins, push.digest, push.published, now);
                    set_annotations(&mut patch, metadata);
                    patch
                }
            };
            let patched = match kube
                .patch_workload(w.kind, &w.namespace, &w.name, &patch)
                .await
            {
                Ok(patched) => patched,
                Err(KubeError::Conflict(_)) => continue,
                Err(KubeError::NotFound) => return Ok(RestartResult::NotFound.into()),
                Err(KubeError::Rejected { code, message }) => {
                    let detail = format!("the API server rejected the write ({code}): {message}");
                    return Ok(rejected(kube, w, &obj, push, detail, now).await);
                }
                Err(e) => return Err(e),
            };
            if let Decision::Restart { metadata, .. } = &decision {
                check_generation(w, &patched, metadata);
            }
            let handled = self.record(w, &patched, push, &decision, result, now).await;
            if let Decision::Skip(_) = decision {
                return Ok(self.skipped(handled.result));
            }
            return Ok(handled);
        }
        Err(KubeError::Conflict(format!(
            "still conflicting after {CONFLICT_ATTEMPTS} attempts"
        )))
    }

    /// A final skip: a refusal is counted here, once per answer (never per
    /// conflict retry, never in dry-run).
    fn skipped(&self, result: RestartResult) -> Handled {
        if result == RestartResult::Refused && !self.dry_run {
            self.metrics.policy.decided(result.as_str());
        }
        result.into()
    }

    /// After a write: the Events, metrics and log line of what it did. A
    /// lost Event must not make Pub/Sub redeliver, so it is only logged.
    async fn record(
        &self,
        w: &WorkloadRef,
        patched: &DynamicObject,
        push: &Push<'_>,
        decision: &Decision,
        result: RestartResult,
        now: jiff::Timestamp,
    ) -> Handled {
        let kube = self.kube;
        match decision {
            Decision::Skip(_) => {
                tracing::info!(kind = %w.kind, namespace = %w.namespace, name = %w.name, digest = push.digest, result = result.as_str(), "waiting push dropped: nothing left to do");
                result.into()
            }
            Decision::Wait {
                pending, invalid, ..
            } => {
                self.metrics.policy.decided(result.as_str());
                let message = pending.describe();
                self.notifier
                    .send(happening(What::Pending, w, push, message.clone()));
                tracing::info!(kind = %w.kind, namespace = %w.namespace, name = %w.name, digest = push.digest, result = result.as_str(), not_before = ?pending.not_before, "{message}");
                let event =
                    workload_event(w.kind, &patched.metadata, EventKind::Deferred, message, now);
                create_event_or_log(kube, w, &event).await;
                if let Some(invalid) = invalid {
                    self.metrics.policy.invalid(invalid.annotation);
                    let message = format!(
                        "{} is invalid, so pushes wait instead of rolling: {}",
                        invalid.annotation, invalid.error
                    );
                    tracing::warn!(kind = %w.kind, namespace = %w.namespace, name = %w.name, annotation = invalid.annotation, error = %invalid.error, "invalid policy annotation; the push waits");
                    let event = workload_event(
                        w.kind,
                        &patched.metadata,
                        EventKind::PolicyInvalid,
                        message,
                        jiff::Timestamp::now(),
                    );
                    create_event_or_log(kube, w, &event).await;
                }
                result.into()
            }
            Decision::Restart {
                containers,
                warnings,
                approved,
                ..
            } => {
                record_restart(kube, w, patched, push, containers, now).await;
                self.notifier.send(happening(
                    What::Restarted,
                    w,
                    push,
                    format!(
                        "Restarted for a push of {} ({})",
                        push.image_key, push.digest
                    ),
                ));
                if *approved {
                    let event = workload_event(
                        w.kind,
                        &patched.metadata,
                        EventKind::Approved,
                        format!(
                            "Approved push of {} ({}) rolled out",
                            push.image_key, push.digest
                        ),
                        jiff::Timestamp::now(),
                    );
                    create_event_or_log(kube, w, &event).await;
                }
                if self.origin == Origin::Waiting {
                    self.metrics.policy.decided("released");
                }
                if !warnings.is_empty() {
                    self.metrics.restart.pull_policy_warnings(warnings.len());
                    warn_pull_policy(kube, w, patched, warnings).await;
                }
                Handled::warned(RestartResult::Restarted, warnings)
            }
        }
    }
}

/// The rollout record names the generation the restart's write was to
/// produce; a server that produced another (it should not) leaves a
/// rollout that is never followed, which the log says.
fn check_generation(w: &WorkloadRef, patched: &DynamicObject, metadata: &crate::policy::Metadata) {
    let recorded = metadata
        .get(crate::rollout::ROLLOUT)
        .and_then(|v| v.as_deref())
        .and_then(|v| serde_json::from_str::<crate::rollout::Pushed>(v).ok());
    if let Some(record) = recorded
        && !record.is_current(patched.metadata.generation)
    {
        tracing::warn!(kind = %w.kind, namespace = %w.namespace, name = %w.name, recorded = record.generation, generation = ?patched.metadata.generation, "the restart produced another generation than its rollout record names: this rollout is not followed");
    }
}

/// The notification of what a push did to `w`.
fn happening(what: What, w: &WorkloadRef, push: &Push<'_>, message: String) -> Happening {
    Happening {
        event: what,
        workload: Subject {
            kind: w.kind,
            namespace: w.namespace.clone(),
            name: w.name.clone(),
        },
        image: Some(push.image_key.to_owned()),
        digest: push.digest.to_owned(),
        message_id: push.message_id.map(str::to_owned),
        time: jiff::Timestamp::now(),
        message,
    }
}

/// Records an Event; one that cannot be recorded is logged, never fatal.
async fn create_event_or_log(
    kube: &Kube,
    w: &WorkloadRef,
    event: &k8s_openapi::api::core::v1::Event,
) {
    if let Err(e) = kube.create_event(event).await {
        let reason = event.reason.as_deref().unwrap_or_default();
        tracing::warn!(namespace = %w.namespace, name = %w.name, reason, error = %e, "could not record the event");
    }
}

/// The API server refused the patch for good (an admission webhook's
/// denial, a validation error): Pub/Sub would redeliver for days and be
/// refused each time, holding back nothing but the log. So the push is
/// acked, and the refusal is made loud where people look: a Warning
/// Event on the workload, an error log line, the `rejected` result.
async fn rejected(
    kube: &Kube,
    w: &WorkloadRef,
    obj: &DynamicObject,
    push: &Push<'_>,
    detail: String,
    now: jiff::Timestamp,
) -> Handled {
    tracing::error!(kind = %w.kind, namespace = %w.namespace, name = %w.name, digest = push.digest, error = %detail, "restart rejected by the API server; not retried");
    let event = workload_event(
        w.kind,
        &obj.metadata,
        EventKind::Rejected,
        format!(
            "A push of {} ({}) was not rolled out: {detail}",
            push.image_key, push.digest
        ),
        now,
    );
    create_event_or_log(kube, w, &event).await;
    Handled {
        result: RestartResult::Rejected,
        detail: Some(detail),
        warnings: Vec::new(),
    }
}

/// The Warning Event `PushPullPolicy`: the restart happened, but nodes that
/// cached the tag may start the old image. Lost, it is only logged.
async fn warn_pull_policy(
    kube: &Kube,
    w: &WorkloadRef,
    patched: &DynamicObject,
    warnings: &[String],
) {
    // Its own time, after the restart's Event was created: Events are
    // named by their time, so the two never share a name.
    let event = workload_event(
        w.kind,
        &patched.metadata,
        EventKind::PullPolicy,
        warnings.join("; "),
        jiff::Timestamp::now(),
    );
    create_event_or_log(kube, w, &event).await;
    tracing::warn!(kind = %w.kind, namespace = %w.namespace, name = %w.name, warnings = ?warnings, "restarted, but the pull policy may keep the old image");
}

/// The Event and the log line of a restart. The rollout has happened: a
/// lost Event must not make Pub/Sub redeliver, so it is only logged.
async fn record_restart(
    kube: &Kube,
    w: &WorkloadRef,
    patched: &DynamicObject,
    push: &Push<'_>,
    containers: &[String],
    now: jiff::Timestamp,
) {
    let event = restart_event(
        w.kind,
        patched,
        push.image_key,
        push.digest,
        push.message_id,
        now,
    );
    create_event_or_log(kube, w, &event).await;
    tracing::info!(kind = %w.kind, namespace = %w.namespace, name = %w.name, containers = ?containers, digest = push.digest, "restarted");
}

/// One workload's result, with the API server's word when it refused.
pub(crate) struct Handled {
    pub(crate) result: RestartResult,
    detail: Option<String>,
    warnings: Vec<String>,
}

impl Handled {
    fn warned(result: RestartResult, warnings: &[String]) -> Handled {
        Handled {
            warnings: warnings.to_vec(),
            ..result.into()
        }
    }
}

impl From<RestartResult> for Handled {
    fn from(result: RestartResult) -> Handled {
        Handled {
            result,
            detail: None,
            warnings: Vec::new(),
        }
    }
}
