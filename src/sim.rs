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
//! order, exactly once per incarnation.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::raft::{Config, Entry, Envelope, Index, Message, NodeId, Output, RaftNode, Term};
use crate::storage::{MemStorage, Storage};

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

/// A simulated cluster.
pub struct SimCluster {
    /// Node ids, in order (`n1`, `n2`, ...).
    pub ids: Vec<NodeId>,
    /// Live nodes; a crashed node is absent and its storage waits in `crashed`.
    nodes: BTreeMap<NodeId, RaftNode>,
    crashed: BTreeMap<NodeId, Box<dyn Storage>>,
    /// Directed links that are cut: (from, to).
    cut: BTreeSet<(NodeId, NodeId)>,
    queue: BinaryHeap<Reverse<InFlight>>,
    /// Last delivery time per directed link (FIFO when not reordering).
    link_clock: BTreeMap<(NodeId, NodeId), u64>,
    order: u64,
    /// Network behaviour, changeable at any time.
    pub net: NetConfig,
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
    /// Reads released by leaders: (node, read id, index).
    pub reads: Vec<(NodeId, u64, Index)>,
    /// Reads aborted: (node, read id).
    pub aborted_reads: Vec<(NodeId, u64)>,
    /// Highest term in which each node was seen leading: (term -> leader), checked for uniqueness.
    leaders: BTreeMap<Term, NodeId>,
    configure: fn(&mut Config),
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
            queue: BinaryHeap::new(),
            link_clock: BTreeMap::new(),
            order: 0,
            net: NetConfig::default(),
            rng: StdRng::seed_from_u64(seed),
            seed,
            now: 0,
            committed: BTreeMap::new(),
            applied: BTreeMap::new(),
            last_applied: BTreeMap::new(),
            rpcs: 0,
            entries_sent: BTreeMap::new(),
            reads: Vec::new(),
            aborted_reads: Vec::new(),
            leaders: BTreeMap::new(),
            configure,
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
        self.applied.insert(id.clone(), BTreeMap::new());
        self.last_applied.insert(id.clone(), node.log().last_applied);
        self.nodes.insert(id.clone(), node);
    }

    /// Crashes a node: its volatile state is gone, its storage is kept for [`SimCluster::start`].
    pub fn crash(&mut self, id: &NodeId) {
        if let Some(node) = self.nodes.remove(id) {
            self.crashed.insert(id.clone(), node.into_storage());
        }
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

    /// Cuts every link to and from `id`.
    pub fn disconnect(&mut self, id: &NodeId) {
        for other in self.ids.clone() {
            if &other != id {
                self.cut.insert((id.clone(), other.clone()));
                self.cut.insert((other, id.clone()));
            }
        }
    }

    /// Restores every link to and from `id`.
    pub fn connect(&mut self, id: &NodeId) {
        self.cut.retain(|(a, b)| a != id && b != id);
    }

    /// Cuts one direction of one link.
    pub fn cut_link(&mut self, from: &NodeId, to: &NodeId) {
        self.cut.insert((from.clone(), to.clone()));
    }

    /// Splits the cluster into groups; links between groups are cut, inside a group restored.
    pub fn partition(&mut self, groups: &[Vec<NodeId>]) {
        self.cut.clear();
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
    }

    /// True unless every outgoing link of `id` is cut (the MIT lab's "connected").
    pub fn is_connected(&self, id: &NodeId) -> bool {
        self.ids.len() == 1
            || self.ids.iter().any(|o| o != id && !self.cut.contains(&(id.clone(), o.clone())))
    }

    /// A random number from the cluster's RNG (for tests that need their own choices).
    pub fn rand(&mut self, below: u64) -> u64 {
        self.rng.gen_range(0..below.max(1))
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
            let Some(Reverse(inflight)) = self.queue.pop() else { break };
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
            return;
        }
        let to = env.to.clone();
        if let Some(node) = self.nodes.get_mut(&to) {
            let out = node.step(env).expect("step");
            self.handle_output(&to, out);
        }
    }

    fn send(&mut self, env: Envelope) {
        if matches!(env.message, Message::RequestVote(_) | Message::AppendEntries(_)) {
            self.rpcs += 1;
        }
        if let Message::AppendEntries(ae) = &env.message {
            *self.entries_sent.entry((env.from.clone(), env.to.clone())).or_default() +=
                ae.entries.len() as u64;
        }
        if self.cut.contains(&(env.from.clone(), env.to.clone())) {
            return;
        }
        if self.net.drop_rate > 0.0 && self.rng.gen_bool(self.net.drop_rate.min(1.0)) {
            return;
        }
        let delay =
            if self.net.max_delay > 0 { self.rng.gen_range(0..=self.net.max_delay) } else { 0 };
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
            if let Some(other) = self.leaders.insert(term, id.clone()) {
                assert_eq!(&other, id, "two leaders in term {term} (seed {})", self.seed);
            }
        }
        if let Some(point) = out.sync
            && let Some(node) = self.nodes.get_mut(id)
        {
            let more = node.persisted(point.index, point.term).expect("persisted");
            self.handle_output(id, more);
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
        self.applied.entry(id.clone()).or_default().insert(entry.index, entry.command);
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
        let Some(node) = self.nodes.get_mut(id) else { return false };
        match node.read(read_id) {
            Ok(out) => {
                self.handle_output(id, out);
                true
            }
            Err(_) => false,
        }
    }

    /// The MIT lab's `one()`: get `command` committed on at least `expected` nodes, trying every
    /// node as leader, for up to 10 simulated seconds. With `retry`, re-proposes if the first
    /// attempt is lost. Returns the index.
    pub fn one(&mut self, command: Vec<u8>, expected: usize, retry: bool) -> Index {
        let deadline = self.now + secs(10.0);
        let mut starter = 0;
        while self.now < deadline {
            let mut index = None;
            for _ in 0..self.ids.len() {
                starter = (starter + 1) % self.ids.len();
                let id = self.ids[starter].clone();
                if self.is_up(&id)
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

    /// Highest index applied by any node.
    pub fn max_committed(&self) -> Index {
        self.committed.keys().next_back().copied().unwrap_or(0)
    }
}
