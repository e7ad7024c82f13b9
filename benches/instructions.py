#!/usr/bin/env python3
"""Instructions per request of each proxy, counted by valgrind's callgrind: a figure that does
not move with the machine's load, unlike CPU time on a shared 2-core VM (where the rounds of
`scripts/bench` spread by ±20%), so that a change of a few percent in the per-request path
shows.

For the raw relay and each proxy binary (and, with --baseline DIR, DIR's proxies), the proxies
in the primary read mode against two `cqlmirror-null` backends, the relay in front of one: the
binary runs under callgrind, `cqlmirror-load` sends a fixed number of pipelined requests
(closed loop, every answer checked), the binary is stopped and callgrind's total read. Two
runs, of `--requests` and of ten times as many, are subtracted, so that what a binary does
once (start-up, the handshakes, PREPAREs) cancels out: what is left is divided by the
difference in requests. Reads only, then mixed (--reads, 50% by default).

Counts user-space instructions of every thread of the proxy, not the kernel's work (system
calls, TCP), and not time: a cache miss costs more than an instruction. Callgrind runs one
thread at a time, so the proxy sees larger batches than it would at full speed.

Standard library only; needs valgrind. Run through `scripts/bench --instructions`.
"""

import argparse
import re
import signal
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the processes and their logs are handled the same way)


def total_instructions(out_file):
    for line in Path(out_file).read_text().splitlines():
        found = re.match(r"^(?:summary|totals):\s+(\d+)", line)
        if found:
            return int(found.group(1))
    bench.fail(f"no instruction total in {out_file}")


def count(binary, name, requests, reads, backends, args):
    """Total instructions of `binary` serving `requests` requests with `reads`% reads."""
    port = bench.free_port()
    out = bench.LOGS / f"callgrind-{name}-{reads}pc-{requests}.out"
    if binary.name == "cqlmirror-relay":
        serve = [backends[0], "--listen", f"127.0.0.1:{port}"]
    else:
        serve = [*backends, "--listen-address", "127.0.0.1", "--metrics-port", "0",
                 "--proxy-port", str(port), "--read-mode", "primary", "--threads", "2"]
    proxy = bench.start(f"callgrind-{name}-{reads}pc-{requests}", [
        "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", str(binary), *serve])
    bench.wait_port(proxy, port, name, timeout=120)
    load = subprocess.run(
        [str(bench.BIN / "cqlmirror-load"), f"127.0.0.1:{port}", "--requests", str(requests),
         "--reads", str(reads), "--connections", str(args.connections),
         "--in-flight", str(args.in_flight), "--protocol", str(args.protocol)],
        capture_output=True, text=True)
    proxy.send_signal(signal.SIGINT)
    proxy.wait(timeout=120)
    if load.returncode != 0:
        bench.say(load.stderr)
        bench.fail(f"cqlmirror-load failed against {name} under callgrind")
    return total_instructions(out)


def per_request(binary, name, reads, backends, args):
    few = count(binary, name, args.requests, reads, backends, args)
    many = count(binary, name, args.requests * 10, reads, backends, args)
    return (many - few) / (args.requests * 9)


def main():
    parser = argparse.ArgumentParser(prog="scripts/bench --instructions", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000,
                        help="requests of the shorter run; the longer sends ten times as many "
                             "(default 20000)")
    parser.add_argument("--reads", type=int, default=50,
                        help="percentage of reads of the mixed runs (default 50)")
    parser.add_argument("--connections", type=int, default=4, help="client connections (default 4)")
    parser.add_argument("--in-flight", type=int, default=64,
                        help="requests in flight per connection (default 64)")
    parser.add_argument("--protocol", type=int, default=4, choices=(3, 4, 5),
                        help="protocol version (default 4)")
    parser.add_argument("--baseline", type=Path, metavar="DIR",
                        help="a directory with other proxy-smol and proxy-tokio binaries (an earlier "
                             "build), counted too, with ratios now ÷ before")
    args = parser.parse_args()
    if subprocess.run(["valgrind", "--version"], capture_output=True).returncode != 0:
        bench.fail("valgrind is missing: install it (Debian: apt-get install valgrind)")
    binaries = {name: bench.BIN / name for name in ("cqlmirror-relay", "proxy-smol", "proxy-tokio")}
    if args.baseline:
        for name in ("proxy-smol", "proxy-tokio"):
            binaries[f"{name} (before)"] = args.baseline / name
    for name, binary in binaries.items():
        if not binary.exists():
            bench.fail(f"{binary} is missing")
    bench.LOGS.mkdir(parents=True, exist_ok=True)
    backends = []
    for name in ("null-source", "null-target"):
        port = bench.free_port()
        proc = bench.start(name, [str(bench.BIN / "cqlmirror-null"), "--listen", f"127.0.0.1:{port}"])
        bench.wait_port(proc, port, name)
        backends.append(f"127.0.0.1:{port}")

    bench.say(f"== instructions per request (callgrind), {args.connections} connections x "
              f"{args.in_flight} in flight, protocol v{args.protocol}, "
              f"{args.requests * 10} − {args.requests} requests ==")
    figures = {}
    for name, binary in binaries.items():
        for reads in (100, args.reads):
            slug = re.sub(r"[^a-z0-9]+", "-", name).strip("-")
            figures[(name, reads)] = per_request(binary, slug, reads, backends, args)
            bench.say(f"  {name:<24} {reads:>3}% reads: {figures[(name, reads)]:8.0f}")
    lines = [f"| binary | instructions per request, reads only | the same, {args.reads}% reads |",
             "|---|---|---|"]
    for name in binaries:
        lines.append(f"| {name} | {figures[(name, 100)]:.0f} | {figures[(name, args.reads)]:.0f} |")
    for name in ("proxy-smol", "proxy-tokio"):
        ratios = [figures[(name, r)] / figures[("cqlmirror-relay", r)] for r in (100, args.reads)]
        lines.append(f"| {name} ÷ relay | {ratios[0]:.1f} | {ratios[1]:.1f} |")
    if args.baseline:
        for name in ("proxy-smol", "proxy-tokio"):
            ratios = [figures[(name, r)] / figures[(f"{name} (before)", r)] for r in (100, args.reads)]
            lines.append(f"| {name} now ÷ before | {ratios[0]:.2f} | {ratios[1]:.2f} |")
    table = "\n".join(lines)
    bench.say("\n" + table)
    (bench.OUT / "instructions.md").write_text(table + "\n")
    bench.say(f"\n(in {bench.OUT / 'instructions.md'}; callgrind files in {bench.LOGS})")
    return 0


if __name__ == "__main__":
    try:
        code = main()
    finally:
        bench.stop_all()
    sys.exit(code)
