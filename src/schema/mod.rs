//! Schemas: the registry the broker hosts, and what a producer needs to send typed,
//! validated records (cargo feature `schema`, which the `broker` feature enables).
//!
//! - [`types`]: schema types (JSON Schema, Avro, Protobuf) and compatibility levels;
//! - [`json`], [`avro`], [`protobuf`]: parsing each type, validating values (errors name
//!   the path and the rule), encoding and decoding; [`parsed`] wraps the three;
//! - [`compat`]: whether a new schema may follow earlier ones under a level;
//! - [`registry`]: subjects, versions, global ids, soft and hard deletes, per-subject and
//!   global levels, as a pure state machine over an event log kept in a [`RegistryStore`]
//!   (an fsync'd file for the embedded broker);
//! - [`service`]: the registry's protocol frames served against a [`Registry`];
//! - [`policy`]: a topic's schema policy (`none | warn | enforce`) checked on produce;
//! - [`cache`]: the client side: schemas and ids fetched once per subject or id;
//! - [`rest`]: Confluent's Schema Registry REST API as an `axum` router, so unmodified
//!   Confluent clients and serializers work;
//! - [`wire`]: the schema id on a record: a header, or Confluent's wire format (magic byte,
//!   big-endian id, Protobuf message indexes);
//! - [`typed`]: the [`SchemaRecord`] trait (and `#[derive(SchemaRecord)]`) for serde types
//!   that name their topic, key field, schema and format, and their serialisation.

pub mod avro;
pub mod cache;
pub mod compat;
pub mod error;
pub mod json;
pub mod parsed;
pub mod policy;
pub mod protobuf;
pub mod registry;
pub mod rest;
pub mod service;
pub mod typed;
pub mod types;
pub mod wire;

pub use error::{InvalidSchema, ValidationError};
pub use parsed::ParsedSchema;
pub use registry::{Registry, RegistryError, RegistryStore, SchemaInput};
pub use typed::{SchemaFormat, SchemaRecord, SchemaSource};
pub use types::{Compatibility, SchemaPolicy, SchemaType};
pub use wire::{IdPlacement, SCHEMA_ID_HEADER};

/// `#[derive(SchemaRecord)]`: see [`typed`].
pub use qwire_derive::SchemaRecord;
