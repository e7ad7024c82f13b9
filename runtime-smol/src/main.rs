//! `proxy-smol`: cqlmirror on the smol runtime, the default build.
//!
//! This file is an adapter: it implements the shared [`Runtime`] trait with smol's pieces.
//! Each worker thread runs its own queue of `async-task` tasks and its own edge-triggered
//! reactor and timers ([`worker`], [`reactor`], [`timers`]); listening sockets, connecting
//! and name resolution are async-io's and smol's. The program itself (command line, connection loop, shutdown) is
//! `cqlmirror-runtime`'s, the protocol is `cqlmirror-core`'s.

mod reactor;
mod timers;
mod worker;

use std::future::Future;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_io::Async;
use cqlmirror_runtime::{Listener, Runtime, Stream, Workers};

use crate::reactor::{Direction, Source};
use crate::timers::SmolTimer;
use crate::worker::Worker;

fn main() -> ExitCode {
    cqlmirror_runtime::main::<Smol>("proxy-smol")
}

/// A handle to the worker threads: each runs its own tasks and reactor.
///
/// A task stays on the thread it was given to, with its sockets: a wake-up of a connection
/// runs it where its state is warm, its sockets' events are harvested by that same thread,
/// and a worker never steals another's tasks (a shared executor over one process-wide reactor
/// moved connections between threads and woke a second thread for nearly every request).
/// Tasks are dealt to the threads in turn.
#[derive(Debug, Clone)]
struct Smol(Workers<Arc<Worker>>);

impl Runtime for Smol {
    type Stream = SmolStream;
    type Listener = SmolListener;
    type Timer = SmolTimer;

    fn run<F: Future>(threads: usize, main: impl FnOnce(Self) -> F) -> io::Result<F::Output> {
        let (workers, running) = Workers::start(threads, |n| {
            let (worker, poll) = Worker::new()?;
            let run = Arc::clone(&worker);
            Ok((worker, move || {
                if let Err(e) = run.run(poll) {
                    log::error!("worker thread {n} stopped: waiting for I/O failed: {e}");
                }
            }))
        })?;
        // The calling thread runs only `main` (the accept loop), on async-io's reactor: a
        // connection's sockets belong to the worker it is given to.
        let output = smol::future::block_on(main(Self(workers.clone())));
        for worker in workers.all() {
            worker.stop();
        }
        running.join();
        Ok(output)
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.0.next().spawn(task);
    }

    fn bind(&self, address: SocketAddr) -> io::Result<Self::Listener> {
        Async::<TcpListener>::bind(address).map(SmolListener)
    }

    async fn connect(address: SocketAddr) -> io::Result<Self::Stream> {
        // Connecting is rare: async-io's reactor waits for it, then the socket moves to the
        // reactor of the worker thread that runs its connection.
        let socket = Async::<TcpStream>::connect(address).await?.into_inner()?;
        SmolStream::new(socket)
    }

    async fn resolve(host: String, port: u16) -> io::Result<Vec<SocketAddr>> {
        smol::net::resolve((host.as_str(), port)).await
    }

    fn timer(&self) -> Self::Timer {
        SmolTimer::default()
    }
}

/// A non-blocking TCP socket, registered with its worker thread's reactor at its first wait.
#[derive(Debug)]
struct SmolStream {
    socket: TcpStream,
    source: Source,
}

impl SmolStream {
    fn new(socket: TcpStream) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        Ok(Self {
            socket,
            source: Source::default(),
        })
    }
}

impl Drop for SmolStream {
    fn drop(&mut self) {
        self.source.deregister(self.socket.as_raw_fd());
    }
}

impl Stream for SmolStream {
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.source
            .poll_ready(self.socket.as_raw_fd(), Direction::Read, cx)
    }

    fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.source
            .poll_ready(self.socket.as_raw_fd(), Direction::Write, cx)
    }

    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // Drained since the last event: a read would only say so again.
        if !self.source.may_be_ready(Direction::Read) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let read = (&self.socket).read(buf);
        match &read {
            // Less than was offered: the socket had no more (bytes that came since bring an
            // event of their own).
            Ok(n) if *n > 0 && *n < buf.len() => self.source.drained(Direction::Read),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.source.drained(Direction::Read);
            }
            _ => {}
        }
        read
    }

    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let written = (&self.socket).write_vectored(bufs);
        if matches!(&written, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
            self.source.drained(Direction::Write);
        }
        written
    }

    fn set_nodelay(&self) -> io::Result<()> {
        self.socket.set_nodelay(true)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    fn close(self) {
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}

/// A listening socket registered with async-io's reactor.
#[derive(Debug)]
struct SmolListener(Async<TcpListener>);

impl Listener for SmolListener {
    type Stream = SmolStream;

    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(Self::Stream, SocketAddr)>> {
        loop {
            match self.0.get_ref().accept() {
                Ok((stream, address)) => {
                    return Poll::Ready(SmolStream::new(stream).map(|s| (s, address)));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(e) = std::task::ready!(self.0.poll_readable(cx)) {
                        return Poll::Ready(Err(e));
                    }
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}
