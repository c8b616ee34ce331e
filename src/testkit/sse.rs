//! A reader of a node's `GET /debug/events` (Server-Sent Events), for tests and measurements:
//! a thread parses the stream into `(event, data)` pairs.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One SSE stream, read by a thread of its own: `(event, data)` pairs, and the status line.
pub struct Stream {
    /// The HTTP status line (`HTTP/1.1 200 OK`), empty if none came within 10 s.
    pub status: String,
    events: Receiver<(String, Value)>,
    socket: TcpStream,
}

/// Opens `GET /debug/events` on `addr`.
pub fn open(addr: &str) -> Stream {
    let mut socket = TcpStream::connect(addr).expect("connect");
    // A stream that is not served (a worker-bound design with every worker taken) fails the
    // test instead of hanging it.
    let _ = socket.set_read_timeout(Some(Duration::from_secs(10)));
    let request =
        format!("GET /debug/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    socket.write_all(request.as_bytes()).expect("send the request");
    let mut reader = BufReader::new(socket.try_clone().expect("clone"));
    let mut status = String::new();
    let _ = reader.read_line(&mut status);
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let mut event = String::new();
        for line in reader.lines() {
            let Ok(line) = line else { return };
            if let Some(name) = line.strip_prefix("event: ") {
                event = name.to_string();
            } else if let Some(data) = line.strip_prefix("data: ") {
                let value = serde_json::from_str(data).unwrap_or(Value::String(data.into()));
                if tx.send((std::mem::take(&mut event), value)).is_err() {
                    return;
                }
            }
        }
    });
    Stream { status: status.trim().to_string(), events: rx, socket }
}

impl Drop for Stream {
    /// Closes the connection (the reader thread holds a clone of the socket).
    fn drop(&mut self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }
}

impl Stream {
    /// The first event of `kind` for which `f` holds, within `within`.
    pub fn wait(&self, within: Duration, kind: &str, f: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.events.recv_timeout(left) {
                Ok((k, v)) if k == kind && f(&v) => return Some(v),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }
}
