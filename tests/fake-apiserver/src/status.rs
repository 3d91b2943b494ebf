//! `metav1.Status` error objects, shaped like the ones kube-apiserver sends.
//!
//! Clients (kube-rs' `ErrorResponse`, client-go's `StatusError`) decode the
//! body, so `reason`, `code` and `details` must match what the real server
//! writes for the same failure.

use serde_json::{Value, json};

use crate::resources::ResourceInfo;

/// An API error: an HTTP status plus the `Status` body that goes with it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
    /// Sent as a `Retry-After` header (and `details.retryAfterSeconds`).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// `deployments.apps "x" not found` — details.kind is the *resource*, as
    /// the real server's `NewNotFound(qualifiedResource, name)` writes it.
    pub fn not_found(res: &ResourceInfo, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", res.qualified()),
        )
        .with_details(details(name, res.group, res.resource))
    }

    pub fn already_exists(res: &ResourceInfo, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", res.qualified()),
        )
        .with_details(details(name, res.group, res.resource))
    }

    /// The optimistic-concurrency failure (stale resourceVersion).
    pub fn conflict(res: &ResourceInfo, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                res.qualified()
            ),
        )
        .with_details(details(name, res.group, res.resource))
    }

    pub fn conflict_msg(res: &ResourceInfo, name: &str, msg: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {msg}",
                res.qualified()
            ),
        )
        .with_details(details(name, res.group, res.resource))
    }

    /// 422: `Deployment.apps "x" is invalid: field: reason`. Invalid uses the
    /// *kind* (not the resource) in message and details, like `NewInvalid`.
    pub fn invalid(res: &ResourceInfo, name: &str, causes: Vec<(String, String)>) -> Self {
        let qualified_kind = if res.group.is_empty() {
            res.kind.to_string()
        } else {
            format!("{}.{}", res.kind, res.group)
        };
        let summary: Vec<String> = causes.iter().map(|(f, m)| format!("{f}: {m}")).collect();
        let summary = if summary.len() == 1 {
            summary[0].clone()
        } else {
            format!("[{}]", summary.join(", "))
        };
        let mut d = details(name, res.group, res.kind);
        d["causes"] = causes
            .iter()
            .map(|(f, m)| json!({"reason": cause_reason(m), "message": m, "field": f}))
            .collect();
        Self::new(
            422,
            "Invalid",
            format!("{qualified_kind} \"{name}\" is invalid: {summary}"),
        )
        .with_details(d)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {message}"),
        )
        .with_details(json!({"causes": [{"message": message.to_string()}]}))
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
        .with_details(json!({}))
    }

    /// The real server's 404 for a path no API serves: reason NotFound and a
    /// generic message, no details.
    pub fn unknown_path() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }

    pub fn unsupported_media_type(_content_type: &str, accepted: &[&str]) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {}",
                accepted.join(", ")
            ),
        )
        .with_details(json!({}))
    }

    /// A watch from a resourceVersion older than the kept history.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// A `Status` for an arbitrary HTTP code, as a fault rule asks. The
    /// message and reason follow `NewGenericServerResponse` / the specific
    /// constructors of apimachinery.
    pub fn for_code(code: u16, res: Option<&ResourceInfo>, verb: &str, name: Option<&str>) -> Self {
        let name = name.unwrap_or("");
        let gr = res.map(|r| r.qualified()).unwrap_or_default();
        match (code, res) {
            (404, Some(r)) => Self::not_found(r, name),
            (409, Some(r)) => Self::conflict(r, name),
            (403, _) => {
                let (resource, group) = res.map(|r| (r.resource, r.group)).unwrap_or(("", ""));
                Self::new(
                    403,
                    "Forbidden",
                    format!(
                        "{gr} \"{name}\" is forbidden: User \"system:serviceaccount:default:pushroll\" cannot {verb} resource \"{resource}\" in API group \"{group}\""
                    ),
                )
                .with_details(details(name, group, resource))
            }
            (429, _) => {
                let mut e = Self::new(
                    429,
                    "TooManyRequests",
                    "Too many requests, please try again later.",
                )
                .with_details(json!({"retryAfterSeconds": 1}));
                e.retry_after = Some(1);
                e
            }
            (401, _) => Self::new(401, "Unauthorized", "Unauthorized"),
            (410, _) => Self::expired("too old resource version"),
            (422, Some(r)) => Self::invalid(
                r,
                name,
                vec![("metadata".into(), "Invalid value: injected fault".into())],
            ),
            (503, _) => {
                let mut e = Self::new(
                    503,
                    "ServiceUnavailable",
                    "the server is currently unable to handle the request",
                )
                .with_details(json!({"retryAfterSeconds": 1}));
                e.retry_after = Some(1);
                e
            }
            (504, _) => Self::new(
                504,
                "Timeout",
                "the server was unable to return a response in the time allotted, but may still be processing the request",
            ),
            (400, _) => Self::bad_request("the server rejected our request for an unknown reason"),
            (405, _) => Self::method_not_allowed(),
            (500, _) => Self::internal("injected fault"),
            (c, _) => Self::new(
                c,
                "InternalError",
                format!(
                    "an error on the server (\"injected fault\") has prevented the request from succeeding (code {c})"
                ),
            ),
        }
    }

    /// The `Status` JSON body.
    pub fn to_status(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if self.reason.is_empty() {
            v.as_object_mut().expect("map").remove("reason");
        }
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

/// `details` with empty fields left out, as Go's `omitempty` does.
fn details(name: &str, group: &str, kind: &str) -> Value {
    let mut d = serde_json::Map::new();
    if !name.is_empty() {
        d.insert("name".into(), name.into());
    }
    if !group.is_empty() {
        d.insert("group".into(), group.into());
    }
    d.insert("kind".into(), kind.into());
    Value::Object(d)
}

fn cause_reason(message: &str) -> &'static str {
    if message.starts_with("Required value") {
        "FieldValueRequired"
    } else if message.starts_with("Unsupported value") {
        "FieldValueNotSupported"
    } else {
        "FieldValueInvalid"
    }
}

/// The success `Status` a DELETE answers with.
pub fn success_status(res: &ResourceInfo, name: &str, uid: Option<&str>) -> Value {
    let mut d = details(name, res.group, res.resource);
    if let Some(uid) = uid {
        d["uid"] = uid.into();
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": d})
}
