//! The registry as a pure state machine: events in, answers out. No I/O, no clock.
//!
//! Every change is an [`Event`] appended to the store; the state is what replaying the
//! events gives. Writers plan an event against the current state (`plan_*`), the store
//! appends it, then the state applies it, so a restart (or another broker reading the same
//! log) reaches the same state.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::error::RegistryError;
use crate::schema::compat;
use crate::schema::parsed::ParsedSchema;
use crate::schema::{Compatibility, SchemaPolicy, SchemaType};

/// One change to the registry, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Event {
    /// A new version of a subject.
    Register {
        /// Subject.
        subject: String,
        /// Version in the subject (1, 2, …).
        version: u32,
        /// Global schema id.
        id: u32,
        /// Schema type.
        schema_type: SchemaType,
        /// Schema text as first registered under this id.
        schema: String,
    },
    /// A version soft- or hard-deleted.
    DeleteVersion {
        /// Subject.
        subject: String,
        /// Version.
        version: u32,
        /// Hard delete (the version must be soft-deleted already).
        permanent: bool,
    },
    /// Every version of a subject soft- or hard-deleted.
    DeleteSubject {
        /// Subject.
        subject: String,
        /// Hard delete (every version must be soft-deleted already); also drops the
        /// subject's compatibility setting.
        permanent: bool,
    },
    /// The compatibility level of a subject, or the global default when `subject` is
    /// `None`; `compatibility: None` removes a subject's own level (or resets the global
    /// one to BACKWARD).
    SetConfig {
        /// Subject, or `None` for the global default.
        subject: Option<String>,
        /// The level, or `None` to remove it.
        compatibility: Option<Compatibility>,
    },
    /// A topic's schema policy.
    SetTopicPolicy {
        /// Topic.
        topic: String,
        /// Policy.
        policy: SchemaPolicy,
        /// Under `enforce`, also validate each value against its schema.
        validate_payload: bool,
    },
}

/// A registered schema (one per distinct schema, shared by subjects).
#[derive(Debug, Clone)]
pub struct SchemaEntry {
    /// Global id.
    pub id: u32,
    /// Type.
    pub schema_type: SchemaType,
    /// Text as first registered.
    pub schema: String,
    /// The parsed schema (`None` only if text recovered from the store no longer parses).
    pub parsed: Option<Arc<ParsedSchema>>,
    canonical: String,
}

/// A subject's version, as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectVersion {
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

/// Which version a request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSpec {
    /// The latest version not deleted.
    Latest,
    /// A version number (≥ 1).
    Number(u32),
}

impl VersionSpec {
    /// Parses the REST API's `{version}`: `latest`, `-1` (latest) or 1 … 2^31−1.
    pub fn parse(s: &str) -> Result<VersionSpec, RegistryError> {
        if s.eq_ignore_ascii_case("latest") || s == "-1" {
            return Ok(VersionSpec::Latest);
        }
        match s.parse::<u32>() {
            Ok(v) if (1..=i32::MAX as u32).contains(&v) => Ok(VersionSpec::Number(v)),
            _ => Err(RegistryError::InvalidVersion(s.to_owned())),
        }
    }
}

impl std::fmt::Display for VersionSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VersionSpec::Latest => f.write_str("latest"),
            VersionSpec::Number(n) => write!(f, "{n}"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct VersionEntry {
    version: u32,
    id: u32,
    deleted: bool,
}

#[derive(Debug, Default, Clone)]
struct Subject {
    versions: Vec<VersionEntry>,
    compatibility: Option<Compatibility>,
}

/// The result of planning a registration.
#[derive(Debug)]
pub enum RegisterPlan {
    /// The subject already has this schema: nothing to write.
    Existing {
        /// Its id.
        id: u32,
        /// Its version in the subject.
        version: u32,
    },
    /// Append this event.
    New(Event),
}

/// Checks a subject name: 1–255 characters, no control characters.
pub fn validate_subject(subject: &str) -> Result<(), RegistryError> {
    if subject.is_empty() || subject.chars().count() > 255 || subject.chars().any(char::is_control) {
        return Err(RegistryError::InvalidSubject(subject.to_owned()));
    }
    Ok(())
}

/// Subjects, versions, schemas and compatibility levels.
#[derive(Debug, Default, Clone)]
pub struct RegistryState {
    schemas: BTreeMap<u32, SchemaEntry>,
    by_canonical: HashMap<(SchemaType, String), u32>,
    subjects: BTreeMap<String, Subject>,
    global: Option<Compatibility>,
    topic_policies: BTreeMap<String, (SchemaPolicy, bool)>,
    next_id: u32,
    applied: u64,
}

impl RegistryState {
    /// Events applied so far: the store sequence number of the next event.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Applies an event. `parsed` is the schema of a `Register` event when the caller has
    /// it already; otherwise the text is parsed here.
    pub fn apply(&mut self, event: Event, parsed: Option<Arc<ParsedSchema>>) {
        self.applied += 1;
        match event {
            Event::Register { subject, version, id, schema_type, schema } => {
                if !self.schemas.contains_key(&id) {
                    let parsed = parsed.or_else(|| ParsedSchema::parse(schema_type, &schema).ok().map(Arc::new));
                    let canonical = parsed.as_ref().map(|p| p.canonical()).unwrap_or_else(|| schema.clone());
                    self.by_canonical.insert((schema_type, canonical.clone()), id);
                    self.schemas.insert(id, SchemaEntry { id, schema_type, schema, parsed, canonical });
                }
                self.next_id = self.next_id.max(id + 1);
                let s = self.subjects.entry(subject).or_default();
                s.versions.retain(|v| v.version != version);
                s.versions.push(VersionEntry { version, id, deleted: false });
                s.versions.sort_by_key(|v| v.version);
            }
            Event::DeleteVersion { subject, version, permanent } => {
                if let Some(s) = self.subjects.get_mut(&subject) {
                    if permanent {
                        s.versions.retain(|v| v.version != version);
                    } else if let Some(v) = s.versions.iter_mut().find(|v| v.version == version) {
                        v.deleted = true;
                    }
                }
                self.collect_garbage(&subject);
            }
            Event::DeleteSubject { subject, permanent } => {
                if let Some(s) = self.subjects.get_mut(&subject) {
                    if permanent {
                        s.versions.clear();
                        s.compatibility = None;
                    } else {
                        s.versions.iter_mut().for_each(|v| v.deleted = true);
                    }
                }
                self.collect_garbage(&subject);
            }
            Event::SetConfig { subject: None, compatibility } => self.global = compatibility,
            Event::SetTopicPolicy { topic, policy: SchemaPolicy::None, validate_payload: false } => {
                self.topic_policies.remove(&topic);
            }
            Event::SetTopicPolicy { topic, policy, validate_payload } => {
                self.topic_policies.insert(topic, (policy, validate_payload));
            }
            Event::SetConfig { subject: Some(subject), compatibility } => {
                self.subjects.entry(subject.clone()).or_default().compatibility = compatibility;
                self.collect_garbage(&subject);
            }
        }
    }

    /// Drops an empty subject and every schema no version refers to.
    fn collect_garbage(&mut self, subject: &str) {
        if self.subjects.get(subject).is_some_and(|s| s.versions.is_empty() && s.compatibility.is_none()) {
            self.subjects.remove(subject);
        }
        let used: std::collections::HashSet<u32> =
            self.subjects.values().flat_map(|s| s.versions.iter().map(|v| v.id)).collect();
        let dead: Vec<u32> = self.schemas.keys().copied().filter(|id| !used.contains(id)).collect();
        for id in dead {
            if let Some(e) = self.schemas.remove(&id) {
                self.by_canonical.remove(&(e.schema_type, e.canonical));
            }
        }
    }

    fn subject(&self, subject: &str, deleted: bool) -> Result<&Subject, RegistryError> {
        self.subjects
            .get(subject)
            .filter(|s| s.versions.iter().any(|v| deleted || !v.deleted))
            .ok_or_else(|| RegistryError::SubjectNotFound(subject.to_owned()))
    }

    fn version_entry(&self, subject: &str, spec: VersionSpec, deleted: bool) -> Result<VersionEntry, RegistryError> {
        let s = self.subject(subject, deleted)?;
        let found = match spec {
            VersionSpec::Latest => s.versions.iter().rev().find(|v| deleted || !v.deleted),
            VersionSpec::Number(n) => s.versions.iter().find(|v| v.version == n && (deleted || !v.deleted)),
        };
        found
            .copied()
            .ok_or_else(|| RegistryError::VersionNotFound { subject: subject.to_owned(), version: spec.to_string() })
    }

    fn subject_version(&self, subject: &str, v: VersionEntry) -> SubjectVersion {
        let e = &self.schemas[&v.id];
        SubjectVersion {
            subject: subject.to_owned(),
            version: v.version,
            id: v.id,
            schema_type: e.schema_type,
            schema: e.schema.clone(),
            deleted: v.deleted,
        }
    }

    /// Subjects with at least one version (not deleted, unless `deleted`), sorted.
    pub fn subjects(&self, deleted: bool) -> Vec<String> {
        self.subjects
            .iter()
            .filter(|(_, s)| s.versions.iter().any(|v| deleted || !v.deleted))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// A subject's version numbers, ascending.
    pub fn versions(&self, subject: &str, deleted: bool) -> Result<Vec<u32>, RegistryError> {
        let s = self.subject(subject, deleted)?;
        Ok(s.versions.iter().filter(|v| deleted || !v.deleted).map(|v| v.version).collect())
    }

    /// One version of a subject.
    pub fn version(&self, subject: &str, spec: VersionSpec, deleted: bool) -> Result<SubjectVersion, RegistryError> {
        let v = self.version_entry(subject, spec, deleted)?;
        Ok(self.subject_version(subject, v))
    }

    /// A schema by global id.
    pub fn schema(&self, id: u32) -> Result<&SchemaEntry, RegistryError> {
        self.schemas.get(&id).ok_or(RegistryError::SchemaNotFound(id))
    }

    /// The `(subject, version)` pairs that use schema `id`.
    pub fn id_versions(&self, id: u32, deleted: bool) -> Result<Vec<(String, u32)>, RegistryError> {
        self.schema(id)?;
        Ok(self
            .subjects
            .iter()
            .flat_map(|(n, s)| {
                s.versions.iter().filter(|v| v.id == id && (deleted || !v.deleted)).map(move |v| (n.clone(), v.version))
            })
            .collect())
    }

    /// A topic's schema policy and whether payloads are validated (`none`, off when the
    /// topic was never configured).
    pub fn topic_policy(&self, topic: &str) -> (SchemaPolicy, bool) {
        self.topic_policies.get(topic).copied().unwrap_or_default()
    }

    /// Whether schema `id` is a (non-deleted) version of `subject`.
    pub fn subject_has_id(&self, subject: &str, id: u32) -> bool {
        self.subjects.get(subject).is_some_and(|s| s.versions.iter().any(|v| v.id == id && !v.deleted))
    }

    /// The level in force for a subject: its own, else the global default.
    pub fn effective_compatibility(&self, subject: &str) -> Compatibility {
        self.subjects.get(subject).and_then(|s| s.compatibility).unwrap_or(self.global_compatibility())
    }

    /// The global default level.
    pub fn global_compatibility(&self) -> Compatibility {
        self.global.unwrap_or_default()
    }

    /// A subject's own level; with `default_to_global` the global default when it has none.
    pub fn subject_compatibility(
        &self,
        subject: &str,
        default_to_global: bool,
    ) -> Result<Compatibility, RegistryError> {
        match self.subjects.get(subject).and_then(|s| s.compatibility) {
            Some(c) => Ok(c),
            None if default_to_global => Ok(self.global_compatibility()),
            None => Err(RegistryError::SubjectConfigNotFound(subject.to_owned())),
        }
    }

    fn live_schemas(&self, subject: &str) -> Vec<(u32, Arc<ParsedSchema>)> {
        self.subjects
            .get(subject)
            .map(|s| {
                s.versions
                    .iter()
                    .filter(|v| !v.deleted)
                    .filter_map(|v| self.schemas[&v.id].parsed.clone().map(|p| (v.version, p)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Plans registering `parsed` (text `schema`) under `subject`.
    pub fn plan_register(
        &self,
        subject: &str,
        schema: &str,
        parsed: &ParsedSchema,
    ) -> Result<RegisterPlan, RegistryError> {
        validate_subject(subject)?;
        let key = (parsed.schema_type(), parsed.canonical());
        let existing_id = self.by_canonical.get(&key).copied();
        if let (Some(id), Some(s)) = (existing_id, self.subjects.get(subject)) {
            if let Some(v) = s.versions.iter().rev().find(|v| v.id == id && !v.deleted) {
                return Ok(RegisterPlan::Existing { id, version: v.version });
            }
        }
        let previous = self.live_schemas(subject);
        let prev: Vec<(u32, &ParsedSchema)> = previous.iter().map(|(v, p)| (*v, p.as_ref())).collect();
        let problems = compat::check(self.effective_compatibility(subject), parsed, &prev);
        if !problems.is_empty() {
            return Err(RegistryError::Incompatible { subject: subject.to_owned(), messages: problems });
        }
        let version = self.subjects.get(subject).and_then(|s| s.versions.last()).map_or(1, |v| v.version + 1);
        let (id, schema) = match existing_id {
            Some(id) => (id, self.schemas[&id].schema.clone()),
            None => (self.next_id.max(1), schema.to_owned()),
        };
        Ok(RegisterPlan::New(Event::Register {
            subject: subject.to_owned(),
            version,
            id,
            schema_type: parsed.schema_type(),
            schema,
        }))
    }

    /// Finds `parsed` among a subject's versions (the latest such version).
    pub fn lookup(&self, subject: &str, parsed: &ParsedSchema, deleted: bool) -> Result<SubjectVersion, RegistryError> {
        let s = self.subject(subject, deleted)?;
        let id = self
            .by_canonical
            .get(&(parsed.schema_type(), parsed.canonical()))
            .ok_or(RegistryError::SchemaTextNotFound)?;
        let v = s
            .versions
            .iter()
            .rev()
            .find(|v| v.id == *id && (deleted || !v.deleted))
            .ok_or(RegistryError::SchemaTextNotFound)?;
        Ok(self.subject_version(subject, *v))
    }

    /// Checks `parsed` against a subject: against one version (`Some(spec)`) in the
    /// direction(s) of the subject's level, or (`None`) against what registering would be
    /// checked against. A subject without versions, asked for `latest` or all, is compatible.
    pub fn check(
        &self,
        subject: &str,
        spec: Option<VersionSpec>,
        parsed: &ParsedSchema,
    ) -> Result<Vec<String>, RegistryError> {
        let level = self.effective_compatibility(subject);
        let live = self.live_schemas(subject);
        let against: Vec<(u32, Arc<ParsedSchema>)> = match spec {
            None => live,
            Some(VersionSpec::Latest) if live.is_empty() => return Ok(Vec::new()),
            Some(spec) => {
                let v = self.version_entry(subject, spec, false)?;
                live.into_iter().filter(|(n, _)| *n == v.version).collect()
            }
        };
        let prev: Vec<(u32, &ParsedSchema)> = against.iter().map(|(v, p)| (*v, p.as_ref())).collect();
        Ok(compat::check(level, parsed, &prev))
    }

    /// Plans deleting one version; returns the event and the version number.
    pub fn plan_delete_version(
        &self,
        subject: &str,
        spec: VersionSpec,
        permanent: bool,
    ) -> Result<(Event, u32), RegistryError> {
        let s = self.subjects.get(subject).filter(|s| !s.versions.is_empty());
        let s = s.ok_or_else(|| RegistryError::SubjectNotFound(subject.to_owned()))?;
        let v = match spec {
            VersionSpec::Latest => s.versions.iter().rev().find(|v| !v.deleted),
            VersionSpec::Number(n) => s.versions.iter().find(|v| v.version == n),
        }
        .ok_or_else(|| RegistryError::VersionNotFound { subject: subject.to_owned(), version: spec.to_string() })?;
        match (permanent, v.deleted) {
            (false, true) => Err(RegistryError::VersionSoftDeleted { subject: subject.to_owned(), version: v.version }),
            (true, false) => {
                Err(RegistryError::VersionNotSoftDeleted { subject: subject.to_owned(), version: v.version })
            }
            _ => Ok((Event::DeleteVersion { subject: subject.to_owned(), version: v.version, permanent }, v.version)),
        }
    }

    /// Plans deleting a subject; returns the event and the versions it deletes.
    pub fn plan_delete_subject(&self, subject: &str, permanent: bool) -> Result<(Event, Vec<u32>), RegistryError> {
        let s = self.subjects.get(subject).filter(|s| !s.versions.is_empty());
        let s = s.ok_or_else(|| RegistryError::SubjectNotFound(subject.to_owned()))?;
        let live: Vec<u32> = s.versions.iter().filter(|v| !v.deleted).map(|v| v.version).collect();
        let versions = match permanent {
            false if live.is_empty() => return Err(RegistryError::SubjectSoftDeleted(subject.to_owned())),
            false => live,
            true if !live.is_empty() => return Err(RegistryError::SubjectNotSoftDeleted(subject.to_owned())),
            true => s.versions.iter().map(|v| v.version).collect(),
        };
        Ok((Event::DeleteSubject { subject: subject.to_owned(), permanent }, versions))
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
