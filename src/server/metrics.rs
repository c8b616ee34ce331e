//! What a node measures about itself, for `/status` and `/metrics`, kept apart from the Raft
//! lock: every hook here is an atomic or a short private mutex, called where the thing happens
//! (the sync thread's fsync, a peer thread's snapshot transfer, the ticker noticing a leader
//! change).
//!
//! Windows over the last minute (`leaderChangesLastMinute`, `fsyncP99Us`) are kept here too:
//! the core counts events but has no clock, so the shell stamps them.
//!
//! `/metrics` is the Prometheus text format (0.0.4), encoded by the `prometheus-client` crate.
//! Two kinds of metric feed it: the ones updated where things happen (counters and histograms:
//! atomics, or the crate's short per-histogram lock), registered once in [`Metrics::new`], and
//! the ones read when scraped (term, indexes, key count, process stats: a [`Scrape`] the caller
//! fills with one Raft lock), encoded afresh each time. Every name is listed in the README
//! ("Metrics"); keep them stable, dashboards and alerts are written against them.
//! Labels have few values: `peer` (members), `route` (the route's pattern, never the raw path),
//! `code`, `kind`.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus_client::encoding::{EncodeLabelSet, prometheus_text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use super::transport::Traffic;
use crate::api::{PeerReplication, SnapshotTransfer};
use crate::raft::{Counters, Index, NodeId, PeerProgress};
use crate::storage::SyncObserver;
use crate::storage::wal::parse_segment_name;

/// Label of per-peer metrics: the member's id.
type PeerLabel = [(&'static str, String); 1];

/// A family of histograms made by a plain function (buckets fixed per family).
type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Labels of `raftlabkv_http_requests_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteCode {
    route: &'static str,
    code: u16,
}

/// What is counted and timed where it happens (the registered metrics).
pub struct Events {
    registry: Registry,
    fsync_seconds: Histogram,
    records_per_fsync: Histogram,
    append_rtt: Histograms<PeerLabel>,
    peer_sent: Family<PeerLabel, Counter>,
    peer_received: Family<PeerLabel, Counter>,
    snapshot_save: Histogram,
    snapshot_install: Histogram,
    snapshots_sent: Counter,
    snapshots_received: Counter,
    http_seconds: Histograms<[(&'static str, &'static str); 1]>,
    http_requests: Family<RouteCode, Counter>,
    /// Log entries this node saw committed (handed to its state machine) since start.
    pub committed: Counter,
    /// Log entries applied to the state machine since start.
    pub applied: Counter,
    /// Writes proposed here that did not succeed (replaced, timed out, or the node stopped).
    pub proposals_failed: Counter,
    /// Client puts answered by an answer thread, not by their worker (`server::answers`).
    pub puts_handed_over: Counter,
    /// Client gets answered by an answer thread, not by their worker (`server::answers`).
    pub gets_handed_over: Counter,
    reads: Family<[(&'static str, &'static str); 1], Counter>,
}

fn seconds_buckets() -> Histogram {
    // 100 µs .. ~6.5 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

fn slow_seconds_buckets() -> Histogram {
    // 1 ms .. ~65 s: snapshots.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl Events {
    fn new() -> Events {
        let mut e = Events {
            registry: Registry::default(),
            fsync_seconds: seconds_buckets(),
            records_per_fsync: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            append_rtt: Family::new_with_constructor(seconds_buckets),
            peer_sent: Family::default(),
            peer_received: Family::default(),
            snapshot_save: slow_seconds_buckets(),
            snapshot_install: slow_seconds_buckets(),
            snapshots_sent: Counter::default(),
            snapshots_received: Counter::default(),
            http_seconds: Family::new_with_constructor(seconds_buckets),
            http_requests: Family::default(),
            committed: Counter::default(),
            applied: Counter::default(),
            proposals_failed: Counter::default(),
            puts_handed_over: Counter::default(),
            gets_handed_over: Counter::default(),
            reads: Family::default(),
        };
        let mut registry = Registry::default();
        e.register_disk_and_peers(&mut registry);
        e.register_snapshots_server_and_http(&mut registry);
        e.registry = registry;
        e
    }

    /// Registers the WAL's and the peers' metrics.
    fn register_disk_and_peers(&self, r: &mut Registry) {
        let e = self;
        let s = Unit::Seconds;
        r.register_with_unit(
            "raftlabkv_disk_wal_fsync_duration",
            "Duration of the WAL's group-commit fsyncs",
            s.clone(),
            e.fsync_seconds.clone(),
        );
        r.register(
            "raftlabkv_disk_wal_records_per_fsync",
            "WAL records (log entries, and term-and-vote records) made durable by one fsync",
            e.records_per_fsync.clone(),
        );
        r.register_with_unit(
            "raftlabkv_peer_append_entries_round_trip",
            "Round trip of an AppendEntries (heartbeats included) to a peer, answer stepped",
            s.clone(),
            e.append_rtt.clone(),
        );
        r.register_with_unit(
            "raftlabkv_peer_sent",
            "Bytes of peer RPCs sent to a peer (requests, and answers to its requests)",
            Unit::Bytes,
            e.peer_sent.clone(),
        );
        r.register_with_unit(
            "raftlabkv_peer_received",
            "Bytes of peer RPCs received from a peer (its requests, and its answers)",
            Unit::Bytes,
            e.peer_received.clone(),
        );
        r.register_with_unit(
            "raftlabkv_snapshot_save_duration",
            "Time to encode and durably write a snapshot and compact the log",
            s.clone(),
            e.snapshot_save.clone(),
        );
        r.register_with_unit(
            "raftlabkv_snapshot_install_duration",
            "Time to load a snapshot received from the leader into the state machine",
            s.clone(),
            e.snapshot_install.clone(),
        );
    }

    /// Registers the snapshots', the server's and HTTP's metrics.
    fn register_snapshots_server_and_http(&self, r: &mut Registry) {
        let e = self;
        let s = Unit::Seconds;
        r.register(
            "raftlabkv_snapshot_sent",
            "Snapshots sent to followers in full",
            e.snapshots_sent.clone(),
        );
        r.register(
            "raftlabkv_snapshot_received",
            "Snapshots received in full and verified",
            e.snapshots_received.clone(),
        );
        r.register_with_unit(
            "raftlabkv_http_request_duration",
            "Time to answer an HTTP request, by route pattern",
            s,
            e.http_seconds.clone(),
        );
        r.register(
            "raftlabkv_http_requests",
            "HTTP requests answered, by route pattern and status code",
            e.http_requests.clone(),
        );
        r.register(
            "raftlabkv_server_proposals_committed",
            "Log entries this node saw committed since start",
            e.committed.clone(),
        );
        r.register(
            "raftlabkv_server_proposals_applied",
            "Log entries applied to the state machine since start",
            e.applied.clone(),
        );
        r.register(
            "raftlabkv_server_proposals_failed",
            "Writes proposed on this node that did not succeed (replaced by another leader's \
             entries, timed out, or the node stopped)",
            e.proposals_failed.clone(),
        );
        r.register(
            "raftlabkv_http_puts_handed_over",
            "Client puts answered by an answer thread once applied, rather than by the HTTP \
             worker that read them",
            e.puts_handed_over.clone(),
        );
        r.register(
            "raftlabkv_http_gets_handed_over",
            "Client linearizable gets answered by an answer thread once their read barrier \
             passed, rather than by the HTTP worker that read them",
            e.gets_handed_over.clone(),
        );
        r.register(
            "raftlabkv_server_reads",
            "Reads served from this node's state machine, by kind (linearizable, lease or stale)",
            e.reads.clone(),
        );
    }

    /// A read served here: `linearizable` (after ReadIndex), `lease` or `stale`.
    pub fn read(&self, kind: &'static str) {
        self.reads.get_or_create(&[("kind", kind)]).inc();
    }

    /// An HTTP request to `route` (a pattern) answered with `code` after `took`.
    pub fn http(&self, route: &'static str, code: u16, took: Duration) {
        self.http_requests.get_or_create(&RouteCode { route, code }).inc();
        self.http_seconds.get_or_create(&[("route", route)]).observe(took.as_secs_f64());
    }

    /// An AppendEntries to `peer` was answered after `took`.
    pub fn append_round_trip(&self, peer: &NodeId, took: Duration) {
        self.append_rtt.get_or_create(&[("peer", peer.clone())]).observe(took.as_secs_f64());
    }

    /// A snapshot was written (`took`, end to end).
    pub fn snapshot_saved(&self, took: Duration) {
        self.snapshot_save.observe(took.as_secs_f64());
    }

    /// A received snapshot was loaded (`took`).
    pub fn snapshot_installed(&self, took: Duration) {
        self.snapshot_install.observe(took.as_secs_f64());
    }

    /// A snapshot reached a follower in full.
    pub fn snapshot_sent_whole(&self) {
        self.snapshots_sent.inc();
    }

    /// A snapshot arrived in full and checked out.
    pub fn snapshot_received_whole(&self) {
        self.snapshots_received.inc();
    }
}

impl Traffic for Metrics {
    fn moved(&self, peer: &NodeId, sent: u64, received: u64) {
        let label = [("peer", peer.clone())];
        if sent > 0 {
            self.events.peer_sent.get_or_create(&label).inc_by(sent);
        }
        if received > 0 {
            self.events.peer_received.get_or_create(&label).inc_by(received);
        }
    }
}

/// What `/metrics` reads when scraped (one Raft lock's worth, filled by the caller).
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// `current_term`.
    pub term: u64,
    /// Highest index known committed.
    pub commit_index: Index,
    /// Highest index applied to the state machine.
    pub applied_index: Index,
    /// A leader is known.
    pub has_leader: bool,
    /// This node leads.
    pub is_leader: bool,
    /// This node is a learner.
    pub is_learner: bool,
    /// The core's event counts.
    pub counters: Counters,
    /// Writes waiting for their entry to apply.
    pub proposals_pending: u64,
    /// Keys in the store.
    pub keys: u64,
    /// Index of the latest snapshot (0: none).
    pub snapshot_index: Index,
    /// The data directory, if any (its disk use is read at scrape time).
    pub data_dir: Option<std::path::PathBuf>,
    /// The snapshot being received, if any.
    pub snapshot_in: Option<SnapshotTransfer>,
    /// Answer threads running (`server::answers`).
    pub answer_threads: u64,
}

/// The window of `leaderChangesLastMinute` and `fsyncP99Us`.
const WINDOW: Duration = Duration::from_secs(60);

/// The node's measurements. Shared by its threads (`Arc`), each updating its own part.
pub struct Metrics {
    /// Counted and timed where they happen.
    pub events: Events,
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
            events: Events::new(),
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
                    inflight: p.inflight,
                    last_contact_ms: p.last_contact_ticks.saturating_mul(tick_ms),
                    snapshot: out.get(id).copied(),
                };
                (id.clone(), view)
            })
            .collect()
    }
}

impl SyncObserver for Metrics {
    fn fsynced(&self, took: Duration, records: u64) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.fsyncs.lock().record(self.second(), us);
        self.events.fsync_seconds.observe(took.as_secs_f64());
        self.events.records_per_fsync.observe(records as f64);
    }
}

impl Metrics {
    /// The `/metrics` page: the registered metrics, then those read now from `s` and the process.
    pub fn encode(&self, s: &Scrape) -> std::result::Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_text::encode(&mut text, &self.events.registry)?;
        prometheus_text::encode(&mut text, &self.scraped(s))?;
        Ok(text)
    }

    /// A registry of the values read at scrape time.
    fn scraped(&self, s: &Scrape) -> Registry {
        let values = self.scrape_values(s);
        let mut r = Registry::default();
        for (name, help, is_counter, v) in values {
            if is_counter {
                let m: Counter = Counter::default();
                m.inc_by(v);
                r.register(name, help, m);
            } else {
                let m: Gauge = Gauge::default();
                m.set(i64::try_from(v).unwrap_or(i64::MAX));
                r.register(name, help, m);
            }
        }
        self.register_sending(&mut r);
        r
    }

    /// The values read at scrape time: (name, help, true for a counter, value).
    #[rustfmt::skip]
    fn scrape_values(&self, s: &Scrape) -> [(&'static str, &'static str, bool, u64); 24] {
        let (c, p) = (s.counters, process_stats());
        let (wal, total) = s.data_dir.as_deref().map_or((0, 0), disk_usage);
        let t = s.snapshot_in.unwrap_or(SnapshotTransfer { index: 0, bytes_done: 0, bytes_total: 0 });
        [
            ("raftlabkv_server_has_leader", "1 if a leader is known", false, s.has_leader.into()),
            ("raftlabkv_server_is_leader", "1 if this node leads", false, s.is_leader.into()),
            ("raftlabkv_server_is_learner", "1 if this node is a learner", false, s.is_learner.into()),
            ("raftlabkv_server_leader_changes_seen", "Terms in which this node learned of a leader, since start", true, c.leader_changes),
            ("raftlabkv_server_leader_changes_last_minute", "Leader changes seen in the last 60 seconds", false, self.leader_changes_last_minute()),
            ("raftlabkv_server_term", "The current term", false, s.term),
            ("raftlabkv_server_commit_index", "Highest log index known committed", false, s.commit_index),
            ("raftlabkv_server_applied_index", "Highest log index applied to the state machine", false, s.applied_index),
            ("raftlabkv_server_snapshot_index", "Index of the latest snapshot (0: none)", false, s.snapshot_index),
            ("raftlabkv_server_proposals_pending", "Writes waiting for their entry to be applied", false, s.proposals_pending),
            ("raftlabkv_server_elections_started", "Elections this node started (its term went up for a candidacy)", true, c.elections_started),
            ("raftlabkv_server_pre_votes_started", "PreVote rounds this node started", true, c.pre_votes_started),
            ("raftlabkv_server_pre_votes_refused", "PreVote requests this node refused", true, c.pre_votes_refused),
            ("raftlabkv_server_keys", "Keys in the state machine", false, s.keys),
            ("raftlabkv_disk_wal_bytes", "Bytes of WAL segments on disk", false, wal),
            ("raftlabkv_disk_data_dir_bytes", "Bytes of everything in the data directory", false, total),
            ("process_resident_memory_bytes", "Resident memory size in bytes", false, p.rss_bytes),
            ("process_threads", "Threads of the process", false, p.threads),
            ("raftlabkv_http_answer_threads", "Answer threads running: --answer-threads, plus one for each that was stuck writing to a client that does not read", false, s.answer_threads),
            ("process_open_fds", "Open file descriptors", false, p.open_fds),
            ("raftlabkv_snapshot_receiving_bytes", "Bytes of the snapshot being received that arrived so far (0: none)", false, t.bytes_done),
            ("raftlabkv_snapshot_receiving_size_bytes", "Size of the snapshot being received (0: none)", false, t.bytes_total),
            ("raftlabkv_server_uptime_seconds", "Seconds since the node started", false, self.started.elapsed().as_secs()),
            ("raftlabkv_server_snapshot_receiving_index", "Index of the snapshot being received (0: none)", false, t.index),
        ]
    }

    /// The snapshots on their way to peers, as gauges.
    fn register_sending(&self, r: &mut Registry) {
        let sending: Family<PeerLabel, Gauge> = Family::default();
        let size: Family<PeerLabel, Gauge> = Family::default();
        for (peer, t) in self.snapshots_out.lock().iter() {
            let label = [("peer", peer.clone())];
            sending.get_or_create(&label).set(i64::try_from(t.bytes_done).unwrap_or(i64::MAX));
            size.get_or_create(&label).set(i64::try_from(t.bytes_total).unwrap_or(i64::MAX));
        }
        let help = "Bytes of the snapshot on its way to a peer sent so far";
        r.register_with_unit("raftlabkv_snapshot_sending", help, Unit::Bytes, sending);
        let help = "Size of the snapshot on its way to a peer";
        r.register_with_unit("raftlabkv_snapshot_sending_size", help, Unit::Bytes, size);
    }
}

/// What `/proc/self` says of the process (zeros where it cannot be read).
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessStats {
    /// Resident memory.
    pub rss_bytes: u64,
    /// Threads.
    pub threads: u64,
    /// Open file descriptors.
    pub open_fds: u64,
}

/// Reads [`ProcessStats`] from `/proc/self` (Linux; zeros elsewhere).
pub fn process_stats() -> ProcessStats {
    let mut p = ProcessStats::default();
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        for line in status.lines() {
            let number = |l: &str| {
                l.split_whitespace().nth(1).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0)
            };
            if line.starts_with("VmRSS:") {
                p.rss_bytes = number(line) * 1024;
            } else if line.starts_with("Threads:") {
                p.threads = number(line);
            }
        }
    }
    // The directory handle listing it is one of them: not counted.
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        p.open_fds = (fds.count() as u64).saturating_sub(1);
    }
    p
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
