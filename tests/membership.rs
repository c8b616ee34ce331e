//! Real binaries: membership changes and leadership transfer over HTTP (`/cluster/*`), on a
//! 3-node cluster with data dirs and a peer secret. Polls with deadlines; no fixed sleeps decide.

mod support;

use std::time::{Duration, Instant};

use raftlabkv::error::Error;

use serde_json::json;
use support::members::{client, cluster, leader};

const POLL: Duration = Duration::from_millis(20);

/// Polls `cond` every 20 ms for up to `within`.
fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(POLL);
    }
    cond()
}

/// The thesis's operator story (§4.2): a member's disk dies; a new node joins as a learner,
/// catches up, is promoted, and the dead member is removed. No acknowledged write is lost, the
/// strict check refuses a change that would leave no live quorum, and bad requests get 4xx.
#[test]
fn replace_a_dead_member() {
    let mut c = cluster("replace");
    leader(&c, &c.all());
    let cl = client(&c, &[0, 1, 2]);
    for i in 0..50 {
        cl.put(&format!("k{i}"), &format!("v{i}")).expect("put");
    }
    // node3's disk dies.
    c.kill(2);
    let _ = std::fs::remove_dir_all(c.data_dir(2));
    let cl = client(&c, &[0, 1]);
    leader(&c, &[0, 1]);
    // The strict check counts the voters heard from within an election timeout: wait until the
    // leader has not heard from node3 for longer than that.
    let silent = eventually(Duration::from_secs(10), || {
        cl.members().is_ok_and(|m| {
            m.members.iter().any(|m| m.id == "node3" && m.last_contact_ms.is_some_and(|t| t > 1000))
        })
    });
    assert!(silent, "the leader still hears from node3: {:?}", cl.members());
    // Removing a live voter now would leave {node1, node3}, of which only node1 is heard from.
    let strict = cl.remove_member("node2", false);
    assert!(matches!(strict, Err(Error::PreconditionFailed(_))), "{strict:?}");
    // Bad input: a malformed body, an unknown member, an id twice.
    let bad = c.call(0, "POST", "/cluster/members", Some(&json!({"id": "x"})));
    assert_eq!(bad.status, 400, "{:?}", bad.body);
    let bad = c.call(0, "POST", "/cluster/members", Some(&json!({"id": "x", "addr": "nope"})));
    assert_eq!(bad.status, 400, "{:?}", bad.body);
    let unknown = cl.promote_member("nobody", false);
    assert!(matches!(unknown, Err(Error::NotFound(_))), "{unknown:?}");
    let wrong = c.call(1, "PATCH", "/cluster/members", None);
    assert_eq!(wrong.status, 405, "{:?}", wrong.body);

    // node4 joins as a learner, through a follower (forwarded to the leader).
    let n4 = c.add_joining_node().expect("start node4");
    let addr4 = c.nodes[n4].addr.clone();
    let follower = (0..2).find(|&i| i != leader(&c, &[0, 1])).unwrap_or(0);
    let added = client(&c, &[follower]).add_member("node4", &addr4, true, false).expect("add");
    let role = added.members.iter().find(|m| m.id == "node4").map(|m| m.role.clone());
    assert_eq!(role.as_deref(), Some("learner"));
    let again = cl.add_member("node4", &addr4, true, false);
    assert!(matches!(again, Err(Error::Conflict(_))), "{again:?}");
    // A learner does not vote: the cluster still has a quorum of {node1, node2} of 3 voters.
    let caught_up = eventually(Duration::from_secs(20), || {
        c.node_status(n4).is_some_and(|s| s.member_state == "learner" && s.last_applied >= 50)
    });
    assert!(caught_up, "node4 never caught up: {:?}", c.node_status(n4));
    // Promote once the leader's own view says caught up (its rule: close to the commit index and
    // heard from within an election timeout); on a loaded machine that can take a moment longer.
    let leader_sees_it = eventually(Duration::from_secs(20), || {
        cl.members().ok().is_some_and(|m| {
            m.members.iter().any(|m| {
                m.id == "node4"
                    && m.match_index.is_some_and(|i| i >= 50)
                    && m.last_contact_ms.is_some_and(|ms| ms < 100)
            })
        })
    });
    assert!(leader_sees_it, "the leader never saw node4 caught up: {:?}", cl.members());
    cl.promote_member("node4", false).expect("promote");
    cl.remove_member("node3", false).expect("remove the dead member");
    let members = cl.members().expect("members");
    let ids: Vec<&str> = members.members.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["node1", "node2", "node4"], "{members:?}");
    // Every acknowledged write is on node4, and the cluster survives node1's death with node4.
    for i in 0..50 {
        let a = c.call(n4, "GET", &format!("/kv/get/k{i}?consistency=stale"), None);
        assert_eq!(a.body["value"], format!("v{i}"), "k{i} on node4: {:?}", a.body);
    }
    c.kill(0);
    let cl = client(&c, &[1, n4]);
    cl.put("after", "node1 died").expect("a quorum of node2 and node4 commits");
    assert_eq!(cl.get("after").expect("get").as_deref(), Some("node1 died"));
    assert!(c.node_status(n4).is_some_and(|s| s.voters.contains_key("node4")));
}

/// A leader that receives SIGTERM hands its leadership over before it exits (thesis §3.10);
/// `POST /cluster/leader` moves it on request; a leader can remove itself (§4.2.2).
#[test]
fn transfer_and_remove_the_leader() {
    let mut c = cluster("transfer");
    let first = leader(&c, &c.all());
    let cl = client(&c, &[0, 1, 2]);
    cl.put("a", "1").expect("put");
    let target = (first + 1) % 3;
    let t = cl.transfer_leader(Some(&c.nodes[target].id)).expect("transfer");
    assert_eq!(t.leader, c.nodes[target].id);
    assert_eq!(leader(&c, &c.all()), target);
    let missing = cl.transfer_leader(Some("nobody"));
    assert!(matches!(missing, Err(Error::NotFound(_))), "{missing:?}");
    cl.put("b", "2").expect("writes go on under the new leader");

    // SIGTERM of the leader: it hands over first (its log says so), a new leader takes over.
    let old = leader(&c, &c.all());
    assert_eq!(c.terminate(old, Duration::from_secs(10)), Some(0), "clean exit");
    let log = std::fs::read_to_string(c.log_path(old)).unwrap_or_default();
    assert!(log.contains("handed its leadership to"), "no transfer in the log:\n{log}");
    let others: Vec<usize> = c.all().into_iter().filter(|&i| i != old).collect();
    leader(&c, &others);
    c.restart(old).expect("restart");

    // The leader removes itself: it steps down once that commits, and the rest go on.
    let lead = leader(&c, &c.all());
    let id = c.nodes[lead].id.clone();
    let before = cl.members();
    cl.remove_member(&id, false)
        .unwrap_or_else(|e| panic!("remove the leader {id}: {e}; members {before:?}"));
    let rest: Vec<usize> = c.all().into_iter().filter(|&i| i != lead).collect();
    let new = leader(&c, &rest);
    assert_ne!(new, lead);
    assert!(eventually(Duration::from_secs(10), || {
        c.node_status(lead).is_some_and(|s| s.member_state == "removed" && !s.is_leader)
    }));
    let cl = client(&c, &rest);
    cl.put("c", "3").expect("the remaining two commit");
    // Left running, the removed node causes no leader change.
    let term = c.node_status(new).map(|s| s.term);
    for _ in 0..10 {
        cl.put("d", "4").expect("put");
    }
    // An observation window (not a timing assertion): several election timeouts pass.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(c.node_status(new).map(|s| (s.term, s.is_leader)), term.map(|t| (t, true)));
}

/// Quorum lost for good (README "When a quorum is lost for good"): node2 and node3 are gone;
/// node1 restarts with `--force-new-cluster` as the only voter of a new cluster, keeps every
/// acknowledged write, says so loudly, refuses the old members' messages (another cluster id),
/// and grows again with a fresh member through `--join`. The flag is refused where it makes no
/// sense.
#[test]
fn force_a_survivor_into_a_new_cluster() {
    let mut c = cluster("force");
    leader(&c, &c.all());
    let cl = client(&c, &[0, 1, 2]);
    for i in 0..30 {
        cl.put(&format!("k{i}"), &format!("v{i}")).expect("put");
    }
    let old_id = c.cluster_id().to_string();
    for i in c.all() {
        c.kill(i);
    }

    c.args_mut(0).push("--force-new-cluster".into());
    c.restart(0).expect("restart node1 forced");
    assert_eq!(leader(&c, &[0]), 0, "the survivor leads alone");
    let status = c.node_status(0).expect("status");
    assert_eq!(status.voters.keys().collect::<Vec<_>>(), vec!["node1"]);
    assert!(status.learners.is_empty());
    assert_ne!(status.cluster_id, old_id, "a new cluster id");
    let log = std::fs::read_to_string(c.log_path(0)).unwrap_or_default();
    assert!(log.contains("--force-new-cluster: this node is now the ONLY voter"), "{log}");
    let solo = client(&c, &[0]);
    for i in 0..30 {
        assert_eq!(solo.get(&format!("k{i}")).expect("get"), Some(format!("v{i}")), "k{i}");
    }
    solo.put("after", "force").expect("a write commits on the one-node cluster");

    // An old member back with its old data is another cluster: refused, no term change.
    c.restart(1).expect("restart node2 with its old data");
    let term = c.node_status(0).map(|s| s.term);
    assert!(eventually(Duration::from_secs(10), || {
        let log = std::fs::read_to_string(c.log_path(0)).unwrap_or_default();
        log.contains("REFUSING peer requests from \"node2\"")
    }));
    solo.put("still", "leader").expect("put");
    // An observation window (not a timing assertion): several election timeouts pass.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(c.node_status(0).map(|s| (s.term, s.is_leader)), term.map(|t| (t, true)));
    c.kill(1);

    // Restarted without the flag, it stays what it became.
    assert_eq!(c.terminate(0, Duration::from_secs(10)), Some(0));
    c.args_mut(0).retain(|a| a != "--force-new-cluster");
    c.restart(0).expect("restart node1");
    assert_eq!(leader(&c, &[0]), 0);
    let again = c.node_status(0).expect("status");
    assert_eq!(again.cluster_id, status.cluster_id, "the new id is kept");
    assert_eq!(solo.get("after").expect("get"), Some("force".into()));

    // It grows again: a fresh node joins with the new cluster id.
    c.set_cluster_id(status.cluster_id.clone());
    let n4 = c.add_joining_node().expect("start node4");
    solo.add_and_promote(&c.nodes[n4].id, &c.nodes[n4].addr, Duration::from_secs(20))
        .expect("node4 joins and is promoted");
    let both = client(&c, &[0, n4]);
    both.put("grown", "2").expect("the two-voter cluster commits");
    assert!(eventually(Duration::from_secs(10), || {
        c.node_status(n4).is_some_and(|s| s.voters.len() == 2 && s.last_applied >= s.commit_index)
    }));

    // Bad uses of the flag: no data dir, or one with nothing in it.
    let bin = env!("CARGO_BIN_EXE_raftlabkv-server");
    let empty = c.work_dir().join("empty-dir");
    for (args, expect) in [
        (vec!["--id", "x", "--in-memory", "--force-new-cluster"], "in-memory"),
        (
            vec!["--id", "x", "--addr", "127.0.0.1:1", "--force-new-cluster", "--data-dir"],
            "no configuration",
        ),
    ] {
        let mut cmd = std::process::Command::new(bin);
        cmd.args(&args);
        if args.last() == Some(&"--data-dir") {
            cmd.arg(&empty);
        }
        let out = cmd.output().expect("run the server");
        let text = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{args:?} must fail: {text}");
        assert!(text.contains(expect), "{args:?}: {text}");
    }
}
