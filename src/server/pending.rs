//! Client requests waiting for the cluster: writes waiting for their entry to be applied, reads
//! waiting for leadership confirmation and then for the state machine to catch up.
//!
//! Lock order: the Raft lock may be held while taking this one (a write registers itself under the
//! Raft lock, so its entry cannot be applied before it is registered); never the other way round.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use super::oneshot::Sender;

use crate::error::{Error, Result};
use crate::kv::Applied;
use crate::raft::{Index, Term};

/// What a waiting write learns.
pub type WriteResult = Result<Applied>;

/// Answers decided under the `pending` lock, to send once it is released: waking a thread is a
/// syscall, and under the lock every other request that needs it would wait for it (a profile
/// of 64 get connections found the leader's HTTP workers contending for this lock while the
/// apply thread woke a batch of readers).
#[derive(Default)]
#[must_use = "the waiters are woken only when the wakeups are sent"]
pub struct Wakeups {
    writes: Vec<(Sender<WriteResult>, WriteResult)>,
    reads: Vec<(Sender<Result<Index>>, Result<Index>)>,
}

impl Wakeups {
    /// Wakes everyone, with their answers.
    pub fn send(self) {
        for (tx, answer) in self.writes {
            tx.send(answer);
        }
        for (tx, answer) in self.reads {
            tx.send(answer);
        }
    }

    /// Adds a waiting write's answer.
    pub fn write(&mut self, tx: Sender<WriteResult>, answer: WriteResult) {
        self.writes.push((tx, answer));
    }

    /// Nobody to wake.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.reads.is_empty()
    }
}

/// A waiting read: who waits, and when to give up for it (see [`Pending::add_read_until`]).
type ReadWaiter = (Sender<Result<Index>>, Option<Instant>);

/// The waiting room.
#[derive(Default)]
pub struct Pending {
    /// Writes by log index: (term the entry was proposed in, who waits, and when to give up
    /// for it: only a write answered by [`super::answers`] has no thread of its own to time out).
    writes: HashMap<Index, (Term, Sender<WriteResult>, Option<Instant>)>,
    /// Reads waiting for the leader's heartbeat round, by read id (with a deadline, as writes:
    /// only a read answered by [`super::answers`] has one).
    reads: HashMap<u64, ReadWaiter>,
    /// Reads confirmed at an index the state machine has not reached yet.
    reads_by_index: BTreeMap<Index, Vec<ReadWaiter>>,
    /// The state machine's applied index, as last reported by the apply thread.
    applied: Index,
    /// Answers decided but not sent yet ([`Pending::take_wakeups`]).
    woken: Wakeups,
}

impl Pending {
    /// The answers decided since the last call, to send after unlocking. Every method that
    /// answers a waiter leaves its answer here.
    pub fn take_wakeups(&mut self) -> Wakeups {
        std::mem::take(&mut self.woken)
    }

    /// A write proposed at `index` in `term` waits here.
    pub fn writes_waiting(&self) -> usize {
        self.writes.len()
    }

    /// Registers a write waiting for its entry to apply.
    pub fn add_write(&mut self, index: Index, term: Term, tx: Sender<WriteResult>) {
        self.add_write_until(index, term, tx, None);
    }

    /// [`Pending::add_write`] for a write that [`Pending::expire`] answers at `deadline`
    /// if it has not applied by then.
    pub fn add_write_until(
        &mut self,
        index: Index,
        term: Term,
        tx: Sender<WriteResult>,
        deadline: Option<Instant>,
    ) {
        self.writes.insert(index, (term, tx, deadline));
    }

    /// Answers every write and read whose deadline is past: a write with
    /// [`Error::OutcomeUnknown`], a read with [`Error::Unavailable`] (what a waiting worker
    /// answers when it gives up); returns how many. (A waiter with a thread of its own has no
    /// deadline here: its thread gives up itself.)
    pub fn expire(&mut self, now: Instant) -> usize {
        self.expire_writes(now) + self.expire_reads(now)
    }

    fn expire_writes(&mut self, now: Instant) -> usize {
        let expired: Vec<Index> = self
            .writes
            .iter()
            .filter(|(_, (_, _, deadline))| deadline.is_some_and(|d| d <= now))
            .map(|(&index, _)| index)
            .collect();
        for &index in &expired {
            if let Some((_, tx, _)) = self.writes.remove(&index) {
                let e = Error::OutcomeUnknown(format!(
                    "the write was proposed at index {index} but not seen committed in time; it \
                     may or may not apply"
                ));
                self.woken.write(tx, Err(e));
            }
        }
        expired.len()
    }

    fn expire_reads(&mut self, now: Instant) -> usize {
        let overdue = |deadline: &Option<Instant>| deadline.is_some_and(|d| d <= now);
        let expired = |woken: &mut Wakeups, tx| {
            let e = Error::Unavailable(
                "could not confirm leadership with a majority, and catch up with it, in time"
                    .into(),
            );
            woken.reads.push((tx, Err(e)));
        };
        let ids: Vec<u64> =
            self.reads.iter().filter(|(_, (_, d))| overdue(d)).map(|(&id, _)| id).collect();
        for id in &ids {
            if let Some((tx, _)) = self.reads.remove(id) {
                expired(&mut self.woken, tx);
            }
        }
        let mut count = ids.len();
        for waiting in self.reads_by_index.values_mut() {
            for (tx, _) in waiting.extract_if(.., |(_, d)| overdue(d)) {
                expired(&mut self.woken, tx);
                count += 1;
            }
        }
        self.reads_by_index.retain(|_, waiting| !waiting.is_empty());
        count
    }

    /// The waiter gave up (timeout).
    pub fn remove_write(&mut self, index: Index) {
        self.writes.remove(&index);
    }

    /// A linearizable read waits for its heartbeat round.
    pub fn add_read(&mut self, id: u64, tx: Sender<Result<Index>>) {
        self.add_read_until(id, tx, None);
    }

    /// [`Pending::add_read`] for a read that [`Pending::expire`] answers at `deadline` if it has
    /// not been confirmed and caught up with by then.
    pub fn add_read_until(
        &mut self,
        id: u64,
        tx: Sender<Result<Index>>,
        deadline: Option<Instant>,
    ) {
        self.reads.insert(id, (tx, deadline));
    }

    /// The waiter gave up.
    pub fn remove_read(&mut self, id: u64) {
        self.reads.remove(&id);
    }

    /// Read `id` ends with `e` (it could not even start: this node is not the leader; or it was
    /// aborted): its waiter learns why.
    pub fn read_refused(&mut self, id: u64, e: Error) {
        if let Some((tx, _)) = self.reads.remove(&id) {
            self.woken.reads.push((tx, Err(e)));
        }
    }

    /// The leader confirmed read `id` at `index`: answer once applied that far.
    pub fn read_confirmed(&mut self, id: u64, index: Index) {
        if let Some((tx, deadline)) = self.reads.remove(&id) {
            if self.applied >= index {
                self.woken.reads.push((tx, Ok(index)));
            } else {
                self.reads_by_index.entry(index).or_default().push((tx, deadline));
            }
        }
    }

    /// The read cannot be confirmed (leadership lost).
    pub fn read_aborted(&mut self, id: u64) {
        let e =
            Error::Unavailable("leadership changed before the read was confirmed; retry".into());
        self.read_refused(id, e);
    }

    /// The entry at `index` (of `term`) was applied, doing `applied`: wake its writer, if any.
    pub fn applied_entry(&mut self, index: Index, term: Term, applied: Applied) {
        if let Some((want_term, tx, _)) = self.writes.remove(&index) {
            let result = if want_term == term {
                Ok(applied)
            } else {
                // Another leader's entry took this slot: ours is gone for good.
                Err(Error::Unavailable(format!(
                    "the write proposed at index {index} in term {want_term} was replaced by a \
                     newer leader's entry; it was not applied"
                )))
            };
            self.woken.write(tx, result);
        }
    }

    /// The state machine has applied everything through `index`: release waiting reads.
    pub fn advance_applied(&mut self, index: Index) {
        self.applied = self.applied.max(index);
        while let Some(entry) = self.reads_by_index.first_entry() {
            if *entry.key() > self.applied {
                break;
            }
            for (tx, _) in entry.remove() {
                self.woken.reads.push((tx, Ok(index)));
            }
        }
    }

    /// Fails every waiter (shutdown): writes with `write_error`, reads with `error`. A waiting
    /// write was proposed, so it may still commit: `write_error` must not promise otherwise.
    pub fn fail_all(&mut self, write_error: Error, error: Error) {
        for (_, (_, tx, _)) in self.writes.drain() {
            self.woken.write(tx, Err(write_error.clone()));
        }
        for (_, (tx, _)) in self.reads.drain() {
            self.woken.reads.push((tx, Err(error.clone())));
        }
        for (_, txs) in std::mem::take(&mut self.reads_by_index) {
            for (tx, _) in txs {
                self.woken.reads.push((tx, Err(error.clone())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::oneshot::channel as bounded1;
    use super::*;

    fn done(index: Index, term: Term, revision: u64) -> Applied {
        let outcome = crate::kv::Outcome::Written;
        Applied { index, term, revision, outcome, replayed: false }
    }

    #[test]
    fn a_replaced_entry_fails_its_writer() {
        let mut p = Pending::default();
        let (tx, rx) = bounded1();
        p.add_write(5, 2, tx);
        p.applied_entry(5, 3, done(5, 3, 9));
        p.take_wakeups().send();
        assert!(matches!(
            rx.recv_timeout(std::time::Duration::ZERO).unwrap(),
            Err(Error::Unavailable(_))
        ));
        // The same term: the writer learns the index, term and revision it applied at.
        let (tx, rx) = bounded1();
        p.add_write(6, 3, tx);
        p.applied_entry(6, 3, done(6, 3, 10));
        assert!(rx.try_recv().is_none(), "woken under the lock");
        p.take_wakeups().send();
        assert_eq!(rx.recv_timeout(std::time::Duration::ZERO).unwrap().ok(), Some(done(6, 3, 10)));
    }

    #[test]
    fn shutdown_fails_writes_and_reads_with_their_own_errors() {
        let mut p = Pending::default();
        let (wtx, wrx) = bounded1();
        let (rtx, rrx) = bounded1();
        p.add_write(5, 2, wtx);
        p.add_read(1, rtx);
        p.fail_all(Error::OutcomeUnknown("w".into()), Error::Unavailable("r".into()));
        p.take_wakeups().send();
        assert!(matches!(
            wrx.recv_timeout(std::time::Duration::ZERO).unwrap(),
            Err(Error::OutcomeUnknown(_))
        ));
        assert!(matches!(
            rrx.recv_timeout(std::time::Duration::ZERO).unwrap(),
            Err(Error::Unavailable(_))
        ));
    }

    #[test]
    fn a_write_with_a_deadline_is_answered_when_it_passes_and_only_then() {
        let mut p = Pending::default();
        let now = Instant::now();
        let later = now + std::time::Duration::from_secs(5);
        let (tx, rx) = bounded1();
        p.add_write_until(5, 2, tx, Some(later));
        let (tx, waiting) = bounded1();
        p.add_write(6, 2, tx);
        assert_eq!(p.expire(now), 0);
        p.take_wakeups().send();
        assert!(rx.try_recv().is_none());
        assert_eq!(p.expire(later), 1, "the deadline has come");
        assert_eq!(p.writes_waiting(), 1, "the write with a thread of its own is left");
        p.take_wakeups().send();
        assert!(matches!(rx.try_recv(), Some(Err(Error::OutcomeUnknown(_)))));
        assert!(waiting.try_recv().is_none());
    }

    #[test]
    fn a_read_with_a_deadline_is_answered_when_it_passes_in_either_wait() {
        let mut p = Pending::default();
        let now = Instant::now();
        let later = now + std::time::Duration::from_secs(5);
        // One waits for its heartbeat round, one has been confirmed at an index not applied yet,
        // and one has a thread of its own (no deadline here).
        let (tx, unconfirmed) = bounded1();
        p.add_read_until(1, tx, Some(later));
        let (tx, confirmed) = bounded1();
        p.add_read_until(2, tx, Some(later));
        p.read_confirmed(2, 9);
        let (tx, waiting) = bounded1();
        p.add_read(3, tx);
        p.read_confirmed(3, 9);
        assert_eq!(p.expire(now), 0);
        p.take_wakeups().send();
        assert!(unconfirmed.try_recv().is_none() && confirmed.try_recv().is_none());
        assert_eq!(p.expire(later), 2, "the deadline has come for both");
        p.take_wakeups().send();
        assert!(matches!(unconfirmed.try_recv(), Some(Err(Error::Unavailable(_)))));
        assert!(matches!(confirmed.try_recv(), Some(Err(Error::Unavailable(_)))));
        assert!(waiting.try_recv().is_none(), "the read with a thread of its own is left");
        p.advance_applied(9);
        p.take_wakeups().send();
        assert_eq!(waiting.try_recv().map(|r| r.ok()), Some(Some(9)));
    }

    #[test]
    fn a_refused_read_learns_why() {
        let mut p = Pending::default();
        let (tx, rx) = bounded1();
        p.add_read_until(4, tx, Some(Instant::now()));
        p.read_refused(4, Error::NotLeader { leader: None });
        p.take_wakeups().send();
        assert!(matches!(rx.try_recv(), Some(Err(Error::NotLeader { .. }))));
        assert_eq!(p.expire(Instant::now()), 0, "and is no longer waiting");
    }

    #[test]
    fn a_read_waits_for_the_state_machine() {
        let mut p = Pending::default();
        let (tx, rx) = bounded1();
        p.add_read(1, tx);
        p.read_confirmed(1, 7);
        p.take_wakeups().send();
        assert!(rx.try_recv().is_none(), "must wait until index 7 is applied");
        p.advance_applied(6);
        p.take_wakeups().send();
        assert!(rx.try_recv().is_none());
        p.advance_applied(7);
        let wakeups = p.take_wakeups();
        assert!(rx.try_recv().is_none(), "woken under the lock");
        assert!(!wakeups.is_empty());
        wakeups.send();
        assert!(rx.try_recv().unwrap().is_ok());
    }
}
