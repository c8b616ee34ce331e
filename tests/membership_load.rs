//! Real binaries under a write load (issue 10, section 6): a cluster that grows from 3 to 5
//! voters while clients write, and a rolling restart (SIGTERM, restart, catch up) of every node
//! while clients write. Every acknowledged write is checked on every node at the end. Polls
//! with deadlines; no fixed sleep decides anything, and nothing is asserted about timing.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use raftlabkv::api::MembersReply;
use raftlabkv::error::Error;
use raftlabkv::testkit::{Cluster, poll_every};

use support::members::{client, cluster, leader};

const POLL: Duration = Duration::from_millis(20);

/// What the load's clients saw.
#[derive(Default)]
struct Tally {
    /// Every acknowledged write: key and the value acknowledged for it (each key once).
    acked: Vec<(String, String)>,
    /// Failed writes by kind: `unavailable` (not applied, retry deadline passed) and
    /// `outcome_unknown` (may or may not be applied) are what a client of a changing cluster
    /// can expect; anything else is kept whole in `unexpected`.
    failed: BTreeMap<&'static str, u64>,
    unexpected: Vec<String>,
}

/// `clients` threads, each writing distinct keys (`t{thread}-{n}`) as fast as it can through
/// its own client, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    acked_count: Arc<AtomicU64>,
    tally: Arc<Mutex<Tally>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(c: &Cluster, nodes: &[usize], clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked_count = Arc::new(AtomicU64::new(0));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let threads = (0..clients)
            .map(|t| {
                let cl = client(c, nodes);
                let (stop, count, tally) = (stop.clone(), acked_count.clone(), tally.clone());
                std::thread::Builder::new()
                    .name(format!("load-{t}"))
                    .spawn(move || {
                        let mut n = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            n += 1;
                            let (key, value) = (format!("t{t}-{n}"), format!("v{t}-{n}"));
                            let result = cl.put(&key, &value);
                            let mut tally = tally.lock();
                            match result {
                                Ok(_) => {
                                    tally.acked.push((key, value));
                                    count.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(Error::Unavailable(_)) => {
                                    *tally.failed.entry("unavailable").or_default() += 1
                                }
                                Err(Error::OutcomeUnknown(_)) => {
                                    *tally.failed.entry("outcome_unknown").or_default() += 1
                                }
                                Err(e) => {
                                    *tally.failed.entry("unexpected").or_default() += 1;
                                    tally.unexpected.push(format!("put {key}: {e}"));
                                }
                            }
                        }
                    })
                    .expect("spawn a load thread")
            })
            .collect();
        Load { stop, acked_count, tally, threads }
    }

    fn acked(&self) -> u64 {
        self.acked_count.load(Ordering::Relaxed)
    }

    /// Waits until more than `than` writes have been acknowledged: the load still makes
    /// progress (a deadline, not a timing bound). Returns the count then.
    fn wait_beyond(&self, than: u64, what: &str) -> u64 {
        poll_every(POLL, Duration::from_secs(20), || (self.acked() > than).then(|| self.acked()))
            .unwrap_or_else(|| panic!("no write acknowledged {what} ({than} before)"))
    }

    fn finish(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("a load thread panicked");
        }
        std::mem::take(&mut *self.tally.lock())
    }
}

/// The leader's commit index once every node in `nodes` has applied it: after this, a stale
/// read on any of them sees every write acknowledged before the call.
fn wait_caught_up(c: &Cluster, nodes: &[usize], also: &[usize]) -> u64 {
    let mut among: Vec<usize> = nodes.to_vec();
    among.extend_from_slice(also);
    let lead = leader(c, &among);
    let commit = c.node_status(lead).expect("the leader's status").commit_index;
    for &i in nodes {
        let applied = poll_every(POLL, Duration::from_secs(30), || {
            c.node_status(i).filter(|s| s.last_applied >= commit)
        });
        assert!(
            applied.is_some(),
            "{} never applied the leader's commit index {commit}: {:?}",
            c.nodes[i].id,
            c.node_status(i)
        );
    }
    commit
}

/// Every acknowledged write, with its acknowledged value, in each node's own store (a stale
/// `/kv/all` on each), once each has applied the leader's commit index.
fn assert_on_every_node(c: &Cluster, nodes: &[usize], acked: &[(String, String)]) {
    let commit = wait_caught_up(c, nodes, &[]);
    for &i in nodes {
        let all = c.call(i, "GET", "/kv/all?consistency=stale", None);
        assert_eq!(all.status, 200, "/kv/all on {}: {} {:?}", c.nodes[i].id, all.error, all.body);
        let store: BTreeMap<String, String> =
            serde_json::from_value(all.body).expect("/kv/all is a map of strings");
        let wrong: Vec<String> = acked
            .iter()
            .filter(|(k, v)| store.get(k) != Some(v))
            .take(5)
            .map(|(k, v)| format!("{k}: acknowledged {v:?}, found {:?}", store.get(k)))
            .collect();
        assert!(
            wrong.is_empty(),
            "{} (applied up to commit {commit}) lost acknowledged writes, e.g. {wrong:?}",
            c.nodes[i].id
        );
    }
}

fn voters(view: &MembersReply) -> Vec<&str> {
    view.members.iter().filter(|m| m.role == "voter").map(|m| m.id.as_str()).collect()
}

fn report(test: &str, tally: &Tally, started: Instant) {
    let failed: u64 = tally.failed.values().sum();
    let attempts = tally.acked.len() as u64 + failed;
    println!(
        "{test}: {} acknowledged writes, {failed} failed requests of {attempts} ({:.2}%) {:?}, \
         {:.1} s",
        tally.acked.len(),
        100.0 * failed as f64 / attempts.max(1) as f64,
        tally.failed,
        started.elapsed().as_secs_f64()
    );
}

/// Grows a 3-voter cluster to 5 while 4 clients write: each new node joins as a learner, is
/// promoted once caught up, and the writes go on through both changes. At the end all five are
/// voters in every node's view, every acknowledged write is on all five, and the new cluster
/// commits with two of its original members killed.
#[test]
fn grow_from_three_to_five_under_write_load() {
    let started = Instant::now();
    let mut c = cluster("grow");
    leader(&c, &c.all());
    let load = Load::start(&c, &[0, 1, 2], 4);
    load.wait_beyond(0, "before the first change");
    let admin = client(&c, &[0, 1, 2]);
    for id in ["node4", "node5"] {
        let before = load.acked();
        let i = c.add_joining_node().expect("start a joining node");
        assert_eq!(c.nodes[i].id, id);
        let addr = c.nodes[i].addr.clone();
        let view = admin
            .add_and_promote(id, &addr, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("add and promote {id}: {e}"));
        assert!(voters(&view).contains(&id), "{id} is not a voter: {view:?}");
        let promoted = load.acked();
        let after = load.wait_beyond(promoted, &format!("after {id} was promoted"));
        println!(
            "{id} is a voter; {} writes acknowledged while it joined, {after} in all",
            promoted - before
        );
    }
    // Every node holds the 5-voter configuration, and each one's answer to GET
    // /cluster/members (forwarded to the leader from a follower) lists 5 voters.
    let five = ["node1", "node2", "node3", "node4", "node5"];
    for i in c.all() {
        let config = poll_every(POLL, Duration::from_secs(10), || {
            c.node_status(i).filter(|s| s.voters.len() == 5 && s.learners.is_empty())
        });
        assert!(config.is_some(), "{}'s configuration: {:?}", c.nodes[i].id, c.node_status(i));
        let view = client(&c, &[i]).members().expect("GET /cluster/members");
        assert_eq!(voters(&view), five, "through {}: {view:?}", c.nodes[i].id);
    }
    let tally = load.finish();
    report("grow 3->5", &tally, started);
    assert!(tally.unexpected.is_empty(), "unexpected errors: {:?}", tally.unexpected);
    assert_on_every_node(&c, &c.all(), &tally.acked);

    // Five voters tolerate two failures: kill two originals (the leader, if it is one).
    let lead = leader(&c, &c.all());
    let mut doomed: Vec<usize> = vec![lead].into_iter().filter(|&l| l < 3).collect();
    doomed.extend((0..3).filter(|&i| i != lead).take(2 - doomed.len()));
    for &i in &doomed {
        c.kill(i);
    }
    let rest: Vec<usize> = c.all().into_iter().filter(|i| !doomed.contains(i)).collect();
    let survivors = client(&c, &rest);
    survivors.put("after", "two died").expect("three of five voters commit");
    assert_eq!(survivors.get("after").expect("get").as_deref(), Some("two died"));
    let store = survivors.get_all().expect("a linearizable read of the survivors' store");
    let lost = tally.acked.iter().filter(|(k, v)| store.get(k) != Some(v)).count();
    assert_eq!(lost, 0, "acknowledged writes lost after killing {doomed:?}");
    let work_dir = c.work_dir().to_path_buf();
    drop(c);
    let _ = std::fs::remove_dir_all(work_dir);
}

/// A rolling restart under 12 writing clients: each node in turn gets SIGTERM (a leader hands
/// its leadership over first), exits cleanly, is restarted from its data dir and catches up
/// before the next. The writes go on across every restart, and every acknowledged write is on
/// every node at the end. Failed requests are counted and printed, not bounded.
#[test]
fn rolling_restart_under_write_load() {
    let started = Instant::now();
    let mut c = cluster("rolling");
    leader(&c, &c.all());
    let load = Load::start(&c, &[0, 1, 2], 12);
    load.wait_beyond(0, "before the restarts");
    for i in c.all() {
        let id = c.nodes[i].id.clone();
        let before = load.acked();
        let was_leader = c.node_status(i).is_some_and(|s| s.is_leader);
        let code = c.terminate(i, Duration::from_secs(20));
        assert_eq!(code, Some(0), "{id} did not exit cleanly on SIGTERM");
        if was_leader {
            let log = std::fs::read_to_string(c.log_path(i)).unwrap_or_default();
            let handed = log.contains(&format!("{id} handed its leadership to"));
            println!("{id} led when it got SIGTERM; handed its leadership over: {handed}");
        }
        c.restart(i).expect("restart");
        let others: Vec<usize> = c.all().into_iter().filter(|&j| j != i).collect();
        let commit = wait_caught_up(&c, &[i], &others);
        let back = load.acked();
        let after = load.wait_beyond(back, &format!("after {id} was back"));
        println!(
            "{id} restarted and applied commit {commit}; {} writes acknowledged while it was \
             down or catching up, {after} in all",
            back - before
        );
    }
    let tally = load.finish();
    report("rolling restart", &tally, started);
    assert!(tally.unexpected.is_empty(), "unexpected errors: {:?}", tally.unexpected);
    assert_on_every_node(&c, &c.all(), &tally.acked);
    let work_dir = c.work_dir().to_path_buf();
    drop(c);
    let _ = std::fs::remove_dir_all(work_dir);
}
