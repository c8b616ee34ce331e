//! Hand-made histories: each violation kind the checker must catch, and legal histories with
//! concurrency and unknown outcomes it must accept.

use super::*;

const BUDGET: Duration = Duration::from_secs(10);

fn op(client: u64, input: KvInput, call: u64, output: KvOutput, ret: Option<u64>) -> Operation {
    Operation { client_id: client, input, call, output, return_time: ret }
}

fn put(c: u64, k: &str, v: &str, call: u64, ret: u64) -> Operation {
    let input = KvInput::Put { key: k.into(), value: v.into() };
    op(c, input, call, KvOutput::Ok, Some(ret))
}

/// A put whose outcome the client never learned (timeout).
fn put_unknown(c: u64, k: &str, v: &str, call: u64) -> Operation {
    let input = KvInput::Put { key: k.into(), value: v.into() };
    op(c, input, call, KvOutput::Unknown, None)
}

fn append(c: u64, k: &str, v: &str, call: u64, ret: u64) -> Operation {
    let input = KvInput::Append { key: k.into(), value: v.into() };
    op(c, input, call, KvOutput::Ok, Some(ret))
}

fn delete(c: u64, k: &str, call: u64, ret: u64) -> Operation {
    op(c, KvInput::Delete { key: k.into() }, call, KvOutput::Ok, Some(ret))
}

fn get(c: u64, k: &str, v: Option<&str>, call: u64, ret: u64) -> Operation {
    let out = KvOutput::Value(v.map(str::to_string));
    op(c, KvInput::Get { key: k.into() }, call, out, Some(ret))
}

fn get_all(c: u64, kvs: &[(&str, &str)], call: u64, ret: u64) -> Operation {
    let map = kvs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    op(c, KvInput::GetAll, call, KvOutput::All(map), Some(ret))
}

fn check(ops: &[Operation]) -> Verdict {
    check_history(ops, BUDGET)
}

fn assert_illegal(ops: &[Operation], want_key: &str) -> Vec<Operation> {
    match check(ops) {
        Verdict::Illegal { key, history } => {
            assert_eq!(key, want_key);
            assert!(!history.is_empty());
            // The reported (shrunk) history must itself fail, and be a subset of the original
            // (GetAll projections aside).
            assert!(
                matches!(check(&history), Verdict::Illegal { .. }),
                "shrunk history passes: {history:?}"
            );
            history
        }
        other => panic!("expected Illegal on {want_key}, got {other:?}"),
    }
}

// ---- violations -------------------------------------------------------------------------

#[test]
fn stale_read_is_illegal() {
    // put a=1 completes, put a=2 completes, then a read still sees 1.
    let h = [put(1, "a", "1", 0, 10), put(1, "a", "2", 20, 30), get(2, "a", Some("1"), 40, 50)];
    let shrunk = assert_illegal(&h, "a");
    assert_eq!(shrunk.len(), 3, "nothing here can be dropped soundly: {shrunk:?}");
}

#[test]
fn lost_acknowledged_write_is_illegal() {
    // put a=x acknowledged; a later read returns the value from before it (absent).
    let h = [get(1, "a", None, 0, 5), put(2, "a", "x", 10, 20), get(1, "a", None, 30, 40)];
    let shrunk = assert_illegal(&h, "a");
    // The first read is irrelevant and must be shrunk away.
    assert_eq!(shrunk, vec![put(2, "a", "x", 10, 20), get(1, "a", None, 30, 40)]);
}

#[test]
fn resurrected_delete_is_illegal() {
    let h = [put(1, "a", "old", 0, 10), delete(2, "a", 20, 30), get(3, "a", Some("old"), 40, 50)];
    assert_illegal(&h, "a");
}

#[test]
fn value_never_written_is_illegal() {
    let h = [
        put(1, "a", "1", 0, 10),
        put(2, "a", "2", 5, 15),
        get(3, "a", Some("3"), 12, 20),
        get(4, "b", None, 0, 1),
    ];
    let shrunk = assert_illegal(&h, "a");
    // The lone impossible read suffices, and the trailing-write rule cannot apply (the
    // puts overlap the read), so the writes stay.
    assert!(shrunk.contains(&get(3, "a", Some("3"), 12, 20)));
    assert!(shrunk.iter().all(|o| o.input.key() == Some("a")));
}

#[test]
fn only_the_failing_key_is_reported_and_others_do_not_mask_it() {
    let mut h = Vec::new();
    for i in 0..20u64 {
        h.push(put(1, "ok", &i.to_string(), i * 10, i * 10 + 5));
    }
    h.push(put(2, "z", "1", 0, 1));
    h.push(get(2, "z", None, 2, 3));
    assert_illegal(&h, "z");
}

#[test]
fn write_order_violation_between_clients() {
    // Two sequential appends seen in the wrong order.
    let h = [append(1, "a", "x", 0, 1), append(2, "a", "y", 2, 3), get(3, "a", Some("yx"), 4, 5)];
    assert_illegal(&h, "a");
}

#[test]
fn reply_of_the_wrong_shape_is_illegal() {
    let h = [op(1, KvInput::Get { key: "a".into() }, 0, KvOutput::Ok, Some(1))];
    assert_illegal(&h, "a");
}

// ---- legal histories --------------------------------------------------------------------

#[test]
fn empty_history_is_ok() {
    assert_eq!(check(&[]), Verdict::Ok);
}

#[test]
fn concurrent_writes_and_reads_are_ok() {
    // Two overlapping puts; readers overlapping them may see either order, but must agree with
    // a single order once both are done.
    let h = [
        put(1, "a", "1", 0, 100),
        put(2, "a", "2", 10, 90),
        get(3, "a", Some("2"), 20, 30),
        get(4, "a", Some("1"), 40, 50),
        get(3, "a", Some("1"), 110, 120),
        get(4, "a", None, 0, 5),
    ];
    assert_eq!(check(&h), Verdict::Ok);
    // ... but not flip back after both completed.
    let mut bad = h.to_vec();
    bad.push(get(5, "a", Some("2"), 130, 140));
    assert_illegal(&bad, "a");
}

#[test]
fn read_concurrent_with_delete_may_see_either() {
    let h = [
        put(1, "a", "v", 0, 10),
        delete(1, "a", 20, 40),
        get(2, "a", Some("v"), 25, 30),
        get(3, "a", None, 26, 35),
        get(2, "a", None, 50, 60),
    ];
    assert_eq!(check(&h), Verdict::Ok);
}

#[test]
fn unknown_put_that_took_effect_is_ok() {
    let h = [
        put(1, "a", "1", 0, 10),
        put_unknown(2, "a", "2", 20),
        get(3, "a", Some("2"), 100, 110),
        // Once seen, it stays: the timed-out write took effect before 100.
        get(3, "a", Some("2"), 200, 210),
    ];
    assert_eq!(check(&h), Verdict::Ok);
}

#[test]
fn unknown_put_that_never_took_effect_is_ok() {
    let h = [
        put(1, "a", "1", 0, 10),
        put_unknown(2, "a", "2", 20),
        get(3, "a", Some("1"), 100, 110),
        get(3, "a", Some("1"), 200, 210),
    ];
    assert_eq!(check(&h), Verdict::Ok);
}

#[test]
fn many_unread_unknown_puts_do_not_hide_a_violation() {
    // Forty puts that timed out, none ever read back, then a lost acknowledged write. Each of them
    // may or may not have happened, so without dropping them the search would have to rule out
    // 2^40 configurations before calling the history illegal.
    let mut h: Vec<Operation> =
        (0..40).map(|i| put_unknown(i + 10, "a", &format!("u{i}"), i)).collect();
    h.push(put(1, "a", "x", 100, 110));
    h.push(get(2, "a", None, 120, 130));
    let shrunk = assert_illegal(&h, "a");
    assert_eq!(shrunk, vec![put(1, "a", "x", 100, 110), get(2, "a", None, 120, 130)]);
    // One of them read back stays, and explains a read.
    h.pop();
    h.push(get(2, "a", Some("u7"), 120, 130));
    assert_eq!(check(&h), Verdict::Ok);
}

fn delete_unknown(c: u64, k: &str, call: u64) -> Operation {
    op(c, KvInput::Delete { key: k.into() }, call, KvOutput::Unknown, None)
}

#[test]
fn many_unknown_deletes_do_not_hide_a_violation() {
    // Forty deletes that timed out: any subset of them may have happened, but they are all alike,
    // so only how many were used matters. A read of a value nobody wrote is still found quickly.
    let mut h: Vec<Operation> = (0..40).map(|i| delete_unknown(i + 10, "a", i)).collect();
    h.push(put(1, "a", "1", 100, 110));
    h.push(get(2, "a", Some("1"), 120, 130));
    h.push(get(2, "a", Some("2"), 140, 150));
    assert_illegal(&h, "a");
}

#[test]
fn unknown_deletes_are_each_used_at_most_once_and_not_before_their_call() {
    // 1, absent, 2, absent: two deletes are needed, one in each gap.
    let base = vec![
        put(1, "a", "1", 0, 10),
        get(2, "a", Some("1"), 20, 30),
        get(2, "a", None, 40, 50),
        put(1, "a", "2", 60, 70),
        get(2, "a", Some("2"), 80, 90),
        get(2, "a", None, 100, 110),
    ];
    let with = |deletes: &[u64]| {
        let mut h = base.clone();
        h.extend(
            deletes.iter().enumerate().map(|(i, &call)| delete_unknown(3 + i as u64, "a", call)),
        );
        h
    };
    assert_eq!(check(&with(&[15, 75])), Verdict::Ok);
    // Two deletes called early may serve both gaps (their outcome is unknown: any time after).
    assert_eq!(check(&with(&[5, 6])), Verdict::Ok);
    // One delete cannot serve two gaps.
    assert_illegal(&with(&[15]), "a");
    // Called after the first absent read returned: too late for it.
    assert_illegal(&with(&[55, 75]), "a");
}

#[test]
fn unknown_put_cannot_take_effect_before_its_call_or_flip_back() {
    // Seen before it was called: illegal.
    let early = [get(3, "a", Some("2"), 0, 10), put_unknown(2, "a", "2", 20)];
    assert_illegal(&early, "a");
    // Seen, then unseen with no other write: illegal.
    let flip = [
        put(1, "a", "1", 0, 10),
        put_unknown(2, "a", "2", 20),
        get(3, "a", Some("2"), 100, 110),
        get(3, "a", Some("1"), 200, 210),
    ];
    let shrunk = assert_illegal(&flip, "a");
    assert!(shrunk.contains(&put_unknown(2, "a", "2", 20)));
}

#[test]
fn unknown_outcome_with_a_return_time_counts_as_unknown() {
    // A 504 reply: the client got an answer at t=30, but the write may apply later.
    let h = [
        put(1, "a", "1", 0, 10),
        op(2, KvInput::Put { key: "a".into(), value: "2".into() }, 20, KvOutput::Unknown, Some(30)),
        get(3, "a", Some("1"), 40, 50),
        get(3, "a", Some("2"), 60, 70),
    ];
    assert_eq!(check(&h), Verdict::Ok);
}

#[test]
fn unknown_reads_are_dropped() {
    let h = [
        put(1, "a", "1", 0, 10),
        op(2, KvInput::Get { key: "a".into() }, 20, KvOutput::Unknown, None),
        op(3, KvInput::GetAll, 20, KvOutput::Unknown, None),
        get(3, "a", Some("1"), 40, 50),
    ];
    assert_eq!(check(&h), Verdict::Ok);
}

#[test]
fn appends_and_deletes_compose() {
    let h = [
        append(1, "a", "x", 0, 10),
        append(2, "a", "y", 5, 15),
        get(3, "a", Some("xy"), 20, 30),
        delete(1, "a", 40, 50),
        append(2, "a", "z", 60, 70),
        get(3, "a", Some("z"), 80, 90),
    ];
    assert_eq!(check(&h), Verdict::Ok);
}

#[test]
fn get_all_consistent_is_ok() {
    let h = [
        put(1, "a", "1", 0, 10),
        put(2, "b", "2", 0, 10),
        get_all(3, &[("a", "1"), ("b", "2")], 20, 30),
        delete(1, "a", 40, 50),
        get_all(3, &[("b", "2")], 60, 70),
        // Concurrent with a put of c: may or may not include it.
        put(2, "c", "3", 80, 100),
        get_all(3, &[("b", "2")], 85, 90),
        get_all(4, &[("b", "2"), ("c", "3")], 86, 95),
    ];
    assert_eq!(check(&h), Verdict::Ok);
}

#[test]
fn get_all_missing_an_acknowledged_key_is_illegal() {
    let h = [put(1, "a", "1", 0, 10), put(2, "b", "2", 0, 10), get_all(3, &[("a", "1")], 20, 30)];
    let shrunk = assert_illegal(&h, "b");
    // The GetAll is reported as its projection onto b.
    assert_eq!(shrunk.last(), Some(&get(3, "b", None, 20, 30)));
}

#[test]
fn get_all_with_stale_or_invented_values_is_illegal() {
    let stale =
        [put(1, "a", "1", 0, 10), put(1, "a", "2", 20, 30), get_all(3, &[("a", "1")], 40, 50)];
    assert_illegal(&stale, "a");
    let invented = [put(1, "a", "1", 0, 10), get_all(3, &[("a", "1"), ("q", "9")], 20, 30)];
    assert_illegal(&invented, "q");
}

#[test]
fn get_all_per_key_projection_is_weaker_than_atomic() {
    // a and b are each written once, concurrently with two GetAlls. One GetAll sees only a, the
    // other only b: no single instant explains both (an atomic snapshot checker would reject
    // this), but each key's sub-history is fine, so the projected check accepts it. This test
    // pins down the documented weakness.
    let h = [
        put(1, "a", "1", 0, 100),
        put(2, "b", "1", 0, 100),
        get_all(3, &[("a", "1")], 10, 90),
        get_all(4, &[("b", "1")], 10, 90),
    ];
    assert_eq!(check(&h), Verdict::Ok);
}

#[test]
fn zero_budget_is_unknown_not_ok() {
    // Eight concurrent appends, read back in the one order the depth-first search tries last:
    // the search must go through every ordering of the appends (about 100,000 configurations, a
    // few milliseconds), far more steps than happen between two looks at the clock.
    let n = 8u64;
    let mut h = Vec::new();
    for i in 0..n {
        h.push(append(i, "a", &format!("<{i}>"), 0, 1000));
    }
    let expect: String = (0..n).rev().map(|i| format!("<{i}>")).collect();
    h.push(get(99, "a", Some(&expect), 2000, 2001));
    assert_eq!(check_history(&h, Duration::ZERO), Verdict::Unknown { key: "a".into() });
    assert_eq!(check(&h), Verdict::Ok);
}

#[test]
fn json_round_trip() {
    let h = vec![
        put(1, "a", "1", 0, 10),
        put_unknown(2, "a", "2", 20),
        get(3, "a", None, 30, 40),
        get_all(3, &[("a", "1")], 50, 60),
        delete(1, "a", 70, 80),
        append(1, "a", "x", 90, 100),
        op(4, KvInput::Get { key: "a".into() }, 5, KvOutput::Unknown, None),
    ];
    let text = history_to_json(&h);
    assert_eq!(history_from_json(&text).expect("parses"), h);
    // The documented shape.
    let value: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(
        value[0],
        serde_json::json!({"client_id": 1, "input": {"op": "put", "key": "a", "value": "1"},
                           "call": 0, "output": "ok", "return_time": 10})
    );
    assert_eq!(value[1]["output"], "unknown");
    assert_eq!(value[1]["return_time"], serde_json::Value::Null);
    assert_eq!(value[2]["output"], serde_json::json!({"value": null}));
    assert_eq!(value[3]["input"], serde_json::json!({"op": "get_all"}));
    assert_eq!(value[3]["output"], serde_json::json!({"all": {"a": "1"}}));
    assert!(history_from_json("[{\"nope\": 1}]").is_err());
    let v = check(&[put(1, "a", "1", 0, 1), get(1, "a", None, 2, 3)]);
    let back: Verdict = serde_json::from_str(&serde_json::to_string(&v).expect("ser")).expect("de");
    assert_eq!(back, v);
}

#[test]
fn porcupine_model_starts_keys_as_empty_string() {
    let h = [get(1, "a", Some(""), 0, 1)];
    assert_eq!(check_history_with(&h, &KvModel::porcupine(), BUDGET), Verdict::Ok);
    assert!(matches!(check(&h), Verdict::Illegal { .. }));
}

#[test]
fn an_easy_violation_is_not_hidden_behind_a_hard_key() {
    // Key "a": ten concurrent appends read back in the order the depth-first search tries last
    // (millions of configurations; far more than the budget allows in a debug build). Key "b",
    // sorted after it, fails at once. Taking turns, the checker must find "b".
    let n = 10u64;
    let mut h = Vec::new();
    for i in 0..n {
        h.push(append(i, "a", &format!("<{i}>"), 0, 1000));
    }
    let expect: String = (0..n).rev().map(|i| format!("<{i}>")).collect();
    h.push(get(99, "a", Some(&expect), 2000, 2001));
    h.push(put(100, "b", "1", 0, 1));
    h.push(get(100, "b", None, 2, 3));
    match check_history(&h, Duration::from_secs(2)) {
        Verdict::Illegal { key, history } => {
            assert_eq!(key, "b");
            assert_eq!(history.len(), 2);
        }
        other => panic!("expected Illegal on b, got {other:?}"),
    }
}

fn cas(c: u64, k: &str, expect: Option<&str>, v: &str, call: u64, out: Option<bool>) -> Operation {
    let input = KvInput::Cas { key: k.into(), expect: expect.map(str::to_string), value: v.into() };
    match out {
        Some(done) => op(c, input, call, KvOutput::Cas(done), Some(call + 10)),
        None => op(c, input, call, KvOutput::Unknown, None),
    }
}

#[test]
fn compare_and_set_histories() {
    // Two increments from the same read: only one may succeed.
    let ok = [
        cas(1, "n", None, "a", 0, Some(true)),
        cas(2, "n", Some("a"), "a,b", 20, Some(true)),
        cas(3, "n", Some("a"), "a,c", 25, Some(false)),
        get(1, "n", Some("a,b"), 40, 50),
    ];
    assert_eq!(check(&ok), Verdict::Ok);
    let both = [
        cas(1, "n", None, "a", 0, Some(true)),
        cas(2, "n", Some("a"), "a,b", 20, Some(true)),
        cas(3, "n", Some("a"), "a,c", 25, Some(true)),
    ];
    assert_illegal(&both, "n");
    // A failed CAS whose expectation held at every point it could take effect.
    let wrongly_failed = [cas(1, "n", None, "a", 0, Some(false)), get(2, "n", None, 20, 30)];
    assert_illegal(&wrongly_failed, "n");
    // A CAS that succeeded although the value was never what it expected.
    let wrongly_set = [put(1, "n", "x", 0, 5), cas(2, "n", Some("y"), "z", 10, Some(true))];
    assert_illegal(&wrongly_set, "n");
    // An unknown CAS may have applied (the read shows it) or not.
    let unknown = [
        put(1, "n", "x", 0, 5),
        cas(2, "n", Some("x"), "y", 10, None),
        get(3, "n", Some("y"), 30, 40),
    ];
    assert_eq!(check(&unknown), Verdict::Ok);
    let unknown_not = [
        put(1, "n", "x", 0, 5),
        cas(2, "n", Some("x"), "y", 10, None),
        get(3, "n", Some("x"), 30, 40),
    ];
    assert_eq!(check(&unknown_not), Verdict::Ok);
    // An unknown put must not be pruned when a CAS reads the state it leaves.
    let pruned_would_lie =
        [put_unknown(1, "n", "p", 0), cas(2, "n", Some("p"), "q", 10, Some(true))];
    assert_eq!(check(&pruned_would_lie), Verdict::Ok);
}
