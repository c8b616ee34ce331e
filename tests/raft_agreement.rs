//! MIT 6.5840 lab 3B, on the simulated cluster: log replication.

use raftlabkv::sim::{SimCluster, secs, seed_from_env};

fn cmd(i: u64) -> Vec<u8> {
    format!("cmd-{i}").into_bytes()
}

/// §5.3: commands proposed to the leader are committed, in order, on every node.
#[test]
fn basic_agreement() {
    let mut c = SimCluster::new(3, seed_from_env(10));
    c.check_one_leader(secs(5.0));
    // Index 1 is the leader's no-op; our commands follow it.
    for i in 1..=3 {
        let (n, _) = c.n_committed(c.max_committed() + 1);
        assert_eq!(n, 0, "committed before proposed");
        let index = c.one(cmd(i), 3, false);
        assert!(index >= 2, "index {index} should follow the no-op");
    }
}
