//! How fast the journal takes records with each fsync policy: appends records of a typical
//! size as fast as the writer thread takes them (waiting when its queue is full, as a burst
//! of missed writes would not), then flushes, and prints the rate.
//!
//! `cargo run --release -p cqlmirror-runtime --example journal_throughput [DIR] [RECORDS]`
//! (DIR defaults to a directory in the system's temporary directory; use one on the disk the
//! journal will live on: fsync costs what that disk makes it cost).

use std::time::{Duration, Instant};

use cqlmirror_core::config::Upstream;
use cqlmirror_core::frame::ProtocolVersion;
use cqlmirror_core::journal::{
    BoundValue, Cause, Outcome, Record, Statement, Values, Write, WriteKind,
};
use cqlmirror_core::wire::Consistency;
use cqlmirror_runtime::journal::{FsyncPolicy, Journal, JournalSettings, Refused};

fn main() {
    let mut args = std::env::args().skip(1);
    let base = args.next().map_or_else(
        || std::env::temp_dir().join(format!("cqlmirror-journal-bench-{}", std::process::id())),
        Into::into,
    );
    let records: u32 = args.next().and_then(|n| n.parse().ok()).unwrap_or(200_000);
    let size = record(0).to_bytes().len();
    println!(
        "{records} records of {size} bytes each, in {}",
        base.display()
    );
    for fsync in [
        FsyncPolicy::Always,
        FsyncPolicy::default(),
        FsyncPolicy::Never,
    ] {
        let dir = base.join(fsync.name());
        let _ = std::fs::remove_dir_all(&dir);
        let journal = match Journal::open(JournalSettings {
            fsync,
            ..JournalSettings::new(&dir)
        }) {
            Ok(journal) => journal,
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        };
        let start = Instant::now();
        let mut waits = 0u64;
        for n in 0..records {
            let mut r = record(n);
            loop {
                match journal.append(r) {
                    Ok(()) => break,
                    Err(Refused::Queue) => {
                        waits += 1;
                        std::thread::sleep(Duration::from_micros(50));
                        r = record(n);
                    }
                    Err(other) => {
                        eprintln!("refused: {other:?}");
                        std::process::exit(1);
                    }
                }
            }
        }
        if let Err(e) = journal.flush() {
            eprintln!("flush: {e}");
        }
        let took = start.elapsed().as_secs_f64();
        let stats = journal.stats();
        println!(
            "{:>8}: {:>9.0} records/s, {:>7.1} MiB/s, {:.2} s, {} segments, queue full {} times",
            fsync.name(),
            f64::from(records) / took,
            stats.bytes as f64 / took / f64::from(1 << 20),
            took,
            stats.segments,
            waits
        );
        let _ = journal.close();
        let _ = std::fs::remove_dir_all(&dir);
    }
    let _ = std::fs::remove_dir(&base);
}

/// A typical missed write: a prepared INSERT with a few values.
fn record(n: u32) -> Record {
    Record {
        wall_micros: 1_700_000_000_000_000 + i64::from(n),
        cluster: Upstream::Target,
        version: ProtocolVersion::V4,
        keyspace: Some("shop".into()),
        write: Write::Single(Statement {
            prepared: true,
            text: "INSERT INTO orders (id, customer, total, items) VALUES (?, ?, ?, ?)".into(),
            values: Values::Positional(vec![
                BoundValue::Bytes(n.to_be_bytes().repeat(4)),
                BoundValue::Bytes(b"customer-000042".to_vec()),
                BoundValue::Bytes(vec![0, 0, 0, 0, 0, 0, 4, 210]),
                BoundValue::Bytes(vec![7; 40]),
            ]),
        }),
        consistency: Consistency::LOCAL_QUORUM,
        serial_consistency: None,
        timestamp: Some(1_700_000_000_000_000 + i64::from(n)),
        now_in_seconds: None,
        kind: WriteKind::Plain,
        outcome: Outcome::Unknown,
        cause: Cause::Timeout,
        tables: Vec::new(),
    }
}
