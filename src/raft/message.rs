//! The vocabulary of Raft: ids, terms, log entries and the RPCs of Figure 2.
//!
//! Every message travels inside an [`Envelope`] that says who sent it, to whom, and in which term.
//! Requests and responses are both plain messages: over HTTP a response rides back as the body of the
//! request that caused it, in the simulated network it is just another message.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::raft::Membership;

/// A node's identity (`node1`). Its network address is separate: only where to reach it.
pub type NodeId = String;
/// A Raft term: a logical clock that only grows (§5.1).
pub type Term = u64;
/// A position in the log, counted from 1; 0 means "before the first entry".
pub type Index = u64;

/// One log entry. An empty `command` is a no-op: the entry a new leader appends to commit the
/// entries of earlier terms (Figure 8, §5.4.2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the log.
    pub index: Index,
    /// Term of the leader that created the entry.
    pub term: Term,
    /// The state machine command, opaque to Raft. Sent as base64 in JSON.
    #[serde(with = "base64")]
    pub command: Vec<u8>,
}

impl Entry {
    /// True for the leader's no-op entry.
    pub fn is_noop(&self) -> bool {
        self.command.is_empty()
    }

    /// Rough in-memory/wire size, for batching limits.
    pub fn size(&self) -> usize {
        self.command.len() + 24
    }
}

/// The state every node must make durable before it answers an RPC (Figure 2, "Persistent state").
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// Latest term this node has seen.
    pub current_term: Term,
    /// Candidate that received this node's vote in `current_term`, if any.
    pub voted_for: Option<NodeId>,
}

/// The last log entry a snapshot covers (the paper's `lastIncludedIndex` and `lastIncludedTerm`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// Index of the last entry the snapshot replaces.
    pub index: Index,
    /// Term of that entry.
    pub term: Term,
}

/// RequestVote RPC arguments (§5.2, §5.4.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestVote {
    /// Index of the candidate's last log entry.
    pub last_log_index: Index,
    /// Term of the candidate's last log entry.
    pub last_log_term: Term,
    /// Not in Figure 2: a PreVote (thesis §9.6) asks "would you vote for me in the envelope's
    /// term?" without anyone changing their term, so a node that cannot win (cut off from the
    /// leader by a one-way partition, say) never disrupts a working cluster.
    #[serde(default)]
    pub pre_vote: bool,
    /// Not in Figure 2: the candidate campaigns because the leader asked it to (a leadership
    /// transfer, thesis §3.10, [`Message::TimeoutNow`]). Voters then answer it even while they
    /// still hear from the old leader, which they would otherwise ignore (check quorum's lease).
    #[serde(default)]
    pub transfer: bool,
}

/// RequestVote RPC results.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestVoteResponse {
    /// True means the candidate received this vote.
    pub vote_granted: bool,
    /// Answers a PreVote.
    #[serde(default)]
    pub pre_vote: bool,
}

/// AppendEntries RPC arguments: replication and heartbeat (§5.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendEntries {
    /// Index of the log entry immediately preceding the new ones.
    pub prev_log_index: Index,
    /// Term of the `prev_log_index` entry.
    pub prev_log_term: Term,
    /// Entries to store (empty for a heartbeat).
    pub entries: Vec<Entry>,
    /// The leader's commit index.
    pub leader_commit: Index,
    /// Not in the paper: a number the leader increases with every AppendEntries it sends in a term,
    /// echoed in the response. It tells the leader which of its requests a response answers, which
    /// is how ReadIndex confirms leadership (§8) and how a lost request is noticed.
    pub seq: u64,
}

/// AppendEntries RPC results, with the fast-backtracking hint of §5.3 (the "conflict" optimisation).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendEntriesResponse {
    /// True if the follower held an entry matching `prev_log_index` and `prev_log_term`.
    pub success: bool,
    /// On success: the index of the last entry known to match the leader's log.
    pub match_index: Index,
    /// On rejection: the term of the follower's conflicting entry at `prev_log_index`, if it has one.
    pub conflict_term: Option<Term>,
    /// On rejection: the first index of `conflict_term` in the follower's log, or its log length + 1.
    pub conflict_index: Index,
    /// The `seq` of the request this answers.
    pub seq: u64,
}

/// InstallSnapshot RPC arguments (§7). The snapshot's bytes travel beside this message: the
/// shell streams the file in chunks before delivering it (the simulation hands the data over),
/// so the core only ever sees which snapshot it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallSnapshot {
    /// The snapshot replaces all entries up through this index.
    pub last_included_index: Index,
    /// Term of `last_included_index`.
    pub last_included_term: Term,
    /// The configuration in force at `last_included_index` (thesis §4: a snapshot carries the
    /// membership it was taken under, since the entry that set it is compacted away).
    #[serde(default)]
    pub membership: Option<Membership>,
}

/// InstallSnapshot RPC results.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallSnapshotResponse {
    /// The follower's log now matches the leader's through this index.
    pub match_index: Index,
}

/// Every message a node can receive from a peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Message {
    /// Candidate asks for a vote.
    RequestVote(RequestVote),
    /// A voter's answer.
    RequestVoteResponse(RequestVoteResponse),
    /// Leader replicates entries or just says "I am alive".
    AppendEntries(AppendEntries),
    /// A follower's answer.
    AppendEntriesResponse(AppendEntriesResponse),
    /// Leader sends a snapshot to a follower that needs compacted entries.
    InstallSnapshot(InstallSnapshot),
    /// The follower's answer.
    InstallSnapshotResponse(InstallSnapshotResponse),
    /// A leader transferring its leadership tells the target, whose log it has brought up to
    /// date, to start an election at once (thesis §3.10). No answer: the election is the answer.
    TimeoutNow,
}

impl Message {
    /// Every name [`Message::kind`] returns (a new variant goes in both).
    pub const KINDS: &'static [&'static str] = &[
        "PreVote",
        "PreVoteResponse",
        "RequestVote",
        "RequestVoteResponse",
        "AppendEntries",
        "AppendEntriesResponse",
        "InstallSnapshot",
        "InstallSnapshotResponse",
        "TimeoutNow",
    ];

    /// The message's name as scripts and logs print it; a PreVote and its answer are named
    /// apart from the real vote.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::RequestVote(m) if m.pre_vote => "PreVote",
            Message::RequestVote(_) => "RequestVote",
            Message::TimeoutNow => "TimeoutNow",
            Message::RequestVoteResponse(m) if m.pre_vote => "PreVoteResponse",
            Message::RequestVoteResponse(_) => "RequestVoteResponse",
            Message::AppendEntries(_) => "AppendEntries",
            Message::AppendEntriesResponse(_) => "AppendEntriesResponse",
            Message::InstallSnapshot(_) => "InstallSnapshot",
            Message::InstallSnapshotResponse(_) => "InstallSnapshotResponse",
        }
    }

    /// True for the two response kinds.
    pub fn is_response(&self) -> bool {
        matches!(
            self,
            Message::RequestVoteResponse(_)
                | Message::AppendEntriesResponse(_)
                | Message::InstallSnapshotResponse(_)
        )
    }
}

/// A message with its routing header. `term` is the sender's `current_term` (every RPC carries it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Sender.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// Sender's current term.
    pub term: Term,
    /// The RPC.
    pub message: Message,
}

/// The largest term a peer may name. Terms only grow, one election at a time: a node pushed to
/// `u64::MAX` could never campaign again (its next term would overflow), and nothing could ever
/// out-vote a term no node can exceed, so one forged message would leave the cluster without a
/// leader for good, and the damage would be on disk. Half the range is far beyond any real
/// cluster (a new term every millisecond for 290 million years) and leaves the rest as headroom,
/// so anything above it is refused as bad input.
pub const MAX_TERM: Term = u64::MAX / 2;

/// The largest log index a peer may name, for the same reason as [`MAX_TERM`]: a log said to
/// reach `u64::MAX` could never grow past it, and `index + 1` arithmetic near the limit would
/// overflow.
pub const MAX_INDEX: Index = u64::MAX / 2;

impl Envelope {
    /// Checks what a well-behaved peer always satisfies, so a garbled or forged message is refused
    /// as bad input instead of reaching the log: no term above [`MAX_TERM`] and no index above
    /// [`MAX_INDEX`], entries contiguous after `prev_log_index`, terms never above the sender's
    /// term nor decreasing.
    pub fn validate(&self) -> Result<(), String> {
        let term = self.term;
        if term > MAX_TERM {
            return Err(format!("term {term} is above the largest allowed term {MAX_TERM}"));
        }
        let index = |name: &str, i: Index| {
            if i > MAX_INDEX {
                Err(format!("{name} {i} is above the largest allowed index {MAX_INDEX}"))
            } else {
                Ok(())
            }
        };
        match &self.message {
            Message::RequestVote(rv) => {
                index("last_log_index", rv.last_log_index)?;
                if rv.last_log_term > term {
                    return Err(format!(
                        "last_log_term {} is above the message's term {term}",
                        rv.last_log_term
                    ));
                }
                Ok(())
            }
            Message::AppendEntries(ae) => {
                index("leader_commit", ae.leader_commit)?;
                let last = ae.prev_log_index.checked_add(ae.entries.len() as Index);
                index("prev_log_index + entries", last.unwrap_or(Index::MAX))?;
                if ae.prev_log_term > term {
                    return Err(format!("prev_log_term {} is above term {term}", ae.prev_log_term));
                }
                let mut last_term = ae.prev_log_term;
                for (i, e) in ae.entries.iter().enumerate() {
                    let want = ae.prev_log_index.checked_add(i as Index + 1);
                    if Some(e.index) != want {
                        return Err(format!("entry {i} has index {}, expected {want:?}", e.index));
                    }
                    if e.term > term || e.term < last_term {
                        return Err(format!("entry {} has term {} out of order", e.index, e.term));
                    }
                    last_term = e.term;
                }
                Ok(())
            }
            Message::AppendEntriesResponse(r) => {
                index("match_index", r.match_index)?;
                index("conflict_index", r.conflict_index)?;
                match r.conflict_term {
                    Some(t) if t > MAX_TERM => Err(format!("conflict_term {t} is too large")),
                    _ => Ok(()),
                }
            }
            Message::InstallSnapshot(is) => {
                index("last_included_index", is.last_included_index)?;
                if is.last_included_term > term {
                    return Err(format!(
                        "last_included_term {} is above term {term}",
                        is.last_included_term
                    ));
                }
                Ok(())
            }
            Message::InstallSnapshotResponse(r) => index("match_index", r.match_index),
            Message::TimeoutNow => Ok(()),
            Message::RequestVoteResponse(_) => Ok(()),
        }
    }
}

/// `5@2`: an entry by its index and term, the way the paper's figures draw a log.
impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.index, self.term)
    }
}

/// One line per message, as the scripted tests (`tests/scripts/`) print them:
/// `n1->n2 AppendEntries term=3 prev=5@2 entries=[6@3 7@3] commit=5 seq=4`. `term` is the
/// envelope's (the sender's current term; for a PreVote, the term it would campaign in).
impl fmt::Display for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}->{} {} term={}", self.from, self.to, self.message.kind(), self.term)?;
        match &self.message {
            Message::RequestVote(m) => {
                write!(f, " last={}@{}", m.last_log_index, m.last_log_term)?;
                f.write_str(if m.transfer { " transfer" } else { "" })
            }
            Message::RequestVoteResponse(m) => {
                f.write_str(if m.vote_granted { " granted" } else { " rejected" })
            }
            Message::AppendEntries(m) => {
                write!(f, " prev={}@{} entries=[", m.prev_log_index, m.prev_log_term)?;
                for (i, e) in m.entries.iter().enumerate() {
                    write!(f, "{}{e}", if i == 0 { "" } else { " " })?;
                }
                write!(f, "] commit={} seq={}", m.leader_commit, m.seq)
            }
            Message::AppendEntriesResponse(m) if m.success => {
                write!(f, " success match={} seq={}", m.match_index, m.seq)
            }
            Message::AppendEntriesResponse(m) => {
                f.write_str(" reject")?;
                if let Some(t) = m.conflict_term {
                    write!(f, " conflict_term={t}")?;
                }
                write!(f, " conflict_index={} seq={}", m.conflict_index, m.seq)
            }
            Message::InstallSnapshot(m) => {
                write!(f, " last={}@{}", m.last_included_index, m.last_included_term)
            }
            Message::InstallSnapshotResponse(m) => write!(f, " match={}", m.match_index),
            Message::TimeoutNow => Ok(()),
        }
    }
}

/// Standard base64 (RFC 4648, with padding) for entry commands in JSON, through the well-kept
/// `base64` crate (it replaced forty hand-written lines; the round-trip test below stayed).
pub mod base64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Encodes bytes as standard, padded base64 text (RFC 4648 §4).
    pub fn encode(data: &[u8]) -> String {
        STANDARD.encode(data)
    }

    /// Decodes standard, padded base64 text; `None` if it is not valid base64.
    pub fn decode(text: &str) -> Option<Vec<u8>> {
        STANDARD.decode(text).ok()
    }

    pub(crate) fn serialize<S: Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(data))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        decode(&text).ok_or_else(|| serde::de::Error::custom("invalid base64 in entry command"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_every_length() {
        for len in 0..40 {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let text = base64::encode(&data);
            assert_eq!(base64::decode(&text), Some(data));
        }
        assert_eq!(base64::encode(b"Man"), "TWFu");
        assert_eq!(base64::encode(b"Ma"), "TWE=");
        assert_eq!(base64::decode("TQ=="), Some(b"M".to_vec()));
        assert_eq!(base64::decode("T!=="), None);
        assert_eq!(base64::decode("TQ="), None);
        assert_eq!(base64::decode("T=Q="), None);
    }

    #[test]
    fn envelopes_print_on_one_line() {
        let env = |message| Envelope { from: "n2".into(), to: "n1".into(), term: 3, message };
        let reject = AppendEntriesResponse {
            success: false,
            match_index: 0,
            conflict_term: Some(2),
            conflict_index: 4,
            seq: 7,
        };
        assert_eq!(
            env(Message::AppendEntriesResponse(reject.clone())).to_string(),
            "n2->n1 AppendEntriesResponse term=3 reject conflict_term=2 conflict_index=4 seq=7"
        );
        let append = AppendEntries {
            prev_log_index: 5,
            prev_log_term: 2,
            entries: vec![
                Entry { index: 6, term: 3, command: vec![] },
                Entry { index: 7, term: 3, command: b"x".to_vec() },
            ],
            leader_commit: 5,
            seq: 4,
        };
        assert_eq!(
            env(Message::AppendEntries(append.clone())).to_string(),
            "n2->n1 AppendEntries term=3 prev=5@2 entries=[6@3 7@3] commit=5 seq=4"
        );
        let pre_vote =
            RequestVote { last_log_index: 7, last_log_term: 3, pre_vote: true, transfer: false };
        assert_eq!(
            env(Message::RequestVote(pre_vote.clone())).to_string(),
            "n2->n1 PreVote term=3 last=7@3"
        );
        let kinds = [
            Message::RequestVote(pre_vote).kind(),
            Message::AppendEntries(append).kind(),
            Message::AppendEntriesResponse(reject).kind(),
        ];
        assert!(kinds.iter().all(|k| Message::KINDS.contains(k)), "{kinds:?}");
    }

    #[test]
    fn envelope_json_round_trip() {
        let env = Envelope {
            from: "node1".into(),
            to: "node2".into(),
            term: 3,
            message: Message::AppendEntries(AppendEntries {
                prev_log_index: 4,
                prev_log_term: 2,
                entries: vec![Entry { index: 5, term: 3, command: b"{\"op\":1}".to_vec() }],
                leader_commit: 4,
                seq: 9,
            }),
        };
        let json = serde_json::to_string(&env).unwrap();
        let back: Envelope = serde_json::from_str(&json).unwrap();
        assert_eq!(back, env);
    }

    fn vote(term: Term, last_log_index: Index, last_log_term: Term) -> Envelope {
        Envelope {
            from: "node1".into(),
            to: "node2".into(),
            term,
            message: Message::RequestVote(RequestVote {
                last_log_index,
                last_log_term,
                pre_vote: false,
                transfer: false,
            }),
        }
    }

    fn append(term: Term, prev: Index, entries: usize, leader_commit: Index) -> Envelope {
        let entries = (0..entries as Index)
            .map(|i| Entry { index: prev.wrapping_add(1 + i), term, command: Vec::new() })
            .collect();
        Envelope {
            from: "node1".into(),
            to: "node2".into(),
            term,
            message: Message::AppendEntries(AppendEntries {
                prev_log_index: prev,
                prev_log_term: 0,
                entries,
                leader_commit,
                seq: 1,
            }),
        }
    }

    #[test]
    fn terms_and_indexes_a_node_could_not_exceed_are_refused() {
        // At the bound: still fine (a node there can still count upward for ages).
        assert_eq!(vote(MAX_TERM, MAX_INDEX, 1).validate(), Ok(()));
        assert_eq!(append(MAX_TERM, MAX_INDEX - 2, 2, MAX_INDEX).validate(), Ok(()));
        // Above it, each field on its own.
        for bad in [
            vote(MAX_TERM + 1, 0, 0),
            vote(u64::MAX - 1, 0, 0),
            vote(u64::MAX, 0, 0),
            vote(3, MAX_INDEX + 1, 1),
            append(3, MAX_INDEX + 1, 0, 0),
            append(3, MAX_INDEX - 1, 2, 0),
            append(3, u64::MAX - 1, 5, 0),
            append(3, 0, 0, MAX_INDEX + 1),
            append(MAX_TERM + 1, 0, 1, 0),
        ] {
            let refused = bad.validate();
            assert!(refused.is_err(), "accepted {bad:?}");
        }
        let response = |match_index, conflict_index, conflict_term| Envelope {
            from: "node2".into(),
            to: "node1".into(),
            term: 3,
            message: Message::AppendEntriesResponse(AppendEntriesResponse {
                success: false,
                match_index,
                conflict_term,
                conflict_index,
                seq: 1,
            }),
        };
        assert_eq!(response(5, 6, Some(2)).validate(), Ok(()));
        assert!(response(MAX_INDEX + 1, 0, None).validate().is_err());
        assert!(response(0, u64::MAX, None).validate().is_err());
        assert!(response(0, 0, Some(u64::MAX)).validate().is_err());
        let snapshot = |index, term| Envelope {
            from: "node1".into(),
            to: "node2".into(),
            term: 9,
            message: Message::InstallSnapshot(InstallSnapshot {
                last_included_index: index,
                last_included_term: term,
                membership: None,
            }),
        };
        assert_eq!(snapshot(100, 9).validate(), Ok(()));
        assert!(snapshot(MAX_INDEX + 1, 9).validate().is_err());
        assert!(snapshot(100, 10).validate().is_err());
        let installed = Envelope {
            from: "node2".into(),
            to: "node1".into(),
            term: 9,
            message: Message::InstallSnapshotResponse(InstallSnapshotResponse {
                match_index: u64::MAX,
            }),
        };
        assert!(installed.validate().is_err());
    }
}
