//! Rows results: decoding without copies, and building synthetic ones.
//!
//! The proxy walks rows to compare the two clusters' answers and to rewrite `system.local` and
//! `system.peers`; it builds rows of its own to advertise proxy instances as peers. Cells are
//! borrowed from the body and the row content is validated to the byte.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, DecodeErrorKind};
use crate::frame::ProtocolVersion;
use crate::message::metadata::RowsMetadata;
use crate::message::result_kind::ResultKind;
use crate::wire::{self, Reader};

/// A Rows result: `<metadata><rows_count><rows_content>`.
///
/// Decoding reads the metadata and the row count and checks that the content could hold that
/// many rows; [`Rows::iter`] walks the rows one at a time.
#[derive(Clone)]
pub struct Rows<'a> {
    pub metadata: RowsMetadata<'a>,
    row_count: usize,
    /// The whole body, so that errors found while iterating carry body offsets.
    body: &'a [u8],
    /// Where the rows content starts in `body`; it runs to the end of the body.
    content_at: usize,
}

impl<'a> Rows<'a> {
    /// Reads the Rows result that starts at the reader's position (after the kind) and runs to
    /// the end of the body.
    pub(crate) fn read(
        r: &mut Reader<'a>,
        body: &'a [u8],
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let metadata = RowsMetadata::read(r, version)?;
        let count_at = r.position();
        let row_count = r.count()?;
        let columns = metadata.column_count();
        // Every cell takes at least its 4-byte length: refuse counts the content cannot hold
        // before anyone iterates, and rows without columns (which CQL cannot produce and which
        // would make a huge count cost time without bytes).
        let min_bytes = row_count
            .checked_mul(columns)
            .and_then(|c| c.checked_mul(4));
        if columns == 0 && row_count > 0 {
            return Err(Reader::error_at(
                count_at,
                DecodeErrorKind::InvalidValue {
                    field: "row count of a result without columns",
                    value: row_count as i64,
                },
            ));
        }
        match min_bytes {
            Some(n) if n <= r.remaining() => {}
            _ => {
                return Err(r.error(DecodeErrorKind::Truncated {
                    needed: min_bytes.unwrap_or(usize::MAX),
                    available: r.remaining(),
                }));
            }
        }
        Ok(Self {
            metadata,
            row_count,
            body,
            content_at: r.position(),
        })
    }

    pub(crate) fn write(&self, out: &mut BytesMut) {
        self.metadata.write(out);
        wire::put_count(out, self.row_count);
        out.put_slice(self.content());
    }

    /// The number of rows announced.
    pub fn row_count(&self) -> usize {
        self.row_count
    }

    pub fn column_count(&self) -> usize {
        self.metadata.column_count()
    }

    /// The raw rows content (for forwarding rows unchanged).
    pub fn content(&self) -> &'a [u8] {
        self.body.get(self.content_at..).unwrap_or(&[])
    }

    /// The rows, in order. Each item is a row whose cells were checked, or the error that
    /// ended the walk; after the last row, bytes left over are an error too.
    pub fn iter(&self) -> RowIter<'a> {
        RowIter {
            reader: Reader::starting_at(self.body, self.content_at),
            rows_left: self.row_count,
            columns: self.column_count(),
            done: false,
        }
    }

    /// Walks every row, checking that the content holds exactly the announced rows.
    pub fn validate(&self) -> Result<(), DecodeError> {
        self.iter().try_for_each(|row| row.map(|_| ()))
    }
}

impl fmt::Debug for Rows<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rows")
            .field("metadata", &self.metadata)
            .field("row_count", &self.row_count)
            .field("content_bytes", &self.content().len())
            .finish()
    }
}

impl PartialEq for Rows<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.metadata == other.metadata
            && self.row_count == other.row_count
            && self.content() == other.content()
    }
}

impl Eq for Rows<'_> {}

/// Iterator over the rows of a [`Rows`] result.
#[derive(Debug, Clone)]
pub struct RowIter<'a> {
    reader: Reader<'a>,
    rows_left: usize,
    columns: usize,
    done: bool,
}

impl<'a> Iterator for RowIter<'a> {
    type Item = Result<Row<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.rows_left == 0 {
            self.done = true;
            return match self.reader.finish() {
                Ok(()) => None,
                Err(e) => Some(Err(e)),
            };
        }
        self.rows_left -= 1;
        let start = self.reader.position();
        for _ in 0..self.columns {
            if let Err(e) = self.reader.bytes() {
                self.done = true;
                return Some(Err(e));
            }
        }
        Some(Ok(Row {
            raw: self.reader.since(start),
            offset: start,
            columns: self.columns,
        }))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.done {
            (0, Some(0))
        } else {
            (0, Some(self.rows_left + 1))
        }
    }
}

/// One row: its cells, borrowed from the body.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Row<'a> {
    raw: &'a [u8],
    offset: usize,
    columns: usize,
}

impl<'a> Row<'a> {
    /// The cells in column order; `None` is a null cell.
    pub fn cells(&self) -> Cells<'a> {
        Cells {
            reader: Reader::new(self.raw),
            left: self.columns,
        }
    }

    /// Cell `index`: `None` past the last column, `Some(None)` for a null.
    pub fn cell(&self, index: usize) -> Option<Option<&'a [u8]>> {
        self.cells().nth(index)
    }

    /// The row's encoded cells, for copying it unchanged into another result.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// Where the row starts in the body.
    pub fn offset(&self) -> usize {
        self.offset
    }
}

impl fmt::Debug for Row<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.cells()).finish()
    }
}

/// Iterator over the cells of a [`Row`].
#[derive(Debug, Clone)]
pub struct Cells<'a> {
    reader: Reader<'a>,
    left: usize,
}

impl<'a> Iterator for Cells<'a> {
    type Item = Option<&'a [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // The row was walked before it was handed out: this cannot fail, and would end the
        // iteration if it did.
        self.reader.bytes().ok()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Cells<'_> {}

/// Misuse of a [`RowsWriter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowsWriterError {
    /// A row had `got` cells where the metadata has `expected` columns.
    CellCount { expected: usize, got: usize },
    /// The result already holds as many rows as an `[int]` can count.
    TooManyRows,
}

impl fmt::Display for RowsWriterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CellCount { expected, got } => {
                write!(f, "row has {got} cells, the result has {expected} columns")
            }
            Self::TooManyRows => write!(f, "too many rows for one result"),
        }
    }
}

impl std::error::Error for RowsWriterError {}

/// Builds a complete RESULT Rows body (kind included) row by row: the proxy's synthetic
/// `system.local` and `system.peers` answers.
#[derive(Debug)]
pub struct RowsWriter {
    out: BytesMut,
    columns: usize,
    count_at: usize,
    rows: i32,
}

impl RowsWriter {
    pub fn new(metadata: &RowsMetadata<'_>) -> Self {
        let mut out = BytesMut::with_capacity(256);
        out.put_i32(ResultKind::ROWS.0);
        metadata.write(&mut out);
        let count_at = out.len();
        out.put_i32(0);
        Self {
            out,
            columns: metadata.column_count(),
            count_at,
            rows: 0,
        }
    }

    /// Appends a row; `None` cells are nulls. A row with the wrong number of cells is not
    /// written.
    pub fn push_row<'c>(
        &mut self,
        cells: impl IntoIterator<Item = Option<&'c [u8]>>,
    ) -> Result<(), RowsWriterError> {
        let rows = self
            .rows
            .checked_add(1)
            .ok_or(RowsWriterError::TooManyRows)?;
        let start = self.out.len();
        let mut got = 0;
        for cell in cells {
            got += 1;
            wire::put_bytes(&mut self.out, cell);
        }
        if got != self.columns {
            self.out.truncate(start);
            return Err(RowsWriterError::CellCount {
                expected: self.columns,
                got,
            });
        }
        self.rows = rows;
        Ok(())
    }

    /// Appends an already encoded row (e.g. [`Row::raw`] of a decoded result with the same
    /// columns).
    pub fn push_raw_row(&mut self, row: &Row<'_>) -> Result<(), RowsWriterError> {
        if row.columns != self.columns {
            return Err(RowsWriterError::CellCount {
                expected: self.columns,
                got: row.columns,
            });
        }
        self.rows = self
            .rows
            .checked_add(1)
            .ok_or(RowsWriterError::TooManyRows)?;
        self.out.put_slice(row.raw);
        Ok(())
    }

    pub fn row_count(&self) -> usize {
        self.rows as usize
    }

    /// A whole RESULT body of `rows` of owned cells (`None`: null), as test clusters and
    /// tests build answers.
    pub fn body_of(
        metadata: &RowsMetadata<'_>,
        rows: &[Vec<Option<Vec<u8>>>],
    ) -> Result<Bytes, RowsWriterError> {
        let mut writer = Self::new(metadata);
        for row in rows {
            writer.push_row(row.iter().map(|c| c.as_deref()))?;
        }
        Ok(writer.finish())
    }

    /// The RESULT body.
    pub fn finish(mut self) -> Bytes {
        let count = self.rows.to_be_bytes();
        if let Some(slot) = self.out.get_mut(self.count_at..self.count_at + 4) {
            slot.copy_from_slice(&count);
        }
        self.out.freeze()
    }
}
