//! The Raft consensus core (essay to come).

mod log;
mod message;
mod node;
mod role;

pub use log::RaftLog;
pub use message::{
    AppendEntries, AppendEntriesResponse, Entry, Envelope, HardState, Index, InstallSnapshot,
    InstallSnapshotResponse, Message, NodeId, RequestVote, RequestVoteResponse, SnapshotMeta, Term,
    base64,
};
pub use node::{Config, Output, RaftNode, ReadState, Status, SyncPoint};
pub use role::Role;
