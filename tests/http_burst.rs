//! A burst of new keep-alive connections to a real `raftlabkv-server`: every one is answered
//! promptly while all of them stay open. (tiny_http 0.12's connection pool leaves connections of
//! a burst queued, unread, until another connection closes; see `src/server/pool_kick.rs`.)

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use raftlabkv::testkit::KillOnDrop;

#[test]
fn a_burst_of_keep_alive_connections_is_answered() {
    // A fresh server each round: its pool starts with 4 idle threads, the case the race needs.
    for round in 0..10 {
        let port = raftlabkv::testkit::cluster::free_port().expect("port");
        let addr = format!("127.0.0.1:{port}");
        let _server = KillOnDrop(
            Command::new(env!("CARGO_BIN_EXE_raftlabkv-server"))
                .args(["--id", "solo", "--addr", &addr, "--in-memory", "--log-level", "warn"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn server"),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "the server did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(32));
        let clients: Vec<_> = (0..32)
            .map(|_| {
                let (addr, barrier) = (addr.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let mut c = TcpStream::connect(&addr).expect("connect");
                    c.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
                    let t = Instant::now();
                    c.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
                    let mut buf = [0u8; 64];
                    let answered =
                        c.read(&mut buf).is_ok_and(|n| buf[..n].starts_with(b"HTTP/1.1 200"));
                    let took = t.elapsed();
                    // Keep the connection open, as a keep-alive client does, until all are done.
                    barrier.wait();
                    (answered, took)
                })
            })
            .collect();
        let results: Vec<(bool, Duration)> =
            clients.into_iter().map(|c| c.join().expect("client")).collect();
        let unanswered = results.iter().filter(|r| !r.0).count();
        let slowest = results.iter().map(|r| r.1).max().unwrap_or_default();
        println!("round {round}: {unanswered} of 32 unanswered, slowest answer {slowest:?}");
        assert_eq!(unanswered, 0, "round {round}: connections left unread by the server");
    }
}
