//! The index core without I/O: workloads in, image→workloads out. The scan
//! (`pushroll index`), the watch (`index --watch`) and `serve --on-miss
//! scan` all feed it the same way: `apply`, `delete`, `reset`.

use std::collections::{BTreeMap, HashMap};

use kube::ResourceExt as _;

use crate::index::Index;
use crate::plan::digest_annotation;
use crate::reference::{match_key, strip_pin};
use crate::workload::{Kind, Mode, NamespaceFilter, Workload, WorkloadRef, containers};

/// One workload as a list or watch saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    /// `(container name, image)` of init containers and containers.
    pub containers: Vec<(String, String)>,
}

impl Observed {
    pub fn of<W: Workload>(w: &W) -> Observed {
        let template = w.template();
        let mut containers = template.map(containers).unwrap_or_default();
        let template_annotations = template
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref());
        let annotated_pin = Mode::of(
            w.meta().annotations.as_ref(),
            template_annotations,
            Mode::Restart,
        ) == Mode::Pin;
        for (name, image) in &mut containers {
            // A pinned `R:T@sha256:D` is indexed under `R:T` when the
            // workload is in pin mode, or when pushroll pinned it (its
            // digest record names D), so that the next push re-pins it
            // whatever `serve --mode` says. A pin someone else wrote, on a
            // workload not in pin mode, is theirs: it never matches.
            let Some(tagged) = strip_pin(image) else {
                continue;
            };
            let ours = template_annotations
                .and_then(|a| a.get(&digest_annotation(name)))
                .is_some_and(|d| image.ends_with(&format!("@{d}")));
            if annotated_pin || ours {
                *image = tagged.to_owned();
            }
        }
        Observed {
            kind: W::KIND,
            namespace: w.namespace().unwrap_or_default(),
            name: w.name_any(),
            containers,
        }
    }
}

type WorkloadKey = (Kind, String, String);

/// Normalized image key → the containers that run it.
type Images = BTreeMap<String, Vec<String>>;

/// The incremental index.
#[derive(Debug, Default, Clone)]
pub struct IndexBuilder {
    namespaces: NamespaceFilter,
    workloads: HashMap<WorkloadKey, Images>,
}

impl IndexBuilder {
    pub fn new(namespaces: NamespaceFilter) -> IndexBuilder {
        IndexBuilder {
            namespaces,
            workloads: HashMap::new(),
        }
    }

    /// What of a workload the index keeps: matchable images only (pinned and
    /// invalid references can never match a push).
    fn images_of(entry: &Observed) -> Images {
        let mut images = Images::new();
        for (container, image) in &entry.containers {
            if let Some(key) = match_key(image) {
                let containers = images.entry(key).or_default();
                if !containers.contains(container) {
                    containers.push(container.clone());
                }
            }
        }
        images
    }

    /// Adds or updates a workload; returns whether the index changed.
    pub fn apply(&mut self, entry: &Observed) -> bool {
        if !self.namespaces.allows(&entry.namespace) {
            return false;
        }
        let key = (entry.kind, entry.namespace.clone(), entry.name.clone());
        let images = Self::images_of(entry);
        if images.is_empty() {
            return self.workloads.remove(&key).is_some();
        }
        if self.workloads.get(&key) == Some(&images) {
            return false;
        }
        self.workloads.insert(key, images);
        true
    }

    /// Removes a workload; returns whether the index changed.
    pub fn delete(&mut self, kind: Kind, namespace: &str, name: &str) -> bool {
        self.workloads
            .remove(&(kind, namespace.to_owned(), name.to_owned()))
            .is_some()
    }

    /// Replaces every workload of `kind` (after a relist); returns whether
    /// the index changed.
    pub fn reset(&mut self, kind: Kind, entries: &[Observed]) -> bool {
        let before: HashMap<WorkloadKey, Images> = self
            .workloads
            .iter()
            .filter(|((k, _, _), _)| *k == kind)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.workloads.retain(|(k, _, _), _| *k != kind);
        for entry in entries.iter().filter(|e| e.kind == kind) {
            self.apply(entry);
        }
        let after = self
            .workloads
            .iter()
            .filter(|((k, _, _), _)| *k == kind)
            .count();
        after != before.len() || before.iter().any(|(k, v)| self.workloads.get(k) != Some(v))
    }

    pub(crate) fn workload_count(&self) -> usize {
        self.workloads.len()
    }

    /// The index as of now.
    pub fn build(&self, generated_at: Option<jiff::Timestamp>) -> Index {
        let entries = self
            .workloads
            .iter()
            .flat_map(|((kind, ns, name), images)| {
                images.iter().map(move |(image, containers)| {
                    let mut containers = containers.clone();
                    containers.sort();
                    (
                        image.clone(),
                        WorkloadRef {
                            kind: *kind,
                            namespace: ns.clone(),
                            name: name.clone(),
                            containers,
                        },
                    )
                })
            });
        Index::from_entries(generated_at, entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const D: &str = "sha256:6ec128e26cd5e5b3d5ad4ad0b3b1e0b5c5a4a2a8e1f3f6f9d0a7b4c1e2d3f4a5";

    fn e(kind: Kind, ns: &str, name: &str, cs: &[(&str, &str)]) -> Observed {
        Observed {
            kind,
            namespace: ns.into(),
            name: name.into(),
            containers: cs
                .iter()
                .map(|(n, i)| (n.to_string(), i.to_string()))
                .collect(),
        }
    }

    fn names(index: &Index, key: &str) -> Vec<String> {
        index
            .lookup(key)
            .iter()
            .map(|w| {
                format!(
                    "{}/{}/{}:{}",
                    w.kind,
                    w.namespace,
                    w.name,
                    w.containers.join("+")
                )
            })
            .collect()
    }

    #[test]
    fn apply_delete_reset() {
        let mut b = IndexBuilder::new(NamespaceFilter::default());
        let pinned = format!("app:v1@{D}");
        // (step, changed, image key, expected workloads for it)
        type Step = Box<dyn Fn(&mut IndexBuilder) -> bool>;
        let steps: Vec<(&str, Step, bool, &str, Vec<&str>)> = vec![
            (
                "add",
                Box::new(|b| b.apply(&e(Kind::Deployment, "a", "web", &[("app", "app:v1")]))),
                true,
                "docker.io/library/app:v1",
                vec!["Deployment/a/web:app"],
            ),
            (
                "same again",
                Box::new(|b| b.apply(&e(Kind::Deployment, "a", "web", &[("app", "app:v1")]))),
                false,
                "docker.io/library/app:v1",
                vec!["Deployment/a/web:app"],
            ),
            (
                "init container and sidecar",
                Box::new(|b| {
                    b.apply(&e(
                        Kind::StatefulSet,
                        "a",
                        "db",
                        &[("init", "docker.io/library/app:v1"), ("pg", "postgres")],
                    ))
                }),
                true,
                "docker.io/library/app:v1",
                vec!["Deployment/a/web:app", "StatefulSet/a/db:init"],
            ),
            (
                "image changed",
                Box::new(|b| b.apply(&e(Kind::Deployment, "a", "web", &[("app", "app:v2")]))),
                true,
                "docker.io/library/app:v1",
                vec!["StatefulSet/a/db:init"],
            ),
            (
                "pinned is left out",
                Box::new(move |b| b.apply(&e(Kind::DaemonSet, "a", "ds", &[("app", &pinned)]))),
                false,
                "docker.io/library/app:v1",
                vec!["StatefulSet/a/db:init"],
            ),
            (
                "delete",
                Box::new(|b| b.delete(Kind::StatefulSet, "a", "db")),
                true,
                "docker.io/library/app:v1",
                vec![],
            ),
            (
                "delete unknown",
                Box::new(|b| b.delete(Kind::StatefulSet, "a", "db")),
                false,
                "docker.io/library/app:v1",
                vec![],
            ),
            (
                "reset one kind",
                Box::new(|b| {
                    b.reset(
                        Kind::Deployment,
                        &[e(Kind::Deployment, "b", "api", &[("c", "app:v1")])],
                    )
                }),
                true,
                "docker.io/library/app:v1",
                vec!["Deployment/b/api:c"],
            ),
            (
                "reset to the same",
                Box::new(|b| {
                    b.reset(
                        Kind::Deployment,
                        &[e(Kind::Deployment, "b", "api", &[("c", "app:v1")])],
                    )
                }),
                false,
                "docker.io/library/app:v1",
                vec!["Deployment/b/api:c"],
            ),
            (
                "two containers, one image",
                Box::new(|b| {
                    b.apply(&e(
                        Kind::Deployment,
                        "b",
                        "api",
                        &[("c", "app:v1"), ("a", "APP:v1")],
                    ))
                }),
                false,
                "docker.io/library/app:v1",
                vec!["Deployment/b/api:c"],
            ),
            (
                "two containers",
                Box::new(|b| {
                    b.apply(&e(
                        Kind::Deployment,
                        "b",
                        "api",
                        &[("c", "app:v1"), ("a", "library/app:v1")],
                    ))
                }),
                true,
                "docker.io/library/app:v1",
                vec!["Deployment/b/api:a+c"],
            ),
        ];
        for (name, step, changed, key, want) in steps {
            assert_eq!(step(&mut b), changed, "{name}");
            assert_eq!(names(&b.build(None), key), want, "{name}");
        }
        // An invalid image is skipped, not fatal.
        assert!(!b.apply(&e(Kind::Deployment, "c", "bad", &[("x", "Not An Image")])));
    }

    #[test]
    fn namespace_filter_applies() {
        let filter = NamespaceFilter {
            include: vec![],
            exclude: vec!["kube-system".into()],
        };
        let mut b = IndexBuilder::new(filter);
        assert!(!b.apply(&e(
            Kind::DaemonSet,
            "kube-system",
            "proxy",
            &[("p", "app:v1")]
        )));
        assert!(b.apply(&e(Kind::DaemonSet, "default", "proxy", &[("p", "app:v1")])));
        assert_eq!(b.workload_count(), 1);
    }

    #[test]
    fn pins_are_indexed_under_their_tag_in_pin_mode_or_when_ours() {
        const D: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
        const E: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
        let pinned = format!("app:v1@{D}");
        // (workload annotations, template annotations, image, indexed as)
        let table: Vec<(serde_json::Value, serde_json::Value, String, &str)> = vec![
            (json!({}), json!({}), pinned.clone(), pinned.as_str()),
            (
                json!({"pushroll.io/mode": "pin"}),
                json!({}),
                pinned.clone(),
                "app:v1",
            ),
            (
                json!({}),
                json!({"pushroll.io/mode": "pin"}),
                pinned.clone(),
                "app:v1",
            ),
            // pushroll pinned it (restart mode named on the workload or not):
            (
                json!({}),
                json!({"digest.pushroll.io/c": D}),
                pinned.clone(),
                "app:v1",
            ),
            // someone else's pin to another digest is theirs
            (
                json!({}),
                json!({"digest.pushroll.io/c": E}),
                pinned.clone(),
                pinned.as_str(),
            ),
            // a digest-only reference names no tag
            (
                json!({"pushroll.io/mode": "pin"}),
                json!({}),
                format!("app@{D}"),
                "",
            ),
            (json!({}), json!({}), "app:v1".into(), "app:v1"),
        ];
        for (own, template, image, want) in table {
            let d: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(json!({
                "metadata": {"name": "web", "namespace": "prod", "annotations": own},
                "spec": {"selector": {}, "template": {
                    "metadata": {"annotations": template},
                    "spec": {"containers": [{"name": "c", "image": image}]}}}
            }))
            .unwrap();
            let entry = Observed::of(&d);
            let mut b = IndexBuilder::default();
            b.apply(&entry);
            let index = b.build(None);
            let key = match_key(want);
            assert_eq!(
                key.as_deref().map(|k| names(&index, k)),
                key.as_ref()
                    .map(|_| vec!["Deployment/prod/web:c".to_owned()]),
                "{image} {own} {template}"
            );
            if want.is_empty() || want.contains('@') {
                assert_eq!(b.workload_count(), 0, "{image}: never matches");
            }
        }
    }

    #[test]
    fn entry_reads_typed_objects() {
        let d: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "prod"},
            "spec": {"selector": {}, "template": {"spec": {
                "initContainers": [{"name": "i", "image": "init:1"}],
                "containers": [{"name": "c", "image": "app:1"}, {"name": "noimage"}]}}}
        }))
        .unwrap();
        let entry = Observed::of(&d);
        assert_eq!(
            entry,
            e(
                Kind::Deployment,
                "prod",
                "web",
                &[("i", "init:1"), ("c", "app:1")]
            )
        );
    }
}
