//! The replicated log over a [`Storage`]: the questions Raft asks of a log (what term is at index
//! i? is a candidate's log at least as up to date as mine?) and the one way a follower changes it
//! (append, truncating only at the first conflict).

use crate::error::{Error, Result};
use crate::raft::Storage;
use crate::raft::{Entry, Index, Term};

/// The log plus the two volatile indexes of Figure 2 that describe it.
pub struct RaftLog {
    /// Where entries and the hard state live. The core owns it; the shell syncs it.
    pub(crate) storage: Box<dyn Storage>,
    /// Highest log entry known to be committed (Figure 2). Never decreases.
    pub commit_index: Index,
    /// Highest log entry handed to the state machine (Figure 2). `last_applied <= commit_index`.
    pub last_applied: Index,
}

impl RaftLog {
    /// Wraps storage; nothing is known committed until a leader says so (volatile state).
    pub fn new(storage: Box<dyn Storage>) -> Self {
        // Everything a snapshot covers is committed and applied (the shell restores the state
        // machine from that snapshot before applying anything else).
        let start = storage.snapshot().map_or(storage.first_index() - 1, |s| s.index);
        RaftLog { storage, commit_index: start, last_applied: start }
    }

    /// Index of the last entry (0 if empty).
    pub fn last_index(&self) -> Index {
        self.storage.last_index()
    }

    /// Term of the last entry (0 if empty).
    pub fn last_term(&self) -> Term {
        self.term_at(self.last_index()).unwrap_or(0)
    }

    /// Term of the entry at `index`, or `None` if this log does not hold it.
    pub fn term_at(&self, index: Index) -> Option<Term> {
        self.storage.term(index)
    }

    /// Index of the first entry still held (entries before it are compacted away).
    pub fn first_index(&self) -> Index {
        self.storage.first_index()
    }

    /// §5.4.1: a candidate's log is at least as up to date as ours if its last term is higher, or
    /// the same with an index at least as high.
    pub fn is_up_to_date(&self, last_log_index: Index, last_log_term: Term) -> bool {
        let my_term = self.last_term();
        last_log_term > my_term || (last_log_term == my_term && last_log_index >= self.last_index())
    }

    /// Does our entry at `index` have term `term`? (The AppendEntries consistency check.)
    pub fn matches(&self, index: Index, term: Term) -> bool {
        self.term_at(index) == Some(term)
    }

    /// Entries `lo..hi`, at most `max_bytes` (but at least one when the range is not empty).
    pub fn entries(&self, lo: Index, hi: Index, max_bytes: usize) -> Result<Vec<Entry>> {
        if lo >= hi {
            return Ok(Vec::new());
        }
        self.storage.entries(lo, hi, max_bytes)
    }

    /// Appends new entries created by this node as leader.
    pub fn append(&mut self, entries: &[Entry]) -> Result<()> {
        self.storage.append(entries)
    }

    /// A follower stores the leader's entries that follow a matching `prev_log_index`.
    ///
    /// §5.3, receiver rules 3 and 4: an existing entry that conflicts with a new one (same index,
    /// different term) is deleted with all that follow it; entries we already hold are kept. A stale
    /// or duplicated AppendEntries therefore never shortens the log — truncating on a match would
    /// throw away entries a newer request had already delivered (the original Go code did this).
    pub fn append_from_leader(&mut self, entries: &[Entry]) -> Result<()> {
        let mut new_from = entries.len();
        for (i, e) in entries.iter().enumerate() {
            match self.term_at(e.index) {
                Some(t) if t == e.term => continue,
                Some(_) => {
                    // Invariant (Leader Completeness): a committed entry is never overwritten.
                    if e.index <= self.commit_index {
                        return Err(Error::Internal(format!(
                            "leader sent a conflicting entry at {} below commit index {}",
                            e.index, self.commit_index
                        )));
                    }
                    self.storage.truncate_suffix(e.index)?;
                    new_from = i;
                    break;
                }
                None => {
                    new_from = i;
                    break;
                }
            }
        }
        if new_from < entries.len() {
            self.storage.append(&entries[new_from..])?;
        }
        Ok(())
    }

    /// The first index holding `term`, searching back from `index` (for the rejection hint).
    /// Terms never decrease along a log, so this is a binary search.
    pub fn first_index_of_term(&self, term: Term, index: Index) -> Index {
        let (mut lo, mut hi) = (self.first_index(), index);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.term_at(mid).unwrap_or(0) < term {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The last index holding `term`, if this log has any entry of that term (leader side of the
    /// fast-backtracking rule).
    pub fn last_index_of_term(&self, term: Term) -> Option<Index> {
        // Find the first index whose term is > `term`; the one before it is the candidate.
        let (mut lo, mut hi) = (self.first_index(), self.last_index() + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.term_at(mid).unwrap_or(0) <= term {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let candidate = lo.checked_sub(1)?;
        (candidate >= self.first_index() && self.term_at(candidate) == Some(term))
            .then_some(candidate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::MemStorage;

    fn log_with_terms(terms: &[Term]) -> RaftLog {
        let mut log = RaftLog::new(Box::new(MemStorage::new()));
        let entries: Vec<Entry> = terms
            .iter()
            .enumerate()
            .map(|(i, &t)| Entry { index: i as Index + 1, term: t, command: vec![1] })
            .collect();
        log.append(&entries).unwrap();
        log
    }

    fn e(index: Index, term: Term) -> Entry {
        Entry { index, term, command: vec![2] }
    }

    #[test]
    fn up_to_date_compares_last_term_then_length() {
        let log = log_with_terms(&[1, 1, 2]);
        assert!(log.is_up_to_date(3, 2));
        assert!(log.is_up_to_date(1, 3));
        assert!(!log.is_up_to_date(9, 1));
        assert!(!log.is_up_to_date(2, 2));
    }

    #[test]
    fn stale_append_never_truncates_a_matching_log() {
        let mut log = log_with_terms(&[1, 1, 1, 1]);
        log.append_from_leader(&[e(2, 1)]).unwrap();
        assert_eq!(log.last_index(), 4, "a matching prefix must not shorten the log");
    }

    #[test]
    fn conflict_truncates_at_first_conflicting_entry_only() {
        let mut log = log_with_terms(&[1, 1, 1, 1]);
        log.append_from_leader(&[e(2, 1), e(3, 2)]).unwrap();
        assert_eq!(log.last_index(), 3);
        assert_eq!(log.term_at(3), Some(2));
        assert_eq!(log.term_at(2), Some(1));
    }

    #[test]
    fn committed_entries_are_never_overwritten() {
        let mut log = log_with_terms(&[1, 1]);
        log.commit_index = 2;
        assert!(log.append_from_leader(&[e(2, 5)]).is_err());
    }

    #[test]
    fn term_searches_for_the_backtracking_hint() {
        let log = log_with_terms(&[1, 1, 2, 2, 2, 4]);
        assert_eq!(log.first_index_of_term(2, 5), 3);
        assert_eq!(log.first_index_of_term(1, 2), 1);
        assert_eq!(log.last_index_of_term(2), Some(5));
        assert_eq!(log.last_index_of_term(3), None);
        assert_eq!(log.last_index_of_term(4), Some(6));
        assert_eq!(log.last_index_of_term(9), None);
    }
}
