//! A follower whose storage is wiped (the documented recovery from a corrupt WAL) catches up from
//! the leader it had already acknowledged entries to.

use raftlabkv::sim::{SimCluster, secs, seed_from_env};

#[test]
fn a_wiped_follower_catches_up_from_the_same_leader() {
    let mut c = SimCluster::new(3, seed_from_env(40));
    let leader = c.check_one_leader(secs(5.0));
    let mut last = 0;
    for i in 0..20 {
        last = c.one(format!("cmd-{i}").into_bytes(), 3, false);
    }
    let follower = c.ids.iter().find(|id| **id != leader).cloned().expect("a follower");
    c.wipe(&follower);
    c.start(&follower);
    // The leader still leads (its lease keeps the wiped node's vote requests away) and must
    // notice that the follower no longer holds what it acknowledged.
    let next = c.one(b"after-wipe".to_vec(), 2, false);
    assert!(next > last);
    assert!(
        c.wait(next, 3, secs(5.0)).is_some(),
        "the wiped follower did not catch up (seed {})",
        c.seed
    );
    let applied = c.applied(&follower).expect("running");
    assert_eq!(applied.keys().copied().collect::<Vec<_>>(), (1..=next).collect::<Vec<_>>());
    assert_eq!(c.leaders().len(), 1);
}
