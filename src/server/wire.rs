//! What the routes share: the [`Reply`] type, reading bodies and keys, and forwarding a client
//! request to the leader.

use std::borrow::Cow;
use std::io::Read;
use std::time::{Duration, Instant};

use percent_encoding::percent_decode_str;
use serde::Serialize;
use tiny_http::{Header, Method, Request, Response};

use super::node::Node;
use crate::error::{Error, Result};

pub(super) const FORWARDED: &str = "X-Raftlabkv-Forwarded";

/// Largest peer RPC body (a full AppendEntries batch, base64-encoded, with room to spare).
pub(super) const MAX_PEER_BODY: usize = 64 << 20;

/// An answer: status, body (JSON unless said otherwise) and extra headers.
pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) body: Vec<u8>,
    pub(super) content_type: &'static str,
    /// Extra headers: the consistency evidence of a `/kv/*` answer ([`Evidence`]),
    /// `Idempotent-Replayed`.
    pub(super) headers: Vec<(&'static str, String)>,
}

/// What a `/kv/*` answer was served at, sent as headers so a reader can see what it got:
/// `X-Raft-Term`, `X-Raft-Index` (the write's index, or the applied index a read was served
/// at — at or past its read index), `X-Raft-Leader` (the leader the answering node knows),
/// `X-Revision` (the store's) and `X-Consistency` (`linearizable`, `lease` or `stale`).
pub(super) struct Evidence {
    pub(super) term: u64,
    pub(super) index: u64,
    pub(super) leader: String,
    pub(super) revision: u64,
    pub(super) kind: ReadKind,
}

/// How a read is served: asked for with `consistency=` (default `linearizable`), and said in
/// `X-Consistency`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ReadKind {
    /// After a ReadIndex round (thesis §6.4); writes are this too.
    Linearizable,
    /// Under the leader's lease (thesis §6.4.1, `--lease-reads`): linearizable as long as no
    /// clock runs faster than the drift the lease allows for. Asked for and not held, it is
    /// served as `Linearizable`.
    Lease,
    /// From the answering node's state machine as it is.
    Stale,
}

impl ReadKind {
    /// The `consistency` parameter of a query string; an unknown value is refused.
    pub(super) fn of_query(query: &str) -> Result<ReadKind> {
        let mut kind = ReadKind::Linearizable;
        for raw in query.split('&').filter_map(|p| p.strip_prefix("consistency=")) {
            kind = match raw {
                "linearizable" => ReadKind::Linearizable,
                "lease" => ReadKind::Lease,
                "stale" => ReadKind::Stale,
                _ => {
                    return Err(Error::BadRequest(format!(
                        "consistency must be linearizable, lease or stale, not {raw:?}"
                    )));
                }
            };
        }
        Ok(kind)
    }

    /// As `X-Consistency` and the reads metric say it.
    pub(super) fn name(self) -> &'static str {
        match self {
            ReadKind::Linearizable => "linearizable",
            ReadKind::Lease => "lease",
            ReadKind::Stale => "stale",
        }
    }
}

/// Headers a forwarding node relays from the leader's answer.
const RELAYED_HEADERS: [&str; 6] = [
    "X-Raft-Term",
    "X-Raft-Index",
    "X-Raft-Leader",
    "X-Revision",
    "X-Consistency",
    "Idempotent-Replayed",
];

/// The request header of an exactly-once write ([`crate::kv::idempotency`]).
pub(super) const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

pub(super) const JSON: &str = "application/json";
impl Reply {
    pub(super) fn json(status: u16, value: &impl Serialize) -> Reply {
        match serde_json::to_vec(value) {
            Ok(body) => Reply::bytes(status, body, JSON),
            Err(e) => {
                let e = Error::Internal(format!("cannot encode the answer: {e}"));
                let body = e.to_json().to_string().into_bytes();
                Reply::bytes(e.status(), body, JSON)
            }
        }
    }

    pub(super) fn bytes(status: u16, body: Vec<u8>, content_type: &'static str) -> Reply {
        Reply { status, body, content_type, headers: Vec::new() }
    }

    pub(super) fn text(status: u16, text: String, content_type: &'static str) -> Reply {
        Reply::bytes(status, text.into_bytes(), content_type)
    }

    /// Adds the consistency evidence headers.
    pub(super) fn with_evidence(mut self, e: Evidence) -> Reply {
        let consistency = e.kind.name();
        self.headers.extend([
            ("X-Raft-Term", e.term.to_string()),
            ("X-Raft-Index", e.index.to_string()),
            ("X-Raft-Leader", e.leader),
            ("X-Revision", e.revision.to_string()),
            ("X-Consistency", consistency.to_string()),
        ]);
        self
    }

    pub(super) fn error(e: &Error) -> Reply {
        Reply::json(e.status(), &e.to_json())
    }
}

/// The value of header `name` (the first, if it is repeated).
pub(super) fn header<'r>(request: &'r Request, name: &str) -> Option<&'r str> {
    let matches = |h: &&Header| h.field.as_str().as_str().eq_ignore_ascii_case(name);
    request.headers().iter().find(matches).map(|h| h.value.as_str())
}

pub(super) const TEXT: &str = "text/plain; charset=utf-8";
pub(super) fn only(method: &Method, want: Method) -> Result<()> {
    if *method == want {
        Ok(())
    } else {
        Err(Error::MethodNotAllowed(format!("use {want} for this route, not {method}")))
    }
}

/// Reads the request body, refusing more than `limit` bytes before reading them all.
pub(super) fn read_body(request: &mut Request, limit: usize) -> Result<Vec<u8>> {
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
pub(super) fn decode_key<'a>(raw: &'a str, node: &Node) -> Result<Cow<'a, str>> {
    let key = percent_decode(raw)?;
    check_key(&key, node)?;
    Ok(key)
}

pub(super) fn check_key(key: &str, node: &Node) -> Result<()> {
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

/// Where a read is served after [`read_barrier`].
pub(super) enum Barrier {
    /// Here, now, as this kind of read.
    Here(ReadKind),
    /// By the leader: its answer.
    Forwarded(Reply),
}

/// Before a read of kind `wanted`: a stale read passes at once; a linearizable one confirms
/// leadership here (a lease read may skip the round while the lease holds), or is forwarded to
/// the leader. A read changes nothing, so it may be forwarded whenever another node is known to
/// lead — also when leadership moved while this node was being confirmed.
pub(super) fn read_barrier(
    node: &Node,
    request: &mut Request,
    body: &[u8],
    forwarded: bool,
    wanted: ReadKind,
) -> Result<Barrier> {
    let passed = match wanted {
        ReadKind::Stale => return Ok(Barrier::Here(ReadKind::Stale)),
        ReadKind::Lease => node.lease_barrier(),
        ReadKind::Linearizable => node.linearizable_barrier().map(|()| false),
    };
    let kind = |by_lease| if by_lease { ReadKind::Lease } else { ReadKind::Linearizable };
    match passed {
        Ok(by_lease) => Ok(Barrier::Here(kind(by_lease))),
        Err(e) => forward_read(request, body, forwarded, node, e).map(Barrier::Forwarded),
    }
}

/// A read barrier failed here with `e`: forward the read to the leader if one is known.
fn forward_read(
    request: &mut Request,
    body: &[u8],
    forwarded: bool,
    node: &Node,
    e: Error,
) -> Result<Reply> {
    if forwarded {
        return Err(e);
    }
    let leader = read_leader(node, e)?;
    forward(request, &leader, body, node)
}

/// Where a read whose barrier failed here with `e` goes: the leader `e` names, else the one this
/// node knows of; `e` itself when there is none.
pub(super) fn read_leader(node: &Node, e: Error) -> Result<String> {
    match e {
        Error::NotLeader { leader: Some(leader) } => Ok(leader.addr),
        e => node.leader_addr().ok_or(e),
    }
}

/// Relays a client request to the leader, signed as a peer request ([`super::auth`]), and its
/// answer back.
pub(super) fn forward(
    request: &Request,
    leader_addr: &str,
    body: &[u8],
    node: &Node,
) -> Result<Reply> {
    let url = format!("http://{leader_addr}{}", request.url());
    let is_write = *request.method() != Method::Get;
    let agent = forward_agent(node, is_write);
    let method = request.method().as_str();
    let mut req = agent
        .request(method, &url)
        .set(FORWARDED, &node.config.id)
        .set("Content-Type", "application/json");
    if let Some(key) = header(request, IDEMPOTENCY_KEY) {
        req = req.set(IDEMPOTENCY_KEY, key);
    }
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
    let headers = RELAYED_HEADERS
        .iter()
        .filter_map(|&name| response.header(name).map(|v| (name, v.to_string())))
        .collect();
    let mut out = Vec::new();
    response
        .into_reader()
        .take(MAX_PEER_BODY as u64)
        .read_to_end(&mut out)
        .map_err(|e| Error::OutcomeUnknown(format!("leader's answer was cut off: {e}")))?;
    Ok(Reply { status, body: out, content_type: JSON, headers })
}

/// The agent for forwarding. Reads share a keep-alive pool. Writes get a fresh connection each:
/// ureq re-sends a request it deems idempotent (GET, and also DELETE) on a new connection when a
/// *pooled* connection closes before the answer, so through a pool a forwarded DELETE could reach
/// the leader twice — and be applied twice, undoing a put committed in between — and a refused
/// resend would be reported as 503 "not applied" although the first copy may have been. Without
/// a pool every write is sent exactly once, and a failure to connect really means "not sent".
pub(super) fn forward_agent(node: &Node, is_write: bool) -> ureq::Agent {
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

/// Sends `reply` to `request`, counting it in the HTTP metrics.
pub(super) fn respond(node: &Node, request: Request, reply: Reply, started: Instant) {
    let pattern = route_pattern(request.url());
    node.metrics.events.http(pattern, reply.status, started.elapsed());
    let content_type = Header::from_bytes("Content-Type", reply.content_type).ok();
    let mut response = Response::from_data(reply.body).with_status_code(reply.status);
    if let Some(h) = content_type {
        response = response.with_header(h);
    }
    for (name, value) in &reply.headers {
        if let Ok(h) = Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            response = response.with_header(h);
        }
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

/// The route `url` belongs to, as a pattern (`/kv/get/{key}`): the label of the HTTP metrics,
/// which must not grow with the keys asked for.
fn route_pattern(url: &str) -> &'static str {
    let path = url.split_once('?').map_or(url, |(p, _)| p);
    const EXACT: &[&str] = &[
        "/kv/put",
        "/kv/all",
        "/kv/range",
        "/kv/txn",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb").unwrap(), "a/b");
        assert_eq!(percent_decode("a/b").unwrap(), "a/b");
        assert_eq!(percent_decode("%E2%82%AC+x").unwrap(), "€+x");
        assert_eq!(percent_decode("100%25").unwrap(), "100%");
        assert!(percent_decode("bad%zz").is_err());
        assert!(percent_decode("cut%4").is_err());
        assert!(percent_decode("%FF").is_err(), "not UTF-8");
    }
}
