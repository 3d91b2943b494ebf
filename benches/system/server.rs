//! The `pushroll` binary (release under `cargo bench`) as production runs
//! it, and its startup: spawn → "listening" → `/readyz` 200, with its
//! memory once ready.
//!
//! Not the tests' `support::Pushroll`: that one logs at debug and keeps
//! every line for assertions, which would weigh on what is measured here.

use std::io::{BufRead as _, BufReader, Read as _};
use std::net::SocketAddr;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::cluster::Cluster;
use crate::common;
use crate::stats::{Stats, stats};
use crate::support::{self, AUDIENCE, EMAIL, SUBSCRIPTION};

/// A `pushroll serve` process; killed on drop.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts the binary as production would run it (JSON logs at info,
    /// `--auth google`, the index file, the ConfigMap fallback) and waits
    /// for its "listening" line.
    fn start(cluster: &Cluster, jwks_url: &str, extra: &[String]) -> Server {
        let mut child = command(cluster, jwks_url, extra)
            .spawn()
            .expect("spawning pushroll");
        let listening = listening_addr(child.stderr.take().unwrap());
        match listening.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(addr)) => Server {
                child,
                addr: addr.parse().unwrap(),
            },
            other => {
                let _ = child.kill();
                panic!("pushroll did not start: {other:?}");
            }
        }
    }

    /// `(VmRSS, VmHWM)` in KiB.
    pub fn rss_kib(&self) -> (u64, u64) {
        let field = |name| support::proc_status_kib(self.child.id(), name).unwrap_or(0);
        (field("VmRSS"), field("VmHWM"))
    }
}

/// `pushroll serve` against `cluster`, verifying tokens with the keys at
/// `jwks_url`; `extra` flags last.
fn command(cluster: &Cluster, jwks_url: &str, extra: &[String]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pushroll"));
    cmd.args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
        .args(["--auth", "google", "--audience", AUDIENCE])
        .args(["--allowed-email", EMAIL, "--jwks-url", jwks_url])
        .args(["--subscription", SUBSCRIPTION])
        .arg("--index-file")
        .arg(&cluster.index_file)
        .args([
            "--index-configmap",
            &format!("{}/{}", common::INDEX_NS, common::INDEX_CM),
        ])
        // Registry webhooks: GitHub's secret, for the HMAC comparison.
        .arg("--webhook-secrets")
        .arg(webhook_secrets())
        .args(extra)
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env("HOME", "/nonexistent")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    support::without_inherited_flags(&mut cmd);
    cmd
}

/// Reads the log on `stderr` until its "listening" line and sends the
/// address from it, or everything logged until the process ended.
fn listening_addr(stderr: ChildStderr) -> std::sync::mpsc::Receiver<Result<String, String>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stderr);
        let mut line = String::new();
        let mut early = Vec::new();
        while lines.read_line(&mut line).unwrap_or(0) > 0 {
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && v["message"] == "listening"
            {
                let _ = tx.send(Ok(v["addr"].as_str().unwrap_or_default().to_owned()));
                // The rest (a line per push) is drained, not kept.
                let _ = std::io::copy(&mut lines, &mut std::io::sink());
                return;
            }
            early.push(std::mem::take(&mut line));
        }
        let _ = tx.send(Err(early.concat()));
    });
    rx
}

/// One blocking `GET path` on a fresh connection; the status code.
fn get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    use std::io::Write as _;
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_nodelay(true).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: pushroll\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

#[derive(Debug, Clone, Serialize)]
pub struct Startup {
    pub listening: Stats,
    pub ready: Stats,
    pub rss_ready_kib: u64,
    pub hwm_ready_kib: u64,
}

/// Starts pushroll `times` times: spawn → "listening" and → `/readyz` 200
/// (index loaded, signing keys fetched), and the RSS when ready. Returns
/// the last server, still running.
pub fn startup(
    cluster: &Cluster,
    jwks_url: &str,
    times: usize,
    extra: &[String],
) -> (Startup, Server) {
    let mut listening = Vec::new();
    let mut ready = Vec::new();
    let mut last = None;
    let mut rss = (0, 0);
    for _ in 0..times {
        drop(last.take());
        let t = Instant::now();
        let server = Server::start(cluster, jwks_url, extra);
        listening.push(t.elapsed().as_nanos() as u64);
        while get_status(server.addr, "/readyz") != Some(200) {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "pushroll never got ready"
            );
            std::thread::sleep(Duration::from_micros(500));
        }
        ready.push(t.elapsed().as_nanos() as u64);
        std::thread::sleep(Duration::from_millis(100));
        rss = server.rss_kib();
        last = Some(server);
    }
    (
        Startup {
            listening: stats(&mut listening),
            ready: stats(&mut ready),
            rss_ready_kib: rss.0,
            hwm_ready_kib: rss.1,
        },
        last.unwrap(),
    )
}

/// The secret `POST /webhooks/github` is signed with in the benches.
pub const GITHUB_SECRET: &str = "bench-github-secret";

/// A directory holding GitHub's webhook secret, for every serve started.
fn webhook_secrets() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pushroll-bench-webhooks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("github"), GITHUB_SECRET).unwrap();
    dir
}
