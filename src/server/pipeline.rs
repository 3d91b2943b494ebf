//! The one path every push takes once it is decoded, whatever brought it:
//! a Pub/Sub push (`POST /push`), a pulled Pub/Sub message, or a registry's
//! webhook (`POST /webhooks/{source}`). Look up, restart, then count and
//! log the answer the same way for all of them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::index::store::{IndexStore, Source};
use crate::metrics::Metrics;
use crate::plan::RestartResult;
use crate::push::{Action, Delivery, Origin};
use crate::restart::{Push, Restarter, WorkloadResult};
use crate::server::error::ApiError;

/// What handling a decoded push needs.
pub struct Pipeline {
    pub store: Arc<IndexStore>,
    pub restarter: Restarter,
    pub metrics: Arc<Metrics>,
    /// The most one push may take, from its first byte to its answer.
    pub timeout: Duration,
    pub dry_run: bool,
}

/// The 200 body of `POST /push` (see the contract).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PushReport {
    pub message_id: Option<String>,
    pub action: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    pub workloads: Vec<WorkloadResult>,
    /// A webhook payload that carried several pushes: each one's report.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pushes: Vec<PushReport>,
}

/// What a push was about, as far as it got decoded: for its log line when
/// it fails.
#[derive(Default)]
pub(crate) struct Seen {
    pub message_id: Option<String>,
    pub image: Option<String>,
    /// The request body was read to its end (HTTP only).
    pub body_read: bool,
}

impl Seen {
    /// Notes what `delivery` is about.
    pub fn delivery(&mut self, delivery: &Delivery) {
        self.message_id.clone_from(&delivery.message_id);
        if let Action::Restart { image, .. } = &delivery.action {
            self.image = Some(image.tagged());
        }
    }
}

impl Pipeline {
    /// Runs `work` (verify, decode, then [`Pipeline::handle`]) for one push
    /// from `origin` under the push timeout, and counts and logs its
    /// answer. `client_gone` says, at the end, whether whoever asked has
    /// stopped waiting (logged: the work is done all the same).
    pub(crate) async fn settle(
        &self,
        origin: Origin,
        seen: &mut Seen,
        client_gone: impl Fn() -> bool,
        work: impl AsyncFnOnce(&mut Seen) -> Result<PushReport, ApiError>,
    ) -> Result<PushReport, ApiError> {
        let started = Instant::now();
        let inflight = self.metrics.push.in_flight();
        let result = tokio::time::timeout(self.timeout, work(seen))
            .await
            .unwrap_or(Err(ApiError::Timeout(self.timeout)));
        drop(inflight);
        let took = started.elapsed();
        let source = origin.label();
        let client_gone = client_gone();
        match &result {
            Ok(report) => {
                self.metrics
                    .push
                    .answered(source, report.outcome, 200, took);
                tracing::info!(
                    source,
                    message_id = report.message_id.as_deref().unwrap_or("-"),
                    image = report.image.as_deref().unwrap_or("-"),
                    outcome = report.outcome,
                    reason = report.reason.as_deref(),
                    workloads = report.workloads.len(),
                    status = 200,
                    duration_ms = took.as_secs_f64() * 1000.0,
                    client_gone,
                    "push"
                );
            }
            Err(error) => {
                let status = error.status();
                self.metrics
                    .push
                    .answered(source, error.label(), status.as_u16(), took);
                match error {
                    ApiError::Auth(e) => self.metrics.push.token_rejected(e.reason()),
                    ApiError::Unverified(r) => self.metrics.push.token_rejected(r.reason()),
                    _ => {}
                }
                // The message id and image, when known, tie a failure to
                // the redelivery that will follow it.
                tracing::warn!(
                    source,
                    message_id = seen.message_id.as_deref().unwrap_or("-"),
                    image = seen.image.as_deref().unwrap_or("-"),
                    outcome = error.label(),
                    status = status.as_u16(),
                    error = %error,
                    duration_ms = took.as_secs_f64() * 1000.0,
                    client_gone,
                    "push"
                );
            }
        }
        result
    }

    /// Looks up and restarts what a decoded delivery asks for.
    pub(crate) async fn handle(&self, delivery: Delivery) -> Result<PushReport, ApiError> {
        let Delivery {
            origin,
            message_id,
            action_name,
            published,
            action,
            ..
        } = delivery;
        let (image, digest) = match action {
            Action::Ignore(reason) => {
                self.metrics.push.ignored(origin.label(), reason.label());
                return Ok(PushReport {
                    message_id,
                    action: action_name,
                    image: None,
                    digest: None,
                    outcome: "ignored",
                    reason: Some(reason.describe()),
                    source: None,
                    workloads: Vec::new(),
                    pushes: Vec::new(),
                });
            }
            Action::Restart { image, digest } => (image, digest),
        };
        let key = image.tagged();
        let found = self.store.lookup(&key).await?;
        let push = Push {
            image_key: &key,
            digest: &digest,
            message_id: message_id.as_deref(),
            // A bare notification has no publish time: its receipt stands in.
            published: published.unwrap_or_else(jiff::Timestamp::now),
        };
        let (done, failed) = self.restarter.restart_all(&push, &found.workloads).await;
        if !failed.is_empty() {
            return Err(ApiError::Restart { done, failed });
        }
        let outcome = outcome(self.dry_run, &done);
        Ok(PushReport {
            message_id,
            action: action_name,
            image: Some(key),
            digest: Some(digest),
            outcome,
            reason: None,
            source: Some(found.source),
            workloads: done,
            pushes: Vec::new(),
        })
    }
}

/// What a push did, from what happened to each workload: `restarted` only
/// when something was.
pub fn outcome(dry_run: bool, results: &[WorkloadResult]) -> &'static str {
    if results.is_empty() {
        "no-match"
    } else if dry_run {
        "dry-run"
    } else if results.iter().any(|w| w.result == RestartResult::Restarted) {
        "restarted"
    } else if results.iter().any(|w| {
        matches!(
            w.result,
            RestartResult::PendingApproval | RestartResult::Deferred
        )
    }) {
        // Kept on the workload (`pushroll.io/pending`): acked, carried out
        // later by the indexer's controller.
        "pending"
    } else {
        // Already current, excluded, gone, or refused by the API server: a
        // redelivery and a no-op look alike, and neither claims a restart.
        "unchanged"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::Kind;

    fn results(of: &[RestartResult]) -> Vec<WorkloadResult> {
        of.iter()
            .map(|&result| WorkloadResult {
                kind: Kind::Deployment,
                namespace: "ns".into(),
                name: "w".into(),
                result,
                detail: None,
                warnings: Vec::new(),
            })
            .collect()
    }

    #[test]
    fn the_outcome_says_what_happened() {
        use RestartResult::*;
        let cases: [(bool, &[RestartResult], &str); 13] = [
            (false, &[], "no-match"),
            (true, &[], "no-match"),
            (true, &[WouldRestart, Excluded], "dry-run"),
            (false, &[Restarted, AlreadyCurrent], "restarted"),
            (false, &[AlreadyCurrent, AlreadyCurrent], "unchanged"),
            (false, &[Excluded, NotFound], "unchanged"),
            (false, &[Rejected], "unchanged"),
            (false, &[Rejected, Restarted], "restarted"),
            (false, &[Superseded, AlreadyCurrent], "unchanged"),
            (false, &[Refused, Excluded], "unchanged"),
            (false, &[PendingApproval, AlreadyCurrent], "pending"),
            (false, &[Deferred], "pending"),
            (false, &[Deferred, Restarted], "restarted"),
        ];
        for (dry_run, of, want) in cases {
            assert_eq!(outcome(dry_run, &results(of)), want, "{of:?}");
        }
    }
}
