//! Measures what issue 11 asks to report about the dashboard, on real `raftlabkv-server`
//! processes on loopback and a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`).
//!
//! ```text
//! cargo build --release && cargo run --release --example measure_dashboard -- [idle|latency|viewer URL SECS]
//! ```
//!
//! - `idle`: CPU time (user + system, from `/proc/PID/stat`) of the 3 nodes of an idle cluster
//!   over `SECS` seconds (default 20), without a viewer and then with one dashboard open;
//! - `latency`: the time from a leader change (the new leader's `role` event on its own
//!   `/debug/events`, stamped by the server) to the page showing that leader (`Date.now()` when
//!   the page first draws it; same machine, same clock), over `RUNS` (default 10) isolations of
//!   the leader from the page's fault lab; median and max;
//! - `viewer URL SECS`: keeps a dashboard open on `URL` for `SECS` seconds, retrying until the
//!   page loads (used to run `compare.sh` with a viewer connected).

#[path = "../tests/support/webdriver.rs"]
#[allow(dead_code)]
mod webdriver;

use std::time::{Duration, Instant};

use raftlabkv::testkit::sse::{Stream, open};
use raftlabkv::testkit::{Cluster, ClusterOptions, env_u64, poll_every};
use serde_json::{Value, json};
use webdriver::{Browser, find_browser};

fn cluster(name: &str) -> Cluster {
    let bin =
        std::env::var("SERVER_BIN").unwrap_or_else(|_| "target/release/raftlabkv-server".into());
    let work_dir =
        std::env::temp_dir().join(format!("raftlabkv-measure-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work_dir);
    let c = Cluster::start(ClusterOptions {
        nodes: 3,
        server_bin: bin.into(),
        work_dir,
        data_dirs: true,
        extra_args: vec!["--enable-fault-injection".into()],
        peer_secret: true,
    })
    .expect("start the cluster");
    c.wait_leader(&c.all(), Duration::from_secs(10)).expect("a leader");
    c
}

fn browser() -> Browser {
    let (chromium, driver) = find_browser().expect("chromium and chromedriver");
    Browser::start(&chromium, &driver, 1440, 1000).expect("start headless chromium")
}

/// User + system CPU ticks of process `pid` so far.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12) // utime, stime (fields 14 and 15 of the whole line)
}

/// CPU milliseconds per second of wall time used by the cluster's nodes over `secs`.
fn cluster_cpu(c: &Cluster, secs: u64) -> f64 {
    let pids: Vec<u32> = c.all().into_iter().filter_map(|i| c.pid(i)).collect();
    let before: u64 = pids.iter().map(|&p| cpu_ticks(p)).sum();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let after: u64 = pids.iter().map(|&p| cpu_ticks(p)).sum();
    // Linux reports these in USER_HZ, 100 per second on every architecture we run on.
    let cpu_ms = (after - before) as f64 * 10.0;
    cpu_ms / started.elapsed().as_secs_f64()
}

fn idle() {
    let secs = env_u64("SECS", 20);
    let c = cluster("idle");
    std::thread::sleep(Duration::from_secs(2)); // settle after the election
    let without = cluster_cpu(&c, secs);
    let b = browser();
    b.goto(&format!("http://{}/dashboard", c.nodes[0].addr)).expect("open the dashboard");
    std::thread::sleep(Duration::from_secs(2));
    let with = cluster_cpu(&c, secs);
    drop(b);
    std::thread::sleep(Duration::from_secs(2));
    let after = cluster_cpu(&c, secs);
    println!("idle 3-node cluster, CPU of the 3 nodes together over {secs} s each:");
    println!("  no viewer:          {without:6.1} ms/s ({:.2}% of one core)", without / 10.0);
    println!("  one dashboard open: {with:6.1} ms/s ({:.2}% of one core)", with / 10.0);
    println!("  viewer closed:      {after:6.1} ms/s ({:.2}% of one core)", after / 10.0);
}

/// The `atMs` of the `role` event in which `id` became leader of `term`, from its stream.
fn leader_event(stream: &Stream, id: &str, term: u64) -> Option<u64> {
    let ev = stream.wait(Duration::from_secs(10), "role", |m| {
        m["role"] == "leader" && m["term"] == json!(term) && m["leader"] == json!(id)
    })?;
    ev["atMs"].as_u64()
}

fn latency() {
    let runs = env_u64("RUNS", 10);
    let c = cluster("latency");
    let b = browser();
    b.goto(&format!("http://{}/dashboard", c.nodes[0].addr)).expect("open the dashboard");
    let mut took = Vec::new();
    for run in 0..runs {
        let leader = c.wait_leader(&c.all(), Duration::from_secs(10)).expect("a leader");
        let term = c.node_status(leader).map_or(0, |s| s.term);
        // Each run listens afresh, so the new leader's event is not among old ones.
        let streams: Vec<Stream> = c.all().into_iter().map(|i| open(&c.nodes[i].addr)).collect();
        for s in &streams {
            let _ = s.wait(Duration::from_secs(5), "hello", |_| true);
        }
        let cut = json!({"action": "cut", "peer": "*", "direction": "both"});
        assert_eq!(c.call(leader, "POST", "/debug/fault", Some(&cut)).status, 200);
        let others: Vec<usize> = c.all().into_iter().filter(|&i| i != leader).collect();
        let new = poll_every(Duration::from_millis(10), Duration::from_secs(15), || {
            others
                .iter()
                .copied()
                .find(|&i| c.node_status(i).is_some_and(|s| s.is_leader && s.term > term))
        })
        .expect("a new leader");
        let (id, new_term) = (c.nodes[new].id.clone(), c.node_status(new).map_or(0, |s| s.term));
        let elected = leader_event(&streams[new], &id, new_term).expect("the leader's role event");
        let key = format!("{id}@{new_term}");
        let shown = b
            .wait_for(
                Duration::from_secs(10),
                "return window.leaderShown[arguments[0]] || null;",
                json!([key]),
            )
            .expect("evaluate");
        let shown = shown.as_u64().expect("the page shows the new leader");
        let ms = shown.saturating_sub(elected);
        println!("run {run}: {key} elected at {elected}, on the page {ms} ms later");
        took.push(ms);
        assert_eq!(
            c.call(leader, "POST", "/debug/fault", Some(&json!({"action": "heal"}))).status,
            200
        );
        // Wait until the old leader follows again.
        let _ = poll_every(Duration::from_millis(20), Duration::from_secs(10), || {
            c.node_status(leader).filter(|s| !s.is_leader && s.term >= new_term).map(|_| ())
        });
    }
    took.sort_unstable();
    let median = took[took.len() / 2];
    println!(
        "leader change to page: median {median} ms, max {} ms ({runs} runs)",
        took[took.len() - 1]
    );
}

fn viewer(url: &str, secs: u64) {
    let b = browser();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let loaded = poll_every(Duration::from_millis(200), Duration::from_secs(60), || {
        b.goto(url).ok()?;
        let v: Value =
            b.eval("return document.querySelectorAll('#nodes .node').length;", json!([])).ok()?;
        (v.as_u64().unwrap_or(0) > 0).then_some(())
    });
    eprintln!("viewer: {} {url}", if loaded.is_some() { "watching" } else { "could not load" });
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Opens `url`, waits until every card has answered (or `secs`), and saves a screenshot.
fn shot(url: &str, file: &str, secs: u64) {
    let b = browser();
    let _ = b.goto(url);
    let answered = b.wait_for(
        Duration::from_secs(secs),
        "const c = [...document.querySelectorAll('#nodes .node')];
         return c.length > 0 && c.every(n => n.dataset.role !== 'down')
             ? c.map(n => n.dataset.node + ':' + n.dataset.role).join(' ') : null;",
        json!([]),
    );
    eprintln!("shot: {answered:?}");
    if let Err(e) = b.screenshot(std::path::Path::new(file)) {
        eprintln!("screenshot failed: {e}");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("idle") => idle(),
        Some("latency") => latency(),
        Some("viewer") => {
            let url =
                args.get(1).cloned().unwrap_or_else(|| "http://127.0.0.1:28401/dashboard".into());
            viewer(&url, args.get(2).and_then(|s| s.parse().ok()).unwrap_or(120));
        }
        Some("shot") => shot(
            args.get(1).map_or("http://127.0.0.1:8080/dashboard", String::as_str),
            args.get(2).map_or("dashboard.png", String::as_str),
            args.get(3).and_then(|s| s.parse().ok()).unwrap_or(10),
        ),
        _ => eprintln!(
            "usage: measure_dashboard idle | latency | viewer URL SECS | shot URL FILE [SECS]"
        ),
    }
}
