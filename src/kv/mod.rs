//! The key-value state machine. It knows nothing about Raft: it applies commands in index order and
//! answers queries. Commands travel through the Raft log as small JSON documents
//! (`{"op":"put","key":"k","value":"v"}`), so a log dump is readable.

use std::collections::BTreeMap;

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

/// The map, plus how far into the log it reflects.
#[derive(Debug, Default, Clone)]
pub struct KvStore {
    data: BTreeMap<String, String>,
    /// Index of the last log entry applied.
    applied_index: Index,
    /// Term of that entry (a snapshot names both).
    applied_term: Term,
}

impl KvStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one committed entry. Entries must come in index order; an entry at or below
    /// `applied_index` is ignored (it was applied already), a gap is an error.
    pub fn apply(&mut self, entry: &Entry) -> Result<()> {
        if entry.index <= self.applied_index {
            return Ok(());
        }
        if entry.index != self.applied_index + 1 {
            return Err(Error::Internal(format!(
                "apply of index {} after {}: a gap in the log",
                entry.index, self.applied_index
            )));
        }
        self.applied_index = entry.index;
        self.applied_term = entry.term;
        if entry.is_noop() {
            return Ok(());
        }
        match Command::decode(&entry.command) {
            Ok(Command::Put { key, value }) => {
                self.data.insert(key, value);
            }
            Ok(Command::Delete { key }) => {
                self.data.remove(&key);
            }
            // A command this version cannot read: skip it rather than stop applying, and say so.
            Err(e) => log::error!("skipping entry {}: {e}", entry.index),
        }
        Ok(())
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&String> {
        self.data.get(key)
    }

    /// Every key and value, sorted by key.
    pub fn all(&self) -> &BTreeMap<String, String> {
        &self.data
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Index of the last applied entry.
    pub fn applied_index(&self) -> Index {
        self.applied_index
    }

    /// Term of the last applied entry.
    pub fn applied_term(&self) -> Term {
        self.applied_term
    }

    /// Serialises the whole state (for a snapshot): a JSON header line with the applied index and
    /// term, the cluster members and the key count, then every pair as
    /// `[u32 LE key length][key][u32 LE value length][value]`. The snapshot file adds its own
    /// checksum around this.
    pub fn encode_snapshot(&self, members: &[String]) -> Vec<u8> {
        let header = serde_json::json!({
            "format": SNAPSHOT_FORMAT,
            "index": self.applied_index,
            "term": self.applied_term,
            "members": members,
            "keys": self.data.len(),
        });
        let mut out = header.to_string().into_bytes();
        out.push(b'\n');
        let size: usize = self.data.iter().map(|(k, v)| k.len() + v.len() + 8).sum();
        out.reserve(size);
        for (k, v) in &self.data {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v.as_bytes());
        }
        out
    }

    /// Rebuilds a store from [`KvStore::encode_snapshot`] output; errors name the byte offset.
    pub fn decode_snapshot(bytes: &[u8]) -> Result<KvStore> {
        let bad =
            |at: usize, what: &str| Error::Storage(format!("snapshot data, byte {at}: {what}"));
        let newline = bytes.iter().position(|&b| b == b'\n').ok_or_else(|| bad(0, "no header"))?;
        let header: serde_json::Value = serde_json::from_slice(&bytes[..newline])
            .map_err(|e| bad(0, &format!("bad header: {e}")))?;
        if header["format"] != SNAPSHOT_FORMAT {
            return Err(bad(0, &format!("unknown format {}", header["format"])));
        }
        let field = |name: &str| header[name].as_u64().ok_or_else(|| bad(0, &format!("no {name}")));
        let (applied_index, applied_term, keys) = (field("index")?, field("term")?, field("keys")?);
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
        while at < bytes.len() {
            let key = take(&mut at)?;
            let value = take(&mut at)?;
            data.insert(key, value);
        }
        if data.len() as u64 != keys {
            return Err(bad(at, &format!("header says {keys} keys, found {}", data.len())));
        }
        Ok(KvStore { data, applied_index, applied_term })
    }
}

/// Version tag of the snapshot encoding.
const SNAPSHOT_FORMAT: &str = "raftlabkv-kv-1";

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
        let bytes = kv.encode_snapshot(&["n1".into(), "n2".into()]);
        let back = KvStore::decode_snapshot(&bytes).unwrap();
        assert_eq!(back.all(), kv.all());
        assert_eq!((back.applied_index(), back.applied_term()), (3, 3));
        for cut in [1, bytes.len() / 2, bytes.len() - 1] {
            assert!(KvStore::decode_snapshot(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
        assert!(KvStore::decode_snapshot(b"{}\n").is_err());
    }

    #[test]
    fn command_round_trip() {
        let c = Command::Put { key: "k".into(), value: "v".into() };
        assert_eq!(Command::decode(&c.encode()).unwrap(), c);
        assert!(Command::decode(b"nonsense").is_err());
    }
}
