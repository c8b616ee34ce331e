//! Measures what the issues ask to report, on real `raftlabkv-server` processes on loopback.
//!
//! ```text
//! cargo build --release && cargo run --release --example measure -- [election|latency|idle|fsync|recovery|all]
//! ```
//!
//! - `election`: time from `kill -9` of the leader to a new leader (10 runs: median, max);
//! - `latency`: 1,000 sequential puts through the leader (p50, p99, mean);
//! - `idle`: peer RPCs per second of an idle 3-node cluster;
//! - `fsync`: fsyncs per committed write with 64 concurrent clients (group commit);
//! - `recovery`: restart of a whole 3-node cluster holding 100,000 keys, until it serves again.
//!
//! Env: `SERVER_BIN` (default `target/release/raftlabkv-server`).

use std::time::{Duration, Instant};

use raftlabkv::api::{PutRequest, Status};
use raftlabkv::testkit::{Cluster, ClusterOptions};

fn cluster(name: &str, extra: &[&str]) -> Cluster {
    let bin =
        std::env::var("SERVER_BIN").unwrap_or_else(|_| "target/release/raftlabkv-server".into());
    let work_dir =
        std::env::temp_dir().join(format!("raftlabkv-measure-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work_dir);
    Cluster::start(ClusterOptions {
        nodes: 3,
        server_bin: bin.into(),
        work_dir,
        data_dirs: true,
        extra_args: extra.iter().map(|s| s.to_string()).collect(),
        peer_secret: false,
    })
    .expect("start cluster")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn election() {
    let mut c = cluster("election", &[]);
    let mut times = Vec::new();
    for _ in 0..10 {
        let old = c.wait_leader(&c.all(), Duration::from_secs(10)).expect("leader");
        // Let the cluster settle so every follower has heard a recent heartbeat.
        std::thread::sleep(Duration::from_millis(300));
        let rest: Vec<usize> = c.all().into_iter().filter(|&i| i != old).collect();
        let t0 = Instant::now();
        c.kill(old);
        let deadline = t0 + Duration::from_secs(10);
        let mut new = None;
        while Instant::now() < deadline {
            if let Some(l) =
                rest.iter().copied().find(|&i| c.node_status(i).is_some_and(|s| s.is_leader))
            {
                new = Some(l);
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let took = t0.elapsed().as_secs_f64() * 1000.0;
        assert!(new.is_some(), "no new leader within 10 s");
        times.push(took);
        c.restart(old).expect("restart");
        c.wait_leader(&c.all(), Duration::from_secs(10)).expect("all agree");
    }
    times.sort_by(f64::total_cmp);
    println!(
        "election after leader kill (10 runs, ms): median {:.0} max {:.0} all {:?}",
        percentile(&times, 50.0),
        times[times.len() - 1],
        times.iter().map(|t| t.round()).collect::<Vec<_>>()
    );
}

fn latency() {
    let c = cluster("latency", &[]);
    let l = c.wait_leader(&c.all(), Duration::from_secs(10)).expect("leader");
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
    let url = format!("http://{}/kv/put", c.nodes[l].addr);
    let value = "v".repeat(100);
    let mut lat = Vec::new();
    for i in 0..1000 {
        let put = PutRequest {
            key: format!("key-{i}").into(),
            value: value.as_str().into(),
            if_revision: None,
        };
        let body = serde_json::to_string(&put).expect("encode a put");
        let t0 = Instant::now();
        let r = agent.post(&url).set("Content-Type", "application/json").send_string(&body);
        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
        assert!(r.is_ok(), "put failed: {r:?}");
    }
    let mean = lat.iter().sum::<f64>() / lat.len() as f64;
    lat.sort_by(f64::total_cmp);
    println!(
        "sequential put through the leader (1000 puts, 100-byte values, fsync on, ms): p50 {:.3} p99 {:.3} mean {:.3} max {:.3}",
        percentile(&lat, 50.0),
        percentile(&lat, 99.0),
        mean,
        lat[lat.len() - 1]
    );
}

/// The sum of one `/status` counter over the nodes that answer.
fn total(c: &Cluster, field: fn(&Status) -> u64) -> u64 {
    c.all().iter().filter_map(|&i| c.node_status(i)).map(|s| field(&s)).sum()
}

/// Entries node `i` has applied since it started (0 if it does not answer).
fn applied(c: &Cluster, i: usize) -> u64 {
    c.node_status(i).map_or(0, |s| s.entries_applied)
}

fn idle() {
    let c = cluster("idle", &[]);
    c.wait_leader(&c.all(), Duration::from_secs(10)).expect("leader");
    std::thread::sleep(Duration::from_secs(1));
    let (r0, t0) = (total(&c, |s| s.rpcs_sent), Instant::now());
    std::thread::sleep(Duration::from_secs(5));
    let (r1, secs) = (total(&c, |s| s.rpcs_sent), t0.elapsed().as_secs_f64());
    println!(
        "idle 3-node cluster: {:.1} peer RPCs per second (all nodes, requests)",
        (r1 - r0) as f64 / secs
    );
}

fn fsync() {
    let c = cluster("fsync", &[]);
    let l = c.wait_leader(&c.all(), Duration::from_secs(10)).expect("leader");
    let client =
        std::env::var("CLIENT_BIN").unwrap_or_else(|_| "target/release/raftlabkv-client".into());
    let (f0, a0) = (total(&c, |s| s.fsyncs), applied(&c, l));
    let out = std::process::Command::new(client)
        .args([
            "--servers",
            &c.nodes[l].addr,
            "bench",
            "--clients",
            "64",
            "--duration",
            "5",
            "--target",
            &c.nodes[l].addr,
        ])
        .output()
        .expect("run the bench");
    print!("{}", String::from_utf8_lossy(&out.stdout));
    let (f1, a1) = (total(&c, |s| s.fsyncs), applied(&c, l));
    let writes = (a1 - a0).max(1);
    println!(
        "64 clients: {writes} committed writes, {} fsyncs on 3 nodes: {:.3} fsyncs per write per node",
        f1 - f0,
        (f1 - f0) as f64 / writes as f64 / 3.0
    );
}

fn recovery() {
    let mut c = cluster("recovery", &[]);
    let l = c.wait_leader(&c.all(), Duration::from_secs(10)).expect("leader");
    let client =
        std::env::var("CLIENT_BIN").unwrap_or_else(|_| "target/release/raftlabkv-client".into());
    let out = std::process::Command::new(client)
        .args([
            "--servers",
            &c.nodes[l].addr,
            "bench",
            "--clients",
            "32",
            "--ops",
            "100000",
            "--keys",
            "100000",
            "--target",
            &c.nodes[l].addr,
        ])
        .output()
        .expect("run the bench");
    print!("{}", String::from_utf8_lossy(&out.stdout));
    let keys_before = c.node_status(l).map_or(0, |s| s.keys);
    for i in c.all() {
        c.kill(i);
    }
    let t0 = Instant::now();
    for i in c.all() {
        c.restart(i).expect("restart");
    }
    let l = c.wait_leader(&c.all(), Duration::from_secs(30)).expect("leader after restart");
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
    // Serving = a linearizable read answers with the full state.
    loop {
        let url = format!("http://{}/status", c.nodes[l].addr);
        if let Ok(r) = agent.get(&url).call() {
            let s = serde_json::from_str::<Status>(&r.into_string().unwrap_or_default());
            if s.is_ok_and(|s| s.keys == keys_before) {
                break;
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "cluster did not recover within 60 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    let url = format!("http://{}/kv/get/bench-key-000001", c.nodes[l].addr);
    let _ = agent.get(&url).call();
    println!(
        "restart of a 3-node cluster holding {keys_before} keys (kill -9 all, restart all): serving the full state after {:.2} s",
        t0.elapsed().as_secs_f64()
    );
}

fn main() {
    let what = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    let all = what == "all";
    if all || what == "election" {
        election();
    }
    if all || what == "latency" {
        latency();
    }
    if all || what == "idle" {
        idle();
    }
    if all || what == "fsync" {
        fsync();
    }
    if all || what == "recovery" {
        recovery();
    }
}
