//! What a hanging notification receiver costs a push (issue 15): the
//! client-side latency of `POST /push` hits against `serve` with
//! `--notify-url` pointing at a receiver that accepts connections and never
//! answers (B), against the same `serve` without `--notify-url` (A, the
//! baseline), both in this process, in the same run, on the project's fake
//! API server.
//!
//! ```sh
//! cargo bench --bench notify                  # 1,200 pushes each, after 20 of warm-up
//! cargo bench --bench notify -- --quick       # smoke: 300 pushes each, figures only
//! cargo test --benches                        # the same smoke run (debug build)
//! ```
//!
//! Both servers are `pushroll::cmd::serve::run`, configured from the same
//! flags as the binary (`--auth none`, the mounted index file, the index
//! ConfigMap fallback), running at once in this process's runtime, each
//! restarting the same Deployment. Every push carries a new digest, so
//! every push restarts it (GET, PATCH, Events) and, in B, queues a
//! `restarted` notification. The receiver holds every delivery until the
//! notifier's 5 s timeout: its worker stays on the first one, the queue
//! (256) fills, and every later notification is dropped, counted in
//! `pushroll_notifications_total{result="dropped"}`, which the bench reads
//! from B's `/metrics`.
//!
//! The pushes alternate between A and B (AB, then BA, …) on one keep-alive
//! connection each, so that drift (the fake's growing store, the machine)
//! weighs on both alike. The clock runs from the request's send to its whole
//! body; every answer must be 200 with outcome `restarted`. The figures:
//! p50, p90 and p99 of each, the p50 ratio B/A (also split into the pushes
//! made while B's queue filled and after it was full), and B's
//! notification counters. The full run fails (exit 1) when the p50 ratio
//! is above 1.10, the issue's bound; the quick run only prints it.
//! Neither server logs (no subscriber is installed): a log line per push
//! would be the same in both.

#[path = "../tests/it/support/mod.rs"]
mod support;

#[path = "common/mod.rs"]
mod common;

#[allow(dead_code)] // the bench uses `Conn` alone
#[path = "system/client.rs"]
mod client;

#[allow(dead_code)] // the bench uses `stats` and `human`
#[path = "system/stats.rs"]
mod stats;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser as _;
use http_body_util::Full;
use hyper::body::Bytes;
use pushroll::cli::{Cli, Command};
use pushroll::index::configmap::Payload;
use pushroll::notify::QUEUE;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt as _;
use tokio_util::sync::CancellationToken;

use client::Conn;
use stats::{Stats, human, stats};

/// Workloads in the fake cluster; the pushes restart workload [`HIT`].
const WORKLOADS: usize = 20;
/// Workload 0: a Deployment (`common::kind_of`).
const HIT: usize = 0;
/// The issue's bound on B's p50 over A's.
const MAX_RATIO: f64 = 1.10;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    // `cargo test --benches` runs bench binaries without `--bench`.
    let quick = args.iter().any(|a| a == "--quick") || !args.iter().any(|a| a == "--bench");
    let dir = tempfile::tempdir().unwrap();
    // serve finds its cluster as the binary does (kube-rs' inference from
    // KUBECONFIG); the file is written once the fake is up. And a
    // developer's PUSHROLL_* variables would change serve's flags.
    // SAFETY: the process has one thread yet; nothing reads the
    // environment concurrently.
    unsafe {
        std::env::set_var("KUBECONFIG", dir.path().join("kubeconfig"));
        for (k, _) in std::env::vars() {
            if k.starts_with("PUSHROLL_") {
                std::env::remove_var(k);
            }
        }
    }
    support::init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let code = rt.block_on(run(quick, dir.path()));
    // The notifier's worker is still waiting on the receiver: do not wait.
    rt.shutdown_timeout(Duration::from_secs(1));
    code
}

/// `(warm-up rounds, measured rounds)`; a round is one push to each server.
fn rounds(quick: bool) -> (usize, usize) {
    if quick { (3, 300) } else { (20, 1_200) }
}

async fn run(quick: bool, dir: &Path) -> ExitCode {
    let (warmup, measured) = rounds(quick);
    let fake = fake_apiserver::FakeApiServer::start().await;
    let index_file = seed(&fake, dir);
    fake.write_kubeconfig_ns(dir, common::INDEX_NS);
    let receiver = HangingReceiver::start().await;
    let hook = format!("http://{}/hook/SECRET", receiver.addr);
    let shutdown = CancellationToken::new();
    let [a_addr, b_addr] = free_ports();
    let a = Serve::start("A", a_addr, &index_file, &[], &shutdown).await;
    let b = Serve::start(
        "B",
        b_addr,
        &index_file,
        &["--notify-url", &hook],
        &shutdown,
    )
    .await;

    let repo = common::repo_of(HIT);
    let tag = format!("1.{}.0", HIT % 10);
    let mut seq = 0u64;
    // Each push a new digest of the workload's image: each restarts it.
    let mut next_push = |name: &str| {
        seq += 1;
        let data = support::insert(&repo, &tag, &common::digest(seq));
        let body = support::wrapped(&data, &format!("{name}-{seq}"), support::SUBSCRIPTION);
        push_request(body)
    };
    // (A's sample, B's sample, B's ordinal among its pushes) per round.
    let mut samples: Vec<(u64, u64, usize)> = Vec::with_capacity(measured);
    let (mut a_conn, mut b_conn) = (Conn::open(a.addr).await, Conn::open(b.addr).await);
    let started = Instant::now();
    for round in 0..warmup + measured {
        let (mut ta, mut tb) = (0, 0);
        // AB, then BA: neither server always goes first.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            let (conn, name, t) = if which == 0 {
                (&mut a_conn, "A", &mut ta)
            } else {
                (&mut b_conn, "B", &mut tb)
            };
            let request = next_push(name);
            *t = timed_push(conn, name, request).await;
        }
        if round >= warmup {
            samples.push((ta, tb, round + 1));
        }
        // The fake logs every request; keep that log short, outside the clock.
        fake.clear_requests();
    }
    let took = started.elapsed();
    let pushes_b = warmup + measured;

    let b_metrics = b.metrics().await;
    let a_metrics = a.metrics().await;
    let count = |text: &str, result: &str| {
        support::metric(
            text,
            &format!("pushroll_notifications_total{{result=\"{result}\"}}"),
        ) as usize
    };
    let dropped = count(&b_metrics, "dropped");
    let a_notified: usize = ["dropped", "delivered", "retried", "failed", "refused"]
        .iter()
        .map(|r| count(&a_metrics, r))
        .sum();
    // The worker has taken the first notification: the receiver has its
    // connection (within the first attempt's 5 s at most).
    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.accepted.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let accepted = receiver.accepted.load(Ordering::Relaxed);
    shutdown.cancel();

    let all_a: Vec<u64> = samples.iter().map(|s| s.0).collect();
    let all_b: Vec<u64> = samples.iter().map(|s| s.1).collect();
    // B's queue fills with its first QUEUE + 1 notifications (one taken by
    // the worker); later ones are dropped. The same rounds of A beside them.
    let filling = |s: &&(u64, u64, usize)| s.2 <= QUEUE + 1;
    let (fill_a, fill_b): (Vec<u64>, Vec<u64>) =
        samples.iter().filter(filling).map(|s| (s.0, s.1)).unzip();
    let (full_a, full_b): (Vec<u64>, Vec<u64>) = samples
        .iter()
        .filter(|s| !filling(s))
        .map(|s| (s.0, s.1))
        .unzip();
    let (sa, sb) = (stats(&mut all_a.clone()), stats(&mut all_b.clone()));
    let ratio = sb.p50_ns / sa.p50_ns;

    println!(
        "notifications to a hanging receiver, {} pushes to each server after {warmup} of warm-up, interleaved, {:.1} s ({}):",
        samples.len(),
        took.as_secs_f64(),
        if cfg!(debug_assertions) {
            "DEBUG build"
        } else {
            "release build"
        }
    );
    println!("  A, no --notify-url (baseline): {}", line(&sa));
    println!("  B, --notify-url (hanging):     {}", line(&sb));
    println!("  ratio of p50s B/A: {ratio:.3} (bound {MAX_RATIO:.2})");
    for (what, a, b) in [
        ("while B's queue filled", fill_a, fill_b),
        ("once B's queue was full", full_a, full_b),
    ] {
        if a.is_empty() {
            continue;
        }
        let (a, b) = (stats(&mut a.clone()), stats(&mut b.clone()));
        println!(
            "    {what} ({} rounds): A p50 {}, B p50 {}, ratio {:.3}",
            a.n,
            human(a.p50_ns),
            human(b.p50_ns),
            b.p50_ns / a.p50_ns
        );
    }
    println!(
        "  B's notifications: {pushes_b} restarts told, dropped {dropped}, retried {}, failed {}, delivered {}; receiver connections {accepted}; A's notifications: {a_notified}",
        count(&b_metrics, "retried"),
        count(&b_metrics, "failed"),
        count(&b_metrics, "delivered"),
    );

    assert_eq!(a_notified, 0, "A has no --notify-url");
    assert_eq!(
        count(&b_metrics, "delivered"),
        0,
        "the receiver never answers"
    );
    assert!(accepted >= 1, "B's worker never reached the receiver");
    if pushes_b > QUEUE + 1 {
        // One with the worker, QUEUE queued, the rest dropped; fewer drops
        // only once the worker gives up on one (after ~28 s of attempts).
        assert!(
            dropped >= 1 && dropped <= pushes_b - QUEUE,
            "{pushes_b} notifications to a hanging receiver: expected between 1 and {} dropped, got {dropped}",
            pushes_b - QUEUE
        );
    } else {
        // Too few to overflow the queue: all queued (the receiver's
        // connection says the worker took the first), none dropped.
        assert_eq!(dropped, 0, "{pushes_b} notifications fit the queue");
    }
    if !quick && ratio > MAX_RATIO {
        eprintln!(
            "FAIL: with a hanging receiver the push p50 is {} against {} without notifications: ratio {ratio:.3} > {MAX_RATIO:.2} (issue 15)",
            human(sb.p50_ns),
            human(sa.p50_ns)
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// p50, p90, p99, max of `s`.
fn line(s: &Stats) -> String {
    format!(
        "p50 {}  p90 {}  p99 {}  max {}",
        human(s.p50_ns),
        human(s.p90_ns),
        human(s.p99_ns),
        human(s.max_ns)
    )
}

/// Seeds `fake` with workloads `0..WORKLOADS` and the index ConfigMap, and
/// writes the index file beside; its path, as `--index-file` takes it.
fn seed(fake: &fake_apiserver::FakeApiServer, dir: &Path) -> PathBuf {
    for i in 0..WORKLOADS {
        fake.insert(common::workload(i));
    }
    let payload = Payload::encode(&common::index(WORKLOADS)).unwrap();
    let Payload::Json(index) = payload else {
        panic!("an index of {WORKLOADS} workloads is stored as JSON");
    };
    fake.insert(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": common::INDEX_CM, "namespace": common::INDEX_NS},
        "data": {"index.json": index},
    }));
    let file = dir.join("index.json");
    std::fs::write(&file, index).unwrap();
    file
}

/// Two free ports of 127.0.0.1, for `--listen` (serve logs the address
/// it bound, but this bench installs no log subscriber).
fn free_ports() -> [SocketAddr; 2] {
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (a, b) = (bind(), bind());
    [a.local_addr().unwrap(), b.local_addr().unwrap()]
}

/// `POST /push` with `body`, as a Pub/Sub push subscription sends it
/// (no token: `--auth none`).
fn push_request(body: String) -> hyper::Request<Full<Bytes>> {
    hyper::Request::post("/push")
        .header("host", "pushroll")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn get_request(path: &str) -> hyper::Request<Full<Bytes>> {
    hyper::Request::get(path)
        .header("host", "pushroll")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Sends one push on `conn`; its latency in ns. Panics unless it was
/// answered 200 with outcome `restarted`.
async fn timed_push(conn: &mut Conn, name: &str, request: hyper::Request<Full<Bytes>>) -> u64 {
    let (nanos, status, body) = conn.send(request).await;
    let report: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    assert!(
        status == 200
            && report["outcome"] == "restarted"
            && report["workloads"][0]["result"] == "restarted",
        "{name}: push answered {status}: {}",
        String::from_utf8_lossy(&body)
    );
    nanos
}

/// One `serve`, in this process.
struct Serve {
    addr: SocketAddr,
}

impl Serve {
    /// Starts `pushroll serve` from its flags on `addr` and waits until
    /// `/readyz` answers 200.
    async fn start(
        name: &str,
        addr: SocketAddr,
        index_file: &Path,
        extra: &[&str],
        shutdown: &CancellationToken,
    ) -> Serve {
        let listen = addr.to_string();
        let configmap = format!("{}/{}", common::INDEX_NS, common::INDEX_CM);
        let mut argv = vec!["pushroll", "serve", "--listen", &listen, "--auth", "none"];
        argv.extend(["--index-file", index_file.to_str().unwrap()]);
        argv.extend(["--index-configmap", &configmap]);
        argv.extend_from_slice(extra);
        let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        let Command::Serve(args) = cli.command else {
            unreachable!("a serve command line")
        };
        let config = args.resolve().unwrap();
        let task = tokio::spawn(pushroll::cmd::serve::run(config, shutdown.clone()));
        let started = Instant::now();
        loop {
            if task.is_finished() {
                panic!("serve {name} stopped: {:?}", task.await);
            }
            if let Some((200, _)) = get(addr, "/readyz").await {
                return Serve { addr };
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "serve {name} never got ready"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn metrics(&self) -> String {
        let (status, body) = get(self.addr, "/metrics").await.expect("serve is up");
        assert_eq!(status, 200);
        String::from_utf8(body.to_vec()).unwrap()
    }
}

/// `GET path` on a new connection; `None` while nothing listens.
async fn get(addr: SocketAddr, path: &str) -> Option<(u16, Bytes)> {
    tokio::net::TcpStream::connect(addr).await.ok()?;
    let (_, status, body) = Conn::open(addr).await.send(get_request(path)).await;
    Some((status, body))
}

/// A notification receiver that accepts every connection and never
/// answers: it reads what it is sent and keeps the connection until the
/// client gives up.
struct HangingReceiver {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl HangingReceiver {
    async fn start() -> HangingReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
                });
            }
        });
        HangingReceiver { addr, accepted }
    }
}
