//! With `--wait false`, a write whose outcome depends on the order writes run in (a list
//! append) reaches the target only after what the client saw answered before it is done
//! there; a write that commutes (a set addition) goes at once.
//!
//! One session driven by hand over in-memory buffers: the source answers at once, the target
//! answers only when the test says so.

#![allow(clippy::unwrap_used)]

mod session_common;

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use cqlmirror_core::config::{Config, Endpoint, Upstream, WaitPolicy};
use cqlmirror_core::frame::{Direction, Opcode, ProtocolVersion};
use cqlmirror_core::message::{Body, Query, QueryParams, ResultMessage, Startup};
use cqlmirror_core::proxy::{Proxy, WallClock};
use cqlmirror_core::session::{Action, Peer, Session};
use cqlmirror_core::wire::Consistency;
use session_common::decode_all;

const VERSION: ProtocolVersion = ProtocolVersion::V4;

fn envelope(direction: Direction, stream: i16, opcode: Opcode, body: Bytes) -> BytesMut {
    session_common::envelope(VERSION, direction, stream, opcode, body)
}

/// A session in front of a source that answers at once and a target that answers on demand.
struct Bench {
    session: Session,
    now: Instant,
    /// Requests the target received and has not answered: (stream, statement text).
    target_pending: Vec<(i16, String)>,
    /// Statement texts in the order the target received them.
    target_received: Vec<String>,
}

impl Bench {
    #[allow(clippy::disallowed_methods)]
    fn new() -> Self {
        let now = Instant::now();
        let endpoint = |host: &str| Endpoint {
            host: host.to_owned(),
            port: 9042,
        };
        let mut config = Config::new(vec![endpoint("source")], vec![endpoint("target")]);
        config.wait = WaitPolicy::Primary;
        let clock = WallClock {
            instant: now,
            unix_micros: 1_700_000_000_000_000,
        };
        let proxy = Proxy::new(config, clock, cqlmirror_core::entropy::Seed(1)).unwrap();
        let mut bench = Self {
            session: Session::new(proxy, now),
            now,
            target_pending: Vec::new(),
            target_received: Vec::new(),
        };
        let startup = Startup {
            options: vec![("CQL_VERSION", "3.0.0")],
        };
        let answers = bench.client_sends(1, Opcode::STARTUP, startup.to_bytes(VERSION));
        assert_eq!(answers, vec![(1, Opcode::READY)]);
        bench
    }

    /// The client sends one request; returns the answers the client has after everything
    /// that can move did.
    fn client_sends(&mut self, stream: i16, opcode: Opcode, body: Bytes) -> Vec<(i16, Opcode)> {
        let mut wire = envelope(Direction::Request, stream, opcode, body);
        self.session.handle_client_bytes(&mut wire, self.now);
        self.settle()
    }

    fn query(&mut self, stream: i16, text: &str) -> Vec<(i16, Opcode)> {
        let query = Query {
            text,
            params: QueryParams::new(Consistency::ONE),
        };
        self.client_sends(stream, Opcode::QUERY, query.to_bytes(VERSION))
    }

    /// The target answers the request it got with `text`.
    fn target_answers(&mut self, text: &str) -> Vec<(i16, Opcode)> {
        let at = self
            .target_pending
            .iter()
            .position(|(_, t)| t == text)
            .unwrap();
        let (stream, _) = self.target_pending.remove(at);
        let mut wire = envelope(
            Direction::Response,
            stream,
            Opcode::RESULT,
            ResultMessage::Void.to_bytes(VERSION),
        );
        self.session
            .handle_upstream_bytes(Upstream::Target, &mut wire, self.now);
        self.settle()
    }

    /// Runs the session's outputs until nothing moves: connections open at once, the source
    /// answers everything, the target answers STARTUP and keeps the rest pending.
    fn settle(&mut self) -> Vec<(i16, Opcode)> {
        let mut client = Vec::new();
        loop {
            while let Some(action) = self.session.poll_action() {
                if let Action::Connect { upstream, .. } = action {
                    self.session.handle_connected(upstream, self.now);
                }
            }
            let mut moved = false;
            for peer in Peer::ALL {
                let mut wire = BytesMut::new();
                while let Some(bytes) = self.session.poll_transmit(peer) {
                    wire.extend_from_slice(&bytes);
                }
                let Some(upstream) = peer.upstream() else {
                    for answer in decode_all(&mut wire, Direction::Response) {
                        client.push((answer.stream().0, answer.opcode()));
                    }
                    continue;
                };
                for request in decode_all(&mut wire, Direction::Request) {
                    moved = true;
                    let stream = request.stream().0;
                    let (opcode, body) = match request.opcode() {
                        Opcode::STARTUP => (Opcode::READY, Bytes::new()),
                        Opcode::QUERY => {
                            let text = Query::decode(request.body(), VERSION)
                                .unwrap()
                                .text
                                .to_owned();
                            if upstream == Upstream::Target {
                                self.target_received.push(text.clone());
                                self.target_pending.push((stream, text));
                                continue;
                            }
                            (Opcode::RESULT, ResultMessage::Void.to_bytes(VERSION))
                        }
                        other => panic!("the {upstream} cluster got an unexpected {other}"),
                    };
                    let mut answer = envelope(Direction::Response, stream, opcode, body);
                    self.session
                        .handle_upstream_bytes(upstream, &mut answer, self.now);
                }
            }
            while self.session.poll_event().is_some() {}
            if !moved {
                return client;
            }
        }
    }
}

const INSERT: &str = "INSERT INTO ks.t (k, l, s) VALUES (1, [1, 10], {'a'})";

#[test]
fn a_list_append_waits_on_the_target_for_what_the_client_saw_answered() {
    let mut bench = Bench::new();
    assert_eq!(bench.query(2, INSERT), vec![(2, Opcode::RESULT)]);
    assert_eq!(bench.target_received, vec![INSERT]);

    // The client heard the source's answer and appends to the list the INSERT wrote.
    let append = "UPDATE ks.t SET l = l + [7] WHERE k = 1";
    assert_eq!(bench.query(3, append), vec![(3, Opcode::RESULT)]);
    assert_eq!(
        bench.target_received,
        vec![INSERT],
        "the append waits until the target finished the INSERT"
    );
    bench.target_answers(INSERT);
    assert_eq!(bench.target_received, vec![INSERT, append]);
}

#[test]
fn a_set_addition_goes_to_the_target_at_once() {
    let mut bench = Bench::new();
    assert_eq!(bench.query(2, INSERT), vec![(2, Opcode::RESULT)]);
    let add = "UPDATE ks.t SET s = s + {'b'} WHERE k = 1";
    assert_eq!(bench.query(3, add), vec![(3, Opcode::RESULT)]);
    assert_eq!(bench.target_received, vec![INSERT, add]);
}
