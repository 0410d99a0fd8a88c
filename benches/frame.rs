//! RFC 6455 codec micro-benchmarks: frame header parse, payload unmasking throughput from 16 B to
//! 64 KiB, frame encode, and the whole zero-copy read path for one masked message.
//!
//! Run with `cargo bench --bench frame`; numbers are recorded in the README.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ringhub::protocol::websocket::frame::encode_frame;
use ringhub::protocol::websocket::mask::apply_mask;
use ringhub::protocol::websocket::{FrameHeader, MessageReader, OpCode, ReadEvent};

const SIZES: [usize; 7] = [16, 125, 1024, 4096, 16 * 1024, 32 * 1024, 64 * 1024];
const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn masked_frame(len: usize) -> Vec<u8> {
    let header = FrameHeader {
        fin: true,
        opcode: OpCode::Binary,
        mask: Some(KEY),
        payload_len: len as u64,
    };
    let mut out = BytesMut::new();
    header.encode(&mut out);
    let mut payload = vec![0xabu8; len];
    apply_mask(&mut payload, KEY, 0);
    out.extend_from_slice(&payload);
    out.to_vec()
}

fn parse_header(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_header/masked");
    for len in [125usize, 126, 65536] {
        let frame = masked_frame(len);
        group.bench_function(
            BenchmarkId::from_parameter(format!("payload_{len}b")),
            |b| b.iter(|| FrameHeader::parse(black_box(&frame[..14]))),
        );
    }
    group.finish();
}

fn unmask(c: &mut Criterion) {
    let mut group = c.benchmark_group("unmask");
    for len in SIZES {
        let mut payload = vec![0x5au8; len];
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(BenchmarkId::from_parameter(format!("{len}b")), |b| {
            b.iter(|| apply_mask(black_box(&mut payload), KEY, 0))
        });
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_frame/server");
    for len in [16usize, 125, 1024, 64 * 1024] {
        let payload = vec![0x5au8; len];
        let mut out = BytesMut::with_capacity(len + 14);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(BenchmarkId::from_parameter(format!("{len}b")), |b| {
            b.iter(|| {
                out.clear();
                encode_frame(OpCode::Binary, black_box(&payload), &mut out);
            })
        });
    }
    group.finish();
}

fn read_message(c: &mut Criterion) {
    let mut group = c.benchmark_group("read_message/masked_binary");
    for len in [16usize, 1024, 64 * 1024] {
        let frame = masked_frame(len);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(BenchmarkId::from_parameter(format!("{len}b")), |b| {
            let mut reader = MessageReader::new(1 << 20);
            b.iter(|| {
                let mut buf = BytesMut::from(&frame[..]);
                match reader.poll(&mut buf) {
                    Ok(ReadEvent::Message(m)) => black_box(m),
                    other => panic!("unexpected {other:?}"),
                };
            })
        });
    }
    group.finish();
}

criterion_group!(benches, parse_header, unmask, encode, read_message);
criterion_main!(benches);
