//! The one walk over a data dir's WAL segments ([`walk`]), and the log state their records build
//! ([`Replay`]): the rules of recovery, in one place. Recovery
//! ([`DurableStorage::open`](super::DurableStorage::open)) and [`dump`](crate::storage::dump)
//! both walk the log with it, and differ only in what they do about what it finds (a
//! [`Visitor`]): `open` cuts a torn tail off and refuses any damage, `dump` prints everything,
//! changes nothing, and goes on past damage.
//!
//! # What the walk checks
//!
//! Segments are read oldest first; each record's length, CRC and sequence number are checked by
//! [`wal::scan_segment`], and then what it means is checked against the records before it
//! ([`Replay::apply`]). What the walk reports:
//!
//! * **A torn tail** ([`TornTail`]): the *last* record of the *last* segment is incomplete or
//!   fails its CRC, and no valid record follows it. This is what a crash in the middle of a
//!   `write` leaves behind; that record was never fsynced completely, so it was never
//!   acknowledged to anyone.
//! * **Damage** ([`Damage`]): a bad record with valid records after it, a bad record in any
//!   segment but the last (those were complete on disk before the next segment was started), a
//!   valid record with the wrong sequence number or one that cannot follow the records before it,
//!   a gap in the segment names (a missing file), an oldest segment that neither starts at record
//!   1 nor with a checkpoint, or entries the log still needs that no segment holds. The disk lost
//!   data that may have been acknowledged, and replaying around the hole could resurrect or forget
//!   committed entries. Every damage names the file and byte offset (or the missing file).
//!
//! The rule is deliberately conservative: should a power cut ever persist a later page of the last
//! segment but not an earlier one, that is damage, not a torn tail.
//!
//! **Checkpoints.** The oldest segment left must start at record 1 or with a checkpoint (if not,
//! the segments before it are missing). Records are replayed in order; the entries named by the
//! first checkpoint are *unknown* until a compact or install record covers them. If the walk ends
//! with some of them still needed, a segment is missing. Checkpoints met later in the walk are
//! compared with the replayed state (a mismatch is damage).

use std::fs;
use std::path::{Path, PathBuf};

use super::{SegmentInfo, TornTail, io_error};
use crate::error::{Error, Result};
use crate::raft::{Entry, HardState, Index, Membership, SnapshotMeta, Term};
use crate::storage::wal::{self, Checkpoint, Record, SEGMENT_HEADER_LEN, ScanEnd, Scanned};

/// What to do about the log's damage: part of every message that reports it.
pub(crate) fn remedy(dir: &Path) -> String {
    format!(
        "wipe the node's data dir ({}) and restart it; it will catch up from the leader (the rest \
         of the cluster must still have a quorum)",
        dir.display()
    )
}

/// Damage the walk found (see the module docs). [`Damage::error`] is how recovery refuses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Damage {
    /// The segment names are not a contiguous run: `path` starts at record `first_seq` where
    /// `expected_seq` was expected (a segment is missing, or two overlap), or it is named 0.
    Gap {
        /// The segment before it, if any.
        previous: Option<PathBuf>,
        path: PathBuf,
        first_seq: u64,
        expected_seq: u64,
    },
    /// The oldest segment starts after record 1, and not with a checkpoint to replay from.
    NoCheckpoint { path: PathBuf, first_seq: u64 },
    /// The record at `offset` of `path` is bad, or cannot follow the ones before it; `skipped`
    /// bytes from there to the end of the segment were not replayed.
    Corrupt { path: PathBuf, offset: usize, skipped: usize, reason: String },
    /// The log still needs entries `first..=last`, which are in no segment (the ones before the
    /// oldest, `oldest`, are missing) and in no snapshot.
    MissingEntries { oldest: PathBuf, first_seq: u64, first: Index, last: Index },
}

impl Damage {
    /// The error recovery refuses to start with, naming the file and offset and the way out.
    pub(crate) fn error(&self, dir: &Path) -> Error {
        let what = match self {
            Damage::Gap { previous: None, path, first_seq: 0, .. } => {
                format!(
                    "{} starts at record 0, which is not a valid WAL segment name",
                    path.display()
                )
            }
            Damage::Gap { previous: None, path, first_seq, expected_seq } => format!(
                "WAL segment {} starts at record {first_seq} where {expected_seq} was expected",
                path.display()
            ),
            Damage::Gap { previous: Some(prev), path, first_seq, expected_seq } => {
                if first_seq > expected_seq {
                    format!(
                        "WAL segment {} is missing: {} ends at record {} but the next segment is {}",
                        wal::segment_name(*expected_seq),
                        prev.display(),
                        expected_seq - 1,
                        path.display()
                    )
                } else {
                    format!(
                        "WAL segments {} (ending at record {}) and {} overlap",
                        prev.display(),
                        expected_seq - 1,
                        path.display()
                    )
                }
            }
            Damage::NoCheckpoint { path, first_seq } => {
                missing_before(path, *first_seq, "does not begin with a checkpoint to replay from")
            }
            Damage::Corrupt { path, offset, reason, .. } => format!(
                "WAL segment {} is corrupt at byte offset {offset}: {reason}. This is damage, not \
                 a torn write from a crash, and the log cannot be trusted past it",
                path.display()
            ),
            Damage::MissingEntries { oldest, first_seq, first, last } => missing_before(
                oldest,
                *first_seq,
                &format!(
                    "the log still needs entries {first}..={last}, which were written before it \
                     and are in no snapshot"
                ),
            ),
        };
        Error::Storage(format!("{what}. To recover, {}", remedy(dir)))
    }
}

/// The start of the message for an oldest segment that a replay cannot start from.
fn missing_before(first: &Path, first_seq: u64, what: &str) -> String {
    format!(
        "WAL segments before {} are missing: it starts at record {first_seq} and {what}",
        first.display()
    )
}

/// What a caller of [`walk`] does about what it finds. The walk stops at the first error a method
/// returns, and returns it.
pub(crate) trait Visitor {
    /// A segment, whole in `bytes`, before its records.
    fn segment(&mut self, _path: &Path, _first_seq: u64, _bytes: &[u8]) -> Result<()> {
        Ok(())
    }

    /// A valid record, before it is applied.
    fn record(&mut self, _record: &Scanned) -> Result<()> {
        Ok(())
    }

    /// The last segment ends in a torn record; nothing follows it.
    fn torn_tail(&mut self, tail: TornTail) -> Result<()>;

    /// Damage. An error stops the walk; `Ok` goes on with what is left (the next segment).
    fn damage(&mut self, damage: Damage) -> Result<()>;
}

/// What [`walk`] read.
pub(crate) struct Walked {
    /// The log state the valid records build.
    pub(crate) replay: Replay,
    /// Every segment, oldest first, as far as it was valid.
    pub(crate) segments: Vec<SegmentInfo>,
    /// Valid records, in all segments.
    pub(crate) records: u64,
    /// The sequence number the next record gets.
    pub(crate) next_seq: u64,
}

/// Walks the segments of `dir`, oldest first, replaying their records and telling `visit` about
/// each segment, record, torn tail and damage (see the module docs). Reads only.
pub(crate) fn walk(dir: &Path, visit: &mut dyn Visitor) -> Result<Walked> {
    let listed = wal::list_segments(dir)?;
    let mut walked = Walked {
        replay: Replay::default(),
        segments: Vec::new(),
        records: 0,
        next_seq: listed.first().map_or(1, |(seq, _)| *seq),
    };
    for (i, (first_seq, path)) in listed.iter().enumerate() {
        let bytes = fs::read(path).map_err(|e| io_error("cannot read WAL segment", path, e))?;
        if let Some(damage) = walked.check_start(i == 0, *first_seq, path, &bytes) {
            visit.damage(damage)?;
        }
        visit.segment(path, *first_seq, &bytes)?;
        walked.replay_segment(path, *first_seq, &bytes, i + 1 == listed.len(), visit)?;
    }
    if let (Some((first, last)), Some((first_seq, oldest))) =
        (walked.replay.missing(), listed.first())
    {
        let oldest = oldest.clone();
        visit.damage(Damage::MissingEntries { oldest, first_seq: *first_seq, first, last })?;
    }
    Ok(walked)
}

impl Walked {
    /// Whether a segment can follow the ones before it: its name continues their run, and the
    /// oldest one starts at record 1 or with a checkpoint.
    fn check_start(
        &self,
        oldest: bool,
        first_seq: u64,
        path: &Path,
        bytes: &[u8],
    ) -> Option<Damage> {
        if first_seq != self.next_seq || first_seq == 0 {
            Some(Damage::Gap {
                previous: self.segments.last().map(|s| s.path.clone()),
                path: path.to_path_buf(),
                first_seq,
                expected_seq: self.next_seq.max(1),
            })
        } else if oldest && first_seq > 1 && !starts_with_checkpoint(bytes, first_seq) {
            Some(Damage::NoCheckpoint { path: path.to_path_buf(), first_seq })
        } else {
            None
        }
    }

    /// Replays one segment's records, then reports how it ended.
    fn replay_segment(
        &mut self,
        path: &Path,
        first_seq: u64,
        bytes: &[u8],
        is_last: bool,
        visit: &mut dyn Visitor,
    ) -> Result<()> {
        let mut info = SegmentInfo::new(path.to_path_buf(), first_seq);
        let mut refused = None;
        let replay = &mut self.replay;
        let scan = wal::scan_segment(bytes, first_seq, |s: Scanned| {
            if let Err(e) = visit.record(&s) {
                refused = Some(e);
                return Err("the visitor failed".to_string());
            }
            replay.apply(s.record, s.offset == SEGMENT_HEADER_LEN, &mut info)
        });
        if let Some(e) = refused {
            return Err(e);
        }
        info.records = scan.records;
        info.bytes = scan.valid_len.max(SEGMENT_HEADER_LEN) as u64;
        self.segments.push(info);
        self.records += scan.records;
        self.next_seq = first_seq + scan.records;
        let (offset, reason) = match scan.end {
            ScanEnd::Clean => return Ok(()),
            ScanEnd::Torn { offset, reason } if is_last => {
                return visit.torn_tail(TornTail {
                    segment: path.to_path_buf(),
                    offset: offset as u64,
                    discarded_bytes: bytes.len().saturating_sub(offset) as u64,
                    reason,
                });
            }
            ScanEnd::Torn { offset, reason } => (
                offset,
                format!(
                    "{reason}, at the end of a segment that is not the last one (a segment is \
                     complete on disk before the next one is started)"
                ),
            ),
            ScanEnd::Corrupt { offset, reason } => (offset, reason),
        };
        let skipped = bytes.len().saturating_sub(offset);
        visit.damage(Damage::Corrupt { path: path.to_path_buf(), offset, skipped, reason })
    }
}

/// Whether a segment's first record is a checkpoint (so a replay can start there).
fn starts_with_checkpoint(buf: &[u8], first_seq: u64) -> bool {
    wal::decode_frame(buf, SEGMENT_HEADER_LEN)
        .is_ok_and(|d| d.seq == first_seq && matches!(d.record, Record::Checkpoint(_)))
}

/// The log state rebuilt by replaying records.
#[derive(Default)]
pub(crate) struct Replay {
    pub(crate) hard_state: HardState,
    pub(crate) snapshot: Option<SnapshotMeta>,
    /// The configuration in force at the start of the log (latest membership record).
    pub(crate) membership: Option<(Index, Membership)>,
    /// The compaction point: entries `<= offset` are gone on purpose.
    pub(crate) offset: Index,
    /// Term of entry `offset`.
    pub(crate) offset_term: Term,
    /// Entries `offset + 1 ..= base` are *unknown*: the checkpoint the replay started from names
    /// them, but they are in segments that compaction deleted. A later compact or install record
    /// must cover them (`base == offset` when the replay ends), or a segment is missing.
    base: Index,
    /// Entries `base + 1 ..`.
    pub(crate) entries: Vec<Entry>,
    /// Records applied so far.
    records: u64,
}

impl Replay {
    pub(crate) fn last_index(&self) -> Index {
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
            membership: self.membership.clone(),
        }
    }

    /// If entries the log still needs were never replayed, which ones (`first..=last`).
    fn missing(&self) -> Option<(Index, Index)> {
        (self.base > self.offset).then_some((self.offset + 1, self.base))
    }

    /// Applies one record; `first_in_segment` says it is the segment's first. An error says why
    /// the record cannot follow the ones before it (the walk reports it as damage).
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
                self.apply_checkpoint(cp, first_record)?;
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
                self.apply_truncate(from)?;
                segment.note_cut(from - 1);
            }
            Record::Snapshot(meta) => self.apply_snapshot(meta)?,
            Record::Membership(index, m) => self.membership = Some((index, m)),
            Record::Compact { index, term } => self.apply_compact(index, term)?,
            Record::InstallSnapshot { meta, kept } => {
                self.apply_install(meta, kept)?;
                if !kept {
                    segment.note_cut(meta.index);
                }
            }
        }
        Ok(())
    }

    /// The first checkpoint of a replay is its starting state; a later one must agree with the
    /// state replayed so far.
    fn apply_checkpoint(&mut self, cp: Checkpoint, first_record: bool) -> Result<(), String> {
        if first_record {
            self.hard_state = cp.hard_state;
            self.snapshot = cp.snapshot;
            self.membership = cp.membership;
            self.offset = cp.compacted;
            self.offset_term = cp.compacted_term;
            self.base = cp.last_index;
        } else if cp != self.checkpoint() {
            return Err(format!(
                "checkpoint {cp:?} disagrees with the state replayed so far {:?}",
                self.checkpoint()
            ));
        }
        Ok(())
    }

    fn apply_truncate(&mut self, from: Index) -> Result<(), String> {
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
        Ok(())
    }

    fn apply_snapshot(&mut self, meta: SnapshotMeta) -> Result<(), String> {
        if meta.index > self.last_index() || meta.index < self.offset {
            return Err(format!(
                "a snapshot at index {} outside the log {}..={}",
                meta.index,
                self.offset,
                self.last_index()
            ));
        }
        self.snapshot = Some(meta);
        Ok(())
    }

    fn apply_compact(&mut self, index: Index, term: Term) -> Result<(), String> {
        if index > self.last_index() || index < self.offset {
            return Err(format!(
                "a compaction through index {index} outside the log {}..={}",
                self.offset,
                self.last_index()
            ));
        }
        if let Some(known) = self.term(index).filter(|&t| t != term) {
            return Err(format!(
                "a compaction through index {index} with term {term}, but that entry has term \
                 {known}"
            ));
        }
        self.compact_through(index, term);
        Ok(())
    }

    fn apply_install(&mut self, meta: SnapshotMeta, kept: bool) -> Result<(), String> {
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
                    "a snapshot install at ({}, term {}) that kept the log, which does not hold \
                     that entry",
                    meta.index, meta.term
                ));
            }
            self.compact_through(meta.index, meta.term);
        } else {
            self.entries.clear();
            self.base = meta.index;
            self.offset = meta.index;
            self.offset_term = meta.term;
        }
        self.snapshot = Some(meta);
        Ok(())
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
}
