//! The checker against porcupine's own kv test data (tests/data/porcupine-kv, see SOURCE.txt):
//! `c*-ok.txt` are linearizable, `c*-bad.txt` are not.

use std::path::Path;
use std::time::{Duration, Instant};

use raftlabkv::check::{KvModel, Verdict, check_history_with, parse_porcupine_kv};

const BUDGET: Duration = Duration::from_secs(60);

fn check_file(name: &str) -> Verdict {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/porcupine-kv").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let ops = parse_porcupine_kv(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(!ops.is_empty(), "{name}: no operations");
    let start = Instant::now();
    let verdict = check_history_with(&ops, &KvModel::porcupine(), BUDGET);
    println!("{name}: {} operations, {:?} in {:?}", ops.len(), short(&verdict), start.elapsed());
    verdict
}

fn short(v: &Verdict) -> String {
    match v {
        Verdict::Ok => "Ok".into(),
        Verdict::Illegal { key, history } => format!("Illegal(key {key}, {} ops)", history.len()),
        Verdict::Unknown { key } => format!("Unknown(key {key})"),
    }
}

fn assert_ok(name: &str) {
    let v = check_file(name);
    assert_eq!(v, Verdict::Ok, "{name} is linearizable");
}

fn assert_illegal(name: &str) {
    match check_file(name) {
        Verdict::Illegal { history, .. } => {
            // The witness must fail on its own.
            let again = check_history_with(&history, &KvModel::porcupine(), BUDGET);
            assert!(
                matches!(again, Verdict::Illegal { .. }),
                "{name}: shrunk witness passes: {again:?}"
            );
        }
        other => panic!("{name} is not linearizable, got {other:?}"),
    }
}

#[test]
fn c01_ok() {
    assert_ok("c01-ok.txt");
}

#[test]
fn c01_bad() {
    assert_illegal("c01-bad.txt");
}

#[test]
fn c10_ok() {
    assert_ok("c10-ok.txt");
}

#[test]
fn c10_bad() {
    assert_illegal("c10-bad.txt");
}

#[test]
fn c50_ok() {
    assert_ok("c50-ok.txt");
}

#[test]
fn c50_bad() {
    assert_illegal("c50-bad.txt");
}
