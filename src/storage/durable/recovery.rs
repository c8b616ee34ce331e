//! Recovery: [`DurableStorage::open`] locks the data dir, walks its log with the one segment walk
//! ([`replay`](super::replay), where the rules of recovery are), repairs a torn tail, rebuilds the
//! storage and its in-memory log, makes everything durable, and reconciles the snapshot files
//! with the log. [`RecoveryReport`] says what it found.
//!
//! # Torn tail versus corruption
//!
//! * **A torn tail** (the last record of the last segment incomplete, nothing valid after it) is
//!   what a crash in the middle of a `write` leaves behind. That record was never fsynced
//!   completely, so it was never acknowledged to anyone: it is cut off (the file is truncated and
//!   fsynced), a warning names the file and byte offset, the [`RecoveryReport`] says so, and the
//!   node starts.
//! * **Corruption**, any other damage the walk finds (a bad record with valid records after it,
//!   a bad record in a segment that is not the last, a wrong sequence number, a missing segment,
//!   ...), means the disk lost data that may have been acknowledged. `open` fails with an
//!   [`Error::Storage`] naming the file and byte offset; the way out is to wipe the node's data
//!   dir and restart it, and it will catch up from the leader like a new node (the rest of the
//!   cluster must still have a quorum).
//!
//! # One process per data dir
//!
//! `open` takes an exclusive lock on `<dir>/LOCK` ([`File::try_lock`]) and holds it until the
//! storage is dropped, so two servers pointed at the same directory cannot interleave their
//! writes. [`dump`](crate::storage::dump) reads without the lock and without changing anything.
//!
//! # Snapshot files
//!
//! After the replay, the snapshot files are reconciled with the log:
//!
//! * the newest snapshot file is checked in full (header and CRC); a damaged one fails `open`;
//! * if the log records a snapshot and that file is missing (no file, or only older ones), `open`
//!   fails: the state machine could not be restored. The way out, as for any damage, is to wipe
//!   the data dir and let the node catch up from the leader;
//! * if the newest file is *newer* than the log's record (the node crashed between writing the
//!   file and recording it, e.g. right after receiving it from the leader), `open` installs it as
//!   [`Storage::install_snapshot`] would, keeping the entries after it if the log has its entry
//!   and clearing the log otherwise. [`RecoveryReport::installed_snapshot_file`] says so.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::replay::{self, Damage, Visitor, Walked, remedy};
use super::sync::SyncState;
use super::{
    Active, DurableOptions, DurableStorage, SNAPSHOT_DIR, SegmentInfo, create_segment, io_error,
};
use crate::error::{Error, Result};
use crate::raft::{EntryLog, HardState, Index, SnapshotMeta, Storage};
use crate::storage::snapshot::{self, SnapshotStore};
use crate::storage::wal::{self, RecordRef, SEGMENT_HEADER_LEN, SEGMENT_MAGIC};

/// A torn tail cut off during recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The segment (always the last one).
    pub segment: PathBuf,
    /// Byte offset where the incomplete record started; the file now ends there.
    pub offset: u64,
    /// How many bytes were cut off.
    pub discarded_bytes: u64,
    /// What was wrong with them.
    pub reason: String,
}

/// What [`DurableStorage::open`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// True if the directory held no log (a new node).
    pub created: bool,
    /// Segments in the directory after recovery.
    pub segments: usize,
    /// Valid records replayed.
    pub records: u64,
    /// The recovered hard state.
    pub hard_state: HardState,
    /// First index of the recovered log.
    pub first_index: Index,
    /// Last index of the recovered log (0 if empty).
    pub last_index: Index,
    /// A torn final record that was cut off, if any.
    pub torn_tail: Option<TornTail>,
    /// The snapshot after recovery, if any.
    pub snapshot: Option<SnapshotMeta>,
    /// A snapshot file newer than the snapshot the log recorded, installed at open.
    pub installed_snapshot_file: Option<SnapshotMeta>,
}

impl std::fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.created {
            return write!(f, "new data dir: empty log");
        }
        write!(
            f,
            "replayed {} records from {} segments: term {}, voted for {}, log {}..={}",
            self.records,
            self.segments,
            self.hard_state.current_term,
            self.hard_state.voted_for.as_deref().unwrap_or("nobody"),
            self.first_index,
            self.last_index
        )?;
        if let Some(s) = self.snapshot {
            write!(f, ", snapshot through index {} (term {})", s.index, s.term)?;
        }
        if let Some(s) = self.installed_snapshot_file {
            write!(
                f,
                "; installed snapshot file {}, newer than the log's record",
                snapshot::snapshot_file_name(s)
            )?;
        }
        if let Some(t) = &self.torn_tail {
            write!(
                f,
                "; cut off a torn record of {} bytes at {}:{} ({})",
                t.discarded_bytes,
                t.segment.display(),
                t.offset,
                t.reason
            )?;
        }
        Ok(())
    }
}

/// What recovery does about what the walk finds: cuts a torn tail off, refuses any damage.
struct Repair<'a> {
    dir: &'a Path,
    fsync: bool,
    /// Fsyncs done by the repair.
    fsyncs: u64,
    torn_tail: Option<TornTail>,
}

impl Visitor for Repair<'_> {
    fn torn_tail(&mut self, tail: TornTail) -> Result<()> {
        cut_torn_tail(&tail, self.fsync)?;
        self.fsyncs += u64::from(self.fsync);
        self.torn_tail = Some(tail);
        Ok(())
    }

    fn damage(&mut self, damage: Damage) -> Result<()> {
        Err(damage.error(self.dir))
    }
}

/// Cuts a torn tail off its segment, with a warning: the file ends where the torn record started
/// (a torn header is rewritten whole), fsynced if `fsync`.
fn cut_torn_tail(tail: &TornTail, fsync: bool) -> Result<()> {
    let path = &tail.segment;
    log::warn!(
        "WAL segment {}: torn record at byte offset {} ({}); cutting off the last {} bytes, left \
         by a crash in the middle of a write",
        path.display(),
        tail.offset,
        tail.reason,
        tail.discarded_bytes
    );
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| io_error("cannot open WAL segment", path, e))?;
    let repair = || -> std::io::Result<()> {
        if tail.offset < SEGMENT_HEADER_LEN as u64 {
            file.set_len(0)?;
            (&file).write_all(&SEGMENT_MAGIC)?;
        } else {
            file.set_len(tail.offset)?;
        }
        if fsync {
            file.sync_all()?;
        }
        Ok(())
    };
    repair().map_err(|e| io_error("cannot cut the torn tail of", path, e))
}

/// Takes the exclusive lock on `<dir>/LOCK`, held as long as the returned file is open.
fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| io_error("cannot open lock file", &path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(Error::Storage(format!(
            "data dir {} is in use by another process (lock file {})",
            dir.display(),
            path.display()
        ))),
        Err(TryLockError::Error(e)) => Err(io_error("cannot lock", &path, e)),
    }
}

/// Opens the last segment to append to, or creates the first one of a new log.
fn open_active(dir: &Path, last: Option<SegmentInfo>) -> Result<Active> {
    match last {
        Some(info) => {
            let file = OpenOptions::new()
                .append(true)
                .open(&info.path)
                .map_err(|e| io_error("cannot open WAL segment", &info.path, e))?;
            Ok(Active { file: Arc::new(file), info })
        }
        None => {
            let path = dir.join(wal::segment_name(1));
            let file = create_segment(&path)?;
            let mut info = SegmentInfo::new(path, 1);
            info.bytes = SEGMENT_HEADER_LEN as u64;
            Ok(Active { file: Arc::new(file), info })
        }
    }
}

impl DurableStorage {
    /// Opens (creating if needed) the data directory `dir`, locks it, and replays its log. See the
    /// module docs for what recovery accepts and what it refuses.
    pub fn open(dir: &Path, options: DurableOptions) -> Result<(DurableStorage, RecoveryReport)> {
        if options.segment_size == 0 {
            return Err(Error::Config("segment_size must be at least 1 byte".to_string()));
        }
        fs::create_dir_all(dir).map_err(|e| io_error("cannot create data dir", dir, e))?;
        let lock = lock_dir(dir)?;
        let mut repair = Repair { dir, fsync: options.fsync, fsyncs: 0, torn_tail: None };
        let walked = replay::walk(dir, &mut repair)?;
        let snapshots = SnapshotStore::open_with(&dir.join(SNAPSHOT_DIR), options.fsync)?;
        let mut report = RecoveryReport {
            created: walked.segments.is_empty(),
            records: walked.records,
            torn_tail: repair.torn_tail,
            ..RecoveryReport::default()
        };
        let mut storage =
            DurableStorage::rebuild(dir, options, lock, walked, snapshots, repair.fsyncs)?;
        if storage.active.info.records == 0 {
            // A new log, or a segment cut back to its header: start it with its checkpoint.
            let checkpoint = storage.checkpoint();
            storage.write(RecordRef::Checkpoint(&checkpoint))?;
        }
        storage.sync_recovered()?;
        report.installed_snapshot_file = storage.reconcile_snapshot_files()?;
        report.segments = storage.sealed.len() + 1;
        report.hard_state = storage.hard_state.clone();
        report.first_index = storage.first_index();
        report.last_index = storage.last_index();
        report.snapshot = storage.snapshot;
        Ok((storage, report))
    }

    /// The storage the walk's segments and replayed state make, appending to the last segment (or
    /// to a new first one), after `fsyncs` fsyncs by the repair.
    fn rebuild(
        dir: &Path,
        options: DurableOptions,
        lock: File,
        walked: Walked,
        snapshots: SnapshotStore,
        fsyncs: u64,
    ) -> Result<DurableStorage> {
        let Walked { replay, segments: mut sealed, next_seq, .. } = walked;
        let active = open_active(dir, sealed.pop())?;
        let write_seq = next_seq.saturating_sub(1);
        let sync = SyncState::new(options.fsync, dir, Arc::clone(&active.file), write_seq, fsyncs);
        // Replaying appends that a compaction later dropped may have left spare capacity.
        let mut entries = replay.entries;
        entries.shrink_to_fit();
        Ok(DurableStorage {
            dir: dir.to_path_buf(),
            options,
            _lock: lock,
            hard_state: replay.hard_state,
            log: EntryLog::new(entries, replay.offset, replay.offset_term),
            snapshot: replay.snapshot,
            membership: replay.membership,
            snapshots,
            sealed,
            active,
            write_seq,
            buf: Vec::new(),
            sync: Arc::new(sync),
        })
    }

    /// Makes everything the previous process wrote durable, so the durable sequence number can
    /// start at the last record. (Older segments were synced when they were closed, unless that
    /// process ran with fsync off; syncing a file that has no dirty pages costs next to nothing,
    /// so sync them all rather than trust that.)
    fn sync_recovered(&self) -> Result<()> {
        if self.options.fsync {
            for info in &self.sealed {
                let file = File::open(&info.path)
                    .map_err(|e| io_error("cannot open WAL segment", &info.path, e))?;
                self.sync.counted_sync(&file, &info.path)?;
            }
            self.sync.counted_sync(&self.active.file, &self.active.info.path)?;
            self.sync.counted_sync_dir()?;
        }
        self.sync.all_durable(self.write_seq);
        Ok(())
    }

    /// Compares the snapshot the log records with the snapshot files (see the module docs);
    /// returns the meta of a newer file it installed.
    fn reconcile_snapshot_files(&mut self) -> Result<Option<SnapshotMeta>> {
        let file = self.snapshots.latest()?;
        let newer = match (self.snapshot, file) {
            (_, None) | (None, Some(_)) => file,
            (Some(recorded), Some(f)) if f == recorded => None,
            (Some(recorded), Some(f)) if f.index > recorded.index => file,
            (Some(_), Some(_)) => None,
        };
        if let Some(recorded) = self.snapshot.filter(|&r| newer.is_none() && file != Some(r)) {
            let found = match file {
                None => "there is no snapshot file".to_string(),
                Some(f) => {
                    format!("the newest snapshot file is {}", self.snapshots.path(f).display())
                }
            };
            return Err(Error::Storage(format!(
                "the WAL records a snapshot through index {} (term {}), but its file {} is \
                 missing ({found}), so the state machine cannot be restored. To recover, {}",
                recorded.index,
                recorded.term,
                self.snapshots.path(recorded).display(),
                remedy(&self.dir)
            )));
        }
        let Some(newer) = newer else { return Ok(None) };
        // Its entries go: the configuration in force at its index travels in the snapshot's
        // data, and the server hands it to the core when it loads the state machine
        // (`RaftNode::restore_membership`).
        log::warn!(
            "snapshot file {} is newer than the snapshot the WAL records ({:?}): the node stopped \
             between writing it and recording it; installing it now",
            self.snapshots.path(newer).display(),
            self.snapshot
        );
        self.install_snapshot(newer)?;
        Ok(Some(newer))
    }
}
