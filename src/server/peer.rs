//! Talking to peers, both ways: the replication threads that send, and the handler that answers.
//!
//! **Out.** Each peer gets one replication thread ([`replicate`]): a dumb pipe that takes envelopes
//! from its bounded channel, makes the call through a [`Transport`], and feeds the answer back into
//! the node. The core decides what to send; a dead or slow peer only ever blocks its own thread.
//!
//! **In.** The node is the [`RpcHandler`] the HTTP routes (or a [`super::transport::LocalTransport`])
//! hand a peer's request to: it steps the request, and answers once what the
//! answer promises is on disk.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::events::Dir;
use super::faults::Outgoing;
use super::node::Node;
use super::snapshot;
use super::transport::{RpcHandler, Transport};
use crate::api::SnapshotChunk;
use crate::error::{Error, Result};
use crate::raft::{Envelope, Message, NodeId, SnapshotMeta};

/// The `peers` thread: starts the replication threads of each member that joins the
/// configuration, and waits for them all at shutdown.
pub fn spawn_new_peers(
    node: &Arc<Node>,
    rx: &Receiver<(NodeId, Receiver<Envelope>)>,
    transport: &Arc<dyn Transport>,
) {
    let mut threads = Vec::new();
    while !node.is_shutdown() {
        let Ok((id, queue)) = rx.recv_timeout(Duration::from_millis(100)) else { continue };
        if let Err(e) = spawn_replicators(node, &id, &queue, transport, &mut threads) {
            log::error!("cannot start a replication thread: {e}");
        }
    }
    for t in threads {
        let _ = t.join();
    }
}

/// Starts the replication threads of member `id`: one per slot of the pipelining window
/// (`max_inflight`), all taking from the member's one queue. With a window of 1 (the default)
/// that is one thread, and requests go one at a time; with more, a request may leave while
/// earlier ones wait for their answers (the core bounds how many are in flight).
pub fn spawn_replicators(
    node: &Arc<Node>,
    id: &NodeId,
    queue: &Receiver<Envelope>,
    transport: &Arc<dyn Transport>,
    threads: &mut Vec<JoinHandle<()>>,
) -> Result<()> {
    // At least 1: the core refused any other window when the node was built.
    for slot in 0..node.config.max_inflight {
        let (n, t, id, queue) = (node.clone(), transport.clone(), id.clone(), queue.clone());
        let name = if slot == 0 { format!("peer-{id}") } else { format!("peer-{id}-{slot}") };
        threads.push(super::node::spawn(name, move || replicate(&n, &id, &queue, &*t))?);
    }
    Ok(())
}

/// A replication thread for member `id` (`peer-{id}`, `peer-{id}-1`, ...): sends what the core
/// queued for it, one call at a time, to its address in the configuration in force, and steps
/// the answers. Runs until shutdown, or until `id` leaves the configuration (its queue is
/// dropped).
pub fn replicate(node: &Node, id: &NodeId, rx: &Receiver<Envelope>, transport: &dyn Transport) {
    while !node.is_shutdown() {
        let env = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(env) => env,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => {
                log::info!("{id} left the configuration: its replication thread ends");
                return;
            }
        };
        let Some(addr) = node.addr_of(id) else { continue };
        let addr = addr.as_str();
        node.rpcs_sent.fetch_add(1, Ordering::Relaxed);
        let fault = node.faults.outgoing(id);
        if let Outgoing::Delay(d) = fault {
            std::thread::sleep(d);
        }
        let sent_at = Instant::now();
        let result = match &env.message {
            _ if fault == Outgoing::Fail => {
                Err(Error::Unavailable(format!("fault lab: the link to {id} is cut")))
            }
            Message::InstallSnapshot(m) => {
                log::debug!("peer thread for {id} takes InstallSnapshot {}", m.last_included_index);
                let meta =
                    SnapshotMeta { index: m.last_included_index, term: m.last_included_term };
                snapshot::send(node, addr, &env, meta, transport)
            }
            _ => transport.call(addr, &env),
        };
        let append = matches!(env.message, Message::AppendEntries(_));
        let heartbeat = matches!(&env.message, Message::AppendEntries(a) if a.entries.is_empty());
        node.feed.message(Dir::Send, &env, false, result.is_ok());
        if let Ok(Some(reply)) = &result {
            node.feed.message(Dir::Recv, reply, heartbeat, true);
        }
        match result {
            Ok(None) => log::debug!("{id} did not answer {:?}", env.message),
            Ok(Some(reply)) => {
                if reply.from != *id || reply.to != node.config.id {
                    log::warn!("{addr} answered as {} to {}; ignored", reply.from, reply.to);
                    continue;
                }
                match node.with_raft(|raft| Ok(((), raft.step(reply)?))) {
                    // The round trip ends once the answer is stepped (a fair view of what
                    // replication to this peer costs, lock wait included).
                    Ok(()) if append => {
                        node.metrics.events.append_round_trip(id, sent_at.elapsed())
                    }
                    Ok(()) => {}
                    Err(Error::BadRequest(m)) => {
                        log::warn!("ignoring a bad answer from {id}: {m}")
                    }
                    Err(e) => node.fatal(&e),
                }
            }
            Err(e) => {
                log::debug!("RPC to {id} at {addr}: {e}");
                // Do not spin on a dead peer: what is queued is stale by now. Drop it *before*
                // telling the core, so whatever the core sends after hearing of the failure
                // (a fresh probe, a snapshot it now marks as in flight) is not dropped too.
                while rx.try_recv().is_ok() {}
                node.raft.lock().report_unreachable(id);
                std::thread::sleep(node.config.heartbeat.min(Duration::from_millis(50)));
            }
        }
    }
}

impl RpcHandler for Node {
    /// A peer's request: step it, then answer with the response once what it promises is durable.
    /// `None` when the core chose not to answer (a vote request ignored while a leader is alive).
    fn handle_rpc(&self, envelope: Envelope) -> Result<Option<Envelope>> {
        if envelope.to != self.config.id {
            return Err(Error::BadRequest(format!(
                "message for {:?} sent to {:?}",
                envelope.to, self.config.id
            )));
        }
        // Not checked against the configuration (thesis §4.1: a leader may already count us
        // before we know it; a joining node has no configuration yet). Strangers are refused
        // before this, by the cluster id and the peer secret.
        if envelope.message.is_response() {
            return Err(Error::BadRequest("expected a request, got a response".into()));
        }
        self.faults.check_incoming(&envelope.from)?;
        self.rpcs_received.fetch_add(1, Ordering::Relaxed);
        let heartbeat =
            matches!(&envelope.message, Message::AppendEntries(a) if a.entries.is_empty());
        self.feed.message(Dir::Recv, &envelope, false, true);
        if let Message::InstallSnapshot(m) = &envelope.message {
            // The snapshot's bytes came in chunks; they must be complete and intact before the
            // core may act on them.
            let meta = SnapshotMeta { index: m.last_included_index, term: m.last_included_term };
            snapshot::accept_file(self, meta)?;
        }
        let from = envelope.from.clone();
        let (reply, rest, wakeups) = {
            let mut raft = self.raft.lock();
            if self.config.lease_reads {
                raft.set_clock(self.clock_ms());
            }
            let mut out = match raft.step(envelope) {
                Ok(out) => out,
                Err(e @ Error::BadRequest(_)) => return Err(e),
                Err(e) => self.fatal(&e),
            };
            let is_reply = |m: &Envelope| m.to == from && m.message.is_response();
            let reply = match out.after_sync.iter().position(is_reply) {
                Some(p) => Some(out.after_sync.remove(p)),
                None => out.messages.iter().position(is_reply).map(|p| out.messages.remove(p)),
            };
            let (rest, wakeups) = self.route(&mut raft, out);
            (reply, rest, wakeups)
        };
        let sync = rest.sync;
        self.queue_sync(rest);
        wakeups.send();
        // The reply may promise durable state (a vote, stored entries): wait for the disk.
        // Concurrent handlers share fsyncs.
        if let Some(point) = sync {
            self.syncer.sync_through(point.write_seq).unwrap_or_else(|e| self.fatal(&e));
        }
        if let Some(r) = &reply {
            self.feed.message(Dir::Send, r, heartbeat, true);
        }
        Ok(reply)
    }

    fn handle_snapshot_chunk(&self, chunk: &SnapshotChunk) -> Result<u64> {
        self.faults.check_incoming(chunk.from)?;
        snapshot::receive_chunk(self, chunk)
    }
}
