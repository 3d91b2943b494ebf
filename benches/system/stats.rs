//! Percentiles of timing samples, and how figures are printed.

use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub n: usize,
    pub p50_ns: f64,
    pub p90_ns: f64,
    pub p99_ns: f64,
    pub max_ns: f64,
}

pub fn stats(samples: &mut [u64]) -> Stats {
    samples.sort_unstable();
    let at = |q: f64| {
        if samples.is_empty() {
            f64::NAN
        } else {
            samples[((samples.len() - 1) as f64 * q).round() as usize] as f64
        }
    };
    Stats {
        n: samples.len(),
        p50_ns: at(0.5),
        p90_ns: at(0.9),
        p99_ns: at(0.99),
        max_ns: at(1.0),
    }
}

/// [`stats`] of differences, which can be negative.
pub fn signed_stats(v: &[i64]) -> Stats {
    const SHIFT: i64 = 1 << 40;
    let mut shifted: Vec<u64> = v.iter().map(|d| (d + SHIFT) as u64).collect();
    let mut out = stats(&mut shifted);
    for x in [
        &mut out.p50_ns,
        &mut out.p90_ns,
        &mut out.p99_ns,
        &mut out.max_ns,
    ] {
        *x -= SHIFT as f64;
    }
    out
}

pub fn human(ns: f64) -> String {
    if ns < 0.0 {
        format!("−{}", human(-ns))
    } else if ns.is_nan() {
        "–".into()
    } else if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.1} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

pub fn human_bytes(b: f64) -> String {
    if b < 1024.0 {
        format!("{b:.0} B")
    } else if b < 1024.0 * 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{:.1} MiB", b / 1024.0 / 1024.0)
    }
}

pub fn ratio(a: f64, b: f64) -> String {
    let r = a / b;
    if r >= 100.0 {
        format!("{:.0}×", r)
    } else {
        format!("{r:.1}×")
    }
}
