//! S1: open N connections at a ramp rate, hold them idle (keepalives only), count drops.
//!
//! Barrier 0: nothing open yet (the server's memory is sampled). Then the ramp. Barrier 1:
//! every connection is up (memory sampled again, the hold window starts).

use crate::cli::{Common, S1Args};
use crate::run::ThreadEnv;

use super::{client_for, in_flight_per_thread, open_all, path_for, share};

/// Runs this thread's share of S1.
pub async fn run(env: &ThreadEnv, common: &Common, args: &S1Args) -> anyhow::Result<()> {
    let client = client_for(env, common, &common.url)?;
    let mine = share(args.connections, env.slot, env.slots);
    let path = path_for(common, &args.raw_path);
    let start = env.barrier(0, &client).await;
    let rate = args.ramp * mine.len() as f64 / args.connections.max(1) as f64;
    let conns = open_all(
        &client,
        &path,
        mine.collect(),
        in_flight_per_thread(common),
        Some((start, rate)),
        true,
    )
    .await;
    client.set_running(true);
    let hold_start = env.barrier(1, &client).await;
    client.set_window(hold_start, hold_start + crate::clock::ns(args.hold));
    client
        .idle_until(hold_start + crate::clock::ns(args.hold))
        .await;
    client.set_running(false);
    drop(conns);
    Ok(())
}
