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
//!
//! Kicking costs CPU (a node kicking all the time spends ~4% of a core on it), and bursts of new
//! connections come from clients: so the kicker kicks every interval only for [`ACTIVE_FOR`]
//! after the last client request (the first request of a burst wakes it at once), and once per
//! [`IDLE_INTERVAL`] otherwise (peer calls and the dashboard's `/debug/*` polls are not client
//! activity here) — which bounds the wait of a connection queued while no client
//! request arrives at all (say, a peer's, in an idle cluster).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How often the pool is kicked.
pub const KICK_INTERVAL: Duration = Duration::from_millis(10);

/// Kicks per interval. Each kick that finds every pool thread busy makes tiny_http start a new
/// thread, which frees exactly one queued connection; a burst of 64 new connections is drained in
/// about 64 / KICKS_PER_INTERVAL intervals (0.16 s) instead of seconds. When threads are idle the
/// kicks are served by them and start nothing. Cost: ~400 loopback connects a second.
pub const KICKS_PER_INTERVAL: usize = 4;

/// How long after the last client request the kicker keeps kicking every [`KICK_INTERVAL`].
pub const ACTIVE_FOR: Duration = Duration::from_secs(2);

/// How often an idle kicker kicks (once).
pub const IDLE_INTERVAL: Duration = Duration::from_millis(100);

/// When clients last sent a request, shared by the HTTP workers and the kicker.
pub struct Activity {
    since: Instant,
    /// Milliseconds from `since` to the latest client request.
    last_ms: AtomicU64,
    /// The kicker is idle (parked): a request must wake it.
    idle: AtomicBool,
    kicker: OnceLock<Thread>,
}

impl Activity {
    /// No activity yet.
    pub fn new() -> Self {
        Activity {
            since: Instant::now(),
            last_ms: AtomicU64::new(0),
            idle: AtomicBool::new(false),
            kicker: OnceLock::new(),
        }
    }

    /// A client request arrived (called by the HTTP workers: one atomic store, and a wake-up of
    /// the kicker if it is idle).
    pub fn note(&self) {
        self.last_ms.store(self.now_ms(), Ordering::SeqCst);
        if self.idle.load(Ordering::SeqCst)
            && let Some(kicker) = self.kicker.get()
        {
            kicker.unpark();
        }
    }

    /// Milliseconds since `since`, from 1 (0 in `last_ms` means "never").
    fn now_ms(&self) -> u64 {
        self.since.elapsed().as_millis() as u64 + 1
    }

    fn active(&self) -> bool {
        let last = self.last_ms.load(Ordering::SeqCst);
        last > 0 && self.now_ms() < last + ACTIVE_FOR.as_millis() as u64
    }
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

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

/// Kicks the pool of the listener at `target` while `running()`: [`KICKS_PER_INTERVAL`] times
/// every [`KICK_INTERVAL`] while clients are active, once per [`IDLE_INTERVAL`] otherwise.
pub fn run(activity: &Activity, target: SocketAddr, running: impl Fn() -> bool) {
    let _ = activity.kicker.set(std::thread::current());
    while running() {
        if activity.active() {
            std::thread::sleep(KICK_INTERVAL);
            kick(target, KICKS_PER_INTERVAL);
            continue;
        }
        // Publish "idle" before checking once more, so that a request noted in between either
        // sees it (and unparks us) or is seen here.
        activity.idle.store(true, Ordering::SeqCst);
        if !activity.active() {
            std::thread::park_timeout(IDLE_INTERVAL);
        }
        activity.idle.store(false, Ordering::SeqCst);
        kick(target, 1);
    }
}

fn kick(target: SocketAddr, times: usize) {
    for _ in 0..times {
        // Dropped at once: the pool thread that takes it reads EOF and moves on to the queue.
        let _ = TcpStream::connect_timeout(&target, KICK_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_request_makes_the_kicker_active_and_wakes_it_when_idle() {
        let activity = std::sync::Arc::new(Activity::new());
        assert!(!activity.active(), "no request yet");
        // An idle kicker parks for a long time; a noted request must wake it well before.
        let (tx, rx) = std::sync::mpsc::channel();
        let a = activity.clone();
        let kicker = std::thread::spawn(move || {
            let _ = a.kicker.set(std::thread::current());
            a.idle.store(true, Ordering::SeqCst);
            tx.send(()).unwrap();
            while !a.active() {
                std::thread::park_timeout(Duration::from_secs(60));
            }
            a.idle.store(false, Ordering::SeqCst);
        });
        rx.recv().unwrap();
        activity.note();
        assert!(activity.active());
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || done_tx.send(kicker.join().is_ok()).unwrap());
        assert_eq!(done_rx.recv_timeout(Duration::from_secs(30)), Ok(true), "the kicker slept on");
    }
}
