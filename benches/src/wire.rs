//! The load generator's connection, plain or TLS, split into a reading half and a writing
//! half for its two threads per connection.
//!
//! rustls keeps one state for both directions, so the halves share it behind a mutex that is
//! held only to encrypt or decrypt, never across a system call: the reader reads the socket
//! unlocked, then hands the records to rustls; the writer encrypts under the lock and writes
//! the records after it. Only the writer writes records, so they leave in the order rustls
//! made them (anything rustls wants to send while reading goes out with the next write).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

/// The reading half.
#[derive(Debug)]
pub enum WireReader {
    Plain(TcpStream),
    Tls(TlsHalf),
}

/// The writing half.
#[derive(Debug)]
pub enum WireWriter {
    Plain(TcpStream),
    Tls(TlsHalf),
}

/// One half of a TLS connection: its own handle on the socket, the shared rustls state.
#[derive(Debug)]
pub struct TlsHalf {
    socket: TcpStream,
    tls: Arc<Mutex<ClientConnection>>,
    /// Records read from the socket (reader) or made by rustls (writer).
    records: Vec<u8>,
}

/// Splits a connected socket, completing a TLS handshake with `tls` first (the certificate
/// checked for `server_name`).
pub fn split(
    mut socket: TcpStream,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
) -> io::Result<(WireReader, WireWriter)> {
    let Some((config, name)) = tls else {
        let reader = socket.try_clone()?;
        return Ok((WireReader::Plain(reader), WireWriter::Plain(socket)));
    };
    let mut conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut socket)?;
    }
    let tls = Arc::new(Mutex::new(conn));
    let half = |socket| TlsHalf {
        socket,
        tls: Arc::clone(&tls),
        records: Vec::with_capacity(64 * 1024),
    };
    Ok((
        WireReader::Tls(half(socket.try_clone()?)),
        WireWriter::Tls(half(socket)),
    ))
}

impl TlsHalf {
    fn lock(&self) -> std::sync::MutexGuard<'_, ClientConnection> {
        self.tls.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl WireReader {
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Self::Plain(s) => s.set_read_timeout(timeout),
            Self::Tls(h) => h.socket.set_read_timeout(timeout),
        }
    }

    /// Ends the connection; called once the writer is done. A TLS connection says so first
    /// (close_notify), so that the server does not see a truncation.
    pub fn shutdown(&self) {
        let socket = match self {
            Self::Plain(s) => s,
            Self::Tls(h) => {
                let mut conn = h.lock();
                conn.send_close_notify();
                let mut records = Vec::new();
                while conn.wants_write() && conn.write_tls(&mut records).is_ok() {}
                let _ = (&h.socket).write_all(&records);
                &h.socket
            }
        };
        let _ = socket.shutdown(Shutdown::Both);
    }
}

impl Read for WireReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let half = match self {
            Self::Plain(s) => return s.read(buf),
            Self::Tls(h) => h,
        };
        loop {
            {
                let mut conn = half.lock();
                match conn.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            // Nothing decrypted is waiting: read records, unlocked (a timeout ends here).
            half.records.resize(64 * 1024, 0);
            let n = half.socket.read(&mut half.records)?;
            if n == 0 {
                return Ok(0);
            }
            let mut conn = half.lock();
            let mut records = &half.records[..n];
            while !records.is_empty() {
                conn.read_tls(&mut records)?;
                conn.process_new_packets().map_err(io::Error::other)?;
            }
        }
    }
}

impl WireWriter {
    /// Sends all of `data`.
    pub fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        let half = match self {
            Self::Plain(s) => return s.write_all(data),
            Self::Tls(h) => h,
        };
        half.records.clear();
        {
            let mut conn = half.tls.lock().unwrap_or_else(PoisonError::into_inner);
            conn.writer().write_all(data)?;
            while conn.wants_write() {
                conn.write_tls(&mut half.records)?;
            }
        }
        half.socket.write_all(&half.records)
    }
}
