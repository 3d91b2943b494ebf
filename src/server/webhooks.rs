//! `POST /webhooks/{source}` (and `/webhooks/{source}/{secret}` for Docker
//! Hub and Quay): a registry's own push notification, verified against the
//! source's secret, parsed by [`crate::webhook`], and handed push by push
//! to the same [`Pipeline`] as `/push`.
//!
//! The path of Docker Hub and Quay holds a secret: nothing here logs a
//! path, and the pipeline's log line names the source, not the route.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header;
use axum::response::Response;
use tokio_util::sync::CancellationToken;

use crate::push::{Action, Origin};
use crate::server::error::ApiError;
use crate::server::pipeline::{PushReport, Seen};
use crate::server::{AppState, detached, header_str, read_body, refuse_declared_oversize, respond};
use crate::webhook::resolve::Resolver;
use crate::webhook::verify::{self, Scheme, Secrets};
use crate::webhook::{self, Event};

/// The longest one registry call (HEAD, token) may take; a push as a whole
/// is bounded by `--request-timeout` too.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the webhook routes need beside the pipeline.
pub struct Webhooks {
    pub secrets: Secrets,
    pub resolver: Resolver,
}

/// The source named by a path segment; `None` for Pub/Sub's (it has `/push`)
/// and unknown names.
fn origin(source: &str) -> Option<Origin> {
    Origin::ALL
        .into_iter()
        .find(|o| *o != Origin::PubSub && o.label() == source)
}

/// `/webhooks/{source}[/{secret}]` split; the secret stays out of logs.
fn segments(path: &str) -> (&str, Option<&str>) {
    let rest = path.strip_prefix("/webhooks/").unwrap_or_default();
    match rest.split_once('/') {
        Some((source, secret)) => (source, Some(secret)),
        None => (rest, None),
    }
}

pub(crate) async fn webhook(State(state): State<Arc<AppState>>, request: Request) -> Response {
    detached(|abandoned| answer(state, request, abandoned)).await
}

async fn answer(state: Arc<AppState>, request: Request, abandoned: CancellationToken) -> Response {
    let path = request.uri().path().to_owned();
    let (source, path_secret) = segments(&path);
    let mut seen = Seen::default();
    let Some(origin) = origin(source) else {
        let named: String = source.chars().take(32).collect();
        return respond(Err(ApiError::SourceDisabled(named)), &seen);
    };
    // Only Docker Hub and Quay take a secret in the path: for the others,
    // `/webhooks/{source}/…` is no route (and is not a place to send one).
    if path_secret.is_some() && verify::scheme(origin) != Scheme::Path {
        return respond(Err(ApiError::SourceDisabled(format!("{source}/…"))), &seen);
    }
    let path_secret = path_secret.map(str::to_owned);
    let result = state
        .pipeline
        .settle(
            origin,
            &mut seen,
            || abandoned.is_cancelled(),
            async |seen| handle(&state, origin, path_secret.as_deref(), request, seen).await,
        )
        .await;
    respond(result, &seen)
}

async fn handle(
    state: &AppState,
    origin: Origin,
    path_secret: Option<&str>,
    request: Request,
    seen: &mut Seen,
) -> Result<PushReport, ApiError> {
    let Some(secret) = state.webhooks.secrets.get(origin)? else {
        return Err(ApiError::SourceDisabled(origin.label().to_owned()));
    };
    let (parts, body) = request.into_parts();
    refuse_declared_oversize(&parts.headers, state.max_body_bytes)?;
    let headers = &parts.headers;
    let bytes = |name: &str| headers.get(name).map(|v| v.as_bytes());
    let scheme = verify::scheme(origin);
    // Refused before the body is read where the check does not need it.
    match scheme {
        Scheme::Authorization { bearer } => {
            verify::authorization(&secret, bytes(header::AUTHORIZATION.as_str()), bearer)?
        }
        Scheme::Path => verify::path(&secret, path_secret)?,
        Scheme::Signature => {}
    }
    let body = read_body(body, state.max_body_bytes).await?;
    seen.body_read = true;
    if scheme == Scheme::Signature {
        verify::github(
            &secret,
            bytes("x-hub-signature-256"),
            bytes("x-hub-signature"),
            &body,
        )?;
    }
    let request = webhook::Request {
        github_event: header_str(headers, "x-github-event"),
        github_delivery: header_str(headers, "x-github-delivery"),
    };
    let events = webhook::parse(origin, request, &body)?;
    let mut reports = Vec::with_capacity(events.len());
    // Every push is tried; one that a redelivery can fix makes the answer
    // 503, and the redelivery finds the others already current.
    let mut failure = None;
    for event in events {
        let delivery = match event {
            Event::Ready(delivery) => delivery,
            Event::Unresolved(unresolved) => {
                match state.webhooks.resolver.digest(&unresolved.image).await {
                    Ok(digest) => unresolved.resolved(digest),
                    Err(e) => {
                        seen.image.get_or_insert_with(|| unresolved.image.tagged());
                        failure.get_or_insert(ApiError::Resolve(e));
                        continue;
                    }
                }
            }
        };
        if seen.image.is_none() && matches!(delivery.action, Action::Restart { .. }) {
            seen.delivery(&delivery);
        }
        match state.pipeline.handle(delivery).await {
            Ok(report) => reports.push(report),
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(combine(reports)),
    }
}

/// One answer for a payload's pushes: a single push's own report, or a
/// summary whose `pushes` lists each.
fn combine(mut reports: Vec<PushReport>) -> PushReport {
    if reports.len() == 1 {
        return reports.remove(0);
    }
    const RANK: [&str; 6] = [
        "restarted",
        "pending",
        "dry-run",
        "unchanged",
        "no-match",
        "ignored",
    ];
    let outcome = RANK
        .into_iter()
        .find(|o| reports.iter().any(|r| r.outcome == *o))
        .unwrap_or("ignored");
    let reason = (outcome == "ignored").then(|| {
        let mut reasons: Vec<&str> = reports.iter().filter_map(|r| r.reason.as_deref()).collect();
        reasons.dedup();
        reasons.join("; ")
    });
    PushReport {
        message_id: reports.iter().find_map(|r| r.message_id.clone()),
        action: None,
        image: None,
        digest: None,
        outcome,
        reason,
        source: None,
        workloads: reports.iter().flat_map(|r| r.workloads.clone()).collect(),
        pushes: reports,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_sources() {
        assert_eq!(segments("/webhooks/github"), ("github", None));
        assert_eq!(segments("/webhooks/quay/s3cret"), ("quay", Some("s3cret")));
        assert_eq!(origin("github"), Some(Origin::Github));
        assert_eq!(origin("pubsub"), None);
        assert_eq!(origin("GitHub"), None);
        for o in Origin::ALL.into_iter().filter(|o| *o != Origin::PubSub) {
            assert_eq!(origin(o.label()), Some(o));
        }
    }

    fn report(outcome: &'static str, reason: Option<&str>) -> PushReport {
        PushReport {
            message_id: None,
            action: None,
            image: None,
            digest: None,
            outcome,
            reason: reason.map(str::to_owned),
            source: None,
            workloads: Vec::new(),
            pushes: Vec::new(),
        }
    }

    #[test]
    fn several_pushes_answer_with_the_weightiest_outcome() {
        let cases: [(&[&'static str], &str); 4] = [
            (&["ignored", "restarted", "no-match"], "restarted"),
            (&["ignored", "no-match"], "no-match"),
            (&["unchanged", "pending"], "pending"),
            (&["ignored", "ignored"], "ignored"),
        ];
        for (outcomes, want) in cases {
            let reports = outcomes.iter().map(|o| report(o, None)).collect();
            let combined = combine(reports);
            assert_eq!(combined.outcome, want, "{outcomes:?}");
            assert_eq!(combined.pushes.len(), outcomes.len());
        }
        let combined = combine(vec![
            report("ignored", Some("blob")),
            report("ignored", Some("blob")),
        ]);
        assert_eq!(combined.reason.as_deref(), Some("blob"));
        let single = combine(vec![report("restarted", None)]);
        assert!(single.pushes.is_empty());
    }
}
