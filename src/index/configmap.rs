//! The index ConfigMap: how an index is stored in it (JSON in
//! `data["index.json"]` while it is small, gzip in
//! `binaryData["index.json.gz"]` when not), reading it back, and the write.
//! The codec is pure code, so the size rules are tested without a cluster.

use std::collections::BTreeMap;
use std::io::Write as _;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;

use std::time::Instant;

use crate::index::{Index, Limits};
use crate::k8s::{Kube, KubeError, Pod};
use crate::metrics::Metrics;

/// The index ConfigMap: where the indexer writes and the API fallback reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigMapRef {
    pub namespace: String,
    pub name: String,
}

impl ConfigMapRef {
    /// `namespace` when given (`--index-configmap NS/NAME`), else the pod's
    /// (`POD_NAMESPACE`), else the kubeconfig's.
    pub fn resolve(namespace: Option<&str>, name: &str, default_namespace: &str) -> ConfigMapRef {
        let namespace = namespace
            .map(str::to_owned)
            .or_else(|| Pod::from_env().namespace)
            .unwrap_or_else(|| default_namespace.to_owned());
        ConfigMapRef {
            namespace,
            name: name.to_owned(),
        }
    }
}

impl std::fmt::Display for ConfigMapRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The keys the indexer writes: JSON in `data`, gzip in `binaryData`.
pub(crate) const CONFIGMAP_KEY: &str = "index.json";
pub(crate) const CONFIGMAP_GZ_KEY: &str = "index.json.gz";

/// Above this the JSON goes compressed (the contract's 900 KiB).
pub(crate) const MAX_JSON_BYTES: usize = 900 * 1024;
/// A ConfigMap is at most 1 MiB, and `binaryData` is base64 in it (4/3):
/// compressed bytes beyond this cannot be stored.
pub(crate) const MAX_GZIP_BYTES: usize = 740 * 1024;

/// What goes into the ConfigMap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    Json(String),
    Gzip(Vec<u8>),
}

#[derive(Debug, thiserror::Error)]
#[error(
    "the index is {json} bytes of JSON and {gzip} bytes compressed: over the ConfigMap limit ({MAX_GZIP_BYTES} compressed); the last written index stays"
)]
pub struct TooLarge {
    pub json: usize,
    pub gzip: usize,
}

impl Payload {
    /// Encodes `index` for the ConfigMap.
    pub fn encode(index: &Index) -> Result<Payload, TooLarge> {
        let mut spill = Spill::default();
        // Serialized in small pieces: buffered, so that the compressor
        // gets them in large ones.
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, &mut spill);
        index
            .write_json(&mut out)
            .and_then(|()| out.flush())
            .expect("writing to memory cannot fail");
        drop(out);
        let Some(gz) = spill.gzip else {
            return Ok(Payload::Json(
                String::from_utf8(spill.json).expect("serde_json writes UTF-8"),
            ));
        };
        let gzip = gz.finish().expect("writing to memory cannot fail");
        if gzip.len() > MAX_GZIP_BYTES {
            return Err(TooLarge {
                json: spill.written,
                gzip: gzip.len(),
            });
        }
        Ok(Payload::Gzip(gzip))
    }

    pub fn len(&self) -> usize {
        match self {
            Payload::Json(s) => s.len(),
            Payload::Gzip(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_gzip(&self) -> bool {
        matches!(self, Payload::Gzip(_))
    }

    /// Puts the payload in `cm`, removing the other key.
    pub(crate) fn apply_to(&self, cm: &mut ConfigMap) {
        let data = cm.data.get_or_insert_with(BTreeMap::new);
        let binary = cm.binary_data.get_or_insert_with(BTreeMap::new);
        match self {
            Payload::Json(json) => {
                data.insert(CONFIGMAP_KEY.to_owned(), json.clone());
                binary.remove(CONFIGMAP_GZ_KEY);
            }
            Payload::Gzip(gz) => {
                binary.insert(CONFIGMAP_GZ_KEY.to_owned(), ByteString(gz.clone()));
                data.remove(CONFIGMAP_KEY);
            }
        }
    }
}

/// Where [`Payload::encode`] writes the JSON: held while it fits in
/// `data`, compressed from the first byte on once it does not, so that a
/// large index never has its whole JSON in memory (16 MiB at 50,000
/// workloads, against about 0.4 MiB of gzip).
#[derive(Default)]
struct Spill {
    json: Vec<u8>,
    gzip: Option<flate2::write::GzEncoder<Vec<u8>>>,
    /// Bytes of JSON written.
    written: usize,
}

impl std::io::Write for Spill {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.written += buf.len();
        if self.gzip.is_none() && self.written > MAX_JSON_BYTES {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(&std::mem::take(&mut self.json))?;
            self.gzip = Some(gz);
        }
        match &mut self.gzip {
            Some(gz) => gz.write_all(buf)?,
            None => self.json.extend_from_slice(buf),
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The index a ConfigMap holds, if it holds a readable one within the
/// default [`Limits`] (the indexer's comparison with what it last wrote:
/// one it cannot read is simply written again).
pub(crate) fn read_configmap(cm: &ConfigMap) -> Option<Index> {
    let (json, gz) = stored_bytes(cm);
    crate::index::newest(json, gz, &Limits::default())
        .ok()
        .flatten()
        .map(|(i, _)| i)
}

/// The index bytes a ConfigMap holds: its JSON key and its gzip key.
pub(crate) fn stored_bytes(cm: &ConfigMap) -> (Option<&[u8]>, Option<&[u8]>) {
    let json = cm
        .data
        .as_ref()
        .and_then(|d| d.get(CONFIGMAP_KEY))
        .map(String::as_bytes);
    let gz = cm
        .binary_data
        .as_ref()
        .and_then(|d| d.get(CONFIGMAP_GZ_KEY))
        .map(|b| b.0.as_slice());
    (json, gz)
}

/// Why an index was not written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    TooLarge(#[from] TooLarge),
    #[error("writing the index ConfigMap: {0}")]
    Api(#[from] KubeError),
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub changed: bool,
    pub gzip: bool,
    pub bytes: usize,
}

/// Writes `index` to the ConfigMap unless it already holds the same images.
pub async fn write(
    kube: &Kube,
    cm: &ConfigMapRef,
    index: &Index,
    metrics: &Metrics,
) -> Result<Written, WriteError> {
    let started = Instant::now();
    let result = async {
        let payload = Payload::encode(index)?;
        let same = |existing: &ConfigMap| {
            read_configmap(existing).is_some_and(|old| old.same_images(index))
        };
        let changed = kube
            .write_configmap(&cm.namespace, &cm.name, same, |object| {
                payload.apply_to(object)
            })
            .await?;
        Ok::<_, WriteError>(Written {
            changed,
            gzip: payload.is_gzip(),
            bytes: payload.len(),
        })
    }
    .await;
    let label = match &result {
        Ok(w) if w.changed => "written",
        Ok(_) => "unchanged",
        Err(WriteError::TooLarge(_)) => "too-large",
        Err(WriteError::Api(_)) => "error",
    };
    metrics.indexer.write(label);
    match &result {
        Ok(w) if w.changed => tracing::info!(
            configmap = %cm,
            images = index.len(),
            bytes = w.bytes,
            gzip = w.gzip,
            took_ms = started.elapsed().as_secs_f64() * 1000.0,
            "index written"
        ),
        Ok(_) => tracing::debug!("index unchanged; nothing written"),
        Err(e) => tracing::error!(error = %e, "index not written"),
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{Kind, WorkloadRef};

    fn index_of(n: usize, name_len: usize) -> Index {
        let entries = (0..n).map(|i| {
            (
                format!("registry.example.com/team/app-{i}:v1"),
                WorkloadRef {
                    kind: Kind::Deployment,
                    namespace: format!("ns-{}", i % 50),
                    name: format!("{i:0name_len$}"),
                    containers: vec!["app".into()],
                },
            )
        });
        Index::from_entries(Some("2026-11-26T12:00:00Z".parse().unwrap()), entries)
    }

    #[test]
    fn small_is_json_large_is_gzip_and_both_read_back() {
        let small = index_of(10, 4);
        let large = index_of(20_000, 8);
        for (index, gzip) in [(&small, false), (&large, true)] {
            let payload = Payload::encode(index).unwrap();
            assert_eq!(payload.is_gzip(), gzip);
            // The other key, left by an earlier write, is removed.
            let mut cm = ConfigMap {
                data: Some([(CONFIGMAP_KEY.to_owned(), "stale".to_owned())].into()),
                binary_data: Some(
                    [(CONFIGMAP_GZ_KEY.to_owned(), ByteString(b"stale".to_vec()))].into(),
                ),
                ..ConfigMap::default()
            };
            payload.apply_to(&mut cm);
            let keys = cm.data.as_ref().unwrap().len() + cm.binary_data.as_ref().unwrap().len();
            assert_eq!(keys, 1);
            assert_eq!(read_configmap(&cm).as_ref(), Some(index));
        }
    }

    #[test]
    fn too_large_even_compressed_is_an_error() {
        // Random-looking names do not compress.
        let entries = (0..40_000u64).map(|i| {
            let noise = format!(
                "{:016x}{:016x}",
                i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                i.wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
            );
            (
                format!("registry.example.com/{noise}:v1"),
                WorkloadRef {
                    kind: Kind::Deployment,
                    namespace: noise.clone(),
                    name: noise,
                    containers: vec![],
                },
            )
        });
        let index = Index::from_entries(None, entries);
        let err = Payload::encode(&index).unwrap_err();
        assert!(
            err.gzip > MAX_GZIP_BYTES && err.json > MAX_JSON_BYTES,
            "{err}"
        );
    }
}
