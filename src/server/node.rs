//! The node: the state every thread of one server shares, the one rule for touching the consensus
//! core, and the client operations built on it.
//!
//! # The lock rule
//!
//! **Lock, step or tick, route, unlock, then act.** Every thread goes through `Node::with_raft`
//! (or the same steps spelled out, in the peer RPC handler in [`super::peer`]):
//!
//! 1. lock the core and call `tick`, `step`, `propose`, `read` or `persisted`;
//! 2. still under the lock, `Node::route` the output with non-blocking channel operations only
//!    (`try_send` on the bounded peer queues, `send` on unbounded ones), which keeps messages and
//!    committed entries in the order the core produced them;
//! 3. unlock;
//! 4. act: `Node::queue_sync` hands what must wait for the disk to the sync thread, and the
//!    caller waits for what it needs (a commit, a confirmed read, an fsync).
//!
//! Never hold the Raft lock across a `ureq` call, a blocking channel send, an fsync wait or a
//! client wait. Lock order: Raft, then `pending` (see [`super::pending`]).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded, unbounded};
use parking_lot::{Mutex, RwLock};

use super::auth::PeerAuth;
use super::config::ServerConfig;
use super::events::EventFeed;
use super::faults::Faults;
use super::metrics::{self, Metrics};
use super::oneshot;
use super::pending::{Pending, Wakeups};
use super::proposals::{Inbox, Proposal};
use super::startup::{SyncHooks, force_new_cluster, load_state_machine};
use crate::api::Status;
use crate::error::{Error, LeaderHint, Result};
use crate::kv::{Applied, Command, IdempotencyMeta, KvStore};
use crate::raft::{Entry, Envelope, Index, Message, NodeId, Output, RaftNode, SnapshotMeta, Term};
use crate::storage::{NodeStorage, SnapshotStore, Syncer};

/// Capacity of each peer's queue: a slow peer fills its own and loses messages, nobody waits.
const PEER_QUEUE: usize = 64;

/// A sync job for the sync thread: make storage durable through `output.sync`, tell the core,
/// then send the messages that waited for the disk (`output.after_sync`).
pub struct SyncJob {
    /// What was left of a step's output after routing.
    pub output: Output,
}

/// Work for the apply thread, in log order.
pub enum ApplyMsg {
    /// Committed entries.
    Entries(Vec<Entry>),
    /// Replace the state machine with this (received and verified) snapshot.
    Restore(SnapshotMeta),
}

/// The other members of the configuration in force, as the shell reaches them.
#[derive(Default)]
struct Links {
    /// The index of the configuration these links follow.
    config_index: Index,
    /// id → address and queue.
    peers: BTreeMap<NodeId, Link>,
}

/// What became of a message for a member's queue.
pub(super) enum Queued {
    /// It waits for the member's replication thread.
    Yes,
    /// The queue is full (the member is slow or gone): dropped.
    Full,
    /// No such member in the configuration in force: dropped.
    NotMember,
}

/// How one member is reached.
struct Link {
    addr: String,
    tx: Sender<Envelope>,
}

/// The receiving ends of a node's queues, handed to the threads that serve them.
pub struct Queues {
    /// One per member at start, for its replication thread.
    pub peers: Vec<(NodeId, Receiver<Envelope>)>,
    /// Queues of members added later, for the thread that spawns their replication threads.
    pub new_peers: Receiver<(NodeId, Receiver<Envelope>)>,
    /// For the apply thread.
    pub apply: Receiver<ApplyMsg>,
    /// For the sync thread.
    pub sync: Receiver<SyncJob>,
}

/// One running node's state, shared by all its threads (HTTP workers, ticker, peer threads,
/// apply, sync, snapshot).
pub struct Node {
    /// Configuration.
    pub config: ServerConfig,
    /// Signs the requests this node sends to peers (forwarding) and checks the ones it receives.
    pub(super) auth: PeerAuth,
    /// The consensus core. Held only to step/tick/propose/read and route the output.
    pub(super) raft: Mutex<RaftNode>,
    /// The state machine (read by HTTP workers, written by the apply thread).
    pub(super) kv: RwLock<KvStore>,
    /// Waiting client requests.
    pub(super) pending: Mutex<Pending>,
    /// Writes waiting to be proposed, in one batch per Raft lock ([`super::proposals`]).
    proposals: Inbox,
    /// Makes storage durable, without the Raft lock.
    pub(super) syncer: Arc<dyn Syncer>,
    /// The other members (from the configuration in force): where each is, and its bounded
    /// queue, drained by its replication thread. Lock order: Raft, then `links`.
    links: RwLock<Links>,
    /// Hands the queue of a member that joined the configuration to the thread that spawns its
    /// replication thread (`peers` in [`super::Server`]).
    spawn_tx: Sender<(NodeId, Receiver<Envelope>)>,
    /// Committed entries and snapshots to install, for the apply thread.
    apply_tx: Sender<ApplyMsg>,
    /// Syncs and the messages waiting on them, for the sync thread.
    sync_tx: Sender<SyncJob>,
    /// Snapshot files (None for an in-memory node: it never snapshots).
    pub(super) snapshots: Option<Arc<SnapshotStore>>,
    /// Index of the latest snapshot taken or installed, and whether one is being taken now.
    pub(super) snapshot_state: Mutex<SnapshotState>,
    /// Ids for linearizable reads, so the core can tell them apart.
    next_read_id: AtomicU64,
    /// Peer RPCs this node sent (requests only), for `/status`.
    pub(super) rpcs_sent: AtomicU64,
    /// Peer RPCs this node answered.
    pub(super) rpcs_received: AtomicU64,
    /// Log entries applied to the state machine since start.
    pub(super) entries_applied: AtomicU64,
    /// Set once by [`super::Server::stop`]: every loop ends at its next check.
    pub(super) shutdown: AtomicBool,
    /// When the node started (for `/status`).
    started: Instant,
    /// What the node measures about itself (`/status`, `/metrics`), without the Raft lock.
    pub(super) metrics: Arc<Metrics>,
    /// The fault lab (inert unless `--enable-fault-injection`).
    pub(super) faults: Arc<super::faults::Faults>,
    /// `GET /debug/events`: what happens, for the dashboard (one atomic load when unwatched).
    pub(super) feed: Arc<EventFeed>,
    /// The term and leader id as of the latest step ([`Node::known_leader`]).
    seen: Mutex<(Term, String)>,
    /// This node was the leader as of the latest step ([`Node::is_leading`]).
    leading: AtomicBool,
    /// The answer threads' queue ([`super::answers`]).
    pub(super) answers: super::answer_queue::Answers,
    /// The data directory (None in memory), for its disk use.
    data_dir: Option<std::path::PathBuf>,
}

/// Bookkeeping of the snapshot thread.
pub struct SnapshotState {
    /// Index of the latest snapshot taken or installed (or where the state machine started).
    pub last_index: Index,
    /// A snapshot is being written now (one at a time).
    pub in_progress: bool,
}

impl SnapshotState {
    /// Starts counting from `index`.
    pub fn new(index: Index) -> Self {
        SnapshotState { last_index: index, in_progress: false }
    }
}

impl Node {
    /// A node over `storage`, with its queues (no threads yet). Recovery: the state machine
    /// starts from the latest snapshot, and the log replays the rest as the leader tells us what
    /// is committed.
    pub fn new(mut config: ServerConfig, storage: NodeStorage) -> Result<(Node, Queues)> {
        let NodeStorage { log, syncer, snapshots, report: _, dir: data_dir } = storage;
        let metrics = Metrics::new();
        let faults = Arc::new(Faults::new(config.fault_injection));
        let hooks = SyncHooks { metrics: metrics.clone(), faults: faults.clone() };
        syncer.set_observer(Arc::new(hooks));
        let mut raft = RaftNode::new(config.raft_config(), log)?;
        let snapshots = snapshots.map(Arc::new);
        let snapshot = raft.storage().snapshot();
        let (kv, cluster) = load_state_machine(snapshot, snapshots.as_deref())?;
        if let (Some(meta), Some(m)) = (snapshot, cluster) {
            raft.restore_membership(meta.index, m)?;
        }
        if config.force_new_cluster {
            force_new_cluster(&mut raft, &config)?;
        }
        // The cluster id is the one the cluster was bootstrapped with, kept in the log's
        // configuration; the flags only matter for a node that has none yet.
        if let Some(m) = raft.membership()
            && m.cluster_id != config.cluster_id
            && !m.cluster_id.is_empty()
        {
            log::info!(
                "{}: cluster id {} (from the log; the flags would give {})",
                config.id,
                m.cluster_id,
                config.cluster_id
            );
            config.cluster_id = m.cluster_id.clone();
        }
        let snapshot_state = SnapshotState::new(kv.applied_index());
        let (spawn_tx, new_peers) = unbounded();
        let mut links = Links::default();
        let peers = links.follow(&config.id, &raft);
        let (apply_tx, apply) = unbounded();
        let (sync_tx, sync) = unbounded();
        let node = Node {
            faults,
            feed: Arc::new(EventFeed::new()),
            seen: Mutex::new((0, String::new())),
            leading: AtomicBool::new(false),
            answers: super::answer_queue::Answers::new(config.answer_threads),
            auth: config.peer_auth(),
            raft: Mutex::new(raft),
            kv: RwLock::new(kv),
            pending: Mutex::new(Pending::default()),
            proposals: Inbox::default(),
            syncer,
            links: RwLock::new(links),
            spawn_tx,
            apply_tx,
            sync_tx,
            snapshots,
            snapshot_state: Mutex::new(snapshot_state),
            next_read_id: AtomicU64::new(1),
            rpcs_sent: AtomicU64::new(0),
            rpcs_received: AtomicU64::new(0),
            entries_applied: AtomicU64::new(0),
            shutdown: AtomicBool::new(false),
            started: Instant::now(),
            metrics,
            data_dir,
            config,
        };
        Ok((node, Queues { peers, new_peers, apply, sync }))
    }

    /// The node is stopping: loops end, waiting clients are failed.
    pub fn is_shutdown(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    /// Address of a node id (ours or a member's).
    pub fn addr_of(&self, id: &NodeId) -> Option<String> {
        if *id == self.config.id {
            Some(self.config.addr.clone())
        } else {
            self.links.read().peers.get(id).map(|l| l.addr.clone())
        }
    }

    /// The cluster's id (from the log's configuration once there is one).
    pub fn cluster_id(&self) -> &str {
        &self.config.cluster_id
    }

    /// Queues a message for its receiver's replication thread without waiting.
    pub(super) fn send_to_peer(&self, env: Envelope) -> Queued {
        let links = self.links.read();
        let Some(link) = links.peers.get(&env.to) else { return Queued::NotMember };
        match link.tx.try_send(env) {
            Ok(()) => Queued::Yes,
            Err(TrySendError::Full(_)) => Queued::Full,
            Err(TrySendError::Disconnected(_)) => Queued::NotMember,
        }
    }

    /// Follows a configuration change (called under the Raft lock): a queue for each new
    /// member, whose replication thread the `peers` thread starts; removed members' queues are
    /// dropped, which ends their threads.
    fn follow_membership(&self, raft: &RaftNode) {
        if self.links.read().config_index == raft.config_index() {
            return;
        }
        let added = self.links.write().follow(&self.config.id, raft);
        for (id, rx) in added {
            let _ = self.spawn_tx.send((id, rx));
        }
    }

    // ----- the lock rule --------------------------------------------------------------------------

    /// Lock, run `f` on the core, route its output, unlock, queue the sync.
    pub(super) fn with_raft<T>(
        &self,
        f: impl FnOnce(&mut RaftNode) -> Result<(T, Output)>,
    ) -> Result<T> {
        let (value, rest, wakeups) = {
            let mut raft = self.raft.lock();
            if self.config.lease_reads {
                raft.set_clock(self.clock_ms());
            }
            let (value, out) = f(&mut raft)?;
            let (rest, wakeups) = self.route(&mut raft, out);
            (value, rest, wakeups)
        };
        self.queue_sync(rest);
        wakeups.send();
        Ok(value)
    }

    /// Runs `f` on the waiting room, then wakes whoever it answered, after unlocking (see
    /// [`Wakeups`]).
    pub(super) fn with_pending<T>(&self, f: impl FnOnce(&mut Pending) -> T) -> T {
        let (value, wakeups) = {
            let mut pending = self.pending.lock();
            let value = f(&mut pending);
            (value, pending.take_wakeups())
        };
        wakeups.send();
        value
    }

    /// Sends what can leave now, and queues applies — called with the Raft lock held; nothing here
    /// blocks. Returns the rest of the output for `Node::queue_sync`, and the readers to wake,
    /// for after unlocking.
    pub(super) fn route(&self, raft: &mut RaftNode, mut out: Output) -> (Output, Wakeups) {
        {
            let (term, leader) = (raft.term(), raft.leader_id().map_or("", |l| l.as_str()));
            let mut seen = self.seen.lock();
            if seen.0 != term || seen.1 != leader {
                *seen = (term, leader.to_string());
            }
            self.leading.store(raft.is_leader(), Ordering::Relaxed);
        }
        self.follow_membership(raft);
        self.feed.observe(raft);
        for env in out.messages.drain(..) {
            let carries_entries =
                matches!(&env.message, Message::AppendEntries(a) if !a.entries.is_empty());
            let to = env.to.clone();
            if let Queued::Full = self.send_to_peer(env) {
                log::debug!("queue to {to} is full: message dropped");
                // The peer is slow or gone; its queue is full. Forget the request so the core
                // resends from the last known match when the peer answers again.
                if carries_entries {
                    raft.report_unreachable(&to);
                }
            }
        }
        if !out.apply.is_empty() {
            self.metrics.events.committed.inc_by(out.apply.len() as u64);
            let _ = self.apply_tx.send(ApplyMsg::Entries(std::mem::take(&mut out.apply)));
        }
        if let Some(meta) = out.restore.take() {
            let _ = self.apply_tx.send(ApplyMsg::Restore(meta));
        }
        let mut wakeups = Wakeups::default();
        if !out.reads.is_empty() || !out.aborted_reads.is_empty() {
            let mut pending = self.pending.lock();
            for r in out.reads.drain(..) {
                pending.read_confirmed(r.id, r.index);
            }
            for id in out.aborted_reads.drain(..) {
                pending.read_aborted(id);
            }
            wakeups = pending.take_wakeups();
        }
        (out, wakeups)
    }

    /// After unlocking: hand storage syncs and the messages waiting on them to the sync thread.
    pub(super) fn queue_sync(&self, out: Output) {
        if out.sync.is_some() || !out.after_sync.is_empty() {
            let _ = self.sync_tx.send(SyncJob { output: out });
        }
    }

    /// A storage failure leaves us unable to keep Raft's promises: stop, loudly, rather than
    /// serve with a log we cannot trust. The operator restarts the node.
    pub(super) fn fatal(&self, e: &Error) -> ! {
        log::error!("{}: fatal error in the consensus core: {e}", self.config.id);
        std::process::exit(2);
    }

    // ----- client operations ----------------------------------------------------------------------

    /// The core refuses a client operation on a follower with [`Error::NotLeader`] naming the
    /// leader by id: add the address clients reach it at (a leader we know no address of is no
    /// hint).
    pub(super) fn with_leader_addr(&self, e: Error) -> Error {
        match e {
            Error::NotLeader { leader: Some(LeaderHint { id, .. }) } => {
                Error::NotLeader { leader: self.addr_of(&id).map(|addr| LeaderHint { id, addr }) }
            }
            e => e,
        }
    }

    /// Proposes `command` (no idempotency key) and returns at once: `answer` gets the outcome,
    /// on the thread that learns it, or [`Error::OutcomeUnknown`] once `deadline` passes
    /// ([`super::answers`]).
    pub(super) fn write_then(
        &self,
        command: Command,
        answer: oneshot::Sender<super::pending::WriteResult>,
        deadline: Instant,
    ) {
        let (mut proposal, _) = Proposal::new(command.encode(), answer);
        proposal.deadline = Some(deadline);
        self.submit(proposal);
    }

    /// Queues `proposal` and proposes the inbox, unless another caller already does
    /// ([`super::proposals`]).
    fn submit(&self, proposal: Proposal) {
        self.proposals.push(proposal);
        self.proposals.combine(|batch| self.propose_batch(batch));
    }

    /// This node was the leader as of its latest step (a hint: it may have stepped down since).
    pub fn is_leading(&self) -> bool {
        self.leading.load(Ordering::Relaxed)
    }

    /// Proposes a command and waits until it is applied (200), replaced (503) or the wait times
    /// out (504). Not the leader: [`Error::NotLeader`], before anything is proposed (the HTTP
    /// layer forwards instead).
    ///
    /// With an `idempotency_key` the write is remembered under it ([`crate::kv::idempotency`]):
    /// if the state machine already has it, the first attempt's answer is returned without
    /// proposing anything (or 422 if it was another write); otherwise the write is proposed
    /// stamped with this node's clock and its TTL and cap, and the apply decides.
    pub fn write(&self, command: Command, idempotency_key: Option<&str>) -> Result<Applied> {
        let command = match idempotency_key {
            None => command,
            Some(key) => {
                let fingerprint = fingerprint(&command);
                if let Some(answer) = self.kv.read().idempotency_lookup(key, &fingerprint) {
                    return answer;
                }
                let at_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                let meta = IdempotencyMeta {
                    key: key.to_string(),
                    fingerprint,
                    at_ms,
                    ttl_ms: self.config.idempotency_ttl.as_millis() as u64,
                    cap: self.config.idempotency_cap,
                };
                Command::Idempotent { meta, command: Box::new(command) }
            }
        };
        let (tx, rx) = oneshot::channel();
        let (proposal, placed) = Proposal::new(command.encode(), tx);
        self.submit(proposal);
        let result = rx.recv_timeout(self.config.request_timeout);
        if !matches!(result, Ok(Ok(_))) {
            self.metrics.events.proposals_failed.inc();
        }
        match result {
            Ok(Ok(applied)) => Ok(applied),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                let index = placed.load(Ordering::Acquire);
                if index > 0 {
                    self.pending.lock().remove_write(index);
                }
                let proposed = match index {
                    0 => "queued for proposal".to_string(),
                    i => format!("proposed at index {i}"),
                };
                Err(Error::OutcomeUnknown(format!(
                    "the write was {proposed} but not seen committed within {:?}; it may or may \
                     not apply",
                    self.config.request_timeout
                )))
            }
        }
    }

    /// Proposes a batch of writes from the inbox under one Raft lock (the combiner's job, see
    /// [`super::proposals`]), registering each in `pending` under that lock (so its entry cannot
    /// be applied before it is waited for), or answering it with its error.
    fn propose_batch(&self, batch: Vec<Proposal>) {
        let (commands, mut waiters): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|p| (p.command, (p.tx, p.placed, p.deadline))).unzip();
        let proposed = self.with_raft(|raft| {
            let (term, placed, out) = raft.propose_batch(commands)?;
            let mut refused = Wakeups::default();
            let mut pending = self.pending.lock();
            for (at, (tx, index, deadline)) in placed.into_iter().zip(waiters.drain(..)) {
                match at {
                    Ok(at) => {
                        index.store(at, Ordering::Release);
                        pending.add_write_until(at, term, tx, deadline);
                    }
                    Err(e) => refused.write(tx, Err(e)),
                }
            }
            Ok((refused, out))
        });
        // Refused as a whole (not the leader): nobody was taken out of `waiters`.
        let refused = proposed.unwrap_or_else(|e| {
            let e = self.with_leader_addr(e);
            let mut refused = Wakeups::default();
            waiters.drain(..).for_each(|(tx, _, _)| refused.write(tx, Err(e.clone())));
            refused
        });
        // Answered after unlocking, like every other answer (see `Wakeups`).
        refused.send();
    }

    /// Waits until a read of the state machine is linearizable (ReadIndex through the leader).
    /// Not the leader: [`Error::NotLeader`].
    pub fn linearizable_barrier(&self) -> Result<()> {
        self.linearizable_barrier_within(self.config.request_timeout)
    }

    /// [`Node::linearizable_barrier`], giving up after `timeout`.
    pub fn linearizable_barrier_within(&self, timeout: std::time::Duration) -> Result<()> {
        self.read_barrier(timeout, false).map(|_| ())
    }

    /// A read barrier that the leader's lease may pass at once (`?consistency=lease`, thesis
    /// §6.4.1; see [`crate::raft::RaftNode::read_lease`]); without `--lease-reads`, or when the
    /// lease does not hold, it is a ReadIndex round. True when the lease served it.
    pub fn lease_barrier(&self) -> Result<bool> {
        self.read_barrier(self.config.request_timeout, self.config.lease_reads)
    }

    /// The shell's monotonic clock for the core's lease, in milliseconds since the node started.
    pub(super) fn clock_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Starts a linearizable read (ReadIndex) whose outcome goes to `answer`: `Ok(index)` once
    /// leadership is confirmed and the state machine has applied through `index`, or why not
    /// (not the leader, or [`super::pending::Pending::expire`] at `deadline`). The caller does
    /// not wait ([`super::answers`]).
    pub(super) fn read_then(
        &self,
        answer: oneshot::Sender<Result<crate::raft::Index>>,
        deadline: Instant,
    ) {
        let id = self.next_read_id.fetch_add(1, Ordering::Relaxed);
        self.pending.lock().add_read_until(id, answer, Some(deadline));
        if let Err(e) = self.with_raft(|raft| Ok(((), raft.read(id)?))) {
            let e = self.with_leader_addr(e);
            self.with_pending(|p| p.read_refused(id, e));
        }
    }

    fn read_barrier(&self, timeout: std::time::Duration, lease: bool) -> Result<bool> {
        let id = self.next_read_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().add_read(id, tx);
        let started = self.with_raft(|raft| match lease {
            // The clock is read under the lock, right before the check: a read that waited for
            // the lock must not be judged by the time it arrived.
            true => raft.read_lease(id, self.clock_ms()),
            false => Ok((false, raft.read(id)?)),
        });
        let by_lease = match started {
            Ok(by_lease) => by_lease,
            Err(e) => {
                self.pending.lock().remove_read(id);
                return Err(self.with_leader_addr(e));
            }
        };
        match rx.recv_timeout(timeout) {
            Ok(result) => result.map(|_| by_lease),
            Err(_) => {
                self.pending.lock().remove_read(id);
                Err(Error::Unavailable(format!(
                    "could not confirm leadership with a majority within {timeout:?}"
                )))
            }
        }
    }

    /// The term and the leader id (empty if none) this node knows, as of its latest step (kept
    /// by `Node::route`, so reading it takes no Raft lock).
    pub fn known_leader(&self) -> (Term, String) {
        self.seen.lock().clone()
    }

    /// Runs `f` on the state machine.
    pub fn with_kv<T>(&self, f: impl FnOnce(&KvStore) -> T) -> T {
        f(&self.kv.read())
    }

    /// What `/metrics` reads when scraped: one Raft lock, then the state machine's.
    pub fn scrape(&self) -> metrics::Scrape {
        let (term, commit_index, has_leader, is_leader, is_learner, counters, snapshot_index) = {
            let raft = self.raft.lock();
            let snapshot = raft.storage().snapshot().map_or(0, |m| m.index);
            (
                raft.term(),
                raft.log().commit_index,
                raft.leader().is_some(),
                raft.is_leader(),
                raft.member_state() == "learner",
                raft.counters(),
                snapshot,
            )
        };
        let (applied_index, keys) = {
            let kv = self.kv.read();
            (kv.applied_index(), kv.len() as u64)
        };
        let receiving = self.snapshots.as_ref().and_then(|s| s.receiving()).map(|(m, _)| m.index);
        metrics::Scrape {
            term,
            commit_index,
            applied_index,
            has_leader,
            is_leader,
            is_learner,
            counters,
            proposals_pending: self.pending.lock().writes_waiting() as u64,
            keys,
            snapshot_index,
            data_dir: self.data_dir.clone(),
            snapshot_in: self.metrics.snapshot_in(receiving),
            answer_threads: self.answers.running() as u64,
        }
    }

    /// The node's status.
    pub fn status(&self) -> Status {
        let s = self.raft.lock().status();
        // One read guard: parking_lot's RwLock is fair, so a second `read()` while holding one
        // blocks if the apply thread is waiting to write, and the two wait for each other forever.
        let (last_applied, keys) = {
            let kv = self.kv.read();
            (kv.applied_index(), kv.len())
        };
        let (wal_bytes, data_dir_bytes) =
            self.data_dir.as_deref().map_or((0, 0), metrics::disk_usage);
        let receiving = self.snapshots.as_ref().and_then(|s| s.receiving()).map(|(m, _)| m.index);
        let tick_ms = self.config.tick.as_millis() as u64;
        Status {
            is_leader: s.role == "leader",
            leader_addr: s.leader.as_ref().and_then(|l| self.addr_of(l)),
            id: s.id,
            term: s.term,
            role: Cow::Borrowed(s.role),
            leader: s.leader,
            commit_index: s.commit_index,
            last_applied,
            last_log_index: s.last_log_index,
            keys,
            peers: self
                .links
                .read()
                .peers
                .iter()
                .map(|(id, l)| (id.clone(), l.addr.clone()))
                .collect(),
            uptime_secs: self.started.elapsed().as_secs(),
            rpcs_sent: self.rpcs_sent.load(Ordering::Relaxed),
            rpcs_received: self.rpcs_received.load(Ordering::Relaxed),
            fsyncs: self.syncer.fsync_count(),
            entries_applied: self.entries_applied.load(Ordering::Relaxed),
            first_log_index: s.first_log_index,
            snapshot_index: s.snapshot.map_or(0, |m| m.index),
            replication: self.metrics.replication(&s.progress, tick_ms),
            progress: s.progress,
            cluster_id: self.config.cluster_id.clone(),
            config_index: s.config_index,
            member_state: Cow::Borrowed(s.member_state),
            voters: s.membership.as_ref().map(|m| m.voters.clone()).unwrap_or_default(),
            learners: s.membership.as_ref().map(|m| m.learners.clone()).unwrap_or_default(),
            transfer: s.transfer,
            voted_for: s.voted_for,
            last_log_term: s.last_log_term,
            snapshot_term: s.snapshot.map_or(0, |m| m.term),
            version: env!("CARGO_PKG_VERSION").to_string(),
            wal_bytes,
            data_dir_bytes,
            leader_changes_seen: s.counters.leader_changes,
            leader_changes_last_minute: self.metrics.leader_changes_last_minute(),
            fsync_p99_us: self.metrics.fsync_p99_us(),
            snapshot_receiving: self.metrics.snapshot_in(receiving),
        }
    }

    /// The leader's address, if another node leads.
    pub fn leader_addr(&self) -> Option<String> {
        let raft = self.raft.lock();
        if raft.is_leader() {
            return None;
        }
        raft.leader().and_then(|l| self.addr_of(&l))
    }
}

impl Links {
    /// Brings the links in line with the configuration in force on `raft`; returns the queues
    /// of members that were not linked before.
    fn follow(&mut self, me: &NodeId, raft: &RaftNode) -> Vec<(NodeId, Receiver<Envelope>)> {
        self.config_index = raft.config_index();
        let Some(m) = raft.membership() else { return Vec::new() };
        self.peers.retain(|id, _| m.contains(id));
        let mut added = Vec::new();
        for (id, addr, _) in m.members().filter(|(id, _, _)| *id != me) {
            match self.peers.get_mut(id) {
                Some(link) => link.addr = addr.clone(),
                None => {
                    let (tx, rx) = bounded(PEER_QUEUE);
                    self.peers.insert(id.clone(), Link { addr: addr.clone(), tx });
                    added.push((id.clone(), rx));
                }
            }
        }
        added
    }
}

// ----- helpers the node's threads share -----------------------------------------------------------

/// Starts a named thread (`peer-node2`, `ticker`, `http-3`, so logs and panics say who spoke).
pub(super) fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(f)
        .map_err(|e| Error::Internal(format!("cannot start thread {name}: {e}")))
}

/// A write's fingerprint for its idempotency record: the first 16 bytes of the SHA-256 of its
/// encoding, in hex. The same write encodes the same on every attempt.
fn fingerprint(command: &Command) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(command.encode());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}
