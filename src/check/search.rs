//! The Wing–Gong search with Lowe's memoisation, for the history of one key.
//!
//! See the [module documentation](super) for the algorithm in prose. This file is the mechanics:
//!
//! * the per-key operation vocabulary ([`KeyOp`], [`KeyEntry`]);
//! * the register model, with its states interned as small integers (so the memo cache and the
//!   undo stack hold `u32`s, never strings);
//! * the event list (a doubly linked list in arrays, with "dancing links" lift/unlift);
//! * the depth-first search itself ([`check_key`]).

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::time::Instant;

use super::memo::{Cache, Interner, MixHasher, splitmix64};

/// One operation as seen by a single key's register.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum KeyOp {
    /// Set the register to this value.
    Put(String),
    /// Append to the register (an absent register counts as "").
    Append(String),
    /// Make the register absent.
    Delete,
    /// A read that returned this (`None` = not found).
    Get(Option<String>),
    /// If the register holds `expect`, set it to `value`; `result` says whether it did (`None`:
    /// unknown — either, as the state decides).
    Cas { expect: Option<String>, value: String, result: Option<bool> },
}

impl KeyOp {
    pub(crate) fn is_read(&self) -> bool {
        matches!(self, KeyOp::Get(_))
    }
}

/// One operation of a per-key sub-history, with its real-time interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyEntry {
    pub(crate) op: KeyOp,
    /// When the client sent the request.
    pub(crate) call: u64,
    /// When the client saw the reply; `None` means never (outcome unknown): the operation may take
    /// effect at any point after `call`.
    pub(crate) ret: Option<u64>,
}

/// What [`check_key`] concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyResult {
    Linearizable,
    Illegal,
    /// The deadline passed, or the search's memory estimate went over its limit, before the
    /// search finished.
    GaveUp,
}

/// How many search steps run between two looks at the clock.
const CLOCK_EVERY: u64 = 4096;

/// "No node" in the linked list.
const NIL: usize = usize::MAX;

/// The list's head sentinel.
const HEAD: usize = 0;

/// Decides whether one key's sub-history is linearizable with respect to a register that starts as
/// `initial`, giving up (with [`KeyResult::GaveUp`]) once `deadline` has passed or its memory
/// estimate exceeds `memory_limit` bytes.
pub(crate) fn check_key(
    entries: &[&KeyEntry],
    initial: &Option<String>,
    deadline: Instant,
    memory_limit: usize,
) -> KeyResult {
    let mut search = Search::new(entries, initial, memory_limit);
    loop {
        if let Some(result) = search.run(u64::MAX, deadline) {
            return result;
        }
    }
}

/// One key's search, resumable: [`Search::run`] does a bounded number of steps and can be called
/// again to continue, so the searches of several keys can take turns.
pub(crate) struct Search {
    model: Model,
    list: EventList,
    /// The set of operations linearized so far, as a bitset...
    linearized: LinSet,
    /// ... and its Zobrist hash (the XOR of a fixed pseudo-random word per member), updated in
    /// O(1) as bits flip.
    lin_hash: u64,
    zobrist: Vec<u64>,
    cache: Cache,
    /// Undo stack: (call node we lifted, model state before it).
    stack: Vec<(usize, u32)>,
    state: u32,
    /// The event the search looks at next.
    entry: usize,
    /// Steps taken so far, over all calls to `run`.
    steps: u64,
    /// Give up when [`Search::memory`] exceeds this.
    memory_limit: usize,
    /// Interchangeable operations (see [`Groups`]).
    groups: Groups,
    /// Reused buffer for encoding the linearized set.
    scratch: Vec<u64>,
}

/// The set of linearized operations, laid out so that it encodes compactly (the memo cache stores
/// one per configuration, so its size is what limits how long a history can be checked).
///
/// Bits are positions, not operation indexes: operations that returned get positions in call
/// order, then, from the next word on, the operations that never returned (unknown outcome). In
/// any configuration the search reaches, every returned operation called before the earliest
/// one not yet linearized is linearized, and the ones linearized beyond it were all called
/// before that operation returned. So the returned part is a run of all-ones words, a short
/// *window* of mixed words, and zeros; the encoding is the run's length, the window, and the
/// words of the never-returned part: tens of bytes where the plain bitset of a 100,000-operation
/// key takes 12.5 KB. Exact: it determines the set.
struct LinSet {
    words: Vec<u64>,
    /// Per operation: its bit position.
    slot: Vec<usize>,
    /// Words holding returned operations (the all-ones run and the window live here).
    known_words: usize,
    /// Words that can be all ones (the last known word may be partly unused).
    full_words: usize,
    /// Words `0..lead` are all ones (and `lead` is as large as that allows)...
    lead: usize,
    /// ... and words `end..known_words` are zero (`end` as small as that allows, at least `lead`).
    end: usize,
}

impl LinSet {
    fn new(entries: &[&KeyEntry]) -> Self {
        let mut returned: Vec<usize> =
            (0..entries.len()).filter(|&i| entries[i].ret.is_some()).collect();
        returned.sort_by_key(|&i| (entries[i].call, i));
        let known = returned.len();
        let known_words = known.div_ceil(64);
        let mut slot = vec![0; entries.len()];
        for (position, &op) in returned.iter().enumerate() {
            slot[op] = position;
        }
        let mut next = known_words * 64;
        for (op, e) in entries.iter().enumerate() {
            if e.ret.is_none() {
                slot[op] = next;
                next += 1;
            }
        }
        LinSet {
            words: vec![0; next.div_ceil(64).max(known_words)],
            slot,
            known_words,
            full_words: known / 64,
            lead: 0,
            end: 0,
        }
    }

    fn insert(&mut self, op: usize) {
        let s = self.slot[op];
        let w = s / 64;
        self.words[w] |= 1 << (s % 64);
        if w < self.known_words {
            self.end = self.end.max(w + 1);
            while self.lead < self.full_words && self.words[self.lead] == u64::MAX {
                self.lead += 1;
            }
            self.end = self.end.max(self.lead);
        }
    }

    fn remove(&mut self, op: usize) {
        let s = self.slot[op];
        let w = s / 64;
        self.words[w] &= !(1 << (s % 64));
        if w < self.known_words {
            self.lead = self.lead.min(w);
            while self.end > self.lead && self.words[self.end - 1] == 0 {
                self.end -= 1;
            }
        }
    }

    /// The compact encoding: `[lead, window length, window..., never-returned part...]`.
    fn encode(&self, out: &mut Vec<u64>) {
        out.clear();
        out.push(self.lead as u64);
        out.push((self.end - self.lead) as u64);
        out.extend_from_slice(&self.words[self.lead..self.end]);
        out.extend_from_slice(&self.words[self.known_words..]);
    }
}

/// Operations that never returned (unknown outcome) and have the same effect — two deletes, two
/// puts of one value — are interchangeable: once both are called, either can take the other's
/// place in any linearization, since neither must be linearized by any particular time. So the
/// search only ever tries the *earliest-called* not yet linearized member of such a group: the
/// linearized members of a group are then always its first ones, and configurations that differ
/// only in *which* identical operations were used are one configuration to the memo cache. (The
/// k-th use, in order, gets the k-th member by call time; that member was called before the use,
/// since k members were.) Without this, every unknown delete of a key doubles the configurations a
/// search may have to visit.
struct Groups {
    /// Per operation: its group, or `NO_GROUP`.
    of: Vec<u32>,
    /// Per group: its members in call order.
    members: Vec<Vec<usize>>,
    /// Per group: how many members are linearized (always the first ones).
    used: Vec<usize>,
}

const NO_GROUP: u32 = u32::MAX;

impl Groups {
    fn new(entries: &[&KeyEntry]) -> Self {
        let mut unknown: Vec<usize> =
            (0..entries.len()).filter(|&i| entries[i].ret.is_none()).collect();
        // The event list's order among calls: by time, then by index.
        unknown.sort_by_key(|&i| (entries[i].call, i));
        let mut ids: HashMap<&KeyOp, u32> = HashMap::new();
        let mut of = vec![NO_GROUP; entries.len()];
        let mut members: Vec<Vec<usize>> = Vec::new();
        for i in unknown {
            let g = *ids.entry(&entries[i].op).or_insert_with(|| {
                members.push(Vec::new());
                (members.len() - 1) as u32
            });
            of[i] = g;
            members[g as usize].push(i);
        }
        let used = vec![0; members.len()];
        Groups { of, members, used }
    }

    /// May `op` be linearized now? Only if it is the next member of its group (or in none).
    fn may_try(&self, op: usize) -> bool {
        let g = self.of[op];
        g == NO_GROUP || self.members[g as usize][self.used[g as usize]] == op
    }

    fn linearized(&mut self, op: usize) {
        if let Some(used) = self.used.get_mut(self.of[op] as usize) {
            *used += 1;
        }
    }

    fn undone(&mut self, op: usize) {
        if let Some(used) = self.used.get_mut(self.of[op] as usize) {
            *used -= 1;
        }
    }
}

impl Search {
    pub(crate) fn new(
        entries: &[&KeyEntry],
        initial: &Option<String>,
        memory_limit: usize,
    ) -> Self {
        let model = Model::new(entries, initial);
        let list = EventList::new(entries);
        let entry = list.next[HEAD];
        Search {
            state: model.initial,
            model,
            entry,
            list,
            linearized: LinSet::new(entries),
            lin_hash: 0,
            zobrist: (0..entries.len() as u64).map(splitmix64).collect(),
            cache: Cache::default(),
            scratch: Vec::new(),
            stack: Vec::new(),
            steps: 0,
            memory_limit,
            groups: Groups::new(entries),
        }
    }

    /// An estimate of the bytes this search holds (its memo cache and its interned states),
    /// the part that grows as it runs.
    pub(crate) fn memory(&self) -> usize {
        self.cache.memory() + self.model.interner.memory()
    }

    /// Steps taken so far.
    pub(crate) fn steps(&self) -> u64 {
        self.steps
    }

    /// Runs at most `max_steps` more steps. Returns `None` if the search is not finished yet;
    /// [`KeyResult::GaveUp`] if `deadline` passed or the memory limit was exceeded (both are
    /// looked at every few thousand steps).
    pub(crate) fn run(&mut self, max_steps: u64, deadline: Instant) -> Option<KeyResult> {
        let list = &mut self.list;
        let mut entry = self.entry;
        let mut budget = max_steps;
        let mut result = None;
        // The list is never empty while the loop runs, and always ends with a return event (each
        // remaining call's return follows it), so `entry` never walks off the end.
        while list.next[HEAD] != NIL {
            if budget == 0 {
                break;
            }
            budget -= 1;
            self.steps += 1;
            if self.steps.is_multiple_of(CLOCK_EVERY)
                && (Instant::now() >= deadline
                    || self.cache.memory() + self.model.interner.memory() > self.memory_limit)
            {
                result = Some(KeyResult::GaveUp);
                break;
            }
            let op = list.op[entry];
            if list.is_call[entry] {
                // Try to linearize `op` now: it must be legal in the current state, and the
                // resulting (linearized set, state) pair must be new. An operation with an
                // identical, earlier-called twin not yet linearized is skipped (see `Groups`).
                if !self.groups.may_try(op) {
                    entry = list.next[entry];
                    continue;
                }
                if let Some(new_state) = self.model.step(self.state, op) {
                    self.linearized.insert(op);
                    let hash = self.lin_hash ^ self.zobrist[op];
                    self.linearized.encode(&mut self.scratch);
                    if self.cache.insert(hash, new_state, &self.scratch) {
                        self.stack.push((entry, self.state));
                        self.state = new_state;
                        self.lin_hash = hash;
                        self.groups.linearized(op);
                        list.lift(entry);
                        entry = list.next[HEAD];
                        continue;
                    }
                    self.linearized.remove(op);
                }
                entry = list.next[entry];
            } else {
                // A return: the operation it closes must already be linearized, and it is not
                // (else its return would have been lifted with its call). Undo the latest choice
                // and try the next candidate after it.
                let Some((call_node, prev_state)) = self.stack.pop() else {
                    result = Some(KeyResult::Illegal);
                    break;
                };
                let op = list.op[call_node];
                self.linearized.remove(op);
                self.lin_hash ^= self.zobrist[op];
                self.state = prev_state;
                self.groups.undone(op);
                list.unlift(call_node);
                entry = list.next[call_node];
            }
        }
        self.entry = entry;
        if result.is_none() && list.next[HEAD] == NIL {
            result = Some(KeyResult::Linearizable);
        }
        result
    }
}

/// The register model. States are interned: state `i` is the value `interner.values[i]`, so the
/// search, its undo stack and its memo cache handle `u32`s, never strings.
struct Model {
    interner: Interner,
    /// Per operation: its precomputed effect.
    effect: Vec<Effect>,
    /// Memo of `Append` transitions: (state, op) -> new state.
    appends: HashMap<(u32, u32), u32, BuildHasherDefault<MixHasher>>,
    suffixes: Vec<String>,
    initial: u32,
}

#[derive(Clone, Copy)]
enum Effect {
    /// Always legal; the register becomes this state (put, delete).
    Set(u32),
    /// Legal only in this state, which it leaves unchanged (get).
    Expect(u32),
    /// Always legal; the new state is the old one with this suffix (index into `suffixes`).
    Append(usize),
    /// Compare-and-set: in state `expect` it sets `set` (illegal if it is known to have
    /// failed); in any other state it changes nothing (illegal if it is known to have
    /// succeeded).
    Cas { expect: u32, set: u32, result: Option<bool> },
}

impl Model {
    fn new(entries: &[&KeyEntry], initial: &Option<String>) -> Self {
        let mut interner = Interner::default();
        let mut suffixes = Vec::new();
        let initial = interner.intern(initial.as_deref());
        let effect = entries
            .iter()
            .map(|e| match &e.op {
                KeyOp::Put(v) => Effect::Set(interner.intern(Some(v))),
                KeyOp::Delete => Effect::Set(interner.intern(None)),
                KeyOp::Get(v) => Effect::Expect(interner.intern(v.as_deref())),
                KeyOp::Append(v) => {
                    suffixes.push(v.clone());
                    Effect::Append(suffixes.len() - 1)
                }
                KeyOp::Cas { expect, value, result } => Effect::Cas {
                    expect: interner.intern(expect.as_deref()),
                    set: interner.intern(Some(value)),
                    result: *result,
                },
            })
            .collect();
        Model { interner, effect, appends: HashMap::default(), suffixes, initial }
    }

    /// The state after applying operation `op` in `state`, or `None` if `op` is not legal there.
    fn step(&mut self, state: u32, op: usize) -> Option<u32> {
        match self.effect[op] {
            Effect::Set(s) => Some(s),
            Effect::Expect(s) => (s == state).then_some(state),
            Effect::Cas { expect, set, result } => match (state == expect, result) {
                (true, Some(false)) | (false, Some(true)) => None,
                (true, _) => Some(set),
                (false, _) => Some(state),
            },
            Effect::Append(suffix) => {
                let memo = self.appends.entry((state, op as u32));
                Some(
                    *memo.or_insert_with(|| {
                        self.interner.intern_append(state, &self.suffixes[suffix])
                    }),
                )
            }
        }
    }
}

/// The call and return events of a history, sorted by time, as a doubly linked list in arrays.
///
/// Node 0 is the head sentinel; nodes `1..` are the events. Linearizing an operation *lifts* its
/// call and return nodes out of the list; backtracking *unlifts* them. Because unlifts happen in
/// exactly the reverse order of lifts (a stack), a removed node still knows its old neighbours and
/// can be spliced back in O(1) (Knuth's "dancing links").
struct EventList {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// The operation (index into the entries) of each node.
    op: Vec<usize>,
    is_call: Vec<bool>,
    /// For a call node, the node of its return.
    partner: Vec<usize>,
}

impl EventList {
    fn new(entries: &[&KeyEntry]) -> Self {
        // (time, is_return, op). Sorting puts calls before returns at equal times, so operations
        // whose intervals touch count as concurrent: the permissive (sound) reading of clocks
        // with finite resolution. An unknown outcome returns at "infinity", after everything.
        let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * entries.len());
        for (i, e) in entries.iter().enumerate() {
            events.push((e.call, false, i));
            let ret = e.ret.map_or(u64::MAX, |r| r.max(e.call));
            events.push((ret, true, i));
        }
        events.sort_unstable();

        let n = events.len() + 1;
        let mut list = EventList {
            next: (1..=n).map(|i| if i < n { i } else { NIL }).collect(),
            prev: (0..n).map(|i| if i == 0 { NIL } else { i - 1 }).collect(),
            op: vec![0; n],
            is_call: vec![false; n],
            partner: vec![NIL; n],
        };
        let mut call_node = vec![NIL; entries.len()];
        for (k, &(_, is_return, op)) in events.iter().enumerate() {
            let node = k + 1;
            list.op[node] = op;
            list.is_call[node] = !is_return;
            if is_return {
                list.partner[call_node[op]] = node;
            } else {
                call_node[op] = node;
            }
        }
        list
    }

    fn unlink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = node;
        if n != NIL {
            self.prev[n] = node;
        }
    }

    /// Removes a call node and its return node.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.partner[call]);
    }

    /// Undoes the matching [`lift`](Self::lift) (must be the most recent one not yet undone).
    fn unlift(&mut self, call: usize) {
        self.relink(self.partner[call]);
        self.relink(call);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn e(op: KeyOp, call: u64, ret: Option<u64>) -> KeyEntry {
        KeyEntry { op, call, ret }
    }

    fn run(entries: &[KeyEntry]) -> KeyResult {
        let refs: Vec<&KeyEntry> = entries.iter().collect();
        check_key(&refs, &None, Instant::now() + Duration::from_secs(5), usize::MAX)
    }

    #[test]
    fn sequential_put_get() {
        let h =
            [e(KeyOp::Put("a".into()), 0, Some(1)), e(KeyOp::Get(Some("a".into())), 2, Some(3))];
        assert_eq!(run(&h), KeyResult::Linearizable);
    }

    #[test]
    fn read_before_write_returns_is_fine_only_if_concurrent() {
        let concurrent =
            [e(KeyOp::Put("a".into()), 0, Some(10)), e(KeyOp::Get(Some("a".into())), 1, Some(2))];
        assert_eq!(run(&concurrent), KeyResult::Linearizable);
        let before =
            [e(KeyOp::Get(Some("a".into())), 0, Some(1)), e(KeyOp::Put("a".into()), 2, Some(3))];
        assert_eq!(run(&before), KeyResult::Illegal);
    }

    #[test]
    fn appends_compose() {
        let h = [
            e(KeyOp::Append("x".into()), 0, Some(5)),
            e(KeyOp::Append("y".into()), 1, Some(6)),
            e(KeyOp::Get(Some("yx".into())), 7, Some(8)),
        ];
        assert_eq!(run(&h), KeyResult::Linearizable);
        let h = [
            e(KeyOp::Append("x".into()), 0, Some(1)),
            e(KeyOp::Append("y".into()), 2, Some(3)),
            e(KeyOp::Get(Some("yx".into())), 4, Some(5)),
        ];
        assert_eq!(run(&h), KeyResult::Illegal);
    }

    #[test]
    fn cache_remembers_configurations() {
        let mut cache = Cache::default();
        assert!(cache.insert(7, 1, &[1, 2]));
        assert!(!cache.insert(7, 1, &[1, 2]));
        assert!(cache.insert(7, 2, &[1, 2]), "other state");
        assert!(cache.insert(7, 1, &[1, 3]), "other set, same (colliding) hash");
        assert!(!cache.insert(7, 1, &[1, 3]));
        assert!(cache.insert(7, 1, &[1, 3, 0]), "other length");
        assert!(!cache.insert(7, 1, &[1, 2]));
        assert_eq!(cache.len(), 4);
    }

    #[test]
    fn linearized_sets_encode_exactly() {
        // 130 returned operations (three words, the last one partly used) and 70 that never
        // returned (two more words).
        let entries: Vec<KeyEntry> = (0..200)
            .map(|i| e(KeyOp::Delete, i, if i % 20 < 13 { Some(i + 5) } else { None }))
            .collect();
        let refs: Vec<&KeyEntry> = entries.iter().collect();
        let mut set = LinSet::new(&refs);
        assert_eq!((set.known_words, set.full_words, set.words.len()), (3, 2, 5));
        let mut plain = [false; 200];
        let mut seen: HashMap<Vec<u64>, Vec<bool>> = HashMap::new();
        let mut buf = Vec::new();
        let mut rng = 0x1234_5678_u64;
        for _ in 0..20_000 {
            rng = splitmix64(rng);
            // Mostly grow a prefix in call order (as the search does), sometimes undo at random.
            let op = if rng.is_multiple_of(4) {
                (rng >> 8) as usize % 200
            } else {
                plain.iter().position(|b| !b).unwrap_or(0)
            };
            if plain[op] {
                set.remove(op);
            } else {
                set.insert(op);
            }
            plain[op] = !plain[op];
            // The bookkeeping is canonical: the largest all-ones run, the smallest window.
            let known = &set.words[..set.known_words];
            let lead = known[..set.full_words].iter().take_while(|w| **w == u64::MAX).count();
            let end = known.iter().rposition(|w| *w != 0).map_or(0, |i| i + 1).max(lead);
            assert_eq!((set.lead, set.end), (lead, end));
            // Equal encodings mean equal sets.
            set.encode(&mut buf);
            let previous = seen.entry(buf.clone()).or_insert_with(|| plain.to_vec());
            assert_eq!(*previous, plain.to_vec(), "two sets share the encoding {buf:?}");
        }
    }

    #[test]
    fn interned_appends_equal_interned_values() {
        let mut i = Interner::default();
        let absent = i.intern(None);
        let empty = i.intern(Some(""));
        assert_ne!(absent, empty);
        let ab = i.intern(Some("ab"));
        let a = i.intern_append(absent, "a");
        assert_eq!(i.intern_append(a, "b"), ab);
        assert_eq!(i.intern_append(empty, "ab"), ab);
        assert_eq!(i.intern_append(empty, ""), empty);
        let abc = i.intern_append(ab, "c") as usize;
        assert_eq!(i.values[abc].as_deref(), Some("abc"));
    }

    #[test]
    fn dancing_links_restore_the_list() {
        let h = [e(KeyOp::Put("a".into()), 0, Some(3)), e(KeyOp::Put("b".into()), 1, Some(4))];
        let refs: Vec<&KeyEntry> = h.iter().collect();
        let mut list = EventList::new(&refs);
        let before = (list.next.clone(), list.prev.clone());
        list.lift(1);
        list.lift(list.next[HEAD]);
        assert_eq!(list.next[HEAD], NIL);
        let second = 2; // node of the second call (events: c0, c1, r0, r1)
        list.unlift(second);
        list.unlift(1);
        assert_eq!((list.next.clone(), list.prev.clone()), before);
    }
}
