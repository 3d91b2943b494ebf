//! The load generator for misses: keep-alive connections sending
//! `POST /push` back to back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::client::{Conn, Route, Target, memchr};
use crate::stats::{Stats, stats};

#[derive(Debug, Clone, Serialize)]
pub struct Load {
    pub connections: usize,
    pub requests: usize,
    pub errors: usize,
    pub seconds: f64,
    pub per_second: f64,
    pub latency: Stats,
}

/// The body of push number `i`.
pub type Body = Arc<dyn Fn(u64) -> String + Send + Sync>;

/// Which requests a run sends and counts.
#[derive(Clone, Copy)]
struct Window {
    measured_from: Instant,
    end: Instant,
    max: Option<u64>,
}

impl Window {
    /// Whether request number `i` is one too many.
    fn over(&self, i: u64) -> bool {
        self.max.is_some_and(|m| i >= m) || (self.max.is_none() && Instant::now() >= self.end)
    }

    /// Whether a request sent at `sent` counts.
    fn counts(&self, sent: Instant) -> bool {
        sent >= self.measured_from || self.max.is_some()
    }
}

/// A load generator: `conns` HTTP/1.1 keep-alive connections, each sending
/// `POST /push` back to back; requests that start during `warmup` are not
/// counted. Stops after `warmup + measure`, or after `max` requests. Each
/// answer must be a 200 holding `expect`.
pub async fn load(
    target: &Target,
    conns: usize,
    warmup: Duration,
    measure: Duration,
    max: Option<u64>,
    body: Body,
    expect: &'static str,
) -> Load {
    let route = Route::Push(target.authorization());
    load_route(target, &route, conns, warmup, measure, max, body, expect).await
}

/// As [`load`], sending `route`'s requests.
#[allow(clippy::too_many_arguments)]
pub async fn load_route(
    target: &Target,
    route: &Route,
    conns: usize,
    warmup: Duration,
    measure: Duration,
    max: Option<u64>,
    body: Body,
    expect: &'static str,
) -> Load {
    let seq = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let measured_from = start + warmup;
    let window = Window {
        measured_from,
        end: measured_from + measure,
        max,
    };
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (seq, body, auth) = (seq.clone(), body.clone(), route.clone());
        let addr = target.addr;
        tasks.push(tokio::spawn(async move {
            let conn = Conn::open(addr).await;
            one_connection(conn, &seq, &body, &auth, expect, window).await
        }));
    }
    let mut samples = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (s, e) = t.await.unwrap();
        samples.extend(s);
        errors += e;
    }
    let seconds = if max.is_some() {
        start.elapsed().as_secs_f64()
    } else {
        measure.as_secs_f64()
    };
    Load {
        connections: conns,
        requests: samples.len(),
        errors,
        seconds,
        per_second: samples.len() as f64 / seconds,
        latency: stats(&mut samples),
    }
}

/// One connection's share of the load: its samples (ns) and errors.
async fn one_connection(
    mut conn: Conn,
    seq: &AtomicU64,
    body: &Body,
    route: &Route,
    expect: &str,
    window: Window,
) -> (Vec<u64>, usize) {
    let (mut samples, mut errors) = (Vec::new(), 0usize);
    loop {
        let i = seq.fetch_add(1, Ordering::Relaxed);
        if window.over(i) {
            break;
        }
        let Some(answer) = conn.try_send(route.request(body(i))).await else {
            errors += 1;
            break;
        };
        if window.counts(answer.sent) {
            samples.push(answer.nanos);
            let ok = answer.status == 200 && memchr(&answer.body, expect.as_bytes());
            if !ok {
                errors += 1;
                if errors == 1 {
                    eprintln!(
                        "unexpected answer {}: {}",
                        answer.status,
                        String::from_utf8_lossy(&answer.body)
                    );
                }
            }
        }
    }
    (samples, errors)
}
