//! [`SyncState`]: the half of a [`DurableStorage`](super::DurableStorage) that other threads use,
//! without the Raft lock. As the storage's [`Syncer`] it makes writes durable (group commit) and
//! reclaims what compaction left behind (entries to free, segments to delete).
//!
//! # Group commit
//!
//! Making writes survive a power cut takes an `fsync` (here `sync_data`), which can take
//! milliseconds. That happens in [`Syncer::sync_through`], called by other threads *without* the
//! Raft lock, so the leader keeps accepting and writing entries while the disk works. It is a
//! *group commit*:
//!
//! 1. if the durable sequence number already covers `seq`, return at once;
//! 2. otherwise take the sync mutex (one fsync at a time) and check again: whoever held the mutex
//!    may have synced our write already;
//! 3. read the current write sequence number `W` (it may be well past `seq`), fsync the active
//!    segment, and publish `durable = W`.
//!
//! Ten threads waiting for ten different writes typically share one or two fsyncs: every caller
//! that queued behind a sync finds its write covered by it.
//! [`DurableStorage::fsync_count`](super::DurableStorage::fsync_count) counts them.
//!
//! If an fsync or a write ever fails, the storage refuses all further writes and syncs (the page
//! cache can no longer be trusted to hold what was written, "fsyncgate"): the node must stop and be
//! restarted, which replays what really is on disk.
//!
//! With [`DurableOptions::fsync`](super::DurableOptions::fsync) off, nothing is ever fsynced and
//! `sync_through` returns at once: a process crash loses nothing, a machine crash can lose
//! acknowledged writes (the server warns loudly when started this way).
//!
//! # Reclaiming: which segments can go
//!
//! Every segment starts with a *checkpoint* record ([`wal`](super::super::wal)): the hard state,
//! the snapshot, the compaction point and the last index at the moment it was started. A replay
//! that begins at such a segment S knows everything except the entries that were already in the
//! log when S was started; S's checkpoint names them (`compacted + 1 ..= last_index`), and
//! truncations and installs recorded since can only have removed some of them. So the segments
//! before S can be deleted as soon as every one of those entries that is still in the log has been
//! compacted away. `Storage::compact` and `Storage::install_snapshot` mark the segments before the
//! newest segment for which this holds (never the active one; in particular, every segment whose
//! appended entries are all `<= index`). [`Syncer::reclaim`] first makes the records that justify
//! the deletion durable (a group-commit fsync), then deletes the segments oldest first, with an
//! fsync of the directory after each one, so that whatever a crash leaves is still a contiguous
//! run of segments. (A deletion that fails is logged and retried at the next call; it loses
//! nothing. Segments marked but not yet deleted when the node stops are found again by the next
//! start's replay, and marked at its first compaction.) Disk use is thus bounded by the entries
//! not yet compacted plus about one segment, and memory by the entries not yet compacted: the
//! entries compaction drops from memory are handed here too, and freed by `reclaim`, outside the
//! Raft lock.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use parking_lot::Mutex;

use super::io_error;
use crate::error::{Error, Result};
use crate::raft::Entry;
use crate::storage::snapshot::sync_dir;
use crate::storage::{SyncObserver, Syncer};

/// The storage's syncer and reclaimer, shared between the storage (under the Raft lock) and the
/// threads that sync and reclaim (without it): sequence numbers, the active segment's file, the
/// failure flag, and what compaction left to reclaim. See the module docs.
pub(super) struct SyncState {
    fsync: bool,
    /// Sequence number of the latest record written to the OS.
    write_seq: AtomicU64,
    /// Every record up to this sequence number is on disk. Only grows.
    durable_seq: AtomicU64,
    fsync_count: AtomicU64,
    /// Held while an fsync runs: one at a time, and the group-commit queue.
    sync_lock: Mutex<()>,
    /// The active segment. Swapped on roll, after the old one has been fsynced.
    active: Mutex<Arc<File>>,
    /// Set when a write or fsync failed; every later write and sync returns this error.
    failed: Mutex<Option<String>>,
    /// The data directory (for the directory fsync after deleting segments).
    dir: PathBuf,
    /// Segments no replay needs any more, oldest first, to delete once every record through
    /// `.1` (the one that made them unneeded) is durable. See [`Syncer::reclaim`].
    reclaimable: Mutex<(Vec<PathBuf>, u64)>,
    /// Held for a whole [`Syncer::reclaim`]: two at once (the snapshot and apply threads) could
    /// otherwise delete a newer segment while an older one failed, leaving a gap.
    reclaim_lock: Mutex<()>,
    /// Entries compaction removed from memory, to free outside the Raft lock (after a snapshot
    /// of a large state, a million allocations). See [`Syncer::reclaim`].
    garbage: Mutex<Vec<Vec<Entry>>>,
    /// Told of each group-commit fsync (metrics), once the shell set one.
    observer: OnceLock<Arc<dyn SyncObserver>>,
}

impl SyncState {
    /// The state of a storage in `dir` whose latest record is `write_seq`, appending to `active`,
    /// after `fsyncs` fsyncs (by recovery). Nothing is durable yet: see [`SyncState::all_durable`].
    pub(super) fn new(
        fsync: bool,
        dir: &Path,
        active: Arc<File>,
        write_seq: u64,
        fsyncs: u64,
    ) -> SyncState {
        SyncState {
            fsync,
            write_seq: AtomicU64::new(write_seq),
            durable_seq: AtomicU64::new(0),
            fsync_count: AtomicU64::new(fsyncs),
            sync_lock: Mutex::new(()),
            active: Mutex::new(active),
            failed: Mutex::new(None),
            dir: dir.to_path_buf(),
            reclaimable: Mutex::new((Vec::new(), 0)),
            reclaim_lock: Mutex::new(()),
            garbage: Mutex::new(Vec::new()),
            observer: OnceLock::new(),
        }
    }

    /// The error of an earlier failure, if there was one: the WAL takes no more writes or syncs.
    pub(super) fn check_failed(&self) -> Result<()> {
        match &*self.failed.lock() {
            Some(why) => Err(Error::Storage(format!(
                "the WAL is unusable after an earlier failure ({why}); restart the node"
            ))),
            None => Ok(()),
        }
    }

    /// Records a failed write or fsync: every later one is refused (see the module docs).
    pub(super) fn fail(&self, error: &Error) {
        let mut failed = self.failed.lock();
        if failed.is_none() {
            log::error!("WAL failure, refusing further writes: {error}");
            *failed = Some(error.message().to_string());
        }
    }

    /// Fsyncs one segment file, counting it.
    pub(super) fn counted_sync(&self, file: &File, path: &Path) -> Result<()> {
        file.sync_data().map_err(|e| io_error("fsync", path, e))?;
        self.fsync_count.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Fsyncs the data directory (so names created or removed in it are durable), counting it.
    pub(super) fn counted_sync_dir(&self) -> Result<()> {
        sync_dir(&self.dir)?;
        self.fsync_count.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Publishes the latest record written.
    pub(super) fn wrote(&self, seq: u64) {
        self.write_seq.store(seq, Ordering::Release);
    }

    /// Publishes a roll to `file`, whose first record `first_seq` is already on disk (with fsync
    /// on): the syncer's handle is swapped before any sequence number that lives in the new file.
    pub(super) fn rolled(&self, file: Arc<File>, first_seq: u64) {
        *self.active.lock() = file;
        self.wrote(first_seq);
        if self.fsync {
            self.durable_seq.fetch_max(first_seq, Ordering::AcqRel);
        }
    }

    /// Publishes that every record through `seq` is on disk (recovery synced them all).
    pub(super) fn all_durable(&self, seq: u64) {
        self.durable_seq.store(seq, Ordering::Release);
    }

    /// Every record up to this sequence number is on disk; with fsync off, every one up to
    /// `write_seq`, the latest written.
    pub(super) fn durable_seq(&self, write_seq: u64) -> u64 {
        if self.fsync { self.durable_seq.load(Ordering::Acquire) } else { write_seq }
    }

    /// Hands `segments` (oldest first) to [`Syncer::reclaim`], to delete once every record
    /// through `after_seq` is durable. No I/O: this runs under the Raft lock.
    pub(super) fn mark_reclaimable(&self, segments: impl Iterator<Item = PathBuf>, after_seq: u64) {
        let mut r = self.reclaimable.lock();
        r.0.extend(segments);
        r.1 = after_seq;
    }

    /// Hands entries compaction removed from memory to [`Syncer::reclaim`], to free.
    pub(super) fn add_garbage(&self, entries: Vec<Entry>) {
        self.garbage.lock().push(entries);
    }

    /// Deletes `paths` oldest first, each deletion durable before the next; stops at the first
    /// that fails (logged). Returns how many went.
    fn delete_segments(&self, paths: &[PathBuf]) -> usize {
        let mut deleted = 0;
        for path in paths {
            let gone = match fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_error("cannot delete WAL segment", path, e)),
            };
            // Each deletion durable before the next: after a crash the segments left are still a
            // contiguous run, so a replay finds no gap.
            let durable =
                gone.and_then(|()| if self.fsync { self.counted_sync_dir() } else { Ok(()) });
            if let Err(e) = durable {
                log::warn!("{e}; will try again at the next reclaim");
                break;
            }
            log::debug!("WAL: deleted segment {}, covered by compaction", path.display());
            deleted += 1;
        }
        deleted
    }
}

impl Syncer for SyncState {
    fn sync_through(&self, seq: u64) -> Result<()> {
        if !self.fsync {
            return Ok(());
        }
        if self.durable_seq.load(Ordering::Acquire) >= seq {
            return Ok(());
        }
        let _one_at_a_time = self.sync_lock.lock();
        // Whoever held the lock before us may have covered `seq` already: that is the group.
        if self.durable_seq.load(Ordering::Acquire) >= seq {
            return Ok(());
        }
        self.check_failed()?;
        // Everything written up to `target` is in a segment that is either the active one now or
        // an older one, and older ones were fsynced before the active one was swapped in.
        let target = self.write_seq.load(Ordering::Acquire);
        if seq > target {
            return Err(Error::Internal(format!(
                "sync_through({seq}) asked for more than the latest write ({target})"
            )));
        }
        let file = Arc::clone(&self.active.lock());
        let started = Instant::now();
        if let Some(observer) = self.observer.get() {
            observer.before_fsync();
        }
        if let Err(e) = file.sync_data() {
            let error = Error::Storage(format!("fsync of the active WAL segment failed: {e}"));
            self.fail(&error);
            return Err(error);
        }
        let took = started.elapsed();
        self.fsync_count.fetch_add(1, Ordering::Relaxed);
        let before = self.durable_seq.fetch_max(target, Ordering::AcqRel);
        if let Some(observer) = self.observer.get() {
            observer.fsynced(took, target.saturating_sub(before));
        }
        Ok(())
    }

    fn fsync_count(&self) -> u64 {
        self.fsync_count.load(Ordering::Relaxed)
    }

    fn set_observer(&self, observer: Arc<dyn SyncObserver>) {
        let _ = self.observer.set(observer);
    }

    fn reclaim(&self) -> Result<()> {
        // Freed here, with the lock released first (compaction takes it under the Raft lock).
        let garbage = std::mem::take(&mut *self.garbage.lock());
        drop(garbage);
        let _one_at_a_time = self.reclaim_lock.lock();
        // Take the list and let go of its lock before any I/O: compaction (under the Raft lock)
        // adds to it.
        let (paths, after_seq) = {
            let mut r = self.reclaimable.lock();
            (std::mem::take(&mut r.0), r.1)
        };
        if paths.is_empty() {
            return Ok(());
        }
        // The compaction or snapshot record must be on disk before the segments it replaces go:
        // a replay then starts at a segment that the durable records make sufficient.
        let deleted = self.sync_through(after_seq).map(|()| self.delete_segments(&paths));
        let done = *deleted.as_ref().unwrap_or(&0);
        if done < paths.len() {
            // Put back what is left, ahead of anything compaction added meanwhile.
            let mut r = self.reclaimable.lock();
            let mut left = paths[done..].to_vec();
            left.append(&mut r.0);
            r.0 = left;
        }
        deleted.map(|_| ())
    }
}
