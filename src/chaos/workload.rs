//! The client side of a chaos run: concurrent clients over a small key space, the history they
//! record, and its check. Used by the harness ([`super::run`]) and by `raftlabkv-client verify`.
//!
//! See the [module documentation](super) for the recording rules.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::api::{AllReply, ErrorBody, GetReply, PutRequest};
use crate::check::{KvInput, KvOutput, Operation, Verdict, check_history};
use crate::client::percent_encode;

/// Nanoseconds since a fixed start, shared by every thread of a run: the history's time axis.
/// `Instant` is monotonic and the same clock in every thread, so "a returned before b was called"
/// in this clock means it really did.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// A clock starting now.
    pub fn new() -> Self {
        Clock { start: Instant::now() }
    }

    /// Nanoseconds since the start.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// The instant `ns` nanoseconds after the start.
    pub fn instant(&self, ns: u64) -> Instant {
        self.start + Duration::from_nanos(ns)
    }
}

/// Seconds with millisecond precision, for reports (`12.345s`).
pub fn secs(ns: u64) -> String {
    format!("{:.3}s", ns as f64 / 1e9)
}

/// What the clients do.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Client-facing addresses (`127.0.0.1:8080`); each request goes to a random one.
    pub servers: Vec<String>,
    /// Concurrent client threads (each issues one request at a time).
    pub clients: usize,
    /// Size of the key space.
    pub keys: usize,
    /// Keys are `<prefix>0`, `<prefix>1`, ... They must not exist before the run: the checker
    /// assumes every key starts absent.
    pub key_prefix: String,
    /// Per-request timeout; a request that times out has an unknown outcome.
    pub request_timeout: Duration,
    /// How long the clients run.
    pub duration: Duration,
    /// Seed for the clients' choices of operation, key and node.
    pub seed: u64,
    /// Counter keys for the exactly-once increments (`<prefix>ctr0`, ...; 0: none). See
    /// [`increment`].
    pub counters: usize,
    /// Reads ask for `?consistency=lease` (the servers need `--lease-reads` to honour it):
    /// checked like every other read, so a lease that outlives its leadership fails the check.
    pub lease_reads: bool,
}

impl WorkloadConfig {
    /// The query string the workload's reads carry.
    pub fn read_query(&self) -> &'static str {
        if self.lease_reads { "?consistency=lease" } else { "" }
    }

    /// The workload's keys.
    pub fn key_names(&self) -> Vec<String> {
        (0..self.keys.max(1)).map(|i| format!("{}{i}", self.key_prefix)).collect()
    }

    /// The counter keys (not among [`WorkloadConfig::key_names`]: only increments touch them).
    pub fn counter_names(&self) -> Vec<String> {
        (0..self.counters).map(|i| format!("{}ctr{i}", self.key_prefix)).collect()
    }
}

/// Counts of what happened to the clients' requests.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WorkloadStats {
    /// HTTP attempts made.
    pub attempts: u64,
    /// Definite answers, recorded: 200 (or 404 for a get).
    pub definite: u64,
    /// 503 "not applied", or a connection that could not be opened: left out of the history.
    pub not_applied: u64,
    /// Timeouts, 504s, broken connections, unexpected statuses: recorded with no return time.
    pub unknown: u64,
    /// Acknowledged writes (put and delete).
    pub acked_writes: u64,
    /// Successful reads (get and get-all).
    pub ok_reads: u64,
    /// Client ids used (a client takes a new id after each unknown outcome).
    pub client_ids: u64,
    /// Increments acknowledged as applied.
    pub increments_acked: u64,
    /// Increments whose compare failed (another increment came first): not applied.
    pub increments_refused: u64,
    /// Increments whose outcome stayed unknown after their retries.
    pub increments_unknown: u64,
}

impl WorkloadStats {
    fn add(&mut self, other: &WorkloadStats) {
        self.attempts += other.attempts;
        self.definite += other.definite;
        self.not_applied += other.not_applied;
        self.unknown += other.unknown;
        self.acked_writes += other.acked_writes;
        self.ok_reads += other.ok_reads;
        self.increments_acked += other.increments_acked;
        self.increments_refused += other.increments_refused;
        self.increments_unknown += other.increments_unknown;
    }
}

/// How one HTTP attempt is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A definite answer: record the operation with this output and its return time.
    Definite(KvOutput),
    /// 503 (the server promises it was not applied and will not be), or the request never left
    /// (the connection could not be opened). Not an operation at all.
    NotApplied,
    /// Anything else: record with no return time (it may or may not take effect).
    Unknown,
}

/// Classifies an answer. `status` is `None` when no complete HTTP answer arrived (connection
/// error, timeout, a body cut off). `keys` is the workload's key set: a get-all result is
/// restricted to it (other keys, written by someone else, are none of this history's business).
pub fn classify(input: &KvInput, status: Option<u16>, body: &Value, keys: &[String]) -> Outcome {
    let Some(status) = status else { return Outcome::Unknown };
    match (input, status) {
        (_, 503) => Outcome::NotApplied,
        (KvInput::Put { .. } | KvInput::Delete { .. }, 200) => Outcome::Definite(KvOutput::Ok),
        (KvInput::Get { key }, 200) => match GetReply::deserialize(body) {
            Ok(r) if r.key == key.as_str() => {
                Outcome::Definite(KvOutput::Value(Some(r.value.into_owned())))
            }
            _ => Outcome::Unknown,
        },
        (KvInput::Get { .. }, 404) => match ErrorBody::deserialize(body) {
            Ok(e) if e.error.as_deref() == Some("not_found") => {
                Outcome::Definite(KvOutput::Value(None))
            }
            _ => Outcome::Unknown,
        },
        (KvInput::Cas { .. }, 200) => match body["succeeded"].as_bool() {
            Some(done) => Outcome::Definite(KvOutput::Cas(done)),
            None => Outcome::Unknown,
        },
        (KvInput::GetAll, 200) => match AllReply::deserialize(body) {
            Ok(mut map) => {
                let all = keys.iter().filter_map(|k| map.remove_entry(k)).collect();
                Outcome::Definite(KvOutput::All(all))
            }
            Err(_) => Outcome::Unknown,
        },
        _ => Outcome::Unknown,
    }
}

/// An HTTP agent for one client: no connection pool. ureq retries an idempotent request (GET,
/// DELETE) on a fresh connection when a *pooled* connection breaks before the answer; that would
/// be two attempts recorded as one operation (and a DELETE the server applies twice). Without a
/// pool every attempt is exactly one request on a fresh connection.
pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(timeout.min(Duration::from_millis(500)))
        .timeout(timeout)
        .max_idle_connections(0)
        .redirects(0)
        .build()
}

/// What came back from one HTTP attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A complete answer: status and parsed body (`Null` if not JSON).
    Answer(u16, Value),
    /// The connection could not be opened (refused, connect timeout): the request never left.
    /// With no connection pool this is the only attempt, so nothing reached any server.
    NotSent,
    /// Sent, but no complete answer (timeout, reset, a cut-off body).
    Lost,
}

/// Sends one request for `input` to `server`; reads carry `query` (`""` or a
/// [`WorkloadConfig::read_query`]).
pub fn send(agent: &ureq::Agent, server: &str, input: &KvInput, query: &str) -> Reply {
    let base = format!("http://{server}");
    let result = match input {
        KvInput::Put { key, value } => agent
            .post(&format!("{base}/kv/put"))
            .set("Content-Type", "application/json")
            .send_string(&put_body(key, value)),
        KvInput::Get { key } => {
            agent.get(&format!("{base}/kv/get/{}{query}", percent_encode(key))).call()
        }
        KvInput::Delete { key } => {
            agent.delete(&format!("{base}/kv/delete/{}", percent_encode(key))).call()
        }
        KvInput::GetAll => agent.get(&format!("{base}/kv/all{query}")).call(),
        KvInput::Append { .. } => return Reply::NotSent, // not in this API
        KvInput::Cas { .. } => return Reply::NotSent,    // sent by `increment`, with its key
    };
    reply_of(result)
}

/// A complete answer, or how the attempt failed.
fn reply_of(result: Result<ureq::Response, ureq::Error>) -> Reply {
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(ureq::Error::Transport(t)) if t.kind() == ureq::ErrorKind::ConnectionFailed => {
            return Reply::NotSent;
        }
        Err(_) => return Reply::Lost,
    };
    let status = response.status();
    match response.into_string() {
        Ok(text) => Reply::Answer(status, serde_json::from_str(&text).unwrap_or(Value::Null)),
        Err(_) => Reply::Lost, // the body was cut off: no complete answer
    }
}

/// The JSON body of a put.
fn put_body(key: &str, value: &str) -> String {
    let body = PutRequest { key: key.into(), value: value.into(), if_revision: None };
    serde_json::to_string(&body).unwrap_or_default()
}

/// Performs `input` once against `server` and turns it into a history entry: `None` when it is
/// not an operation (503, or never sent), else the operation with its call and (if known) return
/// time.
pub fn perform(
    agent: &ureq::Agent,
    clock: &Clock,
    client_id: u64,
    (server, query): (&str, &str),
    input: KvInput,
    keys: &[String],
) -> (Outcome, Option<Operation>) {
    let call = clock.now();
    let reply = send(agent, server, &input, query);
    let returned = clock.now();
    let outcome = match reply {
        Reply::Answer(status, body) => classify(&input, Some(status), &body, keys),
        Reply::NotSent => Outcome::NotApplied,
        Reply::Lost => Outcome::Unknown,
    };
    let op = match &outcome {
        Outcome::NotApplied => None,
        Outcome::Definite(output) => Some(Operation {
            client_id,
            input,
            call,
            output: output.clone(),
            return_time: Some(returned),
        }),
        Outcome::Unknown => {
            Some(Operation { client_id, input, call, output: KvOutput::Unknown, return_time: None })
        }
    };
    (outcome, op)
}

/// One exactly-once increment of a counter key (issue 12): a linearizable read of the counter,
/// then a compare-and-set transaction that appends the increment's unique id to what was read
/// (`id` if the counter was absent), sent with an `Idempotency-Key` and retried with it after a
/// 503, a 504, a lost answer or a refused connection until a definite answer or `patience`
/// passes. Recorded as a `Get` and a `Cas` (one operation however many attempts it took: the
/// key makes them one write). Returns what the client learnt, `None` if the read failed.
#[allow(clippy::too_many_arguments)]
pub fn increment(
    agent: &ureq::Agent,
    clock: &Clock,
    client_id: u64,
    pick: &mut dyn FnMut() -> String,
    (key, id, query): (&str, &str, &str),
    keys: &[String],
    patience: Duration,
    ops: &mut Vec<Operation>,
) -> Option<Increment> {
    let read = KvInput::Get { key: key.to_string() };
    let (outcome, op) = perform(agent, clock, client_id, (&pick(), query), read, keys);
    ops.extend(op);
    let Outcome::Definite(KvOutput::Value(old)) = outcome else { return None };
    let new = match &old {
        Some(old) => format!("{old},{id}"),
        None => id.to_string(),
    };
    let compare = match &old {
        Some(old) => json!({"key": key, "target": "value", "op": "==", "value": old}),
        None => json!({"key": key, "target": "version", "op": "==", "value": 0}),
    };
    let body = json!({"compare": [compare], "success": [{"put": {"key": key, "value": new}}],
                      "failure": [{"get": {"key": key}}]})
    .to_string();
    let input = KvInput::Cas { key: key.to_string(), expect: old, value: new };
    let call = clock.now();
    let give_up = Instant::now() + patience;
    let mut maybe_applied = false;
    loop {
        let server = pick();
        let result = agent
            .post(&format!("http://{server}/kv/txn"))
            .set("Content-Type", "application/json")
            .set("Idempotency-Key", &format!("incr-{id}"))
            .send_string(&body);
        let reply = reply_of(result);
        let returned = clock.now();
        match reply {
            Reply::Answer(200, body) => {
                if let Outcome::Definite(output) = classify(&input, Some(200), &body, keys) {
                    let done = output == KvOutput::Cas(true);
                    ops.push(Operation {
                        client_id,
                        input,
                        call,
                        output,
                        return_time: Some(returned),
                    });
                    return Some(if done { Increment::Acked } else { Increment::Refused });
                }
                maybe_applied = true;
            }
            // Not applied by this attempt (no leader, leadership lost): try again.
            Reply::Answer(503, _) | Reply::NotSent => {}
            // 504, a lost answer, anything else: this attempt may have applied.
            Reply::Answer(..) | Reply::Lost => maybe_applied = true,
        }
        if Instant::now() >= give_up {
            if !maybe_applied {
                return Some(Increment::Refused);
            }
            ops.push(Operation {
                client_id,
                input,
                call,
                output: KvOutput::Unknown,
                return_time: None,
            });
            return Some(Increment::Unknown);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What the counters must show after a run: every acknowledged increment's id exactly once, no
/// refused increment's id, no id twice. `finals` maps each counter key to its value at the end.
pub fn check_increments(
    finals: &BTreeMap<String, String>,
    increments: &[(String, String, Increment)],
) -> Vec<String> {
    let mut failures = Vec::new();
    let mut counted: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for (key, value) in finals {
        for id in value.split(',').filter(|s| !s.is_empty()) {
            *counted.entry((key.as_str(), id)).or_default() += 1;
        }
    }
    for ((key, id), n) in &counted {
        if *n > 1 {
            failures.push(format!("increment {id} was applied {n} times to {key}"));
        }
    }
    for (key, id, what) in increments {
        let n = counted.get(&(key.as_str(), id.as_str())).copied().unwrap_or(0);
        match what {
            Increment::Acked if n == 0 => {
                failures.push(format!("acknowledged increment {id} is missing from {key}"))
            }
            Increment::Refused if n > 0 => {
                failures.push(format!("increment {id} was refused but is in {key}"))
            }
            _ => {}
        }
    }
    failures
}

/// What the clients recorded.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    /// The history, sorted by call time.
    pub ops: Vec<Operation>,
    /// Counts.
    pub stats: WorkloadStats,
    /// Every increment tried: (counter key, its id, what the client learnt).
    pub increments: Vec<(String, String, Increment)>,
}

/// What a client learnt of one increment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Increment {
    /// Applied (the compare held): its id must be in the counter exactly once.
    Acked,
    /// Not applied (the compare failed, or no attempt could have reached a leader): its id must
    /// not be in the counter.
    Refused,
    /// Unknown: its id may be in the counter, at most once.
    Unknown,
}

/// Runs the clients until `config.duration` has passed (counted from when this is called).
/// Blocks; every request is bounded by the request timeout, so this returns at most about one
/// timeout after the end.
pub fn run_clients(config: &WorkloadConfig, clock: &Clock) -> Recorded {
    run_clients_on(config, clock, &RwLock::new(config.servers.clone()))
}

/// [`run_clients`], choosing each request's node from `servers` as it is at that moment (the
/// chaos harness adds the nodes that join and drops the ones it stopped for good) instead of
/// `config.servers`.
pub fn run_clients_on(
    config: &WorkloadConfig,
    clock: &Clock,
    servers: &RwLock<Vec<String>>,
) -> Recorded {
    let mut keys = config.key_names();
    keys.extend(config.counter_names());
    let end = Instant::now() + config.duration;
    let next_id = AtomicU64::new(1);
    let results: Vec<Recorded> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..config.clients.max(1))
            .map(|c| {
                let (keys, next_id) = (&keys, &next_id);
                let seed = config.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(c as u64);
                std::thread::Builder::new()
                    .name(format!("chaos-client-{c}"))
                    .spawn_scoped(s, move || {
                        client_loop(config, (keys, servers), clock, end, next_id, seed)
                    })
                    .expect("spawn a client thread")
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("client thread panicked")).collect()
    });
    let mut all = Recorded::default();
    for r in results {
        all.ops.extend(r.ops);
        all.stats.add(&r.stats);
        all.increments.extend(r.increments);
    }
    all.stats.client_ids = next_id.load(Ordering::SeqCst) - 1;
    all.ops.sort_by_key(|op| op.call);
    all
}

/// One client: picks an operation, a key and a node at random, records the attempt, repeats.
fn client_loop(
    config: &WorkloadConfig,
    (keys, servers): (&[String], &RwLock<Vec<String>>),
    clock: &Clock,
    end: Instant,
    next_id: &AtomicU64,
    seed: u64,
) -> Recorded {
    let mut rng = StdRng::seed_from_u64(seed);
    let agent = agent(config.request_timeout);
    let mut out = Recorded::default();
    let mut client_id = next_id.fetch_add(1, Ordering::SeqCst);
    let mut counter = 0u64;
    let counters = config.counter_names();
    // Plain operations use the plain keys; `keys` (for reading answers) has the counters too.
    let plain = &keys[..keys.len() - counters.len()];
    while Instant::now() < end {
        if !counters.is_empty() && rng.gen_range(0..100) < 15 {
            counter += 1;
            let key = counters[rng.gen_range(0..counters.len())].clone();
            let id = format!("c{client_id}.{counter}");
            let mut pick = || {
                let servers = servers.read().unwrap_or_else(|e| e.into_inner());
                match servers.len() {
                    0 => config.servers[rng.gen_range(0..config.servers.len())].clone(),
                    n => servers[rng.gen_range(0..n)].clone(),
                }
            };
            let patience = config.request_timeout * 3;
            let learnt = increment(
                &agent,
                clock,
                client_id,
                &mut pick,
                (&key, &id, config.read_query()),
                keys,
                patience,
                &mut out.ops,
            );
            out.stats.attempts += 1;
            match learnt {
                Some(Increment::Acked) => out.stats.increments_acked += 1,
                Some(Increment::Refused) => out.stats.increments_refused += 1,
                Some(Increment::Unknown) => {
                    out.stats.increments_unknown += 1;
                    client_id = next_id.fetch_add(1, Ordering::SeqCst);
                    counter = 0;
                }
                None => std::thread::sleep(Duration::from_millis(rng.gen_range(10..50))),
            }
            if let Some(what) = learnt {
                out.increments.push((key, id, what));
            }
            continue;
        }
        let key = plain[rng.gen_range(0..plain.len())].clone();
        let roll = rng.gen_range(0..100);
        let input = if roll < 40 {
            counter += 1;
            // Unique values, so a read tells which write it saw.
            KvInput::Put { key, value: format!("c{client_id}.{counter}") }
        } else if roll < 75 {
            KvInput::Get { key }
        } else if roll < 87 {
            KvInput::Delete { key }
        } else {
            KvInput::GetAll
        };
        let is_write = input.is_write();
        let server = {
            let servers = servers.read().unwrap_or_else(|e| e.into_inner());
            match servers.len() {
                0 => config.servers[rng.gen_range(0..config.servers.len())].clone(),
                n => servers[rng.gen_range(0..n)].clone(),
            }
        };
        let query = config.read_query();
        let (outcome, op) = perform(&agent, clock, client_id, (&server, query), input, keys);
        out.stats.attempts += 1;
        match outcome {
            Outcome::Definite(_) => {
                out.stats.definite += 1;
                if is_write {
                    out.stats.acked_writes += 1;
                } else {
                    out.stats.ok_reads += 1;
                }
            }
            Outcome::NotApplied => {
                out.stats.not_applied += 1;
                // No leader, no quorum, or a node down right now: do not spin.
                std::thread::sleep(Duration::from_millis(rng.gen_range(10..50)));
            }
            Outcome::Unknown => {
                out.stats.unknown += 1;
                // The old id's operation is still pending (forever, as far as the history knows):
                // continue as a new client, as in Jepsen.
                client_id = next_id.fetch_add(1, Ordering::SeqCst);
                counter = 0;
            }
        }
        out.ops.extend(op);
    }
    out
}

/// A linearizable get-all through `servers` in turn, retried on 503 and on no answer until
/// `within` passes. Every attempt that is an operation (not a 503) is returned for the history;
/// the last one is the successful read, if any.
pub fn read_all(
    servers: &[String],
    keys: &[String],
    clock: &Clock,
    client_id: u64,
    timeout: Duration,
    within: Duration,
) -> (Vec<Operation>, Option<BTreeMap<String, String>>) {
    let agent = agent(timeout);
    let deadline = Instant::now() + within;
    let mut ops = Vec::new();
    let mut turn = 0;
    while Instant::now() < deadline {
        let server = &servers[turn % servers.len()];
        turn += 1;
        let (outcome, op) = perform(&agent, clock, client_id, (server, ""), KvInput::GetAll, keys);
        ops.extend(op);
        if let Outcome::Definite(KvOutput::All(map)) = outcome {
            return (ops, Some(map));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (ops, None)
}

/// A checked history.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The checker's verdict (`Unknown` counts as a failure).
    pub verdict: Verdict,
    /// How long the check took.
    pub took: Duration,
}

/// Checks a history, timing it.
pub fn check(ops: &[Operation], budget: Duration) -> Checked {
    let t0 = Instant::now();
    let verdict = check_history(ops, budget);
    Checked { verdict, took: t0.elapsed() }
}

/// The per-key sub-history sizes (operations touching each key, a get-all counting for each).
pub fn ops_per_key(ops: &[Operation], keys: &[String]) -> BTreeMap<String, usize> {
    let mut counts: BTreeMap<String, usize> = keys.iter().map(|k| (k.clone(), 0)).collect();
    for op in ops {
        match op.input.key() {
            Some(k) => *counts.entry(k.to_string()).or_default() += 1,
            None => counts.values_mut().for_each(|c| *c += 1),
        }
    }
    counts
}

/// `raftlabkv-client verify`: the workload against a live cluster (no faults of its own), then a
/// final linearizable read, then the check.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// Counts.
    pub stats: WorkloadStats,
    /// Operations in the history.
    pub ops: usize,
    /// The check.
    pub checked: Checked,
    /// The history (for saving when it failed).
    pub history: Vec<Operation>,
    /// What the counters show that exactly-once increments forbid ([`check_increments`]).
    pub increments_wrong: Vec<String>,
}

impl VerifyReport {
    /// True when the history was proven linearizable and something was actually acknowledged.
    pub fn passed(&self) -> bool {
        self.checked.verdict.is_ok()
            && self.stats.acked_writes > 0
            && self.stats.ok_reads > 0
            && self.increments_wrong.is_empty()
    }

    /// One line: `PASS ops=... ` or `FAIL ...`.
    pub fn summary(&self) -> String {
        let verdict = match &self.checked.verdict {
            Verdict::Ok if self.passed() => "PASS".to_string(),
            Verdict::Ok if !self.increments_wrong.is_empty() => {
                format!("FAIL (increments: {})", self.increments_wrong.join("; "))
            }
            Verdict::Ok => "FAIL (nothing was acknowledged: is the cluster up?)".to_string(),
            Verdict::Illegal { key, history } => {
                format!("FAIL (not linearizable: key {key}, {} ops in the witness)", history.len())
            }
            Verdict::Unknown { key } => {
                format!("FAIL (the checker ran out of budget on key {key})")
            }
        };
        let s = &self.stats;
        format!(
            "{verdict} ops={} acked_writes={} ok_reads={} unknown={} not_applied={} \
             increments=acked:{},refused:{},unknown:{} check={:.3}s",
            self.ops,
            s.acked_writes,
            s.ok_reads,
            s.unknown,
            s.not_applied,
            s.increments_acked,
            s.increments_refused,
            s.increments_unknown,
            self.checked.took.as_secs_f64()
        )
    }
}

/// Runs `config` against a live cluster, reads everything once more at the end, and checks.
pub fn verify(config: &WorkloadConfig, budget: Duration) -> VerifyReport {
    let clock = Clock::new();
    let mut recorded = run_clients(config, &clock);
    let mut keys = config.key_names();
    keys.extend(config.counter_names());
    let (final_ops, last) = read_all(
        &config.servers,
        &keys,
        &clock,
        u64::MAX,
        config.request_timeout,
        Duration::from_secs(10),
    );
    recorded.ops.extend(final_ops);
    let counters: BTreeMap<String, String> = last
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| config.counter_names().contains(k))
        .collect();
    let increments_wrong = check_increments(&counters, &recorded.increments);
    let checked = check(&recorded.ops, budget);
    VerifyReport {
        stats: recorded.stats,
        ops: recorded.ops.len(),
        checked,
        history: recorded.ops,
        increments_wrong,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keys() -> Vec<String> {
        vec!["k0".into(), "k1".into()]
    }

    #[test]
    fn classification_follows_the_recording_rules() {
        let put = KvInput::Put { key: "k0".into(), value: "v".into() };
        let get = KvInput::Get { key: "k0".into() };
        let ks = keys();
        assert_eq!(classify(&put, Some(200), &json!({}), &ks), Outcome::Definite(KvOutput::Ok));
        assert_eq!(classify(&put, Some(503), &json!({}), &ks), Outcome::NotApplied);
        assert_eq!(classify(&put, Some(504), &json!({}), &ks), Outcome::Unknown);
        assert_eq!(classify(&put, Some(500), &json!({}), &ks), Outcome::Unknown);
        assert_eq!(classify(&put, None, &Value::Null, &ks), Outcome::Unknown);
        assert_eq!(
            classify(&get, Some(200), &json!({"key": "k0", "value": "x"}), &ks),
            Outcome::Definite(KvOutput::Value(Some("x".into())))
        );
        assert_eq!(
            classify(&get, Some(404), &json!({"error": "not_found"}), &ks),
            Outcome::Definite(KvOutput::Value(None))
        );
        assert_eq!(classify(&get, Some(404), &Value::Null, &ks), Outcome::Unknown);
        assert_eq!(classify(&get, Some(200), &json!({"key": "other"}), &ks), Outcome::Unknown);
        let all = classify(&KvInput::GetAll, Some(200), &json!({"k1": "a", "zz": "b"}), &ks);
        let want: BTreeMap<String, String> = [("k1".to_string(), "a".to_string())].into();
        assert_eq!(all, Outcome::Definite(KvOutput::All(want)), "foreign keys are dropped");
    }

    #[test]
    fn increments_are_counted_exactly_once() {
        let inc = |id: &str, what| ("kctr0".to_string(), id.to_string(), what);
        let tried = vec![
            inc("a", Increment::Acked),
            inc("b", Increment::Acked),
            inc("c", Increment::Refused),
            inc("d", Increment::Unknown),
        ];
        let finals = |v: &str| BTreeMap::from([("kctr0".to_string(), v.to_string())]);
        assert!(check_increments(&finals("a,b"), &tried).is_empty());
        assert!(check_increments(&finals("a,d,b"), &tried).is_empty(), "an unknown one may be in");
        let twice = check_increments(&finals("a,b,a"), &tried);
        assert!(twice.iter().any(|f| f.contains("a was applied 2 times")), "{twice:?}");
        let lost = check_increments(&finals("b"), &tried);
        assert!(lost.iter().any(|f| f.contains("a is missing")), "{lost:?}");
        let refused = check_increments(&finals("a,b,c"), &tried);
        assert!(refused.iter().any(|f| f.contains("c was refused")), "{refused:?}");
    }

    #[test]
    fn keys_are_escaped_in_paths() {
        assert_eq!(percent_encode("a/b c"), "a%2Fb%20c");
    }
}
