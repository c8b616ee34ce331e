//! MIT 6.5840 lab 3A, on the simulated cluster: leader election (§5.2), with the lab's RPC bars
//! for elections and idle heartbeats, the election timer rule of Figure 2, and ReadIndex reads
//! (§8), whose safety rests on a leader confirming it still leads.
//!
//! Tests that loop over seeds run several schedules derived from a base seed; `RAFT_SEED=<seed>`
//! replays one (each run prints its seed), `RAFT_SEEDS=<n>` runs more.

use raftlabkv::raft::{Config, NodeId};
use raftlabkv::sim::{SimCluster, secs, seed_from_env, seeds_from_env};

/// §5.2: a leader is elected within 5 s, the term stays put without failures.
#[test]
fn initial_election() {
    let mut c = SimCluster::new(3, seed_from_env(1));
    c.check_one_leader(secs(5.0));
    c.run(5);
    let term1 = c.check_terms();
    assert!(term1 >= 1, "term is {term1}, but should be at least 1");
    c.run(secs(2.0));
    let term2 = c.check_terms();
    assert_eq!(term1, term2, "term changed even though there were no failures");
    c.check_one_leader(secs(5.0));
}

/// §5.2: a new leader when the old one goes; the old one rejoins without disruption; no leader
/// without a quorum.
#[test]
fn re_election() {
    let mut c = SimCluster::new(3, seed_from_env(2));
    let leader1 = c.check_one_leader(secs(5.0));
    c.disconnect(&leader1);
    c.check_one_leader(secs(5.0));
    c.connect(&leader1);
    let leader2 = c.check_one_leader(secs(5.0));
    c.disconnect(&leader2);
    let other = c.ids.iter().find(|i| **i != leader2).cloned().unwrap();
    c.disconnect(&other);
    c.run(secs(2.0));
    c.check_no_leader();
    c.connect(&other);
    c.check_one_leader(secs(5.0));
    c.connect(&leader2);
    c.check_one_leader(secs(5.0));
}

/// 7 nodes, 9 rounds of 3 random disconnections: always a leader when 4 remain.
#[test]
fn many_elections() {
    let mut c = SimCluster::new(7, seed_from_env(3));
    c.check_one_leader(secs(5.0));
    for _ in 0..9 {
        let idx: Vec<usize> = (0..3).map(|_| c.rand(7) as usize).collect();
        let picks: Vec<_> = idx.iter().map(|&i| c.ids[i].clone()).collect();
        for p in &picks {
            c.disconnect(p);
        }
        c.check_one_leader(secs(5.0));
        for p in &picks {
            c.connect(p);
        }
    }
    c.check_one_leader(secs(5.0));
}

/// §5.2 (the lab's TestCount3B, first part): electing the first leader of a 3-node cluster takes
/// at most 30 RPCs, split votes included.
#[test]
fn electing_a_leader_takes_at_most_30_rpcs() {
    for seed in seeds_from_env(4, 20) {
        let mut c = SimCluster::new(3, seed);
        c.check_one_leader(secs(5.0));
        assert!(
            (1..=30).contains(&c.rpcs),
            "{} RPCs to elect the initial leader (seed {seed})",
            c.rpcs
        );
    }
}

/// §5.2, heartbeats (TestCount3B, last part): an idle 3-node cluster sends at most 60 RPCs per
/// second, and the leader keeps its term.
#[test]
fn an_idle_cluster_sends_at_most_60_rpcs_per_second() {
    let mut c = SimCluster::new(3, seed_from_env(5));
    c.check_one_leader(secs(5.0));
    c.one(b"x".to_vec(), 3, false);
    let (rpcs, term) = (c.rpcs, c.check_terms());
    c.run(secs(1.0));
    let idle = c.rpcs - rpcs;
    assert!(idle <= 60, "{idle} RPCs in one second of idleness (seed {})", c.seed);
    assert!(idle >= 2, "only {idle} RPCs in one second: no heartbeats? (seed {})", c.seed);
    assert_eq!(c.check_terms(), term, "term changed while idle (seed {})", c.seed);
}

/// Waits for a leader among `group` with a term above `term`.
fn leader_among(c: &mut SimCluster, group: &[NodeId], term: u64) -> NodeId {
    let found = c.run_until(secs(5.0), |c| {
        group.iter().any(|id| c.node(id).is_some_and(|n| n.is_leader() && n.term() > term))
    });
    assert!(found, "no leader among {group:?} (seed {})", c.seed);
    group.iter().find(|id| c.node(id).is_some_and(|n| n.is_leader())).cloned().unwrap()
}

/// Runs until read `id` is released somewhere; returns (node, index).
fn released(c: &mut SimCluster, id: u64) -> (NodeId, u64) {
    c.run_until(secs(2.0), |c| c.reads.iter().any(|r| r.1 == id));
    let r = c.reads.iter().find(|r| r.1 == id);
    let (node, _, index) =
        r.unwrap_or_else(|| panic!("read {id} never released (seed {})", c.seed));
    (node.clone(), *index)
}

/// ReadIndex (§8; thesis §6.4) against a leader cut off in a minority: it cannot confirm that it
/// still leads, so it never releases a read, and its pending reads are aborted when it steps down.
/// Meanwhile the majority's new leader releases reads at an index at or after the last write
/// committed before the read. With check-quorum the stale leader steps down on its own; without
/// it, it steps down when it hears the newer term after the partition heals.
fn minority_leader_reads(seed: u64, check_quorum: bool) {
    let mut c = if check_quorum {
        SimCluster::new(5, seed)
    } else {
        SimCluster::with_config(5, seed, |cfg| cfg.check_quorum = false)
    };
    let old = c.check_one_leader(secs(5.0));
    let w1 = c.one(b"w1".to_vec(), 5, false);
    assert!(c.read(&old, 1), "the leader refused a read");
    let (node, index) = released(&mut c, 1);
    assert!(node == old && index >= w1, "read 1 released by {node} at {index} < {w1}");

    let minority = vec![old.clone(), c.next_id(&old, 1)];
    let majority: Vec<NodeId> = c.ids.iter().filter(|i| !minority.contains(i)).cloned().collect();
    c.partition(&[minority.clone(), majority.clone()]);
    let old_term = c.node(&old).unwrap().term();
    assert!(c.read(&old, 2), "the partitioned leader still believes it leads");

    let new = leader_among(&mut c, &majority, old_term);
    let (w2, _) = c.propose(&new, b"w2".to_vec()).expect("the new leader accepts writes");
    assert_eq!(c.wait(w2, 3, secs(2.0)), Some(b"w2".to_vec()), "seed {}", c.seed);
    assert!(c.read(&new, 3), "the new leader refused a read");
    let (node, index) = released(&mut c, 3);
    assert!(node == new && index >= w2, "read 3 released by {node} at {index} < {w2}");

    c.run(secs(2.0));
    if check_quorum {
        assert!(!c.node(&old).unwrap().is_leader(), "check-quorum kept a minority leader");
        assert!(!c.read(&old, 4), "a deposed leader accepted a read");
    } else {
        assert!(c.node(&old).unwrap().is_leader(), "without check-quorum it keeps leading");
        assert!(!c.aborted_reads.contains(&(old.clone(), 2)), "aborted while still leading");
        c.heal();
        c.run_until(secs(2.0), |c| !c.node(&old).unwrap().is_leader());
    }
    assert!(
        !c.reads.iter().any(|r| r.1 == 2 || r.1 == 4),
        "the minority leader released a read: {:?} (seed {seed})",
        c.reads
    );
    assert!(
        c.aborted_reads.contains(&(old.clone(), 2)),
        "the pending read was not aborted when {old} stepped down (seed {seed})"
    );

    c.heal();
    let w3 = c.one(b"w3".to_vec(), 5, true);
    let leader = c.check_one_leader(secs(5.0));
    assert!(c.read(&leader, 5));
    let (_, index) = released(&mut c, 5);
    assert!(index >= w3, "read 5 at {index} < last write {w3} (seed {seed})");
}

/// See [`minority_leader_reads`]; with check-quorum (the default).
#[test]
fn a_minority_leader_never_releases_reads_and_aborts_them_on_stepping_down() {
    for seed in seeds_from_env(6, 10) {
        minority_leader_reads(seed, true);
    }
}

/// See [`minority_leader_reads`]; without check-quorum the stale leader keeps its role, yet still
/// never releases a read.
#[test]
fn a_minority_leader_without_check_quorum_never_releases_reads() {
    for seed in seeds_from_env(7, 10) {
        minority_leader_reads(seed, false);
    }
}

/// `n3`'s election timer runs three times faster than the others'.
fn hasty_n3(config: &mut Config) {
    if config.id == "n3" {
        config.election_ticks_min = 10;
        config.election_ticks_max = 12;
    }
}

/// Figure 2: a follower restarts its election timer only when it hears from the current leader or
/// grants a vote — not whenever it sees a higher term. So a node that cannot win (its log is
/// stale, §5.4.1) cannot hold back the nodes that can, even if its timer always fires first: were
/// each of its RequestVotes to restart the others' timers, no one else would ever stand.
#[test]
fn a_candidate_with_a_stale_log_cannot_hold_back_the_election() {
    let mut c = SimCluster::with_config(3, seed_from_env(8), hasty_n3);
    let n3: NodeId = "n3".into();
    c.check_one_leader(secs(5.0));
    c.disconnect(&n3);
    c.one(b"while n3 is away".to_vec(), 2, false);
    c.run(secs(1.0)); // n3 keeps standing, alone: its term climbs past the others'
    c.connect(&n3);
    let leader = c.check_one_leader(secs(5.0));
    assert_ne!(leader, n3, "a stale log won an election (seed {})", c.seed);
    c.one(b"all together".to_vec(), 3, true);
}

/// The core's event counts and the replication state it reports (`/status`, `/metrics`):
/// a leader change is counted once per term by every node that learns of the leader; a
/// follower is `replicate` once it answered, `probe` after it was cut off.
#[test]
fn leader_changes_elections_and_replication_states_are_reported() {
    use raftlabkv::raft::ReplicationState;
    let seed = seed_from_env(11);
    println!("seed {seed}");
    let mut c = SimCluster::new(3, seed);
    let leader1 = c.check_one_leader(secs(5.0));
    c.one(b"a".to_vec(), 3, false);
    c.run(secs(0.5));
    let ids = c.ids.clone();
    for id in &ids {
        let n = c.node(id).expect("up");
        assert_eq!(n.counters().leader_changes, 1, "{id}: one leader seen");
    }
    let status = c.node(&leader1).expect("up").status();
    assert!(status.counters.elections_started >= 1, "{:?}", status.counters);
    assert_eq!(status.progress.len(), 2);
    for (peer, p) in &status.progress {
        assert_eq!(p.state, ReplicationState::Replicate, "{peer}: {p:?}");
        assert_eq!(p.next_index, p.match_index + 1, "{peer}: {p:?}");
    }
    // The leader goes; the others elect a new one: a second change for each of them.
    c.disconnect(&leader1);
    let leader2 = c.check_one_leader(secs(5.0));
    c.one(b"b".to_vec(), 2, false);
    for id in ids.iter().filter(|i| **i != leader1) {
        assert_eq!(c.node(id).expect("up").counters().leader_changes, 2, "{id}");
    }
    // The new leader cannot reach the old one: it is not known to replicate there.
    c.run(secs(1.0));
    let p = c.node(&leader2).expect("up").status().progress[&leader1].clone();
    assert_eq!(p.state, ReplicationState::Probe, "{p:?}");
    c.connect(&leader1);
    c.one(b"c".to_vec(), 3, false);
    c.run(secs(0.5));
    assert_eq!(
        c.node(&leader1).expect("up").counters().leader_changes,
        2,
        "the old leader learned of the new one"
    );
    let p = c.node(&leader2).expect("up").status().progress[&leader1].clone();
    assert_eq!(p.state, ReplicationState::Replicate, "{p:?}");
}
