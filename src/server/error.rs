//! The one place where failures become HTTP status codes. Pub/Sub reads the
//! code as a promise: 200 acks, everything else is redelivered, so only
//! failures a redelivery can fix are 503 and malformed requests are 4xx.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::auth::AuthError;
use crate::index::store::LookupError;
use crate::push::DecodeError;
use crate::restart::{WorkloadFailure, WorkloadResult};
use crate::webhook::ParseError;
use crate::webhook::resolve::ResolveError;
use crate::webhook::verify::{Rejected, Unreadable};

/// Everything `POST /push` can fail with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("the body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the body could not be read: {0}")]
    Body(String),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// Some workloads failed for a reason a redelivery can fix; the others
    /// are done and stay done.
    #[error("{} workload(s) could not be restarted", failed.len())]
    Restart {
        done: Vec<WorkloadResult>,
        failed: Vec<WorkloadFailure>,
    },
    #[error("the push took longer than {0:?}")]
    Timeout(std::time::Duration),
    /// `/webhooks/{source}`: no such source, or one without a secret.
    #[error(
        "no webhook source {0:?} is enabled here (a source is enabled by its file in --webhook-secrets)"
    )]
    SourceDisabled(String),
    /// A webhook whose sender could not be verified.
    #[error("the webhook's sender is not verified: {0}")]
    Unverified(#[from] Rejected),
    #[error(transparent)]
    SecretUnreadable(#[from] Unreadable),
    #[error(transparent)]
    Webhook(#[from] ParseError),
    /// A digest the payload lacks could not be resolved.
    #[error("the pushed tag's digest could not be resolved: {0}")]
    Resolve(#[from] ResolveError),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    workloads: Option<&'a [WorkloadResult]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failed: Option<&'a [WorkloadFailure]>,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Decode(_) | ApiError::Body(_) | ApiError::Webhook(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::SourceDisabled(_) => StatusCode::NOT_FOUND,
            ApiError::Unverified(_) => StatusCode::UNAUTHORIZED,
            ApiError::SecretUnreadable(_) | ApiError::Resolve(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Auth(e) => e.status(),
            ApiError::Lookup(_) | ApiError::Restart { .. } | ApiError::Timeout(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The short `error` of the JSON body, and the `outcome` metric label.
    pub fn label(&self) -> &'static str {
        match self {
            ApiError::Decode(_) | ApiError::Body(_) | ApiError::Webhook(_) => "bad-request",
            ApiError::SourceDisabled(_) => "not-found",
            ApiError::Unverified(_) => "unauthorized",
            ApiError::SecretUnreadable(_) => "secret-unreadable",
            ApiError::Resolve(_) => "digest-unavailable",
            ApiError::TooLarge { .. } => "too-large",
            ApiError::Auth(e) if e.status() == StatusCode::FORBIDDEN => "forbidden",
            ApiError::Auth(e) if e.status() == StatusCode::UNAUTHORIZED => "unauthorized",
            ApiError::Auth(_) => "keys-unavailable",
            ApiError::Lookup(_) => "index-unavailable",
            ApiError::Restart { .. } => "restart-failed",
            ApiError::Timeout(_) => "timeout",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (workloads, failed) = match &self {
            ApiError::Restart { done, failed } => (Some(done.as_slice()), Some(failed.as_slice())),
            _ => (None, None),
        };
        let body = ErrorBody {
            error: self.label(),
            detail: self.to_string(),
            workloads,
            failed,
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// A JSON error for routes other than `/push` (404, 405, readiness).
pub(crate) fn plain_error(status: StatusCode, error: &str, detail: impl Into<String>) -> Response {
    let body = ErrorBody {
        error,
        detail: detail.into(),
        workloads: None,
        failed: None,
    };
    (status, Json(body)).into_response()
}
