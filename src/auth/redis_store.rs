//! The Redis key store (`auth.store = "redis"`): Conduit's virtual-key cache read directly.
//!
//! Conduit keeps each virtual key in Redis as `vkey:<sha256 hex>`, a JSON `VirtualKey` entity
//! ([`conduit_record`] parses it), and announces changes on two pub/sub channels. What Conduit
//! publishes (knnlabs/Conduit, `ConduitLLM.Http/Services/RedisVirtualKeyCache.cs`,
//! `InvalidateVirtualKeyAsync` and `InvalidateBatchAsync`):
//! - `vkey_invalidated`: the bare key hash, as a plain string;
//! - `vkey_batch_invalidated`: JSON `{"KeyHashes":["<hash>",…],"Timestamp":"…"}` (its
//!   `VirtualKeyBatchInvalidation` class, serialised with System.Text.Json defaults).
//!
//! Each shard has its own [`RedisKeyStore`]: one command connection, one subscriber and a cache
//! `hash → (record or not found, fetched at)`. The rules:
//! - a found record is trusted for `auth.cache_ttl`, and its `ExpiresAt` is checked on every
//!   use, so a cached key never outlives its expiry;
//! - "not found" is cached for at most [`NEGATIVE_TTL`], so a flood of made-up keys costs one
//!   `GET` each per few seconds, not one per request;
//! - an invalidation message evicts the keys it names; one that cannot be read (or names no
//!   valid hash) empties the cache;
//! - nothing is cached while the subscriber is down, and the cache is emptied when it goes
//!   down and when it comes back: invalidations sent meanwhile were lost;
//! - a read that raced an invalidation is used for its request but not cached;
//! - Redis unreachable: [`AuthError::Store`] (HTTP 503), whose text names Redis, never the key.

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Deserialize;

use super::keys::{PresentedKey, conduit_record, presented_key};
use super::{AuthError, KeyRecord, Principal};
use crate::redis::{ClientOptions, CommandConnection, RedisUrl, Subscriber, SubscriberEvent};

/// The channel Conduit publishes one invalidated key hash on.
pub const INVALIDATED_CHANNEL: &str = "vkey_invalidated";

/// The channel Conduit publishes a JSON batch of invalidated key hashes on.
pub const BATCH_INVALIDATED_CHANNEL: &str = "vkey_batch_invalidated";

/// The longest a "no such key" answer is cached (shorter when `auth.cache_ttl` is).
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);

/// Entries a shard's cache holds at most; past this, expired entries are dropped, and if that
/// is not enough, all of them.
const MAX_ENTRIES: usize = 100_000;

/// Redis's key for a key hash.
const KEY_PREFIX: &str = "vkey:";

/// One shard's view of Conduit's key cache in Redis. `!Send`: it lives on its shard.
pub struct RedisKeyStore {
    url: RedisUrl,
    ttl: Duration,
    options: ClientOptions,
    /// The connections, opened on first use (inside the shard's runtime).
    links: OnceCell<Links>,
    cache: Rc<KeyCache>,
}

struct Links {
    commands: CommandConnection,
    /// Kept for its task and callback; the cache is what it talks to.
    _subscriber: Subscriber,
}

impl RedisKeyStore {
    /// A store reading `url`, trusting keys for `ttl`. Connects on first use.
    pub fn new(url: RedisUrl, ttl: Duration) -> Self {
        Self::with_options(url, ttl, ClientOptions::default())
    }

    /// [`Self::new`] with the Redis client's timeouts and backoff given.
    pub fn with_options(url: RedisUrl, ttl: Duration, options: ClientOptions) -> Self {
        Self {
            url,
            ttl,
            options,
            links: OnceCell::new(),
            cache: Rc::new(KeyCache::default()),
        }
    }

    /// Opens the connections if they are not open yet. Must run inside a monoio runtime.
    pub fn start(&self) {
        self.links();
    }

    fn links(&self) -> &Links {
        self.links.get_or_init(|| {
            let cache = Rc::clone(&self.cache);
            let subscriber = Subscriber::open(
                self.url.clone(),
                self.options.clone(),
                [
                    Bytes::from_static(INVALIDATED_CHANNEL.as_bytes()),
                    Bytes::from_static(BATCH_INVALIDATED_CHANNEL.as_bytes()),
                ],
                move |event| cache.on_event(event),
            );
            Links {
                commands: CommandConnection::open(self.url.clone(), self.options.clone()),
                _subscriber: subscriber,
            }
        })
    }

    /// Forgets every cached answer (a reload: the next request for each key reads Redis).
    pub fn forget_cached(&self) {
        self.cache.flush();
    }

    /// How many keys (found or not) the cache holds.
    pub fn cached(&self) -> usize {
        self.cache.entries.borrow().len()
    }

    /// Who `token` is at `now_unix`: admin keys by their hash in `admin_hashes` (Redis is not
    /// asked), virtual keys from the cache or `GET vkey:<hash>`.
    ///
    /// # Errors
    /// As [`super::KeyStore::authenticate`], plus [`AuthError::Store`] when Redis cannot be
    /// reached or its entry cannot be parsed.
    pub async fn authenticate(
        &self,
        token: &str,
        admin_hashes: &[String],
        now_unix: u64,
    ) -> Result<Principal, AuthError> {
        let PresentedKey::Virtual { hash } = presented_key(token, admin_hashes)? else {
            return Ok(Principal::AdminKey);
        };
        let record = match self.cache.get(&hash, Instant::now()) {
            Some(found) => found,
            None => self.fetch(hash).await?,
        };
        record
            .ok_or(AuthError::UnknownKey)
            .and_then(|record| record.principal(now_unix))
    }

    /// Reads the key from Redis and caches the answer when that is safe.
    async fn fetch(&self, hash: String) -> Result<Lookup, AuthError> {
        let epoch = self.cache.epoch.get();
        let key = format!("{KEY_PREFIX}{hash}");
        let value = self
            .links()
            .commands
            .get(key.as_bytes())
            .await
            .map_err(|error| AuthError::Store(format!("Redis: {error}")))?;
        let record = match value {
            None => None,
            Some(json) => {
                let json = std::str::from_utf8(&json).map_err(|_| {
                    AuthError::Store("Redis: a vkey entry is not UTF-8 text".to_owned())
                })?;
                Some(Rc::new(conduit_record(&hash, json)?))
            }
        };
        let ttl = match record {
            Some(_) => self.ttl,
            None => self.ttl.min(NEGATIVE_TTL),
        };
        self.cache
            .insert(hash, record.clone(), epoch, Instant::now() + ttl);
        Ok(record)
    }
}

impl fmt::Debug for RedisKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisKeyStore")
            .field("url", &self.url)
            .field("ttl", &self.ttl)
            .field("cached", &self.cached())
            .field("trusted", &self.cache.trusted.get())
            .finish_non_exhaustive()
    }
}

/// What Redis said about a hash: its record, or `None` for "no such key".
type Lookup = Option<Rc<KeyRecord>>;

/// A shard's cached answers, shared by the store and its subscriber's callback.
#[derive(Default)]
struct KeyCache {
    /// Hash → the answer and until when it is trusted.
    entries: RefCell<HashMap<String, (Lookup, Instant)>>,
    /// Bumped by every invalidation: a read that started before one is not cached.
    epoch: Cell<u64>,
    /// Whether the subscriber is up, so invalidations would arrive.
    trusted: Cell<bool>,
}

impl KeyCache {
    fn get(&self, hash: &str, now: Instant) -> Option<Lookup> {
        let entries = self.entries.borrow();
        let (record, until) = entries.get(hash)?;
        (now < *until).then(|| record.clone())
    }

    fn insert(&self, hash: String, record: Lookup, epoch: u64, until: Instant) {
        if !self.trusted.get() || self.epoch.get() != epoch || until <= Instant::now() {
            return;
        }
        let mut entries = self.entries.borrow_mut();
        if entries.len() >= MAX_ENTRIES {
            let now = Instant::now();
            entries.retain(|_, (_, until)| *until > now);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(hash, (record, until));
    }

    fn flush(&self) {
        self.epoch.set(self.epoch.get() + 1);
        self.entries.borrow_mut().clear();
    }

    fn on_event(&self, event: SubscriberEvent) {
        match event {
            SubscriberEvent::Up => {
                self.flush();
                self.trusted.set(true);
            }
            SubscriberEvent::Down => {
                self.trusted.set(false);
                self.flush();
            }
            SubscriberEvent::Message { channel, payload } => {
                self.epoch.set(self.epoch.get() + 1);
                match invalidated_hashes(&channel, &payload) {
                    Some(hashes) => {
                        let mut entries = self.entries.borrow_mut();
                        for hash in hashes {
                            entries.remove(&hash);
                        }
                    }
                    None => self.flush(),
                }
            }
        }
    }
}

/// Conduit's batch message (`VirtualKeyBatchInvalidation`); `Timestamp` is not needed.
#[derive(Deserialize)]
struct BatchInvalidation {
    #[serde(rename = "KeyHashes", alias = "keyHashes")]
    key_hashes: Vec<String>,
}

/// The lowercase hashes an invalidation message names, or `None` when it cannot be read (the
/// caller then drops everything).
fn invalidated_hashes(channel: &[u8], payload: &[u8]) -> Option<Vec<String>> {
    let hashes = if channel == BATCH_INVALIDATED_CHANNEL.as_bytes() {
        serde_json::from_slice::<BatchInvalidation>(payload)
            .ok()?
            .key_hashes
    } else {
        vec![std::str::from_utf8(payload).ok()?.to_owned()]
    };
    hashes
        .into_iter()
        .map(|hash| {
            let hash = hash.trim();
            let hash = hash.strip_prefix(KEY_PREFIX).unwrap_or(hash);
            (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| hash.to_ascii_lowercase())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::hash_key;

    fn record(id: i64) -> Option<Rc<KeyRecord>> {
        Some(Rc::new(KeyRecord {
            id,
            name: "k".into(),
            hash: hash_key("k"),
            enabled: true,
            expires_at: None,
            admin: false,
        }))
    }

    fn trusted_cache() -> KeyCache {
        let cache = KeyCache::default();
        cache.on_event(SubscriberEvent::Up);
        cache
    }

    fn message(channel: &str, payload: &str) -> SubscriberEvent {
        SubscriberEvent::Message {
            channel: Bytes::copy_from_slice(channel.as_bytes()),
            payload: Bytes::copy_from_slice(payload.as_bytes()),
        }
    }

    #[test]
    fn conduits_single_and_batch_messages_name_hashes() {
        let (a, b) = (hash_key("a"), hash_key("b"));
        assert_eq!(
            invalidated_hashes(INVALIDATED_CHANNEL.as_bytes(), a.as_bytes()),
            Some(vec![a.clone()])
        );
        assert_eq!(
            invalidated_hashes(
                INVALIDATED_CHANNEL.as_bytes(),
                format!("vkey:{}", a.to_ascii_uppercase()).as_bytes()
            ),
            Some(vec![a.clone()])
        );
        let batch = format!(r#"{{"KeyHashes":["{a}","{b}"],"Timestamp":"2026-01-01T00:00:00Z"}}"#);
        assert_eq!(
            invalidated_hashes(BATCH_INVALIDATED_CHANNEL.as_bytes(), batch.as_bytes()),
            Some(vec![a.clone(), b])
        );
        for (channel, payload) in [
            (INVALIDATED_CHANNEL, "not a hash"),
            (BATCH_INVALIDATED_CHANNEL, "{"),
            (BATCH_INVALIDATED_CHANNEL, r#"{"KeyHashes":["abc"]}"#),
            (BATCH_INVALIDATED_CHANNEL, a.as_str()),
        ] {
            assert_eq!(
                invalidated_hashes(channel.as_bytes(), payload.as_bytes()),
                None,
                "{payload}"
            );
        }
    }

    #[test]
    fn an_invalidation_evicts_its_key_and_an_unreadable_one_evicts_all() {
        let cache = trusted_cache();
        let until = Instant::now() + Duration::from_secs(60);
        let (a, b) = (hash_key("a"), hash_key("b"));
        cache.insert(a.clone(), record(1), cache.epoch.get(), until);
        cache.insert(b.clone(), None, cache.epoch.get(), until);
        cache.on_event(message(INVALIDATED_CHANNEL, &a));
        assert!(cache.get(&a, Instant::now()).is_none());
        assert_eq!(cache.get(&b, Instant::now()), Some(None));
        cache.on_event(message(INVALIDATED_CHANNEL, "garbage"));
        assert!(cache.entries.borrow().is_empty());
    }

    #[test]
    fn entries_expire_and_nothing_is_cached_while_the_subscriber_is_down() {
        let cache = KeyCache::default();
        let hash = hash_key("a");
        let until = Instant::now() + Duration::from_secs(60);
        cache.insert(hash.clone(), record(1), cache.epoch.get(), until);
        assert!(
            cache.get(&hash, Instant::now()).is_none(),
            "not trusted yet"
        );

        cache.on_event(SubscriberEvent::Up);
        cache.insert(hash.clone(), record(1), cache.epoch.get(), until);
        assert_eq!(cache.get(&hash, Instant::now()), Some(record(1)));
        assert!(cache.get(&hash, until).is_none(), "expired");

        cache.on_event(SubscriberEvent::Down);
        assert!(cache.get(&hash, Instant::now()).is_none(), "flushed");
        cache.insert(hash.clone(), record(1), cache.epoch.get(), until);
        assert!(cache.get(&hash, Instant::now()).is_none());
    }

    #[test]
    fn a_read_that_raced_an_invalidation_is_not_cached() {
        let cache = trusted_cache();
        let hash = hash_key("a");
        let started = cache.epoch.get();
        cache.on_event(message(INVALIDATED_CHANNEL, &hash_key("other")));
        cache.insert(
            hash.clone(),
            record(1),
            started,
            Instant::now() + Duration::from_secs(60),
        );
        assert!(cache.get(&hash, Instant::now()).is_none());
    }
}
