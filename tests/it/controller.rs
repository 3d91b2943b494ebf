//! The controller's promises (contract: "The controller's promises"),
//! against the real kube-apiserver and kube-controller-manager with the
//! simulated kubelet: undo at most once and no oscillation after it,
//! people's rollbacks, restarts and edits never fought, waiting pushes of
//! two images side by side, a policy change on the pod template acted on
//! within a second, approvals used once, and durations that do not fit.
//! A state that must hold is watched for its whole window (polled every
//! [`POLL`], asserted at every poll). They skip without a real server (a
//! failure under CI).

use std::future::Future;
use std::time::{Duration, Instant};

use crate::support::cluster::Cluster;
use crate::support::indexer::*;
use crate::support::kubelet::*;
use crate::support::rollout::*;
use crate::support::*;
use futures::StreamExt as _;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::watcher;
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(60);
/// How often a watched state is looked at.
const POLL: Duration = Duration::from_millis(300);

/// A valid digest of its own for each number.
fn dg(n: u32) -> String {
    format!("sha256:{n:064x}")
}

fn annotation(w: &Value, key: &str) -> Option<String> {
    w["metadata"]["annotations"][key]
        .as_str()
        .map(str::to_owned)
}

fn template_annotation(w: &Value, key: &str) -> Option<String> {
    w["spec"]["template"]["metadata"]["annotations"][key]
        .as_str()
        .map(str::to_owned)
}

fn template_digest(w: &Value, container: &str) -> Option<String> {
    template_annotation(w, &format!("digest.pushroll.io/{container}"))
}

fn image_of(w: &Value, container: &str) -> String {
    w["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == container)
        .and_then(|c| c["image"].as_str())
        .unwrap_or_else(|| panic!("no container {container} in {w}"))
        .to_owned()
}

fn revision(w: &Value) -> Option<String> {
    annotation(w, "deployment.kubernetes.io/revision")
}

fn generation(w: &Value) -> i64 {
    w["metadata"]["generation"].as_i64().unwrap_or(0)
}

async fn workload(c: &Cluster, ns: &str, name: &str) -> Value {
    c.get("Deployment", ns, name)
        .await
        .expect("the workload exists")
}

/// The waiting pushes on a workload (`pushroll.io/pending`, a list).
fn waiting(w: &Value) -> Vec<Value> {
    match annotation(w, "pushroll.io/pending") {
        None => Vec::new(),
        Some(p) => match serde_json::from_str(&p).unwrap() {
            Value::Array(list) => list,
            other => panic!("pushroll.io/pending is not a list: {other}"),
        },
    }
}

/// The Events `reason` on `name` whose message names `digest`.
async fn events_naming(c: &Cluster, ns: &str, name: &str, reason: &str, digest: &str) -> usize {
    events(c, ns, name, reason)
        .await
        .iter()
        .filter(|e| e["message"].as_str().unwrap_or_default().contains(digest))
        .count()
}

/// Waits for an Event `reason` on `name` naming `digest`.
async fn wait_event_naming(
    c: &Cluster,
    p: &Pushroll,
    ns: &str,
    name: &str,
    reason: &str,
    digest: &str,
    limit: Duration,
) {
    let seen = eventually(limit, || async {
        (events_naming(c, ns, name, reason, digest).await > 0).then_some(())
    })
    .await;
    if seen.is_none() {
        panic!(
            "no {reason} Event naming {digest} on {ns}/{name} within {limit:?}\n{:#}\n{}",
            workload(c, ns, name).await,
            p.logs().join("\n")
        );
    }
}

/// Runs `check` every [`POLL`] for `window` (at least once more at its
/// end): `check` asserts what must hold throughout.
async fn hold_for<F, Fut>(window: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let end = Instant::now() + window;
    loop {
        check().await;
        if Instant::now() >= end {
            return;
        }
        tokio::time::sleep(POLL.min(end.saturating_duration_since(Instant::now()))).await;
    }
}

/// Waits until the Deployment controller has seen the workload's current
/// generation (and so has numbered its revision).
async fn observed(c: &Cluster, ns: &str, name: &str) -> Value {
    eventually(Duration::from_secs(30), || async {
        let w = workload(c, ns, name).await;
        (w["status"]["observedGeneration"].as_i64().unwrap_or(0) >= generation(&w)).then_some(w)
    })
    .await
    .unwrap_or_else(|| panic!("{name}: the controller never observed its generation"))
}

/// Whether kubectl runs; under CI (`PUSHROLL_REQUIRE_KUBECTL=1`) its
/// absence is a failure.
fn kubectl_present() -> bool {
    let present = std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        present || std::env::var("PUSHROLL_REQUIRE_KUBECTL").as_deref() != Ok("1"),
        "PUSHROLL_REQUIRE_KUBECTL=1 but kubectl is not on PATH"
    );
    if !present {
        eprintln!("SKIPPED: kubectl is not on PATH");
    }
    present
}

/// `kubectl ARGS…` as a person runs it against the real server
/// (`$PUSHROLL_REAL_KUBECONFIG`); its stdout. Fails the test on an error.
async fn kubectl(c: &Cluster, args: &[&str]) -> String {
    let kubeconfig = c.kubeconfig.clone();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let cache = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--cache-dir")
            .arg(cache.path())
            .args(&args)
            .env_remove("KUBECONFIG")
            .output()
            .expect("running kubectl");
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .unwrap()
}

fn cli(c: &Cluster, args: &[&str]) -> (bool, String, String) {
    let (status, out, err) =
        Pushroll::run_within(args, &kubeconfig_env(c), Duration::from_secs(30));
    (status.success(), out, err)
}

/// A pin-mode Deployment that asks for undo, `replicas` pods of `image`.
fn pinned_with_undo(ns: &str, name: &str, image: &str, replicas: i64, deadline: i64) -> Value {
    let mut w = pod_deployment(ns, name, &[("app", image, "IfNotPresent")]);
    w["spec"]["replicas"] = json!(replicas);
    w["spec"]["progressDeadlineSeconds"] = json!(deadline);
    w["metadata"]["annotations"] =
        json!({"pushroll.io/mode": "pin", "pushroll.io/on-failure": "undo"});
    w
}

/// Must show: five rounds on one workload, each a good push that completes
/// and a crashing one that fails and is undone; after every undo, for
/// three progress deadlines, the template, the Deployment's revision and
/// the failed record never change, the undo is recorded once, and the good
/// digest is never recorded as failed (no oscillation, no second undo).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undo_soak_five_rounds_never_oscillates() {
    let Some((c, ns, k)) = real_with_kubelet("soak", 2).await else {
        return;
    };
    let started = Instant::now();
    let image = format!("{REPO}:stable");
    k.push(&image, &dg(0x100));
    c.create(pinned_with_undo(&ns, "soak", &image, 2, 10)).await;
    k.wait_rollout("Deployment", &ns, "soak", LIMIT).await;
    let (p, _) = serve_indexer(&c, &ns, "soak-0", &[]).await;
    let window = Duration::from_secs(30); // 3 × progressDeadlineSeconds
    for round in 0..5u32 {
        let (good, bad) = (dg(0x10 + round), dg(0x20 + round));
        k.push(&image, &good);
        let push = wrapped(
            &insert(REPO, "stable", &good),
            &format!("good-{round}"),
            SUBSCRIPTION,
        );
        let body = push_until_found(&p, &push, 1).await;
        assert_eq!(body["workloads"][0]["result"], "restarted", "{body}");
        wait_event_naming(&c, &p, &ns, "soak", "PushRolloutComplete", &good, LIMIT).await;
        assert_runs(&k, "Deployment", &ns, "soak", 2, &good, "the good push").await;

        k.push(&image, &bad);
        k.crash(&bad);
        let push = wrapped(
            &insert(REPO, "stable", &bad),
            &format!("bad-{round}"),
            SUBSCRIPTION,
        );
        let (status, body) = post(&http(), &p, push).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["workloads"][0]["result"], "restarted", "{body}");
        wait_event_naming(&c, &p, &ns, "soak", "PushRolloutFailed", &bad, LIMIT).await;
        wait_event_naming(
            &c,
            &p,
            &ns,
            "soak",
            "PushRolloutUndone",
            &bad,
            Duration::from_secs(20),
        )
        .await;
        let undone = Instant::now();
        // The state the undo left, once the Deployment controller has
        // numbered the revision it brought back.
        let put_back = observed(&c, &ns, "soak").await;
        assert_eq!(
            image_of(&put_back, "app"),
            format!("{image}@{good}"),
            "round {round}: the good template is back"
        );
        assert_eq!(
            annotation(&put_back, "failed.pushroll.io/app").as_deref(),
            Some(bad.as_str()),
            "round {round}"
        );
        let template = put_back["spec"]["template"]["metadata"]["annotations"].clone();
        let rev = revision(&put_back);
        assert!(rev.is_some(), "{put_back}");
        hold_for(window, || async {
            let w = workload(&c, &ns, "soak").await;
            let at = undone.elapsed();
            assert_eq!(
                image_of(&w, "app"),
                format!("{image}@{good}"),
                "round {round}, {at:?} after the undo: the image changed"
            );
            assert_eq!(
                w["spec"]["template"]["metadata"]["annotations"], template,
                "round {round}, {at:?} after the undo: the template's annotations changed"
            );
            assert_eq!(
                revision(&w),
                rev,
                "round {round}, {at:?} after the undo: rolled again"
            );
            assert_eq!(
                annotation(&w, "failed.pushroll.io/app").as_deref(),
                Some(bad.as_str()),
                "round {round}, {at:?} after the undo: the failed record changed (the good digest must never be recorded)"
            );
            assert_eq!(
                events_naming(&c, &ns, "soak", "PushRolloutUndone", &bad).await,
                1,
                "round {round}, {at:?} after the undo: undone once"
            );
            assert_eq!(
                events_naming(&c, &ns, "soak", "PushRolloutFailed", &bad).await,
                1,
                "round {round}"
            );
            for reason in ["PushRolloutFailed", "PushRolloutUndone"] {
                assert_eq!(
                    events_naming(&c, &ns, "soak", reason, &good).await,
                    0,
                    "round {round}, {at:?} after the undo: {reason} for the good digest"
                );
            }
        })
        .await;
        k.wait_rollout("Deployment", &ns, "soak", LIMIT).await;
        assert_runs(&k, "Deployment", &ns, "soak", 2, &good, "after the undo").await;
        // The bad push, redelivered: refused, nothing written.
        let (_, body) = post(
            &http(),
            &p,
            wrapped(
                &insert(REPO, "stable", &bad),
                &format!("bad-{round}"),
                SUBSCRIPTION,
            ),
        )
        .await;
        assert_eq!(body["workloads"][0]["result"], "refused", "{body}");
        eprintln!("undo soak: round {round} done at {:?}", started.elapsed());
    }
    assert_eq!(
        metric(
            &p.metrics().await,
            "pushroll_policy_decisions_total{result=\"undone\"}"
        ),
        5.0
    );
    eprintln!("undo soak: 5 rounds in {:?}", started.elapsed());
    k.stop().await;
}

/// What a person's change must keep for the whole window: the template
/// they brought, no failure or undo reported, no digest recorded as failed,
/// and nothing reported about the abandoned push's digest.
async fn left_alone(c: &Cluster, ns: &str, name: &str, template: &Value, abandoned: Option<&str>) {
    let w = workload(c, ns, name).await;
    assert_eq!(
        &w["spec"]["template"], template,
        "{name}: the person's template was changed"
    );
    assert_eq!(
        annotation(&w, "failed.pushroll.io/app"),
        None,
        "{name}: a digest was recorded as failed"
    );
    for reason in ["PushRolloutFailed", "PushRolloutUndone"] {
        let found = events(c, ns, name, reason).await;
        assert!(found.is_empty(), "{name}: {reason}: {found:#?}");
    }
    if let Some(d) = abandoned {
        for reason in ["PushRolloutComplete", "PushImageStale"] {
            assert_eq!(
                events_naming(c, ns, name, reason, d).await,
                0,
                "{name}: {reason} for the abandoned push"
            );
        }
    }
}

/// Must show: people are never fought. Three pin + undo workloads whose
/// pushroll rollout of a crashing digest is failing (`--rollout-timeout
/// 25s` would fail it inside the window; the progress deadline is far)
/// are taken over by a person, with real kubectl: `rollout undo`,
/// `rollout restart`, `set image`. For 40 s after: their template stays,
/// no failure, no undo, no failed digest. A fourth workload's person sets
/// a crashing image with a 10 s progress deadline: their rollout fails
/// (`ProgressDeadlineExceeded`), and pushroll, whose record of an earlier
/// push is still there, reports nothing and undoes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_are_never_fought() {
    let Some((c, ns, k)) = real_with_kubelet("people", 2).await else {
        return;
    };
    if !kubectl_present() {
        return;
    }
    let started = Instant::now();
    let (stable, canary) = (format!("{REPO}:stable"), format!("{REPO}:canary"));
    let (old, good, bad, crash) = (dg(0x100), dg(0x101), dg(0x102), dg(0x103));
    k.push(&stable, &old);
    k.push(&canary, &old);
    let people = ["by-undo", "by-restart", "by-edit"];
    for name in people {
        c.create(pinned_with_undo(&ns, name, &stable, 2, 600)).await;
    }
    c.create(pinned_with_undo(&ns, "by-failing-edit", &canary, 2, 10))
        .await;
    for name in people.iter().chain(&["by-failing-edit"]) {
        k.wait_rollout("Deployment", &ns, name, LIMIT).await;
    }
    let (p, _) = serve_indexer(&c, &ns, "people-0", &["--rollout-timeout", "25s"]).await;

    // A good push everywhere first: every workload carries a record of
    // pushroll's own, and an earlier revision of pushroll's to go back to.
    k.push(&stable, &good);
    k.push(&canary, &good);
    let body = push_until_found(
        &p,
        &wrapped(&insert(REPO, "stable", &good), "good", SUBSCRIPTION),
        3,
    )
    .await;
    for name in people {
        assert_eq!(result_of(&body, name)["result"], "restarted", "{body}");
    }
    let body = push_until_found(
        &p,
        &wrapped(&insert(REPO, "canary", &good), "good-canary", SUBSCRIPTION),
        1,
    )
    .await;
    assert_eq!(
        result_of(&body, "by-failing-edit")["result"],
        "restarted",
        "{body}"
    );
    for name in people.iter().chain(&["by-failing-edit"]) {
        wait_event_naming(&c, &p, &ns, name, "PushRolloutComplete", &good, LIMIT).await;
    }

    // The crashing push on the three: stuck, not failed yet.
    k.push(&stable, &bad);
    k.crash(&bad);
    k.crash(&crash);
    let crashing_pushed = Instant::now();
    let (_, body) = post(
        &http(),
        &p,
        wrapped(&insert(REPO, "stable", &bad), "bad", SUBSCRIPTION),
    )
    .await;
    for name in people {
        assert_eq!(result_of(&body, name)["result"], "restarted", "{body}");
    }
    for name in people {
        eventually(Duration::from_secs(30), || async {
            k.running("Deployment", &ns, name)
                .await
                .iter()
                .any(|r| r.digest == bad && !r.ready)
                .then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("{name}: no pod of the crashing push"));
    }
    for name in people {
        assert!(events(&c, &ns, name, "PushRolloutFailed").await.is_empty());
    }

    // The people act.
    let deploy = |n: &str| format!("deployment/{n}");
    let pinned_old = format!("app={stable}@{old}");
    let crashing = format!("app={canary}@{crash}");
    let acts: [(&str, Vec<&str>); 4] = [
        ("by-undo", vec!["rollout", "undo"]),
        ("by-restart", vec!["rollout", "restart"]),
        ("by-edit", vec!["set", "image"]),
        ("by-failing-edit", vec!["set", "image"]),
    ];
    let mut templates = Vec::new();
    for (name, verb) in &acts {
        let target = deploy(name);
        let mut args: Vec<&str> = verb.clone();
        args.extend([target.as_str(), "-n", &ns]);
        match *name {
            "by-edit" => args.push(&pinned_old),
            "by-failing-edit" => args.push(&crashing),
            "by-restart" => {
                // kubectl writes restartedAt in whole seconds and refuses
                // a restart in the second pushroll's own restart wrote.
                let w = workload(&c, &ns, name).await;
                let pushed: jiff::Timestamp =
                    template_annotation(&w, "kubectl.kubernetes.io/restartedAt")
                        .unwrap()
                        .parse()
                        .unwrap();
                eventually(Duration::from_secs(2), || async {
                    (jiff::Timestamp::now().as_second() > pushed.as_second()).then_some(())
                })
                .await
                .unwrap();
            }
            _ => {}
        }
        kubectl(&c, &args).await;
        let w = workload(&c, &ns, name).await;
        templates.push((*name, w["spec"]["template"].clone()));
    }
    let acted = Instant::now();
    eprintln!(
        "people acted {:?} after the crashing push (its --rollout-timeout of 25 s ends inside their 40 s)",
        crashing_pushed.elapsed()
    );
    // What the person brought is really there.
    let t = |name: &str| &templates.iter().find(|(n, _)| *n == name).unwrap().1;
    let image = |t: &Value| {
        t["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        image(t("by-undo")),
        format!("{stable}@{good}"),
        "rolled back"
    );
    assert_eq!(image(t("by-restart")), format!("{stable}@{bad}"));
    assert_eq!(image(t("by-edit")), format!("{stable}@{old}"));
    assert_eq!(image(t("by-failing-edit")), format!("{canary}@{crash}"));

    let deadline_seen = std::sync::atomic::AtomicBool::new(false);
    hold_for(Duration::from_secs(40), || async {
        for (name, template) in &templates {
            let abandoned = (*name != "by-failing-edit").then_some(bad.as_str());
            left_alone(&c, &ns, name, template, abandoned).await;
        }
        let w = workload(&c, &ns, "by-failing-edit").await;
        let failed = w["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Progressing" && c["reason"] == "ProgressDeadlineExceeded");
        if failed && !deadline_seen.swap(true, std::sync::atomic::Ordering::SeqCst) {
            eprintln!(
                "the person's own rollout failed (ProgressDeadlineExceeded) {:?} after they acted",
                acted.elapsed()
            );
        }
    })
    .await;
    assert!(
        deadline_seen.into_inner(),
        "the person's crashing edit never exceeded its progress deadline: the scenario proved nothing"
    );
    // The rollouts the people chose and that can finish did.
    for name in ["by-undo", "by-edit"] {
        k.wait_rollout("Deployment", &ns, name, LIMIT).await;
    }
    assert_runs(&k, "Deployment", &ns, "by-undo", 2, &good, "rolled back").await;
    assert_runs(&k, "Deployment", &ns, "by-edit", 2, &old, "edited").await;
    eprintln!("people are never fought: {:?}", started.elapsed());
    k.stop().await;
}

/// Must show: two images of one workload wait side by side for a closed
/// window (one record each in `pushroll.io/pending`), a redelivery of the
/// first is `deferred`, never `superseded`, nothing rolls before the
/// window opens, and both roll when it does, the annotation gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_images_wait_side_by_side_for_a_window() {
    let Some((c, ns, k)) = real_with_kubelet("side", 1).await else {
        return;
    };
    let started = Instant::now();
    let side_repo = "us-east1-docker.pkg.dev/demo-project/apps/side";
    let (app, side) = (format!("{REPO}:stable"), format!("{side_repo}:v1"));
    let (app_old, side_old, app_new, side_new) = (dg(0x100), dg(0x200), dg(0x101), dg(0x201));
    k.push(&app, &app_old);
    k.push(&side, &side_old);
    // Today's (UTC) weekday, opening 20 s from now for an hour: a window
    // is a wall-clock time, so it is computed from the current time.
    let opens = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(20);
    let closes = opens + jiff::SignedDuration::from_secs(3600);
    let window = format!(
        "{}-{} UTC",
        opens.strftime("%a %H:%M:%S"),
        closes.strftime("%H:%M:%S")
    );
    let opens_at = jiff::Timestamp::from_second(opens.as_second()).unwrap();
    let mut w = pod_deployment(
        &ns,
        "pair",
        &[("app", &app, "Always"), ("sidecar", &side, "Always")],
    );
    w["spec"]["replicas"] = json!(1);
    w["metadata"]["annotations"] = json!({"pushroll.io/window": window});
    c.create(w).await;
    k.wait_rollout("Deployment", &ns, "pair", LIMIT).await;
    let (p, _) = serve_indexer(&c, &ns, "side-0", &[]).await;

    k.push(&app, &app_new);
    k.push(&side, &side_new);
    let t1 = jiff::Timestamp::now();
    let app_push = wrapped_at(&insert(REPO, "stable", &app_new), "m-app", SUBSCRIPTION, t1);
    let side_push = wrapped_at(
        &insert(side_repo, "v1", &side_new),
        "m-side",
        SUBSCRIPTION,
        t1 + jiff::SignedDuration::from_secs(1),
    );
    let body = push_until_found(&p, &app_push, 1).await;
    assert_eq!(body["workloads"][0]["result"], "deferred", "{body}");
    let body = push_until_found(&p, &side_push, 1).await;
    assert_eq!(body["workloads"][0]["result"], "deferred", "{body}");
    let pair = workload(&c, &ns, "pair").await;
    let records = waiting(&pair);
    assert_eq!(records.len(), 2, "one record per image: {records:#?}");
    for (image, digest, container) in [(&app, &app_new, "app"), (&side, &side_new, "sidecar")] {
        let r = records
            .iter()
            .find(|r| r["image"] == image.as_str())
            .unwrap_or_else(|| panic!("no record of {image}: {records:#?}"));
        assert_eq!(r["digest"], digest.as_str(), "{r}");
        assert_eq!(r["containers"], json!([container]), "{r}");
        assert_eq!(r["reason"], "window", "{r}");
        let not_before: jiff::Timestamp = r["notBefore"].as_str().unwrap().parse().unwrap();
        assert_eq!(not_before, opens_at, "{r}");
    }
    let stored = annotation(&pair, "pushroll.io/pending");
    // Redeliveries of either: deferred, the records as they were.
    for push in [&app_push, &side_push, &app_push] {
        let (status, body) = post(&http(), &p, push.clone()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["workloads"][0]["result"], "deferred", "{body}");
    }
    assert!(
        jiff::Timestamp::now() < opens_at,
        "the window opened before the redeliveries: the test machine is too slow for its 20 s"
    );
    // Until the window opens: nothing rolls, both records wait.
    let before_open = Duration::try_from(opens_at.duration_since(jiff::Timestamp::now()))
        .unwrap_or_default()
        .saturating_sub(Duration::from_millis(500));
    hold_for(before_open, || async {
        let w = workload(&c, &ns, "pair").await;
        assert_eq!(template_digest(&w, "app"), None, "rolled before the window");
        assert_eq!(
            template_digest(&w, "sidecar"),
            None,
            "rolled before the window"
        );
        assert_eq!(annotation(&w, "pushroll.io/pending"), stored);
    })
    .await;

    let both = eventually(Duration::from_secs(30), || async {
        let w = workload(&c, &ns, "pair").await;
        (template_digest(&w, "app").as_deref() == Some(app_new.as_str())
            && template_digest(&w, "sidecar").as_deref() == Some(side_new.as_str()))
        .then_some(w)
    })
    .await;
    let Some(pair) = both else {
        panic!(
            "both images never rolled:\n{:#}\n{}",
            workload(&c, &ns, "pair").await,
            p.logs().join("\n")
        );
    };
    eprintln!(
        "window opens → both digests in the template: {} ms",
        jiff::Timestamp::now().duration_since(opens_at).as_millis()
    );
    assert_eq!(annotation(&pair, "pushroll.io/pending"), None, "{pair:#}");
    let restarted: jiff::Timestamp =
        template_annotation(&pair, "kubectl.kubernetes.io/restartedAt")
            .unwrap()
            .parse()
            .unwrap();
    assert!(
        restarted >= opens_at,
        "rolled at {restarted}, opens {opens_at}"
    );
    k.wait_rollout("Deployment", &ns, "pair", LIMIT).await;
    let running = k.running("Deployment", &ns, "pair").await;
    for (container, digest) in [("app", &app_new), ("sidecar", &side_new)] {
        assert!(
            running
                .iter()
                .any(|r| r.container == container && &r.digest == digest && r.ready),
            "{container} does not run {digest}: {running:#?}"
        );
    }
    eprintln!("two images side by side: {:?}", started.elapsed());
    k.stop().await;
}

/// A Deployment's watch, from now on: every version seen and when.
fn watch_deployment(
    c: &Cluster,
    ns: &str,
    name: &str,
) -> tokio::sync::mpsc::UnboundedReceiver<(Instant, Value)> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apps", "v1", "Deployment"),
        "deployments",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(c.client.clone(), ns, &ar);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let name = name.to_owned();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(watcher::watch_object(api, &name));
        while let Some(event) = stream.next().await {
            if let Ok(Some(obj)) = event
                && tx
                    .send((Instant::now(), serde_json::to_value(obj).unwrap()))
                    .is_err()
            {
                return;
            }
        }
    });
    rx
}

/// Must show: a push waiting for `pushroll.io/approval: required` on the
/// POD TEMPLATE is carried out when a person removes that annotation from
/// the template (kubectl patch), within 1 s. Measured on one watch of the
/// workload: from the version without the annotation to the version whose
/// template records the digest (pushroll's reaction: its watch event, the
/// decision, the PATCH; no rollout is waited for).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_policy_change_releases_within_a_second() {
    let Some((c, ns, k)) = real_with_kubelet("template", 1).await else {
        return;
    };
    if !kubectl_present() {
        return;
    }
    let started = Instant::now();
    let image = format!("{REPO}:stable");
    let (old, new) = (dg(0x100), dg(0x101));
    k.push(&image, &old);
    let mut w = pod_deployment(&ns, "gate", &[("app", &image, "Always")]);
    w["spec"]["replicas"] = json!(1);
    w["spec"]["template"]["metadata"]["annotations"] = json!({"pushroll.io/approval": "required"});
    c.create(w).await;
    k.wait_rollout("Deployment", &ns, "gate", LIMIT).await;
    let (p, _) = serve_indexer(&c, &ns, "template-0", &[]).await;
    k.push(&image, &new);
    let body = push_until_found(
        &p,
        &wrapped(&insert(REPO, "stable", &new), "m-1", SUBSCRIPTION),
        1,
    )
    .await;
    assert_eq!(body["workloads"][0]["result"], "pending-approval", "{body}");
    let records = waiting(&workload(&c, &ns, "gate").await);
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0]["reason"], "approval");
    hold_for(Duration::from_secs(2), || async {
        let w = workload(&c, &ns, "gate").await;
        assert_eq!(template_digest(&w, "app"), None, "rolled without approval");
    })
    .await;

    let mut seen = watch_deployment(&c, &ns, "gate");
    let kubectl_started = Instant::now();
    kubectl(
        &c,
        &[
            "patch",
            "deployment/gate",
            "-n",
            &ns,
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/spec/template/metadata/annotations/pushroll.io~1approval"}]"#,
        ],
    )
    .await;
    let (mut removed, mut rolled) = (None, None);
    let waited = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some((at, w)) = seen.recv().await {
            if removed.is_none() && template_annotation(&w, "pushroll.io/approval").is_none() {
                removed = Some(at);
            }
            if template_digest(&w, "app").as_deref() == Some(new.as_str()) {
                rolled = Some((at, w));
                return;
            }
        }
    })
    .await;
    let (Ok(()), Some(removed), Some((rolled, rolled_w))) = (waited, removed, rolled) else {
        panic!(
            "the push was not carried out after the template's approval was removed:\n{:#}\n{}",
            workload(&c, &ns, "gate").await,
            p.logs().join("\n")
        );
    };
    let took = rolled.duration_since(removed);
    eprintln!(
        "template approval removed → template records the digest: {took:?} (watch to watch); {:?} from starting kubectl patch (its start-up included)",
        rolled.duration_since(kubectl_started)
    );
    assert!(
        took < Duration::from_secs(1),
        "carried out {took:?} after the template's policy changed\n{}",
        p.logs().join("\n")
    );
    assert_eq!(annotation(&rolled_w, "pushroll.io/pending"), None);
    assert_eq!(template_annotation(&rolled_w, "pushroll.io/approval"), None);
    k.wait_rollout("Deployment", &ns, "gate", LIMIT).await;
    assert_runs(&k, "Deployment", &ns, "gate", 1, &new, "released").await;
    eprintln!("template policy change: {:?}", started.elapsed());
    k.stop().await;
}

/// Must show: an approval is used once. D approved (`pushroll approve`)
/// rolls and `pushroll.io/approve` goes in the same write; D2 approved
/// (`kubectl annotate`) rolls likewise; D pushed again (newer publish
/// time) waits for a new approval and stays waiting. An approval whose
/// waiting push a newer digest replaces goes with it. And a
/// `pushroll.io/min-interval` of `10000y` after a recent restart is
/// invalid (`PushPolicyInvalid`), the push waits and nothing rolls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_are_used_once_and_10000y_is_invalid() {
    let Some((c, ns, k)) = real_with_kubelet("once", 1).await else {
        return;
    };
    if !kubectl_present() {
        return;
    }
    let started = Instant::now();
    let (stable, calm) = (format!("{REPO}:stable"), format!("{REPO}:calm"));
    let (old, d, d2, d3) = (dg(0x100), dg(0x101), dg(0x102), dg(0x103));
    k.push(&stable, &old);
    k.push(&calm, &old);
    let mut w = pod_deployment(&ns, "once", &[("app", &stable, "Always")]);
    w["spec"]["replicas"] = json!(1);
    w["metadata"]["annotations"] = json!({"pushroll.io/approval": "required"});
    c.create(w).await;
    let mut w = pod_deployment(&ns, "forever", &[("app", &calm, "Always")]);
    w["spec"]["replicas"] = json!(1);
    w["metadata"]["annotations"] = json!({"pushroll.io/min-interval": "10000y"});
    // A recent restart.
    w["spec"]["template"]["metadata"]["annotations"] =
        json!({"kubectl.kubernetes.io/restartedAt": jiff::Timestamp::now().to_string()});
    c.create(w).await;
    for name in ["once", "forever"] {
        k.wait_rollout("Deployment", &ns, name, LIMIT).await;
    }
    let (p, _) = serve_indexer(&c, &ns, "once-0", &[]).await;

    // D, approved with `pushroll approve`.
    k.push(&stable, &d);
    let t1 = jiff::Timestamp::now();
    let push_d = wrapped_at(&insert(REPO, "stable", &d), "m-d", SUBSCRIPTION, t1);
    let body = push_until_found(&p, &push_d, 1).await;
    assert_eq!(body["workloads"][0]["result"], "pending-approval", "{body}");
    let (ok, out, err) = cli(&c, &["approve", "deployment/once", "-n", &ns]);
    assert!(ok && out.contains(&d), "{out}\n{err}");
    let rolled = |digest: String| {
        let (c, ns) = (&c, &ns);
        async move {
            eventually(Duration::from_secs(10), || async {
                let w = workload(c, ns, "once").await;
                (template_digest(&w, "app").as_deref() == Some(digest.as_str())).then_some(w)
            })
            .await
            .unwrap_or_else(|| panic!("never rolled to {digest}"))
        }
    };
    let w = rolled(d.clone()).await;
    assert_eq!(
        annotation(&w, "pushroll.io/approve"),
        None,
        "the approval of D outlived its use: {w:#}"
    );
    assert!(waiting(&w).is_empty(), "{w:#}");
    k.wait_rollout("Deployment", &ns, "once", LIMIT).await;

    // D2, approved with `kubectl annotate`.
    k.push(&stable, &d2);
    let t2 = jiff::Timestamp::now();
    let (_, body) = post(
        &http(),
        &p,
        wrapped_at(&insert(REPO, "stable", &d2), "m-d2", SUBSCRIPTION, t2),
    )
    .await;
    assert_eq!(body["workloads"][0]["result"], "pending-approval", "{body}");
    kubectl(
        &c,
        &[
            "annotate",
            "deployment/once",
            "-n",
            &ns,
            "--overwrite",
            &format!("pushroll.io/approve={d2}"),
        ],
    )
    .await;
    let w = rolled(d2.clone()).await;
    assert_eq!(annotation(&w, "pushroll.io/approve"), None, "{w:#}");
    k.wait_rollout("Deployment", &ns, "once", LIMIT).await;

    // D again, published later: a new approval is needed.
    let t3 = jiff::Timestamp::now();
    assert!(t3 > t2);
    let push_d_again = wrapped_at(&insert(REPO, "stable", &d), "m-d-again", SUBSCRIPTION, t3);
    for _ in 0..2 {
        let (_, body) = post(&http(), &p, push_d_again.clone()).await;
        assert_eq!(body["workloads"][0]["result"], "pending-approval", "{body}");
    }
    hold_for(Duration::from_secs(5), || async {
        let w = workload(&c, &ns, "once").await;
        assert_eq!(
            template_digest(&w, "app").as_deref(),
            Some(d2.as_str()),
            "D rolled again without a new approval"
        );
        assert_eq!(annotation(&w, "pushroll.io/approve"), None);
        let records = waiting(&w);
        assert_eq!(records.len(), 1, "{records:#?}");
        assert_eq!(records[0]["digest"], d.as_str());
        assert_eq!(records[0]["reason"], "approval");
    })
    .await;

    // An approval whose waiting push is replaced by a newer digest goes
    // with it. Written while no controller runs (a serve without the
    // indexer, on a workload the controller does not watch), so that the
    // approval cannot be used first.
    let elsewhere = c.ns("once-elsewhere");
    let mut w = pod_deployment(&elsewhere, "later", &[("app", &stable, "Always")]);
    w["spec"]["replicas"] = json!(0);
    w["metadata"]["annotations"] = json!({"pushroll.io/approval": "required"});
    c.create(w).await;
    let dir = tempfile::tempdir().unwrap();
    let index = dir.path().join("index.json");
    let entries = crate::support::cluster::index_for(
        &stable,
        &[("Deployment", &elsewhere, "later", &["app"])],
    );
    std::fs::write(&index, entries.to_string()).unwrap();
    let plain = Pushroll::serve_open(&c.kubeconfig, &["--index-file", index.to_str().unwrap()]);
    let (_, body) = post(
        &http(),
        &plain,
        wrapped(&insert(REPO, "stable", &d2), "m-later-d2", SUBSCRIPTION),
    )
    .await;
    assert_eq!(body["workloads"][0]["result"], "pending-approval", "{body}");
    kubectl(
        &c,
        &[
            "annotate",
            "deployment/later",
            "-n",
            &elsewhere,
            &format!("pushroll.io/approve={d2}"),
        ],
    )
    .await;
    let (_, body) = post(
        &http(),
        &plain,
        wrapped(&insert(REPO, "stable", &d3), "m-later-d3", SUBSCRIPTION),
    )
    .await;
    assert_eq!(body["workloads"][0]["result"], "pending-approval", "{body}");
    let later = c.get("Deployment", &elsewhere, "later").await.unwrap();
    assert_eq!(
        annotation(&later, "pushroll.io/approve"),
        None,
        "the approval of a replaced push stayed: {later:#}"
    );
    let records = waiting(&later);
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0]["digest"], d3.as_str());
    drop(plain);
    c.delete("Namespace", "", &elsewhere).await;

    // 10000y: invalid, the push waits, nothing rolls.
    let before = workload(&c, &ns, "forever").await;
    k.push(&calm, &d);
    let body = push_until_found(
        &p,
        &wrapped(&insert(REPO, "calm", &d), "m-calm", SUBSCRIPTION),
        1,
    )
    .await;
    assert_eq!(body["workloads"][0]["result"], "deferred", "{body}");
    let invalid = wait_event(
        &c,
        &p,
        &ns,
        "forever",
        "PushPolicyInvalid",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(invalid["type"], "Warning");
    assert!(
        invalid["message"]
            .as_str()
            .unwrap()
            .contains("pushroll.io/min-interval"),
        "{invalid}"
    );
    hold_for(Duration::from_secs(5), || async {
        let w = workload(&c, &ns, "forever").await;
        assert_eq!(
            w["spec"]["template"], before["spec"]["template"],
            "rolled with an interval that does not fit"
        );
        assert_eq!(revision(&w), revision(&before));
        let records = waiting(&w);
        assert_eq!(records.len(), 1, "{records:#?}");
        assert_eq!(records[0]["digest"], d.as_str());
        assert_eq!(records[0]["reason"], "interval");
        assert!(
            records[0]["error"]
                .as_str()
                .is_some_and(|e| e.contains("100 years")),
            "{records:#?}"
        );
    })
    .await;
    assert_eq!(
        events(&c, &ns, "forever", "PushPolicyInvalid").await.len(),
        1
    );
    eprintln!("approvals once and 10000y: {:?}", started.elapsed());
    k.stop().await;
}
