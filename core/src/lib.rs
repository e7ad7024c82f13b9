//! The sans-IO core of cqlmirror, a dual-write proxy for the Apache Cassandra CQL native
//! protocol.
//!
//! This crate holds every protocol decision the proxy makes and none of its I/O: no sockets,
//! no clocks, no threads, no runtime. A driver (`proxy-smol`, `proxy-tokio`, the simulator in
//! `cqlmirror-sim`, or a program of yours) feeds it bytes and the current time and carries out
//! what it asks for. `examples/one_session.rs` drives one session over in-memory buffers with
//! a hand-moved clock, in about a hundred lines.
//!
//! # The run loop
//!
//! A [`Proxy`](proxy::Proxy) holds what all client connections share (configuration, the
//! primary cluster, prepared statements, counters). Each accepted client connection gets one
//! [`Session`](session::Session), which owns that client's connection and its two backend
//! connections (to the source and the target cluster) as state; the driver owns the sockets.
//!
//! ## Rules
//!
//! These are the contract; a driver that breaks one loses correctness (bytes, answers or
//! memory bounds), not just speed.
//!
//! 1. **Time.** Every call takes `now: Instant` last, and `now` never goes backwards for a
//!    session (`Instant::now()` qualifies; so does a simulated clock). The core reads no clock
//!    and no randomness of its own.
//! 2. **Start.** Create the session with [`Session::new`](session::Session::new) when the
//!    client connection is accepted, then drain it (rule 4): it asks for its two backend
//!    connections.
//! 3. **Inputs.** Bytes read from a peer go to
//!    [`handle_client_bytes`](session::Session::handle_client_bytes) or
//!    [`handle_upstream_bytes`](session::Session::handle_upstream_bytes) with that peer's
//!    receive buffer, which the session splits whole frames off (leave the rest in place and
//!    append the next read to it). Report each [`Action::Connect`](session::Action::Connect)
//!    with [`handle_connected`](session::Session::handle_connected) or
//!    [`handle_closed`](session::Session::handle_closed), every closed or failed socket with
//!    `handle_closed`, the timer with [`handle_timeout`](session::Session::handle_timeout),
//!    and a shutdown with [`handle_shutdown`](session::Session::handle_shutdown).
//! 4. **Drain after every input, in this order:** [`poll_action`](session::Session::poll_action)
//!    until `None`; then [`poll_transmit`](session::Session::poll_transmit) for each peer;
//!    then [`poll_event`](session::Session::poll_event) until `None`; then re-arm the timer
//!    from [`poll_timeout`](session::Session::poll_timeout). The order matters for actions
//!    only: an [`Action::Close`](session::Action::Close) means "write what `poll_transmit`
//!    still yields for that peer, then close it", so the action must be seen before those
//!    bytes are written; and bytes for a backend connection come only once it is connected.
//! 5. **Reads.** Read from a peer only while [`wants_read`](session::Session::wants_read)
//!    says so. That is the backpressure: a slow reader elsewhere stops the reading here, and
//!    the session's memory stays bounded by `--write-buffer-size` plus one read and one frame.
//! 6. **End.** Once [`is_finished`](session::Session::is_finished), write out what is still
//!    queued, close the sockets the session asked to close, and drop the session.
//!
//! Threads: a [`Proxy`](proxy::Proxy) is `Sync`, and sessions of one proxy may run on
//! different threads at the same time (they share the proxy through atomics and one short
//! mutex for prepared statements). A session itself is used by one thread at a time (it is
//! `Send`, and every call takes `&mut self`).
//!
//! Proxy-level inputs come from the driver too: call
//! [`Proxy::handle_wall_clock`](proxy::Proxy::handle_wall_clock) periodically (every second
//! or so) so that the write timestamps the proxy adds follow the system clock, and
//! [`Proxy::set_primary`](proxy::Proxy::set_primary) to switch the primary cluster; requests
//! already received keep the cluster they started with.
//!
//! ## Advice
//!
//! - Pull [`poll_transmit`](session::Session::poll_transmit) for a peer only when its socket
//!   can take bytes, and write the chunks with one vectored write: a slow target then never
//!   holds up the client, and what is not pulled stays counted for backpressure.
//! - A timer that fires early is harmless (the session ignores calls before a deadline);
//!   one that fires late only delays a timeout. Moving a runtime timer is not free: keeping it
//!   armed at the earliest deadline seen, and re-reading `poll_timeout` when it fires, is
//!   enough.
//! - [`driver::Driver`] does rules 3 to 6 for readiness-based runtimes (receive buffers,
//!   partial writes, drain order); both binaries use it.
//!
//! Wire problems are never errors of these calls: a malformed frame from the client becomes a
//! protocol ERROR sent to it, an event and a close; a cluster that misbehaves is marked
//! failed. Nothing here panics on input. `Result` is only for local misuse, such as a
//! configuration that cannot work.
//!
//! # Modules
//!
//! - [`compare`]: whether the two clusters' answers to a read differ, and how.
//! - [`frame`]: envelopes, v5 segments, checksums and compression.
//! - [`message`]: the bodies of each message type, decoded lazily and without copies.
//! - [`wire`]: the protocol's primitive types.
//! - [`statement`]: what a CQL statement is (read, write, schema change, conditional).
//! - [`session`]: one client connection and its two backend connections.
//! - [`proxy`]: what the sessions of one proxy share; [`config`]: its settings;
//!   [`admission`]: how many client connections it takes.
//! - [`routing`]: where a request goes, and the roles of the two clusters.
//! - [`prepared`]: prepared statements and each cluster's ids for them.
//! - [`failure`]: why a request to a cluster failed.
//! - [`journal`]: the records of writes a cluster missed, and their segment files.
//! - [`driver`]: the buffering and drain order every readiness-based runtime needs.
#![forbid(unsafe_code)]

/// A branch that cannot be taken unless the state machine has a bug: it fails loudly in debug
/// builds (tests and the simulation's chaos seeds), and release builds go on without it (the
/// caller returns or skips, as the code after the macro says). Never used for anything that
/// wire data can cause.
macro_rules! bug {
    ($($arg:tt)+) => {
        debug_assert!(false, "cqlmirror-core bug: {}", format_args!($($arg)+))
    };
}

pub mod admission;
pub mod compare;
pub mod config;
pub mod control;
pub mod divergence;
pub mod driver;
pub mod entropy;
pub mod error;
pub mod failure;
pub mod filter;
pub mod frame;
pub mod generated;
pub mod health;
pub mod journal;
pub mod message;
mod nonblocking;
pub mod prepared;
pub mod proxy;
pub mod report;
pub mod routing;
pub mod schema;
pub mod session;
pub mod statement;
pub mod topology;
pub mod wire;

pub use error::{DecodeError, DecodeErrorKind};

/// The version of this crate, reported by `--version` of both binaries.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
