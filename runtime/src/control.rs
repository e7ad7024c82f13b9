//! The control connection to one cluster, run on any [`Runtime`]: one socket, the core's
//! [`ControlConnection`] deciding what to send and where to connect, and keeping the buffers.

use std::future::poll_fn;
use std::io;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use cqlmirror_core::config::Upstream;
use cqlmirror_core::control::{ControlAction, ControlConnection, ControlEvent};
use cqlmirror_core::proxy::Proxy;

use crate::connection::{Connecting, connect};
use crate::runtime::{Runtime, Timer};
use crate::shutdown::Shutdown;
use crate::tls::{Link, TlsHolder};

/// What woke the control task.
struct Wake<S> {
    readable: bool,
    connected: Option<io::Result<S>>,
    timer: bool,
    shutdown: bool,
}

impl<S> Default for Wake<S> {
    fn default() -> Self {
        Self {
            readable: false,
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
    tls: Arc<TlsHolder>,
    shutdown: Shutdown,
) {
    let mut control = ControlConnection::new(proxy, upstream, Instant::now());
    let mut socket: Option<Link<R::Stream>> = None;
    let mut connecting: Option<Connecting<Link<R::Stream>>> = None;
    let mut timer = runtime.timer();
    let mut stopping = shutdown.waiter();
    loop {
        if let Some(s) = &mut socket {
            if control.wants_write() {
                control.handle_writable(|bufs| s.try_write_vectored(bufs), Instant::now());
            }
            if s.has_pending_output() {
                let _ = s.try_flush();
            }
        }
        while let Some(action) = control.poll_action() {
            match action {
                ControlAction::Connect(endpoint) => {
                    if let Some(old) = socket.take() {
                        old.close();
                    }
                    let tls = tls.current().backend(upstream).cloned();
                    connecting = Some(Box::pin(async move {
                        connect::<R>(endpoint, tls.as_ref()).await
                    }));
                }
                ControlAction::Close => {
                    if let Some(old) = socket.take() {
                        old.close();
                    }
                    connecting = None;
                }
                other => log::debug!("control connection: {other:?} is not supported here"),
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
                if control.is_connected() && s.poll_readable(cx).is_ready() {
                    wake.readable = true;
                    any = true;
                }
                // Writing happens at the top of the loop.
                if (control.wants_write() || s.has_pending_output())
                    && s.poll_writable(cx).is_ready()
                {
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
            if let Some(s) = &mut socket {
                control.handle_readable(|buf| s.try_read(buf), now);
            }
        }
        if wake.timer {
            control.handle_timeout(now);
        }
    }
}

fn log_event(event: &ControlEvent) {
    match event {
        ControlEvent::Refreshed { first: true, .. }
        | ControlEvent::NodeStatus { .. }
        | ControlEvent::SchemaRead { first: true, .. } => {
            log::info!("{event}");
        }
        ControlEvent::Failed { first: true, .. }
        | ControlEvent::SchemaFailed { first: true, .. } => {
            log::warn!("{event}")
        }
        _ => log::debug!("{event}"),
    }
}
