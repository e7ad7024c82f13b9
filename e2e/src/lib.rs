//! End-to-end tests of cqlmirror. The tests live in `tests/` (Rust, `scylla` crate) and
//! `python/` (Python `cassandra-driver` and `cqlsh`); they run against the clusters started by
//! `scripts/testbed up`, whose addresses `scripts/test` passes in `CQLMIRROR_BED_*` variables.
