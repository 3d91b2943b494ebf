//! `pushroll pending`: every push waiting on a workload, across the
//! cluster (or one namespace), read from the workloads themselves: one
//! paged LIST per kind, the same the scan makes.

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::ResourceExt as _;
use serde::Serialize;

use crate::k8s::{self, Kube};
use crate::metrics::Metrics;
use crate::policy::pending::Pending;
use crate::workload::{Kind, Workload};

/// One waiting push and its workload.
#[derive(Debug, Clone, Serialize)]
pub struct Waiting {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub pending: Pending,
}

/// What `pending` needs, as plain data.
#[derive(Debug, Clone)]
pub struct PendingConfig {
    /// `None`: every namespace.
    pub namespace: Option<String>,
    /// JSON instead of a table.
    pub json: bool,
    pub api_timeout: std::time::Duration,
}

pub async fn run(config: PendingConfig) -> anyhow::Result<()> {
    let (kube, _) = k8s::connect(config.api_timeout, Metrics::new())
        .await
        .context("connecting to the cluster")?;
    let all = list(&kube, config.namespace.as_deref()).await?;
    if config.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        print!("{}", table(&all, jiff::Timestamp::now()));
    }
    Ok(())
}

/// Every waiting push, ordered by namespace, kind and name.
pub async fn list(kube: &Kube, namespace: Option<&str>) -> anyhow::Result<Vec<Waiting>> {
    let mut all = Vec::new();
    collect::<Deployment>(kube, namespace, &mut all).await?;
    collect::<StatefulSet>(kube, namespace, &mut all).await?;
    collect::<DaemonSet>(kube, namespace, &mut all).await?;
    all.sort_by(|a, b| {
        (&a.namespace, a.kind, &a.name, &a.pending.image).cmp(&(
            &b.namespace,
            b.kind,
            &b.name,
            &b.pending.image,
        ))
    });
    Ok(all)
}

async fn collect<W: Workload>(
    kube: &Kube,
    namespace: Option<&str>,
    into: &mut Vec<Waiting>,
) -> anyhow::Result<()> {
    kube.list_each::<W>(namespace, |obj| {
        for pending in crate::policy::pending::all(obj.annotations()) {
            into.push(Waiting {
                kind: W::KIND,
                namespace: obj.namespace().unwrap_or_default(),
                name: obj.name_any(),
                pending,
            });
        }
    })
    .await
    .with_context(|| format!("listing {}", W::KIND.plural()))
}

/// The table people read: workload, image, digest, reason, since, when it
/// may run.
pub fn table(all: &[Waiting], now: jiff::Timestamp) -> String {
    let mut rows = vec![[
        "NAMESPACE".to_owned(),
        "WORKLOAD".to_owned(),
        "IMAGE".to_owned(),
        "DIGEST".to_owned(),
        "REASON".to_owned(),
        "SINCE".to_owned(),
        "MAY RUN".to_owned(),
    ]];
    for w in all {
        let p = &w.pending;
        let short = p.digest.get(..19).unwrap_or(&p.digest).to_owned();
        let may_run = match (&p.error, p.not_before) {
            (Some(error), _) => format!("never, until fixed: {error}"),
            (None, Some(at)) => at.to_string(),
            (None, None) => "when approved".to_owned(),
        };
        let since = now.duration_since(p.since).as_secs().max(0);
        rows.push([
            w.namespace.clone(),
            format!("{}/{}", w.kind.as_str().to_ascii_lowercase(), w.name),
            p.image.clone(),
            short,
            p.reason.as_str().to_owned(),
            format!(
                "{} ago",
                humantime::format_duration(std::time::Duration::from_secs(since as u64))
            ),
            may_run,
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}
