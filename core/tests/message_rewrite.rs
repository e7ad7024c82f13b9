//! The proxy's request rewrites: default timestamps and prepared-id mapping. Each rewritten
//! body must decode to the original message with only the intended field changed.
#![allow(clippy::unwrap_used)]

mod message_common;

use bytes::Bytes;
use cqlmirror_core::frame::{Opcode, ProtocolVersion};
use cqlmirror_core::message::*;
use message_common::*;
use proptest::prelude::*;

fn inserted(outcome: DefaultTimestamp) -> Bytes {
    match outcome {
        DefaultTimestamp::Inserted(body) => body,
        other => panic!("expected an insertion, got {other:?}"),
    }
}

/// The `now_in_seconds` the proxy adds: in v5, when the client set none.
fn stamped_now(version: ProtocolVersion, client: Option<i32>, micros: i64) -> Option<i32> {
    (version == ProtocolVersion::V5 && client.is_none()).then(|| now_in_seconds(micros))
}

proptest! {
    #[test]
    fn query_gets_a_timestamp(
        (version, q) in version().prop_flat_map(|v| (Just(v), query(v))),
        micros in 0i64..i64::MAX,
    ) {
        let body = q.to_bytes(version);
        let outcome = ensure_default_timestamp(Opcode::QUERY, &body, version, micros).unwrap();
        let now = stamped_now(version, q.params.now_in_seconds, micros);
        match (q.params.timestamp, now) {
            (Some(t), None) => prop_assert_eq!(outcome, DefaultTimestamp::AlreadySet(t)),
            _ => {
                let new = inserted(outcome);
                let added = if q.params.timestamp.is_none() { 8 } else { 0 } + if now.is_some() { 4 } else { 0 };
                prop_assert_eq!(new.len(), body.len() + added);
                let back = Query::decode(&new, version).unwrap();
                let mut expected = q;
                expected.params.timestamp = expected.params.timestamp.or(Some(micros));
                expected.params.now_in_seconds = expected.params.now_in_seconds.or(now);
                prop_assert_eq!(back, expected);
                // Same bytes as encoding the message with the timestamp set.
                prop_assert_eq!(new, expected.to_bytes(version));
            }
        }
    }

    #[test]
    fn execute_gets_a_timestamp(
        (version, e) in version().prop_flat_map(|v| (Just(v), execute(v))),
        micros in 0i64..i64::MAX,
    ) {
        let body = e.to_bytes(version);
        let outcome = ensure_default_timestamp(Opcode::EXECUTE, &body, version, micros).unwrap();
        let now = stamped_now(version, e.params.now_in_seconds, micros);
        match (e.params.timestamp, now) {
            (Some(t), None) => prop_assert_eq!(outcome, DefaultTimestamp::AlreadySet(t)),
            _ => {
                let new = inserted(outcome);
                let mut expected = e;
                expected.params.timestamp = expected.params.timestamp.or(Some(micros));
                expected.params.now_in_seconds = expected.params.now_in_seconds.or(now);
                prop_assert_eq!(Execute::decode(&new, version).unwrap(), expected);
                prop_assert_eq!(new, expected.to_bytes(version));
            }
        }
    }

    #[test]
    fn batch_gets_a_timestamp(
        (version, b) in version().prop_flat_map(|v| (Just(v), batch(v))),
        micros in 0i64..i64::MAX,
    ) {
        let body = b.to_bytes(version);
        let outcome = ensure_default_timestamp(Opcode::BATCH, &body, version, micros).unwrap();
        let now = stamped_now(version, b.now_in_seconds, micros);
        match (b.timestamp, now) {
            (Some(t), None) => prop_assert_eq!(outcome, DefaultTimestamp::AlreadySet(t)),
            _ => {
                let new = inserted(outcome);
                let mut expected = b;
                expected.timestamp = expected.timestamp.or(Some(micros));
                expected.now_in_seconds = expected.now_in_seconds.or(now);
                prop_assert_eq!(Batch::decode(&new, version).unwrap(), expected);
                prop_assert_eq!(new, expected.to_bytes(version));
            }
        }
    }

    #[test]
    fn execute_ids_are_replaced(
        (version, e) in version().prop_flat_map(|v| (Just(v), execute(v))),
        new_id in blob(20),
        new_rmid in proptest::option::of(blob(20)),
    ) {
        let body = e.to_bytes(version);
        let spliced = Execute::with_ids(&body, version, new_id, new_rmid).unwrap();
        // The parameters are shared with the original body, not copied.
        prop_assert_eq!(spliced.tail.as_ptr(), body[body.len() - spliced.tail.len()..].as_ptr());
        let new = spliced.to_bytes();
        prop_assert_eq!(new.len(), spliced.len());
        let expected = Execute {
            id: new_id,
            result_metadata_id: e.result_metadata_id.map(|old| new_rmid.unwrap_or(old)),
            ..e
        };
        prop_assert_eq!(Execute::decode(&new, version).unwrap(), expected);
    }

    #[test]
    fn prepared_ids_are_replaced(
        (version, p) in version().prop_flat_map(|v| (Just(v), prepared(v))),
        new_id in blob(20),
        new_rmid in proptest::option::of(blob(20)),
    ) {
        let body = ResultMessage::Prepared(p.clone()).to_bytes(version);
        let new = Prepared::with_ids(&body, version, new_id, new_rmid).unwrap().to_bytes();
        let expected = Prepared {
            id: new_id,
            result_metadata_id: p.result_metadata_id.map(|old| new_rmid.unwrap_or(old)),
            ..p
        };
        prop_assert_eq!(
            ResultMessage::decode(&new, version).unwrap(),
            ResultMessage::Prepared(expected)
        );
    }

    /// Ids of even length are mapped (reversed and prefixed), others kept.
    #[test]
    fn batch_ids_are_mapped((version, b) in version().prop_flat_map(|v| (Just(v), batch(v)))) {
        let body = b.to_bytes(version);
        let map = |id: &[u8]| -> Option<Bytes> {
            (id.len() % 2 == 0).then(|| {
                let mut new = vec![0xee];
                new.extend(id.iter().rev());
                Bytes::from(new)
            })
        };
        let new = Batch::map_prepared_ids(&body, version, map).unwrap();
        let decoded = Batch::decode(&new, version).unwrap();
        let expected_ids: Vec<Vec<u8>> = b
            .statements
            .iter()
            .map(|s| match s.statement {
                Statement::Prepared(id) => map(id).map_or(id.to_vec(), |n| n.to_vec()),
                Statement::Query(q) => q.as_bytes().to_vec(),
            })
            .collect();
        let got_ids: Vec<Vec<u8>> = decoded
            .statements
            .iter()
            .map(|s| match s.statement {
                Statement::Prepared(id) => id.to_vec(),
                Statement::Query(q) => q.as_bytes().to_vec(),
            })
            .collect();
        prop_assert_eq!(got_ids, expected_ids);
        // Everything else is unchanged.
        prop_assert!(decoded.statements.iter().zip(b.statements.iter()).all(|(x, y)| x.values == y.values));
        prop_assert_eq!(
            Batch { statements: b.statements, ..decoded },
            b
        );
        let changed = b.statements.iter().any(|s| matches!(s.statement, Statement::Prepared(id) if id.len() % 2 == 0));
        if !changed {
            // Nothing to map: the very same buffer comes back.
            prop_assert_eq!(new.as_ptr(), body.as_ptr());
        }
    }
}

#[test]
fn timestamp_goes_before_keyspace_and_now_in_seconds() {
    let q = Query {
        text: "INSERT INTO t (k) VALUES (1)",
        params: QueryParams {
            serial_consistency: Some(cqlmirror_core::wire::Consistency::LOCAL_SERIAL),
            keyspace: Some("ks"),
            now_in_seconds: Some(7),
            ..QueryParams::new(cqlmirror_core::wire::Consistency::QUORUM)
        },
    };
    let body = q.to_bytes(ProtocolVersion::V5);
    let new = inserted(
        ensure_default_timestamp(Opcode::QUERY, &body, ProtocolVersion::V5, 0x0102_0304).unwrap(),
    );
    let text_len = 4 + q.text.len();
    // consistency, flags (int), serial consistency, timestamp, keyspace, now_in_seconds
    assert_eq!(
        &new[text_len..],
        &[
            0x00, 0x04, // QUORUM
            0x00, 0x00, 0x01, 0xb0, // flags: serial | timestamp | keyspace | now
            0x00, 0x09, // LOCAL_SERIAL
            0, 0, 0, 0, 0x01, 0x02, 0x03, 0x04, // the timestamp
            0x00, 0x02, b'k', b's', // keyspace
            0, 0, 0, 7, // now_in_seconds
        ]
    );
}

#[test]
fn v5_gets_now_in_seconds_even_with_a_client_timestamp() {
    let q = Query {
        text: "INSERT INTO t (k) VALUES (1) USING TTL 60",
        params: QueryParams {
            timestamp: Some(5),
            ..QueryParams::new(cqlmirror_core::wire::Consistency::ONE)
        },
    };
    let body = q.to_bytes(ProtocolVersion::V5);
    let micros = 1_765_000_000_123_456;
    let new = inserted(
        ensure_default_timestamp(Opcode::QUERY, &body, ProtocolVersion::V5, micros).unwrap(),
    );
    let back = Query::decode(&new, ProtocolVersion::V5).unwrap();
    assert_eq!(
        back.params.timestamp,
        Some(5),
        "the client's timestamp is kept"
    );
    assert_eq!(back.params.now_in_seconds, Some(1_765_000_000));
    // v4 has no such field: a body with a timestamp stays as it is.
    let v4 = q.to_bytes(ProtocolVersion::V4);
    assert_eq!(
        ensure_default_timestamp(Opcode::QUERY, &v4, ProtocolVersion::V4, micros).unwrap(),
        DefaultTimestamp::AlreadySet(5)
    );
    // A client's own now_in_seconds is kept.
    let own = Query {
        params: QueryParams {
            now_in_seconds: Some(9),
            ..q.params
        },
        ..q
    }
    .to_bytes(ProtocolVersion::V5);
    assert_eq!(
        ensure_default_timestamp(Opcode::QUERY, &own, ProtocolVersion::V5, micros).unwrap(),
        DefaultTimestamp::AlreadySet(5)
    );
}

#[test]
fn timestamp_refuses_other_opcodes_and_bad_bodies() {
    let body = Prepare {
        query: "SELECT 1",
        keyspace: None,
    }
    .to_bytes(ProtocolVersion::V4);
    assert!(ensure_default_timestamp(Opcode::PREPARE, &body, ProtocolVersion::V4, 1).is_err());
    // A QUERY body cut short is never rewritten.
    let q = Query {
        text: "x",
        params: QueryParams::new(cqlmirror_core::wire::Consistency::ONE),
    }
    .to_bytes(ProtocolVersion::V4);
    for cut in 0..q.len() {
        assert!(
            ensure_default_timestamp(Opcode::QUERY, &q[..cut], ProtocolVersion::V4, 1).is_err()
        );
    }
}
