//! The proxy-wide map of prepared statements.
//!
//! A client holds the id that the primary of the moment gave its PREPARE. For each such id the
//! proxy remembers every cluster's own id (the clusters may assign different ones, and the
//! primary may change while the client keeps its id), the statement text and keyspace (to
//! prepare it again on a cluster that answers UNPREPARED), and what the statement is (whether
//! it writes, whether it is conditional). The map is bounded: the oldest entries are forgotten
//! first, which costs the client one UNPREPARED and a new PREPARE through the proxy.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;

use crate::config::Upstream;
use crate::statement::Statement;
use crate::statement::functions::GeneratedMarker;
use crate::topology::SystemQuery;

/// What the proxy knows about one prepared statement, keyed by the id the client holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedStatement {
    pub query: String,
    /// The keyspace it was prepared in (v5 keyspace flag or the connection's `USE`), if any.
    pub keyspace: Option<String>,
    pub statement: Statement,
    /// The cluster whose ids the client holds: the primary when the client prepared it.
    pub origin: Upstream,
    /// Each cluster's ids, by [`Upstream::index`], once it prepared the statement.
    pub ids: [Option<ClusterIds>; 2],
    /// A read of a topology table, which the proxy answers itself when executed.
    pub system: Option<SystemQuery>,
    /// The origin's PREPARED answer (the RESULT message): its result metadata names and types
    /// the columns of answers sent without metadata, for comparing them.
    pub result: Option<Bytes>,
    /// Every table it touches is in `--filter-tables` (decided once, when prepared): the
    /// target never executes it.
    pub off_target: bool,
    /// The bind markers the proxy put in place of function calls when it prepared the
    /// statement (`query` is the text with them): each EXECUTE gets fresh values for them.
    pub generated: Option<Arc<[GeneratedMarker]>>,
}

impl PreparedStatement {
    /// The ids `upstream` knows the statement by, if it prepared it.
    pub fn ids(&self, upstream: Upstream) -> Option<&ClusterIds> {
        self.ids[upstream.index()].as_ref()
    }
}

/// A cluster's prepared id and (v5) result metadata id for a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterIds {
    pub id: Bytes,
    pub result_metadata_id: Option<Bytes>,
}

/// A bounded map from the id a client holds to [`PreparedStatement`].
#[derive(Debug)]
pub struct PreparedCache {
    capacity: usize,
    by_client: BTreeMap<Bytes, PreparedStatement>,
    /// Per cluster: its id → the client's id, to find the statement behind its UNPREPARED.
    by_cluster: [BTreeMap<Bytes, Bytes>; 2],
    /// Client ids, oldest first, for eviction.
    order: VecDeque<Bytes>,
    /// Statements dropped to stay within the capacity, since the start.
    evictions: u64,
}

impl PreparedCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            by_client: BTreeMap::new(),
            by_cluster: Default::default(),
            order: VecDeque::new(),
            evictions: 0,
        }
    }

    /// Statements dropped to stay within the capacity so far: clients that execute them again
    /// get UNPREPARED and prepare them again.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    pub fn len(&self) -> usize {
        self.by_client.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_client.is_empty()
    }

    /// The statement a client names by `client_id`.
    pub fn get(&self, client_id: &[u8]) -> Option<&PreparedStatement> {
        self.by_client.get(client_id)
    }

    /// The client id of the statement that `upstream` knows as `cluster_id`.
    pub fn client_id_for(&self, upstream: Upstream, cluster_id: &[u8]) -> Option<&Bytes> {
        self.by_cluster[upstream.index()].get(cluster_id)
    }

    /// Remembers (or refreshes) a statement the client now knows as `client_id`. A refresh
    /// keeps the ids of clusters that have not answered the new PREPARE (yet): other
    /// connections go on executing the statement there meanwhile.
    pub fn insert(&mut self, client_id: Bytes, mut entry: PreparedStatement) {
        match self.by_client.remove(&client_id) {
            Some(old) => {
                self.unlink(&client_id, &old);
                for (new, old) in entry.ids.iter_mut().zip(old.ids) {
                    if new.is_none() {
                        *new = old;
                    }
                }
            }
            None => self.order.push_back(client_id.clone()),
        }
        for upstream in Upstream::BOTH {
            if let Some(ids) = entry.ids(upstream) {
                self.by_cluster[upstream.index()].insert(ids.id.clone(), client_id.clone());
            }
        }
        self.by_client.insert(client_id, entry);
        while self.by_client.len() > self.capacity {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(gone) = self.by_client.remove(&oldest) {
                self.unlink(&oldest, &gone);
                self.evictions += 1;
            }
        }
    }

    /// Records `upstream`'s ids for a statement known by its client id.
    pub fn set_ids(&mut self, client_id: &[u8], upstream: Upstream, ids: ClusterIds) {
        let Some(entry) = self.by_client.get_mut(client_id) else {
            return;
        };
        let map = &mut self.by_cluster[upstream.index()];
        if let Some(old) = entry.ids[upstream.index()].take() {
            if map.get(&old.id).is_some_and(|c| c.as_ref() == client_id) {
                map.remove(&old.id);
            }
        }
        map.insert(ids.id.clone(), Bytes::copy_from_slice(client_id));
        entry.ids[upstream.index()] = Some(ids);
    }

    /// Drops the reverse entries of a statement that leaves the map, unless they were taken
    /// over by another client id for the same cluster id.
    fn unlink(&mut self, client_id: &Bytes, entry: &PreparedStatement) {
        for upstream in Upstream::BOTH {
            if let Some(ids) = entry.ids(upstream) {
                let map = &mut self.by_cluster[upstream.index()];
                if map.get(&ids.id) == Some(client_id) {
                    map.remove(&ids.id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(id: &'static [u8]) -> ClusterIds {
        ClusterIds {
            id: Bytes::from_static(id),
            result_metadata_id: None,
        }
    }

    fn entry(
        q: &str,
        source: Option<&'static [u8]>,
        target: Option<&'static [u8]>,
    ) -> PreparedStatement {
        PreparedStatement {
            query: q.into(),
            keyspace: None,
            statement: Statement::classify(q),
            origin: Upstream::Source,
            ids: [source.map(ids), target.map(ids)],
            system: None,
            result: None,
            off_target: false,
            generated: None,
        }
    }

    #[test]
    fn maps_both_ways_and_evicts_oldest() {
        let mut c = PreparedCache::new(2);
        c.insert(
            Bytes::from_static(b"s1"),
            entry("SELECT 1", Some(b"s1"), Some(b"t1")),
        );
        c.insert(
            Bytes::from_static(b"s2"),
            entry("SELECT 2", Some(b"s2"), None),
        );
        c.set_ids(b"s2", Upstream::Target, ids(b"t2"));
        assert_eq!(
            c.client_id_for(Upstream::Target, b"t2").unwrap().as_ref(),
            b"s2"
        );
        assert_eq!(
            c.client_id_for(Upstream::Source, b"s2").unwrap().as_ref(),
            b"s2"
        );
        c.insert(
            Bytes::from_static(b"s3"),
            entry("SELECT 3", Some(b"s3"), None),
        );
        assert_eq!(c.len(), 2);
        assert!(c.get(b"s1").is_none());
        assert!(c.client_id_for(Upstream::Target, b"t1").is_none());
        assert_eq!(c.get(b"s3").unwrap().query, "SELECT 3");
    }

    #[test]
    fn a_refresh_keeps_the_ids_of_clusters_that_did_not_answer_it_yet() {
        let mut c = PreparedCache::new(2);
        c.insert(
            Bytes::from_static(b"t1"),
            entry("SELECT 1", Some(b"s1"), Some(b"t1")),
        );
        // Another connection prepares it again; the primary answered, the other has not.
        c.insert(
            Bytes::from_static(b"t1"),
            entry("SELECT 1", None, Some(b"t1")),
        );
        let known = c.get(b"t1").unwrap();
        assert_eq!(known.ids(Upstream::Source).unwrap().id.as_ref(), b"s1");
        assert_eq!(
            c.client_id_for(Upstream::Source, b"s1").unwrap().as_ref(),
            b"t1"
        );
    }

    #[test]
    fn re_inserting_refreshes_without_growing() {
        let mut c = PreparedCache::new(2);
        c.insert(
            Bytes::from_static(b"s1"),
            entry("SELECT 1", Some(b"s1"), Some(b"t1")),
        );
        c.insert(
            Bytes::from_static(b"s1"),
            entry("SELECT 1", Some(b"s1"), Some(b"t9")),
        );
        assert_eq!(c.len(), 1);
        assert!(c.client_id_for(Upstream::Target, b"t1").is_none());
        assert_eq!(
            c.client_id_for(Upstream::Target, b"t9").unwrap().as_ref(),
            b"s1"
        );
    }

    #[test]
    fn clients_holding_either_clusters_id_find_the_statement() {
        // Prepared while the source was primary (the client holds s1), then again while the
        // target was (another client holds t1): both ids name the statement, and each
        // cluster's UNPREPARED leads back to a client id.
        let mut c = PreparedCache::new(4);
        c.insert(
            Bytes::from_static(b"s1"),
            entry("SELECT 1", Some(b"s1"), Some(b"t1")),
        );
        let mut by_target = entry("SELECT 1", Some(b"s1"), Some(b"t1"));
        by_target.origin = Upstream::Target;
        c.insert(Bytes::from_static(b"t1"), by_target);
        assert_eq!(
            c.get(b"s1")
                .unwrap()
                .ids(Upstream::Target)
                .unwrap()
                .id
                .as_ref(),
            b"t1"
        );
        assert_eq!(
            c.get(b"t1")
                .unwrap()
                .ids(Upstream::Source)
                .unwrap()
                .id
                .as_ref(),
            b"s1"
        );
        assert!(c.client_id_for(Upstream::Source, b"s1").is_some());
        // Forgetting one client id keeps the other's reverse entries.
        c.insert(
            Bytes::from_static(b"x"),
            entry("SELECT 2", Some(b"x"), None),
        );
        c.insert(
            Bytes::from_static(b"y"),
            entry("SELECT 3", Some(b"y"), None),
        );
        c.insert(
            Bytes::from_static(b"z"),
            entry("SELECT 4", Some(b"z"), None),
        );
        assert!(c.get(b"s1").is_none());
        assert_eq!(
            c.client_id_for(Upstream::Target, b"t1").unwrap().as_ref(),
            b"t1"
        );
    }
}
