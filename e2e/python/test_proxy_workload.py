"""A workload of every kind of write through the proxy (Python driver); afterwards both
clusters, read directly, hold the same rows with the same write times and TTLs."""

import time

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

    # The target's DDL completes in the background; Cassandra may run a connection's requests
    # concurrently, so statements that depend on new schema wait until the target has it.
    session.execute(workload.KEYSPACE_DDL.format(ks=keyspace))
    wait_for(lambda: tgt.execute(
        "SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = %s", (keyspace,)
    ).one(), 20, f"keyspace {keyspace} on the target")
    session.execute(f"USE {keyspace}")
    for ddl in workload.TABLES.values():
        session.execute(ddl)
    wait_for(lambda: workload.table_names(tgt, keyspace) == sorted(workload.TABLES), 20,
             "all tables on the target")

    # No lightweight transactions here: a later conditional write may overtake an earlier one
    # on the target when the client does not wait for it.
    model = workload.run_dml(session, keyspace, lwt=False)
    workload.check_model(session, keyspace, model, "read through the proxy")
    workload.check_model(src, keyspace, model, "read directly from the source")

    deadline = time.monotonic() + 15
    while True:
        problems = workload.differences(workload.dump(src, keyspace), workload.dump(tgt, keyspace))
        if not problems or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not problems, "15s after the workload, source and target differ:\n  " + "\n  ".join(problems)
    workload.assert_same_writetimes(src, tgt, keyspace)
