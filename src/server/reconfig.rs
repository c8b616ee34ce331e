//! The node's membership operations: proposing a configuration change and waiting for it,
//! the members as the leader sees them, and handing leadership over (thesis chapter 4, §3.10).
//! The `/cluster/*` routes that call them are in [`super::members`]; the rules are the core's
//! (`raft/node/membership.rs`).

use std::time::Instant;

use super::node::Node;
use super::oneshot;
use crate::api::{MemberInfo, MembersReply, TransferReply};
use crate::error::{Error, LeaderHint, Result};
use crate::raft::{MemberRole, MembershipChange, NodeId};

impl Node {
    /// Proposes a configuration change and waits until it is committed and applied, like
    /// [`Node::write`]; answers with the members as the leader sees them then.
    pub fn change_membership(&self, change: MembershipChange, force: bool) -> Result<MembersReply> {
        let (tx, rx) = oneshot::channel();
        let index = self
            .with_raft(|raft| {
                let (index, term, out) = raft.propose_membership(change, force)?;
                self.pending.lock().add_write(index, term, tx);
                Ok((index, out))
            })
            .map_err(|e| self.with_leader_addr(e))?;
        match rx.recv_timeout(self.config.request_timeout) {
            // This node's view: a leader that removed itself has stepped down by now.
            Ok(Ok(_)) => self.members_view(false),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                self.pending.lock().remove_write(index);
                Err(Error::OutcomeUnknown(format!(
                    "the configuration change was proposed at index {index} but not seen \
                     committed within {:?}; it may or may not take effect",
                    self.config.request_timeout
                )))
            }
        }
    }

    /// The members as this node (which must lead) sees them, with each one's progress.
    pub fn members(&self) -> Result<MembersReply> {
        self.members_view(true)
    }

    /// The members in this node's configuration; with `leader_only`, refused unless it leads.
    fn members_view(&self, leader_only: bool) -> Result<MembersReply> {
        let raft = self.raft.lock();
        if leader_only && !raft.is_leader() {
            let e = Error::NotLeader {
                leader: raft.leader().map(|id| LeaderHint { id, addr: String::new() }),
            };
            drop(raft);
            return Err(self.with_leader_addr(e));
        }
        let s = raft.status();
        drop(raft);
        let Some(m) = s.membership else {
            return Err(Error::Internal("a leader without a configuration".into()));
        };
        let tick_ms = self.config.tick.as_millis() as u64;
        let members = m
            .members()
            .map(|(id, addr, role)| {
                let (match_index, last_contact_ms) = match s.progress.get(id) {
                    Some(p) => (Some(p.match_index), Some(p.last_contact_ticks * tick_ms)),
                    None if *id == s.id => (Some(s.last_log_index), Some(0)),
                    None => (None, None),
                };
                let role = match role {
                    MemberRole::Voter => "voter",
                    MemberRole::Learner => "learner",
                };
                MemberInfo {
                    id: id.clone(),
                    addr: addr.clone(),
                    role: role.into(),
                    match_index,
                    last_contact_ms,
                }
            })
            .collect();
        Ok(MembersReply { cluster_id: m.cluster_id.clone(), config_index: s.config_index, members })
    }

    /// Hands leadership to `to` (or the most up-to-date voter) and waits until a new leader is
    /// known: its id and address. 504 if none is elected in time (the transfer was abandoned).
    pub fn transfer_leadership(&self, to: Option<NodeId>) -> Result<TransferReply> {
        let (term, target) = self
            .with_raft(|raft| {
                let term = raft.term();
                let (target, out) = raft.transfer_leadership(to)?;
                Ok(((term, target), out))
            })
            .map_err(|e| self.with_leader_addr(e))?;
        let deadline = Instant::now() + self.config.election_timeout.1 * 3;
        loop {
            let (leader, now_term) = {
                let raft = self.raft.lock();
                (raft.leader(), raft.term())
            };
            match leader {
                Some(l) if target == self.config.id && l == target => {
                    return Ok(TransferReply { addr: self.config.addr.clone(), leader: l });
                }
                Some(l) if now_term > term && l != self.config.id => {
                    let addr = self.addr_of(&l).unwrap_or_default();
                    return Ok(TransferReply { leader: l, addr });
                }
                _ => {}
            }
            if Instant::now() >= deadline || self.is_shutdown() {
                return Err(Error::OutcomeUnknown(format!(
                    "no new leader was seen within {:?} of handing leadership to {target}",
                    self.config.election_timeout.1 * 3
                )));
            }
            std::thread::sleep(self.config.tick);
        }
    }
}
