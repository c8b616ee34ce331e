//! The simulated disk: writes are buffered until an fsync makes them durable, and a crash loses
//! what was not synced.
//!
//! Each node's core writes through a [`SimStorage`]: a [`MemStorage`] the core reads and writes at
//! once (the page cache), plus a journal of the writes since the last fsync, kept in the node's
//! [`Disk`] beside a second `MemStorage` holding only what is durable. An fsync through write
//! sequence number `seq` ([`Storage::write_seq`]) replays the journal up to `seq` onto the durable
//! copy. A crash keeps the durable copy (and, as a real disk may have written some of the buffered
//! writes back before the power went, sometimes a prefix of the journal); the node restarts from a
//! clone of it. Replaying the same calls in the same order onto the same state gives the same
//! state, so the durable copy is always a state the node's storage passed through.
//!
//! When fsyncs happen is the cluster's business (`super::sync`): it starts one when an output asks
//! for one, completes it after a delay drawn from its seeded RNG ([`DiskConfig`]), and only then
//! releases the messages that waited for it and calls [`crate::raft::RaftNode::persisted`].

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::Result;
use crate::raft::{Entry, HardState, Index, MemStorage, Membership, SnapshotMeta, Storage, Term};

/// When simulated fsyncs complete, and what a crash keeps of the writes not yet synced.
#[derive(Debug, Clone)]
pub struct DiskConfig {
    /// An fsync takes `0..=max_sync_ticks` ticks, drawn from the cluster's RNG (0: it completes in
    /// the tick it started in, after the deliveries and ticks of that tick).
    pub max_sync_ticks: u64,
    /// Probability (0–1) that an fsync is slow (a busy disk): it takes up to `slow_sync_ticks`,
    /// longer than a round trip, so a node's peers answer before its own disk does.
    pub slow_sync_rate: f64,
    /// Most ticks a slow fsync takes.
    pub slow_sync_ticks: u64,
    /// Probability (0–1) that a crash keeps a random prefix of the unsynced writes (the disk wrote
    /// some back on its own); otherwise it loses them all.
    pub keep_unsynced_rate: f64,
    /// Fsyncs complete only when [`super::SimCluster::sync`] is called (scripted tests).
    pub manual: bool,
}

impl Default for DiskConfig {
    /// Fsyncs of 0–30 ms (at 10 ms a tick), one in ten up to 200 ms: a disk under load. With
    /// fsyncs never longer than the network's round trip (two ticks), a crash could seldom fall
    /// between an early acknowledgement and the fsync it skipped, and the MIT ports did not notice
    /// a core that broke the durability rule; with these, `sim_kv` and `snapshot_all_crash` do
    /// (and `tests/raft_durability.rs` always does).
    fn default() -> Self {
        DiskConfig {
            max_sync_ticks: 3,
            slow_sync_rate: 0.1,
            slow_sync_ticks: 20,
            keep_unsynced_rate: 0.5,
            manual: false,
        }
    }
}

/// One mutating [`Storage`] call, kept until an fsync makes it durable.
#[derive(Debug, Clone)]
enum Write {
    HardState(HardState),
    Append(Vec<Entry>),
    Truncate(Index),
    SetSnapshot(SnapshotMeta),
    Compact(Index),
    InstallSnapshot(SnapshotMeta),
    MembershipBase(Index, Membership),
}

impl Write {
    /// Repeats the call on `storage` (the durable copy).
    fn replay(self, storage: &mut MemStorage) -> Result<()> {
        match self {
            Write::HardState(hs) => storage.save_hard_state(&hs),
            Write::Append(entries) => storage.append(&entries),
            Write::Truncate(from) => storage.truncate_suffix(from),
            Write::SetSnapshot(meta) => storage.set_snapshot(meta),
            Write::Compact(index) => storage.compact(index),
            Write::InstallSnapshot(meta) => storage.install_snapshot(meta),
            Write::MembershipBase(index, m) => storage.save_membership_base(index, &m),
        }
    }
}

/// One node's disk: what survives a crash, and the writes an fsync has not covered yet. It outlives
/// the node's incarnations.
#[derive(Debug, Default)]
pub struct Disk {
    /// Everything made durable.
    durable: MemStorage,
    /// Writes since, with the write sequence number each left the storage at, oldest first.
    unsynced: VecDeque<(u64, Write)>,
}

impl Disk {
    /// Makes every write through `seq` durable.
    pub fn sync_through(&mut self, seq: u64) {
        while self.unsynced.front().is_some_and(|(s, _)| *s <= seq) {
            if let Some((_, write)) = self.unsynced.pop_front() {
                write.replay(&mut self.durable).expect("a replayed write succeeds again");
            }
        }
    }

    /// Writes not yet durable.
    pub fn unsynced(&self) -> usize {
        self.unsynced.len()
    }

    /// The power goes: the first `keep` unsynced writes reached the disk anyway, the rest are lost.
    /// Returns how many were lost.
    pub fn crash(&mut self, keep: usize) -> usize {
        let lost = self.unsynced.len().saturating_sub(keep);
        if let Some(&(seq, _)) = keep.checked_sub(1).and_then(|i| self.unsynced.get(i)) {
            self.sync_through(seq);
        }
        self.unsynced.clear();
        lost
    }
}

/// The storage a simulated node's core writes through: reads and writes go to memory at once,
/// and every write is also journaled on the node's [`Disk`] until an fsync covers it.
pub struct SimStorage {
    mem: MemStorage,
    disk: Arc<Mutex<Disk>>,
}

impl SimStorage {
    /// The storage of a node (re)starting from `disk`: exactly what is durable there.
    pub fn recover(disk: Arc<Mutex<Disk>>) -> Self {
        let mem = disk.lock().durable.clone();
        SimStorage { mem, disk }
    }

    /// Makes a mutating call on memory, then journals it as `write` if it changed anything (bumped
    /// the write sequence number).
    fn write(
        &mut self,
        call: impl FnOnce(&mut MemStorage) -> Result<()>,
        write: impl FnOnce() -> Write,
    ) -> Result<()> {
        let before = self.mem.write_seq();
        call(&mut self.mem)?;
        let seq = self.mem.write_seq();
        if seq != before {
            self.disk.lock().unsynced.push_back((seq, write()));
        }
        Ok(())
    }
}

impl Storage for SimStorage {
    fn hard_state(&self) -> HardState {
        self.mem.hard_state()
    }

    fn save_hard_state(&mut self, hard_state: &HardState) -> Result<()> {
        self.write(|m| m.save_hard_state(hard_state), || Write::HardState(hard_state.clone()))
    }

    fn first_index(&self) -> Index {
        self.mem.first_index()
    }

    fn last_index(&self) -> Index {
        self.mem.last_index()
    }

    fn term(&self, index: Index) -> Option<Term> {
        self.mem.term(index)
    }

    fn entries(&self, lo: Index, hi: Index, max_bytes: usize) -> Result<Vec<Entry>> {
        self.mem.entries(lo, hi, max_bytes)
    }

    fn append(&mut self, entries: &[Entry]) -> Result<()> {
        self.write(|m| m.append(entries), || Write::Append(entries.to_vec()))
    }

    fn truncate_suffix(&mut self, from: Index) -> Result<()> {
        self.write(|m| m.truncate_suffix(from), || Write::Truncate(from))
    }

    fn write_seq(&self) -> u64 {
        self.mem.write_seq()
    }

    fn snapshot(&self) -> Option<SnapshotMeta> {
        self.mem.snapshot()
    }

    fn set_snapshot(&mut self, meta: SnapshotMeta) -> Result<()> {
        self.write(|m| m.set_snapshot(meta), || Write::SetSnapshot(meta))
    }

    fn compact(&mut self, index: Index) -> Result<()> {
        self.write(|m| m.compact(index), || Write::Compact(index))
    }

    fn install_snapshot(&mut self, meta: SnapshotMeta) -> Result<()> {
        self.write(|m| m.install_snapshot(meta), || Write::InstallSnapshot(meta))
    }

    fn membership_base(&self) -> Option<(Index, Membership)> {
        self.mem.membership_base()
    }

    fn save_membership_base(&mut self, index: Index, membership: &Membership) -> Result<()> {
        self.write(
            |m| m.save_membership_base(index, membership),
            || Write::MembershipBase(index, membership.clone()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(index: Index, term: Term) -> Entry {
        Entry { index, term, command: vec![index as u8] }
    }

    fn storage() -> (SimStorage, Arc<Mutex<Disk>>) {
        let disk = Arc::new(Mutex::new(Disk::default()));
        (SimStorage::recover(disk.clone()), disk)
    }

    #[test]
    fn sim_disk_keeps_only_what_was_synced() {
        let (mut s, disk) = storage();
        s.append(&[e(1, 1), e(2, 1)]).unwrap();
        let synced = s.write_seq();
        s.save_hard_state(&HardState { current_term: 2, voted_for: Some("n2".into()) }).unwrap();
        s.append(&[e(3, 2)]).unwrap();
        disk.lock().sync_through(synced);
        assert_eq!(disk.lock().unsynced(), 2);
        assert_eq!(disk.lock().crash(0), 2, "both unsynced writes are lost");
        let s = SimStorage::recover(disk);
        assert_eq!((s.last_index(), s.hard_state()), (2, HardState::default()));
    }

    #[test]
    fn sim_disk_crash_may_keep_a_prefix_of_unsynced_writes() {
        let (mut s, disk) = storage();
        s.append(&[e(1, 1), e(2, 1), e(3, 1)]).unwrap();
        s.truncate_suffix(2).unwrap();
        s.append(&[e(2, 2)]).unwrap();
        assert_eq!(disk.lock().crash(2), 1, "the truncation survives, the new append does not");
        let s = SimStorage::recover(disk);
        assert_eq!((s.last_index(), s.term(1)), (1, Some(1)));
    }

    #[test]
    fn sim_disk_replays_compaction_and_snapshot_installs() {
        let (mut s, disk) = storage();
        s.append(&[e(1, 1), e(2, 1), e(3, 1)]).unwrap();
        s.set_snapshot(SnapshotMeta { index: 2, term: 1 }).unwrap();
        s.compact(1).unwrap();
        s.compact(1).unwrap(); // a no-op: not journaled
        s.install_snapshot(SnapshotMeta { index: 5, term: 2 }).unwrap();
        assert_eq!(disk.lock().unsynced(), 4);
        disk.lock().sync_through(s.write_seq());
        let d = SimStorage::recover(disk);
        assert_eq!((d.first_index(), d.last_index(), d.term(5)), (6, 5, Some(2)));
        assert_eq!(d.snapshot(), Some(SnapshotMeta { index: 5, term: 2 }));
    }
}
