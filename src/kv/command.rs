//! What travels through the log ([`Command`]) and what applying it gives back ([`Applied`]).
//!
//! Commands are small JSON documents so that a log dump is readable. A plain put is
//! `{"op":"put","key":"k","value":"v"}` (the shape since v1); the newer commands add fields that
//! are left out when unused, so an old entry still decodes.

use serde::{Deserialize, Serialize};

use super::Rec;
use crate::error::{Error, Result};
use crate::raft::{Index, Term};

/// A state machine command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// Set `key` to `value`; with `if_revision`, only if the key's `mod_revision` equals it
    /// (0: only if the key is absent) — otherwise [`Outcome::Refused`].
    Put {
        /// The key.
        key: String,
        /// The new value.
        value: String,
        /// The condition, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        if_revision: Option<u64>,
    },
    /// Remove `key` (fine if absent).
    Delete {
        /// The key.
        key: String,
    },
    /// Remove every key of a range ([`Outcome::Deleted`] counts them); one revision for all.
    DeleteRange {
        /// The range.
        range: RangeSpec,
    },
    /// A transaction: one entry, applied atomically ([`super::txn`]).
    Txn {
        /// Compares, then the branch to run.
        txn: Txn,
    },
    /// `command`, remembered under an idempotency key ([`super::idempotency`]).
    Idempotent {
        /// The key and what the proposer stamped on it.
        meta: IdempotencyMeta,
        /// The write itself.
        command: Box<Command>,
    },
}

impl Command {
    /// A put without condition.
    pub fn put(key: impl Into<String>, value: impl Into<String>) -> Command {
        Command::Put { key: key.into(), value: value.into(), if_revision: None }
    }

    /// Encodes the command for a log entry.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising strings, numbers and JSON values cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes a command from a log entry.
    pub fn decode(bytes: &[u8]) -> Result<Command> {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::Internal(format!("undecodable command in the log: {e}")))
    }

    /// A short human description (the dashboard's log tail, `dump`).
    pub fn describe(&self) -> (&'static str, String) {
        match self {
            Command::Put { key, value, if_revision: None } => ("put", format!("put {key}={value}")),
            Command::Put { key, value, if_revision: Some(r) } => {
                ("put", format!("put {key}={value} if mod_revision={r}"))
            }
            Command::Delete { key } => ("delete", format!("delete {key}")),
            Command::DeleteRange { range } => ("delete", format!("delete range {range}")),
            Command::Txn { txn } => (
                "txn",
                format!(
                    "txn: {} compares, {} success ops, {} failure ops",
                    txn.compare.len(),
                    txn.success.len(),
                    txn.failure.len()
                ),
            ),
            Command::Idempotent { meta, command } => {
                let (kind, text) = command.describe();
                (kind, format!("{text} (idempotency key {})", meta.key))
            }
        }
    }
}

/// What the proposing leader stamps on an idempotent write. Expiry uses `at_ms` (the leader's
/// wall clock, carried here so that no node reads its own clock when applying), and `ttl_ms`
/// and `cap` are the leader's settings, carried for the same reason: every node expires and
/// evicts the same records at the same index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyMeta {
    /// The client's `Idempotency-Key`.
    pub key: String,
    /// A fingerprint of the write (hex SHA-256 of its encoding, truncated): a reuse of the key
    /// with another write is refused.
    pub fingerprint: String,
    /// The proposer's wall clock, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// How long the record is kept.
    pub ttl_ms: u64,
    /// At most this many records are kept (the oldest expiring first).
    pub cap: u64,
}

/// A range of keys: a prefix, or `start` alone (that one key), or `start`..`end` (end
/// exclusive), with the options of `GET /kv/range`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeSpec {
    /// Every key starting with this ("" for every key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The first key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// The key after the last (exclusive); absent with `start`: just `start`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// Return at most this many keys (0 or absent: no limit); `count` still counts them all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// Leave the values out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keys_only: bool,
    /// Only count.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub count_only: bool,
    /// Descending key order.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub desc: bool,
}

impl std::fmt::Display for RangeSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.prefix, &self.start, &self.end) {
            (Some(p), _, _) => write!(f, "prefix {p:?}"),
            (None, Some(s), Some(e)) => write!(f, "[{s:?}, {e:?})"),
            (None, Some(s), None) => write!(f, "key {s:?}"),
            (None, None, _) => write!(f, "(empty)"),
        }
    }
}

/// A transaction (`POST /kv/txn`): if every compare holds, `success` runs, else `failure`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Txn {
    /// All must hold for `success` to run.
    #[serde(default)]
    pub compare: Vec<Compare>,
    /// Run when every compare holds.
    #[serde(default)]
    pub success: Vec<TxnOp>,
    /// Run otherwise.
    #[serde(default)]
    pub failure: Vec<TxnOp>,
}

/// One condition of a transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compare {
    /// The key compared.
    pub key: String,
    /// What of it.
    pub target: Target,
    /// How.
    pub op: CompareOp,
    /// With what: a string for `value`, a number for the others.
    pub value: serde_json::Value,
}

/// What a [`Compare`] looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The value (a missing key fails every value comparison).
    Value,
    /// The version (0 for a missing key).
    Version,
    /// The create revision (0 for a missing key).
    CreateRevision,
    /// The mod revision (0 for a missing key).
    ModRevision,
}

/// A comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareOp {
    /// Equal.
    #[serde(rename = "==")]
    Eq,
    /// Not equal.
    #[serde(rename = "!=")]
    Ne,
    /// Less than.
    #[serde(rename = "<")]
    Lt,
    /// Greater than.
    #[serde(rename = ">")]
    Gt,
}

/// One operation of a transaction branch: `{"put": {...}}`, `{"delete": {...}}`, `{"get":
/// {...}}` or `{"range": {...}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TxnOp {
    /// Set a key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Remove a key (`key`) or a range (`prefix`, or `start`/`end`).
    Delete(DeleteSpec),
    /// Read a key.
    Get {
        /// The key.
        key: String,
    },
    /// Read a range.
    Range(RangeSpec),
}

/// The target of a transaction's delete: one key or a range.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteSpec {
    /// One key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Or every key with this prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Or from this key...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// ...to this one (exclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
}

/// A key with its value and revisions, as answers show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvItem {
    /// The key.
    pub key: String,
    /// The value (absent with `keys_only`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Revision of the put that created it.
    pub create_revision: u64,
    /// Revision of its latest put.
    pub mod_revision: u64,
    /// Puts since it was created.
    pub version: u64,
}

impl KvItem {
    /// `key` with `kv`'s value (unless `keys_only`) and revisions.
    pub fn new(key: &str, kv: Rec<'_>, keys_only: bool) -> KvItem {
        let (create_revision, mod_revision, version) = kv.revisions();
        KvItem {
            key: key.to_string(),
            value: (!keys_only).then(|| kv.value().to_string()),
            create_revision,
            mod_revision,
            version,
        }
    }
}

/// The answer to a range read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeReply {
    /// The store's revision the range was read at.
    #[serde(default)]
    pub revision: u64,
    /// Keys in the range, whatever the limit.
    pub count: u64,
    /// True when the limit cut the answer.
    pub more: bool,
    /// The first key not returned (continue from it), when `more`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// The keys returned (none with `count_only`).
    #[serde(default)]
    pub kvs: Vec<KvItem>,
}

/// What one operation of a transaction gave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxnResponse {
    /// A put: the key written.
    Put {
        /// The key.
        key: String,
    },
    /// A delete: how many keys it removed.
    Delete {
        /// Keys removed.
        deleted: u64,
    },
    /// A get: the key, or null.
    Get {
        /// The key asked for.
        key: String,
        /// What it holds (`null`: absent).
        kv: Option<KvItem>,
    },
    /// A range.
    Range(RangeReply),
}

/// What applying a write did, beyond raising the revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A put or a delete was applied.
    Written,
    /// A range delete removed this many keys.
    Deleted(u64),
    /// A conditional put whose condition did not hold: nothing changed; the key as it is.
    Refused {
        /// The key's current value and revisions (`None`: absent).
        current: Option<KvItem>,
    },
    /// A transaction ran one of its branches.
    Txn {
        /// Whether every compare held (and `success` ran).
        succeeded: bool,
        /// One answer per operation of the branch that ran.
        responses: Vec<TxnResponse>,
    },
    /// The idempotency key was used before for another write: nothing changed (422).
    KeyReused {
        /// The key.
        key: String,
    },
}

/// What a writer learns once its entry is applied: where, the store's revision after it, and
/// the outcome. For a retried idempotent write these are the first attempt's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Log index of the entry that did the write.
    pub index: Index,
    /// Its term.
    pub term: Term,
    /// The store's revision once it applied.
    pub revision: u64,
    /// What it did.
    pub outcome: Outcome,
    /// True when this is the remembered answer of an earlier attempt with the same
    /// idempotency key (nothing was applied this time).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
}
