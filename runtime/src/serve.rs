//! The accept loop, the drain at shutdown, and the wall clock the core stamps writes with.

use std::future::poll_fn;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};

use cqlmirror_core::config::Upstream;
use cqlmirror_core::proxy::Proxy;

use crate::runtime::{Listener, Runtime, Stream, sleep};
use crate::shutdown::Shutdown;
use crate::{connection, control};

/// How long a shutdown (SIGTERM, Ctrl-C) waits for open connections to finish their requests.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the proxy's wall clock is re-read: write timestamps follow the system clock
/// (NTP corrections included) to within this, over a migration of weeks.
const WALL_CLOCK_PERIOD: Duration = Duration::from_secs(1);

/// Accepts clients until shutdown is requested, then waits for open connections to finish.
pub(crate) async fn serve<R: Runtime>(
    runtime: R,
    listener: R::Listener,
    proxy: Arc<Proxy>,
    shutdown: Shutdown,
) -> ExitCode {
    runtime.spawn(follow_wall_clock(runtime.clone(), Arc::clone(&proxy)));
    for upstream in Upstream::BOTH {
        runtime.spawn(control::run(
            runtime.clone(),
            Arc::clone(&proxy),
            upstream,
            shutdown.clone(),
        ));
    }
    let active = Arc::new(AtomicUsize::new(0));
    let mut stopping = shutdown.waiter();
    loop {
        let accepted = poll_fn(|cx| {
            if stopping.poll_requested(cx).is_ready() {
                return Poll::Ready(None);
            }
            listener.poll_accept(cx).map(Some)
        })
        .await;
        match accepted {
            Some(Ok((client, address))) => {
                let admitted = match proxy.admission().admit(Instant::now()) {
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
                let (proxy, active, shutdown) =
                    (Arc::clone(&proxy), Arc::clone(&active), shutdown.clone());
                runtime.spawn({
                    let runtime = runtime.clone();
                    async move {
                        connection::run(runtime, proxy, client, shutdown).await;
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
    drop(listener);
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
