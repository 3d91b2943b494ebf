//! Telling people: one JSON document per happening (a restart, a waiting
//! push, a rollout's end, an undo) POSTed to every `--notify-url`, off the
//! push's path. A bounded queue takes each happening without waiting; a
//! worker delivers it, retrying 5xx, 429 and timeouts with backoff, never
//! other 4xx. Every outcome is counted (`pushroll_notifications_total`).
//! The URLs are secrets (a Slack webhook's path is its key): only their
//! host is ever logged.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::workload::Kind;

/// Happenings waiting for delivery; beyond this they are dropped (counted).
pub const QUEUE: usize = 256;
/// One attempt's bound (connect, send, answer).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts per happening and URL.
const ATTEMPTS: usize = 5;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum What {
    Restarted,
    Pending,
    RolloutComplete,
    RolloutFailed,
    ImageStale,
    Undone,
}

impl What {
    pub fn as_str(self) -> &'static str {
        match self {
            What::Restarted => "restarted",
            What::Pending => "pending",
            What::RolloutComplete => "rollout-complete",
            What::RolloutFailed => "rollout-failed",
            What::ImageStale => "image-stale",
            What::Undone => "undone",
        }
    }
}

/// The workload a happening is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Subject {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

/// One happening: the documented notification body (`format: json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Happening {
    pub event: What,
    pub workload: Subject,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    pub digest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    pub time: jiff::Timestamp,
    /// A sentence for people (what the Event says).
    pub message: String,
}

/// The body a receiver gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// The [`Happening`] as JSON.
    #[default]
    Json,
    /// An incoming-webhook body, `{"text": …}` (Slack, Google Chat).
    Slack,
}

impl Format {
    pub fn body(self, h: &Happening) -> serde_json::Value {
        match self {
            Format::Json => serde_json::to_value(h).expect("a happening always serializes"),
            Format::Slack => serde_json::json!({
                "text": slack_escape(&format!(
                    "pushroll: {} {}/{} {}: {}",
                    h.event.as_str(),
                    h.workload.namespace,
                    h.workload.name,
                    h.workload.kind,
                    h.message
                ))
            }),
        }
    }
}

/// Slack reads `&`, `<` and `>` as markup (`<url|label>`, `<!channel>`);
/// a message about an image must never ping a channel.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A receiver's URL: absolute, `http` or `https`, with a host. The error
/// never quotes the text (it is a secret).
pub fn parse_receiver(text: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(text.trim()).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "the scheme must be https or http, not {:?}",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("no host".to_owned());
    }
    Ok(url)
}

/// A URL as logs may show it: its scheme and host, never its path or query.
pub fn redact(url: &reqwest::Url) -> String {
    format!(
        "{}://{}",
        url.scheme(),
        url.host_str().unwrap_or("(no host)")
    )
}

/// `--notify-url` and `--notify-format`. Its `Debug` shows only the
/// hosts: configs get logged, and a webhook URL's path is its key.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct NotifyConfig {
    pub urls: Vec<reqwest::Url>,
    pub format: Format,
}

impl std::fmt::Debug for NotifyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hosts: Vec<String> = self.urls.iter().map(redact).collect();
        f.debug_struct("NotifyConfig")
            .field("urls", &hosts)
            .field("format", &self.format)
            .finish()
    }
}

/// How one delivery attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    Delivered,
    /// 5xx, 429, a timeout or no connection: worth another try.
    Retry,
    /// Another 4xx: the receiver refuses the body; trying again is useless.
    Refused,
}

/// What a status code means for a delivery.
pub fn judge(status: u16) -> Attempt {
    match status {
        200..=299 => Attempt::Delivered,
        429 | 500..=599 => Attempt::Retry,
        _ => Attempt::Refused,
    }
}

/// Takes happenings without ever waiting; without URLs, a no-op. Each
/// URL has its own queue and worker, so a dead receiver never holds up
/// another.
#[derive(Clone)]
pub struct Notifier {
    queues: Vec<mpsc::Sender<Arc<serde_json::Value>>>,
    format: Format,
    metrics: Arc<Metrics>,
}

impl Notifier {
    /// No `--notify-url`: every happening is ignored.
    pub fn disabled(metrics: Arc<Metrics>) -> Notifier {
        Notifier {
            queues: Vec::new(),
            format: Format::Json,
            metrics,
        }
    }

    /// Starts the worker of `config` (none without URLs).
    pub fn from_config(config: &NotifyConfig, metrics: Arc<Metrics>) -> Notifier {
        Notifier::start(config.urls.clone(), config.format, metrics)
    }

    /// Starts the worker that delivers to `urls` in `format`.
    pub fn start(urls: Vec<reqwest::Url>, format: Format, metrics: Arc<Metrics>) -> Notifier {
        if urls.is_empty() {
            return Notifier::disabled(metrics);
        }
        let http = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .connect_timeout(ATTEMPT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("building an HTTP client with static settings");
        let queues = urls
            .into_iter()
            .map(|url| {
                tracing::info!(receiver = %redact(&url), format = ?format, "notifications on");
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(deliver_all(rx, http.clone(), url, metrics.clone()));
                tx
            })
            .collect();
        Notifier {
            queues,
            format,
            metrics,
        }
    }

    /// Queues `h` for every URL; a full queue drops it (counted), never waits.
    pub fn send(&self, h: Happening) {
        if self.queues.is_empty() {
            return;
        }
        let body = Arc::new(self.format.body(&h));
        for tx in &self.queues {
            if tx.try_send(body.clone()).is_err() {
                self.metrics.notify.outcome("dropped");
                tracing::debug!(event = h.event.as_str(), "notification queue full; dropped");
            }
        }
    }
}

/// One URL's worker: its happenings in order.
async fn deliver_all(
    mut rx: mpsc::Receiver<Arc<serde_json::Value>>,
    http: reqwest::Client,
    url: reqwest::Url,
    metrics: Arc<Metrics>,
) {
    while let Some(body) = rx.recv().await {
        deliver(&http, &url, &body, &metrics).await;
    }
}

/// One happening to one URL, with bounded retries.
async fn deliver(
    http: &reqwest::Client,
    url: &reqwest::Url,
    body: &serde_json::Value,
    metrics: &Metrics,
) {
    let mut delays = backon::BackoffBuilder::build(
        backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(10))
            .with_max_times(ATTEMPTS - 1),
    );
    loop {
        let attempt = match http.post(url.clone()).json(body).send().await {
            Ok(answer) => judge(answer.status().as_u16()),
            Err(_) => Attempt::Retry,
        };
        match attempt {
            Attempt::Delivered => {
                metrics.notify.outcome("delivered");
                return;
            }
            Attempt::Refused => {
                metrics.notify.outcome("refused");
                tracing::warn!(receiver = %redact(url), "notification refused by the receiver (4xx); not retried");
                return;
            }
            Attempt::Retry => match delays.next() {
                Some(delay) => {
                    metrics.notify.outcome("retried");
                    tokio::time::sleep(delay).await;
                }
                None => {
                    metrics.notify.outcome("failed");
                    tracing::warn!(receiver = %redact(url), attempts = ATTEMPTS, "notification not delivered");
                    return;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_decide_retries() {
        let table = [
            (200, Attempt::Delivered),
            (204, Attempt::Delivered),
            (400, Attempt::Refused),
            (401, Attempt::Refused),
            (404, Attempt::Refused),
            (410, Attempt::Refused),
            (429, Attempt::Retry),
            (500, Attempt::Retry),
            (502, Attempt::Retry),
            (503, Attempt::Retry),
            (301, Attempt::Refused),
        ];
        for (code, want) in table {
            assert_eq!(judge(code), want, "{code}");
        }
    }

    #[test]
    fn receiver_urls_are_checked_without_being_quoted() {
        let table: [(&str, Result<&str, &str>); 8] = [
            (
                "https://hooks.slack.com/services/T/B/SECRET",
                Ok("hooks.slack.com"),
            ),
            ("http://127.0.0.1:9000/hook?k=SECRET", Ok("127.0.0.1")),
            (
                " https://chat.googleapis.com/v1/spaces/X/messages?key=SECRET ",
                Ok("chat.googleapis.com"),
            ),
            (
                "hooks.slack.com/services/T/B/SECRET",
                Err("relative URL without a base"),
            ),
            (
                "ftp://files.example.com/SECRET",
                Err("the scheme must be https or http"),
            ),
            (
                "mailto:SECRET@example.com",
                Err("the scheme must be https or http"),
            ),
            ("https://:SECRET@/x", Err("empty host")),
            ("", Err("relative URL without a base")),
        ];
        for (text, want) in table {
            match (parse_receiver(text), want) {
                (Ok(url), Ok(host)) => assert_eq!(url.host_str(), Some(host), "{text}"),
                (Err(why), Err(part)) => {
                    assert!(why.contains(part), "{text}: {why}");
                    assert!(!why.contains("SECRET"), "{text}: {why}");
                }
                (got, _) => panic!("{text}: {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn logs_show_only_the_host() {
        let url: reqwest::Url =
            "https://hooks.slack.com/services/T000/B000/SECRETPATH?token=SECRETQUERY"
                .parse()
                .unwrap();
        let shown = redact(&url);
        assert_eq!(shown, "https://hooks.slack.com");
        assert!(!shown.contains("SECRET"));
        let config = NotifyConfig {
            urls: vec![url],
            format: Format::Slack,
        };
        let debug = format!("{config:?}");
        assert!(
            debug.contains("hooks.slack.com") && !debug.contains("SECRET"),
            "{debug}"
        );
    }

    fn happening(n: usize) -> Happening {
        Happening {
            event: What::Restarted,
            workload: Subject {
                kind: Kind::Deployment,
                namespace: "ns".into(),
                name: format!("w{n}"),
            },
            image: None,
            digest: "sha256:aa".into(),
            message_id: None,
            time: jiff::Timestamp::now(),
            message: "restarted".into(),
        }
    }

    /// A receiver on loopback whose answers come from `answer` (the count
    /// of requests so far); returns its URL and the bodies it got.
    async fn receiver(
        answer: impl Fn(usize) -> Option<u16> + Send + Sync + 'static,
    ) -> (reqwest::Url, Arc<std::sync::Mutex<Vec<serde_json::Value>>>) {
        use axum::routing::post;
        let got = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = got.clone();
        let answer = Arc::new(answer);
        let app = axum::Router::new().route(
            "/hook/{secret}",
            post(move |axum::Json(body): axum::Json<serde_json::Value>| {
                let (seen, answer) = (seen.clone(), answer.clone());
                async move {
                    let n = {
                        let mut seen = seen.lock().unwrap();
                        seen.push(body);
                        seen.len()
                    };
                    match answer(n) {
                        Some(code) => axum::http::StatusCode::from_u16(code).unwrap(),
                        // Hang: never answer.
                        None => std::future::pending().await,
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let url = format!("http://{addr}/hook/SECRET?token=SECRET")
            .parse()
            .unwrap();
        (url, got)
    }

    fn count(m: &Metrics, result: &str) -> f64 {
        let text = m.encode();
        let series = format!("pushroll_notifications_total{{result=\"{result}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }

    async fn until(limit: Duration, mut check: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + limit;
        while !check() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "not within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn two_500s_then_a_200_is_delivered_on_the_third_try() {
        let (url, got) = receiver(|n| Some(if n <= 2 { 500 } else { 200 })).await;
        let metrics = Metrics::new();
        let notifier = Notifier::start(vec![url], Format::Json, metrics.clone());
        notifier.send(happening(1));
        until(Duration::from_secs(10), || {
            count(&metrics, "delivered") == 1.0
        })
        .await;
        assert_eq!(count(&metrics, "retried"), 2.0);
        let bodies = got.lock().unwrap().clone();
        assert_eq!(bodies.len(), 3);
        assert!(bodies.iter().all(|b| b["workload"]["name"] == "w1"));
    }

    #[tokio::test]
    async fn a_4xx_is_not_retried() {
        let (url, got) = receiver(|_| Some(404)).await;
        let metrics = Metrics::new();
        let notifier = Notifier::start(vec![url], Format::Slack, metrics.clone());
        notifier.send(happening(1));
        until(Duration::from_secs(10), || {
            count(&metrics, "refused") == 1.0
        })
        .await;
        assert_eq!(got.lock().unwrap().len(), 1);
        assert_eq!(count(&metrics, "retried"), 0.0);
    }

    #[tokio::test]
    async fn a_hanging_receiver_never_blocks_the_sender_and_drops_are_counted() {
        let (url, _) = receiver(|_| None).await;
        let metrics = Metrics::new();
        let notifier = Notifier::start(vec![url], Format::Json, metrics.clone());
        let started = std::time::Instant::now();
        for n in 0..QUEUE + 50 {
            notifier.send(happening(n));
        }
        // Every send returned at once, whatever the receiver does.
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        // The worker holds one; the queue the next QUEUE; the rest dropped.
        until(Duration::from_secs(5), || {
            count(&metrics, "dropped") >= 49.0
        })
        .await;
        assert!(count(&metrics, "dropped") <= 50.0);
    }

    #[tokio::test]
    async fn a_dead_receiver_never_holds_up_a_live_one() {
        let (dead, _) = receiver(|_| None).await;
        let (live, got) = receiver(|_| Some(200)).await;
        let metrics = Metrics::new();
        let notifier = Notifier::start(vec![dead, live], Format::Json, metrics.clone());
        for n in 0..3 {
            notifier.send(happening(n));
        }
        // Well inside the dead one's first 5 s timeout.
        until(Duration::from_secs(3), || got.lock().unwrap().len() == 3).await;
        assert_eq!(count(&metrics, "delivered"), 3.0);
    }

    #[test]
    fn slack_markup_in_a_message_is_escaped() {
        let mut h = happening(1);
        h.message = "image <!channel> & <https://x|y>".into();
        let text = Format::Slack.body(&h)["text"].as_str().unwrap().to_owned();
        assert!(
            text.ends_with("image &lt;!channel&gt; &amp; &lt;https://x|y&gt;"),
            "{text}"
        );
        // The JSON format carries the message as it is.
        assert_eq!(Format::Json.body(&h)["message"], h.message.as_str());
    }

    #[test]
    fn bodies_in_both_formats() {
        let h = Happening {
            event: What::RolloutComplete,
            workload: Subject {
                kind: Kind::Deployment,
                namespace: "production".into(),
                name: "api".into(),
            },
            image: Some("r.example/app:v1".into()),
            digest: "sha256:aa".into(),
            message_id: Some("7".into()),
            time: "2026-12-01T10:00:00Z".parse().unwrap(),
            message: "Rollout of sha256:aa complete".into(),
        };
        let json = Format::Json.body(&h);
        assert_eq!(json["event"], "rollout-complete");
        assert_eq!(json["workload"]["kind"], "Deployment");
        assert_eq!(json["messageId"], "7");
        assert_eq!(json["time"], "2026-12-01T10:00:00Z");
        let slack = Format::Slack.body(&h);
        let text = slack["text"].as_str().unwrap();
        assert_eq!(slack.as_object().unwrap().len(), 1, "{slack}");
        assert!(
            text.contains("rollout-complete") && text.contains("production/api"),
            "{text}"
        );
    }
}
