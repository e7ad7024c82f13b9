//! `proxy-smol`: cqlmirror on the smol runtime, the default build.
//!
//! This file is an adapter: it implements the shared [`Runtime`] trait over smol's executor
//! and async-io's reactor. The program itself (command line, connection loop, shutdown) is
//! `cqlmirror-runtime`'s, the protocol is `cqlmirror-core`'s.

use std::future::Future;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::thread;
use std::time::Instant;

use async_io::{Async, Timer};
use cqlmirror_runtime::{Listener, Runtime, Stream};
use smol::Executor;

fn main() -> ExitCode {
    cqlmirror_runtime::main::<Smol>("proxy-smol")
}

/// A handle to the worker threads' executors: one per thread, each run by its thread only.
///
/// A task stays on the thread it was given to, with its sockets: a wake-up of a connection
/// runs it where its state is warm, and a worker never steals another's tasks (a shared
/// executor moved connections between threads and woke a second thread for nearly every
/// request). Tasks are dealt to the threads in turn.
#[derive(Debug, Clone)]
struct Smol {
    executors: Arc<[Arc<Executor<'static>>]>,
    next: Arc<AtomicUsize>,
}

impl Runtime for Smol {
    type Stream = SmolStream;
    type Listener = SmolListener;
    type Timer = SmolTimer;

    fn run<F: Future>(threads: usize, main: impl FnOnce(Self) -> F) -> io::Result<F::Output> {
        let executors: Arc<[Arc<Executor<'static>>]> = (0..threads.max(1))
            .map(|_| Arc::new(Executor::new()))
            .collect();
        let (stop, stopped) = smol::channel::unbounded::<()>();
        let workers = executors
            .iter()
            .enumerate()
            .map(|(n, executor)| {
                let (executor, stopped) = (Arc::clone(executor), stopped.clone());
                thread::Builder::new()
                    .name(format!("worker-{n}"))
                    .spawn(move || smol::block_on(executor.run(stopped.recv())))
            })
            .collect::<io::Result<Vec<_>>>()?;
        let runtime = Self {
            executors,
            next: Arc::new(AtomicUsize::new(0)),
        };
        // The calling thread runs only `main` (the accept loop): were it an executor's thread
        // too, every task it ran would poll the listeners again, for nothing. It parks without
        // driving the reactor, so that the reactor runs on a worker thread, where most events
        // wake a task of that same thread instead of a thread asleep.
        let output = smol::future::block_on(main(runtime));
        drop(stop);
        for worker in workers {
            let _ = worker.join();
        }
        Ok(output)
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % self.executors.len();
        self.executors[turn].spawn(task).detach();
    }

    fn bind(&self, address: SocketAddr) -> io::Result<Self::Listener> {
        Async::<TcpListener>::bind(address).map(SmolListener)
    }

    async fn connect(address: SocketAddr) -> io::Result<Self::Stream> {
        Async::<TcpStream>::connect(address)
            .await
            .map(SmolStream::new)
    }

    async fn resolve(host: String, port: u16) -> io::Result<Vec<SocketAddr>> {
        smol::net::resolve((host.as_str(), port)).await
    }

    fn timer(&self) -> Self::Timer {
        SmolTimer(Timer::never())
    }
}

/// A TCP socket registered with async-io's reactor.
#[derive(Debug)]
struct SmolStream {
    socket: Async<TcpStream>,
    /// The last read returned less than it was offered: the socket had no more then, and a
    /// read before the next wait would only say `WouldBlock`. async-io's registrations are
    /// level-triggered, so the wait that follows still reports bytes that came in since.
    drained: AtomicBool,
}

impl SmolStream {
    fn new(socket: Async<TcpStream>) -> Self {
        Self {
            socket,
            drained: AtomicBool::new(false),
        }
    }
}

impl Stream for SmolStream {
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.drained.store(false, Ordering::Relaxed);
        self.socket.poll_readable(cx)
    }

    fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.socket.poll_writable(cx)
    }

    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        if self.drained.load(Ordering::Relaxed) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let read = (&mut self.socket.get_ref()).read(buf);
        if matches!(read, Ok(n) if n > 0 && n < buf.len()) {
            self.drained.store(true, Ordering::Relaxed);
        }
        read
    }

    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&mut self.socket.get_ref()).write_vectored(bufs)
    }

    fn set_nodelay(&self) -> io::Result<()> {
        self.socket.get_ref().set_nodelay(true)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.get_ref().local_addr()
    }

    fn close(self) {
        let _ = self.socket.get_ref().shutdown(Shutdown::Both);
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
                    return Poll::Ready(Async::new(stream).map(|s| (SmolStream::new(s), address)));
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

/// async-io's timer: after firing it stays pending until set again.
#[derive(Debug)]
struct SmolTimer(Timer);

impl cqlmirror_runtime::Timer for SmolTimer {
    fn set(&mut self, at: Instant) {
        self.0.set_at(at);
    }

    fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}
