// The end-to-end workload of cqlmirror with the Node.js cassandra-driver and its default
// load-balancing policy (token-aware, data-center aware): the proxies are the only contact
// points. It creates a keyspace with NetworkTopologyStrategy, writes prepared rows over many
// partitions and in batches, reads them back with paging, and prints one JSON line: what it
// wrote and read, the nodes the driver knows, and any error.
//
// node workload.js <host:port[,host:port...]> <local-dc> <keyspace> <rows>
//
// With CQLMIRROR_TLS_CA set (a PEM file), it connects with TLS and checks the proxy's
// certificate against that CA and the address connected to; with CQLMIRROR_USERNAME and
// CQLMIRROR_PASSWORD, it logs in.
'use strict';
const fs = require('fs');
const cassandra = require('cassandra-driver');

async function main() {
  const [contacts, dc, ks, rowsArg] = process.argv.slice(2);
  const rows = Number(rowsArg);
  const ca = process.env.CQLMIRROR_TLS_CA;
  const client = new cassandra.Client({
    contactPoints: contacts.split(','),
    localDataCenter: dc,
    ...(ca ? { sslOptions: { ca: [fs.readFileSync(ca)], rejectUnauthorized: true } } : {}),
    ...(process.env.CQLMIRROR_USERNAME
      ? { authProvider: new cassandra.auth.PlainTextAuthProvider(process.env.CQLMIRROR_USERNAME, process.env.CQLMIRROR_PASSWORD) }
      : {}),
  });
  const errors = [];
  let written = 0;
  let read = 0;
  let hosts = [];
  try {
    await client.connect();
    await client.execute(`CREATE KEYSPACE IF NOT EXISTS ${ks} WITH replication = {'class': 'NetworkTopologyStrategy', '${dc}': 2}`);
    await client.execute(`CREATE TABLE IF NOT EXISTS ${ks}.kv (p int, c int, v text, PRIMARY KEY (p, c))`);
    const insert = `INSERT INTO ${ks}.kv (p, c, v) VALUES (?, ?, ?)`;
    for (let start = 0; start < rows; start += 64) {
      const pending = [];
      for (let i = start; i < Math.min(rows, start + 64); i++) {
        pending.push(client.execute(insert, [i % 200, i, `node-${i}`], { prepare: true }));
      }
      await Promise.all(pending);
    }
    written = rows;
    for (let b = 0; b < 10; b++) {
      const queries = [];
      for (let j = 0; j < 10; j++) {
        const i = rows + b * 10 + j;
        queries.push({ query: insert, params: [i % 200, i, `node-${i}`] });
      }
      await client.batch(queries, { prepare: true, logged: true });
      written += 10;
    }
    // Written at LOCAL_ONE with two replicas: a scan right after may miss a row the second
    // replica has not applied yet. Scan again, a few times, until all are seen.
    for (let attempt = 0; attempt < 10; attempt++) {
      read = 0;
      for await (const row of client.stream(`SELECT p, c, v FROM ${ks}.kv`, [], { fetchSize: 100, autoPage: true })) {
        void row;
        read += 1;
      }
      if (read === written) break;
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    hosts = client.hosts.values().map((h) => h.address);
  } catch (e) {
    errors.push(String(e));
  }
  await client.shutdown().catch(() => {});
  console.log(JSON.stringify({ written, read, hosts, errors }));
  process.exit(errors.length === 0 && read === written ? 0 : 1);
}

main();
