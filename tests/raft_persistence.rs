//! MIT 6.5840 lab 3C, on the simulated cluster: persistence (Figure 2's persistent state) under
//! crashes, restarts, partitions and an unreliable network.
//!
//! A crash drops a node's volatile state; [`SimCluster::start`] brings it back from its storage.
//! The cluster checks throughout that every node applies the same command at each index, in
//! order, once per incarnation; that no two nodes lead the same term; and that every new leader
//! holds every entry applied anywhere (Leader Completeness, §5.4). Every test ends with all nodes
//! back and agreeing on a new command.
//!
//! The randomized tests run several seeds derived from a base seed. `RAFT_SEED=<seed>` replays
//! one (the seed is printed as each run starts), `RAFT_SEEDS=<n>` runs more, and
//! `RAFT_ITERS=<n>` sets the Figure 8 iteration count (default: the lab's 1,000).

use raftlabkv::raft::MemStorage;
use raftlabkv::raft::{Config, Envelope, Message, Output, RaftNode, RequestVote};
use raftlabkv::sim::{
    NetConfig, SimCluster, TICK_MS, iters_from_env, secs, seed_from_env, seeds_from_env,
};

/// The lab tester's (generous) election timeout, used for its sleeps: 1 s.
const ELECTION_TIMEOUT: u64 = 1000 / TICK_MS;

fn cmd(i: u64) -> Vec<u8> {
    format!("cmd-{i}").into_bytes()
}

/// A fresh random command from the cluster's RNG (the lab's `rand.Int()`).
fn rcmd(c: &mut SimCluster) -> Vec<u8> {
    format!("r{}", c.rand(1 << 48)).into_bytes()
}

/// The lab's unreliable network: 10% of requests and replies lost, short random delays (up to
/// 27 ms in the lab; up to 3 ticks here), out of order.
fn unreliable() -> NetConfig {
    NetConfig { drop_rate: 0.1, max_delay: 3, reorder: true }
}

/// The lab's sleep in the Figure 8 tests: one time in ten up to half an election timeout, else
/// up to 13 ms.
fn figure_8_pause(c: &mut SimCluster) -> u64 {
    if c.rand(1000) < 100 { c.rand(ELECTION_TIMEOUT / 2) } else { c.rand(13 / TICK_MS + 1) }
}

/// Restarts every crashed node, reconnects everything and has all nodes agree on a new command.
fn restore_and_agree(c: &mut SimCluster) -> u64 {
    for id in c.ids.clone() {
        c.start(&id);
    }
    c.heal();
    let x = rcmd(c);
    let n = c.ids.len();
    c.one(x, n, true)
}

/// Figure 2, persistent state, at the level of one node: `currentTerm` and `votedFor` survive a
/// restart, so a node cannot vote twice in a term by crashing in between — which could elect two
/// leaders in one term (§5.2). A retransmitted request from the candidate it voted for is granted
/// again.
#[test]
fn a_restarted_node_remembers_its_term_and_vote() {
    let config = || Config::new("n1", vec!["n2".into(), "n3".into()]);
    let vote_request = |from: &str| Envelope {
        from: from.into(),
        to: "n1".into(),
        term: 5,
        // Every member of a new cluster starts with the same configuration entry (1, term 1).
        message: Message::RequestVote(RequestVote {
            last_log_index: 1,
            last_log_term: 1,
            pre_vote: false,
            transfer: false,
        }),
    };
    let granted = |out: &Output| {
        out.after_sync
            .iter()
            .any(|e| matches!(&e.message, Message::RequestVoteResponse(r) if r.vote_granted))
    };
    let mut node = RaftNode::new(config(), Box::new(MemStorage::new())).unwrap();
    assert!(granted(&node.step(vote_request("n2")).unwrap()), "a first vote is granted");

    let mut node = RaftNode::new(config(), node.into_storage()).unwrap();
    assert_eq!(node.term(), 5, "the term was not restored");
    assert!(!granted(&node.step(vote_request("n3")).unwrap()), "voted twice in term 5");
    assert!(granted(&node.step(vote_request("n2")).unwrap()), "a retransmission is refused");
}

/// Figure 2, persistent state (TestPersist13C): the log, term and vote survive restarting every
/// node at once, the leader, a node that missed entries while down, and a follower.
#[test]
fn state_survives_restarting_all_nodes_and_the_leader() {
    let mut c = SimCluster::new(3, seed_from_env(30));
    let i11 = c.one(cmd(11), 3, true);

    for id in c.ids.clone() {
        c.restart(&id);
    }
    c.one(cmd(12), 3, true);
    assert_eq!(c.applied(&c.ids[0].clone()).unwrap().get(&i11), Some(&cmd(11)));

    let leader1 = c.check_one_leader(secs(5.0));
    c.restart(&leader1);
    c.one(cmd(13), 3, true);

    let leader2 = c.check_one_leader(secs(5.0));
    c.disconnect(&leader2);
    let i14 = c.one(cmd(14), 2, true);
    c.restart(&leader2);
    c.connect(&leader2);
    // Wait for leader2 to catch up before the next restart.
    assert_eq!(c.wait(i14, 3, secs(10.0)), Some(cmd(14)), "seed {}", c.seed);

    let leader3 = c.check_one_leader(secs(5.0));
    let i3 = c.next_id(&leader3, 1);
    c.disconnect(&i3);
    c.one(cmd(15), 2, true);
    c.restart(&i3);
    c.connect(&i3);
    c.one(cmd(16), 3, true);
}

/// Figure 2, persistent state (TestPersist23C): five rounds in which two followers are cut off,
/// the other three commit, then the two come back from their storage with only one of the three,
/// which must lead (its log is the up-to-date one, §5.4.1) and commit with them.
#[test]
fn state_survives_repeated_partitions_and_restarts() {
    let mut c = SimCluster::new(5, seed_from_env(31));
    let mut index = 1;
    for _ in 0..5 {
        c.one(cmd(10 + index), 5, true);
        index += 1;

        let leader1 = c.check_one_leader(secs(5.0));
        let peer = |c: &SimCluster, k| c.next_id(&leader1, k);
        c.disconnect(&peer(&c, 1));
        c.disconnect(&peer(&c, 2));
        c.one(cmd(10 + index), 3, true);
        index += 1;

        for k in [0, 3, 4] {
            c.disconnect(&peer(&c, k));
        }
        for k in [1, 2] {
            c.restart(&peer(&c, k));
            c.connect(&peer(&c, k));
        }
        c.run(ELECTION_TIMEOUT);
        c.restart(&peer(&c, 3));
        c.connect(&peer(&c, 3));
        c.one(cmd(10 + index), 3, true);
        index += 1;

        c.connect(&peer(&c, 4));
        c.connect(&peer(&c, 0));
    }
    c.one(cmd(1000), 5, true);
}

/// Figure 2, persistent state (TestPersist33C): with the third node partitioned away, the leader
/// and the other follower commit, then both crash; the leader restarts and, with the third node,
/// commits again — its restored log carries the entry the third node missed.
#[test]
fn a_crashed_leader_restarts_with_a_lagging_follower_and_commits() {
    let mut c = SimCluster::new(3, seed_from_env(32));
    c.one(cmd(101), 3, true);

    let leader = c.check_one_leader(secs(5.0));
    let (follower, lagging) = (c.next_id(&leader, 1), c.next_id(&leader, 2));
    c.disconnect(&lagging);
    let i102 = c.one(cmd(102), 2, true);

    c.crash(&leader);
    c.crash(&follower);
    c.connect(&lagging);
    c.start(&leader);
    c.one(cmd(103), 2, true);
    assert_eq!(c.applied(&lagging).unwrap().get(&i102), Some(&cmd(102)), "seed {}", c.seed);

    c.start(&follower);
    c.one(cmd(104), 3, true);
}

/// Figure 8 and §5.4.2 (TestFigure83C): proposals to whoever leads, each followed (after a short
/// or, one time in ten, a longer pause) by a crash of that leader, with crashed nodes restarted
/// whenever fewer than three are up. Leaders crash before or after committing, and an entry
/// replicated on a majority by an old leader must never be committed by counting replicas — the
/// cluster's checker fails on any divergence.
fn figure_8(seed: u64, iters: u64, configure: fn(&mut Config)) {
    let mut c = SimCluster::with_config(5, seed, configure);
    let x = rcmd(&mut c);
    c.one(x, 1, true);
    let mut nup = 5;
    for _ in 0..iters {
        let mut leader = None;
        for id in c.ids.clone() {
            let x = rcmd(&mut c);
            if c.propose(&id, x).is_some() {
                leader = Some(id);
            }
        }
        let pause = figure_8_pause(&mut c);
        c.run(pause);
        if let Some(leader) = leader {
            c.crash(&leader);
            nup -= 1;
        }
        if nup < 3 {
            let s = c.random_node();
            if !c.is_up(&s) {
                c.start(&s);
                nup += 1;
            }
        }
    }
    restore_and_agree(&mut c);
}

/// See [`figure_8`]: the lab's 1,000 iterations (`RAFT_ITERS`), over several seeds.
#[test]
fn figure_8_leader_crashes_never_lose_committed_entries() {
    let iters = iters_from_env(1000);
    for seed in seeds_from_env(33, 20) {
        figure_8(seed, iters, |_| {});
    }
}

/// One entry per AppendEntries, so that a new leader's older-term entries can reach a majority
/// before its no-op does, and a follower can hold unverified entries past the point an
/// AppendEntries checked. With the default batching neither happens, which would hide a leader
/// that commits an older-term entry by counting replicas (Figure 8) or a follower that commits
/// past what the leader verified (Figure 2, AppendEntries rule 5).
fn one_entry_per_append(config: &mut Config) {
    config.max_append_entries = 1;
}

/// [`figure_8`] with [`one_entry_per_append`].
#[test]
fn figure_8_with_one_entry_per_append_never_loses_committed_entries() {
    let iters = iters_from_env(1000);
    for seed in seeds_from_env(38, 20) {
        figure_8(seed, iters, one_entry_per_append);
    }
}

/// Figure 8 on the unreliable network (TestFigure8Unreliable3C): as [`figure_8`], but leaders are
/// disconnected (half the time) instead of crashed, 10% of messages are lost, the rest delayed and
/// reordered, and after the first fifth of the iterations replies are held back up to 2.2 s
/// ("long reordering"). Unless `calm_ending`, the network stays unreliable to the end.
fn figure_8_unreliable(seed: u64, iters: u64, configure: fn(&mut Config), calm_ending: bool) {
    let mut c = SimCluster::with_config(5, seed, configure);
    c.net = unreliable();
    let x = rcmd(&mut c);
    c.one(x, 1, true);
    let mut nup = 5;
    for i in 0..iters {
        if i == iters / 5 {
            c.set_long_reordering(true);
        }
        let mut leader = None;
        for id in c.ids.clone() {
            let x = rcmd(&mut c);
            if c.propose(&id, x).is_some() && !c.is_isolated(&id) {
                leader = Some(id);
            }
        }
        let pause = figure_8_pause(&mut c);
        c.run(pause);
        if let Some(leader) = leader
            && c.rand(1000) < 500
        {
            c.disconnect(&leader);
            nup -= 1;
        }
        if nup < 3 {
            let s = c.random_node();
            if c.is_isolated(&s) {
                c.connect(&s);
                nup += 1;
            }
        }
    }
    for id in c.ids.clone() {
        c.connect(&id);
    }
    if calm_ending {
        c.net = NetConfig::default();
        c.set_long_reordering(false);
        let converged = c.run_until(secs(60.0), |c| {
            let logs: Vec<_> = c.ids.iter().map(|id| c.node(id).unwrap().status()).collect();
            logs.iter().all(|s| {
                (s.last_log_index, s.last_log_term, s.commit_index)
                    == (logs[0].last_log_index, logs[0].last_log_term, logs[0].last_log_index)
            })
        });
        assert!(converged, "the logs did not converge in 60 s (seed {seed})");
    }
    let x = rcmd(&mut c);
    c.one(x, 5, true);
}

/// See [`figure_8_unreliable`]: the lab's 1,000 iterations (`RAFT_ITERS`), over several seeds.
#[test]
fn figure_8_on_an_unreliable_network_never_loses_committed_entries() {
    let iters = iters_from_env(1000);
    for seed in seeds_from_env(34, 20) {
        figure_8_unreliable(seed, iters, |_| {}, false);
    }
}

/// [`figure_8_unreliable`] with pipelining: a window of 4 AppendEntries per follower, so lost,
/// delayed and reordered requests of one leader overlap (and their answers come back in any
/// order). Nothing committed is lost, and the logs converge once the network is reliable.
#[test]
fn figure_8_on_an_unreliable_network_with_pipelining_never_loses_committed_entries() {
    let iters = iters_from_env(1000);
    for seed in seeds_from_env(40, 10) {
        figure_8_unreliable(seed, iters, |c| c.max_inflight = 4, true);
    }
}

/// [`figure_8_unreliable`] with [`one_entry_per_append`]. The network is made reliable again
/// and the logs get up to 60 s to converge before the final agreement: catching five divergent
/// logs up one entry per round trip can take longer than the lab's 10 s.
#[test]
fn figure_8_on_an_unreliable_network_with_one_entry_per_append_never_loses_committed_entries() {
    let iters = iters_from_env(1000);
    for seed in seeds_from_env(39, 20) {
        figure_8_unreliable(seed, iters, one_entry_per_append, true);
    }
}

/// §5.3 under message loss, delay and reordering (TestUnreliableAgree3C): 49 rounds of five
/// concurrent proposals each commit; then, on a reliable network, all five nodes agree.
#[test]
fn agreement_survives_an_unreliable_network() {
    for seed in seeds_from_env(35, 10) {
        let mut c = SimCluster::new(5, seed);
        c.net = unreliable();
        for iters in 1..50 {
            let mut cmds: Vec<Vec<u8>> = (0..4).map(|j| cmd(100 * iters + j)).collect();
            cmds.push(cmd(iters));
            c.one_all(&cmds, 1);
        }
        c.net = NetConfig::default();
        c.one(cmd(100), 5, true);
    }
}

/// One of the churn tests' clients: proposes a fresh value to every running node, then checks
/// 10, 20, 50, 100 and 200 ms apart whether its index committed, and remembers the values that did.
struct Client {
    me: u64,
    /// Proposed value, its index and how many checks are done, while waiting for it.
    waiting: Option<(Vec<u8>, u64, usize)>,
    /// When to act next.
    next_at: u64,
    /// Values this client saw committed.
    committed: Vec<Vec<u8>>,
}

impl Client {
    /// Pauses between checks, in ticks (10, 20, 50, 100, 200 ms).
    const CHECKS: [u64; 5] = [1, 2, 5, 10, 20];

    fn step(&mut self, c: &mut SimCluster) {
        if c.now < self.next_at {
            return;
        }
        match self.waiting.take() {
            None => {
                let x = rcmd(c);
                let mut index = None;
                for id in c.ids.clone() {
                    if let Some((i, _)) = c.propose(&id, x.clone()) {
                        index = Some(i);
                    }
                }
                match index {
                    Some(index) => self.waiting = Some((x, index, 0)),
                    None => self.next_at = c.now + (79 + self.me * 17) / TICK_MS,
                }
            }
            Some((x, index, checks)) => {
                let (n, got) = c.n_committed(index);
                if n > 0 {
                    if got.as_ref() == Some(&x) {
                        self.committed.push(x);
                    }
                } else if checks < Self::CHECKS.len() {
                    self.next_at = c.now + Self::CHECKS[checks];
                    self.waiting = Some((x, index, checks + 1));
                }
            }
        }
    }
}

/// Runs `ticks` ticks with the clients acting before each.
fn run_with_clients(c: &mut SimCluster, clients: &mut [Client], ticks: u64) {
    for _ in 0..ticks {
        for client in clients.iter_mut() {
            client.step(c);
        }
        c.tick();
    }
}

/// Figure 2 and §5.4 under churn (TestReliableChurn3C / TestUnreliableChurn3C): three clients
/// propose continuously while, every 0.7 s, a random node may be disconnected, one restarted and
/// reconnected, and one crashed. Afterwards, with everything restored, every value a client saw
/// committed is in the final log, which all five nodes hold. Returns how many values the clients
/// saw committed (a schedule may keep a majority apart for most of the run: few or none).
fn churn(seed: u64, unreliable_net: bool) -> usize {
    let mut c = SimCluster::new(5, seed);
    if unreliable_net {
        c.net = unreliable();
    }
    let mut clients: Vec<Client> =
        (0..3).map(|me| Client { me, waiting: None, next_at: 0, committed: Vec::new() }).collect();
    for _ in 0..20 {
        if c.rand(1000) < 200 {
            let i = c.random_node();
            c.disconnect(&i);
        }
        if c.rand(1000) < 500 {
            let i = c.random_node();
            c.start(&i);
            c.connect(&i);
        }
        if c.rand(1000) < 200 {
            let i = c.random_node();
            c.crash(&i);
        }
        run_with_clients(&mut c, &mut clients, ELECTION_TIMEOUT * 7 / 10);
    }
    run_with_clients(&mut c, &mut clients, ELECTION_TIMEOUT);
    c.net = NetConfig::default();
    for id in c.ids.clone() {
        c.start(&id);
        c.connect(&id);
    }
    let values: Vec<Vec<u8>> = clients.into_iter().flat_map(|cl| cl.committed).collect();
    c.run(ELECTION_TIMEOUT);

    let x = rcmd(&mut c);
    let last = c.one(x, 5, true);
    let mut really = Vec::new();
    for index in 1..=last {
        let v = c.wait(index, 5, secs(10.0));
        really.push(v.unwrap_or_else(|| panic!("index {index} not on all nodes (seed {seed})")));
    }
    for v in &values {
        assert!(really.contains(v), "committed value {v:?} missing from the log (seed {seed})");
    }
    values.len()
}

/// See [`churn`], on a reliable network, over several seeds.
#[test]
fn committed_values_survive_churn() {
    let seeds = seeds_from_env(36, 20);
    let values: usize = seeds.iter().map(|&seed| churn(seed, false)).sum();
    assert!(values >= 10 * seeds.len(), "only {values} values committed in all");
}

/// See [`churn`], on the unreliable network, over several seeds.
#[test]
fn committed_values_survive_churn_on_an_unreliable_network() {
    let seeds = seeds_from_env(37, 20);
    let values: usize = seeds.iter().map(|&seed| churn(seed, true)).sum();
    assert!(values >= 10 * seeds.len(), "only {values} values committed in all");
}
