//! Cluster mode: brokers that replicate partitions, with their metadata in etcd.
//! `CLUSTER.md` at the repository root describes the design, every key and every failure.
//!
//! # Layout
//!
//! - [`config`]: a broker's cluster settings and the `--metadata etcd://...` URL;
//! - [`store`]: the metadata store interface ([`store::MetaStore`], etcd's semantics) and
//!   its two implementations: the embedded store of single-node mode, and etcd (cargo
//!   feature `cluster`);
//! - [`metadata`]: the typed layer shared by both modes — broker sessions under leases,
//!   the controller election, topic specs, partition states changed only by fenced
//!   compare-and-swap, producer-id blocks, the cluster view kept current by a watch, and a
//!   generic namespace for the schema registry;
//! - [`controller`]: the controller's decisions (a pure function of the view) and the thin
//!   shell that writes them;
//! - [`replica_set`]: the leader's rules — high watermark, acks=all, in-sync set changes;
//! - [`epochs`]: leader epochs of a log and the KIP-101 truncation rule;
//! - [`roles`]: this broker's role per partition (leader, follower, waiting), and the
//!   `NotLeader` answer naming the leader;
//! - [`describe`]: `DescribeCluster` / `DescribeTopics` answers from the view.
//!
//! Everything here except the etcd store compiles with the `broker` feature alone: a
//! single broker runs the same code on the embedded store.

pub mod config;
pub mod controller;
pub mod describe;
pub mod epochs;
pub mod metadata;
pub mod replica_set;
pub mod roles;
pub mod store;
