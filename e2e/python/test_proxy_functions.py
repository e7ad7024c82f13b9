"""Functions each cluster would evaluate on its own (now(), uuid(), currentTimestamp(), ...):
with --uuid (the default) the proxy evaluates them once and both clusters store the same
values, for simple, prepared (protocol v4 and v5, positional and named), batched and
conditional writes; with --uuid false the clusters' values differ (the check can fail)."""

import struct
import uuid

from cassandra.query import BatchStatement

import rawcql
import workload
from test_proxy_reads import metric

TABLE = (
    "CREATE TABLE {ks}.f (k int PRIMARY KEY, tu timeuuid, tu2 timeuuid, u uuid, ts timestamp, "
    "ts2 timestamp, d date, ti time, n bigint, note text)"
)
COLUMNS = ("tu", "tu2", "u", "ts", "ts2", "d", "ti", "n", "note")


def table_rows(session, ks):
    return {r.k: tuple(getattr(r, c) for c in COLUMNS) for r in session.execute(f"SELECT * FROM {ks}.f")}


def show(label, src_rows, tgt_rows):
    """Prints each row's values on both clusters, for the record."""
    for k in sorted(src_rows):
        for column, s, t in zip(COLUMNS, src_rows[k], tgt_rows.get(k, (None,) * len(COLUMNS))):
            if s is not None or t is not None:
                print(f"{label} k={k} {column}: source={s} target={t} {'same' if s == t else 'DIFFERENT'}")


def create(session, ks):
    session.execute(workload.KEYSPACE_DDL.format(ks=ks))
    session.execute(TABLE.format(ks=ks))


def test_each_function_gets_the_same_value_on_both_clusters(main_bed, start_proxy, connect, keyspace):
    proxy = start_proxy(main_bed)
    v5 = connect(proxy.endpoint, protocol_version=5)
    # lz4: the PREPARED answers the proxy rewrites arrive compressed.
    v4 = connect(proxy.endpoint, protocol_version=4, compression="lz4")
    assert v5.cluster.protocol_version == 5 and v4.cluster.protocol_version == 4
    ks = keyspace
    create(v5, ks)

    # Simple statements: every name of every function, nested calls, two now() in one statement.
    v5.execute(
        f"INSERT INTO {ks}.f (k, tu, tu2, u, ts, ts2, d, ti, note) VALUES (1, now(), currentTimeUUID(), "
        "uuid(), currentTimestamp(), toTimestamp(now()), currentDate(), currentTime(), 'now()')"
    )
    v5.execute(
        f"INSERT INTO {ks}.f (k, tu, tu2, ts, d, ti, n) VALUES (2, now(), NOW(), current_timestamp(), "
        "current_date(), current_time(), toUnixTimestamp(current_timeuuid()))"
    )
    v4.execute(
        f"UPDATE {ks}.f SET tu = system.now(), ts2 = toTimestamp(now()), d = toDate(now()), "
        "ts = currentTimestamp() - 1h, tu2 = minTimeuuid(currentTimestamp()) WHERE k = 3"
    )

    # Prepared, v5 (SKIP_METADATA for results with columns) and v4, positional and named.
    insert = (
        f"INSERT INTO {ks}.f (k, tu, u, ts, ts2, d, ti) VALUES ({{}}, now(), uuid(), currentTimestamp(), "
        "toTimestamp(now()), currentDate(), currentTime())"
    )
    for session, first in ((v5, 10), (v4, 20)):
        positional = session.prepare(insert.format("?"))
        assert [c.name for c in positional.column_metadata] == ["k"], "the client sees its own markers"
        named = session.prepare(insert.format(":k"))
        assert [c.name for c in named.column_metadata] == ["k"]
        for k in (first, first + 1):
            session.execute(positional, (k,))
        session.execute(named, {"k": first + 2})

        # A driver batch: simple and prepared statements.
        batch = BatchStatement()
        batch.add(f"INSERT INTO {ks}.f (k, tu, u) VALUES ({first + 3}, now(), uuid())")
        batch.add(positional, (first + 4,))
        batch.add(f"UPDATE {ks}.f SET tu2 = now() WHERE k = %s", (first + 5,))
        session.execute(batch)

        # Conditional writes, simple and prepared, with functions in the condition.
        applied = session.execute(
            f"INSERT INTO {ks}.f (k, tu, u) VALUES ({first + 6}, now(), uuid()) IF NOT EXISTS"
        ).one()
        assert applied[0] is True
        applied = session.execute(
            f"UPDATE {ks}.f SET ts = currentTimestamp(), tu2 = now() WHERE k = {first + 6} IF tu < now()"
        ).one()
        assert applied[0] is True, "now() in the condition is later than the row's now()"
        lwt = session.prepare(f"UPDATE {ks}.f SET note = 'lwt', ts2 = currentTimestamp() WHERE k = ? IF tu < now()")
        assert session.execute(lwt, (first + 6,)).one()[0] is True

    src, tgt = connect(main_bed.source), connect(main_bed.target)
    src_rows, tgt_rows = table_rows(src, ks), table_rows(tgt, ks)
    show("--uuid true", src_rows, tgt_rows)
    assert src_rows == tgt_rows
    assert len(src_rows) == 3 + 2 * 7
    row = src_rows[1]
    assert all(v is not None for i, v in enumerate(row) if COLUMNS[i] != "n"), row
    assert row[0].version == 1 and row[2].version == 4
    assert src_rows[2][0] != src_rows[2][1], "two now() calls, two values"
    assert src_rows[2][6] is not None and src_rows[2][7] is not None
    for k in (10, 11, 12, 20, 21, 22):
        assert all(src_rows[k][i] is not None for i in (0, 2, 3, 4, 5, 6)), (k, src_rows[k])
    assert src_rows[10][0] != src_rows[11][0], "each execution its own value"
    assert src_rows[16][8] == "lwt" and src_rows[26][8] == "lwt"
    for function in ("now", "uuid", "current_timestamp", "current_date", "current_time"):
        assert metric(proxy, "cqlmirror_generated_values_total", function=function) > 0, function


PREPARE, EXECUTE = 0x09, 0x0A


def raw_v5(sock, opcode, body, stream):
    """Sends one v5 request in a segment; returns its answer (a Frame)."""
    sock.sendall(rawcql.segment(rawcql.envelope(opcode, body, stream=stream, version=5)))
    return rawcql.parse_frame(rawcql.read_segment_payload(sock))


def short_bytes(data):
    return struct.pack(">H", len(data)) + data


def test_a_v5_execute_skipping_result_metadata_by_position_and_by_name(main_bed, start_proxy, connect, keyspace):
    """The Python driver skips result metadata only for statements whose results have columns,
    which writes' have not, and binds names itself: a raw v5 client sends EXECUTE with
    SKIP_METADATA (flag 0x02) and a result metadata id, by position and by name, as other
    drivers do."""
    proxy = start_proxy(main_bed)
    session = connect(proxy.endpoint)
    create(session, keyspace)
    sock = rawcql.handshake((proxy.host, proxy.port), version=5)
    text = f"INSERT INTO {keyspace}.f (k, tu, ts) VALUES (?, now(), currentTimestamp())".encode()
    answer = raw_v5(sock, PREPARE, struct.pack(">I", len(text)) + text + struct.pack(">I", 0), 2)
    assert answer.opcode == rawcql.RESULT, answer.error()
    body = answer.body
    assert struct.unpack(">i", body[:4])[0] == 0x0004, "PREPARED"
    at = 4
    (n,) = struct.unpack(">H", body[at:at + 2])
    prepared_id = body[at + 2:at + 2 + n]
    at += 2 + n
    (n,) = struct.unpack(">H", body[at:at + 2])
    metadata_id = body[at + 2:at + 2 + n]
    at += 2 + n
    _flags, columns = struct.unpack(">ii", body[at:at + 8])
    assert columns == 1, "the client sees its own marker only"
    for k in (1, 2):
        values = struct.pack(">H", 1) + struct.pack(">i", 4) + struct.pack(">i", k)
        params = struct.pack(">HI", 0x0001, 0x01 | 0x02) + values
        answer = raw_v5(sock, EXECUTE, short_bytes(prepared_id) + short_bytes(metadata_id) + params, 3)
        assert answer.opcode == rawcql.RESULT, answer.error()
    # Values by name (flag 0x40), which the Python driver never sends: the proxy adds its own
    # under the names the cluster gave its markers.
    values = struct.pack(">H", 1) + short_bytes(b"k") + struct.pack(">i", 4) + struct.pack(">i", 3)
    params = struct.pack(">HI", 0x0001, 0x01 | 0x02 | 0x40) + values
    answer = raw_v5(sock, EXECUTE, short_bytes(prepared_id) + short_bytes(metadata_id) + params, 4)
    assert answer.opcode == rawcql.RESULT, answer.error()
    sock.close()
    src, tgt = connect(main_bed.source), connect(main_bed.target)
    src_rows, tgt_rows = table_rows(src, keyspace), table_rows(tgt, keyspace)
    show("v5 skip-metadata", src_rows, tgt_rows)
    assert src_rows == tgt_rows
    assert src_rows[1][0] != src_rows[2][0] and src_rows[1][0].version == 1
    assert src_rows[3][0].version == 1 and src_rows[3][3] is not None


def test_with_uuid_false_the_clusters_evaluate_on_their_own(main_bed, start_proxy, connect, keyspace):
    proxy = start_proxy(main_bed, "--uuid", "false")
    session = connect(proxy.endpoint)
    ks = keyspace
    create(session, ks)
    session.execute(
        f"INSERT INTO {ks}.f (k, tu, tu2, u, ts, ts2, d, ti) VALUES (1, now(), currentTimeUUID(), "
        "uuid(), currentTimestamp(), toTimestamp(now()), currentDate(), currentTime())"
    )
    prepared = session.prepare(f"INSERT INTO {ks}.f (k, tu, u, ti) VALUES (?, now(), uuid(), currentTime())")
    session.execute(prepared, (2,))
    src, tgt = connect(main_bed.source), connect(main_bed.target)
    src_rows, tgt_rows = table_rows(src, ks), table_rows(tgt, ks)
    show("--uuid false", src_rows, tgt_rows)
    for k in (1, 2):
        # Time UUIDs carry each node's own id, random UUIDs are random; times of day are in
        # nanoseconds.
        assert src_rows[k][0] != tgt_rows[k][0], k
        assert src_rows[k][2] != tgt_rows[k][2], k
        assert src_rows[k][6] != tgt_rows[k][6], k
        assert isinstance(src_rows[k][0], uuid.UUID)
    assert metric(proxy, "cqlmirror_generated_values_total") == 0
