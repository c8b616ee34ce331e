//! Randomized and performance tests for the linearizability checker.
//!
//! Histories are generated from a real sequential execution: operations are applied one by one to
//! a map (their linearization points, in increasing time), and each is given a random real-time
//! interval around its point, with each client's operations one after another. Such histories
//! are linearizable by construction. Mutating one read to return a value no write produced must
//! make them illegal.
//!
//! Seeds are fixed so failures reproduce; set `CHECK_SEED=<n>` to run other seeds. Every test
//! prints the seeds it used.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use raftlabkv::check::{KvInput, KvOutput, Operation, Verdict, check_history};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const BUDGET: Duration = Duration::from_secs(60);

struct Shape {
    ops: usize,
    keys: usize,
    clients: usize,
    /// Largest distance from an operation's call, or return, to its linearization point.
    spread: u64,
    /// Percent of operations whose client never learns the outcome.
    unknown_pct: u32,
    /// Whether to generate GetAll operations.
    get_all: bool,
}

/// Generates a linearizable history of the given shape.
fn generate(seed: u64, shape: &Shape) -> Vec<Operation> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut state: BTreeMap<String, String> = BTreeMap::new();
    let mut free_at = vec![0u64; shape.clients];
    let mut point = shape.spread;
    let mut ops = Vec::with_capacity(shape.ops);
    for i in 0..shape.ops {
        point += rng.gen_range(1..=4);
        // A client that is idle at this point; if none is, wait for the first to become idle.
        let idle: Vec<usize> = (0..shape.clients).filter(|&c| free_at[c] <= point).collect();
        let client = if idle.is_empty() {
            let c = (0..shape.clients).min_by_key(|&c| free_at[c]).unwrap_or(0);
            point = free_at[c];
            c
        } else {
            idle[rng.gen_range(0..idle.len())]
        };
        let call = rng.gen_range(free_at[client].max(point.saturating_sub(shape.spread))..=point);
        let ret = point + rng.gen_range(0..=shape.spread);
        free_at[client] = ret + 1;

        let key = format!("k{}", rng.gen_range(0..shape.keys));
        let unknown = rng.gen_range(0..100) < shape.unknown_pct;
        // An unknown outcome still happened or not: a write applies (at `point`) half the time.
        let applies = !unknown || rng.gen_bool(0.5);
        let roll = rng.gen_range(0..100);
        let (input, output) = if roll < 30 {
            let value = format!("v{i}");
            if applies {
                state.insert(key.clone(), value.clone());
            }
            (KvInput::Put { key, value }, KvOutput::Ok)
        } else if roll < 45 {
            let value = format!("<{i}>");
            if applies {
                state.entry(key.clone()).or_default().push_str(&value);
            }
            (KvInput::Append { key, value }, KvOutput::Ok)
        } else if roll < 53 {
            if applies {
                state.remove(&key);
            }
            (KvInput::Delete { key }, KvOutput::Ok)
        } else if roll < 58 && shape.get_all {
            (KvInput::GetAll, KvOutput::All(state.clone()))
        } else {
            let value = state.get(&key).cloned();
            (KvInput::Get { key }, KvOutput::Value(value))
        };
        let (output, return_time) = if unknown {
            // Half the unknowns are timeouts (no reply), half are "504"-style replies.
            let rt = if rng.gen_bool(0.5) { None } else { Some(ret) };
            (KvOutput::Unknown, rt)
        } else {
            (output, Some(ret))
        };
        ops.push(Operation { client_id: client as u64, input, call, output, return_time });
    }
    ops
}

/// Makes one known read (chosen by `pick`) return a value no write produced. Returns the key
/// whose sub-history must now fail, or `None` if there is no known read.
fn mutate(ops: &mut [Operation], pick: usize) -> Option<String> {
    let reads: Vec<usize> = (0..ops.len())
        .filter(|&i| {
            ops[i].outcome_known() && matches!(ops[i].input, KvInput::Get { .. } | KvInput::GetAll)
        })
        .collect();
    if reads.is_empty() {
        return None;
    }
    let op = &mut ops[reads[pick % reads.len()]];
    let key = match (&op.input, &mut op.output) {
        (KvInput::Get { key }, out) => {
            *out = KvOutput::Value(Some("never-written".into()));
            key.clone()
        }
        (_, KvOutput::All(map)) => {
            // Pick one of the keys, present or not.
            let key = format!("k{}", pick % 3);
            map.insert(key.clone(), "never-written".into());
            key
        }
        _ => return None,
    };
    Some(key)
}

/// The average number of operations in flight (known outcomes only), over the history's span.
fn mean_in_flight(ops: &[Operation]) -> f64 {
    let known = ops.iter().filter_map(|o| o.return_time.map(|r| (o.call, r)));
    let (busy, start, end) =
        known.fold((0u64, u64::MAX, 0u64), |(b, s, e), (c, r)| (b + (r - c), s.min(c), e.max(r)));
    busy as f64 / (end.saturating_sub(start).max(1)) as f64
}

fn seeds(default: &[u64]) -> Vec<u64> {
    match std::env::var("CHECK_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(s) => vec![s],
        None => default.to_vec(),
    }
}

#[test]
fn generated_histories_pass_and_mutated_ones_fail() {
    let shape = Shape { ops: 300, keys: 3, clients: 6, spread: 12, unknown_pct: 4, get_all: true };
    let seeds = seeds(&(1..=30).collect::<Vec<u64>>());
    let mut mutated_checked = 0;
    for seed in seeds {
        println!("seed {seed}");
        let ops = generate(seed, &shape);
        let start = Instant::now();
        let verdict = check_history(&ops, BUDGET);
        assert_eq!(verdict, Verdict::Ok, "seed {seed}: generated history must pass");
        let ok_time = start.elapsed();

        let mut bad = ops.clone();
        let Some(key) = mutate(&mut bad, seed as usize * 7919) else {
            continue;
        };
        let start = Instant::now();
        match check_history(&bad, BUDGET) {
            Verdict::Illegal { key: k, history } => {
                assert_eq!(k, key, "seed {seed}: wrong key blamed");
                assert!(
                    history
                        .iter()
                        .any(|o| o.output == KvOutput::Value(Some("never-written".into()))),
                    "seed {seed}: the witness must contain the mutated read: {history:?}"
                );
                assert!(
                    matches!(check_history(&history, BUDGET), Verdict::Illegal { .. }),
                    "seed {seed}: witness passes on its own"
                );
            }
            other => panic!("seed {seed}: mutated history must fail, got {other:?}"),
        }
        mutated_checked += 1;
        println!("seed {seed}: ok in {ok_time:?}, mutated caught in {:?}", start.elapsed());
    }
    assert!(mutated_checked > 0);
}

#[test]
fn generated_history_without_unknowns_passes_json_round_trip() {
    // Failing histories are meant to be saved; make sure a realistic one survives the trip.
    let shape = Shape { ops: 200, keys: 4, clients: 5, spread: 10, unknown_pct: 0, get_all: true };
    for seed in seeds(&[100, 101]) {
        println!("seed {seed}");
        let ops = generate(seed, &shape);
        let text = raftlabkv::check::history_to_json(&ops);
        let back = raftlabkv::check::history_from_json(&text).expect("round trip");
        assert_eq!(back, ops, "seed {seed}");
        assert_eq!(check_history(&back, BUDGET), Verdict::Ok, "seed {seed}");
    }
}

#[test]
fn five_thousand_operations_check_within_budget() {
    let shape =
        Shape { ops: 5_000, keys: 10, clients: 10, spread: 40, unknown_pct: 1, get_all: false };
    for seed in seeds(&[4242]) {
        let ops = generate(seed, &shape);
        let unknown = ops.iter().filter(|o| !o.outcome_known()).count();
        let concurrency = mean_in_flight(&ops);
        let start = Instant::now();
        let verdict = check_history(&ops, BUDGET);
        println!(
            "seed {seed}: {} operations ({unknown} with unknown outcome) over {} keys, \
             {} clients ({concurrency:.1} in flight on average): {verdict:?} in {:?}",
            ops.len(),
            shape.keys,
            shape.clients,
            start.elapsed()
        );
        assert_eq!(verdict, Verdict::Ok, "seed {seed}");
    }
}
