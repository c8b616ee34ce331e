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
//! # Later: snapshots and compaction
//!
//! Segments are named after their first record's sequence number, [`DurableStorage::segments`]
//! knows which entry indexes each one appended, and every segment begins with a hard-state
//! checkpoint. Compacting through a snapshot index will mean deleting the oldest segments whose
//! entries are all covered, and starting replay from the snapshot instead of index 1.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::wal::{self, Record, RecordRef, SEGMENT_HEADER_LEN, SEGMENT_MAGIC, ScanEnd, Scanned};
use super::{Storage, Syncer};
use crate::error::{Error, Result};
use crate::raft::{Entry, HardState, Index, SnapshotMeta, Term};

/// How a [`DurableStorage`] writes.
#[derive(Clone, Debug, PartialEq, Eq)]
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
}

impl SegmentInfo {
    fn new(path: PathBuf, first_seq: u64) -> Self {
        SegmentInfo { path, first_seq, records: 0, bytes: 0, indexes: None }
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

/// State shared between the storage (under the Raft lock) and its syncer (other threads).
struct Shared {
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
}

impl Shared {
    fn check_failed(&self) -> Result<()> {
        match &*self.failed.lock() {
            Some(why) => Err(Error::Storage(format!(
                "the WAL is unusable after an earlier failure ({why}); restart the node"
            ))),
            None => Ok(()),
        }
    }

    fn fail(&self, error: &Error) {
        let mut failed = self.failed.lock();
        if failed.is_none() {
            log::error!("WAL failure, refusing further writes: {error}");
            *failed = Some(error.message().to_string());
        }
    }

    fn counted_sync(&self, file: &File, path: &Path) -> Result<()> {
        file.sync_data().map_err(|e| io_error("fsync", path, e))?;
        self.fsync_count.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl Syncer for Shared {
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
        if let Err(e) = file.sync_data() {
            let error = Error::Storage(format!("fsync of the active WAL segment failed: {e}"));
            self.fail(&error);
            return Err(error);
        }
        self.fsync_count.fetch_add(1, Ordering::Relaxed);
        self.durable_seq.fetch_max(target, Ordering::AcqRel);
        Ok(())
    }

    fn fsync_count(&self) -> u64 {
        self.fsync_count.load(Ordering::Relaxed)
    }
}

/// The log and hard state, in a write-ahead log in a data directory. See the module docs.
pub struct DurableStorage {
    dir: PathBuf,
    options: DurableOptions,
    /// Holds the directory lock for as long as the storage lives.
    _lock: File,
    hard_state: HardState,
    /// Entries `offset + 1 ..= offset + entries.len()`.
    entries: Vec<Entry>,
    /// Index of the last entry before `entries` (0 until compaction exists).
    offset: Index,
    /// Term of the entry at `offset`.
    offset_term: Term,
    /// Full segments, oldest first.
    sealed: Vec<SegmentInfo>,
    active: Active,
    /// Same as `shared.write_seq`, which only this struct writes.
    write_seq: u64,
    /// Encoding buffer, reused.
    buf: Vec<u8>,
    shared: Arc<Shared>,
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

/// The error for a segment whose first sequence number is not the one the previous segment (or
/// the start of the log) leads to expect.
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
            "WAL segment {} is missing: the oldest segment is {}, which starts at record {first_seq}",
            wal::segment_name(1),
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

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_error("fsync of directory", dir, e))
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
    entries: Vec<Entry>,
}

impl Replay {
    fn apply(&mut self, record: Record, segment: &mut SegmentInfo) -> Result<(), String> {
        match record {
            Record::HardState(hs) => self.hard_state = hs,
            Record::Append { first_index, entries } => {
                let next = self.entries.len() as Index + 1;
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
                if from == 0 {
                    return Err("a truncation from index 0".to_string());
                }
                let keep = (from - 1).min(self.entries.len() as Index) as usize;
                self.entries.truncate(keep);
            }
        }
        Ok(())
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
        let mut expected_seq = 1;
        for (i, (first_seq, path)) in listed.iter().enumerate() {
            let is_last = i + 1 == listed.len();
            if *first_seq != expected_seq {
                return Err(segment_gap(dir, sealed.last(), path, *first_seq, expected_seq));
            }
            let buf = fs::read(path).map_err(|e| io_error("cannot read WAL segment", path, e))?;
            let mut info = SegmentInfo::new(path.clone(), *first_seq);
            let scan =
                wal::scan_segment(&buf, *first_seq, |s: Scanned| replay.apply(s.record, &mut info));
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
        let shared = Arc::new(Shared {
            fsync,
            write_seq: AtomicU64::new(write_seq),
            durable_seq: AtomicU64::new(0),
            fsync_count: AtomicU64::new(fsyncs),
            sync_lock: Mutex::new(()),
            active: Mutex::new(Arc::clone(&active.file)),
            failed: Mutex::new(None),
        });
        let mut storage = DurableStorage {
            dir: dir.to_path_buf(),
            options,
            _lock: lock,
            hard_state: replay.hard_state,
            entries: replay.entries,
            offset: 0,
            offset_term: 0,
            sealed,
            active,
            write_seq,
            buf: Vec::new(),
            shared,
        };
        if storage.active.info.records == 0 {
            // A new log, or a segment cut back to its header: start it with its checkpoint.
            let hard_state = storage.hard_state.clone();
            storage.write(RecordRef::HardState(&hard_state))?;
        }
        // Whatever the previous process left in the page cache is on disk from here on, so the
        // durable sequence number can start at the last record. (Older segments were synced when
        // they were closed, unless that process ran with fsync off; syncing a file that has no
        // dirty pages costs next to nothing, so sync them all rather than trust that.)
        if fsync {
            for info in &storage.sealed {
                let file = File::open(&info.path)
                    .map_err(|e| io_error("cannot open WAL segment", &info.path, e))?;
                storage.shared.counted_sync(&file, &info.path)?;
            }
            storage.shared.counted_sync(&storage.active.file, &storage.active.info.path)?;
            sync_dir(dir)?;
            storage.shared.fsync_count.fetch_add(1, Ordering::Relaxed);
        }
        storage.shared.durable_seq.store(storage.write_seq, Ordering::Release);

        report.segments = storage.sealed.len() + 1;
        report.hard_state = storage.hard_state.clone();
        report.first_index = storage.first_index();
        report.last_index = storage.last_index();
        Ok((storage, report))
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of fsyncs (of segments and of the directory) done so far, for metrics and benchmarks.
    pub fn fsync_count(&self) -> u64 {
        self.shared.fsync_count.load(Ordering::Relaxed)
    }

    /// Every record up to this sequence number is on disk (with fsync off: written to the OS).
    pub fn durable_seq(&self) -> u64 {
        if self.shared.fsync {
            self.shared.durable_seq.load(Ordering::Acquire)
        } else {
            self.write_seq
        }
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
        self.shared.check_failed()?;
        let result = self.try_write(record);
        if let Err(e) = &result {
            self.shared.fail(e);
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
        self.active.info.bytes += self.buf.len() as u64;
        self.active.info.records += 1;
        if let RecordRef::Append { first_index, entries } = record {
            self.active.info.note_append(first_index, entries.len());
        }
        self.write_seq = seq;
        self.shared.write_seq.store(seq, Ordering::Release);
        Ok(())
    }

    /// Closes the active segment (fsynced completely) and starts a new one, durable with its
    /// directory entry and its hard-state checkpoint before any record goes into it.
    fn roll(&mut self) -> Result<()> {
        let fsync = self.options.fsync;
        if fsync {
            self.shared.counted_sync(&self.active.file, &self.active.info.path)?;
        }
        let first_seq = self.write_seq + 1;
        let path = self.dir.join(wal::segment_name(first_seq));
        let mut file = create_segment(&path)?;
        let mut checkpoint = Vec::new();
        wal::encode_frame(&mut checkpoint, first_seq, &RecordRef::HardState(&self.hard_state))?;
        file.write_all(&checkpoint).map_err(|e| io_error("cannot write WAL segment", &path, e))?;
        if fsync {
            self.shared.counted_sync(&file, &path)?;
            sync_dir(&self.dir)?;
            self.shared.fsync_count.fetch_add(1, Ordering::Relaxed);
        }
        let mut info = SegmentInfo::new(path, first_seq);
        info.records = 1;
        info.bytes = (SEGMENT_HEADER_LEN + checkpoint.len()) as u64;
        let old = std::mem::replace(&mut self.active, Active { file: Arc::new(file), info });
        self.sealed.push(old.info);
        // Swap the syncer's handle before publishing any sequence number that lives in the new
        // file (see `sync_through`).
        *self.shared.active.lock() = Arc::clone(&self.active.file);
        self.write_seq = first_seq;
        self.shared.write_seq.store(first_seq, Ordering::Release);
        if fsync {
            self.shared.durable_seq.fetch_max(first_seq, Ordering::AcqRel);
        }
        log::debug!("WAL: started segment {}", self.active.info.path.display());
        Ok(())
    }

    fn check_range(&self, lo: Index, hi: Index) -> Result<()> {
        if lo < self.first_index() || hi > self.last_index() + 1 || lo > hi {
            return Err(Error::Internal(format!(
                "entries({lo}..{hi}) outside the log {}..={}",
                self.first_index(),
                self.last_index()
            )));
        }
        Ok(())
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
        self.offset + 1
    }

    fn last_index(&self) -> Index {
        self.offset + self.entries.len() as Index
    }

    fn term(&self, index: Index) -> Option<Term> {
        if index == self.offset {
            return Some(self.offset_term);
        }
        if index < self.offset || index > self.last_index() {
            return None;
        }
        Some(self.entries[(index - self.offset - 1) as usize].term)
    }

    fn entries(&self, lo: Index, hi: Index, max_bytes: usize) -> Result<Vec<Entry>> {
        self.check_range(lo, hi)?;
        let mut out = Vec::new();
        let mut bytes = 0;
        for e in &self.entries[(lo - self.offset - 1) as usize..(hi - self.offset - 1) as usize] {
            bytes += e.size();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    fn append(&mut self, entries: &[Entry]) -> Result<()> {
        let first_index = self.last_index() + 1;
        for (i, e) in entries.iter().enumerate() {
            if e.index != first_index + i as Index {
                return Err(Error::Internal(format!(
                    "append of index {} where {} was expected",
                    e.index,
                    first_index + i as Index
                )));
            }
        }
        self.write(RecordRef::Append { first_index, entries })?;
        self.entries.extend_from_slice(entries);
        Ok(())
    }

    fn truncate_suffix(&mut self, from: Index) -> Result<()> {
        if from <= self.offset {
            return Err(Error::Internal(format!(
                "truncate from {from} would cut into the snapshot at {}",
                self.offset
            )));
        }
        self.write(RecordRef::Truncate(from))?;
        let keep = (from - self.offset - 1).min(self.entries.len() as Index) as usize;
        self.entries.truncate(keep);
        Ok(())
    }

    fn write_seq(&self) -> u64 {
        self.write_seq
    }

    fn syncer(&self) -> Arc<dyn Syncer> {
        Arc::clone(&self.shared) as Arc<dyn Syncer>
    }

    fn snapshot(&self) -> Option<SnapshotMeta> {
        None
    }

    fn set_snapshot(&mut self, meta: SnapshotMeta) -> Result<()> {
        Err(Error::Storage(format!("snapshots are not supported by the WAL yet ({})", meta.index)))
    }

    fn compact(&mut self, index: Index) -> Result<()> {
        Err(Error::Storage(format!("compaction is not supported by the WAL yet ({index})")))
    }

    fn install_snapshot(&mut self, meta: SnapshotMeta) -> Result<()> {
        Err(Error::Storage(format!("snapshots are not supported by the WAL yet ({})", meta.index)))
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
/// preview), then the resulting hard state and log range. `json` prints one JSON object per line
/// instead (`"kind"`: `segment`, `hard_state`, `entry`, `append` (an empty one), `truncate`,
/// `torn_tail`, `corrupt`, `missing_segment`, and a final `summary`).
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
    let mut expected_seq = 1;
    let mut records = 0;
    for (i, (first_seq, path)) in segments.iter().enumerate() {
        let name = path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        if *first_seq != expected_seq {
            let what = format!(
                "missing segment {} (records {expected_seq}..{first_seq})",
                wal::segment_name(expected_seq)
            );
            if json {
                let line = serde_json::json!({
                    "kind": "missing_segment", "segment": wal::segment_name(expected_seq),
                    "first_seq": expected_seq, "next_segment": name,
                });
                writeln!(out, "{line}")?;
            } else {
                writeln!(out, "!! {what}")?;
            }
            problems.push(what);
        }
        let buf = fs::read(path).map_err(|e| io_error("cannot read WAL segment", path, e))?;
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
            replay.apply(s.record, &mut info)
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
    let hs = &replay.hard_state;
    let last_index = replay.entries.len() as Index;
    if json {
        let line = serde_json::json!({
            "kind": "summary", "term": hs.current_term, "voted_for": hs.voted_for,
            "first_index": 1, "last_index": last_index, "records": records,
            "segments": segments.len(), "problems": problems.len(),
        });
        writeln!(out, "{line}")?;
    } else {
        writeln!(
            out,
            "hard state: term {}, voted for {}",
            hs.current_term,
            hs.voted_for.as_deref().unwrap_or("nobody")
        )?;
        writeln!(
            out,
            "log: {} entries (1..={last_index}), {records} records in {} segments",
            replay.entries.len(),
            segments.len()
        )?;
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Storage(format!(
            "the WAL in {} is damaged: {}. To recover, {}",
            dir.display(),
            problems.join("; "),
            remedy(dir)
        )))
    }
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
    }
}

#[cfg(test)]
#[path = "durable_tests.rs"]
mod tests;
