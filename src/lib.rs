//! qwire: a QUIC-transport message producer engine for Rust services, and the broker it
//! talks to.
//!
//! # Architecture
//!
//! ```text
//!  service ── send(record) ──► producer engine ══ QUIC + mTLS ══► broker ──► partition logs
//! ```
//!
//! - The **protocol** is sans-IO: frames and record batches are encoded into and decoded
//!   from byte buffers, with no runtime, socket or clock. `PROTOCOL.md` documents it byte
//!   for byte.
//! - The **transport** builds TLS 1.3 configurations in which the broker requires a client
//!   certificate, and client connections that are only "ready" after an application
//!   `Hello` → `HelloOk` exchange (QUIC's `connect()` completes before the server has
//!   checked the client certificate).
//! - The **producer** takes records through lock-free per-partition queues; its decisions
//!   (sealing, sending, retries, timeouts, reconnects, epoch bumps) are a sans-IO state
//!   machine (`producer::core`, `handle_*` in, `poll_*` out) under one async task that owns
//!   the sockets and the timer; every record gets exactly one outcome, saying whether it
//!   may be stored.
//! - The **broker** accepts QUIC connections, derives the principal from the client
//!   certificate, checks a per-topic ACL, and serves pipelined requests per stream with
//!   responses in request order. Batches are stored as received (still compressed) in a
//!   segmented, CRC-checked log; idempotent-producer state dedups retries and survives
//!   restarts; acks=all waits for a group-committed fsync.
//!
//! # Layout
//!
//! - [`protocol`]: frames, record batches, compression codecs, error codes;
//! - [`transport`]: certificates, rustls/quinn configuration, client connections;
//! - [`client`]: a plain request/response client (admin, metadata, fetch);
//! - [`producer`]: the producer engine (record → partitioner → accumulator → core: batches,
//!   window, retry, timeouts, links, metadata, producer id → shell);
//! - `prometheus` (cargo feature `prometheus`, on with `broker`): metric names, labels and
//!   helpers shared by the broker's `/metrics` and the producer's exporter;
//! - `broker` (cargo feature `broker`, off by default): server, connection loop, framing,
//!   one module per request kind, topics, partitions, log, dedup, ACL;
//! - `cluster` (with `broker`): metadata store (embedded, or etcd with the cargo feature
//!   `cluster`), controller, replication rules, leader epochs. See `CLUSTER.md`;
//! - `schema` (cargo feature `schema`, enabled by `broker`): the schema registry (JSON
//!   Schema, Avro, Protobuf; compatibility; durable store; Confluent-compatible REST API)
//!   and typed, validated records for the producer.
//!
//! The `qwire` command and the benchmark harness behind `qwire bench` are the `qwire-cli`
//! package in `cli/`: a service that links this crate for the producer compiles neither.
#![warn(missing_docs)]

pub mod auth;
#[cfg(feature = "broker")]
pub mod broker;
pub mod client;
#[cfg(feature = "broker")]
pub mod cluster;
pub mod producer;
#[cfg(feature = "prometheus")]
pub mod prometheus;
pub mod protocol;
#[cfg(feature = "schema")]
pub mod schema;
pub mod transport;

/// The README's code blocks, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
