//! MIT 6.5840 lab 3D, on the simulated cluster: snapshots, log compaction, InstallSnapshot (§7).
//!
//! Every node takes a snapshot each time it applies a multiple of [`SNAPSHOT_INTERVAL`] (the
//! lab's `SnapShotInterval`) and keeps `snapshot_trailing` entries behind it. Besides the
//! cluster's own checks (every node applies the same command at each index, in order, once per
//! incarnation; one leader per term; Leader Completeness), each test asserts after every step
//! that no running node's log holds more than [`log_bound`] entries — the lab's "Log size too
//! large" — and ends by comparing the state machines (applied commands, snapshots included) of
//! all nodes.
//!
//! The randomized tests run several seeds derived from a base seed; the trailing-entry count
//! varies with the seed (0, 1 or 5), so compaction through the snapshot index itself is covered.
//! `RAFT_SEED=<seed>` replays one (the seed is printed as each run starts), `RAFT_SEEDS=<n>` runs
//! more.

use raftlabkv::raft::NodeId;
use raftlabkv::sim::{NetConfig, SimCluster, secs, seed_from_env, seeds_from_env};

/// The lab's `SnapShotInterval`: a snapshot every this many applied entries.
const SNAPSHOT_INTERVAL: u64 = 10;

/// Most commands a test proposes at once without waiting for them to commit (the lab's burst
/// `SnapShotInterval / 2 + rand() % SnapShotInterval`).
const MAX_BURST: u64 = SNAPSHOT_INTERVAL / 2 + SNAPSHOT_INTERVAL - 1;

fn cmd(i: u64) -> Vec<u8> {
    format!("cmd-{i}").into_bytes()
}

/// A fresh random command from the cluster's RNG (the lab's `rand.Int()`).
fn rcmd(c: &mut SimCluster) -> Vec<u8> {
    format!("r{}", c.rand(1 << 48)).into_bytes()
}

/// The lab's unreliable network: 10% of messages lost, short random delays, out of order.
fn unreliable() -> NetConfig {
    NetConfig { drop_rate: 0.1, max_delay: 3, reorder: true }
}

/// A cluster that snapshots every [`SNAPSHOT_INTERVAL`] entries, keeping 0, 1 or 5 trailing
/// entries depending on the seed.
fn snapshot_cluster(servers: usize, seed: u64, reliable: bool) -> SimCluster {
    let mut c = SimCluster::new(servers, seed);
    c.snapshot_every = Some(SNAPSHOT_INTERVAL);
    c.snapshot_trailing = [0, 1, 5][(seed % 3) as usize];
    if !reliable {
        c.net = unreliable();
    }
    c
}

/// The most entries a node's log may hold: the trailing entries, fewer than an interval applied
/// since the last snapshot, a burst of uncommitted proposals, and a little slack for no-ops and
/// the commands `one` proposes (again, after a loss). Without compaction the logs grow by about
/// an interval and a half per iteration, past this bound within a few iterations.
fn log_bound(c: &SimCluster) -> u64 {
    SNAPSHOT_INTERVAL + c.snapshot_trailing + MAX_BURST + 5
}

/// The lab's `LogSize() >= MAXLOGSIZE` check, on every running node; returns the largest log.
fn check_log_size(c: &SimCluster, when: &str) -> u64 {
    let bound = log_bound(c);
    let mut largest = 0;
    for id in &c.ids {
        if let Some(len) = c.log_len(id) {
            assert!(
                len <= bound,
                "{id} holds {len} log entries {when}, more than {bound} with snapshots every \
                 {SNAPSHOT_INTERVAL} and {} trailing (seed {})",
                c.snapshot_trailing,
                c.seed
            );
            largest = largest.max(len);
        }
    }
    largest
}

/// Every running node's state machine (its applied commands, snapshot included) agrees up to
/// `through`, which each must have applied.
fn check_same_state(c: &SimCluster, through: u64) {
    let running: Vec<&NodeId> = c.ids.iter().filter(|id| c.is_up(id)).collect();
    let state = |id: &NodeId| -> Vec<(u64, Vec<u8>)> {
        let applied = c.applied(id).unwrap_or_else(|| panic!("{id} applied nothing"));
        applied.range(..=through).map(|(i, cmd)| (*i, cmd.clone())).collect()
    };
    let first = state(running[0]);
    assert_eq!(
        first.len() as u64,
        through,
        "{} lacks applied entries (seed {})",
        running[0],
        c.seed
    );
    for id in &running[1..] {
        assert!(
            state(id) == first,
            "{id} and {} hold different state machines through {through} (seed {})",
            running[0],
            c.seed
        );
    }
}

/// The lab's `snapcommon`: 30 iterations in which a victim (a follower, or every third time the
/// leader) is disconnected or crashed, enough commands for a snapshot go to the leader (or, when
/// the leader is the victim, to a follower, which refuses them), and the victim comes back and
/// must catch up — through InstallSnapshot when the others compacted past its log. Returns how
/// many snapshots were installed.
fn snapcommon(seed: u64, disconnect: bool, reliable: bool, crash: bool) -> u64 {
    const ITERS: u64 = 30;
    let servers = 3;
    let mut c = snapshot_cluster(servers, seed, reliable);
    let x = rcmd(&mut c);
    c.one(x, servers, true);
    let mut leader1 = c.check_one_leader(secs(5.0));
    let mut largest = 0;
    for i in 0..ITERS {
        let (mut victim, mut sender) = (c.next_id(&leader1, 1), leader1.clone());
        if i % 3 == 1 {
            (victim, sender) = (leader1.clone(), c.next_id(&leader1, 1));
        }
        if disconnect {
            c.disconnect(&victim);
            let x = rcmd(&mut c);
            c.one(x, servers - 1, true);
        }
        if crash {
            c.crash(&victim);
            let x = rcmd(&mut c);
            c.one(x, servers - 1, true);
        }
        // Perhaps enough for a snapshot, without waiting for any of it.
        let nn = SNAPSHOT_INTERVAL / 2 + c.rand(SNAPSHOT_INTERVAL);
        for _ in 0..nn {
            let x = rcmd(&mut c);
            c.propose(&sender, x);
        }
        largest = largest.max(check_log_size(&c, &format!("after a burst in iteration {i}")));
        let x = rcmd(&mut c);
        if !disconnect && !crash {
            // Every follower catches up, so no InstallSnapshot is needed here.
            c.one(x, servers, true);
        } else {
            c.one(x, servers - 1, true);
        }
        largest = largest.max(check_log_size(&c, &format!("in iteration {i}")));
        if disconnect {
            // The victim may be behind the others' snapshots and need one to catch up.
            c.connect(&victim);
            let x = rcmd(&mut c);
            c.one(x, servers, true);
            leader1 = c.check_one_leader(secs(5.0));
        }
        if crash {
            c.start(&victim);
            c.connect(&victim);
            let x = rcmd(&mut c);
            c.one(x, servers, true);
            leader1 = c.check_one_leader(secs(5.0));
        }
        largest = largest.max(check_log_size(&c, &format!("at the end of iteration {i}")));
    }
    let x = rcmd(&mut c);
    let last = c.one(x, servers, true);
    check_same_state(&c, last);
    eprintln!(
        "seed {seed}: {} entries, {} snapshots installed, largest log {largest} (bound {})",
        last,
        c.snapshots_installed,
        log_bound(&c)
    );
    c.snapshots_installed
}

/// TestSnapshotBasic3D: snapshots and compaction with everyone connected.
#[test]
fn snapshots_basic() {
    for seed in seeds_from_env(42, 5) {
        snapcommon(seed, false, true, false);
    }
}

/// TestSnapshotInstall3D: a victim disconnected while the others go on (and snapshot) catches
/// up when reconnected, through InstallSnapshot.
#[test]
fn snapshot_install_after_disconnect() {
    for seed in seeds_from_env(43, 5) {
        let installed = snapcommon(seed, true, true, false);
        assert!(installed > 0, "no follower ever needed a snapshot (seed {seed})");
    }
}

/// TestSnapshotInstallUnreliable3D: as [`snapshot_install_after_disconnect`], on a network that
/// loses, delays and reorders messages.
#[test]
fn snapshot_install_after_disconnect_on_an_unreliable_network() {
    for seed in seeds_from_env(44, 5) {
        let installed = snapcommon(seed, true, false, false);
        assert!(installed > 0, "no follower ever needed a snapshot (seed {seed})");
    }
}

/// TestSnapshotInstallCrash3D: the victim crashes instead, and restarts from its storage (its
/// own snapshot and log) before catching up.
#[test]
fn snapshot_install_after_crash() {
    for seed in seeds_from_env(45, 5) {
        let installed = snapcommon(seed, false, true, true);
        assert!(installed > 0, "no follower ever needed a snapshot (seed {seed})");
    }
}

/// TestSnapshotInstallUnCrash3D: crashes on an unreliable network.
#[test]
fn snapshot_install_after_crash_on_an_unreliable_network() {
    for seed in seeds_from_env(46, 5) {
        let installed = snapcommon(seed, false, false, true);
        assert!(installed > 0, "no follower ever needed a snapshot (seed {seed})");
    }
}

/// TestSnapshotAllCrash3D: do the nodes persist their snapshots and restart from them with the
/// tail of their logs? Five rounds of enough commands for a snapshot, then every node crashes
/// and restarts; the log must go on from where it was.
#[test]
fn snapshot_all_crash() {
    for seed in seeds_from_env(47, 5) {
        let servers = 3;
        let mut c = snapshot_cluster(servers, seed, true);
        let x = rcmd(&mut c);
        c.one(x, servers, true);
        for round in 0..5 {
            let nn = SNAPSHOT_INTERVAL / 2 + c.rand(SNAPSHOT_INTERVAL);
            for _ in 0..nn {
                let x = rcmd(&mut c);
                c.one(x, servers, true);
                check_log_size(&c, &format!("in round {round}"));
            }
            let x = rcmd(&mut c);
            let index1 = c.one(x, servers, true);
            for id in c.ids.clone() {
                c.crash(&id);
            }
            for id in c.ids.clone() {
                c.start(&id);
                c.connect(&id);
            }
            check_log_size(&c, &format!("after restarting everyone in round {round}"));
            let x = rcmd(&mut c);
            let index2 = c.one(x, servers, true);
            assert!(index2 > index1, "index decreased from {index1} to {index2} (seed {seed})");
            check_log_size(&c, &format!("at the end of round {round}"));
        }
        let x = rcmd(&mut c);
        let last = c.one(x, servers, true);
        check_same_state(&c, last);
    }
}

/// TestSnapshotInit3D: do nodes initialise their in-memory copy of the snapshot on restart, so
/// that later writes to persistent state do not lose it? Enough commands for a snapshot, every
/// node crashes and restarts right after it, one command (written back to storage), everyone
/// crashes again, and one more command must still commit.
#[test]
fn snapshot_init_after_restart() {
    for seed in seeds_from_env(48, 5) {
        let servers = 3;
        let mut c = snapshot_cluster(servers, seed, true);
        let x = rcmd(&mut c);
        c.one(x, servers, true);
        for _ in 0..=SNAPSHOT_INTERVAL {
            let x = rcmd(&mut c);
            c.one(x, servers, true);
        }
        for _ in 0..2 {
            assert!(
                c.ids.iter().all(|id| c.node(id).unwrap().storage().snapshot().is_some()),
                "every node should hold a snapshot by now (seed {seed})"
            );
            for id in c.ids.clone() {
                c.crash(&id);
            }
            for id in c.ids.clone() {
                c.start(&id);
                c.connect(&id);
            }
            check_log_size(&c, "after restarting everyone");
            // One command, so that something is written back to persistent state.
            let x = rcmd(&mut c);
            c.one(x, servers, true);
            check_log_size(&c, "after restarting everyone");
        }
        let x = rcmd(&mut c);
        let last = c.one(x, servers, true);
        check_same_state(&c, last);
    }
}

/// §7: a follower that missed entries the leader has compacted catches up through
/// InstallSnapshot, and every node's log stays bounded by the snapshot interval.
#[test]
fn lagging_follower_catches_up_through_install_snapshot() {
    let mut c = SimCluster::new(3, seed_from_env(40));
    c.snapshot_every = Some(10);
    c.snapshot_trailing = 2;
    let leader = c.check_one_leader(secs(5.0));
    let victim = c.ids.iter().find(|i| **i != leader).cloned().unwrap();
    c.disconnect(&victim);
    for i in 0..100 {
        c.one(cmd(i), 2, true);
    }
    c.connect(&victim);
    let last = c.one(cmd(1000), 3, true);
    assert!(c.snapshots_installed >= 1, "the lagging follower should have installed a snapshot");
    assert_eq!(c.applied(&victim).and_then(|a| a.get(&last)).cloned(), Some(cmd(1000)));
    for id in c.ids.clone() {
        let len = c.log_len(&id).unwrap();
        assert!(len <= 10 + 2 + 5, "{id} holds {len} entries despite snapshots every 10");
    }
    check_same_state(&c, last);
}

/// A node restarted right after a snapshot comes back from it (a shorter variant of
/// [`snapshot_init_after_restart`], with a snapshot every 5 entries and single restarts too).
#[test]
fn restart_right_after_a_snapshot() {
    let mut c = SimCluster::new(3, seed_from_env(41));
    c.snapshot_every = Some(5);
    c.check_one_leader(secs(5.0));
    for i in 0..23 {
        c.one(cmd(i), 3, true);
    }
    for id in c.ids.clone() {
        c.crash(&id);
    }
    for id in c.ids.clone() {
        c.start(&id);
    }
    c.one(cmd(99), 3, true);
    for id in c.ids.clone() {
        c.crash(&id);
        c.start(&id);
    }
    let last = c.one(cmd(100), 3, true);
    check_same_state(&c, last);
}
