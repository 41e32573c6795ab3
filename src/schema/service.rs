//! Serving the registry's protocol frames ([`crate::protocol::schema`]): one request in,
//! one answer or one error (code and message) out. The broker calls [`serve`] with the
//! connection's principal already turned into an authorisation check.

use crate::protocol::schema::{SchemaFrame, VersionBody};

use super::registry::{Registry, RegistryError, SchemaInput, SubjectVersion, VersionSpec};
use super::rest::{Operation, Resource};
use super::{Compatibility, SchemaPolicy, SchemaType};

/// A failed request: a wire error code and a message for an `Error` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeError {
    /// The wire error code ([`codes`](crate::protocol::schema::codes), or `AUTHORIZATION_FAILED` / `INVALID_REQUEST`).
    pub code: u16,
    /// Detail for the caller.
    pub message: String,
}

/// `AUTHORIZATION_FAILED` in the protocol's error codes.
const AUTHORIZATION_FAILED: u16 = 10;
/// `INVALID_REQUEST` in the protocol's error codes.
const INVALID_REQUEST: u16 = 15;

impl From<RegistryError> for ServeError {
    fn from(e: RegistryError) -> Self {
        ServeError { code: e.wire_code(), message: e.to_string() }
    }
}

fn schema_type(b: u8) -> Result<SchemaType, ServeError> {
    SchemaType::from_u8(b).ok_or(ServeError { code: INVALID_REQUEST, message: format!("unknown schema type {b}") })
}

fn level(b: u8) -> Result<Compatibility, ServeError> {
    Compatibility::from_u8(b).ok_or_else(|| RegistryError::InvalidCompatibility(b.to_string()).into())
}

fn spec(version: i32) -> Result<VersionSpec, ServeError> {
    match version {
        -1 => Ok(VersionSpec::Latest),
        v if v >= 1 => Ok(VersionSpec::Number(v as u32)),
        v => Err(RegistryError::InvalidVersion(v.to_string()).into()),
    }
}

fn scope(subject: &str) -> Resource<'_> {
    if subject.is_empty() {
        Resource::Global
    } else {
        Resource::Subject(subject)
    }
}

fn body(v: SubjectVersion) -> VersionBody {
    VersionBody {
        subject: v.subject,
        version: v.version,
        id: v.id,
        schema_type: v.schema_type.as_u8(),
        schema: v.schema,
        deleted: v.deleted,
    }
}

/// `UNKNOWN_TOPIC_OR_PARTITION` in the protocol's error codes.
const UNKNOWN_TOPIC: u16 = 7;

/// Answers one registry request. `allowed(operation, resource)` says what the caller may
/// do (subjects are protected like topics: read to fetch, write to register, admin for
/// configuration and deletes; a topic's policy needs admin to set, read to get);
/// `topic_exists` says whether a topic exists (a policy is only set on an existing topic).
/// An answer kind sent as a request is `INVALID_REQUEST`.
pub async fn serve(
    registry: &Registry,
    request: SchemaFrame,
    allowed: impl Fn(Operation, Resource<'_>) -> bool,
    topic_exists: impl Fn(&str) -> bool,
) -> Result<SchemaFrame, ServeError> {
    use SchemaFrame::*;
    registry.sync().await?;
    let require = |op: Operation, r: Resource<'_>| {
        if allowed(op, r) {
            return Ok(());
        }
        let what = match r {
            Resource::Subject(s) => format!("subject '{s}'"),
            Resource::Global => "the global schema configuration".to_owned(),
            Resource::Topic(t) => format!("topic '{t}'"),
        };
        Err(ServeError { code: AUTHORIZATION_FAILED, message: format!("{op:?} on {what} is not allowed") })
    };
    Ok(match request {
        Register { subject, schema_type: t, schema } => {
            require(Operation::Write, Resource::Subject(&subject))?;
            let (id, version) =
                registry.register(&subject, &SchemaInput { schema_type: schema_type(t)?, schema }).await?;
            RegisterOk { id, version }
        }
        Lookup { subject, schema_type: t, schema, deleted } => {
            require(Operation::Read, Resource::Subject(&subject))?;
            let input = SchemaInput { schema_type: schema_type(t)?, schema };
            LookupOk(body(registry.lookup(&subject, &input, deleted).await?))
        }
        GetById { id } => {
            let users = registry.id_versions(id, true).await?;
            if !users.iter().any(|(s, _)| allowed(Operation::Read, Resource::Subject(s))) {
                require(Operation::Read, Resource::Subject(users.first().map_or("", |(s, _)| s)))?;
            }
            let s = registry.schema(id).await?;
            ById { id, schema_type: s.schema_type.as_u8(), schema: s.schema }
        }
        GetVersion { subject, version, deleted } => {
            require(Operation::Read, Resource::Subject(&subject))?;
            Version(body(registry.version(&subject, spec(version)?, deleted).await?))
        }
        ListVersions { subject, deleted } => {
            require(Operation::Read, Resource::Subject(&subject))?;
            Versions { versions: registry.versions(&subject, deleted)? }
        }
        ListSubjects { deleted } => Subjects {
            subjects: registry
                .subjects(deleted)
                .into_iter()
                .filter(|s| allowed(Operation::Read, Resource::Subject(s)))
                .collect(),
        },
        Check { subject, version, schema_type: t, schema } => {
            require(Operation::Read, Resource::Subject(&subject))?;
            let which = if version == 0 { None } else { Some(spec(version)?) };
            let input = SchemaInput { schema_type: schema_type(t)?, schema };
            let messages = registry.check(&subject, which, &input).await?;
            CheckOk { compatible: messages.is_empty(), messages }
        }
        Delete { subject, version, permanent } => {
            require(Operation::Admin, Resource::Subject(&subject))?;
            let versions = if version == 0 {
                registry.delete_subject(&subject, permanent).await?
            } else {
                vec![registry.delete_version(&subject, spec(version)?, permanent).await?]
            };
            Deleted { versions }
        }
        GetConfig { subject, default_to_global } => {
            require(Operation::Read, scope(&subject))?;
            let level = if subject.is_empty() {
                registry.global_compatibility()
            } else {
                registry.subject_compatibility(&subject, default_to_global)?
            };
            Config { level: level.as_u8() }
        }
        SetConfig { subject, level: l } => {
            require(Operation::Admin, scope(&subject))?;
            let l = l.map(level).transpose()?;
            let target = (!subject.is_empty()).then_some(subject.as_str());
            ConfigSet { previous: registry.set_compatibility(target, l).await?.map(Compatibility::as_u8) }
        }
        SetTopicPolicy { topic, policy, validate_payload } => {
            require(Operation::Admin, Resource::Topic(&topic))?;
            if !topic_exists(&topic) {
                return Err(ServeError { code: UNKNOWN_TOPIC, message: format!("topic '{topic}' does not exist") });
            }
            let p = SchemaPolicy::from_u8(policy)
                .ok_or(ServeError { code: INVALID_REQUEST, message: format!("unknown schema policy {policy}") })?;
            registry.set_topic_policy(&topic, p, validate_payload).await?;
            let (p, v) = registry.topic_policy(&topic);
            TopicPolicySet { policy: p.as_u8(), validate_payload: v }
        }
        GetTopicPolicy { topic } => {
            require(Operation::Read, Resource::Topic(&topic))?;
            let (p, v) = registry.topic_policy(&topic);
            TopicPolicy { policy: p.as_u8(), validate_payload: v }
        }
        answer => {
            return Err(ServeError {
                code: INVALID_REQUEST,
                message: format!("frame kind 0x{:02x} is an answer, not a request", answer.kind()),
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::schema::codes;
    use SchemaFrame::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    #[test]
    fn frames_drive_the_registry() {
        rt().block_on(async {
            let r = Registry::in_memory().await;
            let all = |_: Operation, _: Resource<'_>| true;
            let reg = |s: &str| Register { subject: "s".into(), schema_type: 1, schema: s.into() };
            assert_eq!(
                serve(&r, reg(r#"{"type": "object"}"#), all, |_: &str| true).await.unwrap(),
                RegisterOk { id: 1, version: 1 }
            );
            let e = serve(&r, reg(r#"{"type": "string"}"#), all, |_: &str| true).await.unwrap_err();
            assert_eq!(e.code, codes::INCOMPATIBLE_SCHEMA);
            assert_eq!(serve(&r, reg("{"), all, |_: &str| true).await.unwrap_err().code, codes::INVALID_SCHEMA);
            let v = serve(&r, GetVersion { subject: "s".into(), version: -1, deleted: false }, all, |_: &str| true)
                .await
                .unwrap();
            assert!(matches!(v, Version(VersionBody { id: 1, version: 1, schema_type: 1, .. })));
            assert_eq!(
                serve(&r, GetVersion { subject: "s".into(), version: 0, deleted: false }, all, |_: &str| true)
                    .await
                    .unwrap_err()
                    .code,
                codes::INVALID_ARGUMENT
            );
            assert!(matches!(serve(&r, GetById { id: 1 }, all, |_: &str| true).await.unwrap(), ById { id: 1, .. }));
            assert_eq!(
                serve(&r, GetById { id: 5 }, all, |_: &str| true).await.unwrap_err().code,
                codes::SCHEMA_NOT_FOUND
            );
            let check =
                Check { subject: "s".into(), version: 0, schema_type: 1, schema: r#"{"type": "string"}"#.into() };
            assert!(matches!(serve(&r, check, all, |_: &str| true).await.unwrap(), CheckOk { compatible: false, .. }));
            assert_eq!(
                serve(&r, SetConfig { subject: "s".into(), level: Some(0) }, all, |_: &str| true).await.unwrap(),
                ConfigSet { previous: None }
            );
            assert_eq!(
                serve(&r, GetConfig { subject: "".into(), default_to_global: false }, all, |_: &str| true)
                    .await
                    .unwrap(),
                Config { level: 1 }
            );
            assert_eq!(
                serve(&r, ListSubjects { deleted: false }, all, |_: &str| true).await.unwrap(),
                Subjects { subjects: vec!["s".into()] }
            );
            assert_eq!(
                serve(&r, Delete { subject: "s".into(), version: 0, permanent: true }, all, |_: &str| true)
                    .await
                    .unwrap_err()
                    .code,
                codes::DELETE_REFUSED
            );
            assert_eq!(
                serve(&r, Delete { subject: "s".into(), version: 0, permanent: false }, all, |_: &str| true)
                    .await
                    .unwrap(),
                Deleted { versions: vec![1] }
            );
            assert_eq!(
                serve(&r, RegisterOk { id: 1, version: 1 }, all, |_: &str| true).await.unwrap_err().code,
                INVALID_REQUEST
            );
            let set = SetTopicPolicy { topic: "t".into(), policy: 2, validate_payload: true };
            assert_eq!(serve(&r, set.clone(), all, |_: &str| false).await.unwrap_err().code, UNKNOWN_TOPIC);
            assert_eq!(
                serve(&r, set, all, |_: &str| true).await.unwrap(),
                TopicPolicySet { policy: 2, validate_payload: true }
            );
            let get = GetTopicPolicy { topic: "t".into() };
            assert_eq!(
                serve(&r, get, all, |_: &str| true).await.unwrap(),
                TopicPolicy { policy: 2, validate_payload: true }
            );
        });
    }

    #[test]
    fn subjects_are_protected() {
        rt().block_on(async {
            let r = Registry::in_memory().await;
            let reader = |op: Operation, _: Resource<'_>| op == Operation::Read;
            let reg = Register { subject: "s".into(), schema_type: 1, schema: "{}".into() };
            assert_eq!(serve(&r, reg.clone(), reader, |_: &str| true).await.unwrap_err().code, AUTHORIZATION_FAILED);
            serve(&r, reg, |_, _| true, |_: &str| true).await.unwrap();
            let nobody = |_: Operation, _: Resource<'_>| false;
            assert_eq!(
                serve(&r, GetById { id: 1 }, nobody, |_: &str| true).await.unwrap_err().code,
                AUTHORIZATION_FAILED
            );
            assert_eq!(
                serve(&r, ListSubjects { deleted: false }, nobody, |_: &str| true).await.unwrap(),
                Subjects { subjects: vec![] }
            );
            let set = SetConfig { subject: String::new(), level: Some(2) };
            assert_eq!(serve(&r, set, reader, |_: &str| true).await.unwrap_err().code, AUTHORIZATION_FAILED);
        });
    }
}
