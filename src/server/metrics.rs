//! What a node measures about itself, for `/status` and `/metrics`, kept apart from the Raft
//! lock: every hook here is an atomic or a short private mutex, called where the thing happens
//! (the sync thread's fsync, a peer thread's snapshot transfer, the ticker noticing a leader
//! change).
//!
//! Windows over the last minute (`leaderChangesLastMinute`, `fsyncP99Us`) are kept here too:
//! the core counts events but has no clock, so the shell stamps them.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::api::{PeerReplication, SnapshotTransfer};
use crate::raft::{Index, NodeId, PeerProgress};
use crate::storage::SyncObserver;
use crate::storage::wal::parse_segment_name;

/// The window of `leaderChangesLastMinute` and `fsyncP99Us`.
const WINDOW: Duration = Duration::from_secs(60);

/// The node's measurements. Shared by its threads (`Arc`), each updating its own part.
pub struct Metrics {
    started: Instant,
    /// When the ticker saw each leader change of the last minute, and the core's count then.
    leader_changes: Mutex<(VecDeque<Instant>, u64)>,
    /// fsync durations per second of the last minute.
    fsyncs: Mutex<FsyncWindow>,
    /// Snapshots this node (a leader) is sending: to whom, and how far.
    snapshots_out: Mutex<BTreeMap<NodeId, SnapshotTransfer>>,
    /// The snapshot this node (a follower) is receiving, as its last chunk left it.
    snapshot_in: Mutex<Option<SnapshotTransfer>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            leader_changes: Mutex::new((VecDeque::new(), 0)),
            fsyncs: Mutex::new(FsyncWindow::default()),
            snapshots_out: Mutex::new(BTreeMap::new()),
            snapshot_in: Mutex::new(None),
        }
    }
}

impl Metrics {
    /// A fresh set, for a node starting now.
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    /// Ticker: the core has counted `count` leader changes since start. Stamps the new ones.
    pub fn saw_leader_changes(&self, count: u64) {
        let mut guard = self.leader_changes.lock();
        let (stamps, seen) = &mut *guard;
        if count <= *seen {
            return;
        }
        let now = Instant::now();
        for _ in *seen..count.min(*seen + 1000) {
            stamps.push_back(now);
        }
        *seen = count;
        while stamps.front().is_some_and(|t| now - *t > WINDOW) || stamps.len() > 1000 {
            stamps.pop_front();
        }
    }

    /// Leader changes stamped within the last minute.
    pub fn leader_changes_last_minute(&self) -> u64 {
        let now = Instant::now();
        let guard = self.leader_changes.lock();
        guard.0.iter().filter(|t| now - **t <= WINDOW).count() as u64
    }

    /// The 99th percentile of the fsyncs of the last minute, in microseconds (an upper bound
    /// within 25%); `None` without fsyncs.
    pub fn fsync_p99_us(&self) -> Option<u64> {
        self.fsyncs.lock().quantile(self.second(), 0.99)
    }

    /// Whole seconds since start (the fsync window's slots).
    fn second(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    // ----- snapshot transfers ---------------------------------------------------------------------

    /// Peer thread: `bytes_done` of snapshot `index` (`bytes_total` long) have reached `peer`.
    pub fn snapshot_sending(&self, peer: &NodeId, index: Index, bytes_done: u64, bytes_total: u64) {
        let t = SnapshotTransfer { index, bytes_done, bytes_total };
        self.snapshots_out.lock().insert(peer.clone(), t);
    }

    /// Peer thread: the transfer to `peer` ended (delivered or failed).
    pub fn snapshot_sent(&self, peer: &NodeId) {
        self.snapshots_out.lock().remove(peer);
    }

    /// HTTP worker: this node holds `bytes_done` of the `bytes_total` of snapshot `index`.
    pub fn snapshot_receiving(&self, index: Index, bytes_done: u64, bytes_total: u64) {
        *self.snapshot_in.lock() = Some(SnapshotTransfer { index, bytes_done, bytes_total });
    }

    /// The snapshot being received, if the store still receives `index` (a finished or
    /// discarded transfer is not shown).
    pub fn snapshot_in(&self, receiving: Option<Index>) -> Option<SnapshotTransfer> {
        let t = (*self.snapshot_in.lock())?;
        (receiving == Some(t.index)).then_some(t)
    }

    /// The core's per-follower progress as `/status` shows it: milliseconds (`tick_ms` per
    /// tick), the replication state's name, and the bytes of a snapshot on its way.
    pub fn replication(
        &self,
        progress: &BTreeMap<NodeId, PeerProgress>,
        tick_ms: u64,
    ) -> BTreeMap<NodeId, PeerReplication> {
        let out = self.snapshots_out.lock();
        progress
            .iter()
            .map(|(id, p)| {
                let view = PeerReplication {
                    match_index: p.match_index,
                    next_index: p.next_index,
                    state: p.state.name().to_string(),
                    inflight: u64::from(p.inflight),
                    last_contact_ms: p.last_contact_ticks.saturating_mul(tick_ms),
                    snapshot: out.get(id).copied(),
                };
                (id.clone(), view)
            })
            .collect()
    }
}

impl SyncObserver for Metrics {
    fn fsynced(&self, took: Duration, _records: u64) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.fsyncs.lock().record(self.second(), us);
    }
}

// ----- the fsync window -----------------------------------------------------------------------

/// Buckets of the fsync window: exact below 8 µs, then four per power of two up to `u32::MAX` µs.
const BUCKETS: usize = 8 + 29 * 4;

/// fsync durations of the last 60 seconds, one slot of bucket counts per second.
struct FsyncWindow {
    /// Slot `s % 60` holds second `s` (its `.0`), if that second is recent.
    slots: Vec<(u64, [u32; BUCKETS])>,
}

impl Default for FsyncWindow {
    fn default() -> Self {
        FsyncWindow { slots: vec![(u64::MAX, [0; BUCKETS]); WINDOW.as_secs() as usize] }
    }
}

impl FsyncWindow {
    fn record(&mut self, second: u64, us: u64) {
        let n = self.slots.len() as u64;
        let slot = &mut self.slots[(second % n) as usize];
        if slot.0 != second {
            *slot = (second, [0; BUCKETS]);
        }
        let b = bucket(us);
        slot.1[b] = slot.1[b].saturating_add(1);
    }

    /// The `q` quantile's bucket upper bound over the seconds of the window ending at `second`.
    fn quantile(&self, second: u64, q: f64) -> Option<u64> {
        let n = self.slots.len() as u64;
        let mut sum = [0u64; BUCKETS];
        for (s, counts) in &self.slots {
            if *s <= second && second - *s < n {
                for (total, c) in sum.iter_mut().zip(counts) {
                    *total += u64::from(*c);
                }
            }
        }
        let total: u64 = sum.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, c) in sum.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(bucket_upper(b));
            }
        }
        Some(bucket_upper(BUCKETS - 1))
    }
}

/// The bucket of `us` microseconds: `us` itself below 8; else the power of two and which
/// quarter of it.
fn bucket(us: u64) -> usize {
    let us = us.min(u64::from(u32::MAX));
    if us < 8 {
        return us as usize;
    }
    let e = 63 - us.leading_zeros() as usize;
    let quarter = ((us >> (e - 2)) & 3) as usize;
    8 + (e - 3) * 4 + quarter
}

/// The largest value in bucket `b`.
fn bucket_upper(b: usize) -> u64 {
    if b < 8 {
        return b as u64;
    }
    let (e, quarter) = ((b - 8) / 4 + 3, ((b - 8) % 4) as u64);
    ((4 + quarter + 1) << (e - 2)) - 1
}

// ----- disk use -------------------------------------------------------------------------------

/// Bytes of WAL segments in `dir`, and of everything under it. Errors count as nothing (a file
/// deleted while we look).
pub fn disk_usage(dir: &Path) -> (u64, u64) {
    let (mut wal, mut total) = (0, 0);
    let mut dirs = vec![(dir.to_path_buf(), true)];
    while let Some((d, top)) = dirs.pop() {
        let Ok(read) = std::fs::read_dir(&d) else { continue };
        for item in read.flatten() {
            let Ok(meta) = item.metadata() else { continue };
            if meta.is_dir() {
                dirs.push((item.path(), false));
                continue;
            }
            total += meta.len();
            if top && item.file_name().to_str().and_then(parse_segment_name).is_some() {
                wal += meta.len();
            }
        }
    }
    (wal, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_their_values_within_a_quarter() {
        for us in (0..100_000u64).chain([u64::from(u32::MAX) - 1, 1 << 40]) {
            let b = bucket(us);
            let upper = bucket_upper(b);
            let us = us.min(u64::from(u32::MAX));
            assert!(upper >= us, "{us} in bucket {b} with upper {upper}");
            assert!(b == 0 || bucket_upper(b - 1) < us, "{us}: bucket {b} is not the first");
            assert!(upper as f64 <= us as f64 * 1.25 + 1.0, "{us}: upper {upper}");
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn the_fsync_p99_forgets_what_is_older_than_a_minute() {
        let mut w = FsyncWindow::default();
        assert_eq!(w.quantile(0, 0.99), None);
        for _ in 0..99 {
            w.record(5, 100);
        }
        w.record(5, 10_000);
        let p99 = w.quantile(5, 0.99).expect("fsyncs");
        assert!((100..=125).contains(&p99), "p99 {p99}");
        assert!(w.quantile(5, 1.0).expect("fsyncs") >= 10_000);
        w.record(30, 50_000);
        assert!(w.quantile(30, 1.0).expect("fsyncs") >= 50_000);
        // Second 65: second 5 has left the window, second 30 has not.
        let p = w.quantile(65, 0.5).expect("one fsync left");
        assert!(p >= 50_000, "{p}");
        assert_eq!(w.quantile(200, 0.5), None);
    }

    #[test]
    fn leader_changes_are_counted_over_the_last_minute() {
        let m = Metrics::default();
        assert_eq!(m.leader_changes_last_minute(), 0);
        m.saw_leader_changes(1);
        m.saw_leader_changes(3);
        m.saw_leader_changes(3);
        assert_eq!(m.leader_changes_last_minute(), 3);
    }
}
