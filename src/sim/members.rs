//! Membership in the simulation: nodes that join a running cluster, configuration changes and
//! leadership transfers proposed on the leader, and the membership checks a test makes.

use std::sync::Arc;

use super::SimCluster;
use crate::error::{Error, Result};
use crate::raft::{Index, Membership, MembershipChange, NodeId, Term};

impl SimCluster {
    /// Starts a new, empty node that joins the cluster (it bootstraps nothing and waits for a
    /// configuration that contains it). Add it to the configuration with
    /// [`SimCluster::change_membership`].
    pub fn add_node(&mut self, id: &str) -> NodeId {
        let id = id.to_string();
        assert!(!self.ids.contains(&id), "{id} already exists");
        self.ids.push(id.clone());
        self.joiners.insert(id.clone());
        self.disks.insert(id.clone(), Arc::default());
        self.start(&id);
        id
    }

    /// Starts a crashed node from its disk as the only voter of a new cluster
    /// (`--force-new-cluster`, see [`RaftNode::force_new_cluster`]); returns what was forced.
    ///
    /// [`RaftNode::force_new_cluster`]: crate::raft::RaftNode::force_new_cluster
    pub fn force_new_cluster(&mut self, id: &NodeId) -> Result<Option<crate::raft::ForcedCluster>> {
        assert!(!self.nodes.contains_key(id), "{id} must be down to be forced");
        self.start(id);
        let node = self.nodes.get_mut(id).ok_or(Error::NotLeader { leader: None })?;
        node.force_new_cluster(format!("{id}:1"), "forced".into())
    }

    /// The leader among running nodes in the highest term, if any.
    pub fn current_leader(&self) -> Option<NodeId> {
        let mut leaders = self.leaders();
        leaders.sort_by_key(|(_, t)| *t);
        leaders.pop().map(|(id, _)| id)
    }

    /// Proposes `command` on `id` and returns the core's answer (why it refused, if it did:
    /// [`SimCluster::propose`] only says whether it accepted).
    pub fn try_propose(&mut self, id: &NodeId, command: Vec<u8>) -> Result<(Index, Term)> {
        let node = self.nodes.get_mut(id).ok_or(Error::NotLeader { leader: None })?;
        let (index, term, out) = node.propose(command)?;
        self.handle_output(id, out);
        Ok((index, term))
    }

    /// Proposes a configuration change on the current leader; returns its index.
    pub fn change_membership(&mut self, change: MembershipChange, force: bool) -> Result<Index> {
        let leader = self.current_leader().ok_or(Error::NotLeader { leader: None })?;
        let node = self.nodes.get_mut(&leader).ok_or(Error::NotLeader { leader: None })?;
        let (index, _, out) = node.propose_membership(change, force)?;
        self.handle_output(&leader, out);
        Ok(index)
    }

    /// Runs until `change` is committed (retrying while it is refused as a conflict or for want
    /// of a leader: an election, an earlier change not yet committed) or `max_ticks` pass.
    pub fn change_and_commit(&mut self, change: MembershipChange, max_ticks: u64) -> Result<Index> {
        let deadline = self.now + max_ticks;
        loop {
            match self.change_membership(change.clone(), false) {
                Ok(index) => {
                    let left = deadline.saturating_sub(self.now);
                    if self.run_until(left, |c| {
                        c.max_committed() >= index && c.committed_by_leader(index)
                    }) {
                        return Ok(index);
                    }
                    // Lost with its leader, maybe: propose again if it is not in force.
                }
                Err(Error::Conflict(_) | Error::NotLeader { .. } | Error::Unavailable(_)) => {
                    self.run(5)
                }
                Err(Error::PreconditionFailed(_)) => self.run(10),
                Err(e) => return Err(e),
            }
            if self.now >= deadline {
                return Err(Error::Unavailable(format!(
                    "{change:?} not committed within {max_ticks} ticks (seed {})",
                    self.seed
                )));
            }
            if self.change_already_in_force(&change) {
                return Ok(0);
            }
        }
    }

    /// True if the leader has committed `index`.
    fn committed_by_leader(&self, index: Index) -> bool {
        self.current_leader()
            .and_then(|l| self.nodes.get(&l))
            .is_some_and(|n| n.log().commit_index >= index)
    }

    /// True if the leader's configuration already reflects `change`.
    fn change_already_in_force(&self, change: &MembershipChange) -> bool {
        let Some(m) = self.current_leader().and_then(|l| self.membership_of(&l)) else {
            return false;
        };
        match change {
            MembershipChange::Add { id, learner, .. } => {
                if *learner {
                    m.learners.contains_key(id)
                } else {
                    m.voters.contains_key(id)
                }
            }
            MembershipChange::Promote { id } => m.voters.contains_key(id),
            MembershipChange::Remove { id } => !m.contains(id),
            MembershipChange::SetAddr { id, addr } => m.addr(id) == Some(addr),
        }
    }

    /// The configuration in force on a running node.
    pub fn membership_of(&self, id: &NodeId) -> Option<Membership> {
        self.nodes.get(id)?.membership().cloned()
    }

    /// Asks the leader to hand its leadership to `to` (or the best voter); returns the target.
    pub fn transfer_leadership(&mut self, to: Option<&str>) -> Result<NodeId> {
        let leader = self.current_leader().ok_or(Error::NotLeader { leader: None })?;
        let node = self.nodes.get_mut(&leader).ok_or(Error::NotLeader { leader: None })?;
        let (target, out) = node.transfer_leadership(to.map(str::to_string))?;
        self.handle_output(&leader, out);
        Ok(target)
    }
}

impl SimCluster {
    /// Drops the messages now in the network that `select` picks (a partition, a lost
    /// TimeoutNow); returns how many.
    pub fn drop_where(&mut self, mut select: impl FnMut(&crate::raft::Envelope) -> bool) -> usize {
        let all = std::mem::take(&mut self.queue);
        let (dropped, kept): (Vec<_>, Vec<_>) = all.into_iter().partition(|m| select(&m.0.env));
        self.queue.extend(kept);
        for m in &dropped {
            let env = m.0.env.clone();
            self.note(|| super::Event::Drop(env, "dropped by the test"));
        }
        dropped.len()
    }

    /// Puts a message of the test's own making on the network, as if `env.from` had sent it (a
    /// forged or replayed message, or one a test needs at a precise moment).
    pub fn inject(&mut self, env: crate::raft::Envelope) {
        self.send(env);
    }

    /// Manual mode: delivers the messages between members of `group` and completes their
    /// fsyncs until nothing among them is left to do; messages from or to anyone else are
    /// dropped (a partition around `group`, during which no time passes).
    pub fn stabilize_among(&mut self, group: &[&str]) {
        let inside = |id: &NodeId| group.contains(&id.as_str());
        loop {
            self.drop_where(|e| !inside(&e.from) || !inside(&e.to));
            let mut progress = self.deliver_where(|e| inside(&e.from) && inside(&e.to)) > 0;
            for id in group {
                let id = id.to_string();
                if self.waits_for_sync(&id) {
                    self.sync(&id);
                    progress = true;
                }
            }
            if !progress {
                self.drop_where(|e| !inside(&e.from) || !inside(&e.to));
                return;
            }
        }
    }

    /// Manual mode: ticks `id` alone until it starts a campaign (its term rises, or a PreVote
    /// leaves it).
    pub fn tick_until_campaign(&mut self, id: &str) {
        let id = id.to_string();
        let term = self.nodes[&id].term();
        for _ in 0..10_000 {
            self.tick_node(&id);
            let campaigning =
                self.nodes[&id].term() > term || self.nodes[&id].status().role == "candidate";
            if campaigning {
                return;
            }
        }
        panic!("{id} never campaigned (seed {})", self.seed);
    }
}
