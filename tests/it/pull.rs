//! Pub/Sub pull (issue 24): `serve --pull-subscription` against the real
//! emulator (`PUBSUB_EMULATOR_HOST`), restarting workloads on the fake API
//! server (for its faults) or a real one. Each test starts one emulator;
//! without it they print `SKIPPED: …` unless `PUSHROLL_REQUIRE_EMULATOR=1`.
//! "Nothing left unacked" is read from the emulator itself once pushroll
//! has stopped: the subscription is switched to push to a recorder, which
//! ends the streams the emulator keeps serving for gone clients, and
//! watched for [`REDELIVERY_WINDOW`] ([`Emulator::unacked_within`]; a REST
//! pull cannot tell, see "Dead streams" there). The SIGTERM test proves in
//! each run that this check sees a message that was not acked.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fake_apiserver::{FaultRule, RequestRecord};
use serde_json::json;

use crate::pubsub::emulator::{Emulator, REDELIVERY_WINDOW};
use crate::support::cluster::{Cluster, workload};
use crate::support::rig::FakeRig;
use crate::support::*;

const TOPIC: &str = "gcr";
const SUB: &str = "gcr-pull";
const CONTAINER: &str = "app";
const ANNOTATION: &str = "digest.pushroll.io/app";
const LIMIT: Duration = Duration::from_secs(30);

fn digest(a: u64, b: u64) -> String {
    format!(
        "sha256:{:064x}",
        (u128::from(a + 1) << 64) | u128::from(b + 1)
    )
}

fn sub_name(project: &str) -> String {
    format!("projects/{project}/subscriptions/{SUB}")
}

/// A Deployment `ns/name` running `repo:v1`.
#[derive(Debug, Clone)]
struct W {
    ns: String,
    name: String,
    repo: String,
}

fn ws(n: usize, base: &str, one_repo: bool) -> Vec<W> {
    (0..n)
        .map(|i| W {
            ns: format!("{base}-{}", i % 2),
            name: format!("w{i}"),
            repo: if one_repo {
                format!("{REPO}-{base}")
            } else {
                format!("{REPO}-{base}-{i}")
            },
        })
        .collect()
}

/// The fake cluster with the workloads, their index file, and the serve
/// ServiceAccount's kubeconfig.
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
            .map(|w| (w.ns.as_str(), w.name.as_str(), format!("{}:v1", w.repo)))
            .collect();
        Rig(FakeRig::new(CONTAINER, &workloads).await)
    }

    /// `serve --pull-subscription` of `project`'s subscription, through
    /// the emulator; `/push` beside it with `--auth none`.
    fn serve(&self, emu: &Emulator, project: &str, extra: &[&str]) -> Pushroll {
        let index = self.index_file();
        let sub = sub_name(project);
        let mut args = vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--auth",
            "none",
            "--index-file",
            index.to_str().unwrap(),
            "--pull-subscription",
            &sub,
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

    /// The digests of `w`'s successful PATCHes, in order.
    fn patched(&self, w: &W) -> Vec<String> {
        self.fake
            .requests()
            .iter()
            .filter(|r| is_patch_of(r, w) && r.status == 200)
            .filter_map(patch_digest)
            .collect()
    }

    async fn current(&self, w: &W) -> Option<String> {
        let obj = self.c.get("Deployment", &w.ns, &w.name).await?;
        obj["spec"]["template"]["metadata"]["annotations"][ANNOTATION]
            .as_str()
            .map(str::to_owned)
    }

    /// Waits until every workload of `ws` carries `d`.
    async fn wait_all_on(&self, ws: &[W], d: &str, limit: Duration) -> bool {
        eventually(limit, || async {
            for w in ws {
                if self.current(w).await.as_deref() != Some(d) {
                    return None;
                }
            }
            Some(())
        })
        .await
        .is_some()
    }

    fn patch_rule(&self, w: &W, rule: FaultRule) {
        self.fake.fail_next(
            rule.verb("patch")
                .resource("deployments")
                .namespace(&w.ns)
                .name(&w.name),
        );
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

async fn topic_and_subscription(emu: &Emulator, project: &str) {
    emu.create_topic(project, TOPIC).await;
    emu.create_pull_subscription(project, SUB, TOPIC, 10).await;
}

/// `pushroll_pull_messages_total{subscription,result}`.
fn pulled(metrics: &str, project: &str, result: &str) -> f64 {
    metric(
        metrics,
        &format!(
            "pushroll_pull_messages_total{{subscription=\"{}\",result=\"{result}\"}}",
            sub_name(project)
        ),
    )
}

/// Waits until `p` counts `want` pulled messages of `result`.
async fn wait_pulled(p: &Pushroll, project: &str, result: &str, want: f64) {
    let got = eventually(LIMIT, || async {
        let m = p.metrics().await;
        (pulled(&m, project, result) >= want).then_some(())
    })
    .await;
    assert!(
        got.is_some(),
        "{result} never reached {want}: {}\n{}",
        p.metrics().await,
        p.logs().join("\n")
    );
}

/// SIGTERM, and the process exits 0.
fn stop(p: &mut Pushroll) {
    p.terminate();
    let status = p.wait_exit(LIMIT).expect("pushroll exits after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", p.logs().join("\n"));
}

/// Nothing is left unacked in `subscriptions` (full names): nothing is
/// redelivered within [`REDELIVERY_WINDOW`], watched whole.
async fn assert_nothing_unacked(emu: &Emulator, subscriptions: &[String]) {
    let left = emu.unacked_within(subscriptions, REDELIVERY_WINDOW).await;
    assert!(left.is_empty(), "left unacked: {left:?}");
}

/// SIGTERM, exit 0, then nothing is left in the subscription.
async fn stop_and_assert_all_acked(p: &mut Pushroll, emu: &Emulator, project: &str) {
    stop(p);
    assert_nothing_unacked(emu, &[sub_name(project)]).await;
}

/// Must show 1 and 6: a publish patches each workload once, the message
/// is then gone; malformed data, DELETEs and digest-only messages are
/// acked, counted, and never redelivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_patches_each_workload_once_and_the_rest_is_acked_and_counted() {
    let Some(emu) = Emulator::start().await else {
        return;
    };
    let project = "pull-once";
    topic_and_subscription(&emu, project).await;
    let ws = ws(2, "once", true);
    let rig = Rig::new(&ws).await;
    let mut p = rig.serve(&emu, project, &[]);
    p.wait_ready(LIMIT).await;
    let repo = &ws[0].repo;
    let d = digest(1, 1);
    let id = emu
        .publish(project, TOPIC, &insert(repo, "v1", &d), json!({}))
        .await;
    assert!(
        rig.wait_all_on(&ws, &d, LIMIT).await,
        "{}",
        p.logs().join("\n")
    );
    wait_pulled(&p, project, "acked", 1.0).await;
    // The one push log line, the same as /push writes, with the message id.
    let line = p
        .log_line(LIMIT, |l| l.contains(&id) && l.contains("\"push\""))
        .await
        .expect("a push log line");
    assert!(line.contains("\"outcome\":\"restarted\""), "{line}");
    // What cannot be a notification, and what is one asking for nothing.
    for data in [
        "not json at all".to_owned(),
        json!({"hello": "world"}).to_string(),
        json!({"action": "DELETE", "tag": format!("{repo}:v1")}).to_string(),
        json!({"action": "INSERT", "digest": format!("{repo}@{}", digest(1, 2))}).to_string(),
    ] {
        emu.publish(project, TOPIC, &data, json!({})).await;
    }
    wait_pulled(&p, project, "malformed", 2.0).await;
    wait_pulled(&p, project, "acked", 3.0).await;
    let m = p.metrics().await;
    assert_eq!(pulled(&m, project, "nacked"), 0.0, "{m}");
    for reason in ["delete", "untagged-digest", "not-a-notification"] {
        let series = format!("pushroll_ignored_total{{source=\"pubsub\",reason=\"{reason}\"}}");
        assert!(metric(&m, &series) >= 1.0, "{series}: {m}");
    }
    assert_eq!(
        metric(
            &m,
            &format!(
                "pushroll_pull_streams_open{{subscription=\"{}\"}}",
                sub_name(project)
            )
        ),
        1.0
    );
    // Nothing comes back while pushroll runs on (an unacked message is
    // redelivered 10 s after its lease ends; the client extends leases of
    // messages in hand only).
    stop_and_assert_all_acked(&mut p, &emu, project).await;
    for w in &ws {
        assert_eq!(rig.patched(w), vec![d.clone()], "{w:?}");
    }
    let lines = p
        .logs()
        .iter()
        .filter(|l| l.contains("\"push\"") && l.contains("\"source\":\"pubsub\""))
        .count();
    assert_eq!(
        lines,
        5,
        "one log line per message:\n{}",
        p.logs().join("\n")
    );
}

/// Must show 2: PATCH faults (500, three times in a row, five rounds):
/// every workload ends on each round's digest, patched once with it, and
/// nothing is left unacked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_faults_in_rounds_end_on_the_digest_with_nothing_unacked() {
    let Some(emu) = Emulator::start().await else {
        return;
    };
    let project = "pull-faults";
    topic_and_subscription(&emu, project).await;
    let ws = ws(2, "faults", true);
    let rig = Rig::new(&ws).await;
    let mut p = rig.serve(&emu, project, &[]);
    p.wait_ready(LIMIT).await;
    let mut digests = Vec::new();
    for round in 0..5 {
        for w in &ws {
            rig.patch_rule(
                w,
                FaultRule {
                    times: 3,
                    ..FaultRule::status(500)
                },
            );
        }
        let d = digest(2, round);
        emu.publish(project, TOPIC, &insert(&ws[0].repo, "v1", &d), json!({}))
            .await;
        assert!(
            rig.wait_all_on(&ws, &d, LIMIT).await,
            "round {round}: not every workload on {d}:\n{}",
            p.logs().join("\n")
        );
        wait_pulled(&p, project, "acked", (round + 1) as f64).await;
        digests.push(d);
    }
    let failed = rig
        .fake
        .requests()
        .iter()
        .filter(|r| r.verb == "patch" && r.status == 500)
        .count();
    assert_eq!(failed, 5 * 2 * 3, "every injected fault was hit");
    let m = p.metrics().await;
    eprintln!(
        "patch faults: {} nacked, {} acked over 5 rounds",
        pulled(&m, project, "nacked"),
        pulled(&m, project, "acked")
    );
    stop_and_assert_all_acked(&mut p, &emu, project).await;
    for w in &ws {
        assert_eq!(rig.patched(w), digests, "{w:?}: once per digest, in order");
    }
}

/// Must show 3: SIGKILL in the middle of the work, five rounds: the
/// message comes back, every workload ends on the digest, patched at most
/// twice with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_work_the_message_comes_back_and_finishes() {
    let Some(emu) = Emulator::start().await else {
        return;
    };
    let ws = ws(2, "kill", true);
    let rig = Rig::new(&ws).await;
    let mut subs = Vec::new();
    for round in 0..5 {
        // A subscription per round: the emulator keeps a stream that a
        // client cancelled (SIGTERM's drain) registered, and may hand it
        // messages that then wait out their deadline.
        let project = &format!("pull-kill-{round}");
        topic_and_subscription(&emu, project).await;
        let mut p = rig.serve(&emu, project, &[]);
        p.wait_ready(LIMIT).await;
        // The second workload's PATCH hangs: the first is done, the
        // message is in hand.
        rig.patch_rule(&ws[1], FaultRule::delay(Duration::from_secs(20)));
        let d = digest(3, round);
        emu.publish(project, TOPIC, &insert(&ws[0].repo, "v1", &d), json!({}))
            .await;
        let in_work = eventually(LIMIT, || async {
            (metric(&p.metrics().await, "pushroll_inflight_pushes") >= 1.0
                && rig.current(&ws[0]).await.as_deref() == Some(d.as_str()))
            .then_some(())
        })
        .await;
        assert!(
            in_work.is_some(),
            "round {round}: never in the middle of the work"
        );
        p.kill();
        rig.fake.clear_faults();
        // The emulator would keep serving the killed process's stream and
        // could hand it the message at every lease expiry (seen: none of 9
        // reached the new receiver); real Pub/Sub ends that stream.
        emu.end_streams(project, SUB).await;
        let mut q = rig.serve(&emu, project, &[]);
        assert!(
            rig.wait_all_on(&ws, &d, Duration::from_secs(90)).await,
            "round {round}: the message did not come back:\n{}",
            q.logs().join("\n")
        );
        wait_pulled(&q, project, "acked", 1.0).await;
        for w in &ws {
            let n = rig.patched(w).iter().filter(|x| **x == d).count();
            assert!(
                (1..=2).contains(&n),
                "round {round}: {w:?} patched {n} times with {d}"
            );
        }
        stop(&mut q);
        subs.push(sub_name(project));
    }
    // Each round's message was acked once it came back (one window for
    // all five subscriptions).
    assert_nothing_unacked(&emu, &subs).await;
}

/// Must show 4: SIGTERM while a message is being worked on, three
/// rounds: the work finishes, the message is acked, the process exits 0,
/// and nothing is redelivered. Two controls in the same run, whose
/// messages are never acked (SIGKILL mid-work; SIGTERM with the work
/// outlasting `--shutdown-timeout`), must be redelivered within the same
/// window by the same check: it can see a lost ack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_and_acks_the_messages_in_hand_then_exits_0() {
    let Some(emu) = Emulator::start().await else {
        return;
    };
    let ws = ws(2, "term", true);
    let rig = Rig::new(&ws).await;
    // A subscription per round: a gone process's stream stays served by
    // the emulator and would take the next round's message.
    let mut drained = Vec::new();
    for round in 0..3 {
        let project = &format!("pull-term-{round}");
        topic_and_subscription(&emu, project).await;
        let mut p = rig.serve(&emu, project, &[]);
        p.wait_ready(LIMIT).await;
        rig.patch_rule(&ws[1], FaultRule::delay(Duration::from_secs(2)));
        let d = digest(4, round);
        emu.publish(project, TOPIC, &insert(&ws[0].repo, "v1", &d), json!({}))
            .await;
        in_hand(&p, &rig, &ws[0], &d, round).await;
        stop(&mut p);
        let logs = p.logs().join("\n");
        assert!(logs.contains("pull: drained"), "round {round}: {logs}");
        for w in &ws {
            let n = rig.patched(w).iter().filter(|x| **x == d).count();
            assert_eq!(n, 1, "round {round}: {w:?} patched {n} times with {d}");
        }
        drained.push(sub_name(project));
    }
    // The controls: the second workload's PATCH hangs, the message is in
    // hand, and the process goes without acking it. Last, so that their
    // messages are in a fresh lease of a dead stream when the check starts.
    let mut controls = BTreeMap::new();
    for (i, how) in ["sigkill", "sigterm-past-shutdown-timeout"]
        .iter()
        .enumerate()
    {
        let project = &format!("pull-term-control-{i}");
        topic_and_subscription(&emu, project).await;
        let mut p = rig.serve(&emu, project, &["--shutdown-timeout", "1s"]);
        p.wait_ready(LIMIT).await;
        rig.patch_rule(&ws[1], FaultRule::delay(Duration::from_secs(60)));
        let d = digest(4, 10 + i as u64);
        let id = emu
            .publish(project, TOPIC, &insert(&ws[0].repo, "v1", &d), json!({}))
            .await;
        in_hand(&p, &rig, &ws[0], &d, 10 + i as u64).await;
        if i == 0 {
            p.kill();
        } else {
            stop(&mut p);
            let logs = p.logs().join("\n");
            assert!(
                logs.contains("still in hand at the shutdown timeout"),
                "{logs}"
            );
        }
        controls.insert(sub_name(project), (*how, id));
    }
    rig.fake.clear_faults();
    let mut all = drained.clone();
    all.extend(controls.keys().cloned());
    let seen = emu.unacked_within(&all, REDELIVERY_WINDOW).await;
    eprintln!("redelivered within {REDELIVERY_WINDOW:?}: {seen:?}");
    for (sub, (how, id)) in &controls {
        let got: Vec<&String> = seen
            .get(sub)
            .into_iter()
            .flatten()
            .map(|(m, _)| m)
            .collect();
        assert_eq!(
            got,
            vec![id],
            "control {how}: its unacked message must come back"
        );
    }
    for sub in &drained {
        assert!(
            !seen.contains_key(sub),
            "redelivered after the drain: {seen:?}"
        );
    }
}

/// Waits until `p` holds the message of `d` mid-work: the first workload
/// is on it and a push is in flight.
async fn in_hand(p: &Pushroll, rig: &Rig, first: &W, d: &str, round: u64) {
    let got = eventually(LIMIT, || async {
        (metric(&p.metrics().await, "pushroll_inflight_pushes") >= 1.0
            && rig.current(first).await.as_deref() == Some(d))
        .then_some(())
    })
    .await;
    assert!(
        got.is_some(),
        "round {round}: never in the middle of the work:\n{}",
        p.logs().join("\n")
    );
}

/// Must show 5: two replicas share one subscription: 20 distinct pushes
/// (one image each), each workload patched once, and both replicas worked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_subscription() {
    let Some(emu) = Emulator::start().await else {
        return;
    };
    let project = "pull-share";
    topic_and_subscription(&emu, project).await;
    let ws = ws(20, "share", false);
    let rig = Rig::new(&ws).await;
    // Few messages each and a slow PATCH, so that one replica cannot
    // take everything in one response.
    let flags = ["--pull-max-outstanding", "2"];
    let mut a = rig.serve(&emu, project, &flags);
    let mut b = rig.serve(&emu, project, &flags);
    a.wait_ready(LIMIT).await;
    b.wait_ready(LIMIT).await;
    for w in &ws {
        rig.patch_rule(w, FaultRule::delay(Duration::from_millis(300)));
    }
    let mut want = Vec::new();
    for (i, w) in ws.iter().enumerate() {
        let d = digest(5, i as u64);
        emu.publish(project, TOPIC, &insert(&w.repo, "v1", &d), json!({}))
            .await;
        want.push(d);
    }
    for (w, d) in ws.iter().zip(&want) {
        assert!(
            rig.wait_all_on(std::slice::from_ref(w), d, Duration::from_secs(60))
                .await,
            "{w:?} not on {d}"
        );
    }
    let done = eventually(LIMIT, || async {
        let (ma, mb) = (a.metrics().await, b.metrics().await);
        let (na, nb) = (pulled(&ma, project, "acked"), pulled(&mb, project, "acked"));
        (na + nb >= 20.0).then_some((na, nb))
    })
    .await
    .expect("20 acks");
    eprintln!("two replicas: {} and {} messages acked", done.0, done.1);
    assert!(
        done.0 >= 1.0 && done.1 >= 1.0,
        "both replicas worked: {done:?}"
    );
    for (w, d) in ws.iter().zip(&want) {
        assert_eq!(rig.patched(w), vec![d.clone()], "{w:?}");
    }
    stop(&mut b);
    stop_and_assert_all_acked(&mut a, &emu, project).await;
}

/// Must show 7: the emulator stops: `/readyz` turns 503 within the ready
/// timeout (while `/healthz` stays 200: nothing is stuck); it comes back
/// by itself when the emulator returns, and a new publish is handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_emulator_and_recovers_by_itself() {
    let Some(mut emu) = Emulator::start().await else {
        return;
    };
    let project = "pull-outage";
    topic_and_subscription(&emu, project).await;
    let ws = ws(1, "outage", true);
    let rig = Rig::new(&ws).await;
    let mut p = rig.serve(&emu, project, &["--pull-ready-timeout", "2s"]);
    p.wait_ready(LIMIT).await;
    let client = http();
    let status = |path: &'static str| {
        let (client, url) = (client.clone(), p.url(path));
        async move { client.get(url).send().await.unwrap().status().as_u16() }
    };
    let open_series = format!(
        "pushroll_pull_streams_open{{subscription=\"{}\"}}",
        sub_name(project)
    );
    for round in 0..2u64 {
        emu.stop();
        let stopped = Instant::now();
        let not_ready = eventually(LIMIT, || async {
            (status("/readyz").await == 503).then_some(stopped.elapsed())
        })
        .await
        .expect("/readyz turns 503");
        // The timeout, plus at most one probe period (a quarter of it,
        // at least 250 ms) and its answer's wait (2 s).
        assert!(
            not_ready <= Duration::from_millis(2000 + 500 + 2000 + 1000),
            "round {round}: 503 after {not_ready:?}"
        );
        assert_eq!(status("/healthz").await, 200, "an outage is not stuck");
        assert_eq!(metric(&p.metrics().await, &open_series), 0.0);
        eprintln!("round {round}: /readyz 503 {not_ready:?} after the emulator stopped");
        emu.restart().await;
        topic_and_subscription(&emu, project).await;
        let back = Instant::now();
        p.wait_ready(LIMIT).await;
        let d = digest(7, round);
        emu.publish(project, TOPIC, &insert(&ws[0].repo, "v1", &d), json!({}))
            .await;
        assert!(
            rig.wait_all_on(&ws, &d, LIMIT).await,
            "round {round}: the publish after the outage was not handled:\n{}",
            p.logs().join("\n")
        );
        eprintln!(
            "round {round}: ready and handled {:?} after the emulator came back",
            back.elapsed()
        );
    }
    stop_and_assert_all_acked(&mut p, &emu, project).await;
}

/// Must show 8: a fleet. Two real API servers (two clusters), a serve
/// process in each with its own subscription on the one topic: one
/// publish rolls both clusters' workloads, and both messages are acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_of_two_clusters_each_with_its_subscription_rolls_on_one_publish() {
    let Some(emu) = Emulator::start().await else {
        return;
    };
    let Some(shared) = Cluster::real().await else {
        return;
    };
    let Some(private) = Cluster::real_private().await else {
        return;
    };
    let project = "pull-fleet";
    emu.create_topic(project, TOPIC).await;
    let repo = format!("{REPO}-fleet");
    let image = format!("{repo}:v1");
    let mut members = Vec::new();
    for (i, c) in [&shared, &private].into_iter().enumerate() {
        let sub = format!("pushroll-cluster-{i}");
        emu.create_pull_subscription(project, &sub, TOPIC, 60).await;
        let ns = c.ns("fleet");
        c.ensure_namespace(&ns).await;
        c.create(workload(
            "Deployment",
            &ns,
            "web",
            &[(CONTAINER, &image)],
            &[],
            json!({}),
        ))
        .await;
        let dir = tempfile::tempdir().unwrap();
        let index = dir.path().join("index.json");
        let doc = json!({"version": 1, "generatedAt": "2026-11-26T12:00:00Z", "images": {
            image.clone(): [{"kind": "Deployment", "namespace": ns, "name": "web", "containers": [CONTAINER]}]
        }});
        std::fs::write(&index, doc.to_string()).unwrap();
        let kubeconfig = c.serve_identity().await;
        let full = format!("projects/{project}/subscriptions/{sub}");
        let p = Pushroll::start_env(
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--auth",
                "none",
                "--index-file",
                index.to_str().unwrap(),
                "--pull-subscription",
                &full,
            ],
            &[
                ("KUBECONFIG", kubeconfig.to_string_lossy().into_owned()),
                ("PUBSUB_EMULATOR_HOST", emu.host()),
            ],
        );
        p.wait_ready(LIMIT).await;
        members.push((c, ns, sub, p, dir));
    }
    let d = digest(8, 0);
    emu.publish(project, TOPIC, &insert(&repo, "v1", &d), json!({}))
        .await;
    for (c, ns, sub, p, _) in &members {
        let on = eventually(LIMIT, || async {
            let w = c.get("Deployment", ns, "web").await?;
            (w["spec"]["template"]["metadata"]["annotations"][ANNOTATION] == d.as_str())
                .then_some(())
        })
        .await;
        assert!(on.is_some(), "{sub}: not rolled:\n{}", p.logs().join("\n"));
        let acked = eventually(LIMIT, || async {
            let m = p.metrics().await;
            let series = format!(
                "pushroll_pull_messages_total{{subscription=\"projects/{project}/subscriptions/{sub}\",result=\"acked\"}}"
            );
            (metric(&m, &series) == 1.0).then_some(())
        })
        .await;
        assert!(acked.is_some(), "{sub}: not acked");
    }
    let mut subs = Vec::new();
    for (_, _, sub, p, _) in &mut members {
        stop(p);
        subs.push(format!("projects/{project}/subscriptions/{sub}"));
    }
    assert_nothing_unacked(&emu, &subs).await;
}

/// Must show 9: with the simulated kubelet, publish → every pod Ready on
/// the pushed digest (pin mode), by pull and by push in the same run, the
/// same workload and the same emulator; beside `kubectl rollout restart`
/// alone. Prints the medians.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_to_every_pod_on_the_digest_by_pull_and_by_push() {
    use crate::support::indexer::start_serve_indexer_env;
    use crate::support::kubelet::*;
    let Some(c) = Cluster::real().await else {
        return;
    };
    let Some(emu) = Emulator::start().await else {
        return;
    };
    let ns = c.ns("pull-pods");
    let k = SimKubelet::start(&c, &[&ns], 3).await.unwrap();
    let image = format!("{REPO}:pods");
    k.push(&image, &crate::support::kubelet::digest('0'));
    c.create(pod_deployment(
        &ns,
        "web",
        &[("app", &image, "IfNotPresent")],
    ))
    .await;
    let limit = Duration::from_secs(60);
    k.wait_rollout("Deployment", &ns, "web", limit).await;
    let cm_ns = c.ns("pushroll");
    c.ensure_namespace(&cm_ns).await;
    let dir = tempfile::tempdir().unwrap();
    let (push_project, pull_project) = ("pods-push", "pods-pull");
    let pull_sub = sub_name(pull_project);
    let p = start_serve_indexer_env(
        &c,
        &cm_ns,
        &ns,
        &dir.path().join("index.json"),
        "pods-0",
        &["--mode", "pin", "--pull-subscription", &pull_sub],
        &[("PUBSUB_EMULATOR_HOST", emu.host())],
    );
    p.wait_ready(limit).await;
    emu.create_topic(push_project, TOPIC).await;
    emu.create_push_subscription(push_project, "gcr-push", TOPIC, &p.url("/push"), None, 10)
        .await;
    topic_and_subscription(&emu, pull_project).await;
    crate::support::rollout::push_until_found(
        &p,
        &insert(REPO, "pods", &crate::support::kubelet::digest('0')),
        1,
    )
    .await;
    let mut times: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    for round in 0..4u8 {
        let (how, project) = if round % 2 == 0 {
            ("pull", pull_project)
        } else {
            ("push", push_project)
        };
        let d = crate::support::kubelet::digest(char::from(b'1' + round));
        k.push(&image, &d);
        let t0 = Instant::now();
        emu.publish(project, TOPIC, &insert(REPO, "pods", &d), json!({}))
            .await;
        let pinned = format!("{image}@{d}");
        let done = watch_until(&c.client, "Deployment", &ns, "web", limit, |w| {
            w["spec"]["template"]["spec"]["containers"][0]["image"] == pinned.as_str()
                && rollout_status("Deployment", w) == Rollout::Complete
        })
        .await;
        assert!(
            done.is_ok(),
            "{how} round {round}: {:?}\n{}",
            done.err(),
            p.logs().join("\n")
        );
        assert_runs(&k, "Deployment", &ns, "web", 3, &d, how).await;
        times.entry(how).or_default().push(t0.elapsed());
    }
    for _ in 0..2 {
        let t0 = Instant::now();
        restart(&c.client, "Deployment", &ns, "web").await;
        let at = c.get("Deployment", &ns, "web").await.unwrap()["metadata"]["generation"].clone();
        let done = watch_until(&c.client, "Deployment", &ns, "web", limit, |w| {
            w["status"]["observedGeneration"] == at
                && rollout_status("Deployment", w) == Rollout::Complete
        })
        .await;
        assert!(done.is_ok());
        times
            .entry("kubectl rollout restart")
            .or_default()
            .push(t0.elapsed());
    }
    eprintln!("publish → every pod Ready on the digest (3 pods, pin mode): {times:?}");
    k.stop().await;
}
