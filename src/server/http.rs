//! The HTTP listener: one tiny_http server on the node's address, its worker threads (`http-N`),
//! the pool kicker (`http-kick`, see [`super::pool_kick`]), and the routes — the client API,
//! `/status`, `/metrics`, the health endpoints ([`super::health`]), and the peer RPC endpoints,
//! on one port. The routes and their bodies are listed in
//! [`crate::api`]; errors are answered with [`Error::to_json`] and [`Error::status`].
//!
//! Keys in paths are percent-encoded (`/` as `%2F`). Any node accepts any client request: a
//! follower forwards it to the leader and relays the answer (a forwarded request carries
//! `X-Raftlabkv-Forwarded`, and is never forwarded twice: a follower answers it with
//! [`Error::NotLeader`]).
//!
//! Peer requests — `/raft/*` and forwarded client requests — are checked by [`super::auth`]
//! before their bodies are parsed: 401 without valid credentials, 403 from another cluster.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tiny_http::{Method, Request};

use super::answers;
use super::auth::PendingCheck;
use super::binary;
use super::debug;
use super::events;
use super::health;
use super::kv_api::{self, KvRequest};
use super::members;
use super::node::{Node, spawn};
use super::pool_kick::{self, Activity};
use super::transport::{RpcHandler, rpc_path};
use super::wire::{
    FORWARDED, MAX_PEER_BODY, Reply, TEXT, forward, header, only, read_body, respond,
};
use crate::api::{SnapshotChunk, SnapshotChunkReply};
use crate::error::{Error, Result};
use crate::raft::{Envelope, MAX_INDEX, MAX_TERM, SnapshotMeta};

pub use super::wire::percent_decode;

/// The dashboard (`GET /dashboard`): one page of plain HTML, CSS and JavaScript, embedded in the
/// binary; it reads every member's `/debug/raft` itself.
const DASHBOARD: &str = include_str!("dashboard.html");

/// The node's HTTP listener.
pub struct Listener {
    http: Arc<tiny_http::Server>,
}

impl Listener {
    /// Binds `addr` (nothing is served until [`Listener::spawn`]).
    pub fn bind(addr: &str) -> Result<Listener> {
        let http = tiny_http::Server::http(addr)
            .map_err(|e| Error::Unavailable(format!("cannot listen on {addr}: {e}")))?;
        Ok(Listener { http: Arc::new(http) })
    }

    /// Starts `node.config.http_threads` workers and the pool kicker, adding them to `threads`.
    pub fn spawn(&self, node: &Arc<Node>, threads: &mut Vec<JoinHandle<()>>) -> Result<()> {
        let activity = Arc::new(Activity::new());
        for i in 0..node.config.http_threads.max(1) {
            let (node, http, activity) = (node.clone(), self.http.clone(), activity.clone());
            threads.push(spawn(format!("http-{i}"), move || serve(&node, &http, &activity))?);
        }
        for _ in 0..node.answers.threads() {
            threads.extend(answers::start(node)?);
        }
        // Works around tiny_http's pool leaving new connections unread (see `pool_kick`).
        if let Some(addr) = self.http.server_addr().to_ip() {
            let (node, target) = (node.clone(), pool_kick::kick_target(addr));
            threads.push(spawn("http-kick".into(), move || {
                pool_kick::run(&activity, target, || !node.is_shutdown())
            })?);
        }
        Ok(())
    }

    /// Wakes the workers blocked waiting for a request, so that they see the shutdown.
    pub fn unblock(&self, workers: usize) {
        for _ in 0..=workers {
            self.http.unblock();
        }
    }
}

/// An HTTP worker: takes requests off the shared listener until shutdown.
fn serve(node: &Node, http: &tiny_http::Server, activity: &Activity) {
    while !node.is_shutdown() {
        let request = match http.recv_timeout(Duration::from_millis(200)) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                log::warn!("HTTP accept failed: {e}");
                continue;
            }
        };
        // Peers' calls and the dashboard's polls (steady, on kept-alive connections) are not the
        // bursts of new client connections the kicker is for; counting them would keep it
        // kicking 400 times a second for as long as a dashboard is open.
        let url = request.url();
        if !url.starts_with("/raft/") && !url.starts_with("/debug/") {
            activity.note();
        }
        handle(node, request);
    }
}

fn handle(node: &Node, request: Request) {
    let started = Instant::now();
    let request = match watch_events(node, request) {
        Watch::Streaming => {
            node.metrics.events.http("/debug/events", 200, started.elapsed());
            return;
        }
        Watch::Refused(request, e) => return respond(node, request, Reply::error(&e), started),
        Watch::Other(request) => request,
    };
    // A client's put may be answered by an answer thread instead (see `answers`).
    let Some(mut request) = answers::hand_over(node, request, started) else {
        return;
    };
    let reply = route(node, &mut request);
    respond(node, request, reply, started);
}

/// What [`watch_events`] did with a request.
enum Watch {
    /// An events stream: its own thread owns the connection now.
    Streaming,
    /// An events stream that cannot be served (429: too many viewers).
    Refused(Request, Error),
    /// Not a `GET /debug/events`.
    Other(Request),
}

/// `GET /debug/events`: hands the connection to a thread of its own (an SSE stream must not
/// hold an HTTP worker), after the `hello` event is taken from the core.
fn watch_events(node: &Node, request: Request) -> Watch {
    let path = request.url().split_once('?').map_or(request.url(), |(p, _)| p);
    if path != "/debug/events" || *request.method() != Method::Get {
        return Watch::Other(request);
    }
    let viewer = match node.feed.subscribe() {
        Ok(v) => v,
        Err(e) => return Watch::Refused(request, e),
    };
    let hello = events::hello(&node.raft.lock());
    let out = request.into_writer();
    let spawned = std::thread::Builder::new()
        .name("events-viewer".into())
        .spawn(move || viewer.stream(out, &hello));
    if let Err(e) = spawned {
        log::warn!("cannot start a thread for an events viewer: {e}");
    }
    Watch::Streaming
}

fn route(node: &Node, request: &mut Request) -> Reply {
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let method = request.method().clone();
    let result = if path.starts_with("/raft/") {
        peer_route(node, request, &method, &url, path, query)
    } else {
        client_route(node, request, &method, &url, path, query)
    };
    result.unwrap_or_else(|e| Reply::error(&e))
}

/// The peer endpoints. Their headers are checked first ([`super::auth`]: identity, cluster,
/// timestamp; 401 or 403), then the body is read and its MAC verified before it is parsed.
fn peer_route(
    node: &Node,
    request: &mut Request,
    method: &Method,
    url: &str,
    path: &str,
    query: &str,
) -> Result<Reply> {
    let check = node.auth.check_headers(method.as_str(), url, |name| header(request, name))?;
    match path {
        "/raft/requestVote"
        | "/raft/appendEntries"
        | "/raft/installSnapshot"
        | "/raft/timeoutNow" => {
            only(method, Method::Post)?;
            peer_rpc(node, request, path, check)
        }
        "/raft/snapshotChunk" => {
            only(method, Method::Post)?;
            snapshot_chunk(node, request, query, check)
        }
        _ => Err(Error::NotFound(format!("no route {path}"))),
    }
}

fn client_route(
    node: &Node,
    request: &mut Request,
    method: &Method,
    url: &str,
    path: &str,
    query: &str,
) -> Result<Reply> {
    let forwarded = header(request, FORWARDED).is_some();
    // A forwarded request comes from a peer: it is checked as one before anything else. The MAC
    // of a put, a transaction or a membership change is verified once its body is read; the
    // other routes have no body.
    let mut signed = None;
    if forwarded {
        let check = node.auth.check_headers(method.as_str(), url, |name| header(request, name))?;
        if path == "/kv/put" || path == "/kv/txn" || path.starts_with("/cluster/") {
            signed = Some(check);
        } else {
            check.verify(&read_body(request, 0)?)?;
        }
    }
    let method = method.clone();
    if path.starts_with("/cluster/") {
        let body = read_body(request, members::MAX_BODY)?;
        if let Some(check) = signed {
            check.verify(&body)?;
        }
        return match members::handle(node, &method, path, query, &body) {
            Ok(answer) => Ok(Reply::json(200, &answer)),
            // Nothing was proposed: the leader can take it.
            Err(Error::NotLeader { leader: Some(leader) }) if !forwarded => {
                forward(request, &leader.addr, &body, node)
            }
            Err(e) => Err(e),
        };
    }
    if path.starts_with("/kv/") {
        let r = KvRequest { node, request, method, query, forwarded, signed };
        if let Some(result) = kv_api::route(path, r) {
            return result;
        }
        return Err(Error::NotFound(format!("no route {path}")));
    }
    {
        match path {
            "/status" => only(&method, Method::Get).map(|_| Reply::json(200, &node.status())),
            "/metrics" => only(&method, Method::Get).and_then(|_| metrics(node)),
            "/livez" => only(&method, Method::Get).map(|_| Reply::text(200, "ok\n".into(), TEXT)),
            "/readyz" => only(&method, Method::Get).map(|_| {
                let verbose = query.split('&').any(|kv| kv == "verbose" || kv == "verbose=true");
                let (status, text) = health::readyz_text(&health_checks(node), verbose);
                Reply::text(status, text, TEXT)
            }),
            "/health" => only(&method, Method::Get).map(|_| {
                let (status, body) = health::health(&health_checks(node));
                Reply::json(status, &body)
            }),
            "/debug/raft" => only(&method, Method::Get).and_then(|_| {
                let tail = debug::parse_tail(query)?;
                Ok(Reply::json(200, &debug::raft_state(node, tail)?))
            }),
            "/debug/fault" => match method {
                Method::Get => Ok(Reply::json(200, &debug::faults(node)?)),
                Method::Post => {
                    let body = read_body(request, 4096)?;
                    Ok(Reply::json(200, &debug::inject(node, &body)?))
                }
                // A CORS preflight: the dashboard of one node posts faults to the others.
                Method::Options => Ok(Reply::text(204, String::new(), TEXT)),
                _ => Err(Error::MethodNotAllowed("use GET or POST for /debug/fault".into())),
            },
            // GET is streamed before routing (`watch_events`).
            "/debug/events" => Err(Error::MethodNotAllowed("use GET for /debug/events".into())),
            "/dashboard" | "/dashboard/" => only(&method, Method::Get)
                .map(|_| Reply::text(200, DASHBOARD.into(), "text/html; charset=utf-8")),
            _ => Err(Error::NotFound(format!("no route {path}"))),
        }
    }
}

/// `GET /metrics`: the Prometheus text format.
fn metrics(node: &Node) -> Result<Reply> {
    let text = node
        .metrics
        .encode(&node.scrape())
        .map_err(|e| Error::Internal(format!("cannot encode the metrics: {e}")))?;
    Ok(Reply::text(200, text, prometheus_client::encoding::prometheus_text::CONTENT_TYPE))
}

/// The readiness checks, with a linearizable read here (a leader) or at the leader (a
/// follower: a signed request, as a forwarded read is).
fn health_checks(node: &Node) -> Vec<health::Check> {
    health::checks(node, |within| match node.linearizable_barrier_within(within) {
        Err(Error::NotLeader { leader: Some(leader) }) => {
            read_at_leader(node, &leader.addr, within)
        }
        other => other,
    })
}

/// A linearizable read of a key nobody writes, at the leader: any answer but an error status
/// (404 included: the key is absent) means the leader confirmed its leadership.
fn read_at_leader(node: &Node, leader_addr: &str, within: Duration) -> Result<()> {
    let path = "/kv/get/%00readyz";
    let agent = ureq::AgentBuilder::new().timeout(within).redirects(0).build();
    let req = agent.get(&format!("http://{leader_addr}{path}")).set(FORWARDED, &node.config.id);
    match node.auth.sign("GET", path, &[]).apply(req).call() {
        Ok(_) | Err(ureq::Error::Status(404, _)) => Ok(()),
        Err(ureq::Error::Status(status, r)) => {
            let body = r.into_string().unwrap_or_default();
            Err(Error::Unavailable(format!(
                "the leader at {leader_addr} answered {status}: {body}"
            )))
        }
        Err(e) => Err(Error::Unavailable(format!("the leader at {leader_addr}: {e}"))),
    }
}

/// A Raft RPC: the body is read, its MAC verified, and only then parsed.
fn peer_rpc(
    node: &Node,
    request: &mut Request,
    path: &str,
    check: PendingCheck<'_>,
) -> Result<Reply> {
    let body = read_body(request, MAX_PEER_BODY)?;
    let signer = check.verify(&body)?;
    // An AppendEntries may come in the compact encoding (`super::binary`); all else is JSON.
    let envelope: Envelope = if header(request, "Content-Type") == Some(binary::CONTENT_TYPE) {
        binary::decode(&body)
            .map_err(|e| Error::BadRequest(format!("not a compact AppendEntries: {e}")))?
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| Error::BadRequest(format!("not a Raft message: {e}")))?
    };
    // Authenticated, but contradicting itself: bad input from a member.
    if envelope.from != signer {
        return Err(Error::BadRequest(format!(
            "a message from {:?} sent (and signed) by {signer:?}",
            envelope.from
        )));
    }
    let expected = rpc_path(&envelope.message);
    if expected != path {
        return Err(Error::BadRequest(format!("this message belongs on {expected}")));
    }
    let from = envelope.from.clone();
    let reply = Reply::json(200, &node.handle_rpc(envelope)?);
    super::transport::Traffic::moved(
        &*node.metrics,
        &from,
        reply.body.len() as u64,
        body.len() as u64,
    );
    Ok(reply)
}

/// `POST /raft/snapshotChunk?from=&index=&term=&offset=&total=` with the raw bytes as body
/// (MAC-verified before the query is believed): a [`SnapshotChunk`] (the query
/// [`SnapshotChunk::query`] writes).
fn snapshot_chunk(
    node: &Node,
    request: &mut Request,
    query: &str,
    check: PendingCheck<'_>,
) -> Result<Reply> {
    let body = read_body(request, node.config.snapshot_chunk_bytes.max(1 << 20) * 2)?;
    let signer = check.verify(&body)?;
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
            .ok_or_else(|| Error::BadRequest(format!("snapshot chunk lacks '{name}'")))
    };
    let number = |name: &str| -> Result<u64> {
        param(name)?.parse().map_err(|_| Error::BadRequest(format!("snapshot chunk: bad '{name}'")))
    };
    let from = percent_decode(param("from")?)?;
    if from != signer {
        return Err(Error::BadRequest(format!(
            "a snapshot chunk from {from:?} sent (and signed) by {signer:?}"
        )));
    }
    let snapshot = SnapshotMeta { index: number("index")?, term: number("term")? };
    let (offset, total) = (number("offset")?, number("total")?);
    // The same bounds as for any peer message (`Envelope::validate`), and a chunk inside its file.
    if snapshot.index > MAX_INDEX || snapshot.term > MAX_TERM {
        return Err(Error::BadRequest(format!(
            "snapshot chunk names index {} term {}, above the largest allowed",
            snapshot.index, snapshot.term
        )));
    }
    if offset > total {
        return Err(Error::BadRequest(format!(
            "snapshot chunk at offset {offset} is past the end of its {total}-byte file"
        )));
    }
    let chunk = SnapshotChunk { from: &from, snapshot, offset, total, data: &body };
    let received = node.handle_snapshot_chunk(&chunk)?;
    super::transport::Traffic::moved(&*node.metrics, &signer, 0, body.len() as u64);
    Ok(Reply::json(200, &SnapshotChunkReply { received }))
}
