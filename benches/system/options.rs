//! The bench's command line (clap), and the run it resolves to.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{CommandFactory as _, Parser};

use crate::common;

/// pushroll's system benchmarks (BENCHMARKS.md):
/// `cargo bench --bench system -- [OPTIONS]`.
#[derive(Parser, Debug)]
#[command(name = "system")]
struct Args {
    /// Cluster sizes N, comma-separated [default: 100,1000,10000,50000;
    /// with --quick: 20,60]
    #[arg(long, value_name = "N,N,…", value_delimiter = ',', value_parser = size)]
    sizes: Vec<usize>,

    /// A smoke run: tiny N, each scenario once; also the default without
    /// --bench (`cargo test --benches`)
    #[arg(long)]
    quick: bool,

    /// Where the chart goes [default: benches/latency.svg; with --quick:
    /// target/bench-results/latency-quick.svg]
    #[arg(long, value_name = "PATH")]
    svg: Option<PathBuf>,

    /// The size the HTTP scenarios run at [default: the largest N up to
    /// 10,000, else the first]
    #[arg(long, value_name = "N")]
    system_n: Option<usize>,

    /// Only the HTTP scenarios, for quicker iterations
    #[arg(long)]
    http_only: bool,

    /// More `pushroll serve` flags, for experiments (e.g. "--on-miss none")
    #[arg(long, value_name = "FLAGS", allow_hyphen_values = true)]
    serve_args: Option<String>,

    /// Added by `cargo bench`: measure (without it, a smoke run)
    #[arg(long, hide = true)]
    bench: bool,
}

/// One size of `--sizes` (spaces around it allowed).
fn size(s: &str) -> Result<usize, std::num::ParseIntError> {
    s.trim().parse()
}

/// The words of `args` that are options of `cmd`, with their values.
/// cargo hands a `harness = false` binary libtest's words too (a name
/// filter, `--nocapture`, `--test-threads=1`, …); this bench is no test
/// harness and passes over them rather than refusing to run.
fn own_words(cmd: &clap::Command, args: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut words = args.into_iter();
    let mut own = Vec::new();
    while let Some(word) = words.next() {
        let name = word.split_once('=').map_or(word.as_str(), |(name, _)| name);
        let arg = cmd.get_arguments().find(|a| {
            let long = a
                .get_long()
                .is_some_and(|l| name.strip_prefix("--") == Some(l));
            let short = a.get_short().is_some_and(|s| name == format!("-{s}"));
            long || short
        });
        let Some(arg) = arg else {
            continue;
        };
        let value_follows = arg.get_action().takes_values() && !word.contains('=');
        own.push(word);
        if value_follows {
            own.extend(words.next());
        }
    }
    own
}

/// What one run does.
pub struct Options {
    pub quick: bool,
    pub sizes: Vec<usize>,
    pub system_n: Option<usize>,
    pub svg: PathBuf,
    pub out: PathBuf,
    /// Time spent measuring one design at one size (lookups).
    pub budget: Duration,
    pub starts: usize,
    pub miss_secs: (f64, f64),
    pub hits: usize,
    /// Only the HTTP scenarios (`--http-only`), for quicker iterations.
    pub http_only: bool,
    /// More `serve` flags (`--serve-args "--on-miss none"`), for experiments.
    pub serve_args: Vec<String>,
}

impl Options {
    /// The options of this process's command line.
    pub fn parse() -> Options {
        let mut cmd = Args::command();
        // Lists --help among the arguments, so that it is kept.
        cmd.build();
        let own = own_words(&cmd, std::env::args().skip(1));
        // The bench's name, not cargo's hashed file name, in the usage line.
        Args::parse_from(std::iter::once("system".to_owned()).chain(own)).into()
    }

    /// The size the HTTP scenarios run at.
    pub fn system_size(&self) -> usize {
        self.system_n.unwrap_or_else(|| {
            self.sizes
                .iter()
                .copied()
                .filter(|&n| n <= 10_000)
                .max()
                .unwrap_or(self.sizes[0])
        })
    }
}

impl From<Args> for Options {
    fn from(args: Args) -> Options {
        // `cargo test --benches` runs bench binaries without `--bench`:
        // that is a smoke run too, like criterion's test mode.
        let quick = args.quick || !args.bench;
        let out = common::target_dir().join("bench-results");
        let sizes = if !args.sizes.is_empty() {
            args.sizes
        } else if quick {
            vec![20, 60]
        } else {
            vec![100, 1_000, 10_000, 50_000]
        };
        let svg = args.svg.unwrap_or_else(|| {
            if quick {
                out.join("latency-quick.svg")
            } else {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/latency.svg")
            }
        });
        Options {
            quick,
            sizes,
            system_n: args.system_n,
            svg,
            out,
            budget: if quick {
                Duration::ZERO
            } else {
                Duration::from_secs(3)
            },
            starts: if quick { 1 } else { 5 },
            miss_secs: if quick { (0.0, 0.0) } else { (1.0, 10.0) },
            hits: if quick { 3 } else { 400 },
            http_only: args.http_only,
            serve_args: args
                .serve_args
                .map(|s| s.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default(),
        }
    }
}
