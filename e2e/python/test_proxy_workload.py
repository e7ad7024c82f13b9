"""A workload of every kind of write through the proxy (Python driver); afterwards both
clusters, read directly, hold the same rows with the same write times and TTLs."""

import time

from cassandra import DriverException

import workload


def check_all(checks):
    """Runs every check, then fails with all their messages: one run shows every divergence."""
    failures = []
    for name, check in checks:
        try:
            check()
        except AssertionError as e:
            failures.append(f"[{name}] {e}")
    assert not failures, "\n".join(failures)


def test_workload(main_bed, start_proxy, connect, keyspace):
    proxy = start_proxy(main_bed)
    session = connect(proxy.endpoint)
    workload.create_schema(session, keyspace)
    model = workload.run_dml(session, keyspace)
    workload.check_model(session, keyspace, model, "read through the proxy")

    src, tgt = connect(main_bed.source), connect(main_bed.target)
    check_all([
        ("source", lambda: workload.check_model(src, keyspace, model, "read directly from the source")),
        ("same data", lambda: workload.assert_same_data(src, tgt, keyspace)),
        ("same write times", lambda: workload.assert_same_writetimes(src, tgt, keyspace)),
        ("same TTLs", lambda: workload.assert_same_ttls(src, tgt, keyspace)),
    ])


def wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not after {timeout}s"
        time.sleep(0.2)


def test_wait_false(main_bed, start_proxy, connect, keyspace):
    """`--wait false`: the client's answer does not wait for the target, and after a short
    settle the target holds the same data."""
    proxy = start_proxy(main_bed, "--wait", "false")
    session = connect(proxy.endpoint)
    src, tgt = connect(main_bed.source), connect(main_bed.target)

    # The proxy keeps schema changes, USE and lightweight transactions in order on the target
    # relative to what the client saw answered, so the workload runs as it would with
    # --wait true: no waiting for the target's schema, LWTs included.
    session.execute(workload.KEYSPACE_DDL.format(ks=keyspace))
    session.execute(f"USE {keyspace}")
    for ddl in workload.TABLES.values():
        session.execute(ddl)
    model = workload.run_dml(session, keyspace, lwt=True)
    workload.check_model(session, keyspace, model, "read through the proxy")
    workload.check_model(src, keyspace, model, "read directly from the source")

    # The target may still be working through the tail of the workload (its last schema
    # change included): until the deadline, an error reading it directly means "not yet".
    deadline = time.monotonic() + 15
    while True:
        try:
            problems = workload.differences(workload.dump(src, keyspace), workload.dump(tgt, keyspace))
        except DriverException as e:
            problems = [f"reading the target failed: {e}"]
        if not problems or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not problems, "15s after the workload, source and target differ:\n  " + "\n  ".join(problems)
    workload.assert_same_writetimes(src, tgt, keyspace)
