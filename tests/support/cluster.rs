//! The 3-node cluster most real-binary tests start: a fresh work dir named after the test, a
//! peer secret, data dirs or not, and extra server flags.

use raftlabkv::testkit::{Cluster, ClusterOptions};

/// Starts 3 nodes of this build's server in `$TMP/raftlabkv-test-{name}-{pid}`.
pub fn three(name: &str, data_dirs: bool, extra: &[&str]) -> Cluster {
    let work_dir =
        std::env::temp_dir().join(format!("raftlabkv-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work_dir);
    Cluster::start(ClusterOptions {
        nodes: 3,
        server_bin: env!("CARGO_BIN_EXE_raftlabkv-server").into(),
        work_dir,
        data_dirs,
        extra_args: extra.iter().map(|s| s.to_string()).collect(),
        peer_secret: true,
    })
    .expect("start cluster")
}
