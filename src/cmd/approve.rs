//! `pushroll approve KIND/NAME -n NS [--digest D]`: a person releases the
//! push waiting on a workload by writing `pushroll.io/approve: D` (what
//! `kubectl annotate` would). The indexer's controller sees it on its
//! watch and carries the push out; nothing else is written here.

use anyhow::Context as _;

use crate::k8s::{self, Kube};
use crate::metrics::Metrics;
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
    // Written with the resourceVersion read, so that the rollout record
    // carried along is never a stale one: a concurrent write (the
    // controller's) means reading again.
    let mut attempts = 0;
    loop {
        attempts += 1;
        let obj = kube
            .get_workload(kind, ns, name)
            .await
            .with_context(|| format!("reading {target} in {ns}"))?;
        let mut view = crate::plan::workload_view(&obj);
        view.annotations_move_generation = kind == Kind::Deployment;
        let waiting = crate::policy::pending::all(&view.annotations);
        let (digest, note) =
            choose(&waiting, digest).map_err(|why| anyhow::anyhow!("{target} in {ns}: {why}"))?;
        validate_digest(&digest).with_context(|| format!("--digest {digest}"))?;
        let patch = crate::policy::metadata_patch(
            view.resource_version.as_deref(),
            &crate::policy::approve_metadata(&view, &digest),
        );
        match kube.patch_workload(kind, ns, name, &patch).await {
            Ok(_) => return Ok(format!("{target} in {ns}: approved {digest}; {note}")),
            Err(k8s::KubeError::Conflict(_)) if attempts < 5 => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("writing the approval on {target} in {ns}"));
            }
        }
    }
}

/// Which digest to approve, and what to tell: the one given (it must be a
/// waiting push's, when any waits), else the one push that waits.
fn choose(waiting: &[Pending], digest: Option<&str>) -> Result<(String, String), String> {
    let names = || {
        waiting
            .iter()
            .map(|w| format!("{} ({})", w.digest, w.image))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (digest, waiting) {
        (Some(d), []) => Ok((
            d.to_owned(),
            "no push waits: this digest is approved ahead of its push".to_owned(),
        )),
        (Some(d), _) => match waiting.iter().find(|w| w.digest == d) {
            Some(w) => Ok((d.to_owned(), carried(w))),
            None => Err(format!("waits for {}, not {d}: nothing approved", names())),
        },
        (None, [w]) => Ok((w.digest.clone(), carried(w))),
        (None, []) => {
            Err("no push waits; give --digest to approve one ahead of its push".to_owned())
        }
        (None, _) => Err(format!(
            "several pushes wait ({}); give --digest to say which",
            names()
        )),
    }
}

fn carried(w: &Pending) -> String {
    format!(
        "the controller carries out the waiting push of {} once its other conditions hold",
        w.image
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::pending::Reason;

    fn record(image: &str, digest: &str) -> Pending {
        Pending {
            image: image.into(),
            digest: digest.into(),
            publish_time: "2026-12-01T10:00:00Z".parse().unwrap(),
            message_id: None,
            containers: vec![],
            reason: Reason::Approval,
            since: "2026-12-01T10:00:00Z".parse().unwrap(),
            not_before: None,
            error: None,
            mode: Default::default(),
            opt_in: false,
        }
    }

    #[test]
    fn the_digest_approved_is_a_waiting_one() {
        let app = record("r/app:v1", "sha256:aa");
        let side = record("r/side:v1", "sha256:bb");
        let one = [app.clone()];
        let two = [app, side];
        // (name, waiting, --digest, approved or the error's words)
        type Row<'a> = (
            &'a str,
            &'a [Pending],
            Option<&'a str>,
            Result<&'a str, &'a str>,
        );
        let table: Vec<Row> = vec![
            ("the one waiting", &one, None, Ok("sha256:aa")),
            ("named", &one, Some("sha256:aa"), Ok("sha256:aa")),
            (
                "another digest",
                &one,
                Some("sha256:cc"),
                Err("not sha256:cc"),
            ),
            ("ahead of its push", &[], Some("sha256:cc"), Ok("sha256:cc")),
            ("nothing to approve", &[], None, Err("no push waits")),
            ("two wait: which?", &two, None, Err("several pushes wait")),
            (
                "two wait: the sidecar's",
                &two,
                Some("sha256:bb"),
                Ok("sha256:bb"),
            ),
        ];
        for (name, waiting, digest, want) in table {
            match (choose(waiting, digest), want) {
                (Ok((d, _)), Ok(w)) => assert_eq!(d, w, "{name}"),
                (Err(e), Err(w)) => assert!(e.contains(w), "{name}: {e}"),
                (got, want) => panic!("{name}: {got:?}, want {want:?}"),
            }
        }
    }
}
