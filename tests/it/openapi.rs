//! `openapi.yaml` against the server: every route served is in the spec and
//! every path in the spec is served; every example validates against its
//! schema; every request example, sent to a running `pushroll`, gets the
//! status it documents, and every answer validates against the schema the
//! spec gives for that status (401, 403 and 503 from a server that verifies
//! tokens against a JWK set served on loopback).

use std::collections::BTreeSet;
use std::path::Path;

use crate::support::openapi::*;
use crate::support::*;
use serde_json::{Value, json};

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

/// Follows a `{"$ref": "#/…"}` inside the document.
fn deref<'a>(spec: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => spec
            .pointer(r.strip_prefix('#').expect("local $ref"))
            .unwrap_or_else(|| panic!("dangling $ref {r}")),
        None => v,
    }
}

/// The spec's operations as (path, METHOD).
fn spec_operations(spec: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(method).is_some() {
                ops.insert((path.clone(), method.to_uppercase()));
            }
        }
    }
    ops
}

/// The router's routes, read from `src/server/mod.rs` (`.route("/p", get(h))`,
/// also `get(h).post(h2)` chains).
fn router_routes() -> BTreeSet<(String, String)> {
    let src = include_str!("../../src/server/mod.rs");
    let mut routes = BTreeSet::new();
    for chunk in src.split(".route(\"").skip(1) {
        let (path, rest) = chunk.split_once('"').expect("route path");
        let rest = rest.trim_start_matches([',', ' ', '\n']);
        // The method router expression runs to the closing parenthesis of .route(.
        let mut depth = 1;
        let end = rest
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .map(|(i, _)| i)
            .expect("closing parenthesis of .route(");
        let expr = &rest[..end];
        let mut found = false;
        for method in METHODS {
            let direct = expr.starts_with(&format!("{method}("));
            let chained = expr.contains(&format!(".{method}("));
            if direct || chained {
                routes.insert((path.to_owned(), method.to_uppercase()));
                found = true;
            }
        }
        assert!(found, "cannot read the methods of route {path}: {expr}");
    }
    assert!(!routes.is_empty(), "no .route( found in src/server/mod.rs");
    routes
}

/// `path` with each `{param}` replaced by the example its operations give.
fn with_examples(spec: &Value, path: &str) -> String {
    let mut out = path.to_owned();
    for method in METHODS {
        let Some(params) = spec["paths"][path][method]["parameters"].as_array() else {
            continue;
        };
        for param in params.iter().map(|p| deref(spec, p)) {
            if param["in"] == "path" {
                let name = param["name"].as_str().unwrap();
                let example = param["example"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{path}: path parameter {name} has no example"));
                out = out.replace(&format!("{{{name}}}"), example);
            }
        }
    }
    assert!(
        !out.contains('{'),
        "{path}: a path parameter without an example"
    );
    out
}

/// A request example of `POST /push`: its content type, body, extra headers
/// and the status `serve --demo` answers.
struct RequestExample {
    name: String,
    content_type: String,
    body: String,
    headers: Vec<(String, String)>,
    demo_status: u16,
}

fn request_examples(spec: &Value) -> Vec<RequestExample> {
    let content = spec
        .pointer("/paths/~1push/post/requestBody/content")
        .and_then(Value::as_object)
        .expect("POST /push has a request body");
    let mut out = Vec::new();
    for (content_type, media) in content {
        for (name, example) in media["examples"].as_object().expect("named examples") {
            let example = deref(spec, example);
            let value = &example["value"];
            let body = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let headers = example
                .get("x-headers")
                .and_then(Value::as_object)
                .map(|h| {
                    h.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().expect("header value").to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            let demo_status = example["x-demo-status"]
                .as_u64()
                .unwrap_or_else(|| panic!("example {name} has no x-demo-status"))
                as u16;
            out.push(RequestExample {
                name: format!("{content_type} {name}"),
                content_type: content_type.clone(),
                body,
                headers,
                demo_status,
            });
        }
    }
    out
}

/// Checks a live answer against the spec: a documented status, the
/// documented content type, and a body that validates.
async fn check_answer(
    spec: &Value,
    path: &str,
    method: &str,
    response: reqwest::Response,
    what: &str,
) -> (u16, Value) {
    let status = response.status().as_u16();
    let responses = format!("/paths/{}/{method}/responses", esc(path));
    let documented = spec
        .pointer(&format!("{responses}/{status}"))
        .unwrap_or_else(|| panic!("{what}: {method} {path} answered {status}, not in the spec"));
    let content = documented["content"].as_object().expect("content");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let media = content
        .keys()
        .find(|k| content_type.starts_with(k.as_str()))
        .unwrap_or_else(|| {
            panic!("{what}: content type {content_type:?} is not one of {content:?}")
        })
        .clone();
    // Declared headers that are required must be there and validate.
    if let Some(headers) = documented.get("headers").and_then(Value::as_object) {
        for (name, header) in headers {
            let value = response.headers().get(name).map(|v| v.to_str().unwrap());
            if header["required"] == true {
                let value = value.unwrap_or_else(|| panic!("{what}: no {name} header"));
                let pointer = format!("{responses}/{status}/headers/{}/schema", esc(name));
                check(spec, &pointer, &json!(value), what);
            }
        }
    }
    let text = response.text().await.unwrap();
    let body = if media == "application/json" {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}: not JSON: {text}"))
    } else {
        Value::String(text)
    };
    let pointer = format!("{responses}/{status}/content/{}/schema", esc(&media));
    check(spec, &pointer, &body, what);
    (status, body)
}

#[test]
fn the_spec_is_openapi_3_1_and_its_refs_resolve() {
    let spec = spec();
    assert!(
        spec["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1.")),
        "openapi: {}",
        spec["openapi"]
    );
    fn walk(spec: &Value, v: &Value, refs: &mut usize) {
        match v {
            Value::Object(map) => {
                if let Some(r) = map.get("$ref").and_then(Value::as_str) {
                    deref(spec, v);
                    assert!(r.starts_with("#/"), "only local refs: {r}");
                    *refs += 1;
                }
                map.values().for_each(|c| walk(spec, c, refs));
            }
            Value::Array(items) => items.iter().for_each(|c| walk(spec, c, refs)),
            _ => {}
        }
    }
    let mut refs = 0;
    walk(&spec, &spec, &mut refs);
    assert!(refs > 10, "only {refs} $refs");
    // Every operation has an id, and POST /push documents the contract's codes.
    for (path, method) in spec_operations(&spec) {
        let op = &spec["paths"][&path][method.to_lowercase()];
        assert!(op["operationId"].is_string(), "{method} {path}");
    }
    let codes: BTreeSet<&str> = spec
        .pointer("/paths/~1push/post/responses")
        .and_then(Value::as_object)
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        codes,
        BTreeSet::from(["200", "400", "401", "403", "413", "503"])
    );
    let bearer = &spec["components"]["securitySchemes"]["pubsubOidc"];
    assert_eq!(bearer["type"], "http");
    assert_eq!(bearer["scheme"], "bearer");
}

#[test]
fn every_example_validates_against_its_schema() {
    let spec = spec();
    // (pointer of the schema, what, example)
    let mut cases: Vec<(String, String, Value)> = Vec::new();
    fn walk(spec: &Value, v: &Value, pointer: &str, cases: &mut Vec<(String, String, Value)>) {
        let Value::Object(map) = v else {
            if let Value::Array(items) = v {
                for (i, item) in items.iter().enumerate() {
                    walk(spec, item, &format!("{pointer}/{i}"), cases);
                }
            }
            return;
        };
        if map.contains_key("schema") {
            // A media type, parameter or header object.
            let schema = format!("{pointer}/schema");
            if let Some(example) = map.get("example") {
                cases.push((
                    schema.clone(),
                    format!("{pointer}/example"),
                    example.clone(),
                ));
            }
            if let Some(examples) = map.get("examples").and_then(Value::as_object) {
                for (name, example) in examples {
                    let value = deref(spec, example)
                        .get("value")
                        .unwrap_or_else(|| panic!("{pointer}/examples/{name} has no value"));
                    cases.push((
                        schema.clone(),
                        format!("{pointer}/examples/{name}"),
                        value.clone(),
                    ));
                }
            }
        } else if let Some(examples) = map.get("examples").and_then(Value::as_array) {
            // A schema's own JSON Schema `examples`.
            for (i, example) in examples.iter().enumerate() {
                cases.push((
                    pointer.to_owned(),
                    format!("{pointer}/examples/{i}"),
                    example.clone(),
                ));
            }
        }
        for (k, child) in map {
            walk(spec, child, &format!("{pointer}/{}", esc(k)), cases);
        }
    }
    walk(&spec, &spec, "", &mut cases);
    assert!(cases.len() >= 30, "only {} examples found", cases.len());
    for (schema, what, example) in &cases {
        check(&spec, schema, example, what);
    }
    // The validation is real: a wrong outcome and a missing field fail.
    let report = "/paths/~1push/post/responses/200/content/application~1json/schema";
    let v = validator(&spec, report);
    let good = json!({"messageId": "1", "action": "INSERT", "outcome": "ignored", "reason": "x", "workloads": []});
    assert!(v.is_valid(&good));
    let mut bad = good.clone();
    bad["outcome"] = json!("restart");
    assert!(!v.is_valid(&bad));
    let mut bad = good.clone();
    bad.as_object_mut().unwrap().remove("workloads");
    assert!(!v.is_valid(&bad));
    let mut bad = good;
    bad["workloads"] =
        json!([{"kind": "Pod", "namespace": "a", "name": "b", "result": "restarted"}]);
    assert!(!v.is_valid(&bad));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_in_the_spec_and_every_spec_path_is_served() {
    let spec = spec();
    let ops = spec_operations(&spec);
    assert_eq!(
        router_routes(),
        ops,
        "src/server/mod.rs routes (left) and openapi.yaml operations (right) differ"
    );
    // Every webhook source enabled, so that its routes answer (401 without
    // a secret) rather than 404 (disabled).
    let secrets = tempfile::tempdir().unwrap();
    for source in crate::webhooks::SOURCES {
        std::fs::write(secrets.path().join(source), "openapi-test-secret").unwrap();
    }
    let p = Pushroll::demo(&["--webhook-secrets", secrets.path().to_str().unwrap()]);
    let client = http();
    let paths: BTreeSet<&String> = ops.iter().map(|(p, _)| p).collect();
    for path in paths {
        let url = p.url(&with_examples(&spec, path));
        for method in METHODS {
            let upper = method.to_uppercase();
            let mut request = client.request(upper.parse().unwrap(), &url);
            if method == "post" {
                request = request.body(r#"{"action":"DELETE","tag":"example.com/a:b"}"#);
            }
            let status = request.send().await.unwrap().status().as_u16();
            if ops.contains(&(path.clone(), upper.clone())) {
                assert!(
                    ![404, 405].contains(&status),
                    "{upper} {path} is in the spec but answered {status}"
                );
                let documented = spec["paths"][path][method]["responses"]
                    .get(status.to_string())
                    .is_some();
                assert!(documented, "{upper} {path}: {status} is not documented");
            } else {
                assert_eq!(status, 405, "{upper} {path} is not in the spec");
            }
        }
    }
    for unknown in ["/", "/nope", "/push/", "/healthz/x", "/PUSH"] {
        let r = client.get(p.url(unknown)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{unknown}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_examples_get_their_documented_answers() {
    let spec = spec();
    let p = Pushroll::demo(&[]);
    let client = http();
    let examples = request_examples(&spec);
    assert!(examples.len() >= 10, "{} request examples", examples.len());
    let mut statuses = BTreeSet::new();
    for ex in &examples {
        let mut request = client
            .post(p.url("/push"))
            .header("content-type", &ex.content_type)
            .body(ex.body.clone());
        for (k, v) in &ex.headers {
            request = request.header(k, v);
        }
        let response = request.send().await.unwrap();
        let (status, body) = check_answer(&spec, "/push", "post", response, &ex.name).await;
        assert_eq!(status, ex.demo_status, "{}: {body}", ex.name);
        statuses.insert(status);
    }
    assert_eq!(statuses, BTreeSet::from([200, 400]));

    // 413: a body over --max-body-bytes (65536), declared and chunked.
    let big = format!(r#"{{"action":"DELETE","tag":"{}"}}"#, "a".repeat(70_000));
    let response = client
        .post(p.url("/push"))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    let (status, _) = check_answer(&spec, "/push", "post", response, "413 declared").await;
    assert_eq!(status, 413);
    let stream = futures::stream::iter(vec![Ok::<_, std::io::Error>(big.into_bytes())]);
    let response = client
        .post(p.url("/push"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    let (status, _) = check_answer(&spec, "/push", "post", response, "413 chunked").await;
    assert_eq!(status, 413);

    // The operations routes, and the metrics name what just happened.
    for path in ["/healthz", "/readyz"] {
        let response = client.get(p.url(path)).send().await.unwrap();
        let (status, _) = check_answer(&spec, path, "get", response, path).await;
        assert_eq!(status, 200, "{path}");
    }
    let response = client.get(p.url("/metrics")).send().await.unwrap();
    let (status, body) = check_answer(&spec, "/metrics", "get", response, "/metrics").await;
    assert_eq!(status, 200);
    let text = body.as_str().unwrap();
    assert!(
        text.contains(r#"pushroll_pushes_total{source="pubsub",outcome="too-large",code="413"} 2"#),
        "{text}"
    );
}

/// 401, 403 and 503 need a server that verifies tokens: test keys, a JWK
/// set on loopback, and one that is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_failures_get_their_documented_answers() {
    let spec = spec();
    let client = http();
    let signer = Signer::rsa("rsa-a.pem", "key-a");
    let jwks = JwksServer::start(vec![signer.jwk.clone()]).await;
    let audience = "https://pushroll.example.com/push";
    let allowed = "pubsub-push@demo-project.iam.gserviceaccount.com";
    let index = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/index.json");
    let index = index.to_str().unwrap();
    let start = |jwks_url: &str| {
        Pushroll::start_env(
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--dry-run",
                "--index-file",
                index,
                "--auth",
                "google",
                "--audience",
                audience,
                "--allowed-email",
                allowed,
                "--subscription",
                "projects/demo-project/subscriptions/gcr-push",
                "--jwks-url",
                jwks_url,
            ],
            &[],
        )
    };
    let p = start(&jwks.url);
    let wrapped = spec
        .pointer("/paths/~1push/post/requestBody/content/application~1json/examples/wrapped/value")
        .unwrap()
        .to_string();
    let send = |token: Option<String>, body: String| {
        let mut request = client.post(p.url("/push")).body(body);
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        request.send()
    };

    // No token: 401 with WWW-Authenticate: Bearer.
    let response = send(None, wrapped.clone()).await.unwrap();
    let (status, body) = check_answer(&spec, "/push", "post", response, "no token").await;
    assert_eq!(status, 401, "{body}");
    // A token signed by another key: 401.
    let stranger = Signer::rsa("rsa-b.pem", "key-a");
    let token = stranger.sign(&google_claims(audience, allowed));
    let (status, _) = check_answer(
        &spec,
        "/push",
        "post",
        send(Some(token), wrapped.clone()).await.unwrap(),
        "bad signature",
    )
    .await;
    assert_eq!(status, 401);
    // A valid token for another service account: 403.
    let token = signer.sign(&google_claims(
        audience,
        "someone@else.iam.gserviceaccount.com",
    ));
    let (status, _) = check_answer(
        &spec,
        "/push",
        "post",
        send(Some(token), wrapped.clone()).await.unwrap(),
        "other email",
    )
    .await;
    assert_eq!(status, 403);
    // The allowed account, from another subscription: 403.
    let token = signer.sign(&google_claims(audience, allowed));
    let other_sub = wrapped.replace("gcr-push", "elsewhere");
    let (status, _) = check_answer(
        &spec,
        "/push",
        "post",
        send(Some(token.clone()), other_sub).await.unwrap(),
        "other subscription",
    )
    .await;
    assert_eq!(status, 403);
    // And the real thing: 200.
    let (status, body) = check_answer(
        &spec,
        "/push",
        "post",
        send(Some(token), wrapped.clone()).await.unwrap(),
        "allowed",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "dry-run");
    drop(p);

    // Signing keys that cannot be fetched: /readyz and pushes answer 503.
    let down = JwksServer::start(vec![signer.jwk.clone()]).await;
    down.set_down(true);
    let p = start(&down.url);
    let response = client.get(p.url("/readyz")).send().await.unwrap();
    let (status, body) = check_answer(&spec, "/readyz", "get", response, "keys down").await;
    assert_eq!(status, 503, "{body}");
    let token = signer.sign(&google_claims(audience, allowed));
    let response = client
        .post(p.url("/push"))
        .bearer_auth(token)
        .body(wrapped)
        .send()
        .await
        .unwrap();
    let (status, body) = check_answer(&spec, "/push", "post", response, "keys down").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "keys-unavailable");
}
