//! Prometheus metrics, all named `pushroll_*`, in one group per concern.
//! Each group registers its own metrics and is written to through small
//! methods, so that a call site says what happened, not how it is counted.
//! prometheus-client appends `_total` to counters itself (a name ending in
//! `_total` panics in debug).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::policy;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PushLabels {
    source: &'static str,
    outcome: &'static str,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IgnoredLabels {
    source: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RestartLabels {
    kind: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    verb: &'static str,
    resource: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DroppedLabels {
    source: &'static str,
    /// What is not a Kubernetes name: `namespace`, `name` or `container`.
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SubscriptionLabels {
    subscription: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PullLabels {
    subscription: String,
    result: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;
type IntGauge = Gauge<i64, AtomicI64>;

fn latency_histogram() -> Histogram {
    // 10 µs .. ~20 s: lookups are microseconds, API fallbacks milliseconds.
    Histogram::new(exponential_buckets(0.000_01, 4.0, 11))
}

/// Registers `metric` under `name` and hands it back.
fn register<M: prometheus_client::registry::Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    registry.register(name, help, metric.clone());
    metric
}

fn register_seconds<M: prometheus_client::registry::Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    registry.register_with_unit(name, help, Unit::Seconds, metric.clone());
    metric
}

/// Raises a gauge for as long as it lives: a push in flight, an open
/// connection.
pub(crate) struct Held(IntGauge);

impl Held {
    fn new(gauge: &IntGauge) -> Held {
        gauge.inc();
        Held(gauge.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Every metric pushroll exports, registered once.
pub struct Metrics {
    registry: Registry,
    pub(crate) push: PushMetrics,
    pub(crate) lookup: LookupMetrics,
    pub(crate) index: IndexMetrics,
    pub(crate) restart: RestartMetrics,
    pub(crate) rollout: RolloutMetrics,
    pub(crate) policy: PolicyMetrics,
    pub(crate) notify: NotifyMetrics,
    pub(crate) kube: KubeMetrics,
    pub(crate) auth: AuthMetrics,
    pub(crate) indexer: IndexerMetrics,
    pub(crate) conn: ConnMetrics,
    pub(crate) pull: PullMetrics,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("pushroll");
        let r = &mut registry;
        let (push, lookup, index, restart) = (
            PushMetrics::register(r),
            LookupMetrics::register(r),
            IndexMetrics::register(r),
            RestartMetrics::register(r),
        );
        let (kube, auth, indexer, conn) = (
            KubeMetrics::register(r),
            AuthMetrics::register(r),
            IndexerMetrics::register(r),
            ConnMetrics::register(r),
        );
        let (rollout, policy) = (RolloutMetrics::register(r), PolicyMetrics::register(r));
        let (notify, pull) = (NotifyMetrics::register(r), PullMetrics::register(r));
        let metrics = Metrics {
            registry,
            push,
            lookup,
            index,
            restart,
            rollout,
            policy,
            notify,
            kube,
            auth,
            indexer,
            conn,
            pull,
        };
        metrics.zero_what_alerts_count();
        Arc::new(metrics)
    }

    /// Creates at 0 the series the alerts in `deploy/monitoring` take
    /// `increase()` of. A series born at 1 reads as no increase, so the
    /// first failed rollout (or drop, or rejected patch) would never alert.
    fn zero_what_alerts_count(&self) {
        for code_outcome in [
            (200, "restarted"),
            (200, "pending"),
            (200, "unchanged"),
            (200, "no-match"),
            (200, "ignored"),
            (503, "index-unavailable"),
            (503, "restart-failed"),
            (503, "timeout"),
            (503, "keys-unavailable"),
        ] {
            let (code, outcome) = code_outcome;
            self.push
                .pushes
                .get_or_create(&PushLabels {
                    source: "pubsub",
                    outcome,
                    code,
                })
                .inc_by(0);
        }
        for kind in ["Deployment", "StatefulSet", "DaemonSet"] {
            for result in ["restarted", "rejected", "failed"] {
                self.restart
                    .restarts
                    .get_or_create(&RestartLabels { kind, result })
                    .inc_by(0);
            }
            for result in ["complete", "failed", "stale"] {
                self.rollout
                    .rollouts
                    .get_or_create(&RestartLabels { kind, result })
                    .inc_by(0);
            }
        }
        for result in ["delivered", "retried", "failed", "refused", "dropped"] {
            self.notify
                .outcomes
                .get_or_create(&ResultLabels { result })
                .inc_by(0);
        }
        for result in [
            "written",
            "unchanged",
            "too-large",
            "error",
            "not-lease-holder",
        ] {
            self.indexer
                .writes
                .get_or_create(&ResultLabels { result })
                .inc_by(0);
        }
        for annotation in [policy::WINDOW, policy::MIN_INTERVAL, policy::APPROVAL] {
            self.policy
                .invalid
                .get_or_create(&AnnotationLabels { annotation })
                .inc_by(0);
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// `POST /push`: answers, their latency, and what was refused or ignored.
pub(crate) struct PushMetrics {
    pushes: Family<PushLabels, Counter>,
    duration: HistogramFamily<PushLabels>,
    token_rejections: Family<ReasonLabels, Counter>,
    ignored: Family<IgnoredLabels, Counter>,
    inflight: IntGauge,
}

impl PushMetrics {
    fn register(r: &mut Registry) -> PushMetrics {
        PushMetrics {
            pushes: register(
                r,
                "pushes",
                "Pushes answered (POST /push, POST /webhooks/{source}, pulled messages) by source, outcome and status code",
                Family::default(),
            ),
            duration: register_seconds(
                r,
                "push_duration",
                "Time to answer a push, by source, outcome and status code",
                Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            ),
            token_rejections: register(
                r,
                "token_rejections",
                "Push requests refused by token verification, by reason",
                Family::default(),
            ),
            ignored: register(
                r,
                "ignored",
                "Deliveries acknowledged without action, by reason",
                Family::default(),
            ),
            inflight: register(
                r,
                "inflight_pushes",
                "Pushes being handled (every source)",
                Gauge::default(),
            ),
        }
    }

    /// A push from `source` answered with `code`, as `outcome`, after `took`.
    pub fn answered(&self, source: &'static str, outcome: &'static str, code: u16, took: Duration) {
        let labels = PushLabels {
            source,
            outcome,
            code,
        };
        self.pushes.get_or_create(&labels).inc();
        self.duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    pub(crate) fn token_rejected(&self, reason: &'static str) {
        self.token_rejections
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn ignored(&self, source: &'static str, reason: &'static str) {
        self.ignored
            .get_or_create(&IgnoredLabels { source, reason })
            .inc();
    }

    /// Counts a push in flight until the guard is dropped.
    pub(crate) fn in_flight(&self) -> Held {
        Held::new(&self.inflight)
    }
}

/// Finding the workloads of an image.
pub(crate) struct LookupMetrics {
    lookups: Family<SourceLabels, Counter>,
    duration: HistogramFamily<SourceLabels>,
}

impl LookupMetrics {
    fn register(r: &mut Registry) -> LookupMetrics {
        LookupMetrics {
            lookups: register(
                r,
                "lookups",
                "Image lookups by the source that answered",
                Family::default(),
            ),
            duration: register_seconds(
                r,
                "lookup_duration",
                "Time to find the workloads of an image",
                Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            ),
        }
    }

    /// A lookup answered by `source` after `took`.
    pub fn answered(&self, source: &'static str, took: Duration) {
        let labels = SourceLabels { source };
        self.lookups.get_or_create(&labels).inc();
        self.duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }
}

/// The indexes held in memory, and reading them.
pub(crate) struct IndexMetrics {
    entries: Family<SourceLabels, Gauge>,
    generated: Family<SourceLabels, Gauge<f64, AtomicU64>>,
    reloads: Family<ResultLabels, Counter>,
    dropped_entries: Family<DroppedLabels, Counter>,
    scans: Family<ResultLabels, Counter>,
}

impl IndexMetrics {
    fn register(r: &mut Registry) -> IndexMetrics {
        IndexMetrics {
            entries: register(
                r,
                "index_entries",
                "Images in the in-memory index, by source",
                Family::default(),
            ),
            generated: register(
                r,
                "index_generated_timestamp_seconds",
                "The index's generatedAt as a Unix timestamp, by source",
                Family::default(),
            ),
            reloads: register(
                r,
                "index_reloads",
                "Index (re)loads by result",
                Family::default(),
            ),
            dropped_entries: register(
                r,
                "index_dropped_entries",
                "Index entries dropped on load because a namespace, name or container is not a Kubernetes name, by source and reason",
                Family::default(),
            ),
            scans: register(
                r,
                "scans",
                "Cluster scans for a missing image by result",
                Family::default(),
            ),
        }
    }

    /// `source` now holds an index of `images`, generated at `generated_at`.
    pub fn held(&self, source: &'static str, images: usize, generated_at: Option<jiff::Timestamp>) {
        let labels = SourceLabels { source };
        self.entries.get_or_create(&labels).set(images as i64);
        if let Some(t) = generated_at {
            self.generated
                .get_or_create(&labels)
                .set(t.as_millisecond() as f64 / 1000.0);
        }
    }

    /// `source` holds no index any more.
    pub(crate) fn dropped_source(&self, source: &'static str) {
        let labels = SourceLabels { source };
        self.entries.remove(&labels);
        self.generated.remove(&labels);
    }

    pub fn reload(&self, result: &'static str) {
        self.reloads.get_or_create(&ResultLabels { result }).inc();
    }

    /// `n` entries from `source` dropped on load, for `reason`.
    pub(crate) fn entries_dropped(&self, source: &'static str, reason: &'static str, n: u64) {
        self.dropped_entries
            .get_or_create(&DroppedLabels { source, reason })
            .inc_by(n);
    }

    pub fn scan(&self, result: &'static str) {
        self.scans.get_or_create(&ResultLabels { result }).inc();
    }
}

/// What happened to each workload a push named.
pub(crate) struct RestartMetrics {
    restarts: Family<RestartLabels, Counter>,
    pull_policy_warnings: Counter,
}

impl RestartMetrics {
    fn register(r: &mut Registry) -> RestartMetrics {
        RestartMetrics {
            restarts: register(
                r,
                "restarts",
                "Workloads handled by kind and result",
                Family::default(),
            ),
            pull_policy_warnings: register(
                r,
                "pull_policy_warnings",
                "Restarted containers whose imagePullPolicy is not Always, so that a node holding the tag may keep running the old image (restart mode)",
                Counter::default(),
            ),
        }
    }

    pub(crate) fn handled(&self, kind: &'static str, result: &'static str) {
        self.restarts
            .get_or_create(&RestartLabels { kind, result })
            .inc();
    }

    /// `n` containers restarted with a pull policy that may keep the old image.
    pub(crate) fn pull_policy_warnings(&self, n: usize) {
        self.pull_policy_warnings.inc_by(n as u64);
    }
}

/// The rollouts the indexer's Lease holder follows to their end.
pub(crate) struct RolloutMetrics {
    rollouts: Family<RestartLabels, Counter>,
    duration: HistogramFamily<KindLabels>,
    in_progress: IntGauge,
}

impl RolloutMetrics {
    fn register(r: &mut Registry) -> RolloutMetrics {
        RolloutMetrics {
            rollouts: register(
                r,
                "rollouts",
                "Rollouts pushroll started, by kind and how they ended: complete, failed (progress deadline or --rollout-timeout), stale (complete, but pods run another digest)",
                Family::default(),
            ),
            duration: register_seconds(
                r,
                "rollout_duration",
                "From restartedAt to the rollout's completion",
                // 0.25 s .. ~68 min.
                Family::new_with_constructor(
                    (|| Histogram::new(exponential_buckets(0.25, 2.0, 15))) as fn() -> Histogram,
                ),
            ),
            in_progress: register(
                r,
                "rollouts_in_progress",
                "Rollouts being followed now (on the Lease holder)",
                IntGauge::default(),
            ),
        }
    }

    /// A rollout recorded as ended; `took` when it completed.
    pub(crate) fn ended(&self, kind: &'static str, result: &'static str, took: Option<Duration>) {
        self.rollouts
            .get_or_create(&RestartLabels { kind, result })
            .inc();
        if let Some(took) = took {
            self.duration
                .get_or_create(&KindLabels { kind })
                .observe(took.as_secs_f64());
        }
    }

    pub(crate) fn in_progress(&self, n: usize) {
        self.in_progress.set(n as i64);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AnnotationLabels {
    annotation: &'static str,
}

/// Policies: what waits, why, and what was released, refused or undone.
pub(crate) struct PolicyMetrics {
    decisions: Family<ResultLabels, Counter>,
    invalid: Family<AnnotationLabels, Counter>,
    pending: Family<ReasonLabels, IntGauge>,
}

impl PolicyMetrics {
    fn register(r: &mut Registry) -> PolicyMetrics {
        PolicyMetrics {
            decisions: register(
                r,
                "policy_decisions",
                "Pushes a policy held or let through, by result: pending-approval and deferred (a waiting push written), refused (a digest whose rollout failed and was undone), released (a waiting push carried out by the controller), undone (a failed rollout's previous template put back)",
                Family::default(),
            ),
            invalid: register(
                r,
                "policy_invalid",
                "Policy annotations that do not parse, by annotation (the push waits instead of rolling)",
                Family::default(),
            ),
            pending: register(
                r,
                "pending",
                "Waiting pushes (pushroll.io/pending) by reason: approval, window, interval (on the indexer's Lease holder)",
                Family::default(),
            ),
        }
    }

    pub(crate) fn decided(&self, result: &'static str) {
        self.decisions.get_or_create(&ResultLabels { result }).inc();
    }

    pub(crate) fn invalid(&self, annotation: &'static str) {
        self.invalid
            .get_or_create(&AnnotationLabels { annotation })
            .inc();
    }

    /// The waiting pushes by reason, all reasons set (0 when none wait).
    pub(crate) fn pending(&self, counts: &[(&'static str, usize)]) {
        for (reason, n) in counts {
            self.pending
                .get_or_create(&ReasonLabels { reason })
                .set(*n as i64);
        }
    }
}

/// Notifications (`--notify-url`).
pub(crate) struct NotifyMetrics {
    outcomes: Family<ResultLabels, Counter>,
}

impl NotifyMetrics {
    fn register(r: &mut Registry) -> NotifyMetrics {
        NotifyMetrics {
            outcomes: register(
                r,
                "notifications",
                "Notification attempts by result: delivered, retried (5xx, 429, timeout; tried again), failed (out of attempts), refused (another 4xx; not retried), dropped (the queue was full)",
                Family::default(),
            ),
        }
    }

    pub(crate) fn outcome(&self, result: &'static str) {
        self.outcomes.get_or_create(&ResultLabels { result }).inc();
    }
}

/// Kubernetes API calls.
pub(crate) struct KubeMetrics {
    requests: Family<ApiLabels, Counter>,
}

impl KubeMetrics {
    fn register(r: &mut Registry) -> KubeMetrics {
        KubeMetrics {
            requests: register(
                r,
                "kube_api_requests",
                "Kubernetes API requests by verb, resource and outcome",
                Family::default(),
            ),
        }
    }

    pub fn request(&self, verb: &'static str, resource: &'static str, outcome: &'static str) {
        self.requests
            .get_or_create(&ApiLabels {
                verb,
                resource,
                outcome,
            })
            .inc();
    }
}

/// The token signing keys.
pub(crate) struct AuthMetrics {
    jwks_fetches: Family<ResultLabels, Counter>,
}

impl AuthMetrics {
    fn register(r: &mut Registry) -> AuthMetrics {
        AuthMetrics {
            jwks_fetches: register(
                r,
                "jwks_fetches",
                "Fetches of the token signing keys by result",
                Family::default(),
            ),
        }
    }

    pub(crate) fn jwks_fetch(&self, result: &'static str) {
        self.jwks_fetches
            .get_or_create(&ResultLabels { result })
            .inc();
    }
}

/// The watch indexer: its watches, the Lease, and the ConfigMap writes.
pub(crate) struct IndexerMetrics {
    writes: Family<ResultLabels, Counter>,
    watch_errors: Family<ResultLabels, Counter>,
    watch_events: Family<ResultLabels, Counter>,
    watch_lists: Family<ResultLabels, Counter>,
    lease_recreations: Family<ResultLabels, Counter>,
    changes: Counter,
    leader: IntGauge,
}

impl IndexerMetrics {
    fn register(r: &mut Registry) -> IndexerMetrics {
        IndexerMetrics {
            writes: register(
                r,
                "index_writes",
                "Index ConfigMap writes by result (written, unchanged, too-large, error)",
                Family::default(),
            ),
            watch_errors: register(
                r,
                "watch_errors",
                "Workload watch errors by resource",
                Family::default(),
            ),
            watch_events: register(
                r,
                "watch_events",
                "Workload watch events processed, by resource",
                Family::default(),
            ),
            watch_lists: register(
                r,
                "watch_lists",
                "Complete lists of a workload kind by its watch (the first, then each re-list after a 410 or a lost watch), by resource",
                Family::default(),
            ),
            lease_recreations: register(
                r,
                "lease_recreations",
                "Times the indexer found its Lease deleted and created it again, by result",
                Family::default(),
            ),
            changes: register(
                r,
                "index_changes",
                "Watch events that changed the index",
                Counter::default(),
            ),
            leader: register(
                r,
                "indexer_leader",
                "1 while this indexer holds the Lease",
                Gauge::default(),
            ),
        }
    }

    /// A ConfigMap write (or its refusal) by result.
    pub fn write(&self, result: &'static str) {
        self.writes.get_or_create(&ResultLabels { result }).inc();
    }

    /// The watch of `resource` failed (it retries with backoff).
    pub(crate) fn watch_error(&self, resource: &'static str) {
        self.watch_errors
            .get_or_create(&ResultLabels { result: resource })
            .inc();
    }

    /// A watch event of `resource`, and whether it changed the index.
    /// Changes are counted first, so that an observer who sees an event
    /// counted also sees whether it changed the index.
    pub(crate) fn watch_event(&self, resource: &'static str, changed: bool) {
        if changed {
            self.changes.inc();
        }
        self.watch_events
            .get_or_create(&ResultLabels { result: resource })
            .inc();
    }

    /// A complete list of `resource` (the first, or a re-list).
    pub(crate) fn watch_list(&self, resource: &'static str) {
        self.watch_lists
            .get_or_create(&ResultLabels { result: resource })
            .inc();
    }

    pub(crate) fn lease_recreation(&self, result: &'static str) {
        self.lease_recreations
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub(crate) fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }
}

/// Client connections of the HTTP server.
pub(crate) struct ConnMetrics {
    open: IntGauge,
    refused: Counter,
    timeouts: Family<ReasonLabels, Counter>,
}

impl ConnMetrics {
    fn register(r: &mut Registry) -> ConnMetrics {
        ConnMetrics {
            open: register(
                r,
                "connections_open",
                "Client connections open on the HTTP server",
                Gauge::default(),
            ),
            refused: register(
                r,
                "connections_refused",
                "Connections closed as soon as accepted because --max-connections were open",
                Counter::default(),
            ),
            timeouts: register(
                r,
                "connection_timeouts",
                "Connections closed by the server for a timeout: header (no request within the header-read timeout of accept), idle (no request for the idle timeout)",
                Family::default(),
            ),
        }
    }

    /// Counts an open connection until the guard is dropped.
    pub fn opened(&self) -> Held {
        Held::new(&self.open)
    }

    pub fn refused(&self) {
        self.refused.inc();
    }

    /// A connection closed for a timeout (`header` or `idle`).
    pub(crate) fn timed_out(&self, reason: &'static str) {
        self.timeouts.get_or_create(&ReasonLabels { reason }).inc();
    }
}

/// Pub/Sub pull (`--pull-subscription`): what became of each pulled
/// message, and the streams. The push metrics count pulled messages too
/// (`source="pubsub"`).
pub(crate) struct PullMetrics {
    messages: Family<PullLabels, Counter>,
    streams_open: Family<SubscriptionLabels, IntGauge>,
}

impl PullMetrics {
    fn register(r: &mut Registry) -> PullMetrics {
        PullMetrics {
            messages: register(
                r,
                "pull_messages",
                "Pulled messages by what became of them: acked (the work done, or nothing to do), nacked (redelivered: what /push would answer 503 for), malformed (acked: a redelivery cannot fix it)",
                Family::default(),
            ),
            streams_open: register(
                r,
                "pull_streams_open",
                "1 while the subscription's StreamingPull is up (the subscription answered within the last probe), 0 otherwise",
                Family::default(),
            ),
        }
    }

    /// Creates a subscription's series at 0, so that the first nack reads
    /// as an increase.
    pub(crate) fn subscribed(&self, subscription: &str) {
        for result in ["acked", "nacked", "malformed"] {
            let _ = self.messages.get_or_create(&PullLabels {
                subscription: subscription.to_owned(),
                result,
            });
        }
        self.set_open(subscription, false);
    }

    /// A pulled message settled (`acked`, `nacked` or `malformed`).
    pub(crate) fn message(&self, subscription: &str, result: &'static str) {
        self.messages
            .get_or_create(&PullLabels {
                subscription: subscription.to_owned(),
                result,
            })
            .inc();
    }

    pub(crate) fn set_open(&self, subscription: &str, open: bool) {
        self.streams_open
            .get_or_create(&SubscriptionLabels {
                subscription: subscription.to_owned(),
            })
            .set(i64::from(open));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every group registers under the names dashboards and alerts use.
    #[test]
    fn every_metric_is_exposed_under_its_name() {
        let m = Metrics::new();
        m.push
            .answered("pubsub", "restarted", 200, Duration::from_millis(1));
        m.push.token_rejected("expired");
        m.push.ignored("pubsub", "not-insert");
        let _inflight = m.push.in_flight();
        m.lookup.answered("file", Duration::from_micros(5));
        m.index.held("file", 3, Some(jiff::Timestamp::UNIX_EPOCH));
        m.index.reload("file-ok");
        m.index.entries_dropped("file", "name", 2);
        m.index.scan("success");
        m.restart.handled("Deployment", "restarted");
        m.restart.pull_policy_warnings(2);
        m.kube.request("get", "deployments", "success");
        m.auth.jwks_fetch("success");
        m.indexer.write("written");
        m.indexer.watch_error("deployments");
        m.indexer.watch_event("deployments", true);
        m.indexer.watch_list("deployments");
        m.indexer.lease_recreation("recreated");
        m.indexer.set_leader(true);
        let _open = m.conn.opened();
        m.conn.refused();
        m.conn.timed_out("idle");
        m.pull.subscribed("projects/p/subscriptions/s");
        m.pull.message("projects/p/subscriptions/s", "acked");
        m.pull.set_open("projects/p/subscriptions/s", true);
        let text = m.encode();
        for line in [
            "pushroll_pushes_total{source=\"pubsub\",outcome=\"restarted\",code=\"200\"} 1",
            "pushroll_push_duration_seconds_count{source=\"pubsub\",outcome=\"restarted\",code=\"200\"} 1",
            "pushroll_token_rejections_total{reason=\"expired\"} 1",
            "pushroll_ignored_total{source=\"pubsub\",reason=\"not-insert\"} 1",
            "pushroll_inflight_pushes 1",
            "pushroll_lookups_total{source=\"file\"} 1",
            "pushroll_lookup_duration_seconds_count{source=\"file\"} 1",
            "pushroll_index_entries{source=\"file\"} 3",
            "pushroll_index_generated_timestamp_seconds{source=\"file\"} 0",
            "pushroll_index_reloads_total{result=\"file-ok\"} 1",
            "pushroll_index_dropped_entries_total{source=\"file\",reason=\"name\"} 2",
            "pushroll_scans_total{result=\"success\"} 1",
            "pushroll_restarts_total{kind=\"Deployment\",result=\"restarted\"} 1",
            "pushroll_pull_policy_warnings_total 2",
            "pushroll_kube_api_requests_total{verb=\"get\",resource=\"deployments\",outcome=\"success\"} 1",
            "pushroll_jwks_fetches_total{result=\"success\"} 1",
            "pushroll_index_writes_total{result=\"written\"} 1",
            "pushroll_watch_errors_total{result=\"deployments\"} 1",
            "pushroll_watch_events_total{result=\"deployments\"} 1",
            "pushroll_watch_lists_total{result=\"deployments\"} 1",
            "pushroll_lease_recreations_total{result=\"recreated\"} 1",
            "pushroll_index_changes_total 1",
            "pushroll_indexer_leader 1",
            "pushroll_connections_open 1",
            "pushroll_connections_refused_total 1",
            "pushroll_connection_timeouts_total{reason=\"idle\"} 1",
            "pushroll_pull_messages_total{subscription=\"projects/p/subscriptions/s\",result=\"acked\"} 1",
            "pushroll_pull_messages_total{subscription=\"projects/p/subscriptions/s\",result=\"nacked\"} 0",
            "pushroll_pull_streams_open{subscription=\"projects/p/subscriptions/s\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        drop(_inflight);
        let fresh = Metrics::new().encode();
        for line in [
            "pushroll_rollouts_total{kind=\"Deployment\",result=\"failed\"} 0",
            "pushroll_restarts_total{kind=\"DaemonSet\",result=\"rejected\"} 0",
            "pushroll_pushes_total{source=\"pubsub\",outcome=\"restart-failed\",code=\"503\"} 0",
            "pushroll_notifications_total{result=\"dropped\"} 0",
            "pushroll_index_writes_total{result=\"not-lease-holder\"} 0",
            "pushroll_policy_invalid_total{annotation=\"pushroll.io/window\"} 0",
        ] {
            assert!(
                fresh.contains(line),
                "not created at 0: {line:?} in:\n{fresh}"
            );
        }
        drop(_open);
        let text = m.encode();
        assert!(text.contains("pushroll_inflight_pushes 0"), "{text}");
        assert!(text.contains("pushroll_connections_open 0"), "{text}");
        m.index.dropped_source("file");
        assert!(
            !m.encode()
                .contains("pushroll_index_entries{source=\"file\"}")
        );
    }
}
