//! A node is a follower, a candidate or a leader; each role carries exactly the data that is valid
//! in it (no "leader-only" fields lying around on followers).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::raft::{Index, NodeId};

/// The three roles of §5.1.
#[derive(Debug)]
pub enum Role {
    /// Passive: answers leaders and candidates.
    Follower(Follower),
    /// Asking for votes in `current_term`.
    Candidate(Candidate),
    /// Replicating its log and deciding what is committed.
    Leader(Leader),
}

impl Role {
    /// Lower-case role name, as shown by `/status`.
    pub fn name(&self) -> &'static str {
        match self {
            Role::Follower(_) => "follower",
            Role::Candidate(_) => "candidate",
            Role::Leader(_) => "leader",
        }
    }

    /// A leader's progress record for `peer`; `None` on other roles or for an unknown peer.
    pub fn progress_mut(&mut self, peer: &NodeId) -> Option<&mut Progress> {
        match self {
            Role::Leader(leader) => leader.progress.get_mut(peer),
            _ => None,
        }
    }
}

/// Follower state.
#[derive(Debug, Default)]
pub struct Follower {
    /// The leader of `current_term`, once heard from: where client requests are forwarded.
    pub leader: Option<NodeId>,
}

/// Candidate state.
#[derive(Debug, Default)]
pub struct Candidate {
    /// Nodes that granted their vote in this term (the candidate itself included).
    pub votes: BTreeSet<NodeId>,
    /// True during the PreVote round: `current_term` is not incremented yet, and the votes are
    /// for `current_term + 1`.
    pub pre_vote: bool,
}

/// What the leader knows about one follower's log (Figure 2, "Volatile state on leaders"),
/// plus flow control.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Index of the next entry to send to this follower.
    pub next_index: Index,
    /// Highest index known to be replicated (and durable) on this follower.
    pub match_index: Index,
    /// The AppendEntries carrying entries (or a read probe) awaiting their responses, oldest
    /// first: at most [`crate::raft::Config::max_inflight`] while `replicating`, one while probing.
    /// Entries proposed while the window is full accumulate into the next request (batching).
    pub inflight: VecDeque<Inflight>,
    /// Replicate rather than probe (etcd's `StateReplicate`): this follower answered a request
    /// with success since it was last rejected, timed out or sent a snapshot, so its log is known
    /// to match and the leader may pipeline (send before the earlier requests are answered).
    /// While probing, one request is in flight at a time.
    pub replicating: bool,
    /// Highest `seq` this follower has answered in this term (ReadIndex confirmation).
    pub acked_seq: u64,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    /// A snapshot being sent to this follower (its index): no AppendEntries until it is answered.
    pub pending_snapshot: Option<Index>,
    /// Logical time of this member's latest answer: the strict membership check and a learner's
    /// promotion ask whether it was heard from within an election timeout.
    pub last_contact_tick: u64,
    /// The last `seq` sent before `next_index` was last moved back by a rejection: a rejection
    /// answering a request up to this one is stale (it answers a guess already corrected), and
    /// acting on it would send the same entries again.
    pub backed_up_at_seq: u64,
    /// Lease reads: `(seq, clock ms)` of requests sent and not yet answered, oldest first
    /// (at most [`Progress::LEASE_SENT_MAX`]; only kept when leases are on).
    pub lease_sent: VecDeque<(u64, u64)>,
    /// Lease reads: the send time of the latest request this follower answered in this term
    /// (`None`: none yet). The follower ignores vote requests for an election timeout after it
    /// got it, so the leader's lease runs from here.
    pub lease_acked_ms: Option<u64>,
}

impl Progress {
    /// Sends remembered for the lease per follower; older ones are forgotten (their answers
    /// then extend no lease, which is only conservative).
    pub const LEASE_SENT_MAX: usize = 64;

    /// A fresh record for a member whose log is unknown: probe from the leader's end.
    pub fn new(next_index: Index, now: u64) -> Self {
        Progress {
            next_index,
            match_index: 0,
            inflight: VecDeque::new(),
            replicating: false,
            acked_seq: 0,
            recent_active: true,
            pending_snapshot: None,
            last_contact_tick: now,
            backed_up_at_seq: 0,
            lease_sent: VecDeque::new(),
            lease_acked_ms: None,
        }
    }
}

impl Progress {
    /// Nothing is known to be on its way: back to probing from the last known match (a lost or
    /// refused request, an unreachable follower). `last_seq` is the last `seq` the leader sent:
    /// a rejection answering a request up to it is stale from now on (the heartbeats sent on
    /// the optimistic guess would otherwise back the follower up again and resend what the probe
    /// is already carrying).
    pub fn reset_to_probe(&mut self, last_seq: u64) {
        self.backed_up_at_seq = self.backed_up_at_seq.max(last_seq);
        self.pending_snapshot = None;
        self.stop_pipelining();
        self.next_index = self.match_index + 1;
    }

    /// Leaves `replicate` for `probe`: forgets what is in flight (it was sent on a guess that no
    /// longer holds, or a snapshot replaces it), so the next request goes alone.
    pub fn stop_pipelining(&mut self) {
        self.inflight.clear();
        self.replicating = false;
    }

    /// How many requests may be in flight to this follower now (`max_inflight` is at least 1:
    /// [`crate::raft::Config::validate`]).
    pub fn window(&self, max_inflight: usize) -> usize {
        if self.replicating { max_inflight } else { 1 }
    }

    /// The follower answered that it holds entries through `claimed`. A follower cannot hold more
    /// than we ever had (`last_index`), so a larger claim is never trusted, and `match_index`
    /// never goes down here.
    pub fn record_match(&mut self, claimed: Index, last_index: Index) {
        let claimed = claimed.min(last_index);
        if claimed > self.match_index {
            self.match_index = claimed;
        }
    }
}

/// An outstanding AppendEntries.
#[derive(Debug, Clone, Copy)]
pub struct Inflight {
    /// Its `seq`.
    pub seq: u64,
    /// Logical time it was sent, to give up on it when no response comes (lost message).
    pub sent_at_tick: u64,
}

/// A linearizable read waiting for leadership to be confirmed (ReadIndex, Raft thesis §6.4).
#[derive(Debug, Clone)]
pub struct PendingRead {
    /// The caller's id for this read.
    pub id: u64,
    /// Confirmed once a majority answered an AppendEntries with `seq >= this`.
    pub seq: u64,
    /// The commit index when the read arrived: the read may be served once applied this far.
    pub index: Index,
}

/// Leader state.
#[derive(Debug)]
pub struct Leader {
    /// One entry per peer.
    pub progress: BTreeMap<NodeId, Progress>,
    /// The last `seq` given to an AppendEntries.
    pub seq: u64,
    /// How far the leader's own log is durable: it counts itself towards a majority only this far.
    pub self_match: Index,
    /// Index of this term's no-op entry. Until it commits, the leader does not know the latest
    /// commit index (§8), so reads wait for it.
    pub term_start: Index,
    /// Reads waiting for a heartbeat round, in `seq` order.
    pub reads: VecDeque<PendingRead>,
    /// Ticks since the last heartbeat broadcast.
    pub heartbeat_elapsed: u64,
    /// Ticks since the last check-quorum round.
    pub quorum_elapsed: u64,
    /// A leadership transfer under way (thesis §3.10): no new proposals meanwhile.
    pub transfer: Option<Transfer>,
    /// TimeoutNow was sent in this term: its target may be elected by voters inside their lease
    /// (a transfer's RequestVotes override it), so this leader serves no more lease reads.
    pub lease_forfeited: bool,
}

/// A leadership transfer: bring `target` up to date, then tell it to campaign.
#[derive(Debug, Clone)]
pub struct Transfer {
    /// The voter that is to lead.
    pub target: NodeId,
    /// When the transfer began: it is abandoned after an election timeout.
    pub started_tick: u64,
    /// TimeoutNow has been sent.
    pub timeout_now_sent: bool,
}
