//! Snapshots and log compaction (§7): recording a snapshot the state machine took, sending one to
//! a follower whose entries were compacted away, and installing one from the leader.

use super::RaftNode;
use crate::error::{Error, Result};
use crate::raft::role::{Inflight, Role};
use crate::raft::{InstallSnapshot, InstallSnapshotResponse, Message, NodeId, SnapshotMeta, Term};

impl RaftNode {
    /// The state machine saved a snapshot through `meta` (its data is durable): record it, and
    /// compact the log up to `meta.index - trailing`, keeping `trailing` entries so a follower that
    /// lags slightly still catches up from the log rather than with a whole snapshot (§7).
    pub fn snapshot_taken(&mut self, meta: SnapshotMeta, trailing: u64) -> Result<()> {
        if meta.index > self.log.last_applied {
            return Err(Error::Internal(format!(
                "snapshot at {} is ahead of the applied index {}",
                meta.index, self.log.last_applied
            )));
        }
        if self.log.storage.snapshot().is_some_and(|s| s.index >= meta.index) {
            return Ok(());
        }
        self.log.storage.set_snapshot(meta)?;
        let through = meta.index.saturating_sub(trailing);
        if through >= self.log.first_index() {
            // The configuration entry in force at `through` may be among those compacted away.
            if let Some(m) = self.configs.at(through).cloned() {
                self.log.storage.save_membership_base(through, &m)?;
                self.configs.rebase(through, m);
            }
            self.log.storage.compact(through)?;
        }
        Ok(())
    }

    /// InstallSnapshot receiver (Figure 13, simplified: the data arrived whole, beside the RPC).
    pub(super) fn handle_install_snapshot(
        &mut self,
        from: NodeId,
        term: Term,
        req: InstallSnapshot,
    ) -> Result<()> {
        if term < self.current_term {
            let resp = InstallSnapshotResponse { match_index: 0 };
            self.send_after_sync(from, Message::InstallSnapshotResponse(resp));
            return Ok(());
        }
        match &mut self.role {
            Role::Follower(f) => f.leader = Some(from.clone()),
            Role::Candidate(_) => self.become_follower(term, Some(from.clone()))?,
            Role::Leader(_) => {
                log::error!("{} leads term {term}, yet {from} sent it a snapshot", self.config.id);
                return Ok(());
            }
        }
        self.election_elapsed = 0;
        let meta = SnapshotMeta { index: req.last_included_index, term: req.last_included_term };
        let match_index = if meta.index <= self.log.commit_index {
            // We already have (and applied) everything it covers: committed entries match.
            self.log.commit_index
        } else {
            if let Some(m) = req.membership.clone() {
                self.log.storage.save_membership_base(meta.index, &m)?;
            }
            self.log.storage.install_snapshot(meta)?;
            match req.membership {
                Some(m) => self.configs.rebase(meta.index, m),
                None => {
                    let log = &self.log;
                    self.configs.retain_held(|i| log.term_at(i));
                }
            }
            self.log.commit_index = meta.index;
            self.log.last_applied = meta.index;
            self.out.restore = Some(meta);
            meta.index
        };
        let resp = InstallSnapshotResponse { match_index };
        self.send_after_sync(from, Message::InstallSnapshotResponse(resp));
        Ok(())
    }

    pub(super) fn handle_snapshot_response(
        &mut self,
        from: NodeId,
        resp: InstallSnapshotResponse,
    ) -> Result<()> {
        let (last_index, ticks) = (self.log.last_index(), self.ticks);
        let Some(progress) = self.role.progress_mut(&from) else {
            return Ok(());
        };
        progress.recent_active = true;
        progress.last_contact_tick = ticks;
        progress.pending_snapshot = None;
        // Probe from the snapshot on: the next answer says whether the follower's log matches.
        progress.stop_pipelining();
        progress.record_match(resp.match_index, last_index);
        progress.next_index = progress.match_index + 1;
        self.maybe_commit()?;
        self.check_reads();
        self.maybe_send_append(&from, false)
    }

    /// §7: `peer` needs entries compacted away, so it is sent the snapshot instead (one at a time:
    /// not while a request is in flight, unless a heartbeat is due and the last one was lost).
    pub(super) fn maybe_send_snapshot(&mut self, peer: &NodeId, heartbeat: bool) -> Result<()> {
        let (ticks, snapshot) = (self.ticks, self.log.storage.snapshot());
        let membership = snapshot.and_then(|s| self.configs.at(s.index).cloned());
        let Role::Leader(leader) = &mut self.role else {
            return Ok(());
        };
        let Some(progress) = leader.progress.get_mut(peer) else {
            return Ok(());
        };
        if !progress.inflight.is_empty() && !heartbeat {
            return Ok(());
        }
        let Some(snapshot) = snapshot else {
            return Err(Error::Internal(format!(
                "{peer} needs compacted entries but there is no snapshot"
            )));
        };
        leader.seq += 1;
        progress.stop_pipelining();
        progress.inflight.push_back(Inflight { seq: leader.seq, sent_at_tick: ticks });
        progress.pending_snapshot = Some(snapshot.index);
        log::debug!("{} sends snapshot {} to {peer}", self.config.id, snapshot.index);
        let message = Message::InstallSnapshot(InstallSnapshot {
            last_included_index: snapshot.index,
            last_included_term: snapshot.term,
            membership,
        });
        self.send(peer.clone(), message);
        Ok(())
    }
}
