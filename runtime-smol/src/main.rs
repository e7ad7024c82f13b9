//! `proxy-smol`: cqlmirror driven by the smol runtime.
//!
//! Everything here is plumbing: accept connections, open backend connections, wait for socket
//! readiness and timers, and hand each wake-up to the core's [`Driver`]. Every protocol
//! decision is made in `cqlmirror-core`.

use std::future::{Future, poll_fn};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::thread;
use std::time::{Instant, SystemTime};

use async_io::{Async, Timer};
use async_signal::{Signal, Signals};
use cqlmirror_core::cli::{self, Cli, DRAIN_TIMEOUT};
use cqlmirror_core::config::{Endpoint, Upstream};
use cqlmirror_core::driver::Driver;
use cqlmirror_core::proxy::{Proxy, WallClock};
use cqlmirror_core::session::Peer;
use smol::future::FutureExt;
use smol::stream::StreamExt;
use smol::{Executor, Task};

const BIN: &str = "proxy-smol";

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
    let listener = match Async::<TcpListener>::bind(settings.listen) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!(
                "{BIN}: cannot listen on {}: {e}; pick another --proxy-port or --listen-address",
                settings.listen
            );
            return ExitCode::from(1);
        }
    };
    log::info!(
        "{BIN} {}: {}",
        cqlmirror_core::VERSION,
        cli::describe(&settings)
    );

    let executor: Arc<Executor<'static>> = Arc::new(Executor::new());
    let (stop, stopped) = smol::channel::unbounded::<()>();
    let workers: Vec<_> = (1..settings.threads)
        .map(|_| {
            let executor = Arc::clone(&executor);
            let stopped = stopped.clone();
            thread::spawn(move || smol::block_on(executor.run(stopped.recv())))
        })
        .collect();
    let code = smol::block_on(executor.run(serve(listener, proxy, Arc::clone(&executor))));
    drop(stop);
    for worker in workers {
        let _ = worker.join();
    }
    code
}

/// Accepts clients until SIGTERM or Ctrl-C, then waits for open connections to finish.
async fn serve(
    listener: Async<TcpListener>,
    proxy: Arc<Proxy>,
    executor: Arc<Executor<'static>>,
) -> ExitCode {
    let mut signals = match Signals::new([Signal::Term, Signal::Int]) {
        Ok(signals) => signals,
        Err(e) => {
            log::error!("cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = async { Some(listener.accept().await) }
            .or(async {
                signals.next().await;
                None
            })
            .await;
        match accepted {
            Some(Ok((client, address))) => {
                let _ = client.get_ref().set_nodelay(true);
                log::debug!("accepted a client from {address}");
                active.fetch_add(1, Ordering::Relaxed);
                let (proxy, executor2, active) = (
                    Arc::clone(&proxy),
                    Arc::clone(&executor),
                    Arc::clone(&active),
                );
                executor
                    .spawn(async move {
                        connection(proxy, client, executor2).await;
                        active.fetch_sub(1, Ordering::Relaxed);
                    })
                    .detach();
            }
            Some(Err(e)) => {
                // Out of file descriptors or similar: back off instead of spinning.
                log::warn!("accept failed: {e}");
                Timer::after(std::time::Duration::from_millis(100)).await;
            }
            None => break,
        }
    }
    drop(listener);
    let open = active.load(Ordering::Relaxed);
    log::info!(
        "shutting down: no new connections; waiting up to {DRAIN_TIMEOUT:?} for {open} open ones"
    );
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while active.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        Timer::after(std::time::Duration::from_millis(50)).await;
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

/// What woke a connection's task.
#[derive(Default)]
struct Wake {
    readable: [bool; 3],
    writable: [bool; 3],
    connected: [Option<io::Result<Async<TcpStream>>>; 2],
    timer: bool,
}

/// Runs one client connection and its two backend connections to the end.
async fn connection(proxy: Arc<Proxy>, client: Async<TcpStream>, executor: Arc<Executor<'static>>) {
    let mut driver = Driver::new(proxy.new_session(Instant::now()));
    let id = driver.session().id();
    let mut sockets: [Option<Async<TcpStream>>; 3] = [Some(client), None, None];
    let mut connecting: [Option<Task<io::Result<Async<TcpStream>>>>; 2] = [None, None];
    let mut timer = Timer::never();
    let mut armed = None;
    loop {
        while let Some((upstream, endpoint)) = driver.poll_connect() {
            connecting[upstream.index()] = Some(executor.spawn(connect(endpoint)));
        }
        for peer in Peer::ALL {
            if driver.wants_write(peer) {
                if let Some(socket) = &sockets[slot(peer)] {
                    let mut stream: &TcpStream = socket.get_ref();
                    driver.on_writable(peer, |bufs| stream.write_vectored(bufs), Instant::now());
                }
            }
        }
        while let Some(peer) = driver.poll_close() {
            if let Some(socket) = sockets[slot(peer)].take() {
                let _ = socket.get_ref().shutdown(Shutdown::Both);
            }
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
        // The earliest deadline moves with nearly every answered request, and re-arming an
        // async-io timer wakes the reactor thread. A timer that fires early is harmless (the
        // session ignores early calls and the timer is re-armed then), so it only moves earlier.
        if let Some(at) = driver.poll_timeout() {
            if armed.is_none_or(|armed| at < armed) {
                timer.set_at(at);
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
                if driver.wants_read(peer) && socket.poll_readable(cx).is_ready() {
                    wake.readable[slot(peer)] = true;
                    any = true;
                }
                if driver.wants_write(peer) && socket.poll_writable(cx).is_ready() {
                    wake.writable[slot(peer)] = true;
                    any = true;
                }
            }
            for upstream in Upstream::BOTH {
                if let Some(task) = &mut connecting[upstream.index()] {
                    if let Poll::Ready(result) = Pin::new(task).poll(cx) {
                        wake.connected[upstream.index()] = Some(result);
                        any = true;
                    }
                }
            }
            if Pin::new(&mut timer).poll(cx).is_ready() {
                wake.timer = true;
                armed = None;
                any = true;
            }
            if any {
                Poll::Ready(wake)
            } else {
                Poll::Pending
            }
        })
        .await;

        let now = Instant::now();
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
                    let mut stream: &TcpStream = socket.get_ref();
                    driver.on_readable(peer, |buf| stream.read(buf), now);
                }
            }
        }
        if wake.timer {
            driver.on_timeout(now);
        }
    }
}

/// Opens a backend connection: resolves the contact point and tries its addresses in turn.
async fn connect(endpoint: Endpoint) -> io::Result<Async<TcpStream>> {
    let addresses = smol::net::resolve((endpoint.host.as_str(), endpoint.port)).await?;
    let mut last = None;
    for address in addresses {
        match Async::<TcpStream>::connect(address).await {
            Ok(socket) => {
                socket.get_ref().set_nodelay(true)?;
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
