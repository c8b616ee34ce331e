//! `GET /debug/events`: what the node does, as it happens, as Server-Sent Events — the messages
//! it sends and receives, its role, term and vote, its commits, snapshots, configurations and
//! faults. The dashboard draws the messages travelling between the nodes and keeps a timeline of
//! the rest.
//!
//! Costs: with no viewer connected, every publishing point costs one atomic load
//! ([`EventFeed::active`]) and nothing else. With viewers, an event is sampled (heartbeats and
//! their answers at most [`HEARTBEAT_GAP`] apart per link, direction and kind; other messages at
//! most [`MESSAGES_PER_SECOND`]; commits at most [`COMMITS_PER_SECOND`]), formatted once, and
//! offered to each viewer's bounded queue without waiting: a slow viewer misses events, it never
//! slows the node. Each viewer has a thread of its own that owns the connection
//! (`tiny_http::Request::into_writer`), so no HTTP worker is held; at most [`MAX_VIEWERS`] at
//! once, the next is refused with 429.
//!
//! | event | data |
//! |---|---|
//! | `hello` | `{id, role, term, leader, commitIndex, atMs}` — first, on connecting |
//! | `message` | `{dir: "send"/"recv", from, to, type, term, entries, heartbeat, ok, success?, skipped, atMs}` |
//! | `role` | `{role: "follower"/"pre-candidate"/"candidate"/"leader", term, leader, atMs}` |
//! | `vote` | `{term, votedFor, atMs}` |
//! | `commit` | `{commitIndex, term, atMs}` |
//! | `snapshot` | `{kind: "taken"/"sent"/"received"/"installed", index, peer?, atMs}` |
//! | `config` | `{index, voters, learners, atMs}` |
//! | `fault` | `{faults, atMs}` |
//!
//! A `: ping` comment every [`PING_EVERY`] keeps proxies from closing an idle stream.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::raft::{Envelope, Index, Message, NodeId, RaftNode, Role, Term};

/// Most viewers connected at once; the next gets 429.
pub const MAX_VIEWERS: usize = 16;
/// Heartbeats (empty AppendEntries) and their answers: at most one per this, per link, direction
/// and kind.
pub const HEARTBEAT_GAP: Duration = Duration::from_millis(500);
/// Other messages: at most this many per second, per node.
pub const MESSAGES_PER_SECOND: u32 = 50;
/// Commit events: at most this many per second.
pub const COMMITS_PER_SECOND: u32 = 10;
/// A comment line this often keeps an idle stream open.
pub const PING_EVERY: Duration = Duration::from_secs(15);
/// Events waiting for one viewer's thread; beyond, that viewer misses them.
const QUEUE: usize = 512;

/// The direction of a message, seen from this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// This node sent it.
    Send,
    /// This node received it.
    Recv,
}

impl Dir {
    fn name(self) -> &'static str {
        match self {
            Dir::Send => "send",
            Dir::Recv => "recv",
        }
    }
}

/// The node's event feed.
#[derive(Default)]
pub struct EventFeed {
    /// Viewers connected: the one atomic load when there are none.
    viewers: AtomicUsize,
    /// Set when the node stops: viewer threads end.
    closed: AtomicBool,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    subscribers: Vec<Sender<Arc<str>>>,
    sampler: Sampler,
    /// What `observe` last published.
    seen: Seen,
}

#[derive(Default, PartialEq, Eq)]
struct Seen {
    role: &'static str,
    term: Term,
    leader: Option<NodeId>,
    voted_for: Option<NodeId>,
    commit: Index,
    config_index: Index,
}

/// Decides which messages and commits are published.
#[derive(Default)]
struct Sampler {
    /// Last heartbeat (or answer) published, per (peer, direction, kind).
    heartbeats: HashMap<(NodeId, Dir, &'static str), Instant>,
    /// The current one-second window for other messages, and how many were published in it.
    window: Option<Instant>,
    in_window: u32,
    /// The current one-second window for commits.
    commit_window: Option<Instant>,
    commits_in_window: u32,
    /// Messages not published since the last one that was.
    skipped: u64,
}

impl Sampler {
    /// Whether a message may be published now (else it is counted as skipped).
    fn admit(&mut self, peer: &NodeId, dir: Dir, kind: &'static str, heartbeat: bool) -> bool {
        let now = Instant::now();
        let ok = if heartbeat {
            let key = (peer.clone(), dir, kind);
            match self.heartbeats.get(&key) {
                Some(last) if now.duration_since(*last) < HEARTBEAT_GAP => false,
                _ => {
                    self.heartbeats.insert(key, now);
                    true
                }
            }
        } else {
            rate(&mut self.window, &mut self.in_window, MESSAGES_PER_SECOND, now)
        };
        if !ok {
            self.skipped += 1;
        }
        ok
    }

    fn admit_commit(&mut self) -> bool {
        let now = Instant::now();
        rate(&mut self.commit_window, &mut self.commits_in_window, COMMITS_PER_SECOND, now)
    }
}

/// A fixed one-second window allowing `max` events.
fn rate(window: &mut Option<Instant>, count: &mut u32, max: u32, now: Instant) -> bool {
    match window {
        Some(start) if now.duration_since(*start) < Duration::from_secs(1) => {}
        _ => {
            *window = Some(now);
            *count = 0;
        }
    }
    if *count < max {
        *count += 1;
        true
    } else {
        false
    }
}

/// Wall-clock milliseconds, for the page's timeline.
fn at_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One SSE frame.
fn frame(event: &str, data: &Value) -> Arc<str> {
    Arc::from(format!("event: {event}\ndata: {data}\n\n"))
}

/// The role's name as the page shows it (a PreVote round is a "pre-candidate").
pub fn role_name(role: &Role) -> &'static str {
    match role {
        Role::Candidate(c) if c.pre_vote => "pre-candidate",
        other => other.name(),
    }
}

/// The kind a message is shown as: an empty AppendEntries is a `Heartbeat`.
fn shown_kind(message: &Message) -> &'static str {
    match message {
        Message::AppendEntries(a) if a.entries.is_empty() => "Heartbeat",
        other => other.kind(),
    }
}

impl EventFeed {
    /// A feed with no viewers.
    pub fn new() -> Self {
        Self::default()
    }

    /// True when somebody watches: the only cost of a publishing point when nobody does.
    #[inline]
    pub fn active(&self) -> bool {
        self.viewers.load(Ordering::Relaxed) > 0
    }

    /// Viewers connected now.
    pub fn viewers(&self) -> usize {
        self.viewers.load(Ordering::Relaxed)
    }

    /// Ends every viewer's stream (the node stops).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    /// Offers `frame` to every viewer; forgets those whose thread has ended.
    fn publish_locked(inner: &mut Inner, frame: &Arc<str>) {
        inner.subscribers.retain(|tx| match tx.try_send(frame.clone()) {
            Ok(()) | Err(TrySendError::Full(_)) => true,
            Err(TrySendError::Disconnected(_)) => false,
        });
    }

    fn publish(&self, event: &str, data: &Value) {
        let frame = frame(event, data);
        Self::publish_locked(&mut self.inner.lock(), &frame);
    }

    /// A message sent (`Dir::Send`, `env.from` is this node) or received. `heartbeat` marks an
    /// empty AppendEntries or the answer to one; `ok` is false for a send that did not arrive.
    pub fn message(&self, dir: Dir, env: &Envelope, heartbeat: bool, ok: bool) {
        if !self.active() {
            return;
        }
        let kind = shown_kind(&env.message);
        let heartbeat = heartbeat || kind == "Heartbeat";
        let peer = if dir == Dir::Send { &env.to } else { &env.from };
        let mut inner = self.inner.lock();
        if !inner.sampler.admit(peer, dir, kind, heartbeat) {
            return;
        }
        let skipped = std::mem::take(&mut inner.sampler.skipped);
        let (entries, success) = match &env.message {
            Message::AppendEntries(a) => (a.entries.len(), None),
            Message::AppendEntriesResponse(r) => (0, Some(r.success)),
            Message::RequestVoteResponse(r) => (0, Some(r.vote_granted)),
            _ => (0, None),
        };
        let data = json!({
            "dir": dir.name(), "from": env.from, "to": env.to, "type": kind, "term": env.term,
            "entries": entries, "heartbeat": heartbeat, "ok": ok, "success": success,
            "skipped": skipped, "atMs": at_ms(),
        });
        Self::publish_locked(&mut inner, &frame("message", &data));
    }

    /// Called with the Raft lock held after every step: publishes what changed in the node's
    /// role, term, leader, vote, commit index and configuration since the last call.
    pub fn observe(&self, raft: &RaftNode) {
        if !self.active() {
            return;
        }
        let mut now = Seen {
            role: role_name(raft.role()),
            term: raft.term(),
            leader: raft.leader(),
            voted_for: raft.voted_for().cloned(),
            commit: raft.log().commit_index,
            config_index: raft.config_index(),
        };
        let mut inner = self.inner.lock();
        if inner.seen == now {
            return;
        }
        let at = at_ms();
        let mut frames = Vec::new();
        let seen = &inner.seen;
        if seen.role != now.role || seen.term != now.term || seen.leader != now.leader {
            let data =
                json!({"role": now.role, "term": now.term, "leader": now.leader, "atMs": at});
            frames.push(frame("role", &data));
        }
        if now.voted_for.is_some() && (seen.voted_for != now.voted_for || seen.term != now.term) {
            let data = json!({"term": now.term, "votedFor": now.voted_for, "atMs": at});
            frames.push(frame("vote", &data));
        }
        if seen.config_index != now.config_index
            && let Some(m) = raft.membership()
        {
            let data = json!({"index": now.config_index, "voters": m.voters,
                "learners": m.learners, "atMs": at});
            frames.push(frame("config", &data));
        }
        if seen.commit != now.commit {
            if inner.sampler.admit_commit() {
                let data = json!({"commitIndex": now.commit, "term": now.term, "atMs": at});
                frames.push(frame("commit", &data));
            } else {
                // Not published: keep the old value, so a later call publishes the newer one.
                now.commit = inner.seen.commit;
            }
        }
        inner.seen = now;
        for f in &frames {
            Self::publish_locked(&mut inner, f);
        }
    }

    /// A snapshot `kind` (`taken`, `sent`, `received`, `installed`) at `index`.
    pub fn snapshot(&self, kind: &str, index: Index, peer: Option<&NodeId>) {
        if self.active() {
            self.publish(
                "snapshot",
                &json!({"kind": kind, "index": index, "peer": peer,
                "atMs": at_ms()}),
            );
        }
    }

    /// The faults in force changed.
    pub fn fault(&self, faults: &impl serde::Serialize) {
        if self.active() {
            self.publish("fault", &json!({"faults": faults, "atMs": at_ms()}));
        }
    }

    /// A new viewer: its queue, or 429 when [`MAX_VIEWERS`] are connected.
    pub fn subscribe(self: &Arc<Self>) -> Result<Viewer> {
        let mut inner = self.inner.lock();
        if self.viewers.load(Ordering::Relaxed) >= MAX_VIEWERS {
            return Err(Error::TooManyRequests(format!(
                "{MAX_VIEWERS} viewers are connected to /debug/events already; close one"
            )));
        }
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        inner.subscribers.push(tx);
        // The next `observe` compares against the state the newcomer's `hello` shows.
        self.viewers.fetch_add(1, Ordering::Relaxed);
        Ok(Viewer { feed: self.clone(), rx })
    }
}

/// One connected viewer (its queue); leaving drops the count.
pub struct Viewer {
    feed: Arc<EventFeed>,
    rx: Receiver<Arc<str>>,
}

impl Drop for Viewer {
    fn drop(&mut self) {
        self.feed.viewers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The `hello` event a viewer gets first: the node's state now.
pub fn hello(raft: &RaftNode) -> Value {
    json!({
        "id": raft.id(), "role": role_name(raft.role()), "term": raft.term(),
        "leader": raft.leader(), "commitIndex": raft.log().commit_index, "atMs": at_ms(),
    })
}

const HEADER: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
Cache-Control: no-cache\r\nAccess-Control-Allow-Origin: *\r\nConnection: close\r\n\r\n";

impl Viewer {
    /// Streams the viewer's events to `out` until the viewer goes away or the node stops. Runs
    /// on the viewer's own thread.
    pub fn stream(self, mut out: Box<dyn Write + Send>, hello: &Value) {
        let first = format!("{HEADER}retry: 2000\n\n{}", frame("hello", hello));
        if out.write_all(first.as_bytes()).and_then(|()| out.flush()).is_err() {
            return;
        }
        let mut last_write = Instant::now();
        while !self.feed.closed.load(Ordering::Relaxed) {
            let text: Arc<str> = match self.rx.recv_timeout(Duration::from_millis(500)) {
                Ok(frame) => frame,
                Err(RecvTimeoutError::Timeout) if last_write.elapsed() >= PING_EVERY => {
                    Arc::from(": ping\n\n")
                }
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            if out.write_all(text.as_bytes()).and_then(|()| out.flush()).is_err() {
                return; // the viewer left
            }
            last_write = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_are_sampled_per_link_and_direction() {
        let mut s = Sampler::default();
        let (a, b) = ("node2".to_string(), "node3".to_string());
        assert!(s.admit(&a, Dir::Send, "Heartbeat", true));
        assert!(!s.admit(&a, Dir::Send, "Heartbeat", true), "a second within the gap");
        assert!(s.admit(&b, Dir::Send, "Heartbeat", true), "another link");
        assert!(s.admit(&a, Dir::Recv, "AppendEntriesResponse", true), "another kind");
        assert_eq!(s.skipped, 1);
    }

    #[test]
    fn other_messages_are_capped_per_second() {
        let mut s = Sampler::default();
        let a = "node2".to_string();
        let admitted =
            (0..200).filter(|_| s.admit(&a, Dir::Send, "AppendEntries", false)).count() as u32;
        // 200 calls take far less than a second here; at most two windows can be involved.
        assert!((MESSAGES_PER_SECOND..=2 * MESSAGES_PER_SECOND).contains(&admitted));
        assert_eq!(s.skipped, 200 - u64::from(admitted));
    }

    #[test]
    fn a_window_allows_max_then_resets() {
        let (mut w, mut n) = (None, 0);
        let t0 = Instant::now();
        assert!((0..3).all(|_| rate(&mut w, &mut n, 3, t0)));
        assert!(!rate(&mut w, &mut n, 3, t0));
        assert!(rate(&mut w, &mut n, 3, t0 + Duration::from_secs(1)));
    }

    #[test]
    fn nobody_watching_publishes_nothing_and_the_limit_holds() {
        let feed = Arc::new(EventFeed::new());
        assert!(!feed.active());
        let viewers: Vec<Viewer> =
            (0..MAX_VIEWERS).map(|_| feed.subscribe().expect("room")).collect();
        assert!(feed.active());
        let refused = feed.subscribe().err();
        assert_eq!(refused.map(|e| e.status()), Some(429));
        drop(viewers);
        assert!(!feed.active());
        assert!(feed.subscribe().is_ok());
    }

    #[test]
    fn a_viewer_gets_what_is_published() {
        let feed = Arc::new(EventFeed::new());
        let v = feed.subscribe().expect("room");
        feed.snapshot("taken", 42, None);
        let got = v.rx.try_recv().expect("an event");
        assert!(got.starts_with("event: snapshot\ndata: {"), "{got}");
        assert!(got.contains("\"index\":42") && got.ends_with("\n\n"), "{got}");
    }
}
