//! The store's ordered set of records, kept in **pages**: runs of records laid end to end in one
//! heap block each, ordered by key.
//!
//! **Why pages.** With one heap block per key in a `BTreeSet`, a 12-byte key with a 100-byte
//! value costs a 128-byte allocator chunk (the 120-byte record, the allocator's 8-byte header,
//! rounding) plus ~30 bytes of tree (a 16-byte pointer in nodes that are two-thirds full): ~158
//! bytes per key, measured. A page holds ~2–4 KiB of records back to back, each prefixed by its
//! length:
//!
//! ```text
//! page = [varint len][record] [varint len][record] ...     (records in key order)
//! record = [varint key length][key][varint create][varint mod][varint version][value]
//! ```
//!
//! so a key costs its record, one length byte and a few bytes of the page's share of the index
//! above it: ~128 bytes resident (measured for 1,000,000 such keys: 121 bytes of pages and ~7 of
//! index and allocator). The index is a `BTreeMap` from each page's *lower bound* to the page. A
//! page holds the keys from its lower bound up to the next page's; the first page's bound is the
//! empty key, so every key has exactly one page it belongs in. A bound is fixed when its page is
//! made (inserting a key below a page's first record does not move it), so nothing in the index
//! changes on an ordinary put.
//!
//! **Costs.** A get finds its page in the index (a few dozen comparisons, as before) and scans it:
//! on average ~12 records, read from one contiguous block. A put that changes a record's size
//! moves the rest of its page (~1 KiB on average) and resizes its block, which the allocator often
//! does in place; a page keeps no spare capacity (256 bytes of it per page cost 13 bytes per key,
//! measured). A page that grows past [`PAGE_BYTES`] splits in two at a record boundary near its
//! middle; one that shrinks below [`MERGE_BELOW`] joins the page before it when both fit in one.
//!
//! **Snapshots.** Pages are copied nowhere: the store shares the whole set behind an `Arc` while a
//! snapshot or a long read walks it (see [`super::KvStore`]). A set loaded from a snapshot is built
//! in key order, each page filled to [`PAGE_BYTES`].

use std::collections::BTreeMap;
use std::fmt;
use std::ops::{Bound, RangeBounds};

use super::record::{KeyValue, Rec, push_varint, read_varint};

/// A page above this size splits (when it holds two records or more).
pub const PAGE_BYTES: usize = 4096;

/// A page below this size joins the page before it, when the two fit in [`PAGE_BYTES`].
pub const MERGE_BELOW: usize = 1024;

/// The ordered set of records (see the module docs).
#[derive(Clone, Default)]
pub struct Pages {
    /// Each page by its lower bound. Empty, or holding the page of bound `""` (which may be empty
    /// itself); every other page holds at least one record.
    pages: BTreeMap<Box<[u8]>, Vec<u8>>,
    /// Records in all pages.
    len: usize,
}

/// Where a key is in a page: found at `start..end`, or absent and belonging at `start`.
enum Place {
    Found { start: usize, end: usize },
    Absent { at: usize },
}

impl Pages {
    /// An empty set.
    pub fn new() -> Pages {
        Pages::default()
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are no records.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of pages (for tests and measurements).
    pub fn page_count(&self) -> usize {
        self.pages.len()
    }

    /// Heap bytes the pages hold (their capacity; the index is not counted).
    pub fn page_bytes(&self) -> usize {
        self.pages.values().map(Vec::capacity).sum()
    }

    /// The record of `key`.
    pub fn get(&self, key: &[u8]) -> Option<Rec<'_>> {
        let (_, page) = self.pages.range::<[u8], _>(upto(key)).next_back()?;
        match place(page, key) {
            Place::Found { start, end } => Some(Rec(entry_body(page, start, end))),
            Place::Absent { .. } => None,
        }
    }

    /// Stores `kv`, replacing the record of the same key; true when the key is new.
    pub fn insert(&mut self, kv: &KeyValue) -> bool {
        let record = kv.bytes();
        let mut entry = Vec::with_capacity(record.len() + 3);
        push_varint(&mut entry, record.len() as u64);
        entry.extend_from_slice(record);
        let key = kv.key_bytes();
        if self.pages.is_empty() {
            self.pages.insert(Box::default(), Vec::new());
        }
        let Some((_, page)) = self.pages.range_mut::<[u8], _>(upto(key)).next_back() else {
            // Unreachable: the page of bound "" is there and every key is >= "".
            return false;
        };
        let (range, new) = match place(page, key) {
            Place::Found { start, end } => (start..end, false),
            Place::Absent { at } => (at..at, true),
        };
        // Exactly the bytes it needs: spare capacity would cost ~10% of the store (measured), and
        // growing a 2–4 KiB block in place, or copying it, costs less than a put's JSON.
        page.reserve_exact(entry.len().saturating_sub(range.len()));
        page.splice(range, entry);
        page.shrink_to_fit(); // when the new record is shorter
        if let Some(upper) = split(page) {
            self.pages.insert(first_key(&upper).into(), upper);
        }
        if new {
            self.len += 1;
        }
        new
    }

    /// Removes the record of `key`; true when there was one.
    pub fn remove(&mut self, key: &[u8]) -> bool {
        let Some((bound, page)) = self.pages.range_mut::<[u8], _>(upto(key)).next_back() else {
            return false;
        };
        let Place::Found { start, end } = place(page, key) else { return false };
        page.drain(start..end);
        page.shrink_to_fit();
        self.len -= 1;
        if page.len() < MERGE_BELOW && !bound.is_empty() {
            let bound = bound.clone();
            self.merge_into_previous(&bound);
        }
        true
    }

    /// Joins the page of `bound` to the page before it when both fit in one page (an empty page
    /// always goes).
    fn merge_into_previous(&mut self, bound: &[u8]) {
        let Some(len) = self.pages.get(bound).map(Vec::len) else { return };
        let Some((_, previous)) = self.pages.range_mut::<[u8], _>(below(bound)).next_back() else {
            return;
        };
        if len > 0 && previous.len() + len > PAGE_BYTES {
            return;
        }
        let Some(page) = self.pages.remove(bound) else { return };
        // Keys of the next page are all above the previous one's: appending keeps the order.
        let Some((_, previous)) = self.pages.range_mut::<[u8], _>(below(bound)).next_back() else {
            return;
        };
        previous.reserve_exact(page.len());
        previous.extend_from_slice(&page);
    }

    /// The records with keys within `(start, end)`, in key order (reversible).
    pub fn range<'a>(
        &'a self,
        (start, end): (Bound<&[u8]>, Bound<&[u8]>),
    ) -> impl DoubleEndedIterator<Item = Rec<'a>> + 'a {
        // Pages from the one that holds `start` to the one that holds `end`.
        let first = match start {
            Bound::Unbounded => None,
            Bound::Included(s) | Bound::Excluded(s) => {
                self.pages.range::<[u8], _>(upto(s)).next_back().map(|(bound, _)| &bound[..])
            }
        };
        // A range ending before its first page is empty (and would make `BTreeMap::range` panic).
        let empty = match (first, end) {
            (Some(f), Bound::Included(e) | Bound::Excluded(e)) => f > e,
            _ => false,
        };
        let first = first.map_or(Bound::Unbounded, Bound::Included);
        let pages = (!empty).then(|| self.pages.range::<[u8], _>((first, end)));
        let bounds = (start.map(<[u8]>::to_vec), end.map(<[u8]>::to_vec));
        let pages = pages.into_iter().flatten();
        pages.flat_map(|(_, page)| Entries::new(page)).filter(move |r| {
            let (start, end) = &bounds;
            (start.as_ref().map(Vec::as_slice), end.as_ref().map(Vec::as_slice))
                .contains(&r.key_bytes())
        })
    }

    /// Every record, in key order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = Rec<'_>> + '_ {
        self.pages.values().flat_map(|page| Entries::new(page))
    }

    /// Builds a set from records in strictly increasing key order (a snapshot's), each page filled
    /// to [`PAGE_BYTES`]. Call [`Builder::push`] for each, then [`Builder::finish`].
    pub fn builder() -> Builder {
        Builder { pages: Pages::new(), page: Vec::new(), bound: Box::default() }
    }
}

/// Builds [`Pages`] from sorted records (see [`Pages::builder`]).
pub struct Builder {
    pages: Pages,
    page: Vec<u8>,
    bound: Box<[u8]>,
}

impl Builder {
    /// Appends `kv`, whose key is above every key pushed before (the caller checks).
    pub fn push(&mut self, kv: &KeyValue) {
        let record = kv.bytes();
        if !self.page.is_empty() && self.page.len() + record.len() + 3 > PAGE_BYTES {
            let full = std::mem::take(&mut self.page);
            let bound = std::mem::replace(&mut self.bound, kv.key_bytes().into());
            self.close(bound, full);
        }
        if self.page.is_empty() {
            self.page.reserve_exact(PAGE_BYTES.max(record.len() + 3));
        }
        push_varint(&mut self.page, record.len() as u64);
        self.page.extend_from_slice(record);
        self.pages.len += 1;
    }

    fn close(&mut self, bound: Box<[u8]>, mut page: Vec<u8>) {
        page.shrink_to_fit();
        self.pages.pages.insert(bound, page);
    }

    /// The set.
    pub fn finish(mut self) -> Pages {
        if !self.page.is_empty() || self.pages.pages.is_empty() {
            let (bound, page) = (std::mem::take(&mut self.bound), std::mem::take(&mut self.page));
            self.close(bound, page);
        }
        self.pages
    }
}

impl fmt::Debug for Pages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pages").field("len", &self.len).field("pages", &self.pages.len()).finish()
    }
}

/// A page over [`PAGE_BYTES`] split at the record boundary nearest its middle: its upper half
/// (`None` when it is not over, or holds one record).
fn split(page: &mut Vec<u8>) -> Option<Vec<u8>> {
    if page.len() <= PAGE_BYTES {
        return None;
    }
    let mut at = 0;
    while at < page.len() / 2 {
        at = entry_end(page, at);
    }
    if at >= page.len() {
        return None; // one record
    }
    let upper = page[at..].to_vec();
    page.truncate(at);
    page.shrink_to_fit();
    Some(upper)
}

/// Bounds up to and including `key`.
fn upto(key: &[u8]) -> (Bound<&[u8]>, Bound<&[u8]>) {
    (Bound::Unbounded, Bound::Included(key))
}

/// Bounds below `key`.
fn below(key: &[u8]) -> (Bound<&[u8]>, Bound<&[u8]>) {
    (Bound::Unbounded, Bound::Excluded(key))
}

/// The end of the entry starting at `at` (the page's length past a damaged one: pages are only
/// ever written here, so that is a bug, and it reads as the end rather than panicking).
fn entry_end(page: &[u8], at: usize) -> usize {
    let (len, body) = read_varint(page, at);
    (body + len as usize).min(page.len()).max(at + 1)
}

/// The record of the entry at `start..end` (without its length prefix).
fn entry_body(page: &[u8], start: usize, end: usize) -> &[u8] {
    let (_, body) = read_varint(page, start);
    page.get(body..end).unwrap_or_default()
}

/// The key of the page's first record.
fn first_key(page: &[u8]) -> &[u8] {
    Rec(entry_body(page, 0, entry_end(page, 0))).key_bytes()
}

/// Where `key` is, or belongs, in `page`.
fn place(page: &[u8], key: &[u8]) -> Place {
    let mut at = 0;
    while at < page.len() {
        let end = entry_end(page, at);
        match Rec(entry_body(page, at, end)).key_bytes().cmp(key) {
            std::cmp::Ordering::Less => at = end,
            std::cmp::Ordering::Equal => return Place::Found { start: at, end },
            std::cmp::Ordering::Greater => return Place::Absent { at },
        }
    }
    Place::Absent { at: page.len() }
}

/// The records of one page, forwards or backwards (backwards finds the entry boundaries first).
struct Entries<'a> {
    page: &'a [u8],
    front: usize,
    /// Entry starts from `front` on, found on the first step backwards.
    starts: Option<Vec<usize>>,
    back: usize,
}

impl<'a> Entries<'a> {
    fn new(page: &'a [u8]) -> Entries<'a> {
        Entries { page, front: 0, starts: None, back: page.len() }
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Rec<'a>;

    fn next(&mut self) -> Option<Rec<'a>> {
        if self.front >= self.back {
            return None;
        }
        let (start, end) = (self.front, entry_end(self.page, self.front));
        self.front = end;
        if let Some(starts) = &mut self.starts {
            starts.retain(|&s| s >= end);
        }
        Some(Rec(entry_body(self.page, start, end)))
    }
}

impl DoubleEndedIterator for Entries<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        if self.front >= self.back {
            return None;
        }
        let (page, front, back) = (self.page, self.front, self.back);
        let starts = self.starts.get_or_insert_with(|| {
            let mut starts = Vec::new();
            let mut at = front;
            while at < back {
                starts.push(at);
                at = entry_end(page, at);
            }
            starts
        });
        let start = starts.pop()?;
        let end = self.back;
        self.back = start;
        Some(Rec(entry_body(page, start, end)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeMap;

    /// A random seed, printed, and its generator.
    fn seeded() -> (u64, rand::rngs::StdRng) {
        let seed: u64 = rand::random();
        println!("seed {seed}");
        (seed, rand::rngs::StdRng::seed_from_u64(seed))
    }

    fn kv(key: &str, value: &str, rev: u64) -> KeyValue {
        KeyValue::new(key, value, rev, rev, 1)
    }

    /// Every invariant of the module docs, checked against a model.
    fn check(pages: &Pages, model: &BTreeMap<String, String>) {
        assert_eq!(pages.len(), model.len());
        let got: Vec<(&str, &str)> = pages.iter().map(|r| (r.key(), r.value())).collect();
        let want: Vec<(&str, &str)> = model.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, want, "a walk gives every record once, in order");
        let back: Vec<&str> = pages.iter().rev().map(|r| r.key()).collect();
        assert_eq!(back, want.iter().rev().map(|(k, _)| *k).collect::<Vec<_>>());
        let mut bounds = pages.pages.keys().map(|b| &b[..]);
        if !pages.pages.is_empty() {
            assert_eq!(bounds.next(), Some(&b""[..]), "the first page's bound is the empty key");
        }
        let all: Vec<(&[u8], &Vec<u8>)> = pages.pages.iter().map(|(b, p)| (&b[..], p)).collect();
        for (i, (bound, page)) in all.iter().enumerate() {
            if i > 0 {
                assert!(!page.is_empty(), "only the first page may be empty");
            }
            let keys: Vec<&[u8]> = Entries::new(page).map(|r| r.key_bytes()).collect();
            assert!(keys.iter().all(|k| k >= bound), "a page holds keys from its bound");
            if let Some((next, _)) = all.get(i + 1) {
                assert!(keys.iter().all(|k| k < next), "and below the next page's bound");
            }
            let records = keys.len();
            assert!(page.len() <= PAGE_BYTES || records == 1, "a page over the limit splits");
            assert_eq!(page.capacity(), page.len(), "a page keeps no spare capacity");
        }
    }

    #[test]
    fn random_puts_and_deletes_match_a_map() {
        let (seed, mut rng) = seeded();
        let (mut pages, mut model) = (Pages::new(), BTreeMap::new());
        for step in 0..20_000u64 {
            let key = format!("k{}", rng.gen_range(0..3_000));
            if rng.gen_bool(0.3) {
                assert_eq!(pages.remove(key.as_bytes()), model.remove(&key).is_some());
            } else {
                let value = "v".repeat(rng.gen_range(0..300));
                let new = pages.insert(&kv(&key, &value, step + 1));
                assert_eq!(new, model.insert(key.clone(), value).is_none(), "seed {seed}");
            }
            if step % 2_000 == 0 {
                check(&pages, &model);
            }
            let probe = format!("k{}", rng.gen_range(0..3_000));
            assert_eq!(
                pages.get(probe.as_bytes()).map(|r| r.value()),
                model.get(&probe).map(String::as_str),
                "seed {seed}"
            );
        }
        check(&pages, &model);
        assert!(pages.page_count() > 10, "the test made pages split");
        for key in model.keys() {
            assert!(pages.remove(key.as_bytes()));
        }
        check(&pages, &BTreeMap::new());
        assert_eq!(pages.page_count(), 1, "emptied pages join the first");
    }

    #[test]
    fn ranges_match_a_map_forwards_and_backwards() {
        let (seed, mut rng) = seeded();
        let (mut pages, mut model) = (Pages::new(), BTreeMap::new());
        for i in 0..2_000 {
            let key = format!("{:04}", rng.gen_range(0..5_000));
            pages.insert(&kv(&key, &"x".repeat(60), i + 1));
            model.insert(key, ());
        }
        for _ in 0..500 {
            let a = format!("{:04}", rng.gen_range(0..5_000));
            let b = format!("{:04}", rng.gen_range(0..5_000));
            let (a, b) = if a <= b { (a, b) } else { (b, a) };
            let bound = |s: &str, kind: u8| match kind {
                0 => Bound::Unbounded,
                1 => Bound::Included(s.to_string()),
                _ => Bound::Excluded(s.to_string()),
            };
            let (start, end) = (bound(&a, rng.gen_range(0..3)), bound(&b, rng.gen_range(0..3)));
            if matches!((&start, &end), (Bound::Excluded(x), Bound::Excluded(y)) if x == y) {
                continue; // a BTreeMap refuses this range
            }
            let want: Vec<&str> = model
                .range::<String, _>((start.clone(), end.clone()))
                .map(|(k, _)| k.as_str())
                .collect();
            let as_bytes = |b: &Bound<String>| match b {
                Bound::Unbounded => Bound::Unbounded,
                Bound::Included(s) => Bound::Included(s.clone().into_bytes()),
                Bound::Excluded(s) => Bound::Excluded(s.clone().into_bytes()),
            };
            let (s, e) = (as_bytes(&start), as_bytes(&end));
            let range = (s.as_ref().map(|v| &v[..]), e.as_ref().map(|v| &v[..]));
            let got: Vec<&str> = pages.range(range).map(|r| r.key()).collect();
            assert_eq!(got, want, "seed {seed}: {start:?}..{end:?}");
            let back: Vec<&str> = pages.range(range).rev().map(|r| r.key()).collect();
            assert_eq!(back, want.iter().rev().copied().collect::<Vec<_>>(), "seed {seed}");
        }
    }

    #[test]
    fn a_record_larger_than_a_page_has_a_page_of_its_own() {
        let mut pages = Pages::new();
        let big = "b".repeat(3 * PAGE_BYTES);
        for k in ["a", "c", "e"] {
            pages.insert(&kv(k, &big, 1));
        }
        pages.insert(&kv("b", "small", 2));
        let model: BTreeMap<String, String> =
            [("a", &big[..]), ("b", "small"), ("c", &big), ("e", &big)]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        check(&pages, &model);
    }

    #[test]
    fn a_built_set_is_the_set_its_records_make() {
        let mut builder = Pages::builder();
        let mut model = BTreeMap::new();
        for i in 0..5_000 {
            let (key, value) = (format!("key/{i:06}"), format!("value {i}"));
            builder.push(&kv(&key, &value, i + 1));
            model.insert(key, value);
        }
        let mut pages = builder.finish();
        check(&pages, &model);
        let full =
            pages.page_bytes() as f64 / pages.pages.values().map(Vec::len).sum::<usize>() as f64;
        assert!(full < 1.01, "built pages carry no spare capacity ({full})");
        // And it takes writes as any other set.
        assert!(pages.insert(&kv("a", "first", 9)));
        assert!(!pages.insert(&kv("key/000010", "changed", 9)));
        model.insert("a".into(), "first".into());
        model.insert("key/000010".into(), "changed".into());
        check(&pages, &model);
        check(&Pages::builder().finish(), &BTreeMap::new());
    }

    #[test]
    fn a_short_key_with_a_100_byte_value_costs_about_its_record() {
        let mut pages = Pages::new();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let n = 50_000;
        for i in 0..n {
            let key = format!("bench-{}", rng.gen_range(0..1_000_000u64));
            pages.insert(&kv(&key, &"v".repeat(100), 1_000_000 + i));
        }
        let per_key = pages.page_bytes() as f64 / pages.len() as f64;
        // A record of 12+100 bytes is 120 with its varints, 121 with its length.
        assert!(per_key < 135.0, "{per_key:.1} bytes of page per key");
    }
}
