//! The rules that keep single-server changes safe (one at a time, an entry of the leader's own
//! term first, a learner caught up before its promotion, the strict quorum check) and the 2015
//! scenarios that show why the first two are needed.

use super::*;

// ----- 5. the rules ------------------------------------------------------------------------------

/// One change at a time: a second change while the first is uncommitted is a Conflict; once the
/// first commits, the second is accepted.
#[test]
fn a_second_change_waits_for_the_first() {
    let mut c = SimCluster::new(3, seed_from_env(107));
    c.check_one_leader(secs(5.0));
    commit_on(&mut c, "settled", &ids(&["n1", "n2", "n3"]), &mut Committed::new());
    let (n4, n5) = (c.add_node("n4"), c.add_node("n5"));
    let first = c.change_membership(add_learner(&n4), false).expect("the first change");
    match c.change_membership(add_learner(&n5), false) {
        Err(Error::Conflict(m)) => assert!(m.contains("one change at a time"), "{m}"),
        other => panic!("a second uncommitted change: {other:?} (seed {})", c.seed),
    }
    assert!(c.run_until(secs(5.0), |c| c.max_committed() >= first), "the first did not commit");
    c.change_and_commit(add_learner(&n5), secs(10.0)).expect("the second, after the first");
    assert_eq!(learners(&c, &leader(&c)), vec![n4, n5]);
}

/// An entry of its own term first: a new leader refuses a change (Conflict) until its no-op
/// commits. Manual mode catches the moment: n2 has just won, its no-op reached nobody.
#[test]
fn a_new_leader_changes_nothing_before_its_noop_commits() {
    let mut c = SimCluster::with_config(3, seed_from_env(108), bare);
    c.manual();
    let (n1, n2, n3) = (id("n1"), id("n2"), id("n3"));
    c.tick_until_campaign(&n1);
    c.stabilize();
    heartbeat_within(&mut c, &n1, &[&n1, &n2, &n3]);
    assert!(c.node(&n1).is_some_and(|n| n.is_leader()), "n1 did not win");
    c.crash(&n1);
    c.tick_until_campaign(&n2);
    c.sync(&n2);
    c.deliver_where(|e| e.to == n3);
    c.sync(&n3);
    c.deliver_where(|e| e.to == n2);
    assert!(c.node(&n2).is_some_and(|n| n.is_leader()), "n2 did not win");
    let n4 = c.add_node("n4");
    match c.change_membership(add_learner(&n4), false) {
        Err(Error::Conflict(m)) => assert!(m.contains("own term"), "{m}"),
        other => panic!("a change before the no-op committed: {other:?} (seed {})", c.seed),
    }
    settle_within(&mut c, &[&n2, &n3]);
    c.change_membership(add_learner(&n4), false).expect("a change after the no-op committed");
}

/// A learner that lags (cut off while more than 256 entries commit) is not promoted
/// (PreconditionFailed); once it has caught up, it is.
#[test]
fn a_lagging_learner_is_not_promoted() {
    let mut c = SimCluster::new(3, seed_from_env(109));
    c.check_one_leader(secs(5.0));
    let n4 = c.add_node("n4");
    c.change_and_commit(add_learner(&n4), secs(10.0)).expect("add n4");
    wait_caught_up(&mut c, &n4);
    c.disconnect(&n4);
    let commands: Vec<Vec<u8>> = (0..300).map(|i| format!("lag-{i}").into_bytes()).collect();
    c.one_all(&commands, 3);
    match c.change_membership(promote(&n4), false) {
        Err(Error::PreconditionFailed(m)) => assert!(m.contains("has not caught up"), "{m}"),
        other => panic!("promoted a lagging learner: {other:?} (seed {})", c.seed),
    }
    c.connect(&n4);
    wait_caught_up(&mut c, &n4);
    c.change_and_commit(promote(&n4), secs(10.0)).expect("promote once caught up");
    assert!(voters(&c, &leader(&c)).contains(&n4));
}

/// A learner that has never answered (it is down from the start) is not promoted, even while
/// the log is short enough for any lag to be within the limit.
#[test]
fn a_learner_that_never_answered_is_not_promoted() {
    let mut c = SimCluster::new(3, seed_from_env(117));
    c.check_one_leader(secs(5.0));
    let n4 = c.add_node("n4");
    c.crash(&n4);
    c.change_and_commit(add_learner(&n4), secs(10.0)).expect("add n4");
    match c.change_membership(promote(&n4), false) {
        Err(Error::PreconditionFailed(m)) => assert!(m.contains("has not caught up"), "{m}"),
        other => panic!("promoted a learner that never answered: {other:?} (seed {})", c.seed),
    }
    c.start(&n4);
    wait_caught_up(&mut c, &n4);
    c.change_and_commit(promote(&n4), secs(10.0)).expect("promote once it answered");
    assert!(voters(&c, &leader(&c)).contains(&n4));
}

/// The strict check: with one of three voters down, removing another live voter would leave a
/// configuration whose live voters are no quorum: PreconditionFailed; `force` overrides it.
#[test]
fn the_strict_check_refuses_a_change_that_leaves_no_live_quorum() {
    let mut c = SimCluster::new(3, seed_from_env(110));
    let top = c.check_one_leader(secs(5.0));
    let (down, live) = (c.next_id(&top, 1), c.next_id(&top, 2));
    c.crash(&down);
    c.run(secs(1.0));
    match c.change_membership(remove(&live), false) {
        Err(Error::PreconditionFailed(m)) => assert!(m.contains("`force` overrides"), "{m}"),
        other => panic!("removed a live voter without a live quorum: {other:?}"),
    }
    assert_eq!(voters(&c, &top).len(), 3, "a refused change changed the configuration");
    let index = c.change_membership(remove(&live), true).expect("forced");
    assert_eq!(voters(&c, &top), {
        let mut v = vec![top.clone(), down.clone()];
        v.sort();
        v
    });
    // {top, down} needs both: it commits once `down` is back.
    c.run(secs(1.0));
    assert!(c.node(&top).is_some_and(|n| n.log().commit_index < index), "committed alone");
    c.start(&down);
    assert!(
        c.run_until(secs(10.0), |c| c.max_committed() >= index),
        "the forced change never committed (seed {})",
        c.seed
    );
}

// ----- 6. the unsafe scenario of concurrent single-server changes ---------------------------------

/// Ongaro, raft-dev 2015, "bug in single-server membership changes", built step by step in
/// manual mode without PreVote and check quorum. C = {n1..n4}; n1 leads term T and appends
/// D = C + n5 (as a voter), which reaches nobody; n1 is cut off; n2 wins T+1 with n3 and n4 and
/// proposes E = C - n4, committed by n2 and n3 (a majority of E). If n2 could propose E before
/// committing an entry of T+1, n4 would hold no entry of T+1, and n1, back, would win T+2 with
/// n4 and n5 (a majority of D) and overwrite what E's majority committed. The own-term rule makes
/// n2 commit its no-op first, which needs n4 (3 of C's 4): n4 then refuses n1. The adversary
/// below tries the dangerous step whatever the core says; the simulation's Leader Completeness
/// check and the explicit assertions decide.
#[test]
fn concurrent_single_server_changes_cannot_elect_a_leader_without_committed_entries() {
    let mut c = SimCluster::with_config(4, seed_from_env(111), bare);
    c.manual();
    let [n1, n2, n3, n4] = ["n1", "n2", "n3", "n4"].map(id);
    let n5 = c.add_node("n5");
    let all = [&n1, &n2, &n3, &n4];
    c.tick_until_campaign(&n1);
    c.stabilize();
    c.try_propose(&n1, b"x1".to_vec()).expect("n1 leads term T");
    settle_within(&mut c, &all);
    heartbeat_within(&mut c, &n1, &all);
    let term_t = c.node(&n1).map_or(0, |n| n.term());

    // n1 appends D = C + n5 as a voter; it reaches nobody but n1's disk.
    c.change_membership(add_voter(&n5), true).expect("n1 proposes D");
    c.sync(&n1);
    c.drop_where(|e| e.from == n1);
    c.disconnect(&n1);

    // n2 wins T+1 with the votes of n3 and n4.
    c.tick_until_campaign(&n2);
    c.sync(&n2);
    c.deliver_where(|e| e.to == n3 || e.to == n4);
    c.sync(&n3);
    c.sync(&n4);
    c.deliver_where(|e| e.to == n2);
    assert!(c.node(&n2).is_some_and(|n| n.is_leader() && n.term() == term_t + 1));

    // n2 tries to remove n4 at once; the rule says: not before its no-op commits.
    match c.change_membership(remove(&n4), true) {
        Err(Error::Conflict(_)) => {
            // Committing the no-op needs 3 of C's 4 voters: n4 among them.
            settle_within(&mut c, &[&n2, &n3, &n4]);
            c.change_membership(remove(&n4), true).expect("E after the no-op committed");
        }
        Ok(_) => eprintln!("n2 proposed E before committing an entry of its term"),
        Err(e) => panic!("unexpected refusal: {e:?}"),
    }
    // E (and whatever preceded it) reaches n3 only; n2 and n3 are a majority of E.
    c.drop_where(|e| e.to == n4);
    settle_within(&mut c, &[&n2, &n3]);
    c.try_propose(&n2, b"y-committed-under-e".to_vec()).expect("n2 leads");
    settle_within(&mut c, &[&n2, &n3]);
    heartbeat_within(&mut c, &n2, &[&n2, &n3]);
    c.drop_where(|e| e.to == n4);
    let y = c.node(&n2).map_or(0, |n| n.log().commit_index);
    assert!(c.committed_at(y).is_some(), "E's majority committed nothing");

    // n1 restarts (D is on its disk) and campaigns, twice: T+1 is taken. n4 and n5 hear it
    // first.
    c.restart(&n1);
    c.connect(&n1);
    c.tick_until_campaign(&n1);
    c.sync(&n1);
    c.drop_where(|e| e.from == n1);
    while c.node(&n1).map_or(0, |n| n.term()) < term_t + 2 {
        c.tick_node(&n1);
    }
    assert_eq!(c.node(&n1).map(|n| n.term()), Some(term_t + 2));
    c.sync(&n1);
    c.deliver_where(|e| e.to == n4 || e.to == n5);
    c.sync(&n4);
    c.sync(&n5);
    c.deliver_where(|e| e.to == n1);
    assert!(
        !c.node(&n1).is_some_and(|n| n.is_leader()),
        "n1 won term T+2 with n4 and n5 (seed {})",
        c.seed
    );
    // The rest hear it too and refuse; then the cluster recovers without n4 and n5.
    c.stabilize();
    assert!(!c.node(&n1).is_some_and(|n| n.is_leader()), "n1 leads (seed {})", c.seed);
    c.crash(&n4);
    c.crash(&n5);
    c.automatic();
    let three = ids(&["n1", "n2", "n3"]);
    let mut log: Committed = (1..=y)
        .map(|i| (i, c.committed_at(i).map(|(_, cmd)| cmd.to_vec()).unwrap_or_default()))
        .collect();
    commit_on(&mut c, "after-the-scenario", &three, &mut log);
    assert_eq!(voters(&c, &n1), three, "n1 did not take E (seed {})", c.seed);
}

/// One change at a time: two uncommitted single-server changes add up to a two-server change.
/// C = {n1, n2, n3}; n1 appends C + n4 and then (if it were allowed) C + n4 + n5, whose majority
/// n1, n4, n5 shares nobody with C's majority n2, n3. The adversary lets only n4 and n5 hear n1,
/// then cuts n1 off and lets n2 win with n3: if n1 had committed anything with n4 and n5, n2 would
/// lead without it (the simulation's Leader Completeness check fires).
#[test]
fn two_uncommitted_changes_cannot_add_up_to_a_two_server_change() {
    let mut c = SimCluster::with_config(3, seed_from_env(112), bare);
    c.manual();
    let [n1, n2, n3] = ["n1", "n2", "n3"].map(id);
    let (n4, n5) = (c.add_node("n4"), c.add_node("n5"));
    c.tick_until_campaign(&n1);
    c.stabilize();
    heartbeat_within(&mut c, &n1, &[&n1, &n2, &n3]);
    let before = c.node(&n1).map_or(0, |n| n.log().commit_index);
    c.change_membership(add_voter(&n4), true).expect("the first change");
    match c.change_membership(add_voter(&n5), true) {
        Err(Error::Conflict(_)) => {}
        Ok(_) => eprintln!("n1 appended a second uncommitted change"),
        Err(e) => panic!("unexpected refusal: {e:?}"),
    }
    c.drop_where(|e| e.to == n2 || e.to == n3);
    c.disconnect(&n2);
    c.disconnect(&n3);
    // Joiners start from an empty log: n1 backs up to index 1 for each.
    for _ in 0..3 {
        settle_within(&mut c, &[&n1, &n4, &n5]);
        heartbeat_within(&mut c, &n1, &[&n1, &n4, &n5]);
    }
    c.try_propose(&n1, b"z".to_vec()).expect("n1 leads");
    settle_within(&mut c, &[&n1, &n4, &n5]);
    heartbeat_within(&mut c, &n1, &[&n1, &n4, &n5]);
    let committed = c.node(&n1).map_or(0, |n| n.log().commit_index);
    // n2 wins term T+1 with n3: C's majority, which never heard of either change.
    c.disconnect(&n1);
    c.disconnect(&n4);
    c.disconnect(&n5);
    c.connect(&n2);
    c.connect(&n3);
    c.tick_until_campaign(&n2);
    settle_within(&mut c, &[&n2, &n3]);
    assert!(c.node(&n2).is_some_and(|n| n.is_leader()), "n2 did not win with n3");
    assert_eq!(committed, before, "n1 committed with n4 and n5 alone (seed {})", c.seed);
    c.crash(&n4);
    c.crash(&n5);
    c.connect(&n1);
    c.automatic();
    let mut log = Committed::new();
    commit_on(&mut c, "after-the-scenario", &[n1, n2, n3], &mut log);
}
