//! One client connection and its two backend connections, run to the end on any [`Runtime`].
//!
//! Everything here is plumbing: open the backend connections the session asks for, wait for
//! socket readiness, the session's timer and shutdown, and hand each wake-up to the core's
//! [`Driver`]. Every protocol decision is made in `cqlmirror-core`.

use std::future::{Future, poll_fn};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use cqlmirror_core::config::{Endpoint, Upstream};
use cqlmirror_core::driver::Driver;
use cqlmirror_core::proxy::Proxy;
use cqlmirror_core::session::{Peer, Session};

use crate::logging::log_event;
use crate::ops::traffic::TRAFFIC;
use crate::runtime::{Runtime, Stream, Timer};
use crate::shutdown::Shutdown;
use crate::tls::{BackendTls, Link, TlsSettings};

pub(crate) type Connecting<S> = Pin<Box<dyn Future<Output = io::Result<S>> + Send>>;

/// What woke a connection's task.
struct Wake<S> {
    readable: [bool; 3],
    writable: [bool; 3],
    connected: [Option<io::Result<S>>; 2],
    timer: bool,
    shutdown: bool,
}

impl<S> Default for Wake<S> {
    fn default() -> Self {
        Self {
            readable: [false; 3],
            writable: [false; 3],
            connected: [None, None],
            timer: false,
            shutdown: false,
        }
    }
}

/// Runs the session of a newly accepted client until it is finished.
pub(crate) async fn run<R: Runtime>(
    runtime: R,
    proxy: Arc<Proxy>,
    client: Link<R::Stream>,
    accepted_at: Instant,
    tls: Arc<TlsSettings>,
    shutdown: Shutdown,
) {
    // The session's clock starts at the accept: the client's handshake deadline covers its
    // TLS handshake too.
    let session = match client.local_addr() {
        Ok(local) => Session::accepted(proxy, local, accepted_at),
        Err(_) => Session::new(proxy, accepted_at),
    };
    let mut driver = Driver::new(session);
    let id = driver.session().id();
    let mut sockets: [Option<Link<R::Stream>>; 3] = [Some(client), None, None];
    let mut connecting: [Option<Connecting<Link<R::Stream>>>; 2] = [None, None];
    let mut timer = runtime.timer();
    let mut armed = None;
    // Dropped once the session was told, so that it is told once.
    let mut stopping = Some(shutdown.waiter());
    let mut paused_since: [Option<Instant>; 3] = [None; 3];
    loop {
        // Closes first: a connection opened again replaces the socket being closed, and
        // closing must not cancel the new attempt.
        close_sockets(&mut driver, &mut sockets, &mut connecting);
        while let Some((upstream, endpoint)) = driver.poll_connect() {
            let tls = tls.backend(upstream).cloned();
            connecting[upstream.index()] = Some(Box::pin(async move {
                connect::<R>(endpoint, tls.as_ref()).await
            }));
        }
        for peer in Peer::ALL {
            if let Some(socket) = &mut sockets[peer.index()] {
                if driver.wants_write(peer) {
                    driver.on_writable(
                        peer,
                        |bufs| {
                            let written = socket.try_write_vectored(bufs);
                            if let Ok(n) = written {
                                TRAFFIC.sent(peer, n);
                            }
                            written
                        },
                        Instant::now(),
                    );
                }
                // TLS records made from what was written, which the socket did not take yet
                // (errors show on the next read or write).
                if socket.has_pending_output() {
                    let _ = socket.try_flush();
                }
            }
        }
        close_sockets(&mut driver, &mut sockets, &mut connecting);
        while let Some(event) = driver.poll_event() {
            crate::journal::installed::observe(&event);
            crate::ops::metrics::observe(&event);
            log_event(id, &event);
        }
        if driver.is_finished() {
            for upstream in Upstream::BOTH {
                if sockets[Peer::of(upstream).index()].take().is_some() {
                    TRAFFIC.disconnected(upstream);
                }
            }
            break;
        }
        // Backpressure: how long the proxy leaves each peer unread.
        for peer in Peer::ALL {
            let reading = sockets[peer.index()].is_none() || driver.wants_read(peer);
            match (&paused_since[peer.index()], reading) {
                (None, false) => paused_since[peer.index()] = Some(Instant::now()),
                (Some(since), true) => {
                    TRAFFIC.paused(peer, since.elapsed());
                    paused_since[peer.index()] = None;
                }
                _ => {}
            }
        }
        // The earliest deadline moves with nearly every answered request, and re-arming a
        // runtime timer costs a timer-wheel update (async-io: a wake-up of its reactor). A
        // timer that fires early is harmless (the session ignores early calls and the timer is
        // re-armed then), so it only moves earlier.
        if let Some(at) = driver.poll_timeout() {
            if armed.is_none_or(|armed| at < armed) {
                timer.set(at);
                armed = Some(at);
            }
        }

        let mut wake = poll_fn(|cx| {
            let mut wake = Wake::default();
            let mut any = false;
            for peer in Peer::ALL {
                let Some(socket) = &sockets[peer.index()] else {
                    continue;
                };
                if driver.wants_read(peer) && socket.poll_readable(cx).is_ready() {
                    wake.readable[peer.index()] = true;
                    any = true;
                }
                if (driver.wants_write(peer) || socket.has_pending_output())
                    && socket.poll_writable(cx).is_ready()
                {
                    wake.writable[peer.index()] = true;
                    any = true;
                }
            }
            for upstream in Upstream::BOTH {
                if let Some(future) = &mut connecting[upstream.index()] {
                    if let Poll::Ready(result) = future.as_mut().poll(cx) {
                        wake.connected[upstream.index()] = Some(result);
                        any = true;
                    }
                }
            }
            if timer.poll_fired(cx).is_ready() {
                wake.timer = true;
                any = true;
            }
            if let Some(waiter) = &mut stopping {
                if waiter.poll_requested(cx).is_ready() {
                    wake.shutdown = true;
                    any = true;
                }
            }
            if any {
                Poll::Ready(wake)
            } else {
                Poll::Pending
            }
        })
        .await;

        let now = Instant::now();
        if wake.timer {
            armed = None;
        }
        for upstream in Upstream::BOTH {
            if let Some(result) = wake.connected[upstream.index()].take() {
                connecting[upstream.index()] = None;
                match result {
                    Ok(socket) => {
                        if let Some(old) = sockets[Peer::of(upstream).index()].replace(socket) {
                            old.close();
                        } else {
                            TRAFFIC.connected(upstream);
                        }
                        driver.on_connected(upstream, now);
                    }
                    Err(e) => driver.on_connect_failed(upstream, &e.to_string(), now),
                }
            }
        }
        for peer in Peer::ALL {
            if wake.readable[peer.index()] {
                if let Some(socket) = &mut sockets[peer.index()] {
                    driver.on_readable(
                        peer,
                        |buf| {
                            let read = socket.try_read(buf);
                            if let Ok(n) = read {
                                TRAFFIC.received(peer, n);
                            }
                            read
                        },
                        now,
                    );
                }
            }
        }
        if wake.timer {
            driver.on_timeout(now);
        }
        if wake.shutdown {
            stopping = None;
            driver.on_shutdown(now);
        }
    }
}

/// Closes the sockets the driver is done with, and abandons their connection attempts.
fn close_sockets<S: Stream>(
    driver: &mut Driver,
    sockets: &mut [Option<Link<S>>; 3],
    connecting: &mut [Option<Connecting<Link<S>>>; 2],
) {
    while let Some(peer) = driver.poll_close() {
        if let Some(socket) = sockets[peer.index()].take() {
            socket.close();
            if let Some(upstream) = peer.upstream() {
                TRAFFIC.disconnected(upstream);
            }
        }
        if let Some(upstream) = peer.upstream() {
            connecting[upstream.index()] = None;
        }
    }
}

/// Opens a backend connection: resolves the endpoint (unless it is an IP address, as the
/// nodes of a cluster's topology are), tries its addresses in turn, and with `tls` completes
/// the TLS handshake, checking the certificate against the endpoint's host (or the configured
/// server name). A TLS failure is an error of the connection attempt, with its reason.
pub(crate) async fn connect<R: Runtime>(
    endpoint: Endpoint,
    tls: Option<&BackendTls>,
) -> io::Result<Link<R::Stream>> {
    let addresses = match endpoint.host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, endpoint.port)],
        Err(_) => R::resolve(endpoint.host.clone(), endpoint.port).await?,
    };
    let mut last = None;
    for address in addresses {
        match R::connect(address).await {
            Ok(socket) => {
                socket.set_nodelay()?;
                return match tls {
                    None => Ok(Link::Plain(socket)),
                    Some(tls) => match tls.connect(socket, &endpoint.host).await {
                        Ok(stream) => Ok(Link::Tls(Box::new(stream))),
                        Err(e) => Err(io::Error::new(e.kind(), format!("{address}: {e}"))),
                    },
                };
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{endpoint} resolves to no address"),
        )
    }))
}
