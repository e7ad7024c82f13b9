//! decode(encode(x)) == x for every message body, in every protocol version.
#![allow(clippy::unwrap_used)]

mod message_common;

use std::fmt::Debug;

use cqlmirror_core::frame::ProtocolVersion;
use cqlmirror_core::message::*;
use message_common::*;
use proptest::prelude::*;

/// Encodes, decodes and compares; also checks that encoding is stable.
fn round_trip<'a, T>(x: &T, version: ProtocolVersion, buf: &'a mut bytes::Bytes) -> T
where
    T: Body<'a> + PartialEq + Debug,
{
    *buf = x.to_bytes(version);
    let back = T::decode(buf, version).unwrap_or_else(|e| panic!("{x:?} in {version}: {e}"));
    assert_eq!(&back, x, "{version}");
    assert_eq!(
        back.to_bytes(version),
        *buf,
        "re-encoding differs in {version}"
    );
    back
}

proptest! {
    #[test]
    fn query_round_trip((version, q) in version().prop_flat_map(|v| (Just(v), query(v)))) {
        round_trip(&q, version, &mut Default::default());
    }

    #[test]
    fn execute_round_trip((version, e) in version().prop_flat_map(|v| (Just(v), execute(v)))) {
        round_trip(&e, version, &mut Default::default());
    }

    #[test]
    fn batch_round_trip((version, b) in version().prop_flat_map(|v| (Just(v), batch(v)))) {
        round_trip(&b, version, &mut Default::default());
    }

    #[test]
    fn prepare_round_trip((version, p) in version().prop_flat_map(|v| (Just(v), prepare(v)))) {
        round_trip(&p, version, &mut Default::default());
    }

    #[test]
    fn startup_and_options_round_trip(version in version(), s in startup()) {
        round_trip(&s, version, &mut Default::default());
        round_trip(&Options, version, &mut Default::default());
        round_trip(&Ready, version, &mut Default::default());
    }

    #[test]
    fn supported_round_trip(version in version(), s in supported()) {
        round_trip(&s, version, &mut Default::default());
    }

    #[test]
    fn register_round_trip(version in version(), r in register()) {
        round_trip(&r, version, &mut Default::default());
    }

    #[test]
    fn auth_round_trip(version in version(), authenticator in text(), a in token(), b in token(), c in token()) {
        round_trip(&Authenticate { authenticator }, version, &mut Default::default());
        round_trip(&AuthResponse { token: a }, version, &mut Default::default());
        round_trip(&AuthChallenge { token: b }, version, &mut Default::default());
        round_trip(&AuthSuccess { token: c }, version, &mut Default::default());
    }

    #[test]
    fn error_round_trip((version, e) in version().prop_flat_map(|v| (Just(v), error_message(v)))) {
        round_trip(&e, version, &mut Default::default());
    }

    #[test]
    fn event_round_trip(version in version(), e in event()) {
        round_trip(&e, version, &mut Default::default());
    }

    #[test]
    fn simple_results_round_trip(version in version(), ks in name(), change in schema_change()) {
        round_trip(&ResultMessage::Void, version, &mut Default::default());
        round_trip(&ResultMessage::SetKeyspace(ks), version, &mut Default::default());
        round_trip(&ResultMessage::SchemaChange(change), version, &mut Default::default());
    }

    #[test]
    fn prepared_result_round_trip((version, p) in version().prop_flat_map(|v| (Just(v), prepared(v)))) {
        round_trip(&ResultMessage::Prepared(p), version, &mut Default::default());
    }

    /// Rows are built by the writer (the proxy's synthetic results), decoded, walked, and
    /// re-encoded to the same bytes.
    #[test]
    fn rows_result_round_trip(version in version(), (body, metadata, rows) in rows_body()) {
        let ResultMessage::Rows(decoded) = ResultMessage::decode(&body, version).unwrap() else {
            panic!("not rows");
        };
        prop_assert_eq!(&decoded.metadata, &metadata);
        prop_assert_eq!(decoded.row_count(), rows.len());
        prop_assert_eq!(collect_cells(&decoded), rows);
        decoded.validate().unwrap();
        prop_assert_eq!(ResultMessage::Rows(decoded).to_bytes(version), body);
    }

    #[test]
    fn column_types_round_trip(t in column_type()) {
        let mut out = bytes::BytesMut::new();
        t.encode(&mut out);
        let mut r = cqlmirror_core::wire::Reader::new(&out);
        prop_assert_eq!(ColumnType::decode(&mut r).unwrap(), t);
        prop_assert!(r.is_empty());
    }
}
