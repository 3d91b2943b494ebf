//! Undo on failure (`pushroll.io/on-failure: undo`, pin mode), planned
//! without I/O: whether a failed rollout is still ours to undo, which
//! revision ran before it (as `kubectl rollout undo` picks it: the
//! highest revision below the current one), and the one write that puts
//! its template back and remembers the failed digest.
//!
//! Why only in pin mode: a template put back in restart mode names the
//! same tag, and the nodes would pull the same failing image again.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{ControllerRevision, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};

use super::{ON_FAILURE, failed_annotation};
use crate::plan::{WorkloadView, digest_annotation};
use crate::rollout::{Pushed, ROLLOUT};

/// The Deployment controller numbers its ReplicaSets' templates here.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// The label the Deployment controller adds to its ReplicaSets' templates.
const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// One earlier pod template of a workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Revision {
    pub number: i64,
    pub template: Value,
}

/// Why a failed rollout is not undone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keep {
    /// No `pushroll.io/on-failure: undo`.
    NotAsked,
    /// The template no longer is the failed push's (someone rolled back,
    /// restarted or edited it, or pushroll undid it): never fought.
    Changed,
    /// The failed digest is already recorded: undone before.
    Done,
}

/// Whether the failed rollout `pushed` is to be undone now: asked for,
/// the workload still at the generation pushroll's write produced (its
/// rollout record current: nothing else has touched the template since),
/// the template running exactly that push (its records and its pinned
/// images), and not undone yet.
pub fn check(view: &WorkloadView, pushed: &Pushed) -> Result<(), Keep> {
    let (digest, containers) = (pushed.digest.as_str(), pushed.containers.as_slice());
    let asked = view
        .annotations
        .get(ON_FAILURE)
        .or_else(|| view.template_annotations.get(ON_FAILURE))
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("undo"));
    if !asked {
        return Err(Keep::NotAsked);
    }
    let recorded = crate::rollout::ours(&view.annotations, view.generation);
    if containers.is_empty() || !recorded.is_some_and(|r| r.same_push(pushed)) {
        return Err(Keep::Changed);
    }
    let pinned = |c: &String| {
        view.containers
            .iter()
            .any(|(name, image)| name == c && image.ends_with(&format!("@{digest}")))
    };
    let ours = containers.iter().all(|c| {
        view.template_annotations
            .get(&digest_annotation(c))
            .map(String::as_str)
            == Some(digest)
            && pinned(c)
    });
    if !ours {
        return Err(Keep::Changed);
    }
    let recorded = containers.iter().all(|c| {
        view.annotations
            .get(&failed_annotation(c))
            .map(String::as_str)
            == Some(digest)
    });
    if recorded {
        return Err(Keep::Done);
    }
    Ok(())
}

/// The revision `kubectl rollout undo` goes back to: the highest below
/// `current` (the workload's own revision; the highest known if `None`).
pub fn previous(current: Option<i64>, revisions: &[Revision]) -> Option<&Revision> {
    let current = current.or_else(|| revisions.iter().map(|r| r.number).max())?;
    revisions
        .iter()
        .filter(|r| r.number < current)
        .max_by_key(|r| r.number)
}

/// Pins the put-back template's images to the digests they ran before
/// the failed push, where the template names only a tag: the registry has
/// moved that tag, often to the very digest that failed, and new pods
/// would pull it again. The digest is the template's own record
/// (`digest.pushroll.io/<c>`), else one that pods outside the failed
/// rollout report (`running`: container, digest). Returns the containers
/// left unpinned (nothing known).
pub fn pin_previous(
    template: &mut Value,
    containers: &[String],
    running: &[(String, String)],
) -> Vec<String> {
    let recorded: BTreeMap<String, String> = template["metadata"]["annotations"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    let mut unpinned = Vec::new();
    for c in containers {
        let digest = recorded.get(&digest_annotation(c)).cloned().or_else(|| {
            running
                .iter()
                .find(|(name, _)| name == c)
                .map(|(_, d)| d.clone())
        });
        for field in ["containers", "initContainers"] {
            let Some(list) = template["spec"][field].as_array_mut() else {
                continue;
            };
            for container in list.iter_mut().filter(|x| x["name"] == c.as_str()) {
                let Some(image) = container["image"].as_str() else {
                    continue;
                };
                let pinned = crate::reference::Reference::parse(image)
                    .map(|r| r.is_pinned())
                    .unwrap_or(true);
                if pinned {
                    continue;
                }
                match digest
                    .as_deref()
                    .and_then(|d| crate::reference::pin(image, d))
                {
                    Some(image) => container["image"] = Value::String(image),
                    None => unpinned.push(c.clone()),
                }
            }
        }
    }
    unpinned
}

/// Whether `meta` is controlled by the object with `uid`.
fn controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid && o.controller == Some(true))
}

/// A Deployment's ReplicaSet as a revision (the controller's hash label
/// removed, as kubectl does), when `uid` controls it.
pub fn replica_set_revision(rs: &ReplicaSet, uid: &str) -> Option<Revision> {
    if !controlled_by(&rs.metadata, uid) {
        return None;
    }
    let number = rs
        .metadata
        .annotations
        .as_ref()?
        .get(REVISION)?
        .parse()
        .ok()?;
    let mut template = serde_json::to_value(rs.spec.as_ref()?.template.as_ref()?).ok()?;
    if let Some(labels) = template["metadata"]["labels"].as_object_mut() {
        labels.remove(POD_TEMPLATE_HASH);
    }
    Some(Revision { number, template })
}

/// A StatefulSet's or DaemonSet's ControllerRevision as a revision: its
/// data is a patch whose `spec.template` replaces the template.
pub fn controller_revision(cr: &ControllerRevision, uid: &str) -> Option<Revision> {
    if !controlled_by(&cr.metadata, uid) {
        return None;
    }
    let mut template = cr.data.as_ref()?.0.get("spec")?.get("template")?.clone();
    template.as_object_mut()?.remove("$patch");
    Some(Revision {
        number: cr.revision,
        template,
    })
}

/// A Deployment's own revision.
pub fn deployment_revision(annotations: &BTreeMap<String, String>) -> Option<i64> {
    annotations.get(REVISION)?.parse().ok()
}

/// The undo, as one JSON patch: the template replaced whole (a merge
/// would keep fields the old template did not have), the failed digest
/// recorded per container, the rollout record removed (the template put
/// back is nobody's push to judge), and the resourceVersion read, so that
/// a concurrent change (a person's own rollback) makes this write fail
/// (409) instead of overwriting it.
pub fn undo_patch(
    resource_version: &str,
    annotations: &BTreeMap<String, String>,
    template: &Value,
    digest: &str,
    containers: &[String],
) -> Value {
    let mut annotations: serde_json::Map<String, Value> = annotations
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    for c in containers {
        annotations.insert(failed_annotation(c), Value::String(digest.to_owned()));
    }
    annotations.remove(ROLLOUT);
    json!([
        {"op": "replace", "path": "/metadata/resourceVersion", "value": resource_version},
        {"op": "add", "path": "/metadata/annotations", "value": annotations},
        {"op": "replace", "path": "/spec/template", "value": template},
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd";
    const P: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn pushed() -> Pushed {
        Pushed {
            digest: D.into(),
            containers: vec!["app".into()],
            restarted_at: "2026-12-01T10:00:00Z".parse().unwrap(),
            generation: 3,
            image: None,
        }
    }

    /// A workload at generation 3 whose record is `pushed()`'s (unless
    /// `own` names another).
    fn view(own: &[(&str, &str)], template: &[(&str, &str)], image: &str) -> WorkloadView {
        let map = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let mut annotations: BTreeMap<String, String> = map(own);
        annotations
            .entry(ROLLOUT.to_owned())
            .or_insert_with(|| pushed().to_json());
        WorkloadView {
            generation: Some(3),
            annotations,
            template_annotations: map(template),
            containers: vec![("app".into(), image.into())],
            ..WorkloadView::default()
        }
    }

    #[test]
    fn a_failed_rollout_is_undone_only_while_it_is_ours() {
        let pinned = format!("r.example/app:v1@{D}");
        let other = format!("r.example/app:v1@{P}");
        let undo = ("pushroll.io/on-failure", "undo");
        let record = ("digest.pushroll.io/app", D);
        let failed = ("failed.pushroll.io/app", D);
        let table: Vec<(&str, WorkloadView, Result<(), Keep>)> = vec![
            (
                "asked, pinned, recorded",
                view(&[undo], &[record], &pinned),
                Ok(()),
            ),
            (
                "asked on the template",
                view(&[], &[undo, record], &pinned),
                Ok(()),
            ),
            (
                "upper case",
                view(&[("pushroll.io/on-failure", " UNDO ")], &[record], &pinned),
                Ok(()),
            ),
            (
                "not asked",
                view(&[], &[record], &pinned),
                Err(Keep::NotAsked),
            ),
            (
                "another value",
                view(&[("pushroll.io/on-failure", "keep")], &[record], &pinned),
                Err(Keep::NotAsked),
            ),
            (
                "a person rolled back the image",
                view(&[undo], &[record], &other),
                Err(Keep::Changed),
            ),
            (
                "restart mode: the tag, not the digest",
                view(&[undo], &[record], "r.example/app:v1"),
                Err(Keep::Changed),
            ),
            (
                "the record names another push",
                view(&[undo], &[("digest.pushroll.io/app", P)], &pinned),
                Err(Keep::Changed),
            ),
            (
                "the generation moved on (a rollback, a restart, an edit)",
                WorkloadView {
                    generation: Some(4),
                    ..view(&[undo], &[record], &pinned)
                },
                Err(Keep::Changed),
            ),
            (
                "a record of another push (copied back by a rollback)",
                view(
                    &[
                        undo,
                        (
                            ROLLOUT,
                            &Pushed {
                                digest: P.into(),
                                ..pushed()
                            }
                            .to_json(),
                        ),
                    ],
                    &[record],
                    &pinned,
                ),
                Err(Keep::Changed),
            ),
            (
                "no record: never pushroll's",
                WorkloadView {
                    annotations: [(ON_FAILURE.to_owned(), "undo".to_owned())].into(),
                    ..view(&[undo], &[record], &pinned)
                },
                Err(Keep::Changed),
            ),
            (
                "already undone and recorded",
                view(&[undo, failed], &[record], &pinned),
                Err(Keep::Done),
            ),
            (
                "an older failure does not stop this one",
                view(&[undo, ("failed.pushroll.io/app", P)], &[record], &pinned),
                Ok(()),
            ),
        ];
        for (name, v, want) in table {
            assert_eq!(check(&v, &pushed()), want, "{name}");
        }
        let none = Pushed {
            containers: vec![],
            ..pushed()
        };
        let v = view(&[undo, (ROLLOUT, &none.to_json())], &[record], &pinned);
        assert_eq!(check(&v, &none), Err(Keep::Changed), "no containers");
    }

    #[test]
    fn the_previous_revision_is_the_highest_below_the_current() {
        let rev = |n| Revision {
            number: n,
            template: json!({"n": n}),
        };
        /// (name, current revision, revisions, the one to go back to)
        type Row = (&'static str, Option<i64>, Vec<Revision>, Option<i64>);
        let table: Vec<Row> = vec![
            ("two", Some(2), vec![rev(1), rev(2)], Some(1)),
            (
                "out of order",
                Some(5),
                vec![rev(5), rev(2), rev(4), rev(3)],
                Some(4),
            ),
            ("gaps", Some(9), vec![rev(9), rev(3)], Some(3)),
            (
                "current unknown: the highest",
                None,
                vec![rev(3), rev(7), rev(6)],
                Some(6),
            ),
            ("only the current", Some(1), vec![rev(1)], None),
            ("nothing", None, vec![], None),
            (
                "a current below others (rolled back before)",
                Some(4),
                vec![rev(2), rev(4), rev(6)],
                Some(2),
            ),
        ];
        for (name, current, revisions, want) in table {
            assert_eq!(
                previous(current, &revisions).map(|r| r.number),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn revisions_come_from_the_workloads_own_objects() {
        let owner = json!([{"apiVersion": "apps/v1", "kind": "Deployment", "name": "api", "uid": "u1", "controller": true}]);
        let rs: ReplicaSet = serde_json::from_value(json!({
            "metadata": {"name": "api-1", "annotations": {REVISION: "3"}, "ownerReferences": owner},
            "spec": {"selector": {"matchLabels": {"app": "api"}}, "template": {
                "metadata": {"labels": {"app": "api", "pod-template-hash": "abc"}},
                "spec": {"containers": [{"name": "app", "image": "a"}]}}}
        }))
        .unwrap();
        let r = replica_set_revision(&rs, "u1").unwrap();
        assert_eq!(r.number, 3);
        assert_eq!(r.template["metadata"]["labels"], json!({"app": "api"}));
        assert_eq!(replica_set_revision(&rs, "someone-else"), None);
        let cr: ControllerRevision = serde_json::from_value(json!({
            "metadata": {"name": "db-1", "ownerReferences": owner},
            "revision": 2,
            "data": {"spec": {"template": {"$patch": "replace", "metadata": {"labels": {"app": "db"}},
                "spec": {"containers": [{"name": "db", "image": "b"}]}}}}
        }))
        .unwrap();
        let r = controller_revision(&cr, "u1").unwrap();
        assert_eq!(r.number, 2);
        assert!(r.template.get("$patch").is_none());
        assert_eq!(r.template["spec"]["containers"][0]["image"], "b");
        assert_eq!(controller_revision(&cr, "u2"), None);
    }

    #[test]
    fn a_template_put_back_is_pinned_to_what_it_ran() {
        let template = |image: &str, record: Option<&str>| {
            let mut t = json!({"metadata": {"annotations": {}}, "spec": {
                "initContainers": [{"name": "init", "image": "r.example/init:1"}],
                "containers": [{"name": "app", "image": image}, {"name": "side", "image": "r.example/side:2"}]}});
            if let Some(d) = record {
                t["metadata"]["annotations"]["digest.pushroll.io/app"] = json!(d);
            }
            t
        };
        let running = vec![("app".to_owned(), P.to_owned())];
        /// (name, template, what pods run, the image wanted, left unpinned)
        type Row = (
            &'static str,
            Value,
            Vec<(String, String)>,
            &'static str,
            Vec<String>,
        );
        let table: Vec<Row> = vec![
            (
                "its own record",
                template("r.example/app:v1", Some(P)),
                vec![],
                "r.example/app:v1@sha256:bbbb",
                vec![],
            ),
            (
                "what its pods run",
                template("r.example/app:v1", None),
                running.clone(),
                "r.example/app:v1@sha256:bbbb",
                vec![],
            ),
            (
                "the record before the pods",
                template("r.example/app:v1", Some(D)),
                running.clone(),
                "r.example/app:v1@sha256:dddd",
                vec![],
            ),
            (
                "already pinned: left as it was",
                template(&format!("r.example/app:v1@{D}"), None),
                running.clone(),
                "r.example/app:v1@sha256:dddd",
                vec![],
            ),
            (
                "untagged gets latest",
                template("r.example/app", None),
                running.clone(),
                "r.example/app:latest@sha256:bbbb",
                vec![],
            ),
            (
                "nothing known",
                template("r.example/app:v1", None),
                vec![],
                "r.example/app:v1",
                vec!["app".to_owned()],
            ),
        ];
        for (name, mut t, running, want, left) in table {
            assert_eq!(
                pin_previous(&mut t, &["app".into()], &running),
                left,
                "{name}"
            );
            let image = t["spec"]["containers"][0]["image"].as_str().unwrap();
            assert!(image.starts_with(want), "{name}: {image}");
            assert_eq!(
                t["spec"]["containers"][1]["image"], "r.example/side:2",
                "{name}"
            );
            assert_eq!(
                t["spec"]["initContainers"][0]["image"], "r.example/init:1",
                "{name}"
            );
        }
    }

    #[test]
    fn the_undo_patch_replaces_the_template_and_records_the_digest() {
        let annotations = [
            ("keep".to_owned(), "me".to_owned()),
            (ROLLOUT.to_owned(), pushed().to_json()),
        ]
        .into();
        let template = json!({"spec": {"containers": [{"name": "app", "image": "old"}]}});
        let patch = undo_patch("41", &annotations, &template, D, &["app".into()]);
        assert!(
            patch[1]["value"].get(ROLLOUT).is_none(),
            "the put-back template is nobody's push"
        );
        assert_eq!(
            patch[0],
            json!({"op": "replace", "path": "/metadata/resourceVersion", "value": "41"})
        );
        assert_eq!(patch[1]["value"]["keep"], "me");
        assert_eq!(patch[1]["value"]["failed.pushroll.io/app"], D);
        assert_eq!(patch[2]["value"], template);
    }
}
