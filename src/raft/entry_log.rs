//! The part of the log both storages keep in memory: entries `offset + 1 ..= offset + len`, and the
//! term of `offset` (the last compacted entry) so the AppendEntries consistency check still works
//! at the boundary. [`super::MemStorage`] is just this; `crate::storage::DurableStorage` adds the WAL.

use crate::error::{Error, Result};
use crate::raft::{Entry, Index, SnapshotMeta, Term};

/// In-memory entries after a compaction point.
#[derive(Clone, Debug, Default)]
pub(crate) struct EntryLog {
    /// Entries `offset + 1 ..= offset + entries.len()`.
    entries: Vec<Entry>,
    /// Index of the last entry before `entries` (0 until compaction).
    offset: Index,
    /// Term of the entry at `offset`.
    offset_term: Term,
}

impl EntryLog {
    /// Entries `offset + 1 ..` after a compaction point `(offset, offset_term)`.
    pub(crate) fn new(entries: Vec<Entry>, offset: Index, offset_term: Term) -> Self {
        EntryLog { entries, offset, offset_term }
    }

    /// The compaction point: the last index no longer held.
    pub(crate) fn offset(&self) -> Index {
        self.offset
    }

    /// Term of the compaction point.
    pub(crate) fn offset_term(&self) -> Term {
        self.offset_term
    }

    pub(crate) fn first_index(&self) -> Index {
        self.offset + 1
    }

    pub(crate) fn last_index(&self) -> Index {
        self.offset + self.entries.len() as Index
    }

    pub(crate) fn term(&self, index: Index) -> Option<Term> {
        if index == self.offset {
            return Some(self.offset_term);
        }
        if index < self.offset || index > self.last_index() {
            return None;
        }
        Some(self.entries[(index - self.offset - 1) as usize].term)
    }

    /// Entries `lo..hi`, stopping once `max_bytes` is exceeded but returning at least one.
    pub(crate) fn entries(&self, lo: Index, hi: Index, max_bytes: usize) -> Result<Vec<Entry>> {
        if lo < self.first_index() || hi > self.last_index() + 1 || lo > hi {
            return Err(Error::Internal(format!(
                "entries({lo}..{hi}) outside the log {}..={}",
                self.first_index(),
                self.last_index()
            )));
        }
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

    /// Refuses entries that do not continue the log contiguously (before anything is written).
    pub(crate) fn check_append(&self, entries: &[Entry]) -> Result<()> {
        for (next, e) in (self.last_index() + 1..).zip(entries) {
            if e.index != next {
                return Err(Error::Internal(format!(
                    "append of index {} where {next} was expected",
                    e.index
                )));
            }
        }
        Ok(())
    }

    /// Appends entries already checked with [`EntryLog::check_append`].
    pub(crate) fn extend(&mut self, entries: &[Entry]) {
        self.entries.extend_from_slice(entries);
    }

    /// Checks a compaction through `index` (before anything is written): `None` if the log is
    /// compacted that far already, else the term of `index`. It must be covered by `snapshot`.
    pub(crate) fn check_compact(
        &self,
        index: Index,
        snapshot: Option<SnapshotMeta>,
    ) -> Result<Option<Term>> {
        if index <= self.offset {
            return Ok(None);
        }
        if index > self.last_index() || snapshot.is_none_or(|s| index > s.index) {
            return Err(Error::Internal(format!(
                "cannot compact through {index}: not snapshotted"
            )));
        }
        Ok(Some(self.term(index).unwrap_or(0)))
    }

    /// Refuses a truncation that would cut into the compacted part.
    pub(crate) fn check_truncate(&self, from: Index) -> Result<()> {
        if from <= self.offset {
            return Err(Error::Internal(format!(
                "truncate from {from} would cut into the snapshot at {}",
                self.offset
            )));
        }
        Ok(())
    }

    /// Drops every entry from `from` on (checked with [`EntryLog::check_truncate`]).
    pub(crate) fn truncate(&mut self, from: Index) {
        let keep = (from - self.offset - 1).min(self.entries.len() as Index) as usize;
        self.entries.truncate(keep);
    }

    /// Makes `(index, term)` the compaction point, removing the entries up to it, and returns
    /// them. The caller decides where they are freed: after a snapshot of a large state that is
    /// a million allocations, too slow to free under the Raft lock.
    #[must_use = "the removed entries are returned to be dropped elsewhere"]
    pub(crate) fn remove_through(&mut self, index: Index, term: Term) -> Vec<Entry> {
        let n = (index.saturating_sub(self.offset) as usize).min(self.entries.len());
        self.offset = index;
        self.offset_term = term;
        // Keep the tail in a new, right-sized vector (with room to grow as much again) and hand
        // back the old one, whose memory goes with it.
        let mut kept = Vec::with_capacity(2 * (self.entries.len() - n));
        kept.extend(self.entries.drain(n..));
        std::mem::replace(&mut self.entries, kept)
    }

    /// Removes every entry and returns them (see [`EntryLog::remove_through`]).
    #[must_use = "the removed entries are returned to be dropped elsewhere"]
    pub(crate) fn remove_all(&mut self) -> Vec<Entry> {
        std::mem::take(&mut self.entries)
    }

    /// Number of entries held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Capacity of the entry buffer (tests check that memory is given back).
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.entries.capacity()
    }
}
