//! The HTTP edge: routes, the push handler, probes and metrics. The
//! connections they are served on are [`conn`]'s; [`error`] is the one
//! place errors become status codes.

pub mod conn;
pub mod error;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::index::store::{IndexStore, Source};
use crate::metrics::Metrics;
use crate::plan::RestartResult;
use crate::push::{
    Action, Delivery, HEADER_MESSAGE_ID, HEADER_PUBLISH_TIME, HEADER_SUBSCRIPTION, PushHeaders,
    decode,
};
use crate::restart::{Push, Restarter, WorkloadResult};
use crate::server::error::{ApiError, plain_error};

/// Everything a request handler needs.
pub struct AppState {
    pub auth: Authenticator,
    pub store: Arc<IndexStore>,
    pub restarter: Restarter,
    pub metrics: Arc<Metrics>,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub dry_run: bool,
    /// `serve --indexer`: the in-process watch's liveness, for `/healthz`.
    pub live: Option<Check>,
}

/// A probe's condition: `Err` says why it fails.
pub(crate) type Check = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

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
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/push", post(push))
        .route("/healthz", get(serve_healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { plain_error(StatusCode::NOT_FOUND, "not-found", "no such route") })
        .method_not_allowed_fallback(|| async {
            plain_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "method not allowed on this route",
            )
        })
        .with_state(state)
}

async fn push(State(state): State<Arc<AppState>>, request: Request) -> Response {
    // The client may give up before the answer (Pub/Sub past its ack
    // deadline, a load balancer's 30 s), and then this future is dropped.
    // A push half done would be a PATCH without its Event, no log line,
    // and an in-flight gauge raised for ever: so the work runs in a task
    // of its own, which finishes whether anyone waits for it or not.
    // `abandoned` is cancelled when this future is dropped before the answer.
    let abandoned = CancellationToken::new();
    let waiting = abandoned.clone().drop_guard();
    let answer = tokio::spawn(answer_push(state, request, abandoned)).await;
    waiting.disarm();
    match answer {
        Ok(response) => response,
        // A panic in the handler: a bug, and a 500 says so.
        Err(e) => plain_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the push handler failed: {e}"),
        ),
    }
}

async fn answer_push(
    state: Arc<AppState>,
    request: Request,
    abandoned: CancellationToken,
) -> Response {
    let started = Instant::now();
    let inflight = state.metrics.push.in_flight();
    let mut seen = Seen::default();
    let result = tokio::time::timeout(
        state.request_timeout,
        handle_push(&state, request, &mut seen),
    )
    .await
    .unwrap_or(Err(ApiError::Timeout(state.request_timeout)));
    drop(inflight);
    let took = started.elapsed();
    // Whether the client left before the answer: the work is done all the
    // same, and a redelivery will find it done.
    let client_gone = abandoned.is_cancelled();
    match result {
        Ok(report) => {
            state.metrics.push.answered(report.outcome, 200, took);
            tracing::info!(
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
            (StatusCode::OK, Json(report)).into_response()
        }
        Err(error) => {
            let status = error.status();
            state
                .metrics
                .push
                .answered(error.label(), status.as_u16(), took);
            if let ApiError::Auth(e) = &error {
                let reason = e.reason();
                state.metrics.push.token_rejected(reason);
            }
            // The message id and image, when known, tie a failure to the
            // redelivery that will follow it.
            tracing::warn!(
                message_id = seen.message_id.as_deref().unwrap_or("-"),
                image = seen.image.as_deref().unwrap_or("-"),
                outcome = error.label(),
                status = status.as_u16(),
                error = %error,
                duration_ms = took.as_secs_f64() * 1000.0,
                client_gone,
                "push"
            );
            let mut response = error.into_response();
            if !seen.body_read {
                // Answered before the body was read (a token refused, a
                // body too large): the rest of it is still on the wire, so
                // the connection cannot carry another request. Say so,
                // rather than let the client reuse it and fail.
                response.headers_mut().insert(
                    header::CONNECTION,
                    axum::http::HeaderValue::from_static("close"),
                );
            }
            response
        }
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// What a push was about, as far as it got decoded: for its log line when
/// it fails.
#[derive(Default)]
struct Seen {
    message_id: Option<String>,
    image: Option<String>,
    /// The request body was read to its end.
    body_read: bool,
}

async fn handle_push(
    state: &AppState,
    request: Request,
    seen: &mut Seen,
) -> Result<PushReport, ApiError> {
    let (parts, body) = request.into_parts();
    // Refuse a declared oversize body before reading it.
    let declared = header_str(&parts.headers, header::CONTENT_LENGTH.as_str())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.max_body_bytes as u64) {
        return Err(ApiError::TooLarge {
            limit: state.max_body_bytes,
        });
    }
    state
        .auth
        .verify(parts.headers.get(header::AUTHORIZATION))
        .await?;
    let body = read_body(body, state.max_body_bytes).await?;
    seen.body_read = true;
    let headers = PushHeaders {
        message_id: header_str(&parts.headers, HEADER_MESSAGE_ID),
        subscription: header_str(&parts.headers, HEADER_SUBSCRIPTION),
        publish_time: header_str(&parts.headers, HEADER_PUBLISH_TIME),
    };
    let delivery = decode(headers, &body)?;
    seen.message_id.clone_from(&delivery.message_id);
    if let Action::Restart { image, .. } = &delivery.action {
        seen.image = Some(image.tagged());
    }
    state
        .auth
        .check_subscription(delivery.subscription.as_deref())?;
    handle_delivery(state, delivery).await
}

async fn read_body(body: Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => Ok(bytes),
        Err(e) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_large {
                Err(ApiError::TooLarge { limit })
            } else {
                Err(ApiError::Body(e.to_string()))
            }
        }
    }
}

/// Looks up and restarts what a decoded delivery asks for.
pub(crate) async fn handle_delivery(
    state: &AppState,
    delivery: Delivery,
) -> Result<PushReport, ApiError> {
    let Delivery {
        message_id,
        action_name,
        published,
        action,
        ..
    } = delivery;
    let (image, digest) = match action {
        Action::Ignore(reason) => {
            state.metrics.push.ignored(reason.label());
            return Ok(PushReport {
                message_id,
                action: action_name,
                image: None,
                digest: None,
                outcome: "ignored",
                reason: Some(reason.describe()),
                source: None,
                workloads: Vec::new(),
            });
        }
        Action::Restart { image, digest } => (image, digest),
    };
    let key = image.tagged();
    let found = state.store.lookup(&key).await?;
    let push = Push {
        image_key: &key,
        digest: &digest,
        message_id: message_id.as_deref(),
        // A bare notification has no publish time: its receipt stands in.
        published: published.unwrap_or_else(jiff::Timestamp::now),
    };
    let (done, failed) = state.restarter.restart_all(&push, &found.workloads).await;
    if !failed.is_empty() {
        return Err(ApiError::Restart { done, failed });
    }
    let outcome = outcome(state.dry_run, &done);
    Ok(PushReport {
        message_id,
        action: action_name,
        image: Some(key),
        digest: Some(digest),
        outcome,
        reason: None,
        source: Some(found.source),
        workloads: done,
    })
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

/// `/healthz`: 200 while the process serves and `live` (when given)
/// holds; a 503 makes the kubelet restart the container.
fn healthz(live: Option<&Check>) -> Response {
    match live.map_or(Ok(()), |check| check()) {
        Ok(()) => Json(serde_json::json!({"status": "ok"})).into_response(),
        Err(why) => plain_error(StatusCode::SERVICE_UNAVAILABLE, "not-live", why),
    }
}

async fn serve_healthz(State(state): State<Arc<AppState>>) -> Response {
    healthz(state.live.as_ref())
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let warnings: Vec<&str> = state.auth.warning().into_iter().collect();
    let mut missing = Vec::new();
    if !state.store.is_loaded() {
        missing.push("no index is loaded (index file missing, the index ConfigMap not read, and with --indexer the watch's initial lists not done)");
    }
    if state.auth.keys_too_old() {
        missing
            .push("the signing keys are older than --max-key-age and could not be fetched again");
    } else if !state.auth.is_ready() {
        missing.push("signing keys have not been fetched yet");
    }
    if missing.is_empty() {
        Json(serde_json::json!({"status": "ready", "warnings": warnings})).into_response()
    } else {
        let body = serde_json::json!({"error": "not-ready", "detail": missing.join("; "), "warnings": warnings});
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    metrics_response(&state.metrics)
}

fn metrics_response(metrics: &Metrics) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
        .into_response()
}

/// `/healthz`, `/readyz` and `/metrics` alone (for `index --watch`).
pub(crate) fn probe_router(metrics: Arc<Metrics>, ready: Check, live: Check) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(move || {
                let live = live.clone();
                async move { healthz(Some(&live)) }
            }),
        )
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    match ready() {
                        Ok(()) => Json(serde_json::json!({"status": "ready"})).into_response(),
                        Err(why) => plain_error(StatusCode::SERVICE_UNAVAILABLE, "not-ready", why),
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move { metrics_response(&metrics) }
            }),
        )
        .fallback(|| async { plain_error(StatusCode::NOT_FOUND, "not-found", "no such route") })
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

    #[tokio::test]
    async fn healthz_fails_while_the_liveness_check_does() {
        use std::sync::atomic::Ordering;
        use tower::ServiceExt as _;
        let live = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = live.clone();
        let check: Check = Arc::new(move || {
            if flag.load(Ordering::Acquire) {
                Ok(())
            } else {
                Err("the deployments watch has been on one step for 61s".into())
            }
        });
        let router = probe_router(Metrics::new(), Arc::new(|| Ok(())), check);
        let get = |router: Router| async move {
            let request = Request::get("/healthz").body(Body::empty()).unwrap();
            let response = router.oneshot(request).await.unwrap();
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), 4096)
                .await
                .unwrap();
            (status, String::from_utf8(body.to_vec()).unwrap())
        };
        assert_eq!(get(router.clone()).await.0, StatusCode::OK);
        live.store(false, Ordering::Release);
        let (status, body) = get(router).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            body.contains("not-live") && body.contains("deployments watch"),
            "{body}"
        );
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
