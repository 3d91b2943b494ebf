//! How soon the rollout follower records `PushRolloutComplete` after the
//! status change that completes a rollout, against the same change seen by
//! a plain watch (the baseline: what any watcher of the API server gets), in
//! one process, on the project's fake API server holding N workloads.
//!
//! ```sh
//! cargo bench --bench rollout                 # N = 5,000 workloads, 40 rollouts
//! cargo bench --bench rollout -- --quick      # smoke: N = 50, 5 rollouts
//! cargo test --benches                        # the same smoke run (debug build)
//! ```
//!
//! Per rollout: the bench sends the patch serve would send (restartedAt,
//! digest and publish time, and the rollout record), then plays the Deployment controller and
//! writes a complete status. The clock starts when that status write is
//! sent and stops when the follower's Event create reaches the API
//! server, and, for the baseline, when the bench's own watch sees the
//! status. It also counts the follower's requests: one pods LIST per
//! rollout and no watch beyond the indexer's three.

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fake_apiserver::FakeApiServer;
use futures::StreamExt as _;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use pushroll::index::configmap::ConfigMapRef;
use pushroll::indexer::{WatchSettings, WatchState, watch};
use pushroll::metrics::Metrics;
use pushroll::workload::NamespaceFilter;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const NS: &str = "bench";

fn deployment(i: usize) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": format!("app-{i}"), "namespace": NS},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": format!("app-{i}")}},
            "template": {"metadata": {"labels": {"app": format!("app-{i}")}},
                "spec": {"containers": [{"name": "app", "image": format!("{}:v1", common::repo_of(i))}]}}},
    })
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    // `cargo test --benches` runs bench binaries without `--bench`.
    let quick = args.iter().any(|a| a == "--quick") || !args.iter().any(|a| a == "--bench");
    let (n, rollouts) = if quick { (50, 5) } else { (5_000, 40) };

    let fake = FakeApiServer::start().await;
    fake.ensure_namespace(NS);
    fake.ensure_namespace("pushroll");
    for i in 0..n {
        fake.insert(deployment(i));
    }
    let config = kube::Config::new(fake.url().parse().unwrap());
    let client = kube::Client::try_from(config.clone()).unwrap();
    let metrics = Metrics::new();
    let kube =
        pushroll::k8s::connect_with(config, Duration::from_secs(5), metrics.clone()).unwrap();
    let settings = WatchSettings {
        debounce: Duration::from_millis(200),
        lease_name: "pushroll-indexer".into(),
        lease_duration: Duration::from_secs(15),
        identity: "bench".into(),
        stall_timeout: Duration::from_secs(60),
        rollout_timeout: Duration::from_secs(600),
        notify: Default::default(),
    };
    let watch_config = settings.config(
        NamespaceFilter::default(),
        ConfigMapRef {
            namespace: "pushroll".into(),
            name: "pushroll-index".into(),
        },
    );
    let state = Arc::new(WatchState::default());
    let shutdown = CancellationToken::new();
    let indexer = tokio::spawn(watch(
        kube,
        watch_config,
        state.clone(),
        metrics.clone(),
        None,
        shutdown.clone(),
    ));
    let started = Instant::now();
    while !(state.leader.load(Ordering::Acquire) && state.written.load(Ordering::Acquire)) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the indexer never led"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let indexer_watches = fake.requests_for("watch", None).len();
    // The baseline: a plain watch of the same Deployments, in this process.
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        NS,
        &kube::api::ApiResource::erase::<k8s_openapi::api::apps::v1::Deployment>(&()),
    );
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<(String, i64, Instant)>();
    let baseline = tokio::spawn({
        let api = api.clone();
        async move {
            let mut stream =
                std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
            while let Some(Ok(event)) = stream.next().await {
                match event {
                    watcher::Event::Apply(obj) => {
                        let observed = obj.data["status"]["observedGeneration"]
                            .as_i64()
                            .unwrap_or(0);
                        let _ = seen_tx.send((
                            obj.metadata.name.clone().unwrap_or_default(),
                            observed,
                            Instant::now(),
                        ));
                    }
                    // The initial list is done: the marker the bench waits for.
                    watcher::Event::InitDone => {
                        let _ = seen_tx.send((String::new(), -1, Instant::now()));
                    }
                    _ => {}
                }
            }
        }
    });
    while seen_rx.recv().await.unwrap().1 != -1 {}

    let mut follower = Vec::new();
    let mut plain = Vec::new();
    for r in 0..rollouts {
        let name = format!("app-{}", r * (n / rollouts));
        let now = jiff::Timestamp::now();
        let digest = common::digest(r as u64 + 1);
        // The restart's patch, with the rollout record it writes: the
        // generation that write produces, read + 1.
        let read = api.get(&name).await.unwrap();
        let mut patch =
            pushroll::plan::restart_patch(None, &["app".into()], &[], &digest, now, now);
        let record = pushroll::rollout::Pushed {
            digest: digest.clone(),
            containers: vec!["app".into()],
            restarted_at: pushroll::policy::restarted_at(now),
            generation: read.metadata.generation.unwrap_or(0) + 1,
            image: None,
        };
        pushroll::policy::set_annotations(
            &mut patch,
            &[(
                pushroll::rollout::ROLLOUT.to_owned(),
                Some(record.to_json()),
            )]
            .into(),
        );
        let patched = api
            .patch(&name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
            .unwrap();
        let generation = patched.metadata.generation.unwrap();
        let mut obj = patched;
        obj.data["status"] = json!({"observedGeneration": generation, "replicas": 3,
            "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3});
        // From the status write, sent: both the follower and the baseline
        // see the change through the same API server watch.
        let t0 = Instant::now();
        api.replace_status(&name, &PostParams::default(), &obj)
            .await
            .unwrap();
        let event = fake
            .wait_for_request(Duration::from_secs(30), |q| {
                q.verb == "create"
                    && q.resource.as_deref() == Some("events")
                    && q.body.as_ref().is_some_and(|b| {
                        b["reason"] == "PushRolloutComplete"
                            && b["involvedObject"]["name"] == name.as_str()
                    })
            })
            .await;
        assert!(event.is_some(), "no PushRolloutComplete for {name}");
        follower.push(t0.elapsed());
        loop {
            let (seen, observed, at) = seen_rx.recv().await.unwrap();
            if seen == name && observed == generation {
                plain.push(at.saturating_duration_since(t0));
                break;
            }
        }
    }
    let pod_lists = fake.requests_for("list", Some("pods")).len();
    // The indexer's three, and the baseline's one.
    let new_watches = fake.requests_for("watch", None).len() - indexer_watches - 1;
    assert_eq!(indexer_watches, 3, "one watch per kind");
    assert_eq!(pod_lists, rollouts, "one pods LIST per finished rollout");
    assert_eq!(new_watches, 0, "no watch beyond the indexer's");
    shutdown.cancel();
    baseline.abort();
    let _ = indexer.await;

    let (f, p) = (median(follower.clone()), median(plain.clone()));
    println!(
        "rollout follower, {n} workloads, {rollouts} rollouts ({}):",
        if cfg!(debug_assertions) {
            "DEBUG build"
        } else {
            "release build"
        }
    );
    println!(
        "  status written → PushRolloutComplete created: median {f:?} (max {:?})",
        follower.iter().max().unwrap()
    );
    println!(
        "  status written → seen by a plain watch (baseline): median {p:?} (max {:?})",
        plain.iter().max().unwrap()
    );
    println!(
        "  ratio follower/plain watch: {:.1}; pods LISTs: {pod_lists} for {rollouts} rollouts; new watches: {}",
        f.as_secs_f64() / p.as_secs_f64().max(1e-9),
        new_watches
    );
    assert!(
        quick || f < Duration::from_secs(1),
        "the goal: within 1 s (median), got {f:?}"
    );
}
