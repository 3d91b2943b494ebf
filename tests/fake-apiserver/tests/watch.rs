//! Watch streams, raw and through kube_runtime::watcher.

mod common;

use std::time::Duration;

use common::*;
use fake_apiserver::FakeApiServer;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::runtime::watcher::{self, Event};
use serde_json::{Value, json};

/// Reads a watch response to its end (the server closes it at timeoutSeconds).
async fn watch_lines(url: String) -> Vec<Value> {
    let mut resp = http().get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        buf.extend_from_slice(&chunk);
    }
    String::from_utf8(buf)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn watch_replays_changes_after_a_resource_version_and_ends_with_a_bookmark() {
    let s = FakeApiServer::start().await;
    let a = s.insert(deployment("ns", "a", "img:1"));
    let start = rv(&a);
    s.insert(deployment("ns", "b", "img:1"));
    s.insert(deployment("ns", "a", "img:2"));
    s.insert(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "ns"}}));
    s.delete("apps/v1", "Deployment", "ns", "b");
    s.insert(deployment("elsewhere", "z", "img:1"));
    let url = format!(
        "{}/apis/apps/v1/namespaces/ns/deployments?watch=1&resourceVersion={start}&allowWatchBookmarks=true&timeoutSeconds=1",
        s.url()
    );
    let events = watch_lines(url).await;
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap(),
                e["object"]["metadata"]["name"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("ADDED", "b"),
            ("MODIFIED", "a"),
            ("DELETED", "b"),
            ("BOOKMARK", "")
        ]
    );
    assert_eq!(
        events[1]["object"]["kind"], "Deployment",
        "watch objects carry their kind"
    );
    assert_eq!(
        events[3]["object"]["metadata"]["resourceVersion"],
        s.resource_version().to_string()
    );
    // rv strictly increasing.
    let rvs: Vec<u64> = events[..3].iter().map(|e| rv(&e["object"])).collect();
    assert!(rvs.windows(2).all(|w| w[0] < w[1]), "{rvs:?}");
}

#[tokio::test]
async fn watch_from_zero_starts_with_the_current_state_and_streams_live() {
    let s = FakeApiServer::start().await;
    s.insert(deployment("ns", "a", "img:1"));
    let url = format!(
        "{}/apis/apps/v1/deployments?watch=true&resourceVersion=0&timeoutSeconds=2",
        s.url()
    );
    let s2 = s.clone();
    let reader = tokio::spawn(watch_lines(url));
    // Live changes go out once the watch is registered.
    s.wait_for_request(Duration::from_secs(5), |r| r.verb == "watch")
        .await
        .expect("watch arrived");
    s2.insert(deployment("ns", "a", "img:2"));
    let events = reader.await.unwrap();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["ADDED", "MODIFIED"]);
}

#[tokio::test]
async fn watch_from_a_compacted_resource_version_gets_410_expired() {
    let s = FakeApiServer::start().await;
    s.insert(deployment("ns", "a", "img:1"));
    s.insert(deployment("ns", "a", "img:2"));
    s.compact();
    let url = format!(
        "{}/apis/apps/v1/namespaces/ns/deployments?watch=1&resourceVersion=1",
        s.url()
    );
    let events = watch_lines(url).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "ERROR");
    assert_status(&events[0]["object"], 410, "Expired");
}

#[tokio::test]
async fn label_selector_turns_modified_into_added_and_deleted() {
    let s = FakeApiServer::start().await;
    let a = s.insert(deployment("ns", "a", "img:1"));
    let mut labeled = a.clone();
    labeled["metadata"]["labels"]["tier"] = "fe".into();
    s.insert(labeled.clone());
    let mut unlabeled = labeled;
    unlabeled["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("tier");
    s.insert(unlabeled);
    let url = format!(
        "{}/apis/apps/v1/namespaces/ns/deployments?watch=1&resourceVersion={}&labelSelector=tier%3Dfe&timeoutSeconds=1",
        s.url(),
        rv(&a)
    );
    let types: Vec<String> = watch_lines(url)
        .await
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(types, ["ADDED", "DELETED"]);
}

type Events = futures::stream::BoxStream<'static, Result<Event<Deployment>, watcher::Error>>;

async fn next(stream: &mut Events) -> Event<Deployment> {
    tokio::time::timeout(Duration::from_secs(10), stream.try_next())
        .await
        .expect("watcher event in time")
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn kube_runtime_watcher_lists_then_watches_and_recovers() {
    let s = FakeApiServer::start().await;
    s.insert(deployment("ns", "a", "img:1"));
    let client = kube_client(&s, "ns").await;
    let api: Api<Deployment> = Api::all(client);
    for streaming in [false, true] {
        let cfg = if streaming {
            watcher::Config::default().streaming_lists()
        } else {
            watcher::Config::default()
        };
        let mut stream = watcher::watcher(api.clone(), cfg).boxed();
        assert!(matches!(next(&mut stream).await, Event::Init));
        match next(&mut stream).await {
            Event::InitApply(d) => assert_eq!(d.metadata.name.as_deref(), Some("a")),
            other => panic!("expected InitApply, got {other:?}"),
        }
        assert!(matches!(next(&mut stream).await, Event::InitDone));
        let b = format!("b{streaming}");
        s.insert(deployment("ns", &b, "img:1"));
        match next(&mut stream).await {
            Event::Apply(d) => assert_eq!(d.metadata.name.as_deref(), Some(b.as_str())),
            other => panic!("expected Apply, got {other:?}"),
        }
        s.delete("apps/v1", "Deployment", "ns", &b);
        match next(&mut stream).await {
            Event::Delete(d) => assert_eq!(d.metadata.name.as_deref(), Some(b.as_str())),
            other => panic!("expected Delete, got {other:?}"),
        }
    }

    // A compaction while the server is down: the watcher's re-watch gets
    // 410 and it relists, seeing what changed meanwhile.
    let mut stream = watcher::watcher(api.clone(), watcher::Config::default()).boxed();
    let mut seen_init_done = false;
    while !seen_init_done {
        if let Event::InitDone = stream.try_next().await.unwrap().unwrap() {
            seen_init_done = true;
        }
    }
    s.set_down(true);
    s.insert(deployment("ns", "c", "img:1"));
    s.compact();
    s.set_down(false);
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stream.next().await {
                Some(Ok(Event::InitApply(d) | Event::Apply(d)))
                    if d.metadata.name.as_deref() == Some("c") =>
                {
                    return true;
                }
                Some(_) => continue,
                None => return false,
            }
        }
    })
    .await
    .expect("the watcher recovered in time");
    assert!(found);
}
