"""Nothing lost: writes the target misses while it is down are journaled (--journal-dir), a
proxy killed with SIGKILL mid-journal leaves a journal the next proxy recovers, and `replay`
applies the journal to the target so that both clusters hold the same rows, with the same
write times and TTLs. Counters missed while the target was down are known not applied there
and replayed once."""

import os
import re
import subprocess
import time

import bed
import proxy as proxies
import workload
from test_proxy_reads import metric

COMMITLOG_SYNC = 10.0  # commitlog_sync_period of the bed's nodes
ROUNDS = 30  # per phase; each round writes 9 statements


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what() if callable(what) else what
        time.sleep(0.1)


class Workload:
    """Simple, prepared, batched, collection, TTL, counter writes and deletes through one
    driver session; `rounds` writes are counted."""

    def __init__(self, session, keyspace):
        from cassandra.query import BatchStatement

        self.session = session
        self.batch_type = BatchStatement
        session.execute(f"USE {keyspace}")
        self.insert = session.prepare("INSERT INTO plain (k, v, n) VALUES (?, ?, ?)")
        self.insert_ttl = session.prepare("INSERT INTO expiring (k, v) VALUES (?, ?) USING TTL 3600")
        self.count = session.prepare("UPDATE counts SET c = c + 1 WHERE k = ?")
        self.add = session.prepare("UPDATE counts SET c = c + ? WHERE k = ?")
        self.delete = session.prepare("DELETE FROM plain WHERE k = ?")
        self.writes = 0

    def round(self, base):
        s = self.session
        s.execute(f"INSERT INTO plain (k, v, n) VALUES ({base}, 'simple {base}', {base})")
        s.execute(self.insert, (base + 1, f"prepared {base}", base + 1))
        batch = self.batch_type()
        batch.add(self.insert, (base + 2, f"batched {base}", base + 2))
        batch.add(f"INSERT INTO plain (k, v, n) VALUES ({base + 3}, 'batched text', 0)")
        s.execute(batch)
        s.execute(f"UPDATE coll SET s = s + {{{base}}}, m['k{base}'] = {base} WHERE k = {base % 7}")
        s.execute(f"UPDATE coll SET l = l + [{base}] WHERE k = {base % 7}")
        s.execute(self.insert_ttl, (base, f"expiring {base}"))
        s.execute(self.count, (base % 5,))
        s.execute(self.add, (3, base % 5))
        s.execute(self.delete, (base - 100,))
        self.writes += 9

    def run(self, start, rounds):
        for i in range(rounds):
            self.round(start + 10 * i)


def create_schema(session, keyspace):
    session.execute(workload.KEYSPACE_DDL.format(ks=keyspace))
    session.execute(f"USE {keyspace}")
    session.execute("CREATE TABLE plain (k int PRIMARY KEY, v text, n int)")
    session.execute("CREATE TABLE coll (k int PRIMARY KEY, s set<int>, m map<text, int>, l list<int>)")
    session.execute("CREATE TABLE expiring (k int PRIMARY KEY, v text)")
    session.execute("CREATE TABLE counts (k int PRIMARY KEY, c counter)")


def scan(endpoint, keyspace):
    """Every row of the test's tables, read directly from one cluster."""
    cluster = endpoint.cluster()
    try:
        s = cluster.connect(keyspace)
        plain = {r.k: (r.v, r.n, r.wv, r.wn) for r in s.execute(
            "SELECT k, v, n, writetime(v) AS wv, writetime(n) AS wn FROM plain")}
        coll = {r.k: (sorted(r.s or []), sorted((r.m or {}).items()), list(r.l or []))
                for r in s.execute("SELECT k, s, m, l FROM coll")}
        expiring = {r.k: (r.v, r.wv, r.t) for r in s.execute(
            "SELECT k, v, writetime(v) AS wv, ttl(v) AS t FROM expiring")}
        counts = {r.k: r.c for r in s.execute("SELECT k, c FROM counts")}
        return plain, coll, expiring, counts
    finally:
        cluster.shutdown()


def replay(binary, journal, target, *args):
    run = subprocess.run(
        [str(binary), "replay", "--journal-dir", str(journal), target.address, *args],
        capture_output=True, text=True, timeout=120)
    return run


def summary_numbers(text):
    match = re.search(r"(\d+) records read in [\d.]+s: (\d+) (?:would be )?applied, (\d+) failed, "
                      r"(\d+) needing attention", text)
    assert match, text
    return tuple(int(g) for g in match.groups())


def kill(p):
    """SIGKILL, as a crash: the proxy gets no chance to flush or close its journal."""
    p.proc.kill()
    p.proc.wait(10)
    proxies._running.discard(p)


def test_missed_writes_are_journaled_and_replayed_after_a_crash(
        outage_bed, start_proxy, connect, keyspace, proxy_binary, tmp_path):
    journal = tmp_path / "journal"
    options = ("--journal-dir", str(journal), "--request-timeout", "3s")
    started = time.monotonic()
    first = start_proxy(outage_bed, *options)
    session = connect(first.endpoint)
    create_schema(session, keyspace)
    load = Workload(session, keyspace)
    load.run(0, 3)  # reaches both clusters
    assert metric(first, "cqlmirror_journal_records_total") == 0
    # The schema must be on disk before the node stops (the bed syncs its commit log every
    # 10 s and kills a node that does not stop in time).
    time.sleep(COMMITLOG_SYNC + 1)

    node = outage_bed.target.host
    run = bed.testbed("--name", outage_bed.name, "stop-node", node)
    assert run.returncode == 0, run.stderr
    starter = None
    try:
        load.run(1000, ROUNDS)
        missed_first = metric(first, "cqlmirror_missed_writes_total")
        assert missed_first >= ROUNDS * 9, "every write while the target is down is missed"
        wait_for(lambda: metric(first, "cqlmirror_journal_records_total") == missed_first, 10,
                 "the journal holds every missed write")
        assert metric(first, "cqlmirror_journal_refused_total") == 0
        assert metric(first, "cqlmirror_journal_bytes") > 0
        status = bed_status(first)
        assert status["journal"]["records"] == missed_first, status

        # A crash mid-journal: the segment is left open, as written so far.
        kill(first)
        second = start_proxy(outage_bed, *options)
        assert "journal" in second.log_text()
        session = connect(second.endpoint)
        written = load.writes
        load = Workload(session, keyspace)
        load.run(2000, ROUNDS)

        # The target comes back; writes reach it again (those before its connection is back
        # are journaled too).
        import threading

        def start():
            bed.testbed("--name", outage_bed.name, "start-node", node, timeout=240)

        starter = threading.Thread(target=start, daemon=True)
        starter.start()
        wait_for(lambda: bed.answers(outage_bed.target, timeout=0.5), 240,
                 "the target node did not come back")
        load.run(3000, 3)
        wait_for(lambda: metric(second, "cqlmirror_journal_records_total") >= ROUNDS * 9, 10,
                 "the second proxy's journal holds the writes it missed")
        time.sleep(1)  # the writer thread's last group
        missed_second = metric(second, "cqlmirror_missed_writes_total")
        records_second = metric(second, "cqlmirror_journal_records_total")
        # Every missed write is journaled but the driver's `USE` on its connections while the
        # target was down (connection state, nothing to replay).
        assert 0 <= missed_second - records_second <= 3, (missed_second, records_second)
        assert metric(second, "cqlmirror_journal_refused_total") == 0
        second.stop()
    finally:
        if starter is not None:
            starter.join(240)
    assert second.exit_status is None and not second.needed_kill
    journaled = missed_first + records_second

    before = scan(outage_bed.target, keyspace)
    source = scan(outage_bed.source, keyspace)
    assert before[0] != source[0], "the target missed writes before replay"

    # A dry run applies nothing and lists what it would.
    run = replay(proxy_binary, journal, outage_bed.target, "--dry-run")
    assert run.returncode == 0, run.stderr + run.stdout
    read, would, failed, attention = summary_numbers(run.stdout)
    assert read == journaled, run.stdout
    lines = run.stdout.splitlines()
    assert sum(line.startswith(("apply: ", "apply, check order: ")) for line in lines) == would
    list_writes = sum(line.startswith("apply, check order: ") for line in lines)
    assert list_writes > 0, "list appends were journaled, to be applied and checked"
    assert scan(outage_bed.target, keyspace)[0] == before[0]

    replay_started = time.monotonic()
    run = replay(proxy_binary, journal, outage_bed.target)
    replay_took = time.monotonic() - replay_started
    assert run.returncode == 0, run.stderr + run.stdout
    read, applied, failed, attention = summary_numbers(run.stdout)
    assert (read, failed) == (journaled, 0), run.stdout
    # Every write was missed while the target was down or its connection was not back yet:
    # never sent, known not applied, so counters and list appends are replayed too.
    assert attention == 0, run.stdout
    assert applied == journaled
    # List appends are applied and listed: their order is for an operator to check.
    assert f"{list_writes} list orders to check" in run.stdout, run.stdout
    assert run.stdout.count("check order: ") == list_writes, run.stdout

    target = scan(outage_bed.target, keyspace)
    source = scan(outage_bed.source, keyspace)
    assert target[0] == source[0], "plain rows, values and write times"
    assert target[1] == source[1], "collections (list appends applied once)"
    assert {k: v[:2] for k, v in target[2].items()} == {k: v[:2] for k, v in source[2].items()}
    for k, (_, _, ttl) in source[2].items():
        assert abs(target[2][k][2] - ttl) <= 1, f"TTL of row {k}: {target[2][k][2]} vs {ttl}"
    assert target[3] == source[3], "counters replayed once"

    # Resumed from its checkpoint: nothing left, nothing applied twice.
    run = replay(proxy_binary, journal, outage_bed.target)
    assert run.returncode == 0, run.stderr + run.stdout
    assert summary_numbers(run.stdout)[:2] == (0, 0), run.stdout
    assert scan(outage_bed.target, keyspace)[3] == source[3]
    print(f"writes {written + load.writes}, missed {journaled:.0f}, journaled {journaled:.0f}, "
          f"replayed {applied} in {replay_took:.1f}s; test {time.monotonic() - started:.0f}s")


def bed_status(p):
    import json
    import urllib.request

    with urllib.request.urlopen(f"{p.ops_url}/admin/status", timeout=5) as r:
        return json.loads(r.read())


def test_replay_refuses_a_journal_in_use(outage_bed, start_proxy, proxy_binary, tmp_path):
    journal = tmp_path / "journal"
    start_proxy(outage_bed, "--journal-dir", str(journal))
    run = replay(proxy_binary, journal, outage_bed.target)
    assert run.returncode != 0
    assert "in use" in run.stderr and "--journal-dir" in run.stderr, run.stderr


def test_a_full_journal_is_counted_logged_and_not_ready(
        outage_bed, start_proxy, connect, keyspace, tmp_path):
    """--journal-max-size reached: the writes it refuses are counted, logged, and the proxy
    says it is not ready (never a silent loss)."""
    from test_proxy_ops import get

    journal = tmp_path / "journal"
    # A target nobody listens on: every write is missed, never sent.
    nowhere = bed.Endpoint(host=outage_bed.target.host.rsplit(".", 1)[0] + ".250", port=9042,
                           dc=outage_bed.target.dc)
    the_bed = bed.Bed(outage_bed.name, outage_bed.source, nowhere)
    p = start_proxy(the_bed, "--journal-dir", str(journal), "--journal-max-size", "8KiB",
                    "--ready-without-secondary", "--connect-timeout", "1s")
    # Ready once the source answers (the target never does: --ready-without-secondary).
    wait_for(lambda: get(f"{p.ops_url}/health/readiness")[0] == 200, 20,
             "ready with the source alone")
    session = connect(p.endpoint)
    session.execute(workload.KEYSPACE_DDL.format(ks=keyspace))
    session.execute(f"CREATE TABLE {keyspace}.t (k int PRIMARY KEY, v text)")
    insert = session.prepare(f"INSERT INTO {keyspace}.t (k, v) VALUES (?, ?)")
    for k in range(200):
        session.execute(insert, (k, "x" * 100))
    wait_for(lambda: metric(p, "cqlmirror_journal_refused_total", reason="full") > 0, 10,
             "writes past the cap are counted as refused")
    records = metric(p, "cqlmirror_journal_records_total")
    refused = metric(p, "cqlmirror_journal_refused_total", reason="full")
    assert 0 < records < 200 and records + refused >= 200, (records, refused)
    # The schema changes are missed too, and never journaled (applied by hand).
    assert metric(p, "cqlmirror_journal_refused_total", reason="not-data-write") >= 2
    assert metric(p, "cqlmirror_journal_full") == 1
    status, body = get(f"{p.ops_url}/health/readiness")
    assert status == 503 and "--journal-max-size" in body, body
    assert "reached its size cap" in p.log_text()


def test_an_unusable_journal_dir_stops_the_start(outage_bed, proxy_binary, tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    p = proxies.Proxy(proxy_binary, outage_bed.source, outage_bed.target,
                      ("--journal-dir", str(not_a_dir)), log_name="journal-not-a-dir")
    try:
        p.start(timeout=10)
        raise AssertionError("the proxy started with a file as --journal-dir")
    except proxies.ProxyError as e:
        assert "--journal-dir" in str(e), e


def test_writes_timed_out_on_a_frozen_target_are_replayed_or_listed(
        outage_bed, start_proxy, connect, keyspace, proxy_binary, tmp_path):
    """The target freezes (SIGSTOP): writes time out there, their outcome unknown. Replay
    applies the plain ones (idempotent under their timestamp) and lists the counter updates,
    which the target may or may not have applied once it thawed: never counted twice."""
    import signal

    journal = tmp_path / "journal"
    p = start_proxy(outage_bed, "--journal-dir", str(journal), "--wait", "false",
                    "--request-timeout", "2s")
    session = connect(p.endpoint)
    create_schema(session, keyspace)
    insert = session.prepare("INSERT INTO plain (k, v, n) VALUES (?, ?, ?)")
    # `c = c + 1`: counter updates commute, so they are not held behind the writes the
    # frozen target has not finished (`c = c + ?` could be a list append, and would be).
    count = session.prepare("UPDATE counts SET c = c + 1 WHERE k = ?")
    pids = bed.running_pids(outage_bed.name, "target")
    assert pids, "the target node's process"
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        for i in range(20):
            session.execute(insert, (i, f"frozen {i}", i))
            session.execute(f"INSERT INTO plain (k, v, n) VALUES ({100 + i}, 'simple', {i})")
            session.execute(count, (i % 4,))
        # Every write to the target times out (--request-timeout 2s) and is journaled.
        wait_for(lambda: metric(p, "cqlmirror_journal_records_total") >= 60, 20,
                 lambda: f"the timed-out writes are journaled: {metric(p, 'cqlmirror_journal_records_total')} records, {metric(p, 'cqlmirror_missed_writes_total')} missed, {metric(p, 'cqlmirror_journal_refused_total')} refused")
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    wait_for(lambda: bed.answers(outage_bed.target, timeout=0.5), 30, "the target thawed")
    p.stop()

    run = replay(proxy_binary, journal, outage_bed.target)
    assert run.returncode == 0, run.stderr + run.stdout
    read, applied, failed, attention = summary_numbers(run.stdout)
    assert failed == 0 and attention == 20 and applied == read - 20, run.stdout
    listed = {}
    for line in run.stdout.splitlines():
        if line.startswith("attention: "):
            assert "counter unknown (timeout)" in line, line
            key = int(re.search(r"\[0x([0-9a-f]+)\]", line).group(1), 16)
            listed[key] = listed.get(key, 0) + 1
    target = scan(outage_bed.target, keyspace)
    source = scan(outage_bed.source, keyspace)
    assert target[0] == source[0], "plain rows, values and write times"
    for k, c in source[3].items():
        missing = c - target[3].get(k, 0)
        assert 0 <= missing <= listed.get(k, 0), (k, c, target[3].get(k), listed)
    print(f"frozen target: {read} journaled, {applied} replayed, {attention} counter updates "
          f"listed; counters short on the target by "
          f"{sum(c - target[3].get(k, 0) for k, c in source[3].items())}")


def segment_files(journal):
    return sorted(p.name for p in journal.glob("*.journal"))


def replay_metrics(p):
    return {result: metric(p, "cqlmirror_replay_records_total", result=result)
            for result in ("applied", "check-order", "attention", "failed", "unreadable")}


def replay_state(p):
    for state in ("idle", "replaying", "waiting", "stopped"):
        if metric(p, "cqlmirror_replay_state", state=state) == 1:
            return state
    return None


def test_replay_auto_brings_the_target_back_in_line(
        outage_bed, start_proxy, connect, keyspace, tmp_path):
    """--replay auto: the writes the target missed while it was down reach it once it is back,
    with no `replay` run: both clusters then hold the same rows, write times, collections,
    counters and TTLs; the metrics show every record applied and nothing left; the replayed
    segments are removed."""
    journal = tmp_path / "journal"
    # Small segments (a quarter of the cap) so that several roll while the target is down.
    p = start_proxy(outage_bed, "--journal-dir", str(journal), "--replay", "auto",
                    "--journal-max-size", "128KiB", "--request-timeout", "3s")
    session = connect(p.endpoint)
    create_schema(session, keyspace)
    load = Workload(session, keyspace)
    load.run(0, 3)
    assert replay_state(p) == "idle"
    assert bed_status(p)["replay"]["mode"] == "auto"
    time.sleep(COMMITLOG_SYNC + 1)

    node = outage_bed.target.host
    run = bed.testbed("--name", outage_bed.name, "stop-node", node)
    assert run.returncode == 0, run.stderr
    starter = None
    try:
        load.run(1000, ROUNDS)
        missed = metric(p, "cqlmirror_missed_writes_total")
        assert missed >= ROUNDS * 9
        wait_for(lambda: metric(p, "cqlmirror_journal_records_total") == missed, 10,
                 "the journal holds every missed write")
        assert metric(p, "cqlmirror_journal_refused_total") == 0
        records = metric(p, "cqlmirror_journal_records_total")
        assert len(segment_files(journal)) >= 2, segment_files(journal)
        # The replayer found the target down and waits for it, everything still to do.
        wait_for(lambda: replay_state(p) == "waiting", 10,
                 lambda: f"replay waits for the target: {replay_state(p)}")
        assert metric(p, "cqlmirror_replay_backlog_bytes") > 0
        assert sum(replay_metrics(p).values()) == 0

        import threading

        def start():
            bed.testbed("--name", outage_bed.name, "start-node", node, timeout=240)

        starter = threading.Thread(target=start, daemon=True)
        starter.start()
        wait_for(lambda: bed.answers(outage_bed.target, timeout=0.5), 240,
                 "the target node did not come back")
        came_back = time.monotonic()
        # No `replay`: the proxy catches up on its own.
        wait_for(lambda: replay_state(p) == "idle"
                 and metric(p, "cqlmirror_replay_backlog_bytes") == 0
                 and sum(replay_metrics(p).values()) >= records, 120,
                 lambda: f"replay caught up: {replay_state(p)}, {replay_metrics(p)}, "
                         f"backlog {metric(p, 'cqlmirror_replay_backlog_bytes')}")
        caught_up = time.monotonic() - came_back
    finally:
        if starter is not None:
            starter.join(240)

    results = replay_metrics(p)
    assert results["failed"] == 0 and results["unreadable"] == 0, results
    # Every write was missed while the target was down: known not applied, so counters and
    # list appends are replayed too (the list appends listed for their order).
    assert results["attention"] == 0, results
    assert results["applied"] + results["check-order"] == records, (results, records)
    assert results["check-order"] > 0, results
    log = p.log_text()
    assert log.count("replay: check order: ") == results["check-order"]
    assert "--replay auto: " in log and "waiting for the cluster" in log

    # The target converges to the source (polled: the driver may see the last writes late).
    source = scan(outage_bed.source, keyspace)
    wait_for(lambda: scan(outage_bed.target, keyspace)[0] == source[0], 30,
             "plain rows, values and write times")
    target = scan(outage_bed.target, keyspace)
    assert target[1] == source[1], "collections (list appends applied once, in order)"
    assert {k: v[:2] for k, v in target[2].items()} == {k: v[:2] for k, v in source[2].items()}
    for k, (_, _, ttl) in source[2].items():
        assert abs(target[2][k][2] - ttl) <= 1, f"TTL of row {k}: {target[2][k][2]} vs {ttl}"
    assert target[3] == source[3], "counters replayed once"

    # The replayed segments are gone (the one being written stays), and counted.
    assert segment_files(journal) and len(segment_files(journal)) == 1, segment_files(journal)
    assert metric(p, "cqlmirror_journal_segments") == 1
    assert metric(p, "cqlmirror_replay_released_segments_total") >= 1
    status = bed_status(p)["replay"]
    assert status["state"] == "idle" and status["backlog_bytes"] == 0, status
    assert status["records"]["applied"] == results["applied"], status
    # The checkpoint is saved where replay stands: a manual `replay` would find nothing.
    saved = (journal / "replay.checkpoint").read_text().split()
    assert f"{saved[0]}:{saved[1]}" == status["checkpoint"], (saved, status)
    print(f"--replay auto: {records:.0f} records replayed {caught_up:.1f}s after the target "
          f"answered again; {results}")


def test_replay_auto_passes_a_record_the_target_refuses(
        outage_bed, start_proxy, connect, keyspace, proxy_binary, tmp_path):
    """A journaled write the target refuses on replay (its table was dropped there) is tried
    again, logged, counted as failed and passed: the writes after it are still replayed."""
    journal = tmp_path / "journal"
    first = start_proxy(outage_bed, "--journal-dir", str(journal), "--request-timeout", "3s")
    session = connect(first.endpoint)
    create_schema(session, keyspace)
    session.execute("CREATE TABLE gone (k int PRIMARY KEY, v text)")
    time.sleep(COMMITLOG_SYNC + 1)
    node = outage_bed.target.host
    run = bed.testbed("--name", outage_bed.name, "stop-node", node)
    assert run.returncode == 0, run.stderr
    try:
        insert = session.prepare("INSERT INTO plain (k, v, n) VALUES (?, ?, ?)")
        doomed = session.prepare("INSERT INTO gone (k, v) VALUES (?, ?)")
        for k in range(3):
            session.execute(doomed, (k, "never on the target"))
            for i in range(5):
                session.execute(insert, (10 * k + i, f"after {k}", i))
        wait_for(lambda: metric(first, "cqlmirror_journal_records_total") == 18, 10,
                 lambda: f"18 writes journaled: {metric(first, 'cqlmirror_journal_records_total')}")
        first.stop()
    finally:
        run = bed.testbed("--name", outage_bed.name, "start-node", node, timeout=240)
        assert run.returncode == 0, run.stderr
    wait_for(lambda: bed.answers(outage_bed.target, timeout=0.5), 240, "the target is back")

    def drop():
        """The table is dropped on the target alone (a node just started may not take a
        driver's connection at once)."""
        direct = outage_bed.target.cluster()
        try:
            direct.connect(keyspace).execute("DROP TABLE IF EXISTS gone")
            return True
        except Exception as e:  # noqa: BLE001 - tried again until the deadline
            print(f"DROP TABLE gone on the target: {e!r}; trying again")
            time.sleep(1)
            return False
        finally:
            direct.shutdown()

    wait_for(drop, 60, "the table dropped on the target")

    # The next proxy replays the journal its predecessor left.
    p = start_proxy(outage_bed, "--journal-dir", str(journal), "--replay", "auto")
    wait_for(lambda: replay_state(p) == "idle" and sum(replay_metrics(p).values()) == 18, 60,
             lambda: f"replay went through every record: {replay_state(p)}, {replay_metrics(p)}")
    results = replay_metrics(p)
    assert results["failed"] == 3 and results["applied"] == 15, results
    failed = [line for line in p.log_text().splitlines()
              if "replay: failed (refused every try, passed): " in line]
    assert len(failed) == 3 and all("INSERT INTO gone" in line for line in failed), failed
    source = scan(outage_bed.source, keyspace)
    assert scan(outage_bed.target, keyspace)[0] == source[0], "the writes after it replayed"
    assert metric(p, "cqlmirror_replay_backlog_bytes") == 0
    # The previous run's segment is replayed and removed.
    assert len(segment_files(journal)) == 1, segment_files(journal)
