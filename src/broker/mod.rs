//! The qwire broker: a QUIC server that requires client certificates (or, with client
//! auth `optional`, SASL from clients without one), checks a per-topic ACL, and appends
//! produced batches to durable partition logs.
//!
//! - [`server`]: start-up, endpoint, retention, graceful shutdown;
//! - `admission`: connection slots, the handshake budget and timeout, QUIC Retry under load;
//! - `budget`: the per-connection and broker-wide budgets for queued response bytes;
//! - [`auth`]: certificates required or optional, SASL users and JWKS (reloaded on
//!   SIGHUP), each certificate-less connection's deadline and session expiry;
//! - `connection`: the per-connection loop (principal from the client certificate, one
//!   reader per stream) over `framing` (bytes to frames, the unfinished-frame budget) and
//!   `writer` (in-order responses, the group-commit wait);
//! - `requests`: one module per request kind (hello, sasl, producer_id, metadata, admin,
//!   produce, fetch), sharing the connection context of `context`;
//! - [`topics`] / [`partition`]: topics, partitions, group commit;
//! - [`log`]: segmented on-disk log with sparse index and crash recovery;
//! - [`producer_state`]: idempotent-producer dedup;
//! - [`producer_ids`]: issued producer ids, their principal and current epoch;
//! - [`disk`]: the injectable fsync and the atomic replacement of small state files;
//! - [`acl`], [`config`], [`metrics`], [`telemetry`] (labelled counters, latency histograms,
//!   per-partition counters);
//! - [`admin`]: the admin HTTP listener (`/health`, `/ready`, `/metrics`, mounted routers);
//! - `cluster`: the cluster node (`--metadata etcd://...`): session, controller, roles,
//!   replicas, follower tasks, peer connections (CLUSTER.md).

pub mod acl;
pub mod admin;
mod admission;
pub mod auth;
mod budget;
mod cluster;
pub mod config;
mod connection;
mod context;
pub mod disk;
mod framing;
pub mod log;
pub mod metrics;
pub mod partition;
pub mod producer_ids;
pub mod producer_state;
mod requests;
pub mod schema_rest;
pub mod server;
pub mod telemetry;
pub mod topics;
mod writer;

pub use auth::{AuthConfig, ClientAuth};
pub use config::BrokerConfig;
pub use server::{start, BrokerError, BrokerHandle, BrokerTls, CredentialsReloader};
