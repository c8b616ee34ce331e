//! The simulated network: a priority queue of envelopes keyed by the tick they arrive, with
//! links that can be cut one way or both, loss, delay and reordering.

use std::cmp::Reverse;

use rand::Rng;

use super::{Event, SimCluster};
use crate::raft::{Envelope, Message, NodeId, SnapshotMeta};

/// Network behaviour.
#[derive(Debug, Clone, Default)]
pub struct NetConfig {
    /// Probability (0–1) that any message is lost.
    pub drop_rate: f64,
    /// Extra delay, in ticks, drawn uniformly from `0..=max_delay` for each message.
    pub max_delay: u64,
    /// When false, each directed link delivers in order (FIFO, like TCP).
    pub reorder: bool,
}

/// A message on its way.
pub(super) struct InFlight {
    /// The tick it arrives in.
    pub(super) deliver_at: u64,
    /// Tie-breaker: the order messages were sent in.
    pub(super) order: u64,
    pub(super) env: Envelope,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.deliver_at, self.order) == (other.deliver_at, other.order)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.deliver_at, self.order).cmp(&(other.deliver_at, other.order))
    }
}

impl SimCluster {
    /// Cuts every link to and from `id` (the MIT lab's `disconnect`).
    pub fn disconnect(&mut self, id: &NodeId) {
        self.isolated.insert(id.clone());
        for other in self.ids.clone() {
            if &other != id {
                self.cut.insert((id.clone(), other.clone()));
                self.cut.insert((other, id.clone()));
            }
        }
    }

    /// Undoes [`SimCluster::disconnect`] the way the MIT lab's `connect` does: restores the links
    /// between `id` and every node that is not itself disconnected. (Reconnecting one of several
    /// disconnected nodes therefore does not reconnect it to the others.)
    pub fn connect(&mut self, id: &NodeId) {
        self.isolated.remove(id);
        let isolated = &self.isolated;
        self.cut.retain(|(a, b)| {
            let other = if a == id {
                b
            } else if b == id {
                a
            } else {
                return true;
            };
            isolated.contains(other)
        });
    }

    /// Cuts one direction of one link.
    pub fn cut_link(&mut self, from: &NodeId, to: &NodeId) {
        self.cut.insert((from.clone(), to.clone()));
    }

    /// Splits the cluster into groups; links between groups are cut, inside a group restored.
    pub fn partition(&mut self, groups: &[Vec<NodeId>]) {
        self.cut.clear();
        self.isolated.clear();
        for a in &self.ids {
            for b in &self.ids {
                let same = groups.iter().any(|g| g.contains(a) && g.contains(b));
                if a != b && !same {
                    self.cut.insert((a.clone(), b.clone()));
                }
            }
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut.clear();
        self.isolated.clear();
    }

    /// The MIT lab's `setlongreordering`: while on, two responses in three are held back an extra
    /// `20 + rand(0..=rand(0..=200))` ticks (0.2–2.2 s), on top of [`SimCluster::net`], so replies
    /// arrive long after newer ones. Requests are not affected, as in the lab. Meant for
    /// `net.reorder = true`: on FIFO links a held-back reply also holds back those behind it.
    pub fn set_long_reordering(&mut self, on: bool) {
        self.long_reordering = on;
    }

    /// True unless every outgoing link of `id` is cut: whether it can reach anyone at all. This is
    /// what [`SimCluster::leaders`] and [`SimCluster::one`] go by; see also
    /// [`SimCluster::is_isolated`].
    pub fn is_connected(&self, id: &NodeId) -> bool {
        self.ids.len() == 1
            || self.ids.iter().any(|o| o != id && !self.cut.contains(&(id.clone(), o.clone())))
    }

    /// True while `id` is cut off by [`SimCluster::disconnect`] (the MIT lab's `!connected[i]`).
    pub fn is_isolated(&self, id: &NodeId) -> bool {
        self.isolated.contains(id)
    }

    /// Hands `env` to its receiver and acts on what it outputs.
    pub(super) fn deliver(&mut self, env: Envelope) {
        if self.cut.contains(&(env.from.clone(), env.to.clone())) {
            self.note(|| Event::Drop(env.clone(), "the link is cut"));
            self.snapshot_call_failed(&env);
            return;
        }
        if let Message::InstallSnapshot(req) = &env.message {
            // The snapshot's data travels with the message: the sender's current snapshot, if it
            // is still the one the message names (else the transfer "failed").
            let meta =
                SnapshotMeta { index: req.last_included_index, term: req.last_included_term };
            match self.snapshots.get(&env.from) {
                Some((m, data)) if *m == meta => {
                    self.incoming_snapshot.insert(env.to.clone(), (meta, data.clone()));
                }
                _ => {
                    self.note(|| Event::Drop(env.clone(), "the snapshot was replaced"));
                    self.snapshot_call_failed(&env);
                    return;
                }
            }
        }
        let to = env.to.clone();
        if !self.nodes.contains_key(&to) {
            self.note(|| Event::Drop(env.clone(), "the receiver is down"));
            self.snapshot_call_failed(&env);
            return;
        }
        self.note(|| Event::Deliver(env.clone()));
        if let Some(node) = self.nodes.get_mut(&to) {
            let out = node.step(env).expect("step");
            self.handle_output(&to, out);
        }
    }

    /// A snapshot transfer is a call whose failure the sender hears of: the shell's peer thread
    /// reports a lost InstallSnapshot or reply, a refused connection or a snapshot replaced
    /// mid-transfer with [`RaftNode::report_unreachable`], and the leader sends its current
    /// snapshot again (the MIT lab's RPCs likewise return false when lost). Only the core's
    /// fallback timeout (ten RPC timeouts, meant for a transfer that hangs) would notice a
    /// silently lost one. AppendEntries losses stay silent: the core's RPC timeout covers them.
    pub(super) fn snapshot_call_failed(&mut self, env: &Envelope) {
        let (leader, follower) = match &env.message {
            Message::InstallSnapshot(_) => (&env.from, &env.to),
            Message::InstallSnapshotResponse(_) => (&env.to, &env.from),
            _ => return,
        };
        if let Some(node) = self.nodes.get_mut(leader) {
            node.report_unreachable(follower);
        }
    }

    /// Puts `env` on the network (or loses it), counting it.
    pub(super) fn send(&mut self, env: Envelope) {
        self.note(|| Event::Send(env.clone()));
        let link = (env.from.clone(), env.to.clone());
        match &env.message {
            Message::RequestVote(_) => self.rpcs += 1,
            Message::AppendEntries(ae) => {
                self.rpcs += 1;
                *self.appends_sent.entry(link.clone()).or_default() += 1;
                *self.entries_sent.entry(link.clone()).or_default() += ae.entries.len() as u64;
            }
            Message::AppendEntriesResponse(resp) if !resp.success => {
                *self.append_rejections.entry(link.clone()).or_default() += 1;
            }
            _ => {}
        }
        if self.cut.contains(&link) {
            self.note(|| Event::Drop(env.clone(), "the link is cut"));
            self.snapshot_call_failed(&env);
            return;
        }
        if self.net.drop_rate > 0.0 && self.rng.gen_bool(self.net.drop_rate.min(1.0)) {
            self.note(|| Event::Drop(env.clone(), "lost"));
            self.snapshot_call_failed(&env);
            return;
        }
        let mut delay =
            if self.net.max_delay > 0 { self.rng.gen_range(0..=self.net.max_delay) } else { 0 };
        if self.long_reordering && env.message.is_response() && self.rng.gen_ratio(2, 3) {
            let spread = self.rng.gen_range(0..=200);
            delay += 20 + self.rng.gen_range(0..=spread);
        }
        let link = (env.from.clone(), env.to.clone());
        let mut deliver_at = self.now + 1 + delay;
        if !self.net.reorder {
            let last = self.link_clock.entry(link).or_default();
            deliver_at = deliver_at.max(*last);
            *last = deliver_at;
        }
        self.order += 1;
        self.queue.push(Reverse(InFlight { deliver_at, order: self.order, env }));
    }
}
