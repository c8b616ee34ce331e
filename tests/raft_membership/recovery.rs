//! Disaster recovery (`--force-new-cluster`, `RaftNode::force_new_cluster`): a cluster lost its
//! quorum for good, and an operator restarts a survivor alone from its data.

use super::*;

/// n2 and n3 are gone for good. n1, the leader, holds everything committed and a tail the others
/// never received. Forced, it becomes the only voter of a new cluster, elects itself, and commits
/// its whole log (tail included) and the new configuration; it then grows again with a new
/// member. Forcing it a second time changes nothing; forcing an empty node is refused.
#[test]
fn a_survivor_restarts_as_a_one_node_cluster() {
    for seed in seeds_from_env(130, 3) {
        let mut c = SimCluster::new(3, seed);
        let top = c.check_one_leader(secs(5.0));
        let mut log = Committed::new();
        for i in 0..10 {
            commit_on(&mut c, &format!("before-{i}"), &ids(&["n1", "n2", "n3"]), &mut log);
        }
        let others: Vec<NodeId> = c.ids.iter().filter(|n| **n != top).cloned().collect();
        for o in &others {
            c.disconnect(o);
        }
        let mut tail = Vec::new();
        for i in 0..3 {
            let command = format!("tail-{i}").into_bytes();
            let (index, _) = c.propose(&top, command.clone()).expect("the leader accepts");
            tail.push((index, command));
        }
        assert!(
            c.run_until(secs(2.0), |c| c
                .node(&top)
                .is_some_and(|n| n.log().last_index() >= tail[2].0)
                && !c.waits_for_sync(&top)),
            "the tail was not written (seed {seed})"
        );
        let term_before = c.node(&top).map_or(0, |n| n.term());
        let last_before = c.node(&top).map_or(0, |n| n.log().last_index());
        for n in c.ids.clone() {
            c.crash(&n);
        }

        let forced = c.force_new_cluster(&top).expect("forced").expect("something to force");
        assert_eq!(forced.old.voters.len(), 3, "seed {seed}");
        assert_eq!(forced.new.voters.keys().collect::<Vec<_>>(), vec![&top], "seed {seed}");
        assert!(forced.new.learners.is_empty());
        assert_ne!(forced.new.cluster_id, forced.old.cluster_id, "a new cluster id");
        assert_eq!(forced.index, last_before + 1, "appended after the whole log (seed {seed})");
        assert!(forced.term > term_before, "a term above every term seen (seed {seed})");

        assert!(
            c.run_until(secs(5.0), |c| c
                .node(&top)
                .is_some_and(|n| n.is_leader() && n.log().commit_index > forced.index)),
            "the survivor did not commit its log alone (seed {seed})"
        );
        log.extend(tail.iter().cloned());
        check_applied(&c, std::slice::from_ref(&top), &log);
        assert_eq!(voters(&c, &top), vec![top.clone()], "seed {seed}");

        // It grows again: a new, empty member joins, is promoted and gets everything.
        let n4 = c.add_node("n4");
        c.change_and_commit(add_learner(&n4), secs(10.0)).expect("add n4");
        wait_caught_up(&mut c, &n4);
        c.change_and_commit(promote(&n4), secs(10.0)).expect("promote n4");
        commit_on(&mut c, "after-recovery", &[top.clone(), n4.clone()], &mut log);

        // The flag left on by mistake: a one-member cluster has nothing to force...
        let mut c1 = SimCluster::new(1, seed);
        c1.check_one_leader(secs(5.0));
        c1.crash(&id("n1"));
        assert_eq!(c1.force_new_cluster(&id("n1")).expect("no error"), None);
        // ...and a node with an empty disk has no cluster to recover.
        let mut c2 = SimCluster::new(3, seed);
        c2.add_node("n9");
        c2.crash(&id("n9"));
        match c2.force_new_cluster(&id("n9")) {
            Err(Error::Config(m)) => assert!(m.contains("no configuration"), "{m}"),
            other => panic!("forcing an empty node: {other:?}"),
        }
    }
}
