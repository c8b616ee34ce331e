//! `RaftNode`: the whole consensus algorithm as a deterministic state machine.
//!
//! Inputs: [`RaftNode::step`] (a message from a peer), [`RaftNode::tick`] (logical time passes),
//! [`RaftNode::propose`] (a client command), [`RaftNode::read`] (a linearizable read),
//! [`RaftNode::persisted`] (the shell synced storage) and [`RaftNode::report_unreachable`].
//! Every input returns an [`Output`] saying what must happen next. Nothing here blocks.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::log::RaftLog;
use super::role::{Candidate, Follower, Inflight, Leader, PendingRead, Progress, Role};
use crate::error::{Error, Result};
use crate::raft::Storage;
use crate::raft::{
    AppendEntries, AppendEntriesResponse, Entry, Envelope, HardState, Index, InstallSnapshot,
    InstallSnapshotResponse, Message, NodeId, RequestVote, RequestVoteResponse, SnapshotMeta, Term,
};

/// Static configuration of one node. Time is in ticks; the shell decides how long a tick is.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's id.
    pub id: NodeId,
    /// The other members of the cluster (not including `id`).
    pub peers: Vec<NodeId>,
    /// A leader sends heartbeats every this many ticks.
    pub heartbeat_ticks: u64,
    /// Election timeouts are drawn uniformly from `election_ticks_min..election_ticks_max`.
    pub election_ticks_min: u64,
    /// Upper bound (exclusive) of the election timeout.
    pub election_ticks_max: u64,
    /// An AppendEntries unanswered for this many ticks is presumed lost and resent.
    pub rpc_timeout_ticks: u64,
    /// Most entries in one AppendEntries.
    pub max_append_entries: usize,
    /// Most bytes of entries in one AppendEntries (at least one entry is always sent).
    pub max_append_bytes: usize,
    /// A leader that has not heard from a majority for an election timeout steps down (§6.2 of
    /// the thesis: "check quorum"), so a partitioned leader stops accepting work. With it, a node
    /// that heard from a leader less than a minimum election timeout ago ignores RequestVotes
    /// (§6 of the paper, end), so a removed or cut-off node cannot depose a working leader.
    pub check_quorum: bool,
    /// Run a PreVote round before each real election (thesis §9.6).
    pub pre_vote: bool,
    /// Seed of the RNG that randomises election timeouts.
    pub seed: u64,
}

impl Config {
    /// Defaults for a 10 ms tick: heartbeat 50 ms, election timeout 300–600 ms.
    pub fn new(id: impl Into<NodeId>, peers: Vec<NodeId>) -> Self {
        Config {
            id: id.into(),
            peers,
            heartbeat_ticks: 5,
            election_ticks_min: 30,
            election_ticks_max: 60,
            rpc_timeout_ticks: 30,
            max_append_entries: 4096,
            max_append_bytes: 4 << 20,
            check_quorum: true,
            pre_vote: true,
            seed: 0,
        }
    }

    /// Checks the configuration for values that cannot work.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::BadRequest(format!("invalid Raft configuration: {m}")));
        if self.heartbeat_ticks == 0 {
            return bad("heartbeat must be at least one tick");
        }
        if self.election_ticks_min <= self.heartbeat_ticks {
            return bad("election timeout must be longer than the heartbeat interval");
        }
        if self.election_ticks_max <= self.election_ticks_min {
            return bad("election timeout range is empty");
        }
        if self.peers.contains(&self.id) {
            return bad("a node cannot be its own peer");
        }
        let unique: BTreeSet<_> = self.peers.iter().collect();
        if unique.len() != self.peers.len() {
            return bad("duplicate peer id");
        }
        if self.max_append_entries == 0 {
            return bad("max_append_entries must be at least 1");
        }
        Ok(())
    }
}

/// When the shell must make storage durable, and what to tell the node afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncPoint {
    /// Sync storage through this write sequence number ([`Storage::write_seq`]).
    pub seq: u64,
    /// Then call [`RaftNode::persisted`] with this index and term (the log's last entry when the
    /// output was made).
    pub index: Index,
    /// Term of the entry at `index`.
    pub term: Term,
}

/// A read that may now be served: once the state machine has applied `index`, reading it is
/// linearizable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadState {
    /// The id given to [`RaftNode::read`].
    pub id: u64,
    /// Serve the read once `last_applied >= index`.
    pub index: Index,
}

/// What a node wants done after an input. The shell acts on it *after* releasing the node's lock.
#[derive(Debug, Default)]
pub struct Output {
    /// Messages that may be sent right away (a leader's AppendEntries do not wait for its own disk).
    pub messages: Vec<Envelope>,
    /// Messages that promise something about durable state (votes, acknowledgements, a candidate's
    /// RequestVote after voting for itself): send only after syncing through `sync`.
    pub after_sync: Vec<Envelope>,
    /// Present when storage was written, or when `after_sync` is not empty.
    pub sync: Option<SyncPoint>,
    /// Newly committed entries, in index order: apply each exactly once.
    pub apply: Vec<Entry>,
    /// Reads whose leadership check passed.
    pub reads: Vec<ReadState>,
    /// Reads that can no longer be confirmed (this node stopped leading): answer "retry".
    pub aborted_reads: Vec<u64>,
    /// A leader's snapshot was installed: load the state machine from the snapshot received for
    /// this meta (after applying `apply`, before anything later).
    pub restore: Option<SnapshotMeta>,
}

impl Output {
    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
            && self.after_sync.is_empty()
            && self.sync.is_none()
            && self.apply.is_empty()
            && self.reads.is_empty()
            && self.aborted_reads.is_empty()
            && self.restore.is_none()
    }

    /// Appends another output's work to this one, keeping the order.
    pub fn extend(&mut self, other: Output) {
        self.messages.extend(other.messages);
        self.after_sync.extend(other.after_sync);
        if other.sync.is_some() {
            self.sync = other.sync;
        }
        self.apply.extend(other.apply);
        self.reads.extend(other.reads);
        self.aborted_reads.extend(other.aborted_reads);
        if other.restore.is_some() {
            self.restore = other.restore;
        }
    }
}

/// A snapshot of the node's state for `/status` and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// This node.
    pub id: NodeId,
    /// `current_term`.
    pub term: Term,
    /// "follower", "candidate" or "leader".
    pub role: &'static str,
    /// The leader this node knows of in `term` (itself when leading).
    pub leader: Option<NodeId>,
    /// `commit_index`.
    pub commit_index: Index,
    /// `last_applied` (handed to the state machine).
    pub last_applied: Index,
    /// Index of the last log entry.
    pub last_log_index: Index,
    /// Term of the last log entry.
    pub last_log_term: Term,
    /// Index of the first entry still in the log (earlier ones are in the snapshot).
    pub first_log_index: Index,
    /// The latest snapshot.
    pub snapshot: Option<SnapshotMeta>,
    /// On a leader: what it knows of each follower (`next_index`, `match_index`, whether a
    /// request or a snapshot is in flight).
    pub progress: BTreeMap<NodeId, PeerProgress>,
}

/// A leader's view of one follower, for `/status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerProgress {
    /// Next entry to send.
    pub next_index: Index,
    /// Highest entry known to be stored there.
    pub match_index: Index,
    /// An AppendEntries (or snapshot) awaits its answer.
    pub inflight: bool,
    /// Index of the snapshot being sent, if any.
    pub snapshot: Option<Index>,
}

/// One Raft node: Figure 2 as code.
pub struct RaftNode {
    config: Config,
    /// Persistent: latest term seen (mirrors storage's hard state).
    current_term: Term,
    /// Persistent: who got our vote in `current_term`.
    voted_for: Option<NodeId>,
    /// The log, `commit_index` and `last_applied`.
    log: RaftLog,
    /// Current role and its data.
    role: Role,
    /// Logical clock: ticks since start.
    ticks: u64,
    /// Ticks since we last heard from a leader or granted a vote (followers, candidates).
    election_elapsed: u64,
    /// This round's randomised election timeout.
    election_timeout: u64,
    rng: StdRng,
    /// Output under construction.
    out: Output,
    /// `storage.write_seq()` when the last output was handed out (to notice new writes).
    seen_write_seq: u64,
}

impl RaftNode {
    /// Starts a node as a follower, from whatever its storage holds (a restart after a crash is
    /// just this).
    pub fn new(config: Config, storage: Box<dyn Storage>) -> Result<Self> {
        config.validate()?;
        let hard_state = storage.hard_state();
        let seen_write_seq = storage.write_seq();
        let mut node = RaftNode {
            rng: StdRng::seed_from_u64(config.seed),
            current_term: hard_state.current_term,
            voted_for: hard_state.voted_for,
            log: RaftLog::new(storage),
            role: Role::Follower(Follower::default()),
            ticks: 0,
            election_elapsed: 0,
            election_timeout: 0,
            out: Output::default(),
            seen_write_seq,
            config,
        };
        node.reset_election_timeout();
        Ok(node)
    }

    // ----- inputs -------------------------------------------------------------------------------

    /// Logical time passes by one tick.
    pub fn tick(&mut self) -> Result<Output> {
        self.ticks += 1;
        if let Role::Leader(_) = self.role {
            self.tick_leader()?;
        } else {
            self.election_elapsed += 1;
            if self.election_elapsed >= self.election_timeout {
                if self.config.pre_vote {
                    self.become_pre_candidate()?;
                } else {
                    self.become_candidate()?;
                }
            }
        }
        Ok(self.take_output())
    }

    /// A message from a peer.
    pub fn step(&mut self, envelope: Envelope) -> Result<Output> {
        self.step_inner(envelope)?;
        Ok(self.take_output())
    }

    /// Proposes a client command. On the leader it is appended and replicated; elsewhere it is
    /// refused with [`Error::Unavailable`] (the caller forwards to the leader).
    /// Returns where the command will be committed if all goes well.
    pub fn propose(&mut self, command: Vec<u8>) -> Result<(Index, Term, Output)> {
        if !matches!(self.role, Role::Leader(_)) {
            return Err(self.not_leader_error());
        }
        if command.is_empty() {
            return Err(Error::BadRequest("empty commands are reserved for no-ops".into()));
        }
        let index = self.append_own_entry(command)?;
        self.broadcast_append(false)?;
        Ok((index, self.current_term, self.take_output()))
    }

    /// Starts a linearizable read (ReadIndex): once a majority confirms this node still leads,
    /// `Output::reads` carries `id` and the index the state machine must reach.
    pub fn read(&mut self, id: u64) -> Result<Output> {
        let commit_index = self.log.commit_index;
        let Role::Leader(leader) = &mut self.role else {
            return Err(self.not_leader_error());
        };
        let seq = leader.seq + 1;
        leader.reads.push_back(PendingRead { id, seq, index: commit_index });
        for peer in self.config.peers.clone() {
            self.maybe_send_append(&peer, false)?;
        }
        self.check_reads();
        Ok(self.take_output())
    }

    /// The shell synced storage through a [`SyncPoint`]: the log up to `index` (with `term`) is
    /// durable, so a leader may count itself towards committing it.
    pub fn persisted(&mut self, index: Index, term: Term) -> Result<Output> {
        if self.log.term_at(index) == Some(term)
            && let Role::Leader(leader) = &mut self.role
            && index > leader.self_match
        {
            leader.self_match = index;
            self.maybe_commit()?;
        }
        Ok(self.take_output())
    }

    /// The shell could not deliver to `peer` (connection refused, timeout). The leader stops
    /// waiting for the lost request and will probe again from the last known match.
    pub fn report_unreachable(&mut self, peer: &NodeId) {
        if let Role::Leader(leader) = &mut self.role
            && let Some(p) = leader.progress.get_mut(peer)
        {
            p.inflight = None;
            p.pending_snapshot = None;
            p.next_index = p.match_index + 1;
        }
    }

    /// The state machine saved a snapshot through `meta` (its data is durable): record it, and
    /// compact the log up to `meta.index - trailing`, keeping `trailing` entries so a follower that
    /// lags slightly still catches up from the log rather than with a whole snapshot (§7).
    pub fn snapshot_taken(&mut self, meta: SnapshotMeta, trailing: u64) -> Result<()> {
        if meta.index > self.log.last_applied {
            return Err(Error::Internal(format!(
                "snapshot at {} is ahead of the applied index {}",
                meta.index, self.log.last_applied
            )));
        }
        if self.log.storage.snapshot().is_some_and(|s| s.index >= meta.index) {
            return Ok(());
        }
        self.log.storage.set_snapshot(meta)?;
        let through = meta.index.saturating_sub(trailing);
        if through >= self.log.first_index() {
            self.log.storage.compact(through)?;
        }
        Ok(())
    }

    // ----- queries ------------------------------------------------------------------------------

    /// This node's id.
    pub fn id(&self) -> &NodeId {
        &self.config.id
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// `current_term`.
    pub fn term(&self) -> Term {
        self.current_term
    }

    /// True when leading.
    pub fn is_leader(&self) -> bool {
        matches!(self.role, Role::Leader(_))
    }

    /// The leader as far as this node knows.
    pub fn leader(&self) -> Option<NodeId> {
        match &self.role {
            Role::Leader(_) => Some(self.config.id.clone()),
            Role::Follower(f) => f.leader.clone(),
            Role::Candidate(_) => None,
        }
    }

    /// The log (read-only), for tests and inspection.
    pub fn log(&self) -> &RaftLog {
        &self.log
    }

    /// Storage (read-only), e.g. to clone a [`crate::raft::MemStorage`] in simulations.
    pub fn storage(&self) -> &dyn Storage {
        self.log.storage.as_ref()
    }

    /// Stops the node, handing back its storage (a crash in simulations, then a restart with
    /// [`RaftNode::new`]).
    pub fn into_storage(self) -> Box<dyn Storage> {
        self.log.storage
    }

    /// Everything `/status` shows.
    pub fn status(&self) -> Status {
        Status {
            id: self.config.id.clone(),
            term: self.current_term,
            role: self.role.name(),
            leader: self.leader(),
            commit_index: self.log.commit_index,
            last_applied: self.log.last_applied,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            first_log_index: self.log.first_index(),
            snapshot: self.log.storage.snapshot(),
            progress: match &self.role {
                Role::Leader(l) => l
                    .progress
                    .iter()
                    .map(|(id, p)| {
                        let view = PeerProgress {
                            next_index: p.next_index,
                            match_index: p.match_index,
                            inflight: p.inflight.is_some(),
                            snapshot: p.pending_snapshot,
                        };
                        (id.clone(), view)
                    })
                    .collect(),
                _ => BTreeMap::new(),
            },
        }
    }

    // ----- role transitions ---------------------------------------------------------------------

    /// Becomes a follower of `term` (§5.1: a higher term always wins).
    ///
    /// The election timer keeps running: Figure 2 restarts it only on an AppendEntries from the
    /// current leader or on granting a vote, and the callers that see those do so. Restarting it
    /// on any higher term would let a candidate whose log is too stale to win hold back, again
    /// and again, the nodes that could win. Only a deposed leader, whose timer was stopped, starts
    /// a fresh one.
    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) -> Result<()> {
        if term > self.current_term {
            self.current_term = term;
            self.voted_for = None;
            self.save_hard_state()?;
        }
        if let Role::Leader(leader_state) = &mut self.role {
            self.out.aborted_reads.extend(leader_state.reads.drain(..).map(|r| r.id));
            self.election_elapsed = 0;
            self.reset_election_timeout();
        }
        self.role = Role::Follower(Follower { leader });
        Ok(())
    }

    /// §5.2: increment the term, vote for ourselves, ask everyone else.
    fn become_candidate(&mut self) -> Result<()> {
        self.current_term += 1;
        self.voted_for = Some(self.config.id.clone());
        self.save_hard_state()?;
        self.become_campaigner(false);
        log::info!("{} starts an election for term {}", self.config.id, self.current_term);
        if self.quorum() == 1 {
            return self.become_leader();
        }
        let request = Message::RequestVote(RequestVote {
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            pre_vote: false,
        });
        for peer in self.config.peers.clone() {
            // The vote for ourselves must be durable before anyone can count on it.
            self.send_after_sync(peer, request.clone());
        }
        Ok(())
    }

    /// Thesis §9.6: before disrupting anyone, ask whether a majority would vote for us in the next
    /// term. Nothing is persisted and no term changes; only a successful PreVote round leads to a
    /// real election.
    fn become_pre_candidate(&mut self) -> Result<()> {
        self.become_campaigner(true);
        if self.quorum() == 1 {
            return self.become_candidate();
        }
        let request = Message::RequestVote(RequestVote {
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            pre_vote: true,
        });
        for peer in self.config.peers.clone() {
            let env = Envelope {
                from: self.config.id.clone(),
                to: peer,
                term: self.current_term + 1,
                message: request.clone(),
            };
            self.out.messages.push(env);
        }
        Ok(())
    }

    /// What both kinds of campaign start with: the candidate role with our own vote, a fresh
    /// randomised timeout, and (if we were leading) the end of reads we can no longer confirm.
    fn become_campaigner(&mut self, pre_vote: bool) {
        if let Role::Leader(leader_state) = &mut self.role {
            self.out.aborted_reads.extend(leader_state.reads.drain(..).map(|r| r.id));
        }
        let votes = BTreeSet::from([self.config.id.clone()]);
        self.role = Role::Candidate(Candidate { votes, pre_vote });
        self.election_elapsed = 0;
        self.reset_election_timeout();
    }

    /// True while this node believes a leader is alive: it is the leader, or it heard from one
    /// less than a minimum election timeout ago.
    fn in_lease(&self) -> bool {
        match &self.role {
            Role::Leader(_) => true,
            Role::Follower(f) => {
                f.leader.is_some() && self.election_elapsed < self.config.election_ticks_min
            }
            Role::Candidate(_) => false,
        }
    }

    /// Won the election: set up progress, append a no-op of our term, start replicating (§5.2,
    /// §5.4.2).
    fn become_leader(&mut self) -> Result<()> {
        log::info!("{} is leader of term {}", self.config.id, self.current_term);
        let last = self.log.last_index();
        let progress = self
            .config
            .peers
            .iter()
            .map(|p| {
                let pr = Progress {
                    next_index: last + 1,
                    match_index: 0,
                    inflight: None,
                    acked_seq: 0,
                    recent_active: true,
                    pending_snapshot: None,
                };
                (p.clone(), pr)
            })
            .collect::<BTreeMap<_, _>>();
        self.role = Role::Leader(Leader {
            progress,
            seq: 0,
            // Everything written before our candidacy was synced before our RequestVotes left.
            self_match: last,
            term_start: last + 1,
            reads: VecDeque::new(),
            heartbeat_elapsed: 0,
            quorum_elapsed: 0,
        });
        self.append_own_entry(Vec::new())?;
        self.broadcast_append(false)
    }

    // ----- message handling ---------------------------------------------------------------------

    fn step_inner(&mut self, env: Envelope) -> Result<()> {
        if env.to != self.config.id || !self.config.peers.contains(&env.from) {
            log::warn!("{} drops a message from unknown node {:?}", self.config.id, env.from);
            return Ok(());
        }
        // Malformed input is the sender's problem, reported as such; it never reaches the log.
        env.validate()
            .map_err(|e| Error::BadRequest(format!("invalid message from {}: {e}", env.from)))?;
        // Votes for a later term while a leader is known to be alive are ignored (see
        // `Config::check_quorum`); PreVotes never change anyone's term.
        if let Message::RequestVote(req) = &env.message {
            if env.term > self.current_term && self.config.check_quorum && self.in_lease() {
                log::debug!(
                    "{} ignores {}'s vote request: a leader is alive",
                    self.config.id,
                    env.from
                );
                return Ok(());
            }
            if req.pre_vote {
                let grant = env.term > self.current_term
                    && self.log.is_up_to_date(req.last_log_index, req.last_log_term);
                let term = if grant { env.term } else { self.current_term };
                let message = Message::RequestVoteResponse(RequestVoteResponse {
                    vote_granted: grant,
                    pre_vote: true,
                });
                let reply = Envelope { from: self.config.id.clone(), to: env.from, term, message };
                self.out.messages.push(reply);
                return Ok(());
            }
        }
        if let Message::RequestVoteResponse(resp) = &env.message
            && resp.pre_vote
        {
            return self.handle_pre_vote_response(env.from, env.term, resp.vote_granted);
        }
        // §5.1: a higher term makes us a follower of it first, whatever the message is.
        if env.term > self.current_term {
            let leader = matches!(env.message, Message::AppendEntries(_)).then(|| env.from.clone());
            self.become_follower(env.term, leader)?;
        }
        match env.message {
            Message::RequestVote(req) => self.handle_request_vote(env.from, env.term, req),
            Message::AppendEntries(req) => self.handle_append_entries(env.from, env.term, req),
            // Responses from an older term answer questions we no longer ask.
            Message::RequestVoteResponse(resp) if env.term == self.current_term => {
                self.handle_vote_response(env.from, resp)
            }
            Message::AppendEntriesResponse(resp) if env.term == self.current_term => {
                self.handle_append_response(env.from, resp)
            }
            Message::InstallSnapshot(req) => self.handle_install_snapshot(env.from, env.term, req),
            Message::InstallSnapshotResponse(resp) if env.term == self.current_term => {
                self.handle_snapshot_response(env.from, resp)
            }
            Message::RequestVoteResponse(_)
            | Message::AppendEntriesResponse(_)
            | Message::InstallSnapshotResponse(_) => Ok(()),
        }
    }

    /// RequestVote receiver implementation (Figure 2).
    fn handle_request_vote(&mut self, from: NodeId, term: Term, req: RequestVote) -> Result<()> {
        let can_vote = term == self.current_term
            && (self.voted_for.is_none() || self.voted_for.as_ref() == Some(&from));
        let grant = can_vote && self.log.is_up_to_date(req.last_log_index, req.last_log_term);
        if grant {
            self.voted_for = Some(from.clone());
            self.save_hard_state()?;
            // Granting a vote resets the timer (else we might start a competing election).
            self.election_elapsed = 0;
        }
        let resp = Message::RequestVoteResponse(RequestVoteResponse {
            vote_granted: grant,
            pre_vote: false,
        });
        self.send_after_sync(from, resp);
        Ok(())
    }

    fn handle_pre_vote_response(&mut self, from: NodeId, term: Term, granted: bool) -> Result<()> {
        if !granted {
            // A refusal from a later term is news about that term.
            if term > self.current_term {
                self.become_follower(term, None)?;
            }
            return Ok(());
        }
        let quorum = self.quorum();
        let next_term = self.current_term + 1;
        let Role::Candidate(candidate) = &mut self.role else {
            return Ok(());
        };
        if candidate.pre_vote && term == next_term {
            candidate.votes.insert(from);
            if candidate.votes.len() >= quorum {
                return self.become_candidate();
            }
        }
        Ok(())
    }

    fn handle_vote_response(&mut self, from: NodeId, resp: RequestVoteResponse) -> Result<()> {
        let quorum = self.quorum();
        let Role::Candidate(candidate) = &mut self.role else {
            return Ok(());
        };
        if resp.vote_granted && !candidate.pre_vote {
            candidate.votes.insert(from);
            if candidate.votes.len() >= quorum {
                return self.become_leader();
            }
        }
        Ok(())
    }

    /// AppendEntries receiver implementation (Figure 2), with the rejection hint.
    fn handle_append_entries(
        &mut self,
        from: NodeId,
        term: Term,
        req: AppendEntries,
    ) -> Result<()> {
        let reject = |conflict_term, conflict_index| AppendEntriesResponse {
            success: false,
            match_index: 0,
            conflict_term,
            conflict_index,
            seq: req.seq,
        };
        if term < self.current_term {
            // Rule 1: reply false; our term in the envelope tells the stale leader to step down.
            // seq 0: this answer says nothing about the leader's requests of our term.
            let resp = AppendEntriesResponse { seq: 0, ..reject(None, 0) };
            self.send_after_sync(from, Message::AppendEntriesResponse(resp));
            return Ok(());
        }
        // A candidate that hears from the leader of its own term steps back (§5.2).
        match &mut self.role {
            Role::Follower(f) => f.leader = Some(from.clone()),
            Role::Candidate(_) => self.become_follower(term, Some(from.clone()))?,
            Role::Leader(_) => {
                // Election Safety says this cannot happen; a forged or buggy peer must not crash
                // us, so refuse loudly and keep leading.
                log::error!(
                    "{} leads term {term}, yet {from} claims to lead it too",
                    self.config.id
                );
                let resp = reject(None, 0);
                self.send_after_sync(from, Message::AppendEntriesResponse(resp));
                return Ok(());
            }
        }
        self.election_elapsed = 0;

        // Entries at or below our snapshot are committed, so they match: skip them.
        let snapshot_index = self.log.first_index() - 1;
        let (prev_log_index, prev_log_term, entries) = if req.prev_log_index < snapshot_index {
            let skip = (snapshot_index - req.prev_log_index) as usize;
            if skip > req.entries.len() {
                let resp = AppendEntriesResponse {
                    success: true,
                    match_index: snapshot_index,
                    conflict_term: None,
                    conflict_index: 0,
                    seq: req.seq,
                };
                self.send_after_sync(from, Message::AppendEntriesResponse(resp));
                return Ok(());
            }
            let prev_term = self.log.term_at(snapshot_index).unwrap_or(0);
            (snapshot_index, prev_term, &req.entries[skip..])
        } else {
            (req.prev_log_index, req.prev_log_term, &req.entries[..])
        };

        // Rule 2: the consistency check.
        if !self.log.matches(prev_log_index, prev_log_term) {
            let resp = match self.log.term_at(prev_log_index) {
                None => reject(None, self.log.last_index() + 1),
                Some(t) => reject(Some(t), self.log.first_index_of_term(t, prev_log_index)),
            };
            self.send_after_sync(from, Message::AppendEntriesResponse(resp));
            return Ok(());
        }
        // Rules 3 and 4.
        self.log.append_from_leader(entries)?;
        // Only this far is our log known to equal the leader's; anything after may be stale.
        let match_index = prev_log_index + entries.len() as Index;
        // Rule 5.
        if req.leader_commit > self.log.commit_index {
            let new_commit = req.leader_commit.min(match_index);
            if new_commit > self.log.commit_index {
                self.log.commit_index = new_commit;
                self.emit_committed()?;
            }
        }
        let resp = AppendEntriesResponse {
            success: true,
            match_index,
            conflict_term: None,
            conflict_index: 0,
            seq: req.seq,
        };
        self.send_after_sync(from, Message::AppendEntriesResponse(resp));
        Ok(())
    }

    fn handle_append_response(&mut self, from: NodeId, resp: AppendEntriesResponse) -> Result<()> {
        let last_index = self.log.last_index();
        let Role::Leader(leader) = &mut self.role else {
            return Ok(());
        };
        let Some(progress) = leader.progress.get_mut(&from) else {
            return Ok(());
        };
        progress.recent_active = true;
        // Is this the answer to the latest request this follower answered so far?
        let newest = resp.seq >= progress.acked_seq;
        progress.acked_seq = progress.acked_seq.max(resp.seq);
        if progress.pending_snapshot.is_some() {
            // A snapshot is on its way: this answers an AppendEntries sent before it, and must not
            // touch the snapshot's in-flight slot (clearing it would leave the snapshot marked
            // pending with nothing to time it out: the follower would never be sent anything).
            // It still counts as a heartbeat answer for reads.
            self.check_reads();
            return Ok(());
        }
        if progress.inflight.is_some_and(|f| resp.seq >= f.seq) {
            progress.inflight = None;
        }
        if resp.success {
            // A follower cannot hold more than we sent; never trust a larger claim.
            let claimed = resp.match_index.min(last_index);
            if claimed > progress.match_index {
                progress.match_index = claimed;
            }
            progress.next_index = progress.next_index.max(progress.match_index + 1);
        } else {
            // Fast backtracking (§5.3, end): skip a whole conflicting term per round trip.
            let hint = match resp.conflict_term {
                Some(t) => match self.log.last_index_of_term(t) {
                    Some(i) => i + 1,
                    None => resp.conflict_index,
                },
                None => resp.conflict_index,
            };
            if hint <= progress.match_index && newest {
                // Not a stale rejection: the follower lost entries it had acknowledged (its data
                // dir was wiped, or it ran with --fsync=false). Start over from what it has;
                // lowering match_index only ever makes commits more conservative.
                log::warn!(
                    "{from} no longer holds entries through {} (its log ends before {hint}); \
                     resending",
                    progress.match_index
                );
                progress.match_index = hint.saturating_sub(1);
            }
            // Never back up past what the follower is known to hold (a stale rejection).
            let next = hint.clamp(progress.match_index + 1, last_index + 1);
            if next < progress.next_index {
                progress.next_index = next;
                progress.inflight = None;
            }
        }
        self.maybe_commit()?;
        self.check_reads();
        self.maybe_send_append(&from, false)
    }

    /// InstallSnapshot receiver (Figure 13, simplified: the data arrived whole, beside the RPC).
    fn handle_install_snapshot(
        &mut self,
        from: NodeId,
        term: Term,
        req: InstallSnapshot,
    ) -> Result<()> {
        if term < self.current_term {
            let resp = InstallSnapshotResponse { match_index: 0 };
            self.send_after_sync(from, Message::InstallSnapshotResponse(resp));
            return Ok(());
        }
        match &mut self.role {
            Role::Follower(f) => f.leader = Some(from.clone()),
            Role::Candidate(_) => self.become_follower(term, Some(from.clone()))?,
            Role::Leader(_) => {
                log::error!("{} leads term {term}, yet {from} sent it a snapshot", self.config.id);
                return Ok(());
            }
        }
        self.election_elapsed = 0;
        let meta = SnapshotMeta { index: req.last_included_index, term: req.last_included_term };
        let match_index = if meta.index <= self.log.commit_index {
            // We already have (and applied) everything it covers: committed entries match.
            self.log.commit_index
        } else {
            self.log.storage.install_snapshot(meta)?;
            self.log.commit_index = meta.index;
            self.log.last_applied = meta.index;
            self.out.restore = Some(meta);
            meta.index
        };
        let resp = InstallSnapshotResponse { match_index };
        self.send_after_sync(from, Message::InstallSnapshotResponse(resp));
        Ok(())
    }

    fn handle_snapshot_response(
        &mut self,
        from: NodeId,
        resp: InstallSnapshotResponse,
    ) -> Result<()> {
        let last_index = self.log.last_index();
        let Role::Leader(leader) = &mut self.role else {
            return Ok(());
        };
        let Some(progress) = leader.progress.get_mut(&from) else {
            return Ok(());
        };
        progress.recent_active = true;
        progress.pending_snapshot = None;
        progress.inflight = None;
        let claimed = resp.match_index.min(last_index);
        if claimed > progress.match_index {
            progress.match_index = claimed;
        }
        progress.next_index = progress.match_index + 1;
        self.maybe_commit()?;
        self.check_reads();
        self.maybe_send_append(&from, false)
    }

    // ----- leader work --------------------------------------------------------------------------

    fn tick_leader(&mut self) -> Result<()> {
        let ticks = self.ticks;
        let (heartbeat_ticks, election_ticks, rpc_timeout) = (
            self.config.heartbeat_ticks,
            self.config.election_ticks_min,
            self.config.rpc_timeout_ticks,
        );
        let quorum = self.quorum();
        let check_quorum = self.config.check_quorum;
        let Role::Leader(leader) = &mut self.role else {
            return Ok(());
        };
        // Presume lost an AppendEntries nobody answered: resend from the last known match.
        for p in leader.progress.values_mut() {
            // A snapshot transfer may take a while: give it ten RPC timeouts.
            let timeout = if p.pending_snapshot.is_some() { rpc_timeout * 10 } else { rpc_timeout };
            if p.inflight.is_some_and(|f| ticks - f.sent_at_tick >= timeout) {
                p.inflight = None;
                p.pending_snapshot = None;
                p.next_index = p.match_index + 1;
            }
        }
        leader.quorum_elapsed += 1;
        if leader.quorum_elapsed >= election_ticks {
            leader.quorum_elapsed = 0;
            let active = 1 + leader.progress.values().filter(|p| p.recent_active).count();
            for p in leader.progress.values_mut() {
                p.recent_active = false;
            }
            if check_quorum && active < quorum {
                log::warn!(
                    "{} steps down: heard from only {active} of the {quorum} nodes needed",
                    self.config.id
                );
                let term = self.current_term;
                return self.become_follower(term, None);
            }
        }
        leader.heartbeat_elapsed += 1;
        if leader.heartbeat_elapsed >= heartbeat_ticks {
            leader.heartbeat_elapsed = 0;
            self.broadcast_append(true)?;
        }
        Ok(())
    }

    /// Appends a new entry of our term to our own log.
    fn append_own_entry(&mut self, command: Vec<u8>) -> Result<Index> {
        let index = self.log.last_index() + 1;
        self.log.append(&[Entry { index, term: self.current_term, command }])?;
        Ok(index)
    }

    fn broadcast_append(&mut self, heartbeat: bool) -> Result<()> {
        for peer in self.config.peers.clone() {
            self.maybe_send_append(&peer, heartbeat)?;
        }
        Ok(())
    }

    /// Sends `peer` what it is missing, if nothing is in flight to it; a heartbeat goes out anyway.
    ///
    /// Flow control: one request carrying entries at a time per follower. Entries proposed while it
    /// is in flight wait and leave together in the next one, so under load each round trip (and
    /// each follower fsync) carries a batch, and each entry is sent once.
    fn maybe_send_append(&mut self, peer: &NodeId, heartbeat: bool) -> Result<()> {
        let (last_index, commit_index, ticks) =
            (self.log.last_index(), self.log.commit_index, self.ticks);
        let (max_entries, max_bytes) =
            (self.config.max_append_entries as u64, self.config.max_append_bytes);
        let Role::Leader(leader) = &mut self.role else {
            return Ok(());
        };
        let wants_read_probe = leader.reads.back().map(|r| r.seq);
        let Some(progress) = leader.progress.get_mut(peer) else {
            return Ok(());
        };
        if progress.pending_snapshot.is_some() {
            // Its link is busy with the snapshot; heartbeats would only queue behind it.
            return Ok(());
        }
        if progress.next_index < self.log.first_index() {
            // §7: the entries this follower needs are compacted away: send the snapshot.
            if progress.inflight.is_some() && !heartbeat {
                return Ok(());
            }
            let Some(snapshot) = self.log.storage.snapshot() else {
                return Err(Error::Internal(format!(
                    "{peer} needs compacted entries but there is no snapshot"
                )));
            };
            leader.seq += 1;
            progress.inflight = Some(Inflight { seq: leader.seq, sent_at_tick: ticks });
            progress.pending_snapshot = Some(snapshot.index);
            log::debug!("{} sends snapshot {} to {peer}", self.config.id, snapshot.index);
            let message = Message::InstallSnapshot(InstallSnapshot {
                last_included_index: snapshot.index,
                last_included_term: snapshot.term,
            });
            self.send(peer.clone(), message);
            return Ok(());
        }
        let has_entries = progress.next_index <= last_index;
        let needs_probe = wants_read_probe.is_some_and(|s| progress.acked_seq < s);
        if progress.inflight.is_some() && !heartbeat {
            return Ok(());
        }
        if progress.inflight.is_none() && !has_entries && !needs_probe && !heartbeat {
            return Ok(());
        }
        let prev_log_index = progress.next_index - 1;
        let entries = if progress.inflight.is_none() && has_entries {
            let hi = last_index.min(prev_log_index + max_entries) + 1;
            self.log.entries(progress.next_index, hi, max_bytes)?
        } else {
            Vec::new()
        };
        let Some(prev_log_term) = self.log.term_at(prev_log_index) else {
            return Err(Error::Internal(format!(
                "no term for {peer}'s prev_log_index {prev_log_index}"
            )));
        };
        leader.seq += 1;
        let seq = leader.seq;
        if progress.inflight.is_none() {
            progress.inflight = Some(Inflight { seq, sent_at_tick: ticks });
        }
        // Optimistic: assume it arrives (a rejection or a timeout moves next_index back).
        progress.next_index += entries.len() as Index;
        let message = Message::AppendEntries(AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit: commit_index,
            seq,
        });
        self.send(peer.clone(), message);
        Ok(())
    }

    /// §5.3/§5.4.2: commit the highest index stored durably on a majority, if it is of our term.
    fn maybe_commit(&mut self) -> Result<()> {
        let quorum = self.quorum();
        let Role::Leader(leader) = &self.role else {
            return Ok(());
        };
        let mut matches: Vec<Index> = leader.progress.values().map(|p| p.match_index).collect();
        matches.push(leader.self_match);
        matches.sort_unstable_by(|a, b| b.cmp(a));
        let majority_index = matches[quorum - 1];
        // Figure 8: counting replicas commits only entries of the current term.
        if majority_index > self.log.commit_index
            && self.log.term_at(majority_index) == Some(self.current_term)
        {
            self.log.commit_index = majority_index;
            self.emit_committed()?;
            self.check_reads();
        }
        Ok(())
    }

    /// Hands newly committed entries to the state machine, in order, exactly once.
    fn emit_committed(&mut self) -> Result<()> {
        let (lo, hi) = (self.log.last_applied + 1, self.log.commit_index + 1);
        if lo < hi {
            let entries = self.log.entries(lo, hi, usize::MAX)?;
            self.log.last_applied = self.log.commit_index;
            self.out.apply.extend(entries);
        }
        Ok(())
    }

    /// Releases every read whose heartbeat round a majority has answered.
    fn check_reads(&mut self) {
        let quorum = self.quorum();
        let commit_index = self.log.commit_index;
        let Role::Leader(leader) = &mut self.role else {
            return;
        };
        // Until this term's no-op commits, our commit index may be behind the true one.
        if commit_index < leader.term_start {
            return;
        }
        while let Some(read) = leader.reads.front() {
            let acks = 1 + leader.progress.values().filter(|p| p.acked_seq >= read.seq).count();
            if acks < quorum {
                break;
            }
            let index = read.index.max(leader.term_start);
            self.out.reads.push(ReadState { id: read.id, index });
            leader.reads.pop_front();
        }
    }

    // ----- helpers ------------------------------------------------------------------------------

    /// More than half of the whole cluster, this node included (a 4-node cluster needs 3).
    fn quorum(&self) -> usize {
        let cluster_size = self.config.peers.len() + 1;
        cluster_size / 2 + 1
    }

    fn reset_election_timeout(&mut self) {
        self.election_timeout =
            self.rng.gen_range(self.config.election_ticks_min..self.config.election_ticks_max);
    }

    fn save_hard_state(&mut self) -> Result<()> {
        let hs = HardState { current_term: self.current_term, voted_for: self.voted_for.clone() };
        self.log.storage.save_hard_state(&hs)
    }

    fn envelope(&self, to: NodeId, message: Message) -> Envelope {
        Envelope { from: self.config.id.clone(), to, term: self.current_term, message }
    }

    fn send(&mut self, to: NodeId, message: Message) {
        let env = self.envelope(to, message);
        self.out.messages.push(env);
    }

    fn send_after_sync(&mut self, to: NodeId, message: Message) {
        let env = self.envelope(to, message);
        self.out.after_sync.push(env);
    }

    fn not_leader_error(&self) -> Error {
        match self.leader() {
            Some(l) => Error::Unavailable(format!("not the leader; the leader is {l}")),
            None => Error::Unavailable("no leader is known at the moment; retry".into()),
        }
    }

    /// Hands out the accumulated output, with a sync point if storage changed or messages wait.
    fn take_output(&mut self) -> Output {
        let mut out = std::mem::take(&mut self.out);
        let seq = self.log.storage.write_seq();
        if seq != self.seen_write_seq || !out.after_sync.is_empty() {
            self.seen_write_seq = seq;
            out.sync =
                Some(SyncPoint { seq, index: self.log.last_index(), term: self.log.last_term() });
        }
        out
    }
}
