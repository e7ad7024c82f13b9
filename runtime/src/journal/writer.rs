//! The journal writer: recovery when it opens, then a thread of its own that appends the
//! records it is sent to the current segment, rolls segments, syncs by policy and enforces the
//! size cap.
//!
//! Appending never blocks the caller: records go through a bounded queue, and a record that
//! finds it full, or finds the journal at its size cap, is refused and counted. A missed write
//! that cannot be journaled is lost to replay, so every refusal shows in [`JournalStats`] (and
//! from there in metrics and readiness) and in the log.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime};

use cqlmirror_core::journal::segment::{self, HEADER_LEN, HeaderError, SegmentHeader};
use cqlmirror_core::journal::{Record, Tail};

use super::dir::{self, DirLock, LockError};
use super::{FsyncPolicy, JournalSettings, JournalState, JournalStats};

/// Bytes gathered from the queue before they are written and synced together.
const GROUP_BYTES: usize = 4 << 20;

/// An open journal: the handle the proxy appends through. Dropping it lets the writer thread
/// finish what is queued and sync; [`Journal::close`] also waits for that.
#[derive(Debug)]
pub struct Journal {
    tx: Option<SyncSender<Command>>,
    state: Arc<JournalState>,
    thread: Option<JoinHandle<io::Result<()>>>,
    dir: PathBuf,
}

/// Why a record was not journaled. Each one is counted in [`JournalStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The journal reached its size cap (`--journal-max-size`).
    Full,
    /// The writer thread has too many records waiting (the disk is slower than the misses).
    Queue,
    /// The writer thread is gone.
    Closed,
}

/// Why a journal cannot be opened.
#[derive(Debug)]
pub enum OpenError {
    Lock(LockError),
    /// The last segment's header is damaged or not a journal's: recovery cannot tell what the
    /// file holds, so it is left for the operator.
    Segment {
        path: PathBuf,
        error: HeaderError,
    },
    Io {
        path: PathBuf,
        error: io::Error,
    },
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Lock(e) => e.fmt(f),
            Self::Segment { path, error } => write!(
                f,
                "journal segment {}: {error}; move it out of the --journal-dir (its records will not be replayed) or point --journal-dir elsewhere",
                path.display()
            ),
            Self::Io { path, error } => write!(f, "journal {}: {error}", path.display()),
        }
    }
}

impl std::error::Error for OpenError {}

enum Command {
    Append(Arc<Record>),
    Flush(SyncSender<io::Result<()>>),
    Release(u64, SyncSender<io::Result<u64>>),
}

impl Journal {
    /// Opens the journal in `settings.dir` (created if missing): locks the directory, recovers
    /// the newest segment (truncated to its last valid record; removed if it holds none, and
    /// then the one before it recovered), starts a new segment after it and the writer thread.
    pub fn open(settings: JournalSettings) -> Result<Self, OpenError> {
        let dir = settings.dir.clone();
        let io_error = |path: &Path| {
            let path = path.to_owned();
            move |error| OpenError::Io { path, error }
        };
        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let lock = DirLock::acquire(&dir).map_err(OpenError::Lock)?;
        let mut found = dir::segments(&dir).map_err(io_error(&dir))?;
        let next = found.last().map_or(1, |last| last + 1);
        // Down to the newest segment with records: a run that crashed while creating a
        // segment may have followed one that crashed in the middle of an append.
        while let Some(&last) = found.last() {
            if recover(&dir, last)? {
                break;
            }
            found.pop();
        }
        let mut segments = Vec::with_capacity(found.len() + 1);
        for sequence in found {
            let path = dir::segment_path(&dir, sequence);
            let size = std::fs::metadata(&path).map_err(io_error(&path))?.len();
            segments.push(Segment {
                sequence,
                created_micros: created_micros(&path),
                size,
            });
        }
        let state = Arc::new(JournalState::default());
        let (file, current) = create_segment(&dir, next, settings.fsync).map_err(io_error(&dir))?;
        segments.push(current);
        let writer = Writer {
            dir: dir.clone(),
            _lock: lock,
            file,
            segments,
            pending: Vec::new(),
            pending_records: 0,
            payload: Vec::new(),
            unsynced: false,
            last_sync: Instant::now(),
            roll_failed: false,
            settings,
            state: Arc::clone(&state),
        };
        writer.publish();
        let (tx, rx) = sync_channel(writer.settings.queue.max(1));
        let thread = std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || writer.run(rx))
            .map_err(io_error(&dir))?;
        Ok(Self {
            tx: Some(tx),
            state,
            thread: Some(thread),
            dir,
        })
    }

    /// Queues `record` for the journal without waiting. A refusal is counted (and logged now
    /// and then): the caller need not do more than count it too, if it wants.
    pub fn append(&self, record: impl Into<Arc<Record>>) -> Result<(), Refused> {
        if self.state.full.load(Ordering::Relaxed) {
            self.state.refused_full.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::Full);
        }
        let Some(tx) = &self.tx else {
            return Err(Refused::Closed);
        };
        match tx.try_send(Command::Append(record.into())) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                let n = self.state.refused_queue.fetch_add(1, Ordering::Relaxed);
                if n % 1000 == 0 {
                    log::error!(
                        "journal {}: the disk cannot keep up, {} missed writes not journaled (they cannot be replayed)",
                        self.dir.display(),
                        n + 1
                    );
                }
                Err(Refused::Queue)
            }
            Err(TrySendError::Disconnected(_)) => {
                self.state.failed.fetch_add(1, Ordering::Relaxed);
                Err(Refused::Closed)
            }
        }
    }

    /// Waits until every record appended before is written and synced to disk, whatever the
    /// fsync policy.
    pub fn flush(&self) -> io::Result<()> {
        let (done, wait) = sync_channel(1);
        self.command(Command::Flush(done))?;
        wait.recv().map_err(|_| gone())?
    }

    /// Removes the segments up to `sequence` (included) once replay no longer needs them,
    /// except the one being written; returns how many were removed. Space freed below the cap
    /// lets the journal take records again.
    pub fn release_through(&self, sequence: u64) -> io::Result<u64> {
        let (done, wait) = sync_channel(1);
        self.command(Command::Release(sequence, done))?;
        wait.recv().map_err(|_| gone())?
    }

    /// The counters and flags, shared (for metrics and readiness).
    pub fn state(&self) -> &Arc<JournalState> {
        &self.state
    }

    pub fn stats(&self) -> JournalStats {
        self.state.snapshot()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes what is queued, syncs (unless the policy is `never`), releases the directory
    /// lock and waits for all of that.
    pub fn close(mut self) -> io::Result<()> {
        self.tx = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("the journal writer thread panicked")),
            None => Ok(()),
        }
    }

    fn command(&self, command: Command) -> io::Result<()> {
        let tx = self.tx.as_ref().ok_or_else(gone)?;
        tx.send(command).map_err(|_| gone())
    }
}

fn gone() -> io::Error {
    io::Error::other("the journal writer thread has stopped")
}

/// Recovers the last segment of a journal found on disk: truncates it to its last valid
/// record, or removes it when it holds none (a crash right after it was created, or a run
/// that journaled nothing). `Ok(false)` when it was removed.
fn recover(dir: &Path, sequence: u64) -> Result<bool, OpenError> {
    let path = dir::segment_path(dir, sequence);
    let io_error = |error| OpenError::Io {
        path: path.clone(),
        error,
    };
    // At most a segment's size and one record: read whole, once, at start-up.
    let bytes = std::fs::read(&path).map_err(io_error)?;
    let valid_len = match segment::scan(&bytes) {
        Err(HeaderError::Short { .. }) => HEADER_LEN.min(bytes.len()),
        Err(error) => return Err(OpenError::Segment { path, error }),
        Ok(scan) => {
            if scan.tail != Tail::Clean {
                let why = match scan.tail {
                    Tail::Corrupt(fault) => fault.to_string(),
                    _ => "an append cut short".to_owned(),
                };
                log::warn!(
                    "journal segment {}: {} records recovered, {} bytes after them dropped ({why})",
                    path.display(),
                    scan.records.len(),
                    bytes.len() - scan.valid_len
                );
            }
            scan.valid_len
        }
    };
    if valid_len <= HEADER_LEN {
        std::fs::remove_file(&path).map_err(io_error)?;
        dir::sync_dir(dir).map_err(io_error)?;
        return Ok(false);
    }
    if valid_len < bytes.len() {
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io_error)?;
        file.set_len(valid_len as u64).map_err(io_error)?;
        file.sync_all().map_err(io_error)?;
    }
    Ok(true)
}

/// The creation time in a segment's header, or 0 when it cannot be read (the reader reports
/// such a segment when it gets there).
fn created_micros(path: &Path) -> i64 {
    let mut header = [0u8; HEADER_LEN];
    File::open(path)
        .and_then(|f| f.read_exact_at(&mut header, 0))
        .ok()
        .and_then(|()| SegmentHeader::decode(&header).ok())
        .map_or(0, |h| h.created_micros)
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Creates segment `sequence` with its header, durable unless the policy says never.
fn create_segment(dir: &Path, sequence: u64, fsync: FsyncPolicy) -> io::Result<(File, Segment)> {
    let created_micros = now_micros();
    let header = SegmentHeader {
        sequence,
        created_micros,
    }
    .encode();
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dir::segment_path(dir, sequence))?;
    file.write_all_at(&header, 0)?;
    if fsync != FsyncPolicy::Never {
        file.sync_data()?;
        dir::sync_dir(dir)?;
    }
    Ok((
        file,
        Segment {
            sequence,
            created_micros,
            size: HEADER_LEN as u64,
        },
    ))
}

/// A segment on disk, as the writer accounts for it.
#[derive(Debug, Clone, Copy)]
struct Segment {
    sequence: u64,
    created_micros: i64,
    size: u64,
}

/// The writer thread's state.
struct Writer {
    dir: PathBuf,
    /// Held until the thread ends, after the last sync.
    _lock: DirLock,
    /// The current segment, the last of `segments`.
    file: File,
    segments: Vec<Segment>,
    /// Frames gathered for one write.
    pending: Vec<u8>,
    pending_records: u64,
    /// Scratch space for one record's encoding.
    payload: Vec<u8>,
    /// Bytes were written since the last sync.
    unsynced: bool,
    last_sync: Instant,
    /// The last attempt to start a new segment failed (logged once; retried at each record).
    roll_failed: bool,
    settings: JournalSettings,
    state: Arc<JournalState>,
}

impl Writer {
    fn run(mut self, rx: Receiver<Command>) -> io::Result<()> {
        loop {
            let first = match (self.settings.fsync, self.unsynced) {
                (FsyncPolicy::Interval(every), true) => {
                    match rx.recv_timeout(every.saturating_sub(self.last_sync.elapsed())) {
                        Ok(command) => command,
                        Err(RecvTimeoutError::Timeout) => {
                            let _ = self.sync();
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                _ => match rx.recv() {
                    Ok(command) => command,
                    Err(_) => break,
                },
            };
            // Group commit: take what else is queued, write it at once, sync once.
            let mut flushes = Vec::new();
            self.handle(first, &mut flushes);
            while self.pending.len() < GROUP_BYTES {
                match rx.try_recv() {
                    Ok(command) => self.handle(command, &mut flushes),
                    Err(_) => break,
                }
            }
            let written = self.write_pending();
            let due = match self.settings.fsync {
                FsyncPolicy::Always => true,
                FsyncPolicy::Interval(every) => self.last_sync.elapsed() >= every,
                FsyncPolicy::Never => false,
            };
            let synced = if due || !flushes.is_empty() {
                self.sync()
            } else {
                Ok(())
            };
            for done in flushes {
                let _ = done.send(match (&written, &synced) {
                    (Err(e), _) | (Ok(()), Err(e)) => Err(io::Error::new(e.kind(), e.to_string())),
                    (Ok(()), Ok(())) => Ok(()),
                });
            }
        }
        self.write_pending()?;
        match self.settings.fsync {
            FsyncPolicy::Never => Ok(()),
            _ => self.sync(),
        }
    }

    fn handle(&mut self, command: Command, flushes: &mut Vec<SyncSender<io::Result<()>>>) {
        match command {
            Command::Append(record) => self.append(&record),
            Command::Flush(done) => flushes.push(done),
            Command::Release(through, done) => {
                let _ = done.send(self.release(through));
            }
        }
    }

    fn current(&self) -> &Segment {
        // `segments` always ends with the current segment: `open` pushes it first, `roll`
        // replaces it, `release` keeps it.
        &self.segments[self.segments.len() - 1]
    }

    fn total(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum::<u64>() + self.pending.len() as u64
    }

    fn append(&mut self, record: &Record) {
        if self.state.full.load(Ordering::Relaxed) {
            self.state.refused_full.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.payload.clear();
        record.encode(&mut self.payload);
        let roll = self.current().size + self.pending.len() as u64 >= self.settings.segment_size;
        // The cap counts the next segment's header too when this record starts one.
        let needed = segment::frame_len(self.payload.len()) as u64
            + if roll { HEADER_LEN as u64 } else { 0 };
        if self.total() + needed > self.settings.max_size {
            self.state.full.store(true, Ordering::Relaxed);
            self.state.refused_full.fetch_add(1, Ordering::Relaxed);
            log::error!(
                "journal {} reached its size cap of {} bytes: further missed writes are not journaled (and cannot be replayed) until replay releases space; raise --journal-max-size or replay",
                self.dir.display(),
                self.settings.max_size
            );
            return;
        }
        if roll {
            let _ = self.write_pending();
            self.roll();
        }
        if segment::put_frame(&mut self.pending, &self.payload).is_none() {
            self.state.failed.fetch_add(1, Ordering::Relaxed);
            log::error!(
                "journal {}: a missed write of {} bytes is larger than a journal record may be; not journaled",
                self.dir.display(),
                self.payload.len()
            );
            return;
        }
        self.pending_records += 1;
    }

    /// Writes the gathered frames at the end of the current segment. On failure the segment is
    /// cut back to where it was, so that it never holds a torn frame before later ones.
    fn write_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let at = self.current().size;
        let records = std::mem::take(&mut self.pending_records);
        let result = self.file.write_all_at(&self.pending, at);
        match &result {
            Ok(()) => {
                let n = self.pending.len() as u64;
                if let Some(current) = self.segments.last_mut() {
                    current.size += n;
                }
                self.unsynced = true;
                self.state.appended.fetch_add(records, Ordering::Relaxed);
                self.state.failing.store(false, Ordering::Relaxed);
            }
            Err(e) => {
                self.state.failed.fetch_add(records, Ordering::Relaxed);
                if !self.state.failing.swap(true, Ordering::Relaxed) {
                    log::error!(
                        "journal {}: cannot write: {e}; missed writes are not journaled while this lasts",
                        self.dir.display()
                    );
                }
                let _ = self.file.set_len(at);
            }
        }
        self.pending.clear();
        self.publish();
        result
    }

    fn sync(&mut self) -> io::Result<()> {
        self.last_sync = Instant::now();
        if !self.unsynced {
            return Ok(());
        }
        self.unsynced = false;
        self.state.syncs.fetch_add(1, Ordering::Relaxed);
        self.file.sync_data().inspect_err(|e| {
            // After a failed fsync the kernel may have dropped the dirty pages: what was
            // written since the last good sync may be gone.
            self.state.failing.store(true, Ordering::Relaxed);
            log::error!("journal {}: cannot sync: {e}", self.dir.display());
        })
    }

    /// Closes the current segment and starts the next one. On failure the current segment
    /// takes the records meanwhile, and the next append tries again.
    fn roll(&mut self) {
        if self.settings.fsync != FsyncPolicy::Never {
            let _ = self.sync();
        }
        let sequence = self.current().sequence + 1;
        match create_segment(&self.dir, sequence, self.settings.fsync) {
            Ok((file, segment)) => {
                self.file = file;
                self.segments.push(segment);
                self.unsynced = false;
                self.roll_failed = false;
                self.publish();
            }
            Err(e) => {
                if !self.roll_failed {
                    self.roll_failed = true;
                    log::error!(
                        "journal {}: cannot start segment {sequence}: {e}; the current one grows meanwhile",
                        self.dir.display()
                    );
                }
            }
        }
    }

    fn release(&mut self, through: u64) -> io::Result<u64> {
        let current = self.current().sequence;
        let mut removed = 0;
        let mut result = Ok(());
        self.segments.retain(|s| {
            if s.sequence > through || s.sequence == current || result.is_err() {
                return true;
            }
            match std::fs::remove_file(dir::segment_path(&self.dir, s.sequence)) {
                Ok(()) => {
                    removed += 1;
                    false
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                Err(e) => {
                    result = Err(e);
                    true
                }
            }
        });
        if removed > 0 {
            if let Err(e) = dir::sync_dir(&self.dir) {
                result = result.and(Err(e));
            }
        }
        if self.state.full.load(Ordering::Relaxed) && self.total() < self.settings.max_size {
            self.state.full.store(false, Ordering::Relaxed);
            log::info!(
                "journal {}: space released, missed writes are journaled again",
                self.dir.display()
            );
        }
        self.publish();
        result.map(|()| removed)
    }

    /// Copies the sizes into the shared state.
    fn publish(&self) {
        let segments = &self.segments;
        self.state
            .bytes
            .store(segments.iter().map(|s| s.size).sum(), Ordering::Relaxed);
        self.state
            .segments
            .store(segments.len() as u64, Ordering::Relaxed);
        let oldest = segments
            .iter()
            .find(|s| s.size > HEADER_LEN as u64)
            .map_or(0, |s| s.created_micros);
        self.state.oldest_micros.store(oldest, Ordering::Relaxed);
    }
}
