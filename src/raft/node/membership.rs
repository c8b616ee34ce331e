//! Membership changes (thesis §4.1–4.2) and leadership transfer (thesis §3.10).
//!
//! **Single-server changes.** Each change adds, promotes, removes or moves one member. Any
//! majority of the old voters and any majority of the new ones then share a server, so the old
//! and the new configuration can never elect two leaders in one term, and no joint consensus is
//! needed (§4.1). Two rules keep that true:
//! - *one change at a time*: a leader refuses a change while the previous configuration entry is
//!   uncommitted (two uncommitted single-server changes can add up to a two-server change);
//! - *an entry of its own term first*: a new leader proposes a change only once it has committed
//!   an entry of its term (its no-op). Without this rule, a leader could build its change on a
//!   configuration that a concurrent, uncommitted change of an earlier leader is about to
//!   replace, and two leaders could be elected in one term (Ongaro, raft-dev, "bug in
//!   single-server membership changes", 2015).
//!
//! **Learners** get the log and snapshots but never vote and never count; a promotion is refused
//! until the learner is caught up, so adding a member never stalls commits (§4.2.1).
//!
//! **Removing the leader** (§4.2.2): the configuration takes effect on append, so from then on
//! the leader does not count itself; it keeps replicating until the change commits, then steps
//! down. A removed node that keeps running never campaigns once it knows it is removed, and until
//! then its vote requests are ignored by voters that hear from a leader (check quorum, §4.2.3).

use super::RaftNode;
use crate::error::{Error, Result};
use crate::raft::role::{Progress, Role, Transfer};
use crate::raft::{
    ChangeRefused, Index, MemberRole, Membership, MembershipChange, Message, NodeId, Output, Term,
};

/// A learner may be promoted once its log is within this many entries of the commit index.
pub const PROMOTE_MAX_LAG: Index = 256;

impl RaftNode {
    /// Proposes one configuration change. Returns where its entry will be committed.
    ///
    /// Refused with `Conflict` (409) while another change is uncommitted or before this leader
    /// committed an entry of its term, `NotFound` (404) for an unknown member,
    /// `PreconditionFailed` (412) for a learner that has not caught up or, unless `force`, when
    /// the voters this leader heard from within an election timeout would not be a quorum of the
    /// new configuration.
    pub fn propose_membership(
        &mut self,
        change: MembershipChange,
        force: bool,
    ) -> Result<(Index, Term, Output)> {
        let next = self.check_membership_change(&change, force)?;
        log::info!(
            "{} proposes configuration change {change:?} (voters {:?}, learners {:?})",
            self.config.id,
            next.voters.keys().collect::<Vec<_>>(),
            next.learners.keys().collect::<Vec<_>>()
        );
        let index = self.append_own_entry(next.encode())?;
        self.broadcast_append(false)?;
        Ok((index, self.current_term, self.take_output()))
    }

    /// Every rule a change must pass; the configuration it leads to.
    fn check_membership_change(
        &self,
        change: &MembershipChange,
        force: bool,
    ) -> Result<Membership> {
        let Role::Leader(leader) = &self.role else {
            return Err(self.not_leader_error());
        };
        self.refuse_during_transfer()?;
        let commit_index = self.log.commit_index;
        let Some(current) = self.membership() else {
            return Err(Error::Internal("a leader without a configuration".into()));
        };
        if self.configs.uncommitted_change(commit_index) {
            return Err(Error::Conflict(format!(
                "the configuration change at index {} is not committed yet; one change at a time",
                self.configs.latest_index()
            )));
        }
        if commit_index < leader.term_start {
            return Err(Error::Conflict(
                "this leader has not committed an entry of its own term yet; retry in a moment"
                    .into(),
            ));
        }
        let next = current.apply(change).map_err(|e| match e {
            ChangeRefused::Unknown(m) => Error::NotFound(m),
            ChangeRefused::Exists(m) => Error::Conflict(m),
            ChangeRefused::Invalid(m) => Error::BadRequest(m),
        })?;
        let heard_within = self.config.election_ticks_min;
        let heard = |id: &NodeId| {
            *id == self.config.id
                || leader
                    .progress
                    .get(id)
                    .is_some_and(|p| self.ticks.saturating_sub(p.last_contact_tick) < heard_within)
        };
        if let MembershipChange::Promote { id } = change {
            let matched = leader.progress.get(id).map_or(0, |p| p.match_index);
            // It must hold the configuration that made it a learner (so it has answered at
            // least once: a record created by that configuration counts as fresh contact), and
            // be close to the commit index.
            let holds_its_configuration = matched >= self.configs.latest_index();
            if !holds_its_configuration || matched + PROMOTE_MAX_LAG < commit_index || !heard(id) {
                return Err(Error::PreconditionFailed(format!(
                    "{id} has not caught up: it holds the log through {matched}, the commit index \
                     is {commit_index} (promotion needs it within {PROMOTE_MAX_LAG} entries and \
                     heard from within an election timeout)"
                )));
            }
        }
        let alive: Vec<&NodeId> = next.voters.keys().filter(|v| heard(v)).collect();
        if !next.has_quorum(alive.iter().copied()) {
            let why = format!(
                "after this change the voters heard from within an election timeout ({}) would \
                 not be a quorum of the new configuration (it needs {} of {})",
                alive.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", "),
                next.quorum(),
                next.voters.len()
            );
            if !force {
                return Err(Error::PreconditionFailed(format!("{why}; `force` overrides")));
            }
            log::warn!("{}: FORCED configuration change: {why}", self.config.id);
        }
        Ok(next)
    }

    /// After the leader appended a configuration: track every member of it, forget the rest.
    pub(super) fn sync_progress(&mut self) {
        let (me, next_index, ticks) = (&self.config.id, self.log.last_index() + 1, self.ticks);
        let Some(membership) = self.configs.latest() else { return };
        let Role::Leader(leader) = &mut self.role else { return };
        leader.progress.retain(|id, _| membership.contains(id));
        for (id, _, _) in membership.members() {
            if id != me && !leader.progress.contains_key(id) {
                leader.progress.insert(id.clone(), Progress::new(next_index, ticks));
            }
        }
        if leader.transfer.as_ref().is_some_and(|t| !membership.is_voter(&t.target)) {
            leader.transfer = None;
        }
    }

    /// §4.2.2: a leader whose removal has committed steps down (it never campaigns again).
    pub(super) fn step_down_if_removed(&mut self) -> Result<()> {
        let removed = self.is_leader()
            && !self.is_voter()
            && self.log.commit_index >= self.configs.latest_index();
        if removed {
            log::warn!(
                "{} is no longer a voter and its removal is committed: it steps down",
                self.config.id
            );
            // Tell the followers the commit index first, so the next leader is elected from a
            // cluster that already knows the change is committed.
            self.broadcast_append(true)?;
            let term = self.current_term;
            self.become_follower(term, None)?;
        }
        Ok(())
    }

    // ----- leadership transfer (thesis §3.10) ----------------------------------------------------

    /// Starts handing leadership to `to` (or, without a target, to the most up-to-date voter):
    /// new proposals are refused meanwhile, the target is brought up to date and then told to
    /// campaign at once. Abandoned if no new leader is elected within an election timeout.
    pub fn transfer_leadership(&mut self, to: Option<NodeId>) -> Result<(NodeId, Output)> {
        let me = self.config.id.clone();
        let Role::Leader(leader) = &self.role else {
            return Err(self.not_leader_error());
        };
        if let Some(t) = &leader.transfer {
            return Err(Error::Conflict(format!("a transfer to {} is in progress", t.target)));
        }
        let Some(membership) = self.membership() else {
            return Err(Error::Internal("a leader without a configuration".into()));
        };
        let target = match to {
            Some(t) => match membership.role(&t) {
                None => return Err(Error::NotFound(format!("{t} is not a member"))),
                Some(MemberRole::Learner) => {
                    return Err(Error::PreconditionFailed(format!(
                        "{t} is a learner; promote it before it can lead"
                    )));
                }
                Some(MemberRole::Voter) => t,
            },
            None => {
                let best = membership
                    .voters
                    .keys()
                    .filter(|v| **v != me)
                    .max_by_key(|v| leader.progress.get(*v).map_or(0, |p| p.match_index));
                match best {
                    Some(v) => v.clone(),
                    None => {
                        return Err(Error::PreconditionFailed(
                            "there is no other voter to hand leadership to".into(),
                        ));
                    }
                }
            }
        };
        if target == me {
            return Ok((me, self.take_output()));
        }
        log::info!("{me} transfers its leadership to {target}");
        let started_tick = self.ticks;
        if let Role::Leader(leader) = &mut self.role {
            let t = Transfer { target: target.clone(), started_tick, timeout_now_sent: false };
            leader.transfer = Some(t);
        }
        self.maybe_send_append(&target, false)?;
        self.maybe_send_timeout_now(&target);
        Ok((target, self.take_output()))
    }

    /// Sends TimeoutNow to the transfer's target once its log matches ours.
    pub(super) fn maybe_send_timeout_now(&mut self, peer: &NodeId) {
        let last_index = self.log.last_index();
        let Role::Leader(leader) = &mut self.role else { return };
        let Some(transfer) = &mut leader.transfer else { return };
        let caught_up = leader.progress.get(peer).is_some_and(|p| p.match_index >= last_index);
        if transfer.target == *peer && !transfer.timeout_now_sent && caught_up {
            transfer.timeout_now_sent = true;
            leader.lease_forfeited = true;
            self.send(peer.clone(), Message::TimeoutNow);
        }
    }

    /// Gives up a transfer that has not produced a new leader within an election timeout.
    pub(super) fn maybe_abandon_transfer(&mut self) {
        let (ticks, timeout) = (self.ticks, self.config.election_ticks_max);
        let Role::Leader(leader) = &mut self.role else { return };
        if leader.transfer.as_ref().is_some_and(|t| ticks - t.started_tick >= timeout) {
            let t = leader.transfer.take();
            log::warn!(
                "{} abandons the leadership transfer to {}: no new leader within an election \
                 timeout; it accepts writes again",
                self.config.id,
                t.map(|t| t.target).unwrap_or_default()
            );
        }
    }

    /// Refuses new work while leadership is being handed over (retryable: 503).
    pub(super) fn refuse_during_transfer(&self) -> Result<()> {
        match &self.role {
            Role::Leader(l) if l.transfer.is_some() => Err(Error::Unavailable(format!(
                "leadership is being transferred to {}; retry shortly",
                l.transfer.as_ref().map(|t| t.target.as_str()).unwrap_or_default()
            ))),
            _ => Ok(()),
        }
    }

    /// The leader of our term tells us to campaign now (a transfer): skip PreVote and the
    /// election timer; our RequestVotes say it is a transfer, so voters do not ignore them.
    pub(super) fn handle_timeout_now(&mut self, from: NodeId, term: Term) -> Result<()> {
        let from_leader =
            matches!(&self.role, Role::Follower(f) if f.leader.as_ref() == Some(&from));
        if term != self.current_term || !from_leader || !self.can_campaign() {
            log::debug!("{} ignores TimeoutNow from {from} (term {term})", self.config.id);
            return Ok(());
        }
        log::info!("{} campaigns at once: {from} hands it the leadership", self.config.id);
        self.campaign(true)
    }
}
