//! `raftlabkv-client`: a command-line client, interactive shell and load generator for RaftLabKV.
//!
//! ```text
//! raftlabkv-client [--servers a:1,b:2] [--json] [--stale]           # interactive shell
//! raftlabkv-client put <key> <value...>                               # one command, then exit
//! raftlabkv-client get <key> | delete <key> | getall | status
//! raftlabkv-client get --prefix cfg/ [--limit N] [--keys-only] [-w table|json]
//! raftlabkv-client put --if-revision 42 <key> <value> | put --if-absent <key> <value>
//! raftlabkv-client cas <key> <old> <new> | del --prefix tmp/ | txn [--file t.json] < txn.txt
//! raftlabkv-client bench --clients 8 --duration 10 --workload mixed   # load test
//! raftlabkv-client verify --time 30 --clients 8 --keys 5              # linearizability check
//! ```
//!
//! Exit status: 0 on success, 1 when the command failed (including `get` of a missing key, and a
//! bench in which no request succeeded), 2 on a usage error. Results go to standard output, errors to standard error; with `--json`
//! both are JSON (errors as `{"error": code, "message": text}`).

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use raftlabkv::Error;
#[cfg(feature = "harness")]
use raftlabkv::chaos::workload::{WorkloadConfig, verify};
#[cfg(feature = "harness")]
use raftlabkv::check::{Verdict, history_to_json};
use raftlabkv::client::bench::{self, BenchConfig, Workload};
use raftlabkv::client::coord::{self, Format};
use raftlabkv::client::shell::{self, Command, RunOptions};
use raftlabkv::client::{Client, Consistency, DEFAULT_SERVERS};

#[derive(Parser, Debug)]
#[command(
    name = "raftlabkv-client",
    version,
    args_override_self = true,
    about = "Client for RaftLabKV. Without a command, opens an interactive shell."
)]
struct Cli {
    /// Comma-separated server addresses (host:port). Any node accepts any request.
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_SERVERS, global = true)]
    servers: Vec<String>,

    /// Print machine-readable JSON (results on stdout, errors on stderr).
    #[arg(long, global = true)]
    json: bool,

    /// Stale reads: `get` and `getall` read the answering node's local state.
    #[arg(long, global = true)]
    stale: bool,

    /// Lease reads: `get` and `bench` gets ask for `?consistency=lease` (served from the
    /// leader's lease where the servers run with --lease-reads; else linearizable as usual).
    #[arg(long, global = true, conflicts_with = "stale")]
    lease: bool,

    /// Per-request timeout in seconds.
    #[arg(long, default_value = "5", value_parser = parse_secs, global = true)]
    timeout: Duration,

    /// Give up retrying after this many seconds.
    #[arg(long, default_value = "10", value_parser = parse_secs, global = true)]
    deadline: Duration,

    /// Log retries and leader changes to stderr.
    #[arg(short, long, global = true)]
    verbose: bool,

    /// Output format of ranges, transactions and conditional writes: simple, table or json
    /// (`--json` is `-w json`).
    #[arg(short = 'w', long = "write-out", value_enum, default_value = "simple", global = true)]
    write_out: Format,

    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Write a key. Several value words are joined with single spaces. With --if-revision R only
    /// if the key's mod_revision is R; with --if-absent only if it does not exist (exits 1 when
    /// not written, printing the key as it is).
    Put {
        key: String,
        #[arg(required = true, num_args = 1.., allow_hyphen_values = true)]
        value: Vec<String>,
        /// Write only if the key's mod_revision is this (0: only if absent).
        #[arg(long, conflicts_with = "if_absent")]
        if_revision: Option<u64>,
        /// Write only if the key does not exist.
        #[arg(long)]
        if_absent: bool,
    },
    /// Read a key (exits 1 if it does not exist), or with --prefix every key under a prefix.
    Get {
        /// The key (or, with --prefix, the prefix; --prefix "" for every key).
        #[arg(required_unless_present = "prefix")]
        key: Option<String>,
        /// Every key starting with this.
        #[arg(long, conflicts_with = "key")]
        prefix: Option<String>,
        /// At most this many keys (the count still counts them all).
        #[arg(long)]
        limit: Option<u64>,
        /// Keys and revisions only, no values.
        #[arg(long)]
        keys_only: bool,
        /// Only count the keys.
        #[arg(long)]
        count_only: bool,
        /// Descending key order.
        #[arg(long)]
        desc: bool,
    },
    /// Delete a key (succeeds also if it does not exist), or with --prefix every key under a
    /// prefix (prints how many).
    #[command(alias = "del")]
    Delete {
        #[arg(required_unless_present = "prefix")]
        key: Option<String>,
        /// Every key starting with this.
        #[arg(long, conflicts_with = "key")]
        prefix: Option<String>,
    },
    /// Compare-and-set: write NEW if KEY's value is OLD (exits 1 if it was not).
    Cas { key: String, old: String, new: String },
    /// Run a transaction read from standard input in the text format (compares, blank line,
    /// success operations, blank line, failure operations; see `raftlabkv::client::coord`), or
    /// from a JSON file with --file.
    Txn {
        /// A JSON file with {"compare": [..], "success": [..], "failure": [..]}.
        #[arg(long)]
        file: Option<std::path::PathBuf>,
    },
    /// List every key and value.
    #[command(alias = "all")]
    Getall,
    /// Show each server's Raft status as a table (endpoint, id, leader, term, commit, applied,
    /// last index, lag, errors), or with --explain say what is happening and what to do.
    Status {
        /// Turn the statuses into sentences: what is wrong, and what to do about it.
        #[arg(long)]
        explain: bool,
    },
    /// List or change the cluster's members (through the leader).
    #[command(subcommand)]
    Member(MemberCmd),
    /// Hand leadership to another voter.
    #[command(subcommand)]
    Leader(LeaderCmd),
    /// Run a load test and print throughput and latency percentiles.
    Bench(BenchArgs),
    /// Run concurrent clients against the cluster, record the history, and check that it is
    /// linearizable (exits 1 if it is not, or if that could not be decided).
    #[cfg(feature = "harness")]
    Verify(VerifyArgs),
}

#[derive(Subcommand, Debug)]
enum MemberCmd {
    /// The members as the leader sees them: a table (or --json).
    List,
    /// Add a member: `member add node4=127.0.0.1:8083`. With --learner it is added as a learner
    /// only; without, it is added as a learner, waited for until it has caught up (start it with
    /// `--join` meanwhile), and promoted.
    Add {
        /// `id=host:port`.
        member: String,
        /// Add it as a learner and stop there (promote it later).
        #[arg(long)]
        learner: bool,
        /// Skip the strict quorum check.
        #[arg(long)]
        force: bool,
        /// How long the one-step add waits for the learner to catch up.
        #[arg(long, default_value = "60", value_parser = parse_secs)]
        wait: Duration,
    },
    /// Promote a learner to voter (refused until it has caught up).
    Promote {
        /// The learner's id.
        id: String,
        /// Skip the strict quorum check.
        #[arg(long)]
        force: bool,
    },
    /// Change a member's address: `member update node4=127.0.0.1:9083`.
    Update {
        /// `id=host:port`.
        member: String,
    },
    /// Remove a member (the leader too: it steps down once the change commits).
    Remove {
        /// The member's id.
        id: String,
        /// Skip the strict quorum check.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
enum LeaderCmd {
    /// Hand leadership to ID (default: the most up-to-date voter).
    Transfer {
        /// The voter to lead.
        id: Option<String>,
    },
}

#[cfg(feature = "harness")]
#[derive(Args, Debug)]
struct VerifyArgs {
    /// Seconds to run the clients.
    #[arg(long, default_value = "10", value_parser = parse_secs)]
    time: Duration,
    /// Concurrent client threads.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Keys to use. They are new keys (`verify-<random>-<n>`), so the cluster's data is not
    /// touched, but they are left behind.
    #[arg(long, default_value_t = 5)]
    keys: usize,
    /// Time budget of the linearizability check, in seconds.
    #[arg(long, default_value = "60", value_parser = parse_secs)]
    check_budget: Duration,
    /// Where to save the history as JSON if the check fails (default: a temporary file).
    #[arg(long)]
    save: Option<std::path::PathBuf>,
    /// Reads ask for `?consistency=lease` (served from the leader's lease where the servers run
    /// with `--lease-reads`), and are checked like any other.
    #[arg(long)]
    lease: bool,
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// Concurrent client threads, each with its own keep-alive connection.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Seconds to run (default 10 when --ops is not given either).
    #[arg(long, value_parser = parse_secs)]
    duration: Option<Duration>,
    /// Total requests to send (stops at whichever of --duration and --ops comes first).
    #[arg(long)]
    ops: Option<u64>,
    /// put, get or mixed.
    #[arg(long, default_value = "put")]
    workload: Workload,
    /// For mixed: the fraction of gets (0 to 1).
    #[arg(long, default_value_t = 0.9)]
    read_ratio: f64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Send all requests to this server (default: the leader, found via /status).
    #[arg(long)]
    target: Option<String>,
    /// Write every key once before measuring (default: true for get and mixed, false for put).
    #[arg(long)]
    populate: Option<bool>,
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|_| format!("{s:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is not a valid duration"))
}

/// A minimal logger to stderr (stdout is for results).
struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) && record.target().starts_with("raftlabkv") {
            eprintln!("{:<5} {}", record.level(), record.args());
        }
    }

    fn flush(&self) {}
}

static LOGGER: StderrLogger = StderrLogger;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(if cli.verbose {
            log::LevelFilter::Debug
        } else {
            log::LevelFilter::Warn
        });
    }
    let json = cli.json || cli.write_out == Format::Json;
    let format = if json { Format::Json } else { cli.write_out };
    let options = RunOptions { json, stale: cli.stale, lease: cli.lease };
    let client = || {
        Client::builder(cli.servers.clone())
            .request_timeout(cli.timeout)
            .retry_deadline(cli.deadline)
            .build()
    };
    let command = match &cli.command {
        None => return interactive(&client(), options),
        Some(Cmd::Bench(args)) => return run_bench(&cli, args),
        Some(Cmd::Member(cmd)) => return run_member(&client(), cmd, cli.json),
        Some(Cmd::Leader(LeaderCmd::Transfer { id })) => {
            return finish(client().transfer_leader(id.as_deref()), cli.json, |t| {
                format!("{} leads now ({})", t.leader, t.addr)
            });
        }
        #[cfg(feature = "harness")]
        Some(Cmd::Verify(args)) => return run_verify(&cli, args),
        Some(Cmd::Put { key, value, if_revision, if_absent }) => {
            let value = value.join(" ");
            match if_revision.or(if_absent.then_some(0)) {
                None => Command::Put { key: key.clone(), value },
                Some(r) => {
                    let result = client().put_if(key, &value, r);
                    return outcome(result.map(|p| coord::render_put_if(key, &p, format)), json);
                }
            }
        }
        Some(Cmd::Get { prefix: Some(prefix), limit, keys_only, count_only, desc, .. }) => {
            let spec = raftlabkv::kv::RangeSpec {
                prefix: Some(prefix.clone()),
                limit: *limit,
                keys_only: *keys_only,
                count_only: *count_only,
                desc: *desc,
                ..Default::default()
            };
            let c = client();
            let r = if cli.stale { c.range_stale(&spec) } else { c.range(&spec) };
            return outcome(r.map(|r| Ok(coord::render_range(&r, format))), json);
        }
        Some(Cmd::Get { key, .. }) => Command::Get { key: key.clone().unwrap_or_default() },
        Some(Cmd::Delete { prefix: Some(prefix), .. }) => {
            let r = client().delete_prefix(prefix).map(|n| {
                Ok(if json { serde_json::json!({"deleted": n}).to_string() } else { n.to_string() })
            });
            return outcome(r, json);
        }
        Some(Cmd::Delete { key, .. }) => Command::Delete { key: key.clone().unwrap_or_default() },
        Some(Cmd::Cas { key, old, new }) => {
            let r = client().cas(key, Some(old), new);
            return outcome(r.map(|c| coord::render_cas(key, &c, format)), json);
        }
        Some(Cmd::Txn { file }) => {
            let txn = read_txn(file.as_deref());
            let r = txn.and_then(|t| client().txn(&t));
            return outcome(r.map(|t| Ok(coord::render_txn(&t, format))), json);
        }
        Some(Cmd::Getall) => Command::GetAll,
        Some(Cmd::Status { explain }) => Command::Status { explain: *explain },
    };
    match shell::run(&client(), &command, options) {
        Ok(text) => {
            print_out(&text);
            ExitCode::SUCCESS
        }
        Err(e) => {
            print_err(&e, options.json);
            ExitCode::FAILURE
        }
    }
}

/// Prints what a coordination command gave: `Ok(Ok(text))` succeeded (exit 0), `Ok(Err(text))`
/// was answered but did not hold (a refused conditional write: printed, exit 1), `Err` failed.
fn outcome(
    result: raftlabkv::error::Result<std::result::Result<String, String>>,
    json: bool,
) -> ExitCode {
    match result {
        Ok(Ok(text)) => {
            print_out(&text);
            ExitCode::SUCCESS
        }
        Ok(Err(text)) => {
            print_out(&text);
            ExitCode::FAILURE
        }
        Err(e) => {
            print_err(&e, json);
            ExitCode::FAILURE
        }
    }
}

/// The transaction of `txn`: JSON from `file`, or the text format from standard input.
fn read_txn(file: Option<&std::path::Path>) -> raftlabkv::error::Result<raftlabkv::kv::Txn> {
    use std::io::Read as _;
    match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::BadRequest(format!("cannot read {}: {e}", path.display())))?;
            serde_json::from_str(&text).map_err(|e| {
                Error::BadRequest(format!("{}: not a transaction: {e}", path.display()))
            })
        }
        None => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| Error::BadRequest(format!("reading standard input: {e}")))?;
            coord::parse_txn(&text)
        }
    }
}

/// `member ...`: prints the members after the change (a table, or JSON).
fn run_member(client: &Client, cmd: &MemberCmd, json: bool) -> ExitCode {
    let split = |member: &str| -> Result<(String, String), raftlabkv::error::Error> {
        match member.split_once('=') {
            Some((id, addr)) if !id.is_empty() && !addr.is_empty() => {
                Ok((id.to_string(), addr.to_string()))
            }
            _ => Err(raftlabkv::error::Error::BadRequest(format!(
                "expected id=host:port, got {member:?}"
            ))),
        }
    };
    let result = match cmd {
        MemberCmd::List => client.members(),
        MemberCmd::Add { member, learner, force, wait } => split(member).and_then(|(id, addr)| {
            if *learner || *force {
                client.add_member(&id, &addr, true, *force)
            } else {
                client.add_and_promote(&id, &addr, *wait)
            }
        }),
        MemberCmd::Promote { id, force } => client.promote_member(id, *force),
        MemberCmd::Update { member } => {
            split(member).and_then(|(id, addr)| client.update_member(&id, &addr))
        }
        MemberCmd::Remove { id, force } => client.remove_member(id, *force),
    };
    finish(result, json, members_table)
}

/// Prints a result as JSON or as `text` renders it; the exit code says whether it succeeded.
fn finish<T: serde::Serialize>(
    result: raftlabkv::error::Result<T>,
    json: bool,
    text: impl Fn(&T) -> String,
) -> ExitCode {
    match result {
        Ok(value) if json => {
            print_out(&serde_json::to_string(&value).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(value) => {
            print_out(&text(&value));
            ExitCode::SUCCESS
        }
        Err(e) => {
            print_err(&e, json);
            ExitCode::FAILURE
        }
    }
}

/// `ID  ADDRESS  ROLE  MATCH  LAST CONTACT` per member.
fn members_table(m: &raftlabkv::api::MembersReply) -> String {
    let mut out = format!("cluster {} (configuration at index {})\n", m.cluster_id, m.config_index);
    out.push_str(&format!(
        "{:<12} {:<22} {:<8} {:>10} {:>13}\n",
        "ID", "ADDRESS", "ROLE", "MATCH", "LAST CONTACT"
    ));
    for member in &m.members {
        let matched = member.match_index.map_or("-".to_string(), |i| i.to_string());
        let contact = member.last_contact_ms.map_or("-".to_string(), |ms| format!("{ms} ms"));
        out.push_str(&format!(
            "{:<12} {:<22} {:<8} {:>10} {:>13}\n",
            member.id, member.addr, member.role, matched, contact
        ));
    }
    out.trim_end().to_string()
}

/// The interactive shell: one command per line until `exit` or end of input. On a terminal,
/// lines are edited with rustyline (arrows, history kept in `$RAFTLABKV_HISTORY` or
/// `~/.raftlabkv_history`, Ctrl-R search, Tab completes commands); from a pipe or a file, lines
/// are read as they come and nothing else is printed.
fn interactive(client: &Client, options: RunOptions) -> ExitCode {
    let stdin = std::io::stdin();
    if stdin.is_terminal() && std::io::stdout().is_terminal() {
        eprintln!(
            "raftlabkv-client: servers {}; type `help` for commands (Tab completes), `exit` to \
             leave",
            client.servers().join(",")
        );
        return match edited(client, options) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: the line editor: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let mut input = stdin.lock();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match input.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                eprintln!("error: reading input: {e}");
                return ExitCode::FAILURE;
            }
        }
        if !one_line(client, &String::from_utf8_lossy(&buf), options) {
            break;
        }
    }
    ExitCode::SUCCESS
}

/// Runs one shell line; false once it says `exit`.
fn one_line(client: &Client, line: &str, options: RunOptions) -> bool {
    let command = match shell::parse_line(line) {
        Ok(Command::Exit) => return false,
        Ok(Command::Nothing) => return true,
        Ok(c) => c,
        Err(usage) => {
            eprintln!("error: {usage}");
            return true;
        }
    };
    match shell::run(client, &command, options) {
        Ok(text) => print_out(&text),
        Err(e) => print_err(&e, options.json),
    }
    true
}

/// Tab completion for the line editor ([`shell::complete`]).
struct ShellHelper;

impl rustyline::completion::Completer for ShellHelper {
    type Candidate = String;
    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        Ok(shell::complete(line, pos))
    }
}
impl rustyline::hint::Hinter for ShellHelper {
    type Hint = String;
}
impl rustyline::highlight::Highlighter for ShellHelper {}
impl rustyline::validate::Validator for ShellHelper {}
impl rustyline::Helper for ShellHelper {}

/// Where the shell keeps its history: `$RAFTLABKV_HISTORY`, else `~/.raftlabkv_history`.
fn history_path() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("RAFTLABKV_HISTORY") {
        return Some(p.into());
    }
    std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".raftlabkv_history"))
}

/// The shell on a terminal, with line editing, history and completion.
fn edited(client: &Client, options: RunOptions) -> rustyline::Result<()> {
    use rustyline::error::ReadlineError;
    let config = rustyline::Config::builder()
        .auto_add_history(true)
        .max_history_size(1000)?
        .completion_type(rustyline::CompletionType::List)
        .build();
    let mut editor: rustyline::Editor<ShellHelper, rustyline::history::DefaultHistory> =
        rustyline::Editor::with_config(config)?;
    editor.set_helper(Some(ShellHelper));
    let history = history_path();
    if let Some(path) = &history {
        // A missing history file is the first run; anything else is said, not fatal.
        if let Err(e) = editor.load_history(path)
            && path.exists()
        {
            eprintln!("warning: cannot read history {}: {e}", path.display());
        }
    }
    loop {
        match editor.readline("raftlabkv> ") {
            Ok(line) => {
                if !one_line(client, &line, options) {
                    break;
                }
            }
            Err(ReadlineError::Interrupted) => continue, // Ctrl-C: a fresh line
            Err(ReadlineError::Eof) => break,            // Ctrl-D
            Err(e) => return Err(e),
        }
    }
    if let Some(path) = &history
        && let Err(e) = editor.save_history(path)
    {
        eprintln!("warning: cannot save history {}: {e}", path.display());
    }
    Ok(())
}

fn run_bench(cli: &Cli, args: &BenchArgs) -> ExitCode {
    let config = BenchConfig {
        servers: cli.servers.clone(),
        target: args.target.clone(),
        clients: args.clients,
        duration: args.duration,
        ops: args.ops,
        workload: args.workload,
        read_ratio: args.read_ratio,
        value_size: args.value_size,
        keys: args.keys,
        populate: args.populate,
        request_timeout: cli.timeout,
        consistency: if cli.lease {
            Consistency::Lease
        } else if cli.stale {
            Consistency::Stale
        } else {
            Consistency::Linearizable
        },
    };
    // On a terminal, a live line once a second (ops/s and p99 so far), erased at the end.
    let live = !cli.json && std::io::stderr().is_terminal();
    let result = bench::run_with_progress(&config, Duration::from_secs(1), |p| {
        if live {
            eprint!("\r\x1b[K{}", p.line());
            let _ = std::io::stderr().flush();
        }
    });
    if live {
        eprint!("\r\x1b[K");
    }
    match result {
        Ok(report) => {
            if cli.json {
                match serde_json::to_string(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        print_err(&Error::Internal(e.to_string()), true);
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                println!("{report}");
            }
            if report.requests > 0 && report.ok == 0 {
                eprintln!("error: no request succeeded");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            print_err(&e, cli.json);
            ExitCode::FAILURE
        }
    }
}

#[cfg(feature = "harness")]
/// `verify`: the chaos harness's workload and check (`raftlabkv::chaos::workload`), without faults
/// of its own, against whatever cluster `--servers` names. Every HTTP attempt is one operation;
/// `--timeout` is the per-request timeout.
fn run_verify(cli: &Cli, args: &VerifyArgs) -> ExitCode {
    let config = WorkloadConfig {
        servers: cli.servers.clone(),
        clients: args.clients.max(1),
        keys: args.keys.max(1),
        key_prefix: format!("verify-{:08x}-", rand::random::<u32>()),
        request_timeout: cli.timeout,
        duration: args.time,
        seed: rand::random(),
        counters: 2,
        lease_reads: args.lease,
    };
    eprintln!(
        "verify: {} clients on keys {}0..{} for {:.0} s against {}",
        config.clients,
        config.key_prefix,
        config.keys - 1,
        config.duration.as_secs_f64(),
        config.servers.join(",")
    );
    let report = verify(&config, args.check_budget);
    println!("{}", report.summary());
    if report.passed() {
        return ExitCode::SUCCESS;
    }
    if let Verdict::Illegal { key, history } = &report.checked.verdict {
        eprintln!("{}", raftlabkv::chaos::describe_witness(key, history));
    }
    let path = args.save.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("raftlabkv-verify-{}.json", std::process::id()))
    });
    match std::fs::write(&path, history_to_json(&report.history)) {
        Ok(()) => eprintln!("history saved to {}", path.display()),
        Err(e) => eprintln!("could not save the history to {}: {e}", path.display()),
    }
    ExitCode::FAILURE
}

fn print_out(text: &str) {
    if !text.is_empty() {
        println!("{text}");
    }
}

fn print_err(e: &Error, json: bool) {
    if json {
        eprintln!("{}", e.to_json());
    } else {
        match e {
            Error::NotFound(m) => eprintln!("error: {m}"),
            Error::OutcomeUnknown(m) => {
                eprintln!("outcome unknown: {m}");
                eprintln!("(the write may or may not have been applied; read the key to find out)");
            }
            e => eprintln!("error: {e}"),
        }
    }
}
