//! A socket of any runtime with TLS (rustls) on top, used readiness-style like the socket
//! itself: the connection loop waits for readiness of the socket underneath and calls the
//! non-blocking `try_*` methods, which move TLS records between rustls and the socket.
//!
//! Two things differ from a plain socket, and the loop asks about them:
//! - plaintext may be buffered in rustls already, with nothing left to read on the socket:
//!   [`Link::has_buffered_plaintext`] says read without waiting;
//! - TLS records may wait for the socket (a full send buffer, a handshake message, an alert):
//!   [`Link::has_pending_output`] says wait for writability and [`Link::try_flush`].

use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::Connection;

use super::Fix;
use crate::runtime::Stream;

/// A connection to a client or a cluster: plain, or TLS over the runtime's socket.
pub enum Link<S> {
    Plain(S),
    Tls(Box<TlsStream<S>>),
}

/// rustls over a non-blocking socket.
pub struct TlsStream<S> {
    socket: S,
    tls: Connection,
    /// Plaintext rustls holds that no read has taken yet.
    buffered: usize,
    /// The socket ended (no more TLS records will come).
    eof: bool,
    /// Explains failures that come after the handshake (in TLS 1.3 a server refuses a missing
    /// client certificate only once the client thinks the handshake is done).
    fix: Option<Arc<Fix>>,
}

impl<S> std::fmt::Debug for Link<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Plain(_) => "Link::Plain",
            Self::Tls(_) => "Link::Tls",
        })
    }
}

impl<S> std::fmt::Debug for TlsStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("handshaking", &self.tls.is_handshaking())
            .field("buffered", &self.buffered)
            .field("eof", &self.eof)
            .finish_non_exhaustive()
    }
}

/// One non-blocking read of the socket, as rustls reads TLS records.
struct SocketReader<'a, S>(&'a S);

impl<S: Stream> Read for SocketReader<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

/// One non-blocking write to the socket, as rustls writes TLS records.
struct SocketWriter<'a, S>(&'a S);

impl<S: Stream> Write for SocketWriter<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A TLS failure as an I/O error that keeps the rustls error, for a handshake to explain (see
/// `Fix::explain`).
pub(crate) fn tls_error(error: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

impl<S: Stream> TlsStream<S> {
    pub fn new(socket: S, tls: impl Into<Connection>) -> Self {
        Self {
            socket,
            tls: tls.into(),
            buffered: 0,
            eof: false,
            fix: None,
        }
    }

    /// From now on, TLS failures are explained with the options that fix them.
    pub(super) fn explained_by(mut self, fix: Fix) -> Self {
        self.fix = Some(Arc::new(fix));
        self
    }

    pub fn is_handshaking(&self) -> bool {
        self.tls.is_handshaking()
    }

    /// Writes TLS records to the socket until none is left or the socket is full
    /// (`WouldBlock`).
    pub fn try_flush(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut SocketWriter(&self.socket)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads TLS records from the socket and processes them: `Ok(true)` when some arrived,
    /// `Ok(false)` at the end of the stream, `WouldBlock` when none is there.
    fn pull(&mut self) -> io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        let read = self.tls.read_tls(&mut SocketReader(&self.socket))?;
        if read == 0 {
            self.eof = true;
            return Ok(false);
        }
        let state = match self.tls.process_new_packets() {
            Ok(state) => state,
            Err(e) => {
                // The alert rustls queued tells the peer why; then the connection ends.
                let _ = self.try_flush();
                return Err(match &self.fix {
                    Some(fix) => fix.explain(tls_error(e)),
                    None => tls_error(e),
                });
            }
        };
        self.buffered = state.plaintext_bytes_to_read();
        // A handshake answer, a key update: sent at once where the socket takes it.
        match self.try_flush() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        Ok(true)
    }

    pub fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.tls.reader().read(buf) {
                Ok(n) => {
                    self.buffered = self.buffered.saturating_sub(n);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The peer closed the socket without close_notify: the end of the stream.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            self.buffered = 0;
            if !self.pull()? {
                return Ok(0);
            }
        }
    }

    pub fn try_write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // Records already made go first; while the socket cannot take them, no more is
        // accepted, so that what rustls holds stays bounded.
        self.try_flush()?;
        let written = self.tls.writer().write_vectored(bufs)?;
        match self.try_flush() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        if written == 0 && bufs.iter().any(|b| !b.is_empty()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(written)
    }

    /// Drives the handshake one step: `Ok(true)` once it is over, `WouldBlock` while it
    /// waits for the socket ([`TlsStream::wants_write`] says which way).
    pub fn try_handshake(&mut self) -> io::Result<bool> {
        loop {
            self.try_flush()?;
            if !self.tls.is_handshaking() {
                return Ok(true);
            }
            if !self.pull()? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection during the TLS handshake",
                ));
            }
        }
    }

    pub fn wants_write(&self) -> bool {
        self.tls.wants_write()
    }

    pub fn socket(&self) -> &S {
        &self.socket
    }

    /// Says goodbye (close_notify) where the socket takes it, then closes.
    pub fn close(mut self) {
        self.tls.send_close_notify();
        let _ = self.try_flush();
        self.socket.close();
    }
}

impl<S: Stream> Link<S> {
    pub fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Self::Plain(s) => s.poll_readable(cx),
            Self::Tls(t) if t.buffered > 0 || t.eof => Poll::Ready(Ok(())),
            Self::Tls(t) => t.socket.poll_readable(cx),
        }
    }

    pub fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Self::Plain(s) => s.poll_writable(cx),
            Self::Tls(t) => t.socket.poll_writable(cx),
        }
    }

    pub fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.try_read(buf),
            Self::Tls(t) => t.try_read(buf),
        }
    }

    pub fn try_write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.try_write_vectored(bufs),
            Self::Tls(t) => t.try_write_vectored(bufs),
        }
    }

    /// TLS records wait for the socket: wait for writability and [`Link::try_flush`].
    pub fn has_pending_output(&self) -> bool {
        match self {
            Self::Plain(_) => false,
            Self::Tls(t) => t.wants_write(),
        }
    }

    pub fn try_flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(_) => Ok(()),
            Self::Tls(t) => t.try_flush(),
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Self::Plain(s) => s.local_addr(),
            Self::Tls(t) => t.socket.local_addr(),
        }
    }

    pub fn close(self) {
        match self {
            Self::Plain(s) => s.close(),
            Self::Tls(t) => t.close(),
        }
    }
}
