//! Real-binary crash and disk-fault tests: `kill -9` under write load (followers, the leader,
//! every node at once; and a SIGTERM of the leader), a torn WAL tail, a corrupt WAL segment, the data-dir lock, `dump`, and a
//! whole-cluster restart with 100,000 keys.
//!
//! Randomized tests print their seed; `CRASH_SEED=<n>` replays the same fault schedule (the
//! interleaving of threads and processes is of course not replayed). Every wait polls with a
//! deadline; the sleeps that remain only choose *when* a fault strikes, never decide an outcome.
//! A failing test keeps its work dir (node logs and data dirs) and prints where it is.

mod support;

use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use raftlabkv::client::{Client, percent_encode};
use raftlabkv::testkit::cluster::free_port;
use raftlabkv::testkit::poll_every;
use raftlabkv::testkit::{Cluster, ClusterOptions, KillOnDrop};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use support::history::{History, Outcome};
/// How often tests poll a condition.
const POLL: Duration = Duration::from_millis(20);

const SERVER: &str = env!("CARGO_BIN_EXE_raftlabkv-server");

// ----- helpers --------------------------------------------------------------------------------

/// The test's seed: `CRASH_SEED` if set, else random. Printed (shown when the test fails).
fn seed(test: &str) -> u64 {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    println!("{test}: seed {seed} (replay the fault schedule with CRASH_SEED={seed})");
    seed
}

/// A scratch directory, removed when the test passes and kept (and named) when it fails.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new(name: &str) -> WorkDir {
        let path =
            std::env::temp_dir().join(format!("raftlabkv-crash-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create work dir");
        println!("{name}: work dir {}", path.display());
        WorkDir(path)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {} (node logs and data dirs) for inspection", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A 3-node cluster with data dirs, and its work dir (dropped after the nodes are killed).
struct TestCluster {
    cluster: Cluster,
    _dir: WorkDir,
}

impl Deref for TestCluster {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}

impl DerefMut for TestCluster {
    fn deref_mut(&mut self) -> &mut Cluster {
        &mut self.cluster
    }
}

fn cluster(name: &str, extra: &[&str]) -> TestCluster {
    let dir = WorkDir::new(name);
    let cluster = Cluster::start(ClusterOptions {
        nodes: 3,
        server_bin: SERVER.into(),
        work_dir: dir.0.clone(),
        data_dirs: true,
        extra_args: extra.iter().map(|s| s.to_string()).collect(),
        peer_secret: true,
    })
    .expect("start cluster");
    TestCluster { cluster, _dir: dir }
}

fn leader(c: &Cluster) -> usize {
    c.wait_leader(&c.all(), Duration::from_secs(15)).expect("a leader within 15 s")
}

/// What one put told its client.
struct PutAnswer {
    outcome: Outcome,
    /// What the answer said, for a refusal or an unknown outcome.
    note: Option<String>,
    /// An answer no healthy server gives (any 4xx, a 500, a malformed 200).
    unexpected: Option<String>,
}

/// One put, one attempt, classified by what it tells the client.
fn put_once(agent: &ureq::Agent, addr: &str, key: &str, value: &str) -> PutAnswer {
    let answer =
        |outcome, note: Option<String>, unexpected| PutAnswer { outcome, note, unexpected };
    let body = json!({ "key": key, "value": value }).to_string();
    let result = agent
        .post(&format!("http://{addr}/kv/put"))
        .set("Content-Type", "application/json")
        .send_string(&body);
    match result {
        Ok(r) => {
            let text = r.into_string().unwrap_or_default();
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if v["status"] == "ok" && v["key"] == key && v["index"].is_u64() {
                answer(Outcome::Acked, None, None)
            } else {
                let what = format!("put {key}={value} via {addr}: 200 {text}");
                answer(Outcome::Unknown, None, Some(what))
            }
        }
        Err(ureq::Error::Status(s, r)) => {
            let text = r.into_string().unwrap_or_default();
            let note = Some(format!("{s} from {addr}: {text}"));
            match s {
                // The server's promise: not applied, and never will be.
                503 => answer(Outcome::Failed, note, None),
                504 => answer(Outcome::Unknown, note, None),
                _ => {
                    let what = format!("put {key}={value} via {addr}: {s} {text}");
                    answer(Outcome::Unknown, note, Some(what))
                }
            }
        }
        // Nothing was sent: the connection was never made.
        Err(ureq::Error::Transport(t)) if t.kind() == ureq::ErrorKind::ConnectionFailed => {
            answer(Outcome::Failed, Some(format!("no connection to {addr}: {t}")), None)
        }
        // Sent, maybe received: a reset, a timeout, a cut-off answer.
        Err(ureq::Error::Transport(t)) => {
            answer(Outcome::Unknown, Some(format!("{addr}: {t}")), None)
        }
    }
}

/// A linearizable read of `key` through node `node` (`None`: not found). Retries only answers
/// that promise nothing (503, no answer), until a deadline.
fn read_key(c: &Cluster, node: usize, key: &str) -> Option<String> {
    let path = format!("/kv/get/{}", percent_encode(key));
    let a = poll_every(POLL, Duration::from_secs(15), || {
        let a = c.call(node, "GET", &path, None);
        matches!(a.status, 200 | 404).then_some(a)
    })
    .unwrap_or_else(|| panic!("no linearizable read of {key:?} through node{} in 15 s", node + 1));
    (a.status == 200).then(|| a.body["value"].as_str().expect("a string value").to_string())
}

/// Node `node`'s local state (`GET /kv/all?consistency=stale`), if it answers.
fn stale_all(c: &Cluster, node: usize) -> Option<BTreeMap<String, String>> {
    let a = c.call(node, "GET", "/kv/all?consistency=stale", None);
    if a.status != 200 {
        return None;
    }
    serde_json::from_value(a.body).ok()
}

/// Waits until every node answers the same non-empty local state; returns it.
fn converged(c: &Cluster, within: Duration) -> BTreeMap<String, String> {
    let mut last = Vec::new();
    poll_every(POLL, within, || {
        last = c.all().iter().map(|&i| stale_all(c, i)).collect::<Vec<_>>();
        let first = last[0].clone()?;
        last.iter().all(|s| s.as_ref() == Some(&first)).then_some(first)
    })
    .unwrap_or_else(|| {
        let sizes: Vec<Option<usize>> = last.iter().map(|s| s.as_ref().map(|m| m.len())).collect();
        panic!("nodes did not converge within {within:?}; key counts per node: {sizes:?}")
    })
}

/// Puts `count` keys `{prefix}{i}` = `value-{i}` through the leader, one at a time; each must be
/// acknowledged. Returns them.
fn put_acked(c: &Cluster, prefix: &str, count: usize) -> BTreeMap<String, String> {
    let l = leader(c);
    let mut written = BTreeMap::new();
    for i in 0..count {
        let (key, value) = (format!("{prefix}{i}"), format!("value-{i}"));
        let a = c.call(l, "POST", "/kv/put", Some(&json!({ "key": key, "value": value })));
        assert_eq!(
            a.status,
            200,
            "put {key} via the leader node{}: {:?} {}",
            l + 1,
            a.body,
            a.error
        );
        written.insert(key, value);
    }
    written
}

/// Waits until node `node`'s local state holds every `(key, value)` of `want`.
fn caught_up(c: &Cluster, node: usize, want: &BTreeMap<String, String>, within: Duration) -> bool {
    poll_every(POLL, within, || {
        let state = stale_all(c, node)?;
        want.iter().all(|(k, v)| state.get(k) == Some(v)).then_some(())
    })
    .is_some()
}

/// The WAL segment with the largest name in `dir` (the active one).
fn last_segment(dir: &Path) -> PathBuf {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list data dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with("wal-") && name.ends_with(".log")
        })
        .collect();
    segments.sort();
    segments.pop().unwrap_or_else(|| panic!("no wal-*.log in {}", dir.display()))
}

/// The records of a segment as (byte offset of the frame, payload length), read with the format
/// of `src/storage/wal/mod.rs` (8-byte magic, then `len:u32 crc:u32 payload` frames, little-endian).
/// Panics unless the file is exactly a header and whole frames with good CRCs.
fn frames(buf: &[u8]) -> Vec<(usize, usize)> {
    assert!(buf.len() >= 8 && &buf[..7] == b"RLKVWAL", "not a WAL segment");
    let mut out = Vec::new();
    let mut at = 8;
    while at < buf.len() {
        let word = |i: usize| u32::from_le_bytes(buf[i..i + 4].try_into().expect("4 bytes"));
        assert!(at + 8 <= buf.len(), "frame header at {at} cut short");
        let (len, crc) = (word(at) as usize, word(at + 4));
        assert!(at + 8 + len <= buf.len(), "frame at {at} of {len} bytes runs past the end");
        assert_eq!(crc32fast::hash(&buf[at + 8..at + 8 + len]), crc, "bad CRC at {at}");
        out.push((at, len));
        at += 8 + len;
    }
    out
}

fn read_log(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

// ----- 1. acknowledged writes survive kill -9 -------------------------------------------------

const WRITERS: usize = 6;
const KEYS_PER_WRITER: usize = 8;

/// What one writer thread did.
struct WriterReport {
    history: History,
    /// Answers no healthy server gives.
    unexpected: Vec<String>,
}

/// Writer `w` owns keys `w{w}-k{j}` and writes `v1, v2, ...` (unique per writer, so per key) to
/// random keys through random nodes, one write at a time, until `stop`.
fn writer(
    w: usize,
    addrs: Vec<String>,
    seed: u64,
    stop: Arc<AtomicBool>,
    acks: Arc<AtomicU64>,
) -> WriterReport {
    let mut rng = StdRng::seed_from_u64(seed);
    // Longer than the server's commit timeout plus a forwarding hop, so a 504 normally arrives
    // before the client gives up.
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_millis(300))
        .timeout(Duration::from_secs(6))
        .build();
    let mut report = WriterReport { history: History::new(), unexpected: Vec::new() };
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let key = format!("w{w}-k{}", rng.gen_range(0..KEYS_PER_WRITER));
        let value = format!("v{n}");
        let node = rng.gen_range(0..addrs.len());
        let PutAnswer { outcome, note, unexpected } = put_once(&agent, &addrs[node], &key, &value);
        report.history.record(&key, Some(value), outcome, note);
        report.unexpected.extend(unexpected);
        if outcome == Outcome::Acked {
            acks.fetch_add(1, Ordering::SeqCst);
        } else {
            // Pace retries against a node that is down (a refused connection fails at once).
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    report
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    KillFollower,
    KillLeader,
    KillAll,
    /// SIGTERM (a clean stop) of the leader, while it has writes in flight.
    StopLeader,
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    chaos("acknowledged_writes_survive_kill_9", "ack", &[], false);
}

/// The same with a snapshot every 300 entries and 32 KiB WAL segments: snapshots, log compaction,
/// the deletion of covered segments and InstallSnapshot to restarted nodes all happen under the
/// faults.
#[test]
fn acknowledged_writes_survive_kill_9_with_frequent_snapshots() {
    let flags =
        ["--snapshot-threshold", "300", "--snapshot-trailing", "50", "--segment-bytes", "32768"];
    chaos("acknowledged_writes_survive_kill_9_with_frequent_snapshots", "ack-snap", &flags, true);
}

/// Writers and faults (see [`Fault`]), then the checks against the history of every write.
/// `snapshots`: every node must have taken or installed a snapshot by the end.
fn chaos(test: &str, name: &str, flags: &[&str], snapshots: bool) {
    let seed = seed(test);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut args = vec!["--request-timeout-ms", "2000"];
    args.extend_from_slice(flags);
    let mut c = cluster(name, &args);
    leader(&c);
    let t0 = Instant::now();

    let addrs: Vec<String> = c.nodes.iter().map(|n| n.addr.clone()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(AtomicU64::new(0));
    let writers: Vec<JoinHandle<WriterReport>> = (0..WRITERS)
        .map(|w| {
            let (addrs, stop, acks) = (addrs.clone(), stop.clone(), acks.clone());
            let seed = seed.wrapping_add(1 + w as u64);
            std::thread::Builder::new()
                .name(format!("writer-{w}"))
                .spawn(move || writer(w, addrs, seed, stop, acks))
                .expect("spawn writer")
        })
        .collect();

    // Every kind of fault twice, in a random order, at random moments, with random downtimes.
    // Besides the three kinds of kill -9, a clean stop (SIGTERM) of the leader: it must not tell
    // the clients of its writes in flight that they failed (they may still commit).
    let mut schedule =
        [Fault::KillFollower, Fault::KillLeader, Fault::KillAll, Fault::StopLeader].repeat(2);
    schedule.shuffle(&mut rng);
    for fault in schedule {
        // Writes flow meanwhile; this only picks the moment of the fault.
        std::thread::sleep(Duration::from_millis(rng.gen_range(300..1200)));
        for i in c.all() {
            // A node that exits by itself (a panic, a fatal storage error) is a finding.
            if !c.is_running(i) {
                let log = read_log(&c.log_path(i));
                let lines: Vec<&str> = log.lines().collect();
                let tail = &lines[lines.len().saturating_sub(20)..];
                panic!("seed {seed}: node{} exited on its own; its log ends:\n{tail:#?}", i + 1);
            }
        }
        let down = Duration::from_millis(rng.gen_range(0..800));
        let victims: Vec<usize> = match fault {
            Fault::KillFollower => {
                let l = leader(&c);
                vec![(l + rng.gen_range(1..3)) % 3]
            }
            Fault::KillLeader | Fault::StopLeader => vec![leader(&c)],
            Fault::KillAll => c.all(),
        };
        for &i in &victims {
            if let Fault::StopLeader = fault {
                let code = c.terminate(i, Duration::from_secs(10));
                assert_eq!(code, Some(0), "node{} on SIGTERM", i + 1);
            } else {
                c.kill(i);
            }
        }
        println!(
            "{:>6} ms: {fault:?}: killed {:?}, {} acks so far, down for {down:?}",
            t0.elapsed().as_millis(),
            victims.iter().map(|i| i + 1).collect::<Vec<_>>(),
            acks.load(Ordering::SeqCst)
        );
        std::thread::sleep(down);
        for &i in &victims {
            c.restart(i).expect("restart");
        }
    }

    // After the last restart: a leader, and writes acknowledged again.
    let l = leader(&c);
    let base = acks.load(Ordering::SeqCst);
    let resumed = poll_every(POLL, Duration::from_secs(15), || {
        (acks.load(Ordering::SeqCst) >= base + 30).then_some(())
    });
    stop.store(true, Ordering::SeqCst);
    let mut history = History::new();
    let mut unexpected = Vec::new();
    for w in writers {
        let report = w.join().expect("writer panicked");
        history.merge(report.history);
        unexpected.extend(report.unexpected);
    }
    println!(
        "{:>6} ms: leader node{}; writes: {} acknowledged, {} refused, {} unknown",
        t0.elapsed().as_millis(),
        l + 1,
        history.count(Outcome::Acked),
        history.count(Outcome::Failed),
        history.count(Outcome::Unknown)
    );
    assert!(resumed.is_some(), "fewer than 30 writes acknowledged in 15 s after the last restart");
    assert!(unexpected.is_empty(), "answers no healthy server gives: {unexpected:#?}");
    assert!(history.count(Outcome::Acked) >= 100, "too few acknowledged writes to mean much");

    // Linearizable reads, through every node in turn: the latest acknowledged value or a later
    // write whose outcome is unknown, for every key.
    let keys: Vec<String> = history.keys().map(str::to_string).collect();
    let violations: Vec<String> = keys
        .iter()
        .enumerate()
        .filter_map(|(i, key)| {
            let value = read_key(&c, i % 3, key);
            history.check(key, value.as_deref()).err().map(|v| v.to_string())
        })
        .collect();
    assert!(violations.is_empty(), "seed {seed}: {violations:#?}");

    // Every node's local state converges, and is one the history allows.
    let state = converged(&c, Duration::from_secs(20));
    let violations: Vec<String> =
        history.check_state(&state).iter().map(ToString::to_string).collect();
    assert!(violations.is_empty(), "seed {seed}: converged state: {violations:#?}");
    let foreign: Vec<&String> = state.keys().filter(|k| history.writes(k).is_empty()).collect();
    assert!(foreign.is_empty(), "keys nobody wrote: {foreign:?}");
    if snapshots {
        for i in c.all() {
            let s = c.status(i).expect("status");
            println!(
                "node{}: snapshotIndex {}, firstLogIndex {}",
                i + 1,
                s["snapshotIndex"],
                s["firstLogIndex"]
            );
            assert!(s["snapshotIndex"].as_u64() > Some(0), "node{} has no snapshot: {s}", i + 1);
        }
        // Compaction deleted covered WAL segments (interrupted by the kills, and resumed later):
        // on some node the first segment is gone.
        let first = raftlabkv::storage::wal::segment_name(1);
        let deleted: Vec<bool> =
            c.all().iter().map(|&i| !c.data_dir(i).join(&first).exists()).collect();
        println!("first WAL segment deleted, per node: {deleted:?}");
        assert!(deleted.contains(&true), "no node deleted a WAL segment");
    }
}

// ----- 2. torn tail -----------------------------------------------------------------------------

#[test]
fn torn_wal_tail_is_cut_off_and_the_node_rejoins() {
    let seed = seed("torn_wal_tail_is_cut_off_and_the_node_rejoins");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut c = cluster("torn", &[]);
    let mut acked = put_acked(&c, "torn-", 100);

    // The leader's last record is torn: it lost bytes at the end and got garbage instead.
    let victim = leader(&c);
    c.kill(victim);
    let segment = last_segment(&c.data_dir(victim));
    let mut buf = std::fs::read(&segment).expect("read segment");
    let &(last, len) = frames(&buf).last().expect("records");
    let cut = rng.gen_range(1..=len.min(20));
    let garbage: Vec<u8> = (0..rng.gen_range(0..16)).map(|_| rng.r#gen()).collect();
    buf.truncate(buf.len() - cut);
    buf.extend_from_slice(&garbage);
    std::fs::write(&segment, &buf).expect("write segment");
    println!(
        "node{}: cut {cut} bytes off the record at {last} of {}, appended {} garbage bytes",
        victim + 1,
        segment.display(),
        garbage.len()
    );

    // The others go on meanwhile.
    acked.extend(put_acked(&c, "torn-while-down-", 20));
    c.restart(victim).expect("restart");
    let name = segment.file_name().and_then(|n| n.to_str()).expect("segment name").to_string();
    let log = c.log_path(victim);
    let warned = poll_every(POLL, Duration::from_secs(10), || {
        let text = read_log(&log);
        text.lines()
            .find(|l| {
                l.contains("torn")
                    && l.contains(&name)
                    && l.contains(&format!("byte offset {last}"))
            })
            .map(str::to_string)
    });
    assert!(warned.is_some(), "no warning naming {name} and offset {last} in {}", log.display());
    println!("node{} logged: {}", victim + 1, warned.unwrap_or_default());
    let serving = poll_every(POLL, Duration::from_secs(10), || c.status(victim));
    assert!(serving.is_some(), "node{} did not start after the torn tail", victim + 1);

    // It rejoins: gets everything, including what it lost and what it missed.
    acked.extend(put_acked(&c, "torn-after-", 20));
    assert!(
        caught_up(&c, victim, &acked, Duration::from_secs(20)),
        "node{} did not catch up after its torn tail",
        victim + 1
    );
    for (i, (k, v)) in acked.iter().enumerate() {
        assert_eq!(read_key(&c, i % 3, k).as_ref(), Some(v), "acknowledged {k} lost");
    }
    assert_eq!(converged(&c, Duration::from_secs(20)), acked);
}

// ----- 3. corruption in the middle of a segment -----------------------------------------------

#[test]
fn corrupt_wal_segment_refuses_to_start_and_a_wiped_node_catches_up() {
    corrupt_wal("corrupt_wal_segment_refuses_to_start_and_a_wiped_node_catches_up", "corrupt", &[]);
}

/// The same when the leader has compacted its log: the wiped node needs an InstallSnapshot.
#[test]
fn corrupt_wal_segment_and_a_wiped_node_catches_up_from_a_snapshot() {
    let flags = ["--snapshot-threshold", "60", "--snapshot-trailing", "10"];
    corrupt_wal(
        "corrupt_wal_segment_and_a_wiped_node_catches_up_from_a_snapshot",
        "corrupt-snap",
        &flags,
    );
}

fn corrupt_wal(test: &str, name: &str, flags: &[&str]) {
    let seed = seed(test);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut c = cluster(name, flags);
    let mut acked = put_acked(&c, "corrupt-", 100);

    let l = leader(&c);
    let victim = (l + rng.gen_range(1..3)) % 3;
    c.kill(victim);
    let segment = last_segment(&c.data_dir(victim));
    let mut buf = std::fs::read(&segment).expect("read segment");
    let records = frames(&buf);
    assert!(records.len() >= 20, "only {} records in {}", records.len(), segment.display());
    // A record well before the tail: at least 10 valid records follow it.
    let (offset, len) = records[rng.gen_range(1..records.len() - 10)];
    let flip = offset + 8 + rng.gen_range(0..len);
    buf[flip] ^= 1 << rng.gen_range(0..8);
    std::fs::write(&segment, &buf).expect("write segment");
    println!(
        "node{}: flipped a bit at byte {flip}, in the payload of the record at {offset} of {}",
        victim + 1,
        segment.display()
    );

    c.restart(victim).expect("spawn");
    let exit = c.wait_exit(victim, Duration::from_secs(10));
    let text = read_log(&c.log_path(victim));
    assert!(
        matches!(exit, Some(Some(code)) if code != 0),
        "node{} with a corrupt WAL: exit {exit:?} (want a non-zero exit); log:\n{text}",
        victim + 1
    );
    let name = segment.file_name().and_then(|n| n.to_str()).expect("segment name");
    let line = text
        .lines()
        .find(|l| l.contains(name) && l.contains(&format!("byte offset {offset}")))
        .unwrap_or_else(|| panic!("no error naming {name} and byte offset {offset}:\n{text}"));
    assert!(line.contains("corrupt"), "{line}");
    assert!(line.contains("wipe") && line.contains("data dir"), "no recovery advice: {line}");
    println!("node{} refused to start: {line}", victim + 1);

    // The rest of the cluster still serves.
    acked.extend(put_acked(&c, "corrupt-while-down-", 20));

    // Follow the advice: wipe the data dir, restart with the same id, catch up from the leader.
    let l = leader(&c);
    let compacted = c.status(l).expect("leader status")["firstLogIndex"].as_u64() > Some(1);
    println!("the leader's log is {}compacted", if compacted { "" } else { "not " });
    std::fs::remove_dir_all(c.data_dir(victim)).expect("wipe the data dir");
    c.restart(victim).expect("restart");
    assert!(
        caught_up(&c, victim, &acked, Duration::from_secs(20)),
        "node{} did not catch up after its data dir was wiped",
        victim + 1
    );
    assert!(c.is_running(victim));
    if compacted {
        let s = c.status(victim).expect("status");
        assert!(s["snapshotIndex"].as_u64() > Some(0), "caught up without a snapshot? {s}");
    }
    acked.extend(put_acked(&c, "corrupt-after-", 20));
    assert_eq!(converged(&c, Duration::from_secs(20)), acked);
}

// ----- 4. data dir lock -----------------------------------------------------------------------

/// A single-node server (it elects itself) on `data_dir`, its output to `log`.
fn solo(addr: &str, data_dir: &Path, log: &Path) -> Child {
    let log = std::fs::File::create(log).expect("create log");
    Command::new(SERVER)
        .args(["--id", "solo", "--addr", addr, "--data-dir"])
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log"))
        .stderr(log)
        .spawn()
        .expect("spawn server")
}

/// Waits for a single-node server to lead.
fn solo_leads(agent: &ureq::Agent, addr: &str) -> bool {
    poll_every(POLL, Duration::from_secs(10), || {
        let a =
            raftlabkv::testkit::cluster::call(agent, "GET", &format!("http://{addr}/status"), None);
        (a.body["isLeader"] == true).then_some(())
    })
    .is_some()
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused() {
    let dir = WorkDir::new("lock");
    let data = dir.0.join("data");
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(5)).build();
    let first_addr = format!("127.0.0.1:{}", free_port().expect("port"));
    let _first = KillOnDrop(solo(&first_addr, &data, &dir.0.join("first.log")));
    assert!(solo_leads(&agent, &first_addr), "the first server did not start");

    let second_addr = format!("127.0.0.1:{}", free_port().expect("port"));
    let started = Instant::now();
    let out = Command::new(SERVER)
        .args(["--id", "solo", "--addr", &second_addr, "--data-dir"])
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the second server");
    let mut second = KillOnDrop(out);
    let status = poll_every(POLL, Duration::from_secs(10), || second.0.try_wait().ok().flatten());
    let took = started.elapsed();
    let status = status.expect("the second server is still running after 10 s");
    let mut stderr = String::new();
    if let Some(mut e) = second.0.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    println!("second server exited with {status} after {took:?}: {stderr}");
    assert!(!status.success(), "the second server exited with {status}");
    assert!(
        stderr.contains("in use") && stderr.contains(&data.display().to_string()),
        "message does not say the data dir is in use: {stderr}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?} to refuse");

    // The first one never noticed.
    let put = raftlabkv::testkit::cluster::call(
        &agent,
        "POST",
        &format!("http://{first_addr}/kv/put"),
        Some(&json!({ "key": "still", "value": "mine" })),
    );
    assert_eq!(put.status, 200, "{:?}", put.body);
}

// ----- 5. dump --------------------------------------------------------------------------------

fn dump(data: &Path, json: bool) -> String {
    let mut cmd = Command::new(SERVER);
    cmd.arg("dump").arg("--data-dir").arg(data);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().expect("run dump");
    let stdout = String::from_utf8(out.stdout).expect("UTF-8 dump");
    assert!(
        out.status.success(),
        "dump exited with {}: {}{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Checks both dump formats of a data dir holding `keys` (written in order).
fn check_dump(data: &Path, keys: &[String]) {
    let text = dump(data, false);
    assert!(text.contains("hard state: term"), "no hard state in:\n{text}");
    for key in keys {
        assert!(text.contains(&format!("\"key\":\"{key}\"")), "{key} not in:\n{text}");
    }

    let lines = dump(data, true);
    let parsed: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let entries: Vec<&Value> = parsed.iter().filter(|v| v["kind"] == "entry").collect();
    for key in keys {
        let found = entries.iter().any(|e| {
            e["preview"].as_str().is_some_and(|p| p.contains(&format!("\"key\":\"{key}\"")))
        });
        assert!(found, "no entry for {key} in:\n{lines}");
    }
    assert!(parsed.iter().any(|v| v["kind"] == "hard_state" && v["term"].as_u64() >= Some(1)));
    let summary = parsed.last().expect("lines");
    assert_eq!(summary["kind"], "summary", "{lines}");
    assert_eq!(summary["problems"], 0, "{lines}");
    // The leader's no-op, then one entry per put.
    assert!(summary["last_index"].as_u64() > Some(keys.len() as u64), "{lines}");
    assert!(summary["term"].as_u64() >= Some(1), "{lines}");
}

#[test]
fn dump_prints_hard_state_and_entries() {
    let dir = WorkDir::new("dump");
    let data = dir.0.join("data");
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(5)).build();
    let addr = format!("127.0.0.1:{}", free_port().expect("port"));
    let mut server = KillOnDrop(solo(&addr, &data, &dir.0.join("solo.log")));
    assert!(solo_leads(&agent, &addr), "the server did not start");
    let keys: Vec<String> = (0..5).map(|i| format!("dump-key-{i}")).collect();
    for key in &keys {
        let a = raftlabkv::testkit::cluster::call(
            &agent,
            "POST",
            &format!("http://{addr}/kv/put"),
            Some(&json!({ "key": key, "value": "dumped" })),
        );
        assert_eq!(a.status, 200, "{:?}", a.body);
    }
    // While the node runs (dump takes no lock), then after kill -9.
    check_dump(&data, &keys);
    let _ = server.0.kill();
    let _ = server.0.wait();
    check_dump(&data, &keys);
}

// ----- 6. restart with many keys ---------------------------------------------------------------

fn value_of(i: usize) -> String {
    let head = format!("value-{i:08}-");
    format!("{head}{}", "x".repeat(100 - head.len()))
}

/// Fills the cluster with `count` keys of 100-byte values over `threads` keep-alive clients,
/// restarts every node (SIGTERM), and measures how long until it serves again.
fn restart_with_keys(name: &str, count: usize, threads: usize) {
    let mut c = cluster(name, &["--request-timeout-ms", "10000"]);
    leader(&c);
    let addrs: Vec<String> = c.nodes.iter().map(|n| n.addr.clone()).collect();
    let t0 = Instant::now();
    let fillers: Vec<JoinHandle<()>> = (0..threads)
        .map(|t| {
            let addrs = addrs.clone();
            std::thread::spawn(move || {
                let client = Client::builder(addrs)
                    .request_timeout(Duration::from_secs(15))
                    .retry_deadline(Duration::from_secs(30))
                    .build();
                for i in (t..count).step_by(threads) {
                    let key = format!("key-{i:08}");
                    if let Err(e) = client.put(&key, &value_of(i)) {
                        panic!("put {key}: {e}");
                    }
                }
            })
        })
        .collect();
    for f in fillers {
        f.join().expect("a filler failed");
    }
    let fill = t0.elapsed();
    println!(
        "{name}: {count} keys written in {fill:.1?} ({:.0} puts/s over {threads} clients)",
        count as f64 / fill.as_secs_f64()
    );
    let all_applied = |c: &Cluster| {
        c.all().iter().all(|&i| c.status(i).is_some_and(|s| s["keys"] == count as u64))
    };
    assert!(
        poll_every(POLL, Duration::from_secs(30), || all_applied(&c).then_some(())).is_some(),
        "not every node applied {count} keys"
    );
    let bytes: u64 = std::fs::read_dir(c.data_dir(0))
        .expect("list")
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!("{name}: node1's data dir holds {:.1} MiB", bytes as f64 / (1 << 20) as f64);

    for i in c.all() {
        assert_eq!(c.terminate(i, Duration::from_secs(20)), Some(0), "node{} on SIGTERM", i + 1);
    }
    let t1 = Instant::now();
    for i in c.all() {
        c.restart(i).expect("restart");
    }
    // Serving: a linearizable read of the last key written answers right.
    let last = format!("key-{:08}", count - 1);
    let serving = poll_every(POLL, Duration::from_secs(60), || {
        let a = c.call(0, "GET", &format!("/kv/get/{last}"), None);
        (a.status == 200).then_some(a.body["value"].clone())
    });
    let to_serve = t1.elapsed();
    assert_eq!(serving, Some(Value::from(value_of(count - 1))), "not serving after 60 s");
    let full = poll_every(POLL, Duration::from_secs(60), || all_applied(&c).then_some(()));
    let to_apply = t1.elapsed();
    assert!(full.is_some(), "not every node re-applied {count} keys within 60 s");
    println!(
        "{name}: restart of 3 nodes with {count} keys: serving (linearizable read) after \
         {to_serve:.2?}, every node applied all keys after {to_apply:.2?}"
    );

    // Everything is there (read with a reader: the answer is over ureq's 10 MB `into_string`).
    let url = format!("http://{}/kv/all", c.nodes[leader(&c)].addr);
    let answer = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build()
        .get(&url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let state: BTreeMap<String, String> =
        serde_json::from_reader(answer.into_reader()).expect("a JSON map");
    assert_eq!(state.len(), count);
    for (i, (k, v)) in state.iter().enumerate() {
        assert_eq!((k, v), (&format!("key-{i:08}"), &value_of(i)));
    }
}

/// Prints the fill rate and the restart time (`--nocapture`); asserts only a generous deadline.
#[test]
fn whole_cluster_restart_with_100k_keys_serves_again() {
    restart_with_keys("restart100k", 100_000, 32);
}
