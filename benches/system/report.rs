//! The results: the Markdown report (stdout and `system.md`), the figures
//! as JSON (`system.json`), and the chart beside them.

use std::fmt::Write as _;

use serde_json::json;

use crate::cluster::Seeded;
use crate::designs::{Design, DesignResult};
use crate::http::Http;
use crate::options::Options;
use crate::stats::{human, human_bytes, ratio};
use crate::svg::svg;

pub fn machine() -> String {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let mem = read("/proc/meminfo")
        .lines()
        .next()
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    format!(
        "{} × {cpu}, {:.0} GiB, Linux {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        mem as f64 / 1024.0 / 1024.0,
        read("/proc/sys/kernel/osrelease").trim()
    )
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The Markdown report.
pub fn report(
    opts: &Options,
    designs: &[DesignResult],
    http: Option<&Http>,
    clusters: &[Seeded],
    load_before: &str,
) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Machine: {}; load average before {load_before}, after {}; {}.\n",
        machine(),
        loadavg(),
        if opts.quick {
            "QUICK (smoke) run: figures are not measurements"
        } else {
            "full run"
        }
    );
    clusters_table(&mut md, clusters);
    designs_table(&mut md, designs);
    if let Some(h) = http {
        http_section(&mut md, h);
    }
    md
}

fn clusters_table(md: &mut String, clusters: &[Seeded]) {
    let _ = writeln!(
        md,
        "| N workloads | objects (JSON) | index (as stored) |\n| ---: | ---: | ---: |"
    );
    for (n, objects, index, gz) in clusters {
        let _ = writeln!(
            md,
            "| {n} | {} | {} {} |",
            human_bytes(*objects as f64),
            human_bytes(*index as f64),
            if *gz { "gzip" } else { "JSON" }
        );
    }
}

fn designs_table(md: &mut String, designs: &[DesignResult]) {
    let _ = writeln!(md, "\n### Finding the workloads of one push (medians)\n");
    let _ = writeln!(
        md,
        "| N | design | lookup p50 | ×pushroll | API requests/push | bytes/push | hit p50 (lookup + GET/PATCH/Event) | ×pushroll |"
    );
    let _ = writeln!(
        md,
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for d in designs {
        let base = designs
            .iter()
            .find(|b| b.n == d.n && b.design == Design::Pushroll)
            .unwrap();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            d.n,
            d.design.label(),
            human(d.lookup.p50_ns),
            ratio(d.lookup.p50_ns, base.lookup.p50_ns),
            d.requests_per_push,
            human_bytes(d.bytes_per_push),
            human(d.hit.p50_ns),
            ratio(d.hit.p50_ns, base.hit.p50_ns)
        );
    }
}

fn http_section(md: &mut String, h: &Http) {
    let _ = writeln!(
        md,
        "\n### pushroll over HTTP ({} binary, `--auth google`), N = {}\n",
        if cfg!(debug_assertions) {
            "DEBUG"
        } else {
            "release"
        },
        h.n
    );
    load_table(md, h);
    hits_paragraph(md, h);
    startup_and_rss(md, h);
}

/// The misses and the hits, a row each.
fn load_table(md: &mut String, h: &Http) {
    let _ = writeln!(
        md,
        "| scenario | connections | pushes | errors | pushes/s | p50 | p99 | max |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for (name, l) in [
        ("miss", &h.miss_1),
        ("miss, `POST /webhooks/github` (HMAC)", &h.webhook_1),
        ("miss", &h.miss_64),
    ] {
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {} | {:.0} | {} | {} | {} |",
            l.connections,
            l.requests,
            l.errors,
            l.per_second,
            human(l.latency.p50_ns),
            human(l.latency.p99_ns),
            human(l.latency.max_ns)
        );
    }
    let hit = &h.hit_1;
    let _ = writeln!(
        md,
        "| hit (restarts 1 workload) | 1 | {} | {} | {:.0} | {} | {} | {} |",
        hit.pushes,
        hit.errors,
        1e9 / hit.latency.p50_ns,
        human(hit.latency.p50_ns),
        human(hit.latency.p99_ns),
        human(hit.latency.max_ns)
    );
}

/// Where a hit's time goes: the API requests, the fake's own time, the rest.
fn hits_paragraph(md: &mut String, h: &Http) {
    let hit = &h.hit_1;
    let _ = writeln!(
        md,
        "\nAPI requests during the hits: {:?} for {} pushes; during the misses: {:?}.",
        h.hit_api, hit.pushes, h.miss_api
    );
    let _ = writeln!(
        md,
        "The fake's own time for the same GET + PATCH + Event from a bare HTTP client, right after each push: p50 {} (GET {}, PATCH {}, Event {}). Hit latency beyond the fake's own time, per pair: p50 {}, p90 {}; of which pushroll's `Restarter` (kube-rs client, plan, patch, Event) called in the bench process, beyond the same fake time: p50 {}.",
        human(hit.fake_own.p50_ns),
        human(hit.fake_get.p50_ns),
        human(hit.fake_patch.p50_ns),
        human(hit.fake_event.p50_ns),
        human(hit.beyond_fake.p50_ns),
        human(hit.beyond_fake.p90_ns),
        human(hit.restarter_beyond_fake.p50_ns)
    );
}

fn startup_and_rss(md: &mut String, h: &Http) {
    let _ = writeln!(
        md,
        "Startup ({} starts, spawn → `/readyz` 200): listening p50 {}, ready p50 {} (max {}).\n\n| RSS of pushroll | VmRSS | VmHWM (peak) |\n| --- | ---: | ---: |",
        h.startup.ready.n,
        human(h.startup.listening.p50_ns),
        human(h.startup.ready.p50_ns),
        human(h.startup.ready.max_ns),
    );
    for (phase, rss, hwm) in &h.rss {
        let _ = writeln!(
            md,
            "| {phase} | {:.1} MiB | {:.1} MiB |",
            *rss as f64 / 1024.0,
            *hwm as f64 / 1024.0
        );
    }
}

/// Prints the report and writes it to `system.md`, the figures to
/// `system.json`, and the chart to `--svg`.
pub fn write(
    opts: &Options,
    designs: &[DesignResult],
    http: Option<&Http>,
    clusters: &[Seeded],
    load_before: &str,
) {
    let md = report(opts, designs, http, clusters, load_before);
    println!("{md}");
    std::fs::create_dir_all(&opts.out).unwrap();
    std::fs::write(opts.out.join("system.md"), &md).unwrap();
    let json = json!({"designs": designs, "http": http, "clusters": clusters, "machine": machine(), "quick": opts.quick});
    std::fs::write(
        opts.out.join("system.json"),
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .unwrap();
    if let Some(dir) = opts.svg.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(&opts.svg, svg(designs, http)).unwrap();
    eprintln!(
        "wrote {} and {}",
        opts.out.join("system.md").display(),
        opts.svg.display()
    );
}
