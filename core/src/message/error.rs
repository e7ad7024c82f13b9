//! ERROR: a failed request, from a cluster or from the proxy itself.
//!
//! The proxy compares error codes of the two clusters, repairs UNPREPARED by re-preparing, and
//! emits a few errors of its own: protocol errors, the version refusal drivers step down on,
//! OVERLOADED when it runs out of stream ids, and server errors.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use bytes::{BufMut, BytesMut};

use crate::error::DecodeError;
use crate::frame::{Opcode, ProtocolVersion};
use crate::message::Body;
use crate::wire::{self, Consistency, Reader};

/// An error code.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorCode(pub i32);

impl ErrorCode {
    pub const SERVER_ERROR: Self = Self(0x0000);
    pub const PROTOCOL_ERROR: Self = Self(0x000A);
    pub const BAD_CREDENTIALS: Self = Self(0x0100);
    pub const UNAVAILABLE: Self = Self(0x1000);
    pub const OVERLOADED: Self = Self(0x1001);
    pub const IS_BOOTSTRAPPING: Self = Self(0x1002);
    pub const TRUNCATE_ERROR: Self = Self(0x1003);
    pub const WRITE_TIMEOUT: Self = Self(0x1100);
    pub const READ_TIMEOUT: Self = Self(0x1200);
    pub const READ_FAILURE: Self = Self(0x1300);
    pub const FUNCTION_FAILURE: Self = Self(0x1400);
    pub const WRITE_FAILURE: Self = Self(0x1500);
    pub const CDC_WRITE_FAILURE: Self = Self(0x1600);
    pub const CAS_WRITE_UNKNOWN: Self = Self(0x1700);
    pub const SYNTAX_ERROR: Self = Self(0x2000);
    pub const UNAUTHORIZED: Self = Self(0x2100);
    pub const INVALID: Self = Self(0x2200);
    pub const CONFIG_ERROR: Self = Self(0x2300);
    pub const ALREADY_EXISTS: Self = Self(0x2400);
    pub const UNPREPARED: Self = Self(0x2500);

    /// The protocol's name of the code, or `None` for an unknown one.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0x0000 => "SERVER_ERROR",
            0x000A => "PROTOCOL_ERROR",
            0x0100 => "BAD_CREDENTIALS",
            0x1000 => "UNAVAILABLE",
            0x1001 => "OVERLOADED",
            0x1002 => "IS_BOOTSTRAPPING",
            0x1003 => "TRUNCATE_ERROR",
            0x1100 => "WRITE_TIMEOUT",
            0x1200 => "READ_TIMEOUT",
            0x1300 => "READ_FAILURE",
            0x1400 => "FUNCTION_FAILURE",
            0x1500 => "WRITE_FAILURE",
            0x1600 => "CDC_WRITE_FAILURE",
            0x1700 => "CAS_WRITE_UNKNOWN",
            0x2000 => "SYNTAX_ERROR",
            0x2100 => "UNAUTHORIZED",
            0x2200 => "INVALID",
            0x2300 => "CONFIG_ERROR",
            0x2400 => "ALREADY_EXISTS",
            0x2500 => "UNPREPARED",
            _ => return None,
        })
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "ErrorCode(0x{:04x})", self.0),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The replicas that failed a read or write: a count before v5, a reason code per replica
/// address from v5 on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failures {
    /// v3/v4 `<numfailures>`.
    Count(i32),
    /// v5 `<reasonmap>`: each failed replica with its failure code, in wire order.
    Reasons(Vec<(IpAddr, u16)>),
}

impl Failures {
    /// How many replicas failed.
    pub fn count(&self) -> usize {
        match self {
            Self::Count(n) => usize::try_from(*n).unwrap_or(0),
            Self::Reasons(r) => r.len(),
        }
    }

    fn read(r: &mut Reader<'_>, version: ProtocolVersion) -> Result<Self, DecodeError> {
        if version < ProtocolVersion::V5 {
            return r.i32().map(Self::Count);
        }
        let n = r.count()?;
        // An entry takes at least 7 bytes (1-byte length, 4-byte address, 2-byte code).
        let mut reasons = Vec::with_capacity(n.min(r.remaining() / 7));
        for _ in 0..n {
            reasons.push((r.inet_addr()?, r.u16()?));
        }
        Ok(Self::Reasons(reasons))
    }

    fn write(&self, version: ProtocolVersion, out: &mut BytesMut) {
        match (self, version >= ProtocolVersion::V5) {
            (Self::Count(n), false) => out.put_i32(*n),
            (Self::Reasons(r), false) => wire::put_count(out, r.len()),
            // A count alone cannot say which replicas failed: v5 gets an empty map.
            (Self::Count(_), true) => out.put_i32(0),
            (Self::Reasons(reasons), true) => {
                wire::put_count(out, reasons.len());
                for (addr, code) in reasons {
                    wire::put_inet_addr(out, *addr);
                    out.put_u16(*code);
                }
            }
        }
    }
}

/// The code-specific fields that follow the message of some errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorDetails<'a> {
    /// Codes without extra fields.
    None,
    Unavailable {
        consistency: Consistency,
        required: i32,
        alive: i32,
    },
    WriteTimeout {
        consistency: Consistency,
        received: i32,
        block_for: i32,
        /// `SIMPLE`, `BATCH`, `UNLOGGED_BATCH`, `COUNTER`, `BATCH_LOG`, `CAS`, `VIEW`, `CDC`.
        write_type: &'a str,
        /// v5, when the write type is `CAS`: how many contentions the CAS saw.
        contentions: Option<u16>,
    },
    ReadTimeout {
        consistency: Consistency,
        received: i32,
        block_for: i32,
        data_present: bool,
    },
    ReadFailure {
        consistency: Consistency,
        received: i32,
        block_for: i32,
        failures: Failures,
        data_present: bool,
    },
    FunctionFailure {
        keyspace: &'a str,
        function: &'a str,
        arg_types: Vec<&'a str>,
    },
    WriteFailure {
        consistency: Consistency,
        received: i32,
        block_for: i32,
        failures: Failures,
        write_type: &'a str,
    },
    CasWriteUnknown {
        consistency: Consistency,
        received: i32,
        block_for: i32,
    },
    /// `table` is empty when a keyspace already exists.
    AlreadyExists { keyspace: &'a str, table: &'a str },
    /// The prepared id the server does not know.
    Unprepared { id: &'a [u8] },
}

/// An ERROR response: `<code><message>` and the code's extra fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorMessage<'a> {
    pub code: ErrorCode,
    /// Borrowed when decoded; owned when the proxy formats its own.
    pub message: Cow<'a, str>,
    /// Must match the code (the constructors below always do).
    pub details: ErrorDetails<'a>,
}

const WRITE_TYPE_CAS: &str = "CAS";

impl<'a> ErrorMessage<'a> {
    /// An error without extra fields.
    pub fn new(code: ErrorCode, message: impl Into<Cow<'a, str>>) -> Self {
        Self {
            code,
            message: message.into(),
            details: ErrorDetails::None,
        }
    }

    /// A protocol error: the request broke the protocol (the connection is closed after it).
    pub fn protocol_error(message: impl Into<Cow<'a, str>>) -> Self {
        Self::new(ErrorCode::PROTOCOL_ERROR, message)
    }

    /// The refusal of a protocol version the proxy does not accept, worded as Cassandra words
    /// it because drivers parse it to step down: `requested` is the version number the client
    /// sent (without the response bit), `supported` the versions the proxy accepts.
    pub fn version_refusal(requested: u8, supported: &[ProtocolVersion]) -> ErrorMessage<'static> {
        let list = supported
            .iter()
            .map(|v| format!("{0}/v{0}", v.number()))
            .collect::<Vec<_>>()
            .join(",");
        ErrorMessage::protocol_error(format!(
            "Invalid or unsupported protocol version ({requested}); supported versions are ({list})"
        ))
    }

    /// The coordinator is overloaded (the proxy's answer when it runs out of stream ids).
    pub fn overloaded(message: impl Into<Cow<'a, str>>) -> Self {
        Self::new(ErrorCode::OVERLOADED, message)
    }

    /// Something unexpected happened on the server side.
    pub fn server_error(message: impl Into<Cow<'a, str>>) -> Self {
        Self::new(ErrorCode::SERVER_ERROR, message)
    }

    /// The prepared statement `id` is unknown: the driver re-prepares and retries.
    pub fn unprepared(id: &'a [u8]) -> Self {
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        Self {
            code: ErrorCode::UNPREPARED,
            message: Cow::Owned(format!(
                "Prepared statement 0x{hex} is not known; prepare it again"
            )),
            details: ErrorDetails::Unprepared { id },
        }
    }
}

impl<'a> Body<'a> for ErrorMessage<'a> {
    const OPCODE: Opcode = Opcode::ERROR;

    fn decode(body: &'a [u8], version: ProtocolVersion) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let code = ErrorCode(r.i32()?);
        let message = Cow::Borrowed(r.string()?);
        let details = match code {
            ErrorCode::UNAVAILABLE => ErrorDetails::Unavailable {
                consistency: r.consistency()?,
                required: r.i32()?,
                alive: r.i32()?,
            },
            ErrorCode::WRITE_TIMEOUT => {
                let consistency = r.consistency()?;
                let received = r.i32()?;
                let block_for = r.i32()?;
                let write_type = r.string()?;
                // Tolerate a server that leaves it out: it is the body's last field.
                let contentions = if version >= ProtocolVersion::V5
                    && write_type == WRITE_TYPE_CAS
                    && r.remaining() >= 2
                {
                    Some(r.u16()?)
                } else {
                    None
                };
                ErrorDetails::WriteTimeout {
                    consistency,
                    received,
                    block_for,
                    write_type,
                    contentions,
                }
            }
            ErrorCode::READ_TIMEOUT => ErrorDetails::ReadTimeout {
                consistency: r.consistency()?,
                received: r.i32()?,
                block_for: r.i32()?,
                data_present: r.u8()? != 0,
            },
            ErrorCode::READ_FAILURE => ErrorDetails::ReadFailure {
                consistency: r.consistency()?,
                received: r.i32()?,
                block_for: r.i32()?,
                failures: Failures::read(&mut r, version)?,
                data_present: r.u8()? != 0,
            },
            ErrorCode::FUNCTION_FAILURE => ErrorDetails::FunctionFailure {
                keyspace: r.string()?,
                function: r.string()?,
                arg_types: r.string_list()?,
            },
            ErrorCode::WRITE_FAILURE => ErrorDetails::WriteFailure {
                consistency: r.consistency()?,
                received: r.i32()?,
                block_for: r.i32()?,
                failures: Failures::read(&mut r, version)?,
                write_type: r.string()?,
            },
            ErrorCode::CAS_WRITE_UNKNOWN => ErrorDetails::CasWriteUnknown {
                consistency: r.consistency()?,
                received: r.i32()?,
                block_for: r.i32()?,
            },
            ErrorCode::ALREADY_EXISTS => ErrorDetails::AlreadyExists {
                keyspace: r.string()?,
                table: r.string()?,
            },
            ErrorCode::UNPREPARED => ErrorDetails::Unprepared {
                id: r.short_bytes()?,
            },
            _ => ErrorDetails::None,
        };
        Ok(Self {
            code,
            message,
            details,
        })
    }

    fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) {
        out.put_i32(self.code.0);
        wire::put_string(out, &self.message);
        match &self.details {
            ErrorDetails::None => {}
            ErrorDetails::Unavailable {
                consistency,
                required,
                alive,
            } => {
                wire::put_consistency(out, *consistency);
                out.put_i32(*required);
                out.put_i32(*alive);
            }
            ErrorDetails::WriteTimeout {
                consistency,
                received,
                block_for,
                write_type,
                contentions,
            } => {
                wire::put_consistency(out, *consistency);
                out.put_i32(*received);
                out.put_i32(*block_for);
                wire::put_string(out, write_type);
                if version >= ProtocolVersion::V5 && *write_type == WRITE_TYPE_CAS {
                    out.put_u16(contentions.unwrap_or(0));
                }
            }
            ErrorDetails::ReadTimeout {
                consistency,
                received,
                block_for,
                data_present,
            } => {
                wire::put_consistency(out, *consistency);
                out.put_i32(*received);
                out.put_i32(*block_for);
                out.put_u8(u8::from(*data_present));
            }
            ErrorDetails::ReadFailure {
                consistency,
                received,
                block_for,
                failures,
                data_present,
            } => {
                wire::put_consistency(out, *consistency);
                out.put_i32(*received);
                out.put_i32(*block_for);
                failures.write(version, out);
                out.put_u8(u8::from(*data_present));
            }
            ErrorDetails::FunctionFailure {
                keyspace,
                function,
                arg_types,
            } => {
                wire::put_string(out, keyspace);
                wire::put_string(out, function);
                wire::put_string_list(out, arg_types.iter().copied());
            }
            ErrorDetails::WriteFailure {
                consistency,
                received,
                block_for,
                failures,
                write_type,
            } => {
                wire::put_consistency(out, *consistency);
                out.put_i32(*received);
                out.put_i32(*block_for);
                failures.write(version, out);
                wire::put_string(out, write_type);
            }
            ErrorDetails::CasWriteUnknown {
                consistency,
                received,
                block_for,
            } => {
                wire::put_consistency(out, *consistency);
                out.put_i32(*received);
                out.put_i32(*block_for);
            }
            ErrorDetails::AlreadyExists { keyspace, table } => {
                wire::put_string(out, keyspace);
                wire::put_string(out, table);
            }
            ErrorDetails::Unprepared { id } => wire::put_short_bytes(out, id),
        }
    }
}
