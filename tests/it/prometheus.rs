//! The alerts and the dashboard against a real Prometheus (Debian's
//! `prometheus`, 2.42 here). Prometheus scrapes two `serve` replicas and `index --watch`
//! every second while they handle an end-to-end scenario on the real
//! kube-apiserver and controller-manager with the simulated kubelet: pushes
//! (one that matches nothing), a restart whose rollout completes and one
//! whose rollout fails. Then every alert expression of
//! `deploy/monitoring/prometheusrule.yaml` and every panel query of
//! `deploy/monitoring/dashboard.json` is evaluated through Prometheus' HTTP
//! API: each must parse and run, and name only metrics the two binaries
//! really expose. The failing-rollout alert must be pending or firing, and
//! no other alert may be.
//!
//! Skipped without `prometheus` on PATH or without a real API server;
//! under CI (`PUSHROLL_REQUIRE_PROMETHEUS=1`, `PUSHROLL_REQUIRE_REAL=1`)
//! either absence is a failure.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::indexer::{READY_LIMIT, configmap_lists, start_watch};
use crate::support::kubelet::{digest, pod_deployment, real_with_kubelet};
use crate::support::rollout::{push_until_found, wait_event};
use crate::support::*;
use serde_json::{Value, json};

/// Far above the 1-3 s a rollout takes here, and the 10 s deadline.
const LIMIT: Duration = Duration::from_secs(60);

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// `prometheus` on PATH, or `None` (skip) unless CI requires it.
fn prometheus_binary() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("prometheus"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("PUSHROLL_REQUIRE_PROMETHEUS").as_deref() != Ok("1"),
            "PUSHROLL_REQUIRE_PROMETHEUS=1 but prometheus is not on PATH"
        );
        eprintln!(
            "SKIPPED: no prometheus on PATH (Debian: apt-get install prometheus); \
             the alerts and dashboard were not evaluated"
        );
    }
    found
}

/// The rule groups of the PrometheusRule, as a plain rules file.
fn rule_groups() -> Value {
    let text = std::fs::read_to_string(repo_file("deploy/monitoring/prometheusrule.yaml"))
        .expect("reading deploy/monitoring/prometheusrule.yaml");
    let rule: Value = serde_norway::from_str(&text).expect("the PrometheusRule is YAML");
    assert_eq!(rule["kind"], "PrometheusRule");
    json!({"groups": rule["spec"]["groups"]})
}

/// Every (alert name, expr) of the rules.
fn alerts(groups: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for group in groups["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let name = rule["alert"].as_str().or(rule["record"].as_str()).unwrap();
            out.push((name.to_owned(), rule["expr"].as_str().unwrap().to_owned()));
        }
    }
    out
}

/// Every (panel title, query) of the dashboard, with Grafana's
/// `$__rate_interval` as the 1m it stands for at this scrape interval.
fn panel_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo_file("deploy/monitoring/dashboard.json"))
        .expect("reading deploy/monitoring/dashboard.json");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut out = Vec::new();
    let mut panels: Vec<&Value> = dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = panels.pop() {
        // Rows may nest panels.
        panels.extend(panel["panels"].as_array().into_iter().flatten());
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            let title = panel["title"].as_str().unwrap_or("?");
            out.push((title.to_owned(), expr.replace("$__rate_interval", "1m")));
        }
    }
    assert!(!out.is_empty(), "the dashboard has queries");
    out
}

/// The metric names `expr` selects, from a real PromQL parser.
fn metric_names(expr: &str) -> Result<BTreeSet<String>, String> {
    use promql_parser::parser::Expr;
    struct Names(BTreeSet<String>);
    impl promql_parser::util::ExprVisitor for Names {
        type Error = String;
        fn pre_visit(&mut self, e: &Expr) -> Result<bool, String> {
            let selector = match e {
                Expr::VectorSelector(vs) => vs,
                Expr::MatrixSelector(ms) => &ms.vs,
                _ => return Ok(true),
            };
            let name = selector
                .name
                .clone()
                .ok_or_else(|| format!("a selector without a metric name: {e}"))?;
            self.0.insert(name);
            Ok(true)
        }
    }
    let parsed = promql_parser::parser::parse(expr)?;
    let mut names = Names(BTreeSet::new());
    promql_parser::util::walk_expr(&mut names, &parsed)?;
    Ok(names.0)
}

/// The series names a `/metrics` text exposes: every sample's name, and
/// every declared family's (a family with no sample yet still has its
/// `# TYPE`: a counter's samples end in `_total`, a histogram's in
/// `_bucket`, `_sum` and `_count`).
fn exposed(text: &str, names: &mut BTreeSet<String>) {
    for line in text.lines() {
        if let Some(decl) = line.strip_prefix("# TYPE ") {
            let mut parts = decl.split_whitespace();
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
}

/// A Prometheus process, killed on drop.
struct Prometheus {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Scrapes `targets` (job, address) every second and evaluates `rules`
    /// every second.
    async fn start(binary: &Path, targets: &[(&str, Vec<String>)], rules: &Value) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("rules.yaml"),
            serde_norway::to_string(rules).unwrap(),
        )
        .unwrap();
        let scrape: Vec<Value> = targets
            .iter()
            .map(|(job, addrs)| json!({"job_name": job, "static_configs": [{"targets": addrs}]}))
            .collect();
        let config = json!({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["rules.yaml"],
            "scrape_configs": scrape,
        });
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, serde_norway::to_string(&config).unwrap()).unwrap();
        let port = free_port();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting prometheus");
        let mut prometheus = Prometheus {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let client = http();
        let ready = eventually(Duration::from_secs(30), || async {
            let answer = client
                .get(format!("{}/-/ready", prometheus.base))
                .send()
                .await
                .ok()?;
            (answer.status() == 200).then_some(())
        })
        .await;
        let exited = prometheus.child.try_wait().unwrap();
        assert!(
            ready.is_some(),
            "prometheus not ready within 30 s (exited: {exited:?}; its log is above)"
        );
        prometheus
    }

    /// `GET /api/v1/{path}` with `query`; the whole answer.
    async fn api(&self, path: &str, query: &[(&str, &str)]) -> (u16, Value) {
        let url = reqwest::Url::parse_with_params(&format!("{}/api/v1/{path}", self.base), query)
            .unwrap();
        let answer = http().get(url).send().await.unwrap();
        let status = answer.status().as_u16();
        (status, answer.json().await.unwrap())
    }

    /// An instant query's result vector; panics on an error answer.
    async fn query(&self, expr: &str) -> Vec<Value> {
        let (status, body) = self.api("query", &[("query", expr)]).await;
        assert!(
            status == 200 && body["status"] == "success",
            "{expr}: {status} {body}"
        );
        body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Alerts pending or firing: (name, state).
    async fn active(&self) -> BTreeSet<(String, String)> {
        let (_, body) = self.api("alerts", &[]).await;
        body["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["labels"]["alertname"].as_str().unwrap().to_owned(),
                    a["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_and_panels_run_on_a_real_prometheus_and_name_only_real_metrics() {
    // The files are read first: a broken rule fails even where nothing runs.
    let groups = rule_groups();
    let rules = alerts(&groups);
    let panels = panel_queries();
    for (name, expr) in rules.iter().chain(&panels) {
        metric_names(expr).unwrap_or_else(|e| panic!("{name}: {expr}: {e}"));
    }
    let Some(binary) = prometheus_binary() else {
        return;
    };
    let Some((c, ns, k)) = real_with_kubelet("prom", 2).await else {
        return;
    };
    let image = format!("{REPO}:stable");
    let canary = format!("{REPO}:canary");
    let (old, good, bad) = (digest('a'), digest('b'), digest('e'));
    k.push(&image, &old);
    k.push(&canary, &old);
    c.create(pod_deployment(&ns, "web", &[("app", &image, "Always")]))
        .await;
    let mut crash = pod_deployment(&ns, "crash", &[("app", &canary, "Always")]);
    crash["spec"]["replicas"] = json!(2);
    crash["spec"]["progressDeadlineSeconds"] = json!(10);
    c.create(crash).await;
    k.wait_rollout("Deployment", &ns, "web", LIMIT).await;
    k.wait_rollout("Deployment", &ns, "crash", LIMIT).await;

    // serve and the indexer as deployed: two processes, the index handed
    // over in the ConfigMap.
    let cm_ns = c.ns("pushroll");
    c.ensure_namespace(&cm_ns).await;
    let indexer = start_watch(&c, &cm_ns, &ns, "prom-indexer-0");
    indexer.wait_ready(READY_LIMIT).await;
    // serve is ready once it holds an index: the leader's first write.
    assert!(
        configmap_lists(&c, &cm_ns, &image, LIMIT).await,
        "{}",
        indexer.logs().join("\n")
    );
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("index.json");
    let cm = format!("{cm_ns}/pushroll-index");
    let serve = Pushroll::serve_open(
        &c.kubeconfig,
        &[
            "--index-file",
            missing.to_str().unwrap(),
            "--index-configmap",
            &cm,
        ],
    );
    serve.wait_ready(READY_LIMIT).await;
    // A second serve replica that verifies tokens (the first runs with
    // `--auth none`), so that rejections are counted too.
    let jwks = JwksServer::start(vec![Signer::rsa("rsa-a.pem", "k1").jwk]).await;
    let guarded = Pushroll::demo_verifying(&jwks, &[]);
    guarded.wait_ready(READY_LIMIT).await;
    let prometheus = Prometheus::start(
        &binary,
        &[
            (
                "pushroll-serve",
                vec![serve.addr.to_string(), guarded.addr.to_string()],
            ),
            ("pushroll-indexer", vec![indexer.addr.to_string()]),
        ],
        &groups,
    )
    .await;
    let up = eventually(Duration::from_secs(30), || async {
        let up = prometheus.query("up == 1").await;
        (up.len() == 3).then_some(())
    })
    .await;
    assert!(up.is_some(), "every target scraped");

    // The scenario.
    let client = http();
    let push = wrapped(&insert(REPO, "stable", &good), "m-1", SUBSCRIPTION);
    let (status, _) = post(&client, &guarded, push).await;
    assert_eq!(status, 401, "no token");
    let (status, body) = post(
        &client,
        &serve,
        wrapped(
            &insert(&format!("{REPO}-other"), "v1", &good),
            "m-0",
            SUBSCRIPTION,
        ),
    )
    .await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (200, Some("no-match")),
        "{body}"
    );
    k.push(&image, &good);
    let body = push_until_found(&serve, &insert(REPO, "stable", &good), 1).await;
    assert_eq!(body["workloads"][0]["result"], "restarted", "{body}");
    k.push(&canary, &bad);
    k.crash(&bad);
    let body = push_until_found(&serve, &insert(REPO, "canary", &bad), 1).await;
    assert_eq!(body["workloads"][0]["result"], "restarted", "{body}");
    wait_event(&c, &indexer, &ns, "web", "PushRolloutComplete", LIMIT).await;
    wait_event(&c, &indexer, &ns, "crash", "PushRolloutFailed", LIMIT).await;

    // Prometheus has seen the end of both rollouts.
    let seen = eventually(Duration::from_secs(20), || async {
        let failed = prometheus
            .query("sum(pushroll_rollouts_total{result=\"failed\"}) == 1")
            .await;
        let complete = prometheus
            .query("sum(pushroll_rollouts_total{result=\"complete\"}) == 1")
            .await;
        (!failed.is_empty() && !complete.is_empty()).then_some(())
    })
    .await;
    assert!(
        seen.is_some(),
        "{}\n{}",
        indexer.metrics().await,
        indexer.logs().join("\n")
    );

    // Every query parses and runs, and names only what the binaries expose.
    let mut real = BTreeSet::new();
    exposed(&serve.metrics().await, &mut real);
    exposed(&indexer.metrics().await, &mut real);
    exposed(&guarded.metrics().await, &mut real);
    let mut empty = Vec::new();
    for (name, expr) in rules.iter().chain(&panels) {
        let result = prometheus.query(expr).await;
        for metric in metric_names(expr).unwrap() {
            assert!(
                real.contains(&metric),
                "{name}: {expr} names {metric}, which neither binary exposes"
            );
        }
        if result.is_empty() {
            empty.push(name.clone());
        }
    }
    // The panels this scenario feeds have data.
    for (title, expr) in &panels {
        let fed = [
            "pushroll_pushes_total",
            "pushroll_restarts_total",
            "pushroll_rollouts_total",
        ];
        if fed.iter().any(|m| expr.contains(m)) {
            assert!(!empty.contains(title), "{title}: {expr} returned nothing");
        }
    }

    // The failed rollout alerts; nothing else does.
    let active = eventually(Duration::from_secs(20), || async {
        let active = prometheus.active().await;
        active
            .iter()
            .any(|(name, _)| name == "PushrollRolloutsFailing")
            .then_some(active)
    })
    .await
    .unwrap_or_else(|| panic!("PushrollRolloutsFailing never pending or firing"));
    let names: BTreeSet<&str> = active.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from(["PushrollRolloutsFailing"]),
        "{active:?}"
    );
    k.stop().await;
}
