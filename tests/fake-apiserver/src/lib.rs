//! A fake Kubernetes API server for pushroll's tests: real HTTP on
//! `127.0.0.1`, real JSON, real `Status` errors, resourceVersion and
//! generation semantics, watches, discovery good enough for `kubectl`, and
//! fault injection.
//!
//! ```no_run
//! # async fn demo() {
//! use fake_apiserver::{FakeApiServer, FaultRule};
//! use serde_json::json;
//!
//! let server = FakeApiServer::start().await;
//! server.insert(json!({
//!     "apiVersion": "apps/v1", "kind": "Deployment",
//!     "metadata": {"name": "api", "namespace": "prod"},
//!     "spec": {"selector": {"matchLabels": {"app": "api"}},
//!              "template": {"metadata": {"labels": {"app": "api"}},
//!                           "spec": {"containers": [{"name": "app", "image": "app:v1"}]}}}
//! }));
//! let dir = tempfile::tempdir().unwrap();
//! let kubeconfig = server.write_kubeconfig(dir.path()); // for KUBECONFIG
//! server.fail_next(FaultRule::status(429).verb("patch").resource("deployments"));
//! // ... run the code under test against server.url() ...
//! let patches: Vec<_> = server.requests().into_iter().filter(|r| r.verb == "patch").collect();
//! # let _ = (kubeconfig, patches);
//! # }
//! ```
//!
//! # Test-control API
//!
//! | call | what |
//! | --- | --- |
//! | [`FakeApiServer::start`], [`FakeApiServer::start_blocking`], [`FakeApiServer::start_with`] | bind 127.0.0.1 (own thread and runtime); ready on return |
//! | [`FakeApiServer::url`], [`FakeApiServer::kubeconfig`], [`FakeApiServer::write_kubeconfig`] | how clients reach it |
//! | [`FakeApiServer::insert`], [`FakeApiServer::get`], [`FakeApiServer::list`], [`FakeApiServer::delete`], [`FakeApiServer::ensure_namespace`] | seed and inspect objects (watch events are sent) |
//! | [`FakeApiServer::requests`], [`FakeApiServer::requests_for`], [`FakeApiServer::wait_for_request`], [`FakeApiServer::clear_requests`] | the request log ([`RequestRecord`]) |
//! | [`FakeApiServer::fail_next`], [`FakeApiServer::clear_faults`], [`FakeApiServer::set_down`], [`FakeApiServer::compact`] | faults: statuses, delays, dropped connections, outage, 410 |
//! | [`Options::rbac`], [`FakeApiServer::set_rbac`], [`FakeApiServer::add_token`], [`FakeApiServer::add_service_account`], [`FakeApiServer::kubeconfig_for`], [`FakeApiServer::write_kubeconfig_for`], [`FakeApiServer::kubeconfig_with_token`], [`FakeApiServer::set_anonymous_user`], [`FakeApiServer::authorize`] | bearer tokens and RBAC (below) |
//!
//! The binary `fake-apiserver --port P --kubeconfig FILE --namespace NS
//! --load objects.json` runs one for manual trials.
//!
//! # Served
//!
//! `apps/v1` deployments, statefulsets, daemonsets (with `/status`); `v1`
//! configmaps, events, namespaces (cluster-scoped, with `/status`);
//! `coordination.k8s.io/v1` leases; `rbac.authorization.k8s.io/v1` roles,
//! rolebindings (namespaced), clusterroles, clusterrolebindings. Verbs: get, list (per namespace and
//! across namespaces, `limit`/`continue`, `labelSelector`,
//! `fieldSelector` on `metadata.name`/`metadata.namespace`), watch, create
//! (`generateName`), update, patch (strategic merge, JSON merge, JSON patch,
//! apply), delete (preconditions, finalizers), deletecollection;
//! `?dryRun=All`, `?fieldManager=`. Discovery (`/version`, `/api`,
//! `/apis`, group and group-version documents) and `meta.k8s.io/v1` Tables
//! for `kubectl get`.
//!
//! # RBAC (opt-in)
//!
//! Off by default: any token, or none, may do anything. With
//! `Options { rbac: true, .. }` (or [`FakeApiServer::set_rbac`]) the
//! server authenticates bearer tokens and authorizes every request as a
//! kube-apiserver with `--authorization-mode RBAC` does:
//!
//! ```no_run
//! # async fn demo() {
//! use fake_apiserver::{FakeApiServer, Options};
//! let server = FakeApiServer::start_with(Options { rbac: true, ..Options::default() });
//! // objects of deploy/base/rbac-*.yaml, by insert or by kubectl/kube-rs as admin
//! # let role_binding = serde_json::json!({});
//! server.insert(role_binding);
//! server.add_service_account("pushroll", "pushroll"); // user system:serviceaccount:pushroll:pushroll
//! let dir = tempfile::tempdir().unwrap();
//! let kubeconfig = server.write_kubeconfig_for(dir.path(), "system:serviceaccount:pushroll:pushroll");
//! # let _ = kubeconfig;
//! # }
//! ```
//!
//! * Identities: [`FakeApiServer::add_token`] (user and groups;
//!   `system:authenticated` is added), [`FakeApiServer::add_service_account`]
//!   (the user name and groups the service-account authenticator gives).
//!   The default kubeconfig's token ([`rbac::ADMIN_TOKEN`]) is `admin` in
//!   `system:masters`, which bypasses RBAC as in the real server, so
//!   existing tests keep full access. An unknown (or empty) bearer token
//!   is 401 `Unauthorized` on every path; no credentials is
//!   `system:anonymous` in `system:unauthenticated`
//!   ([`Options::anonymous_auth`]` = false` answers 401 instead, as
//!   `scripts/kube-real.sh`'s server, started with `--anonymous-auth=false`).
//! * Attributes are derived from the URL alone, as `RequestInfoFactory`
//!   does, before routing (so an unserved resource is a 403, not a 404,
//!   for someone not allowed it): verbs get/list/watch (`?watch=` with any
//!   value but `false`/`0`, or the `/watch/` prefix) / create / update /
//!   patch / delete / deletecollection, API group, resource and
//!   subresource (`deployments/status`), namespace (a Namespace is in
//!   itself: `/api/v1/namespaces/prod` is namespace `prod`), name, and for
//!   lists and watches the name of a `fieldSelector=metadata.name=X`.
//! * Rules: apiGroups, resources (`*`, `res/sub`, `*/sub`), verbs (`*`),
//!   resourceNames (an empty name never matches them, so list, watch,
//!   create and deletecollection without a name are denied by such
//!   rules), nonResourceURLs (exact, `*`, `prefix*`). Subjects: User,
//!   Group, ServiceAccount (namespace defaulting to the RoleBinding's).
//!   RoleBinding → Role of its namespace or ClusterRole (granted in that
//!   namespace only); ClusterRoleBinding → ClusterRole everywhere and for
//!   cluster-scoped resources and non-resource URLs.
//! * Turning RBAC on stores the bootstrap `cluster-admin`,
//!   `system:discovery`, `system:basic-user` and
//!   `system:public-info-viewer` ClusterRoles and their bindings
//!   ([`rbac::bootstrap_objects`]): authenticated users may read discovery
//!   (`/api*`, `/apis*`, `/openapi*`, `/version`, `/healthz`, ...),
//!   anonymous only `/version`, `/healthz`, `/livez`, `/readyz`.
//! * Denials are 403 `Forbidden` Statuses with the real message and
//!   details: `deployments.apps "web" is forbidden: User "…" cannot patch
//!   resource "deployments" in API group "apps" in the namespace "prod"`,
//!   `… at the cluster scope`, `forbidden: User "…" cannot get path
//!   "/foo"`, and the real `: RBAC: [clusterrole.rbac.authorization.k8s.io
//!   "x" not found, …]` suffix when applying bindings point at missing
//!   roles. [`RequestRecord::user`] logs who asked.
//! * RBAC objects are validated like the real server's (rules need verbs
//!   and groups/resources or, in ClusterRoles, non-resource URLs; roleRef
//!   kinds and immutability; subject kinds; names are path segments, so
//!   `system:foo` is valid) and defaulted (`apiGroup` of roleRef and of
//!   User/Group subjects).
//! * kubectl sends no credentials to a plain-`http://` server (client-go
//!   only sends them over TLS), so under RBAC kubectl is anonymous: a test
//!   that drives kubectl says who it is with
//!   [`FakeApiServer::set_anonymous_user`]. kube-rs does send tokens.
//!
//! Compared with kube-apiserver 1.20.2 (`scripts/kube-real.sh`, the
//! ServiceAccount-token users it creates): the 403 messages and details
//! for get/patch/delete/list/watch/create/deletecollection, `/status`,
//! namespaces, cluster-scope lists, non-resource paths and unserved
//! resources; the `RBAC:` suffix for missing roles; resourceNames with
//! and without a `metadata.name` field selector (lists and watches);
//! 401 bodies; the RBAC validation messages; discovery of the RBAC group;
//! the bootstrap roles' rules; `kubectl get rolebindings -o wide` columns.
//!
//! # Faithful
//!
//! Error bodies and status codes were compared request by request with a
//! real kube-apiserver (1.20.2, `scripts/kube-real.sh`); the differences
//! left are listed under "Knowingly simplified".
//!
//! * One global resourceVersion counter bumped by every write; a write that
//!   changes nothing (byte-identical result) does not bump it and sends no
//!   watch event.
//! * `metadata.generation` is 1 on create and bumped on `spec` changes for
//!   the apps/v1 workloads; writes to the main resource keep `status`,
//!   `/status` writes change only `status`; uid and creationTimestamp are
//!   the server's.
//! * Errors are `Status` objects with the real reasons, messages and
//!   details: 404 NotFound, 409 AlreadyExists / Conflict (stale
//!   resourceVersion in a PUT body *or in a patch*), 422 Invalid (names that
//!   are not DNS-1123, missing names, workloads without selector,
//!   mismatching template labels, immutable selector, containers without
//!   name or image), 400 BadRequest (name in body ≠ URL, as the real server
//!   answers, not 422), 405, 415 for unknown patch types, 410 Expired.
//! * Creating in a namespace that does not exist is a 404 (the
//!   NamespaceLifecycle admission); the test-control [`FakeApiServer::insert`]
//!   creates missing namespaces, and [`FakeApiServer::ensure_namespace`]
//!   makes one.
//! * Lists carry items without apiVersion/kind, watch events with them; a
//!   watch from a compacted resourceVersion gets 200 and one ERROR event
//!   with a 410 Expired Status; `resourceVersion` 0 or absent starts with
//!   ADDED events of the current state; `sendInitialEvents` ends its
//!   replay with an `initial-events-end` bookmark; bookmarks at timeout.
//! * Field ownership in `metadata.managedFields`, and server-side apply
//!   conflicts (409 with the conflicting manager and field) unless
//!   `force=true`, which leader election with kube-lease-manager relies on.
//!
//! # Knowingly simplified
//!
//! * No defaulting beyond `spec.replicas: 1` (Deployment, StatefulSet),
//!   `status: {}` on workloads and namespace phase/label; no admission, no
//!   controllers (nothing rolls out: set status with `insert`), no garbage
//!   collection; deleting a namespace removes its content at once.
//! * Strategic-merge keys are known by field name; lists are atomic for
//!   field ownership; apply bodies must be JSON; `$setElementOrder` is
//!   ignored.
//! * A `continue` token lists the current state after its key, not the
//!   snapshot at its resourceVersion.
//! * Authentication and RBAC are off unless [`Options::rbac`] is set
//!   (inject 403s with [`FaultRule`] then). With it: bearer tokens only (no
//!   client certificates, no TLS, no impersonation headers, no
//!   TokenReview/SubjectAccessReview APIs); faults are applied before
//!   authentication. No escalation check: a user allowed to write Roles
//!   and bindings may grant what it does not hold (the real server
//!   requires `escalate`/`bind`). No aggregated ClusterRoles (`view`,
//!   `edit`, `admin` do not exist; `cluster-admin` does). Bootstrap roles
//!   are not reconciled back when deleted. Bindings are tried in name
//!   order (the real informer order is arbitrary), which only shows in
//!   the order of the `RBAC:` error list. A `/watch/` or `/proxy/` path
//!   with nothing after it is authorized with an empty resource where the
//!   real server answers 500.
//! * Request bodies must be JSON: protobuf bodies get 415, so typed
//!   `kubectl create configmap …` fails while `kubectl create -f file.json`
//!   and `kubectl apply -f` work (`/openapi/v3` advertises server-side field
//!   validation; unknown fields are not rejected). Responses are always
//!   JSON, even when protobuf is preferred in `Accept`.
//! * `events.k8s.io/v1` is not served (core `v1` events are).
//! * An apply without `metadata.name` is accepted (the name comes from the
//!   URL), as kube-lease-manager expects of current servers; 1.20 answered
//!   400 there.
//! * Bookmarks are sent at the end of a watch (`timeoutSeconds`), not
//!   periodically.
//! * Down ([`FakeApiServer::set_down`]) accepts and resets connections
//!   (a transport error, "connection reset") rather than refusing them, so
//!   the port stays the server's.
#![forbid(unsafe_code)]

mod discovery;
mod faults;
mod fields;
mod http;
pub mod patch;
pub mod rbac;
mod resources;
mod selectors;
mod server;
mod status;
mod store;
mod table;
mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{Notify, watch as wch};

pub use faults::FaultRule;
pub use http::RequestRecord;
pub use rbac::UserInfo;
pub use status::ApiError;

use http::Shared;
use store::{Filter, Store};

/// Settings for [`FakeApiServer::start_with`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Watch events kept for watches that resume from a resourceVersion.
    pub history: usize,
    /// Enforce bearer-token authentication and RBAC (off by default: any
    /// token, or none, may do anything). See [`FakeApiServer::add_token`].
    pub rbac: bool,
    /// With `rbac`: requests without credentials are `system:anonymous`
    /// (kube-apiserver's default, `--anonymous-auth=true`); `false` answers
    /// them 401, as `scripts/kube-real.sh`'s server does.
    pub anonymous_auth: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            port: 0,
            history: 10_000,
            rbac: false,
            anonymous_auth: true,
        }
    }
}

/// A running fake API server. Clones share it; it stops when the last
/// clone is dropped.
#[derive(Clone)]
pub struct FakeApiServer {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    addr: SocketAddr,
    down: wch::Sender<bool>,
    shutdown: wch::Sender<bool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(t) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = t.join();
        }
    }
}

impl FakeApiServer {
    /// Starts a server on a free port of 127.0.0.1. It is accepting
    /// connections when this returns.
    pub async fn start() -> FakeApiServer {
        Self::start_with(Options::default())
    }

    /// [`FakeApiServer::start`] for code without an async context.
    pub fn start_blocking() -> FakeApiServer {
        Self::start_with(Options::default())
    }

    /// Starts with options. Panics when the port cannot be bound.
    pub fn start_with(opts: Options) -> FakeApiServer {
        let listener = std::net::TcpListener::bind(("127.0.0.1", opts.port))
            .unwrap_or_else(|e| panic!("fake-apiserver: binding 127.0.0.1:{}: {e}", opts.port));
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("bound address");
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new(opts.history)),
            log: Mutex::new(Vec::new()),
            logged: Notify::new(),
            faults: Mutex::new(Vec::new()),
            host: Mutex::new(addr.to_string()),
            auth: Mutex::new(rbac::AuthState::new(opts.rbac, opts.anonymous_auth)),
        });
        if opts.rbac {
            Self::seed_bootstrap(&shared);
        }
        let (down, down_rx) = wch::channel(false);
        let (shutdown, shutdown_rx) = wch::channel(false);
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fake-apiserver-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("fake-apiserver runtime");
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    server::run(listener, sh, down_rx, shutdown_rx).await;
                });
            })
            .expect("spawning the fake-apiserver thread");
        FakeApiServer {
            inner: Arc::new(Inner {
                shared,
                addr,
                down,
                shutdown,
                thread: Mutex::new(Some(thread)),
            }),
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// A kubeconfig for this server: cluster `fake`, a user with a bearer
    /// token, and a current context with `namespace` as its default. Its
    /// token ([`rbac::ADMIN_TOKEN`]) is user `admin` in `system:masters`,
    /// allowed everything also when RBAC is on.
    pub fn kubeconfig(&self, namespace: &str) -> String {
        self.kubeconfig_with_token(rbac::ADMIN_TOKEN, namespace)
    }

    /// [`FakeApiServer::kubeconfig`] sending `Authorization: Bearer
    /// <token>`, whether or not the token is registered (to test 401s).
    pub fn kubeconfig_with_token(&self, token: &str, namespace: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\nusers:\n- name: fake\n  user:\n    token: {token:?}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: {namespace}\ncurrent-context: fake\npreferences: {{}}\n",
            url = self.url()
        )
    }

    /// A kubeconfig for a registered identity, named by its token or its
    /// user name (the first token registered for it). Panics when neither
    /// is registered.
    pub fn kubeconfig_for(&self, token_or_user: &str, namespace: &str) -> String {
        let token = self.token_of(token_or_user).unwrap_or_else(|| {
            panic!("fake-apiserver: no token or user {token_or_user:?} registered (add_token)")
        });
        self.kubeconfig_with_token(&token, namespace)
    }

    /// Writes [`FakeApiServer::kubeconfig_for`] (namespace `default`) to
    /// `dir/kubeconfig-<user>` (`:` and `/` in the user name become `_`)
    /// and returns the path.
    pub fn write_kubeconfig_for(&self, dir: &Path, token_or_user: &str) -> PathBuf {
        let text = self.kubeconfig_for(token_or_user, "default");
        let user = self
            .user_of_token(&self.token_of(token_or_user).expect("checked above"))
            .expect("registered")
            .name;
        let file: String = user
            .chars()
            .map(|c| if c == ':' || c == '/' { '_' } else { c })
            .collect();
        let path = dir.join(format!("kubeconfig-{file}"));
        std::fs::write(&path, text).expect("writing the kubeconfig");
        path
    }

    fn token_of(&self, token_or_user: &str) -> Option<String> {
        let auth = self.inner.shared.auth.lock().expect("auth lock");
        if auth.tokens.contains_key(token_or_user) {
            return Some(token_or_user.to_string());
        }
        let mut tokens: Vec<&String> = auth
            .tokens
            .iter()
            .filter(|(_, u)| u.name == token_or_user)
            .map(|(t, _)| t)
            .collect();
        tokens.sort();
        tokens.first().map(|t| t.to_string())
    }

    /// The identity a token authenticates as, if registered.
    pub fn user_of_token(&self, token: &str) -> Option<UserInfo> {
        let auth = self.inner.shared.auth.lock().expect("auth lock");
        auth.tokens.get(token).cloned()
    }

    /// Registers a bearer token for `user` with `groups`
    /// (`system:authenticated` is added, as the real authenticator does).
    /// Replaces an earlier registration of the same token.
    pub fn add_token(&self, token: &str, user: &str, groups: &[&str]) {
        self.inner
            .shared
            .auth
            .lock()
            .expect("auth lock")
            .tokens
            .insert(token.to_string(), UserInfo::authenticated(user, groups));
    }

    /// Registers a token for the ServiceAccount `namespace/name`: user
    /// `system:serviceaccount:NS:NAME` in `system:serviceaccounts` and
    /// `system:serviceaccounts:NS`. Returns the token
    /// (`sa-token-NS-NAME`). No ServiceAccount object is needed.
    pub fn add_service_account(&self, namespace: &str, name: &str) -> String {
        let token = format!("sa-token-{namespace}-{name}");
        self.inner
            .shared
            .auth
            .lock()
            .expect("auth lock")
            .tokens
            .insert(token.clone(), UserInfo::service_account(namespace, name));
        token
    }

    /// Who requests without credentials are (with RBAC on and
    /// `anonymous_auth`): `system:anonymous` in `system:unauthenticated`
    /// unless set here. kubectl sends no credentials to a plain-http
    /// server (client-go only sends them over TLS), so a test that drives
    /// kubectl under RBAC sets the identity kubectl should have here, e.g.
    /// [`UserInfo::admin`] or [`UserInfo::service_account`].
    pub fn set_anonymous_user(&self, user: UserInfo) {
        self.inner
            .shared
            .auth
            .lock()
            .expect("auth lock")
            .anonymous_user = user;
    }

    /// Turns authentication and RBAC enforcement on or off at runtime.
    /// Turning it on stores the default ClusterRoles and bindings
    /// ([`rbac::bootstrap_objects`]) that are missing.
    pub fn set_rbac(&self, on: bool) {
        self.inner.shared.auth.lock().expect("auth lock").enabled = on;
        if on {
            Self::seed_bootstrap(&self.inner.shared);
        }
    }

    /// Whether the stored RBAC policy allows `user` the request `req`
    /// (what a SubjectAccessReview would answer), regardless of whether
    /// enforcement is on.
    pub fn authorize(&self, user: &UserInfo, req: &rbac::RequestInfo) -> rbac::Decision {
        let policy = http::stored_policy(&self.store());
        rbac::authorize(&policy, user, req)
    }

    fn seed_bootstrap(shared: &Shared) {
        let mut store = shared.store.lock().expect("store lock");
        for obj in rbac::bootstrap_objects() {
            let av = obj["apiVersion"].as_str().unwrap_or("");
            let kind = obj["kind"].as_str().unwrap_or("");
            let res = resources::by_kind(av, kind).expect("RBAC types are served");
            let name = obj["metadata"]["name"].as_str().unwrap_or("");
            if store.get(res, "", name).is_err() {
                store
                    .upsert(res, obj)
                    .expect("the bootstrap objects are valid");
            }
        }
    }

    /// Writes [`FakeApiServer::kubeconfig`] (namespace `default`) to
    /// `dir/kubeconfig` and returns the path.
    pub fn write_kubeconfig(&self, dir: &Path) -> PathBuf {
        self.write_kubeconfig_ns(dir, "default")
    }

    pub fn write_kubeconfig_ns(&self, dir: &Path, namespace: &str) -> PathBuf {
        let path = dir.join("kubeconfig");
        std::fs::write(&path, self.kubeconfig(namespace)).expect("writing the kubeconfig");
        path
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.inner.shared.store.lock().expect("store lock")
    }

    fn resource(api_version: &str, kind: &str) -> &'static resources::ResourceInfo {
        resources::by_kind(api_version, kind)
            .unwrap_or_else(|| panic!("fake-apiserver does not serve {api_version} {kind}"))
    }

    /// Seeds or replaces an object (by `apiVersion`/`kind`/namespace/name)
    /// as a create or update would: rv, uid, generation assigned, watch
    /// events sent. Unlike an API create it keeps `status`, skips
    /// validation and creates a missing namespace. Returns the stored
    /// object; panics on an unserved type or an invalid name.
    pub fn insert(&self, obj: Value) -> Value {
        self.try_insert(obj)
            .unwrap_or_else(|e| panic!("fake-apiserver insert: {e}"))
    }

    pub fn try_insert(&self, obj: Value) -> Result<Value, ApiError> {
        let av = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
        let res = resources::by_kind(av, kind)
            .ok_or_else(|| ApiError::bad_request(format!("unserved type {av} {kind}")))?;
        self.store().upsert(res, obj)
    }

    /// The stored object; `namespace` is ignored for cluster-scoped kinds.
    pub fn get(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let res = Self::resource(api_version, kind);
        self.store()
            .get(res, if res.namespaced { namespace } else { "" }, name)
            .ok()
    }

    /// Stored objects of a kind, in one namespace or all.
    pub fn list(&self, api_version: &str, kind: &str, namespace: Option<&str>) -> Vec<Value> {
        let res = Self::resource(api_version, kind);
        let filter = Filter {
            namespace: namespace.map(str::to_string),
            ..Default::default()
        };
        self.store()
            .snapshot(res, &filter)
            .into_iter()
            .map(|(_, v)| v)
            .collect()
    }

    /// Removes an object at once (finalizers ignored); a DELETED event is
    /// sent. Returns whether it existed.
    pub fn delete(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> bool {
        let res = Self::resource(api_version, kind);
        self.store().remove(res, namespace, name)
    }

    /// Creates the namespace if it is missing.
    pub fn ensure_namespace(&self, name: &str) {
        self.store().ensure_namespace(name);
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.store().current_rv()
    }

    /// Forgets the watch history, like an etcd compaction: watches from any
    /// earlier resourceVersion get 410 Expired, and so do old continue
    /// tokens.
    pub fn compact(&self) {
        self.store().compact();
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.inner.shared.log.lock().expect("log lock").clone()
    }

    /// The requests with this verb (and resource, when given).
    pub fn requests_for(&self, verb: &str, resource: Option<&str>) -> Vec<RequestRecord> {
        self.requests()
            .into_iter()
            .filter(|r| {
                r.verb == verb && resource.is_none_or(|res| r.resource.as_deref() == Some(res))
            })
            .collect()
    }

    pub fn clear_requests(&self) {
        self.inner.shared.log.lock().expect("log lock").clear();
    }

    /// Waits until a logged request satisfies `pred` (including ones
    /// already logged), up to `timeout`.
    pub async fn wait_for_request(
        &self,
        timeout: Duration,
        pred: impl Fn(&RequestRecord) -> bool,
    ) -> Option<RequestRecord> {
        let shared = &self.inner.shared;
        let wait = async {
            loop {
                let notified = shared.logged.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if let Some(r) = shared
                    .log
                    .lock()
                    .expect("log lock")
                    .iter()
                    .find(|r| pred(r))
                {
                    return r.clone();
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.ok()
    }

    /// Queues a fault; rules are tried in the order given.
    pub fn fail_next(&self, rule: FaultRule) {
        self.inner
            .shared
            .faults
            .lock()
            .expect("faults lock")
            .push(rule);
    }

    pub fn clear_faults(&self) {
        self.inner
            .shared
            .faults
            .lock()
            .expect("faults lock")
            .clear();
    }

    /// Down: open connections (watches included) are closed and new ones
    /// are reset, so clients see transport errors. Up again with `false`,
    /// with the same port and state.
    pub fn set_down(&self, down: bool) {
        let _ = self.inner.down.send(down);
    }
}
