//! Your first RaftLabKV program: write a key, read it back, see who leads.
//!
//! ```text
//! examples/start_cluster.sh                                  # in one terminal
//! cargo run --release --example hello_client                 # in another
//! cargo run --release --example hello_client -- 127.0.0.1:8080,127.0.0.1:8081
//! RAFTLABKV_SERVERS=127.0.0.1:18480 cargo run --release --example hello_client
//! ```
//!
//! The servers come from the first argument (comma-separated `host:port`s, or several
//! arguments), else from `RAFTLABKV_SERVERS`, else the three nodes `start_cluster.sh` starts.
//! Exits 0 if the value read back is the value written, 1 (with a message on stderr) if the
//! cluster cannot be reached or answers something else.

use std::process::ExitCode;

use raftlabkv::client::Client;

/// Where `examples/start_cluster.sh` puts its three nodes (ports 8080, 8081, 8082).
const DEFAULT_SERVERS: &str = "127.0.0.1:8080,127.0.0.1:8081,127.0.0.1:8082";

fn main() -> ExitCode {
    // 1. Which servers? Any node will do: a follower forwards requests to the leader, so the
    //    client needs just one of them to be reachable. Listing all of them lets it try the
    //    next one when a node is down.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let list = if args.is_empty() {
        std::env::var("RAFTLABKV_SERVERS").unwrap_or_else(|_| DEFAULT_SERVERS.to_string())
    } else {
        args.join(",")
    };
    let servers: Vec<String> =
        list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
    if servers.is_empty() {
        eprintln!("hello_client: no servers given");
        return ExitCode::FAILURE;
    }
    println!("servers: {}", servers.join(", "));

    // 2. The client. Creating it sends nothing; it finds the leader on the first request and
    //    remembers it (see the module docs of `raftlabkv::client` for the retry rules).
    let client = Client::new(servers);

    // 3. Write. `put` returns once the write is *committed*: stored on a majority of the nodes
    //    (on disk, fsynced) and applied. The answer says where it landed in the Raft log. The
    //    value carries our process id, so a value left over from an earlier run cannot pass for
    //    ours.
    let value = format!("world, from process {}", std::process::id());
    let put = match client.put("hello", &value) {
        Ok(put) => put,
        Err(e) => {
            // After about 10 s of retries against every server the client gives up with
            // `Unavailable` (nothing written). `OutcomeUnknown` means the write may or may not
            // have happened: the answer was lost, so the client does not blindly retry it.
            eprintln!("hello_client: cannot write to the cluster: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("put hello = {value:?}: committed at log index {} in term {}", put.index, put.term);

    // 4. Read it back. `get` is linearizable: the leader first confirms with a majority that it
    //    is still the leader (ReadIndex), so we see our own write, or a newer one, never an
    //    older one. (`get_stale` would read one node's local copy, which may lag.)
    match client.get("hello") {
        Ok(Some(read)) if read == value => println!("get hello = {read:?}: the value we wrote"),
        Ok(Some(read)) => {
            // Possible only if another client wrote `hello` in between, or on a bug.
            eprintln!("hello_client: read back {read:?}, but wrote {value:?}");
            return ExitCode::FAILURE;
        }
        Ok(None) => {
            eprintln!("hello_client: read back nothing, but wrote {value:?}");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("hello_client: cannot read from the cluster: {e}");
            return ExitCode::FAILURE;
        }
    }

    // 5. Who leads? The client learnt it while writing; `leader` gives the cached address (or
    //    asks the nodes' /status if it has none).
    match client.leader() {
        Ok(leader) => println!("leader: {leader}"),
        Err(e) => {
            eprintln!("hello_client: no leader found: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
