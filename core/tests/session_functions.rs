//! Writes calling now(), uuid(), currentTimestamp(), ... reach both clusters with the values the
//! proxy generated, in identical bytes: literals in statement text, bound values for prepared
//! statements (which the proxy prepares with markers in place of the calls, while the client
//! sees the metadata of the statement it asked for). With `--uuid false` nothing changes.

#![allow(clippy::unwrap_used)]

mod session_common;

use bytes::Bytes;
use cqlmirror_core::frame::{Envelope, Opcode};
use cqlmirror_core::message::{
    Batch, BatchStatement, BatchType, Body, Execute, Prepare, Query, QueryParams, ResultMessage,
    Statement, Values,
};
use cqlmirror_core::wire::{Consistency, Value};
use session_common::bench::{Bench, VERSION, batch, query, request};
use uuid::{Uuid, Version};

const SOURCE: usize = 0;
const TARGET: usize = 1;

fn of(bench: &Bench, cluster: usize, opcode: Opcode) -> Vec<Envelope> {
    bench.received[cluster]
        .iter()
        .filter(|e| e.opcode() == opcode)
        .cloned()
        .collect()
}

/// The last `opcode` request each cluster got, which must be the same bytes.
fn same_on_both(bench: &Bench, opcode: Opcode) -> Bytes {
    let source = of(bench, SOURCE, opcode).last().unwrap().body().clone();
    let target = of(bench, TARGET, opcode).last().unwrap().body().clone();
    assert_eq!(source, target, "both clusters get the same {opcode}");
    source
}

/// The UUIDs written as `(timeuuid)...` or `(uuid)...` literals in `text`.
fn literal_uuids(text: &str, hint: &str) -> Vec<Uuid> {
    text.match_indices(hint)
        .map(|(at, _)| Uuid::parse_str(&text[at + hint.len()..at + hint.len() + 36]).unwrap())
        .collect()
}

fn prepare(bench: &mut Bench, stream: i16, text: &str) -> Envelope {
    let body = Prepare {
        query: text,
        keyspace: None,
    }
    .to_bytes(VERSION);
    bench
        .client_in
        .extend_from_slice(&request(stream, Opcode::PREPARE, body));
    bench.settle();
    bench
        .client_frames()
        .into_iter()
        .find(|e| e.stream().0 == stream)
        .unwrap()
}

fn execute(bench: &mut Bench, stream: i16, id: &[u8], values: Values<'_>) {
    let body = Execute {
        id,
        result_metadata_id: None,
        params: QueryParams {
            values: Some(values),
            ..QueryParams::new(Consistency::ONE)
        },
    }
    .to_bytes(VERSION);
    bench
        .client_in
        .extend_from_slice(&request(stream, Opcode::EXECUTE, body));
    bench.settle();
}

/// An EXECUTE's values: names, and bytes (`None` for null or unset).
fn executed_values(body: &Bytes) -> Vec<(Option<String>, Option<Vec<u8>>)> {
    let e = Execute::decode(body, VERSION).unwrap();
    e.params
        .values
        .unwrap()
        .iter()
        .map(|(name, value)| {
            let value = match value {
                Value::Bytes(b) => Some(b.to_vec()),
                _ => None,
            };
            (name.map(str::to_owned), value)
        })
        .collect()
}

fn bytes(b: &[u8]) -> Option<Vec<u8>> {
    Some(b.to_vec())
}

fn v1(value: &Option<Vec<u8>>) -> Uuid {
    let u = Uuid::from_slice(value.as_deref().unwrap()).unwrap();
    assert_eq!(u.get_version(), Some(Version::Mac), "{u}");
    u
}

#[test]
fn a_query_gets_literals_the_same_on_both_clusters() {
    let mut bench = Bench::ready(|_| {});
    let text = "INSERT INTO t (k, a, b, c, d, e) VALUES (1, now(), toTimestamp(now()), uuid(), \
                'now()', currentDate())";
    bench.client_in.extend_from_slice(&query(2, text));
    bench.settle();
    assert_eq!(bench.client_answers(), vec![(2, Opcode::RESULT)]);
    let body = same_on_both(&bench, Opcode::QUERY);
    let sent = Query::decode(&body, VERSION).unwrap().text.to_owned();
    let times = literal_uuids(&sent, "(timeuuid)");
    assert_eq!(times.len(), 2, "{sent}");
    assert_ne!(times[0], times[1], "two calls, two values");
    assert!(times.iter().all(|u| u.get_version() == Some(Version::Mac)));
    let random = literal_uuids(&sent, "(uuid)");
    assert_eq!(random[0].get_version(), Some(Version::Random));
    // 2023-11-14 is the bench's wall clock.
    let expected = format!(
        "INSERT INTO t (k, a, b, c, d, e) VALUES (1, (timeuuid){}, toTimestamp((timeuuid){}), \
         (uuid){}, 'now()', (date)'2023-11-14')",
        times[0], times[1], random[0]
    );
    assert_eq!(sent, expected);
    // The same statement again: new values.
    bench.client_in.extend_from_slice(&query(3, text));
    bench.settle();
    let again = same_on_both(&bench, Opcode::QUERY);
    let again = Query::decode(&again, VERSION).unwrap().text.to_owned();
    assert!(literal_uuids(&again, "(timeuuid)")[0] > times[1]);
}

#[test]
fn reads_and_schema_are_left_alone() {
    let mut bench = Bench::ready(|_| {});
    for (stream, text) in [
        (2, "SELECT now() FROM ks.t"),
        (3, "CREATE TABLE ks.u (k uuid PRIMARY KEY, v timeuuid)"),
        (4, "INSERT INTO t (k, v) VALUES (1, 'now()')"),
    ] {
        bench.client_in.extend_from_slice(&query(stream, text));
        bench.settle();
        // Schema agreement adds queries of its own: the client's is among them, as it was
        // (reads go to the primary alone).
        let sent = of(&bench, SOURCE, Opcode::QUERY);
        assert!(
            sent.iter()
                .any(|e| Query::decode(e.body(), VERSION).unwrap().text == text),
            "{text}"
        );
    }
}

#[test]
fn a_text_batch_gets_one_value_per_call() {
    let mut bench = Bench::ready(|_| {});
    let text = "BEGIN BATCH INSERT INTO t (k, v) VALUES (1, now()); \
                UPDATE t SET v = now() WHERE k = 2 IF v < currentTimeUUID(); APPLY BATCH";
    bench.client_in.extend_from_slice(&query(2, text));
    bench.settle();
    let body = same_on_both(&bench, Opcode::QUERY);
    let sent = Query::decode(&body, VERSION).unwrap().text.to_owned();
    let times = literal_uuids(&sent, "(timeuuid)");
    assert_eq!(times.len(), 3, "{sent}");
    assert!(times[0] < times[1] && times[1] < times[2]);
    assert!(!sent.contains("now()") && !sent.contains("currentTimeUUID"));
}

#[test]
fn prepare_sends_markers_and_the_client_sees_its_own_statement() {
    let mut bench = Bench::ready(|_| {});
    bench.describe_markers = true;
    let answer = prepare(
        &mut bench,
        2,
        "UPDATE t SET a = ?, b = toTimestamp(now()) WHERE k = ? IF c < uuid()",
    );
    let rewritten = "UPDATE t SET a = ?, b = toTimestamp((timeuuid)?) WHERE k = ? IF c < (uuid)?";
    for cluster in [SOURCE, TARGET] {
        let sent = of(&bench, cluster, Opcode::PREPARE);
        assert_eq!(
            Prepare::decode(sent[0].body(), VERSION).unwrap().query,
            rewritten
        );
    }
    let ResultMessage::Prepared(prepared) = ResultMessage::decode(answer.body(), VERSION).unwrap()
    else {
        panic!("not PREPARED")
    };
    assert_eq!(prepared.id, rewritten.as_bytes());
    let names: Vec<_> = prepared.metadata.columns.iter().map(|c| c.name).collect();
    // The cluster's markers were m4, m10, m15, m21 (by token); the client sees its two.
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(prepared.metadata.pk_indexes, vec![0]);

    // EXECUTE: the generated values go to their positions, fresh each time.
    let mut seen = Vec::new();
    for stream in [3, 4] {
        let client = [Value::Bytes(b"a"), Value::Bytes(b"k")];
        execute(
            &mut bench,
            stream,
            rewritten.as_bytes(),
            Values::positional(&client),
        );
        let body = same_on_both(&bench, Opcode::EXECUTE);
        let values = executed_values(&body);
        assert_eq!(values.len(), 4);
        assert_eq!(values[0].1, bytes(b"a"));
        assert_eq!(values[2].1, bytes(b"k"));
        let time = v1(&values[1].1);
        let random = values[3].1.as_deref().unwrap();
        assert_eq!(
            Uuid::from_slice(random).unwrap().get_version(),
            Some(Version::Random)
        );
        seen.push(time);
    }
    assert!(seen[0] < seen[1], "each execution its own value");
}

#[test]
fn the_partition_key_generated_leaves_no_routing_index() {
    let mut bench = Bench::ready(|_| {});
    bench.describe_markers = true;
    let answer = prepare(&mut bench, 2, "INSERT INTO t (k, v) VALUES (uuid(), ?)");
    let ResultMessage::Prepared(prepared) = ResultMessage::decode(answer.body(), VERSION).unwrap()
    else {
        panic!("not PREPARED")
    };
    assert_eq!(prepared.metadata.columns.len(), 1);
    assert!(prepared.metadata.pk_indexes.is_empty());
}

#[test]
fn named_values_get_the_generated_ones_by_name() {
    let mut bench = Bench::ready(|_| {});
    bench.describe_markers = true;
    let answer = prepare(
        &mut bench,
        2,
        "INSERT INTO t (k, v) VALUES (:k, currentTimeUUID())",
    );
    let rewritten = "INSERT INTO t (k, v) VALUES (:k, (timeuuid):cqlmirror_generated_0)";
    let ResultMessage::Prepared(prepared) = ResultMessage::decode(answer.body(), VERSION).unwrap()
    else {
        panic!("not PREPARED")
    };
    assert_eq!(prepared.id, rewritten.as_bytes());
    let names: Vec<_> = prepared.metadata.columns.iter().map(|c| c.name).collect();
    assert_eq!(names, vec!["k"]);
    let client = [("k", Value::Bytes(b"1"))];
    execute(&mut bench, 3, rewritten.as_bytes(), Values::named(&client));
    let values = executed_values(&same_on_both(&bench, Opcode::EXECUTE));
    assert_eq!(values.len(), 2);
    assert_eq!(values[0], (Some("k".into()), bytes(b"1")));
    assert_eq!(values[1].0.as_deref(), Some("cqlmirror_generated_0"));
    v1(&values[1].1);
}

#[test]
fn positional_markers_bound_by_name_use_the_clusters_names() {
    let mut bench = Bench::ready(|_| {});
    bench.describe_markers = true;
    prepare(&mut bench, 2, "INSERT INTO t (k, v) VALUES (?, now())");
    let rewritten = "INSERT INTO t (k, v) VALUES (?, (timeuuid)?)";
    // The bench's cluster names markers after their token: `?` is token 10, the generated one 15.
    let client = [("m10", Value::Bytes(b"1"))];
    execute(&mut bench, 3, rewritten.as_bytes(), Values::named(&client));
    let values = executed_values(&same_on_both(&bench, Opcode::EXECUTE));
    assert_eq!(values[1].0.as_deref(), Some("m15"));
    v1(&values[1].1);
}

#[test]
fn a_batch_message_gets_values_for_text_and_prepared_entries() {
    let mut bench = Bench::ready(|_| {});
    bench.describe_markers = true;
    prepare(&mut bench, 2, "INSERT INTO t (k, v) VALUES (?, now())");
    let rewritten = "INSERT INTO t (k, v) VALUES (?, (timeuuid)?)";
    let k = [Value::Bytes(b"k")];
    let entries = [
        BatchStatement {
            statement: Statement::Query("INSERT INTO t (k, v) VALUES (2, uuid())"),
            values: Values::positional(&[]),
        },
        BatchStatement {
            statement: Statement::Prepared(rewritten.as_bytes()),
            values: Values::positional(&k),
        },
        BatchStatement {
            statement: Statement::Query("INSERT INTO t (k, v) VALUES (3, 'uuid()')"),
            values: Values::positional(&[]),
        },
    ];
    bench
        .client_in
        .extend_from_slice(&batch(3, BatchType::LOGGED, &entries));
    bench.settle();
    assert_eq!(bench.client_answers(), vec![(3, Opcode::RESULT)]);
    let body = same_on_both(&bench, Opcode::BATCH);
    let sent = Batch::decode(&body, VERSION).unwrap();
    assert!(sent.timestamp.is_some(), "still stamped");
    let sent: Vec<_> = sent.statements.iter().collect();
    let Statement::Query(first) = sent[0].statement else {
        panic!()
    };
    assert_eq!(literal_uuids(first, "(uuid)").len(), 1, "{first}");
    let values: Vec<_> = sent[1]
        .values
        .iter()
        .map(|(_, v)| match v {
            Value::Bytes(b) => Some(b.to_vec()),
            _ => None,
        })
        .collect();
    assert_eq!(values[0], bytes(b"k"));
    v1(&values[1]);
    assert_eq!(
        sent[2].statement,
        Statement::Query("INSERT INTO t (k, v) VALUES (3, 'uuid()')")
    );
}

#[test]
fn with_uuid_false_bodies_are_untouched() {
    let mut bench = Bench::ready(|c| c.replace_functions = false);
    bench.describe_markers = true;
    let text = "INSERT INTO t (k, v) VALUES (1, now())";
    bench.client_in.extend_from_slice(&query(2, text));
    bench.settle();
    let body = same_on_both(&bench, Opcode::QUERY);
    assert_eq!(Query::decode(&body, VERSION).unwrap().text, text);
    let answer = prepare(&mut bench, 3, "INSERT INTO t (k, v) VALUES (?, now())");
    let sent = of(&bench, SOURCE, Opcode::PREPARE);
    assert_eq!(
        Prepare::decode(sent[0].body(), VERSION).unwrap().query,
        "INSERT INTO t (k, v) VALUES (?, now())"
    );
    let ResultMessage::Prepared(prepared) = ResultMessage::decode(answer.body(), VERSION).unwrap()
    else {
        panic!("not PREPARED")
    };
    let client = [Value::Bytes(b"k")];
    execute(&mut bench, 4, prepared.id, Values::positional(&client));
    let values = executed_values(&same_on_both(&bench, Opcode::EXECUTE));
    assert_eq!(values.len(), 1);
    assert!(
        !bench
            .events
            .iter()
            .any(|e| matches!(e, cqlmirror_core::session::Event::GeneratedValue { .. }))
    );
}

mod v5 {
    //! The same over protocol v5: segments, 4-byte flags, result metadata ids, SKIP_METADATA.

    use super::*;
    use cqlmirror_core::frame::{Direction, ProtocolVersion};
    use cqlmirror_core::message::Startup;
    use session_common::{decode_segments, envelope, segment};

    const V5: ProtocolVersion = ProtocolVersion::V5;

    fn ready() -> Bench {
        let mut bench = Bench::new(|_| {});
        bench.describe_markers = true;
        let startup = Startup {
            options: vec![("CQL_VERSION", "3.0.0")],
        };
        bench.client_in = envelope(
            V5,
            Direction::Request,
            1,
            Opcode::STARTUP,
            startup.to_bytes(V5),
        );
        bench.settle();
        assert_eq!(bench.client_answers(), vec![(1, Opcode::READY)]);
        bench
    }

    fn send(bench: &mut Bench, stream: i16, opcode: Opcode, body: Bytes) -> Envelope {
        let request = envelope(V5, Direction::Request, stream, opcode, body);
        bench.client_in.extend_from_slice(&segment(&request));
        bench.settle();
        decode_segments(&mut bench.client_got, Direction::Response)
            .into_iter()
            .find(|e| e.stream().0 == stream)
            .unwrap()
    }

    fn prepared(bench: &mut Bench, stream: i16, text: &str) -> (Vec<u8>, Vec<String>) {
        let body = Prepare {
            query: text,
            keyspace: Some("ks"),
        }
        .to_bytes(V5);
        let answer = send(bench, stream, Opcode::PREPARE, body);
        let ResultMessage::Prepared(p) = ResultMessage::decode(answer.body(), V5).unwrap() else {
            panic!("not PREPARED")
        };
        assert_eq!(p.result_metadata_id, Some(&b"meta"[..]));
        let names = p
            .metadata
            .columns
            .iter()
            .map(|c| c.name.to_owned())
            .collect();
        (p.id.to_vec(), names)
    }

    fn execute(bench: &mut Bench, stream: i16, id: &[u8], values: Values<'_>) -> Bytes {
        let body = Execute {
            id,
            result_metadata_id: Some(b"meta"),
            params: QueryParams {
                values: Some(values),
                skip_metadata: true,
                ..QueryParams::new(Consistency::ONE)
            },
        }
        .to_bytes(V5);
        let answer = send(bench, stream, Opcode::EXECUTE, body);
        assert_eq!(answer.opcode(), Opcode::RESULT);
        same_on_both(bench, Opcode::EXECUTE)
    }

    #[test]
    fn execute_by_position_and_by_name() {
        let mut bench = ready();
        let (id, names) = prepared(&mut bench, 2, "INSERT INTO t (k, v) VALUES (?, now())");
        assert_eq!(id, b"INSERT INTO t (k, v) VALUES (?, (timeuuid)?)");
        assert_eq!(names.len(), 1);
        let k = [Value::Bytes(b"k")];
        let body = execute(&mut bench, 3, &id, Values::positional(&k));
        let sent = Execute::decode(&body, V5).unwrap();
        assert_eq!(sent.result_metadata_id, Some(&b"meta"[..]));
        assert!(sent.params.skip_metadata);
        let values: Vec<_> = sent.params.values.unwrap().iter().map(|(_, v)| v).collect();
        assert_eq!(values[0], Value::Bytes(b"k"));
        let Value::Bytes(time) = values[1] else {
            panic!("no value")
        };
        assert_eq!(
            Uuid::from_slice(time).unwrap().get_version(),
            Some(Version::Mac)
        );

        let (id, names) = prepared(
            &mut bench,
            4,
            "UPDATE t SET ts = currentTimestamp() WHERE k = :k",
        );
        assert_eq!(names, vec!["k"]);
        let k = [("k", Value::Bytes(b"k"))];
        let body = execute(&mut bench, 5, &id, Values::named(&k));
        let sent = Execute::decode(&body, V5).unwrap();
        let values: Vec<_> = sent.params.values.unwrap().iter().collect();
        assert_eq!(values[0], (Some("k"), Value::Bytes(b"k")));
        assert_eq!(values[1].0, Some("cqlmirror_generated_0"));
        assert_eq!(
            values[1].1,
            Value::Bytes(&1_700_000_000_000i64.to_be_bytes())
        );
    }
}

#[test]
fn a_cluster_that_forgot_the_statement_prepares_the_text_with_markers() {
    let mut bench = Bench::ready(|_| {});
    bench.describe_markers = true;
    prepare(&mut bench, 2, "INSERT INTO t (k, v) VALUES (?, now())");
    let rewritten = "INSERT INTO t (k, v) VALUES (?, (timeuuid)?)";
    bench.unprepared_next[TARGET] = true;
    let k = [Value::Bytes(b"k")];
    execute(&mut bench, 3, rewritten.as_bytes(), Values::positional(&k));
    assert_eq!(bench.client_answers(), vec![(3, Opcode::RESULT)]);
    let prepared: Vec<_> = of(&bench, TARGET, Opcode::PREPARE)
        .iter()
        .map(|e| Prepare::decode(e.body(), VERSION).unwrap().query.to_owned())
        .collect();
    assert_eq!(prepared, [rewritten, rewritten]);
    // The retry carries the values the first attempt had: the same as the source's.
    let source = of(&bench, SOURCE, Opcode::EXECUTE);
    let target = of(&bench, TARGET, Opcode::EXECUTE);
    assert_eq!(target.len(), 2);
    assert_eq!(source[0].body(), target[1].body());
    assert_eq!(executed_values(source[0].body()).len(), 2);
}
