//! MIT 6.5840 lab 3D, on the simulated cluster: snapshots, log compaction, InstallSnapshot (§7).

use raftlabkv::sim::{SimCluster, secs, seed_from_env};

fn cmd(i: u64) -> Vec<u8> {
    format!("cmd-{i}").into_bytes()
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
}

/// A node restarted right after a snapshot comes back from it (MIT TestSnapshotInit3D).
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
    c.one(cmd(100), 3, true);
}
