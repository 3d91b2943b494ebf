//! `--auth google` against real HTTP: tokens signed by test keys, the JWK
//! set served on loopback, the server as a child process.

use std::time::Duration;

use crate::support::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// How long `serve` may take to become ready: it fetches the signing keys
/// first.
const READY_LIMIT: Duration = Duration::from_secs(10);

fn start(jwks: &JwksServer) -> Pushroll {
    start_with(jwks, &[])
}

/// `serve --demo` verifying tokens against `jwks`, with `extra` flags.
fn start_with(jwks: &JwksServer, extra: &[&str]) -> Pushroll {
    Pushroll::demo_verifying(jwks, extra)
}

fn body() -> String {
    wrapped(&insert(REPO, "v1.4", DIGEST), "1", SUBSCRIPTION)
}

async fn push_with(
    client: &reqwest::Client,
    p: &Pushroll,
    auth: Option<&str>,
    body: String,
) -> (u16, Value, Option<String>) {
    let mut req = client.post(p.url("/push")).body(body);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let www = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, r.json().await.unwrap(), www)
}

async fn ready(client: &reqwest::Client, p: &Pushroll) -> u16 {
    client
        .get(p.url("/readyz"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn with(claims: &Value, f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    let mut c = claims.clone();
    f(c.as_object_mut().unwrap());
    c
}

fn unsigned(header: &Value, claims: &Value) -> String {
    use base64::Engine as _;
    let e = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.", e(header), e(claims))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_good_tokens_get_in() {
    let a = Signer::rsa("rsa-a.pem", "key-a");
    let b = Signer::rsa("rsa-b.pem", "key-b");
    let jwks = JwksServer::start(vec![a.jwk.clone()]).await;
    let p = start(&jwks);
    let client = http();
    p.wait_ready(READY_LIMIT).await;

    let good = google_claims(AUDIENCE, EMAIL);
    let token = a.sign(&good);
    let (status, body_json, _) =
        push_with(&client, &p, Some(&format!("Bearer {token}")), body()).await;
    assert_eq!(status, 200, "{body_json}");
    assert_eq!(body_json["outcome"], "dry-run");

    let hs256 = {
        // The RSA public key used as an HMAC secret: the classic confusion attack.
        let public = serde_json::to_vec(&a.jwk).unwrap();
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("key-a".into());
        jsonwebtoken::encode(&h, &good, &EncodingKey::from_secret(&public)).unwrap()
    };
    let header_of = |alg: Algorithm, kid: Option<&str>| {
        let mut h = Header::new(alg);
        h.kid = kid.map(str::to_owned);
        h
    };
    let tampered = {
        let parts: Vec<&str> = token.split('.').collect();
        use base64::Engine as _;
        let evil = with(&good, |c| {
            c.insert("email".into(), json!("attacker@evil.example"));
        });
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(evil.to_string());
        format!("{}.{}.{}", parts[0], payload, parts[2])
    };
    let now = now();
    let ec = Signer::ec("key-a");
    let cases: Vec<(&str, Option<String>, u16)> = vec![
        ("no header", None, 401),
        ("another scheme", Some(format!("Basic {token}")), 401),
        ("empty bearer", Some("Bearer ".into()), 401),
        ("garbage", Some("Bearer garbage".into()), 401),
        (
            "two-part token",
            Some(format!("Bearer {}", token.rsplit_once('.').unwrap().0)),
            401,
        ),
        (
            "alg none",
            Some(format!(
                "Bearer {}",
                unsigned(&json!({"alg": "none", "kid": "key-a", "typ": "JWT"}), &good)
            )),
            401,
        ),
        (
            "HS256 keyed with the public key",
            Some(format!("Bearer {hs256}")),
            401,
        ),
        (
            "ES256 header",
            Some(format!("Bearer {}", ec.sign(&good))),
            401,
        ),
        (
            "RS512 header",
            Some(format!(
                "Bearer {}",
                a.sign_with(&header_of(Algorithm::RS512, Some("key-a")), &good)
            )),
            401,
        ),
        (
            "other key under a known kid",
            Some(format!(
                "Bearer {}",
                b.sign_with(&header_of(Algorithm::RS256, Some("key-a")), &good)
            )),
            401,
        ),
        (
            "unknown kid",
            Some(format!("Bearer {}", b.sign(&good))),
            401,
        ),
        (
            "missing kid",
            Some(format!(
                "Bearer {}",
                a.sign_with(&header_of(Algorithm::RS256, None), &good)
            )),
            401,
        ),
        ("tampered payload", Some(format!("Bearer {tampered}")), 401),
        (
            "expired",
            Some(format!(
                "Bearer {}",
                a.sign(&with(&good, |c| {
                    c.insert("exp".into(), json!(now - 600));
                }))
            )),
            401,
        ),
        (
            "not yet valid",
            Some(format!(
                "Bearer {}",
                a.sign(&with(&good, |c| {
                    c.insert("nbf".into(), json!(now + 600));
                }))
            )),
            401,
        ),
        (
            "issued in the future",
            Some(format!(
                "Bearer {}",
                a.sign(&with(&good, |c| {
                    c.insert("iat".into(), json!(now + 600));
                }))
            )),
            401,
        ),
        (
            "no exp",
            Some(format!(
                "Bearer {}",
                a.sign(&with(&good, |c| {
                    c.remove("exp");
                }))
            )),
            401,
        ),
        (
            "wrong issuer",
            Some(format!(
                "Bearer {}",
                a.sign(&with(&good, |c| {
                    c.insert("iss".into(), json!("https://evil.example"));
                }))
            )),
            401,
        ),
        (
            "wrong audience",
            Some(format!(
                "Bearer {}",
                a.sign(&with(&good, |c| {
                    c.insert("aud".into(), json!("https://other.example/push"));
                }))
            )),
            403,
        ),
        (
            "email not allowed",
            Some(format!(
                "Bearer {}",
                a.sign(&with(&good, |c| {
                    c.insert(
                        "email".into(),
                        json!("someone@else.iam.gserviceaccount.com"),
                    );
                }))
            )),
            403,
        ),
        (
            "email_verified false",
            Some(format!(
                "Bearer {}",
                a.sign(&with(&good, |c| {
                    c.insert("email_verified".into(), json!(false));
                }))
            )),
            403,
        ),
        (
            "email_verified missing",
            Some(format!(
                "Bearer {}",
                a.sign(&with(&good, |c| {
                    c.remove("email_verified");
                }))
            )),
            403,
        ),
        (
            "email missing",
            Some(format!(
                "Bearer {}",
                a.sign(&with(&good, |c| {
                    c.remove("email");
                }))
            )),
            403,
        ),
    ];
    for (name, auth, want) in &cases {
        let (status, json, www) = push_with(&client, &p, auth.as_deref(), body()).await;
        assert_eq!(status, *want, "{name}: {json}");
        assert!(
            json["error"].is_string() && json.get("workloads").is_none(),
            "{name}: {json}"
        );
        if *want == 401 {
            assert_eq!(www.as_deref(), Some("Bearer"), "{name}");
        }
    }
    // A good token from a subscription that is not allowed.
    let other_sub = wrapped(
        &insert(REPO, "v1.4", DIGEST),
        "2",
        "projects/x/subscriptions/y",
    );
    let (status, json, _) =
        push_with(&client, &p, Some(&format!("Bearer {token}")), other_sub).await;
    assert_eq!(status, 403, "{json}");

    // Rejections are counted by reason, and no token ever reaches the logs.
    let metrics = p.metrics().await;
    for reason in [
        "no-header",
        "not-bearer",
        "expired",
        "audience",
        "email",
        "subscription",
        "unknown-kid",
        "algorithm",
    ] {
        assert!(
            metrics.contains(&format!(
                "pushroll_token_rejections_total{{reason=\"{reason}\"}}"
            )),
            "{reason}\n{metrics}"
        );
    }
    let logs = p.logs().join("\n");
    let signature = token.rsplit('.').next().unwrap();
    assert!(!logs.contains(signature), "a token leaked into the logs");
    // Only the one good push was acted on.
    assert!(
        metrics.contains(
            "pushroll_pushes_total{source=\"pubsub\",outcome=\"dry-run\",code=\"200\"} 1"
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_authorization_is_refused_before_crypto() {
    let a = Signer::rsa("rsa-a.pem", "key-a");
    let jwks = JwksServer::start(vec![a.jwk.clone()]).await;
    let p = start(&jwks);
    let client = http();
    p.wait_ready(READY_LIMIT).await;
    let huge = format!("Bearer {}", "x".repeat(9000));
    let (status, json, _) = push_with(&client, &p, Some(&huge), body()).await;
    assert_eq!(status, 401, "{json}");
    let metrics = p.metrics().await;
    assert!(
        metrics.contains("pushroll_token_rejections_total{reason=\"oversized\"} 1"),
        "{metrics}"
    );
    // A head larger than --max-header-bytes is refused by the HTTP layer itself.
    let enormous = format!("Bearer {}", "x".repeat(20_000));
    let r = client
        .post(p.url("/push"))
        .header("authorization", enormous)
        .body(body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 431);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_refetches_once_and_bounds_unknown_kids() {
    let a = Signer::rsa("rsa-a.pem", "key-a");
    let b = Signer::rsa("rsa-b.pem", "key-b");
    let jwks = JwksServer::start(vec![a.jwk.clone()]).await;
    let p = start(&jwks);
    let client = http();
    p.wait_ready(READY_LIMIT).await;
    assert_eq!(jwks.fetches(), 1);

    // Google publishes a new key; a token under it is accepted after one refetch.
    jwks.set_keys(vec![a.jwk.clone(), b.jwk.clone()]);
    let token_b = b.sign(&google_claims(AUDIENCE, EMAIL));
    let (status, json, _) =
        push_with(&client, &p, Some(&format!("Bearer {token_b}")), body()).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(jwks.fetches(), 2);

    // A stream of random kids, concurrently: no further fetch inside the interval.
    let mut tasks = Vec::new();
    for i in 0..100 {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some(format!("random-{i}"));
        let t = b.sign_with(&h, &google_claims(AUDIENCE, EMAIL));
        let (client, url, body) = (client.clone(), p.url("/push"), body());
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .header("authorization", format!("Bearer {t}"))
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 401);
    }
    assert_eq!(
        jwks.fetches(),
        2,
        "unknown kids must not trigger more fetches within the interval"
    );
    // The known keys keep working.
    let (status, _, _) = push_with(
        &client,
        &p,
        Some(&format!(
            "Bearer {}",
            a.sign(&google_claims(AUDIENCE, EMAIL))
        )),
        body(),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_endpoint_down_at_start_means_not_ready_and_503() {
    let a = Signer::rsa("rsa-a.pem", "key-a");
    let jwks = JwksServer::start(vec![a.jwk.clone()]).await;
    jwks.set_down(true);
    let p = start(&jwks);
    let client = http();
    // Wait until the first fetch has been tried and failed.
    eventually(Duration::from_secs(5), || async {
        (jwks.fetches() >= 1).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(ready(&client, &p).await, 503);
    let token = a.sign(&google_claims(AUDIENCE, EMAIL));
    let (status, json, _) = push_with(&client, &p, Some(&format!("Bearer {token}")), body()).await;
    assert_eq!(status, 503, "{json}");
    // The endpoint comes back: the refresher retries, readiness follows, pushes pass.
    jwks.set_down(false);
    p.wait_ready(READY_LIMIT).await;
    let (status, _, _) = push_with(&client, &p, Some(&format!("Bearer {token}")), body()).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_endpoint_down_after_start_keeps_cached_keys() {
    let a = Signer::rsa("rsa-a.pem", "key-a");
    let jwks = JwksServer::start(vec![a.jwk.clone()]).await;
    let p = start(&jwks);
    let client = http();
    p.wait_ready(READY_LIMIT).await;
    jwks.set_down(true);
    let token = a.sign(&google_claims(AUDIENCE, EMAIL));
    let (status, json, _) = push_with(&client, &p, Some(&format!("Bearer {token}")), body()).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(ready(&client, &p).await, 200);
}

#[test]
fn auth_google_without_audience_refuses_to_start() {
    let (status, _, stderr) = Pushroll::run(&["serve", "--auth", "google"], &[]);
    assert!(!status.success());
    assert!(
        stderr.contains("--auth google needs --audience"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_none_warns_at_start_and_in_readyz() {
    let p = Pushroll::demo(&[]);
    let client = http();
    let body: Value = client
        .get(p.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        body["warnings"][0]
            .as_str()
            .unwrap()
            .contains("NOT verified"),
        "{body}"
    );
    assert!(
        p.logs()
            .iter()
            .any(|l| l.contains("WARN") && l.contains("--auth none"))
    );
}

/// Keys of any age used to stay trusted while the key endpoint was down.
/// Past `--max-key-age` they are not: not ready, pushes 503 (Pub/Sub
/// redelivers), and the refresher keeps trying; once a fetch succeeds, all
/// is well again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_older_than_max_key_age_are_not_trusted() {
    const MAX_AGE: Duration = Duration::from_secs(3);
    let a = Signer::rsa("rsa-a.pem", "key-a");
    let jwks = JwksServer::start(vec![a.jwk.clone()]).await;
    let p = start_with(&jwks, &["--max-key-age", "3s"]);
    let client = http();
    p.wait_ready(READY_LIMIT).await;
    // The keys were fetched at most this long ago.
    let fetched_by = std::time::Instant::now();
    jwks.set_down(true);
    let token = a.sign(&google_claims(AUDIENCE, EMAIL));
    let bearer = format!("Bearer {token}");
    // Young keys still verify with the endpoint down.
    let (status, json, _) = push_with(&client, &p, Some(&bearer), body()).await;
    assert_eq!(status, 200, "{json}");

    // Past the bound: not ready, with the reason, and pushes 503.
    let stale = eventually(Duration::from_secs(15), || async {
        let r = client.get(p.url("/readyz")).send().await.unwrap();
        (r.status() == 503).then_some(())
    })
    .await;
    assert!(stale.is_some(), "not ready once the keys are too old");
    // Not before the bound (give or take the refresher's own timing).
    let after = fetched_by.elapsed();
    assert!(after + Duration::from_millis(500) >= MAX_AGE, "{after:?}");
    let r: Value = client
        .get(p.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(r["warnings"].to_string().contains("--max-key-age"), "{r}");
    let (status, json, _) = push_with(&client, &p, Some(&bearer), body()).await;
    assert_eq!(status, 503, "{json}");
    assert!(
        json["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("--max-key-age"),
        "{json}"
    );
    // It keeps retrying: more fetches while down.
    let fetches = jwks.fetches();
    eventually(Duration::from_secs(10), || async {
        (jwks.fetches() > fetches).then_some(())
    })
    .await
    .expect("the refresher keeps trying");

    // The endpoint comes back: ready again, and pushes pass.
    jwks.set_down(false);
    p.wait_ready(READY_LIMIT).await;
    let (status, json, _) = push_with(&client, &p, Some(&bearer), body()).await;
    assert_eq!(status, 200, "{json}");
}

#[test]
fn max_key_age_must_be_positive() {
    let (status, _, stderr) = Pushroll::run(&["serve", "--demo", "--max-key-age", "0s"], &[]);
    assert!(!status.success());
    assert!(
        stderr.contains("--max-key-age must be at least 1s"),
        "{stderr}"
    );
}
