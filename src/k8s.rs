//! The thin Kubernetes edge: the few API calls pushroll makes, each counted
//! in `/metrics`, and one error type that says whether a retry can help.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::Client;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use serde_json::Value;

use crate::metrics::Metrics;
use crate::workload::{Kind, Workload};

/// The field manager pushroll's patches are recorded under.
pub(crate) const FIELD_MANAGER: &str = "pushroll";

/// A failed Kubernetes API call.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    /// RBAC refused the call; fixing RBAC and redelivering must work.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The API server refused what we sent (422, 400): a bug or an odd object.
    #[error("rejected ({code}): {message}")]
    Rejected { code: u16, message: String },
    /// 429, 5xx, timeouts, unreachable: try again later.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl KubeError {
    fn from_kube(err: kube::Error) -> KubeError {
        match err {
            kube::Error::Api(status) => {
                let message = status.message.clone();
                match status.code {
                    404 => KubeError::NotFound,
                    409 => KubeError::Conflict(message),
                    403 => KubeError::Forbidden(message),
                    400 | 422 => KubeError::Rejected {
                        code: status.code,
                        message,
                    },
                    code => {
                        KubeError::Unavailable(format!("API server answered {code}: {message}"))
                    }
                }
            }
            other => KubeError::Unavailable(other.to_string()),
        }
    }

    /// A label for `pushroll_kube_api_requests{outcome}`.
    pub fn label(&self) -> &'static str {
        match self {
            KubeError::NotFound => "not-found",
            KubeError::Conflict(_) => "conflict",
            KubeError::Forbidden(_) => "forbidden",
            KubeError::Rejected { .. } => "rejected",
            KubeError::Unavailable(_) => "unavailable",
        }
    }
}

/// Connects by kube-rs' usual inference (in-cluster, `KUBECONFIG`,
/// `~/.kube/config`). Returns the default namespace too.
///
/// Two clients: calls get `timeout` on connect, write and read, so that a
/// dead API server answers a push with 503 inside Pub/Sub's ack deadline.
/// Watches cannot have that read timeout: an idle watch sends nothing for
/// minutes, and would be cut and re-opened every `timeout`. kube-runtime's
/// watcher has an idle timeout of its own (290 s + 5 s); the watch client's
/// read timeout only bounds a list or watch that stalls beyond it.
pub async fn connect(
    timeout: Duration,
    metrics: Arc<Metrics>,
) -> Result<(Kube, String), kube::Error> {
    let config = kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)?;
    let namespace = config.default_namespace.clone();
    Ok((connect_with(config, timeout, metrics)?, namespace))
}

/// [`connect`] with a given configuration (tests and benchmarks point it at
/// a fake API server).
pub fn connect_with(
    mut config: kube::Config,
    timeout: Duration,
    metrics: Arc<Metrics>,
) -> Result<Kube, kube::Error> {
    // kube's default retry waits up to 15 times, as long as Retry-After
    // says: far past Pub/Sub's ack deadline. `Kube::call` retries briefly
    // instead, and a redelivery covers the rest.
    config.default_retry = false;
    config.connect_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    // Count the read timeout from each request, not from when its pooled
    // connection went idle.
    config.reset_reader_on_write = true;
    let mut watches = config.clone();
    config.read_timeout = Some(timeout);
    watches.read_timeout = Some(WATCH_READ_TIMEOUT);
    Ok(Kube {
        client: Client::try_from(config)?,
        watch_client: Client::try_from(watches)?,
        metrics,
    })
}

/// Past kube-runtime's own idle timeout for watches (290 s + 5 s).
const WATCH_READ_TIMEOUT: Duration = Duration::from_secs(300);

/// Bounded retries of 429/503/504 inside one delivery: two, of at most
/// `RETRY_CAP` each (honouring the server's `retryAfterSeconds` up to it).
const RETRIES: u32 = 2;
const RETRY_BASE: Duration = Duration::from_millis(100);
const RETRY_CAP: Duration = Duration::from_secs(1);

/// How long to wait before retrying `err`, or `None` when a retry cannot help.
fn retry_delay(err: &kube::Error, attempt: u32) -> Option<Duration> {
    let kube::Error::Api(status) = err else {
        return None;
    };
    if !matches!(status.code, 429 | 503 | 504) {
        return None;
    }
    let server = status
        .details
        .as_ref()
        .map(|d| Duration::from_secs(u64::from(d.retry_after_seconds)))
        .filter(|d| !d.is_zero());
    Some(
        server
            .unwrap_or(RETRY_BASE * 2u32.pow(attempt))
            .min(RETRY_CAP),
    )
}

/// The API calls pushroll makes, counted by verb, resource and outcome.
#[derive(Clone)]
pub struct Kube {
    client: Client,
    /// For lists and watches of the indexer (see [`connect`]).
    watch_client: Client,
    metrics: Arc<Metrics>,
}

fn api_resource(kind: Kind) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apps", "v1", kind.as_str()),
        kind.plural(),
    )
}

impl Kube {
    /// Makes one API call, retrying it briefly on 429/503/504, and counts
    /// every attempt by verb, resource and outcome.
    async fn call<T, F, Fut>(
        &self,
        verb: &'static str,
        resource: &'static str,
        f: F,
    ) -> Result<T, KubeError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, kube::Error>>,
    {
        let mut attempt = 0;
        loop {
            let result = f().await;
            let delay = result.as_ref().err().and_then(|e| retry_delay(e, attempt));
            let result = result.map_err(KubeError::from_kube);
            let outcome = match &result {
                Ok(_) => "success",
                Err(e) => e.label(),
            };
            self.metrics.kube.request(verb, resource, outcome);
            match delay {
                Some(delay) if attempt < RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(delay).await;
                }
                _ => return result,
            }
        }
    }

    fn workloads(&self, kind: Kind, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, &api_resource(kind))
    }

    pub(crate) async fn get_workload(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
    ) -> Result<DynamicObject, KubeError> {
        let api = self.workloads(kind, ns);
        self.call("get", kind.plural(), || api.get(name)).await
    }

    /// A strategic merge patch under pushroll's field manager.
    pub(crate) async fn patch_workload(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        patch: &Value,
    ) -> Result<DynamicObject, KubeError> {
        self.send_patch(kind, ns, name, &Patch::Strategic(patch))
            .await
    }

    /// A JSON patch (RFC 6902) under pushroll's field manager: the undo,
    /// which replaces the pod template whole.
    pub(crate) async fn json_patch_workload(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        patch: &Value,
    ) -> Result<DynamicObject, KubeError> {
        let ops: json_patch::Patch =
            serde_json::from_value(patch.clone()).map_err(|e| KubeError::Rejected {
                code: 400,
                message: format!("not a JSON patch: {e}"),
            })?;
        self.send_patch(kind, ns, name, &Patch::<&Value>::Json(ops))
            .await
    }

    async fn send_patch(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        patch: &Patch<&Value>,
    ) -> Result<DynamicObject, KubeError> {
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let api = self.workloads(kind, ns);
        self.call("patch", kind.plural(), || api.patch(name, &params, patch))
            .await
    }

    /// A Deployment's ReplicaSets (its revisions), by its selector.
    pub(crate) async fn list_replica_sets(
        &self,
        ns: &str,
        selector: &str,
    ) -> Result<Vec<k8s_openapi::api::apps::v1::ReplicaSet>, KubeError> {
        self.list_selected("replicasets", ns, selector).await
    }

    /// A StatefulSet's or DaemonSet's ControllerRevisions, by its selector.
    pub(crate) async fn list_controller_revisions(
        &self,
        ns: &str,
        selector: &str,
    ) -> Result<Vec<k8s_openapi::api::apps::v1::ControllerRevision>, KubeError> {
        self.list_selected("controllerrevisions", ns, selector)
            .await
    }

    /// One LIST of `resource` in `ns` by a label selector.
    async fn list_selected<K>(
        &self,
        resource: &'static str,
        ns: &str,
        selector: &str,
    ) -> Result<Vec<K>, KubeError>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), ns);
        let params = ListParams::default().labels(selector);
        self.call("list", resource, || api.list(&params))
            .await
            .map(|list| list.items)
    }

    pub(crate) async fn create_event(&self, event: &Event) -> Result<(), KubeError> {
        let ns = event.metadata.namespace.as_deref().unwrap_or("default");
        let api: Api<Event> = Api::namespaced(self.client.clone(), ns);
        let params = PostParams::default();
        self.call("create", "events", || api.create(&params, event))
            .await
            .map(drop)
    }

    /// The pods of one workload, by its selector (the follower's one call
    /// per finished rollout).
    pub(crate) async fn list_pods(
        &self,
        ns: &str,
        selector: &str,
    ) -> Result<Vec<k8s_openapi::api::core::v1::Pod>, KubeError> {
        self.list_selected("pods", ns, selector).await
    }

    pub(crate) async fn get_lease(&self, ns: &str, name: &str) -> Result<Lease, KubeError> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), ns);
        self.call("get", "leases", || api.get(name)).await
    }

    /// Creates an empty Lease (as the lease library does at start), for
    /// when it has been deleted since; one that exists already is fine.
    pub(crate) async fn create_lease(&self, ns: &str, name: &str) -> Result<(), KubeError> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), ns);
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            spec: None,
        };
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        match self
            .call("create", "leases", || api.create(&params, &lease))
            .await
        {
            Ok(_) | Err(KubeError::Conflict(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn get_configmap(&self, ns: &str, name: &str) -> Result<ConfigMap, KubeError> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
        self.call("get", "configmaps", || api.get(name)).await
    }
}

/// Page size of list calls.
pub(crate) const LIST_PAGE: u32 = 500;

impl Kube {
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The client for watches: no short read timeout (see [`connect`]).
    pub(crate) fn watch_client(&self) -> &Client {
        &self.watch_client
    }

    /// Lists every `W` in `namespace` (or all namespaces), page by page,
    /// from the API server's cache (`resourceVersion=0`), handing each
    /// object to `each` so that only one page is held at a time.
    pub(crate) async fn list_each<W: Workload>(
        &self,
        namespace: Option<&str>,
        mut each: impl FnMut(&W),
    ) -> Result<(), KubeError> {
        let api: Api<W> = match namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        let resource = W::KIND.plural();
        let mut token: Option<String> = None;
        loop {
            let mut params = ListParams::default().limit(LIST_PAGE);
            params = match &token {
                Some(t) => params.continue_token(t),
                None => params.match_any(),
            };
            let page = self.call("list", resource, || api.list(&params)).await?;
            page.items.iter().for_each(&mut each);
            token = page.metadata.continue_.filter(|t| !t.is_empty());
            if token.is_none() {
                return Ok(());
            }
        }
    }

    /// Creates or updates a ConfigMap with what `fill` puts in it, unless
    /// `same` says the existing one already holds it. Returns whether it
    /// wrote. A new ConfigMap is labelled as managed by pushroll.
    pub(crate) async fn write_configmap(
        &self,
        namespace: &str,
        name: &str,
        same: impl Fn(&ConfigMap) -> bool,
        fill: impl FnOnce(&mut ConfigMap),
    ) -> Result<bool, KubeError> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        let existing = match self.call("get", "configmaps", || api.get(name)).await {
            Ok(existing) => Some(existing),
            Err(KubeError::NotFound) => None,
            Err(e) => return Err(e),
        };
        let mut object = match existing {
            Some(existing) if same(&existing) => return Ok(false),
            Some(existing) => existing,
            None => ConfigMap {
                metadata: ObjectMeta {
                    name: Some(name.to_owned()),
                    namespace: Some(namespace.to_owned()),
                    labels: Some(
                        [(
                            "app.kubernetes.io/managed-by".to_owned(),
                            FIELD_MANAGER.to_owned(),
                        )]
                        .into(),
                    ),
                    ..ObjectMeta::default()
                },
                ..ConfigMap::default()
            },
        };
        fill(&mut object);
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        if object.metadata.resource_version.is_some() {
            // The resourceVersion makes a concurrent writer's update fail
            // with 409 instead of being silently overwritten.
            self.call("update", "configmaps", || {
                api.replace(name, &params, &object)
            })
            .await?;
        } else {
            self.call("create", "configmaps", || api.create(&params, &object))
                .await?;
        }
        Ok(true)
    }
}

/// The core/v1 Event that tells `kubectl describe` why a workload rolled.
pub fn restart_event(
    kind: Kind,
    obj: &DynamicObject,
    image: &str,
    digest: &str,
    message_id: Option<&str>,
    now: jiff::Timestamp,
) -> Event {
    let message = match message_id {
        Some(id) => format!("Restarted for a push of {image} ({digest}), Pub/Sub message {id}"),
        None => format!("Restarted for a push of {image} ({digest})"),
    };
    workload_event(kind, &obj.metadata, EventKind::Restart, message, now)
}

/// The Events pushroll records on workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum EventKind {
    /// `PushRestart` (Normal): rolled for a push.
    Restart,
    /// `PushRestartRejected` (Warning): the API server refused the patch.
    Rejected,
    /// `PushPullPolicy` (Warning): restarted, but a matching container's
    /// pull policy may keep the cached, old image.
    PullPolicy,
    /// `PushRolloutComplete` (Normal): every replica updated and available.
    RolloutComplete,
    /// `PushRolloutFailed` (Warning): past its progress deadline or the
    /// rollout timeout.
    RolloutFailed,
    /// `PushImageStale` (Warning): complete, but pods run another digest.
    ImageStale,
    /// `PushDeferred` (Normal): the push waits (`pushroll.io/pending`): why,
    /// and until when.
    Deferred,
    /// `PushApproved` (Normal): an approved push rolled.
    Approved,
    /// `PushPolicyInvalid` (Warning): a policy annotation does not parse;
    /// pushes wait.
    PolicyInvalid,
    /// `PushRolloutUndone` (Normal): a failed rollout's previous template
    /// was put back.
    RolloutUndone,
}

impl EventKind {
    fn reason_and_type(self) -> (&'static str, &'static str) {
        match self {
            EventKind::Restart => ("PushRestart", "Normal"),
            EventKind::Rejected => ("PushRestartRejected", "Warning"),
            EventKind::PullPolicy => ("PushPullPolicy", "Warning"),
            EventKind::RolloutComplete => ("PushRolloutComplete", "Normal"),
            EventKind::RolloutFailed => ("PushRolloutFailed", "Warning"),
            EventKind::ImageStale => ("PushImageStale", "Warning"),
            EventKind::Deferred => ("PushDeferred", "Normal"),
            EventKind::Approved => ("PushApproved", "Normal"),
            EventKind::PolicyInvalid => ("PushPolicyInvalid", "Warning"),
            EventKind::RolloutUndone => ("PushRolloutUndone", "Normal"),
        }
    }

    pub(crate) fn reason(self) -> &'static str {
        self.reason_and_type().0
    }
}

/// A core/v1 Event about the workload `meta`, as kubectl's recorder would
/// write it.
pub(crate) fn workload_event(
    kind: Kind,
    meta: &ObjectMeta,
    what: EventKind,
    message: String,
    now: jiff::Timestamp,
) -> Event {
    // kubectl's recorder names events `<object>.<hex nanoseconds>`.
    let name = format!(
        "{}.{:x}",
        meta.name.as_deref().unwrap_or_default(),
        now.as_nanosecond()
    );
    named_event(kind, meta, what, name, message, now)
}

/// The Event of a rollout's end for `digest`: its name is derived from the
/// workload, the reason and the digest, so that every replica, restart and
/// leader that reports it writes the same object, and all but the first
/// get 409 (at most once per workload and digest).
pub(crate) fn rollout_event(
    kind: Kind,
    meta: &ObjectMeta,
    what: EventKind,
    digest: &str,
    message: String,
    now: jiff::Timestamp,
) -> Event {
    use sha2::Digest as _;
    let workload = meta.name.as_deref().unwrap_or_default();
    let hash = sha2::Sha256::digest(format!("{kind}/{workload}/{digest}").as_bytes());
    let hex: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
    let suffix = format!("{}.{hex}", what.reason().to_ascii_lowercase());
    // An Event name is a DNS subdomain of at most 253 characters.
    let room = 253 - suffix.len() - 1;
    let head = workload[..workload.len().min(room)].trim_end_matches(['.', '-']);
    let name = format!("{head}.{suffix}");
    named_event(kind, meta, what, name, message, now)
}

fn named_event(
    kind: Kind,
    meta: &ObjectMeta,
    what: EventKind,
    event_name: String,
    message: String,
    now: jiff::Timestamp,
) -> Event {
    let ns = meta.namespace.clone().unwrap_or_default();
    let name = meta.name.clone().unwrap_or_default();
    let (reason, type_) = what.reason_and_type();
    Event {
        metadata: ObjectMeta {
            name: Some(event_name),
            namespace: Some(ns.clone()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("apps/v1".into()),
            kind: Some(kind.as_str().into()),
            name: Some(name),
            namespace: Some(ns),
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
            ..ObjectReference::default()
        },
        reason: Some(reason.into()),
        type_: Some(type_.into()),
        message: Some(message),
        count: Some(1),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        event_time: None::<MicroTime>,
        source: Some(EventSource {
            component: Some(FIELD_MANAGER.into()),
            ..EventSource::default()
        }),
        reporting_component: Some(FIELD_MANAGER.into()),
        reporting_instance: Pod::from_env().instance(),
        ..Event::default()
    }
}

/// This pod, from the Downward API variables the manifests set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pod {
    /// `POD_NAME`.
    pub name: Option<String>,
    /// `POD_NAMESPACE`.
    pub namespace: Option<String>,
    /// `HOSTNAME`: the pod's name too, when the manifests set no `POD_NAME`.
    hostname: Option<String>,
}

impl Pod {
    pub(crate) fn from_env() -> Pod {
        let var = |name| std::env::var(name).ok().filter(|s| !s.is_empty());
        Pod {
            name: var("POD_NAME"),
            namespace: var("POD_NAMESPACE"),
            hostname: var("HOSTNAME"),
        }
    }

    /// Who reports an Event: the pod, by either name.
    pub fn instance(&self) -> Option<String> {
        self.name.clone().or_else(|| self.hostname.clone())
    }
}
