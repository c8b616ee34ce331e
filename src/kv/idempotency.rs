//! Exactly-once writes: the table of idempotency keys and the answers of the writes that used
//! them.
//!
//! A client that sends a write with an `Idempotency-Key` header (the convention of the IETF
//! httpapi draft) may send it again after a timeout or a lost connection: the state machine
//! remembers, per key, the [`Applied`] answer of the first attempt, and a retry — a second log
//! entry with the same key, or a lookup by the leader before proposing — gets that answer and
//! changes nothing. A retry with the same key but another write is refused (422).
//!
//! The table is part of the state machine: replicated (it is filled by applying entries), kept
//! in snapshots, and bounded. **Expiry is decided by the log, not by any node's clock**: every
//! idempotent entry carries its proposer's wall clock (`at_ms`) and the TTL and cap the
//! proposer was configured with ([`IdempotencyMeta`]). The table's clock is the largest `at_ms`
//! applied so far (so a new leader whose clock is behind cannot move it back), a record expires
//! once that clock passes `its clock + ttl`, and beyond `cap` records the soonest-expiring go
//! first. Every node applies the same entries, so every node forgets the same records at the
//! same index. What a client can rely on: a retry within the TTL is answered from the table.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::command::{Applied, IdempotencyMeta};

/// One remembered write, as a snapshot stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The idempotency key.
    pub key: String,
    /// The write's fingerprint ([`IdempotencyMeta::fingerprint`]).
    pub fingerprint: String,
    /// The table clock at which the record expires.
    pub expires_at_ms: u64,
    /// The first attempt's answer.
    pub applied: Applied,
}

/// [`Record`] borrowed from the table (what a snapshot serialises; the same JSON).
#[derive(Serialize)]
pub struct RecordRef<'a> {
    key: &'a str,
    fingerprint: String,
    expires_at_ms: u64,
    applied: &'a Applied,
}

/// What the table says about a key.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// Never seen (or forgotten): do the write.
    New,
    /// Seen with the same write: answer this, change nothing.
    Replay(&'a Applied),
    /// Seen with another write: refuse.
    Reused,
}

/// A write's fingerprint as kept: the 32 hex digits the server makes ([`IdempotencyMeta`]) as
/// the 16 bytes they spell, anything else as it came.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Fingerprint {
    Hex(u128),
    Text(Box<str>),
}

impl Fingerprint {
    fn new(text: &str) -> Fingerprint {
        let canonical =
            text.len() == 32 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        match u128::from_str_radix(text, 16) {
            Ok(n) if canonical => Fingerprint::Hex(n),
            _ => Fingerprint::Text(text.into()),
        }
    }

    fn is(&self, text: &str) -> bool {
        match self {
            Fingerprint::Hex(_) => *self == Fingerprint::new(text),
            Fingerprint::Text(t) => **t == *text,
        }
    }

    fn text(&self) -> String {
        match self {
            Fingerprint::Hex(n) => format!("{n:032x}"),
            Fingerprint::Text(t) => t.to_string(),
        }
    }
}

/// What the table keeps per key (the key itself is the map's).
#[derive(Debug)]
struct Slot {
    fingerprint: Fingerprint,
    expires_at_ms: u64,
    applied: Applied,
}

/// The table (see the module docs). Cloning is O(1), and the first write after a clone (the
/// live table after a snapshot froze it) copies only the two indexes — pointers to the shared
/// keys and slots, not the records — so a snapshot costs the apply path a few milliseconds at
/// the cap, not a second copy of every record.
#[derive(Clone, Debug, Default)]
pub struct Table {
    records: Arc<HashMap<Arc<str>, Arc<Slot>>>,
    /// Expiry order: (expires_at_ms, index of the write) -> key.
    expiry: Arc<BTreeMap<(u64, u64), Arc<str>>>,
    /// The largest `at_ms` applied.
    clock_ms: u64,
}

impl Table {
    /// What the table knows of `key` for a write with `fingerprint`.
    pub fn lookup(&self, key: &str, fingerprint: &str) -> Lookup<'_> {
        match self.records.get(key) {
            None => Lookup::New,
            Some(r) if r.fingerprint.is(fingerprint) => Lookup::Replay(&r.applied),
            Some(_) => Lookup::Reused,
        }
    }

    /// Moves the table's clock to `meta.at_ms` (never back) and forgets what expired by then.
    pub fn advance(&mut self, meta: &IdempotencyMeta) {
        self.clock_ms = self.clock_ms.max(meta.at_ms);
        while let Some((&(at, index), _)) = self.expiry.first_key_value() {
            if at > self.clock_ms {
                break;
            }
            self.forget((at, index));
        }
    }

    fn forget(&mut self, slot: (u64, u64)) {
        if let Some(key) = Arc::make_mut(&mut self.expiry).remove(&slot) {
            Arc::make_mut(&mut self.records).remove(&key);
        }
    }

    /// Remembers `applied` under `meta.key`, then evicts the soonest-expiring records beyond
    /// `meta.cap`.
    pub fn remember(&mut self, meta: &IdempotencyMeta, applied: Applied) {
        let expires = self.clock_ms.saturating_add(meta.ttl_ms);
        let slot = Slot {
            fingerprint: Fingerprint::new(&meta.fingerprint),
            expires_at_ms: expires,
            applied,
        };
        self.insert(Arc::from(meta.key.as_str()), slot);
        while self.records.len() as u64 > meta.cap.max(1) {
            let Some((&oldest, _)) = self.expiry.first_key_value() else { break };
            self.forget(oldest);
        }
    }

    fn insert(&mut self, key: Arc<str>, slot: Slot) {
        let at = (slot.expires_at_ms, slot.applied.index);
        if let Some(old) = Arc::make_mut(&mut self.records).insert(Arc::clone(&key), Arc::new(slot))
        {
            Arc::make_mut(&mut self.expiry).remove(&(old.expires_at_ms, old.applied.index));
        }
        Arc::make_mut(&mut self.expiry).insert(at, key);
    }

    /// Records kept.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The table's clock (ms since the Unix epoch, as the proposers' clocks said).
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// Every record, in expiry order (for a snapshot).
    pub fn records(&self) -> impl Iterator<Item = RecordRef<'_>> {
        self.expiry.values().filter_map(|k| {
            self.records.get(k).map(|s| RecordRef {
                key: k,
                fingerprint: s.fingerprint.text(),
                expires_at_ms: s.expires_at_ms,
                applied: &s.applied,
            })
        })
    }

    /// A table from a snapshot's records and clock.
    pub fn restore(clock_ms: u64, records: Vec<Record>) -> Table {
        let mut t = Table { clock_ms, ..Table::default() };
        for r in records {
            let slot = Slot {
                fingerprint: Fingerprint::new(&r.fingerprint),
                expires_at_ms: r.expires_at_ms,
                applied: r.applied,
            };
            t.insert(Arc::from(r.key), slot);
        }
        t
    }
}
