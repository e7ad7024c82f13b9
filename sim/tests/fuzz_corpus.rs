//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the fuzz targets'
//! bodies, so that every input the fuzzers kept, and every crash they found and we fixed, is
//! checked by the ordinary test suite on stable Rust.

// A failed unwrap is a failed test here, with the error in the panic message.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;
use std::time::Instant;

use cqlmirror_sim::fuzzing;

fn replay(target: &str, body: impl Fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut count = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        let data = fs::read(&path).unwrap();
        body(&data);
        count += 1;
    }
    assert!(count > 0, "no corpus for {target} in {}", dir.display());
}

#[test]
fn envelope() {
    replay("envelope", fuzzing::envelope);
}

#[test]
fn segment() {
    replay("segment", fuzzing::segment);
}

#[test]
fn frame_stream() {
    replay("frame_stream", fuzzing::frame_stream);
}

#[test]
fn compression() {
    replay("compression", fuzzing::compression);
}

#[test]
fn request() {
    replay("request", fuzzing::request);
}

#[test]
fn response() {
    replay("response", fuzzing::response);
}

// One real instant as the base of the session's timeline; only offsets from it matter.
#[allow(clippy::disallowed_methods)]
#[test]
fn session() {
    let now = Instant::now();
    replay("session", |data| fuzzing::session(data, now));
}
