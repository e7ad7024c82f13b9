//! The proxy-wide map of prepared statements.
//!
//! Clients only ever see the source's prepared ids. For each, the proxy remembers the target's
//! id (the two clusters may assign different ones), the statement text and keyspace (to
//! re-prepare on the target when it answers UNPREPARED), and what the statement is (whether it
//! writes, whether it is conditional). The map is bounded: the oldest entries are forgotten
//! first, which costs at most one transparent re-prepare on the target later.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use crate::statement::Statement;

/// What the proxy knows about one prepared statement, keyed by the source's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedStatement {
    pub query: String,
    /// The keyspace it was prepared in (v5 keyspace flag or the connection's `USE`), if any.
    pub keyspace: Option<String>,
    pub statement: Statement,
    /// The target's id and (v5) result metadata id, once the target prepared it.
    pub target: Option<TargetIds>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetIds {
    pub id: Bytes,
    pub result_metadata_id: Option<Bytes>,
}

/// A bounded map from source prepared id to [`PreparedStatement`].
#[derive(Debug)]
pub struct PreparedCache {
    capacity: usize,
    by_source: BTreeMap<Bytes, PreparedStatement>,
    /// Target id → source id, to find the statement behind a target's UNPREPARED.
    by_target: BTreeMap<Bytes, Bytes>,
    /// Source ids, oldest first, for eviction.
    order: VecDeque<Bytes>,
}

impl PreparedCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            by_source: BTreeMap::new(),
            by_target: BTreeMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.by_source.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_source.is_empty()
    }

    pub fn get(&self, source_id: &[u8]) -> Option<&PreparedStatement> {
        self.by_source.get(source_id)
    }

    /// The source id whose target id is `target_id`.
    pub fn source_id_for_target(&self, target_id: &[u8]) -> Option<&Bytes> {
        self.by_target.get(target_id)
    }

    /// Remembers (or refreshes) a statement prepared on the source.
    pub fn insert(&mut self, source_id: Bytes, entry: PreparedStatement) {
        if let Some(old) = self.by_source.get(&source_id) {
            if let Some(t) = &old.target {
                self.by_target.remove(&t.id);
            }
        } else {
            self.order.push_back(source_id.clone());
        }
        if let Some(t) = &entry.target {
            self.by_target.insert(t.id.clone(), source_id.clone());
        }
        self.by_source.insert(source_id, entry);
        while self.by_source.len() > self.capacity {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(gone) = self.by_source.remove(&oldest) {
                if let Some(t) = gone.target {
                    self.by_target.remove(&t.id);
                }
            }
        }
    }

    /// Records the target's ids for a statement already known by its source id.
    pub fn set_target(&mut self, source_id: &[u8], target: TargetIds) {
        if let Some(entry) = self.by_source.get_mut(source_id) {
            if let Some(old) = entry.target.take() {
                self.by_target.remove(&old.id);
            }
            self.by_target
                .insert(target.id.clone(), Bytes::copy_from_slice(source_id));
            entry.target = Some(target);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(q: &str, target: Option<&'static [u8]>) -> PreparedStatement {
        PreparedStatement {
            query: q.into(),
            keyspace: None,
            statement: Statement::classify(q),
            target: target.map(|id| TargetIds {
                id: Bytes::from_static(id),
                result_metadata_id: None,
            }),
        }
    }

    #[test]
    fn maps_both_ways_and_evicts_oldest() {
        let mut c = PreparedCache::new(2);
        c.insert(Bytes::from_static(b"s1"), entry("SELECT 1", Some(b"t1")));
        c.insert(Bytes::from_static(b"s2"), entry("SELECT 2", None));
        c.set_target(
            b"s2",
            TargetIds {
                id: Bytes::from_static(b"t2"),
                result_metadata_id: None,
            },
        );
        assert_eq!(c.source_id_for_target(b"t2").unwrap().as_ref(), b"s2");
        c.insert(Bytes::from_static(b"s3"), entry("SELECT 3", None));
        assert_eq!(c.len(), 2);
        assert!(c.get(b"s1").is_none());
        assert!(c.source_id_for_target(b"t1").is_none());
        assert_eq!(c.get(b"s3").unwrap().query, "SELECT 3");
    }

    #[test]
    fn re_inserting_refreshes_without_growing() {
        let mut c = PreparedCache::new(2);
        c.insert(Bytes::from_static(b"s1"), entry("SELECT 1", Some(b"t1")));
        c.insert(Bytes::from_static(b"s1"), entry("SELECT 1", Some(b"t9")));
        assert_eq!(c.len(), 1);
        assert!(c.source_id_for_target(b"t1").is_none());
        assert_eq!(c.source_id_for_target(b"t9").unwrap().as_ref(), b"s1");
    }
}
