//! With `--wait false`, a secondary slower than the primary slows the client down at
//! `--max-secondary-lag` instead of missing writes; a secondary that stalls or fails never
//! keeps the client paused.
//!
//! One session driven by hand: the source answers at once, the target keeps its QUERYs until
//! the test releases them. The client reads one request per socket read, so the bound is
//! checked request by request.

#![allow(clippy::unwrap_used)]

mod session_common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use cqlmirror_core::config::{Upstream, WaitPolicy};
use cqlmirror_core::session::{Event, Peer};
use session_common::bench::{Bench, query};

const BOUND: usize = 8;

/// A ready session with `--wait false`, a lag bound of [`BOUND`] requests and a silent target,
/// with `n` INSERTs waiting to be read from the client, one per read.
fn slow_target(n: usize, configure: impl FnOnce(&mut cqlmirror_core::config::Config)) -> Bench {
    let mut bench = Bench::ready(|c| {
        c.wait = WaitPolicy::Primary;
        c.max_secondary_lag = BOUND;
        configure(c);
    });
    bench.silent[Upstream::Target.index()] = true;
    let mut wire = BytesMut::new();
    for i in 0..n {
        wire.extend_from_slice(&query(
            10 + i as i16,
            &format!("INSERT INTO ks.t (k) VALUES ({i})"),
        ));
    }
    bench.client_read_size = query(10, "INSERT INTO ks.t (k) VALUES (0)").len();
    bench.client_in = wire;
    bench.settle();
    bench
}

fn missed(bench: &Bench) -> u64 {
    bench.proxy.stats().missed_writes[Upstream::Target.index()].load(Ordering::Relaxed)
}

/// The proxy-wide count of requests the secondary has not finished.
fn lag(bench: &Bench) -> i64 {
    bench.proxy.stats().secondary_lag.load(Ordering::Relaxed)
}

fn pauses(bench: &Bench) -> usize {
    bench
        .events
        .iter()
        .filter(|e| matches!(e, Event::SecondaryLag { .. }))
        .count()
}

#[test]
fn a_slow_secondary_pauses_the_client_at_the_bound_and_resumes_under_it() {
    let n = 40;
    let mut bench = slow_target(n, |_| {});
    // The primary answered what the client sent; the target has the bound's worth.
    assert_eq!(bench.queries, [BOUND, BOUND]);
    assert_eq!(bench.client_answers().len(), BOUND);
    assert!(!bench.session.wants_read(Peer::Client));
    assert!(!bench.client_in.is_empty());
    assert_eq!(pauses(&bench), 1);
    assert_eq!(lag(&bench), BOUND as i64);

    // A quarter under the bound is needed to resume: one answer is not enough.
    bench.release(Upstream::Target, 1);
    assert!(!bench.session.wants_read(Peer::Client));
    assert_eq!(bench.queries[Upstream::Source.index()], BOUND);
    bench.release(Upstream::Target, 2);
    // Read again, up to the bound.
    assert_eq!(bench.queries[Upstream::Source.index()], BOUND + 3);
    assert_eq!(bench.unanswered[Upstream::Target.index()].len(), BOUND);
    assert_eq!(pauses(&bench), 2);

    // The target catches up bit by bit; every write reaches it, none is missed.
    for _ in 0..100 {
        if bench.unanswered[Upstream::Target.index()].is_empty() && bench.client_in.is_empty() {
            break;
        }
        bench.release(Upstream::Target, 3);
        assert!(bench.unanswered[Upstream::Target.index()].len() <= BOUND);
    }
    assert_eq!(bench.queries, [n, n]);
    assert_eq!(bench.client_answers().len(), n - BOUND);
    assert_eq!(missed(&bench), 0);
    assert!(
        !bench
            .events
            .iter()
            .any(|e| matches!(e, Event::MissedWrite { .. }))
    );
    assert!(bench.session.wants_read(Peer::Client));
    assert_eq!(lag(&bench), 0);
}

#[test]
fn the_byte_bound_pauses_too() {
    // What the target gets of one INSERT (with the proxy's write timestamp).
    let one = slow_target(1, |_| {}).unanswered[Upstream::Target.index()][0]
        .body()
        .len();
    // Room for three bodies, not four.
    let mut bench = slow_target(20, |c| {
        c.max_secondary_lag = 0;
        c.max_secondary_lag_bytes = 4 * one - 1;
    });
    assert_eq!(bench.queries, [4, 4]);
    assert!(!bench.session.wants_read(Peer::Client));
    bench.release(Upstream::Target, 4);
    assert_eq!(bench.queries, [8, 8]);
}

#[test]
fn no_bound_with_zero() {
    let bench = slow_target(40, |c| c.max_secondary_lag = 0);
    assert_eq!(bench.queries, [40, 40]);
    assert!(bench.session.wants_read(Peer::Client));
    assert_eq!(pauses(&bench), 0);
}

#[test]
fn a_frozen_secondary_stalls_and_stops_pausing_the_client() {
    let n = 40;
    let mut bench = slow_target(n, |c| {
        c.wait_timeout = Duration::from_millis(500);
        c.request_timeout = Duration::from_secs(10);
    });
    assert_eq!(bench.queries, [BOUND, BOUND]);
    // Paused while the target may still be busy.
    bench.advance(Duration::from_millis(400));
    assert!(!bench.session.wants_read(Peer::Client));
    assert_eq!(bench.queries[Upstream::Source.index()], BOUND);
    // It finished nothing within --wait-timeout: stalled, the client goes on.
    bench.advance(Duration::from_millis(200));
    assert!(bench.proxy.is_stalled(Upstream::Target));
    assert_eq!(bench.queries, [n, n]);
    assert!(bench.session.wants_read(Peer::Client));
    assert!(bench.events.iter().any(|e| matches!(
        e,
        Event::Failure {
            upstream: Upstream::Target,
            first: true,
            ..
        }
    )));
    // The writes it never answers time out and are missed, as without the bound.
    bench.advance(Duration::from_secs(11));
    assert_eq!(missed(&bench), n as u64);
}

#[test]
fn a_secondary_that_answers_again_is_bounded_again() {
    let mut bench = slow_target(40, |c| c.wait_timeout = Duration::from_millis(500));
    bench.advance(Duration::from_millis(600));
    assert!(bench.proxy.is_stalled(Upstream::Target));
    assert_eq!(bench.queries, [40, 40]);
    bench.release(Upstream::Target, 40);
    assert!(!bench.proxy.is_stalled(Upstream::Target));
    assert_eq!(missed(&bench), 0);
    let more: Vec<u8> = (0..20)
        .flat_map(|i| query(100 + i, &format!("INSERT INTO ks.t (k) VALUES ({i})")).to_vec())
        .collect();
    bench.client_in.extend_from_slice(&more);
    bench.settle();
    assert_eq!(bench.queries, [40 + BOUND, 40 + BOUND]);
    assert!(!bench.session.wants_read(Peer::Client));
}

#[test]
fn a_failed_secondary_never_pauses_the_client() {
    let n = 40;
    let mut bench = slow_target(n, |_| {});
    assert!(!bench.session.wants_read(Peer::Client));
    bench
        .session
        .handle_closed(Peer::Target, "connection reset", bench.now);
    bench.settle();
    // What was in flight there is missed; the client goes on, its writes missed as before.
    assert!(bench.session.wants_read(Peer::Client));
    assert_eq!(bench.queries[Upstream::Source.index()], n);
    assert_eq!(bench.client_answers().len(), n);
    assert_eq!(missed(&bench), n as u64);
}

#[test]
fn with_wait_true_the_bound_is_no_stricter_than_waiting() {
    let mut bench = Bench::ready(|c| c.max_secondary_lag = BOUND);
    bench.silent[Upstream::Target.index()] = true;
    for i in 0..BOUND as i16 {
        bench
            .client_in
            .extend_from_slice(&query(10 + i, "INSERT INTO ks.t (k) VALUES (1)"));
    }
    bench.settle();
    // Each answer waits for the target; the bound only stops reading at its count.
    assert_eq!(bench.client_answers(), vec![]);
    assert!(!bench.session.wants_read(Peer::Client));
    bench.release(Upstream::Target, BOUND);
    assert_eq!(bench.client_answers().len(), BOUND);
    assert!(bench.session.wants_read(Peer::Client));
    assert_eq!(bench.queries, [BOUND, BOUND]);
}

#[test]
fn a_secondary_out_of_stream_ids_holds_writes_instead_of_missing_them() {
    // No bound: the target's 32768 stream ids run out first.
    let mut bench = Bench::ready(|c| {
        c.wait = WaitPolicy::Primary;
        c.max_secondary_lag = 0;
        c.max_secondary_lag_bytes = 0;
        c.write_buffer_size = 64 << 20;
    });
    bench.silent[Upstream::Target.index()] = true;
    let n = 32_768 + 100;
    let mut wire = BytesMut::new();
    for i in 0..n {
        wire.extend_from_slice(&query(
            (i % 30_000) as i16,
            "INSERT INTO ks.t (k) VALUES (1)",
        ));
        if i % 1000 == 999 {
            bench.client_in = std::mem::take(&mut wire);
            bench.settle();
            bench.client_answers();
        }
    }
    bench.client_in = wire;
    bench.settle();
    assert_eq!(bench.queries, [n, 32_768]);
    assert_eq!(bench.session.upstream_in_flight(Upstream::Target), 32_768);
    bench.release(Upstream::Target, 150);
    assert_eq!(bench.queries, [n, n]);
    bench.release(Upstream::Target, n);
    assert_eq!(missed(&bench), 0);
}

#[test]
fn the_proxy_wide_gauges_follow_each_input_and_forget_a_session_that_goes() {
    let mut bench = slow_target(4, |_| {});
    let stats = |bench: &Bench| {
        let stats = bench.proxy.stats();
        (
            stats.in_flight.load(Ordering::Relaxed),
            stats.secondary_lag.load(Ordering::Relaxed),
        )
    };
    // Answered by the source, still running on the silent target.
    assert_eq!(bench.client_answers().len(), 4);
    assert_eq!(stats(&bench), (4, 4));
    bench.release(Upstream::Target, 3);
    assert_eq!(stats(&bench), (1, 1));
    let proxy = std::sync::Arc::clone(&bench.proxy);
    drop(bench);
    let stats = proxy.stats();
    assert_eq!(stats.in_flight.load(Ordering::Relaxed), 0);
    assert_eq!(stats.secondary_lag.load(Ordering::Relaxed), 0);
}
