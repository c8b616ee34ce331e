//! Leadership transfer (thesis §3.10) on the simulated cluster: to a named voter, to the most
//! up-to-date one, to a target that lags, with the TimeoutNow lost, with the target cut off, and
//! the transfer-marked RequestVote that voters inside their check-quorum lease do not ignore.
//!
//! Every cluster prints its seed; `RAFT_SEED=<seed>` replays it. Durations are in ticks of the
//! simulated clock (deterministic), not wall-clock time.

use raftlabkv::Error;
use raftlabkv::raft::{Config, Envelope, Message, NodeId};
use raftlabkv::sim::{SimCluster, secs, seed_from_env};

/// The default configuration's election timeouts, in ticks.
fn election_ticks() -> (u64, u64) {
    let config = Config::new("n1", vec![]);
    (config.election_ticks_min, config.election_ticks_max)
}

fn leads(c: &SimCluster, n: &NodeId) -> bool {
    c.node(n).is_some_and(|x| x.is_leader())
}

fn term(c: &SimCluster, n: &NodeId) -> u64 {
    c.node(n).map_or(0, |x| x.term())
}

fn transferring(c: &SimCluster, n: &NodeId) -> bool {
    c.node(n).is_some_and(|x| x.status().transfer.is_some())
}

fn is_timeout_now(e: &Envelope) -> bool {
    matches!(e.message, Message::TimeoutNow)
}

/// A three-node cluster with a leader that has committed a command everywhere; fsyncs are never
/// slow, so a handover's round trips take a few ticks.
fn settled(seed: u64) -> (SimCluster, NodeId) {
    let mut c = SimCluster::new(3, seed);
    c.disk.slow_sync_rate = 0.0;
    let leader = c.check_one_leader(secs(5.0));
    c.one(b"settled".to_vec(), 3, true);
    (c, leader)
}

/// To a named voter: it leads in the next term, well within an election timeout (no node waits
/// for its timer), and serves writes.
#[test]
fn a_transfer_hands_leadership_to_the_named_voter() {
    let (mut c, old) = settled(seed_from_env(201));
    let before = c.check_terms();
    let target = c.next_id(&old, 1);
    assert_eq!(c.transfer_leadership(Some(&target)).expect("transfer"), target);
    let (min, _) = election_ticks();
    let t0 = c.now;
    assert!(
        c.run_until(min, |c| leads(c, &target)),
        "{target} did not lead within an election timeout ({min} ticks; seed {})",
        c.seed
    );
    eprintln!("handover in {} ticks", c.now - t0);
    assert_eq!(term(&c, &target), before + 1, "the transfer took more than one term");
    assert!(!leads(&c, &old), "{old} still leads");
    c.one(b"after-transfer".to_vec(), 3, true);
    assert_eq!(c.current_leader(), Some(target));
}

/// Without a target, the most up-to-date voter is chosen: here the follower that was not cut
/// off while entries committed.
#[test]
fn a_transfer_without_a_target_picks_the_most_up_to_date_voter() {
    let (mut c, old) = settled(seed_from_env(202));
    let (lagging, best) = (c.next_id(&old, 1), c.next_id(&old, 2));
    c.disconnect(&lagging);
    for i in 0..5 {
        c.one(format!("while-{lagging}-is-away-{i}").into_bytes(), 2, true);
    }
    assert_eq!(c.transfer_leadership(None).expect("transfer"), best);
    let (_, max) = election_ticks();
    assert!(c.run_until(max, |c| leads(c, &best)), "{best} did not lead (seed {})", c.seed);
}

/// A target that lags (cut off while 100 entries committed, reconnected just before the
/// transfer) is brought up to date first: TimeoutNow leaves only once its log matches the
/// leader's. Meanwhile the leader refuses writes (Unavailable).
#[test]
fn a_lagging_target_is_caught_up_before_it_is_told_to_campaign() {
    let (mut c, old) = settled(seed_from_env(203));
    let target = c.next_id(&old, 1);
    c.disconnect(&target);
    let commands: Vec<Vec<u8>> = (0..100).map(|i| format!("lag-{i}").into_bytes()).collect();
    c.one_all(&commands, 2);
    c.connect(&target);
    let last = c.node(&old).expect("leads").log().last_index();
    assert!(c.node(&target).is_some_and(|n| n.log().last_index() < last), "no lag");
    c.transfer_leadership(Some(&target)).expect("transfer");
    let (_, max) = election_ticks();
    let mut told = false;
    for _ in 0..max {
        if c.in_flight().iter().any(|e| is_timeout_now(e) && e.to == target) {
            told = true;
            let held = c.node(&target).map_or(0, |n| n.log().last_index());
            assert!(held >= last, "TimeoutNow sent to {target} holding {held} of {last}");
        }
        if transferring(&c, &old) {
            match c.try_propose(&old, b"during".to_vec()) {
                Err(Error::Unavailable(m)) => assert!(m.contains("transferred"), "{m}"),
                other => panic!("a write during the transfer: {other:?} (seed {})", c.seed),
            }
        }
        if leads(&c, &target) {
            break;
        }
        c.tick();
    }
    assert!(told, "no TimeoutNow (seed {})", c.seed);
    assert!(leads(&c, &target), "{target} did not lead (seed {})", c.seed);
    c.one(b"after".to_vec(), 3, true);
}

/// TimeoutNow lost: proposals are refused (Unavailable) while the transfer is under way; after an
/// election timeout it is abandoned, and the same leader, in the same term, accepts writes again.
#[test]
fn a_transfer_whose_timeout_now_is_lost_is_abandoned() {
    let (mut c, old) = settled(seed_from_env(204));
    let before = term(&c, &old);
    let target = c.next_id(&old, 1);
    c.transfer_leadership(Some(&target)).expect("transfer");
    let mut lost = c.drop_where(is_timeout_now);
    let (t0, (_, max)) = (c.now, election_ticks());
    while transferring(&c, &old) {
        match c.try_propose(&old, b"during".to_vec()) {
            Err(Error::Unavailable(_)) => {}
            other => panic!("a write during the transfer: {other:?} (seed {})", c.seed),
        }
        assert!(c.now - t0 <= max, "the transfer was not abandoned (seed {})", c.seed);
        c.tick();
        lost += c.drop_where(is_timeout_now);
    }
    assert!(lost >= 1, "no TimeoutNow to lose (seed {})", c.seed);
    assert!(c.now - t0 >= max - 1, "abandoned after {} ticks, before a timeout", c.now - t0);
    assert!(leads(&c, &old) && term(&c, &old) == before, "{old} lost its leadership");
    assert!(!leads(&c, &target), "{target} leads without TimeoutNow");
    let (index, _) = c.try_propose(&old, b"resumed".to_vec()).expect("writes resume");
    assert_eq!(c.wait(index, 3, secs(2.0)).as_deref(), Some(&b"resumed"[..]));
    assert_eq!(term(&c, &old), before, "the term changed");
}

/// The target cut off: the transfer is abandoned and the old leader keeps leading, in its term,
/// all along, and serves writes; healed, the cluster agrees.
#[test]
fn a_transfer_to_a_cut_off_target_is_abandoned_and_the_leader_keeps_serving() {
    let (mut c, old) = settled(seed_from_env(205));
    let before = term(&c, &old);
    let (target, other) = (c.next_id(&old, 1), c.next_id(&old, 2));
    c.partition(&[vec![old.clone(), other.clone()], vec![target.clone()]]);
    c.transfer_leadership(Some(&target)).expect("transfer");
    let (_, max) = election_ticks();
    for _ in 0..max + 1 {
        c.tick();
        assert!(leads(&c, &old) && term(&c, &old) == before, "{old} stopped leading");
    }
    assert!(!transferring(&c, &old), "the transfer was not abandoned (seed {})", c.seed);
    c.one(b"still-serving".to_vec(), 2, false);
    assert_eq!(c.current_leader(), Some(old.clone()));
    c.heal();
    c.one(b"healed".to_vec(), 3, true);
}

/// Manual mode: n1 leads and every node has just heard from it (inside its check-quorum lease).
fn led_by_n1(seed: u64, configure: fn(&mut Config)) -> SimCluster {
    let mut c = SimCluster::with_config(3, seed, configure);
    c.manual();
    let n1 = "n1".to_string();
    c.tick_until_campaign(&n1);
    c.stabilize();
    assert!(leads(&c, &n1), "n1 did not win (seed {})", c.seed);
    for _ in 0..Config::new("n1", vec![]).heartbeat_ticks {
        c.tick_node(&n1);
    }
    c.stabilize();
    c
}

/// A vote answered by `from` to `to` is in the network.
fn vote_from(c: &SimCluster, from: &str, to: &str) -> Option<bool> {
    c.in_flight().iter().find_map(|e| match &e.message {
        Message::RequestVoteResponse(r) if e.from == from && e.to == to => Some(r.vote_granted),
        _ => None,
    })
}

/// Check quorum: a voter that has just heard from its leader ignores an ordinary RequestVote of a
/// later term (its term does not move, it does not answer), but not one marked as a transfer,
/// which it answers and grants.
#[test]
fn a_transfer_vote_request_is_answered_inside_the_lease_an_ordinary_one_is_not() {
    // Ordinary: n2 campaigns on its own (no PreVote, so it sends a real RequestVote).
    let mut c = led_by_n1(seed_from_env(206), |cfg| cfg.pre_vote = false);
    let (n2, n3) = ("n2".to_string(), "n3".to_string());
    let before = term(&c, &n3);
    c.tick_until_campaign(&n2);
    c.sync(&n2);
    let asked = c.deliver_where(|e| e.to == n3 && matches!(e.message, Message::RequestVote(_)));
    assert_eq!(asked, 1, "n2 did not ask n3");
    c.sync(&n3);
    assert_eq!(term(&c, &n3), before, "n3 took the term of an ordinary candidate in its lease");
    assert_eq!(vote_from(&c, "n3", "n2"), None, "n3 answered an ordinary RequestVote");

    // A transfer: n1 tells n2 to campaign; n3, just as much inside its lease, votes.
    let mut c = led_by_n1(seed_from_env(206), |_| {});
    let before = term(&c, &n3);
    c.transfer_leadership(Some("n2")).expect("transfer");
    assert_eq!(c.deliver_where(is_timeout_now), 1, "no TimeoutNow");
    c.sync(&n2);
    let asked = c.deliver_where(|e| {
        e.to == n3 && matches!(&e.message, Message::RequestVote(r) if r.transfer && !r.pre_vote)
    });
    assert_eq!(asked, 1, "n2 did not send n3 a transfer RequestVote");
    c.sync(&n3);
    assert_eq!(term(&c, &n3), before + 1);
    assert_eq!(vote_from(&c, "n3", "n2"), Some(true), "n3 did not grant the transfer's vote");
    c.stabilize();
    assert!(leads(&c, &n2), "n2 did not win (seed {})", c.seed);
}
