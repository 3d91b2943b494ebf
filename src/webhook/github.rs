//! GitHub's `package` and `registry_package` webhook events for container
//! packages on ghcr.io. The package sits under the event's own key
//! (`package` or `registry_package`); its image is
//! `ghcr.io/<owner.login>/<name>:<tag>` (owner and name lowercased, as
//! ghcr.io names are) with the tag and digest from
//! `package_version.container_metadata.tag`. `ping` (sent when the hook is
//! created) and other events are answered 200, ignored.

use serde_json::Value;

use super::{Event, ParseError, Request, delivery, restart, shape, short, str_at};
use crate::push::{Action, IgnoreReason, Origin};

const ORIGIN: Origin = Origin::Github;

pub fn parse(request: Request<'_>, json: &Value) -> Result<Vec<Event>, ParseError> {
    if !json.is_object() {
        return Err(shape("github", "expected a JSON object"));
    }
    let event = request.github_event.map(str::to_owned).or_else(|| {
        // Without the header, the payload's own key tells.
        ["registry_package", "package"]
            .into_iter()
            .find(|k| json.get(k).is_some())
            .map(str::to_owned)
            .or_else(|| json.get("zen").map(|_| "ping".to_owned()))
    });
    let id = request.github_delivery.map(short);
    let action_name = str_at(json, "/action").map(short);
    let act = match event.as_deref() {
        Some("ping") => Action::Ignore(IgnoreReason::Ping),
        Some(key @ ("package" | "registry_package")) => package(json, key, action_name.as_deref())?,
        Some(other) => Action::Ignore(IgnoreReason::NotAPush(short(other))),
        None => Action::Ignore(IgnoreReason::NotAPush("unknown".into())),
    };
    Ok(vec![delivery(ORIGIN, id, action_name, None, act)])
}

fn package(json: &Value, key: &str, action: Option<&str>) -> Result<Action, ParseError> {
    let Some(p) = json.get(key).filter(|p| p.is_object()) else {
        return Err(shape("github", format!("a {key} event without `{key}`")));
    };
    match action {
        Some("published" | "updated") => {}
        Some(other) => return Ok(Action::Ignore(IgnoreReason::NotAPush(short(other)))),
        None => return Err(shape("github", "no `action`")),
    }
    let kind = str_at(p, "/package_type")
        .or_else(|| str_at(p, "/ecosystem"))
        .unwrap_or_default();
    if !matches!(kind.to_ascii_lowercase().as_str(), "container" | "docker") {
        return Ok(Action::Ignore(IgnoreReason::NotAContainer));
    }
    let (Some(owner), Some(name)) = (str_at(p, "/owner/login"), str_at(p, "/name")) else {
        return Err(shape(
            "github",
            "a package without `owner.login` and `name`",
        ));
    };
    let tag = str_at(p, "/package_version/container_metadata/tag/name").filter(|t| !t.is_empty());
    let Some(tag) = tag else {
        return Ok(Action::Ignore(IgnoreReason::UntaggedDigest));
    };
    let repository = format!("ghcr.io/{owner}/{name}").to_lowercase();
    Ok(restart(
        &format!("{repository}:{tag}"),
        str_at(p, "/package_version/container_metadata/tag/digest"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::testing::*;
    use serde_json::json;

    /// The shape of GitHub's `registry_package` example (docs/webhooks.md),
    /// trimmed to what matters and what often trips readers.
    fn package(tag: &str, package_type: &str) -> Value {
        json!({
            "id": 2086047, "name": "Hello-World", "namespace": "Octo-Org",
            "description": "", "ecosystem": "CONTAINER", "package_type": package_type,
            "html_url": "https://github.com/orgs/Octo-Org/packages/container/package/hello-world",
            "created_at": "2023-03-15T18:34:54Z", "updated_at": "2023-03-15T18:34:54Z",
            "owner": {"login": "Octo-Org", "id": 1, "type": "Organization"},
            "package_version": {
                "id": 70425423, "version": D, "name": D, "description": "",
                "summary": "", "manifest": "", "html_url": "https://github.com/x",
                "target_commitish": "", "target_oid": "", "created_at": "0001-01-01T00:00:00Z",
                "updated_at": "0001-01-01T00:00:00Z",
                "metadata": [],
                "container_metadata": {
                    "tag": {"name": tag, "digest": D},
                    "labels": {"description": "", "source": "", "revision": "", "image_url": "",
                               "licenses": "", "all_labels": {}},
                    "manifest": {"digest": D, "media_type": "application/vnd.oci.image.manifest.v1+json",
                                 "uri": "", "size": 1, "config": {}, "layers": []}
                },
                "package_files": [], "installation_command": "", "package_url": "ghcr.io/octo-org/hello-world:v1"
            },
            "registry": {"about_url": "https://docs.github.com/packages", "name": "GitHub ghcr",
                         "type": "docker", "url": "https://ghcr.io/octo-org", "vendor": "GitHub Inc"}
        })
    }

    fn event(key: &str, action: &str, p: Value) -> Value {
        json!({"action": action, key: p,
               "repository": {"full_name": "octo-org/hello-world"},
               "organization": {"login": "octo-org"}, "sender": {"login": "octocat"}})
    }

    fn req(event: &str) -> Request<'_> {
        Request {
            github_event: Some(event),
            github_delivery: Some("72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        }
    }

    #[test]
    fn reads_both_events() {
        let want = ok("ghcr.io/octo-org/hello-world:V1.2", D);
        for key in ["package", "registry_package"] {
            for action in ["published", "updated"] {
                let body = event(key, action, package("V1.2", "CONTAINER"));
                let events = parse(req(key), &body).unwrap();
                assert_eq!(outcomes(&events), vec![want.clone()], "{key} {action}");
                let Event::Ready(d) = &events[0] else {
                    panic!()
                };
                assert_eq!(
                    d.message_id.as_deref(),
                    Some("72d3162e-cc78-11e3-81ab-4c9367dc0958")
                );
                // Without the header the payload's key says which event.
                let events = parse(Request::default(), &body).unwrap();
                assert_eq!(outcomes(&events), vec![want.clone()], "{key} {action}");
            }
        }
    }

    #[test]
    fn ignores_what_is_not_a_tagged_container_push() {
        let cases = [
            (
                req("ping"),
                json!({"zen": "Design for failure.", "hook_id": 1, "hook": {}}),
                "ping",
            ),
            (
                Request::default(),
                json!({"zen": "x", "hook_id": 1}),
                "ping",
            ),
            (req("push"), json!({"ref": "refs/heads/main"}), "not-a-push"),
            (
                req("package"),
                event("package", "published", package("", "container")),
                "untagged-digest",
            ),
            (
                req("package"),
                event("package", "published", package("v1", "npm")),
                "not-a-container",
            ),
            (
                req("registry_package"),
                event("registry_package", "deleted", package("v1", "container")),
                "not-a-push",
            ),
            (
                Request::default(),
                json!({"something": "else"}),
                "not-a-push",
            ),
        ];
        for (request, body, want) in cases {
            assert_eq!(
                outcomes(&parse(request, &body).unwrap()),
                vec![Err(want)],
                "{body}"
            );
        }
    }

    #[test]
    fn malformed_payloads_are_errors() {
        let mut no_owner = package("v1", "container");
        no_owner["owner"] = json!(null);
        for (request, body) in [
            (req("package"), json!([])),
            (req("package"), json!({"action": "published"})),
            (req("package"), json!({"action": "published", "package": 5})),
            (req("package"), event("package", "published", no_owner)),
            (req("registry_package"), json!({"registry_package": {}})),
        ] {
            assert!(parse(request, &body).is_err(), "{body}");
        }
    }
}
