//! The HTTP edge: routing of API paths to store operations, the request
//! log, fault injection, and responses with real `Status` bodies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::faults::{self, FaultRule};
use crate::rbac::{self, AuthState, Authn, Decision, Policy};
use crate::resources::{self, ResourceInfo};
use crate::selectors::Selector;
use crate::status::ApiError;
use crate::store::{Filter, PatchKind, Store, WriteOpts};
use crate::{discovery, table, watch};

/// One request the server received, as the test-control API reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    /// The raw query string (without `?`), `""` when none.
    pub query: String,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`; the lowercase method for non-resource paths.
    pub verb: String,
    pub group: Option<String>,
    pub resource: Option<String>,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub content_type: Option<String>,
    pub accept: Option<String>,
    /// The HTTP status answered (200 for a watch that started streaming).
    pub status: u16,
    /// The request body, when it was JSON.
    pub body: Option<Value>,
    pub field_manager: Option<String>,
    pub dry_run: bool,
    pub user_agent: Option<String>,
    pub authorization: Option<String>,
    /// The authenticated user name when RBAC is on (`None` when it is off
    /// or the token was rejected).
    pub user: Option<String>,
}

impl RequestRecord {
    /// Parsed query parameters.
    pub fn query_params(&self) -> HashMap<String, String> {
        form_urlencoded::parse(self.query.as_bytes())
            .into_owned()
            .collect()
    }

    pub fn query_param(&self, key: &str) -> Option<String> {
        self.query_params().remove(key)
    }
}

/// The state shared by connections and the test-control handle.
pub(crate) struct Shared {
    pub store: Mutex<Store>,
    pub log: Mutex<Vec<RequestRecord>>,
    pub logged: Notify,
    pub faults: Mutex<Vec<FaultRule>>,
    pub host: Mutex<String>,
    pub auth: Mutex<AuthState>,
}

/// Put in request extensions: notified to kill the request's connection.
#[derive(Clone)]
pub(crate) struct ConnKill(pub Arc<Notify>);

/// What a resource URL names.
#[derive(Debug, Clone)]
struct Target {
    res: &'static ResourceInfo,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
    watch_path: bool,
}

/// Parses `/api/v1/...` and `/apis/G/V/...` resource paths. `Ok(None)` is
/// not an API resource path; `Err` is a 404 under a served prefix.
fn parse_target(path: &str) -> Result<Option<Target>, ApiError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] if !rest.is_empty() => ("", *v, rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (*g, *v, rest),
        _ => return Ok(None),
    };
    let (watch_path, rest) = match rest {
        ["watch", r @ ..] if !r.is_empty() => (true, r),
        r => (false, r),
    };
    // An unserved group/version is not an API path at all (plain 404).
    if !resources::group_versions().contains(&(group, version)) {
        return Ok(None);
    }
    let find = |r: &str| resources::lookup(group, version, r).ok_or_else(ApiError::unknown_path);
    let t = match rest {
        ["namespaces", ns, r, tail @ ..] if *r != "status" && *r != "finalize" => {
            let res = find(r)?;
            if !res.namespaced {
                return Err(ApiError::unknown_path());
            }
            match tail {
                [] => Target {
                    res,
                    namespace: Some(ns.to_string()),
                    name: None,
                    sub: None,
                    watch_path,
                },
                [name] => Target {
                    res,
                    namespace: Some(ns.to_string()),
                    name: Some(name.to_string()),
                    sub: None,
                    watch_path,
                },
                [name, sub] => Target {
                    res,
                    namespace: Some(ns.to_string()),
                    name: Some(name.to_string()),
                    sub: Some(sub.to_string()),
                    watch_path,
                },
                _ => return Err(ApiError::unknown_path()),
            }
        }
        [r] => Target {
            res: find(r)?,
            namespace: None,
            name: None,
            sub: None,
            watch_path,
        },
        [r, name] => {
            let res = find(r)?;
            if res.namespaced {
                return Err(ApiError::unknown_path());
            }
            Target {
                res,
                namespace: None,
                name: Some(name.to_string()),
                sub: None,
                watch_path,
            }
        }
        [r, name, sub] => {
            let res = find(r)?;
            if res.namespaced {
                return Err(ApiError::unknown_path());
            }
            Target {
                res,
                namespace: None,
                name: Some(name.to_string()),
                sub: Some(sub.to_string()),
                watch_path,
            }
        }
        _ => return Err(ApiError::unknown_path()),
    };
    if let Some(sub) = &t.sub
        && (sub != "status" || !t.res.has_status)
    {
        return Err(ApiError::unknown_path());
    }
    if t.name.as_deref() == Some("") || t.namespace.as_deref() == Some("") {
        return Err(ApiError::unknown_path());
    }
    Ok(Some(t))
}

fn verb_of(method: &Method, t: &Target, watch: bool) -> Option<&'static str> {
    Some(match (method.as_str(), t.name.is_some()) {
        ("GET", true) if t.watch_path => "watch",
        ("GET", true) => "get",
        ("GET", false) if watch || t.watch_path => "watch",
        ("GET", false) => "list",
        ("POST", false) if t.sub.is_none() => "create",
        ("PUT", true) => "update",
        ("PATCH", true) => "patch",
        ("DELETE", true) if t.sub.is_none() => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return None,
    })
}

pub(crate) fn json_response(code: u16, body: &Value) -> Response<Body> {
    let mut r = Response::new(Body::from(
        serde_json::to_vec(body).expect("JSON values serialize"),
    ));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

pub(crate) fn error_response(e: &ApiError) -> Response<Body> {
    let mut r = json_response(e.code, &e.to_status());
    if let Some(s) = e.retry_after {
        r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(s));
    }
    r
}

fn text_response(code: u16, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn truthy(v: Option<&String>) -> bool {
    matches!(v.map(String::as_str), Some("1" | "true" | "True"))
}

/// Handles one request end to end, logging it.
pub(crate) async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let params: HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let content_type = header(&req, "content-type");
    let accept = header(&req, "accept");
    let user_agent = header(&req, "user-agent");
    let authorization = header(&req, "authorization");
    let kill = req.extensions().get::<ConnKill>().cloned();

    let target = parse_target(&path);
    let watch_param = truthy(params.get("watch"));
    let (verb, group, resource, namespace, name, sub) = match &target {
        Ok(Some(t)) => (
            verb_of(&method, t, watch_param)
                .map(str::to_string)
                .unwrap_or_else(|| method.as_str().to_lowercase()),
            Some(t.res.group.to_string()),
            Some(t.res.resource.to_string()),
            t.namespace.clone(),
            t.name.clone(),
            t.sub.clone(),
        ),
        _ => (method.as_str().to_lowercase(), None, None, None, None, None),
    };

    let raw = match axum::body::to_bytes(Body::new(req.into_body()), 64 << 20).await {
        Ok(b) => b,
        Err(e) => {
            return error_response(&ApiError::bad_request(format!(
                "reading the request body: {e}"
            )));
        }
    };
    let body_json: Option<Value> = if raw.is_empty() {
        None
    } else {
        serde_json::from_slice(&raw).ok()
    };
    let field_manager = params.get("fieldManager").cloned();
    let dry_run = params.get("dryRun").is_some_and(|v| !v.is_empty());

    let mut record = RequestRecord {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        verb: verb.clone(),
        group,
        resource: resource.clone(),
        subresource: sub,
        namespace: namespace.clone(),
        name: name.clone(),
        content_type: content_type.clone(),
        accept: accept.clone(),
        status: 0,
        body: body_json.clone(),
        field_manager: field_manager.clone(),
        dry_run,
        user_agent: user_agent.clone(),
        authorization,
        user: None,
    };

    // Fault injection comes first, as a proxy or an overloaded server would.
    let fault = faults::take(
        &mut shared.faults.lock().expect("faults lock"),
        &verb,
        resource.as_deref(),
        namespace.as_deref(),
        name.as_deref(),
    );
    if let Some(f) = fault {
        if let Some(d) = f.delay {
            tokio::time::sleep(d).await;
        }
        if f.drop_connection {
            record.status = 0;
            log(&shared, record);
            if let Some(k) = kill {
                k.0.notify_one();
            }
            // The connection task drops this request's future.
            let never: std::convert::Infallible = std::future::pending().await;
            match never {}
        }
        if let Some(code) = f.status {
            let res = target.as_ref().ok().and_then(|t| t.as_ref()).map(|t| t.res);
            let e = ApiError::for_code(code, res, &verb, name.as_deref());
            record.status = e.code;
            log(&shared, record);
            return error_response(&e);
        }
    }

    // Authentication, then authorization, before any routing (unknown
    // resources are authorized too), as in the real handler chain.
    match access(
        &shared,
        method.as_str(),
        &path,
        &query,
        record.authorization.as_deref(),
    ) {
        Ok(user) => record.user = user,
        Err((user, e)) => {
            record.user = user;
            record.status = e.code;
            log(&shared, record);
            return error_response(&e);
        }
    }

    let resp = match target {
        Err(e) => error_response(&e),
        Ok(None) => non_resource(&shared, &method, &path),
        Ok(Some(t)) => {
            let ctx = Ctx {
                params: &params,
                content_type: content_type.as_deref(),
                accept: accept.as_deref().unwrap_or(""),
                user_agent: user_agent.as_deref(),
                raw: &raw,
                body: body_json,
            };
            match resource_request(&shared, &method, &t, &verb, ctx) {
                Ok(r) => r,
                Err(e) => error_response(&e),
            }
        }
    };
    record.status = resp.status().as_u16();
    log(&shared, record);
    resp
}

/// The RBAC policy as stored now.
pub(crate) fn stored_policy(store: &Store) -> Policy {
    let mut policy = Policy::default();
    for res in resources::rbac_types() {
        for (_, obj) in store.snapshot(res, &Filter::default()) {
            policy.add(&obj);
        }
    }
    policy
}

/// Who the request is from and whether RBAC allows it: `Ok(user name)`
/// (None when enforcement is off), or the 401/403 to answer.
#[allow(clippy::type_complexity)]
fn access(
    shared: &Shared,
    method: &str,
    path: &str,
    query: &str,
    authorization: Option<&str>,
) -> Result<Option<String>, (Option<String>, ApiError)> {
    let user = {
        let auth = shared.auth.lock().expect("auth lock");
        if !auth.enabled {
            return Ok(None);
        }
        match rbac::authenticate(authorization, |t| auth.tokens.get(t).cloned()) {
            Authn::User(u) => u,
            Authn::None if auth.anonymous => auth.anonymous_user.clone(),
            Authn::None | Authn::Invalid => return Err((None, rbac::unauthorized())),
        }
    };
    if user.groups.iter().any(|g| g == rbac::SYSTEM_MASTERS) {
        return Ok(Some(user.name));
    }
    let info = rbac::request_info(method, path, query);
    let policy = stored_policy(&shared.store.lock().expect("store lock"));
    match rbac::authorize(&policy, &user, &info) {
        Decision::Allow => Ok(Some(user.name)),
        Decision::Deny(reason) => {
            let e = rbac::forbidden(&user, &info, &reason);
            Err((Some(user.name), e))
        }
    }
}

fn log(shared: &Shared, record: RequestRecord) {
    shared.log.lock().expect("log lock").push(record);
    shared.logged.notify_waiters();
}

fn non_resource(shared: &Shared, method: &Method, path: &str) -> Response<Body> {
    let host = shared.host.lock().expect("host lock").clone();
    if method != Method::GET {
        return match discovery::document(path, &host) {
            Some(_) => error_response(&ApiError::method_not_allowed()),
            None => text_response(404, "404 page not found\n"),
        };
    }
    match path.trim_end_matches('/') {
        "/healthz" | "/livez" | "/readyz" => return text_response(200, "ok"),
        _ => {}
    }
    match discovery::document(path, &host) {
        Some(doc) => json_response(200, &doc),
        // Paths outside the served group-versions get Go's plain 404 page.
        None => text_response(404, "404 page not found\n"),
    }
}

struct Ctx<'a> {
    params: &'a HashMap<String, String>,
    content_type: Option<&'a str>,
    accept: &'a str,
    user_agent: Option<&'a str>,
    raw: &'a [u8],
    body: Option<Value>,
}

impl Ctx<'_> {
    fn media_type(&self) -> String {
        self.content_type
            .unwrap_or("application/json")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    }

    fn json_body(&self) -> Result<Value, ApiError> {
        if self.raw.is_empty() {
            return Err(ApiError::bad_request("the request body is empty"));
        }
        let mt = self.media_type();
        if mt.contains("protobuf") || !(mt.contains("json") || mt.contains("yaml") || mt == "*/*") {
            return Err(ApiError::unsupported_media_type(
                &mt,
                &["application/json", "application/yaml"],
            ));
        }
        self.body.clone().ok_or_else(|| {
            ApiError::bad_request(format!(
                "couldn't get version/kind; json parse error: {}",
                serde_json::from_slice::<Value>(self.raw)
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_default()
            ))
        })
    }

    fn write_opts(&self) -> Result<WriteOpts, ApiError> {
        let dry_run = match self.params.get("dryRun").map(String::as_str) {
            None | Some("") => false,
            Some("All") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "unsupported dry run option {other:?}: only \"All\" is supported"
                )));
            }
        };
        // Without ?fieldManager= the server derives the manager from the
        // user agent (the part before the first '/').
        let manager = match self.params.get("fieldManager") {
            Some(m) if !m.is_empty() => m.clone(),
            _ => self
                .user_agent
                .and_then(|ua| ua.split('/').next())
                .filter(|s| !s.is_empty())
                .unwrap_or("unknown")
                .to_string(),
        };
        Ok(WriteOpts { dry_run, manager })
    }

    fn filter(&self, t: &Target) -> Result<Filter, ApiError> {
        Ok(Filter {
            namespace: t.namespace.clone(),
            labels: match self.params.get("labelSelector") {
                Some(s) => Selector::labels(s)?,
                None => Selector::default(),
            },
            fields: match self.params.get("fieldSelector") {
                Some(s) => Selector::fields(s, t.res.kind)?,
                None => Selector::default(),
            },
        })
    }
}

/// A single object or list, as a Table when the client asks for one.
fn object_response(code: u16, res: &ResourceInfo, obj: Value, ctx: &Ctx) -> Response<Body> {
    if table::wants_table(ctx.accept) && obj.get("kind").and_then(Value::as_str) == Some(res.kind) {
        let rv = obj
            .pointer("/metadata/resourceVersion")
            .cloned()
            .unwrap_or(json!(""));
        let include = ctx
            .params
            .get("includeObject")
            .map(String::as_str)
            .unwrap_or("Metadata");
        return json_response(
            code,
            &table::table(res, &[obj], json!({"resourceVersion": rv}), include),
        );
    }
    json_response(code, &obj)
}

fn resource_request(
    shared: &Arc<Shared>,
    method: &Method,
    t: &Target,
    verb: &str,
    ctx: Ctx,
) -> Result<Response<Body>, ApiError> {
    let res = t.res;
    let ns = t.namespace.clone().unwrap_or_default();
    let sub = t.sub.as_deref();
    if res.namespaced && t.namespace.is_none() && !matches!(verb, "list" | "watch") {
        // Only list and watch are served across namespaces.
        return Err(ApiError::method_not_allowed());
    }
    match verb {
        "get" => {
            let obj = shared.store.lock().expect("store lock").get(
                res,
                &ns,
                t.name.as_deref().unwrap_or(""),
            )?;
            Ok(object_response(200, res, obj, &ctx))
        }
        "list" => {
            let filter = ctx.filter(t)?;
            let limit = match ctx.params.get("limit") {
                Some(l) if !l.is_empty() => Some(
                    l.parse::<usize>()
                        .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
                ),
                _ => None,
            };
            let page = shared.store.lock().expect("store lock").list(
                res,
                &filter,
                limit,
                ctx.params.get("continue").map(String::as_str),
            )?;
            let mut meta = json!({"resourceVersion": page.rv.to_string()});
            if let Some(c) = &page.cont {
                meta["continue"] = c.clone().into();
            }
            if let Some(n) = page.remaining {
                meta["remainingItemCount"] = n.into();
            }
            if table::wants_table(ctx.accept) {
                let include = ctx
                    .params
                    .get("includeObject")
                    .map(String::as_str)
                    .unwrap_or("Metadata");
                return Ok(json_response(
                    200,
                    &table::table(res, &page.items, meta, include),
                ));
            }
            // Items of a list carry no apiVersion/kind, as from the real server.
            let items: Vec<Value> = page
                .items
                .into_iter()
                .map(|mut o| {
                    if let Some(m) = o.as_object_mut() {
                        m.remove("apiVersion");
                        m.remove("kind");
                    }
                    o
                })
                .collect();
            Ok(json_response(
                200,
                &json!({"kind": format!("{}List", res.kind), "apiVersion": res.api_version(), "metadata": meta, "items": items}),
            ))
        }
        "watch" => {
            let mut filter = ctx.filter(t)?;
            if let Some(n) = &t.name {
                // Old-style /watch/namespaces/ns/deployments/NAME.
                filter.fields = Selector::fields(&format!("metadata.name={n}"), res.kind)?;
            }
            watch::start(shared.clone(), res, filter, ctx.params)
        }
        "create" => {
            let body = ctx.json_body()?;
            let opts = ctx.write_opts()?;
            let obj = shared
                .store
                .lock()
                .expect("store lock")
                .create(res, &ns, body, &opts, false)?;
            Ok(json_response(201, &obj))
        }
        "update" => {
            let body = ctx.json_body()?;
            let opts = ctx.write_opts()?;
            let name = t.name.as_deref().unwrap_or("");
            let mut store = shared.store.lock().expect("store lock");
            let existed = store.get(res, &ns, name).is_ok();
            let obj = store.update(res, &ns, name, body, &opts, sub)?;
            Ok(json_response(if existed { 200 } else { 201 }, &obj))
        }
        "patch" => {
            let mt = ctx.media_type();
            let kind = match mt.as_str() {
                "application/strategic-merge-patch+json" => PatchKind::Strategic,
                "application/merge-patch+json" => PatchKind::Merge,
                "application/json-patch+json" => PatchKind::Json,
                "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
                    PatchKind::Apply {
                        force: truthy(ctx.params.get("force")),
                    }
                }
                _ => {
                    return Err(ApiError::unsupported_media_type(
                        &mt,
                        &[
                            "application/json-patch+json",
                            "application/merge-patch+json",
                            "application/apply-patch+yaml",
                            "application/strategic-merge-patch+json",
                        ],
                    ));
                }
            };
            let opts = ctx.write_opts()?;
            if matches!(kind, PatchKind::Apply { .. })
                && ctx.params.get("fieldManager").is_none_or(|m| m.is_empty())
            {
                let mut e = ApiError::new(
                    422,
                    "Invalid",
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                );
                e.details = Some(
                    json!({"group": "meta.k8s.io", "kind": "PatchOptions", "causes": [
                        {"reason": "FieldValueRequired", "message": "Required value: is required for apply patch", "field": "fieldManager"}
                    ]}),
                );
                return Err(e);
            }
            if ctx.raw.is_empty() {
                return Err(ApiError::bad_request("the request body is empty"));
            }
            let patch = ctx.body.clone().ok_or_else(|| {
                ApiError::bad_request(if matches!(kind, PatchKind::Apply { .. }) {
                    "error decoding YAML: this fake server reads apply patches written as JSON only"
                } else {
                    "error decoding patch: invalid JSON"
                })
            })?;
            let name = t.name.as_deref().unwrap_or("");
            let mut store = shared.store.lock().expect("store lock");
            let existed = store.get(res, &ns, name).is_ok();
            let obj = store.patch(res, &ns, name, kind, &patch, &opts, sub)?;
            Ok(json_response(if existed { 200 } else { 201 }, &obj))
        }
        "delete" => {
            let opts = ctx.write_opts()?;
            let options = ctx.body.clone().unwrap_or(json!({}));
            let out = shared.store.lock().expect("store lock").delete(
                res,
                &ns,
                t.name.as_deref().unwrap_or(""),
                &options,
                &opts,
            )?;
            // 200 when gone, 202 when finalizers hold it.
            let code = if out.get("kind").and_then(Value::as_str) == Some("Status") {
                200
            } else {
                202
            };
            Ok(json_response(code, &out))
        }
        "deletecollection" => {
            let opts = ctx.write_opts()?;
            let filter = ctx.filter(t)?;
            let options = ctx.body.clone().unwrap_or(json!({}));
            let mut store = shared.store.lock().expect("store lock");
            let victims = store.snapshot(res, &filter);
            let mut items = Vec::new();
            for ((_, vns, vname), obj) in victims {
                store.delete(res, &vns, &vname, &options, &opts)?;
                items.push(obj);
            }
            let rv = store.current_rv().to_string();
            Ok(json_response(
                200,
                &json!({"kind": format!("{}List", res.kind), "apiVersion": res.api_version(), "metadata": {"resourceVersion": rv}, "items": items}),
            ))
        }
        _ => {
            let _ = method;
            Err(ApiError::method_not_allowed())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let t = parse_target("/apis/apps/v1/namespaces/ns/deployments/x")
            .unwrap()
            .unwrap();
        assert_eq!(
            (t.res.resource, t.namespace.as_deref(), t.name.as_deref()),
            ("deployments", Some("ns"), Some("x"))
        );
        let t = parse_target("/apis/apps/v1/deployments").unwrap().unwrap();
        assert!(t.namespace.is_none() && t.name.is_none());
        let t = parse_target("/api/v1/namespaces/ns").unwrap().unwrap();
        assert_eq!(
            (t.res.resource, t.name.as_deref()),
            ("namespaces", Some("ns"))
        );
        let t = parse_target("/api/v1/namespaces/ns/status")
            .unwrap()
            .unwrap();
        assert_eq!(t.sub.as_deref(), Some("status"));
        let t = parse_target("/apis/apps/v1/namespaces/ns/deployments/x/status")
            .unwrap()
            .unwrap();
        assert_eq!(t.sub.as_deref(), Some("status"));
        let t = parse_target("/apis/apps/v1/watch/namespaces/ns/deployments")
            .unwrap()
            .unwrap();
        assert!(t.watch_path);
        assert!(parse_target("/apis/apps/v1/namespaces/ns/replicasets").is_err());
        assert!(parse_target("/apis/apps/v1/namespaces/ns/deployments/x/scale").is_err());
        assert!(parse_target("/api/v1/namespaces/ns/configmaps/x/status").is_err());
        assert!(parse_target("/apis/apps/v1/deployments/x").is_err());
        assert!(parse_target("/apis/nope/v1/things").unwrap().is_none());
        assert!(parse_target("/version").unwrap().is_none());
        assert!(parse_target("/apis/apps/v1").unwrap().is_none());
    }
}
