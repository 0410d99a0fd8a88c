//! The shard's stream table: for each hub and stream key, the local subscribers (a session and
//! the invocation id its client streams under) and the **backlog**: the chunks this shard saw
//! within `signalr.stream_backlog_window`, so a client that subscribes after a backend started
//! posting still gets everything, in order.
//!
//! Every shard sees every chunk of every key (they are fanned out like publishes), so each
//! keeps its own backlog and a late subscriber is served where it lives, with no cross-shard
//! question. Memory is bounded per key by the window and by `stream_backlog_items` and
//! `stream_backlog_bytes`; dropping a chunk before the stream ends is counted, and a client that
//! subscribes after a loss gets an error instead of a stream with a hole. A terminal chunk
//! (complete or error) ends every subscription and stays in the backlog for late subscribers;
//! a chunk after it starts the key over.
//!
//! Unsubscribing is lazy: a subscriber whose session ended or no longer streams the key
//! (CancelInvocation) is dropped at the next delivery or sweep ([`StreamTable::sweep`]).

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use quanta::Instant;

use super::sessions::SessionKey;
use crate::config::SignalRConfig;
use crate::hub::streams::StreamChunk;

/// How much of each key's past a shard keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BacklogLimits {
    /// Chunks older than this are dropped.
    pub window: Duration,
    /// At most this many chunks per key.
    pub items: usize,
    /// At most this many bytes (JSON size) of chunks per key.
    pub bytes: usize,
}

impl BacklogLimits {
    /// The limits configured in `[signalr]`.
    pub fn from_config(config: &SignalRConfig) -> Self {
        Self {
            window: config.stream_backlog_window,
            items: config.stream_backlog_items.get(),
            bytes: config.stream_backlog_bytes,
        }
    }
}

/// One client streaming a key: its session and the invocation id its items carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriber {
    /// The session, on this shard.
    pub session: SessionKey,
    /// The client's StreamInvocation id.
    pub invocation_id: String,
}

/// A key's recent chunks, oldest first, with when they arrived here.
#[derive(Debug, Default)]
struct Backlog {
    chunks: VecDeque<(Instant, Arc<StreamChunk>)>,
    bytes: usize,
    /// Chunks dropped (by age or caps) since the key (re)started.
    lost: u64,
}

impl Backlog {
    fn ended(&self) -> bool {
        self.chunks
            .back()
            .is_some_and(|(_, c)| c.event.is_terminal())
    }

    fn pop_front(&mut self) {
        if let Some((_, chunk)) = self.chunks.pop_front() {
            self.bytes = self.bytes.saturating_sub(chunk.event.len());
            self.lost += 1;
        }
    }

    /// Drops chunks older than the window.
    fn expire(&mut self, now: Instant, limits: &BacklogLimits) {
        while self
            .chunks
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= limits.window)
        {
            self.pop_front();
        }
    }

    fn push(&mut self, chunk: Arc<StreamChunk>, now: Instant, limits: &BacklogLimits) {
        if self.ended() {
            // A chunk after the end: the key is used for a new stream.
            *self = Self::default();
        }
        self.bytes += chunk.event.len();
        self.chunks.push_back((now, chunk));
        while self.chunks.len() > 1
            && (self.chunks.len() > limits.items || self.bytes > limits.bytes)
        {
            self.pop_front();
        }
        self.expire(now, limits);
    }
}

/// One key on this shard.
#[derive(Debug, Default)]
struct Entry {
    subscribers: Vec<Subscriber>,
    backlog: Backlog,
}

/// What a new subscriber gets.
#[derive(Debug, Clone, PartialEq)]
pub enum Joined {
    /// These chunks first (the last may end the stream: then the subscriber was not kept).
    Replay(Vec<Arc<StreamChunk>>),
    /// This many earlier chunks were dropped: the client cannot get the whole stream (not
    /// kept either).
    Lost(u64),
}

/// The shard's stream keys.
#[derive(Debug)]
pub struct StreamTable {
    limits: BacklogLimits,
    /// (hub, key) → subscribers and backlog.
    entries: RefCell<HashMap<(String, String), Entry>>,
}

impl StreamTable {
    /// An empty table keeping backlogs within `limits`.
    pub fn new(limits: BacklogLimits) -> Self {
        Self {
            limits,
            entries: RefCell::new(HashMap::new()),
        }
    }

    /// Keeps `chunk` in its key's backlog and returns the subscribers to deliver it to, in
    /// subscription order. A terminal chunk ends their subscriptions.
    pub fn append(&self, chunk: &Arc<StreamChunk>, now: Instant) -> Vec<Subscriber> {
        let mut entries = self.entries.borrow_mut();
        let key = (chunk.hub.clone(), chunk.key.clone());
        let entry = entries.entry(key.clone()).or_default();
        entry.backlog.push(Arc::clone(chunk), now, &self.limits);
        let subscribers = if chunk.event.is_terminal() {
            std::mem::take(&mut entry.subscribers)
        } else {
            entry.subscribers.clone()
        };
        if entry.subscribers.is_empty() && entry.backlog.chunks.is_empty() {
            entries.remove(&key);
        }
        subscribers
    }

    /// Subscribes to `key` on `hub`: the subscriber is kept unless the backlog already ends
    /// the stream or lost part of it.
    pub fn subscribe(&self, hub: &str, key: &str, subscriber: Subscriber, now: Instant) -> Joined {
        let mut entries = self.entries.borrow_mut();
        let entry = entries.entry((hub.to_owned(), key.to_owned())).or_default();
        entry.backlog.expire(now, &self.limits);
        if entry.backlog.chunks.is_empty() {
            // Nothing left of the past: whatever was lost is out of the window too.
            entry.backlog.lost = 0;
        }
        if entry.backlog.lost > 0 {
            return Joined::Lost(entry.backlog.lost);
        }
        let replay = entry
            .backlog
            .chunks
            .iter()
            .map(|(_, chunk)| Arc::clone(chunk))
            .collect();
        if !entry.backlog.ended() && !entry.subscribers.contains(&subscriber) {
            entry.subscribers.push(subscriber);
        }
        Joined::Replay(replay)
    }

    /// Drops expired chunks and the subscribers `keep` rejects, and forgets keys with neither
    /// chunks nor subscribers left.
    pub fn sweep(&self, now: Instant, mut keep: impl FnMut(&str, &Subscriber) -> bool) {
        self.entries.borrow_mut().retain(|(_, key), entry| {
            entry.backlog.expire(now, &self.limits);
            entry.subscribers.retain(|s| keep(key, s));
            !entry.subscribers.is_empty() || !entry.backlog.chunks.is_empty()
        });
    }

    /// Removes `subscriber` from `key` on `hub`.
    pub fn unsubscribe(&self, hub: &str, key: &str, subscriber: &Subscriber) {
        let mut entries = self.entries.borrow_mut();
        let id = (hub.to_owned(), key.to_owned());
        if let Some(entry) = entries.get_mut(&id) {
            entry.subscribers.retain(|s| s != subscriber);
            if entry.subscribers.is_empty() && entry.backlog.chunks.is_empty() {
                entries.remove(&id);
            }
        }
    }

    /// How many keys the shard holds (subscribed or with a backlog).
    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::streams::{EncodedItem, StreamEvent};
    use crate::protocol::signalr::Value;

    fn limits() -> BacklogLimits {
        BacklogLimits {
            window: Duration::from_secs(30),
            items: 4,
            bytes: 1000,
        }
    }

    fn chunk(key: &str, event: StreamEvent) -> Arc<StreamChunk> {
        Arc::new(StreamChunk {
            hub: "h".into(),
            key: key.into(),
            event,
        })
    }

    fn item(n: i64) -> StreamEvent {
        StreamEvent::Item(EncodedItem::new(&Value::Int(n)))
    }

    fn sub(slot: u32, id: &str) -> Subscriber {
        Subscriber {
            session: SessionKey {
                slot,
                serial: u64::from(slot),
            },
            invocation_id: id.into(),
        }
    }

    fn events(joined: Joined) -> Vec<StreamEvent> {
        match joined {
            Joined::Replay(chunks) => chunks.iter().map(|c| c.event.clone()).collect(),
            Joined::Lost(n) => panic!("lost {n}"),
        }
    }

    #[test]
    fn a_late_subscriber_gets_the_backlog_in_order_then_live_chunks() {
        let table = StreamTable::new(limits());
        let now = Instant::now();
        assert!(table.append(&chunk("k", item(1)), now).is_empty());
        assert!(table.append(&chunk("k", item(2)), now).is_empty());
        assert_eq!(
            events(table.subscribe("h", "k", sub(1, "a"), now)),
            vec![item(1), item(2)]
        );
        assert_eq!(table.append(&chunk("k", item(3)), now), vec![sub(1, "a")]);
        // Another hub's key of the same name is another stream.
        assert!(events(table.subscribe("other", "k", sub(2, "b"), now)).is_empty());
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn a_terminal_chunk_ends_subscriptions_and_is_replayed_to_late_subscribers() {
        let table = StreamTable::new(limits());
        let now = Instant::now();
        assert!(events(table.subscribe("h", "k", sub(1, "a"), now)).is_empty());
        table.append(&chunk("k", item(1)), now);
        let error = StreamEvent::Error("boom".into());
        assert_eq!(table.append(&chunk("k", error), now), vec![sub(1, "a")]);
        assert!(table.append(&chunk("k", item(9)), now).is_empty());
        // The item after the end started the key over: only it is replayed.
        assert_eq!(
            events(table.subscribe("h", "k", sub(2, "b"), now)),
            vec![item(9)]
        );
        let done = chunk("j", StreamEvent::Complete);
        table.append(&chunk("j", item(1)), now);
        table.append(&done, now);
        assert_eq!(
            events(table.subscribe("h", "j", sub(3, "c"), now)),
            vec![item(1), StreamEvent::Complete]
        );
        // Not kept: the stream is over.
        assert!(table.append(&chunk("j", item(2)), now).is_empty());
    }

    #[test]
    fn chunks_expire_after_the_window_and_the_key_is_forgotten() {
        let table = StreamTable::new(limits());
        let start = Instant::now();
        table.append(&chunk("k", item(1)), start);
        table.append(
            &chunk("k", StreamEvent::Complete),
            start + Duration::from_secs(10),
        );
        let within = start + Duration::from_secs(29);
        assert_eq!(
            events(table.subscribe("h", "k", sub(1, "a"), within)),
            vec![item(1), StreamEvent::Complete]
        );
        // The first item expired but the end did not: the stream cannot be served whole.
        let partly = start + Duration::from_secs(35);
        assert_eq!(
            table.subscribe("h", "k", sub(1, "a"), partly),
            Joined::Lost(1)
        );
        // Everything expired: nothing is replayed, and the subscriber waits for a new stream.
        let after = start + Duration::from_secs(41);
        assert!(events(table.subscribe("h", "k", sub(1, "a"), after)).is_empty());
        assert_eq!(table.append(&chunk("k", item(5)), after), vec![sub(1, "a")]);
        table.sweep(after, |_, _| false);
        table.sweep(after + Duration::from_secs(31), |_, _| true);
        assert!(table.is_empty());
    }

    #[test]
    fn caps_drop_the_oldest_chunks_and_late_subscribers_learn_of_the_loss() {
        let table = StreamTable::new(limits());
        let now = Instant::now();
        assert!(events(table.subscribe("h", "k", sub(1, "a"), now)).is_empty());
        for n in 0..6 {
            assert_eq!(table.append(&chunk("k", item(n)), now).len(), 1);
        }
        // Live subscribers got everything; a late one would miss 0 and 1.
        assert_eq!(table.subscribe("h", "k", sub(2, "b"), now), Joined::Lost(2));
        let big = StreamEvent::Item(EncodedItem::new(&Value::Str("x".repeat(600))));
        table.append(&chunk("m", big.clone()), now);
        table.append(&chunk("m", big.clone()), now);
        assert_eq!(table.subscribe("h", "m", sub(2, "b"), now), Joined::Lost(1));
        // A single chunk over the byte cap is still kept (the REST API bounds its size).
        let huge = StreamEvent::Item(EncodedItem::new(&Value::Str("x".repeat(2000))));
        table.append(&chunk("n", huge.clone()), now);
        assert_eq!(
            events(table.subscribe("h", "n", sub(2, "b"), now)),
            vec![huge]
        );
    }

    #[test]
    fn sweeping_drops_rejected_subscribers_and_duplicates_are_not_added() {
        let table = StreamTable::new(limits());
        let now = Instant::now();
        table.subscribe("h", "k", sub(1, "a"), now);
        table.subscribe("h", "k", sub(1, "a"), now);
        table.subscribe("h", "k", sub(2, "b"), now);
        assert_eq!(
            table.append(&chunk("k", item(1)), now),
            vec![sub(1, "a"), sub(2, "b")]
        );
        table.sweep(now, |key, s| key == "k" && s.invocation_id == "b");
        assert_eq!(table.append(&chunk("k", item(2)), now), vec![sub(2, "b")]);
        table.unsubscribe("h", "k", &sub(2, "b"));
        assert!(table.append(&chunk("k", item(3)), now).is_empty());
    }

    #[test]
    fn a_zero_window_keeps_nothing() {
        let table = StreamTable::new(BacklogLimits {
            window: Duration::ZERO,
            ..limits()
        });
        let now = Instant::now();
        table.append(&chunk("k", item(1)), now);
        assert!(table.is_empty());
        assert!(events(table.subscribe("h", "k", sub(1, "a"), now)).is_empty());
    }
}
