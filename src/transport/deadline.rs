//! Bounding an operation in time without a per-connection timer: the connection schedules a
//! wake-up in the shard's [`Timers`] and races the operation against its own signal.

use std::future::Future;
use std::pin::pin;

use quanta::Instant;

use crate::shard::connections::{ConnectionHandle, Signal};
use crate::shard::timers::Timers;

/// The deadline passed before the operation finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut;

/// Runs `operation` to completion unless `deadline` passes first (then it is dropped).
///
/// Signals that arrive meanwhile are not lost: a graceful stop stays visible through
/// [`ConnectionSignal::is_shutdown`](crate::shard::connections::ConnectionSignal::is_shutdown),
/// and an [`Signal::Outbound`] wake-up is raised again when the operation ends.
///
/// # Errors
/// [`TimedOut`] when the deadline passed.
pub async fn within<F: Future>(
    operation: F,
    deadline: Instant,
    connection: &ConnectionHandle,
    timers: &Timers,
) -> Result<F::Output, TimedOut> {
    let mut operation = pin!(operation);
    let mut outbound = false;
    let result = loop {
        if timers.now() >= deadline {
            break Err(TimedOut);
        }
        connection.arm(deadline, timers);
        let woken = monoio::select! {
            output = &mut operation => break Ok(output),
            signal = connection.signal.wait() => signal,
        };
        match woken {
            // Messages queued meanwhile are for the caller's loop: hand the wake-up back.
            Signal::Outbound => outbound = true,
            Signal::Timer | Signal::Shutdown => {}
        }
    };
    if outbound {
        connection.signal.raise(Signal::Outbound);
    }
    result
}
