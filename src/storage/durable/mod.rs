//! [`DurableStorage`]: the Raft log and hard state in a segmented write-ahead log on disk.
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
//! # Writing, and group commit
//!
//! The consensus core calls [`Storage`] methods while it holds the node's lock, so they must be
//! quick. A mutating call encodes one record and hands it to the kernel with a single `write` on
//! the segment file (no userspace buffer): when the call returns, the record is in the OS page
//! cache, which survives a crash of the *process* but not of the *machine*. The call then bumps
//! [`Storage::write_seq`].
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
//! that queued behind a sync finds its write covered by it. [`DurableStorage::fsync_count`] counts
//! them.
//!
//! Rolling to a new segment (when the active one reaches [`DurableOptions::segment_size`]) happens
//! under the Raft lock and is the one place a write waits for the disk: the old segment is fsynced
//! completely, the new file is created with its header and first record, fsynced, and the
//! directory is fsynced so the new name itself survives a crash. At the default 64 MiB that is a
//! few fsyncs per 64 MiB of log. The payoff is a simple rule: **every segment but the last is
//! complete on disk**, so damage anywhere but the tail of the last segment cannot be a crash.
//!
//! If an fsync or a write ever fails, the storage refuses all further writes and syncs (the page
//! cache can no longer be trusted to hold what was written, "fsyncgate"): the node must stop and be
//! restarted, which replays what really is on disk.
//!
//! With [`DurableOptions::fsync`] off, nothing is ever fsynced and `sync_through` returns at once:
//! a process crash loses nothing, a machine crash can lose acknowledged writes (the server warns
//! loudly when started this way).
//!
//! # Recovery: torn tail versus corruption
//!
//! [`DurableStorage::open`] reads every segment in order and checks each record's length, CRC and
//! sequence number. Two kinds of damage are told apart:
//!
//! * **A torn tail**: the *last* record of the *last* segment is incomplete or fails its CRC, and
//!   no valid record follows it. This is what a crash in the middle of a `write` leaves behind.
//!   That record was never fsynced completely, so it was never acknowledged to anyone: it is cut
//!   off (the file is truncated and fsynced), a warning names the file and byte offset, the
//!   [`RecoveryReport`] says so, and the node starts.
//! * **Corruption**: a bad record with valid records after it, a bad record in any segment but the
//!   last (those were complete on disk before the next segment was started), a valid record with
//!   the wrong sequence number, or a gap in the segment names (a missing file). The disk lost data
//!   that may have been acknowledged, and replaying around the hole could resurrect or forget
//!   committed entries. `open` fails with an [`Error::Storage`] naming the file and byte offset;
//!   the way out is to wipe the node's data dir and restart it, and it will catch up from the
//!   leader like a new node (the rest of the cluster must still have a quorum).
//!
//! The rule is deliberately conservative: should a power cut ever persist a later page of the last
//! segment but not an earlier one, the node refuses to start rather than guess.
//!
//! # One process per data dir
//!
//! `open` takes an exclusive lock on `<dir>/LOCK` ([`File::try_lock`]) and holds it until the
//! storage is dropped, so two servers pointed at the same directory cannot interleave their
//! writes. [`dump`] reads without the lock and without changing anything.
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
//!   it from the snapshot and apply threads, after recording or installing a snapshot.
//!
//! **Which segments can go.** Every segment starts with a *checkpoint* record ([`wal`]): the hard
//! state, the snapshot, the compaction point and the last index at the moment it was started. A
//! replay that begins at such a segment S knows everything except the entries that were already in
//! the log when S was started; S's checkpoint names them (`compacted + 1 ..= last_index`), and
//! truncations and installs recorded since can only have removed some of them. So the segments
//! before S can be deleted as soon as every one of those entries that is still in the log has been
//! compacted away. [`Storage::compact`] and [`Storage::install_snapshot`] mark the segments before
//! the newest segment for which this holds (never the active one; in particular, every segment
//! whose appended entries are all `<= index`). [`Syncer::reclaim`] first makes the records that
//! justify the deletion durable (a group-commit fsync), then deletes the segments oldest first,
//! with an fsync of the directory after each one, so that whatever a crash leaves is still a
//! contiguous run of segments. (A deletion that fails is logged and retried at the next call; it
//! loses nothing. Segments marked but not yet deleted when the node stops are found again by the
//! next start's replay, and marked at its first compaction.) Disk use is thus bounded by the
//! entries not yet compacted plus about one segment, and memory by the entries not yet compacted.
//!
//! **Recovery** starts at the oldest segment left, which must start at record 1 or with a
//! checkpoint (if not, the segments before it are missing). Records are replayed in order exactly
//! as before; the entries named by the first checkpoint are *unknown* until a compact or install
//! record covers them. If the replay ends with some of them still needed, a segment is missing and
//! `open` fails, naming it. Checkpoints met later in the replay are compared with the replayed
//! state (a mismatch is corruption). Then the snapshot files are reconciled with the log:
//!
//! * the newest snapshot file is checked in full (header and CRC); a damaged one fails `open`;
//! * if the log records a snapshot and that file is missing (no file, or only older ones), `open`
//!   fails: the state machine could not be restored. The way out, as for any damage, is to wipe
//!   the data dir and let the node catch up from the leader;
//! * if the newest file is *newer* than the log's record (the node crashed between writing the
//!   file and recording it, e.g. right after receiving it from the leader), `open` installs it as
//!   [`Storage::install_snapshot`] would, keeping the entries after it if the log has its entry
//!   and clearing the log otherwise. [`RecoveryReport::installed_snapshot_file`] says so.

mod sync;

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Syncer;
use super::snapshot::{self, Check, SnapshotStore};
use super::wal::{
    self, Checkpoint, Record, RecordRef, SEGMENT_HEADER_LEN, SEGMENT_MAGIC, ScanEnd, Scanned,
};
use crate::error::{Error, Result};
use crate::raft::{Entry, HardState, Index, SnapshotMeta, Term};
use crate::raft::{EntryLog, Storage};
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

fn remedy(dir: &Path) -> String {
    format!(
        "wipe the node's data dir ({}) and restart it; it will catch up from the leader (the rest \
         of the cluster must still have a quorum)",
        dir.display()
    )
}

fn corruption(dir: &Path, segment: &Path, offset: usize, what: &str) -> Error {
    Error::Storage(format!(
        "WAL segment {} is corrupt at byte offset {offset}: {what}. This is damage, not a torn \
         write from a crash, and the log cannot be trusted past it. To recover, {}",
        segment.display(),
        remedy(dir)
    ))
}

/// The error for a segment whose first sequence number is not the one the previous segment leads
/// to expect (or for a first segment named 0).
fn segment_gap(
    dir: &Path,
    previous: Option<&SegmentInfo>,
    path: &Path,
    first_seq: u64,
    expected_seq: u64,
) -> Error {
    let what = match previous {
        None if first_seq == 0 => {
            format!("{} starts at record 0, which is not a valid WAL segment name", path.display())
        }
        None => format!(
            "WAL segment {} starts at record {first_seq} where {expected_seq} was expected",
            path.display()
        ),
        Some(prev) if first_seq > expected_seq => format!(
            "WAL segment {} is missing: {} ends at record {} but the next segment is {}",
            wal::segment_name(expected_seq),
            prev.path.display(),
            expected_seq - 1,
            path.display()
        ),
        Some(prev) => format!(
            "WAL segments {} (ending at record {}) and {} overlap",
            prev.path.display(),
            expected_seq - 1,
            path.display()
        ),
    };
    Error::Storage(format!("{what}. To recover, {}", remedy(dir)))
}

/// The error for an oldest segment that a replay cannot start from: it does not begin at record 1
/// and has no checkpoint, or the entries its checkpoint names were never compacted away.
fn missing_before(dir: &Path, first: &Path, first_seq: u64, what: &str) -> Error {
    Error::Storage(format!(
        "WAL segments before {} are missing: it starts at record {first_seq} and {what}. To \
         recover, {}",
        first.display(),
        remedy(dir)
    ))
}

/// Whether a segment's first record is a checkpoint (so a replay can start there).
fn starts_with_checkpoint(buf: &[u8], first_seq: u64) -> bool {
    wal::decode_frame(buf, SEGMENT_HEADER_LEN)
        .is_ok_and(|d| d.seq == first_seq && matches!(d.record, Record::Checkpoint(_)))
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

/// The log state rebuilt by replaying records (shared by `open` and `dump`).
#[derive(Default)]
struct Replay {
    hard_state: HardState,
    snapshot: Option<SnapshotMeta>,
    /// The compaction point: entries `<= offset` are gone on purpose.
    offset: Index,
    /// Term of entry `offset`.
    offset_term: Term,
    /// Entries `offset + 1 ..= base` are *unknown*: the checkpoint the replay started from names
    /// them, but they are in segments that compaction deleted. A later compact or install record
    /// must cover them (`base == offset` when the replay ends), or a segment is missing.
    base: Index,
    /// Entries `base + 1 ..`.
    entries: Vec<Entry>,
    /// Records applied so far.
    records: u64,
}

impl Replay {
    fn last_index(&self) -> Index {
        self.base + self.entries.len() as Index
    }

    /// The term of entry `index`, if known.
    fn term(&self, index: Index) -> Option<Term> {
        if index == self.offset {
            Some(self.offset_term)
        } else if index > self.base && index <= self.last_index() {
            Some(self.entries[(index - self.base - 1) as usize].term)
        } else {
            None
        }
    }

    fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            hard_state: self.hard_state.clone(),
            snapshot: self.snapshot,
            compacted: self.offset,
            compacted_term: self.offset_term,
            last_index: self.last_index(),
        }
    }

    /// Drops the entries `<= index` (which must be `>= offset`) and makes `index` the compaction
    /// point.
    fn compact_through(&mut self, index: Index, term: Term) {
        if index >= self.base {
            let n = ((index - self.base) as usize).min(self.entries.len());
            self.entries.drain(..n);
            self.base = index;
        }
        self.offset = index;
        self.offset_term = term;
    }

    /// Applies one record; `first_in_segment` says it is the segment's first. An error says why
    /// the record cannot follow the ones before it (the scan reports it as corruption).
    fn apply(
        &mut self,
        record: Record,
        first_in_segment: bool,
        segment: &mut SegmentInfo,
    ) -> Result<(), String> {
        let first_record = self.records == 0;
        self.records += 1;
        match record {
            Record::HardState(hs) => self.hard_state = hs,
            Record::Checkpoint(cp) => {
                if cp.compacted > cp.last_index {
                    return Err(format!(
                        "a checkpoint with compaction point {} past its last index {}",
                        cp.compacted, cp.last_index
                    ));
                }
                if first_in_segment {
                    segment.checkpoint_last = Some(cp.last_index);
                }
                if first_record {
                    self.hard_state = cp.hard_state;
                    self.snapshot = cp.snapshot;
                    self.offset = cp.compacted;
                    self.offset_term = cp.compacted_term;
                    self.base = cp.last_index;
                } else if cp != self.checkpoint() {
                    return Err(format!(
                        "checkpoint {cp:?} disagrees with the state replayed so far {:?}",
                        self.checkpoint()
                    ));
                }
            }
            Record::Append { first_index, entries } => {
                let next = self.last_index() + 1;
                if first_index != next {
                    return Err(format!(
                        "an append of index {first_index} where the log ends at {}",
                        next - 1
                    ));
                }
                segment.note_append(first_index, entries.len());
                self.entries.extend(entries);
            }
            Record::Truncate(from) => {
                if from <= self.offset {
                    return Err(format!(
                        "a truncation from index {from}, into the compacted log (up to {})",
                        self.offset
                    ));
                }
                if from > self.base {
                    let keep = (from - 1 - self.base).min(self.entries.len() as Index);
                    self.entries.truncate(keep as usize);
                } else {
                    self.entries.clear();
                    self.base = from - 1;
                }
                segment.note_cut(from - 1);
            }
            Record::Snapshot(meta) => {
                if meta.index > self.last_index() || meta.index < self.offset {
                    return Err(format!(
                        "a snapshot at index {} outside the log {}..={}",
                        meta.index,
                        self.offset,
                        self.last_index()
                    ));
                }
                self.snapshot = Some(meta);
            }
            Record::Compact { index, term } => {
                if index > self.last_index() || index < self.offset {
                    return Err(format!(
                        "a compaction through index {index} outside the log {}..={}",
                        self.offset,
                        self.last_index()
                    ));
                }
                if let Some(known) = self.term(index).filter(|&t| t != term) {
                    return Err(format!(
                        "a compaction through index {index} with term {term}, but that entry has \
                         term {known}"
                    ));
                }
                self.compact_through(index, term);
            }
            Record::InstallSnapshot { meta, kept } => {
                if meta.index < self.offset {
                    return Err(format!(
                        "a snapshot install at index {}, behind the compaction point {}",
                        meta.index, self.offset
                    ));
                }
                if kept {
                    let matches = match self.term(meta.index) {
                        Some(term) => term == meta.term,
                        // An unknown entry: the install kept it, so it matched.
                        None => meta.index > self.offset && meta.index <= self.base,
                    };
                    if !matches {
                        return Err(format!(
                            "a snapshot install at ({}, term {}) that kept the log, which does not \
                             hold that entry",
                            meta.index, meta.term
                        ));
                    }
                    self.compact_through(meta.index, meta.term);
                } else {
                    self.entries.clear();
                    self.base = meta.index;
                    self.offset = meta.index;
                    self.offset_term = meta.term;
                    segment.note_cut(meta.index);
                }
                self.snapshot = Some(meta);
            }
        }
        Ok(())
    }

    /// If entries the log still needs were never replayed, which ones (`first..=last`).
    fn missing(&self) -> Option<(Index, Index)> {
        (self.base > self.offset).then_some((self.offset + 1, self.base))
    }
}

impl DurableStorage {
    /// Opens (creating if needed) the data directory `dir`, locks it, and replays its log. See the
    /// module docs for what recovery accepts and what it refuses.
    pub fn open(dir: &Path, options: DurableOptions) -> Result<(DurableStorage, RecoveryReport)> {
        if options.segment_size == 0 {
            return Err(Error::Internal("segment_size must be at least 1 byte".to_string()));
        }
        fs::create_dir_all(dir).map_err(|e| io_error("cannot create data dir", dir, e))?;
        let lock = lock_dir(dir)?;
        let fsync = options.fsync;
        let mut fsyncs = 0;
        let mut report = RecoveryReport::default();
        let mut replay = Replay::default();
        let mut sealed = Vec::new();
        let listed = wal::list_segments(dir)?;
        let mut expected_seq = listed.first().map_or(1, |(seq, _)| *seq);
        for (i, (first_seq, path)) in listed.iter().enumerate() {
            let is_last = i + 1 == listed.len();
            if *first_seq != expected_seq || *first_seq == 0 {
                return Err(segment_gap(dir, sealed.last(), path, *first_seq, expected_seq.max(1)));
            }
            let buf = fs::read(path).map_err(|e| io_error("cannot read WAL segment", path, e))?;
            if i == 0 && *first_seq > 1 && !starts_with_checkpoint(&buf, *first_seq) {
                return Err(missing_before(
                    dir,
                    path,
                    *first_seq,
                    "does not begin with a checkpoint to replay from",
                ));
            }
            let mut info = SegmentInfo::new(path.clone(), *first_seq);
            let scan = wal::scan_segment(&buf, *first_seq, |s: Scanned| {
                replay.apply(s.record, s.offset == SEGMENT_HEADER_LEN, &mut info)
            });
            match scan.end {
                ScanEnd::Clean => {}
                ScanEnd::Torn { offset, reason } if is_last => {
                    log::warn!(
                        "WAL segment {}: torn record at byte offset {offset} ({reason}); cutting \
                         off the last {} bytes, left by a crash in the middle of a write",
                        path.display(),
                        buf.len() - offset
                    );
                    let file = OpenOptions::new()
                        .write(true)
                        .open(path)
                        .map_err(|e| io_error("cannot open WAL segment", path, e))?;
                    let repair = || -> std::io::Result<()> {
                        if offset < SEGMENT_HEADER_LEN {
                            file.set_len(0)?;
                            (&file).write_all(&SEGMENT_MAGIC)?;
                        } else {
                            file.set_len(offset as u64)?;
                        }
                        if fsync {
                            file.sync_all()?;
                        }
                        Ok(())
                    };
                    repair().map_err(|e| io_error("cannot cut the torn tail of", path, e))?;
                    fsyncs += u64::from(fsync);
                    report.torn_tail = Some(TornTail {
                        segment: path.clone(),
                        offset: offset as u64,
                        discarded_bytes: (buf.len() - offset) as u64,
                        reason,
                    });
                }
                ScanEnd::Torn { offset, reason } => {
                    return Err(corruption(
                        dir,
                        path,
                        offset,
                        &format!(
                            "{reason}, at the end of a segment that is not the last one (a \
                             segment is complete on disk before the next one is started)"
                        ),
                    ));
                }
                ScanEnd::Corrupt { offset, reason } => {
                    return Err(corruption(dir, path, offset, &reason));
                }
            }
            info.records = scan.records;
            info.bytes = scan.valid_len.max(SEGMENT_HEADER_LEN) as u64;
            report.records += scan.records;
            expected_seq = first_seq + scan.records;
            sealed.push(info);
        }
        if let (Some((lo, hi)), Some((first_seq, path))) = (replay.missing(), listed.first()) {
            return Err(missing_before(
                dir,
                path,
                *first_seq,
                &format!(
                    "the log still needs entries {lo}..={hi}, which were written before it and \
                     are in no snapshot"
                ),
            ));
        }

        let snapshots = SnapshotStore::open_with(&dir.join(SNAPSHOT_DIR), fsync)?;
        let active = match sealed.pop() {
            Some(info) => {
                let file = OpenOptions::new()
                    .append(true)
                    .open(&info.path)
                    .map_err(|e| io_error("cannot open WAL segment", &info.path, e))?;
                Active { file: Arc::new(file), info }
            }
            None => {
                report.created = true;
                let path = dir.join(wal::segment_name(1));
                let file = create_segment(&path)?;
                let mut info = SegmentInfo::new(path, 1);
                info.bytes = SEGMENT_HEADER_LEN as u64;
                Active { file: Arc::new(file), info }
            }
        };
        let write_seq = expected_seq - 1;
        let sync = SyncState::new(fsync, dir, Arc::clone(&active.file), write_seq, fsyncs);
        let mut storage = DurableStorage {
            dir: dir.to_path_buf(),
            options,
            _lock: lock,
            hard_state: replay.hard_state,
            // Replaying appends that a compaction later dropped may have left spare capacity.
            log: {
                // Replaying appends that a compaction later dropped may have left spare capacity.
                let mut entries = replay.entries;
                entries.shrink_to_fit();
                EntryLog::new(entries, replay.offset, replay.offset_term)
            },
            snapshot: replay.snapshot,
            snapshots,
            sealed,
            active,
            write_seq,
            buf: Vec::new(),
            sync: Arc::new(sync),
        };
        if storage.active.info.records == 0 {
            // A new log, or a segment cut back to its header: start it with its checkpoint.
            let checkpoint = storage.checkpoint();
            storage.write(RecordRef::Checkpoint(&checkpoint))?;
        }
        // Whatever the previous process left in the page cache is on disk from here on, so the
        // durable sequence number can start at the last record. (Older segments were synced when
        // they were closed, unless that process ran with fsync off; syncing a file that has no
        // dirty pages costs next to nothing, so sync them all rather than trust that.)
        if fsync {
            for info in &storage.sealed {
                let file = File::open(&info.path)
                    .map_err(|e| io_error("cannot open WAL segment", &info.path, e))?;
                storage.sync.counted_sync(&file, &info.path)?;
            }
            storage.sync.counted_sync(&storage.active.file, &storage.active.info.path)?;
            storage.sync.counted_sync_dir()?;
        }
        storage.sync.all_durable(storage.write_seq);
        report.installed_snapshot_file = storage.reconcile_snapshot_files()?;

        report.segments = storage.sealed.len() + 1;
        report.hard_state = storage.hard_state.clone();
        report.first_index = storage.first_index();
        report.last_index = storage.last_index();
        report.snapshot = storage.snapshot;
        Ok((storage, report))
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
        log::warn!(
            "snapshot file {} is newer than the snapshot the WAL records ({:?}): the node stopped \
             between writing it and recording it; installing it now",
            self.snapshots.path(newer).display(),
            self.snapshot
        );
        self.install_snapshot(newer)?;
        Ok(Some(newer))
    }

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
    /// (see the module docs). 0 if there is none.
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
}

/// Up to 40 bytes of a command, printable: ASCII as is, anything else as `\xNN`.
fn preview(command: &[u8]) -> String {
    const MAX: usize = 40;
    let mut out = String::new();
    for &b in command.iter().take(MAX) {
        match b {
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    if command.len() > MAX {
        out.push_str("...");
    }
    out
}

/// Prints the records of the log in `dir` to `out`: for every segment, every record with its
/// byte offset, sequence number and kind (entries with index, term, command length and a printable
/// preview), then the snapshot files (checked in full) and the resulting hard state, snapshot and
/// log range. `json` prints one JSON object per line instead (`"kind"`: `segment`, `checkpoint`,
/// `hard_state`, `entry`, `append` (an empty one), `truncate`, `snapshot`, `compact`,
/// `install_snapshot`, `torn_tail`, `corrupt`, `missing_segment`, `missing_entries`,
/// `snapshot_file`, and a final `summary`).
///
/// Read-only: takes no lock (so it works on a running node's directory, though the tail may be
/// mid-write) and repairs nothing; a torn tail is reported as what `open` would cut off. Damage
/// is printed where it is found and the scan goes on with the next segment; the call then returns
/// an error summarizing it.
pub fn dump(dir: &Path, json: bool, out: &mut dyn Write) -> Result<()> {
    if !dir.is_dir() {
        return Err(Error::Storage(format!("{} is not a directory", dir.display())));
    }
    let segments = wal::list_segments(dir)?;
    let mut replay = Replay::default();
    let mut problems = Vec::new();
    let mut expected_seq = segments.first().map_or(1, |(seq, _)| *seq);
    let mut records = 0;
    for (i, (first_seq, path)) in segments.iter().enumerate() {
        let name = path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let buf = fs::read(path).map_err(|e| io_error("cannot read WAL segment", path, e))?;
        let missing = if *first_seq != expected_seq {
            Some(wal::segment_name(expected_seq))
        } else if i == 0 && *first_seq > 1 && !starts_with_checkpoint(&buf, *first_seq) {
            Some(format!("(the segments before {name}, which has no checkpoint)"))
        } else {
            None
        };
        if let Some(missing) = missing {
            let what = format!("missing segment {missing} (records {expected_seq}..{first_seq})");
            if json {
                let line = serde_json::json!({
                    "kind": "missing_segment", "segment": missing,
                    "first_seq": expected_seq, "next_segment": name,
                });
                writeln!(out, "{line}")?;
            } else {
                writeln!(out, "!! {what}")?;
            }
            problems.push(what);
        }
        if json {
            let line = serde_json::json!({
                "kind": "segment", "segment": name, "first_seq": first_seq, "bytes": buf.len(),
            });
            writeln!(out, "{line}")?;
        } else {
            writeln!(out, "segment {name} ({} bytes, first record {first_seq})", buf.len())?;
        }
        let mut info = SegmentInfo::new(path.clone(), *first_seq);
        let mut output_error = None;
        let scan = wal::scan_segment(&buf, *first_seq, |s: Scanned| {
            if let Err(e) = print_record(out, json, &name, &s) {
                output_error = Some(e);
                return Err("output failed".to_string());
            }
            replay.apply(s.record, s.offset == SEGMENT_HEADER_LEN, &mut info)
        });
        if let Some(e) = output_error {
            return Err(Error::Storage(format!("cannot write the dump: {e}")));
        }
        records += scan.records;
        expected_seq = first_seq + scan.records;
        let is_last = i + 1 == segments.len();
        let (kind, offset, reason) = match scan.end {
            ScanEnd::Clean => continue,
            ScanEnd::Torn { offset, reason } if is_last => ("torn_tail", offset, reason),
            ScanEnd::Torn { offset, reason } => (
                "corrupt",
                offset,
                format!("{reason}, at the end of a segment that is not the last"),
            ),
            ScanEnd::Corrupt { offset, reason } => ("corrupt", offset, reason),
        };
        let skipped = buf.len() - offset;
        if json {
            let line = serde_json::json!({
                "kind": kind, "segment": name, "offset": offset, "bytes": skipped, "reason": reason,
            });
            writeln!(out, "{line}")?;
        } else if kind == "torn_tail" {
            writeln!(
                out,
                "  @{offset:<10} torn tail: {reason} ({skipped} bytes; opening the dir would cut \
                 them off)"
            )?;
        } else {
            writeln!(
                out,
                "!! @{offset:<10} CORRUPT: {reason} (the remaining {skipped} bytes of this segment \
                 are not shown)"
            )?;
        }
        if kind == "corrupt" {
            problems.push(format!("{} at byte offset {offset}: {reason}", path.display()));
        }
    }
    if let Some((lo, hi)) = replay.missing() {
        let what = format!(
            "entries {lo}..={hi} are in no segment and no snapshot (segments before the first \
             one are missing)"
        );
        if json {
            let line = serde_json::json!({ "kind": "missing_entries", "first": lo, "last": hi });
            writeln!(out, "{line}")?;
        } else {
            writeln!(out, "!! {what}")?;
        }
        problems.push(what);
    }
    dump_snapshot_files(dir, json, replay.snapshot, out, &mut problems)?;

    let hs = &replay.hard_state;
    let (first_index, last_index) = (replay.offset + 1, replay.last_index());
    let snapshot = replay.snapshot.map(|s| serde_json::json!({"index": s.index, "term": s.term}));
    if json {
        let line = serde_json::json!({
            "kind": "summary", "term": hs.current_term, "voted_for": hs.voted_for,
            "first_index": first_index, "last_index": last_index, "snapshot": snapshot,
            "records": records, "segments": segments.len(), "problems": problems.len(),
        });
        writeln!(out, "{line}")?;
    } else {
        writeln!(
            out,
            "hard state: term {}, voted for {}",
            hs.current_term,
            hs.voted_for.as_deref().unwrap_or("nobody")
        )?;
        match replay.snapshot {
            Some(s) => writeln!(out, "snapshot: through index {} (term {})", s.index, s.term)?,
            None => writeln!(out, "snapshot: none")?,
        }
        writeln!(
            out,
            "log: {} entries ({first_index}..={last_index}), {records} records in {} segments",
            last_index + 1 - first_index,
            segments.len()
        )?;
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Storage(format!(
            "the data dir {} is damaged: {}. To recover, {}",
            dir.display(),
            problems.join("; "),
            remedy(dir)
        )))
    }
}

/// Lists the snapshot files of `dir` for [`dump`], checking each one; problems are what `open`
/// would refuse (the newest file damaged, the recorded snapshot's file missing).
fn dump_snapshot_files(
    dir: &Path,
    json: bool,
    recorded: Option<SnapshotMeta>,
    out: &mut dyn Write,
    problems: &mut Vec<String>,
) -> Result<()> {
    let files = snapshot::list_snapshot_files(&dir.join(SNAPSHOT_DIR))?;
    for (i, (meta, path)) in files.iter().enumerate() {
        let name = path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let bytes = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let newest = i + 1 == files.len();
        let status = match snapshot::check_file(path, *meta, None)? {
            Check::Valid { .. } => Ok(()),
            Check::Damaged { offset, reason } => Err((offset, reason)),
        };
        if json {
            let (ok, offset, reason) = match &status {
                Ok(()) => (true, None, None),
                Err((offset, reason)) => (false, Some(*offset), Some(reason.clone())),
            };
            let line = serde_json::json!({
                "kind": "snapshot_file", "file": name, "bytes": bytes, "index": meta.index,
                "term": meta.term, "ok": ok, "offset": offset, "reason": reason,
                "recorded": Some(*meta) == recorded,
            });
            writeln!(out, "{line}")?;
        } else {
            let note = match recorded {
                Some(r) if r == *meta => " (the snapshot the log records)",
                Some(r) if newest && meta.index > r.index => {
                    " (newer than the log's record: opening the dir installs it)"
                }
                None if newest => " (the log records none: opening the dir installs it)",
                _ => "",
            };
            match &status {
                Ok(()) => writeln!(out, "snapshot file {name} ({bytes} bytes): ok{note}")?,
                Err((offset, reason)) => writeln!(
                    out,
                    "!! snapshot file {name} ({bytes} bytes) CORRUPT at byte offset {offset}: \
                     {reason}{note}"
                )?,
            }
        }
        if let (true, Err((offset, reason))) = (newest, &status) {
            problems.push(format!("{} at byte offset {offset}: {reason}", path.display()));
        }
    }
    if let Some(r) = recorded {
        let newest = files.last().map(|(m, _)| *m);
        if newest.is_none_or(|n| n.index < r.index || (n.index == r.index && n != r)) {
            let name = snapshot::snapshot_file_name(r);
            if json {
                let line = serde_json::json!({
                    "kind": "missing_snapshot_file", "file": name, "index": r.index, "term": r.term,
                });
                writeln!(out, "{line}")?;
            } else {
                writeln!(out, "!! snapshot file {name}, which the log records, is missing")?;
            }
            problems.push(format!("the recorded snapshot file {name} is missing"));
        }
    }
    Ok(())
}

fn print_record(
    out: &mut dyn Write,
    json: bool,
    segment: &str,
    s: &Scanned,
) -> std::io::Result<()> {
    let (offset, seq) = (s.offset, s.seq);
    match &s.record {
        Record::HardState(hs) => {
            if json {
                let line = serde_json::json!({
                    "kind": "hard_state", "segment": segment, "offset": offset, "seq": seq,
                    "term": hs.current_term, "voted_for": hs.voted_for,
                });
                writeln!(out, "{line}")
            } else {
                writeln!(
                    out,
                    "  @{offset:<10} #{seq:<8} hard_state term={} voted_for={}",
                    hs.current_term,
                    hs.voted_for.as_deref().unwrap_or("-")
                )
            }
        }
        Record::Append { first_index, entries } if entries.is_empty() => {
            if json {
                let line = serde_json::json!({
                    "kind": "append", "segment": segment, "offset": offset, "seq": seq,
                    "first_index": first_index, "count": 0,
                });
                writeln!(out, "{line}")
            } else {
                writeln!(out, "  @{offset:<10} #{seq:<8} append (no entries) at {first_index}")
            }
        }
        Record::Append { entries, .. } => {
            for e in entries {
                if json {
                    let line = serde_json::json!({
                        "kind": "entry", "segment": segment, "offset": offset, "seq": seq,
                        "index": e.index, "term": e.term, "len": e.command.len(),
                        "preview": preview(&e.command),
                    });
                    writeln!(out, "{line}")?;
                } else {
                    writeln!(
                        out,
                        "  @{offset:<10} #{seq:<8} entry index={} term={} len={} {}",
                        e.index,
                        e.term,
                        e.command.len(),
                        if e.is_noop() {
                            "(no-op)".to_string()
                        } else {
                            format!("\"{}\"", preview(&e.command))
                        }
                    )?;
                }
            }
            Ok(())
        }
        Record::Truncate(from) => {
            if json {
                let line = serde_json::json!({
                    "kind": "truncate", "segment": segment, "offset": offset, "seq": seq,
                    "from": from,
                });
                writeln!(out, "{line}")
            } else {
                writeln!(out, "  @{offset:<10} #{seq:<8} truncate from={from}")
            }
        }
        Record::Snapshot(meta) => {
            if json {
                let line = serde_json::json!({
                    "kind": "snapshot", "segment": segment, "offset": offset, "seq": seq,
                    "index": meta.index, "term": meta.term,
                });
                writeln!(out, "{line}")
            } else {
                writeln!(
                    out,
                    "  @{offset:<10} #{seq:<8} snapshot index={} term={}",
                    meta.index, meta.term
                )
            }
        }
        Record::Compact { index, term } => {
            if json {
                let line = serde_json::json!({
                    "kind": "compact", "segment": segment, "offset": offset, "seq": seq,
                    "index": index, "term": term,
                });
                writeln!(out, "{line}")
            } else {
                writeln!(out, "  @{offset:<10} #{seq:<8} compact through={index} term={term}")
            }
        }
        Record::InstallSnapshot { meta, kept } => {
            if json {
                let line = serde_json::json!({
                    "kind": "install_snapshot", "segment": segment, "offset": offset, "seq": seq,
                    "index": meta.index, "term": meta.term, "kept": kept,
                });
                writeln!(out, "{line}")
            } else {
                writeln!(
                    out,
                    "  @{offset:<10} #{seq:<8} install_snapshot index={} term={} {}",
                    meta.index,
                    meta.term,
                    if *kept { "(kept the entries after it)" } else { "(cleared the log)" }
                )
            }
        }
        Record::Checkpoint(cp) => {
            let hs = &cp.hard_state;
            if json {
                let snapshot =
                    cp.snapshot.map(|s| serde_json::json!({"index": s.index, "term": s.term}));
                let line = serde_json::json!({
                    "kind": "checkpoint", "segment": segment, "offset": offset, "seq": seq,
                    "term": hs.current_term, "voted_for": hs.voted_for, "snapshot": snapshot,
                    "compacted": cp.compacted, "compacted_term": cp.compacted_term,
                    "last_index": cp.last_index,
                });
                writeln!(out, "{line}")
            } else {
                writeln!(
                    out,
                    "  @{offset:<10} #{seq:<8} checkpoint term={} voted_for={} snapshot={} \
                     compacted={} (term {}) last_index={}",
                    hs.current_term,
                    hs.voted_for.as_deref().unwrap_or("-"),
                    cp.snapshot.map_or("-".to_string(), |s| format!("{}/{}", s.index, s.term)),
                    cp.compacted,
                    cp.compacted_term,
                    cp.last_index
                )
            }
        }
    }
}

#[cfg(test)]
mod tests;
