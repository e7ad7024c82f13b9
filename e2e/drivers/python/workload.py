"""The end-to-end workload of cqlmirror with the Python cassandra-driver and its default
load-balancing policy (token-aware over data-center-aware round robin): the proxies are the only
contact points. It creates a keyspace with NetworkTopologyStrategy, writes prepared rows over
many partitions and in batches, reads them back with paging, and prints one JSON line: what it
wrote and read, the nodes the driver knows, and any error.

    python workload.py <host:port[,host:port...]> <local-dc> <keyspace> <rows> [--pace SECONDS]

With --pace, it waits that long between groups of 64 writes, so that it runs long enough for a
test to stop a node or a proxy meanwhile.
"""

import json
import sys
import time

from cassandra.cluster import Cluster
from cassandra.query import BatchStatement, BatchType, SimpleStatement


def main():
    contacts, dc, ks, rows = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    pace = float(sys.argv[sys.argv.index("--pace") + 1]) if "--pace" in sys.argv else 0.0
    points = [c.rsplit(":", 1) for c in contacts.split(",")]
    port = int(points[0][1])
    errors, written, read, hosts = [], 0, 0, []
    cluster = Cluster([h for h, _ in points], port=port, protocol_version=4, connect_timeout=15)
    try:
        session = cluster.connect()
        session.default_timeout = 30
        session.execute(f"CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = "
                        f"{{'class': 'NetworkTopologyStrategy', '{dc}': 2}}")
        session.execute(f"CREATE TABLE IF NOT EXISTS {ks}.kv (p int, c int, v text, PRIMARY KEY (p, c))")
        insert = session.prepare(f"INSERT INTO {ks}.kv (p, c, v) VALUES (?, ?, ?)")
        for start in range(0, rows, 64):
            futures = [session.execute_async(insert, (i % 200, i, f"python-{i}"))
                       for i in range(start, min(rows, start + 64))]
            for f in futures:
                f.result()
            if pace:
                time.sleep(pace)
        written = rows
        for b in range(10):
            batch = BatchStatement(batch_type=BatchType.LOGGED)
            for j in range(10):
                i = rows + b * 10 + j
                batch.add(insert, (i % 200, i, f"python-{i}"))
            session.execute(batch)
            written += 10
        # Written at LOCAL_ONE with two replicas: a scan right after may miss a row the
        # second replica has not applied yet. Scan again, a few times, until all are seen.
        for _ in range(10):
            read = sum(1 for _ in session.execute(
                SimpleStatement(f"SELECT p, c, v FROM {ks}.kv", fetch_size=100)))
            if read == written:
                break
            time.sleep(0.5)
        hosts = sorted(f"{h.endpoint.address}:{h.endpoint.port}" for h in cluster.metadata.all_hosts())
    except Exception as e:  # noqa: BLE001 - every failure is reported
        errors.append(repr(e))
    finally:
        cluster.shutdown()
    print(json.dumps({"written": written, "read": read, "hosts": hosts, "errors": errors}))
    sys.exit(0 if not errors and read == written else 1)


if __name__ == "__main__":
    main()
