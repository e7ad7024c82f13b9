"""Workloads sent through a proxy, and the checks that both clusters ended up identical.

`create_schema` + `run_dml` write with every kind of statement a CQL application uses and
return the model of what the keyspace must hold; `check_model` reads a session's view of the
keyspace and compares it with the model; `assert_same_data` reads every table of the keyspace
directly from each cluster (not through the proxy) and compares them; `assert_same_writetimes`
and `assert_same_ttls` compare the write times and TTLs the clusters stored. `Writers` keeps a
few threads writing through one session while a test breaks something.
"""

import collections
import os
import threading
import time

from cassandra.concurrent import execute_concurrent_with_args
from cassandra.query import BatchStatement, BatchType, SimpleStatement

KEYSPACE_DDL = (
    "CREATE KEYSPACE {ks} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}"
)

TABLES = {
    "users": "CREATE TABLE users (id int PRIMARY KEY, name text, email text, age int, "
    "tags set<text>, scores list<int>, attrs map<text, text>)",
    "counters": "CREATE TABLE counters (id text PRIMARY KEY, hits counter, misses counter)",
    "events": "CREATE TABLE events (bucket int, seq int, payload text, PRIMARY KEY (bucket, seq))",
    "sessions": "CREATE TABLE sessions (sid text PRIMARY KEY, user_id int)",
    "accounts": "CREATE TABLE accounts (name text PRIMARY KEY, owner text)",
    "stamps": "CREATE TABLE stamps (id int PRIMARY KEY, v text, n int)",
}

EVENT_BUCKETS = 3
EVENTS_PER_BUCKET = 150
PAGE_SIZE = 40
TTL_SHORT, TTL_LONG = 3600, 7200
# Columns whose write times must be equal on both clusters, per table (key column first).
WRITETIME_COLUMNS = {"users": ("id", "name", "email", "age"), "stamps": ("id", "v", "n")}


def create_schema(session, ks):
    """DDL and USE: the keyspace, then its tables created without a keyspace prefix."""
    session.execute(KEYSPACE_DDL.format(ks=ks))
    session.execute(f"USE {ks}")
    assert session.keyspace == ks
    for ddl in TABLES.values():
        session.execute(ddl)


def user(i):
    return {
        "name": f"user{i}",
        "email": f"user{i}@example.com",
        "age": 20 + i,
        "tags": {f"t{i}", "common"},
        "scores": [i, 10 * i],
        "attrs": {"a": str(i), "b": "x"},
    }


def user_literal(i):
    u = user(i)
    tags = ", ".join(f"'{t}'" for t in sorted(u["tags"]))
    scores = ", ".join(str(s) for s in u["scores"])
    attrs = ", ".join(f"'{k}': '{v}'" for k, v in u["attrs"].items())
    return (
        "INSERT INTO users (id, name, email, age, tags, scores, attrs) VALUES "
        f"({i}, '{u['name']}', '{u['email']}', {u['age']}, {{{tags}}}, [{scores}], {{{attrs}}})"
    )


def user_values(i):
    u = user(i)
    return (i, u["name"], u["email"], u["age"], u["tags"], u["scores"], u["attrs"])


def run_dml(session, ks, lwt=True):
    """Writes through `session` (already USE-ing `ks`) and returns the model of the keyspace."""
    users, counters = {}, {}
    insert_user = session.prepare(
        "INSERT INTO users (id, name, email, age, tags, scores, attrs) VALUES (?, ?, ?, ?, ?, ?, ?)"
    )

    # Simple (unprepared) and prepared INSERT, with collections.
    for i in range(1, 6):
        session.execute(user_literal(i))
        users[i] = user(i)
    for i in range(6, 26):
        session.execute(insert_user, user_values(i))
        users[i] = user(i)

    # Simple UPDATE, collection operations included, and prepared UPDATE.
    session.execute(
        "UPDATE users SET age = 99, tags = tags + {'extra'}, scores = scores + [7], "
        "attrs['c'] = 'added' WHERE id = 1"
    )
    users[1].update(age=99, tags=users[1]["tags"] | {"extra"}, scores=users[1]["scores"] + [7])
    users[1]["attrs"]["c"] = "added"
    session.execute("UPDATE users SET tags = tags - {'common'} WHERE id = 5")
    users[5]["tags"].discard("common")
    update_email = session.prepare("UPDATE users SET email = ? WHERE id = ?")
    for i in range(6, 11):
        session.execute(update_email, (f"new{i}@example.com", i))
        users[i]["email"] = f"new{i}@example.com"

    # Simple DELETE of a row, a column and a map entry; prepared DELETE.
    session.execute("DELETE FROM users WHERE id = 2")
    del users[2]
    session.execute("DELETE email FROM users WHERE id = 3")
    users[3]["email"] = None
    session.execute("DELETE attrs['a'] FROM users WHERE id = 4")
    del users[4]["attrs"]["a"]
    delete_user = session.prepare("DELETE FROM users WHERE id = ?")
    for i in (11, 12):
        session.execute(delete_user, (i,))
        del users[i]

    # Text batches: logged, unlogged, counter.
    session.execute(
        f"BEGIN BATCH {user_literal(30)}; UPDATE users SET name = 'renamed13' WHERE id = 13; "
        "APPLY BATCH"
    )
    users[30] = user(30)
    users[13]["name"] = "renamed13"
    session.execute(f"BEGIN UNLOGGED BATCH {user_literal(31)}; {user_literal(32)}; APPLY BATCH")
    users[31], users[32] = user(31), user(32)

    # Driver batches of prepared statements: logged and unlogged.
    rename = session.prepare("UPDATE users SET name = ? WHERE id = ?")
    logged = BatchStatement(batch_type=BatchType.LOGGED)
    logged.add(insert_user, user_values(33))
    logged.add(insert_user, user_values(34))
    logged.add(rename, ("renamed14", 14))
    session.execute(logged)
    users[33], users[34] = user(33), user(34)
    users[14]["name"] = "renamed14"
    unlogged = BatchStatement(batch_type=BatchType.UNLOGGED)
    unlogged.add(insert_user, user_values(35))
    unlogged.add(delete_user, (15,))
    session.execute(unlogged)
    users[35] = user(35)
    del users[15]

    # Counters: simple and prepared updates, a text counter batch, a driver counter batch.
    for _ in range(3):
        session.execute("UPDATE counters SET hits = hits + 1 WHERE id = 'a'")
    bump = session.prepare("UPDATE counters SET hits = hits + ?, misses = misses + ? WHERE id = ?")
    session.execute(bump, (5, 2, "b"))
    session.execute(
        "BEGIN COUNTER BATCH UPDATE counters SET hits = hits + 10 WHERE id = 'a'; "
        "UPDATE counters SET misses = misses + 1 WHERE id = 'c'; APPLY BATCH"
    )
    counter_batch = BatchStatement(batch_type=BatchType.COUNTER)
    counter_batch.add(bump, (1, 1, "b"))
    counter_batch.add(bump, (2, 0, "d"))
    session.execute(counter_batch)
    counters = {"a": (13, None), "b": (6, 3), "c": (None, 1), "d": (2, 0)}

    # TTL, simple and prepared.
    session.execute(f"INSERT INTO sessions (sid, user_id) VALUES ('s1', 1) USING TTL {TTL_SHORT}")
    insert_session = session.prepare(
        "INSERT INTO sessions (sid, user_id) VALUES (?, ?) USING TTL ?"
    )
    session.execute(insert_session, ("s2", 2, TTL_LONG))
    sessions = {"s1": 1, "s2": 2}

    # Lightweight transactions.
    accounts = {}
    if lwt:
        first = session.execute("INSERT INTO accounts (name, owner) VALUES ('alice', 'a1') IF NOT EXISTS")
        assert first.was_applied, f"first INSERT IF NOT EXISTS not applied: {first.one()}"
        again = session.execute("INSERT INTO accounts (name, owner) VALUES ('alice', 'a2') IF NOT EXISTS")
        assert not again.was_applied, "second INSERT IF NOT EXISTS was applied"
        assert again.one().owner == "a1", f"not-applied LWT shows {again.one()}"
        cas = session.prepare("UPDATE accounts SET owner = ? WHERE name = ? IF owner = ?")
        assert session.execute(cas, ("a3", "alice", "a1")).was_applied
        assert not session.execute(cas, ("a4", "alice", "a1")).was_applied
        accounts = {"alice": "a3"}

    # Many rows, written concurrently, then read back in pages.
    insert_event = session.prepare("INSERT INTO events (bucket, seq, payload) VALUES (?, ?, ?)")
    events = {
        (b, s, f"p{b}-{s}") for b in range(EVENT_BUCKETS) for s in range(EVENTS_PER_BUCKET)
    }
    results = execute_concurrent_with_args(session, insert_event, sorted(events), concurrency=32)
    failed = [r.result_or_exc for r in results if not r.success]
    assert not failed, f"{len(failed)} concurrent INSERTs failed, first: {failed[0]!r}"
    check_paged_select(session, events)

    # Writes without a client-side timestamp: the clusters must still store one write time.
    stamps = write_without_client_timestamps(session, insert_user)
    users[40] = user(40)

    return {
        "users": users,
        "counters": counters,
        "events": events,
        "sessions": sessions,
        "accounts": accounts,
        "stamps": stamps,
    }


def check_paged_select(session, events):
    """A SELECT of more rows than one page: every page is at most the fetch size, and all rows
    come back; a prepared SELECT of one partition comes back in clustering order."""
    statement = SimpleStatement("SELECT bucket, seq, payload FROM events", fetch_size=PAGE_SIZE)
    result = session.execute(statement)
    pages, rows = 0, []
    while True:
        page = list(result.current_rows)
        assert len(page) <= PAGE_SIZE, f"page {pages + 1} has {len(page)} rows"
        rows += page
        pages += 1
        if not result.has_more_pages:
            break
        result.fetch_next_page()
    assert pages >= len(events) // PAGE_SIZE, f"{len(events)} rows came in {pages} pages"
    got = [(r.bucket, r.seq, r.payload) for r in rows]
    assert len(got) == len(events), f"paged SELECT returned {len(got)} rows, expected {len(events)}"
    assert set(got) == events

    one_partition = session.prepare("SELECT seq FROM events WHERE bucket = ?")
    bound = one_partition.bind((1,))
    bound.fetch_size = 25
    seqs = [r.seq for r in session.execute(bound)]
    assert seqs == list(range(EVENTS_PER_BUCKET)), f"partition 1 read back as {seqs[:10]}…"


def write_without_client_timestamps(session, insert_user):
    """Simple, prepared and batched writes sent without a client timestamp."""
    session.use_client_timestamp = False
    try:
        for i in range(1, 4):
            session.execute(f"INSERT INTO stamps (id, v, n) VALUES ({i}, 'v{i}', {i})")
        insert = session.prepare("INSERT INTO stamps (id, v, n) VALUES (?, ?, ?)")
        # Many single writes: two clusters that stamp a write themselves give it the same
        # millisecond now and then, but not for all of these.
        for i in list(range(4, 7)) + list(range(100, 160)):
            session.execute(insert, (i, f"v{i}", i))
        session.execute("UPDATE stamps SET n = 100 WHERE id = 1")
        session.execute(
            "BEGIN BATCH INSERT INTO stamps (id, v, n) VALUES (7, 'v7', 7); "
            "UPDATE stamps SET v = 'batched' WHERE id = 2; APPLY BATCH"
        )
        batch = BatchStatement(batch_type=BatchType.UNLOGGED)
        batch.add(insert, (8, "v8", 8))
        batch.add(insert, (9, "v9", 9))
        session.execute(batch)
        # Users written without a client timestamp too, so their write times are compared.
        session.execute(insert_user, user_values(40))
    finally:
        session.use_client_timestamp = True
    stamps = {i: (f"v{i}", i) for i in list(range(1, 10)) + list(range(100, 160))}
    stamps[1] = ("v1", 100)
    stamps[2] = ("batched", 2)
    return stamps


# --------------------------------------------------------------------------------------------
# Reading and comparing


def _set(value):
    return set(value) if value else set()


def read_model(session, ks):
    """The keyspace as `run_dml`'s model, read through `session` (fully qualified names)."""
    users = {
        r.id: {
            "name": r.name,
            "email": r.email,
            "age": r.age,
            "tags": _set(r.tags),
            "scores": list(r.scores or []),
            "attrs": dict(r.attrs or {}),
        }
        for r in session.execute(f"SELECT id, name, email, age, tags, scores, attrs FROM {ks}.users")
    }
    return {
        "users": users,
        "counters": {
            r.id: (r.hits, r.misses) for r in session.execute(f"SELECT id, hits, misses FROM {ks}.counters")
        },
        "events": {
            (r.bucket, r.seq, r.payload)
            for r in session.execute(f"SELECT bucket, seq, payload FROM {ks}.events")
        },
        "sessions": {r.sid: r.user_id for r in session.execute(f"SELECT sid, user_id FROM {ks}.sessions")},
        "accounts": {r.name: r.owner for r in session.execute(f"SELECT name, owner FROM {ks}.accounts")},
        "stamps": {r.id: (r.v, r.n) for r in session.execute(f"SELECT id, v, n FROM {ks}.stamps")},
    }


def check_model(session, ks, model, where):
    """Asserts that `session` sees exactly `model`."""
    expected = model
    got = read_model(session, ks)
    for table in expected:
        assert got[table] == expected[table], (
            f"{where}: table {ks}.{table} differs from what the workload wrote:\n"
            f"  expected {_describe(expected[table])}\n  got      {_describe(got[table])}"
        )


def _describe(value, limit=12):
    items = sorted(value.items() if isinstance(value, dict) else value, key=repr)
    shown = ", ".join(repr(i) for i in items[:limit])
    return f"{len(items)} rows: {shown}{', …' if len(items) > limit else ''}"


def table_names(session, ks):
    rows = session.execute(
        "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s", (ks,)
    )
    return sorted(r.table_name for r in rows)


def dump(session, ks):
    """Every row of every table of `ks`, as sorted JSON strings per table."""
    return {
        table: sorted(r[0] for r in session.execute(f"SELECT JSON * FROM {ks}.{table}"))
        for table in table_names(session, ks)
    }


def differences(source_dump, target_dump):
    """Human-readable differences between two dumps; empty when they are identical."""
    problems = []
    if sorted(source_dump) != sorted(target_dump):
        problems.append(f"tables: source {sorted(source_dump)}, target {sorted(target_dump)}")
    for table in sorted(set(source_dump) & set(target_dump)):
        src, tgt = source_dump[table], target_dump[table]
        if src != tgt:
            only_src = sorted(set(src) - set(tgt))
            only_tgt = sorted(set(tgt) - set(src))
            problems.append(
                f"table {table}: {len(src)} rows on the source, {len(tgt)} on the target; "
                f"only on the source: {only_src[:5]}; only on the target: {only_tgt[:5]}"
            )
    return problems


def writetimes(session, ks, table, columns):
    key, *values = columns
    selected = ", ".join([key] + [f"WRITETIME({c})" for c in values])
    return {r[0]: tuple(r[1:]) for r in session.execute(f"SELECT {selected} FROM {ks}.{table}")}


def assert_same_data(source_session, target_session, ks):
    """Reads `ks` directly from both clusters: same tables, same rows."""
    src, tgt = dump(source_session, ks), dump(target_session, ks)
    assert any(src.values()), f"the source holds no rows in {ks}: the workload wrote nothing"
    problems = differences(src, tgt)
    assert not problems, "source and target differ:\n  " + "\n  ".join(problems)
    return src


def assert_same_writetimes(source_session, target_session, ks, columns_by_table=None):
    """The write times of the given columns (default: `WRITETIME_COLUMNS`) are equal on both
    clusters, row by row, and plausible (within ten minutes of now)."""
    now_us = time.time() * 1e6
    problems = []
    for table, columns in (columns_by_table or WRITETIME_COLUMNS).items():
        src = writetimes(source_session, ks, table, columns)
        tgt = writetimes(target_session, ks, table, columns)
        assert src, f"no rows in {ks}.{table} to compare write times of"
        for stamps in src.values():
            for ts in stamps:
                assert ts is None or abs(ts - now_us) < 600e6, f"implausible write time {ts}"
        different = {k: (src[k], tgt.get(k)) for k in src if src[k] != tgt.get(k)}
        if different:
            problems.append(
                f"WRITETIME of {', '.join(columns[1:])} in {ks}.{table} differs between the "
                f"clusters for {len(different)} of {len(src)} rows (key: (source, target)): "
                f"{dict(sorted(different.items())[:6])}"
            )
    assert not problems, "\n".join(problems)


def assert_same_ttls(source_session, target_session, ks):
    query = f"SELECT sid, TTL(user_id) FROM {ks}.sessions"
    src = {r[0]: r[1] for r in source_session.execute(query)}
    tgt = {r[0]: r[1] for r in target_session.execute(query)}
    assert sorted(src) == sorted(tgt)
    for token, ttl in src.items():
        full = TTL_SHORT if token == "s1" else TTL_LONG
        assert ttl is not None and full - 120 < ttl <= full, f"TTL of {token} on the source: {ttl}"
        assert tgt[token] is not None and abs(tgt[token] - ttl) <= 10, (
            f"TTL of {token}: {ttl}s on the source, {tgt[token]}s on the target"
        )


# --------------------------------------------------------------------------------------------
# A small workload for the driver-option matrix (protocol versions, compression)


def small_workload(session, ks):
    """DDL, USE, simple/prepared/batched writes, values larger than one v5 segment, a paged
    read; checks what reads through `session` return and returns the expected rows."""
    session.execute(KEYSPACE_DDL.format(ks=ks))
    session.execute(f"USE {ks}")
    session.execute("CREATE TABLE kv (k int PRIMARY KEY, v text, b blob)")
    expected = {}
    session.execute("INSERT INTO kv (k, v) VALUES (0, 'simple')")
    expected[0] = ("simple", None)
    insert = session.prepare("INSERT INTO kv (k, v) VALUES (?, ?)")
    results = execute_concurrent_with_args(session, insert, [(k, f"v{k}") for k in range(1, 61)])
    assert all(r.success for r in results), [r.result_or_exc for r in results if not r.success][:3]
    expected.update({k: (f"v{k}", None) for k in range(1, 61)})
    session.execute("BEGIN BATCH INSERT INTO kv (k, v) VALUES (61, 'b1'); "
                    "UPDATE kv SET v = 'changed' WHERE k = 1; APPLY BATCH")
    expected[61], expected[1] = ("b1", None), ("changed", None)
    batch = BatchStatement()
    batch.add(insert, (62, "b2"))
    batch.add(session.prepare("DELETE FROM kv WHERE k = ?"), (2,))
    session.execute(batch)
    expected[62] = ("b2", None)
    del expected[2]
    # Writes without a client timestamp: the proxy gives both clusters the same one.
    session.use_client_timestamp = False
    try:
        for k in range(200, 230):
            session.execute(insert, (k, f"n{k}"))
            expected[k] = (f"n{k}", None)
        session.execute("UPDATE kv SET v = 'plain' WHERE k = 200")
        expected[200] = ("plain", None)
        session.execute(batch)
    finally:
        session.use_client_timestamp = True
    # Large values: incompressible and compressible, each larger than one v5 segment (128 KiB).
    insert_blob = session.prepare("INSERT INTO kv (k, v, b) VALUES (?, ?, ?)")
    big = {
        100: ("random", os.urandom(300_000)),
        101: ("x" * 400_000, b"\x00" * 200_000),
    }
    for k, (v, b) in big.items():
        session.execute(insert_blob, (k, v, b))
        expected[k] = (v, b)
    for k, (v, b) in big.items():
        row = session.execute("SELECT v, b FROM kv WHERE k = %s", (k,)).one()
        assert row is not None and row.v == v and row.b == b, f"large row {k} read back wrong"
    rows = {
        r.k: (r.v, r.b)
        for r in session.execute(SimpleStatement("SELECT k, v, b FROM kv", fetch_size=25))
    }
    assert rows == expected, (
        f"read back {len(rows)} rows, expected {len(expected)}; keys differ: "
        f"{sorted(set(rows) ^ set(expected))[:10]}; values differ: "
        f"{[k for k in rows if k in expected and rows[k] != expected[k]][:10]}"
    )
    return expected


# One write of `Writers`: `at` is the wall time it started (stored in the row), `started` the
# monotonic time, `seconds` how long it took, `error` why it failed (None when it did not).
Write = collections.namedtuple("Write", "writer n at started seconds error")


class Writers:
    """Threads writing rows `(writer, n, at)` to a `writes` table of a new keyspace through
    one driver session until stopped, each write recorded as a `Write`. One write in
    `literal_every` is a QUERY with literals, the others EXECUTE a prepared statement. A thread
    pauses `pause` seconds between writes and gives up after `max_errors` failures (never when
    None)."""

    def __init__(self, session, keyspace, threads, literal_every, pause=0.0, max_errors=None):
        self.session = session
        self.keyspace = keyspace
        self.literal_every = literal_every
        self.pause = pause
        self.max_errors = max_errors
        session.execute(KEYSPACE_DDL.format(ks=keyspace))
        session.execute(f"USE {keyspace}")
        session.execute("CREATE TABLE writes (writer int, n int, at double, PRIMARY KEY (writer, n))")
        self.insert = session.prepare("INSERT INTO writes (writer, n, at) VALUES (?, ?, ?)")
        self.results = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.loop, args=(w,), daemon=True)
                        for w in range(threads)]

    def write(self, writer, n):
        at, started = time.time(), time.monotonic()
        error = None
        try:
            if n % self.literal_every == self.literal_every - 1:
                self.session.execute(
                    f"INSERT INTO writes (writer, n, at) VALUES ({writer}, {n}, {at!r})")
            else:
                self.session.execute(self.insert, (writer, n, at))
        except Exception as e:  # noqa: BLE001 - every failure is a finding
            error = repr(e)
        with self.lock:
            self.results.append(Write(writer, n, at, started, time.monotonic() - started, error))
        return error

    def loop(self, writer):
        errors = 0
        for n in range(1_000_000):
            if self.stop.is_set() or (self.max_errors is not None and errors >= self.max_errors):
                return
            errors += self.write(writer, n) is not None
            if self.pause:
                time.sleep(self.pause)

    def start(self):
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(60)
        assert not any(t.is_alive() for t in self.threads), \
            "writers still blocked 60s after the workload"

    def errors(self):
        return [r for r in self.results if r.error]
