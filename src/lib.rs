//! # RaftLabKV
//!
//! A key-value store replicated with the Raft consensus algorithm: synchronous, threaded, no async
//! runtime. Built to be read — the consensus core is a deterministic state machine you can step
//! through — and built to be trusted: writes are acknowledged only once committed by a majority and
//! durable, reads are linearizable unless you ask otherwise.
//!
//! ## The map
//!
//! | module | what it is |
//! |---|---|
//! | [`raft`] | the consensus core: `RaftNode` driven by `step` / `tick` / `propose` / `read`, returning an `Output`. No threads, clocks, sockets or locks. Its module docs are an essay on Raft mapped to the code. |
//! | [`storage`] | durable storage: `DurableStorage`, a segmented write-ahead log with CRCs that implements the core's `raft::Storage` port, its `Syncer` (group commit, reclaim), snapshot files, `dump`; `storage::open` hands a node all three |
//! | [`kv`] | the state machine: commands, apply, revisions, ranges, transactions, the idempotency table, snapshot encoding. Knows nothing of Raft. |
//! | [`server`] | the threaded shell, one file per job: config, node state and the lock rule, thread loops, peer threads, HTTP listener and routes |
//! | [`client`] | a blocking client library: leader discovery, retries, key escaping; the CLI's shell and bench |
//! | [`chaos`] *(harness)* | the fault-injection harness: nemesis, recording clients, status sampler, checks (`raftlabkv-chaos`, `raftlabkv-client verify`) |
//! | [`check`] *(harness)* | a linearizability checker for KV histories (Wing–Gong/Lowe with memoisation, per key) |
//! | [`sim`] *(harness)* | an in-process cluster over a simulated network: the deterministic test layer |
//! | [`testkit`] *(harness)* | real server processes and TCP link proxies, for real-binary tests |
//! | [`error`] | one `Error` enum, and the one place it becomes an HTTP status |
//! | [`api`] | the wire types: request and reply bodies, the error body, `/status` — shared by server, client, chaos harness and testkit |
//!
//! Imports run one way: `server` → `storage` → `raft`, `server` → `kv`; `raft` and `kv` import
//! no other module of the crate but `error`. The modules marked *(harness)* are test support and
//! tools, behind the `harness` cargo feature (on by default); the product builds without it.
//!
//! ## One node's threads
//!
//! ```text
//!   clients ──HTTP──▶ [http-0 … http-N]  tiny_http worker pool: routes, propose/read, wait
//!   peers   ──HTTP──▶        │            (peer RPCs are stepped here too)
//!                            ▼
//!   [ticker] ──tick──▶ Mutex<RaftNode> ──route (non-blocking, under the lock)──┬──▶ [peer-nodeX] ──ureq──▶ peer
//!                            ▲                                                 │     one per peer (per pipelining slot), bounded queue
//!                            │ responses, persisted()                          ├──▶ [apply] ──▶ RwLock<KvStore>
//!                            └──────────────── [sync] ◀── sync jobs ───────────┘     wakes waiting clients
//!                                               fsync (group commit)
//! ```
//!
//! The rule that keeps this simple: **lock, step or tick, route, unlock, then wait.** No thread
//! holds the Raft lock across an HTTP call, an fsync, or a wait for a commit.
//!
//! Besides these, a `snapshot` thread now and then encodes a frozen copy of the state machine and
//! writes it, takes the Raft lock only to record it (the core then compacts the log), and after
//! unlocking deletes the WAL segments and frees the entries the compaction made unnecessary
//! (`Syncer::reclaim`); the `http-kick` thread works around a tiny_http pool bug
//! (`server/pool_kick.rs`); and on the leader, `http-answer-N` threads write the answers of
//! client puts and linearizable gets whose workers did not wait for them (`server/answers.rs`:
//! the worker proposes, or starts the read, with a callback, and the callback queues the answer
//! when the apply thread or the read barrier is done).
//!
//! ## Where is…
//!
//! | looking for | go to |
//! |---|---|
//! | the election timeout, becoming candidate/leader, PreVote | `raft/node/mod.rs`: `tick`; `raft/node/election.rs`: `become_pre_candidate`, `become_candidate`, `become_leader`, `handle_pre_vote` |
//! | the vote rules (up-to-date check, one vote per term) | `raft/node/election.rs`: `handle_request_vote`, `raft/log.rs`: `is_up_to_date` |
//! | log replication, the consistency check, truncation | `raft/node/replication.rs`: `maybe_send_append`, `handle_append_entries`; `raft/log.rs`: `append_from_leader` |
//! | when an entry is committed (Figure 8) | `raft/node/replication.rs`: `maybe_commit` |
//! | linearizable reads (ReadIndex) | `raft/node/read.rs`: `read`, `check_reads`; `server/node.rs`: `linearizable_barrier`, `read_then` (a get answered by an answer thread) |
//! | pipelining (`--max-inflight`), probe / replicate | `raft/role.rs`: `Progress::window`, `replicating`; `raft/node/replication.rs`: `maybe_send_append`, `handle_append_response`; `server/peer.rs`: `spawn_replicators`; `tests/raft_pipelining.rs`, `scripts/pipelining.sh` |
//! | batching: many clients' writes in one proposal | `server/proposals.rs` (the combiner), `server/node.rs`: `write`, `propose_batch`; the core's `raft/node/mod.rs`: `propose_batch` |
//! | where a put's CPU goes (per thread, perf buckets) | `scripts/profile.sh`, `scripts/profile_buckets.py` |
//! | what is fsynced when (group commit) | `storage/durable/sync.rs` (module docs), `server/loops.rs`: `sync`; `server/peer.rs`: `handle_rpc` |
//! | the on-disk format, crash recovery | `storage/wal/mod.rs`, `storage/durable/replay.rs` (the rules), `storage/durable/recovery.rs` (`open`) |
//! | printing a data dir (`raftlabkv-server dump`) | `storage/dump.rs` |
//! | HTTP routes, status codes, limits | `api.rs` (the route table), `server/http.rs`: `route`; `error.rs` (the status table) |
//! | the key-value routes, consistency headers, forwarding | `server/kv_api.rs`; `server/wire.rs` (`Reply`, `Evidence`, `forward`) |
//! | ranges, views of the store without its lock | `kv/range.rs` (`Bounds`, `walk`, `View`) |
//! | how a key is kept in memory (records back to back in pages), memory per key | `kv/record.rs` (the record's layout), `kv/pages.rs` (`Pages`); measured by `examples/measure_coord.rs` (`memory`) |
//! | the wire format of peer messages (compact AppendEntries, JSON for the rest) | `server/binary.rs`, `server/transport.rs`: `HttpTransport::call`, `server/http.rs`: `peer_rpc` |
//! | transactions and their checks, compare-and-set | `kv/txn.rs`; applied in `kv/mod.rs`: `execute` |
//! | exactly-once writes (`Idempotency-Key`) | `kv/idempotency.rs`; stamped in `server/node.rs`: `write`; retried in `client/mod.rs`: `execute` |
//! | the CLI's `txn` text format, `-w` output | `client/coord.rs` |
//! | the dashboard (`/dashboard`), `/debug/raft`, `/debug/events` (SSE), the fault lab (`/debug/fault`, `--enable-fault-injection`) | `server/dashboard.html` (the page), `server/debug.rs`, `server/events.rs` (the feed; published from `server/peer.rs`, `Node::route`, `server/snapshot.rs`), `server/faults.rs` (hooks in `server/peer.rs`, `server/loops.rs`, the syncer's `SyncObserver::before_fsync`); `tests/dashboard.rs` (headless Chromium), `tests/debug.rs`, `tests/events.rs` |
//! | metrics (`/metrics`), what `/status` measures (fsync p99, leader changes, snapshot transfer bytes) | `server/metrics.rs`; hooks in `storage/durable/sync.rs` (`SyncObserver`), `server/peer.rs`, `server/transport.rs` (`Traffic`), `server/snapshot.rs`, `server/http.rs`; the core's event counts `raft::Counters`; `tests/observability.rs` |
//! | health (`/livez`, `/readyz`, `/health`) | `server/health.rs`; routes in `server/http.rs` |
//! | the JSON bodies on the wire, `/status`, key escaping in paths | `api.rs` |
//! | follower → leader forwarding | `server/http.rs`: `forward` |
//! | membership: configuration entries, learners, single-server changes, removing the leader | `raft/membership.rs`, `raft/node/membership.rs`; the shell follows it in `server/node.rs` (`follow_membership`, `Links`); HTTP in `server/members.rs`, the node's operations in `server/reconfig.rs`; tests `tests/raft_membership/`, `tests/membership.rs`, `examples/replace_node.sh` |
//! | leadership transfer, and on SIGTERM | `raft/node/membership.rs`: `transfer_leadership`, `handle_timeout_now`; `server/reconfig.rs`: `transfer_leadership`; `bin/raftlabkv-server.rs`; `tests/raft_transfer.rs` |
//! | restarting a survivor alone when a quorum is lost (`--force-new-cluster`) | `raft/node/recovery.rs`; `server/startup.rs`: `force_new_cluster` |
//! | joining a cluster (`--join`) | `server/config.rs`: `bootstrap_membership`; `bin/raftlabkv-server.rs`: `learn_cluster_id` |
//! | peer authentication (`--peer-secret-file`, HMAC), the cluster id check | `server/auth.rs`; `server/config.rs`: `cluster_id_for` |
//! | the client's retry rules | `client/mod.rs` (module docs) |
//! | `status` table, `status --explain` (the sentences and their thresholds) | `client/status_table.rs`, `client/explain.rs`; `tests/explain.rs` (each sentence on real binaries) |
//! | the core told message by message: elections, PreVote, check quorum, fast backtracking, ReadIndex, snapshots, persist-before-ack, membership changes, leadership transfer | `tests/scripts/*.txt`, run by `tests/scripts.rs` over `sim/script/` (format and commands in its docs); `UPDATE_SCRIPTS=1 cargo test --release --test scripts` rewrites the expected outputs |
//! | the MIT 6.5840 tests | `tests/raft_*.rs` over `sim/` (`sim/disk.rs`: a write is durable only once a simulated fsync covers it) |
//! | the core driven by hand, in 200 lines | `examples/three_nodes.rs` |
//! | the client library in 90 lines | `examples/hello_client.rs` |
//! | real-process tests, partitions via proxies | `tests/cluster.rs`, `tests/crash.rs`, `tests/snapshot.rs`, `testkit/` |
//! | snapshots: taking, sending, installing | `server/snapshot.rs`, `storage/snapshot/` (files, format, chunked transfer), `raft/node/snapshot.rs`: `snapshot_taken`, `maybe_send_snapshot`, `handle_install_snapshot` |
//! | chaos runs and linearizability checks | `chaos/`, `check/`, `tests/chaos.rs`, `tests/sim_kv.rs` |

// The product: what the server and client binaries are made of.
pub mod api;
pub mod client;
pub mod error;
pub mod kv;
pub mod raft;
pub mod server;
pub mod storage;

// Test support and tools, behind the `harness` feature (on by default): the product library
// builds without them (`cargo build --no-default-features`).
#[cfg(feature = "harness")]
pub mod chaos;
#[cfg(feature = "harness")]
pub mod check;
#[cfg(feature = "harness")]
pub mod sim;
#[cfg(feature = "harness")]
pub mod testkit;

pub use error::{Error, Result};
