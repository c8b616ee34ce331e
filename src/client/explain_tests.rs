//! Each sentence of [`explain`], from constructed statuses; and the status table.

use super::*;
use crate::api::PeerReplication;
use crate::client::status_table::{rows, table};

const REFUSED: &str = "unavailable: 127.0.0.1:8082: Connection Failed: Connect error: \
                       Connection refused (os error 111)";
const TIMEOUT: &str = "unavailable: 127.0.0.1:8081: Network Error: timed out reading response";

fn addr(id: &str) -> String {
    format!("127.0.0.1:808{}", &id[4..])
}

/// `id` at `term`, following `leader` (itself: the leader), in a cluster of voters node1..=n,
/// with its log at index 10, all of it applied.
fn node(id: &str, term: u64, leader: Option<&str>, n: usize) -> Status {
    let mut s: Status = serde_json::from_value(serde_json::json!({
        "id": id, "isLeader": leader == Some(id), "term": term,
        "role": if leader == Some(id) { "leader" } else { "follower" },
        "commitIndex": 10, "lastApplied": 10, "lastLogIndex": 10,
    }))
    .expect("a status");
    s.leader = leader.map(str::to_string);
    s.member_state = "voter".into();
    s.config_index = 1;
    s.voters = (1..=n).map(|i| (format!("node{i}"), addr(&format!("node{i}")))).collect();
    s
}

fn ok(s: Status) -> (String, Reply) {
    (addr(&s.id), Ok(s))
}

fn down(id: &str, why: &str) -> (String, Reply) {
    (addr(id), Err(why.to_string()))
}

fn replicating(match_index: u64, last_contact_ms: u64) -> PeerReplication {
    PeerReplication {
        match_index,
        next_index: match_index + 1,
        state: "replicate".into(),
        inflight: 0,
        last_contact_ms,
        snapshot: None,
    }
}

fn healthy3() -> Vec<(String, Reply)> {
    let mut l = node("node1", 4, Some("node1"), 3);
    l.replication.insert("node2".into(), replicating(10, 20));
    l.replication.insert("node3".into(), replicating(10, 20));
    vec![ok(l), ok(node("node2", 4, Some("node1"), 3)), ok(node("node3", 4, Some("node1"), 3))]
}

fn one(replies: &[(String, Reply)]) -> String {
    let out = explain(replies);
    assert_eq!(out.len(), 1, "{out:#?}");
    out[0].clone()
}

#[test]
fn a_healthy_cluster_is_all_healthy() {
    assert_eq!(one(&healthy3()), "all healthy: node1 leads term 4; 3 of 3 voters up to date");
}

#[test]
fn learners_are_named_and_do_not_count_as_voters() {
    let mut all = healthy3();
    let mut learner = node("node4", 4, Some("node1"), 3);
    learner.member_state = "learner".into();
    for (_, r) in all.iter_mut() {
        if let Ok(s) = r {
            s.learners.insert("node4".into(), addr("node4"));
        }
    }
    all.push(ok(learner.clone()));
    let text = one(&all);
    assert!(
        text.starts_with("all healthy: node1 leads term 4; 3 of 3 voters up to date"),
        "{text}"
    );
    assert!(text.contains("learner node4 is up to date"), "{text}");

    // A learner far behind lags (and is called a learner); one that is down is not a voter down.
    learner.last_applied = 5_010;
    let Ok(l) = &mut all[0].1 else { panic!() };
    l.last_log_index = 123_456;
    l.last_applied = 123_456;
    for (_, r) in all.iter_mut().take(3) {
        if let Ok(s) = r {
            s.last_applied = 123_456;
        }
    }
    all[3] = ok(learner);
    assert_eq!(
        one(&all),
        "learner node4 lags the leader by 118,446 entries and is catching up; if the lag keeps \
         growing, look at its disk and its link to node1"
    );
    all[3] = down("node4", REFUSED);
    let text = one(&all);
    assert!(text.starts_with("all healthy"), "{text}");
}

#[test]
fn nothing_reachable_says_why_each_server_failed() {
    let all = vec![down("node1", REFUSED), down("node2", REFUSED), down("node3", TIMEOUT)];
    assert_eq!(
        one(&all),
        "nothing is reachable: none of the 3 servers answered (127.0.0.1:8081 and \
         127.0.0.1:8082 refuse connections; 127.0.0.1:8083 does not answer in time); check that \
         the servers run and that --servers names them"
    );
    assert!(one(&[]).starts_with("nothing to ask"));
    let other = vec![("h:1".to_string(), Err("bad_request: bad server address".to_string()))];
    assert!(one(&other).contains("h:1 failed: bad_request: bad server address"));
}

#[test]
fn no_quorum_counts_the_reachable_voters() {
    let all = vec![ok(node("node1", 5, None, 3)), down("node2", REFUSED), down("node3", REFUSED)];
    assert_eq!(
        one(&all),
        "no leader: only 1 of 3 voters is reachable (node2 and node3 refuse connections); a \
         quorum needs 2: bring back 1 more voter to elect one"
    );
    // Five voters, two reachable: three more voters needed? No: a quorum of 3 needs 1 more.
    let all = vec![
        ok(node("node1", 5, None, 5)),
        ok(node("node2", 5, None, 5)),
        down("node3", REFUSED),
        down("node4", TIMEOUT),
    ];
    assert_eq!(
        one(&all),
        "no leader: only 2 of 5 voters are reachable (node3 refuses connections; node4 does not \
         answer in time; node5 is not in --servers); a quorum needs 3: bring back 1 more voter \
         to elect one"
    );
}

#[test]
fn no_leader_with_a_quorum_is_an_election() {
    let all = vec![
        ok(node("node1", 7, None, 3)),
        ok(node("node2", 7, None, 3)),
        ok(node("node3", 6, None, 3)),
    ];
    let text = one(&all);
    assert!(text.starts_with("no leader: 3 of 3 voters are reachable"), "{text}");
    assert!(text.contains("highest term 7"), "{text}");
    // A leader whose term the others passed is not the leader any more.
    let all = vec![
        ok(node("node1", 5, Some("node1"), 3)),
        ok(node("node2", 6, None, 3)),
        ok(node("node3", 6, None, 3)),
    ];
    let text = one(&all);
    assert!(text.starts_with("no leader: node1 thinks it leads term 5"), "{text}");
}

#[test]
fn a_partitioned_old_leader_is_cut_off() {
    let mut old = node("node1", 5, Some("node1"), 3);
    old.last_applied = 8;
    let mut new = node("node2", 6, Some("node2"), 3);
    new.replication.insert("node1".into(), replicating(8, 4_200));
    new.replication.insert("node3".into(), replicating(10, 20));
    let all = vec![ok(old.clone()), ok(new.clone()), ok(node("node3", 6, Some("node2"), 3))];
    assert_eq!(
        one(&all),
        "node1 is cut off: it thinks it leads term 5, but node2 leads term 6 with 2 of 3 voters \
         and lags by 2 entries; check its network (it cannot commit anything, and steps down \
         once it hears from node2)"
    );
    // Once it has stepped down (check quorum), it knows no leader.
    old.is_leader = false;
    old.leader = None;
    let all = vec![ok(old), ok(new), ok(node("node3", 6, Some("node2"), 3))];
    assert_eq!(
        one(&all),
        "node1 is cut off: it is at term 5 and knows no leader, while node2 leads term 6 with 2 \
         of 3 voters and lags by 2 entries; check its network (it catches up once its links work \
         again)"
    );
}

#[test]
fn a_killed_minority_leaves_no_margin() {
    let mut all = healthy3();
    all[2] = down("node3", REFUSED);
    assert_eq!(
        one(&all),
        "1 of 3 voters is down (node3 refuses connections); the cluster has a quorum but cannot \
         lose another: restart it, or replace it (member remove, member add)"
    );
    // Five voters, one down: one more may go.
    let mut l = node("node1", 4, Some("node1"), 5);
    l.replication.insert("node5".into(), replicating(10, 20));
    let mut all = vec![ok(l)];
    for i in 2..=4 {
        all.push(ok(node(&format!("node{i}"), 4, Some("node1"), 5)));
    }
    all.push(down("node5", TIMEOUT));
    assert_eq!(
        one(&all),
        "1 of 5 voters is down (node5 does not answer in time); the cluster has a quorum and can \
         lose 1 more: restart it, or replace it (member remove, member add)"
    );
    // A leader left alone, before check quorum steps it down: nothing commits.
    let mut all = healthy3();
    all[1] = down("node2", REFUSED);
    all[2] = down("node3", REFUSED);
    assert_eq!(
        one(&all),
        "2 of 3 voters are down (node2 and node3 refuse connections); 1 of 3 voters follows \
         node1, short of the 2 a quorum needs, so nothing commits: restart them, or replace them \
         (member remove, member add)"
    );
}

#[test]
fn a_follower_being_sent_a_snapshot_shows_its_progress() {
    let mut all = healthy3();
    let Ok(l) = &mut all[0].1 else { panic!() };
    l.last_log_index = 48_130;
    l.last_applied = 48_130;
    let mut p = replicating(3, 30);
    p.state = "snapshot".into();
    p.snapshot = Some(SnapshotTransfer { index: 48_000, bytes_done: 610, bytes_total: 1000 });
    l.replication.insert("node3".into(), p);
    if let Ok(s) = &mut all[1].1 {
        s.last_applied = 48_130;
    }
    assert_eq!(
        one(&all),
        "node3 lags the leader by 48,120 entries and is being sent a snapshot (61%): it catches \
         up when the transfer ends"
    );
    // The follower's own side tells the same when the leader does not list the transfer.
    let Ok(l) = &mut all[0].1 else { panic!() };
    l.replication.insert("node3".into(), replicating(3, 30));
    let Ok(f) = &mut all[2].1 else { panic!() };
    f.snapshot_receiving = Some(SnapshotTransfer { index: 48_000, bytes_done: 0, bytes_total: 0 });
    assert!(one(&all).contains("being sent a snapshot (0%)"));
    // A restarted follower receiving chunks may not know the leader yet: still being caught
    // up, not cut off; and what it received is the figure (the sender's runs ahead).
    let Ok(f) = &mut all[2].1 else { panic!() };
    f.leader = None;
    f.snapshot_receiving =
        Some(SnapshotTransfer { index: 48_000, bytes_done: 250, bytes_total: 1000 });
    let Ok(l) = &mut all[0].1 else { panic!() };
    let mut p = replicating(3, 30);
    p.snapshot = Some(SnapshotTransfer { index: 48_000, bytes_done: 1000, bytes_total: 1000 });
    l.replication.insert("node3".into(), p);
    assert_eq!(
        one(&all),
        "node3 lags the leader by 48,120 entries and is being sent a snapshot (25%): it catches \
         up when the transfer ends"
    );
}

#[test]
fn a_silent_or_slow_follower_lags() {
    let mut all = healthy3();
    let Ok(l) = &mut all[0].1 else { panic!() };
    l.last_log_index = 1_010;
    l.last_applied = 1_010;
    l.replication.insert("node2".into(), replicating(1_010, 20));
    l.replication.insert("node3".into(), replicating(10, 4_200));
    if let Ok(s) = &mut all[1].1 {
        s.last_applied = 1_010;
    }
    assert_eq!(
        one(&all),
        "node3 lags the leader by 1,000 entries: node1 has not heard from it for 4.2 s; check \
         that it is not stuck and that the network between them works"
    );
    // A silent follower with no lag is still named.
    let Ok(l) = &mut all[0].1 else { panic!() };
    l.last_log_index = 10;
    l.last_applied = 10;
    if let Ok(s) = &mut all[1].1 {
        s.last_applied = 10;
    }
    assert!(one(&all).starts_with("node3 lags the leader by 0 entries: node1 has not heard"));
    // Some lag under load is normal.
    let mut all = healthy3();
    let Ok(l) = &mut all[0].1 else { panic!() };
    l.last_log_index = 10 + LAG_ENTRIES - 1;
    assert!(one(&all).starts_with("all healthy"));
}

#[test]
fn elections_that_keep_happening_name_the_slowest_disk() {
    let mut all = healthy3();
    for (i, (_, r)) in all.iter_mut().enumerate() {
        if let Ok(s) = r {
            s.leader_changes_last_minute = [7, 6, 2][i];
            s.fsync_p99_us = Some([1_200, 840_000, 300][i]);
        }
    }
    assert_eq!(
        one(&all),
        "elections keep happening: 7 leader changes in the last minute; the slowest fsync p99 \
         is 840 ms on node2; a slow disk, a paused process or a lossy network makes followers \
         give up on their leader"
    );
    for (_, r) in all.iter_mut() {
        if let Ok(s) = r {
            s.fsync_p99_us = Some(400);
        }
    }
    assert!(one(&all).contains("the slowest fsync p99 is 400 µs on node1"));
    // Two changes in a minute (a start and a failover) are not a storm.
    for (_, r) in all.iter_mut() {
        if let Ok(s) = r {
            s.leader_changes_last_minute = ELECTIONS_PER_MINUTE - 1;
        }
    }
    assert!(one(&all).starts_with("all healthy"));
}

#[test]
fn a_removed_node_that_still_runs_is_named() {
    let mut all = healthy3();
    let mut gone = node("node4", 4, None, 3);
    gone.member_state = "removed".into();
    all.push(ok(gone));
    assert_eq!(one(&all), "node4 was removed from the cluster and still runs: stop it");
}

#[test]
fn numbers_get_thousands_separators() {
    for (n, text) in [
        (0, "0"),
        (7, "7"),
        (999, "999"),
        (1_000, "1,000"),
        (48_120, "48,120"),
        (1_234_567, "1,234,567"),
        (u64::MAX, "18,446,744,073,709,551,615"),
    ] {
        assert_eq!(thousands(n), text);
    }
    assert_eq!(millis(840), "840 ms");
    assert_eq!(millis(4_250), "4.2 s");
}

#[test]
fn failures_are_sorted_by_what_to_do() {
    assert_eq!(Failure::of(REFUSED), Failure::Refused);
    assert_eq!(Failure::of(TIMEOUT), Failure::Timeout);
    assert_eq!(Failure::of("Dns Failed: failed to lookup address").short(), "unknown host");
    assert_eq!(Failure::of(" internal: boom ").short(), "internal: boom");
}

#[test]
fn the_table_has_a_row_per_server_with_lag_and_errors() {
    let mut all = healthy3();
    let Ok(l) = &mut all[0].1 else { panic!() };
    l.last_log_index = 15;
    l.replication.insert("node3".into(), replicating(12, 20));
    all[2] = down("node3", REFUSED);
    let rows = rows(&all);
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].lag, Some(5), "the leader's own applied index trails its log");
    assert_eq!(rows[1].lag, Some(5), "from the follower's applied index");
    assert_eq!(rows[2].lag, Some(3), "from the leader's match index");
    assert_eq!(rows[2].id.as_deref(), Some("node3"));
    assert_eq!(rows[2].errors.as_deref(), Some("connection refused"));
    let text = table(&rows);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    for column in ["ENDPOINT", "ID", "LEADER", "TERM", "COMMIT", "APPLIED", "LAST INDEX", "LAG"] {
        assert!(lines[0].contains(column), "{text}");
    }
    assert!(lines[3].starts_with("127.0.0.1:8083  node3") && lines[3].ends_with("refused"));
    let v = serde_json::to_value(&rows[0]).expect("json");
    assert_eq!((v["lastIndex"].as_u64(), v["errors"].is_null()), (Some(15), true), "{v}");
}
