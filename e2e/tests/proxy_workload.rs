//! The `scylla` driver writes a workload of every kind of statement through a running proxy;
//! afterwards both clusters, read directly (not through the proxy), hold the same rows, the same
//! write times and the same TTLs.
//!
//! The `scylla` driver sends no client-side timestamps, so equal write times show that the proxy
//! gave both clusters one timestamp per write.
//!
//! Run by `e2e/python/test_proxy_clients.py`, which starts the proxy and sets
//! `CQLMIRROR_E2E_PROXY` (the proxy's `host:port`), `CQLMIRROR_E2E_KEYSPACE` (a keyspace name
//! that does not exist yet) and `CQLMIRROR_BED_SOURCE`/`CQLMIRROR_BED_TARGET` (the clusters).
//! By hand: `cargo test -p cqlmirror-e2e --features proxy --test proxy_workload` with those set.

// A failed unwrap is a failed test here, with the error in the panic message.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::env;
use std::ops::ControlFlow;

use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::deserialize::row::DeserializeRow;
use scylla::response::PagingState;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::unprepared::Statement;
use scylla::value::{Counter, CqlValue, Row};

fn var(name: &str) -> String {
    env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: this test runs against a proxy started by \
             e2e/python/test_proxy_clients.py (scripts/test)"
        )
    })
}

async fn connect(addr: &str) -> Session {
    SessionBuilder::new()
        .known_node(addr)
        .build()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"))
}

async fn run(session: &Session, cql: &str) {
    session
        .query_unpaged(cql, ())
        .await
        .unwrap_or_else(|e| panic!("{cql}: {e}"));
}

/// All rows of an unprepared statement, fetched page by page; also returns the page count.
async fn paged<R>(session: &Session, cql: &str, page_size: i32) -> (Vec<R>, usize)
where
    R: for<'f, 'm> DeserializeRow<'f, 'm>,
{
    let statement = Statement::new(cql).with_page_size(page_size);
    let mut state = PagingState::start();
    let mut rows = Vec::new();
    let mut pages = 0;
    loop {
        let (result, response) = session
            .query_single_page(statement.clone(), (), state)
            .await
            .unwrap_or_else(|e| panic!("{cql}: {e}"));
        let result = result.into_rows_result().unwrap();
        let page: Vec<R> = result
            .rows::<R>()
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            page.len() <= usize::try_from(page_size).unwrap(),
            "{cql}: page {} has {} rows",
            pages + 1,
            page.len()
        );
        rows.extend(page);
        pages += 1;
        match response.into_paging_control_flow() {
            ControlFlow::Continue(next) => state = next,
            ControlFlow::Break(()) => break,
        }
    }
    (rows, pages)
}

async fn all<R>(session: &Session, cql: &str) -> Vec<R>
where
    R: for<'f, 'm> DeserializeRow<'f, 'm>,
{
    paged(session, cql, 1000).await.0
}

type Item = (
    Option<String>,
    Option<i32>,
    Option<BTreeSet<String>>,
    Option<Vec<i32>>,
    Option<BTreeMap<String, i32>>,
);

fn item(i: i32) -> Item {
    (
        Some(format!("item{i}")),
        Some(i),
        Some(BTreeSet::from([format!("t{i}"), "all".to_owned()])),
        Some(vec![i]),
        Some(BTreeMap::from([("p".to_owned(), i)])),
    )
}

fn item_literal(i: i32) -> String {
    format!(
        "INSERT INTO items (id, name, qty, tags, history, props) \
         VALUES ({i}, 'item{i}', {i}, {{'t{i}', 'all'}}, [{i}], {{'p': {i}}})"
    )
}

const TABLES: [&str; 5] = [
    "CREATE TABLE items (id int PRIMARY KEY, name text, qty int, tags set<text>, \
     history list<int>, props map<text, int>)",
    "CREATE TABLE tally (id text PRIMARY KEY, n counter)",
    "CREATE TABLE logs (day int, seq int, msg text, PRIMARY KEY (day, seq))",
    "CREATE TABLE tokens (t text PRIMARY KEY, owner text)",
    "CREATE TABLE locks (name text PRIMARY KEY, holder text)",
];

const DAYS: i32 = 3;
const PER_DAY: i32 = 100;
const PAGE: i32 = 30;

/// `[applied]` of a lightweight transaction's result, and the row's other columns.
async fn lwt(session: &Session, cql: &str) -> (bool, Vec<Option<CqlValue>>) {
    let result = session
        .query_unpaged(cql, ())
        .await
        .unwrap_or_else(|e| panic!("{cql}: {e}"));
    let row: Row = result.into_rows_result().unwrap().single_row().unwrap();
    match row.columns.first() {
        Some(Some(CqlValue::Boolean(applied))) => (*applied, row.columns[1..].to_vec()),
        other => panic!("{cql}: first column is {other:?}, not [applied]"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_through_the_proxy_reaches_both_clusters() {
    let proxy = connect(&var("CQLMIRROR_E2E_PROXY")).await;
    let ks = var("CQLMIRROR_E2E_KEYSPACE");

    // DDL and USE.
    run(
        &proxy,
        &format!(
            "CREATE KEYSPACE {ks} WITH replication = \
             {{'class': 'SimpleStrategy', 'replication_factor': 1}}"
        ),
    )
    .await;
    proxy.use_keyspace(&ks, false).await.unwrap();
    for ddl in TABLES {
        run(&proxy, ddl).await;
    }

    let mut items: BTreeMap<i32, Item> = BTreeMap::new();

    // Simple and prepared INSERT, with collections.
    for i in 1..=4 {
        run(&proxy, &item_literal(i)).await;
        items.insert(i, item(i));
    }
    let insert = proxy
        .prepare(
            "INSERT INTO items (id, name, qty, tags, history, props) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .await
        .unwrap();
    for i in 5..=20 {
        let (name, qty, tags, history, props) = item(i);
        proxy
            .execute_unpaged(&insert, (i, name, qty, tags, history, props))
            .await
            .unwrap();
        items.insert(i, item(i));
    }

    // Simple UPDATE with collection operations; prepared UPDATE.
    run(
        &proxy,
        "UPDATE items SET qty = 100, tags = tags + {'hot'}, history = history + [2], \
         props['q'] = 7 WHERE id = 1",
    )
    .await;
    {
        let it = items.get_mut(&1).unwrap();
        it.1 = Some(100);
        it.2.as_mut().unwrap().insert("hot".to_owned());
        it.3.as_mut().unwrap().push(2);
        it.4.as_mut().unwrap().insert("q".to_owned(), 7);
    }
    let set_qty = proxy
        .prepare("UPDATE items SET qty = ? WHERE id = ?")
        .await
        .unwrap();
    for i in 5..=8 {
        proxy.execute_unpaged(&set_qty, (i * 10, i)).await.unwrap();
        items.get_mut(&i).unwrap().1 = Some(i * 10);
    }

    // Simple DELETE of a row and of a column; prepared DELETE.
    run(&proxy, "DELETE FROM items WHERE id = 2").await;
    items.remove(&2);
    run(&proxy, "DELETE name FROM items WHERE id = 3").await;
    items.get_mut(&3).unwrap().0 = None;
    let delete = proxy
        .prepare("DELETE FROM items WHERE id = ?")
        .await
        .unwrap();
    for i in [9, 10] {
        proxy.execute_unpaged(&delete, (i,)).await.unwrap();
        items.remove(&i);
    }

    // Text batches: logged, unlogged.
    run(
        &proxy,
        &format!(
            "BEGIN BATCH {}; UPDATE items SET name = 'renamed11' WHERE id = 11; APPLY BATCH",
            item_literal(21)
        ),
    )
    .await;
    items.insert(21, item(21));
    items.get_mut(&11).unwrap().0 = Some("renamed11".to_owned());
    run(
        &proxy,
        &format!(
            "BEGIN UNLOGGED BATCH {}; {}; APPLY BATCH",
            item_literal(22),
            item_literal(23)
        ),
    )
    .await;
    items.insert(22, item(22));
    items.insert(23, item(23));

    // Driver batches of prepared statements: logged, unlogged.
    let mut logged = Batch::new(BatchType::Logged);
    logged.append_statement(insert.clone());
    logged.append_statement(set_qty.clone());
    let (name, qty, tags, history, props) = item(24);
    proxy
        .batch(&logged, ((24, name, qty, tags, history, props), (1212, 12)))
        .await
        .unwrap();
    items.insert(24, item(24));
    items.get_mut(&12).unwrap().1 = Some(1212);
    let mut unlogged = Batch::new(BatchType::Unlogged);
    unlogged.append_statement(insert.clone());
    unlogged.append_statement(delete.clone());
    let (name, qty, tags, history, props) = item(25);
    proxy
        .batch(&unlogged, ((25, name, qty, tags, history, props), (13,)))
        .await
        .unwrap();
    items.insert(25, item(25));
    items.remove(&13);

    // Counters: simple, prepared, a text counter batch, a driver counter batch.
    for _ in 0..2 {
        run(&proxy, "UPDATE tally SET n = n + 1 WHERE id = 'x'").await;
    }
    let bump = proxy
        .prepare("UPDATE tally SET n = n + ? WHERE id = ?")
        .await
        .unwrap();
    proxy
        .execute_unpaged(&bump, (Counter(5), "y"))
        .await
        .unwrap();
    run(
        &proxy,
        "BEGIN COUNTER BATCH UPDATE tally SET n = n + 10 WHERE id = 'x'; \
         UPDATE tally SET n = n + 1 WHERE id = 'z'; APPLY BATCH",
    )
    .await;
    let mut counter_batch = Batch::new(BatchType::Counter);
    counter_batch.append_statement(bump.clone());
    counter_batch.append_statement(bump.clone());
    proxy
        .batch(&counter_batch, ((Counter(2), "y"), (Counter(3), "z")))
        .await
        .unwrap();
    let tally: BTreeMap<String, i64> = [("x", 12), ("y", 7), ("z", 4)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();

    // TTL, simple and prepared.
    run(
        &proxy,
        "INSERT INTO tokens (t, owner) VALUES ('k1', 'o1') USING TTL 3600",
    )
    .await;
    let insert_token = proxy
        .prepare("INSERT INTO tokens (t, owner) VALUES (?, ?) USING TTL ?")
        .await
        .unwrap();
    proxy
        .execute_unpaged(&insert_token, ("k2", "o2", 7200))
        .await
        .unwrap();

    // Lightweight transactions.
    let (applied, _) = lwt(
        &proxy,
        "INSERT INTO locks (name, holder) VALUES ('l1', 'h1') IF NOT EXISTS",
    )
    .await;
    assert!(applied, "first INSERT IF NOT EXISTS not applied");
    let (applied, existing) = lwt(
        &proxy,
        "INSERT INTO locks (name, holder) VALUES ('l1', 'h2') IF NOT EXISTS",
    )
    .await;
    assert!(!applied, "second INSERT IF NOT EXISTS applied");
    assert!(
        existing.contains(&Some(CqlValue::Text("h1".to_owned()))),
        "not-applied LWT shows {existing:?}"
    );

    // Many rows, then a paged SELECT of all of them.
    let insert_log = proxy
        .prepare("INSERT INTO logs (day, seq, msg) VALUES (?, ?, ?)")
        .await
        .unwrap();
    let mut logs = BTreeSet::new();
    for day in 0..DAYS {
        for seq in 0..PER_DAY {
            let msg = format!("m{day}-{seq}");
            proxy
                .execute_unpaged(&insert_log, (day, seq, &msg))
                .await
                .unwrap();
            logs.insert((day, seq, msg));
        }
    }
    let (rows, pages) =
        paged::<(i32, i32, String)>(&proxy, "SELECT day, seq, msg FROM logs", PAGE).await;
    assert_eq!(rows.len(), logs.len(), "paged SELECT row count");
    assert!(
        pages >= logs.len() / usize::try_from(PAGE).unwrap(),
        "{} rows came in {pages} pages",
        rows.len()
    );
    assert_eq!(rows.into_iter().collect::<BTreeSet<_>>(), logs);

    // What the proxy answers and what the source holds are what was written.
    let items_query = format!("SELECT id, name, qty, tags, history, props FROM {ks}.items");
    let tally_query = format!("SELECT id, n FROM {ks}.tally");
    let source = connect(&var("CQLMIRROR_BED_SOURCE")).await;
    let target = connect(&var("CQLMIRROR_BED_TARGET")).await;
    for (session, what) in [(&proxy, "through the proxy"), (&source, "on the source")] {
        let got: BTreeMap<i32, Item> =
            all::<(i32, Option<String>, Option<i32>, _, _, _)>(session, &items_query)
                .await
                .into_iter()
                .map(|(id, name, qty, tags, history, props)| {
                    (id, (name, qty, tags, history, props))
                })
                .collect();
        assert_eq!(got, items, "items {what}");
        let got: BTreeMap<String, i64> = all::<(String, Counter)>(session, &tally_query)
            .await
            .into_iter()
            .map(|(id, n)| (id, n.0))
            .collect();
        assert_eq!(got, tally, "counters {what}");
    }

    // Both clusters, read directly, hold the same rows in every table.
    let tables_query =
        format!("SELECT table_name FROM system_schema.tables WHERE keyspace_name = '{ks}'");
    let source_tables = all::<(String,)>(&source, &tables_query).await;
    let target_tables = all::<(String,)>(&target, &tables_query).await;
    assert_eq!(source_tables.len(), TABLES.len(), "tables on the source");
    assert_eq!(source_tables, target_tables, "tables on source and target");
    let mut differences = Vec::new();
    for (table,) in &source_tables {
        let query = format!("SELECT JSON * FROM {ks}.{table}");
        let mut src = all::<(String,)>(&source, &query).await;
        let mut tgt = all::<(String,)>(&target, &query).await;
        src.sort();
        tgt.sort();
        if src != tgt {
            let only_src: Vec<_> = src.iter().filter(|r| !tgt.contains(r)).take(3).collect();
            let only_tgt: Vec<_> = tgt.iter().filter(|r| !src.contains(r)).take(3).collect();
            differences.push(format!(
                "{table}: {} rows on the source, {} on the target; only on the source: \
                 {only_src:?}; only on the target: {only_tgt:?}",
                src.len(),
                tgt.len()
            ));
        }
    }

    // The same write times (the driver sent no client timestamps) and TTLs.
    for query in [
        format!("SELECT id, WRITETIME(name) FROM {ks}.items"),
        format!("SELECT id, WRITETIME(qty) FROM {ks}.items"),
        format!("SELECT seq, WRITETIME(msg) FROM {ks}.logs WHERE day = 1"),
    ] {
        let src: BTreeMap<i32, Option<i64>> = all::<(i32, Option<i64>)>(&source, &query)
            .await
            .into_iter()
            .collect();
        let tgt: BTreeMap<i32, Option<i64>> = all::<(i32, Option<i64>)>(&target, &query)
            .await
            .into_iter()
            .collect();
        assert!(!src.is_empty(), "{query}: no rows");
        let differing: Vec<_> = src
            .iter()
            .filter(|(k, v)| tgt.get(k) != Some(v))
            .map(|(k, v)| (k, v, tgt.get(k)))
            .collect();
        if !differing.is_empty() {
            differences.push(format!(
                "{query}: write times differ for {} of {} rows (key, source, target): {:?}",
                differing.len(),
                src.len(),
                &differing[..differing.len().min(5)]
            ));
        }
    }
    let ttl_query = format!("SELECT t, TTL(owner) FROM {ks}.tokens");
    let src = all::<(String, Option<i32>)>(&source, &ttl_query).await;
    let tgt = all::<(String, Option<i32>)>(&target, &ttl_query).await;
    for ((t, s), (t2, g)) in src.iter().zip(&tgt) {
        let (s, g) = (s.unwrap_or(-1), g.unwrap_or(-1));
        if t != t2 || s <= 0 || (s - g).abs() > 10 {
            differences.push(format!(
                "TTL of {t}: {s}s on the source, {g}s on the target ({t2})"
            ));
        }
    }
    assert_eq!(src.len(), 2, "tokens on the source: {src:?}");

    assert!(
        differences.is_empty(),
        "source and target differ:\n  {}",
        differences.join("\n  ")
    );
}
