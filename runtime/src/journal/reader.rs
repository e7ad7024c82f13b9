//! Reading a journal back in order, from a position a replay saved as its checkpoint.
//!
//! The reader streams each segment a frame at a time (memory bounded by the largest record),
//! and may follow a journal that is still being written: the end of the newest segment, or an
//! append there still in progress, is "no more records for now", and a later call goes on from
//! the same place.

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};

use cqlmirror_core::DecodeError;
use cqlmirror_core::journal::Record;
use cqlmirror_core::journal::segment::{
    FRAME_HEADER_LEN, FrameFault, FrameHeader, HEADER_LEN, HeaderError, SegmentHeader,
};

use super::dir;

/// A place in the journal: a segment and a byte offset in it. A replay checkpoint is the
/// [`Entry::next`] of the last record it applied; positions order as the records do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

impl Position {
    /// Before the first record of the journal.
    pub const START: Self = Self {
        segment: 0,
        offset: 0,
    };
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.segment, self.offset)
    }
}

/// One record read back, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub at: Position,
    /// Where the record after it starts: the checkpoint once this one is applied.
    pub next: Position,
    pub record: Record,
}

/// A part of the journal that cannot be read. The reader goes on after it: with the next
/// record when only a record's content is unreadable, with the next segment otherwise.
#[derive(Debug)]
pub enum ReadError {
    Io {
        path: PathBuf,
        error: io::Error,
    },
    /// A segment's header; the segment is skipped.
    Header {
        path: PathBuf,
        error: HeaderError,
    },
    /// A segment whose header names another sequence than its file name (a file copied or
    /// renamed by hand); skipped, as its place in the order is unknown.
    Misnamed {
        path: PathBuf,
        sequence: u64,
    },
    /// A damaged or torn frame in a segment that is not the newest: the rest of that segment
    /// is skipped.
    Frame {
        path: PathBuf,
        offset: u64,
        fault: Option<FrameFault>,
    },
    /// A frame whose checksum holds but whose record this version cannot decode (a newer
    /// format); the record is skipped.
    Record {
        path: PathBuf,
        offset: u64,
        error: DecodeError,
    },
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, error } => write!(f, "journal {}: {error}", path.display()),
            Self::Header { path, error } => {
                write!(f, "journal segment {}: {error}; skipped", path.display())
            }
            Self::Misnamed { path, sequence } => write!(
                f,
                "journal segment {} holds segment {sequence}: renamed or copied by hand; skipped",
                path.display()
            ),
            Self::Frame {
                path,
                offset,
                fault: Some(fault),
            } => write!(
                f,
                "journal segment {} at byte {offset}: {fault}; the rest of the segment is skipped",
                path.display()
            ),
            Self::Frame { path, offset, .. } => write!(
                f,
                "journal segment {} ends inside a record at byte {offset}; the rest is skipped",
                path.display()
            ),
            Self::Record {
                path,
                offset,
                error,
            } => write!(
                f,
                "journal segment {} at byte {offset}: unreadable record ({error}); skipped",
                path.display()
            ),
        }
    }
}

impl std::error::Error for ReadError {}

/// Reads records in order from a position on.
#[derive(Debug)]
pub struct JournalReader {
    dir: PathBuf,
    /// Where the next record is looked for.
    position: Position,
    open: Option<BufReader<File>>,
    /// A torn frame was found at `position` while a later segment existed: it is read once
    /// more before it counts as damage, as the writer may have finished it and rolled to the
    /// next segment between the read and the look for a later segment.
    torn_rechecked: bool,
}

/// What reading a frame found.
enum Next {
    Entry(Box<Entry>),
    /// The end of the segment's bytes so far, possibly inside a frame (`torn`).
    End {
        torn: bool,
    },
}

impl JournalReader {
    /// A reader of the journal in `dir` from `from` on: the record starting there, or the
    /// first of the first segment after it when that segment is gone (released).
    pub fn open(dir: &Path, from: Position) -> Self {
        Self {
            dir: dir.to_owned(),
            position: from,
            open: None,
            torn_rechecked: false,
        }
    }

    /// Where the next record is looked for.
    pub const fn position(&self) -> Position {
        self.position
    }

    /// The next record; `None` when there is none yet (later calls see records appended
    /// since). An error is returned once, and reading goes on after the damage.
    pub fn next_entry(&mut self) -> Option<Result<Entry, ReadError>> {
        loop {
            if self.open.is_none() {
                match self.open_segment() {
                    Ok(true) => {}
                    Ok(false) => return None,
                    Err(e) => return Some(Err(e)),
                }
            }
            let path = self.path();
            let at = self.position;
            let read = match self.open.as_mut() {
                Some(file) => read_frame(file, at),
                None => continue,
            };
            match read {
                Ok(Next::Entry(entry)) => {
                    self.torn_rechecked = false;
                    self.position = entry.next;
                    return Some(Ok(*entry));
                }
                Ok(Next::End { torn }) => {
                    // Read again next time: the writer may append to this very segment.
                    self.open = None;
                    match self.later_segment() {
                        Ok(Some(_)) if torn && !self.torn_rechecked => {
                            self.torn_rechecked = true;
                        }
                        Ok(Some(next)) => {
                            self.torn_rechecked = false;
                            self.position = Position {
                                segment: next,
                                offset: 0,
                            };
                            if torn {
                                return Some(Err(ReadError::Frame {
                                    path,
                                    offset: at.offset,
                                    fault: None,
                                }));
                            }
                        }
                        // The newest segment: a torn frame is an append in progress.
                        Ok(None) => return None,
                        Err(error) => return Some(Err(ReadError::Io { path, error })),
                    }
                }
                Err(Damage::Frame(fault)) => {
                    self.skip_segment();
                    return Some(Err(ReadError::Frame {
                        path,
                        offset: at.offset,
                        fault: Some(fault),
                    }));
                }
                Err(Damage::Record { next, error }) => {
                    self.position = next;
                    return Some(Err(ReadError::Record {
                        path,
                        offset: at.offset,
                        error,
                    }));
                }
                Err(Damage::Io(error)) => {
                    self.open = None;
                    return Some(Err(ReadError::Io { path, error }));
                }
            }
        }
    }

    fn path(&self) -> PathBuf {
        dir::segment_path(&self.dir, self.position.segment)
    }

    fn skip_segment(&mut self) {
        self.open = None;
        self.position = Position {
            segment: self.position.segment.saturating_add(1),
            offset: 0,
        };
    }

    /// The first segment after the current one, if there is one yet.
    fn later_segment(&self) -> io::Result<Option<u64>> {
        let segments = dir::segments(&self.dir)?;
        Ok(segments.into_iter().find(|&s| s > self.position.segment))
    }

    /// Opens the segment of the position, or the first one after it, and seeks to the
    /// position. `Ok(false)` when there is no such segment.
    fn open_segment(&mut self) -> Result<bool, ReadError> {
        let io_error = |path: PathBuf| move |error| ReadError::Io { path, error };
        let segments = dir::segments(&self.dir).map_err(io_error(self.dir.clone()))?;
        let Some(segment) = segments.into_iter().find(|&s| s >= self.position.segment) else {
            return Ok(false);
        };
        if segment != self.position.segment {
            self.position = Position { segment, offset: 0 };
        }
        let path = self.path();
        let mut file = BufReader::new(File::open(&path).map_err(io_error(path.clone()))?);
        let mut header = [0u8; HEADER_LEN];
        let n = read_full(&mut file, &mut header).map_err(io_error(path.clone()))?;
        match SegmentHeader::decode(&header[..n]) {
            Ok(header) if header.sequence == segment => {}
            Ok(header) => {
                self.skip_segment();
                return Err(ReadError::Misnamed {
                    path,
                    sequence: header.sequence,
                });
            }
            Err(error) => {
                let newest = self
                    .later_segment()
                    .map_err(io_error(self.dir.clone()))?
                    .is_none();
                if newest && matches!(error, HeaderError::Short { .. }) {
                    // Being created right now.
                    return Ok(false);
                }
                self.skip_segment();
                return Err(ReadError::Header { path, error });
            }
        }
        let offset = self.position.offset.max(HEADER_LEN as u64);
        file.seek(SeekFrom::Start(offset))
            .map_err(io_error(path.clone()))?;
        self.position.offset = offset;
        self.open = Some(file);
        Ok(true)
    }
}

impl Iterator for JournalReader {
    type Item = Result<Entry, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_entry()
    }
}

enum Damage {
    Frame(FrameFault),
    Record { next: Position, error: DecodeError },
    Io(io::Error),
}

fn read_frame(file: &mut BufReader<File>, at: Position) -> Result<Next, Damage> {
    let mut head = [0u8; FRAME_HEADER_LEN];
    match read_full(file, &mut head).map_err(Damage::Io)? {
        0 => return Ok(Next::End { torn: false }),
        FRAME_HEADER_LEN => {}
        _ => return Ok(Next::End { torn: true }),
    }
    let header = FrameHeader::parse(head).map_err(Damage::Frame)?;
    let length = u64::from(header.length);
    // Grows with what is actually there: a damaged length never allocates more than the file.
    let mut payload = Vec::new();
    file.by_ref()
        .take(length)
        .read_to_end(&mut payload)
        .map_err(Damage::Io)?;
    if (payload.len() as u64) < length {
        return Ok(Next::End { torn: true });
    }
    header.check(&payload).map_err(Damage::Frame)?;
    let next = Position {
        segment: at.segment,
        offset: at.offset + FRAME_HEADER_LEN as u64 + length,
    };
    match Record::decode(&payload) {
        Ok(record) => Ok(Next::Entry(Box::new(Entry { at, next, record }))),
        Err(error) => Err(Damage::Record { next, error }),
    }
}

/// Reads until `buf` is full or the file ends; the count read.
fn read_full(file: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
