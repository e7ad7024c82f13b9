//! The journal directory: its segment files, named by sequence, and the lock that keeps a
//! second process out.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};

/// The lock file, holding the pid of the process that has the directory.
pub const LOCK_FILE: &str = "LOCK";
/// Segment files are `<sequence, 20 digits>.journal`: names sort in sequence order, and any
/// other file in the directory (the lock, a replay checkpoint) is left alone.
const SEGMENT_SUFFIX: &str = ".journal";

/// The path of segment `sequence` in `dir`.
pub fn segment_path(dir: &Path, sequence: u64) -> PathBuf {
    dir.join(format!("{sequence:020}{SEGMENT_SUFFIX}"))
}

/// The sequences of the segments in `dir`, in increasing order.
pub fn segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(digits) = name.to_str().and_then(|n| n.strip_suffix(SEGMENT_SUFFIX)) else {
            continue;
        };
        if digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(sequence) = digits.parse() {
                out.push(sequence);
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Makes the directory's entries (files created, removed, truncated) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// An exclusive lock on a journal directory, held as long as this value lives (and released
/// by the kernel if the process dies, so a crash never leaves a stale lock behind).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// Why a journal directory cannot be locked.
#[derive(Debug)]
pub enum LockError {
    /// Another process holds it.
    Held {
        dir: PathBuf,
        pid: Option<u32>,
    },
    Io {
        dir: PathBuf,
        error: io::Error,
    },
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Held { dir, pid } => {
                write!(f, "journal directory {} is in use by ", dir.display())?;
                match pid {
                    Some(pid) => write!(f, "another process (pid {pid})")?,
                    None => write!(f, "another process")?,
                }
                write!(
                    f,
                    ": each proxy needs a --journal-dir of its own (and replay waits for the proxy using it to stop)"
                )
            }
            Self::Io { dir, error } => {
                write!(
                    f,
                    "cannot lock journal directory {}: {error}",
                    dir.display()
                )
            }
        }
    }
}

impl std::error::Error for LockError {}

impl DirLock {
    /// Locks `dir` (which must exist) for this process and writes its pid into the lock file,
    /// so that the error another process gets names it.
    pub fn acquire(dir: &Path) -> Result<Self, LockError> {
        let io_error = |error| LockError::Io {
            dir: dir.to_owned(),
            error,
        };
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_error)?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                let mut text = String::new();
                let pid = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse().ok());
                return Err(LockError::Held {
                    dir: dir.to_owned(),
                    pid,
                });
            }
            Err(e) => return Err(io_error(e.into())),
        }
        file.set_len(0).map_err(io_error)?;
        writeln!(file, "{}", std::process::id()).map_err(io_error)?;
        Ok(Self { _file: file })
    }
}
