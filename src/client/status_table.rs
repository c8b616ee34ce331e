//! `raftlabkv-client status`: one row per server, as an etcdctl-like table or as JSON.
//!
//! | column | what |
//! |---|---|
//! | `ENDPOINT` | the server as given in `--servers` |
//! | `ID`, `ROLE` | the node's id and role (`leader`, `follower`, `candidate`) |
//! | `LEADER` | the leader it knows of (`none`) |
//! | `TERM`, `COMMIT`, `APPLIED`, `LAST INDEX` | its current term, commit index, applied index and last log index |
//! | `LAG` | the leader's last log index minus this node's applied index; for a node that does not answer, minus its match index as the leader sees it (`-`: no leader known) |
//! | `ERRORS` | why it did not answer: `connection refused`, `timeout`, `unknown host`, or the error |
//!
//! The JSON is an array of one object per server with the same fields (`endpoint`, `id`,
//! `role`, `leader`, `term`, `commit`, `applied`, `lastIndex`, `lag`, `errors`; `null` where
//! the table has `-`), plus `server` (the endpoint again) and either `status`, the whole
//! `/status` answer, or `error` and `message`, the error's code and text.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Value, json};

use super::explain::{Reply, View};
use crate::api::Status;
use crate::error::Error;
use crate::raft::{Index, NodeId, Term};

/// One server's row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    /// The server as given.
    pub endpoint: String,
    /// Its id (none if it did not answer).
    pub id: Option<NodeId>,
    /// Its role.
    pub role: Option<String>,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// Its term.
    pub term: Option<Term>,
    /// Its commit index.
    pub commit: Option<Index>,
    /// Its applied index.
    pub applied: Option<Index>,
    /// Its last log index.
    pub last_index: Option<Index>,
    /// Entries behind the leader (see the module docs).
    pub lag: Option<u64>,
    /// Why it did not answer.
    pub errors: Option<String>,
}

/// The rows for these answers, in the same order.
pub fn rows(replies: &[(String, Reply)]) -> Vec<Row> {
    let view = View::new(replies);
    replies
        .iter()
        .zip(view.servers())
        .map(|((endpoint, _), (name, reply))| {
            let lag = view.leader.and_then(|l| view.lag(l, name));
            match reply {
                Ok(s) => Row {
                    endpoint: endpoint.clone(),
                    id: Some(s.id.clone()),
                    role: Some(s.role.to_string()),
                    leader: s.leader.clone(),
                    term: Some(s.term),
                    commit: Some(s.commit_index),
                    applied: Some(s.last_applied),
                    last_index: Some(s.last_log_index),
                    lag,
                    errors: None,
                },
                Err(failure) => Row {
                    endpoint: endpoint.clone(),
                    id: (name != endpoint).then(|| name.clone()),
                    role: None,
                    leader: None,
                    term: None,
                    commit: None,
                    applied: None,
                    last_index: None,
                    lag,
                    errors: Some(failure.short()),
                },
            }
        })
        .collect()
}

/// The rows as a table with a header line (no final newline).
pub fn table(rows: &[Row]) -> String {
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let num = |v: Option<u64>| v.map_or_else(|| "-".into(), |n| n.to_string());
    let mut lines = vec![
        [
            "ENDPOINT",
            "ID",
            "ROLE",
            "LEADER",
            "TERM",
            "COMMIT",
            "APPLIED",
            "LAST INDEX",
            "LAG",
            "ERRORS",
        ]
        .map(str::to_string),
    ];
    for r in rows {
        let leader = match (&r.leader, &r.id) {
            (Some(l), _) => l.clone(),
            (None, Some(_)) => "none".into(),
            (None, None) => "-".into(),
        };
        lines.push([
            r.endpoint.clone(),
            dash(&r.id),
            dash(&r.role),
            leader,
            num(r.term),
            num(r.commit),
            num(r.applied),
            num(r.last_index),
            num(r.lag),
            dash(&r.errors),
        ]);
    }
    let mut widths = [0usize; 10];
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in &lines {
        let mut text = String::new();
        for (i, (cell, w)) in line.iter().zip(widths).enumerate() {
            // Numbers right-aligned (TERM .. LAG), text left-aligned.
            if (4..9).contains(&i) {
                let _ = write!(text, "{cell:>w$}  ");
            } else {
                let _ = write!(text, "{cell:<w$}  ");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out.pop();
    out
}

/// The JSON array (see the module docs) for what [`crate::client::Client::cluster_status`]
/// returned.
pub fn to_json(all: &[(String, crate::error::Result<Status>)]) -> Value {
    let replies = as_replies(all);
    let list = rows(&replies)
        .into_iter()
        .zip(all)
        .map(|(row, (server, r))| {
            let mut v = serde_json::to_value(&row).unwrap_or_else(|_| json!({}));
            if let Some(o) = v.as_object_mut() {
                o.insert("server".into(), json!(server));
                match r {
                    Ok(s) => o.insert("status".into(), json!(s)),
                    Err(e) => {
                        o.insert("error".into(), json!(e.code()));
                        o.insert("message".into(), json!(e.message()))
                    }
                };
            }
            v
        })
        .collect();
    Value::Array(list)
}

/// The client's answers as [`explain`](super::explain::explain) reads them: errors as text.
pub fn as_replies(all: &[(String, crate::error::Result<Status>)]) -> Vec<(String, Reply)> {
    all.iter()
        .map(|(server, r)| (server.clone(), r.clone().map_err(|e: Error| e.to_string())))
        .collect()
}
