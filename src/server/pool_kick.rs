//! A workaround for a lost wakeup in tiny_http 0.12's connection thread pool.
//!
//! tiny_http runs every accepted connection as one task of its `TaskPool`, and a keep-alive
//! connection's task holds its pool thread until the connection closes. `TaskPool::spawn` queues
//! the task when the count of idle threads is above zero, and starts a new thread only when it is
//! zero; but a thread it has just woken still counts as idle until it gets to run. During a burst
//! of new connections every spawn sees the same stale count, so several connections are queued
//! for one woken thread: the rest stay in the queue, unread, until some *other* connection closes
//! and frees a pool thread. Their clients get no answer at all (not even the 504 of a timed-out
//! write): on a fresh node, a burst of 32 keep-alive clients can leave 28 of them waiting for as
//! long as the first 4 stay connected.
//!
//! The kick: every [`KICK_INTERVAL`], connect to our own listener and close at once. That
//! connection's task ends immediately, and the pool thread that ran it then takes the oldest
//! queued connection. A queued connection thus waits at most a few intervals. Remove this once the
//! pool is fixed (or replaced).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use super::Shared;

/// How often the pool is kicked.
pub const KICK_INTERVAL: Duration = Duration::from_millis(10);

/// Kicks per interval. Each kick that finds every pool thread busy makes tiny_http start a new
/// thread, which frees exactly one queued connection; a burst of 64 new connections is drained in
/// about 64 / KICKS_PER_INTERVAL intervals (0.16 s) instead of seconds. When threads are idle the
/// kicks are served by them and start nothing. Cost: ~400 loopback connects a second.
pub const KICKS_PER_INTERVAL: usize = 4;

/// Where to connect to reach a listener bound to `addr` (loopback for an unspecified address).
pub fn kick_target(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    addr
}

/// Kicks the pool of the listener at `target` until shutdown.
pub fn run(shared: &Shared, target: SocketAddr) {
    while !shared.is_shutdown() {
        std::thread::sleep(KICK_INTERVAL);
        for _ in 0..KICKS_PER_INTERVAL {
            // Dropped at once: the pool thread that takes it reads EOF and moves on to the queue.
            let _ = TcpStream::connect_timeout(&target, KICK_INTERVAL);
        }
    }
}
