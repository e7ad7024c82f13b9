//! Column types (`[option]`s) as found in result and prepared metadata.
//!
//! Types nest (a list of maps of tuples ...). The decoder recurses, so nesting is capped at
//! [`MAX_TYPE_DEPTH`]: a hostile server must not be able to overflow the proxy's stack.

use std::fmt;

use bytes::{BufMut, BytesMut};

use crate::error::{DecodeError, DecodeErrorKind};
use crate::wire::{self, Reader};

/// How deep column types may nest: `list<int>` has depth 2. Real schemas stay in single
/// digits; this leaves ample room while bounding the decoder's recursion.
pub const MAX_TYPE_DEPTH: usize = 32;

/// A column type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ColumnType<'a> {
    /// 0x0000: a server-side type known by its Java class name.
    Custom(&'a str),
    Ascii,
    Bigint,
    Blob,
    Boolean,
    Counter,
    Decimal,
    Double,
    Float,
    Int,
    Timestamp,
    Uuid,
    /// `text` and `varchar`.
    Varchar,
    Varint,
    Timeuuid,
    Inet,
    Date,
    Time,
    Smallint,
    Tinyint,
    /// v5 (older versions send it as a custom type).
    Duration,
    List(Box<ColumnType<'a>>),
    Map(Box<(ColumnType<'a>, ColumnType<'a>)>),
    Set(Box<ColumnType<'a>>),
    Udt(Box<UdtType<'a>>),
    Tuple(Vec<ColumnType<'a>>),
}

/// A user-defined type: its keyspace, name and fields in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UdtType<'a> {
    pub keyspace: &'a str,
    pub name: &'a str,
    pub fields: Vec<(&'a str, ColumnType<'a>)>,
}

const CUSTOM: u16 = 0x0000;
const ASCII: u16 = 0x0001;
const BIGINT: u16 = 0x0002;
const BLOB: u16 = 0x0003;
const BOOLEAN: u16 = 0x0004;
const COUNTER: u16 = 0x0005;
const DECIMAL: u16 = 0x0006;
const DOUBLE: u16 = 0x0007;
const FLOAT: u16 = 0x0008;
const INT: u16 = 0x0009;
const TIMESTAMP: u16 = 0x000B;
const UUID: u16 = 0x000C;
const VARCHAR: u16 = 0x000D;
const VARINT: u16 = 0x000E;
const TIMEUUID: u16 = 0x000F;
const INET: u16 = 0x0010;
const DATE: u16 = 0x0011;
const TIME: u16 = 0x0012;
const SMALLINT: u16 = 0x0013;
const TINYINT: u16 = 0x0014;
const DURATION: u16 = 0x0015;
const LIST: u16 = 0x0020;
const MAP: u16 = 0x0021;
const SET: u16 = 0x0022;
const UDT: u16 = 0x0030;
const TUPLE: u16 = 0x0031;

impl<'a> ColumnType<'a> {
    /// The option id on the wire.
    pub const fn id(&self) -> u16 {
        match self {
            Self::Custom(_) => CUSTOM,
            Self::Ascii => ASCII,
            Self::Bigint => BIGINT,
            Self::Blob => BLOB,
            Self::Boolean => BOOLEAN,
            Self::Counter => COUNTER,
            Self::Decimal => DECIMAL,
            Self::Double => DOUBLE,
            Self::Float => FLOAT,
            Self::Int => INT,
            Self::Timestamp => TIMESTAMP,
            Self::Uuid => UUID,
            Self::Varchar => VARCHAR,
            Self::Varint => VARINT,
            Self::Timeuuid => TIMEUUID,
            Self::Inet => INET,
            Self::Date => DATE,
            Self::Time => TIME,
            Self::Smallint => SMALLINT,
            Self::Tinyint => TINYINT,
            Self::Duration => DURATION,
            Self::List(_) => LIST,
            Self::Map(_) => MAP,
            Self::Set(_) => SET,
            Self::Udt(_) => UDT,
            Self::Tuple(_) => TUPLE,
        }
    }

    /// How many levels this type nests: 1 for a native type.
    pub fn depth(&self) -> usize {
        1 + match self {
            Self::List(t) | Self::Set(t) => t.depth(),
            Self::Map(kv) => kv.0.depth().max(kv.1.depth()),
            Self::Udt(udt) => udt.fields.iter().map(|(_, t)| t.depth()).max().unwrap_or(0),
            Self::Tuple(ts) => ts.iter().map(ColumnType::depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    /// Reads an `[option]` type description.
    pub fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Self::decode_at(r, 1)
    }

    fn decode_at(r: &mut Reader<'a>, depth: usize) -> Result<Self, DecodeError> {
        if depth > MAX_TYPE_DEPTH {
            return Err(r.error(DecodeErrorKind::TooDeep {
                max: MAX_TYPE_DEPTH,
            }));
        }
        let at = r.position();
        let inner = |r: &mut Reader<'a>| Self::decode_at(r, depth + 1);
        Ok(match r.u16()? {
            CUSTOM => Self::Custom(r.string()?),
            ASCII => Self::Ascii,
            BIGINT => Self::Bigint,
            BLOB => Self::Blob,
            BOOLEAN => Self::Boolean,
            COUNTER => Self::Counter,
            DECIMAL => Self::Decimal,
            DOUBLE => Self::Double,
            FLOAT => Self::Float,
            INT => Self::Int,
            TIMESTAMP => Self::Timestamp,
            UUID => Self::Uuid,
            VARCHAR => Self::Varchar,
            VARINT => Self::Varint,
            TIMEUUID => Self::Timeuuid,
            INET => Self::Inet,
            DATE => Self::Date,
            TIME => Self::Time,
            SMALLINT => Self::Smallint,
            TINYINT => Self::Tinyint,
            DURATION => Self::Duration,
            LIST => Self::List(Box::new(inner(r)?)),
            MAP => {
                let key = inner(r)?;
                let value = inner(r)?;
                Self::Map(Box::new((key, value)))
            }
            SET => Self::Set(Box::new(inner(r)?)),
            UDT => {
                let keyspace = r.string()?;
                let name = r.string()?;
                let n = usize::from(r.u16()?);
                // A field takes at least a 2-byte name length and a 2-byte type id.
                let mut fields = Vec::with_capacity(n.min(r.remaining() / 4));
                for _ in 0..n {
                    fields.push((r.string()?, inner(r)?));
                }
                Self::Udt(Box::new(UdtType {
                    keyspace,
                    name,
                    fields,
                }))
            }
            TUPLE => {
                let n = usize::from(r.u16()?);
                let mut types = Vec::with_capacity(n.min(r.remaining() / 2));
                for _ in 0..n {
                    types.push(inner(r)?);
                }
                Self::Tuple(types)
            }
            id => {
                return Err(Reader::error_at(
                    at,
                    DecodeErrorKind::InvalidValue {
                        field: "column type id",
                        value: i64::from(id),
                    },
                ));
            }
        })
    }

    /// Writes the `[option]` type description.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u16(self.id());
        match self {
            Self::Custom(class) => wire::put_string(out, class),
            Self::List(t) | Self::Set(t) => t.encode(out),
            Self::Map(kv) => {
                kv.0.encode(out);
                kv.1.encode(out);
            }
            Self::Udt(udt) => {
                wire::put_string(out, udt.keyspace);
                wire::put_string(out, udt.name);
                let n = udt.fields.len().min(usize::from(u16::MAX));
                out.put_u16(n as u16);
                for (name, t) in udt.fields.iter().take(n) {
                    wire::put_string(out, name);
                    t.encode(out);
                }
            }
            Self::Tuple(ts) => {
                let n = ts.len().min(usize::from(u16::MAX));
                out.put_u16(n as u16);
                for t in ts.iter().take(n) {
                    t.encode(out);
                }
            }
            _ => {}
        }
    }
}

/// The CQL spelling, e.g. `map<text, frozen<list<int>>>` is written `map<text, list<int>>`
/// (the protocol does not say what is frozen). Custom types are quoted class names.
impl fmt::Display for ColumnType<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::Custom(class) => return write!(f, "'{class}'"),
            Self::List(t) => return write!(f, "list<{t}>"),
            Self::Set(t) => return write!(f, "set<{t}>"),
            Self::Map(kv) => return write!(f, "map<{}, {}>", kv.0, kv.1),
            Self::Udt(udt) => return write!(f, "{}.{}", udt.keyspace, udt.name),
            Self::Tuple(ts) => {
                write!(f, "tuple<")?;
                for (i, t) in ts.iter().enumerate() {
                    write!(f, "{}{t}", if i == 0 { "" } else { ", " })?;
                }
                return write!(f, ">");
            }
            Self::Ascii => "ascii",
            Self::Bigint => "bigint",
            Self::Blob => "blob",
            Self::Boolean => "boolean",
            Self::Counter => "counter",
            Self::Decimal => "decimal",
            Self::Double => "double",
            Self::Float => "float",
            Self::Int => "int",
            Self::Timestamp => "timestamp",
            Self::Uuid => "uuid",
            Self::Varchar => "text",
            Self::Varint => "varint",
            Self::Timeuuid => "timeuuid",
            Self::Inet => "inet",
            Self::Date => "date",
            Self::Time => "time",
            Self::Smallint => "smallint",
            Self::Tinyint => "tinyint",
            Self::Duration => "duration",
        };
        f.write_str(name)
    }
}
