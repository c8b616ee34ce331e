//! A node's static configuration: its id, how a brand-new cluster starts, and its timeouts in
//! ticks. Who the members are is not here: that is in the log ([`crate::raft::Membership`]).

use crate::error::{Error, Result};
use crate::raft::{Membership, NodeId};

/// Static configuration of one node. Time is in ticks; the shell decides how long a tick is.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's id.
    pub id: NodeId,
    /// The configuration of a brand-new cluster: written as the first log entry (index 1, term 1)
    /// when the node starts with an empty log and no snapshot, identically on every initial
    /// member, as etcd does. Ignored once the log holds anything: a node's members are the latest
    /// configuration in its log. `None` for a node that joins an existing cluster: it waits,
    /// without campaigning, until a leader sends it a configuration that contains it.
    pub bootstrap: Option<Membership>,
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
    /// Pipelining: most AppendEntries awaiting their answers per follower once it is known to
    /// match (etcd's `MaxInflightMsgs`). 1 sends the next request only after the previous one is
    /// answered, so every round trip carries all that was proposed meanwhile; more lets a request
    /// leave while earlier ones are still on the wire or in the follower's fsync. A follower
    /// being probed (after a rejection or a lost request) always gets one at a time.
    pub max_inflight: usize,
    /// A leader that has not heard from a majority for an election timeout steps down (§6.2 of
    /// the thesis: "check quorum"), so a partitioned leader stops accepting work. With it, a node
    /// that heard from a leader less than a minimum election timeout ago ignores RequestVotes
    /// (§6 of the paper, end), so a removed or cut-off node cannot depose a working leader.
    pub check_quorum: bool,
    /// Run a PreVote round before each real election (thesis §9.6).
    pub pre_vote: bool,
    /// Seed of the RNG that randomises election timeouts.
    pub seed: u64,
    /// Lease reads (thesis §6.4.1): how long, in the shell's milliseconds
    /// ([`crate::raft::RaftNode::set_clock`]), a leader may serve reads on its own after
    /// sending a request that a majority answered. 0 turns lease reads off. It must be below
    /// what a follower's vote-ignoring window lasts in real time, `(election_ticks_min - 1)`
    /// ticks, divided by the clock-rate drift assumed; the shell computes it (see
    /// [`crate::raft::RaftNode::read_lease`]). Nonzero also makes a node that just started ignore
    /// vote requests for its first `election_ticks_min` ticks, as if it had heard from a leader:
    /// it may have answered one just before it restarted. Set it alike on every node.
    pub lease_ms: u64,
}

impl Config {
    /// Defaults for a 10 ms tick: heartbeat 50 ms, election timeout 300–600 ms; bootstraps a
    /// cluster of `id` and `peers` as voters (addresses are the ids: for simulations; the server
    /// sets [`Config::bootstrap`] with real addresses and a cluster id).
    pub fn new(id: impl Into<NodeId>, peers: Vec<NodeId>) -> Self {
        let id = id.into();
        let voters = peers.iter().chain([&id]).map(|p| (p.clone(), p.clone())).collect();
        Config {
            bootstrap: Some(Membership::of_voters("sim", voters)),
            id,
            heartbeat_ticks: 5,
            election_ticks_min: 30,
            election_ticks_max: 60,
            rpc_timeout_ticks: 30,
            max_append_entries: 4096,
            max_append_bytes: 4 << 20,
            max_inflight: 1,
            check_quorum: true,
            pre_vote: true,
            seed: 0,
            lease_ms: 0,
        }
    }

    /// The largest pipelining window [`Config::validate`] accepts (the shell runs a sending thread
    /// per slot and follower).
    pub const MAX_INFLIGHT: usize = 16;

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
        if let Some(m) = &self.bootstrap
            && !m.is_voter(&self.id)
        {
            return bad("a bootstrapping node must be one of the cluster's voters");
        }
        if self.max_append_entries == 0 {
            return bad("max_append_entries must be at least 1");
        }
        if self.max_inflight == 0 || self.max_inflight > Self::MAX_INFLIGHT {
            return bad(&format!("max_inflight must be 1 to {}", Self::MAX_INFLIGHT));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipelining_window_outside_1_to_16_is_refused() {
        let mut c = Config::new("n1", vec!["n2".into(), "n3".into()]);
        assert!(c.validate().is_ok());
        for (window, ok) in
            [(0, false), (1, true), (4, true), (Config::MAX_INFLIGHT, true), (17, false)]
        {
            c.max_inflight = window;
            match c.validate() {
                Ok(()) => assert!(ok, "window {window} accepted"),
                Err(e) => {
                    assert!(!ok, "window {window} refused: {e}");
                    assert!(e.to_string().contains("max_inflight must be 1 to 16"), "{e}");
                }
            }
        }
    }
}
