//! Shared copies of the values an index repeats. At 50,000 workloads the
//! same hundred namespaces, few thousand image keys and handful of
//! container names come back on every workload; holding each once (and
//! handing out `Arc`s to it) is what keeps the builder and the index small.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::Arc;

use super::Entry;
use crate::workload::WorkloadRef;

/// A set of shared values: [`intern`](Interner::intern) returns the one
/// copy of a value, making it on first sight.
#[derive(Debug)]
pub(crate) struct Interner<T: ?Sized> {
    values: HashSet<Arc<T>>,
}

impl<T: ?Sized> Default for Interner<T> {
    fn default() -> Self {
        Interner {
            values: HashSet::new(),
        }
    }
}

impl<T: ?Sized + Eq + Hash> Interner<T> {
    /// The shared copy of `value`.
    pub(crate) fn intern(&mut self, value: &T) -> Arc<T>
    where
        for<'a> Arc<T>: From<&'a T>,
    {
        if let Some(shared) = self.values.get(value) {
            return shared.clone();
        }
        let shared = Arc::<T>::from(value);
        self.values.insert(shared.clone());
        shared
    }

    /// The shared copy of `value`, if there is one.
    pub(crate) fn get(&self, value: &T) -> Option<Arc<T>> {
        self.values.get(value).cloned()
    }

    /// Forgets the values that nothing outside holds any more.
    pub(crate) fn prune(&mut self) {
        self.values.retain(|v| Arc::strong_count(v) > 1);
        self.values.shrink_to_fit();
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.values.len()
    }
}

/// The interners of an index being read or built from plain
/// [`WorkloadRef`]s: one copy of each string and of each container list.
#[derive(Debug, Default)]
pub(crate) struct Sharing {
    strings: Interner<str>,
    lists: Interner<[Arc<str>]>,
}

impl Sharing {
    /// The shared copy of an image key (or any string).
    pub(crate) fn key(&mut self, key: &str) -> Arc<str> {
        self.strings.intern(key)
    }

    /// The shared copy of a list of names.
    pub(crate) fn names<S: AsRef<str>>(&mut self, names: &[S]) -> Arc<[Arc<str>]> {
        let names: Vec<Arc<str>> = names
            .iter()
            .map(|n| self.strings.intern(n.as_ref()))
            .collect();
        self.lists.intern(&names)
    }

    pub(crate) fn entry(&mut self, w: &WorkloadRef) -> Entry {
        Entry {
            kind: w.kind,
            namespace: self.strings.intern(&w.namespace),
            name: self.strings.intern(&w.name),
            containers: self.names(&w.containers),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_copy_until_nobody_holds_it() {
        let mut strings = Interner::<str>::default();
        let a = strings.intern("team-1");
        let b = strings.intern("team-1");
        assert!(Arc::ptr_eq(&a, &b));
        let other = strings.intern("team-2");
        assert_eq!(strings.len(), 2);
        drop(other);
        strings.prune();
        assert_eq!(strings.len(), 1);
        drop((a, b));
        strings.prune();
        assert_eq!(strings.len(), 0);
    }
}
