//! Scripted tests of the core (first layer, with the MIT 6.5840 ports in `tests/raft_*.rs`):
//! every `tests/scripts/*.txt` drives a simulated cluster message by message and is compared
//! with the output it expects. The format and the commands are described in
//! `src/sim/script/mod.rs`.
//!
//! When the core changes on purpose, rewrite the expected outputs and read the diff:
//!
//! ```text
//! UPDATE_SCRIPTS=1 cargo test --release --test scripts
//! git diff tests/scripts/
//! ```

use std::path::{Path, PathBuf};

use raftlabkv::sim::script;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts")
}

fn run(name: &str) {
    let path = dir().join(format!("{name}.txt"));
    if let Err(e) = script::check_file(&path) {
        panic!("{e}");
    }
}

macro_rules! scripts {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run(stringify!($name));
            }
        )*

        /// Every script in the directory has a test above (none is skipped silently).
        const NAMES: &[&str] = &[$(stringify!($name)),*];
    };
}

scripts!(
    election,
    prevote,
    check_quorum,
    conflicting_append,
    pipelining,
    read_index,
    snapshot_install,
    persist_before_ack,
    membership,
    leader_transfer,
    lease_read,
);

#[test]
fn every_script_in_the_directory_is_run() {
    let mut found: Vec<String> = std::fs::read_dir(dir())
        .expect("tests/scripts exists")
        .filter_map(|e| {
            let path = e.ok()?.path();
            let name = path.file_name()?.to_str()?.strip_suffix(".txt")?.to_string();
            Some(name)
        })
        .collect();
    found.sort();
    let mut listed: Vec<String> = NAMES.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(found, listed, "add each tests/scripts/*.txt to scripts!() in tests/scripts.rs");
}

/// The comparison is real: a script whose expected output is changed by one character fails,
/// with a diff and the rewrite command (so the harness cannot pass silently).
#[test]
fn a_mutated_expected_output_fails() {
    let text = std::fs::read_to_string(dir().join("election.txt")).expect("election.txt");
    assert_eq!(script::check(&text, false), Ok(None), "election.txt passes as it is");
    let line = text
        .lines()
        .find(|l| !l.starts_with('#') && l.contains(" leader "))
        .expect("a leader's status line");
    let mutated = text.replacen(line, &line.replacen("leader", "follower", 1), 1);
    let err = script::check(&mutated, false).expect_err("a mutated expected output must fail");
    assert!(err.contains(script::UPDATE_COMMAND), "{err}");
    assert!(err.contains(&format!("+ {line}")), "{err}");
}
