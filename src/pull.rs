//! Pub/Sub pull (`serve --pull-subscription`): for clusters with no public
//! endpoint. Each subscription is received by StreamingPull through the
//! official client (flow control, lease extension, batched acks), and each
//! message takes the path a `/push` delivery takes: [`push::from_message`]
//! then [`Pipeline::settle`] running [`Pipeline::handle`]. This module only
//! decides what to tell Pub/Sub afterwards ([`verdict`]: ack after the
//! work, nack what `/push` would answer 503 for) and watches the streams
//! for `/readyz` and `/healthz`.
//!
//! The client does not say whether its stream is up: it reopens a broken
//! one by itself, backing off up to a minute. So each subscription is also
//! asked for (`GetSubscription`) every few seconds; an answer, even
//! `PERMISSION_DENIED` (`roles/pubsub.subscriber` does not grant `get`),
//! proves the endpoint and the credentials work. A received message proves
//! it too.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use google_cloud_gax::error::rpc::Code;
use google_cloud_pubsub::client::{Subscriber, SubscriptionAdmin};
use google_cloud_pubsub::model::Message;
use google_cloud_pubsub::subscriber::ShutdownBehavior;
use google_cloud_pubsub::subscriber::handler::Handler;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::push::{self, Action, IgnoreReason, Origin, PubSubMessage};
use crate::server::Check;
use crate::server::error::ApiError;
use crate::server::pipeline::{Pipeline, PushReport, Seen};

/// `--pull-subscription` and its settings, as plain data.
#[derive(Debug, Clone)]
pub struct PullConfig {
    /// `projects/P/subscriptions/S`, each received by its own stream.
    pub subscriptions: Vec<String>,
    /// Messages received and not yet acked, per subscription.
    pub max_outstanding: usize,
    /// `/readyz` fails once no stream to a subscription has been open this
    /// long.
    pub ready_timeout: Duration,
}

/// What becomes of a pulled message once its work is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Done, or nothing to do (a DELETE, a digest-only push, no match).
    Acked,
    /// What `/push` answers 503 for: Pub/Sub redelivers it.
    Nacked,
    /// Not an Artifact Registry notification: acked, since no redelivery
    /// can fix it (the pull analog of a 400).
    Malformed,
}

impl Verdict {
    /// The `result` label of `pushroll_pull_messages_total`.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Acked => "acked",
            Verdict::Nacked => "nacked",
            Verdict::Malformed => "malformed",
        }
    }
}

/// Whether a message's data is no notification at all, or one that cannot
/// be read: not JSON, no data, a tag or digest that does not parse.
/// DELETEs, digest-only pushes and other actions are well formed and
/// ignored.
pub fn malformed(action: &Action) -> bool {
    matches!(
        action,
        Action::Ignore(
            IgnoreReason::NoData
                | IgnoreReason::NotANotification
                | IgnoreReason::MissingDigest
                | IgnoreReason::InvalidTag(_)
                | IgnoreReason::InvalidDigest(_)
        )
    )
}

/// Ack or nack, from the answer `/push` would have given: 503 is retried,
/// every other failure is one a redelivery cannot fix.
pub(crate) fn verdict(result: &Result<PushReport, ApiError>, malformed: bool) -> Verdict {
    match result {
        Ok(_) if malformed => Verdict::Malformed,
        Ok(_) => Verdict::Acked,
        Err(e) if e.status() == axum::http::StatusCode::SERVICE_UNAVAILABLE => Verdict::Nacked,
        Err(_) => Verdict::Malformed,
    }
}

/// Whether a `GetSubscription` answer shows the stream's way to Pub/Sub
/// works: any answer from the service but a refusal of the credentials or
/// a missing subscription.
fn reachable(result: &google_cloud_pubsub::Result<impl Sized>) -> Result<(), String> {
    let Err(e) = result else {
        return Ok(());
    };
    match e.status().map(|s| s.code) {
        Some(Code::PermissionDenied) => Ok(()),
        _ => Err(e.to_string()),
    }
}

/// One subscription's stream, as the probes see it.
struct StreamState {
    subscription: String,
    open: AtomicBool,
    /// Seen down since it was last open.
    was_down: AtomicBool,
    /// When the stream was last known open (the start, before that: the
    /// first connection gets `--pull-ready-timeout` too).
    last_open: Mutex<Instant>,
    /// Messages in hand, by a serial number: when each was received.
    in_hand: Mutex<BTreeMap<u64, Instant>>,
    serial: AtomicU64,
    /// Tells the receiver to open a new stream at once (the probe saw
    /// Pub/Sub come back while the client may be backing off for a minute).
    reopen: Notify,
}

impl StreamState {
    fn new(subscription: &str) -> StreamState {
        StreamState {
            subscription: subscription.to_owned(),
            open: AtomicBool::new(false),
            was_down: AtomicBool::new(false),
            last_open: Mutex::new(Instant::now()),
            in_hand: Mutex::new(BTreeMap::new()),
            serial: AtomicU64::new(0),
            reopen: Notify::new(),
        }
    }

    /// Records that the stream works; true when it had been seen down
    /// (not merely not yet up).
    fn opened(&self, metrics: &Metrics) -> bool {
        *self.last_open.lock().unwrap() = Instant::now();
        let was = self.open.swap(true, Ordering::AcqRel);
        if !was {
            metrics.pull.set_open(&self.subscription, true);
            tracing::info!(subscription = %self.subscription, "pull: stream open");
        }
        !was && self.was_down.swap(false, Ordering::AcqRel)
    }

    fn closed(&self, metrics: &Metrics, why: &str) {
        self.was_down.store(true, Ordering::Release);
        if self.open.swap(false, Ordering::AcqRel) {
            metrics.pull.set_open(&self.subscription, false);
            tracing::warn!(subscription = %self.subscription, error = why, "pull: stream down");
        }
    }

    fn ready(&self, timeout: Duration) -> Result<(), String> {
        let since = self.last_open.lock().unwrap().elapsed();
        if self.open.load(Ordering::Acquire) || since <= timeout {
            Ok(())
        } else {
            Err(format!(
                "no stream to {} has been open for {}s (--pull-ready-timeout {}s)",
                self.subscription,
                since.as_secs(),
                timeout.as_secs()
            ))
        }
    }

    /// Fails when a message has been in hand far past the push timeout:
    /// its work or its ack is stuck, and so is a slot of the flow control.
    fn live(&self, stuck_after: Duration) -> Result<(), String> {
        let oldest = self.in_hand.lock().unwrap().values().min().copied();
        match oldest {
            Some(t) if t.elapsed() > stuck_after => Err(format!(
                "a message of {} has been in hand for {}s",
                self.subscription,
                t.elapsed().as_secs()
            )),
            _ => Ok(()),
        }
    }

    fn hold(self: &Arc<Self>) -> InHand {
        let id = self.serial.fetch_add(1, Ordering::Relaxed);
        self.in_hand.lock().unwrap().insert(id, Instant::now());
        InHand {
            state: self.clone(),
            id,
        }
    }
}

/// A message in hand, until dropped.
struct InHand {
    state: Arc<StreamState>,
    id: u64,
}

impl Drop for InHand {
    fn drop(&mut self) {
        self.state.in_hand.lock().unwrap().remove(&self.id);
    }
}

/// The receivers, started: their probes for `/readyz` and `/healthz`, and
/// their tasks, which end once `shutdown` is cancelled and the messages in
/// hand are settled and acked.
pub struct Pulling {
    pub(crate) ready: Vec<Check>,
    pub(crate) live: Vec<Check>,
    tasks: JoinSet<()>,
}

impl Pulling {
    /// Waits for the drain after `shutdown`.
    pub async fn drained(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Connects to Pub/Sub: the emulator when `PUBSUB_EMULATOR_HOST` is set
/// (the client does not read it), else Application Default Credentials
/// (on GKE, Workload Identity's metadata server).
async fn connect() -> anyhow::Result<(Subscriber, SubscriptionAdmin)> {
    let emulator = std::env::var("PUBSUB_EMULATOR_HOST")
        .ok()
        .filter(|h| !h.is_empty());
    let mut subscriber = Subscriber::builder();
    let mut admin = SubscriptionAdmin::builder();
    if let Some(host) = emulator {
        let endpoint = format!("http://{host}");
        tracing::info!(%endpoint, "pull: using the Pub/Sub emulator (PUBSUB_EMULATOR_HOST)");
        let anonymous = google_cloud_auth::credentials::anonymous::Builder::new().build();
        subscriber = subscriber
            .with_endpoint(&endpoint)
            .with_credentials(anonymous.clone());
        admin = admin.with_endpoint(&endpoint).with_credentials(anonymous);
    }
    Ok((subscriber.build().await?, admin.build().await?))
}

/// Starts receiving every subscription of `config`.
pub async fn start(
    config: &PullConfig,
    pipeline: Arc<Pipeline>,
    shutdown: CancellationToken,
    drain_timeout: Duration,
) -> anyhow::Result<Pulling> {
    let (subscriber, admin) = connect().await?;
    let metrics = pipeline.metrics.clone();
    // The push timeout bounds the work; acks go out within 100 ms.
    let stuck_after = pipeline.timeout + Duration::from_secs(30);
    let probe_every =
        (config.ready_timeout / 4).clamp(Duration::from_millis(250), Duration::from_secs(10));
    let mut pulling = Pulling {
        ready: Vec::new(),
        live: Vec::new(),
        tasks: JoinSet::new(),
    };
    for subscription in &config.subscriptions {
        metrics.pull.subscribed(subscription);
        let state = Arc::new(StreamState::new(subscription));
        let (s, timeout) = (state.clone(), config.ready_timeout);
        pulling.ready.push(Arc::new(move || s.ready(timeout)));
        let s = state.clone();
        pulling.live.push(Arc::new(move || s.live(stuck_after)));
        tokio::spawn(probe(
            admin.clone(),
            state.clone(),
            metrics.clone(),
            probe_every,
            shutdown.clone(),
        ));
        pulling.tasks.spawn(receive(Receiver {
            subscriber: subscriber.clone(),
            state,
            pipeline: pipeline.clone(),
            max_outstanding: config.max_outstanding,
            shutdown: shutdown.clone(),
            drain_timeout,
        }));
        tracing::info!(%subscription, max_outstanding = config.max_outstanding, "pull: receiving");
    }
    Ok(pulling)
}

/// Asks for the subscription every `every`, and marks the stream open or
/// down.
async fn probe(
    admin: SubscriptionAdmin,
    state: Arc<StreamState>,
    metrics: Arc<Metrics>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let wait = every.max(Duration::from_secs(2));
    loop {
        let asked = admin
            .get_subscription()
            .set_subscription(state.subscription.clone())
            .send();
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = tokio::time::timeout(wait, asked) => r,
        };
        let verdict = match result {
            Ok(answer) => reachable(&answer),
            Err(_) => Err(format!("GetSubscription took over {wait:?}")),
        };
        match verdict {
            Ok(()) => {
                if state.opened(&metrics) {
                    state.reopen.notify_one();
                }
            }
            Err(why) => state.closed(&metrics, &why),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

struct Receiver {
    subscriber: Subscriber,
    state: Arc<StreamState>,
    pipeline: Arc<Pipeline>,
    max_outstanding: usize,
    shutdown: CancellationToken,
    drain_timeout: Duration,
}

/// Why a stream was left.
enum Ended {
    Shutdown,
    Reopen,
    Failed(String),
}

/// Receives one subscription until `shutdown`, then drains: stops
/// receiving, lets the messages in hand finish and be acked (the rest are
/// nacked at once, for another replica).
async fn receive(r: Receiver) {
    let sub = r.state.subscription.clone();
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut stream = r
            .subscriber
            .subscribe(sub.clone())
            .set_max_outstanding_messages(r.max_outstanding as i64)
            // Leases of messages in hand are renewed 10 s at a time (the
            // client's default is 60 s): after a crash, Pub/Sub hands the
            // message to another replica within about 10 s, not a minute.
            .set_max_lease_extension(Duration::from_secs(10))
            .set_shutdown_behavior(ShutdownBehavior::WaitForProcessing)
            .build();
        let token = stream.shutdown_token();
        let ended = loop {
            tokio::select! {
                biased;
                _ = r.shutdown.cancelled() => break Ended::Shutdown,
                _ = r.state.reopen.notified() => break Ended::Reopen,
                next = stream.next() => match next {
                    Some(Ok((message, handler))) => {
                        backoff = Duration::from_millis(100);
                        r.state.opened(&r.pipeline.metrics);
                        let in_hand = r.state.hold();
                        tokio::spawn(settle(
                            r.pipeline.clone(),
                            sub.clone(),
                            message,
                            handler,
                            in_hand,
                        ));
                    }
                    Some(Err(e)) => break Ended::Failed(e.to_string()),
                    None => break Ended::Failed("the stream ended".into()),
                },
            }
        };
        match ended {
            Ended::Shutdown => {
                let in_hand = r.state.in_hand.lock().unwrap().len();
                tracing::info!(subscription = %sub, in_hand, "pull: stopped receiving; finishing the messages in hand");
                if tokio::time::timeout(r.drain_timeout, token.shutdown())
                    .await
                    .is_err()
                {
                    tracing::warn!(subscription = %sub, "pull: messages still in hand at the shutdown timeout; Pub/Sub will redeliver them");
                } else {
                    tracing::info!(subscription = %sub, "pull: drained");
                }
                return;
            }
            Ended::Reopen => {
                // The old stream's messages finish and are acked through
                // its own lease loop, in the background.
                tracing::info!(subscription = %sub, "pull: Pub/Sub answers again; opening a new stream");
                tokio::spawn(async move { token.shutdown().await });
            }
            Ended::Failed(why) => {
                r.state.closed(&r.pipeline.metrics, &why);
                tokio::spawn(async move { token.shutdown().await });
                tokio::select! {
                    _ = r.shutdown.cancelled() => return,
                    _ = r.state.reopen.notified() => {}
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// One pulled message through the path `/push` takes, then its ack or
/// nack.
async fn settle(
    pipeline: Arc<Pipeline>,
    subscription: String,
    message: Message,
    handler: Handler,
    _in_hand: InHand,
) {
    let published = message
        .publish_time
        .as_ref()
        .and_then(|t| jiff::Timestamp::new(t.seconds(), t.nanos()).ok());
    let delivery = push::from_message(PubSubMessage {
        subscription: Some(&subscription),
        message_id: Some(&message.message_id),
        published,
        data: &message.data,
    });
    let malformed = malformed(&delivery.action);
    let mut seen = Seen::default();
    seen.delivery(&delivery);
    let result = pipeline
        .settle(
            Origin::PubSub,
            &mut seen,
            || false,
            async |_| pipeline.handle(delivery).await,
        )
        .await;
    let verdict = verdict(&result, malformed);
    match verdict {
        Verdict::Acked | Verdict::Malformed => handler.ack(),
        Verdict::Nacked => handler.nack(),
    }
    pipeline
        .metrics
        .pull
        .message(&subscription, verdict.label());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::store::LookupError;
    use crate::push::DecodeError;

    #[test]
    fn malformed_data_is_what_no_redelivery_fixes() {
        let cases: [(IgnoreReason, bool); 9] = [
            (IgnoreReason::NoData, true),
            (IgnoreReason::NotANotification, true),
            (IgnoreReason::MissingDigest, true),
            (IgnoreReason::InvalidTag("x".into()), true),
            (IgnoreReason::InvalidDigest("x".into()), true),
            (IgnoreReason::Delete, false),
            (IgnoreReason::UntaggedDigest, false),
            (IgnoreReason::UnknownAction("UPDATE".into()), false),
            (IgnoreReason::RepositoryMismatch, false),
        ];
        for (reason, want) in cases {
            assert_eq!(
                malformed(&Action::Ignore(reason.clone())),
                want,
                "{reason:?}"
            );
        }
    }

    #[test]
    fn what_would_be_503_is_nacked_and_the_rest_acked() {
        let report = || PushReport {
            message_id: None,
            action: None,
            image: None,
            digest: None,
            outcome: "restarted",
            reason: None,
            source: None,
            workloads: Vec::new(),
            pushes: Vec::new(),
        };
        let cases: [(Result<PushReport, ApiError>, bool, Verdict); 6] = [
            (Ok(report()), false, Verdict::Acked),
            (Ok(report()), true, Verdict::Malformed),
            (
                Err(ApiError::Timeout(Duration::from_secs(1))),
                false,
                Verdict::Nacked,
            ),
            (
                Err(ApiError::Restart {
                    done: Vec::new(),
                    failed: Vec::new(),
                }),
                false,
                Verdict::Nacked,
            ),
            (
                Err(ApiError::Lookup(LookupError::Unavailable("down".into()))),
                false,
                Verdict::Nacked,
            ),
            (
                Err(ApiError::Decode(DecodeError::DataNotBase64)),
                false,
                Verdict::Malformed,
            ),
        ];
        for (result, malformed, want) in cases {
            assert_eq!(verdict(&result, malformed), want, "{result:?}");
        }
    }

    #[test]
    fn readiness_fails_only_after_the_timeout_without_a_stream() {
        let m = Metrics::new();
        let s = StreamState::new("projects/p/subscriptions/s");
        assert!(s.ready(Duration::from_secs(60)).is_ok(), "grace at start");
        assert!(s.ready(Duration::ZERO).is_err());
        s.opened(&m);
        assert!(s.ready(Duration::ZERO).is_ok(), "open");
        s.closed(&m, "down");
        *s.last_open.lock().unwrap() -= Duration::from_secs(5);
        assert!(s.ready(Duration::from_secs(10)).is_ok());
        let why = s.ready(Duration::from_secs(2)).unwrap_err();
        assert!(why.contains("projects/p/subscriptions/s"), "{why}");
    }

    #[test]
    fn a_message_held_past_the_limit_fails_liveness() {
        let s = Arc::new(StreamState::new("projects/p/subscriptions/s"));
        assert!(s.live(Duration::ZERO).is_ok());
        let held = s.hold();
        assert!(s.live(Duration::from_secs(60)).is_ok());
        std::thread::sleep(Duration::from_millis(5));
        assert!(s.live(Duration::from_millis(1)).is_err());
        drop(held);
        assert!(s.live(Duration::ZERO).is_ok());
    }
}
