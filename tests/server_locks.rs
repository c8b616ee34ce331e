//! The threaded shell's locks, in process (no sockets): `/status` while the apply thread writes.
//!
//! Found by the chaos harness: `Node::status` (then `Shared::status`) took the state machine's read lock twice in one
//! expression. parking_lot's `RwLock` is fair — a reader waits while a writer waits — so when the
//! apply thread asked for the write lock between the two reads, each waited for the other forever:
//! the node stopped applying (every write and linearizable read timed out, with no election since
//! the core kept heartbeating) and stuck `/status` calls drained the HTTP pool.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use raftlabkv::kv::Command;
use raftlabkv::server::transport::LocalTransport;
use raftlabkv::server::{Server, ServerConfig};
use raftlabkv::storage::{self, StorageChoice};

#[test]
fn status_never_deadlocks_with_the_apply_thread() {
    // A single-node cluster: it elects itself, and every write goes through the apply thread.
    let mut config = ServerConfig::new("n1", "127.0.0.1:0", BTreeMap::new());
    config.request_timeout = Duration::from_secs(2);
    let server = Server::start_with_transport(
        config,
        storage::open(&StorageChoice::InMemory).expect("in-memory storage"),
        Arc::new(LocalTransport::new()),
    )
    .expect("start a node");
    let shared = server.shared().clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !shared.status().is_leader {
        assert!(Instant::now() < deadline, "no leader");
        std::thread::sleep(Duration::from_millis(10));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let statuses = Arc::new(AtomicU64::new(0));
    let writes = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for _ in 0..4 {
        let (shared, stop, statuses) = (shared.clone(), stop.clone(), statuses.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let _ = shared.status();
                statuses.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    for w in 0..2 {
        let (shared, stop, writes) = (shared.clone(), stop.clone(), writes.clone());
        threads.push(std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let put = Command::put(format!("k{}", i % 10), format!("{w}.{i}"));
                shared.write(put, None).expect("a single node acknowledges every write");
                writes.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    // Both kinds of work must keep making progress for two seconds.
    let mut last = (0, 0);
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(250));
        let now = (statuses.load(Ordering::SeqCst), writes.load(Ordering::SeqCst));
        if now.0 == last.0 || now.1 == last.1 {
            // Dropping the server would join the deadlocked threads and hang the test.
            std::mem::forget(server);
            panic!("stuck after {} status calls and {} writes: deadlock", now.0, now.1);
        }
        last = now;
    }
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().expect("worker panicked");
    }
}
