//! Snapshots in the shell: taking them without stopping the node, shipping them to followers in
//! chunks, and installing a received one in the state machine (loading the one a node starts
//! from is `startup::load_state_machine`).
//!
//! **Taking one.** After applying entries, the apply thread checks whether `snapshot_threshold`
//! entries were applied since the last snapshot. If so it freezes the state machine
//! ([`KvStore::freeze`], O(1): the snapshot shares the map, later writes go to an overlay that
//! is merged back afterwards), and a `snapshot` thread encodes the frozen state straight into a
//! file written atomically ([`SnapshotStore::write_with`]; the encoding is never in memory whole,
//! so a snapshot of 1,000,000 keys does not add its 140 MB to the node's resident set), and only
//! then tells the core ([`RaftNode::snapshot_taken`]), which records it and compacts the log,
//! keeping `snapshot_trailing` entries.
//!
//! **Write pauses.** Freezing is O(1), but a node serving writes while it snapshots a large state
//! can still stall them in three ways, each measured with `measure_snapshot -- pause` (1,000,000
//! keys, 120 MB files, all three nodes of one machine snapshotting at once) and removed:
//! - *One big fsync.* Flushing the whole file at once makes the filesystem's journal commit wait
//!   for all of it, and the node's WAL fsyncs wait behind that commit (p99.9 509 ms). The file is
//!   written and fsynced 4 MiB at a time instead ([`crate::storage::snapshot`]).
//! - *Work under the Raft lock.* Compacting a million entries freed a million allocations, and
//!   deleting WAL segments fsynced the directory, all with the core locked (31-70 ms at 300,000
//!   keys; p99.9 242 ms at 1,000,000 before this fix). The core now only records the compaction;
//!   [`Syncer::reclaim`](crate::storage::Syncer::reclaim) does the rest here, after the lock is
//!   released.
//! - *CPU.* Encoding is a copy of the map; on two cores shared by three nodes and the load it
//!   still slows everything down a little (what remains: p99.9 47 ms against 19 ms without).
//!
//! **Sending one.** When the core asks for an InstallSnapshot, the peer thread streams the file in
//! `snapshot_chunk_bytes` pieces to `POST /raft/snapshotChunk`, resuming from the offset the follower
//! reports, then delivers the InstallSnapshot message itself. The follower verifies the whole file
//! (checksum) before stepping the message into its core; only then is its state replaced.
//!
//! [`RaftNode::snapshot_taken`]: crate::raft::RaftNode::snapshot_taken
//! [`KvStore::freeze`]: crate::kv::KvStore::freeze

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::node::{Node, spawn};
use super::startup::load_state_machine;
use super::transport::Transport;
use crate::api::SnapshotChunk;
use crate::error::{Error, Result};
use crate::kv::Frozen;
use crate::raft::{Envelope, SnapshotMeta};
use crate::storage::SnapshotStore;

/// Apply thread: if enough was applied since the last snapshot, freeze the map and hand it to a
/// `snapshot` thread.
pub(super) fn maybe_take(node: &Arc<Node>) {
    let threshold = node.config.snapshot_threshold;
    let Some(store) = node.snapshots.clone() else { return };
    if threshold == 0 {
        return;
    }
    {
        let state = node.snapshot_state.lock();
        let applied = node.kv.read().applied_index();
        if state.in_progress || applied < state.last_index + threshold {
            return;
        }
    }
    let me = Arc::clone(node);
    let started = Instant::now();
    // O(1): the snapshot shares the map; writes from now on go to the store's overlay.
    let Some(frozen) = node.kv.write().freeze() else { return };
    let pause = started.elapsed();
    node.snapshot_state.lock().in_progress = true;
    let spawned = spawn("snapshot".into(), move || {
        let keys = frozen.len();
        let result = write(&me, &store, &frozen);
        drop(frozen);
        let mut state = me.snapshot_state.lock();
        state.in_progress = false;
        match result {
            Ok((meta, t)) => {
                state.last_index = state.last_index.max(meta.index);
                me.metrics.events.snapshot_saved(started.elapsed());
                me.feed.snapshot("taken", meta.index, None);
                log::info!(
                    "snapshot at index {} ({keys} keys): state frozen in {pause:?} (writes \
                     paused), written in {:?} (encoded into the file in {:?}, recorded and \
                     log compacted under the Raft lock in {:?}, old WAL segments deleted in \
                     {:?})",
                    meta.index,
                    started.elapsed(),
                    t[0],
                    t[1],
                    t[2]
                );
            }
            Err(e) => log::error!("snapshot failed: {e}"),
        }
    });
    if let Err(e) = spawned {
        node.snapshot_state.lock().in_progress = false;
        log::error!("{e}");
    }
}

/// Snapshot thread: encode, write durably, then let the core compact.
/// Returns how long each step took: encoding into the file, recording it in the core (under
/// the Raft lock), deleting WAL segments.
fn write(
    node: &Node,
    store: &SnapshotStore,
    frozen: &Frozen,
) -> Result<(SnapshotMeta, [Duration; 3])> {
    let meta = SnapshotMeta { index: frozen.index, term: frozen.term };
    // The configuration in force at the snapshot's index travels in its data, so a node that
    // installs the file without recording it (it stopped in between) still knows it.
    let cluster = match node.raft.lock().membership_at(meta.index) {
        Some(m) => serde_json::to_value(m).unwrap_or_default(),
        None => serde_json::Value::Null,
    };
    let mut lap = Lap(Instant::now());
    // Encoded straight into the file: the encoding of a large store is never in memory whole.
    store.write_with(meta, |out| frozen.encode_to(&cluster, out))?;
    let written = lap.next();
    let trailing = node.config.snapshot_trailing;
    node.raft.lock().snapshot_taken(meta, trailing)?;
    let recorded = lap.next();
    reclaim_wal(node);
    Ok((meta, [written, recorded, lap.next()]))
}

/// Apply thread: the core installed a leader's snapshot; load it into the state machine.
pub(super) fn restore(node: &Node, meta: SnapshotMeta) {
    let Some(store) = node.snapshots.as_deref() else {
        node.fatal(&Error::Storage("asked to restore a snapshot without snapshot files".into()));
    };
    let started = Instant::now();
    let kv = match load_state_machine(Some(meta), Some(store)) {
        Ok((kv, _)) => kv,
        Err(e) => node.fatal(&e),
    };
    node.metrics.events.snapshot_installed(started.elapsed());
    node.feed.snapshot("installed", meta.index, None);
    *node.kv.write() = kv;
    {
        let mut state = node.snapshot_state.lock();
        state.last_index = state.last_index.max(meta.index);
    }
    node.with_pending(|pending| pending.advance_applied(meta.index));
    reclaim_wal(node);
}

/// Deletes the WAL segments the last compaction or install made unnecessary, outside the
/// Raft lock (an fsync and a directory fsync per segment). A failure is retried next time.
fn reclaim_wal(node: &Node) {
    let started = Instant::now();
    match node.syncer.reclaim() {
        Ok(()) => log::debug!("WAL segments reclaimed in {:?}", started.elapsed()),
        Err(e) => log::warn!("cannot delete old WAL segments yet: {e}"),
    }
}

/// Peer thread (leader): stream the snapshot named by `env` to `addr`, then deliver `env`.
pub(super) fn send(
    node: &Node,
    addr: &str,
    env: &Envelope,
    meta: SnapshotMeta,
    transport: &dyn Transport,
) -> Result<Option<Envelope>> {
    let store = node
        .snapshots
        .as_deref()
        .ok_or_else(|| Error::Internal("no snapshot files to send".into()))?;
    log::debug!("sending snapshot {} to {}", meta.index, env.to);
    let total = store.file_len(meta)?;
    let mut offset = 0;
    let started = Instant::now();
    // Shown in `/status` while it lasts, however it ends.
    let _shown = SendingShown { node, peer: &env.to };
    node.metrics.snapshot_sending(&env.to, meta.index, 0, total);
    while offset < total && !node.is_shutdown() {
        let data = store.read_chunk(meta, offset, node.config.snapshot_chunk_bytes)?;
        let chunk = SnapshotChunk { from: &env.from, snapshot: meta, offset, total, data: &data };
        let next = transport.send_snapshot_chunk(addr, &env.to, &chunk)?;
        // The follower says how much it holds: continue from there (resume or restart).
        if next <= offset && next != 0 {
            return Err(Error::Unavailable(format!(
                "snapshot transfer to {addr} makes no progress"
            )));
        }
        offset = next;
        node.metrics.snapshot_sending(&env.to, meta.index, offset, total);
    }
    log::info!(
        "sent snapshot {} ({total} bytes) to {} in {:?}",
        meta.index,
        env.to,
        started.elapsed()
    );
    let answer = transport.call(addr, env)?;
    node.metrics.events.snapshot_sent_whole();
    node.feed.snapshot("sent", meta.index, Some(&env.to));
    Ok(answer)
}

/// HTTP worker (follower): one chunk of a snapshot; returns how many bytes are held now.
pub(super) fn receive_chunk(node: &Node, chunk: &SnapshotChunk) -> Result<u64> {
    let SnapshotChunk { from, snapshot, offset, total, data } = *chunk;
    // Any sender: a joining node has no configuration yet. Strangers are refused before this,
    // by the cluster id and the peer secret.
    log::debug!("snapshot chunk {}@{offset} from {from}", snapshot.index);
    let store = node
        .snapshots
        .as_deref()
        .ok_or_else(|| Error::Unavailable("this node keeps no snapshot files".into()))?;
    match store.receive_chunk(snapshot, offset, total, data) {
        Ok(received) => {
            node.metrics.snapshot_receiving(snapshot.index, received, total);
            Ok(received)
        }
        // A stale, duplicate or out-of-order chunk: tell the sender where to continue.
        Err(e) => crate::storage::snapshot::expected_offset(&e).ok_or(e),
    }
}

/// Before an InstallSnapshot reaches the core: the whole file must have arrived and check out.
pub(super) fn accept_file(node: &Node, meta: SnapshotMeta) -> Result<()> {
    let store = node
        .snapshots
        .as_deref()
        .ok_or_else(|| Error::Unavailable("this node keeps no snapshot files".into()))?;
    // Already in place (a retransmitted InstallSnapshot after the whole file arrived)?
    if store.receiving().is_none_or(|(m, _)| m != meta) && store.list()?.contains(&meta) {
        return Ok(());
    }
    store.finish_receive(meta)?;
    node.metrics.events.snapshot_received_whole();
    node.feed.snapshot("received", meta.index, None);
    Ok(())
}

/// Takes a transfer out of `/status` when the sending ends.
struct SendingShown<'a> {
    node: &'a Node,
    peer: &'a crate::raft::NodeId,
}

impl Drop for SendingShown<'_> {
    fn drop(&mut self) {
        self.node.metrics.snapshot_sent(self.peer);
    }
}

/// Successive durations.
struct Lap(Instant);

impl Lap {
    /// Time since the previous call (or the start).
    fn next(&mut self) -> Duration {
        let now = Instant::now();
        now - std::mem::replace(&mut self.0, now)
    }
}
