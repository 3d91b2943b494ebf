//! A cluster for end-to-end tests: the project's fake API server, or a real
//! kube-apiserver when `PUSHROLL_REAL_KUBECONFIG` names one (set by
//! `.ci/run` after `scripts/kube-real.sh start`). Tests seed and read it
//! through kube-rs, so one test definition runs against both; what only the
//! fake can do (request log, fault injection) is behind `fake()`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use fake_apiserver::FakeApiServer;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::config::Kubeconfig;
use serde_json::{Value, json};

/// Defines, for each scenario `async fn name(c: Cluster)`, a module `name`
/// with a test on the fake and one on the real API server (skipped with a
/// message when none is configured): one test definition, two servers.
#[allow(unused_macros)] // not every test binary has scenarios for both
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn fake() {
                super::$name(crate::support::cluster::Cluster::fake().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn real() {
                if let Some(c) = crate::support::cluster::Cluster::real().await {
                    super::$name(c).await;
                }
            }
        }
    )*};
}

/// As `on_both!`, but the real-server test gets a private control plane of
/// its own (`Cluster::real_private`): for scenarios that change the whole
/// cluster (restart the API server, rewrite the ServiceAccounts' roles),
/// which would break the other tests sharing the one in `PUSHROLL_REAL_*`.
#[allow(unused_macros)]
macro_rules! on_both_private {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn fake() {
                super::$name(crate::support::cluster::Cluster::fake().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn real() {
                if let Some(c) = crate::support::cluster::Cluster::real_private().await {
                    super::$name(c).await;
                }
            }
        }
    )*};
}

/// Which API server a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Fake,
    Real,
}

pub struct Cluster {
    pub backend: Backend,
    pub kubeconfig: PathBuf,
    pub client: kube::Client,
    fake: Option<FakeApiServer>,
    suffix: String,
    /// The `PUSHROLL_REAL_*` settings of the real server (empty on the fake).
    real_env: BTreeMap<String, String>,
    _dir: tempfile::TempDir,
    /// A private control plane, stopped on drop (`real_private`).
    _private: Option<PrivatePlane>,
}

/// A control plane started by `scripts/kube-real.sh start` for one test.
struct PrivatePlane {
    state: PathBuf,
}

const KUBE_REAL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kube-real.sh");

impl PrivatePlane {
    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new("bash");
        cmd.arg(KUBE_REAL).args(args);
        // Its own "most recent cluster" file: the shared one stays as is.
        cmd.env("PUSHROLL_KUBE_CURRENT_FILE", self.state.join("current"));
        cmd
    }
}

impl Drop for PrivatePlane {
    fn drop(&mut self) {
        // Logs are kept when the test failed.
        let state = self.state.to_string_lossy().into_owned();
        let args: &[&str] = if std::thread::panicking() {
            eprintln!("private control plane: logs kept in {state}/logs");
            &["stop", &state]
        } else {
            &["stop", &state, "--purge"]
        };
        match self.command(args).output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "private control plane: stop failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("private control plane: running kube-real.sh stop: {e}"),
        }
    }
}

fn resource(kind: &str) -> (ApiResource, bool) {
    let (group, version, plural, namespaced) = match kind {
        "Deployment" => ("apps", "v1", "deployments", true),
        "StatefulSet" => ("apps", "v1", "statefulsets", true),
        "DaemonSet" => ("apps", "v1", "daemonsets", true),
        "ReplicaSet" => ("apps", "v1", "replicasets", true),
        "ConfigMap" => ("", "v1", "configmaps", true),
        "Event" => ("", "v1", "events", true),
        "Pod" => ("", "v1", "pods", true),
        "Namespace" => ("", "v1", "namespaces", false),
        "ServiceAccount" => ("", "v1", "serviceaccounts", true),
        "Lease" => ("coordination.k8s.io", "v1", "leases", true),
        "Role" => ("rbac.authorization.k8s.io", "v1", "roles", true),
        "RoleBinding" => ("rbac.authorization.k8s.io", "v1", "rolebindings", true),
        "ClusterRole" => ("rbac.authorization.k8s.io", "v1", "clusterroles", false),
        "ClusterRoleBinding" => (
            "rbac.authorization.k8s.io",
            "v1",
            "clusterrolebindings",
            false,
        ),
        other => panic!("unknown kind {other}"),
    };
    (
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural),
        namespaced,
    )
}

static UNIQUE: AtomicU32 = AtomicU32::new(0);

/// Whether `PUSHROLL_REAL_KUBECONFIG` names a real server; without one,
/// prints `SKIPPED` (a failure under `PUSHROLL_REQUIRE_REAL=1`).
fn real_configured() -> bool {
    if std::env::var_os("PUSHROLL_REAL_KUBECONFIG").is_some() {
        return true;
    }
    assert!(
        std::env::var("PUSHROLL_REQUIRE_REAL").as_deref() != Ok("1"),
        "PUSHROLL_REQUIRE_REAL=1 but PUSHROLL_REAL_KUBECONFIG is not set"
    );
    eprintln!(
        "SKIPPED: no real kube-apiserver (set PUSHROLL_REAL_KUBECONFIG; .ci/run starts one with scripts/kube-real.sh)"
    );
    false
}

impl Cluster {
    /// Starts a fresh fake API server.
    pub async fn fake() -> Cluster {
        super::init();
        // RBAC on, as on a real cluster: the admin kubeconfig bypasses it
        // (system:masters), ServiceAccounts get what deploy/ grants them.
        let server = FakeApiServer::start_with(fake_apiserver::Options {
            rbac: true,
            ..Default::default()
        });
        // kubectl sends no token over plain http (client-go sends
        // credentials only over TLS): take anonymous requests as the admin's.
        server.set_anonymous_user(fake_apiserver::rbac::UserInfo::admin());
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = server.write_kubeconfig(dir.path());
        let client = client_for(Kubeconfig::read_from(&kubeconfig).unwrap()).await;
        Cluster {
            backend: Backend::Fake,
            kubeconfig,
            client,
            fake: Some(server),
            suffix: String::new(),
            real_env: BTreeMap::new(),
            _dir: dir,
            _private: None,
        }
    }

    /// The real API server named by `PUSHROLL_REAL_KUBECONFIG`, or `None`
    /// (with a message) when there is none. Under CI with
    /// `PUSHROLL_REQUIRE_REAL=1`, its absence is a failure.
    pub async fn real() -> Option<Cluster> {
        super::init();
        if !real_configured() {
            return None;
        }
        let real_env = std::env::vars()
            .filter(|(k, _)| k.starts_with("PUSHROLL_REAL_"))
            .collect();
        Some(Self::real_at(real_env, None).await)
    }

    /// A control plane of this test's own, started with
    /// `scripts/kube-real.sh start` (the binaries the shared one runs) and
    /// stopped when the `Cluster` is dropped; `None`, as `real()`, when no
    /// real server is configured. For tests that change the whole cluster.
    pub async fn real_private() -> Option<Cluster> {
        super::init();
        if !real_configured() {
            return None;
        }
        let plane = PrivatePlane {
            state: tempfile::Builder::new()
                .prefix("pushroll-kube-private.")
                .tempdir()
                .unwrap()
                .keep(),
        };
        let state = plane.state.to_string_lossy().into_owned();
        let started = std::time::Instant::now();
        let out = tokio::task::spawn_blocking({
            let mut cmd = plane.command(&["start", &state]);
            move || cmd.output()
        })
        .await
        .unwrap()
        .expect("running scripts/kube-real.sh start");
        assert!(
            out.status.success(),
            "private control plane: kube-real.sh start failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "private control plane in {state}: ready after {:?}",
            started.elapsed()
        );
        let env = std::fs::read_to_string(plane.state.join("env")).unwrap();
        let real_env = env
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Some(Self::real_at(real_env, Some(plane)).await)
    }

    async fn real_at(real_env: BTreeMap<String, String>, private: Option<PrivatePlane>) -> Cluster {
        let path = real_env
            .get("PUSHROLL_REAL_KUBECONFIG")
            .expect("PUSHROLL_REAL_KUBECONFIG");
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = PathBuf::from(path);
        let client = client_for(Kubeconfig::read_from(&kubeconfig).unwrap()).await;
        // Tests share one real server: give each its own namespaces (the
        // counter makes them unique per test within this process, the pid
        // across processes).
        let suffix = format!(
            "-{}-{}",
            std::process::id(),
            UNIQUE.fetch_add(1, Ordering::SeqCst)
        );
        Cluster {
            backend: Backend::Real,
            kubeconfig,
            client,
            fake: None,
            suffix,
            real_env,
            _dir: dir,
            _private: private,
        }
    }

    /// A `PUSHROLL_REAL_*` setting of this real server.
    pub fn real_env(&self, key: &str) -> Option<&str> {
        self.real_env.get(key).map(String::as_str)
    }

    /// The fake, for its request log and fault injection.
    pub fn fake_server(&self) -> Option<&FakeApiServer> {
        self.fake.as_ref()
    }

    /// A namespace name unique to this test on a shared server.
    pub fn ns(&self, base: &str) -> String {
        format!("{base}{}", self.suffix)
    }

    fn api(&self, kind: &str, namespace: Option<&str>) -> Api<DynamicObject> {
        let (ar, namespaced) = resource(kind);
        match (namespaced, namespace) {
            (true, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &ar),
            (true, None) => Api::all_with(self.client.clone(), &ar),
            (false, _) => Api::all_with(self.client.clone(), &ar),
        }
    }

    pub async fn ensure_namespace(&self, ns: &str) {
        let api = self.api("Namespace", None);
        if api.get_opt(ns).await.unwrap().is_none() {
            let obj: DynamicObject = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}
            }))
            .unwrap();
            api.create(&PostParams::default(), &obj).await.unwrap();
        }
    }

    /// Creates an object (and its namespace).
    pub async fn create(&self, obj: Value) -> Value {
        let kind = obj["kind"].as_str().unwrap().to_owned();
        let ns = obj["metadata"]["namespace"].as_str().map(str::to_owned);
        if let Some(ns) = &ns {
            self.ensure_namespace(ns).await;
        }
        let dynamic: DynamicObject = serde_json::from_value(obj).unwrap();
        let created = self
            .api(&kind, ns.as_deref())
            .create(&PostParams::default(), &dynamic)
            .await
            .unwrap_or_else(|e| panic!("creating {kind}: {e}"));
        serde_json::to_value(created).unwrap()
    }

    /// Creates a Deployment with one container `app` running `image`.
    pub async fn deploy(&self, ns: &str, name: &str, image: &str) -> Value {
        self.create(workload(
            "Deployment",
            ns,
            name,
            &[("app", image)],
            &[],
            json!({}),
        ))
        .await
    }

    pub async fn get(&self, kind: &str, ns: &str, name: &str) -> Option<Value> {
        self.api(kind, Some(ns))
            .get_opt(name)
            .await
            .unwrap()
            .map(|o| serde_json::to_value(o).unwrap())
    }

    pub async fn list(&self, kind: &str, ns: &str) -> Vec<Value> {
        self.api(kind, Some(ns))
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|o| serde_json::to_value(o).unwrap())
            .collect()
    }

    pub async fn delete(&self, kind: &str, ns: &str, name: &str) {
        let _ = self
            .api(kind, Some(ns))
            .delete(name, &DeleteParams::default())
            .await;
    }

    /// Creates or replaces any object (server-side apply, forced).
    pub async fn apply(&self, obj: &Value) {
        let kind = obj["kind"].as_str().unwrap().to_owned();
        let name = obj["metadata"]["name"].as_str().unwrap().to_owned();
        let ns = obj["metadata"]["namespace"].as_str().map(str::to_owned);
        if let Some(ns) = &ns {
            self.ensure_namespace(ns).await;
        }
        let params = PatchParams::apply("pushroll-tests").force();
        self.api(&kind, ns.as_deref())
            .patch(&name, &params, &Patch::Apply(obj))
            .await
            .unwrap_or_else(|e| panic!("applying {kind} {name}: {e}"));
    }

    /// A kubeconfig that authenticates as the ServiceAccount `pushroll/<name>`
    /// (`pushroll` for serve, `pushroll-indexer`).
    pub fn service_account_kubeconfig(&self, name: &str) -> PathBuf {
        match &self.fake {
            Some(fake) => {
                let token = fake.add_service_account("pushroll", name);
                fake.write_kubeconfig_for(self._dir.path(), &token)
            }
            None => {
                let var = match name {
                    "pushroll" => "PUSHROLL_REAL_KUBECONFIG_SERVE",
                    "pushroll-indexer" => "PUSHROLL_REAL_KUBECONFIG_INDEXER",
                    other => panic!("no identity for {other}"),
                };
                self.real_env(var)
                    .map(PathBuf::from)
                    .unwrap_or_else(|| panic!("{var} is not set (scripts/kube-real.sh writes it)"))
            }
        }
    }

    /// Grants the serve ServiceAccount exactly what `deploy/` grants it and
    /// returns its kubeconfig.
    pub async fn serve_identity(&self) -> PathBuf {
        for obj in deploy_objects("rbac-serve.yaml") {
            self.apply(&obj).await;
        }
        self.service_account_kubeconfig("pushroll")
    }

    /// A merge patch, for tests that change objects behind pushroll's back.
    pub async fn merge_patch(&self, kind: &str, ns: &str, name: &str, patch: Value) {
        self.api(kind, Some(ns))
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    /// Replaces `kind/name`'s status with what `status` makes of the
    /// object, as its controller would (the fake has no controllers).
    pub async fn put_status(
        &self,
        kind: &str,
        ns: &str,
        name: &str,
        status: impl Fn(&Value) -> Value,
    ) {
        let api = self.api(kind, Some(ns));
        let mut obj = self
            .get(kind, ns, name)
            .await
            .unwrap_or_else(|| panic!("no {kind} {ns}/{name}"));
        obj["status"] = status(&obj);
        api.replace_status(
            name,
            &PostParams::default(),
            &serde_json::from_value::<DynamicObject>(obj).unwrap(),
        )
        .await
        .unwrap_or_else(|e| panic!("status of {kind} {ns}/{name}: {e}"));
    }

    /// Writes (creates or replaces) the index ConfigMap.
    pub async fn write_index_configmap(&self, ns: &str, name: &str, index: &Value) {
        self.ensure_namespace(ns).await;
        let api = self.api("ConfigMap", Some(ns));
        let obj = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns},
            "data": {"index.json": index.to_string()}
        });
        match api.get_opt(name).await.unwrap() {
            Some(_) => {
                api.patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(&json!({"data": obj["data"]})),
                )
                .await
                .unwrap();
            }
            None => {
                let dynamic: DynamicObject = serde_json::from_value(obj).unwrap();
                api.create(&PostParams::default(), &dynamic).await.unwrap();
            }
        }
    }
}

/// A kube-rs client for `kubeconfig` (its current context).
pub async fn client_for(kubeconfig: Kubeconfig) -> kube::Client {
    kube::Client::try_from(config_for(kubeconfig).await).unwrap()
}

/// The client configuration `client_for` builds on.
pub async fn config_for(kubeconfig: Kubeconfig) -> kube::Config {
    kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap()
}

/// A workload of `kind` with `containers` (name, image) and optionally
/// `init` containers and annotations.
pub fn workload(
    kind: &str,
    ns: &str,
    name: &str,
    containers: &[(&str, &str)],
    init: &[(&str, &str)],
    annotations: Value,
) -> Value {
    let list = |cs: &[(&str, &str)]| -> Vec<Value> {
        cs.iter()
            .map(|(n, i)| json!({"name": n, "image": i}))
            .collect()
    };
    let mut spec = json!({
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": list(containers)}
        }
    });
    if !init.is_empty() {
        spec["template"]["spec"]["initContainers"] = json!(list(init));
    }
    if kind == "StatefulSet" {
        spec["serviceName"] = json!(name);
    }
    json!({
        "apiVersion": "apps/v1", "kind": kind,
        "metadata": {"name": name, "namespace": ns, "annotations": annotations},
        "spec": spec
    })
}

/// The index JSON for `image` → `(kind, ns, name, containers)`.
pub fn index_for(image: &str, entries: &[(&str, &str, &str, &[&str])]) -> Value {
    let ws: Vec<Value> = entries
        .iter()
        .map(|(k, ns, n, cs)| json!({"kind": k, "namespace": ns, "name": n, "containers": cs}))
        .collect();
    json!({"version": 1, "generatedAt": "2026-11-26T12:00:00Z", "images": {image: ws}})
}

/// The objects of one `deploy/base` file.
pub fn deploy_objects(file: &str) -> Vec<Value> {
    use serde::Deserialize as _;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/base")
        .join(file);
    let text = std::fs::read_to_string(path).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}
