//! The key-value state machine. It knows nothing about Raft: it applies commands in index order and
//! answers queries. Commands travel through the Raft log as small JSON documents
//! (`{"op":"put","key":"k","value":"v"}`), so a log dump is readable.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::raft::{Entry, Index};

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
}

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
    fn command_round_trip() {
        let c = Command::Put { key: "k".into(), value: "v".into() };
        assert_eq!(Command::decode(&c.encode()).unwrap(), c);
        assert!(Command::decode(b"nonsense").is_err());
    }
}
