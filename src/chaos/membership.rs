//! The `membership` fault: one configuration change per injection, as an operator makes them,
//! while the other faults and the clients go on (thesis chapter 4, issue 10's operator stories).
//!
//! One of, chosen by the seeded RNG among those the current configuration allows (the voters
//! stay between 3 and [`Nemesis::max_voters`]; when a replacement's new node was not promoted
//! and they fell to 2, the next change promotes a learner or adds a node, nothing else):
//! - **add**: start a new node with `--join`, add it as a learner, wait until it has caught up,
//!   promote it (`Client::add_and_promote`);
//! - **remove**: remove a voter, the leader half the time; the removed process keeps running
//!   through one more fault (it must not disrupt the cluster, §4.2.3), then is stopped for good;
//! - **replace**: `kill -9` a voter, wipe its data dir, add a fresh node as a learner, promote it,
//!   remove the dead one (a dead disk, replaced);
//! - **transfer**: hand the leadership to a random voter (or the most up-to-date one).
//!
//! Nodes that joined are reached without link proxies, so once only two voters the run started
//! with remain, remove and replace take joiners only: the link faults keep a link to act on.
//!
//! Refusals (409 one change at a time, 412 strict check or not caught up, 503 no leader) are
//! legitimate answers under faults: they go into the timeline, not the failures. What must hold
//! is checked as for every other fault: linearizability, one leader per term, a write after every
//! heal, convergence of every member at the end.

use std::time::{Duration, Instant};

use rand::Rng;

use super::nemesis::Nemesis;
use crate::client::Client;
use crate::error::Error;

/// How long one step of a change may take (the client retries 503s meanwhile).
const STEP: Duration = Duration::from_secs(15);

impl Nemesis<'_> {
    /// Injects one membership change.
    pub(super) fn membership(&mut self) {
        if self.addresses.is_none() {
            self.note("membership change skipped: the run keeps no address lists");
            return;
        }
        let voters = self.voters();
        if self.remove_dead_voters() {
            return;
        }
        let choices = change_choices(voters.len(), self.max_voters);
        match choices[self.rng.gen_range(0..choices.len())] {
            "grow" => {
                if !self.promote_a_learner() {
                    self.add_member();
                }
            }
            "add" => {
                self.add_member();
            }
            "remove" => self.remove_voter(&voters),
            "replace" => self.replace_voter(&voters),
            _ => self.transfer(&voters),
        }
    }

    /// Promotes a learner of the configuration in force (one whose promotion was refused when it
    /// was added, most likely because it had not caught up yet). False if there is none.
    fn promote_a_learner(&mut self) -> bool {
        let who = self.leader().or_else(|| self.cluster.all().first().copied());
        let Some(status) = who.and_then(|i| self.cluster.node_status(i)) else {
            return false;
        };
        let learner = self
            .cluster
            .all()
            .into_iter()
            .map(|i| self.cluster.nodes[i].id.clone())
            .find(|id| status.learners.contains_key(id));
        let Some(id) = learner else { return false };
        match self.admin().promote_member(&id, false) {
            Ok(_) => self.note(format!("membership: the learner {id} promoted")),
            Err(e) => self.note(format!("membership: promoting the learner {id} refused: {e}")),
        }
        true
    }

    /// A voter killed for a replacement whose removal was refused stays in the configuration
    /// (its disk is gone: it must never come back). Removes such voters first; true if there
    /// were any.
    fn remove_dead_voters(&mut self) -> bool {
        let dead: Vec<usize> = (0..self.cluster.nodes.len())
            .filter(|&i| self.cluster.is_retired(i) && !self.lingering.iter().any(|(l, _)| *l == i))
            .filter(|&i| self.is_voter_id(&self.cluster.nodes[i].id))
            .collect();
        for &i in &dead {
            let id = self.cluster.nodes[i].id.clone();
            match self.remove(&id) {
                Ok(()) => self.note(format!("membership: the dead {id} removed at last")),
                Err(e) => {
                    self.note(format!("membership: removing the dead {id} refused again: {e}"))
                }
            }
        }
        !dead.is_empty()
    }

    /// True if the leader's (or a member's) configuration has `id` as a voter.
    fn is_voter_id(&self, id: &str) -> bool {
        let who = self.leader().or_else(|| self.cluster.all().first().copied());
        who.and_then(|i| self.cluster.node_status(i)).is_some_and(|s| s.voters.contains_key(id))
    }

    /// The voters of the configuration in force, as the leader (or any member) reports them,
    /// as node indexes.
    fn voters(&self) -> Vec<usize> {
        let who = self.leader().or_else(|| self.cluster.all().first().copied());
        let Some(status) = who.and_then(|i| self.cluster.node_status(i)) else {
            return self.cluster.all();
        };
        self.cluster
            .all()
            .into_iter()
            .filter(|&i| status.voters.contains_key(&self.cluster.nodes[i].id))
            .collect()
    }

    /// A client of the current members.
    fn admin(&self) -> Client {
        let servers: Vec<String> =
            self.cluster.all().iter().map(|&i| self.cluster.nodes[i].addr.clone()).collect();
        Client::builder(servers)
            .request_timeout(Duration::from_secs(5))
            .retry_deadline(STEP)
            .build()
    }

    /// Starts a joining node and adds it (learner, caught up, promoted). Returns its index if it
    /// became a member (a learner whose promotion was refused counts); a node that never got
    /// into the configuration is stopped and retired.
    fn add_member(&mut self) -> Option<usize> {
        let i = match self.cluster.add_joining_node() {
            Ok(i) => i,
            Err(e) => {
                self.note(format!("membership: cannot start a new node: {e}"));
                return None;
            }
        };
        let (id, addr) = (self.cluster.nodes[i].id.clone(), self.cluster.nodes[i].addr.clone());
        if let Some(a) = self.addresses {
            a.add_node(&addr);
        }
        let result = self.admin().add_and_promote(&id, &addr, STEP);
        let member = self.is_member(&id);
        match (&result, member) {
            (Ok(_), _) => self.note(format!("membership: {id} added, caught up and promoted")),
            (Err(e), true) => self.note(format!("membership: {id} added, not promoted: {e}")),
            (Err(e), false) => self.note(format!("membership: adding {id} refused: {e}")),
        }
        if !member {
            self.cluster.kill(i);
            self.cluster.retire(i);
            self.retired_at.push((i, self.clock.now()));
            return None;
        }
        if let Some(a) = self.addresses {
            a.add_client_target(&addr);
        }
        Some(i)
    }

    /// True if some member's configuration (the leader's, preferably) contains `id`.
    fn is_member(&self, id: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let who = self.leader().or_else(|| self.cluster.all().first().copied());
            if let Some(s) = who.and_then(|i| self.cluster.node_status(i)) {
                return s.voters.contains_key(id) || s.learners.contains_key(id);
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Removes a voter (the leader half the time); the process lingers through one more fault.
    fn remove_voter(&mut self, voters: &[usize]) {
        let takeable = removable(voters, |i| self.cluster.is_proxied(i));
        let target = match self.leader().filter(|l| takeable.contains(l) && self.rng.gen_bool(0.5))
        {
            Some(l) => l,
            None => takeable[self.rng.gen_range(0..takeable.len())],
        };
        let id = self.cluster.nodes[target].id.clone();
        let led = self.leader() == Some(target);
        match self.remove(&id) {
            Ok(()) => {
                self.note(format!(
                    "membership: {id}{} removed; it keeps running for now",
                    if led { " (the leader)" } else { "" }
                ));
                self.cluster.retire(target);
                self.retired_at.push((target, self.clock.now()));
                self.lingering.push((target, 0));
            }
            Err(e) => self.note(format!("membership: removing {id} refused: {e}")),
        }
    }

    /// `DELETE /cluster/members/{id}`, retried while another change is in progress.
    fn remove(&self, id: &str) -> Result<(), Error> {
        let deadline = Instant::now() + STEP;
        loop {
            match self.admin().remove_member(id, false) {
                Ok(_) => return Ok(()),
                Err(Error::Conflict(_)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Kills a voter, wipes its disk, adds a fresh node in its place and removes the dead one.
    fn replace_voter(&mut self, voters: &[usize]) {
        let takeable = removable(voters, |i| self.cluster.is_proxied(i));
        let dead = takeable[self.rng.gen_range(0..takeable.len())];
        let id = self.cluster.nodes[dead].id.clone();
        self.cluster.kill(dead);
        let _ = std::fs::remove_dir_all(self.cluster.data_dir(dead));
        self.cluster.retire(dead);
        self.retired_at.push((dead, self.clock.now()));
        if let Some(a) = self.addresses {
            a.drop_client_target(&self.cluster.nodes[dead].addr);
        }
        self.note(format!("membership: replace {id}: kill -9 and wipe its data dir"));
        let new = self.add_member();
        match self.remove(&id) {
            Ok(()) => self.note(format!(
                "membership: the dead {id} removed{}",
                new.map_or(String::new(), |i| format!(", {} in its place", self.name(i)))
            )),
            Err(e) => self.note(format!("membership: removing the dead {id} refused: {e}")),
        }
    }

    /// Hands the leadership to a random voter, or lets the leader pick.
    fn transfer(&mut self, voters: &[usize]) {
        let to = if self.rng.gen_bool(0.5) {
            Some(self.cluster.nodes[voters[self.rng.gen_range(0..voters.len())]].id.clone())
        } else {
            None
        };
        match self.admin().transfer_leader(to.as_deref()) {
            Ok(t) => self.note(format!("membership: leadership transferred to {}", t.leader)),
            Err(e) => self.note(format!(
                "membership: transfer to {} refused: {e}",
                to.as_deref().unwrap_or("the most up-to-date voter")
            )),
        }
    }
}

/// The changes one membership fault may draw from, given `n` live voters. Below three (a
/// replacement whose new node was not promoted, and the dead one removed) only "grow": promote a
/// learner or add a node. A replace then would kill and wipe one of two voters, and with it the
/// quorum for good (a 600 s run, seed 2026120804, lost its cluster that way).
fn change_choices(n: usize, max_voters: usize) -> Vec<&'static str> {
    if n < 3 {
        return vec!["grow"];
    }
    let mut choices = vec!["transfer", "replace"];
    if n < max_voters {
        choices.push("add");
    }
    if n > 3 {
        choices.push("remove");
    }
    choices
}

/// The voters a remove or a replace may take: any while more than two voters have link proxies
/// (the nodes the run started with); otherwise only those without (nodes that joined later),
/// so that the link faults keep two members with a link between them to act on. Joiners are
/// reached directly, and a long run that replaced every original node cut no link at all.
fn removable(voters: &[usize], proxied: impl Fn(usize) -> bool) -> Vec<usize> {
    if voters.iter().filter(|&&i| proxied(i)).count() > 2 {
        return voters.to_vec();
    }
    let joiners: Vec<usize> = voters.iter().copied().filter(|&i| !proxied(i)).collect();
    if joiners.is_empty() { voters.to_vec() } else { joiners }
}

#[cfg(test)]
mod tests {
    use super::{change_choices, removable};

    #[test]
    fn fewer_than_three_voters_only_grow_and_three_are_never_shrunk() {
        for n in 0..3 {
            assert_eq!(change_choices(n, 5), vec!["grow"], "{n} voters");
        }
        let three = change_choices(3, 5);
        assert!(three.contains(&"replace") && three.contains(&"add"), "{three:?}");
        assert!(!three.contains(&"remove"), "{three:?}");
        assert!(change_choices(4, 5).contains(&"remove"));
        assert!(!change_choices(5, 5).contains(&"add"));
    }

    #[test]
    fn two_proxied_voters_are_kept_while_a_joiner_can_go_instead() {
        let proxied = |i: usize| i < 3; // nodes 0..3 started the run; 3.. joined later
        assert_eq!(removable(&[0, 1, 2], proxied), vec![0, 1, 2]);
        assert_eq!(removable(&[0, 1, 2, 3, 4], proxied), vec![0, 1, 2, 3, 4]);
        // Two proxied voters left: only joiners may be removed or replaced.
        assert_eq!(removable(&[0, 2, 3], proxied), vec![3]);
        assert_eq!(removable(&[1, 3, 4, 5], proxied), vec![3, 4, 5]);
        // Nothing else to take: anyone (the harness must still be able to act).
        assert_eq!(removable(&[3, 4, 5], proxied), vec![3, 4, 5]);
    }
}
