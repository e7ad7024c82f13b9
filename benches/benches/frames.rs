//! Frame-layer throughput: what the proxy does to every frame it forwards.
//!
//! Each case starts from a receive buffer full of encoded frames (copied in by the untimed
//! setup, as a socket read would fill it) and measures splitting it into envelopes plus
//! forwarding each one to a remapped stream id:
//! - v4 (and v4 with lz4 bodies): split, then header bytes + the same body (`Envelope::wire`);
//!   compressed bodies are passed through untouched. Decompressing them is measured apart.
//! - v5 (uncompressed and lz4 segments): decode the segments and re-encode the remapped
//!   envelopes into new segments, since the stream id sits under the payload CRC32.
//!
//! Frames: QUERY of 60 bytes, RESULT of ~64 KiB and ~1 MiB, about 1 MiB (4 MiB for the largest)
//! per buffer. Every case is reported both in bytes per second of the input as it is on the
//! wire (compressed, for lz4 cases: the setup prints the ratios) and in frames per second.
//! Splitting v4 frames costs the same whatever their size, hence the huge byte rates of the
//! large cases: no body byte is touched.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

use cqlmirror_core::frame::{
    Compression, Direction, Envelope, EnvelopeDecoder, Flags, FrameDecoder, FrameEncoder, Header,
    Opcode, ProtocolVersion, SegmentFormat, SegmentWriter, StreamId,
};

/// Upper bound of the frame limit in these benches.
const MAX_FRAME: usize = 16 << 20;

/// A workload: one receive buffer's worth of frames.
struct Case {
    name: &'static str,
    envelopes: Vec<Envelope>,
}

fn header(version: ProtocolVersion, direction: Direction, opcode: Opcode, stream: i16) -> Header {
    Header {
        version,
        direction,
        flags: Flags::empty(),
        stream: StreamId(stream),
        opcode,
        length: 0,
    }
}

/// A 51-byte QUERY body: `[long string]` query, consistency, flags, padding to 60 bytes on the
/// wire.
fn query_body() -> Bytes {
    let query = b"INSERT INTO ks.tbl (k, v) VALUES (42, 'abc')";
    let mut body = Vec::with_capacity(51);
    body.extend_from_slice(&(query.len() as i32).to_be_bytes());
    body.extend_from_slice(query);
    body.extend_from_slice(&[0x00, 0x01, 0x00]);
    assert_eq!(body.len() + 9, 60);
    Bytes::from(body)
}

/// A RESULT-like body of `len` bytes: rows of text and numbers, compressible about as well as
/// real rows are.
fn rows_body(len: usize) -> Bytes {
    let mut body = Vec::with_capacity(len + 64);
    let mut i = 0u64;
    while body.len() < len {
        let row = format!(
            "row-{i:08}|user{:05}@example.com|{:>10}|",
            (i * 7919) % 100_000,
            (i * 2_654_435_761) % 1_000_000_007
        );
        body.extend_from_slice(&(row.len() as i32).to_be_bytes());
        body.extend_from_slice(row.as_bytes());
        i += 1;
    }
    body.truncate(len);
    Bytes::from(body)
}

fn cases(version: ProtocolVersion) -> Vec<Case> {
    let query = query_body();
    let small: Vec<Envelope> = (0..(1 << 20) / 60)
        .map(|i| {
            Envelope::new(
                header(
                    version,
                    Direction::Request,
                    Opcode::QUERY,
                    (i % 32_768) as i16,
                ),
                query.clone(),
            )
        })
        .collect();
    let rows_64k = rows_body(64 * 1024);
    let medium: Vec<Envelope> = (0..16)
        .map(|i| {
            Envelope::new(
                header(version, Direction::Response, Opcode::RESULT, i),
                rows_64k.clone(),
            )
        })
        .collect();
    let rows_1m = rows_body(1 << 20);
    let large: Vec<Envelope> = (0..4)
        .map(|i| {
            Envelope::new(
                header(version, Direction::Response, Opcode::RESULT, i),
                rows_1m.clone(),
            )
        })
        .collect();
    vec![
        Case {
            name: "query_60B",
            envelopes: small,
        },
        Case {
            name: "result_64KiB",
            envelopes: medium,
        },
        Case {
            name: "result_1MiB",
            envelopes: large,
        },
    ]
}

/// The per-upstream stream id table a session keeps: a lookup, as in the proxy.
fn remap_table() -> Vec<StreamId> {
    (0..32_768u32)
        .map(|i| StreamId(((i * 7 + 3) % 32_768) as i16))
        .collect()
}

fn remap(table: &[StreamId], stream: StreamId) -> StreamId {
    table
        .get(usize::from(stream.0 as u16 & 0x7fff))
        .copied()
        .unwrap_or(stream)
}

fn throughputs(wire_len: usize, frames: usize) -> [(&'static str, Throughput); 2] {
    [
        ("bytes", Throughput::Bytes(wire_len as u64)),
        ("frames", Throughput::Elements(frames as u64)),
    ]
}

/// v4: split and forward as header + shared body. `compression` compresses every body first
/// (the pass-through case); `dual` forwards every frame to two upstreams, as a mirrored write
/// is (two headers, one body).
fn v4_forward(c: &mut Criterion, compression: Option<Compression>, dual: bool) {
    let label = match (compression, dual) {
        (None, false) => "v4_plain",
        (None, true) => "v4_plain_dual",
        (Some(_), _) => "v4_lz4_passthrough",
    };
    let table = remap_table();
    for case in cases(ProtocolVersion::V4) {
        let envelopes: Vec<Envelope> = match compression {
            None => case.envelopes,
            Some(c) => case.envelopes.iter().map(|e| e.compressed(c)).collect(),
        };
        let mut wire = BytesMut::new();
        FrameEncoder::new().encode_all(&envelopes, &mut wire);
        for (unit, throughput) in throughputs(wire.len(), envelopes.len()) {
            let mut group = c.benchmark_group(format!("{label}/{unit}"));
            group.throughput(throughput);
            group.bench_function(case.name, |b| {
                b.iter_batched(
                    || BytesMut::from(&wire[..]),
                    |mut buf| {
                        let mut decoder = FrameDecoder::new(EnvelopeDecoder::new(MAX_FRAME));
                        while let Some(envelope) = decoder.decode(&mut buf).expect("valid frames") {
                            let stream = remap(&table, envelope.stream());
                            if dual {
                                let other = StreamId(stream.0 ^ 0x0100);
                                black_box(envelope.wire().with_stream(other));
                            }
                            black_box(envelope.into_wire().with_stream(stream));
                        }
                    },
                    BatchSize::LargeInput,
                );
            });
            group.finish();
        }
    }
}

/// v4 lz4: what reading a compressed body costs (throughput in uncompressed bytes).
fn v4_decompress(c: &mut Criterion) {
    for case in cases(ProtocolVersion::V4) {
        let packed: Vec<Envelope> = case
            .envelopes
            .iter()
            .map(|e| e.compressed(Compression::Lz4))
            .collect();
        let plain_len: usize = case.envelopes.iter().map(|e| e.body().len()).sum();
        let wire_len: usize = packed.iter().map(Envelope::encoded_len).sum();
        eprintln!(
            "v4 lz4 {}: {} bytes of bodies on the wire as {} ({:.1}x)",
            case.name,
            plain_len,
            wire_len,
            plain_len as f64 / wire_len as f64
        );
        for (unit, throughput) in throughputs(plain_len, packed.len()) {
            let mut group = c.benchmark_group(format!("v4_lz4_decompress/{unit}"));
            group.throughput(throughput);
            group.bench_function(case.name, |b| {
                b.iter(|| {
                    for envelope in &packed {
                        black_box(
                            envelope
                                .decompressed(Some(Compression::Lz4), MAX_FRAME)
                                .expect("valid body"),
                        );
                    }
                });
            });
            group.finish();
        }
    }
}

/// v5: decode segments, remap, re-encode into segments.
fn v5_reencode(c: &mut Criterion, format: SegmentFormat) {
    let label = match format {
        SegmentFormat::Uncompressed => "v5_segments",
        SegmentFormat::Lz4 => "v5_lz4_segments",
    };
    let table = remap_table();
    for case in cases(ProtocolVersion::V5) {
        let mut wire = BytesMut::new();
        SegmentWriter::new(format).write_all(&case.envelopes, &mut wire);
        let frames = case.envelopes.len();
        let plain_len: usize = case.envelopes.iter().map(Envelope::encoded_len).sum();
        eprintln!(
            "{label} {}: {plain_len} bytes of envelopes on the wire as {} bytes of segments",
            case.name,
            wire.len()
        );
        let mut out = BytesMut::with_capacity(wire.len() * 2);
        let mut batch: Vec<Envelope> = Vec::with_capacity(frames);
        for (unit, throughput) in throughputs(wire.len(), frames) {
            let mut group = c.benchmark_group(format!("{label}/{unit}"));
            group.throughput(throughput);
            group.bench_function(case.name, |b| {
                b.iter_batched(
                    || BytesMut::from(&wire[..]),
                    |mut buf| {
                        let mut decoder = FrameDecoder::new(EnvelopeDecoder::new(MAX_FRAME));
                        decoder.switch_to_segments(format);
                        let mut encoder = FrameEncoder::new();
                        encoder.switch_to_segments(format);
                        while let Some(envelope) = decoder.decode(&mut buf).expect("valid frames") {
                            let stream = remap(&table, envelope.stream());
                            batch.push(envelope.with_stream(stream));
                        }
                        out.clear();
                        encoder.encode_all(&batch, &mut out);
                        batch.clear();
                        black_box(&out);
                    },
                    BatchSize::LargeInput,
                );
            });
            group.finish();
        }
    }
}

fn frames(c: &mut Criterion) {
    v4_forward(c, None, false);
    v4_forward(c, None, true);
    v4_forward(c, Some(Compression::Lz4), false);
    v4_decompress(c);
    v5_reencode(c, SegmentFormat::Uncompressed);
    v5_reencode(c, SegmentFormat::Lz4);
}

criterion_group!(benches, frames);
criterion_main!(benches);
