//! The proposal inbox: how many clients writing at the same moment become one proposal.
//!
//! Under load the leader's HTTP workers all want the Raft lock at once, each to propose one
//! command: a profile of 64 put connections found a fifth of their CPU in lock contention
//! (spinning, yielding, parking), and each proposal made its own WAL `write`. So a worker does
//! not propose itself: it puts its command in this inbox and then, *if nobody else is doing
//! it*, becomes the combiner, which takes everything in the inbox, proposes it as one batch
//! ([`crate::raft::RaftNode::propose_batch`]: one lock, one WAL record, one round of
//! AppendEntries), and repeats until the inbox is empty. Workers that find a combiner at work
//! just wait for their answer. (This is *flat combining*; etcd gets the same effect from the
//! single goroutine that drains its proposal channel.)
//!
//! Nobody's command is left behind: the combiner lets go of the role *before* its last look at
//! the inbox, so a command pushed after that look is pushed after the role was free, and its
//! pusher takes the role itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

use super::oneshot;
use super::pending::WriteResult;

/// One client's command, waiting to be proposed.
pub struct Proposal {
    /// The encoded command.
    pub command: Vec<u8>,
    /// Where its answer goes (through [`super::pending::Pending`] once it has an index).
    pub tx: oneshot::Sender<WriteResult>,
    /// The index it was given (a log index), once proposed (0 before): the waiter needs it to
    /// give up.
    pub placed: Arc<AtomicU64>,
    /// When the write gives up, for a write with no waiting thread to do it
    /// ([`super::pending::Pending::expire`]).
    pub deadline: Option<std::time::Instant>,
}

impl Proposal {
    /// A proposal of `command`, answering on `tx`; the second half tells the waiter its index.
    pub fn new(command: Vec<u8>, tx: oneshot::Sender<WriteResult>) -> (Proposal, Arc<AtomicU64>) {
        let placed = Arc::new(AtomicU64::new(0));
        (Proposal { command, tx, placed: placed.clone(), deadline: None }, placed)
    }
}

/// The inbox and the combiner's role.
#[derive(Default)]
pub struct Inbox {
    queue: Mutex<Vec<Proposal>>,
    combining: AtomicBool,
}

impl Inbox {
    /// Queues a proposal.
    pub fn push(&self, proposal: Proposal) {
        self.queue.lock().push(proposal);
    }

    /// Runs `propose` on everything queued, in arrival order, one batch at a time, unless another
    /// caller is already doing it (then it returns at once: that caller will see what we pushed).
    pub fn combine(&self, propose: impl FnMut(Vec<Proposal>)) {
        self.combine_with(propose, || {});
    }

    /// [`Inbox::combine`], calling `letting_go` between the combiner's last (empty) take and its
    /// letting go of the role: where a test puts the push that must not be left behind.
    fn combine_with(&self, mut propose: impl FnMut(Vec<Proposal>), mut letting_go: impl FnMut()) {
        loop {
            if self.combining.swap(true, Ordering::SeqCst) {
                return;
            }
            loop {
                let batch = std::mem::take(&mut *self.queue.lock());
                if batch.is_empty() {
                    break;
                }
                propose(batch);
            }
            letting_go();
            self.combining.store(false, Ordering::SeqCst);
            // A proposal pushed after our last take but before we let go: ours to take, unless
            // its pusher (or someone after it) already took the role.
            if self.queue.lock().is_empty() {
                return;
            }
        }
    }

    /// Proposals waiting for a combiner.
    pub fn len(&self) -> usize {
        self.queue.lock().len()
    }

    /// Nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn proposal(n: u8) -> Proposal {
        let (tx, _rx) = oneshot::channel();
        Proposal::new(vec![n], tx).0
    }

    #[test]
    fn one_caller_proposes_what_it_pushed() {
        let inbox = Inbox::default();
        inbox.push(proposal(1));
        inbox.push(proposal(2));
        let mut seen = Vec::new();
        inbox.combine(|batch| seen.extend(batch.into_iter().map(|p| p.command[0])));
        assert_eq!(seen, vec![1, 2]);
        assert!(inbox.is_empty());
    }

    #[test]
    fn a_caller_that_finds_a_combiner_leaves_its_proposal_to_it() {
        let inbox = Inbox::default();
        let mut outer = 0;
        inbox.push(proposal(1));
        inbox.combine(|batch| {
            outer += batch.len();
            if batch[0].command[0] == 1 {
                // Another worker arrives while we combine: it must not propose, and we must.
                inbox.push(proposal(2));
                let mut inner = 0;
                inbox.combine(|b| inner += b.len());
                assert_eq!(inner, 0, "a second combiner ran at the same time");
            }
        });
        assert_eq!(outer, 2, "the late proposal was left behind");
        assert!(inbox.is_empty());
    }

    /// The race the last look is for: a worker pushes just as the combiner finds the inbox
    /// empty, sees the role taken and leaves; the combiner must still propose its command.
    /// (Without the last look this proposal waits for the next writer, or forever.)
    #[test]
    fn a_proposal_pushed_as_the_combiner_lets_go_is_not_left_behind() {
        let inbox = Inbox::default();
        inbox.push(proposal(1));
        let mut proposed = Vec::new();
        let mut raced = false;
        inbox.combine_with(
            |batch| proposed.extend(batch.into_iter().map(|p| p.command[0])),
            || {
                if !raced {
                    raced = true;
                    inbox.push(proposal(2));
                    inbox.combine(|_| panic!("a second combiner ran at the same time"));
                }
            },
        );
        assert_eq!(proposed, vec![1, 2], "the late proposal was left behind");
        assert!(inbox.is_empty());
    }

    /// Many threads pushing and combining at once: every proposal is proposed exactly once, and
    /// never by two combiners at the same time.
    #[test]
    fn under_contention_every_proposal_is_proposed_exactly_once() {
        let inbox = Arc::new(Inbox::default());
        let proposed = Arc::new(AtomicUsize::new(0));
        let active = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (inbox, proposed, active) = (inbox.clone(), proposed.clone(), active.clone());
                std::thread::spawn(move || {
                    for n in 0..2_000u32 {
                        inbox.push(proposal(n as u8));
                        inbox.combine(|batch| {
                            assert_eq!(active.fetch_add(1, Ordering::SeqCst), 0, "two combiners");
                            proposed.fetch_add(batch.len(), Ordering::SeqCst);
                            active.fetch_sub(1, Ordering::SeqCst);
                        });
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(inbox.is_empty(), "{} proposals left behind", inbox.len());
        assert_eq!(proposed.load(Ordering::SeqCst), 8 * 2_000);
    }
}
