//! Where a push is verified: the OIDC token Pub/Sub signs with Google's keys.
//!
//! The policy is ours, never the token's: RS256 only, the key chosen by
//! `kid` from the JWK set at `--jwks-url`, `iss`, `aud`, `exp` (and `nbf`,
//! `iat`) checked with a small leeway, `email_verified` true, and `email`
//! and the delivery's subscription checked against the allow-lists.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use axum::http::{HeaderValue, StatusCode};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Tokens are a little over 1 KiB; anything much larger is refused before
/// any parsing or crypto.
pub(crate) const MAX_AUTHORIZATION_BYTES: usize = 8 * 1024;
/// Clock skew tolerated on `exp`, `nbf` and `iat`.
const LEEWAY_SECS: u64 = 30;
/// Bounds on how long fetched keys are trusted, whatever `max-age` says.
const MIN_KEY_TTL: Duration = Duration::from_secs(60);
const MAX_KEY_TTL: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_KEY_TTL: Duration = Duration::from_secs(3600);
/// An unknown `kid` triggers at most one refetch per interval, so random
/// kids cannot make us hammer the key endpoint.
pub(crate) const UNKNOWN_KID_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// Shown in `/readyz` once the keys at hand are too old to trust.
const STALE_KEYS: &str = "the signing keys are older than --max-key-age and fetching them again keeps failing: pushes answer 503 until a fetch succeeds";
/// Retry delays while no keys can be had, doubling up to the cap.
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(60);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// A JWK set is a few KiB; refuse absurd ones.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

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
    Google(Arc<GoogleVerifier>),
}

impl Authenticator {
    /// `--auth google` starts the verifier and its key refresher.
    pub fn start(
        config: AuthConfig,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Authenticator {
        match config.mode {
            AuthMode::None => Authenticator::None,
            AuthMode::Google => {
                Authenticator::Google(GoogleVerifier::start(config, metrics, shutdown))
            }
        }
    }

    /// Checks a request's `Authorization` header.
    pub async fn verify(&self, authorization: Option<&HeaderValue>) -> Result<(), AuthError> {
        match self {
            Authenticator::None => Ok(()),
            Authenticator::Google(v) => v.verify(authorization).await.map(drop),
        }
    }

    /// Checks the delivery's subscription against `--subscription`.
    pub(crate) fn check_subscription(&self, subscription: Option<&str>) -> Result<(), AuthError> {
        match self {
            Authenticator::None => Ok(()),
            Authenticator::Google(v) => v.check_subscription(subscription),
        }
    }

    /// Whether signing keys are at hand, and young enough to trust.
    pub(crate) fn is_ready(&self) -> bool {
        match self {
            Authenticator::None => true,
            Authenticator::Google(v) => v.has_keys(),
        }
    }

    /// Whether keys were fetched once but are now older than `--max-key-age`.
    pub(crate) fn keys_too_old(&self) -> bool {
        match self {
            Authenticator::None => false,
            Authenticator::Google(v) => v.keys_too_old(),
        }
    }

    /// A warning for `/readyz` and the start log: verification is off, or
    /// the keys at hand have grown too old to trust.
    pub(crate) fn warning(&self) -> Option<&'static str> {
        match self {
            Authenticator::None => Some(
                "--auth none: push tokens are NOT verified; anyone who can reach this server can restart workloads",
            ),
            Authenticator::Google(v) => v.keys_too_old().then_some(STALE_KEYS),
        }
    }
}

/// The claims Google puts in a Pub/Sub push token that we check ourselves
/// (`iss`, `aud`, `exp`, `nbf` are checked by jsonwebtoken).
#[derive(Debug, Deserialize)]
pub struct Claims {
    pub email: Option<String>,
    /// Google sends a boolean; some issuers send the string "true".
    #[serde(default)]
    pub email_verified: Option<serde_json::Value>,
    pub iat: Option<u64>,
}

struct Keys {
    set: JwkSet,
    expires: Instant,
    fetched: Instant,
}

/// Whether and how pushes are verified (`--auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Verify the Google-signed OIDC token Pub/Sub sends.
    Google,
    /// No verification: for local use only.
    None,
}

/// Token verification settings.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub mode: AuthMode,
    pub audiences: Vec<String>,
    pub allowed_emails: Vec<String>,
    pub jwks_url: String,
    pub issuers: Vec<String>,
    pub subscriptions: Vec<String>,
    /// Fetched signing keys are trusted this long while refreshing them
    /// fails (`--max-key-age`).
    pub max_key_age: Duration,
}

/// Google OIDC verification with a self-refreshing key cache.
pub struct GoogleVerifier {
    config: AuthConfig,
    validation: Validation,
    http: reqwest::Client,
    keys: ArcSwapOption<Keys>,
    /// Keys older than this are not used (`--max-key-age`).
    max_key_age: Duration,
    /// Serializes fetches so concurrent unknown kids share one; holds when
    /// the last unknown-kid refetch happened.
    refetch: tokio::sync::Mutex<Option<Instant>>,
    metrics: Arc<Metrics>,
}

impl GoogleVerifier {
    /// Builds the verifier and starts the key refresher (first fetch at
    /// once); keys older than `config.max_key_age` are not trusted.
    pub fn start(
        config: AuthConfig,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Arc<GoogleVerifier> {
        let max_key_age = config.max_key_age;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&config.audiences);
        validation.set_issuer(&config.issuers);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .build()
            .expect("building an HTTP client with static settings");
        if config.allowed_emails.is_empty() {
            tracing::warn!(
                "--allowed-email is not set: any verified Google service account with the right audience may push"
            );
        }
        let verifier = Arc::new(GoogleVerifier {
            config,
            validation,
            http,
            keys: ArcSwapOption::empty(),
            max_key_age,
            refetch: tokio::sync::Mutex::new(None),
            metrics,
        });
        tokio::spawn(refresh_loop(verifier.clone(), shutdown));
        verifier
    }

    /// Whether keys are at hand and young enough to trust.
    pub fn has_keys(&self) -> bool {
        self.keys.load().as_deref().is_some_and(|k| self.fresh(k))
    }

    /// Whether keys were fetched once but have grown too old.
    fn keys_too_old(&self) -> bool {
        self.keys.load().as_deref().is_some_and(|k| !self.fresh(k))
    }

    fn fresh(&self, keys: &Keys) -> bool {
        keys.fetched.elapsed() <= self.max_key_age
    }

    /// Fetches the JWK set once and installs it; old keys stay on failure.
    async fn fetch(&self) -> Result<Duration, String> {
        let result = self.fetch_inner().await;
        let label = if result.is_ok() { "success" } else { "error" };
        self.metrics.auth.jwks_fetch(label);
        match result {
            Ok((set, ttl)) => {
                tracing::info!(
                    keys = set.keys.len(),
                    ttl_secs = ttl.as_secs(),
                    "signing keys fetched"
                );
                let now = Instant::now();
                self.keys.store(Some(Arc::new(Keys {
                    set,
                    expires: now + ttl,
                    fetched: now,
                })));
                Ok(ttl)
            }
            Err(e) => {
                tracing::warn!(url = %self.config.jwks_url, error = %e, "fetching signing keys failed; keeping the old ones");
                Err(e)
            }
        }
    }

    async fn fetch_inner(&self) -> Result<(JwkSet, Duration), String> {
        let response = self
            .http
            .get(&self.config.jwks_url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("key endpoint answered {status}"));
        }
        let ttl = cache_ttl(
            response
                .headers()
                .get(reqwest::header::CACHE_CONTROL)
                .and_then(|v| v.to_str().ok()),
        );
        if response
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err("key set too large".into());
        }
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        if body.len() > MAX_JWKS_BYTES {
            return Err("key set too large".into());
        }
        let set: JwkSet =
            serde_json::from_slice(&body).map_err(|e| format!("not a JWK set: {e}"))?;
        Ok((set, ttl))
    }

    /// Refetches for an unknown `kid`, at most once per interval; callers
    /// that arrive during a fetch wait and reuse it.
    async fn refetch_for_unknown_kid(&self) {
        let mut last = self.refetch.lock().await;
        if last.is_some_and(|t| t.elapsed() < UNKNOWN_KID_REFETCH_INTERVAL) {
            return;
        }
        *last = Some(Instant::now());
        let _ = self.fetch().await;
    }

    /// Verifies a bearer token and returns its claims.
    pub async fn verify(&self, authorization: Option<&HeaderValue>) -> Result<Claims, AuthError> {
        let token = bearer_token(authorization)?;
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid("malformed"))?;
        if header.alg != Algorithm::RS256 {
            return Err(AuthError::Invalid("algorithm"));
        }
        let kid = header.kid.ok_or(AuthError::Invalid("no-kid"))?;
        let mut keys = self.keys.load_full();
        // Too old keys are as good as none: try for new ones (at most once
        // per interval, like an unknown kid) before giving up.
        if keys
            .as_ref()
            .is_none_or(|k| !self.fresh(k) || k.set.find(&kid).is_none())
        {
            self.refetch_for_unknown_kid().await;
            keys = self.keys.load_full();
        }
        let keys = keys
            .ok_or_else(|| AuthError::KeysUnavailable("no signing keys could be fetched".into()))?;
        if !self.fresh(&keys) {
            return Err(AuthError::KeysUnavailable(format!(
                "the signing keys were fetched {}s ago, longer than --max-key-age ({}), and fetching them again fails",
                keys.fetched.elapsed().as_secs(),
                humantime::format_duration(self.max_key_age)
            )));
        }
        let jwk = keys
            .set
            .find(&kid)
            .ok_or(AuthError::Invalid("unknown-kid"))?;
        // The key must be an RSA key meant for RS256 (or not say otherwise).
        let rsa = matches!(jwk.algorithm, AlgorithmParameters::RSA(_));
        let alg_ok = jwk
            .common
            .key_algorithm
            .is_none_or(|a| a == KeyAlgorithm::RS256);
        if !rsa || !alg_ok {
            return Err(AuthError::Invalid("key-type"));
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|_| AuthError::Invalid("bad-key"))?;
        let data = jsonwebtoken::decode::<Claims>(token, &key, &self.validation).map_err(|e| {
            match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Invalid("expired"),
                ErrorKind::ImmatureSignature => AuthError::Invalid("not-yet-valid"),
                ErrorKind::InvalidIssuer => AuthError::Invalid("issuer"),
                ErrorKind::InvalidAudience => AuthError::NotAllowed("audience"),
                ErrorKind::MissingRequiredClaim(_) => AuthError::Invalid("missing-claim"),
                ErrorKind::InvalidSignature => AuthError::Invalid("signature"),
                ErrorKind::InvalidAlgorithm => AuthError::Invalid("algorithm"),
                _ => AuthError::Invalid("malformed"),
            }
        })?;
        let claims = data.claims;
        let now = jsonwebtoken::get_current_timestamp();
        if claims.iat.is_some_and(|iat| iat > now + LEEWAY_SECS) {
            return Err(AuthError::Invalid("issued-in-future"));
        }
        let verified = matches!(&claims.email_verified, Some(serde_json::Value::Bool(true)))
            || matches!(&claims.email_verified, Some(serde_json::Value::String(s)) if s == "true");
        let email = claims
            .email
            .as_deref()
            .ok_or(AuthError::NotAllowed("no-email"))?;
        if !verified {
            return Err(AuthError::NotAllowed("email-unverified"));
        }
        if !self.config.allowed_emails.is_empty()
            && !self.config.allowed_emails.iter().any(|e| e == email)
        {
            return Err(AuthError::NotAllowed("email"));
        }
        Ok(claims)
    }

    pub(crate) fn check_subscription(&self, subscription: Option<&str>) -> Result<(), AuthError> {
        if self.config.subscriptions.is_empty() {
            return Ok(());
        }
        match subscription {
            Some(s) if self.config.subscriptions.iter().any(|a| a == s) => Ok(()),
            _ => Err(AuthError::NotAllowed("subscription")),
        }
    }
}

/// Extracts the token from `Authorization: Bearer <token>`, bounded in size.
fn bearer_token(value: Option<&HeaderValue>) -> Result<&str, AuthError> {
    let value = value.ok_or(AuthError::Missing("no-header"))?;
    if value.len() > MAX_AUTHORIZATION_BYTES {
        return Err(AuthError::Invalid("oversized"));
    }
    let value = value
        .to_str()
        .map_err(|_| AuthError::Invalid("malformed"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or(AuthError::Missing("not-bearer"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Missing("not-bearer"));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::Missing("empty"));
    }
    Ok(token)
}

/// How long fetched keys are trusted: `Cache-Control: max-age`, bounded.
pub(crate) fn cache_ttl(cache_control: Option<&str>) -> Duration {
    let max_age = cache_control.and_then(|cc| {
        cc.split(',')
            .filter_map(|d| d.trim().strip_prefix("max-age="))
            .find_map(|v| v.trim_matches('"').parse::<u64>().ok())
    });
    max_age
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_KEY_TTL)
        .clamp(MIN_KEY_TTL, MAX_KEY_TTL)
}

/// Keeps the keys fresh: fetch at start (retrying with backoff while it
/// fails), then again when they expire, or at half `--max-key-age` if that
/// comes first, so that one failed refresh does not make them too old.
async fn refresh_loop(verifier: Arc<GoogleVerifier>, shutdown: CancellationToken) {
    let max_age = verifier.max_key_age;
    // A short `--max-key-age` (tests) is not left waiting a minute between
    // retries once the endpoint is back.
    let retry_max = (max_age / 4).clamp(RETRY_MIN, RETRY_MAX);
    let mut retry = RETRY_MIN;
    let mut warned_stale = false;
    loop {
        let wait = {
            // Scheduled fetches share the lock with unknown-kid refetches.
            let _guard = verifier.refetch.lock().await;
            match verifier.fetch().await {
                Ok(_) => {
                    retry = RETRY_MIN;
                    warned_stale = false;
                    let expires = verifier.keys.load().as_ref().map(|k| k.expires);
                    expires
                        .map_or(DEFAULT_KEY_TTL, |e| {
                            e.saturating_duration_since(Instant::now())
                        })
                        .min(max_age / 2)
                }
                Err(_) => {
                    if !warned_stale && verifier.keys_too_old() {
                        warned_stale = true;
                        tracing::error!(
                            max_key_age = %humantime::format_duration(max_age),
                            "{STALE_KEYS}"
                        );
                    }
                    let wait = retry;
                    retry = (retry * 2).min(retry_max);
                    wait
                }
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        let hv = |s: &str| HeaderValue::from_str(s).unwrap();
        let big = format!("Bearer {}", "a".repeat(MAX_AUTHORIZATION_BYTES));
        let table: Vec<(Option<HeaderValue>, Result<&str, &str>)> = vec![
            (None, Err("no-header")),
            (Some(hv("Basic abc")), Err("not-bearer")),
            (Some(hv("Bearer")), Err("not-bearer")),
            (Some(hv("Bearer ")), Err("empty")),
            (Some(hv("Bearer    ")), Err("empty")),
            (Some(hv(&big)), Err("oversized")),
            (Some(hv("Bearer abc.def.ghi")), Ok("abc.def.ghi")),
            (Some(hv("bearer abc")), Ok("abc")),
        ];
        for (value, want) in table {
            let got = bearer_token(value.as_ref()).map_err(|e| e.reason());
            assert_eq!(got, want, "{value:?}");
        }
    }

    #[test]
    fn cache_ttl_is_bounded() {
        let table = [
            (None, DEFAULT_KEY_TTL),
            (
                Some("public, max-age=19204, must-revalidate"),
                Duration::from_secs(19204),
            ),
            (Some("max-age=1"), MIN_KEY_TTL),
            (Some("max-age=99999999"), MAX_KEY_TTL),
            (Some("no-cache"), DEFAULT_KEY_TTL),
            (Some("max-age=abc"), DEFAULT_KEY_TTL),
        ];
        for (cc, want) in table {
            assert_eq!(cache_ttl(cc), want, "{cc:?}");
        }
    }

    #[test]
    fn status_codes() {
        assert_eq!(AuthError::Missing("x").status(), StatusCode::UNAUTHORIZED);
        assert_eq!(AuthError::Invalid("x").status(), StatusCode::UNAUTHORIZED);
        assert_eq!(AuthError::NotAllowed("x").status(), StatusCode::FORBIDDEN);
        assert_eq!(
            AuthError::KeysUnavailable("x".into()).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
