"""Runs a cqlmirror proxy binary in front of a bed's two clusters for one test.

The binaries under test come from `CQLMIRROR_PROXY_BINARIES` (comma-separated paths, relative to
the repository root or absolute; default: target/debug/proxy-smol and target/debug/proxy-tokio).
Each proxy listens on a free loopback port, writes its output to a log under target/e2e-logs/,
and is stopped at the end of the test: SIGTERM, then SIGKILL. The kernel also kills it if the
test process dies (PR_SET_PDEATHSIG), so that no proxy outlives a run.
"""

import atexit
import ctypes
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

from bed import REPO, Endpoint

LOG_DIR = REPO / "target" / "e2e-logs"
DEFAULT_BINARIES = "target/debug/proxy-smol,target/debug/proxy-tokio"
LISTEN_HOST = "127.0.0.1"
STOP_GRACE = 12.0  # the proxy drains open connections for up to 10s after SIGTERM

_running = set()


def binaries():
    """The proxy binaries every proxy test runs against, as absolute paths."""
    listed = os.environ.get("CQLMIRROR_PROXY_BINARIES", "") or DEFAULT_BINARIES
    paths = []
    for item in listed.split(","):
        item = item.strip()
        if item:
            path = Path(item)
            paths.append(path if path.is_absolute() else REPO / path)
    return paths


def free_port(host=LISTEN_HOST):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _die_with_parent():
    """In the child, before exec: the kernel sends SIGKILL when the test process exits."""
    PR_SET_PDEATHSIG = 1
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _option_free_env():
    """The environment without CQLMIRROR_* variables: the proxy reads its options from them,
    and a test states every option it means on the command line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CQLMIRROR_")}
    env.setdefault("RUST_BACKTRACE", "1")
    return env


class ProxyError(Exception):
    pass


class Proxy:
    """One proxy process. `endpoint` is where clients connect."""

    def __init__(self, binary, source, target, args=(), log_name="proxy", host=None, port=None):
        self.binary = Path(binary)
        self.host = host or LISTEN_HOST
        self.fixed_port = port
        self.source = source
        self.target = target
        self.args = list(args)
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", log_name)[:150]
        self.log_path = LOG_DIR / f"{safe}.log"
        self.log_path.unlink(missing_ok=True)  # a log holds one test run
        self.proc = None
        self.port = None
        self.exit_status = None  # set when the process ended on its own before `stop`
        self.needed_kill = False  # set when SIGTERM did not stop it within STOP_GRACE

    @property
    def name(self):
        return self.binary.name

    @property
    def endpoint(self):
        return Endpoint(host=self.host, port=self.port, dc="")

    @property
    def address(self):
        return f"{self.host}:{self.port}"

    def command(self, port):
        # Metrics on any free port unless the test picks one: tests run several proxies at once.
        metrics = [] if "--metrics-port" in self.args else ["--metrics-port", "0"]
        return [
            str(self.binary),
            self.source.address,
            self.target.address,
            "--listen-address", self.host,
            "--proxy-port", str(port),
            *metrics,
            *self.args,
        ]

    @property
    def ops_url(self):
        """The base URL of the metrics, health and admin endpoint, from the start-up line."""
        match = re.search(r"metrics on (http://[^ ]+)/metrics", self.log_text())
        if not match:
            raise ProxyError(f"{self.name} did not log its metrics address; log {self.log_path}")
        return match.group(1)

    def start(self, timeout=20.0):
        if not self.binary.exists():
            raise ProxyError(
                f"{self.binary} does not exist: build it with "
                "`cargo build -p cqlmirror-smol -p cqlmirror-tokio` (or set CQLMIRROR_PROXY_BINARIES)"
            )
        for attempt in range(3):
            port = self.fixed_port or free_port(self.host)
            with open(self.log_path, "ab") as log:
                log.write(f"$ {' '.join(self.command(port))}\n".encode())
                log.flush()
                self.proc = subprocess.Popen(
                    self.command(port),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=_option_free_env(),
                    cwd=REPO,
                    preexec_fn=_die_with_parent,
                )
            _running.add(self)
            self.port = port
            started = time.monotonic()
            while True:
                status = self.proc.poll()
                if status is not None:
                    _running.discard(self)
                    tail = self.tail()
                    if "in use" in tail.lower() and attempt < 2:
                        break  # another process took the port meanwhile: try another one
                    raise ProxyError(
                        f"{self.name} exited with status {status} before accepting connections "
                        f"on {self.address}; log {self.log_path}:\n{tail}"
                    )
                try:
                    with socket.create_connection((self.host, port), timeout=0.5):
                        return self
                except OSError:
                    pass
                if time.monotonic() - started > timeout:
                    self.stop()
                    raise ProxyError(
                        f"{self.name} did not accept connections on {self.address} within "
                        f"{timeout:.0f}s; log {self.log_path}:\n{self.tail()}"
                    )
                time.sleep(0.05)
        raise ProxyError(f"{self.name} could not bind a free port; log {self.log_path}")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        """SIGTERM, then SIGKILL after a grace period. Records whether it had died before."""
        if self.proc is None:
            return
        status = self.proc.poll()
        if status is not None:
            if self.exit_status is None and self in _running:
                self.exit_status = status
        else:
            started = time.monotonic()
            self.proc.send_signal(signal.SIGTERM)
            try:
                status = self.proc.wait(STOP_GRACE)
                how = f"exited with status {status} {time.monotonic() - started:.2f}s after SIGTERM"
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                self.needed_kill = True
                how = f"still running {STOP_GRACE:g}s after SIGTERM: killed"
            with open(self.log_path, "a") as log:
                log.write(f"$ # {how}\n")
        _running.discard(self)

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines=80):
        return "".join(self.log_text().splitlines(True)[-lines:])

    def panics(self):
        """Lines of the log that show a panic."""
        return [line for line in self.log_text().splitlines() if "panicked at" in line]


@atexit.register
def _stop_all():
    for proxy in list(_running):
        proxy.stop()
