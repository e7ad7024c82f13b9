//! One pass over the journal from a checkpoint: what `replay` and the proxy's background
//! replayer (`--replay auto`) share.
//!
//! A [`Pass`] reads records in order and decides what each one gets; a [`Driver`] does the
//! rest: applies a record to its cluster, waits (rate limit, retries) and reports what needs
//! a line. The checkpoint only moves past a record once it is done with (applied, refused
//! for good, or listed for an operator), so a pass stopped by a connection failure goes on
//! from the record it stopped at.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cqlmirror_core::config::Upstream;
use cqlmirror_core::journal::{Record, ReplayAction, WriteKind};

use super::client::ApplyError;
use crate::journal::{JournalReader, Position, ReadError};

/// Tries of a record the cluster refuses, the first included: a node restarting or an
/// overloaded coordinator gets a second chance, a statement it cannot take does not block
/// the journal.
const TRIES: u32 = 3;
/// The wait before the second try; doubled before each next one.
const RETRY_AFTER: Duration = Duration::from_millis(400);

/// What a pass needs done outside of it.
pub trait Driver {
    /// Applies `record` to `record.cluster`.
    fn apply(&mut self, record: &Record) -> Result<(), ApplyError>;

    /// Waits `duration`; `false` when the pass is to stop now (shutdown).
    fn pause(&mut self, duration: Duration) -> bool;

    /// A record or a part of the journal worth a line.
    fn notice(&mut self, notice: Notice<'_>);
}

/// What a [`Driver`] is told about.
#[derive(Debug)]
pub enum Notice<'a> {
    /// Applied (or, in a dry run, would be); `check_order` for a list write whose row's
    /// order is to be checked.
    Applied {
        record: &'a Record,
        check_order: bool,
    },
    /// Not applied: an operator decides (an LWT; a counter or list write that may have
    /// applied).
    Attention(&'a Record),
    /// A counter or list write whose replay itself may or may not have applied (the cluster
    /// answered a write timeout or failure): not tried again, an operator decides.
    Uncertain { record: &'a Record, error: &'a str },
    /// Refused by the cluster every try; replay went on after it.
    Failed { record: &'a Record, error: &'a str },
    /// A part of the journal that cannot be read (skipped).
    Unreadable(&'a ReadError),
}

/// How a pass treats records.
#[derive(Debug, Clone, Copy)]
pub struct PassOptions {
    /// Only this cluster's records; the others are counted and skipped. `None`: every
    /// record goes to the cluster that missed it.
    pub cluster: Option<Upstream>,
    /// At most this many records applied per second (0: no limit).
    pub rate: f64,
    /// A record refused every try is counted as failed and the pass goes on; without it,
    /// the pass stops before it.
    pub keep_going: bool,
    /// Apply nothing: report what would be.
    pub dry_run: bool,
}

/// What a pass did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Records done with (not counting one a pass stopped at).
    pub read: u64,
    /// Applied, list orders to check included.
    pub applied: u64,
    /// Applied list writes whose row's order is to be checked.
    pub check_order: u64,
    /// Refused by the cluster.
    pub failed: u64,
    /// Listed for an operator: not applied, or (replay's own write timed out) perhaps applied.
    pub attention: u64,
    /// Skipped: another cluster's (with [`PassOptions::cluster`]).
    pub other_cluster: u64,
    /// Parts of the journal that could not be read.
    pub unreadable: u64,
}

/// The outcome of [`Pass::step`].
#[derive(Debug)]
pub enum Step {
    /// A record (or an unreadable part) was done with; the checkpoint moved past it.
    Done,
    /// No more records for now: the journal's end, or an append still in progress.
    End,
    /// The record at the checkpoint could not be applied: the connection failed, the
    /// cluster was busy (or timed out on a plain write) every try, or it refused the record
    /// and the pass does not keep going. The next step tries it again.
    Stopped(ApplyError),
    /// The driver asked to stop while waiting.
    Interrupted,
}

/// A pass over a journal directory from a checkpoint.
pub struct Pass {
    dir: PathBuf,
    reader: JournalReader,
    checkpoint: Position,
    options: PassOptions,
    interval: Option<Duration>,
    next_send: Instant,
    tally: Tally,
    /// Where the reader failed without moving on (a file it cannot read): the same failure
    /// there is reported once, then taken as the end for now.
    stuck_at: Option<Position>,
}

impl Pass {
    pub fn new(dir: &Path, from: Position, options: PassOptions) -> Self {
        Self {
            dir: dir.to_owned(),
            reader: JournalReader::open(dir, from),
            checkpoint: from,
            interval: (options.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / options.rate)),
            next_send: Instant::now(),
            options,
            tally: Tally::default(),
            stuck_at: None,
        }
    }

    /// The position after the last record done with: where the next pass starts.
    pub const fn checkpoint(&self) -> Position {
        self.checkpoint
    }

    pub const fn tally(&self) -> Tally {
        self.tally
    }

    /// Goes through the next record.
    pub fn step(&mut self, driver: &mut impl Driver) -> Step {
        let before = self.reader.position();
        let entry = match self.reader.next_entry() {
            None => {
                // Everything before the reader's position is done with, the skipped end of
                // a damaged segment and a move to the next segment included.
                self.checkpoint = self.checkpoint.max(self.reader.position());
                return Step::End;
            }
            Some(Err(e)) => {
                let stuck = self.reader.position() == before;
                if stuck && self.stuck_at == Some(before) {
                    return Step::End;
                }
                self.stuck_at = stuck.then_some(before);
                self.tally.unreadable += 1;
                driver.notice(Notice::Unreadable(&e));
                self.checkpoint = self.checkpoint.max(self.reader.position());
                return if stuck { Step::End } else { Step::Done };
            }
            Some(Ok(entry)) => {
                self.stuck_at = None;
                entry
            }
        };
        let record = &entry.record;
        let action = record.replay_action();
        if self.options.cluster.is_some_and(|c| c != record.cluster) {
            self.tally.other_cluster += 1;
        } else if !action.applies() {
            self.tally.attention += 1;
            driver.notice(Notice::Attention(record));
        } else {
            if !self.options.dry_run && !self.pace(driver) {
                return self.stop(Step::Interrupted);
            }
            let applied = if self.options.dry_run {
                Ok(())
            } else {
                self.apply(driver, record)
            };
            match applied {
                Ok(()) => {
                    let check_order = action == ReplayAction::ApplyAndCheckOrder;
                    self.tally.applied += 1;
                    self.tally.check_order += u64::from(check_order);
                    driver.notice(Notice::Applied {
                        record,
                        check_order,
                    });
                }
                Err(Applied::Error(ApplyError::MayHaveApplied(error)))
                    if !is_idempotent(record) =>
                {
                    self.tally.attention += 1;
                    driver.notice(Notice::Uncertain {
                        record,
                        error: &error,
                    });
                }
                Err(Applied::Error(ApplyError::Refused(error))) if self.options.keep_going => {
                    self.tally.failed += 1;
                    driver.notice(Notice::Failed {
                        record,
                        error: &error,
                    });
                }
                Err(Applied::Error(e)) => {
                    if matches!(e, ApplyError::Refused(_)) {
                        self.tally.failed += 1;
                    }
                    return self.stop(Step::Stopped(e));
                }
                Err(Applied::Interrupted) => return self.stop(Step::Interrupted),
            }
        }
        self.tally.read += 1;
        self.checkpoint = entry.next;
        Step::Done
    }

    /// Reads again from the checkpoint: the record just read is not done with.
    fn stop(&mut self, step: Step) -> Step {
        self.reader = JournalReader::open(&self.dir, self.checkpoint);
        step
    }

    /// Waits for the record's turn under the rate limit; `false` when interrupted.
    fn pace(&mut self, driver: &mut impl Driver) -> bool {
        let Some(interval) = self.interval else {
            return true;
        };
        let now = Instant::now();
        if self.next_send > now && !driver.pause(self.next_send - now) {
            return false;
        }
        self.next_send = self.next_send.max(now) + interval;
        true
    }

    /// Applies a record, trying it again after a pause when the cluster refused it, was busy,
    /// or timed out on a write that is safe to apply twice.
    fn apply(&mut self, driver: &mut impl Driver, record: &Record) -> Result<(), Applied> {
        let mut wait = RETRY_AFTER;
        for _ in 1..TRIES {
            match driver.apply(record) {
                Err(ApplyError::Refused(_) | ApplyError::Busy(_)) => {}
                Err(ApplyError::MayHaveApplied(_)) if is_idempotent(record) => {}
                other => return other.map_err(Applied::Error),
            }
            if !driver.pause(wait) {
                return Err(Applied::Interrupted);
            }
            wait *= 2;
        }
        driver.apply(record).map_err(Applied::Error)
    }
}

/// Whether applying the record twice leaves what applying it once does: a plain write, with
/// its own timestamp. A counter update would count twice, a list append land twice.
fn is_idempotent(record: &Record) -> bool {
    record.kind == WriteKind::Plain
}

enum Applied {
    Error(ApplyError),
    Interrupted,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::journal::{Journal, JournalSettings};
    use cqlmirror_core::frame::ProtocolVersion;
    use cqlmirror_core::journal::{
        BoundValue, Cause, Outcome, Statement, Values, Write, WriteKind,
    };
    use cqlmirror_core::wire::Consistency;

    /// A journal in `dir` holding plain writes of keys 1 to `n`, flushed.
    fn plain_writes(dir: &std::path::Path, n: i32) -> Journal {
        let journal = Journal::open(JournalSettings::new(dir)).unwrap();
        for key in 1..=n {
            journal
                .append(record(WriteKind::Plain, Outcome::NotApplied, key))
                .unwrap();
        }
        journal.flush().unwrap();
        journal
    }

    /// A journal record of a prepared insert of `key` into `ks.t`, missed by the target.
    pub(crate) fn record(kind: WriteKind, outcome: Outcome, key: i32) -> Record {
        Record {
            wall_micros: 1_700_000_000_000_000,
            cluster: Upstream::Target,
            version: ProtocolVersion::V4,
            keyspace: Some("ks".into()),
            write: Write::Single(Statement {
                prepared: true,
                text: "INSERT INTO t (k) VALUES (?)".into(),
                values: Values::Positional(vec![BoundValue::Bytes(key.to_be_bytes().to_vec())]),
            }),
            consistency: Consistency::ONE,
            serial_consistency: None,
            timestamp: Some(1_700_000_000_000_000),
            now_in_seconds: None,
            kind,
            outcome,
            cause: Cause::NotConnected,
            tables: Vec::new(),
        }
    }

    fn key(record: &Record) -> i32 {
        match &record.write {
            Write::Single(Statement {
                values: Values::Positional(v),
                ..
            }) => match v.first() {
                Some(BoundValue::Bytes(b)) => i32::from_be_bytes(b[..4].try_into().unwrap()),
                _ => panic!("no key"),
            },
            _ => panic!("not a single statement"),
        }
    }

    /// A cluster that takes what it is given, except the keys it refuses, is too busy for,
    /// or applies and then answers a write timeout for, and, while `down`, everything.
    #[derive(Default)]
    struct FakeCluster {
        applied: Vec<i32>,
        refuse: Vec<i32>,
        busy: Vec<i32>,
        time_out: Vec<i32>,
        down: bool,
        tries: u32,
        pauses: Vec<Duration>,
        lines: Vec<String>,
        stop_after_pauses: Option<usize>,
    }

    impl Driver for FakeCluster {
        fn apply(&mut self, record: &Record) -> Result<(), ApplyError> {
            self.tries += 1;
            if self.down {
                return Err(ApplyError::Connection("connection refused".into()));
            }
            let key = key(record);
            if self.refuse.contains(&key) {
                return Err(ApplyError::Refused(format!("Invalid: key {key}")));
            }
            if self.busy.contains(&key) {
                return Err(ApplyError::Busy(format!("Overloaded: key {key}")));
            }
            self.applied.push(key);
            if self.time_out.contains(&key) {
                return Err(ApplyError::MayHaveApplied(format!(
                    "Write_timeout: key {key}"
                )));
            }
            Ok(())
        }

        fn pause(&mut self, duration: Duration) -> bool {
            self.pauses.push(duration);
            self.stop_after_pauses
                .is_none_or(|n| self.pauses.len() <= n)
        }

        fn notice(&mut self, notice: Notice<'_>) {
            self.lines.push(match notice {
                Notice::Applied {
                    record,
                    check_order,
                } => format!("applied {} {check_order}", key(record)),
                Notice::Attention(record) => format!("attention {}", key(record)),
                Notice::Uncertain { record, error } => {
                    format!("uncertain {} {error}", key(record))
                }
                Notice::Failed { record, error } => format!("failed {} {error}", key(record)),
                Notice::Unreadable(e) => format!("unreadable {e}"),
            });
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("cqlmirror-pass-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn options(keep_going: bool) -> PassOptions {
        PassOptions {
            cluster: None,
            rate: 0.0,
            keep_going,
            dry_run: false,
        }
    }

    fn run_to_end(pass: &mut Pass, driver: &mut FakeCluster) -> Result<(), ApplyError> {
        loop {
            match pass.step(driver) {
                Step::Done => {}
                Step::End => return Ok(()),
                Step::Stopped(e) => return Err(e),
                Step::Interrupted => panic!("interrupted"),
            }
        }
    }

    #[test]
    fn applies_in_order_and_lists_what_it_does_not_apply() {
        let dir = temp_dir("order");
        let journal = Journal::open(JournalSettings::new(&dir)).unwrap();
        for r in [
            record(WriteKind::Plain, Outcome::Unknown, 1),
            record(WriteKind::Counter, Outcome::Unknown, 2),
            record(WriteKind::Counter, Outcome::NotApplied, 3),
            record(WriteKind::OrderSensitive, Outcome::NotApplied, 4),
            record(WriteKind::Lwt, Outcome::NotApplied, 5),
        ] {
            journal.append(r).unwrap();
        }
        journal.flush().unwrap();
        let mut pass = Pass::new(&dir, Position::START, options(true));
        let mut cluster = FakeCluster::default();
        run_to_end(&mut pass, &mut cluster).unwrap();
        assert_eq!(cluster.applied, [1, 3, 4]);
        assert_eq!(
            cluster.lines,
            [
                "applied 1 false",
                "attention 2",
                "applied 3 false",
                "applied 4 true",
                "attention 5"
            ]
        );
        let tally = pass.tally();
        assert_eq!(
            (
                tally.read,
                tally.applied,
                tally.check_order,
                tally.attention
            ),
            (5, 3, 1, 2)
        );
        journal.close().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn follows_records_appended_while_it_reads() {
        let dir = temp_dir("follow");
        let journal = plain_writes(&dir, 1);
        let mut pass = Pass::new(&dir, Position::START, options(true));
        let mut cluster = FakeCluster::default();
        run_to_end(&mut pass, &mut cluster).unwrap();
        let first = pass.checkpoint();
        // The end of the segment being written is "not yet", twice over.
        assert!(matches!(pass.step(&mut cluster), Step::End));
        assert_eq!(pass.checkpoint(), first);
        journal
            .append(record(WriteKind::Plain, Outcome::NotApplied, 2))
            .unwrap();
        journal.flush().unwrap();
        run_to_end(&mut pass, &mut cluster).unwrap();
        assert_eq!(cluster.applied, [1, 2]);
        assert!(pass.checkpoint() > first);
        journal.close().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_partial_frame_at_the_end_is_waited_for_not_skipped() {
        let dir = temp_dir("torn");
        let journal = Journal::open(JournalSettings::new(&dir)).unwrap();
        journal
            .append(record(WriteKind::Plain, Outcome::NotApplied, 1))
            .unwrap();
        journal
            .append(record(WriteKind::Plain, Outcome::NotApplied, 2))
            .unwrap();
        journal.close().unwrap();
        // The second record as a writer leaves it halfway through its write.
        let segment =
            crate::journal::segment_path(&dir, crate::journal::segments(&dir).unwrap()[0]);
        let whole = std::fs::read(&segment).unwrap();
        let mut pass = Pass::new(&dir, Position::START, options(true));
        let mut cluster = FakeCluster::default();
        assert!(matches!(pass.step(&mut cluster), Step::Done));
        let after_first = pass.checkpoint().offset as usize;
        let cut = after_first + (whole.len() - after_first) / 2;
        std::fs::write(&segment, &whole[..cut]).unwrap();
        let mut pass = Pass::new(&dir, Position::START, options(true));
        let mut cluster = FakeCluster::default();
        assert!(matches!(pass.step(&mut cluster), Step::Done));
        assert!(matches!(pass.step(&mut cluster), Step::End));
        assert!(matches!(pass.step(&mut cluster), Step::End));
        assert_eq!(pass.checkpoint().offset as usize, after_first);
        assert_eq!(pass.tally().unreadable, 0);
        // The writer finishes the append.
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&segment)
            .unwrap();
        file.write_all(&whole[cut..]).unwrap();
        run_to_end(&mut pass, &mut cluster).unwrap();
        assert_eq!(cluster.applied, [1, 2]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_refused_record_is_tried_again_then_counted_and_passed() {
        let dir = temp_dir("refused");
        let journal = plain_writes(&dir, 3);
        let mut pass = Pass::new(&dir, Position::START, options(true));
        let mut cluster = FakeCluster {
            refuse: vec![2],
            ..FakeCluster::default()
        };
        run_to_end(&mut pass, &mut cluster).unwrap();
        assert_eq!(cluster.applied, [1, 3]);
        assert_eq!(cluster.tries, 2 + TRIES);
        assert_eq!(
            cluster.pauses,
            [Duration::from_millis(400), Duration::from_millis(800)]
        );
        assert_eq!(cluster.lines[1], "failed 2 Invalid: key 2");
        assert_eq!((pass.tally().failed, pass.tally().read), (1, 3));

        // Without keep_going the pass stops before it, and tries it again next time.
        let mut pass = Pass::new(&dir, Position::START, options(false));
        let mut cluster = FakeCluster {
            refuse: vec![2],
            ..FakeCluster::default()
        };
        assert!(matches!(
            run_to_end(&mut pass, &mut cluster),
            Err(ApplyError::Refused(_))
        ));
        let stopped_at = pass.checkpoint();
        cluster.refuse.clear();
        run_to_end(&mut pass, &mut cluster).unwrap();
        assert_eq!(cluster.applied, [1, 2, 3]);
        assert!(pass.checkpoint() > stopped_at);
        journal.close().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_busy_cluster_stops_the_pass_even_when_keeping_going() {
        let dir = temp_dir("busy");
        let journal = plain_writes(&dir, 3);
        let mut pass = Pass::new(&dir, Position::START, options(true));
        let mut cluster = FakeCluster {
            busy: vec![2],
            ..FakeCluster::default()
        };
        // Tried every time, never passed nor counted as failed: it waits for the cluster.
        assert!(matches!(
            run_to_end(&mut pass, &mut cluster),
            Err(ApplyError::Busy(_))
        ));
        assert_eq!(cluster.tries, 1 + TRIES);
        assert_eq!((pass.tally().failed, pass.tally().read), (0, 1));
        cluster.busy.clear();
        run_to_end(&mut pass, &mut cluster).unwrap();
        assert_eq!(cluster.applied, [1, 2, 3]);
        journal.close().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_write_timeout_retries_a_plain_write_and_lists_a_counter_update() {
        let dir = temp_dir("timeout");
        let journal = Journal::open(JournalSettings::new(&dir)).unwrap();
        journal
            .append(record(WriteKind::Counter, Outcome::NotApplied, 1))
            .unwrap();
        journal
            .append(record(WriteKind::Plain, Outcome::NotApplied, 2))
            .unwrap();
        journal.flush().unwrap();
        let mut pass = Pass::new(&dir, Position::START, options(false));
        let mut cluster = FakeCluster {
            time_out: vec![1],
            ..FakeCluster::default()
        };
        run_to_end(&mut pass, &mut cluster).unwrap();
        // The counter update went out once (the cluster applied it, then timed out): it is
        // not sent again but listed; the pass goes on.
        assert_eq!(cluster.applied, [1, 2]);
        assert_eq!(cluster.lines[0], "uncertain 1 Write_timeout: key 1");
        assert_eq!(pass.tally().attention, 1);
        assert_eq!(pass.tally().applied, 1);

        // A plain write that times out is tried again (applying it twice changes nothing),
        // and stops the pass when it never succeeds.
        let mut pass = Pass::new(&dir, Position::START, options(true));
        let mut cluster = FakeCluster {
            time_out: vec![2],
            ..FakeCluster::default()
        };
        assert!(matches!(
            run_to_end(&mut pass, &mut cluster),
            Err(ApplyError::MayHaveApplied(_))
        ));
        assert_eq!(cluster.applied, [1, 2, 2, 2]);
        assert_eq!(pass.tally().failed, 0);
        journal.close().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_connection_failure_keeps_the_record_for_the_next_step() {
        let dir = temp_dir("down");
        let journal = plain_writes(&dir, 2);
        let mut pass = Pass::new(&dir, Position::START, options(true));
        let mut cluster = FakeCluster {
            down: true,
            ..FakeCluster::default()
        };
        assert!(matches!(
            pass.step(&mut cluster),
            Step::Stopped(ApplyError::Connection(_))
        ));
        assert!(matches!(
            pass.step(&mut cluster),
            Step::Stopped(ApplyError::Connection(_))
        ));
        assert_eq!(pass.checkpoint(), Position::START);
        assert_eq!(pass.tally(), Tally::default());
        assert!(
            cluster.pauses.is_empty(),
            "a connection failure is not retried here"
        );
        cluster.down = false;
        run_to_end(&mut pass, &mut cluster).unwrap();
        assert_eq!(cluster.applied, [1, 2]);
        assert_eq!(pass.tally().applied, 2);
        journal.close().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_rate_limit_paces_records_and_a_stop_keeps_the_checkpoint() {
        let dir = temp_dir("rate");
        let journal = plain_writes(&dir, 3);
        let mut pass = Pass::new(
            &dir,
            Position::START,
            PassOptions {
                rate: 1.0,
                ..options(true)
            },
        );
        let mut cluster = FakeCluster {
            stop_after_pauses: Some(0),
            ..FakeCluster::default()
        };
        assert!(matches!(pass.step(&mut cluster), Step::Done));
        // The second record waits about a second for its turn, and the driver stops there.
        assert!(matches!(pass.step(&mut cluster), Step::Interrupted));
        assert!(
            cluster.pauses[0] > Duration::from_millis(500),
            "{:?}",
            cluster.pauses
        );
        assert_eq!(cluster.applied, [1]);
        let resumed = Pass::new(&dir, pass.checkpoint(), options(true));
        let mut cluster = FakeCluster::default();
        let mut resumed = resumed;
        run_to_end(&mut resumed, &mut cluster).unwrap();
        assert_eq!(cluster.applied, [2, 3]);
        journal.close().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
