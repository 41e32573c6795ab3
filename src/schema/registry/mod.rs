//! The schema registry service: [`Registry`] keeps the state in memory, writes every change
//! to a [`RegistryStore`] before applying it, and recovers by replaying the store.
//!
//! Writes are serialised (one planned event at a time); reads never wait for a write's
//! fsync. With a shared store (a cluster), a write that loses the race for a sequence
//! number catches up and re-plans; reads that miss (an unknown id) catch up once before
//! answering "not found", and [`Registry::refresh`] catches up on demand.

pub mod error;
#[cfg(feature = "broker")]
pub mod kv_store;
pub mod state;
pub mod store;

use std::sync::{Arc, RwLock};

pub use error::RegistryError;
pub use state::{Event, RegisterPlan, RegistryState, SchemaEntry, SubjectVersion, VersionSpec};
pub use store::{AppendOutcome, FileStore, MemoryStore, RegistryStore, StoreError};

use crate::schema::parsed::ParsedSchema;
use crate::schema::{Compatibility, SchemaPolicy, SchemaType};

/// A schema as a client submits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaInput {
    /// Type (Confluent's default is Avro).
    pub schema_type: SchemaType,
    /// Schema text.
    pub schema: String,
}

/// A registered schema, fetched by id.
#[derive(Debug, Clone)]
pub struct SchemaById {
    /// Global id.
    pub id: u32,
    /// Type.
    pub schema_type: SchemaType,
    /// Text.
    pub schema: String,
    /// Parsed form (for validation and decoding).
    pub parsed: Option<Arc<ParsedSchema>>,
}

/// The registry: state in memory, events in a store.
pub struct Registry {
    state: RwLock<RegistryState>,
    store: Arc<dyn RegistryStore>,
    writer: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("applied", &self.read().applied()).finish_non_exhaustive()
    }
}

fn store_err(e: StoreError) -> RegistryError {
    RegistryError::Store(e.0)
}

impl Registry {
    /// Opens a registry over `store`, replaying every stored event.
    pub async fn open(store: Arc<dyn RegistryStore>) -> Result<Registry, RegistryError> {
        let r = Registry { state: RwLock::new(RegistryState::default()), store, writer: tokio::sync::Mutex::new(()) };
        r.refresh().await?;
        Ok(r)
    }

    /// A registry with an in-memory store (nothing survives the process).
    pub async fn in_memory() -> Registry {
        Registry::open(Arc::new(MemoryStore::default())).await.expect("an empty memory store replays")
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, RegistryState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies events other writers appended to a shared store. Returns how many.
    pub async fn refresh(&self) -> Result<usize, RegistryError> {
        let from = self.read().applied();
        let entries = self.store.read_from(from).await.map_err(store_err)?;
        let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
        // Another refresh may have applied some of them meanwhile.
        let skip = (st.applied() - from) as usize;
        let n = entries.len().saturating_sub(skip);
        for raw in entries.into_iter().skip(skip) {
            let event: Event = serde_json::from_slice(&raw)
                .map_err(|e| RegistryError::Store(format!("undecodable entry {}: {e}", st.applied())))?;
            st.apply(event, None);
        }
        Ok(n)
    }

    /// Before answering a request: with a shared store (a cluster), applies what other
    /// brokers appended, so answers are as fresh as the store; a no-op otherwise.
    pub async fn sync(&self) -> Result<(), RegistryError> {
        if self.store.shared() {
            self.refresh().await?;
        }
        Ok(())
    }

    /// Plans an event against the current state, appends it, applies it. `plan` returns the
    /// event to write (or none) and the answer.
    async fn commit<T>(
        &self,
        parsed: Option<Arc<ParsedSchema>>,
        plan: impl Fn(&RegistryState) -> Result<(Option<Event>, T), RegistryError>,
    ) -> Result<T, RegistryError> {
        let _writer = self.writer.lock().await;
        loop {
            let (seq, planned) = {
                let st = self.read();
                (st.applied(), plan(&st))
            };
            let (event, answer) = planned?;
            let Some(event) = event else { return Ok(answer) };
            let bytes = serde_json::to_vec(&event).expect("events serialise");
            match self.store.append(seq, bytes).await.map_err(store_err)? {
                AppendOutcome::Appended => {
                    self.state.write().unwrap_or_else(|e| e.into_inner()).apply(event, parsed.clone());
                    return Ok(answer);
                }
                AppendOutcome::Conflict => {
                    self.refresh().await?;
                }
            }
        }
    }

    /// Registers a schema under a subject (or finds it there); returns `(id, version)`.
    pub async fn register(&self, subject: &str, input: &SchemaInput) -> Result<(u32, u32), RegistryError> {
        let parsed = Arc::new(ParsedSchema::parse(input.schema_type, &input.schema)?);
        let p = parsed.clone();
        self.commit(Some(parsed), move |st| match st.plan_register(subject, &input.schema, &p)? {
            RegisterPlan::Existing { id, version } => Ok((None, (id, version))),
            RegisterPlan::New(e) => {
                let Event::Register { id, version, .. } = &e else { unreachable!("plan_register plans a Register") };
                let answer = (*id, *version);
                Ok((Some(e), answer))
            }
        })
        .await
    }

    /// Finds a schema among a subject's versions.
    pub async fn lookup(
        &self,
        subject: &str,
        input: &SchemaInput,
        deleted: bool,
    ) -> Result<SubjectVersion, RegistryError> {
        let parsed = ParsedSchema::parse(input.schema_type, &input.schema)?;
        let found = self.read().lookup(subject, &parsed, deleted);
        match found {
            Err(RegistryError::SubjectNotFound(_) | RegistryError::SchemaTextNotFound) if self.refresh().await? > 0 => {
                self.read().lookup(subject, &parsed, deleted)
            }
            other => other,
        }
    }

    /// Subjects, sorted.
    pub fn subjects(&self, deleted: bool) -> Vec<String> {
        self.read().subjects(deleted)
    }

    /// A subject's versions.
    pub fn versions(&self, subject: &str, deleted: bool) -> Result<Vec<u32>, RegistryError> {
        self.read().versions(subject, deleted)
    }

    /// One version of a subject.
    pub async fn version(
        &self,
        subject: &str,
        spec: VersionSpec,
        deleted: bool,
    ) -> Result<SubjectVersion, RegistryError> {
        let found = self.read().version(subject, spec, deleted);
        match found {
            Err(RegistryError::SubjectNotFound(_) | RegistryError::VersionNotFound { .. })
                if self.refresh().await? > 0 =>
            {
                self.read().version(subject, spec, deleted)
            }
            other => other,
        }
    }

    /// A schema by global id.
    pub async fn schema(&self, id: u32) -> Result<SchemaById, RegistryError> {
        let get = |st: &RegistryState| {
            st.schema(id).map(|e| SchemaById {
                id,
                schema_type: e.schema_type,
                schema: e.schema.clone(),
                parsed: e.parsed.clone(),
            })
        };
        let found = get(&self.read());
        match found {
            Err(RegistryError::SchemaNotFound(_)) if self.refresh().await? > 0 => get(&self.read()),
            other => other,
        }
    }

    /// The subjects and versions that use schema `id`.
    pub async fn id_versions(&self, id: u32, deleted: bool) -> Result<Vec<(String, u32)>, RegistryError> {
        self.schema(id).await?;
        self.read().id_versions(id, deleted)
    }

    /// A topic's schema policy and whether payloads are validated.
    pub fn topic_policy(&self, topic: &str) -> (SchemaPolicy, bool) {
        self.read().topic_policy(topic)
    }

    /// Sets a topic's schema policy (durably, like every registry change).
    pub async fn set_topic_policy(
        &self,
        topic: &str,
        policy: SchemaPolicy,
        validate_payload: bool,
    ) -> Result<(), RegistryError> {
        self.commit(None, |_| {
            let event = Event::SetTopicPolicy { topic: topic.to_owned(), policy, validate_payload };
            Ok((Some(event), ()))
        })
        .await
    }

    /// Whether schema `id` is a (non-deleted) version of `subject`; catches up with the
    /// store once before answering no.
    pub async fn subject_has_id(&self, subject: &str, id: u32) -> Result<bool, RegistryError> {
        if self.read().subject_has_id(subject, id) {
            return Ok(true);
        }
        Ok(self.refresh().await? > 0 && self.read().subject_has_id(subject, id))
    }

    /// Compatibility problems of `input` against a subject's version (`Some`) or against
    /// what a registration would be checked against (`None`); empty when compatible.
    pub async fn check(
        &self,
        subject: &str,
        spec: Option<VersionSpec>,
        input: &SchemaInput,
    ) -> Result<Vec<String>, RegistryError> {
        let parsed = ParsedSchema::parse(input.schema_type, &input.schema)?;
        self.read().check(subject, spec, &parsed)
    }

    /// Soft- or hard-deletes a version; returns its number.
    pub async fn delete_version(
        &self,
        subject: &str,
        spec: VersionSpec,
        permanent: bool,
    ) -> Result<u32, RegistryError> {
        self.commit(None, |st| st.plan_delete_version(subject, spec, permanent).map(|(e, v)| (Some(e), v))).await
    }

    /// Soft- or hard-deletes a subject; returns the versions deleted.
    pub async fn delete_subject(&self, subject: &str, permanent: bool) -> Result<Vec<u32>, RegistryError> {
        self.commit(None, |st| st.plan_delete_subject(subject, permanent).map(|(e, v)| (Some(e), v))).await
    }

    /// The global default level.
    pub fn global_compatibility(&self) -> Compatibility {
        self.read().global_compatibility()
    }

    /// A subject's own level (or the global one with `default_to_global`).
    pub fn subject_compatibility(
        &self,
        subject: &str,
        default_to_global: bool,
    ) -> Result<Compatibility, RegistryError> {
        self.read().subject_compatibility(subject, default_to_global)
    }

    /// The level in force for a subject.
    pub fn effective_compatibility(&self, subject: &str) -> Compatibility {
        self.read().effective_compatibility(subject)
    }

    /// Sets (or with `None` removes) a subject's level, or the global one when `subject` is
    /// `None`. Returns the previous level of that scope.
    pub async fn set_compatibility(
        &self,
        subject: Option<&str>,
        level: Option<Compatibility>,
    ) -> Result<Option<Compatibility>, RegistryError> {
        if let Some(s) = subject {
            state::validate_subject(s)?;
        }
        self.commit(None, |st| {
            let previous = match subject {
                None => Some(st.global_compatibility()),
                Some(s) => st.subject_compatibility(s, false).ok(),
            };
            if subject.is_some() && level.is_none() && previous.is_none() {
                return Err(RegistryError::SubjectConfigNotFound(subject.unwrap_or_default().to_owned()));
            }
            let event = Event::SetConfig { subject: subject.map(str::to_owned), compatibility: level };
            Ok((Some(event), previous))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    fn json(s: &str) -> SchemaInput {
        SchemaInput { schema_type: SchemaType::Json, schema: s.into() }
    }

    #[test]
    fn a_file_backed_registry_recovers_after_restart() {
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let r = Registry::open(Arc::new(FileStore::open(dir.path()).unwrap())).await.unwrap();
            assert_eq!(r.register("a", &json(r#"{"type": "object"}"#)).await.unwrap(), (1, 1));
            assert_eq!(r.register("b", &json(r#"{"type": "string"}"#)).await.unwrap(), (2, 1));
            r.set_compatibility(Some("a"), Some(Compatibility::Full)).await.unwrap();
            r.delete_subject("b", false).await.unwrap();
            r.set_topic_policy("orders", SchemaPolicy::Enforce, true).await.unwrap();
            r.set_topic_policy("logs", SchemaPolicy::Warn, false).await.unwrap();
            r.set_topic_policy("logs", SchemaPolicy::None, false).await.unwrap();
        });
        rt().block_on(async {
            let r = Registry::open(Arc::new(FileStore::open(dir.path()).unwrap())).await.unwrap();
            assert_eq!(r.subjects(false), vec!["a"]);
            assert_eq!(r.subjects(true), vec!["a", "b"]);
            assert_eq!(r.subject_compatibility("a", false).unwrap(), Compatibility::Full);
            assert_eq!(r.schema(2).await.unwrap().schema, r#"{"type": "string"}"#);
            assert_eq!(r.topic_policy("orders"), (SchemaPolicy::Enforce, true));
            assert_eq!(r.topic_policy("logs"), (SchemaPolicy::None, false));
            // Ids continue after the recovered ones.
            assert_eq!(r.register("c", &json(r#"{"type": "integer"}"#)).await.unwrap(), (3, 1));
        });
    }

    #[test]
    fn two_registries_sharing_a_store_never_collide() {
        rt().block_on(async {
            let store: Arc<dyn RegistryStore> = Arc::new(MemoryStore::default());
            let a = Registry::open(store.clone()).await.unwrap();
            let b = Registry::open(store.clone()).await.unwrap();
            assert_eq!(a.register("s", &json(r#"{"type": "object"}"#)).await.unwrap(), (1, 1));
            // b has not seen a's write: its append conflicts, it catches up and re-plans.
            assert_eq!(b.register("s", &json(r#"{"type": "object", "title": "x"}"#)).await.unwrap(), (2, 2));
            assert_eq!(b.register("t", &json(r#"{"type": "object"}"#)).await.unwrap(), (1, 1));
            // a finds b's schema by id after catching up on the miss.
            assert_eq!(a.schema(2).await.unwrap().id, 2);
            assert_eq!(a.version("t", VersionSpec::Latest, false).await.unwrap().id, 1);
        });
    }

    #[test]
    fn config_changes_report_the_previous_level() {
        rt().block_on(async {
            let r = Registry::in_memory().await;
            assert_eq!(
                r.set_compatibility(None, Some(Compatibility::Forward)).await.unwrap(),
                Some(Compatibility::Backward)
            );
            assert_eq!(r.global_compatibility(), Compatibility::Forward);
            assert_eq!(r.set_compatibility(Some("s"), Some(Compatibility::None)).await.unwrap(), None);
            assert_eq!(r.set_compatibility(Some("s"), None).await.unwrap(), Some(Compatibility::None));
            assert_eq!(r.set_compatibility(Some("s"), None).await.unwrap_err().error_code(), 40408);
        });
    }
}
