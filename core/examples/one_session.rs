//! One proxy session driven by hand, the way an embedder drives the core: a client and two
//! clusters written in a few lines each, in-memory byte buffers instead of sockets, and a
//! clock that moves only when this program says so.
//!
//! The client logs in (STARTUP) and sends an INSERT; both clusters see it, with the same
//! write timestamp that the proxy added; the client gets the source's answers.
//!
//! ```text
//! cargo run -p cqlmirror-core --example one_session
//! ```

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use cqlmirror_core::config::{Config, Endpoint, Upstream};
use cqlmirror_core::frame::{
    Direction, Envelope, EnvelopeDecoder, Flags, Header, Opcode, ProtocolVersion, StreamId,
};
use cqlmirror_core::message::{Body, Query, QueryParams, ResultMessage, Startup};
use cqlmirror_core::proxy::{Proxy, WallClock};
use cqlmirror_core::session::{Action, Peer, Session};
use cqlmirror_core::wire::Consistency;

const VERSION: ProtocolVersion = ProtocolVersion::V4;

/// Bytes in flight between the session and each of its peers, by [`Peer::index`].
#[derive(Default)]
struct Wires {
    /// Written by a peer, not yet read by the session.
    to_session: [BytesMut; 3],
    /// Written by the session, not yet read by the peer.
    from_session: [BytesMut; 3],
}

fn main() {
    // The core never reads a clock: this instant only anchors the run, and `now` moves by
    // hand from it (a millisecond per round).
    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();
    let mut now = start;
    let endpoint = |host: &str| Endpoint {
        host: host.to_owned(),
        port: 9042,
    };
    let config = Config::new(
        vec![endpoint("source.example")],
        vec![endpoint("target.example")],
    );
    let clock = WallClock {
        instant: start,
        unix_micros: 1_700_000_000_000_000,
    };
    let proxy = Proxy::new(config, clock, cqlmirror_core::entropy::Seed(1))
        .expect("the configuration is valid");
    let mut session = Session::new(proxy, now);
    let mut wires = Wires::default();

    // The client speaks first.
    let startup = Startup {
        options: vec![("CQL_VERSION", "3.0.0")],
    };
    send(
        &mut wires.to_session[Peer::Client.index()],
        Direction::Request,
        1,
        Opcode::STARTUP,
        startup.to_bytes(VERSION),
    );
    let answers = run(&mut session, &mut wires, &mut now);
    println!(
        "client got {:?} on stream 1",
        answers.iter().map(Envelope::opcode).collect::<Vec<_>>()
    );
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].opcode(), Opcode::READY);

    let insert = Query {
        text: "INSERT INTO ks.t (k, v) VALUES (1, 'one')",
        params: QueryParams::new(Consistency::ONE),
    };
    send(
        &mut wires.to_session[Peer::Client.index()],
        Direction::Request,
        2,
        Opcode::QUERY,
        insert.to_bytes(VERSION),
    );
    let answers = run(&mut session, &mut wires, &mut now);
    println!(
        "client got {:?} on stream 2",
        answers.iter().map(Envelope::opcode).collect::<Vec<_>>()
    );
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].stream(), StreamId(2));
    assert!(matches!(
        ResultMessage::decode(answers[0].body(), VERSION),
        Ok(ResultMessage::Void)
    ));

    // The client leaves; the session closes both backend connections and finishes.
    session.handle_closed(Peer::Client, "the client closed the connection", now);
    drain(&mut session, &mut wires, now);
    assert!(session.is_finished());
    println!("session finished after {:?} of run time", now - start);
}

/// Lets the session, the clusters and the client exchange bytes until nothing moves, a
/// millisecond of run time per round. Returns what the client received.
fn run(session: &mut Session, wires: &mut Wires, now: &mut Instant) -> Vec<Envelope> {
    let mut received = Vec::new();
    loop {
        // Inputs: whatever each peer wrote.
        let mut moved = false;
        for peer in Peer::ALL {
            let buf = &mut wires.to_session[peer.index()];
            if buf.is_empty() || !session.wants_read(peer) {
                continue;
            }
            moved = true;
            match peer.upstream() {
                None => session.handle_client_bytes(buf, *now),
                Some(upstream) => session.handle_upstream_bytes(upstream, buf, *now),
            }
        }
        // A timer that is due fires (none is, here: everything answers at once).
        if session.poll_timeout().is_some_and(|at| at <= *now) {
            session.handle_timeout(*now);
        }
        drain(session, wires, *now);
        // The clusters answer what they got; the client collects its answers.
        for upstream in Upstream::BOTH {
            moved |= cluster(upstream, wires);
        }
        let mut decoder = EnvelopeDecoder::new(1 << 20);
        while let Ok(Some(envelope)) = decoder.decode(&mut wires.from_session[Peer::Client.index()])
        {
            received.push(envelope);
            moved = true;
        }
        if !moved {
            return received;
        }
        *now += Duration::from_millis(1);
    }
}

/// The session's outputs, in the documented order: actions, then bytes for each peer, then
/// events. Connections open at once here.
fn drain(session: &mut Session, wires: &mut Wires, now: Instant) {
    while let Some(action) = session.poll_action() {
        match action {
            Action::Connect { upstream, endpoint } => {
                println!("session: connect to the {upstream} cluster at {endpoint}");
                session.handle_connected(upstream, now);
            }
            Action::Close(peer) => println!("session: close the {peer} connection"),
            other => println!("session: {other:?}"),
        }
    }
    for peer in Peer::ALL {
        while let Some(bytes) = session.poll_transmit(peer) {
            wires.from_session[peer.index()].extend_from_slice(&bytes);
        }
    }
    while let Some(event) = session.poll_event() {
        println!("session event: {event}");
    }
}

/// A cluster that answers STARTUP with READY and any query with an empty RESULT. Returns
/// whether it answered anything.
fn cluster(upstream: Upstream, wires: &mut Wires) -> bool {
    let peer = Peer::of(upstream);
    let mut decoder = EnvelopeDecoder::new(1 << 20).expecting(Direction::Request);
    let mut answered = false;
    while let Ok(Some(request)) = decoder.decode(&mut wires.from_session[peer.index()]) {
        let (opcode, body) = match request.opcode() {
            Opcode::STARTUP => (Opcode::READY, Bytes::new()),
            Opcode::QUERY => {
                let query = Query::decode(request.body(), VERSION).expect("a valid QUERY");
                println!(
                    "{upstream} cluster: {} (write time {:?})",
                    query.text, query.params.timestamp
                );
                (Opcode::RESULT, ResultMessage::Void.to_bytes(VERSION))
            }
            other => panic!("the {upstream} cluster got an unexpected {other}"),
        };
        let stream = request.stream().0;
        send(
            &mut wires.to_session[peer.index()],
            Direction::Response,
            stream,
            opcode,
            body,
        );
        answered = true;
    }
    answered
}

/// Appends one envelope to `wire`.
fn send(wire: &mut BytesMut, direction: Direction, stream: i16, opcode: Opcode, body: Bytes) {
    let header = Header {
        version: VERSION,
        direction,
        flags: Flags::empty(),
        stream: StreamId(stream),
        opcode,
        length: 0,
    };
    Envelope::new(header, body).encode(wire);
}
