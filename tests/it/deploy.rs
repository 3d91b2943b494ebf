//! The manifests in `deploy/`, rendered with `kubectl kustomize` (the base,
//! and each overlay), checked against the program they run: every object
//! parses into its Kubernetes type without losing a field; the containers'
//! args and env parse with the binary's own flags; probes, ports, the index
//! mount and the Service agree with what the server serves; the security
//! context is locked down; and the RBAC grants exactly the least-privilege
//! set. Without kubectl the base is assembled from its files (resources plus
//! the env-file ConfigMap) and the overlays are skipped; under
//! `PUSHROLL_REQUIRE_KUBECTL=1` a missing kubectl is a failure.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{Pushroll, http};
use clap::CommandFactory as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use pushroll::cli::{Cli, Command as Sub};
use pushroll::cmd::serve::ServeConfig;
use serde_json::Value;

const IMAGE_REPO: &str = "ghcr.io/pushroll/pushroll";

pub(crate) fn deploy_dir(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(rel)
}

pub(crate) fn yaml_docs(text: &str) -> Vec<Value> {
    use serde::Deserialize as _;
    serde_norway::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("a YAML document that maps to JSON"))
        .filter(|v| !v.is_null())
        .collect()
}

pub(crate) fn kubectl_present() -> bool {
    let found = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("PUSHROLL_REQUIRE_KUBECTL").as_deref() != Ok("1"),
            "PUSHROLL_REQUIRE_KUBECTL=1 but kubectl is not on PATH"
        );
    }
    found
}

/// `kubectl kustomize DIR`, or `None` (with a SKIPPED line) without kubectl.
pub(crate) fn render(rel: &str) -> Option<Vec<Value>> {
    if !kubectl_present() {
        eprintln!("SKIPPED: kubectl not found; deploy/{rel} not rendered");
        return None;
    }
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(deploy_dir(rel))
        .output()
        .expect("running kubectl kustomize");
    assert!(
        out.status.success(),
        "kubectl kustomize deploy/{rel}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(yaml_docs(&String::from_utf8(out.stdout).unwrap()))
}

/// The base: rendered, or without kubectl assembled from its own files
/// (the listed resources and the ConfigMap of its env file; no labels or
/// name hashes, which the checks below do not depend on).
fn render_base() -> Vec<Value> {
    if let Some(docs) = render("") {
        return docs;
    }
    eprintln!("deploy/: checking the base assembled from its files instead");
    let base = deploy_dir("base");
    let kustomization: Value =
        serde_norway::from_str(&std::fs::read_to_string(base.join("kustomization.yaml")).unwrap())
            .unwrap();
    let namespace = kustomization["namespace"].as_str().unwrap();
    let mut docs = Vec::new();
    for file in kustomization["resources"].as_array().unwrap() {
        let text = std::fs::read_to_string(base.join(file.as_str().unwrap())).unwrap();
        docs.extend(yaml_docs(&text));
    }
    for generator in kustomization["configMapGenerator"].as_array().unwrap() {
        let mut data = serde_json::Map::new();
        for file in generator["envs"].as_array().unwrap() {
            let text = std::fs::read_to_string(base.join(file.as_str().unwrap())).unwrap();
            for line in text.lines().map(str::trim) {
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let (k, v) = line.split_once('=').expect("KEY=value");
                data.insert(k.into(), v.into());
            }
        }
        docs.push(serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": generator["name"], "namespace": namespace},
            "data": data,
        }));
    }
    docs
}

/// The rendered objects, typed.
#[derive(Default)]
pub(crate) struct Objects {
    all: Vec<Value>,
    namespaces: Vec<Namespace>,
    service_accounts: Vec<ServiceAccount>,
    config_maps: Vec<ConfigMap>,
    deployments: Vec<Deployment>,
    services: Vec<Service>,
    pdbs: Vec<PodDisruptionBudget>,
    cluster_roles: Vec<ClusterRole>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    /// Custom resources (Gateway API, GKE policies, the Prometheus
    /// Operator's), by kind.
    custom: BTreeMap<String, Vec<Value>>,
}

/// Deserializes `v` as `T` and back: a field the type does not know (a typo,
/// a wrong level) would be dropped, so the round trip must give `v` again.
fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(v: &Value) -> T {
    let what = format!("{} {}", v["kind"], v["metadata"]["name"]);
    let t: T = serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
    let back = serde_json::to_value(&t).unwrap();
    assert_eq!(
        &back, v,
        "{what} loses or changes fields when read as its Kubernetes type"
    );
    t
}

pub(crate) fn parse(docs: Vec<Value>) -> Objects {
    let mut o = Objects::default();
    for v in &docs {
        let api = v["apiVersion"].as_str().expect("apiVersion");
        let kind = v["kind"].as_str().expect("kind");
        match (api, kind) {
            ("v1", "Namespace") => o.namespaces.push(typed(v)),
            ("v1", "ServiceAccount") => o.service_accounts.push(typed(v)),
            ("v1", "ConfigMap") => o.config_maps.push(typed(v)),
            ("v1", "Service") => o.services.push(typed(v)),
            ("apps/v1", "Deployment") => o.deployments.push(typed(v)),
            ("policy/v1", "PodDisruptionBudget") => o.pdbs.push(typed(v)),
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => o.cluster_roles.push(typed(v)),
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                o.cluster_role_bindings.push(typed(v))
            }
            ("rbac.authorization.k8s.io/v1", "Role") => o.roles.push(typed(v)),
            ("rbac.authorization.k8s.io/v1", "RoleBinding") => o.role_bindings.push(typed(v)),
            ("gateway.networking.k8s.io/v1", "Gateway" | "HTTPRoute")
            | ("networking.gke.io/v1", "HealthCheckPolicy")
            | ("monitoring.coreos.com/v1", "PrometheusRule" | "ServiceMonitor") => {
                o.custom.entry(kind.to_owned()).or_default().push(v.clone())
            }
            other => panic!("unexpected object {other:?} in deploy/"),
        }
    }
    o.all = docs;
    o
}

impl Objects {
    fn deployment(&self, name: &str) -> &Deployment {
        self.deployments
            .iter()
            .find(|d| d.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no Deployment {name}"))
    }

    fn service(&self, name: &str) -> &Service {
        self.services
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no Service {name}"))
    }

    fn config_map(&self, name: &str) -> &ConfigMap {
        self.config_maps
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no ConfigMap {name}"))
    }
}

fn container(d: &Deployment) -> &Container {
    let spec = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(spec.containers.len(), 1, "one container");
    assert!(spec.init_containers.is_none());
    &spec.containers[0]
}

/// The container's environment as `--flag=value` arguments: `PUSHROLL_X`
/// (literal or from a ConfigMap in `envFrom`) becomes the flag whose env
/// variable it is, so clap checks it exactly as it would read it, without
/// touching this process's environment (tests run in parallel).
fn env_as_flags(o: &Objects, c: &Container, subcommand: &str) -> (Vec<String>, Vec<String>) {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for from in c.env_from.iter().flatten() {
        assert!(from.prefix.is_none(), "envFrom prefix");
        let cm = from
            .config_map_ref
            .as_ref()
            .expect("envFrom is a ConfigMap");
        assert_ne!(cm.optional, Some(true), "settings must not be optional");
        let data = o.config_map(&cm.name).data.clone().unwrap_or_default();
        pairs.extend(data);
    }
    let mut downward = Vec::new();
    let mut secret = Vec::new();
    for e in c.env.iter().flatten() {
        match (&e.value, &e.value_from) {
            (Some(v), None) => pairs.push((e.name.clone(), v.clone())),
            (None, Some(from)) if from.secret_key_ref.is_some() => secret.push(e.name.clone()),
            (None, Some(_)) => downward.push(e.name.clone()),
            other => panic!("env {}: {other:?}", e.name),
        }
    }
    let mut cmd = Cli::command();
    cmd.build();
    let sub = cmd
        .find_subcommand(subcommand)
        .unwrap_or_else(|| panic!("no subcommand {subcommand}"));
    // A setting from a Secret is a flag too; its value is not in the
    // manifests, so only its name is checked.
    for name in secret {
        assert!(
            sub.get_arguments()
                .any(|a| a.get_env().is_some_and(|e| e == name.as_str())),
            "{name} (from a Secret) is no flag of `pushroll {subcommand}`"
        );
    }
    let mut flags = Vec::new();
    let mut seen = BTreeSet::new();
    for (name, value) in pairs {
        if !name.starts_with("PUSHROLL_") {
            panic!("env {name}={value}: not a pushroll setting");
        }
        assert!(seen.insert(name.clone()), "{name} is set twice");
        assert!(
            !value.is_empty(),
            "{name} is empty (clap reads it as unset)"
        );
        let arg = sub
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == name.as_str()))
            .unwrap_or_else(|| panic!("{name} is no flag of `pushroll {subcommand}`"));
        let long = arg.get_long().unwrap();
        let in_args = c
            .args
            .iter()
            .flatten()
            .any(|a| a == &format!("--{long}") || a.starts_with(&format!("--{long}=")));
        assert!(!in_args, "--{long} is both in args and env ({name})");
        if arg.get_action().takes_values() {
            flags.push(format!("--{long}={value}"));
        } else {
            match value.as_str() {
                "true" => flags.push(format!("--{long}")),
                "false" => {}
                other => panic!("{name}={other}: expected true or false"),
            }
        }
    }
    (flags, downward)
}

/// Parses a container's command line with the binary's clap definition.
fn parse_cli(o: &Objects, c: &Container, subcommand: &str) -> (Cli, Vec<String>) {
    assert!(c.command.is_none(), "the image's ENTRYPOINT runs pushroll");
    let args = c.args.clone().unwrap_or_default();
    assert_eq!(args.first().map(String::as_str), Some(subcommand));
    let (flags, downward) = env_as_flags(o, c, subcommand);
    let argv: Vec<String> = std::iter::once("pushroll".to_owned())
        .chain(args)
        .chain(flags)
        .collect();
    let cli =
        <Cli as clap::Parser>::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}:\n{e}"));
    (cli, downward)
}

fn serve_config(o: &Objects) -> ServeConfig {
    let c = container(o.deployment("pushroll"));
    let (cli, downward) = parse_cli(o, c, "serve");
    assert_eq!(downward, ["POD_NAMESPACE", "POD_NAME"]);
    let Sub::Serve(args) = cli.command else {
        unreachable!()
    };
    args.resolve()
        .unwrap_or_else(|e| panic!("serve's flags: {e}"))
}

fn port_number(c: &Container, port: &IntOrString) -> i32 {
    match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => {
            c.ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("no container port named {name}"))
                .container_port
        }
    }
}

/// (path, port) of a probe, which must be an HTTP GET.
fn probe(c: &Container, which: &str) -> (String, i32) {
    let p = match which {
        "liveness" => c.liveness_probe.as_ref(),
        "readiness" => c.readiness_probe.as_ref(),
        _ => unreachable!(),
    }
    .unwrap_or_else(|| panic!("{}: no {which} probe", c.name));
    let get = p.http_get.as_ref().expect("an httpGet probe");
    (get.path.clone().unwrap(), port_number(c, &get.port))
}

fn mebibytes(q: &str) -> f64 {
    let (num, scale) = [("Ki", 1.0 / 1024.0), ("Mi", 1.0), ("Gi", 1024.0)]
        .iter()
        .find_map(|(suffix, scale)| q.strip_suffix(suffix).map(|n| (n, *scale)))
        .unwrap_or((q, 1.0 / (1024.0 * 1024.0)));
    num.parse::<f64>().unwrap() * scale
}

/// The checks every Deployment shares: labels, selectors, identity, the
/// locked-down security context, resources, probes on the container port.
fn check_workload(o: &Objects, name: &str, component: &str, service_account: &str) -> i32 {
    let d = o.deployment(name);
    let spec = d.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(2), "{name}: replicas");
    let selector = spec.selector.match_labels.clone().unwrap();
    let pod_labels = spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    assert_eq!(selector["app.kubernetes.io/name"], "pushroll");
    assert_eq!(selector["app.kubernetes.io/component"], component);
    for (k, v) in &selector {
        assert_eq!(pod_labels.get(k), Some(v), "{name}: selector {k}");
    }
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some(service_account));
    assert!(
        o.service_accounts
            .iter()
            .any(|sa| sa.metadata.name.as_deref() == Some(service_account)
                && sa.metadata.namespace == d.metadata.namespace),
        "{name}: ServiceAccount {service_account} is not deployed beside it"
    );
    let psc = pod.security_context.as_ref().expect("pod securityContext");
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.run_as_user, Some(65532));
    assert_eq!(
        psc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
        Some("RuntimeDefault")
    );

    let c = container(d);
    assert!(
        c.image
            .as_deref()
            .is_some_and(|i| i.starts_with(&format!("{IMAGE_REPO}:"))),
        "{name}: image {:?}",
        c.image
    );
    let sc = c
        .security_context
        .as_ref()
        .expect("container securityContext");
    assert_eq!(sc.run_as_non_root, Some(true), "{name}");
    assert_eq!(sc.run_as_user, Some(65532), "{name}");
    assert_eq!(sc.read_only_root_filesystem, Some(true), "{name}");
    assert_eq!(sc.allow_privilege_escalation, Some(false), "{name}");
    assert_eq!(sc.privileged, None, "{name}");
    let caps = sc.capabilities.as_ref().expect("capabilities");
    assert_eq!(
        caps.drop.as_deref(),
        Some(&["ALL".to_owned()][..]),
        "{name}"
    );
    assert!(caps.add.is_none(), "{name}: capabilities added");
    assert_eq!(
        sc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
        Some("RuntimeDefault"),
        "{name}"
    );

    let res = c.resources.as_ref().expect("resources");
    let requests = res.requests.as_ref().expect("requests");
    let limits = res.limits.as_ref().expect("limits");
    assert!(requests.contains_key("cpu"), "{name}: cpu request");
    let (req, lim) = (&requests["memory"].0, &limits["memory"].0);
    assert!(
        mebibytes(req) <= mebibytes(lim) && mebibytes(lim) <= 512.0,
        "{name}: memory {req} / {lim}"
    );
    assert!(
        !limits.contains_key("cpu"),
        "{name}: a CPU limit only throttles"
    );

    let ports: Vec<i32> = c.ports.iter().flatten().map(|p| p.container_port).collect();
    assert_eq!(ports.len(), 1, "{name}: one port");
    for which in ["liveness", "readiness"] {
        let (_, port) = probe(c, which);
        assert_eq!(port, ports[0], "{name}: {which} probe port");
    }
    assert_eq!(probe(c, "liveness").0, "/healthz", "{name}");
    assert_eq!(probe(c, "readiness").0, "/readyz", "{name}");
    let downward: BTreeMap<&str, &str> = c
        .env
        .iter()
        .flatten()
        .filter_map(|e| {
            let field = e.value_from.as_ref()?.field_ref.as_ref()?;
            Some((e.name.as_str(), field.field_path.as_str()))
        })
        .collect();
    assert_eq!(
        downward,
        BTreeMap::from([
            ("POD_NAME", "metadata.name"),
            ("POD_NAMESPACE", "metadata.namespace")
        ]),
        "{name}"
    );
    // Notifications: the receiver's URL is a secret, read from an optional
    // Secret so that the base installs (and runs, telling no one) without it.
    let secrets: BTreeMap<&str, (&str, &str, Option<bool>)> = c
        .env
        .iter()
        .flatten()
        .filter_map(|e| {
            let key = e.value_from.as_ref()?.secret_key_ref.as_ref()?;
            Some((
                e.name.as_str(),
                (key.name.as_str(), key.key.as_str(), key.optional),
            ))
        })
        .collect();
    assert_eq!(
        secrets,
        BTreeMap::from([
            (
                "PUSHROLL_NOTIFY_URL",
                ("pushroll-notify", "url", Some(true))
            ),
            (
                "PUSHROLL_NOTIFY_FORMAT",
                ("pushroll-notify", "format", Some(true))
            ),
        ]),
        "{name}"
    );
    assert!(
        !o.all.iter().any(|d| d["kind"] == "Secret"),
        "the manifests ship no Secret: the site creates pushroll-notify"
    );
    ports[0]
}

/// The serve Deployment against the serve configuration it parses to.
fn check_serve(o: &Objects) -> ServeConfig {
    let config = serve_config(o);
    let port = check_workload(o, "pushroll", "serve", "pushroll");
    assert_eq!(
        i32::from(config.listen.port()),
        port,
        "--listen and the port"
    );
    assert!(
        config.listen.ip().is_unspecified(),
        "--listen binds every interface"
    );
    assert_eq!(config.auth.mode, pushroll::auth::AuthMode::Google);
    assert!(!config.dry_run && !config.offline);
    assert!(!config.auth.allowed_emails.is_empty(), "--allowed-email");
    assert!(!config.auth.subscriptions.is_empty(), "--subscription");
    for audience in &config.auth.audiences {
        assert!(
            audience.starts_with("https://") && audience.ends_with("/push"),
            "{audience}"
        );
    }

    // The index: the whole directory of --index-file, from the ConfigMap
    // that --index-configmap names, optional, never subPath.
    let d = o.deployment("pushroll");
    let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let c = container(d);
    let mounts = c.volume_mounts.as_ref().expect("volumeMounts");
    assert_eq!(mounts.len(), 2, "the index and the webhook secrets");
    let mount = mounts
        .iter()
        .find(|m| m.name == "index")
        .expect("the index mount");
    assert_eq!(
        Path::new(&mount.mount_path),
        config.index.file.parent().unwrap(),
        "the mount is the directory of --index-file"
    );
    assert_eq!(config.index.file, Path::new("/etc/pushroll/index.json"));
    assert!(
        mount.sub_path.is_none() && mount.sub_path_expr.is_none(),
        "subPath never updates"
    );
    assert_eq!(mount.read_only, Some(true));
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .expect("the mounted volume");
    let cm = volume.config_map.as_ref().expect("a ConfigMap volume");
    assert_eq!(cm.name, config.index.cluster.configmap_name);
    assert_eq!(cm.optional, Some(true), "pods start before the first index");
    assert!(cm.items.is_none(), "items would hide index.json.gz");
    assert_eq!(
        config.index.cluster.configmap_namespace, None,
        "POD_NAMESPACE decides"
    );

    // The webhook secrets: the optional Secret pushroll-webhooks at the
    // directory --webhook-secrets names, read-only, never subPath, and not
    // nested in the index's volume (swapped atomically by the kubelet).
    let hooks = mounts
        .iter()
        .find(|m| m.name != mount.name)
        .expect("the webhook secrets mount");
    assert_eq!(Path::new(&hooks.mount_path), config.webhook_secrets);
    assert!(
        !config.webhook_secrets.starts_with(&mount.mount_path),
        "{} is nested in the index volume {}",
        hooks.mount_path,
        mount.mount_path
    );
    assert!(hooks.sub_path.is_none() && hooks.sub_path_expr.is_none());
    assert_eq!(hooks.read_only, Some(true));
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == hooks.name)
        .expect("the webhook secrets volume");
    let secret = volume.secret.as_ref().expect("a Secret volume");
    assert_eq!(secret.secret_name.as_deref(), Some("pushroll-webhooks"));
    assert_eq!(secret.optional, Some(true), "webhooks are opt-in");
    assert!(secret.items.is_none(), "items would hide a source's file");

    // Termination: preStop, then the drain, within the grace period.
    let pre_stop = c
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
        .and_then(|h| h.sleep.as_ref())
        .map_or(0, |s| s.seconds);
    let grace = pod.termination_grace_period_seconds.expect("grace period");
    let drain = i64::try_from(config.shutdown_timeout.as_secs()).unwrap();
    assert!(
        grace > pre_stop + drain && grace <= pre_stop + drain + 15,
        "terminationGracePeriodSeconds {grace} vs preStop {pre_stop} + drain {drain}"
    );
    let spread = pod.topology_spread_constraints.as_ref().expect("spread");
    assert!(
        spread
            .iter()
            .any(|t| t.topology_key == "kubernetes.io/hostname")
    );

    // Service and PodDisruptionBudget select exactly the serve pods.
    let pod_labels_of = |d: &Deployment| {
        let template = &d.spec.as_ref().unwrap().template;
        template.metadata.as_ref().unwrap().labels.clone().unwrap()
    };
    let pod_labels = pod_labels_of(d);
    // No indexer Deployment when serve runs the indexer (overlays/single).
    let indexer_labels = o
        .deployments
        .iter()
        .find(|d| d.metadata.name.as_deref() == Some("pushroll-indexer"))
        .map(pod_labels_of)
        .unwrap_or_default();
    let selects = |sel: &BTreeMap<String, String>, labels: &BTreeMap<String, String>| {
        sel.iter().all(|(k, v)| labels.get(k) == Some(v))
    };
    let svc = o.service("pushroll");
    // Any other Service (overlays/monitoring's pushroll-indexer) leaves the
    // serve pods alone.
    for other in o.services.iter().filter(|s| !std::ptr::eq(*s, svc)) {
        let sel = other.spec.as_ref().unwrap().selector.clone().unwrap();
        assert!(!selects(&sel, &pod_labels), "{:?}", other.metadata.name);
    }
    let spec = svc.spec.as_ref().unwrap();
    let sel = spec.selector.clone().unwrap();
    assert!(selects(&sel, &pod_labels) && !selects(&sel, &indexer_labels));
    let ports = spec.ports.as_ref().unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].name.as_deref(), Some("http"));
    assert_eq!(ports[0].port, 80);
    assert_eq!(
        port_number(c, ports[0].target_port.as_ref().unwrap()),
        i32::from(config.listen.port())
    );

    assert_eq!(o.pdbs.len(), 1);
    let pdb = o.pdbs[0].spec.as_ref().unwrap();
    assert_eq!(pdb.min_available, Some(IntOrString::Int(1)));
    let sel = pdb.selector.as_ref().unwrap().match_labels.clone().unwrap();
    assert!(selects(&sel, &pod_labels) && !selects(&sel, &indexer_labels));
    config
}

/// The indexer Deployment: `index --watch`, parsed with the binary's flags
/// when the binary has the `index` subcommand.
fn check_indexer(o: &Objects) -> Vec<String> {
    let port = check_workload(o, "pushroll-indexer", "indexer", "pushroll-indexer");
    let c = container(o.deployment("pushroll-indexer"));
    let args = c.args.clone().unwrap();
    assert_eq!(args[0], "index");
    assert!(args.contains(&"--watch".to_owned()), "{args:?}");
    let listen = args
        .iter()
        .find_map(|a| a.strip_prefix("--listen="))
        .unwrap_or("0.0.0.0:8081");
    let listen = pushroll::cli::parse_listen(listen).unwrap();
    assert_eq!(i32::from(listen.port()), port);
    assert!(
        c.volume_mounts.is_none(),
        "the indexer reads the API, not the volume"
    );
    if Cli::command().find_subcommand("index").is_some() {
        parse_cli(o, c, "index");
    } else {
        eprintln!("SKIPPED: the binary has no `index` subcommand yet; its args are not parsed");
    }
    args
}

type Grant = (String, String, String, String, Option<String>);

/// Everything a ServiceAccount may do: (scope, apiGroup, resource, verb,
/// resourceName), scope `*` for cluster-wide or the RoleBinding's namespace.
fn grants(o: &Objects, namespace: &str, account: &str) -> BTreeSet<Grant> {
    use k8s_openapi::api::rbac::v1::{PolicyRule, RoleRef, Subject};
    let is_me = |subjects: &Option<Vec<Subject>>| {
        subjects.iter().flatten().any(|s| {
            s.kind == "ServiceAccount"
                && s.name == account
                && s.namespace.as_deref() == Some(namespace)
        })
    };
    let mut out = BTreeSet::new();
    let mut add = |scope: &str, rules: &[PolicyRule]| {
        for r in rules {
            assert!(r.non_resource_urls.is_none());
            for g in r.api_groups.iter().flatten() {
                for res in r.resources.iter().flatten() {
                    for verb in &r.verbs {
                        for name in r
                            .resource_names
                            .clone()
                            .map_or(vec![None], |n| n.into_iter().map(Some).collect())
                        {
                            for s in [g, res, verb] {
                                assert!(!s.contains('*'), "wildcard in {r:?}");
                            }
                            out.insert((scope.into(), g.clone(), res.clone(), verb.clone(), name));
                        }
                    }
                }
            }
        }
    };
    let cluster_role = |r: &RoleRef| {
        assert_eq!(r.kind, "ClusterRole");
        o.cluster_roles
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(&r.name))
            .unwrap_or_else(|| panic!("no ClusterRole {}", r.name))
            .rules
            .clone()
            .unwrap_or_default()
    };
    for b in o
        .cluster_role_bindings
        .iter()
        .filter(|b| is_me(&b.subjects))
    {
        add("*", &cluster_role(&b.role_ref));
    }
    for b in o.role_bindings.iter().filter(|b| is_me(&b.subjects)) {
        let ns = b.metadata.namespace.clone().unwrap();
        let rules = if b.role_ref.kind == "Role" {
            o.roles
                .iter()
                .find(|r| {
                    r.metadata.name.as_deref() == Some(&b.role_ref.name)
                        && r.metadata.namespace.as_deref() == Some(&ns)
                })
                .unwrap_or_else(|| panic!("no Role {}/{}", ns, b.role_ref.name))
                .rules
                .clone()
                .unwrap_or_default()
        } else {
            cluster_role(&b.role_ref)
        };
        add(&ns, &rules);
    }
    out
}

/// The least-privilege set. `workloads` is `*` (cluster-wide) or the one
/// namespace; the ConfigMap and the Lease are in pushroll's namespace.
fn expected(workloads: &str, home: &str, cm: &str, lease: &str) -> [BTreeSet<Grant>; 2] {
    let g = |scope: &str, group: &str, res: &str, verb: &str, name: Option<&str>| -> Grant {
        (
            scope.into(),
            group.into(),
            res.into(),
            verb.into(),
            name.map(Into::into),
        )
    };
    let mut serve = BTreeSet::new();
    let mut indexer = BTreeSet::new();
    for res in ["deployments", "statefulsets", "daemonsets"] {
        serve.insert(g(workloads, "apps", res, "get", None));
        serve.insert(g(workloads, "apps", res, "patch", None));
        indexer.insert(g(workloads, "apps", res, "list", None));
        indexer.insert(g(workloads, "apps", res, "watch", None));
        // Policies: the controller reads and writes waiting pushes, and
        // undoes failed rollouts.
        indexer.insert(g(workloads, "apps", res, "get", None));
        indexer.insert(g(workloads, "apps", res, "patch", None));
    }
    for res in ["replicasets", "controllerrevisions"] {
        indexer.insert(g(workloads, "apps", res, "list", None));
    }
    // The rollout follower: one pods LIST per finished rollout, its Events.
    indexer.insert(g(workloads, "", "pods", "list", None));
    indexer.insert(g(workloads, "", "events", "create", None));
    serve.insert(g(workloads, "", "events", "create", None));
    serve.insert(g(home, "", "configmaps", "get", Some(cm)));
    indexer.insert(g(home, "", "configmaps", "get", Some(cm)));
    indexer.insert(g(home, "", "configmaps", "update", Some(cm)));
    indexer.insert(g(home, "", "configmaps", "create", None));
    indexer.insert(g(home, "coordination.k8s.io", "leases", "get", Some(lease)));
    indexer.insert(g(
        home,
        "coordination.k8s.io",
        "leases",
        "patch",
        Some(lease),
    ));
    indexer.insert(g(home, "coordination.k8s.io", "leases", "create", None));
    [serve, indexer]
}

fn check_rbac(
    o: &Objects,
    home: &str,
    workloads: &str,
    config: &ServeConfig,
    indexer_args: &[String],
) {
    let lease = indexer_args
        .iter()
        .find_map(|a| a.strip_prefix("--lease-name="))
        .unwrap_or("pushroll-indexer");
    let [serve, indexer] = expected(workloads, home, &config.index.cluster.configmap_name, lease);
    let got = grants(o, home, "pushroll");
    assert_eq!(
        got,
        serve,
        "serve's RBAC: extra {:?}, missing {:?}",
        got.difference(&serve).collect::<Vec<_>>(),
        serve.difference(&got).collect::<Vec<_>>()
    );
    let got = grants(o, home, "pushroll-indexer");
    assert_eq!(
        got,
        indexer,
        "the indexer's RBAC: extra {:?}, missing {:?}",
        got.difference(&indexer).collect::<Vec<_>>(),
        indexer.difference(&got).collect::<Vec<_>>()
    );
}

/// What every rendering shares.
pub(crate) fn check_common(o: &Objects, home: &str, rendered: bool) {
    for v in &o.all {
        let what = format!("{} {}", v["kind"], v["metadata"]["name"]);
        let cluster_scoped = ["Namespace", "ClusterRole", "ClusterRoleBinding"]
            .contains(&v["kind"].as_str().unwrap());
        if cluster_scoped {
            assert!(v["metadata"]["namespace"].is_null(), "{what}");
        } else {
            assert_eq!(v["metadata"]["namespace"], home, "{what}");
        }
        if rendered {
            let labels = &v["metadata"]["labels"];
            assert_eq!(labels["app.kubernetes.io/name"], "pushroll", "{what}");
            assert_eq!(labels["app.kubernetes.io/part-of"], "pushroll", "{what}");
        }
    }
    for d in &o.deployments {
        let labels = &d
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels;
        let labels = labels.as_ref().unwrap();
        if rendered {
            assert_eq!(labels["app.kubernetes.io/part-of"], "pushroll");
        }
    }
}

/// The checks of one layout's objects, whoever rendered them (`kubectl
/// kustomize` here, Helm's engine in tests/it/helm.rs): the program's flags,
/// the locked-down security context and exactly the least-privilege RBAC.
/// Which Namespace object comes with them is the caller's to check (the
/// chart ships none: `helm install --create-namespace` makes it).
pub(crate) fn check_layout(layout: &str, o: &Objects) {
    match layout {
        "standard" => check_standard(o),
        "single" => check_single(o),
        "namespaced" => check_namespaced(o),
        "monitoring" => check_monitoring(o),
        "pull" => check_pull(o),
        other => panic!("no checks for layout {other}"),
    }
}

fn check_standard(o: &Objects) {
    let config = check_serve(o);
    assert!(
        config.namespaces.include.is_empty(),
        "the base restarts any namespace"
    );
    assert!(
        config
            .namespaces
            .exclude
            .contains(&"kube-system".to_owned())
    );
    assert!(config.indexer.is_none(), "the base runs the indexer apart");
    let indexer_args = check_indexer(o);
    check_rbac(o, "pushroll", "*", &config, &indexer_args);
    assert!(o.custom.is_empty(), "the base needs no CRDs");
    assert_eq!(o.services.len(), 1, "one Service, serve's");
}

#[test]
fn base_deploys_serve_and_indexer_with_least_privilege() {
    let o = parse(render_base());
    let rendered = kubectl_present();
    assert_eq!(o.namespaces.len(), 1);
    assert_eq!(o.namespaces[0].metadata.name.as_deref(), Some("pushroll"));
    check_common(&o, "pushroll", rendered);
    check_standard(&o);
}

fn check_single(o: &Objects) {
    check_common(o, "pushroll", true);
    let config = check_serve(o);
    let watch = config.indexer.as_ref().expect("serve runs with --indexer");
    let names = |it: Vec<Option<String>>| it.into_iter().flatten().collect::<Vec<_>>();
    assert_eq!(
        names(
            o.deployments
                .iter()
                .map(|d| d.metadata.name.clone())
                .collect()
        ),
        ["pushroll"],
        "one Deployment"
    );
    assert_eq!(
        names(
            o.service_accounts
                .iter()
                .map(|s| s.metadata.name.clone())
                .collect()
        ),
        ["pushroll"],
        "one identity"
    );
    // serve's identity has exactly serve's grants plus the indexer's, for
    // the Lease that serve's --lease-name names; nobody else has any.
    let [serve, indexer] = expected(
        "*",
        "pushroll",
        &config.index.cluster.configmap_name,
        &watch.lease_name,
    );
    let want: BTreeSet<Grant> = serve.union(&indexer).cloned().collect();
    let got = grants(o, "pushroll", "pushroll");
    assert_eq!(
        got,
        want,
        "serve's RBAC: extra {:?}, missing {:?}",
        got.difference(&want).collect::<Vec<_>>(),
        want.difference(&got).collect::<Vec<_>>()
    );
    assert!(grants(o, "pushroll", "pushroll-indexer").is_empty());
}

#[test]
fn single_overlay_runs_the_indexer_inside_serve() {
    let Some(docs) = render("overlays/single") else {
        return;
    };
    check_single(&parse(docs));
}

#[test]
fn gke_overlay_routes_only_push_over_https() {
    let Some(docs) = render("overlays/gke") else {
        return;
    };
    let o = parse(docs);
    check_common(&o, "pushroll", true);
    let config = check_serve(&o);
    let indexer_args = check_indexer(&o);
    check_rbac(&o, "pushroll", "*", &config, &indexer_args);

    let one = |kind: &str| {
        let list = &o.custom[kind];
        assert_eq!(list.len(), 1, "{kind}");
        list[0].clone()
    };
    let gateway = one("Gateway");
    assert_eq!(
        gateway["spec"]["gatewayClassName"],
        "gke-l7-global-external-managed"
    );
    let listeners = gateway["spec"]["listeners"].as_array().unwrap();
    assert!(!listeners.is_empty());
    for l in listeners {
        assert_eq!(
            l["protocol"], "HTTPS",
            "plain HTTP would carry tokens in clear"
        );
        assert_eq!(l["port"], 443);
    }
    assert!(
        gateway["metadata"]["annotations"]["networking.gke.io/certmap"].is_string()
            || listeners.iter().all(|l| l["tls"].is_object()),
        "the HTTPS listener needs a certificate"
    );

    let route = one("HTTPRoute");
    let parents = route["spec"]["parentRefs"].as_array().unwrap();
    assert!(
        parents
            .iter()
            .all(|p| p["name"] == gateway["metadata"]["name"])
    );
    let rules = route["spec"]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 1, "one rule");
    let matches = rules[0]["matches"].as_array().unwrap();
    assert_eq!(matches.len(), 2, "/push and /webhooks/…");
    assert_eq!(matches[0]["path"]["type"], "Exact");
    assert_eq!(matches[0]["path"]["value"], "/push");
    // Registry webhooks, routed like /push: POST only, under /webhooks.
    assert_eq!(matches[1]["path"]["type"], "PathPrefix");
    assert_eq!(matches[1]["path"]["value"], "/webhooks");
    for m in matches {
        assert_eq!(m["method"], "POST", "{m}");
    }
    let backends = rules[0]["backendRefs"].as_array().unwrap();
    assert_eq!(backends.len(), 1);
    let svc = o.services[0].clone();
    assert_eq!(backends[0]["name"].as_str(), svc.metadata.name.as_deref());
    assert_eq!(
        backends[0]["port"],
        svc.spec.unwrap().ports.unwrap()[0].port
    );
    // The token audience is the URL Pub/Sub pushes to.
    let hosts = route["spec"]["hostnames"].as_array().unwrap();
    assert!(!hosts.is_empty());
    for host in hosts {
        let url = format!("https://{}/push", host.as_str().unwrap());
        assert!(
            config.auth.audiences.contains(&url),
            "--audience lacks {url}"
        );
    }

    let hc = one("HealthCheckPolicy");
    assert_eq!(hc["spec"]["targetRef"]["kind"], "Service");
    assert_eq!(hc["spec"]["targetRef"]["name"], "pushroll");
    let http_check = &hc["spec"]["default"]["config"]["httpHealthCheck"];
    assert_eq!(http_check["requestPath"], "/readyz");
    assert_eq!(http_check["port"], config.listen.port());
}

fn check_namespaced(o: &Objects) {
    let home = o.deployment("pushroll").metadata.namespace.clone().unwrap();
    check_common(o, &home, true);
    assert!(
        o.namespaces.is_empty(),
        "a team cannot create its Namespace"
    );
    assert!(o.cluster_roles.is_empty() && o.cluster_role_bindings.is_empty());
    let config = check_serve(o);
    assert_eq!(config.namespaces.include, std::slice::from_ref(&home));
    let indexer_args = check_indexer(o);
    assert!(
        indexer_args.contains(&format!("--namespace={home}")),
        "the indexer must watch its namespace only: {indexer_args:?}"
    );
    check_rbac(o, &home, &home, &config, &indexer_args);
}

#[test]
fn namespaced_overlay_needs_nothing_cluster_scoped() {
    let Some(docs) = render("overlays/namespaced") else {
        return;
    };
    let o = parse(docs);
    let home = o.deployment("pushroll").metadata.namespace.clone().unwrap();
    assert_ne!(home, "pushroll");
    check_namespaced(&o);
}

/// overlays/monitoring: the base as it is (the same checks, the same
/// least privilege) plus the Prometheus Operator's objects and the Service
/// that reaches the indexer's metrics port; tests/it/monitoring.rs checks the
/// monitoring objects themselves.
fn check_monitoring(o: &Objects) {
    check_common(o, "pushroll", true);
    let config = check_serve(o);
    assert!(config.indexer.is_none());
    let indexer_args = check_indexer(o);
    check_rbac(o, "pushroll", "*", &config, &indexer_args);
    assert_eq!(
        o.custom.keys().map(String::as_str).collect::<Vec<_>>(),
        ["PrometheusRule", "ServiceMonitor"]
    );
    assert_eq!(o.services.len(), 2);
    let svc = o.service("pushroll-indexer");
    let spec = svc.spec.as_ref().unwrap();
    let indexer = o.deployment("pushroll-indexer");
    let labels = indexer
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap();
    let labels = labels.labels.clone().unwrap();
    let sel = spec.selector.clone().unwrap();
    assert!(sel.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let ports = spec.ports.as_ref().unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].name.as_deref(), Some("http"));
    let c = container(indexer);
    let target = port_number(c, ports[0].target_port.as_ref().unwrap());
    assert_eq!(target, probe(c, "readiness").1, "the port /metrics is on");
}

#[test]
fn monitoring_overlay_keeps_the_base() {
    let Some(docs) = render("overlays/monitoring") else {
        return;
    };
    let o = parse(docs);
    assert_eq!(o.namespaces.len(), 1);
    check_monitoring(&o);
}

/// The probe paths and the metrics path are real routes of the server: a
/// demo server answers them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_paths_are_served() {
    let o = parse(render_base());
    let p = Pushroll::demo(&[]);
    let client = http();
    let c = container(o.deployment("pushroll"));
    for which in ["liveness", "readiness"] {
        let (path, _) = probe(c, which);
        let r = client.get(p.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{which} probe {path}");
    }
    let r = client.get(p.url("/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404, "an unknown path is not 200");
}

/// overlays/pull (issue 24): the base's checks and least privilege, serve
/// pulling its subscription, nothing exposed beyond the cluster, and serve's
/// ServiceAccount bound to a Google service account (Workload Identity).
#[test]
fn pull_overlay_pulls_with_workload_identity_and_exposes_nothing() {
    let Some(docs) = render("overlays/pull") else {
        return;
    };
    let o = parse(docs);
    check_pull(&o);
}

/// The pull layout: serve pulls its subscription as a Google service
/// account (Workload Identity), and nothing is reachable from outside.
fn check_pull(o: &Objects) {
    check_common(o, "pushroll", true);
    let config = check_serve(o);
    let indexer_args = check_indexer(o);
    check_rbac(o, "pushroll", "*", &config, &indexer_args);
    let pull = config
        .pull
        .as_ref()
        .expect("serve runs with --pull-subscription");
    assert_eq!(pull.subscriptions.len(), 1, "{pull:?}");
    assert!(pull.subscriptions[0].starts_with("projects/"), "{pull:?}");
    assert_eq!(pull.max_outstanding, 64);
    assert!(
        o.custom.is_empty(),
        "no Gateway, no route: {:?}",
        o.custom.keys()
    );
    for svc in &o.services {
        let spec = svc.spec.clone().unwrap_or_default();
        assert!(
            spec.type_.as_deref().is_none_or(|t| t == "ClusterIP"),
            "{:?} is reachable from outside the cluster",
            svc.metadata.name
        );
    }
    let serve_sa = o
        .service_accounts
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("pushroll"))
        .expect("serve's ServiceAccount");
    let gsa = serve_sa
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("iam.gke.io/gcp-service-account"))
        .expect("annotated for Workload Identity");
    assert!(gsa.ends_with(".iam.gserviceaccount.com"), "{gsa}");
    let indexer_sa = o
        .service_accounts
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("pushroll-indexer"))
        .unwrap();
    assert!(
        indexer_sa.metadata.annotations.is_none(),
        "only serve talks to Pub/Sub"
    );
}
