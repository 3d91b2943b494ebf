//! `deploy/monitoring`, the kustomize component with pushroll's alerts,
//! scraping and dashboard: the PrometheusRule passes `promtool check rules`
//! and the unit tests of `tests/monitoring/rules-test.yaml`, which fire and
//! silence every alert; every alert is labelled, annotated and has a
//! runbook in docs/operations.md; the alerts and the dashboard name only
//! metrics pushroll registers; and the rendered overlays carry the objects
//! the operator and Grafana read, checked by structure (the CRD schemas are
//! not vendored). Without `promtool` or `kubectl` the tests that need them
//! are skipped; `PUSHROLL_REQUIRE_PROMETHEUS=1` and
//! `PUSHROLL_REQUIRE_KUBECTL=1` make a missing tool a failure.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

const RUNBOOK_PREFIX: &str = "https://github.com/pushroll/pushroll/blob/main/docs/operations.md#";

/// The dashboard's panels that must be there, and a metric each must query.
const PANELS: &[(&str, &str)] = &[
    ("Pushes by outcome", "pushroll_pushes_total"),
    ("Push latency", "pushroll_push_duration_seconds_bucket"),
    ("Restarts by result", "pushroll_restarts_total"),
    ("Rollouts by result", "pushroll_rollouts_total"),
    (
        "Rollout duration",
        "pushroll_rollout_duration_seconds_bucket",
    ),
    ("Pending pushes", "pushroll_pending"),
    ("Index age", "pushroll_index_generated_timestamp_seconds"),
    ("Notifications by result", "pushroll_notifications_total"),
    (
        "Token rejections by reason",
        "pushroll_token_rejections_total",
    ),
];

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml_docs(text: &str) -> Vec<Value> {
    use serde::Deserialize as _;
    serde_norway::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("a YAML document that maps to JSON"))
        .filter(|v| !v.is_null())
        .collect()
}

fn read_yaml(rel: &str) -> Value {
    serde_norway::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn tool_present(tool: &str, version_args: &[&str], require_env: &str) -> bool {
    let found = Command::new(tool)
        .args(version_args)
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var(require_env).as_deref() != Ok("1"),
            "{require_env}=1 but {tool} is not on PATH"
        );
    }
    found
}

fn promtool_present(what: &str) -> bool {
    let found = tool_present("promtool", &["--version"], "PUSHROLL_REQUIRE_PROMETHEUS");
    if !found {
        eprintln!("SKIPPED: promtool not found (Debian: apt-get install prometheus); {what}");
    }
    found
}

fn kubectl_present(what: &str) -> bool {
    let found = tool_present(
        "kubectl",
        &["version", "--client"],
        "PUSHROLL_REQUIRE_KUBECTL",
    );
    if !found {
        eprintln!("SKIPPED: kubectl not found; {what}");
    }
    found
}

/// `kubectl kustomize DIR`.
fn kustomize(dir: &Path) -> Vec<Value> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("running kubectl kustomize");
    assert!(
        out.status.success(),
        "kubectl kustomize {}:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    yaml_docs(&String::from_utf8(out.stdout).unwrap())
}

/// Runs promtool in `dir`; its output on failure.
fn promtool(dir: &Path, args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running promtool");
    assert!(
        out.status.success(),
        "promtool {}:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn rule() -> Value {
    read_yaml("deploy/monitoring/prometheusrule.yaml")
}

/// Every alerting rule of the PrometheusRule.
fn alerts(rule: &Value) -> Vec<Value> {
    let groups = rule["spec"]["groups"].as_array().expect("spec.groups");
    groups
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").clone())
        .filter(|r| r.get("alert").is_some())
        .collect()
}

fn dashboard() -> Value {
    serde_json::from_str(&read("deploy/monitoring/dashboard.json")).expect("dashboard.json")
}

/// A Prometheus duration (`[0-9]+(ms|[smhdwy])`, units largest first, each
/// at most once), e.g. `1h30m`.
fn is_prometheus_duration(s: &str) -> bool {
    const UNITS: [&str; 7] = ["y", "w", "d", "h", "m", "s", "ms"];
    let mut rest = s;
    let mut next_unit = 0;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        // `ms` before `m`, so that `5ms` is not `5m` followed by `s`.
        let Some(unit) = (next_unit..UNITS.len())
            .filter(|&i| rest.starts_with(UNITS[i]))
            .max_by_key(|&i| UNITS[i].len())
        else {
            return false;
        };
        rest = &rest[UNITS[unit].len()..];
        next_unit = unit + 1;
    }
    true
}

/// The metric names a PromQL expression selects: what is left of its
/// identifiers once strings, label matchers, ranges, the label lists of
/// `by`/`without`/`on`/`ignoring`/`group_*`, function calls and keywords
/// are taken out. A token scan, not a parser; enough for these rules.
fn metric_names(expr: &str) -> BTreeSet<String> {
    // Keywords, and the aggregations, which `by (...)` may separate from
    // their parenthesis.
    const KEYWORDS: [&str; 26] = [
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "inf",
        "nan",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "atan2",
    ];
    const LABEL_LISTS: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut skip_label_list = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                while i < chars.len() && chars[i] != close {
                    if chars[i] == '"' {
                        i += 1;
                        while i < chars.len() && chars[i] != '"' {
                            i += if chars[i] == '\\' { 2 } else { 1 };
                        }
                    }
                    i += 1;
                }
                i += 1;
            }
            '(' if skip_label_list => {
                while i < chars.len() && chars[i] != ')' {
                    i += 1;
                }
                i += 1;
                skip_label_list = false;
            }
            c if c.is_ascii_digit()
                || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                // A number (1e3, 0x1f, 0.5) or a duration.
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut j = i;
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                let lower = word.to_ascii_lowercase();
                if LABEL_LISTS.contains(&lower.as_str()) {
                    skip_label_list = chars.get(j) == Some(&'(');
                } else if KEYWORDS.contains(&lower.as_str()) || chars.get(j) == Some(&'(') {
                    // A keyword, or a function or aggregation called.
                } else {
                    names.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// The metrics src/metrics.rs registers: `register(r, "name", ...)` and
/// `register_seconds(r, "name", ...)` (which adds `_seconds`), prefixed
/// `pushroll_`. Read from the source because the registry leaves a family
/// out of its text until a label set is used.
fn registered_names() -> BTreeSet<String> {
    let source = read("src/metrics.rs");
    let mut names = BTreeSet::new();
    for (call, suffix) in [("register(", ""), ("register_seconds(", "_seconds")] {
        for (at, _) in source.match_indices(call) {
            let rest = source[at + call.len()..].trim_start();
            let Some(rest) = rest.strip_prefix("r,") else {
                continue;
            };
            let Some(rest) = rest.trim_start().strip_prefix('"') else {
                continue;
            };
            let name = &rest[..rest.find('"').unwrap()];
            names.insert(format!("pushroll_{name}{suffix}"));
        }
    }
    assert!(
        names.contains("pushroll_notifications")
            && names.contains("pushroll_push_duration_seconds")
            && names.len() > 30,
        "src/metrics.rs registers {names:?}"
    );
    names
}

/// Whether a sample name is one of pushroll's metrics: a registered name,
/// or one with a counter's or a histogram's suffix. Where the registry
/// exposes the family (a label set in use), its type decides the suffix.
fn is_pushroll_metric(
    sample: &str,
    registered: &BTreeSet<String>,
    types: &BTreeMap<String, String>,
) -> bool {
    let suffixes: &[&str] = &["", "_total", "_bucket", "_sum", "_count"];
    suffixes.iter().any(|suffix| {
        let Some(base) = sample.strip_suffix(suffix) else {
            return false;
        };
        if !registered.contains(base) {
            return false;
        }
        match types.get(base).map(String::as_str) {
            Some("counter") => *suffix == "_total",
            Some("histogram") => ["_bucket", "_sum", "_count"].contains(suffix),
            Some(_) => suffix.is_empty(),
            None => true,
        }
    })
}

/// The types of the families the registry writes out now.
fn exposed_types() -> BTreeMap<String, String> {
    let text = pushroll::metrics::Metrics::new().encode();
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|rest| {
            let (name, kind) = rest.split_once(' ').unwrap();
            (name.to_owned(), kind.to_owned())
        })
        .collect()
}

/// GitHub's anchor of a Markdown heading: lower case, punctuation other
/// than `-` and `_` dropped, spaces as `-`.
fn github_anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of docs/operations.md's headings (outside code blocks).
fn doc_anchors() -> BTreeSet<String> {
    let mut anchors = BTreeSet::new();
    let mut in_code = false;
    for line in read("docs/operations.md").lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code || !line.starts_with('#') {
            continue;
        }
        let text = line.trim_start_matches('#');
        if text.starts_with(' ') {
            anchors.insert(github_anchor(text));
        }
    }
    anchors
}

#[test]
fn the_token_scan_finds_metric_names() {
    let names = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(r#"sum by (kind) (increase(pushroll_rollouts_total{result="failed"}[30m])) > 0"#),
        ["pushroll_rollouts_total"]
    );
    assert_eq!(
        names(r#"kube_deployment_status_replicas_available{namespace="pushroll"} < 1"#),
        ["kube_deployment_status_replicas_available"]
    );
    assert_eq!(
        names("time() - max(pushroll_index_generated_timestamp_seconds) > 3600"),
        ["pushroll_index_generated_timestamp_seconds"]
    );
    assert_eq!(
        names("sum(a) > 0 unless on () sum(b{x=~\"y|z\"}) or absent(c) * 1e3"),
        ["a", "b", "c"]
    );
    assert_eq!(
        names("histogram_quantile(0.99, sum without (pod) (rate(h_bucket[5m] offset 1h)))"),
        ["h_bucket"]
    );
    assert_eq!(
        names("max by (reason) (p) / on (x) group_left (y) count (q)"),
        ["p", "q"]
    );
    let registered = BTreeSet::from(["pushroll_a".to_owned(), "pushroll_h_seconds".to_owned()]);
    let types = BTreeMap::from([("pushroll_a".to_owned(), "counter".to_owned())]);
    assert!(is_pushroll_metric("pushroll_a_total", &registered, &types));
    assert!(!is_pushroll_metric("pushroll_a", &registered, &types));
    assert!(is_pushroll_metric(
        "pushroll_h_seconds_bucket",
        &registered,
        &types
    ));
    assert!(!is_pushroll_metric("pushroll_b_total", &registered, &types));
    assert!(is_prometheus_duration("15m") && is_prometheus_duration("1h30m"));
    assert!(is_prometheus_duration("500ms") && is_prometheus_duration("24h"));
    for bad in ["", "15", "m", "15 m", "1m1h", "1.5h", "10min", "5mm"] {
        assert!(!is_prometheus_duration(bad), "{bad:?}");
    }
    assert_eq!(
        github_anchor("PushrollRolloutsFailing"),
        "pushrollrolloutsfailing"
    );
    assert_eq!(
        github_anchor("One Deployment (`serve --indexer`)"),
        "one-deployment-serve---indexer"
    );
}

/// The rules as Prometheus reads them (the PrometheusRule's spec), and
/// the unit tests beside them.
#[test]
fn rules_pass_promtool_check_and_their_unit_tests() {
    if !promtool_present("the alerting rules are not checked") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = serde_norway::to_string(&rule()["spec"]).unwrap();
    std::fs::write(dir.path().join("rules.yaml"), spec).unwrap();
    std::fs::copy(
        repo("tests/monitoring/rules-test.yaml"),
        dir.path().join("rules-test.yaml"),
    )
    .unwrap();
    promtool(dir.path(), &["check", "rules", "rules.yaml"]);
    promtool(dir.path(), &["test", "rules", "rules-test.yaml"]);
}

#[test]
fn every_alert_is_labelled_annotated_and_has_a_runbook() {
    let rule = rule();
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["kind"], "PrometheusRule");
    let alerts = alerts(&rule);
    assert!(alerts.len() >= 10, "{} alerts", alerts.len());
    let anchors = doc_anchors();
    let mut seen = BTreeSet::new();
    for a in &alerts {
        let name = a["alert"].as_str().expect("alert is a string");
        assert!(seen.insert(name), "{name} twice");
        assert!(
            name.starts_with("Pushroll") && name.chars().all(|c| c.is_ascii_alphanumeric()),
            "{name}"
        );
        assert!(
            a["expr"].as_str().is_some_and(|e| !e.trim().is_empty()),
            "{name}: expr"
        );
        if let Some(f) = a.get("for") {
            assert!(
                f.as_str().is_some_and(is_prometheus_duration),
                "{name}: for {f}"
            );
        }
        let severity = a["labels"]["severity"].as_str();
        assert!(
            matches!(severity, Some("warning" | "critical")),
            "{name}: severity {severity:?}"
        );
        for key in ["summary", "description"] {
            assert!(
                a["annotations"][key]
                    .as_str()
                    .is_some_and(|s| s.trim().len() > 10),
                "{name}: annotations.{key}"
            );
        }
        let url = a["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no runbook_url"));
        let anchor = url
            .strip_prefix(RUNBOOK_PREFIX)
            .unwrap_or_else(|| panic!("{name}: runbook_url {url} is not in docs/operations.md"));
        assert_eq!(
            anchor,
            github_anchor(name),
            "{name}: the runbook is `### {name}`"
        );
        assert!(
            anchors.contains(anchor),
            "{name}: docs/operations.md has no heading `### {name}`"
        );
    }
    // The alert the counter's first increment must fire.
    let failing = alerts
        .iter()
        .find(|a| a["alert"] == "PushrollRolloutsFailing")
        .expect("PushrollRolloutsFailing");
    assert!(
        failing["expr"]
            .as_str()
            .unwrap()
            .contains(r#"pushroll_rollouts_total{result="failed"}"#)
    );
}

/// Each alert is fired by at least one test case and kept silent by
/// another, and every case names an alert that exists.
#[test]
fn every_alert_fires_and_stays_silent_in_the_unit_tests() {
    let tests = read_yaml("tests/monitoring/rules-test.yaml");
    assert_eq!(tests["rule_files"], json!(["rules.yaml"]));
    let names: BTreeSet<String> = alerts(&rule())
        .iter()
        .map(|a| a["alert"].as_str().unwrap().to_owned())
        .collect();
    let mut firing: BTreeMap<String, usize> = BTreeMap::new();
    let mut silent: BTreeMap<String, usize> = BTreeMap::new();
    for group in tests["tests"].as_array().expect("tests") {
        let what = group["name"].as_str().expect("every test has a name");
        assert_eq!(group["interval"], "1m", "{what}: interval");
        assert!(
            group["input_series"]
                .as_array()
                .is_some_and(|s| !s.is_empty()),
            "{what}: input_series"
        );
        for case in group["alert_rule_test"]
            .as_array()
            .expect("alert_rule_test")
        {
            let alert = case["alertname"].as_str().expect("alertname").to_owned();
            assert!(names.contains(&alert), "{what}: no alert {alert}");
            let expected = case["exp_alerts"].as_array().cloned().unwrap_or_default();
            for exp in &expected {
                let labels = exp["exp_labels"].as_object().expect("exp_labels");
                assert!(labels.contains_key("severity"), "{what}: {alert}'s labels");
                let annotations = exp["exp_annotations"].as_object().expect("exp_annotations");
                assert!(
                    annotations.contains_key("summary"),
                    "{what}: {alert}'s annotations"
                );
            }
            let tally = if expected.is_empty() {
                &mut silent
            } else {
                &mut firing
            };
            *tally.entry(alert).or_default() += 1;
        }
    }
    for name in &names {
        assert!(firing.contains_key(name), "no test case fires {name}");
        assert!(
            silent.contains_key(name),
            "no test case keeps {name} silent"
        );
    }
}

#[test]
fn alerts_and_dashboard_name_only_pushroll_metrics() {
    let registered = registered_names();
    let types = exposed_types();
    for name in types.keys() {
        assert!(
            registered.contains(name),
            "{name} is not found in src/metrics.rs"
        );
    }
    let mut exprs: Vec<(String, String)> = alerts(&rule())
        .iter()
        .map(|a| {
            (
                a["alert"].as_str().unwrap().to_owned(),
                a["expr"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for p in dashboard()["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            exprs.push((
                format!("panel {}", p["title"]),
                t["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    for (what, expr) in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{what}: no metric in {expr}");
        for name in names {
            assert!(
                name.starts_with("pushroll_"),
                "{what}: {name} is not pushroll's own metric"
            );
            assert!(
                is_pushroll_metric(&name, &registered, &types),
                "{what}: pushroll registers no {name}"
            );
        }
    }
}

#[test]
fn dashboard_has_the_panels_and_asks_for_a_prometheus_datasource() {
    let d = dashboard();
    assert_eq!(d["uid"], "pushroll");
    assert_eq!(d["refresh"], "30s");
    assert!(
        d["schemaVersion"]
            .as_u64()
            .is_some_and(|v| (36..=41).contains(&v)),
        "schemaVersion {}",
        d["schemaVersion"]
    );
    let vars = d["templating"]["list"].as_array().expect("templating");
    let ds = vars
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    assert_eq!(vars.len(), 1, "the exprs may use no other variable");

    let panels = d["panels"].as_array().expect("panels");
    let want_ds = json!({"type": "prometheus", "uid": "${datasource}"});
    let mut titles = BTreeSet::new();
    let mut cells = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for p in panels {
        let title = p["title"].as_str().expect("a title");
        assert!(titles.insert(title), "panel title {title:?} twice");
        assert!(ids.insert(p["id"].as_u64().expect("id")), "{title}: id");
        assert!(
            matches!(p["type"].as_str(), Some("timeseries" | "stat")),
            "{title}: type {}",
            p["type"]
        );
        assert_eq!(p["datasource"], want_ds, "{title}");
        let pos = |k: &str| {
            p["gridPos"][k]
                .as_u64()
                .unwrap_or_else(|| panic!("{title}: gridPos.{k}"))
        };
        let (h, w, x, y) = (pos("h"), pos("w"), pos("x"), pos("y"));
        assert!(h > 0 && w > 0 && x + w <= 24, "{title}: gridPos");
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(cells.insert((cx, cy)), "{title} overlaps another panel");
            }
        }
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no targets");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert!(
                refs.insert(t["refId"].as_str().expect("refId")),
                "{title}: refId"
            );
            if !t["datasource"].is_null() {
                assert_eq!(t["datasource"], want_ds, "{title}");
            }
            let expr = t["expr"].as_str().expect("expr");
            assert!(
                !expr.replace("$__rate_interval", "").contains('$'),
                "{title}: a template variable other than $__rate_interval in {expr}"
            );
        }
    }
    for (title, metric) in PANELS {
        let p = panels
            .iter()
            .find(|p| p["title"] == *title)
            .unwrap_or_else(|| panic!("no panel {title:?}"));
        assert!(
            p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| metric_names(t["expr"].as_str().unwrap()).contains(*metric)),
            "panel {title:?} does not query {metric}"
        );
    }
    let latency = panels
        .iter()
        .find(|p| p["title"] == "Push latency")
        .unwrap();
    let exprs: Vec<&str> = latency["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["expr"].as_str().unwrap())
        .collect();
    assert!(
        exprs.iter().any(|e| e.contains("histogram_quantile(0.5,"))
            && exprs.iter().any(|e| e.contains("histogram_quantile(0.99,")),
        "p50 and p99: {exprs:?}"
    );
}

/// The panels' queries parse as PromQL: promtool checks them as recording
/// rules, with `$__rate_interval` as Grafana would give it.
#[test]
fn dashboard_queries_parse() {
    if !promtool_present("the dashboard's queries are not parsed") {
        return;
    }
    let mut rules = Vec::new();
    for p in dashboard()["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m");
            rules.push(json!({
                "record": format!("dashboard:panel{}:{}", p["id"], t["refId"].as_str().unwrap()),
                "expr": expr,
            }));
        }
    }
    let file = json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("dashboard.yaml"),
        serde_norway::to_string(&file).unwrap(),
    )
    .unwrap();
    promtool(dir.path(), &["check", "rules", "dashboard.yaml"]);
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter()
        .find(|v| v["kind"] == kind && v["metadata"]["name"] == name)
}

fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().expect("a string").to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn pod_labels(deployment: &Value) -> BTreeMap<String, String> {
    string_map(&deployment["spec"]["template"]["metadata"]["labels"])
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The monitoring objects of a rendering whose objects live in `home`.
fn check_monitoring(docs: &[Value], home: &str) {
    let of_group = |group: &str| -> Vec<&Value> {
        docs.iter()
            .filter(|v| {
                v["apiVersion"]
                    .as_str()
                    .is_some_and(|a| a.starts_with(&format!("{group}/")))
            })
            .collect()
    };
    let operator = of_group("monitoring.coreos.com");
    assert_eq!(
        operator.len(),
        2,
        "one PrometheusRule and one ServiceMonitor"
    );

    // The PrometheusRule, as written (kustomize changes only its namespace
    // and labels).
    let rule = find(docs, "PrometheusRule", "pushroll").expect("the PrometheusRule pushroll");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["metadata"]["namespace"], home);
    let groups = rule["spec"]["groups"].as_array().expect("spec.groups");
    let mut group_names = BTreeSet::new();
    for g in groups {
        let name = g["name"].as_str().expect("a group name");
        assert!(
            !name.is_empty() && group_names.insert(name),
            "group {name:?}"
        );
        let rules = g["rules"].as_array().expect("rules");
        assert!(!rules.is_empty(), "group {name} is empty");
        for r in rules {
            let alert = r["alert"].as_str().expect("rules[].alert is a string");
            assert!(r["expr"].is_string(), "{alert}: expr");
            if let Some(f) = r.get("for") {
                assert!(
                    f.as_str().is_some_and(is_prometheus_duration),
                    "{alert}: for {f}"
                );
            }
        }
    }
    assert_eq!(
        rule["spec"],
        self::rule()["spec"],
        "the rendered spec is the file's"
    );

    // The ServiceMonitor takes both Services, by a port name they share.
    let services: Vec<&Value> = ["pushroll", "pushroll-indexer"]
        .iter()
        .map(|n| find(docs, "Service", n).unwrap_or_else(|| panic!("no Service {n}")))
        .collect();
    let sm = find(docs, "ServiceMonitor", "pushroll").expect("the ServiceMonitor pushroll");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["metadata"]["namespace"], home);
    let selector = string_map(&sm["spec"]["selector"]["matchLabels"]);
    assert!(
        sm["spec"]["selector"]["matchExpressions"].is_null(),
        "matchLabels only"
    );
    let ns_selector = &sm["spec"]["namespaceSelector"];
    assert!(
        ns_selector.is_null() || ns_selector["matchNames"] == json!([home]),
        "namespaceSelector {ns_selector} does not pick {home}"
    );
    let endpoints = sm["spec"]["endpoints"].as_array().expect("endpoints");
    assert!(!endpoints.is_empty());
    for svc in &services {
        let name = &svc["metadata"]["name"];
        assert_eq!(svc["metadata"]["namespace"], home, "Service {name}");
        let labels = string_map(&svc["metadata"]["labels"]);
        assert!(
            selects(&selector, &labels),
            "the ServiceMonitor's {selector:?} misses Service {name} ({labels:?})"
        );
        let ports: BTreeSet<&str> = svc["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().expect("named ports"))
            .collect();
        for e in endpoints {
            let port = e["port"].as_str().expect("endpoints[].port is a name");
            assert!(ports.contains(port), "Service {name} has no port {port}");
            assert_eq!(e["path"], "/metrics");
            if let Some(i) = e.get("interval") {
                assert!(
                    i.as_str().is_some_and(is_prometheus_duration),
                    "interval {i}"
                );
            }
        }
    }
    // No other Service is taken by accident.
    let taken = docs
        .iter()
        .filter(|v| v["kind"] == "Service")
        .filter(|v| selects(&selector, &string_map(&v["metadata"]["labels"])))
        .count();
    assert_eq!(taken, 2);

    // pushroll-indexer reaches the indexer pods' metrics port, and only them.
    let indexer_svc = services[1];
    let svc_selector = string_map(&indexer_svc["spec"]["selector"]);
    assert_eq!(indexer_svc["spec"]["type"], "ClusterIP");
    let serve = find(docs, "Deployment", "pushroll").expect("the serve Deployment");
    assert!(!selects(&svc_selector, &pod_labels(serve)));
    match find(docs, "Deployment", "pushroll-indexer") {
        Some(indexer) => {
            assert!(selects(&svc_selector, &pod_labels(indexer)));
            let container = &indexer["spec"]["template"]["spec"]["containers"][0];
            for p in indexer_svc["spec"]["ports"].as_array().unwrap() {
                let target = p["targetPort"].as_str().expect("a named targetPort");
                let port = container["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|cp| cp["name"] == target)
                    .unwrap_or_else(|| panic!("the indexer has no port {target}"));
                let listen = format!(":{}", port["containerPort"]);
                assert!(
                    container["args"].as_array().unwrap().iter().any(|a| a
                        .as_str()
                        .is_some_and(|a| a.starts_with("--listen=") && a.ends_with(&listen))),
                    "the indexer does not listen on {listen}"
                );
            }
        }
        None => {
            // overlays/single: serve runs the indexer and exposes its
            // metrics; the Service selects nothing there.
            let args = &serve["spec"]["template"]["spec"]["containers"][0]["args"];
            assert!(
                args.as_array().unwrap().iter().any(|a| a == "--indexer"),
                "no indexer Deployment, and serve runs without --indexer"
            );
        }
    }

    // The dashboard ConfigMap for Grafana's sidecar: the file, unhashed.
    let cm = find(docs, "ConfigMap", "pushroll-dashboard").expect("ConfigMap pushroll-dashboard");
    assert_eq!(cm["metadata"]["namespace"], home);
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let data = cm["data"].as_object().expect("data");
    assert_eq!(data.len(), 1, "one dashboard");
    let (key, text) = data.iter().next().unwrap();
    assert!(key.ends_with(".json"), "{key}");
    let rendered: Value = serde_json::from_str(text.as_str().unwrap()).expect("the dashboard JSON");
    let panels = rendered["panels"].as_array().expect("panels");
    let titles: BTreeSet<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    assert_eq!(titles.len(), panels.len(), "panel titles are unique");
    for (title, _) in PANELS {
        let p = panels
            .iter()
            .find(|p| p["title"] == *title)
            .unwrap_or_else(|| panic!("no panel {title:?}"));
        assert!(
            p["targets"].as_array().is_some_and(|t| !t.is_empty()),
            "panel {title:?} has no targets"
        );
    }
    assert_eq!(rendered, dashboard(), "the ConfigMap holds dashboard.json");
}

fn kinds_and_names(docs: &[Value]) -> BTreeSet<(String, String)> {
    docs.iter()
        .map(|v| {
            (
                v["kind"].as_str().unwrap().to_owned(),
                v["metadata"]["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn monitoring_overlay_is_the_base_plus_monitoring() {
    if !kubectl_present("deploy/overlays/monitoring not rendered") {
        return;
    }
    let base = kustomize(&repo("deploy"));
    assert!(
        base.iter().all(|v| {
            !v["apiVersion"]
                .as_str()
                .unwrap()
                .starts_with("monitoring.coreos.com/")
        }),
        "the base must install without the Prometheus Operator's CRDs"
    );
    assert!(find(&base, "ConfigMap", "pushroll-dashboard").is_none());

    let docs = kustomize(&repo("deploy/overlays/monitoring"));
    check_monitoring(&docs, "pushroll");
    let (with, without) = (kinds_and_names(&docs), kinds_and_names(&base));
    let added: Vec<_> = with.difference(&without).cloned().collect();
    let pair = |k: &str, n: &str| (k.to_owned(), n.to_owned());
    assert_eq!(
        added,
        [
            pair("ConfigMap", "pushroll-dashboard"),
            pair("PrometheusRule", "pushroll"),
            pair("Service", "pushroll-indexer"),
            pair("ServiceMonitor", "pushroll"),
        ]
    );
    assert!(
        without.is_subset(&with),
        "the overlay drops {:?}",
        without.difference(&with).collect::<Vec<_>>()
    );
    // The base's objects are unchanged by the component.
    for v in &base {
        let (k, n) = (
            v["kind"].as_str().unwrap(),
            v["metadata"]["name"].as_str().unwrap(),
        );
        assert_eq!(
            find(&docs, k, n),
            Some(v),
            "{k} {n} differs from the base's"
        );
    }
}

/// `path` relative to the directory `from` (both absolute).
fn relative(from: &Path, path: &Path) -> PathBuf {
    let from: Vec<Component> = from.components().collect();
    let to: Vec<Component> = path.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to[common..] {
        out.push(c.as_os_str());
    }
    out
}

/// What the overlay's comment says to do: the component added to another
/// overlay's kustomization. Each overlay is copied to a temporary
/// directory, its base path made to point back here, and `components:`
/// added; the monitoring objects must then land beside the rest.
#[test]
fn the_component_adds_to_every_overlay() {
    if !kubectl_present("the component is not added to the overlays") {
        return;
    }
    let deploy = repo("deploy").canonicalize().unwrap();
    for overlay in ["gke", "namespaced", "single"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().canonicalize().unwrap();
        let src = deploy.join("overlays").join(overlay);
        for entry in std::fs::read_dir(&src).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
        let rel = relative(&dir, &deploy);
        let path = dir.join("kustomization.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("../../base") && !text.contains("components:"));
        let text = format!(
            "{}\ncomponents:\n  - {}\n",
            text.replace("../../base", &rel.join("base").to_string_lossy()),
            rel.join("monitoring").display()
        );
        std::fs::write(&path, text).unwrap();
        let docs = kustomize(&dir);
        let home = find(&docs, "Deployment", "pushroll").unwrap()["metadata"]["namespace"]
            .as_str()
            .unwrap()
            .to_owned();
        if overlay == "namespaced" {
            assert_ne!(home, "pushroll");
        }
        check_monitoring(&docs, &home);
        eprintln!(
            "overlays/{overlay} + monitoring: {} objects in {home}",
            docs.len()
        );
    }
}
