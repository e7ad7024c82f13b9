//! `proxy-smol replay ...` (and `proxy-tokio replay ...`): applies the journal of missed
//! writes (`--journal-dir`) to the cluster that missed them, in the order they were missed.
//!
//! - The journal directory is locked for the whole run: never beside a proxy writing it.
//! - Records whose [`Record::replay_action`] applies are sent over one plain connection
//!   ([`client`]) with their original write timestamp: a plain write applied twice, or older
//!   than what the cluster holds since, changes nothing (last write wins as it would have).
//! - The others (LWTs; counter updates and list appends/prepends whose outcome is unknown)
//!   are listed for an operator (`attention:`), with their statement, values and tables. A
//!   list write known not applied is applied and listed too (`check order:`): the element
//!   lands where the list is now, not where it would have.
//! - Progress: a bar (records, rate, ETA) on a terminal, a line every few seconds otherwise;
//!   `--rate` bounds records per second; the checkpoint (the position after the last record
//!   done) is saved every second and at the end, and the next run starts from it.
//! - A write the cluster refuses (three tries) stops the run (the checkpoint stays before it,
//!   so the next run tries it again) unless `--keep-going`, which lists it as failed and goes
//!   on.
//! - The loop itself ([`pass`]) is shared with the proxy's background replayer
//!   ([`background`], `--replay auto`).

pub mod background;
mod checkpoint;
mod client;
mod pass;

use std::io::IsTerminal as _;
use std::net::ToSocketAddrs as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use cqlmirror_core::config::{Credentials, Endpoint, Secret, Upstream};
use cqlmirror_core::journal::{Record, Values, Write};

use crate::cli::reads::Cluster;
use crate::journal::{DirLock, JournalReader, Position};
use client::{ApplyError, Client};
use pass::{Driver, Notice, Pass, PassOptions, Step, Tally};

/// Applies a journal of missed writes to the cluster that missed them.
#[derive(Debug, Parser)]
#[command(
    about = "Applies the journal of missed writes (--journal-dir of a stopped proxy) to the cluster that missed them",
    after_help = "Examples:\n  proxy-smol replay --journal-dir /var/lib/cqlmirror/journal 10.0.0.7\n  proxy-smol replay --journal-dir DIR --dry-run TARGET\n  proxy-smol replay --journal-dir DIR --rate 500 --target-username app --target-password-file /run/secrets/target TARGET"
)]
struct ReplayCli {
    /// The proxy's --journal-dir. The proxy must be stopped (the directory is locked).
    #[arg(long, value_name = "DIR")]
    journal_dir: PathBuf,

    /// The cluster to apply the writes to: contact points, comma-separated (host[:port]).
    #[arg(value_name = "TARGET")]
    target: String,

    /// The port of contact points that name none.
    #[arg(long, value_name = "PORT", default_value_t = 9042)]
    target_port: u16,

    /// Which cluster's missed writes to apply: the journal holds those of the secondary,
    /// the target unless the primary was switched.
    #[arg(long, value_enum, value_name = "CLUSTER", default_value = "target")]
    cluster: Cluster,

    /// The user replay logs in as (PasswordAuthenticator).
    #[arg(long, value_name = "NAME", env = "CQLMIRROR_TARGET_USERNAME")]
    target_username: Option<String>,

    /// Its password. Prefer --target-password-file or the environment variable.
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "CQLMIRROR_TARGET_PASSWORD",
        hide_env_values = true,
        requires = "target_username",
        conflicts_with = "target_password_file"
    )]
    target_password: Option<String>,

    /// A file holding the password (its first line).
    #[arg(
        long,
        value_name = "FILE",
        env = "CQLMIRROR_TARGET_PASSWORD_FILE",
        requires = "target_username"
    )]
    target_password_file: Option<PathBuf>,

    /// At most this many records per second (e.g. 500 or 500/s; 0: as fast as the cluster
    /// answers).
    #[arg(long, value_name = "N/s", default_value = "0", value_parser = parse_rate)]
    rate: f64,

    /// List what would be applied and what needs attention; apply nothing.
    #[arg(long)]
    dry_run: bool,

    /// Where progress is saved and resumed from [default: DIR/replay.checkpoint].
    #[arg(long, value_name = "FILE")]
    checkpoint: Option<PathBuf>,

    /// A write the cluster refuses (Invalid, a missing table, ...) is listed as failed and
    /// replay goes on (without it, replay stops there and the next run tries it again). A busy
    /// cluster (Unavailable, Overloaded) stops replay either way: its writes are never passed.
    #[arg(long)]
    keep_going: bool,

    /// Remove the journal's segments replay is done with, once it finished with no failure.
    #[arg(long)]
    release: bool,

    /// How long to wait for the cluster to answer a request (and to connect).
    #[arg(long, value_name = "DURATION", default_value = "12s",
          value_parser = crate::cli::parse_duration)]
    request_timeout: Duration,
}

pub(crate) fn parse_rate(s: &str) -> Result<f64, String> {
    let number = s.trim().trim_end_matches("/s");
    match number.parse::<f64>() {
        Ok(rate) if rate >= 0.0 && rate.is_finite() => Ok(rate),
        _ => Err(format!(
            "'{s}' is not a rate: use records per second, e.g. 500 or 500/s (0: unlimited)"
        )),
    }
}

/// Runs `BIN replay ARGS...` (`args` starts with `replay`).
pub fn main(bin: &'static str, args: Vec<String>) -> ExitCode {
    let cli = match <ReplayCli as clap::CommandFactory>::command()
        .bin_name(format!("{bin} replay"))
        .try_get_matches_from(args)
        .and_then(|m| <ReplayCli as clap::FromArgMatches>::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match run(&cli) {
        Ok(summary) => {
            println!("{summary}");
            if summary.complete() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("{bin} replay: {e}");
            ExitCode::from(1)
        }
    }
}

/// What a run did.
#[derive(Debug, Default)]
struct Summary {
    /// Refused by the cluster (with `--keep-going`), or the one a run stopped at, in
    /// `failed`.
    tally: Tally,
    /// Replay stopped before the end of the journal.
    stopped: Option<String>,
    elapsed: Duration,
    checkpoint: Position,
    dry_run: bool,
    released: u64,
}

impl Summary {
    fn complete(&self) -> bool {
        self.tally.failed == 0 && self.stopped.is_none()
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        write!(
            f,
            "{}{} records read in {secs:.1}s: {} {}, {} failed, {} needing attention, {} list orders to check, {} of the other cluster skipped, {} unreadable; checkpoint {}",
            if self.dry_run {
                "dry run: "
            } else {
                "replay: "
            },
            self.tally.read,
            self.tally.applied,
            if self.dry_run {
                "would be applied"
            } else {
                "applied"
            },
            self.tally.failed,
            self.tally.attention,
            self.tally.check_order,
            self.tally.other_cluster,
            self.tally.unreadable,
            self.checkpoint,
        )?;
        if self.released > 0 {
            write!(f, "; {} replayed segments removed", self.released)?;
        }
        if let Some(why) = &self.stopped {
            write!(
                f,
                "\nstopped: {why}; run replay again to go on from the checkpoint"
            )?;
        }
        Ok(())
    }
}

fn run(cli: &ReplayCli) -> Result<Summary, String> {
    let dir = &cli.journal_dir;
    if !dir.is_dir() {
        return Err(format!(
            "--journal-dir {}: no such directory",
            dir.display()
        ));
    }
    let _lock = DirLock::acquire(dir).map_err(|e| format!("--journal-dir: {e}"))?;
    let checkpoint_path = cli
        .checkpoint
        .clone()
        .unwrap_or_else(|| dir.join("replay.checkpoint"));
    let from = checkpoint::load(&checkpoint_path)?;
    let cluster = Upstream::from(cli.cluster);
    let total = count(dir, from);
    let client = if cli.dry_run {
        None
    } else {
        Some(connect(cli)?)
    };
    if let Some(client) = &client {
        eprintln!(
            "replay: {total} records from {from} in {} to {} (protocol {})",
            dir.display(),
            client.address(),
            client.version()
        );
    }
    let progress = Progress::new(total);
    let started = Instant::now();
    let mut summary = Summary {
        checkpoint: from,
        dry_run: cli.dry_run,
        ..Summary::default()
    };
    let mut pass = Pass::new(
        dir,
        from,
        PassOptions {
            cluster: Some(cluster),
            rate: cli.rate,
            keep_going: cli.keep_going,
            dry_run: cli.dry_run,
        },
    );
    let mut driver = Terminal {
        client,
        progress: &progress,
        dry_run: cli.dry_run,
    };
    let mut saved_at = Instant::now();
    loop {
        match pass.step(&mut driver) {
            Step::Done => {}
            Step::End | Step::Interrupted => break,
            Step::Stopped(e) => {
                summary.stopped = Some(e.to_string());
                break;
            }
        }
        progress.inc();
        if !cli.dry_run && saved_at.elapsed() >= Duration::from_secs(1) {
            checkpoint::save(&checkpoint_path, pass.checkpoint())?;
            saved_at = Instant::now();
        }
    }
    summary.tally = pass.tally();
    summary.checkpoint = pass.checkpoint();
    progress.finish();
    if !cli.dry_run {
        checkpoint::save(&checkpoint_path, summary.checkpoint)?;
        if cli.release && summary.complete() {
            summary.released = release(dir, summary.checkpoint)?;
        }
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// `replay`'s driver: one connection, lines on the terminal.
struct Terminal<'a> {
    /// `None` in a dry run.
    client: Option<Client>,
    progress: &'a Progress,
    dry_run: bool,
}

impl Driver for Terminal<'_> {
    fn apply(&mut self, record: &Record) -> Result<(), ApplyError> {
        match self.client.as_mut() {
            Some(client) => client.apply(record),
            None => Ok(()),
        }
    }

    fn pause(&mut self, duration: Duration) -> bool {
        std::thread::sleep(duration);
        true
    }

    fn notice(&mut self, notice: Notice<'_>) {
        let line = match notice {
            Notice::Applied {
                record,
                check_order: true,
            } if self.dry_run => format!("apply, check order: {}", describe(record)),
            Notice::Applied { record, .. } if self.dry_run => {
                format!("apply: {}", describe(record))
            }
            Notice::Applied {
                record,
                check_order: true,
            } => format!("check order: {}", describe(record)),
            Notice::Applied { .. } => return,
            Notice::Attention(record) => format!("attention: {}", describe(record)),
            Notice::Uncertain { record, error } => format!(
                "attention: replay's write may have applied ({error}), not tried again: {}",
                describe(record)
            ),
            Notice::Failed { record, error } => format!("failed: {error}: {}", describe(record)),
            Notice::Unreadable(e) => format!("unreadable: {e}"),
        };
        self.progress.println(&line);
    }
}

/// `replay`'s connection, as its options say.
fn connect(cli: &ReplayCli) -> Result<Client, String> {
    let endpoints =
        Endpoint::parse_list(&cli.target, cli.target_port).map_err(|e| format!("TARGET: {e}"))?;
    let password = match (&cli.target_password, &cli.target_password_file) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(file)) => Some(crate::cli::read_password(file)?),
        (None, None) => None,
    };
    let credentials = match (&cli.target_username, password) {
        (Some(username), Some(password)) => Some(Credentials {
            username: username.clone(),
            password: Secret::new(password),
        }),
        (Some(_), None) => {
            return Err(
                "--target-username needs --target-password-file (or --target-password)".into(),
            );
        }
        _ => None,
    };
    connect_to(&endpoints, credentials.as_ref(), cli.request_timeout)
        .map_err(|e| format!("TARGET: {e}"))
}

/// The first contact point that accepts a connection; the error lists why each did not.
fn connect_to(
    endpoints: &[Endpoint],
    credentials: Option<&Credentials>,
    timeout: Duration,
) -> Result<Client, String> {
    let mut errors = Vec::new();
    for endpoint in endpoints {
        let addresses = match (endpoint.host.as_str(), endpoint.port).to_socket_addrs() {
            Ok(a) => a,
            Err(e) => {
                errors.push(format!("{endpoint}: {e}"));
                continue;
            }
        };
        for address in addresses {
            match Client::connect(address, credentials, timeout) {
                Ok(client) => return Ok(client),
                Err(e) => errors.push(e),
            }
        }
    }
    Err(errors.join("; "))
}

/// Records from `from` to the end, for the progress bar.
fn count(dir: &Path, from: Position) -> u64 {
    let mut reader = JournalReader::open(dir, from);
    let mut n = 0;
    while reader.next_entry().is_some() {
        n += 1;
    }
    n
}

/// Removes the segments before the checkpoint's (all of their records are done).
fn release(dir: &Path, checkpoint: Position) -> Result<u64, String> {
    let segments = crate::journal::segments(dir)
        .map_err(|e| format!("--journal-dir {}: {e}", dir.display()))?;
    let mut removed = 0;
    for sequence in segments.into_iter().filter(|s| *s < checkpoint.segment) {
        let path = crate::journal::segment_path(dir, sequence);
        std::fs::remove_file(&path)
            .map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
        removed += 1;
    }
    Ok(removed)
}

/// One line about a record: when, what, why, and the statement with its values (hex).
fn describe(record: &Record) -> String {
    let when = jiff::Timestamp::from_microsecond(record.wall_micros)
        .map_or_else(|_| record.wall_micros.to_string(), |t| t.to_string());
    let tables: Vec<String> = record
        .tables
        .iter()
        .map(|t| format!("{}.{}", t.keyspace.as_deref().unwrap_or("?"), t.table))
        .collect();
    let statements = match &record.write {
        Write::Single(s) => vec![s],
        Write::Batch { entries, .. } => entries.iter().collect(),
    };
    let statements: Vec<String> = statements
        .iter()
        .map(|s| format!("{} {}", s.text, values(&s.values)))
        .collect();
    format!(
        "{when} {} {} ({}) tables [{}] keyspace {} timestamp {}: {}",
        record.kind.name(),
        record.outcome.name(),
        cause(record),
        tables.join(", "),
        record.keyspace.as_deref().unwrap_or("-"),
        record
            .timestamp
            .map_or_else(|| "-".to_owned(), |t| t.to_string()),
        statements.join("; ")
    )
}

fn cause(record: &Record) -> String {
    match &record.cause {
        cqlmirror_core::journal::Cause::Error { message, .. } => format!("error: {message}"),
        cqlmirror_core::journal::Cause::Timeout => "timeout".into(),
        cqlmirror_core::journal::Cause::Closed => "connection lost".into(),
        cqlmirror_core::journal::Cause::NotConnected => "not connected".into(),
    }
}

/// Bound values as hex (`null`, `unset`), in order (with names when named).
fn values(values: &Values) -> String {
    let hex = |v: &cqlmirror_core::journal::BoundValue| match v {
        cqlmirror_core::journal::BoundValue::Bytes(b) => {
            let mut s = String::from("0x");
            for byte in b {
                s.push_str(&format!("{byte:02x}"));
            }
            s
        }
        cqlmirror_core::journal::BoundValue::Null => "null".into(),
        cqlmirror_core::journal::BoundValue::Unset => "unset".into(),
    };
    match values {
        Values::None => String::new(),
        Values::Positional(v) => {
            format!("[{}]", v.iter().map(hex).collect::<Vec<_>>().join(", "))
        }
        Values::Named(v) => format!(
            "[{}]",
            v.iter()
                .map(|(n, v)| format!("{n}={}", hex(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A bar on a terminal; a plain line every few seconds otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: u64,
    done: std::cell::Cell<u64>,
    started: Instant,
    last_line: std::cell::Cell<Instant>,
}

impl Progress {
    fn new(total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} records, {per_sec}, ETA {eta}",
            ) {
                bar.set_style(style);
            }
            bar
        });
        Self {
            bar,
            total,
            done: std::cell::Cell::new(0),
            started: Instant::now(),
            last_line: std::cell::Cell::new(Instant::now()),
        }
    }

    fn inc(&self) {
        self.done.set(self.done.get() + 1);
        match &self.bar {
            Some(bar) => bar.inc(1),
            None if self.last_line.get().elapsed() >= Duration::from_secs(5) => {
                self.last_line.set(Instant::now());
                self.line();
            }
            None => {}
        }
    }

    fn line(&self) {
        let done = self.done.get();
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = done as f64 / secs;
        let left = self.total.saturating_sub(done);
        let eta = if rate > 0.0 { left as f64 / rate } else { 0.0 };
        eprintln!(
            "replay: {done}/{} records, {rate:.0}/s, ETA {eta:.0}s",
            self.total
        );
    }

    fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| println!("{line}")),
            None => println!("{line}"),
        }
    }

    fn finish(&self) {
        match &self.bar {
            Some(bar) => bar.finish(),
            None => self.line(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Journal, JournalSettings};
    use cqlmirror_core::frame::ProtocolVersion;
    use cqlmirror_core::journal::{BoundValue, Cause, Outcome, Statement, WriteKind};
    use cqlmirror_core::wire::Consistency;

    fn record(kind: WriteKind, outcome: Outcome, cluster: Upstream) -> Record {
        Record {
            wall_micros: 1_700_000_000_000_000,
            cluster,
            version: ProtocolVersion::V4,
            keyspace: Some("ks".into()),
            write: Write::Single(Statement {
                prepared: true,
                text: "UPDATE t SET c = c + 1 WHERE k = ?".into(),
                values: Values::Positional(vec![BoundValue::Bytes(vec![0, 0, 0, 7])]),
            }),
            consistency: Consistency::ONE,
            serial_consistency: None,
            timestamp: Some(1_700_000_000_000_000),
            now_in_seconds: None,
            kind,
            outcome,
            cause: Cause::Timeout,
            tables: Vec::new(),
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("cqlmirror-replay-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn cli(dir: &Path, extra: &[&str]) -> ReplayCli {
        let dir = dir.to_str().unwrap();
        let args = ["replay", "--journal-dir", dir, "--request-timeout", "1s"]
            .into_iter()
            .chain(extra.iter().copied())
            .chain(["127.0.0.1:1"]);
        ReplayCli::try_parse_from(args).unwrap()
    }

    #[test]
    fn a_dry_run_sorts_records_by_what_replay_does_with_them() {
        let dir = temp_dir("dry");
        let journal = Journal::open(JournalSettings::new(&dir)).unwrap();
        for r in [
            record(WriteKind::Plain, Outcome::Unknown, Upstream::Target),
            record(WriteKind::Counter, Outcome::NotApplied, Upstream::Target),
            record(WriteKind::Counter, Outcome::Unknown, Upstream::Target),
            record(
                WriteKind::OrderSensitive,
                Outcome::Unknown,
                Upstream::Target,
            ),
            record(WriteKind::Lwt, Outcome::NotApplied, Upstream::Target),
            record(WriteKind::Plain, Outcome::NotApplied, Upstream::Source),
            record(
                WriteKind::OrderSensitive,
                Outcome::NotApplied,
                Upstream::Target,
            ),
        ] {
            journal.append(r).unwrap();
        }
        journal.close().unwrap();
        let summary = run(&cli(&dir, &["--dry-run"])).unwrap();
        assert_eq!(
            (
                summary.tally.read,
                summary.tally.applied,
                summary.tally.attention,
                summary.tally.check_order,
                summary.tally.other_cluster
            ),
            (7, 3, 3, 1, 1)
        );
        assert!(summary.complete());
        assert!(
            !dir.join("replay.checkpoint").exists(),
            "a dry run saves nothing"
        );
        // Replaying the source's missed writes instead.
        let summary = run(&cli(&dir, &["--dry-run", "--cluster", "source"])).unwrap();
        assert_eq!((summary.tally.applied, summary.tally.other_cluster), (1, 6));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_a_journal_in_use_and_an_unreachable_cluster() {
        let dir = temp_dir("lock");
        let journal = Journal::open(JournalSettings::new(&dir)).unwrap();
        let e = run(&cli(&dir, &[])).unwrap_err();
        assert!(e.contains("--journal-dir") && e.contains("in use"), "{e}");
        journal.close().unwrap();
        let e = run(&cli(&dir, &[])).unwrap_err();
        assert!(e.starts_with("TARGET"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("500").unwrap(), 500.0);
        assert_eq!(parse_rate("2.5/s").unwrap(), 2.5);
        assert_eq!(parse_rate("0").unwrap(), 0.0);
        assert!(parse_rate("-1").is_err());
        assert!(
            parse_rate("fast")
                .unwrap_err()
                .contains("records per second")
        );
    }

    #[test]
    fn a_report_line_names_the_statement_and_its_values() {
        let line = describe(&record(WriteKind::Lwt, Outcome::Unknown, Upstream::Target));
        assert!(line.contains("lwt unknown (timeout)"), "{line}");
        assert!(
            line.contains("UPDATE t SET c = c + 1 WHERE k = ? [0x00000007]"),
            "{line}"
        );
        assert!(
            line.contains("keyspace ks timestamp 1700000000000000"),
            "{line}"
        );
    }
}
