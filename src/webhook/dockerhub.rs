//! Docker Hub's repository webhook: `repository.repo_name` and
//! `push_data.tag` name `docker.io/<repo_name>:<tag>`, `push_data.pushed_at`
//! is in seconds. Docker Hub sends no digest: it is resolved afterwards.
//! It documents pushes only; a payload without `push_data`, or whose
//! `action` (if any) is not a push (a delete), is ignored.

use serde_json::Value;

use super::{Event, ParseError, Unresolved, ignored, shape, short, str_at, tagged, unix};
use crate::push::{IgnoreReason, Origin};

const ORIGIN: Origin = Origin::Dockerhub;

pub fn parse(json: &Value) -> Result<Vec<Event>, ParseError> {
    if !json.is_object() {
        return Err(shape("dockerhub", "expected a JSON object"));
    }
    if let Some(action) = json.get("action").and_then(Value::as_str)
        && action != "push"
    {
        let reason = if action.contains("delete") {
            IgnoreReason::Delete
        } else {
            IgnoreReason::NotAPush(short(action))
        };
        return Ok(vec![ignored(ORIGIN, Some(short(action)), reason)]);
    }
    let Some(push) = json.get("push_data").filter(|p| p.is_object()) else {
        return Ok(vec![ignored(
            ORIGIN,
            None,
            IgnoreReason::NotAPush("no push_data".into()),
        )]);
    };
    let Some(repo) = str_at(json, "/repository/repo_name").filter(|r| !r.is_empty()) else {
        return Err(shape("dockerhub", "no `repository.repo_name`"));
    };
    let Some(tag) = str_at(push, "/tag").filter(|t| !t.is_empty()) else {
        return Ok(vec![ignored(
            ORIGIN,
            Some("push".into()),
            IgnoreReason::UntaggedDigest,
        )]);
    };
    Ok(vec![match tagged(&format!("docker.io/{repo}:{tag}")) {
        Ok(image) => Event::Unresolved(Unresolved {
            origin: ORIGIN,
            message_id: None,
            published: unix(push.get("pushed_at")),
            image,
        }),
        Err(reason) => ignored(ORIGIN, Some("push".into()), reason),
    }])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::testing::*;
    use serde_json::json;

    /// Docker Hub's documented example payload (docs/webhooks.md).
    fn push(repo: &str, tag: &str) -> Value {
        json!({
            "callback_url": "https://registry.hub.docker.com/u/svendowideit/testhook/hook/2141b5bi5i5b02bec211i4eeih0242eg11000a/",
            "push_data": {"pushed_at": 1417566161, "pusher": "trustedbuilder", "tag": tag},
            "repository": {
                "comment_count": 0, "date_created": 1417494799, "description": "",
                "dockerfile": "FROM ubuntu\n", "full_description": "Docker Hub based automated build",
                "is_official": false, "is_private": true, "is_trusted": true,
                "name": "testhook", "namespace": "svendowideit", "owner": "svendowideit",
                "repo_name": repo, "repo_url": "https://registry.hub.docker.com/u/svendowideit/testhook/",
                "star_count": 0, "status": "Active"
            }
        })
    }

    #[test]
    fn a_push_names_a_tag_to_resolve() {
        let events = parse(&push("svendowideit/testhook", "latest")).unwrap();
        assert_eq!(
            outcomes(&events),
            vec![ok("docker.io/svendowideit/testhook:latest", "?")]
        );
        let Event::Unresolved(u) = &events[0] else {
            panic!()
        };
        assert_eq!(
            u.published,
            Some(jiff::Timestamp::from_second(1417566161).unwrap())
        );
        // An official image's repo_name is `library/…`, as docker.io/… normalizes.
        let events = parse(&push("library/nginx", "1.27")).unwrap();
        assert_eq!(
            outcomes(&events),
            vec![ok("docker.io/library/nginx:1.27", "?")]
        );
    }

    #[test]
    fn ignores_what_is_not_a_tagged_push() {
        let mut delete = push("a/b", "v1");
        delete["action"] = json!("tag_delete");
        let mut no_push = push("a/b", "v1");
        no_push.as_object_mut().unwrap().remove("push_data");
        for (body, want) in [
            (delete, "delete"),
            (no_push, "not-a-push"),
            (push("a/b", ""), "untagged-digest"),
            (push("UPPER/b", "v1"), "invalid-tag"),
        ] {
            assert_eq!(outcomes(&parse(&body).unwrap()), vec![Err(want)], "{body}");
        }
    }

    #[test]
    fn malformed_payloads_are_errors() {
        for body in [json!([]), json!(1), json!({"push_data": {"tag": "x"}})] {
            assert!(parse(&body).is_err(), "{body}");
        }
    }
}
