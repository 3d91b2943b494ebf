//! The three PATCH formats of kube-apiserver, as pure functions on JSON.
//!
//! * [`strategic_merge`]: Kubernetes' strategic merge patch. The real server
//!   reads merge keys from Go struct tags; this fake knows them by field name
//!   (see [`merge_key`]), which is exact for the types it serves.
//!   Supported: recursive map merge, `null` deletes, merge-by-key lists,
//!   union of `metadata.finalizers`, `$patch: replace|delete|merge` on maps
//!   and list items, `$retainKeys`, `$deleteFromPrimitiveList/<field>`.
//!   `$setElementOrder/<field>` is accepted and ignored (merged lists keep
//!   the stored order, new items are appended, which is what the real server
//!   does when no order directive is sent).
//! * [`merge_patch`]: RFC 7386 JSON merge patch.
//! * [`json_patch`]: RFC 6902 JSON patch (add, remove, replace, move, copy,
//!   test).

use serde_json::{Map, Value};

/// Why a patch could not be applied. The HTTP layer turns `Malformed` into
/// 400 BadRequest and `Failed` into 422, as the real server does.
#[derive(Debug, Clone, PartialEq)]
pub enum PatchError {
    /// The patch document itself is not valid for its format.
    Malformed(String),
    /// The patch is well-formed but does not apply to this object (a failed
    /// `test`, a missing path).
    Failed(String),
}

impl std::fmt::Display for PatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PatchError::Malformed(m) | PatchError::Failed(m) => f.write_str(m),
        }
    }
}

/// How a list field merges under a strategic merge patch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ListStrategy {
    /// Items are maps merged by this key.
    MergeKey(&'static str),
    /// A list of scalars merged as a set union (`patchStrategy:"merge"`).
    PrimitiveUnion,
}

/// The merge strategy of list fields of the served types, by field name.
/// Lists not named here are replaced whole, like fields without a
/// `patchStrategy` tag (`tolerations`, `args`, `command`, `envFrom`, …).
pub fn merge_key(field: &str) -> Option<ListStrategy> {
    use ListStrategy::*;
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "volumeMounts"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => MergeKey("name"),
        "ports" => MergeKey("containerPort"),
        "volumeDevices" => MergeKey("devicePath"),
        "hostAliases" => MergeKey("ip"),
        "topologySpreadConstraints" => MergeKey("topologyKey"),
        "ownerReferences" => MergeKey("uid"),
        "conditions" => MergeKey("type"),
        "finalizers" => PrimitiveUnion,
        _ => return None,
    })
}

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_FROM_PRIMITIVE: &str = "$deleteFromPrimitiveList/";
const SET_ORDER: &str = "$setElementOrder/";

/// Applies a strategic merge patch to `original`.
pub fn strategic_merge(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    let Value::Object(p) = patch else {
        return Err(PatchError::Malformed(
            "unable to unmarshal patch: a strategic merge patch must be a JSON object".into(),
        ));
    };
    let orig = match original {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    Ok(merge_map(orig, p)?
        .map(Value::Object)
        .unwrap_or(Value::Null))
}

/// Merges patch map `p` into `orig`; `None` means the map was deleted by
/// `$patch: delete`.
fn merge_map(
    mut orig: Map<String, Value>,
    p: &Map<String, Value>,
) -> Result<Option<Map<String, Value>>, PatchError> {
    match p.get(DIRECTIVE) {
        None => {}
        Some(Value::String(d)) if d == "merge" => {}
        Some(Value::String(d)) if d == "delete" => return Ok(None),
        Some(Value::String(d)) if d == "replace" => {
            // Replace: the patch (without directives) is the new map.
            return Ok(Some(clean(p)));
        }
        Some(other) => {
            return Err(PatchError::Malformed(format!(
                "unknown patch type: {other}"
            )));
        }
    }
    for (key, pv) in p {
        if key == DIRECTIVE || key == RETAIN_KEYS || key.starts_with(SET_ORDER) {
            continue;
        }
        if let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE) {
            let Value::Array(remove) = pv else {
                return Err(PatchError::Malformed(format!("{key} must be a list")));
            };
            if let Some(Value::Array(items)) = orig.get_mut(field) {
                items.retain(|v| !remove.contains(v));
            }
            continue;
        }
        match pv {
            Value::Null => {
                orig.remove(key);
            }
            Value::Object(pm) => {
                let base = match orig.remove(key) {
                    Some(Value::Object(m)) => m,
                    _ => Map::new(),
                };
                if let Some(m) = merge_map(base, pm)? {
                    orig.insert(key.clone(), Value::Object(m));
                }
            }
            Value::Array(pl) => {
                let base = match orig.remove(key) {
                    Some(Value::Array(l)) => l,
                    _ => Vec::new(),
                };
                let merged = match merge_key(key) {
                    Some(ListStrategy::MergeKey(k)) => merge_list_by_key(base, pl, k)?,
                    Some(ListStrategy::PrimitiveUnion) => {
                        let mut out = base;
                        for v in pl {
                            if !out.contains(v) {
                                out.push(v.clone());
                            }
                        }
                        out
                    }
                    None => pl.iter().map(clean_value).collect(),
                };
                orig.insert(key.clone(), Value::Array(merged));
            }
            scalar => {
                orig.insert(key.clone(), scalar.clone());
            }
        }
    }
    if let Some(retain) = p.get(RETAIN_KEYS) {
        let Value::Array(keep) = retain else {
            return Err(PatchError::Malformed("$retainKeys must be a list".into()));
        };
        orig.retain(|k, _| keep.iter().any(|v| v.as_str() == Some(k)));
    }
    Ok(Some(orig))
}

fn merge_list_by_key(
    mut base: Vec<Value>,
    patch: &[Value],
    key: &str,
) -> Result<Vec<Value>, PatchError> {
    // `{"$patch": "replace"}` as an item: the other items are the whole list.
    let replace = patch.iter().any(|item| {
        item.as_object().is_some_and(|m| {
            m.len() == 1 && m.get(DIRECTIVE).and_then(Value::as_str) == Some("replace")
        })
    });
    if replace {
        return Ok(patch
            .iter()
            .filter(|i| i.get(DIRECTIVE).is_none())
            .map(clean_value)
            .collect());
    }
    for item in patch {
        let Value::Object(pm) = item else {
            return Err(PatchError::Malformed(format!(
                "the list items must be maps with the merge key {key:?}"
            )));
        };
        let Some(kv) = pm.get(key) else {
            return Err(PatchError::Malformed(format!(
                "map: {item} does not contain declared merge key: {key}"
            )));
        };
        let pos = base.iter().position(|o| o.get(key) == Some(kv));
        if pm.get(DIRECTIVE).and_then(Value::as_str) == Some("delete") {
            base.retain(|o| o.get(key) != Some(kv));
            continue;
        }
        match pos {
            Some(i) => {
                let orig = match std::mem::take(&mut base[i]) {
                    Value::Object(m) => m,
                    _ => Map::new(),
                };
                match merge_map(orig, pm)? {
                    Some(m) => base[i] = Value::Object(m),
                    None => {
                        base.remove(i);
                    }
                }
            }
            None => base.push(clean_value(item)),
        }
    }
    Ok(base)
}

/// A patch fragment used as a new value: directives and `null`s dropped.
fn clean(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .filter(|(k, v)| !k.starts_with('$') && !v.is_null())
        .map(|(k, v)| (k.clone(), clean_value(v)))
        .collect()
}

fn clean_value(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(clean(m)),
        Value::Array(l) => Value::Array(l.iter().map(clean_value).collect()),
        other => other.clone(),
    }
}

/// Applies an RFC 7386 JSON merge patch.
pub fn merge_patch(original: &Value, patch: &Value) -> Value {
    match patch {
        Value::Object(p) => {
            let mut out = match original {
                Value::Object(m) => m.clone(),
                _ => Map::new(),
            };
            for (k, v) in p {
                if v.is_null() {
                    out.remove(k);
                } else {
                    let merged = merge_patch(out.get(k).unwrap_or(&Value::Null), v);
                    out.insert(k.clone(), merged);
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// Applies an RFC 6902 JSON patch.
pub fn json_patch(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    let Value::Array(ops) = patch else {
        return Err(PatchError::Malformed(
            "json: cannot unmarshal object into Go value of type jsonpatch.Patch".into(),
        ));
    };
    let mut doc = original.clone();
    for op in ops {
        let name = op
            .get("op")
            .and_then(Value::as_str)
            .ok_or_else(|| PatchError::Malformed(format!("operation missing \"op\": {op}")))?;
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| PatchError::Malformed(format!("operation missing \"path\": {op}")))?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| PatchError::Malformed(format!("operation {name} missing \"value\"")))
        };
        let from = || {
            op.get("from")
                .and_then(Value::as_str)
                .ok_or_else(|| PatchError::Malformed(format!("operation {name} missing \"from\"")))
        };
        match name {
            "add" => add(&mut doc, path, value()?)?,
            "remove" => {
                remove(&mut doc, path)?;
            }
            "replace" => {
                let target = pointer_mut(&mut doc, path).ok_or_else(|| {
                    PatchError::Failed(format!(
                        "replace operation does not apply: doc is missing key: {path}: missing value"
                    ))
                })?;
                *target = value()?;
            }
            "move" => {
                let v = remove(&mut doc, from()?)?;
                add(&mut doc, path, v)?;
            }
            "copy" => {
                let from = from()?;
                let v = doc.pointer(from).cloned().ok_or_else(|| {
                    PatchError::Failed(format!("copy from does not exist: {from}: missing value"))
                })?;
                add(&mut doc, path, v)?;
            }
            "test" => {
                let expected = value()?;
                let actual = if path.is_empty() {
                    Some(&doc)
                } else {
                    doc.pointer(path)
                };
                let same = match actual {
                    Some(a) => a == &expected,
                    None => expected.is_null(),
                };
                if !same {
                    return Err(PatchError::Failed(format!(
                        "testing value {path} failed: test failed"
                    )));
                }
            }
            other => return Err(PatchError::Malformed(format!("Unexpected kind: {other}"))),
        }
    }
    Ok(doc)
}

/// Splits a JSON pointer into its parent pointer and unescaped last token.
fn split_pointer(path: &str) -> Result<(&str, String), PatchError> {
    let idx = path
        .rfind('/')
        .ok_or_else(|| PatchError::Malformed(format!("invalid JSON pointer {path:?}")))?;
    let last = path[idx + 1..].replace("~1", "/").replace("~0", "~");
    Ok((&path[..idx], last))
}

fn pointer_mut<'a>(doc: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    if path.is_empty() {
        Some(doc)
    } else {
        doc.pointer_mut(path)
    }
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), PatchError> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = split_pointer(path)?;
    let missing = || {
        PatchError::Failed(format!(
            "add operation does not apply: doc is missing path: {path:?}: missing value"
        ))
    };
    match pointer_mut(doc, parent).ok_or_else(missing)? {
        Value::Object(m) => {
            m.insert(last, value);
        }
        Value::Array(l) => {
            if last == "-" {
                l.push(value);
            } else {
                let i: usize = last.parse().map_err(|_| missing())?;
                if i > l.len() {
                    return Err(PatchError::Failed(format!(
                        "add operation does not apply: index out of bounds: {path}"
                    )));
                }
                l.insert(i, value);
            }
        }
        _ => return Err(missing()),
    }
    Ok(())
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, PatchError> {
    let (parent, last) = split_pointer(path)?;
    let missing = || {
        PatchError::Failed(format!(
            "Unable to remove nonexistent key: {last}: missing value"
        ))
    };
    match pointer_mut(doc, parent).ok_or_else(missing)? {
        Value::Object(m) => m.remove(&last).ok_or_else(missing),
        Value::Array(l) => {
            let i: usize = last.parse().map_err(|_| missing())?;
            if i >= l.len() {
                return Err(missing());
            }
            Ok(l.remove(i))
        }
        _ => Err(missing()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merge_table() {
        // (name, original, patch, expected)
        let cases: Vec<(&str, Value, Value, Value)> = vec![
            (
                "scalar set",
                json!({"a": 1}),
                json!({"b": 2}),
                json!({"a": 1, "b": 2}),
            ),
            (
                "null deletes",
                json!({"a": 1, "b": 2}),
                json!({"b": null}),
                json!({"a": 1}),
            ),
            (
                "null on missing key is a no-op",
                json!({"a": 1}),
                json!({"z": null}),
                json!({"a": 1}),
            ),
            (
                "nested maps merge",
                json!({"spec": {"template": {"metadata": {"annotations": {"x": "1"}}}}}),
                json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "now"}}}}}),
                json!({"spec": {"template": {"metadata": {"annotations": {"x": "1", "kubectl.kubernetes.io/restartedAt": "now"}}}}}),
            ),
            (
                "map created from patch drops nulls",
                json!({}),
                json!({"m": {"a": 1, "b": null}}),
                json!({"m": {"a": 1}}),
            ),
            (
                "containers merge by name",
                json!({"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}),
                json!({"containers": [{"name": "b", "image": "b:2"}]}),
                json!({"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:2"}]}),
            ),
            (
                "new container appended",
                json!({"containers": [{"name": "a"}]}),
                json!({"containers": [{"name": "c", "image": "c"}]}),
                json!({"containers": [{"name": "a"}, {"name": "c", "image": "c"}]}),
            ),
            (
                "env merges by name inside a container",
                json!({"containers": [{"name": "a", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]}]}),
                json!({"containers": [{"name": "a", "env": [{"name": "Y", "value": "3"}, {"name": "Z", "value": "4"}]}]}),
                json!({"containers": [{"name": "a", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "3"}, {"name": "Z", "value": "4"}]}]}),
            ),
            (
                "ports merge by containerPort",
                json!({"ports": [{"containerPort": 80, "name": "http"}]}),
                json!({"ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 443}]}),
                json!({"ports": [{"containerPort": 80, "name": "http", "protocol": "TCP"}, {"containerPort": 443}]}),
            ),
            (
                "$patch delete removes a list item",
                json!({"volumes": [{"name": "a"}, {"name": "b"}]}),
                json!({"volumes": [{"name": "a", "$patch": "delete"}]}),
                json!({"volumes": [{"name": "b"}]}),
            ),
            (
                "$patch replace on a list",
                json!({"initContainers": [{"name": "a"}, {"name": "b"}]}),
                json!({"initContainers": [{"name": "z"}, {"$patch": "replace"}]}),
                json!({"initContainers": [{"name": "z"}]}),
            ),
            (
                "$patch replace on a map",
                json!({"m": {"a": 1, "b": 2}}),
                json!({"m": {"c": 3, "$patch": "replace"}}),
                json!({"m": {"c": 3}}),
            ),
            (
                "$patch delete on a map",
                json!({"m": {"a": 1}, "n": 1}),
                json!({"m": {"$patch": "delete"}}),
                json!({"n": 1}),
            ),
            (
                "lists without a merge key are replaced",
                json!({"args": ["a", "b"], "tolerations": [{"key": "x"}]}),
                json!({"args": ["c"], "tolerations": [{"key": "y"}]}),
                json!({"args": ["c"], "tolerations": [{"key": "y"}]}),
            ),
            (
                "finalizers are a set union",
                json!({"finalizers": ["a", "b"]}),
                json!({"finalizers": ["b", "c"]}),
                json!({"finalizers": ["a", "b", "c"]}),
            ),
            (
                "$deleteFromPrimitiveList",
                json!({"finalizers": ["a", "b"]}),
                json!({"$deleteFromPrimitiveList/finalizers": ["a"]}),
                json!({"finalizers": ["b"]}),
            ),
            (
                "$setElementOrder is accepted and ignored",
                json!({"containers": [{"name": "a"}]}),
                json!({"$setElementOrder/containers": [{"name": "a"}], "containers": [{"name": "a", "image": "x"}]}),
                json!({"containers": [{"name": "a", "image": "x"}]}),
            ),
            (
                "$retainKeys",
                json!({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}),
                json!({"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}),
                json!({"strategy": {"type": "Recreate"}}),
            ),
            (
                "list item merge can null a field",
                json!({"containers": [{"name": "a", "image": "x", "command": ["sh"]}]}),
                json!({"containers": [{"name": "a", "command": null}]}),
                json!({"containers": [{"name": "a", "image": "x"}]}),
            ),
            (
                "scalar replaces map",
                json!({"a": {"b": 1}}),
                json!({"a": 5}),
                json!({"a": 5}),
            ),
        ];
        for (name, orig, patch, want) in cases {
            let got = strategic_merge(&orig, &patch).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got, want, "case {name}");
        }
    }

    #[test]
    fn strategic_merge_errors() {
        assert!(matches!(
            strategic_merge(&json!({}), &json!([1])),
            Err(PatchError::Malformed(_))
        ));
        assert!(matches!(
            strategic_merge(&json!({}), &json!({"containers": [{"image": "x"}]})),
            Err(PatchError::Malformed(_))
        ));
    }

    #[test]
    fn merge_patch_table() {
        let cases = vec![
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (
                json!({"a": [{"b": "c"}]}),
                json!({"a": [1]}),
                json!({"a": [1]}),
            ),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (json!(["a"]), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({}),
                json!({"a": {"bb": {"ccc": null}}}),
                json!({"a": {"bb": {}}}),
            ),
        ];
        for (orig, patch, want) in cases {
            assert_eq!(merge_patch(&orig, &patch), want, "patch {patch}");
        }
    }

    #[test]
    fn json_patch_table() {
        let doc = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"list": [1, 2]}});
        let ok = vec![
            (
                json!([{"op": "add", "path": "/metadata/labels/b", "value": "2"}]),
                json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"list": [1, 2]}}),
            ),
            (
                json!([{"op": "replace", "path": "/metadata/labels/a", "value": "9"}]),
                json!({"metadata": {"labels": {"a": "9"}}, "spec": {"list": [1, 2]}}),
            ),
            (
                json!([{"op": "remove", "path": "/metadata/labels/a"}]),
                json!({"metadata": {"labels": {}}, "spec": {"list": [1, 2]}}),
            ),
            (
                json!([{"op": "add", "path": "/spec/list/-", "value": 3}]),
                json!({"metadata": {"labels": {"a": "1"}}, "spec": {"list": [1, 2, 3]}}),
            ),
            (
                json!([{"op": "add", "path": "/spec/list/0", "value": 0}]),
                json!({"metadata": {"labels": {"a": "1"}}, "spec": {"list": [0, 1, 2]}}),
            ),
            (
                json!([{"op": "remove", "path": "/spec/list/0"}]),
                json!({"metadata": {"labels": {"a": "1"}}, "spec": {"list": [2]}}),
            ),
            (
                json!([{"op": "test", "path": "/metadata/labels/a", "value": "1"}, {"op": "add", "path": "/metadata/labels/x~1y", "value": "z"}]),
                json!({"metadata": {"labels": {"a": "1", "x/y": "z"}}, "spec": {"list": [1, 2]}}),
            ),
            (
                json!([{"op": "move", "from": "/metadata/labels/a", "path": "/metadata/labels/b"}]),
                json!({"metadata": {"labels": {"b": "1"}}, "spec": {"list": [1, 2]}}),
            ),
            (
                json!([{"op": "copy", "from": "/metadata/labels/a", "path": "/metadata/labels/b"}]),
                json!({"metadata": {"labels": {"a": "1", "b": "1"}}, "spec": {"list": [1, 2]}}),
            ),
        ];
        for (patch, want) in ok {
            assert_eq!(json_patch(&doc, &patch).unwrap(), want, "patch {patch}");
        }
        let failing = vec![
            json!([{"op": "test", "path": "/metadata/labels/a", "value": "2"}]),
            json!([{"op": "remove", "path": "/metadata/labels/zz"}]),
            json!([{"op": "replace", "path": "/nope/x", "value": 1}]),
            json!([{"op": "add", "path": "/nope/x", "value": 1}]),
        ];
        for patch in failing {
            assert!(
                matches!(json_patch(&doc, &patch), Err(PatchError::Failed(_))),
                "patch {patch}"
            );
        }
        let malformed = vec![
            json!({"op": "add"}),
            json!([{"op": "frobnicate", "path": "/a"}]),
            json!([{"path": "/a"}]),
        ];
        for patch in malformed {
            assert!(
                matches!(json_patch(&doc, &patch), Err(PatchError::Malformed(_))),
                "patch {patch}"
            );
        }
    }
}
