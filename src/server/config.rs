//! A server's configuration: addresses, timeouts, limits, snapshot policy, the cluster id and
//! peer secret, and how they become the core's tick counts.

use std::collections::BTreeMap;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::auth::{PeerAuth, PeerSecret};
use crate::raft::{Config, Membership, NodeId};

/// Everything a server needs to know.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// This node's id.
    pub id: NodeId,
    /// Address to listen on (`127.0.0.1:8080`).
    pub addr: String,
    /// The other members of a brand-new cluster (`--peers`): id -> address. Used once, to
    /// bootstrap: afterwards the members are the configuration in the log.
    pub peers: BTreeMap<NodeId, String>,
    /// Addresses of existing members to join through (`--join`): the node starts empty, does not
    /// bootstrap, and waits for a leader to send it a configuration that contains it.
    pub join: Vec<String>,
    /// Length of one tick of the core's logical clock.
    pub tick: Duration,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Election timeout range (min, max).
    pub election_timeout: (Duration, Duration),
    /// Peer RPC timeout.
    pub rpc_timeout: Duration,
    /// How long a client request waits for its commit (then 504 for writes, 503 for reads).
    pub request_timeout: Duration,
    /// HTTP worker threads.
    pub http_threads: usize,
    /// Threads that answer client puts so that their workers need not wait for them
    /// (`server::answers`); 0: every request is answered by its worker.
    pub answer_threads: usize,
    /// Largest key, in bytes.
    pub max_key_bytes: usize,
    /// Largest value, in bytes.
    pub max_value_bytes: usize,
    /// Most entries in one AppendEntries.
    pub max_append_entries: usize,
    /// Pipelining window: most AppendEntries awaiting answers per follower
    /// ([`crate::raft::Config::max_inflight`]); each slot is a replication thread of its own.
    pub max_inflight: usize,
    /// Most compares and operations in one transaction (`POST /kv/txn`).
    pub max_txn_ops: usize,
    /// How long the state machine remembers an idempotency key (`kv::idempotency`), measured by
    /// the proposing leader's clock.
    pub idempotency_ttl: Duration,
    /// Most idempotency keys remembered (the soonest-expiring are forgotten first).
    pub idempotency_cap: u64,
    /// Seed for election timeouts (defaults to a random one).
    pub seed: u64,
    /// Take a snapshot once this many entries were applied since the last one (0: never).
    pub snapshot_threshold: u64,
    /// Entries kept in the log behind a snapshot, so slightly lagging followers catch up from
    /// the log instead of a whole snapshot.
    pub snapshot_trailing: u64,
    /// Size of the pieces a snapshot is sent in.
    pub snapshot_chunk_bytes: usize,
    /// The cluster's id, sent with every peer request (`X-Raft-Cluster`); a node refuses peer
    /// requests from another cluster. Defaults to [`cluster_id_for`] this node and its peers.
    pub cluster_id: String,
    /// The shared secret peer requests are signed with (`--peer-secret-file`); None: peer
    /// endpoints are open to anyone who can reach the port.
    pub peer_secret: Option<PeerSecret>,
    /// Disaster recovery (`--force-new-cluster`): at start, make this node the only voter of a
    /// new cluster, from its data (see `raft::node::recovery`).
    pub force_new_cluster: bool,
    /// The fault lab (`--enable-fault-injection`): `POST /debug/fault` may cut, slow or pause this
    /// node ([`super::faults`]).
    pub fault_injection: bool,
    /// Lease reads (`--lease-reads`): the leader may serve `?consistency=lease` reads without a
    /// ReadIndex round while its lease holds ([`ServerConfig::lease`]). Set it on every node.
    pub lease_reads: bool,
    /// The clock-rate drift lease reads assume at most between any two nodes, as a fraction
    /// (`--lease-max-drift`, 0.05 = one clock runs at most 5% faster than another).
    pub lease_max_drift: f64,
    /// Taken off the lease on top of the drift (`--lease-margin-ms`), for what the clocks'
    /// granularity and scheduling add.
    pub lease_margin: Duration,
}

impl ServerConfig {
    /// Defaults: 10 ms tick, 50 ms heartbeat, 300–600 ms election timeout.
    pub fn new(
        id: impl Into<NodeId>,
        addr: impl Into<String>,
        peers: BTreeMap<NodeId, String>,
    ) -> Self {
        let (id, addr) = (id.into(), addr.into());
        let mut members: Vec<(String, String)> = peers.clone().into_iter().collect();
        members.push((id.clone(), addr.clone()));
        ServerConfig {
            cluster_id: cluster_id_for(&members),
            peer_secret: None,
            force_new_cluster: false,
            fault_injection: false,
            lease_reads: false,
            lease_max_drift: 0.05,
            lease_margin: Duration::from_millis(50),
            id,
            addr,
            peers,
            join: Vec::new(),
            tick: Duration::from_millis(10),
            heartbeat: Duration::from_millis(50),
            election_timeout: (Duration::from_millis(300), Duration::from_millis(600)),
            rpc_timeout: Duration::from_millis(1000),
            request_timeout: Duration::from_secs(5),
            http_threads: 128,
            answer_threads: 2,
            max_key_bytes: 4096,
            max_value_bytes: 1 << 20,
            max_append_entries: 4096,
            max_inflight: 1,
            max_txn_ops: 128,
            idempotency_ttl: Duration::from_secs(600),
            idempotency_cap: 100_000,
            seed: rand::random(),
            snapshot_threshold: 10_000,
            snapshot_trailing: 1_000,
            snapshot_chunk_bytes: 1 << 20,
        }
    }

    /// How this node signs and checks peer requests.
    pub fn peer_auth(&self) -> PeerAuth {
        PeerAuth::new(self.id.clone(), self.cluster_id.clone(), self.peer_secret.clone())
    }

    /// The core's configuration, in ticks.
    pub fn raft_config(&self) -> Config {
        let mut c = Config::new(self.id.clone(), Vec::new());
        c.bootstrap = self.bootstrap_membership();
        c.heartbeat_ticks = self.ticks(self.heartbeat);
        c.election_ticks_min = self.ticks(self.election_timeout.0);
        c.election_ticks_max = self.ticks(self.election_timeout.1).max(c.election_ticks_min + 1);
        c.rpc_timeout_ticks = self.ticks(self.rpc_timeout).max(c.election_ticks_min);
        c.max_append_entries = self.max_append_entries.max(1);
        c.max_inflight = self.max_inflight;
        c.seed = self.seed;
        c.lease_ms = self.lease().map_or(0, |d| d.as_millis() as u64);
        c
    }

    /// `d` in whole ticks (at least one).
    fn ticks(&self, d: Duration) -> u64 {
        (d.as_millis() / self.tick.as_millis().max(1)).max(1) as u64
    }

    /// How long a leader's lease lasts from the send of a request a majority answered, or
    /// `None` when lease reads are off (or the timeouts leave no lease).
    ///
    /// A follower ignores vote requests until `election_ticks_min` of its ticks have passed
    /// since it last heard from the leader; its first tick may come right after, so that is at
    /// least `election_ticks_min - 1` ticks of its clock. Its clock may run faster than the
    /// leader's by the drift assumed, so the leader counts that window divided by `1 + drift`,
    /// less the margin: 300 ms, 10 ms ticks, 5% and 50 ms give 226 ms.
    pub fn lease(&self) -> Option<Duration> {
        if !self.lease_reads {
            return None;
        }
        let window =
            self.tick.as_secs_f64() * self.ticks(self.election_timeout.0).saturating_sub(1) as f64;
        let drift =
            if self.lease_max_drift.is_finite() { self.lease_max_drift.max(0.0) } else { 1.0 };
        let lease = window / (1.0 + drift) - self.lease_margin.as_secs_f64();
        (lease >= 0.001).then(|| Duration::from_secs_f64(lease))
    }

    /// The first configuration of a brand-new cluster: this node and `peers`, all voters; `None`
    /// for a node that joins an existing cluster or is forced into a new one
    /// (`--force-new-cluster` recovers from existing data: an empty data dir must not
    /// bootstrap first).
    pub fn bootstrap_membership(&self) -> Option<Membership> {
        if !self.join.is_empty() || self.force_new_cluster {
            return None;
        }
        let mut voters = self.peers.clone();
        voters.insert(self.id.clone(), self.addr.clone());
        Some(Membership::of_voters(self.cluster_id.clone(), voters))
    }
}

/// A cluster id for the members `(id, address)` a cluster is bootstrapped with: the first 16 hex
/// digits of the SHA-256 of their sorted `id=addr` lines. Every node computes the same id from the
/// same member list, whatever its order; a node started with another cluster's `--peers` gets
/// another id, and its peers refuse it instead of letting it merge the two clusters. Nodes that
/// reach each other at different addresses (through proxies, say) must be given one id instead
/// (`--cluster-id`).
pub fn cluster_id_for(members: &[(String, String)]) -> String {
    let mut lines: Vec<String> =
        members.iter().map(|(id, addr)| format!("{id}={addr}\n")).collect();
    lines.sort();
    let digest = Sha256::digest(lines.concat().as_bytes());
    super::auth::hex(&digest[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_depend_on_the_members_not_their_order() {
        let m = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter().map(|(i, a)| (i.to_string(), a.to_string())).collect()
        };
        let a = cluster_id_for(&m(&[("n1", "h:1"), ("n2", "h:2"), ("n3", "h:3")]));
        assert_eq!(a.len(), 16);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(a, cluster_id_for(&m(&[("n3", "h:3"), ("n1", "h:1"), ("n2", "h:2")])));
        assert_ne!(a, cluster_id_for(&m(&[("n1", "h:1"), ("n2", "h:2"), ("n3", "h:4")])));
        assert_ne!(a, cluster_id_for(&m(&[("n1", "h:1"), ("n2", "h:2")])));
        assert_ne!(a, cluster_id_for(&m(&[("n1", "h:1"), ("n2", "h:2"), ("n4", "h:3")])));
        // Every node of a cluster computes the same id from its own view.
        let peers: BTreeMap<String, String> = [("n2", "h:2"), ("n3", "h:3")]
            .iter()
            .map(|(i, a)| (i.to_string(), a.to_string()))
            .collect();
        assert_eq!(ServerConfig::new("n1", "h:1", peers).cluster_id, a);
    }
}
