//! The object store and the write semantics of kube-apiserver + etcd:
//! one global resourceVersion counter, no-op writes that do not bump it,
//! generation, preconditions, finalizers, field ownership, and a bounded
//! event history for watches.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use base64::Engine as _;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use crate::fields::{self, Managers};
use crate::patch::{self, PatchError};
use crate::resources::{self, RESOURCES, ResourceInfo};
use crate::selectors::Selector;
use crate::status::ApiError;

/// (resource index, namespace or "", name): sorts like etcd keys do.
pub(crate) type Key = (usize, String, String);

/// The type of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as kept in history and sent to watchers.
#[derive(Debug, Clone)]
pub struct Event {
    pub rv: u64,
    pub res: usize,
    pub namespace: String,
    pub kind: EventType,
    pub object: Value,
    /// The state before a MODIFIED, for selector transitions.
    pub prev: Option<Value>,
}

/// Options every write takes.
#[derive(Debug, Clone, Default)]
pub struct WriteOpts {
    pub dry_run: bool,
    /// The field manager: `?fieldManager=` or derived from the user agent.
    pub manager: String,
}

/// A PATCH body format.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PatchKind {
    Strategic,
    Merge,
    Json,
    Apply { force: bool },
}

/// One page of a list.
#[derive(Debug)]
pub struct ListPage {
    pub items: Vec<Value>,
    pub rv: u64,
    pub cont: Option<String>,
    pub remaining: Option<u64>,
}

/// Which objects a list or watch wants.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub namespace: Option<String>,
    pub labels: Selector,
    pub fields: Selector,
}

impl Filter {
    pub fn matches(&self, ns: &str, obj: &Value) -> bool {
        self.namespace.as_deref().is_none_or(|n| n == ns)
            && self.labels.matches(obj)
            && self.fields.matches(obj)
    }
}

pub(crate) fn res_index(res: &ResourceInfo) -> usize {
    RESOURCES
        .iter()
        .position(|r| std::ptr::eq(r, res))
        .expect("resource comes from the static table")
}

pub(crate) struct Store {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    managers: HashMap<Key, Managers>,
    history: VecDeque<Arc<Event>>,
    history_limit: usize,
    /// Events up to this rv are no longer in history.
    compacted: u64,
    pub tx: broadcast::Sender<Arc<Event>>,
    seq: u64,
    rand: std::collections::hash_map::RandomState,
}

pub(crate) fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn meta(obj: &Value, field: &str) -> Option<String> {
    obj.get("metadata")?
        .get(field)?
        .as_str()
        .map(str::to_string)
}

/// `metadata.annotations`, with absent, null and `{}` all `None` (the
/// server compares them semantically: an empty map equals a missing one).
fn annotations(obj: &Value) -> Option<&Map<String, Value>> {
    obj.pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .filter(|m| !m.is_empty())
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"].as_object_mut().expect("metadata is a map")
}

/// A lowercase RFC 1123 subdomain (most object names).
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(|l| is_label_chars(l, 253))
}

/// A lowercase RFC 1123 label (namespace names).
pub fn is_dns1123_label(s: &str) -> bool {
    is_label_chars(s, 63)
}

fn is_label_chars(l: &str, max: usize) -> bool {
    let b = l.as_bytes();
    !b.is_empty()
        && b.len() <= max
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

impl Store {
    pub fn new(history_limit: usize) -> Store {
        let (tx, _) = broadcast::channel(4096);
        Store {
            rv: 0,
            objects: BTreeMap::new(),
            managers: HashMap::new(),
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted: 0,
            tx,
            seq: 0,
            rand: Default::default(),
        }
    }

    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    pub fn compacted_rv(&self) -> u64 {
        self.compacted
    }

    fn random(&mut self) -> u64 {
        self.seq += 1;
        let mut h = self.rand.build_hasher();
        h.write_u64(self.seq);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        h.finish()
    }

    fn new_uid(&mut self) -> String {
        let (a, b) = (self.random(), self.random());
        let hex = format!("{a:016x}{b:016x}");
        format!(
            "{}-{}-4{}-a{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[13..16],
            &hex[17..20],
            &hex[20..32]
        )
    }

    fn generate_name(&mut self, prefix: &str) -> String {
        // The alphabet of apiserver's name generator (no vowels, no 0/1/3).
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let mut r = self.random();
        let mut s = prefix.to_string();
        for _ in 0..5 {
            s.push(ALPHABET[(r % ALPHABET.len() as u64) as usize] as char);
            r /= ALPHABET.len() as u64;
        }
        s
    }

    /// Drops all history: watches from any earlier rv get 410 Expired.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
    }

    fn emit(
        &mut self,
        res: usize,
        namespace: &str,
        kind: EventType,
        object: Value,
        prev: Option<Value>,
    ) {
        let ev = Arc::new(Event {
            rv: self.rv,
            res,
            namespace: namespace.to_string(),
            kind,
            object,
            prev,
        });
        self.history.push_back(ev.clone());
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.rv;
            }
        }
        // No receivers is fine.
        let _ = self.tx.send(ev);
    }

    /// History events after `rv` for the resource, or None when `rv` is
    /// older than what is kept.
    pub fn events_since(&self, res: usize, rv: u64) -> Option<Vec<Arc<Event>>> {
        if rv < self.compacted {
            return None;
        }
        Some(
            self.history
                .iter()
                .filter(|e| e.rv > rv && e.res == res)
                .cloned()
                .collect(),
        )
    }

    pub fn get(&self, res: &ResourceInfo, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&(res_index(res), ns.to_string(), name.to_string()))
            .cloned()
            .ok_or_else(|| ApiError::not_found(res, name))
    }

    pub fn namespace_exists(&self, ns: &str) -> bool {
        self.objects.contains_key(&(
            res_index(resources::namespaces()),
            String::new(),
            ns.to_string(),
        ))
    }

    /// All matching objects of a type, in key order.
    pub fn snapshot(&self, res: &ResourceInfo, filter: &Filter) -> Vec<(Key, Value)> {
        let idx = res_index(res);
        self.objects
            .range((idx, String::new(), String::new())..(idx + 1, String::new(), String::new()))
            .filter(|(k, v)| filter.matches(&k.1, v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// A list, paged by `limit` and `continue` like the real server (the
    /// continue token is base64 JSON holding the rv and the next key).
    pub fn list(
        &self,
        res: &ResourceInfo,
        filter: &Filter,
        limit: Option<usize>,
        cont: Option<&str>,
    ) -> Result<ListPage, ApiError> {
        let mut rv = self.rv;
        let mut start: Option<String> = None;
        if let Some(token) = cont.filter(|c| !c.is_empty()) {
            let bad = || {
                ApiError::bad_request(
                    "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
                )
            };
            let raw = base64::engine::general_purpose::URL_SAFE
                .decode(token)
                .map_err(|_| bad())?;
            let t: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
            rv = t.get("rv").and_then(Value::as_u64).ok_or_else(bad)?;
            start = Some(
                t.get("start")
                    .and_then(Value::as_str)
                    .ok_or_else(bad)?
                    .to_string(),
            );
            if rv < self.compacted {
                return Err(ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                ));
            }
        }
        // Walk the store in key order from the continue point, cloning only
        // the page (and one more, to know whether a next page exists). The
        // start is compared as the (namespace, name) key the store is
        // ordered by, so names with '-' or '.' page correctly.
        let idx = res_index(res);
        let from = match &start {
            Some(s) => {
                let (ns, name) = s.split_once('/').unwrap_or(("", s.as_str()));
                (idx, ns.to_owned(), name.to_owned())
            }
            None => (idx, String::new(), String::new()),
        };
        let matching = self
            .objects
            .range(from..(idx + 1, String::new(), String::new()))
            .filter(|(k, v)| filter.matches(&k.1, v));
        let limit = limit.filter(|l| *l > 0);
        let mut items: Vec<((String, String), Value)> = Vec::new();
        let mut next = None;
        let mut remaining = None;
        let mut matching = matching.peekable();
        while let Some((k, v)) = matching.next() {
            items.push(((k.1.clone(), k.2.clone()), v.clone()));
            if limit.is_some_and(|l| items.len() == l) && matching.peek().is_some() {
                let rest = matching.count() as u64;
                let (ns, name) = &items[items.len() - 1].0;
                // The next key is just after the last one returned.
                let token =
                    json!({"v": "meta.k8s.io/v1", "rv": rv, "start": format!("{ns}/{name}\u{0}")});
                next = Some(base64::engine::general_purpose::URL_SAFE.encode(token.to_string()));
                remaining = Some(rest);
                break;
            }
        }
        Ok(ListPage {
            items: items.into_iter().map(|(_, v)| v).collect(),
            rv,
            cont: next,
            remaining,
        })
    }

    /// Stores a new state of an object, bumping rv and emitting an event,
    /// unless it is identical to what is stored (then it is a no-op, like
    /// the real server's skipped no-op updates).
    fn write(
        &mut self,
        res: &'static ResourceInfo,
        key: Key,
        mut obj: Value,
        managers: Managers,
        dry_run: bool,
    ) -> Value {
        let old = self.objects.get(&key).cloned();
        // An object being deleted whose last finalizer was removed goes away.
        let finalized = obj.pointer("/metadata/deletionTimestamp").is_some()
            && obj
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .is_none_or(|f| f.is_empty());
        if let Some(old) = &old {
            let mut a = old.clone();
            let mut b = obj.clone();
            for o in [&mut a, &mut b] {
                let m = meta_mut(o);
                m.remove("managedFields");
                m.remove("resourceVersion");
            }
            if a == b
                && self.managers.get(&key).cloned().unwrap_or_default() == managers
                && !finalized
            {
                return old.clone();
            }
        }
        if managers.0.is_empty() {
            meta_mut(&mut obj).remove("managedFields");
        } else {
            meta_mut(&mut obj).insert("managedFields".into(), managers.render());
        }
        if dry_run {
            return obj;
        }
        self.rv += 1;
        meta_mut(&mut obj).insert("resourceVersion".into(), self.rv.to_string().into());
        if finalized && old.is_some() {
            self.objects.remove(&key);
            self.managers.remove(&key);
            self.emit(key.0, &key.1, EventType::Deleted, obj.clone(), None);
            return obj;
        }
        self.objects.insert(key.clone(), obj.clone());
        self.managers.insert(key.clone(), managers);
        let kind = if old.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        let _ = res;
        self.emit(key.0, &key.1, kind, obj.clone(), old);
        obj
    }

    fn check_type(res: &ResourceInfo, body: &mut Value) -> Result<(), ApiError> {
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the object provided is not a JSON object",
            ));
        }
        let want = res.api_version();
        match body.get("apiVersion").and_then(Value::as_str) {
            None | Some("") => {}
            Some(v) if v == want => {}
            Some(v) => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({v}) does not match the expected API version ({want})"
                )));
            }
        }
        match body.get("kind").and_then(Value::as_str) {
            None | Some("") => {}
            Some(k) if k == res.kind => {}
            Some(k) => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    res.kind
                )));
            }
        }
        body["apiVersion"] = want.into();
        body["kind"] = res.kind.into();
        Ok(())
    }

    fn check_namespace(res: &ResourceInfo, ns: &str, body: &mut Value) -> Result<(), ApiError> {
        let m = meta_mut(body);
        if res.namespaced {
            match m.get("namespace").and_then(Value::as_str) {
                None | Some("") => {
                    m.insert("namespace".into(), ns.into());
                }
                Some(n) if n == ns => {}
                Some(_) => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
            }
        } else {
            m.remove("namespace");
        }
        Ok(())
    }

    /// POST. `seed` is the test-control insert: it keeps status and skips
    /// validation and the namespace-exists check.
    pub fn create(
        &mut self,
        res: &'static ResourceInfo,
        ns: &str,
        mut body: Value,
        opts: &WriteOpts,
        seed: bool,
    ) -> Result<Value, ApiError> {
        Self::check_type(res, &mut body)?;
        Self::check_namespace(res, ns, &mut body)?;
        rbac_defaults(res, &mut body);
        if !seed && meta(&body, "resourceVersion").is_some_and(|rv| !rv.is_empty()) {
            // A plain error in the real storage layer: 500, no reason.
            return Err(ApiError::new(
                500,
                "",
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let mut name = meta(&body, "name").unwrap_or_default();
        if name.is_empty()
            && let Some(prefix) = meta(&body, "generateName").filter(|p| !p.is_empty())
        {
            loop {
                name = self.generate_name(&prefix);
                if !self
                    .objects
                    .contains_key(&(res_index(res), key_ns(res, ns), name.clone()))
                {
                    break;
                }
            }
            meta_mut(&mut body).insert("name".into(), name.clone().into());
        }
        // Validation (422) comes before admission (namespace 404) and
        // storage (409), as in the real create path.
        let mut causes = name_causes(res, &name);
        if !seed {
            causes.extend(spec_causes(res, &body, None));
        }
        if !causes.is_empty() {
            return Err(ApiError::invalid(res, &name, causes));
        }
        if res.namespaced && !seed && !self.namespace_exists(ns) {
            return Err(ApiError::not_found(resources::namespaces(), ns));
        }
        let key = (res_index(res), key_ns(res, ns), name.clone());
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(res, &name));
        }
        if res.namespaced && seed && !self.namespace_exists(ns) && !opts.dry_run {
            self.ensure_namespace(ns);
        }
        let uid = self.new_uid();
        {
            let m = meta_mut(&mut body);
            m.insert("uid".into(), uid.into());
            m.insert("creationTimestamp".into(), now().into());
            m.remove("managedFields");
            m.remove("resourceVersion");
            m.remove("deletionTimestamp");
            m.remove("deletionGracePeriodSeconds");
            if res.has_generation {
                m.insert("generation".into(), 1.into());
            } else {
                m.remove("generation");
            }
        }
        default_object(res, &name, &mut body, seed);
        let mut managers = Managers::default();
        managers.record_update(&opts.manager, &res.api_version(), &now(), &json!({}), &body);
        Ok(self.write(res, key, body, managers, opts.dry_run))
    }

    pub fn ensure_namespace(&mut self, ns: &str) {
        if !self.namespace_exists(ns) {
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            let opts = WriteOpts {
                dry_run: false,
                manager: "fake-apiserver".into(),
            };
            let _ = self.create(resources::namespaces(), "", body, &opts, true);
        }
    }

    /// PUT (`sub` = Some("status") for the status subresource).
    pub fn update(
        &mut self,
        res: &'static ResourceInfo,
        ns: &str,
        name: &str,
        mut body: Value,
        opts: &WriteOpts,
        sub: Option<&str>,
    ) -> Result<Value, ApiError> {
        Self::check_type(res, &mut body)?;
        let body_name = meta(&body, "name").unwrap_or_default();
        if body_name.is_empty() {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({name} based on URL) was undeterminable: name must be provided"
            )));
        }
        if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        Self::check_namespace(res, ns, &mut body)?;
        let key = (res_index(res), key_ns(res, ns), name.to_string());
        let Some(old) = self.objects.get(&key).cloned() else {
            if res.create_on_update && sub.is_none() {
                meta_mut(&mut body).remove("resourceVersion");
                return self.create(res, ns, body, opts, false);
            }
            return Err(ApiError::not_found(res, name));
        };
        self.update_from(res, key, old, body, opts, sub, None)
    }

    /// The shared tail of PUT and PATCH: `body` is the full new object.
    #[allow(clippy::too_many_arguments)]
    fn update_from(
        &mut self,
        res: &'static ResourceInfo,
        key: Key,
        old: Value,
        mut body: Value,
        opts: &WriteOpts,
        sub: Option<&str>,
        ownership: Option<Managers>,
    ) -> Result<Value, ApiError> {
        let name = key.2.clone();
        let old_rv = meta(&old, "resourceVersion").unwrap_or_default();
        if let Some(rv) = meta(&body, "resourceVersion").filter(|rv| !rv.is_empty())
            && rv != old_rv
        {
            return Err(ApiError::conflict(res, &name));
        }
        if let Some(uid) = meta(&body, "uid").filter(|u| !u.is_empty()) {
            let old_uid = meta(&old, "uid").unwrap_or_default();
            if uid != old_uid {
                return Err(ApiError::conflict_msg(
                    res,
                    &name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {old_uid}"
                    ),
                ));
            }
        }
        let mut new = if sub == Some("status") {
            // Status writes change status only.
            let mut n = old.clone();
            match body.get("status") {
                Some(s) => n["status"] = s.clone(),
                None => {
                    n.as_object_mut()
                        .expect("objects are maps")
                        .remove("status");
                }
            }
            n
        } else {
            // SEED (test-control insert) writes status along with the rest;
            // a seed without status keeps the stored one.
            if res.has_status && (sub != Some(SEED) || body.get("status").is_none()) {
                match old.get("status") {
                    Some(s) => body["status"] = s.clone(),
                    None => {
                        body.as_object_mut()
                            .expect("objects are maps")
                            .remove("status");
                    }
                }
            }
            body
        };
        {
            // System fields are the server's.
            let om = old.get("metadata").cloned().unwrap_or_default();
            let m = meta_mut(&mut new);
            for f in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match om.get(f) {
                    Some(v) => m.insert(f.into(), v.clone()),
                    None => m.remove(f),
                };
            }
            m.insert("resourceVersion".into(), old_rv.clone().into());
            m.remove("managedFields");
            m.remove("generateName")
                .map(|g| m.insert("generateName".into(), g));
        }
        // The apps/v1 strategies' PrepareForUpdate: a spec change bumps the
        // generation, and for Deployments an annotation change too (see
        // `annotations_bump_generation`). Status writes keep both, so they
        // never bump.
        if res.has_generation
            && (old.get("spec") != new.get("spec")
                || (res.annotations_bump_generation && annotations(&old) != annotations(&new)))
        {
            let g = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                + 1;
            meta_mut(&mut new).insert("generation".into(), g.into());
        }
        if sub != Some("status") {
            rbac_defaults(res, &mut new);
        }
        if sub.is_none() {
            let causes = spec_causes(res, &new, Some(&old));
            if !causes.is_empty() {
                return Err(ApiError::invalid(res, &name, causes));
            }
        }
        let managers = match ownership {
            Some(m) => m,
            None => {
                let mut m = self.managers.get(&key).cloned().unwrap_or_default();
                m.record_update(&opts.manager, &res.api_version(), &now(), &old, &new);
                m
            }
        };
        Ok(self.write(res, key, new, managers, opts.dry_run))
    }

    /// PATCH in any of the supported formats.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        res: &'static ResourceInfo,
        ns: &str,
        name: &str,
        kind: PatchKind,
        patch_body: &Value,
        opts: &WriteOpts,
        sub: Option<&str>,
    ) -> Result<Value, ApiError> {
        let key = (res_index(res), key_ns(res, ns), name.to_string());
        let old = match self.objects.get(&key).cloned() {
            Some(o) => o,
            None => {
                if let PatchKind::Apply { .. } = kind
                    && sub.is_none()
                {
                    return self.apply_create(res, ns, name, patch_body, opts);
                }
                return Err(ApiError::not_found(res, name));
            }
        };
        let map_err = |e: PatchError| match e {
            PatchError::Malformed(m) => ApiError::bad_request(m),
            PatchError::Failed(m) => ApiError::new(
                422,
                "Invalid",
                "the server rejected our request due to an error in our request",
            )
            .with_causes(&m),
        };
        let mut base = old.clone();
        meta_mut(&mut base).remove("managedFields");
        let patched = match kind {
            PatchKind::Strategic => patch::strategic_merge(&base, patch_body).map_err(map_err)?,
            PatchKind::Merge => {
                if !patch_body.is_object() {
                    return Err(ApiError::bad_request(
                        "json: cannot unmarshal into Go value: a merge patch must be a JSON object",
                    ));
                }
                patch::merge_patch(&base, patch_body)
            }
            PatchKind::Json => patch::json_patch(&base, patch_body).map_err(map_err)?,
            PatchKind::Apply { force } => {
                return self.apply_existing(res, key, old, patch_body, opts, force, sub);
            }
        };
        let mut patched = patched;
        Self::check_type(res, &mut patched)?;
        let new_name = meta(&patched, "name").unwrap_or_default();
        if new_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({new_name}) does not match the name on the URL ({name})"
            )));
        }
        Self::check_namespace(res, ns, &mut patched)?;
        self.update_from(res, key, old, patched, opts, sub, None)
    }

    fn apply_body(res: &ResourceInfo, name: &str, body: &Value) -> Result<Value, ApiError> {
        let mut body = body.clone();
        Self::check_type(res, &mut body)?;
        if let Some(n) = meta(&body, "name").filter(|n| n != name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        Ok(body)
    }

    fn apply_create(
        &mut self,
        res: &'static ResourceInfo,
        ns: &str,
        name: &str,
        body: &Value,
        opts: &WriteOpts,
    ) -> Result<Value, ApiError> {
        let mut body = Self::apply_body(res, name, body)?;
        meta_mut(&mut body).insert("name".into(), name.into());
        let mut obj = self.create(
            res,
            ns,
            body.clone(),
            &WriteOpts {
                dry_run: true,
                ..opts.clone()
            },
            false,
        )?;
        // Ownership: the applier owns what it applied.
        let mut managers = Managers::default();
        obj = managers.apply(
            &opts.manager,
            &res.api_version(),
            &now(),
            &json!({}),
            &body,
            obj,
            true,
        );
        meta_mut(&mut obj).remove("managedFields");
        let key = (res_index(res), key_ns(res, ns), name.to_string());
        Ok(self.write(res, key, obj, managers, opts.dry_run))
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_existing(
        &mut self,
        res: &'static ResourceInfo,
        key: Key,
        old: Value,
        body: &Value,
        opts: &WriteOpts,
        force: bool,
        sub: Option<&str>,
    ) -> Result<Value, ApiError> {
        let applied = Self::apply_body(res, &key.2, body)?;
        let mut managers = self.managers.get(&key).cloned().unwrap_or_default();
        let conflicts = managers.conflicts(&opts.manager, &old, &applied);
        if !conflicts.is_empty() && !force {
            let n = conflicts.len();
            let causes: Vec<Value> = conflicts
                .iter()
                .map(|(m, p)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{m}\""), "field": fields::dotted(p)}))
                .collect();
            let lines: Vec<String> = conflicts
                .iter()
                .map(|(m, p)| format!("conflict with \"{m}\": {}", fields::dotted(p)))
                .collect();
            let mut e = ApiError::conflict_msg(res, &key.2, "");
            e.message = format!(
                "Apply failed with {n} conflict{}: {}",
                if n == 1 { "" } else { "s" },
                lines.join("\n")
            );
            if let Some(d) = e.details.as_mut() {
                d["causes"] = Value::Array(causes);
            }
            return Err(e);
        }
        let mut base = old.clone();
        meta_mut(&mut base).remove("managedFields");
        let merged = patch::strategic_merge(&base, &applied)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let mut new = managers.apply(
            &opts.manager,
            &res.api_version(),
            &now(),
            &old,
            &applied,
            merged,
            force,
        );
        meta_mut(&mut new).remove("resourceVersion");
        self.update_from(res, key, old, new, opts, sub, Some(managers))
    }

    /// DELETE with optional DeleteOptions (preconditions, dryRun).
    pub fn delete(
        &mut self,
        res: &'static ResourceInfo,
        ns: &str,
        name: &str,
        options: &Value,
        opts: &WriteOpts,
    ) -> Result<Value, ApiError> {
        let key = (res_index(res), key_ns(res, ns), name.to_string());
        let Some(old) = self.objects.get(&key).cloned() else {
            return Err(ApiError::not_found(res, name));
        };
        let uid = meta(&old, "uid").unwrap_or_default();
        if let Some(p) = options.get("preconditions") {
            if let Some(want) = p.get("uid").and_then(Value::as_str)
                && want != uid
            {
                return Err(ApiError::conflict_msg(
                    res,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {want}, UID in object meta: {uid}"
                    ),
                ));
            }
            if let Some(want) = p.get("resourceVersion").and_then(Value::as_str) {
                let have = meta(&old, "resourceVersion").unwrap_or_default();
                if want != have {
                    return Err(ApiError::conflict_msg(
                        res,
                        name,
                        &format!(
                            "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {have}"
                        ),
                    ));
                }
            }
        }
        let has_finalizers = old
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            // Finalizers hold the object: it gets a deletionTimestamp and the
            // object (not a Status) is returned, as the real server does.
            if old.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok(old);
            }
            let mut new = old.clone();
            let m = meta_mut(&mut new);
            m.insert("deletionTimestamp".into(), now().into());
            m.insert("deletionGracePeriodSeconds".into(), 0.into());
            let managers = self.managers.get(&key).cloned().unwrap_or_default();
            return Ok(self.write(res, key, new, managers, opts.dry_run));
        }
        if opts.dry_run {
            return Ok(crate::status::success_status(res, name, Some(&uid)));
        }
        if std::ptr::eq(res, resources::namespaces()) {
            // No namespace controller: the content goes at once.
            let inside: Vec<Key> = self
                .objects
                .keys()
                .filter(|k| k.1 == name && RESOURCES[k.0].namespaced)
                .cloned()
                .collect();
            for k in inside {
                self.remove_key(k);
            }
        }
        self.remove_key(key);
        Ok(crate::status::success_status(res, name, Some(&uid)))
    }

    fn remove_key(&mut self, key: Key) {
        if let Some(mut obj) = self.objects.remove(&key) {
            self.managers.remove(&key);
            self.rv += 1;
            meta_mut(&mut obj).insert("resourceVersion".into(), self.rv.to_string().into());
            self.emit(key.0, &key.1, EventType::Deleted, obj, None);
        }
    }

    /// Test-control upsert: creates, or replaces spec/status/metadata of an
    /// existing object (keeping uid), with the usual rv/generation rules.
    pub fn upsert(
        &mut self,
        res: &'static ResourceInfo,
        mut obj: Value,
    ) -> Result<Value, ApiError> {
        let ns = if res.namespaced {
            meta(&obj, "namespace").unwrap_or_else(|| "default".into())
        } else {
            String::new()
        };
        let name = meta(&obj, "name").unwrap_or_default();
        let key = (res_index(res), ns.clone(), name.clone());
        let opts = WriteOpts {
            dry_run: false,
            manager: "fake-apiserver".into(),
        };
        let Some(old) = self.objects.get(&key).cloned() else {
            return self.create(res, &ns, obj, &opts, true);
        };
        meta_mut(&mut obj).remove("resourceVersion");
        self.update_from(res, key, old, obj, &opts, Some(SEED), None)
    }

    /// Test-control delete, finalizers ignored.
    pub fn remove(&mut self, res: &ResourceInfo, ns: &str, name: &str) -> bool {
        let key = (res_index(res), key_ns(res, ns), name.to_string());
        let existed = self.objects.contains_key(&key);
        self.remove_key(key);
        existed
    }
}

/// The pseudo-subresource of test-control upserts: one write of the whole
/// object, status included, without validation.
const SEED: &str = "\u{0}seed";

fn key_ns(res: &ResourceInfo, ns: &str) -> String {
    if res.namespaced {
        ns.to_string()
    } else {
        String::new()
    }
}

impl ApiError {
    /// The real server puts the jsonpatch error in no field of the Status
    /// (details is empty); neither does the fake.
    fn with_causes(mut self, _message: &str) -> Self {
        self.details = Some(json!({}));
        self
    }
}

fn name_causes(res: &ResourceInfo, name: &str) -> Vec<(String, String)> {
    if name.is_empty() {
        return vec![(
            "metadata.name".into(),
            "Required value: name or generateName is required".into(),
        )];
    }
    if resources::is_rbac(res) {
        // RBAC names are path segments (`system:discovery` is valid).
        return crate::rbac::path_segment_problems(name)
            .into_iter()
            .map(|p| {
                (
                    "metadata.name".into(),
                    format!("Invalid value: \"{name}\": {p}"),
                )
            })
            .collect();
    }
    let (ok, what) = if std::ptr::eq(res, resources::namespaces()) {
        (
            is_dns1123_label(name),
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
        )
    } else {
        (
            is_dns1123_subdomain(name),
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        )
    };
    if ok {
        Vec::new()
    } else {
        vec![(
            "metadata.name".into(),
            format!("Invalid value: \"{name}\": {what}"),
        )]
    }
}

/// The few defaults the real server's defaulting would add that clients
/// look at.
fn default_object(res: &ResourceInfo, name: &str, obj: &mut Value, seed: bool) {
    match res.kind {
        "Deployment" | "StatefulSet" | "DaemonSet" => {
            if !seed || obj.get("status").is_none() {
                obj["status"] = json!({});
            }
            if res.kind != "DaemonSet"
                && obj.get("spec").is_some_and(Value::is_object)
                && obj["spec"].get("replicas").is_none()
            {
                obj["spec"]["replicas"] = 1.into();
            }
        }
        "Namespace" => {
            let m = meta_mut(obj);
            let labels = m.entry("labels").or_insert_with(|| json!({}));
            if let Some(l) = labels.as_object_mut() {
                l.insert("kubernetes.io/metadata.name".into(), name.into());
            }
            if obj.get("spec").is_none() {
                obj["spec"] = json!({"finalizers": ["kubernetes"]});
            }
            if !seed || obj.get("status").is_none() {
                obj["status"] = json!({"phase": "Active"});
            }
        }
        _ => {}
    }
}

/// The validation of apps/v1 workloads that clients trip over: selector
/// required and immutable, template labels matching it, containers with
/// names and images.
fn spec_causes(res: &ResourceInfo, obj: &Value, old: Option<&Value>) -> Vec<(String, String)> {
    if resources::is_rbac(res) {
        return rbac_causes(res, obj, old);
    }
    if !res.has_generation {
        return Vec::new();
    }
    let mut causes: Vec<(String, String)> = Vec::new();
    let selector = obj.pointer("/spec/selector");
    match selector {
        None | Some(Value::Null) => causes.push(("spec.selector".into(), "Required value".into())),
        Some(sel) => {
            let labels = obj
                .pointer("/spec/template/metadata/labels")
                .cloned()
                .unwrap_or(json!({}));
            if let Some(Value::Object(ml)) = sel.get("matchLabels")
                && ml.iter().any(|(k, v)| labels.get(k) != Some(v))
            {
                causes.push((
                    "spec.template.metadata.labels".into(),
                    format!("Invalid value: {labels}: `selector` does not match template `labels`"),
                ));
            }
            if let Some(old_sel) = old.and_then(|o| o.pointer("/spec/selector"))
                && old_sel != sel
            {
                causes.push((
                    "spec.selector".into(),
                    format!("Invalid value: {sel}: field is immutable"),
                ));
            }
        }
    }
    match obj
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
    {
        None => causes.push((
            "spec.template.spec.containers".into(),
            "Required value".into(),
        )),
        Some(cs) if cs.is_empty() => causes.push((
            "spec.template.spec.containers".into(),
            "Required value".into(),
        )),
        Some(cs) => {
            for (i, c) in cs.iter().enumerate() {
                if c.get("name")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    causes.push((
                        format!("spec.template.spec.containers[{i}].name"),
                        "Required value".into(),
                    ));
                }
                if c.get("image")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    causes.push((
                        format!("spec.template.spec.containers[{i}].image"),
                        "Required value".into(),
                    ));
                }
            }
        }
    }
    causes
}

/// The v1 defaults of RBAC objects: `roleRef.apiGroup` and the `apiGroup`
/// of User and Group subjects are `rbac.authorization.k8s.io`.
fn rbac_defaults(res: &ResourceInfo, obj: &mut Value) {
    if !matches!(res.kind, "RoleBinding" | "ClusterRoleBinding") {
        return;
    }
    if obj.get("roleRef").is_none_or(Value::is_null) {
        obj["roleRef"] = json!({});
    }
    if let Some(r) = obj.get_mut("roleRef").and_then(Value::as_object_mut)
        && r.get("apiGroup")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        r.insert("apiGroup".into(), crate::rbac::GROUP.into());
    }
    if let Some(subjects) = obj.get_mut("subjects").and_then(Value::as_array_mut) {
        for s in subjects.iter_mut().filter_map(Value::as_object_mut) {
            let kind = s.get("kind").and_then(Value::as_str).unwrap_or("");
            if matches!(kind, "User" | "Group")
                && s.get("apiGroup")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
            {
                s.insert("apiGroup".into(), crate::rbac::GROUP.into());
            }
        }
    }
}

/// Go's `%#v` of a `[]string`.
fn go_strings(v: &[String]) -> String {
    let items: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
    format!("[]string{{{}}}", items.join(", "))
}

fn str_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|x| x.as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The validation of `rbac.authorization.k8s.io/v1` objects
/// (`pkg/apis/rbac/validation`): rules need verbs and either resources
/// with API groups or (ClusterRoles only) non-resource URLs; bindings need
/// a supported roleRef, which is immutable, and well-formed subjects.
fn rbac_causes(res: &ResourceInfo, obj: &Value, old: Option<&Value>) -> Vec<(String, String)> {
    let mut causes: Vec<(String, String)> = Vec::new();
    let sv = |o: &Value, k: &str| o.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    match res.kind {
        "Role" | "ClusterRole" => {
            let rules = obj
                .get("rules")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for (i, rule) in rules.iter().enumerate() {
                let f = |c: &str| format!("rules[{i}].{c}");
                if str_list(rule.get("verbs")).is_empty() {
                    causes.push((
                        f("verbs"),
                        "Required value: verbs must contain at least one value".into(),
                    ));
                }
                let urls = str_list(rule.get("nonResourceURLs"));
                if !urls.is_empty() {
                    if res.kind == "Role" {
                        causes.push((
                            f("nonResourceURLs"),
                            format!(
                                "Invalid value: {}: namespaced rules cannot apply to non-resource URLs",
                                go_strings(&urls)
                            ),
                        ));
                    }
                    if ["apiGroups", "resources", "resourceNames"]
                        .iter()
                        .any(|k| !str_list(rule.get(*k)).is_empty())
                    {
                        causes.push((
                            f("nonResourceURLs"),
                            format!(
                                "Invalid value: {}: rules cannot apply to both regular resources and non-resource URLs",
                                go_strings(&urls)
                            ),
                        ));
                    }
                    continue;
                }
                if str_list(rule.get("apiGroups")).is_empty() {
                    causes.push((
                        f("apiGroups"),
                        "Required value: resource rules must supply at least one api group".into(),
                    ));
                }
                if str_list(rule.get("resources")).is_empty() {
                    causes.push((
                        f("resources"),
                        "Required value: resource rules must supply at least one resource".into(),
                    ));
                }
            }
        }
        _ => {
            let cluster = res.kind == "ClusterRoleBinding";
            let rr = obj.get("roleRef").cloned().unwrap_or(json!({}));
            let group = sv(&rr, "apiGroup");
            if group != crate::rbac::GROUP {
                causes.push((
                    "roleRef.apiGroup".into(),
                    format!(
                        "Unsupported value: {group:?}: supported values: \"{}\"",
                        crate::rbac::GROUP
                    ),
                ));
            }
            let kind = sv(&rr, "kind");
            let ok_kinds: &[&str] = if cluster {
                &["ClusterRole"]
            } else {
                &["Role", "ClusterRole"]
            };
            if !ok_kinds.contains(&kind.as_str()) {
                let supported: Vec<String> = ok_kinds.iter().map(|k| format!("{k:?}")).collect();
                causes.push((
                    "roleRef.kind".into(),
                    format!(
                        "Unsupported value: {kind:?}: supported values: {}",
                        supported.join(", ")
                    ),
                ));
            }
            let name = sv(&rr, "name");
            if name.is_empty() {
                causes.push(("roleRef.name".into(), "Required value".into()));
            } else {
                for p in crate::rbac::path_segment_problems(&name) {
                    causes.push((
                        "roleRef.name".into(),
                        format!("Invalid value: {name:?}: {p}"),
                    ));
                }
            }
            let subjects = obj
                .get("subjects")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for (i, s) in subjects.iter().enumerate() {
                let f = |c: &str| format!("subjects[{i}].{c}");
                let kind = sv(s, "kind");
                if sv(s, "name").is_empty() {
                    causes.push((f("name"), "Required value".into()));
                }
                match kind.as_str() {
                    "ServiceAccount" => {
                        if cluster && sv(s, "namespace").is_empty() {
                            causes.push((f("namespace"), "Required value".into()));
                        }
                    }
                    "User" | "Group" => {}
                    other => causes.push((
                        f("kind"),
                        format!(
                            "Unsupported value: {other:?}: supported values: \"ServiceAccount\", \"User\", \"Group\""
                        ),
                    )),
                }
            }
            if let Some(old) = old {
                let old_rr = old.get("roleRef").cloned().unwrap_or(json!({}));
                if old_rr != rr {
                    causes.push((
                        "roleRef".into(),
                        format!(
                            "Invalid value: rbac.RoleRef{{APIGroup:{group:?}, Kind:{kind:?}, Name:{name:?}}}: cannot change roleRef"
                        ),
                    ));
                }
            }
        }
    }
    causes
}
