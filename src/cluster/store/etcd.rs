//! The etcd metadata store (etcd v3 API through the `etcd-client` crate).
//!
//! Two client handles share the configuration: one for unary calls, each bounded by
//! [`EtcdConfig::request_timeout`] so an unreachable etcd gives a clear error instead of a
//! hang, and one without a per-call deadline for the long-lived streams (watches, a
//! campaign that waits for its turn). Both send HTTP/2 keep-alive pings so a dead
//! connection is noticed within about [`EtcdConfig::keep_alive`] + its timeout.
//!
//! Avoided on purpose: `get_stream` (needs etcd 3.7; Debian ships 3.4).

use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare as ECompare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn as ETxn, TxnOp,
    WatchOptions,
};
use tokio::sync::mpsc;

use super::{
    prefix_end, Compare, KeyValue, LeaderKey, LeaseId, MetaStore, Op, Revision, StoreError, Txn, TxnOutcome,
    WatchEvent, WatchReceiver,
};

/// How to reach etcd.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// `host:port` of each etcd member.
    pub endpoints: Vec<String>,
    /// Bound on each unary call (get, txn, lease calls). Default 3 s.
    pub request_timeout: Duration,
    /// Bound on establishing a connection. Default 2 s.
    pub connect_timeout: Duration,
    /// HTTP/2 ping interval; a ping unanswered for [`EtcdConfig::keep_alive_timeout`]
    /// drops the connection (and ends the watches on it, which then re-list). Default 6 s:
    /// etcd answers pings more often than every 5 s (`--grpc-keepalive-min-time`) with
    /// GOAWAY, which would break every watch.
    pub keep_alive: Duration,
    /// See [`EtcdConfig::keep_alive`]. Default 3 s.
    pub keep_alive_timeout: Duration,
}

impl EtcdConfig {
    /// Defaults for the given endpoints.
    pub fn new(endpoints: Vec<String>) -> EtcdConfig {
        EtcdConfig {
            endpoints,
            request_timeout: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(2),
            keep_alive: Duration::from_secs(6),
            keep_alive_timeout: Duration::from_secs(3),
        }
    }
}

/// A [`MetaStore`] on etcd.
#[derive(Clone)]
pub struct EtcdStore {
    unary: Client,
    streams: Client,
    endpoint: String,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EtcdStore({})", self.endpoint)
    }
}

impl EtcdStore {
    /// Connects and checks that etcd answers (one status call), so a wrong address is an
    /// error here rather than at the first write.
    pub async fn connect(config: &EtcdConfig) -> Result<EtcdStore, StoreError> {
        let endpoint = config.endpoints.join(",");
        let base = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_keep_alive(config.keep_alive, config.keep_alive_timeout)
            .with_keep_alive_while_idle(true);
        let unavailable = |e: etcd_client::Error| StoreError::Unavailable {
            endpoint: endpoint.clone(),
            op: "connect",
            detail: e.to_string(),
        };
        let endpoints: Vec<String> = config.endpoints.iter().map(|e| format!("http://{e}")).collect();
        let unary = Client::connect(&endpoints, Some(base.clone().with_timeout(config.request_timeout)))
            .await
            .map_err(unavailable)?;
        let streams = Client::connect(&endpoints, Some(base)).await.map_err(unavailable)?;
        let store = EtcdStore { unary, streams, endpoint: endpoint.clone() };
        store.unary.maintenance_client().status().await.map_err(|e| store.error("status", e))?;
        Ok(store)
    }

    fn error(&self, op: &'static str, e: etcd_client::Error) -> StoreError {
        use etcd_client::Error as E;
        match e {
            E::GRpcStatus(s) => {
                let detail = s.message().to_string();
                match i32::from(s.code()) {
                    GRPC_INVALID_ARGUMENT | GRPC_FAILED_PRECONDITION => StoreError::Refused { op, detail },
                    GRPC_NOT_FOUND if detail.contains("lease") => StoreError::LeaseExpired { lease: 0 },
                    GRPC_OUT_OF_RANGE if detail.contains("compacted") => {
                        StoreError::Compacted { revision: 0, compacted: 0 }
                    }
                    _ => StoreError::Unavailable { endpoint: self.endpoint.clone(), op, detail },
                }
            }
            E::LeaseKeepAliveError(detail) if detail.contains("not found") => StoreError::LeaseExpired { lease: 0 },
            E::InvalidArgs(detail) => StoreError::Refused { op, detail },
            other => StoreError::Unavailable { endpoint: self.endpoint.clone(), op, detail: other.to_string() },
        }
    }
}

// gRPC status codes (grpc/grpc doc/statuscodes.md), compared by value so this file does
// not depend on `tonic` directly.
const GRPC_INVALID_ARGUMENT: i32 = 3;
const GRPC_NOT_FOUND: i32 = 5;
const GRPC_FAILED_PRECONDITION: i32 = 9;
const GRPC_OUT_OF_RANGE: i32 = 11;

fn kv_of(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        lease: kv.lease(),
    }
}

/// etcd reports revision 0 for a key that does not exist, so "was written at revision r"
/// also needs "exists" (create revision > 0) to mean the same as in the embedded store
/// when r is 0.
fn compares_of(c: &Compare) -> [ECompare; 2] {
    let exists = |k: &str| ECompare::create_revision(k, CompareOp::Greater, 0);
    match c {
        Compare::Absent(k) => [
            ECompare::create_revision(k.as_str(), CompareOp::Equal, 0),
            ECompare::version(k.as_str(), CompareOp::Equal, 0),
        ],
        Compare::ModRevision(k, r) => [ECompare::mod_revision(k.as_str(), CompareOp::Equal, *r), exists(k)],
        Compare::CreateRevision(k, r) => [ECompare::create_revision(k.as_str(), CompareOp::Equal, *r), exists(k)],
    }
}

fn op_of(op: &Op) -> TxnOp {
    match op {
        Op::Put { key, value, lease } => {
            let opts = (*lease != 0).then(|| PutOptions::new().with_lease(*lease));
            TxnOp::put(key.as_str(), value.clone(), opts)
        }
        Op::Delete { key } => TxnOp::delete(key.as_str(), None),
    }
}

#[async_trait]
impl MetaStore for EtcdStore {
    fn describe(&self) -> String {
        format!("etcd {}", self.endpoint)
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let resp = self.unary.kv_client().get(key, None).await.map_err(|e| self.error("get", e))?;
        Ok(resp.kvs().first().map(kv_of))
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let resp = self
            .unary
            .kv_client()
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|e| self.error("list", e))?;
        let revision = resp.header().map_or(0, |h| h.revision());
        Ok((resp.kvs().iter().map(kv_of).collect(), revision))
    }

    async fn list_from(&self, prefix: &str, from_key: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let start = if from_key > prefix { from_key } else { prefix };
        let resp = self
            .unary
            .kv_client()
            .get(start, Some(GetOptions::new().with_range(prefix_end(prefix))))
            .await
            .map_err(|e| self.error("list", e))?;
        let revision = resp.header().map_or(0, |h| h.revision());
        Ok((resp.kvs().iter().map(kv_of).collect(), revision))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        let compares: Vec<ECompare> = txn.compares.iter().flat_map(compares_of).collect();
        let ops: Vec<TxnOp> = txn.ops.iter().map(op_of).collect();
        let resp = self
            .unary
            .kv_client()
            .txn(ETxn::new().when(compares).and_then(ops))
            .await
            .map_err(|e| self.error("txn", e))
            .map_err(|e| match e {
                // A put under an ended lease: etcd answers "requested lease not found".
                StoreError::LeaseExpired { .. } => StoreError::LeaseExpired {
                    lease: txn
                        .ops
                        .iter()
                        .find_map(|o| match o {
                            Op::Put { lease, .. } if *lease != 0 => Some(*lease),
                            _ => None,
                        })
                        .unwrap_or(0),
                },
                e => e,
            })?;
        Ok(TxnOutcome { succeeded: resp.succeeded(), revision: resp.header().map_or(0, |h| h.revision()) })
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let secs = ttl.as_secs().max(1) as i64;
        let resp = self.unary.lease_client().grant(secs, None).await.map_err(|e| self.error("lease grant", e))?;
        if !resp.error().is_empty() {
            return Err(StoreError::Refused { op: "lease grant", detail: resp.error().to_string() });
        }
        Ok(resp.id())
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        let with_id = |e: StoreError| match e {
            StoreError::LeaseExpired { .. } => StoreError::LeaseExpired { lease },
            e => e,
        };
        let mut client = self.unary.lease_client();
        let (mut keeper, mut stream) =
            client.keep_alive(lease).await.map_err(|e| with_id(self.error("lease keep-alive", e)))?;
        keeper.keep_alive().await.map_err(|e| with_id(self.error("lease keep-alive", e)))?;
        match stream.message().await.map_err(|e| with_id(self.error("lease keep-alive", e)))? {
            Some(r) if r.ttl() > 0 => Ok(Duration::from_secs(r.ttl() as u64)),
            Some(_) => Err(StoreError::LeaseExpired { lease }),
            None => Err(StoreError::Unavailable {
                endpoint: self.endpoint.clone(),
                op: "lease keep-alive",
                detail: "stream closed without an answer".into(),
            }),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        match self.unary.lease_client().revoke(lease).await.map_err(|e| self.error("lease revoke", e)) {
            Ok(_) | Err(StoreError::LeaseExpired { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn watch(&self, prefix: &str, from_revision: Revision) -> Result<WatchReceiver, StoreError> {
        let opts = WatchOptions::new().with_prefix().with_start_revision(from_revision);
        let mut stream =
            self.streams.watch_client().watch(prefix, Some(opts)).await.map_err(|e| self.error("watch", e))?;
        let (tx, rx) = mpsc::channel(1024);
        let store = self.clone();
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    m = stream.message() => m,
                    _ = tx.closed() => return,
                };
                let resp = match msg {
                    Ok(Some(r)) => r,
                    Ok(None) => {
                        let e = StoreError::Unavailable {
                            endpoint: store.endpoint.clone(),
                            op: "watch",
                            detail: "watch stream ended".into(),
                        };
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(store.error("watch", e))).await;
                        return;
                    }
                };
                if resp.compact_revision() > 0 {
                    let e = StoreError::Compacted { revision: from_revision, compacted: resp.compact_revision() };
                    let _ = tx.send(Err(e)).await;
                    return;
                }
                if resp.canceled() {
                    let e = StoreError::Unavailable {
                        endpoint: store.endpoint.clone(),
                        op: "watch",
                        detail: format!("watch cancelled: {}", resp.cancel_reason()),
                    };
                    let _ = tx.send(Err(e)).await;
                    return;
                }
                let events: Vec<WatchEvent> = resp
                    .events()
                    .iter()
                    .filter_map(|ev| {
                        let kv = ev.kv()?;
                        Some(match ev.event_type() {
                            EventType::Put => WatchEvent::Put(kv_of(kv)),
                            EventType::Delete => WatchEvent::Delete {
                                key: String::from_utf8_lossy(kv.key()).into_owned(),
                                mod_revision: kv.mod_revision(),
                            },
                        })
                    })
                    .collect();
                if !events.is_empty() && tx.send(Ok(events)).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }

    async fn campaign(&self, name: &str, value: &[u8], lease: LeaseId) -> Result<LeaderKey, StoreError> {
        let resp = self
            .streams
            .election_client()
            .campaign(name, value.to_vec(), lease)
            .await
            .map_err(|e| self.error("campaign", e))?;
        let leader = resp.leader().ok_or_else(|| StoreError::Unavailable {
            endpoint: self.endpoint.clone(),
            op: "campaign",
            detail: "answer without a leader key".into(),
        })?;
        Ok(LeaderKey {
            name: String::from_utf8_lossy(leader.name()).into_owned(),
            key: String::from_utf8_lossy(leader.key()).into_owned(),
            create_revision: leader.rev(),
            lease: leader.lease(),
        })
    }

    async fn election_leader(&self, name: &str) -> Result<Option<(LeaderKey, Vec<u8>)>, StoreError> {
        // The leader is the live candidate with the oldest create revision: what etcd's
        // election service computes, read directly so "no leader" is not an error string.
        let (kvs, _) = self.list(&format!("{name}/")).await?;
        Ok(kvs.into_iter().min_by_key(|kv| kv.create_revision).map(|kv| {
            let key =
                LeaderKey { name: name.to_owned(), key: kv.key, create_revision: kv.create_revision, lease: kv.lease };
            (key, kv.value)
        }))
    }

    async fn resign(&self, leader: &LeaderKey) -> Result<(), StoreError> {
        self.txn(Txn::new().when(leader.guard()).delete(leader.key.clone())).await.map(|_| ())
    }
}
