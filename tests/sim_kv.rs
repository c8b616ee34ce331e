//! Linearizability of the key-value store over the simulated cluster, in the spirit of the MIT
//! 6.5840 kvraft tests: partitions that change every simulated second, crashes and restarts
//! (one node or all), an unreliable network (loss, delay, reordering), concurrent clients — and
//! the recorded history checked with [`raftlabkv::check`].
//!
//! Every running node of a [`SimCluster`] gets a [`KvStore`] fed with the entries it applies,
//! exactly as the server's apply thread does. Simulated clients, one request at a time each:
//!
//! * **writes** (`put` of a unique value, `delete`) are proposed on the node the client believes
//!   leads. The write succeeds once the entry at its index is committed with the term it was
//!   proposed in; another term there means another leader's entry took the slot: not applied, not
//!   recorded (the server's 503). If the node crashes or 2 simulated seconds pass first, the
//!   outcome is unknown (recorded with no return time), as for a real client's broken connection
//!   or timeout.
//! * **reads** (`get`, `get-all`) start a ReadIndex read on that node; once the leader confirms it
//!   at some index, they are served from that node's `KvStore` as soon as it has applied that far.
//!   A read the leader aborts, or whose node crashes, is not recorded.
//!
//! * **increments** (issue 12): the client reads a counter key from its node's local state, then
//!   proposes a one-key compare-and-set transaction (value unchanged since the read, or absent:
//!   append a unique id) wrapped with an idempotency key. When the attempt times out, its node
//!   crashes, or another leader's entry takes its slot, the *same* entry (same key, same
//!   fingerprint) is proposed again, on whichever node leads, until it commits or 6 simulated
//!   seconds pass. It is recorded once, as a `Cas` with the answer the state machine gave (the
//!   first attempt's, for a replay). At the end every counter must hold each acknowledged id
//!   exactly once, no refused one, none twice.
//!
//! Times are a global event counter: every call and every return takes the next number, in the
//! order the simulation performs them, so real-time order in the history is exact.
//!
//! Replay a seed with `RAFT_SEED=<seed> cargo test --release --test sim_kv -- --nocapture`;
//! `SIM_KV_SEEDS=<n>` runs more seeds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use raftlabkv::chaos::workload::{Increment, check_increments};
use raftlabkv::check::{KvInput, KvOutput, Operation, Verdict, check_history};
use raftlabkv::kv::{Command, IdempotencyMeta, KvStore, Outcome, Txn};
use raftlabkv::raft::{Entry, Index, NodeId, Term};
use raftlabkv::sim::{SimCluster, TICK_MS, secs};

/// Concurrent simulated clients.
const CLIENTS: u64 = 8;

/// How long a simulated client waits for a write or read before giving up.
const CLIENT_TIMEOUT: u64 = 2_000 / TICK_MS;

/// What a client is doing.
enum State {
    /// Thinking until this tick.
    Idle { until: u64 },
    /// Waiting for the entry proposed at `index` in `term` on `node`.
    Write {
        input: KvInput,
        call: u64,
        node: NodeId,
        incarnation: u64,
        index: Index,
        term: Term,
        deadline: u64,
        /// An idempotent write: retried with the same entry until it commits or `give_up`.
        retry: Option<Retry>,
    },
    /// An idempotent write between attempts (no node took the last one).
    Retrying { input: KvInput, call: u64, retry: Retry },
    /// Waiting for ReadIndex read `read_id` on `node`, then for its state machine.
    Read { input: KvInput, call: u64, node: NodeId, incarnation: u64, read_id: u64, deadline: u64 },
}

/// An idempotent write's retry bookkeeping.
#[derive(Clone)]
struct Retry {
    /// The encoded entry (the same on every attempt).
    command: Vec<u8>,
    give_up: u64,
    /// Some attempt may have been applied (timed out, or its node crashed).
    maybe_applied: bool,
    /// The increment's counter and id.
    counter: (String, String),
}

struct Client {
    id: u64,
    /// The node this client sends to next (its guess of the leader).
    target: usize,
    state: State,
}

/// What the run counted.
#[derive(Default, Debug)]
struct Counts {
    acked_writes: u64,
    ok_reads: u64,
    unknown: u64,
    not_applied: u64,
    increments_acked: u64,
    increments_refused: u64,
    increments_unknown: u64,
}

struct KvSim {
    cluster: SimCluster,
    keys: Vec<String>,
    /// A state machine per running node.
    kv: BTreeMap<NodeId, KvStore>,
    /// Bumped on every crash, so a client notices its node restarted.
    incarnation: BTreeMap<NodeId, u64>,
    history: Vec<Operation>,
    /// The global event counter: the history's clock.
    events: u64,
    next_read_id: u64,
    next_client_id: u64,
    /// Reads confirmed by a leader (read id -> index), and aborted ones, seen so far.
    confirmed: HashMap<u64, Index>,
    aborted: HashSet<u64>,
    reads_seen: usize,
    aborted_seen: usize,
    /// Whether clients start new operations.
    accepting: bool,
    counts: Counts,
    /// The counter keys the increments use (also read by get-all).
    counters: Vec<String>,
    /// What applying each index gave (the same on every node).
    outcomes: HashMap<Index, Outcome>,
    /// Every increment tried, and what its client learnt.
    increments: Vec<(String, String, Increment)>,
}

impl KvSim {
    fn new(nodes: usize, seed: u64, keys: usize, window: usize) -> Self {
        let cluster = SimCluster::with_config(nodes, seed, move |c| c.max_inflight = window);
        let incarnation = cluster.ids.iter().map(|id| (id.clone(), 0)).collect();
        KvSim {
            cluster,
            keys: (0..keys).map(|i| format!("k{i}")).collect(),
            kv: BTreeMap::new(),
            incarnation,
            history: Vec::new(),
            events: 0,
            next_read_id: 1,
            next_client_id: 1,
            confirmed: HashMap::new(),
            aborted: HashSet::new(),
            reads_seen: 0,
            aborted_seen: 0,
            accepting: true,
            counts: Counts::default(),
            counters: vec!["ctr0".into(), "ctr1".into()],
            outcomes: HashMap::new(),
            increments: Vec::new(),
        }
    }

    fn stamp(&mut self) -> u64 {
        self.events += 1;
        self.events
    }

    fn new_client_id(&mut self) -> u64 {
        self.next_client_id += 1;
        self.next_client_id - 1
    }

    fn crash(&mut self, id: &NodeId) {
        if self.cluster.is_up(id) {
            self.cluster.crash(id);
            self.kv.remove(id);
            *self.incarnation.entry(id.clone()).or_default() += 1;
        }
    }

    /// Feeds every running node's state machine what the node applied since (a restarted node
    /// re-applies its log from the start into a fresh store, like a restarted server).
    fn sync_state_machines(&mut self) {
        for id in self.cluster.ids.clone() {
            if !self.cluster.is_up(&id) {
                continue;
            }
            let kv = self.kv.entry(id.clone()).or_default();
            if let Some(applied) = self.cluster.applied(&id) {
                for (&index, command) in applied.range(kv.applied_index() + 1..) {
                    let entry = Entry { index, term: 0, command: command.clone() };
                    let applied = kv.apply(&entry).expect("entries are applied in order");
                    self.outcomes.entry(index).or_insert(applied.outcome);
                }
            }
        }
        for &(_, id, index) in &self.cluster.reads[self.reads_seen..] {
            self.confirmed.insert(id, index);
        }
        self.reads_seen = self.cluster.reads.len();
        for (_, id) in &self.cluster.aborted_reads[self.aborted_seen..] {
            self.aborted.insert(*id);
        }
        self.aborted_seen = self.cluster.aborted_reads.len();
    }

    /// One simulated tick: the cluster moves, then every client.
    fn tick(&mut self, clients: &mut [Client]) {
        self.cluster.tick();
        self.sync_state_machines();
        for c in clients.iter_mut() {
            self.step_client(c);
        }
    }

    fn record(&mut self, client: u64, input: KvInput, call: u64, output: Option<KvOutput>) {
        let return_time = output.as_ref().map(|_| self.stamp());
        let output = output.unwrap_or(KvOutput::Unknown);
        self.history.push(Operation { client_id: client, input, call, output, return_time });
    }

    fn step_client(&mut self, c: &mut Client) {
        let now = self.cluster.now;
        let state = std::mem::replace(&mut c.state, State::Idle { until: now });
        c.state = match state {
            State::Idle { until } if until > now || !self.accepting => State::Idle { until },
            State::Idle { .. } if self.cluster.rand(100) < 15 => self.start_increment(c),
            State::Idle { .. } => {
                let input = self.random_input(c.id);
                self.start_op(c, input)
            }
            State::Retrying { input, call, retry } => self.attempt(c, input, call, retry),
            State::Write { input, call, node, incarnation, index, term, deadline, retry } => {
                let crashed = self.incarnation[&node] != incarnation;
                match (self.cluster.committed_at(index), retry) {
                    (Some((t, _)), Some(retry)) if t == term => {
                        // Applied (or answered from the table): what did the state machine say?
                        match self.outcomes.get(&index) {
                            Some(Outcome::Txn { succeeded, .. }) => {
                                let done = *succeeded;
                                self.record(c.id, input, call, Some(KvOutput::Cas(done)));
                                let (key, id) = retry.counter;
                                if done {
                                    self.counts.increments_acked += 1;
                                    self.increments.push((key, id, Increment::Acked));
                                } else {
                                    self.counts.increments_refused += 1;
                                    self.increments.push((key, id, Increment::Refused));
                                }
                                self.think(now)
                            }
                            // Committed but not applied on any running node yet: wait.
                            _ => State::Write {
                                input,
                                call,
                                node,
                                incarnation,
                                index,
                                term,
                                deadline,
                                retry: Some(retry),
                            },
                        }
                    }
                    (Some(_), Some(retry)) => self.attempt(c, input, call, retry),
                    (None, Some(mut retry)) if crashed || now >= deadline => {
                        retry.maybe_applied = true;
                        c.target = (c.target + 1) % self.cluster.ids.len();
                        self.attempt(c, input, call, retry)
                    }
                    (None, Some(retry)) => State::Write {
                        input,
                        call,
                        node,
                        incarnation,
                        index,
                        term,
                        deadline,
                        retry: Some(retry),
                    },
                    (Some((t, _)), None) if t == term => {
                        self.record(c.id, input, call, Some(KvOutput::Ok));
                        self.counts.acked_writes += 1;
                        self.think(now)
                    }
                    (Some(_), None) => {
                        self.counts.not_applied += 1; // replaced by another leader's entry
                        self.think(now)
                    }
                    (None, None) if crashed || now >= deadline => {
                        self.record(c.id, input, call, None);
                        self.counts.unknown += 1;
                        c.id = self.new_client_id();
                        self.think(now)
                    }
                    (None, None) => State::Write {
                        input,
                        call,
                        node,
                        incarnation,
                        index,
                        term,
                        deadline,
                        retry: None,
                    },
                }
            }
            State::Read { input, call, node, incarnation, read_id, deadline } => {
                let crashed = self.incarnation[&node] != incarnation;
                let served = match self.confirmed.get(&read_id) {
                    Some(&index) if !crashed => {
                        self.kv.get(&node).filter(|kv| kv.applied_index() >= index)
                    }
                    _ => None,
                };
                if let Some(kv) = served {
                    let output = match &input {
                        KvInput::Get { key } => KvOutput::Value(kv.get(key).map(str::to_string)),
                        _ => KvOutput::All(
                            kv.all()
                                .iter()
                                .filter(|(k, _)| self.keys.contains(k) || self.counters.contains(k))
                                .map(|(k, v)| (k.clone(), v.value().to_string()))
                                .collect(),
                        ),
                    };
                    self.record(c.id, input, call, Some(output));
                    self.counts.ok_reads += 1;
                    self.think(now)
                } else if crashed || now >= deadline || self.aborted.contains(&read_id) {
                    self.counts.not_applied += 1; // a read that failed: no constraint
                    self.think(now)
                } else {
                    State::Read { input, call, node, incarnation, read_id, deadline }
                }
            }
        };
    }

    /// One attempt of an idempotent write on the client's target; past `give_up`, the outcome is
    /// unknown if an attempt may have applied, else it was not applied.
    fn attempt(&mut self, c: &mut Client, input: KvInput, call: u64, retry: Retry) -> State {
        let now = self.cluster.now;
        if now >= retry.give_up {
            let (key, id) = retry.counter;
            if retry.maybe_applied {
                self.record(c.id, input, call, None);
                self.counts.increments_unknown += 1;
                self.increments.push((key, id, Increment::Unknown));
                c.id = self.new_client_id();
            } else {
                self.counts.increments_refused += 1;
                self.increments.push((key, id, Increment::Refused));
            }
            return self.think(now);
        }
        let node = self.cluster.ids[c.target].clone();
        let incarnation = self.incarnation[&node];
        match self.cluster.propose(&node, retry.command.clone()) {
            Some((index, term)) => {
                let deadline = now + CLIENT_TIMEOUT;
                State::Write {
                    input,
                    call,
                    node,
                    incarnation,
                    index,
                    term,
                    deadline,
                    retry: Some(retry),
                }
            }
            None => {
                let hint = self.cluster.node(&node).and_then(|n| n.leader());
                c.target = match hint.and_then(|h| self.cluster.ids.iter().position(|id| *id == h))
                {
                    Some(i) if i != c.target => i,
                    _ => (c.target + 1) % self.cluster.ids.len(),
                };
                State::Retrying { input, call, retry }
            }
        }
    }

    /// An increment: the counter as the target node has it, then a compare-and-set appending a
    /// unique id, with an idempotency key.
    fn start_increment(&mut self, c: &mut Client) -> State {
        let now = self.cluster.now;
        let key = self.counters[self.cluster.rand(self.counters.len() as u64) as usize].clone();
        let node = self.cluster.ids[c.target].clone();
        let old = self.kv.get(&node).and_then(|kv| kv.get(&key).map(str::to_string));
        let id = format!("c{}.{}", c.id, self.events);
        let new = match &old {
            Some(old) => format!("{old},{id}"),
            None => id.clone(),
        };
        let compare = match &old {
            Some(old) => {
                serde_json::json!({"key": key, "target": "value", "op": "==", "value": old})
            }
            None => serde_json::json!({"key": key, "target": "version", "op": "==", "value": 0}),
        };
        let txn: Txn = serde_json::from_value(serde_json::json!({
            "compare": [compare], "success": [{"put": {"key": key, "value": new}}]}))
        .expect("a transaction");
        let meta = IdempotencyMeta {
            key: format!("incr-{id}"),
            fingerprint: id.clone(),
            at_ms: now * TICK_MS,
            ttl_ms: 3_600_000,
            cap: 100_000,
        };
        let command =
            Command::Idempotent { meta, command: Box::new(Command::Txn { txn }) }.encode();
        let input = KvInput::Cas { key: key.clone(), expect: old, value: new };
        let call = self.stamp();
        let retry = Retry {
            command,
            give_up: now + 3 * CLIENT_TIMEOUT,
            maybe_applied: false,
            counter: (key, id),
        };
        self.attempt(c, input, call, retry)
    }

    fn think(&mut self, now: u64) -> State {
        State::Idle { until: now + self.cluster.rand(3) }
    }

    /// 40% put (of a unique value), 35% get, 12% delete, 13% get-all, on a random key.
    fn random_input(&mut self, client: u64) -> KvInput {
        let key = self.keys[self.cluster.rand(self.keys.len() as u64) as usize].clone();
        match self.cluster.rand(100) {
            0..40 => KvInput::Put { key, value: format!("c{client}.{}", self.events) },
            40..75 => KvInput::Get { key },
            75..87 => KvInput::Delete { key },
            _ => KvInput::GetAll,
        }
    }

    /// Sends `input` to the client's target; a node that does not lead refuses at once (the
    /// server's 503): the client retargets and tries again next tick.
    fn start_op(&mut self, c: &mut Client, input: KvInput) -> State {
        let now = self.cluster.now;
        let node = self.cluster.ids[c.target].clone();
        let incarnation = self.incarnation[&node];
        let call = self.stamp();
        let write = match &input {
            KvInput::Put { key, value } => Some(Command::put(key.clone(), value.clone())),
            KvInput::Delete { key } => Some(Command::Delete { key: key.clone() }),
            _ => None,
        };
        let started = match write {
            Some(command) => self.cluster.propose(&node, command.encode()).map(|(index, term)| {
                let deadline = now + CLIENT_TIMEOUT;
                State::Write {
                    input: input.clone(),
                    call,
                    node: node.clone(),
                    incarnation,
                    index,
                    term,
                    deadline,
                    retry: None,
                }
            }),
            None => {
                let read_id = self.next_read_id;
                self.next_read_id += 1;
                self.cluster.read(&node, read_id).then(|| {
                    let deadline = now + CLIENT_TIMEOUT;
                    State::Read {
                        input: input.clone(),
                        call,
                        node: node.clone(),
                        incarnation,
                        read_id,
                        deadline,
                    }
                })
            }
        };
        started.unwrap_or_else(|| {
            // Not the leader: follow its hint, or try the next node.
            let hint = self.cluster.node(&node).and_then(|n| n.leader());
            c.target = match hint.and_then(|h| self.cluster.ids.iter().position(|id| *id == h)) {
                Some(i) if i != c.target => i,
                _ => (c.target + 1) % self.cluster.ids.len(),
            };
            State::Idle { until: now + 1 }
        })
    }

    /// Once a simulated second: a new partition (or none), crashes and restarts.
    fn nemesis(&mut self) {
        let ids = self.cluster.ids.clone();
        let n = ids.len() as u64;
        if self.cluster.rand(2) == 0 {
            self.cluster.heal();
        } else {
            let mut shuffled = ids.clone();
            for i in (1..shuffled.len()).rev() {
                let j = self.cluster.rand(i as u64 + 1) as usize;
                shuffled.swap(i, j);
            }
            let cut = 1 + self.cluster.rand(n - 1) as usize;
            let (a, b) = shuffled.split_at(cut);
            self.cluster.partition(&[a.to_vec(), b.to_vec()]);
        }
        match self.cluster.rand(20) {
            0 => ids.iter().for_each(|id| self.crash(id)),
            1..=3 => {
                let victim = self.cluster.rand(n) as usize;
                self.crash(&ids[victim]);
            }
            _ => {}
        }
        for id in &ids {
            if !self.cluster.is_up(id) && self.cluster.rand(2) == 0 {
                self.cluster.start(id);
            }
        }
    }
}

/// One seeded run: faults for 30 simulated seconds, then a healed, reliable network until every
/// client is done, a final read, convergence, and the check.
fn run_seed(seed: u64) {
    let nodes = if seed.is_multiple_of(2) { 3 } else { 5 };
    // Two seeds in five pipeline (a window of 4 AppendEntries per follower).
    let window = if seed % 5 < 2 { 4 } else { 1 };
    eprintln!("seed {seed}: {nodes} nodes, pipelining window {window}");
    let mut sim = KvSim::new(nodes, seed, 5, window);
    let reliable = seed.is_multiple_of(4);
    if !reliable {
        sim.cluster.net.drop_rate = 0.1;
        sim.cluster.net.max_delay = 3;
        sim.cluster.net.reorder = seed.is_multiple_of(3);
    }
    let mut clients: Vec<Client> = (0..CLIENTS)
        .map(|i| Client { id: i + 1, target: i as usize % nodes, state: State::Idle { until: 0 } })
        .collect();
    sim.next_client_id = CLIENTS + 1;

    let fault_ticks = secs(30.0);
    while sim.cluster.now < fault_ticks {
        if sim.cluster.now.is_multiple_of(secs(1.0)) {
            sim.nemesis();
        }
        sim.tick(&mut clients);
    }
    // Heal everything; clients go on for 3 s (writes must succeed again), then drain.
    sim.cluster.heal();
    sim.cluster.net.drop_rate = 0.0;
    for id in sim.cluster.ids.clone() {
        sim.cluster.start(&id);
    }
    let acked_before = sim.counts.acked_writes;
    for _ in 0..secs(3.0) {
        sim.tick(&mut clients);
    }
    assert!(
        sim.counts.acked_writes > acked_before,
        "seed {seed}: no write acknowledged in 3 s after the final heal"
    );
    sim.accepting = false;
    let idle = |clients: &[Client]| clients.iter().all(|c| matches!(c.state, State::Idle { .. }));
    for _ in 0..secs(5.0) {
        if idle(&clients) {
            break;
        }
        sim.tick(&mut clients);
    }
    assert!(idle(&clients), "seed {seed}: clients still waiting 5 s after the end");

    // Every node catches up to the same state; a final linearizable read must agree with it.
    let converged = |sim: &KvSim| {
        let last = sim.cluster.max_committed();
        let stores: Vec<&KvStore> = sim.kv.values().collect();
        stores.len() == nodes
            && stores.iter().all(|kv| kv.applied_index() == last)
            && stores.windows(2).all(|w| w[0].all() == w[1].all())
    };
    for _ in 0..secs(5.0) {
        if converged(&sim) {
            break;
        }
        sim.tick(&mut clients);
    }
    assert!(converged(&sim), "seed {seed}: nodes did not converge on one state");
    let mut last = Client { id: 0, target: 0, state: State::Idle { until: 0 } };
    let reads_before = sim.counts.ok_reads;
    for _ in 0..secs(5.0) {
        if sim.counts.ok_reads > reads_before {
            break;
        }
        if let State::Idle { .. } = last.state {
            last.state = sim.start_op(&mut last, KvInput::GetAll);
        }
        sim.cluster.tick();
        sim.sync_state_machines();
        sim.step_client(&mut last);
    }
    assert!(sim.counts.ok_reads > reads_before, "seed {seed}: the final read never succeeded");

    // Exactly once: every acknowledged increment in its counter once, no refused one, none twice.
    let store = sim.kv.values().next().expect("a running node");
    let finals: BTreeMap<String, String> = sim
        .counters
        .iter()
        .filter_map(|k| store.get(k).map(|v| (k.clone(), v.to_string())))
        .collect();
    let wrong = check_increments(&finals, &sim.increments);
    assert!(wrong.is_empty(), "seed {seed}: exactly-once increments broken: {wrong:?}");
    assert!(sim.counts.increments_acked > 0, "seed {seed}: no increment acknowledged");

    let ops = sim.history.len();
    let t0 = Instant::now();
    let verdict = check_history(&sim.history, Duration::from_secs(60));
    let took = t0.elapsed();
    println!(
        "seed {seed}: {nodes} nodes, {} network, {ops} ops ({} writes acknowledged, {} reads, {} \
         unknown, {} not applied; increments {} acked, {} refused, {} unknown), max term {}, \
         check {:.1} ms: {}",
        if reliable { "reliable" } else { "lossy" },
        sim.counts.acked_writes,
        sim.counts.ok_reads,
        sim.counts.unknown,
        sim.counts.not_applied,
        sim.counts.increments_acked,
        sim.counts.increments_refused,
        sim.counts.increments_unknown,
        sim.cluster
            .ids
            .iter()
            .filter_map(|id| sim.cluster.node(id))
            .map(|n| n.term())
            .max()
            .unwrap_or(0),
        took.as_secs_f64() * 1000.0,
        if verdict.is_ok() { "linearizable" } else { "NOT linearizable" },
    );
    match verdict {
        Verdict::Ok => {}
        Verdict::Illegal { key, history } => {
            let mut text = String::new();
            for op in &history {
                let ret = op.return_time.map_or("?".into(), |r| r.to_string());
                text.push_str(&format!(
                    "  [{} .. {ret}] client {}: {:?} => {:?}\n",
                    op.call, op.client_id, op.input, op.output
                ));
            }
            panic!("seed {seed}: not linearizable on key {key}; witness (event numbers):\n{text}")
        }
        Verdict::Unknown { key } => panic!("seed {seed}: the checker ran out of budget on {key}"),
    }
}

#[test]
fn kv_histories_are_linearizable_under_partitions_crashes_and_loss() {
    let seeds: Vec<u64> = match std::env::var("RAFT_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(seed) => vec![seed],
        None => {
            let n = std::env::var("SIM_KV_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
            (1..=n).collect()
        }
    };
    for seed in seeds {
        run_seed(seed);
    }
}
