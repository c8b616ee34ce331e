//! A linearizability checker for key-value histories, in the style of
//! [porcupine](https://github.com/anishathalye/porcupine).
//!
//! # What it decides
//!
//! A *history* is what clients observed: for every operation, when it was called, when (if ever)
//! its reply arrived, and what the reply said. The history is *linearizable* if there is a single
//! total order of the operations that (1) is legal for a sequential key-value store — every read
//! returns what the writes before it in the order left — and (2) respects real time: if `a`'s reply
//! arrived before `b` was called, `a` comes before `b`. Equivalently, each operation can be given a
//! *linearization point*, an instant between its call and its return at which it takes effect
//! atomically. Linearizability is what a Raft-replicated store promises its clients.
//!
//! # How it decides: Wing & Gong's search with Lowe's memoisation
//!
//! Turn the history into a list of *events* — each operation's call and its return — sorted by
//! time. Then search depth-first for a linearization (Wing & Gong, 1993):
//!
//! 1. Walk the list from the front. A **call** event names an operation that may be linearized
//!    *now*, provided no return event comes before it in the list (a return means some operation
//!    finished, and everything finished must already have been linearized). If the operation is
//!    legal in the current model state, *linearize* it: apply it to the state, remove ("lift") its
//!    call and return events from the list, push the choice on a stack, and start again from the
//!    front of the list.
//! 2. If the operation is not legal in this state, try the next call event.
//! 3. Reaching a **return** event means some pending operation cannot be linearized in the order
//!    chosen so far: pop the latest choice, put its events back (backtrack), and try the call after
//!    it instead. If the stack is empty, no order works: the history is **not linearizable**.
//! 4. When the list is empty, every operation got a point: the history is **linearizable**.
//!
//! The list is doubly linked so lifting and putting back are O(1); because backtracking undoes
//! lifts in exactly reverse order, a lifted node can keep its old neighbours and splice itself
//! back in ("dancing links").
//!
//! Plain backtracking explores the same situations again and again: linearizing `a` then `b`
//! often leads to the same state as `b` then `a`. Lowe's improvement (2017) memoises every
//! configuration the search entered, as the pair (set of operations linearized so far, model
//! state). The future of the search depends only on that pair, so a configuration seen before
//! can be skipped: it was already fully explored and found to lead nowhere. The set is a bitset
//! over the operations; here the model state is interned as a small integer, and the cache is
//! keyed by an incrementally maintained (Zobrist) hash of the bitset mixed with the state.
//!
//! # P-compositionality: one key at a time
//!
//! Linearizability is *local* (Herlihy & Wing): a history is linearizable if and only if, for
//! each object, its sub-history is. A key-value store is a collection of independent registers,
//! one per key, so the checker splits the history by key and checks each key's sub-history on its
//! own (porcupine calls this P-compositionality). The search is exponential in the worst case in
//! the number of *concurrent* operations, so checking ten keys of 500 operations each is vastly
//! cheaper than one history of 5,000.
//!
//! **Compare-and-set** ([`KvInput::Cas`]): the register gains a CAS operation (if it holds
//! `expect`, set `value`; the reply says whether it did). A CAS touches one key, so checking it
//! per key is exact by the same locality argument: RaftLabKV's one-key transactions (compare the
//! key's value, put the key) are such operations, and the chaos workload's exactly-once
//! increments are recorded as them. Multi-key transactions are not given to the checker: they
//! are objects spanning several registers, and splitting them per key would be unsound (a
//! transaction whose compare on `a` decides a write to `b` has no per-key meaning). Their
//! atomicity is tested by the state machine's unit tests and by the counters' exactly-once check
//! instead. A CAS whose outcome is unknown may take effect at any point after its call, setting
//! the value if the state then matches. Keys with a CAS are not pruned nor shrunk (both steps
//! assume blind writes); their witness is reported whole.
//!
//! A [`KvInput::GetAll`] reads every key, which would tie all the keys together. To keep the split,
//! it is *projected*: for every key that any operation in the history touches (written, read, or
//! present in some `GetAll` result), it becomes one `Get` of that key — with the `GetAll`'s call
//! and return times, returning the key's value in the result, or "not found" if the key is absent
//! from the result. **This is weaker than checking an atomic multi-key read**: each key's value
//! must be explainable on its own, but the per-key linearization points of one `GetAll` may
//! differ, so a `GetAll` that saw `a` before and `b` after some write, in a way no single instant
//! could, is not caught. What *is* caught: any value that no linearization of that key allows
//! (stale values, lost writes, resurrected deletes, values never written).
//!
//! # Unknown outcomes
//!
//! A client may not learn what happened to its request (a timeout, a 504, a broken connection).
//! Such an operation has `return_time: None` (or output [`KvOutput::Unknown`]), and its reply time
//! is taken to be infinity:
//!
//! * a **write** with an unknown outcome may take effect at any instant after its call — or never.
//!   "Never" needs no special case: with an infinite return, the search may linearize it after
//!   every other operation, where it changes nothing anyone observed.
//!   Three reductions keep unknown writes from making the search exponential, all exact (the
//!   history is linearizable with them if and only if without):
//!   A **put** with an unknown outcome whose value *no read returned* is dropped before the
//!   search (for keys without appends): linearized last it is never observed, and taking it out of
//!   any linearization leaves one. This matters: every unknown write doubles the configurations a
//!   search must rule out before it may call a history illegal, and under faults most unknown puts
//!   are never read back. A put with unknown outcome whose value *was* read (and that nobody
//!   else wrote) must take effect before every read of it, so its return is taken to be the
//!   earliest return among those reads: it stops being open forever. And identical writes with
//!   unknown outcome (every unknown delete of a key, say) are interchangeable: the search only
//!   ever tries the earliest-called unused one, so which of them were used never multiplies the
//!   configurations (see `search.rs`).
//! * a **read** with an unknown outcome constrains nothing and is dropped. (A read whose value is
//!   known but whose return time is not — unusual — is kept, with an infinite return: it took
//!   effect at some instant after its call.)
//!
//! A *definite* failure — the server says the request was not applied and will not be (503
//! Unavailable) — is not an operation at all: the caller must leave it out of the history.
//! Recording it as an unknown outcome is sound but makes the check weaker and slower; recording it
//! as a success is wrong.
//!
//! # The time budget, and the order keys are checked in
//!
//! The search is exponential in the worst case, so [`check_history`] takes a budget and returns
//! [`Verdict::Unknown`] when it runs out. **Callers must treat `Unknown` as a failure, never as a
//! pass**: "could not prove it linearizable" is not "linearizable". The clock is read every few
//! thousand search steps. The memo cache grows with every configuration explored, so the checker
//! also gives up (with `Unknown`) when its memory estimate passes [`MEMORY_LIMIT`].
//!
//! The keys' searches take turns, a fixed number of steps each, on one thread. A violation on an
//! easy key is then found quickly even if another key's search would run for minutes (in
//! porcupine's `c50-bad` data, one key fails in milliseconds while another cannot be decided in
//! seconds); porcupine gets the same effect by checking keys in parallel and stopping at the first
//! failure. Taking turns by step counts keeps the verdict deterministic.
//!
//! # Minimising failures
//!
//! On a violation, [`Verdict::Illegal`] carries the failing key's sub-history, shrunk within the
//! remaining budget (and at most about two seconds plus twice the search time). Shrinking only
//! removes operations whose removal *cannot* turn a legal history illegal — if the original had
//! a linearization, the shrunk one has one too — so the shrunk history is a genuine witness
//! against the original. Three such removals are used:
//!
//! 1. **A time cut.** For a cutoff `T`, keep the writes called before `T` and the reads that
//!    returned before `T`. In a linearization ordered by linearization points, every kept read
//!    comes before every dropped write, so dropping them changes nothing a kept read saw. The
//!    cut history is illegal for every `T` past some point, so the earliest failing cut is found
//!    by binary search.
//! 2. **Dropping reads** (delta debugging: chunks, then single reads). Removing a read from a
//!    linearization leaves a linearization.
//! 3. **Dropping trailing writes**, called after every other remaining operation returned: they
//!    are necessarily last, so no read depends on them.
//!
//! Other writes — including those with unknown outcome — are never dropped: without them, a read
//! of their value could fail for the wrong reason.
//!
//! # Files
//!
//! Histories (and verdicts) serialise with serde; [`history_to_json`] and [`history_from_json`]
//! save failing histories to files and reload them. [`parse_porcupine_kv`] reads porcupine's
//! Jepsen-EDN key-value test data.

mod edn;
mod memo;
mod search;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use edn::parse_porcupine_kv;
use search::{KeyEntry, KeyOp, KeyResult, Search, check_key};

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum KvInput {
    /// Set `key` to `value`. Replies [`KvOutput::Ok`].
    Put { key: String, value: String },
    /// Read `key`. Replies [`KvOutput::Value`] (`None`: not found).
    Get { key: String },
    /// Remove `key` (removing an absent key is fine). Replies [`KvOutput::Ok`].
    Delete { key: String },
    /// Append `value` to `key`'s string (an absent key counts as ""). Replies [`KvOutput::Ok`].
    Append { key: String, value: String },
    /// Read every key. Replies [`KvOutput::All`]. Checked per key; see the module docs.
    GetAll,
    /// Compare-and-set: if `key` holds `expect` (`None`: absent), set it to `value`. Replies
    /// [`KvOutput::Cas`] with whether it did. (RaftLabKV: a one-key transaction.)
    Cas { key: String, expect: Option<String>, value: String },
}

impl KvInput {
    /// The key this operation touches (`None` for [`KvInput::GetAll`]).
    pub fn key(&self) -> Option<&str> {
        match self {
            KvInput::Put { key, .. }
            | KvInput::Get { key }
            | KvInput::Delete { key }
            | KvInput::Append { key, .. }
            | KvInput::Cas { key, .. } => Some(key),
            KvInput::GetAll => None,
        }
    }

    /// True for operations that change state (put, delete, append).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            KvInput::Put { .. }
                | KvInput::Delete { .. }
                | KvInput::Append { .. }
                | KvInput::Cas { .. }
        )
    }
}

/// What the client saw in reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvOutput {
    /// A write was applied.
    Ok,
    /// A `Get`'s result: the value, or `None` for not found.
    Value(Option<String>),
    /// A `GetAll`'s result: every present key with its value.
    All(BTreeMap<String, String>),
    /// A `Cas`'s result: whether it set the value.
    Cas(bool),
    /// No answer, or an answer that does not say whether the write applied (timeout, 504,
    /// broken connection). Treated like `return_time: None`; see the module docs.
    Unknown,
}

/// One client operation in a history.
///
/// Times are in any unit of one monotonic clock shared by all clients (for example nanoseconds
/// since the test started, or a global event counter); only their order matters. Two operations
/// where one's `call` equals the other's `return_time` count as concurrent (the permissive reading
/// of a clock with finite resolution).
///
/// **Definite failures are not operations.** A request the server rejected as not applied (503)
/// must be left out of the history; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// Which client issued it (informational: the checker relies on the times, not on this).
    pub client_id: u64,
    pub input: KvInput,
    /// When the request was sent.
    pub call: u64,
    pub output: KvOutput,
    /// When the reply arrived; `None` if it never did (outcome unknown).
    pub return_time: Option<u64>,
}

impl Operation {
    /// True if the client knows what happened: it got a reply, and the reply is not
    /// [`KvOutput::Unknown`].
    pub fn outcome_known(&self) -> bool {
        self.return_time.is_some() && self.output != KvOutput::Unknown
    }
}

/// The checker's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// The history is linearizable.
    Ok,
    /// The history is not linearizable: `key`'s sub-history has no linearization. `history` is
    /// that sub-history, shrunk as far as the budget allowed, still failing; a `GetAll` appears in
    /// it as its projected `Get` of `key`. Check it again (with the same model) to reproduce.
    Illegal { key: String, history: Vec<Operation> },
    /// The time budget (or [`MEMORY_LIMIT`]) ran out; `key` is the key whose search had gone
    /// furthest. **Treat as a failure**: nothing was proven.
    Unknown { key: String },
}

impl Verdict {
    /// True only for [`Verdict::Ok`].
    pub fn is_ok(&self) -> bool {
        matches!(self, Verdict::Ok)
    }
}

/// The sequential specification: a register per key, starting as `initial_value`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvModel {
    /// What every key holds before any write. `None` (the default, RaftLabKV's semantics): absent,
    /// so a `Get` of a never-written key returns `Value(None)`. porcupine's data sets use `Some("")`.
    /// Either way a `Delete` makes the key absent, and values compare exactly (`Some("")` is not
    /// `None`).
    pub initial_value: Option<String>,
}

impl KvModel {
    /// Keys start absent (RaftLabKV's semantics).
    pub fn absent() -> Self {
        KvModel { initial_value: None }
    }

    /// Keys start as "" (the convention of porcupine's and Jepsen's kv test data).
    pub fn porcupine() -> Self {
        KvModel { initial_value: Some(String::new()) }
    }
}

/// Checks a history against [`KvModel::absent`] within `budget`. See [`check_history_with`].
pub fn check_history(ops: &[Operation], budget: Duration) -> Verdict {
    check_history_with(ops, &KvModel::absent(), budget)
}

/// Checks whether `ops` is linearizable for `model`, spending at most about `budget` (searching
/// and then shrinking a failure). The keys' searches take turns (see the module docs); the first
/// key found to fail is reported. The result is deterministic, except where the budget cuts in.
///
/// A reply of the wrong shape for its request (a `Get` answered by [`KvOutput::All`], a `Put`
/// answered with a value) is something no correct store does: it is reported as
/// [`Verdict::Illegal`] with that single operation (key "" for a `GetAll`).
///
/// [`Verdict::Unknown`] means the budget (or [`MEMORY_LIMIT`]) ran out: treat it as a failure.
pub fn check_history_with(ops: &[Operation], model: &KvModel, budget: Duration) -> Verdict {
    let start = Instant::now();
    let deadline = start + budget.min(Duration::from_secs(86_400 * 365));
    let per_key = match project(ops, &model.initial_value) {
        Ok(p) => p,
        Err(bad) => {
            return Verdict::Illegal {
                key: bad.input.key().unwrap_or("").to_string(),
                history: vec![bad.clone()],
            };
        }
    };
    // The keys' searches take turns, QUANTUM steps each (see the module docs).
    struct Job<'a> {
        key: &'a str,
        entries: &'a [Projected],
        search: Search,
        spent: Duration,
    }
    let mut jobs: Vec<Job> = per_key
        .iter()
        .map(|(key, entries)| {
            let refs: Vec<&KeyEntry> = entries.iter().map(|p| &p.entry).collect();
            Job {
                key,
                entries,
                search: Search::new(&refs, &model.initial_value, MEMORY_LIMIT),
                spent: Duration::ZERO,
            }
        })
        .collect();
    // The memory all live searches hold, kept up to date as each takes its turn.
    let mut total_memory: usize = jobs.iter().map(|j| j.search.memory()).sum();
    while !jobs.is_empty() {
        let mut i = 0;
        while i < jobs.len() {
            let began = Instant::now();
            let job = &mut jobs[i];
            let before = job.search.memory();
            let result = if began >= deadline || total_memory > MEMORY_LIMIT {
                Some(KeyResult::GaveUp)
            } else {
                job.search.run(QUANTUM, deadline)
            };
            job.spent += began.elapsed();
            total_memory = total_memory - before + job.search.memory();
            match result {
                None => i += 1,
                Some(KeyResult::Linearizable) => {
                    total_memory -= job.search.memory();
                    jobs.remove(i);
                }
                Some(KeyResult::Illegal) => {
                    let (key, entries, spent) = (job.key, job.entries, job.spent);
                    drop(jobs); // free the other searches' memory before shrinking
                    let kept = shrink(entries, model, deadline, spent);
                    let history = kept.iter().map(|p| p.to_operation(ops, key)).collect();
                    return Verdict::Illegal { key: key.to_string(), history };
                }
                Some(KeyResult::GaveUp) => {
                    // Name the key whose search had worked hardest: the likely culprit.
                    let key = jobs
                        .iter()
                        .max_by_key(|j| j.search.steps())
                        .map(|j| j.key.to_string())
                        .unwrap_or_default();
                    return Verdict::Unknown { key };
                }
            }
        }
    }
    Verdict::Ok
}

/// The most memory (estimated) the searches of one check may hold, 1 GiB: past it, the check
/// gives up with [`Verdict::Unknown`] just as when the time budget runs out. (The memo cache grows
/// with every configuration explored, at up to a few hundred MB per second on hard histories.)
pub const MEMORY_LIMIT: usize = 1 << 30;

/// Steps one key's search runs before the next key's gets a turn.
const QUANTUM: u64 = 20_000;

/// Serialises a history as pretty JSON, for saving failures to files. Each operation looks like
/// `{"client_id": 3, "input": {"op": "put", "key": "a", "value": "1"}, "call": 10,
/// "output": "ok", "return_time": 20}`; other outputs are `{"value": "x"}`, `{"value": null}`,
/// `{"all": {"a": "1"}}` and `"unknown"`, other inputs `{"op": "get", "key": "a"}`,
/// `{"op": "delete", ...}`, `{"op": "append", ...}` and `{"op": "get_all"}`.
pub fn history_to_json(ops: &[Operation]) -> String {
    // Serialising plain data with string keys cannot fail.
    serde_json::to_string_pretty(ops).unwrap_or_else(|e| format!("\"unserialisable: {e}\""))
}

/// Reads a history written by [`history_to_json`].
pub fn history_from_json(text: &str) -> Result<Vec<Operation>, String> {
    serde_json::from_str(text).map_err(|e| format!("bad history JSON: {e}"))
}

/// One entry of a key's sub-history, remembering which operation of the input it came from.
#[derive(Debug, Clone)]
struct Projected {
    origin: usize,
    entry: KeyEntry,
    /// For a put with unknown outcome given a return time by a read of its value: that read
    /// (its position in the key's list), which a shrunk witness must keep.
    bounded_by: Option<usize>,
}

impl Projected {
    /// The operation to report for this entry: the original, or for a projected `GetAll`, the
    /// `Get` of `key` it stands for.
    fn to_operation(&self, ops: &[Operation], key: &str) -> Operation {
        let op = &ops[self.origin];
        if op.input != KvInput::GetAll {
            return op.clone();
        }
        let value = match &self.entry.op {
            KeyOp::Get(v) => v.clone(),
            _ => None,
        };
        Operation {
            client_id: op.client_id,
            input: KvInput::Get { key: key.to_string() },
            call: op.call,
            output: KvOutput::Value(value),
            return_time: op.return_time,
        }
    }
}

/// Splits the history by key (projecting each `GetAll` onto every key), dropping reads with
/// unknown outcome and giving writes with unknown outcome an infinite return. Returns the first
/// operation whose reply has the wrong shape as an error.
fn project<'a>(
    ops: &'a [Operation],
    initial: &Option<String>,
) -> Result<BTreeMap<String, Vec<Projected>>, &'a Operation> {
    let mut keys: BTreeSet<&str> = BTreeSet::new();
    for op in ops {
        match (&op.input, &op.output) {
            (KvInput::GetAll, KvOutput::All(map)) => keys.extend(map.keys().map(String::as_str)),
            (input, _) => keys.extend(input.key()),
        }
    }
    let mut per_key: BTreeMap<String, Vec<Projected>> =
        keys.iter().map(|k| (k.to_string(), Vec::new())).collect();

    for (origin, op) in ops.iter().enumerate() {
        let known = op.outcome_known();
        // A reply cannot precede its request; clamp rather than corrupt the event order.
        let ret = op.return_time.map(|r| r.max(op.call));
        let mut push = |key: &str, kop: KeyOp, ret: Option<u64>| {
            if let Some(list) = per_key.get_mut(key) {
                let entry = KeyEntry { op: kop, call: op.call, ret };
                list.push(Projected { origin, entry, bounded_by: None });
            }
        };
        let write_ret = if known { ret } else { None };
        match (&op.input, &op.output) {
            (_, KvOutput::Unknown) if !op.input.is_write() => {} // unknown read: no constraint
            (KvInput::Put { key, value }, KvOutput::Ok | KvOutput::Unknown) => {
                push(key, KeyOp::Put(value.clone()), write_ret)
            }
            (KvInput::Append { key, value }, KvOutput::Ok | KvOutput::Unknown) => {
                push(key, KeyOp::Append(value.clone()), write_ret)
            }
            (KvInput::Delete { key }, KvOutput::Ok | KvOutput::Unknown) => {
                push(key, KeyOp::Delete, write_ret)
            }
            (KvInput::Cas { key, expect, value }, KvOutput::Cas(_) | KvOutput::Unknown) => {
                let result = match op.output {
                    KvOutput::Cas(done) => Some(done),
                    _ => None,
                };
                let kop = KeyOp::Cas { expect: expect.clone(), value: value.clone(), result };
                push(key, kop, write_ret)
            }
            // A read with a definite value but no return time still constrains: it took effect
            // at some point after its call.
            (KvInput::Get { key }, KvOutput::Value(v)) => push(key, KeyOp::Get(v.clone()), ret),
            (KvInput::GetAll, KvOutput::All(map)) => {
                for key in &keys {
                    push(key, KeyOp::Get(map.get(*key).cloned()), ret);
                }
            }
            _ => return Err(op),
        }
    }
    for list in per_key.values_mut() {
        prune_unobserved_unknown_puts(list);
        bound_observed_unknown_puts(list, initial);
    }
    Ok(per_key)
}

/// Gives a put with unknown outcome whose value a read returned a return time: the earliest
/// return among those reads (see "Unknown outcomes" in the module docs). Sound when that put is
/// the only write of its value and the value is not the initial one (so every read of it must
/// follow it), on keys without appends: every linearization puts it before each read of its
/// value, each of which is linearized before it returns.
fn bound_observed_unknown_puts(list: &mut [Projected], initial: &Option<String>) {
    if list.iter().any(|p| matches!(p.entry.op, KeyOp::Append(_) | KeyOp::Cas { .. })) {
        return;
    }
    let mut writers: BTreeMap<&str, usize> = BTreeMap::new();
    // Per value: the read of it that returned first, and when.
    let mut first_read: BTreeMap<&str, (u64, usize)> = BTreeMap::new();
    for (i, p) in list.iter().enumerate() {
        match (&p.entry.op, p.entry.ret) {
            (KeyOp::Put(v), _) => *writers.entry(v.as_str()).or_default() += 1,
            (KeyOp::Get(Some(v)), Some(ret)) => {
                let first = first_read.entry(v.as_str()).or_insert((ret, i));
                *first = (*first).min((ret, i));
            }
            _ => {}
        }
    }
    let bounds: Vec<Option<(u64, usize)>> = list
        .iter()
        .map(|p| match (&p.entry.op, p.entry.ret) {
            (KeyOp::Put(v), None)
                if writers.get(v.as_str()) == Some(&1) && initial.as_deref() != Some(v) =>
            {
                first_read.get(v.as_str()).copied()
            }
            _ => None,
        })
        .collect();
    for (p, bound) in list.iter_mut().zip(bounds) {
        if let Some((ret, read)) = bound {
            p.entry.ret = Some(ret.max(p.entry.call));
            p.bounded_by = Some(read);
        }
    }
}

/// Drops the puts with unknown outcome whose value no read returned (see "Unknown outcomes" in
/// the module docs). Sound for a register of puts and deletes: such a put can always be
/// linearized last, where nobody observes it, and removing it from any linearization leaves a
/// linearization (the next operation after it is a write, which overwrites it anyway). Not with
/// appends, whose result depends on what came before: a key with any append is left as it is.
fn prune_unobserved_unknown_puts(list: &mut Vec<Projected>) {
    // Nor with compare-and-sets, which read the state as well as write it.
    if list.iter().any(|p| matches!(p.entry.op, KeyOp::Append(_) | KeyOp::Cas { .. })) {
        return;
    }
    let read: BTreeSet<&str> = list
        .iter()
        .filter_map(|p| match &p.entry.op {
            KeyOp::Get(Some(v)) => Some(v.as_str()),
            _ => None,
        })
        .collect();
    let unobserved = |p: &Projected| {
        p.entry.ret.is_none() && matches!(&p.entry.op, KeyOp::Put(v) if !read.contains(v.as_str()))
    };
    let drop: Vec<bool> = list.iter().map(unobserved).collect();
    if drop.contains(&true) {
        let mut i = 0;
        list.retain(|_| {
            i += 1;
            !drop[i - 1]
        });
    }
}

/// Shrinks a failing sub-history (see "Minimising failures" in the module docs) within the
/// budget. `spent` is how long the full search took; shrinking gets at most two seconds plus
/// twice that, and each attempt at most twice that (at least 50 ms).
fn shrink(
    entries: &[Projected],
    model: &KvModel,
    deadline: Instant,
    spent: Duration,
) -> Vec<Projected> {
    // The steps below assume writes are blind (a write's effect does not depend on the state). A
    // compare-and-set reads the state too, so a key with one is reported whole, unshrunk.
    if entries.iter().any(|p| matches!(p.entry.op, KeyOp::Cas { .. })) {
        return entries.to_vec();
    }
    let deadline = deadline.min(Instant::now() + Duration::from_secs(2) + spent * 2);
    let attempt_budget = (spent * 2).max(Duration::from_millis(50));
    // See `StillIllegal`.
    let still_illegal = |keep: &[bool]| -> Option<bool> {
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        let refs: Vec<&KeyEntry> =
            entries.iter().zip(keep).filter(|(_, k)| **k).map(|(p, _)| &p.entry).collect();
        let attempt_deadline = deadline.min(now + attempt_budget);
        let result = check_key(&refs, &model.initial_value, attempt_deadline, MEMORY_LIMIT);
        Some(result == KeyResult::Illegal)
    };
    let mut keep = cut_at_first_violation(entries, &still_illegal);
    drop_reads(entries, &mut keep, &still_illegal);
    drop_last_writes(entries, &mut keep);
    keep_bounding_reads(entries, &mut keep);
    entries.iter().zip(&keep).filter(|(_, k)| **k).map(|(p, _)| p.clone()).collect()
}

/// Whether a shrunk history (the entries marked in its argument) is still illegal: `Some(true)`
/// yes, `Some(false)` legal or undecided in time, `None` out of time.
type StillIllegal<'a> = dyn Fn(&[bool]) -> Option<bool> + 'a;

/// Shrinking, step 1. Cut at the earliest time the violation is already visible. For a cutoff T,
/// keep the writes called before T and the reads that returned before T. If the whole history has a
/// linearization, ordering by linearization points puts every kept read (point < T) before every
/// dropped write (point >= T), so dropping those writes changes no kept read: the cut history is
/// linearizable too. Illegality is therefore monotone in T: binary search. Returns which entries to
/// keep.
fn cut_at_first_violation(entries: &[Projected], still_illegal: &StillIllegal) -> Vec<bool> {
    let is_read = |i: usize| entries[i].entry.op.is_read();
    let keep_at = |t: u64| -> Vec<bool> {
        (0..entries.len())
            .map(|i| {
                let e = &entries[i].entry;
                if is_read(i) { e.ret.is_some_and(|r| r < t) } else { e.call < t }
            })
            .collect()
    };
    let mut cuts: Vec<u64> = (0..entries.len())
        .filter_map(|i| {
            let e = &entries[i].entry;
            if is_read(i) { e.ret } else { Some(e.call) }
        })
        .map(|t| t.saturating_add(1))
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut keep = vec![true; entries.len()];
    if let Some(&last) = cuts.last() {
        let full = keep_at(last);
        if full == keep || still_illegal(&full) == Some(true) {
            let (mut lo, mut hi) = (0, cuts.len() - 1); // invariant: the cut at cuts[hi] fails
            while lo < hi {
                let mid = (lo + hi) / 2;
                match still_illegal(&keep_at(cuts[mid])) {
                    Some(true) => hi = mid,
                    Some(false) => lo = mid + 1,
                    None => break,
                }
            }
            keep = keep_at(cuts[hi]);
        }
    }
    keep
}

/// Shrinking, step 2. Delta debugging over the remaining reads: try dropping chunks, halving the
/// chunk size. Only reads: dropping a write, even one with unknown outcome, can make a read
/// unexplainable, so the result would no longer be a witness against the original.
fn drop_reads(entries: &[Projected], keep: &mut [bool], still_illegal: &StillIllegal) {
    let is_read = |i: usize| entries[i].entry.op.is_read();
    let mut candidates: Vec<usize> =
        (0..entries.len()).filter(|&i| keep[i] && is_read(i)).collect();
    let mut chunk = candidates.len().div_ceil(2).max(1);
    'outer: while !candidates.is_empty() {
        let mut i = 0;
        while i < candidates.len() {
            let end = (i + chunk).min(candidates.len());
            for &c in &candidates[i..end] {
                keep[c] = false;
            }
            match still_illegal(keep) {
                Some(true) => {
                    candidates.drain(i..end);
                }
                answer => {
                    for &c in &candidates[i..end] {
                        keep[c] = true;
                    }
                    if answer.is_none() {
                        break 'outer;
                    }
                    i = end;
                }
            }
        }
        if chunk == 1 {
            break;
        }
        chunk = chunk.div_ceil(2);
    }
}

/// Shrinking, step 3. Drop writes that must be linearized last (called after every other remaining
/// operation returned): no read can depend on them, so removing them keeps the history illegal.
fn drop_last_writes(entries: &[Projected], keep: &mut [bool]) {
    let is_read = |i: usize| entries[i].entry.op.is_read();
    loop {
        let live: Vec<usize> = (0..entries.len()).filter(|&i| keep[i]).collect();
        let Some(&last) = live.iter().max_by_key(|&&i| entries[i].entry.call) else {
            break;
        };
        let last_call = entries[last].entry.call;
        let droppable = !is_read(last)
            && live
                .iter()
                .filter(|&&i| i != last)
                .all(|&i| entries[i].entry.ret.is_some_and(|r| r < last_call));
        if !droppable {
            break;
        }
        keep[last] = false;
    }
}

/// Shrinking, step 4. A kept put whose return time came from a read of its value keeps that read:
/// checked again on its own, the witness must give the put the same bound. (Adding a read to an
/// illegal history keeps it illegal.)
fn keep_bounding_reads(entries: &[Projected], keep: &mut [bool]) {
    for i in 0..entries.len() {
        if keep[i]
            && let Some(read) = entries[i].bounded_by
        {
            keep[read] = true;
        }
    }
}
