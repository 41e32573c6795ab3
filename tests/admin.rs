//! The broker's admin HTTP listener against a real broker on loopback: readiness through
//! start-up and shutdown, mTLS refusals, principals handed to mounted routers, and
//! `/metrics` parsed as Prometheus text with counters that move by exactly what the test
//! produced.

mod common;
#[path = "common/https.rs"]
mod https;

use std::collections::HashMap;

use axum::routing::get;
use axum::Router;
use common::{batch, stamp, Certs};
use https::{get as http_get, Via};
use qwire::broker::admin::{Admin, AdminConfig, AdminError, AdminTls, Caller, Principal};
use qwire::broker::{self, BrokerConfig, BrokerTls};
use qwire::protocol::{Acks, Compression};

fn admin_config(certs: &Certs) -> AdminConfig {
    AdminConfig::new("127.0.0.1:0".parse().unwrap(), AdminTls::Mtls(BrokerTls::load(certs.path()).unwrap()))
}

fn broker_config(data: &std::path::Path) -> BrokerConfig {
    BrokerConfig { listen: "127.0.0.1:0".parse().unwrap(), data_dir: data.to_path_buf(), ..BrokerConfig::default() }
}

async fn poll_status(addr: std::net::SocketAddr, path: &str, via: &Via, want: u16) -> https::Reply {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let r = http_get(addr, path, via).await.unwrap();
        if r.status == want || std::time::Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn ready_is_503_until_storage_is_recovered_and_again_at_shutdown() {
    let certs = Certs::new();
    let data = tempfile::tempdir().unwrap();
    let admin = Admin::new(admin_config(&certs)).start().await.unwrap();
    let via = Via::tls(certs.path(), Some("alice"));
    let addr = admin.local_addr();

    let health = http_get(addr, "/health", &via).await.unwrap();
    assert_eq!(health.status, 200, "{health:?}");
    let h: serde_json::Value = serde_json::from_str(&health.body).unwrap();
    assert_eq!(h["status"], "ok");

    // The broker has not started (recovered) yet.
    let r = http_get(addr, "/ready", &via).await.unwrap();
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["ready"], false);
    assert_eq!(v["conditions"]["storage_recovered"], false);
    assert_eq!(v["conditions"]["accepting_connections"], false);

    let b = broker::start(broker_config(data.path()), BrokerTls::load(certs.path()).unwrap()).await.unwrap();
    admin.broker_started(&b);
    let r = http_get(addr, "/ready", &via).await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"ready": true, "conditions": {"accepting_connections": true, "storage_recovered": true}})
    );

    // A condition added by another part of the broker (a cluster's registration) holds
    // readiness back until it is met.
    let registered = admin.readiness().condition("registered_with_metadata_store");
    assert_eq!(http_get(addr, "/ready", &via).await.unwrap().status, 503);
    registered.set(true);
    assert_eq!(http_get(addr, "/ready", &via).await.unwrap().status, 200);

    // Shutdown begins: no longer accepting connections.
    let stop = b.shutdown_sender();
    stop.send(true).unwrap();
    let r = poll_status(addr, "/ready", &via, 503).await;
    assert_eq!(r.status, 503, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["conditions"]["accepting_connections"], false);
    assert_eq!(v["conditions"]["storage_recovered"], true);
    b.wait().await;
    admin.shutdown().await;
}

#[tokio::test]
async fn https_refuses_clients_without_a_certificate_from_the_broker_ca() {
    let certs = Certs::new();
    let admin = Admin::new(admin_config(&certs)).start().await.unwrap();
    let addr = admin.local_addr();

    // TLS 1.3: the client's handshake completes before the server has checked its
    // certificate; the refusal arrives as an alert instead of the response.
    let refused = |r: Result<https::Reply, String>, alert: &str| match r {
        Err(e) => assert!(e.contains(alert), "expected a {alert} alert, got {e}"),
        Ok(r) => panic!("answered without an acceptable certificate: {r:?}"),
    };
    refused(http_get(addr, "/health", &Via::tls(certs.path(), None)).await, "CertificateRequired");
    refused(http_get(addr, "/health", &Via::tls(certs.path(), Some("mallory"))).await, "UnknownCA");
    refused(http_get(addr, "/health", &Via::tls(certs.path(), Some("old"))).await, "CertificateExpired");
    let plain = http_get(addr, "/health", &Via::Plain).await;
    assert!(plain.is_err(), "plain HTTP got an answer: {plain:?}");

    let ok = http_get(addr, "/health", &Via::tls(certs.path(), Some("alice"))).await.unwrap();
    assert_eq!(ok.status, 200);
    admin.shutdown().await;
}

async fn whoami(caller: Caller) -> String {
    format!("{} from {}", caller.principal.as_deref().unwrap_or("-"), caller.remote.ip())
}

async fn principal_only(p: Principal) -> String {
    p.to_string()
}

#[tokio::test]
async fn mounted_routers_get_the_callers_principal() {
    let certs = Certs::new();
    let early = Router::new().route("/whoami", get(whoami));
    let admin = Admin::new(admin_config(&certs)).merge(early).start().await.unwrap();
    let addr = admin.local_addr();
    // Mounted after start, under a prefix.
    admin.nest("/late", Router::new().route("/principal", get(principal_only)));

    let bob = Via::tls(certs.path(), Some("bob"));
    assert_eq!(http_get(addr, "/whoami", &bob).await.unwrap().body, "bob from 127.0.0.1");
    let carol = http_get(addr, "/late/principal", &Via::tls(certs.path(), Some("carol"))).await.unwrap();
    assert_eq!((carol.status, carol.body.as_str()), (200, "carol"));
    assert_eq!(http_get(addr, "/nothing", &bob).await.unwrap().status, 404);
    admin.shutdown().await;

    // Plaintext (loopback only): no principal; Principal answers 401.
    let plain = Admin::new(AdminConfig::new("127.0.0.1:0".parse().unwrap(), AdminTls::Plaintext))
        .merge(Router::new().route("/whoami", get(whoami)).route("/principal", get(principal_only)))
        .start()
        .await
        .unwrap();
    let addr = plain.local_addr();
    assert_eq!(http_get(addr, "/whoami", &Via::Plain).await.unwrap().body, "- from 127.0.0.1");
    assert_eq!(http_get(addr, "/principal", &Via::Plain).await.unwrap().status, 401);
    assert_eq!(http_get(addr, "/health", &Via::Plain).await.unwrap().status, 200);
    plain.shutdown().await;

    let refused = Admin::new(AdminConfig::new("0.0.0.0:0".parse().unwrap(), AdminTls::Plaintext)).start().await;
    assert!(matches!(refused, Err(AdminError::PlaintextNotLoopback(_))), "{refused:?}");
}

/// Parses an exposition strictly enough for the test: every line is a HELP, a TYPE or a
/// sample; every sample's family has HELP and TYPE. Returns the samples.
fn parse_exposition(text: &str) -> Vec<prometheus_parse::Sample> {
    use prometheus_parse::LineInfo;
    let (mut helped, mut typed) = (std::collections::HashSet::new(), std::collections::HashSet::new());
    for line in text.lines() {
        match LineInfo::parse(line) {
            LineInfo::Doc { metric_name, .. } => {
                helped.insert(metric_name.to_string());
            }
            LineInfo::Type { metric_alias, metric_name, .. } => {
                typed.insert(metric_alias.unwrap_or(metric_name));
            }
            LineInfo::Sample { metric_name, .. } => {
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| metric_name.strip_suffix(s).filter(|f| typed.contains(*f)))
                    .unwrap_or(metric_name);
                assert!(typed.contains(family) && helped.contains(family), "no HELP/TYPE before {line}");
            }
            LineInfo::Empty => {}
            LineInfo::Ignored => panic!("not Prometheus text: {line:?}"),
        }
    }
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap().samples
}

/// `name{label=value,...}` (labels sorted) → value; a histogram's value is its count.
fn values(samples: &[prometheus_parse::Sample]) -> HashMap<String, f64> {
    samples
        .iter()
        .filter_map(|s| {
            let v = match &s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => *v,
                prometheus_parse::Value::Histogram(b) => b.iter().find(|b| b.less_than.is_infinite())?.count,
                _ => return None,
            };
            let mut labels: Vec<_> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            Some((
                if labels.is_empty() { s.metric.clone() } else { format!("{}{{{}}}", s.metric, labels.join(",")) },
                v,
            ))
        })
        .collect()
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_count_exactly_what_was_produced() {
    let certs = Certs::new();
    let data = tempfile::tempdir().unwrap();
    let admin = Admin::new(admin_config(&certs)).start().await.unwrap();
    let via = Via::tls(certs.path(), Some("alice"));
    let addr = admin.local_addr();
    let b = broker::start(broker_config(data.path()), BrokerTls::load(certs.path()).unwrap()).await.unwrap();
    admin.broker_started(&b);
    let mut client = qwire::client::Client::connect(&certs.client(b.local_addr(), "alice")).await.unwrap();
    client.create_topic("orders", 2).await.unwrap();
    let (pid, epoch) = client.init_producer_id(-1, -1).await.unwrap();

    let scrape = || async {
        let r = http_get(addr, "/metrics", &via).await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.content_type.as_deref(), Some("text/plain; version=0.0.4; charset=utf-8"));
        values(&parse_exposition(&r.body))
    };
    let before = scrape().await;

    // Three batches (3, 5 and 7 records) on two partitions, an exact retry of the second
    // (answered from the dedup state), one acks=all batch and one to a partition that
    // does not exist.
    let batches = [
        (0, batch("a", 3, stamp(pid, epoch, 0), Compression::None)),
        (1, batch("b", 5, stamp(pid, epoch, 0), Compression::Lz4)),
        (0, batch("c", 7, stamp(pid, epoch, 3), Compression::None)),
    ];
    for (partition, bytes) in &batches {
        client.produce("orders", *partition, Acks::Leader, bytes.clone()).await.unwrap();
    }
    let retry = client.produce("orders", 1, Acks::Leader, batches[1].1.clone()).await.unwrap();
    assert!(retry.duplicate, "the retry is answered from the dedup state");
    assert_eq!(retry.base_offset, 0, "with the original offset");
    let durable = batch("d", 2, stamp(pid, epoch, 5), Compression::None);
    let r = client.produce("orders", 1, Acks::All, durable.clone()).await.unwrap();
    assert_eq!(r.error, qwire::protocol::ErrorCode::None);
    let missing =
        client.produce("orders", 7, Acks::Leader, batch("e", 1, stamp(pid, epoch, 0), Compression::None)).await;
    assert_eq!(missing.unwrap().error, qwire::protocol::ErrorCode::UnknownTopicOrPartition);
    let fetched = client.fetch("orders", 0, 0, 1 << 20).await.unwrap();
    let after = scrape().await;

    let delta = |name: &str| after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0);
    let p0 = |m: &str| format!("{m}{{partition=0,topic=orders}}");
    let p1 = |m: &str| format!("{m}{{partition=1,topic=orders}}");
    assert_eq!(delta("qwire_broker_produce_requests_total{acks=leader,error=NONE}"), 4.0);
    assert_eq!(delta("qwire_broker_produce_requests_total{acks=all,error=NONE}"), 1.0);
    assert_eq!(delta("qwire_broker_produce_requests_total{acks=leader,error=UNKNOWN_TOPIC_OR_PARTITION}"), 1.0);
    assert_eq!(delta(&p0("qwire_broker_batches_appended_total")), 2.0);
    assert_eq!(delta(&p1("qwire_broker_batches_appended_total")), 2.0);
    assert_eq!(delta(&p0("qwire_broker_records_appended_total")), 10.0);
    assert_eq!(delta(&p1("qwire_broker_records_appended_total")), 7.0);
    assert_eq!(delta(&p0("qwire_broker_appended_bytes_total")), (batches[0].1.len() + batches[2].1.len()) as f64);
    assert_eq!(delta(&p1("qwire_broker_appended_bytes_total")), (batches[1].1.len() + durable.len()) as f64);
    assert_eq!(delta(&p0("qwire_broker_duplicate_batches_total")), 0.0);
    assert_eq!(delta(&p1("qwire_broker_duplicate_batches_total")), 1.0);
    assert_eq!(delta(&p0("qwire_broker_fetch_bytes_total")), fetched.batches.len() as f64);
    assert!(!fetched.batches.is_empty());
    assert_eq!(after[&p0("qwire_broker_end_offset")], 10.0);
    assert_eq!(after[&p1("qwire_broker_end_offset")], 7.0);
    assert_eq!(after[&p1("qwire_broker_durable_end_offset")], 7.0, "the acks=all batch is durable");
    assert!(after[&p0("qwire_broker_log_size_bytes")] > 0.0);
    assert_eq!(after[&p0("qwire_broker_log_start_offset")], 0.0);
    // Histograms: one append per produce that reached its partition, one group-commit
    // wait (the acks=all batch), at least one fsync round.
    assert_eq!(delta("qwire_broker_append_latency_seconds"), 5.0);
    assert_eq!(delta("qwire_broker_group_commit_wait_seconds"), 1.0);
    assert!(after["qwire_broker_fsync_latency_seconds"] >= 1.0);
    assert_eq!(after["qwire_broker_producer_ids"], 1.0);
    assert_eq!(after["qwire_broker_topics"], 1.0);
    assert_eq!(after["qwire_broker_requests_in_flight"], 0.0);
    assert_eq!(after["qwire_broker_frame_reserved_bytes"], 0.0);
    assert!(after["qwire_broker_streams_open"] >= 1.0);
    assert_eq!(after["qwire_broker_connections_open"], 1.0);
    assert_eq!(after["qwire_broker_connections_accepted_total"], 1.0);
    for reason in ["connection_limit", "handshake_limit", "handshake_failed", "handshake_timeout"] {
        assert_eq!(after[&format!("qwire_broker_connections_refused_total{{reason={reason}}}")], 0.0);
    }
    assert_eq!(after[&format!("qwire_broker_build_info{{version={}}}", env!("CARGO_PKG_VERSION"))], 1.0);

    client.close();
    b.shutdown().await;
    admin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acks_all_request_is_in_flight_while_its_fsync_is_held() {
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    use std::sync::Arc;
    let certs = Certs::new();
    let data = tempfile::tempdir().unwrap();
    let hold = Arc::new(AtomicBool::new(false));
    let gate = hold.clone();
    let mut cfg = broker_config(data.path());
    cfg.syncer = qwire::broker::disk::Syncer::with_hook(move |_, kind| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while kind == qwire::broker::disk::SyncKind::Data && gate.load(SeqCst) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Ok(())
    });
    let admin = Admin::new(admin_config(&certs)).start().await.unwrap();
    let via = Via::tls(certs.path(), Some("alice"));
    let addr = admin.local_addr();
    let b = broker::start(cfg, BrokerTls::load(certs.path()).unwrap()).await.unwrap();
    admin.broker_started(&b);
    let mut client = qwire::client::Client::connect(&certs.client(b.local_addr(), "alice")).await.unwrap();
    client.create_topic("held", 1).await.unwrap();
    let scrape = || async { values(&parse_exposition(&http_get(addr, "/metrics", &via).await.unwrap().body)) };
    let until = |want: f64| async move {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let v = scrape().await;
            if v["qwire_broker_requests_in_flight"] == want || std::time::Instant::now() > deadline {
                return v;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };

    hold.store(true, SeqCst);
    let produce = tokio::spawn(async move {
        let r = client.produce("held", 0, Acks::All, batch("x", 4, stamp(-1, -1, -1), Compression::None)).await;
        (client, r)
    });
    let during = until(1.0).await;
    assert_eq!(during["qwire_broker_requests_in_flight"], 1.0, "the acks=all answer waits for its fsync");
    assert_eq!(during.get("qwire_broker_group_commit_wait_seconds").copied().unwrap_or(0.0), 0.0);
    assert_eq!(during["qwire_broker_end_offset{partition=0,topic=held}"], 4.0, "appended");
    assert_eq!(during["qwire_broker_durable_end_offset{partition=0,topic=held}"], 0.0, "not durable yet");

    hold.store(false, SeqCst);
    let (client, r) = produce.await.unwrap();
    assert_eq!(r.unwrap().error, qwire::protocol::ErrorCode::None);
    let after = until(0.0).await;
    assert_eq!(after["qwire_broker_requests_in_flight"], 0.0);
    assert_eq!(after["qwire_broker_group_commit_wait_seconds"], 1.0);
    assert_eq!(after["qwire_broker_durable_end_offset{partition=0,topic=held}"], 4.0);
    client.close();
    b.shutdown().await;
    admin.shutdown().await;
}
