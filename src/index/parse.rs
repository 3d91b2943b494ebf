//! Reading an index: the JSON streams into the final map, each entry
//! checked (its key normalized, its names Kubernetes names) and charged
//! against the [`Limits`] as it comes, with no intermediate copy.

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::intern::Sharing;
use super::{Entry, Index, IndexError, Limits, LoadReport};
use crate::reference::Reference;
use crate::workload::{Kind, WorkloadRef, check_names};

/// An entry of either form: the seed's has no kind (Deployment).
#[derive(Deserialize)]
struct EntryIn {
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

/// The heap bytes an allocation of `len` bytes takes (glibc: 16-byte
/// chunks with an 8-byte header, 32 at least).
fn heap(len: usize) -> u64 {
    if len == 0 {
        0
    } else {
        (len as u64 + 8).next_multiple_of(16).max(32)
    }
}

/// The estimated memory one entry takes in the index: as read, before
/// its strings are shared with the other entries', so an upper bound.
fn entry_cost(w: &WorkloadRef) -> u64 {
    size_of::<WorkloadRef>() as u64
        + heap(w.namespace.len())
        + heap(w.name.len())
        + heap(w.containers.capacity() * size_of::<String>())
        + w.containers.iter().map(|c| heap(c.len())).sum::<u64>()
}

/// Builds the index as the JSON streams in, charging the memory of what it
/// keeps against the limits: no intermediate copy of the whole file.
struct Builder<'l> {
    limits: &'l Limits,
    /// Estimated bytes of memory kept so far.
    cost: u64,
    /// Set when a charge went over: the parse error that follows is that.
    over: bool,
    images: HashMap<Arc<str>, Vec<Entry>>,
    sharing: Sharing,
    report: LoadReport,
}

impl Builder<'_> {
    fn new(limits: &Limits) -> Builder<'_> {
        Builder {
            limits,
            cost: 0,
            over: false,
            images: HashMap::new(),
            sharing: Sharing::default(),
            report: LoadReport::default(),
        }
    }

    fn charge<E: de::Error>(&mut self, bytes: u64) -> Result<(), E> {
        self.cost = self.cost.saturating_add(bytes);
        if self.cost > self.limits.max_memory() {
            self.over = true;
            return Err(E::custom("the index is too large"));
        }
        Ok(())
    }

    /// Files `entries` under `key`; the key's bytes and the entries
    /// (`cost` in all) are charged already.
    fn add<E: de::Error>(&mut self, key: String, entries: Vec<Entry>, cost: u64) -> Result<(), E> {
        let skipped = match Reference::parse(&key) {
            Ok(r) if r.is_pinned() => &mut self.report.pinned_keys,
            Ok(r) => {
                // The normalized key replaces the one read.
                self.cost -= heap(key.len());
                match self.images.entry(Arc::from(r.tagged())) {
                    MapEntry::Occupied(mut o) => o.get_mut().extend(entries),
                    MapEntry::Vacant(v) => {
                        // The key, and its slot in a table that may double.
                        let slot = 2 * size_of::<(String, Vec<WorkloadRef>)>() as u64;
                        let bytes = heap(v.key().len()) + slot;
                        v.insert(entries);
                        self.charge(bytes)?;
                    }
                }
                return Ok(());
            }
            Err(_) => &mut self.report.invalid_keys,
        };
        // Skipped: its entries are freed, the key is kept for the log.
        skipped.push(key);
        self.cost -= cost;
        self.charge(size_of::<String>() as u64)
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum Field {
    Version,
    GeneratedAt,
    Images,
    #[serde(other)]
    Other,
}

/// The top-level object: its `version` and `generatedAt`, the images
/// filed into the builder.
type Head = (Option<u64>, Option<jiff::Timestamp>);

impl<'de> DeserializeSeed<'de> for &mut Builder<'_> {
    type Value = Head;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Head, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for &mut Builder<'_> {
    type Value = Head;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an index object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Head, A::Error> {
        let (mut version, mut generated_at, mut images) = (None, None, false);
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::Version if version.is_none() => version = Some(map.next_value()?),
                Field::GeneratedAt if generated_at.is_none() => {
                    generated_at = Some(map.next_value()?)
                }
                Field::Images if !images => {
                    images = true;
                    map.next_value_seed(Images(&mut *self))?;
                }
                Field::Version => return Err(de::Error::duplicate_field("version")),
                Field::GeneratedAt => return Err(de::Error::duplicate_field("generatedAt")),
                Field::Images => return Err(de::Error::duplicate_field("images")),
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok((version.flatten(), generated_at.flatten()))
    }
}

/// `images`: key by key, each key's entries as they come.
struct Images<'b, 'l>(&'b mut Builder<'l>);

impl<'de> DeserializeSeed<'de> for Images<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Images<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map of image references to workloads")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            self.0.charge(heap(key.len()))?;
            let (entries, cost) = map.next_value_seed(Entries(&mut *self.0))?;
            self.0.add(key, entries, cost)?;
        }
        Ok(())
    }
}

/// One key's entries, checked and charged one by one.
struct Entries<'b, 'l>(&'b mut Builder<'l>);

impl<'de> DeserializeSeed<'de> for Entries<'_, '_> {
    type Value = (Vec<Entry>, u64);
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Entries<'_, '_> {
    type Value = (Vec<Entry>, u64);
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of workloads")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        let mut cost = 0;
        while let Some(mut e) = seq.next_element::<EntryIn>()? {
            // A deserialized Vec starts at capacity 4: for one container,
            // 3 wasted slots, in every entry.
            e.containers.shrink_to_fit();
            let w = WorkloadRef {
                kind: e.kind,
                namespace: e.namespace,
                name: e.name,
                containers: e.containers,
            };
            if let Err(why) = check_names(&w) {
                self.0.report.drop_entry(why, &w);
                continue;
            }
            let bytes = entry_cost(&w);
            self.0.charge(bytes)?;
            cost += bytes;
            out.push(self.0.sharing.entry(&w));
        }
        // Most images have one workload: not 4 slots of 80 bytes each.
        out.shrink_to_fit();
        Ok((out, cost))
    }
}

/// Reads an index from `de` within `limits`.
pub(super) fn read<'de, R: serde_json::de::Read<'de>>(
    de: &mut serde_json::Deserializer<R>,
    limits: &Limits,
) -> Result<(Index, LoadReport), IndexError> {
    let mut builder = Builder::new(limits);
    let head = (&mut builder)
        .deserialize(&mut *de)
        .and_then(|head| de.end().map(|()| head));
    let (version, generated_at) = match head {
        Ok(head) => head,
        Err(_) if builder.over => {
            return Err(IndexError::TooLarge {
                what: "in memory it would take",
                limit: limits.max_memory(),
            });
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(v) = version
        && v != 1
    {
        return Err(IndexError::Version(v));
    }
    let Builder {
        mut images,
        mut sharing,
        report,
        ..
    } = builder;
    // Keys that normalize alike are merged; keep one entry per workload.
    for workloads in images.values_mut() {
        workloads.sort();
        workloads.dedup_by(|a, b| {
            let same = a.kind == b.kind && a.namespace == b.namespace && a.name == b.name;
            if same {
                let mut merged: Vec<&str> = b
                    .containers
                    .iter()
                    .chain(a.containers.iter())
                    .map(|c| &**c)
                    .collect();
                merged.sort();
                merged.dedup();
                b.containers = sharing.names(&merged);
            }
            same
        });
    }
    Ok((Index::from_images(generated_at, images), report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_estimate_follows_the_index() {
        // A real-shaped index: the estimate is about what it takes, and a
        // bound that admits it is not much more than that.
        let entries = (0..2000).map(|i| {
            (
                format!("us-east1-docker.pkg.dev/acme/team-{}/svc-{i}:1.0.0", i / 50),
                WorkloadRef {
                    kind: Kind::Deployment,
                    namespace: format!("team-{}", i / 50),
                    name: format!("svc-{i}"),
                    containers: vec!["app".to_owned()],
                },
            )
        });
        let json = Index::from_entries(None, entries).to_json();
        let limits = Limits::new(u64::MAX / 2);
        let mut builder = Builder::new(&limits);
        (&mut builder)
            .deserialize(&mut serde_json::Deserializer::from_slice(&json))
            .unwrap();
        let per_workload = builder.cost / 2000;
        assert!((250..600).contains(&per_workload), "{per_workload} bytes");
        // About 2.5× the JSON: within the 2× memory allowance of a bound
        // of (JSON length × 1.5).
        assert!(
            builder.cost < json.len() as u64 * 3,
            "{} vs {}",
            builder.cost,
            json.len()
        );
    }
}
