//! A recording pass-through between the emulator and pushroll: every push
//! delivery is forwarded unchanged (method, body, headers but hop-by-hop
//! ones) and answered with pushroll's status and body, and the tap keeps
//! what the emulator saw per message id: arrivals, answers, times. That is
//! the only place where "which message got which answer, how often" can be
//! observed (pushroll logs no message id on failures, and the emulator has
//! no delivery log).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::Notify;

/// One delivery as the emulator saw it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message_id: String,
    pub arrived: Instant,
    /// `(status, body, when)` once answered.
    pub answer: Option<(u16, Value, Instant)>,
}

#[derive(Default)]
struct Shared {
    log: Mutex<Vec<Delivery>>,
    changed: Notify,
    refuse: std::sync::atomic::AtomicBool,
}

pub struct Tap {
    pub url: String,
    shared: Arc<Shared>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

struct Ctx {
    target: String,
    client: reqwest::Client,
    shared: Arc<Shared>,
}

fn message_id(headers: &HeaderMap, body: &[u8]) -> String {
    if let Some(id) = headers
        .get("x-goog-pubsub-message-id")
        .and_then(|v| v.to_str().ok())
    {
        return id.to_owned();
    }
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["message"]["messageId"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

async fn forward(State(ctx): State<Arc<Ctx>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 16 << 20).await.unwrap();
    let id = message_id(&parts.headers, &bytes);
    let index = {
        let mut log = ctx.shared.log.lock().unwrap();
        log.push(Delivery {
            message_id: id,
            arrived: Instant::now(),
            answer: None,
        });
        log.len() - 1
    };
    ctx.shared.changed.notify_waiters();
    let refuse = ctx.shared.refuse.load(std::sync::atomic::Ordering::SeqCst);
    let mut req = ctx
        .client
        .request(parts.method.clone(), format!("{}{}", ctx.target, parts.uri));
    for (name, value) in &parts.headers {
        if !matches!(
            name.as_str(),
            "host" | "content-length" | "connection" | "transfer-encoding" | "keep-alive"
        ) {
            req = req.header(name, value);
        }
    }
    let shared = ctx.shared.clone();
    // In a task of its own, so that the answer is recorded even when the
    // emulator gives up on the request (ack deadline) and hyper drops us.
    let work = tokio::spawn(async move {
        let (status, text) = if refuse {
            (
                503,
                r#"{"error":"tap","detail":"refused by the test"}"#.to_owned(),
            )
        } else {
            match req.body(bytes).send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    (status, r.text().await.unwrap_or_default())
                }
                Err(e) => (599, format!("{{\"tap\":\"{e}\"}}")),
            }
        };
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
        shared.log.lock().unwrap()[index].answer = Some((status, json, Instant::now()));
        shared.changed.notify_waiters();
        (status, text)
    });
    let (status, text) = work.await.unwrap();
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
        [("content-type", "application/json")],
        Body::from(text),
    )
        .into_response()
}

impl Tap {
    /// A tap in front of `target` (`http://host:port`).
    pub async fn start(target: &str) -> Tap {
        let shared = Arc::new(Shared::default());
        let ctx = Arc::new(Ctx {
            target: target.trim_end_matches('/').to_owned(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(300))
                .build()
                .unwrap(),
            shared: shared.clone(),
        });
        let app = axum::Router::new().fallback(forward).with_state(ctx);
        let (addr, tx) = crate::support::serve_local(app).await;
        let url = format!("http://{addr}");
        Tap {
            url,
            shared,
            _stop: tx,
        }
    }

    /// Answer 503 without forwarding (the endpoint is "broken").
    pub fn set_refuse(&self, refuse: bool) {
        self.shared
            .refuse
            .store(refuse, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.shared.log.lock().unwrap().clone()
    }

    /// Deliveries of one message.
    pub fn of(&self, id: &str) -> Vec<Delivery> {
        self.deliveries()
            .into_iter()
            .filter(|d| d.message_id == id)
            .collect()
    }

    /// Waits until `check` holds on the deliveries, at most `limit`.
    pub async fn wait_until(&self, limit: Duration, check: impl Fn(&[Delivery]) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.shared.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if check(&self.shared.log.lock().unwrap()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return check(&self.shared.log.lock().unwrap());
            }
        }
    }

    /// Waits until message `id` has been answered 200 (acked).
    pub async fn wait_acked(&self, id: &str, limit: Duration) -> bool {
        self.wait_until(limit, |log| {
            log.iter()
                .any(|d| d.message_id == id && matches!(d.answer, Some((200, _, _))))
        })
        .await
    }

    /// Waits until nothing arrives or completes for `quiet` (and nothing is
    /// in flight), at most `limit`: the emulator has stopped redelivering.
    pub async fn wait_quiet(&self, quiet: Duration, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let snapshot =
                |log: &[Delivery]| (log.len(), log.iter().filter(|d| d.answer.is_some()).count());
            let before = snapshot(&self.shared.log.lock().unwrap());
            let settled = before.0 == before.1;
            let changed = self.wait_until(quiet, |log| snapshot(log) != before).await;
            if settled && !changed {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
        }
    }
}
