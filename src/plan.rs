//! Where a push is turned into patches: which workloads restart, which
//! containers matched, and the strategic merge patch to send. Pure code:
//! the executor (`restart.rs`) fetches the workload, this decides.

use std::collections::BTreeMap;

use kube::api::DynamicObject;
use serde::Serialize;
use serde_json::{Value, json};

use crate::reference::match_key;

/// `kubectl rollout restart` sets this on the pod template.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
/// `digest.pushroll.io/<container>`: the digest a container was last rolled to.
pub const DIGEST_PREFIX: &str = "digest.pushroll.io/";
/// `pushroll.io/restart: "false"` on a workload or its template opts it out.
pub const OPT_OUT: &str = "pushroll.io/restart";

/// What happened (or would happen) to one workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartResult {
    Restarted,
    AlreadyCurrent,
    WouldRestart,
    Excluded,
    NotFound,
    /// The API server refused the patch for good (400, or 422 from
    /// validation or an admission webhook): a redelivery would be refused
    /// the same way, so it is reported, recorded and acked.
    Rejected,
}

impl RestartResult {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartResult::Restarted => "restarted",
            RestartResult::AlreadyCurrent => "already-current",
            RestartResult::WouldRestart => "would-restart",
            RestartResult::Excluded => "excluded",
            RestartResult::NotFound => "not-found",
            RestartResult::Rejected => "rejected",
        }
    }
}

/// The parts of a Deployment, StatefulSet or DaemonSet the planner reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadView {
    pub resource_version: Option<String>,
    pub annotations: BTreeMap<String, String>,
    pub template_annotations: BTreeMap<String, String>,
    /// `(name, image)` of containers and init containers.
    pub containers: Vec<(String, String)>,
}

/// The parts of a workload object the planner needs.
pub(crate) fn workload_view(obj: &DynamicObject) -> WorkloadView {
    let template = &obj.data["spec"]["template"];
    let string_map = |v: &Value| -> BTreeMap<String, String> {
        v.as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    };
    let containers = crate::workload::containers_json(template);
    WorkloadView {
        resource_version: obj.metadata.resource_version.clone(),
        annotations: obj.metadata.annotations.clone().unwrap_or_default(),
        template_annotations: string_map(&template["metadata"]["annotations"]),
        containers,
    }
}

/// The decision for one workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Excluded,
    NotFound,
    AlreadyCurrent,
    /// Patch the template; `containers` are the ones that run the image.
    Restart {
        containers: Vec<String>,
    },
}

impl Plan {
    /// The result of carrying the plan out (`dry_run`: nothing is patched).
    pub fn result(&self, dry_run: bool) -> RestartResult {
        match self {
            Plan::Excluded => RestartResult::Excluded,
            Plan::NotFound => RestartResult::NotFound,
            Plan::AlreadyCurrent => RestartResult::AlreadyCurrent,
            Plan::Restart { .. } if dry_run => RestartResult::WouldRestart,
            Plan::Restart { .. } => RestartResult::Restarted,
        }
    }
}

/// Decides what a push of `image_key` (normalized, tagged) at `digest` does
/// to one workload.
pub fn plan(view: &WorkloadView, image_key: &str, digest: &str) -> Plan {
    let opted_out = |m: &BTreeMap<String, String>| {
        m.get(OPT_OUT)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("false"))
    };
    if opted_out(&view.annotations) || opted_out(&view.template_annotations) {
        return Plan::Excluded;
    }
    let mut matching: Vec<String> = view
        .containers
        .iter()
        .filter(|(_, image)| match_key(image).as_deref() == Some(image_key))
        .map(|(name, _)| name.clone())
        .collect();
    if matching.is_empty() {
        // The index was stale: the workload no longer runs this image.
        return Plan::NotFound;
    }
    matching.sort();
    matching.dedup();
    let current = matching.iter().all(|c| {
        view.template_annotations
            .get(&digest_annotation(c))
            .is_some_and(|d| d == digest)
    });
    if current {
        Plan::AlreadyCurrent
    } else {
        Plan::Restart {
            containers: matching,
        }
    }
}

pub fn digest_annotation(container: &str) -> String {
    format!("{DIGEST_PREFIX}{container}")
}

/// The strategic merge patch `kubectl rollout restart` would send, plus a
/// digest per container. `resource_version` makes the API server refuse
/// (409) a patch based on a stale read, so that two concurrent deliveries of
/// one push roll the workload once: the loser re-reads and finds it current.
pub fn restart_patch(
    resource_version: Option<&str>,
    containers: &[String],
    digest: &str,
    now: jiff::Timestamp,
) -> Value {
    let mut annotations = serde_json::Map::new();
    annotations.insert(
        RESTARTED_AT.into(),
        Value::String(now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
    );
    for c in containers {
        annotations.insert(digest_annotation(c), Value::String(digest.into()));
    }
    let mut patch = json!({"spec": {"template": {"metadata": {"annotations": annotations}}}});
    if let Some(rv) = resource_version {
        patch["metadata"] = json!({ "resourceVersion": rv });
    }
    patch
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::NamespaceFilter;

    const KEY: &str = "us-east1-docker.pkg.dev/p/r/app:v1";
    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn view(
        containers: &[(&str, &str)],
        template: &[(&str, &str)],
        own: &[(&str, &str)],
    ) -> WorkloadView {
        let map = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        WorkloadView {
            resource_version: Some("7".into()),
            annotations: map(own),
            template_annotations: map(template),
            containers: containers
                .iter()
                .map(|(n, i)| (n.to_string(), i.to_string()))
                .collect(),
        }
    }

    fn restart(cs: &[&str]) -> Plan {
        Plan::Restart {
            containers: cs.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn plans_per_workload() {
        let app = "us-east1-docker.pkg.dev/p/r/app:v1";
        let pinned = format!("us-east1-docker.pkg.dev/p/r/app:v1@{D1}");
        let digest_app = "digest.pushroll.io/app";
        let table: Vec<(&str, WorkloadView, Plan)> = vec![
            (
                "one container",
                view(&[("app", app)], &[], &[]),
                restart(&["app"]),
            ),
            (
                "upper-case host matches",
                view(&[("app", "US-EAST1-docker.pkg.dev/p/r/app:v1")], &[], &[]),
                restart(&["app"]),
            ),
            (
                "init container",
                view(&[("init", app), ("main", "nginx")], &[], &[]),
                restart(&["init"]),
            ),
            (
                "two containers",
                view(&[("b", app), ("a", app)], &[], &[]),
                restart(&["a", "b"]),
            ),
            (
                "other tag",
                view(&[("app", "us-east1-docker.pkg.dev/p/r/app:v2")], &[], &[]),
                Plan::NotFound,
            ),
            (
                "pinned never matches",
                view(&[("app", &pinned)], &[], &[]),
                Plan::NotFound,
            ),
            ("no containers", view(&[], &[], &[]), Plan::NotFound),
            (
                "invalid image",
                view(&[("app", "Not An Image")], &[], &[]),
                Plan::NotFound,
            ),
            (
                "current",
                view(&[("app", app)], &[(digest_app, D1)], &[]),
                Plan::AlreadyCurrent,
            ),
            (
                "older digest",
                view(&[("app", app)], &[(digest_app, D2)], &[]),
                restart(&["app"]),
            ),
            (
                "one of two current",
                view(&[("app", app), ("side", app)], &[(digest_app, D1)], &[]),
                restart(&["app", "side"]),
            ),
            (
                "opt out on workload",
                view(&[("app", app)], &[], &[(OPT_OUT, "false")]),
                Plan::Excluded,
            ),
            (
                "opt out on template",
                view(&[("app", app)], &[(OPT_OUT, "False")], &[]),
                Plan::Excluded,
            ),
            (
                "opt in explicitly",
                view(&[("app", app)], &[(OPT_OUT, "true")], &[]),
                restart(&["app"]),
            ),
            (
                "excluded beats current",
                view(&[("app", app)], &[(digest_app, D1)], &[(OPT_OUT, "false")]),
                Plan::Excluded,
            ),
        ];
        for (name, v, want) in table {
            assert_eq!(plan(&v, KEY, D1), want, "{name}");
        }
    }

    #[test]
    fn results_follow_dry_run() {
        let r = restart(&["a"]);
        assert_eq!(r.result(false), RestartResult::Restarted);
        assert_eq!(r.result(true), RestartResult::WouldRestart);
        assert_eq!(
            Plan::AlreadyCurrent.result(true),
            RestartResult::AlreadyCurrent
        );
    }

    #[test]
    fn patch_has_the_contract_annotations_and_guard() {
        let now: jiff::Timestamp = "2026-11-26T12:00:00.123Z".parse().unwrap();
        let p = restart_patch(Some("42"), &["app".into(), "init".into()], D1, now);
        assert_eq!(
            p,
            json!({
                "metadata": {"resourceVersion": "42"},
                "spec": {"template": {"metadata": {"annotations": {
                    "kubectl.kubernetes.io/restartedAt": "2026-11-26T12:00:00Z",
                    "digest.pushroll.io/app": D1,
                    "digest.pushroll.io/init": D1,
                }}}}
            })
        );
        assert!(restart_patch(None, &[], D1, now).get("metadata").is_none());
    }

    #[test]
    fn namespace_filter() {
        let all = NamespaceFilter::default();
        let some = NamespaceFilter {
            include: vec!["a".into(), "b".into()],
            exclude: vec!["b".into()],
        };
        let table = [
            (&all, "x", true),
            (&some, "a", true),
            (&some, "b", false),
            (&some, "x", false),
        ];
        for (f, ns, want) in table {
            assert_eq!(f.allows(ns), want, "{f:?} {ns}");
        }
    }

    #[test]
    fn view_reads_containers_init_containers_and_annotations() {
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "db", "namespace": "prod", "resourceVersion": "12",
                         "annotations": {"pushroll.io/restart": "false"}},
            "spec": {"template": {
                "metadata": {"annotations": {"digest.pushroll.io/db": "sha256:1", "n": 5}},
                "spec": {"initContainers": [{"name": "migrate", "image": "app:v1"}],
                         "containers": [{"name": "db", "image": "pg:16"}, {"name": "noimage"}]}}}
        }))
        .unwrap();
        let view = workload_view(&obj);
        assert_eq!(view.resource_version.as_deref(), Some("12"));
        assert_eq!(
            view.annotations
                .get("pushroll.io/restart")
                .map(String::as_str),
            Some("false")
        );
        assert_eq!(
            view.template_annotations.len(),
            1,
            "non-string values are skipped"
        );
        assert_eq!(
            view.containers,
            vec![
                ("migrate".into(), "app:v1".into()),
                ("db".into(), "pg:16".into())
            ]
        );
    }

    #[test]
    fn view_of_an_odd_object_is_empty() {
        let obj: DynamicObject =
            serde_json::from_value(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": 5}))
                .unwrap();
        assert_eq!(workload_view(&obj), WorkloadView::default());
    }
}
