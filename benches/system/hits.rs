//! Hits over HTTP, each set beside the fake's own time for the same
//! requests: what a restart costs pushroll beyond what the API server takes.

use std::collections::BTreeMap;
use std::time::Instant;

use http_body_util::Full;
use hyper::body::Bytes;
use pushroll::reference::Reference;
use pushroll::restart::{Push, Restarter};
use pushroll::workload::WorkloadRef;
use serde::Serialize;

use crate::client::{Conn, Target, memchr, push_request};
use crate::cluster::{BARE_AGENT, Cluster, Digests};
use crate::common;
use crate::stats::{Stats, signed_stats, stats};
use crate::support::{self, SUBSCRIPTION};

#[derive(Debug, Clone, Serialize)]
pub struct Hits {
    pub pushes: usize,
    pub errors: usize,
    pub latency: Stats,
    /// The fake's own time for the same three requests (bare client),
    /// measured right after each push, on the same workload.
    pub fake_own: Stats,
    pub fake_get: Stats,
    pub fake_patch: Stats,
    pub fake_event: Stats,
    /// Per pair: push latency minus the fake's own time.
    pub beyond_fake: Stats,
    /// Per pair: pushroll's `Restarter` called in this process (kube-rs
    /// client, plan, patch, event) minus the fake's own time.
    pub restarter_beyond_fake: Stats,
    /// pushroll's API requests during the pushes, by verb and resource.
    pub api: BTreeMap<String, usize>,
}

/// Hits at one connection, each a new digest of `workload`'s image (so
/// each restarts it), each followed by the same three requests from a
/// bare client so that both see the fake in the same state.
pub async fn hits(
    target: &Target,
    cluster: &Cluster,
    workload: usize,
    count: usize,
    digests: &Digests,
) -> Hits {
    let mut push = Conn::open(target.addr).await;
    let mut fake = Conn::open(cluster.fake.addr()).await;
    // pushroll's restart code in this process (kube-rs), for the breakdown.
    let restarter = cluster.restarter();
    let key = image_key(workload);
    let pushed = WorkloadRef {
        kind: common::kind_of(workload),
        namespace: common::namespace_of(workload),
        name: common::name_of(workload),
        containers: vec!["app".into()],
    };
    let repo = common::repo_of(workload);
    let tag = format!("1.{}.0", workload % 10);
    let auth = target.authorization();
    let mut samples = Samples::default();
    for i in 0..count {
        let digest = digests.fresh();
        let data = support::insert(&repo, &tag, &digest);
        let body = support::wrapped(&data, &format!("h{i}"), SUBSCRIPTION);
        let request = push_request(&auth, body);
        cluster.fake.clear_requests();
        let (t, status, text) = push.send(request).await;
        for (what, count) in cluster.verbs() {
            *samples.api.entry(what).or_default() += count;
        }
        if status != 200 || !memchr(&text, b"\"result\":\"restarted\"") {
            samples.errors += 1;
            eprintln!(
                "unexpected hit answer {status}: {}",
                String::from_utf8_lossy(&text)
            );
        }
        let parts = bare_restart(&mut fake, workload, &digests.fresh()).await;
        let in_process = restart_in_process(&restarter, &key, &digests.fresh(), &pushed).await;
        samples.add(t, parts, in_process);
    }
    samples.hits(count)
}

/// The index key of `workload`'s image.
fn image_key(workload: usize) -> String {
    Reference::parse(&common::image_of(workload))
        .unwrap()
        .tagged()
}

/// pushroll's `Restarter` restarting `pushed` in this process; the time.
async fn restart_in_process(
    restarter: &Restarter,
    key: &str,
    digest: &str,
    pushed: &WorkloadRef,
) -> u64 {
    let t_in = Instant::now();
    let (done, _) = restarter
        .restart_all(
            &Push {
                image_key: key,
                digest,
                message_id: Some("bench"),
                published: jiff::Timestamp::now(),
            },
            std::slice::from_ref(pushed),
        )
        .await;
    let took = t_in.elapsed().as_nanos() as u64;
    assert_eq!(done.len(), 1);
    took
}

/// The timings of the hits so far, in ns.
#[derive(Default)]
struct Samples {
    latency: Vec<u64>,
    fake_own: Vec<u64>,
    /// The fake's own time per request: GET, PATCH, Event.
    fake_parts: [Vec<u64>; 3],
    beyond_fake: Vec<i64>,
    restarter_beyond_fake: Vec<i64>,
    errors: usize,
    api: BTreeMap<String, usize>,
}

impl Samples {
    /// One hit: the push's latency, the fake's own time for its three
    /// requests, and the in-process restart's.
    fn add(&mut self, push: u64, parts: [u64; 3], in_process: u64) {
        let sum: u64 = parts.iter().sum();
        self.restarter_beyond_fake
            .push(in_process as i64 - sum as i64);
        self.latency.push(push);
        self.fake_own.push(sum);
        self.beyond_fake.push(push as i64 - sum as i64);
        for (v, p) in self.fake_parts.iter_mut().zip(parts) {
            v.push(p);
        }
    }

    fn hits(mut self, pushes: usize) -> Hits {
        let [g, p, e] = &mut self.fake_parts;
        Hits {
            pushes,
            errors: self.errors,
            latency: stats(&mut self.latency),
            fake_own: stats(&mut self.fake_own),
            fake_get: stats(g),
            fake_patch: stats(p),
            fake_event: stats(e),
            beyond_fake: signed_stats(&self.beyond_fake),
            restarter_beyond_fake: signed_stats(&self.restarter_beyond_fake),
            api: self.api,
        }
    }
}

/// A request to the fake from the bench's bare client, as the admin.
fn fake_request(
    method: &str,
    uri: String,
    ctype: &str,
    body: Vec<u8>,
) -> hyper::Request<Full<Bytes>> {
    hyper::Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "fake")
        .header("user-agent", BARE_AGENT)
        .header("accept", "application/json")
        .header("content-type", ctype)
        .header(
            "authorization",
            format!("Bearer {}", fake_apiserver::rbac::ADMIN_TOKEN),
        )
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// What one hit asks of the API server — the GET, PATCH and Event that
/// pushroll sends, built by pushroll's own functions — from a bare client:
/// the fake's own time, `[get, patch, event]` in ns.
async fn bare_restart(fake: &mut Conn, workload: usize, digest: &str) -> [u64; 3] {
    let ns = common::namespace_of(workload);
    let kind = common::kind_of(workload);
    let key = image_key(workload);
    let path = format!(
        "/apis/apps/v1/namespaces/{ns}/{}/{}",
        kind.plural(),
        common::name_of(workload)
    );
    let (t_get, status, obj) = fake
        .send(fake_request(
            "GET",
            path.clone(),
            "application/json",
            Vec::new(),
        ))
        .await;
    assert_eq!(status, 200);
    let obj: kube::api::DynamicObject = serde_json::from_slice(&obj).unwrap();
    let now = jiff::Timestamp::now();
    let patch = pushroll::plan::restart_patch(
        obj.metadata.resource_version.as_deref(),
        &["app".to_string()],
        &[],
        digest,
        now,
        now,
    );
    let (t_patch, status, patched) = fake
        .send(fake_request(
            "PATCH",
            format!("{path}?fieldManager=pushroll"),
            "application/strategic-merge-patch+json",
            serde_json::to_vec(&patch).unwrap(),
        ))
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&patched));
    let patched: kube::api::DynamicObject = serde_json::from_slice(&patched).unwrap();
    let event = pushroll::k8s::restart_event(kind, &patched, &key, digest, Some("bench"), now);
    let (t_event, status, _) = fake
        .send(fake_request(
            "POST",
            format!("/api/v1/namespaces/{ns}/events"),
            "application/json",
            serde_json::to_vec(&event).unwrap(),
        ))
        .await;
    assert_eq!(status, 201);
    [t_get, t_patch, t_event]
}
