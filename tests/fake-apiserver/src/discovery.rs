//! Discovery documents (`/version`, `/api`, `/apis`, APIResourceLists), so
//! that kubectl and kube-rs' discovery find the served types.
//!
//! Only the legacy (unaggregated) discovery format is served: a client that
//! asks for `apidiscovery.k8s.io/v2` gets plain `application/json`, which
//! client-go and kube-rs treat as "aggregated discovery not supported" and
//! fall back to per-group-version lists.

use serde_json::{Value, json};

use crate::resources::{self, RESOURCES, ResourceInfo};

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-fake",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

fn group_entry(group: &str) -> Value {
    let versions: Vec<Value> = resources::group_versions()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(g, v)| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": versions, "preferredVersion": versions[0]})
}

/// The document for a discovery path, if it is one.
pub fn document(path: &str, host: &str) -> Option<Value> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["version"] => Some(version()),
        ["api"] => Some(json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}]
        })),
        ["apis"] => {
            let mut groups: Vec<&str> = resources::group_versions()
                .into_iter()
                .map(|(g, _)| g)
                .filter(|g| !g.is_empty())
                .collect();
            groups.dedup();
            Some(json!({
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": groups.iter().map(|g| group_entry(g)).collect::<Vec<_>>()
            }))
        }
        ["api", "v1"] => Some(resource_list("", "v1")),
        ["apis", g] if resources::group_versions().iter().any(|(gg, _)| gg == g) => {
            let mut e = group_entry(g);
            e["kind"] = "APIGroup".into();
            e["apiVersion"] = "v1".into();
            Some(e)
        }
        ["apis", g, v] if resources::group_versions().contains(&(g, v)) => {
            Some(resource_list(g, v))
        }
        ["openapi", "v3"] => Some(openapi_root()),
        ["openapi", "v3", "api", "v1"] => Some(openapi_group_version("", "v1")),
        ["openapi", "v3", "apis", g, v] if resources::group_versions().contains(&(g, v)) => {
            Some(openapi_group_version(g, v))
        }
        _ => None,
    }
}

fn entry(r: &ResourceInfo) -> Value {
    let verbs: Vec<&str> = if std::ptr::eq(r, resources::namespaces()) {
        VERBS
            .iter()
            .copied()
            .filter(|v| *v != "deletecollection")
            .collect()
    } else {
        VERBS.to_vec()
    };
    let mut e = json!({
        "name": r.resource,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": verbs,
    });
    if !r.short_names.is_empty() {
        e["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        e["categories"] = json!(r.categories);
    }
    e
}

fn resource_list(group: &str, version: &str) -> Value {
    let mut out = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        out.push(entry(r));
        if r.has_status {
            out.push(json!({
                "name": format!("{}/status", r.resource),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out})
}

/// `/openapi/v3`: the index of group-version documents. kubectl reads it
/// to learn that the server validates fields itself (`fieldValidation`),
/// and then needs no schemas for `create -f`.
fn openapi_root() -> Value {
    let mut paths = serde_json::Map::new();
    for (g, v) in resources::group_versions() {
        let key = if g.is_empty() {
            format!("api/{v}")
        } else {
            format!("apis/{g}/{v}")
        };
        paths.insert(
            key.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash=fake")}),
        );
    }
    json!({"paths": paths})
}

/// A group-version document with the PATCH operations and their query
/// parameters (no schemas).
fn openapi_group_version(group: &str, version: &str) -> Value {
    let params: Vec<Value> = ["dryRun", "fieldManager", "fieldValidation", "force"]
        .iter()
        .map(|p| json!({"name": p, "in": "query", "schema": {"type": "string", "uniqueItems": true}}))
        .collect();
    let mut paths = serde_json::Map::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let path = if r.namespaced {
            format!(
                "{}/namespaces/{{namespace}}/{}/{{name}}",
                r.prefix(),
                r.resource
            )
        } else {
            format!("{}/{}/{{name}}", r.prefix(), r.resource)
        };
        paths.insert(
            path,
            json!({"patch": {
                "operationId": format!("patch{}", r.kind),
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
                "parameters": params,
                "responses": {"200": {"description": "OK"}}
            }}),
        );
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": {}}
    })
}
