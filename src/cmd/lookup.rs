//! `pushroll lookup IMAGE`: the workloads a push of IMAGE would restart, from
//! the same index and fallbacks as `serve`.

use anyhow::Context as _;

use super::{Cluster, OpenIndex, SourceConfig, open_index};
use crate::index::store::Found;
use crate::metrics::Metrics;
use crate::reference::Reference;

/// Everything `lookup` needs, as plain data.
#[derive(Debug, Clone)]
pub struct LookupConfig {
    pub image: String,
    pub index: SourceConfig,
    /// Print JSON instead of a table.
    pub json: bool,
}

pub async fn run(config: LookupConfig) -> anyhow::Result<()> {
    let reference = Reference::parse(&config.image)
        .with_context(|| format!("{:?} is not an image reference", config.image))?;
    anyhow::ensure!(
        !reference.is_pinned(),
        "{} is pinned by digest: pinned images never match a push",
        config.image
    );
    let metrics = Metrics::new();
    let cluster = Cluster::connect_unless(false, &config.index.cluster, None, &metrics).await?;
    let OpenIndex { store, .. } =
        open_index(&config.index, cluster.as_ref(), &[], &metrics).await?;
    let key = reference.tagged();
    let found = store.lookup(&key).await?;
    if config.json {
        let body = serde_json::json!({
            "image": key,
            "source": found.source,
            "workloads": found.workloads,
        });
        println!("{body}");
    } else {
        print!("{}", table(&key, &found));
    }
    Ok(())
}

/// The human-readable answer: one line per workload, or why there is none.
fn table(key: &str, found: &Found) -> String {
    if found.workloads.is_empty() {
        return format!(
            "no workload uses {key} (source: {})\n",
            found.source.as_str()
        );
    }
    let mut out = format!(
        "{:<12} {:<24} {:<32} CONTAINERS\n",
        "KIND", "NAMESPACE", "NAME"
    );
    for w in &found.workloads {
        out += &format!(
            "{:<12} {:<24} {:<32} {}\n",
            w.kind.as_str(),
            w.namespace,
            w.name,
            w.containers.join(",")
        );
    }
    out
}
