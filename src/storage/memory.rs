//! In-memory storage: the log in a `Vec`. Used by the simulated-network tests (where a "crash"
//! restarts a node from a clone of its storage) and by nodes run without a data directory.

use std::sync::Arc;

use super::entries::EntryLog;
use super::{NoopSyncer, Storage, Syncer};
use crate::error::{Error, Result};
use crate::raft::{Entry, HardState, Index, SnapshotMeta, Term};

/// A [`Storage`] kept in memory. `Clone` is the simulation's crash model: a clone taken after a
/// step holds exactly what that node had "made durable".
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    hard_state: HardState,
    /// The entries, after the compaction point.
    log: EntryLog,
    /// The latest snapshot recorded.
    snapshot: Option<SnapshotMeta>,
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

    fn syncer(&self) -> Arc<dyn Syncer> {
        Arc::new(NoopSyncer)
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
