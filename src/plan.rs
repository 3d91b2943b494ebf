//! Where a push is turned into patches: which workloads restart, which
//! containers matched, and the strategic merge patch to send. Pure code:
//! the executor (`restart.rs`) fetches the workload, this decides.

use std::collections::BTreeMap;

use kube::api::DynamicObject;
use serde::Serialize;
use serde_json::{Value, json};

use crate::reference::{match_key, pin, pin_match_key};
use crate::workload::Mode;

/// `kubectl rollout restart` sets this on the pod template.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
/// `digest.pushroll.io/<container>`: the digest a container was last rolled to.
pub const DIGEST_PREFIX: &str = "digest.pushroll.io/";
/// `published.pushroll.io/<container>`: the publish time of the push a
/// container was last rolled for (RFC 3339), so an older one never wins.
pub const PUBLISHED_PREFIX: &str = "published.pushroll.io/";
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
    /// A newer push already rolled every matching container: this older
    /// one (a redelivery, a replay) changes nothing.
    Superseded,
    /// Waits for a person (`pushroll.io/approval: required`); recorded in
    /// `pushroll.io/pending`.
    PendingApproval,
    /// Waits for a window or an interval; recorded in `pushroll.io/pending`.
    Deferred,
    /// Its rollout failed and was undone: refused until a newer digest.
    Refused,
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
            RestartResult::Superseded => "superseded",
            RestartResult::PendingApproval => "pending-approval",
            RestartResult::Deferred => "deferred",
            RestartResult::Refused => "refused",
        }
    }
}

/// The parts of a Deployment, StatefulSet or DaemonSet the planner reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadView {
    pub resource_version: Option<String>,
    /// `metadata.generation`: a restart's write produces the next one,
    /// which its rollout record keeps (see `rollout::ROLLOUT`).
    pub generation: Option<i64>,
    /// A Deployment's generation also moves when its own annotations
    /// change (the API server's rule: they are copied to ReplicaSets);
    /// a StatefulSet's or DaemonSet's only with its spec.
    pub annotations_move_generation: bool,
    pub annotations: BTreeMap<String, String>,
    pub template_annotations: BTreeMap<String, String>,
    /// `(name, image)` of containers and init containers.
    pub containers: Vec<(String, String)>,
    /// `imagePullPolicy` by container, where the spec sets one.
    pub pull_policies: BTreeMap<String, String>,
    /// Which of `containers` are init containers.
    pub init_containers: std::collections::BTreeSet<String>,
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
    let kind = obj.types.as_ref().map(|t| t.kind.as_str());
    WorkloadView {
        resource_version: obj.metadata.resource_version.clone(),
        generation: obj.metadata.generation,
        annotations_move_generation: kind == Some("Deployment"),
        annotations: obj.metadata.annotations.clone().unwrap_or_default(),
        template_annotations: string_map(&template["metadata"]["annotations"]),
        containers,
        pull_policies: crate::workload::pull_policies_json(template),
        init_containers: crate::workload::init_containers_json(template),
    }
}

/// The decision for one workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Excluded,
    NotFound,
    AlreadyCurrent,
    Superseded,
    /// Patch the template; `containers` are the ones that run the image.
    /// `pins` (pin mode) set their images to the pushed digest. `warnings`
    /// name those whose pull policy may keep the old image (restart mode).
    Restart {
        containers: Vec<String>,
        pins: Vec<Pin>,
        warnings: Vec<String>,
    },
}

/// A container's image pinned to the pushed digest (pin mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub container: String,
    /// Init containers are patched under `initContainers`.
    pub init: bool,
    /// `R:T@sha256:D`, the reference as the spec writes it.
    pub image: String,
}

impl Plan {
    /// The result of carrying the plan out (`dry_run`: nothing is patched).
    pub fn result(&self, dry_run: bool) -> RestartResult {
        match self {
            Plan::Excluded => RestartResult::Excluded,
            Plan::NotFound => RestartResult::NotFound,
            Plan::AlreadyCurrent => RestartResult::AlreadyCurrent,
            Plan::Superseded => RestartResult::Superseded,
            Plan::Restart { .. } if dry_run => RestartResult::WouldRestart,
            Plan::Restart { .. } => RestartResult::Restarted,
        }
    }
}

/// Decides what a push of `image_key` (normalized, tagged) at `digest`,
/// published at `published`, does to one workload; `default_mode` applies
/// where the workload names none (`serve --mode`).
pub fn plan(
    view: &WorkloadView,
    image_key: &str,
    digest: &str,
    published: jiff::Timestamp,
    default_mode: Mode,
) -> Plan {
    let opted_out = |m: &BTreeMap<String, String>| {
        m.get(OPT_OUT)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("false"))
    };
    if opted_out(&view.annotations) || opted_out(&view.template_annotations) {
        return Plan::Excluded;
    }
    let mode = Mode::of(&view.annotations, &view.template_annotations, default_mode);
    let key_of = match mode {
        Mode::Restart => match_key,
        Mode::Pin => pin_match_key,
    };
    let mut matching: Vec<String> = view
        .containers
        .iter()
        .filter(|(_, image)| key_of(image).as_deref() == Some(image_key))
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
    // The digest first: duplicates of one push (concurrent bare
    // notifications, each stamped with its own receipt) are current, not
    // superseded by each other.
    if current {
        return Plan::AlreadyCurrent;
    }
    if superseded(view, &matching, published) {
        return Plan::Superseded;
    }
    let rolled = view
        .containers
        .iter()
        .filter(|(name, _)| matching.contains(name));
    let (pins, warnings) = match mode {
        // A digest reference runs exactly that digest: no pull policy can
        // keep the old image.
        Mode::Pin => (
            rolled
                .filter_map(|(name, image)| {
                    Some(Pin {
                        container: name.clone(),
                        init: view.init_containers.contains(name),
                        image: pin(image, digest)?,
                    })
                })
                .collect(),
            Vec::new(),
        ),
        Mode::Restart => (
            Vec::new(),
            rolled
                .filter_map(|(name, image)| {
                    pull_policy_warning(
                        name,
                        image,
                        view.pull_policies.get(name).map(String::as_str),
                    )
                })
                .collect(),
        ),
    };
    Plan::Restart {
        containers: matching,
        pins,
        warnings,
    }
}

/// Whether every matching container was last rolled for a push published
/// after `published` (an equal time is not older). Asked only when the
/// workload does not already run the pushed digest.
fn superseded(view: &WorkloadView, matching: &[String], published: jiff::Timestamp) -> bool {
    matching.iter().all(|c| {
        view.template_annotations
            .get(&published_annotation(c))
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .is_some_and(|recorded| published < recorded)
    })
}

/// The pull policy Kubernetes applies: the spec's, else its default
/// (`Always` for `:latest` or no tag, `IfNotPresent` otherwise).
fn effective_pull_policy(image: &str, policy: Option<&str>) -> String {
    if let Some(p) = policy.filter(|p| !p.is_empty()) {
        return p.to_owned();
    }
    let tag = crate::reference::Reference::parse(image)
        .ok()
        .and_then(|r| r.tag().map(str::to_owned));
    match tag.as_deref() {
        None | Some("latest") => "Always".to_owned(),
        Some(_) => "IfNotPresent".to_owned(),
    }
}

/// A restart of `container` may not change what it runs unless its pull
/// policy is `Always`: a node that already holds the tag starts the new pod
/// from its cached, old image. `None` when the policy is `Always`.
pub(crate) fn pull_policy_warning(
    container: &str,
    image: &str,
    policy: Option<&str>,
) -> Option<String> {
    let policy = effective_pull_policy(image, policy);
    (policy != "Always").then(|| {
        format!(
            "container {container:?} has imagePullPolicy {policy}: a node that already holds {image} starts the new pod from that cached image, not the pushed digest; set imagePullPolicy: Always, or pushroll.io/mode: pin to run exactly the pushed digest"
        )
    })
}

pub fn digest_annotation(container: &str) -> String {
    format!("{DIGEST_PREFIX}{container}")
}

pub fn published_annotation(container: &str) -> String {
    format!("{PUBLISHED_PREFIX}{container}")
}

/// The strategic merge patch `kubectl rollout restart` would send, plus a
/// digest and publish time per container and, in pin mode, the pinned
/// images (lists of containers merge by name). `resource_version` makes the
/// API server refuse (409) a patch based on a stale read, so that two
/// concurrent deliveries of one push roll the workload once: the loser
/// re-reads and finds it current.
pub fn restart_patch(
    resource_version: Option<&str>,
    containers: &[String],
    pins: &[Pin],
    digest: &str,
    published: jiff::Timestamp,
    now: jiff::Timestamp,
) -> Value {
    let mut annotations = serde_json::Map::new();
    annotations.insert(
        RESTARTED_AT.into(),
        Value::String(now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
    );
    for c in containers {
        annotations.insert(digest_annotation(c), Value::String(digest.into()));
        annotations.insert(
            published_annotation(c),
            Value::String(published.to_string()),
        );
    }
    let mut patch = json!({"spec": {"template": {"metadata": {"annotations": annotations}}}});
    for (field, init) in [("containers", false), ("initContainers", true)] {
        let images: Vec<Value> = pins
            .iter()
            .filter(|p| p.init == init)
            .map(|p| json!({"name": p.container, "image": p.image}))
            .collect();
        if !images.is_empty() {
            patch["spec"]["template"]["spec"][field] = Value::Array(images);
        }
    }
    if let Some(rv) = resource_version {
        patch["metadata"] = json!({ "resourceVersion": rv });
    }
    patch
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{MODE_ANNOTATION as MODE, NamespaceFilter};

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
        // `Always` everywhere: the pull-policy warnings have a table of
        // their own.
        WorkloadView {
            resource_version: Some("7".into()),
            generation: Some(1),
            annotations_move_generation: false,
            annotations: map(own),
            template_annotations: map(template),
            containers: containers
                .iter()
                .map(|(n, i)| (n.to_string(), i.to_string()))
                .collect(),
            pull_policies: containers
                .iter()
                .map(|(n, _)| (n.to_string(), "Always".to_string()))
                .collect(),
            init_containers: containers
                .iter()
                .filter(|(n, _)| n.starts_with("init"))
                .map(|(n, _)| n.to_string())
                .collect(),
        }
    }

    fn restart(cs: &[&str]) -> Plan {
        Plan::Restart {
            containers: cs.iter().map(|c| c.to_string()).collect(),
            pins: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// A pin-mode restart: `(container, pinned image)`; init containers are
    /// those named `init…`.
    fn pinned(cs: &[(&str, &str)]) -> Plan {
        Plan::Restart {
            containers: cs.iter().map(|(c, _)| c.to_string()).collect(),
            pins: cs
                .iter()
                .map(|(c, image)| Pin {
                    container: c.to_string(),
                    init: c.starts_with("init"),
                    image: image.to_string(),
                })
                .collect(),
            warnings: Vec::new(),
        }
    }

    /// The publish time of the push in the tables.
    fn t(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    const AT: &str = "2026-11-26T12:00:00Z";

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
            assert_eq!(plan(&v, KEY, D1, t(AT), Mode::Restart), want, "{name}");
        }
    }

    #[test]
    fn pin_mode_plans_pin_the_reference_as_written() {
        let app = "us-east1-docker.pkg.dev/p/r/app:v1";
        let on_d1 = format!("{app}@{D1}");
        let on_d2 = format!("{app}@{D2}");
        let digest_only = format!("us-east1-docker.pkg.dev/p/r/app@{D2}");
        let mode_pin = [(MODE, "pin")];
        let mode_restart = [(MODE, "restart")];
        let digest_app = "digest.pushroll.io/app";
        // (name, view, default mode, plan)
        let table: Vec<(&str, WorkloadView, Mode, Plan)> = vec![
            (
                "annotated pin, unpinned image",
                view(&[("app", app)], &[], &mode_pin),
                Mode::Restart,
                pinned(&[("app", &on_d1)]),
            ),
            (
                "template annotation",
                view(&[("app", app)], &mode_pin, &[]),
                Mode::Restart,
                pinned(&[("app", &on_d1)]),
            ),
            (
                "the default mode",
                view(&[("app", app)], &[], &[]),
                Mode::Pin,
                pinned(&[("app", &on_d1)]),
            ),
            (
                "the workload says restart over a pin default",
                view(&[("app", app)], &[], &mode_restart),
                Mode::Pin,
                restart(&["app"]),
            ),
            (
                "re-pins the previous pin",
                view(&[("app", &on_d2)], &[(digest_app, D2)], &mode_pin),
                Mode::Restart,
                pinned(&[("app", &on_d1)]),
            ),
            (
                "a pin in restart mode never matches",
                view(&[("app", &on_d2)], &[], &[]),
                Mode::Restart,
                Plan::NotFound,
            ),
            (
                "digest-only never matches, even in pin mode",
                view(&[("app", &digest_only)], &[], &mode_pin),
                Mode::Restart,
                Plan::NotFound,
            ),
            (
                "current by its digest record",
                view(&[("app", &on_d1)], &[(digest_app, D1)], &mode_pin),
                Mode::Restart,
                Plan::AlreadyCurrent,
            ),
            (
                "init container under its own list",
                view(&[("init", app), ("app", &on_d2)], &[], &mode_pin),
                Mode::Restart,
                pinned(&[("app", &on_d1), ("init", &on_d1)]),
            ),
            (
                "other images untouched",
                view(&[("app", app), ("side", "nginx:1.27")], &[], &mode_pin),
                Mode::Restart,
                pinned(&[("app", &on_d1)]),
            ),
        ];
        for (name, v, default, want) in table {
            let mut got = plan(&v, KEY, D1, t(AT), default);
            if let Plan::Restart { pins, .. } = &mut got {
                pins.sort_by(|a, b| a.container.cmp(&b.container));
            }
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn an_older_push_than_the_last_is_superseded() {
        let app = "us-east1-docker.pkg.dev/p/r/app:v1";
        let (digest_app, published_app) = ("digest.pushroll.io/app", "published.pushroll.io/app");
        let (earlier, later) = ("2026-11-26T11:59:59.999Z", "2026-11-26T12:00:00.001Z");
        let table: Vec<(&str, WorkloadView, Plan)> = vec![
            (
                "a newer push is on it",
                view(
                    &[("app", app)],
                    &[(digest_app, D2), (published_app, later)],
                    &[],
                ),
                Plan::Superseded,
            ),
            (
                "a newer push of the same digest: current (a duplicate)",
                view(
                    &[("app", app)],
                    &[(digest_app, D1), (published_app, later)],
                    &[],
                ),
                Plan::AlreadyCurrent,
            ),
            (
                "an older push is on it",
                view(
                    &[("app", app)],
                    &[(digest_app, D2), (published_app, earlier)],
                    &[],
                ),
                restart(&["app"]),
            ),
            (
                "the same time is not older (a redelivery: decided by the digest)",
                view(
                    &[("app", app)],
                    &[(digest_app, D1), (published_app, AT)],
                    &[],
                ),
                Plan::AlreadyCurrent,
            ),
            (
                "the same time, another digest",
                view(
                    &[("app", app)],
                    &[(digest_app, D2), (published_app, AT)],
                    &[],
                ),
                restart(&["app"]),
            ),
            (
                "no record: rolled before publish times were kept",
                view(&[("app", app)], &[(digest_app, D2)], &[]),
                restart(&["app"]),
            ),
            (
                "an unreadable record is no record",
                view(
                    &[("app", app)],
                    &[(digest_app, D2), (published_app, "yesterday")],
                    &[],
                ),
                restart(&["app"]),
            ),
            (
                "newer on one container only: the other still needs it",
                view(
                    &[("app", app), ("side", app)],
                    &[
                        (published_app, later),
                        ("published.pushroll.io/side", earlier),
                    ],
                    &[],
                ),
                restart(&["app", "side"]),
            ),
            (
                "newer on both",
                view(
                    &[("app", app), ("side", app)],
                    &[
                        (published_app, later),
                        ("published.pushroll.io/side", later),
                    ],
                    &[],
                ),
                Plan::Superseded,
            ),
            (
                "excluded beats superseded",
                view(
                    &[("app", app)],
                    &[(published_app, later)],
                    &[(OPT_OUT, "false")],
                ),
                Plan::Excluded,
            ),
        ];
        for (name, v, want) in table {
            assert_eq!(plan(&v, KEY, D1, t(AT), Mode::Restart), want, "{name}");
        }
        assert_eq!(Plan::Superseded.result(false), RestartResult::Superseded);
    }

    #[test]
    fn pull_policies_that_may_keep_the_old_image_are_warned_about() {
        let table: &[(&str, Option<&str>, Option<&str>)] = &[
            ("app:v1", None, Some("IfNotPresent")),
            ("app:v1", Some("IfNotPresent"), Some("IfNotPresent")),
            ("app:v1", Some("Never"), Some("Never")),
            ("app:v1", Some("Always"), None),
            ("app", None, None),
            ("app:latest", None, None),
            ("localhost:5000/app", None, None),
            ("localhost:5000/app:v1", None, Some("IfNotPresent")),
            ("app:latest", Some("IfNotPresent"), Some("IfNotPresent")),
        ];
        for &(image, policy, want) in table {
            let got = pull_policy_warning("web", image, policy);
            match want {
                None => assert_eq!(got, None, "{image} {policy:?}"),
                Some(p) => {
                    let got = got.unwrap_or_else(|| panic!("{image} {policy:?}: no warning"));
                    assert!(got.contains("\"web\"") && got.contains(p), "{got}");
                    assert!(got.contains("imagePullPolicy: Always"), "{got}");
                    assert!(got.contains("pushroll.io/mode: pin"), "{got}");
                }
            }
        }
        // In a plan: only the matching containers, each once.
        let app = "us-east1-docker.pkg.dev/p/r/app:v1";
        let mut v = view(
            &[("app", app), ("side", "nginx:1"), ("init", app)],
            &[],
            &[],
        );
        v.pull_policies.clear();
        v.pull_policies.insert("init".into(), "Always".into());
        let Plan::Restart {
            containers,
            warnings,
            ..
        } = plan(&v, KEY, D1, t(AT), Mode::Restart)
        else {
            panic!("a restart")
        };
        assert_eq!(containers, ["app", "init"]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("\"app\""), "{warnings:?}");
        // Pin mode: a digest reference is never kept from cache, no warning.
        v.annotations.insert(MODE.into(), "pin".into());
        let Plan::Restart { warnings, pins, .. } = plan(&v, KEY, D1, t(AT), Mode::Restart) else {
            panic!("a restart")
        };
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(pins.len(), 2);
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
        let published = t("2026-11-26T11:59:58.5Z");
        let p = restart_patch(
            Some("42"),
            &["app".into(), "init".into()],
            &[],
            D1,
            published,
            now,
        );
        assert_eq!(
            p,
            json!({
                "metadata": {"resourceVersion": "42"},
                "spec": {"template": {"metadata": {"annotations": {
                    "kubectl.kubernetes.io/restartedAt": "2026-11-26T12:00:00Z",
                    "digest.pushroll.io/app": D1,
                    "digest.pushroll.io/init": D1,
                    "published.pushroll.io/app": "2026-11-26T11:59:58.5Z",
                    "published.pushroll.io/init": "2026-11-26T11:59:58.5Z",
                }}}}
            })
        );
        assert!(
            restart_patch(None, &[], &[], D1, published, now)
                .get("metadata")
                .is_none()
        );
    }

    #[test]
    fn a_pin_patch_sets_images_by_container_name() {
        let now: jiff::Timestamp = "2026-11-26T12:00:00Z".parse().unwrap();
        let image = format!("nginx:1.27@{D1}");
        let pins = [
            Pin {
                container: "web".into(),
                init: false,
                image: image.clone(),
            },
            Pin {
                container: "setup".into(),
                init: true,
                image: image.clone(),
            },
        ];
        let p = restart_patch(None, &["setup".into(), "web".into()], &pins, D1, now, now);
        assert_eq!(
            p["spec"]["template"]["spec"],
            json!({"containers": [{"name": "web", "image": image}],
                   "initContainers": [{"name": "setup", "image": image}]})
        );
        assert_eq!(
            p["spec"]["template"]["metadata"]["annotations"]["digest.pushroll.io/web"],
            D1
        );
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
                         "containers": [{"name": "db", "image": "pg:16", "imagePullPolicy": "Always"},
                                        {"name": "noimage"}]}}}
        }))
        .unwrap();
        let view = workload_view(&obj);
        assert_eq!(
            view.pull_policies,
            BTreeMap::from([("db".to_owned(), "Always".to_owned())]),
            "only the policies the spec sets"
        );
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
        let want = WorkloadView {
            annotations_move_generation: true,
            ..WorkloadView::default()
        };
        assert_eq!(workload_view(&obj), want);
    }
}
