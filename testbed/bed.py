#!/usr/bin/env python3
"""The cqlmirror test bed: real Apache Cassandra 5.0 clusters on loopback.

    testbed [--name BED] up [--subnet N] [--source-nodes N] [--target-nodes N] [--auth SIDE]
                            [--tls SIDE] [--tls-client-certs SIDE] [--owner-pid PID]
    testbed [--name BED] down          # or: testbed down --all
    testbed [--name BED] stop SIDE     # stop one cluster (e.g. to test an outage)
    testbed [--name BED] stop-node ADDRESS / start-node ADDRESS   # one node down, then back
    testbed [--name BED] status
    testbed [--name BED] env           # shell exports of the clusters' addresses for tests
    testbed classpath                  # fetch and cache the Cassandra classpath only

The source cluster listens on 127.0.N.1 (more nodes on 127.0.N.3, .5), the target on 127.0.N.2
(more nodes on .4, .6), all on port 9042, where N is the bed's subnet (default 0). Several beds
with different names and subnets can run side by side. Each cluster has its own name,
data-center name, storage and logs under the bed's state directory
(default: <repo>/target/testbed/<name>).
Standard library only, so that it runs before any client tooling is installed.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cqlprobe  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
BEDS_DIR = Path(os.environ.get("CQLMIRROR_BED_DIR", REPO / "target" / "testbed")).resolve()
STATE_DIR = BEDS_DIR / "main"  # the selected bed's directory; set by --name in main()
CACHE_DIR = Path(os.environ.get("CQLMIRROR_CACHE", Path.home() / ".cache" / "cqlmirror")).resolve()
CASSANDRA_VERSIONS = ("5.0.8", "5.0.6")
NATIVE_PORT = 9042
STORAGE_PORT = 7000
SUPERUSER = ("cassandra", "cassandra")
TLS_PASSWORD = "cqlmirror"
MAX_NODES = 3
SIDES = ("source", "target")

CLUSTERS = {
    # side: (cluster name, data center, first loopback octet of each node)
    "source": ("cqlmirror-source", "dc_source", (1, 3, 5)),
    "target": ("cqlmirror-target", "dc_target", (2, 4, 6)),
    # the third octet of every address is the bed's subnet
}

# Module flags Cassandra 5.0 needs on Java 17 (its conf/jvm17-server.options), plus a small heap.
JVM_FLAGS = """
-ea
-Xss256k
-XX:+UseG1GC
-XX:+ExitOnOutOfMemoryError
-XX:+PerfDisableSharedMem
-Djava.net.preferIPv4Stack=true
-Djdk.attach.allowAttachSelf=true
-Dio.netty.tryReflectionSetAccessible=true
-Dio.netty.allocator.useCacheForAllThreads=true
-Dio.netty.allocator.maxOrder=11
--add-exports java.base/jdk.internal.misc=ALL-UNNAMED
--add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
--add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED
--add-exports java.rmi/sun.rmi.server=ALL-UNNAMED
--add-exports java.sql/java.sql=ALL-UNNAMED
--add-exports java.base/java.lang.ref=ALL-UNNAMED
--add-exports jdk.unsupported/sun.misc=ALL-UNNAMED
--add-exports jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED
--add-exports jdk.attach/sun.tools.attach=ALL-UNNAMED
--add-opens java.base/java.lang.module=ALL-UNNAMED
--add-opens java.base/jdk.internal.loader=ALL-UNNAMED
--add-opens java.base/jdk.internal.ref=ALL-UNNAMED
--add-opens java.base/jdk.internal.reflect=ALL-UNNAMED
--add-opens java.base/jdk.internal.math=ALL-UNNAMED
--add-opens java.base/jdk.internal.module=ALL-UNNAMED
--add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED
--add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
--add-opens java.base/sun.nio.ch=ALL-UNNAMED
--add-opens java.base/java.io=ALL-UNNAMED
--add-opens java.base/java.nio=ALL-UNNAMED
--add-opens java.base/java.lang.reflect=ALL-UNNAMED
--add-opens jdk.compiler/com.sun.tools.javac=ALL-UNNAMED
--add-opens java.base/java.lang=ALL-UNNAMED
--add-opens java.base/java.util=ALL-UNNAMED
--add-opens java.base/java.util.concurrent=ALL-UNNAMED
--add-opens java.base/java.util.concurrent.atomic=ALL-UNNAMED
"""

# Start-up shortcuts that are safe for throw-away clusters.
FAST_START = [
    "-Dcassandra-foreground=yes",
    "-Dcassandra.skip_wait_for_gossip_to_settle=0",
    "-Dcassandra.ring_delay_ms=100",
    "-Dcassandra.superuser_setup_delay_ms=0",
    "-Dcassandra.unsafesystem=true",
    "-Dcassandra.consistent.rangemovement=false",
]

LOGBACK = """<configuration scan="false">
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <logger name="org.apache.cassandra" level="INFO"/>
  <logger name="com.datastax" level="WARN"/>
  <root level="INFO"><appender-ref ref="STDOUT"/></root>
</configuration>
"""


def log(msg):
    print(f"testbed: {msg}", file=sys.stderr, flush=True)


def fail(msg):
    log(msg)
    sys.exit(1)


# --------------------------------------------------------------------------------------------
# Java and the Cassandra classpath


def java17():
    """The `java` of a JDK 17: Cassandra 5.0 runs on 11 and 17 only, newer JDKs fail."""
    candidates = []
    if os.environ.get("CQLMIRROR_JAVA_HOME"):
        candidates.append(Path(os.environ["CQLMIRROR_JAVA_HOME"]))
    candidates += sorted(Path("/usr/lib/jvm").glob("*17*"))
    for home in candidates:
        java = home / "bin" / "java"
        if java.exists():
            out = subprocess.run([str(java), "-version"], capture_output=True, text=True).stderr
            if 'version "17' in out:
                return str(java)
    fail("no JDK 17 found under /usr/lib/jvm; install openjdk-17-jdk-headless or set CQLMIRROR_JAVA_HOME")


def classpath():
    """The folder of cassandra-all 5.0.x and its runtime dependencies, fetched once and cached."""
    for version in CASSANDRA_VERSIONS:
        lib = CACHE_DIR / f"cassandra-{version}" / "lib"
        if (lib / ".complete").exists():
            return version, lib
    errors = []
    for version in CASSANDRA_VERSIONS:
        lib = CACHE_DIR / f"cassandra-{version}" / "lib"
        pom = lib.parent / "pom.xml"
        lib.parent.mkdir(parents=True, exist_ok=True)
        pom.write_text(
            f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.cqlmirror</groupId>
  <artifactId>testbed-classpath</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.cassandra</groupId>
      <artifactId>cassandra-all</artifactId>
      <version>{version}</version>
    </dependency>
  </dependencies>
</project>
"""
        )
        log(f"fetching cassandra-all {version} and its dependencies from Maven Central (once)")
        started = time.monotonic()
        if lib.exists():
            shutil.rmtree(lib)
        cmd = [
            "mvn", "-B", "-q", "-f", str(pom),
            "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies",
            "-DincludeScope=runtime", f"-DoutputDirectory={lib}",
        ]
        run = subprocess.run(cmd, capture_output=True, text=True)
        jar = lib / f"cassandra-all-{version}.jar"
        if jar.exists() and (lib / "jamm-0.4.0.jar").exists():
            (lib / ".complete").write_text(version + "\n")
            log(f"classpath of Cassandra {version}: {len(list(lib.glob('*.jar')))} jars in "
                f"{time.monotonic() - started:.1f}s, cached in {lib}")
            return version, lib
        errors.append(f"cassandra-all {version}: mvn exited {run.returncode}: "
                      f"{(run.stdout + run.stderr).strip()[-2000:]}")
    fail("cannot fetch the Cassandra classpath from Maven Central:\n" + "\n".join(errors))


# --------------------------------------------------------------------------------------------
# Cluster layout and configuration


def node_addresses(side, count, subnet):
    return [f"127.0.{subnet}.{octet}" for octet in CLUSTERS[side][2][:count]]


def tokens(count):
    """Evenly spaced Murmur3 tokens, one per node."""
    step = 2**64 // count
    return [-(2**63) + i * step for i in range(count)]


def node_dir(side, index):
    return STATE_DIR / side / f"node{index + 1}"


def ensure_tls_material():
    """A CA and one server certificate valid for every bed address, made once with openssl,
    and a truststore holding the CA for nodes that check clients' certificates. The node
    certificate serves as a client certificate too (it has no extended key usage)."""
    tls = STATE_DIR / "tls"
    if (tls / "node.p12").exists() and (tls / "truststore.p12").exists():
        return tls
    tls.mkdir(parents=True, exist_ok=True)
    sans = ",".join([f"IP:127.0.{n}.{i}" for n in range(0, 8) for i in range(1, 2 * MAX_NODES + 1)]
                    + ["DNS:localhost"])

    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tls)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj",
            "/CN=cqlmirror test bed CA", "-keyout", "ca.key", "-out", "ca.pem")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=cqlmirror test bed node",
            "-keyout", "node.key", "-out", "node.csr")
    (tls / "san.ext").write_text(f"subjectAltName={sans}\n")
    openssl("x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "3650", "-extfile", "san.ext", "-out", "node.pem")
    openssl("pkcs12", "-export", "-in", "node.pem", "-inkey", "node.key", "-certfile", "ca.pem",
            "-passout", f"pass:{TLS_PASSWORD}", "-out", "node.p12")
    # A Java truststore needs trusted-certificate entries, which only keytool writes here.
    keytool = str(Path(java17()).parent / "keytool")
    subprocess.run([keytool, "-importcert", "-noprompt", "-alias", "ca", "-file", "ca.pem",
                    "-storetype", "PKCS12", "-keystore", "truststore.p12",
                    "-storepass", TLS_PASSWORD], check=True, capture_output=True, cwd=tls)
    return tls


def write_node_config(side, index, opts, tls_dir):
    name, dc, _ = CLUSTERS[side]
    count = opts[f"{side}_nodes"]
    addresses = node_addresses(side, count, opts["subnet"])
    address = addresses[index]
    directory = node_dir(side, index)
    if directory.exists():
        shutil.rmtree(directory)  # every `up` starts from empty clusters
    (directory / "data").mkdir(parents=True)
    # One seed, started first (see cmd_up): seeds that start together can each drop the other
    # from gossip under load and stay apart for good.
    seeds = f"{addresses[0]}:{STORAGE_PORT}"
    auth = side in opts["auth_sides"]
    tls = side in opts["tls_sides"]
    yaml = f"""# Generated by testbed/bed.py for one throw-away test node.
cluster_name: '{name}'
num_tokens: 1
initial_token: {tokens(count)[index]}
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: GossipingPropertyFileSnitch
commitlog_sync: periodic
commitlog_sync_period: 10000ms
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "{seeds}"
listen_address: {address}
rpc_address: {address}
storage_port: {STORAGE_PORT}
native_transport_port: {NATIVE_PORT}
start_native_transport: true
auto_bootstrap: false
auto_snapshot: false
hinted_handoff_enabled: false
authenticator: {"PasswordAuthenticator" if auth else "AllowAllAuthenticator"}
authorizer: AllowAllAuthorizer
role_manager: CassandraRoleManager
concurrent_reads: 8
concurrent_writes: 8
concurrent_counter_writes: 8
compaction_throughput: 0MiB/s
key_cache_size: 8MiB
counter_cache_size: 4MiB
dynamic_snitch: false
"""
    if tls:
        yaml += f"""client_encryption_options:
  enabled: true
  optional: false
  keystore: {tls_dir / "node.p12"}
  keystore_password: {TLS_PASSWORD}
  require_client_auth: {"true" if side in opts.get("client_cert_sides", []) else "false"}
  truststore: {tls_dir / "truststore.p12"}
  truststore_password: {TLS_PASSWORD}
"""
    (directory / "cassandra.yaml").write_text(yaml)
    (directory / "cassandra-rackdc.properties").write_text(f"dc={dc}\nrack=rack1\n")
    (directory / "logback.xml").write_text(LOGBACK)
    return directory, address


# A node that joins a running seed first asks it for the cluster's state (the shadow round) and
# gives up after the ring delay: 100 ms is too short when the seed is busy (several beds
# starting at once), and the node exits with "Unable to gossip with any peers".
JOINER_RING_DELAY = "-Dcassandra.ring_delay_ms=30000"


def node_command(java, lib, directory, heap, seed):
    args = directory / "jvm.args"
    args.write_text(JVM_FLAGS.strip() + "\n")
    return [
        java,
        f"@{args}",
        f"-Xms{heap}",
        f"-Xmx{heap}",
        f"-javaagent:{lib / 'jamm-0.4.0.jar'}",
        f"-Dcassandra.config=file://{directory / 'cassandra.yaml'}",
        f"-Dcassandra.storagedir={directory / 'data'}",
        f"-Dcassandra-rackdc.properties=file://{directory / 'cassandra-rackdc.properties'}",
        f"-Dlogback.configurationFile={directory / 'logback.xml'}",
        f"-Dcassandra.logdir={directory}",
        *(FAST_START if seed else [f for f in FAST_START if "ring_delay" not in f] + [JOINER_RING_DELAY]),
        "-cp",
        f"{lib}/*",
        "org.apache.cassandra.service.CassandraDaemon",
    ]


# --------------------------------------------------------------------------------------------
# State: what runs, so that `down` stops exactly that


def state_file():
    return STATE_DIR / "state.json"


def read_state():
    try:
        return json.loads(state_file().read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_state(state):
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = state_file().with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(state_file())


def ours(pid):
    """True when `pid` is alive and is one of this test bed's nodes or its watcher.

    Matched on the command line, so that a reused pid or an unrelated program that merely
    names a file of the bed (a `tail -f` of a log) is never stopped.
    """
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    node = f"-Dcassandra.storagedir={STATE_DIR}/".encode()
    if any(a.startswith(node) for a in args):
        return True
    return b"watch" in args and str(STATE_DIR).encode() in args


def ours_any(pid):
    """Like `ours`, for any bed under the beds directory."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    node = f"-Dcassandra.storagedir={BEDS_DIR}/".encode()
    if any(a.startswith(node) for a in args):
        return True
    return b"watch" in args and any(a.startswith(str(BEDS_DIR).encode()) for a in args)


def bed_processes(match=None):
    """Every live process of this bed (or of any bed, with `ours_any`), except ourselves."""
    match = match or ours
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid() and match(int(entry.name)):
            found.append(int(entry.name))
    return found


def stop_pids_any(pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def stop_pids(pids, grace=10.0):
    """SIGTERM, then SIGKILL whatever is still running after `grace` seconds. A Cassandra node
    killed before its shutdown finished loses writes it acknowledged since its last flush (on
    this bed even those its commit log holds), so give a node under load a longer grace."""
    pids = [p for p in pids if ours(p)]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(ours(p) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        if ours(pid):
            if grace > 0:
                log(f"process {pid} did not stop within {grace:g}s: SIGKILL")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(ours(p) for p in pids):
        time.sleep(0.05)
    return pids


# --------------------------------------------------------------------------------------------
# Readiness


def client_certificate(side, opts):
    """The certificate and key clients must present to this side, if it requires one."""
    if side not in opts.get("client_cert_sides", []):
        return None
    return STATE_DIR / "tls" / "node.pem", STATE_DIR / "tls" / "node.key"


def probe(address, side, opts, verify=True):
    """Runs one query on the node; returns its (cluster_name, data_center, peers count).
    `verify=False` does not check the node's certificate."""
    user, password = SUPERUSER if side in opts["auth_sides"] else (None, None)
    ca = str(STATE_DIR / "tls" / "ca.pem") if side in opts["tls_sides"] else None
    cert = client_certificate(side, opts)
    with cqlprobe.Connection(address, NATIVE_PORT, user, password, ca,
                             client_cert=cert and tuple(map(str, cert)), verify=verify) as conn:
        row = conn.query("SELECT cluster_name, data_center FROM system.local WHERE key = 'local'")[0]
        peers = conn.query("SELECT peer FROM system.peers")
        return row[0].decode(), row[1].decode(), len(peers)


def wait_ready(side, nodes, opts, started, timeout, results):
    """Waits until every node of `nodes` answers and sees the others as peers, for up to
    `timeout` seconds; records the time since `started`."""
    count = len(nodes)
    deadline = time.monotonic() + timeout
    pending = dict(nodes)  # address -> (process, directory)
    last_error = {}
    while pending:
        for address, (proc, directory) in list(pending.items()):
            if proc.poll() is not None:
                tail = "".join((directory / "cassandra.log").read_text(errors="replace").splitlines(True)[-30:])
                results[side] = f"node {address} exited with status {proc.returncode}; last lines of " \
                                f"{directory / 'cassandra.log'}:\n{tail}"
                return
            try:
                name, dc, peers = probe(address, side, opts)
                if name != CLUSTERS[side][0] or dc != CLUSTERS[side][1]:
                    results[side] = f"node {address} reports cluster {name!r} in {dc!r}, expected " \
                                    f"{CLUSTERS[side][0]!r} in {CLUSTERS[side][1]!r}"
                    return
                if peers == count - 1:
                    del pending[address]
                else:
                    last_error[address] = f"sees {peers} of {count - 1} peers"
            except (OSError, cqlprobe.ProbeError) as e:
                last_error[address] = str(e)
        if not pending:
            break
        if time.monotonic() > deadline:
            results[side] = f"not ready after {timeout:.0f}s: " + "; ".join(
                f"{a}: {last_error.get(a, 'no answer')}" for a in pending)
            return
        time.sleep(0.5)
    results[side] = time.monotonic() - started


# --------------------------------------------------------------------------------------------
# Commands


def parse_sides(value):
    return {"none": [], "source": ["source"], "target": ["target"], "both": list(SIDES)}[value]


def cmd_up(args):
    opts = {
        "source_nodes": args.source_nodes,
        "target_nodes": args.target_nodes,
        "auth_sides": parse_sides(args.auth),
        "tls_sides": parse_sides(args.tls),
        "client_cert_sides": parse_sides(args.tls_client_certs),
        "heap": args.heap,
        "subnet": args.subnet,
    }
    if not set(opts["client_cert_sides"]) <= set(opts["tls_sides"]):
        fail("--tls-client-certs needs TLS on the same sides: add --tls for them")
    state = read_state()
    if state and any(ours(n["pid"]) for n in state["nodes"]):
        alive = all(ours(n["pid"]) for n in state["nodes"])
        if alive and state["options"] == opts:
            if args.owner_pid:
                start_watcher(state, args.owner_pid)
            log("the clusters are already running with these options; nothing to do")
            print_summary(state)
            return
        if alive:
            fail("the clusters are running with other options "
                 f"({describe(state['options'])}); run `scripts/testbed down` first")
        log("some nodes of the previous bed died; stopping the rest and starting afresh")
        cmd_down(args)
    else:
        stray = bed_processes()
        if stray:
            log(f"stopping {len(stray)} stray test-bed processes left from an earlier run")
            stop_pids(stray)

    for other in sorted(BEDS_DIR.glob("*/state.json")):
        if other.parent == STATE_DIR:
            continue
        try:
            theirs = json.loads(other.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if theirs["options"].get("subnet", 0) == opts["subnet"] and any(ours_any(n["pid"]) for n in theirs["nodes"]):
            fail(f"bed '{other.parent.name}' already runs on subnet {opts['subnet']} (127.0.{opts['subnet']}.x); "
                 f"give this bed another --subnet")

    version, lib = classpath()
    java = java17()
    tls_dir = ensure_tls_material() if opts["tls_sides"] else None

    state = {"options": opts, "cassandra_version": version, "nodes": [], "watcher": None}
    procs = {side: {} for side in SIDES}
    interrupted = []

    def on_signal(signum, _frame):
        interrupted.append(signum)
        raise KeyboardInterrupt

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        started = time.monotonic()
        state_lock = threading.Lock()
        configs = {side: [write_node_config(side, index, opts, tls_dir)
                          for index in range(opts[f"{side}_nodes"])] for side in SIDES}

        def start(side, directory, address):
            out = open(directory / "cassandra.log", "wb")
            proc = subprocess.Popen(
                node_command(java, lib, directory, opts["heap"], seed=address == configs[side][0][1]),
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=directory, start_new_session=True,  # a Ctrl-C in the caller's terminal
            )                                           # reaches us, and we stop them
            out.close()
            with state_lock:
                procs[side][address] = (proc, directory)
                state["nodes"].append({"side": side, "address": address, "pid": proc.pid,
                                       "dir": str(directory)})
                write_state(state)

        def bring_up(side):
            """The seed first; the other nodes once it answers, all at once (they do not
            bootstrap: the cluster is empty)."""
            seed_dir, seed = configs[side][0]
            start(side, seed_dir, seed)
            if len(configs[side]) > 1:
                wait_ready(side, {seed: procs[side][seed]}, opts, started, args.timeout, results)
                if not isinstance(results.get(side), float) or interrupted:
                    return
                log(f"{side} seed {seed} answered CQL after {results[side]:.1f}s; starting "
                    f"{', '.join(a for _, a in configs[side][1:])}")
                for directory, address in configs[side][1:]:
                    start(side, directory, address)
            wait_ready(side, dict(procs[side]), opts, started, args.timeout, results)

        log(f"starting Cassandra {version}: " + ", ".join(
            f"{side} {len(configs[side])} node(s) on {', '.join(a for _, a in configs[side])}"
            for side in SIDES) + f"; waiting for CQL (up to {args.timeout:.0f}s per wave)")
        results = {}
        threads = [threading.Thread(target=bring_up, args=(side,), daemon=True) for side in SIDES]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        failed = {s: r for s, r in results.items() if not isinstance(r, float)}
        if failed:
            cmd_down(args)
            fail("the test bed did not come up:\n" + "\n".join(f"{s}: {r}" for s, r in failed.items()))
        state["startup_seconds"] = {s: round(results[s], 1) for s in SIDES}
        write_state(state)
        for side in SIDES:
            log(f"{side} cluster {CLUSTERS[side][0]} ({CLUSTERS[side][1]}) answered CQL after "
                f"{results[side]:.1f}s")
        if args.owner_pid:
            start_watcher(state, args.owner_pid)
        print_summary(state)
    except KeyboardInterrupt:
        log("interrupted: stopping the nodes started so far")
        cmd_down(args)
        sys.exit(130)
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def start_watcher(state, owner_pid):
    """A detached process that stops the bed when `owner_pid` exits, even if it was killed."""
    if state.get("watcher") and ours(state["watcher"]):
        stop_pids([state["watcher"]], grace=1)
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--name", STATE_DIR.name, "watch",
         "--owner-pid", str(owner_pid), "--state-dir", str(STATE_DIR)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    state["watcher"] = proc.pid
    write_state(state)


def cmd_watch(args):
    while True:
        time.sleep(1)
        state = read_state()
        if state is None or state.get("watcher") != os.getpid():
            return  # `down` ran, or another watcher took over
        try:
            os.kill(args.owner_pid, 0)
        except ProcessLookupError:
            log(f"owner process {args.owner_pid} is gone: stopping the test bed")
            cmd_down(args)
            return


def cmd_down(args):
    global STATE_DIR
    if getattr(args, "all", False):
        for bed in sorted(p.parent for p in BEDS_DIR.glob("*/state.json")):
            STATE_DIR = bed
            log(f"bed '{bed.name}':")
            cmd_down(argparse.Namespace(all=False))
        stray = bed_processes(ours_any)
        if stray:
            log(f"stopping {len(stray)} stray test-bed process(es)")
            stop_pids_any(stray)
        return
    state = read_state()
    pids = []
    if state:
        pids = [n["pid"] for n in state["nodes"]]
        if state.get("watcher") and state["watcher"] != os.getpid():
            pids.append(state["watcher"])
    pids += [p for p in bed_processes() if p not in pids]
    pids = [p for p in pids if p != os.getpid() and p != os.getppid()]
    stopped = stop_pids(pids)
    left = [p for p in stopped if ours(p)]
    try:
        state_file().unlink()
    except FileNotFoundError:
        pass
    if left:
        fail(f"processes {left} did not stop; kill them with `kill -9 {' '.join(map(str, left))}`")
    log(f"stopped {len(stopped)} test-bed process(es)" if stopped else "nothing was running")


def cmd_stop(args):
    """Stops the nodes of one side, leaving the other running (an outage, for tests)."""
    state = read_state()
    if not state:
        fail(f"bed '{STATE_DIR.name}' is not running")
    pids = [n["pid"] for n in state["nodes"] if n["side"] == args.side]
    stopped = stop_pids(pids, grace=0 if args.kill else args.grace)
    log(f"stopped the {args.side} cluster ({len(stopped)} node(s))")


def node_of(state, address):
    for node in state["nodes"]:
        if node["address"] == address:
            return node
    fail(f"no node {address} in bed '{STATE_DIR.name}': it has "
         f"{', '.join(n['address'] for n in state['nodes'])}")


def cmd_stop_node(args):
    """Stops one node (a node failure, for tests); `start-node` brings it back with its data."""
    state = read_state()
    if not state:
        fail(f"bed '{STATE_DIR.name}' is not running")
    node = node_of(state, args.address)
    stopped = stop_pids([node["pid"]], grace=0 if args.kill else args.grace)
    log(f"stopped node {args.address} ({len(stopped)} process)")


def is_seed(state, node):
    """Whether `node` is its cluster's seed: the first node of its side."""
    return next(n for n in state["nodes"] if n["side"] == node["side"])["address"] == node["address"]


def cmd_start_node(args):
    """Starts a stopped node again, with its data, and waits until it answers CQL."""
    state = read_state()
    if not state:
        fail(f"bed '{STATE_DIR.name}' is not running")
    node = node_of(state, args.address)
    if ours(node["pid"]):
        log(f"node {args.address} is running already")
        return
    version, lib = classpath()
    directory = Path(node["dir"])
    if node["side"] in state["options"]["tls_sides"]:
        # The node's TLS certificate: the one given (until the next start-node), else the bed's.
        keystore = Path(args.keystore).resolve() if args.keystore else STATE_DIR / "tls" / "node.p12"
        config = directory / "cassandra.yaml"
        config.write_text(re.sub(r"(?m)^  keystore: .*$", f"  keystore: {keystore}",
                                 config.read_text()))
    elif args.keystore:
        fail(f"--keystore: node {args.address} does not speak TLS (its bed has no --tls for it)")
    out = open(directory / "cassandra.log", "ab")
    proc = subprocess.Popen(node_command(java17(), lib, directory, state["options"]["heap"], seed=is_seed(state, node)),
                            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                            cwd=directory, start_new_session=True)
    out.close()
    node["pid"] = proc.pid
    write_state(state)
    started = time.monotonic()
    deadline = started + args.timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            fail(f"node {args.address} exited with status {proc.returncode}; see {directory / 'cassandra.log'}")
        try:
            probe(args.address, node["side"], state["options"], verify=not args.keystore)
            log(f"node {args.address} answered CQL after {time.monotonic() - started:.1f}s")
            return
        except (OSError, cqlprobe.ProbeError) as e:
            last = str(e)
        time.sleep(0.5)
    fail(f"node {args.address} did not answer CQL within {args.timeout:.0f}s: {last}")


def describe(opts):
    return (f"source nodes {opts['source_nodes']}, target nodes {opts['target_nodes']}, "
            f"auth {'+'.join(opts['auth_sides']) or 'none'}, tls {'+'.join(opts['tls_sides']) or 'none'}"
            f"{', client certificates ' + '+'.join(opts['client_cert_sides']) if opts.get('client_cert_sides') else ''}")


def env_lines(state):
    opts = state["options"]
    lines = [f"CQLMIRROR_BED_CASSANDRA_VERSION={state['cassandra_version']}",
             f"CQLMIRROR_BED_NAME={STATE_DIR.name}"]
    for side in SIDES:
        up = side.upper()
        nodes = [f"{a}:{NATIVE_PORT}" for a in node_addresses(side, opts[f"{side}_nodes"], opts["subnet"])]
        auth = side in opts["auth_sides"]
        tls = side in opts["tls_sides"]
        lines += [
            f"CQLMIRROR_BED_{up}={nodes[0]}",
            f"CQLMIRROR_BED_{up}_NODES={','.join(nodes)}",
            f"CQLMIRROR_BED_{up}_CLUSTER={CLUSTERS[side][0]}",
            f"CQLMIRROR_BED_{up}_DC={CLUSTERS[side][1]}",
            f"CQLMIRROR_BED_{up}_USERNAME={SUPERUSER[0] if auth else ''}",
            f"CQLMIRROR_BED_{up}_PASSWORD={SUPERUSER[1] if auth else ''}",
            f"CQLMIRROR_BED_{up}_TLS_CA={STATE_DIR / 'tls' / 'ca.pem' if tls else ''}",
        ]
        cert = client_certificate(side, opts)
        lines += [f"CQLMIRROR_BED_{up}_TLS_CERT={cert[0] if cert else ''}",
                  f"CQLMIRROR_BED_{up}_TLS_KEY={cert[1] if cert else ''}"]
    return lines


def print_summary(state):
    for line in env_lines(state):
        print(f"export {line}")


def cmd_env(_args):
    state = read_state()
    if not state or not all(ours(n["pid"]) for n in state["nodes"]):
        fail(f"the test bed '{STATE_DIR.name}' is not running: start it with `scripts/testbed up`")
    print_summary(state)


def cmd_status(_args):
    state = read_state()
    if not state:
        print("not running")
        stray = bed_processes()
        if stray:
            print(f"stray test-bed processes: {stray} (`scripts/testbed down` stops them)")
        return
    print(f"Cassandra {state['cassandra_version']}; {describe(state['options'])}")
    for node in state["nodes"]:
        alive = ours(node["pid"])
        answer = "-"
        if alive:
            try:
                name, dc, peers = probe(node["address"], node["side"], state["options"])
                answer = f"answers CQL: {name} / {dc}, {peers} peer(s)"
            except (OSError, cqlprobe.ProbeError) as e:
                answer = f"does not answer CQL: {e}"
        print(f"{node['side']:7} {node['address']:10} pid {node['pid']:<8} "
              f"{'running' if alive else 'STOPPED'}  {answer}")
    if state.get("watcher"):
        print(f"watcher pid {state['watcher']} {'running' if ours(state['watcher']) else 'gone'}")


def cmd_classpath(_args):
    version, lib = classpath()
    print(f"Cassandra {version}: {lib}")


def main():
    global STATE_DIR
    parser = argparse.ArgumentParser(prog="testbed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default=os.environ.get("CQLMIRROR_BED_NAME", "main"),
                        help="which bed (default: main); each has its own state directory")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the source and target clusters (fresh, in parallel)")
    up.add_argument("--source-nodes", type=int, default=1, choices=range(1, MAX_NODES + 1),
                    help="nodes in the source cluster (default 1)")
    up.add_argument("--target-nodes", type=int, default=1, choices=range(1, MAX_NODES + 1),
                    help="nodes in the target cluster (default 1)")
    up.add_argument("--auth", choices=["none", "source", "target", "both"], default="none",
                    help="PasswordAuthenticator (login cassandra/cassandra) on these sides")
    up.add_argument("--tls", choices=["none", "source", "target", "both"], default="none",
                    help="client TLS on these sides (CA in <state>/tls/ca.pem)")
    up.add_argument("--tls-client-certs", choices=["none", "source", "target", "both"],
                    default="none",
                    help="these sides' nodes require a client certificate signed by the bed's "
                         "CA (with --tls; <state>/tls/node.pem and node.key are one)")
    up.add_argument("--heap", default="512m", help="JVM heap per node (default 512m)")
    up.add_argument("--subnet", type=int, default=0, choices=range(0, 16),
                    help="third octet of the bed's loopback addresses (default 0: 127.0.0.x)")
    up.add_argument("--timeout", type=float, default=180, help="seconds to wait for CQL (default 180)")
    up.add_argument("--owner-pid", type=int,
                    help="stop the bed automatically when this process exits (e.g. the test script)")
    down = sub.add_parser("down", help="stop every process of the bed")
    down.add_argument("--all", action="store_true", help="stop every bed under the beds directory")
    stop = sub.add_parser("stop", help="stop the nodes of one side (an outage)")
    stop.add_argument("side", choices=SIDES)
    stop.add_argument("--kill", action="store_true", help="SIGKILL instead of a clean shutdown")
    stop.add_argument("--grace", type=float, default=10.0, metavar="SECONDS",
                      help="how long a clean shutdown may take before SIGKILL (default 10)")
    stop_node = sub.add_parser("stop-node", help="stop one node (a node failure)")
    stop_node.add_argument("address", help="the node's address, e.g. 127.0.0.3")
    stop_node.add_argument("--kill", action="store_true", help="SIGKILL instead of a clean stop")
    stop_node.add_argument("--grace", type=float, default=10.0, metavar="SECONDS",
                           help="how long a clean stop may take before SIGKILL (default 10)")
    start_node = sub.add_parser("start-node", help="start a stopped node again, with its data")
    start_node.add_argument("address", help="the node's address, e.g. 127.0.0.3")
    start_node.add_argument("--keystore", metavar="FILE",
                            help="serve this PKCS#12 keystore (password cqlmirror) instead of the "
                                 "bed's certificate until the next start-node, e.g. an expired "
                                 "one; its certificate is not checked while waiting")
    start_node.add_argument("--timeout", type=float, default=180.0,
                            help="seconds to wait for it to answer CQL (default 180)")
    sub.add_parser("status", help="show the nodes and whether they answer CQL")
    sub.add_parser("env", help="print shell exports of the clusters' addresses")
    sub.add_parser("classpath", help="fetch and cache the Cassandra classpath only")
    watch = sub.add_parser("watch", help=argparse.SUPPRESS)
    watch.add_argument("--owner-pid", type=int, required=True)
    watch.add_argument("--state-dir")  # only so that the watcher's command line names the bed
    args = parser.parse_args()
    if not args.name.replace("-", "").replace("_", "").isalnum():
        fail(f"--name {args.name!r}: use letters, digits, - and _")
    STATE_DIR = BEDS_DIR / args.name
    {"stop": cmd_stop, "up": cmd_up, "down": cmd_down, "status": cmd_status, "env": cmd_env,
     "classpath": cmd_classpath, "watch": cmd_watch, "stop-node": cmd_stop_node,
     "start-node": cmd_start_node}[args.command](args)


if __name__ == "__main__":
    main()
