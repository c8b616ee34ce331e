//! The answer threads' queue and bookkeeping, kept by the node ([`super::answers`] runs them).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, unbounded};
use parking_lot::Mutex;
use tiny_http::Request;

use super::pending::WriteResult;
use crate::error::Result;
use crate::raft::Index;

/// An answer thread busy on one answer this long is taken to be stuck (on a client that does not
/// read): new puts go to their workers while every answer thread is.
pub const STUCK_AFTER: Duration = Duration::from_secs(1);

/// How often overdue handed-over writes are answered (by the ticker, [`super::answers::tick`]).
pub const EXPIRE_EVERY: Duration = Duration::from_millis(100);

/// How long an answer thread waits on the queue before it checks for shutdown.
pub const POLL: Duration = Duration::from_millis(100);

/// The most answer threads a node runs, the ones started for stuck ones included.
pub const MAX_THREADS: usize = 64;

/// A handed-over request whose outcome is known: what its answer thread needs.
pub(super) struct Job {
    pub(super) request: Request,
    pub(super) started: Instant,
    pub(super) what: What,
}

/// What was handed over, and its outcome (`None`: the answer was dropped unsent, the node is
/// stopping).
pub(super) enum What {
    /// A put of `key`.
    Put {
        key: String,
        /// The body, to forward it if the node turned out not to be the leader.
        body: Vec<u8>,
        result: Option<WriteResult>,
    },
    /// A linearizable get of `key`; the result is its read barrier's.
    Get { key: String, result: Option<Result<Index>> },
}

/// The answer threads' queue and bookkeeping (one per node).
pub struct Answers {
    pub(super) tx: Sender<Job>,
    pub(super) rx: Receiver<Job>,
    /// Connections (remote addresses) with a request handed over and not answered yet.
    connections: Mutex<HashSet<SocketAddr>>,
    /// Per answer thread: when it took its current job (ms since `epoch`, +1), 0 while idle
    /// ([`MAX_THREADS`] slots; the first `running` are in use).
    pub(super) busy: Vec<AtomicU64>,
    /// Answer threads started.
    pub(super) running: AtomicUsize,
    /// Answer threads to start with (`--answer-threads`).
    configured: usize,
    epoch: Instant,
}

impl Answers {
    /// The queue for `threads` answer threads (0: none, every request is answered by its worker).
    pub fn new(threads: usize) -> Answers {
        let (tx, rx) = unbounded();
        Answers {
            tx,
            rx,
            connections: Mutex::new(HashSet::new()),
            busy: (0..MAX_THREADS).map(|_| AtomicU64::new(0)).collect(),
            running: AtomicUsize::new(0),
            configured: threads.min(MAX_THREADS),
            epoch: Instant::now(),
        }
    }

    /// How many answer threads a node starts with.
    pub fn threads(&self) -> usize {
        self.configured
    }

    /// How many answer threads run now (more than [`Answers::threads`] once some were stuck).
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Acquire).min(MAX_THREADS)
    }

    pub(super) fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    /// Some answer thread is idle, or has been on its current answer for less than
    /// [`STUCK_AFTER`].
    pub(super) fn one_is_free(&self) -> bool {
        let now = self.now_ms();
        let stuck = STUCK_AFTER.as_millis() as u64;
        self.busy[..self.running()].iter().any(|b| {
            let since = b.load(Ordering::Relaxed);
            since == 0 || now.saturating_sub(since) < stuck
        })
    }

    /// Reserves `addr`'s one place here; false if it already has a request here (or no answer
    /// thread is free).
    pub(super) fn claim(&self, addr: SocketAddr) -> bool {
        self.one_is_free() && self.connections.lock().insert(addr)
    }

    pub(super) fn release(&self, addr: Option<SocketAddr>) {
        if let Some(addr) = addr {
            self.connections.lock().remove(&addr);
        }
    }
}
