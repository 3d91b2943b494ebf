//! Image references, normalized by the Docker reference grammar
//! (distribution/reference): `nginx` is `docker.io/library/nginx:latest`.
//!
//! Pure code: no I/O. Matching a push against a container image compares
//! [`Reference::tagged`] strings, so both sides must go through [`Reference::parse`].

use std::fmt;

const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
const OFFICIAL_REPO_PREFIX: &str = "library/";
const DEFAULT_TAG: &str = "latest";
/// The grammar's limit on the repository name (domain and path).
const NAME_TOTAL_MAX: usize = 255;
/// A tag is `[\w][\w.-]{0,127}`.
const TAG_MAX: usize = 128;

/// A parsed, normalized image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// `domain/path`, domain lowercased, `library/` added for official images.
    name: String,
    tag: Option<String>,
    digest: Option<String>,
}

/// Why a string is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("empty image reference")]
    Empty,
    #[error("invalid image reference format")]
    InvalidFormat,
    #[error("repository name must be lowercase")]
    NameNotLowercase,
    #[error("repository name is longer than {NAME_TOTAL_MAX} characters")]
    NameTooLong,
    #[error("invalid tag")]
    InvalidTag,
    #[error("invalid digest")]
    InvalidDigest,
    #[error("invalid registry host")]
    InvalidDomain,
}

impl Reference {
    /// Parses and normalizes `[domain/]path[:tag][@digest]`.
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        if input.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => {
                validate_digest(digest)?;
                (rest, Some(digest.to_owned()))
            }
            None => (input, None),
        };
        // A tag follows the last ':' that comes after the last '/', so that a
        // registry port (`localhost:5000/a`) is not taken for a tag.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let split = last_slash + i;
                let tag = &rest[split + 1..];
                validate_tag(tag)?;
                (&rest[..split], Some(tag.to_owned()))
            }
            None => (rest, None),
        };
        let name = normalize_name(name)?;
        Ok(Reference { name, tag, digest })
    }

    /// The repository: `domain/path`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// Pinned images (`R@sha256:…`, `R:T@sha256:…`) cannot change under a tag.
    pub fn is_pinned(&self) -> bool {
        self.digest.is_some()
    }

    /// `domain/path:tag`, the default tag filled in; the digest is left out.
    /// This is the index key and what a push matches against.
    pub fn tagged(&self) -> String {
        format!(
            "{}:{}",
            self.name,
            self.tag.as_deref().unwrap_or(DEFAULT_TAG)
        )
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Parses `s` and returns its normalized tagged form, or `None` when it is
/// invalid or pinned by digest (such an image never matches a push).
pub fn match_key(s: &str) -> Option<String> {
    Reference::parse(s)
        .ok()
        .filter(|r| !r.is_pinned())
        .map(|r| r.tagged())
}

/// Parses `s` and returns its normalized tagged form for a workload in
/// `pin` mode: there a tagged reference pinned by digest (`R:T@sha256:…`,
/// which the previous pin wrote) still matches a push of `R:T`, so that the
/// next push re-pins it. A digest-only reference (`R@sha256:…`) names no
/// tag and never matches.
pub fn pin_match_key(s: &str) -> Option<String> {
    Reference::parse(s)
        .ok()
        .filter(|r| r.tag.is_some() || !r.is_pinned())
        .map(|r| r.tagged())
}

/// `R:T` of a tagged reference pinned by digest, exactly as written
/// (`nginx:1.27@sha256:…` gives `nginx:1.27`); `None` for anything else.
pub fn strip_pin(s: &str) -> Option<&str> {
    let r = Reference::parse(s).ok()?;
    (r.tag.is_some() && r.is_pinned()).then(|| s.split_once('@').map_or(s, |(rest, _)| rest))
}

/// The reference `as_written` in a pod spec, pinned to `digest`: the
/// registry, path and tag kept as the spec writes them (no normalization, so
/// a GitOps diff shows only the digest), any digest replaced, and `:latest`
/// written out when no tag was, because a digest-only reference could never
/// match a later push. `None` when `as_written` or `digest` is invalid.
pub fn pin(as_written: &str, digest: &str) -> Option<String> {
    let r = Reference::parse(as_written).ok()?;
    validate_digest(digest).ok()?;
    let named = as_written
        .split_once('@')
        .map_or(as_written, |(rest, _)| rest);
    Some(match r.tag {
        Some(_) => format!("{named}@{digest}"),
        None => format!("{named}:{DEFAULT_TAG}@{digest}"),
    })
}

fn normalize_name(name: &str) -> Result<String, ReferenceError> {
    if name.is_empty() {
        return Err(ReferenceError::InvalidFormat);
    }
    // The first component is a registry host when it looks like one (has a
    // '.' or ':', is "localhost", or has upper case, which a path never may).
    let (domain, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            validate_domain(first)?;
            // Hosts are lowercased, except one that only its upper case
            // marks as a host (no '.' or ':', not localhost): lowercased,
            // `Reg/app` would print as `reg/app`, a Docker Hub image, and
            // parse → to_string → parse would change the image. Upper case
            // keeps it a host and still ignores how it was written.
            let case_marked =
                !first.contains(['.', ':']) && !first.eq_ignore_ascii_case("localhost");
            let domain = if case_marked {
                first.to_ascii_uppercase()
            } else {
                first.to_ascii_lowercase()
            };
            (domain, rest)
        }
        _ => (DEFAULT_DOMAIN.to_owned(), name),
    };
    let domain = if domain == LEGACY_DEFAULT_DOMAIN {
        DEFAULT_DOMAIN.to_owned()
    } else {
        domain
    };
    validate_path(path)?;
    let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
        format!("{OFFICIAL_REPO_PREFIX}{path}")
    } else {
        path.to_owned()
    };
    let full = format!("{domain}/{path}");
    if full.len() > NAME_TOTAL_MAX {
        return Err(ReferenceError::NameTooLong);
    }
    Ok(full)
}

/// Path components: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, joined by '/'.
fn validate_path(path: &str) -> Result<(), ReferenceError> {
    for component in path.split('/') {
        if component.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(ReferenceError::NameNotLowercase);
        }
        if !is_path_component(component) {
            return Err(ReferenceError::InvalidFormat);
        }
    }
    Ok(())
}

fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: '.', '_', '__' or one or more '-'.
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !alnum(b[i]) {
            return false;
        }
    }
    true
}

/// A host (DNS labels or a bracketed IPv6 address) with an optional port.
fn validate_domain(domain: &str) -> Result<(), ReferenceError> {
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or(ReferenceError::InvalidDomain)?;
        if v6.is_empty() || !v6.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return Err(ReferenceError::InvalidDomain);
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or(ReferenceError::InvalidDomain)?),
        };
        (None, port)
    } else {
        match domain.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(domain), None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(ReferenceError::InvalidDomain);
    }
    if let Some(host) = host {
        let label_ok = |l: &str| {
            let b = l.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        };
        if !host.split('.').all(label_ok) {
            return Err(ReferenceError::InvalidDomain);
        }
    }
    Ok(())
}

fn validate_tag(tag: &str) -> Result<(), ReferenceError> {
    let b = tag.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let ok = !b.is_empty()
        && b.len() <= TAG_MAX
        && word(b[0])
        && b.iter().all(|&c| word(c) || c == b'.' || c == b'-');
    if ok {
        Ok(())
    } else {
        Err(ReferenceError::InvalidTag)
    }
}

/// `algorithm:hex`; sha256 must be 64 lowercase hex digits.
pub fn validate_digest(digest: &str) -> Result<(), ReferenceError> {
    let (alg, hex) = digest
        .split_once(':')
        .ok_or(ReferenceError::InvalidDigest)?;
    let alg_ok = !alg.is_empty()
        && alg
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"+._-".contains(&c));
    let hex_ok = hex.len() >= 32 && hex.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    let len_ok = alg != "sha256" || hex.len() == 64;
    if alg_ok && hex_ok && len_ok {
        Ok(())
    } else {
        Err(ReferenceError::InvalidDigest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:6ec128e26cd5e5b3d5ad4ad0b3b1e0b5c5a4a2a8e1f3f6f9d0a7b4c1e2d3f4a5";

    #[test]
    fn normalizes_like_docker() {
        let pinned = format!("host.io/p/r/i:t@{D}");
        let digest_only = format!("host.io/p/r/i@{D}");
        // (input, tagged form, pinned)
        let table: &[(&str, &str, bool)] = &[
            ("nginx", "docker.io/library/nginx:latest", false),
            ("nginx:1.25", "docker.io/library/nginx:1.25", false),
            ("library/nginx", "docker.io/library/nginx:latest", false),
            (
                "docker.io/library/nginx:latest",
                "docker.io/library/nginx:latest",
                false,
            ),
            ("docker.io/nginx", "docker.io/library/nginx:latest", false),
            (
                "index.docker.io/library/nginx",
                "docker.io/library/nginx:latest",
                false,
            ),
            ("bitnami/redis:7", "docker.io/bitnami/redis:7", false),
            ("localhost/app", "localhost/app:latest", false),
            ("localhost:5000/a/b:c", "localhost:5000/a/b:c", false),
            ("LOCALHOST:5000/a/b:c", "localhost:5000/a/b:c", false),
            ("LocalHost/app", "localhost/app:latest", false),
            // A host marked only by its case stays one (and stays stable).
            ("Reg/app:v1", "REG/app:v1", false),
            ("rEG/app:v1", "REG/app:v1", false),
            ("REG/app:v1", "REG/app:v1", false),
            ("reg/app:v1", "docker.io/reg/app:v1", false),
            (
                "Registry.Example.COM/team/app:V1",
                "registry.example.com/team/app:V1",
                false,
            ),
            (
                "us-east1-docker.pkg.dev/p/r/app:v1",
                "us-east1-docker.pkg.dev/p/r/app:v1",
                false,
            ),
            (
                "gcr.io/p/a__b/c-d--e.f:1.0_rc-2",
                "gcr.io/p/a__b/c-d--e.f:1.0_rc-2",
                false,
            ),
            ("[::1]:5000/app:x", "[::1]:5000/app:x", false),
            ("127.0.0.1:5000/app", "127.0.0.1:5000/app:latest", false),
            (&pinned, "host.io/p/r/i:t", true),
            (&digest_only, "host.io/p/r/i:latest", true),
        ];
        for (input, want, pinned) in table {
            let r = Reference::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.tagged(), *want, "{input}");
            assert_eq!(r.is_pinned(), *pinned, "{input}");
            assert_eq!(match_key(input).is_none(), *pinned, "{input}");
        }
    }

    #[test]
    fn rejects_invalid_references() {
        let long_name = format!("host.io/{}", "a".repeat(250));
        let long_tag = format!("app:{}", "t".repeat(129));
        let table: &[(&str, ReferenceError)] = &[
            ("", ReferenceError::Empty),
            ("Nginx", ReferenceError::NameNotLowercase),
            ("host.io/Team/app", ReferenceError::NameNotLowercase),
            ("app:", ReferenceError::InvalidTag),
            ("app:-x", ReferenceError::InvalidTag),
            ("app:a b", ReferenceError::InvalidTag),
            (&long_tag, ReferenceError::InvalidTag),
            ("app@sha256:abc", ReferenceError::InvalidDigest),
            ("app@sha256:ZZ", ReferenceError::InvalidDigest),
            ("app@", ReferenceError::InvalidDigest),
            ("app@@", ReferenceError::InvalidDigest),
            ("/app", ReferenceError::InvalidFormat),
            ("app/", ReferenceError::InvalidFormat),
            ("a//b", ReferenceError::InvalidFormat),
            ("-app", ReferenceError::InvalidFormat),
            ("app-", ReferenceError::InvalidFormat),
            ("a___b", ReferenceError::InvalidFormat),
            ("a..b", ReferenceError::InvalidFormat),
            ("ünïcode/app", ReferenceError::InvalidFormat),
            ("host.io:x/app", ReferenceError::InvalidDomain),
            ("-bad.io/app", ReferenceError::InvalidDomain),
            ("[zz]:5000/app", ReferenceError::InvalidDomain),
            ("host.io/", ReferenceError::InvalidFormat),
            (&long_name, ReferenceError::NameTooLong),
        ];
        for (input, want) in table {
            assert_eq!(Reference::parse(input).as_ref(), Err(want), "{input:?}");
        }
    }

    #[test]
    fn pins_keep_the_reference_as_written() {
        const E: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
        // (as written, pushed digest, pinned image)
        let table: Vec<(String, &str, Option<String>)> = vec![
            (
                "us-east1-docker.pkg.dev/p/r/app:v1".into(),
                D,
                Some(format!("us-east1-docker.pkg.dev/p/r/app:v1@{D}")),
            ),
            // The previous pin's digest is replaced, the tag kept.
            (
                format!("us-east1-docker.pkg.dev/p/r/app:v1@{E}"),
                D,
                Some(format!("us-east1-docker.pkg.dev/p/r/app:v1@{D}")),
            ),
            // A registry port is not a tag.
            (
                "localhost:5000/team/app:v2".into(),
                D,
                Some(format!("localhost:5000/team/app:v2@{D}")),
            ),
            (
                "localhost:5000/team/app".into(),
                D,
                Some(format!("localhost:5000/team/app:latest@{D}")),
            ),
            // Docker Hub short names stay short (the spec's text, not the
            // normalized form, so a GitOps diff shows only the digest).
            ("nginx:1.27".into(), D, Some(format!("nginx:1.27@{D}"))),
            ("nginx".into(), D, Some(format!("nginx:latest@{D}"))),
            (
                "bitnami/redis:7".into(),
                D,
                Some(format!("bitnami/redis:7@{D}")),
            ),
            // A digest-only reference gets the default tag it stood for.
            (format!("nginx@{E}"), D, Some(format!("nginx:latest@{D}"))),
            ("Nginx:1".into(), D, None),
            ("nginx:1".into(), "sha256:short", None),
        ];
        for (written, digest, want) in &table {
            let got = pin(written, digest);
            assert_eq!(&got, want, "{written}");
            // A pin matches the next push of the same tag in pin mode, and
            // strips back to what was written (or its tagged form).
            if let Some(pinned) = &got {
                assert_eq!(
                    pin_match_key(pinned),
                    match_key(written.split('@').next().unwrap()),
                    "{written}"
                );
                assert!(
                    match_key(pinned).is_none(),
                    "restart mode never matches a pin: {pinned}"
                );
                assert!(strip_pin(pinned).is_some(), "{pinned}");
            }
        }
    }

    #[test]
    fn pin_mode_matches_tagged_pins_only() {
        // (image, restart-mode key, pin-mode key, strip_pin)
        let tagged_pin = format!("nginx:1.27@{D}");
        let digest_only = format!("nginx@{D}");
        type Row<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Option<&'a str>);
        let table: Vec<Row> = vec![
            (
                "nginx:1.27",
                Some("docker.io/library/nginx:1.27"),
                Some("docker.io/library/nginx:1.27"),
                None,
            ),
            (
                &tagged_pin,
                None,
                Some("docker.io/library/nginx:1.27"),
                Some("nginx:1.27"),
            ),
            (&digest_only, None, None, None),
            ("Bad", None, None, None),
        ];
        for (image, restart, pin_key, stripped) in table {
            assert_eq!(match_key(image).as_deref(), restart, "{image}");
            assert_eq!(pin_match_key(image).as_deref(), pin_key, "{image}");
            assert_eq!(strip_pin(image), stripped, "{image}");
        }
    }

    #[test]
    fn display_keeps_tag_and_digest() {
        let s = format!("us-east1-docker.pkg.dev/p/r/app:v1@{D}");
        let r = Reference::parse(&s).unwrap();
        assert_eq!(r.to_string(), s);
        assert_eq!(r.digest(), Some(D));
        assert_eq!(r.tag(), Some("v1"));
        assert_eq!(r.name(), "us-east1-docker.pkg.dev/p/r/app");
    }
}
