//! Soak: a steady population of churning clients and a REST publisher, for as long as the
//! run lasts (`--warmup` + `--duration`), while the observer samples the server's RSS and
//! open fds (see [`crate::flat`] for the verdict).
//!
//! **Clients.** `--clients` slots, spread over the threads. Each slot loops: connect
//! (negotiate, upgrade, handshake; JSON or MessagePack at random, `--msgpack-percent`),
//! invoke `JoinGroup("soak-G")` for a random group, receive for a random lifetime, decide to
//! leave, wait up to `--leave-grace` for the messages it is still owed, then disconnect: a
//! hub Close and a WebSocket close, or (`--abrupt-percent`) a TCP FIN or reset without any
//! close message. A new connection takes the slot at once.
//!
//! **Publisher** (thread 0). `--rate` messages per second, round-robin over the groups, each
//! `POST /api/hubs/{rest-hub}/groups/soak-G/:send` with `{"target":"Send","arguments":[P]}`.
//! P is the usual timed payload whose sequence field is `G × 10^12 + n`, where n numbers
//! group G's messages from 0. Group G always goes through publisher connection
//! `G mod --publishers`, one request at a time (the next is written once the previous one's
//! answer arrived), so the server sees each group's messages in order.
//!
//! **What a client is owed.** Two counters per group, shared by the process's threads:
//! `written` (messages whose request was about to be written) and `acked` (messages the
//! server answered 202 for). A client's join is *confirmed* when its `JoinGroup` completion
//! arrived; it then reads `from = written[G]`: every later message was posted after the
//! server had applied the join. When it *decides to leave* it reads `to = acked[G]`: every
//! message below was accepted while it was still a member. It is owed exactly the messages
//! `from..to` of its group (`expected`), and `delivered` counts those it received (by the end
//! of its grace period). A message of another group, or a sequence number not above the
//! previous one (a duplicate or a reordering), is a sequence error. A client the server drops
//! is owed `from..acked[G]` at the moment it noticed.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Poll, Waker};
use std::time::Duration;

use anyhow::{Context, bail};
use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;

use crate::cli::{Common, SoakArgs};
use crate::client::{Client, Wire};
use crate::clock::{self, now_ns};
use crate::conn;
use crate::http::Target;
use crate::payload::{self, Stamp};
use crate::recorder::{Counter, Recorder};
use crate::run::ThreadEnv;
use crate::schedule::{self, Pacer};
use crate::signalr::{Arg, Protocol};

use super::{client_with_wire, open_one, share};

/// A payload's sequence field is `group × SEQ_SPAN + n`.
pub const SEQ_SPAN: u64 = 1_000_000_000_000;

/// How long the run waits at its end for the last connections to close.
const CLOSE_WAIT_NS: u64 = 5_000_000_000;

/// The name of group `g`.
pub fn group_name(group: usize) -> String {
    format!("soak-{group}")
}

/// The server key: `--server-key`, else `HUB_SERVER_KEY`.
pub fn server_key(args: &SoakArgs) -> Option<String> {
    args.server_key
        .clone()
        .or_else(|| std::env::var("HUB_SERVER_KEY").ok())
        .filter(|key| !key.is_empty())
}

/// Per-group publish counters shared by a process's threads.
#[derive(Debug)]
pub struct GroupCounters {
    written: Vec<AtomicU64>,
    acked: Vec<AtomicU64>,
}

impl GroupCounters {
    /// Counters for `groups` groups, all zero.
    pub fn new(groups: usize) -> Self {
        Self {
            written: (0..groups).map(|_| AtomicU64::new(0)).collect(),
            acked: (0..groups).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// What one client received, for the zero-loss check.
#[derive(Debug)]
pub struct Track {
    group: usize,
    last: Cell<Option<u64>>,
    received: RefCell<Vec<u64>>,
}

/// A message a [`Track`] refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeqError {
    /// A message of another group.
    WrongGroup {
        /// The group it was sent to.
        group: u64,
        /// Its number.
        seq: u64,
    },
    /// A number not above the previous one.
    NotAfter {
        /// Its number.
        seq: u64,
        /// The previous number.
        last: u64,
    },
}

impl std::fmt::Display for SeqError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::WrongGroup { group, seq } => {
                write!(f, "message {seq} of group soak-{group}")
            }
            Self::NotAfter { seq, last } => write!(f, "message {seq} after {last}"),
        }
    }
}

impl Track {
    /// A client of `group`, nothing received yet.
    pub fn new(group: usize) -> Self {
        Self {
            group,
            last: Cell::new(None),
            received: RefCell::new(Vec::new()),
        }
    }

    /// One received message (its payload's sequence field).
    pub fn on_seq(&self, field: u64) -> Result<(), SeqError> {
        let (group, seq) = (field / SEQ_SPAN, field % SEQ_SPAN);
        if group != self.group as u64 {
            return Err(SeqError::WrongGroup { group, seq });
        }
        if let Some(last) = self.last.get()
            && seq <= last
        {
            return Err(SeqError::NotAfter { seq, last });
        }
        self.last.set(Some(seq));
        self.received.borrow_mut().push(seq);
        Ok(())
    }

    /// The number after the last one received (0 before any).
    pub fn next_expected(&self) -> u64 {
        self.last.get().map_or(0, |last| last + 1)
    }

    /// `(expected, delivered)` for the owed range `from..to`.
    pub fn account(&self, from: u64, to: u64) -> (u64, u64) {
        let expected = to.saturating_sub(from);
        let delivered = self
            .received
            .borrow()
            .iter()
            .filter(|&&seq| seq >= from && seq < to)
            .count() as u64;
        (expected, delivered)
    }
}

/// A small xorshift64* generator (lifetimes, groups, protocols; not secrets).
#[derive(Debug)]
struct Rng(Cell<u64>);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(Cell::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1))
    }

    fn below(&self, bound: u64) -> u64 {
        let mut x = self.0.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound.max(1)
    }
}

/// One thread's soak state.
struct Ctx {
    json: Rc<Client>,
    msgpack: Rc<Client>,
    rec: Arc<Recorder>,
    hub: String,
    args: SoakArgs,
    counters: Arc<GroupCounters>,
    rng: Rng,
    end: u64,
}

/// Runs this thread's share of the soak; the publisher lives on slot 0.
pub async fn run(
    env: &ThreadEnv,
    common: &Common,
    args: &SoakArgs,
    counters: Arc<GroupCounters>,
) -> anyhow::Result<()> {
    let json = client_with_wire(env, common, &common.url, Wire::SignalR(Protocol::Json))?;
    let msgpack = client_with_wire(
        env,
        common,
        &common.url,
        Wire::SignalR(Protocol::MessagePack),
    )?;
    let key = server_key(args).context("no server key (--server-key or HUB_SERVER_KEY)")?;
    let start = env.barrier(0, &json).await;
    let end = start + clock::ns(common.warmup) + clock::ns(common.duration);
    for client in [&json, &msgpack] {
        client.set_window(start, u64::MAX);
        client.set_running(true);
    }
    let ctx = Rc::new(Ctx {
        json: json.clone(),
        msgpack: msgpack.clone(),
        rec: env.rec(),
        hub: common.hub.clone(),
        args: args.clone(),
        counters,
        rng: Rng::new(start ^ (env.slot as u64 + 1)),
        end,
    });
    let stop = Rc::new(Cell::new(false));
    for client in [&json, &msgpack] {
        let (client, stop) = (client.clone(), stop.clone());
        drop(monoio::spawn(async move {
            while !stop.get() {
                client.keepalive(now_ns());
                monoio::time::sleep(Duration::from_millis(250)).await;
            }
        }));
    }
    let publisher = (env.slot == 0).then(|| {
        let ctx = ctx.clone();
        let key = key.clone();
        let spin_ns = common.spin_us * 1000;
        monoio::spawn(async move { publish(ctx, key, start, spin_ns).await })
    });
    clock::sleep_until(start).await;
    let slots: Vec<_> = share(args.clients, env.slot, env.slots)
        .map(|slot| monoio::spawn(client_slot(ctx.clone(), slot)))
        .collect();
    for slot in slots {
        slot.await;
    }
    if let Some(publisher) = publisher {
        publisher.await;
    }
    // Let the last departures finish (close frames written, sockets closed) before the
    // runtime, and with it every connection task, goes away.
    let deadline = now_ns() + CLOSE_WAIT_NS;
    while json.open_connections() + msgpack.open_connections() > 0 && now_ns() < deadline {
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.set(true);
    for client in [&json, &msgpack] {
        client.set_running(false);
    }
    Ok(())
}

/// One client slot: connect, join, receive, leave, again, until the end of the run.
async fn client_slot(ctx: Rc<Ctx>, slot: usize) {
    let args = &ctx.args;
    let rec = &ctx.rec;
    let mut generation = 0usize;
    while now_ns() < ctx.end {
        let msgpack = ctx.rng.below(100) < u64::from(args.msgpack_percent);
        let client = if msgpack { &ctx.msgpack } else { &ctx.json };
        let index = slot + generation * args.clients;
        let first = generation == 0;
        generation += 1;
        let Some(conn) = open_one(client, &ctx.hub, index, true).await else {
            monoio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let group = ctx.rng.below(args.groups as u64) as usize;
        let track = Rc::new(Track::new(group));
        {
            let (track, rec) = (track.clone(), rec.clone());
            conn.set_stamp_sink(Box::new(move |stamp, at| {
                rec.record_arrival(at.saturating_sub(stamp.scheduled_ns));
                if let Err(error) = track.on_seq(stamp.seq) {
                    rec.add(Counter::SeqErrors, 1);
                    rec.error(|| format!("a client of soak-{}: {error}", track.group));
                }
            }));
        }
        let mut closed = conn.closed();
        let name = group_name(group);
        match conn.invoke("JoinGroup", &[Arg::Str(name.as_bytes())]).await {
            Ok(done) if done.error.is_none() => rec.add(Counter::GroupOps, 1),
            Ok(done) => {
                let error = done.error.unwrap_or_default();
                rec.error(|| format!("JoinGroup({name}) failed: {error}"));
                conn.close();
                rec.add(Counter::Left, 1);
                continue;
            }
            Err(_) => {
                // The connection closed first: `finish` counted the drop.
                rec.error(|| format!("connection {index} closed during JoinGroup"));
                continue;
            }
        }
        let from = ctx.counters.written[group].load(Ordering::SeqCst);
        let (lo, hi) = (
            clock::ns(args.lifetime_min),
            clock::ns(args.lifetime_max).max(1),
        );
        let lifetime = if first {
            ctx.rng.below(hi)
        } else {
            lo + ctx.rng.below(hi - lo + 1)
        };
        let leave_at = now_ns().saturating_add(lifetime).min(ctx.end);
        let wait = Duration::from_nanos(leave_at.saturating_sub(now_ns()));
        let dropped = monoio::time::timeout(wait, &mut closed).await.is_ok();
        let to = ctx.counters.acked[group].load(Ordering::SeqCst);
        if !dropped {
            let deadline = now_ns() + clock::ns(args.leave_grace);
            // Only a non-empty owed range is waited for (a client that joined after the
            // last publish has received nothing and is owed nothing).
            while from < to && track.next_expected() < to && conn.is_open() && now_ns() < deadline {
                monoio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        let (expected, delivered) = track.account(from, to);
        rec.add(Counter::Expected, expected);
        rec.add(Counter::Delivered, delivered);
        if delivered < expected {
            rec.error(|| {
                format!(
                    "connection {index} in {name}: {} of the {expected} messages {from}..{to} it was owed are missing",
                    expected - delivered
                )
            });
        }
        if !dropped {
            let how = ctx.rng.below(200);
            if how < 2 * u64::from(args.abrupt_percent) {
                rec.add(Counter::Abrupt, 1);
                conn.abort(how.is_multiple_of(2));
            } else {
                conn.close();
            }
            rec.add(Counter::Left, 1);
        }
    }
}

/// A request waiting for its publisher connection.
#[derive(Debug, Clone, Copy)]
struct Item {
    group: usize,
    seq: u64,
    due: u64,
}

/// One publisher connection's queue.
#[derive(Default)]
struct Outbox {
    queue: RefCell<VecDeque<Item>>,
    waker: Cell<Option<Waker>>,
    done: Cell<bool>,
}

impl Outbox {
    fn push(&self, item: Item) {
        self.queue.borrow_mut().push_back(item);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    fn finish(&self) {
        self.done.set(true);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// The next item, or `None` once finished and empty.
    async fn next(&self) -> Option<Item> {
        poll_fn(|cx| {
            if let Some(item) = self.queue.borrow_mut().pop_front() {
                Poll::Ready(Some(item))
            } else if self.done.get() {
                Poll::Ready(None)
            } else {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }
}

/// The publisher: paces `--rate` messages over the groups and hands each to its group's
/// connection; returns when every request was answered.
async fn publish(ctx: Rc<Ctx>, key: String, start: u64, spin_ns: u64) {
    let args = &ctx.args;
    let outboxes: Vec<Rc<Outbox>> = (0..args.publishers)
        .map(|_| Rc::new(Outbox::default()))
        .collect();
    let workers: Vec<_> = outboxes
        .iter()
        .map(|outbox| {
            monoio::spawn(publisher_connection(
                ctx.clone(),
                outbox.clone(),
                key.clone(),
            ))
        })
        .collect();
    let mut next_seq = vec![0u64; args.groups];
    let mut pacers = [Pacer::new(start, ctx.end, args.rate)];
    schedule::run(&ctx.json, &mut pacers, spin_ns, |_, i, due| {
        let group = (i % args.groups as u64) as usize;
        let seq = next_seq[group];
        next_seq[group] += 1;
        outboxes[group % outboxes.len()].push(Item { group, seq, due });
    })
    .await;
    for outbox in &outboxes {
        outbox.finish();
    }
    for worker in workers {
        worker.await;
    }
}

/// One keep-alive HTTP connection posting its queue's messages one at a time.
async fn publisher_connection(ctx: Rc<Ctx>, outbox: Rc<Outbox>, key: String) {
    let args = &ctx.args;
    let rec = &ctx.rec;
    let target = ctx.json.settings.target.clone();
    let mut stream: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(1024);
    let mut body = Vec::with_capacity(args.size + 64);
    let mut stamp = Vec::with_capacity(args.size + 32);
    while let Some(item) = outbox.next().await {
        payload::write(
            &mut stamp,
            Stamp {
                scheduled_ns: item.due,
                seq: item.group as u64 * SEQ_SPAN + item.seq,
            },
            args.size,
        );
        body.clear();
        body.extend_from_slice(br#"{"target":"Send","arguments":[""#);
        body.extend_from_slice(&stamp);
        body.extend_from_slice(br#""]}"#);
        let path = target.path(&format!(
            "/api/hubs/{}/groups/{}/:send",
            args.rest_hub,
            group_name(item.group)
        ));
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            target.host,
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(&body);
        ctx.counters.written[item.group].store(item.seq + 1, Ordering::SeqCst);
        rec.add(Counter::SentTotal, 1);
        match post(&target, &mut stream, &mut buf, request).await {
            Ok(202) => {
                ctx.counters.acked[item.group].store(item.seq + 1, Ordering::SeqCst);
                rec.add(Counter::Sent, 1);
            }
            Ok(status) => {
                rec.add(Counter::PublishFailed, 1);
                rec.error(|| format!("REST publish answered {status}"));
            }
            Err(error) => {
                stream = None;
                buf.clear();
                rec.add(Counter::PublishFailed, 1);
                rec.error(|| format!("REST publish failed: {error:#}"));
            }
        }
    }
}

/// Sends one request on the keep-alive connection (opening it if needed) and reads the
/// answer; returns its status.
async fn post(
    target: &Target,
    stream: &mut Option<TcpStream>,
    buf: &mut Vec<u8>,
    request: Vec<u8>,
) -> anyhow::Result<u16> {
    if stream.is_none() {
        *stream = Some(conn::connect(target.addr, None).await?);
        buf.clear();
    }
    let Some(s) = stream.as_mut() else {
        bail!("no connection"); // invariant: set just above
    };
    let (res, _) = s.write_all(request).await;
    res.context("writing the request")?;
    let head = conn::read_head(s, buf).await?;
    let body_len = head.content_length.unwrap_or(0);
    while buf.len() < head.head_len + body_len {
        conn::read_more(s, buf).await?;
    }
    buf.drain(..head.head_len + body_len);
    Ok(head.status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_owed_exactly_the_range_and_counts_what_it_got() {
        let track = Track::new(3);
        for seq in [4u64, 5, 7, 8, 9] {
            track.on_seq(3 * SEQ_SPAN + seq).unwrap();
        }
        // Owed 5..9: 5, 6, 7, 8; 6 is missing, 4 and 9 are outside.
        assert_eq!(track.account(5, 9), (4, 3));
        assert_eq!(track.next_expected(), 10);
        // Nothing owed when the range is empty or inverted.
        assert_eq!(track.account(9, 9), (0, 0));
        assert_eq!(track.account(9, 5), (0, 0));
    }

    #[test]
    fn repeats_reorderings_and_other_groups_are_sequence_errors() {
        let track = Track::new(1);
        track.on_seq(SEQ_SPAN + 10).unwrap();
        assert_eq!(
            track.on_seq(SEQ_SPAN + 10),
            Err(SeqError::NotAfter { seq: 10, last: 10 })
        );
        assert_eq!(
            track.on_seq(SEQ_SPAN + 9),
            Err(SeqError::NotAfter { seq: 9, last: 10 })
        );
        assert_eq!(
            track.on_seq(2 * SEQ_SPAN + 11),
            Err(SeqError::WrongGroup { group: 2, seq: 11 })
        );
        // Refused messages are not counted.
        assert_eq!(track.account(0, 20), (20, 1));
    }

    #[test]
    fn the_random_source_stays_below_its_bound() {
        let rng = Rng::new(7);
        assert!((0..1000).all(|_| rng.below(10) < 10));
        assert_eq!(rng.below(0), 0);
    }
}
