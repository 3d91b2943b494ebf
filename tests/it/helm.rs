//! The Helm chart `charts/pushroll`, rendered, linted and packaged by Helm's
//! own engine (PyPI `helm-python-sdk`, driven by `scripts/helm.py`; no
//! `helm` binary): lint strict is clean, every layout renders, the schema
//! refuses bad values with its message, each layout matches its kustomize
//! overlay object by object (Helm's labels aside) and passes the manifest
//! checks of tests/it/deploy.rs, the 1.20 rendering passes a real API
//! server's server-side dry-run, and the packaged chart's version is the
//! crate's.
//!
//! One source of truth: the chart and deploy/ are both written by hand and
//! this comparison keeps them equal (charts/pushroll/README.md says why).
//! Without the SDK (`PUSHROLL_HELM_PYTHON`, or `scripts/package-chart.sh
//! --install` once) these tests print SKIPPED, a failure under
//! `PUSHROLL_REQUIRE_HELM=1`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::deploy::{check_common, check_layout, kubectl_present, parse, render, yaml_docs};
use crate::support::cluster::Cluster;
use serde_json::{Value, json};

/// Each layout of the chart: (name, chart values, its kustomize directory
/// under deploy/, the checks of tests/it/deploy.rs it must pass). Adding a
/// layout with an overlay is one row here (and its checks in deploy.rs).
const LAYOUTS: &[(&str, &str, &str, &str)] = &[
    ("standard", "{}", "", "standard"),
    (
        "single",
        r#"{"layout": "single"}"#,
        "overlays/single",
        "single",
    ),
    (
        "namespaced",
        r#"{"layout": "namespaced"}"#,
        "overlays/namespaced",
        "namespaced",
    ),
    (
        "monitoring",
        r#"{"monitoring": {"enabled": true}}"#,
        "overlays/monitoring",
        "monitoring",
    ),
    (
        "pull",
        r#"{"layout": "pull", "pull": {"subscriptions": ["projects/PROJECT_ID/subscriptions/pushroll-CLUSTER_NAME"], "gcpServiceAccount": "pushroll-pull@PROJECT_ID.iam.gserviceaccount.com"}}"#,
        "overlays/pull",
        "pull",
    ),
];

/// Values that have no kustomize counterpart (yet) but must render.
const RENDER_ONLY: &[(&str, &str)] = &[
    (
        "pull",
        r#"{"layout": "pull", "pull": {"subscriptions": ["projects/p/subscriptions/a", "projects/p/subscriptions/b"], "gcpServiceAccount": "pushroll@p.iam.gserviceaccount.com"}}"#,
    ),
    (
        "webhooks",
        r#"{"webhooks": {"secretName": "pushroll-webhooks"}}"#,
    ),
    (
        "single+monitoring",
        r#"{"layout": "single", "monitoring": {"enabled": true}}"#,
    ),
    (
        "namespaced+monitoring",
        r#"{"layout": "namespaced", "monitoring": {"enabled": true}}"#,
    ),
    (
        "digest",
        r#"{"image": {"digest": "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}}"#,
    ),
];

/// The labels Helm's chart adds and kustomize's manifests lack.
const HELM_LABELS: &[&str] = &[
    "helm.sh/chart",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
];

const RELEASE: &str = "pushroll";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chart_dir() -> PathBuf {
    root().join("charts/pushroll")
}

/// The virtualenv python with `helm_python`, or `None` (SKIPPED).
fn helm_python() -> Option<PathBuf> {
    let found = std::env::var_os("PUSHROLL_HELM_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            let out = Command::new("bash")
                .arg(root().join("scripts/package-chart.sh"))
                .arg("--python")
                .stderr(Stdio::null())
                .output()
                .ok()?;
            let path = String::from_utf8(out.stdout).ok()?;
            out.status.success().then(|| PathBuf::from(path.trim()))
        })
        .filter(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var("PUSHROLL_REQUIRE_HELM").as_deref() != Ok("1"),
            "PUSHROLL_REQUIRE_HELM=1 but helm-python-sdk is not installed \
             (PUSHROLL_HELM_PYTHON, or scripts/package-chart.sh --install)"
        );
        eprintln!("SKIPPED: helm-python-sdk not installed (scripts/package-chart.sh --install)");
    }
    found
}

/// Runs `scripts/helm.py ARGS`: Ok(stdout as JSON) or Err(stderr) when Helm
/// refused (exit 2); anything else is a failure of the test.
fn helm(python: &Path, args: &[&str]) -> Result<Value, String> {
    let out = Command::new(python)
        .arg(root().join("scripts/helm.py"))
        .args(args)
        .output()
        .expect("running scripts/helm.py");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    match out.status.code() {
        Some(0) => Ok(serde_json::from_slice(&out.stdout).expect("helm.py prints JSON")),
        Some(2) => Err(stderr),
        other => panic!("helm.py {args:?} exited {other:?}:\n{stderr}"),
    }
}

/// The chart rendered from `chart` (a directory or a .tgz): its manifests'
/// objects, and NOTES.txt.
fn render_chart_from(
    python: &Path,
    chart: &Path,
    values: &str,
    namespace: &str,
    kube_version: Option<&str>,
) -> Result<(Vec<Value>, String), String> {
    let chart = chart.to_str().unwrap();
    let mut args = vec![
        "render",
        chart,
        "--values",
        values,
        "--namespace",
        namespace,
        "--name",
        RELEASE,
    ];
    if let Some(v) = kube_version {
        args.extend(["--kube-version", v]);
    }
    let manifests = helm(python, &args)?;
    let mut docs = Vec::new();
    let mut notes = String::new();
    // Sorted by template path (a BTreeMap): the same order on every run.
    let manifests: BTreeMap<String, String> = serde_json::from_value(manifests).unwrap();
    for (path, text) in manifests {
        if path.ends_with("NOTES.txt") {
            notes = text;
        } else {
            docs.extend(yaml_docs(&text));
        }
    }
    Ok((docs, notes))
}

fn render_chart(
    python: &Path,
    values: &str,
    namespace: &str,
    kube_version: Option<&str>,
) -> Result<(Vec<Value>, String), String> {
    render_chart_from(python, &chart_dir(), values, namespace, kube_version)
}

fn id(v: &Value) -> (String, String, String) {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    (
        s(&v["kind"]),
        s(&v["metadata"]["namespace"]),
        s(&v["metadata"]["name"]),
    )
}

/// Asserts Helm's labels on every object and takes them off, so that what
/// is left compares with kustomize's rendering.
fn strip_helm_labels(docs: &mut [Value]) {
    let version = env!("CARGO_PKG_VERSION");
    for v in docs {
        let what = format!("{:?}", id(v));
        let labels = v["metadata"]["labels"]
            .as_object_mut()
            .unwrap_or_else(|| panic!("{what}: no labels"));
        let want = [
            ("helm.sh/chart", format!("pushroll-{version}")),
            ("app.kubernetes.io/managed-by", "Helm".to_owned()),
            ("app.kubernetes.io/instance", RELEASE.to_owned()),
            ("app.kubernetes.io/version", version.to_owned()),
        ];
        for (k, val) in want {
            assert_eq!(labels.get(k), Some(&json!(val)), "{what}: label {k}");
        }
        for k in HELM_LABELS {
            labels.remove(*k);
        }
    }
}

/// Where two JSON values differ, as JSON-pointer-like paths.
fn differences(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                let (va, vb) = (
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                differences(&format!("{path}/{k}"), va, vb, out);
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                differences(&format!("{path}/{i}"), va, vb, out);
            }
        }
        _ if a != b => out.push(format!("{path}: kustomize {a} / chart {b}")),
        _ => {}
    }
}

/// The chart's objects equal kustomize's, one by one. kustomize's Namespace
/// is the one object the chart leaves to Helm (`--create-namespace`): it
/// must be the release namespace.
fn assert_same_objects(what: &str, kustomize: Vec<Value>, mut chart: Vec<Value>, home: &str) {
    strip_helm_labels(&mut chart);
    let mut expected = BTreeMap::new();
    for v in kustomize {
        if v["kind"] == "Namespace" {
            assert_eq!(v["metadata"]["name"], home, "{what}: kustomize's Namespace");
            continue;
        }
        assert!(expected.insert(id(&v), v).is_none(), "{what}: duplicate");
    }
    let mut got = BTreeMap::new();
    for v in chart {
        assert_ne!(
            v["kind"], "Namespace",
            "{what}: the chart ships a Namespace"
        );
        assert!(got.insert(id(&v), v).is_none(), "{what}: duplicate");
    }
    let only = |a: &BTreeMap<_, Value>, b: &BTreeMap<_, Value>| {
        a.keys()
            .filter(|k| !b.contains_key(*k))
            .cloned()
            .collect::<Vec<_>>()
    };
    // The settings ConfigMap's name carries a hash of its data: when the
    // names differ, the data does, and that is the helpful part to show.
    let settings = |m: &BTreeMap<(String, String, String), Value>| {
        m.iter()
            .find(|((kind, _, name), _)| kind == "ConfigMap" && name.starts_with("pushroll-serve-"))
            .map(|(_, v)| v["data"].clone())
            .unwrap_or_default()
    };
    let mut settings_diff = Vec::new();
    differences(
        "pushroll-serve data",
        &settings(&expected),
        &settings(&got),
        &mut settings_diff,
    );
    assert!(
        expected.keys().eq(got.keys()),
        "{what}: objects only in kustomize {:?}, only in the chart {:?}\n{}",
        only(&expected, &got),
        only(&got, &expected),
        settings_diff.join("\n")
    );
    let mut diffs = Vec::new();
    for (key, want) in &expected {
        differences(&format!("{key:?}"), want, &got[key], &mut diffs);
    }
    assert!(
        diffs.is_empty(),
        "{what}: the chart differs from kustomize:\n{}",
        diffs.join("\n")
    );
}

/// The namespace kustomize installs into (its Deployments').
fn home_of(docs: &[Value]) -> String {
    docs.iter()
        .find(|v| v["kind"] == "Deployment")
        .and_then(|v| v["metadata"]["namespace"].as_str())
        .expect("a Deployment with a namespace")
        .to_owned()
}

#[test]
fn lint_is_clean_under_strict() {
    let Some(py) = helm_python() else { return };
    let chart = chart_dir();
    let rows = LAYOUTS
        .iter()
        .map(|(name, values, ..)| (*name, *values))
        .chain(RENDER_ONLY.iter().copied());
    for (name, values) in rows {
        for kube in [None, Some("v1.20.2")] {
            let mut args = vec!["lint", chart.to_str().unwrap(), "--values", values];
            if let Some(k) = kube {
                args.extend(["--kube-version", k]);
            }
            let report = helm(&py, &args).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(report["total_charts_linted"], 1, "{name}");
            assert_eq!(report["errors"], json!([]), "{name} {kube:?}: {report}");
            // Strict: warnings are failures; severity 1 is information
            // ("icon is recommended").
            let findings: Vec<&Value> = report["messages"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["severity"].as_i64() != Some(1))
                .collect();
            assert!(findings.is_empty(), "{name} {kube:?}: {findings:?}");
        }
    }
}

#[test]
fn every_layout_renders() {
    let Some(py) = helm_python() else { return };
    let rows = LAYOUTS
        .iter()
        .map(|(name, values, ..)| (*name, *values))
        .chain(RENDER_ONLY.iter().copied());
    for (name, values) in rows {
        let (docs, notes) =
            render_chart(&py, values, "pushroll", None).unwrap_or_else(|e| panic!("{name}: {e}"));
        let kinds: Vec<&str> = docs.iter().map(|v| v["kind"].as_str().unwrap()).collect();
        assert!(kinds.contains(&"Deployment"), "{name}: {kinds:?}");
        assert!(
            !kinds.contains(&"Secret"),
            "{name}: the chart ships no Secret"
        );
        // Nothing that faces the internet: serve's Service stays inside.
        for v in &docs {
            assert!(
                !["Ingress", "Gateway", "HTTPRoute"].contains(&v["kind"].as_str().unwrap()),
                "{name}: {:?}",
                id(v)
            );
            if v["kind"] == "Service" {
                assert_eq!(v["spec"]["type"], "ClusterIP", "{name}");
            }
        }
        assert!(notes.contains("What next"), "{name}: NOTES.txt:\n{notes}");
        assert!(notes.contains("curl"), "{name}: NOTES.txt");
    }
}

fn serve_container(docs: &[Value]) -> &Value {
    let d = docs
        .iter()
        .find(|v| v["kind"] == "Deployment" && v["metadata"]["name"] == "pushroll")
        .expect("serve's Deployment");
    &d["spec"]["template"]["spec"]["containers"][0]
}

fn object<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|v| v["kind"] == kind && v["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// Layout pull: serve pulls the subscriptions (PUSHROLL_PULL_SUBSCRIPTION
/// in its settings) as its ServiceAccount, annotated for Workload Identity.
/// Compared with deploy/overlays/pull once it exists (a row of LAYOUTS).
#[test]
fn pull_layout_pulls_as_the_workload_identity() {
    let Some(py) = helm_python() else { return };
    let values = RENDER_ONLY.iter().find(|(n, _)| *n == "pull").unwrap().1;
    let (docs, notes) = render_chart(&py, values, "pushroll", None).unwrap();
    let c = serve_container(&docs);
    let cm_name = c["envFrom"][0]["configMapRef"]["name"].as_str().unwrap();
    let cm = object(&docs, "ConfigMap", cm_name);
    assert_eq!(
        cm["data"]["PUSHROLL_PULL_SUBSCRIPTION"],
        "projects/p/subscriptions/a,projects/p/subscriptions/b"
    );
    let sa = object(&docs, "ServiceAccount", "pushroll");
    assert_eq!(
        sa["metadata"]["annotations"]["iam.gke.io/gcp-service-account"],
        "pushroll@p.iam.gserviceaccount.com"
    );
    assert!(notes.contains("roles/pubsub.subscriber"), "{notes}");
    // Other layouts carry no pull setting and no annotation.
    let (docs, _) = render_chart(&py, "{}", "pushroll", None).unwrap();
    assert!(object(&docs, "ServiceAccount", "pushroll")["metadata"]["annotations"].is_null());
    let c = serve_container(&docs);
    let cm_name = c["envFrom"][0]["configMapRef"]["name"].as_str().unwrap();
    assert!(object(&docs, "ConfigMap", cm_name)["data"]["PUSHROLL_PULL_SUBSCRIPTION"].is_null());
}

/// webhooks.secretName: the Secret mounted (optional, read-only, never
/// shipped) where --webhook-secrets reads it; unset, nothing of it.
#[test]
fn webhooks_secret_is_mounted_not_shipped() {
    let Some(py) = helm_python() else { return };
    let values = RENDER_ONLY
        .iter()
        .find(|(n, _)| *n == "webhooks")
        .unwrap()
        .1;
    let (docs, _) = render_chart(&py, values, "pushroll", None).unwrap();
    let c = serve_container(&docs);
    assert!(
        c["args"]
            .as_array()
            .unwrap()
            .contains(&json!("--webhook-secrets=/etc/pushroll-webhooks")),
        "{}",
        c["args"]
    );
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "webhooks")
        .expect("the webhooks mount");
    // Beside the index's volume, never nested in it.
    assert_eq!(mount["mountPath"], "/etc/pushroll-webhooks");
    assert_eq!(mount["readOnly"], true);
    assert!(mount["subPath"].is_null(), "subPath never updates");
    let pod = &object(&docs, "Deployment", "pushroll")["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "webhooks")
        .unwrap();
    assert_eq!(
        volume["secret"],
        json!({"secretName": "pushroll-webhooks", "optional": true})
    );
    let (docs, _) =
        render_chart(&py, r#"{"webhooks": {"secretName": ""}}"#, "pushroll", None).unwrap();
    let text = serde_json::to_string(&docs).unwrap();
    assert!(!text.contains("webhook"), "no webhooks without the value");
}

#[test]
fn schema_refuses_bad_values_with_its_message() {
    let Some(py) = helm_python() else { return };
    let cases = [
        (
            r#"{"layout": "multi"}"#,
            "at '/layout': value must be one of 'standard', 'single', 'namespaced', 'pull'",
        ),
        (
            r#"{"serve": {"replicas": "2"}}"#,
            "at '/serve/replicas': got string, want integer",
        ),
        (
            r#"{"indexer": {"replicas": 1.5}}"#,
            "at '/indexer/replicas': got number, want integer",
        ),
        (
            r#"{"serve": {"replica": 2}}"#,
            "at '/serve': additional properties 'replica' not allowed",
        ),
        (r#"{"layout": "pull"}"#, "at '/pull/subscriptions'"),
        (
            r#"{"auth": {"subscriptions": ["gcr-push"]}}"#,
            "at '/auth/subscriptions/0': 'gcr-push' does not match pattern",
        ),
        (
            r#"{"serve": {"preStop": {"mode": "exec"}}}"#,
            "at '/serve/preStop/mode': value must be one of 'auto', 'sleep', 'none'",
        ),
        (
            r#"{"serve": {"settings": {"AUDIENCE": "x"}}}"#,
            "'AUDIENCE' does not match pattern '^PUSHROLL_[A-Z0-9_]+$'",
        ),
    ];
    for (values, message) in cases {
        let refused = render_chart(&py, values, "pushroll", None)
            .err()
            .unwrap_or_else(|| panic!("{values} was accepted"));
        assert!(
            refused.contains("HelmValuesError") && refused.contains(message),
            "{values}: expected {message:?} in:\n{refused}"
        );
    }
}

/// Default values and each layout against their kustomize overlay, object
/// by object, Helm's labels aside: changing a flag, a rule, a probe or a
/// label on either side fails here.
#[test]
fn layouts_match_kustomize_object_by_object() {
    let Some(py) = helm_python() else { return };
    if !kubectl_present() {
        eprintln!("SKIPPED: kubectl not found; nothing to compare the chart with");
        return;
    }
    for (name, values, dir, _) in LAYOUTS {
        let kustomize = render(dir).expect("kubectl is present");
        let home = home_of(&kustomize);
        let (chart, _) = render_chart(&py, values, &home, None).unwrap();
        assert_same_objects(&format!("{name} vs deploy/{dir}"), kustomize, chart, &home);
    }
}

/// The chart's own objects pass every check that deploy/'s pass (flags
/// parsed by the binary's clap, security context, least-privilege RBAC),
/// whatever the comparison above says.
#[test]
fn chart_passes_the_manifest_checks() {
    let Some(py) = helm_python() else { return };
    for (name, values, dir, checks) in LAYOUTS {
        let home = if *dir == "overlays/namespaced" {
            "team-a"
        } else {
            "pushroll"
        };
        let (mut docs, _) = render_chart(&py, values, home, None).unwrap();
        strip_helm_labels(&mut docs);
        let o = parse(docs);
        eprintln!("checking the chart's layout {name}");
        check_common(&o, home, true);
        check_layout(checks, &o);
    }
}

/// `serve.preStop.mode`: `auto` follows the cluster's version (the sleep
/// hook from 1.30), `none` and `sleep` force it; the PDB is policy/v1 from
/// 1.21 and policy/v1beta1 before.
#[test]
fn pre_stop_and_pdb_follow_the_cluster_version() {
    let Some(py) = helm_python() else { return };
    let cases = [
        ("{}", Some("v1.30.0"), true, "policy/v1"),
        ("{}", None, true, "policy/v1"),
        ("{}", Some("v1.29.9"), false, "policy/v1"),
        ("{}", Some("v1.20.2"), false, "policy/v1beta1"),
        (
            r#"{"serve": {"preStop": {"mode": "none"}}}"#,
            None,
            false,
            "policy/v1",
        ),
        (
            r#"{"serve": {"preStop": {"mode": "sleep", "seconds": 7}}}"#,
            Some("v1.20.2"),
            true,
            "policy/v1beta1",
        ),
    ];
    for (values, kube, sleeps, pdb) in cases {
        let (docs, _) = render_chart(&py, values, "pushroll", kube).unwrap();
        let hook = &serve_container(&docs)["lifecycle"]["preStop"]["sleep"]["seconds"];
        assert_eq!(!hook.is_null(), sleeps, "{values} on {kube:?}: {hook}");
        if sleeps {
            let want = if values.contains("\"seconds\": 7") {
                7
            } else {
                5
            };
            assert_eq!(hook, &json!(want));
        }
        assert_eq!(
            object(&docs, "PodDisruptionBudget", "pushroll")["apiVersion"],
            pdb,
            "{values} on {kube:?}"
        );
    }
}

/// `kubectl apply --server-side --dry-run=server` of `docs` as `kubeconfig`.
fn dry_run(kubeconfig: &str, docs: &[Value]) -> Result<String, String> {
    let mut child = Command::new("kubectl")
        .args([
            "--kubeconfig",
            kubeconfig,
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=pushroll-helm-test",
            "--dry-run=server",
            "-f",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running kubectl");
    let input =
        serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "List", "items": docs})).unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), &input).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// The default and `single` layouts, rendered for the real API server's own
/// version (as `helm install` renders them: no preStop sleep before 1.30,
/// policy/v1beta1 PDB before 1.21), pass its server-side dry-run; forcing
/// the sleep hook there is refused, so the dry-run does judge the objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_dry_run_passes_on_the_real_api_server() {
    let Some(py) = helm_python() else { return };
    if !kubectl_present() {
        eprintln!("SKIPPED: kubectl not found");
        return;
    }
    let Some(c) = Cluster::real().await else {
        return;
    };
    let version = c.client.apiserver_version().await.unwrap().git_version;
    let ns = c.ns("helm");
    c.ensure_namespace(&ns).await;
    let kubeconfig = c.kubeconfig.to_str().unwrap().to_owned();
    for values in ["{}", r#"{"layout": "single"}"#] {
        let (docs, _) = render_chart(&py, values, &ns, Some(&version)).unwrap();
        assert!(
            serve_container(&docs)["lifecycle"].is_null(),
            "{version} has no preStop sleep"
        );
        let out = dry_run(&kubeconfig, &docs)
            .unwrap_or_else(|e| panic!("{values} on {version}: dry-run refused:\n{e}"));
        // One line per object, e.g. `deployment.apps/pushroll
        // serverside-applied (server dry run)`.
        for v in &docs {
            let kind = v["kind"].as_str().unwrap().to_lowercase();
            let name = v["metadata"]["name"].as_str().unwrap();
            let applied = out.lines().any(|l| {
                l.starts_with(&kind)
                    && l.contains(&format!("/{name} "))
                    && l.ends_with("serverside-applied (server dry run)")
            });
            assert!(applied, "{values}: {kind} {name} not applied:\n{out}");
        }
    }
    let forced = r#"{"serve": {"preStop": {"mode": "sleep"}}}"#;
    let (docs, _) = render_chart(&py, forced, &ns, Some(&version)).unwrap();
    let refused = dry_run(&kubeconfig, &docs).expect_err("a sleep hook on 1.20 must be refused");
    assert!(refused.contains("sleep"), "{refused}");
}

/// scripts/package-chart.sh's packaging: the archive's version and
/// appVersion are the crate's, Chart.yaml in the tree says the same, and
/// the packaged chart (with deploy/monitoring's files resolved into it)
/// renders the monitoring objects.
#[test]
fn packaged_chart_version_is_the_crate_version() {
    let Some(py) = helm_python() else { return };
    let version = env!("CARGO_PKG_VERSION");
    let chart_yaml: Value =
        serde_norway::from_str(&std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap())
            .unwrap();
    assert_eq!(chart_yaml["version"], version, "Chart.yaml version");
    assert_eq!(chart_yaml["appVersion"], version, "Chart.yaml appVersion");

    let dest = tempfile::tempdir().unwrap();
    let out = helm(
        &py,
        &[
            "package",
            chart_dir().to_str().unwrap(),
            "--destination",
            dest.path().to_str().unwrap(),
        ],
    )
    .unwrap();
    let archive = PathBuf::from(out["archive"].as_str().unwrap());
    assert_eq!(archive, dest.path().join(format!("pushroll-{version}.tgz")));
    assert_eq!(out["metadata"]["version"], version);
    assert_eq!(out["metadata"]["appVersion"], version);

    let (docs, _) = render_chart_from(
        &py,
        &archive,
        r#"{"monitoring": {"enabled": true}}"#,
        "pushroll",
        None,
    )
    .unwrap();
    let rule = object(&docs, "PrometheusRule", "pushroll");
    assert!(
        rule["spec"]["groups"]
            .as_array()
            .is_some_and(|g| !g.is_empty()),
        "the packaged chart carries the alerts"
    );
    let dashboard = object(&docs, "ConfigMap", "pushroll-dashboard");
    let json: Value =
        serde_json::from_str(dashboard["data"]["pushroll.json"].as_str().unwrap()).unwrap();
    assert_eq!(json["uid"], "pushroll");
}
