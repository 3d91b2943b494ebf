//! Who may post to `/webhooks/{source}`: each source's secret, read from
//! `--webhook-secrets DIR/<source>`, and the pure checks of a request
//! against it. Comparisons are constant time (`subtle`), GitHub's
//! signature an HMAC-SHA256 (`hmac`); neither is written here.

use std::io::Read as _;
use std::path::PathBuf;
use std::sync::Mutex;

use hmac::{Hmac, Mac};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::push::Origin;

/// The largest secret file read; a bigger one is a mistake, not a secret.
const MAX_SECRET_BYTES: u64 = 4096;

/// A source's secret. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Surrounding whitespace (and a final newline) is not part of it; an
    /// empty secret is none (it would accept an empty header).
    pub fn new(raw: &[u8]) -> Option<Secret> {
        let trimmed = raw.trim_ascii();
        (!trimmed.is_empty()).then(|| Secret(trimmed.to_vec()))
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// Why a request is not from the source's sender (answered 401). The
/// messages never hold what was sent or expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("no Authorization header")]
    NoAuthorization,
    #[error("the Authorization header does not hold this source's secret")]
    WrongAuthorization,
    #[error("no X-Hub-Signature-256 header (an X-Hub-Signature sha1= alone is not accepted)")]
    Sha1Only,
    #[error("no X-Hub-Signature-256 header")]
    NoSignature,
    #[error("X-Hub-Signature-256 is not `sha256=<64 hex digits>`")]
    MalformedSignature,
    #[error("X-Hub-Signature-256 does not match the body signed with this source's secret")]
    WrongSignature,
    #[error("no secret in the path: POST /webhooks/{{source}}/<secret>")]
    NoPathSecret,
    #[error("the secret in the path is not this source's")]
    WrongPathSecret,
}

impl Rejected {
    /// A stable label for the token-rejection metric.
    pub fn reason(self) -> &'static str {
        match self {
            Rejected::NoAuthorization | Rejected::NoSignature | Rejected::NoPathSecret => {
                "webhook-missing"
            }
            Rejected::Sha1Only => "webhook-sha1",
            Rejected::MalformedSignature => "webhook-malformed",
            Rejected::WrongAuthorization | Rejected::WrongSignature | Rejected::WrongPathSecret => {
                "webhook-wrong"
            }
        }
    }
}

/// Equal, in time that depends on neither value nor length: both sides
/// are hashed to the same length first.
fn same(a: &[u8], b: &[u8]) -> bool {
    Sha256::digest(a).ct_eq(&Sha256::digest(b)).into()
}

/// distribution, Harbor, ECR: the `Authorization` header is the secret;
/// with `bearer`, `Bearer <secret>` is accepted too.
pub fn authorization(secret: &Secret, header: Option<&[u8]>, bearer: bool) -> Result<(), Rejected> {
    let header = header.ok_or(Rejected::NoAuthorization)?.trim_ascii();
    let plain = same(header, secret.expose());
    let with_bearer = bearer
        && header.len() > 7
        && header[..7].eq_ignore_ascii_case(b"bearer ")
        && same(header[7..].trim_ascii(), secret.expose());
    if plain | with_bearer {
        Ok(())
    } else {
        Err(Rejected::WrongAuthorization)
    }
}

/// GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>`.
/// The older `X-Hub-Signature` (SHA-1) is never enough.
pub fn github(
    secret: &Secret,
    signature_256: Option<&[u8]>,
    signature_sha1: Option<&[u8]>,
    body: &[u8],
) -> Result<(), Rejected> {
    let Some(header) = signature_256 else {
        return Err(if signature_sha1.is_some() {
            Rejected::Sha1Only
        } else {
            Rejected::NoSignature
        });
    };
    let hex_sig = header
        .strip_prefix(b"sha256=")
        .ok_or(Rejected::MalformedSignature)?;
    let mut sig = [0u8; 32];
    hex::decode_to_slice(hex_sig, &mut sig).map_err(|_| Rejected::MalformedSignature)?;
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.expose()).expect("HMAC takes a key of any length");
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&sig).map_err(|_| Rejected::WrongSignature)
}

/// Docker Hub, Quay: the last path segment is the secret.
pub fn path(secret: &Secret, given: Option<&str>) -> Result<(), Rejected> {
    let given = given
        .filter(|g| !g.is_empty())
        .ok_or(Rejected::NoPathSecret)?;
    if same(given.as_bytes(), secret.expose()) {
        Ok(())
    } else {
        Err(Rejected::WrongPathSecret)
    }
}

/// How a source's sender is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// The `Authorization` header; `bearer`: `Bearer <secret>` accepted too.
    Authorization { bearer: bool },
    /// GitHub's HMAC signature of the body.
    Signature,
    /// The secret as the path's last segment.
    Path,
}

pub fn scheme(origin: Origin) -> Scheme {
    match origin {
        // The contract: distribution takes the secret or `Bearer <secret>`
        // (its config example sends `Bearer …`); Harbor's "Auth Header" and
        // ECR's API-key connection send the value as configured.
        Origin::Distribution => Scheme::Authorization { bearer: true },
        Origin::Harbor | Origin::Ecr | Origin::PubSub => Scheme::Authorization { bearer: false },
        Origin::Github => Scheme::Signature,
        Origin::Dockerhub | Origin::Quay => Scheme::Path,
    }
}

/// The secrets directory. Each request reads its source's file again when
/// the file changed (a mounted Secret is updated in place, by a symlink
/// swap): one `stat` per request, a read only after a change.
pub struct Secrets {
    dir: PathBuf,
    cache: Mutex<Vec<(Origin, Stamp, Option<Secret>)>>,
}

/// What tells a changed file: the file behind the symlinks, its size and time.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

/// A secret file that exists but cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("the secret file of {sender} cannot be read: {error}")]
pub struct Unreadable {
    pub sender: &'static str,
    pub error: String,
}

impl Secrets {
    pub fn new(dir: impl Into<PathBuf>) -> Secrets {
        Secrets {
            dir: dir.into(),
            cache: Mutex::new(Vec::new()),
        }
    }

    /// `origin`'s secret now; `None`: the source is disabled. Blocking,
    /// but only a `stat` (and, after a change, a read of ≤ 4 KiB) of a
    /// local file.
    pub fn get(&self, origin: Origin) -> Result<Option<Secret>, Unreadable> {
        use std::os::unix::fs::MetadataExt as _;
        let path = self.dir.join(origin.label());
        let unreadable = |e: std::io::Error| Unreadable {
            sender: origin.label(),
            error: e.kind().to_string(),
        };
        let meta = match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => m,
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(unreadable(e)),
        };
        let stamp = Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, s, secret)) = cache.iter().find(|(o, _, _)| *o == origin)
            && *s == stamp
        {
            return Ok(secret.clone());
        }
        let mut raw = Vec::new();
        std::fs::File::open(&path)
            .and_then(|f| f.take(MAX_SECRET_BYTES).read_to_end(&mut raw))
            .map_err(unreadable)?;
        let secret = Secret::new(&raw);
        cache.retain(|(o, _, _)| *o != origin);
        cache.push((origin, stamp, secret.clone()));
        Ok(secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> Secret {
        Secret::new(s.as_bytes()).unwrap()
    }

    fn sign(key: &str, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn a_secret_is_trimmed_and_never_empty() {
        assert_eq!(Secret::new(b"  s3cret\n").unwrap().expose(), b"s3cret");
        assert_eq!(Secret::new(b"s3cret\r\n").unwrap().expose(), b"s3cret");
        assert!(Secret::new(b" \n").is_none());
        assert!(Secret::new(b"").is_none());
        assert_eq!(format!("{:?}", secret("s3cret")), "Secret(…)");
    }

    #[test]
    fn the_authorization_header() {
        use Rejected::*;
        let s = secret("s3cret");
        let cases: [(Option<&str>, bool, Result<(), Rejected>); 10] = [
            (Some("s3cret"), false, Ok(())),
            (Some("s3cret"), true, Ok(())),
            (Some("Bearer s3cret"), true, Ok(())),
            (Some("bearer s3cret"), true, Ok(())),
            (Some("Bearer s3cret"), false, Err(WrongAuthorization)),
            (Some("Bearer wrong"), true, Err(WrongAuthorization)),
            (Some("s3cret2"), true, Err(WrongAuthorization)),
            (Some(""), true, Err(WrongAuthorization)),
            (Some("Bearer "), true, Err(WrongAuthorization)),
            (None, true, Err(NoAuthorization)),
        ];
        for (header, bearer, want) in cases {
            assert_eq!(
                authorization(&s, header.map(str::as_bytes), bearer),
                want,
                "{header:?} {bearer}"
            );
        }
    }

    #[test]
    fn githubs_signature() {
        use Rejected::*;
        let s = secret("It's a Secret to Everybody");
        let body = b"Hello, World!";
        // GitHub's own worked example (docs/webhooks.md).
        let theirs = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign("It's a Secret to Everybody", body), theirs);
        let other_body = sign("It's a Secret to Everybody", b"Hello, World?");
        let other_key = sign("another", body);
        let upper = theirs.to_uppercase().replace("SHA256=", "sha256=");
        type Case<'a> = (Option<&'a str>, Option<&'a str>, Result<(), Rejected>);
        let cases: Vec<Case> = vec![
            (Some(theirs), None, Ok(())),
            (Some(&upper), None, Ok(())),
            (Some(&other_body), None, Err(WrongSignature)),
            (Some(&other_key), None, Err(WrongSignature)),
            (None, Some("sha1=0123"), Err(Sha1Only)),
            (None, None, Err(NoSignature)),
            (
                Some("sha1=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"),
                None,
                Err(MalformedSignature),
            ),
            (Some("sha256=zz"), None, Err(MalformedSignature)),
            (Some("sha256=757107ea"), None, Err(MalformedSignature)),
            (Some(""), None, Err(MalformedSignature)),
        ];
        for (sig256, sig1, want) in cases {
            assert_eq!(
                github(&s, sig256.map(str::as_bytes), sig1.map(str::as_bytes), body),
                want,
                "{sig256:?} {sig1:?}"
            );
        }
    }

    #[test]
    fn the_path_secret() {
        let s = secret("abc123");
        assert_eq!(path(&s, Some("abc123")), Ok(()));
        assert_eq!(path(&s, Some("abc124")), Err(Rejected::WrongPathSecret));
        assert_eq!(path(&s, Some("abc1234")), Err(Rejected::WrongPathSecret));
        assert_eq!(path(&s, Some("")), Err(Rejected::NoPathSecret));
        assert_eq!(path(&s, None), Err(Rejected::NoPathSecret));
    }

    #[test]
    fn the_directory_is_read_again_when_a_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = Secrets::new(dir.path());
        assert_eq!(secrets.get(Origin::Harbor).unwrap(), None);
        std::fs::write(dir.path().join("harbor"), "one\n").unwrap();
        assert_eq!(secrets.get(Origin::Harbor).unwrap(), Some(secret("one")));
        assert_eq!(secrets.get(Origin::Github).unwrap(), None);
        // As kubelet updates a Secret volume: a new file, swapped in.
        std::fs::write(dir.path().join("harbor.new"), "two-longer").unwrap();
        std::fs::rename(dir.path().join("harbor.new"), dir.path().join("harbor")).unwrap();
        assert_eq!(
            secrets.get(Origin::Harbor).unwrap(),
            Some(secret("two-longer"))
        );
        std::fs::write(dir.path().join("harbor"), "\n").unwrap();
        assert_eq!(secrets.get(Origin::Harbor).unwrap(), None);
        std::fs::remove_file(dir.path().join("harbor")).unwrap();
        assert_eq!(secrets.get(Origin::Harbor).unwrap(), None);
        // A directory by the source's name is not a secret.
        std::fs::create_dir(dir.path().join("quay")).unwrap();
        assert_eq!(secrets.get(Origin::Quay).unwrap(), None);
    }
}
