//! Encode-once fan-out: the cost of delivering one event with a 1 KiB string argument
//! (`Send("…")`, 1,024 ASCII bytes) to N in-memory recipients, N ∈ {100, 1,000, 10,000}, half of
//! them speaking JSON and half MessagePack. Throughput is in deliveries, so criterion's
//! elements/s is deliveries per second and per-delivery time is the median over N.
//!
//! Group `fanout_1kib`, three variants per N:
//! - `encode_once`: the shard's path. `hub::endpoint::prepare` encodes the message once per
//!   protocol, WebSocket frame header included, into a `PreparedMessage` behind an `Arc`;
//!   `SessionSlot::deliver` queues that `Arc` in each session's mailbox (`Session::enqueue`),
//!   and at the connection's next wake the session's
//!   `drain_mailbox` pushes `PreparedMessage::frame(protocol)` (a `Bytes` clone: a reference
//!   count bump, no copy) into the connection's `Outbox` with `Outbox::push_encoded`. The bench
//!   reproduces those steps with the real `PreparedMessage` and `Outbox` and a plain `VecDeque`
//!   as the mailbox; waking each connection and the session's own checks (conflation tag,
//!   mailbox budget, stateful-reconnect buffer) are left out.
//! - `encode_once_direct`: the same without the mailbox hop (frame clone straight into the
//!   outbox), to show what the hop costs.
//! - `encode_per_recipient`: the naive baseline. Every recipient encodes the message in its own
//!   protocol (`HubProtocol::encode`) and queues it as a frame (`Outbox::push_frame`).
//!
//! Every iteration delivers to a fresh set of N recipients, built (untimed) before the batch of
//! iterations it belongs to. Each outbox holds one queued chunk before the timed part, as a
//! live connection's queue has its buffer allocated already. Dropping the queued bytes (done by `Outbox::flush` in the
//! server) is outside the timed part for all three variants; so is the socket write.
//!
//! Allocations go through mimalloc, the server's global allocator (`src/main.rs`). Times are
//! on-CPU time: wall time minus the time the thread waited for a CPU (`on_cpu/mod.rs`), so a
//! busy machine slows the numbers less.
//!
//! Run with `cargo bench --bench fanout` (add `-- --warm-up-time 1 --measurement-time 3` for a
//! quicker run); `cargo test --benches` runs each case once. Results are recorded in
//! `perf/results/`.

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ringhub::hub::actions::event;
use ringhub::hub::broadcast::PreparedMessage;
use ringhub::protocol::signalr::{HubMessage, HubProtocol, Payload};
use ringhub::transport::outbox::Outbox;

mod on_cpu;
use on_cpu::OnCpu;

/// The server's allocator, so allocation costs are the ones it pays.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Recipient counts.
const RECIPIENTS: [usize; 3] = [100, 1_000, 10_000];

/// The string argument's size.
const ARGUMENT: usize = 1024;

/// One connection on the shard, as far as a delivery is concerned.
struct Recipient {
    protocol: HubProtocol,
    /// The session's mailbox (`Session::mailbox`).
    mailbox: VecDeque<Arc<PreparedMessage>>,
    /// The connection's outbox.
    outbox: Outbox,
}

/// `n` recipients, alternately JSON and MessagePack, each outbox already holding a chunk.
fn recipients(n: usize) -> Vec<Recipient> {
    (0..n)
        .map(|i| {
            let mut outbox = Outbox::new();
            outbox.push_encoded(Bytes::from_static(b"\x89\x00"));
            Recipient {
                protocol: HubProtocol::ALL[i % 2],
                mailbox: VecDeque::with_capacity(4),
                outbox,
            }
        })
        .collect()
}

fn message() -> HubMessage {
    let text: String = (0..ARGUMENT)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    event("Send", vec![Payload::string(text)])
}

fn prepare(message: &HubMessage) -> Arc<PreparedMessage> {
    // invariant: a server-built string argument always encodes in both protocols.
    Arc::new(PreparedMessage::new(message).expect("a string event encodes"))
}

fn encode_once(message: &HubMessage, recipients: &mut [Recipient]) {
    let prepared = prepare(message);
    for recipient in recipients.iter_mut() {
        recipient.mailbox.push_back(Arc::clone(&prepared));
    }
    for recipient in recipients.iter_mut() {
        while let Some(queued) = recipient.mailbox.pop_front() {
            recipient
                .outbox
                .push_encoded(queued.frame(recipient.protocol));
        }
    }
}

fn encode_once_direct(message: &HubMessage, recipients: &mut [Recipient]) {
    let prepared = prepare(message);
    for recipient in recipients.iter_mut() {
        recipient
            .outbox
            .push_encoded(prepared.frame(recipient.protocol));
    }
}

fn encode_per_recipient(message: &HubMessage, recipients: &mut [Recipient]) {
    for recipient in recipients.iter_mut() {
        let mut payload = BytesMut::new();
        recipient
            .protocol
            .encode(message, &mut payload)
            // invariant: a server-built string argument always encodes in both protocols.
            .expect("a string event encodes");
        recipient.outbox.push_frame(
            recipient.protocol.transfer_format().opcode(),
            payload.freeze(),
        );
    }
}

/// Checks that both paths queue the same bytes for every recipient, so the comparison is fair.
fn assert_same_frames(message: &HubMessage) {
    let prepared = prepare(message);
    for protocol in HubProtocol::ALL {
        let mut payload = BytesMut::new();
        protocol
            .encode(message, &mut payload)
            // invariant: a server-built string argument always encodes in both protocols.
            .expect("a string event encodes");
        assert_eq!(payload, prepared.payload(protocol));
        let mut naive = Outbox::new();
        naive.push_frame(protocol.transfer_format().opcode(), payload.freeze());
        assert_eq!(naive.queued_bytes(), prepared.frame(protocol).len());
    }
}

fn fanout(c: &mut Criterion<OnCpu>) {
    let message = message();
    assert_same_frames(&message);
    type Deliver = fn(&HubMessage, &mut [Recipient]);
    let variants: [(&str, Deliver); 3] = [
        ("encode_once", encode_once),
        ("encode_once_direct", encode_once_direct),
        ("encode_per_recipient", encode_per_recipient),
    ];
    let mut group = c.benchmark_group("fanout_1kib");
    for n in RECIPIENTS {
        group.throughput(Throughput::Elements(n as u64));
        for (name, deliver) in variants {
            group.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter_batched(
                    || recipients(n),
                    |mut recipients| {
                        deliver(black_box(&message), &mut recipients);
                        recipients
                    },
                    BatchSize::SmallInput,
                )
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(OnCpu);
    targets = fanout
}
criterion_main!(benches);
