//! RaftLabKV: a key-value store replicated with Raft, synchronous and threaded.

pub mod check;
pub mod error;
pub mod raft;
pub mod storage;

pub use error::{Error, Result};
