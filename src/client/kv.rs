//! The coordination API of the client: ranges, conditional puts, compare-and-set and
//! transactions ([`crate::kv`] has the semantics).

use serde::{Deserialize, Serialize};

use super::{Call, Client, Kind, check_key, to_json};
use crate::api::PutRequest;
use crate::error::{Error, Result};
use crate::kv::{
    Compare, CompareOp, DeleteSpec, KvItem, RangeReply, RangeSpec, Target, Txn, TxnOp, TxnResponse,
};
use crate::raft::{Index, Term};

/// What a conditional put did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PutIf {
    /// The condition held: written at this index, term and revision.
    Written {
        /// Log index.
        index: Index,
        /// Term.
        term: Term,
        /// The store's revision after it.
        revision: u64,
    },
    /// The condition did not hold: nothing was written; the key as it is (`None`: absent).
    Refused {
        /// The key's current value and revisions.
        current: Option<KvItem>,
    },
}

/// What a transaction did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnResult {
    /// Whether every compare held (the success branch ran).
    pub succeeded: bool,
    /// The store's revision after it.
    pub revision: u64,
    /// The log index (for a read-only transaction, the applied index it was read at).
    #[serde(default)]
    pub index: Index,
    /// One answer per operation of the branch that ran.
    pub responses: Vec<TxnResponse>,
}

/// What a compare-and-set did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CasResult {
    /// True when the old value matched and the new one was written.
    pub succeeded: bool,
    /// The store's revision after it.
    pub revision: u64,
    /// When it failed: the key as it is (`None`: absent).
    pub current: Option<KvItem>,
}

/// Builds a [`Txn`]: compares with `when_*`, then `then_*` (success) and `or_else_*` (failure)
/// operations.
///
/// ```
/// use raftlabkv::client::TxnBuilder;
/// let txn = TxnBuilder::new()
///     .when_mod_revision("cfg/a", "==", 42)
///     .when_version("cfg/lock", "==", 0)
///     .then_put("cfg/a", "new")
///     .then_delete("cfg/b")
///     .or_else_get("cfg/a")
///     .build();
/// assert_eq!(txn.compare.len(), 2);
/// ```
#[derive(Debug, Clone, Default)]
pub struct TxnBuilder {
    txn: Txn,
    bad: Option<String>,
}

impl TxnBuilder {
    /// An empty transaction.
    pub fn new() -> TxnBuilder {
        TxnBuilder::default()
    }

    fn when(mut self, key: &str, target: Target, op: &str, value: serde_json::Value) -> Self {
        let op = match op {
            "==" => CompareOp::Eq,
            "!=" => CompareOp::Ne,
            "<" => CompareOp::Lt,
            ">" => CompareOp::Gt,
            other => {
                self.bad = Some(format!("unknown compare op {other:?} (==, !=, <, >)"));
                CompareOp::Eq
            }
        };
        self.txn.compare.push(Compare { key: key.into(), target, op, value });
        self
    }

    /// Compare the key's value.
    pub fn when_value(self, key: &str, op: &str, value: &str) -> Self {
        self.when(key, Target::Value, op, value.into())
    }

    /// Compare the key's version (0: absent).
    pub fn when_version(self, key: &str, op: &str, version: u64) -> Self {
        self.when(key, Target::Version, op, version.into())
    }

    /// Compare the key's create revision (0: absent).
    pub fn when_create_revision(self, key: &str, op: &str, revision: u64) -> Self {
        self.when(key, Target::CreateRevision, op, revision.into())
    }

    /// Compare the key's mod revision (0: absent).
    pub fn when_mod_revision(self, key: &str, op: &str, revision: u64) -> Self {
        self.when(key, Target::ModRevision, op, revision.into())
    }

    /// Success: put.
    pub fn then_put(mut self, key: &str, value: &str) -> Self {
        self.txn.success.push(TxnOp::Put { key: key.into(), value: value.into() });
        self
    }

    /// Success: delete a key.
    pub fn then_delete(mut self, key: &str) -> Self {
        self.txn.success.push(delete(key));
        self
    }

    /// Success: read a key.
    pub fn then_get(mut self, key: &str) -> Self {
        self.txn.success.push(TxnOp::Get { key: key.into() });
        self
    }

    /// Success: read a range.
    pub fn then_range(mut self, range: RangeSpec) -> Self {
        self.txn.success.push(TxnOp::Range(range));
        self
    }

    /// Failure: put.
    pub fn or_else_put(mut self, key: &str, value: &str) -> Self {
        self.txn.failure.push(TxnOp::Put { key: key.into(), value: value.into() });
        self
    }

    /// Failure: delete a key.
    pub fn or_else_delete(mut self, key: &str) -> Self {
        self.txn.failure.push(delete(key));
        self
    }

    /// Failure: read a key.
    pub fn or_else_get(mut self, key: &str) -> Self {
        self.txn.failure.push(TxnOp::Get { key: key.into() });
        self
    }

    /// The transaction (an unknown compare op is left as `==`; [`TxnBuilder::try_build`] refuses
    /// it).
    pub fn build(self) -> Txn {
        self.txn
    }

    /// The transaction, or why it is malformed.
    pub fn try_build(self) -> Result<Txn> {
        match self.bad {
            Some(why) => Err(Error::BadRequest(why)),
            None => Ok(self.txn),
        }
    }
}

fn delete(key: &str) -> TxnOp {
    TxnOp::Delete(DeleteSpec { key: Some(key.into()), ..DeleteSpec::default() })
}

/// The query string of a range (values percent-encoded).
fn range_query(spec: &RangeSpec) -> String {
    let enc = super::percent_encode;
    let mut q = Vec::new();
    if let Some(p) = &spec.prefix {
        q.push(format!("prefix={}", enc(p)));
    }
    if let Some(s) = &spec.start {
        q.push(format!("start={}", enc(s)));
    }
    if let Some(e) = &spec.end {
        q.push(format!("end={}", enc(e)));
    }
    if let Some(l) = spec.limit {
        q.push(format!("limit={l}"));
    }
    if spec.keys_only {
        q.push("keys_only=true".into());
    }
    if spec.count_only {
        q.push("count_only=true".into());
    }
    if spec.desc {
        q.push("order=desc".into());
    }
    q.join("&")
}

impl Client {
    /// A linearizable range read ([`RangeSpec`]: a prefix, or start/end; limit, keys only,
    /// count only, order).
    pub fn range(&self, spec: &RangeSpec) -> Result<RangeReply> {
        self.range_inner(spec, false)
    }

    /// A stale range read (the answering node's state).
    pub fn range_stale(&self, spec: &RangeSpec) -> Result<RangeReply> {
        self.range_inner(spec, true)
    }

    fn range_inner(&self, spec: &RangeSpec, stale: bool) -> Result<RangeReply> {
        let mut path = format!("/kv/range?{}", range_query(spec));
        if stale {
            path.push_str("&consistency=stale");
        }
        let text = self.execute(&Call::read(&path))?;
        serde_json::from_str(&text)
            .map_err(|e| Error::Internal(format!("unreadable answer to a range: {e}")))
    }

    /// Every key with `prefix`, in order (linearizable).
    pub fn range_prefix(&self, prefix: &str) -> Result<RangeReply> {
        self.range(&RangeSpec { prefix: Some(prefix.into()), ..RangeSpec::default() })
    }

    /// The key with its revisions, or `None` (linearizable).
    pub fn get_kv(&self, key: &str) -> Result<Option<KvItem>> {
        check_key(key)?;
        let spec = RangeSpec { start: Some(key.into()), ..RangeSpec::default() };
        Ok(self.range(&spec)?.kvs.into_iter().next())
    }

    /// Deletes every key with `prefix` in one entry; returns how many were deleted.
    pub fn delete_prefix(&self, prefix: &str) -> Result<u64> {
        let path = format!("/kv/range?prefix={}", super::percent_encode(prefix));
        let text = self.execute(&self.write_call("DELETE", &path, None))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::Internal(format!("unreadable answer to a range delete: {e}")))?;
        v["deleted"].as_u64().ok_or_else(|| Error::Internal(format!("no count in {text}")))
    }

    /// Writes `key = value` only if the key's mod revision is `if_revision` (0: only if it is
    /// absent).
    pub fn put_if(&self, key: &str, value: &str, if_revision: u64) -> Result<PutIf> {
        check_key(key)?;
        let body = to_json(&PutRequest {
            key: key.into(),
            value: value.into(),
            if_revision: Some(if_revision),
        })?;
        let call = Call { accept_412: true, ..self.write_call("POST", "/kv/put", Some(&body)) };
        let text = self.execute(&call)?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::Internal(format!("unreadable answer to a conditional put: {e}")))?;
        if v["error"] == "precondition_failed" {
            let current = serde_json::from_value(v["current"].clone()).unwrap_or(None);
            return Ok(PutIf::Refused { current });
        }
        let n = |name: &str| v[name].as_u64().unwrap_or_default();
        Ok(PutIf::Written { index: n("index"), term: n("term"), revision: n("revision") })
    }

    /// Runs a transaction ([`TxnBuilder`]). One that writes nothing is a linearizable read.
    pub fn txn(&self, txn: &Txn) -> Result<TxnResult> {
        let body = to_json(txn)?;
        let call = if txn.is_read_only() {
            Call { method: "POST", body: Some(&body), ..Call::read("/kv/txn") }
        } else {
            self.write_call("POST", "/kv/txn", Some(&body))
        };
        // A read-only transaction is a read: safe to send again.
        let call = Call { kind: if txn.is_read_only() { Kind::Read } else { Kind::Write }, ..call };
        let text = self.execute(&call)?;
        serde_json::from_str(&text)
            .map_err(|e| Error::Internal(format!("unreadable answer to a transaction: {e}")))
    }

    /// Compare-and-set: writes `new` if the key's value is `old` (`None`: if the key is absent),
    /// as one transaction.
    pub fn cas(&self, key: &str, old: Option<&str>, new: &str) -> Result<CasResult> {
        check_key(key)?;
        let b = TxnBuilder::new();
        let b = match old {
            Some(old) => b.when_value(key, "==", old),
            None => b.when_version(key, "==", 0),
        };
        let r = self.txn(&b.then_put(key, new).or_else_get(key).build())?;
        let current = match r.responses.into_iter().next() {
            Some(TxnResponse::Get { kv, .. }) if !r.succeeded => kv,
            _ => None,
        };
        Ok(CasResult { succeeded: r.succeeded, revision: r.revision, current })
    }
}
