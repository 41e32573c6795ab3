//! Helpers for the tests that run the `qwire` binary: everything in the library's
//! shared test helpers (root `tests/common`), plus a broker child process.
#![allow(dead_code)]

#[path = "../../../tests/common/mod.rs"]
mod shared;
pub use shared::*;

pub mod cluster;
pub mod privileged;
pub mod process;
#[allow(unused_imports)]
pub use process::BrokerProcess;
