"""The target fails or needs other credentials than the client has: clients of the proxy do
not notice, and the source keeps every write."""

import threading
import time

import bed
import workload

REQUEST_TIMEOUT = 2.0  # --request-timeout given to the proxy
SLACK = 1.5  # allowed on top of it for the driver, the machine and the proxy's own work
WRITERS = 4


def test_target_outage(outage_bed, start_proxy, connect, keyspace):
    """The target is killed in the middle of a workload: every request still succeeds, none
    takes longer than the request timeout, and the source holds every write."""
    proxy = start_proxy(outage_bed, "--request-timeout", f"{REQUEST_TIMEOUT:g}s")
    session = connect(proxy.endpoint)
    session.execute(workload.KEYSPACE_DDL.format(ks=keyspace))
    session.execute(f"USE {keyspace}")
    session.execute("CREATE TABLE writes (writer int, n int, at double, PRIMARY KEY (writer, n))")
    insert = session.prepare("INSERT INTO writes (writer, n, at) VALUES (?, ?, ?)")

    results = []  # (writer, n, started, seconds, error)
    lock = threading.Lock()
    stop = threading.Event()

    def write(writer, n):
        started = time.monotonic()
        error = None
        try:
            if n % 4 == 3:
                session.execute(f"INSERT INTO writes (writer, n, at) VALUES ({writer}, {n}, {started})")
            else:
                session.execute(insert, (writer, n, started))
        except Exception as e:  # noqa: BLE001 - every failure is a finding
            error = repr(e)
        with lock:
            results.append((writer, n, started, time.monotonic() - started, error))
        return error

    def writer_loop(writer):
        errors = 0
        for n in range(100_000):
            if stop.is_set() or errors >= 3:
                return
            errors += write(writer, n) is not None

    threads = [threading.Thread(target=writer_loop, args=(w,), daemon=True) for w in range(WRITERS)]
    for t in threads:
        t.start()
    time.sleep(2)

    # Before the outage the proxy does write to the target.
    target_cluster = outage_bed.target.cluster()
    try:
        on_target = target_cluster.connect().execute(
            f"SELECT COUNT(*) FROM {keyspace}.writes").one()[0]
    finally:
        target_cluster.shutdown()
    assert on_target > 0, "no write reached the target before the outage"

    run = bed.testbed("--name", outage_bed.name, "stop", "target", "--kill")
    assert run.returncode == 0, run.stderr
    killed = time.monotonic()
    time.sleep(3 * REQUEST_TIMEOUT)
    stop.set()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "writers still blocked 60s after the workload"

    errors = [r for r in results if r[4]]
    assert not errors, f"{len(errors)} of {len(results)} requests failed, first: {errors[:3]}"
    limit = REQUEST_TIMEOUT + SLACK
    slow = sorted((r for r in results if r[3] > limit), key=lambda r: -r[3])
    assert not slow, (
        f"{len(slow)} requests took longer than {limit}s (writer, n, started after the kill, "
        f"seconds): {[(w, n, round(s - killed, 2), round(d, 2)) for w, n, s, d, _ in slow[:5]]}"
    )
    after = [r for r in results if r[2] > killed]
    assert len(after) >= 20, f"only {len(after)} requests ran after the target was killed"

    # A client that connects while the target is down is served too.
    started = time.monotonic()
    late = connect(proxy.endpoint)
    late.execute(f"INSERT INTO {keyspace}.writes (writer, n, at) VALUES (99, 0, 0)")
    late_rows = late.execute(f"SELECT n FROM {keyspace}.writes WHERE writer = 99").all()
    assert [r.n for r in late_rows] == [0]
    elapsed = time.monotonic() - started
    assert elapsed < 2 * limit, f"a new client took {elapsed:.1f}s to connect, write and read"

    # The source, read directly, holds every write.
    src = connect(outage_bed.source)
    stored = {(r.writer, r.n) for r in src.execute(f"SELECT writer, n FROM {keyspace}.writes")}
    written = {(w, n) for w, n, _, _, _ in results} | {(99, 0)}
    missing = sorted(written - stored)
    assert not missing, f"{len(missing)} of {len(written)} writes are missing on the source: {missing[:10]}"
    assert stored == written


def test_target_credentials(auth_bed, start_proxy, connect, keyspace):
    """Only the target asks for a login: the client connects without credentials, the proxy
    logs in to the target with its own, and the writes land on both clusters."""
    source, target = auth_bed.source, auth_bed.target
    assert target.username and not source.username, "the auth bed must have auth on the target only"

    # The target really refuses a client without credentials.
    anonymous = bed.Endpoint(target.host, target.port, target.dc)
    cluster = anonymous.cluster()
    try:
        cluster.connect()
        refused = None
    except Exception as e:  # noqa: BLE001
        refused = e
    finally:
        cluster.shutdown()
    assert refused is not None and "authentication" in str(refused).lower(), refused

    proxy = start_proxy(auth_bed, "--target-username", target.username,
                        "--target-password", target.password)
    session = connect(proxy.endpoint)
    workload.small_workload(session, keyspace)

    src, tgt = connect(source), connect(target)
    workload.assert_same_data(src, tgt, keyspace)
    workload.assert_same_writetimes(src, tgt, keyspace, {"kv": ("k", "v")})
