//! Schema registry frames (kinds `0x20`–`0x2b`, answers `0xa0`–`0xab`) and the registry's
//! error codes (40–49). `PROTOCOL.md` §19 describes them byte for byte.
//!
//! Bodies use the primitives of the other frames: big-endian integers, `str16` (u16
//! length + UTF-8) for names and messages, and `str32` (u32 length + UTF-8) for schema
//! texts. A boolean is one byte, 0 or 1. A schema type is one byte: 0 Avro, 1 JSON
//! Schema, 2 Protobuf. A compatibility level is one byte: 0 NONE, 1 BACKWARD,
//! 2 BACKWARD_TRANSITIVE, 3 FORWARD, 4 FORWARD_TRANSITIVE, 5 FULL, 6 FULL_TRANSITIVE;
//! 0xff means "none" where a level is optional. A topic's schema policy is one byte: 0 none,
//! 1 warn, 2 enforce. A version is an `i32`: −1 is the latest,
//! 0 is "all" where the frame says so, ≥ 1 a version number.

use bytes::{BufMut, BytesMut};

use super::codec::{put_str16, str16_len, Reader};
use super::error::DecodeError;

/// Wire error codes of the schema registry (carried in `Error` frames and, for 48 and 49,
/// in `ProduceResult`).
pub mod codes {
    /// The subject has no (non-deleted) version. REST 40401.
    pub const SUBJECT_NOT_FOUND: u16 = 40;
    /// The version does not exist. REST 40402.
    pub const VERSION_NOT_FOUND: u16 = 41;
    /// No schema with that id or text. REST 40403.
    pub const SCHEMA_NOT_FOUND: u16 = 42;
    /// The schema text does not parse as its type, or the subject name is invalid. REST 42201.
    pub const INVALID_SCHEMA: u16 = 43;
    /// The schema breaks the subject's compatibility level. REST 409.
    pub const INCOMPATIBLE_SCHEMA: u16 = 44;
    /// An invalid version or compatibility level. REST 42202 / 42203.
    pub const INVALID_ARGUMENT: u16 = 45;
    /// A delete out of order: soft-deleting twice, or a permanent delete before a soft one.
    /// REST 40404–40407.
    pub const DELETE_REFUSED: u16 = 46;
    /// The subject has no compatibility level of its own. REST 40408.
    pub const CONFIG_NOT_FOUND: u16 = 47;
    /// Produce refused by a topic whose schema policy is `enforce`: a record carries no
    /// schema id registered under the topic's subject.
    pub const SCHEMA_REQUIRED: u16 = 48;
    /// Produce refused by a topic whose policy is `enforce` with payload validation on: a
    /// record's value does not match its schema.
    pub const INVALID_RECORD: u16 = 49;
    /// The registry's store failed (shared with the broker's `STORAGE_ERROR`).
    pub const STORAGE_ERROR: u16 = 16;
}

/// A subject's version, as [`SchemaFrame::LookupOk`] and [`SchemaFrame::Version`] carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionBody {
    /// Subject.
    pub subject: String,
    /// Version (≥ 1).
    pub version: u32,
    /// Global schema id.
    pub id: u32,
    /// Schema type byte.
    pub schema_type: u8,
    /// Schema text.
    pub schema: String,
    /// Soft-deleted.
    pub deleted: bool,
}

/// A registry request or answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaFrame {
    /// `0x20`: register a schema under a subject (or find it there).
    Register {
        /// Subject.
        subject: String,
        /// Schema type byte.
        schema_type: u8,
        /// Schema text.
        schema: String,
    },
    /// `0xa0`: the schema's global id and its version in the subject.
    RegisterOk {
        /// Global id.
        id: u32,
        /// Version in the subject.
        version: u32,
    },
    /// `0x21`: find a schema among a subject's versions.
    Lookup {
        /// Subject.
        subject: String,
        /// Schema type byte.
        schema_type: u8,
        /// Schema text.
        schema: String,
        /// Also search soft-deleted versions.
        deleted: bool,
    },
    /// `0xa1`: the version holding the schema.
    LookupOk(VersionBody),
    /// `0x22`: a schema by global id.
    GetById {
        /// Global id.
        id: u32,
    },
    /// `0xa2`: the schema with that id.
    ById {
        /// Global id.
        id: u32,
        /// Schema type byte.
        schema_type: u8,
        /// Schema text.
        schema: String,
    },
    /// `0x23`: one version of a subject (−1: the latest).
    GetVersion {
        /// Subject.
        subject: String,
        /// Version, or −1.
        version: i32,
        /// Also soft-deleted versions.
        deleted: bool,
    },
    /// `0xa3`: the version.
    Version(VersionBody),
    /// `0x24`: a subject's version numbers.
    ListVersions {
        /// Subject.
        subject: String,
        /// Include soft-deleted versions.
        deleted: bool,
    },
    /// `0xa4`: version numbers, ascending.
    Versions {
        /// Version numbers.
        versions: Vec<u32>,
    },
    /// `0x25`: every subject.
    ListSubjects {
        /// Include subjects whose versions are all soft-deleted.
        deleted: bool,
    },
    /// `0xa5`: subject names, sorted (only those the caller may read).
    Subjects {
        /// Names.
        subjects: Vec<String>,
    },
    /// `0x26`: check a schema against a subject's version (−1 latest, 0 every version the
    /// subject's level checks a registration against).
    Check {
        /// Subject.
        subject: String,
        /// Version, −1 or 0.
        version: i32,
        /// Schema type byte.
        schema_type: u8,
        /// Schema text.
        schema: String,
    },
    /// `0xa6`: the verdict and, when incompatible, one message per problem.
    CheckOk {
        /// Compatible.
        compatible: bool,
        /// Problems.
        messages: Vec<String>,
    },
    /// `0x27`: delete a version (≥ 1, −1 latest) or, with version 0, the whole subject.
    Delete {
        /// Subject.
        subject: String,
        /// Version, −1 or 0.
        version: i32,
        /// Hard delete (after a soft one).
        permanent: bool,
    },
    /// `0xa7`: the versions deleted.
    Deleted {
        /// Version numbers.
        versions: Vec<u32>,
    },
    /// `0x28`: a subject's compatibility level (empty subject: the global level).
    GetConfig {
        /// Subject, or empty.
        subject: String,
        /// Answer the global level when the subject has none.
        default_to_global: bool,
    },
    /// `0xa8`: the level.
    Config {
        /// Level byte.
        level: u8,
    },
    /// `0x29`: set (or with `None` remove) a subject's level (empty subject: the global one).
    SetConfig {
        /// Subject, or empty.
        subject: String,
        /// Level byte, or `None` to remove.
        level: Option<u8>,
    },
    /// `0xa9`: the level that was in force before, if any.
    ConfigSet {
        /// Previous level byte.
        previous: Option<u8>,
    },
    /// `0x2a`: set a topic's schema policy (the topic must exist).
    SetTopicPolicy {
        /// Topic.
        topic: String,
        /// Policy byte.
        policy: u8,
        /// Under `enforce`, also check that each value matches its schema.
        validate_payload: bool,
    },
    /// `0xaa`: the policy now in force.
    TopicPolicySet {
        /// Policy byte.
        policy: u8,
        /// Payload validation on.
        validate_payload: bool,
    },
    /// `0x2b`: a topic's schema policy.
    GetTopicPolicy {
        /// Topic.
        topic: String,
    },
    /// `0xab`: the policy in force (`none` for a topic never configured).
    TopicPolicy {
        /// Policy byte.
        policy: u8,
        /// Payload validation on.
        validate_payload: bool,
    },
}

/// The lowest and highest request kinds of the registry.
pub const KINDS: std::ops::RangeInclusive<u8> = 0x20..=0x2b;

fn str32_len(s: &str) -> usize {
    4 + s.len()
}

fn put_str32(buf: &mut BytesMut, s: &str) {
    buf.put_u32(s.len() as u32);
    buf.put_slice(s.as_bytes());
}

fn version_len(v: &VersionBody) -> usize {
    str16_len(&v.subject) + 4 + 4 + 1 + str32_len(&v.schema) + 1
}

fn put_version(buf: &mut BytesMut, v: &VersionBody) {
    put_str16(buf, &v.subject);
    buf.put_u32(v.version);
    buf.put_u32(v.id);
    buf.put_u8(v.schema_type);
    put_str32(buf, &v.schema);
    buf.put_u8(u8::from(v.deleted));
}

fn opt_level(l: Option<u8>) -> u8 {
    l.unwrap_or(0xff)
}

impl SchemaFrame {
    /// The frame kind byte.
    pub fn kind(&self) -> u8 {
        use SchemaFrame::*;
        match self {
            Register { .. } => 0x20,
            Lookup { .. } => 0x21,
            GetById { .. } => 0x22,
            GetVersion { .. } => 0x23,
            ListVersions { .. } => 0x24,
            ListSubjects { .. } => 0x25,
            Check { .. } => 0x26,
            Delete { .. } => 0x27,
            GetConfig { .. } => 0x28,
            SetConfig { .. } => 0x29,
            RegisterOk { .. } => 0xa0,
            LookupOk(_) => 0xa1,
            ById { .. } => 0xa2,
            Version(_) => 0xa3,
            Versions { .. } => 0xa4,
            Subjects { .. } => 0xa5,
            CheckOk { .. } => 0xa6,
            Deleted { .. } => 0xa7,
            Config { .. } => 0xa8,
            ConfigSet { .. } => 0xa9,
            SetTopicPolicy { .. } => 0x2a,
            TopicPolicySet { .. } => 0xaa,
            GetTopicPolicy { .. } => 0x2b,
            TopicPolicy { .. } => 0xab,
        }
    }

    /// Whether `kind` is one of the registry's frame kinds (requests or answers).
    pub fn is_schema_kind(kind: u8) -> bool {
        KINDS.contains(&kind) || KINDS.contains(&(kind ^ 0x80))
    }

    /// Exactly the bytes [`SchemaFrame::encode_body`] writes.
    pub fn body_len(&self) -> usize {
        use SchemaFrame::*;
        match self {
            Register { subject, schema, .. } => str16_len(subject) + 1 + str32_len(schema),
            Lookup { subject, schema, .. } => str16_len(subject) + 1 + str32_len(schema) + 1,
            Check { subject, schema, .. } => str16_len(subject) + 4 + 1 + str32_len(schema),
            RegisterOk { .. } => 8,
            LookupOk(v) | Version(v) => version_len(v),
            GetById { .. } => 4,
            ById { schema, .. } => 4 + 1 + str32_len(schema),
            GetVersion { subject, .. } | Delete { subject, .. } => str16_len(subject) + 4 + 1,
            ListVersions { subject, .. } | GetConfig { subject, .. } | SetConfig { subject, .. } => {
                str16_len(subject) + 1
            }
            Versions { versions } | Deleted { versions } => 4 + 4 * versions.len(),
            ListSubjects { .. } | Config { .. } | ConfigSet { .. } => 1,
            SetTopicPolicy { topic, .. } => str16_len(topic) + 2,
            GetTopicPolicy { topic } => str16_len(topic),
            TopicPolicySet { .. } | TopicPolicy { .. } => 2,
            Subjects { subjects } => 4 + subjects.iter().map(|s| str16_len(s)).sum::<usize>(),
            CheckOk { messages, .. } => 1 + 4 + messages.iter().map(|s| str16_len(s)).sum::<usize>(),
        }
    }

    /// Appends the body (everything after the frame header).
    pub fn encode_body(&self, buf: &mut BytesMut) {
        use SchemaFrame::*;
        buf.reserve(self.body_len());
        match self {
            Register { subject, schema_type, schema } => {
                put_str16(buf, subject);
                buf.put_u8(*schema_type);
                put_str32(buf, schema);
            }
            Lookup { subject, schema_type, schema, deleted } => {
                put_str16(buf, subject);
                buf.put_u8(*schema_type);
                put_str32(buf, schema);
                buf.put_u8(u8::from(*deleted));
            }
            Check { subject, version, schema_type, schema } => {
                put_str16(buf, subject);
                buf.put_i32(*version);
                buf.put_u8(*schema_type);
                put_str32(buf, schema);
            }
            RegisterOk { id, version } => {
                buf.put_u32(*id);
                buf.put_u32(*version);
            }
            LookupOk(v) | Version(v) => put_version(buf, v),
            GetById { id } => buf.put_u32(*id),
            ById { id, schema_type, schema } => {
                buf.put_u32(*id);
                buf.put_u8(*schema_type);
                put_str32(buf, schema);
            }
            GetVersion { subject, version, deleted: flag } | Delete { subject, version, permanent: flag } => {
                put_str16(buf, subject);
                buf.put_i32(*version);
                buf.put_u8(u8::from(*flag));
            }
            ListVersions { subject, deleted: flag } | GetConfig { subject, default_to_global: flag } => {
                put_str16(buf, subject);
                buf.put_u8(u8::from(*flag));
            }
            SetConfig { subject, level } => {
                put_str16(buf, subject);
                buf.put_u8(opt_level(*level));
            }
            Versions { versions } | Deleted { versions } => {
                buf.put_u32(versions.len() as u32);
                versions.iter().for_each(|v| buf.put_u32(*v));
            }
            ListSubjects { deleted } => buf.put_u8(u8::from(*deleted)),
            Subjects { subjects } => {
                buf.put_u32(subjects.len() as u32);
                subjects.iter().for_each(|s| put_str16(buf, s));
            }
            CheckOk { compatible, messages } => {
                buf.put_u8(u8::from(*compatible));
                buf.put_u32(messages.len() as u32);
                messages.iter().for_each(|s| put_str16(buf, s));
            }
            Config { level } => buf.put_u8(*level),
            ConfigSet { previous } => buf.put_u8(opt_level(*previous)),
            SetTopicPolicy { topic, policy, validate_payload } => {
                put_str16(buf, topic);
                buf.put_u8(*policy);
                buf.put_u8(u8::from(*validate_payload));
            }
            GetTopicPolicy { topic } => put_str16(buf, topic),
            TopicPolicySet { policy, validate_payload } | TopicPolicy { policy, validate_payload } => {
                buf.put_u8(*policy);
                buf.put_u8(u8::from(*validate_payload));
            }
        }
    }

    /// Decodes the body of a frame of `kind`. Every field is bounds-checked; unknown kinds,
    /// out-of-range bytes (booleans, types, levels, versions below −1) and trailing bytes
    /// are errors.
    pub fn decode(kind: u8, body: &[u8]) -> Result<SchemaFrame, DecodeError> {
        use SchemaFrame::*;
        let mut r = Reader::new(body);
        let r = &mut r;
        let frame = match kind {
            0x20 => {
                Register { subject: r.str16("subject")?, schema_type: schema_type(r)?, schema: str32(r, "schema")? }
            }
            0x21 => Lookup {
                subject: r.str16("subject")?,
                schema_type: schema_type(r)?,
                schema: str32(r, "schema")?,
                deleted: boolean(r, "deleted")?,
            },
            0x22 => GetById { id: r.u32("id")? },
            0x23 => GetVersion { subject: r.str16("subject")?, version: version(r)?, deleted: boolean(r, "deleted")? },
            0x24 => ListVersions { subject: r.str16("subject")?, deleted: boolean(r, "deleted")? },
            0x25 => ListSubjects { deleted: boolean(r, "deleted")? },
            0x26 => Check {
                subject: r.str16("subject")?,
                version: version(r)?,
                schema_type: schema_type(r)?,
                schema: str32(r, "schema")?,
            },
            0x27 => Delete { subject: r.str16("subject")?, version: version(r)?, permanent: boolean(r, "permanent")? },
            0x28 => GetConfig { subject: r.str16("subject")?, default_to_global: boolean(r, "default_to_global")? },
            0x29 => SetConfig { subject: r.str16("subject")?, level: opt_level_of(r)? },
            0xa0 => RegisterOk { id: r.u32("id")?, version: r.u32("version")? },
            0xa1 => LookupOk(version_body(r)?),
            0xa2 => ById { id: r.u32("id")?, schema_type: schema_type(r)?, schema: str32(r, "schema")? },
            0xa3 => Version(version_body(r)?),
            0xa4 => Versions { versions: u32_list(r, "versions")? },
            0xa5 => Subjects { subjects: str_list(r, "subjects")? },
            0xa6 => CheckOk { compatible: boolean(r, "compatible")?, messages: str_list(r, "messages")? },
            0xa7 => Deleted { versions: u32_list(r, "versions")? },
            0xa8 => Config { level: level(r)? },
            0xa9 => ConfigSet { previous: opt_level_of(r)? },
            0x2a => SetTopicPolicy {
                topic: r.str16("topic")?,
                policy: policy(r)?,
                validate_payload: boolean(r, "validate_payload")?,
            },
            0x2b => GetTopicPolicy { topic: r.str16("topic")? },
            0xaa => TopicPolicySet { policy: policy(r)?, validate_payload: boolean(r, "validate_payload")? },
            0xab => TopicPolicy { policy: policy(r)?, validate_payload: boolean(r, "validate_payload")? },
            kind => return Err(DecodeError::UnknownFrameKind { kind }),
        };
        r.finish("frame body")?;
        Ok(frame)
    }
}

fn str32(r: &mut Reader<'_>, field: &'static str) -> Result<String, DecodeError> {
    let len = r.u32(field)? as usize;
    let s = r.take(len, field)?;
    std::str::from_utf8(s).map(str::to_owned).map_err(|_| DecodeError::InvalidUtf8 { field })
}

fn boolean(r: &mut Reader<'_>, field: &'static str) -> Result<bool, DecodeError> {
    match r.u8(field)? {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(DecodeError::InvalidValue { field, value: v.into() }),
    }
}

fn schema_type(r: &mut Reader<'_>) -> Result<u8, DecodeError> {
    match r.u8("schema_type")? {
        v @ 0..=2 => Ok(v),
        v => Err(DecodeError::InvalidValue { field: "schema_type", value: v.into() }),
    }
}

fn policy(r: &mut Reader<'_>) -> Result<u8, DecodeError> {
    match r.u8("policy")? {
        v @ 0..=2 => Ok(v),
        v => Err(DecodeError::InvalidValue { field: "policy", value: v.into() }),
    }
}

fn level(r: &mut Reader<'_>) -> Result<u8, DecodeError> {
    match r.u8("compatibility")? {
        v @ 0..=6 => Ok(v),
        v => Err(DecodeError::InvalidValue { field: "compatibility", value: v.into() }),
    }
}

fn opt_level_of(r: &mut Reader<'_>) -> Result<Option<u8>, DecodeError> {
    match r.u8("compatibility")? {
        0xff => Ok(None),
        v @ 0..=6 => Ok(Some(v)),
        v => Err(DecodeError::InvalidValue { field: "compatibility", value: v.into() }),
    }
}

fn version(r: &mut Reader<'_>) -> Result<i32, DecodeError> {
    match r.i32("version")? {
        v if v >= -1 => Ok(v),
        v => Err(DecodeError::InvalidValue { field: "version", value: v.into() }),
    }
}

fn version_body(r: &mut Reader<'_>) -> Result<VersionBody, DecodeError> {
    Ok(VersionBody {
        subject: r.str16("subject")?,
        version: r.u32("version")?,
        id: r.u32("id")?,
        schema_type: schema_type(r)?,
        schema: str32(r, "schema")?,
        deleted: boolean(r, "deleted")?,
    })
}

/// A count that cannot be honest if each element needs `min` bytes more than are left.
fn count(r: &mut Reader<'_>, field: &'static str, min: usize) -> Result<usize, DecodeError> {
    let n = r.u32(field)? as usize;
    if n.saturating_mul(min) > r.remaining() {
        return Err(DecodeError::UnexpectedEof {
            field,
            offset: r.position(),
            need: n.saturating_mul(min),
            have: r.remaining(),
        });
    }
    Ok(n)
}

fn u32_list(r: &mut Reader<'_>, field: &'static str) -> Result<Vec<u32>, DecodeError> {
    let n = count(r, field, 4)?;
    (0..n).map(|_| r.u32(field)).collect()
}

fn str_list(r: &mut Reader<'_>, field: &'static str) -> Result<Vec<String>, DecodeError> {
    let n = count(r, field, 2)?;
    (0..n).map(|_| r.str16(field)).collect()
}

#[cfg(test)]
#[path = "schema_tests.rs"]
pub(crate) mod tests;
