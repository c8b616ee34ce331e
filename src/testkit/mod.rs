//! Test support shared by the real-binary tests and the chaos harness: a TCP link proxy and a
//! cluster of real `raftlabkv-server` processes.

pub mod cluster;
pub mod proxy;

pub use cluster::{Answer, Cluster, ClusterOptions};
pub use proxy::{LinkMode, LinkProxy};

use std::time::{Duration, Instant};

/// Polls `f` every `every` until it returns `Some`, or gives up with `None` once `within` has
/// passed: how real-process tests wait for a condition without a fixed sleep deciding anything.
pub fn poll_every<T>(
    every: Duration,
    within: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}
