//! Measures what snapshots (§7) cost and save, on real `raftlabkv-server` processes with data dirs
//! on loopback.
//!
//! ```text
//! cargo build --release && cargo run --release --example measure_snapshot -- [size|catchup|pause|all]
//! ```
//!
//! - `size`: data dir size of each node after `MEASURE_PUTS` (default 1,000,000) puts of 100-byte
//!   values over 10,000 keys, with snapshots on (the default threshold and trailing entries) and
//!   with `--snapshot-threshold 0`; also the largest size sampled during the run;
//! - `catchup`: a 3-node cluster holding `MEASURE_KEYS` (default 1,000,000) keys of 100 bytes;
//!   one follower is killed, its data dir wiped and the node restarted: time until it has caught
//!   up, with the snapshot's size, transfer and load times from the logs;
//! - `pause`: put latency (p50, p99, p99.9, max) on a `MEASURE_KEYS`-key state while every node
//!   snapshots it, against the same run length without a snapshot, with the servers' own account
//!   ("state frozen in X (writes paused), written in Y"). The threshold is set so that the first
//!   snapshot comes `PAUSE_OPS / 4` puts into the second run. `pause` then goes on with `catchup`
//!   on the same cluster (`all` does `size` then `pause`).
//!
//! Env: `SERVER_BIN` (default `target/release/raftlabkv-server`), `MEASURE_PUTS`, `MEASURE_KEYS`,
//! `MEASURE_CLIENTS` (default 64), `PAUSE_OPS` (default 40,000 puts per latency run).
//! The load comes from the bench tool's code ([`raftlabkv::client::bench`], what
//! `raftlabkv-client bench` runs); populating writes every key once, from many clients.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use raftlabkv::client::bench::{self, BenchConfig, BenchReport, Workload};
use raftlabkv::testkit::{Cluster, ClusterOptions, env_u64};

struct Run {
    c: Cluster,
    work_dir: PathBuf,
}

impl Drop for Run {
    fn drop(&mut self) {
        for i in self.c.all() {
            self.c.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.work_dir);
    }
}

fn cluster(name: &str, extra: &[&str]) -> Run {
    let bin =
        std::env::var("SERVER_BIN").unwrap_or_else(|_| "target/release/raftlabkv-server".into());
    let work_dir = std::env::temp_dir()
        .join(format!("raftlabkv-measure-snapshot-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work_dir);
    let c = Cluster::start(ClusterOptions {
        nodes: 3,
        server_bin: bin.into(),
        work_dir: work_dir.clone(),
        data_dirs: true,
        extra_args: extra.iter().map(|s| s.to_string()).collect(),
        peer_secret: false,
    })
    .expect("start cluster");
    c.wait_leader(&c.all(), Duration::from_secs(10)).expect("a leader");
    Run { c, work_dir }
}

fn bench_run(c: &Cluster, keys: u64, ops: u64, populate: bool) -> BenchReport {
    let clients = env_u64("MEASURE_CLIENTS", 64) as usize;
    // Straight to the leader: the address a follower's /status gives is its link proxy's.
    let leader = c.wait_leader(&c.all(), Duration::from_secs(10)).expect("a leader");
    let config = BenchConfig {
        servers: c.nodes.iter().map(|n| n.addr.clone()).collect(),
        target: Some(c.nodes[leader].addr.clone()),
        clients,
        duration: None,
        ops: Some(ops),
        workload: Workload::Put,
        read_ratio: 0.0,
        value_size: 100,
        keys,
        populate: Some(populate),
        consistency: Default::default(),
        request_timeout: Duration::from_secs(5),
    };
    bench::run(&config).expect("bench")
}

/// Total size of the files under `path`, and of those under its `snapshots/` subdirectory.
fn dir_size(path: &Path) -> u64 {
    let Ok(read) = std::fs::read_dir(path) else { return 0 };
    read.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// Waits until every node has applied the leader's commit index; returns it.
fn settle(c: &Cluster, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let statuses: Option<Vec<_>> = c.all().into_iter().map(|i| c.node_status(i)).collect();
        if let Some(s) = statuses
            && let Some(leader) = s.iter().find(|s| s.is_leader)
        {
            let commit = leader.commit_index;
            if s.iter().all(|s| s.last_applied == commit) {
                return commit;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the cluster did not settle within {within:?}");
}

fn log_lines(run: &Run, i: usize, needle: &str) -> Vec<String> {
    let path = run.work_dir.join(format!("{}.log", run.c.nodes[i].id));
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .map(|l| l.split("] ").nth(1).unwrap_or(l).to_string())
        .collect()
}

fn print_bench(label: &str, r: &BenchReport) {
    let l = &r.latency_us;
    println!(
        "  {label}: {} puts in {:.1} s ({:.0}/s, {} failed {:?}); latency ms: p50 {:.2} p99 {:.2} \
         p99.9 {:.2} max {:.2}",
        r.ok,
        r.elapsed_seconds,
        r.throughput_ops_per_sec,
        r.requests - r.ok,
        r.errors,
        l.p50_us as f64 / 1e3,
        l.p99_us as f64 / 1e3,
        l.p999_us as f64 / 1e3,
        l.max_us as f64 / 1e3
    );
}

/// (a) Data dir sizes after many puts over a fixed key space, snapshots on and off.
fn size() {
    let puts = env_u64("MEASURE_PUTS", 1_000_000);
    println!("size: {puts} puts of 100-byte values over 10,000 keys");
    for (label, extra) in [
        ("snapshots on (threshold 10,000, trailing 1,000)", &[][..]),
        ("snapshots off (--snapshot-threshold 0)", &["--snapshot-threshold", "0"][..]),
    ] {
        let run = cluster("size", extra);
        let dirs: Vec<PathBuf> =
            run.c.all().into_iter().map(|i| run.work_dir.join(&run.c.nodes[i].id)).collect();
        let stop = std::sync::atomic::AtomicBool::new(false);
        let (report, max) = std::thread::scope(|s| {
            let sampler = s.spawn(|| {
                let mut max = vec![0u64; dirs.len()];
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for (m, d) in max.iter_mut().zip(&dirs) {
                        *m = (*m).max(dir_size(d));
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                max
            });
            let report = bench_run(&run.c, 10_000, puts, false);
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            (report, sampler.join().expect("sampler"))
        });
        settle(&run.c, Duration::from_secs(120));
        println!("  {label}:");
        print_bench("load", &report);
        for (i, d) in dirs.iter().enumerate() {
            let total = dir_size(d);
            let snaps = dir_size(&d.join("snapshots"));
            println!(
                "    node{}: {:.1} MiB at the end (WAL {:.1} MiB, snapshots {:.2} MiB), largest \
                 sampled {:.1} MiB",
                i + 1,
                mib(total),
                mib(total - snaps),
                mib(snaps),
                mib(max[i])
            );
        }
    }
}

/// Populates `keys` keys of 100 bytes from many clients.
fn populate(run: &Run, keys: u64) {
    let t0 = Instant::now();
    let r = bench_run(&run.c, keys, 0, true);
    let index = settle(&run.c, Duration::from_secs(600));
    println!(
        "  populated {keys} keys in {:.1} s ({} failed writes), applied through {index}",
        t0.elapsed().as_secs_f64(),
        r.populate_errors
    );
}

/// (b) A wiped follower catches up a large state.
fn catchup_on(run: &mut Run) {
    let leader = run.c.wait_leader(&run.c.all(), Duration::from_secs(10)).expect("leader");
    let f = (leader + 1) % 3;
    let keys = run.c.node_status(leader).map_or(0, |s| s.keys);
    let commit = settle(&run.c, Duration::from_secs(120));
    run.c.kill(f);
    let dir = run.work_dir.join(&run.c.nodes[f].id);
    std::fs::remove_dir_all(&dir).expect("wipe");
    let t0 = Instant::now();
    run.c.restart(f).expect("restart");
    let deadline = t0 + Duration::from_secs(1800);
    loop {
        let s = run.c.node_status(f);
        if s.is_some_and(|s| s.last_applied >= commit && s.keys == keys) {
            break;
        }
        assert!(Instant::now() < deadline, "the wiped follower did not catch up");
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = t0.elapsed();
    println!(
        "catchup: wiped {} caught up a {keys}-key state (applied {commit}) in {:.2} s after its \
         restart",
        run.c.nodes[f].id,
        took.as_secs_f64()
    );
    let fid = format!("to {} ", run.c.nodes[f].id);
    for l in log_lines(run, leader, "sent snapshot").iter().filter(|l| l.contains(&fid)) {
        println!("  leader: {l}");
    }
    for l in log_lines(run, f, "state machine loaded from snapshot") {
        println!("  follower: {l}");
    }
    println!("  follower data dir: {:.1} MiB", mib(dir_size(&dir)));
}

fn catchup() {
    let keys = env_u64("MEASURE_KEYS", 1_000_000);
    println!("catchup: {keys} keys of 100 bytes, default snapshot settings");
    let mut run = cluster("catchup", &[]);
    populate(&run, keys);
    catchup_on(&mut run);
}

/// (c) Put latency while every node snapshots a large state, against the same without.
fn pause() {
    let keys = env_u64("MEASURE_KEYS", 1_000_000);
    let ops = env_u64("PAUSE_OPS", 40_000);
    // The first snapshot comes a quarter into the second run: populating takes `keys` entries
    // (and a no-op or two), the first run `ops`.
    let threshold = keys + ops + ops / 4;
    println!(
        "pause: {keys} keys of 100 bytes, --snapshot-threshold {threshold}, {ops} puts per run"
    );
    let mut run = cluster("pause", &["--snapshot-threshold", &threshold.to_string()]);
    populate(&run, keys);
    let before = bench_run(&run.c, keys, ops, false);
    let snapshots_before = log_lines(&run, 0, "snapshot at index").len();
    let during = bench_run(&run.c, keys, ops, false);
    println!("  ({snapshots_before} snapshots before the second run)");
    print_bench("without a snapshot", &before);
    print_bench("during snapshots ", &during);
    for i in run.c.all() {
        for l in log_lines(&run, i, "snapshot at index") {
            println!("  node{}: {l}", i + 1);
        }
    }
    settle(&run.c, Duration::from_secs(120));
    catchup_on(&mut run);
}

fn main() {
    let what = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    let all = what == "all";
    if all || what == "size" {
        size();
    }
    if all || what == "pause" {
        pause();
    }
    if what == "catchup" {
        catchup();
    }
}
