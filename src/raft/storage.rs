//! The port between the core and the disk: the [`Storage`] trait the core writes through, and
//! [`MemStorage`], the storage kept in memory.
//!
//! The core owns this interface (as etcd-io/raft's `storage.go` does): the durable write-ahead log
//! in `crate::storage` implements it, so imports run one way, storage → raft.
//!
//! The core calls a [`Storage`] while it holds the node's lock, so every call must be quick: an
//! implementation *writes* (into memory, or into the OS page cache) but does not wait for the disk.
//! Durability is a separate step the shell takes outside the lock: every mutating call bumps
//! [`Storage::write_seq`], and the core never lets a message that depends on unsynced state (a vote,
//! an append acknowledgement) out before the shell has synced through that number and called
//! [`super::RaftNode::persisted`]; see [`super::Output`].
//!
//! [`MemStorage`] serves the simulation (whose crash model loses what was not synced, see
//! `crate::sim`) and nodes run without a data directory.

use super::entry_log::EntryLog;
use crate::error::{Error, Result};
use crate::raft::{Entry, HardState, Index, Membership, SnapshotMeta, Term};

/// The log and hard state of one node, as the core sees them.
///
/// Indexes: entries `first_index()..=last_index()` are held. `term(first_index() - 1)` is still known
/// (it is the last entry covered by a snapshot, or index 0 with term 0), so the consistency check of
/// AppendEntries works at the boundary.
pub trait Storage: Send {
    /// The durable term and vote (as last written).
    fn hard_state(&self) -> HardState;
    /// Records a new term and vote.
    fn save_hard_state(&mut self, hard_state: &HardState) -> Result<()>;
    /// Index of the first entry held (1 until a snapshot compacts the log).
    fn first_index(&self) -> Index;
    /// Index of the last entry held (0 when the log is empty).
    fn last_index(&self) -> Index;
    /// Term of the entry at `index`, for `first_index() - 1 <= index <= last_index()`; `None` outside.
    fn term(&self, index: Index) -> Option<Term>;
    /// Entries in `lo..hi` (half-open), stopping early once `max_bytes` is exceeded, but always at
    /// least one entry when the range is not empty. Errors if `lo < first_index()` or `hi > last+1`.
    fn entries(&self, lo: Index, hi: Index, max_bytes: usize) -> Result<Vec<Entry>>;
    /// Appends entries; the first must have index `last_index() + 1` and indexes must be contiguous.
    fn append(&mut self, entries: &[Entry]) -> Result<()>;
    /// Removes every entry with index `>= from` (a follower's conflicting suffix, §5.3).
    fn truncate_suffix(&mut self, from: Index) -> Result<()>;
    /// Sequence number of the latest mutating call (append, truncate, hard state). Monotonic.
    /// The shell makes writes durable through it (`crate::storage::Syncer::sync_through`), outside
    /// the Raft lock; the core only reports it in [`super::SyncPoint`].
    fn write_seq(&self) -> u64;

    // ----- snapshots and compaction (§7) -----

    /// The latest snapshot this node holds durably, if any. Survives restarts.
    fn snapshot(&self) -> Option<SnapshotMeta>;
    /// Records that a snapshot through `meta` is now durable (the shell wrote and synced its data
    /// first), so the entries it covers may be compacted. `meta.index` must not exceed
    /// `last_index()` and must not go backwards.
    fn set_snapshot(&mut self, meta: SnapshotMeta) -> Result<()>;
    /// Drops every entry with index `<= index` (which must be `<= snapshot().index` and
    /// `<= last_index()`). Afterwards `first_index() == index + 1` and `term(index)` is still known.
    /// Implementations reclaim the space; a WAL only marks the segments wholly below `index`, and
    /// `Syncer::reclaim` (in the shell) deletes them later, without the caller's lock.
    fn compact(&mut self, index: Index) -> Result<()>;
    /// A follower installs a leader's snapshot: `meta` becomes the snapshot and the log starts
    /// right after it. If the log holds the entry `(meta.index, meta.term)`, the entries after it
    /// are kept (they agree with the leader's, by the Log Matching property); otherwise the whole
    /// log is dropped. Afterwards `first_index() == meta.index + 1`, `term(meta.index) ==
    /// Some(meta.term)`.
    fn install_snapshot(&mut self, meta: SnapshotMeta) -> Result<()>;

    // ----- membership (thesis chapter 4) -----

    /// The configuration in force at an index at or before the start of the log, and that index:
    /// what compaction or an installed snapshot would otherwise lose (configuration entries after
    /// it are in the log). `None` until the core first saves one. Survives restarts.
    fn membership_base(&self) -> Option<(Index, Membership)>;
    /// Records the configuration in force at `index`. The core calls it before compacting
    /// through `index` or installing a snapshot at `index`, so that whatever survives a crash,
    /// the configuration of the start of the log is known.
    fn save_membership_base(&mut self, index: Index, membership: &Membership) -> Result<()>;
}

/// A [`Storage`] kept in memory. `Clone` is the simulation's crash model: a clone taken after a
/// step holds exactly what that node had "made durable".
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    hard_state: HardState,
    /// The entries, after the compaction point.
    log: EntryLog,
    /// The latest snapshot recorded.
    snapshot: Option<SnapshotMeta>,
    /// The configuration in force at the start of the log.
    membership_base: Option<(Index, Membership)>,
    write_seq: u64,
}

impl MemStorage {
    /// An empty log and a zero hard state.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Storage for MemStorage {
    fn hard_state(&self) -> HardState {
        self.hard_state.clone()
    }

    fn save_hard_state(&mut self, hard_state: &HardState) -> Result<()> {
        self.hard_state = hard_state.clone();
        self.write_seq += 1;
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
        self.log.extend(entries);
        self.write_seq += 1;
        Ok(())
    }

    fn truncate_suffix(&mut self, from: Index) -> Result<()> {
        self.log.check_truncate(from)?;
        self.log.truncate(from);
        self.write_seq += 1;
        Ok(())
    }

    fn write_seq(&self) -> u64 {
        self.write_seq
    }

    fn snapshot(&self) -> Option<SnapshotMeta> {
        self.snapshot
    }

    fn set_snapshot(&mut self, meta: SnapshotMeta) -> Result<()> {
        if meta.index > self.last_index() || self.snapshot.is_some_and(|s| s.index > meta.index) {
            return Err(Error::Internal(format!("snapshot at {} is outside the log", meta.index)));
        }
        self.snapshot = Some(meta);
        self.write_seq += 1;
        Ok(())
    }

    fn compact(&mut self, index: Index) -> Result<()> {
        let Some(term) = self.log.check_compact(index, self.snapshot)? else { return Ok(()) };
        drop(self.log.remove_through(index, term));
        self.write_seq += 1;
        Ok(())
    }

    fn install_snapshot(&mut self, meta: SnapshotMeta) -> Result<()> {
        if self.term(meta.index) != Some(meta.term) {
            drop(self.log.remove_all());
        }
        drop(self.log.remove_through(meta.index, meta.term));
        self.snapshot = Some(meta);
        self.write_seq += 1;
        Ok(())
    }

    fn membership_base(&self) -> Option<(Index, Membership)> {
        self.membership_base.clone()
    }

    fn save_membership_base(&mut self, index: Index, membership: &Membership) -> Result<()> {
        self.membership_base = Some((index, membership.clone()));
        self.write_seq += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(index: Index, term: Term) -> Entry {
        Entry { index, term, command: vec![index as u8] }
    }

    #[test]
    fn append_truncate_and_terms() {
        let mut s = MemStorage::new();
        assert_eq!((s.first_index(), s.last_index(), s.term(0)), (1, 0, Some(0)));
        s.append(&[e(1, 1), e(2, 1), e(3, 2)]).unwrap();
        assert_eq!(s.term(3), Some(2));
        assert_eq!(s.term(4), None);
        assert!(s.append(&[e(5, 2)]).is_err(), "a gap must be refused");
        s.truncate_suffix(2).unwrap();
        assert_eq!(s.last_index(), 1);
        assert_eq!(s.entries(1, 2, 0).unwrap(), vec![e(1, 1)]);
        assert!(s.entries(1, 3, 1000).is_err());
        assert!(s.write_seq() >= 2);
    }

    #[test]
    fn compaction_and_snapshot_install() {
        let mut s = MemStorage::new();
        s.append(&[e(1, 1), e(2, 1), e(3, 2), e(4, 2)]).unwrap();
        assert!(s.compact(2).is_err(), "no snapshot covers index 2 yet");
        s.set_snapshot(SnapshotMeta { index: 3, term: 2 }).unwrap();
        s.compact(2).unwrap();
        assert_eq!((s.first_index(), s.last_index(), s.term(2)), (3, 4, Some(1)));
        assert!(s.entries(2, 4, 100).is_err());
        // Install a snapshot that matches our entry 3: entry 4 survives.
        s.install_snapshot(SnapshotMeta { index: 3, term: 2 }).unwrap();
        assert_eq!((s.first_index(), s.last_index()), (4, 4));
        // A snapshot we do not match replaces the whole log.
        s.install_snapshot(SnapshotMeta { index: 10, term: 5 }).unwrap();
        assert_eq!((s.first_index(), s.last_index(), s.term(10)), (11, 10, Some(5)));
        assert_eq!(s.snapshot(), Some(SnapshotMeta { index: 10, term: 5 }));
    }

    #[test]
    fn entries_respects_the_byte_cap_but_returns_one() {
        let mut s = MemStorage::new();
        s.append(&[e(1, 1), e(2, 1), e(3, 1)]).unwrap();
        assert_eq!(s.entries(1, 4, 0).unwrap().len(), 1);
        assert_eq!(s.entries(1, 4, 1 << 20).unwrap().len(), 3);
    }
}
