//! The little a runtime must provide: threads, tasks, TCP sockets with readiness, timers.
//!
//! Everything else (the connection loop, accepting, shutdown, the wall clock) is written once
//! in this crate over these traits, so `proxy-smol` and `proxy-tokio` behave the same by
//! construction. An adapter implements them over its runtime's own types; nothing here is
//! boxed per read or write, so the loop is as fast as one written against the runtime directly.
//!
//! Sockets are used readiness-style: the loop waits for [`Stream::poll_readable`] or
//! [`Stream::poll_writable`], then calls the non-blocking [`Stream::try_read`] /
//! [`Stream::try_write_vectored`] until they return [`io::ErrorKind::WouldBlock`] (or it has
//! done enough for one wake-up). A readiness that turns out stale is harmless: the try call
//! says `WouldBlock` and the loop waits again.

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Instant;

/// An async runtime, as the connection loop uses it. Cheap to clone (a handle).
pub trait Runtime: Clone + Send + Sync + 'static {
    type Stream: Stream;
    type Listener: Listener<Stream = Self::Stream>;
    type Timer: Timer;

    /// Starts the runtime with `threads` worker threads, runs `main` on the calling thread to
    /// completion, then stops the workers. Tasks still running are dropped.
    fn run<F: Future>(threads: usize, main: impl FnOnce(Self) -> F) -> io::Result<F::Output>;

    /// Runs `task` in the background on the worker threads.
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static);

    /// A listening socket on `address` (called from within [`Runtime::run`]).
    fn bind(&self, address: SocketAddr) -> io::Result<Self::Listener>;

    /// Opens a TCP connection to `address` (called from a task of this runtime).
    fn connect(address: SocketAddr) -> impl Future<Output = io::Result<Self::Stream>> + Send;

    /// Resolves a host name into socket addresses (called from a task of this runtime;
    /// addresses written as IPs never get here).
    fn resolve(host: String, port: u16)
    -> impl Future<Output = io::Result<Vec<SocketAddr>>> + Send;

    /// A timer that has not been set.
    fn timer(&self) -> Self::Timer;
}

/// A connected TCP socket in non-blocking mode.
pub trait Stream: Send + Sync + 'static {
    /// Ready once the socket may have bytes to read (or an error or end of stream).
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Ready once the socket may accept bytes.
    fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// One non-blocking read; `Ok(0)` is the end of the stream.
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize>;

    /// One non-blocking vectored write.
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;

    /// Turns Nagle's algorithm off: frames go out as soon as they are written.
    fn set_nodelay(&self) -> io::Result<()>;

    /// The local address of the connection: for an accepted client, the address it reached
    /// this proxy at.
    fn local_addr(&self) -> io::Result<SocketAddr>;

    /// Closes the socket; everything meant for it has been written.
    fn close(self)
    where
        Self: Sized,
    {
        drop(self);
    }
}

/// A listening TCP socket.
pub trait Listener: Send + Sync + 'static {
    type Stream: Stream;

    /// The next accepted connection, in non-blocking mode.
    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(Self::Stream, SocketAddr)>>;
}

/// A one-shot timer that can be moved.
pub trait Timer: Send + Unpin + 'static {
    /// Fires at `at` (at once if that has passed), replacing any earlier setting.
    fn set(&mut self, at: Instant);

    /// Ready once when the time set has come; pending again until the next [`Timer::set`].
    fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<()>;
}

/// Waits for `duration` on the runtime's timers.
pub(crate) async fn sleep<R: Runtime>(runtime: &R, duration: std::time::Duration) {
    let mut timer = runtime.timer();
    timer.set(Instant::now() + duration);
    std::future::poll_fn(|cx| timer.poll_fired(cx)).await;
}
