//! Cluster membership (thesis chapter 4): who votes, who only listens, and where each lives.
//!
//! A [`Membership`] is itself a log entry (a *configuration entry*, [`Entry::membership`]), so
//! the cluster agrees on it the way it agrees on everything else. A node uses the **latest
//! configuration in its log, committed or not** (thesis §4.1): a change takes effect on append.
//! [`Configs`] keeps that latest configuration at hand, together with the earlier ones still in
//! the uncommitted tail of the log, so that when a new leader truncates a follower's conflicting
//! suffix (§5.3), the configuration that suffix carried is undone with it.
//!
//! Changes are *single-server*: each adds, removes, promotes or moves one member, and a leader
//! proposes the next only once the previous one is committed and it has committed an entry of
//! its own term (see `RaftNode::propose_membership` and the essay in `raft/mod.rs`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::raft::{Entry, Index, NodeId, Term};

/// The first byte of every Raft-internal entry. A client command never starts with it (the
/// state machine's commands are JSON objects, which start with `{`; `propose` refuses one that
/// starts with it), so a configuration entry can never be mistaken for a command, nor forged
/// through the client API.
pub const INTERNAL_ENTRY_MARK: u8 = 0;

/// One cluster configuration: the voters, the learners, and the address of each.
///
/// Voters elect leaders and count towards every majority (commit, ReadIndex, check quorum).
/// Learners receive the log and snapshots but never vote and never count: a new member joins as a
/// learner, catches up without slowing commits, and is promoted once it has (thesis §4.2.1).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The id this cluster was given when it was bootstrapped, copied into every later
    /// configuration. The core never interprets it; the shell refuses peer messages that carry
    /// another one, so a node started with the wrong peers cannot merge two clusters.
    pub cluster_id: String,
    /// Voting members: id → address (`host:port`).
    pub voters: BTreeMap<NodeId, String>,
    /// Non-voting members: id → address.
    #[serde(default)]
    pub learners: BTreeMap<NodeId, String>,
}

/// What a member is in a configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberRole {
    /// Votes and counts towards majorities.
    Voter,
    /// Receives the log; never votes, never counts.
    Learner,
}

/// One single-server change (thesis §4.1): what an operator asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum MembershipChange {
    /// A new member, as a learner or (not recommended: it slows commits until it catches up) as a
    /// voter.
    Add {
        /// Its id.
        id: NodeId,
        /// Its address.
        addr: String,
        /// True: join as a learner.
        learner: bool,
    },
    /// A learner becomes a voter.
    Promote {
        /// The learner.
        id: NodeId,
    },
    /// A member (voter or learner) leaves.
    Remove {
        /// The member.
        id: NodeId,
    },
    /// A member's address changes (it moved); its role does not.
    SetAddr {
        /// The member.
        id: NodeId,
        /// Its new address.
        addr: String,
    },
}

impl MembershipChange {
    /// The member the change is about.
    pub fn id(&self) -> &NodeId {
        match self {
            MembershipChange::Add { id, .. }
            | MembershipChange::Promote { id }
            | MembershipChange::Remove { id }
            | MembershipChange::SetAddr { id, .. } => id,
        }
    }
}

impl Membership {
    /// A configuration of voters only, as a brand-new cluster starts.
    pub fn of_voters(cluster_id: impl Into<String>, voters: BTreeMap<NodeId, String>) -> Self {
        Membership { cluster_id: cluster_id.into(), voters, learners: BTreeMap::new() }
    }

    /// The role of `id`, if it is a member.
    pub fn role(&self, id: &NodeId) -> Option<MemberRole> {
        if self.voters.contains_key(id) {
            Some(MemberRole::Voter)
        } else if self.learners.contains_key(id) {
            Some(MemberRole::Learner)
        } else {
            None
        }
    }

    /// True if `id` votes.
    pub fn is_voter(&self, id: &NodeId) -> bool {
        self.voters.contains_key(id)
    }

    /// True if `id` is a voter or a learner.
    pub fn contains(&self, id: &NodeId) -> bool {
        self.role(id).is_some()
    }

    /// The address of a member.
    pub fn addr(&self, id: &NodeId) -> Option<&String> {
        self.voters.get(id).or_else(|| self.learners.get(id))
    }

    /// Every member, voters first, then learners.
    pub fn members(&self) -> impl Iterator<Item = (&NodeId, &String, MemberRole)> {
        let voters = self.voters.iter().map(|(id, a)| (id, a, MemberRole::Voter));
        voters.chain(self.learners.iter().map(|(id, a)| (id, a, MemberRole::Learner)))
    }

    /// More than half of the voters: the size of every majority.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// True if `ids` hold a majority of the voters (non-voters among them do not count).
    pub fn has_quorum<'a>(&self, ids: impl IntoIterator<Item = &'a NodeId>) -> bool {
        let mut voters: Vec<&NodeId> = ids.into_iter().filter(|id| self.is_voter(id)).collect();
        voters.sort();
        voters.dedup();
        !self.voters.is_empty() && voters.len() >= self.quorum()
    }

    /// The configuration after `change`, or why it cannot be made (a message for the operator:
    /// the id is unknown, already a member, not a learner, or the change leaves no voter).
    pub fn apply(&self, change: &MembershipChange) -> Result<Membership, ChangeRefused> {
        let mut next = self.clone();
        match change {
            MembershipChange::Add { id, addr, learner } => {
                if self.contains(id) {
                    return Err(ChangeRefused::Exists(format!("{id} is already a member")));
                }
                if id.is_empty() || addr.is_empty() {
                    return Err(ChangeRefused::Invalid(
                        "a member needs an id and an address".into(),
                    ));
                }
                let into = if *learner { &mut next.learners } else { &mut next.voters };
                into.insert(id.clone(), addr.clone());
            }
            MembershipChange::Promote { id } => match self.role(id) {
                None => return Err(ChangeRefused::Unknown(format!("{id} is not a member"))),
                Some(MemberRole::Voter) => {
                    return Err(ChangeRefused::Exists(format!("{id} is already a voter")));
                }
                Some(MemberRole::Learner) => {
                    let addr = next.learners.remove(id).unwrap_or_default();
                    next.voters.insert(id.clone(), addr);
                }
            },
            MembershipChange::Remove { id } => {
                if next.voters.remove(id).is_none() && next.learners.remove(id).is_none() {
                    return Err(ChangeRefused::Unknown(format!("{id} is not a member")));
                }
                if next.voters.is_empty() {
                    return Err(ChangeRefused::Invalid(format!(
                        "{id} is the last voter: a cluster without voters cannot do anything"
                    )));
                }
            }
            MembershipChange::SetAddr { id, addr } => {
                if addr.is_empty() {
                    return Err(ChangeRefused::Invalid("an address cannot be empty".into()));
                }
                match next.voters.get_mut(id).or_else(|| next.learners.get_mut(id)) {
                    Some(a) => *a = addr.clone(),
                    None => return Err(ChangeRefused::Unknown(format!("{id} is not a member"))),
                }
            }
        }
        Ok(next)
    }

    /// This configuration as the command of a configuration entry.
    pub fn encode(&self) -> Vec<u8> {
        let mut command = vec![INTERNAL_ENTRY_MARK];
        // Serialising a struct of strings and maps cannot fail.
        command.extend(serde_json::to_vec(self).unwrap_or_default());
        command
    }
}

/// Why a configuration change was refused by [`Membership::apply`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeRefused {
    /// The id is not a member.
    Unknown(String),
    /// The change is already true (a member added twice, a voter promoted).
    Exists(String),
    /// The change makes no sense.
    Invalid(String),
}

impl Entry {
    /// True for a Raft-internal entry (a configuration), which the state machine skips.
    pub fn is_internal(&self) -> bool {
        self.command.first() == Some(&INTERNAL_ENTRY_MARK)
    }

    /// The configuration this entry carries, if it is a configuration entry.
    pub fn membership(&self) -> Option<Membership> {
        if !self.is_internal() {
            return None;
        }
        serde_json::from_slice(&self.command[1..]).ok()
    }
}

/// The configurations a node knows: the one in force at the start of its log (kept by storage,
/// so compaction never loses it) and every configuration entry after it, latest last.
#[derive(Clone, Debug, Default)]
pub struct Configs {
    /// The configuration in force at index `base.0` (from storage), if any.
    base: Option<(Index, Membership)>,
    /// Configuration entries after `base`: index → (term, configuration).
    entries: BTreeMap<Index, (Term, Membership)>,
}

impl Configs {
    /// Starts from the configuration storage kept for the start of the log.
    pub fn new(base: Option<(Index, Membership)>) -> Self {
        Configs { base, entries: BTreeMap::new() }
    }

    /// The latest configuration (in force now: configurations take effect on append).
    pub fn latest(&self) -> Option<&Membership> {
        match self.entries.last_key_value() {
            Some((_, (_, m))) => Some(m),
            None => self.base.as_ref().map(|(_, m)| m),
        }
    }

    /// The index of the latest configuration (0 when there is none).
    pub fn latest_index(&self) -> Index {
        match self.entries.last_key_value() {
            Some((i, _)) => *i,
            None => self.base.as_ref().map_or(0, |(i, _)| *i),
        }
    }

    /// The configuration in force at `index`: the latest one at or before it.
    pub fn at(&self, index: Index) -> Option<&Membership> {
        match self.entries.range(..=index).next_back() {
            Some((_, (_, m))) => Some(m),
            None => self.base.as_ref().map(|(_, m)| m),
        }
    }

    /// Notes the configuration entries among `entries`, just appended to the log.
    pub fn appended(&mut self, entries: &[Entry]) {
        for e in entries {
            if let Some(m) = e.membership() {
                self.entries.insert(e.index, (e.term, m));
            }
        }
    }

    /// Forgets configuration entries the log no longer holds (a conflicting suffix was
    /// truncated): `term_at` says what the log holds now.
    pub fn retain_held(&mut self, term_at: impl Fn(Index) -> Option<Term>) {
        self.entries.retain(|i, (t, _)| term_at(*i) == Some(*t));
    }

    /// The log now starts after `index` with the configuration `membership` in force there (a
    /// compaction, or a snapshot from the leader): entries at or below it are history.
    pub fn rebase(&mut self, index: Index, membership: Membership) {
        self.entries = self.entries.split_off(&(index + 1));
        self.base = Some((index, membership));
    }

    /// True if a configuration entry above `commit_index` exists: a change is in progress.
    pub fn uncommitted_change(&self, commit_index: Index) -> bool {
        self.entries.range(commit_index + 1..).next().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Membership {
        let voters = ["n1", "n2", "n3"].map(|n| (n.to_string(), format!("{n}:1"))).into();
        Membership::of_voters("c1", voters)
    }

    #[test]
    fn quorums_count_voters_only() {
        let mut m = three();
        m.learners.insert("n4".into(), "n4:1".into());
        assert_eq!(m.quorum(), 2);
        let ids = ["n1".to_string(), "n4".to_string()];
        assert!(!m.has_quorum(&ids), "a learner must not make a majority");
        let ids = ["n1".to_string(), "n1".to_string()];
        assert!(!m.has_quorum(&ids), "one voter counted twice is still one");
        let ids = ["n1".to_string(), "n3".to_string()];
        assert!(m.has_quorum(&ids));
    }

    #[test]
    fn changes_apply_one_server_at_a_time() {
        let m = three();
        let add = MembershipChange::Add { id: "n4".into(), addr: "n4:1".into(), learner: true };
        let m2 = m.apply(&add).unwrap();
        assert_eq!(m2.role(&"n4".into()), Some(MemberRole::Learner));
        assert!(matches!(m2.apply(&add), Err(ChangeRefused::Exists(_))));
        let m3 = m2.apply(&MembershipChange::Promote { id: "n4".into() }).unwrap();
        assert_eq!(m3.quorum(), 3);
        let m4 = m3.apply(&MembershipChange::Remove { id: "n1".into() }).unwrap();
        assert!(!m4.contains(&"n1".into()));
        let moved = MembershipChange::SetAddr { id: "n2".into(), addr: "x:9".into() };
        assert_eq!(m4.apply(&moved).unwrap().addr(&"n2".into()).unwrap(), "x:9");
        let one = Membership::of_voters("c", [("a".to_string(), "a:1".to_string())].into());
        let last = MembershipChange::Remove { id: "a".into() };
        assert!(matches!(one.apply(&last), Err(ChangeRefused::Invalid(_))));
        let unknown = MembershipChange::Promote { id: "zz".into() };
        assert!(matches!(m.apply(&unknown), Err(ChangeRefused::Unknown(_))));
    }

    #[test]
    fn configuration_entries_round_trip_and_are_never_commands() {
        let m = three();
        let e = Entry { index: 1, term: 1, command: m.encode() };
        assert!(e.is_internal());
        assert_eq!(e.membership(), Some(m));
        let put = Entry { index: 2, term: 1, command: br#"{"op":"put"}"#.to_vec() };
        assert!(!put.is_internal());
        assert_eq!(put.membership(), None);
        assert!(!Entry { index: 3, term: 1, command: vec![] }.is_internal());
    }

    #[test]
    fn configs_follow_the_log_including_truncation() {
        let m1 = three();
        let m2 = m1
            .apply(&MembershipChange::Add { id: "n4".into(), addr: "a".into(), learner: true })
            .unwrap();
        let mut c = Configs::new(Some((0, m1.clone())));
        c.appended(&[Entry { index: 5, term: 2, command: m2.encode() }]);
        assert_eq!(c.latest(), Some(&m2));
        assert_eq!(c.at(4), Some(&m1));
        assert!(c.uncommitted_change(4));
        assert!(!c.uncommitted_change(5));
        // A new leader replaced index 5 with an entry of term 3: the change is undone.
        c.retain_held(|i| if i == 5 { Some(3) } else { None });
        assert_eq!(c.latest(), Some(&m1));
        c.appended(&[Entry { index: 6, term: 3, command: m2.encode() }]);
        c.rebase(7, m2.clone());
        assert_eq!((c.latest(), c.latest_index()), (Some(&m2), 7));
    }
}
