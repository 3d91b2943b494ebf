//! The real Pub/Sub emulator as a child process: found through `gcloud`
//! (asked once per test binary), started on a free port of 127.0.0.1,
//! ready when `GET /` answers `Ok`, driven through its REST API, and
//! stopped by its PID when dropped (SIGTERM, then SIGKILL; and the kernel
//! kills it if the test process dies first: `PR_SET_PDEATHSIG`).
//!
//! Dead streams (emulator 0.8.x, checked here and in its bytecode): a
//! StreamingPull whose client is gone stays served. The emulator ends a
//! stream's push loop only when the client half-closes it, or when the
//! subscription stops being a pull one (deleted, detached, given a push
//! endpoint); a cancel (RST_STREAM, a closed connection: SIGKILL, or the
//! client library's own shutdown on SIGTERM) never reaches it (the
//! emulator logs a `NoSuchMethodError` there). The dead stream keeps taking
//! whatever is available every 50 ms and holds it for another ack deadline
//! (10 s), again and again. So after a pushroll process is gone, a REST
//! pull sees nothing (40 s watched, after a SIGKILL with a message in
//! hand, and after a clean SIGTERM followed by a publish), and a new stream
//! gets the message only at an expiry where it wins the race (10 s, 20 s
//! …). "Nothing left unacked" is therefore read by
//! [`Emulator::unacked_within`], which first gives the subscription a push
//! endpoint (ending every stream within 50 ms) and records what is then
//! pushed: the SIGKILLed message arrived after 10.0-10.1 s, the one eaten
//! by a dead stream after its lease, and nothing after a clean drain.
//!
//! Absent emulator: [`Emulator::start`] prints `SKIPPED: …` and returns
//! `None`, unless `PUSHROLL_REQUIRE_EMULATOR=1` (set by `.ci/run`), where
//! it panics.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// How long the JVM may take to answer `GET /` (about 1 s when idle; much
/// more on a loaded 2-core machine).
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// How long [`Emulator::assert_all_acked`] pulls. An unacked message is
/// handed out within a few hundred ms of the switch to pull.
pub const ACK_CHECK_WINDOW: Duration = Duration::from_secs(3);

/// How long [`Emulator::unacked_within`] watches: an unacked message is
/// pushed once the lease its last stream got has run out (the stream's ack
/// deadline, 10 s; pushroll's client renews 10 s at a time), and the push
/// loop then hands it out at once.
pub const REDELIVERY_WINDOW: Duration = Duration::from_secs(13);

pub struct Emulator {
    child: Child,
    pub base: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
    log: PathBuf,
    port: u16,
}

/// Starts the emulator's JVM on `port`, its output in `dir`.
fn spawn(bin: &std::path::Path, port: u16, dir: &std::path::Path) -> Child {
    let mut cmd = Command::new(bin);
    cmd.arg("--host=127.0.0.1")
        .arg(format!("--port={port}"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("emulator.log")).unwrap())
        .stderr(std::fs::File::create(dir.join("emulator.err")).unwrap());
    // The launcher script execs java, so the child's PID is the JVM's.
    // If this test process dies without dropping us (SIGKILL, a CI
    // timeout), the kernel kills the JVM too.
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt as _;
        // SAFETY: prctl is async-signal-safe; nothing else runs
        // between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    cmd.spawn().expect("spawning the Pub/Sub emulator")
}

/// `PUSHROLL_EMULATOR_BIN`, else `<gcloud sdk root>/platform/pubsub-emulator/bin/cloud-pubsub-emulator`;
/// `Err(why)` when there is none. `gcloud info` takes about a second, so
/// it runs once per test binary.
fn binary() -> Result<PathBuf, String> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("PUSHROLL_EMULATOR_BIN") {
            let bin = PathBuf::from(bin);
            return if bin.is_file() {
                Ok(bin)
            } else {
                Err(format!(
                    "PUSHROLL_EMULATOR_BIN={} is not a file",
                    bin.display()
                ))
            };
        }
        let out = Command::new("gcloud")
            .args(["info", "--format=value(installation.sdk_root)"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map_err(|e| format!("gcloud is not runnable ({e})"))?;
        let root = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !out.status.success() || root.is_empty() {
            return Err("`gcloud info` did not name an SDK root".into());
        }
        let bin = PathBuf::from(root).join("platform/pubsub-emulator/bin/cloud-pubsub-emulator");
        if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!(
                "{} is missing (gcloud components install pubsub-emulator)",
                bin.display()
            ))
        }
    })
    .clone()
}

impl Emulator {
    /// Starts an emulator and waits until it is ready; `None` (after
    /// printing `SKIPPED: …`) when it is not installed.
    pub async fn start() -> Option<Emulator> {
        let bin = match binary() {
            Ok(bin) => bin,
            Err(why) => {
                assert!(
                    std::env::var("PUSHROLL_REQUIRE_EMULATOR").as_deref() != Ok("1"),
                    "PUSHROLL_REQUIRE_EMULATOR=1 but the Pub/Sub emulator is not available: {why}"
                );
                eprintln!("SKIPPED: no Pub/Sub emulator: {why}");
                return None;
            }
        };
        // A port taken between our probe and the JVM's bind makes the JVM
        // exit: try a few ports.
        let mut last = String::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let port = crate::support::free_port();
            let log = dir.path().join("emulator.log");
            let mut emulator = Emulator {
                child: spawn(&bin, port, dir.path()),
                base: format!("http://127.0.0.1:{port}"),
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap(),
                _dir: dir,
                log,
                port,
            };
            match emulator.wait_ready().await {
                Ok(took) => {
                    eprintln!(
                        "pubsub emulator pid {} ready on {} in {took:?}",
                        emulator.pid(),
                        emulator.base
                    );
                    return Some(emulator);
                }
                Err(true) => last = emulator.output(),
                Err(false) => panic!(
                    "the Pub/Sub emulator was not ready after {READY_TIMEOUT:?}:\n{}",
                    emulator.output()
                ),
            }
        }
        panic!("the Pub/Sub emulator exited at start three times:\n{last}")
    }

    /// `Ok(startup time)`, or `Err(true)` when the process exited,
    /// `Err(false)` on timeout.
    async fn wait_ready(&mut self) -> Result<Duration, bool> {
        let started = Instant::now();
        let probe = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        while started.elapsed() < READY_TIMEOUT {
            if let Ok(r) = probe.get(format!("{}/", self.base)).send().await
                && r.status().is_success()
                && r.text().await.is_ok_and(|t| t.trim() == "Ok")
            {
                return Ok(started.elapsed());
            }
            if self.child.try_wait().unwrap().is_some() {
                return Err(true);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(false)
    }

    /// `host:port`, as `PUBSUB_EMULATOR_HOST` names it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the emulator (SIGTERM, then SIGKILL): its state is gone.
    pub fn stop(&mut self) {
        let pid = self.child.id();
        if self.child.try_wait().ok().flatten().is_none() {
            // SAFETY: kill(2) on our own child's PID, which `child` still
            // holds (not reaped), so it cannot have been reused.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if self.child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }

    /// Starts a stopped emulator again on its port (empty: topics and
    /// subscriptions must be created again), and waits until it is ready.
    pub async fn restart(&mut self) {
        let bin = binary().expect("the emulator ran before");
        for _ in 0..20 {
            self.child = spawn(&bin, self.port, self.log.parent().unwrap());
            match self.wait_ready().await {
                Ok(_) => return,
                // The port may linger a moment after the old JVM.
                Err(true) => tokio::time::sleep(Duration::from_millis(250)).await,
                Err(false) => panic!("the emulator did not come back:\n{}", self.output()),
            }
        }
        panic!(
            "the emulator could not restart on its port:\n{}",
            self.output()
        );
    }

    /// A pull subscription of `topic` (as `gcloud pubsub subscriptions
    /// create … --ack-deadline=N` makes one).
    pub async fn create_pull_subscription(
        &self,
        project: &str,
        subscription: &str,
        topic: &str,
        ack_deadline_seconds: u32,
    ) {
        self.call(
            reqwest::Method::PUT,
            &format!("/v1/projects/{project}/subscriptions/{subscription}"),
            Some(json!({
                "topic": format!("projects/{project}/topics/{topic}"),
                "ackDeadlineSeconds": ack_deadline_seconds,
            })),
        )
        .await;
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The emulator's own output, for failure messages.
    pub fn output(&self) -> String {
        let tail = |p: PathBuf| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        format!(
            "{}\n{}",
            tail(self.log.clone()),
            tail(self.log.with_file_name("emulator.err"))
        )
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(b) = &body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(
            status.is_success(),
            "{method} {path} {body:?} -> {status}: {text}"
        );
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// `PUT /v1/projects/P/topics/T`.
    pub async fn create_topic(&self, project: &str, topic: &str) {
        self.call(
            reqwest::Method::PUT,
            &format!("/v1/projects/{project}/topics/{topic}"),
            Some(json!({})),
        )
        .await;
    }

    /// A push subscription of `topic` to `endpoint`. `no_wrapper`:
    /// `Some(write_metadata)` for an unwrapped one.
    pub async fn create_push_subscription(
        &self,
        project: &str,
        subscription: &str,
        topic: &str,
        endpoint: &str,
        no_wrapper: Option<bool>,
        ack_deadline_seconds: u32,
    ) -> Value {
        let mut push = json!({"pushEndpoint": endpoint});
        if let Some(write_metadata) = no_wrapper {
            push["noWrapper"] = json!({"writeMetadata": write_metadata});
        }
        self.call(
            reqwest::Method::PUT,
            &format!("/v1/projects/{project}/subscriptions/{subscription}"),
            Some(json!({
                "topic": format!("projects/{project}/topics/{topic}"),
                "pushConfig": push,
                "ackDeadlineSeconds": ack_deadline_seconds,
            })),
        )
        .await
    }

    /// Publishes one message; returns its message id.
    pub async fn publish(
        &self,
        project: &str,
        topic: &str,
        data: &str,
        attributes: Value,
    ) -> String {
        let body = json!({"messages": [{
            "data": base64::engine::general_purpose::STANDARD.encode(data),
            "attributes": attributes,
        }]});
        let out = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/projects/{project}/topics/{topic}:publish"),
                Some(body),
            )
            .await;
        out["messageIds"][0]
            .as_str()
            .unwrap_or_else(|| panic!("publish answered {out}"))
            .to_owned()
    }

    /// Turns a push subscription into a pull one (an empty `pushConfig`),
    /// so that what it still holds can be pulled.
    pub async fn stop_pushing(&self, project: &str, subscription: &str) {
        self.call(
            reqwest::Method::POST,
            &format!("/v1/projects/{project}/subscriptions/{subscription}:modifyPushConfig"),
            Some(json!({"pushConfig": {}})),
        )
        .await;
    }

    /// Ends every StreamingPull stream the emulator serves for a pull
    /// subscription, dead ones included, as real Pub/Sub ends a crashed
    /// client's stream: a push endpoint given and taken back (see "Dead
    /// streams" above). A message the endpoint was offered meanwhile stays
    /// unacked and is handed out again.
    pub async fn end_streams(&self, project: &str, subscription: &str) {
        self.call(
            reqwest::Method::POST,
            &format!("/v1/projects/{project}/subscriptions/{subscription}:modifyPushConfig"),
            Some(json!({"pushConfig": {"pushEndpoint": "http://127.0.0.1:9/none"}})),
        )
        .await;
        self.stop_pushing(project, subscription).await;
    }

    /// The messages a pull subscription hands out within `window` (polled
    /// with `returnImmediately`): what was never acked.
    pub async fn pull_within(
        &self,
        project: &str,
        subscription: &str,
        window: Duration,
    ) -> Vec<Value> {
        let deadline = Instant::now() + window;
        let mut got = Vec::new();
        while Instant::now() < deadline {
            let out = self
                .call(
                    reqwest::Method::POST,
                    &format!("/v1/projects/{project}/subscriptions/{subscription}:pull"),
                    Some(json!({"maxMessages": 100, "returnImmediately": true})),
                )
                .await;
            if let Some(msgs) = out["receivedMessages"].as_array() {
                got.extend(msgs.iter().cloned());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        got
    }

    /// What the pull subscriptions (full names) still hold
    /// unacknowledged, as pushed to a recorder within `window`: message ids
    /// per subscription, each with when it arrived (since the switch).
    /// Giving each subscription a push endpoint ends every stream the
    /// emulator still serves for it, dead ones included (see "Dead
    /// streams" above), and an unacked message is pushed once its lease
    /// runs out (at most [`REDELIVERY_WINDOW`]).
    pub async fn unacked_within(
        &self,
        subscriptions: &[String],
        window: Duration,
    ) -> BTreeMap<String, Vec<(String, Duration)>> {
        type Seen = Arc<Mutex<BTreeMap<String, Vec<(String, Duration)>>>>;
        let seen: Seen = Arc::default();
        let started = Instant::now();
        let names: Arc<Vec<String>> = Arc::new(subscriptions.to_vec());
        let record = {
            let (seen, names) = (seen.clone(), names.clone());
            move |uri: axum::http::Uri, body: axum::body::Bytes| {
                let (seen, names) = (seen.clone(), names.clone());
                async move {
                    let id = serde_json::from_slice::<Value>(&body)
                        .ok()
                        .and_then(|v| v["message"]["messageId"].as_str().map(str::to_owned))
                        .unwrap_or_else(|| "?".into());
                    let sub = uri
                        .path()
                        .trim_start_matches('/')
                        .parse::<usize>()
                        .ok()
                        .and_then(|i| names.get(i).cloned())
                        .unwrap_or_else(|| uri.to_string());
                    seen.lock()
                        .unwrap()
                        .entry(sub)
                        .or_default()
                        .push((id, started.elapsed()));
                    // Acked: each one is seen once.
                    axum::http::StatusCode::OK
                }
            }
        };
        let (addr, _stop) = crate::support::serve_local(axum::Router::new().fallback(record)).await;
        for (i, sub) in subscriptions.iter().enumerate() {
            self.call(
                reqwest::Method::POST,
                &format!("/v1/{sub}:modifyPushConfig"),
                Some(json!({"pushConfig": {"pushEndpoint": format!("http://{addr}/{i}")}})),
            )
            .await;
        }
        // The whole window is watched: nothing may arrive in it.
        tokio::time::sleep_until((started + window).into()).await;
        seen.lock().unwrap().clone()
    }

    /// Checks that a push subscription holds no unacknowledged message: it
    /// stops pushing and pulls for a while (no stream ever served it, so
    /// nothing competes with the pull; for pull subscriptions see
    /// [`Emulator::unacked_within`]). (An unacked message is pullable
    /// within a few hundred ms of the switch; `emulator_finds_unacked` checks
    /// that this method does see one.)
    pub async fn assert_all_acked(&self, project: &str, subscription: &str) {
        self.stop_pushing(project, subscription).await;
        let left = self
            .pull_within(project, subscription, ACK_CHECK_WINDOW)
            .await;
        let ids: Vec<&Value> = left.iter().map(|m| &m["message"]["messageId"]).collect();
        assert!(
            left.is_empty(),
            "{} message(s) left unacknowledged: {ids:?}",
            left.len()
        );
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
    }
}
