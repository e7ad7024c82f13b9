import hashlib
import itertools
import re
import time

import pytest

import bed
import proxy as proxies

# Beds besides the main one, with their `scripts/testbed up` options. `scripts/test` starts the
# same beds, in parallel with the main one, before the tests run; a test that finds one not
# running (or with a side stopped by an earlier test) starts it afresh.
EXTRA_BEDS = {
    "auth": ("--subnet", "1", "--auth", "target"),
    "outage": ("--subnet", "2"),
    # Multi-node clusters for the topology tests; a larger heap for their sustained writes.
    "topo": ("--subnet", "3", "--source-nodes", "3", "--target-nodes", "2", "--heap", "768m"),
    # Both clusters speak TLS only (the bed's CA and node certificate, in <bed>/tls/); the
    # source requires a login, the target none but a client certificate (mutual TLS).
    "tls": ("--subnet", "4", "--tls", "both", "--auth", "source", "--tls-client-certs", "target"),
}


def pytest_generate_tests(metafunc):
    """Every test that uses `proxy_binary` runs once per binary under test."""
    if "proxy_binary" in metafunc.fixturenames:
        binaries = proxies.binaries()
        metafunc.parametrize("proxy_binary", binaries, ids=[b.name for b in binaries])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test shows where its proxies logged, and the end of each log."""
    report = yield
    if report.failed:
        for p in getattr(item, "_proxies", []):
            report.sections.append((f"{p.name} log {p.log_path} (last lines)", p.tail(60)))
    return report


@pytest.fixture(scope="session")
def source():
    return bed.side("source")


@pytest.fixture(scope="session")
def target():
    return bed.side("target")


@pytest.fixture(scope="session")
def main_bed():
    return bed.main_bed()


@pytest.fixture(scope="session")
def auth_bed():
    return bed.named_bed("auth", EXTRA_BEDS["auth"])


@pytest.fixture
def topo_bed():
    """Per test: a test that stops a node leaves the bed to be checked (and restarted if needed)."""
    return bed.named_bed("topo", EXTRA_BEDS["topo"])


@pytest.fixture(scope="session")
def tls_bed():
    return bed.named_bed("tls", EXTRA_BEDS["tls"])


@pytest.fixture
def outage_bed():
    """Per test: a test that stops its target leaves the bed to be started afresh."""
    return bed.named_bed("outage", EXTRA_BEDS["outage"])


@pytest.fixture
def connect():
    """Opens driver sessions and shuts their clusters down after the test."""
    clusters = []

    def open_session(endpoint, **kwargs):
        cluster = endpoint.cluster(**kwargs)
        clusters.append(cluster)
        return cluster.connect()

    yield open_session
    for cluster in clusters:
        cluster.shutdown()


@pytest.fixture
def keyspace(request):
    """A keyspace name of this test alone (readable, unique across runs on a running bed)."""
    base = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")[:30]
    digest = hashlib.sha1(f"{request.node.nodeid}{time.time_ns()}".encode()).hexdigest()[:8]
    return f"{base}_{digest}"


@pytest.fixture
def start_proxy(request, proxy_binary):
    """Starts `proxy_binary` in front of a bed: `start_proxy(bed, *options)`.

    Every proxy started is stopped after the test; a proxy that died on its own, panicked, or
    did not exit on SIGTERM fails it.
    """
    started = []
    request.node._proxies = started
    counter = itertools.count(1)

    def start(the_bed, *args, host=None, port=None):
        name = f"{request.node.name}-{next(counter)}"
        p = proxies.Proxy(proxy_binary, the_bed.source, the_bed.target, args, log_name=name,
                          host=host, port=port)
        started.append(p)
        print(f"{p.name} log: {p.log_path}")
        return p.start()

    yield start
    problems = []
    for p in started:
        p.stop()
        if p.exit_status is not None:
            problems.append(
                f"{p.name} exited on its own with status {p.exit_status} during the test; "
                f"log {p.log_path}"
            )
        if p.needed_kill:
            problems.append(
                f"{p.name} did not exit within {proxies.STOP_GRACE:g}s of SIGTERM (its clients "
                f"were closed already) and was killed; log {p.log_path}"
            )
        panics = p.panics()
        if panics:
            problems.append(f"{p.name} panicked: {panics[:3]}; log {p.log_path}")
    assert not problems, "\n".join(problems)
