//! CNCF distribution (registry:2) notifications, `{"events": [...]}`, and
//! Azure Container Registry's webhook, which posts one such event alone.
//!
//! A push of `R:T` is the manifest's event: `action: push` with
//! `target.tag`; its image is `request.host/target.repository:target.tag`
//! and its digest `target.digest`. Blob events (no tag, a layer or
//! `application/octet-stream` media type) must be answered 200: the
//! registry holds its whole queue for an endpoint until it gets a 2xx.

use serde_json::Value;

use super::{Event, ParseError, delivery, ignored, restart, rfc3339, shape, short, str_at};
use crate::push::{Action, IgnoreReason, Origin};

const ORIGIN: Origin = Origin::Distribution;

pub fn parse(json: &Value) -> Result<Vec<Event>, ParseError> {
    let Value::Object(obj) = json else {
        return Err(shape("distribution", "expected a JSON object"));
    };
    match obj.get("events") {
        Some(Value::Array(events)) => {
            if events.is_empty() {
                return Ok(vec![ignored(ORIGIN, None, IgnoreReason::NoEvents)]);
            }
            if events.len() > super::MAX_EVENTS {
                return Err(ParseError::TooMany);
            }
            events.iter().map(event).collect()
        }
        Some(_) => Err(shape("distribution", "`events` is not a list")),
        // Azure Container Registry: one event, no envelope.
        None if obj.contains_key("action") => Ok(vec![event(json)?]),
        None => Err(shape(
            "distribution",
            "expected `events` or an event's `action`",
        )),
    }
}

fn event(e: &Value) -> Result<Event, ParseError> {
    if !e.is_object() {
        return Err(shape("distribution", "an event is not an object"));
    }
    let Some(action) = str_at(e, "/action") else {
        return Err(shape("distribution", "an event has no `action`"));
    };
    let message_id = str_at(e, "/id").map(short);
    let published = rfc3339(str_at(e, "/timestamp"));
    let action_name = Some(short(action));
    let act = match action {
        "push" => push(e),
        "pull" => Action::Ignore(IgnoreReason::Pull),
        "mount" => Action::Ignore(IgnoreReason::Mount),
        "delete" => Action::Ignore(IgnoreReason::Delete),
        other => Action::Ignore(IgnoreReason::NotAPush(short(other))),
    };
    Ok(delivery(ORIGIN, message_id, action_name, published, act))
}

fn push(e: &Value) -> Action {
    let tag = str_at(e, "/target/tag").filter(|t| !t.is_empty());
    let media_type = str_at(e, "/target/mediaType").unwrap_or_default();
    let Some(tag) = tag else {
        return Action::Ignore(if is_blob(media_type) {
            IgnoreReason::Blob
        } else {
            IgnoreReason::UntaggedDigest
        });
    };
    let Some(repository) = str_at(e, "/target/repository").filter(|r| !r.is_empty()) else {
        return Action::Ignore(IgnoreReason::InvalidTag("no target.repository".into()));
    };
    let Some(host) = str_at(e, "/request/host").filter(|h| !h.is_empty()) else {
        return Action::Ignore(IgnoreReason::MissingHost);
    };
    restart(
        &format!("{host}/{repository}:{tag}"),
        str_at(e, "/target/digest"),
    )
}

/// Blobs: what is not a manifest or an index.
fn is_blob(media_type: &str) -> bool {
    !(media_type.contains("manifest") || media_type.contains("image.index"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::testing::*;
    use serde_json::json;

    /// distribution's own example event (docs/webhooks.md), with our digest.
    fn manifest_push(host: &str, repo: &str, tag: &str) -> Value {
        json!({
            "id": "320678d8-ca14-430f-8bb6-4ca139cd83f7",
            "timestamp": "2016-03-09T14:44:26.402973972-08:00",
            "action": "push",
            "target": {
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "size": 708, "digest": D, "length": 708,
                "repository": repo,
                "url": format!("http://{host}/v2/{repo}/manifests/{D}"),
                "tag": tag
            },
            "request": {"id": "6df24a34-0959-4923-81ca-14f09767db19", "addr": "192.168.64.11:42961",
                        "host": host, "method": "PUT", "useragent": "curl/7.38.0"},
            "actor": {},
            "source": {"addr": "xtal.local:5000", "instanceID": "a53db899-3b4b-4a62-a067-8dd013beaca4"}
        })
    }

    fn blob_push() -> Value {
        json!({
            "id": "1", "timestamp": "2026-12-01T10:00:00Z", "action": "push",
            "target": {"mediaType": "application/octet-stream", "size": 10, "digest": D,
                       "length": 10, "repository": "apps/web",
                       "url": format!("http://127.0.0.1:5000/v2/apps/web/blobs/{D}")},
            "request": {"host": "127.0.0.1:5000", "method": "PUT"}
        })
    }

    #[test]
    fn reads_each_event() {
        let mut pull = manifest_push("reg.example.com", "apps/web", "v1");
        pull["action"] = json!("pull");
        let mut mount = blob_push();
        mount["action"] = json!("mount");
        let mut delete = manifest_push("reg.example.com", "apps/web", "v1");
        delete["action"] = json!("delete");
        let mut untagged = manifest_push("reg.example.com", "apps/web", "v1");
        untagged["target"]["tag"] = json!("");
        let mut no_host = manifest_push("reg.example.com", "apps/web", "v1");
        no_host["request"] = json!({});
        let mut bad_digest = manifest_push("reg.example.com", "apps/web", "v1");
        bad_digest["target"]["digest"] = json!("sha256:short");
        let mut oci_index = manifest_push("reg.example.com", "apps/web", "v2");
        oci_index["target"]["mediaType"] = json!("application/vnd.oci.image.index.v1+json");
        let cases = vec![
            (
                manifest_push("127.0.0.1:5000", "apps/web", "stable"),
                ok("127.0.0.1:5000/apps/web:stable", D),
            ),
            (
                manifest_push("Reg.Example.com", "apps/web", "v1"),
                ok("reg.example.com/apps/web:v1", D),
            ),
            (oci_index, ok("reg.example.com/apps/web:v2", D)),
            (blob_push(), Err("blob")),
            (pull, Err("pull")),
            (mount, Err("mount")),
            (delete, Err("delete")),
            (untagged, Err("untagged-digest")),
            (no_host, Err("missing-host")),
            (bad_digest, Err("invalid-digest")),
        ];
        for (event, want) in cases {
            let events = parse(&json!({"events": [event.clone()]})).unwrap();
            assert_eq!(outcomes(&events), vec![want.clone()], "{event}");
            // Azure Container Registry posts the event alone.
            let events = parse(&event).unwrap();
            assert_eq!(outcomes(&events), vec![want], "{event}");
        }
    }

    #[test]
    fn a_batch_is_every_event_in_order_with_its_id_and_time() {
        let body = json!({"events": [blob_push(), manifest_push("h:1", "a/b", "t")]});
        let events = parse(&body).unwrap();
        assert_eq!(outcomes(&events), vec![Err("blob"), ok("h:1/a/b:t", D)]);
        let Event::Ready(d) = &events[1] else {
            panic!()
        };
        assert_eq!(
            d.message_id.as_deref(),
            Some("320678d8-ca14-430f-8bb6-4ca139cd83f7")
        );
        assert_eq!(
            d.published,
            Some("2016-03-09T22:44:26.402973972Z".parse().unwrap())
        );
    }

    #[test]
    fn malformed_payloads_are_errors() {
        for body in [
            json!([]),
            json!("x"),
            json!({}),
            json!({"events": {}}),
            json!({"events": [1]}),
            json!({"events": [{"target": {}}]}),
            json!({"events": [{"action": 5}]}),
        ] {
            assert!(parse(&body).is_err(), "{body}");
        }
        assert_eq!(
            outcomes(&parse(&json!({"events": []})).unwrap()),
            vec![Err("no-events")]
        );
    }
}
