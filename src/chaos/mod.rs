//! Chaos testing: real `raftlabkv-server` processes, a seeded nemesis injecting faults, concurrent
//! clients recording a history, and a linearizability check of that history — Jepsen in miniature.
//!
//! ```text
//!   clients (5–15 threads) ──HTTP──> node1  node2  node3 ...   <── status sampler (every 50 ms)
//!     record every attempt             │  ╲  ╱  │
//!                                    [proxy per directed link i->j]  <── nemesis (seeded)
//! ```
//!
//! Entry points: [`run`] (the harness, used by the `raftlabkv-chaos` binary, `scripts/chaos.sh`
//! and `tests/chaos.rs`) and [`workload::verify`] (the same clients and check against any live
//! cluster, for `raftlabkv-client verify`).
//!
//! # The cluster
//!
//! A [`crate::testkit::Cluster`] of 3 to 9 nodes (3 or 5, usually) on 127.0.0.1, each with a data
//! dir (the durable write-ahead log, fsync on), every directed peer link `i -> j` through its own
//! TCP proxy. Clients talk to the nodes directly; a follower forwards client requests to the
//! leader over its proxied link, so link faults hit forwarded requests too. Extra server flags
//! (for example a snapshot threshold) are passed to every node unchanged.
//!
//! # The nemesis
//!
//! Seeded ([`nemesis::Nemesis`]): the same seed gives the same sequence of fault choices (the
//! processes' timing still varies run to run). It loops until the run's time is up:
//!
//! 1. a quiet period (0.5–2 s);
//! 2. one fault, held for 1–4 s. Kinds are drawn from those enabled with `--faults` in rounds:
//!    each round uses every enabled kind once, in a random order.
//!    * `partition` — a random minority/majority split, or the leader cut off alone; links between
//!      the sides refuse connections (and cut open ones) or black-hole them (accept, never answer);
//!    * `pause` — SIGSTOP the leader for 1–5 s, then SIGCONT (a GC pause, a stalled VM: it wakes up
//!      believing it still leads);
//!    * `kill` — `kill -9` a random node, restarted at the heal from its data dir;
//!    * `killall` — `kill -9` every node, restarted together after 0.1–1.5 s;
//!    * `restart` — SIGTERM a node (the leader half the time), wait for its clean exit, start it
//!      again: a rolling restart;
//!    * `oneway` — one node's outgoing links (it can be reached but cannot reach anyone) or incoming
//!      links (the reverse) refuse or black-hole;
//!    * `delay` — 20–200 ms (± jitter) per chunk on every link, one node's links, or half of them;
//!    * `lossy` — the same choice of links, each chunk breaking its connection with 5–30% chance;
//!    * `membership` — one configuration change (`membership.rs`): add a node (learner, caught up,
//!      promoted), remove a voter (the leader half the time; the removed process keeps running
//!      through one more fault, then is stopped for good), replace a voter (`kill -9`, wipe its
//!      disk, add a fresh node, remove the dead one), or transfer the leadership. The voters stay
//!      between 3 and the initial size + 2. Nodes added this way reach and are reached by the
//!      others directly, without a proxy, so link faults leave their links alone (the timeline
//!      says so). Clients and the sampler follow the nodes that join; the final read and the
//!      convergence check ask the members the run ended with;
//! 3. the heal: every link passes, paused nodes continue, dead nodes restart;
//! 4. availability: a probe writes a key outside the workload through the nodes in turn until one
//!    write is acknowledged. The time from heal to that acknowledgement is reported per heal; none
//!    within 20 s is a failure.
//!
//! At the end the nemesis heals everything once more (the *final heal*).
//!
//! # The history: recording rules
//!
//! Each client thread loops: pick an operation (40% put of a unique value, 35% get, 12% delete,
//! 13% get-all), a key from a small key space, and a node, all at random; send it with a plain
//! `ureq` agent and a per-request timeout. **Every HTTP attempt is one operation** — the agent
//! keeps no connection pool, so ureq never silently resends an idempotent request on a second
//! connection — with call and return times read from one shared monotonic [`workload::Clock`]
//! just before sending and just after the whole answer was read:
//!
//! | answer | recorded as |
//! |---|---|
//! | 200 (404 `not_found` for a get) | the operation with its output and return time |
//! | 503 | nothing: the server promises the request was not applied and will not be |
//! | connection refused (or connect timeout) | nothing: the request never left the client |
//! | timeout, 504, broken connection, any other status | outcome unknown: `return_time: None` |
//!
//! After an unknown outcome the client carries on under a new client id (its old operation stays
//! open forever as far as the history knows). A get-all result is restricted to the workload's
//! keys (the probe key is not part of the history).
//!
//! # What is checked
//!
//! * **Linearizability** of the whole history, per key ([`crate::check::check_history`]). Every
//!   acknowledged write is part of it, so a lost write shows up as a read that cannot be explained;
//!   so do stale reads, resurrected deletes and values nobody wrote. `Verdict::Unknown` (checker
//!   out of budget) is a failure.
//! * **Election Safety**: the sampler polls every node's `/status` every 50 ms; two nodes ever
//!   claiming to lead the same term is a failure.
//! * **Recovery**: after the final heal, one leader that every node agrees on within 5 s; after
//!   every heal, an acknowledged write within 20 s.
//! * **Convergence**: once the clients stop, every node's log is fully committed and applied and
//!   every node's local state (`/kv/all?consistency=stale`) is the same, within 15 s; then a final
//!   linearizable get-all (recorded in the history, so checked too) must equal that state.
//! * **Liveness of the workload**: at least one write and one read were acknowledged.
//!
//! # Output
//!
//! One line, `PASS seed=.. nodes=.. ops=.. ...` or `FAIL seed=.. ...: reasons`. In the output
//! directory: `summary.txt`, `timeline.txt` (faults, heals, recoveries, leaders as the sampler saw
//! them), the node logs (`cluster/`) and, on failure, `history.json` (everything), and for a
//! linearizability violation `failing-history.json` plus a readable `failing-history.txt`: the
//! checker's shrunk per-key witness. On a pass the node data dirs are removed unless asked to keep
//! them.

mod membership;
pub mod nemesis;
pub mod sampler;
pub mod workload;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::check::{KvInput, KvOutput, Operation, Verdict, history_to_json};
use crate::testkit::{Cluster, ClusterOptions};
pub use nemesis::{Addresses, Event, FaultKind, Nemesis, Recovery};
use sampler::Sample;
use workload::Recorded;
pub use workload::{Checked, Clock, WorkloadConfig, WorkloadStats, secs};

/// A chaos run's settings.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    /// Cluster size (3 or 5).
    pub nodes: usize,
    /// How long the clients and the nemesis run.
    pub duration: Duration,
    /// Seeds the nemesis and the clients' choices.
    pub seed: u64,
    /// The faults the nemesis may choose from (empty: no faults).
    pub faults: Vec<FaultKind>,
    /// Client threads.
    pub clients: usize,
    /// Keys in the workload.
    pub keys: usize,
    /// Per-request client timeout.
    pub request_timeout: Duration,
    /// The `raftlabkv-server` binary.
    pub server_bin: PathBuf,
    /// Extra flags for every server (e.g. `--snapshot-threshold 100`).
    pub server_flags: Vec<String>,
    /// Where the node logs and the report go.
    pub out_dir: PathBuf,
    /// Time budget of the linearizability check.
    pub check_budget: Duration,
    /// Keep the node data dirs even when the run passes.
    pub keep_data: bool,
    /// Counter keys the clients increment exactly once each ([`workload::increment`]); 0: none.
    pub counters: usize,
    /// The clients' reads are lease reads (`?consistency=lease`), and every server runs with
    /// `--lease-reads`.
    pub lease_reads: bool,
}

impl ChaosConfig {
    /// Defaults: 3 nodes, 30 s, every fault, 10 clients, 8 keys, 2 s request timeout, 120 s check
    /// budget, output in a temporary directory named after the seed.
    pub fn new(server_bin: impl Into<PathBuf>, seed: u64) -> Self {
        ChaosConfig {
            nodes: 3,
            duration: Duration::from_secs(30),
            seed,
            faults: FaultKind::ALL.to_vec(),
            clients: 10,
            keys: 8,
            counters: 2,
            request_timeout: Duration::from_secs(2),
            server_bin: server_bin.into(),
            server_flags: Vec::new(),
            out_dir: std::env::temp_dir()
                .join(format!("raftlabkv-chaos-{seed}-{}", std::process::id())),
            check_budget: Duration::from_secs(120),
            keep_data: false,
            lease_reads: false,
        }
    }
}

/// What a chaos run found.
#[derive(Debug, Clone)]
pub struct ChaosReport {
    /// The settings.
    pub config: ChaosConfig,
    /// Client counts.
    pub stats: WorkloadStats,
    /// The history (sorted by call time).
    pub history: Vec<Operation>,
    /// The check, if it ran.
    pub checked: Option<Checked>,
    /// Everything that went wrong; empty on a pass.
    pub failures: Vec<String>,
    /// Faults, heals and leaders, in time order.
    pub timeline: Vec<Event>,
    /// Per heal: time to the first acknowledged write.
    pub recoveries: Vec<Recovery>,
    /// After the final heal: time until one leader was agreed on.
    pub leader_after_heal: Option<Duration>,
    /// Highest term any node reported.
    pub max_term: u64,
    /// Operations on the busiest key (its sub-history's size, get-alls included).
    pub max_ops_per_key: usize,
    /// How long the whole run took.
    pub wall_time: Duration,
}

impl ChaosReport {
    /// True when nothing went wrong.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The one-line verdict.
    pub fn summary(&self) -> String {
        let c = &self.config;
        let s = &self.stats;
        let faults: Vec<&str> = c.faults.iter().map(|f| f.name()).collect();
        let recovered: Vec<f64> = self
            .recoveries
            .iter()
            .filter_map(|r| r.first_write_after.map(|d| d.as_secs_f64()))
            .collect();
        let max_recovery = recovered.iter().cloned().fold(0.0, f64::max);
        let mean_recovery = if recovered.is_empty() {
            0.0
        } else {
            recovered.iter().sum::<f64>() / recovered.len() as f64
        };
        let mut line = format!(
            "{} seed={} nodes={} time={}s faults={} injected={} ops={} acked_writes={} ok_reads={} \
             unknown={} not_applied={} increments=acked:{},refused:{},unknown:{} \
             max_ops_per_key={} max_term={} leader_after_heal={} \
             write_after_heal=mean:{:.2}s,max:{:.2}s check={}",
            if self.passed() { "PASS" } else { "FAIL" },
            c.seed,
            c.nodes,
            c.duration.as_secs(),
            if faults.is_empty() { "none".to_string() } else { faults.join(",") },
            self.recoveries.len(),
            self.history.len(),
            s.acked_writes,
            s.ok_reads,
            s.unknown,
            s.not_applied,
            s.increments_acked,
            s.increments_refused,
            s.increments_unknown,
            self.max_ops_per_key,
            self.max_term,
            self.leader_after_heal.map_or("none".into(), |d| format!("{:.2}s", d.as_secs_f64())),
            mean_recovery,
            max_recovery,
            self.checked
                .as_ref()
                .map_or("skipped".into(), |c| format!("{:.2}s", c.took.as_secs_f64())),
        );
        if !self.passed() {
            let _ = write!(
                line,
                " :: {} (details in {})",
                self.failures.join("; "),
                c.out_dir.display()
            );
        }
        line
    }
}

/// Runs one chaos schedule: start the cluster, run clients + sampler + nemesis for
/// `config.duration`, heal, check everything (see the module docs), write the report files.
/// Errors only when the cluster cannot be started or the output cannot be written; everything the
/// run finds is in the report.
pub fn run(config: &ChaosConfig) -> std::io::Result<ChaosReport> {
    let started = Instant::now();
    std::fs::create_dir_all(&config.out_dir)?;
    let work_dir = config.out_dir.join("cluster");
    let _ = std::fs::remove_dir_all(&work_dir);
    let mut cluster = Cluster::start(ClusterOptions {
        nodes: config.nodes,
        server_bin: config.server_bin.clone(),
        work_dir: work_dir.clone(),
        data_dirs: true,
        extra_args: config
            .server_flags
            .iter()
            .cloned()
            .chain(config.lease_reads.then(|| "--lease-reads".to_string()))
            .collect(),
        peer_secret: true,
    })?;
    let clock = Clock::new();
    let servers: Vec<String> = cluster.nodes.iter().map(|n| n.addr.clone()).collect();
    // Kept up to date by the nemesis as nodes join and leave (the membership fault).
    let addresses = Addresses::of(&cluster);
    let mut report = ChaosReport {
        config: config.clone(),
        stats: WorkloadStats::default(),
        history: Vec::new(),
        checked: None,
        failures: Vec::new(),
        timeline: Vec::new(),
        recoveries: Vec::new(),
        leader_after_heal: None,
        max_term: 0,
        max_ops_per_key: 0,
        wall_time: Duration::ZERO,
    };
    if cluster.wait_leader(&cluster.all(), Duration::from_secs(15)).is_none() {
        report.failures.push("no leader within 15 s of starting the cluster".into());
        return finish(report, started);
    }
    let workload = WorkloadConfig {
        servers,
        clients: config.clients,
        keys: config.keys,
        key_prefix: "k".into(),
        request_timeout: config.request_timeout,
        duration: config.duration,
        seed: config.seed,
        counters: config.counters,
        lease_reads: config.lease_reads,
    };
    // The plain keys and the counters: both are read at the end and checked.
    let mut keys = workload.key_names();
    keys.extend(workload.counter_names());
    let stop_sampler = AtomicBool::new(false);
    let end = Instant::now() + config.duration;

    let (recorded, samples, nemesis_events) = std::thread::scope(|s| {
        let sampler = s.spawn(|| sampler::sample(&addresses.nodes, &clock, &stop_sampler));
        // The clients stop by themselves at `end`, when the nemesis does.
        let clients = s.spawn(|| workload::run_clients_on(&workload, &clock, &addresses.clients));

        let mut nemesis = Nemesis::new(&mut cluster, clock, config.seed, config.faults.clone())
            .with_addresses(&addresses);
        nemesis.note(format!("start: {} clients on {} keys", config.clients, config.keys));
        nemesis.run(end);
        nemesis.final_heal();
        let healed = Instant::now();
        let timeline = std::mem::take(&mut nemesis.timeline);
        report.recoveries = std::mem::take(&mut nemesis.recoveries);
        drop(nemesis);
        let mut events = timeline;

        // A leader everyone agrees on, within 5 s of the final heal.
        match cluster.wait_leader(&cluster.all(), Duration::from_secs(5)) {
            Some(l) => {
                report.leader_after_heal = Some(healed.elapsed());
                events.push(Event {
                    at: clock.now(),
                    what: format!("{} leads after the final heal", cluster.nodes[l].id),
                });
            }
            None => report.failures.push("no leader agreed on within 5 s of the final heal".into()),
        }
        let mut recorded = clients.join().expect("clients panicked");
        events.push(Event { at: clock.now(), what: "clients stopped".into() });

        // The final read goes to the members the run ended with.
        let members: Vec<String> =
            cluster.all().iter().map(|&i| cluster.nodes[i].addr.clone()).collect();
        let ends = (&members[..], &keys[..]);
        if let Err(why) = final_read(&cluster, config, ends, &clock, &mut recorded, &mut events) {
            report.failures.push(why);
        }
        stop_sampler.store(true, Ordering::SeqCst);
        let samples = sampler.join().expect("sampler panicked");
        (recorded, samples, events)
    });
    let names: Vec<String> = cluster.nodes.iter().map(|n| n.id.clone()).collect();
    drop(cluster); // kills the nodes
    judge(&mut report, recorded, &samples, nemesis_events, (&names, &keys));
    finish(report, started)
}

/// Convergence, then one last linearizable read that must see the converged state. Its
/// operations join `recorded`; `servers` and `keys` are the cluster's and the workload's.
fn final_read(
    cluster: &Cluster,
    config: &ChaosConfig,
    (servers, keys): (&[String], &[String]),
    clock: &Clock,
    recorded: &mut Recorded,
    events: &mut Vec<Event>,
) -> Result<(), String> {
    let state = converge(cluster, Duration::from_secs(15))
        .map_err(|why| format!("no convergence within 15 s: {why}"))?;
    events.push(Event { at: clock.now(), what: "every node caught up, same state".into() });
    let (ops, last) = workload::read_all(
        servers,
        keys,
        clock,
        0,
        config.request_timeout,
        Duration::from_secs(10),
    );
    recorded.ops.extend(ops);
    let expected: std::collections::BTreeMap<String, String> =
        state.into_iter().filter(|(k, _)| keys.contains(k)).collect();
    if let Some(map) = &last {
        let counters: std::collections::BTreeMap<String, String> = map
            .iter()
            .filter(|(k, _)| k.contains("ctr"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let wrong = workload::check_increments(&counters, &recorded.increments);
        if !wrong.is_empty() {
            return Err(format!("exactly-once increments broken: {}", wrong.join("; ")));
        }
    }
    match last {
        Some(map) if map == expected => Ok(()),
        Some(map) => Err(format!(
            "the final linearizable read {map:?} differs from every node's local state {expected:?}"
        )),
        None => Err("the final linearizable read failed for 10 s".into()),
    }
}

/// Fills the report from what the run recorded, and judges it: two leaders in one term, a heal
/// without a write after it, a workload that got nothing through, a history that is not
/// linearizable. `names` are the nodes', `keys` the workload's.
fn judge(
    report: &mut ChaosReport,
    recorded: Recorded,
    samples: &[Sample],
    nemesis_events: Vec<Event>,
    (names, keys): (&[String], &[String]),
) {
    let config = &report.config;
    report.stats = recorded.stats;
    report.history = recorded.ops;
    report.max_term = samples.iter().map(|s| s.term).max().unwrap_or(0);
    report.max_ops_per_key =
        workload::ops_per_key(&report.history, keys).values().copied().max().unwrap_or(0);
    for (term, nodes) in sampler::two_leaders(samples) {
        let who: Vec<&str> = nodes.iter().map(|&i| names[i].as_str()).collect();
        report.failures.push(format!("two leaders in term {term}: {}", who.join(" and ")));
    }
    for r in &report.recoveries {
        if r.first_write_after.is_none() {
            report.failures.push(format!(
                "no write acknowledged within 20 s of the heal at {} (after {})",
                secs(r.healed_at),
                r.fault
            ));
        }
    }
    if report.stats.acked_writes == 0 || report.stats.ok_reads == 0 {
        report.failures.push("the workload got no acknowledged write or no successful read".into());
    }
    let mut timeline = nemesis_events;
    timeline.extend(sampler::leader_events(samples, names));
    timeline.sort_by_key(|e| e.at);
    report.timeline = timeline;

    let checked = workload::check(&report.history, config.check_budget);
    match &checked.verdict {
        Verdict::Ok => {}
        Verdict::Illegal { key, history } => report
            .failures
            .push(format!("not linearizable: key {key} (witness of {} operations)", history.len())),
        Verdict::Unknown { key } => report.failures.push(format!(
            "linearizability undecided: the checker ran out of its {:?} budget on key {key}",
            config.check_budget
        )),
    }
    report.checked = Some(checked);
}

/// Waits until every node's log is fully committed and applied, all at the same index, with the
/// same local state; returns that state.
fn converge(
    cluster: &Cluster,
    within: Duration,
) -> Result<std::collections::BTreeMap<String, String>, String> {
    let deadline = Instant::now() + within;
    let mut why;
    loop {
        why = match converged_state(cluster) {
            Ok(state) => return Ok(state),
            Err(why) => why,
        };
        if Instant::now() > deadline {
            return Err(why);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn converged_state(
    cluster: &Cluster,
) -> Result<std::collections::BTreeMap<String, String>, String> {
    let mut indexes = Vec::new();
    let mut states = Vec::new();
    for i in cluster.all() {
        let id = &cluster.nodes[i].id;
        let status = cluster.status(i).ok_or_else(|| format!("{id} does not answer /status"))?;
        let field = |f: &str| status[f].as_u64().unwrap_or(u64::MAX);
        let (last, commit, applied) =
            (field("lastLogIndex"), field("commitIndex"), field("lastApplied"));
        if last != commit || commit != applied {
            return Err(format!("{id}: last log index {last}, commit {commit}, applied {applied}"));
        }
        indexes.push(last);
        let all = cluster.call(i, "GET", "/kv/all?consistency=stale", None);
        let state: std::collections::BTreeMap<String, String> =
            serde_json::from_value(all.body).map_err(|e| format!("{id}: /kv/all: {e}"))?;
        states.push(state);
    }
    if indexes.windows(2).any(|w| w[0] != w[1]) {
        return Err(format!("nodes applied different indexes: {indexes:?}"));
    }
    if states.windows(2).any(|w| w[0] != w[1]) {
        return Err(format!("same index {}, different states: {states:?}", indexes[0]));
    }
    Ok(states.into_iter().next().unwrap_or_default())
}

/// Writes the report files and removes the data dirs of a passing run.
fn finish(mut report: ChaosReport, started: Instant) -> std::io::Result<ChaosReport> {
    report.wall_time = started.elapsed();
    let dir = &report.config.out_dir;
    let mut summary = report.summary();
    summary.push('\n');
    for f in &report.failures {
        let _ = writeln!(summary, "failure: {f}");
    }
    let _ =
        writeln!(summary, "stats: {}", serde_json::to_string(&report.stats).unwrap_or_default());
    let _ = writeln!(summary, "server flags: {:?}", report.config.server_flags);
    if report.config.lease_reads {
        let _ = writeln!(summary, "reads: lease (?consistency=lease, servers with --lease-reads)");
    }
    let _ = writeln!(summary, "wall time: {:.1}s", report.wall_time.as_secs_f64());
    std::fs::write(dir.join("summary.txt"), summary)?;
    let mut timeline = nemesis::format_timeline(&report.timeline);
    if let Some(Checked { verdict: Verdict::Illegal { key, history }, .. }) = &report.checked {
        let text = describe_witness(key, history);
        let _ = writeln!(timeline, "\n{text}");
        std::fs::write(dir.join("failing-history.json"), history_to_json(history))?;
        std::fs::write(dir.join("failing-history.txt"), text)?;
    }
    std::fs::write(dir.join("timeline.txt"), timeline)?;
    if !report.passed() {
        std::fs::write(dir.join("history.json"), history_to_json(&report.history))?;
    } else if !report.config.keep_data {
        for i in 1..=report.config.nodes {
            let _ = std::fs::remove_dir_all(dir.join("cluster").join(format!("node{i}")));
        }
    }
    Ok(report)
}

/// The checker's witness as text. The shrinker cuts the history at the earliest time the violation
/// is visible, so the reads at its end are the ones no order explains: the tail is shown first.
pub fn describe_witness(key: &str, history: &[Operation]) -> String {
    const TAIL: usize = 40;
    let mut sorted: Vec<Operation> = history.to_vec();
    sorted.sort_by_key(|o| o.call);
    let mut out = format!(
        "smallest failing history found for key {key}: {} operations (the checker keeps every \
         write before the violation; no order of them explains the reads at the end)\n",
        sorted.len()
    );
    if sorted.len() > TAIL {
        let _ = writeln!(out, "\nthe last {TAIL} operations:");
        out.push_str(&format_history(&sorted[sorted.len() - TAIL..]));
        out.push_str("\nall of them:\n");
    }
    out.push_str(&format_history(&sorted));
    out
}

/// A history as text, one operation per line, in call order:
/// `  1.234s ->  1.240s  client 3  put k1 c3.7 => ok`.
pub fn format_history(ops: &[Operation]) -> String {
    let mut sorted: Vec<&Operation> = ops.iter().collect();
    sorted.sort_by_key(|o| o.call);
    let mut out = String::new();
    for op in sorted {
        let input = match &op.input {
            KvInput::Put { key, value } => format!("put {key} {value}"),
            KvInput::Get { key } => format!("get {key}"),
            KvInput::Delete { key } => format!("delete {key}"),
            KvInput::Append { key, value } => format!("append {key} {value}"),
            KvInput::GetAll => "get-all".into(),
            KvInput::Cas { key, expect, value } => {
                format!("cas {key} {} -> {value}", expect.as_deref().unwrap_or("(absent)"))
            }
        };
        let output = match &op.output {
            KvOutput::Ok => "ok".into(),
            KvOutput::Value(Some(v)) => v.clone(),
            KvOutput::Value(None) => "not found".into(),
            KvOutput::All(map) => format!("{map:?}"),
            KvOutput::Unknown => "unknown".into(),
            KvOutput::Cas(true) => "swapped".into(),
            KvOutput::Cas(false) => "not swapped".into(),
        };
        let ret = op.return_time.map_or("       ?".into(), secs);
        let _ = writeln!(
            out,
            "{:>10} -> {:>10}  client {:<4} {input} => {output}",
            secs(op.call),
            ret,
            op.client_id
        );
    }
    out
}
