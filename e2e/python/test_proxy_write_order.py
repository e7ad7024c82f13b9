"""`--write-order`: with `parallel` a write the source refuses (its table exists only on the
target) still lands on the target alone; with `primary-first` the target gets a write only
once the source accepted it, so it does not. Normal writes reach both either way."""

import json
import signal
import time

import pytest
from cassandra import InvalidRequest

from test_proxy_ops import get, wait_until


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
    # With --wait false the target may finish a moment after the client's answer (its schema
    # change included: until then the node answers "Unknown CF").
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if rows(tgt, keyspace, "kv") == expected:
                break
        except Exception:  # noqa: BLE001 - the table is not there yet; the assert below says
            pass
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


def test_write_order_switched_by_sighup(main_bed, start_proxy, connect, keyspace, tmp_path):
    """`write-order` in the config file changes on SIGHUP, for the next writes of connections
    already open."""
    config = tmp_path / "cqlmirror.toml"
    config.write_text('write-order = "parallel"\n')
    proxy = start_proxy(main_bed, "--config", str(config))
    session = connect(proxy.endpoint)
    tgt = connect(main_bed.target)
    session.execute(f"CREATE KEYSPACE {keyspace} WITH replication = "
                    "{'class': 'SimpleStrategy', 'replication_factor': 1}")
    tgt.execute(f"CREATE TABLE {keyspace}.target_only (k int PRIMARY KEY, v text)")
    options = json.loads(get(f"{proxy.ops_url}/admin/config")[1])
    assert options["write-order"] == {"value": "parallel", "source": "config file"}

    with pytest.raises(InvalidRequest):
        session.execute(f"INSERT INTO {keyspace}.target_only (k, v) VALUES (1, 'parallel')")
    config.write_text('write-order = "primary-first"\n')
    proxy.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "write-order parallel -> primary-first: applied to new requests"
               in proxy.log_text(), "the write order applied from the file")
    assert json.loads(get(f"{proxy.ops_url}/admin/status")[1])["write_order"] == "primary-first"
    with pytest.raises(InvalidRequest):
        session.execute(f"INSERT INTO {keyspace}.target_only (k, v) VALUES (2, 'primary-first')")
    time.sleep(0.5)
    assert rows(tgt, keyspace, "target_only") == [(1, "parallel")]
