//! Shared helpers for the end-to-end tests and the benches: the `pushroll`
//! binary as a child process, OIDC tokens signed by test keys, a JWK set
//! served over real HTTP, sample payloads, and a process's memory.
#![allow(dead_code)] // each test binary uses a different part

#[macro_use]
pub mod cluster;
pub mod indexer;
pub mod kubelet;
pub mod openapi;
pub mod registry;
pub mod rig;
pub mod rollout;

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use base64::Engine as _;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

pub const DIGEST: &str = "sha256:6ec128e26cd5e5b3d5ad4ad0b3b1e0b5c5a4a2a8e1f3f6f9d0a7b4c1e2d3f4a5";
pub const DIGEST2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
pub const REPO: &str = "us-east1-docker.pkg.dev/demo-project/apps/web";

/// The audience, push service account and subscription that tests and
/// benches give `serve --auth google`, and sign tokens for.
pub const AUDIENCE: &str = "https://pushroll.example.com/push";
pub const EMAIL: &str = "pubsub-push@demo-project.iam.gserviceaccount.com";
pub const SUBSCRIPTION: &str = "projects/demo-project/subscriptions/gcr-push";

/// Installs the one rustls provider, as `main` does.
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

/// An Artifact Registry INSERT notification for `repo:tag` at `digest`.
pub fn insert(repo: &str, tag: &str, digest: &str) -> String {
    json!({"action": "INSERT", "digest": format!("{repo}@{digest}"), "tag": format!("{repo}:{tag}")}).to_string()
}

/// A wrapped Pub/Sub push envelope around `data`.
pub fn wrapped(data: &str, message_id: &str, subscription: &str) -> String {
    // Published now, as Pub/Sub stamps a message; a redelivery (the same
    // string posted again) keeps its time, as Pub/Sub's does.
    wrapped_at(data, message_id, subscription, jiff::Timestamp::now())
}

/// A wrapped delivery of a message published at `published`.
pub fn wrapped_at(
    data: &str,
    message_id: &str,
    subscription: &str,
    published: jiff::Timestamp,
) -> String {
    let at = published.to_string();
    json!({
        "subscription": subscription,
        "message": {
            "data": base64::engine::general_purpose::STANDARD.encode(data),
            "messageId": message_id, "message_id": message_id,
            "publishTime": at, "publish_time": at,
            "attributes": {"source": "test"}
        }
    })
    .to_string()
}

/// Removes this process's `PUSHROLL_*` variables from `cmd`'s environment:
/// every flag reads one, so a developer's own settings would change what
/// the child does.
pub fn without_inherited_flags(cmd: &mut Command) {
    for (k, _) in std::env::vars() {
        if k.starts_with("PUSHROLL_") {
            cmd.env_remove(k);
        }
    }
}

/// A running `pushroll` process; killed on drop.
pub struct Pushroll {
    child: Child,
    pub addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Pushroll {
    /// Starts `pushroll ARGS…` with `env`, and waits for its "listening" line.
    pub fn start(args: &[&str], env: &[(&str, &Path)]) -> Pushroll {
        Self::start_env(
            args,
            &env.iter()
                .map(|(k, v)| (*k, v.to_string_lossy().into_owned()))
                .collect::<Vec<_>>(),
        )
    }

    pub fn start_env(args: &[&str], env: &[(&str, String)]) -> Pushroll {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pushroll"));
        cmd.args(["--log-format", "json", "--log-level", "info,pushroll=debug"]);
        cmd.args(args);
        // A developer's own cluster config must never leak into tests.
        cmd.env_remove("KUBECONFIG");
        cmd.env("HOME", "/nonexistent");
        for (k, v) in env {
            cmd.env(k, v);
        }
        without_inherited_flags(&mut cmd);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawning pushroll");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["message"] == "listening"
                {
                    let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_owned());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => addr.parse().expect("listening address"),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "pushroll did not start listening:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
        };
        Pushroll { child, addr, logs }
    }

    /// `pushroll serve` on a free loopback port, tokens unchecked
    /// (`--auth none`), against the cluster of `kubeconfig`; `args` follow.
    pub fn serve_open(kubeconfig: &Path, args: &[&str]) -> Pushroll {
        let mut all = vec!["serve", "--listen", "127.0.0.1:0", "--auth", "none"];
        all.extend_from_slice(args);
        Self::start(&all, &[("KUBECONFIG", kubeconfig)])
    }

    /// `pushroll serve --demo` on a free loopback port (the embedded index,
    /// no token check, nothing patched); `extra` flags follow.
    pub fn demo(extra: &[&str]) -> Pushroll {
        let mut args = vec!["serve", "--demo", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        Self::start_env(&args, &[])
    }

    /// `serve --demo` verifying tokens against `jwks` as Google's would be
    /// (the test audience, email and subscription); `extra` flags follow.
    pub fn demo_verifying(jwks: &JwksServer, extra: &[&str]) -> Pushroll {
        let args = [
            "--auth",
            "google",
            "--audience",
            AUDIENCE,
            "--allowed-email",
            EMAIL,
            "--subscription",
            SUBSCRIPTION,
            "--jwks-url",
            &jwks.url,
        ];
        Self::demo(&[&args, extra].concat())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Waits for a log line that `matches`: a response can reach the
    /// client before the line written after it reaches our reader thread.
    pub async fn log_line(
        &self,
        limit: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> Option<String> {
        eventually(limit, || async {
            self.logs().into_iter().find(|l| matches(l))
        })
        .await
    }

    /// Waits up to `limit` for `/readyz` to answer 200.
    pub async fn wait_ready(&self, limit: Duration) {
        let client = http();
        eventually(limit, || async {
            (client.get(self.url("/readyz")).send().await.ok()?.status() == 200).then_some(())
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "pushroll not ready after {limit:?}:\n{}",
                self.logs().join("\n")
            )
        });
    }

    /// The process's `/metrics` text.
    pub async fn metrics(&self) -> String {
        http()
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process at once (SIGKILL): nothing is released.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success());
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `pushroll ARGS…` as a one-shot command: JSON logs, none of this
    /// process's `PUSHROLL_*` or cluster configuration, `env` on top, and
    /// its output piped.
    fn command(args: &[&str], env: &[(&str, String)]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pushroll"));
        cmd.args(["--log-format", "json"]).args(args);
        cmd.env_remove("KUBECONFIG").env("HOME", "/nonexistent");
        cmd.env_remove("KUBERNETES_SERVICE_HOST");
        without_inherited_flags(&mut cmd);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Runs `pushroll ARGS…` to completion; returns (status, stdout, stderr).
    pub fn run(
        args: &[&str],
        env: &[(&str, String)],
    ) -> (std::process::ExitStatus, String, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pushroll"));
        cmd.args(["--log-format", "json"]).args(args);
        cmd.env_remove("KUBECONFIG").env("HOME", "/nonexistent");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("running pushroll");
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Pushroll {
    /// Like [`Pushroll::run`] for a command expected to end by itself, but
    /// with the environment of [`Pushroll::start_env`] (no inherited
    /// `PUSHROLL_*`, no in-cluster configuration) and at most `limit`: a
    /// process still running then is killed and the test fails.
    pub fn run_within(
        args: &[&str],
        env: &[(&str, String)],
        limit: Duration,
    ) -> (std::process::ExitStatus, String, String) {
        let mut cmd = Self::command(args, env);
        let child = cmd.spawn().expect("spawning pushroll");
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(limit) {
            Ok(out) => {
                let out = out.expect("waiting for pushroll");
                (
                    out.status,
                    String::from_utf8_lossy(&out.stdout).into_owned(),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                )
            }
            Err(_) => {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                let out = rx.recv().expect("the killed process is reaped");
                let err = out
                    .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                    .unwrap_or_default();
                panic!("pushroll {args:?} still ran after {limit:?}:\n{err}");
            }
        }
    }
}

impl Pushroll {
    /// Like [`Pushroll::run_within`] (no inherited `PUSHROLL_*`, at most
    /// `limit`), and also returns the child's peak RSS in KiB, from
    /// `wait4`'s rusage of that one process (`RUSAGE_CHILDREN` would mix
    /// in every other test's children).
    pub fn run_peak_rss(
        args: &[&str],
        env: &[(&str, String)],
        limit: Duration,
    ) -> (i32, String, String, u64) {
        use std::io::Read as _;
        let mut cmd = Self::command(args, env);
        let mut child = cmd.spawn().expect("spawning pushroll");
        let pid = child.id() as libc::pid_t;
        let drain = |mut r: Box<dyn std::io::Read + Send>| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = r.read_to_string(&mut s);
                s
            })
        };
        let out = drain(Box::new(child.stdout.take().unwrap()));
        let err = drain(Box::new(child.stderr.take().unwrap()));
        // The peak is the child's own `VmHWM`, read every millisecond until
        // it exits. Not wait4's `ru_maxrss`: the kernel carries the forking
        // process's high-water mark through exec into it, and the forking
        // process is the whole test suite (one binary, tests in parallel),
        // hundreds of MiB that the child never used.
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let sampler = {
            let (done, peak) = (done.clone(), peak.clone());
            std::thread::spawn(move || {
                use std::sync::atomic::Ordering::Relaxed;
                while !done.load(Relaxed) {
                    // Gone once reaped: nothing more to read.
                    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
                        break;
                    };
                    let kib = status
                        .lines()
                        .find_map(|l| l.strip_prefix("VmHWM:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok());
                    if let Some(kib) = kib {
                        peak.fetch_max(kib, Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut status = 0;
            // SAFETY: a zeroed rusage is valid; wait4 fills both out-params.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
            assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                -1
            };
            let _ = tx.send(code);
        });
        let Ok(code) = rx.recv_timeout(limit) else {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("pushroll {args:?} still ran after {limit:?}");
        };
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = sampler.join();
        let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            peak > 0,
            "pushroll {args:?}: no VmHWM was read before it exited"
        );
        // Reaped by wait4: std's Child must not wait for it again.
        std::mem::forget(child);
        (code, out.join().unwrap(), err.join().unwrap(), peak)
    }

    /// The process's resident set (`VmRSS`), in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    /// The process's peak RSS so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM").expect("VmHWM in /proc/PID/status")
    }
}

impl Drop for Pushroll {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A field of `/proc/PID/status` given in kB (`VmRSS`, `VmHWM`), or
/// `None` when the kernel does not report it (a zombie has no `VmRSS`).
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The resident set (`VmRSS`) of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS").expect("VmRSS in /proc/PID/status")
}

/// The value of one series (`name{labels}`) in a metrics text, 0 when absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// A plain HTTP client for the tests.
pub fn http() -> reqwest::Client {
    init();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// POSTs `body` to `/push`; returns the status and the JSON body.
pub async fn post(
    client: &reqwest::Client,
    p: &Pushroll,
    body: impl Into<reqwest::Body>,
) -> (u16, Value) {
    let response = client
        .post(p.url("/push"))
        .body(body)
        .send()
        .await
        .expect("POST /push");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("{status}: body is not JSON: {text:?}"));
    (status, json)
}

/// A test signing key with its `kid`.
pub struct Signer {
    pub kid: String,
    pub key: EncodingKey,
    pub jwk: Jwk,
    pub alg: Algorithm,
}

impl Signer {
    pub fn rsa(pem_file: &str, kid: &str) -> Signer {
        let pem = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data")
                .join(pem_file),
        )
        .unwrap();
        let key = EncodingKey::from_rsa_pem(&pem).unwrap();
        Self::with(key, kid, Algorithm::RS256)
    }

    pub fn ec(kid: &str) -> Signer {
        let pem =
            std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ec.pem")).unwrap();
        let key = EncodingKey::from_ec_pem(&pem).unwrap();
        Self::with(key, kid, Algorithm::ES256)
    }

    fn with(key: EncodingKey, kid: &str, alg: Algorithm) -> Signer {
        let mut jwk = Jwk::from_encoding_key(&key, alg).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        Signer {
            kid: kid.to_owned(),
            key,
            jwk,
            alg,
        }
    }

    /// Signs `claims` with this key, `kid` in the header.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }

    /// Signs with an explicit header.
    pub fn sign_with(&self, header: &Header, claims: &Value) -> String {
        jsonwebtoken::encode(header, claims, &self.key).unwrap()
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims shaped like Google's Pub/Sub push token.
pub fn google_claims(audience: &str, email: &str) -> Value {
    let now = now();
    json!({
        "aud": audience, "azp": "1234567890", "email": email, "email_verified": true,
        "exp": now + 3600, "iat": now, "iss": "https://accounts.google.com", "sub": "1234567890"
    })
}

/// A JWK set served over real HTTP on loopback, with a fetch counter and
/// an off switch.
pub struct JwksServer {
    pub url: String,
    keys: Arc<Mutex<Vec<Jwk>>>,
    fetches: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

/// Serves `app` on a free loopback port until the returned sender is
/// dropped (or sent on).
pub async fn serve_local(app: axum::Router) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    (addr, tx)
}

impl JwksServer {
    pub async fn start(keys: Vec<Jwk>) -> JwksServer {
        use axum::routing::get;
        let keys = Arc::new(Mutex::new(keys));
        let fetches = Arc::new(AtomicUsize::new(0));
        let down = Arc::new(AtomicBool::new(false));
        let (k, f, d) = (keys.clone(), fetches.clone(), down.clone());
        let app = axum::Router::new().route(
            "/certs",
            get(move || {
                let (k, f, d) = (k.clone(), f.clone(), d.clone());
                async move {
                    f.fetch_add(1, Ordering::SeqCst);
                    if d.load(Ordering::SeqCst) {
                        return (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            [("cache-control", "no-store")],
                            String::new(),
                        );
                    }
                    let set = JwkSet {
                        keys: k.lock().unwrap().clone(),
                    };
                    (
                        axum::http::StatusCode::OK,
                        [("cache-control", "public, max-age=3600")],
                        serde_json::to_string(&set).unwrap(),
                    )
                }
            }),
        );
        let (addr, tx) = serve_local(app).await;
        let url = format!("http://{addr}/certs");
        JwksServer {
            url,
            keys,
            fetches,
            down,
            _shutdown: tx,
        }
    }

    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    pub fn set_keys(&self, keys: Vec<Jwk>) {
        *self.keys.lock().unwrap() = keys;
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

/// Polls `check` until it returns `Some`, at most `limit`: a wait on a
/// condition, never a fixed sleep.
pub async fn eventually<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A loopback port free a moment ago, for a process that takes its port
/// only as a flag (the emulator, Prometheus).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
