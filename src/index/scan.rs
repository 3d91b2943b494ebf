//! The cluster scan: every workload of the allowed namespaces, listed page
//! by page into a builder (`pushroll index`, `serve --on-miss scan`).

use std::time::Instant;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};

use crate::index::Index;
use crate::index::builder::{IndexBuilder, Observed};
use crate::k8s::{Kube, KubeError};
use crate::workload::NamespaceFilter;

/// Lists every workload of the allowed namespaces and builds the index of
/// them, as of now; logs `done` with what it found and how long it took.
pub async fn scan(
    kube: &Kube,
    namespaces: &NamespaceFilter,
    done: &str,
) -> Result<Index, KubeError> {
    let started = Instant::now();
    let builder = list_all(kube, namespaces).await?;
    let index = builder.build(Some(jiff::Timestamp::now()));
    tracing::info!(
        workloads = builder.workload_count(),
        images = index.len(),
        took_ms = started.elapsed().as_secs_f64() * 1000.0,
        "{done}"
    );
    Ok(index)
}

/// Lists every workload of the allowed namespaces into a builder.
async fn list_all(kube: &Kube, namespaces: &NamespaceFilter) -> Result<IndexBuilder, KubeError> {
    let mut builder = IndexBuilder::new(namespaces.clone());
    let scopes: Vec<Option<&str>> = if namespaces.include.is_empty() {
        vec![None]
    } else {
        namespaces
            .include
            .iter()
            .map(|n| Some(n.as_str()))
            .collect()
    };
    for scope in scopes {
        kube.list_each::<Deployment>(scope, |w| {
            builder.apply(&Observed::of(w));
        })
        .await?;
        kube.list_each::<StatefulSet>(scope, |w| {
            builder.apply(&Observed::of(w));
        })
        .await?;
        kube.list_each::<DaemonSet>(scope, |w| {
            builder.apply(&Observed::of(w));
        })
        .await?;
    }
    Ok(builder)
}
