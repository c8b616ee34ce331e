//! Snapshots (§7) on real binaries: three `raftlabkv-server` processes with data dirs on loopback,
//! every peer link through a proxy, snapshots taken often (`--snapshot-threshold`), killed with
//! `kill -9` at chosen moments.
//!
//! - disk use stays bounded under sustained writes over a fixed key space;
//! - a follower killed during many writes catches up through a snapshot after its restart;
//! - a follower whose data dir was wiped catches up completely;
//! - `kill -9` while snapshots are being written, and while a follower is receiving and installing
//!   one, loses no acknowledged write.
//!
//! Writers own their keys and give every attempt a distinct value, so the final state can be
//! checked key by key against what was acknowledged (see [`Ledger::check`]). Everything polls with
//! deadlines; nothing is decided by a fixed sleep. The tests run one at a time (they measure disk
//! use and transfer times, and each runs three servers plus clients). Random choices come from a
//! seed printed at the start of each test (`RAFT_SEED=<seed>` repeats them; process timing is not
//! reproducible). `SNAPSHOT_TEST_WRITES` sets the writes of the catch-up test (default 20,000; the
//! issue mentions 50,000).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use raftlabkv::server::auth::PeerAuth;
use raftlabkv::testkit::cluster::call;
use raftlabkv::testkit::poll_every;
use raftlabkv::testkit::{Cluster, ClusterOptions, env_u64};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
/// How often tests poll a condition.
const POLL: Duration = Duration::from_millis(20);
/// Polling fast enough to catch short windows (a snapshot being installed).
const FAST_POLL: Duration = Duration::from_millis(1);

// ----- harness ------------------------------------------------------------------------------------

/// One test at a time (see the module docs).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The seed for a test's random choices: `RAFT_SEED`, or a fresh one; printed.
fn seed(test: &str) -> u64 {
    let seed = std::env::var("RAFT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64 % 1_000_000_007)
            .unwrap_or(7)
    });
    eprintln!("{test}: seed {seed} (repeat the random choices with RAFT_SEED={seed})");
    seed
}

/// A cluster with a data dir per node, in a fresh work dir that is removed when the test passes
/// (and kept, with the node logs, when it fails).
struct TestCluster {
    c: Cluster,
    work_dir: PathBuf,
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for i in self.c.all() {
            self.c.kill(i);
        }
        if std::thread::panicking() || std::env::var("SNAPSHOT_TEST_KEEP").is_ok() {
            eprintln!("data dirs and node logs kept in {}", self.work_dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.work_dir);
        }
    }
}

impl std::ops::Deref for TestCluster {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        &self.c
    }
}

impl std::ops::DerefMut for TestCluster {
    fn deref_mut(&mut self) -> &mut Cluster {
        &mut self.c
    }
}

impl TestCluster {
    fn start(name: &str, extra: &[&str]) -> TestCluster {
        let work_dir =
            std::env::temp_dir().join(format!("raftlabkv-snap-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&work_dir);
        let c = Cluster::start(ClusterOptions {
            nodes: 3,
            server_bin: env!("CARGO_BIN_EXE_raftlabkv-server").into(),
            work_dir: work_dir.clone(),
            data_dirs: true,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            peer_secret: true,
        })
        .expect("start cluster");
        TestCluster { c, work_dir }
    }

    fn addrs(&self) -> Vec<String> {
        self.c.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.work_dir.join(&self.c.nodes[i].id)
    }

    fn snapshot_dir(&self, i: usize) -> PathBuf {
        self.data_dir(i).join("snapshots")
    }

    fn log_text(&self, i: usize) -> String {
        let path = self.work_dir.join(format!("{}.log", self.c.nodes[i].id));
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// Every node's log lines containing all of `needles`.
    fn log_lines(&self, needles: &[&str]) -> Vec<String> {
        self.c
            .all()
            .into_iter()
            .flat_map(|i| {
                let text = self.log_text(i);
                let id = self.c.nodes[i].id.clone();
                text.lines()
                    .filter(|l| needles.iter().all(|n| l.contains(n)))
                    .map(|l| format!("{id}: {l}"))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Every node's `/status` and the last `lines` lines of its log, for a failure message.
    fn dump(&self, lines: usize) -> String {
        let mut out = String::new();
        for i in self.c.all() {
            let text = self.log_text(i);
            let all: Vec<&str> = text.lines().collect();
            let tail = all[all.len().saturating_sub(lines)..].join("\n");
            out += &format!("\n--- node{}: {:?}\n{tail}", i + 1, self.c.status(i));
        }
        out
    }

    fn leader(&self) -> usize {
        self.c.wait_leader(&self.c.all(), Duration::from_secs(10)).expect("a leader within 10 s")
    }

    fn status_u64(&self, i: usize, field: &str) -> Option<u64> {
        self.c.status(i).and_then(|s| s[field].as_u64())
    }

    /// `/kv/all?consistency=stale` of node `i` (read as a stream: it may be tens of MB, past
    /// what `Cluster::call` reads).
    fn state(&self, i: usize) -> Result<BTreeMap<String, String>, String> {
        let url = format!("http://{}/kv/all?consistency=stale", self.c.nodes[i].addr);
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build();
        let response =
            agent.get(&url).call().map_err(|e| format!("/kv/all of node{}: {e}", i + 1))?;
        serde_json::from_reader(response.into_reader())
            .map_err(|e| format!("/kv/all of node{}: {e}", i + 1))
    }

    /// Waits (writes stopped) until every node answers and has applied the same index as the
    /// others, equal to the leader's commit index; then every node's state must be the same.
    /// Returns it.
    fn converged_state(&self, within: Duration) -> BTreeMap<String, String> {
        let nodes = self.c.all();
        let settled = poll_every(POLL, within, || {
            let statuses: Vec<Value> =
                nodes.iter().map(|&i| self.c.status(i)).collect::<Option<_>>()?;
            let leader = statuses.iter().find(|s| s["isLeader"] == true)?;
            let commit = leader["commitIndex"].as_u64()?;
            statuses.iter().all(|s| s["lastApplied"].as_u64() == Some(commit)).then_some(commit)
        });
        let Some(index) = settled else {
            let statuses: Vec<_> = nodes.iter().map(|&i| self.c.status(i)).collect();
            panic!("the nodes did not converge within {within:?}: {statuses:?}");
        };
        let first = self.state(nodes[0]).unwrap_or_else(|e| panic!("{e}"));
        for &i in &nodes[1..] {
            let other = self.state(i).unwrap_or_else(|e| panic!("{e}"));
            if other != first {
                let differ: Vec<_> = first
                    .iter()
                    .filter(|(k, v)| other.get(*k) != Some(v))
                    .map(|(k, _)| k)
                    .chain(other.keys().filter(|k| !first.contains_key(*k)))
                    .take(5)
                    .collect();
                panic!(
                    "node1 and node{} both applied through {index} but hold different states \
                     ({} and {} keys; differing keys include {differ:?})",
                    i + 1,
                    first.len(),
                    other.len()
                );
            }
        }
        first
    }
}

/// Total size of the files under `path` (files vanishing meanwhile are skipped).
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

/// Whether `dir` holds a file whose name satisfies `what`.
fn has_file(dir: &Path, what: impl Fn(&str) -> bool) -> bool {
    std::fs::read_dir(dir)
        .map(|r| r.flatten().any(|e| e.file_name().to_str().is_some_and(&what)))
        .unwrap_or(false)
}

fn writing_snapshot(name: &str) -> bool {
    name.ends_with(".tmp") && !name.ends_with(".recv.tmp")
}

/// Whether a snapshot transfer into `dir` is under way that was last written to after `since`.
fn receiving_since(dir: &Path, since: std::time::SystemTime) -> bool {
    std::fs::read_dir(dir)
        .map(|r| {
            r.flatten().any(|e| {
                e.file_name().to_str().is_some_and(|n| n.ends_with(".recv.tmp"))
                    && e.metadata().and_then(|m| m.modified()).is_ok_and(|t| t >= since)
            })
        })
        .unwrap_or(false)
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

// ----- writers and what they were told ------------------------------------------------------------

/// What a writer was told about one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// 200: applied.
    Acked,
    /// 503: not applied, and never will be.
    Refused,
    /// 504, or no answer at all: it may or may not apply, at any later time.
    Unknown,
}

/// Every attempt on every key, in the order each key's (single) writer made them. Each attempt
/// has its own value.
#[derive(Default)]
struct Ledger {
    keys: BTreeMap<String, Vec<(String, Outcome)>>,
}

/// How a state compared with a ledger.
#[derive(Debug, Default)]
struct Verdict {
    keys: usize,
    /// Keys holding the last acknowledged value.
    latest_acked: usize,
    /// Keys holding a value whose outcome was unknown.
    unknown: usize,
}

impl Ledger {
    fn merge(&mut self, other: Ledger) {
        for (key, attempts) in other.keys {
            self.keys.entry(key).or_default().extend(attempts);
        }
    }

    fn count(&self, outcome: Outcome) -> usize {
        self.keys.values().flatten().filter(|(_, o)| *o == outcome).count()
    }

    /// No acknowledged write is lost: each key holds its last acknowledged value, or a value whose
    /// outcome its writer never learned. Such an attempt may take effect at any time after it was
    /// made — after a later acknowledged one too, if its request was still on its way to the
    /// leader (forwarded by a node that was killed, say) — so unknown values written before the
    /// last acknowledged one are allowed as well; older *acknowledged* values and refused (503)
    /// ones never are. A key never acknowledged may also be absent.
    fn check(&self, state: &BTreeMap<String, String>) -> Verdict {
        let mut verdict = Verdict::default();
        for (key, attempts) in &self.keys {
            let got = state.get(key);
            let last_acked = attempts.iter().rposition(|(_, o)| *o == Outcome::Acked);
            let ok = match got {
                None => last_acked.is_none(),
                Some(v) => attempts.iter().enumerate().any(|(i, (value, outcome))| {
                    value == v
                        && match outcome {
                            Outcome::Acked => Some(i) == last_acked,
                            Outcome::Unknown => true,
                            Outcome::Refused => false,
                        }
                }),
            };
            if !ok {
                let acked = last_acked.map(|i| &attempts[i].0);
                let outcome = got.and_then(|v| attempts.iter().find(|(a, _)| a == v));
                panic!(
                    "{key}: holds {got:?} ({outcome:?}), but the last acknowledged write was \
                     {acked:?} ({} attempts on this key)",
                    attempts.len()
                );
            }
            verdict.keys += 1;
            match got.and_then(|v| attempts.iter().find(|(a, _)| a == v)) {
                Some((_, Outcome::Acked)) => verdict.latest_acked += 1,
                Some(_) => verdict.unknown += 1,
                None => {}
            }
        }
        verdict
    }
}

/// A put sent to node `addr` only: marked as already forwarded (and so signed as a peer's), so a
/// node that does not lead refuses it (503) instead of forwarding it to the leader.
fn put(agent: &ureq::Agent, auth: &PeerAuth, addr: &str, key: &str, value: &str) -> Outcome {
    let body = json!({ "key": key, "value": value }).to_string();
    let request = agent
        .post(&format!("http://{addr}/kv/put"))
        .set("Content-Type", "application/json")
        .set("X-Raftlabkv-Forwarded", auth.node_id());
    let result = auth.sign("POST", "/kv/put", body.as_bytes()).apply(request).send_string(&body);
    let status = match result {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(status, _)) => status,
        Err(_) => 0,
    };
    match status {
        200 => Outcome::Acked,
        503 => Outcome::Refused,
        _ => Outcome::Unknown,
    }
}

/// The node that says it leads, if one does.
fn find_leader(agent: &ureq::Agent, addrs: &[String]) -> Option<usize> {
    addrs.iter().position(|addr| {
        call(agent, "GET", &format!("http://{addr}/status"), None).body["isLeader"] == true
    })
}

/// Concurrent writers over a fixed key space. They send to the leader only (see [`put`]): a
/// follower would forward to it through its link proxy, and a proxy whose target is down swallows
/// requests, so a write forwarded to a killed leader would hang for the forwarding timeout.
struct Load<'a> {
    addrs: &'a [String],
    /// Signs the puts: they carry the forwarded marker, so they are peer requests.
    auth: &'a PeerAuth,
    /// Writer `w` owns the keys at positions `w, w + clients, ...`.
    keys: &'a [String],
    clients: usize,
    /// Puts in all (attempts, whatever their outcome), split between the writers.
    puts: u64,
    /// Length of each value.
    value_len: usize,
    /// Prefix of every value (tells phases apart).
    tag: &'a str,
}

/// Shared between writers and the test: where to send, how many puts were acknowledged, when to
/// stop early.
struct LoadControl {
    /// The node writers send to (the leader, if known); moved on after a failure.
    target: AtomicUsize,
    acked: AtomicU64,
    stop: AtomicBool,
}

impl LoadControl {
    fn new(target: usize) -> LoadControl {
        LoadControl {
            target: AtomicUsize::new(target),
            acked: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        }
    }
}

/// Runs `load` to completion (or until `ctl.stop`), returning what the writers were told.
fn run_load(load: &Load<'_>, ctl: &LoadControl) -> Ledger {
    let n = load.addrs.len();
    let ledgers: Vec<Ledger> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..load.clients)
            .map(|w| {
                s.spawn(move || {
                    let agent = ureq::AgentBuilder::new()
                        .timeout_connect(Duration::from_millis(500))
                        .timeout(Duration::from_secs(10))
                        .build();
                    let status_agent =
                        ureq::AgentBuilder::new().timeout(Duration::from_millis(500)).build();
                    let mine: Vec<&String> =
                        load.keys.iter().skip(w).step_by(load.clients).collect();
                    let count = load.puts / load.clients as u64
                        + u64::from((w as u64) < load.puts % load.clients as u64);
                    let mut ledger = Ledger::default();
                    for j in 0..count {
                        if ctl.stop.load(Ordering::Relaxed) || mine.is_empty() {
                            break;
                        }
                        let key = mine[j as usize % mine.len()];
                        let mut value = format!("{}-{w}-{j}-", load.tag);
                        while value.len() < load.value_len {
                            value.push(char::from(b'a' + (value.len() % 26) as u8));
                        }
                        let node = ctl.target.load(Ordering::Relaxed) % n;
                        let outcome = put(&agent, load.auth, &load.addrs[node], key, &value);
                        ledger.keys.entry(key.clone()).or_default().push((value, outcome));
                        if outcome == Outcome::Acked {
                            ctl.acked.fetch_add(1, Ordering::Relaxed);
                        } else {
                            // Find the leader, without hammering a dead node.
                            std::thread::sleep(Duration::from_millis(20));
                            let next = find_leader(&status_agent, load.addrs).unwrap_or(node + 1);
                            ctl.target.store(next % n, Ordering::Relaxed);
                        }
                    }
                    ledger
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("writer thread")).collect()
    });
    let mut all = Ledger::default();
    for l in ledgers {
        all.merge(l);
    }
    all
}

fn keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:05}")).collect()
}

/// Bytes a put of `key_len` + `value_len` takes in the WAL, at most: the command as JSON
/// (`{"op":"put","key":..,"value":..}`, 29 bytes of syntax), the entry's term and length (12) and,
/// at worst, a record of its own (29 bytes of framing).
fn wal_entry_bytes(key_len: usize, value_len: usize) -> u64 {
    (key_len + value_len + 29 + 12 + 29) as u64
}

/// Bytes a snapshot of `keys` such keys takes: each pair with two length prefixes, a JSON header
/// and the file's 36-byte header.
fn snapshot_bytes(keys: usize, key_len: usize, value_len: usize) -> u64 {
    (keys * (key_len + value_len + 8) + 512) as u64
}

// ----- tests --------------------------------------------------------------------------------------

/// Under sustained writes over a fixed key space the log is compacted behind each snapshot and old
/// WAL segments are deleted, so no node's data dir grows past a bound set by the snapshot
/// threshold, the segment size and the size of the state — whereas the log alone, uncompacted,
/// would be many times that.
#[test]
fn data_dirs_stay_bounded_under_sustained_writes() {
    let _serial = serial();
    let (threshold, trailing, segment) = (1000u64, 100u64, 65_536u64);
    let puts = env_u64("SNAPSHOT_TEST_PUTS", 20_000);
    let (n_keys, key_len, value_len, clients) = (500usize, 6usize, 100usize, 16usize);
    let c = TestCluster::start(
        "bounded",
        &[
            "--snapshot-threshold",
            &threshold.to_string(),
            "--snapshot-trailing",
            &trailing.to_string(),
            "--segment-bytes",
            &segment.to_string(),
        ],
    );
    let leader = c.leader();
    let addrs = c.addrs();
    let auth = c.peer_auth(0);
    let key_names = keys("k", n_keys);
    let load =
        Load { addrs: &addrs, auth: &auth, keys: &key_names, clients, puts, value_len, tag: "v" };
    let ctl = LoadControl::new(leader);
    let dirs: Vec<PathBuf> = c.all().into_iter().map(|i| c.data_dir(i)).collect();
    let sampling = AtomicBool::new(true);
    let started = Instant::now();
    let (ledger, (max_sizes, samples)) = std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut max = vec![0u64; dirs.len()];
            let mut samples = 0;
            while sampling.load(Ordering::Relaxed) {
                for (m, dir) in max.iter_mut().zip(&dirs) {
                    *m = (*m).max(dir_size(dir));
                }
                samples += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            (max, samples)
        });
        let ledger = run_load(&load, &ctl);
        sampling.store(false, Ordering::Relaxed);
        (ledger, sampler.join().expect("sampler"))
    });
    let took = started.elapsed();
    let state = c.converged_state(Duration::from_secs(30));
    let verdict = ledger.check(&state);
    assert_eq!(verdict.keys, n_keys, "every key was written");

    // The bound: entries since the last snapshot (up to a threshold's worth, plus as many again
    // applied while the snapshot is written), the trailing entries, a segment being written and
    // one straddling the compaction point, and up to three snapshot files (the current one, one
    // being written, one being received).
    let entry = wal_entry_bytes(key_len, value_len);
    let snapshot = snapshot_bytes(n_keys, key_len, value_len);
    let bound = (2 * threshold + trailing) * entry + 2 * segment + 3 * snapshot + 64 * 1024;
    let uncompacted = puts * entry;
    let finals: Vec<u64> = dirs.iter().map(|d| dir_size(d)).collect();
    eprintln!(
        "{puts} puts over {n_keys} keys ({value_len}-byte values, {clients} clients) in {took:.1?} \
         ({:.0}/s), {} acknowledged; data dir sizes sampled {samples} times: max {:?} KiB, at the \
         end {:?} KiB; bound {} KiB (WAL entry <= {entry} B, snapshot ~{} KiB); the log alone \
         would be ~{:.1} MiB without compaction",
        puts as f64 / took.as_secs_f64(),
        ctl.acked.load(Ordering::Relaxed),
        max_sizes.iter().map(|b| b / 1024).collect::<Vec<_>>(),
        finals.iter().map(|b| b / 1024).collect::<Vec<_>>(),
        bound / 1024,
        snapshot / 1024,
        mb(uncompacted)
    );
    for i in c.all() {
        let s = c.status(i).expect("status");
        assert!(
            s["snapshotIndex"].as_u64() > Some(0) && s["firstLogIndex"].as_u64() > Some(1),
            "node{} never snapshotted and compacted: {s}",
            i + 1
        );
        assert!(
            max_sizes[i] <= bound,
            "node{}'s data dir reached {} KiB, above the bound of {} KiB",
            i + 1,
            max_sizes[i] / 1024,
            bound / 1024
        );
    }
    assert!(bound * 3 < uncompacted, "the bound would not tell compaction from none");
}

/// A follower killed (`kill -9`) early in a long run of writes comes back to a leader that has
/// compacted its log far past it: it catches up through InstallSnapshot, then serves the final
/// values with stale (local) reads.
#[test]
fn follower_killed_during_writes_catches_up_through_a_snapshot() {
    let _serial = serial();
    let writes = env_u64("SNAPSHOT_TEST_WRITES", 20_000);
    let mut c = TestCluster::start(
        "catchup",
        &["--snapshot-threshold", "1000", "--snapshot-trailing", "100", "--segment-bytes", "65536"],
    );
    let leader = c.leader();
    let f = (leader + 1) % 3;
    let fid = c.nodes[f].id.clone();
    let addrs = c.addrs();
    let auth = c.peer_auth(0);
    let key_names = keys("k", 1000);
    let load = Load {
        addrs: &addrs,
        auth: &auth,
        keys: &key_names,
        clients: 16,
        puts: writes,
        value_len: 64,
        tag: "v",
    };
    let ctl = LoadControl::new(leader);
    let started = Instant::now();
    let (ledger, before_kill, leader_last_at_kill) = std::thread::scope(|s| {
        let writers = s.spawn(|| run_load(&load, &ctl));
        let tenth = poll_every(POLL, Duration::from_secs(60), || {
            (ctl.acked.load(Ordering::Relaxed) >= writes / 10).then_some(())
        });
        assert!(tenth.is_some(), "a tenth of the writes did not go through in 60 s");
        let before = c.status(f).expect("follower status");
        c.kill(f);
        let leader_last = c.status_u64(leader, "lastLogIndex").expect("leader status");
        (writers.join().expect("writers"), before, leader_last)
    });
    let took = started.elapsed();
    let applied_before = before_kill["lastApplied"].as_u64().unwrap_or(0);
    let leader_status = c.status(leader).expect("leader status");
    let first = leader_status["firstLogIndex"].as_u64().unwrap_or(0);
    eprintln!(
        "{writes} writes in {took:.1?}, {} acknowledged; {fid} killed at lastApplied \
         {applied_before} (its log ends at or before {leader_last_at_kill}); the leader's log now \
         starts at {first}, its snapshot is at {}",
        ctl.acked.load(Ordering::Relaxed),
        leader_status["snapshotIndex"]
    );
    assert!(
        first > leader_last_at_kill + 1,
        "the leader did not compact past the killed follower (first index {first}, the follower's \
         log ends at or before {leader_last_at_kill}): raise SNAPSHOT_TEST_WRITES"
    );
    let restarted = Instant::now();
    c.restart(f).expect("restart the follower");
    let state = c.converged_state(Duration::from_secs(60));
    let caught_up = restarted.elapsed();
    let verdict = ledger.check(&state);
    let on_f = c.state(f).unwrap_or_else(|e| panic!("{e}"));
    assert!(on_f == state, "{fid}'s stale reads differ from the others'");
    for key in key_names.iter().take(20) {
        let a = c.call(f, "GET", &format!("/kv/get/{key}?consistency=stale"), None);
        assert_eq!(a.body["value"].as_str(), state.get(key).map(String::as_str), "{key} on {fid}");
    }
    let sent = c.log_lines(&["sent snapshot", &format!("to {fid} ")]);
    let f_status = c.status(f).expect("follower status");
    eprintln!(
        "{fid} caught up in {caught_up:.1?}: {verdict:?}; its snapshotIndex is {} (lastApplied \
         before the kill: {applied_before}); {}",
        f_status["snapshotIndex"],
        sent.last().map_or("no 'sent snapshot' line", |l| l.as_str())
    );
    let snapshot_sent = sent.iter().any(|l| {
        l.split("sent snapshot ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n > leader_last_at_kill)
    });
    assert!(snapshot_sent, "no node logged sending {fid} a snapshot past its log: {sent:?}");
    assert!(f_status["snapshotIndex"].as_u64() >= Some(first - 1), "{f_status}");
}

/// A follower whose data dir is wiped (`kill -9`, `rm -rf`, restart with the same id) comes back
/// empty and catches up completely, while writes go on.
#[test]
fn wiped_follower_catches_up_completely() {
    let _serial = serial();
    let mut c = TestCluster::start(
        "wiped",
        &["--snapshot-threshold", "1000", "--snapshot-trailing", "100", "--segment-bytes", "65536"],
    );
    let leader = c.leader();
    let f = (leader + 2) % 3;
    let addrs = c.addrs();
    let auth = c.peer_auth(0);
    let key_names = keys("k", 1000);
    let ctl = LoadControl::new(leader);
    let first_phase = Load {
        addrs: &addrs,
        auth: &auth,
        keys: &key_names,
        clients: 16,
        puts: 5000,
        value_len: 64,
        tag: "a",
    };
    let mut ledger = run_load(&first_phase, &ctl);
    c.kill(f);
    std::fs::remove_dir_all(c.data_dir(f)).expect("wipe the data dir");
    let restarted = Instant::now();
    c.restart(f).expect("restart the wiped follower");
    let addrs = c.addrs();
    let auth = c.peer_auth(0);
    let second_phase = Load {
        addrs: &addrs,
        auth: &auth,
        keys: &key_names,
        clients: 16,
        puts: 2000,
        value_len: 64,
        tag: "b",
    };
    ledger.merge(run_load(&second_phase, &ctl));
    let state = c.converged_state(Duration::from_secs(60));
    let verdict = ledger.check(&state);
    assert_eq!(verdict.keys, key_names.len());
    let s = c.status(f).expect("status");
    eprintln!(
        "wiped {} caught up {:.1?} after its restart: {} keys, snapshotIndex {}, {verdict:?}",
        c.nodes[f].id,
        restarted.elapsed(),
        s["keys"],
        s["snapshotIndex"]
    );
    assert!(s["snapshotIndex"].as_u64() > Some(0), "the wiped node got no snapshot: {s}");
}

/// `kill -9` at random moments while snapshots are written all the time (one every 200 entries
/// of a ~1 MB state): most kills are aimed at a node while its snapshot file is being written
/// (its temporary file exists), the others at random. One node is down at a time. After a
/// restart of everything, every node holds the same state and no acknowledged write is lost.
#[test]
fn kill_during_snapshot_creation_loses_nothing_acknowledged() {
    let _serial = serial();
    let mut rng = StdRng::seed_from_u64(seed("kill_during_snapshot_creation"));
    let kills = env_u64("SNAPSHOT_TEST_KILLS", 12);
    let mut c = TestCluster::start(
        "killsnap",
        &["--snapshot-threshold", "200", "--snapshot-trailing", "20", "--segment-bytes", "65536"],
    );
    let leader = c.leader();
    let addrs = c.addrs();
    let auth = c.peer_auth(0);
    let key_names = keys("k", 1000);
    let load = Load {
        addrs: &addrs,
        auth: &auth,
        keys: &key_names,
        clients: 16,
        puts: u64::MAX,
        value_len: 1000,
        tag: "v",
    };
    let ctl = LoadControl::new(leader);
    let mut aimed = 0;
    let mut hit_writing = 0;
    let started = Instant::now();
    let ledger = std::thread::scope(|s| {
        let writers = s.spawn(|| run_load(&load, &ctl));
        for k in 0..kills {
            let victim = rng.gen_range(0..3);
            let dir = c.snapshot_dir(victim);
            if rng.gen_ratio(2, 3) {
                aimed += 1;
                // Kill the moment a snapshot of the victim's is being written, if one is within 5 s.
                let seen = poll_every(FAST_POLL, Duration::from_secs(5), || {
                    has_file(&dir, writing_snapshot).then_some(())
                });
                hit_writing += usize::from(seen.is_some());
            } else {
                std::thread::sleep(Duration::from_millis(rng.gen_range(0..500)));
            }
            c.kill(victim);
            let down = Duration::from_millis(rng.gen_range(0..1000));
            eprintln!(
                "kill {k}: node{} after {:.1?} ({} puts acknowledged so far), down for {down:?}",
                victim + 1,
                started.elapsed(),
                ctl.acked.load(Ordering::Relaxed)
            );
            std::thread::sleep(down);
            c.restart(victim).expect("restart");
            // Up again before the next kill, so a majority stays.
            let up = poll_every(POLL, Duration::from_secs(20), || c.status(victim));
            assert!(up.is_some(), "node{} did not come back", victim + 1);
        }
        // Some writes with everyone up, then stop.
        let acked = ctl.acked.load(Ordering::Relaxed);
        let more = poll_every(POLL, Duration::from_secs(30), || {
            (ctl.acked.load(Ordering::Relaxed) >= acked + 500).then_some(())
        });
        ctl.stop.store(true, Ordering::Relaxed);
        let ledger = writers.join().expect("writers");
        assert!(more.is_some(), "writes did not resume after the last restart");
        ledger
    });
    let state = c.converged_state(Duration::from_secs(60));
    let verdict = ledger.check(&state);
    let leftovers = c.log_lines(&["removing leftover temporary snapshot file"]).len();
    let newer_files = c.log_lines(&["newer than the snapshot the WAL records"]).len();
    eprintln!(
        "{kills} kills in {:.1?} ({aimed} aimed at a snapshot write, {hit_writing} of them while \
         its temporary file existed; {leftovers} half-written snapshot files removed at restart, \
         {newer_files} snapshot files found newer than the WAL's record); {} puts acknowledged, \
         {} refused, {} unknown; final state: {verdict:?}",
        started.elapsed(),
        ledger.count(Outcome::Acked),
        ledger.count(Outcome::Refused),
        ledger.count(Outcome::Unknown)
    );
    assert!(ledger.count(Outcome::Acked) > 1000, "too few writes went through to mean anything");
}

/// `kill -9` of a follower while it receives and installs a large snapshot (20,000 keys with
/// 1 KB values, ~20 MB), at random moments between the first chunk's arrival and the end of the
/// install as timed on an undisturbed transfer; restarted, it must still converge, losing
/// nothing acknowledged.
#[test]
fn kill_during_snapshot_installation_then_converge() {
    let _serial = serial();
    let mut rng = StdRng::seed_from_u64(seed("kill_during_snapshot_installation"));
    let cycles = env_u64("SNAPSHOT_TEST_INSTALL_KILLS", 4);
    let (threshold, trailing, batch) = (2000u64, 100u64, 200u64);
    let mut c = TestCluster::start(
        "killinstall",
        &[
            "--snapshot-threshold",
            &threshold.to_string(),
            "--snapshot-trailing",
            &trailing.to_string(),
            "--segment-bytes",
            "4194304",
            // An AppendEntries the leader queued for the killed follower before compacting may
            // still be delivered once it is back (a legitimate message: those entries were in
            // the log when it was built). With the default batch of 4,096 entries that one
            // message could close the whole gap, and no snapshot would be needed; so batches are
            // small, and each churn round waits for a compaction more than a batch past it.
            "--max-append-entries",
            &batch.to_string(),
        ],
    );
    let leader = c.leader();
    let f = (leader + 1) % 3;
    let fid = c.nodes[f].id.clone();
    let addrs = c.addrs();
    let auth = c.peer_auth(0);
    let ctl = LoadControl::new(leader);
    let big = keys("big", 20_000);
    let started = Instant::now();
    let populate = Load {
        addrs: &addrs,
        auth: &auth,
        keys: &big,
        clients: 32,
        puts: 20_000,
        value_len: 1000,
        tag: "p",
    };
    let mut ledger = run_load(&populate, &ctl);
    eprintln!("populated 20,000 keys of 1 KB in {:.1?}", started.elapsed());
    let churn_keys = keys("small", 100);
    // With the follower down, enough small writes that the leader snapshots and compacts more
    // than a batch past it (two thresholds' worth: the leader's last snapshot may be just behind
    // where the follower stopped).
    // Leadership may move under this load (a loaded machine can delay heartbeats past check
    // quorum's timeout), so the leader is looked up again each round; the follower stays `f`.
    let churn = |c: &mut TestCluster, ledger: &mut Ledger, round: usize| -> u64 {
        c.kill(f);
        let leader = c.leader();
        let f_last = c.status_u64(leader, "lastLogIndex").expect("leader status");
        let tag = format!("c{round}");
        let addrs = c.addrs();
        let auth = c.peer_auth(0);
        let load = Load {
            addrs: &addrs,
            auth: &auth,
            keys: &churn_keys,
            clients: 16,
            puts: 2 * threshold + trailing + batch,
            value_len: 16,
            tag: &tag,
        };
        ledger.merge(run_load(&load, &ctl));
        // The leader's snapshot may still be being written: wait for the compaction.
        let compacted = poll_every(POLL, Duration::from_secs(30), || {
            (c.status_u64(leader, "firstLogIndex")? > f_last + 1 + batch).then_some(())
        });
        assert!(compacted.is_some(), "the leader did not compact past {f_last} + {batch} in 30 s");
        c.restart(f).expect("restart the follower");
        f_last
    };
    let recv_dir = c.snapshot_dir(f);
    // A transfer that began after `since` (a restarted node removes the one a kill left behind,
    // but only once it is running).
    let receiving = |since: std::time::SystemTime| {
        poll_every(FAST_POLL, Duration::from_secs(30), || {
            receiving_since(&recv_dir, since).then(Instant::now)
        })
    };

    // An undisturbed transfer, to time it: from the first chunk's arrival to the snapshot being
    // recorded in the follower's storage.
    let since = std::time::SystemTime::now();
    let f_last = churn(&mut c, &mut ledger, 0);
    let t0 = receiving(since)
        .unwrap_or_else(|| panic!("the follower receives no snapshot:{}", c.dump(40)));
    // The follower's log ended at or before `f_last` and the entries after it are gone from the
    // leader's log, so a snapshot index past it can only come from an installed snapshot (whoever
    // leads by then).
    let installed = poll_every(FAST_POLL, Duration::from_secs(60), || {
        let index = c.status_u64(f, "snapshotIndex")?;
        (index > f_last).then(|| (Instant::now(), index))
    });
    let (installed, target) = installed.unwrap_or_else(|| {
        panic!("the follower installs no snapshot past {f_last}:{}", c.dump(40))
    });
    let transfer = installed - t0;
    eprintln!("an undisturbed transfer and install of snapshot {target} took {transfer:.1?}");

    let mut mid_transfer = 0;
    for round in 1..=cycles {
        let since = std::time::SystemTime::now();
        churn(&mut c, &mut ledger, round as usize);
        let t0 = receiving(since).unwrap_or_else(|| {
            panic!("round {round}: the follower receives no snapshot:{}", c.dump(40))
        });
        let delay = transfer.mul_f64(rng.gen_range(0.0..1.3));
        std::thread::sleep(delay.saturating_sub(t0.elapsed()));
        let still_receiving = receiving_since(&recv_dir, since);
        c.kill(f);
        mid_transfer += usize::from(still_receiving);
        eprintln!(
            "round {round}: killed {fid} {delay:.1?} after the transfer began ({})",
            if still_receiving { "chunks still arriving" } else { "all chunks had arrived" }
        );
        c.restart(f).expect("restart the follower");
    }
    let state = c.converged_state(Duration::from_secs(90));
    let verdict = ledger.check(&state);
    assert_eq!(verdict.keys, big.len() + churn_keys.len());
    let sent = c.log_lines(&["sent snapshot", &format!("to {fid} ")]);
    eprintln!(
        "{cycles} kills during installation ({mid_transfer} while chunks were arriving); {} \
         snapshots sent to {fid} in all; converged after {:.1?}: {verdict:?}",
        sent.len(),
        started.elapsed()
    );
    assert!(!sent.is_empty(), "no snapshot was ever sent to {fid}");
}
