//! Stream invocations: every connection calls `Stream(n)` (a type 4 StreamInvocation) and
//! waits for its items and Completion, in a loop. Latency is the whole stream's duration.

use std::rc::Rc;

use crate::cli::{Common, StreamArgs};
use crate::clock::{self, now_ns};
use crate::conn::Conn;
use crate::recorder::{Counter, Hist};
use crate::run::ThreadEnv;
use crate::signalr::Arg;

use super::{client_for, drain, in_flight_per_thread, open_all, share};

/// Runs this thread's share.
pub async fn run(env: &ThreadEnv, common: &Common, args: &StreamArgs) -> anyhow::Result<()> {
    let client = client_for(env, common, &common.url)?;
    let mine = share(args.connections, env.slot, env.slots);
    let conns: Vec<Rc<Conn>> = open_all(
        &client,
        &common.hub,
        mine.collect(),
        in_flight_per_thread(common),
        None,
        true,
    )
    .await
    .into_iter()
    .flatten()
    .collect();
    let start = env.barrier(0, &client).await;
    let window_start = start + clock::ns(common.warmup);
    let end = window_start + clock::ns(common.duration);
    client.set_window(window_start, end);
    client.set_running(true);
    let items = args.items.max(0);
    let mut loops = Vec::new();
    for conn in conns {
        let client = client.clone();
        loops.push(monoio::spawn(async move {
            let rec = client.rec.clone();
            while conn.is_open() {
                let started = now_ns();
                client.keepalive(started);
                if started >= end {
                    break;
                }
                let counted = client.in_window(started);
                rec.add(Counter::SentTotal, 1);
                if counted {
                    rec.add(Counter::Sent, 1);
                    rec.add(Counter::Expected, items as u64);
                }
                match conn.stream("Stream", &[Arg::Int(items)]).await {
                    Ok(done) if done.error.is_none() => {
                        if counted {
                            rec.add(Counter::Delivered, done.items);
                            rec.record(Hist::Latency, done.at_ns - started);
                        }
                        rec.add(Counter::ReceivedTotal, done.items);
                        rec.record(Hist::Recent, done.at_ns - started);
                    }
                    Ok(done) => {
                        let error = done.error.unwrap_or_default();
                        rec.error(|| format!("Stream failed: {error}"));
                    }
                    Err(_) => break,
                }
            }
        }));
    }
    for l in loops {
        l.await;
    }
    drain(env, &client, end, common.drain).await;
    client.set_running(false);
    Ok(())
}
