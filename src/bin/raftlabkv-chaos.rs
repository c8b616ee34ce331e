//! `raftlabkv-chaos`: fault injection against a real cluster, with a linearizability check.
//!
//! ```text
//! raftlabkv-chaos --nodes 5 --time 120 --seed 7 --faults partition,pause,kill
//! raftlabkv-chaos --server-flag=--request-timeout-ms=1500 -- --some-other-server-flag 3
//! ```
//!
//! Prints one line, `PASS ...` or `FAIL ...`, and exits 0 on a pass, 1 on a failure (the report,
//! timeline and failing history are in `--out`), 2 when the run could not be set up.
//! See `raftlabkv::chaos` for what the nemesis does and what is checked.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use raftlabkv::chaos::{self, ChaosConfig, FaultKind};

/// Starts a local cluster, injects seeded faults while clients run, and checks the history.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Cluster size (3 to 9; partitions need at least three nodes to mean anything).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(3..=9))]
    nodes: u64,
    /// Seconds of clients and faults.
    #[arg(long, default_value_t = 30)]
    time: u64,
    /// Seed for the nemesis and the clients (default: random, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Fault kinds, comma-separated: partition,pause,kill,killall,restart,oneway,delay,lossy; or
    /// all, or none.
    #[arg(long, default_value = "all")]
    faults: String,
    /// Client threads.
    #[arg(long, default_value_t = 10)]
    clients: usize,
    /// Keys in the workload.
    #[arg(long, default_value_t = 8)]
    keys: usize,
    /// Per-request client timeout, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    request_timeout_ms: u64,
    /// Time budget of the linearizability check, in seconds.
    #[arg(long, default_value_t = 120)]
    check_budget: u64,
    /// The server binary (default: `raftlabkv-server` next to this one).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Output directory (default: a new temporary directory).
    #[arg(long)]
    out: Option<PathBuf>,
    /// An extra flag for every server; repeat it (`--server-flag=--snapshot-threshold=100`).
    #[arg(long = "server-flag", allow_hyphen_values = true)]
    server_flags: Vec<String>,
    /// Keep the node data dirs even when the run passes.
    #[arg(long)]
    keep_data: bool,
    /// Lease reads: the clients' reads ask for `?consistency=lease` and every server runs with
    /// `--lease-reads`; the check holds them to linearizability like any other read.
    #[arg(long)]
    lease_reads: bool,
    /// More extra server flags, after `--`.
    #[arg(last = true)]
    extra: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let faults = match FaultKind::parse_list(&args.faults) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("raftlabkv-chaos: {e}");
            return ExitCode::from(2);
        }
    };
    let server_bin = match args.server_bin.clone().or_else(sibling_server) {
        Some(p) => p,
        None => {
            eprintln!("raftlabkv-chaos: cannot find raftlabkv-server; pass --server-bin");
            return ExitCode::from(2);
        }
    };
    let seed = args.seed.unwrap_or_else(rand::random);
    let mut config = ChaosConfig::new(server_bin, seed);
    config.nodes = args.nodes as usize;
    config.duration = Duration::from_secs(args.time);
    config.faults = faults;
    config.clients = args.clients.max(1);
    config.keys = args.keys.max(1);
    config.request_timeout = Duration::from_millis(args.request_timeout_ms.max(1));
    config.check_budget = Duration::from_secs(args.check_budget);
    config.server_flags = args.server_flags.iter().chain(&args.extra).cloned().collect();
    config.lease_reads = args.lease_reads;
    config.keep_data = args.keep_data;
    if let Some(out) = args.out {
        config.out_dir = out;
    }
    eprintln!(
        "raftlabkv-chaos: seed {seed}, {} nodes, {} s, output in {}",
        config.nodes,
        args.time,
        config.out_dir.display()
    );
    match chaos::run(&config) {
        Ok(report) => {
            println!("{}", report.summary());
            if report.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Err(e) => {
            eprintln!("raftlabkv-chaos: {e}");
            ExitCode::from(2)
        }
    }
}

/// `raftlabkv-server` in this executable's directory.
fn sibling_server() -> Option<PathBuf> {
    let path = std::env::current_exe().ok()?.parent()?.join("raftlabkv-server");
    path.exists().then_some(path)
}
