//! Connection hygiene of `serve`: connections that never
//! start a request are closed after the header-read timeout, kept-alive ones
//! after the idle timeout but never with a request in flight, and at most
//! `--max-connections` are open at once.

use std::time::{Duration, Instant};

use crate::support::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The HTTP/2 client preface and an empty SETTINGS frame, and nothing after.
const H2_PREFACE_AND_SETTINGS: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// Reads `stream` until the server closes it (EOF or reset): when, or
/// `None` if it is still open after `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Instant> {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return Instant::now(),
                // An HTTP/2 server's SETTINGS, say: not a close.
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

/// Sends `request` on a kept-alive HTTP/1.1 connection and reads one
/// response: its status and body.
async fn exchange(stream: &mut TcpStream, request: &[u8]) -> (u16, String) {
    stream.write_all(request).await.unwrap();
    read_response(stream).await
}

async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut buf).await.expect("reading a response");
        assert!(
            n > 0,
            "the connection closed before a response: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
    let status = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .expect("a content-length");
    while got.len() < head_end + length {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "the connection closed mid-body");
        got.extend_from_slice(&buf[..n]);
    }
    let body = String::from_utf8_lossy(&got[head_end..head_end + length]).into_owned();
    (status, body)
}

const GET_HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: pushroll\r\n\r\n";

/// Descriptors the process holds open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_preface_only_connections_are_closed_after_the_header_timeout() {
    let p = Pushroll::demo(&["--header-read-timeout", "1s", "--idle-timeout", "3s"]);
    let mut pending = Vec::new();
    for _ in 0..100 {
        let stream = TcpStream::connect(p.addr).await.unwrap();
        pending.push((Instant::now(), stream));
    }
    for _ in 0..50 {
        let mut stream = TcpStream::connect(p.addr).await.unwrap();
        stream.write_all(H2_PREFACE_AND_SETTINGS).await.unwrap();
        pending.push((Instant::now(), stream));
    }
    // The header timeout plus a generous margin for a busy 2-core machine.
    let limit = Duration::from_secs(5);
    let closes = futures::future::join_all(
        pending
            .into_iter()
            .map(|(opened, mut s)| async move { (opened, closed_within(&mut s, limit).await) }),
    )
    .await;
    for (i, (opened, closed)) in closes.iter().enumerate() {
        let kind = if i < 100 { "silent" } else { "h2 preface only" };
        let closed =
            closed.unwrap_or_else(|| panic!("{kind} connection {i} still open after {limit:?}"));
        let after = closed - *opened;
        // Closed by the timer, not refused at once.
        assert!(
            after >= Duration::from_millis(900),
            "{kind} connection {i} closed after {after:?}"
        );
    }
    let text = p.metrics().await;
    assert!(
        metric(
            &text,
            "pushroll_connection_timeouts_total{reason=\"header\"}"
        ) >= 150.0,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_outlives_the_header_timeout_and_closes_after_the_idle_timeout() {
    let p = Pushroll::demo(&["--header-read-timeout", "1s", "--idle-timeout", "3s"]);
    let mut stream = TcpStream::connect(p.addr).await.unwrap();
    assert_eq!(exchange(&mut stream, GET_HEALTHZ).await.0, 200);
    // Idle for longer than the header timeout: nothing comes, not even a close.
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_millis(1500), stream.read(&mut buf)).await;
    assert!(
        read.is_err(),
        "the idle connection was closed or sent data: {read:?}"
    );
    // And it still serves.
    assert_eq!(exchange(&mut stream, GET_HEALTHZ).await.0, 200);
    let answered = Instant::now();
    let closed = closed_within(&mut stream, Duration::from_secs(6))
        .await
        .expect("closed after the idle timeout");
    let after = closed - answered;
    assert!(
        after >= Duration::from_millis(2800),
        "closed {after:?} after its last request, before the 3s idle timeout"
    );
    let text = p.metrics().await;
    assert!(
        metric(&text, "pushroll_connection_timeouts_total{reason=\"idle\"}") >= 1.0,
        "{text}"
    );
}

/// The push body is sent slowly, over twice the idle timeout: the handler
/// is running (reading it under `--request-timeout`), so the request is in
/// flight, and the connection must not be cut under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_longer_than_the_idle_timeout_is_not_cut() {
    let p = Pushroll::demo(&["--header-read-timeout", "1s", "--idle-timeout", "2s"]);
    let mut stream = TcpStream::connect(p.addr).await.unwrap();
    assert_eq!(exchange(&mut stream, GET_HEALTHZ).await.0, 200);
    let body = insert(REPO, "v1.4", DIGEST);
    let head = format!(
        "POST /push HTTP/1.1\r\nhost: pushroll\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let chunks: Vec<&[u8]> = body.as_bytes().chunks(body.len().div_ceil(10)).collect();
    for chunk in chunks {
        // The pace is the point of the test, not a wait for readiness.
        tokio::time::sleep(Duration::from_millis(450)).await;
        stream.write_all(chunk).await.unwrap();
    }
    let (status, body) = read_response(&mut stream).await;
    assert!(started.elapsed() > Duration::from_secs(4), "sent too fast");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"outcome\":\"dry-run\""), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_max_connections_the_extra_ones_are_refused_and_counted_then_accepted_again() {
    // Timeouts far beyond the test: only the cap closes anything here.
    let p = Pushroll::demo(&[
        "--max-connections",
        "20",
        "--header-read-timeout",
        "60s",
        "--idle-timeout",
        "120s",
    ]);
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut stream = TcpStream::connect(p.addr).await.unwrap();
        assert_eq!(exchange(&mut stream, GET_HEALTHZ).await.0, 200);
        held.push(stream);
    }
    let mut extra = Vec::new();
    for _ in 0..10 {
        extra.push(TcpStream::connect(p.addr).await.unwrap());
    }
    let closes = futures::future::join_all(
        extra
            .iter_mut()
            .map(|s| closed_within(s, Duration::from_secs(3))),
    )
    .await;
    let refused = closes.iter().filter(|c| c.is_some()).count();
    assert_eq!(refused, 10, "connections past the cap closed at once");
    // The held ones were not touched.
    for stream in &mut held[..] {
        assert_eq!(exchange(stream, GET_HEALTHZ).await.0, 200);
    }
    // Once some close, new ones are served again.
    held.truncate(15);
    let served = eventually(Duration::from_secs(5), || async {
        let mut s = TcpStream::connect(p.addr).await.ok()?;
        s.write_all(GET_HEALTHZ).await.ok()?;
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await.ok()?;
        buf.starts_with(b"HTTP/1.1 200").then_some(())
    })
    .await;
    assert!(served.is_some(), "no connection accepted after 5 closed");
    let text = p.metrics().await;
    assert!(
        metric(&text, "pushroll_connections_refused_total") >= 10.0,
        "{text}"
    );
    let open = metric(&text, "pushroll_connections_open");
    assert!((15.0..=20.0).contains(&open), "open: {open}\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptors_stay_near_the_cap_when_far_more_connections_arrive() {
    let cap = 50;
    let p = Pushroll::demo(&[
        "--max-connections",
        &cap.to_string(),
        "--header-read-timeout",
        "60s",
        "--idle-timeout",
        "120s",
    ]);
    let pid = p.pid();
    let before = open_fds(pid);
    let mut streams = Vec::new();
    let mut most = before;
    for i in 0..600 {
        streams.push(TcpStream::connect(p.addr).await.unwrap());
        if i % 10 == 0 {
            most = most.max(open_fds(pid));
        }
    }
    // All but the cap are refused, and the count settles there.
    let closes = futures::future::join_all(
        streams
            .iter_mut()
            .map(|s| closed_within(s, Duration::from_secs(3))),
    )
    .await;
    let refused = closes.iter().filter(|c| c.is_some()).count();
    assert_eq!(refused, 600 - cap, "refused");
    // Measured while the accepted ones are still held open.
    let after = open_fds(pid);
    most = most.max(after);
    drop(streams);
    assert!(
        most <= before + cap + 10,
        "{most} descriptors open at most ({before} before, cap {cap})"
    );
}

/// The drain waits for requests, not for connections that have none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_does_not_wait_for_idle_or_silent_connections() {
    let mut p = Pushroll::demo(&[
        "--header-read-timeout",
        "60s",
        "--idle-timeout",
        "120s",
        "--shutdown-timeout",
        "20s",
    ]);
    let _silent = TcpStream::connect(p.addr).await.unwrap();
    let mut preface = TcpStream::connect(p.addr).await.unwrap();
    preface.write_all(H2_PREFACE_AND_SETTINGS).await.unwrap();
    let mut kept = TcpStream::connect(p.addr).await.unwrap();
    assert_eq!(exchange(&mut kept, GET_HEALTHZ).await.0, 200);
    p.terminate();
    let status = p
        .wait_exit(Duration::from_secs(5))
        .expect("exited well before --shutdown-timeout");
    assert!(status.success(), "{status:?}");
    // The reader thread may still be on the last lines of the exited process.
    let drained = p
        .log_line(Duration::from_secs(5), |l| {
            l.contains("all requests finished")
        })
        .await;
    assert!(drained.is_some(), "{:?}", p.logs());
}
