//! S2 (and S5 broadcast): one publisher, N subscribers. SignalR: the publisher invokes
//! `SendToAll(payload)` without an invocation id and subscribers receive `Send(payload)`.
//! Raw: the publisher sends the frame a SignalR subscriber would receive to `/ws/publish`,
//! and peers deliver it to every `/ws/broadcast` connection.

use std::rc::Rc;
use std::time::Duration;

use crate::cli::Common;
use crate::client::Wire;
use crate::clock::{self, now_ns};
use crate::conn::Conn;
use crate::payload::{self, Stamp};
use crate::recorder::Counter;
use crate::run::ThreadEnv;
use crate::schedule::{self, Pacer};
use crate::signalr::Arg;

use super::{
    check_oversize, client_for, drain, in_flight_per_thread, open_all, open_one, path_for, share,
};

/// Broadcast parameters.
#[derive(Debug, Clone)]
pub struct Params {
    /// Subscribers over all threads and processes.
    pub subscribers: usize,
    /// Messages per second (0 = closed loop).
    pub rate: f64,
    /// Payload size.
    pub size: usize,
    /// Closed loop: messages in flight.
    pub window: u64,
}

/// Queues one broadcast of `body` on the publisher.
pub(super) fn publish(publisher: &Conn, raw: bool, body: &[u8]) {
    if raw {
        publisher.send_text(|out| {
            out.extend_from_slice(br#"{"type":1,"target":"Send","arguments":[""#);
            out.extend_from_slice(body);
            out.extend_from_slice(b"\"]}\x1e");
        });
    } else {
        publisher.send("SendToAll", &[Arg::Str(body)], false);
    }
}

/// Runs this thread's share; the publisher lives on slot 0.
pub async fn run(
    env: &ThreadEnv,
    common: &Common,
    p: &Params,
    oversize: Option<usize>,
) -> anyhow::Result<()> {
    let client = client_for(env, common, &common.url)?;
    let raw = client.settings.wire == Wire::Raw;
    let mine = share(p.subscribers, env.slot, env.slots);
    let subscriber_path = path_for(common, "/ws/broadcast");
    let publisher_path = path_for(common, "/ws/publish");
    let subscribers = open_all(
        &client,
        &subscriber_path,
        mine.collect(),
        in_flight_per_thread(common),
        None,
        true,
    )
    .await;
    let publisher: Option<Rc<Conn>> = if env.slot == 0 {
        open_one(&client, &publisher_path, p.subscribers, false).await
    } else {
        None
    };
    if let (Some(size), 0) = (oversize, env.slot) {
        let path = path_for(common, "/ws/echo");
        check_oversize(&client, &path, p.subscribers + 1, size).await;
    }
    let start = env.barrier(0, &client).await;
    let window_start = start + clock::ns(common.warmup);
    let end = window_start + clock::ns(common.duration);
    client.set_window(window_start, end);
    client.set_running(true);
    let rec = env.rec();
    let fanout = p.subscribers as u64;
    let mut body = Vec::with_capacity(p.size + 32);
    match publisher {
        None => client.idle_until(end).await,
        Some(publisher) if p.rate > 0.0 => {
            let mut pacers = [Pacer::new(start, end, p.rate)];
            schedule::run(&client, &mut pacers, common.spin_us * 1000, |_, i, due| {
                payload::write(
                    &mut body,
                    Stamp {
                        scheduled_ns: due,
                        seq: i,
                    },
                    p.size,
                );
                publish(&publisher, raw, &body);
                rec.add(Counter::SentTotal, 1);
                if client.in_window(due) {
                    rec.add(Counter::Sent, 1);
                    rec.add(Counter::Expected, fanout);
                }
            })
            .await;
        }
        Some(publisher) => {
            // Closed loop: message k goes out once message k - window reached everyone.
            let Some(gate) = client.gate.clone() else {
                anyhow::bail!("closed-loop broadcast without a gate");
            };
            let window = p.window.max(1);
            let mut skipped = 0u64;
            let mut k = 0u64;
            while publisher.is_open() {
                let now = now_ns();
                client.keepalive(now);
                if now >= end {
                    break;
                }
                if k >= window {
                    let need = ((k + 1 - window) * fanout).saturating_sub(skipped);
                    let waited =
                        monoio::time::timeout(Duration::from_secs(1), gate.reached(need)).await;
                    if waited.is_err() {
                        let missing = need.saturating_sub(gate.delivered());
                        skipped += missing;
                        rec.error(|| {
                            format!("broadcast {k}: {missing} deliveries missing after 1 s")
                        });
                    }
                }
                let now = now_ns();
                payload::write(
                    &mut body,
                    Stamp {
                        scheduled_ns: now,
                        seq: k,
                    },
                    p.size,
                );
                publish(&publisher, raw, &body);
                k += 1;
                rec.add(Counter::SentTotal, 1);
                if client.in_window(now) {
                    rec.add(Counter::Sent, 1);
                    rec.add(Counter::Expected, fanout);
                }
            }
        }
    }
    drain(env, &client, end, common.drain).await;
    client.set_running(false);
    drop(subscribers);
    Ok(())
}
