//! RBAC enforcement: the pure request-info parser and authorizer in
//! tables, then HTTP with kube-rs (and kubectl when present) as
//! ServiceAccount identities. Expected messages were taken from a real
//! kube-apiserver 1.20.2 (`scripts/kube-real.sh`) answering the same
//! requests.

mod common;

use std::path::Path;

use common::*;
use fake_apiserver::rbac::{
    self, Decision, Policy, RequestInfo, UserInfo, authorize, forbidden, request_info,
};
use fake_apiserver::{FakeApiServer, Options};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::{Value, json};

const SA: &str = "system:serviceaccount:pushroll:pushroll";

// ------------------------------------------------------------ pure parts

#[test]
fn request_info_follows_the_request_info_factory() {
    // (method, path, query) -> (resource request, verb, group, ns, resource, sub, name)
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a str,
        bool,
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        &'a str,
    );
    let cases: &[Case] = &[
        (
            "GET",
            "/api/v1/namespaces/prod/configmaps/a",
            "",
            true,
            "get",
            "",
            "prod",
            "configmaps",
            "",
            "a",
        ),
        (
            "HEAD",
            "/api/v1/namespaces/prod/configmaps/a",
            "",
            true,
            "get",
            "",
            "prod",
            "configmaps",
            "",
            "a",
        ),
        (
            "GET",
            "/api/v1/namespaces/prod/configmaps",
            "",
            true,
            "list",
            "",
            "prod",
            "configmaps",
            "",
            "",
        ),
        (
            "GET",
            "/api/v1/namespaces/prod/configmaps",
            "watch=1",
            true,
            "watch",
            "",
            "prod",
            "configmaps",
            "",
            "",
        ),
        (
            "GET",
            "/api/v1/namespaces/prod/configmaps",
            "watch=yes",
            true,
            "watch",
            "",
            "prod",
            "configmaps",
            "",
            "",
        ),
        (
            "GET",
            "/api/v1/namespaces/prod/configmaps",
            "watch=false",
            true,
            "list",
            "",
            "prod",
            "configmaps",
            "",
            "",
        ),
        (
            "GET",
            "/api/v1/namespaces/prod/configmaps",
            "fieldSelector=metadata.name%3Da",
            true,
            "list",
            "",
            "prod",
            "configmaps",
            "",
            "a",
        ),
        (
            "GET",
            "/api/v1/namespaces/prod/configmaps",
            "watch=true&fieldSelector=metadata.name%3D%3Da%2Cx%3Dy",
            true,
            "watch",
            "",
            "prod",
            "configmaps",
            "",
            "a",
        ),
        (
            "GET",
            "/api/v1/namespaces/prod/configmaps",
            "fieldSelector=metadata.name!%3Da",
            true,
            "list",
            "",
            "prod",
            "configmaps",
            "",
            "",
        ),
        (
            "GET",
            "/api/v1/watch/namespaces/prod/configmaps/a",
            "",
            true,
            "watch",
            "",
            "prod",
            "configmaps",
            "",
            "a",
        ),
        (
            "GET",
            "/apis/apps/v1/deployments",
            "",
            true,
            "list",
            "apps",
            "",
            "deployments",
            "",
            "",
        ),
        (
            "POST",
            "/apis/apps/v1/namespaces/prod/deployments",
            "",
            true,
            "create",
            "apps",
            "prod",
            "deployments",
            "",
            "",
        ),
        (
            "PUT",
            "/apis/apps/v1/namespaces/prod/deployments/web/status",
            "",
            true,
            "update",
            "apps",
            "prod",
            "deployments",
            "status",
            "web",
        ),
        (
            "PATCH",
            "/apis/apps/v1/namespaces/prod/deployments/web",
            "",
            true,
            "patch",
            "apps",
            "prod",
            "deployments",
            "",
            "web",
        ),
        (
            "DELETE",
            "/apis/apps/v1/namespaces/prod/deployments/web",
            "",
            true,
            "delete",
            "apps",
            "prod",
            "deployments",
            "",
            "web",
        ),
        (
            "DELETE",
            "/api/v1/namespaces/prod/configmaps",
            "",
            true,
            "deletecollection",
            "",
            "prod",
            "configmaps",
            "",
            "",
        ),
        // A namespace is its own namespace.
        (
            "GET",
            "/api/v1/namespaces/prod",
            "",
            true,
            "get",
            "",
            "prod",
            "namespaces",
            "",
            "prod",
        ),
        (
            "PUT",
            "/api/v1/namespaces/prod/status",
            "",
            true,
            "update",
            "",
            "prod",
            "namespaces",
            "status",
            "prod",
        ),
        (
            "GET",
            "/api/v1/namespaces",
            "",
            true,
            "list",
            "",
            "",
            "namespaces",
            "",
            "",
        ),
        // Resources nobody serves are still resource requests.
        (
            "GET",
            "/apis/apps/v1/namespaces/x/replicas",
            "",
            true,
            "list",
            "apps",
            "x",
            "replicas",
            "",
            "",
        ),
        (
            "GET",
            "/apis/rbac.authorization.k8s.io/v1/clusterroles/system:discovery",
            "",
            true,
            "get",
            "rbac.authorization.k8s.io",
            "",
            "clusterroles",
            "",
            "system:discovery",
        ),
        // Discovery and the rest are non-resource requests.
        ("GET", "/api/v1", "", false, "get", "", "", "", "", ""),
        ("GET", "/apis/apps/v1", "", false, "get", "", "", "", "", ""),
        ("GET", "/apis", "", false, "get", "", "", "", "", ""),
        ("POST", "/version", "", false, "post", "", "", "", "", ""),
        (
            "GET",
            "/openapi/v3/apis/apps/v1",
            "",
            false,
            "get",
            "",
            "",
            "",
            "",
            "",
        ),
    ];
    for &(method, path, query, res, verb, group, ns, resource, sub, name) in cases {
        let got = request_info(method, path, query);
        let want = RequestInfo {
            is_resource_request: res,
            path: path.into(),
            verb: verb.into(),
            api_group: group.into(),
            api_version: if res { "v1".into() } else { String::new() },
            namespace: ns.into(),
            resource: resource.into(),
            subresource: sub.into(),
            name: name.into(),
        };
        assert_eq!(got, want, "{method} {path}?{query}");
    }
}

fn policy(objects: &[Value]) -> Policy {
    let mut all = rbac::bootstrap_objects();
    all.extend_from_slice(objects);
    Policy::from_objects(&all)
}

fn cluster_role(name: &str, rules: Value) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name}, "rules": rules})
}

fn role(ns: &str, name: &str, rules: Value) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": name, "namespace": ns}, "rules": rules})
}

fn binding(ns: Option<&str>, name: &str, role_kind: &str, role: &str, subjects: Value) -> Value {
    let mut meta = json!({"name": name});
    if let Some(ns) = ns {
        meta["namespace"] = ns.into();
    }
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": if ns.is_some() { "RoleBinding" } else { "ClusterRoleBinding" },
        "metadata": meta,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
        "subjects": subjects,
    })
}

fn sa_subject(ns: &str, name: &str) -> Value {
    json!([{"kind": "ServiceAccount", "name": name, "namespace": ns}])
}

#[test]
fn authorizer_table() {
    let p = policy(&[
        // What deploy/base/rbac-serve.yaml grants.
        cluster_role(
            "serve",
            json!([
                {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets", "daemonsets"], "verbs": ["get", "patch"]},
                {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}
            ]),
        ),
        binding(
            None,
            "serve",
            "ClusterRole",
            "serve",
            sa_subject("pushroll", "pushroll"),
        ),
        role(
            "pushroll",
            "serve",
            json!([{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["pushroll-index"], "verbs": ["get", "list", "watch", "create", "deletecollection", "update"]}]),
        ),
        binding(
            Some("pushroll"),
            "serve",
            "Role",
            "serve",
            sa_subject("pushroll", "pushroll"),
        ),
        // A ClusterRole bound in one namespace only, to a group.
        cluster_role(
            "cm-reader",
            json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]),
        ),
        binding(
            Some("team"),
            "readers",
            "ClusterRole",
            "cm-reader",
            json!([{"kind": "Group", "name": "readers"}]),
        ),
        // Wildcards and subresources, to a user.
        cluster_role(
            "status-writer",
            json!([
                {"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["update"]},
                {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["*"]},
                {"apiGroups": ["coordination.k8s.io"], "resources": ["*"], "verbs": ["get"]},
                {"nonResourceURLs": ["/metrics", "/logs/*"], "verbs": ["get"]}
            ]),
        ),
        binding(
            None,
            "alice",
            "ClusterRole",
            "status-writer",
            json!([{"kind": "User", "name": "alice"}]),
        ),
        // A ServiceAccount subject without namespace in a RoleBinding means
        // the binding's namespace.
        cluster_role(
            "lease-all",
            json!([{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["*"]}]),
        ),
        binding(
            Some("pushroll"),
            "local-sa",
            "ClusterRole",
            "lease-all",
            json!([{"kind": "ServiceAccount", "name": "pushroll-indexer"}]),
        ),
        // ... and in a ClusterRoleBinding it matches nobody.
        binding(
            None,
            "nobody",
            "ClusterRole",
            "lease-all",
            json!([{"kind": "ServiceAccount", "name": "pushroll-indexer"}]),
        ),
    ]);
    let sa = UserInfo::service_account("pushroll", "pushroll");
    let idx = UserInfo::service_account("pushroll", "pushroll-indexer");
    let reader = UserInfo::authenticated("bob", &["readers"]);
    let alice = UserInfo::authenticated("alice", &[]);
    let anon = UserInfo::anonymous();
    let admin = UserInfo::admin();
    let root = UserInfo::new("root", &["system:masters"]);
    let r = RequestInfo::resource;
    let nr = RequestInfo::non_resource;
    let cases: Vec<(&str, &UserInfo, RequestInfo, bool)> = vec![
        (
            "cluster role: get anywhere",
            &sa,
            r("get", "apps", "deployments", "prod", "web"),
            true,
        ),
        (
            "cluster role: patch anywhere",
            &sa,
            r("patch", "apps", "statefulsets", "x", "db"),
            true,
        ),
        (
            "verb not granted",
            &sa,
            r("delete", "apps", "deployments", "prod", "web"),
            false,
        ),
        (
            "list not granted",
            &sa,
            r("list", "apps", "deployments", "", ""),
            false,
        ),
        (
            "group must match",
            &sa,
            r("get", "extensions", "deployments", "prod", "web"),
            false,
        ),
        (
            "subresource not granted by the resource",
            &sa,
            r("patch", "apps", "deployments/status", "prod", "web"),
            false,
        ),
        (
            "events create",
            &sa,
            r("create", "", "events", "prod", ""),
            true,
        ),
        (
            "resourceNames: the name",
            &sa,
            r("get", "", "configmaps", "pushroll", "pushroll-index"),
            true,
        ),
        (
            "resourceNames: another name",
            &sa,
            r("get", "", "configmaps", "pushroll", "other"),
            false,
        ),
        (
            "resourceNames: update the name",
            &sa,
            r("update", "", "configmaps", "pushroll", "pushroll-index"),
            true,
        ),
        (
            "resourceNames: list without name",
            &sa,
            r("list", "", "configmaps", "pushroll", ""),
            false,
        ),
        (
            "resourceNames: watch without name",
            &sa,
            r("watch", "", "configmaps", "pushroll", ""),
            false,
        ),
        (
            "resourceNames: list by fieldSelector name",
            &sa,
            r("list", "", "configmaps", "pushroll", "pushroll-index"),
            true,
        ),
        (
            "resourceNames: create",
            &sa,
            r("create", "", "configmaps", "pushroll", ""),
            false,
        ),
        (
            "resourceNames: deletecollection",
            &sa,
            r("deletecollection", "", "configmaps", "pushroll", ""),
            false,
        ),
        (
            "role only in its namespace",
            &sa,
            r("get", "", "configmaps", "prod", "pushroll-index"),
            false,
        ),
        (
            "rolebinding to clusterrole: in its namespace",
            &reader,
            r("list", "", "configmaps", "team", ""),
            true,
        ),
        (
            "rolebinding to clusterrole: other namespace",
            &reader,
            r("get", "", "configmaps", "other", "a"),
            false,
        ),
        (
            "rolebinding to clusterrole: not cluster-wide",
            &reader,
            r("list", "", "configmaps", "", ""),
            false,
        ),
        (
            "*/status",
            &alice,
            r("update", "apps", "deployments/status", "prod", "web"),
            true,
        ),
        (
            "*/status is not the resource",
            &alice,
            r("update", "apps", "deployments", "prod", "web"),
            false,
        ),
        (
            "*/status on core",
            &alice,
            r("update", "", "namespaces/status", "prod", "prod"),
            true,
        ),
        (
            "resource/subresource exact, verb *",
            &alice,
            r("patch", "apps", "deployments/scale", "prod", "web"),
            true,
        ),
        (
            "resources *",
            &alice,
            r("get", "coordination.k8s.io", "leases", "x", "l"),
            true,
        ),
        ("non-resource exact", &alice, nr("get", "/metrics"), true),
        (
            "non-resource prefix*",
            &alice,
            nr("get", "/logs/kube.log"),
            true,
        ),
        (
            "non-resource other verb",
            &alice,
            nr("post", "/metrics"),
            false,
        ),
        (
            "SA subject without namespace in a RoleBinding",
            &idx,
            r("patch", "coordination.k8s.io", "leases", "pushroll", "l"),
            true,
        ),
        (
            "... not in other namespaces, nor via the CRB",
            &idx,
            r("patch", "coordination.k8s.io", "leases", "prod", "l"),
            false,
        ),
        ("discovery for authenticated", &sa, nr("get", "/apis"), true),
        ("discovery /api/*", &sa, nr("get", "/api/v1"), true),
        ("openapi", &sa, nr("get", "/openapi/v3/apis/apps/v1"), true),
        ("unknown path", &sa, nr("get", "/foo"), false),
        (
            "basic-user: selfsubjectaccessreviews",
            &sa,
            r(
                "create",
                "authorization.k8s.io",
                "selfsubjectaccessreviews",
                "",
                "",
            ),
            true,
        ),
        ("anonymous: version", &anon, nr("get", "/version"), true),
        ("anonymous: healthz", &anon, nr("get", "/healthz"), true),
        ("anonymous: no discovery", &anon, nr("get", "/apis"), false),
        (
            "anonymous: no resources",
            &anon,
            r("get", "", "configmaps", "pushroll", "pushroll-index"),
            false,
        ),
        (
            "system:masters: anything",
            &admin,
            r("deletecollection", "x.io", "things", "", ""),
            true,
        ),
        (
            "masters without bootstrap objects",
            &root,
            nr("delete", "/anything"),
            true,
        ),
    ];
    for (what, user, req, want) in cases {
        let got = authorize(&p, user, &req);
        assert_eq!(
            got.allowed(),
            want,
            "{what}: {} {req:?} -> {got:?}",
            user.name
        );
    }
    // An empty policy still lets system:masters through.
    assert!(
        authorize(
            &Policy::default(),
            &UserInfo::new("root", &["system:masters"]),
            &RequestInfo::non_resource("get", "/x")
        )
        .allowed()
    );
}

#[test]
fn denial_reasons_name_missing_roles_like_the_real_server() {
    let sa = UserInfo::service_account("pushroll", "pushroll");
    let p = policy(&[
        binding(
            Some("prod"),
            "missing",
            "Role",
            "nope",
            sa_subject("pushroll", "pushroll"),
        ),
        binding(
            None,
            "missing-cr",
            "ClusterRole",
            "nope-cluster",
            json!([{"kind": "Group", "name": "system:serviceaccounts"}]),
        ),
        // A binding that does not apply adds nothing.
        binding(
            None,
            "other",
            "ClusterRole",
            "absent",
            json!([{"kind": "User", "name": "x"}]),
        ),
    ]);
    let req = RequestInfo::resource("get", "", "configmaps", "prod", "b");
    let Decision::Deny(reason) = authorize(&p, &sa, &req) else {
        panic!("allowed")
    };
    assert_eq!(
        forbidden(&sa, &req, &reason).message,
        format!(
            "configmaps \"b\" is forbidden: User \"{SA}\" cannot get resource \"configmaps\" in API group \"\" in the namespace \"prod\": RBAC: [clusterrole.rbac.authorization.k8s.io \"nope-cluster\" not found, role.rbac.authorization.k8s.io \"nope\" not found]"
        )
    );
    let req = RequestInfo::resource("list", "", "namespaces", "", "");
    let Decision::Deny(reason) = authorize(&p, &sa, &req) else {
        panic!("allowed")
    };
    assert_eq!(
        forbidden(&sa, &req, &reason).message,
        format!(
            "namespaces is forbidden: User \"{SA}\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope: RBAC: clusterrole.rbac.authorization.k8s.io \"nope-cluster\" not found"
        )
    );
    let req = RequestInfo::non_resource("post", "/version");
    let Decision::Deny(reason) = authorize(&p, &sa, &req) else {
        panic!("allowed")
    };
    let e = forbidden(&sa, &req, &reason);
    assert_eq!(
        e.message,
        format!(
            "forbidden: User \"{SA}\" cannot post path \"/version\": RBAC: clusterrole.rbac.authorization.k8s.io \"nope-cluster\" not found"
        )
    );
    assert_eq!(e.details, Some(json!({})));
}

#[test]
fn forbidden_messages_are_the_real_ones() {
    let sa = UserInfo::service_account("pushroll", "pushroll");
    let cases = [
        (
            request_info("PATCH", "/apis/apps/v1/namespaces/prod/deployments/web", ""),
            format!(
                "deployments.apps \"web\" is forbidden: User \"{SA}\" cannot patch resource \"deployments\" in API group \"apps\" in the namespace \"prod\""
            ),
            json!({"name": "web", "group": "apps", "kind": "deployments"}),
        ),
        (
            request_info("GET", "/apis/apps/v1/deployments", ""),
            format!(
                "deployments.apps is forbidden: User \"{SA}\" cannot list resource \"deployments\" in API group \"apps\" at the cluster scope"
            ),
            json!({"group": "apps", "kind": "deployments"}),
        ),
        (
            request_info(
                "GET",
                "/apis/apps/v1/namespaces/prod/deployments",
                "watch=1",
            ),
            format!(
                "deployments.apps is forbidden: User \"{SA}\" cannot watch resource \"deployments\" in API group \"apps\" in the namespace \"prod\""
            ),
            json!({"group": "apps", "kind": "deployments"}),
        ),
        (
            request_info("POST", "/api/v1/namespaces/prod/configmaps", ""),
            format!(
                "configmaps is forbidden: User \"{SA}\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"prod\""
            ),
            json!({"kind": "configmaps"}),
        ),
        (
            request_info(
                "PUT",
                "/apis/apps/v1/namespaces/prod/deployments/web/status",
                "",
            ),
            format!(
                "deployments.apps \"web\" is forbidden: User \"{SA}\" cannot update resource \"deployments/status\" in API group \"apps\" in the namespace \"prod\""
            ),
            json!({"name": "web", "group": "apps", "kind": "deployments"}),
        ),
        (
            request_info("GET", "/api/v1/namespaces/prod", ""),
            format!(
                "namespaces \"prod\" is forbidden: User \"{SA}\" cannot get resource \"namespaces\" in API group \"\" in the namespace \"prod\""
            ),
            json!({"name": "prod", "kind": "namespaces"}),
        ),
        (
            request_info("DELETE", "/api/v1/namespaces/prod/configmaps", ""),
            format!(
                "configmaps is forbidden: User \"{SA}\" cannot deletecollection resource \"configmaps\" in API group \"\" in the namespace \"prod\""
            ),
            json!({"kind": "configmaps"}),
        ),
        (
            request_info("GET", "/foo", ""),
            format!("forbidden: User \"{SA}\" cannot get path \"/foo\""),
            json!({}),
        ),
    ];
    for (req, message, details) in cases {
        let e = forbidden(&sa, &req, "");
        assert_eq!((e.code, e.reason), (403, "Forbidden"));
        assert_eq!(e.message, message);
        assert_eq!(e.details, Some(details), "{message}");
    }
}

// ------------------------------------------------------------ over HTTP

fn rbac_server() -> FakeApiServer {
    FakeApiServer::start_with(Options {
        rbac: true,
        ..Options::default()
    })
}

async fn client_from(kubeconfig: &str) -> kube::Client {
    init();
    let kc = kube::config::Kubeconfig::from_yaml(kubeconfig).expect("kubeconfig parses");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .expect("config");
    kube::Client::try_from(cfg).expect("client")
}

/// The message of the 403 Forbidden Status that `result` failed with.
fn forbidden_message<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> String {
    let st = api_status(result.unwrap_err());
    assert_eq!((st.code, st.reason.as_str()), (403, "Forbidden"));
    st.message
}

fn api_status(e: kube::Error) -> Box<kube::core::Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// The objects of a YAML file of the repository's `deploy/base`.
fn deploy_rbac(file: &str) -> Vec<Value> {
    use serde::Deserialize as _;
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/base")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

#[tokio::test]
async fn service_account_allowed_denied_and_resource_names() {
    let s = rbac_server();
    for obj in deploy_rbac("rbac-serve.yaml") {
        s.insert(obj);
    }
    s.insert(deployment("prod", "web", "app:v1"));
    s.insert(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "pushroll-index", "namespace": "pushroll"}, "data": {"index.json": "{}"}}));
    s.insert(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "other", "namespace": "pushroll"}}));
    let token = s.add_service_account("pushroll", "pushroll");
    let client = client_from(&s.kubeconfig_for(SA, "pushroll")).await;
    assert_eq!(s.user_of_token(&token).unwrap().name, SA);

    // Allowed: what pushroll serve does.
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "prod");
    let d = deploys.get("web").await.unwrap();
    let patch = json!({"metadata": {"resourceVersion": d.metadata.resource_version},
        "spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-27T00:00:00Z"}}}}});
    deploys
        .patch("web", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .unwrap();
    let rec = s.requests_for("patch", Some("deployments")).pop().unwrap();
    assert_eq!((rec.status, rec.user.as_deref()), (200, Some(SA)));

    // Denied: exact Status as the real server writes it.
    let st = api_status(
        deploys
            .delete("web", &Default::default())
            .await
            .unwrap_err(),
    );
    assert_eq!((st.code, st.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        st.message,
        format!(
            "deployments.apps \"web\" is forbidden: User \"{SA}\" cannot delete resource \"deployments\" in API group \"apps\" in the namespace \"prod\""
        )
    );
    let all: Api<Deployment> = Api::all(client.clone());
    assert_eq!(
        forbidden_message(all.list(&ListParams::default()).await),
        format!(
            "deployments.apps is forbidden: User \"{SA}\" cannot list resource \"deployments\" in API group \"apps\" at the cluster scope"
        )
    );
    let http = http();
    let (code, _, body) = send(
        http.put(format!("{}/status", deploy_url(&s, "prod", "web")))
            .bearer_auth(&token)
            .json(&json!({})),
    )
    .await;
    assert_eq!(code, 403);
    assert_eq!(
        body,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("deployments.apps \"web\" is forbidden: User \"{SA}\" cannot update resource \"deployments/status\" in API group \"apps\" in the namespace \"prod\""),
            "reason": "Forbidden", "details": {"name": "web", "group": "apps", "kind": "deployments"}, "code": 403})
    );
    // Authorization comes before routing: an unserved resource is a 403.
    let (code, _, body) = send(
        http.get(format!("{}/apis/apps/v1/namespaces/x/replicas", s.url()))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(code, 403);
    assert_eq!(
        body["message"],
        format!(
            "replicas.apps is forbidden: User \"{SA}\" cannot list resource \"replicas\" in API group \"apps\" in the namespace \"x\""
        )
    );
    // Discovery is open to authenticated users; other paths are not.
    for path in [
        "/version",
        "/api",
        "/apis",
        "/apis/apps/v1",
        "/healthz",
        "/openapi/v3",
    ] {
        let (code, _, _) = send(http.get(format!("{}{path}", s.url())).bearer_auth(&token)).await;
        assert_eq!(code, 200, "{path}");
    }
    let (code, _, body) = send(http.get(format!("{}/foo", s.url())).bearer_auth(&token)).await;
    assert_eq!(
        (code, body["message"].clone()),
        (
            403,
            json!(format!("forbidden: User \"{SA}\" cannot get path \"/foo\""))
        )
    );

    // resourceNames: the one ConfigMap, by name only.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "pushroll");
    cms.get("pushroll-index").await.unwrap();
    assert_eq!(
        forbidden_message(cms.get("other").await),
        format!(
            "configmaps \"other\" is forbidden: User \"{SA}\" cannot get resource \"configmaps\" in API group \"\" in the namespace \"pushroll\""
        )
    );
    assert_eq!(
        forbidden_message(cms.list(&ListParams::default()).await),
        format!(
            "configmaps is forbidden: User \"{SA}\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"pushroll\""
        )
    );
    // The Role is namespaced: the same name elsewhere is denied.
    let elsewhere: Api<ConfigMap> = Api::namespaced(client.clone(), "prod");
    let st = api_status(elsewhere.get("pushroll-index").await.unwrap_err());
    assert_eq!(st.code, 403);
    // A list narrowed to the name by fieldSelector carries the name, so
    // resourceNames can allow it — once the verb is granted.
    let mut serve_role = s
        .get(
            "rbac.authorization.k8s.io/v1",
            "Role",
            "pushroll",
            "pushroll-serve",
        )
        .unwrap();
    serve_role["rules"][0]["verbs"] = json!(["get", "list", "watch"]);
    s.insert(serve_role);
    let listed = cms
        .list(&ListParams::default().fields("metadata.name=pushroll-index"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    let st = api_status(cms.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(st.code, 403);
    // Creating cannot be limited by name.
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "pushroll-index"}})).unwrap();
    let mut role = s
        .get(
            "rbac.authorization.k8s.io/v1",
            "Role",
            "pushroll",
            "pushroll-serve",
        )
        .unwrap();
    role["rules"][0]["verbs"] = json!(["get", "create"]);
    s.insert(role);
    assert_eq!(
        forbidden_message(cms.create(&PostParams::default(), &cm).await),
        format!(
            "configmaps is forbidden: User \"{SA}\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"pushroll\""
        )
    );
}

#[tokio::test]
async fn role_binding_to_a_cluster_role_is_scoped_to_its_namespace() {
    let s = rbac_server();
    s.insert(cluster_role(
        "cm-reader",
        json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}]),
    ));
    s.insert(binding(
        Some("team"),
        "read",
        "ClusterRole",
        "cm-reader",
        sa_subject("pushroll", "pushroll"),
    ));
    for ns in ["team", "other"] {
        s.insert(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": ns}}));
    }
    s.add_service_account("pushroll", "pushroll");
    let dir = tempfile::tempdir().unwrap();
    let path = s.write_kubeconfig_for(dir.path(), SA);
    assert_eq!(
        path.file_name().unwrap(),
        "kubeconfig-system_serviceaccount_pushroll_pushroll"
    );
    let client = client_from(
        &std::fs::read_to_string(&path)
            .unwrap()
            .replace("namespace: default", "namespace: team"),
    )
    .await;
    let team: Api<ConfigMap> = Api::namespaced(client.clone(), "team");
    assert_eq!(
        team.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    team.get("c").await.unwrap();
    let other: Api<ConfigMap> = Api::namespaced(client.clone(), "other");
    assert_eq!(
        forbidden_message(other.get("c").await),
        format!(
            "configmaps \"c\" is forbidden: User \"{SA}\" cannot get resource \"configmaps\" in API group \"\" in the namespace \"other\""
        )
    );
    let all: Api<ConfigMap> = Api::all(client.clone());
    assert_eq!(
        forbidden_message(all.list(&ListParams::default()).await),
        format!(
            "configmaps is forbidden: User \"{SA}\" cannot list resource \"configmaps\" in API group \"\" at the cluster scope"
        )
    );

    // Watches are authorized as watch, before streaming.
    use futures::StreamExt;
    let mut stream = team
        .watch(&WatchParams::default().timeout(1), "0")
        .await
        .unwrap()
        .boxed();
    let first = stream.next().await.unwrap().unwrap();
    assert!(matches!(first, WatchEvent::Added(_)), "{first:?}");
    let st = api_status(
        other
            .watch(&WatchParams::default(), "0")
            .await
            .err()
            .expect("denied"),
    );
    assert_eq!(
        st.message,
        format!(
            "configmaps is forbidden: User \"{SA}\" cannot watch resource \"configmaps\" in API group \"\" in the namespace \"other\""
        )
    );
    let rec = s.requests_for("watch", Some("configmaps")).pop().unwrap();
    assert_eq!((rec.status, rec.namespace.as_deref()), (403, Some("other")));

    // A ClusterRoleBinding grants it everywhere.
    s.insert(binding(
        None,
        "read-all",
        "ClusterRole",
        "cm-reader",
        sa_subject("pushroll", "pushroll"),
    ));
    other.get("c").await.unwrap();
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        2
    );
}

#[tokio::test]
async fn tokens_anonymous_and_admin() {
    let s = rbac_server();
    s.ensure_namespace("prod");
    // Unknown token: 401 with the real Status.
    let client = client_from(&s.kubeconfig_with_token("nope", "prod")).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "prod");
    let st = api_status(cms.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(
        (st.code, st.reason.as_str(), st.message.as_str()),
        (401, "Unauthorized", "Unauthorized")
    );
    let http = http();
    let (code, _, body) = send(http.get(format!("{}/version", s.url())).bearer_auth("nope")).await;
    assert_eq!(code, 401);
    assert_eq!(
        body,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "Unauthorized", "reason": "Unauthorized", "code": 401})
    );
    // No token: system:anonymous, which may read /version and /healthz only.
    let (code, _, _) = send(http.get(format!("{}/version", s.url()))).await;
    assert_eq!(code, 200);
    let (code, _, body) =
        send(http.get(format!("{}/api/v1/namespaces/prod/configmaps", s.url()))).await;
    assert_eq!(code, 403);
    assert_eq!(
        body["message"],
        "configmaps is forbidden: User \"system:anonymous\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"prod\""
    );
    let (code, _, body) = send(http.get(format!("{}/apis", s.url()))).await;
    assert_eq!(
        (code, body["message"].clone()),
        (
            403,
            json!("forbidden: User \"system:anonymous\" cannot get path \"/apis\"")
        )
    );
    // A custom user with groups.
    s.add_token("t-bob", "bob", &["readers"]);
    s.insert(binding(
        Some("prod"),
        "readers",
        "ClusterRole",
        "cluster-admin",
        json!([{"kind": "Group", "name": "readers"}]),
    ));
    let (code, _, _) = send(
        http.get(format!("{}/api/v1/namespaces/prod/configmaps", s.url()))
            .bearer_auth("t-bob"),
    )
    .await;
    assert_eq!(code, 200);
    let (code, _, body) = send(
        http.get(format!("{}/api/v1/namespaces", s.url()))
            .bearer_auth("t-bob"),
    )
    .await;
    assert_eq!(code, 403, "{body}");

    // The default kubeconfig is admin (system:masters): everything.
    let admin = kube_client(&s, "prod").await;
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), "prod");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let rec = s.requests_for("create", Some("configmaps")).pop().unwrap();
    assert_eq!(rec.user.as_deref(), Some("admin"));
    // The bootstrap roles are stored, as in a real cluster.
    assert!(
        s.get(
            "rbac.authorization.k8s.io/v1",
            "ClusterRole",
            "",
            "system:discovery"
        )
        .is_some()
    );

    // Without anonymous auth (like scripts/kube-real.sh): 401.
    let strict = FakeApiServer::start_with(Options {
        rbac: true,
        anonymous_auth: false,
        ..Options::default()
    });
    let (code, _, _) = send(http.get(format!("{}/version", strict.url()))).await;
    assert_eq!(code, 401);

    // RBAC off (the default): any token or none may do anything.
    let open = FakeApiServer::start().await;
    let (code, _, _) = send(
        http.get(format!("{}/api/v1/namespaces", open.url()))
            .bearer_auth("nope"),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(open.requests().pop().unwrap().user, None);
    // ... until switched on.
    open.set_rbac(true);
    let (code, _, _) = send(
        http.get(format!("{}/api/v1/namespaces", open.url()))
            .bearer_auth("nope"),
    )
    .await;
    assert_eq!(code, 401);
}

#[tokio::test]
async fn rbac_objects_crud_validation_and_discovery() {
    let s = rbac_server();
    s.ensure_namespace("prod");
    let admin = kube_client(&s, "prod").await;
    let roles: Api<Role> = Api::namespaced(admin.clone(), "prod");
    let role: Role = serde_json::from_value(json!({"metadata": {"name": "r"}, "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]})).unwrap();
    roles.create(&PostParams::default(), &role).await.unwrap();
    assert_eq!(
        roles
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), "prod");
    let rb: RoleBinding = serde_json::from_value(json!({"metadata": {"name": "rb"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
        "subjects": [{"kind": "User", "name": "u"}]}))
    .unwrap();
    let created = bindings.create(&PostParams::default(), &rb).await.unwrap();
    // Defaulted like the real server.
    assert_eq!(
        created.subjects.unwrap()[0].api_group.as_deref(),
        Some("rbac.authorization.k8s.io")
    );
    // roleRef is immutable.
    let st = api_status(
        bindings
            .patch(
                "rb",
                &PatchParams::default(),
                &Patch::Merge(json!({"roleRef": {"name": "other"}})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(st.code, 422);
    assert_eq!(
        st.message,
        "RoleBinding.rbac.authorization.k8s.io \"rb\" is invalid: roleRef: Invalid value: rbac.RoleRef{APIGroup:\"rbac.authorization.k8s.io\", Kind:\"Role\", Name:\"other\"}: cannot change roleRef"
    );
    // Validation messages as the real server's.
    let http = http();
    let base = format!("{}/apis/rbac.authorization.k8s.io/v1", s.url());
    let (code, _, body) = send(http.post(format!("{base}/clusterrolebindings")).bearer_auth("fake-token").json(&json!({
        "metadata": {"name": "x"}, "subjects": [{"kind": "Foo", "name": "u"}, {"kind": "ServiceAccount", "name": "s"}]
    })))
    .await;
    assert_eq!(code, 422);
    assert_eq!(
        body["message"],
        "ClusterRoleBinding.rbac.authorization.k8s.io \"x\" is invalid: [roleRef.kind: Unsupported value: \"\": supported values: \"ClusterRole\", roleRef.name: Required value, subjects[0].kind: Unsupported value: \"Foo\": supported values: \"ServiceAccount\", \"User\", \"Group\", subjects[1].namespace: Required value]"
    );
    assert_eq!(
        body["details"]["causes"][0]["reason"],
        "FieldValueNotSupported"
    );
    let (code, _, body) = send(http.post(format!("{base}/namespaces/prod/roles")).bearer_auth("fake-token").json(&json!({
        "metadata": {"name": "x"}, "rules": [{"apiGroups": [""], "resources": ["pods"]}, {"verbs": ["get"]}]
    })))
    .await;
    assert_eq!(code, 422);
    assert_eq!(
        body["message"],
        "Role.rbac.authorization.k8s.io \"x\" is invalid: [rules[0].verbs: Required value: verbs must contain at least one value, rules[1].apiGroups: Required value: resource rules must supply at least one api group, rules[1].resources: Required value: resource rules must supply at least one resource]"
    );
    let (code, _, body) = send(
        http.post(format!("{base}/namespaces/prod/roles"))
            .bearer_auth("fake-token")
            .json(&json!({
                "metadata": {"name": "nr"}, "rules": [{"nonResourceURLs": ["/x"], "verbs": ["get"]}]
            })),
    )
    .await;
    assert_eq!(code, 422);
    assert_eq!(
        body["message"],
        "Role.rbac.authorization.k8s.io \"nr\" is invalid: rules[0].nonResourceURLs: Invalid value: []string{\"/x\"}: namespaced rules cannot apply to non-resource URLs"
    );
    // Names are path segments: colons allowed, slashes not.
    let (code, _, _) = send(
        http.post(format!("{base}/clusterroles"))
            .bearer_auth("fake-token")
            .json(&json!({"metadata": {"name": "system:foo"}, "rules": []})),
    )
    .await;
    assert_eq!(code, 201);
    let (code, _, body) = send(
        http.post(format!("{base}/clusterroles"))
            .bearer_auth("fake-token")
            .json(&json!({"metadata": {"name": "a%b"}, "rules": []})),
    )
    .await;
    assert_eq!(code, 422);
    assert_eq!(
        body["message"],
        "ClusterRole.rbac.authorization.k8s.io \"a%b\" is invalid: metadata.name: Invalid value: \"a%b\": may not contain '%'"
    );
    // Discovery lists the four types like the real server.
    let (_, _, doc) = send(http.get(&base).bearer_auth("fake-token")).await;
    let names: Vec<(String, bool)> = doc["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["namespaced"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("clusterrolebindings", false),
            ("clusterroles", false),
            ("rolebindings", true),
            ("roles", true)
        ]
        .map(|(n, b)| (n.to_string(), b))
    );
}

fn kubectl_available() -> bool {
    std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success())
}

async fn kubectl(kubeconfig: &Path, cache: &Path, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .output()
        .await
        .expect("running kubectl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn kubectl_applies_the_deployed_rbac_and_the_service_account_is_bound() {
    if !kubectl_available() {
        eprintln!("SKIPPED kubectl_applies_the_deployed_rbac: kubectl is not on PATH");
        return;
    }
    let s = rbac_server();
    s.ensure_namespace("pushroll");
    s.insert(deployment("prod", "web", "app:v1"));
    let dir = tempfile::tempdir().unwrap();
    let admin = s.write_kubeconfig(dir.path());
    let cache = dir.path().join("cache");
    // kubectl sends no token to a plain-http server: it is anonymous, and
    // anonymous may not even read discovery...
    let (ok, _, err) = kubectl(&admin, &cache, &["get", "ns"]).await;
    assert!(!ok);
    assert!(
        err.contains("couldn't get current server API group list"),
        "{err}"
    );
    assert!(s.requests().iter().any(|r| r.path == "/api"
        && r.status == 403
        && r.user.as_deref() == Some("system:anonymous")));
    // ... unless the test says who it is.
    s.set_anonymous_user(UserInfo::admin());
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/base");
    for file in ["rbac-serve.yaml", "rbac-indexer.yaml"] {
        let path = deploy.join(file);
        let (ok, out, err) =
            kubectl(&admin, &cache, &["apply", "-f", path.to_str().unwrap()]).await;
        assert!(ok, "{file}: {out} {err}");
        assert!(
            out.contains("rolebinding.rbac.authorization.k8s.io/"),
            "{out}"
        );
    }
    assert!(
        s.get(
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            "",
            "pushroll-indexer"
        )
        .is_some()
    );
    let (ok, out, err) = kubectl(
        &admin,
        &cache,
        &["get", "rolebindings", "-n", "pushroll", "-o", "wide"],
    )
    .await;
    assert!(ok, "{err}");
    assert!(
        out.lines().any(|l| l.starts_with("pushroll-indexer")
            && l.contains("Role/pushroll-indexer")
            && l.contains("pushroll/pushroll-indexer")),
        "{out}"
    );

    // As the indexer: list deployments everywhere, but not delete them.
    s.set_anonymous_user(UserInfo::service_account("pushroll", "pushroll-indexer"));
    let (ok, out, err) = kubectl(&admin, &cache, &["get", "deployments", "-A", "-o", "name"]).await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "deployment.apps/web");
    let (ok, _, err) = kubectl(
        &admin,
        &cache,
        &["delete", "deployment", "web", "-n", "prod"],
    )
    .await;
    assert!(!ok);
    assert!(
        err.contains("deployments.apps \"web\" is forbidden: User \"system:serviceaccount:pushroll:pushroll-indexer\" cannot delete resource \"deployments\" in API group \"apps\" in the namespace \"prod\""),
        "{err}"
    );
}

#[test]
fn the_deployed_rbac_parses() {
    let p = Policy::from_objects(&deploy_rbac("rbac-indexer.yaml"));
    assert_eq!((p.roles.len(), p.cluster_role_bindings.len()), (1, 1));
    assert_eq!(p.roles[0].rules[0].resource_names, ["pushroll-index"]);
}
