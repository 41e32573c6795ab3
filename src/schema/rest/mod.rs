//! Confluent's Schema Registry REST API over a [`Registry`], as an `axum` router.
//!
//! The broker's admin HTTPS listener mounts [`router`]; Confluent's clients and
//! serializers talk to it unchanged: same paths, JSON bodies, content type
//! `application/vnd.schemaregistry.v1+json` and `{"error_code", "message"}` errors.
//!
//! | Method and path | Permission | Answer |
//! |---|---|---|
//! | `GET /` | any caller | `{}` |
//! | `GET /schemas/types` | any caller | `["JSON","PROTOBUF","AVRO"]` |
//! | `GET /schemas/ids/{id}[/schema]` | read on a subject using the id | `{"schema", "schemaType"}` / the text |
//! | `GET /schemas/ids/{id}/versions` | read (lists readable subjects) | `[{"subject","version"}]` |
//! | `GET /subjects[?deleted=true]` | read (lists readable subjects) | `["a","b"]` |
//! | `GET /subjects/{s}/versions[?deleted=true]` | read | `[1,2]` |
//! | `POST /subjects/{s}/versions` | write | `{"id"}` |
//! | `GET /subjects/{s}/versions/{v\|latest}[/schema]` | read | `{"subject","id","version","schema","schemaType"}` / the text |
//! | `POST /subjects/{s}[?deleted=true]` | read | the version holding the schema |
//! | `DELETE /subjects/{s}[?permanent=true]` | admin | `[versions]` |
//! | `DELETE /subjects/{s}/versions/{v}[?permanent=true]` | admin | `version` |
//! | `GET /config` | read on the global scope | `{"compatibilityLevel"}` |
//! | `PUT /config` | admin on the global scope | `{"compatibility"}` |
//! | `DELETE /config` | admin on the global scope | `{"compatibilityLevel"}` (previous; resets to BACKWARD) |
//! | `GET /config/{s}[?defaultToGlobal=true]` | read | `{"compatibilityLevel"}` |
//! | `PUT /config/{s}` | admin | `{"compatibility"}` |
//! | `DELETE /config/{s}` | admin | `{"compatibilityLevel"}` (previous) |
//! | `POST /compatibility/subjects/{s}/versions[/{v}][?verbose=true]` | read | `{"is_compatible"[, "messages"]}` |
//! | `GET /mode[/{s}]` | any caller | `{"mode": "READWRITE"}` |
//!
//! Every request needs a principal ([`RestAuthorizer::principal`], else `401`/`40101`) and
//! the permission above ([`RestAuthorizer::allowed`], else `403`/`40301`). Schema
//! references are refused (`42201`); `normalize` is accepted and needs nothing (the
//! registry always compares canonical forms).

mod handlers;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::registry::{Registry, RegistryError};

/// Content type of every answer.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// What a call does to its resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Fetch schemas, versions, configuration; check compatibility.
    Read,
    /// Register schemas.
    Write,
    /// Change configuration; delete.
    Admin,
}

/// What a call acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource<'a> {
    /// A subject.
    Subject(&'a str),
    /// The registry-wide configuration.
    Global,
    /// A topic (its schema policy; only the protocol frames use it).
    Topic(&'a str),
}

/// Decides who is calling and what they may do. The broker implements it with the
/// principal its admin listener attaches to the request and its ACL.
pub trait RestAuthorizer: Send + Sync + 'static {
    /// The caller's principal, from the request (headers, or extensions the listener set,
    /// such as the client certificate's identity); `None` answers `401`.
    fn principal(&self, request: &Parts) -> Option<String>;

    /// Whether `principal` may do `operation` on `resource`.
    fn allowed(&self, principal: &str, operation: Operation, resource: Resource<'_>) -> bool;
}

/// Everyone may do everything, as the principal `anonymous` (for tests and for a listener
/// that already authorised the caller).
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl RestAuthorizer for AllowAll {
    fn principal(&self, _: &Parts) -> Option<String> {
        Some("anonymous".to_owned())
    }
    fn allowed(&self, _: &str, _: Operation, _: Resource<'_>) -> bool {
        true
    }
}

/// The router's state.
struct RestState {
    registry: Arc<Registry>,
    auth: Arc<dyn RestAuthorizer>,
}

/// The REST API over `registry`, authorising every call with `auth`.
pub fn router(registry: Arc<Registry>, auth: Arc<dyn RestAuthorizer>) -> Router {
    use axum::routing::post;
    use handlers as h;
    let state = Arc::new(RestState { registry, auth });
    Router::new()
        .route("/", get(h::root))
        .route("/schemas/types", get(h::types))
        .route("/schemas/ids/{id}", get(h::schema_by_id))
        .route("/schemas/ids/{id}/schema", get(h::raw_schema_by_id))
        .route("/schemas/ids/{id}/versions", get(h::id_versions))
        .route("/subjects", get(h::subjects))
        .route("/subjects/{subject}", post(h::lookup).delete(h::delete_subject))
        .route("/subjects/{subject}/versions", get(h::versions).post(h::register))
        .route("/subjects/{subject}/versions/{version}", get(h::version).delete(h::delete_version))
        .route("/subjects/{subject}/versions/{version}/schema", get(h::raw_version))
        .route("/config", get(h::global_config).put(h::set_global_config).delete(h::delete_global_config))
        .route("/config/{subject}", get(h::subject_config).put(h::set_subject_config).delete(h::delete_subject_config))
        .route("/compatibility/subjects/{subject}/versions", post(h::check_all))
        .route("/compatibility/subjects/{subject}/versions/{version}", post(h::check_version))
        .route("/mode", get(h::mode).put(h::mode_unsupported))
        .route("/mode/{subject}", get(h::mode).put(h::mode_unsupported))
        .fallback(h::not_found)
        .method_not_allowed_fallback(h::method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::map_response(set_content_type))
        .with_state(state)
}

/// Largest request body accepted (a schema text and its JSON envelope).
pub const MAX_BODY: usize = 8 * 1024 * 1024;

async fn set_content_type(mut r: Response) -> Response {
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    r
}

/// An error answer: HTTP status and Confluent's `{"error_code", "message"}` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Confluent's error code.
    pub error_code: u32,
    /// Human-readable detail.
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, error_code: u32, message: impl Into<String>) -> ApiError {
        ApiError { status, error_code, message: message.into() }
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, 400, message)
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> ApiError {
        let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError::new(status, e.error_code(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error_code": self.error_code, "message": self.message});
        (self.status, body.to_string()).into_response()
    }
}

/// The authenticated caller of a request.
struct Caller {
    principal: String,
    state: Arc<RestState>,
}

impl Caller {
    /// Fails with `403`/`40301` unless the caller may do `op` on `resource`.
    fn require(&self, op: Operation, resource: Resource<'_>) -> Result<(), ApiError> {
        if self.state.auth.allowed(&self.principal, op, resource) {
            return Ok(());
        }
        let what = match resource {
            Resource::Subject(s) => format!("Subject: {s}"),
            Resource::Global => "the global configuration".to_owned(),
            Resource::Topic(t) => format!("Topic: {t}"),
        };
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            40301,
            format!("User {} is denied operation {op:?} on {what}", self.principal),
        ))
    }

    fn may(&self, op: Operation, resource: Resource<'_>) -> bool {
        self.state.auth.allowed(&self.principal, op, resource)
    }

    fn registry(&self) -> &Registry {
        &self.state.registry
    }
}

impl FromRequestParts<Arc<RestState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<RestState>) -> Result<Caller, ApiError> {
        match state.auth.principal(parts) {
            Some(principal) => {
                // On a shared store (a cluster), catch up before answering.
                state.registry.sync().await?;
                Ok(Caller { principal, state: state.clone() })
            }
            None => Err(ApiError::new(StatusCode::UNAUTHORIZED, 40101, "Unauthorized: no client identity")),
        }
    }
}
