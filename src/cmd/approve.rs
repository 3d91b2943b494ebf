//! `pushroll approve KIND/NAME -n NS [--digest D]`: a person releases the
//! push waiting on a workload by writing `pushroll.io/approve: D` (what
//! `kubectl annotate` would). The indexer's controller sees it on its
//! watch and carries the push out; nothing else is written here.

use anyhow::Context as _;

use crate::k8s::{self, Kube};
use crate::metrics::Metrics;
use crate::policy::APPROVE;
use crate::policy::pending::Pending;
use crate::reference::validate_digest;
use crate::workload::Kind;

/// What `approve` needs, as plain data.
#[derive(Debug, Clone)]
pub struct ApproveConfig {
    pub kind: Kind,
    pub name: String,
    /// `None`: the kubeconfig's.
    pub namespace: Option<String>,
    /// `None`: the waiting push's.
    pub digest: Option<String>,
    pub api_timeout: std::time::Duration,
}

pub async fn run(config: ApproveConfig) -> anyhow::Result<()> {
    let (kube, default_namespace) = k8s::connect(config.api_timeout, Metrics::new())
        .await
        .context("connecting to the cluster")?;
    let ns = config.namespace.unwrap_or(default_namespace);
    let line = approve(
        &kube,
        config.kind,
        &ns,
        &config.name,
        config.digest.as_deref(),
    )
    .await?;
    println!("{line}");
    Ok(())
}

/// Writes the approval; returns what to tell the person.
pub async fn approve(
    kube: &Kube,
    kind: Kind,
    ns: &str,
    name: &str,
    digest: Option<&str>,
) -> anyhow::Result<String> {
    let target = format!("{}/{name}", kind.as_str().to_ascii_lowercase());
    let obj = kube
        .get_workload(kind, ns, name)
        .await
        .with_context(|| format!("reading {target} in {ns}"))?;
    let waiting = obj.metadata.annotations.as_ref().and_then(Pending::of);
    let (digest, note) = match (digest, &waiting) {
        (Some(d), Some(w)) if d != w.digest => anyhow::bail!(
            "{target} in {ns} waits for {} ({}), not {d}: nothing approved",
            w.digest,
            w.image
        ),
        (_, Some(w)) => (
            w.digest.clone(),
            format!(
                "the controller carries out the waiting push of {} once its other conditions hold",
                w.image
            ),
        ),
        (Some(d), None) => (
            d.to_owned(),
            "no push waits: this digest is approved ahead of its push".to_owned(),
        ),
        (None, None) => anyhow::bail!(
            "no push waits on {target} in {ns}; give --digest to approve one ahead of its push"
        ),
    };
    validate_digest(&digest).with_context(|| format!("--digest {digest}"))?;
    let patch = serde_json::json!({"metadata": {"annotations": {APPROVE: digest}}});
    kube.patch_workload(kind, ns, name, &patch)
        .await
        .with_context(|| format!("writing the approval on {target} in {ns}"))?;
    Ok(format!("{target} in {ns}: approved {digest}; {note}"))
}
