//! The log-log chart of lookup latency against cluster size, by design
//! (`benches/latency.svg`).

use std::fmt::Write as _;

use crate::designs::{Design, DesignResult};
use crate::http::Http;

/// The canvas, its margins, and the decades both axes span.
#[derive(Clone, Copy)]
struct Chart {
    w: f64,
    h: f64,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
    x_min: f64,
    x_max: f64,
    y_min: f64,
    y_max: f64,
}

impl Chart {
    /// A chart of the sizes `ns` (sorted) and the latencies `ys`.
    fn new(ns: &[usize], ys: &[f64]) -> Chart {
        let (x_min, x_max) = (
            (ns[0] as f64).log10().floor(),
            (*ns.last().unwrap() as f64)
                .log10()
                .ceil()
                .max((ns[0] as f64).log10().floor() + 1.0),
        );
        let y_min = ys
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min)
            .log10()
            .floor();
        let y_max = ys.iter().copied().fold(0.0, f64::max).log10().ceil();
        Chart {
            w: 760.0,
            h: 480.0,
            left: 80.0,
            right: 200.0,
            top: 40.0,
            bottom: 60.0,
            x_min,
            x_max,
            y_min,
            y_max,
        }
    }

    fn px(&self, n: f64) -> f64 {
        self.left
            + (n.log10() - self.x_min) / (self.x_max - self.x_min)
                * (self.w - self.left - self.right)
    }

    fn py(&self, v: f64) -> f64 {
        self.top
            + (self.y_max - v.log10()) / (self.y_max - self.y_min)
                * (self.h - self.top - self.bottom)
    }
}

/// A log-log chart of lookup latency against cluster size, by design.
pub fn svg(designs: &[DesignResult], http: Option<&Http>) -> String {
    let mut ns: Vec<usize> = designs.iter().map(|d| d.n).collect();
    ns.sort_unstable();
    ns.dedup();
    let mut ys: Vec<f64> = designs
        .iter()
        .flat_map(|d| [d.lookup.p50_ns, d.hit.p50_ns])
        .collect();
    if let Some(h) = http {
        ys.push(h.miss_1.latency.p50_ns);
    }
    let chart = Chart::new(&ns, &ys);
    let mut s = String::new();
    frame(&mut s, &chart);
    let legend_y = design_lines(&mut s, &chart, designs, &ns);
    if let Some(hr) = http {
        http_marker(&mut s, &chart, hr, legend_y);
    }
    s.push_str("</svg>\n");
    s
}

/// The canvas, the title, the grid with its tick labels, the plot's
/// border and the axis titles.
fn frame(s: &mut String, c: &Chart) {
    let Chart {
        w,
        h,
        left,
        right,
        top,
        bottom,
        ..
    } = *c;
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">Time to find the workloads of one push, by cluster size (median, log-log)</text>"#,
        w / 2.0
    );
    for e in (c.x_min as i32)..=(c.x_max as i32) {
        let x = c.px(10f64.powi(e));
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{}" stroke="#ddd"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
            h - bottom,
            h - bottom + 18.0,
            fmt_count(10f64.powi(e))
        );
    }
    for e in (c.y_min as i32)..=(c.y_max as i32) {
        let y = c.py(10f64.powi(e));
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            w - right,
            left - 6.0,
            y + 4.0,
            tick(e)
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{left}" y="{top}" width="{}" height="{}" fill="none" stroke="#333"/>"##,
        w - left - right,
        h - top - bottom
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">workloads in the cluster (N)</text>"#,
        left + (w - left - right) / 2.0,
        h - 18.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(18 {}) rotate(-90)" text-anchor="middle">latency per push</text>"#,
        top + (h - top - bottom) / 2.0
    );
}

/// Per design, its lookups (solid, with points) and its hits (dashed), and
/// their legend entries; where the next legend entry goes.
fn design_lines(s: &mut String, c: &Chart, designs: &[DesignResult], ns: &[usize]) -> f64 {
    let Chart { w, right, top, .. } = *c;
    let mut legend_y = top + 10.0;
    for design in Design::ALL {
        for (hit, dash) in [(false, ""), (true, r#" stroke-dasharray="5 4""#)] {
            let points: Vec<String> = ns
                .iter()
                .filter_map(|&n| designs.iter().find(|d| d.n == n && d.design == design))
                .map(|d| {
                    format!(
                        "{:.1},{:.1}",
                        c.px(d.n as f64),
                        c.py(if hit { d.hit.p50_ns } else { d.lookup.p50_ns })
                    )
                })
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"{dash}/>"#,
                points.join(" "),
                design.color()
            );
            if !hit {
                for p in &points {
                    let (x, y) = p.split_once(',').unwrap();
                    let _ = writeln!(
                        s,
                        r#"<circle cx="{x}" cy="{y}" r="3.5" fill="{}"/>"#,
                        design.color()
                    );
                }
            }
            let _ = writeln!(
                s,
                r#"<line x1="{}" y1="{legend_y:.1}" x2="{}" y2="{legend_y:.1}" stroke="{}" stroke-width="2"{dash}/><text x="{}" y="{:.1}">{}{}</text>"#,
                w - right + 10.0,
                w - right + 34.0,
                design.color(),
                w - right + 40.0,
                legend_y + 4.0,
                design.short(),
                if hit { " + restart" } else { " lookup" }
            );
            legend_y += 20.0;
        }
    }
    legend_y
}

/// pushroll's `POST /push` miss over HTTP: a triangle at its size, and its
/// legend entry at `legend_y`.
fn http_marker(s: &mut String, c: &Chart, hr: &Http, legend_y: f64) {
    let Chart { w, right, .. } = *c;
    let (x, y) = (c.px(hr.n as f64), c.py(hr.miss_1.latency.p50_ns));
    let _ = writeln!(
        s,
        r##"<path d="M{:.1},{:.1} l6,10 h-12 z" fill="#1f77b4"/>"##,
        x,
        y - 6.0
    );
    let _ = writeln!(
        s,
        r##"<path d="M{:.1},{:.1} l6,10 h-12 z" fill="#1f77b4"/><text x="{}" y="{:.1}">pushroll POST /push</text><text x="{}" y="{:.1}">(miss, HTTP + token)</text>"##,
        w - right + 22.0,
        legend_y - 6.0,
        w - right + 40.0,
        legend_y + 4.0,
        w - right + 40.0,
        legend_y + 18.0
    );
}

/// A power of ten of nanoseconds as an axis label: `100 ns`, `1 µs`, … `10 s`.
fn tick(e: i32) -> String {
    let units = ["ns", "µs", "ms", "s"];
    let unit = ((e / 3) as usize).min(units.len() - 1);
    format!("{} {}", 10f64.powi(e - 3 * unit as i32), units[unit])
}

fn fmt_count(n: f64) -> String {
    if n >= 1000.0 {
        format!("{}k", n / 1000.0)
    } else {
        format!("{n}")
    }
}
