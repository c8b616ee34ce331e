//! Measures the coordination API (issue 12) on real `raftlabkv-server` processes (3 nodes, data
//! dirs, fsync on, loopback):
//!
//! ```text
//! cargo build --release && cargo run --release --example measure_coord -- [txn|cas|range|memory|all]
//! ```
//!
//! - `txn`: transactions of two compares and two puts, 64 clients for 10 s (each client its own
//!   keys, so every one succeeds): throughput, p50, p99;
//! - `cas`: compare-and-set increments of one hot key by 16 clients (linearizable read, then a
//!   put with `if_revision`; a 412 means another client won: read again), 10 s: increments/s,
//!   attempts/s, p50/p99 of an increment (read to successful put), and the final value checked
//!   against the count;
//! - `range`: 100,000 keys of 100 bytes; a full prefix range alone (10 runs), then 16 put
//!   clients for 10 s without and with a thread running full ranges back to back: the writes' p99
//!   with and without, and the ranges' latency under the load;
//! - `memory`: the leader's resident set holding 1,000,000 keys of 100-byte values, per key; its
//!   peak while it snapshots them (20,000 overwrites, RSS sampled every 5 ms); and the
//!   idempotency table at its cap (100,000 idempotent puts over 100 keys), per record.
//!
//! Env: `SERVER_BIN` (default `target/release/raftlabkv-server`), `MEASURE_SECS` (10),
//! `MEASURE_KEYS` (1,000,000 for `memory`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use raftlabkv::client::bench::{self, BenchConfig, Workload};
use raftlabkv::testkit::{Cluster, ClusterOptions, env_u64};
use serde_json::{Value, json};

struct Run {
    c: Cluster,
    leader: usize,
    work_dir: std::path::PathBuf,
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
    let work_dir =
        std::env::temp_dir().join(format!("raftlabkv-measure-coord-{name}-{}", std::process::id()));
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
    let leader = c.wait_leader(&c.all(), Duration::from_secs(10)).expect("a leader");
    Run { c, leader, work_dir }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .max_idle_connections_per_host(4)
        .build()
}

/// POST `body` to `url`: (status, JSON).
fn post(agent: &ureq::Agent, url: &str, body: &Value, key: Option<&str>) -> (u16, Value) {
    let mut req = agent.post(url).set("Content-Type", "application/json");
    if let Some(k) = key {
        req = req.set("Idempotency-Key", k);
    }
    match req.send_string(&body.to_string()) {
        Ok(r) | Err(ureq::Error::Status(_, r)) => {
            let status = r.status();
            (
                status,
                serde_json::from_str(&r.into_string().unwrap_or_default()).unwrap_or(Value::Null),
            )
        }
        Err(_) => (0, Value::Null),
    }
}

fn get(agent: &ureq::Agent, url: &str) -> (u16, Value) {
    match agent.get(url).call() {
        Ok(r) | Err(ureq::Error::Status(_, r)) => {
            let status = r.status();
            (
                status,
                serde_json::from_str(&r.into_string().unwrap_or_default()).unwrap_or(Value::Null),
            )
        }
        Err(_) => (0, Value::Null),
    }
}

/// The whole body (ureq's `into_string` stops at 10 MB).
fn read_all(r: ureq::Response) -> String {
    use std::io::Read;
    let mut text = String::new();
    let _ = r.into_reader().read_to_string(&mut text);
    text
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e3
}

fn summary(label: &str, mut lat: Vec<Duration>, secs: f64) {
    lat.sort_unstable();
    println!(
        "  {label}: {} in {secs:.1} s = {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        lat.len(),
        lat.len() as f64 / secs,
        pct(&lat, 0.50),
        pct(&lat, 0.99),
        pct(&lat, 1.0)
    );
}

fn secs() -> Duration {
    Duration::from_secs(env_u64("MEASURE_SECS", 10))
}

/// Transactions of two compares and two puts, 64 clients.
fn txn() {
    println!("txn: two compares, two puts, 64 clients");
    let run = cluster("txn", &[]);
    let base = format!("http://{}", run.c.nodes[run.leader].addr);
    let end = Instant::now() + secs();
    let t0 = Instant::now();
    let lat: Vec<Duration> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..64)
            .map(|c| {
                let base = base.clone();
                s.spawn(move || {
                    let agent = agent();
                    let (a, b, lock) = (format!("t/{c}/a"), format!("t/{c}/b"), format!("t/{c}/lock"));
                    let (_, r) = post(&agent, &format!("{base}/kv/put"), &json!({"key": a, "value": "0"}), None);
                    let mut rev = r["revision"].as_u64().unwrap_or(0);
                    let mut lat = Vec::new();
                    let mut n = 0u64;
                    while Instant::now() < end {
                        n += 1;
                        let body = json!({
                            "compare": [{"key": a, "target": "mod_revision", "op": "==", "value": rev},
                                        {"key": lock, "target": "version", "op": "==", "value": 0}],
                            "success": [{"put": {"key": a, "value": n.to_string()}},
                                        {"put": {"key": b, "value": n.to_string()}}]});
                        let t = Instant::now();
                        let (status, r) = post(&agent, &format!("{base}/kv/txn"), &body, None);
                        if status == 200 && r["succeeded"] == true {
                            lat.push(t.elapsed());
                            rev = r["revision"].as_u64().unwrap_or(rev);
                        } else {
                            eprintln!("txn failed: {status} {r}");
                            let (_, kv) = get(&agent, &format!("{base}/kv/get/t%2F{c}%2Fa"));
                            rev = kv["mod_revision"].as_u64().unwrap_or(rev);
                        }
                    }
                    lat
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    });
    summary("succeeded transactions", lat, t0.elapsed().as_secs_f64());
}

/// Compare-and-set increments of one hot key, 16 clients.
fn cas() {
    println!("cas: increments of one hot key, 16 clients (read, then put with if_revision)");
    let run = cluster("cas", &[]);
    let base = format!("http://{}", run.c.nodes[run.leader].addr);
    post(&agent(), &format!("{base}/kv/put"), &json!({"key": "hot", "value": "0"}), None);
    let attempts = AtomicU64::new(0);
    let end = Instant::now() + secs();
    let t0 = Instant::now();
    let lat: Vec<Duration> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..16)
            .map(|_| {
                let (base, attempts) = (base.clone(), &attempts);
                s.spawn(move || {
                    let agent = agent();
                    let mut lat = Vec::new();
                    while Instant::now() < end {
                        let t = Instant::now();
                        loop {
                            let (_, kv) = get(&agent, &format!("{base}/kv/get/hot"));
                            let (Some(v), Some(rev)) = (
                                kv["value"].as_str().and_then(|v| v.parse::<u64>().ok()),
                                kv["mod_revision"].as_u64(),
                            ) else {
                                continue;
                            };
                            attempts.fetch_add(1, Ordering::Relaxed);
                            let body = json!({"key": "hot", "value": (v + 1).to_string(), "if_revision": rev});
                            let (status, _) = post(&agent, &format!("{base}/kv/put"), &body, None);
                            if status == 200 {
                                lat.push(t.elapsed());
                                break;
                            }
                            if Instant::now() >= end + Duration::from_secs(5) {
                                break;
                            }
                        }
                    }
                    lat
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    });
    let took = t0.elapsed().as_secs_f64();
    let done = lat.len() as u64;
    let (_, kv) = get(&agent(), &format!("{base}/kv/get/hot"));
    let tried = attempts.load(Ordering::Relaxed);
    summary("successful increments (read to put)", lat, took);
    println!(
        "  attempts {tried} ({:.0}/s; {:.1} per increment); final value {} for {done} increments: {}",
        tried as f64 / took,
        tried as f64 / done.max(1) as f64,
        kv["value"],
        if kv["value"].as_str() == Some(&done.to_string()) { "exact" } else { "MISMATCH" }
    );
}

/// Populates `keys` keys `bench-N` of 100 bytes through the bench tool (64 clients).
fn populate(run: &Run, keys: u64) {
    let t0 = Instant::now();
    let config = BenchConfig {
        servers: run.c.nodes.iter().map(|n| n.addr.clone()).collect(),
        target: Some(run.c.nodes[run.leader].addr.clone()),
        clients: 64,
        duration: None,
        ops: Some(0),
        workload: Workload::Put,
        read_ratio: 0.0,
        value_size: 100,
        keys,
        populate: Some(true),
        consistency: Default::default(),
        request_timeout: Duration::from_secs(10),
    };
    let r = bench::run(&config).expect("populate");
    println!(
        "  populated {keys} keys in {:.1} s ({} failed)",
        t0.elapsed().as_secs_f64(),
        r.populate_errors
    );
}

/// 16 put clients for `secs()` on keys `w/N`; returns their latencies. While `ranging`, another
/// thread runs full ranges of `bench-` back to back and returns theirs.
fn writes_with(base: &str, ranging: bool) -> (Vec<Duration>, Vec<Duration>) {
    let end = Instant::now() + secs();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let ranges = s.spawn(|| {
            let agent = agent();
            let mut lat = Vec::new();
            while ranging && !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let r = agent.get(&format!("{base}/kv/range?prefix=bench-")).call();
                if let Ok(r) = r {
                    read_all(r);
                    lat.push(t.elapsed());
                }
            }
            lat
        });
        let hs: Vec<_> = (0..16)
            .map(|c| {
                s.spawn(move || {
                    let agent = agent();
                    let mut lat = Vec::new();
                    let mut n = 0;
                    while Instant::now() < end {
                        n += 1;
                        let body =
                            json!({"key": format!("w/{c}/{}", n % 100), "value": "x".repeat(100)});
                        let t = Instant::now();
                        if post(&agent, &format!("{base}/kv/put"), &body, None).0 == 200 {
                            lat.push(t.elapsed());
                        }
                    }
                    lat
                })
            })
            .collect();
        let writes = hs.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect();
        stop.store(true, Ordering::Relaxed);
        (writes, ranges.join().unwrap_or_default())
    })
}

fn range() {
    println!("range: a prefix range of 100,000 keys (100-byte values)");
    let run = cluster("range", &[]);
    populate(&run, 100_000);
    let base = format!("http://{}", run.c.nodes[run.leader].addr);
    let agent = agent();
    let mut alone = Vec::new();
    let mut bytes = 0;
    for _ in 0..10 {
        let t = Instant::now();
        let text = agent
            .get(&format!("{base}/kv/range?prefix=bench-"))
            .call()
            .ok()
            .map(read_all)
            .unwrap_or_default();
        alone.push(t.elapsed());
        bytes = text.len();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert_eq!(v["count"], 100_000, "the range has every key");
    }
    summary(&format!("full range alone ({:.1} MB each)", bytes as f64 / 1e6), alone, 1.0);
    let (w, _) = writes_with(&base, false);
    summary("16-client puts, no range running", w, secs().as_secs_f64());
    let (w, r) = writes_with(&base, true);
    summary("16-client puts while full ranges run back to back", w, secs().as_secs_f64());
    summary("full ranges under that load", r, secs().as_secs_f64());
}

/// VmRSS of `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next().and_then(|kb| kb.parse::<u64>().ok()))
        .map_or(0, |kb| kb * 1024)
}

/// Puts number 0 to `count - 1` to `base` from 64 clients, each put's body and idempotency key
/// made by `put(n)`.
fn puts_from_64_clients(
    base: &str,
    count: u64,
    put: impl Fn(u64) -> (Value, Option<String>) + Sync,
) {
    let next = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..64 {
            s.spawn(|| {
                let agent = agent();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= count {
                        break;
                    }
                    let (body, key) = put(n);
                    post(&agent, &format!("{base}/kv/put"), &body, key.as_deref());
                }
            });
        }
    });
}

/// The leader's peak resident set while it snapshots its full store: 20,000 overwrites of
/// existing keys (64 clients; two snapshot thresholds' worth) with the RSS sampled every 5 ms
/// until the leader has recorded a snapshot taken after them began.
fn snapshot_peak(base: &str, pid: u32, full: u64) {
    let status_agent = agent();
    let snap = || get(&status_agent, &format!("{base}/debug/raft")).1["snapshotIndex"].as_u64();
    let before = snap().unwrap_or(0);
    let (stop, peak) = (AtomicBool::new(false), AtomicU64::new(0));
    let writes = 20_000u64;
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        puts_from_64_clients(base, writes, |n| {
            (json!({"key": format!("bench-{n}"), "value": "y".repeat(100)}), None)
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        while snap().unwrap_or(0) < before + writes / 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let (peak, after) = (peak.load(Ordering::Relaxed), snap().unwrap_or(0));
    println!(
        "  while snapshotting them (snapshot index {before} -> {after}): peak RSS {:.0} MB, \
         {:+.0}% over the {:.0} MB at rest",
        peak as f64 / 1e6,
        (peak as f64 / full as f64 - 1.0) * 100.0,
        full as f64 / 1e6
    );
}

fn memory() {
    let keys = env_u64("MEASURE_KEYS", 1_000_000);
    println!("memory: {keys} keys of 100-byte values; the idempotency table at its cap");
    {
        let run = cluster("memory", &[]);
        let pid = run.c.pid(run.leader).expect("leader pid");
        let base = format!("http://{}", run.c.nodes[run.leader].addr);
        let empty = rss(pid);
        populate(&run, keys);
        std::thread::sleep(Duration::from_secs(3));
        let full = rss(pid);
        println!(
            "  leader RSS {:.0} MB empty, {:.0} MB with {keys} keys: {:.0} bytes per key \
             ({:.0} above the empty process)",
            empty as f64 / 1e6,
            full as f64 / 1e6,
            full as f64 / keys as f64,
            (full - empty) as f64 / keys as f64
        );
        snapshot_peak(&base, pid, full);
        let cap = 100_000u64;
        let before = rss(pid);
        puts_from_64_clients(&base, cap, |n| {
            let body = json!({"key": format!("i/{}", n % 100), "value": "x".repeat(100)});
            (body, Some(format!("{n:032x}")))
        });
        std::thread::sleep(Duration::from_secs(3));
        let after = rss(pid);
        println!(
            "  idempotency table at its cap ({cap} records of a put): RSS +{:.1} MB = {:.0} bytes per record",
            (after as f64 - before as f64) / 1e6,
            (after as f64 - before as f64) / cap as f64
        );
    }
}

fn main() {
    let what = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    match what.as_str() {
        "txn" => txn(),
        "cas" => cas(),
        "range" => range(),
        "memory" => memory(),
        "all" => {
            txn();
            cas();
            range();
            memory();
        }
        other => eprintln!("unknown measurement {other:?}: txn, cas, range, memory or all"),
    }
}
