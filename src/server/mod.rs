//! The HTTP edge: routes, the push handler, probes and metrics. The
//! connections they are served on are [`conn`]'s; [`error`] is the one
//! place errors become status codes.

pub mod conn;
pub mod error;
pub mod pipeline;
pub mod webhooks;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::metrics::Metrics;
use crate::push::{
    HEADER_MESSAGE_ID, HEADER_PUBLISH_TIME, HEADER_SUBSCRIPTION, Origin, PushHeaders, decode,
};
use crate::server::error::{ApiError, plain_error};
use crate::server::pipeline::{Pipeline, PushReport, Seen};

/// Everything a request handler needs.
pub struct AppState {
    /// Verifies `/push` deliveries (`--auth`).
    pub auth: Authenticator,
    /// The path every decoded push takes, whatever its source.
    pub pipeline: Arc<Pipeline>,
    pub max_body_bytes: usize,
    /// More conditions for `/readyz` beyond the index and the keys (the
    /// pull streams).
    pub ready: Vec<Check>,
    /// Conditions for `/healthz` (with `--indexer`, the in-process watch's
    /// liveness; the pull streams).
    pub live: Vec<Check>,
    /// `/webhooks/{source}`: the secrets and the digest resolver.
    pub webhooks: webhooks::Webhooks,
}

/// A probe's condition: `Err` says why it fails.
pub(crate) type Check = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/push", post(push))
        .route("/webhooks/{source}", post(webhooks::webhook))
        .route("/webhooks/{source}/{secret}", post(webhooks::webhook))
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
    detached(|abandoned| answer_push(state, request, abandoned)).await
}

/// Runs a push's answer in a task of its own. The client may give up
/// before the answer (Pub/Sub past its ack deadline, a load balancer's
/// 30 s), and then this future is dropped. A push half done would be a
/// PATCH without its Event, no log line, and an in-flight gauge raised for
/// ever: so the work finishes whether anyone waits for it or not. The token
/// handed to `answer` is cancelled when the client has gone.
pub(crate) async fn detached<F>(answer: impl FnOnce(CancellationToken) -> F) -> Response
where
    F: Future<Output = Response> + Send + 'static,
{
    let abandoned = CancellationToken::new();
    let waiting = abandoned.clone().drop_guard();
    let answer = tokio::spawn(answer(abandoned)).await;
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
    let mut seen = Seen::default();
    let result = state
        .pipeline
        .settle(
            Origin::PubSub,
            &mut seen,
            || abandoned.is_cancelled(),
            async |seen| handle_push(&state, request, seen).await,
        )
        .await;
    respond(result, &seen)
}

/// The HTTP answer to a settled push.
pub(crate) fn respond(result: Result<PushReport, ApiError>, seen: &Seen) -> Response {
    match result {
        Ok(report) => (StatusCode::OK, Json(report)).into_response(),
        Err(error) => {
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

pub(crate) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn handle_push(
    state: &AppState,
    request: Request,
    seen: &mut Seen,
) -> Result<PushReport, ApiError> {
    let (parts, body) = request.into_parts();
    refuse_declared_oversize(&parts.headers, state.max_body_bytes)?;
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
    seen.delivery(&delivery);
    state
        .auth
        .check_subscription(delivery.subscription.as_deref())?;
    state.pipeline.handle(delivery).await
}

/// Refuses a declared oversize body before reading it.
pub(crate) fn refuse_declared_oversize(headers: &HeaderMap, limit: usize) -> Result<(), ApiError> {
    let declared =
        header_str(headers, header::CONTENT_LENGTH.as_str()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::TooLarge { limit });
    }
    Ok(())
}

pub(crate) async fn read_body(body: Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
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

/// `/healthz`: 200 while the process serves and `live` (when given)
/// holds; a 503 makes the kubelet restart the container.
fn healthz(live: &[Check]) -> Response {
    match live.iter().try_for_each(|check| check()) {
        Ok(()) => Json(serde_json::json!({"status": "ok"})).into_response(),
        Err(why) => plain_error(StatusCode::SERVICE_UNAVAILABLE, "not-live", why),
    }
}

async fn serve_healthz(State(state): State<Arc<AppState>>) -> Response {
    healthz(&state.live)
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let warnings: Vec<&str> = state.auth.warning().into_iter().collect();
    let mut missing = Vec::new();
    if !state.pipeline.store.is_loaded() {
        missing.push("no index is loaded (index file missing, the index ConfigMap not read, and with --indexer the watch's initial lists not done)");
    }
    if state.auth.keys_too_old() {
        missing
            .push("the signing keys are older than --max-key-age and could not be fetched again");
    } else if !state.auth.is_ready() {
        missing.push("signing keys have not been fetched yet");
    }
    let failing: Vec<String> = state
        .ready
        .iter()
        .filter_map(|check| check().err())
        .collect();
    missing.extend(failing.iter().map(String::as_str));
    if missing.is_empty() {
        Json(serde_json::json!({"status": "ready", "warnings": warnings})).into_response()
    } else {
        let body = serde_json::json!({"error": "not-ready", "detail": missing.join("; "), "warnings": warnings});
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    metrics_response(&state.pipeline.metrics)
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
                async move { healthz(std::slice::from_ref(&live)) }
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
}
