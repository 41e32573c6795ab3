//! The qwire wire protocol, sans-IO.
//!
//! Nothing here touches a socket, a runtime or a clock: frames and batches are encoded
//! into a `BytesMut` and decoded from bytes; time comes in as parameters. `PROTOCOL.md`
//! at the repository root describes the same format byte for byte.
//!
//! - [`frame`]: length-prefixed frames with a kind and a correlation id;
//! - [`batch`]: the record batch (Kafka record batch v2 in spirit) and its builder;
//! - [`compression`]: per-batch codecs;
//! - [`error`]: decode errors and the wire error codes;
//! - [`cluster`]: replication and cluster-administration frames;
//! - [`schema`]: the schema registry's frames and error codes.

pub mod batch;
pub mod cluster;
mod codec;
pub mod compression;
mod crc_shift;
pub mod error;
pub mod frame;
pub mod record;
pub mod sasl;
pub mod schema;

pub use batch::{BatchBuilder, BatchHeader, ProducerStamp, RecordBatch, StoredRecord};
pub use compression::Compression;
pub use error::{DecodeError, ErrorCode};
pub use frame::{Acks, Frame, FrameError, FrameKind, Payload, MAX_FRAME_SIZE};
pub use record::{Header, Record};

/// ALPN protocol id negotiated in the TLS handshake.
pub const ALPN: &[u8] = b"qwire/1";
/// Protocol version carried in `Hello` / `HelloOk`.
pub const PROTOCOL_VERSION: u16 = 1;

/// Checks a topic name: 1–249 bytes of ASCII letters, digits, `.`, `_` and `-`, and not
/// `.` or `..` (the name becomes a directory on the broker).
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 249 {
        return Err(format!("topic name must be 1 to 249 characters, got {}", name.len()));
    }
    if name == "." || name == ".." {
        return Err(format!("topic name '{name}' is reserved"));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!("topic name '{name}' contains '{c}'; allowed: A-Z a-z 0-9 . _ -"));
    }
    Ok(())
}
