//! A three-node Raft cluster stepped by hand: no threads, no sockets, no clock.
//!
//! ```text
//! cargo run --release --example three_nodes
//! ```
//!
//! `RaftNode` (`src/raft/`) is the whole algorithm as a deterministic state machine: you feed it
//! inputs (`tick`, `step`, `propose`, `persisted`) and it hands back an `Output` saying what to
//! do next. Here a `VecDeque` is the network and we are the shell: we carry messages between
//! the nodes and print each one as it is delivered. The same seeds give the same run every time.

use std::collections::VecDeque;

use raftlabkv::raft::{Config, Entry, Envelope, MemStorage, Message, Output, RaftNode};
use raftlabkv::{Error, Result};

/// The three nodes and the messages in flight between them (delivered in order, none lost).
struct Cluster {
    nodes: Vec<RaftNode>,
    net: VecDeque<Envelope>,
}

impl Cluster {
    fn index_of(&self, id: &str) -> Result<usize> {
        let found = self.nodes.iter().position(|n| n.id() == id);
        found.ok_or_else(|| Error::Internal(format!("message for unknown node {id}")))
    }

    /// Does what node `i` asked for in `out`.
    fn handle(&mut self, i: usize, out: Output) -> Result<()> {
        let id = self.nodes[i].id().clone();
        // Messages in `messages` promise nothing about this node's disk: send them at once.
        self.net.extend(out.messages);
        for entry in &out.apply {
            println!("  {id} applied {}", describe_entry(entry));
        }
        // The durability rule (Figure 2, "Persistent state ... updated on stable storage before
        // responding to RPCs"): a vote, an acknowledgement of entries, or a candidate's
        // RequestVote after voting for itself must not leave before the state it vouches for is
        // on disk, or a crash could make the node break its word. Such messages wait in
        // `after_sync`. A real shell fsyncs its write-ahead log through `sync.write_seq` (group commit:
        // one fsync for many outputs), then tells the node with `persisted` and sends them.
        // MemStorage "is durable" as soon as it is written, so syncing is just the call.
        if let Some(sync) = out.sync {
            let held = match out.after_sync.len() {
                0 => String::new(),
                n => format!(", then sends the {n} message(s) held for it"),
            };
            println!("  {id} syncs (its log ends at {}@{}){held}", sync.index, sync.term);
            // On a leader, this is what lets it count itself towards a majority (§5.3).
            let more = self.nodes[i].persisted(sync.index, sync.term)?;
            self.net.extend(out.after_sync);
            self.handle(i, more)?;
        }
        Ok(())
    }

    /// Delivers messages until the network is quiet (each answer may cause more messages).
    fn deliver_all(&mut self) -> Result<()> {
        while let Some(envelope) = self.net.pop_front() {
            println!("  {}", describe(&envelope));
            let i = self.index_of(&envelope.to)?;
            let out = self.nodes[i].step(envelope)?;
            self.handle(i, out)?;
        }
        Ok(())
    }

    /// One tick of logical time on node `i` (a real shell ticks every 10 ms).
    fn tick(&mut self, i: usize) -> Result<()> {
        let out = self.nodes[i].tick()?;
        self.handle(i, out)
    }

    fn print_status(&self) {
        for node in &self.nodes {
            let s = node.status();
            println!(
                "  {}@{} {} last={}@{} commit={} applied={}",
                s.id,
                s.term,
                s.role,
                s.last_log_index,
                s.last_log_term,
                s.commit_index,
                s.last_applied
            );
        }
    }
}

/// `n1 → n2 t1 AppendEntries prev=0@0 entries=[1@1] commit=0`: sender, receiver, the sender's
/// term, and the fields that matter to the story.
fn describe(e: &Envelope) -> String {
    let what = match &e.message {
        Message::RequestVote(m) => {
            let kind = if m.pre_vote { "PreVote" } else { "RequestVote" };
            format!("{kind} last_log={}@{}", m.last_log_index, m.last_log_term)
        }
        Message::RequestVoteResponse(m) => {
            let kind = if m.pre_vote { "PreVoteResponse" } else { "RequestVoteResponse" };
            format!("{kind} granted={}", m.vote_granted)
        }
        Message::AppendEntries(m) => {
            let entries: Vec<String> =
                m.entries.iter().map(|x| format!("{}@{}{}", x.index, x.term, noop(x))).collect();
            let (prev, prev_term, commit) = (m.prev_log_index, m.prev_log_term, m.leader_commit);
            let entries = entries.join(",");
            format!("AppendEntries prev={prev}@{prev_term} entries=[{entries}] commit={commit}")
        }
        Message::AppendEntriesResponse(m) => {
            format!("AppendEntriesResponse success={} match={}", m.success, m.match_index)
        }
        Message::InstallSnapshot(m) => {
            format!("InstallSnapshot last={}@{}", m.last_included_index, m.last_included_term)
        }
        Message::InstallSnapshotResponse(m) => {
            format!("InstallSnapshotResponse match={}", m.match_index)
        }
        Message::TimeoutNow => "TimeoutNow".into(),
    };
    format!("{} → {} t{} {what}", e.from, e.to, e.term)
}

/// Marks a new leader's empty entry (§5.4.2) in an AppendEntries.
fn noop(entry: &Entry) -> &'static str {
    if entry.is_noop() {
        "(no-op)"
    } else if entry.is_internal() {
        "(configuration)"
    } else {
        ""
    }
}

/// `2@1: put hello world`, or `1@1: no-op`. Raft never looks inside a command: it is bytes.
fn describe_entry(entry: &Entry) -> String {
    let command = match entry.membership() {
        Some(m) => {
            format!("configuration, voters {:?}", m.voters.keys().collect::<Vec<_>>()).into()
        }
        None if entry.is_noop() => "no-op".into(),
        None => String::from_utf8_lossy(&entry.command),
    };
    format!("{}@{}: {command}", entry.index, entry.term)
}

fn main() -> Result<()> {
    let ids = ["n1", "n2", "n3"];
    let mut nodes = Vec::new();
    for (k, id) in ids.iter().enumerate() {
        let peers = ids.iter().filter(|p| *p != id).map(|p| p.to_string()).collect();
        let mut config = Config::new(*id, peers); // heartbeat 5 ticks, election timeout 30-60
        config.seed = 1 + k as u64; // fixed seeds: the random election timeouts repeat
        nodes.push(RaftNode::new(config, Box::new(MemStorage::new()))?);
    }
    let mut cluster = Cluster { nodes, net: VecDeque::new() };
    println!("three followers in term 0, empty logs:");
    cluster.print_status();

    // §5.2: a follower that hears from no leader for its (randomised) election timeout starts
    // an election. We tick only n1, so it is the one whose timer runs out. It first asks "would
    // you vote for me?" (PreVote, thesis §9.6: a node that cannot win never bumps the term),
    // then increments its term, votes for itself and sends RequestVote. A majority (2 of 3,
    // counting itself) makes it leader.
    println!("\n1. election (§5.2): tick n1 until its election timeout fires");
    let mut ticks = 0;
    while cluster.net.is_empty() {
        ticks += 1;
        if ticks > 1000 {
            return Err(Error::Internal("n1's election timeout never fired".into()));
        }
        cluster.tick(0)?;
    }
    println!("  n1 times out after {ticks} ticks and campaigns");
    cluster.deliver_all()?;
    if !cluster.nodes[0].is_leader() {
        return Err(Error::Internal("n1 did not become leader".into()));
    }
    // §5.4.2: a new leader cannot know whether entries of earlier terms are committed, so it
    // appends a no-op of its own term; committing it commits everything before it (Figure 8).
    // You saw it go out above as the AppendEntries entry at index 1.
    println!("  n1 is leader of term {}", cluster.nodes[0].term());
    cluster.print_status();

    // §5.3: the leader appends the command to its log and sends it to every follower in
    // AppendEntries. An entry is committed once a majority stores it (the leader counts itself
    // only after its own sync); the leader then applies it. Followers learn the new commit index
    // from the leader's next AppendEntries, here a heartbeat, so we let time pass.
    println!("\n2. replication (§5.3): propose \"put hello world\" on n1");
    let (index, term, out) = cluster.nodes[0].propose(b"put hello world".to_vec())?;
    println!("  n1 appends it at {index}@{term}");
    cluster.handle(0, out)?;
    let mut rounds = 0;
    loop {
        cluster.deliver_all()?;
        if cluster.nodes.iter().all(|n| n.status().last_applied >= index) {
            break;
        }
        rounds += 1;
        if rounds > 1000 {
            return Err(Error::Internal("the command was not applied everywhere".into()));
        }
        for i in 0..cluster.nodes.len() {
            cluster.tick(i)?;
        }
    }
    println!("  ({rounds} ticks passed on every node for the heartbeat)");

    println!("\n3. the result: the command is applied on all {} nodes", cluster.nodes.len());
    cluster.print_status();
    Ok(())
}
