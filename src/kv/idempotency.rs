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

/// One remembered write.
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

/// The table (see the module docs). Cloning is O(1): the records are shared until written.
#[derive(Clone, Debug, Default)]
pub struct Table {
    records: Arc<HashMap<String, Record>>,
    /// Expiry order: (expires_at_ms, index of the write) -> key.
    expiry: Arc<BTreeMap<(u64, u64), String>>,
    /// The largest `at_ms` applied.
    clock_ms: u64,
}

impl Table {
    /// What the table knows of `key` for a write with `fingerprint`.
    pub fn lookup(&self, key: &str, fingerprint: &str) -> Lookup<'_> {
        match self.records.get(key) {
            None => Lookup::New,
            Some(r) if r.fingerprint == fingerprint => Lookup::Replay(&r.applied),
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
        let slot = (expires, applied.index);
        let record = Record {
            key: meta.key.clone(),
            fingerprint: meta.fingerprint.clone(),
            expires_at_ms: expires,
            applied,
        };
        self.insert(record, slot);
        while self.records.len() as u64 > meta.cap.max(1) {
            let Some((&oldest, _)) = self.expiry.first_key_value() else { break };
            self.forget(oldest);
        }
    }

    fn insert(&mut self, record: Record, slot: (u64, u64)) {
        let key = record.key.clone();
        if let Some(old) = Arc::make_mut(&mut self.records).insert(key.clone(), record) {
            Arc::make_mut(&mut self.expiry).remove(&(old.expires_at_ms, old.applied.index));
        }
        Arc::make_mut(&mut self.expiry).insert(slot, key);
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
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.expiry.values().filter_map(|k| self.records.get(k))
    }

    /// A table from a snapshot's records and clock.
    pub fn restore(clock_ms: u64, records: Vec<Record>) -> Table {
        let mut t = Table { clock_ms, ..Table::default() };
        for r in records {
            let slot = (r.expires_at_ms, r.applied.index);
            Arc::make_mut(&mut t.expiry).insert(slot, r.key.clone());
            Arc::make_mut(&mut t.records).insert(r.key.clone(), r);
        }
        t
    }
}
