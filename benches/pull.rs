//! Pub/Sub pull (issue 24), against the real emulator and the fake API
//! server, in one run:
//!
//! * **publish → PATCH**, pull against push: one `pushroll serve` process
//!   with `--pull-subscription` (a pull subscription of one topic) and
//!   `/push` (a push subscription of another topic, same emulator), rounds
//!   alternating between the two; the clock starts before the publish call
//!   and stops when the fake API server has answered the workload's PATCH
//!   with the round's digest. Goal: pull ≤ push.
//! * **messages/s acked** at `--pull-max-outstanding 64`, every PATCH
//!   taking 1 ms more (the fake's `FaultRule::delay`): N messages, each for
//!   its own workload, published in batches of 100 to a fresh subscription
//!   with a fresh process; from the first publish to the N-th ack counted
//!   by `pushroll_pull_messages_total`. Baseline in the same run:
//!   `--pull-max-outstanding 1` (one message at a time), runs alternating.
//!
//! ```sh
//! cargo bench --bench pull                 # 20 latency rounds each, 3 × 300 messages each
//! cargo bench --bench pull -- --quick      # smoke
//! cargo test --benches                     # the same smoke run (debug build)
//! ```
//!
//! Without the emulator it prints `SKIPPED: …` and exits 0 (unless
//! `PUSHROLL_REQUIRE_EMULATOR=1`). The processes are the tests'
//! `support::Pushroll` (debug logs kept in memory), the same for both
//! paths.

#[path = "../tests/it/support/mod.rs"]
mod support;

#[allow(dead_code)] // the tests use more of it
#[path = "../tests/it/pubsub/emulator.rs"]
mod emulator;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use fake_apiserver::{FakeApiServer, FaultRule, RequestRecord};
use serde_json::{Value, json};

use emulator::Emulator;
use support::cluster::{Cluster, workload};
use support::{Pushroll, eventually, insert, metric};

const PROJECT: &str = "bench";
const NS: &str = "bench";
const CONTAINER: &str = "app";
const ANNOTATION: &str = "digest.pushroll.io/app";
const LIMIT: Duration = Duration::from_secs(120);

fn repo(name: &str) -> String {
    format!("{}-{name}", support::REPO)
}

fn digest(a: u64, b: u64) -> String {
    format!("sha256:{:064x}", (u128::from(a) << 64) | u128::from(b))
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The fake cluster with Deployments `names` (each running `repo(name):v1`),
/// the index file naming them, and the serve ServiceAccount's kubeconfig.
struct Rig {
    _c: Cluster,
    fake: FakeApiServer,
    kubeconfig: std::path::PathBuf,
    index: tempfile::TempDir,
}

impl Rig {
    async fn new(names: &[String]) -> Rig {
        let c = Cluster::fake().await;
        let fake = c.fake_server().unwrap().clone();
        fake.ensure_namespace(NS);
        let mut images = BTreeMap::new();
        for name in names {
            let image = format!("{}:v1", repo(name));
            fake.insert(workload(
                "Deployment",
                NS,
                name,
                &[(CONTAINER, &image)],
                &[],
                json!({}),
            ));
            images.insert(
                image,
                json!([{"kind": "Deployment", "namespace": NS, "name": name, "containers": [CONTAINER]}]),
            );
        }
        let index = tempfile::tempdir().unwrap();
        let doc = json!({"version": 1, "generatedAt": "2026-11-26T12:00:00Z", "images": images});
        std::fs::write(index.path().join("index.json"), doc.to_string()).unwrap();
        let kubeconfig = c.serve_identity().await;
        Rig {
            _c: c,
            fake,
            kubeconfig,
            index,
        }
    }

    fn serve(&self, emu: &Emulator, subscription: &str, extra: &[&str]) -> Pushroll {
        let index = self.index.path().join("index.json");
        let mut args = vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--auth",
            "none",
            "--index-file",
            index.to_str().unwrap(),
            "--pull-subscription",
            subscription,
        ];
        args.extend_from_slice(extra);
        Pushroll::start_env(
            &args,
            &[
                ("KUBECONFIG", self.kubeconfig.to_string_lossy().into_owned()),
                ("PUBSUB_EMULATOR_HOST", emu.host()),
            ],
        )
    }
}

fn patch_with(r: &RequestRecord, name: &str, d: &str) -> bool {
    r.verb == "patch"
        && r.status == 200
        && r.name.as_deref() == Some(name)
        && r.body
            .as_ref()
            .is_some_and(|b| b["spec"]["template"]["metadata"]["annotations"][ANNOTATION] == d)
}

/// Publishes `data`, 100 messages per call.
async fn publish_all(emu: &Emulator, topic: &str, data: &[String]) {
    let http = reqwest::Client::new();
    for chunk in data.chunks(100) {
        let messages: Vec<Value> = chunk
            .iter()
            .map(|d| json!({"data": base64::engine::general_purpose::STANDARD.encode(d)}))
            .collect();
        let resp = http
            .post(format!(
                "{}/v1/projects/{PROJECT}/topics/{topic}:publish",
                emu.base
            ))
            .json(&json!({"messages": messages}))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{:?}", resp.text().await);
    }
}

fn acked(metrics: &str, subscription: &str) -> f64 {
    metric(
        metrics,
        &format!(
            "pushroll_pull_messages_total{{subscription=\"{subscription}\",result=\"acked\"}}"
        ),
    )
}

/// Publish → PATCH answered, `rounds` each, alternating pull and push.
async fn latency(emu: &Emulator, rounds: u64) -> BTreeMap<&'static str, Vec<f64>> {
    let rig = Rig::new(&["lat".to_owned()]).await;
    emu.create_topic(PROJECT, "lat-pull").await;
    emu.create_pull_subscription(PROJECT, "pull", "lat-pull", 10)
        .await;
    let pull_sub = format!("projects/{PROJECT}/subscriptions/pull");
    let p = rig.serve(emu, &pull_sub, &[]);
    p.wait_ready(LIMIT).await;
    emu.create_topic(PROJECT, "lat-push").await;
    emu.create_push_subscription(PROJECT, "push", "lat-push", &p.url("/push"), None, 10)
        .await;
    let mut times: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    // Round 0 of each is a warm-up (connections, first stream response).
    for round in 0..2 * (rounds + 1) {
        let (how, topic) = if round % 2 == 0 {
            ("pull", "lat-pull")
        } else {
            ("push", "lat-push")
        };
        let d = digest(1, round);
        let t0 = Instant::now();
        emu.publish(PROJECT, topic, &insert(&repo("lat"), "v1", &d), json!({}))
            .await;
        let done = rig
            .fake
            .wait_for_request(LIMIT, |r| patch_with(r, "lat", &d))
            .await;
        let took = t0.elapsed();
        assert!(done.is_some(), "{how} round {round}: no PATCH");
        if round >= 2 {
            times.entry(how).or_default().push(took.as_secs_f64() * 1e3);
        }
    }
    times
}

/// Messages/s acked by a fresh process at `outstanding`, every PATCH
/// 1 ms slower.
async fn throughput(
    emu: &Emulator,
    rig: &Rig,
    names: &[String],
    run: usize,
    outstanding: usize,
) -> f64 {
    let topic = format!("tp-{run}");
    let sub = format!("tp-{run}");
    emu.create_topic(PROJECT, &topic).await;
    emu.create_pull_subscription(PROJECT, &sub, &topic, 10)
        .await;
    let full = format!("projects/{PROJECT}/subscriptions/{sub}");
    let max = outstanding.to_string();
    let mut p = rig.serve(emu, &full, &["--pull-max-outstanding", &max]);
    p.wait_ready(LIMIT).await;
    let data: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, n)| insert(&repo(n), "v1", &digest(2 + run as u64, i as u64)))
        .collect();
    let n = data.len() as f64;
    let t0 = Instant::now();
    publish_all(emu, &topic, &data).await;
    let done = eventually(LIMIT, || async {
        (acked(&p.metrics().await, &full) >= n).then(|| t0.elapsed())
    })
    .await;
    let Some(done) = done else {
        panic!("{n} messages not acked:\n{}", p.metrics().await);
    };
    p.terminate();
    let _ = p.wait_exit(Duration::from_secs(30));
    n / done.as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo test --benches` runs bench binaries without `--bench`.
    let quick = args.iter().any(|a| a == "--quick") || !args.iter().any(|a| a == "--bench");
    let (rounds, n, reps) = if quick { (2, 10, 1) } else { (20, 300, 3) };
    support::init();
    let Some(emu) = Emulator::start().await else {
        return;
    };
    let load_before = loadavg();
    let started = Instant::now();

    let lat = latency(&emu, rounds).await;

    let names: Vec<String> = (0..n).map(|i| format!("w{i}")).collect();
    let rig = Rig::new(&names).await;
    rig.fake.fail_next(
        FaultRule {
            times: usize::MAX,
            delay: Some(Duration::from_millis(1)),
            ..FaultRule::default()
        }
        .verb("patch")
        .resource("deployments"),
    );
    let mut rates: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    let mut run = 0;
    for _ in 0..reps {
        for outstanding in [64, 1] {
            let r = throughput(&emu, &rig, &names, run, outstanding).await;
            eprintln!("run {run}: --pull-max-outstanding {outstanding}: {r:.0} messages/s");
            rates.entry(outstanding).or_default().push(r);
            run += 1;
        }
    }

    let (pull, push) = (median(&lat["pull"]), median(&lat["push"]));
    let (r64, r1) = (median(&rates[&64]), median(&rates[&1]));
    let mut out = String::new();
    out += &format!(
        "pull bench ({}): load average {load_before} before, {} after, {:.0} s\n\n",
        if quick { "quick" } else { "full" },
        loadavg(),
        started.elapsed().as_secs_f64()
    );
    out += "| what | pull | push / baseline | ratio |\n| --- | --- | --- | --- |\n";
    out += &format!(
        "| publish → PATCH answered, median of {rounds} alternating rounds each | {pull:.1} ms | push {push:.1} ms | pull ÷ push {:.2}× |\n",
        pull / push
    );
    out += &format!(
        "| messages/s acked, {n} messages, PATCH +1 ms, median of {reps} alternating runs | {r64:.0} at `--pull-max-outstanding 64` | {r1:.0} at 1 | {:.1}× |\n",
        r64 / r1
    );
    out += &format!("\nall: latency ms {lat:?}; messages/s {rates:?}\n");
    println!("{out}");
    if !quick {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-results");
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join("pull.md"), &out);
    }
}
