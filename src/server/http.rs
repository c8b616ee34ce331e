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

use std::borrow::Cow;
use std::io::Read;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use percent_encoding::percent_decode_str;
use serde::Serialize;
use tiny_http::{Header, Method, Request, Response};

use super::auth::PendingCheck;
use super::debug;
use super::events;
use super::health;
use super::members;
use super::node::{Node, spawn};
use super::pool_kick::{self, Activity};
use super::transport::{RpcHandler, rpc_path};
use crate::api::{GetReply, PutRequest, SnapshotChunk, SnapshotChunkReply, WriteReply};
use crate::error::{Error, Result};
use crate::kv::Command;
use crate::raft::{Envelope, MAX_INDEX, MAX_TERM, SnapshotMeta};

const FORWARDED: &str = "X-Raftlabkv-Forwarded";

/// Largest peer RPC body (a full AppendEntries batch, base64-encoded, with room to spare).
const MAX_PEER_BODY: usize = 64 << 20;

/// An answer: status and body (JSON unless said otherwise).
struct Reply {
    status: u16,
    body: Vec<u8>,
    content_type: &'static str,
}

const JSON: &str = "application/json";

/// The dashboard (`GET /dashboard`): one page of plain HTML, CSS and JavaScript, embedded in the
/// binary; it reads every member's `/debug/raft` itself.
const DASHBOARD: &str = include_str!("dashboard.html");

impl Reply {
    fn json(status: u16, value: &impl Serialize) -> Reply {
        match serde_json::to_vec(value) {
            Ok(body) => Reply { status, body, content_type: JSON },
            Err(e) => {
                let e = Error::Internal(format!("cannot encode the answer: {e}"));
                let body = e.to_json().to_string().into_bytes();
                Reply { status: e.status(), body, content_type: JSON }
            }
        }
    }

    fn text(status: u16, text: String, content_type: &'static str) -> Reply {
        Reply { status, body: text.into_bytes(), content_type }
    }

    fn error(e: &Error) -> Reply {
        Reply::json(e.status(), &e.to_json())
    }
}

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
    let mut request = match watch_events(node, request) {
        Watch::Streaming => {
            node.metrics.events.http("/debug/events", 200, started.elapsed());
            return;
        }
        Watch::Refused(request, e) => return respond(node, request, Reply::error(&e), started),
        Watch::Other(request) => request,
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

fn respond(node: &Node, request: Request, reply: Reply, started: Instant) {
    let pattern = route_pattern(request.url());
    node.metrics.events.http(pattern, reply.status, started.elapsed());
    let content_type = Header::from_bytes("Content-Type", reply.content_type).ok();
    let mut response = Response::from_data(reply.body).with_status_code(reply.status);
    if let Some(h) = content_type {
        response = response.with_header(h);
    }
    // The dashboard served by one node reads (and, with the fault lab, posts to) every other.
    let url = request.url();
    if url.starts_with("/debug/") || url.starts_with("/status") {
        for (name, value) in [
            ("Access-Control-Allow-Origin", "*"),
            ("Access-Control-Allow-Methods", "GET, POST, OPTIONS"),
            ("Access-Control-Allow-Headers", "Content-Type"),
        ] {
            if let Ok(h) = Header::from_bytes(name, value) {
                response = response.with_header(h);
            }
        }
    }
    if let Err(e) = request.respond(response) {
        log::debug!("could not send a response: {e}");
    }
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

/// The route `url` belongs to, as a pattern (`/kv/get/{key}`): the label of the HTTP metrics,
/// which must not grow with the keys asked for.
fn route_pattern(url: &str) -> &'static str {
    let path = url.split_once('?').map_or(url, |(p, _)| p);
    const EXACT: &[&str] = &[
        "/kv/put",
        "/kv/all",
        "/status",
        "/metrics",
        "/livez",
        "/readyz",
        "/health",
        "/dashboard",
        "/debug/raft",
        "/debug/fault",
        "/debug/events",
        "/cluster/members",
        "/cluster/leader",
        "/raft/requestVote",
        "/raft/appendEntries",
        "/raft/installSnapshot",
        "/raft/timeoutNow",
        "/raft/snapshotChunk",
    ];
    if let Some(p) = EXACT.iter().find(|p| **p == path) {
        return p;
    }
    if path.starts_with("/kv/get/") {
        "/kv/get/{key}"
    } else if path.starts_with("/kv/delete/") {
        "/kv/delete/{key}"
    } else if path.starts_with("/cluster/members/") && path.ends_with("/promote") {
        "/cluster/members/{id}/promote"
    } else if path.starts_with("/cluster/members/") {
        "/cluster/members/{id}"
    } else if path.starts_with("/debug/") {
        "/debug/*"
    } else {
        "other"
    }
}

/// The value of header `name` (the first, if it is repeated).
fn header<'r>(request: &'r Request, name: &str) -> Option<&'r str> {
    let matches = |h: &&Header| h.field.as_str().as_str().eq_ignore_ascii_case(name);
    request.headers().iter().find(matches).map(|h| h.value.as_str())
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
    let stale = query.split('&').any(|kv| kv == "consistency=stale");
    let forwarded = header(request, FORWARDED).is_some();
    // A forwarded request comes from a peer: it is checked as one before anything else. A put's
    // MAC is verified once its body is read; the other routes have no body.
    let mut signed = None;
    if forwarded {
        let check = node.auth.check_headers(method.as_str(), url, |name| header(request, name))?;
        if path == "/kv/put" || path.starts_with("/cluster/") {
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
    if let Some(raw_key) = path.strip_prefix("/kv/get/") {
        only(&method, Method::Get)
            .and_then(|_| decode_key(raw_key, node))
            .and_then(|key| get(node, request, &key, stale, forwarded))
    } else if let Some(raw_key) = path.strip_prefix("/kv/delete/") {
        only(&method, Method::Delete).and_then(|_| decode_key(raw_key, node)).and_then(|key| {
            write(node, request, &Command::Delete { key: key.into_owned() }, &[], forwarded)
        })
    } else {
        match path {
            "/kv/put" => only(&method, Method::Post).and_then(|_| put(node, request, signed)),
            "/kv/all" => {
                only(&method, Method::Get).and_then(|_| all(node, request, stale, forwarded))
            }
            "/kv/get" | "/kv/get/" | "/kv/delete" | "/kv/delete/" => {
                Err(Error::BadRequest("the key is missing from the path".into()))
            }
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

const TEXT: &str = "text/plain; charset=utf-8";

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

fn only(method: &Method, want: Method) -> Result<()> {
    if *method == want {
        Ok(())
    } else {
        Err(Error::MethodNotAllowed(format!("use {want} for this route, not {method}")))
    }
}

/// Reads the request body, refusing more than `limit` bytes before reading them all.
fn read_body(request: &mut Request, limit: usize) -> Result<Vec<u8>> {
    if let Some(len) = request.body_length()
        && len > limit
    {
        return Err(Error::TooLarge(format!("body of {len} bytes is over the {limit}-byte limit")));
    }
    let mut body = Vec::new();
    request
        .as_reader()
        .take(limit as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| Error::BadRequest(format!("could not read the body: {e}")))?;
    if body.len() > limit {
        return Err(Error::TooLarge(format!("body is over the {limit}-byte limit")));
    }
    Ok(body)
}

/// Percent-decodes the rest of the path into a key, and checks it.
fn decode_key<'a>(raw: &'a str, node: &Node) -> Result<Cow<'a, str>> {
    let key = percent_decode(raw)?;
    check_key(&key, node)?;
    Ok(key)
}

fn check_key(key: &str, node: &Node) -> Result<()> {
    if key.is_empty() {
        return Err(Error::BadRequest("the key must not be empty".into()));
    }
    if key.len() > node.config.max_key_bytes {
        return Err(Error::TooLarge(format!(
            "key of {} bytes is over the {}-byte limit",
            key.len(),
            node.config.max_key_bytes
        )));
    }
    Ok(())
}

/// `%XX` escapes to bytes, then UTF-8 (borrowed when there is nothing to unescape). `+` stays
/// `+` (this is a path, not a form). Stricter than the crate's decoder, which passes a stray `%`
/// through: a `%` not followed by two hex digits is refused.
pub fn percent_decode(raw: &str) -> Result<Cow<'_, str>> {
    let bytes = raw.as_bytes();
    let is_escape =
        |i: usize| bytes.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
    if let Some((i, _)) = raw.match_indices('%').find(|&(i, _)| !is_escape(i)) {
        return Err(Error::BadRequest(format!("bad percent-escape at byte {i} of the key")));
    }
    percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| Error::BadRequest("the key is not valid UTF-8".into()))
}

fn get(
    node: &Node,
    request: &mut Request,
    key: &str,
    stale: bool,
    forwarded: bool,
) -> Result<Reply> {
    if !stale && let Some(reply) = barrier_or_forward(node, request, &[], forwarded)? {
        return Ok(reply);
    }
    node.metrics.events.read(!stale);
    node.with_kv(|kv| match kv.entry(key) {
        Some(e) => Ok(Reply::json(
            200,
            &GetReply {
                key: key.into(),
                value: e.value.as_str().into(),
                create_revision: Some(e.create_revision),
                mod_revision: Some(e.mod_revision),
                version: Some(e.version),
            },
        )),
        None => Err(Error::NotFound(format!("key not found: {key}"))),
    })
}

fn all(node: &Node, request: &mut Request, stale: bool, forwarded: bool) -> Result<Reply> {
    if !stale && let Some(reply) = barrier_or_forward(node, request, &[], forwarded)? {
        return Ok(reply);
    }
    node.metrics.events.read(!stale);
    let body = node.with_kv(|kv| kv.values_json());
    body.map(|body| Reply { status: 200, body, content_type: JSON })
        .map_err(|e| Error::Internal(format!("cannot encode the key space: {e}")))
}

/// For a linearizable read: confirm leadership here, or forward the request to the leader (whose
/// answer is returned as `Some`). A read changes nothing, so it may be forwarded whenever another
/// node is known to lead — also when leadership moved while this node was being confirmed.
fn barrier_or_forward(
    node: &Node,
    request: &mut Request,
    body: &[u8],
    forwarded: bool,
) -> Result<Option<Reply>> {
    match node.linearizable_barrier() {
        Ok(()) => Ok(None),
        Err(e) if forwarded => Err(e),
        Err(Error::NotLeader { leader: Some(leader) }) => {
            forward(request, &leader.addr, body, node).map(Some)
        }
        Err(e) => match node.leader_addr() {
            Some(addr) => forward(request, &addr, body, node).map(Some),
            None => Err(e),
        },
    }
}

/// `POST /kv/put`; `signed` when a peer forwarded it (its MAC is checked before the body is
/// parsed).
fn put(node: &Node, request: &mut Request, signed: Option<PendingCheck<'_>>) -> Result<Reply> {
    let limit = 6 * (node.config.max_key_bytes + node.config.max_value_bytes) + 1024;
    let body = read_body(request, limit)?;
    let forwarded = signed.is_some();
    if let Some(check) = signed {
        check.verify(&body)?;
    }
    let PutRequest { key, value } = serde_json::from_slice(&body).map_err(|e| {
        Error::BadRequest(format!("body must be JSON {{\"key\":..,\"value\":..}}: {e}"))
    })?;
    check_key(&key, node)?;
    if value.len() > node.config.max_value_bytes {
        return Err(Error::TooLarge(format!(
            "value of {} bytes is over the {}-byte limit",
            value.len(),
            node.config.max_value_bytes
        )));
    }
    let command = Command::Put { key: key.into_owned(), value: value.into_owned() };
    write(node, request, &command, &body, forwarded)
}

/// Proposes `command` and answers once it is applied; a follower forwards it (with the request
/// `body`) to the leader.
fn write(
    node: &Node,
    request: &mut Request,
    command: &Command,
    body: &[u8],
    forwarded: bool,
) -> Result<Reply> {
    match node.write(command) {
        Ok(ok) => {
            let (Command::Put { key, .. } | Command::Delete { key }) = command;
            Ok(Reply::json(200, &WriteReply::ok(key, ok.index, ok.term, ok.revision)))
        }
        // Only a refusal to propose is forwarded: nothing was proposed, so the leader can take it.
        Err(Error::NotLeader { leader: Some(leader) }) if !forwarded => {
            forward(request, &leader.addr, body, node)
        }
        Err(e) => Err(e),
    }
}

/// Relays a client request to the leader, signed as a peer request ([`super::auth`]), and its
/// answer back.
fn forward(request: &Request, leader_addr: &str, body: &[u8], node: &Node) -> Result<Reply> {
    let url = format!("http://{leader_addr}{}", request.url());
    let is_write = *request.method() != Method::Get;
    let agent = forward_agent(node, is_write);
    let method = request.method().as_str();
    let req = agent
        .request(method, &url)
        .set(FORWARDED, &node.config.id)
        .set("Content-Type", "application/json");
    // Sign the path and query exactly as ureq sends them: it normalises the URL first.
    let sent = req
        .request_url()
        .map_err(|e| Error::BadRequest(format!("cannot forward {}: {e}", request.url())))?;
    let sent = sent.as_url();
    let path = match sent.query() {
        Some(q) => format!("{}?{q}", sent.path()),
        None => sent.path().to_string(),
    };
    let req = node.auth.sign(method, &path, body).apply(req);
    let result = if body.is_empty() { req.call() } else { req.send_bytes(body) };
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => {
            // Did the leader get it? A refused connection means no; anything later, maybe.
            let refused = matches!(&e, ureq::Error::Transport(t) if t.kind() == ureq::ErrorKind::ConnectionFailed);
            let msg = format!("forwarding to the leader at {leader_addr} failed: {e}");
            return Err(if refused || !is_write {
                Error::Unavailable(msg)
            } else {
                Error::OutcomeUnknown(msg)
            });
        }
    };
    let status = response.status();
    let mut out = Vec::new();
    response
        .into_reader()
        .take(MAX_PEER_BODY as u64)
        .read_to_end(&mut out)
        .map_err(|e| Error::OutcomeUnknown(format!("leader's answer was cut off: {e}")))?;
    Ok(Reply { status, body: out, content_type: JSON })
}

/// The agent for forwarding. Reads share a keep-alive pool. Writes get a fresh connection each:
/// ureq re-sends a request it deems idempotent (GET, and also DELETE) on a new connection when a
/// *pooled* connection closes before the answer, so through a pool a forwarded DELETE could reach
/// the leader twice — and be applied twice, undoing a put committed in between — and a refused
/// resend would be reported as 503 "not applied" although the first copy may have been. Without
/// a pool every write is sent exactly once, and a failure to connect really means "not sent".
fn forward_agent(node: &Node, is_write: bool) -> ureq::Agent {
    use std::sync::OnceLock;
    static READS: OnceLock<ureq::Agent> = OnceLock::new();
    static WRITES: OnceLock<ureq::Agent> = OnceLock::new();
    let build = |idle: usize| {
        ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_millis(500))
            .timeout(node.config.request_timeout + Duration::from_secs(1))
            .max_idle_connections(idle)
            .max_idle_connections_per_host(idle)
            .redirects(0)
            .build()
    };
    if is_write {
        WRITES.get_or_init(|| build(0)).clone()
    } else {
        READS.get_or_init(|| build(64)).clone()
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
    let envelope: Envelope = serde_json::from_slice(&body)
        .map_err(|e| Error::BadRequest(format!("not a Raft message: {e}")))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb").unwrap(), "a/b");
        assert_eq!(percent_decode("a/b").unwrap(), "a/b");
        assert_eq!(percent_decode("%E2%82%AC+x").unwrap(), "€+x");
        assert_eq!(percent_decode("100%25").unwrap(), "100%");
        assert!(percent_decode("bad%zz").is_err());
        assert!(percent_decode("cut%4").is_err());
        assert!(percent_decode("%FF").is_err(), "not UTF-8");
    }
}
