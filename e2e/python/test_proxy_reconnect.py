"""The target's node restarts in the middle of a workload on long-lived driver connections: the
proxy connects those client connections' target legs again in the background, and the writes
sent through the same driver connections reach the target again within seconds, prepared ones
included (a restarted node may have forgotten the statement: the proxy prepares it again)."""

import threading
import time

import bed
import workload
from test_proxy_reads import metric

REQUEST_TIMEOUT = 3.0
WRITERS = 3
# The proxy's reconnection backoff is capped at 5 s (drawn between 2.5 and 5 s once capped):
# with the node's CQL port open, the next attempt succeeds.
BACK_WITHIN = 12.0
COMMITLOG_SYNC = 10.0  # commitlog_sync_period of the bed's nodes


def rows_on(endpoint, keyspace):
    cluster = endpoint.cluster()
    try:
        rows = cluster.connect().execute(f"SELECT writer, n, at FROM {keyspace}.writes")
        return {(r.writer, r.n): r.at for r in rows}
    finally:
        cluster.shutdown()


def test_target_node_restart_is_written_again_on_the_same_connections(
        outage_bed, start_proxy, connect, keyspace):
    proxy = start_proxy(outage_bed, "--request-timeout", f"{REQUEST_TIMEOUT:g}s")
    session = connect(proxy.endpoint)
    writers = workload.Writers(session, keyspace, threads=WRITERS, literal_every=2, pause=0.01)
    handshakes = metric(proxy, "cqlmirror_client_handshakes_total")
    assert handshakes >= 1
    writers.start()
    node = outage_bed.target.host
    try:
        # The bed's nodes sync their commit log every 10 s and a node that does not stop within
        # its grace is killed: the schema must be on disk before the restart, or the restarted
        # node comes back without the keyspace.
        time.sleep(COMMITLOG_SYNC + 1)
        assert rows_on(outage_bed.target, keyspace), "no write reached the target before the restart"

        run = bed.testbed("--name", outage_bed.name, "stop-node", node)
        assert run.returncode == 0, run.stderr
        stopped = time.time()
        time.sleep(3)
        assert not bed.answers(outage_bed.target, timeout=0.5), "the target node is still up"

        # Started in a thread: the moment its CQL port answers again is when it is back.
        started = {}

        def start():
            run = bed.testbed("--name", outage_bed.name, "start-node", node, timeout=240)
            started["run"] = run

        starter = threading.Thread(target=start, daemon=True)
        starter.start()
        deadline = time.monotonic() + 240
        while not bed.answers(outage_bed.target, timeout=0.5):
            assert time.monotonic() < deadline, "the target node did not come back"
            time.sleep(0.1)
        back = time.time()
        time.sleep(BACK_WITHIN + 3)
        writers.finish()
    finally:
        writers.stop.set()
        starter_thread = locals().get("starter")
        if starter_thread is not None:
            starter_thread.join(240)
    assert started["run"].returncode == 0, started["run"].stderr

    errors = writers.errors()
    assert not errors, f"{len(errors)} of {len(writers.results)} writes failed: {errors[:3]}"

    # A prepared statement executed after the restart reaches the target.
    prepared_at = time.time()
    session.execute(writers.insert, (99, 0, prepared_at))

    target = rows_on(outage_bed.target, keyspace)
    source = rows_on(outage_bed.source, keyspace)
    written = {(r.writer, r.n): r.at for r in writers.results}
    assert set(source) == set(written) | {(99, 0)}, "the source holds every write"
    assert (99, 0) in target, "the prepared write after the restart is not on the target"

    # The first write after the outage that reached the target, and how long after the node
    # was back it was sent.
    after_outage = sorted(at for key, at in target.items() if at > stopped and key[0] != 99)
    assert after_outage, "no write after the restart reached the target"
    first = after_outage[0]
    delay = first - back
    print(f"target node stopped for {back - stopped:.1f}s; the first write to reach it again was "
          f"sent {delay:.2f}s after it was back")
    assert delay < BACK_WITHIN, f"the first write reached the target {delay:.1f}s after it was back"

    # Every write sent once the leg was back (a moment after the first that reached it, for
    # writes already read by the proxy then) is on the target, prepared and simple alike.
    settled = first + 0.5
    later = {key for key, at in written.items() if at > settled}
    assert later, "no write after the reconnection"
    missing = sorted(later - set(target))
    assert not missing, f"{len(missing)} of {len(later)} writes after the reconnection are not on the target: {missing[:10]}"
    assert any(n % 2 == 0 for _, n in later), "prepared writes after the reconnection"
    # Writes in the outage were missed (the proxy counted them), not delayed.
    missed = sorted(key for key, at in written.items() if stopped + 0.5 < at < back)
    assert missed and not (set(missed) & set(target)), "writes during the outage"

    # The same driver connections: no new client handshake; the reconnection was counted.
    assert metric(proxy, "cqlmirror_client_handshakes_total") == handshakes, \
        "the driver opened new connections"
    reconnected = metric(proxy, "cqlmirror_secondary_reconnects_total", cluster="target",
                         result="reconnected")
    assert reconnected >= 1, "no reconnection counted"
    failed = metric(proxy, "cqlmirror_secondary_reconnects_total", cluster="target",
                    result="failed")
    assert metric(proxy, "cqlmirror_missed_writes_total", cluster="target") >= len(missed)
    print(f"{len(written)} writes, {len(missed)} during the outage; reconnections: {reconnected:g} "
          f"(failed attempts {failed:g})")
