//! Load: 10,000 pushes over 200 concurrent connections, with
//! token verification on (test keys served as a JWK set), a mix of hits
//! (real restarts of a few workloads, all other deliveries of the same
//! digest already current) and misses (commit tags no workload runs),
//! against the fake API server: zero errors, each workload rolled once,
//! and the RSS of the pushroll process flat from the first thousand pushes
//! to the last.
//!
//! The test runs the debug binary: the throughput and latency it prints are
//! a debug build's on whatever the machine is doing; the assertions are
//! about correctness and memory.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::cluster::{Cluster, index_for};
use crate::support::*;
use serde_json::{Value, json};

const TOTAL: usize = 10_000;
const CONNECTIONS: usize = 200;
/// One in this many pushes is a hit.
const HIT_EVERY: usize = 4;
const IMAGES: usize = 5;
/// RSS may grow this much from the end of the first thousand pushes to the
/// end of the last one: 64 KiB per connection. Measured (debug build): each
/// kept-alive connection's memory grows by about 40-50 KiB over its first
/// ~70 requests and then stays put (20 connections: +0.4 MiB over 20,000
/// pushes; 200: +7 MiB over the first 14,000, then flat within ±0.2 MiB up
/// to 40,000; 400: +15 MiB), the same with jemalloc preloaded. A leak of
/// 1.5 KiB per push would exceed it.
const RSS_GROWTH_LIMIT_KIB: i64 = 64 * CONNECTIONS as i64;

fn repo(i: usize) -> String {
    format!("us-east1-docker.pkg.dev/demo-project/load/svc{i}")
}

fn digest(i: usize) -> String {
    format!("sha256:{:064x}", 0xd16e_0000 + i)
}

struct Outcome {
    latency: Duration,
    status: u16,
    hit: bool,
    body: Value,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_pushes_at_200_connections() {
    let c = Cluster::fake().await;
    let fake = c.fake_server().unwrap().clone();
    // Two Deployments per image, in two namespaces.
    let mut images = serde_json::Map::new();
    for i in 0..IMAGES {
        let image = format!("{}:v1", repo(i));
        for ns in ["load-a", "load-b"] {
            c.deploy(ns, &format!("svc{i}"), &image).await;
        }
        let name = format!("svc{i}");
        let entry = index_for(
            &image,
            &[
                ("Deployment", "load-a", &name, &["app"]),
                ("Deployment", "load-b", &name, &["app"]),
            ],
        );
        images.insert(image.clone(), entry["images"][&image].clone());
    }
    let index = json!({"version": 1, "generatedAt": "2026-11-26T12:00:00Z", "images": images});
    let dir = tempfile::tempdir().unwrap();
    let index_file = dir.path().join("index.json");
    std::fs::write(&index_file, index.to_string()).unwrap();
    // Misses refresh from the index ConfigMap, at most once per interval.
    c.write_index_configmap("default", "pushroll-index", &index)
        .await;

    let signer = Signer::rsa("rsa-a.pem", "key-a");
    let jwks = JwksServer::start(vec![signer.jwk.clone()]).await;
    let p = Pushroll::start_env(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--index-file",
            index_file.to_str().unwrap(),
            "--audience",
            AUDIENCE,
            "--allowed-email",
            EMAIL,
            "--jwks-url",
            &jwks.url,
            "--subscription",
            SUBSCRIPTION,
            // What production logs: one line per push.
            "--log-level",
            "info",
        ],
        &[
            ("KUBECONFIG", c.kubeconfig.to_string_lossy().into_owned()),
            (
                "MALLOC_ARENA_MAX",
                std::env::var("XARENA").unwrap_or("8".into()),
            ),
        ],
    );
    let probe = http();
    assert!(
        eventually(Duration::from_secs(20), || async {
            let r = probe.get(p.url("/readyz")).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await
        .is_some(),
        "pushroll never ready: {}",
        p.logs().join("\n")
    );
    fake.clear_requests();

    let pid = p.pid();
    let rss_start = rss_kib(pid) as i64;
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    // RSS when each thousand completes.
    let samples = Arc::new(std::sync::Mutex::new(BTreeMap::<usize, i64>::new()));
    let url = p.url("/push");
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..CONNECTIONS {
        // One client per worker: 200 connections, each kept alive.
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        // Pub/Sub reuses a token for up to an hour: one per connection here.
        let token = signer.sign(&google_claims(AUDIENCE, EMAIL));
        let (next, done, samples, url) = (next.clone(), done.clone(), samples.clone(), url.clone());
        workers.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= TOTAL {
                    return out;
                }
                let hit = i % HIT_EVERY == 0;
                let image = (i / HIT_EVERY) % IMAGES;
                let data = if hit {
                    insert(&repo(image), "v1", &digest(image))
                } else {
                    // A commit tag nobody runs: most pushes are like this.
                    insert(&repo(image), &format!("sha-{i:08x}"), &digest(1000 + i))
                };
                let body = wrapped(&data, &format!("load-{w}-{i}"), SUBSCRIPTION);
                let t0 = Instant::now();
                let response = client
                    .post(&url)
                    .bearer_auth(&token)
                    .body(body)
                    .send()
                    .await
                    .expect("POST /push");
                let status = response.status().as_u16();
                let text = response.text().await.unwrap();
                let latency = t0.elapsed();
                let n = done.fetch_add(1, Ordering::SeqCst) + 1;
                if n % 1000 == 0 {
                    samples.lock().unwrap().insert(n, rss_kib(pid) as i64);
                }
                out.push(Outcome {
                    latency,
                    status,
                    hit,
                    body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
                });
            }
        }));
    }
    let mut outcomes = Vec::with_capacity(TOTAL);
    for w in workers {
        outcomes.extend(w.await.unwrap());
    }
    let elapsed = started.elapsed();
    assert_eq!(outcomes.len(), TOTAL);

    // Latency and throughput, as the clients saw them.
    let mut latencies: Vec<Duration> = outcomes.iter().map(|o| o.latency).collect();
    latencies.sort();
    let pct = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    let samples = samples.lock().unwrap().clone();
    let first = samples[&1000];
    let last = samples[&TOTAL];
    eprintln!(
        "load: {TOTAL} pushes over {CONNECTIONS} connections in {elapsed:.2?} = {:.0}/s; latency p50 {:?} p90 {:?} p99 {:?} max {:?}",
        TOTAL as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        latencies.last().unwrap()
    );
    eprintln!(
        "load: RSS before {rss_start} KiB; after the first thousand {first} KiB, after the last {last} KiB (growth {} KiB); per thousand: {:?}",
        last - first,
        samples.values().collect::<Vec<_>>()
    );
    // Zero errors, and each answer says what it should.
    let mut errors = Vec::new();
    let mut results: BTreeMap<String, usize> = BTreeMap::new();
    for o in &outcomes {
        // A hit restarted something, or found it all current already.
        let any_restarted = o.body["workloads"]
            .as_array()
            .is_some_and(|ws| ws.iter().any(|w| w["result"] == "restarted"));
        let want = match (o.hit, any_restarted) {
            (false, _) => "no-match",
            (true, true) => "restarted",
            (true, false) => "unchanged",
        };
        if o.status != 200 || o.body["outcome"] != want {
            errors.push(format!("{} {}", o.status, o.body));
            continue;
        }
        if o.hit {
            let ws = o.body["workloads"].as_array().unwrap();
            assert_eq!(ws.len(), 2, "{}", o.body);
            for w in ws {
                *results
                    .entry(w["result"].as_str().unwrap().to_owned())
                    .or_default() += 1;
            }
        }
    }
    assert!(
        errors.is_empty(),
        "{} errors, e.g. {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    // 200 connections of duplicates racing: each workload rolled exactly
    // once, every other delivery found it current.
    let restarted = results.get("restarted").copied().unwrap_or(0);
    assert_eq!(restarted, IMAGES * 2, "{results:?}");
    let patches = fake.requests_for("patch", Some("deployments"));
    let ok: Vec<_> = patches.iter().filter(|r| r.status == 200).collect();
    assert_eq!(ok.len(), IMAGES * 2, "successful PATCHes");
    // Misses cost at most one ConfigMap GET per 10 s interval.
    let cm_gets = fake.requests_for("get", Some("configmaps")).len();
    let intervals = (elapsed.as_secs() / 10) as usize + 1;
    assert!(
        cm_gets <= intervals + 1,
        "{cm_gets} ConfigMap GETs in {elapsed:?}"
    );
    let metrics = p.metrics().await;
    let not_ok: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("pushroll_pushes_total{") && !l.contains("code=\"200\""))
        .filter(|l| !l.ends_with(" 0"))
        .collect();
    assert!(not_ok.is_empty(), "{not_ok:?}");

    assert!(
        last - first <= RSS_GROWTH_LIMIT_KIB,
        "RSS grew {} KiB from the first thousand pushes to the last: {samples:?}",
        last - first
    );
}
