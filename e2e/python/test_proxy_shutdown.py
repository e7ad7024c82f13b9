"""SIGTERM: the proxy stops accepting, lets idle connections go at once, answers the requests
it already read, lets the target finish the writes it was sent, and exits."""

import threading
import time

from test_proxy_failures import Frozen

REQUEST_TIMEOUT = 3.0  # --request-timeout given to the proxy


def terminate(proxy):
    """SIGTERM, then waits for the exit (the fixture kills it after a grace period and fails
    the test); returns the exit status and how long it took."""
    started = time.monotonic()
    proxy.stop()
    return proxy.proc.returncode, time.monotonic() - started


def test_idle_connections_close_at_once(main_bed, start_proxy, connect, keyspace):
    """A driver with an idle pool: on SIGTERM every connection closes without waiting for the
    drain deadline, and the proxy says so."""
    proxy = start_proxy(main_bed)
    session = connect(proxy.endpoint)
    session.execute(
        f"CREATE KEYSPACE {keyspace} WITH replication = "
        "{'class': 'SimpleStrategy', 'replication_factor': 1}")
    session.execute(f"CREATE TABLE {keyspace}.kv (k int PRIMARY KEY, v text)")
    session.execute(f"INSERT INTO {keyspace}.kv (k, v) VALUES (1, 'before')")
    status, took = terminate(proxy)
    log = proxy.log_text()
    assert status == 0 and not proxy.needed_kill, f"exit status {status} after {took:.1f}s"
    assert "stopped: every connection closed" in log, log[-2000:]
    print(f"{proxy.name} exited {took:.2f}s after SIGTERM with an idle driver connected")


def test_requests_in_flight_are_answered(outage_bed, start_proxy, connect, keyspace):
    """SIGTERM while a write waits for a frozen target: the client still gets its answer, the
    connection closes, and the proxy exits once the target's part has timed out, within the
    drain deadline."""
    proxy = start_proxy(outage_bed, "--request-timeout", f"{REQUEST_TIMEOUT:g}s",
                        "--wait-timeout", "2s")
    session = connect(proxy.endpoint)
    session.execute(
        f"CREATE KEYSPACE {keyspace} WITH replication = "
        "{'class': 'SimpleStrategy', 'replication_factor': 1}")
    session.execute(f"CREATE TABLE {keyspace}.kv (k int PRIMARY KEY, v text)")
    outcome = {}

    def write():
        try:
            session.execute(f"INSERT INTO {keyspace}.kv (k, v) VALUES (1, 'in flight')")
            outcome["ok"] = True
        except Exception as e:  # noqa: BLE001
            outcome["error"] = repr(e)

    with Frozen(outage_bed):
        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        # The write reached the proxy and waits for the frozen target (--wait-timeout 2s).
        time.sleep(0.5)
        status, took = terminate(proxy)
        writer.join(10)
    assert outcome == {"ok": True}, outcome
    log = proxy.log_text()
    assert status == 0 and not proxy.needed_kill, f"exit status {status} after {took:.1f}s"
    assert "stopped: every connection closed" in log, log[-2000:]
    source = connect(outage_bed.source)
    rows = source.execute(f"SELECT v FROM {keyspace}.kv WHERE k = 1").all()
    assert [r.v for r in rows] == ["in flight"]
    print(f"{proxy.name}: the write in flight was answered; exit {took:.2f}s after SIGTERM")
