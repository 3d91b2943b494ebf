//! Amazon ECR's "ECR Image Action" event, as an EventBridge API
//! destination posts it: the event itself, `detail` holding `action-type`
//! (`PUSH`, `DELETE`), `result` (`SUCCESS`, `FAILURE`), `repository-name`,
//! `image-tag` and `image-digest`. The image is
//! `<account>.dkr.ecr.<region>.amazonaws.com/<repository-name>:<image-tag>`.

use serde_json::Value;

use super::{Event, ParseError, delivery, restart, rfc3339, shape, short, str_at};
use crate::push::{Action, IgnoreReason, Origin};

const ORIGIN: Origin = Origin::Ecr;

pub fn parse(json: &Value) -> Result<Vec<Event>, ParseError> {
    if !json.is_object() {
        return Err(shape("ecr", "expected a JSON object"));
    }
    let Some(detail_type) = str_at(json, "/detail-type") else {
        return Err(shape("ecr", "no `detail-type` (not an EventBridge event)"));
    };
    let id = str_at(json, "/id").map(short);
    let published = rfc3339(str_at(json, "/time"));
    let action_name = str_at(json, "/detail/action-type").map(short);
    let act = if detail_type != "ECR Image Action" {
        Action::Ignore(IgnoreReason::NotAPush(short(detail_type)))
    } else {
        image_action(json)?
    };
    Ok(vec![delivery(ORIGIN, id, action_name, published, act)])
}

fn image_action(json: &Value) -> Result<Action, ParseError> {
    let Some(detail) = json.get("detail").filter(|d| d.is_object()) else {
        return Err(shape("ecr", "an ECR Image Action without `detail`"));
    };
    match str_at(detail, "/action-type") {
        Some("PUSH") => {}
        Some("DELETE") => return Ok(Action::Ignore(IgnoreReason::Delete)),
        Some(other) => return Ok(Action::Ignore(IgnoreReason::NotAPush(short(other)))),
        None => return Err(shape("ecr", "no `detail.action-type`")),
    }
    if str_at(detail, "/result") != Some("SUCCESS") {
        return Ok(Action::Ignore(IgnoreReason::Failed));
    }
    let Some(tag) = str_at(detail, "/image-tag").filter(|t| !t.is_empty()) else {
        return Ok(Action::Ignore(IgnoreReason::UntaggedDigest));
    };
    let (Some(account), Some(region), Some(repository)) = (
        str_at(json, "/account"),
        str_at(json, "/region"),
        str_at(detail, "/repository-name"),
    ) else {
        return Err(shape(
            "ecr",
            "no `account`, `region` or `detail.repository-name`",
        ));
    };
    Ok(restart(
        &format!("{account}.dkr.ecr.{region}.amazonaws.com/{repository}:{tag}"),
        str_at(detail, "/image-digest"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::testing::*;
    use serde_json::json;

    /// AWS's sample "Event for a completed image push" (docs/webhooks.md).
    fn push() -> Value {
        json!({
            "version": "0", "id": "13cde686-328b-6117-af20-0e5566167482",
            "detail-type": "ECR Image Action", "source": "aws.ecr",
            "account": "123456789012", "time": "2019-11-16T01:54:34Z",
            "region": "us-west-2", "resources": [],
            "detail": {"result": "SUCCESS", "repository-name": "my-repository-name",
                       "image-digest": D, "action-type": "PUSH", "image-tag": "latest"}
        })
    }

    #[test]
    fn reads_a_push_and_ignores_the_rest() {
        let with = |f: &dyn Fn(&mut Value)| {
            let mut v = push();
            f(&mut v);
            v
        };
        let cases = vec![
            (
                push(),
                ok(
                    "123456789012.dkr.ecr.us-west-2.amazonaws.com/my-repository-name:latest",
                    D,
                ),
            ),
            (
                with(&|v| v["detail"]["result"] = json!("FAILURE")),
                Err("failed"),
            ),
            (
                with(&|v| v["detail"]["action-type"] = json!("DELETE")),
                Err("delete"),
            ),
            (
                with(&|v| v["detail"]["image-tag"] = json!(null)),
                Err("untagged-digest"),
            ),
            (
                with(&|v| v["detail-type"] = json!("ECR Image Scan")),
                Err("not-a-push"),
            ),
            (
                with(&|v| v["detail"]["image-digest"] = json!("nope")),
                Err("invalid-digest"),
            ),
        ];
        for (body, want) in cases {
            let events = parse(&body).unwrap();
            assert_eq!(outcomes(&events), vec![want], "{body}");
        }
        let Event::Ready(d) = &parse(&push()).unwrap()[0] else {
            panic!()
        };
        assert_eq!(
            d.message_id.as_deref(),
            Some("13cde686-328b-6117-af20-0e5566167482")
        );
        assert_eq!(d.published, Some("2019-11-16T01:54:34Z".parse().unwrap()));
    }

    #[test]
    fn malformed_payloads_are_errors() {
        let mut no_account = push();
        no_account["account"] = json!(1);
        for body in [
            json!([]),
            json!({}),
            json!({"detail-type": "ECR Image Action"}),
            json!({"detail-type": "ECR Image Action", "detail": {}}),
            no_account,
        ] {
            assert!(parse(&body).is_err(), "{body}");
        }
    }
}
