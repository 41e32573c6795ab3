//! One function per REST endpoint: extract, authorise, call the registry, answer.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, Caller, Operation, Resource};
use crate::schema::registry::{RegistryError, SchemaInput, SubjectVersion, VersionSpec};
use crate::schema::{Compatibility, SchemaType};

type Params = Query<HashMap<String, String>>;
type Answer = Result<Response, ApiError>;

fn ok(v: Value) -> Answer {
    Ok((StatusCode::OK, v.to_string()).into_response())
}

fn flag(q: &Params, name: &str) -> bool {
    q.get(name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// `schemaType` is omitted for Avro, as Confluent does.
fn with_type(mut v: Value, t: SchemaType) -> Value {
    if t != SchemaType::Avro {
        v["schemaType"] = json!(t.as_str());
    }
    v
}

fn version_json(v: &SubjectVersion) -> Value {
    with_type(json!({"subject": v.subject, "version": v.version, "id": v.id, "schema": v.schema}), v.schema_type)
}

/// The body of register, lookup and compatibility requests.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SchemaBody {
    schema: String,
    #[serde(default)]
    schema_type: Option<String>,
    #[serde(default)]
    references: Option<Vec<Value>>,
}

fn schema_input(body: &Bytes) -> Result<SchemaInput, ApiError> {
    let b: SchemaBody = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, 42201, format!("Invalid schema request: {e}"))
        } else {
            ApiError::bad_request(format!("Unparseable request body: {e}"))
        }
    })?;
    if b.references.as_ref().is_some_and(|r| !r.is_empty()) {
        return Err(RegistryError::ReferencesUnsupported.into());
    }
    let schema_type = match b.schema_type.as_deref() {
        None | Some("") => SchemaType::Avro,
        Some(t) => t.parse().map_err(|e: String| {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, 42201, format!("Invalid schema: {e}"))
        })?,
    };
    Ok(SchemaInput { schema_type, schema: b.schema })
}

fn parse_id(id: &str) -> Result<u32, ApiError> {
    id.parse().map_err(|_| ApiError::new(StatusCode::NOT_FOUND, 40403, format!("Schema {id} not found")))
}

pub(super) async fn root(_: Caller) -> Answer {
    ok(json!({}))
}

pub(super) async fn types(_: Caller) -> Answer {
    ok(json!(SchemaType::ALL.iter().map(|t| t.as_str()).collect::<Vec<_>>()))
}

/// Read access to a schema id: through any subject (also soft-deleted versions) using it.
async fn readable_id(c: &Caller, id: &str) -> Result<u32, ApiError> {
    let id = parse_id(id)?;
    let users = c.registry().id_versions(id, true).await?;
    if !users.iter().any(|(s, _)| c.may(Operation::Read, Resource::Subject(s))) {
        let subject = users.first().map(|(s, _)| s.as_str()).unwrap_or("");
        c.require(Operation::Read, Resource::Subject(subject))?;
    }
    Ok(id)
}

pub(super) async fn schema_by_id(c: Caller, Path(id): Path<String>) -> Answer {
    let id = readable_id(&c, &id).await?;
    let s = c.registry().schema(id).await?;
    ok(with_type(json!({"schema": s.schema}), s.schema_type))
}

pub(super) async fn raw_schema_by_id(c: Caller, Path(id): Path<String>) -> Answer {
    let id = readable_id(&c, &id).await?;
    Ok((StatusCode::OK, c.registry().schema(id).await?.schema).into_response())
}

pub(super) async fn id_versions(c: Caller, Path(id): Path<String>, q: Params) -> Answer {
    let id = readable_id(&c, &id).await?;
    let list: Vec<Value> = c
        .registry()
        .id_versions(id, flag(&q, "deleted"))
        .await?
        .into_iter()
        .filter(|(s, _)| c.may(Operation::Read, Resource::Subject(s)))
        .map(|(s, v)| json!({"subject": s, "version": v}))
        .collect();
    ok(json!(list))
}

pub(super) async fn subjects(c: Caller, q: Params) -> Answer {
    let all = c.registry().subjects(flag(&q, "deleted"));
    let prefix = q.get("subjectPrefix").map(String::as_str).unwrap_or("");
    let visible: Vec<String> =
        all.into_iter().filter(|s| s.starts_with(prefix) && c.may(Operation::Read, Resource::Subject(s))).collect();
    ok(json!(visible))
}

pub(super) async fn versions(c: Caller, Path(subject): Path<String>, q: Params) -> Answer {
    c.require(Operation::Read, Resource::Subject(&subject))?;
    ok(json!(c.registry().versions(&subject, flag(&q, "deleted"))?))
}

pub(super) async fn register(c: Caller, Path(subject): Path<String>, body: Bytes) -> Answer {
    c.require(Operation::Write, Resource::Subject(&subject))?;
    let input = schema_input(&body)?;
    let (id, _version) = c.registry().register(&subject, &input).await?;
    ok(json!({"id": id}))
}

pub(super) async fn version(c: Caller, Path((subject, version)): Path<(String, String)>, q: Params) -> Answer {
    c.require(Operation::Read, Resource::Subject(&subject))?;
    let spec = VersionSpec::parse(&version)?;
    ok(version_json(&c.registry().version(&subject, spec, flag(&q, "deleted")).await?))
}

pub(super) async fn raw_version(c: Caller, Path((subject, version)): Path<(String, String)>, q: Params) -> Answer {
    c.require(Operation::Read, Resource::Subject(&subject))?;
    let spec = VersionSpec::parse(&version)?;
    Ok((StatusCode::OK, c.registry().version(&subject, spec, flag(&q, "deleted")).await?.schema).into_response())
}

pub(super) async fn lookup(c: Caller, Path(subject): Path<String>, q: Params, body: Bytes) -> Answer {
    c.require(Operation::Read, Resource::Subject(&subject))?;
    let input = schema_input(&body)?;
    ok(version_json(&c.registry().lookup(&subject, &input, flag(&q, "deleted")).await?))
}

pub(super) async fn delete_subject(c: Caller, Path(subject): Path<String>, q: Params) -> Answer {
    c.require(Operation::Admin, Resource::Subject(&subject))?;
    ok(json!(c.registry().delete_subject(&subject, flag(&q, "permanent")).await?))
}

pub(super) async fn delete_version(c: Caller, Path((subject, version)): Path<(String, String)>, q: Params) -> Answer {
    c.require(Operation::Admin, Resource::Subject(&subject))?;
    let spec = VersionSpec::parse(&version)?;
    ok(json!(c.registry().delete_version(&subject, spec, flag(&q, "permanent")).await?))
}

/// The body of `PUT /config`.
#[derive(Deserialize)]
struct ConfigBody {
    compatibility: Option<String>,
    #[serde(rename = "compatibilityLevel")]
    compatibility_level: Option<String>,
}

fn level_of(body: &Bytes) -> Result<Compatibility, ApiError> {
    let b: ConfigBody =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("Unparseable request body: {e}")))?;
    let text = b.compatibility.or(b.compatibility_level).unwrap_or_default();
    text.parse().map_err(|_| RegistryError::InvalidCompatibility(text).into())
}

pub(super) async fn global_config(c: Caller) -> Answer {
    c.require(Operation::Read, Resource::Global)?;
    ok(json!({"compatibilityLevel": c.registry().global_compatibility()}))
}

pub(super) async fn set_global_config(c: Caller, body: Bytes) -> Answer {
    c.require(Operation::Admin, Resource::Global)?;
    let level = level_of(&body)?;
    c.registry().set_compatibility(None, Some(level)).await?;
    ok(json!({"compatibility": level}))
}

pub(super) async fn delete_global_config(c: Caller) -> Answer {
    c.require(Operation::Admin, Resource::Global)?;
    let previous = c.registry().set_compatibility(None, None).await?;
    ok(json!({"compatibilityLevel": previous.unwrap_or_default()}))
}

pub(super) async fn subject_config(c: Caller, Path(subject): Path<String>, q: Params) -> Answer {
    c.require(Operation::Read, Resource::Subject(&subject))?;
    ok(json!({"compatibilityLevel": c.registry().subject_compatibility(&subject, flag(&q, "defaultToGlobal"))?}))
}

pub(super) async fn set_subject_config(c: Caller, Path(subject): Path<String>, body: Bytes) -> Answer {
    c.require(Operation::Admin, Resource::Subject(&subject))?;
    let level = level_of(&body)?;
    c.registry().set_compatibility(Some(&subject), Some(level)).await?;
    ok(json!({"compatibility": level}))
}

pub(super) async fn delete_subject_config(c: Caller, Path(subject): Path<String>) -> Answer {
    c.require(Operation::Admin, Resource::Subject(&subject))?;
    let previous = c.registry().set_compatibility(Some(&subject), None).await?;
    ok(json!({"compatibilityLevel": previous.unwrap_or_default()}))
}

async fn check(c: Caller, subject: &str, spec: Option<VersionSpec>, q: &Params, body: &Bytes) -> Answer {
    c.require(Operation::Read, Resource::Subject(subject))?;
    let input = schema_input(body)?;
    let messages = c.registry().check(subject, spec, &input).await?;
    let mut answer = json!({"is_compatible": messages.is_empty()});
    if flag(q, "verbose") {
        answer["messages"] = json!(messages);
    }
    ok(answer)
}

pub(super) async fn check_all(c: Caller, Path(subject): Path<String>, q: Params, body: Bytes) -> Answer {
    check(c, &subject, None, &q, &body).await
}

pub(super) async fn check_version(
    c: Caller,
    Path((subject, version)): Path<(String, String)>,
    q: Params,
    body: Bytes,
) -> Answer {
    let spec = VersionSpec::parse(&version)?;
    check(c, &subject, Some(spec), &q, &body).await
}

pub(super) async fn mode(_: Caller) -> Answer {
    ok(json!({"mode": "READWRITE"}))
}

pub(super) async fn mode_unsupported(_: Caller) -> Answer {
    Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, 42204, "Invalid mode: only READWRITE is supported"))
}

pub(super) async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, 404, "HTTP 404 Not Found")
}

pub(super) async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, 405, "HTTP 405 Method Not Allowed")
}
