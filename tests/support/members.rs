//! The 3-node cluster the membership tests start (data dirs, a peer secret), a client of some of
//! its nodes, and waiting for a leader.

use std::time::Duration;

use raftlabkv::client::Client;
use raftlabkv::testkit::Cluster;

/// Starts 3 nodes with data dirs and a peer secret, in a fresh work dir named after `name`.
pub fn cluster(name: &str) -> Cluster {
    super::cluster::three(&format!("members-{name}"), true, &[])
}

/// A client of `nodes` (5 s per request, retrying for up to 15 s).
pub fn client(c: &Cluster, nodes: &[usize]) -> Client {
    let servers = nodes.iter().map(|&i| c.nodes[i].addr.clone()).collect();
    Client::builder(servers)
        .request_timeout(Duration::from_secs(5))
        .retry_deadline(Duration::from_secs(15))
        .build()
}

/// The leader among `among`, waiting up to 15 s for one.
pub fn leader(c: &Cluster, among: &[usize]) -> usize {
    c.wait_leader(among, Duration::from_secs(15)).expect("a leader within 15 s")
}
