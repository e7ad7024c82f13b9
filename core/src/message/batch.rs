//! BATCH: several statements, prepared or not, applied together.
//!
//! The proxy sends batches to both clusters, so it maps the prepared ids inside them to the
//! target's ids ([`Batch::map_prepared_ids`]) and gives them a default timestamp when they lack
//! one (see [`super::ensure_default_timestamp`]).

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, DecodeErrorKind};
use crate::frame::{Opcode, ProtocolVersion};
use crate::message::Body;
use crate::message::params::{Layout, QueryFlags, QueryParams, Values};
use crate::message::query::StatementText;
use crate::wire::{self, Consistency, Reader};

/// The `<type>` byte of a batch.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchType(pub u8);

impl BatchType {
    pub const LOGGED: Self = Self(0x00);
    pub const UNLOGGED: Self = Self(0x01);
    pub const COUNTER: Self = Self(0x02);
}

impl fmt::Debug for BatchType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::LOGGED => f.write_str("LOGGED"),
            Self::UNLOGGED => f.write_str("UNLOGGED"),
            Self::COUNTER => f.write_str("COUNTER"),
            Self(other) => write!(f, "BatchType(0x{other:02x})"),
        }
    }
}

/// What a batch statement runs: CQL text (kind 0) or a prepared id (kind 1).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Statement<'a> {
    Query(&'a str),
    Prepared(&'a [u8]),
}

impl fmt::Debug for Statement<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Query(text) => f.debug_tuple("Query").field(&StatementText(text)).finish(),
            Self::Prepared(id) => f.debug_tuple("Prepared").field(id).finish(),
        }
    }
}

/// One statement of a batch with its bound values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchStatement<'a> {
    pub statement: Statement<'a>,
    pub values: Values<'a>,
}

/// The statements of a batch: decoded ones borrow the wire bytes and are walked when iterated;
/// statements built for encoding borrow the caller's slice.
#[derive(Clone, Copy)]
pub struct Statements<'a>(Repr<'a>);

#[derive(Clone, Copy)]
enum Repr<'a> {
    Wire {
        raw: &'a [u8],
        count: u16,
        named: bool,
    },
    Slice(&'a [BatchStatement<'a>]),
}

impl<'a> Statements<'a> {
    pub const fn new(statements: &'a [BatchStatement<'a>]) -> Self {
        Self(Repr::Slice(statements))
    }

    pub const fn len(&self) -> usize {
        match self.0 {
            Repr::Wire { count, .. } => count as usize,
            Repr::Slice(s) => s.len(),
        }
    }

    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether values carry names (the batch flag 0x40). For statements built for encoding:
    /// whether any statement has named values.
    pub fn has_names(&self) -> bool {
        match self.0 {
            Repr::Wire { named, .. } => named,
            Repr::Slice(s) => s.iter().any(|st| st.values.has_names()),
        }
    }

    pub fn iter(&self) -> StatementsIter<'a> {
        StatementsIter {
            repr: self.0,
            reader: match self.0 {
                Repr::Wire { raw, .. } => Reader::new(raw),
                Repr::Slice(_) => Reader::new(&[]),
            },
            index: 0,
        }
    }
}

impl PartialEq for Statements<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Statements<'_> {}

impl fmt::Debug for Statements<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Iterator over [`Statements`].
#[derive(Clone)]
pub struct StatementsIter<'a> {
    repr: Repr<'a>,
    reader: Reader<'a>,
    index: usize,
}

impl fmt::Debug for StatementsIter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatementsIter")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl<'a> Iterator for StatementsIter<'a> {
    type Item = BatchStatement<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        let i = self.index;
        self.index += 1;
        match self.repr {
            Repr::Wire { count, named, .. } => {
                if i >= usize::from(count) {
                    return None;
                }
                // Validated when decoded: a failure here cannot happen and ends the iteration.
                read_statement(&mut self.reader, named).ok()
            }
            Repr::Slice(s) => s.get(i).copied(),
        }
    }
}

const KIND_QUERY: u8 = 0x00;
const KIND_PREPARED: u8 = 0x01;

fn read_statement<'a>(r: &mut Reader<'a>, named: bool) -> Result<BatchStatement<'a>, DecodeError> {
    let at = r.position();
    let statement = match r.u8()? {
        KIND_QUERY => Statement::Query(r.long_string()?),
        KIND_PREPARED => Statement::Prepared(r.short_bytes()?),
        kind => {
            return Err(Reader::error_at(
                at,
                DecodeErrorKind::InvalidValue {
                    field: "batch statement kind",
                    value: i64::from(kind),
                },
            ));
        }
    };
    let values = Values::decode(r, named)?;
    Ok(BatchStatement { statement, values })
}

/// A BATCH request: `<type><n><statement_1>...<statement_n><consistency><flags>`
/// `[<serial_consistency>][<timestamp>][<keyspace>][<now_in_seconds>]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch<'a> {
    pub batch_type: BatchType,
    pub statements: Statements<'a>,
    pub consistency: Consistency,
    pub serial_consistency: Option<Consistency>,
    /// The default write time, in microseconds since the epoch (flag 0x20).
    pub timestamp: Option<i64>,
    /// v5 (flag 0x80).
    pub keyspace: Option<&'a str>,
    /// v5 only (flag 0x100); not encoded for earlier versions.
    pub now_in_seconds: Option<i32>,
}

impl<'a> Batch<'a> {
    /// Decodes a batch, also returning where its flags and timestamp sit.
    ///
    /// Whether statement values carry names is given by a flag that comes after the
    /// statements, so the body is read both ways if need be: without names first (what every
    /// driver sends), then with names. A reading counts only if the flag it finds agrees with
    /// it and it fills the body exactly; should both readings qualify (a contrived body), the
    /// one without names wins.
    pub(crate) fn decode_with_layout(
        body: &'a [u8],
        version: ProtocolVersion,
    ) -> Result<(Self, Layout), DecodeError> {
        match Self::decode_as(body, version, false) {
            Ok(ok) => Ok(ok),
            Err(plain) => match Self::decode_as(body, version, true) {
                Ok(ok) => Ok(ok),
                // Report the reading that got further: it is the likelier intent.
                Err(named) if named.offset > plain.offset => Err(named),
                Err(_) => Err(plain),
            },
        }
    }

    fn decode_as(
        body: &'a [u8],
        version: ProtocolVersion,
        named: bool,
    ) -> Result<(Self, Layout), DecodeError> {
        let mut r = Reader::new(body);
        let batch_type = BatchType(r.u8()?);
        if batch_type.0 > BatchType::COUNTER.0 {
            return Err(Reader::error_at(
                0,
                DecodeErrorKind::InvalidValue {
                    field: "batch type",
                    value: i64::from(batch_type.0),
                },
            ));
        }
        let count = r.u16()?;
        let start = r.position();
        for _ in 0..count {
            read_statement(&mut r, named)?;
        }
        let raw = r.since(start);
        let (params, flags, layout) = QueryParams::decode_batch_trailer(&mut r, version)?;
        if flags.contains(QueryFlags::NAMES_FOR_VALUES) != named {
            return Err(Reader::error_at(
                layout.flags_at,
                DecodeErrorKind::InvalidValue {
                    field: "batch flags (names flag disagrees with the statements)",
                    value: i64::from(flags.bits()),
                },
            ));
        }
        r.finish()?;
        let batch = Self {
            batch_type,
            statements: Statements(Repr::Wire { raw, count, named }),
            consistency: params.consistency,
            serial_consistency: params.serial_consistency,
            timestamp: params.timestamp,
            keyspace: params.keyspace,
            now_in_seconds: params.now_in_seconds,
        };
        Ok((batch, layout))
    }

    /// The same batch with the prepared ids of its statements replaced: `map` gets each
    /// prepared id and returns the id to send instead, or `None` to keep it. Returns `body`
    /// itself (no copy) when nothing changes.
    pub fn map_prepared_ids(
        body: &Bytes,
        version: ProtocolVersion,
        map: impl FnMut(&[u8]) -> Option<Bytes>,
    ) -> Result<Bytes, DecodeError> {
        let (batch, _) = Batch::decode_with_layout(body, version)?;
        Self::map_ids_of(body, &batch.statements, map)
    }

    /// [`Self::map_prepared_ids`] for a body whose statements were decoded already:
    /// `statements` are those of `body`, or of a body whose statements are the same bytes up
    /// to the trailer (the same batch with a timestamp added).
    pub(crate) fn map_ids_of(
        body: &Bytes,
        statements: &Statements<'_>,
        mut map: impl FnMut(&[u8]) -> Option<Bytes>,
    ) -> Result<Bytes, DecodeError> {
        let named = statements.has_names();
        // Walk the statements again, now known to be well formed, noting where each id is.
        let mut r = Reader::new(body);
        r.skip(3)?;
        let mut out: Option<BytesMut> = None;
        let mut copied = 0;
        for _ in 0..statements.len() {
            let kind = r.u8()?;
            if kind == KIND_PREPARED {
                let id_at = r.position();
                let id = r.short_bytes()?;
                if let Some(new_id) = map(id) {
                    let out = out
                        .get_or_insert_with(|| BytesMut::with_capacity(body.len() + new_id.len()));
                    out.put_slice(body.get(copied..id_at).unwrap_or(&[]));
                    wire::put_short_bytes(out, &new_id);
                    copied = r.position();
                }
            } else {
                r.long_string()?;
            }
            Values::decode(&mut r, named)?;
        }
        Ok(match out {
            Some(mut out) => {
                out.put_slice(body.get(copied..).unwrap_or(&[]));
                out.freeze()
            }
            None => body.clone(),
        })
    }
}

impl<'a> Body<'a> for Batch<'a> {
    const OPCODE: Opcode = Opcode::BATCH;

    fn decode(body: &'a [u8], version: ProtocolVersion) -> Result<Self, DecodeError> {
        Self::decode_with_layout(body, version).map(|(b, _)| b)
    }

    fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) {
        out.put_u8(self.batch_type.0);
        let count = self.statements.len().min(usize::from(u16::MAX));
        out.put_u16(count as u16);
        let named = self.statements.has_names();
        for st in self.statements.iter().take(count) {
            match st.statement {
                Statement::Query(text) => {
                    out.put_u8(KIND_QUERY);
                    wire::put_long_string(out, text);
                }
                Statement::Prepared(id) => {
                    out.put_u8(KIND_PREPARED);
                    wire::put_short_bytes(out, id);
                }
            }
            st.values.encode(named, out);
        }
        let trailer = QueryParams {
            serial_consistency: self.serial_consistency,
            timestamp: self.timestamp,
            keyspace: self.keyspace,
            now_in_seconds: self.now_in_seconds,
            ..QueryParams::new(self.consistency)
        };
        let names = if named {
            QueryFlags::NAMES_FOR_VALUES
        } else {
            QueryFlags::empty()
        };
        trailer.encode_with(version, names, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{DefaultTimestamp, ensure_default_timestamp};
    use crate::wire::Value;

    #[test]
    fn ids_mapped_from_the_statements_of_the_unstamped_body() {
        let values = [Value::Bytes(b"k"), Value::Null];
        let entries = [
            BatchStatement {
                statement: Statement::Prepared(b"one"),
                values: Values::positional(&values),
            },
            BatchStatement {
                statement: Statement::Query("INSERT INTO t (k) VALUES (1)"),
                values: Values::positional(&[]),
            },
            BatchStatement {
                statement: Statement::Prepared(b"two"),
                values: Values::positional(&values[..1]),
            },
        ];
        for version in ProtocolVersion::ALL {
            let body = Batch {
                batch_type: BatchType::UNLOGGED,
                statements: Statements::new(&entries),
                consistency: Consistency::QUORUM,
                serial_consistency: None,
                timestamp: None,
                keyspace: None,
                now_in_seconds: None,
            }
            .to_bytes(version);
            let Ok(DefaultTimestamp::Inserted(stamped)) =
                ensure_default_timestamp(Opcode::BATCH, &body, version, 1_700_000_000_000_000)
            else {
                panic!("{version}: not stamped");
            };
            let map = |id: &[u8]| (id == b"two").then(|| Bytes::from_static(b"own-two"));
            let (decoded, _) = Batch::decode_with_layout(&body, version).unwrap();
            let walked = Batch::map_ids_of(&stamped, &decoded.statements, map).unwrap();
            let redecoded = Batch::map_prepared_ids(&stamped, version, map).unwrap();
            assert_eq!(walked, redecoded, "{version}");
            let mapped = Batch::decode(&walked, version).unwrap();
            let ids: Vec<_> = mapped
                .statements
                .iter()
                .filter_map(|s| match s.statement {
                    Statement::Prepared(id) => Some(id.to_vec()),
                    Statement::Query(_) => None,
                })
                .collect();
            assert_eq!(ids, vec![b"one".to_vec(), b"own-two".to_vec()], "{version}");
            assert_eq!(mapped.timestamp, Some(1_700_000_000_000_000), "{version}");
        }
    }
}
