//! Decoders and rewrites never panic, whatever the body: random bytes, and valid bodies that
//! were cut short or had a byte changed (which reach much deeper into the decoders).
#![allow(clippy::unwrap_used)]

mod message_common;

use bytes::Bytes;
use cqlmirror_core::frame::{Opcode, ProtocolVersion};
use cqlmirror_core::message::error::ErrorMessage;
use cqlmirror_core::message::*;
use message_common::*;
use proptest::collection::vec;
use proptest::prelude::*;

/// Runs every decoder and rewrite on `body`, walking everything that decodes.
fn exercise(body: &[u8], version: ProtocolVersion) {
    let shared = Bytes::copy_from_slice(body);
    let _ = Startup::decode(body, version);
    let _ = Supported::decode(body, version);
    let _ = Options::decode(body, version);
    let _ = Register::decode(body, version);
    let _ = Authenticate::decode(body, version);
    let _ = AuthResponse::decode(body, version).map(|a| format!("{a:?}"));
    let _ = AuthChallenge::decode(body, version);
    let _ = AuthSuccess::decode(body, version);
    let _ = Prepare::decode(body, version);
    let _ = Event::decode(body, version).map(|e| e.to_bytes(version));
    let _ = ErrorMessage::decode(body, version).map(|e| e.to_bytes(version));
    if let Ok(q) = Query::decode(body, version) {
        let _ = q.params.values.map(|v| v.iter().count());
        let _ = q.to_bytes(version);
    }
    let _ = Execute::decode(body, version).map(|e| e.to_bytes(version));
    if let Ok(b) = Batch::decode(body, version) {
        for s in b.statements.iter() {
            let _ = s.values.iter().count();
        }
        let _ = b.to_bytes(version);
    }
    if let Ok(r) = ResultMessage::decode(body, version) {
        if let ResultMessage::Rows(rows) = &r {
            for row in rows.iter().flatten() {
                let _ = row.cells().count();
            }
            let _ = rows.validate();
        }
        let _ = r.to_bytes(version);
    }
    for opcode in [Opcode::QUERY, Opcode::EXECUTE, Opcode::BATCH] {
        let _ = ensure_default_timestamp(opcode, body, version, 1);
    }
    let _ = Execute::with_ids(&shared, version, b"id", Some(b"m"));
    let _ = Prepared::with_ids(&shared, version, b"id", None);
    let _ = Batch::map_prepared_ids(&shared, version, |_| Some(Bytes::from_static(b"x")));
}

/// A valid body of some message, for mutation. The branches are boxed: unboxed, the strategy
/// type is so deep that generating a value overflows a test thread's stack in debug builds.
fn valid_body() -> impl Strategy<Value = (ProtocolVersion, Bytes)> {
    version().prop_flat_map(|v| {
        let body = prop::strategy::Union::new(vec![
            query(v).prop_map(move |x| x.to_bytes(v)).boxed(),
            execute(v).prop_map(move |x| x.to_bytes(v)).boxed(),
            batch(v).prop_map(move |x| x.to_bytes(v)).boxed(),
            prepare(v).prop_map(move |x| x.to_bytes(v)).boxed(),
            startup().prop_map(move |x| x.to_bytes(v)).boxed(),
            supported().prop_map(move |x| x.to_bytes(v)).boxed(),
            event().prop_map(move |x| x.to_bytes(v)).boxed(),
            error_message(v).prop_map(move |x| x.to_bytes(v)).boxed(),
            prepared(v)
                .prop_map(move |x| ResultMessage::Prepared(x).to_bytes(v))
                .boxed(),
            rows_body().prop_map(|(body, _, _)| body).boxed(),
        ]);
        (Just(v), body)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn random_bodies(version in version(), body in vec(any::<u8>(), 0..96)) {
        exercise(&body, version);
    }

    /// Random bodies that start like a RESULT of each kind, to get past the kind check.
    #[test]
    fn random_results(version in version(), kind in 1i32..=5, rest in vec(any::<u8>(), 0..96)) {
        let mut body = kind.to_be_bytes().to_vec();
        body.extend(rest);
        exercise(&body, version);
    }

    #[test]
    fn mutated_bodies(
        (version, body) in valid_body(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut changed = body.to_vec();
        if !changed.is_empty() {
            let i = flip.index(changed.len());
            changed[i] = byte;
        }
        exercise(&changed, version);
        let cut = cut.index(body.len() + 1);
        exercise(&body[..cut], version);
    }
}
