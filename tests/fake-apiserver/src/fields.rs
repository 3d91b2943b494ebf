//! Field ownership (`metadata.managedFields`), a simplified server-side
//! apply.
//!
//! Fields are the leaf paths of an object: a map key whose value is a
//! scalar, a list (lists are atomic here; the real server tracks items of
//! `listType=map` lists by key) or an empty map. Updates (PUT, PATCH,
//! create) give the fields they change to their manager and take them from
//! the others; an apply (`application/apply-patch+yaml`) owns exactly the
//! fields of its body and conflicts (409) with another manager owning one of
//! them with a different value, unless `force=true`. This is what leader
//! election with kube-lease-manager relies on.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

/// A field: the keys from the root to a leaf.
pub type Path = Vec<String>;

#[derive(Debug, Clone)]
pub struct Managed {
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: &'static str,
    pub api_version: String,
    pub time: String,
    pub fields: BTreeSet<Path>,
}

/// The ownership of one object.
#[derive(Debug, Clone, Default)]
pub struct Managers(pub Vec<Managed>);

impl PartialEq for Managers {
    // Times do not count: a write that changes nothing else is a no-op.
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len()
            && self.0.iter().zip(&other.0).all(|(a, b)| {
                a.manager == b.manager && a.operation == b.operation && a.fields == b.fields
            })
    }
}

/// Metadata fields the server owns; never tracked.
fn ignored(path: &[String]) -> bool {
    match path {
        [k] if k == "apiVersion" || k == "kind" || k == "status" => true,
        [m, k, ..] if m == "metadata" => !matches!(
            k.as_str(),
            "labels" | "annotations" | "finalizers" | "ownerReferences"
        ),
        _ => false,
    }
}

/// The leaf fields of `v`.
pub fn leaves(v: &Value) -> BTreeSet<Path> {
    let mut out = BTreeSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

fn walk(v: &Value, path: &mut Path, out: &mut BTreeSet<Path>) {
    if ignored(path) {
        return;
    }
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                path.push(k.clone());
                walk(child, path, out);
                path.pop();
            }
        }
        _ if path.is_empty() => {}
        _ => {
            out.insert(path.clone());
        }
    }
}

pub fn value_at<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, k| cur.get(k))
}

/// Leaves whose value differs between `old` and `new` (added, changed or
/// removed).
pub fn changed(old: &Value, new: &Value) -> BTreeSet<Path> {
    let a = leaves(old);
    let b = leaves(new);
    a.union(&b)
        .filter(|p| value_at(old, p) != value_at(new, p))
        .cloned()
        .collect()
}

impl Managers {
    /// Records an update by `manager` that turned `old` into `new`.
    pub fn record_update(
        &mut self,
        manager: &str,
        api_version: &str,
        now: &str,
        old: &Value,
        new: &Value,
    ) {
        let changed = changed(old, new);
        if changed.is_empty() {
            return;
        }
        for m in &mut self.0 {
            m.fields.retain(|p| !changed.contains(p));
        }
        let owned: BTreeSet<Path> = changed
            .into_iter()
            .filter(|p| value_at(new, p).is_some())
            .collect();
        let entry = self.entry(manager, "Update", api_version, now);
        entry.fields.extend(owned);
        entry.time = now.to_string();
        self.0.retain(|m| !m.fields.is_empty());
    }

    fn entry(
        &mut self,
        manager: &str,
        operation: &'static str,
        api_version: &str,
        now: &str,
    ) -> &mut Managed {
        let pos = self
            .0
            .iter()
            .position(|m| m.manager == manager && m.operation == operation);
        let i = match pos {
            Some(i) => i,
            None => {
                self.0.push(Managed {
                    manager: manager.to_string(),
                    operation,
                    api_version: api_version.to_string(),
                    time: now.to_string(),
                    fields: BTreeSet::new(),
                });
                self.0.len() - 1
            }
        };
        &mut self.0[i]
    }

    /// Conflicts of an apply of `applied` by `manager` against `current`:
    /// (other manager, field) pairs where the other owns the field and the
    /// values differ.
    pub fn conflicts(
        &self,
        manager: &str,
        current: &Value,
        applied: &Value,
    ) -> Vec<(String, Path)> {
        let mut out = Vec::new();
        for p in leaves(applied) {
            for m in &self.0 {
                if m.manager == manager && m.operation == "Apply" {
                    continue;
                }
                if m.fields.contains(&p) && value_at(current, &p) != value_at(applied, &p) {
                    out.push((m.manager.clone(), p.clone()));
                }
            }
        }
        out
    }

    /// Computes the object after an apply and records the new ownership.
    /// Fields the manager applied before and no longer applies are removed
    /// unless someone else owns them.
    #[allow(clippy::too_many_arguments)]
    pub fn apply(
        &mut self,
        manager: &str,
        api_version: &str,
        now: &str,
        current: &Value,
        applied: &Value,
        merged: Value,
        force: bool,
    ) -> Value {
        let applied_fields = leaves(applied);
        let mut result = merged;
        let previous: BTreeSet<Path> = self
            .0
            .iter()
            .find(|m| m.manager == manager && m.operation == "Apply")
            .map(|m| m.fields.clone())
            .unwrap_or_default();
        for p in previous.difference(&applied_fields) {
            let owned_by_other = self
                .0
                .iter()
                .any(|m| !(m.manager == manager && m.operation == "Apply") && m.fields.contains(p));
            if !owned_by_other {
                remove_path(&mut result, p);
            }
        }
        for m in &mut self.0 {
            if m.manager == manager && m.operation == "Apply" {
                continue;
            }
            // Forced fields move; fields whose value changed move too.
            m.fields.retain(|p| {
                !(applied_fields.contains(p)
                    && (force || value_at(current, p) != value_at(applied, p)))
            });
        }
        let entry = self.entry(manager, "Apply", api_version, now);
        if entry.fields != applied_fields {
            entry.time = now.to_string();
        }
        entry.fields = applied_fields;
        self.0.retain(|m| !m.fields.is_empty());
        result
    }

    /// `metadata.managedFields` in the FieldsV1 format.
    pub fn render(&self) -> Value {
        Value::Array(
            self.0
                .iter()
                .map(|m| {
                    let mut trie = Map::new();
                    for p in &m.fields {
                        let mut node = &mut trie;
                        for k in p {
                            node = node
                                .entry(format!("f:{k}"))
                                .or_insert_with(|| Value::Object(Map::new()))
                                .as_object_mut()
                                .expect("trie nodes are maps");
                        }
                    }
                    json!({
                        "manager": m.manager,
                        "operation": m.operation,
                        "apiVersion": m.api_version,
                        "time": m.time,
                        "fieldsType": "FieldsV1",
                        "fieldsV1": trie,
                    })
                })
                .collect(),
        )
    }
}

fn remove_path(v: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for k in parents {
        match cur.get_mut(k) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(m) = cur.as_object_mut() {
        m.remove(last);
    }
}

/// `.spec.holderIdentity`, as conflict messages write a field.
pub fn dotted(path: &[String]) -> String {
    path.iter().map(|k| format!(".{k}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_conflicts_with_another_owner_unless_forced() {
        let empty = json!({"spec": {}});
        let mut ms = Managers::default();
        let a = json!({"spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}});
        assert!(ms.conflicts("a", &empty, &a).is_empty());
        let cur = ms.apply("a", "v1", "t", &empty, &a, a.clone(), false);
        let b = json!({"spec": {"holderIdentity": "b", "leaseDurationSeconds": 15}});
        let c = ms.conflicts("b", &cur, &b);
        assert_eq!(
            c,
            vec![(
                "a".to_string(),
                vec!["spec".to_string(), "holderIdentity".to_string()]
            )]
        );
        // Same value: shared ownership, no conflict.
        assert!(ms.conflicts("c", &cur, &a).is_empty());
        // An update takes the field from the applier.
        let released = json!({"spec": {"leaseDurationSeconds": 15}});
        ms.record_update("a-updater", "v1", "t", &cur, &released);
        assert!(ms.conflicts("b", &released, &b).is_empty());
    }

    #[test]
    fn apply_removes_fields_no_longer_applied() {
        let mut ms = Managers::default();
        let first = json!({"metadata": {"labels": {"x": "1", "y": "2"}}});
        let cur = ms.apply("m", "v1", "t", &json!({}), &first, first.clone(), false);
        let second = json!({"metadata": {"labels": {"x": "1"}}});
        let merged = crate::patch::strategic_merge(&cur, &second).unwrap();
        let out = ms.apply("m", "v1", "t", &cur, &second, merged, false);
        assert_eq!(out, json!({"metadata": {"labels": {"x": "1"}}}));
        let rendered = ms.render();
        assert_eq!(
            rendered[0]["fieldsV1"],
            json!({"f:metadata": {"f:labels": {"f:x": {}}}})
        );
    }
}
