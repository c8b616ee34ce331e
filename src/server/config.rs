//! A server's configuration: addresses, timeouts, limits, snapshot policy, and how they become
//! the core's tick counts.

use std::collections::BTreeMap;
use std::time::Duration;

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
    /// The cluster id of the cluster joined (learned from a member at start).
    pub join_cluster_id: Option<String>,
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
    /// Largest key, in bytes.
    pub max_key_bytes: usize,
    /// Largest value, in bytes.
    pub max_value_bytes: usize,
    /// Most entries in one AppendEntries.
    pub max_append_entries: usize,
    /// Seed for election timeouts (defaults to a random one).
    pub seed: u64,
    /// Take a snapshot once this many entries were applied since the last one (0: never).
    pub snapshot_threshold: u64,
    /// Entries kept in the log behind a snapshot, so slightly lagging followers catch up from
    /// the log instead of a whole snapshot.
    pub snapshot_trailing: u64,
    /// Size of the pieces a snapshot is sent in.
    pub snapshot_chunk_bytes: usize,
}

impl ServerConfig {
    /// Defaults: 10 ms tick, 50 ms heartbeat, 300–600 ms election timeout.
    pub fn new(
        id: impl Into<NodeId>,
        addr: impl Into<String>,
        peers: BTreeMap<NodeId, String>,
    ) -> Self {
        ServerConfig {
            id: id.into(),
            addr: addr.into(),
            peers,
            join: Vec::new(),
            join_cluster_id: None,
            tick: Duration::from_millis(10),
            heartbeat: Duration::from_millis(50),
            election_timeout: (Duration::from_millis(300), Duration::from_millis(600)),
            rpc_timeout: Duration::from_millis(1000),
            request_timeout: Duration::from_secs(5),
            http_threads: 128,
            max_key_bytes: 4096,
            max_value_bytes: 1 << 20,
            max_append_entries: 4096,
            seed: rand::random(),
            snapshot_threshold: 10_000,
            snapshot_trailing: 1_000,
            snapshot_chunk_bytes: 1 << 20,
        }
    }

    /// The core's configuration, in ticks.
    pub fn raft_config(&self) -> Config {
        let ticks = |d: Duration| (d.as_millis() / self.tick.as_millis().max(1)).max(1) as u64;
        let mut c = Config::new(self.id.clone(), Vec::new());
        c.bootstrap = self.bootstrap_membership();
        c.heartbeat_ticks = ticks(self.heartbeat);
        c.election_ticks_min = ticks(self.election_timeout.0);
        c.election_ticks_max = ticks(self.election_timeout.1).max(c.election_ticks_min + 1);
        c.rpc_timeout_ticks = ticks(self.rpc_timeout).max(c.election_ticks_min);
        c.max_append_entries = self.max_append_entries.max(1);
        c.seed = self.seed;
        c
    }

    /// The first configuration of a brand-new cluster: this node and `peers`, all voters; `None`
    /// for a node that joins an existing cluster.
    pub fn bootstrap_membership(&self) -> Option<Membership> {
        if !self.join.is_empty() {
            return None;
        }
        let mut voters = self.peers.clone();
        voters.insert(self.id.clone(), self.addr.clone());
        Some(Membership::of_voters(cluster_id_for(&voters), voters))
    }
}

/// The id of a cluster bootstrapped with these members: a digest of their ids and addresses, so
/// that every initial member computes the same one, and a node started with other `--peers`
/// belongs to another cluster (its peer messages are refused). 16 hex digits.
pub fn cluster_id_for(members: &BTreeMap<NodeId, String>) -> String {
    let text: String = members.iter().map(|(id, addr)| format!("{id}={addr}\n")).collect();
    let a = crc32fast::hash(text.as_bytes());
    let mut h = crc32fast::Hasher::new_with_initial(0x5241_4654);
    h.update(text.as_bytes());
    format!("{a:08x}{:08x}", h.finalize())
}
