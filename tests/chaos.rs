//! The short CI version of the chaos harness (`raftlabkv::chaos`): seeded schedules against
//! real `raftlabkv-server` processes, 25 s of faults each, between them every fault kind on 3 and
//! 5 nodes (membership changes included), two of them with a snapshot every 100 entries. Any violation fails the test: a non-linearizable history (or one the checker could not
//! decide), two leaders in one term, no leader within 5 s of the final heal, no acknowledged write
//! within 20 s of a heal, nodes that do not converge.
//!
//! The schedules run one at a time (they share a lock): the machine may have only two cores.
//! A failure's report, timeline, node logs and histories stay in `target/tmp/chaos-<seed>/`.
//! For longer runs use `scripts/chaos.sh`.

use std::sync::Mutex;
use std::time::Duration;

use raftlabkv::chaos::{self, ChaosConfig, FaultKind};

/// One schedule at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Server flags for a snapshot every 100 applied entries, keeping only 20 entries behind it, so
/// a follower that was down or cut off for a moment catches up through InstallSnapshot.
const SNAPSHOTS: &[&str] = &["--snapshot-threshold", "100", "--snapshot-trailing", "20"];

/// Runs one schedule and fails on any violation. With `every_kind`, each listed fault kind must
/// have been injected (25 s leave room for about six faults).
fn schedule(nodes: usize, seed: u64, faults: &str, every_kind: bool, server_flags: &[&str]) {
    let mut config = config(seed, faults, &format!("chaos-{seed}"));
    config.nodes = nodes;
    config.server_flags = server_flags.iter().map(|f| f.to_string()).collect();
    run_checked(&config, every_kind);
}

/// A 25 s schedule of `faults` with `seed`, its report under `out` in the test's temp dir.
fn config(seed: u64, faults: &str, out: &str) -> ChaosConfig {
    let mut config = ChaosConfig::new(env!("CARGO_BIN_EXE_raftlabkv-server"), seed);
    config.duration = Duration::from_secs(25);
    config.faults = FaultKind::parse_list(faults).expect("valid fault list");
    config.out_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(out);
    config
}

/// Runs `config` (one run at a time) and fails on any violation, on too little work, and with
/// `every_kind` on a listed fault kind that was never injected.
fn run_checked(config: &ChaosConfig, every_kind: bool) -> chaos::ChaosReport {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let report = chaos::run(config).expect("the cluster starts and the report is written");
    println!("{}", report.summary());
    assert!(
        report.passed(),
        "{}\n\ntimeline:\n{}",
        report.summary(),
        chaos::nemesis::format_timeline(&report.timeline)
    );
    // The schedule did what it says: every kind it names was injected at least once.
    for kind in config.faults.iter().filter(|_| every_kind) {
        assert!(
            report.recoveries.iter().any(|r| r.fault == *kind),
            "{kind} was never injected: {}",
            report.summary()
        );
    }
    assert!(report.stats.acked_writes > 100, "too little work got through: {}", report.summary());
    report
}

/// Crashes and stalls: kill -9 of one node and of all nodes (restart from snapshot + WAL),
/// SIGSTOP of the leader, and partitions; frequent snapshots.
#[test]
fn three_nodes_crashes_pauses_and_partitions() {
    schedule(3, 101, "kill,killall,pause,partition", true, SNAPSHOTS);
}

/// Network faults on five nodes: one-way cuts, slow and lossy links, partitions.
#[test]
fn five_nodes_one_way_cuts_delay_loss_and_partitions() {
    schedule(5, 102, "oneway,delay,lossy,partition", true, &[]);
}

/// Pipelining (`--max-inflight 4` on every server): several AppendEntries per follower on their
/// way at once through slow, lossy and one-way links, partitions and crashes, so requests and
/// answers overlap, get lost and (on separate connections) arrive out of order.
#[test]
fn five_nodes_pipelined_through_delay_loss_cuts_and_crashes() {
    schedule(5, 108, "delay,lossy,oneway,partition,kill", false, &["--max-inflight", "4"]);
}

/// Membership changes (add, remove, replace a dead voter, transfer) mixed with crashes and
/// partitions on three nodes (growing to five at most): every kind injected.
#[test]
fn three_nodes_membership_changes_crashes_and_partitions() {
    schedule(3, 104, "membership,kill,partition", true, &[]);
}

/// Everything, mixed, on five nodes (the kinds in a random order; not all fit in 25 s), with
/// frequent snapshots.
#[test]
fn five_nodes_every_fault() {
    schedule(5, 103, "all", false, SNAPSHOTS);
}

/// Lease reads (`?consistency=lease`, every server with `--lease-reads`) under what breaks a
/// lease that outlives its leadership: SIGSTOP of the leader, partitions, one-way cuts and
/// crashes. Every read is checked for linearizability like any other.
#[test]
fn three_nodes_lease_reads_under_pauses_and_partitions() {
    let mut config = config(107, "pause,partition,oneway,kill", "chaos-lease-107");
    config.lease_reads = true;
    let report = run_checked(&config, false);
    assert!(report.recoveries.iter().any(|r| r.fault == FaultKind::Pause), "{}", report.summary());
}
