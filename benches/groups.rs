//! The shard's group table (`src/shard/groups.rs`, `GroupTable`): the operations behind
//! `JoinGroup`, `LeaveGroup`, a send to a group, and a connection that ends.
//!
//! - Group `group_table_10k_groups`: 10,000 groups of one hub are alive, each with 1 member
//!   (`…/1_member`) or 1,000 members (`…/1000_members`; 10 million memberships in all).
//!   - `join`: one more connection joins an existing group (`GroupTable::join`);
//!   - `leave`: that connection leaves it again, the group staying alive (`GroupTable::leave`);
//!   - `members`: the member snapshot a send to the group delivers to (`GroupTable::members`);
//!   - `has_members`: whether the group has a member here (the REST API's "group exists").
//!
//!   Each iteration touches the next group in turn, so successive iterations hit different
//!   parts of the table.
//! - Group `remove_connection_in_10_groups`: what `hub::endpoint::end_session` does for a
//!   connection in 10 groups (drain its own list of group names, `GroupTable::leave` each) with
//!   1,000, 10,000 or 100,000 groups alive, each with 1 other member. `shared_groups/…`: its 10
//!   groups have another member, so they stay; `sole_member/…`: it is alone in its 10 groups,
//!   which are deleted. The cost should not grow with the number of groups alive: the session
//!   remembers its groups, so nothing scans the table.
//!
//! Untimed work (putting the table back as it was) runs between timed chunks of iterations.
//!
//! Allocations go through mimalloc, the server's global allocator (`src/main.rs`). Times are
//! on-CPU time: wall time minus the time the thread waited for a CPU (`on_cpu/mod.rs`), so a
//! busy machine slows the numbers less.
//!
//! Run with `cargo bench --bench groups` (add `-- --warm-up-time 1 --measurement-time 3` for a
//! quicker run); `cargo test --benches` runs each case once (building the 10-million-member
//! table takes a few seconds). Results are recorded in `perf/results/`.

use std::cell::RefCell;
use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ringhub::shard::groups::GroupTable;
use ringhub::shard::sessions::SessionKey;

mod on_cpu;
use on_cpu::{Mark, OnCpu};

/// The server's allocator, so allocation costs are the ones it pays.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const HUB: &str = "chat";

/// Groups alive in the join/leave/lookup benches.
const GROUPS: usize = 10_000;

/// Groups alive in the removal bench.
const TOTALS: [usize; 3] = [1_000, 10_000, 100_000];

/// Groups the removed connection is in.
const GROUPS_PER_CONNECTION: usize = 10;

/// Connections removed per timed chunk in the removal bench.
const REMOVED_PER_CHUNK: usize = 10;

fn key(slot: usize) -> SessionKey {
    // invariant: slots here stay below 200 million, which fits a u32.
    let slot = u32::try_from(slot).expect("bench slots fit a u32");
    SessionKey {
        slot,
        serial: u64::from(slot),
    }
}

/// The connection that joins and leaves in the join/leave benches (no other has this key).
const NEWCOMER: SessionKey = SessionKey {
    slot: u32::MAX,
    serial: u64::MAX,
};

/// The key of the `c`th connection removed in a chunk of the removal bench (distinct from the
/// table's members and from [`NEWCOMER`]).
fn removed(c: usize) -> SessionKey {
    // invariant: c is below REMOVED_PER_CHUNK.
    let offset = u32::try_from(c).expect("chunk index fits a u32");
    SessionKey {
        slot: u32::MAX - 1 - offset,
        serial: u64::MAX - 1 - u64::from(offset),
    }
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// A table with a group per name, each with `members` distinct members.
fn table(groups: &[String], members: usize) -> GroupTable {
    let table = GroupTable::default();
    for (g, name) in groups.iter().enumerate() {
        for m in 0..members {
            table.join(HUB, name, key(g * members + m));
        }
    }
    table
}

/// Runs `iters` iterations of `timed(i)` for i = 0, 1, …, in chunks of at most `chunk`: before
/// each chunk `before(i)` and after it `after(i)` run for each of its i, untimed.
fn chunked(
    iters: u64,
    chunk: usize,
    mut before: impl FnMut(usize),
    mut timed: impl FnMut(usize),
    mut after: impl FnMut(usize),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0u64;
    while done < iters {
        // invariant: the minimum is at most `chunk`, a usize.
        let n = usize::try_from((iters - done).min(chunk as u64)).expect("chunk fits a usize");
        (0..n).for_each(&mut before);
        let start = Mark::now();
        (0..n).for_each(&mut timed);
        total += start.elapsed();
        (0..n).for_each(&mut after);
        done += n as u64;
    }
    total
}

fn join_leave_lookup(c: &mut Criterion<OnCpu>) {
    let groups = names("group", GROUPS);
    let mut bench = c.benchmark_group("group_table_10k_groups");
    for members in [1usize, 1_000] {
        let table = table(&groups, members);
        assert_eq!(table.group_count(HUB), GROUPS);
        let variant = if members == 1 {
            "1_member".to_owned()
        } else {
            format!("{members}_members")
        };
        bench.bench_function(BenchmarkId::new("join", &variant), |b| {
            b.iter_custom(|iters| {
                chunked(
                    iters,
                    GROUPS,
                    |_| {},
                    |i| {
                        black_box(table.join(HUB, &groups[i], NEWCOMER));
                    },
                    |i| {
                        table.leave(HUB, &groups[i], NEWCOMER);
                    },
                )
            })
        });
        bench.bench_function(BenchmarkId::new("leave", &variant), |b| {
            b.iter_custom(|iters| {
                chunked(
                    iters,
                    GROUPS,
                    |i| {
                        table.join(HUB, &groups[i], NEWCOMER);
                    },
                    |i| {
                        black_box(table.leave(HUB, &groups[i], NEWCOMER));
                    },
                    |_| {},
                )
            })
        });
        bench.bench_function(BenchmarkId::new("members", &variant), |b| {
            let mut next = 0;
            b.iter(|| {
                next = (next + 1) % GROUPS;
                table.members(HUB, &groups[next])
            })
        });
        bench.bench_function(BenchmarkId::new("has_members", &variant), |b| {
            let mut next = 0;
            b.iter(|| {
                next = (next + 1) % GROUPS;
                table.has_members(HUB, &groups[next])
            })
        });
        assert_eq!(table.group_count(HUB), GROUPS);
        assert_eq!(table.members(HUB, &groups[0]).len(), members);
    }
    bench.finish();
}

fn remove_connection(c: &mut Criterion<OnCpu>) {
    let mut bench = c.benchmark_group("remove_connection_in_10_groups");
    for total in TOTALS {
        let groups = names("group", total);
        let table = table(&groups, 1);
        // The removed connections' own groups in the sole-member case, one set per connection
        // of a chunk.
        let own: Vec<Vec<String>> = (0..REMOVED_PER_CHUNK)
            .map(|c| names(&format!("own-{c}"), GROUPS_PER_CONNECTION))
            .collect();
        for sole in [false, true] {
            let name = if sole { "sole_member" } else { "shared_groups" };
            // Each removed connection's list of groups (`SessionSlot::groups`).
            let lists: Vec<RefCell<Vec<String>>> = (0..REMOVED_PER_CHUNK)
                .map(|_| RefCell::new(Vec::new()))
                .collect();
            let mut round = 0usize;
            bench.bench_function(BenchmarkId::new(name, format!("{total}_groups")), |b| {
                b.iter_custom(|iters| {
                    chunked(
                        iters,
                        REMOVED_PER_CHUNK,
                        |c| {
                            // Joins connection c to its 10 groups: its own, or 10 existing
                            // groups that move on every round.
                            let list = if sole {
                                own[c].clone()
                            } else {
                                round += 1;
                                (0..GROUPS_PER_CONNECTION)
                                    .map(|t| {
                                        groups[(round * GROUPS_PER_CONNECTION + t) % total].clone()
                                    })
                                    .collect()
                            };
                            for group in &list {
                                table.join(HUB, group, removed(c));
                            }
                            *lists[c].borrow_mut() = list;
                        },
                        |c| {
                            let member = removed(c);
                            for group in lists[c].borrow_mut().drain(..) {
                                black_box(table.leave(HUB, &group, member));
                            }
                        },
                        |_| {},
                    )
                })
            });
            assert_eq!(table.group_count(HUB), total);
        }
    }
    bench.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(OnCpu);
    targets = join_leave_lookup, remove_connection
}
criterion_main!(benches);
