//! The durability rule on a whole cluster: nothing counts towards a commit, and nothing is
//! acknowledged, before the disk has it (see "Persisting before answering" in `raft/mod.rs`).
//!
//! The simulated disk makes a write durable only when a simulated fsync completes, and a crash
//! here is a power failure: every write no fsync covered is lost. These tests crash every node at
//! the moments that rule is about — right after an entry commits, while the followers' and the
//! leader's fsyncs may still be running — and restart them from what their disks kept. Every entry
//! any node applied must survive: the cluster checks on every election that the new leader holds
//! it (Leader Completeness) and on every apply that no node applies anything else at its index,
//! and each test ends by checking that every node holds every entry ever applied.
//!
//! Both were checked by breaking the rule in the core on purpose: with a follower acknowledging
//! entries before its fsync, or a leader counting its own unsynced entries towards a commit, each
//! test fails on its first or one of its first seeds (a new leader lacks a committed entry).
//! `RAFT_SEED=<seed>` replays one schedule, `RAFT_SEEDS=<n>` runs more.

use raftlabkv::sim::{DiskConfig, SimCluster, secs, seeds_from_env};

/// A slow disk: fsyncs take up to 4 ticks, one in five up to 15 — often longer than the round
/// trip that brings the followers' acknowledgements — and a crash keeps nothing unsynced.
fn slow_disk() -> DiskConfig {
    DiskConfig {
        max_sync_ticks: 4,
        slow_sync_rate: 0.2,
        slow_sync_ticks: 15,
        keep_unsynced_rate: 0.0,
        manual: false,
    }
}

/// Every node restarts and reconnects; all of them then hold every entry any node ever applied
/// (and a new one).
fn restore_and_check_everything_survived(c: &mut SimCluster) {
    for id in c.ids.clone() {
        c.start(&id);
    }
    c.heal();
    let n = c.ids.len();
    let last = c.one(b"final".to_vec(), n, true);
    for index in 1..=last {
        let held = c.wait(index, n, secs(10.0));
        let committed = c.committed_at(index).map(|(_, cmd)| cmd.to_vec());
        assert_eq!(held, committed, "index {index} was lost or changed (seed {})", c.seed);
    }
}

/// Power failures right after commits: a leader (with, half the time, one follower cut off so
/// that it commits with exactly one follower) proposes, and the moment any node applies the entry,
/// every node loses power and restarts from its disk.
fn crash_everyone_after_each_commit(seed: u64, iterations: u64) {
    let mut c = SimCluster::new(3, seed);
    c.disk = slow_disk();
    for i in 0..iterations {
        let leader = c.check_one_leader(secs(10.0));
        if c.rand(2) == 0 {
            let others: Vec<_> = c.ids.iter().filter(|id| **id != leader).cloned().collect();
            let pick = c.rand(2) as usize;
            let cut_off = others[pick].clone();
            let majority: Vec<_> = c.ids.iter().filter(|id| **id != cut_off).cloned().collect();
            c.partition(&[majority, vec![cut_off]]);
        }
        let before = c.max_committed();
        if c.propose(&leader, format!("cmd-{i}").into_bytes()).is_some() {
            c.run_until(secs(1.0), |c| c.max_committed() > before);
        }
        for id in c.ids.clone() {
            c.crash(&id);
        }
        for id in c.ids.clone() {
            c.start(&id);
        }
        c.heal();
    }
    restore_and_check_everything_survived(&mut c);
}

#[test]
fn power_failures_right_after_commits_lose_no_committed_entry() {
    for seed in seeds_from_env(50, 10) {
        crash_everyone_after_each_commit(seed, 60);
    }
}

/// Power failures at random moments under load: five nodes, proposals every few ticks to whoever
/// leads, and now and then a majority (sometimes everyone) loses power at once.
fn crash_majorities_under_load(seed: u64, rounds: u64) {
    let mut c = SimCluster::new(5, seed);
    c.disk = slow_disk();
    for round in 0..rounds {
        for _ in 0..c.rand(60) {
            if c.rand(3) == 0 {
                let command = format!("r{round}-{}", c.now);
                c.propose_to_leader(command.as_bytes());
            }
            c.tick();
        }
        for _ in 0..3 + c.rand(3) {
            let id = c.random_node();
            c.crash(&id);
        }
        let pause = c.rand(5);
        c.run(pause);
        for id in c.ids.clone() {
            c.start(&id);
        }
    }
    restore_and_check_everything_survived(&mut c);
}

#[test]
fn power_failures_of_a_majority_under_load_lose_no_committed_entry() {
    for seed in seeds_from_env(51, 10) {
        crash_majorities_under_load(seed, 100);
    }
}
