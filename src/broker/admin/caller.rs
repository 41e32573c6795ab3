//! Who sent an admin request: the authenticated principal from the client certificate
//! (derived exactly as the QUIC listener does, with
//! [`principal_of`](crate::transport::certs::principal_of)) and the remote address.
//!
//! The listener puts a [`Caller`] into every request's extensions before the router sees
//! it; handlers take it as an extractor, or take [`Principal`] to refuse requests that
//! carry no certificate (the plaintext development mode).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// The caller of one admin request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The client certificate's principal (Common Name, else first DNS/URI SAN); `None`
    /// on a plaintext listener, where no certificate is presented.
    pub principal: Option<Arc<str>>,
    /// The TCP peer.
    pub remote: SocketAddr,
}

/// Extracts the [`Caller`]. Always present on requests served by the admin listener; a
/// router used elsewhere (a unit test calling it directly) gets a 500 without one.
impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            error_response(StatusCode::INTERNAL_SERVER_ERROR, "request did not come through the admin listener")
        })
    }
}

/// The authenticated principal of a request. As an extractor it answers 401 when the
/// request carries no client certificate (plaintext listener).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal(pub Arc<str>);

impl Principal {
    /// The principal's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        caller.principal.map(Principal).ok_or_else(|| {
            error_response(StatusCode::UNAUTHORIZED, "this endpoint needs a client certificate (HTTPS listener)")
        })
    }
}

/// A JSON error body `{"error": message}` with a status code.
pub(crate) fn error_response(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}
