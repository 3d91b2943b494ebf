//! Prometheus metrics, all named `pushroll_*`. prometheus-client appends
//! `_total` to counters itself (a name ending in `_total` panics in debug).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicI64, AtomicU64};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PushLabels {
    pub outcome: &'static str,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RestartLabels {
    pub kind: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    pub verb: &'static str,
    pub resource: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DroppedLabels {
    pub source: &'static str,
    /// What is not a Kubernetes name: `namespace`, `name` or `container`.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 10 µs .. ~20 s: lookups are microseconds, API fallbacks milliseconds.
    Histogram::new(exponential_buckets(0.000_01, 4.0, 11))
}

/// Raises a gauge for as long as it lives: a push in flight, an open
/// connection.
pub struct Held(Gauge<i64, AtomicI64>);

impl Held {
    pub fn new(gauge: &Gauge<i64, AtomicI64>) -> Held {
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
    pub pushes: Family<PushLabels, Counter>,
    pub push_duration: HistogramFamily<PushLabels>,
    pub token_rejections: Family<ReasonLabels, Counter>,
    pub ignored: Family<ReasonLabels, Counter>,
    pub lookups: Family<SourceLabels, Counter>,
    pub lookup_duration: HistogramFamily<SourceLabels>,
    pub restarts: Family<RestartLabels, Counter>,
    pub api_requests: Family<ApiLabels, Counter>,
    pub index_entries: Family<SourceLabels, Gauge>,
    pub index_generated: Family<SourceLabels, Gauge<f64, AtomicU64>>,
    pub index_reloads: Family<ResultLabels, Counter>,
    pub index_dropped_entries: Family<DroppedLabels, Counter>,
    pub jwks_fetches: Family<ResultLabels, Counter>,
    pub index_writes: Family<ResultLabels, Counter>,
    pub watch_errors: Family<ResultLabels, Counter>,
    pub scans: Family<ResultLabels, Counter>,
    pub watch_events: Family<ResultLabels, Counter>,
    pub watch_lists: Family<ResultLabels, Counter>,
    pub lease_recreations: Family<ResultLabels, Counter>,
    pub index_changes: Counter,
    pub indexer_leader: Gauge<i64, AtomicI64>,
    pub inflight_pushes: Gauge<i64, AtomicI64>,
    pub connections_open: Gauge<i64, AtomicI64>,
    pub connections_refused: Counter,
    pub connection_timeouts: Family<ReasonLabels, Counter>,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("pushroll");
        let pushes = Family::default();
        registry.register(
            "pushes",
            "POST /push requests by outcome and status code",
            pushes.clone(),
        );
        let push_duration: HistogramFamily<PushLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "push_duration",
            "Time to answer POST /push",
            prometheus_client::registry::Unit::Seconds,
            push_duration.clone(),
        );
        let token_rejections = Family::default();
        registry.register(
            "token_rejections",
            "Push requests refused by token verification, by reason",
            token_rejections.clone(),
        );
        let ignored = Family::default();
        registry.register(
            "ignored",
            "Deliveries acknowledged without action, by reason",
            ignored.clone(),
        );
        let lookups = Family::default();
        registry.register(
            "lookups",
            "Image lookups by the source that answered",
            lookups.clone(),
        );
        let lookup_duration: HistogramFamily<SourceLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "lookup_duration",
            "Time to find the workloads of an image",
            prometheus_client::registry::Unit::Seconds,
            lookup_duration.clone(),
        );
        let restarts = Family::default();
        registry.register(
            "restarts",
            "Workloads handled by kind and result",
            restarts.clone(),
        );
        let api_requests = Family::default();
        registry.register(
            "kube_api_requests",
            "Kubernetes API requests by verb, resource and outcome",
            api_requests.clone(),
        );
        let index_entries = Family::default();
        registry.register(
            "index_entries",
            "Images in the in-memory index, by source",
            index_entries.clone(),
        );
        let index_generated = Family::default();
        registry.register(
            "index_generated_timestamp_seconds",
            "The index's generatedAt as a Unix timestamp, by source",
            index_generated.clone(),
        );
        let index_reloads = Family::default();
        registry.register(
            "index_reloads",
            "Index (re)loads by result",
            index_reloads.clone(),
        );
        let index_dropped_entries = Family::default();
        registry.register(
            "index_dropped_entries",
            "Index entries dropped on load because a namespace, name or container is not a Kubernetes name, by source and reason",
            index_dropped_entries.clone(),
        );
        let jwks_fetches = Family::default();
        registry.register(
            "jwks_fetches",
            "Fetches of the token signing keys by result",
            jwks_fetches.clone(),
        );
        let index_writes = Family::default();
        registry.register(
            "index_writes",
            "Index ConfigMap writes by result (written, unchanged, too-large, error)",
            index_writes.clone(),
        );
        let watch_errors = Family::default();
        registry.register(
            "watch_errors",
            "Workload watch errors by resource",
            watch_errors.clone(),
        );
        let scans = Family::default();
        registry.register(
            "scans",
            "Cluster scans for a missing image by result",
            scans.clone(),
        );
        let watch_events = Family::default();
        registry.register(
            "watch_events",
            "Workload watch events processed, by resource",
            watch_events.clone(),
        );
        let watch_lists = Family::default();
        registry.register(
            "watch_lists",
            "Complete lists of a workload kind by its watch (the first, then each re-list after a 410 or a lost watch), by resource",
            watch_lists.clone(),
        );
        let lease_recreations = Family::default();
        registry.register(
            "lease_recreations",
            "Times the indexer found its Lease deleted and created it again, by result",
            lease_recreations.clone(),
        );
        let index_changes = Counter::default();
        registry.register(
            "index_changes",
            "Watch events that changed the index",
            index_changes.clone(),
        );
        let indexer_leader = Gauge::default();
        registry.register(
            "indexer_leader",
            "1 while this indexer holds the Lease",
            indexer_leader.clone(),
        );
        let inflight_pushes = Gauge::default();
        registry.register(
            "inflight_pushes",
            "POST /push requests being handled",
            inflight_pushes.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "Client connections open on the HTTP server",
            connections_open.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "connections_refused",
            "Connections closed as soon as accepted because --max-connections were open",
            connections_refused.clone(),
        );
        let connection_timeouts = Family::default();
        registry.register(
            "connection_timeouts",
            "Connections closed by the server for a timeout: header (no request within the header-read timeout of accept), idle (no request for the idle timeout)",
            connection_timeouts.clone(),
        );
        Arc::new(Metrics {
            registry,
            pushes,
            push_duration,
            token_rejections,
            ignored,
            lookups,
            lookup_duration,
            restarts,
            api_requests,
            index_entries,
            index_generated,
            index_reloads,
            index_dropped_entries,
            jwks_fetches,
            index_writes,
            watch_errors,
            scans,
            watch_events,
            watch_lists,
            lease_recreations,
            index_changes,
            indexer_leader,
            inflight_pushes,
            connections_open,
            connections_refused,
            connection_timeouts,
        })
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    pub fn observe_push(&self, outcome: &'static str, code: u16, took: Duration) {
        let labels = PushLabels { outcome, code };
        self.pushes.get_or_create(&labels).inc();
        self.push_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// A connection closed for a timeout (`header` or `idle`).
    pub fn timed_out(&self, reason: &'static str) {
        self.connection_timeouts
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn observe_lookup(&self, source: &'static str, took: Duration) {
        let labels = SourceLabels { source };
        self.lookups.get_or_create(&labels).inc();
        self.lookup_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    pub fn api_request(&self, verb: &'static str, resource: &'static str, outcome: &'static str) {
        self.api_requests
            .get_or_create(&ApiLabels {
                verb,
                resource,
                outcome,
            })
            .inc();
    }
}
