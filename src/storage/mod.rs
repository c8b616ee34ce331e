//! Durable storage for the Raft core: a write-ahead log that implements the core's
//! [`Storage`] port, the [`Syncer`] that makes its writes durable outside the
//! Raft lock, and the [`SnapshotStore`] for the state machine's snapshot files.
//!
//! The core calls its storage under the node's lock, so a call only *writes* (into the OS page
//! cache); [`Syncer::sync_through`] — called by the threaded shell *without* the Raft lock —
//! returns once every write up to a sequence number is on disk. Concurrent callers share one fsync
//! (group commit). The core never sends a message that depends on unsynced state (a vote, an
//! append acknowledgement) before the shell has synced through the sequence number the core
//! reports; see [`crate::raft::Output`].
//!
//! [`open`] is the one call a node makes: it returns the log, its syncer and the snapshot store
//! together ([`NodeStorage`]), for a data directory ([`DurableStorage`], a segmented WAL with
//! torn-tail recovery described in [`wal`]) or for a node kept wholly in memory
//! ([`MemStorage`]).
//!
//! Snapshot *files* (the state machine's serialized state) live next to the log, in a
//! [`SnapshotStore`] ([`snapshot`]); the log only records which snapshot is current.
//!
//! [`dump::dump`] prints a data dir without changing it (`raftlabkv-server dump`).

pub mod dump;
pub mod durable;
pub mod snapshot;
pub mod wal;

pub use durable::{DurableOptions, DurableStorage, RecoveryReport, SegmentInfo, TornTail};
pub use snapshot::SnapshotStore;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::raft::{MemStorage, Storage};

/// Where a node keeps its state.
#[derive(Debug, Clone)]
pub enum StorageChoice {
    /// Nothing on disk: a restarted node starts empty, and it never takes snapshots.
    InMemory,
    /// A write-ahead log and snapshot files in `dir`, locked while the node runs.
    Durable { dir: PathBuf, options: DurableOptions },
}

/// What [`open`] hands a node: the log the core writes through, the syncer the shell makes it
/// durable with, and (for a data directory) the snapshot store.
pub struct NodeStorage {
    /// The log and hard state, for [`crate::raft::RaftNode::new`].
    pub log: Box<dyn Storage>,
    /// Makes the log's writes durable from the shell's sync thread.
    pub syncer: Arc<dyn Syncer>,
    /// Snapshot files; `None` for a node in memory (which never snapshots).
    pub snapshots: Option<SnapshotStore>,
    /// What recovery found on disk; `None` in memory.
    pub report: Option<RecoveryReport>,
    /// The data directory; `None` in memory.
    pub dir: Option<PathBuf>,
}

/// Opens a node's storage: recovers the WAL of a data directory, or starts an empty one in memory.
pub fn open(choice: &StorageChoice) -> Result<NodeStorage> {
    match choice {
        StorageChoice::InMemory => Ok(NodeStorage {
            log: Box::new(MemStorage::new()),
            syncer: Arc::new(NoopSyncer),
            snapshots: None,
            report: None,
            dir: None,
        }),
        StorageChoice::Durable { dir, options } => {
            let (log, report) = DurableStorage::open(dir, *options)?;
            let syncer = log.syncer();
            let snapshots = log.snapshot_store().clone();
            Ok(NodeStorage {
                log: Box::new(log),
                syncer,
                snapshots: Some(snapshots),
                report: Some(report),
                dir: Some(dir.clone()),
            })
        }
    }
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

    /// From now on, tell `observer` of every fsync of the log (for metrics). Only the first
    /// observer set counts. Storage that never fsyncs ignores it.
    fn set_observer(&self, observer: Arc<dyn SyncObserver>) {
        let _ = observer;
    }
}

/// Told of every group-commit fsync of the log, on the thread that made it (keep it cheap: it
/// runs while others wait for that fsync).
pub trait SyncObserver: Send + Sync {
    /// An fsync took `took` and made `records` more WAL records durable (log entries, and the
    /// occasional term-and-vote record).
    fn fsynced(&self, took: Duration, records: u64);

    /// Called just before each fsync, inside the time [`SyncObserver::fsynced`] reports (the
    /// fault lab's slow disk sleeps here).
    fn before_fsync(&self) {}
}

/// A syncer for storage that is durable as soon as a call returns (memory, or fsync disabled).
pub struct NoopSyncer;

impl Syncer for NoopSyncer {
    fn sync_through(&self, _seq: u64) -> Result<()> {
        Ok(())
    }
}
