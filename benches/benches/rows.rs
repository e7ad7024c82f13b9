//! Rows decoding: what the proxy does to a result it compares or rewrites.
//!
//! A RESULT Rows body of `users`-like rows (int, text, bigint, blob, uuid; one text in eight is
//! null) is decoded and every cell of every row is visited, as a comparison would. Two sizes:
//! 100 rows (a typical page of a point query) and 5000 rows (a full default page). Each case is
//! reported in bytes per second of body and in rows per second.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use cqlmirror_core::frame::ProtocolVersion;
use cqlmirror_core::message::{
    Body, ColumnType, Columns, ResultMessage, RowsMetadata, RowsWriter, TableSpec,
};

const ROW_COUNTS: [usize; 2] = [100, 5000];

/// A deterministic RESULT body of `rows` rows.
fn result_body(rows: usize) -> Bytes {
    let metadata = RowsMetadata::new(Columns::in_table(
        TableSpec {
            keyspace: "shop",
            table: "users",
        },
        &[
            ("id", ColumnType::Int),
            ("name", ColumnType::Varchar),
            ("created_at", ColumnType::Bigint),
            ("avatar", ColumnType::Blob),
            ("session", ColumnType::Uuid),
        ],
    ));
    let mut writer = RowsWriter::new(&metadata);
    for i in 0..rows {
        let id = (i as i32).to_be_bytes();
        let name = format!("user-{i:06}-{}", "x".repeat(i % 17));
        let created = (1_700_000_000_000_000i64 + i as i64 * 1_000).to_be_bytes();
        let avatar: Vec<u8> = (0..64 + i % 64).map(|b| (b * 31 + i) as u8).collect();
        let session: [u8; 16] = std::array::from_fn(|b| (b * 7 + i) as u8);
        let name_cell = (i % 8 != 0).then_some(name.as_bytes());
        writer
            .push_row([
                Some(&id[..]),
                name_cell,
                Some(&created[..]),
                Some(&avatar[..]),
                Some(&session[..]),
            ])
            .expect("five cells for five columns");
    }
    writer.finish()
}

/// Decodes the result and visits every cell; returns a checksum so nothing is optimised away.
fn walk(body: &[u8]) -> usize {
    let Ok(ResultMessage::Rows(rows)) = ResultMessage::decode(body, ProtocolVersion::V4) else {
        panic!("the bench body is a Rows result");
    };
    let mut sum = 0usize;
    for row in rows.iter() {
        let row = row.expect("the bench body is well formed");
        for cell in row.cells() {
            sum = sum.wrapping_add(cell.map_or(1, <[u8]>::len));
        }
    }
    sum
}

fn rows_decode(c: &mut Criterion) {
    let bodies: Vec<(usize, Bytes)> = ROW_COUNTS.iter().map(|&n| (n, result_body(n))).collect();
    for (n, body) in &bodies {
        println!("rows/{n}: RESULT body of {} bytes", body.len());
    }

    let mut group = c.benchmark_group("rows_decode_bytes");
    for (n, body) in &bodies {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(n.to_string(), |b| b.iter(|| walk(black_box(body))));
    }
    group.finish();

    let mut group = c.benchmark_group("rows_decode_rows");
    for (n, body) in &bodies {
        group.throughput(Throughput::Elements(*n as u64));
        group.bench_function(n.to_string(), |b| b.iter(|| walk(black_box(body))));
    }
    group.finish();
}

criterion_group!(benches, rows_decode);
criterion_main!(benches);
