//! Nothing lost, nothing doubled (issue 6): the real Pub/Sub emulator
//! pushes Artifact Registry notifications to a running `pushroll serve`,
//! which restarts workloads on the project's fake API server.
//!
//! `pushroll` runs with `--auth none` here: the emulator accepts an
//! `oidcToken` push config but sends no token at all (docs/pubsub-push.md),
//! so token verification cannot be exercised through it; `tests/it/auth.rs`
//! and `tests/it/load.rs` cover it with the test JWK set.
//!
//! The emulator is started per test (`pubsub/emulator.rs`). Without it the
//! tests print `SKIPPED: …` and pass, unless `PUSHROLL_REQUIRE_EMULATOR=1`.
//! Where the number of deliveries and their answers matter, the
//! subscription points at a recording pass-through (`pubsub/tap.rs`) in
//! front of pushroll; "no message left unacked" is checked with the
//! emulator's own state: the subscription is turned into a pull one and
//! pulled ([`Emulator::assert_all_acked`]).

pub mod emulator;
mod tap;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::support::rig::FakeRig;
use crate::support::*;
use emulator::Emulator;
use fake_apiserver::{FaultRule, RequestRecord};
use serde_json::{Value, json};
use tap::Tap;

const TOPIC: &str = "gcr";
const SUB: &str = "gcr-push";
const CONTAINER: &str = "app";
const ANNOTATION: &str = "digest.pushroll.io/app";

/// `sha256:` + 64 hex digits, distinct per `(a, b)`.
fn digest(a: u64, b: u64) -> String {
    format!(
        "sha256:{:064x}",
        (u128::from(a + 1) << 64) | u128::from(b + 1)
    )
}

/// A Deployment with one container `app` running `image`.
#[derive(Debug, Clone)]
struct W {
    ns: String,
    name: String,
    repo: String,
}

impl W {
    fn image(&self) -> String {
        format!("{}:v1", self.repo)
    }
}

/// The cluster, the index, and pushroll running as deploy/'s serve
/// ServiceAccount.
struct Rig(FakeRig);

impl std::ops::Deref for Rig {
    type Target = FakeRig;
    fn deref(&self) -> &FakeRig {
        &self.0
    }
}

impl Rig {
    async fn new(ws: &[W]) -> Rig {
        let workloads: Vec<(&str, &str, String)> = ws
            .iter()
            .map(|w| (w.ns.as_str(), w.name.as_str(), w.image()))
            .collect();
        Rig(FakeRig::new(CONTAINER, &workloads).await)
    }

    fn serve(&self, extra: &[&str]) -> Pushroll {
        let index = self.index_file();
        // `--auth none`: the emulator sends no OIDC token (see the module docs).
        let mut args = vec!["--index-file", index.to_str().unwrap()];
        args.extend_from_slice(extra);
        Pushroll::serve_open(&self.kubeconfig, &args)
    }

    /// The digests of `w`'s successful PATCHes, in order.
    fn patched(&self, w: &W) -> Vec<String> {
        successful_patches(&self.fake.requests(), w)
    }

    async fn current_digest(&self, w: &W) -> Option<String> {
        let obj = self.c.get("Deployment", &w.ns, &w.name).await.unwrap();
        obj["spec"]["template"]["metadata"]["annotations"][ANNOTATION]
            .as_str()
            .map(str::to_owned)
    }
}

fn is_patch_of(r: &RequestRecord, w: &W) -> bool {
    r.verb == "patch"
        && r.resource.as_deref() == Some("deployments")
        && r.namespace.as_deref() == Some(w.ns.as_str())
        && r.name.as_deref() == Some(w.name.as_str())
}

fn patch_digest(r: &RequestRecord) -> Option<String> {
    r.body.as_ref()?["spec"]["template"]["metadata"]["annotations"][ANNOTATION]
        .as_str()
        .map(str::to_owned)
}

fn successful_patches(log: &[RequestRecord], w: &W) -> Vec<String> {
    log.iter()
        .filter(|r| is_patch_of(r, w) && r.status == 200)
        .map(|r| patch_digest(r).unwrap_or_else(|| panic!("a patch without digest: {r:?}")))
        .collect()
}

/// The "push" log lines pushroll wrote for message `id`.
fn push_logs(p: &Pushroll, id: &str) -> Vec<Value> {
    p.logs()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "push" && v["message_id"] == id)
        .collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Waits until `rig`'s pushes are settled, then asserts from the emulator's
/// own state that the subscription holds nothing unacknowledged.
async fn assert_nothing_unacked(emu: &Emulator, project: &str, tap: Option<&Tap>) {
    if let Some(tap) = tap {
        assert!(
            tap.wait_quiet(Duration::from_millis(2500), Duration::from_secs(60))
                .await,
            "the emulator kept delivering"
        );
    }
    emu.assert_all_acked(project, SUB).await;
}

/// Emulator → pushroll, no intermediary: both subscription forms restart
/// the workloads, once per digest; the median publish→PATCH latency is
/// printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulator_pushes_restart_wrapped_and_unwrapped() {
    let Some(emu) = Emulator::start().await else {
        return;
    };
    let repo = format!("{REPO}-e2e");
    let ws: Vec<W> = ["e2e-prod", "e2e-staging"]
        .iter()
        .map(|ns| W {
            ns: ns.to_string(),
            name: "web".into(),
            repo: repo.clone(),
        })
        .collect();
    let rig = Rig::new(&ws).await;
    let p = rig.serve(&[]);
    let mut all_digests: Vec<String> = Vec::new();
    let mut ignored = Vec::new();
    let mut restarted = Vec::new();
    for (form, (project, no_wrapper)) in [("wrapped", None), ("unwrapped", Some(true))]
        .into_iter()
        .enumerate()
    {
        emu.create_topic(project, TOPIC).await;
        let sub = emu
            .create_push_subscription(project, SUB, TOPIC, &p.url("/push"), no_wrapper, 10)
            .await;
        assert_eq!(sub["pushConfig"]["pushEndpoint"], p.url("/push"), "{sub}");
        let attrs = json!({"source": "pushroll-test"});
        // A DELETE is acked (200, ignored) and never redelivered.
        let delete = json!({"action": "DELETE", "tag": format!("{repo}:v1")}).to_string();
        ignored.push((
            project,
            emu.publish(project, TOPIC, &delete, attrs.clone()).await,
        ));
        // Digests in sequence, each published once the previous one has
        // rolled both workloads, so "newest" is well defined.
        let mut latencies = Vec::new();
        for k in 0..12 {
            let d = digest(form as u64, k);
            let t0 = Instant::now();
            let id = emu
                .publish(project, TOPIC, &insert(&repo, "v1", &d), attrs.clone())
                .await;
            let mut first = None;
            for w in &ws {
                let rec = rig
                    .fake
                    .wait_for_request(Duration::from_secs(30), |r| {
                        is_patch_of(r, w) && r.status == 200 && patch_digest(r).as_ref() == Some(&d)
                    })
                    .await;
                assert!(
                    rec.is_some(),
                    "{project}: no PATCH of {w:?} to {d} within 30 s; pushroll:\n{}\nemulator:\n{}",
                    p.logs().join("\n"),
                    emu.output()
                );
                first.get_or_insert(t0.elapsed());
            }
            latencies.push(first.unwrap());
            restarted.push((project, id));
            all_digests.push(d);
        }
        eprintln!(
            "publish→PATCH ({project}): median {:?}, min {:?}, max {:?} over {} messages",
            median(latencies.clone()),
            latencies.iter().min().unwrap(),
            latencies.iter().max().unwrap(),
            latencies.len()
        );
    }
    for project in ["wrapped", "unwrapped"] {
        assert_nothing_unacked(&emu, project, None).await;
    }
    // Each workload rolled exactly once per digest, in publish order, and
    // carries the newest one.
    for w in &ws {
        assert_eq!(rig.patched(w), all_digests, "{w:?}");
        assert_eq!(
            rig.current_digest(w).await.as_ref(),
            all_digests.last(),
            "{w:?}"
        );
    }
    // pushroll saw the emulator's message ids (envelope, or header when
    // unwrapped) and answered each 200 once.
    for (_, id) in restarted.iter().chain(&ignored) {
        // The line is written after the response: wait for it to arrive.
        p.log_line(Duration::from_secs(5), |l| l.contains(id.as_str()))
            .await;
    }
    for (project, id) in &restarted {
        let lines = push_logs(&p, id);
        assert_eq!(lines.len(), 1, "{project} message {id}: {lines:?}");
        assert_eq!(lines[0]["status"], 200, "{:?}", lines[0]);
        assert_eq!(lines[0]["outcome"], "restarted", "{:?}", lines[0]);
    }
    for (project, id) in &ignored {
        let lines = push_logs(&p, id);
        assert_eq!(lines.len(), 1, "{project} DELETE {id}: {lines:?}");
        assert_eq!(lines[0]["outcome"], "ignored", "{:?}", lines[0]);
    }
}

/// The check behind "nothing left unacked" does see a message that was
/// never acked (so that its silence means something).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unacked_check_finds_a_refused_message() {
    let Some(emu) = Emulator::start().await else {
        return;
    };
    let tap = Tap::start("http://127.0.0.1:9").await;
    tap.set_refuse(true);
    emu.create_topic("control", TOPIC).await;
    emu.create_push_subscription(
        "control",
        SUB,
        TOPIC,
        &format!("{}/push", tap.url),
        None,
        10,
    )
    .await;
    let data = insert(REPO, "v1", DIGEST);
    let id = emu
        .publish("control", TOPIC, &data, json!({"source": "test"}))
        .await;
    // Refused twice: the emulator is redelivering it.
    assert!(
        tap.wait_until(Duration::from_secs(20), |log| log
            .iter()
            .filter(|d| d.message_id == id && d.answer.is_some())
            .count()
            >= 2)
            .await,
        "{:?}",
        tap.deliveries()
    );
    assert!(
        tap.of(&id)
            .iter()
            .all(|d| d.answer.as_ref().unwrap().0 == 503)
    );
    emu.stop_pushing("control", SUB).await;
    let left = emu
        .pull_within("control", SUB, emulator::ACK_CHECK_WINDOW)
        .await;
    let ids: BTreeSet<&str> = left
        .iter()
        .filter_map(|m| m["message"]["messageId"].as_str())
        .collect();
    assert_eq!(ids, BTreeSet::from([id.as_str()]), "{left:?}");
}

/// A tiny deterministic generator (splitmix64), so that the fault pattern
/// is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// 100 notifications (20 images × 5 digests in sequence) for 40 Deployments
/// in 4 namespaces, with 30% of PATCH attempts failing (500, 429, dropped
/// connection): after the emulator's redeliveries every workload carries the
/// newest digest of its image, was patched exactly once per digest, and no
/// message is left unacked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_percent_failing_patches_lose_and_double_nothing() {
    let Some(emu) = Emulator::start().await else {
        return;
    };
    const IMAGES: u64 = 20;
    const DIGESTS: u64 = 5;
    const FAIL: f64 = 0.3;
    // Image i runs in two Deployments, in two different namespaces.
    let chains: Vec<(String, Vec<W>)> = (0..IMAGES)
        .map(|i| {
            let repo = format!("us-east1-docker.pkg.dev/demo-project/apps/svc{i}");
            let ws = (0..2)
                .map(|j| W {
                    ns: format!("team-{}", (i + j) % 4),
                    name: format!("svc{i}-{j}"),
                    repo: repo.clone(),
                })
                .collect();
            (repo, ws)
        })
        .collect();
    let all: Vec<W> = chains.iter().flat_map(|(_, ws)| ws.clone()).collect();
    assert_eq!(all.len(), 40);
    let rig = Rig::new(&all).await;
    let p = rig.serve(&[]);
    let tap = Tap::start(&p.url("")).await;
    emu.create_topic("flaky", TOPIC).await;
    emu.create_push_subscription("flaky", SUB, TOPIC, &format!("{}/push", tap.url), None, 10)
        .await;
    rig.fake.clear_requests();

    // Before each digest is published, each of its workloads gets a
    // geometric number of failing PATCHes (each attempt fails with
    // probability 30%), rotating through the three kinds of failure.
    // Rules name one workload, so chains running side by side do not steal
    // each other's faults.
    let started = Instant::now();
    let run_chain = |i: u64, repo: String, ws: Vec<W>| {
        let (emu, rig, tap) = (&emu, &rig, &tap);
        async move {
            let mut rng = Rng(0x5eed_0000 + i);
            let mut injected = 0usize;
            let mut ids = Vec::new();
            for k in 0..DIGESTS {
                for w in &ws {
                    while injected < 1000 && rng.chance(FAIL) {
                        let base = match rng.next() % 3 {
                            0 => FaultRule::status(500),
                            1 => FaultRule::status(429),
                            _ => FaultRule::drop_connection(),
                        };
                        rig.fake.fail_next(
                            base.verb("patch")
                                .resource("deployments")
                                .namespace(&w.ns)
                                .name(&w.name),
                        );
                        injected += 1;
                    }
                }
                let id = emu
                    .publish(
                        "flaky",
                        TOPIC,
                        &insert(&repo, "v1", &digest(i, k)),
                        json!({"source": "test"}),
                    )
                    .await;
                assert!(
                    tap.wait_acked(&id, Duration::from_secs(120)).await,
                    "message {id} ({repo} step {k}) was never acked: {:?}",
                    tap.of(&id)
                );
                ids.push(id);
            }
            (injected, ids)
        }
    };
    let results = futures::future::join_all(
        chains
            .iter()
            .enumerate()
            .map(|(i, (repo, ws))| run_chain(i as u64, repo.clone(), ws.clone())),
    )
    .await;
    let took = started.elapsed();
    let injected: usize = results.iter().map(|(n, _)| n).sum();
    let ids: Vec<String> = results.into_iter().flat_map(|(_, ids)| ids).collect();
    assert_eq!(ids.len(), 100);
    assert_nothing_unacked(&emu, "flaky", Some(&tap)).await;

    let log = rig.fake.requests();
    // Every workload: exactly one successful PATCH per digest, in order,
    // and the newest digest in place.
    for (i, (_, ws)) in chains.iter().enumerate() {
        let want: Vec<String> = (0..DIGESTS).map(|k| digest(i as u64, k)).collect();
        for w in ws {
            assert_eq!(successful_patches(&log, w), want, "{w:?}");
            assert_eq!(rig.current_digest(w).await.as_ref(), want.last(), "{w:?}");
        }
    }
    // Every injected fault was hit (the rules are all used up), and no PATCH
    // failed for another reason (no 409 from racing duplicates).
    let attempts: Vec<&RequestRecord> = log
        .iter()
        .filter(|r| r.verb == "patch" && r.resource.as_deref() == Some("deployments"))
        .collect();
    let failed: Vec<u16> = attempts
        .iter()
        .filter(|r| r.status != 200)
        .map(|r| r.status)
        .collect();
    assert_eq!(failed.len(), injected, "failed PATCHes: {failed:?}");
    assert!(
        failed.iter().all(|s| [0, 429, 500].contains(s)),
        "{failed:?}"
    );
    let share = failed.len() as f64 / attempts.len() as f64;
    assert!(
        (0.2..=0.4).contains(&share),
        "{} of {} PATCHes failed",
        failed.len(),
        attempts.len()
    );
    // The emulator did the retrying: failures were answered 503 and
    // redelivered; every message was acked exactly once (200), nothing else.
    let deliveries = tap.deliveries();
    let mut acks: BTreeMap<&str, usize> = BTreeMap::new();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for d in &deliveries {
        let status = d.answer.as_ref().expect("answered").0;
        *statuses.entry(status).or_default() += 1;
        if status == 200 {
            *acks.entry(d.message_id.as_str()).or_default() += 1;
        }
    }
    assert!(
        statuses.keys().all(|s| [200, 503].contains(s)),
        "{statuses:?}"
    );
    assert!(statuses.get(&503).copied().unwrap_or(0) > 0, "{statuses:?}");
    for id in &ids {
        assert_eq!(acks.get(id.as_str()), Some(&1), "message {id}");
    }
    assert_eq!(acks.len(), ids.len(), "acks for unknown ids: {acks:?}");
    eprintln!(
        "30% failures: {} PATCH attempts, {} failed ({:.0}%), {} deliveries for 100 messages ({statuses:?}), done in {took:?}",
        attempts.len(),
        failed.len(),
        share * 100.0,
        deliveries.len()
    );
    let metrics = p.metrics().await;
    assert!(
        metric(
            &metrics,
            "pushroll_restarts_total{kind=\"Deployment\",result=\"restarted\"}"
        ) >= 200.0,
        "{metrics}"
    );
}

/// A handler held past the ack deadline: the emulator delivers the message
/// again while the first request is still running; the workload rolls once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_past_the_ack_deadline_rolls_once() {
    let Some(emu) = Emulator::start().await else {
        return;
    };
    let w = W {
        ns: "slow".into(),
        name: "api".into(),
        repo: format!("{REPO}-slow"),
    };
    let rig = Rig::new(std::slice::from_ref(&w)).await;
    // The first PATCH is held 12 s, past the 10 s ack deadline (the minimum);
    // pushroll's own limits are raised so that it waits for it.
    let hold = Duration::from_secs(12);
    let p = rig.serve(&["--api-timeout", "30s", "--request-timeout", "45s"]);
    let tap = Tap::start(&p.url("")).await;
    emu.create_topic("slow", TOPIC).await;
    emu.create_push_subscription("slow", SUB, TOPIC, &format!("{}/push", tap.url), None, 10)
        .await;
    rig.fake.fail_next(
        FaultRule::delay(hold)
            .verb("patch")
            .resource("deployments")
            .namespace(&w.ns)
            .name(&w.name),
    );
    let d = digest(7, 7);
    let id = emu
        .publish("slow", TOPIC, &insert(&w.repo, "v1", &d), json!({}))
        .await;
    // Two deliveries, both answered.
    assert!(
        tap.wait_until(Duration::from_secs(45), |log| {
            let mine: Vec<_> = log.iter().filter(|x| x.message_id == id).collect();
            mine.len() >= 2 && mine.iter().all(|x| x.answer.is_some())
        })
        .await,
        "{:?}\n{}",
        tap.deliveries(),
        p.logs().join("\n")
    );
    assert_nothing_unacked(&emu, "slow", Some(&tap)).await;
    let ds = tap.of(&id);
    eprintln!(
        "ack deadline: {} deliveries of {id}: {:?}",
        ds.len(),
        ds.iter()
            .map(|x| {
                let (status, body, at) = x.answer.as_ref().unwrap();
                (
                    x.arrived.duration_since(ds[0].arrived),
                    at.duration_since(ds[0].arrived),
                    *status,
                    body["workloads"][0]["result"].clone(),
                )
            })
            .collect::<Vec<_>>()
    );
    // The duplicate came while the first request was held.
    let first_answered = ds[0].answer.as_ref().unwrap().2;
    assert!(ds[1].arrived < first_answered, "{ds:?}");
    assert!(
        first_answered.duration_since(ds[0].arrived) >= hold,
        "{ds:?}"
    );
    // Both 200; one restarted, the other found it current.
    let mut results: Vec<String> = ds
        .iter()
        .map(|x| {
            let (status, body, _) = x.answer.as_ref().unwrap();
            assert_eq!(*status, 200, "{body}");
            body["workloads"][0]["result"].as_str().unwrap().to_owned()
        })
        .collect();
    results.sort();
    assert_eq!(results, ["already-current", "restarted"], "{ds:?}");
    // One successful PATCH; the held one was refused for its stale
    // resourceVersion (409) and re-planned as already current.
    assert_eq!(rig.patched(&w), std::slice::from_ref(&d));
    let statuses: Vec<u16> = rig
        .fake
        .requests()
        .iter()
        .filter(|r| is_patch_of(r, &w))
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [200, 409], "PATCH statuses in log order");
    let obj = rig.c.get("Deployment", &w.ns, &w.name).await.unwrap();
    assert_eq!(obj["metadata"]["generation"], 2, "rolled exactly once");
}

/// The API server is down for 10 s in the middle of a burst: pushroll
/// answers 503, the emulator redelivers, and everything completes once it
/// is back, each workload rolled once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_down_for_ten_seconds_during_a_burst() {
    let Some(emu) = Emulator::start().await else {
        return;
    };
    let ws: Vec<W> = (0..30)
        .map(|i| W {
            ns: format!("burst-{}", i % 3),
            name: format!("svc{i}"),
            repo: format!("us-east1-docker.pkg.dev/demo-project/burst/svc{i}"),
        })
        .collect();
    let rig = Rig::new(&ws).await;
    let p = rig.serve(&[]);
    let tap = Tap::start(&p.url("")).await;
    emu.create_topic("outage", TOPIC).await;
    emu.create_push_subscription("outage", SUB, TOPIC, &format!("{}/push", tap.url), None, 10)
        .await;
    let mut ids = Vec::new();
    let publish = |i: usize| {
        let (emu, w) = (&emu, &ws[i]);
        async move {
            emu.publish(
                "outage",
                TOPIC,
                &insert(&w.repo, "v1", &digest(i as u64, 0)),
                json!({}),
            )
            .await
        }
    };
    // The first few are acked; the rest of the burst is published into the
    // outage (published all at once, the emulator can deliver all 30 before
    // the outage begins).
    const BEFORE: usize = 3;
    for i in 0..BEFORE {
        ids.push(publish(i).await);
    }
    let acked = |log: &[tap::Delivery]| {
        log.iter()
            .filter(|d| matches!(d.answer, Some((200, _, _))))
            .count()
    };
    assert!(
        tap.wait_until(Duration::from_secs(30), |log| acked(log) >= BEFORE)
            .await
    );
    rig.fake.set_down(true);
    let down_at = Instant::now();
    for i in BEFORE..ws.len() {
        ids.push(publish(i).await);
    }
    let refused = |log: &[tap::Delivery]| {
        log.iter()
            .filter(|d| matches!(d.answer, Some((503, _, _))))
            .count()
    };
    assert!(
        tap.wait_until(Duration::from_secs(30), |log| refused(log) >= 5)
            .await,
        "no 503s while the API server is down: {:?}",
        tap.deliveries()
    );
    // The outage lasts 10 s (a scenario duration, not a readiness wait).
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(down_at.elapsed())).await;
    let acked_during = acked(&tap.deliveries());
    rig.fake.set_down(false);
    let up_at = Instant::now();
    for id in &ids {
        assert!(
            tap.wait_acked(id, Duration::from_secs(60)).await,
            "message {id} never acked after the API server came back: {:?}",
            tap.of(id)
        );
    }
    let recovered = up_at.elapsed();
    assert_nothing_unacked(&emu, "outage", Some(&tap)).await;
    let deliveries = tap.deliveries();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for d in &deliveries {
        *statuses.entry(d.answer.as_ref().unwrap().0).or_default() += 1;
    }
    assert!(
        statuses.keys().all(|s| [200, 503].contains(s)),
        "{statuses:?}"
    );
    for (i, w) in ws.iter().enumerate() {
        assert_eq!(rig.patched(w), [digest(i as u64, 0)], "{w:?}");
    }
    eprintln!(
        "outage: {:?} down, {} acked before/while down, {statuses:?} over {} deliveries, all acked {recovered:?} after it came back",
        up_at.duration_since(down_at),
        acked_during,
        deliveries.len()
    );
    let metrics = p.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("pushroll_pushes_total") && l.contains("503")),
        "{metrics}"
    );
}
