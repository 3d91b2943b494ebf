//! The `pushroll` binary: install the TLS provider, parse flags, run one
//! subcommand.

use clap::Parser as _;
use pushroll::cli::{Cli, Command};
use pushroll::cmd;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // One rustls provider for kube, reqwest and jsonwebtoken: two in the
    // build make the first TLS client panic at run time.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pushroll: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    cmd::init_logging(&cli.log.log_level, cli.log.json());
    match cli.command {
        Command::Serve(args) => cmd::serve::run(args.resolve()?, cmd::shutdown_on_signal()).await,
        Command::Index(args) => cmd::index::run(args.resolve()?, cmd::shutdown_on_signal()).await,
        Command::Lookup(args) => cmd::lookup::run(args.resolve()?).await,
        Command::Approve(args) => cmd::approve::run(args.resolve()).await,
        Command::Pending(args) => cmd::pending::run(args.resolve()).await,
    }
}
