//! Unit tests of the state machine.

use super::*;
use serde_json::json;

fn entry(index: Index, c: &Command) -> Entry {
    Entry { index, term: 1, command: c.encode() }
}

#[test]
fn applies_in_order_and_ignores_replays() {
    let mut kv = KvStore::new();
    let put = Command::put("a/b c%", "v é");
    kv.apply(&Entry { index: 1, term: 1, command: vec![] }).unwrap();
    kv.apply(&entry(2, &put)).unwrap();
    assert_eq!(kv.get("a/b c%"), Some("v é"));
    kv.apply(&entry(3, &Command::Delete { key: "a/b c%".into() })).unwrap();
    assert!(kv.get("a/b c%").is_none());
    kv.apply(&entry(2, &put)).unwrap();
    assert!(kv.get("a/b c%").is_none(), "a replayed entry must not apply twice");
    assert!(kv.apply(&entry(5, &put)).is_err(), "a gap must be refused");
    assert_eq!(kv.applied_index(), 3);
}

#[test]
fn snapshot_round_trip_and_corruption() {
    let mut kv = KvStore::new();
    let puts = [("a", "1"), ("ünï/cødé key", "välue with\nnewline"), ("", "empty key")];
    for (i, (k, v)) in puts.iter().enumerate() {
        let c = Command::put(k.to_string(), v.to_string());
        kv.apply(&Entry { index: i as Index + 1, term: 3, command: c.encode() }).unwrap();
    }
    let cluster = serde_json::json!({"voters": {"n1": "a:1"}});
    let bytes = kv.encode_snapshot(&cluster);
    assert_eq!(snapshot_cluster(&bytes), Some(cluster));
    let back = KvStore::decode_snapshot(&bytes).unwrap();
    assert_eq!(back.all(), kv.all());
    assert_eq!((back.applied_index(), back.applied_term()), (3, 3));
    for cut in [1, bytes.len() / 2, bytes.len() - 1] {
        assert!(KvStore::decode_snapshot(&bytes[..cut]).is_err(), "truncated at {cut}");
    }
    assert!(KvStore::decode_snapshot(b"{}\n").is_err());
}

#[test]
fn a_snapshot_with_keys_out_of_order_or_twice_is_refused_with_the_offset() {
    // kv-1 bodies are just [len][key][len][value] pairs, easy to write by hand.
    let body = |keys: &[&str]| {
        let header =
            format!(r#"{{"format":"raftlabkv-kv-1","index":9,"term":2,"keys":{}}}"#, keys.len());
        let mut out = format!("{header}\n").into_bytes();
        for k in keys {
            for s in [k.as_bytes(), b"v"] {
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s);
            }
        }
        out
    };
    let good = KvStore::decode_snapshot(&body(&["a", "b", "c"])).unwrap();
    assert_eq!(good.len(), 3);
    for keys in [&["a", "c", "b"][..], &["a", "b", "b"]] {
        let e = KvStore::decode_snapshot(&body(keys)).unwrap_err().to_string();
        assert!(e.contains("out of order") && e.contains("byte"), "{keys:?}: {e}");
    }
}

#[test]
fn a_snapshot_read_as_a_stream_in_tiny_pieces_is_the_same_and_every_cut_is_an_error() {
    let mut kv = KvStore::new();
    let puts = [("a", "1"), ("b/ü", "two"), ("a", "again"), ("c", "")];
    for (i, (k, v)) in puts.iter().enumerate() {
        let c = Command::put(k.to_string(), v.to_string());
        kv.apply(&Entry { index: i as Index + 1, term: 2, command: c.encode() }).unwrap();
    }
    let cluster = serde_json::json!({"voters": {"n1": "a:1"}});
    let bytes = kv.encode_snapshot(&cluster);
    let mut input = std::io::BufReader::with_capacity(3, &bytes[..]);
    let (back, got_cluster) = KvStore::decode_snapshot_from(&mut input).unwrap();
    assert_eq!(
        (back.all(), back.revision(), got_cluster),
        (kv.all(), kv.revision(), Some(cluster))
    );
    for cut in 0..bytes.len() {
        let mut input = std::io::BufReader::with_capacity(3, &bytes[..cut]);
        let e = KvStore::decode_snapshot_from(&mut input).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("snapshot data, byte "), "cut at {cut}: {e}");
    }
    // A length field that claims 4 GB is refused as cut short, not allocated.
    let header_end = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
    let mut huge = bytes.clone();
    huge[header_end..header_end + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let e = KvStore::decode_snapshot(&huge).map(|_| ()).unwrap_err().to_string();
    assert!(e.contains(&format!("byte {header_end}: truncated string")), "{e}");
}

#[test]
fn a_frozen_state_is_unaffected_by_later_writes_and_merges_back() {
    let mut kv = KvStore::new();
    let put = |k: &str, v: &str| Command::put(k, v).encode();
    let del = |k: &str| Command::Delete { key: k.into() }.encode();
    for (i, c) in [put("a", "1"), put("b", "2"), put("c", "3")].into_iter().enumerate() {
        kv.apply(&Entry { index: i as Index + 1, term: 1, command: c }).unwrap();
    }
    let frozen = kv.freeze().expect("nothing else frozen");
    assert_eq!((frozen.index, frozen.len()), (3, 3));
    let later = [put("a", "10"), del("b"), put("d", "4"), del("zz")];
    for (i, c) in later.into_iter().enumerate() {
        kv.apply(&Entry { index: i as Index + 4, term: 2, command: c }).unwrap();
    }
    // Reads see the overlay; the frozen state does not.
    assert_eq!(kv.get("a"), Some("10"));
    assert_eq!(kv.get("b"), None);
    assert_eq!(kv.len(), 3);
    let values = |kv: &KvStore| -> BTreeMap<String, String> {
        kv.all().iter().map(|(k, v)| (k.clone(), v.value().to_string())).collect()
    };
    let expect: BTreeMap<String, String> = [("a", "10"), ("c", "3"), ("d", "4")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(values(&kv), expect);
    let revision = kv.revision();
    let restored = KvStore::decode_snapshot(&frozen.encode(&serde_json::Value::Null)).unwrap();
    assert_eq!(restored.get("a"), Some("1"));
    assert_eq!((restored.applied_index(), restored.len()), (3, 3));
    // While the frozen state is alive there is no merging and no second freeze.
    assert!(!kv.try_merge());
    assert!(kv.freeze().is_none());
    drop(frozen);
    assert!(kv.try_merge());
    assert_eq!(values(&kv), expect);
    assert_eq!(kv.revision(), revision);
    assert_eq!(kv.entry("a").map(|e| e.revisions()), Some((2, 5, 2)));
    assert_eq!(kv.len(), 3);
    assert!(kv.freeze().is_some());
}

fn revs(kv: &KvStore, key: &str) -> Option<(u64, u64, u64)> {
    kv.entry(key).map(|e| e.revisions())
}

#[test]
fn revisions_count_changes_and_versions_restart_after_a_delete() {
    let mut kv = KvStore::new();
    assert_eq!(kv.revision(), 1, "an empty store is at revision 1");
    let put = |k: &str, v: &str| Command::put(k, v);
    let del = |k: &str| Command::Delete { key: k.into() };
    let steps: Vec<(Vec<u8>, u64)> = vec![
        (vec![], 1),                 // a no-op changes nothing
        (put("a", "1").encode(), 2), // a: created at 2
        (put("b", "1").encode(), 3),
        (put("a", "2").encode(), 4),       // a: version 2
        (del("zz").encode(), 4),           // absent: no change
        (del("a").encode(), 5),            // a's life ends
        (put("a", "3").encode(), 6),       // a new life: version 1 again
        (put("ü/ key%", "x").encode(), 7), // odd keys are keys
    ];
    for (i, (command, want)) in steps.into_iter().enumerate() {
        let got = kv.apply(&Entry { index: i as Index + 1, term: 1, command }).unwrap().revision;
        assert_eq!((got, kv.revision()), (want, want), "step {i}");
    }
    assert_eq!(revs(&kv, "a"), Some((6, 6, 1)));
    assert_eq!(revs(&kv, "b"), Some((3, 3, 1)));
    assert_eq!(revs(&kv, "ü/ key%"), Some((7, 7, 1)));
    // A replay returns the revision without changing it.
    assert_eq!(kv.apply(&entry(2, &put("a", "again"))).unwrap().revision, 7);
    assert_eq!(kv.get("a"), Some("3"));
    // The v1 body of /kv/all: values only.
    let all: BTreeMap<String, String> = serde_json::from_slice(&kv.values_json().unwrap()).unwrap();
    assert_eq!(all.get("a").map(String::as_str), Some("3"));
    assert_eq!(all.len(), 3);
}

#[test]
fn revisions_survive_a_snapshot_and_bad_ones_are_refused() {
    let mut kv = KvStore::new();
    for (i, c) in [("a", "1"), ("a", "2"), ("b", "3")].iter().enumerate() {
        let c = Command::put(c.0, c.1);
        kv.apply(&Entry { index: i as Index + 1, term: 2, command: c.encode() }).unwrap();
    }
    let bytes = kv.encode_snapshot(&serde_json::Value::Null);
    let back = KvStore::decode_snapshot(&bytes).unwrap();
    assert_eq!(back.revision(), 4);
    assert_eq!(revs(&back, "a"), Some((2, 3, 2)));
    assert_eq!(back.all(), kv.all());
    // Applying on from the snapshot continues the same count.
    let mut back = back;
    let c = Command::put("a", "x");
    assert_eq!(back.apply(&Entry { index: 4, term: 2, command: c.encode() }).unwrap().revision, 5);
    // A version of 0 (last 8 bytes of the last key) is impossible: refused, with the offset.
    let mut broken = bytes.clone();
    let n = broken.len();
    broken[n - 8..].copy_from_slice(&0u64.to_le_bytes());
    let e = KvStore::decode_snapshot(&broken).unwrap_err().to_string();
    assert!(e.contains("impossible revisions") && e.contains("byte"), "{e}");
    // The format before revisions is still read: every key at revision 1.
    let header = r#"{"format":"raftlabkv-kv-1","index":9,"term":2,"keys":1}"#;
    let mut v1 = format!("{header}\n").into_bytes();
    v1.extend_from_slice(&1u32.to_le_bytes());
    v1.extend_from_slice(b"k");
    v1.extend_from_slice(&2u32.to_le_bytes());
    v1.extend_from_slice(b"vv");
    let old = KvStore::decode_snapshot(&v1).unwrap();
    assert_eq!((old.revision(), revs(&old, "k"), old.applied_index()), (1, Some((1, 1, 1)), 9));
}

#[test]
fn command_round_trip() {
    let c = Command::put("k", "v");
    assert_eq!(Command::decode(&c.encode()).unwrap(), c);
    assert!(Command::decode(b"nonsense").is_err());
}

// ----- transactions, conditional puts, ranges, idempotency --------------------------------------

/// A store fed commands one index at a time.
struct Feed {
    kv: KvStore,
    next: Index,
}

impl Feed {
    fn new() -> Feed {
        Feed { kv: KvStore::new(), next: 1 }
    }

    fn run(&mut self, c: Command) -> Applied {
        let e = Entry { index: self.next, term: 1, command: c.encode() };
        self.next += 1;
        self.kv.apply(&e).unwrap()
    }

    fn put(&mut self, k: &str, v: &str) -> Applied {
        self.run(Command::put(k, v))
    }
}

fn txn(json: serde_json::Value) -> Txn {
    serde_json::from_value(json).expect("a transaction")
}

fn limits() -> txn::Limits {
    txn::Limits { max_ops: 128, max_key_bytes: 4096, max_value_bytes: 1 << 20 }
}

#[test]
fn every_compare_target_and_op() {
    let mut f = Feed::new();
    f.put("a", "m"); // rev 2
    f.put("a", "n"); // rev 3: a is version 2, created 2, modified 3
    let a = f.kv.entry("a").map(Rec::to_owned);
    let cmp = |target: &str, op: &str, value: serde_json::Value| -> Compare {
        serde_json::from_value(json!({"key": "a", "target": target, "op": op, "value": value}))
            .unwrap()
    };
    let cases: Vec<(Compare, bool)> = vec![
        (cmp("value", "==", json!("n")), true),
        (cmp("value", "!=", json!("n")), false),
        (cmp("value", "<", json!("o")), true),
        (cmp("value", ">", json!("m")), true),
        (cmp("value", ">", json!("n")), false),
        (cmp("version", "==", json!(2)), true),
        (cmp("version", "<", json!(2)), false),
        (cmp("version", ">", json!(1)), true),
        (cmp("create_revision", "==", json!(2)), true),
        (cmp("create_revision", "!=", json!(2)), false),
        (cmp("mod_revision", "==", json!(3)), true),
        (cmp("mod_revision", "<", json!(4)), true),
        (cmp("mod_revision", ">", json!(3)), false),
    ];
    for (c, want) in &cases {
        assert_eq!(c.holds(a.as_ref().map(KeyValue::rec)), *want, "{c:?}");
    }
    // A missing key: every revision and the version are 0; every value comparison fails.
    for (c, want) in [
        (cmp("version", "==", json!(0)), true),
        (cmp("create_revision", "==", json!(0)), true),
        (cmp("mod_revision", "<", json!(1)), true),
        (cmp("value", "==", json!("")), false),
        (cmp("value", "!=", json!("x")), false),
        (cmp("value", "<", json!("zzz")), false),
    ] {
        assert_eq!(c.holds(None), want, "{c:?} on a missing key");
    }
}

#[test]
fn a_transaction_applies_atomically_at_one_revision() {
    let mut f = Feed::new();
    f.put("cfg/a", "1"); // rev 2
    f.put("cfg/b", "2"); // rev 3
    let t = txn(json!({
        "compare": [{"key": "cfg/a", "target": "mod_revision", "op": "==", "value": 2},
                    {"key": "cfg/lock", "target": "version", "op": "==", "value": 0}],
        "success": [{"put": {"key": "cfg/a", "value": "new"}}, {"delete": {"key": "cfg/b"}},
                    {"get": {"key": "cfg/a"}}, {"range": {"prefix": "cfg/"}}],
        "failure": [{"get": {"key": "cfg/a"}}]
    }));
    t.validate(&limits()).unwrap();
    let done = f.run(Command::Txn { txn: t.clone() });
    assert_eq!(done.revision, 4, "one revision for the whole transaction");
    let Outcome::Txn { succeeded, responses } = &done.outcome else { panic!("{done:?}") };
    assert!(succeeded);
    assert_eq!(responses[0], TxnResponse::Put { key: "cfg/a".into() });
    assert_eq!(responses[1], TxnResponse::Delete { deleted: 1 });
    // Reads in the branch see the writes before them, at the transaction's revision.
    let TxnResponse::Get { kv: Some(a), .. } = &responses[2] else { panic!("{responses:?}") };
    assert_eq!((a.value.as_deref(), a.mod_revision, a.version), (Some("new"), 4, 2));
    let TxnResponse::Range(r) = &responses[3] else { panic!("{responses:?}") };
    assert_eq!((r.count, r.kvs.len(), r.revision), (1, 1, 4));
    assert_eq!(f.kv.entry("cfg/b"), None);
    // The same transaction again: mod_revision is 4 now, so the failure branch runs, changing
    // nothing.
    let again = f.run(Command::Txn { txn: t });
    let Outcome::Txn { succeeded, responses } = &again.outcome else { panic!("{again:?}") };
    assert!(!succeeded);
    assert_eq!(again.revision, 4);
    let TxnResponse::Get { kv: Some(a), .. } = &responses[0] else { panic!("{responses:?}") };
    assert_eq!(a.value.as_deref(), Some("new"));
    // A transaction whose writes change nothing (a delete of an absent key) keeps the revision.
    let noop = txn(json!({"success": [{"delete": {"key": "nope"}}]}));
    assert_eq!(f.run(Command::Txn { txn: noop }).revision, 4);
}

#[test]
fn transactions_are_checked_before_they_are_proposed() {
    let bad = |j: serde_json::Value| -> String {
        match serde_json::from_value::<Txn>(j.clone()) {
            Err(e) => format!("parse: {e}"),
            Ok(t) => match t.validate(&limits()) {
                Err(e) => e.to_string(),
                Ok(()) => panic!("accepted {j}"),
            },
        }
    };
    let e = bad(json!({"success": [{"put": {"key": "a", "value": "1"}},
                                   {"put": {"key": "a", "value": "2"}}]}));
    assert!(e.contains("at most once"), "{e}");
    let e = bad(json!({"success": [{"put": {"key": "p/x", "value": "1"}},
                                   {"delete": {"prefix": "p/"}}]}));
    assert!(e.contains("at most once"), "{e}");
    assert!(
        bad(json!({"compare": [{"key": "a", "target": "version", "op": "==", "value": "1"}]}))
            .contains("non-negative integer")
    );
    assert!(
        bad(json!({"compare": [{"key": "a", "target": "value", "op": "==", "value": 1}]}))
            .contains("a string")
    );
    assert!(
        bad(json!({"compare": [{"key": "a", "target": "size", "op": "==", "value": 1}]}))
            .starts_with("parse")
    );
    assert!(
        bad(json!({"compare": [{"key": "a", "target": "value", "op": "~=", "value": "x"}]}))
            .starts_with("parse")
    );
    assert!(bad(json!({"success": [{"frobnicate": {"key": "a"}}]})).starts_with("parse"));
    assert!(bad(json!({"success": [{"get": {"key": ""}}]})).contains("empty"));
    assert!(bad(json!({"success": [{"range": {"start": "b", "end": "a"}}]})).contains("after"));
    assert!(
        bad(json!({"success": [{"delete": {"key": "a", "prefix": "b"}}]})).contains("not both")
    );
    let many: Vec<_> = (0..129).map(|i| json!({"get": {"key": format!("k{i}")}})).collect();
    assert!(bad(json!({ "success": many })).contains("at most 128"));
    // Writes to one key in different branches are fine (only one branch runs).
    let ok = txn(json!({"success": [{"put": {"key": "a", "value": "1"}}],
                        "failure": [{"put": {"key": "a", "value": "2"}}]}));
    assert!(ok.validate(&limits()).is_ok());
    assert!(!ok.is_read_only());
    assert!(txn(json!({"success": [{"get": {"key": "a"}}]})).is_read_only());
}

#[test]
fn a_conditional_put_writes_only_at_the_revision_it_names() {
    let mut f = Feed::new();
    let put_if =
        |k: &str, v: &str, r| Command::Put { key: k.into(), value: v.into(), if_revision: Some(r) };
    // 0: only if absent.
    assert_eq!(f.run(put_if("k", "1", 0)).outcome, Outcome::Written);
    assert_eq!(f.kv.revision(), 2);
    let refused = f.run(put_if("k", "2", 0));
    let Outcome::Refused { current: Some(cur) } = &refused.outcome else { panic!("{refused:?}") };
    assert_eq!((cur.value.as_deref(), cur.mod_revision), (Some("1"), 2));
    assert_eq!(refused.revision, 2, "a refused put changes nothing");
    assert_eq!(f.run(put_if("k", "2", 2)).outcome, Outcome::Written);
    assert_eq!(f.kv.get("k"), Some("2"));
    // On a missing key any revision but 0 is refused, with no current key.
    assert_eq!(f.run(put_if("missing", "x", 7)).outcome, Outcome::Refused { current: None });
}

#[test]
fn ranges_with_odd_keys_limits_and_order() {
    let mut f = Feed::new();
    let keys = ["a", "a/", "a/b", "a/b c", "a/%2F", "a0", "b", "é", "é/ü", "日本/1", "\u{10FFFF}x"];
    for k in keys {
        f.put(k, &format!("v-{k}"));
    }
    let spec = |j: serde_json::Value| -> RangeSpec { serde_json::from_value(j).unwrap() };
    let keys_of = |spec: &RangeSpec| -> Vec<String> {
        let b = Bounds::of(spec).unwrap();
        f.kv.walk(&b, spec.desc).map(|(k, _)| k.to_string()).collect()
    };
    assert_eq!(keys_of(&spec(json!({"prefix": "a/"}))), ["a/", "a/%2F", "a/b", "a/b c"]);
    assert_eq!(keys_of(&spec(json!({"prefix": "é"}))), ["é", "é/ü"]);
    assert_eq!(keys_of(&spec(json!({"prefix": "日本/"}))), ["日本/1"]);
    assert_eq!(keys_of(&spec(json!({"prefix": "\u{10FFFF}"}))), ["\u{10FFFF}x"]);
    assert_eq!(keys_of(&spec(json!({"prefix": ""}))).len(), keys.len());
    assert_eq!(keys_of(&spec(json!({"start": "a/b"}))), ["a/b"]);
    assert_eq!(keys_of(&spec(json!({"start": "a/b", "end": "b"}))), ["a/b", "a/b c", "a0"]);
    assert_eq!(
        keys_of(&spec(json!({"prefix": "a/", "desc": true}))),
        ["a/b c", "a/b", "a/%2F", "a/"]
    );
    // limit, count, more, next.
    let view = f.kv.view();
    let answer = |j: serde_json::Value| -> RangeReply {
        serde_json::from_slice(&view.range_json(&spec(j)).unwrap()).unwrap()
    };
    let r = answer(json!({"prefix": "a", "limit": 2}));
    assert_eq!((r.count, r.more, r.kvs.len(), r.next.as_deref()), (6, true, 2, Some("a/%2F")));
    assert_eq!(r.kvs[0].value.as_deref(), Some("v-a"));
    let r = answer(json!({"prefix": "a", "limit": 6}));
    assert_eq!((r.count, r.more, r.next), (6, false, None));
    let r = answer(json!({"prefix": "a/", "keys_only": true}));
    assert!(r.kvs.iter().all(|kv| kv.value.is_none()) && r.kvs.len() == 4);
    let r = answer(json!({"prefix": "a/", "count_only": true}));
    assert_eq!((r.count, r.kvs.len()), (4, 0));
    let r = answer(json!({"prefix": "a/", "limit": 1, "desc": true}));
    assert_eq!((r.kvs[0].key.as_str(), r.next.as_deref()), ("a/b c", Some("a/b")));
    assert_eq!(r.revision, f.kv.revision());
    for bad in [json!({}), json!({"prefix": "a", "start": "b"}), json!({"start": "b", "end": "a"})]
    {
        assert!(Bounds::of(&spec(bad.clone())).is_err(), "{bad}");
    }
}

#[test]
fn a_view_keeps_its_revision_while_writes_go_on_and_merges_back() {
    let mut f = Feed::new();
    for i in 0..100 {
        f.put(&format!("k{i:03}"), "old");
    }
    let view = f.kv.view();
    let rev = view.revision;
    f.put("k000", "new");
    f.run(Command::Delete { key: "k001".into() });
    f.put("k100", "added");
    let all = Bounds::prefix("k");
    // The view: as it was.
    assert_eq!(view.walk(&all, false).count(), 100);
    assert_eq!(view.entry("k000").map(|kv| kv.value()), Some("old"));
    assert_eq!(view.revision, rev);
    // The store: as it is, through the overlay, in both directions.
    let live: Vec<&str> = f.kv.walk(&all, false).map(|(k, _)| k).collect();
    assert_eq!((live.len(), live[0], live[1], live[99]), (100, "k000", "k002", "k100"));
    let back: Vec<&str> = f.kv.walk(&all, true).map(|(k, _)| k).collect();
    assert_eq!((back[0], back[98], back[99]), ("k100", "k002", "k000"));
    assert!(!f.kv.try_merge(), "the view still shares the map");
    drop(view);
    assert!(f.kv.try_merge());
    assert_eq!(f.kv.get("k000"), Some("new"));
    assert_eq!((f.kv.len(), f.kv.all().len()), (100, 100));
}

#[test]
fn delete_range_removes_every_key_at_one_revision() {
    let mut f = Feed::new();
    for k in ["p/1", "p/2", "p/3", "q"] {
        f.put(k, "v");
    }
    let range = RangeSpec { prefix: Some("p/".into()), ..Default::default() };
    let done = f.run(Command::DeleteRange { range: range.clone() });
    assert_eq!((done.outcome.clone(), done.revision), (Outcome::Deleted(3), 6));
    assert_eq!(f.kv.len(), 1);
    // Nothing left to delete: no new revision.
    assert_eq!(f.run(Command::DeleteRange { range }).revision, 6);
}

fn idem(c: Command, key: &str, fp: &str, at_ms: u64, ttl_ms: u64, cap: u64) -> Command {
    let meta = IdempotencyMeta { key: key.into(), fingerprint: fp.into(), at_ms, ttl_ms, cap };
    Command::Idempotent { meta, command: Box::new(c) }
}

#[test]
fn an_idempotent_retry_gets_the_first_answer_and_changes_nothing() {
    let mut f = Feed::new();
    let first = f.run(idem(Command::put("n", "1"), "k1", "fp-a", 1_000, 60_000, 10));
    assert_eq!((first.index, first.revision, first.replayed), (1, 2, false));
    f.put("other", "x"); // rev 3
    // The retry is a second entry with the same key: the first answer, nothing applied.
    let retry = f.run(idem(Command::put("n", "1"), "k1", "fp-a", 2_000, 60_000, 10));
    assert_eq!((retry.index, retry.revision, retry.replayed), (1, 2, true));
    assert_eq!(f.kv.revision(), 3);
    assert_eq!(f.kv.entry("n").map(|kv| kv.version()), Some(1));
    // The leader's lookup before proposing says the same.
    assert_eq!(f.kv.idempotency_lookup("k1", "fp-a"), Some(Ok(retry.clone())));
    // Same key, another write: refused, nothing applied.
    let reused = f.run(idem(Command::put("n", "2"), "k1", "fp-b", 2_500, 60_000, 10));
    assert_eq!(reused.outcome, Outcome::KeyReused { key: "k1".into() });
    assert_eq!(f.kv.get("n"), Some("1"));
    assert!(matches!(
        f.kv.idempotency_lookup("k1", "fp-b"),
        Some(Err(Error::IdempotencyKeyReused(_)))
    ));
    // A transaction's outcome is remembered too: a retry does not re-evaluate the compares.
    let t = txn(json!({"compare": [{"key": "n", "target": "value", "op": "==", "value": "1"}],
                       "success": [{"put": {"key": "n", "value": "2"}}]}));
    let once = f.run(idem(Command::Txn { txn: t.clone() }, "k2", "fp-t", 3_000, 60_000, 10));
    let twice = f.run(idem(Command::Txn { txn: t }, "k2", "fp-t", 3_100, 60_000, 10));
    assert!(matches!(&twice.outcome, Outcome::Txn { succeeded: true, .. }), "{twice:?}");
    assert_eq!((twice.index, twice.revision), (once.index, once.revision));
    assert_eq!(f.kv.entry("n").map(|kv| kv.version()), Some(2));
}

#[test]
fn idempotency_records_expire_by_the_log_clock_and_the_cap() {
    let mut f = Feed::new();
    f.run(idem(Command::put("a", "1"), "k-a", "fa", 10_000, 1_000, 3));
    f.run(idem(Command::put("b", "1"), "k-b", "fb", 10_500, 1_000, 3));
    assert_eq!(f.kv.idempotency_len(), 2);
    // A leader whose clock is behind does not move the table's clock back: nothing expires.
    f.run(idem(Command::put("c", "1"), "k-c", "fc", 5_000, 1_000, 3));
    assert_eq!(f.kv.idempotency_len(), 3);
    assert!(f.kv.idempotency_lookup("k-a", "fa").is_some());
    // The log's clock passes 11,000: k-a (expires 11,000) and k-c (stamped at the table's
    // clock 10,500, expires 11,500)... only k-a goes.
    f.run(idem(Command::put("d", "1"), "k-d", "fd", 11_000, 1_000, 3));
    assert!(f.kv.idempotency_lookup("k-a", "fa").is_none(), "expired");
    assert!(f.kv.idempotency_lookup("k-b", "fb").is_some());
    // Expired: a retry now is a new write (it applies again).
    let again = f.run(idem(Command::put("a", "1"), "k-a", "fa", 11_000, 1_000, 3));
    assert!(!again.replayed);
    assert_eq!(f.kv.entry("a").map(|kv| kv.version()), Some(2));
    // The cap: at most 3 kept, the soonest-expiring forgotten first.
    assert_eq!(f.kv.idempotency_len(), 3);
    assert!(f.kv.idempotency_lookup("k-b", "fb").is_none(), "evicted by the cap");
    // Plain writes do not touch the table.
    f.put("x", "y");
    assert_eq!(f.kv.idempotency_len(), 3);
}

#[test]
fn the_idempotency_table_survives_a_snapshot() {
    let mut f = Feed::new();
    f.run(idem(Command::put("a", "1"), "k-a", "fa", 10_000, 60_000, 100));
    let t = txn(json!({"success": [{"put": {"key": "b", "value": "2"}}, {"get": {"key": "a"}}]}));
    f.run(idem(Command::Txn { txn: t }, "k-t", "ft", 10_001, 60_000, 100));
    let bytes = f.kv.encode_snapshot(&serde_json::Value::Null);
    let back = KvStore::decode_snapshot(&bytes).unwrap();
    assert_eq!(back.idempotency_len(), 2);
    assert_eq!(back.idempotency_lookup("k-t", "ft"), f.kv.idempotency_lookup("k-t", "ft"));
    assert_eq!(back.idempotency.clock_ms(), 10_001);
    assert_eq!(back.all(), f.kv.all());
    // A frozen state carries the table as of its index.
    let mut kv = back;
    let frozen = kv.freeze().unwrap();
    let mut g = Feed { kv, next: f.next };
    g.run(idem(Command::put("c", "3"), "k-c", "fc", 10_002, 60_000, 100));
    let restored = KvStore::decode_snapshot(&frozen.encode(&serde_json::Value::Null)).unwrap();
    assert_eq!(restored.idempotency_len(), 2);
    // A record cut short is refused with its offset.
    let e = KvStore::decode_snapshot(&bytes[..bytes.len() - 3]).unwrap_err().to_string();
    assert!(e.contains("byte"), "{e}");
    // kv-2 (before the table) is still read.
    let mut v2 = KvStore::new();
    v2.apply(&entry(1, &Command::put("k", "v"))).unwrap();
    let v3 = v2.encode_snapshot(&serde_json::Value::Null);
    let nl = v3.iter().position(|&b| b == b'\n').unwrap();
    let header = r#"{"format":"raftlabkv-kv-2","index":1,"term":1,"revision":2,"keys":1}"#;
    let mut old = header.as_bytes().to_vec();
    old.extend_from_slice(&v3[nl..]);
    let old = KvStore::decode_snapshot(&old).unwrap();
    assert_eq!((old.get("k"), old.idempotency_len()), (Some("v"), 0));
}

#[test]
fn old_log_entries_still_decode() {
    let old = br#"{"op":"put","key":"k","value":"v"}"#;
    assert_eq!(Command::decode(old).unwrap(), Command::put("k", "v"));
    let del = br#"{"op":"delete","key":"k"}"#;
    assert_eq!(Command::decode(del).unwrap(), Command::Delete { key: "k".into() });
    assert_eq!(Command::put("k", "v").encode(), old.to_vec(), "a plain put encodes as in v1");
}
