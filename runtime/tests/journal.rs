//! The journal on disk: writer and reader round trips across segment rolls, recovery after a
//! crash, the size cap, the directory lock and the fsync policies.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cqlmirror_core::config::Upstream;
use cqlmirror_core::frame::ProtocolVersion;
use cqlmirror_core::journal::segment::{self, HEADER_LEN};
use cqlmirror_core::journal::{
    BoundValue, Cause, Outcome, Record, Statement, Values, Write, WriteKind,
};
use cqlmirror_core::message::error::ErrorCode;
use cqlmirror_core::wire::Consistency;
use cqlmirror_runtime::journal::{
    FsyncPolicy, Journal, JournalReader, JournalSettings, JournalStats, LockError, OpenError,
    Position, ReadError, Refused, segment_path, segments,
};

/// A directory of its own for one test, removed before and after.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("cqlmirror-journal-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn record(n: u32) -> Record {
    Record {
        wall_micros: 1_700_000_000_000_000 + i64::from(n),
        cluster: Upstream::Target,
        version: ProtocolVersion::V4,
        keyspace: Some("ks".into()),
        write: Write::Single(Statement {
            prepared: n % 2 == 0,
            text: format!("INSERT INTO t (k, v) VALUES ({n}, ?)"),
            values: Values::Positional(vec![BoundValue::Bytes(n.to_be_bytes().to_vec())]),
        }),
        consistency: Consistency::LOCAL_QUORUM,
        serial_consistency: None,
        timestamp: Some(1_700_000_000_000_000 + i64::from(n)),
        now_in_seconds: None,
        kind: WriteKind::Plain,
        outcome: Outcome::NotApplied,
        cause: Cause::Error {
            code: ErrorCode::UNAVAILABLE,
            message: "Cannot achieve consistency level".into(),
        },
        tables: Vec::new(),
    }
}

fn settings(dir: &Path) -> JournalSettings {
    JournalSettings {
        segment_size: 1024,
        ..JournalSettings::new(dir)
    }
}

fn append_all(journal: &Journal, range: std::ops::Range<u32>) {
    for n in range {
        journal
            .append(record(n))
            .expect("the journal takes the record");
    }
}

/// Every record from `from` on, failing on any read error.
fn read_all(dir: &Path, from: Position) -> Vec<Record> {
    JournalReader::open(dir, from)
        .map(|entry| entry.expect("the journal reads back").record)
        .collect()
}

#[test]
fn round_trip_across_segment_rolls() {
    let dir = TempDir::new("roll");
    let journal = Journal::open(settings(&dir.0)).expect("opens");
    append_all(&journal, 0..200);
    journal.flush().expect("flushes");
    let stats = journal.stats();
    assert_eq!(stats.appended, 200);
    assert!(stats.segments > 5, "{stats:?}");
    assert_eq!(stats.lost(), 0);
    let on_disk: u64 = segments(&dir.0)
        .expect("lists")
        .iter()
        .map(|&s| std::fs::metadata(segment_path(&dir.0, s)).map_or(0, |m| m.len()))
        .sum();
    assert_eq!(stats.bytes, on_disk);
    assert!(stats.oldest_micros.is_some());

    let entries: Vec<_> = JournalReader::open(&dir.0, Position::START)
        .map(|e| e.expect("reads"))
        .collect();
    let expected: Vec<Record> = (0..200).map(record).collect();
    assert_eq!(
        entries.iter().map(|e| e.record.clone()).collect::<Vec<_>>(),
        expected
    );
    // Positions increase, and each entry's next is where the following one is.
    for pair in entries.windows(2) {
        assert!(pair[0].at < pair[1].at);
        assert!(pair[0].next <= pair[1].at);
    }
    // Resuming from a checkpoint gives exactly the records after it.
    let checkpoint = entries[120].next;
    assert_eq!(read_all(&dir.0, checkpoint), expected[121..].to_vec());
    journal.close().expect("closes");
}

#[test]
fn reader_follows_a_journal_being_written() {
    let dir = TempDir::new("follow");
    let journal = Journal::open(settings(&dir.0)).expect("opens");
    let mut reader = JournalReader::open(&dir.0, Position::START);
    assert!(reader.next_entry().is_none(), "nothing journaled yet");
    append_all(&journal, 0..3);
    journal.flush().expect("flushes");
    let first: Vec<_> = reader.by_ref().map(|e| e.expect("reads").record).collect();
    assert_eq!(first, (0..3).map(record).collect::<Vec<_>>());
    append_all(&journal, 3..40);
    journal.flush().expect("flushes");
    let rest: Vec<_> = reader.by_ref().map(|e| e.expect("reads").record).collect();
    assert_eq!(rest, (3..40).map(record).collect::<Vec<_>>());
    journal.close().expect("closes");
}

#[test]
fn reopen_after_a_crash_mid_append_recovers_and_continues() {
    let dir = TempDir::new("crash");
    let journal = Journal::open(JournalSettings::new(&dir.0)).expect("opens");
    append_all(&journal, 0..10);
    journal.close().expect("closes");
    let last = *segments(&dir.0).expect("lists").last().expect("a segment");
    let path = segment_path(&dir.0, last);
    let clean_len = std::fs::metadata(&path).expect("exists").len();
    // A crash in the middle of an append: half a frame at the end.
    let mut frame = Vec::new();
    segment::put_frame(&mut frame, &record(99).to_bytes()).expect("fits");
    OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(&frame[..frame.len() / 2]))
        .expect("appends");
    // And a crash while the next segment was being created: a torn header.
    std::fs::write(segment_path(&dir.0, last + 1), b"CQL").expect("writes");

    let journal = Journal::open(JournalSettings::new(&dir.0)).expect("recovers");
    assert_eq!(
        std::fs::metadata(&path).expect("exists").len(),
        clean_len,
        "the torn record is cut off"
    );
    assert!(
        !segment_path(&dir.0, last + 1).exists(),
        "the segment with a torn header is removed"
    );
    append_all(&journal, 10..15);
    journal.close().expect("closes");
    assert_eq!(
        read_all(&dir.0, Position::START),
        (0..15).map(record).collect::<Vec<_>>()
    );
}

#[test]
fn reopen_after_a_flipped_bit_keeps_the_records_before_it() {
    let dir = TempDir::new("flip");
    let journal = Journal::open(JournalSettings::new(&dir.0)).expect("opens");
    append_all(&journal, 0..10);
    journal.close().expect("closes");
    let last = *segments(&dir.0).expect("lists").last().expect("a segment");
    let path = segment_path(&dir.0, last);
    let mut bytes = std::fs::read(&path).expect("reads");
    // A bit of the seventh record (records are the same size but for their text).
    let scan = segment::scan(&bytes).expect("intact");
    let seventh = scan.records[6].0;
    bytes[seventh + 20] ^= 0x10;
    std::fs::write(&path, &bytes).expect("writes");

    let journal = Journal::open(JournalSettings::new(&dir.0)).expect("recovers");
    journal.close().expect("closes");
    assert_eq!(
        read_all(&dir.0, Position::START),
        (0..6).map(record).collect::<Vec<_>>()
    );
}

#[test]
fn a_damaged_older_segment_is_reported_and_reading_goes_on() {
    let dir = TempDir::new("damaged");
    let journal = Journal::open(settings(&dir.0)).expect("opens");
    append_all(&journal, 0..60);
    journal.close().expect("closes");
    let all = segments(&dir.0).expect("lists");
    let path = segment_path(&dir.0, all[1]);
    let mut bytes = std::fs::read(&path).expect("reads");
    let in_first = segment::scan(&std::fs::read(segment_path(&dir.0, all[0])).expect("reads"))
        .expect("intact")
        .records
        .len();
    let in_second = segment::scan(&bytes).expect("intact").records.len();
    assert!(in_second >= 2);
    bytes[HEADER_LEN + 3] ^= 0x01;
    std::fs::write(&path, &bytes).expect("writes");

    let read: Vec<_> = JournalReader::open(&dir.0, Position::START).collect();
    let errors: Vec<_> = read.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(matches!(errors[0], ReadError::Frame { fault: Some(_), .. }));
    let records: Vec<_> = read
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| e.record)
        .collect();
    let expected: Vec<_> = (0..60)
        .filter(|&n| (n as usize) < in_first || n as usize >= in_first + in_second)
        .map(record)
        .collect();
    assert_eq!(records, expected);
}

#[test]
fn a_corrupt_header_of_the_last_segment_refuses_to_open() {
    let dir = TempDir::new("header");
    let journal = Journal::open(JournalSettings::new(&dir.0)).expect("opens");
    append_all(&journal, 0..3);
    journal.close().expect("closes");
    let last = *segments(&dir.0).expect("lists").last().expect("a segment");
    let path = segment_path(&dir.0, last);
    let mut bytes = std::fs::read(&path).expect("reads");
    bytes[14] ^= 0x01;
    std::fs::write(&path, &bytes).expect("writes");
    let error = Journal::open(JournalSettings::new(&dir.0)).expect_err("refused");
    assert!(matches!(error, OpenError::Segment { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("corrupt"), "{message}");
}

#[test]
fn the_size_cap_refuses_and_counts_until_space_is_released() {
    let dir = TempDir::new("cap");
    let journal = Journal::open(JournalSettings {
        segment_size: 512,
        max_size: 4096,
        ..JournalSettings::new(&dir.0)
    })
    .expect("opens");
    let mut refused = 0;
    for n in 0..200 {
        match journal.append(record(n)) {
            Ok(()) => {}
            Err(Refused::Full) => refused += 1,
            Err(other) => panic!("refused for another reason: {other:?}"),
        }
    }
    journal.flush().expect("flushes");
    let stats = journal.stats();
    assert!(stats.full && !stats.healthy(), "{stats:?}");
    assert!(stats.bytes <= 4096, "{stats:?}");
    assert!(stats.appended > 0 && stats.appended < 200, "{stats:?}");
    // Refused by the writer thread or already at the call: all counted.
    assert_eq!(stats.appended + stats.refused_full, 200, "{stats:?}");
    assert!(stats.refused_full >= refused);
    assert_eq!(stats.lost(), stats.refused_full);
    assert_eq!(
        read_all(&dir.0, Position::START),
        (0..stats.appended as u32).map(record).collect::<Vec<_>>()
    );
    assert_eq!(journal.append(record(500)), Err(Refused::Full));

    // Replay is done with all but the newest segment: space is freed, records are taken again.
    let newest = *segments(&dir.0).expect("lists").last().expect("a segment");
    let removed = journal.release_through(newest).expect("releases");
    assert!(removed > 0);
    assert_eq!(segments(&dir.0).expect("lists"), vec![newest]);
    let stats = journal.stats();
    assert!(!stats.full, "{stats:?}");
    journal.append(record(600)).expect("taken again");
    journal.flush().expect("flushes");
    let tail = read_all(&dir.0, Position::START);
    assert_eq!(tail.last(), Some(&record(600)));
    journal.close().expect("closes");
}

#[test]
fn the_lock_refuses_a_second_opener() {
    let dir = TempDir::new("lock");
    let first = Journal::open(JournalSettings::new(&dir.0)).expect("opens");
    let error = Journal::open(JournalSettings::new(&dir.0)).expect_err("locked");
    let pid = std::process::id();
    assert!(
        matches!(&error, OpenError::Lock(LockError::Held { pid: Some(p), .. }) if *p == pid),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains(&dir.0.display().to_string())
            && message.contains(&format!("pid {pid}"))
            && message.contains("--journal-dir"),
        "{message}"
    );
    first.close().expect("closes");
    Journal::open(JournalSettings::new(&dir.0))
        .expect("free again once closed")
        .close()
        .expect("closes");
}

/// Waits up to five seconds for `done` to hold.
fn eventually(journal: &Journal, done: impl Fn(&JournalStats) -> bool) -> JournalStats {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stats = journal.stats();
        if done(&stats) || Instant::now() > deadline {
            return stats;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn each_fsync_policy_syncs_when_it_says_and_keeps_the_records() {
    for (name, fsync) in [
        ("always", FsyncPolicy::Always),
        ("interval", FsyncPolicy::Interval(Duration::from_millis(5))),
        ("never", FsyncPolicy::Never),
    ] {
        let dir = TempDir::new(&format!("fsync-{name}"));
        let journal = Journal::open(JournalSettings {
            fsync,
            ..settings(&dir.0)
        })
        .expect("opens");
        append_all(&journal, 0..50);
        // No flush: the policy alone decides when the records are synced.
        let stats = eventually(&journal, |s| s.appended == 50);
        assert_eq!(stats.appended, 50, "{name}");
        if fsync == FsyncPolicy::Never {
            std::thread::sleep(Duration::from_millis(20));
            assert_eq!(journal.stats().syncs, 0, "{name}");
        } else {
            // `always` syncs each group it writes; `interval` on its timer, the journal idle.
            let stats = eventually(&journal, |s| s.syncs > 0);
            assert!(stats.syncs > 0, "{name}: {stats:?}");
        }
        append_all(&journal, 50..100);
        journal.flush().expect("flushes");
        if fsync == FsyncPolicy::Never {
            // A flush syncs whatever the policy.
            assert_eq!(journal.stats().syncs, 1, "{name}");
        }
        journal.close().expect("closes");
        assert_eq!(
            read_all(&dir.0, Position::START),
            (0..100).map(record).collect::<Vec<_>>(),
            "{name}"
        );
    }
    assert_eq!("interval".parse(), Ok(FsyncPolicy::default()));
    assert_eq!("always".parse(), Ok(FsyncPolicy::Always));
    assert_eq!("never".parse(), Ok(FsyncPolicy::Never));
    let error = "sometimes".parse::<FsyncPolicy>().expect_err("unknown");
    assert!(error.contains("always, interval or never"), "{error}");
}

/// A lock file left by a process that died (the kernel dropped its lock) does not keep the
/// directory locked.
#[test]
fn a_lock_file_left_by_a_dead_process_is_taken_over() {
    let dir = TempDir::new("stale-lock");
    std::fs::create_dir_all(&dir.0).expect("creates");
    std::fs::write(
        dir.0.join(cqlmirror_runtime::journal::LOCK_FILE),
        "4194999\n",
    )
    .expect("writes");
    let journal = Journal::open(JournalSettings::new(&dir.0)).expect("not locked");
    let pid =
        std::fs::read_to_string(dir.0.join(cqlmirror_runtime::journal::LOCK_FILE)).expect("reads");
    assert_eq!(pid.trim(), std::process::id().to_string());
    journal.close().expect("closes");
}

#[test]
fn a_segment_copied_under_another_name_is_reported_not_replayed_twice() {
    let dir = TempDir::new("misnamed");
    let journal = Journal::open(JournalSettings::new(&dir.0)).expect("opens");
    append_all(&journal, 0..3);
    journal.close().expect("closes");
    let last = *segments(&dir.0).expect("lists").last().expect("a segment");
    std::fs::copy(segment_path(&dir.0, last), segment_path(&dir.0, last + 10)).expect("copies");
    let read: Vec<_> = JournalReader::open(&dir.0, Position::START).collect();
    assert_eq!(read.len(), 4, "{read:?}");
    assert!(
        matches!(&read[3], Err(ReadError::Misnamed { sequence, .. }) if *sequence == last),
        "{:?}",
        read[3]
    );
    let records: Vec<_> = read
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| e.record)
        .collect();
    assert_eq!(records, (0..3).map(record).collect::<Vec<_>>());
}
