//! A deterministic, in-process cluster over a simulated network: the first layer of tests.
//!
//! Every node is a plain [`RaftNode`]; the network (`net.rs`) is a priority queue of envelopes keyed
//! by the logical time they arrive. Links can be cut one way or both, messages dropped with a
//! probability, delayed and reordered. Everything random comes from one seeded RNG, so a failing
//! run replays exactly from its seed (set `RAFT_SEED` to replay; the seed is printed by
//! [`SimCluster::new`]).
//!
//! **The disk** (`disk.rs`, `sync.rs`) follows the rule the core is built on: a write is durable only
//! once an fsync covers it. The cluster acts on each [`Output`] as the server shell does: it sends
//! [`Output::messages`] at once, starts an fsync for [`Output::sync`], and only when that fsync
//! completes — after a delay drawn from the seeded RNG, sometimes longer than a round trip —
//! releases [`Output::after_sync`] (votes, acknowledgements) and calls [`RaftNode::persisted`]. A
//! crash drops the node's volatile state *and* every write no fsync covered yet (sometimes a
//! prefix of them survives, as a disk may write back on its own); the node restarts from what was
//! durable. So a core that acknowledged before its disk had the entry, or counted its own unsynced
//! entries towards a commit, loses committed entries here, and the checks below fail.
//!
//! Scripted tests switch the network and the disk to manual (`trace.rs`): messages wait until
//! they are delivered, fsyncs until [`SimCluster::sync`], and every step is recorded as [`Event`]s
//! for them to print. [`script`] runs the scripts of `tests/scripts/` this way and compares what
//! they print with what they expect.
//!
//! The cluster also plays the role of the MIT 6.5840 lab's `applyCh` checker: every applied entry
//! is compared with what every other node applied at that index, and a node must apply indexes in
//! order, exactly once per incarnation. It checks two more of Figure 3's properties as it goes:
//! Election Safety (never two leaders in one term) and Leader Completeness (a node that starts
//! leading holds every entry any node has applied).

mod disk;
mod lab;
mod members;
mod net;
pub mod script;
mod sync;
mod trace;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::sync::Arc;

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::raft::Storage;
use crate::raft::{Config, Entry, Index, Membership, NodeId, Output, RaftNode, SnapshotMeta, Term};
pub use disk::DiskConfig;
use disk::{Disk, SimStorage};
use net::InFlight;
pub use net::NetConfig;
use sync::SyncState;
pub use trace::Event;

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
    /// Live nodes; a crashed node is absent (its disk stays in `disks`).
    nodes: BTreeMap<NodeId, RaftNode>,
    /// Every node's disk, across incarnations.
    disks: BTreeMap<NodeId, Arc<Mutex<Disk>>>,
    /// Per running node: its fsync and the outputs waiting for it.
    syncs: BTreeMap<NodeId, SyncState>,
    /// Disk behaviour, changeable at any time.
    pub disk: DiskConfig,
    /// Messages wait in the network until [`SimCluster::deliver_where`] (scripted tests).
    pub manual_delivery: bool,
    /// What happened, when recording (see [`SimCluster::take_trace`]).
    trace: Option<Vec<Event>>,
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
    /// Adjusts every node's [`Config`], at start and on every restart.
    configure: Box<dyn Fn(&mut Config)>,
    /// Take a snapshot on every node each time it applies a multiple of this index (like the
    /// MIT lab's service), keeping `snapshot_trailing` entries in the log.
    pub snapshot_every: Option<u64>,
    /// Entries kept in the log behind a snapshot.
    pub snapshot_trailing: u64,
    /// Each node's latest snapshot: its meta and the state machine (applied commands) it holds.
    /// Kept across crashes, like a snapshot file.
    snapshots: BTreeMap<NodeId, (SnapshotMeta, BTreeMap<Index, Vec<u8>>)>,
    /// The nodes the cluster was created with: every founder bootstraps this configuration.
    founders: Vec<NodeId>,
    /// Nodes that start empty and wait to be sent a configuration (added to a running cluster,
    /// or wiped): they do not bootstrap one of their own.
    joiners: BTreeSet<NodeId>,
    /// The configuration each node's latest snapshot was taken under (kept in the snapshot's
    /// data by the server).
    snapshot_memberships: BTreeMap<NodeId, Membership>,
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
    pub fn with_config(n: usize, seed: u64, configure: impl Fn(&mut Config) + 'static) -> Self {
        eprintln!("simulation seed {seed} (replay with RAFT_SEED={seed})");
        let ids: Vec<NodeId> = (1..=n).map(|i| format!("n{i}")).collect();
        let mut cluster = SimCluster {
            ids: ids.clone(),
            nodes: BTreeMap::new(),
            disks: BTreeMap::new(),
            syncs: BTreeMap::new(),
            disk: DiskConfig::default(),
            manual_delivery: false,
            trace: None,
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
            configure: Box::new(configure),
            snapshot_every: None,
            snapshot_trailing: 0,
            snapshots: BTreeMap::new(),
            snapshot_memberships: BTreeMap::new(),
            founders: ids.clone(),
            joiners: BTreeSet::new(),
            incoming_snapshot: BTreeMap::new(),
            snapshots_installed: 0,
        };
        for id in &ids {
            cluster.disks.insert(id.clone(), Arc::default());
            cluster.start(id);
        }
        cluster
    }

    fn config_for(&mut self, id: &NodeId) -> Config {
        // The bootstrap configuration is the founding members (a server's `--peers` flags), not
        // whoever has joined since: a founder that crashed before its bootstrap entry was synced
        // writes the same entry again when it restarts.
        let peers = self.founders.iter().filter(|p| *p != id).cloned().collect();
        let mut config = Config::new(id.clone(), peers);
        config.seed = self.rng.r#gen();
        (self.configure)(&mut config);
        if self.joiners.contains(id) {
            config.bootstrap = None;
        }
        config
    }

    /// Restarts a crashed node from what its disk holds durably (no-op if it is running).
    pub fn start(&mut self, id: &NodeId) {
        if self.nodes.contains_key(id) {
            return;
        }
        let mut storage = SimStorage::recover(self.disks[id].clone());
        let synced = storage.write_seq();
        // As the durable storage does when it opens: a snapshot file newer than the snapshot the
        // log records (the node crashed before that record was synced) is installed now.
        let mut installed = None;
        if let Some((file, _)) = self.snapshots.get(id).cloned()
            && storage.snapshot().is_none_or(|s| s.index < file.index)
        {
            // Its configuration is restored from the snapshot's data below, as the server does.
            storage.install_snapshot(file).expect("install the snapshot file");
            installed = Some(file);
        }
        let config = self.config_for(id);
        let mut node = RaftNode::new(config, Box::new(storage)).expect("valid simulated config");
        // As the server does when it loads the state machine: the snapshot's data carries the
        // configuration in force at its index.
        if let (Some(file), Some(m)) = (installed, self.snapshot_memberships.get(id)) {
            node.restore_membership(file.index, m.clone()).expect("restore the configuration");
        }
        // The state machine restarts from the node's snapshot, as a server loads its file.
        let restored = match (self.snapshots.get(id), node.storage().snapshot()) {
            (Some((meta, data)), Some(s)) if *meta == s => data.clone(),
            (None, None) => BTreeMap::new(),
            (held, s) => panic!("{id} restarts from snapshot {s:?} but holds {held:?}"),
        };
        self.applied.insert(id.clone(), restored);
        self.last_applied.insert(id.clone(), node.log().last_applied);
        self.nodes.insert(id.clone(), node);
        self.syncs.insert(id.clone(), SyncState::new(synced));
        self.note(|| Event::Start(id.clone()));
    }

    /// Crashes a node: its volatile state is gone, and so is every write its disk had not synced
    /// (with probability [`DiskConfig::keep_unsynced_rate`] a random prefix of them survives).
    /// The messages it sent are still on their way; those waiting for its fsync are lost.
    pub fn crash(&mut self, id: &NodeId) {
        if self.nodes.remove(id).is_none() {
            return;
        }
        self.syncs.remove(id);
        self.incoming_snapshot.remove(id);
        let unsynced = self.disks[id].lock().unsynced();
        let keep = if unsynced > 0 && self.rng.gen_bool(self.disk.keep_unsynced_rate) {
            self.rng.gen_range(0..=unsynced)
        } else {
            0
        };
        let lost = self.disks[id].lock().crash(keep);
        self.note(|| Event::Crash { id: id.clone(), lost });
    }

    /// Crashes a node and starts it again from its disk (the MIT lab's `start1` on a running
    /// server). Its links stay as they were.
    pub fn restart(&mut self, id: &NodeId) {
        self.crash(id);
        self.start(id);
    }

    /// Crashes a node and throws its disk and snapshot away (an operator wiping its data dir): it
    /// restarts with an empty log and no vote, and must catch up from the leader.
    pub fn wipe(&mut self, id: &NodeId) {
        self.crash(id);
        self.disks.insert(id.clone(), Arc::default());
        self.snapshots.remove(id);
        self.snapshot_memberships.remove(id);
        // An empty node rejoins the cluster it belonged to: it must not bootstrap a new one.
        self.joiners.insert(id.clone());
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

    /// Advances simulated time by one tick: deliver what is due, tick every node, then complete
    /// the fsyncs that are due.
    pub fn tick(&mut self) {
        self.now += 1;
        while !self.manual_delivery
            && let Some(Reverse(head)) = self.queue.peek()
            && head.deliver_at <= self.now
        {
            let Some(Reverse(inflight)) = self.queue.pop() else {
                break;
            };
            self.deliver(inflight.env);
        }
        for id in self.ids.clone() {
            self.tick_node(&id);
        }
        self.complete_due_syncs();
    }

    /// Ticks one node (no time passes for the others): what [`SimCluster::tick`] does for each.
    pub fn tick_node(&mut self, id: &NodeId) {
        if let Some(node) = self.nodes.get_mut(id) {
            // Each node's clock for the lease is its own ticks, at [`TICK_MS`] a tick.
            node.set_clock(node.ticks() * TICK_MS);
            let out = node.tick().expect("tick");
            self.handle_output(id, out);
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

    /// Acts on a node's output the way the server shell does: messages leave at once, entries are
    /// applied, and whatever depends on the disk waits for an fsync ([`SimCluster::await_sync`]).
    fn handle_output(&mut self, id: &NodeId, out: Output) {
        for env in out.messages {
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
            self.keep_snapshot(id, meta, data);
            self.snapshots_installed += 1;
            self.note(|| Event::Restore(id.clone(), meta));
        }
        for r in out.reads {
            self.note(|| Event::Read { id: id.clone(), read: r.id, index: r.index });
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
        match out.sync {
            Some(point) => self.await_sync(id, point, out.after_sync),
            None => assert!(out.after_sync.is_empty(), "{id}: messages wait for no sync point"),
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
        self.note(|| Event::Apply(id.clone(), entry.clone()));
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
            self.save_snapshot(id, SnapshotMeta { index, term });
        }
    }

    /// Writes a snapshot file of `id`'s state machine through `meta` (durable at once, as the
    /// server's snapshot store fsyncs it), then tells the core, which compacts its log keeping
    /// [`SimCluster::snapshot_trailing`] entries.
    fn save_snapshot(&mut self, id: &NodeId, meta: SnapshotMeta) {
        let data = self.applied.get(id).cloned().unwrap_or_default();
        self.keep_snapshot(id, meta, data);
        let trailing = self.snapshot_trailing;
        if let Some(node) = self.nodes.get_mut(id) {
            node.snapshot_taken(meta, trailing).expect("snapshot_taken");
        }
    }

    /// Stores a node's new snapshot "file", with the configuration in force at its index.
    fn keep_snapshot(&mut self, id: &NodeId, meta: SnapshotMeta, data: BTreeMap<Index, Vec<u8>>) {
        self.snapshots.insert(id.clone(), (meta, data));
        match self.nodes.get(id).and_then(|n| n.membership_at(meta.index)) {
            Some(m) => self.snapshot_memberships.insert(id.clone(), m.clone()),
            None => self.snapshot_memberships.remove(id),
        };
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

    /// Proposes `commands` on `id` as one batch ([`RaftNode::propose_batch`]): the term and
    /// each command's index or error, or `None` if `id` is down or refuses the whole batch.
    pub fn propose_batch(
        &mut self,
        id: &NodeId,
        commands: Vec<Vec<u8>>,
    ) -> Option<(Term, Vec<crate::error::Result<Index>>)> {
        let node = self.nodes.get_mut(id)?;
        let (term, placed, out) = node.propose_batch(commands).ok()?;
        self.handle_output(id, out);
        Some((term, placed))
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
