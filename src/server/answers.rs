//! Answer threads (`http-answer-N`): how a put or a get is answered without an HTTP worker
//! waiting for it.
//!
//! A worker that proposes a write and then waits for it costs the node two thread wake-ups per
//! put: the worker parks until the apply thread wakes it with the outcome, and then it writes
//! the response. Under 64 put connections the apply thread applies a batch of ~20 entries at a
//! time and wakes ~20 parked workers one by one (one futex call and one context switch each).
//! Here the worker hands the request itself over instead: it proposes the put with a
//! [`oneshot::callback`] holding the request and goes back to the listener at once. When the
//! entry applies, the callback puts the request and its outcome on a queue, and an answer thread
//! writes the response; one wake-up serves every answer in the queue, so a batch of applied
//! entries costs one or two wake-ups, not twenty. (Nothing about durability or consistency
//! changes: the outcome is the same [`super::pending::WriteResult`] a waiting worker gets, sent
//! at the same moment, once the entry is committed, durable on a majority and applied.)
//!
//! **Gets** wait the same way: a linearizable read waits for its ReadIndex round (a majority's
//! answer to a heartbeat sent after the read arrived) and then for the state machine to apply
//! through the read index. A handed-over get registers the same read with a callback
//! ([`Node::read_then`](super::node::Node::read_then)); once the barrier passes, an answer thread
//! reads the key from the state machine, as the worker would have right after its barrier. The
//! answer is the same, with the same evidence, read at the same point in time.
//!
//! Which requests, on the leader: `POST /kv/put` without an `Idempotency-Key` (those check the
//! idempotency table first), and `GET /kv/get/{key}` without a query string (a query asks for
//! another consistency, `stale` or `lease`, which does not wait), neither coming from a follower
//! (those carry a MAC to check). Everything else is answered by its worker, as before.
//! `--answer-threads 0` turns this off.
//!
//! **Why at most one such request per connection at a time.** tiny_http writes the responses of
//! one connection in order: the writer of a request waits until the previous request's response
//! is written. A client that pipelines (sends request 2 before reading response 1) could have
//! both handed here; if response 2 were queued before response 1 on the same answer thread, the
//! thread would wait forever for a response queued behind it. So a connection with a request
//! already here has its next request answered by its worker (which waits on the apply thread or
//! the read barrier, never on an answer thread), and an answer thread can only ever wait for
//! workers. The place is given back just *before* the answer is written, not after: a request of
//! the same connection handed over from then on can only wait for that write, which waits for
//! nothing here; and a client that sends its next request as soon as it reads an answer finds
//! the place free (given back after the write, it often was not yet).
//!
//! **A client that does not read** its responses could block an answer thread in `write` once
//! its socket buffer is full (tiny_http sets no write timeout; a worker is blocked the same way
//! on the old path). The answer threads share one queue, so the others go on. While no answer
//! thread is free (each busy on one answer for over [`STUCK_AFTER`]), new puts and gets are
//! answered by their workers, as before, and the ticker starts one more answer thread for what is queued
//! (at most [`MAX_THREADS`] in all; each stuck one holds one connection that stopped reading).
//!
//! **Time-outs.** A waiting worker gives up after `--request-timeout`; a handed-over put or get
//! has no thread of its own, so its deadline is kept with it in [`super::pending::Pending`], and
//! the
//! ticker expires the overdue ones ([`super::pending::Pending::expire`]) every
//! [`super::answer_queue::EXPIRE_EVERY`], answering them just as a worker would (a put 504
//! `outcome_unknown`, a get 503 `unavailable`; [`tick`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::RecvTimeoutError;
use tiny_http::{Method, Request};

use super::answer_queue::{Job, MAX_THREADS, POLL, STUCK_AFTER, What};

use super::kv_api;
use super::node::Node;
use super::oneshot;
use super::wire::{
    FORWARDED, IDEMPOTENCY_KEY, ReadKind, Reply, decode_key, forward, read_leader, respond,
};
use crate::error::Error;

/// Hands `request` over if it is a put or a get this module answers (see the module docs); gives
/// it back otherwise, for its worker to route.
pub(super) fn hand_over(node: &Node, mut request: Request, started: Instant) -> Option<Request> {
    let answers = &node.answers;
    if answers.threads() == 0 || !node.is_leading() {
        return Some(request);
    }
    // `None` for a put, the raw key for a get. A get with a query string asks for another
    // consistency (or a bad one): its worker reads it.
    let get = match (request.method(), request.url()) {
        (Method::Post, "/kv/put") => None,
        (Method::Get, url) if !url.contains('?') => match url.strip_prefix("/kv/get/") {
            Some(raw) => Some(raw.to_string()),
            None => return Some(request),
        },
        _ => return Some(request),
    };
    let from_a_peer_or_retried = request
        .headers()
        .iter()
        .any(|h| h.field.equiv(IDEMPOTENCY_KEY) || h.field.equiv(FORWARDED));
    let addr = match request.remote_addr() {
        Some(&addr) if !from_a_peer_or_retried => addr,
        _ => return Some(request),
    };
    if !answers.claim(addr) {
        return Some(request);
    }
    let refuse =
        |request, e| release_and_respond(node, request, Some(addr), Reply::error(&e), started);
    let tx = answers.tx.clone();
    let deadline = started + node.config.request_timeout;
    match get {
        None => {
            let (command, key, body) = match kv_api::put_command(node, &mut request) {
                Ok(parsed) => parsed,
                Err(e) => {
                    refuse(request, e);
                    return None;
                }
            };
            let answer = oneshot::callback(move |result| {
                // Fails only when the answer threads are gone (the node stopped): the request is
                // then dropped, which tiny_http answers with a 500.
                let _ = tx.send(Job { request, started, what: What::Put { key, body, result } });
            });
            node.write_then(command, answer, deadline);
        }
        Some(raw) => {
            let key = match decode_key(&raw, node) {
                Ok(key) => key.into_owned(),
                Err(e) => {
                    refuse(request, e);
                    return None;
                }
            };
            let answer = oneshot::callback(move |result| {
                let _ = tx.send(Job { request, started, what: What::Get { key, result } });
            });
            node.read_then(answer, deadline);
        }
    }
    None
}

/// Starts an answer thread, if fewer than [`MAX_THREADS`] run.
pub(super) fn start(node: &Arc<Node>) -> crate::error::Result<Option<JoinHandle<()>>> {
    let me = node.answers.running.fetch_add(1, Ordering::AcqRel);
    if me >= MAX_THREADS {
        node.answers.running.fetch_sub(1, Ordering::AcqRel);
        return Ok(None);
    }
    let n = node.clone();
    let started = super::node::spawn(format!("http-answer-{me}"), move || run(&n, me));
    if started.is_err() {
        node.answers.running.fetch_sub(1, Ordering::AcqRel);
    }
    started.map(Some)
}

/// The ticker's part, every [`super::answer_queue::EXPIRE_EVERY`]: answers the overdue writes,
/// and starts another answer thread when answers are queued and none is free.
pub(super) fn tick(node: &Arc<Node>) {
    let answers = &node.answers;
    if answers.threads() == 0 {
        return;
    }
    node.with_pending(|p| p.expire(Instant::now()));
    if !answers.rx.is_empty() && !answers.one_is_free() {
        log::warn!(
            "every answer thread has been writing one answer for over {STUCK_AFTER:?} (a client \
             that does not read?): starting another"
        );
        // Detached: it ends with the node, like the others.
        if let Err(e) = start(node) {
            log::warn!("cannot start an answer thread: {e}");
        }
    }
}

/// An answer thread: writes the responses of handed-over puts.
fn run(node: &Arc<Node>, me: usize) {
    let answers = &node.answers;
    // `start` hands out slots below MAX_THREADS only.
    let Some(busy) = answers.busy.get(me) else { return };
    while !node.is_shutdown() {
        match answers.rx.recv_timeout(POLL) {
            Ok(job) => {
                busy.store(answers.now_ms(), Ordering::Relaxed);
                answer(node, job);
                busy.store(0, Ordering::Relaxed);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
    // Stopping: the waiting writes are failed right after the flag is set (`Server::stop`);
    // their answers are still written, until the queue has been empty for a while.
    while let Ok(job) = answers.rx.recv_timeout(POLL) {
        answer(node, job);
    }
}

fn answer(node: &Arc<Node>, job: Job) {
    let Job { request, started, what } = job;
    let addr = request.remote_addr().copied();
    let stopped = || {
        Error::OutcomeUnknown(
            "the node stopped before the write was seen committed; it may or may not apply".into(),
        )
    };
    let reply = match what {
        What::Put { key, body, result } => {
            node.metrics.events.puts_handed_over.inc();
            let result = result.unwrap_or_else(|| Err(stopped()));
            if result.is_err() {
                node.metrics.events.proposals_failed.inc();
            }
            match result {
                Ok(applied) => kv_api::answer(node, &applied, Some(&key)),
                // The node stepped down between the check and the proposal; nothing was
                // proposed, so the leader can take it, as a worker would forward it.
                Err(Error::NotLeader { leader: Some(leader) }) => {
                    return forward_elsewhere(node, request, started, addr, leader.addr, body);
                }
                Err(e) => Reply::error(&e),
            }
        }
        What::Get { key, result } => {
            node.metrics.events.gets_handed_over.inc();
            let result = result.unwrap_or_else(|| {
                Err(Error::Unavailable("the node stopped before the read was confirmed".into()))
            });
            // As a worker's read barrier that fails: the leader takes it, if one is known.
            match result.map_err(|e| read_leader(node, e)) {
                Ok(_) => {
                    node.metrics.events.read(ReadKind::Linearizable.name());
                    kv_api::get_reply(node, &key, ReadKind::Linearizable)
                }
                Err(Ok(leader)) => {
                    return forward_elsewhere(node, request, started, addr, leader, vec![]);
                }
                Err(Err(e)) => Reply::error(&e),
            }
        }
    };
    release_and_respond(node, request, addr, reply, started);
}

/// Gives the connection's place back, then writes the answer: in this order (see the module
/// docs, "Why at most one such request per connection at a time").
fn release_and_respond(
    node: &Node,
    request: Request,
    addr: Option<std::net::SocketAddr>,
    reply: Reply,
    started: Instant,
) {
    node.answers.release(addr);
    respond(node, request, reply, started);
}

/// Forwards `request` to the leader at `leader` and answers it with the leader's answer, on a
/// thread of its own so that this one does not wait on the leader (rare: a leader change).
fn forward_elsewhere(
    node: &Arc<Node>,
    request: Request,
    started: Instant,
    addr: Option<std::net::SocketAddr>,
    leader: String,
    body: Vec<u8>,
) {
    let n = node.clone();
    let forwarding = std::thread::Builder::new().name("http-forward".into()).spawn(move || {
        let reply = forward(&request, &leader, &body, &n).unwrap_or_else(|e| Reply::error(&e));
        release_and_respond(&n, request, addr, reply, started);
    });
    if let Err(e) = forwarding {
        log::warn!("cannot start a thread to forward a request: {e}");
        node.answers.release(addr);
    }
}
