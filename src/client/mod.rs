//! A blocking client for RaftLabKV, and the building blocks of the `raftlabkv-client` tool.
//!
//! ```no_run
//! use raftlabkv::client::Client;
//!
//! let client = Client::new(vec!["127.0.0.1:8080".into(), "127.0.0.1:8081".into()]);
//! let put = client.put("greeting", "hello world")?;
//! println!("committed at index {} in term {}", put.index, put.term);
//! assert_eq!(client.get("greeting")?, Some("hello world".to_string()));
//! client.delete("greeting")?;
//! # Ok::<(), raftlabkv::Error>(())
//! ```
//!
//! # What the client talks to
//!
//! Every node of the cluster serves the same small JSON-over-HTTP API (`GET /kv/get/{key}`,
//! `POST /kv/put`, `DELETE /kv/delete/{key}`, `GET /kv/all`, `GET /status`). Any node accepts any
//! request: a follower forwards it to the leader and relays the answer. So the client only ever
//! needs *one* reachable node, and it is always correct to send a request to any of them.
//!
//! # Leader discovery
//!
//! Sending straight to the leader saves the follower's extra hop, so the client keeps a cached
//! leader address and sends there when it has one. It learns the leader in two ways:
//!
//! 1. **From `/status`.** Before an operation, if no leader is cached (and at most once a second),
//!    the client asks one node for its `/status`; if that node is the leader, or knows who is
//!    (`leaderAddr`), the address is cached. [`Client::leader`] does the same on demand and waits
//!    for an election to finish if there is none yet.
//! 2. **From error hints.** A node that does not lead refuses with `503` and the error code
//!    `not_leader`; its body names the leader when it knows one:
//!    `{"error":"not_leader","message":..,"leader":{"id":"node2","addr":"127.0.0.1:8081"}}`
//!    ("I am not the leader, try there"). The client caches `leader.addr` and retries there at
//!    once. (A bare `"leaderAddr"` field in an error body is followed the same way.)
//!
//! The cache is dropped as soon as the cached leader fails to answer, answers 503 without a better
//! hint, or leaves a write's outcome unknown; the next operation then goes to the configured
//! servers in turn (and discovers again). A stale cache is therefore harmless: at worst it costs
//! one failed attempt.
//!
//! # Retry rules
//!
//! Whether a failed request may be sent again depends on whether it can have taken effect:
//!
//! | what happened | read (`get`, `get_all`, `status`) | write (`put`, `delete`) |
//! |---|---|---|
//! | could not connect (refused, unreachable, DNS) | retry on the next server | retry on the next server |
//! | `503` (`not_leader`, `unavailable`) | retry (follow the leader hint if given) | retry (follow the leader hint if given) |
//! | `504` (server: outcome unknown) | retry | retry **with the same `Idempotency-Key`** (without one: [`Error::OutcomeUnknown`], not retried) |
//! | timeout or broken connection after the request was sent | retry on the next server | the same |
//! | other 5xx | retry | returned as is |
//! | 4xx (`400`, `404`, `405`, `413`) | returned (`404` on `get` is `Ok(None)`) | returned as is |
//!
//! Retries wait with exponential backoff and jitter (starting at
//! [`ClientOptions::backoff_initial`], doubling up to [`ClientOptions::backoff_max`], each wait a
//! random time between half and all of the current step) and stop when
//! [`ClientOptions::retry_deadline`] has passed since the operation started; the last error is then
//! returned as [`Error::Unavailable`]. A redirect to a freshly learnt leader is tried without
//! waiting.
//!
//! ## Exactly-once retries
//!
//! Every write gets a fresh random `Idempotency-Key` (unless
//! [`ClientOptions::idempotent_writes`] is off). The state machine remembers the answer of the
//! write that used a key ([`crate::kv::idempotency`]), so sending the same write again with the
//! same key cannot apply it twice: it is answered with the first attempt's index and revision (or
//! applied now, if the first never was). The client therefore retries a 504 or a lost answer
//! like a 503, until a definite answer; only if the deadline passes first does it report
//! [`Error::OutcomeUnknown`] (an attempt may have been applied). The section below is why, without
//! a key, it must not.
//!
//! ## Why a 504 (or a lost response) on a write without a key is not retried
//!
//! A `503` is a promise from the server: *this request was not applied and will not be*. Sending
//! it again cannot apply it twice. A `504` says the opposite: the leader *did* append the write to
//! its log, but did not see it commit in time. It may still commit (a majority may already hold
//! it, and the next leader will finish the job), or it may be lost with the old leader. The same
//! is true when the connection breaks or times out after the request went out: the server may
//! have received it and applied it, and only the answer was lost.
//!
//! Retrying blindly would turn "maybe once" into "maybe twice". For `put(k, v)` that looks harmless,
//! but it is not: between the two copies another client may have written `k`, and the retried
//! copy would silently overwrite the newer value (the same goes for a retried `delete`). Without
//! a key the server cannot detect duplicates, so the only honest answer is to tell the
//! caller: [`Error::OutcomeUnknown`]. The caller knows what the write meant and can decide, for
//! example by reading the key back.
//!
//! Reads have no effect, so any read may be repeated on any node.
//!
//! ## What counts as "sent"
//!
//! The client classifies transport errors from ureq: a failure to *connect* (refused, DNS,
//! connect timeout) means nothing reached the server, so it is always retried. Any other
//! transport error (read timeout, reset, a garbled response) may come after the server received
//! the request, so it is treated as "maybe sent". This is conservative: a connection that had been
//! idle in the keep-alive pool and was reset by a restarted server is also reported as
//! `OutcomeUnknown` for a write, even though the request probably never arrived.
//!
//! # Keys in paths
//!
//! `get` and `delete` put the key into the URL path, so it is percent-encoded with
//! [`percent_encode`]: every byte of its UTF-8 form except the unreserved characters
//! `A-Z a-z 0-9 - . _ ~` becomes `%XX`, including `/` (so `a/b` is one path segment, `a%2Fb`) and
//! `%` itself. Three keys cannot be addressed in a path at all and are refused before anything is
//! sent, for every operation including `put` (so that what the client can write it can also read):
//! the empty key, `.` and `..` (URL libraries resolve the last two as "this directory" and
//! "parent directory", even when percent-encoded).
//!
//! # Connections
//!
//! One [`Client`] owns one `ureq::Agent`, which keeps connections alive and reuses them. A `Client`
//! is `Send + Sync`: share it between threads (behind an `Arc`) or give each thread its own.
//! Everything is blocking; there is no async runtime.

pub mod bench;
pub mod coord;
pub mod explain;
mod kv;
mod members;
mod options;
mod route;
pub mod shell;
pub mod status_table;

pub use kv::{CasResult, PutIf, TxnBuilder, TxnResult};
pub(crate) use route::{classify, make_agent, make_write_agent};
use route::{failure_to_error, no_servers};

/// How a read is served (the server's `consistency` parameter).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Consistency {
    /// After a ReadIndex round: linearizable, with no clock assumption (the default).
    #[default]
    Linearizable,
    /// From the leader's lease where the servers run with `--lease-reads` (no round; assumes
    /// bounded clock drift), else as `Linearizable`.
    Lease,
    /// The answering node's local state, which may lag.
    Stale,
}

impl Consistency {
    /// The query string for it (`""` for the default).
    pub fn query(self) -> &'static str {
        match self {
            Consistency::Linearizable => "",
            Consistency::Lease => "?consistency=lease",
            Consistency::Stale => "?consistency=stale",
        }
    }
}
pub use options::{ClientBuilder, ClientOptions};

use std::collections::BTreeMap;
use std::io::Read;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::Rng;
use serde::{Deserialize, Serialize};

pub use crate::api::Status;
use crate::api::{AllReply, ErrorBody, GetReply, PutRequest, WriteReply, encode_path_segment};
use crate::error::{Error, Result};
use crate::raft::{Index, Term};

/// The servers used when none are given (the three nodes of a local demo cluster).
pub const DEFAULT_SERVERS: &str = "127.0.0.1:8080,127.0.0.1:8081,127.0.0.1:8082";

/// Largest response body the client reads (a `get_all` of a big store can be large).
const MAX_BODY: u64 = 1 << 30;

/// How long an automatic leader discovery (one `/status`) may take before it is abandoned.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(1);

/// Longest request or connect timeout (and backoff step) a client accepts.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Shortest backoff step, so that a zero setting cannot make a busy loop.
const MIN_BACKOFF: Duration = Duration::from_millis(1);

/// Minimum time between two automatic leader discoveries.
const REDISCOVER_INTERVAL: Duration = Duration::from_secs(1);

/// What a successful `put` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResult {
    /// The key written.
    pub key: String,
    /// The log index at which the write committed.
    pub index: Index,
    /// The term of the leader that committed it.
    pub term: Term,
    /// The store's revision once it applied (0 from a server before revisions).
    #[serde(default)]
    pub revision: u64,
}

/// A blocking RaftLabKV client: finds the leader, retries what is safe to retry, and reports
/// what is not (see the [module docs](self)).
#[derive(Debug)]
pub struct Client {
    servers: Vec<String>,
    options: ClientOptions,
    /// Reads: a keep-alive pool.
    agent: ureq::Agent,
    /// Writes: no pool (see [`make_write_agent`]).
    write_agent: ureq::Agent,
    state: Mutex<RouteState>,
}

/// Where requests go next.
#[derive(Debug, Default)]
struct RouteState {
    /// The cached leader address, if any.
    leader: Option<String>,
    /// Index into `servers` of the next server to try when no leader is cached.
    next: usize,
    /// When the last automatic discovery started.
    last_discovery: Option<Instant>,
}

/// Is the request a read (idempotent, always retryable) or a write?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
}

/// One HTTP request, ready to be sent to any server.
struct Call<'a> {
    method: &'static str,
    /// Path and query, starting with `/`.
    path: &'a str,
    /// JSON body, for POST.
    body: Option<&'a str>,
    kind: Kind,
    /// A write's `Idempotency-Key`: with one, a write whose outcome is unknown is retried.
    idempotency_key: Option<String>,
    /// A 412 answer is an answer (a conditional write that did not hold), not an error.
    accept_412: bool,
}

impl<'a> Call<'a> {
    fn read(path: &'a str) -> Call<'a> {
        Call {
            method: "GET",
            path,
            body: None,
            kind: Kind::Read,
            idempotency_key: None,
            accept_412: false,
        }
    }
}

/// Why one attempt failed, in the terms the retry rules need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Nothing reached the server (connection refused, DNS, connect timeout): always retryable.
    NotSent(String),
    /// The request may have reached the server, but no (readable) answer came back.
    MaybeSent(String),
    /// The server answered with an error status.
    Status { error: Error, leader_addr: Option<String> },
    /// The request cannot work anywhere (a malformed server address).
    Fatal(Error),
}

impl Client {
    /// A client for the given servers (`host:port`, an `http://` prefix is accepted), with default
    /// options. An empty list is allowed, but every operation then fails with `Unavailable`.
    pub fn new(servers: Vec<String>) -> Client {
        Client::with_options(servers, ClientOptions::default())
    }

    /// A builder, to set options before the client is made.
    pub fn builder(servers: Vec<String>) -> ClientBuilder {
        ClientBuilder { servers, options: ClientOptions::default() }
    }

    /// A client with explicit options. Out-of-range options are brought into range: timeouts
    /// at most a day, the first backoff step at least 1 ms, the largest at least the first.
    pub fn with_options(servers: Vec<String>, mut options: ClientOptions) -> Client {
        options.request_timeout = options.request_timeout.min(MAX_TIMEOUT);
        options.connect_timeout = options.connect_timeout.min(MAX_TIMEOUT);
        options.backoff_initial = options.backoff_initial.clamp(MIN_BACKOFF, MAX_TIMEOUT);
        options.backoff_max = options.backoff_max.clamp(options.backoff_initial, MAX_TIMEOUT);
        let servers: Vec<String> =
            servers.iter().map(|s| normalize_addr(s)).filter(|s| !s.is_empty()).collect();
        Client {
            agent: make_agent(&options),
            write_agent: make_write_agent(&options),
            servers,
            options,
            state: Mutex::new(RouteState::default()),
        }
    }

    /// The configured server addresses, normalized to `host:port`.
    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    /// The options in force.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// The cached leader address, without asking anyone.
    pub fn cached_leader(&self) -> Option<String> {
        self.state.lock().leader.clone()
    }

    /// Writes `key = value` through the leader and waits for it to commit.
    ///
    /// Errors: `BadRequest`/`TooLarge` from the server, `Unavailable` if no leader could take the
    /// write before the retry deadline (it was **not** applied), `OutcomeUnknown` if the write was
    /// sent but its outcome could not be learnt (it may or may not be applied).
    pub fn put(&self, key: &str, value: &str) -> Result<PutResult> {
        check_key(key)?;
        let body =
            to_json(&PutRequest { key: key.into(), value: value.into(), if_revision: None })?;
        let text = self.execute(&self.write_call("POST", "/kv/put", Some(&body)))?;
        let reply: WriteReply = serde_json::from_str(&text).map_err(|e| {
            Error::Internal(format!(
                "the put of {key:?} succeeded (HTTP 200) but its answer could not be parsed: {e}"
            ))
        })?;
        Ok(PutResult {
            key: reply.key.into_owned(),
            index: reply.index,
            term: reply.term,
            revision: reply.revision.unwrap_or_default(),
        })
    }

    /// Linearizable read: the value of `key`, or `None` if it does not exist.
    pub fn get(&self, key: &str) -> Result<Option<String>> {
        self.get_with(key, Consistency::Linearizable)
    }

    /// Stale read: the value in the answering node's local state, which may lag the leader.
    /// Cheaper (no round of heartbeats), and works without a quorum.
    pub fn get_stale(&self, key: &str) -> Result<Option<String>> {
        self.get_with(key, Consistency::Stale)
    }

    /// A read served as `consistency` says ([`Consistency::Lease`]: from the leader's lease).
    pub fn get_with(&self, key: &str, consistency: Consistency) -> Result<Option<String>> {
        check_key(key)?;
        let path = format!("/kv/get/{}{}", encode_path_segment(key), consistency.query());
        let call = Call::read(&path);
        let text = match self.execute(&call) {
            Ok(text) => text,
            Err(Error::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let answer: GetReply = serde_json::from_str(&text)
            .map_err(|e| Error::Internal(format!("unreadable answer to get {key:?}: {e}")))?;
        Ok(Some(answer.value.into_owned()))
    }

    /// Deletes `key` (succeeds also when it does not exist). Same errors as [`Client::put`].
    pub fn delete(&self, key: &str) -> Result<()> {
        check_key(key)?;
        let path = format!("/kv/delete/{}", encode_path_segment(key));
        self.execute(&self.write_call("DELETE", &path, None))?;
        Ok(())
    }

    /// Linearizable read of the whole store.
    pub fn get_all(&self) -> Result<BTreeMap<String, String>> {
        self.get_all_inner("/kv/all")
    }

    /// Stale read of the whole store (the answering node's local state).
    pub fn get_all_stale(&self) -> Result<BTreeMap<String, String>> {
        self.get_all_inner("/kv/all?consistency=stale")
    }

    fn get_all_inner(&self, path: &str) -> Result<BTreeMap<String, String>> {
        let text = self.execute(&Call::read(path))?;
        serde_json::from_str::<AllReply>(&text)
            .map_err(|e| Error::Internal(format!("unreadable answer to getall: {e}")))
    }

    /// The `/status` of one server (`host:port`), in a single attempt: a status is a diagnostic,
    /// and a node that is down should be reported quickly (as `Unavailable`).
    pub fn status(&self, server: &str) -> Result<Status> {
        let server = normalize_addr(server);
        let call = Call::read("/status");
        match self.attempt(&server, &call, self.options.request_timeout) {
            Ok(text) => parse_status(&server, &text),
            Err(f) => Err(failure_to_error(&server, f)),
        }
    }

    /// The `/status` of every configured server, in order, each in a single attempt.
    pub fn cluster_status(&self) -> Vec<(String, Result<Status>)> {
        self.servers.iter().map(|s| (s.clone(), self.status(s))).collect()
    }

    /// The leader's address: the cached one, or else found by asking the servers' `/status` in
    /// turn, waiting (with backoff) for an election until the retry deadline.
    pub fn leader(&self) -> Result<String> {
        if let Some(leader) = self.cached_leader() {
            return Ok(leader);
        }
        self.refresh_leader()
    }

    /// Forgets the cached leader and finds it again, like [`Client::leader`].
    pub fn refresh_leader(&self) -> Result<String> {
        self.state.lock().leader = None;
        if self.servers.is_empty() {
            return Err(no_servers());
        }
        let deadline = deadline_after(Instant::now(), self.options.retry_deadline);
        let mut backoff = self.options.backoff_initial;
        loop {
            let mut last = None;
            for server in &self.servers {
                match self.status(server) {
                    Ok(status) => {
                        if let Some(leader) = leader_of(server, &status) {
                            self.set_leader(&leader);
                            return Ok(leader);
                        }
                        last = Some(format!("{server} knows no leader (term {})", status.term));
                    }
                    Err(e) => last = Some(e.to_string()),
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Unavailable(format!(
                    "no leader found before the deadline; last answer: {}",
                    last.unwrap_or_default()
                )));
            }
            std::thread::sleep(jittered(backoff).min(deadline - now));
            backoff = backoff.saturating_mul(2).min(self.options.backoff_max);
        }
    }
}

/// The leader address a status names: its `leaderAddr`, or the server itself if it leads.
fn leader_of(server: &str, status: &Status) -> Option<String> {
    match status.leader_addr.as_deref().map(normalize_addr) {
        Some(addr) if !addr.is_empty() => Some(addr),
        _ if status.is_leader => Some(server.to_string()),
        _ => None,
    }
}

fn parse_status(server: &str, text: &str) -> Result<Status> {
    serde_json::from_str(text)
        .map_err(|e| Error::Internal(format!("unreadable /status answer from {server}: {e}")))
}

/// `host:port` from what a user or a server wrote: trims, drops an `http://` prefix and a
/// trailing `/`.
pub fn normalize_addr(addr: &str) -> String {
    let addr = addr.trim();
    let addr = addr.strip_prefix("http://").unwrap_or(addr);
    addr.trim_end_matches('/').to_string()
}

/// Refuses keys that cannot be put into a URL path (see the module docs).
fn check_key(key: &str) -> Result<()> {
    match key {
        "" => Err(Error::BadRequest("the key must not be empty".into())),
        "." | ".." => Err(Error::BadRequest(format!(
            "the key {key:?} cannot be used: URL paths resolve it as a directory step"
        ))),
        _ => Ok(()),
    }
}

/// Percent-encodes `s` for use as one URL path segment ([`crate::api::encode_path_segment`]):
/// every byte of its UTF-8 form except the unreserved `A-Z a-z 0-9 - . _ ~` becomes `%XX`
/// (upper-case hex). `/` becomes `%2F`.
///
/// ```
/// use raftlabkv::client::percent_encode;
/// assert_eq!(percent_encode("a/b c%"), "a%2Fb%20c%25");
/// assert_eq!(percent_encode("é"), "%C3%A9");
/// ```
pub fn percent_encode(s: &str) -> String {
    encode_path_segment(s).to_string()
}

/// A wait of between half and all of `step` (so that clients that failed together do not retry
/// together).
fn jittered(step: Duration) -> Duration {
    let half = step / 2;
    let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(rand::thread_rng().gen_range(0..=nanos))
}

/// `start + d`, or a time far enough away if that overflows.
pub(crate) fn deadline_after(start: Instant, d: Duration) -> Instant {
    start
        .checked_add(d)
        .or_else(|| start.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(start)
}

fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Internal(format!("cannot encode JSON: {e}")))
}

#[cfg(test)]
mod tests;
