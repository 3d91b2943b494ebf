//! Where a push is verified: the OIDC token Pub/Sub signs with Google's keys.

use axum::http::{HeaderValue, StatusCode};

/// Why a push was refused by token verification.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// No usable `Authorization: Bearer` header.
    #[error("missing bearer token: {0}")]
    Missing(&'static str),
    /// The token failed verification.
    #[error("invalid token: {0}")]
    Invalid(&'static str),
    /// A valid token for an identity, audience or subscription we do not accept.
    #[error("token not allowed: {0}")]
    NotAllowed(&'static str),
    /// Verification could not be attempted: no signing keys at hand.
    #[error("signing keys unavailable: {0}")]
    KeysUnavailable(String),
}

impl AuthError {
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::Missing(_) | AuthError::Invalid(_) => StatusCode::UNAUTHORIZED,
            AuthError::NotAllowed(_) => StatusCode::FORBIDDEN,
            AuthError::KeysUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `reason` label of `pushroll_token_rejections`; never the token.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing(r) | AuthError::Invalid(r) | AuthError::NotAllowed(r) => r,
            AuthError::KeysUnavailable(_) => "keys-unavailable",
        }
    }
}

/// Verifies pushes according to `--auth`.
pub enum Authenticator {
    /// `--auth none`: every request passes.
    None,
}

impl Authenticator {
    /// Checks a request's `Authorization` header.
    pub async fn verify(&self, _authorization: Option<&HeaderValue>) -> Result<(), AuthError> {
        match self {
            Authenticator::None => Ok(()),
        }
    }

    /// Checks the delivery's subscription against `--subscription`.
    pub fn check_subscription(&self, _subscription: Option<&str>) -> Result<(), AuthError> {
        match self {
            Authenticator::None => Ok(()),
        }
    }

    /// Whether signing keys are at hand (always, without verification).
    pub fn is_ready(&self) -> bool {
        true
    }

    /// A warning for `/readyz` and the start log, when verification is off.
    pub fn warning(&self) -> Option<&'static str> {
        match self {
            Authenticator::None => Some(
                "--auth none: push tokens are NOT verified; anyone who can reach this server can restart workloads",
            ),
        }
    }
}
