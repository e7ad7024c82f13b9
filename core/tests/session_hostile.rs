//! Clients that misbehave: one session driven by hand over in-memory buffers, with clusters
//! that answer everything at once, and a client that does what a hostile or broken client
//! does (never reads, stalls its handshake, sends what no driver sends).
//!
//! The harness honours the session's backpressure as a runtime does: bytes from a peer are
//! handed over only while [`Session::wants_read`] says so.

#![allow(clippy::unwrap_used)]

mod session_common;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cqlmirror_core::config::Upstream;
use cqlmirror_core::frame::{
    Direction, Envelope, EnvelopeDecoder, Opcode, ProtocolVersion, SegmentFormat, SegmentReader,
    SegmentWriter, StreamId,
};
use cqlmirror_core::message::{Body, ErrorCode, ErrorMessage, Register, Startup};
use cqlmirror_core::proxy::Proxy;
use cqlmirror_core::session::{Event, Peer};
use session_common::bench::{Bench, READ, VERSION, query, request, startup};
use session_common::envelope;

/// A client that sends requests and never reads the answers: the proxy stops reading its
/// requests once its answers fill `--write-buffer-size`, instead of answering into a queue
/// nobody drains (the clusters' stream ids run out first, then every further request got an
/// error answer, without bound).
#[test]
fn a_client_that_never_reads_is_no_longer_read_once_its_answers_fill_the_buffer() {
    const LIMIT: usize = 4096;
    let mut bench = Bench::ready(|c| {
        c.write_buffer_size = LIMIT;
        c.request_timeout = Duration::from_secs(600);
    });
    bench.client_reads = false;
    let requests = 100_000;
    for i in 0..requests {
        let stream = (i % 32_000) as i16 + 2;
        bench
            .client_in
            .extend_from_slice(&query(stream, "SELECT v FROM ks.t WHERE k = 1"));
    }
    let sent = bench.client_in.len();
    bench.settle();
    let queued = bench.session.queued(Peer::Client);
    // The buffer, plus the answers to what one read brought in.
    let bound = LIMIT + READ;
    assert!(
        queued <= bound,
        "{queued} bytes queued for a client that does not read (bound {bound})"
    );
    assert!(
        !bench.client_in.is_empty() || !bench.client_buf.is_empty(),
        "all {sent} bytes of requests were read although no answer was"
    );
    assert!(!bench.session.wants_read(Peer::Client));
    // The time the proxy does not read is not held against a frame the client started.
    bench.advance(Duration::from_secs(60));
    assert!(bench.closed.is_empty(), "{:?}", client_errors(&bench));

    // Once the client reads, everything it sent is answered, without any clock moving: the
    // primary's answers stored while they waited for the secondary's were released by reading
    // the secondary, which a full queue must not stop (it did, until `--wait-timeout`).
    bench.client_reads = true;
    let mut answered = 0;
    for _ in 0..10_000 {
        bench.settle();
        let answers = bench.client_answers();
        assert!(
            answers.iter().all(|&(_, op)| op == Opcode::RESULT),
            "{answers:?}"
        );
        answered += answers.len();
        if answered == requests {
            break;
        }
    }
    assert_eq!(answered, requests);
}

fn error_of(frame: &Envelope) -> (ErrorCode, String) {
    let error = ErrorMessage::decode(frame.body(), frame.version()).unwrap();
    (error.code, error.message.into_owned())
}

/// A refusal on an established connection is written in the connection's version: a v4
/// client got it in a v5 header it could not read.
#[test]
fn a_version_refusal_on_a_v4_connection_is_written_in_v4() {
    let mut bench = Bench::ready(|_| {});
    let mut bad = query(7, "SELECT 1");
    bad[0] = 0x06;
    bench.client_in = bad;
    bench.settle();
    let frames = bench.client_frames();
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0].version(), ProtocolVersion::V4);
    assert_eq!(frames[0].stream(), StreamId(7));
    let (code, message) = error_of(&frames[0]);
    assert_eq!(code, ErrorCode::PROTOCOL_ERROR);
    assert!(
        message.contains("unsupported protocol version (6)"),
        "{message}"
    );
    assert!(bench.closed.contains(&Peer::Client));
}

/// REGISTER with a body that is not a list of event types is refused; it got READY.
#[test]
fn a_register_with_a_garbage_body_is_refused() {
    for body in [&b"\x00\x01\x00\x05HELLO"[..], &b"\xff\xff\xff"[..]] {
        let mut bench = Bench::ready(|_| {});
        bench.client_in = request(3, Opcode::REGISTER, Bytes::copy_from_slice(body));
        bench.settle();
        let frames = bench.client_frames();
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert_eq!(frames[0].opcode(), Opcode::ERROR);
        let (code, message) = error_of(&frames[0]);
        assert_eq!(code, ErrorCode::PROTOCOL_ERROR, "{message}");
        assert!(message.contains("REGISTER"), "{message}");
        assert!(bench.closed.contains(&Peer::Client));
    }
    // A proper one still gets READY.
    let mut bench = Bench::ready(|_| {});
    let register = Register {
        events: vec!["SCHEMA_CHANGE"],
    };
    bench.client_in = request(3, Opcode::REGISTER, register.to_bytes(VERSION));
    bench.settle();
    assert_eq!(bench.client_answers(), vec![(3, Opcode::READY)]);
}

/// Negative stream ids are the server's: a request on one is refused; it was relayed and
/// its answer echoed on an event stream.
#[test]
fn a_negative_stream_id_is_refused() {
    let mut bench = Bench::ready(|_| {});
    bench.client_in = query(-5, "SELECT v FROM ks.t");
    bench.settle();
    let frames = bench.client_frames();
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0].opcode(), Opcode::ERROR);
    assert!(frames[0].stream().0 >= 0);
    let (code, message) = error_of(&frames[0]);
    assert_eq!(code, ErrorCode::PROTOCOL_ERROR);
    assert!(message.contains("stream id -5"), "{message}");
    assert!(bench.closed.contains(&Peer::Client));
}

/// v5: an envelope with an unsupported version inside a valid segment is refused in a
/// segment, then the connection closes. It hung: the refusal looked for the envelope's
/// bytes in the receive buffer, which held the next segment's.
#[test]
fn v5_an_unsupported_version_inside_a_segment_is_refused_in_a_segment() {
    let mut bench = Bench::new(|_| {});
    let startup = Startup {
        options: vec![("CQL_VERSION", "3.0.0")],
    };
    bench.client_in = envelope(
        ProtocolVersion::V5,
        Direction::Request,
        1,
        Opcode::STARTUP,
        startup.to_bytes(ProtocolVersion::V5),
    );
    bench.settle();
    assert_eq!(bench.client_answers(), vec![(1, Opcode::READY)]);

    let mut inner = envelope(
        ProtocolVersion::V5,
        Direction::Request,
        9,
        Opcode::OPTIONS,
        Bytes::new(),
    );
    inner[0] = 27;
    let mut wire = BytesMut::new();
    SegmentWriter::new(SegmentFormat::Uncompressed)
        .write_segment(true, &inner, &mut wire)
        .unwrap();
    bench.client_in = wire;
    bench.settle();

    let mut reader = SegmentReader::new(
        SegmentFormat::Uncompressed,
        EnvelopeDecoder::new(1 << 20).expecting(Direction::Response),
    );
    let refusal = reader
        .decode(&mut bench.client_got)
        .unwrap()
        .expect("a refusal, in a segment");
    assert_eq!(refusal.version(), ProtocolVersion::V5);
    assert_eq!(refusal.stream(), StreamId(9));
    let (code, message) = error_of(&refusal);
    assert_eq!(code, ErrorCode::PROTOCOL_ERROR);
    assert!(message.contains("(27)"), "{message}");
    assert!(bench.closed.contains(&Peer::Client));
}

fn client_errors(bench: &Bench) -> Vec<String> {
    bench
        .events
        .iter()
        .filter_map(|e| match e {
            Event::ClientError { detail, .. } => Some(detail.clone()),
            _ => None,
        })
        .collect()
}

/// A client that sends its STARTUP one byte every two seconds is closed once
/// `--handshake-timeout` passed since it connected; it was held for ever.
#[test]
fn a_handshake_that_stalls_is_closed_at_the_handshake_timeout() {
    let mut bench = Bench::new(|c| c.handshake_timeout = Duration::from_secs(10));
    let startup = startup();
    let mut elapsed = Duration::ZERO;
    for &byte in startup.iter() {
        bench.client_in.extend_from_slice(&[byte]);
        bench.settle();
        if !bench.closed.is_empty() {
            break;
        }
        bench.advance(Duration::from_secs(2));
        elapsed += Duration::from_secs(2);
    }
    assert!(bench.closed.contains(&Peer::Client), "never closed");
    assert!(
        elapsed >= Duration::from_secs(10) && elapsed <= Duration::from_secs(12),
        "closed after {elapsed:?}"
    );
    let errors = client_errors(&bench);
    assert!(
        errors.iter().any(|e| e.contains("--handshake-timeout")),
        "{errors:?}"
    );

    // A client that completed its handshake is not held to it.
    let mut bench = Bench::ready(|c| c.handshake_timeout = Duration::from_secs(10));
    bench.advance(Duration::from_secs(30));
    assert!(bench.closed.is_empty(), "{:?}", bench.events);
}

/// After the handshake, a frame left incomplete is closed after `--frame-timeout`.
#[test]
fn a_frame_left_incomplete_is_closed_at_the_frame_timeout() {
    let mut bench = Bench::ready(|c| c.frame_timeout = Duration::from_secs(30));
    let whole = query(5, "SELECT v FROM ks.t");
    bench.client_in = BytesMut::from(&whole[..whole.len() - 3]);
    bench.settle();
    bench.advance(Duration::from_secs(29));
    assert!(bench.closed.is_empty(), "{:?}", bench.events);
    // More bytes, still not the whole frame: its clock keeps running from its first byte.
    bench
        .client_in
        .extend_from_slice(&whole[whole.len() - 3..whole.len() - 1]);
    bench.settle();
    bench.advance(Duration::from_secs(2));
    assert!(bench.closed.contains(&Peer::Client), "never closed");
    let errors = client_errors(&bench);
    assert!(
        errors.iter().any(|e| e.contains("--frame-timeout")),
        "{errors:?}"
    );
}

fn single_error(bench: &mut Bench) -> (i16, ErrorCode, String) {
    let frames = bench.client_frames();
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0].opcode(), Opcode::ERROR);
    let (code, message) = error_of(&frames[0]);
    (frames[0].stream().0, code, message)
}

/// With the source down, a new client's STARTUP gets an ERROR saying so, then the close;
/// it got a bare close, which drivers report as a broken connection with no reason.
#[test]
fn a_handshake_with_the_source_down_gets_an_error_naming_it() {
    let mut bench = Bench::new(|_| {});
    bench.reachable = [false, true];
    bench.client_in = startup();
    bench.settle();
    let (stream, code, message) = single_error(&mut bench);
    assert_eq!(stream, 1);
    assert_eq!(code, ErrorCode::SERVER_ERROR);
    assert!(
        message.contains("source cluster is unreachable"),
        "{message}"
    );
    assert!(bench.closed.contains(&Peer::Client));
}

/// The source connection is lost with requests in flight: each gets an ERROR saying so,
/// at once (not after the target answered), then the close. They were dropped.
#[test]
fn requests_in_flight_when_the_source_is_lost_get_an_error_naming_it() {
    for target_silent in [false, true] {
        let mut bench = Bench::ready(|_| {});
        bench.silent = [true, target_silent];
        bench.client_in = query(4, "INSERT INTO ks.t (k, v) VALUES (1, 2)");
        bench
            .client_in
            .extend_from_slice(&query(5, "SELECT v FROM ks.t"));
        bench.settle();
        assert!(bench.client_frames().is_empty());
        bench
            .session
            .handle_closed(Peer::Source, "connection reset by peer", bench.now);
        bench.settle();
        let frames = bench.client_frames();
        let mut streams: Vec<i16> = frames.iter().map(|f| f.stream().0).collect();
        streams.sort_unstable();
        assert_eq!(streams, vec![4, 5], "{frames:?}");
        for frame in &frames {
            let (code, message) = error_of(frame);
            assert_eq!(code, ErrorCode::SERVER_ERROR);
            assert!(
                message.contains("connection to the source cluster was lost"),
                "{message}"
            );
        }
        assert!(bench.closed.contains(&Peer::Client));
    }
}

/// A client that connects and says nothing costs the proxy one socket, not three: the
/// backend connections are opened at its first bytes. Ten thousand silent clients held
/// thirty thousand descriptors.
#[test]
fn the_clusters_are_connected_to_only_once_the_client_sends_something() {
    let mut bench = Bench::new(|_| {});
    bench.settle();
    bench.advance(Duration::from_secs(5));
    assert!(bench.connects.is_empty(), "{:?}", bench.connects);
    bench.client_in = startup().split_to(1);
    bench.settle();
    assert_eq!(bench.connects, vec![Upstream::Source, Upstream::Target]);
    bench.client_in = startup().split_off(1);
    bench.settle();
    assert_eq!(bench.client_answers(), vec![(1, Opcode::READY)]);

    // A silent client goes at the handshake timeout without ever costing a connection.
    let mut bench = Bench::new(|c| c.handshake_timeout = Duration::from_secs(10));
    bench.advance(Duration::from_secs(10));
    assert!(bench.closed.contains(&Peer::Client));
    assert!(bench.connects.is_empty());
}

/// A client has at most `--max-in-flight` requests with the primary (and what one read
/// brings in beyond it): the rest stays unread until answers come back. Without the cap, a
/// client that never reads pushed 32768 requests per cluster connection onto the clusters.
#[test]
fn a_client_has_at_most_max_in_flight_requests_with_the_clusters() {
    let mut bench = Bench::ready(|c| c.max_in_flight = 10);
    bench.silent = [true, true];
    // About four of these fill one read (writes: reads would reach the primary only).
    let padded = format!("INSERT INTO ks.t (k) VALUES (1) /* {} */", "x".repeat(4000));
    for stream in 2..102 {
        bench.client_in.extend_from_slice(&query(stream, &padded));
    }
    bench.settle();
    let [source, target] = bench.queries;
    assert!(
        (10..=15).contains(&source),
        "{source} requests reached the source"
    );
    assert_eq!(source, target);
    assert!(!bench.session.wants_read(Peer::Client));
    assert!(!bench.client_in.is_empty());
}

/// Each cluster's part of a request is reported (for per-cluster metrics): an answer, an
/// ERROR with its code, or a failure such as a timeout.
#[test]
fn each_cluster_reports_how_it_finished_a_request() {
    use cqlmirror_core::failure::FailureKind;
    use cqlmirror_core::session::ClusterResult;

    let mut bench = Bench::ready(|c| c.request_timeout = Duration::from_secs(2));
    bench.failing[Upstream::Target.index()] = Some(ErrorCode::WRITE_TIMEOUT);
    bench.client_in = query(5, "INSERT INTO ks.t (k) VALUES (1)");
    bench.settle();
    let finished = |bench: &Bench| -> Vec<(Upstream, ClusterResult)> {
        bench
            .events
            .iter()
            .filter_map(|e| match e {
                Event::ClusterDone {
                    upstream,
                    opcode: Opcode::QUERY,
                    write: true,
                    result,
                    ..
                } => Some((*upstream, *result)),
                _ => None,
            })
            .collect()
    };
    assert_eq!(
        finished(&bench),
        [
            (Upstream::Source, ClusterResult::Ok),
            (
                Upstream::Target,
                ClusterResult::Error(ErrorCode::WRITE_TIMEOUT)
            ),
        ]
    );
    let differ = |bench: &Bench| {
        bench
            .events
            .iter()
            .filter(|e| matches!(e, Event::OutcomesDiffer { write: true, .. }))
            .count()
    };
    assert_eq!(
        differ(&bench),
        1,
        "an ERROR beside a success is a different result"
    );
    bench.events.clear();
    bench.failing[Upstream::Target.index()] = None;
    bench.silent[Upstream::Target.index()] = true;
    bench.client_in = query(6, "INSERT INTO ks.t (k) VALUES (2)");
    bench.settle();
    let in_flight = |bench: &Bench| {
        bench
            .proxy
            .stats()
            .in_flight
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    // Answered by the source (waited in vain for the target), still running on the target.
    assert_eq!(in_flight(&bench), 1);
    bench.advance(Duration::from_secs(3));
    assert_eq!(in_flight(&bench), 0);
    assert_eq!(differ(&bench), 0, "a timeout is a failure, not a result");
    // The client's answer waited for the target after the source had answered: the time the
    // proxy added is what it waited, within the whole latency.
    let (latency, added) = bench
        .events
        .iter()
        .find_map(|e| match e {
            Event::Answered {
                opcode: Opcode::QUERY,
                latency,
                added,
                ..
            } => Some((*latency, *added)),
            _ => None,
        })
        .unwrap();
    assert!(
        added >= Duration::from_secs(1) && added <= latency,
        "{added:?} of {latency:?}"
    );
    assert_eq!(
        finished(&bench),
        [
            (Upstream::Source, ClusterResult::Ok),
            (
                Upstream::Target,
                ClusterResult::Failed(FailureKind::Timeout)
            ),
        ]
    );
}

/// Requests a session still holds when it goes away no longer count as in flight.
#[test]
fn a_session_dropped_with_requests_leaves_none_in_flight() {
    let mut bench = Bench::ready(|_| {});
    bench.silent = [true, true];
    bench.client_in = query(7, "INSERT INTO ks.t (k) VALUES (3)");
    bench.settle();
    let in_flight = |proxy: &Proxy| {
        proxy
            .stats()
            .in_flight
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert_eq!(in_flight(&bench.proxy), 1);
    let Bench { session, proxy, .. } = bench;
    drop(session);
    assert_eq!(in_flight(&proxy), 0);
}
