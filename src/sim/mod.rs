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

mod lab;
mod net;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::raft::{Config, Entry, Index, NodeId, Output, RaftNode, SnapshotMeta, Term};
use crate::raft::{MemStorage, Storage};
use net::InFlight;
pub use net::NetConfig;

/// Milliseconds of simulated time per tick (the server's default tick too).
pub const TICK_MS: u64 = 10;

/// Converts simulated seconds to ticks.
pub fn secs(s: f64) -> u64 {
    (s * 1000.0 / TICK_MS as f64) as u64
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
}
