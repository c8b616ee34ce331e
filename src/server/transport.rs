//! Peer transport: how an [`Envelope`] reaches another node and its answer comes back.
//!
//! A [`Transport`] is a blocking request/response call. [`HttpTransport`] POSTs JSON to
//! `/raft/requestVote` or `/raft/installSnapshot`, an AppendEntries in a compact binary encoding
//! ([`super::binary`]) to `/raft/appendEntries`, with `ureq`, and snapshot chunks to
//! `/raft/snapshotChunk`; [`LocalTransport`] calls another node in the same process
//! (tests of the threaded shell without sockets). On the receiving side sits an [`RpcHandler`]:
//! the node (its implementation is in [`super::peer`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::RwLock;

use super::auth::PeerAuth;
use super::binary;
use crate::api::{SnapshotChunk, SnapshotChunkReply};
use crate::error::{Error, Result};
use crate::raft::{Envelope, Message, NodeId};

/// Sends one RPC and waits for its response.
pub trait Transport: Send + Sync {
    /// Delivers `envelope` to the node at `addr` and returns that node's response envelope, or
    /// `None` if it chose not to answer.
    fn call(&self, addr: &str, envelope: &Envelope) -> Result<Option<Envelope>>;

    /// Sends one chunk of a snapshot to node `to` at `addr`, ahead of the InstallSnapshot it
    /// belongs to. Returns how many bytes the receiver now holds, which is where the next chunk
    /// starts (a restart or resume if it differs).
    fn send_snapshot_chunk(&self, addr: &str, to: &NodeId, chunk: &SnapshotChunk) -> Result<u64>;
}

/// Told of the bytes each peer call moves (for metrics): request bytes sent to `peer`, answer
/// bytes received from it.
pub trait Traffic: Send + Sync {
    /// A call to `peer` sent `sent` bytes and received `received`.
    fn moved(&self, peer: &NodeId, sent: u64, received: u64);
}

/// The HTTP path of a request message.
pub fn rpc_path(message: &Message) -> &'static str {
    match message {
        Message::RequestVote(_) | Message::RequestVoteResponse(_) => "/raft/requestVote",
        Message::AppendEntries(_) | Message::AppendEntriesResponse(_) => "/raft/appendEntries",
        Message::InstallSnapshot(_) | Message::InstallSnapshotResponse(_) => {
            "/raft/installSnapshot"
        }
        Message::TimeoutNow => "/raft/timeoutNow",
    }
}

/// Peer RPCs over HTTP/1.1 with keep-alive, JSON bodies (an AppendEntries in the compact
/// encoding of [`binary`]), each request signed ([`super::auth`]).
pub struct HttpTransport {
    agent: ureq::Agent,
    auth: PeerAuth,
    /// Peers that refused our credentials, logged once each (a handful: one per peer address).
    refused: parking_lot::Mutex<std::collections::HashSet<String>>,
    /// Told of the bytes of each call, if set.
    traffic: Option<Arc<dyn Traffic>>,
    /// Peers that refused the compact AppendEntries encoding ([`binary`]): they get JSON.
    json_only: parking_lot::Mutex<HashSet<String>>,
}

impl HttpTransport {
    /// A transport whose calls give up after `timeout` (a black-holed peer costs at most that),
    /// signing its requests with `auth`.
    pub fn new(timeout: Duration, auth: PeerAuth) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(timeout.min(Duration::from_millis(500)))
            .timeout(timeout)
            // One connection per pipelining slot stays open (plus one for a snapshot's chunks).
            .max_idle_connections_per_host(crate::raft::Config::MAX_INFLIGHT + 2)
            .build();
        HttpTransport {
            agent,
            auth,
            refused: Default::default(),
            traffic: None,
            json_only: Default::default(),
        }
    }

    /// The same, telling `traffic` of the bytes each call moves.
    pub fn with_traffic(mut self, traffic: Arc<dyn Traffic>) -> Self {
        self.traffic = Some(traffic);
        self
    }

    fn moved(&self, peer: &NodeId, sent: usize, received: usize) {
        if let Some(t) = &self.traffic {
            t.moved(peer, sent as u64, received as u64);
        }
    }
}

impl HttpTransport {
    /// A failed call as [`Error::Unavailable`]; a peer refusing our credentials or our cluster id
    /// (401, 403) is logged loudly, once per peer: it will not work until an operator fixes it.
    fn failed(&self, addr: &str, what: &str, e: ureq::Error) -> Error {
        if let ureq::Error::Status(status @ (401 | 403), response) = e {
            let body = response.into_string().unwrap_or_default();
            if self.refused.lock().insert(addr.to_string()) {
                log::error!(
                    "{}: the peer at {addr} refuses our {what}s with {status}: {body} (is \
                     --peer-secret-file the same file on every node, and --peers the same \
                     cluster?)",
                    self.auth.node_id()
                );
            }
            return Error::Unavailable(format!("{what} to {addr} refused ({status}): {body}"));
        }
        Error::Unavailable(format!("{what} to {addr} failed: {e}"))
    }
}

impl Transport for HttpTransport {
    fn call(&self, addr: &str, envelope: &Envelope) -> Result<Option<Envelope>> {
        let path = rpc_path(&envelope.message);
        let url = format!("http://{addr}{path}");
        let compact =
            if self.json_only.lock().contains(addr) { None } else { binary::encode(envelope) };
        let (body, content_type) = match compact {
            Some(body) => (body, binary::CONTENT_TYPE),
            None => (
                serde_json::to_vec(envelope)
                    .map_err(|e| Error::Internal(format!("cannot encode RPC: {e}")))?,
                "application/json",
            ),
        };
        let request = self.agent.post(&url).set("Content-Type", content_type);
        let sent = self.auth.sign("POST", path, &body).apply(request).send_bytes(&body);
        let response = match sent {
            // A node of a version before the compact encoding reads it as bad JSON: from then
            // on that peer gets JSON (a rolling upgrade keeps replicating).
            Err(ureq::Error::Status(400, r)) if content_type == binary::CONTENT_TYPE => {
                let why = r.into_string().unwrap_or_default();
                log::warn!("{addr} refuses compact AppendEntries ({why}); sending it JSON");
                self.json_only.lock().insert(addr.to_string());
                return self.call(addr, envelope);
            }
            other => other.map_err(|e| self.failed(addr, "RPC", e))?,
        };
        let mut answer = Vec::new();
        let read = std::io::Read::read_to_end(&mut response.into_reader(), &mut answer);
        self.moved(&envelope.to, body.len(), answer.len());
        read.map_err(|e| Error::Unavailable(format!("RPC response from {addr} cut off: {e}")))?;
        let reply: Option<Envelope> = serde_json::from_slice(&answer)
            .map_err(|e| Error::Unavailable(format!("bad RPC response from {addr}: {e}")))?;
        Ok(reply)
    }

    fn send_snapshot_chunk(&self, addr: &str, to: &NodeId, chunk: &SnapshotChunk) -> Result<u64> {
        // Only unreserved characters and %XX escapes: sent exactly as signed.
        let path = format!("/raft/snapshotChunk?{}", chunk.query());
        let request = self
            .agent
            .post(&format!("http://{addr}{path}"))
            .set("Content-Type", "application/octet-stream");
        let response = self
            .auth
            .sign("POST", &path, chunk.data)
            .apply(request)
            .send_bytes(chunk.data)
            .map_err(|e| self.failed(addr, "snapshot chunk", e))?;
        self.moved(to, chunk.data.len(), 0);
        let reply: SnapshotChunkReply =
            serde_json::from_reader(response.into_reader()).map_err(|e| {
                Error::Unavailable(format!("bad snapshot chunk answer from {addr}: {e}"))
            })?;
        Ok(reply.received)
    }
}

/// Something that can answer peer RPCs: the server's node.
pub trait RpcHandler: Send + Sync {
    /// Handles one peer request and returns the response envelope, if there is one.
    fn handle_rpc(&self, envelope: Envelope) -> Result<Option<Envelope>>;

    /// Stores one chunk of an incoming snapshot; returns the bytes held so far.
    fn handle_snapshot_chunk(&self, chunk: &SnapshotChunk) -> Result<u64>;
}

/// In-process transport: "addresses" name handlers registered in a shared table. Links can be cut
/// to test partitions without sockets.
#[derive(Default, Clone)]
pub struct LocalTransport {
    nodes: Arc<RwLock<HashMap<String, Weak<dyn RpcHandler>>>>,
    cut: Arc<RwLock<HashSet<(NodeId, NodeId)>>>,
}

impl LocalTransport {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `handler` reachable at `addr`.
    pub fn register(&self, addr: &str, handler: Weak<dyn RpcHandler>) {
        self.nodes.write().insert(addr.to_string(), handler);
    }

    /// Cuts (or restores) the directed link `from -> to`.
    pub fn set_cut(&self, from: &NodeId, to: &NodeId, cut: bool) {
        let key = (from.clone(), to.clone());
        if cut {
            self.cut.write().insert(key);
        } else {
            self.cut.write().remove(&key);
        }
    }

    /// The directed link `from -> to` is cut.
    fn is_cut(&self, from: &str, to: &str) -> bool {
        self.cut.read().contains(&(from.to_string(), to.to_string()))
    }

    /// The handler at `addr`, unless the link `from -> to` is cut or nothing is there.
    fn reach(&self, addr: &str, from: &str, to: &str) -> Result<Arc<dyn RpcHandler>> {
        if self.is_cut(from, to) {
            return Err(Error::Unavailable(format!("link {from} -> {to} is cut")));
        }
        let handler = self.nodes.read().get(addr).and_then(Weak::upgrade);
        handler.ok_or_else(|| Error::Unavailable(format!("nothing at {addr}")))
    }
}

impl Transport for LocalTransport {
    fn call(&self, addr: &str, envelope: &Envelope) -> Result<Option<Envelope>> {
        let handler = self.reach(addr, &envelope.from, &envelope.to)?;
        let back_cut = self.is_cut(&envelope.to, &envelope.from);
        let reply = handler.handle_rpc(envelope.clone())?;
        if back_cut {
            return Err(Error::Unavailable("reply lost: link is cut".into()));
        }
        Ok(reply)
    }

    fn send_snapshot_chunk(&self, addr: &str, to: &NodeId, chunk: &SnapshotChunk) -> Result<u64> {
        self.reach(addr, chunk.from, to)?.handle_snapshot_chunk(chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{AppendEntries, Entry};

    /// A peer of a version before the compact encoding: it refuses anything but JSON with a
    /// 400, as the old server did for a body that is not JSON.
    fn old_peer() -> (String, std::thread::JoinHandle<Vec<String>>) {
        let server = tiny_http::Server::http("127.0.0.1:0").expect("listen");
        let addr = server.server_addr().to_ip().expect("an IP address").to_string();
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for _ in 0..3 {
                let Ok(mut request) = server.recv() else { break };
                let content_type = request
                    .headers()
                    .iter()
                    .find(|h| h.field.equiv("Content-Type"))
                    .map(|h| h.value.to_string())
                    .unwrap_or_default();
                let mut body = Vec::new();
                let _ = std::io::Read::read_to_end(request.as_reader(), &mut body);
                let json = serde_json::from_slice::<Envelope>(&body).is_ok();
                seen.push(content_type);
                let (status, answer) = if json { (200, "null") } else { (400, "not JSON") };
                let _ = request
                    .respond(tiny_http::Response::from_string(answer).with_status_code(status));
            }
            seen
        });
        (addr, handle)
    }

    #[test]
    fn a_peer_that_refuses_the_compact_encoding_gets_json_from_then_on() {
        let (addr, peer) = old_peer();
        let auth = PeerAuth::new("node1".into(), "test".into(), None);
        let transport = HttpTransport::new(Duration::from_secs(5), auth);
        let envelope = Envelope {
            from: "node1".into(),
            to: "node2".into(),
            term: 3,
            message: Message::AppendEntries(AppendEntries {
                prev_log_index: 0,
                prev_log_term: 0,
                entries: vec![Entry { index: 1, term: 3, command: b"{}".to_vec() }],
                leader_commit: 0,
                seq: 1,
            }),
        };
        assert_eq!(transport.call(&addr, &envelope).expect("answered after the fallback"), None);
        assert_eq!(transport.call(&addr, &envelope).expect("answered"), None);
        let seen = peer.join().expect("the fake peer");
        assert_eq!(seen, [binary::CONTENT_TYPE, "application/json", "application/json"]);
    }
}
