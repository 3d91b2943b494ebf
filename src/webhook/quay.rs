//! Quay's "Repository Push" notification: `docker_url` (`quay.io/ns/repo`)
//! and `updated_tags`, a list of tags (an older form maps each tag to an
//! image id, which is not a manifest digest). One push per tag, each
//! digest resolved afterwards. Quay's other notifications (builds,
//! vulnerabilities, mirroring, expiry) carry no `updated_tags` and are
//! ignored.

use serde_json::Value;

use super::{Event, ParseError, Unresolved, ignored, shape, str_at, tagged};
use crate::push::{IgnoreReason, Origin};

const ORIGIN: Origin = Origin::Quay;

pub fn parse(json: &Value) -> Result<Vec<Event>, ParseError> {
    if !json.is_object() {
        return Err(shape("quay", "expected a JSON object"));
    }
    let tags: Vec<&str> = match json.get("updated_tags") {
        None => {
            let why = if json.get("build_id").is_some() {
                "a build notification"
            } else {
                "a notification other than a repository push"
            };
            return Ok(vec![ignored(
                ORIGIN,
                None,
                IgnoreReason::NotAPush(why.into()),
            )]);
        }
        Some(Value::Array(tags)) => tags
            .iter()
            .map(|t| {
                t.as_str()
                    .ok_or_else(|| shape("quay", "a tag is not a string"))
            })
            .collect::<Result<_, _>>()?,
        Some(Value::Object(tags)) => tags.keys().map(String::as_str).collect(),
        Some(_) => return Err(shape("quay", "`updated_tags` is neither a list nor a map")),
    };
    let Some(url) = str_at(json, "/docker_url").filter(|u| !u.is_empty()) else {
        return Err(shape("quay", "no `docker_url`"));
    };
    if tags.is_empty() {
        return Ok(vec![ignored(
            ORIGIN,
            Some("push".into()),
            IgnoreReason::NoEvents,
        )]);
    }
    if tags.len() > super::MAX_EVENTS {
        return Err(ParseError::TooMany);
    }
    Ok(tags
        .into_iter()
        .map(|tag| match tagged(&format!("{url}:{tag}")) {
            Ok(image) => Event::Unresolved(Unresolved {
                origin: ORIGIN,
                message_id: None,
                published: None,
                image,
            }),
            Err(reason) => ignored(ORIGIN, Some("push".into()), reason),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::testing::*;
    use serde_json::json;

    /// Quay's documented Repository Push payload (docs/webhooks.md).
    fn push(tags: Value) -> Value {
        json!({
            "name": "repository", "repository": "mynamespace/repository",
            "namespace": "mynamespace", "docker_url": "quay.io/mynamespace/repository",
            "homepage": "https://quay.io/repository/mynamespace/repository",
            "updated_tags": tags
        })
    }

    #[test]
    fn each_updated_tag_is_a_push_to_resolve() {
        let events = parse(&push(json!(["latest", "v1", "bad tag"]))).unwrap();
        assert_eq!(
            outcomes(&events),
            vec![
                ok("quay.io/mynamespace/repository:latest", "?"),
                ok("quay.io/mynamespace/repository:v1", "?"),
                Err("invalid-tag"),
            ]
        );
        // The older form: tag -> image id.
        let events = parse(&push(
            json!({"latest": "b750fe79269d2ec9a3c593ef05b4332b1d1a02a62b4accb2c21d589ff2f5f2dc"}),
        ))
        .unwrap();
        assert_eq!(
            outcomes(&events),
            vec![ok("quay.io/mynamespace/repository:latest", "?")]
        );
    }

    #[test]
    fn other_notifications_are_ignored() {
        let build = json!({"repository": "a/b", "docker_url": "quay.io/a/b", "build_id": "x",
                           "docker_tags": ["latest"]});
        let expiry = json!({"repository": "a/b", "docker_url": "quay.io/a/b", "tags": ["old"],
                            "expiring_in": "1 days"});
        for (body, want) in [
            (build, "not-a-push"),
            (expiry, "not-a-push"),
            (push(json!([])), "no-events"),
        ] {
            assert_eq!(outcomes(&parse(&body).unwrap()), vec![Err(want)], "{body}");
        }
    }

    #[test]
    fn malformed_payloads_are_errors() {
        for body in [
            json!([]),
            json!({"updated_tags": ["a"]}),
            json!({"updated_tags": "a", "docker_url": "quay.io/a/b"}),
            json!({"updated_tags": [1], "docker_url": "quay.io/a/b"}),
        ] {
            assert!(parse(&body).is_err(), "{body}");
        }
    }
}
