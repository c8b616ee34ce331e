//! RaftLabKV: a key-value store replicated with Raft, synchronous and threaded.

pub mod chaos;
pub mod check;
pub mod client;
pub mod error;
pub mod kv;
pub mod raft;
pub mod server;
pub mod sim;
pub mod storage;
pub mod testkit;

pub use error::{Error, Result};
