//! S3: group sends. Member `i` belongs to group `g{i / group_size}`; senders are spread
//! evenly over the members and each invokes `SendToGroup(its group, payload)` (without an
//! invocation id), so a send is expected to reach every member of the sender's group.
//!
//! Churn adds, on top: `JoinGroup`/`LeaveGroup` calls on members (extra `j…` groups that
//! receive no sends; their completion times are the group-op latency), and reconnects of
//! extra connections that each belong to `churner_groups` groups of their own.
//!
//! Raw (peer servers): a connection joins its groups by its path, `/ws/group/NAME[,NAME…]`,
//! and each message it sends goes to every member of the first group named, itself included.
//! A sender sends the frame a SignalR member would receive
//! (`{"type":1,"target":"Send","arguments":["…"]}` + `0x1E`), so delivered frames have the
//! same length on both wires. There are no invocations, so no joins or leaves after the
//! connect: raw churn is the reconnects only.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use crate::cli::Common;
use crate::client::{Client, Wire};
use crate::clock::{self, now_ns};
use crate::conn::Conn;
use crate::payload::{self, Stamp};
use crate::recorder::{Counter, Hist};
use crate::run::ThreadEnv;
use crate::schedule::{self, Pacer};
use crate::signalr::Arg;

use super::{
    GroupShape, client_for, concurrently, drain, in_flight_per_thread, open_all, open_one, share,
};

/// Group of member `i`.
fn group_of(shape: &GroupShape, member: usize) -> String {
    format!("g{}", member / shape.group_size)
}

/// Members in member `i`'s group.
fn group_len(shape: &GroupShape, member: usize) -> u64 {
    let start = member / shape.group_size * shape.group_size;
    (shape.connections.min(start + shape.group_size) - start) as u64
}

/// Whether member `i` is a sender: senders sit at `j * connections / senders`.
fn is_sender(shape: &GroupShape, member: usize) -> bool {
    let (n, s) = (
        shape.connections as u128,
        shape.senders.min(shape.connections) as u128,
    );
    if s == 0 {
        return false;
    }
    // member i is sender j iff i == floor(j * n / s) for some j.
    let i = member as u128;
    let j = (i * s).div_ceil(n);
    j < s && j * n / s == i
}

/// Groups of churner `c`.
fn churner_groups(shape: &GroupShape, churner: usize) -> Vec<String> {
    (0..shape.churner_groups)
        .map(|k| format!("k{}", churner * shape.churner_groups + k))
        .collect()
}

/// The raw wire's path for a connection in `groups` (the first is the one it sends to).
fn raw_path(groups: &[String]) -> String {
    format!("/ws/group/{}", groups.join(","))
}

/// Joins `groups` on `conn`, all at once; true if every join completed without error.
async fn join_all(client: &Client, conn: &Conn, groups: &[String], hist: Option<Hist>) -> bool {
    let started = now_ns();
    let waits: Vec<_> = groups
        .iter()
        .map(|g| conn.invoke("JoinGroup", &[Arg::Str(g.as_bytes())]))
        .collect();
    let mut ok = true;
    for wait in waits {
        match wait.await {
            Ok(done) if done.error.is_none() => {
                client.rec.add(Counter::GroupOps, 1);
                if let Some(hist) = hist {
                    client.rec.record(hist, done.at_ns.saturating_sub(started));
                }
            }
            Ok(done) => {
                ok = false;
                let error = done.error.unwrap_or_default();
                client.rec.error(|| format!("JoinGroup failed: {error}"));
            }
            Err(_) => {
                ok = false;
                client
                    .rec
                    .error(|| format!("connection {} closed during JoinGroup", conn.index));
            }
        }
    }
    ok
}

/// Runs this thread's share of S3.
pub async fn run(env: &ThreadEnv, common: &Common, shape: &GroupShape) -> anyhow::Result<()> {
    let client = client_for(env, common, &common.url)?;
    let raw = client.settings.wire == Wire::Raw;
    let limit = in_flight_per_thread(common);
    let members_range = share(shape.connections, env.slot, env.slots);
    let member_ids: Vec<usize> = members_range.clone().collect();
    let members = if raw {
        open_each(&client, &member_ids, limit, |member| {
            raw_path(&[group_of(shape, member)])
        })
        .await
    } else {
        open_all(&client, &common.hub, member_ids.clone(), limit, None, true).await
    };
    let members = Rc::new(members);
    if !raw {
        let (client, members, shape) = (client.clone(), members.clone(), shape.clone());
        let ids = member_ids.clone();
        concurrently(members.len(), limit, move |k| {
            let (client, members, shape) = (client.clone(), members.clone(), shape.clone());
            let member = ids[k];
            async move {
                let conn = members[k].clone()?;
                join_all(
                    &client,
                    &conn,
                    &[group_of(&shape, member)],
                    Some(Hist::SetupJoin),
                )
                .await
                .then_some(())
            }
        })
        .await;
    }
    let churner_range = share(shape.churners, env.slot, env.slots);
    let churners: Rc<RefCell<Vec<Option<Rc<Conn>>>>> = Rc::new(RefCell::new(Vec::new()));
    {
        let ids: Vec<usize> = churner_range.clone().collect();
        let opened = if raw {
            let indices: Vec<usize> = ids.iter().map(|c| shape.connections + c).collect();
            open_each(&client, &indices, limit, |index| {
                raw_path(&churner_groups(shape, index - shape.connections))
            })
            .await
        } else {
            open_all(
                &client,
                &common.hub,
                ids.iter().map(|c| shape.connections + c).collect(),
                limit,
                None,
                true,
            )
            .await
        };
        let opened = Rc::new(opened);
        let (client2, opened2, shape2) = (client.clone(), opened.clone(), shape.clone());
        let joins = if raw { 0 } else { ids.len() };
        concurrently(joins, limit, move |k| {
            let (client, opened, shape) = (client2.clone(), opened2.clone(), shape2.clone());
            let churner = ids[k];
            async move {
                let conn = opened[k].clone()?;
                join_all(
                    &client,
                    &conn,
                    &churner_groups(&shape, churner),
                    Some(Hist::SetupJoin),
                )
                .await
                .then_some(())
            }
        })
        .await;
        *churners.borrow_mut() = Rc::try_unwrap(opened).unwrap_or_else(|rc| (*rc).clone());
    }

    let senders: Vec<(usize, Rc<Conn>)> = member_ids
        .iter()
        .zip(members.iter())
        .filter(|(i, _)| is_sender(shape, **i))
        .filter_map(|(i, c)| c.clone().map(|c| (*i, c)))
        .collect();
    let sender_share = member_ids.iter().filter(|i| is_sender(shape, **i)).count();
    let joiners: Vec<Rc<Conn>> = members.iter().flatten().cloned().collect();

    let start = env.barrier(0, &client).await;
    let window_start = start + clock::ns(common.warmup);
    let end = window_start + clock::ns(common.duration);
    client.set_window(window_start, end);
    client.set_running(true);
    let rec = env.rec();
    let slots = env.slots as f64;
    let total_senders = shape.senders.min(shape.connections).max(1) as f64;
    let mut pacers = [
        Pacer::new(start, end, shape.rate * sender_share as f64 / total_senders),
        Pacer::new(start, end, shape.join_rate / slots),
        Pacer::new(start, end, shape.leave_rate / slots),
        Pacer::new(start, end, shape.reconnect_rate / slots),
    ];
    let mut body = Vec::with_capacity(shape.size + 32);
    let mut joined: VecDeque<(Rc<Conn>, String)> = VecDeque::new();
    let mut join_seq = 0usize;
    let mut reconnect_seq = 0usize;
    let churner_ids: Vec<usize> = churner_range.collect();
    schedule::run(
        &client,
        &mut pacers,
        common.spin_us * 1000,
        |which, i, due| {
            let in_window = client.in_window(due);
            match which {
                0 => {
                    if senders.is_empty() {
                        return;
                    }
                    let (member, conn) = &senders[i as usize % senders.len()];
                    if !conn.is_open() {
                        return;
                    }
                    payload::write(
                        &mut body,
                        Stamp {
                            scheduled_ns: due,
                            seq: i,
                        },
                        shape.size,
                    );
                    if raw {
                        // The connection's path named its group.
                        conn.send_text(|out| {
                            out.extend_from_slice(br#"{"type":1,"target":"Send","arguments":[""#);
                            out.extend_from_slice(&body);
                            out.extend_from_slice(b"\"]}\x1e");
                        });
                    } else {
                        let group = group_of(shape, *member);
                        conn.send(
                            "SendToGroup",
                            &[Arg::Str(group.as_bytes()), Arg::Str(&body)],
                            false,
                        );
                    }
                    rec.add(Counter::SentTotal, 1);
                    if in_window {
                        rec.add(Counter::Sent, 1);
                        rec.add(Counter::Expected, group_len(shape, *member));
                    }
                }
                1 => {
                    if joiners.is_empty() {
                        return;
                    }
                    let conn = joiners[join_seq % joiners.len()].clone();
                    let group = format!("j{}", join_seq % 1000);
                    join_seq += 1;
                    let done = conn.invoke("JoinGroup", &[Arg::Str(group.as_bytes())]);
                    joined.push_back((conn, group));
                    monoio::spawn(record_op(client.clone(), done, due, in_window, Hist::Join));
                }
                2 => {
                    let Some((conn, group)) = joined.pop_front() else {
                        return;
                    };
                    let done = conn.invoke("LeaveGroup", &[Arg::Str(group.as_bytes())]);
                    monoio::spawn(record_op(client.clone(), done, due, in_window, Hist::Leave));
                }
                _ => {
                    if churner_ids.is_empty() {
                        return;
                    }
                    let slot = reconnect_seq % churner_ids.len();
                    reconnect_seq += 1;
                    let Some(old) = churners.borrow_mut()[slot].take() else {
                        return; // still reconnecting from last time
                    };
                    old.close();
                    let churner = churner_ids[slot];
                    let (client, churners, shape) =
                        (client.clone(), churners.clone(), shape.clone());
                    let groups = churner_groups(&shape, churner);
                    let path = if raw {
                        raw_path(&groups)
                    } else {
                        common.hub.clone()
                    };
                    monoio::spawn(async move {
                        let index = shape.connections + churner;
                        let Some(conn) = open_one(&client, &path, index, true).await else {
                            return;
                        };
                        // Raw: the path joined the groups.
                        if raw || join_all(&client, &conn, &groups, None).await {
                            client.rec.add(Counter::Reconnects, 1);
                            if in_window {
                                client
                                    .rec
                                    .record(Hist::Reconnect, now_ns().saturating_sub(due));
                            }
                        }
                        churners.borrow_mut()[slot] = Some(conn);
                    });
                }
            }
        },
    )
    .await;
    drain(env, &client, end, common.drain).await;
    client.set_running(false);
    Ok(())
}

/// Opens connections `indices`, each to its own path (`path_of(index)`), at most `limit`
/// handshakes at once.
async fn open_each(
    client: &Rc<Client>,
    indices: &[usize],
    limit: usize,
    path_of: impl Fn(usize) -> String,
) -> Vec<Option<Rc<Conn>>> {
    let jobs: Rc<Vec<(usize, String)>> =
        Rc::new(indices.iter().map(|&i| (i, path_of(i))).collect());
    let client = client.clone();
    concurrently(jobs.len(), limit, move |k| {
        let (client, jobs) = (client.clone(), jobs.clone());
        async move {
            let (index, path) = &jobs[k];
            open_one(&client, path, *index, true).await
        }
    })
    .await
}

async fn record_op(
    client: Rc<Client>,
    done: futures_channel::oneshot::Receiver<crate::conn::Completed>,
    due: u64,
    in_window: bool,
    hist: Hist,
) {
    match done.await {
        Ok(done) if done.error.is_none() => {
            client.rec.add(Counter::GroupOps, 1);
            if in_window {
                client.rec.record(hist, done.at_ns.saturating_sub(due));
            }
        }
        Ok(done) => {
            let error = done.error.unwrap_or_default();
            client
                .rec
                .error(|| format!("{} failed: {error}", hist.key()));
        }
        Err(_) => client
            .rec
            .error(|| format!("connection closed during {}", hist.key())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(connections: usize, group_size: usize, senders: usize) -> GroupShape {
        GroupShape {
            connections,
            group_size,
            rate: senders as f64,
            senders,
            size: 16,
            join_rate: 0.0,
            leave_rate: 0.0,
            reconnect_rate: 0.0,
            churners: 0,
            churner_groups: 10,
        }
    }

    #[test]
    fn senders_are_spread_evenly_over_the_groups() {
        let s = shape(10_000, 10, 2000);
        let senders: Vec<usize> = (0..10_000).filter(|&i| is_sender(&s, i)).collect();
        assert_eq!(senders.len(), 2000);
        for group in 0..1000 {
            let in_group = senders.iter().filter(|&&i| i / 10 == group).count();
            assert_eq!(in_group, 2, "group {group}");
        }
        let big = shape(10_000, 1000, 20);
        assert_eq!((0..10_000).filter(|&i| is_sender(&big, i)).count(), 20);
    }

    #[test]
    fn a_last_partial_group_expects_only_its_members() {
        let s = shape(25, 10, 5);
        assert_eq!(group_len(&s, 0), 10);
        assert_eq!(group_len(&s, 24), 5);
        assert_eq!(group_of(&s, 24), "g2");
    }

    #[test]
    fn a_raw_path_names_every_group_and_sends_to_the_first() {
        assert_eq!(raw_path(&["g3".to_owned()]), "/ws/group/g3");
        let s = shape(10, 10, 1);
        assert_eq!(raw_path(&churner_groups(&s, 1)[..2]), "/ws/group/k10,k11");
    }

    #[test]
    fn churners_get_groups_of_their_own() {
        let s = shape(10, 10, 1);
        let a = churner_groups(&s, 0);
        let b = churner_groups(&s, 1);
        assert_eq!(a.len(), 10);
        assert!(a.iter().all(|g| !b.contains(g)));
    }
}
