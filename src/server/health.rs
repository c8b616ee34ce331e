//! Health, for load balancers and orchestrators: `GET /livez`, `GET /readyz[?verbose]` and
//! `GET /health` (etcd's JSON shape).
//!
//! - **livez**: the process serves HTTP. Always `200 ok` from a worker that answers at all.
//! - **readyz**: three checks, each `[+]name ok` or `[-]name failed: reason` (the format of
//!   Kubernetes' and etcd's `/readyz?verbose`); 503 when any fails:
//!   - `leader`: a leader is known;
//!   - `applied`: the applied index reaches the commit index seen at the start of the check
//!     within [`WITHIN`] (a node replaying a long log, or stuck applying, is not ready);
//!   - `linearizable_read`: a linearizable read succeeds within [`WITHIN`] (a leader confirms
//!     its leadership with a majority; a follower asks the leader) — this is what fails when a
//!     quorum is gone, even on a node that still believes in its leader.
//! - **health**: the same checks, as `{"health":"true","reason":""}` or 503
//!   `{"health":"false","reason":"..."}` (etcd's `/health`).
//!
//! How a linearizable read is made is the HTTP layer's business (a follower's goes to the
//! leader, signed as a peer): it is passed in.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::node::Node;
use crate::error::Result;

/// How long each waiting check may take.
pub const WITHIN: Duration = Duration::from_secs(1);

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// `leader`, `applied` or `linearizable_read`.
    pub name: &'static str,
    /// `None`: ok; else why it failed.
    pub failure: Option<String>,
}

/// Runs the readiness checks; `linearizable_read` makes one read, giving up after the duration.
pub fn checks(node: &Node, linearizable_read: impl FnOnce(Duration) -> Result<()>) -> Vec<Check> {
    let (leader, commit) = {
        let raft = node.raft.lock();
        (raft.leader(), raft.log().commit_index)
    };
    let leader_check = Check {
        name: "leader",
        failure: leader.is_none().then(|| "no leader is known".to_string()),
    };
    let deadline = Instant::now() + WITHIN;
    let applied = loop {
        let applied = node.with_kv(|kv| kv.applied_index());
        if applied >= commit || Instant::now() >= deadline {
            break applied;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let applied_check = Check {
        name: "applied",
        failure: (applied < commit).then(|| {
            format!(
                "applied index {applied} has not reached commit index {commit} within {WITHIN:?}"
            )
        }),
    };
    let read_check = Check {
        name: "linearizable_read",
        failure: match leader {
            None => Some("no leader to confirm a read with".to_string()),
            Some(_) => linearizable_read(WITHIN).err().map(|e| e.message().to_string()),
        },
    };
    vec![leader_check, applied_check, read_check]
}

/// The `/readyz` answer: status and text.
pub fn readyz_text(checks: &[Check], verbose: bool) -> (u16, String) {
    let ok = checks.iter().all(|c| c.failure.is_none());
    let mut text = String::new();
    for c in checks {
        match &c.failure {
            None if verbose => text.push_str(&format!("[+]{} ok\n", c.name)),
            None => {}
            Some(why) => text.push_str(&format!("[-]{} failed: {why}\n", c.name)),
        }
    }
    if ok && !verbose {
        return (200, "ok\n".to_string());
    }
    text.push_str(if ok { "readyz check passed\n" } else { "readyz check failed\n" });
    (if ok { 200 } else { 503 }, text)
}

/// etcd's `/health` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// `"true"` or `"false"` (strings, as etcd writes them).
    pub health: &'static str,
    /// Why not healthy; empty when healthy.
    pub reason: String,
}

/// The `/health` answer: status and body.
pub fn health(checks: &[Check]) -> (u16, Health) {
    let failed: Vec<String> = checks
        .iter()
        .filter_map(|c| c.failure.as_ref().map(|why| format!("{}: {why}", c.name)))
        .collect();
    if failed.is_empty() {
        (200, Health { health: "true", reason: String::new() })
    } else {
        (503, Health { health: "false", reason: failed.join("; ") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &'static str, failure: Option<&str>) -> Check {
        Check { name, failure: failure.map(str::to_string) }
    }

    #[test]
    fn readyz_lists_every_check_when_verbose_and_the_failures_always() {
        let good = [check("leader", None), check("applied", None)];
        assert_eq!(readyz_text(&good, false), (200, "ok\n".into()));
        let (code, text) = readyz_text(&good, true);
        assert_eq!(
            (code, text.as_str()),
            (200, "[+]leader ok\n[+]applied ok\nreadyz check passed\n")
        );
        let bad = [check("leader", Some("no leader is known")), check("applied", None)];
        let (code, text) = readyz_text(&bad, false);
        assert_eq!(code, 503);
        assert_eq!(text, "[-]leader failed: no leader is known\nreadyz check failed\n");
        let (_, text) = readyz_text(&bad, true);
        assert!(text.contains("[+]applied ok\n"), "{text}");
    }

    #[test]
    fn health_is_etcds_shape() {
        let (code, h) = health(&[check("leader", None)]);
        assert_eq!(code, 200);
        assert_eq!(
            serde_json::to_value(&h).expect("json"),
            serde_json::json!({"health": "true", "reason": ""})
        );
        let (code, h) = health(&[check("leader", Some("gone")), check("applied", Some("slow"))]);
        assert_eq!(
            (code, h.health, h.reason.as_str()),
            (503, "false", "leader: gone; applied: slow")
        );
    }
}
