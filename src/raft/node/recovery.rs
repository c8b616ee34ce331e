//! Disaster recovery: a survivor of a cluster that lost its quorum for good restarts as a
//! one-node cluster from its own data (etcd's `--force-new-cluster`).
//!
//! This is the one place where RaftLabKV steps outside Raft on purpose. Raft's safety rests on
//! majorities: once a majority of the voters is gone for good (disks dead, machines lost), no
//! configuration change can commit, because a change needs the very majority that is missing
//! (thesis §4.1). The only way forward is to tell a survivor, by hand, that it alone is the
//! cluster. [`RaftNode::force_new_cluster`] does that by appending a configuration entry, written
//! by nobody's leadership, whose only voter is this node.
//!
//! What it keeps and what it cannot promise:
//! - **The whole log is kept**, uncommitted tail included, and will be committed by the new
//!   one-node cluster, exactly as if this node had won an election (§5.4.1: a leader commits what
//!   it holds). etcd instead drops the entries past the commit index it knows; we keep them,
//!   because any of them may already have been acknowledged by the old leader, and a survivor
//!   that holds it is the only place it still exists.
//! - **Writes acknowledged by the old cluster but not in this node's log are lost.** Pick the
//!   survivor whose log is the most up to date (highest last term, then highest last index, as
//!   `raftlabkv-server dump` or `/status` shows).
//! - The new configuration gets a **new cluster id**, so an old member that comes back with its
//!   old data is refused (403 `wrong_cluster`) instead of overwriting the new cluster's log with
//!   its own (its term may be higher, and its log may hold other entries at the same indexes).
//!   Old members rejoin only with empty data dirs, through `member add` and `--join`.
//! - The entry is written in a term above every term this node has seen, so no entry another
//!   node holds can carry the same index and term (log matching, §5.3, stays true).

use super::RaftNode;
use crate::error::{Error, Result};
use crate::raft::role::Role;
use crate::raft::{Entry, Index, Membership, NodeId, Term};

/// What [`RaftNode::force_new_cluster`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForcedCluster {
    /// The configuration that was in force before.
    pub old: Membership,
    /// The configuration written: this node alone, as a voter.
    pub new: Membership,
    /// Where the new configuration entry is.
    pub index: Index,
    /// Its term (above every term this node had seen).
    pub term: Term,
    /// The commit index this node can vouch for at start (its snapshot's index: the commit
    /// index is not kept on disk); entries after it may never have been committed by the old
    /// cluster, and will be now.
    pub known_commit: Index,
}

impl RaftNode {
    /// Makes this node, just started from its storage, the only voter of a new cluster with id
    /// `cluster_id`, at address `addr` (what it keeps and loses: `src/raft/node/recovery.rs`,
    /// and the Raft essay's "When a majority is lost for good"). Returns `None`
    /// when it already is the only member (nothing to do), and an error when it has no
    /// configuration to recover from (an empty data dir) or has already started working.
    pub fn force_new_cluster(
        &mut self,
        addr: String,
        cluster_id: String,
    ) -> Result<Option<ForcedCluster>> {
        if !matches!(self.role, Role::Follower(_)) || self.ticks > 0 {
            return Err(Error::Internal(
                "force_new_cluster is only for a node just started".into(),
            ));
        }
        let Some(old) = self.membership().cloned() else {
            return Err(Error::Config(format!(
                "{} holds no configuration (an empty or unknown data dir): there is no cluster \
                 to recover; bootstrap a new one with --peers instead",
                self.config.id
            )));
        };
        let me: NodeId = self.config.id.clone();
        if old.voters.len() == 1 && old.is_voter(&me) && old.learners.is_empty() {
            return Ok(None);
        }
        let term = self.current_term.max(self.log.last_term()) + 1;
        let index = self.log.last_index() + 1;
        let mut new = Membership::of_voters(cluster_id, [(me.clone(), addr)].into());
        new.learners.clear();
        self.current_term = term;
        self.voted_for = Some(me);
        self.save_hard_state()?;
        let entry = Entry { index, term, command: new.encode() };
        self.log.append(std::slice::from_ref(&entry))?;
        self.configs.appended(std::slice::from_ref(&entry));
        let known_commit = self.log.commit_index;
        Ok(Some(ForcedCluster { old, new, index, term, known_commit }))
    }
}
