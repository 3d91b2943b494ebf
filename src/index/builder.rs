//! The index core without I/O: workloads in, image→workloads out. The scan
//! (`pushroll index`), the watch (`index --watch`) and `serve --on-miss
//! scan` all feed it the same way: `apply`, `delete`, `reset` (a watch's
//! relist: `begin_relist`, `relisted`, `finish_relist`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use kube::ResourceExt as _;

use crate::index::intern::Interner;
use crate::index::{Entry, Index};
use crate::plan::digest_annotation;
use crate::reference::{match_key, strip_pin};
use crate::workload::{Kind, Mode, NamespaceFilter, Workload, containers};

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

/// One image a workload runs, and the names of its containers that run
/// it (sorted).
type ImageUse = (Arc<str>, Arc<[Arc<str>]>);

/// What the index keeps of a workload: its matchable images, sorted by key.
/// Interned, like every string in it: workloads deployed from one template
/// share one copy.
type Images = Arc<[ImageUse]>;

/// One kind's workloads, by namespace and name.
type Table = HashMap<(Arc<str>, Arc<str>), Images>;

/// The incremental index.
///
/// It holds every workload of a cluster for as long as the indexer runs, so
/// it is kept small: each string (namespace, name, image key, container
/// name), each container list and each image set is held once and shared,
/// also with the [`Index`]es built from it; one table per kind, so that a
/// relist replaces its kind's table without copying the others.
#[derive(Debug, Default)]
pub struct IndexBuilder {
    namespaces: NamespaceFilter,
    /// By [`slot`].
    tables: [Table; 3],
    /// The table of a relist in progress ([`begin_relist`](Self::begin_relist)),
    /// by [`slot`].
    relists: [Option<Table>; 3],
    strings: Interner<str>,
    lists: Interner<[Arc<str>]>,
    sets: Interner<[ImageUse]>,
    /// Workloads removed or replaced since the interners were last pruned.
    dropped: usize,
}

/// Where a kind's table is: its place in [`Kind::ALL`].
fn slot(kind: Kind) -> usize {
    Kind::ALL
        .iter()
        .position(|k| *k == kind)
        .expect("every kind is in Kind::ALL")
}

/// Dropped workloads between two prunes of the interners, at least (and at
/// least as many as the builder holds, so that pruning costs O(1) per drop).
const PRUNE_AFTER: usize = 1024;

impl IndexBuilder {
    pub fn new(namespaces: NamespaceFilter) -> IndexBuilder {
        IndexBuilder {
            namespaces,
            ..IndexBuilder::default()
        }
    }

    /// What of a workload the index keeps: matchable images only (pinned and
    /// invalid references can never match a push). `None` when none is.
    fn images_of(&mut self, entry: &Observed) -> Option<Images> {
        let mut images: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for (container, image) in &entry.containers {
            if let Some(key) = match_key(image) {
                images.entry(key).or_default().push(container);
            }
        }
        if images.is_empty() {
            return None;
        }
        let uses: Vec<ImageUse> = images
            .into_iter()
            .map(|(key, mut containers)| {
                containers.sort_unstable();
                containers.dedup();
                let names: Vec<Arc<str>> =
                    containers.iter().map(|c| self.strings.intern(c)).collect();
                (self.strings.intern(&key), self.lists.intern(&names))
            })
            .collect();
        Some(self.sets.intern(&uses))
    }

    /// The table key of `entry`.
    fn key(&mut self, entry: &Observed) -> (Arc<str>, Arc<str>) {
        (
            self.strings.intern(&entry.namespace),
            self.strings.intern(&entry.name),
        )
    }

    /// Adds or updates a workload; returns whether the index changed.
    pub fn apply(&mut self, entry: &Observed) -> bool {
        if !self.namespaces.allows(&entry.namespace) {
            return false;
        }
        let Some(images) = self.images_of(entry) else {
            return self.delete(entry.kind, &entry.namespace, &entry.name);
        };
        let key = self.key(entry);
        let table = &mut self.tables[slot(entry.kind)];
        if table.get(&key) == Some(&images) {
            return false;
        }
        let replaced = table.insert(key, images).is_some();
        self.note_dropped(usize::from(replaced));
        true
    }

    /// Removes a workload; returns whether the index changed.
    pub fn delete(&mut self, kind: Kind, namespace: &str, name: &str) -> bool {
        let (Some(namespace), Some(name)) = (self.strings.get(namespace), self.strings.get(name))
        else {
            return false;
        };
        let removed = self.tables[slot(kind)].remove(&(namespace, name)).is_some();
        self.note_dropped(usize::from(removed));
        removed
    }

    /// Starts a relist of `kind`: [`relisted`](Self::relisted) collects
    /// what it lists, [`finish_relist`](Self::finish_relist) makes that the
    /// kind's content. The index does not change meanwhile. Collecting here,
    /// rather than in a list of [`Observed`] to [`reset`](Self::reset)
    /// with, holds each listed workload in its compact, shared form.
    pub fn begin_relist(&mut self, kind: Kind) {
        self.relists[slot(kind)] = Some(Table::new());
    }

    /// One workload of the relist of its kind in progress.
    pub fn relisted(&mut self, entry: &Observed) {
        if !self.namespaces.allows(&entry.namespace) {
            return;
        }
        if let Some(images) = self.images_of(entry) {
            let key = self.key(entry);
            self.relists[slot(entry.kind)]
                .get_or_insert_with(Table::new)
                .insert(key, images);
        }
    }

    /// Replaces every workload of `kind` with those of its relist; returns
    /// whether the index changed.
    pub fn finish_relist(&mut self, kind: Kind) -> bool {
        let mut listed = self.relists[slot(kind)].take().unwrap_or_default();
        listed.shrink_to_fit();
        let before = std::mem::replace(&mut self.tables[slot(kind)], listed);
        let changed = before != self.tables[slot(kind)];
        self.note_dropped(before.len());
        changed
    }

    /// Replaces every workload of `kind` (after a relist); returns whether
    /// the index changed.
    pub fn reset(&mut self, kind: Kind, entries: &[Observed]) -> bool {
        self.begin_relist(kind);
        for entry in entries.iter().filter(|e| e.kind == kind) {
            self.relisted(entry);
        }
        self.finish_relist(kind)
    }

    /// Counts workloads dropped; now and then (see [`PRUNE_AFTER`]),
    /// forgets the values nothing holds any more: what a relist replaced,
    /// or a cluster's churn of image tags over days. Sets first: they hold
    /// lists and strings.
    fn note_dropped(&mut self, dropped: usize) {
        self.dropped += dropped;
        if self.dropped >= self.workload_count().max(PRUNE_AFTER) {
            self.sets.prune();
            self.lists.prune();
            self.strings.prune();
            self.dropped = 0;
        }
    }

    pub(crate) fn workload_count(&self) -> usize {
        self.tables.iter().map(HashMap::len).sum()
    }

    /// The index as of now. It shares the builder's strings: building
    /// copies none.
    pub fn build(&self, generated_at: Option<jiff::Timestamp>) -> Index {
        // Counted first, so that each key's entries are allocated once, at
        // their size.
        let mut counts: HashMap<&Arc<str>, usize> = HashMap::new();
        for images in self.tables.iter().flat_map(HashMap::values) {
            for (image, _) in images.iter() {
                *counts.entry(image).or_default() += 1;
            }
        }
        let mut images: HashMap<Arc<str>, Vec<Entry>> = counts
            .into_iter()
            .map(|(image, n)| (image.clone(), Vec::with_capacity(n)))
            .collect();
        for (kind, table) in Kind::ALL.into_iter().zip(&self.tables) {
            for ((namespace, name), uses) in table {
                for (image, containers) in uses.iter() {
                    images.get_mut(image).expect("counted").push(Entry {
                        kind,
                        namespace: namespace.clone(),
                        name: name.clone(),
                        containers: containers.clone(),
                    });
                }
            }
        }
        Index::from_images(generated_at, images)
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
    fn values_nothing_holds_are_forgotten() {
        let mut b = IndexBuilder::new(NamespaceFilter::default());
        // A workload whose tag changes, over and over.
        for i in 0..5 * PRUNE_AFTER {
            let image = format!("app:v{i}");
            assert!(b.apply(&e(Kind::Deployment, "a", "web", &[("app", &image)])));
        }
        assert!(b.strings.len() <= PRUNE_AFTER + 3, "{}", b.strings.len());
        assert!(b.sets.len() <= PRUNE_AFTER + 1, "{}", b.sets.len());
        let last = format!("docker.io/library/app:v{}", 5 * PRUNE_AFTER - 1);
        assert_eq!(names(&b.build(None), &last), ["Deployment/a/web:app"]);
        // A relist replaces a table; an index built before it keeps its
        // strings.
        let before = b.build(None);
        assert!(b.reset(
            Kind::Deployment,
            &[e(Kind::Deployment, "b", "api", &[("c", "x:1")])]
        ));
        assert_eq!(names(&before, &last), ["Deployment/a/web:app"]);
        assert_eq!(b.workload_count(), 1);
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
