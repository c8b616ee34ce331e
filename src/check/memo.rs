//! The search's memory: interned register values and Lowe's cache of visited configurations,
//! with the hashers they share (used by [`super::search`]).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Interned register values (`None` = absent), found by a polynomial string hash that extends
/// in O(suffix) for appends, so a long value is never rehashed, nor copied unless it is new.
#[derive(Default)]
pub(super) struct Interner {
    pub(super) values: Vec<Option<String>>,
    hashes: Vec<u64>,
    /// Hash -> the latest id with that hash; `chain[id]` is the previous one (or `NO_ID`).
    heads: HashMap<u64, u32, BuildHasherDefault<MixHasher>>,
    chain: Vec<u32>,
    /// Total length of the interned strings.
    string_bytes: usize,
}

const NO_ID: u32 = u32::MAX;
const ABSENT_HASH: u64 = 0x2545_f491_4f6c_dd1d;
const EMPTY_HASH: u64 = 0x9e37_79b9_7f4a_7c15;

fn extend_hash(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h = h.wrapping_mul(0x0000_0100_0000_01b3).wrapping_add(u64::from(b) + 1);
    }
    h
}

impl Interner {
    pub(super) fn intern(&mut self, value: Option<&str>) -> u32 {
        let hash = value.map_or(ABSENT_HASH, |v| extend_hash(EMPTY_HASH, v.as_bytes()));
        if let Some(id) = self.find(hash, |cand| cand.as_deref() == value) {
            return id;
        }
        self.add(hash, value.map(str::to_string))
    }

    /// The id of the value of `state` with `suffix` appended (absent counts as "").
    pub(super) fn intern_append(&mut self, state: u32, suffix: &str) -> u32 {
        let (base, base_hash) = match &self.values[state as usize] {
            Some(v) => (v.as_str(), self.hashes[state as usize]),
            None => ("", EMPTY_HASH),
        };
        let hash = extend_hash(base_hash, suffix.as_bytes());
        let found = self.find(hash, |cand| {
            cand.as_deref().is_some_and(|c| {
                c.len() == base.len() + suffix.len() && c.starts_with(base) && c.ends_with(suffix)
            })
        });
        if let Some(id) = found {
            return id;
        }
        let mut value = String::with_capacity(base.len() + suffix.len());
        value.push_str(base);
        value.push_str(suffix);
        self.add(hash, Some(value))
    }

    fn find(&self, hash: u64, matches: impl Fn(&Option<String>) -> bool) -> Option<u32> {
        let mut id = self.heads.get(&hash).copied().unwrap_or(NO_ID);
        while id != NO_ID {
            if matches(&self.values[id as usize]) {
                return Some(id);
            }
            id = self.chain[id as usize];
        }
        None
    }

    pub(super) fn memory(&self) -> usize {
        // Per value: the string (+ allocator overhead), its slot, hash, chain link and table entry.
        self.string_bytes + self.values.len() * (16 + 24 + 8 + 4 + 16)
    }

    fn add(&mut self, hash: u64, value: Option<String>) -> u32 {
        self.string_bytes += value.as_ref().map_or(0, String::len);
        let id = self.values.len() as u32;
        self.values.push(value);
        self.hashes.push(hash);
        self.chain.push(self.heads.insert(hash, id).unwrap_or(NO_ID));
        id
    }
}

/// Lowe's memo: every (linearized set, state) configuration the search has already entered.
/// If a configuration was seen before, everything reachable from it was explored already (and
/// failed, or we would have stopped), so the search need not enter it again.
///
/// Keyed by a precomputed hash (the Zobrist hash of the set mixed with the state); entries with
/// equal hashes are chained and told apart by comparing the stored sets, in their compact
/// encoding ([`LinSet::encode`]). The encodings live in one flat array, entry `i` at
/// `sets[start[i]..start[i + 1]]`, so inserting allocates nothing but amortised growth.
#[derive(Default)]
pub(super) struct Cache {
    sets: Vec<u64>,
    start: Vec<usize>,
    states: Vec<u32>,
    /// Hash -> latest entry with that hash; `chain[entry]` is the previous one (or `NO_ID`).
    heads: HashMap<u64, u32, BuildHasherDefault<MixHasher>>,
    chain: Vec<u32>,
}

impl Cache {
    /// Records the configuration; returns false if it was already there.
    pub(super) fn insert(&mut self, set_hash: u64, state: u32, set: &[u64]) -> bool {
        let key = set_hash ^ splitmix64(u64::from(state));
        let head = self.heads.get(&key).copied().unwrap_or(NO_ID);
        let mut id = head;
        while id != NO_ID {
            let i = id as usize;
            let end = self.start.get(i + 1).copied().unwrap_or(self.sets.len());
            if self.states[i] == state && self.sets[self.start[i]..end] == *set {
                return false;
            }
            id = self.chain[i];
        }
        let new = self.states.len() as u32;
        self.states.push(state);
        self.start.push(self.sets.len());
        self.sets.extend_from_slice(set);
        self.chain.push(head);
        self.heads.insert(key, new);
        true
    }

    pub(super) fn memory(&self) -> usize {
        // The sets, and per entry: its start, state, chain link, and hash table entry (with
        // load-factor slack).
        self.sets.len() * 8 + self.states.len() * (8 + 4 + 4 + 24)
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.states.len()
    }
}

/// A fast hasher for keys that are already well mixed (or small integers): a multiply-rotate
/// in the style of FxHash. Not DoS-resistant, which does not matter here.
#[derive(Default)]
pub(super) struct MixHasher(u64);

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

/// SplitMix64's finaliser: a bijective mixer giving well-spread words from small integers.
pub(super) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
