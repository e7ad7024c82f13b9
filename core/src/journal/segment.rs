//! The journal's segment files: a header, then records framed with their length and a
//! CRC32C, and the recovery scan that finds where the valid part of a segment ends.
//!
//! # Layout (format 1)
//!
//! ```text
//! header (32 bytes):  magic "CQLMJRNL" | u16 format (1) | u16 header length (32)
//!                     | u64 sequence | i64 created at, µs since the Unix epoch
//!                     | u32 CRC32C of the 28 bytes before it
//! frame, repeated:    u32 payload length | u32 CRC32C of the length's 4 bytes and the payload
//!                     | payload (one encoded record)
//! ```
//!
//! Big-endian. The frame checksum covers the length too, so a flipped bit in a length is
//! caught as corruption rather than read as a shorter or longer record. A segment is only ever
//! appended to, so a crash leaves at worst one torn frame at its end; a bit flipped on disk
//! makes a frame's checksum fail. Either way everything before that frame is intact and
//! everything from it on is dropped: nothing after a bad frame can be trusted to start at a
//! frame boundary.

use std::fmt;

use crc::{CRC_32_ISCSI, Crc};

/// The first bytes of every segment file.
pub const MAGIC: [u8; 8] = *b"CQLMJRNL";
/// The segment layout this code writes; opening any other is an error.
pub const SEGMENT_FORMAT: u16 = 1;
/// Length of a segment header; the header states it too, so a later format can grow it.
pub const HEADER_LEN: usize = 32;
/// Length of a frame's length and checksum.
pub const FRAME_HEADER_LEN: usize = 8;
/// The longest record payload accepted: a request frame is at most 256 MiB, so a record is
/// below twice that. A longer length can only be corruption.
pub const MAX_RECORD_LEN: u32 = 512 << 20;

const CRC32C: Crc<u32> = Crc::<u32>::new(&CRC_32_ISCSI);

/// What a segment header holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SegmentHeader {
    /// The segment's place in the journal: segments are read in increasing sequence.
    pub sequence: u64,
    /// When the segment was created, µs since the Unix epoch.
    pub created_micros: i64,
}

/// Why a segment header is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// The file ends inside the header (a crash while the segment was being created).
    Short { length: usize },
    /// Not a journal segment.
    Magic,
    /// A journal segment of a format this version does not read.
    Format { format: u16, header_len: u16 },
    /// The header's bytes were damaged.
    Checksum { expected: u32, actual: u32 },
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Short { length } => write!(
                f,
                "the segment header is torn: the file has {length} of its {HEADER_LEN} bytes"
            ),
            Self::Magic => write!(f, "not a cqlmirror journal segment (wrong magic bytes)"),
            Self::Format { format, header_len } => write!(
                f,
                "segment format {format} (header of {header_len} bytes) is not one this version reads ({SEGMENT_FORMAT})"
            ),
            Self::Checksum { expected, actual } => write!(
                f,
                "the segment header is corrupt: CRC32C 0x{actual:08x}, expected 0x{expected:08x}"
            ),
        }
    }
}

impl std::error::Error for HeaderError {}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..8].copy_from_slice(&MAGIC);
        out[8..10].copy_from_slice(&SEGMENT_FORMAT.to_be_bytes());
        out[10..12].copy_from_slice(&(HEADER_LEN as u16).to_be_bytes());
        out[12..20].copy_from_slice(&self.sequence.to_be_bytes());
        out[20..28].copy_from_slice(&self.created_micros.to_be_bytes());
        let crc = CRC32C.checksum(&out[..HEADER_LEN - 4]);
        out[HEADER_LEN - 4..].copy_from_slice(&crc.to_be_bytes());
        out
    }

    /// Reads the header at the start of `bytes` (a whole segment or just its start).
    pub fn decode(bytes: &[u8]) -> Result<Self, HeaderError> {
        let Some(h) = bytes.get(..HEADER_LEN) else {
            // A torn header that does not even hold the magic whole is still reported as
            // torn only if what is there is the start of the magic: anything else is not ours.
            let n = bytes.len().min(MAGIC.len());
            return Err(if bytes[..n] == MAGIC[..n] {
                HeaderError::Short {
                    length: bytes.len(),
                }
            } else {
                HeaderError::Magic
            });
        };
        if h[0..8] != MAGIC {
            return Err(HeaderError::Magic);
        }
        let format = u16::from_be_bytes([h[8], h[9]]);
        let header_len = u16::from_be_bytes([h[10], h[11]]);
        if format != SEGMENT_FORMAT || usize::from(header_len) != HEADER_LEN {
            return Err(HeaderError::Format { format, header_len });
        }
        let expected = u32::from_be_bytes([h[28], h[29], h[30], h[31]]);
        let actual = CRC32C.checksum(&h[..HEADER_LEN - 4]);
        if expected != actual {
            return Err(HeaderError::Checksum { expected, actual });
        }
        let mut sequence = [0u8; 8];
        sequence.copy_from_slice(&h[12..20]);
        let mut created = [0u8; 8];
        created.copy_from_slice(&h[20..28]);
        Ok(Self {
            sequence: u64::from_be_bytes(sequence),
            created_micros: i64::from_be_bytes(created),
        })
    }
}

/// Why a frame is not a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameFault {
    /// The length is beyond [`MAX_RECORD_LEN`].
    TooLong { length: u32 },
    /// The checksum does not match the length and payload.
    Checksum { expected: u32, actual: u32 },
}

impl fmt::Display for FrameFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong { length } => {
                write!(f, "record length {length} exceeds {MAX_RECORD_LEN}")
            }
            Self::Checksum { expected, actual } => {
                write!(f, "record CRC32C 0x{actual:08x}, expected 0x{expected:08x}")
            }
        }
    }
}

/// A frame's length and checksum, read before its payload (so a streaming reader knows how
/// much to read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub length: u32,
    pub crc: u32,
}

impl FrameHeader {
    pub fn parse(bytes: [u8; FRAME_HEADER_LEN]) -> Result<Self, FrameFault> {
        let length = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let crc = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        if length > MAX_RECORD_LEN {
            return Err(FrameFault::TooLong { length });
        }
        Ok(Self { length, crc })
    }

    /// Whether `payload` (exactly `length` bytes) is the one the checksum was made over.
    pub fn check(&self, payload: &[u8]) -> Result<(), FrameFault> {
        let actual = frame_crc(self.length, payload);
        if actual == self.crc {
            Ok(())
        } else {
            Err(FrameFault::Checksum {
                expected: self.crc,
                actual,
            })
        }
    }
}

fn frame_crc(length: u32, payload: &[u8]) -> u32 {
    let mut digest = CRC32C.digest();
    digest.update(&length.to_be_bytes());
    digest.update(payload);
    digest.finalize()
}

/// The bytes a payload of `len` bytes takes in a segment.
pub const fn frame_len(len: usize) -> usize {
    FRAME_HEADER_LEN + len
}

/// Appends `payload` as one frame. `None` when it is longer than [`MAX_RECORD_LEN`] (nothing
/// is written then): such a record cannot be read back, so it must not be written.
pub fn put_frame(out: &mut Vec<u8>, payload: &[u8]) -> Option<()> {
    let length = u32::try_from(payload.len())
        .ok()
        .filter(|&n| n <= MAX_RECORD_LEN)?;
    out.reserve(frame_len(payload.len()));
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&frame_crc(length, payload).to_be_bytes());
    out.extend_from_slice(payload);
    Some(())
}

/// The frame at `offset` of a segment's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A valid record's payload; the next frame starts at `next`.
    Record { payload: &'a [u8], next: usize },
    /// `offset` is the end of the bytes: no more frames.
    End,
    /// The bytes end inside this frame: an append cut short.
    Torn,
    /// The frame is damaged.
    Corrupt(FrameFault),
}

/// Reads the frame starting at `offset` of `bytes` (which start with the segment header).
pub fn read_frame(bytes: &[u8], offset: usize) -> Frame<'_> {
    let rest = bytes.get(offset..).unwrap_or(&[]);
    if rest.is_empty() {
        return Frame::End;
    }
    let Some((head, rest)) = rest.split_first_chunk::<FRAME_HEADER_LEN>() else {
        return Frame::Torn;
    };
    let header = match FrameHeader::parse(*head) {
        Ok(header) => header,
        Err(fault) => return Frame::Corrupt(fault),
    };
    // `length` is at most MAX_RECORD_LEN, which fits in usize.
    let length = header.length as usize;
    let Some(payload) = rest.get(..length) else {
        return Frame::Torn;
    };
    match header.check(payload) {
        Ok(()) => Frame::Record {
            payload,
            next: offset + frame_len(length),
        },
        Err(fault) => Frame::Corrupt(fault),
    }
}

/// A whole segment as found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan<'a> {
    pub header: SegmentHeader,
    /// The valid records in order, each with the offset its frame starts at.
    pub records: Vec<(usize, &'a [u8])>,
    /// Where the valid part ends: the length to truncate the segment to.
    pub valid_len: usize,
    /// What follows the valid part.
    pub tail: Tail,
}

/// What follows the valid part of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    /// Nothing: the segment ends after its last record.
    Clean,
    /// A frame cut short (a crash in the middle of an append).
    Torn,
    /// A damaged frame; whatever follows it is dropped with it.
    Corrupt(FrameFault),
}

/// Scans a segment's bytes: its header, its valid records up to the first torn or damaged
/// frame, and the length to truncate it to.
pub fn scan(bytes: &[u8]) -> Result<Scan<'_>, HeaderError> {
    let header = SegmentHeader::decode(bytes)?;
    let mut records = Vec::new();
    let mut offset = HEADER_LEN;
    let tail = loop {
        match read_frame(bytes, offset) {
            Frame::Record { payload, next } => {
                records.push((offset, payload));
                offset = next;
            }
            Frame::End => break Tail::Clean,
            Frame::Torn => break Tail::Torn,
            Frame::Corrupt(fault) => break Tail::Corrupt(fault),
        }
    };
    Ok(Scan {
        header,
        records,
        valid_len: offset,
        tail,
    })
}
