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
use crate::rollout::{Pushed, ROLLOUT};
use crate::workload::Mode;

/// Workload annotations a write sets (`Some`) or removes (`None`).
pub type Metadata = BTreeMap<String, Option<String>>;

/// The longest `pushroll.io/min-interval` that means something: beyond
/// it a value is a typo, never "no interval".
const LONGEST_INTERVAL: Duration = Duration::from_secs(100 * 366 * 24 * 3600);

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
    /// The push waits: write `metadata` (its record among the waiting
    /// pushes of other images; when `write`: a redelivery of the push
    /// already waiting writes nothing) and answer.
    Wait {
        pending: Pending,
        write: bool,
        invalid: Option<Invalid>,
        metadata: Metadata,
    },
    /// Roll, as [`Plan::Restart`]; `metadata` holds what the same write
    /// does to the workload's annotations: the rollout record (see
    /// [`ROLLOUT`]), this image's waiting push removed (others stay), the
    /// approval it used and the failed digests a newer push replaces
    /// removed. `approved`: a person approved this digest.
    Restart {
        containers: Vec<String>,
        pins: Vec<Pin>,
        warnings: Vec<String>,
        metadata: Metadata,
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
    let records = pending::all(&view.annotations);
    // Only the same image's waiting push orders this one: another image's
    // (a sidecar, a second tag) waits beside it.
    let waiting = records.iter().find(|r| r.image == facts.image_key);
    if let Some(w) = waiting
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
    let approve = view.annotations.get(APPROVE).map(|v| v.trim());
    let wait = |reason: Reason, not_before: Option<jiff::Timestamp>, invalid: Option<Invalid>| {
        let since = waiting
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
        let write = waiting.is_none_or(|old| !pending.same_wait(old));
        let mut metadata = Metadata::new();
        metadata.insert(
            PENDING.to_owned(),
            pending::replaced(&records, facts.image_key, Some(&pending)),
        );
        // An approval is used once: a newer digest replacing the approved
        // one's waiting push takes the approval away with it.
        if let Some(old) = waiting
            && old.digest != facts.digest
            && approve == Some(old.digest.as_str())
        {
            metadata.insert(APPROVE.to_owned(), None);
        }
        carry_rollout(view, &mut metadata);
        Decision::Wait {
            pending,
            write,
            invalid,
            metadata,
        }
    };
    let invalid = |annotation: &'static str, error: String| Some(Invalid { annotation, error });
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
        let ends = min_interval(value).and_then(|interval| {
            interval_ends(&view.template_annotations, interval)
                .map_err(|e| format!("{value:?}: {e}"))
        });
        match ends {
            Err(e) => return wait(Reason::Interval, None, invalid(MIN_INTERVAL, e)),
            Ok(Some(at)) if now < at => return wait(Reason::Interval, Some(at), None),
            Ok(_) => {}
        }
    }
    let mut metadata = Metadata::new();
    if waiting.is_some() {
        metadata.insert(
            PENDING.to_owned(),
            pending::replaced(&records, facts.image_key, None),
        );
    }
    if approved {
        metadata.insert(APPROVE.to_owned(), None);
    }
    for c in &containers {
        let key = failed_annotation(c);
        if view.annotations.contains_key(&key) {
            metadata.insert(key, None);
        }
    }
    let record = Pushed {
        digest: facts.digest.to_owned(),
        containers: containers.clone(),
        restarted_at: restarted_at(now),
        // The write changes the template: the generation moves by one
        // (the resourceVersion it carries rules out any other change
        // between the read and the write).
        generation: view.generation.unwrap_or(0) + 1,
        image: Some(facts.image_key.to_owned()),
    };
    metadata.insert(ROLLOUT.to_owned(), Some(record.to_json()));
    Decision::Restart {
        containers,
        pins,
        warnings,
        metadata,
        approved: needs_approval,
    }
}

/// `kubectl.kubernetes.io/restartedAt` as a restart at `now` writes it
/// (whole seconds), so the rollout record says the same time.
pub fn restarted_at(now: jiff::Timestamp) -> jiff::Timestamp {
    jiff::Timestamp::from_second(now.as_second()).unwrap_or(now)
}

/// A write of metadata alone (a waiting push) on a workload whose
/// generation moves with its annotations (a Deployment): the current
/// rollout record moves with it, so that pushroll's own write does not
/// take the rollout it is following away from itself.
fn carry_rollout(view: &WorkloadView, metadata: &mut Metadata) {
    if !view.annotations_move_generation {
        return;
    }
    if let Some(mut record) = crate::rollout::ours(&view.annotations, view.generation) {
        record.generation += 1;
        metadata.insert(ROLLOUT.to_owned(), Some(record.to_json()));
    }
}

/// `pushroll approve`'s write: the approval, and the rollout record
/// carried along (see [`carry_rollout`]).
pub fn approve_metadata(view: &WorkloadView, digest: &str) -> Metadata {
    let mut metadata = Metadata::new();
    metadata.insert(APPROVE.to_owned(), Some(digest.to_owned()));
    carry_rollout(view, &mut metadata);
    metadata
}

/// The write that removes `image`'s waiting push, found obsolete by the
/// controller (already current, superseded, excluded, refused, not
/// found); others stay.
pub fn drop_waiting(view: &WorkloadView, image: &str) -> Metadata {
    let records = pending::all(&view.annotations);
    let mut metadata = Metadata::new();
    metadata.insert(PENDING.to_owned(), pending::replaced(&records, image, None));
    carry_rollout(view, &mut metadata);
    metadata
}

/// A duration that does not fit (beyond [`LONGEST_INTERVAL`]) is
/// invalid: read as "no interval", it would let every push through.
fn min_interval(value: &str) -> Result<Duration, String> {
    let interval = humantime::parse_duration(value)
        .map_err(|e| format!("{value:?} is not a duration: {e}"))?;
    if interval > LONGEST_INTERVAL {
        return Err(format!("{value:?} is longer than 100 years"));
    }
    Ok(interval)
}

/// When the interval since the template's last restart ends; `None` when
/// it never restarted; an error when the end is past the last time there
/// is.
fn interval_ends(
    template: &BTreeMap<String, String>,
    interval: Duration,
) -> Result<Option<jiff::Timestamp>, String> {
    let Some(last) = template
        .get(RESTARTED_AT)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
    else {
        return Ok(None);
    };
    jiff::SignedDuration::try_from(interval)
        .ok()
        .and_then(|i| last.checked_add(i).ok())
        .map(Some)
        .ok_or_else(|| "the interval ends past the last representable time".to_owned())
}

/// Adds a workload annotation write to a strategic merge patch (`null`
/// removes).
pub fn set_annotations(patch: &mut serde_json::Value, metadata: &Metadata) {
    for (key, value) in metadata {
        patch["metadata"]["annotations"][key] = match value {
            Some(v) => serde_json::Value::String(v.clone()),
            None => serde_json::Value::Null,
        };
    }
}

/// The metadata patch that writes `metadata` alone (a waiting push),
/// guarded by the resourceVersion read, as the restart is.
pub fn metadata_patch(resource_version: Option<&str>, metadata: &Metadata) -> serde_json::Value {
    let mut patch = serde_json::json!({"metadata": {}});
    if let Some(rv) = resource_version {
        patch["metadata"]["resourceVersion"] = rv.into();
    }
    set_annotations(&mut patch, metadata);
    patch
}

#[cfg(test)]
mod tests;
