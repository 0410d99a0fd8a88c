//! SignalR hub protocol micro-benchmarks: decode and encode with the real JSON and MessagePack
//! codecs (`src/protocol/signalr/`), framing (0x1E or VarInt prefix) included.
//!
//! - `decode_invocation/{json,messagepack}/{16,128,1024,32000}b`: one client Invocation
//!   (`Echo` with an invocation id and one ASCII string argument of that many bytes), as
//!   `Session::receive` decodes it; the 32,000 B one still fits the default 32 KiB
//!   `signalr.max_message_size`, which is the window passed to the decoder.
//! - `encode_invocation/…`: writing that decoded message back in its own protocol (relaying
//!   it). Both decoders keep the argument as a slice of the received bytes
//!   (`Payload::MessagePack`, `Payload::Json`), which is copied as is.
//! - `encode_invocation_transcoded/…`: writing it in the other protocol (what
//!   `PreparedMessage::new` pays for the recipients that speak the other one): the argument is
//!   decoded to a `Value` and written in the other encoding (a JSON string without escapes is
//!   written to MessagePack directly).
//! - `decode_completion/…`, `encode_completion/…`: a void Completion and one with a 128 B
//!   string result; `decode_ping/…`, `encode_ping/…`: the keep-alive.
//! - `decode_batch/…/16x_invocation_128b`: one buffer holding 16 invocations (a client that
//!   batches several hub messages in one WebSocket message), decoded message by message the way
//!   the session does (`decode`, then `slice(used..)`).
//!
//! Throughput is in bytes of encoded hub message (framing included).
//!
//! Allocations go through mimalloc, the server's global allocator (`src/main.rs`). Times are
//! on-CPU time: wall time minus the time the thread waited for a CPU (`on_cpu/mod.rs`), so a
//! busy machine slows the numbers less.
//!
//! Run with `cargo bench --bench hub_protocol` (add `-- --warm-up-time 1 --measurement-time 3`
//! for a quicker run); `cargo test --benches` runs each case once. Results are recorded in
//! `perf/results/`.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ringhub::protocol::signalr::{
    Completion, CompletionOutcome, Decoded, Headers, HubMessage, HubProtocol, Invocation, Payload,
};

mod on_cpu;
use on_cpu::OnCpu;

/// The server's allocator, so allocation costs are the ones it pays.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// String argument sizes, in bytes.
const SIZES: [usize; 4] = [16, 128, 1024, 32_000];

/// The decoder's window: the default `signalr.max_message_size` (32 KiB).
const MAX_MESSAGE_SIZE: usize = 32 * 1024;

/// Hub messages in the batched buffer.
const BATCH: usize = 16;

/// An ASCII string of `len` bytes that needs no JSON escaping.
fn text(len: usize) -> String {
    (0..len)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect()
}

/// A client's `Echo(text)` invocation, with a server-built argument.
fn invocation(len: usize) -> HubMessage {
    HubMessage::Invocation(Invocation {
        headers: Headers::new(),
        invocation_id: Some("42".to_owned()),
        target: "Echo".to_owned(),
        arguments: vec![Payload::string(text(len))],
        stream_ids: Vec::new(),
    })
}

fn completion(outcome: CompletionOutcome) -> HubMessage {
    HubMessage::Completion(Completion {
        headers: Headers::new(),
        invocation_id: "42".to_owned(),
        outcome,
    })
}

fn encoded(protocol: HubProtocol, message: &HubMessage) -> Bytes {
    let mut out = BytesMut::new();
    protocol
        .encode(message, &mut out)
        // invariant: every message built here holds server-built values, which always encode.
        .expect("bench messages encode");
    out.freeze()
}

/// Decodes the one message `bytes` holds, checking it used every byte.
fn decoded(protocol: HubProtocol, bytes: &Bytes) -> HubMessage {
    match protocol.decode(bytes, MAX_MESSAGE_SIZE) {
        Ok(Decoded::Message(message, used)) if used == bytes.len() => message,
        other => panic!("{protocol:?} did not decode its own encoding: {other:?}"),
    }
}

fn other(protocol: HubProtocol) -> HubProtocol {
    match protocol {
        HubProtocol::Json => HubProtocol::MessagePack,
        HubProtocol::MessagePack => HubProtocol::Json,
    }
}

/// Benches decoding each `(id, message)` and encoding its decoded form, in both protocols, in
/// the groups `decode_{name}` and `encode_{name}`.
fn decode_and_encode(c: &mut Criterion<OnCpu>, name: &str, cases: &[(String, HubMessage)]) {
    let mut decode = c.benchmark_group(format!("decode_{name}"));
    for protocol in HubProtocol::ALL {
        for (id, message) in cases {
            let bytes = encoded(protocol, message);
            decode.throughput(Throughput::Bytes(bytes.len() as u64));
            decode.bench_function(BenchmarkId::new(protocol.name(), id), |b| {
                b.iter(|| protocol.decode(black_box(&bytes), MAX_MESSAGE_SIZE))
            });
        }
    }
    decode.finish();

    let mut encode = c.benchmark_group(format!("encode_{name}"));
    for protocol in HubProtocol::ALL {
        for (id, message) in cases {
            let bytes = encoded(protocol, message);
            let received = decoded(protocol, &bytes);
            let mut out = BytesMut::with_capacity(bytes.len() * 2);
            encode.throughput(Throughput::Bytes(bytes.len() as u64));
            encode.bench_function(BenchmarkId::new(protocol.name(), id), |b| {
                b.iter(|| {
                    out.clear();
                    protocol.encode(black_box(&received), &mut out)
                })
            });
        }
    }
    encode.finish();
}

fn invocations(c: &mut Criterion<OnCpu>) {
    let cases: Vec<_> = SIZES
        .iter()
        .map(|&len| (format!("{len}b"), invocation(len)))
        .collect();
    decode_and_encode(c, "invocation", &cases);
}

fn transcoding(c: &mut Criterion<OnCpu>) {
    let mut group = c.benchmark_group("encode_invocation_transcoded");
    for protocol in HubProtocol::ALL {
        let from = other(protocol);
        for len in SIZES {
            let received = decoded(from, &encoded(from, &invocation(len)));
            let written = encoded(protocol, &received);
            assert_eq!(written, encoded(protocol, &invocation(len)));
            let mut out = BytesMut::with_capacity(written.len() * 2);
            group.throughput(Throughput::Bytes(written.len() as u64));
            group.bench_function(
                BenchmarkId::new(
                    format!("{}_from_{}", protocol.name(), from.name()),
                    format!("{len}b"),
                ),
                |b| {
                    b.iter(|| {
                        out.clear();
                        protocol.encode(black_box(&received), &mut out)
                    })
                },
            );
        }
    }
    group.finish();
}

fn completions_and_pings(c: &mut Criterion<OnCpu>) {
    let completions = [
        ("void".to_owned(), completion(CompletionOutcome::Void)),
        (
            "result_128b".to_owned(),
            completion(CompletionOutcome::Result(Payload::string(text(128)))),
        ),
    ];
    decode_and_encode(c, "completion", &completions);
    decode_and_encode(c, "ping", &[("ping".to_owned(), HubMessage::Ping)]);
}

fn batches(c: &mut Criterion<OnCpu>) {
    let mut group = c.benchmark_group("decode_batch");
    for protocol in HubProtocol::ALL {
        let mut buffer = BytesMut::new();
        for _ in 0..BATCH {
            buffer.extend_from_slice(&encoded(protocol, &invocation(128)));
        }
        let buffer = buffer.freeze();
        group.throughput(Throughput::Bytes(buffer.len() as u64));
        group.bench_function(
            BenchmarkId::new(protocol.name(), format!("{BATCH}x_invocation_128b")),
            |b| {
                b.iter(|| {
                    let mut data = black_box(&buffer).clone();
                    let mut messages = 0;
                    while !data.is_empty() {
                        match protocol.decode(&data, MAX_MESSAGE_SIZE) {
                            Ok(Decoded::Message(message, used)) => {
                                black_box(message);
                                data = data.slice(used..);
                                messages += 1;
                            }
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                    assert_eq!(messages, BATCH);
                })
            },
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(OnCpu);
    targets = invocations, transcoding, completions_and_pings, batches
}
criterion_main!(benches);
