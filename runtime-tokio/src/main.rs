//! `proxy-tokio`: cqlmirror on the tokio runtime, for sites that standardise on tokio.
//!
//! This file is an adapter: it implements the shared [`Runtime`] trait over tokio. The program
//! itself (command line, connection loop, shutdown) is `cqlmirror-runtime`'s, the protocol is
//! `cqlmirror-core`'s.

use std::future::Future;
use std::io::{self, IoSlice, Read};
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::task::{Context, Poll};
use std::time::Instant;

use cqlmirror_runtime::{Listener, Runtime, Stream};
use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::time::Sleep;

fn main() -> ExitCode {
    cqlmirror_runtime::main::<Tokio>("proxy-tokio")
}

/// A handle to the multi-threaded runtime.
#[derive(Debug, Clone)]
struct Tokio {
    handle: Handle,
}

impl Runtime for Tokio {
    type Stream = TokioStream;
    type Listener = TokioListener;
    type Timer = TokioTimer;

    fn run<F: Future>(threads: usize, main: impl FnOnce(Self) -> F) -> io::Result<F::Output> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        Ok(runtime.block_on(main(Self { handle })))
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.handle.spawn(task);
    }

    fn bind(&self, address: SocketAddr) -> io::Result<Self::Listener> {
        let listener = std::net::TcpListener::bind(address)?;
        listener.set_nonblocking(true)?;
        TcpListener::from_std(listener).map(TokioListener)
    }

    async fn connect(address: SocketAddr) -> io::Result<Self::Stream> {
        TcpStream::connect(address).await.map(TokioStream)
    }

    async fn resolve(host: String, port: u16) -> io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host((host.as_str(), port))
            .await?
            .collect())
    }

    fn timer(&self) -> Self::Timer {
        TokioTimer {
            sleep: None,
            armed: false,
        }
    }
}

/// A TCP socket registered with tokio's reactor.
#[derive(Debug)]
struct TokioStream(TcpStream);

impl Stream for TokioStream {
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_read_ready(cx)
    }

    fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_write_ready(cx)
    }

    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // A read that returns less than it was offered found the socket empty: the readiness
        // seen before it is cleared then, which spares the read that would only say
        // `WouldBlock` (one system call per wake-up). Bytes that arrive after the read come
        // with a newer readiness, which tokio keeps.
        let mut short = None;
        let read = self.0.try_io(Interest::READABLE, || {
            let n = (&*SockRef::from(&self.0)).read(buf)?;
            if n > 0 && n < buf.len() {
                short = Some(n);
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        match short {
            Some(n) => Ok(n),
            None => read,
        }
    }

    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn set_nodelay(&self) -> io::Result<()> {
        self.0.set_nodelay(true)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// A listening socket registered with tokio's reactor.
#[derive(Debug)]
struct TokioListener(TcpListener);

impl Listener for TokioListener {
    type Stream = TokioStream;

    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(Self::Stream, SocketAddr)>> {
        self.0
            .poll_accept(cx)
            .map(|accepted| accepted.map(|(s, address)| (TokioStream(s), address)))
    }
}

/// tokio's sleep, allocated once and reset; a fired sleep stays ready, hence `armed`.
#[derive(Debug)]
struct TokioTimer {
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl cqlmirror_runtime::Timer for TokioTimer {
    fn set(&mut self, at: Instant) {
        let deadline = tokio::time::Instant::from_std(at);
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().reset(deadline),
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        self.armed = true;
    }

    fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.sleep {
            Some(sleep) if self.armed => {
                let fired = sleep.as_mut().poll(cx);
                if fired.is_ready() {
                    self.armed = false;
                }
                fired
            }
            _ => Poll::Pending,
        }
    }
}
