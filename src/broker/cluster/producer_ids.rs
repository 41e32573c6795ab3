//! Producer ids in a cluster: issued by any broker, checked by every leader.
//!
//! A producer may get its id from one broker and write to partitions led by others, so
//! the issued ids live in the metadata store: `PREFIX/kv/producers/<id>` holds the id's
//! principal and current epoch. New ids come from blocks reserved with compare-and-swap
//! on `PREFIX/producer-ids/next` (unique across brokers); an epoch bump is a
//! compare-and-swap on the id's key, so two brokers cannot both grant the same epoch. Each
//! broker keeps a cache of the keys, filled on a miss by one read from the store.
//!
//! The rules are those of the single-node registry (`broker::producer_ids`): an id is
//! only valid once issued, only for its principal, at an epoch no newer than its current
//! one; a bump must present the current epoch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::broker::producer_ids::{IdError, ID_BLOCK};
use crate::cluster::metadata::{KvNamespace, Metadata};
use crate::protocol::ErrorCode;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    principal: String,
    epoch: i16,
}

/// The cluster's producer-id registry as this broker sees it.
pub(crate) struct ClusterProducerIds {
    meta: Metadata,
    ns: KvNamespace,
    cache: Mutex<HashMap<i64, (Arc<str>, i16)>>,
    block: tokio::sync::Mutex<std::ops::Range<i64>>,
}

fn key(id: i64) -> String {
    format!("{id:020}")
}

fn invalid_id(producer_id: i64, why: &str) -> IdError {
    (ErrorCode::InvalidProducerId, format!("producer id {producer_id} {why}; ask for a new id"))
}

fn unavailable(e: impl std::fmt::Display) -> IdError {
    (ErrorCode::MetadataUnavailable, format!("producer ids: {e}"))
}

impl ClusterProducerIds {
    pub(crate) fn new(meta: Metadata) -> ClusterProducerIds {
        let ns = meta.kv("producers");
        ClusterProducerIds { meta, ns, cache: Mutex::new(HashMap::new()), block: tokio::sync::Mutex::new(0..0) }
    }

    fn cached(&self, id: i64) -> Option<(Arc<str>, i16)> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(&id).cloned()
    }

    fn remember(&self, id: i64, principal: &str, epoch: i16) {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(id, (Arc::from(principal), epoch));
    }

    /// The id's record from the store (and into the cache), with its mod revision.
    async fn load(&self, id: i64) -> Result<Option<(Record, i64)>, IdError> {
        let Some(v) = self.ns.get(&key(id)).await.map_err(unavailable)? else { return Ok(None) };
        let r: Record = serde_json::from_slice(&v.value).map_err(|e| unavailable(format!("id {id}: {e}")))?;
        self.remember(id, &r.principal, r.epoch);
        Ok(Some((r, v.mod_revision)))
    }

    /// Checks the id stamped on an idempotent batch and answers its current epoch (see the
    /// module docs). A batch whose epoch is newer than the cached one re-reads the store
    /// (another broker may have bumped it).
    pub(crate) async fn check_stamp(&self, principal: &str, id: i64, epoch: i16) -> Result<i16, IdError> {
        let (owner, current) = match self.cached(id) {
            Some((o, e)) if epoch <= e => (o, e),
            _ => match self.load(id).await? {
                Some((r, _)) => (Arc::from(r.principal.as_str()), r.epoch),
                None => return Err(invalid_id(id, "was not issued by this cluster")),
            },
        };
        if *owner != *principal {
            return Err(invalid_id(id, "was issued to another principal"));
        }
        if epoch > current {
            return Err((
                ErrorCode::InvalidProducerEpoch,
                format!("producer {id}: epoch {epoch} was not issued; the current is epoch {current}"),
            ));
        }
        Ok(current)
    }

    /// Answers `InitProducerId`: a new id (epoch 0) for `-1, -1`, otherwise the next epoch
    /// of `id`, presented with its current epoch by its principal.
    pub(crate) async fn init(&self, principal: &str, id: i64, epoch: i16) -> Result<(i64, i16), IdError> {
        match (id, epoch) {
            (-1, -1) => self.issue(principal).await,
            (id, _) if id < 0 => {
                Err((ErrorCode::InvalidRequest, format!("producer id {id} epoch {epoch}: use -1, -1 for a new id")))
            }
            (id, e) => {
                let (r, rev) = self.load(id).await?.ok_or_else(|| invalid_id(id, "was not issued by this cluster"))?;
                if r.principal != principal {
                    return Err(invalid_id(id, "was issued to another principal"));
                }
                if e != r.epoch {
                    return Err((
                        ErrorCode::InvalidProducerEpoch,
                        format!("producer {id}: epoch {e} is not the current epoch {}", r.epoch),
                    ));
                }
                if r.epoch == i16::MAX {
                    return self.issue(principal).await;
                }
                let next = Record { principal: r.principal, epoch: r.epoch + 1 };
                let body = serde_json::to_vec(&next).expect("serialisable");
                match self.ns.compare_and_swap(&key(id), rev, body).await.map_err(unavailable)? {
                    Some(_) => {
                        self.remember(id, principal, next.epoch);
                        Ok((id, next.epoch))
                    }
                    None => Err((
                        ErrorCode::InvalidProducerEpoch,
                        format!("producer {id}: its epoch changed meanwhile (another instance bumped it)"),
                    )),
                }
            }
        }
    }

    async fn issue(&self, principal: &str) -> Result<(i64, i16), IdError> {
        let id = {
            let mut block = self.block.lock().await;
            if block.is_empty() {
                *block = self.meta.allocate_producer_ids(ID_BLOCK).await.map_err(unavailable)?;
            }
            let id = block.start;
            block.start += 1;
            id
        };
        let body = serde_json::to_vec(&Record { principal: principal.to_owned(), epoch: 0 }).expect("serialisable");
        match self.ns.create(&key(id), body).await.map_err(unavailable)? {
            Some(_) => {
                self.remember(id, principal, 0);
                Ok((id, 0))
            }
            // Blocks are unique, so this means a bug or a hand-edited store.
            None => Err((ErrorCode::Unknown, format!("producer id {id} exists already"))),
        }
    }
}
