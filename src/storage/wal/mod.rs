//! The write-ahead log's on-disk format: segment files, record framing and record payloads, plus
//! the scanner that the one segment walk (`durable::replay`) of both recovery
//! ([`super::durable::DurableStorage::open`]) and [`super::dump::dump`] uses to read a segment.
//!
//! # Files
//!
//! A data directory holds a `LOCK` file (see [`super::durable::DurableStorage::open`]) and the
//! log, split into *segments*:
//!
//! ```text
//! data-dir/
//!   LOCK
//!   wal-00000000000000000001.log      records 1 ..= 812
//!   wal-00000000000000000813.log      records 813 ..= 1650
//!   wal-00000000000000001651.log      records 1651 ..       (the active segment, being appended to)
//!   snapshots/                        snapshot files (see [`super::snapshot`])
//! ```
//!
//! Every record has a *sequence number* (1, 2, 3, ... with no gaps across the whole log), and a
//! segment is named after the sequence number of its first record, zero-padded to 20 digits so
//! that names sort in log order. The names alone therefore say which segment must follow which:
//! `wal-<N>.log` holding `k` records must be followed by `wal-<N+k>.log`. A missing file shows up
//! as a gap. The oldest segment is `wal-…1.log` until a compaction deletes the oldest segments;
//! after that the log starts at a later segment, which then starts with a checkpoint (below).
//!
//! # Segment layout
//!
//! All integers are little-endian.
//!
//! ```text
//! segment := magic record*
//! magic   := "RLKVWAL" version:u8          8 bytes, version = 1
//! record  := length:u32 crc:u32 payload    length = payload bytes (1 ..= 1 GiB)
//!                                          crc = CRC-32 (IEEE 802.3, the zlib/gzip polynomial,
//!                                          as computed by `crc32fast`) of the payload bytes
//! payload := kind:u8 seq:u64 body
//! ```
//!
//! | kind | meaning | body |
//! |---|---|---|
//! | 1 | hard state (latest wins) | `hard_state` := `term:u64` `has_vote:u8` (0/1) then, if 1, `len:u32` + UTF-8 node id |
//! | 2 | append entries | `first_index:u64` `count:u32`, then `count` times `term:u64` `len:u32` + command bytes |
//! | 3 | truncate suffix | `from:u64` (remove every entry with index `>= from`) |
//! | 4 | snapshot recorded (`set_snapshot`) | `index:u64` `term:u64` |
//! | 5 | compaction (`compact`): entries `<= index` dropped | `index:u64` `term:u64` (the term of entry `index`, still needed once it is gone) |
//! | 6 | snapshot installed from the leader | `index:u64` `term:u64` `kept:u8` (1: the entries after `index` were kept, 0: the log was cleared) |
//! | 7 | checkpoint (first record of every segment) | `hard_state`, `has_snapshot:u8` then, if 1, `index:u64` `term:u64`; then `compacted:u64` `compacted_term:u64` `last_index:u64`; then, if the node has saved one, `1:u8` `membership` (checkpoints written before membership existed end after `last_index`) |
//! | 8 | membership base (`save_membership_base`, latest wins) | `membership` := `index:u64` `len:u32` + the configuration as JSON |
//!
//! An append's entries are contiguous, so only the first index is stored. One mutating call of
//! the [`super::Storage`] trait writes exactly one record, so the record's sequence number is the
//! storage's `write_seq` after that call. An install record stores its outcome (`kept`) rather
//! than leaving it to be recomputed, because the entry it was compared with may be in a segment
//! that compaction has since deleted.
//!
//! Every segment *starts with a checkpoint* (kind 7): the hard state, the snapshot, the compaction
//! point (`compacted`: entries up to it are gone, `first_index = compacted + 1`) and the last
//! index, as they were when the segment was started. (Segments written before snapshots existed
//! start with a hard-state record instead; they can still be read from the start of the log.)
//! So the state a segment builds on is written at its top, and a replay can begin at any segment
//! that starts with a checkpoint: only the *entries* `compacted + 1 ..= last_index` it names are
//! elsewhere, in older segments. That is what lets compaction delete old segments without copying
//! anything: once every one of those entries has been compacted away too, nothing older is needed
//! (see [`super::durable`]).
//!
//! The encoding is a hand-written binary one rather than JSON: it is a handful of `to_le_bytes`
//! calls, costs nothing to parse, and keeps command bytes as they are (no base64).
//!
//! # Reading: what can be wrong with a record
//!
//! [`scan_segment`] walks a segment's records and stops at the first one that is not valid: the
//! length header is cut short, the length is zero or absurd, the payload is cut short, the CRC
//! does not match, the payload does not parse, or its sequence number is not the next one. It then
//! decides whether anything *valid* follows the bad spot (a whole record with a good CRC and a
//! plausible sequence number, searched byte by byte). If nothing does, the bad bytes are a
//! [`ScanEnd::Torn`] tail, the signature of a crash in the middle of a write; if something does,
//! it is [`ScanEnd::Corrupt`]ion. What to do about each is the caller's business.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::raft::{Entry, HardState, Index, Membership, SnapshotMeta, Term};

/// The first bytes of every segment file: `RLKVWAL` and the format version (1).
pub const SEGMENT_MAGIC: [u8; 8] = *b"RLKVWAL\x01";
/// Length of the segment header ([`SEGMENT_MAGIC`]).
pub const SEGMENT_HEADER_LEN: usize = SEGMENT_MAGIC.len();
/// Length of a record's frame header: `length:u32 crc:u32`.
pub const FRAME_HEADER_LEN: usize = 8;
/// Largest payload a record may have (1 GiB); a larger length field is treated as damage.
pub const MAX_PAYLOAD_LEN: usize = 1 << 30;

const KIND_HARD_STATE: u8 = 1;
const KIND_APPEND: u8 = 2;
const KIND_TRUNCATE: u8 = 3;
const KIND_SNAPSHOT: u8 = 4;
const KIND_COMPACT: u8 = 5;
const KIND_INSTALL: u8 = 6;
const KIND_CHECKPOINT: u8 = 7;
const KIND_MEMBERSHIP: u8 = 8;

/// The state a segment starts from: its first record (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// The term and vote.
    pub hard_state: HardState,
    /// The latest snapshot recorded, if any.
    pub snapshot: Option<SnapshotMeta>,
    /// Entries `<= compacted` have been dropped (`first_index = compacted + 1`).
    pub compacted: Index,
    /// The term of entry `compacted` (0 for index 0).
    pub compacted_term: Term,
    /// The last index of the log (`compacted` if it holds no entries).
    pub last_index: Index,
    /// The configuration in force at an index at or before the log's start, if saved.
    pub membership: Option<(Index, Membership)>,
}

/// A record to write, borrowing its data (so appends are encoded without cloning entries).
#[derive(Clone, Copy, Debug)]
pub enum RecordRef<'a> {
    /// The term and vote.
    HardState(&'a HardState),
    /// Entries `first_index ..` (may be empty: the call still gets its sequence number).
    Append {
        /// Index of the first entry (`last_index + 1` at the time of writing).
        first_index: Index,
        /// The entries; their indexes are contiguous from `first_index`.
        entries: &'a [Entry],
    },
    /// Remove every entry with index `>= from`.
    Truncate(Index),
    /// A snapshot through this entry is durable.
    Snapshot(SnapshotMeta),
    /// Entries `<= index` are dropped; `term` is the term of entry `index`.
    Compact {
        /// The new compaction point.
        index: Index,
        /// The term of entry `index`.
        term: Term,
    },
    /// A snapshot from the leader was installed.
    InstallSnapshot {
        /// The snapshot.
        meta: SnapshotMeta,
        /// Whether the entries after `meta.index` were kept (else the log was cleared).
        kept: bool,
    },
    /// The state the segment starts from.
    Checkpoint(&'a Checkpoint),
    /// The configuration in force at `index` (see [`crate::raft::Storage::membership_base`]).
    Membership {
        /// Where it is in force.
        index: Index,
        /// The configuration, as JSON.
        json: &'a [u8],
    },
}

/// A record read back from disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// The term and vote.
    HardState(HardState),
    /// Entries `first_index .. first_index + entries.len()`.
    Append {
        /// Index of the first entry.
        first_index: Index,
        /// The entries, with their indexes filled in.
        entries: Vec<Entry>,
    },
    /// Remove every entry with index `>= from`.
    Truncate(Index),
    /// A snapshot through this entry is durable.
    Snapshot(SnapshotMeta),
    /// Entries `<= index` are dropped; `term` is the term of entry `index`.
    Compact {
        /// The new compaction point.
        index: Index,
        /// The term of entry `index`.
        term: Term,
    },
    /// A snapshot from the leader was installed.
    InstallSnapshot {
        /// The snapshot.
        meta: SnapshotMeta,
        /// Whether the entries after `meta.index` were kept (else the log was cleared).
        kept: bool,
    },
    /// The state the segment starts from.
    Checkpoint(Checkpoint),
    /// The configuration in force at `index`.
    Membership(Index, Membership),
}

fn hard_state_len(hs: &HardState) -> usize {
    8 + 1 + hs.voted_for.as_ref().map_or(0, |v| 4 + v.len())
}

fn encode_hard_state(hs: &HardState, buf: &mut Vec<u8>) -> Result<()> {
    buf.extend_from_slice(&hs.current_term.to_le_bytes());
    match &hs.voted_for {
        None => buf.push(0),
        Some(v) => {
            buf.push(1);
            buf.extend_from_slice(&len_u32(v.len())?.to_le_bytes());
            buf.extend_from_slice(v.as_bytes());
        }
    }
    Ok(())
}

impl RecordRef<'_> {
    /// Size of the encoded payload (`kind`, `seq` and body), without the frame header.
    pub fn payload_len(&self) -> usize {
        1 + 8
            + match self {
                RecordRef::HardState(hs) => hard_state_len(hs),
                RecordRef::Append { entries, .. } => {
                    8 + 4 + entries.iter().map(|e| 8 + 4 + e.command.len()).sum::<usize>()
                }
                RecordRef::Truncate(_) => 8,
                RecordRef::Snapshot(_) | RecordRef::Compact { .. } => 16,
                RecordRef::InstallSnapshot { .. } => 17,
                RecordRef::Checkpoint(cp) => {
                    hard_state_len(&cp.hard_state)
                        + 1
                        + cp.snapshot.map_or(0, |_| 16)
                        + 24
                        + cp.membership
                            .as_ref()
                            .map_or(0, |(_, m)| 1 + 12 + membership_json(m).len())
                }
                RecordRef::Membership { json, .. } => 12 + json.len(),
            }
    }

    fn encode_payload(&self, seq: u64, buf: &mut Vec<u8>) -> Result<()> {
        match self {
            RecordRef::HardState(hs) => {
                buf.push(KIND_HARD_STATE);
                buf.extend_from_slice(&seq.to_le_bytes());
                encode_hard_state(hs, buf)?;
            }
            RecordRef::Append { first_index, entries } => {
                buf.push(KIND_APPEND);
                buf.extend_from_slice(&seq.to_le_bytes());
                buf.extend_from_slice(&first_index.to_le_bytes());
                buf.extend_from_slice(&len_u32(entries.len())?.to_le_bytes());
                for e in *entries {
                    buf.extend_from_slice(&e.term.to_le_bytes());
                    buf.extend_from_slice(&len_u32(e.command.len())?.to_le_bytes());
                    buf.extend_from_slice(&e.command);
                }
            }
            RecordRef::Truncate(from) => {
                buf.push(KIND_TRUNCATE);
                buf.extend_from_slice(&seq.to_le_bytes());
                buf.extend_from_slice(&from.to_le_bytes());
            }
            RecordRef::Snapshot(meta) => {
                buf.push(KIND_SNAPSHOT);
                buf.extend_from_slice(&seq.to_le_bytes());
                buf.extend_from_slice(&meta.index.to_le_bytes());
                buf.extend_from_slice(&meta.term.to_le_bytes());
            }
            RecordRef::Compact { index, term } => {
                buf.push(KIND_COMPACT);
                buf.extend_from_slice(&seq.to_le_bytes());
                buf.extend_from_slice(&index.to_le_bytes());
                buf.extend_from_slice(&term.to_le_bytes());
            }
            RecordRef::InstallSnapshot { meta, kept } => {
                buf.push(KIND_INSTALL);
                buf.extend_from_slice(&seq.to_le_bytes());
                buf.extend_from_slice(&meta.index.to_le_bytes());
                buf.extend_from_slice(&meta.term.to_le_bytes());
                buf.push(u8::from(*kept));
            }
            RecordRef::Checkpoint(cp) => {
                buf.push(KIND_CHECKPOINT);
                buf.extend_from_slice(&seq.to_le_bytes());
                encode_hard_state(&cp.hard_state, buf)?;
                match cp.snapshot {
                    None => buf.push(0),
                    Some(meta) => {
                        buf.push(1);
                        buf.extend_from_slice(&meta.index.to_le_bytes());
                        buf.extend_from_slice(&meta.term.to_le_bytes());
                    }
                }
                buf.extend_from_slice(&cp.compacted.to_le_bytes());
                buf.extend_from_slice(&cp.compacted_term.to_le_bytes());
                buf.extend_from_slice(&cp.last_index.to_le_bytes());
                if let Some((index, m)) = &cp.membership {
                    buf.push(1);
                    encode_membership(*index, &membership_json(m), buf)?;
                }
            }
            RecordRef::Membership { index, json } => {
                buf.push(KIND_MEMBERSHIP);
                buf.extend_from_slice(&seq.to_le_bytes());
                encode_membership(*index, json, buf)?;
            }
        }
        Ok(())
    }
}

/// A configuration as the JSON a membership record holds.
pub fn membership_json(m: &Membership) -> Vec<u8> {
    // Serialising a struct of strings and maps cannot fail.
    serde_json::to_vec(m).unwrap_or_default()
}

fn encode_membership(index: Index, json: &[u8], buf: &mut Vec<u8>) -> Result<()> {
    buf.extend_from_slice(&index.to_le_bytes());
    buf.extend_from_slice(&len_u32(json.len())?.to_le_bytes());
    buf.extend_from_slice(json);
    Ok(())
}

fn len_u32(len: usize) -> Result<u32> {
    u32::try_from(len)
        .map_err(|_| Error::Internal(format!("{len} bytes is too large for a WAL record field")))
}

/// Replaces `buf` with the framed record `[length][crc][payload]` for sequence number `seq`.
pub fn encode_frame(buf: &mut Vec<u8>, seq: u64, record: &RecordRef<'_>) -> Result<()> {
    buf.clear();
    buf.reserve(FRAME_HEADER_LEN + record.payload_len());
    buf.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    record.encode_payload(seq, buf)?;
    let len = buf.len() - FRAME_HEADER_LEN;
    if len > MAX_PAYLOAD_LEN {
        return Err(Error::Internal(format!(
            "a WAL record of {len} bytes is over the {MAX_PAYLOAD_LEN}-byte limit"
        )));
    }
    let crc = crc32fast::hash(&buf[FRAME_HEADER_LEN..]);
    buf[0..4].copy_from_slice(&(len as u32).to_le_bytes());
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// A bounds-checked little-endian reader over a payload. Every read says what was missing.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end =
            self.pos.checked_add(n).filter(|&end| end <= self.buf.len()).ok_or_else(|| {
                format!(
                    "payload ends inside the {what} ({n} bytes needed at payload byte {}, {} left)",
                    self.pos,
                    self.buf.len() - self.pos
                )
            })?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let mut a = [0; 4];
        a.copy_from_slice(self.take(4, what)?);
        Ok(u32::from_le_bytes(a))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        let mut a = [0; 8];
        a.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_le_bytes(a))
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn flag(&mut self, what: &str) -> Result<bool, String> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(format!("{what} is {other}, not 0 or 1")),
        }
    }

    fn hard_state(&mut self) -> Result<HardState, String> {
        let current_term = self.u64("term")?;
        let voted_for = if self.flag("vote flag")? {
            let len = self.u32("vote length")? as usize;
            let bytes = self.take(len, "voted-for node id")?;
            Some(
                String::from_utf8(bytes.to_vec())
                    .map_err(|_| "voted-for node id is not UTF-8".to_string())?,
            )
        } else {
            None
        };
        Ok(HardState { current_term, voted_for })
    }

    fn membership(&mut self) -> Result<(Index, Membership), String> {
        let index = self.u64("membership index")?;
        let len = self.u32("membership length")? as usize;
        let json = self.take(len, "membership")?;
        let m =
            serde_json::from_slice(json).map_err(|e| format!("membership is not valid: {e}"))?;
        Ok((index, m))
    }

    fn snapshot_meta(&mut self) -> Result<SnapshotMeta, String> {
        Ok(SnapshotMeta { index: self.u64("snapshot index")?, term: self.u64("snapshot term")? })
    }
}

fn decode_payload(payload: &[u8]) -> Result<(u64, Record), String> {
    let mut r = Reader { buf: payload, pos: 0 };
    let kind = r.u8("record kind")?;
    let seq = r.u64("sequence number")?;
    let record = match kind {
        KIND_HARD_STATE => Record::HardState(r.hard_state()?),
        KIND_APPEND => {
            let first_index = r.u64("first index")?;
            let count = r.u32("entry count")? as usize;
            // Each entry takes at least 12 bytes: never pre-allocate more than the payload allows.
            let mut entries = Vec::with_capacity(count.min(r.remaining() / 12));
            for i in 0..count {
                let term = r.u64("entry term")?;
                let len = r.u32("command length")? as usize;
                let command = r.take(len, "command")?.to_vec();
                let index = first_index
                    .checked_add(i as u64)
                    .ok_or_else(|| format!("entry index overflows after {first_index}"))?;
                entries.push(Entry { index, term, command });
            }
            Record::Append { first_index, entries }
        }
        KIND_TRUNCATE => Record::Truncate(r.u64("truncate index")?),
        KIND_SNAPSHOT => Record::Snapshot(r.snapshot_meta()?),
        KIND_COMPACT => {
            Record::Compact { index: r.u64("compact index")?, term: r.u64("compact term")? }
        }
        KIND_INSTALL => {
            Record::InstallSnapshot { meta: r.snapshot_meta()?, kept: r.flag("kept flag")? }
        }
        KIND_CHECKPOINT => {
            let hard_state = r.hard_state()?;
            let snapshot = if r.flag("snapshot flag")? { Some(r.snapshot_meta()?) } else { None };
            Record::Checkpoint(Checkpoint {
                hard_state,
                snapshot,
                compacted: r.u64("compaction index")?,
                compacted_term: r.u64("compaction term")?,
                last_index: r.u64("last index")?,
                membership: match r.remaining() {
                    0 => None,
                    _ if r.flag("membership flag")? => Some(r.membership()?),
                    _ => None,
                },
            })
        }
        KIND_MEMBERSHIP => {
            let (index, m) = r.membership()?;
            Record::Membership(index, m)
        }
        other => return Err(format!("unknown record kind {other}")),
    };
    if r.remaining() != 0 {
        return Err(format!("{} unexpected bytes after the record body", r.remaining()));
    }
    Ok((seq, record))
}

/// A record decoded from a segment buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// The record's sequence number.
    pub seq: u64,
    /// The record.
    pub record: Record,
    /// Total size on disk, frame header included.
    pub frame_len: usize,
}

/// Decodes the record framed at `buf[offset..]`, checking its length and CRC. The error says what
/// is wrong, for messages.
pub fn decode_frame(buf: &[u8], offset: usize) -> Result<Decoded, String> {
    let rest = buf.get(offset..).unwrap_or(&[]);
    if rest.len() < FRAME_HEADER_LEN {
        return Err(format!(
            "record header cut short ({} of {FRAME_HEADER_LEN} bytes)",
            rest.len()
        ));
    }
    let mut r = Reader { buf: rest, pos: 0 };
    let len = r.u32("length")? as usize;
    let stored_crc = r.u32("crc")?;
    if len == 0 {
        return Err("record length is zero".to_string());
    }
    if len > MAX_PAYLOAD_LEN {
        return Err(format!("record length {len} is over the {MAX_PAYLOAD_LEN}-byte limit"));
    }
    if r.remaining() < len {
        return Err(format!("record payload cut short ({} of {len} bytes)", r.remaining()));
    }
    let payload = r.take(len, "payload")?;
    let crc = crc32fast::hash(payload);
    if crc != stored_crc {
        return Err(format!(
            "CRC mismatch (stored {stored_crc:#010x}, computed {crc:#010x} over {len} bytes)"
        ));
    }
    let (seq, record) = decode_payload(payload)?;
    Ok(Decoded { seq, record, frame_len: FRAME_HEADER_LEN + len })
}

/// One record found by [`scan_segment`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scanned {
    /// Byte offset of the record's frame in the segment file.
    pub offset: usize,
    /// The record's sequence number.
    pub seq: u64,
    /// Size on disk, frame header included.
    pub frame_len: usize,
    /// The record.
    pub record: Record,
}

/// How a segment scan ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanEnd {
    /// Every byte belonged to a valid record.
    Clean,
    /// Bytes from `offset` to the end are not a valid record and nothing valid follows them: a
    /// write cut short by a crash (if this is the last segment).
    Torn {
        /// Where the bad bytes start (everything before is valid).
        offset: usize,
        /// What is wrong with them.
        reason: String,
    },
    /// The record at `offset` is bad and valid records follow it, or it is a valid record that
    /// does not fit (wrong sequence number, rejected by the visitor): damage, not a crash.
    Corrupt {
        /// Byte offset of the bad record.
        offset: usize,
        /// What is wrong with it.
        reason: String,
    },
}

/// What [`scan_segment`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanResult {
    /// How the scan ended.
    pub end: ScanEnd,
    /// Number of valid records passed to the visitor.
    pub records: u64,
    /// Length of the valid prefix of the segment (header and valid records).
    pub valid_len: usize,
}

/// Walks the records of one segment (its whole contents in `buf`), whose first record must have
/// sequence number `first_seq`, calling `visit` on each valid record in order. Stops at the first
/// bad record, or when `visit` refuses one (its error becomes [`ScanEnd::Corrupt`]).
pub fn scan_segment(
    buf: &[u8],
    first_seq: u64,
    mut visit: impl FnMut(Scanned) -> Result<(), String>,
) -> ScanResult {
    let mut result = ScanResult { end: ScanEnd::Clean, records: 0, valid_len: 0 };
    if buf.len() < SEGMENT_HEADER_LEN {
        result.end = if buf == &SEGMENT_MAGIC[..buf.len()] {
            ScanEnd::Torn {
                offset: 0,
                reason: format!(
                    "segment header cut short ({} of {SEGMENT_HEADER_LEN} bytes)",
                    buf.len()
                ),
            }
        } else {
            ScanEnd::Corrupt { offset: 0, reason: "not a WAL segment (bad magic)".to_string() }
        };
        return result;
    }
    if buf[..SEGMENT_HEADER_LEN] != SEGMENT_MAGIC {
        let reason = if buf[..SEGMENT_HEADER_LEN - 1] == SEGMENT_MAGIC[..SEGMENT_HEADER_LEN - 1] {
            format!(
                "unsupported WAL format version {} (this build reads version {})",
                buf[SEGMENT_HEADER_LEN - 1],
                SEGMENT_MAGIC[SEGMENT_HEADER_LEN - 1]
            )
        } else {
            "not a WAL segment (bad magic)".to_string()
        };
        result.end = ScanEnd::Corrupt { offset: 0, reason };
        return result;
    }
    let mut offset = SEGMENT_HEADER_LEN;
    result.valid_len = offset;
    while offset < buf.len() {
        let expected_seq = first_seq + result.records;
        let decoded = match decode_frame(buf, offset) {
            Ok(d) => d,
            Err(reason) => {
                result.end = if valid_record_follows(buf, offset, expected_seq) {
                    ScanEnd::Corrupt { offset, reason }
                } else {
                    ScanEnd::Torn { offset, reason }
                };
                return result;
            }
        };
        if decoded.seq != expected_seq {
            result.end = ScanEnd::Corrupt {
                offset,
                reason: format!(
                    "record has sequence number {} where {expected_seq} was expected",
                    decoded.seq
                ),
            };
            return result;
        }
        let scanned = Scanned {
            offset,
            seq: decoded.seq,
            frame_len: decoded.frame_len,
            record: decoded.record,
        };
        if let Err(reason) = visit(scanned) {
            result.end = ScanEnd::Corrupt { offset, reason };
            return result;
        }
        result.records += 1;
        offset += decoded.frame_len;
        result.valid_len = offset;
    }
    result
}

/// True if a valid record with sequence number `>= min_seq` starts anywhere after `bad_offset`
/// (where an invalid record sits). First tries where the bad record's own length field says the
/// next one starts (the common case of a flipped payload bit), then every byte.
fn valid_record_follows(buf: &[u8], bad_offset: usize, min_seq: u64) -> bool {
    let valid_at = |at: usize| decode_frame(buf, at).is_ok_and(|d| d.seq >= min_seq);
    if let Some(header) = buf.get(bad_offset..bad_offset + 4) {
        let mut a = [0; 4];
        a.copy_from_slice(header);
        let next = bad_offset + FRAME_HEADER_LEN + u32::from_le_bytes(a) as usize;
        if next + FRAME_HEADER_LEN <= buf.len() && valid_at(next) {
            return true;
        }
    }
    (bad_offset + 1..buf.len().saturating_sub(FRAME_HEADER_LEN - 1)).any(valid_at)
}

/// The file name of the segment whose first record has sequence number `first_seq`.
pub fn segment_name(first_seq: u64) -> String {
    format!("wal-{first_seq:020}.log")
}

/// The first sequence number encoded in a segment file name, if it is one.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("wal-")?.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segments in `dir`, sorted by first sequence number. Other files are ignored, except ones
/// that look like segments but are misnamed (`wal-*.log`), which are an error.
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let read = fs::read_dir(dir)
        .map_err(|e| Error::Storage(format!("cannot list data dir {}: {e}", dir.display())))?;
    let mut segments = Vec::new();
    for item in read {
        let item = item
            .map_err(|e| Error::Storage(format!("cannot list data dir {}: {e}", dir.display())))?;
        let name = item.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(seq) = parse_segment_name(name) {
            segments.push((seq, item.path()));
        } else if name.starts_with("wal-") && name.ends_with(".log") {
            return Err(Error::Storage(format!(
                "unexpected file {} in the data dir: it looks like a WAL segment but its name is \
                 not wal-<20 digits>.log; move it away",
                item.path().display()
            )));
        }
    }
    segments.sort();
    Ok(segments)
}

#[cfg(test)]
mod tests;
