//! `proxy-tokio`: cqlmirror on the tokio runtime, for sites that standardise on tokio.
//!
//! This file is an adapter: it implements the shared [`Runtime`] trait over tokio: one
//! current-thread runtime per worker thread, each with its own I/O driver and timers, and one
//! more on the calling thread for the accept loop. The program itself (command line,
//! connection loop, shutdown) is `cqlmirror-runtime`'s, the protocol is `cqlmirror-core`'s.

use std::future::Future;
use std::io::{self, IoSlice, Read};
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

use cqlmirror_runtime::{Listener, Runtime, Stream, Workers};
use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::time::Sleep;

fn main() -> ExitCode {
    cqlmirror_runtime::main::<Tokio>("proxy-tokio")
}

/// Handles to the worker threads' runtimes.
///
/// A connection's task and its sockets stay with the worker it was given to: its events are
/// harvested by that thread's driver and run there, no task moves between threads, and no
/// thread wakes another for a request (the multi-threaded runtime's shared driver and work
/// stealing cost more CPU per request; see benches/PROFILING.md). Tasks are dealt to the
/// threads in turn.
#[derive(Debug, Clone)]
struct Tokio(Workers<Handle>);

impl Runtime for Tokio {
    type Stream = TokioStream;
    type Listener = TokioListener;
    type Timer = TokioTimer;

    fn run<F: Future>(threads: usize, main: impl FnOnce(Self) -> F) -> io::Result<F::Output> {
        let mut stops = Vec::new();
        let (workers, running) = Workers::start(threads, |_| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            stops.push(stop);
            let handle = runtime.handle().clone();
            // Ends when the sender is dropped; tasks still running are dropped with the
            // runtime.
            Ok((handle, move || {
                let _ = runtime.block_on(stopped);
            }))
        })?;
        // The calling thread runs `main` (the accept loop) on a runtime of its own.
        let accepting = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let output = accepting.block_on(main(Self(workers)));
        drop(stops);
        running.join();
        Ok(output)
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.0.next().spawn(task);
    }

    fn bind(&self, address: SocketAddr) -> io::Result<Self::Listener> {
        let listener = std::net::TcpListener::bind(address)?;
        listener.set_nonblocking(true)?;
        TcpListener::from_std(listener).map(TokioListener)
    }

    async fn connect(address: SocketAddr) -> io::Result<Self::Stream> {
        TcpStream::connect(address)
            .await
            .map(TokioStream::registered)
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

/// A TCP socket registered with the I/O driver of the worker thread that runs its
/// connection: at its first use there when it was accepted on the listening thread.
#[derive(Debug)]
struct TokioStream {
    socket: OnceLock<TcpStream>,
    accepted: Mutex<Option<std::net::TcpStream>>,
}

impl TokioStream {
    fn registered(socket: TcpStream) -> Self {
        Self {
            socket: OnceLock::from(socket),
            accepted: Mutex::new(None),
        }
    }

    fn accepted(socket: std::net::TcpStream) -> Self {
        Self {
            socket: OnceLock::new(),
            accepted: Mutex::new(Some(socket)),
        }
    }

    /// The socket, registered with the calling worker's driver if it was not yet.
    fn socket(&self) -> io::Result<&TcpStream> {
        if let Some(socket) = self.socket.get() {
            return Ok(socket);
        }
        if Handle::try_current().is_err() {
            return Err(io::Error::other(
                "a socket was used outside the runtimes of proxy-tokio",
            ));
        }
        let accepted = self
            .accepted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let socket = TcpStream::from_std(accepted.ok_or_else(|| {
            io::Error::other("the accepted socket could not be registered with its worker")
        })?)?;
        // The socket's task runs on one thread only: nobody registered it meanwhile.
        Ok(self.socket.get_or_init(|| socket))
    }

    /// `f` on the socket, registered or not.
    fn with_std<T>(&self, f: impl FnOnce(SockRef<'_>) -> io::Result<T>) -> io::Result<T> {
        if let Some(socket) = self.socket.get() {
            return f(SockRef::from(socket));
        }
        let accepted = self.accepted.lock().unwrap_or_else(PoisonError::into_inner);
        match &*accepted {
            Some(socket) => f(SockRef::from(socket)),
            None => Err(io::Error::other("the socket is gone")),
        }
    }
}

impl Stream for TokioStream {
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.socket() {
            Ok(socket) => socket.poll_read_ready(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.socket() {
            Ok(socket) => socket.poll_write_ready(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let socket = self.socket()?;
        // A read that returns less than it was offered found the socket empty: the readiness
        // seen before it is cleared then, which spares the read that would only say
        // `WouldBlock` (one system call per wake-up). Bytes that arrive after the read come
        // with a newer readiness, which tokio keeps.
        let mut short = None;
        let read = socket.try_io(Interest::READABLE, || {
            let n = (&*SockRef::from(socket)).read(buf)?;
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
        self.socket()?.try_write_vectored(bufs)
    }

    fn set_nodelay(&self) -> io::Result<()> {
        self.with_std(|socket| socket.set_tcp_nodelay(true))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.with_std(|socket| {
            socket.local_addr()?.as_socket().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "not an IP socket address")
            })
        })
    }
}

/// A listening socket registered with the accept loop's runtime. An accepted socket leaves
/// that runtime's driver: it joins the driver of the worker that runs its connection.
#[derive(Debug)]
struct TokioListener(TcpListener);

impl Listener for TokioListener {
    type Stream = TokioStream;

    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(Self::Stream, SocketAddr)>> {
        self.0.poll_accept(cx).map(|accepted| {
            let (socket, address) = accepted?;
            Ok((TokioStream::accepted(socket.into_std()?), address))
        })
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

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::io::Write as _;
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn an_accepted_socket_is_read_on_the_worker_its_connection_runs_on() {
        let (done, result) = mpsc::channel();
        Tokio::run(2, |runtime| async move {
            let listener = runtime
                .bind("127.0.0.1:0".parse().expect("an address"))
                .expect("a listener");
            let address = listener.0.local_addr().expect("its address");
            let mut client = std::net::TcpStream::connect(address).expect("connect");
            let (accepted, _) = poll_fn(|cx| listener.poll_accept(cx))
                .await
                .expect("accept");
            accepted.set_nodelay().expect("before registration too");
            runtime.spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 3];
                while got.len() < 8 {
                    poll_fn(|cx| accepted.poll_readable(cx))
                        .await
                        .expect("readable");
                    loop {
                        match accepted.try_read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => panic!("read failed: {e}"),
                        }
                    }
                }
                let _ = done.send((got, std::thread::current().name().map(str::to_owned)));
            });
            client.write_all(b"abcd").expect("write");
            tokio::time::sleep(Duration::from_millis(50)).await;
            client.write_all(b"efgh").expect("write");
            // The accept loop's runtime stays up until the worker has read everything.
            tokio::time::sleep(Duration::from_millis(500)).await;
        })
        .expect("the runtimes");
        let (got, thread) = result
            .recv_timeout(Duration::from_secs(10))
            .expect("the task read every byte");
        assert_eq!(got, b"abcdefgh");
        assert!(
            thread
                .as_deref()
                .is_some_and(|name| name.starts_with("worker-")),
            "read on {thread:?}"
        );
    }

    #[test]
    fn a_socket_used_outside_the_runtimes_is_an_error_not_a_panic() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
        let _client = std::net::TcpStream::connect(listener.local_addr().expect("its address"))
            .expect("connect");
        let (socket, _) = listener.accept().expect("accept");
        let stream = TokioStream::accepted(socket);
        let mut buf = [0u8; 4];
        let read = stream.try_read(&mut buf);
        assert!(
            matches!(&read, Err(e) if e.to_string().contains("outside the runtimes")),
            "{read:?}"
        );
        assert!(
            stream.local_addr().is_ok(),
            "the address is there before registration"
        );
    }
}
