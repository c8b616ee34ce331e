//! The key-value routes: `/kv/get/{key}`, `/kv/put`, `/kv/delete/{key}`, `/kv/all` (v1), and
//! `/kv/range`, `/kv/txn` (revisions, ranges, transactions; see [`crate::kv`]).
//!
//! Every answer carries its consistency evidence ([`Evidence`]: term, index, leader, revision,
//! linearizable or stale). Writes may carry an `Idempotency-Key` header: a retry with the same
//! key gets the first attempt's answer (with `Idempotent-Replayed: true`) and changes nothing;
//! the same key with another write is refused with 422 ([`crate::kv::idempotency`]).

use std::borrow::Cow;

use serde::Serialize;
use tiny_http::{Method, Request};

use super::auth::PendingCheck;
use super::node::Node;
use super::wire::{
    Barrier, Evidence, IDEMPOTENCY_KEY, JSON, ReadKind, Reply, check_key, decode_key, forward,
    header, only, percent_decode, read_barrier, read_body,
};
use crate::api::{GetReply, PutRequest, WriteReply};
use crate::error::{Error, Result};
use crate::kv::txn::Limits;
use crate::kv::{Applied, Bounds, Command, KvItem, Outcome, RangeSpec, Txn, TxnResponse};

/// What a key-value request is, once its path is known.
pub(super) struct KvRequest<'a, 'r> {
    pub(super) node: &'a Node,
    pub(super) request: &'r mut Request,
    pub(super) method: Method,
    pub(super) query: &'a str,
    /// The request came from a follower (it is never forwarded again).
    pub(super) forwarded: bool,
    /// For a forwarded request with a body: the MAC check that waits for the body.
    pub(super) signed: Option<PendingCheck<'a>>,
}

/// Routes `path` if it is a key-value route.
pub(super) fn route(path: &str, mut r: KvRequest<'_, '_>) -> Option<Result<Reply>> {
    let node = r.node;
    let wanted = ReadKind::of_query(r.query);
    let result = if let Some(raw_key) = path.strip_prefix("/kv/get/") {
        only(&r.method, Method::Get)
            .and_then(|_| decode_key(raw_key, node))
            .and_then(|key| get(&mut r, &key, wanted?))
    } else if let Some(raw_key) = path.strip_prefix("/kv/delete/") {
        only(&r.method, Method::Delete)
            .and_then(|_| decode_key(raw_key, node))
            .and_then(|key| write(&mut r, Command::Delete { key: key.into_owned() }, &[]))
    } else {
        match path {
            "/kv/put" => only(&r.method, Method::Post).and_then(|_| put(&mut r)),
            "/kv/all" => only(&r.method, Method::Get).and_then(|_| all(&mut r, wanted?)),
            "/kv/range" => match r.method {
                Method::Get => wanted.and_then(|kind| range(&mut r, kind)),
                Method::Delete => delete_range(&mut r),
                _ => Err(Error::MethodNotAllowed("use GET or DELETE for /kv/range".into())),
            },
            "/kv/txn" => only(&r.method, Method::Post).and_then(|_| txn(&mut r)),
            "/kv/get" | "/kv/get/" | "/kv/delete" | "/kv/delete/" => {
                Err(Error::BadRequest("the key is missing from the path".into()))
            }
            _ => return None,
        }
    };
    Some(result)
}

/// The evidence of a read served now from the state machine at (`index`, `revision`).
fn read_evidence(node: &Node, index: u64, revision: u64, kind: ReadKind) -> Evidence {
    let (term, leader) = node.known_leader();
    Evidence { term, index, leader, revision, kind }
}

/// [`read_barrier`] for a read without a body: `Ok(Err(reply))` when the leader answered it.
fn barrier(
    r: &mut KvRequest<'_, '_>,
    wanted: ReadKind,
) -> Result<std::result::Result<ReadKind, Reply>> {
    Ok(match read_barrier(r.node, r.request, &[], r.forwarded, wanted)? {
        Barrier::Here(kind) => {
            r.node.metrics.events.read(kind.name());
            Ok(kind)
        }
        Barrier::Forwarded(reply) => Err(reply),
    })
}

fn get(r: &mut KvRequest<'_, '_>, key: &str, wanted: ReadKind) -> Result<Reply> {
    let node = r.node;
    let kind = match barrier(r, wanted)? {
        Ok(kind) => kind,
        Err(reply) => return Ok(reply),
    };
    Ok(get_reply(node, key, kind))
}

/// The answer to a get whose read barrier (of `kind`) has passed: the key as the state machine
/// has it now.
pub(super) fn get_reply(node: &Node, key: &str, kind: ReadKind) -> Reply {
    let (reply, index, revision) = node.with_kv(|kv| {
        let reply = match kv.entry(key) {
            Some(e) => {
                let (create_revision, mod_revision, version) = e.revisions();
                Reply::json(
                    200,
                    &GetReply {
                        key: key.into(),
                        value: e.value().into(),
                        create_revision: Some(create_revision),
                        mod_revision: Some(mod_revision),
                        version: Some(version),
                    },
                )
            }
            // Absent, as of the evidence: a 404 says where it was looked for too.
            None => Reply::error(&Error::NotFound(format!("key not found: {key}"))),
        };
        (reply, kv.applied_index(), kv.revision())
    });
    reply.with_evidence(read_evidence(node, index, revision, kind))
}

fn all(r: &mut KvRequest<'_, '_>, wanted: ReadKind) -> Result<Reply> {
    let node = r.node;
    let kind = match barrier(r, wanted)? {
        Ok(kind) => kind,
        Err(reply) => return Ok(reply),
    };
    // Walked without the lock: the view shares the map (see `KvStore::view`).
    let view = node.kv.write().view();
    let index = node.with_kv(|kv| kv.applied_index());
    let body = view
        .values_json()
        .map_err(|e| Error::Internal(format!("cannot encode the key space: {e}")))?;
    let revision = view.revision;
    drop(view);
    Ok(Reply::bytes(200, body, JSON).with_evidence(read_evidence(node, index, revision, kind)))
}

/// `GET /kv/range?prefix=P` or `?start=A[&end=B]`, with `limit`, `keys_only`, `count_only`,
/// `order=asc|desc` and `consistency=stale`.
fn range(r: &mut KvRequest<'_, '_>, wanted: ReadKind) -> Result<Reply> {
    let spec = range_query(r.query, false)?;
    let node = r.node;
    let kind = match barrier(r, wanted)? {
        Ok(kind) => kind,
        Err(reply) => return Ok(reply),
    };
    // The lock is held only to share the map; the walk and the encoding run without it, so a
    // range of many keys does not stall writes (they go to the overlay meanwhile).
    let (view, index) = {
        let mut kv = node.kv.write();
        (kv.view(), kv.applied_index())
    };
    let body = view.range_json(&spec)?;
    let revision = view.revision;
    drop(view);
    Ok(Reply::bytes(200, body, JSON).with_evidence(read_evidence(node, index, revision, kind)))
}

/// The range a query string names. `delete`: only the bounds are allowed.
fn range_query(query: &str, delete: bool) -> Result<RangeSpec> {
    let mut spec = RangeSpec::default();
    let flag = |name: &str, v: &str| match v {
        "" | "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(Error::BadRequest(format!("{name} must be true or false, not {v:?}"))),
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, raw) = pair.split_once('=').unwrap_or((pair, ""));
        let value = || -> Result<String> {
            percent_decode(raw)
                .map(Cow::into_owned)
                .map_err(|e| Error::BadRequest(format!("{name}: {}", e.message())))
        };
        match (name, delete) {
            ("prefix", _) => spec.prefix = Some(value()?),
            ("start", _) => spec.start = Some(value()?),
            ("end", _) => spec.end = Some(value()?),
            ("consistency", false) => {} // checked by `ReadKind::of_query`
            ("limit", false) => {
                spec.limit = Some(raw.parse().map_err(|_| {
                    Error::BadRequest(format!("limit must be a non-negative integer, not {raw:?}"))
                })?)
            }
            ("keys_only", false) => spec.keys_only = flag(name, raw)?,
            ("count_only", false) => spec.count_only = flag(name, raw)?,
            ("order", false) => {
                spec.desc = match raw {
                    "asc" => false,
                    "desc" => true,
                    _ => {
                        return Err(Error::BadRequest(format!(
                            "order must be asc or desc, not {raw:?}"
                        )));
                    }
                }
            }
            _ => {
                return Err(Error::BadRequest(format!(
                    "unknown range parameter {name:?} (prefix, start, end{})",
                    if delete { "" } else { ", limit, keys_only, count_only, order, consistency" }
                )));
            }
        }
    }
    Bounds::of(&spec)?;
    Ok(spec)
}

/// `DELETE /kv/range?prefix=P` (or `start`/`end`): one entry, one revision, the count deleted.
fn delete_range(r: &mut KvRequest<'_, '_>) -> Result<Reply> {
    let range = range_query(r.query, true)?;
    write(r, Command::DeleteRange { range }, &[])
}

/// `POST /kv/put` `{"key", "value", "if_revision"?}`.
fn put(r: &mut KvRequest<'_, '_>) -> Result<Reply> {
    let node = r.node;
    let body = read_body(r.request, put_body_limit(node))?;
    if let Some(check) = r.signed.take() {
        check.verify(&body)?;
    }
    let command = parse_put(node, &body)?;
    write(r, command, &body)
}

/// The most a put's body may take: its key and value, each character escaped (`\u00XX`), and
/// room for the rest.
fn put_body_limit(node: &Node) -> usize {
    6 * (node.config.max_key_bytes + node.config.max_value_bytes) + 1024
}

/// A put's body, checked, as the command it proposes.
fn parse_put(node: &Node, body: &[u8]) -> Result<Command> {
    let PutRequest { key, value, if_revision } = serde_json::from_slice(body).map_err(|e| {
        Error::BadRequest(format!(
            "body must be JSON {{\"key\":..,\"value\":..}} (and \"if_revision\": a number, if \
             any): {e}"
        ))
    })?;
    check_key(&key, node)?;
    if value.len() > node.config.max_value_bytes {
        return Err(Error::TooLarge(format!(
            "value of {} bytes is over the {}-byte limit",
            value.len(),
            node.config.max_value_bytes
        )));
    }
    Ok(Command::Put { key: key.into_owned(), value: value.into_owned(), if_revision })
}

/// For [`super::answers`]: reads and checks a `POST /kv/put` from a client, as [`put`] does;
/// returns the command, its key and the body.
pub(super) fn put_command(
    node: &Node,
    request: &mut Request,
) -> Result<(Command, String, Vec<u8>)> {
    let body = read_body(request, put_body_limit(node))?;
    let command = parse_put(node, &body)?;
    let key = match &command {
        Command::Put { key, .. } => key.clone(),
        _ => String::new(),
    };
    Ok((command, key, body))
}

/// `POST /kv/txn`: checked, then proposed as one entry — or, when it writes nothing, served as a
/// linearizable read without one.
fn txn(r: &mut KvRequest<'_, '_>) -> Result<Reply> {
    let node = r.node;
    let limit = node.config.max_txn_ops * (node.config.max_key_bytes * 2 + 256)
        + 4 * node.config.max_value_bytes
        + 4096;
    let body = read_body(r.request, limit)?;
    if let Some(check) = r.signed.take() {
        check.verify(&body)?;
    }
    // An object: serde would also take a JSON array for the struct.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Error::BadRequest("the transaction must be a JSON object".into()));
    }
    let txn: Txn = serde_json::from_slice(&body).map_err(|e| {
        Error::BadRequest(format!(
            "body must be a transaction {{\"compare\": [..], \"success\": [..], \"failure\": \
             [..]}}: {e}"
        ))
    })?;
    let limits = Limits {
        max_ops: node.config.max_txn_ops,
        max_key_bytes: node.config.max_key_bytes,
        max_value_bytes: node.config.max_value_bytes,
    };
    txn.validate(&limits)?;
    idempotency_key(r.request)?;
    if !txn.is_read_only() {
        return write(r, Command::Txn { txn }, &body);
    }
    let kind = match read_barrier(node, r.request, &body, r.forwarded, ReadKind::Linearizable)? {
        Barrier::Here(kind) => kind,
        Barrier::Forwarded(reply) => return Ok(reply),
    };
    node.metrics.events.read(kind.name());
    let view = node.kv.write().view();
    let index = node.with_kv(|kv| kv.applied_index());
    let Outcome::Txn { succeeded, responses } = view.read_txn(&txn) else {
        return Err(Error::Internal("a read-only transaction gave no answer".into()));
    };
    let reply = TxnReply { succeeded, revision: view.revision, index, term: None, responses };
    Ok(Reply::json(200, &reply).with_evidence(read_evidence(node, index, view.revision, kind)))
}

/// The answer to a transaction.
#[derive(Serialize)]
struct TxnReply {
    succeeded: bool,
    revision: u64,
    /// The entry's index (a read-only transaction: the applied index it was served at).
    index: u64,
    /// The entry's term (none for a read-only transaction).
    #[serde(skip_serializing_if = "Option::is_none")]
    term: Option<u64>,
    responses: Vec<TxnResponse>,
}

/// The `Idempotency-Key` header, checked: 1 to 256 visible ASCII characters.
fn idempotency_key(request: &Request) -> Result<Option<String>> {
    let Some(key) = header(request, IDEMPOTENCY_KEY) else { return Ok(None) };
    let key = key.trim();
    let visible = |c: char| c.is_ascii_graphic();
    if key.is_empty() || key.len() > 256 || !key.chars().all(visible) {
        return Err(Error::BadRequest(format!(
            "the {IDEMPOTENCY_KEY} header must be 1 to 256 visible ASCII characters"
        )));
    }
    Ok(Some(key.to_string()))
}

/// Proposes `command` (remembered under the request's idempotency key, if any) and answers once
/// it is applied; a follower forwards the request (with its `body`) to the leader.
fn write(r: &mut KvRequest<'_, '_>, command: Command, body: &[u8]) -> Result<Reply> {
    let node = r.node;
    let key = idempotency_key(r.request)?;
    let written_key = match &command {
        Command::Put { key, .. } | Command::Delete { key } => Some(key.clone()),
        _ => None,
    };
    match node.write(command, key.as_deref()) {
        Ok(applied) => Ok(answer(node, &applied, written_key.as_deref())),
        // Only a refusal to propose is forwarded: nothing was proposed, so the leader can take it.
        Err(Error::NotLeader { leader: Some(leader) }) if !r.forwarded => {
            forward(r.request, &leader.addr, body, node)
        }
        Err(e) => Err(e),
    }
}

/// The answer to an applied write, by what it did.
pub(super) fn answer(node: &Node, applied: &Applied, key: Option<&str>) -> Reply {
    let Applied { index, term, revision, .. } = *applied;
    let reply = match &applied.outcome {
        Outcome::Written => {
            Reply::json(200, &WriteReply::ok(key.unwrap_or_default(), index, term, revision))
        }
        Outcome::Deleted(deleted) => Reply::json(
            200,
            &serde_json::json!({"status": "ok", "deleted": deleted, "index": index,
                                "term": term, "revision": revision}),
        ),
        Outcome::Refused { current } => Reply::json(412, &refused(current.as_ref(), revision)),
        Outcome::Txn { succeeded, responses } => Reply::json(
            200,
            &TxnReply {
                succeeded: *succeeded,
                revision,
                index,
                term: Some(term),
                responses: responses.clone(),
            },
        ),
        Outcome::KeyReused { key } => Reply::error(&Error::IdempotencyKeyReused(format!(
            "idempotency key {key:?} was used for another write; nothing was applied"
        ))),
    };
    let (_, leader) = node.known_leader();
    let mut reply = reply.with_evidence(Evidence {
        term,
        index,
        leader,
        revision,
        kind: ReadKind::Linearizable,
    });
    if applied.replayed {
        reply.headers.push(("Idempotent-Replayed", "true".into()));
    }
    reply
}

/// The 412 body of a conditional put whose condition failed: the key as it is.
fn refused(current: Option<&KvItem>, revision: u64) -> serde_json::Value {
    let message = match current {
        Some(kv) => format!(
            "the key's mod_revision is {}, not the one required; nothing was written",
            kv.mod_revision
        ),
        None => "the key does not exist; nothing was written".to_string(),
    };
    serde_json::json!({
        "error": "precondition_failed",
        "message": message,
        "current": current,
        "revision": revision,
    })
}
