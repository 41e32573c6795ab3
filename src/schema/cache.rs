//! The client side of the registry: schemas and ids fetched once and cached, for the
//! producer (validate and tag records) and for consumers (decode by id).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use super::error::ValidationError;
use super::parsed::ParsedSchema;
use super::registry::SchemaInput;
use super::typed::{SchemaBinding, SchemaRecord, SchemaSource};
use super::wire::IdPlacement;

/// A boxed future returned by [`RegistryAccess`].
pub type AccessFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, SchemaError>> + Send + 'a>>;

/// How a client reaches the registry (the qwire client implements it with the registry
/// frames).
pub trait RegistryAccess: Send + Sync + 'static {
    /// Registers `input` under `subject` (or finds it there): `(id, version)`.
    fn register<'a>(&'a self, subject: &'a str, input: &'a SchemaInput) -> AccessFuture<'a, (u32, u32)>;
    /// The subject's latest version: `(id, schema)`.
    fn latest<'a>(&'a self, subject: &'a str) -> AccessFuture<'a, (u32, SchemaInput)>;
    /// A schema by id.
    fn schema_by_id(&self, id: u32) -> AccessFuture<'_, SchemaInput>;
}

/// What can go wrong resolving a schema or checking a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// The registry answered with an error (a wire error code and its message).
    #[error("schema registry error {code}: {message}")]
    Registry {
        /// Wire error code.
        code: u16,
        /// Message.
        message: String,
    },
    /// The registry could not be reached.
    #[error("schema registry unreachable: {0}")]
    Unreachable(String),
    /// A schema from the registry or the caller does not parse.
    #[error(transparent)]
    InvalidSchema(#[from] super::error::InvalidSchema),
    /// A value does not match its schema (names the path and the rule).
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The schema does not fit how it is used (an unknown Protobuf message name, a type
    /// other than the one the record type declares).
    #[error("{0}")]
    Mismatch(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Latest { subject: String, message: Option<String> },
    Text { subject: String, input: (u8, String), message: Option<String> },
}

type Slot = Arc<OnceCell<Arc<SchemaBinding>>>;

/// Schema bindings per subject (and schema text), and parsed schemas per id, each fetched
/// from the registry once. Concurrent first uses of one key share one fetch; a failed
/// fetch is not cached (the next use tries again).
pub struct SchemaCache {
    access: Arc<dyn RegistryAccess>,
    placement: IdPlacement,
    bindings: Mutex<HashMap<Key, Slot>>,
    by_id: Mutex<HashMap<u32, Arc<OnceCell<Arc<ParsedSchema>>>>>,
}

impl std::fmt::Debug for SchemaCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaCache").field("placement", &self.placement).finish_non_exhaustive()
    }
}

impl SchemaCache {
    /// A cache over `access`; values get their id as `placement` says.
    pub fn new(access: Arc<dyn RegistryAccess>, placement: IdPlacement) -> SchemaCache {
        SchemaCache { access, placement, bindings: Mutex::default(), by_id: Mutex::default() }
    }

    /// Where ids go.
    pub fn placement(&self) -> IdPlacement {
        self.placement
    }

    fn slot(&self, key: Key) -> Slot {
        self.bindings.lock().unwrap_or_else(|e| e.into_inner()).entry(key).or_default().clone()
    }

    /// The latest schema of `subject` (fetched once).
    pub async fn latest(&self, subject: &str, message: Option<&str>) -> Result<Arc<SchemaBinding>, SchemaError> {
        let slot = self.slot(Key::Latest { subject: subject.to_owned(), message: message.map(str::to_owned) });
        slot.get_or_try_init(|| async {
            let (id, input) = self.access.latest(subject).await?;
            self.bind(id, &input, message)
        })
        .await
        .cloned()
    }

    /// The latest schema of `subject` if it was fetched already (no I/O): for callers that
    /// cannot wait.
    pub fn cached_latest(&self, subject: &str, message: Option<&str>) -> Option<Arc<SchemaBinding>> {
        let key = Key::Latest { subject: subject.to_owned(), message: message.map(str::to_owned) };
        self.bindings.lock().unwrap_or_else(|e| e.into_inner()).get(&key).and_then(|slot| slot.get().cloned())
    }

    /// `input` registered under `subject` (registered or found once).
    pub async fn registered(
        &self,
        subject: &str,
        input: &SchemaInput,
        message: Option<&str>,
    ) -> Result<Arc<SchemaBinding>, SchemaError> {
        let key = Key::Text {
            subject: subject.to_owned(),
            input: (input.schema_type.as_u8(), input.schema.clone()),
            message: message.map(str::to_owned),
        };
        let slot = self.slot(key);
        slot.get_or_try_init(|| async {
            // Parse first: a bad schema is the caller's error, not the registry's.
            ParsedSchema::parse(input.schema_type, &input.schema)?;
            let (id, _version) = self.access.register(subject, input).await?;
            self.bind(id, input, message)
        })
        .await
        .cloned()
    }

    /// The binding a typed record uses: its schema text registered under its subject, or
    /// its subject's latest schema.
    pub async fn for_record<T: SchemaRecord>(&self) -> Result<Arc<SchemaBinding>, SchemaError> {
        let subject = T::subject();
        let binding = match T::schema() {
            SchemaSource::Text(text) => {
                let input = SchemaInput { schema_type: T::FORMAT.schema_type(), schema: text.to_owned() };
                self.registered(&subject, &input, T::message_name()).await?
            }
            SchemaSource::Registered => self.latest(&subject, T::message_name()).await?,
        };
        if binding.parsed().schema_type() != T::FORMAT.schema_type() {
            return Err(SchemaError::Mismatch(format!(
                "subject '{subject}' holds a {} schema but the record type declares {:?}",
                binding.parsed().schema_type(),
                T::FORMAT
            )));
        }
        Ok(binding)
    }

    /// The parsed schema with `id` (fetched once), for decoding.
    pub async fn by_id(&self, id: u32) -> Result<Arc<ParsedSchema>, SchemaError> {
        let slot = self.by_id.lock().unwrap_or_else(|e| e.into_inner()).entry(id).or_default().clone();
        slot.get_or_try_init(|| async {
            let input = self.access.schema_by_id(id).await?;
            Ok(Arc::new(ParsedSchema::parse(input.schema_type, &input.schema)?))
        })
        .await
        .cloned()
    }

    fn bind(&self, id: u32, input: &SchemaInput, message: Option<&str>) -> Result<Arc<SchemaBinding>, SchemaError> {
        let parsed = Arc::new(ParsedSchema::parse(input.schema_type, &input.schema)?);
        self.by_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id)
            .or_insert_with(|| Arc::new(OnceCell::new_with(Some(parsed.clone()))));
        Ok(Arc::new(SchemaBinding::new(id, parsed, self.placement, message).map_err(SchemaError::Mismatch)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::registry::{Registry, VersionSpec};
    use crate::schema::SchemaType;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A registry in memory, counting calls.
    struct Local {
        registry: Registry,
        calls: AtomicUsize,
    }

    fn err(e: crate::schema::RegistryError) -> SchemaError {
        SchemaError::Registry { code: e.wire_code(), message: e.to_string() }
    }

    impl RegistryAccess for Local {
        fn register<'a>(&'a self, subject: &'a str, input: &'a SchemaInput) -> AccessFuture<'a, (u32, u32)> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move { self.registry.register(subject, input).await.map_err(err) })
        }
        fn latest<'a>(&'a self, subject: &'a str) -> AccessFuture<'a, (u32, SchemaInput)> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                let v = self.registry.version(subject, VersionSpec::Latest, false).await.map_err(err)?;
                Ok((v.id, SchemaInput { schema_type: v.schema_type, schema: v.schema }))
            })
        }
        fn schema_by_id(&self, id: u32) -> AccessFuture<'_, SchemaInput> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                let s = self.registry.schema(id).await.map_err(err)?;
                Ok(SchemaInput { schema_type: s.schema_type, schema: s.schema })
            })
        }
    }

    #[test]
    fn schemas_are_fetched_once() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let local = Arc::new(Local { registry: Registry::in_memory().await, calls: AtomicUsize::new(0) });
            let cache = SchemaCache::new(local.clone(), IdPlacement::Header);
            let input = SchemaInput { schema_type: SchemaType::Json, schema: r#"{"type": "object"}"#.into() };
            let a = cache.registered("t-value", &input, None).await.unwrap();
            let b = cache.registered("t-value", &input, None).await.unwrap();
            assert_eq!((a.id(), b.id()), (1, 1));
            assert_eq!(local.calls.load(Ordering::SeqCst), 1);
            assert_eq!(cache.latest("t-value", None).await.unwrap().id(), 1);
            cache.latest("t-value", None).await.unwrap();
            cache.by_id(1).await.unwrap();
            assert_eq!(local.calls.load(Ordering::SeqCst), 2);
            // Failures are not cached.
            assert!(matches!(cache.latest("nope", None).await, Err(SchemaError::Registry { code: 40, .. })));
            assert!(cache.latest("nope", None).await.is_err());
            assert_eq!(local.calls.load(Ordering::SeqCst), 4);
            // A bad schema never reaches the registry.
            let bad = SchemaInput { schema_type: SchemaType::Json, schema: "{".into() };
            assert!(matches!(cache.registered("t-value", &bad, None).await, Err(SchemaError::InvalidSchema(_))));
            assert_eq!(local.calls.load(Ordering::SeqCst), 4);
        });
    }
}
