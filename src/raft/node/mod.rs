//! `RaftNode`: the whole consensus algorithm as a deterministic state machine.
//!
//! Inputs: [`RaftNode::step`] (a message from a peer), [`RaftNode::tick`] (logical time passes),
//! [`RaftNode::propose`] (a client command), [`RaftNode::read`] (a linearizable read),
//! [`RaftNode::persisted`] (the shell synced storage) and [`RaftNode::report_unreachable`].
//! Every input returns an [`Output`] saying what must happen next. Nothing here blocks.
//!
//! The impl is cut by the part of the paper it implements, so each file reads beside one section:
//!
//! | file | what | paper |
//! |---|---|---|
//! | `node/mod.rs` | the node's state, its inputs, message dispatch (§5.1's "higher term wins"), queries | Figure 2 |
//! | `node/election.rs` | timeouts, PreVote, RequestVote, becoming follower / candidate / leader | §5.2, §5.4.1, thesis §9.6 |
//! | `node/replication.rs` | AppendEntries both ways, flow control, fast backtracking, commitment, heartbeats, check quorum | §5.3, §5.4.2, thesis §6.2 |
//! | `node/read.rs` | ReadIndex reads | thesis §6.4 |
//! | `node/snapshot.rs` | recording, sending and installing snapshots | §7 |
//! | `node/membership.rs` | configuration changes, learners, leadership transfer | thesis §4.1–4.2, §3.10 |
//! | `node/recovery.rs` | a survivor of a lost quorum restarts as a one-node cluster (outside Raft, by hand) | §4.1 (why no change can commit without a majority) |

mod election;
mod membership;
mod read;
mod recovery;
mod replication;
mod snapshot;

pub use recovery::ForcedCluster;

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::log::RaftLog;
use super::role::{Follower, Role};
use crate::error::{Error, LeaderHint, Result};
use crate::raft::Storage;
use crate::raft::{
    Config, Configs, Counters, Entry, Envelope, HardState, Index, Membership, Message, NodeId,
    Output, PeerProgress, ReplicationState, Status, SyncPoint, Term,
};

/// One Raft node: Figure 2 as code.
pub struct RaftNode {
    config: Config,
    /// Persistent: latest term seen (mirrors storage's hard state).
    current_term: Term,
    /// Persistent: who got our vote in `current_term`.
    voted_for: Option<NodeId>,
    /// The log, `commit_index` and `last_applied`.
    log: RaftLog,
    /// The configurations in the log: the latest one is in force (thesis §4.1).
    configs: Configs,
    /// Current role and its data.
    role: Role,
    /// Logical clock: ticks since start.
    ticks: u64,
    /// The shell's clock in milliseconds as last given ([`RaftNode::set_clock`]); only lease
    /// reads use it.
    now_ms: u64,
    /// Ticks since we last heard from a leader or granted a vote (followers, candidates).
    election_elapsed: u64,
    /// This round's randomised election timeout.
    election_timeout: u64,
    rng: StdRng,
    /// Output under construction.
    out: Output,
    /// `storage.write_seq()` when the last output was handed out (to notice new writes).
    seen_write_seq: u64,
    /// The latest term in which this node knew a leader (to count leader changes).
    leader_known_term: Term,
    /// Events counted for metrics.
    counters: Counters,
}

impl RaftNode {
    // ----- inputs -------------------------------------------------------------------------------

    /// Starts a node as a follower, from whatever its storage holds (a restart after a crash is
    /// just this).
    pub fn new(config: Config, storage: Box<dyn Storage>) -> Result<Self> {
        config.validate()?;
        let hard_state = storage.hard_state();
        let seen_write_seq = storage.write_seq();
        let configs = Configs::new(storage.membership_base());
        let mut node = RaftNode {
            rng: StdRng::seed_from_u64(config.seed),
            current_term: hard_state.current_term,
            voted_for: hard_state.voted_for,
            log: RaftLog::new(storage),
            configs,
            role: Role::Follower(Follower::default()),
            ticks: 0,
            now_ms: 0,
            election_elapsed: 0,
            election_timeout: 0,
            out: Output::default(),
            seen_write_seq,
            leader_known_term: 0,
            counters: Counters::default(),
            config,
        };
        node.load_configs()?;
        node.reset_election_timeout();
        Ok(node)
    }

    /// Finds the configuration in force: the one storage kept for the start of the log, then
    /// every configuration entry after it. A brand-new node with a bootstrap configuration writes
    /// it as entry 1 of term 1 first.
    fn load_configs(&mut self) -> Result<()> {
        let empty = self.log.last_index() == 0 && self.log.storage.snapshot().is_none();
        if empty
            && self.current_term == 0
            && let Some(bootstrap) = self.config.bootstrap.clone()
        {
            self.current_term = 1;
            self.save_hard_state()?;
            let entry = Entry { index: 1, term: 1, command: bootstrap.encode() };
            self.log.append(std::slice::from_ref(&entry))?;
        }
        let from = self.configs.latest_index().max(self.log.first_index() - 1) + 1;
        let last = self.log.last_index();
        let mut at = from;
        while at <= last {
            let batch = self.log.entries(at, last + 1, 4 << 20)?;
            at += batch.len() as Index;
            self.configs.appended(&batch);
        }
        if self.configs.latest().is_none()
            && !empty
            && let Some(bootstrap) = self.config.bootstrap.clone()
        {
            // A log written before configurations were log entries: its members are the flags.
            log::warn!(
                "{}'s log holds no configuration (written by an older version): using the \
                 configured peers",
                self.config.id
            );
            self.configs = Configs::new(Some((0, bootstrap)));
        }
        match self.membership() {
            None => log::info!(
                "{} has no configuration yet: it waits for a leader to send one",
                self.config.id
            ),
            Some(m) if !m.contains(&self.config.id) => log::warn!(
                "{} was removed from the cluster (configuration {}): it will not campaign",
                self.config.id,
                self.configs.latest_index()
            ),
            Some(_) => {}
        }
        Ok(())
    }

    /// Logical time passes by one tick.
    pub fn tick(&mut self) -> Result<Output> {
        self.ticks += 1;
        if let Role::Leader(_) = self.role {
            self.tick_leader()?;
        } else {
            self.election_elapsed = self.election_elapsed.saturating_add(1);
            if self.election_elapsed >= self.election_timeout && !self.can_campaign() {
                // Learners, removed nodes and nodes still joining never start elections. Their
                // timer keeps counting all the same: `election_elapsed` is also how long ago we
                // heard from a leader, which decides whether we ignore vote requests (check
                // quorum's lease). Restarting it here would renew a lease on a leader that is
                // gone, and a learner whose promotion has not reached it yet, needed for a
                // majority, would ignore the candidates most of the time (churn seed 115417).
            } else if self.election_elapsed >= self.election_timeout {
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
    /// refused with [`Error::NotLeader`] (the caller forwards to the leader).
    /// Returns where the command will be committed if all goes well.
    pub fn propose(&mut self, command: Vec<u8>) -> Result<(Index, Term, Output)> {
        let (term, mut placed, out) = self.propose_batch(vec![command])?;
        let index = placed
            .pop()
            .unwrap_or_else(|| Err(Error::Internal("a batch of one command placed none".into())))?;
        Ok((index, term, out))
    }

    /// Proposes several client commands at once, in order: one log append (one WAL record) and
    /// one round of AppendEntries for all of them. What a server does when many clients write
    /// at the same moment (the shell's proposal batching); the log is the same as after one
    /// [`RaftNode::propose`] per command.
    ///
    /// Refused as a whole with [`Error::NotLeader`] (or during a leadership transfer); a
    /// command that is refused alone (empty, or starting with the internal mark) gets its own
    /// error in the answer and takes no index. Otherwise each gets the index it will be
    /// committed at if all goes well, all of them in the returned term.
    pub fn propose_batch(
        &mut self,
        commands: Vec<Vec<u8>>,
    ) -> Result<(Term, Vec<Result<Index>>, Output)> {
        if !matches!(self.role, Role::Leader(_)) {
            return Err(self.not_leader_error());
        }
        self.refuse_during_transfer()?;
        let term = self.current_term;
        let mut next = self.log.last_index() + 1;
        let mut entries = Vec::with_capacity(commands.len());
        let mut placed = Vec::with_capacity(commands.len());
        for command in commands {
            placed.push(match command.first() {
                None => Err(Error::BadRequest("empty commands are reserved for no-ops".into())),
                Some(&crate::raft::INTERNAL_ENTRY_MARK) => {
                    Err(Error::BadRequest("commands starting with a zero byte are reserved".into()))
                }
                Some(_) => {
                    entries.push(Entry { index: next, term, command });
                    next += 1;
                    Ok(next - 1)
                }
            });
        }
        if !entries.is_empty() {
            // No internal entries here: nothing for the configuration tracker to see.
            self.log.append(&entries)?;
            self.broadcast_append(false)?;
        }
        Ok((term, placed, self.take_output()))
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
            p.reset_to_probe(leader.seq);
        }
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

    /// Ticks since this node started (its logical clock).
    pub fn ticks(&self) -> u64 {
        self.ticks
    }

    /// `current_term`.
    pub fn term(&self) -> Term {
        self.current_term
    }

    /// Whom this node voted for in `current_term`.
    pub fn voted_for(&self) -> Option<&NodeId> {
        self.voted_for.as_ref()
    }

    /// True when leading.
    pub fn is_leader(&self) -> bool {
        matches!(self.role, Role::Leader(_))
    }

    /// The role and its data (read-only): tests and scripts tell a pre-candidate from a candidate
    /// by it, and a leader's per-follower progress.
    pub fn role(&self) -> &Role {
        &self.role
    }

    /// The leader as far as this node knows.
    pub fn leader_id(&self) -> Option<&NodeId> {
        match &self.role {
            Role::Leader(_) => Some(&self.config.id),
            Role::Follower(f) => f.leader.as_ref(),
            Role::Candidate(_) => None,
        }
    }

    /// The leader this node knows of (itself, when it leads), as an owned id.
    pub fn leader(&self) -> Option<NodeId> {
        match &self.role {
            Role::Leader(_) => Some(self.config.id.clone()),
            Role::Follower(f) => f.leader.clone(),
            Role::Candidate(_) => None,
        }
    }

    /// True if this node knows the leader of its term (without cloning its id).
    fn knows_leader(&self) -> bool {
        match &self.role {
            Role::Leader(_) => true,
            Role::Follower(f) => f.leader.is_some(),
            Role::Candidate(_) => false,
        }
    }

    /// The configuration in force (the latest in the log), if the node has one yet.
    pub fn membership(&self) -> Option<&Membership> {
        self.configs.latest()
    }

    /// The configuration in force at `index` (for a snapshot taken there).
    pub fn membership_at(&self, index: Index) -> Option<&Membership> {
        self.configs.at(index)
    }

    /// The state machine was loaded from a snapshot through `index` whose data carried the
    /// configuration in force there. If storage's configuration base is older (the node stopped
    /// between receiving the snapshot and recording its configuration), adopt the snapshot's:
    /// configuration entries at or below `index` are no longer in the log to tell.
    pub fn restore_membership(&mut self, index: Index, membership: Membership) -> Result<()> {
        let base = self.log.storage.membership_base().map_or(0, |(i, _)| i);
        if base >= index || index < self.log.first_index().saturating_sub(1) {
            return Ok(());
        }
        log::info!("{} takes the configuration of snapshot {index} from its data", self.config.id);
        self.log.storage.save_membership_base(index, &membership)?;
        self.configs.rebase(index, membership);
        Ok(())
    }

    /// The election timer, in ticks: how long since this node last heard from a leader (or
    /// started its campaign), and the randomized timeout it campaigns at (thesis §3.4). A
    /// leader's own timer does not run.
    pub fn election_timer(&self) -> (u64, u64) {
        (self.election_elapsed, self.election_timeout)
    }

    /// The index of the configuration in force (0 if none).
    pub fn config_index(&self) -> Index {
        self.configs.latest_index()
    }

    /// True if this node is a voter of the configuration in force.
    pub fn is_voter(&self) -> bool {
        self.membership().is_some_and(|m| m.is_voter(&self.config.id))
    }

    /// What this node is in the cluster: "voter", "learner", "removed" (its log says so) or
    /// "joining" (no configuration yet).
    pub fn member_state(&self) -> &'static str {
        match self.membership() {
            None => "joining",
            Some(m) => match m.role(&self.config.id) {
                Some(crate::raft::MemberRole::Voter) => "voter",
                Some(crate::raft::MemberRole::Learner) => "learner",
                None => "removed",
            },
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
                        let state = if p.pending_snapshot.is_some() {
                            ReplicationState::Snapshot
                        } else if p.replicating {
                            ReplicationState::Replicate
                        } else {
                            ReplicationState::Probe
                        };
                        let view = PeerProgress {
                            next_index: p.next_index,
                            match_index: p.match_index,
                            inflight: p.inflight.len() as u64,
                            snapshot: p.pending_snapshot,
                            last_contact_ticks: self.ticks.saturating_sub(p.last_contact_tick),
                            state,
                        };
                        (id.clone(), view)
                    })
                    .collect(),
                _ => BTreeMap::new(),
            },
            membership: self.membership().cloned(),
            config_index: self.config_index(),
            member_state: self.member_state(),
            transfer: match &self.role {
                Role::Leader(l) => l.transfer.as_ref().map(|t| t.target.clone()),
                _ => None,
            },
            voted_for: self.voted_for.clone(),
            counters: self.counters,
        }
    }

    /// Events counted since start (cheap: a copy, for the shell's metrics).
    pub fn counters(&self) -> Counters {
        self.counters
    }

    // ----- message dispatch ---------------------------------------------------------------------

    fn step_inner(&mut self, env: Envelope) -> Result<()> {
        // Thesis §4.1: a server processes requests without consulting its configuration (a
        // leader may not yet know it added us; a candidate may be in a configuration we have not
        // received). Only votes and acknowledgements are counted by membership, where they are
        // counted. Strangers are kept out by the shell (cluster id, peer secret).
        if env.to != self.config.id {
            log::warn!("{} drops a message addressed to {:?}", self.config.id, env.to);
            return Ok(());
        }
        // Malformed input is the sender's problem, reported as such; it never reaches the log.
        env.validate()
            .map_err(|e| Error::BadRequest(format!("invalid message from {}: {e}", env.from)))?;
        // PreVotes are answered before §5.1's rule below: they never change anyone's term.
        match &env.message {
            Message::RequestVote(req) if !req.transfer && self.ignores_vote_request(env.term) => {
                if req.pre_vote {
                    self.counters.pre_votes_refused += 1;
                }
                log::debug!(
                    "{} ignores {}'s vote request: a leader is alive",
                    self.config.id,
                    env.from
                );
                return Ok(());
            }
            Message::RequestVote(req) if req.pre_vote => {
                self.handle_pre_vote(env.from.clone(), env.term, req);
                return Ok(());
            }
            Message::RequestVoteResponse(resp) if resp.pre_vote => {
                return self.handle_pre_vote_response(env.from, env.term, resp.vote_granted);
            }
            _ => {}
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
            Message::TimeoutNow => self.handle_timeout_now(env.from, env.term),
            Message::RequestVoteResponse(_)
            | Message::AppendEntriesResponse(_)
            | Message::InstallSnapshotResponse(_) => Ok(()),
        }
    }

    // ----- helpers ------------------------------------------------------------------------------

    /// More than half of the voters of the configuration in force (a 4-voter cluster needs 3).
    pub(super) fn quorum(&self) -> usize {
        self.membership().map_or(1, |m| m.quorum())
    }

    /// The voters other than this node: whom a candidate asks for votes.
    pub(super) fn other_voters(&self) -> Vec<NodeId> {
        let me = &self.config.id;
        self.membership()
            .map(|m| m.voters.keys().filter(|v| *v != me).cloned().collect())
            .unwrap_or_default()
    }

    /// Every member other than this node (voters and learners): whom a leader replicates to.
    pub(super) fn other_members(&self) -> Vec<NodeId> {
        let me = &self.config.id;
        self.membership()
            .map(|m| m.members().map(|(id, _, _)| id).filter(|v| *v != me).cloned().collect())
            .unwrap_or_default()
    }

    pub(super) fn reset_election_timeout(&mut self) {
        self.election_timeout =
            self.rng.gen_range(self.config.election_ticks_min..self.config.election_ticks_max);
    }

    pub(super) fn save_hard_state(&mut self) -> Result<()> {
        let hs = HardState { current_term: self.current_term, voted_for: self.voted_for.clone() };
        self.log.storage.save_hard_state(&hs)
    }

    pub(super) fn envelope(&self, to: NodeId, message: Message) -> Envelope {
        Envelope { from: self.config.id.clone(), to, term: self.current_term, message }
    }

    pub(super) fn send(&mut self, to: NodeId, message: Message) {
        let env = self.envelope(to, message);
        self.out.messages.push(env);
    }

    pub(super) fn send_after_sync(&mut self, to: NodeId, message: Message) {
        let env = self.envelope(to, message);
        self.out.after_sync.push(env);
    }

    /// True if the node may start an election: it is a voter of the configuration in force.
    pub(super) fn can_campaign(&self) -> bool {
        self.is_voter()
    }

    /// The refusal of a follower or candidate: [`Error::NotLeader`] naming the leader it knows of
    /// by id. The core knows no addresses: the hint's `addr` is left empty for the shell to fill.
    pub(super) fn not_leader_error(&self) -> Error {
        let leader = self.leader().map(|id| LeaderHint { id, addr: String::new() });
        Error::NotLeader { leader }
    }

    /// Hands out the accumulated output, with a sync point if storage changed or messages wait.
    pub(super) fn take_output(&mut self) -> Output {
        // Every input ends here: the one place to notice a leader for a new term.
        if self.current_term > self.leader_known_term && self.knows_leader() {
            self.leader_known_term = self.current_term;
            self.counters.leader_changes += 1;
        }
        let mut out = std::mem::take(&mut self.out);
        let seq = self.log.storage.write_seq();
        if seq != self.seen_write_seq || !out.after_sync.is_empty() {
            self.seen_write_seq = seq;
            out.sync = Some(SyncPoint {
                write_seq: seq,
                index: self.log.last_index(),
                term: self.log.last_term(),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{AppendEntries, MemStorage};

    #[test]
    fn a_follower_refuses_clients_naming_the_leader_it_knows_by_id() {
        let peers = vec!["n2".to_string(), "n3".to_string()];
        let mut node =
            RaftNode::new(Config::new("n1", peers), Box::new(MemStorage::new())).expect("a node");
        let refusal = |e: Error| match e {
            Error::NotLeader { leader } => leader,
            other => panic!("refused with {other:?}, not NotLeader"),
        };
        assert_eq!(refusal(node.propose(b"x".to_vec()).unwrap_err()), None, "no leader yet");
        let heartbeat = AppendEntries {
            prev_log_index: 0,
            prev_log_term: 0,
            entries: vec![],
            leader_commit: 0,
            seq: 1,
        };
        let message = Message::AppendEntries(heartbeat);
        node.step(Envelope { from: "n2".into(), to: "n1".into(), term: 1, message }).unwrap();
        let named = Some(LeaderHint { id: "n2".into(), addr: String::new() });
        assert_eq!(refusal(node.propose(b"x".to_vec()).unwrap_err()), named);
        assert_eq!(refusal(node.read(7).unwrap_err()), named);
    }
}
