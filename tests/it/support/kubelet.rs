//! A simulated kubelet for the real kube-apiserver + kube-controller-manager
//! that `scripts/kube-real.sh` starts: that cluster has no nodes and no
//! scheduler, so without this every pod stays Pending and no rollout ever
//! finishes. `SimKubelet` registers Nodes, binds pods to them, reports them
//! Running and Ready with the `imageID` a runtime would report, and removes
//! terminating pods; the real controllers then do the real rollout (surge,
//! revisions, `ProgressDeadlineExceeded`).
//!
//! Which digest a container runs comes from a simulated registry (tag →
//! digest, moved by the test before it publishes a push) and a per-node
//! image cache that honours `imagePullPolicy`, so the `IfNotPresent` trap
//! (a node that already holds `R:T` starts the old image) really happens.
//!
//! Only for the real backend: the fake API server has no controllers.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Container, Node, Pod};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, Preconditions,
};
use kube::runtime::watcher;
use serde_json::{Value, json};

use super::REPO;
use super::cluster::{Backend, Cluster};

/// The label every simulated Node carries, with the kubelet's id as value:
/// a DaemonSet selects exactly one kubelet's nodes with it, whatever else
/// runs on the shared server.
pub const NODE_LABEL: &str = "sim.pushroll.io/kubelet";
const MANAGER: &str = "pushroll-sim-kubelet";

static KUBELETS: AtomicU32 = AtomicU32::new(0);

/// One container of a pod, as the kubelet reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningImage {
    pub pod: String,
    pub node: String,
    pub container: String,
    /// `spec.containers[].image`
    pub image: String,
    /// `status.containerStatuses[].imageID` (`REPO@sha256:…`), empty when
    /// the image could not be pulled.
    pub image_id: String,
    /// The digest part of `image_id`.
    pub digest: String,
    pub ready: bool,
}

#[derive(Default)]
struct State {
    /// `repo:tag` (normalized) → digest.
    registry: HashMap<String, String>,
    /// node → reference (`repo:tag` or `repo@digest`) → digest.
    caches: HashMap<String, HashMap<String, String>>,
    crashing: HashSet<String>,
    /// Pod uid → (node, controlling owner's uid), for pods bound and not gone.
    placed: HashMap<String, (String, String)>,
    /// Pod uids whose status has been reported.
    reported: HashSet<String>,
    /// For pod IPs.
    started: u32,
    /// What the kubelet did, for failure messages.
    log: Vec<String>,
}

impl State {
    fn note(&mut self, line: String) {
        let at = jiff::Timestamp::now().strftime("%H:%M:%S%.3f");
        self.log.push(format!("{at} {line}"));
    }
}

pub struct SimKubelet {
    id: String,
    nodes: Vec<String>,
    namespaces: Vec<String>,
    state: Arc<Mutex<State>>,
    client: kube::Client,
    kubeconfig: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl SimKubelet {
    /// Registers `nodes` Ready Nodes and runs the pods of `namespaces` on
    /// them. `None` on the fake backend, which has no controllers to drive.
    pub async fn start(c: &Cluster, namespaces: &[&str], nodes: usize) -> Option<SimKubelet> {
        if c.backend != Backend::Real {
            return None;
        }
        let id = format!(
            "sim-{}-{}",
            std::process::id(),
            KUBELETS.fetch_add(1, Ordering::SeqCst)
        );
        let names: Vec<String> = (0..nodes).map(|i| format!("{id}-node-{i}")).collect();
        for (i, name) in names.iter().enumerate() {
            register_node(&c.client, &id, name, i).await;
        }
        for ns in namespaces {
            c.ensure_namespace(ns).await;
        }
        let state = Arc::new(Mutex::new(State::default()));
        for n in &names {
            state
                .lock()
                .unwrap()
                .caches
                .insert(n.clone(), HashMap::new());
        }
        let run = Runner {
            client: c.client.clone(),
            nodes: names.clone(),
            namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
            state: state.clone(),
        };
        let (listed_tx, listed_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(run.run(listed_tx));
        // Pods created after this are seen as watch events, never missed.
        tokio::time::timeout(Duration::from_secs(30), listed_rx)
            .await
            .expect("the simulated kubelet's pod watch did not list within 30 s")
            .expect("the simulated kubelet's task ended before listing");
        Some(SimKubelet {
            id,
            nodes: names,
            namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
            state,
            client: c.client.clone(),
            kubeconfig: c.kubeconfig.clone(),
            task,
        })
    }

    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// A `nodeSelector` for exactly this kubelet's nodes (for DaemonSets).
    pub fn node_selector(&self) -> Value {
        json!({ NODE_LABEL: self.id })
    }

    /// Points `image` (`repo:tag`) at `digest` in the registry, as a push
    /// does. Nodes that already pulled the tag keep what they have.
    pub fn push(&self, image: &str, digest: &str) {
        assert!(digest.starts_with("sha256:"), "digest {digest}");
        let r = ImageRef::parse(image);
        assert!(r.digest.is_none(), "push a tag, not a digest: {image}");
        let mut s = self.state.lock().unwrap();
        s.registry.insert(r.tagged(), digest.to_owned());
        s.note(format!("registry: {} -> {digest}", r.tagged()));
    }

    /// Containers running `digest` start but never become ready.
    pub fn crash(&self, digest: &str) {
        self.state
            .lock()
            .unwrap()
            .crashing
            .insert(digest.to_owned());
    }

    /// Puts `image` (`repo:tag`) at `digest` in `node`'s image cache, as if
    /// an earlier pod had pulled it there.
    pub fn prewarm(&self, node: &str, image: &str, digest: &str) {
        let key = ImageRef::parse(image).key();
        let mut s = self.state.lock().unwrap();
        s.caches
            .get_mut(node)
            .unwrap_or_else(|| panic!("{node} is not a node of this kubelet"))
            .insert(key, digest.to_owned());
    }

    /// What `node`'s cache holds for `image`.
    pub fn cached(&self, node: &str, image: &str) -> Option<String> {
        let key = ImageRef::parse(image).key();
        self.state
            .lock()
            .unwrap()
            .caches
            .get(node)?
            .get(&key)
            .cloned()
    }

    /// Everything the kubelet did so far, one line per action.
    pub fn log(&self) -> String {
        self.state.lock().unwrap().log.join("\n")
    }

    /// The containers of the live (not terminating) pods of workload
    /// `kind/name`, as their status reports them.
    pub async fn running(&self, kind: &str, ns: &str, name: &str) -> Vec<RunningImage> {
        running(&self.client, kind, ns, name).await
    }

    /// The digests the live pods of `kind/name` run, one per container.
    pub async fn digests(&self, kind: &str, ns: &str, name: &str) -> Vec<String> {
        self.running(kind, ns, name)
            .await
            .into_iter()
            .map(|r| r.digest)
            .collect()
    }
}

impl SimKubelet {
    /// Deletes the namespaces this kubelet serves (each test's own) and
    /// their pods at once, then (on drop) the nodes.
    /// Without it, the workloads left behind keep the shared
    /// controller-manager busy re-creating pods that the pod GC deletes
    /// from the vanished nodes, and later rollouts there slow down.
    pub async fn stop(self) {
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.client.clone());
        let now = DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        for ns in &self.namespaces {
            let _ = namespaces.delete(ns, &DeleteParams::default()).await;
            // A terminating namespace takes no new pods, so what is there
            // now is all; the namespace controller would take seconds
            // to get to them.
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
            if let Err(e) = pods.delete_collection(&now, &ListParams::default()).await {
                eprintln!("simulated kubelet: deleting the pods of {ns}: {e}");
            }
        }
    }
}

impl Drop for SimKubelet {
    fn drop(&mut self) {
        self.task.abort();
        // Nodes are cluster-wide and outlive the test otherwise (every
        // DaemonSet of later tests would want a pod on them). Drop cannot
        // await, so delete them from a thread with its own runtime.
        let (nodes, kubeconfig) = (self.nodes.clone(), self.kubeconfig.clone());
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let config = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
                let client = super::cluster::client_for(config).await;
                let api: Api<Node> = Api::all(client);
                for n in nodes {
                    let _ = api.delete(&n, &DeleteParams::default()).await;
                }
            });
        });
        let _ = done.join();
    }
}

async fn register_node(client: &kube::Client, id: &str, name: &str, index: usize) {
    let api: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            NODE_LABEL: id,
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
        }},
    }))
    .unwrap();
    api.create(&PostParams::default(), &node)
        .await
        .unwrap_or_else(|e| panic!("creating node {name}: {e}"));
    let now = now();
    let resources =
        json!({"cpu": "16", "memory": "64Gi", "pods": "110", "ephemeral-storage": "100Gi"});
    let cond = |t: &str, status: &str, reason: &str| {
        json!({"type": t, "status": status, "reason": reason, "message": "simulated",
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    let status = json!({"status": {
        "capacity": resources, "allocatable": resources,
        "conditions": [
            cond("Ready", "True", "KubeletReady"),
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID"),
        ],
        "addresses": [{"type": "InternalIP", "address": host_ip(index)}, {"type": "Hostname", "address": name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "machineID": id, "systemUUID": id, "bootID": id,
            "kernelVersion": "6.1.0", "osImage": "simulated", "containerRuntimeVersion": "containerd://1.4.3",
            "kubeletVersion": "v1.20.2", "kubeProxyVersion": "v1.20.2",
            "operatingSystem": "linux", "architecture": "amd64",
        },
    }});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap_or_else(|e| panic!("reporting node {name} Ready: {e}"));
    // TaintNodesByCondition tainted the node not-ready:NoSchedule at
    // creation; the node lifecycle controller that would lift it does not
    // run, and DaemonSet pods do not tolerate it.
    let cleared = api
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"taints": null}})),
        )
        .await
        .unwrap_or_else(|e| panic!("clearing node {name}'s taints: {e}"));
    let taints = cleared.spec.and_then(|s| s.taints).unwrap_or_default();
    assert!(taints.is_empty(), "node {name} still tainted: {taints:?}");
}

fn host_ip(index: usize) -> String {
    format!("10.0.{}.{}", index / 250, index % 250 + 1)
}

fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap()
        .to_string()
}

/// The watch loop: everything the kubelet does happens in response to a
/// pod event.
struct Runner {
    client: kube::Client,
    nodes: Vec<String>,
    namespaces: HashSet<String>,
    state: Arc<Mutex<State>>,
}

impl Runner {
    async fn run(self, listed: tokio::sync::oneshot::Sender<()>) {
        use kube::runtime::WatchStreamExt as _;
        let api: Api<Pod> = Api::all(self.client.clone());
        let mut listed = Some(listed);
        let mut events = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => {
                    self.handle(pod).await
                }
                Ok(watcher::Event::Delete(pod)) => self.forget(&pod),
                Ok(watcher::Event::InitDone) => {
                    if let Some(tx) = listed.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(watcher::Event::Init) => {}
                Err(e) => self.note(format!("watch error: {e}")),
            }
        }
    }

    fn note(&self, line: String) {
        self.state.lock().unwrap().note(line);
    }

    fn forget(&self, pod: &Pod) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let mut s = self.state.lock().unwrap();
        s.placed.remove(&uid);
        s.reported.remove(&uid);
    }

    async fn handle(&self, pod: Pod) {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        if !self.namespaces.contains(&ns) {
            return;
        }
        let name = pod.metadata.name.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        if pod.metadata.deletion_timestamp.is_some() {
            // The containers "stop" at once; without this delete the pod
            // stays Terminating and the rollout never finishes.
            self.forget(&pod);
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(&name, &dp).await {
                Ok(_) => self.note(format!("deleted {ns}/{name}")),
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => self.note(format!("deleting {ns}/{name}: {e}")),
            }
            return;
        }
        let spec = pod.spec.clone().unwrap_or_default();
        let node = match spec.node_name.clone() {
            Some(node) if self.nodes.contains(&node) => node,
            Some(_) => return, // another kubelet's node
            None => {
                let Some(node) = self.place(&pod) else {
                    return;
                };
                let binding = json!({
                    "apiVersion": "v1", "kind": "Binding",
                    "metadata": {"name": name, "namespace": ns},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": node},
                });
                let bound = retry(|| async {
                    api.create_subresource::<_, Value>(
                        "binding",
                        &name,
                        &PostParams::default(),
                        &binding,
                    )
                    .await
                })
                .await;
                match bound {
                    Ok(_) => self.note(format!("bound {ns}/{name} to {node}")),
                    // Already bound (a replayed event) or gone.
                    Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => return,
                    Err(e) => {
                        self.note(format!("binding {ns}/{name}: {e}"));
                        return;
                    }
                }
                node
            }
        };
        {
            let mut s = self.state.lock().unwrap();
            s.placed
                .insert(uid.clone(), (node.clone(), controller_uid(&pod)));
            if s.reported.contains(&uid) {
                return;
            }
        }
        let (status, summary) = self.start_containers(&pod, &node);
        let reported = retry(|| async {
            api.patch_status(
                &name,
                &PatchParams {
                    field_manager: Some(MANAGER.to_owned()),
                    ..Default::default()
                },
                &Patch::Strategic(&status),
            )
            .await
        })
        .await;
        match reported {
            Ok(_) => {
                let mut s = self.state.lock().unwrap();
                s.reported.insert(uid);
                s.note(format!("started {ns}/{name} on {node}: {summary}"));
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => self.note(format!("reporting {ns}/{name}: {e}")),
        }
    }

    /// The node a pending pod goes to: the one a DaemonSet pod's affinity
    /// names, else the node with the fewest pods of the same owner (then
    /// the fewest pods), as the scheduler's spreading would. `None` when
    /// the pod asks for a node that is not ours.
    fn place(&self, pod: &Pod) -> Option<String> {
        if let Some(wanted) = affinity_node(pod) {
            return self.nodes.contains(&wanted).then_some(wanted);
        }
        let owner = controller_uid(pod);
        let s = self.state.lock().unwrap();
        let count = |node: &str, same_owner: bool| {
            s.placed
                .values()
                .filter(|(n, o)| n == node && (!same_owner || *o == owner))
                .count()
        };
        self.nodes
            .iter()
            .min_by_key(|n| (count(n, true), count(n, false)))
            .cloned()
    }

    /// Resolves every container's image on `node` and builds the pod's
    /// status; also a one-line summary for the log.
    fn start_containers(&self, pod: &Pod, node: &str) -> (Value, String) {
        let spec = pod.spec.clone().unwrap_or_default();
        let mut s = self.state.lock().unwrap();
        let now = now();
        let mut summary = Vec::new();
        let mut all_ready = true;
        let mut pulled = true;
        let mut statuses = |containers: &[Container], init: bool, s: &mut State| -> Vec<Value> {
            containers
                .iter()
                .map(|c| {
                    let image = c.image.clone().unwrap_or_default();
                    let r = ImageRef::parse(&image);
                    match resolve(s, node, &r, c.image_pull_policy.as_deref()) {
                        Ok(digest) => {
                            let crashing = s.crashing.contains(&digest);
                            let ready = !crashing;
                            all_ready &= ready;
                            summary.push(format!(
                                "{}={digest}{}",
                                c.name,
                                if crashing { " (crashing)" } else { "" }
                            ));
                            let state = if init {
                                json!({"terminated": {"exitCode": 0, "reason": "Completed",
                                    "startedAt": now, "finishedAt": now}})
                            } else {
                                json!({"running": {"startedAt": now}})
                            };
                            json!({
                                "name": c.name, "image": image,
                                "imageID": format!("{}@{digest}", r.repo),
                                "containerID": format!("containerd://{}", &digest[7..]),
                                "ready": ready, "started": !init, "restartCount": 0,
                                "state": state,
                            })
                        }
                        Err((reason, message)) => {
                            all_ready = false;
                            pulled = false;
                            summary.push(format!("{}: {reason}", c.name));
                            json!({
                                "name": c.name, "image": image, "imageID": "",
                                "ready": false, "started": false, "restartCount": 0,
                                "state": {"waiting": {"reason": reason, "message": message}},
                            })
                        }
                    }
                })
                .collect()
        };
        let init = statuses(
            spec.init_containers.as_deref().unwrap_or_default(),
            true,
            &mut s,
        );
        let main = statuses(&spec.containers, false, &mut s);
        let cond = |t: &str, ok: bool| {
            let mut c = json!({"type": t, "status": if ok { "True" } else { "False" },
                               "lastProbeTime": null, "lastTransitionTime": now});
            if !ok {
                c["reason"] = json!("ContainersNotReady");
            }
            c
        };
        let index = self.nodes.iter().position(|n| n == node).unwrap_or(0);
        s.started += 1;
        let pod_ip = format!("10.244.{index}.{}", s.started % 250 + 2);
        let status = json!({"status": {
            "phase": if pulled { "Running" } else { "Pending" },
            "hostIP": host_ip(index), "podIP": pod_ip, "podIPs": [{"ip": pod_ip}],
            "startTime": now,
            "conditions": [
                cond("PodScheduled", true), cond("Initialized", pulled),
                cond("ContainersReady", all_ready), cond("Ready", all_ready),
            ],
            "initContainerStatuses": init,
            "containerStatuses": main,
        }});
        (status, summary.join(", "))
    }
}

/// The digest a container with `r` and `policy` runs on `node`, pulling
/// (and caching) from the registry when the policy says so; or a
/// container-runtime-like waiting reason.
fn resolve(
    s: &mut State,
    node: &str,
    r: &ImageRef,
    policy: Option<&str>,
) -> Result<String, (&'static str, String)> {
    if let Some(d) = &r.digest {
        // A digest reference runs exactly that digest, cached or not.
        s.caches
            .entry(node.to_owned())
            .or_default()
            .insert(r.key(), d.clone());
        return Ok(d.clone());
    }
    let key = r.key();
    // The API server fills the default in; this is for pods that bypass it.
    let policy = policy.unwrap_or(if r.tag.as_deref() == Some("latest") {
        "Always"
    } else {
        "IfNotPresent"
    });
    let cached = s.caches.get(node).and_then(|c| c.get(&key)).cloned();
    let pull = |s: &mut State| match s.registry.get(&key).cloned() {
        Some(d) => {
            s.caches
                .entry(node.to_owned())
                .or_default()
                .insert(key.clone(), d.clone());
            Ok(d)
        }
        None => Err((
            "ErrImagePull",
            format!("{key}: not found in the simulated registry"),
        )),
    };
    match (policy, cached) {
        ("Always", _) => pull(s),
        ("Never", Some(d)) => Ok(d),
        ("Never", None) => Err(("ErrImageNeverPull", format!("{key} is not on {node}"))),
        (_, Some(d)) => Ok(d),
        (_, None) => pull(s),
    }
}

/// An image reference as a container runtime reads it: the repository
/// normalized (`nginx` → `docker.io/library/nginx`), tag, digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub repo: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    pub fn parse(image: &str) -> ImageRef {
        let (name, digest) = match image.split_once('@') {
            Some((n, d)) => (n, Some(d.to_owned())),
            None => (image, None),
        };
        // A ':' after the last '/' starts the tag (before it, a port).
        let last = name.rfind('/').map_or(0, |i| i + 1);
        let (repo, tag) = match name[last..].rfind(':') {
            Some(i) => (&name[..last + i], Some(name[last + i + 1..].to_owned())),
            None => (name, None),
        };
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_owned()),
            _ => tag,
        };
        ImageRef {
            repo: normalize_repo(repo),
            tag,
            digest,
        }
    }

    fn tagged(&self) -> String {
        format!("{}:{}", self.repo, self.tag.as_deref().unwrap_or("latest"))
    }

    /// The name the node's image store knows it by.
    fn key(&self) -> String {
        match &self.digest {
            Some(d) => format!("{}@{d}", self.repo),
            None => self.tagged(),
        }
    }
}

fn normalize_repo(repo: &str) -> String {
    match repo.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => repo.to_owned(),
        Some(_) => format!("docker.io/{repo}"),
        None => format!("docker.io/library/{repo}"),
    }
}

/// The node a DaemonSet pod's required node affinity names
/// (`matchFields` on `metadata.name`).
fn affinity_node(pod: &Pod) -> Option<String> {
    let terms = &pod
        .spec
        .as_ref()?
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|f| f.key == "metadata.name" && f.operator == "In")
        .and_then(|f| f.values.as_ref()?.first().cloned())
}

fn controller_uid(pod: &Pod) -> String {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.clone())
        .unwrap_or_default()
}

/// A few tries for a write the watch will not give a second chance to.
async fn retry<T, F, Fut>(mut op: F) -> kube::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = kube::Result<T>>,
{
    let mut delay = Duration::from_millis(50);
    for _ in 0..4 {
        match op().await {
            Err(kube::Error::Api(e)) if e.code < 500 && e.code != 429 => {
                return Err(kube::Error::Api(e));
            }
            Err(_) => {}
            ok => return ok,
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
    op().await
}

fn apps(kind: &str) -> ApiResource {
    let plural = match kind {
        "Deployment" => "deployments",
        "StatefulSet" => "statefulsets",
        "DaemonSet" => "daemonsets",
        other => panic!("not a workload kind: {other}"),
    };
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("apps", "v1", kind), plural)
}

/// The containers of the live pods of `kind/name` (those its selector
/// matches and that are not terminating), as their status reports them.
pub async fn running(client: &kube::Client, kind: &str, ns: &str, name: &str) -> Vec<RunningImage> {
    let workloads: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &apps(kind));
    let w = serde_json::to_value(workloads.get(name).await.unwrap()).unwrap();
    let labels: Vec<String> = w["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("a workload with matchLabels")
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
        .collect();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels(&labels.join(",")))
        .await
        .unwrap();
    let mut out = Vec::new();
    for pod in list.items {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        let spec_images: HashMap<String, String> = pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
            .collect();
        for cs in pod
            .status
            .iter()
            .flat_map(|s| s.container_statuses.iter().flatten())
        {
            let image_id = cs.image_id.clone();
            out.push(RunningImage {
                pod: pod_name.clone(),
                node: node.clone(),
                container: cs.name.clone(),
                image: spec_images.get(&cs.name).cloned().unwrap_or_default(),
                digest: image_id
                    .split_once('@')
                    .map(|(_, d)| d.to_owned())
                    .unwrap_or_default(),
                image_id,
                ready: cs.ready,
            });
        }
    }
    out.sort_by(|a, b| (&a.pod, &a.container).cmp(&(&b.pod, &b.container)));
    out
}

/// What `kubectl rollout status` would say about a workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    Complete,
    /// Still going, and why (kubectl's message, roughly).
    Waiting(String),
    /// A Deployment's `Progressing` condition says `ProgressDeadlineExceeded`.
    Failed(String),
}

/// kubectl's `rollout status` rules (polymorphichelpers/rollout_status.go)
/// for a workload object of `kind` as JSON (objects from a list or watch
/// carry no `kind`).
pub fn rollout_status(kind: &str, w: &Value) -> Rollout {
    let int = |v: &Value| v.as_i64().unwrap_or(0);
    let (spec, status) = (&w["spec"], &w["status"]);
    let generation = int(&w["metadata"]["generation"]);
    let observed = int(&status["observedGeneration"]);
    if observed < generation || observed == 0 {
        return Rollout::Waiting(format!(
            "observedGeneration {observed} < generation {generation}"
        ));
    }
    let waiting = |what: &str, n: i64, of: i64| Rollout::Waiting(format!("{what}: {n} of {of}"));
    match kind {
        "Deployment" => {
            if let Some(c) = status["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Progressing")
                && c["reason"] == "ProgressDeadlineExceeded"
            {
                return Rollout::Failed(c["message"].as_str().unwrap_or_default().to_owned());
            }
            let replicas = spec["replicas"].as_i64().unwrap_or(1);
            let (updated, total, available) = (
                int(&status["updatedReplicas"]),
                int(&status["replicas"]),
                int(&status["availableReplicas"]),
            );
            if updated < replicas {
                waiting("updated replicas", updated, replicas)
            } else if total > updated {
                waiting("old replicas pending termination", total - updated, total)
            } else if available < updated {
                waiting("updated replicas available", available, updated)
            } else {
                Rollout::Complete
            }
        }
        "StatefulSet" => {
            let replicas = spec["replicas"].as_i64().unwrap_or(1);
            let ready = int(&status["readyReplicas"]);
            let partition = int(&spec["updateStrategy"]["rollingUpdate"]["partition"]);
            let updated = int(&status["updatedReplicas"]);
            if ready < replicas {
                waiting("ready pods", ready, replicas)
            } else if partition > 0 {
                if updated < replicas - partition {
                    waiting(
                        "partitioned roll out, updated pods",
                        updated,
                        replicas - partition,
                    )
                } else {
                    Rollout::Complete
                }
            } else if status["currentRevision"] != status["updateRevision"] {
                Rollout::Waiting(format!(
                    "currentRevision {} != updateRevision {}",
                    status["currentRevision"], status["updateRevision"]
                ))
            } else {
                Rollout::Complete
            }
        }
        "DaemonSet" => {
            let desired = int(&status["desiredNumberScheduled"]);
            let updated = int(&status["updatedNumberScheduled"]);
            let available = int(&status["numberAvailable"]);
            if updated < desired {
                waiting("updated pods", updated, desired)
            } else if available < desired {
                waiting("available pods", available, desired)
            } else {
                Rollout::Complete
            }
        }
        other => panic!("no rollout status for kind {other:?}"),
    }
}

/// Watches `kind/name` until `done` holds, at most `limit`; returns the
/// object and how long it took, or the last state seen.
pub async fn watch_until(
    client: &kube::Client,
    kind: &str,
    ns: &str,
    name: &str,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Result<(Value, Duration), Option<Value>> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &apps(kind));
    let started = Instant::now();
    let mut last = None;
    let found = tokio::time::timeout(limit, async {
        let mut stream = std::pin::pin!(watcher::watch_object(api, name));
        while let Some(event) = stream.next().await {
            if let Ok(Some(obj)) = event {
                let v = serde_json::to_value(obj).unwrap();
                if done(&v) {
                    return Some(v);
                }
                last = Some(v);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(v)) => Ok((v, started.elapsed())),
        _ => Err(last),
    }
}

impl SimKubelet {
    /// Waits until `kind/name`'s rollout is complete; panics after `limit`
    /// with its status and the kubelet's log. Returns the time it took.
    pub async fn wait_rollout(
        &self,
        kind: &str,
        ns: &str,
        name: &str,
        limit: Duration,
    ) -> Duration {
        let result = watch_until(&self.client, kind, ns, name, limit, |w| {
            rollout_status(kind, w) == Rollout::Complete
        })
        .await;
        match result {
            Ok((_, took)) => took,
            Err(last) => panic!(
                "{kind} {ns}/{name}: rollout not complete after {limit:?} ({:?}); status: {}\npods: {:#?}\nkubelet:\n{}",
                last.as_ref().map(|w| rollout_status(kind, w)),
                last.as_ref().map_or(Value::Null, |w| w["status"].clone()),
                self.running(kind, ns, name).await,
                self.log()
            ),
        }
    }
}

/// What `kubectl rollout restart` does: a strategic merge patch of the
/// pod template's `kubectl.kubernetes.io/restartedAt` annotation.
pub async fn restart(client: &kube::Client, kind: &str, ns: &str, name: &str) {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &apps(kind));
    let at = jiff::Timestamp::now().to_string();
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": at
    }}}}});
    api.patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .unwrap_or_else(|e| panic!("restarting {kind} {ns}/{name}: {e}"));
}

pub fn digest(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

/// A workload of `kind` whose pods run `containers` (name, image, pull policy).
pub fn pod_workload(kind: &str, ns: &str, name: &str, containers: &[(&str, &str, &str)]) -> Value {
    let containers: Vec<Value> = containers
        .iter()
        .map(|(n, i, p)| json!({"name": n, "image": i, "imagePullPolicy": p}))
        .collect();
    let mut w = json!({
        "apiVersion": "apps/v1", "kind": kind,
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": containers, "terminationGracePeriodSeconds": 30}
            }
        }
    });
    if kind == "StatefulSet" {
        w["spec"]["serviceName"] = json!(name);
    }
    w
}

pub fn pod_deployment(ns: &str, name: &str, containers: &[(&str, &str, &str)]) -> Value {
    let mut w = pod_workload("Deployment", ns, name, containers);
    w["spec"]["replicas"] = json!(3);
    w
}

/// Asserts that every container of `kind/name`'s live pods is ready and
/// runs `digest` of `REPO`; returns the pods' names and nodes.
pub async fn assert_runs(
    k: &SimKubelet,
    kind: &str,
    ns: &str,
    name: &str,
    pods: usize,
    digest: &str,
    why: &str,
) -> Vec<(String, String)> {
    let running = k.running(kind, ns, name).await;
    let mut seen: Vec<(String, String)> = running
        .iter()
        .map(|r| (r.pod.clone(), r.node.clone()))
        .collect();
    seen.dedup();
    assert_eq!(seen.len(), pods, "{kind} {name}: live pods {running:#?}");
    for r in &running {
        assert!(
            r.digest == digest && r.image_id == format!("{REPO}@{digest}") && r.ready,
            "{kind} {name}: {why}: pod {} container {} on {} runs {} (ready: {}), expected {digest}\nkubelet:\n{}",
            r.pod,
            r.container,
            r.node,
            r.image_id,
            r.ready,
            k.log()
        );
    }
    seen
}

/// The real API server with a simulated kubelet of `nodes` nodes serving a
/// fresh namespace named after `base`; `None` (the test skips) without a
/// real API server.
pub async fn real_with_kubelet(base: &str, nodes: usize) -> Option<(Cluster, String, SimKubelet)> {
    let c = Cluster::real().await?;
    let ns = c.ns(base);
    let k = SimKubelet::start(&c, &[&ns], nodes).await.unwrap();
    Some((c, ns, k))
}
