//! `fake-apiserver`: runs the fake Kubernetes API server for manual trials
//! and benchmarks.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use clap::Parser;
use fake_apiserver::{FakeApiServer, Options};

/// A fake Kubernetes API server on 127.0.0.1 (plain HTTP; any token unless --rbac).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Port to listen on (0 = a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Write a kubeconfig for the server to this file.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context's default namespace.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// Seed objects from a JSON file holding an array of objects (or a
    /// `List` with `items`).
    #[arg(long)]
    load: Option<PathBuf>,
    /// Watch events kept for resuming watches.
    #[arg(long, default_value_t = 10_000)]
    history: usize,
    /// Enforce bearer tokens and RBAC (the kubeconfig written is the
    /// admin's, in system:masters).
    #[arg(long)]
    rbac: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let server = FakeApiServer::start_with(Options {
        port: args.port,
        history: args.history,
        rbac: args.rbac,
        ..Options::default()
    });
    server.ensure_namespace(&args.namespace);
    if let Some(path) = &args.load {
        let text = std::fs::read_to_string(path)?;
        let doc: serde_json::Value = serde_json::from_str(&text)?;
        let items = match doc {
            serde_json::Value::Array(items) => items,
            serde_json::Value::Object(ref m) if m.contains_key("items") => {
                m["items"].as_array().cloned().unwrap_or_default()
            }
            other => vec![other],
        };
        let n = items.len();
        for obj in items {
            server
                .try_insert(obj)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        }
        eprintln!("loaded {n} objects from {}", path.display());
    }
    if let Some(path) = &args.kubeconfig {
        std::fs::write(path, server.kubeconfig(&args.namespace))?;
        eprintln!("kubeconfig written to {}", path.display());
    }
    println!("{}", server.url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
