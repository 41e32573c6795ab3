//! Shared helpers for integration tests: fresh certificates, a real broker on
//! 127.0.0.1:0, and connected clients.
#![allow(dead_code)]

pub mod auth;
pub mod etcd;
pub mod relay;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use qwire::broker::{self, BrokerConfig, BrokerHandle, BrokerTls};
use qwire::client::{Client, ConnectConfig};
use qwire::protocol::{BatchBuilder, Compression, Header, ProducerStamp, Record};
use qwire::transport::certs::{generate_dev_certs, DevCa, LeafKind};
use qwire::transport::TransportError;

/// A temp directory with `qwire certs` output for clients alice, bob and carol, plus a
/// client `mallory` signed by another CA and an expired client `old`.
pub struct Certs {
    pub dir: tempfile::TempDir,
}

impl Certs {
    pub fn new() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        generate_dev_certs(dir.path(), &["alice".into(), "bob".into(), "carol".into()], &[]).unwrap();
        let other = DevCa::generate("some other CA", 30).unwrap();
        let m = other.issue(LeafKind::Client, "mallory", &[], 30).unwrap();
        std::fs::write(dir.path().join("mallory.crt"), m.cert_pem).unwrap();
        std::fs::write(dir.path().join("mallory.key"), m.key_pem).unwrap();
        let ca = DevCa::load(&dir.path().join("ca.crt"), &dir.path().join("ca.key")).unwrap();
        let now = time::OffsetDateTime::now_utc();
        let old = ca
            .issue_with_validity(
                LeafKind::Client,
                "old",
                &[],
                now - time::Duration::days(30),
                now - time::Duration::days(1),
            )
            .unwrap();
        std::fs::write(dir.path().join("old.crt"), old.cert_pem).unwrap();
        std::fs::write(dir.path().join("old.key"), old.key_pem).unwrap();
        Certs { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn client(&self, addr: SocketAddr, name: &str) -> ConnectConfig {
        ConnectConfig::from_certs_dir(addr, self.path(), name).unwrap()
    }
}

/// A broker running on a fresh data dir (kept across restarts of the same `TestBroker`).
pub struct TestBroker {
    pub certs: Certs,
    pub data: tempfile::TempDir,
    pub config: BrokerConfig,
    pub handle: Option<BrokerHandle>,
}

impl TestBroker {
    pub async fn start() -> TestBroker {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut BrokerConfig)) -> TestBroker {
        let certs = Certs::new();
        let data = tempfile::tempdir().unwrap();
        let mut config = BrokerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: data.path().to_path_buf(),
            ..BrokerConfig::default()
        };
        tweak(&mut config);
        let mut b = TestBroker { certs, data, config, handle: None };
        b.restart_broker().await;
        b
    }

    /// Starts (again) on the same data dir; after the first start the same port is
    /// reused, so clients configured with the old address reconnect.
    pub async fn restart_broker(&mut self) {
        let tls = BrokerTls::load(self.certs.path()).unwrap();
        // quinn releases the old socket when its last connection is gone: retry briefly.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let h = loop {
            match broker::start(self.config.clone(), tls.clone()).await {
                Ok(h) => break h,
                Err(broker::BrokerError::Bind { .. }) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await
                }
                Err(e) => panic!("broker start: {e}"),
            }
        };
        self.config.listen = h.local_addr();
        self.handle = Some(h);
    }

    pub async fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await;
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.handle.as_ref().unwrap().local_addr()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data.path().to_path_buf()
    }

    pub fn client_config(&self, name: &str) -> ConnectConfig {
        self.certs.client(self.addr(), name)
    }

    pub async fn client(&self, name: &str) -> Client {
        Client::connect(&self.client_config(name)).await.unwrap()
    }

    pub async fn try_client(&self, name: &str) -> Result<Client, TransportError> {
        Client::connect(&self.client_config(name)).await
    }
}

/// A batch of `n` records with values `{prefix}-{i}` and a header.
pub fn batch(prefix: &str, n: usize, stamp: ProducerStamp, codec: Compression) -> Bytes {
    let mut b = BatchBuilder::new();
    for i in 0..n {
        b.push(&Record {
            timestamp: 1_700_000_000_000 + i as i64,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(format!("{prefix}-{i}"))),
            headers: vec![Header { key: "n".into(), value: Some(Bytes::from(i.to_string())) }],
        });
    }
    b.seal(codec, None, stamp)
}

pub fn stamp(producer_id: i64, producer_epoch: i16, base_sequence: i32) -> ProducerStamp {
    ProducerStamp { producer_id, producer_epoch, base_sequence }
}

pub fn values(records: &[qwire::protocol::StoredRecord]) -> Vec<String> {
    records.iter().map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap()).collect()
}

/// A producer builder for `client` against the test broker, with short timeouts.
pub fn producer(b: &TestBroker, client: &str) -> qwire::producer::ProducerBuilder {
    qwire::producer::Producer::builder()
        .bootstrap(b.addr().to_string())
        .tls(qwire::producer::TlsConfig::from_dir(b.certs.path(), client).unwrap())
        .max_block(std::time::Duration::from_secs(10))
}

/// True when the long (soak) versions of the fault tests should run: `QWIRE_SOAK=1`.
pub fn soak() -> bool {
    std::env::var("QWIRE_SOAK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Records with unique ids sent by a producer, and what each send reported; checks what a
/// broker stored against it (exactly once, in order, nothing acked lost).
pub struct Ledger {
    pub topic: String,
    pub partitions: u32,
    /// Per id: its partition and outcome (`None` until resolved).
    pub sent: Vec<(u32, Option<Result<qwire::producer::RecordMetadata, qwire::producer::ProduceError>>)>,
}

/// What [`Ledger::verify`] found.
#[derive(Debug, Default, Clone)]
pub struct Verdict {
    pub sent: usize,
    pub acked: usize,
    pub failed_not_persisted: usize,
    pub failed_possibly_persisted: usize,
    pub failed_persisted: usize,
    pub unresolved: usize,
    /// Records read back from the broker.
    pub stored: usize,
    /// Failed records that are in the log anyway (allowed only when possibly persisted).
    pub failed_but_stored: usize,
    /// Acked records missing, or not at the acked partition and offset.
    pub lost: usize,
    pub duplicates: usize,
    pub out_of_order: usize,
    /// Stored records that were never sent (or in the wrong partition).
    pub phantom: usize,
    /// Failed records whose status contradicts the log (not persisted but stored,
    /// persisted but missing).
    pub wrong_status: usize,
}

impl Verdict {
    /// Panics with the whole verdict unless it shows exactly-once, in-order delivery of
    /// everything acked and failure statuses consistent with the log.
    pub fn assert_exactly_once(&self) {
        let bad = self.lost + self.duplicates + self.out_of_order + self.phantom + self.wrong_status + self.unresolved;
        assert_eq!(bad, 0, "{self:#?}");
    }
}

impl Ledger {
    pub fn new(topic: &str, partitions: u32) -> Ledger {
        Ledger { topic: topic.into(), partitions, sent: Vec::new() }
    }

    /// The value of record `id`: its id then `pad` filler bytes.
    pub fn value(id: usize, pad: usize) -> bytes::Bytes {
        let mut v = format!("{id:010}:").into_bytes();
        v.resize(v.len() + pad, b'x');
        v.into()
    }

    fn id_of(value: &[u8]) -> Option<usize> {
        std::str::from_utf8(value.get(..10)?).ok()?.parse().ok()
    }

    /// Sends `total` records round-robin over the partitions, spread evenly over `over`
    /// (as fast as possible when zero), and waits for every outcome.
    pub async fn produce(
        &mut self,
        p: &qwire::producer::Producer,
        total: usize,
        over: std::time::Duration,
        pad: usize,
    ) {
        let first = self.sent.len();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, qwire::producer::DeliveryFuture)>();
        let collector = tokio::spawn(async move {
            let mut out = Vec::new();
            while let Some((id, fut)) = rx.recv().await {
                out.push((id, fut.await));
            }
            out
        });
        let start = tokio::time::Instant::now();
        for i in 0..total {
            let id = first + i;
            let partition = (id % self.partitions as usize) as u32;
            if !over.is_zero() && i % 16 == 0 {
                tokio::time::sleep_until(start + over.mul_f64(i as f64 / total as f64)).await;
            }
            let r =
                qwire::producer::ProducerRecord::new(self.topic.as_str(), Ledger::value(id, pad)).partition(partition);
            match p.enqueue(r).await {
                Ok(fut) => {
                    self.sent.push((partition, None));
                    tx.send((id, fut)).unwrap();
                }
                Err(e) => self.sent.push((partition, Some(Err(e.error)))),
            }
        }
        drop(tx);
        for (id, outcome) in collector.await.unwrap() {
            self.sent[id].1 = Some(outcome);
        }
    }

    /// Reads every partition back through `client` and compares.
    pub async fn verify(&self, client: &mut Client) -> Verdict {
        let mut all = Vec::new();
        for part in 0..self.partitions {
            all.push(client.fetch_all(&self.topic, part, 0).await.unwrap());
        }
        self.verify_records(all)
    }

    /// Compares what is stored (every record of each partition, in offset order) with
    /// what was sent and what each send reported.
    pub fn verify_records(&self, partitions: Vec<Vec<qwire::protocol::StoredRecord>>) -> Verdict {
        use qwire::producer::Persistence;
        let mut v = Verdict { sent: self.sent.len(), ..Verdict::default() };
        // id -> (partition, offset)
        let mut stored: std::collections::HashMap<usize, (u32, i64)> = std::collections::HashMap::new();
        for (part, records) in partitions.into_iter().enumerate() {
            let part = part as u32;
            let mut last: Option<usize> = None;
            for r in records {
                v.stored += 1;
                let Some(id) = r.value.as_deref().and_then(Ledger::id_of) else {
                    v.phantom += 1;
                    continue;
                };
                if id >= self.sent.len() || self.sent[id].0 != part {
                    v.phantom += 1;
                    continue;
                }
                if stored.insert(id, (part, r.offset)).is_some() {
                    v.duplicates += 1;
                }
                if last.is_some_and(|l| l >= id) {
                    v.out_of_order += 1;
                }
                last = Some(id);
            }
        }
        for (id, (part, outcome)) in self.sent.iter().enumerate() {
            let here = stored.get(&id);
            match outcome {
                None => v.unresolved += 1,
                Some(Ok(md)) => {
                    v.acked += 1;
                    let at_ack = md.offset.map(|o| (md.partition, o));
                    if here.is_none() || (at_ack.is_some() && here.copied() != at_ack) || md.partition != *part {
                        v.lost += 1;
                    }
                }
                Some(Err(e)) => {
                    match e.persistence() {
                        Persistence::NotPersisted => {
                            v.failed_not_persisted += 1;
                            v.wrong_status += usize::from(here.is_some());
                        }
                        Persistence::PossiblyPersisted => v.failed_possibly_persisted += 1,
                        Persistence::Persisted => {
                            v.failed_persisted += 1;
                            v.wrong_status += usize::from(here.is_none());
                        }
                    }
                    v.failed_but_stored += usize::from(here.is_some());
                }
            }
        }
        v
    }

    /// The first few failures, for the test output.
    pub fn failures(&self, n: usize) -> Vec<String> {
        self.sent
            .iter()
            .enumerate()
            .filter_map(|(id, (_, o))| match o {
                Some(Err(e)) => Some(format!("{id}: {e}")),
                _ => None,
            })
            .take(n)
            .collect()
    }
}

/// Settings for producers under fault injection: short back-offs and timeouts so faults
/// are noticed and recovered from quickly, a breaker that never opens, and deadlines long
/// enough that nothing fails while the fault lasts.
pub fn fault_tolerant(b: qwire::producer::ProducerBuilder) -> qwire::producer::ProducerBuilder {
    use std::time::Duration;
    let fast =
        qwire::producer::Backoff { base: Duration::from_millis(20), max: Duration::from_millis(200), jitter: 0.2 };
    b.max_in_flight(5)
        .batch_size(4096)
        .linger(Duration::from_millis(2))
        .retry_backoff(fast)
        .reconnect_backoff(fast)
        .circuit_breaker_threshold(u32::MAX)
        .connect_timeout(Duration::from_secs(1))
        .idle_timeout(Duration::from_secs(1))
        .keep_alive(Duration::from_millis(200))
        .request_timeout(Duration::from_secs(5))
        .delivery_timeout(Duration::from_secs(600))
        .max_block(Duration::from_secs(600))
}
