//! Micro-benchmarks (criterion); BENCHMARKS.md has the figures.
//!
//! * `lookup/*/N`: what `serve` does to find the workloads of a push, in an
//!   index of N = 100 … 50,000 workloads built by pushroll's own indexer
//!   code: `index_get` is the bare map lookup ([`Index::lookup`]);
//!   `push_hit` and `push_miss` the whole step a push takes — normalize
//!   the pushed reference ([`Reference::parse`]), then
//!   [`IndexStore::lookup`] (ArcSwap load, clone of the result, the
//!   lookup metrics).
//! * `token/*`: RS256 verification of a Pub/Sub-shaped OIDC token.
//!   `google_verify` is [`GoogleVerifier::verify`] with its key cache
//!   filled from a JWK set served on loopback (the serve path);
//!   `decode_prepared_key` the jsonwebtoken decode alone with a prepared
//!   key, and `key_from_jwk` the key preparation, to show where the time
//!   goes.
//!
//! * `policy/*`: what the policies add to a push's decision per workload
//!   (see [`policy`]).
//!
//! `cargo bench --bench micro`; `cargo test --benches` runs each once.
//! After criterion's own output, a table of medians is printed.

#[path = "../tests/it/support/mod.rs"]
mod support;

#[path = "common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::Duration;

use axum::http::HeaderValue;
use criterion::{BenchmarkId, Criterion};
use pushroll::auth::GoogleVerifier;
use pushroll::auth::{AuthConfig, AuthMode};
use pushroll::metrics::Metrics;
use pushroll::reference::Reference;
use support::{AUDIENCE, EMAIL};
use tokio_util::sync::CancellationToken;

const SIZES: [usize; 4] = [100, 1_000, 10_000, 50_000];

fn lookup(c: &mut Criterion, sizes: &[usize]) {
    let mut group = c.benchmark_group("lookup");
    for &n in sizes {
        let index = common::index(n);
        // A workload in the middle of the cluster, and a commit tag.
        let hit = common::image_of(n / 2);
        let miss = common::miss_image(n / 2);
        let key = Reference::parse(&hit).unwrap().tagged();
        assert_eq!(index.lookup(&key).len(), 1);
        group.bench_with_input(BenchmarkId::new("index_get", n), &key, |b, key| {
            b.iter(|| black_box(index.lookup(black_box(key))).len())
        });
        let store = common::store(index);
        let push = |image: &str| {
            let key = Reference::parse(image).unwrap().tagged();
            futures::executor::block_on(store.lookup(&key))
                .unwrap()
                .workloads
                .len()
        };
        assert_eq!(push(&hit), 1);
        assert_eq!(push(&miss), 0);
        group.bench_with_input(BenchmarkId::new("push_hit", n), &hit, |b, image| {
            b.iter(|| push(black_box(image)))
        });
        group.bench_with_input(BenchmarkId::new("push_miss", n), &miss, |b, image| {
            b.iter(|| push(black_box(image)))
        });
    }
    group.finish();
}

fn token(c: &mut Criterion) {
    support::init();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let signer = support::Signer::rsa("rsa-a.pem", "key-a");
    let jwks = rt.block_on(support::JwksServer::start(vec![signer.jwk.clone()]));
    let config = AuthConfig {
        mode: AuthMode::Google,
        audiences: vec![AUDIENCE.into()],
        allowed_emails: vec![EMAIL.into()],
        jwks_url: jwks.url.clone(),
        issuers: vec![
            "https://accounts.google.com".into(),
            "accounts.google.com".into(),
        ],
        subscriptions: Vec::new(),
        max_key_age: Duration::from_secs(24 * 3600),
    };
    let shutdown = CancellationToken::new();
    let verifier = rt.block_on(async {
        let v = GoogleVerifier::start(config, Metrics::new(), shutdown.clone());
        support::eventually(Duration::from_secs(10), || async {
            v.has_keys().then_some(())
        })
        .await
        .expect("the verifier fetched the test JWK set");
        v
    });
    let token = signer.sign(&support::google_claims(AUDIENCE, EMAIL));
    let header = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
    rt.block_on(verifier.verify(Some(&header)))
        .expect("the test token verifies");

    let mut group = c.benchmark_group("token");
    group.bench_function("google_verify", |b| {
        b.iter(|| {
            rt.block_on(verifier.verify(Some(black_box(&header))))
                .is_ok()
        })
    });
    let key = jsonwebtoken::DecodingKey::from_jwk(&signer.jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[AUDIENCE]);
    validation.set_issuer(&["https://accounts.google.com"]);
    group.bench_function("decode_prepared_key", |b| {
        b.iter(|| {
            jsonwebtoken::decode::<serde_json::Value>(black_box(&token), &key, &validation).is_ok()
        })
    });
    group.bench_function("key_from_jwk", |b| {
        b.iter(|| jsonwebtoken::DecodingKey::from_jwk(black_box(&signer.jwk)).is_ok())
    });
    group.finish();
    shutdown.cancel();
}

/// What a policy costs a push, per workload: `plan` (the decision before
/// policies, the baseline) against `decide` with no policy annotation, and
/// with an approval given, a window (two zones) and an interval, all
/// passing (every check runs); `window_next_open` parses a window and
/// finds its next opening from outside it.
fn policy(c: &mut Criterion) {
    use pushroll::plan::{WorkloadView, plan};
    use pushroll::policy::{Facts, Settings, decide};
    use pushroll::workload::Mode;
    let image = "us-east1-docker.pkg.dev/p/r/app:v1";
    let digest = format!("sha256:{}", "b".repeat(64));
    let now: jiff::Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
    let view = |own: &[(&str, &str)]| WorkloadView {
        resource_version: Some("7".into()),
        generation: Some(2),
        annotations_move_generation: true,
        annotations: own
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        template_annotations: [(
            "kubectl.kubernetes.io/restartedAt".to_owned(),
            "2026-12-01T08:00:00Z".to_owned(),
        )]
        .into(),
        containers: vec![("app".into(), image.into())],
        pull_policies: [("app".to_owned(), "Always".to_owned())].into(),
        init_containers: Default::default(),
    };
    let window = "Mon-Fri 09:00-17:00 Europe/Berlin; Sat,Sun 10:00-12:00 America/New_York";
    let plain = view(&[]);
    let guarded = view(&[
        ("pushroll.io/approval", "required"),
        ("pushroll.io/approve", &digest),
        ("pushroll.io/window", window),
        ("pushroll.io/min-interval", "15m"),
    ]);
    let facts = Facts {
        image_key: image,
        digest: &digest,
        published: now,
        message_id: Some("1"),
    };
    let settings = Settings::default();
    assert_eq!(
        decide(&guarded, &facts, settings, now).result(false),
        pushroll::plan::RestartResult::Restarted
    );
    let mut group = c.benchmark_group("policy");
    group.bench_function("plan", |b| {
        b.iter(|| black_box(plan(black_box(&plain), image, &digest, now, Mode::Restart)))
    });
    group.bench_function("decide_none", |b| {
        b.iter(|| black_box(decide(black_box(&plain), &facts, settings, now)))
    });
    group.bench_function("decide_all_pass", |b| {
        b.iter(|| black_box(decide(black_box(&guarded), &facts, settings, now)))
    });
    let saturday: jiff::Timestamp = "2026-12-05T20:00:00Z".parse().unwrap();
    group.bench_function("window_next_open", |b| {
        b.iter(|| {
            let w: pushroll::policy::window::Windows = black_box(window).parse().unwrap();
            black_box(w.next_open(saturday))
        })
    });
    group.finish();
}

/// Prints the median of every benchmark run, from criterion's estimates.
fn print_medians() {
    let dir = common::target_dir().join("criterion");
    let mut rows = Vec::new();
    for group in ["lookup", "token", "policy"] {
        let Ok(entries) = walk(&dir.join(group)) else {
            continue;
        };
        for path in entries {
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            let id = path
                .strip_prefix(&dir)
                .unwrap()
                .parent()
                .and_then(|p| p.parent())
                .unwrap()
                .display()
                .to_string();
            rows.push((
                id,
                v["median"]["point_estimate"].as_f64().unwrap_or(f64::NAN),
            ));
        }
    }
    if rows.is_empty() {
        return;
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    println!("\n| benchmark | median |\n| --- | ---: |");
    for (id, ns) in rows {
        println!("| {id} | {} |", human_ns(ns));
    }
}

/// Every `new/estimates.json` under `dir`.
fn walk(dir: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "new") {
                let file = path.join("estimates.json");
                if file.exists() {
                    out.push(file);
                }
            } else {
                out.extend(walk(&path)?);
            }
        }
    }
    Ok(out)
}

fn human_ns(ns: f64) -> String {
    if ns < 1_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.2} µs", ns / 1_000.0)
    } else {
        format!("{:.2} ms", ns / 1_000_000.0)
    }
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    // `cargo test --benches` runs each benchmark once and measures
    // nothing: small indexes are enough for that.
    let measuring = std::env::args().any(|a| a == "--bench");
    lookup(&mut c, if measuring { &SIZES } else { &SIZES[..2] });
    token(&mut c);
    policy(&mut c);
    c.final_summary();
    if measuring {
        print_medians();
    }
}
