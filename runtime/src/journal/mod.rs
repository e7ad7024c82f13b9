//! The journal of missed writes on disk: a [`Journal`] appends records to segment files in a
//! directory from a thread of its own, and a [`JournalReader`] reads them back in order from a
//! [`Position`] for replay.
//!
//! The record and segment formats, and the recovery scan, are the core's
//! ([`cqlmirror_core::journal`]); this module does the file I/O around them: a directory lock,
//! recovery when the journal opens, segment rolls, group commit with an fsync policy, and a
//! size cap that refuses records (counted, never silently) once reached.
//!
//! A journal directory holds `LOCK` (the pid of the process that has it, locked with `flock`)
//! and the segments, `<sequence, 20 digits>.journal`, read in sequence order. Each run of the
//! proxy appends to a new segment after recovering the newest one; replay removes segments it
//! is done with through [`Journal::release_through`].

mod dir;
pub mod installed;
mod reader;
mod writer;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

pub use dir::{DirLock, LOCK_FILE, LockError, segment_path, segments};
pub use reader::{Entry, JournalReader, Position, ReadError};
pub use writer::{Journal, OpenError, Refused};

/// How often `interval` syncs: the most a power loss can take from the journal. Short enough
/// to lose little, long enough that a busy journal syncs ten times a second, not per write.
pub const DEFAULT_FSYNC_INTERVAL: Duration = Duration::from_millis(100);
/// Segments roll at this size: small enough to release replayed ones soon, large enough that
/// a busy journal does not create files all the time.
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 << 20;
/// The default cap on the journal's total size on disk.
pub const DEFAULT_MAX_SIZE: u64 = 10 << 30;
/// Records waiting for the writer thread at most; more are refused (and counted) rather than
/// hold up requests.
pub const DEFAULT_QUEUE: usize = 16 * 1024;

/// When appended records are made durable with an fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After every group of records written together (group commit): nothing acknowledged by
    /// [`Journal::flush`] or written before a crash of the machine is lost.
    Always,
    /// At most this long after a record is written: a power loss takes at most that much.
    Interval(Duration),
    /// Never explicitly (the operating system writes back on its own schedule): a process
    /// crash loses nothing, a power loss may lose what was not written back.
    Never,
}

impl FsyncPolicy {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::Interval(_) => "interval",
            Self::Never => "never",
        }
    }
}

impl Default for FsyncPolicy {
    fn default() -> Self {
        Self::Interval(DEFAULT_FSYNC_INTERVAL)
    }
}

impl FromStr for FsyncPolicy {
    type Err = String;

    /// `always`, `interval` (every [`DEFAULT_FSYNC_INTERVAL`]) or `never`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(Self::Always),
            "interval" => Ok(Self::default()),
            "never" => Ok(Self::Never),
            other => Err(format!(
                "unknown fsync policy {other:?}: use always, interval or never"
            )),
        }
    }
}

/// Where and how a journal is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalSettings {
    /// The directory, created if missing; one proxy per directory.
    pub dir: PathBuf,
    pub fsync: FsyncPolicy,
    /// The most bytes the segments may take together; records beyond it are refused.
    pub max_size: u64,
    /// A segment is closed and the next one started once it reaches this size.
    pub segment_size: u64,
    /// Records queued for the writer thread at most.
    pub queue: usize,
}

impl JournalSettings {
    /// The defaults, in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            fsync: FsyncPolicy::default(),
            max_size: DEFAULT_MAX_SIZE,
            segment_size: DEFAULT_SEGMENT_SIZE,
            queue: DEFAULT_QUEUE,
        }
    }
}

/// A journal's counters and flags, shared with the metrics and the readiness check.
#[derive(Debug, Default)]
pub struct JournalState {
    pub(crate) appended: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) segments: AtomicU64,
    pub(crate) refused_full: AtomicU64,
    pub(crate) refused_queue: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) syncs: AtomicU64,
    pub(crate) full: AtomicBool,
    pub(crate) failing: AtomicBool,
    /// 0 while the journal holds no segment with records.
    pub(crate) oldest_micros: AtomicI64,
}

/// A copy of a journal's state at one time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JournalStats {
    /// Records written to a segment since the journal opened.
    pub appended: u64,
    /// Bytes the segments take on disk, headers included.
    pub bytes: u64,
    pub segments: u64,
    /// Records not journaled because the size cap was reached.
    pub refused_full: u64,
    /// Records not journaled because the writer thread had too many waiting.
    pub refused_queue: u64,
    /// Records lost to a write error.
    pub failed: u64,
    /// The fsyncs of appended records so far (one per group commit with `always`).
    pub syncs: u64,
    /// The size cap is reached: records are refused until replayed segments are released.
    pub full: bool,
    /// The last write failed.
    pub failing: bool,
    /// When the oldest segment was created (µs since the Unix epoch), an upper bound of the
    /// oldest record's age; `None` when no segment holds records from an earlier run and none
    /// was appended.
    pub oldest_micros: Option<i64>,
}

impl JournalStats {
    /// Writes missed by a cluster that the journal does not hold: the ones replay cannot
    /// bring back.
    pub const fn lost(&self) -> u64 {
        self.refused_full + self.refused_queue + self.failed
    }

    /// Whether the journal takes every record it is given (for readiness).
    pub const fn healthy(&self) -> bool {
        !self.full && !self.failing
    }
}

impl JournalState {
    pub fn snapshot(&self) -> JournalStats {
        let oldest = self.oldest_micros.load(Ordering::Relaxed);
        JournalStats {
            appended: self.appended.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            segments: self.segments.load(Ordering::Relaxed),
            refused_full: self.refused_full.load(Ordering::Relaxed),
            refused_queue: self.refused_queue.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
            full: self.full.load(Ordering::Relaxed),
            failing: self.failing.load(Ordering::Relaxed),
            oldest_micros: (oldest != 0).then_some(oldest),
        }
    }
}
