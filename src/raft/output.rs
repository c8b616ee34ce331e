//! What the core hands back: an [`Output`] after every input (messages to send now, messages
//! that wait for the disk, entries to apply, reads that became safe), and the [`Status`] it shows.

use std::collections::BTreeMap;

use crate::raft::{Entry, Envelope, Index, Membership, NodeId, SnapshotMeta, Term};
#[cfg(doc)]
use crate::raft::{RaftNode, Storage};

/// When the shell must make storage durable, and what to tell the node afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncPoint {
    /// Sync storage through this write sequence number ([`Storage::write_seq`]).
    pub write_seq: u64,
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
    /// The configuration in force (the latest in the log), if any.
    pub membership: Option<Membership>,
    /// The index of that configuration's entry (or of the snapshot that carried it).
    pub config_index: Index,
    /// "voter", "learner", "removed" or "joining".
    pub member_state: &'static str,
    /// On a leader transferring its leadership: the target.
    pub transfer: Option<NodeId>,
    /// `voted_for`: who got this node's vote in `term`.
    pub voted_for: Option<NodeId>,
    /// Event counts since start, for metrics.
    pub counters: Counters,
}

/// Counts of events since the node started (not persisted), which the shell exports as metrics.
/// Counted here because only the core sees the events; they are plain integers, no clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Terms in which this node learned of a leader (itself included): each is a leader change,
    /// as etcd's `leader_changes_seen` counts them. Losing and regaining contact with the same
    /// leader in the same term is not a change.
    pub leader_changes: u64,
    /// Real elections this node started (its term went up for a candidacy), PreVote rounds
    /// not included.
    pub elections_started: u64,
    /// PreVote rounds this node started.
    pub pre_votes_started: u64,
    /// PreVote requests this node refused (a stale log, a stale term, or a leader it still hears
    /// from).
    pub pre_votes_refused: u64,
}

/// How a leader replicates to one follower (etcd-io/raft's `StateProbe`, `StateReplicate` and
/// `StateSnapshot`, kept in the leader's per-follower progress as `replicating` and
/// `pending_snapshot`):
/// - `snapshot`: a snapshot is on its way; no AppendEntries until it is answered;
/// - `replicate`: the follower accepted a request since it was last rejected, timed out or sent
///   a snapshot: the leader knows where the follower's log ends and streams entries from there,
///   up to [`crate::raft::Config::max_inflight`] requests at a time;
/// - `probe`: not yet answered in this term, or backed up after a rejection (or a lost
///   request): the leader is still finding where the logs agree, one request at a time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicationState {
    /// Finding where the logs agree.
    #[default]
    Probe,
    /// Streaming entries from a known match.
    Replicate,
    /// Sending a snapshot.
    Snapshot,
}

impl ReplicationState {
    /// `probe`, `replicate` or `snapshot`.
    pub fn name(self) -> &'static str {
        match self {
            ReplicationState::Probe => "probe",
            ReplicationState::Replicate => "replicate",
            ReplicationState::Snapshot => "snapshot",
        }
    }
}

/// A leader's view of one follower. The shell shows it as is in `/status` (the wire type
/// `api::Status::progress`), hence the serde names.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerProgress {
    /// Next entry to send.
    pub next_index: Index,
    /// Highest entry known to be stored there.
    pub match_index: Index,
    /// Requests (AppendEntries or a snapshot) awaiting their answers: at most the pipelining
    /// window, [`crate::raft::Config::max_inflight`].
    pub inflight: u64,
    /// Index of the snapshot being sent, if any.
    pub snapshot: Option<Index>,
    /// Ticks since this member last answered.
    pub last_contact_ticks: u64,
    /// Probe, replicate or snapshot (see [`ReplicationState`]).
    #[serde(default)]
    pub state: ReplicationState,
}
