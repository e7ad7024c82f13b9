//! A cluster's data: the key-value table and the prepared statements it knows.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::cql::Stmt;

/// One cell of the table: the value with its write time; the later write wins, as in
/// Cassandra (on equal times, the greater value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    pub value: String,
    pub timestamp: i64,
}

/// A prepared statement as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedEntry {
    pub text: String,
    pub stmt: Stmt,
    pub keyspace: Option<String>,
    pub result_metadata_id: Bytes,
}

/// The table and the prepared statements.
#[derive(Debug, Default, Clone)]
pub struct Store {
    table: BTreeMap<i64, Cell>,
    prepared: BTreeMap<Bytes, PreparedEntry>,
}

impl Store {
    pub fn get(&self, key: i64) -> Option<&Cell> {
        self.table.get(&key)
    }

    /// Applies a write with last-write-wins.
    pub fn put(&mut self, key: i64, value: String, timestamp: i64) {
        let newer = match self.table.get(&key) {
            None => true,
            Some(old) => (timestamp, &value) > (old.timestamp, &old.value),
        };
        if newer {
            self.table.insert(key, Cell { value, timestamp });
        }
    }

    /// The whole table, by key.
    pub fn table(&self) -> &BTreeMap<i64, Cell> {
        &self.table
    }

    pub fn prepared(&self, id: &[u8]) -> Option<&PreparedEntry> {
        self.prepared.get(id)
    }

    pub fn prepare(&mut self, id: Bytes, entry: PreparedEntry) {
        self.prepared.insert(id, entry);
    }

    pub fn forget(&mut self, id: &[u8]) {
        self.prepared.remove(id);
    }

    pub fn forget_all(&mut self) {
        self.prepared.clear();
    }

    pub fn prepared_count(&self) -> usize {
        self.prepared.len()
    }
}

/// A 16-byte id for `parts` under `salt`: two rounds of FNV-1a, mixed. Two clusters with
/// different salts give the same statement different ids, as real clusters may.
pub fn id_of(salt: u64, parts: &[&str]) -> Bytes {
    let mut out = Vec::with_capacity(16);
    for round in 0..2u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ salt ^ round.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for part in parts {
            for &b in part.as_bytes().iter().chain(std::iter::once(&0xffu8)) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        out.extend_from_slice(&h.to_be_bytes());
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_write_wins_and_ids_depend_on_salt() {
        let mut s = Store::default();
        s.put(1, "b".into(), 10);
        s.put(1, "a".into(), 9);
        assert_eq!(s.get(1).unwrap().value, "b");
        s.put(1, "a".into(), 10);
        assert_eq!(s.get(1).unwrap().value, "b");
        s.put(1, "c".into(), 10);
        assert_eq!(s.get(1).unwrap().value, "c");
        assert_eq!(id_of(1, &["x"]), id_of(1, &["x"]));
        assert_ne!(id_of(1, &["x"]), id_of(2, &["x"]));
        assert_ne!(id_of(1, &["x", "y"]), id_of(1, &["xy"]));
        assert_eq!(id_of(1, &["x"]).len(), 16);
    }
}
