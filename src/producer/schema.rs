//! Schema validation in the producer (cargo feature `schema`): a record that names a
//! schema subject (or whose topic has a default subject) is validated against the
//! subject's latest schema before it is queued, and gets the schema id — as a
//! `qwire.schema_id` header or in Confluent's wire format. Schemas and ids are fetched from
//! the broker's registry once per subject, over a connection of their own (opened on first
//! use to the first bootstrap broker that answers).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwapOption;

use super::config::ProducerConfig;
use super::error::{ErrorKind, Persistence, ProduceError, SendError};
use super::record::ProducerRecord;
use crate::client::{Client, ConnectConfig, RegistryClient};
use crate::schema::cache::{SchemaCache, SchemaError};
use crate::schema::typed::{EncodedValue, SchemaBinding};
use crate::transport::tls::QuicTuning;

/// The producer's registry access and schema cache.
pub(crate) struct ProducerSchemas {
    cfg: Arc<ProducerConfig>,
    /// Connected on first use; dropped after a transport failure so the next use reconnects.
    cache: ArcSwapOption<SchemaCache>,
    /// Default subject per topic, as shared strings (no allocation per record).
    defaults: HashMap<String, Arc<str>>,
    /// Bindings per subject once resolved: the per-record path reads this and nothing else.
    resolved: RwLock<HashMap<Arc<str>, Arc<SchemaBinding>>>,
}

/// A record refused for its schema: nothing was sent.
pub(crate) fn schema_error(e: SchemaError) -> ProduceError {
    ProduceError::new(ErrorKind::Schema, Persistence::NotPersisted, e.to_string())
}

impl ProducerSchemas {
    pub(crate) fn new(cfg: Arc<ProducerConfig>) -> ProducerSchemas {
        let defaults = cfg.schema_subjects.iter().map(|(t, s)| (t.clone(), Arc::from(s.as_str()))).collect();
        ProducerSchemas { cfg, cache: ArcSwapOption::empty(), defaults, resolved: RwLock::default() }
    }

    /// The schema cache, connecting to the registry on first use.
    pub(crate) async fn cache(&self) -> Result<Arc<SchemaCache>, ProduceError> {
        if let Some(c) = self.cache.load_full() {
            return Ok(c);
        }
        let tls = self.cfg.tls.clone().expect("validated at build");
        let mut failures = Vec::new();
        for server in &self.cfg.bootstrap {
            let addr = match tokio::net::lookup_host(server.as_str()).await.map(|mut a| a.next()) {
                Ok(Some(a)) => a,
                Ok(None) => {
                    failures.push(format!("'{server}' resolves to no address"));
                    continue;
                }
                Err(e) => {
                    failures.push(format!("cannot resolve '{server}': {e}"));
                    continue;
                }
            };
            let cc = ConnectConfig {
                addr,
                server_name: tls.server_name.clone(),
                identity: tls.identity.clone(),
                ca: tls.ca.clone(),
                client_id: format!("{}-schemas", self.cfg.client_id),
                connect_timeout: self.cfg.connect_timeout,
                tuning: QuicTuning { keep_alive: Some(self.cfg.keep_alive), ..QuicTuning::default() },
                // The registry connection authenticates as the producer does.
                sasl: self.cfg.sasl.clone(),
            };
            match Client::connect(&cc).await {
                Ok(client) => {
                    let cache =
                        Arc::new(SchemaCache::new(Arc::new(RegistryClient::new(client)), self.cfg.schema_id_placement));
                    self.cache.store(Some(cache.clone()));
                    return Ok(cache);
                }
                Err(e) => failures.push(e.to_string()),
            }
        }
        Err(ProduceError::new(
            ErrorKind::Schema,
            Persistence::NotPersisted,
            format!("cannot reach the schema registry: {}", failures.join("; ")),
        ))
    }

    /// Forgets the registry connection after `e` when it was a transport failure.
    pub(crate) fn after(&self, e: &SchemaError) {
        if matches!(e, SchemaError::Unreachable(_)) {
            self.cache.store(None);
        }
    }

    /// The subject a record must match: its own, else its topic's default.
    fn subject_of(&self, record: &ProducerRecord) -> Option<Arc<str>> {
        record.schema_subject.clone().or_else(|| self.defaults.get(&*record.topic).cloned())
    }

    /// Whether `record` goes through the schema step (it has a subject and a value).
    pub(crate) fn applies(&self, record: &ProducerRecord) -> bool {
        record.value.is_some() && self.subject_of(record).is_some()
    }

    /// Validates and tags `record` when it has a subject (fetching the schema the first
    /// time). A tombstone (no value) is not validated.
    pub(crate) async fn apply(&self, record: ProducerRecord) -> Result<ProducerRecord, SendError> {
        let Some(subject) = self.subject_of(&record) else { return Ok(record) };
        if record.value.is_none() {
            return Ok(record);
        }
        if let Some(b) = self.known(&subject) {
            return encode(&b, &subject, record);
        }
        let binding = match self.cache().await {
            Ok(cache) => match cache.latest(&subject, None).await {
                Ok(b) => b,
                Err(e) => {
                    self.after(&e);
                    return Err(SendError { error: schema_error(e), record });
                }
            },
            Err(error) => return Err(SendError { error, record }),
        };
        self.resolved.write().unwrap_or_else(|e| e.into_inner()).insert(subject.clone(), binding.clone());
        encode(&binding, &subject, record)
    }

    /// A subject's binding if already resolved (no I/O, no allocation).
    fn known(&self, subject: &str) -> Option<Arc<SchemaBinding>> {
        self.resolved.read().unwrap_or_else(|e| e.into_inner()).get(subject).cloned()
    }

    /// [`ProducerSchemas::apply`] without waiting: the subject's schema must have been
    /// fetched already (by an earlier `send` or [`super::Producer::resolve_schema`]).
    pub(crate) fn apply_cached(&self, record: ProducerRecord) -> Result<ProducerRecord, SendError> {
        let Some(subject) = self.subject_of(&record) else { return Ok(record) };
        if record.value.is_none() {
            return Ok(record);
        }
        match self.known(&subject).or_else(|| self.cache.load_full().and_then(|c| c.cached_latest(&subject, None))) {
            Some(binding) => encode(&binding, &subject, record),
            None => Err(SendError {
                error: ProduceError::new(
                    ErrorKind::Schema,
                    Persistence::NotPersisted,
                    format!("the schema of subject '{subject}' is not fetched yet: call resolve_schema(\"{subject}\") or use send/enqueue once"),
                ),
                record,
            }),
        }
    }
}

/// Checks the value against the binding's schema and attaches the id.
fn encode(binding: &SchemaBinding, subject: &str, mut record: ProducerRecord) -> Result<ProducerRecord, SendError> {
    let value = record.value.clone().unwrap_or_default();
    match binding.check_bytes(value) {
        Ok(EncodedValue { value, header }) => {
            record.value = Some(value);
            record.headers.extend(header);
            Ok(record)
        }
        Err(e) => Err(SendError {
            error: ProduceError::new(
                ErrorKind::Schema,
                Persistence::NotPersisted,
                format!("value does not match schema {} of subject '{subject}': {e}", binding.id()),
            ),
            record,
        }),
    }
}
