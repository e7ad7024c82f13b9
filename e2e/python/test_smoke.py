"""Proves the test bed is real: the Python driver and cqlsh talk directly to each cluster,
write and read rows, and see that the two clusters are independent."""

import os

KEYSPACE_DDL = (
    "CREATE KEYSPACE IF NOT EXISTS smoke_py WITH replication = "
    "{'class': 'SimpleStrategy', 'replication_factor': 1}"
)


def recreate(session):
    session.execute(KEYSPACE_DDL)
    session.execute("DROP TABLE IF EXISTS smoke_py.kv")
    session.execute("CREATE TABLE smoke_py.kv (k int PRIMARY KEY, v text)")


def rows(session):
    return sorted((r.k, r.v) for r in session.execute("SELECT k, v FROM smoke_py.kv"))


def test_driver_sees_two_named_clusters(source, target, connect):
    for endpoint, cluster_side in ((source, "SOURCE"), (target, "TARGET")):
        session = connect(endpoint)
        local = session.execute(
            "SELECT cluster_name, data_center, release_version FROM system.local"
        ).one()
        assert local.cluster_name == os.environ[f"CQLMIRROR_BED_{cluster_side}_CLUSTER"]
        assert local.data_center == endpoint.dc
        assert local.release_version.startswith("5.0.")
        nodes = os.environ[f"CQLMIRROR_BED_{cluster_side}_NODES"].split(",")
        assert len(session.cluster.metadata.all_hosts()) == len(nodes)


def test_driver_writes_stay_on_their_cluster(source, target, connect):
    src, tgt = connect(source), connect(target)
    recreate(src)
    recreate(tgt)
    insert = "INSERT INTO smoke_py.kv (k, v) VALUES (%s, %s)"
    src.execute(insert, (1, "on source"))
    src.execute(insert, (3, "on both"))
    tgt.execute(insert, (2, "on target"))
    tgt.execute(insert, (3, "on both"))
    assert rows(src) == [(1, "on source"), (3, "on both")]
    assert rows(tgt) == [(2, "on target"), (3, "on both")]


def test_cqlsh_script_on_each_cluster(source, target, tmp_path):
    for endpoint, marker in ((source, "written-by-cqlsh-on-source"), (target, "written-by-cqlsh-on-target")):
        script = tmp_path / f"{marker}.cql"
        script.write_text(
            f"{KEYSPACE_DDL};\n"
            "CREATE TABLE IF NOT EXISTS smoke_py.notes (id int PRIMARY KEY, body text);\n"
            "TRUNCATE smoke_py.notes;\n"
            f"INSERT INTO smoke_py.notes (id, body) VALUES (1, '{marker}');\n"
            "SELECT id, body FROM smoke_py.notes;\n"
        )
        run = endpoint.cqlsh(input_file=script)
        assert run.returncode == 0, run.stderr
        assert marker in run.stdout
        assert "(1 rows)" in run.stdout
    # Each cluster holds only its own note.
    src = source.cqlsh("-e", "SELECT body FROM smoke_py.notes")
    tgt = target.cqlsh("-e", "SELECT body FROM smoke_py.notes")
    assert "written-by-cqlsh-on-source" in src.stdout and "on-target" not in src.stdout
    assert "written-by-cqlsh-on-target" in tgt.stdout and "on-source" not in tgt.stdout
