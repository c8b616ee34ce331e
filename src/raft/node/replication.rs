//! Log replication (§5.3): the leader's AppendEntries with flow control and batching, the
//! follower's consistency check and conflict-only truncation, fast backtracking, and commitment
//! (§5.4.2, Figure 8). The leader's heartbeat and check-quorum timers live here too.

use super::RaftNode;
use crate::error::{Error, Result};
use crate::raft::role::{Inflight, Progress, Role};
use crate::raft::{AppendEntries, AppendEntriesResponse, Entry, Index, Message, NodeId, Term};

impl RaftNode {
    /// AppendEntries receiver implementation (Figure 2), with the rejection hint.
    pub(super) fn handle_append_entries(
        &mut self,
        from: NodeId,
        term: Term,
        req: AppendEntries,
    ) -> Result<()> {
        let reject = |conflict_term, conflict_index| AppendEntriesResponse {
            success: false,
            match_index: 0,
            conflict_term,
            conflict_index,
            seq: req.seq,
        };
        if term < self.current_term {
            // Rule 1: reply false; our term in the envelope tells the stale leader to step down.
            // seq 0: this answer says nothing about the leader's requests of our term.
            let resp = AppendEntriesResponse { seq: 0, ..reject(None, 0) };
            self.send_after_sync(from, Message::AppendEntriesResponse(resp));
            return Ok(());
        }
        // A candidate that hears from the leader of its own term steps back (§5.2).
        match &mut self.role {
            Role::Follower(f) => f.leader = Some(from.clone()),
            Role::Candidate(_) => self.become_follower(term, Some(from.clone()))?,
            Role::Leader(_) => {
                // Election Safety says this cannot happen; a forged or buggy peer must not crash
                // us, so refuse loudly and keep leading.
                log::error!(
                    "{} leads term {term}, yet {from} claims to lead it too",
                    self.config.id
                );
                let resp = reject(None, 0);
                self.send_after_sync(from, Message::AppendEntriesResponse(resp));
                return Ok(());
            }
        }
        self.election_elapsed = 0;

        // Entries at or below our snapshot are committed, so they match: skip them.
        let snapshot_index = self.log.first_index() - 1;
        let (prev_log_index, prev_log_term, entries) = if req.prev_log_index < snapshot_index {
            let skip = (snapshot_index - req.prev_log_index) as usize;
            if skip > req.entries.len() {
                let resp = AppendEntriesResponse {
                    success: true,
                    match_index: snapshot_index,
                    conflict_term: None,
                    conflict_index: 0,
                    seq: req.seq,
                };
                self.send_after_sync(from, Message::AppendEntriesResponse(resp));
                return Ok(());
            }
            let prev_term = self.log.term_at(snapshot_index).unwrap_or(0);
            (snapshot_index, prev_term, &req.entries[skip..])
        } else {
            (req.prev_log_index, req.prev_log_term, &req.entries[..])
        };

        // Rule 2: the consistency check.
        if !self.log.matches(prev_log_index, prev_log_term) {
            let resp = match self.log.term_at(prev_log_index) {
                None => reject(None, self.log.last_index() + 1),
                Some(t) => reject(Some(t), self.log.first_index_of_term(t, prev_log_index)),
            };
            self.send_after_sync(from, Message::AppendEntriesResponse(resp));
            return Ok(());
        }
        // Rules 3 and 4.
        self.log.append_from_leader(entries)?;
        // A configuration takes effect on append (thesis §4.1), and is undone with a truncated
        // suffix.
        let log = &self.log;
        self.configs.retain_held(|i| log.term_at(i));
        self.configs.appended(entries);
        // Only this far is our log known to equal the leader's; anything after may be stale.
        let match_index = prev_log_index + entries.len() as Index;
        // Rule 5.
        if req.leader_commit > self.log.commit_index {
            let new_commit = req.leader_commit.min(match_index);
            if new_commit > self.log.commit_index {
                self.log.commit_index = new_commit;
                self.emit_committed()?;
            }
        }
        let resp = AppendEntriesResponse {
            success: true,
            match_index,
            conflict_term: None,
            conflict_index: 0,
            seq: req.seq,
        };
        self.send_after_sync(from, Message::AppendEntriesResponse(resp));
        Ok(())
    }

    pub(super) fn handle_append_response(
        &mut self,
        from: NodeId,
        resp: AppendEntriesResponse,
    ) -> Result<()> {
        let last_index = self.log.last_index();
        let ticks = self.ticks;
        let sent_seq = match &self.role {
            Role::Leader(leader) => leader.seq,
            _ => return Ok(()),
        };
        let Some(progress) = self.role.progress_mut(&from) else {
            return Ok(());
        };
        progress.recent_active = true;
        progress.last_contact_tick = ticks;
        // Is this the answer to the latest request this follower answered so far?
        let newest = resp.seq >= progress.acked_seq;
        progress.acked_seq = progress.acked_seq.max(resp.seq);
        // The answer to request `seq` (of this term: stale terms answer seq 0) means the
        // follower reset its election timer after we sent it: the lease runs from the send.
        while let Some(&(seq, sent_ms)) = progress.lease_sent.front() {
            if seq > resp.seq {
                break;
            }
            progress.lease_sent.pop_front();
            if seq == resp.seq {
                progress.lease_acked_ms = progress.lease_acked_ms.max(Some(sent_ms));
            }
        }
        if progress.pending_snapshot.is_some() {
            // A snapshot is on its way: this answers an AppendEntries sent before it, and must not
            // touch the snapshot's in-flight slot (clearing it would leave the snapshot marked
            // pending with nothing to time it out: the follower would never be sent anything).
            // It still counts as a heartbeat answer for reads.
            self.check_reads();
            return Ok(());
        }
        // Requests are answered in the order sent unless the network reorders them; either way
        // an answer to `seq` frees the slots of the requests up to it (an earlier one answered
        // later changes nothing: matches only go up, and its rejection is stale).
        while progress.inflight.front().is_some_and(|f| f.seq <= resp.seq) {
            progress.inflight.pop_front();
        }
        if resp.success {
            progress.record_match(resp.match_index, last_index);
            progress.next_index = progress.next_index.max(progress.match_index + 1);
            progress.replicating = true;
        } else if resp.seq > progress.backed_up_at_seq {
            // Fast backtracking (§5.3, end): skip a whole conflicting term per round trip.
            let hint = match resp.conflict_term {
                Some(t) => match self.log.last_index_of_term(t) {
                    Some(i) => i + 1,
                    None => resp.conflict_index,
                },
                None => resp.conflict_index,
            };
            if hint <= progress.match_index && newest {
                // Not a stale rejection: the follower lost entries it had acknowledged (its data
                // dir was wiped, or it ran with --fsync=false). Start over from what it has;
                // lowering match_index only ever makes commits more conservative.
                log::warn!(
                    "{from} no longer holds entries through {} (its log ends before {hint}); \
                     resending",
                    progress.match_index
                );
                progress.match_index = hint.saturating_sub(1);
            }
            // Never back up past what the follower is known to hold (a stale rejection).
            let next = hint.clamp(progress.match_index + 1, last_index + 1);
            if next < progress.next_index {
                // Whatever else is in flight was sent on the wrong guess: forget it, probe.
                progress.next_index = next;
                progress.stop_pipelining();
                progress.backed_up_at_seq = sent_seq;
            }
        }
        self.maybe_commit()?;
        self.check_reads();
        self.maybe_send_append(&from, false)?;
        self.maybe_send_timeout_now(&from);
        Ok(())
    }

    pub(super) fn tick_leader(&mut self) -> Result<()> {
        let ticks = self.ticks;
        let (heartbeat_ticks, election_ticks, rpc_timeout) = (
            self.config.heartbeat_ticks,
            self.config.election_ticks_min,
            self.config.rpc_timeout_ticks,
        );
        let check_quorum = self.config.check_quorum;
        self.maybe_abandon_transfer();
        let (me, membership) = (&self.config.id, self.configs.latest());
        let Role::Leader(leader) = &mut self.role else {
            return Ok(());
        };
        // Presume lost an AppendEntries nobody answered (and all sent after it): resend from the
        // last known match.
        let last_seq = leader.seq;
        for p in leader.progress.values_mut() {
            // A snapshot transfer may take a while: give it ten RPC timeouts.
            let timeout = if p.pending_snapshot.is_some() { rpc_timeout * 10 } else { rpc_timeout };
            if p.inflight.front().is_some_and(|f| ticks - f.sent_at_tick >= timeout) {
                p.reset_to_probe(last_seq);
            }
        }
        leader.quorum_elapsed += 1;
        if leader.quorum_elapsed >= election_ticks {
            leader.quorum_elapsed = 0;
            let active: Vec<&NodeId> = leader
                .progress
                .iter()
                .filter(|(_, p)| p.recent_active)
                .map(|(id, _)| id)
                .chain([me])
                .collect();
            let has_quorum = membership.is_some_and(|m| m.has_quorum(active.iter().copied()));
            for p in leader.progress.values_mut() {
                p.recent_active = false;
            }
            if check_quorum && !has_quorum {
                log::warn!(
                    "{} steps down: it has not heard from a majority of the voters for an \
                     election timeout",
                    self.config.id
                );
                let term = self.current_term;
                return self.become_follower(term, None);
            }
        }
        leader.heartbeat_elapsed += 1;
        if leader.heartbeat_elapsed >= heartbeat_ticks {
            leader.heartbeat_elapsed = 0;
            self.broadcast_append(true)?;
        }
        Ok(())
    }

    /// Appends a new entry of our term to our own log.
    pub(super) fn append_own_entry(&mut self, command: Vec<u8>) -> Result<Index> {
        let index = self.log.last_index() + 1;
        let entry = Entry { index, term: self.current_term, command };
        self.log.append(std::slice::from_ref(&entry))?;
        if entry.is_internal() {
            self.configs.appended(std::slice::from_ref(&entry));
            self.sync_progress();
        }
        Ok(index)
    }

    pub(super) fn broadcast_append(&mut self, heartbeat: bool) -> Result<()> {
        for peer in self.other_members() {
            self.maybe_send_append(&peer, heartbeat)?;
        }
        Ok(())
    }

    /// Sends `peer` what it is missing, if its window has room; a heartbeat goes out anyway.
    ///
    /// Flow control: at most [`Progress::window`] requests in flight per follower (one while
    /// probing; `max_inflight` once it is known to match: pipelining). Entries proposed while the
    /// window is full wait and leave together in the next request, so under load each round trip
    /// (and each follower fsync) carries a batch. `next_index` moves on as each request leaves, so
    /// without faults each entry is sent once.
    pub(super) fn maybe_send_append(&mut self, peer: &NodeId, heartbeat: bool) -> Result<()> {
        let (last_index, commit_index, ticks) =
            (self.log.last_index(), self.log.commit_index, self.ticks);
        let (max_entries, max_bytes, max_inflight) = (
            self.config.max_append_entries as u64,
            self.config.max_append_bytes,
            self.config.max_inflight,
        );
        let Role::Leader(leader) = &mut self.role else {
            return Ok(());
        };
        let wants_read_probe = leader.reads.back().map(|r| r.seq);
        let Some(progress) = leader.progress.get_mut(peer) else {
            return Ok(());
        };
        if progress.pending_snapshot.is_some() {
            // Its link is busy with the snapshot; heartbeats would only queue behind it.
            return Ok(());
        }
        if progress.next_index < self.log.first_index() {
            // §7: the entries this follower needs are compacted away: send the snapshot.
            return self.maybe_send_snapshot(peer, heartbeat);
        }
        let has_entries = progress.next_index <= last_index;
        // A read waits for an answer to a request sent after it arrived: unless one is on its
        // way already, send one.
        let needs_probe = wants_read_probe.is_some_and(|s| {
            progress.acked_seq < s && progress.inflight.back().is_none_or(|f| f.seq < s)
        });
        let room = progress.inflight.len() < progress.window(max_inflight);
        if !room && !heartbeat {
            return Ok(());
        }
        if room && !has_entries && !needs_probe && !heartbeat {
            return Ok(());
        }
        let prev_log_index = progress.next_index - 1;
        let entries = if room && has_entries {
            let hi = last_index.min(prev_log_index + max_entries) + 1;
            self.log.entries(progress.next_index, hi, max_bytes)?
        } else {
            Vec::new()
        };
        let Some(prev_log_term) = self.log.term_at(prev_log_index) else {
            return Err(Error::Internal(format!(
                "no term for {peer}'s prev_log_index {prev_log_index}"
            )));
        };
        leader.seq += 1;
        let seq = leader.seq;
        if self.config.lease_ms > 0 {
            if progress.lease_sent.len() >= Progress::LEASE_SENT_MAX {
                progress.lease_sent.pop_front();
            }
            progress.lease_sent.push_back((seq, self.now_ms));
        }
        if room {
            progress.inflight.push_back(Inflight { seq, sent_at_tick: ticks });
        }
        // Optimistic: assume it arrives (a rejection or a timeout moves next_index back).
        progress.next_index += entries.len() as Index;
        let message = Message::AppendEntries(AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit: commit_index,
            seq,
        });
        self.send(peer.clone(), message);
        Ok(())
    }

    /// §5.3/§5.4.2: commit the highest index stored durably on a majority, if it is of our term.
    pub(super) fn maybe_commit(&mut self) -> Result<()> {
        let Some(membership) = self.configs.latest() else {
            return Ok(());
        };
        let Role::Leader(leader) = &self.role else {
            return Ok(());
        };
        // The match index of every voter of the configuration in force (this leader's own is
        // how far its disk has the log; a leader removing itself does not count, §4.2.2;
        // learners never count).
        let mut matches: Vec<Index> = membership
            .voters
            .keys()
            .map(|v| match leader.progress.get(v) {
                _ if *v == self.config.id => leader.self_match,
                Some(p) => p.match_index,
                None => 0,
            })
            .collect();
        matches.sort_unstable_by(|a, b| b.cmp(a));
        let Some(&majority_index) = matches.get(membership.quorum() - 1) else {
            return Ok(());
        };
        // Figure 8: counting replicas commits only entries of the current term.
        if majority_index > self.log.commit_index
            && self.log.term_at(majority_index) == Some(self.current_term)
        {
            self.log.commit_index = majority_index;
            self.emit_committed()?;
            self.check_reads();
            self.step_down_if_removed()?;
        }
        Ok(())
    }

    /// Hands newly committed entries to the state machine, in order, exactly once.
    pub(super) fn emit_committed(&mut self) -> Result<()> {
        let (lo, hi) = (self.log.last_applied + 1, self.log.commit_index + 1);
        if lo < hi {
            let entries = self.log.entries(lo, hi, usize::MAX)?;
            self.log.last_applied = self.log.commit_index;
            self.out.apply.extend(entries);
        }
        Ok(())
    }
}
