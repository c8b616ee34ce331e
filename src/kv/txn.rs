//! Transactions: checking one before it is proposed, and the compares.
//!
//! A transaction is one log entry: its compares and the branch they choose run together when the
//! entry is applied, so nothing can come between them (etcd's semantics). Its writes share one
//! revision (the store's revision is raised once, if any of them changed something), and a read
//! in a branch sees the writes before it in that branch. A missing key has version, create and
//! mod revision 0 and fails every comparison of its value.

use std::cmp::Ordering;
use std::ops::Bound;

use super::Rec;
use super::command::{Compare, CompareOp, DeleteSpec, RangeSpec, Target, Txn, TxnOp};
use super::range::Bounds;
use crate::error::{Error, Result};

/// The limits a transaction is checked against.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Compares and operations together.
    pub max_ops: usize,
    /// Longest key.
    pub max_key_bytes: usize,
    /// Longest value.
    pub max_value_bytes: usize,
}

impl Txn {
    /// True when neither branch writes: such a transaction is served like a linearizable read,
    /// without a log entry.
    pub fn is_read_only(&self) -> bool {
        self.success.iter().chain(&self.failure).all(|op| !op.is_write())
    }

    /// Refuses what cannot be applied, with a message saying which part is wrong: too many
    /// operations, a bad key, a compare whose value has the wrong type, a range with bad bounds,
    /// or two writes to one key in a branch.
    pub fn validate(&self, limits: &Limits) -> Result<()> {
        let n = self.compare.len() + self.success.len() + self.failure.len();
        if n > limits.max_ops {
            return Err(Error::BadRequest(format!(
                "a transaction has at most {} compares and operations; this one has {n}",
                limits.max_ops
            )));
        }
        for (i, c) in self.compare.iter().enumerate() {
            check_key(&c.key, limits).map_err(|e| at(&format!("compare {i}"), e))?;
            let ok = match c.target {
                Target::Value => c.value.is_string(),
                _ => c.value.is_u64(),
            };
            if !ok {
                let want =
                    if c.target == Target::Value { "a string" } else { "a non-negative integer" };
                return Err(Error::BadRequest(format!(
                    "compare {i}: the value compared with {:?} must be {want}, not {}",
                    c.target, c.value
                )));
            }
        }
        for (name, branch) in [("success", &self.success), ("failure", &self.failure)] {
            let mut writes: Vec<(usize, Bounds)> = Vec::new();
            for (i, op) in branch.iter().enumerate() {
                let place = format!("{name}[{i}]");
                let written = op.check(limits).map_err(|e| at(&place, e))?;
                if let Some(bounds) = written {
                    if let Some((j, _)) = writes.iter().find(|(_, b)| overlap(b, &bounds)) {
                        return Err(Error::BadRequest(format!(
                            "{place} writes a key that {name}[{j}] writes too: a transaction \
                             writes each key at most once"
                        )));
                    }
                    writes.push((i, bounds));
                }
            }
        }
        Ok(())
    }
}

fn at(place: &str, e: Error) -> Error {
    match e {
        Error::BadRequest(m) => Error::BadRequest(format!("{place}: {m}")),
        Error::TooLarge(m) => Error::TooLarge(format!("{place}: {m}")),
        e => e,
    }
}

fn check_key(key: &str, limits: &Limits) -> Result<()> {
    if key.is_empty() {
        return Err(Error::BadRequest("the key must not be empty".into()));
    }
    if key.len() > limits.max_key_bytes {
        return Err(Error::TooLarge(format!(
            "key of {} bytes is over the {}-byte limit",
            key.len(),
            limits.max_key_bytes
        )));
    }
    Ok(())
}

impl TxnOp {
    /// True for puts and deletes.
    pub fn is_write(&self) -> bool {
        matches!(self, TxnOp::Put { .. } | TxnOp::Delete(_))
    }

    /// Checks the operation; returns the keys it writes.
    fn check(&self, limits: &Limits) -> Result<Option<Bounds>> {
        match self {
            TxnOp::Put { key, value } => {
                check_key(key, limits)?;
                if value.len() > limits.max_value_bytes {
                    return Err(Error::TooLarge(format!(
                        "value of {} bytes is over the {}-byte limit",
                        value.len(),
                        limits.max_value_bytes
                    )));
                }
                Ok(Some(Bounds::of(&RangeSpec { start: Some(key.clone()), ..Default::default() })?))
            }
            TxnOp::Delete(spec) => Ok(Some(spec.bounds()?)),
            TxnOp::Get { key } => check_key(key, limits).map(|_| None),
            TxnOp::Range(spec) => Bounds::of(spec).map(|_| None),
        }
    }
}

impl DeleteSpec {
    /// The keys it deletes: `key` alone, or a range.
    pub fn bounds(&self) -> Result<Bounds> {
        match self {
            DeleteSpec { key: Some(k), prefix: None, start: None, end: None } => {
                if k.is_empty() {
                    return Err(Error::BadRequest("the key must not be empty".into()));
                }
                Ok(Bounds { start: Bound::Included(k.clone()), end: Bound::Included(k.clone()) })
            }
            DeleteSpec { key: None, prefix, start, end } => Bounds::of(&RangeSpec {
                prefix: prefix.clone(),
                start: start.clone(),
                end: end.clone(),
                ..Default::default()
            }),
            _ => Err(Error::BadRequest("a delete names a key, or a range, not both".into())),
        }
    }
}

/// Do two ranges share a key?
fn overlap(a: &Bounds, b: &Bounds) -> bool {
    // a starts before b ends, and b starts before a ends.
    starts_before_end(&a.start, &b.end) && starts_before_end(&b.start, &a.end)
}

fn starts_before_end(start: &Bound<String>, end: &Bound<String>) -> bool {
    match (start, end) {
        (_, Bound::Unbounded) | (Bound::Unbounded, _) => true,
        (Bound::Included(s) | Bound::Excluded(s), Bound::Included(e)) => s <= e,
        (Bound::Included(s) | Bound::Excluded(s), Bound::Excluded(e)) => s < e,
    }
}

impl Compare {
    /// Does the compare hold for the key's current state (`None`: absent)?
    pub fn holds(&self, kv: Option<Rec<'_>>) -> bool {
        let ordering = match self.target {
            Target::Value => match (kv, self.value.as_str()) {
                (Some(kv), Some(v)) => kv.value().cmp(v),
                _ => return false,
            },
            target => {
                let Some(want) = self.value.as_u64() else { return false };
                let have = kv.map_or(0, |kv| match target {
                    Target::Version => kv.version(),
                    Target::CreateRevision => kv.create_revision(),
                    _ => kv.mod_revision(),
                });
                have.cmp(&want)
            }
        };
        match self.op {
            CompareOp::Eq => ordering == Ordering::Equal,
            CompareOp::Ne => ordering != Ordering::Equal,
            CompareOp::Lt => ordering == Ordering::Less,
            CompareOp::Gt => ordering == Ordering::Greater,
        }
    }
}
