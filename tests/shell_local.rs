//! The threaded shell (ticker, peer threads, apply and sync threads) over the in-process
//! `LocalTransport` instead of HTTP: the same core and shell, no sockets, links cut in memory.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use raftlabkv::Error;
use raftlabkv::kv::Command;
use raftlabkv::server::transport::{LocalTransport, RpcHandler};
use raftlabkv::server::{Server, ServerConfig};
use raftlabkv::storage::{self, StorageChoice};

fn start(n: usize) -> (Vec<Server>, LocalTransport) {
    let transport = LocalTransport::new();
    let ids: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
    let mut servers = Vec::new();
    for id in &ids {
        let peers: BTreeMap<String, String> =
            ids.iter().filter(|p| *p != id).map(|p| (p.clone(), format!("local:{p}"))).collect();
        let mut config = ServerConfig::new(id.clone(), format!("local:{id}"), peers);
        config.request_timeout = Duration::from_secs(2);
        let server = Server::start_with_transport(
            config,
            storage::open(&StorageChoice::InMemory).expect("in-memory storage"),
            Arc::new(transport.clone()),
        )
        .expect("start");
        let handler: Arc<dyn RpcHandler> = server.shared().clone();
        transport
            .register(&format!("local:{id}"), Arc::downgrade(&handler) as Weak<dyn RpcHandler>);
        servers.push(server);
    }
    (servers, transport)
}

fn leader(servers: &[Server], among: &[usize]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let leaders: Vec<usize> =
            among.iter().copied().filter(|&i| servers[i].shared().status().is_leader).collect();
        if let [l] = leaders[..] {
            return l;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no single leader among {among:?} within 10 s");
}

fn put(key: &str, value: &str) -> Command {
    Command::put(key, value)
}

#[test]
fn writes_commit_and_reads_are_linearizable_over_the_local_transport() {
    let (servers, _t) = start(3);
    let l = leader(&servers, &[0, 1, 2]);
    for i in 0..50 {
        servers[l].shared().write(put(&format!("k{i}"), &format!("v{i}")), None).expect("write");
    }
    servers[l].shared().linearizable_barrier().expect("read barrier");
    let value = servers[l].shared().with_kv(|kv| kv.get("k49").map(str::to_string));
    assert_eq!(value.as_deref(), Some("v49"));
    // A follower refuses to propose (the HTTP layer would forward) and names the leader.
    let f = (l + 1) % 3;
    match servers[f].shared().write(put("x", "y"), None) {
        Err(Error::Unavailable(m)) => assert!(m.contains("leader"), "{m}"),
        Err(Error::NotLeader { leader }) => assert!(leader.is_some(), "names no leader"),
        other => panic!("a follower accepted a write: {other:?}"),
    }
}

#[test]
fn a_cut_off_leader_cannot_write_or_confirm_reads_and_the_rest_moves_on() {
    let (servers, transport) = start(3);
    let old = leader(&servers, &[0, 1, 2]);
    let ids = ["n1", "n2", "n3"].map(String::from);
    for other in 0..3 {
        if other != old {
            transport.set_cut(&ids[old], &ids[other], true);
            transport.set_cut(&ids[other], &ids[old], true);
        }
    }
    let rest: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let new = leader(&servers, &rest);
    servers[new].shared().write(put("k", "majority"), None).expect("majority side writes");
    // The old leader either still thinks it leads (then the write cannot commit: 504) or has
    // stepped down (503); it never acknowledges.
    match servers[old].shared().write(put("k", "minority"), None) {
        Err(Error::OutcomeUnknown(_)) | Err(Error::Unavailable(_)) => {}
        other => panic!("minority write answered {other:?}"),
    }
    assert!(servers[old].shared().linearizable_barrier().is_err(), "minority confirmed a read");
    for other in 0..3 {
        transport.set_cut(&ids[old], &ids[other], false);
        transport.set_cut(&ids[other], &ids[old], false);
    }
    // Healed: the old leader catches up with the majority's value.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = servers[old].shared().with_kv(|kv| kv.get("k").map(str::to_string));
        if v.as_deref() == Some("majority") {
            break;
        }
        assert!(Instant::now() < deadline, "old leader never caught up (has {v:?})");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Replication never waits for the state machine: with the leader's state machine held by a
/// reader (a long range read), its apply waits, but both followers keep receiving entries and the
/// commit index, and apply them; the writes are acknowledged once the reader lets go. (Checked
/// on purpose against a replication thread that applies what it commits and waits for the lock
/// to do so: that fails in most rounds, so five rounds make a miss rare.)
#[test]
fn a_reader_holding_the_leaders_state_machine_does_not_stop_replication() {
    let (servers, _t) = start(3);
    let l = leader(&servers, &[0, 1, 2]);
    servers[l].shared().write(put("k0", "v0"), None).expect("first write");
    let followers: Vec<usize> = (0..3).filter(|&i| i != l).collect();
    let applied = |i: usize| servers[i].shared().status().last_applied;
    for round in 0..5 {
        let base = followers.iter().map(|&f| applied(f)).max().unwrap_or(0);
        let leader_node = servers[l].shared().clone();
        let (release, held) = crossbeam_channel::bounded::<()>(0);
        let (holding, is_holding) = crossbeam_channel::bounded::<()>(1);
        let reader = std::thread::spawn(move || {
            leader_node.with_kv(|_| {
                let _ = holding.send(());
                let _ = held.recv_timeout(Duration::from_secs(20));
            })
        });
        is_holding
            .recv_timeout(Duration::from_secs(5))
            .expect("the reader holds the state machine");
        // Writes, one at a time (a commit each), each from its own thread: they wait for an
        // apply that waits for the reader.
        let mut writers = Vec::new();
        for i in 1..=3 {
            let node = servers[l].shared().clone();
            let key = format!("r{round}k{i}");
            writers.push(std::thread::spawn(move || node.write(put(&key, "v"), None)));
            let deadline = Instant::now() + Duration::from_secs(5);
            while followers.iter().any(|&f| applied(f) < base + i) {
                assert!(
                    Instant::now() < deadline,
                    "round {round}: write {i} did not reach both followers while the leader's \
                     state machine was held (applied {:?}, wanted {})",
                    followers.iter().map(|&f| applied(f)).collect::<Vec<_>>(),
                    base + i
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        release.send(()).expect("the reader waits");
        reader.join().expect("reader");
        for w in writers {
            w.join().expect("writer").expect("acknowledged once the reader let go");
        }
        let key = format!("r{round}k3");
        let value = servers[l].shared().with_kv(|kv| kv.get(&key).map(str::to_string));
        assert_eq!(value.as_deref(), Some("v"));
    }
}
