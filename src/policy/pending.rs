//! The waiting pushes, as `pushroll.io/pending` keeps them on the
//! workload's metadata (not its template, so writing it rolls nothing):
//! a JSON list with one record per pushed image (its normalized `R:T`),
//! so a sidecar's push waits beside the app's instead of replacing it.
//! The workload is the store: a record survives every pushroll process,
//! and the resourceVersion of the write that made it serializes racing
//! writers. Readers also take the older form, a single record.

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

/// The list form, or the older single record.
#[derive(Deserialize)]
#[serde(untagged)]
enum Stored {
    List(Vec<Pending>),
    One(Box<Pending>),
}

/// Every waiting push on a workload's annotations, one per image (the
/// first of duplicates wins); empty when absent or not records (a hand
/// edit): treated as no waiting push.
pub fn all(annotations: &std::collections::BTreeMap<String, String>) -> Vec<Pending> {
    let Some(value) = annotations.get(super::PENDING) else {
        return Vec::new();
    };
    let mut records = match serde_json::from_str(value) {
        Ok(Stored::List(list)) => list,
        Ok(Stored::One(one)) => vec![*one],
        Err(_) => Vec::new(),
    };
    let mut seen = std::collections::BTreeSet::new();
    records.retain(|r| seen.insert(r.image.clone()));
    records
}

/// The waiting push of `image`, if any.
pub fn of_image(
    annotations: &std::collections::BTreeMap<String, String>,
    image: &str,
) -> Option<Pending> {
    all(annotations).into_iter().find(|r| r.image == image)
}

/// The annotation's value once `image`'s record is replaced by `record`
/// (added, when it had none; removed, when `None`); `None` when no record
/// is left, and the annotation goes.
pub fn replaced(records: &[Pending], image: &str, record: Option<&Pending>) -> Option<String> {
    let mut list: Vec<&Pending> = records.iter().filter(|r| r.image != image).collect();
    list.extend(record);
    list.sort_by(|a, b| a.image.cmp(&b.image));
    (!list.is_empty()).then(|| serde_json::to_string(&list).expect("records always serialize"))
}

impl Pending {
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
        assert_eq!(all(&map), vec![record()], "the older single form");
        let junk = [(super::super::PENDING.to_owned(), "{not json".to_owned())].into();
        assert_eq!(all(&junk), vec![]);
    }

    #[test]
    fn one_record_per_image_side_by_side() {
        let app = record();
        let side = Pending {
            image: "r.example/side:v1".into(),
            digest: "sha256:bb".into(),
            containers: vec!["side".into()],
            ..record()
        };
        let newer_app = Pending {
            digest: "sha256:cc".into(),
            ..record()
        };
        let at = |v: Option<String>| -> std::collections::BTreeMap<String, String> {
            v.map(|v| (super::super::PENDING.to_owned(), v))
                .into_iter()
                .collect()
        };
        // (name, before, image, record, after)
        type Row = (
            &'static str,
            Vec<Pending>,
            &'static str,
            Option<Pending>,
            Vec<Pending>,
        );
        let table: Vec<Row> = vec![
            (
                "added to none",
                vec![],
                "r.example/app:v1",
                Some(app.clone()),
                vec![app.clone()],
            ),
            (
                "another image waits beside",
                vec![app.clone()],
                "r.example/side:v1",
                Some(side.clone()),
                vec![app.clone(), side.clone()],
            ),
            (
                "the same image is replaced",
                vec![app.clone(), side.clone()],
                "r.example/app:v1",
                Some(newer_app.clone()),
                vec![newer_app.clone(), side.clone()],
            ),
            (
                "one removed, the other stays",
                vec![app.clone(), side.clone()],
                "r.example/app:v1",
                None,
                vec![side.clone()],
            ),
            (
                "the last removed",
                vec![side.clone()],
                "r.example/side:v1",
                None,
                vec![],
            ),
        ];
        for (name, before, image, record, after) in table {
            let value = replaced(&before, image, record.as_ref());
            assert_eq!(value.is_none(), after.is_empty(), "{name}");
            assert_eq!(all(&at(value)), after, "{name}");
        }
        let both = at(replaced(
            std::slice::from_ref(&app),
            "r.example/side:v1",
            Some(&side),
        ));
        assert_eq!(of_image(&both, "r.example/side:v1"), Some(side));
        assert_eq!(of_image(&both, "r.example/other:v1"), None);
        // A hand-made list naming one image twice: the first counts.
        let twice = format!("[{},{}]", app.to_json(), newer_app.to_json());
        assert_eq!(all(&at(Some(twice))), vec![app]);
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
