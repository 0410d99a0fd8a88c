//! S4 (and S5 echo): `Echo(payload)` round trips. Open loop: invocations at an aggregate rate,
//! round-robin over the connections, latency from the scheduled time. Closed loop: every
//! connection sends its next invocation when the previous one came back.

use std::rc::Rc;
use std::time::Duration;

use crate::cli::Common;
use crate::clock::{self, now_ns};
use crate::conn::Conn;
use crate::payload::{self, Stamp};
use crate::recorder::Counter;
use crate::run::ThreadEnv;
use crate::schedule::{self, Pacer};
use crate::signalr::Arg;

use super::{check_oversize, client_for, drain, in_flight_per_thread, open_all, path_for, share};

/// Echo parameters.
#[derive(Debug, Clone)]
pub struct Params {
    /// Connections over all threads and processes.
    pub connections: usize,
    /// Aggregate invocations per second (0 = closed loop).
    pub rate: f64,
    /// Payload size.
    pub size: usize,
}

/// Runs this thread's share; `oversize` also runs the oversize check (S5).
pub async fn run(
    env: &ThreadEnv,
    common: &Common,
    p: &Params,
    oversize: Option<usize>,
) -> anyhow::Result<()> {
    let client = client_for(env, common, &common.url)?;
    let mine = share(p.connections, env.slot, env.slots);
    let share_len = mine.len();
    let path = path_for(common, "/ws/echo");
    let conns: Vec<Rc<Conn>> = open_all(
        &client,
        &path,
        mine.collect(),
        in_flight_per_thread(common),
        None,
        true,
    )
    .await
    .into_iter()
    .flatten()
    .collect();
    if let (Some(size), 0) = (oversize, env.slot) {
        check_oversize(&client, &path, p.connections + env.slot, size).await;
    }
    let start = env.barrier(0, &client).await;
    let window_start = start + clock::ns(common.warmup);
    let end = window_start + clock::ns(common.duration);
    client.set_window(window_start, end);
    client.set_running(true);
    let rec = env.rec();
    if conns.is_empty() {
        client.idle_until(end).await;
    } else if p.rate > 0.0 {
        let rate = p.rate * share_len as f64 / p.connections.max(1) as f64;
        let mut pacers = [Pacer::new(start, end, rate)];
        let mut body = Vec::with_capacity(p.size + 32);
        schedule::run(&client, &mut pacers, common.spin_us * 1000, |_, i, due| {
            let conn = &conns[i as usize % conns.len()];
            if !conn.is_open() {
                return;
            }
            payload::write(
                &mut body,
                Stamp {
                    scheduled_ns: due,
                    seq: i,
                },
                p.size,
            );
            conn.send("Echo", &[Arg::Str(&body)], true);
            rec.add(Counter::SentTotal, 1);
            if client.in_window(due) {
                rec.add(Counter::Sent, 1);
                rec.add(Counter::Expected, 1);
            }
        })
        .await;
    } else {
        let mut loops = Vec::new();
        for conn in conns.iter().cloned() {
            let (client, rec, size) = (client.clone(), rec.clone(), p.size);
            loops.push(monoio::spawn(async move {
                let mut body = Vec::with_capacity(size + 32);
                let mut seq = 0;
                while conn.is_open() {
                    let now = now_ns();
                    client.keepalive(now);
                    if now >= end {
                        break;
                    }
                    let reply = conn.next_delivery();
                    payload::write(
                        &mut body,
                        Stamp {
                            scheduled_ns: now,
                            seq,
                        },
                        size,
                    );
                    seq += 1;
                    conn.send("Echo", &[Arg::Str(&body)], true);
                    rec.add(Counter::SentTotal, 1);
                    if client.in_window(now) {
                        rec.add(Counter::Sent, 1);
                        rec.add(Counter::Expected, 1);
                    }
                    if monoio::time::timeout(Duration::from_secs(5), reply)
                        .await
                        .is_err()
                    {
                        rec.error(|| format!("connection {}: no echo within 5 s", conn.index));
                    }
                }
            }));
        }
        for l in loops {
            l.await;
        }
    }
    drain(env, &client, end, common.drain).await;
    client.set_running(false);
    Ok(())
}
