//! The key-value state machine. It knows nothing about Raft: it applies commands in index order and
//! answers queries. Commands travel through the Raft log as small JSON documents
//! (`{"op":"put","key":"k","value":"v"}`), so a log dump is readable.
//!
//! **Revisions** (as etcd's): the store has one revision counter, 1 for an empty store, raised by
//! one for each applied entry that changes something (a put; a delete of a present key); a delete
//! of an absent key, a no-op and a configuration entry leave it. Every key carries
//! `create_revision` (the revision of the put that created it), `mod_revision` (of its latest
//! put) and `version` (1 on creation, +1 per put; a delete ends the key's life and a later put
//! starts again at 1). They are a pure function of the applied log, so every node has the same,
//! and they are kept in snapshots.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::raft::{Entry, Index, Term};

/// A state machine command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Command {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: String,
        /// The new value.
        value: String,
    },
    /// Remove `key` (fine if absent).
    Delete {
        /// The key.
        key: String,
    },
}

impl Command {
    /// Encodes the command for a log entry.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising a plain enum of strings cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes a command from a log entry.
    pub fn decode(bytes: &[u8]) -> Result<Command> {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::Internal(format!("undecodable command in the log: {e}")))
    }
}

/// A key's value and its revisions (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    /// The value.
    pub value: String,
    /// Revision of the put that created the key (in its current life).
    pub create_revision: u64,
    /// Revision of the key's latest put.
    pub mod_revision: u64,
    /// Puts since the key was created, that one included.
    pub version: u64,
}

/// The map, plus how far into the log it reflects.
///
/// **Snapshots without a long pause.** Copying a million-key map to snapshot it would stop writes
/// for as long as the copy takes. Instead the map lives behind an `Arc`: [`KvStore::freeze`] hands
/// the snapshot thread a second reference to it (O(1)) and from then on writes go to a small
/// `overlay` of changes (a `None` there is a delete), which reads consult first. Once the snapshot
/// thread drops its reference, [`KvStore::try_merge`] folds the overlay back into the map — the
/// only pause, proportional to the writes made while the snapshot was being written.
#[derive(Debug, Clone)]
pub struct KvStore {
    /// The map as of the last merge. Never modified while `overlay` exists (a snapshot may be
    /// reading it).
    base: Arc<BTreeMap<String, KeyValue>>,
    /// Changes made since [`KvStore::freeze`]: `Some(value)` for a put, `None` for a delete.
    overlay: Option<BTreeMap<String, Option<KeyValue>>>,
    /// The store's revision (1 when empty; see the module docs).
    revision: u64,
    /// Number of live keys (kept up to date, so `/status` never walks the overlay under the lock).
    len: usize,
    /// Index of the last log entry applied.
    applied_index: Index,
    /// Term of that entry (a snapshot names both).
    applied_term: Term,
}

impl Default for KvStore {
    fn default() -> Self {
        KvStore {
            base: Arc::default(),
            overlay: None,
            revision: 1,
            len: 0,
            applied_index: 0,
            applied_term: 0,
        }
    }
}

/// The state machine at one index, frozen for a snapshot (shares its map with the live store).
#[derive(Debug, Clone)]
pub struct Frozen {
    map: Arc<BTreeMap<String, KeyValue>>,
    /// The store's revision at that index.
    pub revision: u64,
    /// Index of the last entry the frozen state includes.
    pub index: Index,
    /// Term of that entry.
    pub term: Term,
}

impl Frozen {
    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The snapshot encoding of this state (see [`KvStore::encode_snapshot`]).
    pub fn encode(&self, cluster: &serde_json::Value) -> Vec<u8> {
        encode_map(&self.map, self.index, self.term, self.revision, cluster)
    }
}

impl KvStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one committed entry, returning the store's revision after it. Entries must come
    /// in index order; an entry at or below `applied_index` is ignored (it was applied already),
    /// a gap is an error.
    pub fn apply(&mut self, entry: &Entry) -> Result<u64> {
        if entry.index <= self.applied_index {
            return Ok(self.revision);
        }
        if entry.index != self.applied_index + 1 {
            return Err(Error::Internal(format!(
                "apply of index {} after {}: a gap in the log",
                entry.index, self.applied_index
            )));
        }
        self.applied_index = entry.index;
        self.applied_term = entry.term;
        // No-ops and Raft's own entries (configurations) change nothing here.
        if entry.is_noop() || entry.is_internal() {
            return Ok(self.revision);
        }
        match Command::decode(&entry.command) {
            Ok(Command::Put { key, value }) => {
                self.revision += 1;
                let rev = self.revision;
                let kv = match self.entry(&key) {
                    Some(old) => KeyValue {
                        value,
                        create_revision: old.create_revision,
                        mod_revision: rev,
                        version: old.version + 1,
                    },
                    None => {
                        self.len += 1;
                        KeyValue { value, create_revision: rev, mod_revision: rev, version: 1 }
                    }
                };
                self.set(key, Some(kv));
            }
            Ok(Command::Delete { key }) => {
                if self.entry(&key).is_some() {
                    self.revision += 1;
                    self.len -= 1;
                    self.set(key, None);
                }
            }
            // A command this version cannot read: skip it rather than stop applying, and say so.
            Err(e) => log::error!("skipping entry {}: {e}", entry.index),
        }
        Ok(self.revision)
    }

    /// Stores a put (`Some`) or a delete (`None`); `apply` has counted it in `len` already.
    fn set(&mut self, key: String, value: Option<KeyValue>) {
        if let Some(overlay) = &mut self.overlay {
            overlay.insert(key, value);
            return;
        }
        // No snapshot shares the map (that is what `overlay` being absent means), so this never
        // copies it.
        let map = Arc::make_mut(&mut self.base);
        match value {
            Some(v) => map.insert(key, v),
            None => map.remove(&key),
        };
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&String> {
        self.entry(key).map(|kv| &kv.value)
    }

    /// The value of `key` with its revisions.
    pub fn entry(&self, key: &str) -> Option<&KeyValue> {
        if let Some(change) = self.overlay.as_ref().and_then(|o| o.get(key)) {
            return change.as_ref();
        }
        self.base.get(key)
    }

    /// The store's revision (see the module docs).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// `{"key": "value", ...}` for every key, sorted (the v1 `GET /kv/all` body).
    pub fn values_json(&self) -> serde_json::Result<Vec<u8>> {
        struct Values<'a>(&'a BTreeMap<String, KeyValue>);
        impl Serialize for Values<'_> {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                s.collect_map(self.0.iter().map(|(k, v)| (k, &v.value)))
            }
        }
        serde_json::to_vec(&Values(&self.all()))
    }

    /// Every key and value, sorted by key (borrowed unless a snapshot is being taken).
    pub fn all(&self) -> Cow<'_, BTreeMap<String, KeyValue>> {
        let Some(overlay) = &self.overlay else { return Cow::Borrowed(&self.base) };
        let mut merged = (*self.base).clone();
        apply_overlay(&mut merged, overlay);
        Cow::Owned(merged)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Index of the last applied entry.
    pub fn applied_index(&self) -> Index {
        self.applied_index
    }

    /// Term of the last applied entry.
    pub fn applied_term(&self) -> Term {
        self.applied_term
    }

    /// Freezes the current state for a snapshot, in O(1): later writes go to the overlay until
    /// [`KvStore::try_merge`]. `None` if an earlier frozen state is still in use.
    pub fn freeze(&mut self) -> Option<Frozen> {
        if !self.try_merge() {
            return None;
        }
        self.overlay = Some(BTreeMap::new());
        Some(Frozen {
            map: Arc::clone(&self.base),
            revision: self.revision,
            index: self.applied_index,
            term: self.applied_term,
        })
    }

    /// Folds the overlay back into the map once no frozen state shares it. Returns true when
    /// there is no overlay left.
    pub fn try_merge(&mut self) -> bool {
        let Some(overlay) = &self.overlay else { return true };
        let Some(map) = Arc::get_mut(&mut self.base) else { return false };
        apply_overlay(map, overlay);
        self.overlay = None;
        true
    }

    /// Serialises the whole state (for a snapshot): a JSON header line with the applied index and
    /// term, the store's revision, the cluster's configuration at that index (opaque here: the
    /// server's, see [`snapshot_cluster`]) and the key count, then every key as
    /// `[u32 LE key length][key][u32 LE value length][value][u64 LE create revision][u64 LE mod
    /// revision][u64 LE version]`. The snapshot file adds its own checksum around this. (Format
    /// `raftlabkv-kv-1`, without revisions, is still read: its keys get revision 1, version 1.)
    pub fn encode_snapshot(&self, cluster: &serde_json::Value) -> Vec<u8> {
        encode_map(&self.all(), self.applied_index, self.applied_term, self.revision, cluster)
    }

    /// Rebuilds a store from [`KvStore::encode_snapshot`] output; errors name the byte offset.
    pub fn decode_snapshot(bytes: &[u8]) -> Result<KvStore> {
        let bad =
            |at: usize, what: &str| Error::Storage(format!("snapshot data, byte {at}: {what}"));
        let newline = bytes.iter().position(|&b| b == b'\n').ok_or_else(|| bad(0, "no header"))?;
        let header: serde_json::Value = serde_json::from_slice(&bytes[..newline])
            .map_err(|e| bad(0, &format!("bad header: {e}")))?;
        let with_revisions = if header["format"] == SNAPSHOT_FORMAT {
            true
        } else if header["format"] == SNAPSHOT_FORMAT_V1 {
            false
        } else {
            return Err(bad(0, &format!("unknown format {}", header["format"])));
        };
        let field = |name: &str| header[name].as_u64().ok_or_else(|| bad(0, &format!("no {name}")));
        let (applied_index, applied_term, keys) = (field("index")?, field("term")?, field("keys")?);
        let revision = if with_revisions { field("revision")? } else { 1 };
        let mut data = BTreeMap::new();
        let mut at = newline + 1;
        let take = |at: &mut usize| -> Result<String> {
            let len_bytes = bytes.get(*at..*at + 4).ok_or_else(|| bad(*at, "truncated length"))?;
            let len = u32::from_le_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]])
                as usize;
            let text =
                bytes.get(*at + 4..*at + 4 + len).ok_or_else(|| bad(*at, "truncated string"))?;
            let text = String::from_utf8(text.to_vec()).map_err(|_| bad(*at, "not UTF-8"))?;
            *at += 4 + len;
            Ok(text)
        };
        let number = |at: &mut usize| -> Result<u64> {
            let b = bytes.get(*at..*at + 8).ok_or_else(|| bad(*at, "truncated revision"))?;
            *at += 8;
            Ok(u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
        };
        while at < bytes.len() {
            let key = take(&mut at)?;
            let value = take(&mut at)?;
            let kv = if with_revisions {
                let start = at;
                let (create_revision, mod_revision, version) =
                    (number(&mut at)?, number(&mut at)?, number(&mut at)?);
                if create_revision == 0
                    || create_revision > mod_revision
                    || mod_revision > revision
                    || version == 0
                {
                    return Err(bad(start, "impossible revisions"));
                }
                KeyValue { value, create_revision, mod_revision, version }
            } else {
                KeyValue { value, create_revision: 1, mod_revision: 1, version: 1 }
            };
            data.insert(key, kv);
        }
        if data.len() as u64 != keys {
            return Err(bad(at, &format!("header says {keys} keys, found {}", data.len())));
        }
        let len = data.len();
        Ok(KvStore {
            base: Arc::new(data),
            overlay: None,
            revision,
            len,
            applied_index,
            applied_term,
        })
    }
}

fn apply_overlay(
    map: &mut BTreeMap<String, KeyValue>,
    overlay: &BTreeMap<String, Option<KeyValue>>,
) {
    for (k, v) in overlay {
        match v {
            Some(v) => map.insert(k.clone(), v.clone()),
            None => map.remove(k),
        };
    }
}

fn encode_map(
    map: &BTreeMap<String, KeyValue>,
    index: Index,
    term: Term,
    revision: u64,
    cluster: &serde_json::Value,
) -> Vec<u8> {
    let header = serde_json::json!({
        "format": SNAPSHOT_FORMAT,
        "index": index,
        "term": term,
        "revision": revision,
        "cluster": cluster,
        "keys": map.len(),
    });
    let mut out = header.to_string().into_bytes();
    out.push(b'\n');
    let size: usize = map.iter().map(|(k, v)| k.len() + v.value.len() + 32).sum();
    out.reserve(size);
    for (k, v) in map {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&(v.value.len() as u32).to_le_bytes());
        out.extend_from_slice(v.value.as_bytes());
        for n in [v.create_revision, v.mod_revision, v.version] {
            out.extend_from_slice(&n.to_le_bytes());
        }
    }
    out
}

/// The `cluster` field of a snapshot's header (what [`KvStore::encode_snapshot`] was given), if
/// the snapshot has one.
pub fn snapshot_cluster(bytes: &[u8]) -> Option<serde_json::Value> {
    let newline = bytes.iter().position(|&b| b == b'\n')?;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[..newline]).ok()?;
    Some(header.get_mut("cluster")?.take()).filter(|v| !v.is_null())
}

/// Version tag of the snapshot encoding.
const SNAPSHOT_FORMAT: &str = "raftlabkv-kv-2";

/// The encoding before revisions (still read).
const SNAPSHOT_FORMAT_V1: &str = "raftlabkv-kv-1";

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: Index, c: &Command) -> Entry {
        Entry { index, term: 1, command: c.encode() }
    }

    #[test]
    fn applies_in_order_and_ignores_replays() {
        let mut kv = KvStore::new();
        let put = Command::Put { key: "a/b c%".into(), value: "v é".into() };
        kv.apply(&Entry { index: 1, term: 1, command: vec![] }).unwrap();
        kv.apply(&entry(2, &put)).unwrap();
        assert_eq!(kv.get("a/b c%").map(String::as_str), Some("v é"));
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
            let c = Command::Put { key: k.to_string(), value: v.to_string() };
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
    fn a_frozen_state_is_unaffected_by_later_writes_and_merges_back() {
        let mut kv = KvStore::new();
        let put = |k: &str, v: &str| Command::Put { key: k.into(), value: v.into() }.encode();
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
        assert_eq!(kv.get("a").map(String::as_str), Some("10"));
        assert_eq!(kv.get("b"), None);
        assert_eq!(kv.len(), 3);
        let values = |kv: &KvStore| -> BTreeMap<String, String> {
            kv.all().iter().map(|(k, v)| (k.clone(), v.value.clone())).collect()
        };
        let expect: BTreeMap<String, String> = [("a", "10"), ("c", "3"), ("d", "4")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(values(&kv), expect);
        let revision = kv.revision();
        let restored = KvStore::decode_snapshot(&frozen.encode(&serde_json::Value::Null)).unwrap();
        assert_eq!(restored.get("a").map(String::as_str), Some("1"));
        assert_eq!((restored.applied_index(), restored.len()), (3, 3));
        // While the frozen state is alive there is no merging and no second freeze.
        assert!(!kv.try_merge());
        assert!(kv.freeze().is_none());
        drop(frozen);
        assert!(kv.try_merge());
        assert_eq!(values(&kv), expect);
        assert_eq!(kv.revision(), revision);
        assert_eq!(
            kv.entry("a").map(|e| (e.create_revision, e.mod_revision, e.version)),
            Some((2, 5, 2))
        );
        assert_eq!(kv.len(), 3);
        assert!(kv.freeze().is_some());
    }

    fn revs(kv: &KvStore, key: &str) -> Option<(u64, u64, u64)> {
        kv.entry(key).map(|e| (e.create_revision, e.mod_revision, e.version))
    }

    #[test]
    fn revisions_count_changes_and_versions_restart_after_a_delete() {
        let mut kv = KvStore::new();
        assert_eq!(kv.revision(), 1, "an empty store is at revision 1");
        let put = |k: &str, v: &str| Command::Put { key: k.into(), value: v.into() };
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
            let got = kv.apply(&Entry { index: i as Index + 1, term: 1, command }).unwrap();
            assert_eq!((got, kv.revision()), (want, want), "step {i}");
        }
        assert_eq!(revs(&kv, "a"), Some((6, 6, 1)));
        assert_eq!(revs(&kv, "b"), Some((3, 3, 1)));
        assert_eq!(revs(&kv, "ü/ key%"), Some((7, 7, 1)));
        // A replay returns the revision without changing it.
        assert_eq!(kv.apply(&entry(2, &put("a", "again"))).unwrap(), 7);
        assert_eq!(kv.get("a").map(String::as_str), Some("3"));
        // The v1 body of /kv/all: values only.
        let all: BTreeMap<String, String> =
            serde_json::from_slice(&kv.values_json().unwrap()).unwrap();
        assert_eq!(all.get("a").map(String::as_str), Some("3"));
        assert_eq!(all.len(), 3);
    }

    #[test]
    fn revisions_survive_a_snapshot_and_bad_ones_are_refused() {
        let mut kv = KvStore::new();
        for (i, c) in [("a", "1"), ("a", "2"), ("b", "3")].iter().enumerate() {
            let c = Command::Put { key: c.0.into(), value: c.1.into() };
            kv.apply(&Entry { index: i as Index + 1, term: 2, command: c.encode() }).unwrap();
        }
        let bytes = kv.encode_snapshot(&serde_json::Value::Null);
        let back = KvStore::decode_snapshot(&bytes).unwrap();
        assert_eq!(back.revision(), 4);
        assert_eq!(revs(&back, "a"), Some((2, 3, 2)));
        assert_eq!(*back.all(), *kv.all());
        // Applying on from the snapshot continues the same count.
        let mut back = back;
        let c = Command::Put { key: "a".into(), value: "x".into() };
        assert_eq!(back.apply(&Entry { index: 4, term: 2, command: c.encode() }).unwrap(), 5);
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
        let c = Command::Put { key: "k".into(), value: "v".into() };
        assert_eq!(Command::decode(&c.encode()).unwrap(), c);
        assert!(Command::decode(b"nonsense").is_err());
    }
}
