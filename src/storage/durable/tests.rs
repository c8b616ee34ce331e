//! Tests of [`DurableStorage`]: round trips against [`MemStorage`], segment rolls, crash and
//! corruption recovery, the directory lock, group commit, snapshots and compaction, and `dump`.

use std::fs;
use std::path::Path;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tempfile::TempDir;

use super::*;
use crate::raft::MemStorage;
use crate::storage::dump::dump;
use crate::storage::snapshot;
use crate::storage::wal::{Record, ScanEnd};

const BIG: u64 = 64 << 20;

fn options(segment_size: u64, fsync: bool) -> DurableOptions {
    DurableOptions { segment_size, fsync }
}

fn open(dir: &Path, segment_size: u64) -> DurableStorage {
    DurableStorage::open(dir, options(segment_size, false)).expect("open").0
}

fn entry(index: Index, term: Term) -> Entry {
    Entry { index, term, command: format!("set k{index} v{index}").into_bytes() }
}

/// A tiny deterministic generator, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Writes the snapshot file for `(index, term)` into `d`'s snapshot store, as the shell does
/// before it records a snapshot.
fn snap(d: &DurableStorage, index: Index, term: Term) -> SnapshotMeta {
    let meta = SnapshotMeta { index, term };
    d.snapshot_store().write(meta, format!("state through {index}").as_bytes()).unwrap();
    meta
}

/// A snapshot through `index` recorded in both storages, and both compacted through it (the WAL's
/// segments only marked: nothing reclaims them).
fn snapshot_and_compact(
    d: &mut DurableStorage,
    m: &mut MemStorage,
    index: Index,
    term: Term,
) -> SnapshotMeta {
    let meta = snap(d, index, term);
    d.set_snapshot(meta).unwrap();
    m.set_snapshot(meta).unwrap();
    d.compact(index).unwrap();
    m.compact(index).unwrap();
    meta
}

/// Applies one random mutating call to both storages: hard state, truncation, append, and the
/// snapshot calls (set, compact, install with and without a matching entry).
fn random_op(rng: &mut Rng, d: &mut DurableStorage, m: &mut MemStorage) {
    let (first, last) = (m.first_index(), m.last_index());
    // Snapshots only move forward: the newest one, or the compaction point if there is none.
    let floor = m.snapshot().map_or(first - 1, |s| s.index);
    match rng.below(20) {
        0 | 1 => {
            let hs = HardState {
                current_term: m.hard_state().current_term + rng.below(2),
                voted_for: match rng.below(3) {
                    0 => None,
                    1 => Some("node1".into()),
                    _ => Some("ñode-2".into()),
                },
            };
            d.save_hard_state(&hs).unwrap();
            m.save_hard_state(&hs).unwrap();
        }
        2 if last >= first => {
            let from = first + rng.below(last - first + 2);
            d.truncate_suffix(from).unwrap();
            m.truncate_suffix(from).unwrap();
        }
        3 if last > floor => {
            let index = floor + 1 + rng.below(last - floor);
            let meta = snap(d, index, m.term(index).unwrap());
            d.set_snapshot(meta).unwrap();
            m.set_snapshot(meta).unwrap();
        }
        4 if floor >= first && m.snapshot().is_some() => {
            let index = first + rng.below(floor - first + 1);
            d.compact(index).unwrap();
            d.syncer().reclaim().unwrap();
            m.compact(index).unwrap();
        }
        5 if last > floor => {
            // The leader's snapshot matches an entry we hold: the entries after it are kept.
            let index = floor + 1 + rng.below(last - floor);
            let meta = snap(d, index, m.term(index).unwrap());
            d.install_snapshot(meta).unwrap();
            d.syncer().reclaim().unwrap();
            m.install_snapshot(meta).unwrap();
        }
        6 => {
            // A snapshot we do not match (a conflicting term, or past our log): the log goes.
            let index = floor + 1 + rng.below(last.saturating_sub(floor) + 5);
            let term = m.term(index).map_or(m.hard_state().current_term, |t| t + 1 + rng.below(2));
            let meta = snap(d, index, term);
            d.install_snapshot(meta).unwrap();
            d.syncer().reclaim().unwrap();
            m.install_snapshot(meta).unwrap();
            assert_eq!(d.last_index(), index, "cleared");
        }
        _ => {
            let term = m.hard_state().current_term;
            let entries: Vec<Entry> = (0..rng.below(5))
                .map(|i| Entry {
                    index: m.last_index() + 1 + i,
                    term,
                    command: (0..rng.below(60)).map(|_| rng.next() as u8).collect(),
                })
                .collect();
            d.append(&entries).unwrap();
            m.append(&entries).unwrap();
        }
    }
}

fn assert_same(d: &DurableStorage, m: &MemStorage) {
    assert_eq!(d.hard_state(), m.hard_state());
    assert_eq!((d.first_index(), d.last_index()), (m.first_index(), m.last_index()));
    assert_eq!(d.snapshot(), m.snapshot());
    for i in 0..=m.last_index() + 1 {
        assert_eq!(d.term(i), m.term(i), "term({i})");
    }
    let (lo, hi) = (m.first_index(), m.last_index() + 1);
    assert_eq!(d.entries(lo, hi, usize::MAX).unwrap(), m.entries(lo, hi, usize::MAX).unwrap());
    if lo > 1 {
        assert!(d.entries(lo - 1, hi, usize::MAX).is_err(), "compacted entries are gone");
    }
}

/// Total size of the files in `dir` and its subdirectories.
fn dir_size(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            if meta.is_dir() { dir_size(&e.path()) } else { meta.len() }
        })
        .sum()
}

fn wal_files(dir: &Path) -> Vec<PathBuf> {
    wal::list_segments(dir).unwrap().into_iter().map(|(_, p)| p).collect()
}

/// A closed WAL holding entries `1..=n` of term 1, in segments of `segment_size` bytes, and its
/// segment files.
fn closed_wal(n: Index, segment_size: u64) -> (TempDir, Vec<PathBuf>) {
    let dir = TempDir::new().unwrap();
    let mut d = open(dir.path(), segment_size);
    for i in 1..=n {
        d.append(&[entry(i, 1)]).unwrap();
    }
    drop(d);
    let files = wal_files(dir.path());
    (dir, files)
}

/// Copies the WAL and snapshot files of `from` into a new temporary directory.
fn copy_dir(from: &Path) -> TempDir {
    let to = TempDir::new().unwrap();
    for path in wal_files(from) {
        fs::copy(&path, to.path().join(path.file_name().unwrap())).unwrap();
    }
    let snapshots = from.join(SNAPSHOT_DIR);
    if snapshots.is_dir() {
        fs::create_dir(to.path().join(SNAPSHOT_DIR)).unwrap();
        for (_, path) in snapshot::list_snapshot_files(&snapshots).unwrap() {
            fs::copy(&path, to.path().join(SNAPSHOT_DIR).join(path.file_name().unwrap())).unwrap();
        }
    }
    to
}

fn set_len(path: &Path, len: u64) {
    OpenOptions::new().write(true).open(path).unwrap().set_len(len).unwrap();
}

fn flip_byte(path: &Path, offset: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset] ^= 0x5a;
    fs::write(path, bytes).unwrap();
}

/// Byte offsets of the records in a segment file.
fn record_offsets(path: &Path) -> Vec<usize> {
    let bytes = fs::read(path).unwrap();
    let first_seq = wal::parse_segment_name(path.file_name().unwrap().to_str().unwrap()).unwrap();
    let mut offsets = Vec::new();
    let scan = wal::scan_segment(&bytes, first_seq, |s| {
        offsets.push(s.offset);
        Ok(())
    });
    assert_eq!(scan.end, ScanEnd::Clean);
    offsets
}

fn message(result: Result<(DurableStorage, RecoveryReport)>) -> String {
    match result {
        Ok(_) => panic!("open succeeded"),
        Err(e) => {
            assert_eq!(e.code(), "storage", "{e}");
            e.message().to_string()
        }
    }
}

#[test]
fn round_trip_matches_mem_storage_across_reopens() {
    for segment_size in [BIG, 300] {
        let dir = TempDir::new().unwrap();
        let mut rng = Rng(0x9e3779b97f4a7c15);
        let mut m = MemStorage::new();
        let (mut d, report) =
            DurableStorage::open(dir.path(), options(segment_size, true)).unwrap();
        assert!(report.created);
        for round in 0..6 {
            for _ in 0..80 {
                random_op(&mut rng, &mut d, &mut m);
            }
            assert_same(&d, &m);
            let write_seq = d.write_seq();
            drop(d);
            let (reopened, report) =
                DurableStorage::open(dir.path(), options(segment_size, true)).unwrap();
            d = reopened;
            assert_same(&d, &m);
            assert!(!report.created && report.torn_tail.is_none(), "round {round}: {report:?}");
            assert_eq!(report.installed_snapshot_file, None, "every snapshot file was recorded");
            assert_eq!((report.hard_state, report.last_index), (m.hard_state(), m.last_index()));
            assert_eq!(d.write_seq(), write_seq, "sequence numbers continue where they were");
            assert_eq!(d.durable_seq(), write_seq);
        }
        if segment_size < BIG {
            // (Compaction deletes old segments, so count the rolls by the active one's name.)
            let active = d.segments().last().unwrap().first_seq;
            assert!(active > 50, "small segments must roll ({active})");
        }
        assert!(m.first_index() > 1 && m.snapshot().is_some(), "the snapshot calls ran");
    }
}

#[test]
fn segments_roll_and_every_one_starts_with_a_checkpoint() {
    let dir = TempDir::new().unwrap();
    let mut d = open(dir.path(), 256);
    let mut m = MemStorage::new();
    for i in 1..=100 {
        if i % 25 == 0 {
            let hs = HardState { current_term: i, voted_for: Some("node2".into()) };
            d.save_hard_state(&hs).unwrap();
            m.save_hard_state(&hs).unwrap();
        }
        d.append(&[entry(i, i / 25)]).unwrap();
        m.append(&[entry(i, i / 25)]).unwrap();
    }
    // One record larger than a whole segment still fits: it gets a segment of its own.
    let big = Entry { index: 101, term: 4, command: vec![7; 1000] };
    d.append(std::slice::from_ref(&big)).unwrap();
    m.append(&[big]).unwrap();
    d.append(&[entry(102, 4)]).unwrap();
    m.append(&[entry(102, 4)]).unwrap();

    let segments = d.segments();
    drop(d);
    assert!(segments.len() >= 10, "{} segments", segments.len());
    assert_eq!(wal_files(dir.path()), segments.iter().map(|s| s.path.clone()).collect::<Vec<_>>());
    for pair in segments.windows(2) {
        assert_eq!(pair[1].first_seq, pair[0].first_seq + pair[0].records);
        assert!(pair[0].bytes <= 256 || pair[0].records == 2, "{:?}", pair[0]);
    }
    for s in &segments {
        assert_eq!(fs::metadata(&s.path).unwrap().len(), s.bytes);
        let bytes = fs::read(&s.path).unwrap();
        let first = wal::decode_frame(&bytes, SEGMENT_HEADER_LEN).unwrap();
        assert!(matches!(first.record, Record::Checkpoint(_)), "{:?}", s.path);
    }
    let (lo, hi) = (segments[1].indexes.unwrap(), segments.last().unwrap().indexes);
    assert!(lo.0 > 1 && hi == Some((102, 102)), "{lo:?} {hi:?}");

    let (d, report) = DurableStorage::open(dir.path(), options(256, true)).unwrap();
    assert_eq!(report.segments, segments.len());
    assert_same(&d, &m);
}

/// Builds a log, then performs `last_op`; returns the state before it, the segment it wrote to,
/// and where its record starts and ends.
fn with_last_record(
    dir: &Path,
    last_op: impl FnOnce(&mut DurableStorage, &mut MemStorage),
) -> (MemStorage, PathBuf, u64, u64) {
    let mut d = open(dir, 600);
    let mut m = MemStorage::new();
    // At least two segments, and room in the last one for two more records.
    while d.segments().len() < 2 || d.segments().last().unwrap().bytes > 600 - 200 {
        let i = m.last_index() + 1;
        d.append(&[entry(i, 1)]).unwrap();
        m.append(&[entry(i, 1)]).unwrap();
    }
    let hs = HardState { current_term: 2, voted_for: Some("node3".into()) };
    d.save_hard_state(&hs).unwrap();
    m.save_hard_state(&hs).unwrap();
    let before = m.clone();
    let segments = d.segments().len();
    let start = d.segments().last().unwrap().bytes;
    last_op(&mut d, &mut m);
    assert_eq!(d.segments().len(), segments, "the last record must not start a segment");
    let last = d.segments().last().unwrap().clone();
    assert!(segments > 1);
    (before, last.path, start, last.bytes)
}

type LastOp = fn(&mut DurableStorage, &mut MemStorage);

#[test]
fn a_torn_last_record_is_cut_off_at_every_byte_offset() {
    let last_ops: [(&str, LastOp); 3] = [
        ("append", |d, m| {
            let next = m.last_index() + 1;
            let es = [entry(next, 2), entry(next + 1, 2)];
            d.append(&es).unwrap();
            m.append(&es).unwrap();
        }),
        ("hard state", |d, _| {
            d.save_hard_state(&HardState { current_term: 3, voted_for: None }).unwrap();
        }),
        ("truncate", |d, _| d.truncate_suffix(20).unwrap()),
    ];
    for (name, last_op) in last_ops {
        let base = TempDir::new().unwrap();
        let (before, segment, start, end) = with_last_record(base.path(), last_op);
        let file_name = segment.file_name().unwrap();
        for len in start..end {
            let dir = copy_dir(base.path());
            let path = dir.path().join(file_name);
            set_len(&path, len);
            let (mut d, report) = DurableStorage::open(dir.path(), options(600, true))
                .unwrap_or_else(|e| panic!("{name}, cut at {len}: {e}"));
            assert_same(&d, &before);
            match &report.torn_tail {
                None => assert_eq!(len, start, "{name}: a whole record must not be cut"),
                Some(t) => {
                    assert_eq!((t.offset, t.discarded_bytes), (start, len - start), "{name}");
                    assert_eq!(t.segment, path);
                }
            }
            assert_eq!(fs::metadata(&path).unwrap().len(), start, "{name}: file not repaired");

            // The log goes on from the cut, and survives another reopen.
            let mut expected = before.clone();
            let next = entry(before.last_index() + 1, 5);
            d.append(std::slice::from_ref(&next)).unwrap();
            expected.append(&[next]).unwrap();
            drop(d);
            let (d, report) = DurableStorage::open(dir.path(), options(600, false)).unwrap();
            assert!(report.torn_tail.is_none(), "{name}, cut at {len}: {report:?}");
            assert_same(&d, &expected);
        }
    }
}

#[test]
fn a_torn_new_segment_is_repaired_at_every_byte_offset() {
    // The crash hits while the first records of a freshly started segment are being written.
    let base = TempDir::new().unwrap();
    let mut d = open(base.path(), 300);
    let mut m = MemStorage::new();
    let mut before = m.clone();
    let mut i = 0;
    while d.segments().len() < 3 {
        before = m.clone();
        i += 1;
        d.append(&[entry(i, 1)]).unwrap();
        m.append(&[entry(i, 1)]).unwrap();
    }
    let last = d.segments().last().unwrap().clone();
    assert_eq!(last.records, 2, "a checkpoint and the append");
    drop(d);
    let file_name = last.path.file_name().unwrap();
    let boundaries = record_offsets(&last.path);
    assert_eq!(boundaries[0], SEGMENT_HEADER_LEN);
    for len in 0..last.bytes {
        let dir = copy_dir(base.path());
        set_len(&dir.path().join(file_name), len);
        let (mut d, report) = DurableStorage::open(dir.path(), options(300, false))
            .unwrap_or_else(|e| panic!("cut at {len}: {e}"));
        assert_same(&d, &before);
        // Cut right after the header or the checkpoint, nothing is torn; anywhere else it is.
        let clean = len == boundaries[0] as u64 || len == boundaries[1] as u64;
        assert_eq!(report.torn_tail.is_none(), clean, "cut at {len}");
        assert_eq!(report.segments, 3, "cut at {len}");
        d.append(&[entry(i, 2)]).unwrap();
        drop(d);
        let mut expected = before.clone();
        expected.append(&[entry(i, 2)]).unwrap();
        let (d, _) = DurableStorage::open(dir.path(), options(300, false)).unwrap();
        assert_same(&d, &expected);
        // The repaired segment starts with its checkpoint again.
        let offsets = record_offsets(&dir.path().join(file_name));
        assert_eq!(offsets[0], SEGMENT_HEADER_LEN);
    }
}

#[test]
fn a_bit_flip_in_the_middle_is_corruption_and_at_the_end_a_torn_tail() {
    let base = TempDir::new().unwrap();
    let mut d = open(base.path(), BIG);
    let mut m = MemStorage::new();
    for i in 1..=10 {
        d.append(&[entry(i, 1)]).unwrap();
        m.append(&[entry(i, 1)]).unwrap();
    }
    let before_last = m.clone();
    d.append(&[entry(11, 1)]).unwrap();
    drop(d);
    let name = wal::segment_name(1);
    let offsets = record_offsets(&base.path().join(&name));
    assert_eq!(offsets.len(), 12, "a checkpoint and 11 appends");

    // A flipped byte in the payload, the length field and the CRC field of a middle record.
    let middle = offsets[5];
    for (what, at) in [("payload", middle + 12), ("length", middle + 1), ("crc", middle + 5)] {
        let dir = copy_dir(base.path());
        flip_byte(&dir.path().join(&name), at);
        let msg = message(DurableStorage::open(dir.path(), options(BIG, false)));
        assert!(msg.contains(&name), "{what}: {msg}");
        assert!(msg.contains(&format!("byte offset {middle}:")), "{what}: {msg}");
        assert!(msg.contains("wipe the node's data dir"), "{what}: {msg}");
        assert!(msg.contains("it will catch up from the leader"), "{what}: {msg}");
    }

    // The same in the last record: a torn write, cut off with a warning.
    let last = *offsets.last().unwrap();
    let dir = copy_dir(base.path());
    flip_byte(&dir.path().join(&name), last + 12);
    let (d, report) = DurableStorage::open(dir.path(), options(BIG, true)).unwrap();
    assert_eq!(report.torn_tail.as_ref().map(|t| t.offset), Some(last as u64));
    assert!(report.torn_tail.unwrap().reason.contains("CRC mismatch"));
    assert_same(&d, &before_last);

    // A broken segment header.
    let dir = copy_dir(base.path());
    flip_byte(&dir.path().join(&name), 2);
    let msg = message(DurableStorage::open(dir.path(), options(BIG, false)));
    assert!(msg.contains("bad magic") && msg.contains("byte offset 0:"), "{msg}");
}

#[test]
fn damage_at_the_end_of_a_segment_that_is_not_the_last_is_corruption() {
    let (base, files) = closed_wal(40, 300);
    assert!(files.len() > 2);
    let name = files[0].file_name().unwrap();
    let offsets = record_offsets(&files[0]);
    let last = *offsets.last().unwrap();

    let dir = copy_dir(base.path());
    flip_byte(&dir.path().join(name), last + 10);
    let msg = message(DurableStorage::open(dir.path(), options(300, false)));
    assert!(msg.contains(name.to_str().unwrap()), "{msg}");
    assert!(msg.contains(&format!("byte offset {last}:")), "{msg}");
    assert!(msg.contains("not the last"), "{msg}");

    let dir = copy_dir(base.path());
    set_len(&dir.path().join(name), last as u64 + 3);
    let msg = message(DurableStorage::open(dir.path(), options(300, false)));
    assert!(msg.contains("cut short") && msg.contains("not the last"), "{msg}");
}

#[test]
fn a_missing_segment_is_a_clear_error() {
    let (base, files) = closed_wal(40, 200);
    assert!(files.len() >= 4);
    for gone in [0, 1, files.len() - 2] {
        let dir = copy_dir(base.path());
        let name = files[gone].file_name().unwrap().to_str().unwrap();
        fs::remove_file(dir.path().join(name)).unwrap();
        let msg = message(DurableStorage::open(dir.path(), options(200, false)));
        if gone == 0 {
            // The next segment starts with a checkpoint, but nothing compacted the entries it
            // says are in the segments before it.
            let next = files[1].file_name().unwrap().to_str().unwrap();
            assert!(
                msg.contains(&format!("WAL segments before {}", dir.path().join(next).display())),
                "{msg}"
            );
            assert!(msg.contains("are missing") && msg.contains("needs entries 1..="), "{msg}");
        } else {
            assert!(msg.contains(&format!("WAL segment {name} is missing")), "{msg}");
        }
        assert!(msg.contains("wipe the node's data dir"), "{msg}");
    }
}

#[test]
fn fresh_and_empty_dirs_start_an_empty_log() {
    let base = TempDir::new().unwrap();
    let nested = base.path().join("a/b/node1");
    fs::create_dir(base.path().join("empty")).unwrap();
    fs::write(base.path().join("empty/notes.txt"), "not a segment").unwrap();
    for dir in [nested, base.path().join("empty")] {
        let (d, report) = DurableStorage::open(&dir, DurableOptions::default()).unwrap();
        assert!(report.created && report.torn_tail.is_none());
        assert_eq!((d.first_index(), d.last_index(), d.term(0)), (1, 0, Some(0)));
        assert_eq!(d.hard_state(), HardState::default());
        assert!(dir.join("LOCK").exists());
        assert_eq!(wal_files(&dir), vec![dir.join(wal::segment_name(1))]);
        drop(d);
        let (d, report) = DurableStorage::open(&dir, DurableOptions::default()).unwrap();
        assert!(!report.created);
        assert_eq!((report.records, d.last_index()), (1, 0));
    }
}

#[test]
fn a_second_open_of_a_locked_dir_fails_until_the_first_is_dropped() {
    let dir = TempDir::new().unwrap();
    let (first, _) = DurableStorage::open(dir.path(), DurableOptions::default()).unwrap();
    let msg = message(DurableStorage::open(dir.path(), DurableOptions::default()));
    assert_eq!(
        msg,
        format!(
            "data dir {} is in use by another process (lock file {})",
            dir.path().display(),
            dir.path().join("LOCK").display()
        )
    );
    drop(first);
    assert!(DurableStorage::open(dir.path(), DurableOptions::default()).is_ok());
}

#[test]
fn concurrent_syncs_of_one_write_share_one_fsync() {
    let dir = TempDir::new().unwrap();
    let (mut d, _) = DurableStorage::open(dir.path(), DurableOptions::default()).unwrap();
    d.append(&[entry(1, 1)]).unwrap();
    let seq = d.write_seq();
    assert!(d.durable_seq() < seq);
    let before = d.fsync_count();
    let syncer = d.syncer();
    let barrier = Barrier::new(8);
    thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                barrier.wait();
                syncer.sync_through(seq).unwrap();
            });
        }
    });
    assert_eq!(d.fsync_count() - before, 1, "eight callers, one fsync");
    assert_eq!(d.durable_seq(), seq);
    assert!(matches!(syncer.sync_through(seq + 1), Err(Error::Internal(_))));
}

#[test]
fn group_commit_under_concurrent_appends() {
    const APPENDS: u64 = 300;
    const SYNCERS: usize = 4;
    const MIN_CALLS: u64 = 100;
    let dir = TempDir::new().unwrap();
    let (d, _) = DurableStorage::open(dir.path(), DurableOptions::default()).unwrap();
    let syncer = d.syncer();
    let start_seq = d.write_seq();
    let before = d.fsync_count();
    let storage = Mutex::new(d);
    let appending = AtomicBool::new(true);
    let calls = AtomicU64::new(0);
    thread::scope(|s| {
        s.spawn(|| {
            for i in 1..=APPENDS {
                storage.lock().append(&[entry(i, 1)]).unwrap();
                thread::sleep(Duration::from_micros(100));
            }
            appending.store(false, Ordering::Release);
        });
        for _ in 0..SYNCERS {
            s.spawn(|| {
                let mut seen = 0;
                let mut mine = 0;
                while appending.load(Ordering::Acquire) || mine < MIN_CALLS {
                    let seq = storage.lock().write_seq();
                    syncer.sync_through(seq).unwrap();
                    mine += 1;
                    let durable = storage.lock().durable_seq();
                    assert!(durable >= seq, "sync_through({seq}) returned at {durable}");
                    assert!(durable >= seen, "durable went back from {seen} to {durable}");
                    seen = durable;
                    thread::sleep(Duration::from_micros(20));
                }
                calls.fetch_add(mine, Ordering::Relaxed);
            });
        }
    });
    let d = storage.into_inner();
    assert_eq!(d.write_seq(), start_seq + APPENDS);
    syncer.sync_through(d.write_seq()).unwrap();
    assert_eq!(d.durable_seq(), d.write_seq());
    let fsyncs = d.fsync_count() - before;
    let calls = calls.into_inner() + 1;
    // An fsync only happens when the durable sequence number is behind the caller's write, and
    // it then moves past it: each fsync covers at least one new write. So there are never more
    // fsyncs than writes, and with more sync calls than writes, fewer fsyncs than calls.
    assert!(calls > APPENDS);
    assert!(fsyncs <= APPENDS, "{fsyncs} fsyncs for {APPENDS} writes");
    assert!(fsyncs < calls, "{fsyncs} fsyncs for {calls} sync calls");
    println!(
        "group commit, polling syncers: {calls} sync calls, {APPENDS} appends, {fsyncs} fsyncs"
    );
}

#[test]
fn writers_waiting_for_their_own_writes_all_return() {
    // The server's pattern: append under the lock, then wait outside it for that write.
    const WRITERS: usize = 8;
    const EACH: usize = 25;
    let dir = TempDir::new().unwrap();
    let (d, _) = DurableStorage::open(dir.path(), DurableOptions::default()).unwrap();
    let syncer = d.syncer();
    let before = d.fsync_count();
    let storage = Mutex::new(d);
    thread::scope(|s| {
        for _ in 0..WRITERS {
            s.spawn(|| {
                for _ in 0..EACH {
                    let seq = {
                        let mut d = storage.lock();
                        let next = d.last_index() + 1;
                        d.append(&[entry(next, 1)]).unwrap();
                        d.write_seq()
                    };
                    syncer.sync_through(seq).unwrap();
                    assert!(storage.lock().durable_seq() >= seq);
                }
            });
        }
    });
    let d = storage.into_inner();
    let (writes, fsyncs) = ((WRITERS * EACH) as u64, d.fsync_count() - before);
    assert_eq!(d.last_index(), writes);
    assert!(fsyncs <= writes);
    println!("group commit, {WRITERS} waiting writers: {writes} writes, {fsyncs} fsyncs");
}

#[test]
fn with_fsync_off_nothing_is_fsynced() {
    let dir = TempDir::new().unwrap();
    let (mut d, _) = DurableStorage::open(dir.path(), options(200, false)).unwrap();
    for i in 1..=30 {
        d.append(&[entry(i, 1)]).unwrap();
        d.syncer().sync_through(d.write_seq()).unwrap();
    }
    assert!(d.segments().len() > 2);
    assert_eq!(d.fsync_count(), 0);
    assert_eq!(d.durable_seq(), d.write_seq());
}

#[test]
fn dump_shows_every_record_and_changes_nothing() {
    let dir = TempDir::new().unwrap();
    let mut d = open(dir.path(), 400);
    d.save_hard_state(&HardState { current_term: 1, voted_for: Some("node1".into()) }).unwrap();
    for i in 1..=20 {
        d.append(&[entry(i, 1)]).unwrap();
    }
    d.append(&[Entry { index: 21, term: 1, command: vec![0, 1, 0xff, b'"'] }]).unwrap();
    d.append(&[]).unwrap();
    d.truncate_suffix(18).unwrap();
    d.save_hard_state(&HardState { current_term: 2, voted_for: None }).unwrap();
    d.append(&[Entry { index: 18, term: 2, command: vec![] }]).unwrap();
    let (segments, records) = (d.segments(), d.write_seq());
    assert!(segments.len() > 1);

    // While the node runs: no lock needed.
    let mut text = Vec::new();
    dump(dir.path(), false, &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    for i in 1..=20 {
        assert!(text.contains(&format!("entry index={i} term=1 len=")), "entry {i}:\n{text}");
    }
    assert!(text.contains("set k7 v7"), "{text}");
    assert!(text.contains(r#"entry index=21 term=1 len=4 "\x00\x01\xff"""#), "{text}");
    assert!(text.contains("entry index=18 term=2 len=0 (no-op)"), "{text}");
    assert!(text.contains("append (no entries) at 22"), "{text}");
    assert!(text.contains("truncate from=18"), "{text}");
    assert!(text.contains("hard_state term=1 voted_for=node1"), "{text}");
    assert!(text.contains("hard state: term 2, voted for nobody"), "{text}");
    assert!(text.contains(&format!("log: 18 entries (1..=18), {records} records")), "{text}");
    for s in &segments {
        let name = s.path.file_name().unwrap().to_str().unwrap();
        assert!(text.contains(&format!("segment {name}")), "{text}");
    }

    let mut json = Vec::new();
    dump(dir.path(), true, &mut json).unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8(json)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let count = |kind: &str| lines.iter().filter(|l| l["kind"] == kind).count();
    assert_eq!(count("entry"), 22);
    assert_eq!(count("truncate"), 1);
    assert_eq!(count("segment"), segments.len());
    assert_eq!(count("hard_state"), 2, "two saves");
    assert_eq!(count("checkpoint"), segments.len(), "a checkpoint each");
    let summary = lines.last().unwrap();
    assert_eq!(summary["kind"], "summary");
    assert_eq!((summary["last_index"].as_u64(), summary["term"].as_u64()), (Some(18), Some(2)));
    assert_eq!(summary["records"].as_u64(), Some(records));
    let binary = lines.iter().find(|l| l["kind"] == "entry" && l["index"] == 21).unwrap();
    assert_eq!(binary["preview"], r#"\x00\x01\xff""#);

    // A torn tail is reported, not repaired.
    drop(d);
    let last = &segments.last().unwrap().path;
    let len = fs::metadata(last).unwrap().len();
    set_len(last, len - 3);
    let mut out = Vec::new();
    dump(dir.path(), false, &mut out).unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("torn tail: record payload cut short"), "{out}");
    assert_eq!(fs::metadata(last).unwrap().len(), len - 3);

    // Corruption is reported, and the dump says so by failing.
    let first = &segments[0].path;
    let offsets = record_offsets(first);
    flip_byte(first, offsets[2] + 12);
    let mut out = Vec::new();
    let err = dump(dir.path(), false, &mut out).unwrap_err();
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains(&format!("!! @{:<10} CORRUPT: CRC mismatch", offsets[2])), "{out}");
    assert!(err.message().contains("is damaged"), "{err}");
    assert!(dump(&dir.path().join("nope"), false, &mut Vec::new()).is_err());
}

/// Appends entries `from..=to` with term `term` to both storages.
fn append_range(d: &mut DurableStorage, m: &mut MemStorage, from: Index, to: Index, term: Term) {
    for i in from..=to {
        d.append(&[entry(i, term)]).unwrap();
        m.append(&[entry(i, term)]).unwrap();
    }
}

fn reopen(d: DurableStorage, segment_size: u64) -> (DurableStorage, RecoveryReport) {
    let dir = d.dir().to_path_buf();
    drop(d);
    DurableStorage::open(&dir, options(segment_size, true)).unwrap()
}

#[test]
fn compaction_deletes_covered_segments_and_reopening_agrees() {
    let dir = TempDir::new().unwrap();
    let mut d = open(dir.path(), 300);
    let mut m = MemStorage::new();
    append_range(&mut d, &mut m, 1, 60, 1);
    append_range(&mut d, &mut m, 61, 100, 2);
    let before = d.segments();
    assert!(before.len() > 20, "{} segments", before.len());
    assert!(d.compact(10).is_err(), "nothing snapshotted yet");
    let meta = SnapshotMeta { index: 60, term: 1 };
    assert!(d.set_snapshot(meta).is_err(), "the snapshot file must be written first");
    assert!(d.set_snapshot(SnapshotMeta { index: 60, term: 2 }).is_err(), "entry 60 has term 1");
    snap(&d, 60, 1);
    d.set_snapshot(meta).unwrap();
    m.set_snapshot(meta).unwrap();
    d.compact(60).unwrap();
    // Compaction (under the Raft lock in a node) does no file I/O beyond its record: the
    // segments stay on disk until the syncer reclaims them.
    let files = wal_files(dir.path());
    assert!(before.iter().all(|s| files.contains(&s.path)), "a segment went before the reclaim");
    assert!(d.segments().len() < before.len());
    d.syncer().reclaim().unwrap();
    m.compact(60).unwrap();
    assert_same(&d, &m);
    assert_eq!((d.first_index(), d.term(60), d.term(59)), (61, Some(1), None));

    // The segments whose entries are all <= 60 are gone, from disk too; the first one left holds
    // entry 61 (or starts at it).
    let after = d.segments();
    assert_eq!(wal_files(dir.path()), after.iter().map(|s| s.path.clone()).collect::<Vec<_>>());
    assert!(after.len() < before.len() / 2, "{} of {} segments left", after.len(), before.len());
    let (lo, hi) = after[0].indexes.unwrap();
    assert!(lo <= 61 && hi > 60, "{:?}", after[0]);
    assert!(after.iter().all(|s| s.indexes.is_none_or(|(_, hi)| hi > 60)));
    assert!(before.iter().filter(|s| s.indexes.is_some_and(|(_, hi)| hi <= 60)).count() > 10);
    assert!(after[0].first_seq > 1);
    // Memory too: only the 40 entries left are held.
    assert_eq!(d.log.len(), 40);

    // Reopening replays from the first segment left.
    let (mut d, report) = reopen(d, 300);
    assert_same(&d, &m);
    assert_eq!((report.first_index, report.last_index, report.snapshot), (61, 100, Some(meta)));
    assert_eq!(d.segments().len(), after.len());

    // Going on: more entries, a later snapshot, compaction through all of them.
    append_range(&mut d, &mut m, 101, 150, 3);
    let meta = snap(&d, 150, 3);
    d.set_snapshot(meta).unwrap();
    m.set_snapshot(meta).unwrap();
    d.compact(150).unwrap();
    d.syncer().reclaim().unwrap();
    m.compact(150).unwrap();
    assert_eq!(d.segments().len(), 1, "everything before the active segment is covered");
    assert!(d.compact(149).is_ok(), "an older compaction point is a no-op");
    assert!(d.compact(151).is_err(), "past the snapshot");
    let (d, _) = reopen(d, 300);
    assert_same(&d, &m);
    assert_eq!((d.first_index(), d.last_index(), d.term(150)), (151, 150, Some(3)));
}

#[test]
fn install_snapshot_keeps_a_matching_suffix_or_clears_the_log_and_survives_reopen() {
    let dir = TempDir::new().unwrap();
    let mut d = open(dir.path(), 400);
    let mut m = MemStorage::new();
    append_range(&mut d, &mut m, 1, 30, 1);
    append_range(&mut d, &mut m, 31, 50, 2);
    assert!(d.install_snapshot(SnapshotMeta { index: 30, term: 1 }).is_err(), "no file yet");

    // The leader's snapshot through (30, 1) matches our entry 30: 31..=50 stay.
    let meta = snap(&d, 30, 1);
    d.install_snapshot(meta).unwrap();
    d.syncer().reclaim().unwrap();
    m.install_snapshot(meta).unwrap();
    assert_eq!((d.first_index(), d.last_index(), d.snapshot()), (31, 50, Some(meta)));
    assert_same(&d, &m);
    let (mut d, report) = reopen(d, 400);
    assert_same(&d, &m);
    assert_eq!(report.installed_snapshot_file, None);

    // A snapshot through (40, 7): our entry 40 has term 2, so the whole log goes.
    let meta = snap(&d, 40, 7);
    d.install_snapshot(meta).unwrap();
    d.syncer().reclaim().unwrap();
    m.install_snapshot(meta).unwrap();
    assert_eq!((d.first_index(), d.last_index(), d.term(40), d.term(41)), (41, 40, Some(7), None));
    assert_eq!(d.segments().len(), 1, "a cleared log needs no old segment");
    assert!(d.install_snapshot(SnapshotMeta { index: 35, term: 7 }).is_err(), "backwards");
    let (mut d, _) = reopen(d, 400);
    assert_same(&d, &m);

    // Past our log entirely, then the log goes on from it.
    let meta = snap(&d, 500, 8);
    d.install_snapshot(meta).unwrap();
    d.syncer().reclaim().unwrap();
    m.install_snapshot(meta).unwrap();
    append_range(&mut d, &mut m, 501, 520, 8);
    let (d, report) = reopen(d, 400);
    assert_same(&d, &m);
    assert_eq!((report.first_index, report.last_index), (501, 520));
    // Only the newest snapshot file is kept.
    assert_eq!(d.snapshot_store().list().unwrap(), vec![meta]);
}

#[test]
fn a_snapshot_file_newer_than_the_log_record_is_installed_at_open() {
    // The node wrote its own snapshot file and stopped before recording it: the file's entry is
    // in the log, so the entries after it are kept.
    let dir = TempDir::new().unwrap();
    let mut d = open(dir.path(), 300);
    let mut m = MemStorage::new();
    append_range(&mut d, &mut m, 1, 40, 1);
    let meta = snap(&d, 25, 1);
    let (d, report) = reopen(d, 300);
    m.install_snapshot(meta).unwrap();
    assert_eq!(report.installed_snapshot_file, Some(meta));
    assert_eq!(report.snapshot, Some(meta));
    assert!(report.to_string().contains("installed snapshot file"), "{report}");
    assert_same(&d, &m);
    assert_eq!((d.first_index(), d.last_index()), (26, 40));
    // Recorded now: the next open has nothing to install.
    let (mut d, report) = reopen(d, 300);
    assert_eq!(report.installed_snapshot_file, None);
    assert_same(&d, &m);

    // A snapshot received from the leader (a term we do not have at that index), then a crash
    // before install_snapshot: the log is replaced.
    let recorded = snap(&d, 30, 1);
    d.set_snapshot(recorded).unwrap();
    m.set_snapshot(recorded).unwrap();
    let leader = SnapshotStore::open_with(&dir.path().join("leader"), false).unwrap();
    let received = SnapshotMeta { index: 35, term: 4 };
    leader.write(received, b"the leader's state").unwrap();
    let total = leader.file_len(received).unwrap();
    let bytes = leader.read_chunk(received, 0, 1 << 20).unwrap();
    d.snapshot_store().receive_chunk(received, 0, total, &bytes).unwrap();
    d.snapshot_store().finish_receive(received).unwrap();
    let (d, report) = reopen(d, 300);
    m.install_snapshot(received).unwrap();
    assert_eq!(report.installed_snapshot_file, Some(received));
    assert_same(&d, &m);
    assert_eq!((d.first_index(), d.last_index(), d.term(35)), (36, 35, Some(4)));
    assert_eq!(d.snapshot_store().read(received).unwrap(), b"the leader's state");
}

#[test]
fn a_recorded_snapshot_whose_file_is_missing_or_damaged_is_a_clear_error() {
    let base = TempDir::new().unwrap();
    let mut d = open(base.path(), 300);
    let mut m = MemStorage::new();
    append_range(&mut d, &mut m, 1, 40, 1);
    let meta = snap(&d, 20, 1);
    d.set_snapshot(meta).unwrap();
    d.compact(20).unwrap();
    d.syncer().reclaim().unwrap();
    drop(d);
    let file = |dir: &Path| dir.join(SNAPSHOT_DIR).join(snapshot::snapshot_file_name(meta));

    let dir = copy_dir(base.path());
    fs::remove_file(file(dir.path())).unwrap();
    let msg = message(DurableStorage::open(dir.path(), options(300, false)));
    assert!(msg.contains(&format!("its file {} is missing", file(dir.path()).display())), "{msg}");
    assert!(msg.contains("there is no snapshot file"), "{msg}");
    assert!(msg.contains("wipe the node's data dir"), "{msg}");
    assert!(msg.contains("it will catch up from the leader"), "{msg}");

    // Only an older snapshot file is left: still missing.
    let dir = copy_dir(base.path());
    fs::remove_file(file(dir.path())).unwrap();
    SnapshotStore::open_with(&dir.path().join(SNAPSHOT_DIR), false)
        .unwrap()
        .write(SnapshotMeta { index: 10, term: 1 }, b"older")
        .unwrap();
    let msg = message(DurableStorage::open(dir.path(), options(300, false)));
    assert!(msg.contains("is missing (the newest snapshot file is"), "{msg}");

    // A damaged file.
    let dir = copy_dir(base.path());
    flip_byte(&file(dir.path()), 40);
    let msg = message(DurableStorage::open(dir.path(), options(300, false)));
    assert!(msg.contains(&format!("snapshot file {} is corrupt", file(dir.path()).display())));
    assert!(msg.contains("byte offset 36: CRC mismatch") && msg.contains("wipe"), "{msg}");

    // Untouched, it opens.
    let (d, _) = DurableStorage::open(base.path(), options(300, false)).unwrap();
    assert_eq!((d.first_index(), d.last_index(), d.snapshot()), (21, 40, Some(meta)));
}

#[test]
fn a_missing_segment_after_compaction_is_still_detected() {
    let base = TempDir::new().unwrap();
    let mut d = open(base.path(), 200);
    let mut m = MemStorage::new();
    append_range(&mut d, &mut m, 1, 80, 1);
    let meta = snap(&d, 30, 1);
    d.set_snapshot(meta).unwrap();
    d.compact(30).unwrap();
    d.syncer().reclaim().unwrap();
    let files = wal_files(base.path());
    drop(d);
    assert!(
        files.len() >= 5
            && wal::parse_segment_name(files[0].file_name().unwrap().to_str().unwrap()).unwrap()
                > 1
    );
    for gone in [0, 1, files.len() / 2, files.len() - 2] {
        let dir = copy_dir(base.path());
        let name = files[gone].file_name().unwrap().to_str().unwrap();
        fs::remove_file(dir.path().join(name)).unwrap();
        let msg = message(DurableStorage::open(dir.path(), options(200, false)));
        if gone == 0 {
            // The next segment's checkpoint names entries after the compaction point.
            let next = dir.path().join(files[1].file_name().unwrap());
            assert!(msg.contains(&format!("WAL segments before {} are missing", next.display())));
            assert!(msg.contains("needs entries 31..="), "{msg}");
        } else {
            assert!(msg.contains(&format!("WAL segment {name} is missing")), "{msg}");
        }
        assert!(msg.contains("wipe the node's data dir"), "{msg}");
    }
    // A first segment without a checkpoint cannot start a replay.
    let dir = copy_dir(base.path());
    let first = dir.path().join(files[0].file_name().unwrap());
    let offsets = record_offsets(&first);
    let bytes = fs::read(&first).unwrap();
    let mut without = SEGMENT_MAGIC.to_vec();
    without.extend_from_slice(&bytes[offsets[1]..]);
    fs::write(&first, without).unwrap();
    let msg = message(DurableStorage::open(dir.path(), options(200, false)));
    assert!(msg.contains("does not begin with a checkpoint"), "{msg}");
}

/// Snapshot-related last records cut at every byte: the record is dropped, and the snapshot
/// file, if newer than what the log then records, is installed at open.
#[test]
fn a_torn_snapshot_record_is_cut_off_at_every_byte_offset() {
    let last_ops: [(&str, LastOp); 4] = [
        ("set_snapshot", |d, m| {
            let meta = snap(d, 25, 1);
            d.set_snapshot(meta).unwrap();
            m.set_snapshot(meta).unwrap();
        }),
        ("compact", |d, m| {
            d.compact(15).unwrap();
            d.syncer().reclaim().unwrap();
            m.compact(15).unwrap();
        }),
        ("install, kept", |d, m| {
            let meta = snap(d, 22, 1);
            d.install_snapshot(meta).unwrap();
            d.syncer().reclaim().unwrap();
            m.install_snapshot(meta).unwrap();
        }),
        ("install, cleared", |d, m| {
            let meta = snap(d, 300, 9);
            d.install_snapshot(meta).unwrap();
            d.syncer().reclaim().unwrap();
            m.install_snapshot(meta).unwrap();
        }),
    ];
    for (name, last_op) in last_ops {
        let base = TempDir::new().unwrap();
        let mut d = open(base.path(), BIG);
        let mut m = MemStorage::new();
        append_range(&mut d, &mut m, 1, 30, 1);
        let meta = snap(&d, 20, 1);
        d.set_snapshot(meta).unwrap();
        m.set_snapshot(meta).unwrap();
        let before = m.clone();
        let start = d.segments()[0].bytes;
        last_op(&mut d, &mut m);
        let after = m.clone();
        let end = d.segments()[0].bytes;
        drop(d);
        // What open makes of the log without the last record: the newest snapshot file wins.
        let mut expected = before.clone();
        let newest = *snapshot::list_snapshot_files(&base.path().join(SNAPSHOT_DIR))
            .unwrap()
            .last()
            .map(|(meta, _)| meta)
            .unwrap();
        if expected.snapshot() != Some(newest) {
            expected.install_snapshot(newest).unwrap();
        }
        for len in start..=end {
            let dir = copy_dir(base.path());
            set_len(&dir.path().join(wal::segment_name(1)), len);
            let (d, report) = DurableStorage::open(dir.path(), options(BIG, false))
                .unwrap_or_else(|e| panic!("{name}, cut at {len}: {e}"));
            assert_eq!(report.torn_tail.is_some(), len != start && len != end, "{name} {len}");
            assert_same(&d, if len == end { &after } else { &expected });
            drop(d);
            // And it stays that way.
            let (d, report) = DurableStorage::open(dir.path(), options(BIG, false)).unwrap();
            assert!(report.torn_tail.is_none() && report.installed_snapshot_file.is_none());
            assert_same(&d, if len == end { &after } else { &expected });
        }
    }
}

#[test]
fn disk_and_memory_stay_bounded_under_append_snapshot_compact() {
    const SEGMENT: u64 = 4096;
    const ROUNDS: u64 = 150;
    const PER_ROUND: u64 = 60;
    const TAIL: u64 = 10;
    let dir = TempDir::new().unwrap();
    let mut d = DurableStorage::open(dir.path(), options(SEGMENT, false)).unwrap().0;
    let state = vec![b's'; 2000];
    let mut max_size = 0;
    for round in 0..ROUNDS {
        let next = d.last_index() + 1;
        let entries: Vec<Entry> = (next..next + PER_ROUND)
            .map(|i| Entry { index: i, term: 1 + round / 10, command: vec![b'x'; 100] })
            .collect();
        for chunk in entries.chunks(7) {
            d.append(chunk).unwrap();
        }
        if round % 10 == 0 {
            d.save_hard_state(&HardState { current_term: 1 + round / 10, voted_for: None })
                .unwrap();
        }
        let last = d.last_index();
        let meta = SnapshotMeta { index: last, term: d.term(last).unwrap() };
        d.snapshot_store().write(meta, &state).unwrap();
        d.set_snapshot(meta).unwrap();
        d.compact(last - TAIL).unwrap();
        d.syncer().reclaim().unwrap();
        let size = dir_size(dir.path());
        max_size = max_size.max(size);
        // The entries kept (~1.2 KB) and the ones of the last round (~7 KB, two segments) fit in
        // three segments, plus the active one being filled; the snapshot file is 2 KB.
        assert!(size < 4 * SEGMENT + 2100, "round {round}: {size} bytes on disk");
        assert!(d.segments().len() <= 4, "round {round}: {} segments", d.segments().len());
        assert_eq!(d.last_index() - d.first_index() + 1, TAIL);
        assert!(d.log.capacity() <= 4 * (PER_ROUND + TAIL) as usize);
    }
    let written = ROUNDS * PER_ROUND * 112;
    assert!(max_size * 20 < written, "{max_size} bytes on disk after writing {written}");
    drop(d);
    let (d, report) = DurableStorage::open(dir.path(), options(SEGMENT, false)).unwrap();
    assert_eq!(report.last_index, ROUNDS * PER_ROUND);
    assert_eq!(d.first_index(), ROUNDS * PER_ROUND - TAIL + 1);
    assert_eq!(d.snapshot().map(|s| s.index), Some(ROUNDS * PER_ROUND));
}

#[test]
fn dump_shows_snapshot_records_and_files() {
    let dir = TempDir::new().unwrap();
    let mut d = open(dir.path(), 300);
    let mut m = MemStorage::new();
    append_range(&mut d, &mut m, 1, 40, 2);
    let meta = snap(&d, 30, 2);
    d.set_snapshot(meta).unwrap();
    d.compact(25).unwrap();
    d.syncer().reclaim().unwrap();
    let installed = snap(&d, 35, 2);
    d.install_snapshot(installed).unwrap();
    d.syncer().reclaim().unwrap();
    append_range(&mut d, &mut m, 41, 45, 3);
    // Records in the segments left (compaction deleted the older ones).
    let records: u64 = d.segments().iter().map(|s| s.records).sum();
    assert!(records < d.write_seq());
    drop(d);

    let mut text = Vec::new();
    dump(dir.path(), false, &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("snapshot index=30 term=2"), "{text}");
    assert!(text.contains("compact through=25 term=2"), "{text}");
    assert!(
        text.contains("install_snapshot index=35 term=2 (kept the entries after it)"),
        "{text}"
    );
    assert!(text.contains("checkpoint term=0 voted_for=- snapshot="), "{text}");
    let file = snapshot::snapshot_file_name(installed);
    assert!(text.contains(&format!("snapshot file {file} (")), "{text}");
    assert!(text.contains("ok (the snapshot the log records)"), "{text}");
    assert!(text.contains("snapshot: through index 35 (term 2)"), "{text}");
    assert!(text.contains("log: 10 entries (36..=45)"), "{text}");

    let mut json = Vec::new();
    dump(dir.path(), true, &mut json).unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8(json)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of_kind = |kind: &str| lines.iter().filter(|l| l["kind"] == kind).collect::<Vec<_>>();
    assert_eq!(of_kind("snapshot").len(), 1);
    assert_eq!(of_kind("compact")[0]["index"], 25);
    assert_eq!(of_kind("install_snapshot")[0]["kept"], true);
    assert!(!of_kind("checkpoint").is_empty());
    let files = of_kind("snapshot_file");
    assert_eq!(files.len(), 1);
    assert_eq!(
        (files[0]["ok"].as_bool(), files[0]["recorded"].as_bool()),
        (Some(true), Some(true))
    );
    let summary = lines.last().unwrap();
    assert_eq!(
        (summary["first_index"].as_u64(), summary["last_index"].as_u64()),
        (Some(36), Some(45))
    );
    assert_eq!(summary["snapshot"]["index"], 35);
    assert_eq!(summary["records"].as_u64(), Some(records));

    // A damaged snapshot file and then a missing one are reported, and fail the dump.
    let path = dir.path().join(SNAPSHOT_DIR).join(&file);
    flip_byte(&path, 50);
    let mut out = Vec::new();
    let err = dump(dir.path(), false, &mut out).unwrap_err();
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.contains(&format!("!! snapshot file {file}")) && out.contains("CRC mismatch"),
        "{out}"
    );
    assert!(err.message().contains("is damaged"), "{err}");
    fs::remove_file(&path).unwrap();
    let mut out = Vec::new();
    assert!(dump(dir.path(), false, &mut out).is_err());
    assert!(String::from_utf8(out).unwrap().contains("which the log records, is missing"));
}

#[test]
fn a_log_written_before_checkpoints_existed_opens_and_compacts() {
    // Segments as the format before snapshots wrote them: each starts with a hard-state record.
    let dir = TempDir::new().unwrap();
    let hs = HardState { current_term: 1, voted_for: Some("node1".into()) };
    let mut m = MemStorage::new();
    m.save_hard_state(&hs).unwrap();
    let (mut seq, mut buf) = (0, Vec::new());
    let mut old_segments = Vec::new();
    for range in [1..=10, 11..=20] {
        old_segments.push(wal::segment_name(seq + 1));
        let mut bytes = SEGMENT_MAGIC.to_vec();
        seq += 1;
        wal::encode_frame(&mut buf, seq, &RecordRef::HardState(&hs)).unwrap();
        bytes.extend_from_slice(&buf);
        for i in range {
            let e = [entry(i, 1)];
            seq += 1;
            wal::encode_frame(&mut buf, seq, &RecordRef::Append { first_index: i, entries: &e })
                .unwrap();
            bytes.extend_from_slice(&buf);
            m.append(&e).unwrap();
        }
        fs::write(dir.path().join(old_segments.last().unwrap()), bytes).unwrap();
    }
    let copy = copy_dir(dir.path());

    // Compacting while only old segments exist deletes nothing: no segment can start a replay.
    let (mut d, _) = DurableStorage::open(copy.path(), options(BIG, false)).unwrap();
    assert_same(&d, &m);
    let (mut m2, meta) = (m.clone(), snap(&d, 15, 1));
    d.set_snapshot(meta).unwrap();
    m2.set_snapshot(meta).unwrap();
    d.compact(15).unwrap();
    d.syncer().reclaim().unwrap();
    m2.compact(15).unwrap();
    assert_eq!(wal_files(copy.path()).len(), 2);
    let (d, _) = reopen(d, BIG);
    assert_same(&d, &m2);

    // With small segments, new ones (with checkpoints) are started; compaction past the old
    // entries then deletes the old segments.
    let (mut d, _) = DurableStorage::open(dir.path(), options(300, false)).unwrap();
    assert_same(&d, &m);
    append_range(&mut d, &mut m, 21, 60, 1);
    let meta = snap(&d, 50, 1);
    d.set_snapshot(meta).unwrap();
    m.set_snapshot(meta).unwrap();
    d.compact(50).unwrap();
    d.syncer().reclaim().unwrap();
    m.compact(50).unwrap();
    let names: Vec<String> = wal_files(dir.path())
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(old_segments.iter().all(|old| !names.contains(old)), "{names:?}");
    let (d, _) = reopen(d, 300);
    assert_same(&d, &m);
}

/// `cargo test --release -- --ignored --nocapture wal_append_benchmark`
#[test]
#[ignore]
fn wal_append_benchmark() {
    const N: u64 = 100_000;
    let command = vec![b'x'; 100];
    let entries: Vec<Entry> =
        (1..=N).map(|i| Entry { index: i, term: 1, command: command.clone() }).collect();

    let start = Instant::now();
    let mut buf = Vec::new();
    for e in &entries {
        let record = RecordRef::Append { first_index: e.index, entries: std::slice::from_ref(e) };
        wal::encode_frame(&mut buf, e.index, &record).unwrap();
    }
    let encode = start.elapsed();
    println!("binary encoding only: {:.0} records/s", N as f64 / encode.as_secs_f64());
    let start = Instant::now();
    for e in &entries {
        buf = serde_json::to_vec(std::slice::from_ref(e)).unwrap();
        buf.push(b'\n');
    }
    let json = start.elapsed();
    println!("(serde_json for comparison: {:.0} records/s)", N as f64 / json.as_secs_f64());

    for (label, batch, fsync) in [
        ("1 entry per append", 1, true),
        ("100 entries per append", 100, true),
        ("1 entry per append, fsync OFF", 1, false),
    ] {
        let dir = TempDir::new().unwrap();
        let (mut d, _) = DurableStorage::open(dir.path(), options(BIG, fsync)).unwrap();
        let syncer = d.syncer();
        let before = d.fsync_count();
        let start = Instant::now();
        let mut since_sync = 0;
        for chunk in entries.chunks(batch) {
            d.append(chunk).unwrap();
            since_sync += chunk.len();
            if since_sync >= 100 {
                syncer.sync_through(d.write_seq()).unwrap();
                since_sync = 0;
            }
        }
        let elapsed = start.elapsed();
        println!(
            "{label}, 100-byte commands, fsync every 100 entries: {N} entries in {:.2?} = {:.0} \
             entries/s ({} fsyncs, {:.1} MB/s)",
            elapsed,
            N as f64 / elapsed.as_secs_f64(),
            d.fsync_count() - before,
            (d.segments().iter().map(|s| s.bytes).sum::<u64>() as f64)
                / 1e6
                / elapsed.as_secs_f64()
        );
        drop(d);
        let start = Instant::now();
        let (_, report) = DurableStorage::open(dir.path(), DurableOptions::default()).unwrap();
        println!("  reopen: {} records replayed in {:.2?}", report.records, start.elapsed());
    }
}

#[test]
fn segments_marked_but_not_reclaimed_before_a_stop_are_found_again_and_reclaimed_later() {
    let dir = TempDir::new().unwrap();
    let mut d = open(dir.path(), 300);
    let mut m = MemStorage::new();
    append_range(&mut d, &mut m, 1, 80, 1);
    let before = wal_files(dir.path());
    let on_disk = before.len();
    let meta = snapshot_and_compact(&mut d, &mut m, 60, 1);
    // Stopped before the reclaim ran: every segment is still there, and a replay from the oldest
    // one agrees.
    let files = wal_files(dir.path());
    assert!(before.iter().all(|p| files.contains(p)), "a segment went before the reclaim");
    let (mut d, report) = reopen(d, 300);
    assert_same(&d, &m);
    assert_eq!((report.first_index, report.snapshot), (61, Some(meta)));
    assert_eq!(d.segments().len(), files.len());
    // The next compaction marks them again, and the reclaim deletes them.
    append_range(&mut d, &mut m, 81, 90, 1);
    snapshot_and_compact(&mut d, &mut m, 70, 1);
    d.syncer().reclaim().unwrap();
    let left = wal_files(dir.path());
    assert!(left.len() * 2 < on_disk, "{} of {on_disk} segments left", left.len());
    assert_eq!(left, d.segments().iter().map(|s| s.path.clone()).collect::<Vec<_>>());
    let (d, _) = reopen(d, 300);
    assert_same(&d, &m);
}

#[test]
fn a_segment_that_cannot_be_deleted_keeps_the_newer_ones_and_is_retried() {
    let dir = TempDir::new().unwrap();
    let mut d = open(dir.path(), 300);
    let mut m = MemStorage::new();
    append_range(&mut d, &mut m, 1, 80, 1);
    let before = wal_files(dir.path());
    snapshot_and_compact(&mut d, &mut m, 60, 1);
    let kept: Vec<PathBuf> = d.segments().iter().map(|s| s.path.clone()).collect();
    let marked: Vec<PathBuf> = before.iter().filter(|p| !kept.contains(p)).cloned().collect();
    assert!(marked.len() > 3, "{} segments marked", marked.len());

    // The oldest marked segment cannot be deleted (a directory stands in its place): nothing
    // newer may go either, or a crash now would leave a gap in the run of segments.
    let oldest = marked[0].clone();
    let bytes = fs::read(&oldest).unwrap();
    fs::remove_file(&oldest).unwrap();
    fs::create_dir(&oldest).unwrap();
    d.syncer().reclaim().unwrap();
    assert!(marked[1..].iter().all(|p| p.exists()), "a newer segment went before an older one");

    // Once it can go, the next reclaim deletes it and the rest, oldest first.
    fs::remove_dir(&oldest).unwrap();
    fs::write(&oldest, &bytes).unwrap();
    d.syncer().reclaim().unwrap();
    assert!(marked.iter().all(|p| !p.exists()), "marked segments left behind");
    assert_eq!(wal_files(dir.path()), kept);
    let (d, _) = reopen(d, 300);
    assert_same(&d, &m);
}
