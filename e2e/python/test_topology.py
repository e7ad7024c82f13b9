"""Drivers only ever see proxies: real multi-node clusters (source 3 nodes in dc_source, target 2
in dc_target), four real drivers with their default load balancing and the proxies as their only
contact points. Each test runs a driver workload (`e2e/drivers/`: DDL with NetworkTopologyStrategy,
1,000 prepared writes over 200 partitions, batches, a paged read), watches the driver process's
TCP connections with `ss` while it runs, and reads both clusters directly afterwards: every row
must be on both, and the driver must have known and used no address but the proxies'.
"""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import bed
from proxy import free_port

REPO = Path(__file__).resolve().parents[2]
ROWS = 1000
DRIVERS = ["python", "java", "node", "go"]
DC_MAP = ("--dc-map", "dc_source=dc_target")


@pytest.fixture(scope="session")
def driver_commands():
    """Each driver's workload command (built by `scripts/drivers`, cached)."""
    run = subprocess.run([str(REPO / "scripts" / "drivers")], capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, f"scripts/drivers failed:\n{run.stderr[-3000:]}"
    commands = {"python": [sys.executable, str(REPO / "e2e" / "drivers" / "python" / "workload.py")]}
    for line in run.stdout.splitlines():
        name, *argv = line.split()
        commands[name] = argv
    return commands


def connections_of(pid):
    """The remote `address:port` of every TCP connection process `pid` has open."""
    out = subprocess.run(["ss", "-tnpH"], capture_output=True, text=True).stdout
    remotes = set()
    for line in out.splitlines():
        if f"pid={pid}," in line:
            fields = line.split()
            if len(fields) >= 5:
                # IPv4 addresses on IPv6 sockets (the JVM's) show as [::ffff:a.b.c.d]:port.
                remotes.add(fields[4].replace("[::ffff:", "").replace("]:", ":"))
    return remotes


def run_workload(command, contacts, keyspace, rows=ROWS, extra=(), during=None, timeout=300,
                 env=None):
    """Runs a driver workload against `contacts`; returns its JSON summary and every remote
    address its process connected to. `during(elapsed)` is called while it runs (for tests that
    stop something midway); `env` adds environment variables."""
    argv = [*command, ",".join(contacts), "dc_source", keyspace, str(rows), *extra]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    remotes = set()
    started = time.monotonic()
    while proc.poll() is None:
        remotes |= connections_of(proc.pid)
        if during:
            during(time.monotonic() - started)
        if time.monotonic() - started > timeout:
            proc.kill()
            pytest.fail(f"{argv[0]} workload still running after {timeout}s")
        time.sleep(0.05)
    out, err = proc.communicate()
    lines = [l for l in out.splitlines() if l.startswith("{")]
    assert lines, f"no summary from {' '.join(argv)} (exit {proc.returncode}):\n{out}\n{err[-3000:]}"
    return json.loads(lines[-1]), remotes


def rows_on(endpoint, keyspace):
    """Every row of the workload's table on one cluster, read at consistency ALL."""
    from cassandra import ConsistencyLevel
    from cassandra.query import SimpleStatement

    cluster = endpoint.cluster()
    try:
        session = cluster.connect()
        query = SimpleStatement(f"SELECT p, c, v FROM {keyspace}.kv", fetch_size=1000,
                                consistency_level=ConsistencyLevel.ALL)
        return {(r.p, r.c, r.v) for r in session.execute(query, timeout=60)}
    finally:
        cluster.shutdown()


def check(the_bed, keyspace, result, remotes, proxies, rows=ROWS):
    """The workload succeeded, the driver knew and used only `proxies`, and both clusters hold
    every row."""
    assert result["errors"] == [], result
    assert result["written"] == rows + 100 and result["read"] == rows + 100, result
    assert set(result["hosts"]) == set(proxies), f"the driver knew {result['hosts']}, not {proxies}"
    backend = {r for r in remotes if r.rsplit(":", 1)[0] in the_bed.node_hosts()}
    assert not backend, f"the driver connected to cluster nodes: {sorted(backend)}"
    assert remotes <= set(proxies), f"the driver connected to {sorted(remotes - set(proxies))}"
    source = rows_on(the_bed.source, keyspace)
    target = rows_on(the_bed.target, keyspace)
    assert len(source) == rows + 100, f"{len(source)} rows on the source"
    missing = source - target
    assert not missing, f"{len(missing)} rows missing on the target, e.g. {sorted(missing)[:5]}"
    assert source == target


@pytest.mark.parametrize("driver", DRIVERS)
def test_driver_sees_only_the_proxy(topo_bed, start_proxy, driver_commands, keyspace, driver):
    """One proxy, the only contact point: the driver learns it alone (not the five nodes),
    connects to it alone, and every row is on both clusters."""
    proxy = start_proxy(topo_bed, *DC_MAP)
    result, remotes = run_workload(driver_commands[driver], [proxy.address], keyspace)
    check(topo_bed, keyspace, result, remotes, [proxy.address])
    print(f"{driver}: {result['written']} rows, connections {sorted(remotes)}")


def start_instances(the_bed, start_proxy, instances, *extra):
    """One proxy per `host:port` of `instances`, each told the whole list and its place in it."""
    listing = ",".join(instances)
    proxies = []
    for i, instance in enumerate(instances):
        host, port = instance.rsplit(":", 1)
        proxies.append(start_proxy(the_bed, *DC_MAP, "--proxy-topology-addresses", listing,
                                   "--proxy-topology-index", str(i), *extra,
                                   host=host, port=int(port)))
    return proxies


def layouts():
    port = free_port("127.0.0.31")
    shared = [free_port("127.0.0.1"), free_port("127.0.0.1")]
    while shared[1] == shared[0]:
        shared[1] = free_port("127.0.0.1")
    return {
        "three-addresses": [f"127.0.0.{31 + i}:{port}" for i in range(3)],
        "one-address-two-ports": [f"127.0.0.1:{p}" for p in shared],
    }


@pytest.mark.parametrize("layout", ["three-addresses", "one-address-two-ports"])
@pytest.mark.parametrize("driver", ["python", "java"])
def test_several_proxies(topo_bed, start_proxy, driver_commands, keyspace, layout, driver):
    """Two or three proxy instances: the driver, given the first as its only contact point,
    sees exactly the instances and spreads its connections over all of them."""
    instances = layouts()[layout]
    start_instances(topo_bed, start_proxy, instances)
    result, remotes = run_workload(driver_commands[driver], instances[:1], keyspace)
    check(topo_bed, keyspace, result, remotes, instances)
    assert remotes == set(instances), f"connections to {sorted(remotes)}, not to every instance"


def test_stopped_proxy_instance(topo_bed, start_proxy, driver_commands, keyspace):
    """One of three proxy instances stops in the middle of the workload: the driver goes on
    with the others, without an error, and every row is on both clusters."""
    instances = layouts()["three-addresses"]
    proxies = start_instances(topo_bed, start_proxy, instances)
    stopped = []

    def stop_one(elapsed):
        if elapsed > 1.5 and not stopped:
            stopped.append(time.monotonic())
            threading.Thread(target=proxies[2].stop, daemon=True).start()

    result, remotes = run_workload(driver_commands["python"], instances[:1], keyspace, rows=3000,
                                   extra=("--pace", "0.05"), during=stop_one)
    assert stopped, "the workload ended before an instance could be stopped"
    check(topo_bed, keyspace, result, remotes, instances, rows=3000)


def test_ghost_mode(topo_bed, start_proxy, driver_commands, keyspace):
    """--ghostIps: each source node behind its own proxy address; drivers see the source's
    nodes under the proxy addresses only."""
    nodes = [n.rsplit(":", 1)[0] for n in topo_bed.source_nodes]
    port = free_port("127.0.0.41")
    ghosts = {node: f"127.0.0.{41 + i}" for i, node in enumerate(nodes)}
    ghost_map = json.dumps(ghosts)
    instances = [f"{g}:{port}" for g in ghosts.values()]
    for g in ghosts.values():
        start_proxy(topo_bed, *DC_MAP, "--ghostIps", ghost_map, host=g, port=port)
    for driver in ("python", "java"):
        result, remotes = run_workload(driver_commands[driver], instances[:1], f"{keyspace}_{driver}")
        check(topo_bed, f"{keyspace}_{driver}", result, remotes, instances)


def schema_agreed(endpoint, timeout=90):
    """Waits until every node of a cluster reports the same schema version (a node that was
    down pulls the schema it missed when it comes back)."""
    cluster = endpoint.cluster()
    try:
        session = cluster.connect()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            local = session.execute("SELECT schema_version FROM system.local").one().schema_version
            peers = {r.schema_version for r in session.execute("SELECT schema_version FROM system.peers")}
            if peers <= {local}:
                return
            time.sleep(0.5)
        pytest.fail(f"the nodes of {endpoint.address}'s cluster do not agree on the schema after {timeout}s")
    finally:
        cluster.shutdown()


def restart_midway(the_bed, node, events):
    """A `during` callback for run_workload: after 4 s, stops `node` and starts it again 3 s
    later (in a thread: the workload goes on meanwhile); `events` records the outcomes."""
    def restart(elapsed):
        if elapsed > 4 and not events:
            events.append("stopping")

            def cycle():
                run = bed.testbed("--name", the_bed.name, "stop-node", node)
                events.append(f"stopped: {run.returncode} {run.stderr.strip()}")
                time.sleep(3)
                run = bed.testbed("--name", the_bed.name, "start-node", node, timeout=240)
                events.append(f"started: {run.returncode} {run.stderr.strip()}")

            threading.Thread(target=cycle, daemon=True).start()

    return restart


def wait_restarted(events, timeout=240):
    deadline = time.monotonic() + timeout
    while not any(e.startswith("started") for e in events) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert any(e.startswith("stopped: 0") for e in events), events
    assert any(e.startswith("started: 0") for e in events), events


def test_source_node_restart(topo_bed, start_proxy, driver_commands, keyspace):
    """A source node stops in the middle of the workload (after the schema is created) and comes
    back: no client error, and the target holds every row."""
    proxy = start_proxy(topo_bed, *DC_MAP)
    node = topo_bed.source_nodes[1].rsplit(":", 1)[0]
    events = []
    result, remotes = run_workload(driver_commands["python"], [proxy.address], keyspace,
                                   rows=6000, extra=("--pace", "0.1"),
                                   during=restart_midway(topo_bed, node, events))
    wait_restarted(events)
    schema_agreed(topo_bed.source)
    check(topo_bed, keyspace, result, remotes, [proxy.address], rows=6000)


def test_target_node_restart(topo_bed, start_proxy, driver_commands, keyspace):
    """A target node stops in the middle of the workload and comes back: no client error (a
    failing secondary never reaches clients) and every row on the source. Writes sent to the
    stopped node before the proxy reconnected those client connections' target legs (to a live
    node, in the background) are missed writes: the target holds no row the source does not,
    and when rows are missing the proxy warned about the lost target connection."""
    proxy = start_proxy(topo_bed, *DC_MAP)
    node = topo_bed.target_nodes[1].rsplit(":", 1)[0]
    events = []
    rows = 6000
    result, remotes = run_workload(driver_commands["python"], [proxy.address], keyspace,
                                   rows=rows, extra=("--pace", "0.1"),
                                   during=restart_midway(topo_bed, node, events))
    wait_restarted(events)
    schema_agreed(topo_bed.target)
    assert result["errors"] == [], result
    assert result["written"] == rows + 100 and result["read"] == rows + 100, result
    assert set(result["hosts"]) == {proxy.address}, result["hosts"]
    assert remotes <= {proxy.address}, f"the driver connected to {sorted(remotes - {proxy.address})}"
    source = rows_on(topo_bed.source, keyspace)
    target = rows_on(topo_bed.target, keyspace)
    assert len(source) == rows + 100, f"{len(source)} rows on the source"
    assert target <= source, f"rows on the target that the source lacks: {sorted(target - source)[:5]}"
    missing = len(source - target)
    print(f"{missing} of {len(source)} rows missed the target while {node} restarted")
    if missing:
        assert "target cluster:" in proxy.log_text(), \
            f"{missing} rows missed the target and the proxy did not warn; log {proxy.log_path}"
