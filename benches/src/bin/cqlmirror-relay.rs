//! `cqlmirror-relay`: the lowest-cost forwarder on the runtime of `proxy-smol`, the baseline
//! of the load bench.
//!
//! Accepts clients, opens one connection to the backend for each, and copies bytes both ways
//! without parsing them (TCP_NODELAY on both sockets). It runs on smol with the same executor
//! layout as `proxy-smol` (`--threads` threads with an executor each, the number of CPUs by
//! default, clients dealt to them in turn) and one task per client, so the difference between
//! the two is the proxy's protocol work and its second backend connection.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;

use clap::Parser;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::{Async, Executor};

/// Bytes asked of a socket per read, as the proxy's driver does.
const READ_CHUNK: usize = 16 * 1024;

/// A raw TCP relay: every client connection is copied byte for byte to BACKEND.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None, max_term_width = 100)]
struct Args {
    /// The backend, `host:port`.
    #[arg(value_name = "BACKEND")]
    backend: String,

    /// Address and port to listen on.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:29043")]
    listen: SocketAddr,

    /// Executor threads [default: the number of CPUs].
    #[arg(short = 't', long, value_name = "N")]
    threads: Option<usize>,
}

/// Copies `from` to `to` until `from` ends, then ends `to`'s sending side.
async fn pump(from: &Async<TcpStream>, to: &Async<TcpStream>) -> io::Result<()> {
    let mut buf = vec![0u8; READ_CHUNK];
    let (mut reader, mut writer) = (from, to);
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            let _ = to.get_ref().shutdown(Shutdown::Write);
            return Ok(());
        }
        writer.write_all(&buf[..n]).await?;
    }
}

async fn relay(client: Async<TcpStream>, backend: Arc<String>) -> io::Result<()> {
    client.get_ref().set_nodelay(true)?;
    let mut last = None;
    let mut upstream = None;
    for address in smol::net::resolve(backend.as_str()).await? {
        match Async::<TcpStream>::connect(address).await {
            Ok(socket) => {
                upstream = Some(socket);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let Some(upstream) = upstream else {
        return Err(last.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("{backend}: no address"))
        }));
    };
    upstream.get_ref().set_nodelay(true)?;
    // Both directions in one task, as the proxy runs a client and its backends in one task.
    let (a, b) = smol::future::zip(pump(&client, &upstream), pump(&upstream, &client)).await;
    a.and(b)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let threads = args
        .threads
        .unwrap_or_else(|| thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let listener = match Async::<TcpListener>::bind(args.listen) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("cqlmirror-relay: cannot listen on {}: {e}", args.listen);
            return ExitCode::from(1);
        }
    };
    eprintln!(
        "cqlmirror-relay: {} -> {} on {threads} thread(s)",
        args.listen, args.backend
    );
    let backend = Arc::new(args.backend);
    // One executor per thread and the accept loop on the calling thread, which does not drive
    // the reactor, as in proxy-smol.
    let executors: Vec<Arc<Executor<'static>>> =
        (0..threads).map(|_| Arc::new(Executor::new())).collect();
    for executor in &executors {
        let executor = Arc::clone(executor);
        thread::spawn(move || smol::block_on(executor.run(smol::future::pending::<()>())));
    }
    smol::future::block_on(serve(listener, backend, executors))
}

/// Accepts clients forever, one task each.
async fn serve(
    listener: Async<TcpListener>,
    backend: Arc<String>,
    executors: Vec<Arc<Executor<'static>>>,
) -> ExitCode {
    let mut turn = 0;
    loop {
        match listener.accept().await {
            Ok((client, _)) => {
                let backend = Arc::clone(&backend);
                turn = (turn + 1) % executors.len();
                executors[turn]
                    .spawn(async move {
                        if let Err(e) = relay(client, backend).await {
                            if e.kind() != io::ErrorKind::ConnectionReset {
                                eprintln!("cqlmirror-relay: connection ended: {e}");
                            }
                        }
                    })
                    .detach();
            }
            Err(e) => {
                eprintln!("cqlmirror-relay: accept failed: {e}");
                smol::Timer::after(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}
