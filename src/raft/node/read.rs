//! Linearizable reads without a log write: ReadIndex (thesis §6.4). The leader notes its commit
//! index, confirms with one heartbeat round that a majority still follows it (AppendEntries carry
//! a `seq`, and each follower's answer says which request it answers), and releases the read for
//! the shell to serve once the state machine has applied that index.
//!
//! Lease reads (thesis §6.4.1, opt-in): a follower that answered a request of this leader
//! ignores vote requests for a minimum election timeout after it got it (check quorum's rule),
//! so no other leader can be elected until that long after the leader *sent* a request that a
//! majority answered. Within that window, less a margin for clock drift, the leader may serve a
//! read at its commit index with no round at all. It rests on clocks: a follower's timer must not
//! run faster than the leader's by more than the drift the shell allowed for.

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

    /// The shell's monotonic clock, in milliseconds: sends are stamped with it for the lease.
    /// A clock given late only shortens the lease (the stamp is earlier than the send).
    pub fn set_clock(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
    }

    /// A read under the leader's lease, if it holds at `now_ms` (the shell's clock, read just
    /// now): `Output::reads` carries `id` at once and this returns true. Otherwise it is a
    /// ReadIndex read ([`RaftNode::read`]) and this returns false.
    ///
    /// The lease holds while a majority of the voters (this leader counting itself) each
    /// answered a request sent less than [`Config::lease_ms`](crate::raft::Config::lease_ms)
    /// ago, the leader has committed an entry of its term, and it has not started handing its
    /// leadership over (a transfer's RequestVotes are granted inside leases).
    pub fn read_lease(&mut self, id: u64, now_ms: u64) -> Result<(bool, Output)> {
        self.set_clock(now_ms);
        if self.lease_holds(now_ms) {
            let Role::Leader(leader) = &self.role else {
                return Err(self.not_leader_error());
            };
            let index = self.log.commit_index.max(leader.term_start);
            self.out.reads.push(ReadState { id, index });
            return Ok((true, self.take_output()));
        }
        Ok((false, self.read(id)?))
    }

    /// True while this leader's lease holds at `now_ms` (see [`RaftNode::read_lease`]).
    pub fn lease_holds(&self, now_ms: u64) -> bool {
        let lease = self.config.lease_ms;
        let (Role::Leader(leader), Some(membership)) = (&self.role, self.configs.latest()) else {
            return false;
        };
        if lease == 0
            || leader.transfer.is_some()
            || leader.lease_forfeited
            || self.log.commit_index < leader.term_start
            || !membership.is_voter(&self.config.id)
        {
            return false;
        }
        let fresh = leader.progress.iter().filter(|(_, p)| {
            p.lease_acked_ms.is_some_and(|sent| now_ms < sent.saturating_add(lease))
        });
        membership.has_quorum(fresh.map(|(id, _)| id).chain([&self.config.id]))
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
