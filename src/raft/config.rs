//! A node's static configuration: its id, its peers, and its timeouts in ticks.

use std::collections::BTreeSet;

use crate::error::{Error, Result};
use crate::raft::NodeId;

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
        let bad = |m: &str| Err(Error::Config(format!("invalid Raft configuration: {m}")));
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
