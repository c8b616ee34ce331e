//! Helpers in the style of the MIT 6.5840 lab's `config.go`: find the leader, check terms, get a
//! command committed on enough nodes.

use std::collections::{BTreeMap, BTreeSet};

use super::{SimCluster, secs};
use crate::raft::{Index, NodeId, Term};

impl SimCluster {
    /// The leaders among running, connected nodes, with their terms.
    pub fn leaders(&self) -> Vec<(NodeId, Term)> {
        self.nodes
            .iter()
            .filter(|(id, n)| n.is_leader() && self.is_connected(id))
            .map(|(id, n)| (id.clone(), n.term()))
            .collect()
    }

    /// Waits up to `max_ticks` for exactly one leader in the highest term among connected nodes;
    /// panics (with the seed) if there are two in one term or none.
    pub fn check_one_leader(&mut self, max_ticks: u64) -> NodeId {
        let mut found = None;
        self.run_until(max_ticks, |c| {
            let leaders = c.leaders();
            let top = leaders.iter().map(|(_, t)| *t).max();
            let in_top: Vec<_> = leaders.iter().filter(|(_, t)| Some(*t) == top).collect();
            if in_top.len() == 1 {
                found = Some(in_top[0].0.clone());
                true
            } else {
                false
            }
        });
        found.unwrap_or_else(|| panic!("no leader within {max_ticks} ticks (seed {})", self.seed))
    }

    /// Asserts that no connected node is leader.
    pub fn check_no_leader(&self) {
        let leaders = self.leaders();
        assert!(leaders.is_empty(), "expected no leader, found {leaders:?} (seed {})", self.seed);
    }

    /// The term all connected running nodes agree on (panics if they disagree).
    pub fn check_terms(&self) -> Term {
        let terms: BTreeSet<Term> = self
            .nodes
            .iter()
            .filter(|(id, _)| self.is_connected(id))
            .map(|(_, n)| n.term())
            .collect();
        assert!(terms.len() <= 1, "nodes disagree on the term: {terms:?} (seed {})", self.seed);
        terms.into_iter().next().unwrap_or(0)
    }

    /// How many running nodes applied `index`, and the command there.
    pub fn n_committed(&self, index: Index) -> (usize, Option<Vec<u8>>) {
        let mut count = 0;
        let mut cmd = None;
        for (id, applied) in &self.applied {
            if !self.nodes.contains_key(id) {
                continue;
            }
            if let Some(c) = applied.get(&index) {
                count += 1;
                cmd = Some(c.clone());
            }
        }
        (count, cmd)
    }

    /// The MIT lab's `one()`: get `command` committed on at least `expected` nodes, trying every
    /// running, connected node as leader, for up to 10 simulated seconds. With `retry`,
    /// re-proposes if the first attempt is lost. Returns the index.
    pub fn one(&mut self, command: Vec<u8>, expected: usize, retry: bool) -> Index {
        let deadline = self.now + secs(10.0);
        let mut starter = 0;
        while self.now < deadline {
            let mut index = None;
            for _ in 0..self.ids.len() {
                starter = (starter + 1) % self.ids.len();
                let id = self.ids[starter].clone();
                if self.is_up(&id)
                    && self.is_connected(&id)
                    && let Some((i, _)) = self.propose(&id, command.clone())
                {
                    index = Some(i);
                    break;
                }
            }
            if let Some(index) = index {
                let t0 = self.now;
                while self.now - t0 < secs(2.0) {
                    let (n, cmd) = self.n_committed(index);
                    if n >= expected && cmd.as_deref() == Some(&command[..]) {
                        return index;
                    }
                    self.tick();
                }
                if !retry {
                    panic!("one({command:?}) failed to reach agreement (seed {})", self.seed);
                }
            } else {
                self.run(5);
            }
        }
        panic!("one({command:?}) failed to reach agreement in 10 s (seed {})", self.seed);
    }

    /// Several [`SimCluster::one`]s at once, like the MIT tests' concurrent goroutines: each
    /// command is proposed to whichever running, connected node leads, and proposed again if it is
    /// not committed on `expected` nodes within 2 s. Returns each command's index once all are
    /// (panics after 10 simulated seconds).
    pub fn one_all(&mut self, commands: &[Vec<u8>], expected: usize) -> Vec<Index> {
        let deadline = self.now + secs(10.0);
        // Per command: the index of its latest proposal and when it was made; then its result.
        let mut attempts: Vec<Option<(Index, u64)>> = vec![None; commands.len()];
        let mut done: Vec<Option<Index>> = vec![None; commands.len()];
        while self.now < deadline {
            for (i, command) in commands.iter().enumerate() {
                if done[i].is_some() {
                    continue;
                }
                if let Some((index, _)) = attempts[i] {
                    let (n, cmd) = self.n_committed(index);
                    if n >= expected && cmd.as_deref() == Some(&command[..]) {
                        done[i] = Some(index);
                        continue;
                    }
                }
                if attempts[i].is_none_or(|(_, at)| self.now - at >= secs(2.0))
                    && let Some(index) = self.propose_to_leader(command)
                {
                    attempts[i] = Some((index, self.now));
                }
            }
            if done.iter().all(Option::is_some) {
                return done.into_iter().flatten().collect();
            }
            self.tick();
        }
        panic!("one_all failed to reach agreement in 10 s (seed {})", self.seed);
    }

    /// Proposes on the first running, connected node that accepts (leads); returns the index.
    pub fn propose_to_leader(&mut self, command: &[u8]) -> Option<Index> {
        for id in self.ids.clone() {
            if self.is_up(&id)
                && self.is_connected(&id)
                && let Some((index, _)) = self.propose(&id, command.to_vec())
            {
                return Some(index);
            }
        }
        None
    }

    /// Waits for `index` to be applied by at least `n` nodes (up to `max_ticks`); returns the command.
    pub fn wait(&mut self, index: Index, n: usize, max_ticks: u64) -> Option<Vec<u8>> {
        self.run_until(max_ticks, |c| c.n_committed(index).0 >= n);
        let (count, cmd) = self.n_committed(index);
        (count >= n).then_some(cmd).flatten()
    }

    /// Every running node's applied commands, for end-of-test comparisons.
    pub fn applied(&self, id: &NodeId) -> Option<&BTreeMap<Index, Vec<u8>>> {
        self.applied.get(id)
    }

    /// The entry some node applied at `index` (every node that applies it applies the same one),
    /// as (term, command): how a simulated client learns that its proposal committed, and
    /// whether it was its own entry (same term) or another leader's.
    pub fn committed_at(&self, index: Index) -> Option<(Term, &[u8])> {
        self.committed.get(&index).map(|(term, command)| (*term, command.as_slice()))
    }

    /// Highest index applied by any node.
    pub fn max_committed(&self) -> Index {
        self.committed.keys().next_back().copied().unwrap_or(0)
    }
}
