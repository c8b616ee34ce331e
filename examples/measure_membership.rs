//! Measures what issue 10 asks to report, on real `raftlabkv-server` processes on loopback.
//!
//! ```text
//! cargo build --release && cargo run --release --example measure_membership -- [gap|rolling|join]
//! ```
//!
//! - `gap`: the longest gap between successful writes of a 16-client load during a leadership
//!   transfer (`POST /cluster/leader`) and after `kill -9` of the leader; 10 runs each (median,
//!   max);
//! - `rolling`: a rolling restart (SIGTERM, restart, wait) of all 3 nodes under a 64-client write
//!   load: failed requests and the longest gap;
//! - `join`: a learner joining a cluster holding `KEYS` keys (default 1,000,000; 100-byte
//!   values): the time until it has caught up and is promoted.
//!
//! Env: `SERVER_BIN` (default `target/release/raftlabkv-server`), `KEYS`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use raftlabkv::client::Client;
use raftlabkv::testkit::{Cluster, ClusterOptions, env_u64};

fn cluster(name: &str) -> Cluster {
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
        extra_args: vec![],
        peer_secret: true,
    })
    .expect("start cluster")
}

fn client(c: &Cluster) -> Client {
    let servers = c.nodes.iter().map(|n| n.addr.clone()).collect();
    Client::builder(servers)
        .request_timeout(Duration::from_secs(2))
        .retry_deadline(Duration::from_secs(10))
        .build()
}

/// A write load: `clients` threads putting as fast as they can; every success's time is kept.
struct Load {
    stop: Arc<AtomicBool>,
    successes: Arc<Mutex<Vec<Instant>>>,
    failures: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(c: &Cluster, clients: usize) -> Load {
        let (stop, successes, failures) =
            (Arc::new(AtomicBool::new(false)), Arc::default(), Arc::new(AtomicU64::new(0)));
        let threads = (0..clients)
            .map(|t| {
                let cl = client(c);
                let (stop, ok, failed): (Arc<AtomicBool>, Arc<Mutex<Vec<Instant>>>, _) =
                    (stop.clone(), Arc::clone(&successes), failures.clone());
                std::thread::spawn(move || {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        match cl.put(&format!("load-{t}-{}", i % 100), "x".repeat(100).as_str()) {
                            Ok(_) => ok.lock().push(Instant::now()),
                            Err(_) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })
            })
            .collect();
        Load { stop, successes, failures, threads }
    }

    /// Stops the load; the longest gap between successes in `from..`, in ms, and the failures.
    fn finish(self, from: Instant) -> (f64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        let mut times: Vec<Instant> =
            self.successes.lock().iter().copied().filter(|t| *t >= from).collect();
        times.sort();
        let mut gap = times.first().map_or(0.0, |t| (*t - from).as_secs_f64() * 1000.0);
        for w in times.windows(2) {
            gap = gap.max((w[1] - w[0]).as_secs_f64() * 1000.0);
        }
        (gap, self.failures.load(Ordering::Relaxed))
    }
}

fn median_max(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[v.len() - 1])
}

fn gap() {
    let mut c = cluster("gap");
    let cl = client(&c);
    let (mut transfer, mut killed) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        c.wait_leader(&c.all(), Duration::from_secs(10)).expect("leader");
        let load = Load::start(&c, 16);
        std::thread::sleep(Duration::from_millis(500));
        let t0 = Instant::now();
        cl.transfer_leader(None).expect("transfer");
        std::thread::sleep(Duration::from_millis(1000));
        transfer.push(load.finish(t0).0);
    }
    for _ in 0..10 {
        let old = c.wait_leader(&c.all(), Duration::from_secs(10)).expect("leader");
        let load = Load::start(&c, 16);
        std::thread::sleep(Duration::from_millis(500));
        let t0 = Instant::now();
        c.kill(old);
        std::thread::sleep(Duration::from_millis(2500));
        killed.push(load.finish(t0).0);
        c.restart(old).expect("restart");
    }
    let ((tm, tx), (km, kx)) = (median_max(transfer.clone()), median_max(killed.clone()));
    println!("longest write gap, 16 clients, 10 runs each (ms):");
    println!("  leadership transfer: median {tm:.0} max {tx:.0} all {:?}", rounded(&transfer));
    println!("  kill -9 of the leader: median {km:.0} max {kx:.0} all {:?}", rounded(&killed));
}

fn rolling() {
    let mut c = cluster("rolling");
    c.wait_leader(&c.all(), Duration::from_secs(10)).expect("leader");
    let load = Load::start(&c, 64);
    std::thread::sleep(Duration::from_millis(1000));
    let t0 = Instant::now();
    for i in 0..3 {
        assert_eq!(c.terminate(i, Duration::from_secs(10)), Some(0), "node{} exits cleanly", i + 1);
        c.restart(i).expect("restart");
        let back = Instant::now() + Duration::from_secs(20);
        while Instant::now() < back && c.node_status(i).is_none_or(|s| s.leader.is_none()) {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let ok = load.successes.lock().len();
    let (gap, failed) = load.finish(t0);
    println!(
        "rolling restart of 3 nodes under 64 clients: {failed} failed requests of {}, \
         longest write gap {gap:.0} ms",
        ok as u64 + failed
    );
}

fn join() {
    let keys = env_u64("KEYS", 1_000_000);
    let mut c = cluster("join");
    c.wait_leader(&c.all(), Duration::from_secs(10)).expect("leader");
    let value = "v".repeat(100);
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let writers: Vec<JoinHandle<()>> = (0..32)
        .map(|_| {
            let (cl, next, value) = (client(&c), next.clone(), value.clone());
            std::thread::spawn(move || {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= keys {
                        return;
                    }
                    cl.put(&format!("key{k:08}"), &value).expect("populate");
                }
            })
        })
        .collect();
    for w in writers {
        let _ = w.join();
    }
    println!("populated {keys} keys in {:.1} s", started.elapsed().as_secs_f64());
    let n4 = c.add_joining_node().expect("node4");
    let t0 = Instant::now();
    let addr = c.nodes[n4].addr.clone();
    let view = client(&c).add_and_promote("node4", &addr, Duration::from_secs(600)).expect("join");
    let took = t0.elapsed().as_secs_f64();
    let role = view.members.iter().find(|m| m.id == "node4").map(|m| m.role.clone());
    println!(
        "a learner joined a {keys}-key cluster, caught up and was promoted in {took:.1} s ({role:?})"
    );
}

fn rounded(v: &[f64]) -> Vec<f64> {
    v.iter().map(|t| t.round()).collect()
}

fn main() {
    match std::env::args().nth(1).as_deref().unwrap_or("gap") {
        "gap" => gap(),
        "rolling" => rolling(),
        "join" => join(),
        other => eprintln!("unknown mode {other}: gap, rolling or join"),
    }
}
