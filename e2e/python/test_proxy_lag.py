"""`--wait false` at saturation: the target never falls so far behind that its writes are
dropped. The lag bound (`--max-secondary-lag`) slows the client down instead: many
concurrent driver requests through one connection, no missed write, every row on both
clusters; a target frozen for a moment pauses the client, which then goes on."""

import threading
import time

from cassandra.concurrent import execute_concurrent_with_args

from test_proxy_failures import Frozen
from test_proxy_ops import get
from test_proxy_reads import metric

ROWS = 8_000
CONCURRENCY = 1000


def setup(session, keyspace):
    session.execute(f"CREATE KEYSPACE {keyspace} WITH replication = "
                    "{'class': 'SimpleStrategy', 'replication_factor': 1}")
    session.execute(f"CREATE TABLE {keyspace}.kv (k int PRIMARY KEY, v text)")
    return session.prepare(f"INSERT INTO {keyspace}.kv (k, v) VALUES (?, ?)")


def load(session, insert, rows):
    results = execute_concurrent_with_args(
        session, insert, [(k, f"value {k}") for k in rows], concurrency=CONCURRENCY,
        raise_on_first_error=False)
    failed = [r for ok, r in results if not ok]
    assert not failed, f"{len(failed)} writes failed, e.g. {failed[:3]}"


def count(session, keyspace):
    return session.execute(f"SELECT COUNT(*) FROM {keyspace}.kv", timeout=60).one()[0]


def test_saturated_wait_false_misses_nothing(main_bed, start_proxy, connect, keyspace):
    # A small bound, so that it is reached over and over by this load.
    proxy = start_proxy(main_bed, "--wait", "false", "--max-secondary-lag", "32")
    session = connect(proxy.endpoint)
    insert = setup(session, keyspace)
    started = time.monotonic()
    load(session, insert, range(ROWS))
    elapsed = time.monotonic() - started
    src, tgt = connect(main_bed.source), connect(main_bed.target)
    assert count(src, keyspace) == ROWS
    deadline = time.monotonic() + 10
    while count(tgt, keyspace) < ROWS and time.monotonic() < deadline:
        time.sleep(0.2)
    assert count(tgt, keyspace) == ROWS
    assert metric(proxy, "cqlmirror_missed_writes_total", cluster="target") == 0
    pauses = metric(proxy, "cqlmirror_secondary_lag_pauses_total", cluster="target")
    assert pauses > 0, f"the bound was never reached in {elapsed:.1f}s"
    # Nothing is left unfinished on the target.
    assert "cqlmirror_secondary_lag_requests 0" in get(f"{proxy.ops_url}/metrics")[1]


def test_frozen_target_pauses_the_client_until_it_catches_up(main_bed, start_proxy, connect,
                                                            keyspace):
    """The target stops answering for a second and a half, less than --wait-timeout: the
    client is paused at the bound, not failed, and the target gets every write after."""
    proxy = start_proxy(main_bed, "--wait", "false", "--max-secondary-lag", "256",
                        "--wait-timeout", "8s", "--request-timeout", "8s")
    session = connect(proxy.endpoint)
    insert = setup(session, keyspace)
    errors = []

    def writer():
        try:
            load(session, insert, range(ROWS))
        except Exception as e:  # reported by the test thread
            errors.append(e)

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(0.5)
    with Frozen(main_bed):
        time.sleep(1.5)
        paused = metric(proxy, "cqlmirror_secondary_lag_pauses_total", cluster="target")
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert not errors, errors
    assert paused > 0, "the client was not paused while the target was frozen"
    tgt = connect(main_bed.target)
    deadline = time.monotonic() + 10
    while count(tgt, keyspace) < ROWS and time.monotonic() < deadline:
        time.sleep(0.2)
    assert count(tgt, keyspace) == ROWS
    assert metric(proxy, "cqlmirror_missed_writes_total", cluster="target") == 0


def test_a_write_applied_late_on_a_frozen_target_expires_with_the_source_copy(
        main_bed, start_proxy, connect, keyspace):
    """A TTL write the target applies seconds late (it was frozen) still expires when the
    source's copy does: the proxy gives v5 writes one `now_in_seconds`, the time TTLs count
    from. (v3 and v4 have no such field; there the late copy lives longer.)"""
    from cassandra import ProtocolVersion

    proxy = start_proxy(main_bed, "--wait", "false", "--wait-timeout", "20s",
                        "--request-timeout", "20s")
    session = connect(proxy.endpoint, protocol_version=ProtocolVersion.V5)
    setup(session, keyspace)
    ttl = 3600
    with Frozen(main_bed):
        session.execute(f"INSERT INTO {keyspace}.kv (k, v) VALUES (1, 'late') USING TTL {ttl}")
        time.sleep(5)
    src, tgt = connect(main_bed.source), connect(main_bed.target)
    query = f"SELECT ttl(v) FROM {keyspace}.kv WHERE k = 1"
    deadline = time.monotonic() + 10
    while tgt.execute(query).one() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    # Read both within the same second or two: each read's remaining TTL shrinks as it waits.
    left = [src.execute(query).one()[0], tgt.execute(query).one()[0]]
    assert left[0] > ttl - 30, left
    assert abs(left[0] - left[1]) <= 1, (
        f"remaining TTL on source / target: {left}: the target's copy was applied 5 s late "
        "and must still expire with the source's")
    assert metric(proxy, "cqlmirror_missed_writes_total", cluster="target") == 0
