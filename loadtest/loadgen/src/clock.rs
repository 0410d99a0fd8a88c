//! The one clock every process on the host shares: `CLOCK_MONOTONIC` in nanoseconds.
//!
//! Payloads carry their scheduled send time on this clock, so a message published by one
//! load generator process can be timed by another one (or by another thread) on receipt.

use std::time::Duration;

/// Nanoseconds on `CLOCK_MONOTONIC` (shared by all processes on one host).
pub fn now_ns() -> u64 {
    crate::os::monotonic_ns()
}

/// Converts a duration to nanoseconds, saturating at `u64::MAX`.
pub fn ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Sleeps (on the current monoio runtime) until `deadline_ns` on the monotonic clock.
///
/// The runtime's timer wheel has millisecond granularity, so this can wake up to about a
/// millisecond late; the pacer ([`crate::schedule::run`]) sleeps on a timerfd instead.
pub async fn sleep_until(deadline_ns: u64) {
    let now = now_ns();
    if deadline_ns > now {
        monoio::time::sleep(Duration::from_nanos(deadline_ns - now)).await;
    }
}
