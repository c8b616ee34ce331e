//! Test support shared by the real-binary tests and the chaos harness: a TCP link proxy and a
//! cluster of real `raftlabkv-server` processes.

pub mod cluster;
pub mod proxy;

pub use cluster::{Answer, Cluster, ClusterOptions};
pub use proxy::{LinkMode, LinkProxy};
