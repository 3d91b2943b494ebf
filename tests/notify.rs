//! Notifications end to end: serve, against the fake API server, tells a
//! local receiver of a restart once, with the documented fields, and its
//! logs never show the notify URL's path or query.

#[macro_use]
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use support::cluster::{Cluster, index_for, workload};
use support::*;

/// A receiver on loopback that keeps every body and answers 200.
async fn receiver() -> (
    String,
    Arc<Mutex<Vec<Value>>>,
    tokio::sync::oneshot::Sender<()>,
) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let seen = got.clone();
    let app = axum::Router::new().route(
        "/hooks/{key}",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(body);
                "ok"
            }
        }),
    );
    let (addr, stop) = serve_local(app).await;
    (
        format!("http://{addr}/hooks/PATHSECRET?token=QUERYSECRET"),
        got,
        stop,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_is_told_once_with_the_documented_fields() {
    let c = Cluster::fake().await;
    let ns = c.ns("notify");
    let img = format!("{REPO}:v1");
    c.create(workload(
        "Deployment",
        &ns,
        "web",
        &[("web", &img)],
        &[],
        json!({}),
    ))
    .await;
    c.write_index_configmap(
        "pushroll",
        "pushroll-index",
        &index_for(&img, &[("Deployment", &ns, "web", &["web"])]),
    )
    .await;
    let (url, got, _stop) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("index.json");
    let p = Pushroll::serve_open(
        &c.kubeconfig,
        &[
            "--index-file",
            missing.to_str().unwrap(),
            "--index-configmap",
            "pushroll/pushroll-index",
            "--notify-url",
            &url,
        ],
    );
    let client = http();
    let push = wrapped(&insert(REPO, "v1", DIGEST), "m-7", SUBSCRIPTION);
    let (status, body) = post(&client, &p, push.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["workloads"][0]["result"], "restarted", "{body}");
    // A redelivery is already current: nothing more to tell.
    let (_, body) = post(&client, &p, push).await;
    assert_eq!(body["workloads"][0]["result"], "already-current", "{body}");
    let told = eventually(Duration::from_secs(10), || async {
        let got = got.lock().unwrap().clone();
        (!got.is_empty()).then_some(got)
    })
    .await
    .expect("the receiver is told");
    let delivered = eventually(Duration::from_secs(10), || async {
        let m = p.metrics().await;
        (metric(&m, "pushroll_notifications_total{result=\"delivered\"}") == 1.0).then_some(())
    })
    .await;
    assert!(delivered.is_some(), "{}", p.metrics().await);
    assert_eq!(told.len(), 1, "{told:?}");
    let doc = &told[0];
    assert_eq!(doc["event"], "restarted");
    assert_eq!(
        doc["workload"],
        json!({"kind": "Deployment", "namespace": ns, "name": "web"})
    );
    assert_eq!(doc["image"], img.as_str());
    assert_eq!(doc["digest"], DIGEST);
    assert_eq!(doc["messageId"], "m-7");
    assert!(
        doc["time"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .is_ok()
    );
    let logs = p.logs().join("\n");
    assert!(logs.contains("notifications on"), "{logs}");
    assert!(
        !logs.contains("PATHSECRET") && !logs.contains("QUERYSECRET"),
        "{logs}"
    );
}
