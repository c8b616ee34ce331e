//! The module layering the architecture promises, checked on the source: imports between the
//! product's modules run one way (no module imports one that imports it), and the consensus core
//! imports nothing but `error`.
//!
//! An import is any `crate::NAME` outside a comment in a module's files (`src/NAME.rs` or
//! `src/NAME/**.rs`), `use` lines and paths in code alike. Run alone with
//! `cargo test --release --test layering -- --nocapture` to print the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The product's modules (the harness modules sit apart, behind the `harness` feature).
const MODULES: &[&str] = &["api", "raft", "storage", "server", "kv", "client", "error"];

fn files_of(module: &str) -> Vec<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let single = src.join(format!("{module}.rs"));
    if single.is_file() {
        out.push(single);
    }
    let mut dirs = vec![src.join(module)];
    while let Some(dir) = dirs.pop() {
        let Ok(read) = std::fs::read_dir(&dir) else { continue };
        for entry in read.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out
}

/// `crate::NAME` references outside comments.
fn imports_in(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String =
                rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
        // `use crate::{a, b::c}` names several modules at once.
        if let Some(at) = code.find("crate::{") {
            let group = &code[at + "crate::{".len()..];
            for part in group.split([',', '}', '{']) {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        }
    }
    found
}

fn graph() -> BTreeMap<&'static str, BTreeSet<&'static str>> {
    let mut graph = BTreeMap::new();
    for &module in MODULES {
        let mut deps = BTreeSet::new();
        for file in files_of(module) {
            let text = std::fs::read_to_string(&file).expect("read a source file");
            for name in imports_in(&text) {
                if let Some(&m) = MODULES.iter().find(|&&m| m == name)
                    && m != module
                {
                    deps.insert(m);
                }
            }
        }
        graph.insert(module, deps);
    }
    graph
}

/// A cycle through `from`, if any (depth-first search).
fn cycle(
    graph: &BTreeMap<&'static str, BTreeSet<&'static str>>,
    path: &mut Vec<&'static str>,
) -> Option<Vec<&'static str>> {
    let here = *path.last()?;
    for &next in graph.get(here).into_iter().flatten() {
        if let Some(at) = path.iter().position(|&m| m == next) {
            let mut c = path[at..].to_vec();
            c.push(next);
            return Some(c);
        }
        path.push(next);
        if let Some(c) = cycle(graph, path) {
            return Some(c);
        }
        path.pop();
    }
    None
}

#[test]
fn imports_between_modules_run_one_way() {
    let graph = graph();
    for (module, deps) in &graph {
        println!("{module} -> {deps:?}");
    }
    for &start in MODULES {
        if let Some(c) = cycle(&graph, &mut vec![start]) {
            panic!("modules import each other: {}", c.join(" -> "));
        }
    }
}

#[test]
fn the_core_imports_only_error() {
    let graph = graph();
    let raft: Vec<_> = graph["raft"].iter().copied().collect();
    assert_eq!(raft, vec!["error"], "src/raft may import only crate::error");
    let kv: Vec<_> = graph["kv"].iter().filter(|&&m| m != "error" && m != "raft").collect();
    assert!(kv.is_empty(), "the state machine knows nothing of the shell: kv imports {kv:?}");
}

#[test]
fn the_scanner_sees_imports_and_skips_comments() {
    let text = "use crate::raft::Entry;\n// crate::server is only mentioned\nuse crate::{kv, storage::X};\nlet x = crate::error::Error::Internal;";
    let found: Vec<_> = imports_in(text).into_iter().collect();
    assert_eq!(found, vec!["error", "kv", "raft", "storage"]);
}
