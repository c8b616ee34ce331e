//! Linearizable reads without a log write: ReadIndex (thesis §6.4). The leader notes its commit
//! index, confirms with one heartbeat round that a majority still follows it (AppendEntries carry
//! a `seq`, and each follower's answer says which request it answers), and releases the read for
//! the shell to serve once the state machine has applied that index.

use super::RaftNode;
use crate::error::Result;
use crate::raft::role::{PendingRead, Role};
use crate::raft::{Output, ReadState};

impl RaftNode {
    /// Starts a linearizable read (ReadIndex): once a majority confirms this node still leads,
    /// `Output::reads` carries `id` and the index the state machine must reach. Elsewhere:
    /// [`crate::error::Error::NotLeader`].
    pub fn read(&mut self, id: u64) -> Result<Output> {
        let commit_index = self.log.commit_index;
        let Role::Leader(leader) = &mut self.role else {
            return Err(self.not_leader_error());
        };
        let seq = leader.seq + 1;
        leader.reads.push_back(PendingRead { id, seq, index: commit_index });
        for peer in self.other_members() {
            self.maybe_send_append(&peer, false)?;
        }
        self.check_reads();
        Ok(self.take_output())
    }

    /// Releases every read whose heartbeat round a majority has answered.
    pub(super) fn check_reads(&mut self) {
        let commit_index = self.log.commit_index;
        let (me, membership) = (&self.config.id, self.configs.latest());
        let Role::Leader(leader) = &mut self.role else {
            return;
        };
        let Some(membership) = membership else { return };
        // Until this term's no-op commits, our commit index may be behind the true one.
        if commit_index < leader.term_start {
            return;
        }
        while let Some(read) = leader.reads.front() {
            // A majority of the voters, this leader among them if it is one (a leader removing
            // itself does not count itself, §4.2.2), must have answered this read's round.
            let acked = leader.progress.iter().filter(|(_, p)| p.acked_seq >= read.seq);
            let ids = acked.map(|(id, _)| id).chain([me]);
            if !membership.has_quorum(ids) {
                break;
            }
            let index = read.index.max(leader.term_start);
            self.out.reads.push(ReadState { id: read.id, index });
            leader.reads.pop_front();
        }
    }
}
