//! The 3-node cluster the membership tests start (data dirs, a peer secret), a client of some of
//! its nodes, and waiting for a leader.

use std::time::Duration;

use raftlabkv::client::Client;
use raftlabkv::testkit::{Cluster, ClusterOptions};

/// Starts 3 nodes with data dirs and a peer secret, in a fresh work dir named after `name`.
pub fn cluster(name: &str) -> Cluster {
    let work_dir =
        std::env::temp_dir().join(format!("raftlabkv-test-members-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work_dir);
    Cluster::start(ClusterOptions {
        nodes: 3,
        server_bin: env!("CARGO_BIN_EXE_raftlabkv-server").into(),
        work_dir,
        data_dirs: true,
        extra_args: vec![],
        peer_secret: true,
    })
    .expect("start cluster")
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
