//! A deterministic, in-process cluster over a simulated network: the first layer of tests.
//!
//! Every node is a plain [`RaftNode`]; the network is a priority queue of envelopes keyed by the
//! logical time they arrive. Links can be cut one way or both, messages dropped with a probability,
//! delayed and reordered. A crash drops the node's volatile state and restarts it from its storage.
//! Everything random comes from one seeded RNG, so a failing run replays exactly from its seed
//! (set `RAFT_SEED` to replay; the seed is printed by [`SimCluster::new`]).
//!
//! The cluster also plays the role of the MIT 6.5840 lab's `applyCh` checker: every applied entry
//! is compared with what every other node applied at that index, and a node must apply indexes in
//! order, exactly once per incarnation. It checks two more of Figure 3's properties as it goes:
//! Election Safety (never two leaders in one term) and Leader Completeness (a node that starts
//! leading holds every entry any node has applied).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::raft::{
    Config, Entry, Envelope, Index, Message, NodeId, Output, RaftNode, SnapshotMeta, Term,
};
use crate::raft::{MemStorage, Storage};

/// Milliseconds of simulated time per tick (the server's default tick too).
pub const TICK_MS: u64 = 10;

/// Converts simulated seconds to ticks.
pub fn secs(s: f64) -> u64 {
    (s * 1000.0 / TICK_MS as f64) as u64
}

/// Network behaviour.
#[derive(Debug, Clone, Default)]
pub struct NetConfig {
    /// Probability (0–1) that any message is lost.
    pub drop_rate: f64,
    /// Extra delay, in ticks, drawn uniformly from `0..=max_delay` for each message.
    pub max_delay: u64,
    /// When false, each directed link delivers in order (FIFO, like TCP).
    pub reorder: bool,
}

struct InFlight {
    deliver_at: u64,
    order: u64,
    env: Envelope,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.deliver_at, self.order) == (other.deliver_at, other.order)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.deliver_at, self.order).cmp(&(other.deliver_at, other.order))
    }
}

/// The seed to use: `RAFT_SEED` if set, else `default`.
pub fn seed_from_env(default: u64) -> u64 {
    std::env::var("RAFT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// Seeds for a randomized test that runs several schedules: just `RAFT_SEED` when it is set (to
/// replay the run whose seed a failure printed), else `count` seeds derived from `default`
/// (`default * 1000 + i`); `RAFT_SEEDS` overrides `count`, to search more schedules.
pub fn seeds_from_env(default: u64, count: u64) -> Vec<u64> {
    if std::env::var("RAFT_SEED").is_ok() {
        return vec![seed_from_env(default)];
    }
    let count = std::env::var("RAFT_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(count);
    (0..count).map(|i| default * 1000 + i).collect()
}

/// Iterations for a long randomized test: `RAFT_ITERS` if set, else `default`.
pub fn iters_from_env(default: u64) -> u64 {
    std::env::var("RAFT_ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// A simulated cluster.
pub struct SimCluster {
    /// Node ids, in order (`n1`, `n2`, ...).
    pub ids: Vec<NodeId>,
    /// Live nodes; a crashed node is absent and its storage waits in `crashed`.
    nodes: BTreeMap<NodeId, RaftNode>,
    crashed: BTreeMap<NodeId, Box<dyn Storage>>,
    /// Directed links that are cut: (from, to).
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Nodes cut off by [`SimCluster::disconnect`] (the MIT lab's `!connected[i]`).
    isolated: BTreeSet<NodeId>,
    queue: BinaryHeap<Reverse<InFlight>>,
    /// Last delivery time per directed link (FIFO when not reordering).
    link_clock: BTreeMap<(NodeId, NodeId), u64>,
    order: u64,
    /// Network behaviour, changeable at any time.
    pub net: NetConfig,
    /// The MIT lab's "long reordering": see [`SimCluster::set_long_reordering`].
    long_reordering: bool,
    rng: StdRng,
    /// The seed this run started from.
    pub seed: u64,
    /// Simulated time, in ticks.
    pub now: u64,
    /// Index → (term, command) of everything any node applied: all must agree.
    committed: BTreeMap<Index, (Term, Vec<u8>)>,
    /// Per node: index → command applied by the current incarnation (reset on restart).
    applied: BTreeMap<NodeId, BTreeMap<Index, Vec<u8>>>,
    /// Per node: last index applied by the current incarnation.
    last_applied: BTreeMap<NodeId, Index>,
    /// Count of RPC requests (RequestVote + AppendEntries) sent.
    pub rpcs: u64,
    /// Count of entries carried by AppendEntries, per (from, to).
    pub entries_sent: BTreeMap<(NodeId, NodeId), u64>,
    /// Count of AppendEntries requests (heartbeats included), per (from, to).
    pub appends_sent: BTreeMap<(NodeId, NodeId), u64>,
    /// Count of AppendEntries rejections (failed consistency checks and stale terms), per
    /// (follower, leader).
    pub append_rejections: BTreeMap<(NodeId, NodeId), u64>,
    /// Reads released by leaders: (node, read id, index).
    pub reads: Vec<(NodeId, u64, Index)>,
    /// Reads aborted: (node, read id).
    pub aborted_reads: Vec<(NodeId, u64)>,
    /// Highest term in which each node was seen leading: (term -> leader), checked for uniqueness.
    leaders: BTreeMap<Term, NodeId>,
    configure: fn(&mut Config),
    /// Take a snapshot on every node each time it applies a multiple of this index (like the
    /// MIT lab's service), keeping `snapshot_trailing` entries in the log.
    pub snapshot_every: Option<u64>,
    /// Entries kept in the log behind a snapshot.
    pub snapshot_trailing: u64,
    /// Each node's latest snapshot: its meta and the state machine (applied commands) it holds.
    /// Kept across crashes, like a snapshot file.
    snapshots: BTreeMap<NodeId, (SnapshotMeta, BTreeMap<Index, Vec<u8>>)>,
    /// A snapshot that arrived with an InstallSnapshot, waiting for the node to accept it.
    incoming_snapshot: BTreeMap<NodeId, (SnapshotMeta, BTreeMap<Index, Vec<u8>>)>,
    /// Snapshots installed on followers (count).
    pub snapshots_installed: u64,
}

impl SimCluster {
    /// A cluster of `n` nodes with default configuration and the given seed (printed).
    pub fn new(n: usize, seed: u64) -> Self {
        Self::with_config(n, seed, |_| {})
    }

    /// Like [`SimCluster::new`], with a hook to adjust each node's [`Config`].
    pub fn with_config(n: usize, seed: u64, configure: fn(&mut Config)) -> Self {
        eprintln!("simulation seed {seed} (replay with RAFT_SEED={seed})");
        let ids: Vec<NodeId> = (1..=n).map(|i| format!("n{i}")).collect();
        let mut cluster = SimCluster {
            ids: ids.clone(),
            nodes: BTreeMap::new(),
            crashed: BTreeMap::new(),
            cut: BTreeSet::new(),
            isolated: BTreeSet::new(),
            queue: BinaryHeap::new(),
            link_clock: BTreeMap::new(),
            order: 0,
            net: NetConfig::default(),
            long_reordering: false,
            rng: StdRng::seed_from_u64(seed),
            seed,
            now: 0,
            committed: BTreeMap::new(),
            applied: BTreeMap::new(),
            last_applied: BTreeMap::new(),
            rpcs: 0,
            entries_sent: BTreeMap::new(),
            appends_sent: BTreeMap::new(),
            append_rejections: BTreeMap::new(),
            reads: Vec::new(),
            aborted_reads: Vec::new(),
            leaders: BTreeMap::new(),
            configure,
            snapshot_every: None,
            snapshot_trailing: 0,
            snapshots: BTreeMap::new(),
            incoming_snapshot: BTreeMap::new(),
            snapshots_installed: 0,
        };
        for id in &ids {
            cluster.crashed.insert(id.clone(), Box::new(MemStorage::new()));
            cluster.start(id);
        }
        cluster
    }

    fn config_for(&mut self, id: &NodeId) -> Config {
        let peers = self.ids.iter().filter(|p| *p != id).cloned().collect();
        let mut config = Config::new(id.clone(), peers);
        config.seed = self.rng.r#gen();
        (self.configure)(&mut config);
        config
    }

    /// Restarts a crashed node from its storage (no-op if it is running).
    pub fn start(&mut self, id: &NodeId) {
        let Some(storage) = self.crashed.remove(id) else {
            return;
        };
        let config = self.config_for(id);
        let node = RaftNode::new(config, storage).expect("valid simulated config");
        // The state machine restarts from the node's snapshot, as a server loads its file.
        let restored = match (self.snapshots.get(id), node.storage().snapshot()) {
            (Some((meta, data)), Some(s)) if *meta == s => data.clone(),
            (_, None) => BTreeMap::new(),
            (held, Some(s)) => panic!("{id} restarts from snapshot {s:?} but holds {held:?}"),
        };
        self.applied.insert(id.clone(), restored);
        self.last_applied.insert(id.clone(), node.log().last_applied);
        self.nodes.insert(id.clone(), node);
    }

    /// Crashes a node: its volatile state is gone, its storage is kept for [`SimCluster::start`].
    pub fn crash(&mut self, id: &NodeId) {
        if let Some(node) = self.nodes.remove(id) {
            self.crashed.insert(id.clone(), node.into_storage());
        }
    }

    /// Crashes a node and starts it again from its storage (the MIT lab's `start1` on a running
    /// server). Its links stay as they were.
    pub fn restart(&mut self, id: &NodeId) {
        self.crash(id);
        self.start(id);
    }

    /// Crashes a node and throws its storage away (an operator wiping its data dir): it restarts
    /// with an empty log and no vote, and must catch up from the leader.
    pub fn wipe(&mut self, id: &NodeId) {
        self.crash(id);
        self.crashed.insert(id.clone(), Box::new(MemStorage::new()));
    }

    /// True if the node is running.
    pub fn is_up(&self, id: &NodeId) -> bool {
        self.nodes.contains_key(id)
    }

    /// Cuts every link to and from `id` (the MIT lab's `disconnect`).
    pub fn disconnect(&mut self, id: &NodeId) {
        self.isolated.insert(id.clone());
        for other in self.ids.clone() {
            if &other != id {
                self.cut.insert((id.clone(), other.clone()));
                self.cut.insert((other, id.clone()));
            }
        }
    }

    /// Undoes [`SimCluster::disconnect`] the way the MIT lab's `connect` does: restores the links
    /// between `id` and every node that is not itself disconnected. (Reconnecting one of several
    /// disconnected nodes therefore does not reconnect it to the others.)
    pub fn connect(&mut self, id: &NodeId) {
        self.isolated.remove(id);
        let isolated = &self.isolated;
        self.cut.retain(|(a, b)| {
            let other = if a == id {
                b
            } else if b == id {
                a
            } else {
                return true;
            };
            isolated.contains(other)
        });
    }

    /// Cuts one direction of one link.
    pub fn cut_link(&mut self, from: &NodeId, to: &NodeId) {
        self.cut.insert((from.clone(), to.clone()));
    }

    /// Splits the cluster into groups; links between groups are cut, inside a group restored.
    pub fn partition(&mut self, groups: &[Vec<NodeId>]) {
        self.cut.clear();
        self.isolated.clear();
        for a in &self.ids {
            for b in &self.ids {
                let same = groups.iter().any(|g| g.contains(a) && g.contains(b));
                if a != b && !same {
                    self.cut.insert((a.clone(), b.clone()));
                }
            }
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut.clear();
        self.isolated.clear();
    }

    /// The MIT lab's `setlongreordering`: while on, two responses in three are held back an extra
    /// `20 + rand(0..=rand(0..=200))` ticks (0.2–2.2 s), on top of [`SimCluster::net`], so replies
    /// arrive long after newer ones. Requests are not affected, as in the lab. Meant for
    /// `net.reorder = true`: on FIFO links a held-back reply also holds back those behind it.
    pub fn set_long_reordering(&mut self, on: bool) {
        self.long_reordering = on;
    }

    /// True unless every outgoing link of `id` is cut: whether it can reach anyone at all. This is
    /// what [`SimCluster::leaders`] and [`SimCluster::one`] go by; see also
    /// [`SimCluster::is_isolated`].
    pub fn is_connected(&self, id: &NodeId) -> bool {
        self.ids.len() == 1
            || self.ids.iter().any(|o| o != id && !self.cut.contains(&(id.clone(), o.clone())))
    }

    /// True while `id` is cut off by [`SimCluster::disconnect`] (the MIT lab's `!connected[i]`).
    pub fn is_isolated(&self, id: &NodeId) -> bool {
        self.isolated.contains(id)
    }

    /// The node `k` places after `id` in `ids`, wrapping around (the MIT lab's `(i + k) % n`).
    pub fn next_id(&self, id: &NodeId, k: usize) -> NodeId {
        let i = self.ids.iter().position(|x| x == id).expect("a member of the cluster");
        self.ids[(i + k) % self.ids.len()].clone()
    }

    /// A random number from the cluster's RNG (for tests that need their own choices).
    pub fn rand(&mut self, below: u64) -> u64 {
        self.rng.gen_range(0..below.max(1))
    }

    /// A node picked at random (running or not) with the cluster's RNG.
    pub fn random_node(&mut self) -> NodeId {
        let i = self.rand(self.ids.len() as u64) as usize;
        self.ids[i].clone()
    }

    /// A running node.
    pub fn node(&self, id: &NodeId) -> Option<&RaftNode> {
        self.nodes.get(id)
    }

    /// Advances simulated time by one tick: deliver what is due, then tick every node.
    pub fn tick(&mut self) {
        self.now += 1;
        while let Some(Reverse(head)) = self.queue.peek() {
            if head.deliver_at > self.now {
                break;
            }
            let Some(Reverse(inflight)) = self.queue.pop() else {
                break;
            };
            self.deliver(inflight.env);
        }
        for id in self.ids.clone() {
            if let Some(node) = self.nodes.get_mut(&id) {
                let out = node.tick().expect("tick");
                self.handle_output(&id, out);
            }
        }
    }

    /// Runs `ticks` ticks.
    pub fn run(&mut self, ticks: u64) {
        for _ in 0..ticks {
            self.tick();
        }
    }

    /// Runs until `cond` holds or `max_ticks` pass; returns whether it held.
    pub fn run_until(&mut self, max_ticks: u64, mut cond: impl FnMut(&SimCluster) -> bool) -> bool {
        for _ in 0..max_ticks {
            if cond(self) {
                return true;
            }
            self.tick();
        }
        cond(self)
    }

    fn deliver(&mut self, env: Envelope) {
        if self.cut.contains(&(env.from.clone(), env.to.clone())) {
            self.snapshot_call_failed(&env);
            return;
        }
        if let Message::InstallSnapshot(req) = &env.message {
            // The snapshot's data travels with the message: the sender's current snapshot, if it
            // is still the one the message names (else the transfer "failed").
            let meta =
                SnapshotMeta { index: req.last_included_index, term: req.last_included_term };
            match self.snapshots.get(&env.from) {
                Some((m, data)) if *m == meta => {
                    self.incoming_snapshot.insert(env.to.clone(), (meta, data.clone()));
                }
                _ => {
                    self.snapshot_call_failed(&env);
                    return;
                }
            }
        }
        let to = env.to.clone();
        if let Some(node) = self.nodes.get_mut(&to) {
            let out = node.step(env).expect("step");
            self.handle_output(&to, out);
        } else {
            self.snapshot_call_failed(&env);
        }
    }

    /// A snapshot transfer is a call whose failure the sender hears of: the shell's peer thread
    /// reports a lost InstallSnapshot or reply, a refused connection or a snapshot replaced
    /// mid-transfer with [`RaftNode::report_unreachable`], and the leader sends its current
    /// snapshot again (the MIT lab's RPCs likewise return false when lost). Only the core's
    /// fallback timeout (ten RPC timeouts, meant for a transfer that hangs) would notice a
    /// silently lost one. AppendEntries losses stay silent: the core's RPC timeout covers them.
    fn snapshot_call_failed(&mut self, env: &Envelope) {
        let (leader, follower) = match &env.message {
            Message::InstallSnapshot(_) => (&env.from, &env.to),
            Message::InstallSnapshotResponse(_) => (&env.to, &env.from),
            _ => return,
        };
        if let Some(node) = self.nodes.get_mut(leader) {
            node.report_unreachable(follower);
        }
    }

    fn send(&mut self, env: Envelope) {
        let link = (env.from.clone(), env.to.clone());
        match &env.message {
            Message::RequestVote(_) => self.rpcs += 1,
            Message::AppendEntries(ae) => {
                self.rpcs += 1;
                *self.appends_sent.entry(link.clone()).or_default() += 1;
                *self.entries_sent.entry(link.clone()).or_default() += ae.entries.len() as u64;
            }
            Message::AppendEntriesResponse(resp) if !resp.success => {
                *self.append_rejections.entry(link.clone()).or_default() += 1;
            }
            _ => {}
        }
        if self.cut.contains(&link) {
            self.snapshot_call_failed(&env);
            return;
        }
        if self.net.drop_rate > 0.0 && self.rng.gen_bool(self.net.drop_rate.min(1.0)) {
            self.snapshot_call_failed(&env);
            return;
        }
        let mut delay =
            if self.net.max_delay > 0 { self.rng.gen_range(0..=self.net.max_delay) } else { 0 };
        if self.long_reordering && env.message.is_response() && self.rng.gen_ratio(2, 3) {
            let spread = self.rng.gen_range(0..=200);
            delay += 20 + self.rng.gen_range(0..=spread);
        }
        let link = (env.from.clone(), env.to.clone());
        let mut deliver_at = self.now + 1 + delay;
        if !self.net.reorder {
            let last = self.link_clock.entry(link).or_default();
            deliver_at = deliver_at.max(*last);
            *last = deliver_at;
        }
        self.order += 1;
        self.queue.push(Reverse(InFlight { deliver_at, order: self.order, env }));
    }

    /// Acts on a node's output the way the server shell does, with storage that is durable at once.
    fn handle_output(&mut self, id: &NodeId, out: Output) {
        for env in out.messages.into_iter().chain(out.after_sync) {
            self.send(env);
        }
        for entry in out.apply {
            self.record_apply(id, entry);
        }
        if let Some(meta) = out.restore {
            let (m, data) = self
                .incoming_snapshot
                .remove(id)
                .unwrap_or_else(|| panic!("{id} restores {meta:?} it never received"));
            assert_eq!(m, meta, "{id} restores a snapshot other than the one received");
            self.applied.insert(id.clone(), data.clone());
            self.last_applied.insert(id.clone(), meta.index);
            self.snapshots.insert(id.clone(), (meta, data));
            self.snapshots_installed += 1;
        }
        for r in out.reads {
            self.reads.push((id.clone(), r.id, r.index));
        }
        for r in out.aborted_reads {
            self.aborted_reads.push((id.clone(), r));
        }
        if let Some(node) = self.nodes.get(id)
            && node.is_leader()
        {
            let term = node.term();
            match self.leaders.insert(term, id.clone()) {
                Some(other) => {
                    assert_eq!(&other, id, "two leaders in term {term} (seed {})", self.seed)
                }
                None => self.check_leader_completeness(id),
            }
        }
        if let Some(point) = out.sync
            && let Some(node) = self.nodes.get_mut(id)
        {
            let more = node.persisted(point.index, point.term).expect("persisted");
            self.handle_output(id, more);
        }
    }

    /// Leader Completeness (§5.4): a new leader's log holds every entry any node has applied.
    fn check_leader_completeness(&self, id: &NodeId) {
        let log = self.nodes[id].log();
        // Entries covered by the leader's snapshot are committed by definition.
        let from = log.first_index();
        for (&index, (term, _)) in self.committed.range(from..) {
            assert_eq!(
                log.term_at(index),
                Some(*term),
                "{id} leads term {} without committed entry {index} of term {term} (seed {})",
                self.nodes[id].term(),
                self.seed
            );
        }
    }

    fn record_apply(&mut self, id: &NodeId, entry: Entry) {
        let seed = self.seed;
        let last = self.last_applied.entry(id.clone()).or_default();
        assert_eq!(
            entry.index,
            *last + 1,
            "{id} applied index {} after {} (out of order or twice; seed {seed})",
            entry.index,
            *last
        );
        *last = entry.index;
        match self.committed.get(&entry.index) {
            Some((term, cmd)) => assert!(
                *term == entry.term && *cmd == entry.command,
                "{id} applied {:?} at index {} but another node applied {:?} there (seed {seed})",
                entry.command,
                entry.index,
                cmd
            ),
            None => {
                self.committed.insert(entry.index, (entry.term, entry.command.clone()));
            }
        }
        let (index, term) = (entry.index, entry.term);
        self.applied.entry(id.clone()).or_default().insert(entry.index, entry.command);
        if let Some(every) = self.snapshot_every
            && index % every == 0
        {
            let meta = SnapshotMeta { index, term };
            let data = self.applied.get(id).cloned().unwrap_or_default();
            self.snapshots.insert(id.clone(), (meta, data));
            let trailing = self.snapshot_trailing;
            if let Some(node) = self.nodes.get_mut(id) {
                node.snapshot_taken(meta, trailing).expect("snapshot_taken");
            }
        }
    }

    /// Number of log entries a node's storage holds (what compaction bounds).
    pub fn log_len(&self, id: &NodeId) -> Option<u64> {
        let s = self.nodes.get(id)?.storage();
        Some(s.last_index() + 1 - s.first_index())
    }

    // ----- helpers in the style of the MIT lab's config.go ----------------------------------------

    /// The leaders among running, connected nodes, with their terms.
    pub fn leaders(&self) -> Vec<(NodeId, Term)> {
        self.nodes
            .iter()
            .filter(|(id, n)| n.is_leader() && self.is_connected(id))
            .map(|(id, n)| (id.clone(), n.term()))
            .collect()
    }

    /// Waits up to `max_ticks` for exactly one leader in the highest term among connected nodes;
    /// panics (with the seed) if there are two in one term or none.
    pub fn check_one_leader(&mut self, max_ticks: u64) -> NodeId {
        let mut found = None;
        self.run_until(max_ticks, |c| {
            let leaders = c.leaders();
            let top = leaders.iter().map(|(_, t)| *t).max();
            let in_top: Vec<_> = leaders.iter().filter(|(_, t)| Some(*t) == top).collect();
            if in_top.len() == 1 {
                found = Some(in_top[0].0.clone());
                true
            } else {
                false
            }
        });
        found.unwrap_or_else(|| panic!("no leader within {max_ticks} ticks (seed {})", self.seed))
    }

    /// Asserts that no connected node is leader.
    pub fn check_no_leader(&self) {
        let leaders = self.leaders();
        assert!(leaders.is_empty(), "expected no leader, found {leaders:?} (seed {})", self.seed);
    }

    /// The term all connected running nodes agree on (panics if they disagree).
    pub fn check_terms(&self) -> Term {
        let terms: BTreeSet<Term> = self
            .nodes
            .iter()
            .filter(|(id, _)| self.is_connected(id))
            .map(|(_, n)| n.term())
            .collect();
        assert!(terms.len() <= 1, "nodes disagree on the term: {terms:?} (seed {})", self.seed);
        terms.into_iter().next().unwrap_or(0)
    }

    /// How many running nodes applied `index`, and the command there.
    pub fn n_committed(&self, index: Index) -> (usize, Option<Vec<u8>>) {
        let mut count = 0;
        let mut cmd = None;
        for (id, applied) in &self.applied {
            if !self.nodes.contains_key(id) {
                continue;
            }
            if let Some(c) = applied.get(&index) {
                count += 1;
                cmd = Some(c.clone());
            }
        }
        (count, cmd)
    }

    /// Proposes on `id` if it leads; returns (index, term).
    pub fn propose(&mut self, id: &NodeId, command: Vec<u8>) -> Option<(Index, Term)> {
        let node = self.nodes.get_mut(id)?;
        let (index, term, out) = node.propose(command).ok()?;
        self.handle_output(id, out);
        Some((index, term))
    }

    /// Starts a ReadIndex read on `id` if it leads.
    pub fn read(&mut self, id: &NodeId, read_id: u64) -> bool {
        let Some(node) = self.nodes.get_mut(id) else {
            return false;
        };
        match node.read(read_id) {
            Ok(out) => {
                self.handle_output(id, out);
                true
            }
            Err(_) => false,
        }
    }

    /// The MIT lab's `one()`: get `command` committed on at least `expected` nodes, trying every
    /// running, connected node as leader, for up to 10 simulated seconds. With `retry`,
    /// re-proposes if the first attempt is lost. Returns the index.
    pub fn one(&mut self, command: Vec<u8>, expected: usize, retry: bool) -> Index {
        let deadline = self.now + secs(10.0);
        let mut starter = 0;
        while self.now < deadline {
            let mut index = None;
            for _ in 0..self.ids.len() {
                starter = (starter + 1) % self.ids.len();
                let id = self.ids[starter].clone();
                if self.is_up(&id)
                    && self.is_connected(&id)
                    && let Some((i, _)) = self.propose(&id, command.clone())
                {
                    index = Some(i);
                    break;
                }
            }
            if let Some(index) = index {
                let t0 = self.now;
                while self.now - t0 < secs(2.0) {
                    let (n, cmd) = self.n_committed(index);
                    if n >= expected && cmd.as_deref() == Some(&command[..]) {
                        return index;
                    }
                    self.tick();
                }
                if !retry {
                    panic!("one({command:?}) failed to reach agreement (seed {})", self.seed);
                }
            } else {
                self.run(5);
            }
        }
        panic!("one({command:?}) failed to reach agreement in 10 s (seed {})", self.seed);
    }

    /// Several [`SimCluster::one`]s at once, like the MIT tests' concurrent goroutines: each
    /// command is proposed to whichever running, connected node leads, and proposed again if it is
    /// not committed on `expected` nodes within 2 s. Returns each command's index once all are
    /// (panics after 10 simulated seconds).
    pub fn one_all(&mut self, commands: &[Vec<u8>], expected: usize) -> Vec<Index> {
        let deadline = self.now + secs(10.0);
        // Per command: the index of its latest proposal and when it was made; then its result.
        let mut attempts: Vec<Option<(Index, u64)>> = vec![None; commands.len()];
        let mut done: Vec<Option<Index>> = vec![None; commands.len()];
        while self.now < deadline {
            for (i, command) in commands.iter().enumerate() {
                if done[i].is_some() {
                    continue;
                }
                if let Some((index, _)) = attempts[i] {
                    let (n, cmd) = self.n_committed(index);
                    if n >= expected && cmd.as_deref() == Some(&command[..]) {
                        done[i] = Some(index);
                        continue;
                    }
                }
                if attempts[i].is_none_or(|(_, at)| self.now - at >= secs(2.0))
                    && let Some(index) = self.propose_to_leader(command)
                {
                    attempts[i] = Some((index, self.now));
                }
            }
            if done.iter().all(Option::is_some) {
                return done.into_iter().flatten().collect();
            }
            self.tick();
        }
        panic!("one_all failed to reach agreement in 10 s (seed {})", self.seed);
    }

    /// Proposes on the first running, connected node that accepts (leads); returns the index.
    pub fn propose_to_leader(&mut self, command: &[u8]) -> Option<Index> {
        for id in self.ids.clone() {
            if self.is_up(&id)
                && self.is_connected(&id)
                && let Some((index, _)) = self.propose(&id, command.to_vec())
            {
                return Some(index);
            }
        }
        None
    }

    /// Waits for `index` to be applied by at least `n` nodes (up to `max_ticks`); returns the command.
    pub fn wait(&mut self, index: Index, n: usize, max_ticks: u64) -> Option<Vec<u8>> {
        self.run_until(max_ticks, |c| c.n_committed(index).0 >= n);
        let (count, cmd) = self.n_committed(index);
        (count >= n).then_some(cmd).flatten()
    }

    /// Every running node's applied commands, for end-of-test comparisons.
    pub fn applied(&self, id: &NodeId) -> Option<&BTreeMap<Index, Vec<u8>>> {
        self.applied.get(id)
    }

    /// The entry some node applied at `index` (every node that applies it applies the same one),
    /// as (term, command): how a simulated client learns that its proposal committed, and
    /// whether it was its own entry (same term) or another leader's.
    pub fn committed_at(&self, index: Index) -> Option<(Term, &[u8])> {
        self.committed.get(&index).map(|(term, command)| (*term, command.as_slice()))
    }

    /// Highest index applied by any node.
    pub fn max_committed(&self) -> Index {
        self.committed.keys().next_back().copied().unwrap_or(0)
    }
}
