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

#[path = "../../tests/support/mod.rs"]
mod support;

#[path = "../common/mod.rs"]
mod common;

mod options;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Read as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams};
use pushroll::index::{Kind, WorkloadRef};
use pushroll::index_builder::Workload;
use pushroll::index_writer::Payload;
use pushroll::k8s::Kube;
use pushroll::lookup::{IndexStore, OnMiss};
use pushroll::metrics::Metrics;
use pushroll::plan::NamespaceFilter;
use pushroll::reference::{Reference, match_key};
use pushroll::restart::{Push, Restarter};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use options::Options;

const AUDIENCE: &str = "https://pushroll.example.com/push";
const EMAIL: &str = "pubsub-push@demo-project.iam.gserviceaccount.com";
const SUBSCRIPTION: &str = "projects/demo-project/subscriptions/gcr-push";

// ---------------------------------------------------------------- statistics

#[derive(Debug, Clone, Default, Serialize)]
struct Stats {
    n: usize,
    p50_ns: f64,
    p90_ns: f64,
    p99_ns: f64,
    max_ns: f64,
}

fn stats(samples: &mut [u64]) -> Stats {
    samples.sort_unstable();
    let at = |q: f64| {
        if samples.is_empty() {
            f64::NAN
        } else {
            samples[((samples.len() - 1) as f64 * q).round() as usize] as f64
        }
    };
    Stats {
        n: samples.len(),
        p50_ns: at(0.5),
        p90_ns: at(0.9),
        p99_ns: at(0.99),
        max_ns: at(1.0),
    }
}

fn human(ns: f64) -> String {
    if ns < 0.0 {
        format!("−{}", human(-ns))
    } else if ns.is_nan() {
        "–".into()
    } else if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.1} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

fn human_bytes(b: f64) -> String {
    if b < 1024.0 {
        format!("{b:.0} B")
    } else if b < 1024.0 * 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{:.1} MiB", b / 1024.0 / 1024.0)
    }
}

fn ratio(a: f64, b: f64) -> String {
    let r = a / b;
    if r >= 100.0 {
        format!("{:.0}×", r)
    } else {
        format!("{r:.1}×")
    }
}

// ---------------------------------------------------------------- cluster

/// A fake API server holding workloads `0..n` and the index ConfigMap,
/// and the mounted index file as kubelet would write it.
struct Cluster {
    fake: fake_apiserver::FakeApiServer,
    client: kube::Client,
    /// The same API server through a byte-counting proxy.
    counted: kube::Client,
    proxy_bytes: Arc<AtomicU64>,
    _dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    index_file: PathBuf,
    index_bytes: usize,
    gzip: bool,
    object_bytes: usize,
}

async fn client_for(kubeconfig: &str) -> kube::Client {
    let kc = kube::config::Kubeconfig::from_yaml(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

impl Cluster {
    async fn start(n: usize) -> Cluster {
        let fake = fake_apiserver::FakeApiServer::start_with(fake_apiserver::Options::default());
        let mut object_bytes = 0;
        for i in 0..n {
            let obj = common::workload(i);
            object_bytes += serde_json::to_vec(&obj).unwrap().len();
            fake.insert(obj);
        }
        let index = common::index(n);
        let payload = Payload::encode(&index).expect("the index fits in a ConfigMap");
        let dir = tempfile::tempdir().unwrap();
        let (file, bytes, data) = match &payload {
            Payload::Json(s) => (
                "index.json",
                s.as_bytes().to_vec(),
                json!({"data": {"index.json": s}}),
            ),
            Payload::Gzip(b) => (
                "index.json.gz",
                b.clone(),
                json!({"binaryData": {"index.json.gz": base64::engine::general_purpose::STANDARD.encode(b)}}),
            ),
        };
        // serve's --index-file names index.json; the .gz beside it is read too.
        std::fs::write(dir.path().join(file), &bytes).unwrap();
        let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": common::INDEX_CM, "namespace": common::INDEX_NS}});
        for (k, v) in data.as_object().unwrap() {
            cm[k] = v.clone();
        }
        fake.insert(cm);
        let kubeconfig = fake.write_kubeconfig_ns(dir.path(), common::INDEX_NS);
        let client = client_for(&fake.kubeconfig(common::INDEX_NS)).await;
        let (proxy, proxy_bytes) = counting_proxy(fake.addr()).await;
        let counted_config = fake
            .kubeconfig(common::INDEX_NS)
            .replace(&fake.url(), &format!("http://{proxy}"));
        let counted = client_for(&counted_config).await;
        Cluster {
            fake,
            client,
            counted,
            proxy_bytes,
            index_file: dir.path().join("index.json"),
            kubeconfig,
            _dir: dir,
            index_bytes: bytes.len(),
            gzip: payload.is_gzip(),
            object_bytes,
        }
    }
}

/// A TCP proxy to `upstream` that counts the bytes it carries, both
/// directions, as they pass (before they are forwarded).
async fn counting_proxy(upstream: SocketAddr) -> (SocketAddr, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let bytes = Arc::new(AtomicU64::new(0));
    let counter = bytes.clone();
    tokio::spawn(async move {
        while let Ok((down, _)) = listener.accept().await {
            let Ok(up) = tokio::net::TcpStream::connect(upstream).await else {
                continue;
            };
            let _ = up.set_nodelay(true);
            let _ = down.set_nodelay(true);
            let (down_r, down_w) = down.into_split();
            let (up_r, up_w) = up.into_split();
            tokio::spawn(pipe(down_r, up_w, counter.clone()));
            tokio::spawn(pipe(up_r, down_w, counter.clone()));
        }
    });
    (addr, bytes)
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    counter: Arc<AtomicU64>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                counter.fetch_add(n as u64, Ordering::Relaxed);
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

// ---------------------------------------------------------------- designs

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
enum Design {
    V1,
    V2,
    V3,
    Pushroll,
}

impl Design {
    const ALL: [Design; 4] = [Design::V1, Design::V2, Design::V3, Design::Pushroll];

    fn label(self) -> &'static str {
        match self {
            Design::V1 => "V1 list all workloads",
            Design::V2 => "V2 GET index ConfigMap",
            Design::V3 => "V3 read mounted file",
            Design::Pushroll => "pushroll in-memory index",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Design::V1 => "V1",
            Design::V2 => "V2",
            Design::V3 => "V3",
            Design::Pushroll => "pushroll",
        }
    }

    fn color(self) -> &'static str {
        match self {
            Design::V1 => "#d62728",
            Design::V2 => "#ff7f0e",
            Design::V3 => "#9467bd",
            Design::Pushroll => "#2ca02c",
        }
    }
}

/// The seed's cache format, read the way its Go CLI reads it: a typed
/// decode into a map (unknown fields such as `containers` skipped).
#[derive(Deserialize)]
struct SeedIndex {
    images: HashMap<String, Vec<SeedEntry>>,
}

#[derive(Deserialize)]
struct SeedEntry {
    #[serde(default = "deployment")]
    kind: Kind,
    namespace: String,
    name: String,
}

fn deployment() -> Kind {
    Kind::Deployment
}

fn seed_lookup(json: &[u8], key: &str) -> Vec<WorkloadRef> {
    let index: SeedIndex = serde_json::from_slice(json).expect("index JSON");
    index
        .images
        .get(key)
        .map(|ws| {
            ws.iter()
                .map(|w| WorkloadRef {
                    kind: w.kind,
                    namespace: w.namespace.clone(),
                    name: w.name.clone(),
                    containers: Vec::new(),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("gzip");
    out
}

/// What each design needs.
struct Finder {
    store: IndexStore,
    index_file: PathBuf,
}

impl Finder {
    fn new(cluster: &Cluster) -> Finder {
        // serve loads the mounted file once (and on change), not per push.
        let store = IndexStore::new(
            None,
            OnMiss::Configmap,
            Duration::from_secs(10),
            Metrics::new(),
        );
        let file = pushroll::index_file::IndexFile {
            path: cluster.index_file.clone(),
            embedded: None,
        };
        let (index, _) = file.load().unwrap().expect("the index file");
        store.set_file(index);
        Finder {
            store,
            index_file: cluster.index_file.clone(),
        }
    }

    /// The workloads that run `image`, found the way `design` finds them.
    async fn find(&self, design: Design, client: &kube::Client, image: &str) -> Vec<WorkloadRef> {
        let key = Reference::parse(image).unwrap().tagged();
        match design {
            Design::Pushroll => self.store.lookup(&key).await.unwrap().workloads,
            Design::V3 => {
                let json = match std::fs::read(&self.index_file) {
                    Ok(b) => b,
                    Err(_) => {
                        gunzip(&std::fs::read(self.index_file.with_extension("json.gz")).unwrap())
                    }
                };
                seed_lookup(&json, &key)
            }
            Design::V2 => {
                let api: Api<ConfigMap> = Api::namespaced(client.clone(), common::INDEX_NS);
                let cm = api.get(common::INDEX_CM).await.unwrap();
                let json = match cm.data.as_ref().and_then(|d| d.get("index.json")) {
                    Some(s) => s.as_bytes().to_vec(),
                    None => gunzip(&cm.binary_data.as_ref().unwrap()["index.json.gz"].0),
                };
                seed_lookup(&json, &key)
            }
            Design::V1 => {
                let mut found = Vec::new();
                list_matching::<Deployment>(client, &key, &mut found).await;
                list_matching::<StatefulSet>(client, &key, &mut found).await;
                list_matching::<DaemonSet>(client, &key, &mut found).await;
                found
            }
        }
    }
}

/// V1: every `W` in all namespaces, page by page (as `kubectl get -A`
/// does), keeping those with a container or init container running `key`.
async fn list_matching<W: Workload>(
    client: &kube::Client,
    key: &str,
    found: &mut Vec<WorkloadRef>,
) {
    let api: Api<W> = Api::all(client.clone());
    let mut token: Option<String> = None;
    loop {
        let mut params = ListParams::default().limit(500);
        if let Some(t) = &token {
            params = params.continue_token(t);
        }
        let page = api.list(&params).await.unwrap();
        for w in &page.items {
            let Some(spec) = w.template().and_then(|t| t.spec.as_ref()) else {
                continue;
            };
            let containers: Vec<String> = spec
                .init_containers
                .iter()
                .flatten()
                .chain(&spec.containers)
                .filter(|c| c.image.as_deref().and_then(match_key).as_deref() == Some(key))
                .map(|c| c.name.clone())
                .collect();
            if !containers.is_empty() {
                found.push(WorkloadRef {
                    kind: W::KIND,
                    namespace: kube::ResourceExt::namespace(w).unwrap_or_default(),
                    name: kube::ResourceExt::name_any(w),
                    containers,
                });
            }
        }
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            return;
        }
    }
}

#[derive(Debug, Clone, Serialize)]
struct DesignResult {
    n: usize,
    design: Design,
    lookup: Stats,
    requests_per_push: f64,
    bytes_per_push: f64,
    hit: Stats,
}

async fn run_designs(
    opts: &Options,
    n: usize,
    cluster: &Cluster,
    digests: &AtomicU64,
) -> Vec<DesignResult> {
    let finder = Finder::new(cluster);
    let target = n / 2;
    let image = common::image_of(target);
    let key = Reference::parse(&image).unwrap().tagged();
    let metrics = Metrics::new();
    let restarter = Restarter::new(
        Some(Kube::new(cluster.client.clone(), metrics.clone())),
        NamespaceFilter::default(),
        false,
        8,
        metrics,
    );
    let mut results = Vec::new();
    for design in Design::ALL {
        // Correctness first: every design finds exactly workload n/2.
        let found = finder.find(design, &cluster.client, &image).await;
        assert_eq!(found.len(), 1, "{design:?} at {n}: {found:?}");
        assert_eq!(found[0].name, common::name_of(target), "{design:?}");
        let miss = finder
            .find(design, &cluster.client, &common::miss_image(target))
            .await;
        assert!(miss.is_empty(), "{design:?} found a commit tag");

        // Latency of the lookup, over the time budget.
        let (min_iters, max_iters) = if opts.quick { (1, 1) } else { (5, 200_000) };
        let mut samples = Vec::new();
        let started = Instant::now();
        while samples.len() < min_iters
            || (started.elapsed() < opts.budget && samples.len() < max_iters)
        {
            let t = Instant::now();
            let found = finder.find(design, &cluster.client, &image).await;
            samples.push(t.elapsed().as_nanos() as u64);
            std::hint::black_box(found);
        }
        let lookup = stats(&mut samples);

        // API requests and bytes, through the counting proxy.
        let passes = if opts.quick { 1 } else { 3 };
        cluster.fake.clear_requests();
        let before = cluster.proxy_bytes.load(Ordering::Relaxed);
        for _ in 0..passes {
            finder.find(design, &cluster.counted, &image).await;
        }
        let requests = cluster.fake.requests().len() as f64 / passes as f64;
        let bytes = (cluster.proxy_bytes.load(Ordering::Relaxed) - before) as f64 / passes as f64;

        // A whole hit: the lookup, then the restart every design shares.
        let hit_iters = if opts.quick {
            1
        } else {
            (Duration::from_secs(2).as_nanos() as f64 / lookup.p50_ns).clamp(3.0, 200.0) as usize
        };
        let mut hit_samples = Vec::new();
        for _ in 0..hit_iters {
            let digest = common::digest(digests.fetch_add(1, Ordering::Relaxed));
            let t = Instant::now();
            let found = finder.find(design, &cluster.client, &image).await;
            let push = Push {
                image_key: &key,
                digest: &digest,
                message_id: Some("bench"),
            };
            let (done, failed) = restarter.restart_all(&push, &found).await;
            hit_samples.push(t.elapsed().as_nanos() as u64);
            assert!(failed.is_empty(), "{failed:?}");
            assert_eq!(done.len(), 1);
        }
        let hit = stats(&mut hit_samples);
        eprintln!(
            "  N={n:<6} {:<26} lookup p50 {:>9} ({} runs)  {:>5.1} req/push {:>10}/push  hit p50 {:>9}",
            design.label(),
            human(lookup.p50_ns),
            lookup.n,
            requests,
            human_bytes(bytes),
            human(hit.p50_ns)
        );
        results.push(DesignResult {
            n,
            design,
            lookup,
            requests_per_push: requests,
            bytes_per_push: bytes,
            hit,
        });
    }
    results
}

// ---------------------------------------------------------------- pushroll over HTTP

/// A `pushroll serve` process; killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts the binary as production would run it (JSON logs at info,
    /// `--auth google`, the index file, the ConfigMap fallback) and waits
    /// for its "listening" line.
    fn start(cluster: &Cluster, jwks_url: &str, extra: &[String]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pushroll"));
        cmd.args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
            .args(["--auth", "google", "--audience", AUDIENCE])
            .args(["--allowed-email", EMAIL, "--jwks-url", jwks_url])
            .args(["--subscription", SUBSCRIPTION])
            .arg("--index-file")
            .arg(&cluster.index_file)
            .args([
                "--index-configmap",
                &format!("{}/{}", common::INDEX_NS, common::INDEX_CM),
            ])
            .args(extra)
            .env("KUBECONFIG", &cluster.kubeconfig)
            .env("HOME", "/nonexistent")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, _) in std::env::vars() {
            if k.starts_with("PUSHROLL_") {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd.spawn().expect("spawning pushroll");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stderr);
            let mut line = String::new();
            let mut early = Vec::new();
            while lines.read_line(&mut line).unwrap_or(0) > 0 {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["message"] == "listening"
                {
                    let _ = tx.send(Ok(v["addr"].as_str().unwrap_or_default().to_owned()));
                    // The rest (a line per push) is drained, not kept.
                    let _ = std::io::copy(&mut lines, &mut std::io::sink());
                    return;
                }
                early.push(std::mem::take(&mut line));
            }
            let _ = tx.send(Err(early.concat()));
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(addr)) => Server {
                child,
                addr: addr.parse().unwrap(),
            },
            other => {
                let _ = child.kill();
                panic!("pushroll did not start: {other:?}");
            }
        }
    }

    /// `(VmRSS, VmHWM)` in KiB.
    fn rss_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

/// One blocking `GET path` on a fresh connection; the status code.
fn get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    use std::io::Write as _;
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_nodelay(true).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: pushroll\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

#[derive(Debug, Clone, Serialize)]
struct Startup {
    listening: Stats,
    ready: Stats,
    rss_ready_kib: u64,
    hwm_ready_kib: u64,
}

/// Starts pushroll `times` times: spawn → "listening" and → `/readyz` 200
/// (index loaded, signing keys fetched), and the RSS when ready. Returns
/// the last server, still running.
fn startup(cluster: &Cluster, jwks_url: &str, times: usize, extra: &[String]) -> (Startup, Server) {
    let mut listening = Vec::new();
    let mut ready = Vec::new();
    let mut last = None;
    let mut rss = (0, 0);
    for _ in 0..times {
        drop(last.take());
        let t = Instant::now();
        let server = Server::start(cluster, jwks_url, extra);
        listening.push(t.elapsed().as_nanos() as u64);
        while get_status(server.addr, "/readyz") != Some(200) {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "pushroll never got ready"
            );
            std::thread::sleep(Duration::from_micros(500));
        }
        ready.push(t.elapsed().as_nanos() as u64);
        std::thread::sleep(Duration::from_millis(100));
        rss = server.rss_kib();
        last = Some(server);
    }
    (
        Startup {
            listening: stats(&mut listening),
            ready: stats(&mut ready),
            rss_ready_kib: rss.0,
            hwm_ready_kib: rss.1,
        },
        last.unwrap(),
    )
}

#[derive(Debug, Clone, Serialize)]
struct Load {
    connections: usize,
    requests: usize,
    errors: usize,
    seconds: f64,
    per_second: f64,
    latency: Stats,
}

/// A load generator: `conns` HTTP/1.1 keep-alive connections, each sending
/// `POST /push` back to back; requests that start during `warmup` are not
/// counted. Stops after `warmup + measure`, or after `max` requests.
/// Where the load goes, and the token it carries.
struct Target {
    addr: SocketAddr,
    token: String,
}

async fn load(
    target: &Target,
    conns: usize,
    warmup: Duration,
    measure: Duration,
    max: Option<u64>,
    body: Arc<dyn Fn(u64) -> String + Send + Sync>,
    expect: &'static str,
) -> Load {
    let seq = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let measured_from = start + warmup;
    let end = measured_from + measure;
    let (addr, auth) = (target.addr, format!("Bearer {}", target.token));
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (seq, body, auth) = (seq.clone(), body.clone(), auth.clone());
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            let (mut samples, mut errors) = (Vec::new(), 0usize);
            loop {
                let i = seq.fetch_add(1, Ordering::Relaxed);
                if max.is_some_and(|m| i >= m) || (max.is_none() && Instant::now() >= end) {
                    break;
                }
                let request = hyper::Request::post("/push")
                    .header("host", "pushroll")
                    .header("authorization", &auth)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body(i))))
                    .unwrap();
                if sender.ready().await.is_err() {
                    errors += 1;
                    break;
                }
                let t = Instant::now();
                let response = sender.send_request(request).await.unwrap();
                let status = response.status();
                let text = response.into_body().collect().await.unwrap().to_bytes();
                let took = t.elapsed();
                if t >= measured_from || max.is_some() {
                    samples.push(took.as_nanos() as u64);
                    let ok = status == 200 && memchr(&text, expect.as_bytes());
                    if !ok {
                        errors += 1;
                        if errors == 1 {
                            eprintln!(
                                "unexpected answer {status}: {}",
                                String::from_utf8_lossy(&text)
                            );
                        }
                    }
                }
            }
            (samples, errors)
        }));
    }
    let mut samples = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (s, e) = t.await.unwrap();
        samples.extend(s);
        errors += e;
    }
    let seconds = if max.is_some() {
        start.elapsed().as_secs_f64()
    } else {
        measure.as_secs_f64()
    };
    Load {
        connections: conns,
        requests: samples.len(),
        errors,
        seconds,
        per_second: samples.len() as f64 / seconds,
        latency: stats(&mut samples),
    }
}

fn memchr(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// One HTTP/1.1 keep-alive connection from a bare hyper client.
struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        Conn { sender }
    }

    /// Sends one request; `(time to the whole answer, status, body)`.
    async fn send(&mut self, request: hyper::Request<Full<Bytes>>) -> (u64, u16, Bytes) {
        self.sender.ready().await.unwrap();
        let t = Instant::now();
        let response = self.sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (t.elapsed().as_nanos() as u64, status, bytes)
    }
}

/// What one hit asks of the API server — the GET, PATCH and Event that
/// pushroll sends, built by pushroll's own functions — from a bare client:
/// the fake's own time, `[get, patch, event]` in ns.
async fn bare_restart(fake: &mut Conn, target: usize, digest: &str) -> [u64; 3] {
    let ns = common::namespace_of(target);
    let kind = common::kind_of(target);
    let path = format!(
        "/apis/apps/v1/namespaces/{ns}/{}s/{}",
        kind.to_lowercase(),
        common::name_of(target)
    );
    let key = Reference::parse(&common::image_of(target))
        .unwrap()
        .tagged();
    let request = |method: &str, uri: String, ctype: &str, body: Vec<u8>| {
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
    };
    let (t_get, status, obj) = fake
        .send(request("GET", path.clone(), "application/json", Vec::new()))
        .await;
    assert_eq!(status, 200);
    let obj: kube::api::DynamicObject = serde_json::from_slice(&obj).unwrap();
    let now = jiff::Timestamp::now();
    let patch = pushroll::plan::restart_patch(
        obj.metadata.resource_version.as_deref(),
        &["app".to_string()],
        digest,
        now,
    );
    let (t_patch, status, patched) = fake
        .send(request(
            "PATCH",
            format!("{path}?fieldManager=pushroll"),
            "application/strategic-merge-patch+json",
            serde_json::to_vec(&patch).unwrap(),
        ))
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&patched));
    let patched: kube::api::DynamicObject = serde_json::from_slice(&patched).unwrap();
    let kind = match kind {
        "Deployment" => Kind::Deployment,
        "StatefulSet" => Kind::StatefulSet,
        _ => Kind::DaemonSet,
    };
    let event = pushroll::k8s::restart_event(kind, &patched, &key, digest, Some("bench"), now);
    let (t_event, status, _) = fake
        .send(request(
            "POST",
            format!("/api/v1/namespaces/{ns}/events"),
            "application/json",
            serde_json::to_vec(&event).unwrap(),
        ))
        .await;
    assert_eq!(status, 201);
    [t_get, t_patch, t_event]
}

#[derive(Debug, Clone, Serialize)]
struct Hits {
    pushes: usize,
    errors: usize,
    latency: Stats,
    /// The fake's own time for the same three requests (bare client),
    /// measured right after each push, on the same workload.
    fake_own: Stats,
    fake_get: Stats,
    fake_patch: Stats,
    fake_event: Stats,
    /// Per pair: push latency minus the fake's own time.
    beyond_fake: Stats,
    /// Per pair: pushroll's `Restarter` called in this process (kube-rs
    /// client, plan, patch, event) minus the fake's own time.
    restarter_beyond_fake: Stats,
    /// pushroll's API requests during the pushes, by verb and resource.
    api: BTreeMap<String, usize>,
}

/// Hits at one connection, each a new digest of workload `target`'s image
/// (so each restarts it), each followed by the same three requests from a
/// bare client so that both see the fake in the same state.
async fn hits(
    target_addr: &Target,
    cluster: &Cluster,
    target: usize,
    count: usize,
    digests: &AtomicU64,
) -> Hits {
    let mut push = Conn::open(target_addr.addr).await;
    let mut fake = Conn::open(cluster.fake.addr()).await;
    // pushroll's restart code in this process (kube-rs), for the breakdown.
    let metrics = Metrics::new();
    let restarter = Restarter::new(
        Some(Kube::new(cluster.client.clone(), metrics.clone())),
        NamespaceFilter::default(),
        false,
        8,
        metrics,
    );
    let key = Reference::parse(&common::image_of(target))
        .unwrap()
        .tagged();
    let workload = WorkloadRef {
        kind: match common::kind_of(target) {
            "Deployment" => Kind::Deployment,
            "StatefulSet" => Kind::StatefulSet,
            _ => Kind::DaemonSet,
        },
        namespace: common::namespace_of(target),
        name: common::name_of(target),
        containers: vec!["app".into()],
    };
    let mut in_process = Vec::new();
    let mut api = BTreeMap::new();
    let repo = common::repo_of(target);
    let tag = format!("1.{}.0", target % 10);
    let auth = format!("Bearer {}", target_addr.token);
    let (mut lat, mut own, mut beyond) = (Vec::new(), Vec::new(), Vec::new());
    let mut per: [Vec<u64>; 3] = Default::default();
    let mut errors = 0;
    for i in 0..count {
        let digest = common::digest(digests.fetch_add(1, Ordering::Relaxed));
        let data = support::insert(&repo, &tag, &digest);
        let body = support::wrapped(&data, &format!("h{i}"), SUBSCRIPTION);
        let request = hyper::Request::post("/push")
            .header("host", "pushroll")
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        cluster.fake.clear_requests();
        let (t, status, text) = push.send(request).await;
        for (what, count) in verbs(cluster) {
            *api.entry(what).or_default() += count;
        }
        if status != 200 || !memchr(&text, b"\"result\":\"restarted\"") {
            errors += 1;
            eprintln!(
                "unexpected hit answer {status}: {}",
                String::from_utf8_lossy(&text)
            );
        }
        let digest = common::digest(digests.fetch_add(1, Ordering::Relaxed));
        let parts = bare_restart(&mut fake, target, &digest).await;
        let sum: u64 = parts.iter().sum();
        let digest = common::digest(digests.fetch_add(1, Ordering::Relaxed));
        let t_in = Instant::now();
        let (done, _) = restarter
            .restart_all(
                &Push {
                    image_key: &key,
                    digest: &digest,
                    message_id: Some("bench"),
                },
                std::slice::from_ref(&workload),
            )
            .await;
        in_process.push(t_in.elapsed().as_nanos() as i64 - sum as i64);
        assert_eq!(done.len(), 1);
        lat.push(t);
        own.push(sum);
        beyond.push(t as i64 - sum as i64);
        for (v, p) in per.iter_mut().zip(parts) {
            v.push(p);
        }
    }
    let beyond_fake = signed_stats(&beyond);
    let restarter_beyond_fake = signed_stats(&in_process);
    let [g, p, e] = &mut per;
    Hits {
        pushes: count,
        errors,
        latency: stats(&mut lat),
        fake_own: stats(&mut own),
        fake_get: stats(g),
        fake_patch: stats(p),
        fake_event: stats(e),
        beyond_fake,
        restarter_beyond_fake,
        api,
    }
}

/// [`stats`] of differences, which can be negative.
fn signed_stats(v: &[i64]) -> Stats {
    const SHIFT: i64 = 1 << 40;
    let mut shifted: Vec<u64> = v.iter().map(|d| (d + SHIFT) as u64).collect();
    let mut out = stats(&mut shifted);
    for x in [
        &mut out.p50_ns,
        &mut out.p90_ns,
        &mut out.p99_ns,
        &mut out.max_ns,
    ] {
        *x -= SHIFT as f64;
    }
    out
}

#[derive(Debug, Clone, Serialize)]
struct Http {
    n: usize,
    startup: Startup,
    miss_1: Load,
    miss_64: Load,
    hit_1: Hits,
    hit_api: BTreeMap<String, usize>,
    miss_api: BTreeMap<String, usize>,
    /// `(phase, VmRSS KiB, VmHWM KiB)` after each phase.
    rss: Vec<(String, u64, u64)>,
}

/// The user agent of the bare client's requests, which `verbs` leaves out.
const BARE_AGENT: &str = "pushroll-bench-bare";

/// pushroll's API requests in the fake's log, by verb and resource.
fn verbs(cluster: &Cluster) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in cluster.fake.requests() {
        if r.user_agent.as_deref() == Some(BARE_AGENT) {
            continue;
        }
        let what = format!("{} {}", r.verb, r.resource.unwrap_or_default());
        *out.entry(what).or_default() += 1;
    }
    out
}

async fn run_http(opts: &Options, n: usize, cluster: &Cluster, digests: &Arc<AtomicU64>) -> Http {
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
    let miss_body: Arc<dyn Fn(u64) -> String + Send + Sync> =
        Arc::new(move |i| misses[i as usize % misses.len()].clone());
    let (warm, secs) = (
        Duration::from_secs_f64(opts.miss_secs.0),
        Duration::from_secs_f64(opts.miss_secs.1),
    );
    let quick_max = |k: u64| opts.quick.then_some(k);
    let target = Target {
        addr: server.addr,
        token,
    };
    let mut rss = vec![("ready".to_owned(), server.rss_kib())];
    cluster.fake.clear_requests();
    let miss_1 = load(
        &target,
        1,
        warm,
        secs / 3,
        quick_max(5),
        miss_body.clone(),
        "\"no-match\"",
    )
    .await;
    rss.push((
        format!("after {} misses at c=1", miss_1.requests),
        server.rss_kib(),
    ));
    let miss_64 = load(
        &target,
        64,
        warm,
        secs,
        quick_max(64),
        miss_body.clone(),
        "\"no-match\"",
    )
    .await;
    rss.push((
        format!("after {} misses at c=64", miss_64.requests),
        server.rss_kib(),
    ));
    // The same again: does memory keep growing, or was that a plateau?
    let again = load(
        &target,
        64,
        Duration::ZERO,
        secs,
        quick_max(64),
        miss_body,
        "\"no-match\"",
    )
    .await;
    rss.push((
        format!("after {} more misses at c=64", again.requests),
        server.rss_kib(),
    ));
    let miss_api = verbs(cluster);
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
    let hit = n / 2;
    // Warm the connection pools, then measure.
    hits(&target, cluster, hit, 5, digests).await;
    rss.push(("after 5 hits".to_owned(), server.rss_kib()));
    let hit_1 = hits(&target, cluster, hit, opts.hits, digests).await;
    let hit_api = hit_1.api.clone();
    rss.push((format!("after {} more hits", opts.hits), server.rss_kib()));
    eprintln!(
        "  hit c=1: p50 {} p99 {} | fake's own p50 {} | beyond p50 {} (restarter {}) | API {:?} | RSS {:?}",
        human(hit_1.latency.p50_ns),
        human(hit_1.latency.p99_ns),
        human(hit_1.fake_own.p50_ns),
        human(hit_1.beyond_fake.p50_ns),
        human(hit_1.restarter_beyond_fake.p50_ns),
        hit_api,
        rss
    );
    Http {
        n,
        startup,
        miss_1,
        miss_64,
        hit_1,
        hit_api,
        miss_api,
        rss: rss.into_iter().map(|(p, (r, h))| (p, r, h)).collect(),
    }
}

// ---------------------------------------------------------------- report

fn machine() -> String {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let mem = read("/proc/meminfo")
        .lines()
        .next()
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    format!(
        "{} × {cpu}, {:.0} GiB, Linux {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        mem as f64 / 1024.0 / 1024.0,
        read("/proc/sys/kernel/osrelease").trim()
    )
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn report(
    opts: &Options,
    designs: &[DesignResult],
    http: Option<&Http>,
    clusters: &[(usize, usize, usize, bool)],
    load_before: &str,
) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Machine: {}; load average before {load_before}, after {}; {}.\n",
        machine(),
        loadavg(),
        if opts.quick {
            "QUICK (smoke) run: figures are not measurements"
        } else {
            "full run"
        }
    );
    let _ = writeln!(
        md,
        "| N workloads | objects (JSON) | index (as stored) |\n| ---: | ---: | ---: |"
    );
    for (n, objects, index, gz) in clusters {
        let _ = writeln!(
            md,
            "| {n} | {} | {} {} |",
            human_bytes(*objects as f64),
            human_bytes(*index as f64),
            if *gz { "gzip" } else { "JSON" }
        );
    }
    let _ = writeln!(md, "\n### Finding the workloads of one push (medians)\n");
    let _ = writeln!(
        md,
        "| N | design | lookup p50 | ×pushroll | API requests/push | bytes/push | hit p50 (lookup + GET/PATCH/Event) | ×pushroll |"
    );
    let _ = writeln!(
        md,
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for d in designs {
        let base = designs
            .iter()
            .find(|b| b.n == d.n && b.design == Design::Pushroll)
            .unwrap();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            d.n,
            d.design.label(),
            human(d.lookup.p50_ns),
            ratio(d.lookup.p50_ns, base.lookup.p50_ns),
            d.requests_per_push,
            human_bytes(d.bytes_per_push),
            human(d.hit.p50_ns),
            ratio(d.hit.p50_ns, base.hit.p50_ns)
        );
    }
    if let Some(h) = http {
        let _ = writeln!(
            md,
            "\n### pushroll over HTTP ({} binary, `--auth google`), N = {}\n",
            if cfg!(debug_assertions) {
                "DEBUG"
            } else {
                "release"
            },
            h.n
        );
        let _ = writeln!(
            md,
            "| scenario | connections | pushes | errors | pushes/s | p50 | p99 | max |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        for (name, l) in [("miss", &h.miss_1), ("miss", &h.miss_64)] {
            let _ = writeln!(
                md,
                "| {name} | {} | {} | {} | {:.0} | {} | {} | {} |",
                l.connections,
                l.requests,
                l.errors,
                l.per_second,
                human(l.latency.p50_ns),
                human(l.latency.p99_ns),
                human(l.latency.max_ns)
            );
        }
        let hit = &h.hit_1;
        let _ = writeln!(
            md,
            "| hit (restarts 1 workload) | 1 | {} | {} | {:.0} | {} | {} | {} |",
            hit.pushes,
            hit.errors,
            1e9 / hit.latency.p50_ns,
            human(hit.latency.p50_ns),
            human(hit.latency.p99_ns),
            human(hit.latency.max_ns)
        );
        let _ = writeln!(
            md,
            "\nAPI requests during the hits: {:?} for {} pushes; during the misses: {:?}.",
            h.hit_api, hit.pushes, h.miss_api
        );
        let _ = writeln!(
            md,
            "The fake's own time for the same GET + PATCH + Event from a bare HTTP client, right after each push: p50 {} (GET {}, PATCH {}, Event {}). Hit latency beyond the fake's own time, per pair: p50 {}, p90 {}; of which pushroll's `Restarter` (kube-rs client, plan, patch, Event) called in the bench process, beyond the same fake time: p50 {}.",
            human(hit.fake_own.p50_ns),
            human(hit.fake_get.p50_ns),
            human(hit.fake_patch.p50_ns),
            human(hit.fake_event.p50_ns),
            human(hit.beyond_fake.p50_ns),
            human(hit.beyond_fake.p90_ns),
            human(hit.restarter_beyond_fake.p50_ns)
        );
        let _ = writeln!(
            md,
            "Startup ({} starts, spawn → `/readyz` 200): listening p50 {}, ready p50 {} (max {}).\n\n| RSS of pushroll | VmRSS | VmHWM (peak) |\n| --- | ---: | ---: |",
            h.startup.ready.n,
            human(h.startup.listening.p50_ns),
            human(h.startup.ready.p50_ns),
            human(h.startup.ready.max_ns),
        );
        for (phase, rss, hwm) in &h.rss {
            let _ = writeln!(
                md,
                "| {phase} | {:.1} MiB | {:.1} MiB |",
                *rss as f64 / 1024.0,
                *hwm as f64 / 1024.0
            );
        }
    }
    md
}

/// A log-log chart of lookup latency against cluster size, by design.
fn svg(designs: &[DesignResult], http: Option<&Http>) -> String {
    let (w, h) = (760.0, 480.0);
    let (left, right, top, bottom) = (80.0, 200.0, 40.0, 60.0);
    let mut ns: Vec<usize> = designs.iter().map(|d| d.n).collect();
    ns.sort_unstable();
    ns.dedup();
    let (x_min, x_max) = (
        (ns[0] as f64).log10().floor(),
        (*ns.last().unwrap() as f64)
            .log10()
            .ceil()
            .max((ns[0] as f64).log10().floor() + 1.0),
    );
    let mut ys: Vec<f64> = designs
        .iter()
        .flat_map(|d| [d.lookup.p50_ns, d.hit.p50_ns])
        .collect();
    if let Some(h) = http {
        ys.push(h.miss_1.latency.p50_ns);
    }
    let y_min = ys
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min)
        .log10()
        .floor();
    let y_max = ys.iter().copied().fold(0.0, f64::max).log10().ceil();
    let px = |n: f64| left + (n.log10() - x_min) / (x_max - x_min) * (w - left - right);
    let py = |v: f64| top + (y_max - v.log10()) / (y_max - y_min) * (h - top - bottom);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">Time to find the workloads of one push, by cluster size (median, log-log)</text>"#,
        w / 2.0
    );
    for e in (x_min as i32)..=(x_max as i32) {
        let x = px(10f64.powi(e));
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{}" stroke="#ddd"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
            h - bottom,
            h - bottom + 18.0,
            fmt_count(10f64.powi(e))
        );
    }
    for e in (y_min as i32)..=(y_max as i32) {
        let y = py(10f64.powi(e));
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            w - right,
            left - 6.0,
            y + 4.0,
            tick(e)
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{left}" y="{top}" width="{}" height="{}" fill="none" stroke="#333"/>"##,
        w - left - right,
        h - top - bottom
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">workloads in the cluster (N)</text>"#,
        left + (w - left - right) / 2.0,
        h - 18.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(18 {}) rotate(-90)" text-anchor="middle">latency per push</text>"#,
        top + (h - top - bottom) / 2.0
    );
    let mut legend_y = top + 10.0;
    for design in Design::ALL {
        for (hit, dash) in [(false, ""), (true, r#" stroke-dasharray="5 4""#)] {
            let points: Vec<String> = ns
                .iter()
                .filter_map(|&n| designs.iter().find(|d| d.n == n && d.design == design))
                .map(|d| {
                    format!(
                        "{:.1},{:.1}",
                        px(d.n as f64),
                        py(if hit { d.hit.p50_ns } else { d.lookup.p50_ns })
                    )
                })
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"{dash}/>"#,
                points.join(" "),
                design.color()
            );
            if !hit {
                for p in &points {
                    let (x, y) = p.split_once(',').unwrap();
                    let _ = writeln!(
                        s,
                        r#"<circle cx="{x}" cy="{y}" r="3.5" fill="{}"/>"#,
                        design.color()
                    );
                }
            }
            let _ = writeln!(
                s,
                r#"<line x1="{}" y1="{legend_y:.1}" x2="{}" y2="{legend_y:.1}" stroke="{}" stroke-width="2"{dash}/><text x="{}" y="{:.1}">{}{}</text>"#,
                w - right + 10.0,
                w - right + 34.0,
                design.color(),
                w - right + 40.0,
                legend_y + 4.0,
                design.short(),
                if hit { " + restart" } else { " lookup" }
            );
            legend_y += 20.0;
        }
    }
    if let Some(hr) = http {
        let (x, y) = (px(hr.n as f64), py(hr.miss_1.latency.p50_ns));
        let _ = writeln!(
            s,
            r##"<path d="M{:.1},{:.1} l6,10 h-12 z" fill="#1f77b4"/>"##,
            x,
            y - 6.0
        );
        let _ = writeln!(
            s,
            r##"<path d="M{:.1},{:.1} l6,10 h-12 z" fill="#1f77b4"/><text x="{}" y="{:.1}">pushroll POST /push</text><text x="{}" y="{:.1}">(miss, HTTP + token)</text>"##,
            w - right + 22.0,
            legend_y - 6.0,
            w - right + 40.0,
            legend_y + 4.0,
            w - right + 40.0,
            legend_y + 18.0
        );
    }
    s.push_str("</svg>\n");
    s
}

/// A power of ten of nanoseconds as an axis label: `100 ns`, `1 µs`, … `10 s`.
fn tick(e: i32) -> String {
    let units = ["ns", "µs", "ms", "s"];
    let unit = ((e / 3) as usize).min(units.len() - 1);
    format!("{} {}", 10f64.powi(e - 3 * unit as i32), units[unit])
}

fn fmt_count(n: f64) -> String {
    if n >= 1000.0 {
        format!("{}k", n / 1000.0)
    } else {
        format!("{n}")
    }
}

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
    let digests = Arc::new(AtomicU64::new(1));
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
        clusters.push((n, cluster.object_bytes, cluster.index_bytes, cluster.gzip));
        if opts.http_only {
            if n == opts.system_size() {
                let http = run_http(opts, n, &cluster, &digests).await;
                println!(
                    "{}",
                    report(opts, &[], Some(&http), &clusters, &load_before)
                );
            }
            continue;
        }
        designs.extend(run_designs(opts, n, &cluster, &digests).await);
        if n == opts.system_size() {
            http = Some(run_http(opts, n, &cluster, &digests).await);
        }
    }
    if opts.http_only {
        return;
    }
    let md = report(opts, &designs, http.as_ref(), &clusters, &load_before);
    println!("{md}");
    std::fs::create_dir_all(&opts.out).unwrap();
    std::fs::write(opts.out.join("system.md"), &md).unwrap();
    let json = json!({"designs": designs, "http": http, "clusters": clusters, "machine": machine(), "quick": opts.quick});
    std::fs::write(
        opts.out.join("system.json"),
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .unwrap();
    if let Some(dir) = opts.svg.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(&opts.svg, svg(&designs, http.as_ref())).unwrap();
    eprintln!(
        "wrote {} and {}",
        opts.out.join("system.md").display(),
        opts.svg.display()
    );
}
