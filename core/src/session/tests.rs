//! Unit tests of the session live in the simulation (see `crate::sim`).
