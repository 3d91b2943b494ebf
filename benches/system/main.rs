//! System benchmarks (BENCHMARKS.md has the figures and how to read
//! them). A `harness = false` binary:
//!
//! ```sh
//! cargo bench --bench system                    # N = 100, 1k, 10k, 50k
//! cargo bench --bench system -- --sizes 100,1000,10000
//! cargo bench --bench system -- --quick         # smoke: tiny N, each scenario once
//! cargo bench --bench system -- --help          # every option
//! cargo test --benches                          # the same smoke run (debug build)
//! ```
//!
//! For each cluster size N, on a fresh fake API server holding N workloads
//! (`benches/common`), in the same run:
//!
//! * **designs**: the four ways to find the workloads of a push, in this
//!   process, against the same fake and the same index:
//!   V1 lists every Deployment, StatefulSet and DaemonSet in all namespaces
//!   (kube-rs typed lists, 500 per page, `continue` tokens) and filters
//!   them; V2 GETs the index ConfigMap (typed) and parses it (gunzip when
//!   the indexer stored it compressed); V3 reads the mounted index file
//!   (`std::fs::read`) and parses it; pushroll normalizes the pushed
//!   reference and asks its in-memory `IndexStore`. Per design: median
//!   latency per push, API requests and HTTP bytes (both directions,
//!   counted by a TCP proxy) per push, and a whole hit — the lookup plus
//!   the same restart (pushroll's `Restarter`: GET, PATCH, Event).
//! * **http** (at 10,000 workloads, or the largest N below it; `--system-n`):
//!   the release binary `pushroll serve --auth google` against the fake
//!   with a test JWK set on loopback and signed tokens: startup to ready
//!   and RSS (5 starts), `POST /push` misses at 1 and 64 connections
//!   (throughput, p50, p99), hits at 1 connection (each a new digest, so
//!   each restarts its workload), the API requests they made, and the fake's
//!   own time for the same GET, PATCH and Event from a bare HTTP client.
//!
//! Results: a Markdown report on stdout and in
//! `target/bench-results/system.md` (+ `.json`), and the log-log chart
//! `benches/latency.svg` (`--svg PATH`; `--quick` writes it under
//! `target/bench-results/` instead).
//!
//! Layout: `options` (the command line), `cluster` (the seeded fake, the
//! index file, the clients) with `proxy` (the byte counter), `designs`,
//! `http` (the http scenario) built from `server` (the process and its
//! startup), `load` (misses), `hits` and `client` (the bare HTTP/1.1
//! connection), then `stats`, `report` (Markdown and JSON) and `svg`.

#[path = "../../tests/it/support/mod.rs"]
mod support;

#[path = "../common/mod.rs"]
mod common;

mod client;
mod cluster;
mod designs;
mod hits;
mod http;
mod load;
mod options;
mod proxy;
mod report;
mod server;
mod stats;
mod svg;

use std::time::Instant;

use cluster::{Cluster, Digests};
use designs::run_designs;
use http::run_http;
use options::Options;
use report::{loadavg, report};
use stats::human_bytes;

fn main() {
    let opts = Options::parse();
    support::init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    rt.block_on(run(&opts));
    eprintln!(
        "system bench done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

async fn run(opts: &Options) {
    let load_before = loadavg();
    eprintln!(
        "system bench: sizes {:?}, HTTP at N={}, {}; load average {load_before}",
        opts.sizes,
        opts.system_size(),
        if opts.quick { "quick" } else { "full" }
    );
    let digests = Digests::new();
    let mut designs = Vec::new();
    let mut http = None;
    let mut clusters = Vec::new();
    for &n in &opts.sizes {
        let t = Instant::now();
        let cluster = Cluster::start(n).await;
        eprintln!(
            "N={n}: cluster seeded in {:.1} s ({} of objects, index {} {})",
            t.elapsed().as_secs_f64(),
            human_bytes(cluster.object_bytes as f64),
            human_bytes(cluster.index_bytes as f64),
            if cluster.gzip { "gzip" } else { "JSON" }
        );
        clusters.push(cluster.seeded());
        if opts.http_only {
            if n == opts.system_size() {
                let http = run_http(opts, &cluster, &digests).await;
                println!(
                    "{}",
                    report(opts, &[], Some(&http), &clusters, &load_before)
                );
            }
            continue;
        }
        designs.extend(run_designs(opts, &cluster, &digests).await);
        if n == opts.system_size() {
            http = Some(run_http(opts, &cluster, &digests).await);
        }
    }
    if opts.http_only {
        return;
    }
    report::write(opts, &designs, http.as_ref(), &clusters, &load_before);
}
