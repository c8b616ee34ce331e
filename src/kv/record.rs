//! How the store encodes one key: its key, value and revisions as **one** run of bytes.
//!
//! A `BTreeMap<String, {value: String, three u64}>` costs every key two allocations (the key's
//! and the value's), each with its allocator header and rounding, plus a 72-byte slot in a tree
//! node that is half empty after ordered inserts: ~270 bytes for a 12-byte key and a 100-byte
//! value. A record is laid out as
//!
//! ```text
//! [varint key length][key][varint create_revision][varint mod_revision][varint version][value]
//! ```
//!
//! (LEB128 varints: 7 bits a byte, low bits first): 120 bytes for that key. The store keeps
//! records back to back in pages ([`super::pages`]), ordered by the key's bytes — which is how
//! Rust orders strings, so ranges are unchanged — and reads them in place as a [`Rec`]. A
//! [`KeyValue`] is a record in a heap block of its own: how one is built, and how the overlay of
//! changes made during a snapshot keeps them. The key comes first so a search reads one length
//! byte and the key, nothing else.
//!
//! Key and value are only ever copied in from `&str`, so the bytes are UTF-8; reading them back
//! checks that again rather than trusting it (no `unsafe`), which costs a few nanoseconds per
//! read.

use std::fmt;

/// One key with its value and revisions (see the module docs for the layout).
#[derive(Clone, PartialEq, Eq)]
pub struct KeyValue(Box<[u8]>);

impl KeyValue {
    /// A key's record.
    pub fn new(
        key: &str,
        value: &str,
        create_revision: u64,
        mod_revision: u64,
        version: u64,
    ) -> KeyValue {
        let revisions = [create_revision, mod_revision, version];
        // Exactly the right size: shrinking a larger block would leave the allocator a hole.
        let size = varint_len(key.len() as u64)
            + key.len()
            + revisions.iter().map(|&n| varint_len(n)).sum::<usize>()
            + value.len();
        let mut block = Vec::with_capacity(size);
        push_varint(&mut block, key.len() as u64);
        block.extend_from_slice(key.as_bytes());
        for n in revisions {
            push_varint(&mut block, n);
        }
        block.extend_from_slice(value.as_bytes());
        debug_assert_eq!(block.len(), size);
        KeyValue(block.into_boxed_slice())
    }

    /// The record as a borrowed view (what the store's reads hand out).
    pub fn rec(&self) -> Rec<'_> {
        Rec(&self.0)
    }

    /// The record's bytes, in the layout of the module docs (what a page stores).
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The key's bytes (what the store compares).
    pub fn key_bytes(&self) -> &[u8] {
        self.rec().key_bytes()
    }

    /// The key.
    pub fn key(&self) -> &str {
        self.rec().key()
    }

    /// The value.
    pub fn value(&self) -> &str {
        self.rec().value()
    }

    /// `(create_revision, mod_revision, version)`.
    pub fn revisions(&self) -> (u64, u64, u64) {
        self.rec().revisions()
    }

    /// Bytes this record occupies (its block on the heap, or its place in a page less the length
    /// prefix).
    pub fn heap_bytes(&self) -> usize {
        self.0.len()
    }
}

/// One record read in place: in a page of the store ([`super::pages`]) or in a [`KeyValue`].
/// Copy, so reads hand it out by value.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Rec<'a>(pub(super) &'a [u8]);

impl<'a> Rec<'a> {
    /// The key's bytes (what the store compares).
    pub fn key_bytes(self) -> &'a [u8] {
        let (len, at) = read_varint(self.0, 0);
        self.0.get(at..at + len as usize).unwrap_or_default()
    }

    /// The key.
    pub fn key(self) -> &'a str {
        std::str::from_utf8(self.key_bytes()).unwrap_or_default()
    }

    /// The revisions and where the value starts.
    fn fields(self) -> ([u64; 3], usize) {
        let (len, mut at) = read_varint(self.0, 0);
        at += len as usize;
        let mut out = [0; 3];
        for n in &mut out {
            (*n, at) = read_varint(self.0, at);
        }
        (out, at)
    }

    /// The value.
    pub fn value(self) -> &'a str {
        let (_, at) = self.fields();
        std::str::from_utf8(self.0.get(at..).unwrap_or_default()).unwrap_or_default()
    }

    /// Revision of the put that created the key (in its current life).
    pub fn create_revision(self) -> u64 {
        self.fields().0[0]
    }

    /// Revision of the key's latest put.
    pub fn mod_revision(self) -> u64 {
        self.fields().0[1]
    }

    /// Puts since the key was created, that one included.
    pub fn version(self) -> u64 {
        self.fields().0[2]
    }

    /// `(create_revision, mod_revision, version)` in one decode.
    pub fn revisions(self) -> (u64, u64, u64) {
        let ([c, m, v], _) = self.fields();
        (c, m, v)
    }

    /// An owned copy.
    pub fn to_owned(self) -> KeyValue {
        KeyValue(self.0.into())
    }
}

impl fmt::Debug for Rec<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (c, m, v) = self.revisions();
        f.debug_struct("KeyValue")
            .field("key", &self.key())
            .field("value", &self.value())
            .field("create_revision", &c)
            .field("mod_revision", &m)
            .field("version", &v)
            .finish()
    }
}

impl fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.rec().fmt(f)
    }
}

/// Bytes of `n` as a varint.
fn varint_len(n: u64) -> usize {
    (64 - n.max(1).leading_zeros() as usize).div_ceil(7)
}

pub(super) fn push_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// The varint at `at` and the offset after it (0 past the end: the block is always ours, so that
/// only happens to a bug, and reads empty rather than panicking).
pub(super) fn read_varint(bytes: &[u8], mut at: usize) -> (u64, usize) {
    let mut n = 0u64;
    let mut shift = 0;
    while let Some(&b) = bytes.get(at) {
        at += 1;
        if shift < 64 {
            n |= u64::from(b & 0x7f) << shift;
        }
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    (n, at)
}

#[cfg(test)]
mod tests {
    use super::super::Pages;
    use super::*;

    #[test]
    fn a_record_gives_back_what_it_was_made_of() {
        for (key, value, revs) in [
            ("", "", (1, 1, 1)),
            ("k", "v", (2, 3, 4)),
            ("a/b %c d", "ünïcødé ✓", (127, 128, 16_383)),
            (&"x".repeat(300)[..], &"y".repeat(70_000)[..], (16_384, u64::MAX - 1, u64::MAX)),
        ] {
            let kv = KeyValue::new(key, value, revs.0, revs.1, revs.2);
            assert_eq!(kv.key(), key);
            assert_eq!(kv.value(), value);
            assert_eq!(kv.revisions(), revs);
            assert_eq!(
                (kv.rec().create_revision(), kv.rec().mod_revision(), kv.rec().version()),
                revs,
                "each accessor agrees with revisions()"
            );
        }
    }

    #[test]
    fn a_record_of_a_short_key_and_a_100_byte_value_is_one_small_block() {
        let kv = KeyValue::new("bench-123456", &"v".repeat(100), 1_000_000, 1_000_000, 1);
        // 1 + 12 + 3 + 3 + 1 + 100: what the layout promises.
        assert_eq!(kv.heap_bytes(), 120);
        for n in [0, 1, 127, 128, 16_383, 16_384, u64::MAX] {
            let mut v = Vec::new();
            push_varint(&mut v, n);
            assert_eq!(varint_len(n), v.len(), "{n}");
        }
    }

    #[test]
    fn records_sort_and_are_found_by_key_as_strings_do() {
        let keys = ["a0", "a/b", "a/", "b", "", "é", "z", "a"];
        let mut set = Pages::new();
        for k in keys {
            set.insert(&KeyValue::new(k, "v", 1, 1, 1));
        }
        let mut sorted: Vec<&str> = keys.to_vec();
        sorted.sort();
        assert_eq!(set.iter().map(|kv| kv.key()).collect::<Vec<_>>(), sorted);
        assert!(set.get("a/b".as_bytes()).is_some());
        assert!(set.get("a/c".as_bytes()).is_none());
        // A longer value does not make a record of the same key a different key.
        assert!(!set.insert(&KeyValue::new("b", "longer value", 2, 3, 2)));
        assert_eq!(set.len(), keys.len());
        assert_eq!(set.get("b".as_bytes()).map(|kv| kv.value()), Some("longer value"));
    }
}
