//! The digest of a tag, asked of its registry: one
//! `HEAD /v2/<repository>/manifests/<tag>` accepting OCI and Docker
//! manifests and indexes, reading `Docker-Content-Digest`. A registry that
//! answers 401 with a `Bearer` challenge gets the distribution token flow
//! for an anonymous pull token, and the HEAD once more.
//! `--registry-endpoint HOST=URL` sends a registry's calls elsewhere.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE};

use crate::reference::{Reference, validate_digest};

/// Every manifest type a tag may name.
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// The most a token answer may be: a token, not a download.
const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// Why a digest could not be had (a redelivery may do better: 503).
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("the registry {host} could not be reached: {error}")]
    Unreachable { host: String, error: String },
    #[error("the registry {host} answered {status} for {repository}:{tag}")]
    Status {
        host: String,
        repository: String,
        tag: String,
        status: u16,
    },
    #[error("the registry {host} sent no valid Docker-Content-Digest for {repository}:{tag}")]
    NoDigest {
        host: String,
        repository: String,
        tag: String,
    },
    #[error("the registry {host}'s token service failed: {error}")]
    Token { host: String, error: String },
}

/// `HOST=URL`, from `--registry-endpoint`.
pub fn parse_endpoint(s: &str) -> Result<(String, String), String> {
    let (host, url) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected HOST=URL"))?;
    let url = url.trim_end_matches('/');
    if host.is_empty() || !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!("{s:?}: expected HOST=http(s)://…"));
    }
    Ok((host.to_ascii_lowercase(), url.to_owned()))
}

/// The base URL of `host`'s registry API.
pub fn base_url(endpoints: &BTreeMap<String, String>, host: &str) -> String {
    if let Some(url) = endpoints.get(host) {
        return url.clone();
    }
    // Docker Hub's API is not served on docker.io itself.
    match host {
        "docker.io" | "index.docker.io" => "https://registry-1.docker.io".to_owned(),
        _ => format!("https://{host}"),
    }
}

/// `docker.io/library/nginx:1` -> (`docker.io`, `library/nginx`, `1`).
pub fn split(image: &Reference) -> Option<(&str, &str, &str)> {
    let (host, repository) = image.name().split_once('/')?;
    Some((host, repository, image.tag()?))
}

/// A `WWW-Authenticate: Bearer realm="…",service="…",scope="…"` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub service: Option<String>,
    pub scope: Option<String>,
}

/// Reads a Bearer challenge; `None` for any other scheme.
pub fn challenge(header: &str) -> Option<Challenge> {
    let (scheme, params) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut realm = None;
    let mut service = None;
    let mut scope = None;
    let mut rest = params.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], quoted[end + 1..].trim_start())
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim(), &after[end..])
        };
        match key.as_str() {
            "realm" => realm = Some(value.to_owned()),
            "service" => service = Some(value.to_owned()),
            "scope" => scope = Some(value.to_owned()),
            _ => {}
        }
        rest = next.trim_start_matches(',').trim_start();
    }
    Some(Challenge {
        realm: realm.filter(|r| r.starts_with("http://") || r.starts_with("https://"))?,
        service,
        scope,
    })
}

/// Asks registries for digests.
#[derive(Clone)]
pub struct Resolver {
    client: reqwest::Client,
    endpoints: BTreeMap<String, String>,
}

impl Resolver {
    /// `timeout` bounds each call (the HEAD, the token, the HEAD again).
    pub fn new(endpoints: BTreeMap<String, String>, timeout: Duration) -> Resolver {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // A registry's redirect of a HEAD is followed, a few times.
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("pushroll/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a reqwest client with rustls builds");
        Resolver { client, endpoints }
    }

    /// The digest `image`'s tag names now.
    pub async fn digest(&self, image: &Reference) -> Result<String, ResolveError> {
        let (host, repository, tag) = split(image).ok_or_else(|| ResolveError::NoDigest {
            host: String::new(),
            repository: image.name().to_owned(),
            tag: String::new(),
        })?;
        let url = format!(
            "{}/v2/{repository}/manifests/{tag}",
            base_url(&self.endpoints, host)
        );
        let unreachable = |e: reqwest::Error| ResolveError::Unreachable {
            host: host.to_owned(),
            error: e.without_url().to_string(),
        };
        let head = |token: Option<String>| {
            let mut request = self.client.head(&url).header(ACCEPT, ACCEPT_MANIFESTS);
            if let Some(token) = token {
                request = request.header(AUTHORIZATION, format!("Bearer {token}"));
            }
            request.send()
        };
        let mut response = head(None).await.map_err(unreachable)?;
        if response.status() == StatusCode::UNAUTHORIZED
            && let Some(c) = response
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(challenge)
        {
            let token = self.token(host, &c).await?;
            response = head(Some(token)).await.map_err(unreachable)?;
        }
        if !response.status().is_success() {
            return Err(ResolveError::Status {
                host: host.to_owned(),
                repository: repository.to_owned(),
                tag: tag.to_owned(),
                status: response.status().as_u16(),
            });
        }
        response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .filter(|d| validate_digest(d).is_ok())
            .map(str::to_owned)
            .ok_or_else(|| ResolveError::NoDigest {
                host: host.to_owned(),
                repository: repository.to_owned(),
                tag: tag.to_owned(),
            })
    }

    /// An anonymous token for the challenge's scope.
    async fn token(&self, host: &str, c: &Challenge) -> Result<String, ResolveError> {
        let failed = |error: String| ResolveError::Token {
            host: host.to_owned(),
            error,
        };
        let mut query = Vec::new();
        if let Some(service) = &c.service {
            query.push(("service", service.as_str()));
        }
        if let Some(scope) = &c.scope {
            query.push(("scope", scope.as_str()));
        }
        let url = reqwest::Url::parse_with_params(&c.realm, &query)
            .map_err(|_| failed("the challenge's realm is not a URL".into()))?;
        let mut response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| failed(e.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(failed(format!("status {}", response.status().as_u16())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| failed(e.without_url().to_string()))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_TOKEN_BYTES {
                return Err(failed("the token answer is too large".into()));
            }
        }
        let json: serde_json::Value =
            serde_json::from_slice(&body).map_err(|_| failed("the answer is not JSON".into()))?;
        json.get("token")
            .or_else(|| json.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| failed("the answer holds no token".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bearer_challenges() {
        let hub = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#;
        assert_eq!(
            challenge(hub),
            Some(Challenge {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/nginx:pull".into()),
            })
        );
        let quay = r#"Bearer realm="https://quay.io/v2/auth", service="quay.io", scope="repository:a/b:pull""#;
        assert_eq!(challenge(quay).unwrap().service.as_deref(), Some("quay.io"));
        let bare = "bearer realm=https://r.example/token";
        assert_eq!(challenge(bare).unwrap().realm, "https://r.example/token");
        for not in [
            r#"Basic realm="Registry""#,
            "Bearer",
            r#"Bearer service="x""#,
            r#"Bearer realm="file:///etc/passwd""#,
            r#"Bearer realm="https://x"#,
        ] {
            assert_eq!(challenge(not), None, "{not}");
        }
    }

    #[test]
    fn endpoints_and_hosts() {
        assert_eq!(
            parse_endpoint("docker.io=http://127.0.0.1:5000/").unwrap(),
            ("docker.io".into(), "http://127.0.0.1:5000".into())
        );
        for bad in ["docker.io", "=http://x", "docker.io=ftp://x", "docker.io="] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
        let mut endpoints = BTreeMap::new();
        assert_eq!(
            base_url(&endpoints, "docker.io"),
            "https://registry-1.docker.io"
        );
        assert_eq!(base_url(&endpoints, "quay.io"), "https://quay.io");
        endpoints.insert("quay.io".to_owned(), "http://127.0.0.1:1".to_owned());
        assert_eq!(base_url(&endpoints, "quay.io"), "http://127.0.0.1:1");
        let r = Reference::parse("nginx:latest").unwrap();
        assert_eq!(split(&r), Some(("docker.io", "library/nginx", "latest")));
    }
}
