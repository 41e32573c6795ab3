//! Shared helpers for integration tests: fresh certificates, a real broker on
//! 127.0.0.1:0, and connected clients.
#![allow(dead_code)]

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
