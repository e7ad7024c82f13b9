//! The journal of missed writes: what is kept of a write one cluster missed while the other
//! applied it ([`record`]), and how records are laid out in append-only segment files and
//! recovered after a crash ([`segment`]). A record is made from the request that missed, and
//! turns back into the request that applies it again ([`Record::request`]).
//!
//! Both are pure: the runtime's journal writer and reader do the file I/O, and replay reads
//! the records back to apply them to the cluster that missed them.

pub mod record;
mod request;
pub mod segment;

pub use record::{
    BoundValue, Cause, Outcome, RECORD_FORMAT, Record, ReplayAction, Statement, Values, Write,
    WriteKind,
};
pub use segment::{Frame, FrameFault, HeaderError, Scan, SegmentHeader, Tail};
