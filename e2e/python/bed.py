"""Access to the test bed's clusters from the Python end-to-end tests.

`scripts/test` exports the main bed's addresses (`scripts/testbed env`); other named beds are
looked up with `scripts/testbed --name NAME env` (and started when they are not running). These
helpers turn the addresses into driver sessions and cqlsh invocations, with credentials and TLS
when the bed uses them.
"""

import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.policies import DCAwareRoundRobinPolicy, RoundRobinPolicy

REPO = Path(__file__).resolve().parents[2]
TESTBED = REPO / "scripts" / "testbed"


@dataclass(frozen=True)
class Endpoint:
    """One CQL endpoint: a cluster of the bed, or a proxy in front of them (no `dc`)."""

    host: str
    port: int
    dc: str
    username: str = ""
    password: str = ""
    tls_ca: str = ""
    # A client certificate and key, for a cluster that requires one (mutual TLS).
    tls_cert: str = ""
    tls_key: str = ""

    def cluster(self, **kwargs):
        # A proxy endpoint has no data center of its own: plain round robin over the one host.
        policy = DCAwareRoundRobinPolicy(local_dc=self.dc) if self.dc else RoundRobinPolicy()
        profile = ExecutionProfile(
            load_balancing_policy=policy, request_timeout=kwargs.pop("request_timeout", 20)
        )
        # Generous: a 2-core machine running six Cassandra nodes can be slow to answer.
        kwargs.setdefault("connect_timeout", 15)
        if self.username:
            kwargs["auth_provider"] = PlainTextAuthProvider(self.username, self.password)
        if self.tls_ca:
            ctx = ssl.create_default_context(cafile=self.tls_ca)
            if self.tls_cert:
                ctx.load_cert_chain(self.tls_cert, self.tls_key)
            kwargs["ssl_context"] = ctx
        return Cluster(
            contact_points=[self.host],
            port=self.port,
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
            **kwargs,
        )

    def cqlsh(self, *args, input_file=None):
        """Runs cqlsh against this endpoint; returns the completed process (text output)."""
        cqlsh = Path(sys.executable).parent / "cqlsh"
        if not cqlsh.exists():
            cqlsh = shutil.which("cqlsh")
        cmd = [str(cqlsh), self.host, str(self.port)]
        env = dict(os.environ)
        if self.username:
            cmd += ["-u", self.username, "-p", self.password]
        if self.tls_ca:
            cmd += ["--ssl"]
            env["SSL_CERTFILE"] = self.tls_ca
            env["SSL_VALIDATE"] = "true"
        if self.tls_cert:
            # cqlsh takes a client certificate from its cqlshrc only.
            rc = Path(tempfile.mkdtemp()) / "cqlshrc"
            rc.write_text(f"[ssl]\nusercert = {self.tls_cert}\nuserkey = {self.tls_key}\n")
            cmd += ["--cqlshrc", str(rc)]
        if input_file:
            cmd += ["-f", str(input_file)]
        cmd += list(args)
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)

    @property
    def address(self):
        return f"{self.host}:{self.port}"


def side(name, env=None):
    """The endpoint of the bed's `source` or `target` cluster, from the environment (or from
    `env`, the variables of another bed)."""
    env = os.environ if env is None else env
    prefix = f"CQLMIRROR_BED_{name.upper()}"
    if prefix not in env:
        raise RuntimeError(
            f"{prefix} is not set: start the clusters with `scripts/testbed up` and run the "
            "tests through `scripts/test`"
        )
    host, port = env[prefix].rsplit(":", 1)
    return Endpoint(
        host=host,
        port=int(port),
        dc=env[f"{prefix}_DC"],
        username=env.get(f"{prefix}_USERNAME", ""),
        password=env.get(f"{prefix}_PASSWORD", ""),
        tls_ca=env.get(f"{prefix}_TLS_CA", ""),
        tls_cert=env.get(f"{prefix}_TLS_CERT", ""),
        tls_key=env.get(f"{prefix}_TLS_KEY", ""),
    )


@dataclass(frozen=True)
class Bed:
    """A running bed: its name, its two clusters (their first nodes), the `up` options it was
    started with, and every node's `host:port`."""

    name: str
    source: Endpoint
    target: Endpoint
    up_args: tuple = ()
    source_nodes: tuple = ()
    target_nodes: tuple = ()

    def node_hosts(self):
        """The addresses of every node of both clusters (what drivers must never connect to)."""
        return {n.rsplit(":", 1)[0] for n in self.source_nodes + self.target_nodes} | {
            self.source.host, self.target.host}


def main_bed():
    """The bed whose addresses are exported in this process's environment (`scripts/test`)."""
    return Bed(os.environ.get("CQLMIRROR_BED_NAME", "main"), side("source"), side("target"))


def parse_env(text):
    """`export CQLMIRROR_BED_X=value` lines (the output of `scripts/testbed env`) as a dict."""
    env = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("export ") and "=" in line:
            key, value = line[len("export "):].split("=", 1)
            env[key] = value
    return env


def testbed(*args, timeout=300):
    return subprocess.run([str(TESTBED), *args], capture_output=True, text=True, timeout=timeout)


def named_bed(name, up_args, owner_pid=None):
    """The running bed `name`, started with `scripts/testbed --name NAME up UP_ARGS` when it is
    not running or one of its clusters is down. A bed started here stops when the process
    `CQLMIRROR_E2E_BED_OWNER` names exits (`scripts/test` sets its own pid), by default the
    parent of this process (the shell that ran pytest).

    `scripts/test` starts the beds the suite needs in parallel before the tests run, so this
    usually finds them running; after a test that stopped one side it starts them afresh.
    """
    run = testbed("--name", name, "env")
    env = parse_env(run.stdout) if run.returncode == 0 else {}
    if env and all(answers(side(s, env)) for s in ("source", "target")):
        return bed_of(name, env, up_args)
    owner = owner_pid or int(os.environ.get("CQLMIRROR_E2E_BED_OWNER") or os.getppid())
    run = testbed("--name", name, "up", *up_args, "--owner-pid", str(owner))
    if run.returncode != 0:
        raise RuntimeError(f"cannot start bed '{name}' (scripts/testbed --name {name} up "
                           f"{' '.join(up_args)}):\n{run.stderr[-3000:]}")
    env = parse_env(run.stdout)
    return bed_of(name, env, up_args)


def bed_of(name, env, up_args):
    nodes = lambda s: tuple(n for n in env.get(f"CQLMIRROR_BED_{s}_NODES", "").split(",") if n)  # noqa: E731
    return Bed(name, side("source", env), side("target", env), tuple(up_args),
               nodes("SOURCE"), nodes("TARGET"))


def running_pids(name, side_name):
    """The process ids of the running nodes of one side of bed `name`."""
    run = testbed("--name", name, "status")
    pids = []
    for line in run.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[0] == side_name and fields[2] == "pid" and fields[4] == "running":
            pids.append(int(fields[3]))
    return pids


def answers(endpoint, timeout=2.0):
    """True when something accepts TCP connections on the endpoint."""
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout):
            return True
    except OSError:
        return False
