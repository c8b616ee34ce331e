//! Helpers shared by real-binary tests (not a test target of its own: Cargo only builds the files
//! directly in `tests/`).

#![allow(dead_code)]

pub mod cluster;
pub mod history;
pub mod members;
pub mod webdriver;
