//! Cluster mode with the broker's other services, on real processes (an etcd and three
//! `qwire broker`s on loopback): authentication (SASL principals, the ACL's `cluster`
//! permission), the schema registry shared through etcd, and `/ready` meaning "has a
//! current view of the cluster". Needs `--features cluster` and `etcd` on PATH.
#![cfg(feature = "cluster")]

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::auth::{AuthFiles, ALICE_PASSWORD, BOB_PASSWORD};
use common::cluster::Cluster;
use common::{batch, stamp};
use qwire::auth::client::SaslCredentials;
use qwire::auth::scram::ScramHash;
use qwire::client::{Client, ConnectConfig};
use qwire::protocol::cluster::{ClusterPayload, OffsetForLeaderEpoch, ReplicaFetch};
use qwire::protocol::frame::ProduceResult;
use qwire::protocol::{Acks, Compression, ErrorCode, Payload};
use qwire::schema::{SchemaPolicy, SchemaType};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// A connection to node `i` that authenticates with SCRAM-SHA-512 instead of a certificate.
fn sasl_config(c: &Cluster, i: usize, user: &str, password: &str) -> ConnectConfig {
    let creds = SaslCredentials::scram(ScramHash::Sha512, user, password);
    let mut cfg = ConnectConfig::with_sasl(c.nodes[i].addr, &c.certs.path().join("ca.crt"), creds).unwrap();
    cfg.connect_timeout = Duration::from_secs(2);
    cfg
}

/// Sends one replication-layer request and returns the answer's error code (`None` for a
/// non-error answer).
async fn replication_call(cfg: &ConnectConfig, p: ClusterPayload) -> ErrorCode {
    let client = Client::connect(cfg).await.expect("connected");
    let mut stream = client.open_stream().await.unwrap();
    let answer = stream.call(Payload::Cluster(p)).await;
    client.close();
    match answer {
        Ok(Payload::Error(e)) => e.code,
        Ok(_) => ErrorCode::None,
        Err(e) => e.code().unwrap_or_else(|| panic!("transport failure: {e}")),
    }
}

/// Produces `b` on `client`, retrying while the broker is not (yet) acting as the
/// partition's leader: a broker the view names as leader takes the role a moment later.
async fn produce_on_leader(client: &mut Client, topic: &str, partition: u32, b: bytes::Bytes) -> ProduceResult {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let not_leader = match client.produce(topic, partition, Acks::All, b.clone()).await {
            Ok(r) if r.error != ErrorCode::NotLeader => return r,
            Ok(r) => format!("{r:?}"),
            Err(e) if e.code() == Some(ErrorCode::NotLeader) => e.to_string(),
            Err(e) => panic!("produce failed: {e}"),
        };
        assert!(Instant::now() < deadline, "never the leader: {not_leader}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn cluster_brokers_authenticate_with_sasl_and_replicate_only_with_the_cluster_permission() {
    let files = AuthFiles::new();
    let acl = files.dir.path().join("acl.toml");
    std::fs::write(
        &acl,
        r#"
[[allow]]
principal = "qwire-broker"
topics = ["*"]
permissions = ["cluster"]

[[allow]]
principal = "alice"
topics = ["*"]
permissions = ["read", "write", "admin"]

[[allow]]
principal = "bob"
topics = ["*"]
permissions = ["cluster"]

[[allow]]
principal = "carol"
topics = ["*"]
permissions = ["read", "write"]
"#,
    )
    .unwrap();
    let (acl, users) = (acl.display().to_string(), files.users.display().to_string());
    let mut c = Cluster::start_with(3, &["--acl", &acl, "--client-auth", "optional", "--users", &users]);
    rt().block_on(async {
        let mut admin = c.any_client("alice").await;
        admin.create_replicated_topic("acl", 1, 3, 2).await.unwrap();
        admin.close();
        c.wait_for("assigned", "acl", |d| d.partitions[0].leader >= 0 && d.partitions[0].isr.len() == 3).await;

        // An idempotent acks=all producer logged in with SASL (no certificate): its id is
        // issued to the SASL principal through etcd and checked on the leader; every batch
        // needs both followers (certificate principal `qwire-broker`) to replicate it.
        let mut b = qwire::producer::Producer::builder();
        for n in &c.nodes {
            b = b.bootstrap(n.addr.to_string());
        }
        let p = b
            .tls(qwire::producer::TlsConfig::ca_file(&c.certs.path().join("ca.crt")).unwrap())
            .sasl_scram_sha512("alice", ALICE_PASSWORD)
            .acks(Acks::All)
            .build()
            .unwrap();
        for i in 0..50u32 {
            let md = p.send(qwire::producer::ProducerRecord::new("acl", format!("r{i}"))).await.expect("acknowledged");
            assert_eq!(md.offset, Some(i64::from(i)));
        }
        let _ = p.close(Duration::from_secs(10)).await;

        // The replication requests need the `cluster` permission, whoever asks: a SASL
        // principal that has it passes the check, a certificate principal without it does not.
        let d = c.describe("acl").await.partitions[0].clone();
        let leader = c.index_of(d.leader as u32);
        let epoch_query = ClusterPayload::OffsetForLeaderEpoch(OffsetForLeaderEpoch {
            replica_id: 99,
            topic: "acl".into(),
            partition: 0,
            current_leader_epoch: d.leader_epoch,
            epoch: d.leader_epoch,
        });
        let fetch = ClusterPayload::ReplicaFetch(ReplicaFetch {
            replica_id: 99,
            topic: "acl".into(),
            partition: 0,
            leader_epoch: d.leader_epoch,
            fetch_offset: 0,
            durable_offset: 0,
            max_bytes: 1 << 20,
            max_wait_ms: 0,
        });
        let bob = sasl_config(&c, leader, "bob", BOB_PASSWORD);
        let carol = c.client_config(leader, "carol");
        let alice_sasl = sasl_config(&c, leader, "alice", ALICE_PASSWORD);
        assert_eq!(replication_call(&bob, epoch_query.clone()).await, ErrorCode::None);
        // Past the permission check, the leader refuses a broker that holds no replica.
        assert_eq!(replication_call(&bob, fetch.clone()).await, ErrorCode::InvalidRequest);
        assert_eq!(replication_call(&carol, epoch_query.clone()).await, ErrorCode::AuthorizationFailed);
        assert_eq!(replication_call(&carol, fetch.clone()).await, ErrorCode::AuthorizationFailed);
        assert_eq!(replication_call(&alice_sasl, fetch).await, ErrorCode::AuthorizationFailed);
    });
    let records = c.stop_and_compare("acl", 1);
    let values: Vec<String> = records[0]
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect();
    assert_eq!(values, (0..50).map(|i| format!("r{i}")).collect::<Vec<_>>());
}

const ORDER: &str = r#"{"type":"object","properties":{"id":{"type":"integer"}},"required":["id"]}"#;
const INVOICE: &str = r#"{"type":"object","properties":{"total":{"type":"number"}},"required":["total"]}"#;

#[test]
fn every_broker_of_a_cluster_serves_one_schema_registry_kept_in_etcd() {
    let mut c = Cluster::start(3);
    rt().block_on(async {
        async fn client(c: &Cluster, i: usize) -> Result<Client, qwire::transport::TransportError> {
            Client::connect(&c.client_config(i, "alice")).await
        }
        let mut b1 = client(&c, 0).await.unwrap();
        let mut b2 = client(&c, 1).await.unwrap();
        let mut b3 = client(&c, 2).await.unwrap();
        let (order_id, v) = b1.register_schema("orders-value", SchemaType::Json, ORDER).await.unwrap();
        assert_eq!(v, 1);
        // Another broker knows the id, and registering the same schema there finds it.
        assert_eq!(b2.schema_by_id(order_id).await.unwrap(), (SchemaType::Json, ORDER.to_owned()));
        assert_eq!(b3.register_schema("orders-value", SchemaType::Json, ORDER).await.unwrap(), (order_id, 1));
        // A new schema registered through a third broker gets a new id, known everywhere.
        let (invoice_id, _) = b3.register_schema("invoices-value", SchemaType::Json, INVOICE).await.unwrap();
        assert_ne!(invoice_id, order_id);
        assert_eq!(b1.schema_by_id(invoice_id).await.unwrap().1, INVOICE);
        let mut subjects = b2.schema_subjects(false).await.unwrap();
        subjects.sort();
        assert_eq!(subjects, ["invoices-value", "orders-value"]);

        // A topic policy set through one broker applies on the partition's leader,
        // whichever broker that is: a record without a schema id is refused.
        b1.create_replicated_topic("orders", 3, 3, 2).await.unwrap();
        c.wait_for("assigned", "orders", |d| d.partitions.iter().all(|p| p.leader >= 0)).await;
        b1.set_topic_schema_policy("orders", SchemaPolicy::Enforce, false).await.unwrap();
        for p in c.describe("orders").await.partitions {
            let mut leader = client(&c, c.index_of(p.leader as u32)).await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let b = batch("plain", 1, stamp(-1, -1, -1), Compression::None);
                let r = produce_on_leader(&mut leader, "orders", p.partition, b).await;
                if r.error == ErrorCode::SchemaRequired {
                    break;
                }
                assert!(Instant::now() < deadline, "partition {}: the policy never applied: {r:?}", p.partition);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            leader.close();
        }
        for b in [b1, b2, b3] {
            b.close();
        }

        // The registry is not in any broker's data directory: a restarted broker serves it
        // from etcd.
        c.kill(1);
        c.start_node(1);
        let mut b2 = client(&c, 1).await.unwrap();
        assert_eq!(b2.schema_by_id(invoice_id).await.unwrap().1, INVOICE);
        b2.close();
    });
}

/// `GET path` on a plaintext admin listener: status and body.
fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split(' ').nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((status, body))
}

/// Polls `/ready` on `addr` until it answers `want` (60 s at most).
fn wait_ready(addr: SocketAddr, want: bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = http_get(addr, "/ready");
        if let Some((status, body)) = &got {
            let current = body.contains("\"cluster_view_current\":true");
            if (*status == 200) == want && current == want {
                return body.clone();
            }
        }
        assert!(Instant::now() < deadline, "/ready on {addr} never became {want}: {got:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The value of the series of `name` for `topic`, partition 0, in a `/metrics` page.
fn series(page: &str, name: &str, topic: &str) -> Option<f64> {
    page.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| l.contains(&format!("topic=\"{topic}\"")) && l.contains("partition=\"0\""))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn ready_means_a_current_view_of_the_cluster_and_metrics_show_replication() {
    let mut c = Cluster::start_with(3, &["--http", "127.0.0.1:0", "--http-plaintext"]);
    let admins: Vec<SocketAddr> = c.nodes.iter().map(|n| n.admin.expect("admin listener address")).collect();
    for a in &admins {
        let body = wait_ready(*a, true);
        assert!(body.contains("\"storage_recovered\":true"), "{body}");
    }
    // The leader exports its in-sync set's size and lag; every replica its high watermark.
    rt().block_on(async {
        let mut admin = c.any_client("alice").await;
        admin.create_replicated_topic("m", 1, 3, 2).await.unwrap();
        admin.close();
        let d = c.wait_for("in sync", "m", |d| d.partitions[0].leader >= 0 && d.partitions[0].isr.len() == 3).await;
        let leader = c.index_of(d.partitions[0].leader as u32);
        let mut client = Client::connect(&c.client_config(leader, "alice")).await.unwrap();
        let b = batch("m", 5, stamp(-1, -1, -1), Compression::None);
        assert_eq!(produce_on_leader(&mut client, "m", 0, b).await.error, ErrorCode::None);
        client.close();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let page = http_get(admins[leader], "/metrics").map(|(_, b)| b).unwrap_or_default();
            let isr = series(&page, "qwire_broker_in_sync_replicas", "m");
            let lag = series(&page, "qwire_broker_replication_lag_offsets", "m");
            let hw = series(&page, "qwire_broker_high_watermark", "m");
            if (isr, lag, hw) == (Some(3.0), Some(0.0), Some(5.0)) {
                break;
            }
            assert!(Instant::now() < deadline, "leader metrics: isr {isr:?} lag {lag:?} hw {hw:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
        let follower = (leader + 1) % 3;
        let page = http_get(admins[follower], "/metrics").map(|(_, b)| b).unwrap_or_default();
        assert_eq!(series(&page, "qwire_broker_in_sync_replicas", "m"), None, "only the leader exports it");
    });
    // etcd frozen: no broker can renew its session, so none has a current view.
    c.etcd.pause();
    for a in &admins {
        wait_ready(*a, false);
    }
    c.etcd.resume();
    for a in &admins {
        wait_ready(*a, true);
    }
    // /health stays up meanwhile: the process lives.
    assert_eq!(http_get(admins[0], "/health").map(|(s, _)| s), Some(200));
}

/// Runs `qwire ARGS -s <node i> --certs ... --client alice`; stdout on success.
fn qwire_on(c: &Cluster, i: usize, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_qwire"))
        .args(args)
        .args(["-s", &c.nodes[i].addr.to_string()])
        .arg("--certs")
        .arg(c.certs.path())
        .args(["--client", "alice"])
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(out.status.success(), "qwire {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_cli_creates_replicated_topics_and_describes_them_and_the_cluster_as_json() {
    let mut c = Cluster::start(3);
    let created = qwire_on(
        &c,
        0,
        &["topics", "create", "cli", "--partitions", "2", "--replication-factor", "3", "--min-insync-replicas", "2"],
    );
    assert_eq!(created.trim(), "created topic 'cli' with 2 partitions, replication factor 3, min in-sync replicas 2");
    rt().block_on(c.wait_for("in sync", "cli", |d| d.partitions.iter().all(|p| p.leader >= 0 && p.isr.len() == 3)));
    // Asked through another broker: the same cluster-wide state.
    let t: serde_json::Value =
        serde_json::from_str(&qwire_on(&c, 1, &["topics", "describe", "cli", "--format", "json"]))
            .expect("one JSON document");
    assert_eq!(t["topic"], "cli");
    assert_eq!((t["replication_factor"].as_u64(), t["min_insync_replicas"].as_u64()), (Some(3), Some(2)));
    let parts = t["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    for (n, p) in parts.iter().enumerate() {
        assert_eq!(p["partition"].as_u64(), Some(n as u64));
        let mut replicas: Vec<u64> = p["replicas"].as_array().unwrap().iter().map(|r| r.as_u64().unwrap()).collect();
        replicas.sort();
        assert_eq!(replicas, [1, 2, 3]);
        assert_eq!(p["isr"].as_array().unwrap().len(), 3);
        assert!(p["leader"].as_u64().is_some_and(|l| (1..=3).contains(&l)), "{p}");
        assert!(p["leader_epoch"].as_i64().is_some_and(|e| e >= 0), "{p}");
    }
    let d: serde_json::Value = serde_json::from_str(&qwire_on(&c, 2, &["cluster", "describe", "--format", "json"]))
        .expect("one JSON document");
    assert!(d["controller"].as_u64().is_some_and(|l| (1..=3).contains(&l)), "{d}");
    let brokers = d["brokers"].as_array().unwrap();
    assert_eq!(brokers.len(), 3, "{d}");
    for (b, node) in brokers.iter().zip(&c.nodes) {
        assert_eq!(b["id"].as_u64(), Some(u64::from(node.id)));
        assert_eq!(b["alive"], true);
        assert_eq!(b["address"].as_str(), Some(node.addr.to_string().as_str()));
    }
    // A broker that is down is still listed (it holds replicas), as not alive.
    c.stop(2);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let d: serde_json::Value =
            serde_json::from_str(&qwire_on(&c, 0, &["cluster", "describe", "--format", "json"])).unwrap();
        let b3 = &d["brokers"][2];
        if b3["alive"] == false {
            assert_eq!((b3["id"].as_u64(), &b3["address"]), (Some(3), &serde_json::Value::Null));
            break;
        }
        assert!(Instant::now() < deadline, "broker 3 still alive: {d}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
