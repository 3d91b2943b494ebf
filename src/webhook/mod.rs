//! Registries' own push notifications (`POST /webhooks/{source}`), read
//! into the pushes the rest of pushroll already handles.
//!
//! One small pure parser per source ([`distribution`], [`harbor`],
//! [`github`], [`ecr`], [`dockerhub`], [`quay`]): bytes in, [`Event`]s out.
//! Where each payload's shape comes from is in `docs/webhooks.md`.
//! Verifying the sender is [`verify`]'s (pure, constant time); finding the
//! digest that Docker Hub and Quay leave out is [`resolve`]'s (one registry
//! API call).

pub mod distribution;
pub mod dockerhub;
pub mod ecr;
pub mod github;
pub mod harbor;
pub mod quay;
pub mod resolve;
pub mod verify;

use serde_json::Value;

use crate::push::{Action, Delivery, Form, IgnoreReason, Origin};
use crate::reference::{Reference, validate_digest};

/// The most pushes one payload may carry (Harbor's resources, Quay's
/// tags, distribution's events): more is a malformed request, not work.
pub const MAX_EVENTS: usize = 256;

/// One push a payload announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Complete: hand it to the pipeline.
    Ready(Delivery),
    /// Docker Hub and Quay name a tag but not its digest: resolve it first.
    Unresolved(Unresolved),
}

/// A push whose digest must be asked of the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    pub origin: Origin,
    pub message_id: Option<String>,
    pub published: Option<jiff::Timestamp>,
    /// `R:T`, the tag to resolve.
    pub image: Reference,
}

impl Unresolved {
    /// The push, once the registry said which digest the tag names.
    pub fn resolved(self, digest: String) -> Delivery {
        Delivery {
            form: Form::Webhook,
            origin: self.origin,
            message_id: self.message_id,
            subscription: None,
            action_name: Some("push".into()),
            published: self.published,
            action: Action::Restart {
                image: self.image,
                digest,
            },
        }
    }
}

/// The request's body is not the source's payload (answered 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("the body is not a {sender} webhook payload: {why}")]
    Shape { sender: &'static str, why: String },
    #[error("the payload carries more than {MAX_EVENTS} pushes")]
    TooMany,
}

/// What a parser needs beside the body: headers the HTTP layer read.
#[derive(Debug, Default, Clone, Copy)]
pub struct Request<'a> {
    /// GitHub's `X-GitHub-Event`.
    pub github_event: Option<&'a str>,
    /// GitHub's `X-GitHub-Delivery`.
    pub github_delivery: Option<&'a str>,
}

/// Reads `body` as `origin`'s payload. `Origin::PubSub` is not a webhook.
pub fn parse(origin: Origin, request: Request<'_>, body: &[u8]) -> Result<Vec<Event>, ParseError> {
    let json = json(body)?;
    let events = match origin {
        Origin::Distribution => distribution::parse(&json)?,
        Origin::Harbor => harbor::parse(&json)?,
        Origin::Github => github::parse(request, &json)?,
        Origin::Ecr => ecr::parse(&json)?,
        Origin::Dockerhub => dockerhub::parse(&json)?,
        Origin::Quay => quay::parse(&json)?,
        Origin::PubSub => {
            return Err(ParseError::Shape {
                sender: "pubsub",
                why: "Pub/Sub pushes go to /push".into(),
            });
        }
    };
    if events.len() > MAX_EVENTS {
        return Err(ParseError::TooMany);
    }
    Ok(events)
}

fn json(body: &[u8]) -> Result<Value, ParseError> {
    serde_json::from_slice(body).map_err(|e| ParseError::NotJson(e.to_string()))
}

/// A webhook delivery of `origin`.
pub(crate) fn delivery(
    origin: Origin,
    message_id: Option<String>,
    action_name: Option<String>,
    published: Option<jiff::Timestamp>,
    action: Action,
) -> Event {
    Event::Ready(Delivery {
        form: Form::Webhook,
        origin,
        message_id,
        subscription: None,
        action_name,
        published,
        action,
    })
}

pub(crate) fn ignored(origin: Origin, action_name: Option<String>, reason: IgnoreReason) -> Event {
    delivery(origin, None, action_name, None, Action::Ignore(reason))
}

/// `R:T` at `digest`, or why it is ignored. The image must name a tag and
/// no digest; the digest must be `algorithm:hex`.
pub(crate) fn restart(image: &str, digest: Option<&str>) -> Action {
    let image = match tagged(image) {
        Ok(r) => r,
        Err(reason) => return Action::Ignore(reason),
    };
    let Some(digest) = digest.filter(|d| !d.is_empty()) else {
        return Action::Ignore(IgnoreReason::MissingDigest);
    };
    if let Err(e) = validate_digest(digest) {
        return Action::Ignore(IgnoreReason::InvalidDigest(e.to_string()));
    }
    Action::Restart {
        image,
        digest: digest.to_owned(),
    }
}

/// `R:T` read as a tagged, unpinned reference.
pub(crate) fn tagged(image: &str) -> Result<Reference, IgnoreReason> {
    match Reference::parse(image) {
        Ok(r) if r.tag().is_some() && !r.is_pinned() => Ok(r),
        Ok(_) => Err(IgnoreReason::InvalidTag("expected NAME:TAG".into())),
        Err(e) => Err(IgnoreReason::InvalidTag(e.to_string())),
    }
}

/// A string member, when it is one.
pub(crate) fn str_at<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

/// An RFC 3339 time; an unreadable one is as good as none.
pub(crate) fn rfc3339(s: Option<&str>) -> Option<jiff::Timestamp> {
    s.and_then(|s| s.parse().ok())
}

/// Seconds since the epoch (Docker Hub, Harbor).
pub(crate) fn unix(value: Option<&Value>) -> Option<jiff::Timestamp> {
    let secs = value?.as_f64()?;
    if !secs.is_finite() {
        return None;
    }
    jiff::Timestamp::from_second(secs as i64).ok()
}

/// Caps what an attacker-controlled name can put in a reason.
pub(crate) fn short(s: &str) -> String {
    s.chars().take(64).collect()
}

pub(crate) fn shape(sender: &'static str, why: impl Into<String>) -> ParseError {
    ParseError::Shape {
        sender,
        why: why.into(),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub const D: &str = "sha256:6ec128e26cd5e5b3d5ad4ad0b3b1e0b5c5a4a2a8e1f3f6f9d0a7b4c1e2d3f4a5";

    /// What one event asks: `Ok((image, digest))` or the ignore label.
    pub fn outcome(event: &Event) -> Result<(String, String), &'static str> {
        match event {
            Event::Ready(d) => {
                assert_eq!(d.form, Form::Webhook);
                match &d.action {
                    Action::Restart { image, digest } => Ok((image.tagged(), digest.clone())),
                    Action::Ignore(r) => Err(r.label()),
                }
            }
            Event::Unresolved(u) => Ok((u.image.tagged(), "?".into())),
        }
    }

    pub fn outcomes(events: &[Event]) -> Vec<Result<(String, String), &'static str>> {
        events.iter().map(outcome).collect()
    }

    pub fn ok(image: &str, digest: &str) -> Result<(String, String), &'static str> {
        Ok((image.to_owned(), digest.to_owned()))
    }
}
