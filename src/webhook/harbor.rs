//! Harbor's webhook, default payload format: `type: PUSH_ARTIFACT` with
//! one push per `event_data.resources[]` (`resource_url` is `R:T`,
//! `digest` its digest), `occur_at` in seconds. Harbor's CloudEvents format
//! (`specversion`, `type: harbor.artifact.pushed`, the same fields under
//! `data`) is read too.

use serde_json::Value;

use super::{Event, ParseError, delivery, ignored, restart, shape, short, str_at, unix};
use crate::push::{Action, IgnoreReason, Origin};

const ORIGIN: Origin = Origin::Harbor;

pub fn parse(json: &Value) -> Result<Vec<Event>, ParseError> {
    if !json.is_object() {
        return Err(shape("harbor", "expected a JSON object"));
    }
    let Some(kind) = str_at(json, "/type") else {
        return Err(shape("harbor", "no `type`"));
    };
    let cloud_events = json.get("specversion").is_some();
    let (data, published, id) = if cloud_events {
        (
            json.get("data"),
            super::rfc3339(str_at(json, "/time")),
            str_at(json, "/id").map(short),
        )
    } else {
        (json.get("event_data"), unix(json.get("occur_at")), None)
    };
    let action_name = Some(short(kind));
    let reason = match kind {
        "PUSH_ARTIFACT" | "harbor.artifact.pushed" => None,
        "PULL_ARTIFACT" | "harbor.artifact.pulled" => Some(IgnoreReason::Pull),
        "DELETE_ARTIFACT" | "harbor.artifact.deleted" => Some(IgnoreReason::Delete),
        other => Some(IgnoreReason::NotAPush(short(other))),
    };
    if let Some(reason) = reason {
        return Ok(vec![ignored(ORIGIN, action_name, reason)]);
    }
    let resources = match data.and_then(|d| d.get("resources")) {
        Some(Value::Array(r)) => r,
        _ => return Err(shape("harbor", "a push without `event_data.resources`")),
    };
    if resources.is_empty() {
        return Ok(vec![ignored(ORIGIN, action_name, IgnoreReason::NoEvents)]);
    }
    if resources.len() > super::MAX_EVENTS {
        return Err(ParseError::TooMany);
    }
    resources
        .iter()
        .map(|r| {
            if !r.is_object() {
                return Err(shape("harbor", "a resource is not an object"));
            }
            let act = match str_at(r, "/resource_url") {
                // Pushed by digest: `R@sha256:…`, no tag to follow.
                Some(url) if url.contains('@') => Action::Ignore(IgnoreReason::UntaggedDigest),
                Some(url) if !url.is_empty() => restart(url, str_at(r, "/digest")),
                _ => Action::Ignore(IgnoreReason::UntaggedDigest),
            };
            Ok(delivery(
                ORIGIN,
                id.clone(),
                action_name.clone(),
                published,
                act,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::testing::*;
    use serde_json::json;

    /// Harbor's documented default payload (docs/webhooks.md).
    fn push(resources: Value) -> Value {
        json!({
            "type": "PUSH_ARTIFACT",
            "occur_at": 1586922308,
            "operator": "admin",
            "event_data": {
                "resources": resources,
                "repository": {"date_created": 1586922308, "name": "debian",
                               "namespace": "test-webhook",
                               "repo_full_name": "test-webhook/debian", "repo_type": "private"}
            }
        })
    }

    fn resource(url: &str) -> Value {
        json!({"digest": D, "tag": "latest", "resource_url": url})
    }

    #[test]
    fn each_resource_is_a_push() {
        let body = push(json!([
            resource("hub.harbor.com/test-webhook/debian:latest"),
            resource("hub.harbor.com/test-webhook/debian:v1"),
            resource(&format!("hub.harbor.com/test-webhook/debian@{D}")),
            {"digest": "md5:x", "resource_url": "hub.harbor.com/a/b:c"},
        ]));
        let events = parse(&body).unwrap();
        assert_eq!(
            outcomes(&events),
            vec![
                ok("hub.harbor.com/test-webhook/debian:latest", D),
                ok("hub.harbor.com/test-webhook/debian:v1", D),
                Err("untagged-digest"),
                Err("invalid-digest"),
            ]
        );
        let Event::Ready(d) = &events[0] else {
            panic!()
        };
        assert_eq!(
            d.published,
            Some(jiff::Timestamp::from_second(1586922308).unwrap())
        );
    }

    #[test]
    fn what_is_not_a_push_is_ignored() {
        for (kind, want) in [
            ("PULL_ARTIFACT", "pull"),
            ("DELETE_ARTIFACT", "delete"),
            ("SCANNING_COMPLETED", "not-a-push"),
            ("QUOTA_EXCEED", "not-a-push"),
        ] {
            let mut body = push(json!([resource("h/a/b:c")]));
            body["type"] = json!(kind);
            assert_eq!(outcomes(&parse(&body).unwrap()), vec![Err(want)], "{kind}");
        }
        assert_eq!(
            outcomes(&parse(&push(json!([]))).unwrap()),
            vec![Err("no-events")]
        );
    }

    #[test]
    fn the_cloudevents_format_is_read() {
        let body = json!({
            "specversion": "1.0", "id": "4b2f89a6-548d-4c12-9993-a1f5790b97d2",
            "requestid": "7a7c7a4b", "source": "/projects/1/webhook/policies/3",
            "type": "harbor.artifact.pushed", "datacontenttype": "application/json",
            "time": "2023-03-06T06:08:43Z",
            "data": {"resources": [resource("harbor.example.com/library/nginx:latest")],
                     "repository": {"name": "nginx", "namespace": "library"}},
            "operator": "harbor-jobservice"
        });
        let events = parse(&body).unwrap();
        assert_eq!(
            outcomes(&events),
            vec![ok("harbor.example.com/library/nginx:latest", D)]
        );
    }

    #[test]
    fn malformed_payloads_are_errors() {
        for body in [
            json!([]),
            json!({}),
            json!({"type": 1}),
            json!({"type": "PUSH_ARTIFACT"}),
            json!({"type": "PUSH_ARTIFACT", "event_data": {"resources": {}}}),
            json!({"type": "PUSH_ARTIFACT", "event_data": {"resources": [7]}}),
        ] {
            assert!(parse(&body).is_err(), "{body}");
        }
    }
}
