//! Range reads: the bounds a [`RangeSpec`] names, a walk over the store that merges the map with
//! its overlay (see [`super::KvStore`]), and a [`View`] of the store at one revision that a long
//! read walks without holding the state machine's lock.
//!
//! Keys are compared as strings, which in Rust is by their UTF-8 bytes: `"a/"` < `"a/b"` < `"a0"`,
//! and unicode keys sort after ASCII ones.

use std::iter::Peekable;
use std::ops::Bound;
use std::sync::Arc;

use super::command::{KvItem, RangeReply, RangeSpec};
use super::{KeyValue, Overlay, Pages, Rec};
use crate::error::{Error, Result};

/// The bounds of a range: `[start, end)` with `end` possibly unbounded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// The first key.
    pub start: Bound<String>,
    /// The end.
    pub end: Bound<String>,
}

impl Bounds {
    /// The bounds `spec` names, or why it names none: a prefix, or a start with or without an
    /// end, and never both.
    pub fn of(spec: &RangeSpec) -> Result<Bounds> {
        match (&spec.prefix, &spec.start, &spec.end) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                Err(Error::BadRequest("a range is a prefix or a start (and end), not both".into()))
            }
            (Some(p), None, None) => Ok(Bounds::prefix(p)),
            (None, Some(s), None) => {
                Ok(Bounds { start: Bound::Included(s.clone()), end: Bound::Included(s.clone()) })
            }
            (None, Some(s), Some(e)) => {
                if e <= s {
                    return Err(Error::BadRequest(format!(
                        "the range's end {e:?} must come after its start {s:?}"
                    )));
                }
                Ok(Bounds { start: Bound::Included(s.clone()), end: Bound::Excluded(e.clone()) })
            }
            (None, None, _) => {
                Err(Error::BadRequest("a range needs a prefix or a start key".into()))
            }
        }
    }

    /// Every key starting with `prefix`: from `prefix` to the smallest string above all of them
    /// (its last character raised by one; unbounded when there is none).
    pub fn prefix(prefix: &str) -> Bounds {
        let mut end: Vec<char> = prefix.chars().collect();
        let upper = loop {
            let Some(last) = end.pop() else { break Bound::Unbounded };
            // The next scalar value, skipping the surrogate gap.
            let next = match last as u32 {
                0xD7FF => Some('\u{E000}'),
                n => char::from_u32(n + 1),
            };
            if let Some(c) = next {
                end.push(c);
                break Bound::Excluded(end.into_iter().collect());
            }
        };
        Bounds { start: Bound::Included(prefix.to_string()), end: upper }
    }

    fn as_refs(&self) -> (Bound<&str>, Bound<&str>) {
        fn r(b: &Bound<String>) -> Bound<&str> {
            match b {
                Bound::Included(s) => Bound::Included(s.as_str()),
                Bound::Excluded(s) => Bound::Excluded(s.as_str()),
                Bound::Unbounded => Bound::Unbounded,
            }
        }
        (r(&self.start), r(&self.end))
    }
}

/// The live keys of `base` updated by `overlay` within `bounds`, in key order (`desc`: reversed).
pub fn walk<'a>(
    base: &'a Pages,
    overlay: Option<&'a Overlay>,
    bounds: &Bounds,
    desc: bool,
) -> Box<dyn Iterator<Item = (&'a str, Rec<'a>)> + 'a> {
    let range = bounds.as_refs();
    let base_iter = base.range(bytes(range)).map(|v| (v.key(), Some(v)));
    let Some(overlay) = overlay.filter(|o| !o.is_empty()) else {
        return if desc {
            Box::new(base_iter.rev().filter_map(|(k, v)| v.map(|v| (k, v))))
        } else {
            Box::new(base_iter.filter_map(|(k, v)| v.map(|v| (k, v))))
        };
    };
    let over_iter =
        overlay.range::<str, _>(range).map(|(k, v)| (k.as_str(), v.as_ref().map(KeyValue::rec)));
    if desc {
        Box::new(Merge { a: base_iter.rev().peekable(), b: over_iter.rev().peekable(), desc })
    } else {
        Box::new(Merge { a: base_iter.peekable(), b: over_iter.peekable(), desc })
    }
}

/// Bounds on strings as bounds on their bytes (the order is the same).
fn bytes<'a>((start, end): (Bound<&'a str>, Bound<&'a str>)) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
    (start.map(str::as_bytes), end.map(str::as_bytes))
}

/// Two sorted walks merged; on the same key the second (the overlay) wins, and its `None` (a
/// delete) hides the key.
struct Merge<'a, A, B>
where
    A: Iterator<Item = (&'a str, Option<Rec<'a>>)>,
    B: Iterator<Item = (&'a str, Option<Rec<'a>>)>,
{
    a: Peekable<A>,
    b: Peekable<B>,
    desc: bool,
}

impl<'a, A, B> Iterator for Merge<'a, A, B>
where
    A: Iterator<Item = (&'a str, Option<Rec<'a>>)>,
    B: Iterator<Item = (&'a str, Option<Rec<'a>>)>,
{
    type Item = (&'a str, Rec<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let take_b = match (self.a.peek().map(|x| x.0), self.b.peek().map(|x| x.0)) {
                (None, None) => return None,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some(ka), Some(kb)) => {
                    if ka == kb {
                        self.a.next();
                        true
                    } else {
                        (kb < ka) != self.desc
                    }
                }
            };
            let next = if take_b { self.b.next() } else { self.a.next() };
            if let Some((k, Some(v))) = next {
                return Some((k, v));
            }
        }
    }
}

/// The store as of one revision, for a read that takes a while: it shares the map and the
/// overlay with the store ([`super::KvStore::view`], O(1)), and writes made after it was taken
/// go to a copy of the overlay, so the reader holds no lock while it walks.
#[derive(Clone, Debug)]
pub struct View {
    pub(super) base: Arc<Pages>,
    pub(super) overlay: Option<Arc<Overlay>>,
    /// The store's revision the view shows.
    pub revision: u64,
}

impl View {
    /// The keys within `bounds`.
    pub fn walk<'a>(
        &'a self,
        bounds: &Bounds,
        desc: bool,
    ) -> Box<dyn Iterator<Item = (&'a str, Rec<'a>)> + 'a> {
        walk(&self.base, self.overlay.as_deref(), bounds, desc)
    }

    /// The range answer as JSON, written straight from the walk into one buffer (the answer is
    /// never built twice): `{"revision", "kvs": [...], "count", "more", "next"}`.
    pub fn range_json(&self, spec: &RangeSpec) -> Result<Vec<u8>> {
        let bounds = Bounds::of(spec)?;
        let limit = spec.limit.filter(|&l| l > 0).unwrap_or(u64::MAX);
        let mut out = format!("{{\"revision\":{},\"kvs\":[", self.revision).into_bytes();
        let (mut count, mut next) = (0u64, None);
        for (key, kv) in self.walk(&bounds, spec.desc) {
            if count < limit && !spec.count_only {
                if count > 0 {
                    out.push(b',');
                }
                let item = KvItem::new(key, kv, spec.keys_only);
                serde_json::to_writer(&mut out, &item)
                    .map_err(|e| Error::Internal(format!("cannot encode a key: {e}")))?;
            } else if count == limit && next.is_none() {
                next = Some(key);
            }
            count += 1;
        }
        let more = count > limit;
        out.extend_from_slice(format!("],\"count\":{count},\"more\":{more}").as_bytes());
        if let Some(next) = next {
            out.extend_from_slice(b",\"next\":");
            serde_json::to_writer(&mut out, next)
                .map_err(|e| Error::Internal(format!("cannot encode a key: {e}")))?;
        }
        out.push(b'}');
        Ok(out)
    }

    /// `{"key": "value", ...}` for every key (the v1 `GET /kv/all` body), written from the walk.
    pub fn values_json(&self) -> serde_json::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(2 + self.base.len() * 16);
        out.push(b'{');
        let all = Bounds { start: Bound::Unbounded, end: Bound::Unbounded };
        for (i, (k, v)) in self.walk(&all, false).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, k)?;
            out.push(b':');
            serde_json::to_writer(&mut out, v.value())?;
        }
        out.push(b'}');
        Ok(out)
    }
}

/// A range answer built in memory (a range inside a transaction).
pub fn range_reply<'a>(
    walk: impl Iterator<Item = (&'a str, Rec<'a>)>,
    spec: &RangeSpec,
    revision: u64,
) -> RangeReply {
    let limit = spec.limit.filter(|&l| l > 0).unwrap_or(u64::MAX);
    let mut reply = RangeReply { revision, ..RangeReply::default() };
    for (key, kv) in walk {
        if reply.count < limit {
            if !spec.count_only {
                reply.kvs.push(KvItem::new(key, kv, spec.keys_only));
            }
        } else if reply.next.is_none() {
            reply.next = Some(key.to_string());
        }
        reply.count += 1;
    }
    reply.more = reply.count > limit;
    reply
}

/// Every live key, in order.
pub fn walk_all<'a>(
    base: &'a Pages,
    overlay: Option<&'a Overlay>,
) -> Box<dyn Iterator<Item = (&'a str, Rec<'a>)> + 'a> {
    walk(base, overlay, &Bounds { start: Bound::Unbounded, end: Bound::Unbounded }, false)
}
