//! Pipelined replication (`Config::max_inflight`, etcd's `MaxInflightMsgs`), on the simulated
//! cluster: a follower known to match gets several AppendEntries before the first is answered,
//! each entry still leaves once, a follower that stops answering (or rejects) is probed one
//! request at a time, and the commit latency it buys is measured in simulated ticks.
//! A divergent follower caught up with a window is in `raft_agreement.rs`; safety under loss and
//! reordering with a window in `raft_persistence.rs` (Figure 8 unreliable) and `sim_kv.rs`
//! (linearizability, some seeds pipelined).

use raftlabkv::raft::{NodeId, ReplicationState};
use raftlabkv::sim::{DiskConfig, NetConfig, SimCluster, secs, seed_from_env};

fn cmd(i: u64) -> Vec<u8> {
    format!("cmd-{i}").into_bytes()
}

fn pipelined(n: usize, seed: u64, window: usize) -> SimCluster {
    SimCluster::with_config(n, seed, move |c| c.max_inflight = window)
}

/// `leader`'s view of `peer`: (requests in flight, state).
fn view(c: &SimCluster, leader: &NodeId, peer: &NodeId) -> (u64, ReplicationState) {
    let status = c.node(leader).expect("leader runs").status();
    let p = &status.progress[peer];
    (p.inflight, p.state)
}

/// What one steady run of proposals looked like from the leader.
struct Run {
    /// Most requests seen in flight to one follower at once.
    max_inflight: u64,
    /// Mean ticks from a proposal to its commit on the leader.
    mean_commit_ticks: f64,
    /// Entries the leader sent to each follower during the run.
    entries_sent: Vec<u64>,
    /// Commands proposed.
    proposed: u64,
}

/// One command proposed every tick for 2 simulated seconds on a network that delays each
/// message by up to 4 ticks (in order, nothing lost) and fsyncs of at most a tick, then until
/// all commit. `None` if the term
/// changed meanwhile (the caller tries again).
fn steady_run(c: &mut SimCluster) -> Option<Run> {
    let leader = c.check_one_leader(secs(5.0));
    c.run(secs(0.5)); // the no-op and the first heartbeats settle
    let term = c.node(&leader)?.term();
    let followers: Vec<NodeId> = c.ids.iter().filter(|id| **id != leader).cloned().collect();
    let sent0: Vec<u64> = followers
        .iter()
        .map(|f| c.entries_sent.get(&(leader.clone(), f.clone())).copied().unwrap_or(0))
        .collect();
    let mut proposals = Vec::new(); // (index, tick proposed)
    let mut commits = Vec::new(); // ticks to commit, per proposal
    let mut max_inflight = 0;
    let mut i = 0;
    let until = c.now + secs(2.0);
    while c.now < until || commits.len() < proposals.len() {
        if c.now < until {
            let (index, t) = c.propose(&leader, cmd(i))?;
            if t != term {
                return None;
            }
            proposals.push((index, c.now));
            i += 1;
        }
        c.tick();
        let node = c.node(&leader)?;
        if node.term() != term || !node.is_leader() {
            return None;
        }
        let commit = node.log().commit_index;
        while let Some(&(index, at)) = proposals.get(commits.len()) {
            if index > commit {
                break;
            }
            commits.push(c.now - at);
        }
        for f in &followers {
            max_inflight = max_inflight.max(view(c, &leader, f).0);
        }
        if c.now > until + secs(5.0) {
            panic!("proposals did not commit in 5 s (seed {})", c.seed);
        }
    }
    // Commit needs one follower; count what both were sent once both hold everything.
    let last = c.node(&leader)?.log().last_index();
    let all_hold = c.run_until(secs(2.0), |c| {
        let status = c.node(&leader).map(|n| n.status());
        followers.iter().all(|f| status.as_ref().is_some_and(|s| s.progress[f].match_index >= last))
    });
    if !all_hold || c.node(&leader)?.term() != term {
        return None;
    }
    let entries_sent = followers
        .iter()
        .zip(sent0)
        .map(|(f, s0)| c.entries_sent[&(leader.clone(), f.clone())] - s0)
        .collect();
    let mean_commit_ticks = commits.iter().sum::<u64>() as f64 / commits.len() as f64;
    Some(Run { max_inflight, mean_commit_ticks, entries_sent, proposed: i })
}

fn steady(window: usize, seed: u64) -> Run {
    let mut c = pipelined(3, seed, window);
    c.net = NetConfig { drop_rate: 0.0, max_delay: 4, reorder: false };
    // No slow fsyncs: one of 200 ms behind a queue of pipelined requests outlasts the RPC
    // timeout, and a timed-out request is resent (as it should be, but this run is fault-free).
    c.disk = DiskConfig { slow_sync_rate: 0.0, max_sync_ticks: 1, ..DiskConfig::default() };
    for _ in 0..5 {
        if let Some(run) = steady_run(&mut c) {
            return run;
        }
        c.run(secs(3.0));
    }
    panic!("the term changed in every try (seed {seed})");
}

/// With a window of 4, up to 4 requests are in flight to a follower, never more, and still
/// each entry is sent to each follower exactly once; with a window of 1, one at a time.
#[test]
fn a_window_keeps_several_requests_in_flight_and_sends_each_entry_once() {
    let seed = seed_from_env(60);
    for window in [1, 4] {
        let run = steady(window, seed);
        eprintln!(
            "window {window}: at most {} in flight, mean commit {:.1} ticks, {} proposed, \
             entries sent {:?}",
            run.max_inflight, run.mean_commit_ticks, run.proposed, run.entries_sent
        );
        assert!(run.max_inflight <= window as u64, "window {window} (seed {seed})");
        if window > 1 {
            assert!(run.max_inflight > 1, "nothing was pipelined (seed {seed})");
        }
        for sent in &run.entries_sent {
            assert_eq!(*sent, run.proposed, "entries sent with window {window} (seed {seed})");
        }
    }
}

/// What pipelining is for: a proposal no longer waits for the round trip in flight before its
/// own leaves, so with messages delayed up to 4 ticks it commits sooner (simulated ticks: the
/// same seed gives the same figures).
#[test]
fn pipelining_commits_sooner_when_round_trips_are_long() {
    let seed = seed_from_env(61);
    let (one, four) = (steady(1, seed), steady(4, seed));
    eprintln!(
        "mean ticks to commit: window 1 {:.2}, window 4 {:.2}",
        one.mean_commit_ticks, four.mean_commit_ticks
    );
    assert!(
        four.mean_commit_ticks < one.mean_commit_ticks,
        "window 4 {:.2} ticks, window 1 {:.2} (seed {seed})",
        four.mean_commit_ticks,
        one.mean_commit_ticks
    );
}

/// Flow control on a follower that stops answering: once its requests time out it is probed,
/// one request at a time, however many proposals pile up; healed, it catches up and is
/// pipelined again.
#[test]
fn a_follower_that_stops_answering_is_probed_one_request_at_a_time() {
    let seed = seed_from_env(62);
    let mut c = pipelined(3, seed, 4);
    c.net = NetConfig { drop_rate: 0.0, max_delay: 2, reorder: false };
    let mut tries = 0;
    loop {
        tries += 1;
        assert!(tries <= 5, "the term changed in every try (seed {seed})");
        let leader = c.check_one_leader(secs(5.0));
        let f = c.next_id(&leader, 1);
        let term = c.node(&leader).unwrap().term();
        c.run(secs(0.5));
        // The follower answers: it is pipelined.
        for i in 0..50 {
            c.propose(&leader, cmd(i));
            c.tick();
        }
        if view(&c, &leader, &f).1 != ReplicationState::Replicate {
            c.run(secs(3.0));
            continue;
        }
        // Its answers stop reaching the leader (requests still arrive: it keeps its leader).
        c.cut_link(&f, &leader);
        let rpc_timeout = c.node(&leader).unwrap().config().rpc_timeout_ticks;
        let mut probing_from = None;
        let mut most_while_probing = 0;
        for i in 0..secs(3.0) {
            c.propose(&leader, cmd(1000 + i));
            c.tick();
            let (inflight, state) = view(&c, &leader, &f);
            if i > rpc_timeout + 1 {
                assert_eq!(state, ReplicationState::Probe, "tick {i} (seed {seed})");
                probing_from.get_or_insert(i);
                most_while_probing = most_while_probing.max(inflight);
            }
        }
        if c.node(&leader).unwrap().term() != term {
            c.heal();
            c.run(secs(3.0));
            continue;
        }
        assert!(probing_from.is_some(), "seed {seed}");
        assert_eq!(most_while_probing, 1, "requests in flight while probing (seed {seed})");
        // Healed, it catches up and is pipelined again.
        c.heal();
        let last = c.node(&leader).unwrap().log().last_index();
        let caught_up = c.run_until(secs(5.0), |c| {
            c.node(&f).is_some_and(|n| n.log().commit_index >= last)
                && view(c, &leader, &f).1 == ReplicationState::Replicate
        });
        assert!(caught_up, "{f} did not catch up (seed {seed})");
        return;
    }
}

/// A follower that refuses a request while pipelined (here: its data dir was wiped, so its log
/// no longer holds what it acknowledged) is probed from then on, one request at a time, until an
/// answer says where the logs agree; only then is it pipelined again. A window of guesses would
/// be refused wholesale.
#[test]
fn a_rejection_ends_the_pipeline_until_the_logs_agree() {
    let seed = seed_from_env(64);
    let mut c = pipelined(3, seed, 4);
    c.net = NetConfig { drop_rate: 0.0, max_delay: 2, reorder: false };
    for attempt in 0..5 {
        if attempt > 0 {
            c.run(secs(3.0));
        }
        let leader = c.check_one_leader(secs(5.0));
        let f = c.next_id(&leader, 1);
        let term = c.node(&leader).unwrap().term();
        for i in 0..100 {
            c.propose(&leader, cmd(i));
            c.tick();
        }
        if view(&c, &leader, &f).1 != ReplicationState::Replicate {
            continue;
        }
        c.wipe(&f);
        c.start(&f);
        let last = c.node(&leader).unwrap().log().last_index();
        let (mut probed, mut most_while_probing, mut caught_up) = (false, 0, false);
        for i in 0..secs(5.0) {
            c.propose(&leader, cmd(10_000 + i));
            c.tick();
            if c.node(&leader).is_none_or(|n| !n.is_leader()) {
                break;
            }
            let (inflight, state) = view(&c, &leader, &f);
            if state == ReplicationState::Probe {
                probed = true;
                most_while_probing = most_while_probing.max(inflight);
            }
            let matched = c.node(&leader).unwrap().status().progress[&f].match_index;
            if matched >= last && state == ReplicationState::Replicate {
                caught_up = true;
                break;
            }
        }
        if c.node(&leader).is_none_or(|n| n.term() != term || !n.is_leader()) {
            continue;
        }
        assert!(caught_up, "{f} did not catch up (seed {seed})");
        assert!(probed, "the wiped follower was never probed (seed {seed})");
        assert!(
            most_while_probing <= 1,
            "{most_while_probing} in flight while probing (seed {seed})"
        );
        return;
    }
    panic!("the term changed in every try (seed {seed})");
}
