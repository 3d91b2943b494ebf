//! Where a push is parsed: a Pub/Sub push delivery (wrapped envelope,
//! unwrapped body with `x-goog-pubsub-*` headers) or a bare Artifact Registry
//! notification, decoded into what to do.
//!
//! Pure code: bytes and header values in, a [`Delivery`] out. The order of
//! the checks is the contract's (`openapi.yaml`, the description of
//! `POST /push`).

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

use crate::reference::{Reference, validate_digest};

/// The header that marks an unwrapped (`noWrapper`) delivery.
pub(crate) const HEADER_MESSAGE_ID: &str = "x-goog-pubsub-message-id";
pub(crate) const HEADER_SUBSCRIPTION: &str = "x-goog-pubsub-subscription-name";
pub(crate) const HEADER_PUBLISH_TIME: &str = "x-goog-pubsub-publish-time";

/// How the request carried the notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Wrapped,
    Unwrapped,
    Bare,
    /// Received by StreamingPull: read as a wrapped envelope's message.
    Pulled,
    /// A registry's own webhook (`POST /webhooks/{source}`).
    Webhook,
}

/// Who sent a push: the `source` label of the push metrics. Every origin
/// takes the same path from a [`Delivery`] on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// Artifact Registry through Pub/Sub, pushed (`/push`) or pulled.
    PubSub,
    Distribution,
    Harbor,
    Github,
    Ecr,
    Dockerhub,
    Quay,
}

impl Origin {
    pub const ALL: [Origin; 7] = [
        Origin::PubSub,
        Origin::Distribution,
        Origin::Harbor,
        Origin::Github,
        Origin::Ecr,
        Origin::Dockerhub,
        Origin::Quay,
    ];

    /// The metric label, and the `{source}` of `/webhooks/{source}`.
    pub fn label(self) -> &'static str {
        match self {
            Origin::PubSub => "pubsub",
            Origin::Distribution => "distribution",
            Origin::Harbor => "harbor",
            Origin::Github => "github",
            Origin::Ecr => "ecr",
            Origin::Dockerhub => "dockerhub",
            Origin::Quay => "quay",
        }
    }
}

/// A well-formed request. Whether it is acted on is in `action`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub form: Form,
    pub origin: Origin,
    pub message_id: Option<String>,
    pub subscription: Option<String>,
    /// The notification's `action` as sent, when there was one.
    pub action_name: Option<String>,
    /// When Pub/Sub accepted the message (`publishTime`, or the unwrapped
    /// form's header); `None` for a bare notification or an unreadable time.
    pub published: Option<jiff::Timestamp>,
    pub action: Action,
}

/// What a delivery asks of us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A tag now points at `digest`: restart what runs `image`.
    Restart { image: Reference, digest: String },
    /// A well-formed delivery that we do not act on (answered 200, never retried).
    Ignore(IgnoreReason),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IgnoreReason {
    NoData,
    NotANotification,
    Delete,
    UntaggedDigest,
    UnknownAction(String),
    MissingDigest,
    InvalidTag(String),
    InvalidDigest(String),
    RepositoryMismatch,
    /// A registry webhook about a blob (a layer or config), not a tag.
    Blob,
    /// A registry webhook about a pull.
    Pull,
    /// A registry webhook about a cross-repository blob mount.
    Mount,
    /// A registry webhook reporting a push that failed (ECR `result: FAILURE`).
    Failed,
    /// A webhook's ping (GitHub's `ping`).
    Ping,
    /// A webhook event that is not a push (named, truncated).
    NotAPush(String),
    /// A GitHub package that is not a container image.
    NotAContainer,
    /// A payload that carries no event at all.
    NoEvents,
    /// A registry event that does not name the registry's host.
    MissingHost,
}

impl IgnoreReason {
    /// A short human reason for the response body and logs.
    pub fn describe(&self) -> String {
        match self {
            IgnoreReason::NoData => "the message has no data".into(),
            IgnoreReason::NotANotification => {
                "the message data is not an Artifact Registry notification".into()
            }
            IgnoreReason::Delete => "DELETE notifications restart nothing".into(),
            IgnoreReason::UntaggedDigest => {
                "an INSERT without a tag (untagged digest) restarts nothing".into()
            }
            IgnoreReason::UnknownAction(a) => format!("unknown action {a:?}"),
            IgnoreReason::MissingDigest => {
                "an INSERT with a tag but no digest cannot be applied once per image".into()
            }
            IgnoreReason::InvalidTag(e) => format!("the tag is not a valid image reference: {e}"),
            IgnoreReason::InvalidDigest(e) => format!("the digest is not valid: {e}"),
            IgnoreReason::RepositoryMismatch => {
                "the tag and the digest name different repositories".into()
            }
            IgnoreReason::Blob => {
                "a blob push (layer or config) restarts nothing; its manifest's event does".into()
            }
            IgnoreReason::Pull => "pulls restart nothing".into(),
            IgnoreReason::Mount => "a blob mount restarts nothing".into(),
            IgnoreReason::Failed => "the registry reports that the push failed".into(),
            IgnoreReason::Ping => "a ping: the webhook is set up".into(),
            IgnoreReason::NotAPush(e) => format!("event {e:?} is not a push"),
            IgnoreReason::NotAContainer => "the package is not a container image".into(),
            IgnoreReason::NoEvents => "the payload carries no event".into(),
            IgnoreReason::MissingHost => {
                "the event does not name the registry's host (request.host)".into()
            }
        }
    }

    /// A stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            IgnoreReason::NoData => "no-data",
            IgnoreReason::NotANotification => "not-a-notification",
            IgnoreReason::Delete => "delete",
            IgnoreReason::UntaggedDigest => "untagged-digest",
            IgnoreReason::UnknownAction(_) => "unknown-action",
            IgnoreReason::MissingDigest => "missing-digest",
            IgnoreReason::InvalidTag(_) => "invalid-tag",
            IgnoreReason::InvalidDigest(_) => "invalid-digest",
            IgnoreReason::RepositoryMismatch => "repository-mismatch",
            IgnoreReason::Blob => "blob",
            IgnoreReason::Pull => "pull",
            IgnoreReason::Mount => "mount",
            IgnoreReason::Failed => "failed",
            IgnoreReason::Ping => "ping",
            IgnoreReason::NotAPush(_) => "not-a-push",
            IgnoreReason::NotAContainer => "not-a-container",
            IgnoreReason::NoEvents => "no-events",
            IgnoreReason::MissingHost => "missing-host",
        }
    }
}

/// The request itself is malformed (answered 400, Pub/Sub retries).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("the body is not a push envelope or an Artifact Registry notification: {0}")]
    NotAnEnvelope(&'static str),
    #[error("message.data is not base64")]
    DataNotBase64,
}

/// The headers `decode` looks at, already extracted by the HTTP layer.
#[derive(Debug, Default, Clone, Copy)]
pub struct PushHeaders<'a> {
    pub message_id: Option<&'a str>,
    pub subscription: Option<&'a str>,
    pub publish_time: Option<&'a str>,
}

#[derive(Deserialize)]
struct Envelope {
    subscription: Option<String>,
    message: Message,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    data: Option<String>,
    #[serde(rename = "messageId")]
    message_id_camel: Option<String>,
    message_id: Option<String>,
    #[serde(rename = "publishTime")]
    publish_time_camel: Option<String>,
    publish_time: Option<String>,
}

/// Artifact Registry's notification: `{"action":…, "digest":…, "tag":…}`.
#[derive(Deserialize)]
struct Notification {
    action: String,
    digest: Option<String>,
    tag: Option<String>,
}

/// Decodes one `POST /push` request.
pub fn decode(headers: PushHeaders<'_>, body: &[u8]) -> Result<Delivery, DecodeError> {
    let json: Option<Value> = serde_json::from_slice(body).ok();

    // 1. A JSON object with a `message` member is a wrapped envelope.
    if let Some(Value::Object(obj)) = &json
        && obj.contains_key("message")
    {
        let envelope: Envelope = serde_json::from_value(Value::Object(obj.clone()))
            .map_err(|_| DecodeError::NotAnEnvelope("`message` is not a Pub/Sub message"))?;
        let message = envelope.message;
        let data = match message.data.as_deref() {
            None | Some("") => Vec::new(),
            Some(d) => decode_base64(d)?,
        };
        let published = message.publish_time_camel.or(message.publish_time);
        return Ok(Delivery {
            form: Form::Wrapped,
            ..from_message(PubSubMessage {
                subscription: envelope.subscription.as_deref(),
                message_id: message.message_id_camel.or(message.message_id).as_deref(),
                published: published.as_deref().and_then(timestamp),
                data: &data,
            })
        });
    }

    // 2. An `x-goog-pubsub-message-id` header marks an unwrapped delivery.
    if let Some(id) = headers.message_id {
        let (action_name, action) = if body.is_empty() {
            (None, Action::Ignore(IgnoreReason::NoData))
        } else {
            from_data(body)
        };
        return Ok(Delivery {
            form: Form::Unwrapped,
            origin: Origin::PubSub,
            message_id: Some(id.to_owned()),
            subscription: headers.subscription.map(str::to_owned),
            action_name,
            published: headers.publish_time.and_then(timestamp),
            action,
        });
    }

    // 3. Anything else must be a bare notification.
    let json = json.ok_or_else(|| {
        let err = serde_json::from_slice::<Value>(body).err();
        DecodeError::NotJson(err.map(|e| e.to_string()).unwrap_or_default())
    })?;
    let obj = match &json {
        Value::Object(obj) => obj,
        _ => return Err(DecodeError::NotAnEnvelope("expected a JSON object")),
    };
    if !obj.get("action").is_some_and(Value::is_string) {
        return Err(DecodeError::NotAnEnvelope(
            "expected `message` (a push envelope) or `action` (a notification)",
        ));
    }
    let notification: Notification = serde_json::from_value(json)
        .map_err(|_| DecodeError::NotAnEnvelope("`digest` and `tag` must be strings"))?;
    let action_name = Some(notification.action.clone());
    Ok(Delivery {
        form: Form::Bare,
        origin: Origin::PubSub,
        message_id: None,
        subscription: None,
        action_name,
        published: None,
        action: interpret(notification),
    })
}

/// One Pub/Sub message, however it arrived: a wrapped push envelope's
/// `message` (its data already base64-decoded) or a pulled message.
#[derive(Debug, Clone, Copy)]
pub struct PubSubMessage<'a> {
    pub subscription: Option<&'a str>,
    pub message_id: Option<&'a str>,
    pub published: Option<jiff::Timestamp>,
    pub data: &'a [u8],
}

/// Reads a Pub/Sub message's data as `/push` reads a wrapped delivery's:
/// pulled messages come through here too, so both sources are one path.
pub fn from_message(message: PubSubMessage<'_>) -> Delivery {
    let (action_name, action) = if message.data.is_empty() {
        (None, Action::Ignore(IgnoreReason::NoData))
    } else {
        from_data(message.data)
    };
    Delivery {
        form: Form::Pulled,
        origin: Origin::PubSub,
        message_id: message.message_id.map(str::to_owned),
        subscription: message.subscription.map(str::to_owned),
        action_name,
        published: message.published,
        action,
    }
}

/// An RFC 3339 publish time; an unreadable one is as good as none (the
/// time of receipt stands in for it).
fn timestamp(s: &str) -> Option<jiff::Timestamp> {
    s.parse().ok()
}

fn decode_base64(data: &str) -> Result<Vec<u8>, DecodeError> {
    // Pub/Sub sends standard base64 with padding; be lenient about padding
    // and the URL-safe alphabet, which some clients publish with.
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(data).ok())
        .ok_or(DecodeError::DataNotBase64)
}

/// Message data that is not a notification is a delivery to ignore.
fn from_data(data: &[u8]) -> (Option<String>, Action) {
    match serde_json::from_slice::<Notification>(data) {
        Ok(n) => (Some(n.action.clone()), interpret(n)),
        Err(_) => (None, Action::Ignore(IgnoreReason::NotANotification)),
    }
}

/// Decides what a notification asks for.
fn interpret(n: Notification) -> Action {
    let ignore = Action::Ignore;
    match n.action.as_str() {
        "INSERT" => {}
        "DELETE" => return ignore(IgnoreReason::Delete),
        other => return ignore(IgnoreReason::UnknownAction(truncate(other, 64))),
    }
    let Some(tag) = n.tag.filter(|t| !t.is_empty()) else {
        return ignore(IgnoreReason::UntaggedDigest);
    };
    let image = match Reference::parse(&tag) {
        Ok(r) if r.tag().is_some() && !r.is_pinned() => r,
        Ok(_) => return ignore(IgnoreReason::InvalidTag("expected NAME:TAG".into())),
        Err(e) => return ignore(IgnoreReason::InvalidTag(e.to_string())),
    };
    let Some(digest_field) = n.digest.filter(|d| !d.is_empty()) else {
        return ignore(IgnoreReason::MissingDigest);
    };
    // Artifact Registry sends a full `NAME@sha256:…`; a bare digest is accepted too.
    let digest = if digest_field.contains('@') {
        match Reference::parse(&digest_field) {
            Ok(d) if d.name() != image.name() => {
                return ignore(IgnoreReason::RepositoryMismatch);
            }
            Ok(d) => d.digest().unwrap_or_default().to_owned(),
            Err(e) => return ignore(IgnoreReason::InvalidDigest(e.to_string())),
        }
    } else {
        if let Err(e) = validate_digest(&digest_field) {
            return ignore(IgnoreReason::InvalidDigest(e.to_string()));
        }
        digest_field
    };
    Action::Restart { image, digest }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;

    const D: &str = "sha256:6ec128e26cd5e5b3d5ad4ad0b3b1e0b5c5a4a2a8e1f3f6f9d0a7b4c1e2d3f4a5";
    const REPO: &str = "us-east1-docker.pkg.dev/demo-project/apps/web";

    fn insert() -> String {
        format!(r#"{{"action":"INSERT","digest":"{REPO}@{D}","tag":"{REPO}:v1.4"}}"#)
    }

    fn wrapped(data: &str) -> String {
        format!(
            r#"{{"subscription":"projects\/p\/subscriptions\/s","message":{{"data":"{}","messageId":"43","message_id":"43"}}}}"#,
            STANDARD.encode(data)
        )
    }

    fn restart() -> Action {
        Action::Restart {
            image: Reference::parse(&format!("{REPO}:v1.4")).unwrap(),
            digest: D.into(),
        }
    }

    #[test]
    fn decodes_the_three_forms() {
        let unwrapped = PushHeaders {
            message_id: Some("44"),
            subscription: Some("projects/p/subscriptions/raw"),
            publish_time: None,
        };
        let none = PushHeaders::default();
        // (headers, body, form, message id, subscription)
        type Case<'a> = (
            PushHeaders<'a>,
            String,
            Form,
            Option<&'a str>,
            Option<&'a str>,
        );
        let cases: Vec<Case> = vec![
            (
                none,
                wrapped(&insert()),
                Form::Wrapped,
                Some("43"),
                Some("projects/p/subscriptions/s"),
            ),
            (
                unwrapped,
                insert(),
                Form::Unwrapped,
                Some("44"),
                Some("projects/p/subscriptions/raw"),
            ),
            (none, insert(), Form::Bare, None, None),
            // A wrapped envelope wins over the unwrapped header.
            (
                unwrapped,
                wrapped(&insert()),
                Form::Wrapped,
                Some("43"),
                Some("projects/p/subscriptions/s"),
            ),
        ];
        for (headers, body, form, id, sub) in cases {
            let d = decode(headers, body.as_bytes()).unwrap();
            assert_eq!(d.form, form, "{body}");
            assert_eq!(d.message_id.as_deref(), id);
            assert_eq!(d.subscription.as_deref(), sub);
            assert_eq!(d.action, restart(), "{body}");
            assert_eq!(d.action_name.as_deref(), Some("INSERT"));
        }
    }

    #[test]
    fn the_publish_time_comes_from_each_form() {
        let t: jiff::Timestamp = "2026-11-26T22:47:29.798Z".parse().unwrap();
        let data = STANDARD.encode(insert());
        let envelope = |message: &str| format!(r#"{{"message":{{"data":"{data}",{message}}}}}"#);
        let header = |time| PushHeaders {
            message_id: Some("44"),
            subscription: None,
            publish_time: Some(time),
        };
        let none = PushHeaders::default();
        let cases: Vec<(&str, PushHeaders, String, Option<jiff::Timestamp>)> = vec![
            (
                "publishTime",
                none,
                envelope(r#""publishTime":"2026-11-26T22:47:29.798Z""#),
                Some(t),
            ),
            (
                "publish_time",
                none,
                envelope(r#""publish_time":"2026-11-26T22:47:29.798Z""#),
                Some(t),
            ),
            (
                "both (as Pub/Sub sends them)",
                none,
                envelope(
                    r#""publishTime":"2026-11-26T22:47:29.798Z","publish_time":"2026-11-26T22:47:29.798Z""#,
                ),
                Some(t),
            ),
            (
                "none in the envelope",
                none,
                envelope(r#""messageId":"1""#),
                None,
            ),
            (
                "unreadable",
                none,
                envelope(r#""publishTime":"soon""#),
                None,
            ),
            (
                "unwrapped header",
                header("2026-11-26T22:47:29.798Z"),
                insert(),
                Some(t),
            ),
            (
                "unwrapped, unreadable header",
                header("yesterday"),
                insert(),
                None,
            ),
            // A bare notification: the server stands in the time of receipt.
            ("bare", none, insert(), None),
        ];
        for (case, headers, body, want) in cases {
            let d = decode(headers, body.as_bytes()).unwrap();
            assert_eq!(d.published, want, "{case}");
            assert_eq!(d.action, restart(), "{case}");
        }
    }

    #[test]
    fn reads_the_shared_samples() {
        let wrapped = include_str!("../examples/push-wrapped.json");
        let d = decode(PushHeaders::default(), wrapped.as_bytes()).unwrap();
        assert!(matches!(d.action, Action::Restart { .. }), "{d:?}");
        assert_eq!(d.message_id.as_deref(), Some("43"));
        let bare = include_str!("../examples/ar-insert-tag.json");
        let d = decode(PushHeaders::default(), bare.as_bytes()).unwrap();
        assert!(matches!(d.action, Action::Restart { .. }), "{d:?}");
    }

    #[test]
    fn snake_case_message_id_is_read() {
        let body = format!(
            r#"{{"message":{{"data":"{}","message_id":"9"}}}}"#,
            STANDARD.encode(insert())
        );
        let d = decode(PushHeaders::default(), body.as_bytes()).unwrap();
        assert_eq!(d.message_id.as_deref(), Some("9"));
    }

    #[test]
    fn ignores_what_it_does_not_act_on() {
        use IgnoreReason::*;
        let other = "registry.example.com/other/web";
        let table: Vec<(String, IgnoreReason)> = vec![
            (
                format!(r#"{{"action":"DELETE","tag":"{REPO}:v1"}}"#),
                Delete,
            ),
            (
                format!(r#"{{"action":"INSERT","digest":"{REPO}@{D}"}}"#),
                UntaggedDigest,
            ),
            (
                format!(r#"{{"action":"INSERT","digest":"{REPO}@{D}","tag":""}}"#),
                UntaggedDigest,
            ),
            (
                format!(r#"{{"action":"UPDATE","tag":"{REPO}:v1"}}"#),
                UnknownAction("UPDATE".into()),
            ),
            (
                format!(r#"{{"action":"INSERT","tag":"{REPO}:v1"}}"#),
                MissingDigest,
            ),
            (
                format!(r#"{{"action":"INSERT","digest":"{other}@{D}","tag":"{REPO}:v1"}}"#),
                RepositoryMismatch,
            ),
        ];
        for (data, want) in table {
            assert_eq!(from_data(data.as_bytes()).1, Action::Ignore(want), "{data}");
        }
    }

    #[test]
    fn a_bare_digest_is_accepted() {
        let data = format!(r#"{{"action":"INSERT","digest":"{D}","tag":"{REPO}:v1.4"}}"#);
        assert_eq!(from_data(data.as_bytes()).1, restart());
    }

    #[test]
    fn invalid_references_are_ignored_not_errors() {
        let table = [
            format!(r#"{{"action":"INSERT","digest":"{REPO}@{D}","tag":"{REPO}:"}}"#),
            format!(r#"{{"action":"INSERT","digest":"{REPO}@{D}","tag":"UPPER/Case:v1"}}"#),
            format!(r#"{{"action":"INSERT","digest":"{REPO}@{D}","tag":"{REPO}:v1@{D}"}}"#),
            format!(r#"{{"action":"INSERT","digest":"{REPO}@{D}","tag":"{REPO}"}}"#),
            format!(r#"{{"action":"INSERT","digest":"{REPO}@sha256:nothex","tag":"{REPO}:v1"}}"#),
            format!(r#"{{"action":"INSERT","digest":"sha256:short","tag":"{REPO}:v1"}}"#),
            format!(r#"{{"action":"INSERT","digest":"{REPO}@{D}","tag":"ünï/cöde:v1"}}"#),
        ];
        for data in table {
            for (headers, body) in [
                (PushHeaders::default(), wrapped(&data)),
                (
                    PushHeaders {
                        message_id: Some("1"),
                        subscription: None,
                        publish_time: None,
                    },
                    data.clone(),
                ),
                (PushHeaders::default(), data.clone()),
            ] {
                let d = decode(headers, body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e}"));
                assert!(
                    matches!(d.action, Action::Ignore(_)),
                    "{body}: {:?}",
                    d.action
                );
            }
        }
    }

    #[test]
    fn data_that_is_not_a_notification_is_ignored() {
        let table = [
            "hello",
            "{}",
            "[]",
            "null",
            r#"{"action":1}"#,
            "\u{1F600}",
            r#"{"tag":"x"}"#,
        ];
        for data in table {
            let d = decode(PushHeaders::default(), wrapped(data).as_bytes()).unwrap();
            assert_eq!(
                d.action,
                Action::Ignore(IgnoreReason::NotANotification),
                "{data}"
            );
            let headers = PushHeaders {
                message_id: Some("1"),
                subscription: None,
                publish_time: None,
            };
            let d = decode(headers, data.as_bytes()).unwrap();
            assert_eq!(
                d.action,
                Action::Ignore(IgnoreReason::NotANotification),
                "{data}"
            );
        }
        for body in [r#"{"message":{"data":""}}"#, r#"{"message":{}}"#] {
            let d = decode(PushHeaders::default(), body.as_bytes()).unwrap();
            assert_eq!(d.action, Action::Ignore(IgnoreReason::NoData), "{body}");
        }
        let headers = PushHeaders {
            message_id: Some("1"),
            subscription: None,
            publish_time: None,
        };
        let d = decode(headers, b"").unwrap();
        assert_eq!(d.action, Action::Ignore(IgnoreReason::NoData));
    }

    #[test]
    fn malformed_requests_are_errors() {
        let none = PushHeaders::default();
        type IsExpected = fn(&DecodeError) -> bool;
        let table: &[(&str, IsExpected)] = &[
            ("", |e| matches!(e, DecodeError::NotJson(_))),
            ("not json", |e| matches!(e, DecodeError::NotJson(_))),
            ("{\"action\":", |e| matches!(e, DecodeError::NotJson(_))),
            ("action=INSERT&tag=x", |e| {
                matches!(e, DecodeError::NotJson(_))
            }),
            ("[]", |e| matches!(e, DecodeError::NotAnEnvelope(_))),
            ("42", |e| matches!(e, DecodeError::NotAnEnvelope(_))),
            ("\"str\"", |e| matches!(e, DecodeError::NotAnEnvelope(_))),
            ("{}", |e| matches!(e, DecodeError::NotAnEnvelope(_))),
            (r#"{"action":1}"#, |e| {
                matches!(e, DecodeError::NotAnEnvelope(_))
            }),
            (r#"{"action":"INSERT","tag":5}"#, |e| {
                matches!(e, DecodeError::NotAnEnvelope(_))
            }),
            (r#"{"message":"x"}"#, |e| {
                matches!(e, DecodeError::NotAnEnvelope(_))
            }),
            (r#"{"message":null}"#, |e| {
                matches!(e, DecodeError::NotAnEnvelope(_))
            }),
            (r#"{"message":{"data":5}}"#, |e| {
                matches!(e, DecodeError::NotAnEnvelope(_))
            }),
            (r#"{"message":{"data":"!!!"}}"#, |e| {
                *e == DecodeError::DataNotBase64
            }),
            (r#"{"message":{"data":"a"}}"#, |e| {
                *e == DecodeError::DataNotBase64
            }),
        ];
        for (body, is_expected) in table {
            let err = decode(none, body.as_bytes()).expect_err(body);
            assert!(is_expected(&err), "{body}: {err:?}");
        }
    }
}
