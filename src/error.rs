//! One error type for the whole crate, and the one place where errors become HTTP status codes.
//!
//! Every failure a client can see has a stable machine-readable `code` (the `"error"` field of the
//! JSON error body) and a human message. The status codes follow one rule each:
//!
//! | error | status | meaning for the caller |
//! |---|---|---|
//! | `BadRequest` | 400 | the request is malformed; do not retry it unchanged |
//! | `Unauthorized` | 401 | a peer request without valid credentials (no or a wrong `X-Raft-Auth`, a stale timestamp; see `server::auth`) |
//! | `WrongCluster` | 403 | a peer request from a node of another cluster (`X-Raft-Cluster` differs) |
//! | `NotFound` | 404 | the key (or route) does not exist |
//! | `MethodNotAllowed` | 405 | wrong HTTP method for the route |
//! | `Conflict` | 409 | the request conflicts with one in progress (a membership change not yet committed, a leadership transfer under way): retry once it is done |
//! | `TooManyRequests` | 429 | too many at once (more than 16 viewers of `/debug/events`): retry later |
//! | `TooLarge` | 413 | key, value or body over the configured limit |
//! | `IdempotencyKeyReused` | 422 | the `Idempotency-Key` was used before for another write: nothing was applied; use a new key for a new write |
//! | `PreconditionFailed` | 412 | a condition the request depends on does not hold (the strict membership check, a learner not caught up); the message says which |
//! | `NotLeader` | 503 | **not applied and will not be**: this node does not lead; the body names the leader (`"leader": {"id", "addr"}`) when known |
//! | `Unavailable` | 503 | **not applied and will not be** (no quorum, leadership lost, shutting down): safe to retry |
//! | `OutcomeUnknown` | 504 | proposed, but the commit was not seen in time: it may or may not apply |
//! | `Config` | 500 | an operator's invalid configuration: a node refuses to start with it (never an HTTP answer in practice) |
//! | `Storage`, `Internal` | 500 | a bug or a broken disk: the node logs it loudly |

use std::fmt;

/// The leader a node names when it refuses a request because it does not lead: where to send the
/// request instead. The JSON error body carries it as `"leader": {"id": .., "addr": ..}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LeaderHint {
    /// The leader's node id (a `raft::NodeId`).
    pub id: String,
    /// Where the refusing node reaches the leader (`host:port`), which also serves clients. The
    /// consensus core knows ids only and leaves it empty; the server fills it in before the
    /// error leaves the node (and drops a hint whose address it does not know).
    pub addr: String,
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, from the client's point of view and from the disk's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Malformed input: bad JSON, a missing field, a bad key, garbage on a peer endpoint.
    BadRequest(String),
    /// A peer request that could not be authenticated: identity headers missing, no or a wrong
    /// MAC, a stale timestamp (`server::auth`). Refused before its body is parsed.
    Unauthorized(String),
    /// A peer request from a node that belongs to another cluster: its cluster id differs.
    /// (403, not 409: 409 means "a change is in progress" for membership changes.)
    WrongCluster(String),
    /// The key or route does not exist.
    NotFound(String),
    /// The route exists but not with this HTTP method.
    MethodNotAllowed(String),
    /// A key, value or request body over its limit.
    TooLarge(String),
    /// Too many of something at once (viewers of `/debug/events`): try again later.
    TooManyRequests(String),
    /// The request conflicts with one in progress (a configuration change not yet committed).
    Conflict(String),
    /// A condition the request depends on does not hold (a learner that has not caught up, a
    /// change after which the voters still heard from would not be a quorum).
    PreconditionFailed(String),
    /// An `Idempotency-Key` sent before with another write (422): nothing was applied.
    IdempotencyKeyReused(String),
    /// This node does not lead, so it did not propose or read anything: safe to retry, best at
    /// `leader` (None: no leader is known yet, an election is under way).
    NotLeader {
        /// The leader this node knows of.
        leader: Option<LeaderHint>,
    },
    /// The request was not applied and will not be (no quorum, leadership lost before the read
    /// was confirmed, shutting down). Safe to retry, on this node or another.
    Unavailable(String),
    /// The write was proposed, but its commit was not seen in time: it may still apply, or not.
    OutcomeUnknown(String),
    /// A configuration that cannot work (an empty election-timeout range, a node that is its
    /// own peer): the operator's mistake, found before the node starts.
    Config(String),
    /// The disk failed us (I/O error, corrupt record). Names the file and offset where it can.
    Storage(String),
    /// Anything else: a bug.
    Internal(String),
}

impl Error {
    /// The stable code sent as `"error"` in JSON error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            Error::BadRequest(_) => "bad_request",
            Error::Unauthorized(_) => "unauthorized",
            Error::WrongCluster(_) => "wrong_cluster",
            Error::NotFound(_) => "not_found",
            Error::MethodNotAllowed(_) => "method_not_allowed",
            Error::TooLarge(_) => "too_large",
            Error::Conflict(_) => "conflict",
            Error::TooManyRequests(_) => "too_many_requests",
            Error::PreconditionFailed(_) => "precondition_failed",
            Error::IdempotencyKeyReused(_) => "idempotency_key_reused",
            Error::NotLeader { .. } => "not_leader",
            Error::Unavailable(_) => "unavailable",
            Error::OutcomeUnknown(_) => "outcome_unknown",
            Error::Config(_) => "invalid_config",
            Error::Storage(_) => "storage",
            Error::Internal(_) => "internal",
        }
    }

    /// The HTTP status this error is answered with (the table in the module docs).
    pub fn status(&self) -> u16 {
        match self {
            Error::BadRequest(_) => 400,
            Error::Unauthorized(_) => 401,
            Error::WrongCluster(_) => 403,
            Error::NotFound(_) => 404,
            Error::MethodNotAllowed(_) => 405,
            Error::TooLarge(_) => 413,
            Error::Conflict(_) => 409,
            Error::TooManyRequests(_) => 429,
            Error::PreconditionFailed(_) => 412,
            Error::IdempotencyKeyReused(_) => 422,
            Error::NotLeader { .. } | Error::Unavailable(_) => 503,
            Error::OutcomeUnknown(_) => 504,
            Error::Config(_) | Error::Storage(_) | Error::Internal(_) => 500,
        }
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        match self {
            Error::NotLeader { leader: Some(_) } => "not the leader; retry at the leader it names",
            Error::NotLeader { leader: None } => "not the leader, and no leader is known; retry",
            Error::BadRequest(m)
            | Error::Unauthorized(m)
            | Error::WrongCluster(m)
            | Error::NotFound(m)
            | Error::MethodNotAllowed(m)
            | Error::TooLarge(m)
            | Error::Conflict(m)
            | Error::TooManyRequests(m)
            | Error::PreconditionFailed(m)
            | Error::IdempotencyKeyReused(m)
            | Error::Unavailable(m)
            | Error::OutcomeUnknown(m)
            | Error::Config(m)
            | Error::Storage(m)
            | Error::Internal(m) => m,
        }
    }

    /// Rebuilds an error from an HTTP status and a JSON error body's message (used by the client
    /// and by request forwarding, so an error relayed from the leader keeps its meaning).
    pub fn from_status(status: u16, message: String) -> Error {
        match status {
            400 => Error::BadRequest(message),
            401 => Error::Unauthorized(message),
            403 => Error::WrongCluster(message),
            404 => Error::NotFound(message),
            405 => Error::MethodNotAllowed(message),
            409 => Error::Conflict(message),
            412 => Error::PreconditionFailed(message),
            413 => Error::TooLarge(message),
            422 => Error::IdempotencyKeyReused(message),
            429 => Error::TooManyRequests(message),
            503 => Error::Unavailable(message),
            504 => Error::OutcomeUnknown(message),
            _ => Error::Internal(format!("HTTP {status}: {message}")),
        }
    }

    /// The JSON body `{"error": code, "message": text}`, with `"leader": {"id", "addr"}` for a
    /// [`Error::NotLeader`] that knows the leader.
    pub fn to_json(&self) -> serde_json::Value {
        let mut body = serde_json::json!({ "error": self.code(), "message": self.message() });
        if let Error::NotLeader { leader: Some(l) } = self {
            body["leader"] = serde_json::json!({ "id": l.id, "addr": l.addr });
        }
        body
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotLeader { leader: Some(l) } => {
                write!(f, "{}: not the leader; the leader is {} at {}", self.code(), l.id, l.addr)
            }
            _ => write!(f, "{}: {}", self.code(), self.message()),
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_round_trips_through_its_status() {
        for e in [
            Error::BadRequest("a".into()),
            Error::Unauthorized("u".into()),
            Error::WrongCluster("w".into()),
            Error::NotFound("b".into()),
            Error::MethodNotAllowed("c".into()),
            Error::TooLarge("d".into()),
            Error::Conflict("g".into()),
            Error::TooManyRequests("t".into()),
            Error::PreconditionFailed("h".into()),
            Error::IdempotencyKeyReused("i".into()),
            Error::Unavailable("e".into()),
            Error::OutcomeUnknown("f".into()),
        ] {
            let back = Error::from_status(e.status(), e.message().to_string());
            assert_eq!(back, e);
            assert_eq!(e.to_json()["error"], e.code());
        }
        assert_eq!(Error::Storage("x".into()).status(), 500);
    }

    #[test]
    fn not_leader_is_a_503_naming_the_leader() {
        let hint = LeaderHint { id: "node2".into(), addr: "127.0.0.1:8081".into() };
        let e = Error::NotLeader { leader: Some(hint) };
        assert_eq!(e.status(), 503);
        let body = e.to_json();
        assert_eq!(body["error"], "not_leader");
        assert!(body["message"].is_string());
        assert_eq!(body["leader"], serde_json::json!({"id": "node2", "addr": "127.0.0.1:8081"}));
        assert!(e.to_string().contains("node2 at 127.0.0.1:8081"), "{e}");
        let none = Error::NotLeader { leader: None }.to_json();
        assert!(none.get("leader").is_none(), "{none}");
    }
}
