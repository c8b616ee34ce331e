//! The module layering the architecture promises, checked on the source: imports between the
//! product's modules run one way (no module imports one that imports it), and the consensus core
//! imports nothing but `error`.
//!
//! An import is any `crate::NAME` outside a comment in a module's files (`src/NAME.rs` or
//! `src/NAME/**.rs`), `use` lines and paths in code alike. The same holds one level down, between
//! the files of `src/server/` (`super::NAME` there), whose `mod.rs` only wires the others: no file
//! imports one that imports it, nor anything of `mod.rs`. Run alone with
//! `cargo test --release --test layering -- --nocapture` to print the graphs.

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
    paths_in(text, "crate::")
}

/// The names that follow `prefix` (`crate::`, `super::`) outside comments, one-name paths and
/// `prefix{a, b::c}` groups alike.
fn paths_in(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find(prefix) {
            rest = &rest[at + prefix.len()..];
            let name: String =
                rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
        // `use crate::{a, b::c}` names several modules at once.
        let open = format!("{prefix}{{");
        if let Some(at) = code.find(&open) {
            let group = &code[at + open.len()..];
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

/// The files of `src/server/` and what each imports of the others: `super::NAME` (or
/// `crate::server::NAME`) outside comments and before the file's tests, where `NAME` is a sibling
/// file, or `mod` for anything else of `mod.rs`. `mod` declares them all, so it imports each.
fn server_graph() -> BTreeMap<String, BTreeSet<String>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/server");
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).expect("read src/server").flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "rs")
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        {
            files.insert(stem.to_string(), std::fs::read_to_string(&path).expect("read a file"));
        }
    }
    let mut graph = BTreeMap::new();
    for (name, text) in &files {
        let mut deps = BTreeSet::new();
        if name == "mod" {
            deps.extend(files.keys().filter(|&f| f != "mod").cloned());
        } else {
            // Inside `mod tests`, `super::` is the file itself.
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            let named = paths_in(code, "super::").into_iter().chain(paths_in(code, "server::"));
            for dep in named {
                let dep = if files.contains_key(&dep) { dep } else { "mod".to_string() };
                if dep != *name {
                    deps.insert(dep);
                }
            }
        }
        graph.insert(name.clone(), deps);
    }
    graph
}

/// A cycle through the last module of `path`, if any (depth-first search).
fn cycle(
    graph: &BTreeMap<String, BTreeSet<String>>,
    path: &mut Vec<String>,
) -> Option<Vec<String>> {
    let here = path.last()?.clone();
    for next in graph.get(&here).into_iter().flatten() {
        if let Some(at) = path.iter().position(|m| m == next) {
            let mut c = path[at..].to_vec();
            c.push(next.clone());
            return Some(c);
        }
        path.push(next.clone());
        if let Some(c) = cycle(graph, path) {
            return Some(c);
        }
        path.pop();
    }
    None
}

/// Panics naming a cycle, if `graph` has one.
fn assert_no_cycle(graph: &BTreeMap<String, BTreeSet<String>>, what: &str) {
    for (name, deps) in graph {
        println!("{name} -> {deps:?}");
    }
    for start in graph.keys() {
        if let Some(c) = cycle(graph, &mut vec![start.clone()]) {
            panic!("{what} import each other: {}", c.join(" -> "));
        }
    }
}

#[test]
fn imports_between_modules_run_one_way() {
    let graph = graph()
        .into_iter()
        .map(|(m, deps)| (m.to_string(), deps.into_iter().map(String::from).collect()))
        .collect();
    assert_no_cycle(&graph, "modules");
}

#[test]
fn imports_between_the_server_files_run_one_way() {
    let graph = server_graph();
    for file in ["node", "peer", "snapshot", "http", "loops", "transport"] {
        assert!(graph.contains_key(file), "src/server/{file}.rs is gone: update this test");
    }
    assert_no_cycle(&graph, "files of src/server");
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
fn the_server_scanner_sees_sibling_files_and_items_of_mod() {
    let text = "use super::node::{Node, spawn};\nuse super::{pending, config::X};\n// super::peer\nlet t = super::transport::rpc_path(m);";
    let found: Vec<_> = paths_in(text, "super::").into_iter().collect();
    assert_eq!(found, vec!["config", "node", "pending", "transport"]);
}

#[test]
fn the_scanner_sees_imports_and_skips_comments() {
    let text = "use crate::raft::Entry;\n// crate::server is only mentioned\nuse crate::{kv, storage::X};\nlet x = crate::error::Error::Internal;";
    let found: Vec<_> = imports_in(text).into_iter().collect();
    assert_eq!(found, vec!["error", "kv", "raft", "storage"]);
}
