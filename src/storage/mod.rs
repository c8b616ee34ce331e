//! Where a node keeps its Raft state: the hard state (term and vote) and the log.
//!
//! The consensus core calls a [`Storage`] while it holds the node's lock, so every call must be quick:
//! an implementation *writes* (into memory, or into the OS page cache) but does not wait for the disk.
//! Durability is a separate, shareable step: every mutating call bumps [`Storage::write_seq`], and
//! [`Syncer::sync_through`] — called by the threaded shell *without* the Raft lock — returns once
//! every write up to a sequence number is on disk. Concurrent callers share one fsync (group commit).
//!
//! The core never sends a message that depends on unsynced state (a vote, an append acknowledgement)
//! before the shell has synced through the sequence number the core reports; see
//! [`crate::raft::Output`].
//!
//! Implementations:
//!
//! * [`MemStorage`]: the log in a `Vec` (tests, simulation, nodes without a data directory);
//! * [`DurableStorage`] ([`durable`]): a segmented write-ahead log in a data directory, with
//!   torn-tail recovery and group commit; its on-disk format is described in [`wal`].
//!
//! Snapshot *files* (the state machine's serialized state) live next to the log, in a
//! [`SnapshotStore`] ([`snapshot`]); the log only records which snapshot is current.

pub mod durable;
mod entries;
mod memory;
pub mod snapshot;
pub mod wal;

pub use durable::{DurableOptions, DurableStorage, RecoveryReport, SegmentInfo, TornTail};
pub use memory::MemStorage;
pub use snapshot::SnapshotStore;

use std::sync::Arc;

use crate::error::Result;
use crate::raft::{Entry, HardState, Index, SnapshotMeta, Term};

/// The log and hard state of one node, as the core sees them.
///
/// Indexes: entries `first_index()..=last_index()` are held. `term(first_index() - 1)` is still known
/// (it is the last entry covered by a snapshot, or index 0 with term 0), so the consistency check of
/// AppendEntries works at the boundary.
pub trait Storage: Send {
    /// The durable term and vote (as last written).
    fn hard_state(&self) -> HardState;
    /// Records a new term and vote.
    fn save_hard_state(&mut self, hard_state: &HardState) -> Result<()>;
    /// Index of the first entry held (1 until a snapshot compacts the log).
    fn first_index(&self) -> Index;
    /// Index of the last entry held (0 when the log is empty).
    fn last_index(&self) -> Index;
    /// Term of the entry at `index`, for `first_index() - 1 <= index <= last_index()`; `None` outside.
    fn term(&self, index: Index) -> Option<Term>;
    /// Entries in `lo..hi` (half-open), stopping early once `max_bytes` is exceeded, but always at
    /// least one entry when the range is not empty. Errors if `lo < first_index()` or `hi > last+1`.
    fn entries(&self, lo: Index, hi: Index, max_bytes: usize) -> Result<Vec<Entry>>;
    /// Appends entries; the first must have index `last_index() + 1` and indexes must be contiguous.
    fn append(&mut self, entries: &[Entry]) -> Result<()>;
    /// Removes every entry with index `>= from` (a follower's conflicting suffix, §5.3).
    fn truncate_suffix(&mut self, from: Index) -> Result<()>;
    /// Sequence number of the latest mutating call (append, truncate, hard state). Monotonic.
    fn write_seq(&self) -> u64;
    /// A handle that makes writes durable from another thread, without the Raft lock.
    fn syncer(&self) -> Arc<dyn Syncer>;

    // ----- snapshots and compaction (§7) -----

    /// The latest snapshot this node holds durably, if any. Survives restarts.
    fn snapshot(&self) -> Option<SnapshotMeta>;
    /// Records that a snapshot through `meta` is now durable (the shell wrote and synced its data
    /// first), so the entries it covers may be compacted. `meta.index` must not exceed
    /// `last_index()` and must not go backwards.
    fn set_snapshot(&mut self, meta: SnapshotMeta) -> Result<()>;
    /// Drops every entry with index `<= index` (which must be `<= snapshot().index` and
    /// `<= last_index()`). Afterwards `first_index() == index + 1` and `term(index)` is still known.
    /// Implementations reclaim the space; a WAL only marks the segments wholly below `index`, and
    /// [`Syncer::reclaim`] deletes them later, without the caller's lock.
    fn compact(&mut self, index: Index) -> Result<()>;
    /// A follower installs a leader's snapshot: `meta` becomes the snapshot and the log starts
    /// right after it. If the log holds the entry `(meta.index, meta.term)`, the entries after it
    /// are kept (they agree with the leader's, by the Log Matching property); otherwise the whole
    /// log is dropped. Afterwards `first_index() == meta.index + 1`, `term(meta.index) ==
    /// Some(meta.term)`.
    fn install_snapshot(&mut self, meta: SnapshotMeta) -> Result<()>;
}

/// Makes writes durable. Shared between threads; implementations batch concurrent callers.
pub trait Syncer: Send + Sync {
    /// Returns once every write with sequence number `<= seq` is durable.
    fn sync_through(&self, seq: u64) -> Result<()>;

    /// How many fsyncs this storage has done (for `/status` and benchmarks).
    fn fsync_count(&self) -> u64 {
        0
    }

    /// Finishes what [`Storage::compact`] and [`Storage::install_snapshot`] started: frees the
    /// entries they removed from memory, and deletes the files they left unneeded once the
    /// records saying so are durable. Separate from them so that this slow part (freeing a
    /// million entries, an fsync, file deletions, directory fsyncs) runs outside the Raft lock:
    /// the shell calls it after recording or installing a snapshot. A failure is reported, and the
    /// files are tried again at the next call.
    fn reclaim(&self) -> Result<()> {
        Ok(())
    }
}

/// A syncer for storage that is durable as soon as a call returns (memory, or fsync disabled).
pub struct NoopSyncer;

impl Syncer for NoopSyncer {
    fn sync_through(&self, _seq: u64) -> Result<()> {
        Ok(())
    }
}
