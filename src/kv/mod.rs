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
//!
//! **Memory.** The map is a set of records (each the key, the value and the revisions as one run
//! of bytes; `record.rs` has the layout) kept back to back in pages of 2–4 KiB ([`Pages`];
//! `pages.rs` has the arithmetic: ~125 bytes per key of 12 bytes with a 100-byte value, where a
//! `BTreeSet` of one heap block per key took ~158). Snapshots are written and read as streams
//! (`snapshot.rs`), so taking or loading one never holds its encoding in memory whole.

mod command;
pub mod idempotency;
pub mod pages;
pub mod range;
mod record;
mod snapshot;
pub mod txn;

use std::collections::BTreeMap;
use std::io::{self, BufRead, Write};
use std::ops::Bound;
use std::sync::Arc;

pub use command::{
    Applied, Command, Compare, CompareOp, DeleteSpec, IdempotencyMeta, KvItem, Outcome, RangeReply,
    RangeSpec, Target, Txn, TxnOp, TxnResponse,
};
pub use pages::Pages;
pub use range::{Bounds, View};
pub use record::{KeyValue, Rec};
pub use snapshot::snapshot_cluster;

use crate::error::{Error, Result};
use crate::raft::{Entry, Index, Term};
use idempotency::{Lookup, Table};

/// Changes made while a snapshot or a long read shares the map: `Some` for a put, `None` for a
/// delete.
pub type Overlay = BTreeMap<String, Option<KeyValue>>;

/// The map, plus how far into the log it reflects.
///
/// **Snapshots and long reads without a long pause.** Copying a million-key map to snapshot it
/// would stop writes for as long as the copy takes. Instead the map lives behind an `Arc`:
/// [`KvStore::freeze`] hands the snapshot thread a second reference to it (O(1)) and from then on
/// writes go to a small `overlay` of changes (a `None` there is a delete), which reads consult
/// first. A long range read does the same ([`KvStore::view`]): it shares the map and the overlay
/// (which later writes then copy before changing it) and walks them without the lock. Once
/// nothing else holds the map, [`KvStore::try_merge`] folds the overlay back into it — the only
/// pause, proportional to the writes made in the meantime.
#[derive(Debug, Clone)]
pub struct KvStore {
    /// The map as of the last merge (records ordered and found by key; see [`Pages`]). Never
    /// modified while `overlay` exists (a snapshot or a view may be reading it).
    base: Arc<Pages>,
    /// Changes made since [`KvStore::freeze`] or [`KvStore::view`].
    overlay: Option<Arc<Overlay>>,
    /// The store's revision (1 when empty; see the module docs).
    revision: u64,
    /// Number of live keys (kept up to date, so `/status` never walks the overlay under the lock).
    len: usize,
    /// Index of the last log entry applied.
    applied_index: Index,
    /// Term of that entry (a snapshot names both).
    applied_term: Term,
    /// Idempotency keys and their answers ([`idempotency`]).
    idempotency: Table,
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
            idempotency: Table::default(),
        }
    }
}

/// The state machine at one index, frozen for a snapshot (shares its map with the live store).
#[derive(Debug, Clone)]
pub struct Frozen {
    map: Arc<Pages>,
    idempotency: Table,
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
        let mut out = Vec::with_capacity(self.map.len() * 64);
        // Writing to a Vec cannot fail.
        let _ = self.encode_to(cluster, &mut out);
        out
    }

    /// [`Frozen::encode`] written to `out` as it is produced (a snapshot file is written so,
    /// never held in memory whole); fails only when `out` does.
    pub fn encode_to(&self, cluster: &serde_json::Value, out: &mut dyn Write) -> io::Result<()> {
        let at = (self.index, self.term, self.revision);
        let walk = range::walk_all(&self.map, None);
        snapshot::encode(walk, self.map.len(), at, &self.idempotency, cluster, out)
    }
}

/// The revision a write applies at, and whether it changed anything.
struct Change {
    revision: u64,
    changed: bool,
}

impl KvStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one committed entry and says what it did. Entries must come in index order; an
    /// entry at or below `applied_index` is ignored (it was applied already), a gap is an error.
    pub fn apply(&mut self, entry: &Entry) -> Result<Applied> {
        let done = |kv: &KvStore, outcome| Applied {
            index: entry.index,
            term: entry.term,
            revision: kv.revision,
            outcome,
            replayed: false,
        };
        if entry.index <= self.applied_index {
            return Ok(done(self, Outcome::Written));
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
            return Ok(done(self, Outcome::Written));
        }
        let command = match Command::decode(&entry.command) {
            Ok(c) => c,
            // A command this version cannot read: skip it rather than stop applying, and say so.
            Err(e) => {
                log::error!("skipping entry {}: {e}", entry.index);
                return Ok(done(self, Outcome::Written));
            }
        };
        let Command::Idempotent { meta, command } = command else {
            let outcome = self.execute(command);
            return Ok(done(self, outcome));
        };
        self.idempotency.advance(&meta);
        match self.idempotency.lookup(&meta.key, &meta.fingerprint) {
            Lookup::Replay(first) => Ok(Applied { replayed: true, ..first.clone() }),
            Lookup::Reused => Ok(done(self, Outcome::KeyReused { key: meta.key })),
            Lookup::New => {
                let outcome = self.execute(*command);
                let applied = done(self, outcome);
                self.idempotency.remember(&meta, applied.clone());
                Ok(applied)
            }
        }
    }

    /// Runs a write (not an idempotent wrapper: its inner command) on the store.
    fn execute(&mut self, command: Command) -> Outcome {
        let mut change = Change { revision: self.revision + 1, changed: false };
        let outcome = match command {
            Command::Put { key, value, if_revision } => {
                if let Some(want) = if_revision {
                    let have = self.entry(&key).map_or(0, |kv| kv.mod_revision());
                    if have != want {
                        let current = self.entry(&key).map(|kv| KvItem::new(&key, kv, false));
                        return Outcome::Refused { current };
                    }
                }
                self.put(key, value, &mut change);
                Outcome::Written
            }
            Command::Delete { key } => {
                self.delete(&key, &mut change);
                Outcome::Written
            }
            Command::DeleteRange { range } => match Bounds::of(&range) {
                Ok(bounds) => Outcome::Deleted(self.delete_range(&bounds, &mut change)),
                // Checked before proposing; an entry that still fails changes nothing.
                Err(_) => Outcome::Deleted(0),
            },
            Command::Txn { txn } => {
                let succeeded = txn.compare.iter().all(|c| c.holds(self.entry(&c.key)));
                let branch = if succeeded { txn.success } else { txn.failure };
                let responses = branch.into_iter().map(|op| self.txn_op(op, &mut change)).collect();
                Outcome::Txn { succeeded, responses }
            }
            // Not nested (the server never proposes it so): run the inner write, unremembered.
            Command::Idempotent { command, .. } => return self.execute(*command),
        };
        if change.changed {
            self.revision = change.revision;
        }
        outcome
    }

    fn put(&mut self, key: String, value: String, change: &mut Change) {
        let rev = change.revision;
        change.changed = true;
        let kv = match self.entry(&key) {
            Some(old) => {
                let (create_revision, _, version) = old.revisions();
                KeyValue::new(&key, &value, create_revision, rev, version + 1)
            }
            None => {
                self.len += 1;
                KeyValue::new(&key, &value, rev, rev, 1)
            }
        };
        self.set(key, Some(kv));
    }

    fn delete(&mut self, key: &str, change: &mut Change) -> u64 {
        if self.entry(key).is_none() {
            return 0;
        }
        change.changed = true;
        self.len -= 1;
        self.set(key.to_string(), None);
        1
    }

    fn delete_range(&mut self, bounds: &Bounds, change: &mut Change) -> u64 {
        let keys: Vec<String> = self.walk(bounds, false).map(|(k, _)| k.to_string()).collect();
        keys.iter().map(|k| self.delete(k, change)).sum()
    }

    fn txn_op(&mut self, op: TxnOp, change: &mut Change) -> TxnResponse {
        match op {
            TxnOp::Put { key, value } => {
                self.put(key.clone(), value, change);
                TxnResponse::Put { key }
            }
            TxnOp::Delete(spec) => {
                let deleted = match spec.bounds() {
                    Ok(Bounds { start: Bound::Included(a), end: Bound::Included(b) }) if a == b => {
                        self.delete(&a, change)
                    }
                    Ok(bounds) => self.delete_range(&bounds, change),
                    Err(_) => 0,
                };
                TxnResponse::Delete { deleted }
            }
            op => {
                let revision = if change.changed { change.revision } else { self.revision };
                self.txn_read(&op, revision)
            }
        }
    }

    /// A get or range of a transaction (`revision`: the one its writes apply at).
    fn txn_read(&self, op: &TxnOp, revision: u64) -> TxnResponse {
        txn_read(self, op, revision)
    }

    /// A transaction that writes nothing ([`Txn::is_read_only`]), evaluated on the current state
    /// without a log entry (the caller has made the read linearizable).
    pub fn read_txn(&self, txn: &Txn) -> Outcome {
        read_txn(self, txn, self.revision)
    }

    /// What the idempotency table says of `key` for a write with `fingerprint` (the leader asks
    /// before proposing; see [`idempotency`]).
    pub fn idempotency_lookup(&self, key: &str, fingerprint: &str) -> Option<Result<Applied>> {
        match self.idempotency.lookup(key, fingerprint) {
            Lookup::New => None,
            Lookup::Replay(a) => Some(Ok(Applied { replayed: true, ..a.clone() })),
            Lookup::Reused => Some(Err(Error::IdempotencyKeyReused(format!(
                "idempotency key {key:?} was used for another write"
            )))),
        }
    }

    /// Records in the idempotency table.
    pub fn idempotency_len(&self) -> usize {
        self.idempotency.len()
    }

    /// Stores a put (`Some`) or a delete (`None`); the caller has counted it in `len` already.
    fn set(&mut self, key: String, value: Option<KeyValue>) {
        if let Some(overlay) = &mut self.overlay {
            // Copies the overlay first if a view still reads it.
            Arc::make_mut(overlay).insert(key, value);
            return;
        }
        // Nothing shares the map (that is what `overlay` being absent means), so this never
        // copies it.
        let map = Arc::make_mut(&mut self.base);
        match value {
            Some(v) => {
                map.insert(&v);
            }
            None => {
                map.remove(key.as_bytes());
            }
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entry(key).map(|kv| kv.value())
    }

    /// The value of `key` with its revisions.
    pub fn entry(&self, key: &str) -> Option<Rec<'_>> {
        if let Some(change) = self.overlay.as_ref().and_then(|o| o.get(key)) {
            return change.as_ref().map(KeyValue::rec);
        }
        self.base.get(key.as_bytes())
    }

    /// The live keys within `bounds`, in order.
    pub fn walk<'a>(
        &'a self,
        bounds: &Bounds,
        desc: bool,
    ) -> Box<dyn Iterator<Item = (&'a str, Rec<'a>)> + 'a> {
        range::walk(&self.base, self.overlay.as_deref(), bounds, desc)
    }

    /// The store as it is now, for a read that walks it without the lock (O(1); see the type's
    /// docs).
    pub fn view(&mut self) -> View {
        let overlay = self.overlay.get_or_insert_with(Arc::default);
        View {
            base: Arc::clone(&self.base),
            overlay: Some(Arc::clone(overlay)),
            revision: self.revision,
        }
    }

    /// The store's revision (see the module docs).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// `{"key": "value", ...}` for every key, sorted (the v1 `GET /kv/all` body).
    pub fn values_json(&self) -> serde_json::Result<Vec<u8>> {
        let view = View {
            base: Arc::clone(&self.base),
            overlay: self.overlay.clone(),
            revision: self.revision,
        };
        view.values_json()
    }

    /// Every key and value, sorted by key (a copy: for tests and tools).
    pub fn all(&self) -> BTreeMap<String, KeyValue> {
        range::walk_all(&self.base, self.overlay.as_deref())
            .map(|(k, v)| (k.to_string(), v.to_owned()))
            .collect()
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
    /// [`KvStore::try_merge`]. `None` if an earlier frozen state or a view still shares the map.
    pub fn freeze(&mut self) -> Option<Frozen> {
        if !self.try_merge() {
            return None;
        }
        self.overlay = Some(Arc::default());
        Some(Frozen {
            map: Arc::clone(&self.base),
            idempotency: self.idempotency.clone(),
            revision: self.revision,
            index: self.applied_index,
            term: self.applied_term,
        })
    }

    /// Folds the overlay back into the map once nothing else shares the map. Returns true when
    /// there is no overlay left.
    pub fn try_merge(&mut self) -> bool {
        if self.overlay.is_none() {
            return true;
        }
        let Some(map) = Arc::get_mut(&mut self.base) else { return false };
        let fold = |map: &mut Pages, k: &str, v: Option<KeyValue>| match v {
            Some(v) => {
                map.insert(&v);
            }
            None => {
                map.remove(k.as_bytes());
            }
        };
        // Moved when nothing else reads the overlay (no copy of each record), copied otherwise.
        match self.overlay.take().map(Arc::try_unwrap) {
            Some(Ok(overlay)) => overlay.into_iter().for_each(|(k, v)| fold(map, &k, v)),
            Some(Err(shared)) => shared.iter().for_each(|(k, v)| fold(map, k, v.clone())),
            None => {}
        }
        true
    }

    /// Serialises the whole state (for a snapshot): a JSON header line with the applied index and
    /// term, the store's revision, the cluster's configuration at that index (opaque here: the
    /// server's, see [`snapshot_cluster`]), the key count, the idempotency table's clock and
    /// record count; then every key as `[u32 LE key length][key][u32 LE value length][value][u64
    /// LE create revision][u64 LE mod revision][u64 LE version]`; then every idempotency record
    /// as `[u32 LE length][JSON]`. The snapshot file adds its own checksum around this. (Formats
    /// `raftlabkv-kv-2`, without the table, and `raftlabkv-kv-1`, without revisions, are still
    /// read: a kv-1 key gets revision 1, version 1.)
    pub fn encode_snapshot(&self, cluster: &serde_json::Value) -> Vec<u8> {
        let at = (self.applied_index, self.applied_term, self.revision);
        let walk = range::walk_all(&self.base, self.overlay.as_deref());
        let mut out = Vec::with_capacity(self.len * 64);
        // Writing to a Vec cannot fail.
        let _ = snapshot::encode(walk, self.len, at, &self.idempotency, cluster, &mut out);
        out
    }

    /// Rebuilds a store from [`KvStore::encode_snapshot`] output; errors name the byte offset.
    pub fn decode_snapshot(bytes: &[u8]) -> Result<KvStore> {
        Ok(snapshot::decode(&mut &bytes[..])?.0)
    }

    /// [`KvStore::decode_snapshot`] read as it goes from `input` (a snapshot file is read so,
    /// never held in memory whole), with the `cluster` field of its header
    /// ([`snapshot_cluster`]).
    pub fn decode_snapshot_from(
        input: &mut dyn BufRead,
    ) -> Result<(KvStore, Option<serde_json::Value>)> {
        snapshot::decode(input)
    }
}

/// Reading the store: the live store, or a [`View`] of it.
pub trait Reader {
    /// The value of `key` with its revisions.
    fn entry(&self, key: &str) -> Option<Rec<'_>>;
    /// The live keys within `bounds`, in order.
    fn walk<'a>(
        &'a self,
        bounds: &Bounds,
        desc: bool,
    ) -> Box<dyn Iterator<Item = (&'a str, Rec<'a>)> + 'a>;
}

impl Reader for KvStore {
    fn entry(&self, key: &str) -> Option<Rec<'_>> {
        KvStore::entry(self, key)
    }
    fn walk<'a>(
        &'a self,
        bounds: &Bounds,
        desc: bool,
    ) -> Box<dyn Iterator<Item = (&'a str, Rec<'a>)> + 'a> {
        KvStore::walk(self, bounds, desc)
    }
}

impl Reader for View {
    fn entry(&self, key: &str) -> Option<Rec<'_>> {
        View::entry(self, key)
    }
    fn walk<'a>(
        &'a self,
        bounds: &Bounds,
        desc: bool,
    ) -> Box<dyn Iterator<Item = (&'a str, Rec<'a>)> + 'a> {
        View::walk(self, bounds, desc)
    }
}

/// A get or range of a transaction, read from `r` (`revision`: the one the answer is at).
fn txn_read(r: &impl Reader, op: &TxnOp, revision: u64) -> TxnResponse {
    match op {
        TxnOp::Get { key } => TxnResponse::Get {
            key: key.clone(),
            kv: r.entry(key).map(|kv| KvItem::new(key, kv, false)),
        },
        TxnOp::Range(spec) => TxnResponse::Range(match Bounds::of(spec) {
            Ok(bounds) => range::range_reply(r.walk(&bounds, spec.desc), spec, revision),
            Err(_) => RangeReply { revision, ..RangeReply::default() },
        }),
        // Writes are not reads.
        TxnOp::Put { key, .. } => TxnResponse::Put { key: key.clone() },
        TxnOp::Delete(_) => TxnResponse::Delete { deleted: 0 },
    }
}

/// A transaction that writes nothing, evaluated on `r` (at `revision`).
fn read_txn(r: &impl Reader, txn: &Txn, revision: u64) -> Outcome {
    let succeeded = txn.compare.iter().all(|c| c.holds(r.entry(&c.key)));
    let branch = if succeeded { &txn.success } else { &txn.failure };
    let responses = branch.iter().map(|op| txn_read(r, op, revision)).collect();
    Outcome::Txn { succeeded, responses }
}

impl View {
    /// The value of `key` with its revisions, as of the view.
    pub fn entry(&self, key: &str) -> Option<Rec<'_>> {
        if let Some(change) = self.overlay.as_ref().and_then(|o| o.get(key)) {
            return change.as_ref().map(KeyValue::rec);
        }
        self.base.get(key.as_bytes())
    }

    /// A transaction that writes nothing, evaluated on the view.
    pub fn read_txn(&self, txn: &Txn) -> Outcome {
        read_txn(self, txn, self.revision)
    }
}

#[cfg(test)]
mod tests;
