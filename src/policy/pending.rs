//! The waiting push, as `pushroll.io/pending` keeps it on the workload's
//! metadata (not its template, so writing it rolls nothing). The workload
//! is the store: a record survives every pushroll process, and the
//! resourceVersion of the write that made it serializes racing writers.

use serde::{Deserialize, Serialize};

use crate::workload::Mode;

/// Why a push waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    /// `pushroll.io/approval: required`: until `pushroll.io/approve` names
    /// the digest.
    Approval,
    /// `pushroll.io/window`: until a window opens.
    Window,
    /// `pushroll.io/min-interval`: until the interval since the last
    /// restart has passed.
    Interval,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Approval => "approval",
            Reason::Window => "window",
            Reason::Interval => "interval",
        }
    }

    pub const ALL: [Reason; 3] = [Reason::Approval, Reason::Window, Reason::Interval];
}

/// A push that waits, with everything needed to carry it out later: the
/// controller decides it again under the same settings serve used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pending {
    /// The normalized tagged image pushed (`domain/path:tag`).
    pub image: String,
    pub digest: String,
    /// The message's publish time: the order check compares it.
    pub publish_time: jiff::Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// The containers that run the image.
    #[serde(default)]
    pub containers: Vec<String>,
    pub reason: Reason,
    /// When this push first waited.
    pub since: jiff::Timestamp,
    /// For a window or an interval: when it may run. Absent for an
    /// approval, and for an annotation that does not parse (`error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<jiff::Timestamp>,
    /// A policy annotation that does not parse: the push waits until it is
    /// fixed, never restarts outside the rules someone meant to set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `serve --mode` when the push arrived.
    #[serde(default)]
    pub mode: Mode,
    /// `serve --opt-in` when the push arrived.
    #[serde(default)]
    pub opt_in: bool,
}

impl Pending {
    /// The record on a workload's annotations; `None` when absent or not
    /// a record (a hand edit): treated as no waiting push.
    pub fn of(annotations: &std::collections::BTreeMap<String, String>) -> Option<Pending> {
        serde_json::from_str(annotations.get(super::PENDING)?).ok()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a record always serializes")
    }

    /// Whether `self` says what `old` says: the same digest waiting for
    /// the same thing. Which delivery brought it (message id, publish time
    /// of a duplicate, first-waited time) makes no new record.
    pub fn same_wait(&self, old: &Pending) -> bool {
        Pending {
            since: old.since,
            message_id: old.message_id.clone(),
            publish_time: old.publish_time,
            ..self.clone()
        } == *old
    }

    /// A sentence for Events and logs: why, and until when.
    pub fn describe(&self) -> String {
        let what = format!("A push of {} ({})", self.image, self.digest);
        if let Some(error) = &self.error {
            return format!(
                "{what} waits: a policy annotation is invalid ({error}); it is carried out once the annotation is fixed and its conditions hold"
            );
        }
        match (self.reason, self.not_before) {
            (Reason::Approval, _) => format!(
                "{what} waits for approval: pushroll approve KIND/NAME -n NAMESPACE --digest {}, or annotate pushroll.io/approve={}",
                self.digest, self.digest
            ),
            (Reason::Window, Some(at)) => {
                format!("{what} is deferred until the next window opens at {at}")
            }
            (Reason::Interval, Some(at)) => {
                format!("{what} is deferred by pushroll.io/min-interval until {at}")
            }
            (reason, None) => format!("{what} waits ({})", reason.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Pending {
        Pending {
            image: "r.example/app:v1".into(),
            digest: "sha256:aa".into(),
            publish_time: "2026-12-01T10:00:00Z".parse().unwrap(),
            message_id: Some("7".into()),
            containers: vec!["app".into()],
            reason: Reason::Window,
            since: "2026-12-01T10:00:01Z".parse().unwrap(),
            not_before: Some("2026-12-01T12:00:00Z".parse().unwrap()),
            error: None,
            mode: Mode::Pin,
            opt_in: true,
        }
    }

    #[test]
    fn the_record_round_trips_in_its_documented_form() {
        let json = record().to_json();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["publishTime"], "2026-12-01T10:00:00Z");
        assert_eq!(value["notBefore"], "2026-12-01T12:00:00Z");
        assert_eq!(value["reason"], "window");
        assert_eq!(value["mode"], "pin");
        assert_eq!(value["optIn"], true);
        assert!(value.get("error").is_none());
        let map = [(super::super::PENDING.to_owned(), json)].into();
        assert_eq!(Pending::of(&map), Some(record()));
        let junk = [(super::super::PENDING.to_owned(), "{not json".to_owned())].into();
        assert_eq!(Pending::of(&junk), None);
    }

    #[test]
    fn the_first_waited_time_does_not_make_a_new_wait() {
        let old = record();
        let again = Pending {
            since: "2026-12-01T11:00:00Z".parse().unwrap(),
            ..record()
        };
        assert!(again.same_wait(&old));
        let duplicate = Pending {
            message_id: Some("8".into()),
            publish_time: "2026-12-01T10:00:02Z".parse().unwrap(),
            ..record()
        };
        assert!(duplicate.same_wait(&old), "a duplicate delivery");
        let later = Pending {
            not_before: Some("2026-12-02T12:00:00Z".parse().unwrap()),
            ..record()
        };
        assert!(!later.same_wait(&old));
        let approval = Pending {
            reason: Reason::Approval,
            not_before: None,
            ..record()
        };
        assert!(!approval.same_wait(&old));
    }
}
