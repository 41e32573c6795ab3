//! Schema registry requests on the plain client (PROTOCOL.md §19), and [`RegistryClient`]:
//! the registry access the producer's schema cache and the CLI use.

use std::sync::Arc;

use super::Client;
use crate::protocol::schema::{SchemaFrame, VersionBody};
use crate::protocol::{FrameKind, Payload};
use crate::schema::cache::{AccessFuture, RegistryAccess, SchemaError};
use crate::schema::registry::SchemaInput;
use crate::schema::{Compatibility, SchemaPolicy, SchemaType};
use crate::transport::connection::expect_kind;
use crate::transport::TransportError;

/// A subject's version as the broker answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaVersionInfo {
    /// Subject.
    pub subject: String,
    /// Version.
    pub version: u32,
    /// Global schema id.
    pub id: u32,
    /// Type.
    pub schema_type: SchemaType,
    /// Schema text.
    pub schema: String,
    /// Soft-deleted.
    pub deleted: bool,
}

fn info(addr: std::net::SocketAddr, v: VersionBody) -> Result<SchemaVersionInfo, TransportError> {
    Ok(SchemaVersionInfo {
        subject: v.subject,
        version: v.version,
        id: v.id,
        schema_type: schema_type(addr, v.schema_type)?,
        schema: v.schema,
        deleted: v.deleted,
    })
}

fn schema_type(addr: std::net::SocketAddr, b: u8) -> Result<SchemaType, TransportError> {
    SchemaType::from_u8(b)
        .ok_or_else(|| TransportError::UnexpectedResponse { addr, detail: format!("schema type {b}") })
}

fn level(addr: std::net::SocketAddr, b: u8) -> Result<Compatibility, TransportError> {
    Compatibility::from_u8(b)
        .ok_or_else(|| TransportError::UnexpectedResponse { addr, detail: format!("compatibility {b}") })
}

impl Client {
    async fn schema_call(&mut self, request: SchemaFrame) -> Result<SchemaFrame, TransportError> {
        let addr = self.conn.addr();
        let want = FrameKind::from_u8(request.kind() | 0x80).expect("every schema request has an answer kind");
        let answer = self.conn.control().call(Payload::Schema(request)).await?;
        expect_kind(addr, &answer, want)?;
        let Payload::Schema(s) = answer else { unreachable!("kind checked") };
        Ok(s)
    }

    fn unexpected(&self, what: &SchemaFrame) -> TransportError {
        TransportError::UnexpectedResponse { addr: self.conn.addr(), detail: format!("unexpected answer {what:?}") }
    }

    /// Registers a schema under `subject` (or finds it there): `(id, version)`.
    pub async fn register_schema(
        &mut self,
        subject: &str,
        t: SchemaType,
        schema: &str,
    ) -> Result<(u32, u32), TransportError> {
        let req = SchemaFrame::Register { subject: subject.into(), schema_type: t.as_u8(), schema: schema.into() };
        match self.schema_call(req).await? {
            SchemaFrame::RegisterOk { id, version } => Ok((id, version)),
            other => Err(self.unexpected(&other)),
        }
    }

    /// The version of `subject` that holds this schema.
    pub async fn lookup_schema(
        &mut self,
        subject: &str,
        t: SchemaType,
        schema: &str,
        deleted: bool,
    ) -> Result<SchemaVersionInfo, TransportError> {
        let req =
            SchemaFrame::Lookup { subject: subject.into(), schema_type: t.as_u8(), schema: schema.into(), deleted };
        match self.schema_call(req).await? {
            SchemaFrame::LookupOk(v) => info(self.conn.addr(), v),
            other => Err(self.unexpected(&other)),
        }
    }

    /// A schema by global id: its type and text.
    pub async fn schema_by_id(&mut self, id: u32) -> Result<(SchemaType, String), TransportError> {
        match self.schema_call(SchemaFrame::GetById { id }).await? {
            SchemaFrame::ById { schema_type: t, schema, .. } => Ok((schema_type(self.conn.addr(), t)?, schema)),
            other => Err(self.unexpected(&other)),
        }
    }

    /// One version of a subject (`None`: the latest).
    pub async fn schema_version(
        &mut self,
        subject: &str,
        version: Option<u32>,
        deleted: bool,
    ) -> Result<SchemaVersionInfo, TransportError> {
        let version = version.map_or(-1, |v| v.min(i32::MAX as u32) as i32);
        match self.schema_call(SchemaFrame::GetVersion { subject: subject.into(), version, deleted }).await? {
            SchemaFrame::Version(v) => info(self.conn.addr(), v),
            other => Err(self.unexpected(&other)),
        }
    }

    /// A subject's version numbers.
    pub async fn schema_versions(&mut self, subject: &str, deleted: bool) -> Result<Vec<u32>, TransportError> {
        match self.schema_call(SchemaFrame::ListVersions { subject: subject.into(), deleted }).await? {
            SchemaFrame::Versions { versions } => Ok(versions),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Subjects the caller may read.
    pub async fn schema_subjects(&mut self, deleted: bool) -> Result<Vec<String>, TransportError> {
        match self.schema_call(SchemaFrame::ListSubjects { deleted }).await? {
            SchemaFrame::Subjects { subjects } => Ok(subjects),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Checks a schema against a subject's version (`Some`), or against what registering it
    /// would be checked against (`None`): `(compatible, problems)`.
    pub async fn check_schema(
        &mut self,
        subject: &str,
        version: Option<u32>,
        t: SchemaType,
        schema: &str,
    ) -> Result<(bool, Vec<String>), TransportError> {
        let version = version.map_or(0, |v| v.min(i32::MAX as u32) as i32);
        let req =
            SchemaFrame::Check { subject: subject.into(), version, schema_type: t.as_u8(), schema: schema.into() };
        match self.schema_call(req).await? {
            SchemaFrame::CheckOk { compatible, messages } => Ok((compatible, messages)),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Deletes one version (`Some`) or the whole subject (`None`); returns the versions
    /// deleted.
    pub async fn delete_schema(
        &mut self,
        subject: &str,
        version: Option<u32>,
        permanent: bool,
    ) -> Result<Vec<u32>, TransportError> {
        let version = version.map_or(0, |v| v.min(i32::MAX as u32) as i32);
        match self.schema_call(SchemaFrame::Delete { subject: subject.into(), version, permanent }).await? {
            SchemaFrame::Deleted { versions } => Ok(versions),
            other => Err(self.unexpected(&other)),
        }
    }

    /// A subject's compatibility level (`None`: the global one).
    pub async fn schema_compatibility(
        &mut self,
        subject: Option<&str>,
        default_to_global: bool,
    ) -> Result<Compatibility, TransportError> {
        let req = SchemaFrame::GetConfig { subject: subject.unwrap_or_default().into(), default_to_global };
        match self.schema_call(req).await? {
            SchemaFrame::Config { level: l } => level(self.conn.addr(), l),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Sets (or with `None` removes) a subject's level, or the global one; returns the
    /// previous level.
    pub async fn set_schema_compatibility(
        &mut self,
        subject: Option<&str>,
        to: Option<Compatibility>,
    ) -> Result<Option<Compatibility>, TransportError> {
        let req =
            SchemaFrame::SetConfig { subject: subject.unwrap_or_default().into(), level: to.map(Compatibility::as_u8) };
        match self.schema_call(req).await? {
            SchemaFrame::ConfigSet { previous } => previous.map(|p| level(self.conn.addr(), p)).transpose(),
            other => Err(self.unexpected(&other)),
        }
    }
}

impl Client {
    /// Sets a topic's schema policy; returns the policy now in force.
    pub async fn set_topic_schema_policy(
        &mut self,
        topic: &str,
        policy: SchemaPolicy,
        validate_payload: bool,
    ) -> Result<(SchemaPolicy, bool), TransportError> {
        let req = SchemaFrame::SetTopicPolicy { topic: topic.into(), policy: policy.as_u8(), validate_payload };
        match self.schema_call(req).await? {
            SchemaFrame::TopicPolicySet { policy, validate_payload } => Ok((self.policy(policy)?, validate_payload)),
            other => Err(self.unexpected(&other)),
        }
    }

    /// A topic's schema policy.
    pub async fn topic_schema_policy(&mut self, topic: &str) -> Result<(SchemaPolicy, bool), TransportError> {
        match self.schema_call(SchemaFrame::GetTopicPolicy { topic: topic.into() }).await? {
            SchemaFrame::TopicPolicy { policy, validate_payload } => Ok((self.policy(policy)?, validate_payload)),
            other => Err(self.unexpected(&other)),
        }
    }

    fn policy(&self, b: u8) -> Result<SchemaPolicy, TransportError> {
        SchemaPolicy::from_u8(b).ok_or_else(|| TransportError::UnexpectedResponse {
            addr: self.conn.addr(),
            detail: format!("schema policy {b}"),
        })
    }
}

/// Registry access over one client connection, shared (requests are serialised on its
/// control stream; schema lookups are rare: the cache asks once per subject or id).
#[derive(Debug, Clone)]
pub struct RegistryClient {
    client: Arc<tokio::sync::Mutex<Client>>,
}

impl RegistryClient {
    /// Wraps a connected client.
    pub fn new(client: Client) -> RegistryClient {
        RegistryClient { client: Arc::new(tokio::sync::Mutex::new(client)) }
    }
}

fn schema_error(e: TransportError) -> SchemaError {
    match e {
        TransportError::Broker { code, message, .. } => SchemaError::Registry { code: code.as_u16(), message },
        other => SchemaError::Unreachable(other.to_string()),
    }
}

impl RegistryAccess for RegistryClient {
    fn register<'a>(&'a self, subject: &'a str, input: &'a SchemaInput) -> AccessFuture<'a, (u32, u32)> {
        Box::pin(async move {
            self.client
                .lock()
                .await
                .register_schema(subject, input.schema_type, &input.schema)
                .await
                .map_err(schema_error)
        })
    }

    fn latest<'a>(&'a self, subject: &'a str) -> AccessFuture<'a, (u32, SchemaInput)> {
        Box::pin(async move {
            let v = self.client.lock().await.schema_version(subject, None, false).await.map_err(schema_error)?;
            Ok((v.id, SchemaInput { schema_type: v.schema_type, schema: v.schema }))
        })
    }

    fn schema_by_id(&self, id: u32) -> AccessFuture<'_, SchemaInput> {
        Box::pin(async move {
            let (schema_type, schema) = self.client.lock().await.schema_by_id(id).await.map_err(schema_error)?;
            Ok(SchemaInput { schema_type, schema })
        })
    }
}
