//! Recording what happens, and the manual controls scripted tests drive the cluster with.
//!
//! A script (`tests/scripts/`) sets [`SimCluster::manual`]: messages stay in the network until
//! [`SimCluster::deliver_where`] hands them over, fsyncs wait for [`SimCluster::sync`], and time
//! passes only for the node a script ticks ([`SimCluster::tick_node`]). Every step leaves
//! [`Event`]s, which the script prints and compares with its expected output.

use std::cmp::Reverse;

use super::{SimCluster, SnapshotMeta};
use crate::raft::{Entry, Envelope, Index, NodeId};

/// One thing that happened in the cluster, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message left its sender.
    Send(Envelope),
    /// A message promising durable state waits for its sender's fsync ([`crate::raft::Output`]'s
    /// `after_sync`); it is sent when the fsync completes.
    Hold(Envelope),
    /// A message reached its receiver, which acted on it: the events after it, up to the next
    /// `Deliver`, are what it caused.
    Deliver(Envelope),
    /// A message was lost, and why.
    Drop(Envelope, &'static str),
    /// A node's fsync made its writes through this write sequence number durable.
    Sync {
        /// The node.
        id: NodeId,
        /// [`crate::raft::Storage::write_seq`] it covered.
        seq: u64,
    },
    /// A node applied a committed entry.
    Apply(NodeId, Entry),
    /// A follower installed a leader's snapshot.
    Restore(NodeId, SnapshotMeta),
    /// A leader confirmed a ReadIndex read: it may be served once the state machine reaches
    /// `index`.
    Read {
        /// The leader.
        id: NodeId,
        /// The read's id.
        read: u64,
        /// The index to apply first.
        index: Index,
    },
    /// A node crashed, losing this many writes its disk had not synced.
    Crash {
        /// The node.
        id: NodeId,
        /// Unsynced writes lost.
        lost: usize,
    },
    /// A node started (again) from its disk.
    Start(NodeId),
}

impl SimCluster {
    /// Manual mode, for scripts: messages wait for [`SimCluster::deliver_where`], fsyncs for
    /// [`SimCluster::sync`], a crash loses every unsynced write, and events are recorded.
    pub fn manual(&mut self) {
        self.manual_delivery = true;
        self.disk.manual = true;
        self.disk.keep_unsynced_rate = 0.0;
        self.trace.get_or_insert_with(Vec::new);
    }

    /// Leaves manual mode: messages are delivered and fsyncs complete on the clock again, and
    /// recording stops. Outputs still waiting for a disk start their fsync now; the messages in
    /// the network arrive from the next tick on.
    pub fn automatic(&mut self) {
        self.manual_delivery = false;
        self.disk.manual = false;
        self.trace = None;
        for id in self.ids.clone() {
            let idle = self.syncs.get(&id).is_some_and(|s| s.idle_with_waiters());
            if idle {
                self.start_fsync(&id);
            }
        }
    }

    /// Records events in automatic mode too (from now until [`SimCluster::automatic`]), for tests
    /// that count what was sent.
    pub fn record(&mut self) {
        self.trace.get_or_insert_with(Vec::new);
    }

    /// Records an event when recording.
    pub(super) fn note(&mut self, event: impl FnOnce() -> Event) {
        if let Some(trace) = &mut self.trace {
            trace.push(event());
        }
    }

    /// The events recorded since the last call.
    pub fn take_trace(&mut self) -> Vec<Event> {
        self.trace.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Delivers, in the order they were sent, the messages now in the network that `select`
    /// picks; messages they cause stay in the network for a later call. Returns how many.
    pub fn deliver_where(&mut self, mut select: impl FnMut(&Envelope) -> bool) -> usize {
        let mut all: Vec<_> = std::mem::take(&mut self.queue).into_iter().map(|r| r.0).collect();
        all.sort_by_key(|m| m.order);
        let (chosen, rest): (Vec<_>, Vec<_>) = all.into_iter().partition(|m| select(&m.env));
        self.queue.extend(rest.into_iter().map(Reverse));
        let count = chosen.len();
        for inflight in chosen {
            self.deliver(inflight.env);
        }
        count
    }

    /// Delivers every message and completes every fsync something waits for, over and over, until
    /// nothing is in flight or waiting (time does not pass, so no heartbeat or timeout starts).
    pub fn stabilize(&mut self) {
        loop {
            let mut progress = self.deliver_where(|_| true) > 0;
            for id in self.ids.clone() {
                if self.waits_for_sync(&id) {
                    self.sync(&id);
                    progress = true;
                }
            }
            if !progress {
                return;
            }
        }
    }

    /// The messages now in the network, in the order they were sent.
    pub fn in_flight(&self) -> Vec<&Envelope> {
        let mut all: Vec<_> = self.queue.iter().map(|r| &r.0).collect();
        all.sort_by_key(|m| m.order);
        all.into_iter().map(|m| &m.env).collect()
    }

    /// Writes a snapshot of `id`'s state machine at what it has applied and compacts its log
    /// (keeping [`SimCluster::snapshot_trailing`] entries). Returns the snapshot, if it took one.
    pub fn take_snapshot(&mut self, id: &NodeId) -> Option<SnapshotMeta> {
        let log = self.nodes.get(id)?.log();
        let index = log.last_applied;
        let meta = SnapshotMeta { index, term: log.term_at(index)? };
        if index == 0 {
            return None;
        }
        self.save_snapshot(id, meta);
        Some(meta)
    }

    /// Writes on `id`'s disk that no fsync has covered yet.
    pub fn unsynced(&self, id: &NodeId) -> usize {
        self.disks.get(id).map_or(0, |d| d.lock().unsynced())
    }
}
