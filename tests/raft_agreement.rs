//! MIT 6.5840 lab 3B, on the simulated cluster: log replication (§5.3, §5.4), with the lab's
//! numeric bars on RPCs and a test of fast backtracking over a long divergent log.
//!
//! Indexes differ from the lab's by the no-op entry every new leader appends (§8), so tests
//! compare with the indexes `one()` returns rather than with constants.

use std::collections::BTreeMap;

use raftlabkv::raft::NodeId;
use raftlabkv::sim::{SimCluster, TICK_MS, secs, seed_from_env};

/// The lab tester's (generous) election timeout, used for its sleeps: 1 s.
const ELECTION_TIMEOUT: u64 = 1000 / TICK_MS;

fn cmd(i: u64) -> Vec<u8> {
    format!("cmd-{i}").into_bytes()
}

/// A fresh random command from the cluster's RNG (the lab's `rand.Int()`).
fn rcmd(c: &mut SimCluster) -> Vec<u8> {
    format!("r{}", c.rand(1 << 48)).into_bytes()
}

/// Every node, reconnected, agrees on a new command (how every test ends).
fn heal_and_agree(c: &mut SimCluster, command: Vec<u8>) -> u64 {
    c.heal();
    let n = c.ids.len();
    c.one(command, n, true)
}

/// How many times `command` appears in what `id` applied.
fn times_applied(c: &SimCluster, id: &NodeId, command: &[u8]) -> usize {
    c.applied(id).map_or(0, |log| log.values().filter(|v| v.as_slice() == command).count())
}

/// §5.3: commands proposed to the leader are committed, in order, on every node.
#[test]
fn basic_agreement() {
    let mut c = SimCluster::new(3, seed_from_env(10));
    c.check_one_leader(secs(5.0));
    // Index 1 is the cluster's first configuration (written by every member when it bootstraps),
    // index 2 the leader's no-op; our commands follow them.
    let mut last = 2;
    for i in 1..=3 {
        let (n, _) = c.n_committed(c.max_committed() + 1);
        assert_eq!(n, 0, "committed before proposed");
        let index = c.one(cmd(i), 3, false);
        assert_eq!(index, last + 1, "commands should take consecutive indexes");
        last = index;
    }
}

/// §5.3 (TestFollowerFailure3B): the leader and one follower keep agreeing without the third
/// node; with every follower gone, nothing commits.
#[test]
fn agreement_survives_a_failed_follower_but_not_two() {
    let mut c = SimCluster::new(3, seed_from_env(11));
    let i1 = c.one(cmd(101), 3, false);
    assert_eq!(c.n_committed(i1).0, 3);

    let leader1 = c.check_one_leader(secs(5.0));
    c.disconnect(&c.next_id(&leader1, 1));
    c.one(cmd(102), 2, false);
    c.run(ELECTION_TIMEOUT);
    let i3 = c.one(cmd(103), 2, false);

    let leader2 = c.check_one_leader(secs(5.0));
    c.disconnect(&c.next_id(&leader2, 1));
    c.disconnect(&c.next_id(&leader2, 2));
    let (index, _) = c.propose(&leader2, cmd(104)).expect("leader rejected the proposal");
    assert_eq!(index, i3 + 1, "seed {}", c.seed);
    c.run(2 * ELECTION_TIMEOUT);
    assert_eq!(c.n_committed(index).0, 0, "committed without a majority (seed {})", c.seed);
    assert_eq!(c.max_committed(), i3, "seed {}", c.seed);

    heal_and_agree(&mut c, cmd(105));
}

/// §5.2/§5.3 (TestLeaderFailure3B): the followers elect a new leader and keep agreeing when the
/// leader goes; with the second leader gone too, a lone node commits nothing.
#[test]
fn agreement_survives_a_failed_leader_but_not_two() {
    let mut c = SimCluster::new(3, seed_from_env(12));
    c.one(cmd(101), 3, false);

    let leader1 = c.check_one_leader(secs(5.0));
    c.disconnect(&leader1);
    c.one(cmd(102), 2, false);
    c.run(ELECTION_TIMEOUT);
    let i3 = c.one(cmd(103), 2, false);

    let leader2 = c.check_one_leader(secs(5.0));
    c.disconnect(&leader2);
    for id in c.ids.clone() {
        c.propose(&id, cmd(104));
    }
    c.run(2 * ELECTION_TIMEOUT);
    assert_eq!(c.max_committed(), i3, "committed without a majority (seed {})", c.seed);

    heal_and_agree(&mut c, cmd(105));
}

/// §5.3 (TestFailAgree3B): a follower that was disconnected while the others agreed catches up
/// once it reconnects, and the full cluster keeps agreeing.
#[test]
fn a_reconnected_follower_catches_up() {
    let mut c = SimCluster::new(3, seed_from_env(13));
    c.one(cmd(101), 3, false);

    let leader = c.check_one_leader(secs(5.0));
    let follower = c.next_id(&leader, 1);
    c.disconnect(&follower);
    c.one(cmd(102), 2, false);
    c.one(cmd(103), 2, false);
    c.run(ELECTION_TIMEOUT);
    c.one(cmd(104), 2, false);
    let i5 = c.one(cmd(105), 2, false);

    c.connect(&follower);
    c.one(cmd(106), 3, true);
    c.run(ELECTION_TIMEOUT);
    c.one(cmd(107), 3, true);
    assert_eq!(c.applied(&follower).unwrap().get(&i5), Some(&cmd(105)), "seed {}", c.seed);
}

/// §5.3 (TestFailNoAgree3B): with 3 of 5 followers gone the leader accepts a proposal but cannot
/// commit it; once they are back, agreement resumes at a later index.
#[test]
fn no_agreement_without_a_majority() {
    let mut c = SimCluster::new(5, seed_from_env(14));
    let i1 = c.one(cmd(10), 5, false);

    let leader = c.check_one_leader(secs(5.0));
    for k in 1..=3 {
        c.disconnect(&c.next_id(&leader, k));
    }
    let (index, _) = c.propose(&leader, cmd(20)).expect("leader rejected the proposal");
    assert_eq!(index, i1 + 1, "seed {}", c.seed);
    c.run(2 * ELECTION_TIMEOUT);
    assert_eq!(c.n_committed(index).0, 0, "committed without a majority (seed {})", c.seed);

    for k in 1..=3 {
        c.connect(&c.next_id(&leader, k));
    }
    // The majority may have elected a leader of its own and forgotten `index`; either way the
    // next command lands after the last committed one.
    let leader2 = c.check_one_leader(secs(5.0));
    let (index2, _) = c.propose(&leader2, cmd(30)).expect("leader2 rejected the proposal");
    assert!(index2 > i1, "unexpected index {index2} (seed {})", c.seed);

    c.one(cmd(1000), 5, true);
}

/// §5.3 (TestConcurrentStarts3B): proposals made at the same time in one term all commit, in
/// some order, each exactly once.
#[test]
fn concurrent_proposals_in_one_term_each_commit_exactly_once() {
    let mut c = SimCluster::new(3, seed_from_env(15));
    let mut success = false;
    'tries: for attempt in 0..5 {
        if attempt > 0 {
            c.run(secs(3.0));
        }
        let leader = c.check_one_leader(secs(5.0));
        let Some((_, term)) = c.propose(&leader, cmd(1)) else {
            continue;
        };
        let mut indexes = Vec::new();
        for i in 0..5 {
            match c.propose(&leader, cmd(100 + i)) {
                Some((index, t)) if t == term => indexes.push(index),
                _ => continue 'tries,
            }
        }
        for &index in &indexes {
            if c.wait(index, 3, secs(5.0)).is_none() {
                continue 'tries;
            }
        }
        if c.ids.iter().any(|id| c.node(id).unwrap().term() != term) {
            continue;
        }
        for id in &c.ids {
            for i in 0..5 {
                assert_eq!(times_applied(&c, id, &cmd(100 + i)), 1, "{id}, cmd {i}");
            }
        }
        success = true;
        break;
    }
    assert!(success, "term changed too often (seed {})", c.seed);
}

/// §5.3/§5.4 (TestRejoin3B): a leader partitioned with uncommitted entries rejoins, loses the
/// election to a node with a more up-to-date log, and has its conflicting entries replaced.
#[test]
fn a_rejoining_partitioned_leader_discards_its_uncommitted_entries() {
    let mut c = SimCluster::new(3, seed_from_env(16));
    c.one(cmd(101), 3, true);

    let leader1 = c.check_one_leader(secs(5.0));
    c.disconnect(&leader1);
    for i in [102, 103, 104] {
        c.propose(&leader1, cmd(i)).expect("the old leader still believes it leads");
    }
    c.one(cmd(103), 2, true);

    let leader2 = c.check_one_leader(secs(5.0));
    c.disconnect(&leader2);
    c.connect(&leader1);
    c.one(cmd(104), 2, true);

    c.connect(&leader2);
    c.one(cmd(105), 3, true);
    for id in &c.ids {
        assert_eq!(times_applied(&c, id, &cmd(102)), 0, "{id} applied an uncommitted entry");
    }
}

/// §5.3, end (TestBackup3B): a leader backs up quickly over incorrect follower logs — 50
/// uncommitted entries on a stale leader in a minority, 50 committed by the majority, twice over —
/// thanks to the conflict-term hint, which skips a whole term per rejection.
#[test]
fn a_leader_backs_up_quickly_over_incorrect_follower_logs() {
    let mut c = SimCluster::new(5, seed_from_env(17));
    let cmd0 = rcmd(&mut c);
    c.one(cmd0, 5, true);

    // The leader and one follower in a partition.
    let leader1 = c.check_one_leader(secs(5.0));
    for k in 2..=4 {
        c.disconnect(&c.next_id(&leader1, k));
    }
    // Lots of commands that won't commit.
    for _ in 0..50 {
        let x = rcmd(&mut c);
        c.propose(&leader1, x);
    }
    c.run(ELECTION_TIMEOUT / 2);
    c.disconnect(&leader1);
    c.disconnect(&c.next_id(&leader1, 1));

    // The other partition recovers and commits lots.
    for k in 2..=4 {
        c.connect(&c.next_id(&leader1, k));
    }
    for _ in 0..50 {
        let x = rcmd(&mut c);
        c.one(x, 3, true);
    }

    // Now another partitioned leader and one follower; lots more that won't commit.
    let leader2 = c.check_one_leader(secs(5.0));
    let mut other = c.next_id(&leader1, 2);
    if leader2 == other {
        other = c.next_id(&leader2, 1);
    }
    c.disconnect(&other);
    for _ in 0..50 {
        let x = rcmd(&mut c);
        c.propose(&leader2, x);
    }
    c.run(ELECTION_TIMEOUT / 2);

    // Bring the original leader back to life, with `other`.
    for id in c.ids.clone() {
        c.disconnect(&id);
    }
    c.connect(&leader1);
    c.connect(&c.next_id(&leader1, 1));
    c.connect(&other);
    let (t0, rejections0) = (c.now, total(&c.append_rejections));
    for _ in 0..50 {
        let x = rcmd(&mut c);
        c.one(x, 3, true);
    }

    // Now everyone.
    for id in c.ids.clone() {
        c.connect(&id);
    }
    let x = rcmd(&mut c);
    c.one(x, 5, true);
    let (elapsed, rejections) = (c.now - t0, total(&c.append_rejections) - rejections0);
    eprintln!("backup: {rejections} rejections, {elapsed} ticks");
    // Backing up one entry per rejection would take 50+ rejections per follower.
    assert!(rejections <= 20, "{rejections} rejections to repair the logs (seed {})", c.seed);
    assert!(elapsed <= secs(10.0), "{elapsed} ticks to repair the logs (seed {})", c.seed);
}

fn total(counts: &BTreeMap<(NodeId, NodeId), u64>) -> u64 {
    counts.values().sum()
}

/// §5.3 with batching (TestCount3B, middle part): agreeing on `iters` commands in one term takes
/// at most (iters + 1 + 3) * 3 RPCs — and, stricter, each entry is carried to each follower
/// exactly once.
#[test]
fn each_entry_is_sent_to_each_follower_once() {
    let mut c = SimCluster::new(3, seed_from_env(18));
    let iters = 10;
    let mut success = false;
    'tries: for attempt in 0..5 {
        if attempt > 0 {
            c.run(secs(3.0));
        }
        let leader = c.check_one_leader(secs(5.0));
        c.run(secs(0.2)); // let the no-op settle so it is not counted below
        let (rpcs0, sent0) = (c.rpcs, c.entries_sent.clone());
        let Some((start, term)) = c.propose(&leader, cmd(1)) else {
            continue;
        };
        let mut cmds = Vec::new();
        for i in 1..iters + 2 {
            let x = rcmd(&mut c);
            match c.propose(&leader, x.clone()) {
                Some((index, t)) if t == term => assert_eq!(index, start + i),
                _ => continue 'tries,
            }
            cmds.push(x);
        }
        for (i, x) in cmds.iter().enumerate() {
            match c.wait(start + 1 + i as u64, 3, secs(5.0)) {
                Some(got) => assert_eq!(&got, x, "wrong value at {}", start + 1 + i as u64),
                None => continue 'tries,
            }
        }
        if c.ids.iter().any(|id| c.node(id).unwrap().term() != term) {
            continue;
        }
        let rpcs = c.rpcs - rpcs0;
        assert!(rpcs <= (iters + 1 + 3) * 3, "{rpcs} RPCs for {iters} entries (seed {})", c.seed);
        for id in c.ids.iter().filter(|id| **id != leader) {
            let link = (leader.clone(), id.clone());
            let sent = c.entries_sent[&link] - sent0.get(&link).copied().unwrap_or(0);
            assert_eq!(sent, iters + 2, "entries sent to {id} (seed {})", c.seed);
        }
        success = true;
        break;
    }
    assert!(success, "term changed too often (seed {})", c.seed);
}

/// §5.3, end: a follower 1,000 entries behind whose last 1,000 entries conflict with the leader's
/// catches up in a handful of round trips: one rejection to learn its log is short, one to skip
/// its whole conflicting term, then the missing entries in large batches.
#[test]
fn a_divergent_follower_1000_entries_behind_catches_up_in_a_few_round_trips() {
    divergent_follower_catches_up(1, seed_from_env(19));
}

/// [`a_divergent_follower_1000_entries_behind_catches_up_in_a_few_round_trips`] with a pipelining
/// window of 4: the new leader probes the follower one request at a time until it matches (a
/// window of guesses would be rejected wholesale), and a rejection answering a request already
/// corrected is ignored, so the bars on rejections and entries resent are the same.
#[test]
fn a_divergent_follower_catches_up_as_fast_with_a_pipelining_window() {
    divergent_follower_catches_up(4, seed_from_env(19));
}

fn divergent_follower_catches_up(window: usize, seed: u64) {
    let mut c = SimCluster::with_config(5, seed, move |c| c.max_inflight = window);
    c.one(cmd(0), 5, false);

    // The leader and follower `f` alone: 1,000 entries reach `f` but cannot commit.
    let leader1 = c.check_one_leader(secs(5.0));
    let f = c.next_id(&leader1, 1);
    let majority: Vec<NodeId> = (2..=4).map(|k| c.next_id(&leader1, k)).collect();
    c.partition(&[vec![leader1.clone(), f.clone()], majority.clone()]);
    for i in 0..1000 {
        c.propose(&leader1, cmd(10_000 + i)).expect("still leading");
    }
    let last1 = c.node(&leader1).unwrap().log().last_index();
    assert!(c.run_until(secs(1.0), |c| c.node(&f).unwrap().log().last_index() == last1));
    c.crash(&leader1);
    c.crash(&f);

    // The majority commits 2,000 entries of its own.
    let leader2 = c.check_one_leader(secs(5.0));
    let mut last2 = 0;
    for i in 0..2000 {
        last2 = c.propose(&leader2, cmd(20_000 + i)).expect("leading").0;
    }
    assert!(c.wait(last2, 3, secs(5.0)).is_some(), "seed {}", c.seed);
    let behind = last2 - last1;
    assert!(behind >= 1000, "only {behind} entries behind");

    // `f` comes back just as the majority leader dies: the next leader knows nothing of it.
    c.crash(&leader2);
    c.heal();
    c.start(&f);
    let to_f = |c: &SimCluster, counts: &BTreeMap<(NodeId, NodeId), u64>| -> u64 {
        c.ids.iter().filter_map(|from| counts.get(&(from.clone(), f.clone()))).sum()
    };
    let (rejections0, entries0) = (total(&c.append_rejections), to_f(&c, &c.entries_sent));
    let caught_up = c.run_until(secs(5.0), |c| {
        let target = c.max_committed();
        c.n_committed(target).0 >= 3 && c.applied(&f).is_some_and(|a| a.contains_key(&target))
    });
    assert!(caught_up, "{f} did not catch up (seed {})", c.seed);
    let rejections = total(&c.append_rejections) - rejections0;
    let entries = to_f(&c, &c.entries_sent) - entries0;
    let diverged = c.max_committed() - 2; // everything after the first leader's no-op and cmd(0)
    eprintln!("{rejections} rejections, {entries} entries sent for {diverged} needed");
    assert!(rejections <= 4, "{rejections} rejections to catch up (seed {})", c.seed);
    assert!(
        entries <= 2 * diverged,
        "{entries} entries sent to repair {diverged} (seed {})",
        c.seed
    );

    c.start(&leader1);
    c.start(&leader2);
    c.one(cmd(1), 5, true);
}

/// A batch of proposals (what the server makes of many clients writing at once) is one log append
/// and one round of AppendEntries: its commands take consecutive indexes in order and commit on
/// every node exactly as single proposals would; a command refused alone (empty) takes no index
/// and does not stop the rest; a follower refuses the whole batch.
#[test]
fn a_batch_of_proposals_commits_in_order_as_one_append() {
    let mut c = SimCluster::new(3, seed_from_env(21));
    let mut success = false;
    'tries: for attempt in 0..5 {
        if attempt > 0 {
            c.run(secs(3.0));
        }
        let leader = c.check_one_leader(secs(5.0));
        c.run(secs(0.2)); // the no-op settles first
        let follower = c.next_id(&leader, 1);
        assert!(
            c.propose_batch(&follower, vec![cmd(1)]).is_none(),
            "a follower placed a batch (seed {})",
            c.seed
        );
        let before = c.node(&leader).unwrap().storage().write_seq();
        let last = c.node(&leader).unwrap().storage().last_index();
        let sent0 = c.entries_sent.clone();
        let batch = vec![cmd(201), cmd(202), Vec::new(), cmd(203)];
        let Some((term, placed)) = c.propose_batch(&leader, batch) else { continue };
        assert_eq!(placed.len(), 4);
        assert_eq!(placed[0].as_ref().ok(), Some(&(last + 1)), "seed {}", c.seed);
        assert_eq!(placed[1].as_ref().ok(), Some(&(last + 2)), "seed {}", c.seed);
        assert!(placed[2].is_err(), "an empty command was placed (seed {})", c.seed);
        assert_eq!(placed[3].as_ref().ok(), Some(&(last + 3)), "seed {}", c.seed);
        let writes = c.node(&leader).unwrap().storage().write_seq() - before;
        assert_eq!(
            writes, 1,
            "a batch of 3 commands took {writes} storage writes (seed {})",
            c.seed
        );
        for (i, want) in [cmd(201), cmd(202), cmd(203)].iter().enumerate() {
            match c.wait(last + 1 + i as u64, 3, secs(5.0)) {
                Some(got) => {
                    assert_eq!(&got, want, "wrong value at {} (seed {})", last + 1, c.seed)
                }
                None => continue 'tries,
            }
        }
        if c.ids.iter().any(|id| c.node(id).unwrap().term() != term) {
            continue;
        }
        // Each follower was sent each entry of the batch once.
        for id in c.ids.iter().filter(|id| **id != leader) {
            let link = (leader.clone(), id.clone());
            let sent = c.entries_sent[&link] - sent0.get(&link).copied().unwrap_or(0);
            assert_eq!(sent, 3, "entries sent to {id} (seed {})", c.seed);
        }
        for id in &c.ids {
            for i in 201..=203 {
                assert_eq!(times_applied(&c, id, &cmd(i)), 1, "{id}, cmd {i} (seed {})", c.seed);
            }
        }
        success = true;
        break;
    }
    assert!(success, "term changed too often (seed {})", c.seed);
}
