//! Property-based tests (issue 6) over the pure parts, through the public
//! API: decoding a push (`pushroll::push`), normalizing references
//! (`pushroll::reference`), planning a restart (`pushroll::plan`) and
//! reading the index (`pushroll::index`). The "never panics on anything"
//! properties are the stable-toolchain run of the fuzz targets in `fuzz/`.

use std::collections::BTreeMap;
use std::io::Write as _;

use base64::Engine as _;
use proptest::prelude::*;
use pushroll::index::Index;
use pushroll::plan::{
    DIGEST_PREFIX, OPT_OUT, Plan, RESTARTED_AT, WorkloadView, digest_annotation, plan,
    published_annotation, restart_patch,
};
use pushroll::push::{Action, Form, IgnoreReason, PushHeaders, decode};
use pushroll::reference::{Reference, match_key};
use pushroll::workload::{Kind, Mode, WorkloadRef};
use serde_json::{Value, json};

// ---------------------------------------------------------------- strategies

/// A path component of the Docker grammar: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn component() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,6}(([._]|__|-{1,3})[a-z0-9]{1,6}){0,2}"
}

/// A registry host that the grammar takes for one: DNS labels with a dot,
/// any case, optional port; or `localhost:PORT`.
fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        (
            prop::collection::vec("[a-zA-Z0-9]([a-zA-Z0-9-]{0,5}[a-zA-Z0-9])?", 2..4),
            prop::option::of(1u16..),
        )
            .prop_map(|(labels, port)| {
                let mut h = labels.join(".");
                if let Some(p) = port {
                    h.push_str(&format!(":{p}"));
                }
                h
            }),
        (1u16..).prop_map(|p| format!("localhost:{p}")),
    ]
}

fn tag() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"
}

fn digest() -> impl Strategy<Value = String> {
    "[0-9a-f]{64}".prop_map(|h| format!("sha256:{h}"))
}

/// The parts of a valid reference.
#[derive(Debug, Clone)]
struct Parts {
    host: Option<String>,
    path: Vec<String>,
    tag: Option<String>,
    digest: Option<String>,
}

impl Parts {
    fn name(&self) -> String {
        let path = self.path.join("/");
        match &self.host {
            Some(h) => format!("{h}/{path}"),
            None => path,
        }
    }

    fn render(&self) -> String {
        let mut s = self.name();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }
}

fn parts() -> impl Strategy<Value = Parts> {
    (
        prop::option::of(host()),
        prop::collection::vec(component(), 1..4),
        prop::option::of(tag()),
        prop::option::of(digest()),
    )
        .prop_map(|(host, mut path, tag, digest)| {
            // Without a host, a first component with a '.' would be taken
            // for one (the grammar's rule): keep it a path.
            if host.is_none() {
                path[0] = path[0].replace('.', "-");
            }
            Parts {
                host,
                path,
                tag,
                digest,
            }
        })
}

/// A repository with an explicit (lowercase) registry, like Artifact
/// Registry's, and a tag: what a push names.
fn pushed() -> impl Strategy<Value = (String, String, String)> {
    (
        host(),
        prop::collection::vec(component(), 1..4),
        tag(),
        digest(),
    )
        .prop_map(|(h, path, t, d)| (format!("{}/{}", h.to_lowercase(), path.join("/")), t, d))
}

/// Text made of the characters references are made of, and a few others;
/// and short names whose first component has upper case (the fuzzer's
/// first find: `Lv/v`).
fn reference_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9:/@._\\-\\[\\] ]{0,60}",
        "[a-zA-Z0-9]{1,4}(/[a-zA-Z0-9.]{1,4}){1,2}(:[a-zA-Z0-9]{1,3})?",
    ]
}

/// Failing cases are kept beside this file, to be replayed first.
fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(
                "tests/it/properties.proptest-regressions",
            ),
        )),
        ..ProptestConfig::default()
    }
}

// ------------------------------------------------------- reference properties

proptest! {
    #![proptest_config(config())]

    /// Valid references parse, and parse → to_string → parse is stable.
    #[test]
    fn parse_display_parse_is_stable(p in parts()) {
        let s = p.render();
        let r = Reference::parse(&s).map_err(|e| TestCaseError::fail(format!("{s:?}: {e}")))?;
        let shown = r.to_string();
        let again = Reference::parse(&shown).unwrap();
        prop_assert_eq!(&again, &r, "{} → {}", s, shown);
        prop_assert_eq!(again.to_string(), shown);
        prop_assert_eq!(r.tag(), p.tag.as_deref());
        prop_assert_eq!(r.digest(), p.digest.as_deref());
        prop_assert_eq!(r.is_pinned(), p.digest.is_some());
    }

    /// Whatever string parses at all round-trips the same way.
    #[test]
    fn anything_that_parses_round_trips(s in reference_like()) {
        if let Ok(r) = Reference::parse(&s) {
            let again = Reference::parse(&r.to_string());
            prop_assert_eq!(again.as_ref(), Ok(&r), "{:?} → {}", s, r);
        }
    }

    /// `tagged()` is a fixed point: normalizing a normalized key changes
    /// nothing, it always has a tag and never a digest.
    #[test]
    fn tagged_is_idempotent(p in parts()) {
        let r = Reference::parse(&p.render()).unwrap();
        let key = r.tagged();
        let k = Reference::parse(&key).unwrap();
        prop_assert_eq!(k.tagged(), key.clone());
        prop_assert!(k.tag().is_some());
        prop_assert!(!k.is_pinned());
        prop_assert_eq!(k.name(), r.name());
        // match_key: the key of an unpinned reference, nothing for a pinned one.
        let want = if r.is_pinned() { None } else { Some(key) };
        prop_assert_eq!(match_key(&p.render()), want);
    }

    /// The registry host's case does not matter.
    #[test]
    fn host_case_is_irrelevant(p in parts(), mask in prop::collection::vec(any::<bool>(), 64)) {
        prop_assume!(p.host.is_some());
        let host = p.host.clone().unwrap();
        let flipped: String = host
            .chars()
            .zip(mask.iter().cycle())
            .map(|(c, up)| if *up { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() })
            .collect();
        let other = Parts { host: Some(flipped), ..p.clone() };
        let a = Reference::parse(&p.render()).unwrap();
        let b = Reference::parse(&other.render()).unwrap();
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(a.name().to_string(), a.name().to_lowercase());
    }

    /// Docker Hub shorthand: `x`, `docker.io/library/x` and
    /// `index.docker.io/library/x` are one image, `latest` by default.
    #[test]
    fn docker_hub_shorthand(c in component(), t in prop::option::of(tag())) {
        let suffix = t.as_ref().map(|t| format!(":{t}")).unwrap_or_default();
        let short = Reference::parse(&format!("{c}{suffix}")).unwrap();
        for long in [format!("docker.io/library/{c}{suffix}"), format!("index.docker.io/library/{c}{suffix}")] {
            prop_assert_eq!(&Reference::parse(&long).unwrap(), &short);
        }
        let want = format!("docker.io/library/{c}:{}", t.as_deref().unwrap_or("latest"));
        prop_assert_eq!(short.tagged(), want);
    }

    /// A path component with upper case is never a valid name.
    #[test]
    fn upper_case_paths_are_refused(h in host(), c in "[a-z0-9]{0,4}[A-Z][a-zA-Z0-9]{0,4}") {
        let s = format!("{}/{c}:v1", h.to_lowercase());
        let parsed = Reference::parse(&s);
        prop_assert!(parsed.is_err(), "{:?} parsed as {:?}", s, parsed);
    }
}

// ---------------------------------------------------------- decode properties

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// A wrapped envelope as the emulator sends it, with the id in camelCase,
/// snake_case or both, and `/` escaped or not.
fn envelope(data: &str, id: &str, id_style: u8, escape: bool) -> String {
    let mut message =
        json!({"data": b64(data.as_bytes()), "publishTime": "2026-11-26T22:47:29.798Z"});
    if id_style != 1 {
        message["messageId"] = json!(id);
    }
    if id_style != 0 {
        message["message_id"] = json!(id);
    }
    let text =
        json!({"subscription": "projects/p/subscriptions/s", "message": message}).to_string();
    if escape {
        text.replace('/', "\\/")
    } else {
        text
    }
}

proptest! {
    #![proptest_config(config())]

    /// Any bytes, with or without the unwrapped headers: an answer, no panic.
    #[test]
    fn decode_never_panics(
        body in prop::collection::vec(any::<u8>(), 0..512),
        id in prop::option::of("\\PC{0,8}"),
        sub in prop::option::of("\\PC{0,8}"),
    ) {
        let headers = PushHeaders { message_id: id.as_deref(), subscription: sub.as_deref(), publish_time: None };
        let _ = decode(headers, &body);
    }

    /// JSON of any shape (envelopes with odd members included): no panic.
    #[test]
    fn decode_never_panics_on_json(v in json_value(), wrap in any::<bool>()) {
        let body = if wrap { json!({"message": v}) } else { v };
        let _ = decode(PushHeaders::default(), body.to_string().as_bytes());
    }

    /// The three forms of one notification mean the same thing.
    #[test]
    fn the_three_forms_agree(
        (repo, t, d) in pushed(),
        id in "[0-9]{1,12}",
        id_style in 0u8..3,
        escape in any::<bool>(),
        bare_digest in any::<bool>(),
    ) {
        let digest_field = if bare_digest { d.clone() } else { format!("{repo}@{d}") };
        let data = json!({"action": "INSERT", "digest": digest_field, "tag": format!("{repo}:{t}")}).to_string();
        let want = Action::Restart { image: Reference::parse(&format!("{repo}:{t}")).unwrap(), digest: d.clone() };
        let wrapped = decode(PushHeaders::default(), envelope(&data, &id, id_style, escape).as_bytes()).unwrap();
        prop_assert_eq!(wrapped.form, Form::Wrapped);
        prop_assert_eq!(wrapped.message_id.as_deref(), Some(id.as_str()));
        prop_assert_eq!(wrapped.subscription.as_deref(), Some("projects/p/subscriptions/s"));
        prop_assert_eq!(&wrapped.action, &want);
        let headers = PushHeaders { message_id: Some(&id), subscription: Some("projects/p/subscriptions/u"), publish_time: None };
        let unwrapped = decode(headers, data.as_bytes()).unwrap();
        prop_assert_eq!(unwrapped.form, Form::Unwrapped);
        prop_assert_eq!(unwrapped.message_id.as_deref(), Some(id.as_str()));
        prop_assert_eq!(&unwrapped.action, &want);
        let bare = decode(PushHeaders::default(), data.as_bytes()).unwrap();
        prop_assert_eq!(bare.form, Form::Bare);
        prop_assert_eq!(&bare.action, &want);
        for d in [&wrapped, &unwrapped, &bare] {
            prop_assert_eq!(d.action_name.as_deref(), Some("INSERT"));
        }
    }

    /// A well-formed delivery is never a 400, whatever its data: base64 of
    /// any bytes in an envelope, any body with the unwrapped header.
    #[test]
    fn any_data_in_a_delivery_is_well_formed(data in prop::collection::vec(any::<u8>(), 0..256)) {
        let body = json!({"message": {"data": b64(&data), "messageId": "1"}}).to_string();
        prop_assert!(decode(PushHeaders::default(), body.as_bytes()).is_ok());
        let headers = PushHeaders { message_id: Some("1"), subscription: None, publish_time: None };
        prop_assert!(decode(headers, &data).is_ok());
    }

    /// DELETE restarts nothing; an INSERT without a tag neither.
    #[test]
    fn deletes_and_untagged_digests_are_ignored((repo, t, d) in pushed()) {
        let delete = json!({"action": "DELETE", "tag": format!("{repo}:{t}"), "digest": format!("{repo}@{d}")}).to_string();
        let got = decode(PushHeaders::default(), delete.as_bytes()).unwrap();
        prop_assert_eq!(got.action, Action::Ignore(IgnoreReason::Delete));
        let untagged = json!({"action": "INSERT", "digest": format!("{repo}@{d}")}).to_string();
        let got = decode(PushHeaders::default(), untagged.as_bytes()).unwrap();
        prop_assert_eq!(got.action, Action::Ignore(IgnoreReason::UntaggedDigest));
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
        prop_oneof![
            Just("INSERT"),
            Just("DELETE"),
            Just("message"),
            Just("data"),
            Just("aGVsbG8="),
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("message".to_string()),
                    Just("data".to_string()),
                    Just("action".to_string()),
                    Just("tag".to_string()),
                    Just("digest".to_string()),
                    Just("messageId".to_string()),
                    "[a-z_]{1,8}",
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

// ------------------------------------------------------------ plan properties

const KEY: &str = "us-east1-docker.pkg.dev/p/r/app:v1";
const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

/// Images a container may run: the pushed one in several spellings, pinned
/// ones, other tags and other images.
fn image() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("us-east1-docker.pkg.dev/p/r/app:v1".to_string()),
        Just("US-East1-Docker.pkg.dev/p/r/app:v1".to_string()),
        Just(format!("us-east1-docker.pkg.dev/p/r/app:v1@{D1}")),
        Just(format!("us-east1-docker.pkg.dev/p/r/app@{D2}")),
        Just("us-east1-docker.pkg.dev/p/r/app:v2".to_string()),
        Just("us-east1-docker.pkg.dev/p/r/app".to_string()),
        Just("nginx".to_string()),
        Just("not a reference".to_string()),
    ]
}

fn annotations() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(
        prop_oneof![
            Just(OPT_OUT.to_string()),
            Just(digest_annotation("a")),
            Just(digest_annotation("b")),
            Just(digest_annotation("c")),
            Just(RESTARTED_AT.to_string()),
            "[a-z./]{1,12}",
        ],
        prop_oneof![
            Just(D1.to_string()),
            Just(D2.to_string()),
            Just("false".to_string()),
            Just("true".to_string()),
            "[a-zA-Z ]{0,6}",
        ],
        0..5,
    )
}

fn view() -> impl Strategy<Value = WorkloadView> {
    (
        prop::option::of("[0-9]{1,6}"),
        annotations(),
        annotations(),
        prop::collection::vec(
            (
                prop_oneof![Just("a"), Just("b"), Just("c")].prop_map(str::to_string),
                image(),
            ),
            0..5,
        ),
    )
        .prop_map(
            |(resource_version, annotations, template_annotations, containers)| WorkloadView {
                resource_version,
                generation: Some(1),
                annotations_move_generation: false,
                annotations,
                template_annotations,
                containers,
                pull_policies: BTreeMap::new(),
                init_containers: Default::default(),
            },
        )
}

/// The publish time of the push in the plan properties.
fn published() -> jiff::Timestamp {
    "2026-11-26T22:47:29.798Z".parse().unwrap()
}

fn matching(v: &WorkloadView) -> Vec<String> {
    let mut names: Vec<String> = v
        .containers
        .iter()
        .filter(|(_, i)| match_key(i).as_deref() == Some(KEY))
        .map(|(n, _)| n.clone())
        .collect();
    names.sort();
    names.dedup();
    names
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn plan_decides_by_the_rules(v in view(), digest in prop_oneof![Just(D1), Just(D2)]) {
        let decision = plan(&v, KEY, digest, published(), Mode::Restart);
        let opted_out = |m: &BTreeMap<String, String>| m.get(OPT_OUT).map(String::as_str) == Some("false");
        let matching = matching(&v);
        let all_current = matching
            .iter()
            .all(|c| v.template_annotations.get(&digest_annotation(c)).map(String::as_str) == Some(digest));
        // Never a restart when opted out.
        if opted_out(&v.annotations) || opted_out(&v.template_annotations) {
            prop_assert_eq!(&decision, &Plan::Excluded);
        }
        if !v.annotations.contains_key(OPT_OUT) && !v.template_annotations.contains_key(OPT_OUT) {
            prop_assert_ne!(&decision, &Plan::Excluded);
        }
        match &decision {
            Plan::Excluded => {}
            Plan::NotFound => prop_assert!(matching.is_empty()),
            Plan::AlreadyCurrent => prop_assert!(!matching.is_empty() && all_current),
            Plan::Superseded => prop_assert!(!matching.is_empty()),
            Plan::Restart { containers, .. } => {
                // Exactly the containers that run the image, and never when
                // all of them already carry the digest.
                prop_assert_eq!(containers, &matching);
                prop_assert!(!all_current);
            }
        }
    }

    /// The patch: restartedAt, one digest key per container, the
    /// resourceVersion guard when known; and once applied the workload is
    /// current (a redelivery restarts nothing).
    #[test]
    fn restart_patch_is_complete_and_idempotent(v in view(), digest in prop_oneof![Just(D1), Just(D2)], secs in 0i64..4_000_000_000) {
        let Plan::Restart { containers, .. } = plan(&v, KEY, digest, published(), Mode::Restart) else {
            return Ok(());
        };
        let now = jiff::Timestamp::from_second(secs).unwrap();
        let patch = restart_patch(v.resource_version.as_deref(), &containers, &[], digest, published(), now);
        let ann = patch["spec"]["template"]["metadata"]["annotations"].as_object().unwrap();
        let at = ann[RESTARTED_AT].as_str().unwrap();
        prop_assert_eq!(at.parse::<jiff::Timestamp>().unwrap(), now);
        let digest_keys: Vec<&String> = ann.keys().filter(|k| k.starts_with(DIGEST_PREFIX)).collect();
        prop_assert_eq!(digest_keys.len(), containers.len());
        // restartedAt, and a digest and a publish time per container.
        prop_assert_eq!(ann.len(), 2 * containers.len() + 1);
        for c in &containers {
            prop_assert_eq!(ann[&digest_annotation(c)].as_str(), Some(digest));
            let at = published().to_string();
            prop_assert_eq!(ann[&published_annotation(c)].as_str(), Some(at.as_str()));
        }
        prop_assert_eq!(
            patch["metadata"]["resourceVersion"].as_str(),
            v.resource_version.as_deref()
        );
        let mut after = v.clone();
        for (k, val) in ann {
            after.template_annotations.insert(k.clone(), val.as_str().unwrap().to_owned());
        }
        prop_assert_eq!(plan(&after, KEY, digest, published(), Mode::Restart), Plan::AlreadyCurrent);
    }
}

// ----------------------------------------------------------- index properties

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn index_entries() -> impl Strategy<Value = Vec<(String, WorkloadRef)>> {
    prop::collection::vec(
        (
            parts(),
            prop_oneof![
                Just(Kind::Deployment),
                Just(Kind::StatefulSet),
                Just(Kind::DaemonSet)
            ],
            // Kubernetes names: the reader drops anything else.
            "[a-z0-9]{1,4}(-{1,2}[a-z0-9]{1,4}){0,2}",
            "[a-z0-9]{1,4}([-.][a-z0-9]{1,4}){0,2}",
            prop::collection::btree_set("[a-z]{1,4}", 0..3),
        ),
        0..12,
    )
    .prop_map(|items| {
        let mut seen = std::collections::BTreeSet::new();
        items
            .into_iter()
            .filter_map(|(p, kind, ns, name, containers)| {
                let key = Reference::parse(&Parts { digest: None, ..p }.render())
                    .unwrap()
                    .tagged();
                // One entry per workload and key, as the indexer writes.
                seen.insert((key.clone(), kind, ns.clone(), name.clone()))
                    .then(|| {
                        (
                            key,
                            WorkloadRef {
                                kind,
                                namespace: ns,
                                name,
                                containers: containers.into_iter().collect(),
                            },
                        )
                    })
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(config())]

    /// Any bytes as an index (plain or gzip): an error or an index, no panic.
    #[test]
    fn index_readers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Index::from_json(&bytes);
        let _ = Index::from_gzip(&bytes);
        let _ = Index::from_gzip(&gzip(&bytes));
        let g = gzip(&bytes);
        let _ = Index::from_gzip(&g[..g.len() / 2]);
    }

    /// JSON of any shape as an index: no panic.
    #[test]
    fn index_reader_never_panics_on_json(v in json_value()) {
        let _ = Index::from_json(json!({"version": 1, "images": v}).to_string().as_bytes());
        let _ = Index::from_json(json!({"images": {"nginx": [v]}}).to_string().as_bytes());
    }

    /// Written and read back, plain or gzip, an index is the same.
    #[test]
    fn index_round_trips(entries in index_entries(), secs in prop::option::of(0i64..4_000_000_000)) {
        let at = secs.map(|s| jiff::Timestamp::from_second(s).unwrap());
        let index = Index::from_entries(at, entries.clone());
        let json = index.to_json();
        let (back, report) = Index::from_json(&json).unwrap();
        prop_assert!(report.invalid_keys.is_empty() && report.pinned_keys.is_empty());
        prop_assert_eq!(&back, &index);
        prop_assert_eq!(back.to_json(), json.clone());
        let (unzipped, _) = Index::from_gzip(&gzip(&json)).unwrap();
        prop_assert_eq!(&unzipped, &index);
        for (key, w) in &entries {
            prop_assert!(back.lookup(key).contains(w));
        }
    }
}
