//! The node's background threads, one function each: `ticker` (logical time), `apply` (committed
//! entries into the state machine) and `sync` (fsync, then what waited for it). The peer
//! replication threads are in [`super::peer`], the HTTP workers in [`super::http`].
//!
//! Each loop waits on its channel with a timeout, so it notices shutdown within ~100 ms, and
//! touches the core only through `Node::with_raft` (the lock rule).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::node::{ApplyMsg, Node, SyncJob};
use super::snapshot;
use crate::raft::{Entry, Output};

/// How long a loop waits on its channel before checking for shutdown.
const POLL: Duration = Duration::from_millis(100);

/// `ticker`: advances the core's logical clock every `config.tick`.
pub fn ticker(node: &Arc<Node>) {
    let tick = node.config.tick;
    let mut next = Instant::now() + tick;
    let mut expired_at = Instant::now();
    while !node.is_shutdown() {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        next += tick;
        // If we fell far behind (a stalled machine), do not replay a burst of ticks.
        if Instant::now() > next + tick * 10 {
            next = Instant::now() + tick;
        }
        if node.faults.paused() {
            continue; // the fault lab's pause: logical time stands still
        }
        // The core counts leader changes (on any input); stamped here, within a tick.
        let ticked = node.with_raft(|raft| {
            let out = raft.tick()?;
            Ok((raft.counters().leader_changes, out))
        });
        match ticked {
            Ok(changes) => node.metrics.saw_leader_changes(changes),
            Err(e) => node.fatal(&e),
        }
        if expired_at.elapsed() >= super::answer_queue::EXPIRE_EVERY {
            expired_at = Instant::now();
            super::answers::tick(node);
        }
    }
}

/// `apply`: applies committed entries and installs snapshots, in log order, then wakes the
/// clients waiting for them; takes a snapshot when enough was applied.
pub fn apply(node: &Arc<Node>, rx: &Receiver<ApplyMsg>) {
    while !node.is_shutdown() {
        let Ok(first) = rx.recv_timeout(POLL) else { continue };
        // Take whatever else is queued, so one state-machine lock covers a burst.
        let mut msgs = vec![first];
        while let Ok(more) = rx.try_recv() {
            msgs.push(more);
        }
        for msg in msgs {
            match msg {
                ApplyMsg::Entries(batch) => apply_entries(node, &batch),
                ApplyMsg::Restore(meta) => snapshot::restore(node, meta),
            }
        }
        snapshot::maybe_take(node);
    }
}

fn apply_entries(node: &Node, batch: &[Entry]) {
    let mut results = Vec::with_capacity(batch.len());
    let applied = {
        let mut kv = node.kv.write();
        for entry in batch {
            match kv.apply(entry) {
                Ok(result) => results.push(result),
                Err(e) => node.fatal(&e),
            }
        }
        // Fold in the writes made during a finished snapshot (a no-op otherwise).
        kv.try_merge();
        kv.applied_index()
    };
    node.entries_applied.fetch_add(batch.len() as u64, Ordering::Relaxed);
    node.metrics.events.applied.inc_by(batch.len() as u64);
    node.with_pending(|pending| {
        for (entry, result) in batch.iter().zip(results) {
            pending.applied_entry(entry.index, entry.term, result);
        }
        pending.advance_applied(applied);
    });
}

/// `sync`: makes storage durable for every queued job with one fsync (group commit), tells the
/// core (`persisted`), then sends the messages that waited for the disk.
pub fn sync(node: &Node, rx: &Receiver<SyncJob>) {
    while !node.is_shutdown() {
        let Ok(job) = rx.recv_timeout(POLL) else { continue };
        let mut jobs = vec![job];
        while let Ok(more) = rx.try_recv() {
            jobs.push(more);
        }
        let seq = jobs.iter().filter_map(|j| j.output.sync.map(|s| s.write_seq)).max().unwrap_or(0);
        if let Err(e) = node.syncer.sync_through(seq) {
            node.fatal(&e);
        }
        let result = node.with_raft(|raft| {
            let mut out = Output::default();
            for job in &jobs {
                if let Some(point) = job.output.sync {
                    out.extend(raft.persisted(point.index, point.term)?);
                }
            }
            Ok(((), out))
        });
        if let Err(e) = result {
            node.fatal(&e);
        }
        // Messages that waited for the disk (a candidate's RequestVotes).
        for job in jobs {
            for env in job.output.after_sync {
                let _ = node.send_to_peer(env);
            }
        }
    }
}
