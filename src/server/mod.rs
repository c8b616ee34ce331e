//! The threaded shell around the deterministic core.
//!
//! ```text
//!            clients                                   peers
//!               |                                        ^
//!        [tiny_http pool: http-1..N] --step/propose-->   |  [peer-nodeX] one per peer: channel in,
//!               |                      \                 |   blocking ureq out, response -> step
//!               v                       v                |
//!   [ticker] -> Mutex<RaftNode> -- route (under the lock, non-blocking) --> peer channels
//!                     |                                   \--> apply channel --> [apply] -> KvStore
//!                     +-- sync jobs --> [sync]: fsync (group commit), then persisted() / votes
//! ```
//!
//! One rule: **lock, step or tick, route, unlock, then wait.** Routing under the lock only uses
//! non-blocking channel operations (`try_send` on bounded peer queues, `send` on unbounded ones), which
//! keeps messages and committed entries in the order the core produced them. Everything that can
//! block — HTTP calls, fsync, waiting for a commit — happens without the lock.

pub mod http;
pub mod peer;
pub mod pending;
pub mod pool_kick;
pub mod snapshot;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded, unbounded};
use parking_lot::{Mutex, RwLock};

use crate::error::{Error, Result};
use crate::kv::{Command, KvStore};
use crate::raft::{
    Config, Entry, Envelope, Index, Message, NodeId, Output, RaftNode, SnapshotMeta, Term,
};
use crate::storage::{NodeStorage, SnapshotStore, Syncer};
use peer::{RpcHandler, Transport};
use pending::Pending;

/// Everything a server needs to know.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// This node's id.
    pub id: NodeId,
    /// Address to listen on (`127.0.0.1:8080`).
    pub addr: String,
    /// Peers: id -> address.
    pub peers: BTreeMap<NodeId, String>,
    /// Length of one tick of the core's logical clock.
    pub tick: Duration,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Election timeout range (min, max).
    pub election_timeout: (Duration, Duration),
    /// Peer RPC timeout.
    pub rpc_timeout: Duration,
    /// How long a client request waits for its commit (then 504 for writes, 503 for reads).
    pub request_timeout: Duration,
    /// HTTP worker threads.
    pub http_threads: usize,
    /// Largest key, in bytes.
    pub max_key_bytes: usize,
    /// Largest value, in bytes.
    pub max_value_bytes: usize,
    /// Most entries in one AppendEntries.
    pub max_append_entries: usize,
    /// Seed for election timeouts (defaults to a random one).
    pub seed: u64,
    /// Take a snapshot once this many entries were applied since the last one (0: never).
    pub snapshot_threshold: u64,
    /// Entries kept in the log behind a snapshot, so slightly lagging followers catch up from
    /// the log instead of a whole snapshot.
    pub snapshot_trailing: u64,
    /// Size of the pieces a snapshot is sent in.
    pub snapshot_chunk_bytes: usize,
}

impl ServerConfig {
    /// Defaults: 10 ms tick, 50 ms heartbeat, 300–600 ms election timeout.
    pub fn new(
        id: impl Into<NodeId>,
        addr: impl Into<String>,
        peers: BTreeMap<NodeId, String>,
    ) -> Self {
        ServerConfig {
            id: id.into(),
            addr: addr.into(),
            peers,
            tick: Duration::from_millis(10),
            heartbeat: Duration::from_millis(50),
            election_timeout: (Duration::from_millis(300), Duration::from_millis(600)),
            rpc_timeout: Duration::from_millis(1000),
            request_timeout: Duration::from_secs(5),
            http_threads: 128,
            max_key_bytes: 4096,
            max_value_bytes: 1 << 20,
            max_append_entries: 4096,
            seed: rand::random(),
            snapshot_threshold: 10_000,
            snapshot_trailing: 1_000,
            snapshot_chunk_bytes: 1 << 20,
        }
    }

    /// The core's configuration, in ticks.
    pub fn raft_config(&self) -> Config {
        let ticks = |d: Duration| (d.as_millis() / self.tick.as_millis().max(1)).max(1) as u64;
        let mut c = Config::new(self.id.clone(), self.peers.keys().cloned().collect());
        c.heartbeat_ticks = ticks(self.heartbeat);
        c.election_ticks_min = ticks(self.election_timeout.0);
        c.election_ticks_max = ticks(self.election_timeout.1).max(c.election_ticks_min + 1);
        c.rpc_timeout_ticks = ticks(self.rpc_timeout).max(c.election_ticks_min);
        c.max_append_entries = self.max_append_entries.max(1);
        c.seed = self.seed;
        c
    }
}

/// A sync job: make storage durable through `seq`, then tell the node and send what waited.
struct SyncJob {
    output: Output,
}

/// Work for the apply thread, in log order.
enum ApplyMsg {
    /// Committed entries.
    Entries(Vec<Entry>),
    /// Replace the state machine with this (received and verified) snapshot.
    Restore(SnapshotMeta),
}

/// State shared by every thread of a node.
pub struct Shared {
    /// Configuration.
    pub config: ServerConfig,
    /// The consensus core. Held only to step/tick/propose/read and route the output.
    raft: Mutex<RaftNode>,
    /// The state machine (read by HTTP workers, written by the apply thread).
    kv: RwLock<KvStore>,
    /// Waiting client requests.
    pending: Mutex<Pending>,
    /// Makes storage durable, without the Raft lock.
    syncer: Arc<dyn Syncer>,
    peer_tx: BTreeMap<NodeId, Sender<Envelope>>,
    apply_tx: Sender<ApplyMsg>,
    /// Snapshot files (None for an in-memory node: it never snapshots).
    snapshots: Option<Arc<SnapshotStore>>,
    /// Index of the latest snapshot taken or installed, and whether one is being taken now.
    snapshot_state: Mutex<snapshot::SnapshotState>,
    sync_tx: Sender<SyncJob>,
    next_read_id: AtomicU64,
    /// Peer RPCs this node sent (requests only), for `/status`.
    rpcs_sent: AtomicU64,
    /// Peer RPCs this node answered.
    rpcs_received: AtomicU64,
    /// Log entries applied to the state machine since start.
    entries_applied: AtomicU64,
    shutdown: AtomicBool,
    /// When the node started (for `/status`).
    started: Instant,
    /// When clients last sent a request (paces the `http-kick` thread).
    client_activity: pool_kick::Activity,
}

/// A running node: its threads and shared state.
pub struct Server {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    http: Option<Arc<tiny_http::Server>>,
}

impl Server {
    /// Starts a node over HTTP: binds `config.addr`, starts every thread, over the storage
    /// [`crate::storage::open`] returned (without a snapshot store the node never snapshots).
    pub fn start(config: ServerConfig, storage: NodeStorage) -> Result<Server> {
        let http = tiny_http::Server::http(&config.addr)
            .map_err(|e| Error::Unavailable(format!("cannot listen on {}: {e}", config.addr)))?;
        let transport = Arc::new(peer::HttpTransport::new(config.rpc_timeout));
        let mut server = Self::start_with_transport(config, storage, transport)?;
        let http = Arc::new(http);
        for i in 0..server.shared.config.http_threads.max(1) {
            let (shared, http) = (server.shared.clone(), http.clone());
            server.threads.push(spawn(format!("http-{i}"), move || http::serve(&shared, &http))?);
        }
        // Works around tiny_http's pool leaving new connections unread (see `pool_kick`).
        if let Some(addr) = http.server_addr().to_ip() {
            let (shared, target) = (server.shared.clone(), pool_kick::kick_target(addr));
            server
                .threads
                .push(spawn("http-kick".into(), move || pool_kick::run(&shared, target))?);
        }
        server.http = Some(http);
        Ok(server)
    }

    /// Starts a node's core threads over any transport (no HTTP listener: tests call
    /// [`Shared`] methods directly, e.g. through [`peer::LocalTransport`]).
    pub fn start_with_transport(
        config: ServerConfig,
        storage: NodeStorage,
        transport: Arc<dyn Transport>,
    ) -> Result<Server> {
        let NodeStorage { log, syncer, snapshots, report: _ } = storage;
        let node = RaftNode::new(config.raft_config(), log)?;
        // Recovery: the state machine starts from the latest snapshot, and the log replays the rest
        // as the leader tells us what is committed.
        let snapshots = snapshots.map(Arc::new);
        let kv = snapshot::load_state_machine(node.storage().snapshot(), snapshots.as_deref())?;
        let snapshot_state = snapshot::SnapshotState::new(kv.applied_index());
        let mut peer_rx = BTreeMap::new();
        let mut peer_tx = BTreeMap::new();
        for id in config.peers.keys() {
            let (tx, rx) = bounded(64);
            peer_tx.insert(id.clone(), tx);
            peer_rx.insert(id.clone(), rx);
        }
        let (apply_tx, apply_rx) = unbounded();
        let (sync_tx, sync_rx) = unbounded();
        let shared = Arc::new(Shared {
            raft: Mutex::new(node),
            kv: RwLock::new(kv),
            pending: Mutex::new(Pending::default()),
            syncer,
            peer_tx,
            apply_tx,
            snapshots,
            snapshot_state: Mutex::new(snapshot_state),
            sync_tx,
            next_read_id: AtomicU64::new(1),
            rpcs_sent: AtomicU64::new(0),
            rpcs_received: AtomicU64::new(0),
            entries_applied: AtomicU64::new(0),
            shutdown: AtomicBool::new(false),
            started: Instant::now(),
            client_activity: pool_kick::Activity::new(),
            config,
        });
        let mut threads = Vec::new();
        for (id, rx) in peer_rx {
            let addr = shared.config.peers.get(&id).cloned().unwrap_or_default();
            let (s, t) = (shared.clone(), transport.clone());
            threads.push(spawn(format!("peer-{id}"), move || s.run_peer(&id, &addr, &rx, &*t))?);
        }
        let s = shared.clone();
        threads.push(spawn("apply".into(), move || s.run_apply(&apply_rx))?);
        let s = shared.clone();
        threads.push(spawn("sync".into(), move || s.run_sync(&sync_rx))?);
        let s = shared.clone();
        threads.push(spawn("ticker".into(), move || s.run_ticker())?);
        Ok(Server { shared, threads, http: None })
    }

    /// The shared state (for handlers and tests).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stops every thread and waits for them.
    pub fn stop(mut self) {
        self.stop_threads();
    }

    fn stop_threads(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        if let Some(http) = &self.http {
            http.unblock();
            for _ in 0..self.shared.config.http_threads {
                http.unblock();
            }
        }
        // A waiting write is in the log already and may still commit (the followers may have it):
        // its outcome is unknown. A waiting read has returned nothing: retrying it is safe.
        self.shared.pending.lock().fail_all(
            Error::OutcomeUnknown(
                "node is shutting down; the write was proposed and may still be committed".into(),
            ),
            Error::Unavailable("node is shutting down".into()),
        );
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(f)
        .map_err(|e| Error::Internal(format!("cannot start thread {name}: {e}")))
}

/// The result of a successful write.
#[derive(Debug, Clone, Copy)]
pub struct WriteOk {
    /// Log index of the entry.
    pub index: Index,
    /// Term of the entry.
    pub term: Term,
}

/// Status fields for `/status`.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusView {
    /// Node id.
    pub id: NodeId,
    /// This node leads.
    pub is_leader: bool,
    /// Current term.
    pub term: Term,
    /// follower / candidate / leader.
    pub role: &'static str,
    /// Known leader id.
    pub leader: Option<NodeId>,
    /// Known leader address.
    pub leader_addr: Option<String>,
    /// Commit index.
    pub commit_index: Index,
    /// Applied to the state machine.
    pub last_applied: Index,
    /// Last log index.
    pub last_log_index: Index,
    /// Keys in the store.
    pub keys: usize,
    /// Peers: id -> address.
    pub peers: BTreeMap<NodeId, String>,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Peer RPCs sent since start.
    pub rpcs_sent: u64,
    /// Peer RPCs answered since start.
    pub rpcs_received: u64,
    /// fsyncs of this node's storage since start.
    pub fsyncs: u64,
    /// Entries applied to the state machine since start.
    pub entries_applied: u64,
    /// Index of the first entry still in the log.
    pub first_log_index: Index,
    /// Index of the latest snapshot (0: none).
    pub snapshot_index: Index,
    /// On the leader: each follower's replication progress.
    pub progress: BTreeMap<NodeId, crate::raft::PeerProgress>,
}

impl Shared {
    fn is_shutdown(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    /// Address of a node id (ours or a peer's).
    pub fn addr_of(&self, id: &NodeId) -> Option<String> {
        if *id == self.config.id {
            Some(self.config.addr.clone())
        } else {
            self.config.peers.get(id).cloned()
        }
    }

    /// Sends what can leave now, and queues applies — called with the Raft lock held; nothing here
    /// blocks. Returns the rest of the output for [`Shared::finish`] after unlocking.
    fn route(&self, node: &mut RaftNode, mut out: Output) -> Output {
        for env in out.messages.drain(..) {
            let Some(tx) = self.peer_tx.get(&env.to) else { continue };
            let carries_entries =
                matches!(&env.message, Message::AppendEntries(a) if !a.entries.is_empty());
            let to = env.to.clone();
            if let Err(TrySendError::Full(_)) = tx.try_send(env) {
                log::debug!("queue to {to} is full: message dropped");
                // The peer is slow or gone; its queue is full. Forget the request so the core
                // resends from the last known match when the peer answers again.
                if carries_entries {
                    node.report_unreachable(&to);
                }
            }
        }
        if !out.apply.is_empty() {
            let _ = self.apply_tx.send(ApplyMsg::Entries(std::mem::take(&mut out.apply)));
        }
        if let Some(meta) = out.restore.take() {
            let _ = self.apply_tx.send(ApplyMsg::Restore(meta));
        }
        if !out.reads.is_empty() || !out.aborted_reads.is_empty() {
            let mut pending = self.pending.lock();
            for r in out.reads.drain(..) {
                pending.read_confirmed(r.id, r.index);
            }
            for id in out.aborted_reads.drain(..) {
                pending.read_aborted(id);
            }
        }
        out
    }

    /// After unlocking: hand storage syncs and the messages waiting on them to the sync thread.
    fn finish(&self, out: Output) {
        if out.sync.is_some() || !out.after_sync.is_empty() {
            let _ = self.sync_tx.send(SyncJob { output: out });
        }
    }

    /// Lock, run `f` on the node, route its output, unlock, finish.
    fn with_node<T>(&self, f: impl FnOnce(&mut RaftNode) -> Result<(T, Output)>) -> Result<T> {
        let (value, rest) = {
            let mut node = self.raft.lock();
            let (value, out) = f(&mut node)?;
            let rest = self.route(&mut node, out);
            (value, rest)
        };
        self.finish(rest);
        Ok(value)
    }

    fn fatal(&self, e: &Error) -> ! {
        log::error!("{}: fatal error in the consensus core: {e}", self.config.id);
        // A storage failure leaves us unable to keep Raft's promises: stop, loudly, rather than
        // serve with a log we cannot trust. The operator restarts the node.
        std::process::exit(2);
    }

    // ----- threads ------------------------------------------------------------------------------

    fn run_ticker(&self) {
        let tick = self.config.tick;
        let mut next = Instant::now() + tick;
        while !self.is_shutdown() {
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
            next += tick;
            // If we fell far behind (a stalled machine), do not replay a burst of ticks.
            if Instant::now() > next + tick * 10 {
                next = Instant::now() + tick;
            }
            if let Err(e) = self.with_node(|n| Ok(((), n.tick()?))) {
                self.fatal(&e);
            }
        }
    }

    fn run_peer(
        &self,
        id: &NodeId,
        addr: &str,
        rx: &Receiver<Envelope>,
        transport: &dyn Transport,
    ) {
        while !self.is_shutdown() {
            let Ok(env) = rx.recv_timeout(Duration::from_millis(100)) else { continue };
            self.rpcs_sent.fetch_add(1, Ordering::Relaxed);
            let result = match &env.message {
                Message::InstallSnapshot(m) => {
                    log::debug!(
                        "peer thread for {id} takes InstallSnapshot {}",
                        m.last_included_index
                    );
                    let meta =
                        SnapshotMeta { index: m.last_included_index, term: m.last_included_term };
                    self.send_snapshot(addr, &env, meta, transport)
                }
                _ => transport.call(addr, &env),
            };
            match result {
                Ok(None) => log::debug!("{id} did not answer {:?}", env.message),
                Ok(Some(reply)) => {
                    if reply.from != *id || reply.to != self.config.id {
                        log::warn!("{addr} answered as {} to {}; ignored", reply.from, reply.to);
                        continue;
                    }
                    match self.with_node(|n| Ok(((), n.step(reply)?))) {
                        Ok(()) => {}
                        Err(Error::BadRequest(m)) => {
                            log::warn!("ignoring a bad answer from {id}: {m}")
                        }
                        Err(e) => self.fatal(&e),
                    }
                }
                Err(e) => {
                    log::debug!("RPC to {id} at {addr}: {e}");
                    // Do not spin on a dead peer: what is queued is stale by now. Drop it *before*
                    // telling the core, so whatever the core sends after hearing of the failure
                    // (a fresh probe, a snapshot it now marks as in flight) is not dropped too.
                    while rx.try_recv().is_ok() {}
                    self.raft.lock().report_unreachable(id);
                    std::thread::sleep(self.config.heartbeat.min(Duration::from_millis(50)));
                }
            }
        }
    }

    fn run_apply(self: &Arc<Self>, rx: &Receiver<ApplyMsg>) {
        while !self.is_shutdown() {
            let Ok(first) = rx.recv_timeout(Duration::from_millis(100)) else { continue };
            // Take whatever else is queued, so one state-machine lock covers a burst.
            let mut msgs = vec![first];
            while let Ok(more) = rx.try_recv() {
                msgs.push(more);
            }
            for msg in msgs {
                match msg {
                    ApplyMsg::Entries(batch) => self.apply_entries(&batch),
                    ApplyMsg::Restore(meta) => self.restore_snapshot(meta),
                }
            }
            self.maybe_snapshot();
        }
    }

    fn apply_entries(&self, batch: &[Entry]) {
        let applied = {
            let mut kv = self.kv.write();
            for entry in batch {
                if let Err(e) = kv.apply(entry) {
                    self.fatal(&e);
                }
            }
            // Fold in the writes made during a finished snapshot (a no-op otherwise).
            kv.try_merge();
            kv.applied_index()
        };
        self.entries_applied.fetch_add(batch.len() as u64, Ordering::Relaxed);
        let mut pending = self.pending.lock();
        for entry in batch {
            pending.applied_entry(entry.index, entry.term);
        }
        pending.advance_applied(applied);
    }

    fn run_sync(&self, rx: &Receiver<SyncJob>) {
        while !self.is_shutdown() {
            let Ok(job) = rx.recv_timeout(Duration::from_millis(100)) else { continue };
            let mut jobs = vec![job];
            while let Ok(more) = rx.try_recv() {
                jobs.push(more);
            }
            let seq = jobs.iter().filter_map(|j| j.output.sync.map(|s| s.seq)).max().unwrap_or(0);
            if let Err(e) = self.syncer.sync_through(seq) {
                self.fatal(&e);
            }
            let result = self.with_node(|node| {
                let mut out = Output::default();
                for job in &jobs {
                    if let Some(point) = job.output.sync {
                        out.extend(node.persisted(point.index, point.term)?);
                    }
                }
                Ok(((), out))
            });
            if let Err(e) = result {
                self.fatal(&e);
            }
            // Messages that waited for the disk (a candidate's RequestVotes).
            for job in jobs {
                for env in job.output.after_sync {
                    if let Some(tx) = self.peer_tx.get(&env.to) {
                        let _ = tx.try_send(env);
                    }
                }
            }
        }
    }

    // ----- client operations ----------------------------------------------------------------------

    /// Proposes a command and waits until it is applied (200), replaced (503) or the wait times
    /// out (504). Not the leader: 503 with a hint (the HTTP layer forwards instead).
    pub fn write(&self, command: &Command) -> Result<WriteOk> {
        let (tx, rx) = bounded(1);
        let index = self.with_node(|node| {
            let (index, term, out) = node.propose(command.encode())?;
            // Registered under the Raft lock: the entry cannot be applied before we wait for it.
            self.pending.lock().add_write(index, term, tx);
            Ok((index, out))
        })?;
        match rx.recv_timeout(self.config.request_timeout) {
            Ok(Ok((index, term))) => Ok(WriteOk { index, term }),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                self.pending.lock().remove_write(index);
                Err(Error::OutcomeUnknown(format!(
                    "the write was proposed at index {index} but not seen committed within {:?}; \
                     it may or may not apply",
                    self.config.request_timeout
                )))
            }
        }
    }

    /// Waits until a read of the state machine is linearizable (ReadIndex through the leader).
    pub fn linearizable_barrier(&self) -> Result<()> {
        let id = self.next_read_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = bounded(1);
        self.pending.lock().add_read(id, tx);
        let started = self.with_node(|node| Ok(((), node.read(id)?)));
        if let Err(e) = started {
            self.pending.lock().remove_read(id);
            return Err(e);
        }
        match rx.recv_timeout(self.config.request_timeout) {
            Ok(result) => result.map(|_| ()),
            Err(_) => {
                self.pending.lock().remove_read(id);
                Err(Error::Unavailable(format!(
                    "could not confirm leadership with a majority within {:?}",
                    self.config.request_timeout
                )))
            }
        }
    }

    /// Runs `f` on the state machine.
    pub fn with_kv<T>(&self, f: impl FnOnce(&KvStore) -> T) -> T {
        f(&self.kv.read())
    }

    /// The node's status.
    pub fn status(&self) -> StatusView {
        let s = self.raft.lock().status();
        // One read guard: parking_lot's RwLock is fair, so a second `read()` while holding one
        // blocks if the apply thread is waiting to write, and the two wait for each other forever.
        let (last_applied, keys) = {
            let kv = self.kv.read();
            (kv.applied_index(), kv.len())
        };
        StatusView {
            is_leader: s.role == "leader",
            leader_addr: s.leader.as_ref().and_then(|l| self.addr_of(l)),
            id: s.id,
            term: s.term,
            role: s.role,
            leader: s.leader,
            commit_index: s.commit_index,
            last_applied,
            last_log_index: s.last_log_index,
            keys,
            peers: self.config.peers.clone(),
            uptime_secs: self.started.elapsed().as_secs(),
            rpcs_sent: self.rpcs_sent.load(Ordering::Relaxed),
            rpcs_received: self.rpcs_received.load(Ordering::Relaxed),
            fsyncs: self.syncer.fsync_count(),
            entries_applied: self.entries_applied.load(Ordering::Relaxed),
            first_log_index: s.first_log_index,
            snapshot_index: s.snapshot.map_or(0, |m| m.index),
            progress: s.progress,
        }
    }

    /// The leader's address, if another node leads.
    pub fn leader_addr(&self) -> Option<String> {
        let node = self.raft.lock();
        if node.is_leader() {
            return None;
        }
        node.leader().and_then(|l| self.addr_of(&l))
    }
}

impl RpcHandler for Shared {
    /// A peer's request: step it, then answer with the response once what it promises is durable.
    /// `None` when the core chose not to answer (a vote request ignored while a leader is alive).
    fn handle_rpc(&self, envelope: Envelope) -> Result<Option<Envelope>> {
        if envelope.to != self.config.id {
            return Err(Error::BadRequest(format!(
                "message for {:?} sent to {:?}",
                envelope.to, self.config.id
            )));
        }
        if !self.config.peers.contains_key(&envelope.from) {
            return Err(Error::BadRequest(format!(
                "{:?} is not a member of this cluster",
                envelope.from
            )));
        }
        if envelope.message.is_response() {
            return Err(Error::BadRequest("expected a request, got a response".into()));
        }
        self.rpcs_received.fetch_add(1, Ordering::Relaxed);
        if let Message::InstallSnapshot(m) = &envelope.message {
            // The snapshot's bytes came in chunks; they must be complete and intact before the
            // core may act on them.
            self.accept_snapshot_file(SnapshotMeta {
                index: m.last_included_index,
                term: m.last_included_term,
            })?;
        }
        let from = envelope.from.clone();
        let (reply, rest) = {
            let mut node = self.raft.lock();
            let mut out = match node.step(envelope) {
                Ok(out) => out,
                Err(e @ Error::BadRequest(_)) => return Err(e),
                Err(e) => self.fatal(&e),
            };
            let is_reply = |m: &Envelope| m.to == from && m.message.is_response();
            let reply = match out.after_sync.iter().position(is_reply) {
                Some(p) => Some(out.after_sync.remove(p)),
                None => out.messages.iter().position(is_reply).map(|p| out.messages.remove(p)),
            };
            let rest = self.route(&mut node, out);
            (reply, rest)
        };
        let sync = rest.sync;
        self.finish(rest);
        // The reply may promise durable state (a vote, stored entries): wait for the disk.
        // Concurrent handlers share fsyncs.
        if let Some(point) = sync {
            self.syncer.sync_through(point.seq).unwrap_or_else(|e| self.fatal(&e));
        }
        Ok(reply)
    }

    fn handle_snapshot_chunk(
        &self,
        from: &str,
        meta: SnapshotMeta,
        offset: u64,
        total: u64,
        bytes: &[u8],
    ) -> Result<u64> {
        self.receive_snapshot_chunk(from, meta, offset, total, bytes)
    }
}
