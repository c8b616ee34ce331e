//! The churn schedule: seeded random steps (proposals, crashes and restarts, partitions,
//! membership changes, transfers), each followed by a random pause, over a lossy network.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

/// Node ids the schedule may create in all (the cluster starts with 3).
const MAX_NODES: usize = 8;
/// Steps per schedule.
const STEPS: usize = 250;

struct Churn {
    c: SimCluster,
    /// Nodes whose disk died (wiped, never restarted): replaced, never back.
    dead: BTreeSet<NodeId>,
    /// Nodes that were ever in a configuration (never added again once removed).
    ever: BTreeSet<NodeId>,
    proposed: u64,
    /// Per kind of change: (accepted, tried).
    changes: BTreeMap<&'static str, (u32, u32)>,
}

pub fn run(seed: u64) {
    let mut c = SimCluster::new(3, seed);
    c.net.drop_rate = 0.1;
    if seed % 2 == 1 {
        c.snapshot_every = Some(20);
        c.snapshot_trailing = 5;
    }
    let ever = c.ids.iter().cloned().collect();
    let mut s = Churn { c, dead: BTreeSet::new(), ever, proposed: 0, changes: BTreeMap::new() };
    for _ in 0..STEPS {
        s.step();
        let pause = 1 + s.c.rand(40);
        s.c.run(pause);
        s.note_members();
    }
    s.finish();
}

impl Churn {
    fn dump(&self) {
        for n in &self.c.ids {
            match self.c.node(n) {
                None => eprintln!("{n}: down (dead: {})", self.dead.contains(n)),
                Some(x) => {
                    let st = x.status();
                    eprintln!(
                        "{n}: {} term {} {} voters {:?} learners {:?} cfg@{} last {}/{} commit {}",
                        st.role,
                        st.term,
                        st.member_state,
                        st.membership.as_ref().map(|m| m.voters.keys().collect::<Vec<_>>()),
                        st.membership.as_ref().map(|m| m.learners.keys().collect::<Vec<_>>()),
                        st.config_index,
                        st.last_log_index,
                        st.last_log_term,
                        st.commit_index
                    );
                }
            }
        }
    }

    fn count(&mut self, kind: &'static str, accepted: bool) {
        let e = self.changes.entry(kind).or_default();
        e.0 += u32::from(accepted);
        e.1 += 1;
    }

    fn change(&mut self, kind: &'static str, change: MembershipChange) {
        let ok = self.c.change_membership(change, false).is_ok();
        self.count(kind, ok);
    }

    fn step(&mut self) {
        match self.c.rand(100) {
            0..=29 => {
                self.proposed += 1;
                let command = format!("c{}", self.proposed).into_bytes();
                self.c.propose_to_leader(&command);
            }
            30..=36 => {
                let n = self.c.random_node();
                self.c.crash(&n);
            }
            37..=44 => self.restart_all(),
            45..=49 => {
                let (mut a, mut b) = (Vec::new(), Vec::new());
                for n in self.c.ids.clone() {
                    if self.c.rand(2) == 0 { a.push(n) } else { b.push(n) }
                }
                self.c.partition(&[a, b]);
            }
            50..=56 => self.c.heal(),
            57..=65 => self.add_learner(),
            66..=76 => {
                if let Some(n) = self.pick(learners) {
                    self.change("promote", promote(&n));
                }
            }
            77..=82 => self.remove_live(),
            83..=86 => self.replace(),
            87..=93 => {
                for n in self.dead.clone() {
                    self.change("remove-dead", remove(&n));
                }
            }
            _ => {
                let to = self.pick(voters);
                let ok = self.c.transfer_leadership(to.as_deref()).is_ok();
                self.count("transfer", ok);
            }
        }
    }

    /// A random member (as `of` lists them on the leader), not a dead one.
    fn pick(&mut self, of: fn(&SimCluster, &NodeId) -> Vec<NodeId>) -> Option<NodeId> {
        let l = self.c.current_leader()?;
        let all: Vec<NodeId> =
            of(&self.c, &l).into_iter().filter(|n| !self.dead.contains(n)).collect();
        let i = self.c.rand(all.len() as u64) as usize;
        all.get(i).cloned()
    }

    fn restart_all(&mut self) {
        for n in self.c.ids.clone() {
            if !self.dead.contains(&n) {
                self.c.start(&n);
            }
        }
    }

    /// Every node in some running node's configuration has been a member.
    fn note_members(&mut self) {
        for n in self.c.ids.clone() {
            if let Some(m) = self.c.membership_of(&n) {
                self.ever.extend(m.members().map(|(id, _, _)| id.clone()));
            }
        }
    }

    /// True if a dead node is still in the configuration of the leader or of a running member
    /// of it (or no leader is known). Removed nodes' stale configurations do not count: with
    /// their removal committed, they cannot win an election.
    fn dead_in_a_config(&self) -> bool {
        let Some(l) = self.c.current_leader() else { return true };
        let Some(m) = self.c.membership_of(&l) else { return true };
        let holders = m.members().map(|(n, _, _)| n.clone()).chain([l.clone()]);
        let configs: Vec<_> = holders.filter_map(|n| self.c.membership_of(&n)).collect();
        configs.iter().any(|m| self.dead.iter().any(|d| m.contains(d)))
    }

    /// Adds a learner: a node that joined but was never a member, or a new one.
    fn add_learner(&mut self) {
        let waiting = self
            .c
            .ids
            .iter()
            .find(|n| !self.ever.contains(*n) && !self.dead.contains(*n) && self.c.is_up(n));
        let n = match waiting.cloned() {
            Some(n) => n,
            None if self.c.ids.len() < MAX_NODES => {
                let name = format!("n{}", self.c.ids.len() + 1);
                self.c.add_node(&name)
            }
            None => return,
        };
        self.change("add", add_learner(&n));
    }

    /// Removes a live member. Not while a dead member is still configured anywhere: the
    /// strict check counts a voter as alive for an election timeout after its death, and
    /// removing a live voter then could leave a configuration whose majority needs the dead.
    fn remove_live(&mut self) {
        if self.dead_in_a_config() {
            return;
        }
        // Keep a few voters for the rest of the schedule: remove a voter only from three.
        if let Some(n) = self.pick(|c, l| {
            let mut all = voters(c, l);
            if all.len() < 3 {
                all.clear();
            }
            all.extend(learners(c, l));
            all
        }) {
            self.change("remove", remove(&n));
        }
    }

    /// A voter's disk dies for good; a new node joins as a learner to replace it. Only when
    /// the configuration is settled everywhere (every node up, the leader's configuration
    /// committed and the one in force on every member) with at least three voters, and no
    /// other dead member: one dead voter can never take a majority with it.
    fn replace(&mut self) {
        if self.dead_in_a_config() {
            return;
        }
        self.restart_all();
        let Some(l) = self.c.current_leader() else { return };
        let Some(m) = self.c.membership_of(&l) else { return };
        let committed = self.c.node(&l).is_some_and(|n| n.log().commit_index >= n.config_index());
        let settled = m.members().all(|(n, _, _)| self.c.membership_of(n).as_ref() == Some(&m));
        if !committed || !settled || m.voters.len() < 3 {
            return;
        }
        let Some(victim) = self.pick(voters) else { return };
        self.c.wipe(&victim);
        self.dead.insert(victim);
        self.count("wipe", true);
        self.add_learner();
    }

    /// Heal, bring every node back, remove the dead, commit one more command: every member
    /// applied the same commands.
    fn finish(mut self) {
        self.c.heal();
        self.c.net.drop_rate = 0.0;
        self.restart_all();
        if !self.c.run_until(secs(10.0), |c| c.current_leader().is_some()) {
            self.dump();
        }
        self.c.check_one_leader(secs(10.0));
        for n in self.dead.clone() {
            match self.c.change_and_commit(remove(&n), secs(20.0)) {
                Ok(_) | Err(Error::NotFound(_)) => {}
                Err(e) => panic!("could not remove dead {n}: {e:?} (seed {})", self.c.seed),
            }
        }
        let c = &mut self.c;
        let l = leader(c);
        let mut members = voters(c, &l);
        members.extend(learners(c, &l));
        let index = c.one(b"final".to_vec(), members.len(), true);
        // `one` counts any running node; wait for the members themselves. (The leader may
        // have just stepped down: its own removal was the last change.)
        let done = |c: &SimCluster| {
            members.iter().all(|m| c.applied(m).is_some_and(|a| a.contains_key(&index)))
        };
        assert!(c.run_until(secs(5.0), done), "not every member applied {index} (seed {})", c.seed);
        let reference: Vec<_> = c.applied(&members[0]).expect("running").range(..=index).collect();
        for m in &members {
            let mine: Vec<_> = c.applied(m).expect("running").range(..=index).collect();
            assert_eq!(
                mine, reference,
                "{m} and {} applied different commands (seed {})",
                members[0], c.seed
            );
        }
        let l = c.check_one_leader(secs(5.0));
        eprintln!(
            "seed {}: changes (accepted, tried) {:?}; final voters {:?}, learners {:?}, term \
             {}, {index} entries, {} snapshots installed",
            c.seed,
            self.changes,
            voters(c, &l),
            learners(c, &l),
            c.node(&l).map_or(0, |n| n.term()),
            c.snapshots_installed
        );
    }
}
