#!/usr/bin/env python3
"""Clients that send requests and never read the answers: what they cost the proxy.

Run through `scripts/hostile`, which builds the release binaries first. For each proxy binary
(proxy-smol, proxy-tokio), against two null backends (cqlmirror-null answering every SELECT
with large rows, so that answers pile up fast):

  1. a fresh proxy; its resident memory (VmRSS) once idle;
  2. N hostile clients: each completes the handshake, then writes SELECTs as fast as the
     socket takes them and never reads, for --seconds;
  3. meanwhile one well-behaved client sends one request at a time and times each answer;
     the same client is timed against the idle proxy beforehand, as the baseline.

Reported per binary: idle VmRSS, peak VmHWM, peak above idle, and the well-behaved client's
latency (p50, p99, max) with and without the hostile clients. The memory goal (README,
"Limits"): with N = 3, under 64 MiB above idle. Standard library only; figures, not
assertions: this machine is shared and noisy. Logs go to target/bench/logs/.
"""

import argparse
import resource
import socket
import struct
import threading
import time

# The process handling and protocol helpers of the load bench (benches/bench.py).
from bench import (BIN, LOGS, fail, frame, free_port, memory, read_frame, say, start, started, stop,
                   wait_port)


def string_map(pairs):
    out = struct.pack(">H", len(pairs))
    for key, value in pairs:
        out += struct.pack(">H", len(key)) + key + struct.pack(">H", len(value)) + value
    return out


def query(text, stream):
    body = struct.pack(">I", len(text)) + text + struct.pack(">HB", 0x0001, 0)  # ONE, no flags
    return frame(0x07, body, stream)


def handshake(port):
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(frame(0x01, string_map([(b"CQL_VERSION", b"3.0.0")])))
    _, opcode = read_frame(sock)
    if opcode != 0x02:
        raise OSError(f"STARTUP was answered with opcode {opcode:#x}, not READY")
    return sock


SELECT = b"SELECT k, v FROM cqlmirror_bench.kv"


def hostile(port, stop_at, sent):
    """Writes SELECTs until `stop_at` without ever reading; counts the bytes written."""
    sock = handshake(port)
    sock.settimeout(0.2)
    stream = 0
    pending = b""
    try:
        while time.monotonic() < stop_at:
            if not pending:
                pending = b"".join(query(SELECT, (stream + i) % 32768) for i in range(64))
                stream = (stream + 64) % 32768
            try:
                n = sock.send(pending)
                pending = pending[n:]
                sent[0] += n
            except socket.timeout:
                continue
    except OSError:
        pass  # the proxy closed it: also an answer
    return sock


def timed_requests(port, stop_at, latencies):
    """One request at a time until `stop_at`; each answer's latency in milliseconds."""
    sock = handshake(port)
    stream = 1
    while time.monotonic() < stop_at:
        began = time.perf_counter()
        sock.sendall(query(b"INSERT INTO cqlmirror_bench.kv (k, v) VALUES (1, 0x00)", stream))
        got, _ = read_frame(sock)
        if got != stream:
            raise OSError(f"answer to stream {got}, expected {stream}")
        latencies.append((time.perf_counter() - began) * 1000)
        stream = stream % 30000 + 1
        time.sleep(0.005)
    sock.close()


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] if values else float("nan")


def run(binary, args, src, tgt):
    port = free_port()
    proc = start(binary, [str(BIN / binary), f"127.0.0.1:{src}", f"127.0.0.1:{tgt}",
                          "--listen-address", "127.0.0.1", "--metrics-port", "0", "--proxy-port", str(port),
                          "--write-buffer-size", args.write_buffer_size])
    wait_port(proc, port, binary)
    baseline = []
    timed_requests(port, time.monotonic() + 3, baseline)
    time.sleep(0.5)
    _, idle = memory(proc.pid)

    stop_at = time.monotonic() + args.seconds
    sent = [0]
    sockets = []
    threads = [threading.Thread(target=lambda: sockets.append(hostile(port, stop_at, sent)))
               for _ in range(args.clients)]
    for t in threads:
        t.start()
    loaded = []
    timer = threading.Thread(target=timed_requests, args=(port, stop_at, loaded))
    timer.start()
    peak = idle
    while time.monotonic() < stop_at:
        time.sleep(0.2)
        if proc.poll() is not None:
            fail(f"{binary} exited with status {proc.returncode}; see {LOGS / (binary + '.log')}")
        peak = max(peak, memory(proc.pid)[0])
    for t in threads + [timer]:
        t.join()
    peak = max(peak, memory(proc.pid)[0])
    for sock in sockets:
        sock.close()
    stop(proc)
    above = (peak - idle) / 1024
    say(f"  {binary:<12} idle {idle / 1024:6.1f} MiB, peak {peak / 1024:6.1f} MiB: "
        f"{above:6.1f} MiB above idle with {args.clients} non-reading clients "
        f"({sent[0] / 2**20:.0f} MiB of requests written in {args.seconds:g}s)")
    for label, values in (("alone", baseline), ("beside them", loaded)):
        say(f"  {'':<12} well-behaved client {label:<12}: {len(values):5d} requests, "
            f"p50 {percentile(values, 0.5):6.2f} ms, p99 {percentile(values, 0.99):6.2f} ms, "
            f"max {max(values, default=float('nan')):7.2f} ms")
    return above


def main():
    parser = argparse.ArgumentParser(prog="scripts/hostile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=3, help="non-reading clients (default 3)")
    parser.add_argument("--seconds", type=float, default=20, help="how long they write (default 20)")
    parser.add_argument("--rows", type=int, default=100, help="rows per null-backend answer (default 100)")
    parser.add_argument("--value-size", type=int, default=1000,
                        help="bytes per row's value (default 1000)")
    parser.add_argument("--write-buffer-size", default="1MiB",
                        help="the proxies' --write-buffer-size (default 1MiB, the proxy's default)")
    parser.add_argument("--binary", action="append", choices=("proxy-smol", "proxy-tokio"),
                        help="only this binary (repeatable; default both)")
    args = parser.parse_args()
    for binary in ("cqlmirror-null", "proxy-smol", "proxy-tokio"):
        if not (BIN / binary).exists():
            fail(f"{BIN / binary} is missing: run scripts/hostile, which builds it")
    LOGS.mkdir(parents=True, exist_ok=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))

    src, tgt = free_port(), free_port()
    nulls = [start(name, [str(BIN / "cqlmirror-null"), "--listen", f"127.0.0.1:{port}",
                          "--rows", str(args.rows), "--value-size", str(args.value_size)])
             for name, port in (("null-source", src), ("null-target", tgt))]
    for proc, port, name in ((nulls[0], src, "null-source"), (nulls[1], tgt, "null-target")):
        wait_port(proc, port, name)
    say(f"== {args.clients} clients writing SELECTs without reading, answers of "
        f"{args.rows} x {args.value_size} bytes, --write-buffer-size {args.write_buffer_size} ==")
    try:
        for binary in args.binary or ("proxy-smol", "proxy-tokio"):
            run(binary, args, src, tgt)
    finally:
        for _, proc in list(started):
            stop(proc)


if __name__ == "__main__":
    main()
