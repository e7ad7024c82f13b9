"""Reads: served by the primary alone, switched with the primary at run time, shadowed to the
other cluster and compared, with the divergence report; tables kept off the target."""

import json
import re
import statistics
import subprocess
import time

import workload
from test_proxy_failures import Frozen
from test_proxy_ops import get, wait_until

SOURCE_ROWS = {(k, 0): f"row {k}" for k in range(1, 6)}


def metric(proxy, name, **labels):
    """The sum of the series of `name` whose labels include `labels`."""
    status, text = get(f"{proxy.ops_url}/metrics")
    assert status == 200, text
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def target_reads(proxy):
    return sum(metric(proxy, "cqlmirror_cluster_requests_total", cluster="target", opcode=op,
                      kind="read") for op in ("QUERY", "EXECUTE"))


def admin(proxy, *args):
    run = subprocess.run([str(proxy.binary), *args, "--url", proxy.ops_url],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, f"{args}: {run.stdout}{run.stderr}"
    return run.stdout


def rows_of(session, statement, *values):
    return {(r.k, r.c): r.v for r in session.execute(statement, values)}


def diverged_table(target_session, keyspace):
    """Makes the target's copy of `kv` differ from the source's in three rows, directly."""
    target_session.execute(f"UPDATE {keyspace}.kv SET v = 'target value' WHERE k = 2 AND c = 0")
    target_session.execute(f"DELETE FROM {keyspace}.kv WHERE k = 3 AND c = 0")
    target_session.execute(f"INSERT INTO {keyspace}.kv (k, c, v) VALUES (6, 0, 'target only')")


def test_reads_follow_the_primary_and_the_shadow_report_lists_the_differences(
        main_bed, start_proxy, connect, keyspace, tmp_path):
    divergence_log = tmp_path / "divergences.jsonl"
    proxy = start_proxy(main_bed, "--divergence-log", str(divergence_log))
    session = connect(proxy.endpoint)
    known = lambda: metric(proxy, "cqlmirror_schema_tables", cluster="source")  # noqa: E731
    tables_before = wait_until(known, "the source's schema read")
    session.execute(workload.KEYSPACE_DDL.format(ks=keyspace))
    session.execute(f"CREATE TABLE {keyspace}.kv (k int, c int, v text, PRIMARY KEY (k, c))")
    # The proxy reads the new table's key (for row-by-row comparison) after the schema change.
    wait_until(lambda: known() > tables_before, "the new table's key read by the proxy")
    for (k, c), v in SOURCE_ROWS.items():
        session.execute(f"INSERT INTO {keyspace}.kv (k, c, v) VALUES (%s, %s, %s)", (k, c, v))
    target_direct = connect(main_bed.target)
    source_direct = connect(main_bed.source)
    diverged_table(target_direct, keyspace)
    target_rows = rows_of(target_direct, f"SELECT k, c, v FROM {keyspace}.kv")
    assert target_rows != SOURCE_ROWS
    assert rows_of(source_direct, f"SELECT k, c, v FROM {keyspace}.kv") == SOURCE_ROWS

    scan = f"SELECT k, c, v FROM {keyspace}.kv"
    one = session.prepare(f"SELECT k, c, v FROM {keyspace}.kv WHERE k = ?")

    # Primary mode (the default): the source answers; the target sees no read at all.
    before = target_reads(proxy)
    assert rows_of(session, scan) == SOURCE_ROWS
    assert rows_of(session, "/* a comment */  select k, c, v FROM " + f"{keyspace}.kv") == SOURCE_ROWS
    assert rows_of(session, one, 2) == {(2, 0): "row 2"}
    assert target_reads(proxy) == before, "a read reached the target in primary mode"

    # The primary switched at run time: the same session and prepared statement read the
    # target's rows.
    assert '"primary":"target"' in admin(proxy, "admin", "set-primary", "target").replace(" ", "")
    assert rows_of(session, scan) == target_rows
    assert rows_of(session, one, 2) == {(2, 0): "target value"}
    assert rows_of(session, one, 6) == {(6, 0): "target only"}
    admin(proxy, "admin", "set-primary", "source")
    assert rows_of(session, scan) == SOURCE_ROWS

    # Shadow mode: clients get the source's rows; the report lists exactly the differing rows.
    admin(proxy, "admin", "set-read-mode", "shadow")
    admin(proxy, "report", "--clear")
    assert rows_of(session, scan) == SOURCE_ROWS
    for k in range(1, 7):
        rows_of(session, one, k)

    def report():
        status, body = get(f"{proxy.ops_url}/admin/report")
        assert status == 200, body
        r = json.loads(body)
        return r if r["compared"] >= 7 else None

    r = wait_until(report, "seven shadow reads compared")
    tables = {(t["keyspace"], t["table"]): t for t in r["tables"]}
    kv = tables[(keyspace, "kv")]
    # The scan: one row missing on the target (k=3), one extra (k=6), one different (k=2);
    # the single-partition reads for k=2, 3 and 6 once each.
    assert (kv["missing_rows"], kv["extra_rows"], kv["different_values"]) == (2, 2, 2), kv
    assert kv["compared"] == 7 and kv["differing"] == 4, kv
    rows = [row for d in r["samples"] for row in d["rows"]]
    different = [row for row in rows if row["kind"] == "different_values"]
    assert different, rows
    for row in different:
        assert {k["column"]: k["value"] for k in row["key"]} == {"k": "2", "c": "0"}, row
        assert [(c["name"], c["primary"], c["secondary"]) for c in row["columns"]] == [
            ("v", "row 2", "target value")], row
    keys = lambda kind: sorted(  # noqa: E731
        tuple(k["value"] for k in row["key"]) for row in rows if row["kind"] == kind)
    assert keys("missing_rows") == [("3", "0")] * 2, rows
    assert keys("extra_rows") == [("6", "0")] * 2, rows
    assert metric(proxy, "cqlmirror_divergences_total", keyspace=keyspace, table="kv",
                  kind="different_values") == 2

    # The divergence log has the same four divergences, one JSON object per line.
    def logged():
        lines = divergence_log.read_text().splitlines() if divergence_log.exists() else []
        return lines if len(lines) >= 4 else None
    lines = [json.loads(line) for line in wait_until(logged, "four divergences in the log")]
    assert len(lines) == 4
    assert all(d["keyspace"] == keyspace and d["table"] == "kv" for d in lines), lines
    assert sum(d["counts"].get("different_values", 0) for d in lines) == 2

    printed = admin(proxy, "report")
    assert re.search(rf"{keyspace}\.kv\s+7\s+4\s+2\s+2\s+2\s+0\s+0\s+0", printed), printed
    assert "v: source row 2 | target target value" in printed, printed


def test_reads_in_primary_and_shadow_mode_do_not_wait_for_a_stopped_target(
        outage_bed, start_proxy, connect, keyspace):
    """With the target frozen (it accepts nothing and answers nothing), reads through the
    proxy take no longer than with it running: they never wait for it. Writes would wait up
    to --wait-timeout (2 s here) for it; no read comes near that."""
    proxy = start_proxy(outage_bed, "--wait-timeout", "2s", "--request-timeout", "4s",
                        "--shadow-sample", "1")
    session = connect(proxy.endpoint)
    session.execute(workload.KEYSPACE_DDL.format(ks=keyspace))
    session.execute(f"CREATE TABLE {keyspace}.kv (k int, c int, v text, PRIMARY KEY (k, c))")
    session.execute(f"INSERT INTO {keyspace}.kv (k, c, v) VALUES (1, 0, 'one')")
    read = session.prepare(f"SELECT v FROM {keyspace}.kv WHERE k = 1")

    def timed(n=40):
        times = []
        for _ in range(n):
            started = time.monotonic()
            assert [r.v for r in session.execute(read)] == ["one"]
            times.append(time.monotonic() - started)
        return times

    running = timed()
    with Frozen(outage_bed):
        frozen_primary = timed()
        admin(proxy, "admin", "set-read-mode", "shadow")
        frozen_shadow = timed()
    admin(proxy, "admin", "set-read-mode", "primary")
    for name, times in [("primary mode", frozen_primary), ("shadow mode", frozen_shadow)]:
        print(f"{name}, target frozen: median {statistics.median(times) * 1000:.1f} ms, "
              f"slowest {max(times) * 1000:.1f} ms (target running: median "
              f"{statistics.median(running) * 1000:.1f} ms)")
        assert max(times) < 1.0, f"a read in {name} waited for the frozen target: {max(times):.2f}s"
    # The shadow reads were sent and failed on the target, without the client waiting.
    wait_until(lambda: metric(proxy, "cqlmirror_cluster_requests_total", cluster="target",
                              opcode="EXECUTE", kind="read") >= 1,
               "shadow reads counted on the target", timeout=15)


def test_filtered_tables_never_reach_the_target(main_bed, start_proxy, connect, keyspace):
    proxy = start_proxy(main_bed, "--filter-tables", rf"{keyspace}\.audit.*")
    session = connect(proxy.endpoint)
    session.execute(workload.KEYSPACE_DDL.format(ks=keyspace))
    session.execute(f"CREATE TABLE {keyspace}.audit_log (k int PRIMARY KEY, v text)")
    session.execute(f"CREATE TABLE {keyspace}.kept (k int PRIMARY KEY, v text)")
    session.execute(f"USE {keyspace}")
    session.execute("INSERT INTO audit_log (k, v) VALUES (1, 'simple')")
    insert_audit = session.prepare("INSERT INTO audit_log (k, v) VALUES (?, ?)")
    insert_kept = session.prepare("INSERT INTO kept (k, v) VALUES (?, ?)")
    session.execute(insert_audit, (2, "prepared"))
    from cassandra.query import BatchStatement
    batch = BatchStatement()
    batch.add(insert_audit, (3, "in a batch"))
    batch.add(insert_kept, (3, "in a batch"))
    batch.add(f"INSERT INTO {keyspace}.kept (k, v) VALUES (4, 'text in a batch')")
    session.execute(batch)
    session.execute(f"INSERT INTO {keyspace}.kept (k, v) VALUES (5, 'simple')")

    source_direct = connect(main_bed.source)
    target_direct = connect(main_bed.target)
    keys = lambda s, t: sorted(r.k for r in s.execute(f"SELECT k FROM {keyspace}.{t}"))  # noqa: E731
    assert keys(source_direct, "audit_log") == [1, 2, 3]
    assert keys(target_direct, "audit_log") == [], "a filtered write reached the target"
    assert keys(source_direct, "kept") == [3, 4, 5]
    assert keys(target_direct, "kept") == [3, 4, 5]
    assert metric(proxy, "cqlmirror_missed_writes_total", cluster="target") == 0
