//! The sans-IO core of cqlmirror, a dual-write proxy for the Apache Cassandra CQL native
//! protocol.
//!
//! This crate holds every protocol decision the proxy makes and none of its I/O: no sockets,
//! no clocks, no threads, no runtime. Drivers (`proxy-smol`, `proxy-tokio`, or a simulation)
//! feed it bytes and the current time and carry out what it asks for.
//!
//! - [`frame`]: envelopes, v5 segments, checksums and compression.
//! - [`message`]: the bodies of each message type, decoded lazily and without copies.
//! - [`wire`]: the protocol's primitive types.
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

pub mod config;
pub mod driver;
pub mod error;
pub mod failure;
pub mod frame;
pub mod message;
pub mod prepared;
pub mod proxy;
pub mod routing;
pub mod session;
pub mod statement;
pub mod wire;

pub use error::{DecodeError, DecodeErrorKind};

/// The version of this crate, reported by `--version` of both binaries.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
