//! Test support shared by the real-binary tests and the chaos harness: a TCP link proxy and a
//! cluster of real `raftlabkv-server` processes.

pub mod cluster;
pub mod proxy;
pub mod sse;

pub use cluster::{Answer, Cluster, ClusterOptions};
pub use proxy::{LinkMode, LinkProxy};

use std::process::Child;
use std::time::{Duration, Instant};

/// A server process started by a test, killed (and reaped) when dropped, so that a failing
/// assertion leaves no server behind.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The number in environment variable `name`, or `default` if it is unset or not a number (the
/// knobs of the longer tests and measurements).
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(default)
}

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
