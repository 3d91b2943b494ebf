//! The image→workloads index: its file format and the in-memory map that
//! lookups read. Pure code: bytes in, an [`Index`] out.
//!
//! Format (`version: 1`):
//! `{"version":1,"generatedAt":"…","images":{"REF":[{"kind","namespace","name","containers"}]}}`.
//! The older seed form has no `version` and entries `{"name","namespace"}`
//! (kind Deployment). Keys are normalized on load, so a hand-written file
//! with `nginx` still matches a push of `docker.io/library/nginx:latest`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Read as _;

use serde::{Deserialize, Serialize};

use crate::reference::Reference;

/// The largest decompressed index accepted, so that a hostile or broken
/// `.gz` cannot exhaust memory.
pub const MAX_INDEX_BYTES: u64 = 64 * 1024 * 1024;

/// The workload kinds pushroll restarts (all `apps/v1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Deployment, Kind::StatefulSet, Kind::DaemonSet];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
            Kind::DaemonSet => "DaemonSet",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One workload that runs an image.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WorkloadRef {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    /// The containers (and init containers) that run the image, when known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<String>,
}

/// The in-memory index: normalized `domain/path:tag` → workloads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Index {
    pub generated_at: Option<jiff::Timestamp>,
    images: HashMap<String, Vec<WorkloadRef>>,
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
    #[error("index is larger than {MAX_INDEX_BYTES} bytes")]
    TooLarge,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileV1 {
    version: Option<u64>,
    generated_at: Option<jiff::Timestamp>,
    #[serde(default)]
    images: BTreeMap<String, Vec<Entry>>,
}

/// An entry of either form: the seed's has no kind (Deployment).
#[derive(Deserialize)]
struct Entry {
    #[serde(default = "default_kind")]
    kind: Kind,
    namespace: String,
    name: String,
    #[serde(default)]
    containers: Vec<String>,
}

fn default_kind() -> Kind {
    Kind::Deployment
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FileOut<'a> {
    version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    generated_at: Option<jiff::Timestamp>,
    images: BTreeMap<&'a str, &'a [WorkloadRef]>,
}

/// What loading skipped, so that it can be logged once.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// Keys that are not image references.
    pub invalid_keys: Vec<String>,
    /// Keys pinned by digest: they can never match a push.
    pub pinned_keys: Vec<String>,
}

impl Index {
    /// Parses an index in either form from JSON bytes.
    pub fn from_json(bytes: &[u8]) -> Result<(Index, LoadReport), IndexError> {
        let file: FileV1 = serde_json::from_slice(bytes)?;
        if let Some(v) = file.version
            && v != 1
        {
            return Err(IndexError::Version(v));
        }
        let mut report = LoadReport::default();
        let mut images: HashMap<String, Vec<WorkloadRef>> =
            HashMap::with_capacity(file.images.len());
        for (key, entries) in file.images {
            let reference = match Reference::parse(&key) {
                Ok(r) if r.is_pinned() => {
                    report.pinned_keys.push(key);
                    continue;
                }
                Ok(r) => r,
                Err(_) => {
                    report.invalid_keys.push(key);
                    continue;
                }
            };
            let workloads = images.entry(reference.tagged()).or_default();
            workloads.extend(entries.into_iter().map(|e| WorkloadRef {
                kind: e.kind,
                namespace: e.namespace,
                name: e.name,
                containers: e.containers,
            }));
        }
        // Keys that normalize alike are merged; keep one entry per workload.
        for workloads in images.values_mut() {
            workloads.sort();
            workloads.dedup_by(|a, b| {
                let same = a.kind == b.kind && a.namespace == b.namespace && a.name == b.name;
                if same {
                    b.containers.append(&mut a.containers);
                    b.containers.sort();
                    b.containers.dedup();
                }
                same
            });
        }
        Ok((
            Index {
                generated_at: file.generated_at,
                images,
            },
            report,
        ))
    }

    /// Parses a gzip-compressed index (`index.json.gz`).
    pub fn from_gzip(bytes: &[u8]) -> Result<(Index, LoadReport), IndexError> {
        let mut json = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .take(MAX_INDEX_BYTES + 1)
            .read_to_end(&mut json)
            .map_err(IndexError::Gzip)?;
        if json.len() as u64 > MAX_INDEX_BYTES {
            return Err(IndexError::TooLarge);
        }
        Index::from_json(&json)
    }

    /// Builds an index from `(normalized key, workload)` pairs.
    pub fn from_entries(
        generated_at: Option<jiff::Timestamp>,
        entries: impl IntoIterator<Item = (String, WorkloadRef)>,
    ) -> Index {
        let mut images: HashMap<String, Vec<WorkloadRef>> = HashMap::new();
        for (key, w) in entries {
            images.entry(key).or_default().push(w);
        }
        for workloads in images.values_mut() {
            workloads.sort();
            workloads.dedup();
        }
        Index {
            generated_at,
            images,
        }
    }

    /// The workloads that run `key` (a normalized tagged reference).
    pub fn lookup(&self, key: &str) -> &[WorkloadRef] {
        self.images.get(key).map_or(&[], Vec::as_slice)
    }

    /// Whether two indexes map the same images to the same workloads,
    /// whenever each was generated.
    pub fn same_images(&self, other: &Index) -> bool {
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
        let out = FileOut {
            version: 1,
            generated_at: self.generated_at,
            images: self
                .images
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_slice()))
                .collect(),
        };
        serde_json::to_vec(&out).expect("serializing plain data cannot fail")
    }
}

/// Reads an index stored as JSON, gzip, or both (as a ConfigMap volume or
/// object may hold). With both, the newer `generatedAt` wins; one broken
/// copy does not hide a good one. `None` when neither is present.
pub fn newest(
    json: Option<&[u8]>,
    gz: Option<&[u8]>,
) -> Result<Option<(Index, LoadReport)>, IndexError> {
    let parsed = [json.map(Index::from_json), gz.map(Index::from_gzip)];
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
                    w(Kind::Deployment, "x", t, &[]),
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
        let pick = |j: Option<&[u8]>, g: Option<&[u8]>| newest(j, g).map(|o| o.map(|(i, _)| i));
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
