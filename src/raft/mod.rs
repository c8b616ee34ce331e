//! # Raft, in a page, and where each part of it lives in this code
//!
//! Raft (Ongaro and Ousterhout, *In Search of an Understandable Consensus Algorithm*, 2014) keeps a
//! **log of commands** identical on a majority of machines, so that every machine applying the log
//! in order computes the same state. Keep the paper open beside this module: the names here are
//! the names of its Figure 2.
//!
//! ## The idea
//!
//! Time is divided into **terms** (`Term`), numbered upward. Each term begins with an election;
//! at most one **leader** wins it. Only the leader accepts commands: it appends each to its log as
//! an [`Entry`] `{index, term, command}` and replicates it to the **followers** with
//! `AppendEntries`. Once an entry is stored on a **majority** — more than half of the voters of the
//! configuration in force, the leader included, so 2 of 3, 3 of 4, 3 of 5 — it is **committed**: it will be in
//! the log of every future leader, so it can be applied and the client answered.
//!
//! Why a majority? Any two majorities share a node. A candidate needs votes from a majority, and a
//! voter refuses a candidate whose log is less up to date than its own (§5.4.1). So a new leader's
//! log always contains every committed entry (*Leader Completeness*).
//!
//! ## The rules (Figure 2) and the code that keeps them
//!
//! | Figure 2 | here |
//! |---|---|
//! | Persistent state `currentTerm`, `votedFor`, `log[]` | [`HardState`] and the log, in [`Storage`] (`storage.rs`); `RaftNode::current_term`, `voted_for` mirror them |
//! | Volatile `commitIndex`, `lastApplied` | [`RaftLog::commit_index`], [`RaftLog::last_applied`] (`log.rs`) |
//! | Leader's `nextIndex[]`, `matchIndex[]` | `role::Progress::next_index`, `match_index`, one per peer in `role::Leader` (`role.rs`) |
//! | RequestVote RPC | [`RequestVote`] / [`RequestVoteResponse`] (`message.rs`); receiver: `handle_request_vote` (`node/election.rs`) |
//! | AppendEntries RPC | [`AppendEntries`] / [`AppendEntriesResponse`]; receiver: `handle_append_entries` (`node/replication.rs`) |
//! | "If RPC request or response contains term T > currentTerm: set currentTerm = T, convert to follower" | `step_inner` (`node/mod.rs`) → `become_follower` |
//! | Followers: election timeout → become candidate | `RaftNode::tick` → `become_pre_candidate` / `become_candidate` (`node/election.rs`) |
//! | Candidates: votes from majority → leader | `handle_vote_response` → `become_leader` (`node/election.rs`) |
//! | Leaders: heartbeats, replicate, advance commitIndex | `tick_leader`, `maybe_send_append`, `maybe_commit` (`node/replication.rs`) |
//! | All servers: apply committed entries in order | `emit_committed` fills [`Output::apply`] (`node/replication.rs`, `output.rs`) |
//! | Configuration changes, learners (thesis §4.1–4.2) | [`Membership`], [`Configs`] (`membership.rs`); `propose_membership`, `step_down_if_removed` (`node/membership.rs`) |
//! | Leadership transfer (thesis §3.10) | `transfer_leadership`, `handle_timeout_now` (`node/membership.rs`); [`Message::TimeoutNow`] |
//! | InstallSnapshot (§7, Figure 13) | [`InstallSnapshot`]; `maybe_send_snapshot`, `handle_install_snapshot`, `snapshot_taken` (`node/snapshot.rs`) |
//! | ReadIndex (thesis §6.4) | `RaftNode::read`, `check_reads` (`node/read.rs`) |
//! | Lease reads (thesis §6.4.1) | `RaftNode::read_lease`, `lease_holds`, `set_clock` (`node/read.rs`) |
//!
//! ## The files
//!
//! | file | what it holds |
//! |---|---|
//! | `mod.rs` | this essay |
//! | `message.rs` | ids, terms, entries, the RPCs and their [`Envelope`] |
//! | `config.rs` | [`Config`]: the node's id, its bootstrap configuration and timeouts in ticks |
//! | `membership.rs` | [`Membership`], [`MembershipChange`], [`Configs`]: who votes, and the configurations in the log |
//! | `output.rs` | what every input returns ([`Output`], [`SyncPoint`], [`ReadState`]) and [`Status`] |
//! | `role.rs` | [`Role`]: follower, candidate, leader, each with its own data |
//! | `log.rs` | [`RaftLog`]: the questions Raft asks of a log, and conflict-only truncation |
//! | `storage.rs`, `entry_log.rs` | the [`Storage`] port the core writes through (its durable implementation is `crate::storage`, which depends on this module, never the reverse) and [`MemStorage`] |
//! | `node/` | [`RaftNode`], one file per part of the paper: `election.rs`, `replication.rs`, `read.rs`, `snapshot.rs`, `membership.rs` |
//!
//! ## A deterministic core
//!
//! [`RaftNode`] does no I/O. It is driven by five inputs — `step(message)`, `tick()`,
//! `propose(command)`, `read(id)`, `persisted(index, term)` — and each returns an [`Output`]:
//! messages to send, entries to apply, reads that became safe. It never spawns a thread, sleeps,
//! reads a clock, opens a socket or takes a lock. Time is counted in ticks, randomness comes from a
//! seeded RNG. That is what lets [`crate::sim`] run a thousand-iteration Figure 8 test with crashes
//! in a fraction of a second and replay any failure from its seed, and what keeps this module
//! readable: the threads live in [`crate::server`].
//!
//! ## Persisting before answering
//!
//! A vote or an acknowledgement is a promise about the disk ("I will not vote for anyone else in
//! term 7", "I hold entries up to 42"). The core writes to storage synchronously but storage only
//! *buffers*; making it durable (fsync) is slow, so the shell does it outside the lock and batches
//! it (group commit). The core therefore separates messages that may leave at once
//! ([`Output::messages`], e.g. a leader's AppendEntries — followers persist before they ack) from
//! those that must wait for the disk ([`Output::after_sync`]: votes, acks, a candidate's
//! RequestVote after voting for itself). A leader counts itself towards a majority only for
//! entries its own disk confirmed ([`RaftNode::persisted`]), while replication runs in parallel.
//!
//! The simulation holds the whole cluster to this rule: in `crate::sim` a write is durable only once
//! a simulated fsync (at a time the seeded schedule picks) covers it, `after_sync` messages leave
//! only after it, and a crash loses everything unsynced. A follower that acknowledged before its
//! fsync, or a leader that counted its own entries before its fsync, lets a new leader be elected
//! without a committed entry; the simulation's Leader Completeness check and
//! `tests/raft_durability.rs` then fail (both breaks were tried on purpose).
//!
//! ## Watching it run
//!
//! The scripts in `tests/scripts/` drive a simulated cluster one message, one tick, one fsync at
//! a time and print everything that happens: each delivered message, what the node did about it
//! (a change of role or term, entries appended or truncated, messages sent or held for the disk,
//! entries applied), and every node's status after each step, such as
//! `n2@3 follower(n1) vote=n1 last=7@3 commit=7 applied=7`. There is one per part of the
//! algorithm: `election.txt` (§5.2, §5.4.1), `prevote.txt` (thesis §9.6), `check_quorum.txt`
//! (thesis §6.2), `conflicting_append.txt` (§5.3, fast backtracking), `read_index.txt` (thesis
//! §6.4), `snapshot_install.txt` (§7), `persist_before_ack.txt`, `membership.txt` (thesis
//! §4.1–4.2.3: a learner joins and is promoted, the leader removes itself) and
//! `leader_transfer.txt` (thesis §3.10, TimeoutNow). Every log begins with the entry 1@1, the
//! cluster's first configuration, which each founding member writes as it bootstraps, so a first
//! election is for term 2 and its no-op is entry 2. Read them beside the paper:
//! the comments say what to look at. `tests/scripts.rs` compares each with the output it
//! expects, so they are tests as well; when the core changes on purpose,
//! `UPDATE_SCRIPTS=1 cargo test --release --test scripts` rewrites the expected outputs, and the
//! diff shows, message by message, what the change did. The MIT 6.5840 ports (`tests/raft_*.rs`)
//! are the second layer: seeded random schedules checking the invariants below.
//!
//! ## What this implementation adds to Figure 2, and why
//!
//! - **No-op on election** (§5.4.2, §8): a new leader appends an empty entry of its term. Figure 8
//!   shows that a leader may not commit entries of earlier terms by counting replicas; committing
//!   its own no-op commits everything before it.
//! - **Conflict-only truncation** (§5.3): a follower deletes entries only at the first index whose
//!   term differs. A delayed, duplicated AppendEntries whose entries already match changes nothing —
//!   truncating there would delete newer entries (a bug of the Go original).
//! - **Fast backtracking** (end of §5.3): a rejection carries `conflict_term` and the first index of
//!   it, so the leader skips a whole term per round trip instead of one entry.
//! - **Flow control, batching and pipelining** (thesis §10.2.2): by default one AppendEntries
//!   with entries in flight per follower; what is proposed meanwhile leaves together in the next
//!   one, so under load every round trip (and every follower fsync) carries a batch. With
//!   [`Config::max_inflight`] above 1 the leader *pipelines*: it sends the next request before
//!   the earlier ones are answered, up to that many, moving `next_index` on as each leaves
//!   (optimistically: a rejection or a timeout moves it back), so each entry still goes to each
//!   follower once when nothing is lost. Pipelining is only for a follower known to match, as in
//!   etcd-io/raft: after a rejection, a lost request or a snapshot the leader *probes*, one
//!   request at a time, until an answer says where the logs agree (a window of guesses would be
//!   refused wholesale). Requests and answers may then overlap, get lost or arrive out of order;
//!   that is safe because the follower's consistency check judges each request on its own (a
//!   request that arrives before its predecessor is refused, and the leader backs up), matches
//!   only move up, and a rejection answering a request sent before the last back-up (or the
//!   last timeout) is ignored as stale (`tests/scripts/pipelining.txt` shows it step by step).
//!   Pipelining shortens the wait when round trips are long; when the CPU is what runs
//!   out (two cores running three nodes), smaller batches cost more per entry, so the server's
//!   default window is 1 (README, "Pipelining").
//!   The leader batches on the way in too: [`RaftNode::propose_batch`] appends
//!   many clients' commands as one log write and one round of AppendEntries, with the log exactly
//!   as after one [`RaftNode::propose`] each; the server gathers them while the Raft lock is busy
//!   (`server::proposals`).
//! - **ReadIndex** (thesis §6.4): a linearizable read notes the commit index, confirms with one
//!   heartbeat round that a majority still follows this leader (AppendEntries carry a `seq` for
//!   this), and is served once the state machine reaches that index. No log write per read.
//! - **Lease reads, opt-in** (thesis §6.4.1): see the section below.
//! - **PreVote** (thesis §9.6) and **check quorum** (§6.2): a node that cannot win — cut off by a
//!   one-way partition, say — asks first whether it *would* get votes, without bumping its term, so
//!   it cannot depose a working leader; nodes that hear from a live leader ignore vote requests;
//!   and a leader that has not heard from a majority for an election timeout steps down, so a
//!   leader in a minority stops answering as if it still led. "Heard from" means an answer, and a
//!   follower answers only once what it promises is durable: when a majority's disks stall for
//!   longer than an election timeout, the leader steps down although nobody is cut off (measured
//!   in the README's "A slow or stalling disk").
//! - **Snapshots** (§7): the state machine saves its state every N entries, the log is compacted
//!   behind it (keeping a few trailing entries), and a follower that needs compacted entries
//!   receives the snapshot instead.
//!
//! ## Membership (thesis chapter 4)
//!
//! The cluster's members are a log entry too: a [`Membership`] (voters and learners, each with
//! its address, and the cluster id) is the command of a *configuration entry*, marked by a
//! leading zero byte no client command may start with. `--peers` only bootstraps: a brand-new
//! node writes its first configuration as entry (1, term 1), identically on every initial member,
//! as etcd does; afterwards a node's members are the latest configuration in its log.
//!
//! **Single-server changes (thesis §4.1), not joint consensus (§4.3).** Each change adds,
//! promotes, removes or moves one server. Then any majority of the old voters and any majority of
//! the new ones share a server, so the two configurations can never elect two leaders in one
//! term, and no intermediate joint configuration is needed. We chose it because it is the
//! simplest correct algorithm to read (one rule instead of two majorities), it is what etcd
//! offers by default, and an operator's changes are one server at a time anyway (add, then
//! promote, then remove). Two rules keep it safe (`node/membership.rs`):
//! - *one change at a time*: a leader refuses a change (409) while an earlier configuration entry
//!   is uncommitted, since two uncommitted single-server changes can add up to a two-server one;
//! - *an entry of its own term first*: a new leader proposes a change only once it has committed
//!   an entry of its term (its no-op). Without it, a leader can build its change on a
//!   configuration that a concurrent, uncommitted change of an earlier leader replaces, and a
//!   leader can be elected without a committed entry (Ongaro, raft-dev, "bug in single-server
//!   membership changes", 2015). `tests/raft_membership/rules.rs` builds that scenario message by
//!   message; with either rule switched off, the simulation's Leader Completeness check fails.
//!
//! **A configuration takes effect on append**, committed or not (§4.1): a server always uses the
//! latest configuration in its log ([`Configs`]), and one in a conflicting suffix that a new
//! leader truncates is undone with it. Waiting for the commit would not be safe either: a leader
//! of the new configuration could not know when the others switch. It is safe because of the
//! overlap above, and because a change is only proposed once the previous one is committed.
//!
//! **Learners** (§4.2.1) receive the log and snapshots but never vote and never count towards a
//! commit, a ReadIndex round or check quorum; a new member joins as one and is promoted once it
//! is within `PROMOTE_MAX_LAG` entries of the commit index, so adding a server never stalls
//! commits. **Removing the leader** (§4.2.2): from the append on it does not count itself; it
//! keeps replicating until the change commits, then steps down. **A removed server** (§4.2.3)
//! never campaigns once its log says it was removed; before it knows, PreVote and check quorum
//! keep its elections from deposing a leader that the others still hear from. A **strict check**
//! refuses (412) a change after which the voters heard from within an election timeout would not
//! be a quorum of the new configuration, unless forced.
//!
//! Compaction must not lose the configuration: the core saves the configuration in force at the
//! start of the log ([`Storage::save_membership_base`]) before it compacts past, or installs a
//! snapshot beyond, the entry that set it; InstallSnapshot carries the snapshot's configuration,
//! and so does the snapshot file itself.
//!
//! **When a majority is lost for good**, Raft itself offers no way out: every change, a removal
//! included, must be committed by a majority of the configuration in force (§4.1), and that
//! majority is gone. [`RaftNode::force_new_cluster`] (`node/recovery.rs`, `--force-new-cluster`)
//! is the operator's deliberate exit, outside the algorithm: a survivor appends, with no leader's
//! authority, a configuration in which it is the only voter, in a term above all it has seen (so
//! no other log can hold a different entry at that index and term), under a new cluster id (so
//! old members returning with old data are refused instead of fighting it). It keeps and commits
//! its whole log, as it would had it won an election; whatever the old majority committed beyond
//! it is lost, which is why the operator picks the most up-to-date survivor.
//!
//! ## Leadership transfer (thesis §3.10)
//!
//! [`RaftNode::transfer_leadership`]: the leader stops taking proposals (503, retryable), brings
//! the target's log up to date, and sends it `TimeoutNow`; the target campaigns at once, skipping
//! PreVote, with RequestVotes marked `transfer` so that voters inside their check-quorum lease
//! answer them rather than ignore them. If no new leader is elected within an election timeout,
//! the leader abandons the transfer and takes proposals again. A server that gets SIGTERM while
//! it leads transfers first, so a rolling restart costs no election timeout.
//!
//! ## Lease reads (thesis §6.4.1)
//!
//! ReadIndex costs a heartbeat round per batch of reads. The thesis shows how to skip it with a
//! clock: with check quorum, a follower that heard from the leader ignores vote requests until
//! a minimum election timeout has passed on its clock, so once a majority has answered a request
//! the leader sent at time *T*, no rival can be elected before *T* + that timeout. Until then —
//! less a margin for the clocks — the leader may serve reads at its commit index on its own.
//!
//! The core stays free of clocks: the shell gives it milliseconds with [`RaftNode::set_clock`]
//! before it steps or ticks, the core stamps each AppendEntries with them as it is made (an
//! earlier stamp than the real send, so only ever conservative), and an answer to request `seq`
//! moves that follower's lease start to the stamp of `seq`. [`RaftNode::read_lease`] takes the
//! time as read *now* (under the lock: a read that waited for it must not be judged by when it
//! arrived), and serves the read at once if a majority's lease starts, plus
//! [`Config::lease_ms`], lie ahead; otherwise it is a ReadIndex read. A frozen leader (a long GC
//! pause, SIGSTOP) is therefore safe: when it wakes its clock has moved on and its lease is gone.
//! What the lease does assume is that no follower's clock runs faster than the leader's by more
//! than the drift the shell allowed for (`tests/scripts/lease_read.txt` shows the stale read a
//! faster clock allows). Four rules close the gaps:
//! - *an entry of its own term first*: as for ReadIndex, a new leader's commit index may lag
//!   until its no-op commits;
//! - *a follower's window is counted in whole ticks*: its first tick may come right after it
//!   heard from the leader, so the window is `election_ticks_min - 1` ticks of real time, and
//!   the shell computes the lease from that;
//! - *no lease once a transfer begins* (§3.10): the target's RequestVotes are marked
//!   `transfer`, and voters inside their lease grant them, so a leader that sent TimeoutNow
//!   serves no lease read for the rest of its term;
//! - *a node that just started is quiet*: it may have answered the leader just before it
//!   crashed and forgotten it, so with leases on it ignores vote requests for its first minimum
//!   election timeout (the thesis leaves this implicit; without it, a follower that restarts at
//!   once can vote a rival in while the old leader's lease runs — the script's last step).
//!
//! ## Clients: exactly once, and what a transaction is to Raft (thesis §6.3)
//!
//! Raft by itself gives *at least once*: a client whose leader crashed before answering cannot
//! tell whether its command committed, and if it sends it again the command may run twice. The
//! thesis (§6.3) fixes this above the core: the state machine keeps, per client, the answer of
//! its last command, and answers a duplicate from that table without running it again. This
//! implementation keys the table by the client's `Idempotency-Key` header instead of a session
//! (`crate::kv::idempotency`): an entry `Idempotent { meta, command }` is run once; a later entry
//! with the same key and fingerprint is answered with the first one's index, revision and
//! outcome; the same key with another command is refused. The table must be forgotten in the
//! same way on every node, so — as §6.3 prescribes for session expiry — no node reads its own
//! clock when applying: the leader stamps each such entry with its wall clock and its TTL and cap,
//! and the table's clock is the largest stamp applied (a new leader whose clock lags cannot move
//! it back). The table is part of the state machine, so it is in snapshots too.
//!
//! A transaction (compares, then one branch of puts, deletes and reads) is one entry to Raft: the
//! core replicates bytes and knows nothing of it; atomicity comes from applying one entry at a
//! time. A transaction that writes nothing needs no entry at all: the server serves it like any
//! linearizable read, after a ReadIndex round (§6.4).
//!
//! ## Invariants (checked in tests, `assert!`ed or refused where cheap)
//!
//! - *Election Safety*: at most one leader per term (the simulation checks every output).
//! - *Log Matching*: same index and term ⇒ same entry and same prefix (the AppendEntries check).
//! - *Leader Completeness*: a new leader holds every committed entry (the simulation checks it on
//!   every election; `RaftLog::append_from_leader` refuses to overwrite a committed entry).
//! - *State Machine Safety*: every node applies the same command at each index, in order, exactly
//!   once (`SimCluster` checks every applied entry).
//!
//! ## Caveats
//!
//! - Membership changes are single-server only (no joint consensus, thesis §4.3).
//! - Time is logical: the shell turns milliseconds into ticks. ReadIndex needs no clock
//!   assumptions; lease reads, off by default, assume bounded clock drift (above).

mod config;
mod entry_log;
mod log;
mod membership;
mod message;
mod node;
mod output;
mod role;
mod storage;

pub use config::Config;
pub(crate) use entry_log::EntryLog;
pub use log::RaftLog;
pub use membership::{
    ChangeRefused, Configs, INTERNAL_ENTRY_MARK, MemberRole, Membership, MembershipChange,
};
pub use message::{
    AppendEntries, AppendEntriesResponse, Entry, Envelope, HardState, Index, InstallSnapshot,
    InstallSnapshotResponse, Message, NodeId, RequestVote, RequestVoteResponse, SnapshotMeta, Term,
    base64,
};
pub use message::{MAX_INDEX, MAX_TERM};
pub use node::{ForcedCluster, RaftNode};
pub use output::{Counters, Output, PeerProgress, ReadState, ReplicationState, Status, SyncPoint};
pub use role::Role;
pub use storage::{MemStorage, Storage};
