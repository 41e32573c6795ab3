//! qwire
#![warn(missing_docs)]
pub mod broker;
pub mod client;
pub mod protocol;
pub mod transport;
