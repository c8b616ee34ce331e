//! The Raft consensus core (essay to come with the node).

mod message;

pub use message::{
    AppendEntries, AppendEntriesResponse, Entry, Envelope, HardState, Index, Message, NodeId,
    RequestVote, RequestVoteResponse, Term, base64,
};
