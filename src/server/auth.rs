//! Authenticated peers: how a node signs its peer requests and checks the ones it receives.
//!
//! Every peer request — the Raft RPCs on `/raft/*`, snapshot chunks on `/raft/snapshotChunk`, and
//! client requests a follower forwards to the leader — carries:
//!
//! | header | value |
//! |---|---|
//! | `X-Raft-From` | the sender's node id |
//! | `X-Raft-Cluster` | the sender's cluster id ([`super::config::cluster_id_for`]) |
//! | `X-Raft-Time` | when it was signed, in Unix milliseconds (only with a secret) |
//! | `X-Raft-Auth` | `hmac-sha256=<64 hex digits>` (only with a secret) |
//!
//! The MAC is HMAC-SHA256, keyed with the cluster's shared secret (`--peer-secret-file`), over a
//! version tag and then, each prefixed with its length so no two requests sign the same bytes:
//! the method, the path with its query, the sender id, the cluster id, the timestamp, and last
//! the SHA-256 digest of the body. The body comes last so that a receiver can check every header
//! and start the MAC before it reads the body ([`PeerAuth::check_headers`] returns a
//! [`PendingCheck`]), then digests the body and verifies ([`PendingCheck::verify`]) before
//! anything parses it.
//!
//! A receiver refuses, in this order and before reading the body: a request without `X-Raft-From`
//! or `X-Raft-Cluster` (401), one from another cluster (403 `wrong_cluster`, logged loudly once
//! per sender), and with a secret, one without a timestamp or MAC, or whose timestamp is more than
//! [`MAX_CLOCK_SKEW`] away from its own clock (401). Then it reads the body (up to the route's
//! limit) and refuses a MAC that does not match (401). The comparison is the `hmac` crate's
//! `Mac::verify_slice`, which compares in constant time, so the answer's timing says nothing about
//! how much of a guessed MAC was right.
//!
//! What this does not do: it authenticates requests, not answers (an attacker who sits *on* the
//! path between two nodes can still forge a response; run peers on a private network or a
//! tunnel for that), it does not encrypt anything, and within [`MAX_CLOCK_SKEW`] a captured
//! request can be replayed. Raft itself tolerates duplicated and delayed messages (the network may
//! do that to it anyway), so a replayed RPC can do no harm; a replayed forwarded write applies
//! the same write again, like a client retrying it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::raft::NodeId;

/// The sender's node id.
pub const FROM: &str = "X-Raft-From";
/// The sender's cluster id.
pub const CLUSTER: &str = "X-Raft-Cluster";
/// When the request was signed, Unix milliseconds.
pub const TIME: &str = "X-Raft-Time";
/// `hmac-sha256=<hex>`.
pub const AUTH: &str = "X-Raft-Auth";

/// How far a request's timestamp may be from the receiver's clock, either way. Bounds how long a
/// captured request can be replayed; nodes' clocks must agree this closely (NTP does far better).
/// A request is signed just before it is sent, so the skew also covers its time in the network
/// until its headers arrive (the body may take longer: the timestamp is checked on the headers).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(30);

/// The shortest secret accepted: 16 bytes, 128 bits at best. `start_cluster.sh` makes 32 random
/// bytes, base64-encoded (44 characters).
pub const MIN_SECRET_BYTES: usize = 16;

/// How many distinct refused senders are logged (once each) before further ones are only logged
/// at debug level: the sender id comes from the request, so the set must not grow without end.
const LOGGED_SENDERS: usize = 256;

/// Tags the signed bytes, so a change of format can never verify against the old one.
const VERSION: &[u8] = b"raftlabkv-peer-v1";
const SCHEME: &str = "hmac-sha256=";

type HmacSha256 = Hmac<Sha256>;

/// The cluster's shared peer secret, already keyed into HMAC-SHA256 (the key's padding blocks are
/// hashed once here, not once per request). `Debug` never prints it.
#[derive(Clone)]
pub struct PeerSecret {
    keyed: HmacSha256,
}

impl std::fmt::Debug for PeerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerSecret(<redacted>)")
    }
}

impl PeerSecret {
    /// The secret in `bytes`, trimmed of surrounding whitespace (a trailing newline, say).
    /// Refuses an empty or short one with [`Error::Config`].
    pub fn from_bytes(bytes: &[u8]) -> Result<PeerSecret> {
        let secret = bytes.trim_ascii();
        if secret.len() < MIN_SECRET_BYTES {
            return Err(Error::Config(format!(
                "the peer secret is {} bytes long; it must be at least {MIN_SECRET_BYTES} \
                 (e.g. `head -c 32 /dev/urandom | base64`)",
                secret.len()
            )));
        }
        let keyed = HmacSha256::new_from_slice(secret)
            .map_err(|e| Error::Config(format!("cannot key HMAC with the peer secret: {e}")))?;
        Ok(PeerSecret { keyed })
    }

    /// Reads the secret file at `path` (trimmed). Refuses, with [`Error::Config`], a file that
    /// is missing, unreadable, empty or shorter than [`MIN_SECRET_BYTES`]; warns if the group or
    /// others may read it.
    pub fn from_file(path: &std::path::Path) -> Result<PeerSecret> {
        let shown = path.display();
        let bytes = std::fs::read(path)
            .map_err(|e| Error::Config(format!("cannot read the peer secret file {shown}: {e}")))?;
        if bytes.trim_ascii().is_empty() {
            return Err(Error::Config(format!("the peer secret file {shown} is empty")));
        }
        let secret = PeerSecret::from_bytes(&bytes)
            .map_err(|e| Error::Config(format!("{shown}: {}", e.message())))?;
        #[cfg(unix)]
        if let Ok(meta) = std::fs::metadata(path) {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                log::warn!(
                    "the peer secret file {shown} is readable by its group or by others (mode \
                     {:o}): anyone who reads it can speak Raft to this cluster; chmod 600 it",
                    mode & 0o777
                );
            }
        }
        Ok(secret)
    }
}

/// The headers of one signed peer request; [`SignedHeaders::pairs`] lists them.
pub struct SignedHeaders<'a> {
    from: &'a str,
    cluster: &'a str,
    /// `(X-Raft-Time, X-Raft-Auth)` values when there is a secret.
    mac: Option<(String, String)>,
}

impl SignedHeaders<'_> {
    /// `(name, value)` for each header to set.
    pub fn pairs(&self) -> impl Iterator<Item = (&'static str, &str)> {
        let mac = self.mac.as_ref();
        [(FROM, self.from), (CLUSTER, self.cluster)]
            .into_iter()
            .chain(mac.into_iter().flat_map(|(t, a)| [(TIME, t.as_str()), (AUTH, a.as_str())]))
    }

    /// Sets the headers on a `ureq` request.
    pub fn apply(&self, mut request: ureq::Request) -> ureq::Request {
        for (name, value) in self.pairs() {
            request = request.set(name, value);
        }
        request
    }
}

/// A peer request whose headers passed: the MAC over them is started, the body's digest is
/// still to come ([`PendingCheck::verify`]).
pub struct PendingCheck<'a> {
    auth: &'a PeerAuth,
    from: NodeId,
    /// The MAC so far and the one the request carries (None: no secret, nothing to verify).
    mac: Option<(HmacSha256, [u8; 32])>,
}

impl PendingCheck<'_> {
    /// Who the headers say sent the request (checked by the MAC only after [`Self::verify`]).
    pub fn from(&self) -> &str {
        &self.from
    }

    /// Checks the MAC against `body` (constant-time comparison). Returns the sender's id.
    pub fn verify(self, body: &[u8]) -> Result<NodeId> {
        if let Some((mut mac, tag)) = self.mac {
            mac.update(&Sha256::digest(body));
            if mac.verify_slice(&tag).is_err() {
                let why = format!(
                    "the peer request's {AUTH} does not match (a wrong secret, or the request was \
                     altered)"
                );
                return Err(self.auth.refuse(&self.from, why));
            }
        }
        Ok(self.from)
    }
}

/// How this node signs its peer requests and checks the ones it receives. Cheap to clone.
#[derive(Clone)]
pub struct PeerAuth {
    node_id: NodeId,
    cluster_id: String,
    secret: Option<PeerSecret>,
    /// Senders whose refusal was logged already (bounded, see [`LOGGED_SENDERS`]).
    logged: Arc<Mutex<HashSet<String>>>,
}

impl PeerAuth {
    /// Signs as `node_id` of `cluster_id`; with `secret`, requests carry a MAC and received ones
    /// must too.
    pub fn new(node_id: NodeId, cluster_id: String, secret: Option<PeerSecret>) -> PeerAuth {
        PeerAuth { node_id, cluster_id, secret, logged: Arc::default() }
    }

    /// The node this signs as.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The cluster id this node sends and expects.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// True if peer requests are signed and must be.
    pub fn has_secret(&self) -> bool {
        self.secret.is_some()
    }

    /// The headers for a request of `method` to `path` (with its query, exactly as sent) with
    /// `body`, signed now.
    pub fn sign(&self, method: &str, path: &str, body: &[u8]) -> SignedHeaders<'_> {
        self.sign_at(method, path, body, now_ms())
    }

    /// [`Self::sign`] at a given time (tests).
    pub fn sign_at(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        time_ms: u64,
    ) -> SignedHeaders<'_> {
        let mac = self.secret.as_ref().map(|s| {
            let mut mac = self.start_mac(s, method, path, &self.node_id, &self.cluster_id, time_ms);
            mac.update(&Sha256::digest(body));
            let tag = mac.finalize().into_bytes();
            (time_ms.to_string(), format!("{SCHEME}{}", hex(&tag)))
        });
        SignedHeaders { from: &self.node_id, cluster: &self.cluster_id, mac }
    }

    /// Checks a received peer request's headers (`header(name)` looks one up) before its body is
    /// read; see the module docs for what is refused and how.
    pub fn check_headers<'h>(
        &self,
        method: &str,
        path: &str,
        header: impl Fn(&str) -> Option<&'h str>,
    ) -> Result<PendingCheck<'_>> {
        self.check_headers_at(method, path, header, now_ms())
    }

    /// [`Self::check_headers`] at a given time (tests).
    pub fn check_headers_at<'h>(
        &self,
        method: &str,
        path: &str,
        header: impl Fn(&str) -> Option<&'h str>,
        now_ms: u64,
    ) -> Result<PendingCheck<'_>> {
        let present = |name: &str| header(name).map(str::trim).filter(|v| !v.is_empty());
        let (Some(from), Some(cluster)) = (present(FROM), present(CLUSTER)) else {
            return Err(Error::Unauthorized(format!(
                "a peer request must carry {FROM} and {CLUSTER} headers"
            )));
        };
        if cluster != self.cluster_id {
            self.log_once(format!("cluster {cluster} {from}"), || {
                format!(
                    "REFUSING peer requests from {from:?}: it belongs to cluster {cluster}, this \
                     node to cluster {}. Is its --peers (or --cluster-id) list of another \
                     cluster's?",
                    self.cluster_id
                )
            });
            return Err(Error::WrongCluster(format!(
                "this node belongs to cluster {}, not {cluster}",
                self.cluster_id
            )));
        }
        let Some(secret) = &self.secret else {
            return Ok(PendingCheck { auth: self, from: from.to_string(), mac: None });
        };
        let refuse = |why: String| self.refuse(from, why);
        let time = present(TIME).and_then(|t| t.parse::<u64>().ok());
        let Some(time) = time else {
            return Err(refuse(format!("a peer request must carry {TIME} (Unix milliseconds)")));
        };
        if now_ms.abs_diff(time) > MAX_CLOCK_SKEW.as_millis() as u64 {
            return Err(refuse(format!(
                "the request's {TIME} {time} is {} ms away from this node's clock ({now_ms}); \
                 at most {} ms are allowed (stale, replayed, or the clocks disagree)",
                now_ms.abs_diff(time),
                MAX_CLOCK_SKEW.as_millis()
            )));
        }
        let tag = present(AUTH).and_then(|a| a.strip_prefix(SCHEME)).and_then(unhex32);
        let Some(tag) = tag else {
            return Err(refuse(format!("a peer request must carry {AUTH}: {SCHEME}<64 hex>")));
        };
        let mac = self.start_mac(secret, method, path, from, cluster, time);
        Ok(PendingCheck { auth: self, from: from.to_string(), mac: Some((mac, tag)) })
    }

    /// The MAC over everything but the body's digest (see the module docs for the layout).
    fn start_mac(
        &self,
        secret: &PeerSecret,
        method: &str,
        path: &str,
        from: &str,
        cluster: &str,
        time_ms: u64,
    ) -> HmacSha256 {
        let mut mac = secret.keyed.clone();
        mac.update(VERSION);
        for field in [method.as_bytes(), path.as_bytes(), from.as_bytes(), cluster.as_bytes()] {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field);
        }
        mac.update(&time_ms.to_be_bytes());
        mac
    }

    /// [`Error::Unauthorized`] with `why`, logged the first time for each sender.
    fn refuse(&self, from: &str, why: String) -> Error {
        self.log_once(format!("auth {from}"), || {
            format!("refusing a peer request claiming to be from {from:?}: {why}")
        });
        Error::Unauthorized(why)
    }

    /// Logs `message()` as an error the first time `key` is refused (bounded memory).
    fn log_once(&self, key: String, message: impl FnOnce() -> String) {
        let mut logged = self.logged.lock();
        if logged.len() < LOGGED_SENDERS && logged.insert(key) {
            log::error!("{}: {}", self.node_id, message());
        } else {
            log::debug!("{}: {}", self.node_id, message());
        }
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

/// 64 hex digits (either case) as 32 bytes.
fn unhex32(text: &str) -> Option<[u8; 32]> {
    let digits = text.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn auth(id: &str, cluster: &str, secret: Option<&str>) -> PeerAuth {
        let secret = secret.map(|s| PeerSecret::from_bytes(s.as_bytes()).unwrap());
        PeerAuth::new(id.into(), cluster.into(), secret)
    }

    fn headers(h: &SignedHeaders<'_>) -> Vec<(String, String)> {
        h.pairs().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    /// Checks `sent` (headers as a list) at the receiver, then the body.
    fn check(
        receiver: &PeerAuth,
        method: &str,
        path: &str,
        sent: &[(String, String)],
        body: &[u8],
        now: u64,
    ) -> Result<NodeId> {
        let lookup = |name: &str| {
            sent.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
        };
        receiver.check_headers_at(method, path, lookup, now)?.verify(body)
    }

    const SECRET: &str = "0123456789abcdef-cluster-secret";

    #[test]
    fn a_signed_request_verifies_and_names_its_sender() {
        let (a, b) = (auth("node1", "c1", Some(SECRET)), auth("node2", "c1", Some(SECRET)));
        let sent = headers(&a.sign_at("POST", "/raft/appendEntries", b"{}", NOW));
        assert_eq!(sent.len(), 4);
        assert!(sent[3].1.starts_with("hmac-sha256=") && sent[3].1.len() == 12 + 64);
        let from = check(&b, "POST", "/raft/appendEntries", &sent, b"{}", NOW + 1000);
        assert_eq!(from, Ok("node1".to_string()));
    }

    #[test]
    fn every_signed_field_changes_the_mac() {
        let base = auth("node1", "c1", Some(SECRET));
        let tag = |a: &PeerAuth, method: &str, path: &str, body: &[u8], time: u64| {
            headers(&a.sign_at(method, path, body, time))[3].1.clone()
        };
        let reference = tag(&base, "POST", "/raft/x?a=1", b"body", NOW);
        let variants = [
            tag(&base, "PUT", "/raft/x?a=1", b"body", NOW),
            tag(&base, "POST", "/raft/y?a=1", b"body", NOW),
            tag(&base, "POST", "/raft/x?a=2", b"body", NOW),
            tag(&base, "POST", "/raft/x?a=1", b"bodY", NOW),
            tag(&base, "POST", "/raft/x?a=1", b"", NOW),
            tag(&base, "POST", "/raft/x?a=1", b"body", NOW + 1),
            tag(&auth("node2", "c1", Some(SECRET)), "POST", "/raft/x?a=1", b"body", NOW),
            tag(&auth("node1", "c2", Some(SECRET)), "POST", "/raft/x?a=1", b"body", NOW),
            tag(
                &auth("node1", "c1", Some("another-secret-16b")),
                "POST",
                "/raft/x?a=1",
                b"body",
                NOW,
            ),
            // Moving a byte between fields must not collide (the fields are length-prefixed).
            tag(&auth("node1", "c1", Some(SECRET)), "POS", "T/raft/x?a=1", b"body", NOW),
        ];
        for (i, v) in variants.iter().enumerate() {
            assert_ne!(*v, reference, "variant {i} signs the same as the reference");
        }
        assert_eq!(tag(&base, "POST", "/raft/x?a=1", b"body", NOW), reference, "deterministic");
    }

    #[test]
    fn tampering_with_any_signed_part_is_refused() {
        let (a, b) = (auth("node1", "c1", Some(SECRET)), auth("node2", "c1", Some(SECRET)));
        let sent = headers(&a.sign_at("POST", "/raft/requestVote", b"{\"term\":3}", NOW));
        let unauthorized = |r: Result<NodeId>| matches!(r, Err(Error::Unauthorized(_)));
        assert!(unauthorized(check(&b, "POST", "/raft/requestVote", &sent, b"{\"term\":9}", NOW)));
        assert!(unauthorized(check(
            &b,
            "POST",
            "/raft/appendEntries",
            &sent,
            b"{\"term\":3}",
            NOW
        )));
        assert!(unauthorized(check(&b, "GET", "/raft/requestVote", &sent, b"{\"term\":3}", NOW)));
        let mut other = sent.clone();
        other[0].1 = "node3".into(); // claims another sender
        assert!(unauthorized(check(&b, "POST", "/raft/requestVote", &other, b"{\"term\":3}", NOW)));
        let mut later = sent.clone();
        later[2].1 = (NOW + 5).to_string(); // a fresher timestamp on an old MAC
        assert!(unauthorized(check(&b, "POST", "/raft/requestVote", &later, b"{\"term\":3}", NOW)));
        let mut flipped = sent.clone();
        let last = if flipped[3].1.ends_with('0') { '1' } else { '0' };
        flipped[3].1.pop();
        flipped[3].1.push(last);
        assert!(unauthorized(check(
            &b,
            "POST",
            "/raft/requestVote",
            &flipped,
            b"{\"term\":3}",
            NOW
        )));
        // The MAC itself is fine, the secret is not.
        let wrong = auth("node2", "c1", Some("not-the-cluster-secret"));
        assert!(unauthorized(check(
            &wrong,
            "POST",
            "/raft/requestVote",
            &sent,
            b"{\"term\":3}",
            NOW
        )));
        // Upper-case hex is the same MAC.
        let mut upper = sent.clone();
        upper[3].1 = format!("hmac-sha256={}", upper[3].1[12..].to_uppercase());
        assert!(check(&b, "POST", "/raft/requestVote", &upper, b"{\"term\":3}", NOW).is_ok());
    }

    #[test]
    fn stale_or_future_timestamps_are_refused() {
        let (a, b) = (auth("node1", "c1", Some(SECRET)), auth("node2", "c1", Some(SECRET)));
        let skew = MAX_CLOCK_SKEW.as_millis() as u64;
        for (signed, ok) in [
            (NOW - skew, true),
            (NOW + skew, true),
            (NOW - skew - 1, false),
            (NOW + skew + 1, false),
            (0, false),
            (u64::MAX, false),
        ] {
            let sent = headers(&a.sign_at("POST", "/raft/requestVote", b"", signed));
            let r = check(&b, "POST", "/raft/requestVote", &sent, b"", NOW);
            assert_eq!(r.is_ok(), ok, "signed at {signed}, checked at {NOW}: {r:?}");
            if !ok {
                assert!(matches!(r, Err(Error::Unauthorized(m)) if m.contains("X-Raft-Time")));
            }
        }
    }

    #[test]
    fn missing_headers_and_other_clusters_are_refused_before_the_body() {
        let b = auth("node2", "c1", Some(SECRET));
        let none = |_: &str| None;
        let r = b.check_headers_at("POST", "/raft/requestVote", none, NOW);
        assert!(matches!(r, Err(Error::Unauthorized(_))));
        // Only the identity headers: no time, no MAC.
        let open = auth("node1", "c1", None);
        let sent = headers(&open.sign_at("POST", "/raft/requestVote", b"", NOW));
        assert_eq!(sent.len(), 2, "no secret: no time or MAC headers");
        let r = check(&b, "POST", "/raft/requestVote", &sent, b"", NOW);
        assert!(matches!(r, Err(Error::Unauthorized(_))), "{r:?}");
        // Another cluster, with or without a secret on either side.
        let foreign = auth("node1", "c2", Some(SECRET));
        let sent = headers(&foreign.sign_at("POST", "/raft/requestVote", b"", NOW));
        let r = check(&b, "POST", "/raft/requestVote", &sent, b"", NOW);
        assert!(matches!(r, Err(Error::WrongCluster(_))), "{r:?}");
        let r = check(&auth("node2", "c1", None), "POST", "/raft/requestVote", &sent, b"", NOW);
        assert!(matches!(r, Err(Error::WrongCluster(_))), "{r:?}");
        // Without a secret, the identity headers are all that is needed.
        let r = check(
            &auth("node2", "c1", None),
            "POST",
            "/raft/x",
            &headers(&open.sign("POST", "/raft/x", b"")),
            b"",
            now_ms(),
        );
        assert_eq!(r, Ok("node1".to_string()));
    }

    #[test]
    fn secrets_are_trimmed_and_must_be_long_enough() {
        assert!(PeerSecret::from_bytes(b"").is_err());
        assert!(PeerSecret::from_bytes(b"   \n").is_err());
        assert!(PeerSecret::from_bytes(b"fifteen-bytes!!").is_err());
        assert!(PeerSecret::from_bytes(b"  fifteen-bytes!!\n").is_err(), "trimmed first");
        assert!(PeerSecret::from_bytes(b"sixteen-bytes!!!").is_ok());
        // A trailing newline is not part of the key.
        let a = auth("node1", "c1", Some("sixteen-bytes!!!\n"));
        let b = auth("node2", "c1", Some("sixteen-bytes!!!"));
        let sent = headers(&a.sign_at("POST", "/p", b"x", NOW));
        assert!(check(&b, "POST", "/p", &sent, b"x", NOW).is_ok());
        assert_eq!(
            format!("{:?}", PeerSecret::from_bytes(b"sixteen-bytes!!!").unwrap()),
            "PeerSecret(<redacted>)"
        );
    }

    #[test]
    fn secret_files() {
        let dir = tempfile::tempdir().unwrap();
        let missing = PeerSecret::from_file(&dir.path().join("nope"));
        assert!(matches!(missing, Err(Error::Config(m)) if m.contains("cannot read")));
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        assert!(
            matches!(PeerSecret::from_file(&empty), Err(Error::Config(m)) if m.contains("empty"))
        );
        let short = dir.path().join("short");
        std::fs::write(&short, "short\n").unwrap();
        assert!(
            matches!(PeerSecret::from_file(&short), Err(Error::Config(m)) if m.contains("at least 16"))
        );
        let good = dir.path().join("good");
        std::fs::write(&good, "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0\n").unwrap();
        assert!(PeerSecret::from_file(&good).is_ok());
    }

    #[test]
    fn hex_round_trips() {
        let bytes: [u8; 32] = std::array::from_fn(|i| (i * 37 + 5) as u8);
        assert_eq!(unhex32(&hex(&bytes)), Some(bytes));
        assert_eq!(unhex32(&hex(&bytes)[1..]), None);
        assert_eq!(unhex32(&format!("{}zz", &hex(&bytes)[2..])), None);
    }
}
