//! Membership changes on the simulated cluster (thesis chapter 4): growing and shrinking one
//! server at a time, learners, replacing a dead member, removing the leader, the rules that keep
//! single-server changes safe (one at a time, an entry of the leader's own term first, the strict
//! quorum check), the unsafe scenario those rules prevent, and a randomized churn.
//!
//! The simulation checks Election Safety, Leader Completeness and State Machine Safety on every
//! step; these tests add what membership changes must keep true on top. Every cluster prints its
//! seed; `RAFT_SEED=<seed>` replays one, `RAFT_SEEDS=<n>` runs more schedules where a test loops
//! over seeds. Leadership transfer is in `tests/raft_transfer.rs`.
//!
//! `main.rs`: growing, shrinking, learners, replacing a member, removing the leader;
//! `rules.rs`: the rules of single-server changes and the unsafe scenarios they prevent;
//! `churn.rs`: randomized schedules.

use raftlabkv::Error;
use raftlabkv::raft::{
    Config, Envelope, Index, MembershipChange, Message, NodeId, RequestVote, Term,
};
use raftlabkv::sim::{SimCluster, secs, seed_from_env, seeds_from_env};

mod churn;
mod recovery;
mod rules;

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
    commit_on(&mut c, "alone", std::slice::from_ref(&n1), &mut log);
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

// ----- 8. churn ----------------------------------------------------------------------------------

/// Seeded random schedules of proposals, crashes and restarts, partitions, 10% message loss and
/// membership changes (add a learner, promote, remove, replace a dead member, transfer the
/// leadership), with snapshots on every other seed. The simulation checks safety on every step;
/// at the end, healed, the cluster elects a leader, commits a command, and every member has
/// applied the same commands.
#[test]
fn membership_churn() {
    for seed in seeds_from_env(113, 64) {
        churn::run(seed);
    }
}

/// A new learner's empty log is found with one rejection, and each entry is then sent to it
/// once: a rejection that answers a request sent before the leader backed up (a heartbeat and an
/// append both in flight when the learner appears) is stale and must not send the log again.
#[test]
fn a_new_learner_is_sent_each_entry_once() {
    for seed in seeds_from_env(131, 5) {
        let mut c = SimCluster::new(3, seed);
        c.net.drop_rate = 0.0;
        c.net.reorder = false;
        // Round trips of several ticks: a heartbeat goes out while the first append is in flight.
        c.net.max_delay = 8;
        c.check_one_leader(secs(5.0));
        let mut log = Committed::new();
        for i in 0..40 {
            commit_on(&mut c, &format!("e{i}"), &ids(&["n1", "n2", "n3"]), &mut log);
        }
        let n4 = c.add_node("n4");
        c.record();
        c.change_and_commit(add_learner(&n4), secs(10.0)).expect("add n4");
        wait_caught_up(&mut c, &n4);
        let last = c.node(&leader(&c)).map_or(0, |l| l.log().last_index());
        let sent: usize = c
            .take_trace()
            .iter()
            .filter_map(|e| match e {
                raftlabkv::sim::Event::Send(env) if env.to == n4 => match &env.message {
                    Message::AppendEntries(a) => Some(a.entries.len()),
                    _ => None,
                },
                _ => None,
            })
            .sum();
        assert!(sent as u64 <= last, "{sent} entries sent to n4 for a log of {last} (seed {seed})");
    }
}
