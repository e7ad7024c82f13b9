//! The control connection to one cluster, run on any [`Runtime`]: one socket, the core's
//! [`ControlConnection`] deciding what to send and where to connect.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use cqlmirror_core::config::Upstream;
use cqlmirror_core::control::{ControlAction, ControlConnection, ControlEvent};
use cqlmirror_core::proxy::Proxy;

use crate::connection::{Connecting, connect};
use crate::runtime::{Runtime, Stream, Timer};
use crate::shutdown::Shutdown;

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 16 * 1024;

/// What woke the control task.
struct Wake<S> {
    readable: bool,
    writable: bool,
    connected: Option<io::Result<S>>,
    timer: bool,
    shutdown: bool,
}

impl<S> Default for Wake<S> {
    fn default() -> Self {
        Self {
            readable: false,
            writable: false,
            connected: None,
            timer: false,
            shutdown: false,
        }
    }
}

/// Runs the control connection to `upstream` until shutdown.
pub(crate) async fn run<R: Runtime>(
    runtime: R,
    proxy: Arc<Proxy>,
    upstream: Upstream,
    shutdown: Shutdown,
) {
    let mut control = ControlConnection::new(proxy, upstream, Instant::now());
    let mut socket: Option<R::Stream> = None;
    let mut connecting: Option<Connecting<R::Stream>> = None;
    let mut recv = BytesMut::new();
    let mut send: VecDeque<Bytes> = VecDeque::new();
    let mut timer = runtime.timer();
    let mut stopping = shutdown.waiter();
    loop {
        while let Some(action) = control.poll_action() {
            match action {
                ControlAction::Connect(endpoint) => {
                    if let Some(old) = socket.take() {
                        old.close();
                    }
                    recv.clear();
                    send.clear();
                    connecting = Some(Box::pin(connect(runtime.clone(), endpoint)));
                }
                ControlAction::Close => {
                    if let Some(old) = socket.take() {
                        old.close();
                    }
                    connecting = None;
                    recv.clear();
                    send.clear();
                }
                other => log::debug!("control connection: {other:?} is not supported here"),
            }
        }
        while let Some(bytes) = control.poll_transmit() {
            send.push_back(bytes);
        }
        if let Some(s) = &socket {
            if let Err(e) = flush(s, &mut send) {
                control.handle_closed(&e.to_string(), Instant::now());
                continue;
            }
        }
        while let Some(event) = control.poll_event() {
            log_event(&event);
        }
        if let Some(at) = control.poll_timeout() {
            timer.set(at);
        }

        let wake = poll_fn(|cx| {
            let mut wake = Wake::default();
            let mut any = false;
            if let Some(s) = &socket {
                if s.poll_readable(cx).is_ready() {
                    wake.readable = true;
                    any = true;
                }
                if !send.is_empty() && s.poll_writable(cx).is_ready() {
                    wake.writable = true;
                    any = true;
                }
            }
            if let Some(future) = &mut connecting {
                if let Poll::Ready(result) = future.as_mut().poll(cx) {
                    wake.connected = Some(result);
                    any = true;
                }
            }
            if timer.poll_fired(cx).is_ready() {
                wake.timer = true;
                any = true;
            }
            if stopping.poll_requested(cx).is_ready() {
                wake.shutdown = true;
                any = true;
            }
            if any {
                Poll::Ready(wake)
            } else {
                Poll::Pending
            }
        })
        .await;

        if wake.shutdown {
            if let Some(s) = socket.take() {
                s.close();
            }
            return;
        }
        let now = Instant::now();
        if let Some(result) = wake.connected {
            connecting = None;
            match result {
                Ok(s) => {
                    socket = Some(s);
                    control.handle_connected(now);
                }
                Err(e) => control.handle_closed(&e.to_string(), now),
            }
        }
        if wake.readable {
            if let Some(s) = &socket {
                match read(s, &mut recv) {
                    Ok(true) => control.handle_bytes(&mut recv, now),
                    Ok(false) => {
                        control.handle_bytes(&mut recv, now);
                        control.handle_closed("closed by the node", now);
                    }
                    Err(e) => control.handle_closed(&e.to_string(), now),
                }
            }
        }
        if wake.timer {
            control.handle_timeout(now);
        }
    }
}

/// Reads what is there; false at the end of the stream.
fn read<S: Stream>(socket: &S, recv: &mut BytesMut) -> io::Result<bool> {
    let mut chunk = [0u8; READ_CHUNK];
    loop {
        match socket.try_read(&mut chunk) {
            Ok(0) => return Ok(false),
            Ok(n) => recv.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Writes what the socket takes.
fn flush<S: Stream>(socket: &S, send: &mut VecDeque<Bytes>) -> io::Result<()> {
    while !send.is_empty() {
        let slices: Vec<IoSlice<'_>> = send.iter().map(|b| IoSlice::new(b)).collect();
        match socket.try_write_vectored(&slices) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the node takes no more bytes",
                ));
            }
            Ok(mut written) => {
                while written > 0 {
                    let Some(front) = send.front_mut() else { break };
                    if written >= front.len() {
                        written -= front.len();
                        send.pop_front();
                    } else {
                        front.advance(written);
                        written = 0;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn log_event(event: &ControlEvent) {
    match event {
        ControlEvent::Refreshed { first: true, .. } | ControlEvent::NodeStatus { .. } => {
            log::info!("{event}");
        }
        ControlEvent::Failed { .. } => log::warn!("{event}"),
        _ => log::debug!("{event}"),
    }
}
