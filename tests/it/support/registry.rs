//! Registries for the webhook tests: a fake one (the distribution API's
//! `HEAD /v2/<repo>/manifests/<tag>` behind the anonymous token flow, with
//! counters and an off switch), the real one (Debian's `docker-registry`,
//! CNCF distribution 2.8) as a child process, an OCI layout written here,
//! and `skopeo copy` to push it.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use sha2::{Digest as _, Sha256};

/// The token the fake hands out.
const TOKEN: &str = "anonymous-pull-token";

#[derive(Default)]
pub struct RegistryState {
    /// `repo:tag` → digest.
    pub tags: Mutex<HashMap<String, String>>,
    /// Every manifest HEAD, and those that carried the token.
    pub heads: AtomicUsize,
    pub authorized_heads: AtomicUsize,
    pub tokens: AtomicUsize,
    /// Answers 503 to everything while set.
    pub down: AtomicBool,
    realm: Mutex<String>,
}

/// A fake registry on a loopback port; stops on drop.
pub struct FakeRegistry {
    pub url: String,
    pub state: Arc<RegistryState>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl FakeRegistry {
    pub async fn start() -> FakeRegistry {
        use axum::routing::get;
        let state = Arc::new(RegistryState::default());
        let app = axum::Router::new()
            .route("/v2/{*rest}", get(manifest))
            .route("/token", get(token))
            .with_state(state.clone());
        let (addr, shutdown) = super::serve_local(app).await;
        let url = format!("http://{addr}");
        *state.realm.lock().unwrap() = format!("{url}/token");
        FakeRegistry {
            url,
            state,
            _shutdown: shutdown,
        }
    }

    pub fn tag(&self, repo_tag: &str, digest: &str) {
        self.state
            .tags
            .lock()
            .unwrap()
            .insert(repo_tag.to_owned(), digest.to_owned());
    }

    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    pub fn counts(&self) -> (usize, usize, usize) {
        (
            self.state.heads.load(Ordering::SeqCst),
            self.state.authorized_heads.load(Ordering::SeqCst),
            self.state.tokens.load(Ordering::SeqCst),
        )
    }
}

async fn manifest(State(s): State<Arc<RegistryState>>, uri: Uri, headers: HeaderMap) -> Response {
    s.heads.fetch_add(1, Ordering::SeqCst);
    if s.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let path = uri.path().trim_start_matches("/v2/");
    let Some((repo, tag)) = path.split_once("/manifests/") else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {TOKEN}"))
    {
        let realm = s.realm.lock().unwrap().clone();
        let challenge = format!(
            r#"Bearer realm="{realm}",service="fake-registry",scope="repository:{repo}:pull""#
        );
        return (StatusCode::UNAUTHORIZED, [("www-authenticate", challenge)]).into_response();
    }
    s.authorized_heads.fetch_add(1, Ordering::SeqCst);
    // Every manifest kind must be accepted, or an index would be missed.
    let accept = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    for kind in [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ] {
        if !accept.contains(kind) {
            return StatusCode::NOT_ACCEPTABLE.into_response();
        }
    }
    match s.tags.lock().unwrap().get(&format!("{repo}:{tag}")) {
        Some(digest) => {
            (StatusCode::OK, [("docker-content-digest", digest.clone())]).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn token(
    State(s): State<Arc<RegistryState>>,
    axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
) -> Response {
    s.tokens.fetch_add(1, Ordering::SeqCst);
    if q.get("service").map(String::as_str) != Some("fake-registry")
        || !q.get("scope").is_some_and(|s| s.starts_with("repository:"))
    {
        return StatusCode::BAD_REQUEST.into_response();
    }
    axum::Json(serde_json::json!({"token": TOKEN})).into_response()
}

/// `docker-registry` and `skopeo`, when installed; else a `SKIPPED:` line
/// (a failure under `PUSHROLL_REQUIRE_REGISTRY=1`).
pub fn real_registry_tools() -> bool {
    let found = |bin: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {bin}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if found("docker-registry") && found("skopeo") {
        return true;
    }
    assert!(
        std::env::var("PUSHROLL_REQUIRE_REGISTRY").as_deref() != Ok("1"),
        "PUSHROLL_REQUIRE_REGISTRY=1 but docker-registry or skopeo is missing (apt-get install docker-registry skopeo)"
    );
    eprintln!(
        "SKIPPED: docker-registry or skopeo is not installed (apt-get install docker-registry skopeo)"
    );
    false
}

/// A real CNCF distribution registry, a child process; killed on drop.
pub struct RealRegistry {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

impl RealRegistry {
    /// Starts `docker-registry serve` on `port` with empty storage,
    /// notifying `endpoint` with `Authorization: <authorization>`.
    pub async fn start(endpoint: &str, authorization: &str, port: u16) -> RealRegistry {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            r#"version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
notifications:
  endpoints:
    - name: pushroll
      url: {endpoint}
      headers:
        Authorization: [{authorization}]
      timeout: 2s
      threshold: 3
      backoff: 200ms
"#,
            root = dir.path().join("data").display(),
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = dir.path().join("registry.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawning docker-registry");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let client = super::http();
        let up = super::eventually(Duration::from_secs(20), || async {
            let r = client.get(format!("http://{addr}/v2/")).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
        let registry = RealRegistry {
            child,
            addr,
            _dir: dir,
            log,
        };
        assert!(
            up.is_some(),
            "docker-registry did not start:\n{}",
            registry.log()
        );
        registry
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RealRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Writes an OCI image layout at `dir` with one image whose only layer
/// holds `content` in a file, tagged `tag`. Returns the manifest digest.
pub fn write_oci_layout(dir: &Path, tag: &str, content: &str) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| -> String {
        let digest = sha256(bytes);
        std::fs::write(blobs.join(digest.trim_start_matches("sha256:")), bytes).unwrap();
        digest
    };
    // The layer: a tar of one file, gzipped.
    let mut tar = Vec::new();
    let mut header = [0u8; 512];
    let name = b"hello.txt";
    header[..name.len()].copy_from_slice(name);
    header[100..107].copy_from_slice(b"0000644");
    header[108..115].copy_from_slice(b"0000000");
    header[116..123].copy_from_slice(b"0000000");
    header[124..135].copy_from_slice(format!("{:011o}", content.len()).as_bytes());
    header[136..147].copy_from_slice(b"00000000000");
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    tar.extend_from_slice(&header);
    tar.extend_from_slice(content.as_bytes());
    tar.resize(tar.len().div_ceil(512) * 512, 0);
    tar.extend_from_slice(&[0u8; 1024]);
    let diff_id = sha256(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    let layer = gz.finish().unwrap();
    let layer_digest = put(&layer);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]}
    })
    .to_string();
    let config_digest = put(config.as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest, "size": layer.len()}]
    })
    .to_string();
    let manifest_digest = put(manifest.as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": manifest_digest, "size": manifest.len(),
                       "annotations": {"org.opencontainers.image.ref.name": tag}}]
    });
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    manifest_digest
}

/// `skopeo copy oci:DIR:TAG docker://DEST` to a plain-HTTP registry.
pub fn skopeo_copy(dir: &Path, tag: &str, dest: &str) {
    let out = Command::new("skopeo")
        .args([
            "copy",
            "--dest-tls-verify=false",
            "--quiet",
            &format!("oci:{}:{tag}", dir.display()),
            &format!("docker://{dest}"),
        ])
        .output()
        .expect("running skopeo");
    assert!(
        out.status.success(),
        "skopeo copy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
