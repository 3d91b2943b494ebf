//! Pub/Sub pull (issue 24): `serve --pull-subscription` against the real
//! emulator (`PUBSUB_EMULATOR_HOST`), restarting workloads on the fake API
//! server (for its faults) or a real one. Each test starts one emulator;
//! without it they print `SKIPPED: …` unless `PUSHROLL_REQUIRE_EMULATOR=1`.
//! "Nothing left unacked" is read from the emulator itself once pushroll
//! has stopped: the subscription is pulled for a while
//! ([`Emulator::pull_within`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use fake_apiserver::{FakeApiServer, FaultRule, RequestRecord};
use serde_json::{Value, json};

use crate::pubsub::emulator::{ACK_CHECK_WINDOW, Emulator};
use crate::support::cluster::{Cluster, workload};
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
struct Rig {
    c: Cluster,
    fake: FakeApiServer,
    kubeconfig: PathBuf,
    index: tempfile::TempDir,
}

impl Rig {
    async fn new(ws: &[W]) -> Rig {
        let c = Cluster::fake().await;
        let fake = c.fake_server().unwrap().clone();
        let mut images: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for w in ws {
            let image = format!("{}:v1", w.repo);
            c.create(workload(
                "Deployment",
                &w.ns,
                &w.name,
                &[(CONTAINER, &image)],
                &[],
                json!({}),
            ))
            .await;
            images.entry(image).or_default().push(json!({
                "kind": "Deployment", "namespace": w.ns, "name": w.name, "containers": [CONTAINER]
            }));
        }
        let index = tempfile::tempdir().unwrap();
        let doc = json!({"version": 1, "generatedAt": "2026-11-26T12:00:00Z", "images": images});
        std::fs::write(index.path().join("index.json"), doc.to_string()).unwrap();
        let kubeconfig = c.serve_identity().await;
        Rig {
            c,
            fake,
            kubeconfig,
            index,
        }
    }

    /// `serve --pull-subscription` of `project`'s subscription, through
    /// the emulator; `/push` beside it with `--auth none`.
    fn serve(&self, emu: &Emulator, project: &str, extra: &[&str]) -> Pushroll {
        let index = self.index.path().join("index.json");
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

/// SIGTERM, exit 0, then nothing is left in the subscription.
async fn stop_and_assert_all_acked(p: &mut Pushroll, emu: &Emulator, project: &str) {
    p.terminate();
    let status = p.wait_exit(LIMIT).expect("pushroll exits after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", p.logs().join("\n"));
    let left = emu.pull_within(project, SUB, ACK_CHECK_WINDOW).await;
    assert!(left.is_empty(), "left unacked: {left:?}");
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
