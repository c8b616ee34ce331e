//! Membership changes on the simulated cluster (thesis chapter 4): growing and shrinking one
//! server at a time, learners, replacing a dead member, removing the leader, the rules that keep
//! single-server changes safe (one at a time, an entry of the leader's own term first, the strict
//! quorum check), the unsafe scenario those rules prevent, and a randomized churn.
//!
//! The simulation checks Election Safety, Leader Completeness and State Machine Safety on every
//! step; these tests add what membership changes must keep true on top. Every cluster prints its
//! seed; `RAFT_SEED=<seed>` replays one, `RAFT_SEEDS=<n>` runs more schedules where a test loops
//! over seeds. Leadership transfer is in `tests/raft_transfer.rs`.

use raftlabkv::Error;
use raftlabkv::raft::{
    Config, Envelope, Index, MembershipChange, Message, NodeId, RequestVote, Term,
};
use raftlabkv::sim::{SimCluster, secs, seed_from_env, seeds_from_env};

fn id(s: &str) -> NodeId {
    s.to_string()
}

fn add_learner(n: &NodeId) -> MembershipChange {
    MembershipChange::Add { id: n.clone(), addr: format!("{n}:1"), learner: true }
}

fn add_voter(n: &NodeId) -> MembershipChange {
    MembershipChange::Add { id: n.clone(), addr: format!("{n}:1"), learner: false }
}

fn promote(n: &NodeId) -> MembershipChange {
    MembershipChange::Promote { id: n.clone() }
}

fn remove(n: &NodeId) -> MembershipChange {
    MembershipChange::Remove { id: n.clone() }
}

/// Entries every member must have applied: (index, command).
type Committed = Vec<(Index, Vec<u8>)>;

/// The voters of the configuration in force on `at`.
fn voters(c: &SimCluster, at: &NodeId) -> Vec<NodeId> {
    c.membership_of(at).map(|m| m.voters.into_keys().collect()).unwrap_or_default()
}

/// The learners of the configuration in force on `at`.
fn learners(c: &SimCluster, at: &NodeId) -> Vec<NodeId> {
    c.membership_of(at).map(|m| m.learners.into_keys().collect()).unwrap_or_default()
}

fn ids(names: &[&str]) -> Vec<NodeId> {
    names.iter().map(|n| id(n)).collect()
}

fn leader(c: &SimCluster) -> NodeId {
    c.current_leader().unwrap_or_else(|| panic!("no leader (seed {})", c.seed))
}

fn role(c: &SimCluster, n: &NodeId) -> &'static str {
    c.node(n).map_or("down", |x| x.status().role)
}

/// True once the leader knows `n` holds its log through the commit index and answered lately:
/// what a promotion asks for.
fn caught_up(c: &SimCluster, n: &NodeId) -> bool {
    let Some(status) = c.current_leader().and_then(|l| c.node(&l)).map(|l| l.status()) else {
        return false;
    };
    status
        .progress
        .get(n)
        .is_some_and(|p| p.match_index >= status.commit_index && p.last_contact_ticks < 10)
}

fn wait_caught_up(c: &mut SimCluster, n: &NodeId) {
    assert!(
        c.run_until(secs(10.0), |c| caught_up(c, n)),
        "{n} did not catch up within 10 s (seed {})",
        c.seed
    );
}

/// Commits `command` on all of `members` (and only counts running nodes), remembers it, and
/// checks that every member applied everything committed so far.
fn commit_on(c: &mut SimCluster, command: &str, members: &[NodeId], log: &mut Committed) {
    let command = command.as_bytes().to_vec();
    let index = c.one(command.clone(), members.len(), true);
    log.push((index, command));
    check_applied(c, members, log);
}

/// Every member (running) applied every entry of `log`.
fn check_applied(c: &SimCluster, members: &[NodeId], log: &Committed) {
    for m in members {
        let applied = c.applied(m).unwrap_or_else(|| panic!("{m} never ran (seed {})", c.seed));
        for (index, command) in log {
            assert_eq!(
                applied.get(index),
                Some(command),
                "{m} did not apply committed entry {index} (seed {})",
                c.seed
            );
        }
    }
}

/// Manual mode: delivers the messages among `group` and completes their fsyncs until nothing
/// among them is left to do. Unlike `SimCluster::stabilize_among`, messages from or to anyone
/// else stay in the network (held back, not lost).
fn settle_within(c: &mut SimCluster, group: &[&NodeId]) {
    let inside = |e: &Envelope| group.contains(&&e.from) && group.contains(&&e.to);
    loop {
        let mut progress = c.deliver_where(inside) > 0;
        for n in group {
            if c.waits_for_sync(n) {
                c.sync(n);
                progress = true;
            }
        }
        if !progress {
            return;
        }
    }
}

/// Manual mode: `leader` sends a heartbeat round (which carries its commit index) and `group`
/// settles it.
fn heartbeat_within(c: &mut SimCluster, leader: &NodeId, group: &[&NodeId]) {
    let ticks = Config::new(leader.clone(), vec![]).heartbeat_ticks;
    for _ in 0..ticks {
        c.tick_node(leader);
    }
    settle_within(c, group);
}

/// No pre-vote and no check quorum: the 2015 scenarios need a node that campaigns whenever its
/// timer fires and voters that answer it (the protections of §4.2.3 would hide the bug).
fn bare(config: &mut Config) {
    config.pre_vote = false;
    config.check_quorum = false;
}

// ----- 1. grow and shrink ------------------------------------------------------------------------

/// Grow 1 → 5, one learner at a time, each promoted once caught up; shrink 5 → 3. Commands commit
/// between steps on every member; afterwards commits survive the crash of the removed nodes, and
/// stop with the crash of a majority of the remaining voters.
#[test]
fn grow_from_one_to_five_then_shrink_to_three() {
    let mut c = SimCluster::new(1, seed_from_env(101));
    let n1 = c.check_one_leader(secs(5.0));
    let mut log = Committed::new();
    commit_on(&mut c, "alone", &[n1.clone()], &mut log);
    for k in 2..=5 {
        let n = c.add_node(&format!("n{k}"));
        c.change_and_commit(add_learner(&n), secs(10.0)).expect("add a learner");
        assert!(learners(&c, &n1).contains(&n), "{n} is not a learner (seed {})", c.seed);
        wait_caught_up(&mut c, &n);
        c.change_and_commit(promote(&n), secs(10.0)).expect("promote");
        let members: Vec<NodeId> = (1..=k).map(|i| format!("n{i}")).collect();
        assert_eq!(voters(&c, &leader(&c)), members, "voters after promoting {n}");
        commit_on(&mut c, &format!("grown-to-{k}"), &members, &mut log);
    }
    let top = leader(&c);
    let leaving: Vec<NodeId> = c.ids.iter().rev().filter(|n| **n != top).take(2).cloned().collect();
    for n in &leaving {
        c.change_and_commit(remove(n), secs(10.0)).expect("remove");
    }
    let staying: Vec<NodeId> = c.ids.iter().filter(|n| !leaving.contains(n)).cloned().collect();
    assert_eq!(voters(&c, &leader(&c)), staying, "voters after the shrink");
    commit_on(&mut c, "shrunk-to-3", &staying, &mut log);
    for n in &leaving {
        c.crash(n);
    }
    commit_on(&mut c, "removed-nodes-down", &staying, &mut log);

    // Two of the three remaining voters down: no majority, nothing commits.
    let top = leader(&c);
    let down: Vec<NodeId> = staying.iter().filter(|n| **n != top).cloned().collect();
    for n in &down {
        c.crash(n);
    }
    let before = c.max_committed();
    c.propose(&top, b"without-a-majority".to_vec());
    c.run(secs(5.0));
    assert_eq!(c.max_committed(), before, "committed without a majority (seed {})", c.seed);
    for n in &down {
        c.start(n);
    }
    commit_on(&mut c, "majority-back", &staying, &mut log);
}

// ----- 2. learners -------------------------------------------------------------------------------

/// A cluster of three voters and two caught-up learners.
fn three_voters_two_learners(seed: u64, configure: fn(&mut Config)) -> (SimCluster, Committed) {
    let mut c = SimCluster::with_config(3, seed, configure);
    c.check_one_leader(secs(5.0));
    for n in ["n4", "n5"] {
        let n = c.add_node(n);
        c.change_and_commit(add_learner(&n), secs(10.0)).expect("add a learner");
        wait_caught_up(&mut c, &n);
    }
    let mut log = Committed::new();
    commit_on(&mut c, "five-members", &ids(&["n1", "n2", "n3", "n4", "n5"]), &mut log);
    (c, log)
}

/// A learner's acknowledgements never make a commit: with two of three voters down, the leader
/// (kept leading: no check quorum) hears from both learners, yet commits nothing for 10 s.
#[test]
fn learner_acknowledgements_do_not_commit() {
    let (mut c, mut log) = three_voters_two_learners(seed_from_env(102), |cfg| {
        cfg.check_quorum = false;
    });
    let top = leader(&c);
    let down: Vec<NodeId> = voters(&c, &top).into_iter().filter(|n| *n != top).collect();
    for n in &down {
        c.crash(n);
    }
    let (index, _) = c.propose(&top, b"acked-by-learners".to_vec()).expect("still leads");
    let learners = ids(&["n4", "n5"]);
    let acked = |c: &SimCluster| {
        let status = c.node(&top).map(|l| l.status());
        status.is_some_and(|s| learners.iter().all(|l| s.progress[l].match_index >= index))
    };
    assert!(c.run_until(secs(2.0), acked), "the learners did not acknowledge (seed {})", c.seed);
    for _ in 0..secs(10.0) {
        c.tick();
        let commit = c.node(&top).map_or(0, |l| l.log().commit_index);
        assert!(commit < index, "{top} committed {index} with learner acks (seed {})", c.seed);
    }
    for n in &down {
        c.start(n);
    }
    let all = ids(&["n1", "n2", "n3", "n4", "n5"]);
    commit_on(&mut c, "voters-back", &all, &mut log);
}

/// Learners never vote or campaign: with the leader and another voter down, the last voter and
/// two learners stay leaderless for 10 s (a learner never even becomes a candidate), and commits
/// resume when a voter returns.
#[test]
fn learners_never_campaign_or_make_a_majority() {
    let (mut c, mut log) = three_voters_two_learners(seed_from_env(103), |_| {});
    let top = leader(&c);
    let other = voters(&c, &top).into_iter().find(|n| *n != top).expect("another voter");
    c.crash(&top);
    c.crash(&other);
    let before = c.max_committed();
    let learners = ids(&["n4", "n5"]);
    for _ in 0..secs(10.0) {
        c.tick();
        for l in &learners {
            let r = role(&c, l);
            assert_eq!(r, "follower", "learner {l} became {r} (seed {})", c.seed);
        }
        c.check_no_leader();
        c.propose_to_leader(b"nobody-leads");
    }
    assert_eq!(c.max_committed(), before, "committed without a majority (seed {})", c.seed);
    c.start(&other);
    let running: Vec<NodeId> = c.ids.iter().filter(|n| **n != top).cloned().collect();
    commit_on(&mut c, "a-voter-is-back", &running, &mut log);
    let new_leader = leader(&c);
    assert!(!learners.contains(&new_leader), "learner {new_leader} leads (seed {})", c.seed);
}

/// A node that may not campaign (here a learner whose promotion has not reached it yet) still
/// votes once its leader is gone: its election timer must not keep renewing a lease on a leader
/// it no longer hears from. Two voters and a caught-up learner n3; n1 commits n3's promotion with
/// n2 alone and crashes; n2 and n3 are a majority of the new configuration, so n3 must answer
/// n2's PreVotes, whenever they come. (Found by the churn, seed 115417: n3 ignored them forever.)
#[test]
fn a_node_that_cannot_campaign_still_votes_when_its_leader_is_gone() {
    let mut c = SimCluster::new(2, seed_from_env(114));
    c.check_one_leader(secs(5.0));
    let n3 = c.add_node("n3");
    c.change_and_commit(add_learner(&n3), secs(10.0)).expect("add n3");
    wait_caught_up(&mut c, &n3);
    let top = leader(&c);
    let other = voters(&c, &top).into_iter().find(|n| *n != top).expect("two voters");
    c.manual();
    c.stabilize();
    let index = c.change_membership(promote(&n3), false).expect("promote n3");
    settle_within(&mut c, &[&top, &other]);
    assert!(c.node(&top).is_some_and(|n| n.log().commit_index >= index), "not committed");
    c.crash(&top);
    c.drop_where(|e| e.to == n3);
    assert_eq!(c.node(&n3).map(|n| n.member_state()), Some("learner"));
    let (last_index, last_term) = {
        let log = c.node(&other).expect("running").log();
        (log.last_index(), log.last_term())
    };
    let term = c.node(&other).map_or(0, |n| n.term());
    for tick in 0..secs(2.0) {
        c.tick_node(&n3);
        if tick < 60 {
            continue; // n3's lease on n1 runs out.
        }
        let pre_vote = RequestVote {
            last_log_index: last_index,
            last_log_term: last_term,
            pre_vote: true,
            transfer: false,
        };
        let env = Envelope {
            from: other.clone(),
            to: n3.clone(),
            term: term + 1,
            message: Message::RequestVote(pre_vote),
        };
        c.inject(env);
        c.deliver_where(|e| e.to == n3);
        let answered = c.drop_where(|e| {
            e.from == n3 && matches!(&e.message, Message::RequestVoteResponse(r) if r.vote_granted)
        });
        assert_eq!(
            answered, 1,
            "n3 ignored a PreVote {} ticks after its leader went (seed {})",
            tick, c.seed
        );
    }
    c.automatic();
    c.check_one_leader(secs(5.0));
}

// ----- 3. replace a dead member ------------------------------------------------------------------

/// A member's disk dies: wipe it, add a new node as a learner, promote it, remove the dead one.
/// Every command committed before is applied on the new node, and commits continue, with the new
/// node counting (once with snapshots, so the newcomer catches up through InstallSnapshot).
#[test]
fn replace_a_dead_member() {
    for (seed, snapshots) in [(seed_from_env(104), false), (seed_from_env(104) + 1, true)] {
        let mut c = SimCluster::new(3, seed);
        if snapshots {
            c.snapshot_every = Some(10);
            c.snapshot_trailing = 2;
        }
        let top = c.check_one_leader(secs(5.0));
        let mut log = Committed::new();
        for i in 0..25 {
            commit_on(&mut c, &format!("before-{i}"), &ids(&["n1", "n2", "n3"]), &mut log);
        }
        let dead = c.ids.iter().find(|n| **n != top).cloned().expect("a follower");
        c.wipe(&dead);
        let n4 = c.add_node("n4");
        c.change_and_commit(add_learner(&n4), secs(10.0)).expect("add n4");
        wait_caught_up(&mut c, &n4);
        c.change_and_commit(promote(&n4), secs(10.0)).expect("promote n4");
        c.change_and_commit(remove(&dead), secs(10.0)).expect("remove the dead member");
        let members: Vec<NodeId> =
            ["n1", "n2", "n3", "n4"].map(id).into_iter().filter(|n| *n != dead).collect();
        assert_eq!(voters(&c, &leader(&c)), members, "voters after the replacement");
        commit_on(&mut c, "after-replace", &members, &mut log);
        if snapshots {
            assert!(c.snapshots_installed > 0, "n4 caught up without a snapshot (seed {seed})");
        }
        // n4 counts: with another original member down, n4 and the leader still commit.
        let top = leader(&c);
        let other = members.iter().find(|n| **n != top && **n != n4).cloned().expect("a member");
        c.crash(&other);
        let survivors = [top, n4];
        commit_on(&mut c, "n4-counts", &survivors, &mut log);
    }
}

// ----- 4. remove the leader ----------------------------------------------------------------------

/// §4.2.2: a leader removing itself keeps leading until the change commits, without counting
/// itself (the old majority, itself and one follower, is not enough); then it steps down, a new
/// leader is elected among the rest, and the removed node, left running, never leads again nor
/// changes anyone's term.
#[test]
fn a_removed_leader_steps_down_once_its_removal_commits() {
    let mut c = SimCluster::new(3, seed_from_env(105));
    let old = c.check_one_leader(secs(5.0));
    let mut log = Committed::new();
    commit_on(&mut c, "three", &ids(&["n1", "n2", "n3"]), &mut log);
    let rest: Vec<NodeId> = c.ids.iter().filter(|n| **n != old).cloned().collect();
    let a = &rest[0];
    c.manual();
    c.stabilize();
    let index = c.change_membership(remove(&old), false).expect("remove the leader");
    // Only `a` hears of it: in the old configuration {old, a} would be a majority.
    settle_within(&mut c, &[&old, a]);
    let leader_node = c.node(&old).expect("running");
    assert!(leader_node.is_leader(), "{old} stopped leading before its removal committed");
    assert!(
        leader_node.log().commit_index < index,
        "{old} counted itself towards committing its own removal (seed {})",
        c.seed
    );
    // It still leads: it accepts commands, replicated after its removal.
    let (after, _) = c.try_propose(&old, b"while-leaving".to_vec()).expect("still leads");
    settle_within(&mut c, &[&old, a]);
    c.stabilize();
    let leader_node = c.node(&old).expect("running");
    assert!(!leader_node.is_leader(), "{old} leads after its removal committed");
    assert_eq!(leader_node.member_state(), "removed");
    c.automatic();
    let new = c.check_one_leader(secs(5.0));
    assert!(rest.contains(&new), "{new} leads, not one of {rest:?}");
    commit_on(&mut c, "two-left", &rest, &mut log);
    // The command proposed while leaving, held by both, is committed (by the new leader if the
    // old one stepped down first).
    assert_eq!(c.committed_at(after).map(|(_, cmd)| cmd), Some(&b"while-leaving"[..]));
    no_disruption(&mut c, &old, &rest, secs(5.0));
    assert_eq!(c.node(&old).map(|n| n.status().role), Some("follower"));
}

/// For `ticks`, the removed node `gone` (running) never leads and the leader and terms of `rest`
/// do not change.
fn no_disruption(c: &mut SimCluster, gone: &NodeId, rest: &[NodeId], ticks: u64) {
    let top = leader(c);
    let terms: Vec<Term> = rest.iter().map(|n| c.node(n).map_or(0, |x| x.term())).collect();
    for _ in 0..ticks {
        c.tick();
        assert_ne!(role(c, gone), "leader", "removed {gone} leads (seed {})", c.seed);
        let now: Vec<Term> = rest.iter().map(|n| c.node(n).map_or(0, |x| x.term())).collect();
        assert_eq!(now, terms, "removed {gone} changed the terms of {rest:?} (seed {})", c.seed);
        assert_eq!(c.current_leader().as_ref(), Some(&top), "the leader changed (seed {})", c.seed);
    }
}

/// §4.2.3: a node removed while cut off never hears of its removal and times out again and again;
/// healed, it disrupts nobody (PreVote and check quorum: its vote requests are ignored). Once as
/// a follower, once as the old leader (which the rest removed after electing a new one).
#[test]
fn a_node_removed_while_cut_off_does_not_disrupt_when_healed() {
    for (seed, was_leader) in [(seed_from_env(106), false), (seed_from_env(106) + 1, true)] {
        let mut c = SimCluster::new(3, seed);
        let top = c.check_one_leader(secs(5.0));
        let mut log = Committed::new();
        commit_on(&mut c, "three", &ids(&["n1", "n2", "n3"]), &mut log);
        let gone = if was_leader { top.clone() } else { c.next_id(&top, 1) };
        let rest: Vec<NodeId> = c.ids.iter().filter(|n| **n != gone).cloned().collect();
        c.disconnect(&gone);
        c.check_one_leader(secs(5.0));
        c.change_and_commit(remove(&gone), secs(10.0)).expect("remove the cut-off node");
        commit_on(&mut c, "two-left", &rest, &mut log);
        c.run(secs(3.0));
        let gone_node = c.node(&gone).expect("running");
        assert_ne!(gone_node.member_state(), "removed", "{gone} heard of its removal");
        assert_ne!(gone_node.status().role, "leader", "{gone} leads alone (seed {seed})");
        c.connect(&gone);
        no_disruption(&mut c, &gone, &rest, secs(5.0));
        commit_on(&mut c, "healed", &rest, &mut log);
    }
}

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

// ----- 8. churn ----------------------------------------------------------------------------------

/// Seeded random schedules of proposals, crashes and restarts, partitions, 10% message loss and
/// membership changes (add a learner, promote, remove, replace a dead member, transfer the
/// leadership), with snapshots on every other seed. The simulation checks safety on every step;
/// at the end, healed, the cluster elects a leader, commits a command, and every member has
/// applied the same commands.
#[test]
fn membership_churn() {
    for seed in seeds_from_env(113, 8) {
        churn::run(seed);
    }
}

/// The churn schedule: random steps, each followed by a random pause.
mod churn {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    /// Node ids the schedule may create in all (the cluster starts with 3).
    const MAX_NODES: usize = 8;
    /// Steps per schedule.
    const STEPS: usize = 250;

    struct Churn {
        c: SimCluster,
        /// Nodes whose disk died (wiped, never restarted): replaced, never back.
        dead: BTreeSet<NodeId>,
        /// Nodes that were ever in a configuration (never added again once removed).
        ever: BTreeSet<NodeId>,
        proposed: u64,
        /// Per kind of change: (accepted, tried).
        changes: BTreeMap<&'static str, (u32, u32)>,
    }

    pub fn run(seed: u64) {
        let mut c = SimCluster::new(3, seed);
        c.net.drop_rate = 0.1;
        if seed % 2 == 1 {
            c.snapshot_every = Some(20);
            c.snapshot_trailing = 5;
        }
        let ever = c.ids.iter().cloned().collect();
        let mut s = Churn { c, dead: BTreeSet::new(), ever, proposed: 0, changes: BTreeMap::new() };
        for _ in 0..STEPS {
            s.step();
            let pause = 1 + s.c.rand(40);
            s.c.run(pause);
            s.note_members();
        }
        s.finish();
    }

    impl Churn {
        fn dump(&self) {
            for n in &self.c.ids {
                match self.c.node(n) {
                    None => eprintln!("{n}: down (dead: {})", self.dead.contains(n)),
                    Some(x) => {
                        let st = x.status();
                        eprintln!(
                            "{n}: {} term {} {} voters {:?} learners {:?} cfg@{} last {}/{} commit {}",
                            st.role,
                            st.term,
                            st.member_state,
                            st.membership.as_ref().map(|m| m.voters.keys().collect::<Vec<_>>()),
                            st.membership.as_ref().map(|m| m.learners.keys().collect::<Vec<_>>()),
                            st.config_index,
                            st.last_log_index,
                            st.last_log_term,
                            st.commit_index
                        );
                    }
                }
            }
        }

        fn count(&mut self, kind: &'static str, accepted: bool) {
            let e = self.changes.entry(kind).or_default();
            e.0 += u32::from(accepted);
            e.1 += 1;
        }

        fn change(&mut self, kind: &'static str, change: MembershipChange) {
            let ok = self.c.change_membership(change, false).is_ok();
            self.count(kind, ok);
        }

        fn step(&mut self) {
            match self.c.rand(100) {
                0..=29 => {
                    self.proposed += 1;
                    let command = format!("c{}", self.proposed).into_bytes();
                    self.c.propose_to_leader(&command);
                }
                30..=36 => {
                    let n = self.c.random_node();
                    self.c.crash(&n);
                }
                37..=44 => self.restart_all(),
                45..=49 => {
                    let (mut a, mut b) = (Vec::new(), Vec::new());
                    for n in self.c.ids.clone() {
                        if self.c.rand(2) == 0 { a.push(n) } else { b.push(n) }
                    }
                    self.c.partition(&[a, b]);
                }
                50..=56 => self.c.heal(),
                57..=65 => self.add_learner(),
                66..=76 => {
                    if let Some(n) = self.pick(|c, l| learners(c, l)) {
                        self.change("promote", promote(&n));
                    }
                }
                77..=82 => self.remove_live(),
                83..=86 => self.replace(),
                87..=93 => {
                    for n in self.dead.clone() {
                        self.change("remove-dead", remove(&n));
                    }
                }
                _ => {
                    let to = self.pick(|c, l| voters(c, l));
                    let ok = self.c.transfer_leadership(to.as_deref()).is_ok();
                    self.count("transfer", ok);
                }
            }
        }

        /// A random member (as `of` lists them on the leader), not a dead one.
        fn pick(&mut self, of: fn(&SimCluster, &NodeId) -> Vec<NodeId>) -> Option<NodeId> {
            let l = self.c.current_leader()?;
            let all: Vec<NodeId> =
                of(&self.c, &l).into_iter().filter(|n| !self.dead.contains(n)).collect();
            let i = self.c.rand(all.len() as u64) as usize;
            all.get(i).cloned()
        }

        fn restart_all(&mut self) {
            for n in self.c.ids.clone() {
                if !self.dead.contains(&n) {
                    self.c.start(&n);
                }
            }
        }

        /// Every node in some running node's configuration has been a member.
        fn note_members(&mut self) {
            for n in self.c.ids.clone() {
                if let Some(m) = self.c.membership_of(&n) {
                    self.ever.extend(m.members().map(|(id, _, _)| id.clone()));
                }
            }
        }

        /// True if a dead node is still in the configuration of the leader or of a running member
        /// of it (or no leader is known). Removed nodes' stale configurations do not count: with
        /// their removal committed, they cannot win an election.
        fn dead_in_a_config(&self) -> bool {
            let Some(l) = self.c.current_leader() else { return true };
            let Some(m) = self.c.membership_of(&l) else { return true };
            let holders = m.members().map(|(n, _, _)| n.clone()).chain([l.clone()]);
            let configs: Vec<_> = holders.filter_map(|n| self.c.membership_of(&n)).collect();
            configs.iter().any(|m| self.dead.iter().any(|d| m.contains(d)))
        }

        /// Adds a learner: a node that joined but was never a member, or a new one.
        fn add_learner(&mut self) {
            let waiting =
                self.c.ids.iter().find(|n| {
                    !self.ever.contains(*n) && !self.dead.contains(*n) && self.c.is_up(n)
                });
            let n = match waiting.cloned() {
                Some(n) => n,
                None if self.c.ids.len() < MAX_NODES => {
                    let name = format!("n{}", self.c.ids.len() + 1);
                    self.c.add_node(&name)
                }
                None => return,
            };
            self.change("add", add_learner(&n));
        }

        /// Removes a live member. Not while a dead member is still configured anywhere: the
        /// strict check counts a voter as alive for an election timeout after its death, and
        /// removing a live voter then could leave a configuration whose majority needs the dead.
        fn remove_live(&mut self) {
            if self.dead_in_a_config() {
                return;
            }
            // Keep a few voters for the rest of the schedule: remove a voter only from three.
            if let Some(n) = self.pick(|c, l| {
                let mut all = voters(c, l);
                if all.len() < 3 {
                    all.clear();
                }
                all.extend(learners(c, l));
                all
            }) {
                self.change("remove", remove(&n));
            }
        }

        /// A voter's disk dies for good; a new node joins as a learner to replace it. Only when
        /// the configuration is settled everywhere (every node up, the leader's configuration
        /// committed and the one in force on every member) with at least three voters, and no
        /// other dead member: one dead voter can never take a majority with it.
        fn replace(&mut self) {
            if self.dead_in_a_config() {
                return;
            }
            self.restart_all();
            let Some(l) = self.c.current_leader() else { return };
            let Some(m) = self.c.membership_of(&l) else { return };
            let committed =
                self.c.node(&l).is_some_and(|n| n.log().commit_index >= n.config_index());
            let settled = m.members().all(|(n, _, _)| self.c.membership_of(n).as_ref() == Some(&m));
            if !committed || !settled || m.voters.len() < 3 {
                return;
            }
            let Some(victim) = self.pick(|c, l| voters(c, l)) else { return };
            self.c.wipe(&victim);
            self.dead.insert(victim);
            self.count("wipe", true);
            self.add_learner();
        }

        /// Heal, bring every node back, remove the dead, commit one more command: every member
        /// applied the same commands.
        fn finish(mut self) {
            self.c.heal();
            self.c.net.drop_rate = 0.0;
            self.restart_all();
            if !self.c.run_until(secs(10.0), |c| c.current_leader().is_some()) {
                self.dump();
            }
            self.c.check_one_leader(secs(10.0));
            for n in self.dead.clone() {
                match self.c.change_and_commit(remove(&n), secs(20.0)) {
                    Ok(_) | Err(Error::NotFound(_)) => {}
                    Err(e) => panic!("could not remove dead {n}: {e:?} (seed {})", self.c.seed),
                }
            }
            let c = &mut self.c;
            let l = leader(c);
            let mut members = voters(c, &l);
            members.extend(learners(c, &l));
            let index = c.one(b"final".to_vec(), members.len(), true);
            // `one` counts any running node; wait for the members themselves. (The leader may
            // have just stepped down: its own removal was the last change.)
            let done = |c: &SimCluster| {
                members.iter().all(|m| c.applied(m).is_some_and(|a| a.contains_key(&index)))
            };
            assert!(
                c.run_until(secs(5.0), done),
                "not every member applied {index} (seed {})",
                c.seed
            );
            let reference: Vec<_> =
                c.applied(&members[0]).expect("running").range(..=index).collect();
            for m in &members {
                let mine: Vec<_> = c.applied(m).expect("running").range(..=index).collect();
                assert_eq!(
                    mine, reference,
                    "{m} and {} applied different commands (seed {})",
                    members[0], c.seed
                );
            }
            let l = c.check_one_leader(secs(5.0));
            eprintln!(
                "seed {}: changes (accepted, tried) {:?}; final voters {:?}, learners {:?}, term \
                 {}, {index} entries, {} snapshots installed",
                c.seed,
                self.changes,
                voters(c, &l),
                learners(c, &l),
                c.node(&l).map_or(0, |n| n.term()),
                c.snapshots_installed
            );
        }
    }
}
