//! The image→workloads index: its file format and the in-memory map that
//! lookups read. Pure code: bytes in, an [`Index`] out.
//!
//! Format (`version: 1`):
//! `{"version":1,"generatedAt":"…","images":{"REF":[{"kind","namespace","name","containers"}]}}`.
//! The older seed form has no `version` and entries `{"name","namespace"}`
//! (kind Deployment). Keys are normalized on load, so a hand-written file
//! with `nginx` still matches a push of `docker.io/library/nginx:latest`.
//! Entries whose namespace, name or containers are not Kubernetes names are
//! dropped (and reported), and reading is bounded by [`Limits`].

pub mod builder;
pub mod configmap;
pub mod file;
mod intern;
mod parse;
pub mod scan;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash as _, Hasher as _};
use std::io::{Read as _, Write};
use std::sync::Arc;

use serde::Serialize;
use serde::ser::{SerializeStruct as _, Serializer};

use self::intern::Sharing;
use self::parse::read;
use crate::workload::WorkloadRef;
use crate::workload::{InvalidName, Kind};

/// The bound on an index's JSON when the process has no memory limit
/// (`--max-index-bytes` overrides it): about 80,000 workloads.
pub(crate) const DEFAULT_MAX_INDEX_BYTES: u64 = 16 * 1024 * 1024;
/// With a memory limit, the bound is this fraction of it. Reading a new
/// index while the last good one is in use costs, at worst, the old index
/// (at most 2× the bound in memory) plus the new one as it is built (at
/// most 2×, or a single huge string held twice by the parser), on top of
/// the process's own ~25 MiB: about 4× the bound plus 25 MiB, which an
/// eighth of the limit keeps under it (128 MiB → 16 MiB → ~90 MiB).
const MEMORY_LIMIT_FRACTION: u64 = 8;
/// A plain-JSON ConfigMap (up to 900 KiB) must always be readable.
const MIN_DERIVED_MAX_INDEX_BYTES: u64 = 2 * 1024 * 1024;
/// Past this, a bigger pod buys nothing a ConfigMap could hold.
const MAX_DERIVED_MAX_INDEX_BYTES: u64 = 64 * 1024 * 1024;
/// Dropped entries named in the log, at most.
const DROPPED_EXAMPLES: usize = 5;

/// How much of an index is read, so that a small `index.json.gz` that
/// inflates to hundreds of MiB (or a huge plain file) cannot take the
/// process past its memory limit: the JSON is streamed, never held whole,
/// and both its size and the memory of what is built from it are bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most bytes of index JSON read (after decompression). What is
    /// built from it may take at most twice this in memory (estimated as
    /// it is built: a legitimate index takes about 2× its JSON, a bomb of
    /// tiny entries up to 8×).
    pub max_index_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::new(DEFAULT_MAX_INDEX_BYTES)
    }
}

impl Limits {
    pub const fn new(max_index_bytes: u64) -> Limits {
        Limits { max_index_bytes }
    }

    /// The bound for a process whose memory limit is `memory_limit`
    /// (`None`: no limit): an eighth of it, within 2..=64 MiB.
    pub fn for_memory_limit(memory_limit: Option<u64>) -> Limits {
        Limits::new(memory_limit.map_or(DEFAULT_MAX_INDEX_BYTES, |m| {
            (m / MEMORY_LIMIT_FRACTION)
                .clamp(MIN_DERIVED_MAX_INDEX_BYTES, MAX_DERIVED_MAX_INDEX_BYTES)
        }))
    }

    /// The estimated memory what is read may take.
    pub(crate) fn max_memory(&self) -> u64 {
        self.max_index_bytes.saturating_mul(2)
    }
}

/// A hash of an index's stored bytes (`index.json`, `index.json.gz`), the
/// same for the mounted files and the ConfigMap keys they are mounted from.
pub(crate) fn content_hash(json: Option<&[u8]>, gz: Option<&[u8]>) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    (json, gz).hash(&mut hasher);
    hasher.finish()
}

/// The in-memory index: normalized `domain/path:tag` → workloads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Index {
    pub generated_at: Option<jiff::Timestamp>,
    /// Each key's entries sorted, at their exact capacity.
    images: HashMap<Arc<str>, Vec<Entry>>,
}

/// One workload under an image key: a [`WorkloadRef`] whose strings are
/// shared, between the keys the workload appears under and with the
/// builder the index came from (the same namespace, name and container
/// list are held once, not once per key and once more per index).
/// Ordered as [`WorkloadRef`] is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Entry {
    pub(crate) kind: Kind,
    pub(crate) namespace: Arc<str>,
    pub(crate) name: Arc<str>,
    pub(crate) containers: Arc<[Arc<str>]>,
}

impl Entry {
    fn to_ref(&self) -> WorkloadRef {
        WorkloadRef {
            kind: self.kind,
            namespace: self.namespace.to_string(),
            name: self.name.to_string(),
            containers: self.containers.iter().map(|c| c.to_string()).collect(),
        }
    }
}

/// As [`WorkloadRef`] serializes.
impl Serialize for Entry {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut out = s.serialize_struct("WorkloadRef", 4)?;
        out.serialize_field("kind", &self.kind)?;
        out.serialize_field("namespace", &*self.namespace)?;
        out.serialize_field("name", &*self.name)?;
        if self.containers.is_empty() {
            out.skip_field("containers")?;
        } else {
            out.serialize_field("containers", &Names(&self.containers))?;
        }
        out.end()
    }
}

/// Shared strings as a JSON array of strings.
struct Names<'a>(&'a [Arc<str>]);

impl Serialize for Names<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|n| &**n))
    }
}

/// Why an index file was not loaded (the last good index stays in use).
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("index version {0} is not supported (expected 1)")]
    Version(u64),
    #[error("index is not valid gzip: {0}")]
    Gzip(std::io::Error),
    #[error(
        "index is too large: {what} more than {limit} bytes (--max-index-bytes; raise it with the memory limit)"
    )]
    TooLarge { what: &'static str, limit: u64 },
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FileOut<'a> {
    version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    generated_at: Option<jiff::Timestamp>,
    images: BTreeMap<&'a str, &'a [Entry]>,
}

/// What loading skipped, so that it can be logged (and counted) once.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// Keys that are not image references.
    pub invalid_keys: Vec<String>,
    /// Keys pinned by digest: they can never match a push.
    pub pinned_keys: Vec<String>,
    /// Entries dropped because a name in them is not a Kubernetes name.
    pub dropped: BTreeMap<InvalidName, u64>,
    /// The first few of them, as `Kind "namespace"/"name"`, shortened.
    pub dropped_examples: Vec<String>,
}

impl LoadReport {
    /// How many entries were dropped for their names.
    pub(crate) fn dropped_count(&self) -> u64 {
        self.dropped.values().sum()
    }

    fn drop_entry(&mut self, why: InvalidName, w: &WorkloadRef) {
        *self.dropped.entry(why).or_default() += 1;
        if self.dropped_examples.len() < DROPPED_EXAMPLES {
            let short = |s: &str| format!("{:?}", s.chars().take(64).collect::<String>());
            self.dropped_examples.push(format!(
                "{} {}/{}",
                w.kind,
                short(&w.namespace),
                short(&w.name)
            ));
        }
    }
}

impl Index {
    /// Parses an index in either form from JSON bytes, within the default
    /// [`Limits`].
    pub fn from_json(bytes: &[u8]) -> Result<(Index, LoadReport), IndexError> {
        Index::from_json_with(bytes, &Limits::default())
    }

    /// Parses an index in either form from JSON bytes.
    pub(crate) fn from_json_with(
        bytes: &[u8],
        limits: &Limits,
    ) -> Result<(Index, LoadReport), IndexError> {
        if bytes.len() as u64 > limits.max_index_bytes {
            return Err(IndexError::TooLarge {
                what: "its JSON is",
                limit: limits.max_index_bytes,
            });
        }
        read(&mut serde_json::Deserializer::from_slice(bytes), limits)
    }

    /// Parses a gzip-compressed index (`index.json.gz`), within the default
    /// [`Limits`].
    pub fn from_gzip(bytes: &[u8]) -> Result<(Index, LoadReport), IndexError> {
        Index::from_gzip_with(bytes, &Limits::default())
    }

    /// Parses a gzip-compressed index, streaming: the decompressed JSON is
    /// never held whole, and reading stops at the limit.
    pub(crate) fn from_gzip_with(
        bytes: &[u8],
        limits: &Limits,
    ) -> Result<(Index, LoadReport), IndexError> {
        let too_large = IndexError::TooLarge {
            what: "decompressed, its JSON is",
            limit: limits.max_index_bytes,
        };
        if bytes.len() as u64 > limits.max_index_bytes {
            return Err(too_large);
        }
        let mut inflated =
            flate2::read::GzDecoder::new(bytes).take(limits.max_index_bytes.saturating_add(1));
        let result = read(
            &mut serde_json::Deserializer::from_reader(std::io::BufReader::new(&mut inflated)),
            limits,
        );
        if inflated.limit() == 0 {
            return Err(too_large);
        }
        result.map_err(|e| match e {
            IndexError::Json(e) if e.is_io() => IndexError::Gzip(e.into()),
            e => e,
        })
    }

    /// Builds an index from `(normalized key, workload)` pairs.
    pub fn from_entries(
        generated_at: Option<jiff::Timestamp>,
        entries: impl IntoIterator<Item = (String, WorkloadRef)>,
    ) -> Index {
        let mut grouped: HashMap<String, Vec<WorkloadRef>> = HashMap::new();
        for (key, w) in entries {
            grouped.entry(key).or_default().push(w);
        }
        let mut sharing = Sharing::default();
        let images = grouped
            .into_iter()
            .map(|(key, mut workloads)| {
                workloads.sort();
                workloads.dedup();
                let entries = workloads.iter().map(|w| sharing.entry(w)).collect();
                (sharing.key(&key), entries)
            })
            .collect();
        Index::from_images(generated_at, images)
    }

    /// An index of `images` whose entries are unique per key, in any
    /// order: sorted here, and trimmed to their length.
    pub(crate) fn from_images(
        generated_at: Option<jiff::Timestamp>,
        mut images: HashMap<Arc<str>, Vec<Entry>>,
    ) -> Index {
        for entries in images.values_mut() {
            entries.sort_unstable();
            entries.shrink_to_fit();
        }
        images.shrink_to_fit();
        Index {
            generated_at,
            images,
        }
    }

    /// The workloads that run `key` (a normalized tagged reference).
    pub fn lookup(&self, key: &str) -> Vec<WorkloadRef> {
        self.images.get(key).map_or_else(Vec::new, |entries| {
            entries.iter().map(Entry::to_ref).collect()
        })
    }

    /// Whether two indexes map the same images to the same workloads,
    /// whenever each was generated.
    pub(crate) fn same_images(&self, other: &Index) -> bool {
        self.images == other.images
    }

    /// How many images the index knows.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// The version 1 JSON, keys sorted, so equal indexes serialize alike.
    pub fn to_json(&self) -> Vec<u8> {
        let mut json = Vec::new();
        self.write_json(&mut json)
            .expect("writing to memory cannot fail");
        json
    }

    /// [`to_json`](Index::to_json) into `out`, as it is serialized: the
    /// ConfigMap's gzip is compressed from it without the whole JSON (at
    /// 50,000 workloads, 16 MiB) ever being held.
    pub fn write_json(&self, out: impl Write) -> std::io::Result<()> {
        let file = FileOut {
            version: 1,
            generated_at: self.generated_at,
            images: self
                .images
                .iter()
                .map(|(k, v)| (&**k, v.as_slice()))
                .collect(),
        };
        serde_json::to_writer(out, &file).map_err(std::io::Error::from)
    }
}

/// Reads an index stored as JSON, gzip, or both (as a ConfigMap volume or
/// object may hold). With both, the newer `generatedAt` wins; one broken
/// copy does not hide a good one. `None` when neither is present.
pub fn newest(
    json: Option<&[u8]>,
    gz: Option<&[u8]>,
    limits: &Limits,
) -> Result<Option<(Index, LoadReport)>, IndexError> {
    let parsed = [
        json.map(|j| Index::from_json_with(j, limits)),
        gz.map(|g| Index::from_gzip_with(g, limits)),
    ];
    let mut best: Option<(Index, LoadReport)> = None;
    let mut first_error = None;
    for result in parsed.into_iter().flatten() {
        match result {
            Ok(candidate) => {
                if best
                    .as_ref()
                    .is_none_or(|(b, _)| candidate.0.generated_at > b.generated_at)
                {
                    best = Some(candidate);
                }
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match (best, first_error) {
        (Some(best), _) => Ok(Some(best)),
        (None, Some(e)) => Err(e),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{Kind, check_names, is_dns1123_label, is_dns1123_subdomain};

    fn w(kind: Kind, ns: &str, name: &str, containers: &[&str]) -> WorkloadRef {
        WorkloadRef {
            kind,
            namespace: ns.into(),
            name: name.into(),
            containers: containers.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn reads_version_1() {
        let json = br#"{"version":1,"generatedAt":"2026-11-26T12:00:00Z","images":{
            "us-east1-docker.pkg.dev/p/r/app:v1":[
              {"kind":"Deployment","namespace":"production","name":"api","containers":["app"]},
              {"kind":"StatefulSet","namespace":"production","name":"db","containers":["init"]}]}}"#;
        let (index, report) = Index::from_json(json).unwrap();
        assert_eq!(report, LoadReport::default());
        assert_eq!(index.len(), 1);
        assert_eq!(
            index.generated_at,
            Some("2026-11-26T12:00:00Z".parse().unwrap())
        );
        assert_eq!(
            index.lookup("us-east1-docker.pkg.dev/p/r/app:v1"),
            &[
                w(Kind::Deployment, "production", "api", &["app"]),
                w(Kind::StatefulSet, "production", "db", &["init"]),
            ]
        );
        assert!(
            index
                .lookup("us-east1-docker.pkg.dev/p/r/app:v2")
                .is_empty()
        );
    }

    #[test]
    fn reads_the_seed_form() {
        let json = br#"{"images":{"registry.example.com/app:v1.2.3":[
            {"name":"api","namespace":"production"},{"name":"api","namespace":"staging"}]}}"#;
        let (index, _) = Index::from_json(json).unwrap();
        assert_eq!(index.generated_at, None);
        assert_eq!(
            index.lookup("registry.example.com/app:v1.2.3"),
            &[
                w(Kind::Deployment, "production", "api", &[]),
                w(Kind::Deployment, "staging", "api", &[]),
            ]
        );
    }

    #[test]
    fn normalizes_and_merges_keys() {
        let json = br#"{"version":1,"images":{
            "nginx":[{"kind":"Deployment","namespace":"a","name":"web","containers":["n"]}],
            "docker.io/library/nginx:latest":[
               {"kind":"Deployment","namespace":"a","name":"web","containers":["sidecar"]},
               {"kind":"DaemonSet","namespace":"b","name":"edge"}],
            "REGISTRY.io/x/y:1":[{"kind":"Deployment","namespace":"a","name":"y"}],
            "Bad Key":[{"kind":"Deployment","namespace":"a","name":"z"}],
            "gcr.io/p/pinned@sha256:6ec128e26cd5e5b3d5ad4ad0b3b1e0b5c5a4a2a8e1f3f6f9d0a7b4c1e2d3f4a5":[
               {"kind":"Deployment","namespace":"a","name":"p"}]}}"#;
        let (index, report) = Index::from_json(json).unwrap();
        assert_eq!(
            index.lookup("docker.io/library/nginx:latest"),
            &[
                w(Kind::Deployment, "a", "web", &["n", "sidecar"]),
                w(Kind::DaemonSet, "b", "edge", &[]),
            ]
        );
        assert_eq!(index.lookup("registry.io/x/y:1").len(), 1);
        assert_eq!(report.invalid_keys, vec!["Bad Key".to_string()]);
        assert_eq!(report.pinned_keys.len(), 1);
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn rejects_broken_files() {
        let table: &[(&[u8], &str)] = &[
            (b"", "JSON"),
            (b"{", "JSON"),
            (b"[]", "JSON"),
            (br#"{"version":2,"images":{}}"#, "version 2"),
            (
                br#"{"images":{"a:1":[{"kind":"Job","namespace":"a","name":"b"}]}}"#,
                "JSON",
            ),
            (br#"{"images":{"a:1":[{"namespace":"a"}]}}"#, "JSON"),
            (br#"{"images":{"a:1":{}}}"#, "JSON"),
            (br#"{"generatedAt":"yesterday","images":{}}"#, "JSON"),
        ];
        for (bytes, want) in table {
            let err = Index::from_json(bytes).expect_err(&String::from_utf8_lossy(bytes));
            assert!(err.to_string().contains(want), "{err}");
        }
    }

    #[test]
    fn gzip_round_trip_and_bounds() {
        use std::io::Write as _;
        let index = Index::from_entries(
            Some("2026-11-26T12:00:00Z".parse().unwrap()),
            [(
                "docker.io/library/nginx:latest".to_string(),
                w(Kind::Deployment, "a", "web", &["n"]),
            )],
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&index.to_json()).unwrap();
        let (back, _) = Index::from_gzip(&gz.finish().unwrap()).unwrap();
        assert_eq!(back, index);
        assert!(matches!(
            Index::from_gzip(b"not gzip"),
            Err(IndexError::Gzip(_))
        ));
    }

    #[test]
    fn kubernetes_names() {
        let long = |n| "a".repeat(n);
        let label: &[(&str, bool)] = &[
            ("production", true),
            ("a", true),
            ("0", true),
            ("team-1", true),
            ("a-b-c", true),
            ("", false),
            ("-a", false),
            ("a-", false),
            ("A", false),
            ("a_b", false),
            ("a.b", false),
            ("a/b", false),
            ("..", false),
            ("../../api", false),
            ("a b", false),
            ("é", false),
        ];
        for &(s, want) in label {
            assert_eq!(is_dns1123_label(s), want, "label {s:?}");
        }
        assert!(is_dns1123_label(&long(63)));
        assert!(!is_dns1123_label(&long(64)));
        let subdomain: &[(&str, bool)] = &[
            ("api", true),
            ("api.v2", true),
            ("a.b-c.d", true),
            ("svc-12345", true),
            ("", false),
            (".a", false),
            ("a.", false),
            ("a..b", false),
            ("a.-b", false),
            ("a/b", false),
            ("..", false),
            ("Api", false),
            ("a%2Fb", false),
        ];
        for &(s, want) in subdomain {
            assert_eq!(is_dns1123_subdomain(s), want, "subdomain {s:?}");
        }
        assert!(is_dns1123_subdomain(&long(253)));
        assert!(!is_dns1123_subdomain(&long(254)));
        // A subdomain's parts are not bounded at 63, only the whole.
        assert!(is_dns1123_subdomain(&long(100)));

        type Case<'a> = (&'a str, &'a str, &'a [&'a str], Result<(), InvalidName>);
        let entry: &[Case] = &[
            ("prod", "api", &["app"], Ok(())),
            ("prod", "api.v2", &[], Ok(())),
            ("../../api", "api", &["app"], Err(InvalidName::Namespace)),
            ("prod", "a/b", &["app"], Err(InvalidName::Name)),
            (
                "prod",
                "api",
                &["app", "Side_car"],
                Err(InvalidName::Container),
            ),
            // A namespace is a label: no dots.
            ("a.b", "api", &[], Err(InvalidName::Namespace)),
            // A container name is a label: no dots either.
            ("prod", "api", &["a.b"], Err(InvalidName::Container)),
        ];
        for (ns, name, containers, want) in entry {
            let got = check_names(&w(Kind::Deployment, ns, name, containers));
            assert_eq!(got, *want, "{ns:?} {name:?} {containers:?}");
        }
    }

    #[test]
    fn entries_with_bad_names_are_dropped_and_reported() {
        let json = br#"{"version":1,"images":{"docker.io/library/app:v1":[
            {"kind":"Deployment","namespace":"../../api","name":"web"},
            {"kind":"Deployment","namespace":"prod","name":"a/b"},
            {"kind":"Deployment","namespace":"prod","name":"c/d"},
            {"kind":"StatefulSet","namespace":"prod","name":"db","containers":["Bad Name"]},
            {"kind":"Deployment","namespace":"prod","name":"web","containers":["app"]}]}}"#;
        let (index, report) = Index::from_json(json).unwrap();
        assert_eq!(
            index.lookup("docker.io/library/app:v1"),
            &[w(Kind::Deployment, "prod", "web", &["app"])]
        );
        assert_eq!(
            report.dropped,
            BTreeMap::from([
                (InvalidName::Namespace, 1),
                (InvalidName::Name, 2),
                (InvalidName::Container, 1)
            ])
        );
        assert_eq!(report.dropped_count(), 4);
        assert_eq!(
            report.dropped_examples[..2],
            [
                r#"Deployment "../../api"/"web""#.to_string(),
                r#"Deployment "prod"/"a/b""#.to_string()
            ]
        );
    }

    #[test]
    fn limits_follow_the_memory_limit() {
        let mib = 1024 * 1024;
        let table = [
            (None, 16 * mib),
            (Some(128 * mib), 16 * mib),
            (Some(256 * mib), 32 * mib),
            (Some(4 * mib), 2 * mib),
            (Some(64 * 1024 * mib), 64 * mib),
        ];
        for (limit, want) in table {
            assert_eq!(
                Limits::for_memory_limit(limit).max_index_bytes,
                want,
                "{limit:?}"
            );
        }
    }

    /// `n` tiny entries under one key: the shape that costs the most memory
    /// per byte of JSON.
    fn tiny_entries(n: usize) -> Vec<u8> {
        let entries: Vec<String> = (0..n)
            .map(|i| format!(r#"{{"namespace":"a","name":"w{}"}}"#, i % 1000))
            .collect();
        format!(
            r#"{{"version":1,"images":{{"docker.io/library/app:v1":[{}]}}}}"#,
            entries.join(",")
        )
        .into_bytes()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn reading_is_bounded_in_bytes_and_in_memory() {
        let json = tiny_entries(2000);
        let fits = Limits::new(json.len() as u64 * 5 / 2);
        assert!(Index::from_json_with(&json, &fits).is_ok());
        assert!(Index::from_gzip_with(&gzip(&json), &fits).is_ok());
        // Over the byte bound (whitespace costs no memory): plain JSON and
        // decompressed gzip alike.
        let mut padded = json.clone();
        padded.resize(json.len() * 3, b' ');
        for result in [
            Index::from_json_with(&padded, &fits),
            Index::from_gzip_with(&gzip(&padded), &fits),
        ] {
            let err = result.unwrap_err();
            assert!(
                matches!(err, IndexError::TooLarge { what, .. } if what.contains("JSON")),
                "{err}"
            );
        }
        // Within the byte bound, but tiny entries take ~5× their JSON in
        // memory: over twice the bound, refused as it is built.
        let bytes_only = Limits::new(json.len() as u64 + 1);
        for result in [
            Index::from_json_with(&json, &bytes_only),
            Index::from_gzip_with(&gzip(&json), &bytes_only),
        ] {
            let err = result.unwrap_err();
            assert!(
                matches!(err, IndexError::TooLarge { what, .. } if what.contains("memory")),
                "{err}"
            );
            assert!(err.to_string().contains("--max-index-bytes"), "{err}");
        }
        // Broken gzip is still a gzip error, not a JSON one.
        let gz = gzip(&json);
        assert!(matches!(
            Index::from_gzip_with(&gz[..gz.len() / 2], &fits),
            Err(IndexError::Gzip(_))
        ));
    }

    #[test]
    fn serialization_is_stable() {
        let a = Index::from_entries(
            None,
            [
                ("b:1".to_string(), w(Kind::Deployment, "x", "b", &[])),
                ("a:1".to_string(), w(Kind::DaemonSet, "x", "a", &["c"])),
            ],
        );
        let json = String::from_utf8(a.to_json()).unwrap();
        assert_eq!(
            json,
            r#"{"version":1,"images":{"a:1":[{"kind":"DaemonSet","namespace":"x","name":"a","containers":["c"]}],"b:1":[{"kind":"Deployment","namespace":"x","name":"b"}]}}"#
        );
    }

    #[test]
    fn newest_of_json_and_gzip() {
        use std::io::Write as _;
        let at = |t: &str| {
            Index::from_entries(
                Some(t.parse().unwrap()),
                [(
                    "docker.io/library/a:1".to_string(),
                    // A Kubernetes name: `2026-01-01`.
                    w(Kind::Deployment, "x", &t[..10], &[]),
                )],
            )
        };
        let gz = |i: &Index| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&i.to_json()).unwrap();
            e.finish().unwrap()
        };
        let old = at("2026-01-01T00:00:00Z");
        let new = at("2026-02-01T00:00:00Z");
        let pick = |j: Option<&[u8]>, g: Option<&[u8]>| {
            newest(j, g, &Limits::default()).map(|o| o.map(|(i, _)| i))
        };
        assert_eq!(pick(None, None).unwrap(), None);
        assert_eq!(
            pick(Some(&old.to_json()), Some(&gz(&new))).unwrap(),
            Some(new.clone())
        );
        assert_eq!(
            pick(Some(&new.to_json()), Some(&gz(&old))).unwrap(),
            Some(new.clone())
        );
        assert_eq!(
            pick(Some(b"broken"), Some(&gz(&old))).unwrap(),
            Some(old.clone())
        );
        assert!(pick(Some(b"broken"), None).is_err());
    }
}
