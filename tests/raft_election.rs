//! MIT 6.5840 lab 3A, on the simulated cluster: leader election.

use raftlabkv::sim::{SimCluster, secs, seed_from_env};

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
