//! Simulated fsyncs: group commit as the server's sync thread does it, on the simulated clock.
//!
//! An output that wrote storage (or holds messages back) carries a [`SyncPoint`]. If the disk
//! already has everything through its write sequence number, its held messages leave and
//! [`RaftNode::persisted`] is called at once. Otherwise it waits, and an fsync starts if none is
//! running: it covers the writes made *so far* (later ones wait for the next fsync) and completes
//! after a delay drawn from the cluster's RNG ([`DiskConfig`]), at the end of the tick it is due
//! in. Then, oldest first, every waiting output it covers is released: its messages are sent and
//! `persisted` is told its point. Waiting outputs it did not cover start the next fsync.
//!
//! [`DiskConfig`]: super::DiskConfig

use std::collections::VecDeque;

use rand::Rng;

use super::{Event, SimCluster};
use crate::raft::{Envelope, NodeId, SyncPoint};

/// One running node's disk activity (volatile: a crash forgets it).
pub(super) struct SyncState {
    /// Every write through this sequence number is durable.
    synced: u64,
    /// Outputs waiting for the disk, oldest first: their sync point and held messages.
    waiting: VecDeque<(SyncPoint, Vec<Envelope>)>,
    /// The fsync under way: the tick it completes in and the write it covers through.
    running: Option<(u64, u64)>,
}

impl SyncState {
    /// A node (re)started from a disk that holds everything through `synced`.
    pub(super) fn new(synced: u64) -> Self {
        SyncState { synced, waiting: VecDeque::new(), running: None }
    }

    /// True if outputs wait for the disk but no fsync is running (manual mode left them so).
    pub(super) fn idle_with_waiters(&self) -> bool {
        self.running.is_none() && !self.waiting.is_empty()
    }
}

impl SimCluster {
    /// Acts on an output's sync point: release now if the disk has it, else wait for an fsync.
    pub(super) fn await_sync(&mut self, id: &NodeId, point: SyncPoint, held: Vec<Envelope>) {
        let Some(state) = self.syncs.get_mut(id) else { return };
        if state.waiting.is_empty() && point.write_seq <= state.synced {
            self.release(id, point, held);
            return;
        }
        for env in &held {
            self.note(|| Event::Hold(env.clone()));
        }
        let state = self.syncs.get_mut(id).expect("running");
        state.waiting.push_back((point, held));
        if state.running.is_none() && !self.disk.manual {
            self.start_fsync(id);
        }
    }

    /// Starts an fsync of everything `id` has written so far.
    pub(super) fn start_fsync(&mut self, id: &NodeId) {
        let Some(through) = self.nodes.get(id).map(|n| n.storage().write_seq()) else { return };
        let disk = &self.disk;
        let max = if disk.slow_sync_rate > 0.0 && self.rng.gen_bool(disk.slow_sync_rate.min(1.0)) {
            disk.slow_sync_ticks
        } else {
            disk.max_sync_ticks
        };
        let due = self.now + self.rng.gen_range(0..=max);
        if let Some(state) = self.syncs.get_mut(id) {
            state.running = Some((due, through));
        }
    }

    /// Completes every fsync due by now, including those they start that are due at once.
    pub(super) fn complete_due_syncs(&mut self) {
        let now = self.now;
        while let Some((id, through)) = self.syncs.iter().find_map(|(id, s)| match s.running {
            Some((due, through)) if due <= now => Some((id.clone(), through)),
            _ => None,
        }) {
            self.complete_fsync(&id, through);
        }
    }

    /// Completes `id`'s fsync now (scripted tests, with [`DiskConfig::manual`]): everything it has
    /// written becomes durable and what waited for it is released. Returns false if it is down.
    ///
    /// [`DiskConfig::manual`]: super::DiskConfig::manual
    pub fn sync(&mut self, id: &NodeId) -> bool {
        let Some(through) = self.nodes.get(id).map(|n| n.storage().write_seq()) else {
            return false;
        };
        self.complete_fsync(id, through);
        true
    }

    /// The messages `id` holds until its disk syncs, oldest first.
    pub(super) fn held(&self, id: &NodeId) -> Vec<&Envelope> {
        self.syncs.get(id).map_or(Vec::new(), |s| s.waiting.iter().flat_map(|w| &w.1).collect())
    }

    /// True while an output of `id` waits for its disk.
    pub fn waits_for_sync(&self, id: &NodeId) -> bool {
        self.syncs.get(id).is_some_and(|s| !s.waiting.is_empty())
    }

    /// The fsync covering writes through `through` completes: they are durable; the outputs they
    /// cover are released in order; an fsync starts for those still waiting.
    fn complete_fsync(&mut self, id: &NodeId, through: u64) {
        self.disks[id].lock().sync_through(through);
        let Some(state) = self.syncs.get_mut(id) else { return };
        state.synced = state.synced.max(through);
        state.running = None;
        self.note(|| Event::Sync { id: id.clone(), seq: through });
        loop {
            let Some(state) = self.syncs.get_mut(id) else { return };
            match state.waiting.front() {
                Some((point, _)) if point.write_seq <= state.synced => {
                    let Some((point, held)) = state.waiting.pop_front() else { return };
                    self.release(id, point, held);
                }
                _ => break,
            }
        }
        if let Some(state) = self.syncs.get(id)
            && !state.waiting.is_empty()
            && state.running.is_none()
            && !self.disk.manual
        {
            self.start_fsync(id);
        }
    }

    /// The disk has everything through `point`: send what waited for it, tell the core.
    fn release(&mut self, id: &NodeId, point: SyncPoint, held: Vec<Envelope>) {
        for env in held {
            self.send(env);
        }
        if let Some(node) = self.nodes.get_mut(id) {
            let more = node.persisted(point.index, point.term).expect("persisted");
            self.handle_output(id, more);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::raft::{Message, NodeId};
    use crate::sim::{Event, SimCluster};

    fn n(i: u8) -> NodeId {
        format!("n{i}")
    }

    /// A manual three-node cluster in which n1 leads and everything is delivered and synced.
    fn led_by_n1() -> SimCluster {
        let mut c = SimCluster::new(3, 1);
        c.manual();
        while !c.node(&n(1)).unwrap().is_leader() {
            c.tick_node(&n(1));
            c.stabilize();
        }
        c.take_trace();
        c
    }

    fn acked_by(c: &SimCluster, id: &NodeId) -> bool {
        c.in_flight()
            .iter()
            .any(|e| e.from == *id && matches!(e.message, Message::AppendEntriesResponse(_)))
    }

    #[test]
    fn sim_a_followers_ack_waits_for_its_fsync() {
        let mut c = led_by_n1();
        c.propose(&n(1), b"x".to_vec()).unwrap();
        c.deliver_where(|e| e.to == n(2));
        assert!(!acked_by(&c, &n(2)), "n2 acknowledged before its fsync");
        assert!(c.take_trace().iter().any(|e| matches!(e, Event::Hold(m) if m.from == n(2))));
        c.sync(&n(2));
        assert!(acked_by(&c, &n(2)), "the fsync released n2's acknowledgement");
    }

    #[test]
    fn sim_a_crash_before_the_fsync_loses_only_the_unsynced_entry() {
        let mut c = led_by_n1();
        let synced = c.node(&n(2)).unwrap().log().last_index();
        c.propose(&n(1), b"x".to_vec()).unwrap();
        c.deliver_where(|e| e.to == n(2));
        assert_eq!(c.node(&n(2)).unwrap().log().last_index(), synced + 1);
        c.restart(&n(2));
        assert_eq!(
            c.node(&n(2)).unwrap().log().last_index(),
            synced,
            "the unsynced entry survived"
        );
    }

    #[test]
    fn sim_a_leader_counts_itself_only_after_its_fsync() {
        let mut c = led_by_n1();
        let (index, _) = c.propose(&n(1), b"x".to_vec()).unwrap();
        c.deliver_where(|e| e.to == n(2));
        c.sync(&n(2));
        c.deliver_where(|e| e.to == n(1));
        let commit = |c: &SimCluster| c.node(&n(1)).unwrap().log().commit_index;
        assert!(commit(&c) < index, "n1 committed with its own entry not yet durable");
        c.sync(&n(1));
        assert_eq!(commit(&c), index, "n1 and n2 both hold the entry durably");
    }
}
