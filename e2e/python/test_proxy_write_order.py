"""`--write-order`: with `parallel` a write the source refuses (its table exists only on the
target) still lands on the target alone; with `primary-first` the target gets a write only
once the source accepted it, so it does not. Normal writes reach both either way."""

import time

import pytest
from cassandra import InvalidRequest


def rows(session, keyspace, table):
    return sorted(tuple(r) for r in session.execute(f"SELECT k, v FROM {keyspace}.{table}"))


@pytest.mark.parametrize("order", ["parallel", "primary-first"])
@pytest.mark.parametrize("wait", ["true", "false"])
def test_write_order(main_bed, start_proxy, connect, keyspace, order, wait):
    proxy = start_proxy(main_bed, "--write-order", order, "--wait", wait)
    session = connect(proxy.endpoint)
    src, tgt = connect(main_bed.source), connect(main_bed.target)
    session.execute(f"CREATE KEYSPACE {keyspace} WITH replication = "
                    "{'class': 'SimpleStrategy', 'replication_factor': 1}")
    session.execute(f"CREATE TABLE {keyspace}.kv (k int PRIMARY KEY, v text)")
    # Only the target has this table: the source (the primary) refuses writes to it.
    tgt.execute(f"CREATE TABLE {keyspace}.target_only (k int PRIMARY KEY, v text)")

    insert = session.prepare(f"INSERT INTO {keyspace}.kv (k, v) VALUES (?, ?)")
    for k in range(20):
        session.execute(insert, (k, f"v{k}"))
    session.execute(f"INSERT INTO {keyspace}.kv (k, v) VALUES (100, 'simple')")
    with pytest.raises(InvalidRequest):
        session.execute(f"INSERT INTO {keyspace}.target_only (k, v) VALUES (1, 'refused')")

    expected = sorted([(k, f"v{k}") for k in range(20)] + [(100, "simple")])
    assert rows(src, keyspace, "kv") == expected
    # With --wait false the target may finish a moment after the client's answer.
    deadline = time.monotonic() + 5
    while rows(tgt, keyspace, "kv") != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    assert rows(tgt, keyspace, "kv") == expected
    landed = rows(tgt, keyspace, "target_only")
    if order == "parallel":
        deadline = time.monotonic() + 5
        while not landed and time.monotonic() < deadline:
            time.sleep(0.1)
            landed = rows(tgt, keyspace, "target_only")
        assert landed == [(1, "refused")]
    else:
        time.sleep(0.5)
        assert rows(tgt, keyspace, "target_only") == []
