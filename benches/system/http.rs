//! The http scenario: `pushroll serve --auth google` against the fake,
//! started a few times, then misses at 1 and 64 connections and hits at 1,
//! with its memory after each phase.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::client::Route;
use crate::client::Target;
use crate::cluster::{Cluster, Digests};
use crate::common;
use crate::hits::{Hits, hits};
use crate::load::{Body, Load, load, load_route};
use crate::options::Options;
use crate::server::{GITHUB_SECRET, Server, Startup, startup};
use crate::stats::human;
use crate::support::{self, AUDIENCE, EMAIL, SUBSCRIPTION};

#[derive(Debug, Clone, Serialize)]
pub struct Http {
    pub n: usize,
    pub startup: Startup,
    pub miss_1: Load,
    /// `POST /webhooks/github` misses at 1 connection (HMAC-SHA256 instead
    /// of RS256), in the same run as `miss_1`.
    pub webhook_1: Load,
    pub miss_64: Load,
    pub hit_1: Hits,
    pub hit_api: BTreeMap<String, usize>,
    pub miss_api: BTreeMap<String, usize>,
    /// `(phase, VmRSS KiB, VmHWM KiB)` after each phase.
    pub rss: Vec<(String, u64, u64)>,
}

/// The server's memory after each phase.
struct Rss<'a> {
    server: &'a Server,
    phases: Vec<(String, (u64, u64))>,
}

impl Rss<'_> {
    fn note(&mut self, phase: String) {
        self.phases.push((phase, self.server.rss_kib()));
    }
}

pub async fn run_http(opts: &Options, cluster: &Cluster, digests: &Digests) -> Http {
    let n = cluster.n;
    let signer = support::Signer::rsa("rsa-a.pem", "key-a");
    let jwks = support::JwksServer::start(vec![signer.jwk.clone()]).await;
    let token = signer.sign(&support::google_claims(AUDIENCE, EMAIL));
    let (startup, server) = {
        let (c, url, times) = (cluster, jwks.url.clone(), opts.starts);
        tokio::task::block_in_place(|| startup(c, &url, times, &opts.serve_args))
    };
    eprintln!(
        "  http N={n}: ready p50 {} (listening {}), RSS {} MiB",
        human(startup.ready.p50_ns),
        human(startup.listening.p50_ns),
        startup.rss_ready_kib / 1024
    );
    let target = Target {
        addr: server.addr,
        token,
    };
    let mut rss = Rss {
        server: &server,
        phases: Vec::new(),
    };
    rss.note("ready".to_owned());
    let (miss_1, miss_64, miss_api) = misses(opts, cluster, &target, &mut rss).await;
    let webhook_1 = webhook_misses(opts, &target).await;
    let hit_1 = hits_phase(opts, cluster, &target, &mut rss, digests).await;
    Http {
        n,
        startup,
        miss_1,
        webhook_1,
        miss_64,
        hit_api: hit_1.api.clone(),
        hit_1,
        miss_api,
        rss: rss
            .phases
            .into_iter()
            .map(|(p, (r, h))| (p, r, h))
            .collect(),
    }
}

/// 1,000 pushes of commit tags no workload runs, spread over the cluster.
fn miss_bodies(n: usize) -> Body {
    let misses: Arc<Vec<String>> = Arc::new(
        (0..1000)
            .map(|i| {
                let i = i * n.max(1) / 1000;
                let data = support::insert(
                    &common::repo_of(i),
                    &format!("git-{i:07x}"),
                    &common::digest(i as u64),
                );
                support::wrapped(&data, &format!("m{i}"), SUBSCRIPTION)
            })
            .collect(),
    );
    Arc::new(move |i| misses[i as usize % misses.len()].clone())
}

/// Misses at 1 connection, at 64, and at 64 again; the API requests they
/// made.
async fn misses(
    opts: &Options,
    cluster: &Cluster,
    target: &Target,
    rss: &mut Rss<'_>,
) -> (Load, Load, BTreeMap<String, usize>) {
    let miss_body = miss_bodies(cluster.n);
    let (warm, secs) = (
        Duration::from_secs_f64(opts.miss_secs.0),
        Duration::from_secs_f64(opts.miss_secs.1),
    );
    // `conns` connections for `measure` after `warmup` (in a quick run,
    // `quick_max` pushes), each answered "no-match".
    let run = |conns, warmup, measure, quick_max| {
        let max = opts.quick.then_some(quick_max);
        load(
            target,
            conns,
            warmup,
            measure,
            max,
            miss_body.clone(),
            "\"no-match\"",
        )
    };
    cluster.fake.clear_requests();
    let miss_1 = run(1, warm, secs / 3, 5).await;
    rss.note(format!("after {} misses at c=1", miss_1.requests));
    let miss_64 = run(64, warm, secs, 64).await;
    rss.note(format!("after {} misses at c=64", miss_64.requests));
    // The same again: does memory keep growing, or was that a plateau?
    let again = run(64, Duration::ZERO, secs, 64).await;
    rss.note(format!("after {} more misses at c=64", again.requests));
    let miss_api = cluster.verbs();
    eprintln!(
        "  miss c=1: p50 {} p99 {} | c=64: {:.0}/s p50 {} p99 {} (again: {:.0}/s) | API {:?}",
        human(miss_1.latency.p50_ns),
        human(miss_1.latency.p99_ns),
        miss_64.per_second,
        human(miss_64.latency.p50_ns),
        human(miss_64.latency.p99_ns),
        again.per_second,
        miss_api
    );
    (miss_1, miss_64, miss_api)
}

/// GitHub `registry_package` webhooks for images no workload runs, at 1
/// connection, for as long as `miss_1`: the same lookup, an HMAC instead of
/// a token.
async fn webhook_misses(opts: &Options, target: &Target) -> Load {
    let bodies: Arc<Vec<String>> = Arc::new(
        (0..1000)
            .map(|i| {
                serde_json::json!({"action": "published", "registry_package": {
                    "name": format!("bench-{i}"), "package_type": "CONTAINER",
                    "owner": {"login": "bench"},
                    "package_version": {"container_metadata": {"tag": {
                        "name": format!("git-{i:07x}"), "digest": common::digest(i as u64)}}}}})
                .to_string()
            })
            .collect(),
    );
    let body: Body = Arc::new(move |i| bodies[i as usize % bodies.len()].clone());
    let route = Route::Github(GITHUB_SECRET.to_owned());
    let (warm, secs) = (
        Duration::from_secs_f64(opts.miss_secs.0),
        Duration::from_secs_f64(opts.miss_secs.1),
    );
    let max = opts.quick.then_some(5);
    let l = load_route(target, &route, 1, warm, secs / 3, max, body, "\"no-match\"").await;
    eprintln!(
        "  webhook (github, HMAC) c=1: p50 {} p99 {}",
        human(l.latency.p50_ns),
        human(l.latency.p99_ns)
    );
    l
}

/// Hits of workload n/2 at 1 connection, after 5 that warm the pools.
async fn hits_phase(
    opts: &Options,
    cluster: &Cluster,
    target: &Target,
    rss: &mut Rss<'_>,
    digests: &Digests,
) -> Hits {
    let hit = cluster.n / 2;
    // Warm the connection pools, then measure.
    hits(target, cluster, hit, 5, digests).await;
    rss.note("after 5 hits".to_owned());
    let hit_1 = hits(target, cluster, hit, opts.hits, digests).await;
    rss.note(format!("after {} more hits", opts.hits));
    eprintln!(
        "  hit c=1: p50 {} p99 {} | fake's own p50 {} | beyond p50 {} (restarter {}) | API {:?} | RSS {:?}",
        human(hit_1.latency.p50_ns),
        human(hit_1.latency.p99_ns),
        human(hit_1.fake_own.p50_ns),
        human(hit_1.beyond_fake.p50_ns),
        human(hit_1.restarter_beyond_fake.p50_ns),
        hit_1.api,
        rss.phases
    );
    hit_1
}
