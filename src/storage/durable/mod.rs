//! [`DurableStorage`]: the Raft log and hard state in a segmented write-ahead log on disk, and its
//! [`Storage`] implementation (writing records, rolling segments, marking the ones compaction made
//! unneeded). The rest of the job is in the submodules:
//!
//! * `sync`: the storage's [`Syncer`] (group commit, and reclaiming what compaction left);
//! * `recovery`: [`DurableStorage::open`], its steps and its [`RecoveryReport`];
//! * `replay`: the one walk over the segments that recovery and [`dump`](super::dump) share,
//!   where the rules of recovery live.
//!
//! # The idea
//!
//! Everything the node must remember across a crash (its term, its vote, its log) is written as a
//! sequence of *records* appended to files: "the hard state is now (term 5, voted for node2)",
//! "entries 17..=19 follow", "drop every entry from index 18 on". Nothing is ever overwritten in
//! place; the current state is whatever you get by replaying the records in order. The format is
//! described in [`super::wal`]. All live entries are also kept in memory, so `term()` and
//! `entries()` never touch the disk: the log files are only *read* when the node starts.
//!
//! # Writing
//!
//! The consensus core calls [`Storage`] methods while it holds the node's lock, so they must be
//! quick. A mutating call encodes one record and hands it to the kernel with a single `write` on
//! the segment file (no userspace buffer): when the call returns, the record is in the OS page
//! cache, which survives a crash of the *process* but not of the *machine*. The call then bumps
//! [`Storage::write_seq`]. Making it survive a power cut is the syncer's job, outside the Raft
//! lock, with group commit (`sync`). If a write fails, the storage refuses every later write.
//!
//! Rolling to a new segment (when the active one reaches [`DurableOptions::segment_size`]) happens
//! under the Raft lock and is the one place a write waits for the disk: the old segment is fsynced
//! completely, the new file is created with its header and first record, fsynced, and the
//! directory is fsynced so the new name itself survives a crash. At the default 64 MiB that is a
//! few fsyncs per 64 MiB of log. The payoff is a simple rule: **every segment but the last is
//! complete on disk**, so damage anywhere but the tail of the last segment cannot be a crash
//! (`recovery`).
//!
//! # Snapshots and compaction
//!
//! The state machine's snapshots are files in `<dir>/snapshots/`, managed by a [`SnapshotStore`]
//! ([`DurableStorage::snapshot_store`]); the log only *records* which snapshot is current and how
//! far it has been compacted:
//!
//! * [`Storage::set_snapshot`] appends a *snapshot* record, once the shell has written the file
//!   (the storage checks that the file exists);
//! * [`Storage::compact`] appends a *compact* record carrying the index and its term (so
//!   `term(first_index - 1)` survives the entry), drops the entries from memory, and marks the
//!   WAL segments nothing needs any more for deletion;
//! * [`Storage::install_snapshot`] appends an *install* record saying whether the entries after
//!   the snapshot were kept, drops what it covers, and marks segments the same way;
//! * [`Syncer::reclaim`] deletes the marked segments. It is separate because it is slow (fsyncs,
//!   unlinking files of many MB) and the two calls above run under the Raft lock; the shell calls
//!   it from the snapshot and apply threads, after recording or installing a snapshot. Which
//!   segments can go, and why that is safe, is explained in `sync`.

mod recovery;
pub(super) mod replay;
mod sync;

pub use recovery::{RecoveryReport, TornTail};

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Syncer;
use super::snapshot::SnapshotStore;
use super::wal::{self, Checkpoint, RecordRef, SEGMENT_HEADER_LEN, SEGMENT_MAGIC};
use crate::error::{Error, Result};
use crate::raft::{Entry, EntryLog, HardState, Index, Membership, SnapshotMeta, Storage, Term};
use sync::SyncState;

/// How a [`DurableStorage`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurableOptions {
    /// A segment is closed and a new one started once the next record would take it past this
    /// many bytes (a single larger record still gets a segment of its own). Default 64 MiB.
    pub segment_size: u64,
    /// Whether to fsync at all. Off: `sync_through` returns at once and a machine crash can lose
    /// acknowledged writes. Default on.
    pub fsync: bool,
}

impl Default for DurableOptions {
    fn default() -> Self {
        DurableOptions { segment_size: 64 << 20, fsync: true }
    }
}

/// The subdirectory of the data dir that holds the snapshot files.
pub const SNAPSHOT_DIR: &str = "snapshots";

/// One segment file, as the storage tracks it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The file.
    pub path: PathBuf,
    /// Sequence number of its first record (the number in its name).
    pub first_seq: u64,
    /// Records it holds.
    pub records: u64,
    /// Its length in bytes.
    pub bytes: u64,
    /// Lowest and highest entry index appended by its records, if it appended any. (A later
    /// truncation may have removed some of them again.)
    pub indexes: Option<(Index, Index)>,
    /// If it starts with a checkpoint, the last index that checkpoint names: the entries up to
    /// there are in older segments. A replay can start at this segment only if it has one.
    pub checkpoint_last: Option<Index>,
    /// The lowest index its truncations and snapshot installs cut the log back to, if any (after
    /// a truncation from `i`, the log ends at `i - 1` at most).
    pub cut_to: Option<Index>,
}

impl SegmentInfo {
    fn new(path: PathBuf, first_seq: u64) -> Self {
        SegmentInfo {
            path,
            first_seq,
            records: 0,
            bytes: 0,
            indexes: None,
            checkpoint_last: None,
            cut_to: None,
        }
    }

    fn note_cut(&mut self, to: Index) {
        self.cut_to = Some(self.cut_to.map_or(to, |c| c.min(to)));
    }

    fn note_append(&mut self, first: Index, count: usize) {
        if count == 0 {
            return;
        }
        let last = first + count as Index - 1;
        self.indexes = Some(match self.indexes {
            None => (first, last),
            Some((lo, hi)) => (lo.min(first), hi.max(last)),
        });
    }
}

/// The segment being appended to.
struct Active {
    /// Shared with the syncer (which only calls `sync_data` on it).
    file: Arc<File>,
    info: SegmentInfo,
}

/// The log and hard state, in a write-ahead log in a data directory. See the module docs.
pub struct DurableStorage {
    dir: PathBuf,
    options: DurableOptions,
    /// Holds the directory lock for as long as the storage lives.
    _lock: File,
    hard_state: HardState,
    /// The live entries in memory, after the compaction point.
    log: EntryLog,
    /// The latest snapshot recorded.
    snapshot: Option<SnapshotMeta>,
    /// The configuration in force at the start of the log (see `Storage::membership_base`).
    membership: Option<(Index, Membership)>,
    /// The snapshot files, in `<dir>/snapshots`.
    snapshots: SnapshotStore,
    /// Full segments, oldest first.
    sealed: Vec<SegmentInfo>,
    active: Active,
    /// What `sync` publishes as the latest write; only this struct writes it.
    write_seq: u64,
    /// Encoding buffer, reused.
    buf: Vec<u8>,
    /// The syncer and reclaimer (see [`sync`]), shared with the threads that call it.
    sync: Arc<SyncState>,
}

fn io_error(action: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Storage(format!("{action} {}: {e}", path.display()))
}

/// Creates a segment file holding just the header.
fn create_segment(path: &Path) -> Result<File> {
    let mut file = OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(path)
        .map_err(|e| io_error("cannot create WAL segment", path, e))?;
    file.write_all(&SEGMENT_MAGIC).map_err(|e| io_error("cannot write WAL segment", path, e))?;
    Ok(file)
}

impl DurableStorage {
    /// The snapshot files of this data dir (`<dir>/snapshots`). Clone it to use it without the
    /// Raft lock: writing or sending a large snapshot must not hold up the consensus core.
    pub fn snapshot_store(&self) -> &SnapshotStore {
        &self.snapshots
    }

    /// The handle that makes this storage's writes durable from another thread, without the
    /// Raft lock. [`crate::storage::open`] hands it out beside the log.
    pub fn syncer(&self) -> Arc<dyn Syncer> {
        Arc::clone(&self.sync) as Arc<dyn Syncer>
    }

    /// The state a new segment starts from.
    fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            hard_state: self.hard_state.clone(),
            snapshot: self.snapshot,
            compacted: self.log.offset(),
            compacted_term: self.log.offset_term(),
            last_index: self.last_index(),
            membership: self.membership.clone(),
        }
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of fsyncs (of segments and of the directory) done so far, for metrics and benchmarks.
    pub fn fsync_count(&self) -> u64 {
        self.sync.fsync_count()
    }

    /// Every record up to this sequence number is on disk (with fsync off: written to the OS).
    pub fn durable_seq(&self) -> u64 {
        self.sync.durable_seq(self.write_seq)
    }

    /// The segment files, oldest first; the last one is being appended to.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        let mut all = self.sealed.clone();
        all.push(self.active.info.clone());
        all
    }

    /// Writes one record, rolling to a new segment first if this one is full. On failure the
    /// storage refuses every later write (see the module docs).
    fn write(&mut self, record: RecordRef<'_>) -> Result<()> {
        self.sync.check_failed()?;
        let result = self.try_write(record);
        if let Err(e) = &result {
            self.sync.fail(e);
        }
        result
    }

    fn try_write(&mut self, record: RecordRef<'_>) -> Result<()> {
        let frame_len = (wal::FRAME_HEADER_LEN + record.payload_len()) as u64;
        // A segment always keeps its checkpoint plus at least one record, however large.
        if self.active.info.bytes + frame_len > self.options.segment_size
            && self.active.info.records > 1
        {
            self.roll()?;
        }
        let seq = self.write_seq + 1;
        wal::encode_frame(&mut self.buf, seq, &record)?;
        if let Err(e) = (&*self.active.file).write_all(&self.buf) {
            // Do not leave half a record in front of the next one.
            let _ = self.active.file.set_len(self.active.info.bytes);
            return Err(io_error("cannot write WAL segment", &self.active.info.path, e));
        }
        let info = &mut self.active.info;
        match record {
            RecordRef::Append { first_index, entries } => {
                info.note_append(first_index, entries.len());
            }
            RecordRef::Truncate(from) => info.note_cut(from.saturating_sub(1)),
            RecordRef::InstallSnapshot { meta, kept: false } => info.note_cut(meta.index),
            RecordRef::Checkpoint(cp) if info.records == 0 => {
                info.checkpoint_last = Some(cp.last_index);
            }
            _ => {}
        }
        info.bytes += self.buf.len() as u64;
        info.records += 1;
        self.write_seq = seq;
        self.sync.wrote(seq);
        Ok(())
    }

    /// Closes the active segment (fsynced completely) and starts a new one, durable with its
    /// directory entry and its hard-state checkpoint before any record goes into it.
    fn roll(&mut self) -> Result<()> {
        let fsync = self.options.fsync;
        if fsync {
            self.sync.counted_sync(&self.active.file, &self.active.info.path)?;
        }
        let first_seq = self.write_seq + 1;
        let path = self.dir.join(wal::segment_name(first_seq));
        let mut file = create_segment(&path)?;
        let mut checkpoint = Vec::new();
        let state = self.checkpoint();
        wal::encode_frame(&mut checkpoint, first_seq, &RecordRef::Checkpoint(&state))?;
        file.write_all(&checkpoint).map_err(|e| io_error("cannot write WAL segment", &path, e))?;
        if fsync {
            self.sync.counted_sync(&file, &path)?;
            self.sync.counted_sync_dir()?;
        }
        let mut info = SegmentInfo::new(path, first_seq);
        info.records = 1;
        info.bytes = (SEGMENT_HEADER_LEN + checkpoint.len()) as u64;
        info.checkpoint_last = Some(state.last_index);
        let old = std::mem::replace(&mut self.active, Active { file: Arc::new(file), info });
        self.sealed.push(old.info);
        self.write_seq = first_seq;
        self.sync.rolled(Arc::clone(&self.active.file), first_seq);
        log::debug!("WAL: started segment {}", self.active.info.path.display());
        Ok(())
    }

    /// The segments before this index in `segments()` are needed by no replay: the newest segment
    /// that starts with a checkpoint whose entries are all compacted away, or truncated away since
    /// (see the `sync` module docs). 0 if there is none.
    fn first_needed_segment(&self) -> usize {
        let count = self.sealed.len();
        let mut cut_to = Index::MAX;
        for k in (1..=count).rev() {
            let info = if k == count { &self.active.info } else { &self.sealed[k] };
            if let Some(c) = info.cut_to {
                cut_to = cut_to.min(c);
            }
            if info.checkpoint_last.is_some_and(|last| last.min(cut_to) <= self.log.offset()) {
                return k;
            }
        }
        0
    }

    /// Marks the segments no replay needs any more (see the module docs) for deletion by
    /// [`Syncer::reclaim`], which makes the records that make them unnecessary durable first.
    fn mark_unneeded_segments(&mut self) {
        let first_needed = self.first_needed_segment();
        if first_needed == 0 {
            return;
        }
        // No I/O here (this runs under the Raft lock): hand them to `Syncer::reclaim`.
        let unneeded = self.sealed.drain(..first_needed).map(|s| s.path);
        self.sync.mark_reclaimable(unneeded, self.write_seq);
    }

    /// Refuses to record a snapshot whose file the shell has not written.
    fn require_file(&self, meta: SnapshotMeta) -> Result<()> {
        match self.snapshots.file_len(meta) {
            Ok(_) => Ok(()),
            Err(Error::NotFound(_)) => Err(Error::Internal(format!(
                "no snapshot file {} for the snapshot through index {} (term {}): write it with \
                 the snapshot store before recording it",
                self.snapshots.path(meta).display(),
                meta.index,
                meta.term
            ))),
            Err(e) => Err(e),
        }
    }
}

impl Storage for DurableStorage {
    fn hard_state(&self) -> HardState {
        self.hard_state.clone()
    }

    fn save_hard_state(&mut self, hard_state: &HardState) -> Result<()> {
        self.write(RecordRef::HardState(hard_state))?;
        self.hard_state = hard_state.clone();
        Ok(())
    }

    fn first_index(&self) -> Index {
        self.log.first_index()
    }

    fn last_index(&self) -> Index {
        self.log.last_index()
    }

    fn term(&self, index: Index) -> Option<Term> {
        self.log.term(index)
    }

    fn entries(&self, lo: Index, hi: Index, max_bytes: usize) -> Result<Vec<Entry>> {
        self.log.entries(lo, hi, max_bytes)
    }

    fn append(&mut self, entries: &[Entry]) -> Result<()> {
        self.log.check_append(entries)?;
        let first_index = self.log.last_index() + 1;
        self.write(RecordRef::Append { first_index, entries })?;
        self.log.extend(entries);
        Ok(())
    }

    fn truncate_suffix(&mut self, from: Index) -> Result<()> {
        self.log.check_truncate(from)?;
        self.write(RecordRef::Truncate(from))?;
        self.log.truncate(from);
        Ok(())
    }

    fn write_seq(&self) -> u64 {
        self.write_seq
    }

    fn snapshot(&self) -> Option<SnapshotMeta> {
        self.snapshot
    }

    /// Also refuses a `meta` whose term is not the term of that entry, and one whose file is not
    /// in [`DurableStorage::snapshot_store`].
    fn set_snapshot(&mut self, meta: SnapshotMeta) -> Result<()> {
        if meta.index > self.last_index() || self.snapshot.is_some_and(|s| s.index > meta.index) {
            return Err(Error::Internal(format!("snapshot at {} is outside the log", meta.index)));
        }
        if self.term(meta.index) != Some(meta.term) {
            return Err(Error::Internal(format!(
                "snapshot through index {} claims term {}, but that entry has term {:?}",
                meta.index,
                meta.term,
                self.term(meta.index)
            )));
        }
        self.require_file(meta)?;
        self.write(RecordRef::Snapshot(meta))?;
        self.snapshot = Some(meta);
        Ok(())
    }

    /// Writes a record, drops the entries, then marks the segments no longer needed for
    /// [`Syncer::reclaim`]. An error after the record is written leaves the storage refusing every
    /// later write: restart the node.
    fn compact(&mut self, index: Index) -> Result<()> {
        let Some(term) = self.log.check_compact(index, self.snapshot)? else { return Ok(()) };
        self.write(RecordRef::Compact { index, term })?;
        let dropped = self.log.remove_through(index, term);
        self.sync.add_garbage(dropped);
        self.mark_unneeded_segments();
        Ok(())
    }

    /// Also refuses a snapshot older than the current one (installing it would move the log
    /// backwards), and one whose file is not in [`DurableStorage::snapshot_store`].
    fn install_snapshot(&mut self, meta: SnapshotMeta) -> Result<()> {
        if meta.index < self.log.offset() || self.snapshot.is_some_and(|s| meta.index < s.index) {
            return Err(Error::Internal(format!(
                "cannot install the snapshot through {}: older than the current one ({:?})",
                meta.index, self.snapshot
            )));
        }
        self.require_file(meta)?;
        let kept = self.term(meta.index) == Some(meta.term);
        self.write(RecordRef::InstallSnapshot { meta, kept })?;
        if !kept {
            self.sync.add_garbage(self.log.remove_all());
        }
        self.sync.add_garbage(self.log.remove_through(meta.index, meta.term));
        self.snapshot = Some(meta);
        self.mark_unneeded_segments();
        Ok(())
    }

    fn membership_base(&self) -> Option<(Index, Membership)> {
        self.membership.clone()
    }

    fn save_membership_base(&mut self, index: Index, membership: &Membership) -> Result<()> {
        let json = crate::storage::wal::membership_json(membership);
        self.write(RecordRef::Membership { index, json: &json })?;
        self.membership = Some((index, membership.clone()));
        Ok(())
    }
}

#[cfg(test)]
mod tests;
