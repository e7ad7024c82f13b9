"""Operating a migration: metrics scraped by a real Prometheus server, health checks, and the
admin API (and its command-line client) steering a proxy while a workload runs."""

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

import bed
from proxy import free_port
from test_proxy_failures import REQUEST_TIMEOUT, Writers


def get(url, token=None, data=None):
    """(status, body) of one HTTP call."""
    request = urllib.request.Request(url, data=data.encode() if data is not None else None)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_until(check, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"{what} not seen within {timeout:g}s (last: {last!r})")


class Prometheus:
    """A real Prometheus server (Debian's package) scraping one proxy every second."""

    def __init__(self, target_url):
        binary = shutil.which("prometheus")
        assert binary, "prometheus is not installed: run scripts/prerequisites"
        self.dir = Path(tempfile.mkdtemp(prefix="cqlmirror-prometheus-"))
        host_port = target_url.removeprefix("http://")
        (self.dir / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: cqlmirror\n"
            f"    static_configs:\n      - targets: ['{host_port}']\n")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(self.dir / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={self.dir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_until(lambda: self.ready(), "Prometheus ready", timeout=60)

    def ready(self):
        try:
            return get(f"{self.url}/-/ready")[0] == 200
        except OSError:
            return False

    def query(self, promql):
        """The value of an instant query (the sum of its series), or None without a result."""
        status, body = get(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        assert status == 200, body
        result = json.loads(body)["data"]["result"]
        if not result:
            return None
        return sum(float(series["value"][1]) for series in result)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def prometheus():
    started = []

    def start(target_url):
        p = Prometheus(target_url)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


def test_prometheus_sees_requests_and_the_target_failing(outage_bed, start_proxy, connect,
                                                         keyspace, prometheus):
    """A real Prometheus server scrapes the proxy while writers run: it sees the request rate
    and both clusters answering; then the target is killed, and it sees the target's failures
    and the writes it missed, while readiness turns to 503 naming the target. No client
    request fails."""
    proxy = start_proxy(outage_bed, "--request-timeout", f"{REQUEST_TIMEOUT:g}s")
    prom = prometheus(proxy.ops_url)
    writers = Writers(connect(proxy.endpoint), keyspace)
    writers.start()
    wait_until(lambda: (prom.query('sum(rate(cqlmirror_requests_total{kind="write"}[5s]))') or 0) > 0,
               "a write rate in Prometheus")
    wait_until(lambda: prom.query(
        'sum(cqlmirror_cluster_requests_total{cluster="target",kind="write",outcome="ok"})'),
        "the target's answers in Prometheus")
    assert get(f"{proxy.ops_url}/health/readiness")[0] == 200
    assert get(f"{proxy.ops_url}/health/liveness")[0] == 200

    run = bed.testbed("--name", outage_bed.name, "stop", "target", "--kill")
    assert run.returncode == 0, run.stderr
    killed = time.monotonic()
    missed = wait_until(lambda: prom.query('sum(cqlmirror_missed_writes_total{cluster="target"})'),
                        "missed writes of the target in Prometheus", timeout=40)
    failures = wait_until(lambda: prom.query('sum(cqlmirror_cluster_failures_total{cluster="target"})'),
                          "target failures in Prometheus", timeout=40)
    status, body = wait_until(
        lambda: (lambda r: r if r[0] == 503 else None)(get(f"{proxy.ops_url}/health/readiness")),
        "readiness 503", timeout=40)
    readiness = json.loads(body)
    assert readiness["ready"] is False and readiness["clusters"]["target"]["state"] == "unreachable"
    assert "target cluster (secondary)" in readiness["reasons"][0], readiness
    by_table = wait_until(lambda: prom.query(
        f'cqlmirror_missed_writes_by_table_total{{cluster="target",keyspace="{keyspace}",'
        'table="writes"}'), "missed writes of the workload's table in Prometheus", timeout=40)
    print(f"Prometheus saw {missed:.0f} missed writes ({by_table:.0f} of {keyspace}.writes) and "
          f"{failures:.0f} target failures")
    writers.finish()
    writers.check(killed, min_after=10)
    assert prom.query("cqlmirror_ready") == 0


def test_readiness_follows_the_source(outage_bed, start_proxy):
    """Readiness needs the primary: with the source killed it is 503 and says why, and the
    ready gauge drops; --ready-without-secondary does not change that (the source is primary)."""
    proxy = start_proxy(outage_bed, "--ready-without-secondary")
    wait_until(lambda: get(f"{proxy.ops_url}/health/readiness")[0] == 200, "readiness 200")
    run = bed.testbed("--name", outage_bed.name, "stop", "source", "--kill")
    assert run.returncode == 0, run.stderr
    status, body = wait_until(
        lambda: (lambda r: r if r[0] == 503 else None)(get(f"{proxy.ops_url}/health/readiness")),
        "readiness 503 with the source down", timeout=40)
    readiness = json.loads(body)
    assert "source cluster (primary)" in " ".join(readiness["reasons"]), readiness
    assert get(f"{proxy.ops_url}/health/liveness")[0] == 200
    metrics = get(f"{proxy.ops_url}/metrics")[1]
    assert "cqlmirror_ready 0" in metrics
    assert 'cqlmirror_cluster_reachable{cluster="source"} 0' in metrics


def rows(endpoint, keyspace):
    cluster = endpoint.cluster()
    try:
        return {(r.writer, r.n) for r in cluster.connect().execute(
            f"SELECT writer, n FROM {keyspace}.writes", timeout=60)}
    finally:
        cluster.shutdown()


def test_primary_switched_through_the_admin_cli(main_bed, start_proxy, proxy_binary, connect,
                                                keyspace):
    """`BIN admin set-primary target` in the middle of a workload, then back to the source:
    no client request fails, the status and the gauges follow, and both clusters hold the
    same rows afterwards."""
    proxy = start_proxy(main_bed)
    admin = [str(proxy_binary), "admin", "--url", proxy.ops_url]
    writers = Writers(connect(proxy.endpoint), keyspace)
    writers.start()
    time.sleep(2)
    switched = time.monotonic()
    for cluster in ("target", "source", "target"):
        run = subprocess.run([*admin, "set-primary", cluster], capture_output=True, text=True,
                             timeout=30)
        assert run.returncode == 0, run.stderr + run.stdout
        assert json.loads(run.stdout)["primary"] == cluster
        status = json.loads(subprocess.run([*admin, "status"], capture_output=True, text=True,
                                           timeout=30).stdout)
        assert status["primary"] == cluster
        metrics = get(f"{proxy.ops_url}/metrics")[1]
        assert f'cqlmirror_primary{{cluster="{cluster}"}} 1' in metrics
        time.sleep(1.5)
    run = subprocess.run([*admin, "set-wait", "primary"], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0 and json.loads(run.stdout)["wait"] == "primary", run.stdout
    time.sleep(1)
    writers.finish()
    writers.check(switched, min_after=20)
    assert "the target cluster is now primary" in proxy.log_text()
    on_source, on_target = rows(main_bed.source, keyspace), rows(main_bed.target, keyspace)
    written = {(r.writer, r.n) for r in writers.results}
    assert on_source == written, f"{len(written - on_source)} writes missing on the source"
    assert on_target == written, f"{len(written - on_target)} writes missing on the target"


def test_admin_token_and_masked_configuration(main_bed, start_proxy, proxy_binary, tmp_path):
    """With --admin-token-file the admin API refuses calls without the token (metrics and
    health stay open); /admin/config shows every option with its source, secrets masked."""
    token = "admin-token-for-the-test-0123456789"
    secret = "a-source-password-never-shown-42"
    (tmp_path / "token").write_text(token + "\n")
    proxy = start_proxy(main_bed, "--admin-token-file", str(tmp_path / "token"),
                        "--source-username", "app", "--source-password", secret,
                        "--wait-timeout", "750ms")
    status, body = get(f"{proxy.ops_url}/admin/status")
    assert status == 401 and "--admin-token" in body, body
    assert get(f"{proxy.ops_url}/admin/primary", data="target")[0] == 401
    assert get(f"{proxy.ops_url}/health/liveness")[0] == 200
    assert get(f"{proxy.ops_url}/metrics")[0] == 200
    status, body = get(f"{proxy.ops_url}/admin/config", token=token)
    assert status == 200, body
    config = json.loads(body)
    assert config["source-password"] == {"value": "***", "source": "command line"}
    assert config["wait-timeout"] == {"value": "750ms", "source": "command line"}
    assert config["request-timeout"]["source"] == "default"
    assert secret not in body and token not in body
    run = subprocess.run([str(proxy_binary), "admin", "--url", proxy.ops_url, "status"],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 1 and "--admin-token" in run.stdout, run.stdout + run.stderr
    run = subprocess.run([str(proxy_binary), "admin", "--url", proxy.ops_url,
                          "--token-file", str(tmp_path / "token"), "set-primary", "target"],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stdout + run.stderr
    # The log's first line is the test's own record of the command line, not the proxy's.
    log = proxy.log_text().split("\n", 1)[1]
    assert secret not in log and token not in log


def test_config_file(main_bed, start_proxy, proxy_binary, tmp_path):
    """--config cqlmirror.toml: its options apply below the command line and the environment;
    a typo is refused at start-up naming the key; SIGHUP applies a new wait policy, logs the
    rest as needing a restart, and a broken file changes nothing."""
    config = tmp_path / "cqlmirror.toml"
    config.write_text(f'source = "{main_bed.source.address}"\ntarget = "{main_bed.target.address}"\n'
                      'wait-timout = "800ms"\n')
    run = subprocess.run([str(proxy_binary), "--config", str(config), "--metrics-port", "0"],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 2, run.stderr
    assert "unknown key 'wait-timout' (did you mean 'wait-timeout'?)" in run.stderr, run.stderr

    config.write_text('wait = true\nwait-timeout = "800ms"\nrequest-timeout = "9s"\n'
                      'schema-agreement-timeout = "4s"\n')
    proxy = start_proxy(main_bed, "--config", str(config), "--schema-agreement-timeout", "3s")
    options = json.loads(get(f"{proxy.ops_url}/admin/config")[1])
    assert options["wait-timeout"] == {"value": "800ms", "source": "config file"}
    assert options["schema-agreement-timeout"] == {"value": "3s", "source": "command line"}
    assert "secondary at most 800ms" in proxy.log_text()

    config.write_text('wait = false\nwait-timeout = "800ms"\nrequest-timeout = "5s"\n'
                      'schema-agreement-timeout = "4s"\nprimary = "target"\nread-mode = "shadow"\n'
                      'shadow-sample = 0.5\n')
    proxy.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "wait true -> false: applied to new requests" in proxy.log_text(),
               "the wait policy applied from the file")
    status = json.loads(get(f"{proxy.ops_url}/admin/status")[1])
    assert (status["wait"], status["primary"], status["read_mode"]) == ("primary", "target", "shadow")
    assert status["shadow"]["sample"] == 0.5
    assert "read-mode (not set) -> shadow: applied to new requests" in proxy.log_text()
    assert "request-timeout changed (9s -> 5s): takes effect after a restart" in proxy.log_text()

    config.write_text("wait = true\nrequest-timout = 1\n")
    proxy.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "nothing changed" in proxy.log_text(), "the broken file refused")
    assert json.loads(get(f"{proxy.ops_url}/admin/status")[1])["wait"] == "primary"
    assert proxy.alive()

    # The environment is above the file.
    config.write_text('request-timeout = "9s"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("CQLMIRROR_")}
    env["CQLMIRROR_REQUEST_TIMEOUT"] = "7s"
    log_path = tmp_path / "env-proxy.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(proxy_binary), main_bed.source.address, main_bed.target.address,
                                 "--listen-address", "127.0.0.1", "--proxy-port", str(free_port()),
                                 "--metrics-port", "0", "--config", str(config)],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        url = wait_until(lambda: (lambda m: m and m.group(1))(
            re.search(r"metrics on (http://[^ ]+)/metrics", log_path.read_text())),
            "the proxy's endpoint")
        options = json.loads(get(f"{url}/admin/config")[1])
        assert options["request-timeout"] == {"value": "7s", "source": "environment"}
    finally:
        proc.terminate()
        proc.wait(20)


def test_json_logs(main_bed, start_proxy, connect):
    """--log-format json: every line the proxy writes is one JSON object with its time, level
    and message; the lines of a client connection carry its id as a field."""
    proxy = start_proxy(main_bed, "--log-format", "json", "--debug")
    session = connect(proxy.endpoint)
    session.execute("SELECT release_version FROM system.local")
    lines = proxy.log_text().splitlines()[1:]  # the first is the test's record of the command
    records = [json.loads(line) for line in lines if line.strip()]
    assert records and all({"time", "level", "message"} <= r.keys() for r in records)
    assert any(isinstance(r.get("connection"), int) and r["message"].startswith("connection #")
               for r in records), records[:5]
    assert any("metrics on http://" in r["message"] for r in records)


def test_dashboard_queries(main_bed, start_proxy, connect, keyspace, prometheus):
    """The Grafana dashboard in deploy/ queries series the proxy exports, in PromQL a real
    Prometheus accepts: every query runs, and the request-rate panel shows the workload."""
    dashboard = json.loads((bed.REPO / "deploy" / "grafana" / "cqlmirror-dashboard.json").read_text())
    proxy = start_proxy(main_bed)
    prom = prometheus(proxy.ops_url)
    writers = Writers(connect(proxy.endpoint), keyspace)
    writers.start()
    wait_until(lambda: (prom.query('sum(rate(cqlmirror_requests_total{kind="write"}[1m]))') or 0) > 0,
               "a write rate in Prometheus")
    writers.finish()
    exported = get(f"{proxy.ops_url}/metrics")[1]
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(queries) >= 10
    for expr in queries:
        for name in re.findall(r"\b((?:cqlmirror|cassandraProxy)_[A-Za-z_]+)", expr):
            # Errors by code and missed writes by table have no series before the first one
            # (codes and tables are not known in advance); every other family is there from
            # the start.
            if name not in ("cqlmirror_cluster_errors_total",
                            "cqlmirror_missed_writes_by_table_total"):
                assert name in exported, f"the dashboard queries {name}, which the proxy does not export"
        promql = expr.replace("$instance", ".*")
        status, body = get(f"{prom.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        assert status == 200 and json.loads(body)["status"] == "success", f"{expr}: {body}"
    rate = prom.query(dashboard["panels"][0]["targets"][0]["expr"].replace("$instance", ".*"))
    assert rate and rate > 0


def test_connection_gauges(main_bed, start_proxy):
    """The connection gauges follow a driver: its connections, and theirs to each cluster,
    while it is connected; none once it shut down."""
    proxy = start_proxy(main_bed)

    def gauges():
        text = get(f"{proxy.ops_url}/metrics")[1]
        series = ("cqlmirror_client_connections", 'cqlmirror_cluster_connections{cluster="source"}',
                  'cqlmirror_cluster_connections{cluster="target"}')
        return [float(re.search(rf"^{re.escape(s)} (\S+)$", text, re.M).group(1)) for s in series]

    cluster = proxy.endpoint.cluster()
    session = cluster.connect()
    session.execute("SELECT release_version FROM system.local")
    clients, source, target = gauges()
    assert clients >= 1 and source >= 1 and target >= 1, (clients, source, target)
    cluster.shutdown()
    wait_until(lambda: gauges() == [0, 0, 0], "every connection gauge back at 0")
