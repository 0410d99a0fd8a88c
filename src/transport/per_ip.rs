//! Per-client-address limits shared by every shard: open connections
//! (`limits.max_connections_per_ip`) and the negotiate rate (`limits.negotiate_rate_per_ip`,
//! `limits.negotiate_burst_per_ip`).
//!
//! Connections from one address land on any shard (the kernel's `SO_REUSEPORT` hash includes
//! the source port), so the counts are process-wide: fixed tables of atomics, no lock, no
//! allocation after start. An address is hashed with a per-process random key (SipHash, so
//! nobody outside can aim collisions) into one bucket in each of two rows, count-min style:
//!
//! - connections: both buckets count the connection; the address's estimate is the smaller
//!   of the two. A bucket only ever holds *more* than the address's own connections (other
//!   addresses hashed there too), so the estimate never undercounts: a collision can only
//!   refuse a connection early, never let an address past its cap. An address is wrongly
//!   refused only when *both* its buckets are shared with busy addresses.
//! - negotiates: each bucket is a token bucket (tokens and the time of the last refill
//!   packed in one `AtomicU64`, updated by compare-and-swap); a negotiate takes a token from
//!   both. Addresses sharing a bucket share its tokens, so again a collision can only refuse
//!   early.
//!
//! The trade-off: an address can be refused before its cap only when *each* of its two
//! buckets also holds other addresses' connections and those fill the gap. With N active
//! addresses and [`ROW_BUCKETS`] buckets per row, a bucket is shared with probability about
//! N / [`ROW_BUCKETS`], both with about its square (1 in 300 at N = 1,000), and the others in
//! them must together hold close to the cap (1,000 by default) to matter; an exact table
//! would need a lock or an unbounded map. The cost is fixed: 2 × 16,384 × (4 + 8) bytes =
//! 384 KiB of address space, touched only where addresses land.
//!
//! IPv6 addresses count per /64 (one host usually holds a whole /64); IPv4-mapped IPv6
//! addresses count as their IPv4 address.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Buckets in each of the two rows (a power of two).
pub const ROW_BUCKETS: usize = 1 << 14;

/// Token amounts are kept in 1/256ths of a token.
const TOKEN_SCALE: u64 = 256;
/// Bits of a packed bucket holding tokens (scaled); the rest hold milliseconds.
const TOKEN_BITS: u32 = 24;
const TOKEN_MASK: u64 = (1 << TOKEN_BITS) - 1;

/// Where an address counts: its bucket in each row, from one keyed hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpSlot(u32);

impl IpSlot {
    /// The bucket index in row 0 and in row 1.
    fn buckets(self) -> (usize, usize) {
        let mask = ROW_BUCKETS - 1;
        (self.0 as usize & mask, (self.0 >> 16) as usize & mask)
    }

    /// The slot as a plain number (to carry it across shards); [`Self::from_raw`] undoes it.
    pub fn into_raw(self) -> u32 {
        self.0
    }

    /// A slot from [`Self::into_raw`].
    pub fn from_raw(raw: u32) -> Self {
        Self(raw)
    }
}

/// A connection's place in its address's count; dropping it gives the place back.
#[derive(Debug)]
pub struct IpPermit {
    /// `None` once handed over ([`Self::into_slot`]).
    limits: Option<Arc<PerIpLimits>>,
    slot: IpSlot,
}

impl IpPermit {
    /// The counted place, for a holder that gives it back itself through
    /// [`PerIpLimits::close`] (a connection's registration keeps 4 bytes instead of 16).
    pub fn into_slot(mut self) -> IpSlot {
        self.limits = None;
        self.slot
    }
}

impl Drop for IpPermit {
    fn drop(&mut self) {
        if let Some(limits) = self.limits.take() {
            limits.close(self.slot);
        }
    }
}

/// The process-wide per-address tables.
#[derive(Debug)]
pub struct PerIpLimits {
    max_connections: u32,
    /// Tokens added per second, scaled by [`TOKEN_SCALE`] (0: no negotiate limit).
    refill_per_sec: u64,
    /// Bucket capacity, scaled by [`TOKEN_SCALE`].
    burst: u64,
    hasher: std::collections::hash_map::RandomState,
    started: Instant,
    /// Open connections, two rows of [`ROW_BUCKETS`] (empty when not limited).
    connections: Box<[AtomicU32]>,
    /// Negotiate token buckets, two rows (empty when not limited). `0` is an untouched bucket
    /// (treated as full).
    negotiates: Box<[AtomicU64]>,
}

/// Why an address was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PerIpRefusal {
    /// The address holds `limits.max_connections_per_ip` connections.
    #[error("too many connections from this address (limit {0})")]
    Connections(u32),
    /// The address negotiated faster than `limits.negotiate_rate_per_ip`.
    #[error("too many negotiate requests from this address; retry in {} s", retry_after.as_secs())]
    NegotiateRate {
        /// When a token will be there again (whole seconds, at least one).
        retry_after: Duration,
    },
}

impl PerIpLimits {
    /// Tables for `max_connections` per address and a negotiate bucket of `rate` per second
    /// and `burst` (0 turns each limit off).
    pub fn new(max_connections: usize, rate: u32, burst: u32) -> Arc<Self> {
        let rows = |on: bool| if on { 2 * ROW_BUCKETS } else { 0 };
        let burst = u64::from(burst.max(1)) * TOKEN_SCALE;
        Arc::new(Self {
            max_connections: u32::try_from(max_connections).unwrap_or(u32::MAX),
            refill_per_sec: u64::from(rate) * TOKEN_SCALE,
            burst: burst.min(TOKEN_MASK),
            hasher: std::collections::hash_map::RandomState::new(),
            started: Instant::now(),
            connections: (0..rows(max_connections != 0))
                .map(|_| AtomicU32::new(0))
                .collect(),
            negotiates: (0..rows(rate != 0)).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    /// Whether open connections per address are limited.
    pub fn limits_connections(&self) -> bool {
        !self.connections.is_empty()
    }

    /// Where `ip` counts.
    pub fn slot(&self, ip: IpAddr) -> IpSlot {
        let hash = match canonical(ip) {
            IpAddr::V4(v4) => self.hasher.hash_one(v4.octets()),
            IpAddr::V6(v6) => self.hasher.hash_one(&v6.octets()[..8]),
        };
        // Both halves of the 64-bit SipHash, folded: row 0 takes bits 0-13 of the result,
        // row 1 bits 16-29.
        IpSlot((hash ^ (hash >> 32)) as u32)
    }

    /// Counts a new connection from `ip` (when connections are limited), unless that takes
    /// the address past its cap; the permit gives the place back when dropped.
    ///
    /// # Errors
    /// [`PerIpRefusal::Connections`] (nothing is counted then).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Option<IpPermit>, PerIpRefusal> {
        if !self.limits_connections() {
            return Ok(None);
        }
        let slot = self.slot(ip);
        self.open(slot)?;
        Ok(Some(IpPermit {
            limits: Some(Arc::clone(self)),
            slot,
        }))
    }

    /// Counts a new connection of `slot`, unless that takes the address past its cap.
    ///
    /// # Errors
    /// [`PerIpRefusal::Connections`] (nothing is counted then).
    pub fn open(&self, slot: IpSlot) -> Result<(), PerIpRefusal> {
        let Some((a, b)) = self.connection_buckets(slot) else {
            return Ok(());
        };
        // Count first, then look: two shards racing for an address's last place see each
        // other's increments, so the cap is never overshot (both may be refused instead).
        let first = a.fetch_add(1, Ordering::AcqRel) + 1;
        let second = b.fetch_add(1, Ordering::AcqRel) + 1;
        if first.min(second) > self.max_connections {
            a.fetch_sub(1, Ordering::AcqRel);
            b.fetch_sub(1, Ordering::AcqRel);
            return Err(PerIpRefusal::Connections(self.max_connections));
        }
        Ok(())
    }

    /// A connection counted by [`Self::open`] ended.
    pub fn close(&self, slot: IpSlot) {
        if let Some((a, b)) = self.connection_buckets(slot) {
            // Never below zero, even if a close were ever doubled.
            for bucket in [a, b] {
                let _ =
                    bucket.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
            }
        }
    }

    /// The connections counted for `slot`'s address (the count-min estimate).
    pub fn open_connections(&self, slot: IpSlot) -> u32 {
        self.connection_buckets(slot).map_or(0, |(a, b)| {
            a.load(Ordering::Acquire).min(b.load(Ordering::Acquire))
        })
    }

    fn connection_buckets(&self, slot: IpSlot) -> Option<(&AtomicU32, &AtomicU32)> {
        let (a, b) = slot.buckets();
        Some((
            self.connections.get(a)?,
            self.connections.get(ROW_BUCKETS + b)?,
        ))
    }

    /// Takes a negotiate token for `ip` now.
    ///
    /// # Errors
    /// [`PerIpRefusal::NegotiateRate`] when the address's bucket is empty.
    pub fn negotiate(&self, ip: IpAddr) -> Result<(), PerIpRefusal> {
        self.negotiate_at(self.slot(ip), self.now_ms())
    }

    fn now_ms(&self) -> u64 {
        // Packed in 40 bits: 34 years of uptime.
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX) & (u64::MAX >> 24)
    }

    fn negotiate_at(&self, slot: IpSlot, now_ms: u64) -> Result<(), PerIpRefusal> {
        let (a, b) = slot.buckets();
        let (Some(first), Some(second)) =
            (self.negotiates.get(a), self.negotiates.get(ROW_BUCKETS + b))
        else {
            return Ok(());
        };
        self.take(first, now_ms)?;
        if let Err(refusal) = self.take(second, now_ms) {
            // The first row's token was not used: give it back.
            self.refund(first);
            return Err(refusal);
        }
        Ok(())
    }

    /// Refills `bucket` up to `now_ms` and takes one token.
    fn take(&self, bucket: &AtomicU64, now_ms: u64) -> Result<(), PerIpRefusal> {
        let mut current = bucket.load(Ordering::Acquire);
        loop {
            let tokens = self.refilled(current, now_ms);
            if tokens < TOKEN_SCALE {
                let missing = TOKEN_SCALE - tokens;
                let ms = (missing * 1000).div_ceil(self.refill_per_sec.max(1));
                return Err(PerIpRefusal::NegotiateRate {
                    retry_after: Duration::from_secs(ms.div_ceil(1000).max(1)),
                });
            }
            let next = pack(tokens - TOKEN_SCALE, now_ms);
            match bucket.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(()),
                Err(actual) => current = actual,
            }
        }
    }

    /// Gives one token back to `bucket` (up to the burst).
    fn refund(&self, bucket: &AtomicU64) {
        let _ = bucket.fetch_update(Ordering::AcqRel, Ordering::Acquire, |packed| {
            let tokens = (packed & TOKEN_MASK) + TOKEN_SCALE;
            Some(pack(tokens.min(self.burst), packed >> TOKEN_BITS))
        });
    }

    /// The tokens of a packed bucket after refilling it up to `now_ms`.
    fn refilled(&self, packed: u64, now_ms: u64) -> u64 {
        if packed == 0 {
            return self.burst;
        }
        let (tokens, at) = (packed & TOKEN_MASK, packed >> TOKEN_BITS);
        let elapsed = now_ms.saturating_sub(at);
        let added = elapsed.saturating_mul(self.refill_per_sec) / 1000;
        tokens.saturating_add(added).min(self.burst)
    }
}

/// Tokens and time in one word; never `0` (which marks an untouched bucket).
fn pack(tokens: u64, at_ms: u64) -> u64 {
    ((at_ms << TOKEN_BITS) | (tokens & TOKEN_MASK)).max(1)
}

/// IPv4-mapped IPv6 as IPv4; other addresses as they are.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_address_gets_its_cap_and_no_more_and_its_places_come_back() {
        let limits = PerIpLimits::new(3, 0, 1);
        let slot = limits.slot(ip("10.0.0.1"));
        for _ in 0..3 {
            limits.open(slot).unwrap();
        }
        assert_eq!(limits.open(slot), Err(PerIpRefusal::Connections(3)));
        assert_eq!(limits.open_connections(slot), 3, "a refusal counts nothing");
        limits.close(slot);
        limits.open(slot).unwrap();
        let other = limits.slot(ip("10.0.0.2"));
        limits.open(other).unwrap();
    }

    #[test]
    fn ipv4_mapped_and_same_64_addresses_count_together() {
        let limits = PerIpLimits::new(1, 0, 1);
        assert_eq!(
            limits.slot(ip("::ffff:10.0.0.1")),
            limits.slot(ip("10.0.0.1"))
        );
        assert_eq!(
            limits.slot(ip("2001:db8:1:2::1")),
            limits.slot(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            limits.slot(ip("2001:db8:1:2::1")),
            limits.slot(ip("2001:db8:1:3::1"))
        );
    }

    #[test]
    fn zero_turns_each_limit_off() {
        let limits = PerIpLimits::new(0, 0, 1);
        let slot = limits.slot(ip("10.0.0.1"));
        for _ in 0..10_000 {
            limits.open(slot).unwrap();
            limits.negotiate(ip("10.0.0.1")).unwrap();
        }
        assert!(!limits.limits_connections());
    }

    #[test]
    fn the_negotiate_bucket_holds_the_burst_then_refills_at_the_rate() {
        let limits = PerIpLimits::new(0, 10, 5);
        let slot = limits.slot(ip("10.0.0.1"));
        for _ in 0..5 {
            limits.negotiate_at(slot, 1_000).unwrap();
        }
        let refused = limits.negotiate_at(slot, 1_000).unwrap_err();
        assert_eq!(
            refused,
            PerIpRefusal::NegotiateRate {
                retry_after: Duration::from_secs(1)
            }
        );
        // 10 per second: one token after 100 ms, not before.
        assert!(limits.negotiate_at(slot, 1_050).is_err());
        limits.negotiate_at(slot, 1_100).unwrap();
        assert!(limits.negotiate_at(slot, 1_100).is_err());
        // A long pause refills up to the burst, not beyond.
        for _ in 0..5 {
            limits.negotiate_at(slot, 60_000).unwrap();
        }
        assert!(limits.negotiate_at(slot, 60_000).is_err());
        // Another address has its own bucket.
        limits
            .negotiate_at(limits.slot(ip("10.0.0.2")), 60_000)
            .unwrap();
    }

    #[test]
    fn shards_racing_for_an_address_last_place_never_overshoot() {
        let limits = PerIpLimits::new(50, 0, 1);
        let slot = limits.slot(ip("10.9.8.7"));
        let taken: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| (0..100).filter(|_| limits.open(slot).is_ok()).count()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert!(taken <= 50, "{taken} places taken");
        assert_eq!(limits.open_connections(slot), taken as u32);
    }

    #[test]
    fn collisions_only_ever_refuse_early_never_admit_past_the_cap() {
        // Many addresses at a small cap: whatever shares buckets, no address exceeds it.
        let limits = PerIpLimits::new(2, 0, 1);
        let mut admitted = std::collections::HashMap::new();
        for host in 0..1_000u32 {
            let address = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + host));
            for _ in 0..3 {
                if limits.open(limits.slot(address)).is_ok() {
                    *admitted.entry(address).or_insert(0) += 1;
                }
            }
        }
        assert!(admitted.values().all(|&n| n <= 2));
        // Nearly every address still got its full cap: one needs both of its buckets shared
        // to be refused early (about 1 in 300 here).
        let full = admitted.values().filter(|&&n| n == 2).count();
        assert!(full >= 980, "{full} of 1,000 got their cap");
    }
}
