//! `proxy-tokio`: cqlmirror driven by the tokio runtime.
//!
//! Everything here is plumbing: accept connections, open backend connections, wait for socket
//! readiness and timers, and hand each wake-up to the core's [`Driver`]. Every protocol
//! decision is made in `cqlmirror-core`; this file mirrors `proxy-smol`'s line for line.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};

use cqlmirror_core::cli::{self, Cli, DRAIN_TIMEOUT};
use cqlmirror_core::config::{Endpoint, Upstream};
use cqlmirror_core::driver::Driver;
use cqlmirror_core::proxy::{Proxy, WallClock};
use cqlmirror_core::session::Peer;
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::Sleep;

const BIN: &str = "proxy-tokio";

fn main() -> ExitCode {
    let settings = match Cli::parse_for(BIN).settings(cli::default_threads()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("{BIN}: {e}");
            return ExitCode::from(2);
        }
    };
    cli::init_logging(settings.debug);
    let clock = WallClock::new(Instant::now(), SystemTime::now());
    let proxy = match Proxy::new(settings.config.clone(), clock) {
        Ok(proxy) => proxy,
        Err(e) => {
            eprintln!("{BIN}: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{BIN}: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async {
        let listener = match TcpListener::bind(settings.listen).await {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!(
                    "{BIN}: cannot listen on {}: {e}; pick another --proxy-port or --listen-address",
                    settings.listen
                );
                return ExitCode::from(1);
            }
        };
        log::info!("{BIN} {}: {}", cqlmirror_core::VERSION, cli::describe(&settings));
        serve(listener, proxy).await
    })
}

/// Accepts clients until SIGTERM or Ctrl-C, then waits for open connections to finish.
async fn serve(listener: TcpListener, proxy: Arc<Proxy>) -> ExitCode {
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, address)) => {
                    let _ = client.set_nodelay(true);
                    log::debug!("accepted a client from {address}");
                    active.fetch_add(1, Ordering::Relaxed);
                    let (proxy, active) = (Arc::clone(&proxy), Arc::clone(&active));
                    tokio::spawn(async move {
                        connection(proxy, client).await;
                        active.fetch_sub(1, Ordering::Relaxed);
                    });
                }
                Err(e) => {
                    // Out of file descriptors or similar: back off instead of spinning.
                    log::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    drop(listener);
    let open = active.load(Ordering::Relaxed);
    log::info!(
        "shutting down: no new connections; waiting up to {DRAIN_TIMEOUT:?} for {open} open ones"
    );
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while active.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    log::info!("stopped");
    ExitCode::SUCCESS
}

fn slot(peer: Peer) -> usize {
    match peer {
        Peer::Client => 0,
        Peer::Source => 1,
        Peer::Target => 2,
    }
}

type Connecting = Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>;

/// What woke a connection's task.
#[derive(Default)]
struct Wake {
    readable: [bool; 3],
    writable: [bool; 3],
    connected: [Option<io::Result<TcpStream>>; 2],
    timer: bool,
}

/// Runs one client connection and its two backend connections to the end.
async fn connection(proxy: Arc<Proxy>, client: TcpStream) {
    let mut driver = Driver::new(proxy.new_session(Instant::now()));
    let id = driver.session().id();
    let mut sockets: [Option<TcpStream>; 3] = [Some(client), None, None];
    let mut connecting: [Option<Connecting>; 2] = [None, None];
    let mut timer: Option<Pin<Box<Sleep>>> = None;
    let mut armed = None;
    loop {
        while let Some((upstream, endpoint)) = driver.poll_connect() {
            connecting[upstream.index()] = Some(Box::pin(connect(endpoint)));
        }
        for peer in Peer::ALL {
            if driver.wants_write(peer) {
                if let Some(socket) = &sockets[slot(peer)] {
                    driver.on_writable(
                        peer,
                        |bufs| socket.try_write_vectored(bufs),
                        Instant::now(),
                    );
                }
            }
        }
        while let Some(peer) = driver.poll_close() {
            // Dropping the socket closes it; everything queued for it was written.
            sockets[slot(peer)] = None;
            if let Some(upstream) = peer.upstream() {
                connecting[upstream.index()] = None;
            }
        }
        while let Some(event) = driver.poll_event() {
            cli::log_event(id, &event);
        }
        if driver.is_finished() {
            break;
        }
        // The earliest deadline moves with nearly every answered request; resetting the
        // timer each time costs a timer-wheel update. A timer that fires early is harmless
        // (the session ignores early calls and the timer is re-armed then), so it only moves
        // earlier.
        if let Some(at) = driver.poll_timeout() {
            if armed.is_none_or(|armed| at < armed) {
                let deadline = tokio::time::Instant::from_std(at);
                match &mut timer {
                    Some(sleep) => sleep.as_mut().reset(deadline),
                    None => timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
                }
                armed = Some(at);
            }
        }

        let mut wake = poll_fn(|cx| {
            let mut wake = Wake::default();
            let mut any = false;
            for peer in Peer::ALL {
                let Some(socket) = &sockets[slot(peer)] else {
                    continue;
                };
                if driver.wants_read(peer) && socket.poll_read_ready(cx).is_ready() {
                    wake.readable[slot(peer)] = true;
                    any = true;
                }
                if driver.wants_write(peer) && socket.poll_write_ready(cx).is_ready() {
                    wake.writable[slot(peer)] = true;
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
            if let Some(sleep) = &mut timer {
                if sleep.as_mut().poll(cx).is_ready() {
                    wake.timer = true;
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
            timer = None;
            armed = None;
        }
        for upstream in Upstream::BOTH {
            if let Some(result) = wake.connected[upstream.index()].take() {
                connecting[upstream.index()] = None;
                match result {
                    Ok(socket) => {
                        sockets[slot(Peer::of(upstream))] = Some(socket);
                        driver.on_connected(upstream, now);
                    }
                    Err(e) => driver.on_connect_failed(upstream, &e.to_string(), now),
                }
            }
        }
        for peer in Peer::ALL {
            if wake.readable[slot(peer)] {
                if let Some(socket) = &sockets[slot(peer)] {
                    driver.on_readable(peer, |buf| socket.try_read(buf), now);
                }
            }
        }
        if wake.timer {
            driver.on_timeout(now);
        }
    }
}

/// Opens a backend connection: resolves the contact point and tries its addresses in turn.
async fn connect(endpoint: Endpoint) -> io::Result<TcpStream> {
    let addresses = tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port)).await?;
    let mut last = None;
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(socket) => {
                socket.set_nodelay(true)?;
                return Ok(socket);
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
