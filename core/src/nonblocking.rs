//! One non-blocking read or vectored write through a runtime's callback, and what came of it:
//! the steps both the session [`Driver`](crate::driver::Driver) and the
//! [`ControlConnection`](crate::control::ControlConnection) take on their sockets. The
//! sockets stay in the runtime; these only interpret what its calls return.

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use bytes::{Buf, Bytes};

/// Bytes asked of a socket per read.
pub(crate) const READ_CHUNK: usize = 16 * 1024;

/// What one read gave.
pub(crate) enum Read {
    /// This many bytes, at the start of the chunk.
    Got(usize),
    /// Nothing for now (`WouldBlock`).
    Drained,
    /// The end of the stream or an error; the reason is for the logs.
    Closed(String),
}

/// What one write did.
pub(crate) enum Write {
    /// The socket took this many bytes.
    Wrote(usize),
    /// The socket takes nothing for now (`WouldBlock`).
    Full,
    /// The connection failed; the reason is for the logs.
    Closed(String),
}

/// One read into `chunk` (retried when interrupted by a signal).
#[inline]
pub(crate) fn read(
    chunk: &mut [u8],
    read: &mut impl FnMut(&mut [u8]) -> io::Result<usize>,
) -> Read {
    loop {
        return match read(chunk) {
            Ok(0) => Read::Closed("closed by the peer".to_owned()),
            // A runtime that claims more than the chunk holds is not believed past its end.
            Ok(got) => Read::Got(got.min(chunk.len())),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Read::Drained,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Read::Closed(e.to_string()),
        };
    }
}

/// Chunks per vectored write.
const MAX_IOVECS: usize = 64;

/// One vectored write of the front of `send` (retried when interrupted by a signal); what the
/// socket took leaves `send`.
#[inline]
pub(crate) fn write(
    send: &mut VecDeque<Bytes>,
    write: &mut impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
) -> Write {
    let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
    let mut count = 0;
    let mut offered = 0;
    for (slice, bytes) in slices.iter_mut().zip(&*send) {
        *slice = IoSlice::new(bytes);
        count += 1;
        offered += bytes.len();
    }
    let outcome = loop {
        break match write(&slices[..count]) {
            Ok(0) => Write::Closed("the connection accepts no more bytes".to_owned()),
            // A runtime that claims more than it was given is not believed past that.
            Ok(written) => Write::Wrote(written.min(offered)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Write::Full,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Write::Closed(e.to_string()),
        };
    };
    if let Write::Wrote(mut written) = outcome {
        while written > 0 {
            let Some(front) = send.front_mut() else {
                break;
            };
            if written >= front.len() {
                written -= front.len();
                send.pop_front();
            } else {
                front.advance(written);
                written = 0;
            }
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_write_leaves_the_rest_queued() {
        let mut send: VecDeque<Bytes> =
            [Bytes::from_static(b"abc"), Bytes::from_static(b"defg")].into();
        let mut seen = Vec::new();
        let outcome = write(&mut send, &mut |bufs| {
            seen = bufs.iter().map(|b| b.to_vec()).collect();
            Ok(5)
        });
        assert!(matches!(outcome, Write::Wrote(5)));
        assert_eq!(seen, vec![b"abc".to_vec(), b"defg".to_vec()]);
        assert_eq!(send, VecDeque::from([Bytes::from_static(b"fg")]));
    }

    #[test]
    fn interrupted_calls_are_retried_and_errors_reported() {
        let mut calls = 0;
        let outcome = read(&mut [0u8; 4], &mut |buf| {
            calls += 1;
            if calls == 1 {
                Err(io::ErrorKind::Interrupted.into())
            } else {
                buf[0] = 7;
                Ok(1)
            }
        });
        assert!(matches!(outcome, Read::Got(1)));
        assert_eq!(calls, 2);
        assert!(matches!(
            read(
                &mut [0u8; 4],
                &mut |_| Err(io::ErrorKind::WouldBlock.into())
            ),
            Read::Drained
        ));
        assert!(matches!(
            read(&mut [0u8; 4], &mut |_| Ok(0)),
            Read::Closed(_)
        ));
        let mut send: VecDeque<Bytes> = [Bytes::from_static(b"x")].into();
        assert!(matches!(
            write(&mut send, &mut |_| Err(io::ErrorKind::WouldBlock.into())),
            Write::Full
        ));
        assert_eq!(send.len(), 1);
        assert!(matches!(write(&mut send, &mut |_| Ok(0)), Write::Closed(_)));
    }
}
