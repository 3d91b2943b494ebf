//! Authentication (bearer tokens) and the RBAC authorizer, modelled on
//! kube-apiserver's: the request attributes come from the URL as
//! `RequestInfoFactory` derives them (before any routing, so unknown
//! resources are authorized too), the privileged group `system:masters`
//! bypasses RBAC, and the RBAC rule matching, subject matching and role
//! resolution follow `k8s.io/kubernetes/plugin/pkg/auth/authorizer/rbac`.
//!
//! Everything here is a pure function of its inputs, so tests can table
//! them: [`request_info`], [`authorize`], [`rule_allows`], [`applies_to`],
//! [`forbidden`].

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::status::ApiError;

/// `rbac.authorization.k8s.io`
pub const GROUP: &str = "rbac.authorization.k8s.io";
/// The group whose members bypass authorization (as the real server's
/// privileged-group authorizer in front of RBAC).
pub const SYSTEM_MASTERS: &str = "system:masters";
pub const AUTHENTICATED: &str = "system:authenticated";
pub const UNAUTHENTICATED: &str = "system:unauthenticated";
pub const ANONYMOUS: &str = "system:anonymous";

/// Who made a request, as an authenticator reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub groups: Vec<String>,
}

impl UserInfo {
    /// A user with exactly these groups (no `system:authenticated` added).
    pub fn new(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.to_string(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    /// What a token authenticator yields: the given groups plus
    /// `system:authenticated`, as the real authenticator chain adds it.
    pub fn authenticated(name: &str, groups: &[&str]) -> UserInfo {
        let mut u = UserInfo::new(name, groups);
        if !u.groups.iter().any(|g| g == AUTHENTICATED) {
            u.groups.push(AUTHENTICATED.to_string());
        }
        u
    }

    /// `system:serviceaccount:NS:NAME` with the groups the service-account
    /// authenticator gives (`system:serviceaccounts`,
    /// `system:serviceaccounts:NS`, `system:authenticated`).
    pub fn service_account(namespace: &str, name: &str) -> UserInfo {
        let ns_group = format!("system:serviceaccounts:{namespace}");
        UserInfo::authenticated(
            &format!("system:serviceaccount:{namespace}:{name}"),
            &["system:serviceaccounts", &ns_group],
        )
    }

    /// `system:anonymous` in `system:unauthenticated`.
    pub fn anonymous() -> UserInfo {
        UserInfo::new(ANONYMOUS, &[UNAUTHENTICATED])
    }

    /// The admin of the default kubeconfig: `admin` in `system:masters`.
    pub fn admin() -> UserInfo {
        UserInfo::authenticated("admin", &[SYSTEM_MASTERS])
    }
}

/// The authorization attributes of a request (`RequestInfo` of
/// k8s.io/apiserver).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    pub is_resource_request: bool,
    /// The URL path (non-resource requests are authorized by it).
    pub path: String,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`; the lowercase HTTP method for non-resource
    /// requests.
    pub verb: String,
    pub api_group: String,
    pub api_version: String,
    pub namespace: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
}

impl RequestInfo {
    /// A resource request, for tables of [`authorize`] cases.
    pub fn resource(verb: &str, group: &str, resource: &str, namespace: &str, name: &str) -> Self {
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        RequestInfo {
            is_resource_request: true,
            path: String::new(),
            verb: verb.into(),
            api_group: group.into(),
            api_version: "v1".into(),
            namespace: namespace.into(),
            resource: resource.into(),
            subresource: subresource.into(),
            name: name.into(),
        }
    }

    /// A non-resource request (`/version`, `/apis`, ...).
    pub fn non_resource(verb: &str, path: &str) -> Self {
        RequestInfo {
            path: path.into(),
            verb: verb.into(),
            ..Default::default()
        }
    }
}

/// Valid as a single path segment (`path.IsValidPathSegmentName`): also
/// the name rule of RBAC objects.
pub fn path_segment_problems(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    if name == "." || name == ".." {
        out.push(format!("may not be '{name}'"));
        return out;
    }
    for c in ["/", "%"] {
        if name.contains(c) {
            out.push(format!("may not contain '{c}'"));
        }
    }
    out
}

/// Derives the request attributes from method, path and query exactly as
/// kube-apiserver's `RequestInfoFactory` does: `/api/v1/...` and
/// `/apis/G/V/...` with at least a resource are resource requests, the
/// `watch` prefix and `?watch=` make watches, GET without a name is a
/// list, DELETE without a name a deletecollection, and a list or watch
/// with `fieldSelector=metadata.name=X` carries the name X (so rules with
/// `resourceNames` can allow it).
pub fn request_info(method: &str, path: &str, query: &str) -> RequestInfo {
    let method = method.to_ascii_uppercase();
    let mut info = RequestInfo {
        path: path.to_string(),
        verb: method.to_ascii_lowercase(),
        ..Default::default()
    };
    let trimmed = path.trim_matches('/');
    let parts: Vec<&str> = if trimmed.is_empty() {
        Vec::new()
    } else {
        trimmed.split('/').collect()
    };
    if parts.len() < 3 || !matches!(parts[0], "api" | "apis") {
        return info;
    }
    let mut cur = &parts[1..];
    if parts[0] == "apis" {
        if cur.len() < 3 {
            return info;
        }
        info.api_group = cur[0].to_string();
        cur = &cur[1..];
    }
    info.is_resource_request = true;
    info.api_version = cur[0].to_string();
    cur = &cur[1..];
    if matches!(cur[0], "watch" | "proxy") {
        // The real factory fails the request ("unable to determine kind
        // and namespace from url") when nothing follows; it is left with
        // an empty resource here.
        info.verb = cur[0].to_string();
        cur = &cur[1..];
    } else {
        info.verb = match method.as_str() {
            "POST" => "create",
            "GET" | "HEAD" => "get",
            "PUT" => "update",
            "PATCH" => "patch",
            "DELETE" => "delete",
            _ => "",
        }
        .to_string();
    }
    if cur.first() == Some(&"namespaces") && cur.len() > 1 {
        info.namespace = cur[1].to_string();
        if cur.len() > 2 && !matches!(cur[2], "status" | "finalize") {
            cur = &cur[2..];
        }
    }
    if cur.len() >= 3 && info.verb != "proxy" {
        info.subresource = cur[2].to_string();
    }
    if cur.len() >= 2 {
        info.name = cur[1].to_string();
    }
    if let Some(r) = cur.first() {
        info.resource = r.to_string();
    }
    if info.name.is_empty() && info.verb == "get" {
        let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let first = |k: &str| {
            params
                .iter()
                .find(|(pk, _)| pk == k)
                .map(|(_, v)| v.clone())
        };
        // Any value but "false" and "0" (even an empty one) is a watch.
        let watch =
            first("watch").is_some_and(|v| !matches!(v.to_lowercase().as_str(), "false" | "0"));
        info.verb = if watch { "watch" } else { "list" }.to_string();
        if let Some(fs) = first("fieldSelector")
            && let Some(name) = exact_name(&fs)
            && path_segment_problems(&name).is_empty()
        {
            info.name = name;
        }
    }
    if info.name.is_empty() && info.verb == "delete" {
        info.verb = "deletecollection".into();
    }
    info
}

/// `RequiresExactMatch("metadata.name")` of a field selector.
fn exact_name(selector: &str) -> Option<String> {
    let mut found = None;
    for term in split_unescaped(selector, ',') {
        let term = term.trim();
        if term.is_empty() {
            continue;
        }
        let (key, value) = if let Some((k, _)) = term.split_once("!=") {
            (k, None)
        } else if let Some((k, v)) = term.split_once("==") {
            (k, Some(v))
        } else if let Some((k, v)) = term.split_once('=') {
            (k, Some(v))
        } else {
            // Unparsable: the whole selector is ignored.
            return None;
        };
        if key.trim() == "metadata.name"
            && let Some(v) = value
        {
            found = Some(unescape(v.trim()));
        }
    }
    found
}

fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            out.last_mut().expect("non-empty").extend(['\\', c]);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            out.push(String::new());
        } else {
            out.last_mut().expect("non-empty").push(c);
        }
    }
    out
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if !escaped && c == '\\' {
            escaped = true;
        } else {
            out.push(c);
            escaped = false;
        }
    }
    out
}

/// One rule of a Role or ClusterRole.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PolicyRule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    #[serde(rename = "nonResourceURLs")]
    pub non_resource_urls: Vec<String>,
}

/// A subject of a binding.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Subject {
    pub kind: String,
    pub name: String,
    pub namespace: String,
    pub api_group: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RoleRef {
    pub api_group: String,
    pub kind: String,
    pub name: String,
}

/// A Role (with its namespace) or ClusterRole (namespace `""`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Role {
    pub namespace: String,
    pub name: String,
    pub rules: Vec<PolicyRule>,
}

/// A RoleBinding (with its namespace) or ClusterRoleBinding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Binding {
    pub namespace: String,
    pub name: String,
    pub role_ref: RoleRef,
    pub subjects: Vec<Subject>,
}

/// The RBAC objects an authorization decision reads.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub roles: Vec<Role>,
    pub cluster_roles: Vec<Role>,
    pub role_bindings: Vec<Binding>,
    pub cluster_role_bindings: Vec<Binding>,
}

fn field<T: for<'de> Deserialize<'de> + Default>(obj: &Value, key: &str) -> T {
    obj.get(key)
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

fn meta_str(obj: &Value, key: &str) -> String {
    obj.pointer(&format!("/metadata/{key}"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

impl Policy {
    /// Reads Roles, ClusterRoles, RoleBindings and ClusterRoleBindings
    /// (by `kind`) from objects; other kinds are ignored.
    pub fn from_objects<'a>(objects: impl IntoIterator<Item = &'a Value>) -> Policy {
        let mut p = Policy::default();
        for o in objects {
            p.add(o);
        }
        p
    }

    pub fn add(&mut self, obj: &Value) {
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
        let role = || Role {
            namespace: meta_str(obj, "namespace"),
            name: meta_str(obj, "name"),
            rules: field(obj, "rules"),
        };
        let binding = || Binding {
            namespace: meta_str(obj, "namespace"),
            name: meta_str(obj, "name"),
            role_ref: field(obj, "roleRef"),
            subjects: field(obj, "subjects"),
        };
        match kind {
            "Role" => self.roles.push(role()),
            "ClusterRole" => self.cluster_roles.push(Role {
                namespace: String::new(),
                ..role()
            }),
            "RoleBinding" => self.role_bindings.push(binding()),
            "ClusterRoleBinding" => self.cluster_role_bindings.push(Binding {
                namespace: String::new(),
                ..binding()
            }),
            _ => {}
        }
    }

    /// [`bootstrap_objects`] as a policy.
    pub fn bootstrap() -> Policy {
        Policy::from_objects(&bootstrap_objects())
    }

    /// The rules a binding's roleRef points at: a Role of the binding's
    /// namespace or a ClusterRole; the error text is the real one.
    fn role_rules(&self, role_ref: &RoleRef, namespace: &str) -> Result<&[PolicyRule], String> {
        match role_ref.kind.as_str() {
            "Role" => self
                .roles
                .iter()
                .find(|r| r.namespace == namespace && r.name == role_ref.name)
                .map(|r| r.rules.as_slice())
                .ok_or_else(|| format!("role.{GROUP} \"{}\" not found", role_ref.name)),
            "ClusterRole" => self
                .cluster_roles
                .iter()
                .find(|r| r.name == role_ref.name)
                .map(|r| r.rules.as_slice())
                .ok_or_else(|| format!("clusterrole.{GROUP} \"{}\" not found", role_ref.name)),
            other => Err(format!("unsupported role reference kind: {other:?}")),
        }
    }
}

/// The default ClusterRoles and ClusterRoleBindings of a 1.20 cluster that
/// matter without aggregation: `cluster-admin` (bound to `system:masters`),
/// `system:discovery`, `system:basic-user` (bound to
/// `system:authenticated`) and `system:public-info-viewer` (bound to
/// `system:authenticated` and `system:unauthenticated`). The fake stores
/// them when RBAC is on.
pub fn bootstrap_objects() -> Vec<Value> {
    let meta = |name: &str| {
        json!({
            "name": name,
            "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}
        })
    };
    let role = |name: &str, rules: Value| json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": meta(name), "rules": rules});
    let binding = |name: &str, groups: &[&str]| {
        let subjects: Vec<Value> = groups
            .iter()
            .map(|g| json!({"apiGroup": GROUP, "kind": "Group", "name": g}))
            .collect();
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": meta(name),
               "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": name}, "subjects": subjects})
    };
    vec![
        role(
            "cluster-admin",
            json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
        ),
        role(
            "system:discovery",
            json!([{"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz", "/version", "/version/"], "verbs": ["get"]}]),
        ),
        role(
            "system:basic-user",
            json!([{"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"]}]),
        ),
        role(
            "system:public-info-viewer",
            json!([{"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"], "verbs": ["get"]}]),
        ),
        binding("cluster-admin", &[SYSTEM_MASTERS]),
        binding("system:discovery", &[AUTHENTICATED]),
        binding("system:basic-user", &[AUTHENTICATED]),
        binding(
            "system:public-info-viewer",
            &[AUTHENTICATED, UNAUTHENTICATED],
        ),
    ]
}

/// An authorization decision. A denial carries the RBAC reason: empty, or
/// `RBAC: ...` listing roles that applying bindings point at but that do
/// not exist (the real server appends it to the Forbidden message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(String),
}

impl Decision {
    pub fn allowed(&self) -> bool {
        matches!(self, Decision::Allow)
    }
}

fn matches_any(list: &[String], value: &str) -> bool {
    list.iter().any(|v| v == "*" || v == value)
}

/// `RuleAllows`: verb, API group, resource (`*`, `resource/subresource`,
/// `*/subresource`) and resourceNames for resource requests; verb and
/// non-resource URL (exact, `*`, or a `prefix*`) otherwise.
pub fn rule_allows(req: &RequestInfo, rule: &PolicyRule) -> bool {
    if !matches_any(&rule.verbs, &req.verb) {
        return false;
    }
    if !req.is_resource_request {
        return rule.non_resource_urls.iter().any(|u| {
            u == "*"
                || *u == req.path
                || (u.ends_with('*') && req.path.starts_with(u.trim_end_matches('*')))
        });
    }
    let combined = if req.subresource.is_empty() {
        req.resource.clone()
    } else {
        format!("{}/{}", req.resource, req.subresource)
    };
    let resource_ok = rule.resources.iter().any(|r| {
        r == "*"
            || *r == combined
            || (!req.subresource.is_empty()
                && r.len() == req.subresource.len() + 2
                && r.starts_with("*/")
                && r.ends_with(req.subresource.as_str()))
    });
    matches_any(&rule.api_groups, &req.api_group)
        && resource_ok
        && (rule.resource_names.is_empty() || rule.resource_names.contains(&req.name))
}

/// `appliesTo`: does a binding with these subjects name the user? A
/// ServiceAccount subject without a namespace takes the binding's (for a
/// ClusterRoleBinding, `namespace` is `""` and such a subject matches
/// nobody).
pub fn applies_to(user: &UserInfo, subjects: &[Subject], namespace: &str) -> bool {
    subjects.iter().any(|s| match s.kind.as_str() {
        "User" => user.name == s.name,
        "Group" => user.groups.contains(&s.name),
        "ServiceAccount" => {
            let ns = if s.namespace.is_empty() {
                namespace
            } else {
                s.namespace.as_str()
            };
            !ns.is_empty() && user.name == format!("system:serviceaccount:{ns}:{}", s.name)
        }
        _ => false,
    })
}

/// The authorizer chain of a kube-apiserver with `--authorization-mode
/// RBAC`: `system:masters` is allowed everything; otherwise the rules of
/// every ClusterRoleBinding that applies to the user, then of every
/// RoleBinding in the request's namespace that applies (a RoleBinding to a
/// ClusterRole grants that role's rules in the binding's namespace only)
/// are tried until one allows.
pub fn authorize(policy: &Policy, user: &UserInfo, req: &RequestInfo) -> Decision {
    if user.groups.iter().any(|g| g == SYSTEM_MASTERS) {
        return Decision::Allow;
    }
    let mut errors: Vec<String> = Vec::new();
    let mut try_binding = |b: &Binding, ns: &str| -> bool {
        if !applies_to(user, &b.subjects, ns) {
            return false;
        }
        match policy.role_rules(&b.role_ref, ns) {
            Ok(rules) => rules.iter().any(|r| rule_allows(req, r)),
            Err(e) => {
                errors.push(e);
                false
            }
        }
    };
    for b in &policy.cluster_role_bindings {
        if try_binding(b, "") {
            return Decision::Allow;
        }
    }
    if !req.namespace.is_empty() {
        for b in policy
            .role_bindings
            .iter()
            .filter(|b| b.namespace == req.namespace)
        {
            if try_binding(b, &req.namespace) {
                return Decision::Allow;
            }
        }
    }
    // utilerrors.NewAggregate: one error as is, several deduplicated in [].
    let mut seen: Vec<String> = Vec::new();
    for e in errors {
        if !seen.contains(&e) {
            seen.push(e);
        }
    }
    Decision::Deny(match seen.len() {
        0 => String::new(),
        1 => format!("RBAC: {}", seen[0]),
        _ => format!("RBAC: [{}]", seen.join(", ")),
    })
}

/// The 403 the real server answers for a denied request:
/// `deployments.apps "web" is forbidden: User "u" cannot patch resource
/// "deployments" in API group "apps" in the namespace "prod"`, with the
/// RBAC reason appended after `: ` when there is one.
pub fn forbidden(user: &UserInfo, req: &RequestInfo, reason: &str) -> ApiError {
    let who = &user.name;
    let msg = if !req.is_resource_request {
        format!("User {who:?} cannot {} path {:?}", req.verb, req.path)
    } else {
        let resource = if req.subresource.is_empty() {
            req.resource.clone()
        } else {
            format!("{}/{}", req.resource, req.subresource)
        };
        let scope = if req.namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace {:?}", req.namespace)
        };
        format!(
            "User {who:?} cannot {} resource {resource:?} in API group {:?} {scope}",
            req.verb, req.api_group
        )
    };
    let msg = if reason.is_empty() {
        msg
    } else {
        format!("{msg}: {reason}")
    };
    let qualified = if req.api_group.is_empty() {
        req.resource.clone()
    } else {
        format!("{}.{}", req.resource, req.api_group)
    };
    let message = if !req.is_resource_request || qualified.is_empty() {
        format!("forbidden: {msg}")
    } else if req.name.is_empty() {
        format!("{qualified} is forbidden: {msg}")
    } else {
        format!("{qualified} {:?} is forbidden: {msg}", req.name)
    };
    let mut details = serde_json::Map::new();
    if req.is_resource_request {
        if !req.name.is_empty() {
            details.insert("name".into(), req.name.clone().into());
        }
        if !req.api_group.is_empty() {
            details.insert("group".into(), req.api_group.clone().into());
        }
        if !req.resource.is_empty() {
            details.insert("kind".into(), req.resource.clone().into());
        }
    }
    let mut e = ApiError::new(403, "Forbidden", message);
    e.details = Some(Value::Object(details));
    e
}

/// 401 for a token no authenticator accepts.
pub fn unauthorized() -> ApiError {
    ApiError::new(401, "Unauthorized", "Unauthorized")
}

/// The outcome of bearer-token authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authn {
    User(UserInfo),
    /// No credentials: anonymous when allowed.
    None,
    /// A token was sent and rejected: 401.
    Invalid,
}

/// Reads `Authorization: Bearer TOKEN` as the real bearer-token
/// authenticator does (scheme case-insensitive; anything else is no
/// credentials; an empty token is rejected) and looks the token up.
pub fn authenticate(header: Option<&str>, lookup: impl Fn(&str) -> Option<UserInfo>) -> Authn {
    let Some(h) = header.map(str::trim).filter(|h| !h.is_empty()) else {
        return Authn::None;
    };
    let parts: Vec<&str> = h.splitn(3, ' ').collect();
    if parts.len() < 2 || !parts[0].eq_ignore_ascii_case("bearer") {
        return Authn::None;
    }
    let token = parts[1];
    if token.is_empty() {
        return Authn::Invalid;
    }
    match lookup(token) {
        Some(u) => Authn::User(u),
        None => Authn::Invalid,
    }
}

/// The token the default kubeconfig sends; it authenticates as
/// [`UserInfo::admin`].
pub const ADMIN_TOKEN: &str = "fake-token";

/// The server's authentication and authorization settings.
#[derive(Debug, Clone)]
pub(crate) struct AuthState {
    /// Authentication and RBAC are enforced.
    pub enabled: bool,
    /// Requests without credentials are `anonymous_user` (else 401).
    pub anonymous: bool,
    /// `system:anonymous` unless a test says otherwise.
    pub anonymous_user: UserInfo,
    pub tokens: HashMap<String, UserInfo>,
}

impl AuthState {
    pub fn new(enabled: bool, anonymous: bool) -> AuthState {
        let mut tokens = HashMap::new();
        tokens.insert(ADMIN_TOKEN.to_string(), UserInfo::admin());
        AuthState {
            enabled,
            anonymous,
            anonymous_user: UserInfo::anonymous(),
            tokens,
        }
    }
}
