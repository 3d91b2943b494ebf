//! The HTTP edge: routes, the push handler, probes, metrics, and a server
//! loop with bounded request heads, timed and capped connections, and a
//! graceful, bounded drain.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::future::BoxFuture;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::cli::ConnLimits;
use crate::http_error::{ApiError, plain_error};
use crate::lookup::{IndexStore, Source};
use crate::metrics::{Held, Metrics};
use crate::plan::RestartResult;
use crate::push::{Action, Delivery, HEADER_MESSAGE_ID, HEADER_SUBSCRIPTION, PushHeaders, decode};
use crate::restart::{Push, Restarter, WorkloadResult};

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
pub type Check = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The 200 body of `POST /push` (see the contract).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushReport {
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
    let inflight = Held::new(&state.metrics.inflight_pushes);
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
            state.metrics.observe_push(report.outcome, 200, took);
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
                .observe_push(error.label(), status.as_u16(), took);
            if let ApiError::Auth(e) = &error {
                let reason = e.reason();
                state
                    .metrics
                    .token_rejections
                    .get_or_create(&crate::metrics::ReasonLabels { reason })
                    .inc();
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
pub async fn handle_delivery(state: &AppState, delivery: Delivery) -> Result<PushReport, ApiError> {
    let Delivery {
        message_id,
        action_name,
        action,
        ..
    } = delivery;
    let (image, digest) = match action {
        Action::Ignore(reason) => {
            state
                .metrics
                .ignored
                .get_or_create(&crate::metrics::ReasonLabels {
                    reason: reason.label(),
                })
                .inc();
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
pub fn probe_router(metrics: Arc<Metrics>, ready: Check, live: Check) -> Router {
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

/// HTTP/2 PINGs find a peer that vanished without a FIN or RST (a dead node,
/// a dropped NAT entry); HTTP/1 has no such thing and relies on the timeouts.
const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// After a graceful shutdown of a connection began (idle, or the drain), how
/// long hyper gets to finish it (flush the last response, exchange GOAWAY)
/// before a connection with nothing in flight is dropped outright.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Serves `router` on `listener` until `shutdown`, then stops accepting and
/// lets in-flight requests finish for at most `drain`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // hyper restarts this timer for every request head, the wait between
        // kept-alive requests included, so it would close a load balancer's
        // idle connections after 10 s (sporadic 502s). The watchdog in
        // `drive` times the first request and the idleness after requests.
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(H2_KEEP_ALIVE_TIMEOUT)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    // One permit per open connection: all of them back means all closed,
    // which is what the drain waits for.
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let accepted = Instant::now();
        // At the cap, accept and close at once rather than stop accepting:
        // the descriptor is freed immediately and the client sees a prompt
        // close it retries (Pub/Sub redelivers, the load balancer picks
        // another backend). Not accepting would leave the flood in the
        // kernel's backlog, where kubelet probes and real pushes would queue
        // behind it until it overflows, and fail by timeout instead.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics.connections_refused.inc();
            tracing::debug!(%peer, max = limits.max_connections, "connection refused: --max-connections are open");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::default());
        let service = Tracked {
            inner: TowerToHyperService::new(router.clone()),
            activity: activity.clone(),
        };
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        // Given back when the connection ends: its slot and its count.
        let open = (slot, Held::new(&metrics.connections_open));
        let shutdown = shutdown.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _open = open;
            drive(
                conn,
                |c| c.graceful_shutdown(),
                accepted,
                &activity,
                limits,
                &shutdown,
                &metrics,
            )
            .await;
        });
    }
    drop(listener);
    tracing::info!("shutting down: no new connections; waiting for in-flight requests");
    let every_slot = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    tokio::select! {
        _ = slots.acquire_many(every_slot) => tracing::info!("all requests finished"),
        _ = tokio::time::sleep(drain) => tracing::warn!(?drain, "in-flight requests did not finish in time"),
    }
}

/// Runs one connection to its end, closing it when it breaks the
/// [`ConnLimits`] timeouts, and gracefully on `shutdown`. A connection with
/// a request in flight is never closed here.
async fn drive<C, E>(
    conn: C,
    graceful: impl Fn(Pin<&mut C>),
    accepted: Instant,
    activity: &Activity,
    limits: ConnLimits,
    shutdown: &CancellationToken,
    metrics: &Metrics,
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut conn = std::pin::pin!(conn);
    // When a graceful shutdown of this connection began.
    let mut closing: Option<Instant> = None;
    loop {
        let wake = match activity.step(Instant::now(), accepted, closing, &limits) {
            Step::Wait(wake) => wake,
            Step::HeaderTimeout => {
                metrics.timed_out("header");
                tracing::debug!(timeout = ?limits.header_read_timeout, "closing a connection that sent no request");
                // Nothing was asked, so nothing is lost: drop it outright
                // (hyper's graceful path would wait for a head that may
                // never come).
                return;
            }
            Step::IdleTimeout => {
                metrics.timed_out("idle");
                tracing::debug!(timeout = ?limits.idle_timeout, "closing an idle connection");
                // HTTP/1: closed at once; HTTP/2: GOAWAY first.
                graceful(conn.as_mut());
                closing = Some(Instant::now());
                continue;
            }
            Step::Drop => return,
        };
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = activity.changed.notified() => {}
            () = sleep_until(wake) => {}
            () = shutdown.cancelled(), if closing.is_none() => {
                graceful(conn.as_mut());
                closing = Some(Instant::now());
            }
        }
    }
}

async fn sleep_until(wake: Option<Instant>) {
    match wake {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// What a connection's watchdog does next.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Nothing yet; look again at this time (`None`: when a request ends).
    Wait(Option<Instant>),
    /// No request started within the header-read timeout of accept.
    HeaderTimeout,
    /// No request in flight for the idle timeout since the last one ended.
    IdleTimeout,
    /// Closing, with nothing in flight, and hyper has had its grace.
    Drop,
}

/// The requests of one connection, as its service sees them: counted from
/// the moment hyper hands over a request head until the response body has
/// been sent (or dropped), not by bytes on the wire.
#[derive(Default)]
struct Activity {
    requests: Mutex<Requests>,
    /// Signalled when a request starts or ends.
    changed: Notify,
}

#[derive(Default)]
struct Requests {
    in_flight: usize,
    last_finished: Option<Instant>,
}

impl Activity {
    fn begin(self: &Arc<Self>) -> InFlight {
        self.requests.lock().expect("not poisoned").in_flight += 1;
        self.changed.notify_one();
        InFlight(self.clone())
    }

    fn step(
        &self,
        now: Instant,
        accepted: Instant,
        closing: Option<Instant>,
        limits: &ConnLimits,
    ) -> Step {
        let requests = self.requests.lock().expect("not poisoned");
        if requests.in_flight > 0 {
            // A push may take up to --request-timeout: never cut it.
            return Step::Wait(None);
        }
        let (deadline, then) = match (closing, requests.last_finished) {
            (Some(since), last) => (since.max(last.unwrap_or(since)) + CLOSE_GRACE, Step::Drop),
            (None, None) => (accepted + limits.header_read_timeout, Step::HeaderTimeout),
            (None, Some(last)) => (last + limits.idle_timeout, Step::IdleTimeout),
        };
        if now >= deadline {
            then
        } else {
            Step::Wait(Some(deadline))
        }
    }
}

/// One request in flight on a connection, until dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        {
            let mut requests = self.0.requests.lock().expect("not poisoned");
            requests.in_flight -= 1;
            requests.last_finished = Some(Instant::now());
        }
        self.0.changed.notify_one();
    }
}

/// The router's service, counting each request in flight on its connection
/// from the call until its response body is done.
#[derive(Clone)]
struct Tracked {
    inner: TowerToHyperService<Router>,
    activity: Arc<Activity>,
}

impl hyper::service::Service<Request<Incoming>> for Tracked {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.begin();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| TrackedBody {
                body,
                _in_flight: in_flight,
            }))
        })
    }
}

/// A response body that keeps its request in flight until hyper has sent
/// it (or given up on it) and drops it.
struct TrackedBody {
    body: Body,
    _in_flight: InFlight,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnLimits {
        ConnLimits {
            max_header_bytes: 16384,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(620),
            max_connections: 4,
        }
    }

    #[test]
    fn the_watchdog_times_the_first_request_then_idleness_and_never_a_request() {
        let limits = limits();
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let a = Arc::new(Activity::default());
        // Silent since accept.
        assert_eq!(a.step(s(9), t0, None, &limits), Step::Wait(Some(s(10))));
        assert_eq!(a.step(s(10), t0, None, &limits), Step::HeaderTimeout);
        // A request in flight is never cut, however long.
        let req = a.begin();
        assert_eq!(a.step(s(5000), t0, None, &limits), Step::Wait(None));
        assert_eq!(a.step(s(5000), t0, Some(s(1)), &limits), Step::Wait(None));
        drop(req);
        // After it: the idle timeout, counted from its end, not the header one.
        let ended = a.requests.lock().unwrap().last_finished.unwrap();
        assert_eq!(
            a.step(ended + Duration::from_secs(11), t0, None, &limits),
            Step::Wait(Some(ended + limits.idle_timeout))
        );
        assert_eq!(
            a.step(ended + limits.idle_timeout, t0, None, &limits),
            Step::IdleTimeout
        );
        // Closing: a grace after the later of the close and the last request.
        let closing = ended + limits.idle_timeout;
        assert_eq!(
            a.step(closing, t0, Some(closing), &limits),
            Step::Wait(Some(closing + CLOSE_GRACE))
        );
        assert_eq!(
            a.step(closing + CLOSE_GRACE, t0, Some(closing), &limits),
            Step::Drop
        );
    }

    use crate::index::Kind;

    fn results(of: &[RestartResult]) -> Vec<WorkloadResult> {
        of.iter()
            .map(|&result| WorkloadResult {
                kind: Kind::Deployment,
                namespace: "ns".into(),
                name: "w".into(),
                result,
                detail: None,
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
        let cases: [(bool, &[RestartResult], &str); 8] = [
            (false, &[], "no-match"),
            (true, &[], "no-match"),
            (true, &[WouldRestart, Excluded], "dry-run"),
            (false, &[Restarted, AlreadyCurrent], "restarted"),
            (false, &[AlreadyCurrent, AlreadyCurrent], "unchanged"),
            (false, &[Excluded, NotFound], "unchanged"),
            (false, &[Rejected], "unchanged"),
            (false, &[Rejected, Restarted], "restarted"),
        ];
        for (dry_run, of, want) in cases {
            assert_eq!(outcome(dry_run, &results(of)), want, "{of:?}");
        }
    }
}
