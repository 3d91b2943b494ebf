//! resourceVersion, generation, status objects, patches, pagination,
//! dry-run and the request log, over real HTTP.

mod common;

use common::*;
use fake_apiserver::FakeApiServer;
use serde_json::{Value, json};

const SMP: &str = "application/strategic-merge-patch+json";

#[tokio::test]
async fn create_assigns_metadata_and_rv_is_global_and_monotonic() {
    let s = FakeApiServer::start().await;
    s.ensure_namespace("ns");
    let c = http();
    let base = format!("{}/apis/apps/v1/namespaces/ns/deployments", s.url());
    let (code, ct, a) = send(c.post(&base).json(&deployment("ns", "a", "img:1"))).await;
    assert_eq!((code, ct.as_str()), (201, "application/json"), "{a}");
    assert_eq!(a["metadata"]["generation"], 1);
    assert!(a["metadata"]["uid"].as_str().is_some_and(|u| u.len() == 36));
    assert!(
        a["metadata"]["creationTimestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert_eq!(a["status"], json!({}));
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}});
    let (code, _, c1) = send(
        c.post(format!("{}/api/v1/namespaces/ns/configmaps", s.url()))
            .json(&cm),
    )
    .await;
    assert_eq!(code, 201);
    assert_eq!(rv(&c1), rv(&a) + 1, "one counter across types");
    assert!(
        c1["metadata"].get("generation").is_none(),
        "configmaps have no generation"
    );
    assert_eq!(s.resource_version(), rv(&c1));
}

#[tokio::test]
async fn generation_moves_with_spec_only_and_noop_writes_do_not_bump() {
    let s = FakeApiServer::start().await;
    let d = s.insert(deployment("ns", "web", "img:1"));
    let c = http();
    let url = deploy_url(&s, "ns", "web");
    // Metadata-only change: rv bumps, generation does not.
    let (code, _, d2) = send(
        c.patch(&url)
            .header("content-type", SMP)
            .body(r#"{"metadata":{"labels":{"x":"y"}}}"#),
    )
    .await;
    assert_eq!(code, 200);
    assert!(rv(&d2) > rv(&d));
    assert_eq!(d2["metadata"]["generation"], 1);
    // Spec change: generation 2.
    let restart = json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"}}}}});
    let (_, _, d3) = send(
        c.patch(&url)
            .header("content-type", SMP)
            .body(restart.to_string()),
    )
    .await;
    assert_eq!(d3["metadata"]["generation"], 2);
    // The same patch again: nothing changes, rv stays.
    let (code, _, d4) = send(
        c.patch(&url)
            .header("content-type", SMP)
            .body(restart.to_string()),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(rv(&d4), rv(&d3));
    assert_eq!(s.resource_version(), rv(&d3));
    // A PUT of the stored object is a no-op too.
    let (code, _, d5) = send(c.put(&url).json(&d4)).await;
    assert_eq!(code, 200);
    assert_eq!(rv(&d5), rv(&d3));
    // Status in a main-resource write is ignored; /status writes only status.
    let mut with_status = d5.clone();
    with_status["status"] = json!({"readyReplicas": 3});
    let (_, _, d6) = send(c.put(&url).json(&with_status)).await;
    assert_eq!(d6["status"], json!({}));
    let (code, _, d7) = send(c.put(format!("{url}/status")).json(&with_status)).await;
    assert_eq!(code, 200, "{d7}");
    assert_eq!(d7["status"]["readyReplicas"], 3);
    assert_eq!(d7["metadata"]["generation"], 2);
}

/// kube-apiserver's rule per kind: a Deployment's generation moves with its
/// spec and its `metadata.annotations` (they are copied to its ReplicaSets);
/// a StatefulSet's or DaemonSet's with its spec only; labels and `/status`
/// writes never move it.
#[tokio::test]
async fn generation_rule_per_kind_spec_and_deployment_annotations() {
    let s = FakeApiServer::start().await;
    s.ensure_namespace("ns");
    let c = http();
    for (kind, plural, annotations_bump) in [
        ("Deployment", "deployments", true),
        ("StatefulSet", "statefulsets", false),
        ("DaemonSet", "daemonsets", false),
    ] {
        let mut obj = deployment("ns", "w", "img:1");
        obj["kind"] = kind.into();
        if kind == "StatefulSet" {
            obj["spec"]["serviceName"] = "w".into();
        }
        let base = format!("{}/apis/apps/v1/namespaces/ns/{plural}", s.url());
        let url = format!("{base}/w");
        let (code, _, o) = send(c.post(&base).json(&obj)).await;
        assert_eq!(code, 201, "{kind}: {o}");
        let mut want = 1;
        assert_eq!(o["metadata"]["generation"], want, "{kind}");
        let merge = |p: Value| {
            c.patch(&url)
                .header("content-type", "application/merge-patch+json")
                .body(p.to_string())
        };
        // An empty annotation map equals none: no change at all.
        let (_, _, o) = send(merge(json!({"metadata": {"annotations": {}}}))).await;
        assert_eq!(o["metadata"]["generation"], want, "{kind} {{}}: {o}");
        // Metadata annotation added, changed, removed.
        for a in [json!("1"), json!("2"), Value::Null] {
            let (code, _, o) = send(merge(json!({"metadata": {"annotations": {"foo": a}}}))).await;
            assert_eq!(code, 200, "{kind}: {o}");
            want += i64::from(annotations_bump);
            assert_eq!(o["metadata"]["generation"], want, "{kind} foo={a}");
        }
        // Labels never count.
        let (_, _, o) = send(merge(json!({"metadata": {"labels": {"x": "y"}}}))).await;
        assert_eq!(o["metadata"]["generation"], want, "{kind} label");
        // Pod-template annotation: a spec change.
        let (_, _, o) = send(merge(
            json!({"spec": {"template": {"metadata": {"annotations": {"t": "1"}}}}}),
        ))
        .await;
        want += 1;
        assert_eq!(o["metadata"]["generation"], want, "{kind} template");
        if kind != "DaemonSet" {
            let (_, _, o) = send(merge(json!({"spec": {"replicas": 3}}))).await;
            want += 1;
            assert_eq!(o["metadata"]["generation"], want, "{kind} replicas");
        }
        // A /status write, even one carrying other annotations, never bumps.
        let (_, _, mut st) = send(c.get(&url)).await;
        st["status"] = json!({"observedGeneration": want});
        st["metadata"]["annotations"] = json!({"via": "status"});
        let (code, _, o) = send(c.put(format!("{url}/status")).json(&st)).await;
        assert_eq!(code, 200, "{kind}: {o}");
        assert_eq!(o["status"]["observedGeneration"], want, "{kind}");
        assert_eq!(o["metadata"]["generation"], want, "{kind} status");
    }
}

#[tokio::test]
async fn status_objects_for_the_usual_failures() {
    let s = FakeApiServer::start().await;
    let d = s.insert(deployment("ns", "web", "img:1"));
    let c = http();
    let url = deploy_url(&s, "ns", "web");
    let base = format!("{}/apis/apps/v1/namespaces/ns/deployments", s.url());

    let (code, ct, b) = send(c.get(deploy_url(&s, "ns", "nope"))).await;
    assert_eq!((code, ct.as_str()), (404, "application/json"));
    assert_status(&b, 404, "NotFound");
    assert_eq!(b["message"], "deployments.apps \"nope\" not found");
    assert_eq!(
        b["details"],
        json!({"name": "nope", "group": "apps", "kind": "deployments"})
    );

    let (code, _, b) = send(c.post(&base).json(&deployment("ns", "web", "x"))).await;
    assert_eq!(code, 409);
    assert_status(&b, 409, "AlreadyExists");

    // Stale resourceVersion in a PUT body.
    let mut stale = d.clone();
    stale["metadata"]["resourceVersion"] = "1".into();
    stale["spec"]["replicas"] = 5.into();
    s.insert(deployment("ns", "web", "img:2"));
    let (code, _, b) = send(c.put(&url).json(&stale)).await;
    assert_eq!(code, 409);
    assert_status(&b, 409, "Conflict");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("the object has been modified")
    );

    // Stale resourceVersion in a patch body: the optimistic lock pushroll uses.
    let p = json!({"metadata": {"resourceVersion": rv(&d).to_string()}, "spec": {"replicas": 2}});
    let (code, _, b) = send(
        c.patch(&url)
            .header("content-type", SMP)
            .body(p.to_string()),
    )
    .await;
    assert_eq!(code, 409, "{b}");
    assert_status(&b, 409, "Conflict");
    let current = s.get("apps/v1", "Deployment", "ns", "web").unwrap();
    let p = json!({"metadata": {"resourceVersion": current["metadata"]["resourceVersion"]}, "spec": {"replicas": 2}});
    let (code, _, _) = send(
        c.patch(&url)
            .header("content-type", SMP)
            .body(p.to_string()),
    )
    .await;
    assert_eq!(code, 200);

    // Invalid names and missing names: 422 with causes.
    let (code, _, b) = send(c.post(&base).json(&deployment("ns", "Bad_Name", "x"))).await;
    assert_eq!(code, 422);
    assert_status(&b, 422, "Invalid");
    assert_eq!(b["details"]["kind"], "Deployment");
    assert_eq!(b["details"]["causes"][0]["field"], "metadata.name");
    let mut nameless = deployment("ns", "x", "x");
    nameless["metadata"].as_object_mut().unwrap().remove("name");
    let (code, _, b) = send(c.post(&base).json(&nameless)).await;
    assert_eq!(code, 422);
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("name or generateName is required")
    );
    // Workload validation.
    let mut no_sel = deployment("ns", "nosel", "x");
    no_sel["spec"].as_object_mut().unwrap().remove("selector");
    let (code, _, _) = send(c.post(&base).json(&no_sel)).await;
    assert_eq!(code, 422);

    // Unsupported patch type: 415 with a Status.
    let (code, _, b) = send(
        c.patch(&url)
            .header("content-type", "application/xml")
            .body("<x/>"),
    )
    .await;
    assert_eq!(code, 415);
    assert_status(&b, 415, "UnsupportedMediaType");

    // Name in body differs from the URL: the real server says 400.
    let mut other = s.get("apps/v1", "Deployment", "ns", "web").unwrap();
    other["metadata"]["name"] = "other".into();
    let (code, _, b) = send(c.put(&url).json(&other)).await;
    assert_eq!(code, 400);
    assert_status(&b, 400, "BadRequest");

    // Wrong method and unknown paths.
    let (code, _, b) = send(c.post(&url).json(&json!({}))).await;
    assert_eq!(code, 405);
    assert_status(&b, 405, "MethodNotAllowed");
    let (code, _, b) = send(c.get(format!(
        "{}/apis/apps/v1/namespaces/ns/replicasets",
        s.url()
    )))
    .await;
    assert_eq!(code, 404);
    assert_status(&b, 404, "NotFound");
    let (code, _, b) = send(c.get(format!("{}/nothing/here", s.url()))).await;
    assert_eq!(
        (code, b),
        (404, Value::String("404 page not found\n".into()))
    );

    // Creating in a namespace that does not exist.
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
    let (code, _, b) = send(
        c.post(format!("{}/api/v1/namespaces/ghost/configmaps", s.url()))
            .json(&cm),
    )
    .await;
    assert_eq!(code, 404);
    assert_eq!(b["message"], "namespaces \"ghost\" not found");
}

#[tokio::test]
async fn patch_formats_and_generate_name_and_dry_run() {
    let s = FakeApiServer::start().await;
    s.insert(deployment("ns", "web", "img:1"));
    let c = http();
    let url = deploy_url(&s, "ns", "web");
    let (code, _, d) = send(
        c.patch(&url)
            .header("content-type", "application/json-patch+json")
            .body(r#"[{"op":"test","path":"/spec/template/spec/containers/0/image","value":"img:1"},{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"img:2"},{"op":"add","path":"/metadata/labels/extra","value":"1"}]"#),
    )
    .await;
    assert_eq!(code, 200, "{d}");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "img:2"
    );
    let (code, _, b) = send(
        c.patch(&url)
            .header("content-type", "application/json-patch+json")
            .body(r#"[{"op":"test","path":"/spec/template/spec/containers/0/image","value":"img:1"}]"#),
    )
    .await;
    assert_eq!(code, 422, "{b}");
    // Merge patch replaces lists whole; strategic merge merges containers.
    let (_, _, d) = send(
        c.patch(&url)
            .header("content-type", "application/merge-patch+json")
            .body(r#"{"metadata":{"labels":{"extra":null}}}"#),
    )
    .await;
    assert!(d["metadata"]["labels"].get("extra").is_none());
    let (_, _, d) =
        send(c.patch(&url).header("content-type", SMP).body(
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"side","image":"s:1"}]}}}}"#,
        ))
        .await;
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // dryRun=All changes nothing.
    let before = s.resource_version();
    let (code, _, d) = send(
        c.patch(format!("{url}?dryRun=All&fieldManager=pushroll"))
            .header("content-type", SMP)
            .body(r#"{"spec":{"replicas":9}}"#),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(d["spec"]["replicas"], 9);
    assert_eq!(s.resource_version(), before);
    assert_eq!(
        s.get("apps/v1", "Deployment", "ns", "web").unwrap()["spec"]["replicas"],
        1
    );
    let rec = s.requests_for("patch", Some("deployments")).pop().unwrap();
    assert_eq!(rec.field_manager.as_deref(), Some("pushroll"));
    assert!(rec.dry_run);
    assert_eq!(rec.content_type.as_deref(), Some(SMP));
    assert_eq!(rec.namespace.as_deref(), Some("ns"));
    assert_eq!(rec.name.as_deref(), Some("web"));
    assert_eq!(rec.body, Some(json!({"spec": {"replicas": 9}})));

    // generateName.
    let ev = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"generateName": "web."},
                    "involvedObject": {"kind": "Deployment", "name": "web", "namespace": "ns"},
                    "reason": "PushRestart", "message": "m", "type": "Normal"});
    let (code, _, e) = send(
        c.post(format!("{}/api/v1/namespaces/ns/events", s.url()))
            .json(&ev),
    )
    .await;
    assert_eq!(code, 201);
    let name = e["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("web.") && name.len() == 9, "{name}");
}

#[tokio::test]
async fn pagination_with_limit_and_continue() {
    let s = FakeApiServer::start().await;
    // "a-x" sorts before "a" as a "ns/name" string but after it as a
    // (namespace, name) key: paging must follow the key order.
    for ns in ["a", "a-x"] {
        for i in 0..5 {
            s.insert(deployment(ns, &format!("d{i}"), "img"));
        }
    }
    let c = http();
    let mut names = Vec::new();
    let mut cont = String::new();
    let mut pages = 0;
    loop {
        let url = format!(
            "{}/apis/apps/v1/deployments?limit=3&continue={cont}",
            s.url()
        );
        let (code, _, page) = send(c.get(url)).await;
        assert_eq!(code, 200);
        assert_eq!(page["kind"], "DeploymentList");
        pages += 1;
        for it in page["items"].as_array().unwrap() {
            assert!(it.get("kind").is_none(), "list items carry no kind");
            names.push(format!(
                "{}/{}",
                it["metadata"]["namespace"].as_str().unwrap(),
                it["metadata"]["name"].as_str().unwrap()
            ));
        }
        match page["metadata"]["continue"].as_str() {
            Some(c) => {
                assert!(page["metadata"]["remainingItemCount"].as_u64().unwrap() > 0);
                cont = c.to_string();
            }
            None => break,
        }
    }
    assert_eq!(pages, 4);
    assert_eq!(names.len(), 10);
    assert_eq!(names[0], "a/d0");
    assert_eq!(names[9], "a-x/d4");
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 10, "no item skipped or repeated: {names:?}");
    let (_, _, one_ns) = send(c.get(format!(
        "{}/apis/apps/v1/namespaces/a-x/deployments?resourceVersion=0",
        s.url()
    )))
    .await;
    assert_eq!(one_ns["items"].as_array().unwrap().len(), 5);
    let (_, _, sel) = send(c.get(format!(
        "{}/apis/apps/v1/deployments?labelSelector=app%3Dd1",
        s.url()
    )))
    .await;
    assert_eq!(sel["items"].as_array().unwrap().len(), 2);
    // A token from before a compaction is expired.
    let (_, _, first) = send(c.get(format!("{}/apis/apps/v1/deployments?limit=3", s.url()))).await;
    s.insert(deployment("a", "new", "img"));
    s.compact();
    let token = first["metadata"]["continue"].as_str().unwrap();
    let (code, _, b) = send(c.get(format!(
        "{}/apis/apps/v1/deployments?limit=3&continue={token}",
        s.url()
    )))
    .await;
    assert_eq!(code, 410);
    assert_status(&b, 410, "Expired");
}

#[tokio::test]
async fn server_side_apply_conflicts_between_managers() {
    let s = FakeApiServer::start().await;
    s.ensure_namespace("ns");
    let c = http();
    let url = format!(
        "{}/apis/coordination.k8s.io/v1/namespaces/ns/leases/leader",
        s.url()
    );
    let apply = |holder: &str| {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15}}).to_string()
    };
    let ct = "application/apply-patch+yaml";
    let (code, _, l) = send(
        c.patch(format!("{url}?fieldManager=a"))
            .header("content-type", ct)
            .body(apply("a")),
    )
    .await;
    assert_eq!(code, 201, "{l}");
    let (code, _, b) = send(
        c.patch(format!("{url}?fieldManager=b"))
            .header("content-type", ct)
            .body(apply("b")),
    )
    .await;
    assert_eq!(code, 409, "{b}");
    assert_status(&b, 409, "Conflict");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains(".spec.holderIdentity")
    );
    let (code, _, l) = send(
        c.patch(format!("{url}?fieldManager=b&force=true"))
            .header("content-type", ct)
            .body(apply("b")),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(l["spec"]["holderIdentity"], "b");
    let (code, _, _) = send(c.patch(&url).header("content-type", ct).body(apply("c"))).await;
    assert_eq!(code, 422, "apply needs a field manager");
}

#[tokio::test]
async fn delete_preconditions_and_finalizers() {
    let s = FakeApiServer::start().await;
    let mut d = deployment("ns", "web", "img");
    d["metadata"]["finalizers"] = json!(["example.com/hold"]);
    let d = s.insert(d);
    let c = http();
    let url = deploy_url(&s, "ns", "web");
    let (code, _, b) = send(
        c.delete(&url)
            .json(&json!({"preconditions": {"uid": "wrong"}})),
    )
    .await;
    assert_eq!(code, 409, "{b}");
    let (code, _, held) = send(c.delete(&url)).await;
    assert_eq!(code, 202);
    assert!(held["metadata"]["deletionTimestamp"].is_string());
    let (code, _, _) = send(
        c.patch(&url)
            .header("content-type", "application/merge-patch+json")
            .body(r#"{"metadata":{"finalizers":null}}"#),
    )
    .await;
    assert_eq!(code, 200);
    assert!(
        s.get("apps/v1", "Deployment", "ns", "web").is_none(),
        "gone once the last finalizer is removed"
    );
    let cm = s.insert(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "ns"}}));
    let (code, _, st) =
        send(c.delete(format!("{}/api/v1/namespaces/ns/configmaps/c", s.url()))).await;
    assert_eq!(code, 200);
    assert_eq!(st["status"], "Success");
    assert_eq!(st["details"]["uid"], cm["metadata"]["uid"]);
    let _ = d;
}

#[tokio::test]
async fn discovery_documents() {
    let s = FakeApiServer::start().await;
    let c = http();
    let (_, _, v) = send(c.get(format!("{}/version", s.url()))).await;
    assert_eq!(v["major"], "1");
    let (_, _, apis) = send(c.get(format!("{}/apis", s.url()))).await;
    let groups: Vec<&str> = apis["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        groups,
        ["apps", "coordination.k8s.io", "rbac.authorization.k8s.io"]
    );
    let (_, _, apps) = send(c.get(format!("{}/apis/apps/v1", s.url()))).await;
    let deploy = apps["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "deployments")
        .unwrap()
        .clone();
    assert_eq!(deploy["shortNames"], json!(["deploy"]));
    assert_eq!(deploy["namespaced"], true);
    assert_eq!(deploy["kind"], "Deployment");
    let (_, _, core) = send(c.get(format!("{}/api/v1", s.url()))).await;
    let ns = core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "namespaces")
        .unwrap()
        .clone();
    assert_eq!(ns["namespaced"], false);
}
