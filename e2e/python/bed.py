"""Access to the test bed's clusters from the Python end-to-end tests.

`scripts/test` exports the clusters' addresses (`scripts/testbed env`); these helpers turn them
into driver sessions and cqlsh invocations, with credentials and TLS when the bed uses them.
"""

import os
import shutil
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.policies import DCAwareRoundRobinPolicy


@dataclass(frozen=True)
class Endpoint:
    """One CQL endpoint: a cluster of the bed, or later a proxy in front of them."""

    host: str
    port: int
    dc: str
    username: str = ""
    password: str = ""
    tls_ca: str = ""

    def cluster(self, **kwargs):
        profile = ExecutionProfile(load_balancing_policy=DCAwareRoundRobinPolicy(local_dc=self.dc))
        if self.username:
            kwargs["auth_provider"] = PlainTextAuthProvider(self.username, self.password)
        if self.tls_ca:
            ctx = ssl.create_default_context(cafile=self.tls_ca)
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
        if input_file:
            cmd += ["-f", str(input_file)]
        cmd += list(args)
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


def side(name):
    """The endpoint of the bed's `source` or `target` cluster, from the environment."""
    prefix = f"CQLMIRROR_BED_{name.upper()}"
    if prefix not in os.environ:
        raise RuntimeError(
            f"{prefix} is not set: start the clusters with `scripts/testbed up` and run the "
            "tests through `scripts/test`"
        )
    host, port = os.environ[prefix].rsplit(":", 1)
    return Endpoint(
        host=host,
        port=int(port),
        dc=os.environ[f"{prefix}_DC"],
        username=os.environ.get(f"{prefix}_USERNAME", ""),
        password=os.environ.get(f"{prefix}_PASSWORD", ""),
        tls_ca=os.environ.get(f"{prefix}_TLS_CA", ""),
    )
