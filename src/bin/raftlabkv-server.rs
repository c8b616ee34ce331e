//! `raftlabkv-server`: one node of a RaftLabKV cluster.
//!
//! ```text
//! raftlabkv-server --id node1 --addr 127.0.0.1:8080 \
//!     --peers node2=127.0.0.1:8081,node3=127.0.0.1:8082
//! ```

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use raftlabkv::server::auth::PeerSecret;
use raftlabkv::server::{Server, ServerConfig};
use raftlabkv::storage::{self, DurableOptions, StorageChoice};

/// One node of a RaftLabKV cluster: a key-value store replicated with Raft.
///
/// Every node serves the client API (GET /kv/get/{key}, POST /kv/put, DELETE /kv/delete/{key},
/// GET /kv/all, GET /status) and the peer RPCs on one address. Any node accepts any request.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None, args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// This node's id (defaults to --addr, as in the original's bare-address form).
    #[arg(long)]
    id: Option<String>,
    /// Address to listen on, for clients and peers.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// The other members: `id=host:port,...` or bare `host:port,...` (the id is then the address).
    /// Empty for a single-node cluster.
    #[arg(long, default_value = "", value_delimiter = ',')]
    peers: Vec<String>,
    /// Leader heartbeat interval, in milliseconds.
    #[arg(long, default_value_t = 50)]
    heartbeat_ms: u64,
    /// Election timeout range in milliseconds, `MIN-MAX`; each round draws a random value in it.
    #[arg(long, default_value = "300-600")]
    election_timeout_ms: String,
    /// Peer RPC timeout in milliseconds (a black-holed peer costs its own thread at most this).
    #[arg(long, default_value_t = 1000)]
    rpc_timeout_ms: u64,
    /// How long a client request waits for its commit before 504 (writes) or 503 (reads).
    #[arg(long, default_value_t = 5000)]
    request_timeout_ms: u64,
    /// HTTP worker threads. A client write holds its worker until it commits, and peer RPCs use
    /// the same pool, so keep this above the number of concurrent clients.
    #[arg(long, default_value_t = 128)]
    http_threads: usize,
    /// Threads that write the answers of client puts, so that a put does not hold its HTTP
    /// worker while it commits (one wake-up answers a whole batch). 0: each worker waits for its
    /// own put, as every other request does.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(0..=64))]
    answer_threads: u16,
    /// Largest accepted value, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    max_value_bytes: usize,
    /// Most log entries in one AppendEntries RPC (batches are also capped at 4 MiB).
    #[arg(long, default_value_t = 4096)]
    max_append_entries: usize,
    /// Pipelining: most AppendEntries awaiting their answers per follower (1 to 16). Each is sent
    /// by a replication thread of its own; a follower being probed gets one at a time.
    #[arg(long, default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=raftlabkv::raft::Config::MAX_INFLIGHT as u64))]
    max_inflight: u64,
    /// Largest accepted key, in bytes.
    #[arg(long, default_value_t = 4096)]
    max_key_bytes: usize,
    /// Most compares and operations in one transaction.
    #[arg(long, default_value_t = 128)]
    max_txn_ops: usize,
    /// How long a write's Idempotency-Key is remembered, in seconds (by the leader's clock,
    /// carried in the log, so every node forgets it at the same entry).
    #[arg(long, default_value_t = 600)]
    idempotency_ttl_secs: u64,
    /// Most Idempotency-Keys remembered; beyond it the soonest-expiring are forgotten.
    #[arg(long, default_value_t = 100_000)]
    idempotency_cap: u64,
    /// Where the write-ahead log lives (default `./data/<id>`). Locked while the node runs.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// fsync the log before acknowledging anything (`--fsync=false` is for tests and demos only:
    /// a machine crash can then lose acknowledged writes).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    fsync: bool,
    /// Keep everything in memory (no data dir at all): a restarted node starts empty.
    #[arg(long)]
    in_memory: bool,
    /// Roll WAL segments at this size, in bytes.
    #[arg(long, default_value_t = 64 << 20)]
    segment_bytes: u64,
    /// Take a snapshot (and compact the log) every this many applied entries; 0 disables.
    #[arg(long, default_value_t = 10_000)]
    snapshot_threshold: u64,
    /// Log entries kept behind a snapshot, so slightly lagging followers catch up from the log.
    #[arg(long, default_value_t = 1_000)]
    snapshot_trailing: u64,
    /// A file holding the cluster's shared peer secret (at least 16 bytes; surrounding whitespace
    /// is trimmed), the same file on every node: peer requests are then signed with it
    /// (HMAC-SHA256) and unsigned ones refused. Without it the peer endpoints are open to anyone
    /// who can reach --addr. Make one with `head -c 32 /dev/urandom | base64 > F; chmod 600 F`.
    #[arg(long)]
    peer_secret_file: Option<PathBuf>,
    /// The cluster's id, sent with every peer request; peer requests from another cluster are
    /// refused. Default: derived from this node's --id and --addr and the --peers list, which is
    /// the same on every node as long as all nodes name each other by the same addresses; set it
    /// (the same on every node) when they do not, e.g. through proxies.
    #[arg(long)]
    cluster_id: Option<String>,
    /// Join an existing cluster through these members' addresses (`host:port,...`) instead of
    /// bootstrapping one: start with an empty data dir, after `raftlabkv-client member add`. The
    /// node learns the cluster id from them and waits, without campaigning, until the leader
    /// sends it a configuration that contains it. Not needed on later restarts.
    #[arg(long, value_delimiter = ',')]
    join: Vec<String>,
    /// DISASTER RECOVERY ONLY, when a quorum of the voters is lost for good: restart this node
    /// from its data dir as the only voter of a new cluster (a new cluster id; every other member
    /// is dropped). Its whole log is kept and committed; writes acknowledged by the old cluster
    /// but missing from this node's log are lost, so pick the survivor with the most up-to-date
    /// log. Run it once, then restart without the flag and add new members with `--join`.
    /// See README "When a quorum is lost for good".
    #[arg(long)]
    force_new_cluster: bool,
    /// The fault lab, for learning and demos only: `POST /debug/fault` (and the dashboard's
    /// buttons) may then cut this node's links, drop or delay its messages, pause its Raft or
    /// slow its disk. Anyone who can reach --addr can do so: never on a cluster that matters.
    #[arg(long)]
    enable_fault_injection: bool,
    /// Serve `?consistency=lease` reads from the leader's lease, without a ReadIndex round
    /// (thesis §6.4.1). Linearizable only while no node's clock runs faster than another's by
    /// more than --lease-max-drift; the default stays ReadIndex. Give it to every node.
    #[arg(long)]
    lease_reads: bool,
    /// The clock-rate drift lease reads assume at most (0.05 = 5%).
    #[arg(long, default_value_t = 0.05)]
    lease_max_drift: f64,
    /// Taken off the lease on top of the drift, in milliseconds.
    #[arg(long, default_value_t = 50)]
    lease_margin_ms: u64,
    /// Log level: error, warn, info, debug, trace.
    #[arg(long, default_value = "info")]
    log_level: log::LevelFilter,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Print the hard state and every log record of a data dir (read-only).
    Dump {
        /// The node's data dir.
        #[arg(long)]
        data_dir: PathBuf,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

fn parse_peers(items: &[String]) -> Result<BTreeMap<String, String>, String> {
    let mut peers = BTreeMap::new();
    for item in items.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let (id, addr) = match item.split_once('=') {
            Some((id, addr)) => (id.trim(), addr.trim()),
            None => (item, item),
        };
        if id.is_empty() || addr.is_empty() || !addr.contains(':') {
            return Err(format!("bad --peers item {item:?}: expected id=host:port or host:port"));
        }
        if peers.insert(id.to_string(), addr.to_string()).is_some() {
            return Err(format!("peer id {id:?} appears twice in --peers"));
        }
    }
    Ok(peers)
}

fn parse_range(text: &str) -> Result<(u64, u64), String> {
    let (a, b) = text.split_once('-').ok_or_else(|| format!("expected MIN-MAX, got {text:?}"))?;
    let a: u64 = a.trim().parse().map_err(|_| format!("bad number {a:?}"))?;
    let b: u64 = b.trim().parse().map_err(|_| format!("bad number {b:?}"))?;
    if a == 0 || b <= a {
        return Err(format!("election timeout range {text:?} must be MIN-MAX with 0 < MIN < MAX"));
    }
    Ok((a, b))
}

fn run(args: Args) -> Result<(), String> {
    let id = args.id.clone().unwrap_or_else(|| args.addr.clone());
    let peers = parse_peers(&args.peers)?;
    if peers.contains_key(&id) {
        return Err(format!("--peers lists this node's own id {id:?}"));
    }
    let (emin, emax) = parse_range(&args.election_timeout_ms)?;
    if args.heartbeat_ms == 0 || args.heartbeat_ms >= emin {
        return Err("--heartbeat-ms must be above 0 and below the election timeout".into());
    }
    let mut config = ServerConfig::new(id.clone(), args.addr.clone(), peers);
    config.heartbeat = Duration::from_millis(args.heartbeat_ms);
    config.election_timeout = (Duration::from_millis(emin), Duration::from_millis(emax));
    config.rpc_timeout = Duration::from_millis(args.rpc_timeout_ms.max(1));
    config.request_timeout = Duration::from_millis(args.request_timeout_ms.max(1));
    config.http_threads = args.http_threads.max(1);
    config.answer_threads = usize::from(args.answer_threads);
    config.max_value_bytes = args.max_value_bytes;
    config.max_key_bytes = args.max_key_bytes.max(1);
    config.max_append_entries = args.max_append_entries.max(1);
    config.max_inflight = args.max_inflight as usize;
    config.max_txn_ops = args.max_txn_ops.max(1);
    config.idempotency_ttl = Duration::from_secs(args.idempotency_ttl_secs.max(1));
    config.idempotency_cap = args.idempotency_cap.max(1);
    config.snapshot_threshold = args.snapshot_threshold;
    config.snapshot_trailing = args.snapshot_trailing;
    if let Some(cluster_id) = &args.cluster_id {
        let ok = |c: char| c.is_ascii_alphanumeric() || "-._".contains(c);
        if cluster_id.is_empty() || cluster_id.len() > 64 || !cluster_id.chars().all(ok) {
            return Err(format!(
                "bad --cluster-id {cluster_id:?}: 1 to 64 letters, digits, '-', '.' or '_'"
            ));
        }
        config.cluster_id = cluster_id.clone();
    }
    config.join =
        args.join.iter().map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect();
    if !config.join.is_empty() && !config.peers.is_empty() {
        return Err(
            "--join and --peers exclude each other: --peers bootstraps a new cluster".into()
        );
    }
    if !config.join.is_empty() && args.cluster_id.is_none() {
        config.cluster_id = learn_cluster_id(&config.join)?;
    }
    if args.force_new_cluster {
        if args.in_memory {
            return Err(
                "--force-new-cluster recovers a node from its data dir; --in-memory has none"
                    .into(),
            );
        }
        if !config.join.is_empty() {
            return Err("--force-new-cluster and --join exclude each other".into());
        }
        config.force_new_cluster = true;
    }
    if args.enable_fault_injection {
        log::warn!(
            "{id}: --enable-fault-injection: anyone who can reach {} can cut, slow or pause this \
             node through POST /debug/fault. For learning and demos only.",
            args.addr
        );
        config.fault_injection = true;
    }
    if let Some(path) = &args.peer_secret_file {
        config.peer_secret = Some(PeerSecret::from_file(path).map_err(|e| e.to_string())?);
    }

    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
    ctrlc::set_handler(move || {
        let _ = stop_tx.try_send(());
    })
    .map_err(|e| format!("cannot install the signal handler: {e}"))?;

    config.lease_reads = args.lease_reads;
    config.lease_max_drift = args.lease_max_drift;
    config.lease_margin = Duration::from_millis(args.lease_margin_ms);
    if args.lease_reads {
        if !(0.0..=1.0).contains(&args.lease_max_drift) {
            return Err("--lease-max-drift must be between 0 and 1".into());
        }
        match config.lease() {
            Some(lease) => log::info!(
                "{id}: lease reads on: a lease lasts {} ms from a majority's answer (clock drift \
                 up to {}%, margin {} ms); every node must run with --lease-reads",
                lease.as_millis(),
                args.lease_max_drift * 100.0,
                args.lease_margin_ms
            ),
            None => {
                return Err("--lease-reads: the election timeout leaves no lease after the drift \
                            and the margin; raise --election-timeout-ms or lower the margin"
                    .into());
            }
        }
    }
    let choice = if args.in_memory {
        log::warn!(
            "{id}: --in-memory: nothing is written to disk; a restart loses this node's state \
             (and it never takes snapshots)"
        );
        StorageChoice::InMemory
    } else {
        if !args.fsync {
            log::warn!(
                "{id}: --fsync=false: writes are NOT made durable; a machine crash can lose \
                 acknowledged writes. For tests and demos only."
            );
        }
        let dir = args.data_dir.clone().unwrap_or_else(|| PathBuf::from("data").join(&id));
        let options =
            DurableOptions { segment_size: args.segment_bytes.max(4096), fsync: args.fsync };
        StorageChoice::Durable { dir, options }
    };
    let storage = storage::open(&choice).map_err(|e| e.to_string())?;
    if let Some(report) = &storage.report {
        log::info!("{id}: {report}");
    }
    let server = Server::start(config, storage).map_err(|e| e.to_string())?;
    log::info!(
        "{id} serving on http://{} (cluster {}, peer requests {})",
        args.addr,
        server.node().config.cluster_id,
        if server.node().config.peer_secret.is_some() { "signed" } else { "NOT authenticated" }
    );
    let _ = stop_rx.recv();
    // A leader hands its leadership over first, so a rolling restart costs no election timeout.
    if server.node().status().is_leader {
        match server.node().transfer_leadership(None) {
            Ok(t) => log::info!("{id} handed its leadership to {} before stopping", t.leader),
            Err(e) => log::warn!("{id} stops without handing its leadership over: {e}"),
        }
    }
    log::info!("{id} stopping");
    server.stop();
    Ok(())
}

/// The cluster id of the cluster a joining node joins, from the first `--join` member that
/// answers `/status`.
fn learn_cluster_id(members: &[String]) -> Result<String, String> {
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(2)).build();
    let mut errors = Vec::new();
    for addr in members {
        let status = agent
            .get(&format!("http://{addr}/status"))
            .call()
            .map_err(|e| e.to_string())
            .and_then(|r| r.into_string().map_err(|e| e.to_string()))
            .and_then(|text| {
                serde_json::from_str::<raftlabkv::api::Status>(&text).map_err(|e| e.to_string())
            });
        match status {
            Ok(s) if !s.cluster_id.is_empty() => return Ok(s.cluster_id),
            Ok(_) => errors.push(format!("{addr}: no cluster id in its status")),
            Err(e) => errors.push(format!("{addr}: {e}")),
        }
    }
    Err(format!(
        "cannot learn the cluster id from any --join member ({}); pass --cluster-id",
        errors.join("; ")
    ))
}

/// Fixes glibc malloc's mmap threshold at 1 MiB, which also stops its dynamic adjustment.
///
/// By default glibc serves a request above the threshold (128 KiB at start) with its own
/// mmap, and when such a block is freed it raises the threshold to that block's size and the
/// trim threshold to twice it. A node allocates a few blocks of tens of MB (the snapshot it
/// encodes, a large range reply, a snapshot it receives); after the first is freed, every later
/// allocation below that size comes from the arenas, and each of the worker threads' arenas keeps
/// tens of MB it never gives back. Measured on 100,000 keys of 100 B (3 nodes, snapshots every
/// 10,000 entries): a follower's resident set is 99–121 MB with the dynamic threshold and
/// 45–53 MB with it fixed. Blocks of 1 MiB and more stay mmapped and go back to the system when
/// freed; smaller ones are what the arenas are good at.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    use std::os::raw::c_int;
    const M_MMAP_THRESHOLD: c_int = -3;
    unsafe extern "C" {
        fn mallopt(param: c_int, value: c_int) -> c_int;
    }
    // SAFETY: mallopt only sets a malloc parameter; it is called before any other thread
    // exists, and an unsupported value is refused by returning 0, which changes nothing.
    if unsafe { mallopt(M_MMAP_THRESHOLD, 1 << 20) } == 0 {
        log::warn!("mallopt(M_MMAP_THRESHOLD) was refused; memory use may be higher");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

fn main() -> ExitCode {
    let args = Args::parse();
    let _ = simple_logger::SimpleLogger::new().with_level(args.log_level).env().init();
    tune_allocator();
    if let Some(Cmd::Dump { data_dir, json }) = &args.command {
        let mut out = std::io::stdout().lock();
        return match raftlabkv::storage::dump::dump(data_dir, *json, &mut out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("raftlabkv-server dump: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raftlabkv-server: {e}");
            ExitCode::FAILURE
        }
    }
}
