"""The target fails or needs other credentials than the client has: clients of the proxy do
not notice, and the source keeps every write."""

import os
import signal
import time

import bed
import workload

REQUEST_TIMEOUT = 3.0  # --request-timeout given to the proxy (generous: a loaded 2-core machine)
SLACK = 1.5  # allowed on top of it for the driver, the machine and the proxy's own work
WRITERS = 4


class Writers(workload.Writers):
    """Client threads writing through one session until stopped, timing every request."""

    def __init__(self, session, keyspace):
        super().__init__(session, keyspace, threads=WRITERS, literal_every=4, max_errors=3)

    def check(self, since, min_after):
        """No request failed, none was slower than the request timeout plus slack, and at least
        `min_after` requests started after `since` (the failure) went through."""
        results = self.results
        errors = self.errors()
        assert not errors, f"{len(errors)} of {len(results)} requests failed, first: {errors[:3]}"
        limit = REQUEST_TIMEOUT + SLACK
        slow = sorted((r for r in results if r.seconds > limit), key=lambda r: -r.seconds)
        assert not slow, (
            f"{len(slow)} of {len(results)} requests took longer than {limit}s (writer, n, started "
            f"seconds after the failure, seconds): "
            f"{[(r.writer, r.n, round(r.started - since, 2), round(r.seconds, 2)) for r in slow[:5]]}"
        )
        after = [r for r in results if r.started > since]
        assert len(after) >= min_after, f"only {len(after)} requests ran after the failure"
        print(f"{len(results)} requests, {len(after)} after the failure; slowest "
              f"{max(r.seconds for r in results):.3f}s, slowest after the failure "
              f"{max(r.seconds for r in after):.3f}s")

    def check_source(self, source_session, extra=()):
        """The source, read directly, holds every write."""
        query = f"SELECT writer, n FROM {self.keyspace}.writes"
        stored = {(r.writer, r.n) for r in source_session.execute(query)}
        written = {(r.writer, r.n) for r in self.results} | set(extra)
        missing = sorted(written - stored)
        assert not missing, f"{len(missing)} of {len(written)} writes are missing on the source: {missing[:10]}"
        assert stored == written


def count_on(endpoint, keyspace):
    cluster = endpoint.cluster()
    try:
        return cluster.connect().execute(f"SELECT COUNT(*) FROM {keyspace}.writes").one()[0]
    finally:
        cluster.shutdown()


class Frozen:
    """Freezes the running nodes of a bed's target (SIGSTOP: connections stay open, nothing
    answers) until the block ends, then lets them go on (SIGCONT), for the next test."""

    def __init__(self, the_bed):
        self.pids = bed.running_pids(the_bed.name, "target")
        assert self.pids, f"no running target node in bed '{the_bed.name}' to freeze"

    def __enter__(self):
        for pid in self.pids:
            os.kill(pid, signal.SIGSTOP)
        self.since = time.monotonic()
        return self

    def __exit__(self, *exc):
        for pid in self.pids:
            os.kill(pid, signal.SIGCONT)


def test_target_frozen(outage_bed, start_proxy, connect, keyspace):
    """The target stops answering in the middle of a workload: every request still succeeds
    within the request timeout, and the source holds every write."""
    proxy = start_proxy(outage_bed, "--request-timeout", f"{REQUEST_TIMEOUT:g}s")
    writers = Writers(connect(proxy.endpoint), keyspace)
    writers.start()
    time.sleep(2)
    assert count_on(outage_bed.target, keyspace) > 0, "no write reached the target before the freeze"
    with Frozen(outage_bed) as frozen:
        time.sleep(3 * REQUEST_TIMEOUT)
        writers.finish()
    writers.check(frozen.since, min_after=WRITERS)
    writers.check_source(connect(outage_bed.source))


def test_new_client_while_target_frozen(outage_bed, start_proxy, connect, keyspace):
    """With the proxy's default options, a client that connects while the target does not
    answer (the driver allows 5s per connection) connects, writes and reads."""
    proxy = start_proxy(outage_bed)
    setup = connect(proxy.endpoint)
    setup.execute(workload.KEYSPACE_DDL.format(ks=keyspace))
    setup.execute(f"CREATE TABLE {keyspace}.kv (k int PRIMARY KEY, v text)")
    with Frozen(outage_bed):
        started = time.monotonic()
        late = connect(proxy.endpoint, connect_timeout=5)  # the driver's default
        connected = time.monotonic() - started
        late.execute(f"INSERT INTO {keyspace}.kv (k, v) VALUES (1, 'while frozen')")
        rows = late.execute(f"SELECT v FROM {keyspace}.kv WHERE k = 1").all()
        print(f"new client connected after {connected:.2f}s, wrote and read after "
              f"{time.monotonic() - started:.2f}s")
    assert [r.v for r in rows] == ["while frozen"]


def test_target_outage(outage_bed, start_proxy, connect, keyspace):
    """The target is killed in the middle of a workload: every request still succeeds, none
    takes longer than the request timeout, and the source holds every write."""
    proxy = start_proxy(outage_bed, "--request-timeout", f"{REQUEST_TIMEOUT:g}s")
    writers = Writers(connect(proxy.endpoint), keyspace)
    writers.start()
    time.sleep(2)
    assert count_on(outage_bed.target, keyspace) > 0, "no write reached the target before the outage"

    run = bed.testbed("--name", outage_bed.name, "stop", "target", "--kill")
    assert run.returncode == 0, run.stderr
    killed = time.monotonic()
    time.sleep(3 * REQUEST_TIMEOUT)
    writers.finish()
    writers.check(killed, min_after=20)

    # A client that connects while the target is down is served too.
    started = time.monotonic()
    late = connect(proxy.endpoint)
    late.execute(f"INSERT INTO {keyspace}.writes (writer, n, at) VALUES (99, 0, 0)")
    late_rows = late.execute(f"SELECT n FROM {keyspace}.writes WHERE writer = 99").all()
    assert [r.n for r in late_rows] == [0]
    elapsed = time.monotonic() - started
    limit = REQUEST_TIMEOUT + SLACK
    assert elapsed < 2 * limit, f"a new client took {elapsed:.1f}s to connect, write and read"

    writers.check_source(connect(outage_bed.source), extra={(99, 0)})


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


def test_secrets_never_logged(auth_bed, start_proxy, connect, keyspace, tmp_path):
    """The password the proxy logs in to the target with, given in a file, appears nowhere in
    the proxy's output at debug level, through a workload whose writes reach both clusters."""
    source, target = auth_bed.source, auth_bed.target
    role, password = f"proxy_{keyspace}"[:40], f"Pw-{keyspace}-{os.getpid()}"
    connect(target).execute(
        f"CREATE ROLE {role} WITH PASSWORD = '{password}' AND LOGIN = true AND SUPERUSER = true")
    secret_file = tmp_path / "target-password"
    secret_file.write_text(password + "\n")
    proxy = start_proxy(auth_bed, "--debug", "true", "--target-username", role,
                        "--target-password-file", str(secret_file))
    session = connect(proxy.endpoint)
    workload.small_workload(session, keyspace)
    src, tgt = connect(source), connect(target)
    workload.assert_same_data(src, tgt, keyspace)
    log = proxy.log_text()
    assert f"as {role}, password ***" in log, "the start-up line shows no masked password"
    assert "DEBUG" in log, "the proxy did not log at debug level"
    assert password not in log
