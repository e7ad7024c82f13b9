//! Authentication: AUTHENTICATE, then AUTH_RESPONSE / AUTH_CHALLENGE rounds until AUTH_SUCCESS.
//!
//! The proxy relays the client's exchange with the primary cluster and logs in to the other
//! cluster with its own credentials ([`sasl_plain_token`]). Tokens hold passwords, so nothing
//! here prints one: `Debug` shows only their length.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::DecodeError;
use crate::frame::{Opcode, ProtocolVersion};
use crate::message::Body;
use crate::wire::{self, Reader};

/// An AUTHENTICATE response: the server requires authentication with this authenticator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authenticate<'a> {
    /// The authenticator's class name.
    pub authenticator: &'a str,
}

impl Authenticate<'_> {
    /// Cassandra's user name and password authenticator.
    pub const PASSWORD_AUTHENTICATOR: &'static str =
        "org.apache.cassandra.auth.PasswordAuthenticator";
}

impl<'a> Body<'a> for Authenticate<'a> {
    const OPCODE: Opcode = Opcode::AUTHENTICATE;

    fn decode(body: &'a [u8], _version: ProtocolVersion) -> Result<Self, DecodeError> {
        Reader::new(body)
            .string()
            .map(|authenticator| Self { authenticator })
    }

    fn encode(&self, _version: ProtocolVersion, out: &mut BytesMut) {
        wire::put_string(out, self.authenticator);
    }
}

fn fmt_token(name: &str, token: Option<&[u8]>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match token {
        Some(t) => write!(f, "{name}(<{} bytes redacted>)", t.len()),
        None => write!(f, "{name}(null)"),
    }
}

macro_rules! token_message {
    ($(#[$doc:meta])* $name:ident, $opcode:expr, $strict:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq)]
        pub struct $name<'a> {
            /// The SASL token; `None` is a null `[bytes]`.
            pub token: Option<&'a [u8]>,
        }

        impl fmt::Debug for $name<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt_token(stringify!($name), self.token, f)
            }
        }

        impl<'a> Body<'a> for $name<'a> {
            const OPCODE: Opcode = $opcode;

            fn decode(body: &'a [u8], _version: ProtocolVersion) -> Result<Self, DecodeError> {
                let mut r = Reader::new(body);
                let token = r.bytes()?;
                if $strict {
                    r.finish()?;
                }
                Ok(Self { token })
            }

            fn encode(&self, _version: ProtocolVersion, out: &mut BytesMut) {
                wire::put_bytes(out, self.token);
            }
        }
    };
}

token_message!(
    /// An AUTH_RESPONSE request: the client's answer to AUTHENTICATE or to a challenge.
    AuthResponse,
    Opcode::AUTH_RESPONSE,
    true
);
token_message!(
    /// An AUTH_CHALLENGE response: the server asks for another round.
    AuthChallenge,
    Opcode::AUTH_CHALLENGE,
    false
);
token_message!(
    /// An AUTH_SUCCESS response: authentication is done; the token is the server's last word.
    AuthSuccess,
    Opcode::AUTH_SUCCESS,
    false
);

/// Bytes that must never be logged (a SASL token holding a password). `Debug` shows only the
/// length; [`Secret::expose`] gives the bytes to whoever writes them on the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Bytes);

impl Secret {
    pub fn new(bytes: Bytes) -> Self {
        Self(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The AUTH_RESPONSE body carrying this token.
    pub fn auth_response_body(&self) -> Secret {
        let mut out = BytesMut::with_capacity(4 + self.0.len());
        wire::put_bytes(&mut out, Some(&self.0));
        Secret(out.freeze())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes redacted>)", self.0.len())
    }
}

/// The SASL PLAIN initial response `\0user\0password` that Cassandra's password authenticator
/// expects (no authorization identity).
pub fn sasl_plain_token(username: &str, password: &str) -> Secret {
    let mut out = BytesMut::with_capacity(2 + username.len() + password.len());
    out.put_u8(0);
    out.put_slice(username.as_bytes());
    out.put_u8(0);
    out.put_slice(password.as_bytes());
    Secret(out.freeze())
}
