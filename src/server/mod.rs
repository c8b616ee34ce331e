//! The threaded shell around the deterministic core, one file per job:
//!
//! | file | job |
//! |---|---|
//! | `config.rs` | [`ServerConfig`]: addresses, timeouts, limits, cluster id, peer secret |
//! | `auth.rs` | signing and checking peer requests (`--peer-secret-file`), the cluster id check |
//! | `node.rs` | [`Node`]: the state every thread shares, the lock rule, the client operations |
//! | `reconfig.rs` | the node's membership operations: propose a configuration change and wait, the members, leadership transfer |
//! | `loops.rs` | the `ticker`, `apply` and `sync` threads |
//! | `peer.rs` | talking to peers: the per-peer replication threads, and the node's answer to a peer's RPC |
//! | `transport.rs` | how a peer RPC travels: over HTTP, or in-process for tests |
//! | `binary.rs` | the compact encoding of an AppendEntries on the replication path (every other peer message is JSON) |
//! | `http.rs` | the HTTP listener, its workers and routes |
//! | `kv_api.rs` | the key-value routes: get, put, delete, all, range, txn, idempotency keys, consistency evidence |
//! | `wire.rs` | what the routes share: replies, bodies, keys, forwarding to the leader |
//! | `pool_kick.rs` | a workaround for a tiny_http pool bug, run by the listener |
//! | `pending.rs` | client requests waiting for a commit or a confirmed read |
//! | `oneshot.rs` | the one-answer slot a waiting request parks on |
//! | `answers.rs`, `answer_queue.rs` | the answer threads: a client's put (once applied) or linearizable get (once its read barrier passes) answered without its worker waiting for it |
//! | `proposals.rs` | the inbox that turns concurrent writes into one proposal per Raft lock |
//! | `health.rs` | the checks of `/readyz` and `/health` |
//! | `metrics.rs` | what the node measures about itself, for `/status` and `/metrics`, without the Raft lock |
//! | `snapshot.rs` | taking, sending, receiving and installing snapshots |
//!
//! This file only wires them together: [`Server::start`] and [`Server::stop`]. Among the others
//! imports run one way (`tests/layering.rs` checks): `binary`, `config`, `oneshot` and
//! `pool_kick` import none of them, `transport` only `binary`; `pending` imports `oneshot`, `proposals` both, `answer_queue` `pending`;
//! `metrics` imports `transport`; `node` imports `config`, `metrics`, `pending` and
//! `proposals`; `snapshot` imports
//! `node` and `transport`; `health` and `reconfig` import `node`; `peer`, `loops` and `http` import from those and from nothing above
//! them.
//!
//! The threads and how they meet are drawn once, in the [crate docs](crate).
//!
//! One rule (spelled out in [`node`]): **lock, step or tick, route, unlock, then act.**

mod answer_queue;
mod answers;
pub mod auth;
pub mod binary;
pub mod config;
pub mod debug;
pub mod events;
pub mod faults;
pub mod health;
pub mod http;
mod kv_api;
pub mod loops;
mod members;
pub mod metrics;
pub mod node;
pub mod oneshot;
pub mod peer;
pub mod pending;
pub mod pool_kick;
pub mod proposals;
mod reconfig;
pub mod snapshot;
pub mod startup;
pub mod transport;
mod wire;

pub use config::ServerConfig;
pub use node::Node;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::storage::NodeStorage;
use http::Listener;
use node::{Queues, spawn};
use transport::Transport;

/// A running node: its threads and shared state.
pub struct Server {
    node: Arc<Node>,
    threads: Vec<JoinHandle<()>>,
    http: Option<Listener>,
}

impl Server {
    /// Starts a node over HTTP: binds `config.addr`, starts every thread, over the storage
    /// [`crate::storage::open`] returned (without a snapshot store the node never snapshots).
    pub fn start(config: ServerConfig, storage: NodeStorage) -> Result<Server> {
        let listener = Listener::bind(&config.addr)?;
        if config.peer_secret.is_none() {
            log::warn!(
                "{}: NO PEER SECRET (--peer-secret-file): the peer endpoints (/raft/*) accept Raft \
                 messages from anyone who can reach {}; one forged message can depose the \
                 leader. Use a secret unless this port is reachable only by the cluster.",
                config.id,
                config.addr
            );
        }
        let (node, queues) = Node::new(config, storage)?;
        // After the node read its log: it signs with the cluster id kept there.
        let auth = node.config.peer_auth();
        let transport = Arc::new(
            transport::HttpTransport::new(node.config.rpc_timeout, auth)
                .with_traffic(node.metrics.clone()),
        );
        let mut server = Self::run(node, queues, transport)?;
        let spawned = listener.spawn(&server.node, &mut server.threads);
        server.http = Some(listener);
        spawned?;
        Ok(server)
    }

    /// Starts a node's core threads over any transport (no HTTP listener: tests call
    /// [`Node`] methods directly, e.g. through [`transport::LocalTransport`]).
    pub fn start_with_transport(
        config: ServerConfig,
        storage: NodeStorage,
        transport: Arc<dyn Transport>,
    ) -> Result<Server> {
        let (node, queues) = Node::new(config, storage)?;
        Self::run(node, queues, transport)
    }

    /// Starts the threads of a node.
    fn run(node: Node, queues: Queues, transport: Arc<dyn Transport>) -> Result<Server> {
        let mut server = Server { node: Arc::new(node), threads: Vec::new(), http: None };
        let threads = &mut server.threads;
        for (id, rx) in queues.peers {
            peer::spawn_replicators(&server.node, &id, &rx, &transport, threads)?;
        }
        let (n, t, new_peers) = (server.node.clone(), transport.clone(), queues.new_peers);
        threads.push(spawn("peers".into(), move || peer::spawn_new_peers(&n, &new_peers, &t))?);
        let n = server.node.clone();
        threads.push(spawn("apply".into(), move || loops::apply(&n, &queues.apply))?);
        let n = server.node.clone();
        threads.push(spawn("sync".into(), move || loops::sync(&n, &queues.sync))?);
        let n = server.node.clone();
        threads.push(spawn("ticker".into(), move || loops::ticker(&n))?);
        Ok(server)
    }

    /// The node: the state its threads share (for handlers and tests).
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Same as [`Server::node`], under the name the in-process tests use.
    pub fn shared(&self) -> &Arc<Node> {
        &self.node
    }

    /// Stops every thread and waits for them.
    pub fn stop(mut self) {
        self.stop_threads();
    }

    fn stop_threads(&mut self) {
        self.node.shutdown.store(true, Ordering::SeqCst);
        self.node.feed.close();
        if let Some(http) = &self.http {
            http.unblock(self.node.config.http_threads);
        }
        // A waiting write is in the log already and may still commit (the followers may have it):
        // its outcome is unknown. A waiting read has returned nothing: retrying it is safe.
        self.node.with_pending(|pending| {
            pending.fail_all(
                Error::OutcomeUnknown(
                    "node is shutting down; the write was proposed and may still be committed"
                        .into(),
                ),
                Error::Unavailable("node is shutting down".into()),
            )
        });
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_threads();
    }
}
