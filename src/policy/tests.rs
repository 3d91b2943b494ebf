//! The decision table: opt-in × approval × window × interval × order ×
//! refused digest, as pure code.

use super::*;
use crate::plan::WorkloadView;

const KEY: &str = "r.example/p/app:v1";
const IMAGE: &str = "r.example/p/app:v1";
const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
/// The push decided in every row: D2, published at T.
const T: &str = "2026-12-01T10:00:00Z";
/// Now, in every row: a Tuesday.
const NOW: &str = "2026-12-01T10:00:05Z";

fn ts(s: &str) -> jiff::Timestamp {
    s.parse().unwrap()
}

fn view(own: &[(&str, &str)], template: &[(&str, &str)]) -> WorkloadView {
    let map = |kv: &[(&str, &str)]| {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    WorkloadView {
        resource_version: Some("5".into()),
        generation: Some(3),
        annotations_move_generation: false,
        annotations: map(own),
        template_annotations: map(template),
        containers: vec![("app".into(), IMAGE.into())],
        pull_policies: [("app".to_owned(), "Always".to_owned())].into(),
        init_containers: Default::default(),
    }
}

fn waiting(digest: &str, published: &str, reason: Reason) -> String {
    Pending {
        image: KEY.into(),
        digest: digest.into(),
        publish_time: ts(published),
        message_id: None,
        containers: vec!["app".into()],
        reason,
        since: ts("2026-12-01T09:00:00Z"),
        not_before: None,
        error: None,
        mode: Mode::Restart,
        opt_in: false,
    }
    .to_json()
}

fn decide_row(v: &WorkloadView, settings: Settings) -> Decision {
    let facts = Facts {
        image_key: KEY,
        digest: D2,
        published: ts(T),
        message_id: Some("42"),
    };
    decide(v, &facts, settings, ts(NOW))
}

/// What a row expects: the result, and for a wait whether it writes.
#[derive(Debug, PartialEq)]
enum Want {
    Result(RestartResult),
    Wait(RestartResult, bool),
}

fn summary(d: &Decision) -> Want {
    match d {
        Decision::Wait { write, .. } => Want::Wait(d.result(false), *write),
        other => Want::Result(other.result(false)),
    }
}

/// (name, settings, workload annotations, template annotations, want)
type Row<'a> = (
    &'a str,
    Settings,
    Vec<(&'a str, &'a str)>,
    Vec<(&'a str, &'a str)>,
    Want,
);

#[test]
fn the_decision_table() {
    use RestartResult::*;
    let plain = Settings::default();
    let opt_in = Settings {
        opt_in: true,
        ..Settings::default()
    };
    let yes = ("pushroll.io/restart", "true");
    let no = ("pushroll.io/restart", "false");
    let approval = ("pushroll.io/approval", "required");
    let approved = ("pushroll.io/approve", D2);
    let approved_other = ("pushroll.io/approve", D1);
    // Tuesday 10:00 UTC: inside the first, outside the second.
    let open = ("pushroll.io/window", "Mon-Fri 09:00-17:00 UTC");
    let closed = ("pushroll.io/window", "Sat-Sun 09:00-17:00 UTC");
    let broken = ("pushroll.io/window", "Mon-Fri 9 to 5");
    let interval = ("pushroll.io/min-interval", "15m");
    let recent = ("kubectl.kubernetes.io/restartedAt", "2026-12-01T09:50:00Z");
    let long_ago = ("kubectl.kubernetes.io/restartedAt", "2026-12-01T09:00:00Z");
    let newer_rolled = ("published.pushroll.io/app", "2026-12-01T11:00:00Z");
    let failed_d2 = ("failed.pushroll.io/app", D2);
    let failed_d1 = ("failed.pushroll.io/app", D1);
    let current = ("digest.pushroll.io/app", D2);
    let same_waiting = waiting(D2, T, Reason::Approval);
    let older_waiting = waiting(D1, "2026-12-01T09:00:00Z", Reason::Approval);
    let newer_waiting = waiting(D1, "2026-12-01T11:00:00Z", Reason::Approval);
    let p = |s: &str| ("pushroll.io/pending", s.to_owned());
    let side = |digest: &str, published: &str| Pending {
        image: "r.example/p/side:v1".into(),
        containers: vec!["side".into()],
        ..serde_json::from_str::<Pending>(&waiting(digest, published, Reason::Approval)).unwrap()
    };
    let list = |records: &[String]| format!("[{}]", records.join(","));
    let other_image_newer = list(&[side(D1, "2026-12-01T11:00:00Z").to_json()]);
    let both = list(&[
        same_waiting.clone(),
        side(D1, "2026-12-01T11:00:00Z").to_json(),
    ]);
    let both_newer = list(&[
        newer_waiting.clone(),
        side(D1, "2026-12-01T09:00:00Z").to_json(),
    ]);
    #[rustfmt::skip]
    let table: Vec<Row> = vec![
        ("no policy: restart", plain, vec![], vec![], Want::Result(Restarted)),
        ("opt-out", plain, vec![no], vec![], Want::Result(Excluded)),
        ("opt-in, not annotated", opt_in, vec![], vec![], Want::Result(Excluded)),
        ("opt-in, annotated", opt_in, vec![yes], vec![], Want::Result(Restarted)),
        ("opt-in, annotated on the template", opt_in, vec![], vec![yes], Want::Result(Restarted)),
        ("opt-in, opted out", opt_in, vec![no], vec![], Want::Result(Excluded)),
        ("approval needed", plain, vec![approval], vec![], Want::Wait(PendingApproval, true)),
        ("approval on the template", plain, vec![], vec![approval], Want::Wait(PendingApproval, true)),
        ("approval given for this digest", plain, vec![approval, approved], vec![], Want::Result(Restarted)),
        ("approval given for another digest", plain, vec![approval, approved_other], vec![], Want::Wait(PendingApproval, true)),
        ("approval: a typo waits", plain, vec![("pushroll.io/approval", "requird")], vec![], Want::Wait(PendingApproval, true)),
        ("approval: false", plain, vec![("pushroll.io/approval", "false")], vec![], Want::Result(Restarted)),
        ("opt-in wins over approval", opt_in, vec![approval], vec![], Want::Result(Excluded)),
        ("window open", plain, vec![open], vec![], Want::Result(Restarted)),
        ("window closed", plain, vec![closed], vec![], Want::Wait(Deferred, true)),
        ("window malformed: waits", plain, vec![broken], vec![], Want::Wait(Deferred, true)),
        ("approved, window closed", plain, vec![approval, approved, closed], vec![], Want::Wait(Deferred, true)),
        ("not approved, window closed: approval first", plain, vec![approval, closed], vec![], Want::Wait(PendingApproval, true)),
        ("interval not passed", plain, vec![interval], vec![recent], Want::Wait(Deferred, true)),
        ("interval passed", plain, vec![interval], vec![long_ago], Want::Result(Restarted)),
        ("interval, never restarted", plain, vec![interval], vec![], Want::Result(Restarted)),
        ("interval malformed: waits", plain, vec![("pushroll.io/min-interval", "soon")], vec![], Want::Wait(Deferred, true)),
        ("interval past 100 years: invalid, waits", plain, vec![("pushroll.io/min-interval", "10000y")], vec![recent], Want::Wait(Deferred, true)),
        ("interval past 100 years, never restarted: waits", plain, vec![("pushroll.io/min-interval", "101y")], vec![], Want::Wait(Deferred, true)),
        ("interval of 100 years: valid, not passed", plain, vec![("pushroll.io/min-interval", "100y")], vec![recent], Want::Wait(Deferred, true)),
        ("window open, interval not passed", plain, vec![open, interval], vec![recent], Want::Wait(Deferred, true)),
        ("already current beats every policy", plain, vec![approval, closed], vec![current], Want::Result(AlreadyCurrent)),
        ("older than what rolled", plain, vec![approval], vec![newer_rolled], Want::Result(Superseded)),
        ("refused: this digest failed", plain, vec![failed_d2], vec![], Want::Result(Refused)),
        ("refused before approval", plain, vec![failed_d2, approval], vec![], Want::Result(Refused)),
        ("another digest failed: rolls", plain, vec![failed_d1], vec![], Want::Result(Restarted)),
    ];
    for (name, settings, own, template, want) in table {
        let v = view(&own, &template);
        assert_eq!(summary(&decide_row(&v, settings)), want, "{name}");
    }
    // Rows with a waiting push already recorded.
    let with = |extra: &[(&str, &str)], record: &str| {
        let mut v = view(extra, &[]);
        v.annotations.insert(p(record).0.into(), p(record).1);
        v
    };
    #[rustfmt::skip]
    let waiting_rows: Vec<(&str, WorkloadView, Want)> = vec![
        ("a redelivery of the waiting push writes nothing", with(&[approval], &same_waiting), Want::Wait(PendingApproval, false)),
        ("a newer push replaces an older waiting one", with(&[approval], &older_waiting), Want::Wait(PendingApproval, true)),
        ("an older push than the waiting one is superseded", with(&[approval], &newer_waiting), Want::Result(Superseded)),
        ("the waiting push, approved: rolls", with(&[approval, approved], &same_waiting), Want::Result(Restarted)),
        ("a reason that changed is written", with(&[approval, approved, closed], &same_waiting), Want::Wait(Deferred, true)),
        ("a record that is not JSON is overwritten", with(&[approval], "{oops"), Want::Wait(PendingApproval, true)),
        ("another image's newer record waits beside: never superseded", with(&[approval], &other_image_newer), Want::Wait(PendingApproval, true)),
        ("a redelivery beside another image's record writes nothing", with(&[approval], &both), Want::Wait(PendingApproval, false)),
        ("an older push than its own image's record, beside another image: superseded", with(&[approval], &both_newer), Want::Result(Superseded)),
    ];
    for (name, v, want) in waiting_rows {
        assert_eq!(summary(&decide_row(&v, plain)), want, "{name}");
    }
}

#[test]
fn a_wait_records_what_the_controller_needs() {
    let v = view(
        &[("pushroll.io/min-interval", "15m")],
        &[("kubectl.kubernetes.io/restartedAt", "2026-12-01T09:50:00Z")],
    );
    let settings = Settings {
        mode: Mode::Pin,
        opt_in: true,
    };
    let mut v = v;
    v.annotations
        .insert("pushroll.io/restart".into(), "true".into());
    let Decision::Wait {
        pending,
        write: true,
        invalid: None,
        ..
    } = decide_row(&v, settings)
    else {
        panic!("an interval not passed waits");
    };
    assert_eq!(pending.reason, Reason::Interval);
    assert_eq!(pending.not_before, Some(ts("2026-12-01T10:05:00Z")));
    assert_eq!(pending.digest, D2);
    assert_eq!(pending.image, KEY);
    assert_eq!(pending.message_id.as_deref(), Some("42"));
    assert_eq!(pending.containers, vec!["app".to_owned()]);
    assert_eq!(pending.since, ts(NOW));
    assert_eq!((pending.mode, pending.opt_in), (Mode::Pin, true));
    // A malformed value names itself, and never says when.
    let v = view(&[("pushroll.io/min-interval", "soon")], &[]);
    let Decision::Wait {
        pending, invalid, ..
    } = decide_row(&v, Settings::default())
    else {
        panic!("a malformed interval waits");
    };
    assert_eq!(pending.not_before, None);
    let invalid = invalid.expect("reported");
    assert_eq!(invalid.annotation, MIN_INTERVAL);
    assert!(pending.error.unwrap().contains("soon"));
}

#[test]
fn a_restart_clears_what_it_used_and_records_its_rollout() {
    let side = Pending {
        image: "r.example/p/side:v1".into(),
        ..serde_json::from_str::<Pending>(&waiting(D1, T, Reason::Approval)).unwrap()
    };
    let mut v = view(
        &[
            ("pushroll.io/approval", "required"),
            ("pushroll.io/approve", D2),
            ("failed.pushroll.io/app", D1),
        ],
        &[],
    );
    let own: Pending = serde_json::from_str(&waiting(D2, T, Reason::Approval)).unwrap();
    v.annotations.insert(
        PENDING.into(),
        pending::replaced(&[own], "r.example/p/side:v1", Some(&side)).unwrap(),
    );
    let Decision::Restart {
        metadata, approved, ..
    } = decide_row(&v, Settings::default())
    else {
        panic!("approved: rolls");
    };
    assert!(approved);
    let keys: Vec<&str> = metadata.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "failed.pushroll.io/app",
            APPROVE,
            PENDING,
            crate::rollout::ROLLOUT
        ]
    );
    assert_eq!(metadata[APPROVE], None, "the approval is used once");
    assert_eq!(metadata["failed.pushroll.io/app"], None);
    // Only this image's waiting push goes: the sidecar's stays.
    let left: BTreeMap<String, String> =
        [(PENDING.to_owned(), metadata[PENDING].clone().unwrap())].into();
    assert_eq!(pending::all(&left), vec![side]);
    // The record of this rollout: the generation the write produces.
    let record: crate::rollout::Pushed =
        serde_json::from_str(metadata[crate::rollout::ROLLOUT].as_deref().unwrap()).unwrap();
    assert_eq!(record.generation, 4);
    assert_eq!(record.digest, D2);
    assert_eq!(record.containers, ["app"]);
    assert_eq!(record.restarted_at, ts("2026-12-01T10:00:05Z"));
    let mut patch = serde_json::json!({"metadata": {"resourceVersion": "5"}});
    set_annotations(&mut patch, &metadata);
    assert_eq!(
        patch["metadata"]["annotations"][APPROVE],
        serde_json::Value::Null
    );
    assert_eq!(patch["metadata"]["resourceVersion"], "5");
    // An approval of another digest is left for that digest.
    let v = view(&[("pushroll.io/approve", D1)], &[]);
    let Decision::Restart {
        metadata, approved, ..
    } = decide_row(&v, Settings::default())
    else {
        panic!("no policy: rolls");
    };
    assert!(!approved);
    assert_eq!(
        metadata.keys().collect::<Vec<_>>(),
        [crate::rollout::ROLLOUT],
        "the record alone"
    );
}

/// An approval is used once: a newer digest replacing the approved one's
/// waiting push takes the approval with it.
#[test]
fn a_newer_push_takes_the_approval_of_the_one_it_replaces() {
    let closed = ("pushroll.io/window", "Sat-Sun 09:00-17:00 UTC");
    // D1 approved, waiting for the window; D2 (the push decided) arrives.
    let mut v = view(&[("pushroll.io/approve", D1), closed], &[]);
    v.annotations.insert(
        PENDING.into(),
        waiting(D1, "2026-12-01T09:00:00Z", Reason::Window),
    );
    let Decision::Wait { metadata, .. } = decide_row(&v, Settings::default()) else {
        panic!("the window is closed: waits");
    };
    assert_eq!(metadata.get(APPROVE), Some(&None), "D1's approval goes");
    // A redelivery of the approved push itself keeps it.
    let mut v = view(&[("pushroll.io/approve", D2), closed], &[]);
    v.annotations
        .insert(PENDING.into(), waiting(D2, T, Reason::Window));
    let Decision::Wait { metadata, .. } = decide_row(&v, Settings::default()) else {
        panic!("waits");
    };
    assert_eq!(metadata.get(APPROVE), None);
}

/// A waiting push written on a Deployment moves its generation: the
/// rollout record of a rollout pushroll follows moves with it, so the
/// follower keeps it; on a StatefulSet nothing moves.
#[test]
fn a_waiting_write_keeps_the_rollout_it_follows() {
    let record = crate::rollout::Pushed {
        digest: D1.into(),
        containers: vec!["app".into()],
        restarted_at: ts("2026-12-01T09:59:00Z"),
        generation: 3,
        image: None,
    };
    let closed = ("pushroll.io/window", "Sat-Sun 09:00-17:00 UTC");
    let json = record.to_json();
    for (moves, current, want) in [
        (true, Some(3), Some(4)),
        (false, Some(3), None),
        (true, Some(5), None),
    ] {
        let mut v = view(&[closed, (crate::rollout::ROLLOUT, &json)], &[]);
        v.annotations_move_generation = moves;
        v.generation = current;
        let Decision::Wait { metadata, .. } = decide_row(&v, Settings::default()) else {
            panic!("waits");
        };
        let carried = metadata
            .get(crate::rollout::ROLLOUT)
            .and_then(|r| r.as_deref())
            .map(|r| {
                serde_json::from_str::<crate::rollout::Pushed>(r)
                    .unwrap()
                    .generation
            });
        assert_eq!(carried, want, "moves {moves}, generation {current:?}");
    }
}
