//! Proves the test bed is real: the `scylla` driver connects directly to each cluster, writes
//! and reads rows, and sees that the two clusters are independent.

// A failed unwrap is a failed test here, with the error in the panic message.
#![allow(clippy::unwrap_used)]

use std::env;

use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;

/// The `host:port` of a test-bed cluster, as exported by `scripts/test`.
fn bed_address(var: &str) -> String {
    env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: start the clusters with `scripts/testbed up` and run these tests through `scripts/test`")
    })
}

async fn connect(var: &str) -> Session {
    let addr = bed_address(var);
    SessionBuilder::new()
        .known_node(&addr)
        .build()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {addr} ({var}): {e}"))
}

async fn recreate_table(session: &Session) {
    session
        .query_unpaged(
            "CREATE KEYSPACE IF NOT EXISTS smoke_rust WITH replication = \
             {'class': 'SimpleStrategy', 'replication_factor': 1}",
            (),
        )
        .await
        .unwrap();
    session
        .query_unpaged("DROP TABLE IF EXISTS smoke_rust.kv", ())
        .await
        .unwrap();
    session
        .query_unpaged("CREATE TABLE smoke_rust.kv (k int PRIMARY KEY, v text)", ())
        .await
        .unwrap();
}

async fn rows(session: &Session) -> Vec<(i32, String)> {
    let result = session
        .query_unpaged("SELECT k, v FROM smoke_rust.kv", ())
        .await
        .unwrap();
    let mut rows: Vec<(i32, String)> = result
        .into_rows_result()
        .unwrap()
        .rows::<(i32, String)>()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    rows.sort();
    rows
}

async fn cluster_name(session: &Session) -> String {
    let result = session
        .query_unpaged(
            "SELECT cluster_name FROM system.local WHERE key = 'local'",
            (),
        )
        .await
        .unwrap();
    let (name,) = result
        .into_rows_result()
        .unwrap()
        .single_row::<(String,)>()
        .unwrap();
    name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_driver_sees_two_independent_clusters() {
    let source = connect("CQLMIRROR_BED_SOURCE").await;
    let target = connect("CQLMIRROR_BED_TARGET").await;

    assert_eq!(cluster_name(&source).await, "cqlmirror-source");
    assert_eq!(cluster_name(&target).await, "cqlmirror-target");

    recreate_table(&source).await;
    recreate_table(&target).await;

    let insert = "INSERT INTO smoke_rust.kv (k, v) VALUES (?, ?)";
    source
        .query_unpaged(insert, (1, "on source"))
        .await
        .unwrap();
    source.query_unpaged(insert, (3, "on both")).await.unwrap();
    target
        .query_unpaged(insert, (2, "on target"))
        .await
        .unwrap();
    target.query_unpaged(insert, (3, "on both")).await.unwrap();

    assert_eq!(
        rows(&source).await,
        vec![(1, "on source".to_owned()), (3, "on both".to_owned())]
    );
    assert_eq!(
        rows(&target).await,
        vec![(2, "on target".to_owned()), (3, "on both".to_owned())]
    );
}
