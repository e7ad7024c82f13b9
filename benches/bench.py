#!/usr/bin/env python3
"""The end-to-end load bench of cqlmirror: what the proxy costs, measured side by side.

Run through `scripts/bench`, which builds the release binaries first. In one run, on this
machine, with the load generator (cqlmirror-load) on the same machine:

  against null backends (cqlmirror-null, a CQL server answering at once with canned results):
    direct            load -> null
    raw relay         load -> cqlmirror-relay (smol, bytes copied both ways) -> null
    proxy-smol        load -> proxy-smol -> two nulls (dual write)
    proxy-tokio       load -> proxy-tokio -> two nulls (dual write)
    ... -> 2 TLS nulls  the same proxies speaking TLS to null backends that speak TLS (the test
                      certificates of runtime/tests/tls): what TLS to the clusters costs
    ..., TLS clients  and with TLS from the load generator to the proxy too (the same proxy
                      process: its plaintext port serves the row above): TLS end to end
  against the two real Cassandra 5.0 clusters of a dedicated test bed:
    direct            load -> source cluster
    proxy-smol        load -> proxy-smol -> source and target clusters

Each row: closed-loop saturation throughput with its latency percentiles, then open-loop at
half of the raw relay's saturation rate (null backends) or half of the lower of the two
saturation rates (Cassandra), latency measured from each request's scheduled time, and the
p50 added versus direct at that rate. CPU time per request of the process in the middle
(relay or proxy) comes from /proc/PID/stat. Memory: peak RSS (VmHWM) of fresh proxy
processes with 1, 100 and 1000 idle client connections (each past its handshake, so each
has its two backend connections) against null backends.

First, in rounds (--rounds, default 5), the rows that the CPU-per-request goals compare: direct,
relay, proxy-smol and proxy-tokio against null backends, the two proxies again in the shadow read
mode (and, with --baseline DIR, the proxies of an earlier build), each at saturation (with
--reads, then with reads only: in the primary read mode the proxy then talks to one cluster, as
the relay does), at half the slower primary-mode proxy's saturation (twice: sending each request
on its own, then coalescing the generator's writes for 200 µs as drivers do) and at 2,000 req/s
in open loop; the rows are interleaved (each round starts one row later), so a neighbour's burst
falls on all of them alike. CPU per request is user + system time of the process in the middle
(for direct: the null backend) from /proc/PID/stat before and after the run, divided by the
answered requests. The ratios of the goals are computed within each round, then their median and
spread reported. --quick (2 short rounds, no other rows) is for iterating.

`scripts/bench --instructions` counts instructions per request under valgrind instead
(benches/instructions.py): the figure that does not move with the machine's load.

Standard library only. Results go to target/bench/ (results.md, results.json, logs/).
"""

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
if not TARGET.is_absolute():
    TARGET = REPO / TARGET
BIN = Path(os.environ.get("CQLMIRROR_BENCH_BIN", TARGET / "release"))
OUT = REPO / "target" / "bench"
LOGS = OUT / "logs"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

started = []  # (name, Popen) of every process this bench started
bed_up = None  # the bed's name, once started


def say(*parts):
    print(*parts, flush=True)


def fail(message):
    say(f"bench: {message}")
    sys.exit(2)


# ---- processes ---------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(name, argv):
    log = open(LOGS / f"{name}.log", "w")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    started.append((name, proc))
    return proc


def wait_port(proc, port, name, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            fail(f"{name} exited with status {proc.returncode}; see {LOGS / (name + '.log')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    fail(f"{name} does not accept connections on port {port} after {timeout:.0f}s")


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    started[:] = [(n, p) for n, p in started if p is not proc]


def stop_all():
    for _, proc in list(started):
        stop(proc)
    global bed_up
    if bed_up:
        say(f"== stopping the test bed '{bed_up}' ==")
        subprocess.run([str(REPO / "scripts" / "testbed"), "--name", bed_up, "down"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        bed_up = None


def cpu_seconds(pid):
    """User plus system CPU time of a process (all threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory(pid):
    """VmHWM and VmRSS of a process, in KiB."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                values[key] = int(rest.split()[0])
    return values["VmHWM"], values["VmRSS"]


# ---- load runs ---------------------------------------------------------------------------

def load(args, address, label, rate=None, middle=None, extra=(), reads=None):
    """One cqlmirror-load run; returns its JSON result with the CPU time that `middle` (a
    process, a list of processes, or None) used during the run, per answered request. The
    CPU time covers the whole run (connections, warm-up, measured window, drain), as does the
    count of answered requests. `reads`: the percentage of reads, if not --reads'."""
    argv = [str(BIN / "cqlmirror-load"), address, "--json", "--label", label,
            "--connections", str(args.connections), "--in-flight", str(args.in_flight),
            "--reads", str(args.reads if reads is None else reads), "--protocol", str(args.protocol),
            "--duration", f"{args.duration}s", "--warmup", f"{args.warmup}s", *extra]
    if rate:
        argv += ["--rate", f"{rate:.0f}"]
    procs = [] if middle is None else middle if isinstance(middle, list) else [middle]
    cpu_before = sum(cpu_seconds(p.pid) for p in procs)
    run = subprocess.run(argv, capture_output=True, text=True)
    cpu = sum(cpu_seconds(p.pid) for p in procs) - cpu_before if procs else None
    safe = label.replace(" ", "_").replace("/", "_").replace(">", "").replace("(", "").replace(")", "")
    safe = safe.replace(",", "")
    kind = ("open" if rate else "closed") + ("" if reads is None else f"-{reads}pc-reads")
    kind += "-coalesced" if "--coalesce" in extra else ""
    (LOGS / f"load-{safe}-{kind}.log").write_text(run.stderr)
    if run.returncode == 2 or not run.stdout.strip():
        say(run.stderr)
        fail(f"cqlmirror-load could not run against {label} ({address})")
    result = json.loads(run.stdout.strip().splitlines()[-1])
    # `answered` counts every answer of the run (warm-up and drain included), as the CPU time does.
    answered = result["answered"]
    result["cpu_us_per_request"] = (cpu * 1e6 / answered) if cpu is not None and answered else None
    lat = result["latency_us"]
    errors = result["errors"]["total"]
    mode = ('open ' + format(rate, '.0f') + ' req/s') if rate else 'closed loop'
    if reads is not None:
        mode += f", {reads}% reads"
    if "--coalesce" in extra:
        mode += ", coalesced"
    say(f"  {label:<40} {mode:>20}: "
        f"{result['throughput']:>9.0f} req/s  p50 {lat['p50']:>8.1f} µs  p99 {lat['p99']:>8.1f} µs"
        + (f"  cpu {result['cpu_us_per_request']:.2f} µs/req" if result["cpu_us_per_request"] else "")
        + (f"   !!! {errors} ERRORS !!!" if errors else ""))
    if errors:
        say("    " + run.stderr.replace("\n", "\n    "))
    return result


def measure(args, rows, rates):
    """Closed loop on every row, then for each `(key, rate_of)` of `rates` open loop at
    `rate_of(closed results)` on every row, stored under `key`."""
    results = {}
    for name, address, middle, *extra in rows:
        results[name] = {"closed": load(args, address, name, middle=middle, extra=sum(extra, []))}
    chosen = {}
    for key, rate_of in rates:
        chosen[key] = rate_of(results)
        for name, address, middle, *extra in rows:
            results[name][key] = load(args, address, name, rate=chosen[key], middle=middle,
                                      extra=sum(extra, []))
    return results, chosen


# ---- CPU per request and the goals' ratios, interleaved in rounds --------------------------

LOW_RATE = 2000  # req/s, open loop: the rate at which per-request wake-ups dominate
# The half-rate run again with the generator coalescing its writes for this long, as drivers do
# (gocql waits 200 µs by default): sending each request on its own wake-up costs the generator
# a whole core at a few hundred thousand requests per second, on a 2-core machine.
COALESCE = "200us"


def median(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def spread(values):
    values = [v for v in values if v is not None]
    return (min(values), max(values)) if values else (None, None)


def rounds(args, rows, proxies):
    """`args.rounds` rounds over `rows` ((name, address, CPU processes)), each row's turn
    rotating from round to round: closed loop on every row, closed loop with reads only, then
    open loop at half of the slower of `proxies`' saturation rate of that round, then open
    loop at LOW_RATE. Returns, per round, {row: {"closed", "reads", "half", "coalesced",
    "low": load result}} and the half rate used ("coalesced": the half rate with the generator
    coalescing its writes for COALESCE)."""
    out = []
    for number in range(args.rounds):
        shift = number % len(rows)
        order = rows[shift:] + rows[:shift]
        say(f"  -- round {number + 1} of {args.rounds} --")
        runs = {name: {} for name, _, _ in rows}
        for name, address, cpu in order:
            runs[name]["closed"] = load(args, address, name, middle=cpu)
        # Reads only: in the primary read mode the proxy talks to one cluster, as the relay does.
        for name, address, cpu in order:
            runs[name]["reads"] = load(args, address, name, middle=cpu, reads=100)
        half = min(runs[p]["closed"]["throughput"] for p in proxies) / 2
        for name, address, cpu in order:
            runs[name]["half"] = load(args, address, name, rate=half, middle=cpu)
        for name, address, cpu in order:
            runs[name]["coalesced"] = load(args, address, name, rate=half, middle=cpu,
                                           extra=("--coalesce", COALESCE))
        for name, address, cpu in order:
            runs[name]["low"] = load(args, address, name, rate=LOW_RATE, middle=cpu)
        out.append({"half_rate": half, "runs": runs})
    return out


def fmt(value, digits=2):
    return "—" if value is None else f"{value:.{digits}f}"


def with_spread(values, digits=2):
    low, high = spread(values)
    if low is None:
        return "—"
    return f"{fmt(median(values), digits)} ({fmt(low, digits)}–{fmt(high, digits)})"


def rounds_table(measured, names, cpu_of):
    """Medians over the rounds, with the lowest and highest in brackets."""
    head = ("| row | CPU of | saturation req/s | CPU µs/req at saturation | saturation req/s, reads only "
            f"| CPU µs/req, reads only | CPU µs/req at {LOW_RATE} req/s | p50 µs at half rate "
            "| p50 added vs direct at half rate | the same, the generator coalescing its writes |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name in names:
        runs = [r["runs"][name] for r in measured]
        def added(key):
            return [r["runs"][name][key]["latency_us"]["p50"] - r["runs"]["direct"][key]["latency_us"]["p50"]
                    for r in measured]
        errors = sum(run[k]["errors"]["total"] for run in runs
                     for k in ("closed", "reads", "half", "coalesced", "low"))
        lines.append(
            f"| {name}{' **ERRORS: ' + str(errors) + '**' if errors else ''} | {cpu_of[name]} "
            f"| {with_spread([r['closed']['throughput'] for r in runs], 0)} "
            f"| {with_spread([r['closed']['cpu_us_per_request'] for r in runs])} "
            f"| {with_spread([r['reads']['throughput'] for r in runs], 0)} "
            f"| {with_spread([r['reads']['cpu_us_per_request'] for r in runs])} "
            f"| {with_spread([r['low']['cpu_us_per_request'] for r in runs])} "
            f"| {with_spread([r['half']['latency_us']['p50'] for r in runs], 1)} "
            f"| {'—' if name == 'direct' else with_spread(added('half'), 1)} "
            f"| {'—' if name == 'direct' else with_spread(added('coalesced'), 1)} |")
    return "\n".join(lines)


def ratios(measured, binaries, memory_report):
    """The goals as ratios, computed in each round from that round's runs (the rows of one round
    ran within seconds of each other), then the median and spread over the rounds."""
    def per_round(f):
        return [f(r["runs"]) for r in measured]

    def cpu(runs, name, key):
        return runs[name][key]["cpu_us_per_request"]

    def div(a, b):
        return a / b if a is not None and b else None

    def added(runs, name, key="half"):
        return runs[name][key]["latency_us"]["p50"] - runs["direct"][key]["latency_us"]["p50"]

    lines = ["| ratio | median (lowest–highest over rounds) | goal |", "|---|---|---|"]
    goals = {}
    for suffix in binaries:
        smol, tokio = f"proxy-smol{suffix}", f"proxy-tokio{suffix}"
        for key, what in (("closed", "at saturation"), ("low", f"at {LOW_RATE} req/s")):
            values = per_round(lambda r: div(cpu(r, smol, key), cpu(r, tokio, key)))
            goals[f"smol/tokio cpu {key}{suffix}"] = median(values)
            lines.append(f"| {smol} CPU/req ÷ {tokio} CPU/req, {what} | {with_spread(values)} | ≤ 1.2 |")
    smol, tokio = "proxy-smol, shadow reads", "proxy-tokio, shadow reads"
    if smol in measured[0]["runs"] and tokio in measured[0]["runs"]:
        for key, what in (("closed", "at saturation"), ("reads", "reads only at saturation"),
                          ("low", f"at {LOW_RATE} req/s")):
            values = per_round(lambda r: div(cpu(r, smol, key), cpu(r, tokio, key)))
            lines.append(f"| {smol} CPU/req ÷ {tokio} CPU/req, {what} | {with_spread(values)} | ≤ 1.2 |")
    for suffix in binaries:
        for binary in ("proxy-smol", "proxy-tokio"):
            name = binary + suffix
            values = per_round(lambda r: div(r[name]["reads"]["throughput"], r["relay"]["reads"]["throughput"]))
            lines.append(f"| {name} throughput ÷ relay's, reads only (to the primary) | {with_spread(values)} "
                         "| ≥ 0.7 |")
            values = per_round(lambda r: div(r[name]["closed"]["throughput"], r["relay"]["closed"]["throughput"]))
            lines.append(f"| {name} throughput ÷ relay's, mixed (writes to both clusters) | {with_spread(values)} "
                         "| — |")
            values = per_round(lambda r: div(cpu(r, name, "reads"), cpu(r, "relay", "reads")))
            lines.append(f"| {name} CPU/req ÷ relay's, reads only at saturation | {with_spread(values)} | — |")
            for key, what in (("closed", "at saturation"), ("low", f"at {LOW_RATE} req/s")):
                values = per_round(lambda r: div(cpu(r, name, key), cpu(r, "relay", key)))
                lines.append(f"| {name} CPU/req ÷ relay's, {what} | {with_spread(values)} | ≤ 2 |")
            values = per_round(lambda r: added(r, name) - added(r, "relay"))
            lines.append(f"| {name} p50 added over direct − relay's, at half the slower proxy's "
                         f"saturation | {with_spread(values, 1)} µs | ≤ 100 µs |")
            values = per_round(lambda r: added(r, name, "coalesced") - added(r, "relay", "coalesced"))
            lines.append(f"| {name} the same, the generator coalescing its writes for {COALESCE} "
                         f"| {with_spread(values, 1)} µs | ≤ 100 µs |")
    if len(binaries) > 1:
        for binary in ("proxy-smol", "proxy-tokio"):
            for key, what in (("closed", "at saturation"), ("low", f"at {LOW_RATE} req/s")):
                values = per_round(lambda r: div(cpu(r, binary, key), cpu(r, binary + binaries[1], key)))
                lines.append(f"| {binary} CPU/req now ÷ {binary}{binaries[1]}, {what} | {with_spread(values)} | < 1 |")
            values = per_round(lambda r: div(r[binary]["closed"]["throughput"],
                                             r[binary + binaries[1]]["closed"]["throughput"]))
            lines.append(f"| {binary} throughput now ÷ {binary}{binaries[1]} | {with_spread(values)} | > 1 |")
    for binary, m in (memory_report or {}).items():
        lines.append(f"| {binary} idle memory per client connection | "
                     f"{m['per_connection_bytes'] / 1024:.1f} KiB | ≤ 8 KiB |")
    return "\n".join(lines)


# ---- idle connections and memory -----------------------------------------------------------

def frame(opcode, body=b"", stream=0):
    return struct.pack(">BBhBI", 0x04, 0, stream, opcode, len(body)) + body


def read_frame(sock):
    """The next frame's stream id and opcode (its body is read and dropped)."""
    def exactly(n):
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise OSError("the connection was closed")
            data += chunk
        return data
    header = exactly(9)
    _, _, stream, opcode, length = struct.unpack(">BBhBI", header)
    exactly(length)
    return stream, opcode


def idle_client(port):
    """A client connection past OPTIONS and STARTUP (protocol v4), left open."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(frame(0x05))  # OPTIONS
    if read_frame(sock)[1] != 0x06:
        raise OSError("OPTIONS was not answered with SUPPORTED")
    key, value = b"CQL_VERSION", b"3.0.0"
    body = struct.pack(">H", 1) + struct.pack(">H", len(key)) + key + struct.pack(">H", len(value)) + value
    sock.sendall(frame(0x01, body))  # STARTUP
    if read_frame(sock)[1] != 0x02:
        raise OSError("STARTUP was not answered with READY")
    return sock


def memory_profile(binary, source_port, target_port, path=None):
    port = free_port()
    name = f"{binary}-memory"
    proc = start(name, [str(path or BIN / binary), f"127.0.0.1:{source_port}", f"127.0.0.1:{target_port}",
                        "--listen-address", "127.0.0.1", "--metrics-port", "0", "--proxy-port", str(port)])
    wait_port(proc, port, name)
    time.sleep(0.5)
    points = {0: memory(proc.pid)}
    clients = []
    for count in (1, 100, 1000):
        while len(clients) < count:
            clients.append(idle_client(port))
        time.sleep(1.0)
        points[count] = memory(proc.pid)
    for sock in clients:
        sock.close()
    stop(proc)
    per_connection = (points[1000][0] - points[1][0]) * 1024 / 999
    say(f"  {binary:<12} VmHWM KiB: start {points[0][0]}, 1 conn {points[1][0]}, "
        f"100 conns {points[100][0]}, 1000 conns {points[1000][0]}: "
        f"{per_connection / 1024:.1f} KiB per client connection (with its two backend connections)")
    return {"points_kib": {str(k): {"hwm": v[0], "rss": v[1]} for k, v in points.items()},
            "per_connection_bytes": per_connection}


# ---- the report ----------------------------------------------------------------------------

def machine():
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) // 1024 // 1024
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(), "memory_gib": mem}


def loadavg():
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


# How each row's proxy serves reads (--read-mode), for the tables' "reads" column.
READ_MODES = {}


def reads_of(name):
    return READ_MODES.get(name, "—")


def table(section, results, baseline, direct, rate):
    head = (f"| {section} | reads | closed loop req/s | vs {baseline} | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs "
            f"| open loop @ {rate:.0f} req/s: p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | p50 added vs direct "
            f"| CPU µs/req (middle) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    base = results[baseline]["closed"]["throughput"]
    direct_p50 = results[direct]["open"]["latency_us"]["p50"]
    for name, row in results.items():
        c, o = row["closed"], row["open"]
        errors = c["errors"]["total"] + o["errors"]["total"]
        cl, ol = c["latency_us"], o["latency_us"]
        added = "—" if name == direct else f"{ol['p50'] - direct_p50:+.1f} µs"
        cpu = o.get("cpu_us_per_request") or c.get("cpu_us_per_request")
        lines.append(
            f"| {name}{' **ERRORS: ' + str(errors) + '**' if errors else ''} | {reads_of(name)} "
            f"| {c['throughput']:.0f} "
            f"| {100 * c['throughput'] / base:.0f}% "
            f"| {cl['p50']:.0f} | {cl['p90']:.0f} | {cl['p99']:.0f} | {cl['p99.9']:.0f} | {cl['max']:.0f} "
            f"| {ol['p50']:.1f} | {ol['p90']:.1f} | {ol['p99']:.1f} | {ol['p99.9']:.1f} | {ol['max']:.0f} "
            f"| {added} | {'%.2f' % cpu if cpu else '—'} |")
    return "\n".join(lines)


def open_table(section, results, key, direct, rate):
    head = (f"| {section}, open loop @ {rate:.0f} req/s | reads | achieved req/s | p50 µs | p90 µs | p99 µs "
            f"| p99.9 µs | max µs | p50 added vs direct | CPU µs/req (middle) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    direct_p50 = results[direct][key]["latency_us"]["p50"]
    for name, row in results.items():
        o = row[key]
        errors = o["errors"]["total"]
        ol = o["latency_us"]
        added = "—" if name == direct else f"{ol['p50'] - direct_p50:+.1f} µs"
        cpu = o.get("cpu_us_per_request")
        lines.append(
            f"| {name}{' **ERRORS: ' + str(errors) + '**' if errors else ''} | {reads_of(name)} "
            f"| {o['throughput']:.0f} "
            f"| {ol['p50']:.1f} | {ol['p90']:.1f} | {ol['p99']:.1f} | {ol['p99.9']:.1f} | {ol['max']:.0f} "
            f"| {added} | {'%.2f' % cpu if cpu else '—'} |")
    return "\n".join(lines)


def memory_table(mem):
    lines = ["| proxy | VmHWM at start | 1 client | 100 clients | 1000 clients | per client connection |",
             "|---|---|---|---|---|---|"]
    for binary, m in mem.items():
        p = m["points_kib"]
        lines.append(f"| {binary} | {p['0']['hwm'] / 1024:.1f} MiB | {p['1']['hwm'] / 1024:.1f} MiB "
                     f"| {p['100']['hwm'] / 1024:.1f} MiB | {p['1000']['hwm'] / 1024:.1f} MiB "
                     f"| {m['per_connection_bytes'] / 1024:.1f} KiB |")
    return "\n".join(lines)


# ---- main ----------------------------------------------------------------------------------

def rounds_report(args, report, round_rows, cpu_of, baseline):
    half = [r["half_rate"] for r in report["rounds"]]
    return "\n".join([
        f"CPU per request, null backends: {args.rounds} rounds, rows interleaved (each round starts one "
        f"row later); medians with the lowest and highest in brackets. Half rate: half the slower "
        f"proxy's saturation in that round ({fmt(median(half), 0)} req/s median). Load average "
        f"{report['load_before']} before, {report['rounds_load']} after the rounds.", "",
        rounds_table(report["rounds"], [n for n, _, _ in round_rows], cpu_of), "",
        ratios(report["rounds"], ["", " (before)"] if baseline else [""], report.get("memory")),
    ])


def finish_rounds(args, report, m, round_rows, cpu_of, baseline):
    report["load_after"] = loadavg()
    text = (f"Machine: {m['nproc']} CPUs ({m['cpu']}), Linux {m['kernel']}; the load generator runs on the "
            f"same machine; no CPU pinning. {args.connections} connections x {args.in_flight} in flight, "
            f"{args.reads}% reads, protocol v{args.protocol}, {args.duration:g}s per run.\n\n"
            + rounds_report(args, report, round_rows, cpu_of, baseline))
    (OUT / "results.md").write_text(text + "\n")
    (OUT / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    say("\n" + text)
    say(f"\n(results in {OUT / 'results.md'} and results.json; logs in {LOGS})")
    failed = sum(run["errors"]["total"] for r in report["rounds"] for row in r["runs"].values()
                 for run in row.values())
    if failed:
        say(f"\n!!! {failed} ERRORS in the runs above: those rows do not measure a working system !!!")
        return 1
    return 0


def main():
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5, help="seconds measured per run (default 5)")
    parser.add_argument("--warmup", type=float, default=1, help="seconds of warm-up per run (default 1)")
    parser.add_argument("--connections", type=int, default=4, help="client connections (default 4)")
    parser.add_argument("--in-flight", type=int, default=64,
                        help="requests in flight per connection (default 64)")
    parser.add_argument("--reads", type=int, default=50, help="percentage of reads (default 50)")
    parser.add_argument("--protocol", type=int, default=4, choices=(3, 4, 5), help="protocol version (default 4)")
    parser.add_argument("--skip-cassandra", action="store_true",
                        help="only the null-backend rows and memory (no test bed)")
    parser.add_argument("--skip-memory", action="store_true", help="no memory measurement")
    parser.add_argument("--cassandra-warmup", type=float, default=15,
                        help="seconds of load through the proxy, reaching both clusters, before the "
                             "Cassandra rows, so that neither JVM is measured cold (default 15)")
    parser.add_argument("--bed-subnet", type=int, default=7, choices=range(8), metavar="N",
                        help="subnet of the bench's own test bed, 127.0.N.x, 0 to 7 (default 7)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds of the CPU-per-request rows (direct, relay, proxy-smol, proxy-tokio, "
                             "both proxies in the shadow read mode), interleaved, for medians and spread "
                             "(default 5)")
    parser.add_argument("--ratios-only", action="store_true",
                        help="only the CPU-per-request rounds, their ratios and memory (no TLS, read-mode "
                             "or Cassandra rows)")
    parser.add_argument("--quick", action="store_true",
                        help="for iterating: --ratios-only, 2 rounds of 2 s runs after 0.5 s of warm-up")
    parser.add_argument("--baseline", type=Path, metavar="DIR",
                        help="a directory with other proxy-smol and proxy-tokio binaries (an earlier build) "
                             "measured in the same rounds as rows 'proxy-smol (before)' and "
                             "'proxy-tokio (before)', with ratios now ÷ before")
    args = parser.parse_args()
    if args.quick:
        args.ratios_only, args.rounds, args.duration, args.warmup = True, 2, 2, 0.5
    if args.ratios_only:
        args.skip_cassandra = True
    if args.baseline:
        for binary in ("proxy-smol", "proxy-tokio"):
            if not (args.baseline / binary).exists():
                fail(f"{args.baseline / binary} is missing (--baseline)")

    for binary in ("cqlmirror-load", "cqlmirror-null", "cqlmirror-relay", "proxy-smol", "proxy-tokio"):
        if not (BIN / binary).exists():
            fail(f"{BIN / binary} is missing: run scripts/bench, which builds it")
    LOGS.mkdir(parents=True, exist_ok=True)
    # 1000 idle clients need 1000 sockets here and 3000 in the proxy (inherited limit).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))

    for label in ("proxy-smol -> 2 nulls", "proxy-tokio -> 2 nulls", "proxy-smol -> 2 TLS nulls",
                  "proxy-tokio -> 2 TLS nulls", "proxy-smol, TLS clients -> 2 TLS nulls",
                  "proxy-tokio, TLS clients -> 2 TLS nulls", "proxy-smol -> source + target"):
        READ_MODES[label] = "primary"
    for label in ("proxy-smol, shadow reads -> 2 nulls", "proxy-smol, shadow reads -> source + target"):
        READ_MODES[label] = "shadow"
    for label in ("proxy-smol, compared reads -> 2 nulls", "proxy-smol, compared reads -> source + target"):
        READ_MODES[label] = "compare"

    m = machine()
    report = {"machine": m, "load_before": loadavg(),
              "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    say(f"== machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB, Linux {m['kernel']}; "
        f"load average {report['load_before']} ==")
    say("   the load generator runs on this machine too; no CPU pinning (2 cores leave nothing to pin)")

    # Null backends, relay and proxies; TLS null backends and proxies that speak TLS to them
    # (the test certificates of runtime/tests/tls, valid for 127.0.0.1).
    null_src, null_tgt, relay_port, smol_port, tokio_port = (free_port() for _ in range(5))
    shadow_port, compare_port, tokio_shadow_port = free_port(), free_port(), free_port()
    src = start("null-source", [str(BIN / "cqlmirror-null"), "--listen", f"127.0.0.1:{null_src}"])
    tgt = start("null-target", [str(BIN / "cqlmirror-null"), "--listen", f"127.0.0.1:{null_tgt}"])
    certs = REPO / "runtime" / "tests" / "tls"
    tls_null = ["--tls-cert", str(certs / "server.pem"), "--tls-key", str(certs / "server.key")]
    tls_src_port, tls_tgt_port = free_port(), free_port()
    tls_src = start("null-source-tls", [str(BIN / "cqlmirror-null"), "--listen",
                                        f"127.0.0.1:{tls_src_port}", *tls_null])
    tls_tgt = start("null-target-tls", [str(BIN / "cqlmirror-null"), "--listen",
                                        f"127.0.0.1:{tls_tgt_port}", *tls_null])
    tls_ca = ["--source-tls-ca", str(certs / "ca.pem"), "--target-tls-ca", str(certs / "ca.pem")]
    relay = start("relay", [str(BIN / "cqlmirror-relay"), f"127.0.0.1:{null_src}",
                            "--listen", f"127.0.0.1:{relay_port}"])
    proxies = {}
    for name, binary, port, mode in (("proxy-smol", "proxy-smol", smol_port, "primary"),
                                     ("proxy-tokio", "proxy-tokio", tokio_port, "primary"),
                                     ("proxy-smol-shadow", "proxy-smol", shadow_port, "shadow"),
                                     ("proxy-tokio-shadow", "proxy-tokio", tokio_shadow_port, "shadow"),
                                     ("proxy-smol-compare", "proxy-smol", compare_port, "compare")):
        proxies[name] = start(name, [str(BIN / binary), f"127.0.0.1:{null_src}", f"127.0.0.1:{null_tgt}",
                                     "--listen-address", "127.0.0.1", "--metrics-port", "0",
                                     "--proxy-port", str(port), "--read-mode", mode])
    # Each TLS proxy serves TLS clients on its port and plaintext clients on a second one.
    tls_clients = ["--proxy-pem-certfile", str(certs / "server.pem"),
                   "--proxy-pem-keyfile", str(certs / "server.key")]
    tls_proxies = {}
    for binary in ("proxy-smol", "proxy-tokio"):
        port, tls_port = free_port(), free_port()
        tls_proxies[binary] = (start(f"{binary}-tls", [str(BIN / binary), f"127.0.0.1:{tls_src_port}",
                                                       f"127.0.0.1:{tls_tgt_port}", "--listen-address",
                                                       "127.0.0.1", "--metrics-port", "0",
                                                       "--proxy-port", str(tls_port),
                                                       "--proxy-plain-port", str(port), *tls_ca,
                                                       *tls_clients]),
                               port, tls_port)
    for proc, port, name in ((tls_src, tls_src_port, "null-source-tls"),
                             (tls_tgt, tls_tgt_port, "null-target-tls"),
                             *((p, port, f"{b}-tls") for b, (p, port, _) in tls_proxies.items()),
                             *((p, port, f"{b}-tls") for b, (p, _, port) in tls_proxies.items())):
        wait_port(proc, port, name)
    load_tls = ["--tls-ca", str(certs / "ca.pem")]
    for proc, port, name in ((src, null_src, "null-source"), (tgt, null_tgt, "null-target"),
                             (relay, relay_port, "relay"), (proxies["proxy-smol"], smol_port, "proxy-smol"),
                             (proxies["proxy-tokio"], tokio_port, "proxy-tokio"),
                             (proxies["proxy-smol-shadow"], shadow_port, "proxy-smol-shadow"),
                             (proxies["proxy-tokio-shadow"], tokio_shadow_port, "proxy-tokio-shadow"),
                             (proxies["proxy-smol-compare"], compare_port, "proxy-smol-compare")):
        wait_port(proc, port, name)

    before = {}
    if args.baseline:
        for binary in ("proxy-smol", "proxy-tokio"):
            port = free_port()
            before[binary] = (start(f"{binary}-before", [str(args.baseline / binary), f"127.0.0.1:{null_src}",
                                                         f"127.0.0.1:{null_tgt}", "--listen-address", "127.0.0.1",
                                                         "--metrics-port", "0", "--proxy-port", str(port)]), port)
            wait_port(before[binary][0], port, f"{binary}-before")
    say(f"\n== CPU per request: {args.rounds} rounds, {args.connections} connections x {args.in_flight} in "
        f"flight, {args.reads}% reads, protocol v{args.protocol}, {args.duration:g}s per run after "
        f"{args.warmup:g}s warm-up; saturation, half the slower proxy's saturation, {LOW_RATE} req/s ==")
    round_rows = [("direct", f"127.0.0.1:{null_src}", src),
                  ("relay", f"127.0.0.1:{relay_port}", relay),
                  ("proxy-smol", f"127.0.0.1:{smol_port}", proxies["proxy-smol"]),
                  ("proxy-tokio", f"127.0.0.1:{tokio_port}", proxies["proxy-tokio"]),
                  ("proxy-smol, shadow reads", f"127.0.0.1:{shadow_port}", proxies["proxy-smol-shadow"]),
                  ("proxy-tokio, shadow reads", f"127.0.0.1:{tokio_shadow_port}", proxies["proxy-tokio-shadow"])]
    cpu_of = {"direct": "null backend", "relay": "relay", "proxy-smol": "proxy", "proxy-tokio": "proxy",
              "proxy-smol, shadow reads": "proxy", "proxy-tokio, shadow reads": "proxy"}
    for binary, (proc, port) in before.items():
        round_rows.append((f"{binary} (before)", f"127.0.0.1:{port}", proc))
        cpu_of[f"{binary} (before)"] = "proxy"
    # The half rate: of the primary-mode proxies (shadowing every read costs more by design).
    report["rounds"] = rounds(args, round_rows, [n for n, _, _ in round_rows
                                                 if n.startswith("proxy") and "shadow" not in n])
    report["rounds_load"] = loadavg()
    if args.ratios_only:
        for proc in (relay, *proxies.values(), *(p for p, _, _ in tls_proxies.values()), tls_src, tls_tgt,
                     *(p for p, _ in before.values())):
            stop(proc)
        if not args.skip_memory:
            say("\n== memory: fresh proxies against the null backends, idle clients past their handshake ==")
            report["memory"] = {b: memory_profile(b, null_src, null_tgt) for b in ("proxy-smol", "proxy-tokio")}
            if args.baseline:
                for b in ("proxy-smol", "proxy-tokio"):
                    report["memory"][f"{b} (before)"] = memory_profile(f"{b}-before", null_src, null_tgt,
                                                                       args.baseline / b)
        stop(src)
        stop(tgt)
        return finish_rounds(args, report, m, round_rows, cpu_of, bool(args.baseline))
    for proc, _ in before.values():
        stop(proc)

    say(f"\n== null backends: {args.connections} connections x {args.in_flight} in flight, "
        f"{args.reads}% reads, protocol v{args.protocol}, {args.duration:g}s per run after {args.warmup:g}s warm-up ==")
    null_rows = [
        ("direct -> null", f"127.0.0.1:{null_src}", None),
        ("raw relay -> null", f"127.0.0.1:{relay_port}", relay),
        ("proxy-smol -> 2 nulls", f"127.0.0.1:{smol_port}", proxies["proxy-smol"]),
        ("proxy-tokio -> 2 nulls", f"127.0.0.1:{tokio_port}", proxies["proxy-tokio"]),
        ("proxy-smol, shadow reads -> 2 nulls", f"127.0.0.1:{shadow_port}", proxies["proxy-smol-shadow"]),
        ("proxy-smol, compared reads -> 2 nulls", f"127.0.0.1:{compare_port}",
         proxies["proxy-smol-compare"]),
        ("proxy-smol -> 2 TLS nulls", f"127.0.0.1:{tls_proxies['proxy-smol'][1]}",
         tls_proxies["proxy-smol"][0]),
        ("proxy-tokio -> 2 TLS nulls", f"127.0.0.1:{tls_proxies['proxy-tokio'][1]}",
         tls_proxies["proxy-tokio"][0]),
        ("proxy-smol, TLS clients -> 2 TLS nulls", f"127.0.0.1:{tls_proxies['proxy-smol'][2]}",
         tls_proxies["proxy-smol"][0], load_tls),
        ("proxy-tokio, TLS clients -> 2 TLS nulls", f"127.0.0.1:{tls_proxies['proxy-tokio'][2]}",
         tls_proxies["proxy-tokio"][0], load_tls),
    ]
    null_results, null_rates = measure(args, null_rows, [
        ("open", lambda r: r["raw relay -> null"]["closed"]["throughput"] / 2),
        ("open_own", lambda r: r["proxy-smol -> 2 nulls"]["closed"]["throughput"] / 2),
    ])
    null_rate = null_rates["open"]
    report["null"] = {"rates": null_rates, "results": null_results, "load": loadavg()}
    stop(relay)
    for proc in proxies.values():
        stop(proc)
    for proc in (*(p for p, _, _ in tls_proxies.values()), tls_src, tls_tgt):
        stop(proc)

    if not args.skip_memory:
        say("\n== memory: fresh proxies against the null backends, idle clients past their handshake ==")
        report["memory"] = {b: memory_profile(b, null_src, null_tgt) for b in ("proxy-smol", "proxy-tokio")}
    stop(src)
    stop(tgt)

    if not args.skip_cassandra:
        global bed_up
        bed = "bench"
        say(f"\n== starting the test bed '{bed}' (subnet {args.bed_subnet}): real Cassandra 5.0 source and target ==")
        up = subprocess.run([str(REPO / "scripts" / "testbed"), "--name", bed, "up", "--subnet",
                             str(args.bed_subnet), "--owner-pid", str(os.getpid())],
                            capture_output=True, text=True)
        bed_up = bed
        (LOGS / "testbed.log").write_text(up.stderr + up.stdout)
        if up.returncode != 0:
            say(up.stderr)
            say("bench: the test bed did not start (see " + str(LOGS / "testbed.log")
                + "); reporting the rows measured so far")
            report["cassandra_error"] = "the test bed did not start"
    if not args.skip_cassandra and "cassandra_error" not in report:
        env = dict(line[len("export "):].split("=", 1) for line in up.stdout.splitlines()
                   if line.startswith("export "))
        source, target = env["CQLMIRROR_BED_SOURCE"], env["CQLMIRROR_BED_TARGET"]
        port = free_port()
        proxy = start("proxy-smol-cassandra", [str(BIN / "proxy-smol"), source, target,
                                               "--listen-address", "127.0.0.1", "--metrics-port", "0", "--proxy-port", str(port)])
        wait_port(proxy, port, "proxy-smol-cassandra")
        # The same proxy in the other read modes, each a process of its own.
        moded = {}
        for mode in ("shadow", "compare"):
            mode_port = free_port()
            moded[mode] = (start(f"proxy-smol-cassandra-{mode}",
                                 [str(BIN / "proxy-smol"), source, target, "--listen-address", "127.0.0.1",
                                  "--metrics-port", "0", "--proxy-port", str(mode_port),
                                  "--read-mode", mode]), mode_port)
            wait_port(moded[mode][0], mode_port, f"proxy-smol-cassandra-{mode}")
        say(f"   source {source}, target {target}; creating the table on both through the proxy, "
            f"then {args.cassandra_warmup:g}s of load through it to warm up both JVMs")
        setup = subprocess.run([str(BIN / "cqlmirror-load"), f"127.0.0.1:{port}", "--setup",
                                "--duration", f"{args.cassandra_warmup}s", "--warmup", "0s",
                                "--connections", str(args.connections), "--reads", str(args.reads)],
                               capture_output=True, text=True)
        if setup.returncode != 0:
            say(setup.stdout + setup.stderr)
            fail("setting up the table through the proxy failed")
        say(f"\n== Cassandra: {args.connections} connections x {args.in_flight} in flight, {args.reads}% reads ==")
        cass_rows = [("direct -> source", source, None),
                     ("proxy-smol -> source + target", f"127.0.0.1:{port}", proxy),
                     ("proxy-smol, shadow reads -> source + target",
                      f"127.0.0.1:{moded['shadow'][1]}", moded["shadow"][0]),
                     ("proxy-smol, compared reads -> source + target",
                      f"127.0.0.1:{moded['compare'][1]}", moded["compare"][0])]
        cass_results, cass_rates = measure(args, cass_rows, [
            ("open", lambda r: min(v["closed"]["throughput"] for v in r.values()) / 2)])
        report["cassandra"] = {"rate": cass_rates["open"], "results": cass_results, "load": loadavg()}
        stop(proxy)
        for proc, _ in moded.values():
            stop(proc)
        stop_all()

    report["load_after"] = loadavg()
    md = [f"Machine: {m['nproc']} CPUs ({m['cpu']}), Linux {m['kernel']}; the load generator runs on the "
          f"same machine; no CPU pinning. Load average {report['load_before']} before, "
          f"{report['load_after']} after. {args.connections} connections x {args.in_flight} in flight, "
          f"{args.reads}% reads, protocol v{args.protocol}, {args.duration:g}s per run.", ""]
    md += [rounds_report(args, report, round_rows, cpu_of, bool(args.baseline)), ""]
    md.append(table("null backends", null_results, "raw relay -> null", "direct -> null", null_rate))
    md += ["", open_table("null backends", null_results, "open_own", "direct -> null", null_rates["open_own"])]
    if "cassandra" in report:
        md += ["", table("Cassandra 5.0 test bed", report["cassandra"]["results"], "direct -> source",
                         "direct -> source", report["cassandra"]["rate"])]
    if "memory" in report:
        md += ["", memory_table(report["memory"])]
    if "cassandra_error" in report:
        md += ["", f"Cassandra rows missing: {report['cassandra_error']}."]
    smol = null_results["proxy-smol -> 2 nulls"]
    relay_tp = null_results["raw relay -> null"]["closed"]["throughput"]
    goals = [
        f"- proxy-smol keeps {100 * smol['closed']['throughput'] / relay_tp:.0f}% of the raw relay's "
        f"throughput (goal: at least 70%)",
        f"- proxy-smol adds {smol['open']['latency_us']['p50'] - null_results['direct -> null']['open']['latency_us']['p50']:.1f} µs "
        f"to p50 at {null_rate:.0f} req/s, half of the raw relay's saturation (goal: under 50 µs)",
        f"- proxy-smol adds {smol['open_own']['latency_us']['p50'] - null_results['direct -> null']['open_own']['latency_us']['p50']:.1f} µs "
        f"to p50 at {null_rates['open_own']:.0f} req/s, half of its own saturation",
    ]
    for binary in ("proxy-smol", "proxy-tokio"):
        plain = null_results[f"{binary} -> 2 nulls"]["closed"]
        tls = null_results[f"{binary} -> 2 TLS nulls"]["closed"]
        everywhere = null_results[f"{binary}, TLS clients -> 2 TLS nulls"]["closed"]
        for what, row in (("to both clusters", tls), ("from clients and to both clusters", everywhere)):
            goals.append(
                f"- {binary} with TLS {what} keeps {100 * row['throughput'] / plain['throughput']:.0f}% "
                f"of its plaintext throughput"
                + (f", {row['cpu_us_per_request']:.2f} against {plain['cpu_us_per_request']:.2f} µs CPU per request"
                   if row.get("cpu_us_per_request") and plain.get("cpu_us_per_request") else ""))
    if "memory" in report:
        goals.append(f"- proxy-smol uses {report['memory']['proxy-smol']['per_connection_bytes'] / 1024:.1f} KiB "
                     f"per idle client connection (goal: under 64 KiB)")
    if "cassandra" in report:
        cass = report["cassandra"]["results"]
        direct_tp = cass["direct -> source"]["closed"]["throughput"]
        for label in ("proxy-smol -> source + target", "proxy-smol, shadow reads -> source + target",
                      "proxy-smol, compared reads -> source + target"):
            goals.append(f"- real Cassandra, {args.reads}% reads, reads {reads_of(label)}: the proxy keeps "
                         f"{100 * cass[label]['closed']['throughput'] / direct_tp:.0f}% of direct throughput")
    md += ["", *goals]
    text = "\n".join(md)
    (OUT / "results.md").write_text(text + "\n")
    (OUT / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    say("\n" + text)
    say(f"\n(results in {OUT / 'results.md'} and results.json; logs in {LOGS})")
    all_results = list(null_results.values()) + list(report.get("cassandra", {}).get("results", {}).values())
    failed = sum(run["errors"]["total"] for r in all_results for run in r.values())
    if failed:
        say(f"\n!!! {failed} ERRORS in the runs above: those rows do not measure a working system !!!")
        return 1
    return 1 if "cassandra_error" in report else 0


if __name__ == "__main__":
    try:
        code = main()
    finally:
        stop_all()
    sys.exit(code)
