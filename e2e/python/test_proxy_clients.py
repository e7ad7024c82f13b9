"""Real clients through the proxy: the Python driver with each protocol version and compression,
cqlsh running a script file, and the Rust `scylla` driver. After each, both clusters read
directly hold the same rows."""

import os
import re
import subprocess

import pytest

import workload
from bed import REPO

DRIVER_OPTIONS = {
    "v4": {"protocol_version": 4, "compression": False},
    "v4-lz4": {"protocol_version": 4, "compression": "lz4"},
    "v5": {"protocol_version": 5, "compression": False},
    "v5-lz4": {"protocol_version": 5, "compression": "lz4"},
    # Snappy exists in v3/v4 only; v3 is the oldest version the proxy speaks.
    "v4-snappy": {"protocol_version": 4, "compression": "snappy"},
    "v3": {"protocol_version": 3, "compression": False},
    # The driver's own negotiation: it starts above v5 and steps down; lz4 is preferred.
    "negotiated": {},
}


def driver_connections(session):
    """Every open connection of a session: the control connection and the pools'."""
    conns = [session.cluster.control_connection._connection]
    conns += [pool._connection for pool in session._pools.values()]
    return [c for c in conns if c is not None]


@pytest.mark.parametrize("options", DRIVER_OPTIONS.values(), ids=DRIVER_OPTIONS.keys())
def test_python_driver(main_bed, start_proxy, connect, keyspace, options):
    proxy = start_proxy(main_bed)
    session = connect(proxy.endpoint, **options)

    version = options.get("protocol_version", 5)
    compression = None if options.get("compression") is False else options.get("compression", "lz4")
    assert session.cluster.protocol_version == version
    conns = driver_connections(session)
    assert len(conns) >= 2, conns
    for conn in conns:
        assert conn.protocol_version == version, conn
        assert conn._compression_type == compression, (conn, conn._compression_type)
        assert (conn.compressor is not None) == (compression is not None), conn

    workload.small_workload(session, keyspace)

    src, tgt = connect(main_bed.source), connect(main_bed.target)
    workload.assert_same_data(src, tgt, keyspace)
    workload.assert_same_writetimes(src, tgt, keyspace, {"kv": ("k", "v")})


CQLSH_SCRIPT = """\
CREATE KEYSPACE {ks} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}};
USE {ks};
CREATE TABLE notes (id int PRIMARY KEY, body text, tags set<text>);
INSERT INTO notes (id, body, tags) VALUES (1, 'first', {{'a'}});
INSERT INTO notes (id, body) VALUES (2, 'second');
UPDATE notes SET body = 'second, edited', tags = {{'b', 'c'}} WHERE id = 2;
BEGIN BATCH
  INSERT INTO notes (id, body) VALUES (3, 'third');
  INSERT INTO notes (id, body) VALUES (4, 'fourth');
APPLY BATCH;
DELETE FROM notes WHERE id = 4;
INSERT INTO notes (id, body) VALUES (5, 'fifth') IF NOT EXISTS;
SELECT id, body, tags FROM notes;
"""


def test_cqlsh_script(main_bed, start_proxy, connect, keyspace, tmp_path):
    proxy = start_proxy(main_bed)
    script = tmp_path / "workload.cql"
    script.write_text(CQLSH_SCRIPT.format(ks=keyspace))
    run = proxy.endpoint.cqlsh(input_file=script)
    assert run.returncode == 0, f"cqlsh exited {run.returncode}\n{run.stdout}\n{run.stderr}"
    assert "rror" not in run.stderr, run.stderr
    assert re.search(r"\[applied\]\s*\n-+\s*\n\s*True", run.stdout), run.stdout
    assert "(4 rows)" in run.stdout and "second, edited" in run.stdout, run.stdout

    src, tgt = connect(main_bed.source), connect(main_bed.target)
    notes = {r.id: (r.body, set(r.tags or ())) for r in src.execute(f"SELECT * FROM {keyspace}.notes")}
    assert notes == {
        1: ("first", {"a"}),
        2: ("second, edited", {"b", "c"}),
        3: ("third", set()),
        5: ("fifth", set()),
    }
    workload.assert_same_data(src, tgt, keyspace)


def test_scylla_driver(main_bed, start_proxy, keyspace):
    """The Rust test e2e/tests/proxy_workload.rs, run against this proxy."""
    proxy = start_proxy(main_bed)
    env = dict(
        os.environ,
        CQLMIRROR_E2E_PROXY=proxy.address,
        CQLMIRROR_E2E_KEYSPACE=keyspace,
        CQLMIRROR_BED_SOURCE=main_bed.source.address,
        CQLMIRROR_BED_TARGET=main_bed.target.address,
        RUST_BACKTRACE="0",  # the panic message is the evidence; a backtrace would bury it
    )
    cmd = ["cargo", "test", "-p", "cqlmirror-e2e", "--features", "proxy", "--locked",
           "--test", "proxy_workload", "--", "--nocapture"]
    run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    output = f"$ {' '.join(cmd)}\n{run.stdout[-8000:]}\n{run.stderr[-8000:]}"
    assert run.returncode == 0, output
    assert re.search(r"test result: ok\. [1-9]\d* passed", run.stdout), output
