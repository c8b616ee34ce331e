//! A history of writes and what their clients learnt, and the check that a final state is one
//! the history allows.
//!
//! The model: every key has a single writer that issues its writes one at a time, each with a
//! value never used before for that key. A write's [`Outcome`] is what the client saw:
//!
//! * [`Outcome::Acked`]: `200`, the write is committed and must be visible from then on, unless a
//!   later write of the same key replaced it;
//! * [`Outcome::Failed`]: the server promised the write was not applied and never will be (`503`,
//!   or the connection was refused so nothing was sent);
//! * [`Outcome::Unknown`]: `504`, a timeout or a broken connection after sending: it may apply,
//!   or not, even long after the client gave up.
//!
//! Under Raft the final value of a key is then the value of its latest acknowledged write, or of a
//! *later* write whose outcome is unknown, and nothing else: never an older value (an
//! unacknowledged write issued before an acknowledged one cannot be committed after it, because
//! committed log entries keep their order), never a failed write's value, never missing once a
//! write was acknowledged.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// What the client learnt about one write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Committed (HTTP 200).
    Acked,
    /// Definitely not applied (HTTP 503, or never sent).
    Failed,
    /// May or may not be applied.
    Unknown,
}

/// One write of a key: `Some(value)` for a put, `None` for a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The value written (`None`: a delete).
    pub value: Option<String>,
    /// What the client learnt.
    pub outcome: Outcome,
    /// What the answer said, if worth keeping (shown in violations).
    pub note: Option<String>,
}

/// The writes of every key, each key's in the order its (single) writer issued them.
#[derive(Debug, Clone, Default)]
pub struct History {
    keys: BTreeMap<String, Vec<Write>>,
}

/// A key's final value that the history does not allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The key.
    pub key: String,
    /// What was read (`None`: missing).
    pub observed: Option<String>,
    /// What would have been fine.
    pub allowed: BTreeSet<Option<String>>,
    /// Why the observed value is wrong.
    pub why: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "key {:?}: read {:?}, allowed {:?}: {}",
            self.key, self.observed, self.allowed, self.why
        )
    }
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a put of `key = value` and its outcome (call in the order the writes were issued).
    pub fn put(&mut self, key: &str, value: &str, outcome: Outcome) {
        self.record(key, Some(value.to_string()), outcome, None);
    }

    /// Records a write of `key` (`None`: a delete), its outcome and what the answer said.
    pub fn record(
        &mut self,
        key: &str,
        value: Option<String>,
        outcome: Outcome,
        note: Option<String>,
    ) {
        self.keys.entry(key.to_string()).or_default().push(Write { value, outcome, note });
    }

    /// Adds another history's keys (its keys must not already be here: one writer per key).
    pub fn merge(&mut self, other: History) {
        for (key, writes) in other.keys {
            assert!(!self.keys.contains_key(&key), "key {key:?} has two writers");
            self.keys.insert(key, writes);
        }
    }

    /// Every key written.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// The writes of `key`, in issue order.
    pub fn writes(&self, key: &str) -> &[Write] {
        self.keys.get(key).map_or(&[], Vec::as_slice)
    }

    /// How many writes had each outcome.
    pub fn count(&self, outcome: Outcome) -> usize {
        self.keys.values().flatten().filter(|w| w.outcome == outcome).count()
    }

    /// The latest acknowledged value of `key`: `None` if no write of it was acknowledged,
    /// `Some(None)` if the latest acknowledged write was a delete.
    pub fn latest_acked(&self, key: &str) -> Option<Option<&str>> {
        self.writes(key)
            .iter()
            .rev()
            .find(|w| w.outcome == Outcome::Acked)
            .map(|w| w.value.as_deref())
    }

    /// The final values of `key` the history allows: the latest acknowledged one (or "missing"
    /// if none was acknowledged) and every later write whose outcome is unknown.
    pub fn allowed(&self, key: &str) -> BTreeSet<Option<String>> {
        let writes = self.writes(key);
        let last_ack = writes.iter().rposition(|w| w.outcome == Outcome::Acked);
        let mut allowed = BTreeSet::new();
        let later = match last_ack {
            Some(i) => {
                allowed.insert(writes[i].value.clone());
                i + 1
            }
            None => {
                allowed.insert(None);
                0
            }
        };
        for w in &writes[later..] {
            if w.outcome == Outcome::Unknown {
                allowed.insert(w.value.clone());
            }
        }
        allowed
    }

    /// Checks one key's final value.
    pub fn check(&self, key: &str, observed: Option<&str>) -> Result<(), Violation> {
        let allowed = self.allowed(key);
        let observed = observed.map(str::to_string);
        if allowed.contains(&observed) {
            return Ok(());
        }
        let writes = self.writes(key);
        let why = match writes.iter().position(|w| w.value == observed) {
            None if observed.is_none() => "an acknowledged write is lost".to_string(),
            None => "a value that was never written".to_string(),
            Some(i) => match writes[i].outcome {
                Outcome::Failed => format!(
                    "write #{i} was refused ({}) but was applied anyway",
                    writes[i].note.as_deref().unwrap_or("503 or never sent")
                ),
                _ => format!(
                    "write #{i} ({:?}) is older than the latest acknowledged write: it was \
                     overwritten by an acknowledged write and came back",
                    writes[i].outcome
                ),
            },
        };
        Err(Violation { key: key.to_string(), observed, allowed, why })
    }

    /// Checks a whole final state (keys not in `state` are missing). Keys in `state` that the
    /// history never wrote are ignored.
    pub fn check_state(&self, state: &BTreeMap<String, String>) -> Vec<Violation> {
        self.keys().filter_map(|k| self.check(k, state.get(k).map(String::as_str)).err()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_values() {
        let mut h = History::new();
        h.put("k", "v1", Outcome::Unknown);
        h.put("k", "v2", Outcome::Acked);
        h.put("k", "v3", Outcome::Failed);
        h.put("k", "v4", Outcome::Unknown);
        assert!(h.check("k", Some("v2")).is_ok());
        assert!(h.check("k", Some("v4")).is_ok());
        assert!(h.check("k", Some("v1")).is_err(), "older than the acknowledged v2");
        assert!(h.check("k", Some("v3")).is_err(), "failed write applied");
        assert!(h.check("k", None).is_err(), "acknowledged write lost");
        h.put("u", "x", Outcome::Unknown);
        assert!(h.check("u", None).is_ok() && h.check("u", Some("x")).is_ok());
        h.record("d", Some("a".into()), Outcome::Acked, None);
        h.record("d", None, Outcome::Acked, Some("deleted".into()));
        assert!(h.check("d", None).is_ok() && h.check("d", Some("a")).is_err());
    }
}
