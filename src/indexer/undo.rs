//! Undo on failure: when a rollout pushroll started in pin mode fails, and
//! the workload asks for it (`pushroll.io/on-failure: undo`), the template
//! that ran before is put back as `kubectl rollout undo` would, and the
//! failed digest is remembered on the workload so that serve refuses it
//! until a newer one arrives. Planned in `policy::undo`; this makes the
//! calls. Every step is safe to repeat: a second attempt (a retry, another
//! leader) finds the digest recorded, or the template changed, and stops.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::k8s::{EventKind, Kube, KubeError, rollout_event};
use crate::metrics::Metrics;
use crate::plan::workload_view;
use crate::policy::undo::{
    Keep, Revision, check, controller_revision, deployment_revision, pin_previous, previous,
    replica_set_revision, undo_patch,
};
use crate::rollout::{Pushed, stale_pods};
use crate::workload::Kind;

/// Undoes the failed rollout of `pushed` on one workload, if asked and
/// still ours; `selector` is the workload's pod selector as a query.
/// Returns the message of the undo this call made (`None`: nothing to do).
pub(super) async fn undo(
    kube: &Kube,
    metrics: &Metrics,
    (kind, ns, name): (Kind, &str, &str),
    pushed: &Pushed,
    selector: Option<&str>,
) -> Result<Option<String>, KubeError> {
    let obj = match kube.get_workload(kind, ns, name).await {
        Ok(obj) => obj,
        Err(KubeError::NotFound) => return Ok(None),
        Err(e) => return Err(e),
    };
    let view = workload_view(&obj);
    match check(&view, pushed) {
        Ok(()) => {}
        Err(Keep::NotAsked | Keep::Done) => return Ok(None),
        Err(Keep::Changed) => {
            tracing::info!(kind = %kind, namespace = ns, name, digest = %pushed.digest, "failed rollout not undone: the workload changed since pushroll's restart (a person's rollback, restart or edit is left alone)");
            return Ok(None);
        }
    }
    let (Some(uid), Some(selector), Some(rv)) = (
        obj.metadata.uid.as_deref(),
        selector,
        view.resource_version.as_deref(),
    ) else {
        return Ok(None);
    };
    let (current, revisions): (Option<i64>, Vec<Revision>) = match kind {
        Kind::Deployment => (
            deployment_revision(&view.annotations),
            kube.list_replica_sets(ns, selector)
                .await?
                .iter()
                .filter_map(|rs| replica_set_revision(rs, uid))
                .collect(),
        ),
        Kind::StatefulSet | Kind::DaemonSet => (
            None,
            kube.list_controller_revisions(ns, selector)
                .await?
                .iter()
                .filter_map(|cr| controller_revision(cr, uid))
                .collect(),
        ),
    };
    let Some(before) = previous(current, &revisions) else {
        tracing::warn!(kind = %kind, namespace = ns, name, digest = %pushed.digest, "failed rollout not undone: no earlier revision to put back");
        return Ok(None);
    };
    let mut template = before.template.clone();
    let unknown = pin_previous(&mut template, &pushed.containers, &[]);
    if !unknown.is_empty() {
        // What the pods outside the failed rollout run (one pods LIST).
        let pods = kube.list_pods(ns, selector).await?;
        let running: Vec<(String, String)> = stale_pods(&pods, &unknown, &pushed.digest)
            .into_iter()
            .map(|p| (p.container, p.digest))
            .collect();
        let left = pin_previous(&mut template, &unknown, &running);
        if !left.is_empty() {
            tracing::warn!(kind = %kind, namespace = ns, name, containers = ?left, "the template put back names a tag, and no pod shows which digest it ran: new pods pull what the tag names now");
        }
    }
    let patch = undo_patch(
        rv,
        &view.annotations,
        &template,
        &pushed.digest,
        &pushed.containers,
    );
    // A 409 (changed since the read) is an error here: the report retries,
    // and the next attempt checks again whether the template is still ours.
    kube.json_patch_workload(kind, ns, name, &patch).await?;
    metrics.policy.decided("undone");
    tracing::warn!(kind = %kind, namespace = ns, name, digest = %pushed.digest, revision = before.number, "failed rollout undone: the previous template is back, and the digest is refused until a newer one");
    let meta = ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(ns.to_owned()),
        uid: Some(uid.to_owned()),
        ..ObjectMeta::default()
    };
    let message = format!(
        "Rollout of {} failed; revision {} is back (as kubectl rollout undo), and pushes of {} are refused until a newer digest",
        pushed.digest, before.number, pushed.digest
    );
    let event = rollout_event(
        kind,
        &meta,
        EventKind::RolloutUndone,
        &pushed.digest,
        message.clone(),
        jiff::Timestamp::now(),
    );
    match kube.create_event(&event).await {
        Ok(()) | Err(KubeError::Conflict(_)) => {}
        // The undo is done; a lost Event is only logged.
        Err(e) => {
            tracing::warn!(kind = %kind, namespace = ns, name, error = %e, "could not record the PushRolloutUndone event");
        }
    }
    Ok(Some(message))
}
