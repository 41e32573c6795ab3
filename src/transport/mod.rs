//! Transport: certificates, rustls/quinn configuration, and client connections.
//!
//! - [`certs`]: dev CA and leaf generation (rcgen), PEM loading, principal extraction;
//! - [`tls`]: TLS 1.3-only rustls configs with client certificates required, quinn
//!   transport tuning;
//! - [`connection`]: the client endpoint, the `Hello` handshake and framed streams;
//! - [`sasl`]: the SASL exchange for clients without a certificate, and re-authentication.

pub mod certs;
pub mod connection;
pub mod sasl;
pub mod tls;

pub use certs::{CertError, Identity};
pub use connection::{
    BrokerConnection, ClientEndpoint, FrameReader, FrameStream, FrameWriter, Refuser, TransportError,
};
pub use tls::{QuicTuning, TlsError};
