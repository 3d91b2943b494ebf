//! Serving connections: bounded request heads, a watchdog per connection
//! (header-read and idle timeouts), a cap on open connections, and a
//! graceful, bounded drain on shutdown.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use futures::future::BoxFuture;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Limits on what a client may send before a handler runs, and on the
/// connections themselves.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Bytes of request line plus headers (HTTP/1) or header list (HTTP/2).
    pub max_header_bytes: usize,
    /// Time from accept until the connection's first request has started:
    /// covers silent TCP, a protocol detection that never completes, an
    /// HTTP/2 preface with no HEADERS, and a slowloris head.
    pub header_read_timeout: Duration,
    /// A connection that has served requests and has none in flight is
    /// closed after this long. It must exceed a load balancer's own idle
    /// timeout (Google's: 600 s), which expects the backend not to close first.
    pub idle_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
}

impl ConnLimits {
    pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(620);
    pub(crate) const MAX_CONNECTIONS: usize = 1024;
    /// The largest `--max-connections` (far above any descriptor limit; it
    /// also keeps the drain's permit count in a `u32`).
    pub(crate) const MAX_MAX_CONNECTIONS: usize = 1 << 20;

    /// The defaults, for a server without flags of its own (`index --watch`).
    pub(crate) fn with_defaults(max_header_bytes: usize) -> ConnLimits {
        ConnLimits {
            max_header_bytes,
            header_read_timeout: Self::HEADER_READ_TIMEOUT,
            idle_timeout: Self::IDLE_TIMEOUT,
            max_connections: Self::MAX_CONNECTIONS,
        }
    }
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
    let builder = protocols(&limits);
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
            metrics.conn.refused();
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
        let open = (slot, metrics.conn.opened());
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
    drain_connections(&slots, limits.max_connections, drain).await;
}

/// HTTP/1 and HTTP/2 (auto-detected) with the head limits.
fn protocols(limits: &ConnLimits) -> auto::Builder<TokioExecutor> {
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
    builder
}

/// Waits until every connection has closed (all `max_connections` slots
/// are back), for at most `drain`.
async fn drain_connections(slots: &Semaphore, max_connections: usize, drain: Duration) {
    tracing::info!("shutting down: no new connections; waiting for in-flight requests");
    let every_slot = u32::try_from(max_connections).unwrap_or(u32::MAX);
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
                metrics.conn.timed_out("header");
                tracing::debug!(timeout = ?limits.header_read_timeout, "closing a connection that sent no request");
                // Nothing was asked, so nothing is lost: drop it outright
                // (hyper's graceful path would wait for a head that may
                // never come).
                return;
            }
            Step::IdleTimeout => {
                metrics.conn.timed_out("idle");
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
}
