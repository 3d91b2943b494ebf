//! Fault injection and the down switch.

mod common;

use std::time::{Duration, Instant};

use common::*;
use fake_apiserver::{FakeApiServer, FaultRule};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;

#[tokio::test]
async fn status_faults_answer_real_status_objects() {
    let s = FakeApiServer::start().await;
    s.insert(deployment("ns", "web", "img"));
    let c = http();
    let url = deploy_url(&s, "ns", "web");
    s.fail_next(
        FaultRule::status(429)
            .verb("get")
            .resource("deployments")
            .times(2),
    );
    for _ in 0..2 {
        let resp = c.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()["retry-after"], "1");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_status(&body, 429, "TooManyRequests");
    }
    let (code, _, _) = send(c.get(&url)).await;
    assert_eq!(code, 200, "the rule is spent");

    // Rules match on verb/resource/name; others pass.
    s.fail_next(FaultRule::status(403).verb("patch").name("web"));
    let (code, _, _) = send(c.get(&url)).await;
    assert_eq!(code, 200);
    let (code, _, b) = send(
        c.patch(&url)
            .header("content-type", "application/merge-patch+json")
            .body("{}"),
    )
    .await;
    assert_eq!(code, 403);
    assert_status(&b, 403, "Forbidden");
    for (code, reason) in [
        (500, "InternalError"),
        (503, "ServiceUnavailable"),
        (409, "Conflict"),
        (404, "NotFound"),
        (504, "Timeout"),
    ] {
        s.fail_next(FaultRule::status(code));
        let (got, _, b) = send(c.get(&url)).await;
        assert_eq!(got, code);
        assert_status(&b, code, reason);
    }
    let rec = s.requests().pop().unwrap();
    assert_eq!(rec.status, 504);

    // kube-rs sees the same as an API error.
    let api: Api<Deployment> = Api::namespaced(kube_client(&s, "ns").await, "ns");
    s.fail_next(FaultRule::status(500).verb("get"));
    match api.get("web").await {
        Err(kube::Error::Api(st)) => assert_eq!(st.code, 500),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn delay_then_proceed_or_fail() {
    let s = FakeApiServer::start().await;
    s.insert(deployment("ns", "web", "img"));
    let c = http();
    let url = deploy_url(&s, "ns", "web");
    s.fail_next(FaultRule::delay(Duration::from_millis(300)).verb("get"));
    let t = Instant::now();
    let (code, _, _) = send(c.get(&url)).await;
    assert_eq!(code, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
    s.fail_next(FaultRule::delay(Duration::from_millis(100)).with_status(503));
    let (code, _, _) = send(c.get(&url)).await;
    assert_eq!(code, 503);
}

#[tokio::test]
async fn dropped_connections_and_down_are_transport_errors() {
    let s = FakeApiServer::start().await;
    s.insert(deployment("ns", "web", "img"));
    let api: Api<Deployment> = Api::namespaced(kube_client(&s, "ns").await, "ns");
    api.get("web").await.unwrap();

    s.fail_next(FaultRule::drop_connection().verb("get"));
    let err = api.get("web").await.unwrap_err();
    assert!(
        !matches!(err, kube::Error::Api(_)),
        "a transport error, not a Status: {err:?}"
    );
    api.get("web").await.unwrap();

    s.set_down(true);
    let t = Instant::now();
    let err = api.get("web").await.unwrap_err();
    assert!(!matches!(err, kube::Error::Api(_)), "{err:?}");
    assert!(t.elapsed() < Duration::from_secs(5), "fails fast");
    let err = http()
        .get(deploy_url(&s, "ns", "web"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect() || err.is_request(), "{err:?}");
    s.set_down(false);
    let d = api.get("web").await.unwrap();
    assert_eq!(d.metadata.name.as_deref(), Some("web"));
}
