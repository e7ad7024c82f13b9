//! The secondary's connection fails mid-session and comes back: after a backoff the session
//! opens a new one, logs in again (STARTUP, credentials, USE of its keyspace) and its writes
//! reach both clusters again; what was written meanwhile is counted missed. The primary's
//! failure still ends the client connection.

#![allow(clippy::unwrap_used)]

mod session_common;

use std::time::Duration;

use cqlmirror_core::config::{Credentials, Secret, Upstream};
use cqlmirror_core::frame::{Envelope, Opcode};
use cqlmirror_core::message::{
    AuthResponse, Body, Prepare, Query, ResultMessage, sasl_plain_token,
};
use cqlmirror_core::session::reconnect::{FIRST_DELAY, MAX_DELAY, Reconnect};
use cqlmirror_core::session::{Event, Peer};
use cqlmirror_core::wire::Consistency;
use session_common::bench::{Bench, VERSION, execute, query, request, startup};

const SOURCE: usize = 0;
const TARGET: usize = 1;
const INSERT: &str = "INSERT INTO ks.t (k) VALUES (1)";

fn texts(bench: &Bench, cluster: usize) -> Vec<String> {
    bench.received[cluster]
        .iter()
        .filter(|e| e.opcode() == Opcode::QUERY)
        .map(|e| Query::decode(e.body(), VERSION).unwrap().text.to_owned())
        .collect()
}

fn opcodes(bench: &Bench, cluster: usize) -> Vec<Opcode> {
    bench.received[cluster]
        .iter()
        .map(Envelope::opcode)
        .collect()
}

fn missed(bench: &Bench) -> usize {
    bench
        .events
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::MissedWrite {
                    upstream: Upstream::Target,
                    ..
                }
            )
        })
        .count()
}

fn reconnects(bench: &Bench) -> Vec<Reconnect> {
    bench
        .events
        .iter()
        .filter_map(|e| match e {
            Event::SecondaryReconnect {
                upstream: Upstream::Target,
                result,
                ..
            } => Some(*result),
            _ => None,
        })
        .collect()
}

fn target_connects(bench: &Bench) -> usize {
    bench
        .connects
        .iter()
        .filter(|u| **u == Upstream::Target)
        .count()
}

/// Sends one write and lets everything settle; the client's answers are taken.
fn write(bench: &mut Bench, stream: i16, text: &str) -> Vec<(i16, Opcode)> {
    bench.client_in.extend_from_slice(&query(stream, text));
    bench.settle();
    bench.client_answers()
}

/// Advances in small steps until the session asks for another target connection; the time
/// that took.
fn until_reconnect(bench: &mut Bench, limit: Duration) -> Option<Duration> {
    let before = target_connects(bench);
    let step = Duration::from_millis(5);
    let mut waited = Duration::ZERO;
    while waited < limit {
        bench.advance(step);
        waited += step;
        if target_connects(bench) > before {
            return Some(waited);
        }
    }
    None
}

#[test]
fn the_target_comes_back_after_a_backoff_and_gets_the_writes_again() {
    let mut bench = Bench::ready(|_| {});
    assert_eq!(write(&mut bench, 2, INSERT), vec![(2, Opcode::RESULT)]);
    assert_eq!(texts(&bench, TARGET), [INSERT]);

    bench.drop_connection(Upstream::Target);
    assert!(
        !bench.closed.contains(&Peer::Client),
        "a secondary's failure leaves the client connected"
    );
    // Down: the write is answered by the primary and missed by the target.
    assert_eq!(write(&mut bench, 3, INSERT), vec![(3, Opcode::RESULT)]);
    assert_eq!(missed(&bench), 1);
    assert_eq!(texts(&bench, TARGET), [INSERT]);

    let waited = until_reconnect(&mut bench, Duration::from_secs(1)).unwrap();
    assert!(
        waited >= FIRST_DELAY / 2 && waited <= FIRST_DELAY + Duration::from_millis(5),
        "first attempt after {waited:?}"
    );
    assert_eq!(
        opcodes(&bench, TARGET),
        [Opcode::STARTUP, Opcode::QUERY, Opcode::STARTUP],
        "the new connection starts with the client's STARTUP"
    );
    let [
        Reconnect::Reconnected {
            down,
            attempts: 1,
            missed: 1,
        },
    ] = reconnects(&bench)[..]
    else {
        panic!("{:?}", reconnects(&bench));
    };
    assert_eq!(down, waited);

    // Back: writes reach both clusters again, and nothing more is missed.
    let other = "INSERT INTO ks.t (k) VALUES (2)";
    assert_eq!(write(&mut bench, 4, other), vec![(4, Opcode::RESULT)]);
    assert_eq!(texts(&bench, TARGET), [INSERT, other]);
    assert_eq!(texts(&bench, SOURCE), [INSERT, INSERT, other]);
    assert_eq!(missed(&bench), 1);
}

#[test]
fn the_new_connection_uses_the_session_keyspace() {
    let mut bench = Bench::ready(|_| {});
    let set = (
        Opcode::RESULT,
        ResultMessage::SetKeyspace("My \"ks\"").to_bytes(VERSION),
    );
    bench.answers = [Some(set.clone()), Some(set)];
    assert_eq!(
        write(&mut bench, 2, "USE \"My \"\"ks\"\"\""),
        vec![(2, Opcode::RESULT)]
    );
    bench.answers = [None, None];

    bench.drop_connection(Upstream::Target);
    until_reconnect(&mut bench, Duration::from_secs(1)).unwrap();
    assert_eq!(
        opcodes(&bench, TARGET)[2..],
        [Opcode::STARTUP, Opcode::QUERY]
    );
    assert_eq!(
        texts(&bench, TARGET).last().unwrap(),
        "USE \"My \"\"ks\"\"\"",
        "the keyspace's name is quoted as the cluster named it"
    );
    assert_eq!(write(&mut bench, 3, INSERT), vec![(3, Opcode::RESULT)]);
    assert_eq!(texts(&bench, TARGET).last().unwrap(), INSERT);
    assert_eq!(missed(&bench), 0);
}

#[test]
fn the_new_connection_logs_in_with_the_proxy_credentials() {
    let mut bench = Bench::ready(|config| {
        config.target.credentials = Some(Credentials {
            username: "mirror".into(),
            password: Secret::new("s3cret"),
        });
    });
    bench.authenticate[TARGET] = true;
    bench.drop_connection(Upstream::Target);
    until_reconnect(&mut bench, Duration::from_secs(1)).unwrap();
    let login = bench.received[TARGET].last().unwrap();
    assert_eq!(login.opcode(), Opcode::AUTH_RESPONSE);
    let token = AuthResponse::decode(login.body(), VERSION).unwrap().token;
    assert_eq!(
        token,
        Some(sasl_plain_token("mirror", "s3cret").expose()),
        "the proxy's own login for the target"
    );
    assert_eq!(write(&mut bench, 2, INSERT), vec![(2, Opcode::RESULT)]);
    assert_eq!(texts(&bench, TARGET), [INSERT]);
    assert!(matches!(
        reconnects(&bench)[..],
        [Reconnect::Reconnected { .. }]
    ));
}

#[test]
fn the_new_connection_logs_in_with_the_client_credentials_it_accepted() {
    let mut bench = Bench::new(|_| {});
    bench.authenticate = [true, true];
    bench.client_in = startup();
    bench.settle();
    assert_eq!(bench.client_answers(), vec![(1, Opcode::AUTHENTICATE)]);
    let token = sasl_plain_token("alice", "wonderland");
    let response = AuthResponse {
        token: Some(token.expose()),
    };
    bench.client_in = request(2, Opcode::AUTH_RESPONSE, response.to_bytes(VERSION));
    bench.settle();
    assert_eq!(bench.client_answers(), vec![(2, Opcode::AUTH_SUCCESS)]);
    assert_eq!(
        opcodes(&bench, TARGET),
        [Opcode::STARTUP, Opcode::AUTH_RESPONSE]
    );

    bench.drop_connection(Upstream::Target);
    until_reconnect(&mut bench, Duration::from_secs(1)).unwrap();
    assert_eq!(
        opcodes(&bench, TARGET)[2..],
        [Opcode::STARTUP, Opcode::AUTH_RESPONSE]
    );
    let login = bench.received[TARGET].last().unwrap();
    assert_eq!(
        AuthResponse::decode(login.body(), VERSION).unwrap().token,
        Some(token.expose()),
        "the client's login, relayed once, is given again"
    );
    assert_eq!(write(&mut bench, 3, INSERT), vec![(3, Opcode::RESULT)]);
    assert_eq!(texts(&bench, TARGET), [INSERT]);
    // The session's memory of the login is not shown in its debug output.
    let debug = format!("{:?}", bench.session);
    assert!(!debug.contains("wonderland"), "{debug}");
}

#[test]
fn a_prepared_statement_the_new_connection_does_not_know_is_prepared_again() {
    let mut bench = Bench::ready(|_| {});
    let prepare = Prepare {
        query: INSERT,
        keyspace: None,
    };
    bench
        .client_in
        .extend_from_slice(&request(2, Opcode::PREPARE, prepare.to_bytes(VERSION)));
    bench.settle();
    assert_eq!(bench.client_answers(), vec![(2, Opcode::RESULT)]);

    // The target node restarted: the new connection's node forgot the statement.
    bench.drop_connection(Upstream::Target);
    until_reconnect(&mut bench, Duration::from_secs(1)).unwrap();
    bench.unprepared_next[TARGET] = true;
    bench
        .client_in
        .extend_from_slice(&execute(3, INSERT.as_bytes(), &[], Consistency::ONE));
    bench.settle();
    assert_eq!(bench.client_answers(), vec![(3, Opcode::RESULT)]);
    assert_eq!(
        opcodes(&bench, TARGET)[2..],
        [
            Opcode::STARTUP,
            Opcode::EXECUTE,
            Opcode::PREPARE,
            Opcode::EXECUTE
        ],
        "UNPREPARED on the new connection is repaired there"
    );
    assert_eq!(missed(&bench), 0);
}

#[test]
fn writes_while_the_new_connection_opens_are_missed_not_held() {
    let mut bench = Bench::ready(|_| {});
    bench.drop_connection(Upstream::Target);
    bench.connect_pending[TARGET] = true;
    until_reconnect(&mut bench, Duration::from_secs(1)).unwrap();
    // Connecting: the write is answered at once and counted missed.
    let startup_only = bench.session.queued(Peer::Target);
    assert_eq!(write(&mut bench, 2, INSERT), vec![(2, Opcode::RESULT)]);
    assert_eq!(missed(&bench), 1);
    assert_eq!(
        bench.session.queued(Peer::Target),
        startup_only,
        "nothing but the STARTUP waits for the connection"
    );
    bench.connect_pending[TARGET] = false;
    bench.session.handle_connected(Upstream::Target, bench.now);
    bench.settle();
    assert_eq!(opcodes(&bench, TARGET), [Opcode::STARTUP, Opcode::STARTUP]);
    assert!(matches!(
        reconnects(&bench)[..],
        [Reconnect::Reconnected {
            attempts: 1,
            missed: 1,
            ..
        }]
    ));
    assert_eq!(write(&mut bench, 3, INSERT), vec![(3, Opcode::RESULT)]);
    assert_eq!(texts(&bench, TARGET), [INSERT]);
}

#[test]
fn a_new_connection_that_hangs_is_given_up_and_tried_again() {
    let mut bench = Bench::ready(|_| {});
    bench.drop_connection(Upstream::Target);
    bench.connect_pending[TARGET] = true;
    until_reconnect(&mut bench, Duration::from_secs(1)).unwrap();
    // `--connect-timeout` passes: the attempt failed, another comes after a longer backoff.
    let connect_timeout = bench.proxy.config().connect_timeout;
    bench.advance(connect_timeout);
    assert!(matches!(
        reconnects(&bench)[..],
        [Reconnect::Failed { attempt: 1, .. }]
    ));
    bench.connect_pending[TARGET] = false;
    until_reconnect(&mut bench, 2 * FIRST_DELAY + Duration::from_millis(5)).unwrap();
    assert!(matches!(
        reconnects(&bench)[..],
        [
            Reconnect::Failed { .. },
            Reconnect::Reconnected { attempts: 2, .. }
        ]
    ));
}

#[test]
fn the_primary_failing_still_closes_the_client_and_is_not_reconnected() {
    let mut bench = Bench::ready(|_| {});
    bench.drop_connection(Upstream::Source);
    assert!(bench.closed.contains(&Peer::Client));
    let connects = bench.connects.len();
    bench.advance(Duration::from_secs(30));
    assert_eq!(bench.connects.len(), connects, "no reconnection");
    assert!(reconnects(&bench).is_empty());
}

#[test]
fn a_session_that_shuts_down_does_not_reconnect() {
    let mut bench = Bench::ready(|_| {});
    bench.drop_connection(Upstream::Target);
    bench.session.handle_shutdown(bench.now);
    bench.settle();
    assert_eq!(
        until_reconnect(&mut bench, Duration::from_secs(30)),
        None,
        "no reconnection while draining"
    );
}

/// When each attempt of a target that refuses connections was made.
fn attempt_times(seed: u64, attempts: usize) -> Vec<Duration> {
    let mut bench = Bench::seeded(seed, |_| {});
    bench.client_in = startup();
    bench.settle();
    bench.reachable[TARGET] = false;
    bench.drop_connection(Upstream::Target);
    let mut at = Vec::new();
    let mut total = Duration::ZERO;
    while at.len() < attempts {
        total += until_reconnect(&mut bench, Duration::from_secs(10)).unwrap();
        at.push(total);
    }
    let failed = reconnects(&bench)
        .iter()
        .filter(|r| matches!(r, Reconnect::Failed { .. }))
        .count();
    assert_eq!(failed, attempts, "each refused attempt is reported");
    at
}

#[test]
fn the_backoff_doubles_and_is_capped() {
    let at = attempt_times(7, 12);
    let gaps: Vec<Duration> = std::iter::once(at[0])
        .chain(at.windows(2).map(|w| w[1] - w[0]))
        .collect();
    let step = Duration::from_millis(5);
    for (n, gap) in gaps.iter().enumerate() {
        let full = FIRST_DELAY.saturating_mul(1 << n.min(20)).min(MAX_DELAY);
        assert!(
            *gap + step >= full / 2 && *gap <= full + step,
            "attempt {n}: {gap:?} (backoff {full:?}); all: {gaps:?}"
        );
    }
    // The last ones are at the cap.
    assert!(gaps[10] >= MAX_DELAY / 2 && gaps[11] <= MAX_DELAY + step);
}

#[test]
fn the_jitter_comes_from_the_proxy_seed() {
    assert_eq!(
        attempt_times(3, 6),
        attempt_times(3, 6),
        "same seed, same times"
    );
    assert_ne!(
        attempt_times(3, 6),
        attempt_times(4, 6),
        "another seed, other times"
    );
}

#[test]
fn a_failed_target_at_connect_time_comes_back_once_the_client_is_ready() {
    let mut bench = Bench::new(|_| {});
    bench.reachable[TARGET] = false;
    bench.client_in = startup();
    bench.settle();
    assert_eq!(bench.client_answers(), vec![(1, Opcode::READY)]);
    assert_eq!(write(&mut bench, 2, INSERT), vec![(2, Opcode::RESULT)]);
    assert_eq!(missed(&bench), 1);
    bench.reachable[TARGET] = true;
    until_reconnect(&mut bench, Duration::from_secs(1)).unwrap();
    assert_eq!(write(&mut bench, 3, INSERT), vec![(3, Opcode::RESULT)]);
    assert_eq!(texts(&bench, TARGET), [INSERT]);
}
