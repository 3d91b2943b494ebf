//! Where a push meets the workload's rules: opt-in, approvals, windows,
//! intervals and digests that failed before. Pure code, like [`crate::plan`]
//! whose decision it extends: serve (for a delivery) and the indexer's
//! controller (for a waiting push, [`pending`]) both ask [`decide`], so a
//! push waits, is refused or rolls by the same rules wherever it is
//! carried out. Windows are parsed in [`window`]; putting back the
//! template that ran before a failed push is planned in [`undo`].

pub mod pending;
pub mod undo;
pub mod window;

use std::collections::BTreeMap;
use std::time::Duration;

use self::pending::{Pending, Reason};
use self::window::Windows;
use crate::plan::{OPT_OUT, Pin, Plan, RESTARTED_AT, RestartResult, WorkloadView, plan};
use crate::workload::Mode;

/// `pushroll.io/approval: required`: a person approves each push.
pub const APPROVAL: &str = "pushroll.io/approval";
/// `pushroll.io/approve: sha256:…`: the digest a person approved.
pub const APPROVE: &str = "pushroll.io/approve";
/// `pushroll.io/window`: when pushes may roll (see [`window`]).
pub const WINDOW: &str = "pushroll.io/window";
/// `pushroll.io/min-interval`: the least time between two restarts.
pub const MIN_INTERVAL: &str = "pushroll.io/min-interval";
/// `pushroll.io/on-failure: undo` (pin mode): put back what ran before.
pub const ON_FAILURE: &str = "pushroll.io/on-failure";
/// `pushroll.io/pending`: the waiting push (see [`pending`]).
pub const PENDING: &str = "pushroll.io/pending";
/// `failed.pushroll.io/<container>`: a digest whose rollout failed and was
/// undone; pushes of it are refused until a newer digest rolls.
pub const FAILED_PREFIX: &str = "failed.pushroll.io/";

pub fn failed_annotation(container: &str) -> String {
    format!("{FAILED_PREFIX}{container}")
}

/// The settings of serve a push is decided under; a waiting push records
/// them, so the controller decides it the same way later.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settings {
    /// `serve --mode`: where a workload names none.
    pub mode: Mode,
    /// `serve --opt-in`: only workloads annotated `pushroll.io/restart: "true"`.
    pub opt_in: bool,
}

/// The push being decided.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The normalized tagged image (`domain/path:tag`).
    pub image_key: &'a str,
    pub digest: &'a str,
    pub published: jiff::Timestamp,
    pub message_id: Option<&'a str>,
}

/// A policy annotation that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub annotation: &'static str,
    pub error: String,
}

/// What to do with one workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to write; the result says why.
    Skip(RestartResult),
    /// The push waits: write `pending` (when `write`: a redelivery of the
    /// push already waiting writes nothing) and answer.
    Wait {
        pending: Pending,
        write: bool,
        invalid: Option<Invalid>,
    },
    /// Roll, as [`Plan::Restart`]; `clear` names the workload annotations
    /// the same write removes (the waiting push, the approval it used, the
    /// failed digests a newer push replaces). `approved`: a person
    /// approved this digest.
    Restart {
        containers: Vec<String>,
        pins: Vec<Pin>,
        warnings: Vec<String>,
        clear: Vec<String>,
        approved: bool,
    },
}

impl Decision {
    pub fn result(&self, dry_run: bool) -> RestartResult {
        match self {
            Decision::Skip(result) => *result,
            Decision::Wait { pending, .. } => match pending.reason {
                Reason::Approval => RestartResult::PendingApproval,
                Reason::Window | Reason::Interval => RestartResult::Deferred,
            },
            Decision::Restart { .. } if dry_run => RestartResult::WouldRestart,
            Decision::Restart { .. } => RestartResult::Restarted,
        }
    }
}

/// The workload's own annotation, else its pod template's.
fn annotation<'v>(view: &'v WorkloadView, key: &str) -> Option<&'v str> {
    view.annotations
        .get(key)
        .or_else(|| view.template_annotations.get(key))
        .map(|v| v.trim())
}

/// Decides a push for one workload at `now`. In order: opt-in and opt-out,
/// then the plan (matching, already current, older than what rolled),
/// then a newer push already waiting, a digest that failed before, and
/// the conditions: approval, window, interval. The first unmet condition
/// is why the push waits; the controller decides again when it clears.
pub fn decide(
    view: &WorkloadView,
    facts: &Facts<'_>,
    settings: Settings,
    now: jiff::Timestamp,
) -> Decision {
    if settings.opt_in && !annotation(view, OPT_OUT).is_some_and(|v| v.eq_ignore_ascii_case("true"))
    {
        return Decision::Skip(RestartResult::Excluded);
    }
    let decision = plan(
        view,
        facts.image_key,
        facts.digest,
        facts.published,
        settings.mode,
    );
    let Plan::Restart {
        containers,
        pins,
        warnings,
    } = decision
    else {
        return Decision::Skip(decision.result(false));
    };
    let waiting = Pending::of(&view.annotations);
    if let Some(w) = &waiting
        && w.digest != facts.digest
        && facts.published < w.publish_time
    {
        return Decision::Skip(RestartResult::Superseded);
    }
    let refused = containers.iter().all(|c| {
        view.annotations
            .get(&failed_annotation(c))
            .is_some_and(|d| d.trim() == facts.digest)
    });
    if refused {
        return Decision::Skip(RestartResult::Refused);
    }
    let wait = |reason: Reason, not_before: Option<jiff::Timestamp>, invalid: Option<Invalid>| {
        let since = waiting
            .as_ref()
            .filter(|w| w.digest == facts.digest)
            .map_or(now, |w| w.since);
        let pending = Pending {
            image: facts.image_key.to_owned(),
            digest: facts.digest.to_owned(),
            publish_time: facts.published,
            message_id: facts.message_id.map(str::to_owned),
            containers: containers.clone(),
            reason,
            since,
            not_before,
            error: invalid
                .as_ref()
                .map(|i| format!("{}: {}", i.annotation, i.error)),
            mode: settings.mode,
            opt_in: settings.opt_in,
        };
        let write = waiting.as_ref().is_none_or(|old| !pending.same_wait(old));
        Decision::Wait {
            pending,
            write,
            invalid,
        }
    };
    let invalid = |annotation: &'static str, error: String| Some(Invalid { annotation, error });
    let approve = view.annotations.get(APPROVE).map(|v| v.trim());
    let approved = approve == Some(facts.digest);
    let mut needs_approval = false;
    match annotation(view, APPROVAL)
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("" | "none" | "false") => {}
        Some("required") => needs_approval = true,
        Some(other) => {
            let error = format!("{other:?} is not \"required\"");
            return wait(Reason::Approval, None, invalid(APPROVAL, error));
        }
    }
    if needs_approval && !approved {
        return wait(Reason::Approval, None, None);
    }
    if let Some(value) = annotation(view, WINDOW) {
        match value.parse::<Windows>() {
            Err(e) => return wait(Reason::Window, None, invalid(WINDOW, e.to_string())),
            Ok(windows) if !windows.is_open(now) => {
                return wait(Reason::Window, windows.next_open(now), None);
            }
            Ok(_) => {}
        }
    }
    if let Some(value) = annotation(view, MIN_INTERVAL) {
        match min_interval(value) {
            Err(e) => return wait(Reason::Interval, None, invalid(MIN_INTERVAL, e)),
            Ok(interval) => {
                if let Some(at) = interval_ends(&view.template_annotations, interval)
                    && now < at
                {
                    return wait(Reason::Interval, Some(at), None);
                }
            }
        }
    }
    let mut clear = Vec::new();
    if view.annotations.contains_key(PENDING) {
        clear.push(PENDING.to_owned());
    }
    if approved {
        clear.push(APPROVE.to_owned());
    }
    clear.extend(
        containers
            .iter()
            .map(|c| failed_annotation(c))
            .filter(|k| view.annotations.contains_key(k)),
    );
    Decision::Restart {
        containers,
        pins,
        warnings,
        clear,
        approved: needs_approval,
    }
}

fn min_interval(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value).map_err(|e| format!("{value:?} is not a duration: {e}"))
}

/// When the interval since the template's last restart ends; `None` when
/// it never restarted.
fn interval_ends(
    template: &BTreeMap<String, String>,
    interval: Duration,
) -> Option<jiff::Timestamp> {
    let last: jiff::Timestamp = template.get(RESTARTED_AT)?.parse().ok()?;
    let interval = jiff::SignedDuration::try_from(interval).ok()?;
    last.checked_add(interval).ok()
}

/// Adds to a patch the removal of workload annotations (a strategic merge
/// patch's `null`).
pub fn clear_annotations(patch: &mut serde_json::Value, keys: &[String]) {
    if keys.is_empty() {
        return;
    }
    let meta = &mut patch["metadata"];
    for key in keys {
        meta["annotations"][key] = serde_json::Value::Null;
    }
}

/// The metadata patch that records a waiting push (guarded by the
/// resourceVersion, as the restart is).
pub fn pending_patch(resource_version: Option<&str>, pending: &Pending) -> serde_json::Value {
    pending_annotation_patch(resource_version, pending.to_json().into())
}

/// The patch that removes a waiting push the controller found obsolete
/// (already current, superseded, excluded, refused or not found).
pub fn drop_pending_patch(resource_version: Option<&str>) -> serde_json::Value {
    pending_annotation_patch(resource_version, serde_json::Value::Null)
}

/// `pushroll.io/pending` set to `value` (`null` removes it), guarded by
/// the resourceVersion read.
fn pending_annotation_patch(
    resource_version: Option<&str>,
    value: serde_json::Value,
) -> serde_json::Value {
    let mut patch = serde_json::json!({"metadata": {"annotations": {PENDING: value}}});
    if let Some(rv) = resource_version {
        patch["metadata"]["resourceVersion"] = rv.into();
    }
    patch
}

#[cfg(test)]
mod tests;
