//! The qwire broker: a QUIC server that requires client certificates, checks a per-topic
//! ACL, and appends produced batches to durable partition logs.
//!
//! - [`server`]: endpoint, connection limits, principal from the client certificate,
//!   graceful shutdown;
//! - `handler`: one stream's pipelined requests and in-order responses;
//! - [`topics`] / [`partition`]: topics, partitions, group commit;
//! - [`log`]: segmented on-disk log with sparse index and crash recovery;
//! - [`producer_state`]: idempotent-producer dedup;
//! - [`disk`]: the injectable fsync and the atomic replacement of small state files;
//! - [`acl`], [`config`], [`producer_ids`], [`metrics`].

pub mod acl;
pub mod config;
pub mod disk;
mod handler;
pub mod log;
pub mod metrics;
pub mod partition;
pub mod producer_ids;
pub mod producer_state;
pub mod server;
pub mod topics;

pub use config::BrokerConfig;
pub use server::{start, BrokerError, BrokerHandle, BrokerTls};
