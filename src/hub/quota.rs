//! Connection quotas: SignalR connections per process (`limits.max_hub_connections`) and per
//! virtual key (`limits.max_connections_per_key`), counted across every shard without a lock.
//!
//! Counts live in atomics shared by the shards: one total, and an open-addressing table of
//! `(key id, count)` slots claimed by compare-and-swap. Negotiate [`ConnectionQuota::check`]s
//! (answering 429 early); the WebSocket upgrade [`ConnectionQuota::acquire`]s a
//! [`QuotaPermit`], which gives its place back when the session ends.
//!
//! A slot, once claimed by a key, stays with it (no deletion keeps probing lock-free). With
//! more distinct keys than slots, keys without a slot are not limited per key (logged once):
//! the total still applies.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicUsize, Ordering};

use thiserror::Error;

use crate::stats::RefusalReason;
use tracing::warn;

/// Slots in the per-key table (16 bytes each).
const KEY_SLOTS: usize = 16_384;

/// A slot no key has claimed.
const EMPTY: i64 = i64::MIN;

/// Why a connection is refused (HTTP 429).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum QuotaError {
    /// The process holds `limits.max_hub_connections` SignalR connections.
    #[error("the server is at its connection limit ({0}); try again later")]
    Total(usize),
    /// The key holds `limits.max_connections_per_key` connections.
    #[error("this key has reached its connection limit ({0})")]
    PerKey(usize),
}

impl QuotaError {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        429
    }

    /// The limit's label in the refusal counters.
    pub fn refusal(&self) -> RefusalReason {
        match self {
            Self::Total(_) => RefusalReason::HubConnections,
            Self::PerKey(_) => RefusalReason::ConnectionsPerKey,
        }
    }
}

#[derive(Debug)]
struct KeySlot {
    key: AtomicI64,
    count: AtomicU32,
}

/// Connection counts shared by every shard.
#[derive(Debug)]
pub struct ConnectionQuota {
    max_total: usize,
    max_per_key: usize,
    total: AtomicUsize,
    keys: Box<[KeySlot]>,
    table_full_logged: AtomicBool,
}

/// One connection's place in the quota; dropping it gives the place back.
#[derive(Debug)]
pub struct QuotaPermit {
    quota: Arc<ConnectionQuota>,
    /// The key slot counted, if any.
    slot: Option<usize>,
}

impl Drop for QuotaPermit {
    fn drop(&mut self) {
        self.quota.total.fetch_sub(1, Ordering::AcqRel);
        if let Some(slot) = self.slot.and_then(|i| self.quota.keys.get(i)) {
            slot.count.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl ConnectionQuota {
    /// Limits of `max_total` connections and `max_per_key` per key (0: no limit).
    pub fn new(max_total: usize, max_per_key: usize) -> Arc<Self> {
        let slots = if max_per_key == 0 { 0 } else { KEY_SLOTS };
        Arc::new(Self {
            max_total,
            max_per_key,
            total: AtomicUsize::new(0),
            keys: (0..slots)
                .map(|_| KeySlot {
                    key: AtomicI64::new(EMPTY),
                    count: AtomicU32::new(0),
                })
                .collect(),
            table_full_logged: AtomicBool::new(false),
        })
    }

    /// The slot of `key`, claimed if it has none (`None`: not limited per key).
    fn slot_of(&self, key: i64, claim: bool) -> Option<usize> {
        let len = self.keys.len();
        if len == 0 || key == EMPTY {
            return None;
        }
        // Fibonacci hashing spreads sequential ids; the table length is a power of two.
        let start = (key as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) as usize % len;
        for probe in 0..len {
            let index = (start + probe) % len;
            let slot = &self.keys[index];
            let current = slot.key.load(Ordering::Acquire);
            if current == key {
                return Some(index);
            }
            if current != EMPTY {
                continue;
            }
            if !claim {
                return None;
            }
            match slot
                .key
                .compare_exchange(EMPTY, key, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(index),
                Err(actual) if actual == key => return Some(index),
                Err(_) => {}
            }
        }
        if !self.table_full_logged.swap(true, Ordering::Relaxed) {
            warn!(
                slots = len,
                "more distinct keys than the per-key connection table holds; new keys are limited only by the total"
            );
        }
        None
    }

    /// Whether a connection for `key` would be admitted now (negotiate asks; nothing is taken).
    ///
    /// # Errors
    /// [`QuotaError`] when a limit is reached.
    pub fn check(&self, key: Option<i64>) -> Result<(), QuotaError> {
        if self.max_total != 0 && self.total.load(Ordering::Acquire) >= self.max_total {
            return Err(QuotaError::Total(self.max_total));
        }
        if let Some(slot) = key.and_then(|k| self.slot_of(k, false))
            && self.keys[slot].count.load(Ordering::Acquire) as usize >= self.max_per_key
        {
            return Err(QuotaError::PerKey(self.max_per_key));
        }
        Ok(())
    }

    /// Takes a place for a connection of `key`.
    ///
    /// # Errors
    /// [`QuotaError`] when a limit is reached (nothing is taken then).
    pub fn acquire(self: &Arc<Self>, key: Option<i64>) -> Result<QuotaPermit, QuotaError> {
        let taken = self
            .total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (self.max_total == 0 || n < self.max_total).then_some(n + 1)
            });
        if taken.is_err() {
            return Err(QuotaError::Total(self.max_total));
        }
        // From here the permit owns the total; dropping it on an error gives it back.
        let mut permit = QuotaPermit {
            quota: Arc::clone(self),
            slot: None,
        };
        if let Some(slot) = key.and_then(|k| self.slot_of(k, true)) {
            let limit = u32::try_from(self.max_per_key).unwrap_or(u32::MAX);
            self.keys[slot]
                .count
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < limit).then_some(n + 1)
                })
                .map_err(|_| QuotaError::PerKey(self.max_per_key))?;
            permit.slot = Some(slot);
        }
        Ok(permit)
    }

    /// Connections holding a permit now.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_count_per_key_and_in_total_and_give_their_place_back_when_dropped() {
        let quota = ConnectionQuota::new(3, 2);
        let a1 = quota.acquire(Some(1)).unwrap();
        let _a2 = quota.acquire(Some(1)).unwrap();
        assert_eq!(quota.check(Some(1)), Err(QuotaError::PerKey(2)));
        assert_eq!(quota.acquire(Some(1)).unwrap_err(), QuotaError::PerKey(2));
        assert_eq!(quota.open(), 2, "a refused acquire takes nothing");
        let _b = quota.acquire(Some(2)).unwrap();
        assert_eq!(quota.check(None), Err(QuotaError::Total(3)));
        assert_eq!(quota.acquire(None).unwrap_err(), QuotaError::Total(3));
        drop(a1);
        assert_eq!(quota.check(Some(1)), Ok(()));
        let _a3 = quota.acquire(Some(1)).unwrap();
        assert_eq!(quota.open(), 3);
    }

    #[test]
    fn zero_means_no_limit() {
        let quota = ConnectionQuota::new(0, 0);
        let permits: Vec<_> = (0..1000).map(|_| quota.acquire(Some(7)).unwrap()).collect();
        assert_eq!(quota.open(), 1000);
        drop(permits);
        assert_eq!(quota.open(), 0);
    }

    #[test]
    fn keys_colliding_in_the_table_get_their_own_slots() {
        let quota = ConnectionQuota::new(0, 1);
        let permits: Vec<_> = (0..5000i64)
            .map(|k| quota.acquire(Some(k * 16_384)).unwrap())
            .collect();
        assert_eq!(quota.check(Some(0)), Err(QuotaError::PerKey(1)));
        assert_eq!(quota.check(Some(16_384 * 4999)), Err(QuotaError::PerKey(1)));
        drop(permits);
        assert_eq!(quota.check(Some(0)), Ok(()));
    }

    #[test]
    fn shards_racing_for_the_last_place_never_overshoot() {
        let quota = ConnectionQuota::new(100, 0);
        let taken: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let quota = Arc::clone(&quota);
                    scope.spawn(move || {
                        let held: Vec<_> =
                            (0..100).filter_map(|_| quota.acquire(None).ok()).collect();
                        let n = held.len();
                        std::mem::forget(held);
                        n
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(taken, 100);
        assert_eq!(quota.open(), 100);
    }
}
