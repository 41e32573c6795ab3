//! The registry's event log in the cluster's metadata store (a compare-and-swap key-value
//! namespace, `kv/schemas/` — etcd in cluster mode), so every broker of a cluster shares
//! one registry: entry `n` is the key `log/<n as 20 digits>`, created only if absent.
//!
//! Why the metadata store and not an internal `_schemas` topic (Confluent's choice): the
//! registry needs a linearizable "append entry n only if n is next", which the store gives
//! per key (create-if-absent), so any broker may register without electing a registry
//! leader or forwarding writes; entries are small and rare (schema changes, not records).

use super::store::{AppendOutcome, RegistryStore, StoreError, StoreFuture};
use crate::cluster::metadata::{KvNamespace, MetaError};

/// Key prefix of the log inside the namespace.
const LOG: &str = "log/";

fn key(seq: u64) -> String {
    format!("{LOG}{seq:020}")
}

fn err(e: MetaError) -> StoreError {
    let unknown = matches!(&e, MetaError::Store(s) if s.outcome_unknown());
    StoreError(if unknown { format!("{e} (the write may or may not have been applied)") } else { e.to_string() })
}

/// A [`RegistryStore`] over a metadata-store namespace.
#[derive(Debug, Clone)]
pub struct KvRegistryStore {
    ns: KvNamespace,
}

impl KvRegistryStore {
    /// The log in `ns` (the cluster gives each broker `metadata.kv("schemas")`).
    pub fn new(ns: KvNamespace) -> KvRegistryStore {
        KvRegistryStore { ns }
    }
}

impl RegistryStore for KvRegistryStore {
    fn read_from(&self, from: u64) -> StoreFuture<'_, Vec<Vec<u8>>> {
        Box::pin(async move {
            let (items, _rev) = self.ns.list_from(LOG, &key(from)).await.map_err(err)?;
            let mut out = Vec::with_capacity(items.len());
            // Entries are consecutive; stop at a gap rather than apply out of order.
            for (i, (k, v)) in items.into_iter().enumerate() {
                if k != key(from + i as u64) {
                    break;
                }
                out.push(v.value);
            }
            Ok(out)
        })
    }

    fn shared(&self) -> bool {
        true
    }

    fn append(&self, seq: u64, entry: Vec<u8>) -> StoreFuture<'_, AppendOutcome> {
        Box::pin(async move {
            match self.ns.create(&key(seq), entry).await.map_err(err)? {
                Some(_) => Ok(AppendOutcome::Appended),
                None => Ok(AppendOutcome::Conflict),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::cluster::metadata::Metadata;
    use crate::cluster::store::EmbeddedStore;
    use crate::schema::registry::{Registry, SchemaInput, VersionSpec};
    use crate::schema::SchemaType;

    fn json(s: &str) -> SchemaInput {
        SchemaInput { schema_type: SchemaType::Json, schema: s.into() }
    }

    #[test]
    fn brokers_sharing_the_metadata_store_share_one_registry() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let meta = Metadata::new(Arc::new(EmbeddedStore::in_memory()), "/qwire-test");
            let store = || Arc::new(KvRegistryStore::new(meta.kv("schemas")));
            let a = Registry::open(store()).await.unwrap();
            let b = Registry::open(store()).await.unwrap();
            assert_eq!(a.register("s", &json(r#"{"type": "object"}"#)).await.unwrap(), (1, 1));
            // b's append at entry 0 conflicts; it catches up and registers after a's.
            assert_eq!(b.register("s", &json(r#"{"type": "object", "title": "t"}"#)).await.unwrap(), (2, 2));
            // Requests on a shared store start with a catch-up.
            a.sync().await.unwrap();
            assert_eq!(a.version("s", VersionSpec::Latest, false).await.unwrap().id, 2);
            // A broker starting later replays the shared log.
            let c = Registry::open(store()).await.unwrap();
            assert_eq!(c.versions("s", false).unwrap(), vec![1, 2]);
            let (items, _) = meta.kv("schemas").list("log/").await.unwrap();
            assert_eq!(items.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), [key(0), key(1)]);
        });
    }
}
