//! The wire types of the HTTP API, in one place: what the server writes and what the client
//! library, the chaos harness and the testkit read.
//!
//! | route | request | 200 answer |
//! |---|---|---|
//! | `GET /kv/get/{key}` | — | [`GetReply`] `{"key","value"}` (404 if absent) |
//! | `POST /kv/put` | [`PutRequest`] `{"key","value"}` | [`WriteReply`] `{"status":"ok","key","index","term"}` |
//! | `DELETE /kv/delete/{key}` | — | [`WriteReply`] |
//! | `GET /kv/all` | — | [`AllReply`] `{"k":"v",...}` |
//! | `GET /status` | — | [`Status`] |
//! | `POST /raft/snapshotChunk` | [`SnapshotChunk`]: query and raw bytes | [`SnapshotChunkReply`] `{"received"}` |
//!
//! Every error is an [`ErrorBody`] `{"error": code, "message": text}` (plus `"leader"` on a
//! `not_leader` 503), written by [`Error::to_json`] with the status of [`Error::status`].
//! The peer RPCs (`/raft/requestVote`, `/raft/appendEntries`, `/raft/installSnapshot`) carry the
//! core's own [`crate::raft::Envelope`] as JSON; nodes send an AppendEntries in a compact binary
//! encoding instead (`Content-Type: application/x-raftlabkv-entries`, `server::binary`), and
//! `/raft/appendEntries` takes either.
//!
//! Borrowing types (`Cow`) let the server answer without copying the key or value, and the
//! client send a put without copying either; when read they own their text.
//!
//! A key in a path (`/kv/get/{key}`, `/kv/delete/{key}`) is one percent-encoded segment,
//! [`encode_path_segment`]: `a/b` travels as `a%2Fb`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, PercentEncode, utf8_percent_encode};
use serde::{Deserialize, Serialize};

use crate::error::Error;
pub use crate::error::LeaderHint;
pub use crate::raft::PeerProgress;
use crate::raft::{Index, NodeId, SnapshotMeta, Term};

/// What is escaped in a path segment: every byte but the unreserved `A-Z a-z 0-9 - . _ ~`
/// (RFC 3986), so `/`, `%`, `?`, `#`, spaces and all non-ASCII bytes become `%XX`.
pub const PATH_SEGMENT: &AsciiSet =
    &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// `s` as one URL path segment: each byte of its UTF-8 form outside the unreserved characters
/// becomes `%XX` (upper-case hex). Formats without allocating; `.to_string()` for a `String`.
pub fn encode_path_segment(s: &str) -> PercentEncode<'_> {
    utf8_percent_encode(s, PATH_SEGMENT)
}

/// `POST /kv/put` body. Unknown fields are refused (a typo must not pass for a put).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutRequest<'a> {
    /// The key.
    pub key: Cow<'a, str>,
    /// The value.
    pub value: Cow<'a, str>,
    /// Write only if the key's `mod_revision` is this (0: only if the key is absent); otherwise
    /// 412 with the key as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_revision: Option<u64>,
}

/// `GET /kv/get/{key}` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetReply<'a> {
    /// The key asked for.
    pub key: Cow<'a, str>,
    /// Its value.
    pub value: Cow<'a, str>,
    /// Revision of the put that created the key ([`crate::kv`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_revision: Option<u64>,
    /// Revision of its latest put.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mod_revision: Option<u64>,
    /// Puts since it was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// The answer to an applied write (`put` or `delete`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteReply<'a> {
    /// Always `"ok"`.
    #[serde(default)]
    pub status: Cow<'a, str>,
    /// The key written.
    pub key: Cow<'a, str>,
    /// The log index the write committed at.
    pub index: Index,
    /// The term of the leader that committed it.
    pub term: Term,
    /// The store's revision once it applied ([`crate::kv`]; a delete of an absent key leaves it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
}

impl<'a> WriteReply<'a> {
    /// `{"status":"ok", ...}` for a write of `key` applied at `index` in `term`, leaving the
    /// store at `revision`.
    pub fn ok(key: &'a str, index: Index, term: Term, revision: u64) -> Self {
        WriteReply {
            status: Cow::Borrowed("ok"),
            key: Cow::Borrowed(key),
            index,
            term,
            revision: Some(revision),
        }
    }
}

/// `GET /kv/all` answer: every key and its value.
pub type AllReply = BTreeMap<String, String>;

/// One piece of a snapshot file on its way from the leader to a follower, ahead of the
/// InstallSnapshot that names the snapshot: `POST /raft/snapshotChunk?`[`query`](Self::query)
/// with `data` as the body, answered with a [`SnapshotChunkReply`]. The one shape of a chunk
/// from the sending peer thread through the transport to the receiving node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotChunk<'a> {
    /// The sender (the leader): only members may send.
    pub from: &'a str,
    /// The snapshot the bytes belong to.
    pub snapshot: SnapshotMeta,
    /// Where in the snapshot file `data` starts.
    pub offset: u64,
    /// The whole file's length, header included (the chunk that reaches it completes the file).
    pub total: u64,
    /// The file's bytes at `offset`.
    pub data: &'a [u8],
}

impl SnapshotChunk<'_> {
    /// Everything but the data, as the request's query string (without the `?`):
    /// `from=&index=&term=&offset=&total=`, `from` percent-encoded.
    pub fn query(&self) -> String {
        format!(
            "from={}&index={}&term={}&offset={}&total={}",
            encode_path_segment(self.from),
            self.snapshot.index,
            self.snapshot.term,
            self.offset,
            self.total
        )
    }
}

/// `POST /raft/snapshotChunk` answer: how many bytes of the snapshot the receiver holds now,
/// which is where the next chunk starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotChunkReply {
    /// Bytes held.
    pub received: u64,
}

/// An error answer, as [`Error::to_json`] writes it. Read leniently: a proxy or an older server
/// may leave fields out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ErrorBody {
    /// The stable code ([`Error::code`]): `not_leader`, `unavailable`, `not_found`, ...
    #[serde(default)]
    pub error: Option<String>,
    /// A human-readable message.
    #[serde(default)]
    pub message: Option<String>,
    /// On `not_leader`: the leader to retry at, if known.
    #[serde(default)]
    pub leader: Option<LeaderHint>,
    /// A bare leader address, the hint form the client documented before `leader`; still
    /// followed.
    #[serde(default, rename = "leaderAddr")]
    pub leader_addr: Option<String>,
}

impl ErrorBody {
    /// The leader address the body names, if any.
    pub fn leader_hint(&self) -> Option<&str> {
        self.leader.as_ref().map(|l| l.addr.as_str()).or(self.leader_addr.as_deref())
    }

    /// The crate error this body stands for, answered with HTTP `status`. `message` replaces a
    /// missing one (the caller knows what else the answer said).
    pub fn into_error(self, status: u16, message: String) -> Error {
        match (status, self.error.as_deref()) {
            (500, Some("storage")) => Error::Storage(message),
            (503, Some("not_leader")) => Error::NotLeader { leader: self.leader },
            _ => Error::from_status(status, message),
        }
    }
}

/// One node's view of the cluster: the `GET /status` answer. Only the fields up to
/// `last_log_index` are required when read (a minimal status, as a test double may send).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The node's id.
    pub id: NodeId,
    /// True if this node is the leader.
    pub is_leader: bool,
    /// The node's current term.
    pub term: Term,
    /// `leader`, `follower` or `candidate`.
    pub role: Cow<'static, str>,
    /// The id of the leader this node knows of, if any.
    #[serde(default)]
    pub leader: Option<NodeId>,
    /// Where this node reaches that leader (`host:port`), which also serves clients.
    #[serde(default)]
    pub leader_addr: Option<String>,
    /// Highest log index known to be committed.
    pub commit_index: Index,
    /// Highest log index applied to the key-value store.
    pub last_applied: Index,
    /// Index of the last entry in this node's log.
    pub last_log_index: Index,
    /// Keys in the store.
    #[serde(default)]
    pub keys: usize,
    /// Peers: id -> address.
    #[serde(default)]
    pub peers: BTreeMap<NodeId, String>,
    /// Seconds since the node started.
    #[serde(default)]
    pub uptime_secs: u64,
    /// Peer RPCs sent since start.
    #[serde(default)]
    pub rpcs_sent: u64,
    /// Peer RPCs answered since start.
    #[serde(default)]
    pub rpcs_received: u64,
    /// fsyncs of the node's storage since start.
    #[serde(default)]
    pub fsyncs: u64,
    /// Entries applied to the state machine since start.
    #[serde(default)]
    pub entries_applied: u64,
    /// Index of the first entry still in the log (earlier ones are in the snapshot).
    #[serde(default)]
    pub first_log_index: Index,
    /// Index of the latest snapshot (0: none).
    #[serde(default)]
    pub snapshot_index: Index,
    /// On the leader: each follower's replication progress (the core's own [`PeerProgress`]).
    #[serde(default)]
    pub progress: BTreeMap<NodeId, PeerProgress>,
    /// The cluster's id (peer requests from another cluster are refused).
    #[serde(default)]
    pub cluster_id: String,
    /// Index of the configuration in force (its log entry, or the snapshot that carried it).
    #[serde(default)]
    pub config_index: Index,
    /// What this node is: `voter`, `learner`, `removed` (its log says so: it never campaigns) or
    /// `joining` (no configuration yet).
    #[serde(default)]
    pub member_state: Cow<'static, str>,
    /// Voting members: id -> address.
    #[serde(default)]
    pub voters: BTreeMap<NodeId, String>,
    /// Learners (receive the log, never vote): id -> address.
    #[serde(default)]
    pub learners: BTreeMap<NodeId, String>,
    /// On a leader handing over its leadership: the target.
    #[serde(default)]
    pub transfer: Option<NodeId>,
    /// Who got this node's vote in `term`.
    #[serde(default)]
    pub voted_for: Option<NodeId>,
    /// Term of the last entry in this node's log.
    #[serde(default)]
    pub last_log_term: Term,
    /// Term of the latest snapshot (0: none).
    #[serde(default)]
    pub snapshot_term: Term,
    /// The server's version (the crate's).
    #[serde(default)]
    pub version: String,
    /// Bytes of WAL segments on disk (0 for a node in memory).
    #[serde(default)]
    pub wal_bytes: u64,
    /// Bytes of everything in the data directory: WAL, snapshots, lock file (0 in memory).
    #[serde(default)]
    pub data_dir_bytes: u64,
    /// Leader changes this node has seen since it started: terms in which it learned of a leader.
    #[serde(default)]
    pub leader_changes_seen: u64,
    /// The same, over the last 60 seconds.
    #[serde(default)]
    pub leader_changes_last_minute: u64,
    /// 99th percentile of the WAL's fsync durations over the last 60 seconds, in microseconds
    /// (an upper bound within 19%: durations are counted in buckets); none if no fsync then.
    #[serde(default)]
    pub fsync_p99_us: Option<u64>,
    /// On the leader: how each follower is replicated to (empty elsewhere).
    #[serde(default)]
    pub replication: BTreeMap<NodeId, PeerReplication>,
    /// On a follower receiving a snapshot: how far the transfer is.
    #[serde(default)]
    pub snapshot_receiving: Option<SnapshotTransfer>,
}

/// A leader's view of one follower in `/status` (`replication`): the core's progress in
/// milliseconds rather than ticks, with the snapshot transfer's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerReplication {
    /// Highest entry known to be stored there.
    pub match_index: Index,
    /// Next entry to send.
    pub next_index: Index,
    /// `probe`, `replicate` or `snapshot` ([`crate::raft::ReplicationState`]).
    pub state: String,
    /// Requests awaiting an answer (at most the pipelining window, `--max-inflight`).
    pub inflight: u64,
    /// Milliseconds since it last answered (counted in ticks: a tick's precision).
    pub last_contact_ms: u64,
    /// A snapshot being sent to it, if any.
    #[serde(default)]
    pub snapshot: Option<SnapshotTransfer>,
}

/// A snapshot on its way, as the side reporting it sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotTransfer {
    /// The snapshot's index.
    pub index: Index,
    /// Bytes sent (by a leader) or received (by a follower) so far.
    pub bytes_done: u64,
    /// The snapshot file's length.
    pub bytes_total: u64,
}

/// `POST /cluster/members` body: a new member. It joins as a learner unless `learner` is false.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddMemberRequest {
    /// Its id.
    pub id: NodeId,
    /// Its address (`host:port`).
    pub addr: String,
    /// Join as a learner (the default).
    #[serde(default = "yes")]
    pub learner: bool,
    /// Skip the strict check (loudly).
    #[serde(default)]
    pub force: bool,
}

fn yes() -> bool {
    true
}

/// `PUT /cluster/members/{id}` body: the member's new address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateMemberRequest {
    /// Its new address.
    pub addr: String,
}

/// `POST /cluster/leader` body: the voter to hand leadership to (none: the most up to date).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    /// The target.
    #[serde(default)]
    pub to: Option<NodeId>,
}

/// `POST /cluster/leader` answer: the new leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferReply {
    /// Its id.
    pub leader: NodeId,
    /// Its address.
    pub addr: String,
}

/// One member in `GET /cluster/members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Its id.
    pub id: NodeId,
    /// Its address.
    pub addr: String,
    /// `voter` or `learner`.
    pub role: String,
    /// On the leader's view: how far its log is known to match (the leader: its last index).
    pub match_index: Option<Index>,
    /// Milliseconds since the leader last heard from it (the leader itself: 0).
    pub last_contact_ms: Option<u64>,
}

/// `GET /cluster/members` answer, and the answer to every membership change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersReply {
    /// The cluster's id.
    pub cluster_id: String,
    /// Index of the configuration in force.
    pub config_index: Index,
    /// Voters first, then learners.
    pub members: Vec<MemberInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_body_reads_back_as_its_error() {
        let hint = LeaderHint { id: "node2".into(), addr: "h:2".into() };
        for e in [
            Error::BadRequest("a".into()),
            Error::NotFound("b".into()),
            Error::TooLarge("d".into()),
            Error::NotLeader { leader: Some(hint.clone()) },
            Error::NotLeader { leader: None },
            Error::Unavailable("e".into()),
            Error::OutcomeUnknown("f".into()),
            Error::Storage("g".into()),
        ] {
            let body: ErrorBody = serde_json::from_value(e.to_json()).expect("an error body");
            let message = body.message.clone().unwrap_or_default();
            assert_eq!(body.clone().into_error(e.status(), message), e);
            let want = matches!(&e, Error::NotLeader { leader: Some(_) }).then_some("h:2");
            assert_eq!(body.leader_hint(), want, "{e}");
        }
    }

    #[test]
    fn the_core_progress_is_the_wire_progress() {
        let core = PeerProgress {
            next_index: 5,
            match_index: 4,
            inflight: 1,
            snapshot: Some(3),
            last_contact_ticks: 7,
            state: crate::raft::ReplicationState::Snapshot,
        };
        let wire = serde_json::to_value(&core).expect("encode");
        let want = serde_json::json!({"nextIndex": 5, "matchIndex": 4, "inflight": 1,
            "snapshot": 3, "lastContactTicks": 7, "state": "snapshot"});
        assert_eq!(wire, want);
        assert_eq!(serde_json::from_value::<PeerProgress>(wire).expect("decode"), core);
    }

    #[test]
    fn path_segments_escape_all_but_the_unreserved_characters() {
        for b in 0u8..0x80 {
            let c = char::from(b).to_string();
            let want = if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                c.clone()
            } else {
                format!("%{b:02X}")
            };
            assert_eq!(encode_path_segment(&c).to_string(), want, "byte {b:#04x}");
        }
        assert_eq!(encode_path_segment("ü/€").to_string(), "%C3%BC%2F%E2%82%AC");
    }

    #[test]
    fn a_snapshot_chunk_query_names_everything_but_the_data() {
        let snapshot = SnapshotMeta { index: 9, term: 2 };
        let chunk = SnapshotChunk { from: "n/1", snapshot, offset: 36, total: 100, data: b"x" };
        assert_eq!(chunk.query(), "from=n%2F1&index=9&term=2&offset=36&total=100");
    }

    #[test]
    fn a_minimal_status_reads() {
        let text = r#"{"id":"n1","isLeader":false,"term":3,"role":"follower","commitIndex":1,
            "lastApplied":1,"lastLogIndex":2}"#;
        let s: Status = serde_json::from_str(text).expect("status");
        assert_eq!((s.role.as_ref(), s.leader, s.keys), ("follower", None, 0));
    }
}
