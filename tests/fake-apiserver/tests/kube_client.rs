//! kube-rs (the client pushroll uses) against the fake.

mod common;

use common::*;
use fake_apiserver::FakeApiServer;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

fn api_status(e: kube::Error) -> Box<kube::core::Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn get_list_and_strategic_patch_with_optimistic_lock() {
    let s = FakeApiServer::start().await;
    s.insert(deployment("ns", "web", "app:v1"));
    s.insert(deployment("other", "db", "db:v1"));
    let client = kube_client(&s, "ns").await;
    let api: Api<Deployment> = Api::namespaced(client.clone(), "ns");

    let d = api.get("web").await.unwrap();
    assert_eq!(d.metadata.generation, Some(1));
    assert_eq!(
        api.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    let all: Api<Deployment> = Api::all(client.clone());
    assert_eq!(
        all.list(&ListParams::default().limit(1))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        2
    );
    assert!(api.get_opt("missing").await.unwrap().is_none());

    // pushroll's restart: the workload's rv in the patch as a lock.
    let rv = d.metadata.resource_version.clone().unwrap();
    let patch = json!({
        "metadata": {"resourceVersion": rv},
        "spec": {"template": {"metadata": {"annotations": {
            "kubectl.kubernetes.io/restartedAt": "2026-11-26T12:00:00Z",
            "digest.pushroll.io/app": "sha256:abc"
        }}}}
    });
    let pp = PatchParams::apply("pushroll");
    let pp = PatchParams { force: false, ..pp };
    let d2 = api
        .patch("web", &pp, &Patch::Strategic(&patch))
        .await
        .unwrap();
    assert_eq!(d2.metadata.generation, Some(2));
    let annotations = d2
        .spec
        .unwrap()
        .template
        .metadata
        .unwrap()
        .annotations
        .unwrap();
    assert_eq!(annotations["digest.pushroll.io/app"], "sha256:abc");
    // The same rv again is stale now.
    let st = api_status(
        api.patch("web", &pp, &Patch::Strategic(&patch))
            .await
            .unwrap_err(),
    );
    assert_eq!((st.code, st.reason.as_str()), (409, "Conflict"));
    assert!(st.is_conflict());
    let rec = s.requests_for("patch", Some("deployments")).pop().unwrap();
    assert_eq!(rec.field_manager.as_deref(), Some("pushroll"));
    assert_eq!(rec.status, 409);

    let st = api_status(api.get("missing").await.unwrap_err());
    assert!(st.is_not_found());
}

#[tokio::test]
async fn configmaps_events_and_leases() {
    let s = FakeApiServer::start().await;
    s.ensure_namespace("ns");
    let client = kube_client(&s, "ns").await;

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "ns");
    let cm: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "pushroll-index"}, "data": {"index.json": "{}"}}),
    )
    .unwrap();
    let created = cms.create(&PostParams::default(), &cm).await.unwrap();
    let st = api_status(cms.create(&PostParams::default(), &cm).await.unwrap_err());
    assert!(st.is_already_exists());
    let mut stale = created.clone();
    let mut fresh = created.clone();
    fresh
        .data
        .as_mut()
        .unwrap()
        .insert("index.json".into(), "{\"version\":1}".into());
    cms.replace("pushroll-index", &PostParams::default(), &fresh)
        .await
        .unwrap();
    stale
        .data
        .as_mut()
        .unwrap()
        .insert("index.json".into(), "{\"version\":2}".into());
    let st = api_status(
        cms.replace("pushroll-index", &PostParams::default(), &stale)
            .await
            .unwrap_err(),
    );
    assert!(st.is_conflict());
    cms.delete("pushroll-index", &DeleteParams::default())
        .await
        .unwrap();
    assert!(cms.get_opt("pushroll-index").await.unwrap().is_none());

    let events: Api<Event> = Api::namespaced(client.clone(), "ns");
    let ev: Event = serde_json::from_value(json!({
        "metadata": {"generateName": "web."},
        "involvedObject": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "namespace": "ns"},
        "reason": "PushRestart", "message": "app:v1 sha256:abc message 123", "type": "Normal"
    }))
    .unwrap();
    let e = events.create(&PostParams::default(), &ev).await.unwrap();
    assert!(e.metadata.name.unwrap().starts_with("web."));

    let leases: Api<Lease> = Api::namespaced(client, "ns");
    let apply = |holder: &str| json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "spec": {"holderIdentity": holder}});
    leases
        .patch(
            "leader",
            &PatchParams::apply("a"),
            &Patch::Apply(apply("a")),
        )
        .await
        .unwrap();
    let st = api_status(
        leases
            .patch(
                "leader",
                &PatchParams::apply("b"),
                &Patch::Apply(apply("b")),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!((st.code, st.reason.as_str()), (409, "Conflict"));
    // A strategic patch (an Update) takes the field; then b may apply.
    leases
        .patch(
            "leader",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"holderIdentity": null}})),
        )
        .await
        .unwrap();
    let l = leases
        .patch(
            "leader",
            &PatchParams::apply("b"),
            &Patch::Apply(apply("b")),
        )
        .await
        .unwrap();
    assert_eq!(l.spec.unwrap().holder_identity.as_deref(), Some("b"));
}
