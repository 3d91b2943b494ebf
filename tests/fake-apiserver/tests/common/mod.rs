//! Shared helpers of the integration tests.
#![allow(dead_code)]

use std::sync::Once;

use fake_apiserver::FakeApiServer;
use serde_json::{Value, json};

static PROVIDER: Once = Once::new();

/// One rustls provider for the whole test binary (see engineering notes).
pub fn init() {
    PROVIDER.call_once(|| {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

pub fn http() -> reqwest::Client {
    init();
    reqwest::Client::builder().build().expect("reqwest client")
}

pub fn deployment(ns: &str, name: &str, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]}
            }
        }
    })
}

pub fn deploy_url(s: &FakeApiServer, ns: &str, name: &str) -> String {
    format!(
        "{}/apis/apps/v1/namespaces/{ns}/deployments/{name}",
        s.url()
    )
}

pub fn rv(obj: &Value) -> u64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .expect("resourceVersion")
        .parse()
        .expect("numeric rv")
}

/// Sends a request and returns (status, content type, JSON body).
pub async fn send(req: reqwest::RequestBuilder) -> (u16, String, Value) {
    let resp = req.send().await.expect("request");
    let code = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (code, ct, body)
}

pub async fn kube_client(s: &FakeApiServer, ns: &str) -> kube::Client {
    init();
    let kc = kube::config::Kubeconfig::from_yaml(&s.kubeconfig(ns)).expect("kubeconfig parses");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .expect("config");
    kube::Client::try_from(cfg).expect("client")
}

/// Asserts a body is a failure `Status` with this code and reason.
pub fn assert_status(body: &Value, code: u16, reason: &str) {
    assert_eq!(body["kind"], "Status", "{body}");
    assert_eq!(body["apiVersion"], "v1", "{body}");
    assert_eq!(body["status"], "Failure", "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["reason"], reason, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}
