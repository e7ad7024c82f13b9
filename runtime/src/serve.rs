//! The accept loop, the drain at shutdown, and the wall clock the core stamps writes with.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};

use cqlmirror_core::config::Upstream;
use cqlmirror_core::proxy::Proxy;

use crate::runtime::{Listener, Runtime, Stream, Timer, sleep};
use crate::shutdown::Shutdown;
use crate::tls::{Link, TlsHolder, TlsSettings};
use crate::{connection, control};

/// How long a shutdown (SIGTERM, Ctrl-C) waits for open connections to finish their requests.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the proxy's wall clock is re-read: write timestamps follow the system clock
/// (NTP corrections included) to within this, over a migration of weeks.
const WALL_CLOCK_PERIOD: Duration = Duration::from_secs(1);

/// A listening socket, and whether its clients are plaintext even with TLS to clients on
/// (`--proxy-plain-port`).
pub(crate) struct Listening<L> {
    pub(crate) listener: L,
    pub(crate) plaintext: bool,
}

/// Accepts clients until shutdown is requested, then waits for open connections to finish.
pub(crate) async fn serve<R: Runtime>(
    runtime: R,
    listeners: Vec<Listening<R::Listener>>,
    proxy: Arc<Proxy>,
    tls: Arc<TlsHolder>,
    shutdown: Shutdown,
) -> ExitCode {
    runtime.spawn(follow_wall_clock(runtime.clone(), Arc::clone(&proxy)));
    for upstream in Upstream::BOTH {
        runtime.spawn(control::run(
            runtime.clone(),
            Arc::clone(&proxy),
            upstream,
            Arc::clone(&tls),
            shutdown.clone(),
        ));
    }
    let active = Arc::new(AtomicUsize::new(0));
    let mut stopping = shutdown.waiter();
    // The listener polled first takes turns, so that a flood on one cannot starve the other.
    let mut first = 0;
    loop {
        let accepted = poll_fn(|cx| {
            if stopping.poll_requested(cx).is_ready() {
                return Poll::Ready(None);
            }
            for turn in 0..listeners.len() {
                let listening = &listeners[(first + turn) % listeners.len()];
                if let Poll::Ready(result) = listening.listener.poll_accept(cx) {
                    return Poll::Ready(Some(result.map(|a| (a, listening.plaintext))));
                }
            }
            Poll::Pending
        })
        .await;
        first = first.wrapping_add(1);
        match accepted {
            Some(Ok(((client, address), plaintext))) => {
                let accepted_at = Instant::now();
                let admitted = match proxy.admission().admit(accepted_at) {
                    Ok(admitted) => admitted,
                    Err(refused) => {
                        // Closed at once: the driver tries another proxy instance or later.
                        client.close();
                        if let Some(line) = refused.report {
                            log::warn!("{line}");
                        }
                        continue;
                    }
                };
                let _ = client.set_nodelay();
                log::debug!("accepted a client from {address}");
                active.fetch_add(1, Ordering::Relaxed);
                // The TLS settings in force now (a reload does not touch open connections).
                let (proxy, active, shutdown, tls) = (
                    Arc::clone(&proxy),
                    Arc::clone(&active),
                    shutdown.clone(),
                    tls.current(),
                );
                runtime.spawn({
                    let runtime = runtime.clone();
                    async move {
                        // The TLS handshake's future is boxed: inline, the task would keep
                        // its room (about 2.8 KiB) for as long as the connection lives.
                        let secured = if plaintext {
                            Some(Link::Plain(client))
                        } else {
                            Box::pin(secure::<R>(&runtime, &proxy, &tls, client, address)).await
                        };
                        if let Some(link) = secured {
                            connection::run(runtime, proxy, link, accepted_at, tls, shutdown).await;
                        }
                        active.fetch_sub(1, Ordering::Relaxed);
                        drop(admitted);
                    }
                });
            }
            Some(Err(e)) => {
                // Out of file descriptors or similar: back off instead of spinning, and log
                // once in a while with a count instead of at every attempt.
                if let Some(line) = proxy
                    .admission()
                    .accept_failed(&e.to_string(), Instant::now())
                {
                    log::warn!("{line}");
                }
                sleep(&runtime, Duration::from_millis(100)).await;
            }
            None => break,
        }
    }
    drop(listeners);
    let open = active.load(Ordering::Relaxed);
    log::info!(
        "shutting down: no new connections; {open} open ones finish their requests in flight (at most {DRAIN_TIMEOUT:?})"
    );
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while active.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        sleep(&runtime, Duration::from_millis(20)).await;
    }
    match active.load(Ordering::Relaxed) {
        0 => log::info!("stopped: every connection closed"),
        left => log::warn!(
            "stopped: {left} connections still had requests in flight after {DRAIN_TIMEOUT:?}"
        ),
    }
    ExitCode::SUCCESS
}

/// The client's connection as the session uses it: with TLS to clients, once the handshake
/// completed within `--handshake-timeout`; `None` (the socket closed, the failure logged)
/// when it did not.
async fn secure<R: Runtime>(
    runtime: &R,
    proxy: &Proxy,
    tls: &TlsSettings,
    client: R::Stream,
    address: std::net::SocketAddr,
) -> Option<Link<R::Stream>> {
    let Some(server) = &tls.clients else {
        return Some(Link::Plain(client));
    };
    let timeout = proxy.config().handshake_timeout;
    match within(runtime, timeout, server.accept(client)).await {
        Ok(stream) => Some(Link::Tls(Box::new(stream))),
        Err(e) => {
            let line = format!("client {address}: TLS handshake failed: {e}");
            if proxy.note_client_error(Instant::now()) {
                log::info!("{line}");
            } else {
                log::debug!("{line}");
            }
            None
        }
    }
}

/// `future`, or a timeout error once `limit` passed.
async fn within<R: Runtime, T>(
    runtime: &R,
    limit: Duration,
    future: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    let mut future = pin!(future);
    let mut timer = runtime.timer();
    timer.set(Instant::now() + limit);
    poll_fn(|cx| {
        if let Poll::Ready(result) = future.as_mut().poll(cx) {
            return Poll::Ready(result);
        }
        if timer.poll_fired(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("not completed within {limit:?} (--handshake-timeout)"),
            )));
        }
        Poll::Pending
    })
    .await
}

/// Re-reads the system clock periodically, so that proxy-made write timestamps follow it and
/// not the monotonic clock, which drifts from it over weeks.
async fn follow_wall_clock<R: Runtime>(runtime: R, proxy: Arc<Proxy>) {
    loop {
        sleep(&runtime, WALL_CLOCK_PERIOD).await;
        let now = Instant::now();
        proxy.handle_wall_clock(SystemTime::now(), now);
        // The count of refused connections that a burst left unreported.
        if let Some(line) = proxy.admission().pending_report(now) {
            log::warn!("{line}");
        }
        if let Some(line) = proxy.client_errors_report(now) {
            log::info!("{line}");
        }
    }
}
