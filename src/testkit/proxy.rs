//! A small TCP proxy for one directed peer link, so tests can cut, black-hole, delay or break it.
//!
//! Node i reaches node j at the proxy's address; the proxy forwards bytes to j's real address.
//! Request and response of an RPC from i to j both travel through this link, so cutting i→j makes
//! i's calls to j fail while j's calls to i (another proxy) go on: a one-way cut.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use parking_lot::Mutex;
use rand::Rng;

/// What the link does to traffic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LinkMode {
    /// Forward everything.
    Pass,
    /// Refuse: new connections are closed at once, open ones are cut.
    Refuse,
    /// Black hole: connections are accepted and bytes swallowed; nothing ever answers.
    Blackhole,
    /// Forward each chunk after `base_ms ± jitter_ms`.
    Delay {
        /// Base delay.
        base_ms: u64,
        /// Uniform jitter around the base.
        jitter_ms: u64,
    },
    /// Forward, but break each chunk's connection with this probability (0–1): lost RPCs.
    Lossy {
        /// Chance that a chunk kills its connection instead of passing.
        loss: f64,
    },
}

/// A running proxy.
pub struct LinkProxy {
    /// The address to dial instead of the target.
    pub addr: String,
    mode: Arc<Mutex<LinkMode>>,
    stop: Arc<AtomicBool>,
    /// Bumped on every mode change, so pipes notice cuts of open connections.
    generation: Arc<std::sync::atomic::AtomicU64>,
}

impl LinkProxy {
    /// Starts a proxy on a free loopback port, forwarding to `target`.
    pub fn start(target: &str) -> std::io::Result<LinkProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?.to_string();
        listener.set_nonblocking(true)?;
        let mode = Arc::new(Mutex::new(LinkMode::Pass));
        let stop = Arc::new(AtomicBool::new(false));
        let generation = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (m, s, g, target) =
            (mode.clone(), stop.clone(), generation.clone(), target.to_string());
        thread::Builder::new().name(format!("proxy-{addr}")).spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        spawn_connection(client, &target, m.clone(), s.clone(), g.clone());
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        })?;
        Ok(LinkProxy { addr, mode, stop, generation })
    }

    /// Changes what the link does (applies to open connections too).
    pub fn set_mode(&self, mode: LinkMode) {
        *self.mode.lock() = mode;
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The current mode.
    pub fn mode(&self) -> LinkMode {
        *self.mode.lock()
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn spawn_connection(
    client: TcpStream,
    target: &str,
    mode: Arc<Mutex<LinkMode>>,
    stop: Arc<AtomicBool>,
    generation: Arc<std::sync::atomic::AtomicU64>,
) {
    let current = *mode.lock();
    if current == LinkMode::Refuse {
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    let server = if current == LinkMode::Blackhole {
        None
    } else {
        TcpStream::connect_timeout(
            &match target.parse() {
                Ok(a) => a,
                Err(_) => return,
            },
            Duration::from_millis(500),
        )
        .ok()
    };
    // Forward each chunk as it comes: without this, Nagle's algorithm holds a small second write
    // (an HTTP body after its headers) until the first is acknowledged, adding ~40 ms.
    let _ = client.set_nodelay(true);
    if let Some(s) = &server {
        let _ = s.set_nodelay(true);
    }
    if current != LinkMode::Blackhole && server.is_none() {
        // Target down: refuse, as the target itself would have.
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    let Some(server) = server else {
        // Black hole: swallow what the client sends, answer nothing.
        let _ =
            thread::Builder::new().name("proxy-hole".into()).spawn(move || swallow(client, stop));
        return;
    };
    let pairs =
        [(client.try_clone(), server.try_clone()), (server.try_clone(), client.try_clone())];
    for (from, to) in pairs {
        let (Ok(from), Ok(to)) = (from, to) else { return };
        let (mode, stop, generation) = (mode.clone(), stop.clone(), generation.clone());
        let _ = thread::Builder::new()
            .name("proxy-pipe".into())
            .spawn(move || pipe(from, to, mode, stop, generation));
    }
}

fn swallow(mut client: TcpStream, stop: Arc<AtomicBool>) {
    let _ = client.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 16 * 1024];
    while !stop.load(Ordering::SeqCst) {
        match client.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

fn pipe(
    mut from: TcpStream,
    mut to: TcpStream,
    mode: Arc<Mutex<LinkMode>>,
    stop: Arc<AtomicBool>,
    generation: Arc<std::sync::atomic::AtomicU64>,
) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = vec![0u8; 64 * 1024];
    let born = generation.load(Ordering::SeqCst);
    let close = |a: &TcpStream, b: &TcpStream| {
        let _ = a.shutdown(Shutdown::Both);
        let _ = b.shutdown(Shutdown::Both);
    };
    loop {
        if stop.load(Ordering::SeqCst) {
            return close(&from, &to);
        }
        let n = match from.read(&mut buf) {
            Ok(0) => return close(&from, &to),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                // Idle: a cut made meanwhile still closes this connection.
                if generation.load(Ordering::SeqCst) != born && *mode.lock() == LinkMode::Refuse {
                    return close(&from, &to);
                }
                continue;
            }
            Err(_) => return close(&from, &to),
        };
        let current = *mode.lock();
        match current {
            LinkMode::Pass => {}
            LinkMode::Refuse => return close(&from, &to),
            LinkMode::Blackhole => continue,
            LinkMode::Delay { base_ms, jitter_ms } => {
                let jitter =
                    if jitter_ms > 0 { rand::thread_rng().gen_range(0..=2 * jitter_ms) } else { 0 };
                let ms = (base_ms + jitter).saturating_sub(jitter_ms);
                thread::sleep(Duration::from_millis(ms));
            }
            LinkMode::Lossy { loss } => {
                if rand::thread_rng().gen_bool(loss.clamp(0.0, 1.0)) {
                    return close(&from, &to);
                }
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            return close(&from, &to);
        }
    }
}
