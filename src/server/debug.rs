//! `GET /debug/raft`: the node's whole Raft state and log tail as JSON, for the dashboard and for
//! anyone curious; and `GET`/`POST /debug/fault`, the fault lab ([`super::faults`]).
//!
//! The Raft lock is held only to copy the state and the tail out (at most [`MAX_TAIL`] entries);
//! the JSON is built after it is released.

use serde::Serialize;
use serde_json::{Value, json};

use super::faults::FaultRequest;
use super::node::Node;
use crate::error::{Error, Result};
use crate::kv::Command;
use crate::raft::{Entry, NodeId};

/// Default number of log entries `/debug/raft` shows.
pub const DEFAULT_TAIL: u64 = 50;
/// Most log entries `/debug/raft` shows.
pub const MAX_TAIL: u64 = 1000;

/// One log entry as the dashboard draws it.
#[derive(Debug, Serialize)]
struct EntryView {
    index: u64,
    term: u64,
    /// `noop`, `config`, `put`, `delete` or `other`.
    kind: &'static str,
    /// A short description (`put k=v`, the voters of a configuration), at most ~60 characters.
    summary: String,
}

fn entry_view(e: &Entry) -> EntryView {
    let (kind, summary) = if e.command.is_empty() {
        ("noop", "no-op (a new leader's first entry)".to_string())
    } else if let Some(m) = e.membership() {
        let voters: Vec<&str> = m.voters.keys().map(String::as_str).collect();
        let learners: Vec<&str> = m.learners.keys().map(String::as_str).collect();
        let mut text = format!("voters {}", voters.join(","));
        if !learners.is_empty() {
            text.push_str(&format!("; learners {}", learners.join(",")));
        }
        ("config", text)
    } else if e.is_internal() {
        ("other", "internal entry".to_string())
    } else {
        match Command::decode(&e.command) {
            Ok(c) => c.describe(),
            Err(_) => ("other", format!("{} bytes", e.command.len())),
        }
    };
    EntryView { index: e.index, term: e.term, kind, summary: shorten(summary, 60) }
}

fn shorten(mut s: String, max: usize) -> String {
    if s.chars().count() > max {
        s = s.chars().take(max.saturating_sub(1)).collect::<String>() + "…";
    }
    s
}

/// The `tail` query parameter: 1 to [`MAX_TAIL`], [`DEFAULT_TAIL`] when absent.
pub fn parse_tail(query: &str) -> Result<u64> {
    for kv in query.split('&') {
        if let Some(v) = kv.strip_prefix("tail=") {
            let n: u64 = v
                .parse()
                .map_err(|_| Error::BadRequest(format!("tail={v:?}: expected a number")))?;
            if n == 0 || n > MAX_TAIL {
                return Err(Error::BadRequest(format!("tail={n}: expected 1 to {MAX_TAIL}")));
            }
            return Ok(n);
        }
    }
    Ok(DEFAULT_TAIL)
}

/// The `/debug/raft` answer.
pub fn raft_state(node: &Node, tail: u64) -> Result<Value> {
    let tick_ms = u64::try_from(node.config.tick.as_millis()).unwrap_or(10).max(1);
    let (s, role, timer, entries) = {
        let raft = node.raft.lock();
        let s = raft.status();
        let role = super::events::role_name(raft.role());
        let timer = raft.election_timer();
        let hi = s.last_log_index;
        let lo = hi.saturating_sub(tail - 1).max(s.first_log_index);
        let entries = if lo <= hi { raft.log().entries(lo, hi + 1, 1 << 20)? } else { Vec::new() };
        (s, role, timer, entries)
    };
    let log: Vec<EntryView> = entries.iter().map(entry_view).collect();
    let progress: serde_json::Map<String, Value> = s
        .progress
        .iter()
        .map(|(id, p)| {
            let view = json!({
                "matchIndex": p.match_index,
                "nextIndex": p.next_index,
                "state": p.state.name(),
                "inflight": p.inflight,
                "lastContactMs": p.last_contact_ticks.saturating_mul(tick_ms),
            });
            (id.clone(), view)
        })
        .collect();
    let (voters, learners) = match &s.membership {
        Some(m) => (m.voters.clone(), m.learners.clone()),
        None => Default::default(),
    };
    let faults = node.faults.view().ok();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let last_applied = node.kv.read().applied_index();
    Ok(json!({
        "id": s.id,
        "clusterId": node.config.cluster_id,
        // `pre-candidate` during a PreVote round (the term is not raised yet).
        "role": role,
        "term": s.term,
        "votedFor": s.voted_for,
        "leader": s.leader,
        "commitIndex": s.commit_index,
        "lastApplied": last_applied,
        "lastLogIndex": s.last_log_index,
        "lastLogTerm": s.last_log_term,
        "firstLogIndex": s.first_log_index,
        "snapshotIndex": s.snapshot.map_or(0, |m| m.index),
        "snapshotTerm": s.snapshot.map_or(0, |m| m.term),
        "electionElapsedMs": timer.0.saturating_mul(tick_ms),
        "electionTimeoutMs": timer.1.saturating_mul(tick_ms),
        "heartbeatMs": u64::try_from(node.config.heartbeat.as_millis()).unwrap_or(0),
        "memberState": s.member_state,
        "voters": voters,
        "learners": learners,
        "progress": progress,
        "log": log,
        "faults": faults,
        "nowMs": now_ms,
    }))
}

/// `GET /debug/fault`.
pub fn faults(node: &Node) -> Result<Value> {
    serde_json::to_value(node.faults.view()?)
        .map_err(|e| Error::Internal(format!("cannot encode the faults: {e}")))
}

/// `POST /debug/fault` with `body`.
pub fn inject(node: &Node, body: &[u8]) -> Result<Value> {
    if !node.faults.enabled() {
        return faults(node); // NotFound, before the body is looked at
    }
    let req: FaultRequest = serde_json::from_slice(body)
        .map_err(|e| Error::BadRequest(format!("bad fault request: {e}")))?;
    let peers: Vec<NodeId> = {
        let raft = node.raft.lock();
        raft.membership()
            .map(|m| m.members().map(|(id, _, _)| id.clone()).filter(|id| *id != node.config.id))
            .into_iter()
            .flatten()
            .collect()
    };
    let view = node.faults.apply(req, &peers)?;
    log::warn!("{}: fault lab: faults now {}", node.config.id, serde_json::json!(view));
    node.feed.fault(&view);
    serde_json::to_value(view).map_err(|e| Error::Internal(format!("cannot encode: {e}")))
}
