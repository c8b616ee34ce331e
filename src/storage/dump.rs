//! [`dump`]: a read-only print of a data dir (`raftlabkv-server dump --data-dir D [--json]`),
//! every WAL record, the snapshot files and the state they add up to, as text or as one JSON
//! object per line.
//!
//! The log is read with the same segment walk as recovery (`durable::replay`), so the dump
//! reports exactly what [`DurableStorage::open`](super::DurableStorage::open) would cut off or
//! refuse. Each thing it prints is one `Line`: its [`Display`](std::fmt::Display) is the text
//! form, its `Serialize` the JSON form.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::Path;

use serde::Serialize;

use super::TornTail;
use super::durable::SNAPSHOT_DIR;
use super::durable::replay::{self, Damage, Visitor, Walked, remedy};
use super::snapshot::{self, Check};
use super::wal::{self, Record, Scanned};
use crate::error::{Error, Result};
use crate::raft::{HardState, Index, SnapshotMeta, Term};

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
    let mut printer = Printer { out, json, segment: String::new(), problems: Vec::new() };
    let walked = replay::walk(dir, &mut printer)?;
    printer.snapshot_files(dir, walked.replay.snapshot)?;
    printer.summary(&walked)?;
    if printer.problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Storage(format!(
            "the data dir {} is damaged: {}. To recover, {}",
            dir.display(),
            printer.problems.join("; "),
            remedy(dir)
        )))
    }
}

/// The file name of `path`, for printing.
fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

/// Up to 40 bytes of a command, printable: ASCII as is, anything else as `\xNN`.
/// A configuration in one line: `cluster=ID voters=a@addr,b@addr learners=-`.
fn describe_membership(m: &crate::raft::Membership) -> String {
    let list = |members: &std::collections::BTreeMap<String, String>| {
        if members.is_empty() {
            return "-".to_string();
        }
        let each: Vec<String> = members.iter().map(|(id, a)| format!("{id}@{a}")).collect();
        each.join(",")
    };
    format!("cluster={} voters={} learners={}", m.cluster_id, list(&m.voters), list(&m.learners))
}

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

/// Where a record is: its segment, its byte offset there, its sequence number.
#[derive(Serialize)]
struct At<'a> {
    segment: &'a str,
    offset: usize,
    seq: u64,
}

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "  @{:<10} #{:<8} ", self.offset, self.seq)
    }
}

/// One thing the dump prints: a text line (its `Display`) or a JSON object (its `Serialize`,
/// with the variant's name as `"kind"`).
#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Line<'a> {
    /// Segments are missing before `next_segment`, from record `first_seq` on.
    MissingSegment {
        /// The missing segment's name, or a description of the missing ones.
        segment: String,
        first_seq: u64,
        next_segment: String,
        /// The first record of `next_segment`.
        #[serde(skip)]
        next_seq: u64,
    },
    Segment {
        segment: &'a str,
        first_seq: u64,
        bytes: usize,
    },
    HardState {
        #[serde(flatten)]
        at: At<'a>,
        term: Term,
        voted_for: Option<&'a str>,
    },
    Checkpoint {
        #[serde(flatten)]
        at: At<'a>,
        term: Term,
        voted_for: Option<&'a str>,
        snapshot: Option<SnapshotMeta>,
        compacted: Index,
        compacted_term: Term,
        last_index: Index,
        #[serde(skip_serializing_if = "Option::is_none")]
        membership: Option<String>,
    },
    /// One entry of an append record.
    Entry {
        #[serde(flatten)]
        at: At<'a>,
        index: Index,
        term: Term,
        len: usize,
        preview: String,
        #[serde(skip)]
        noop: bool,
        /// A configuration entry: its members.
        #[serde(skip_serializing_if = "Option::is_none")]
        config: Option<String>,
    },
    /// The configuration in force at the start of the log (saved before a compaction).
    Membership {
        #[serde(flatten)]
        at: At<'a>,
        index: Index,
        config: String,
    },
    /// An append record with no entries.
    Append {
        #[serde(flatten)]
        at: At<'a>,
        first_index: Index,
        count: usize,
    },
    Truncate {
        #[serde(flatten)]
        at: At<'a>,
        from: Index,
    },
    Snapshot {
        #[serde(flatten)]
        at: At<'a>,
        index: Index,
        term: Term,
    },
    Compact {
        #[serde(flatten)]
        at: At<'a>,
        index: Index,
        term: Term,
    },
    InstallSnapshot {
        #[serde(flatten)]
        at: At<'a>,
        index: Index,
        term: Term,
        kept: bool,
    },
    TornTail {
        segment: &'a str,
        offset: u64,
        bytes: u64,
        reason: &'a str,
    },
    Corrupt {
        segment: &'a str,
        offset: usize,
        bytes: usize,
        reason: &'a str,
        #[serde(skip)]
        path: &'a Path,
    },
    MissingEntries {
        first: Index,
        last: Index,
    },
    SnapshotFile(SnapshotFile<'a>),
    MissingSnapshotFile {
        file: &'a str,
        index: Index,
        term: Term,
    },
    Summary(Summary<'a>),
}

/// A snapshot file and what checking it found.
#[derive(Serialize)]
struct SnapshotFile<'a> {
    file: &'a str,
    bytes: u64,
    index: Index,
    term: Term,
    ok: bool,
    offset: Option<u64>,
    reason: Option<&'a str>,
    recorded: bool,
    /// What opening the dir would make of the file (text only).
    #[serde(skip)]
    note: &'static str,
    /// Whether it is the newest file (the one `open` checks).
    #[serde(skip)]
    newest: bool,
    #[serde(skip)]
    path: &'a Path,
}

impl fmt::Display for SnapshotFile<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (file, bytes, note) = (self.file, self.bytes, self.note);
        match (self.offset, self.reason) {
            (Some(offset), Some(reason)) => write!(
                f,
                "!! snapshot file {file} ({bytes} bytes) CORRUPT at byte offset {offset}: \
                 {reason}{note}"
            ),
            _ => write!(f, "snapshot file {file} ({bytes} bytes): ok{note}"),
        }
    }
}

/// The state the log adds up to, last.
#[derive(Serialize)]
struct Summary<'a> {
    term: Term,
    voted_for: Option<&'a str>,
    first_index: Index,
    last_index: Index,
    snapshot: Option<SnapshotMeta>,
    records: u64,
    segments: usize,
    problems: usize,
}

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let voted_for = self.voted_for.unwrap_or("nobody");
        writeln!(f, "hard state: term {}, voted for {voted_for}", self.term)?;
        match self.snapshot {
            Some(s) => writeln!(f, "snapshot: through index {} (term {})", s.index, s.term)?,
            None => writeln!(f, "snapshot: none")?,
        }
        let (first, last) = (self.first_index, self.last_index);
        write!(
            f,
            "log: {} entries ({first}..={last}), {} records in {} segments",
            (last + 1).saturating_sub(first),
            self.records,
            self.segments
        )
    }
}

impl Line<'_> {
    /// The lines of one record (an append prints one per entry).
    fn of_record<'a>(segment: &'a str, s: &'a Scanned) -> Vec<Line<'a>> {
        let at = At { segment, offset: s.offset, seq: s.seq };
        let line = match &s.record {
            Record::HardState(hs) => {
                let (term, voted_for) = term_and_vote(hs);
                Line::HardState { at, term, voted_for }
            }
            Record::Checkpoint(cp) => {
                let (term, voted_for) = term_and_vote(&cp.hard_state);
                Line::Checkpoint {
                    at,
                    term,
                    voted_for,
                    snapshot: cp.snapshot,
                    compacted: cp.compacted,
                    compacted_term: cp.compacted_term,
                    last_index: cp.last_index,
                    membership: cp
                        .membership
                        .as_ref()
                        .map(|(i, m)| format!("{} at {i}", describe_membership(m))),
                }
            }
            Record::Append { first_index, entries } if entries.is_empty() => {
                Line::Append { at, first_index: *first_index, count: 0 }
            }
            Record::Append { entries, .. } => {
                let entry = |e: &crate::raft::Entry| Line::Entry {
                    at: At { segment, offset: s.offset, seq: s.seq },
                    index: e.index,
                    term: e.term,
                    len: e.command.len(),
                    preview: preview(&e.command),
                    noop: e.is_noop(),
                    config: e.membership().map(|m| describe_membership(&m)),
                };
                return entries.iter().map(entry).collect();
            }
            Record::Truncate(from) => Line::Truncate { at, from: *from },
            Record::Snapshot(meta) => Line::Snapshot { at, index: meta.index, term: meta.term },
            Record::Membership(index, m) => {
                Line::Membership { at, index: *index, config: describe_membership(m) }
            }
            Record::Compact { index, term } => Line::Compact { at, index: *index, term: *term },
            Record::InstallSnapshot { meta, kept } => {
                Line::InstallSnapshot { at, index: meta.index, term: meta.term, kept: *kept }
            }
        };
        vec![line]
    }

    /// The problem this line reports, if it reports one: damage that `open` would refuse.
    fn problem(&self) -> Option<String> {
        match self {
            Line::MissingSegment { .. } | Line::MissingEntries { .. } => Some(self.missing()),
            Line::Corrupt { offset, reason, path, .. } => {
                Some(format!("{} at byte offset {offset}: {reason}", path.display()))
            }
            Line::SnapshotFile(SnapshotFile {
                offset: Some(offset),
                reason: Some(reason),
                newest: true,
                path,
                ..
            }) => Some(format!("{} at byte offset {offset}: {reason}", path.display())),
            Line::MissingSnapshotFile { file, .. } => {
                Some(format!("the recorded snapshot file {file} is missing"))
            }
            _ => None,
        }
    }

    /// What is missing, for a missing segment or missing entries.
    fn missing(&self) -> String {
        match self {
            Line::MissingSegment { segment, first_seq, next_seq, .. } => {
                format!("missing segment {segment} (records {first_seq}..{next_seq})")
            }
            Line::MissingEntries { first, last } => format!(
                "entries {first}..={last} are in no segment and no snapshot (segments before the \
                 first one are missing)"
            ),
            _ => String::new(),
        }
    }
}

fn term_and_vote(hs: &HardState) -> (Term, Option<&str>) {
    (hs.current_term, hs.voted_for.as_deref())
}

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Line::MissingSegment { .. } | Line::MissingEntries { .. } => {
                write!(f, "!! {}", self.missing())
            }
            Line::Segment { segment, first_seq, bytes } => {
                write!(f, "segment {segment} ({bytes} bytes, first record {first_seq})")
            }
            Line::HardState { at, term, voted_for } => {
                write!(f, "{at}hard_state term={term} voted_for={}", voted_for.unwrap_or("-"))
            }
            Line::Checkpoint {
                at,
                term,
                voted_for,
                snapshot,
                compacted,
                compacted_term,
                last_index,
                membership,
            } => {
                write!(
                    f,
                    "{at}checkpoint term={term} voted_for={} snapshot={} compacted={compacted} \
                     (term {compacted_term}) last_index={last_index}",
                    voted_for.unwrap_or("-"),
                    snapshot.map_or("-".to_string(), |s| format!("{}/{}", s.index, s.term)),
                )?;
                match membership {
                    Some(m) => write!(f, " membership: {m}"),
                    None => Ok(()),
                }
            }
            Line::Entry { at, index, term, len, preview, noop, config } => {
                write!(f, "{at}entry index={index} term={term} len={len} ")?;
                match config {
                    Some(c) => write!(f, "(configuration: {c})"),
                    None if *noop => write!(f, "(no-op)"),
                    None => write!(f, "\"{preview}\""),
                }
            }
            Line::Membership { at, index, config } => {
                write!(f, "{at}membership_base index={index} {config}")
            }
            Line::Append { at, first_index, .. } => {
                write!(f, "{at}append (no entries) at {first_index}")
            }
            Line::Truncate { at, from } => write!(f, "{at}truncate from={from}"),
            Line::Snapshot { at, index, term } => {
                write!(f, "{at}snapshot index={index} term={term}")
            }
            Line::Compact { at, index, term } => {
                write!(f, "{at}compact through={index} term={term}")
            }
            Line::InstallSnapshot { at, index, term, kept } => write!(
                f,
                "{at}install_snapshot index={index} term={term} {}",
                if *kept { "(kept the entries after it)" } else { "(cleared the log)" }
            ),
            Line::TornTail { offset, bytes, reason, .. } => write!(
                f,
                "  @{offset:<10} torn tail: {reason} ({bytes} bytes; opening the dir would cut \
                 them off)"
            ),
            Line::Corrupt { offset, bytes, reason, .. } => write!(
                f,
                "!! @{offset:<10} CORRUPT: {reason} (the remaining {bytes} bytes of this segment \
                 are not shown)"
            ),
            Line::SnapshotFile(file) => file.fmt(f),
            Line::MissingSnapshotFile { file, .. } => {
                write!(f, "!! snapshot file {file}, which the log records, is missing")
            }
            Line::Summary(summary) => summary.fmt(f),
        }
    }
}

/// The dump's side of the walk: prints every line, and notes the problems.
struct Printer<'o> {
    out: &'o mut dyn Write,
    json: bool,
    /// The name of the segment being walked.
    segment: String,
    /// What `open` would refuse, for the error at the end.
    problems: Vec<String>,
}

impl Printer<'_> {
    fn print(&mut self, line: &Line<'_>) -> Result<()> {
        if let Some(problem) = line.problem() {
            self.problems.push(problem);
        }
        let written = if self.json {
            let value = serde_json::to_value(line)
                .map_err(|e| Error::Internal(format!("cannot encode a dump line: {e}")))?;
            writeln!(self.out, "{value}")
        } else {
            writeln!(self.out, "{line}")
        };
        written.map_err(|e| Error::Storage(format!("cannot write the dump: {e}")))
    }

    /// Lists the snapshot files of `dir`, checking each one; problems are what `open` would
    /// refuse (the newest file damaged, the recorded snapshot's file missing).
    fn snapshot_files(&mut self, dir: &Path, recorded: Option<SnapshotMeta>) -> Result<()> {
        let files = snapshot::list_snapshot_files(&dir.join(SNAPSHOT_DIR))?;
        for (i, (meta, path)) in files.iter().enumerate() {
            let newest = i + 1 == files.len();
            let damage = match snapshot::check_file(path, *meta)? {
                Check::Valid { .. } => None,
                Check::Damaged { offset, reason } => Some((offset, reason)),
            };
            let note = match recorded {
                Some(r) if r == *meta => " (the snapshot the log records)",
                Some(r) if newest && meta.index > r.index => {
                    " (newer than the log's record: opening the dir installs it)"
                }
                None if newest => " (the log records none: opening the dir installs it)",
                _ => "",
            };
            self.print(&Line::SnapshotFile(SnapshotFile {
                file: &file_name(path),
                bytes: fs::metadata(path).map(|m| m.len()).unwrap_or(0),
                index: meta.index,
                term: meta.term,
                ok: damage.is_none(),
                offset: damage.as_ref().map(|(offset, _)| *offset),
                reason: damage.as_ref().map(|(_, reason)| reason.as_str()),
                recorded: Some(*meta) == recorded,
                note,
                newest,
                path,
            }))?;
        }
        let newest = files.last().map(|(m, _)| *m);
        if let Some(r) = recorded
            && newest.is_none_or(|n| n.index < r.index || (n.index == r.index && n != r))
        {
            let file = snapshot::snapshot_file_name(r);
            self.print(&Line::MissingSnapshotFile { file: &file, index: r.index, term: r.term })?;
        }
        Ok(())
    }

    /// The state the log adds up to, and how many problems were found.
    fn summary(&mut self, walked: &Walked) -> Result<()> {
        let replay = &walked.replay;
        let (term, voted_for) = term_and_vote(&replay.hard_state);
        let summary = Line::Summary(Summary {
            term,
            voted_for,
            first_index: replay.offset + 1,
            last_index: replay.last_index(),
            snapshot: replay.snapshot,
            records: walked.records,
            segments: walked.segments.len(),
            problems: self.problems.len(),
        });
        self.print(&summary)
    }
}

impl Visitor for Printer<'_> {
    fn segment(&mut self, path: &Path, first_seq: u64, bytes: &[u8]) -> Result<()> {
        self.segment = file_name(path);
        let segment = self.segment.clone();
        self.print(&Line::Segment { segment: &segment, first_seq, bytes: bytes.len() })
    }

    fn record(&mut self, record: &Scanned) -> Result<()> {
        let segment = std::mem::take(&mut self.segment);
        let printed = Line::of_record(&segment, record).iter().try_for_each(|l| self.print(l));
        self.segment = segment;
        printed
    }

    fn torn_tail(&mut self, tail: TornTail) -> Result<()> {
        let segment = file_name(&tail.segment);
        let (offset, bytes, reason) = (tail.offset, tail.discarded_bytes, &tail.reason);
        self.print(&Line::TornTail { segment: &segment, offset, bytes, reason })
    }

    fn damage(&mut self, damage: Damage) -> Result<()> {
        match damage {
            Damage::Gap { path, first_seq, expected_seq, .. } => {
                let name = file_name(&path);
                let missing = if first_seq == 0 {
                    format!("(the segments before {name}, whose name is not valid)")
                } else {
                    wal::segment_name(expected_seq)
                };
                self.print(&Line::MissingSegment {
                    segment: missing,
                    first_seq: expected_seq,
                    next_segment: name,
                    next_seq: first_seq,
                })
            }
            Damage::NoCheckpoint { path, first_seq } => {
                let name = file_name(&path);
                self.print(&Line::MissingSegment {
                    segment: format!("(the segments before {name}, which has no checkpoint)"),
                    first_seq,
                    next_segment: name,
                    next_seq: first_seq,
                })
            }
            Damage::Corrupt { path, offset, skipped, reason } => self.print(&Line::Corrupt {
                segment: &file_name(&path),
                offset,
                bytes: skipped,
                reason: &reason,
                path: &path,
            }),
            Damage::MissingEntries { first, last, .. } => {
                self.print(&Line::MissingEntries { first, last })
            }
        }
    }
}
