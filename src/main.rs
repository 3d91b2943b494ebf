//! The `pushroll` binary: install the TLS provider, parse flags, run.

use clap::Parser as _;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // One rustls provider for kube, reqwest and jsonwebtoken: two in the
    // build make the first TLS client panic at run time.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = pushroll::cli::Cli::parse();
    match pushroll::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pushroll: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
