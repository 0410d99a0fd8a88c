//! S6: subscribers on instance B join one group; a publisher on instance A (or on B with
//! `--same-instance`) invokes `SendToGroup(group, payload)` at a fixed rate, so every message
//! crosses Redis. Redis `INFO commandstats` is read at the window's edges by the
//! coordinator. Raw (peer servers): subscribers connect to B's `/ws/broadcast` and the
//! publisher sends the frame a SignalR subscriber would receive to A's `/ws/publish`; the
//! peer carries it across Redis itself.

use std::rc::Rc;

use crate::cli::{Common, S6Args};
use crate::client::Wire;
use crate::clock;
use crate::conn::Conn;
use crate::payload::{self, Stamp};
use crate::recorder::{Counter, Hist};
use crate::run::ThreadEnv;
use crate::schedule::{self, Pacer};
use crate::signalr::Arg;

use super::{
    broadcast, client_for, concurrently, drain, in_flight_per_thread, open_all, open_one, path_for,
    share,
};

/// Runs this thread's share of S6; the publisher lives on slot 0.
pub async fn run(env: &ThreadEnv, common: &Common, args: &S6Args) -> anyhow::Result<()> {
    let client = client_for(env, common, &common.url)?;
    let raw = client.settings.wire == Wire::Raw;
    let limit = in_flight_per_thread(common);
    let mine = share(args.subscribers, env.slot, env.slots);
    let subscriber_path = path_for(common, "/ws/broadcast");
    let subscribers =
        Rc::new(open_all(&client, &subscriber_path, mine.collect(), limit, None, true).await);
    if !raw {
        let (client, subscribers, group) =
            (client.clone(), subscribers.clone(), args.group.clone());
        concurrently(subscribers.len(), limit, move |k| {
            let (client, subscribers, group) = (client.clone(), subscribers.clone(), group.clone());
            async move {
                let conn = subscribers[k].clone()?;
                let started = clock::now_ns();
                match conn
                    .invoke("JoinGroup", &[Arg::Str(group.as_bytes())])
                    .await
                {
                    Ok(done) if done.error.is_none() => {
                        client.rec.add(Counter::GroupOps, 1);
                        client.rec.record(Hist::SetupJoin, done.at_ns - started);
                        Some(())
                    }
                    Ok(done) => {
                        let error = done.error.unwrap_or_default();
                        client.rec.error(|| format!("JoinGroup failed: {error}"));
                        None
                    }
                    Err(_) => {
                        client
                            .rec
                            .error(|| "connection closed during JoinGroup".into());
                        None
                    }
                }
            }
        })
        .await;
    }
    // The publisher has a client of its own (another URL), sharing this thread's recorder.
    let url = if args.same_instance {
        common.url.as_str()
    } else {
        args.publish_url.as_deref().unwrap_or(&common.url)
    };
    let publish_client = client_for(env, common, url)?;
    let publisher: Option<Rc<Conn>> = if env.slot == 0 {
        open_one(
            &publish_client,
            &path_for(common, "/ws/publish"),
            args.subscribers,
            false,
        )
        .await
    } else {
        None
    };
    let start = env.barrier(0, &client).await;
    let window_start = start + clock::ns(common.warmup);
    let end = window_start + clock::ns(common.duration);
    for c in [&client, &publish_client] {
        c.set_window(window_start, end);
        c.set_running(true);
    }
    let rec = env.rec();
    match publisher {
        Some(publisher) => {
            let fanout = args.subscribers as u64;
            let mut body = Vec::with_capacity(args.size + 32);
            let mut pacers = [Pacer::new(start, end, args.rate)];
            schedule::run(&client, &mut pacers, common.spin_us * 1000, |_, i, due| {
                if !publisher.is_open() {
                    return;
                }
                payload::write(
                    &mut body,
                    Stamp {
                        scheduled_ns: due,
                        seq: i,
                    },
                    args.size,
                );
                if raw {
                    broadcast::publish(&publisher, true, &body);
                } else {
                    publisher.send(
                        "SendToGroup",
                        &[Arg::Str(args.group.as_bytes()), Arg::Str(&body)],
                        false,
                    );
                }
                rec.add(Counter::SentTotal, 1);
                if client.in_window(due) {
                    rec.add(Counter::Sent, 1);
                    rec.add(Counter::Expected, fanout);
                }
            })
            .await;
        }
        None => client.idle_until(end).await,
    }
    drain(env, &client, end, common.drain).await;
    client.set_running(false);
    publish_client.set_running(false);
    Ok(())
}
