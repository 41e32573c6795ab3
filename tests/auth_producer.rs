//! The producer engine with SASL instead of a client certificate, against a real broker:
//! re-authentication and session expiry with records in flight (every record read back:
//! none lost, none duplicated, in order), refused credentials, the ACL, and the builder's
//! checks.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::auth::*;
use common::*;
use qwire::auth::token::{token_fn, TokenError};
use qwire::producer::{ErrorKind, Persistence, Producer, ProducerBuilder, ProducerRecord, TlsConfig};
use qwire::protocol::ErrorCode;

async fn sasl_broker(tweak: impl FnOnce(&mut qwire::broker::BrokerConfig)) -> (TestBroker, Arc<AuthFiles>) {
    let files = AuthFiles::new();
    let config = files.config();
    let b = TestBroker::start_with(|c| {
        c.auth = config;
        tweak(c);
    })
    .await;
    (b, Arc::new(files))
}

/// A producer without a certificate: the broker's CA only.
fn sasl_producer(b: &TestBroker) -> ProducerBuilder {
    Producer::builder()
        .bootstrap(b.addr().to_string())
        .tls(TlsConfig::ca_file(&b.certs.path().join("ca.crt")).unwrap())
        .max_block(Duration::from_secs(10))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_reauthenticates_with_records_in_flight_and_loses_nothing() {
    let (b, files) = sasl_broker(|_| {}).await;
    let calls = Arc::new(AtomicU32::new(0));
    let (f, c) = (files.clone(), calls.clone());
    let provider = token_fn(move || {
        c.fetch_add(1, Ordering::SeqCst);
        let t = f.token("svc-writer", Duration::from_secs(4));
        async move { Ok(t) }
    });
    b.client("alice").await.create_topic("reauth", 3).await.unwrap();
    let p = sasl_producer(&b).token_provider(provider).max_in_flight(5).batch_size(2048).build().unwrap();
    let mut ledger = Ledger::new("reauth", 3);
    ledger.produce(&p, 6000, Duration::from_secs(10), 40).await;
    p.close(Duration::from_secs(10)).await.unwrap();
    let mut reader = b.client("alice").await;
    let v = ledger.verify(&mut reader).await;
    v.assert_exactly_once();
    assert_eq!(v.acked, 6000, "{:?}", ledger.failures(5));
    let m = b.handle.as_ref().unwrap().metrics();
    assert!(m.sasl_reauthentications >= 1, "{m:?}");
    assert_eq!(m.sasl_sessions_expired, 0, "re-authenticated in time: no connection was cut");
    assert!(calls.load(Ordering::SeqCst) >= 2, "a fresh token for each re-authentication");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_is_cut_and_the_producer_reconnects_without_loss_or_duplicates() {
    let (b, files) = sasl_broker(|_| {}).await;
    // The identity provider goes away for a while: re-authentication fails, the broker
    // closes the connection at the session's end, and the producer reconnects once tokens
    // come again, resending what was in flight (idempotence answers the duplicates).
    let down = Arc::new(AtomicBool::new(false));
    let (f, d) = (files.clone(), down.clone());
    let provider = token_fn(move || {
        let t = f.token("svc-writer", Duration::from_secs(2));
        let down = d.load(Ordering::SeqCst);
        async move {
            if down {
                Err(TokenError("identity provider unreachable".into()))
            } else {
                Ok(t)
            }
        }
    });
    b.client("alice").await.create_topic("expiry", 2).await.unwrap();
    let p = sasl_producer(&b).token_provider(provider).max_in_flight(5).batch_size(2048).build().unwrap();
    p.send(ProducerRecord::new("expiry", "first").partition(0)).await.unwrap();
    down.store(true, Ordering::SeqCst);
    let metrics = b.handle.as_ref().unwrap().live_metrics();
    let d = down.clone();
    let outage = tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(30);
        while metrics.snapshot().sasl_sessions_expired == 0 {
            assert!(Instant::now() < deadline, "the session never expired");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        d.store(false, Ordering::SeqCst);
    });
    let mut ledger = Ledger::new("expiry", 2);
    ledger.produce(&p, 4000, Duration::from_secs(6), 40).await;
    outage.await.unwrap();
    p.close(Duration::from_secs(10)).await.unwrap();
    let m = b.handle.as_ref().unwrap().metrics();
    assert!(m.sasl_sessions_expired >= 1 && m.sasl_authentications >= 2, "{m:?}");
    // Partition 0 holds the "first" record too: verify the ledger's own topic only.
    let mut reader = b.client("alice").await;
    let v = ledger.verify(&mut reader).await;
    assert_eq!(v.phantom, 1, "only the record sent before the ledger: {v:?}");
    assert_eq!((v.lost, v.duplicates, v.out_of_order, v.wrong_status, v.unresolved), (0, 0, 0, 0, 0), "{v:#?}");
    assert_eq!(v.acked, 4000, "{:?}", ledger.failures(5));
}

#[tokio::test]
async fn refused_credentials_fail_the_records_at_once_with_the_broker_answer() {
    let (b, _files) = sasl_broker(|_| {}).await;
    let p = sasl_producer(&b).sasl_scram_sha512("bob", "not-bobs-password").build().unwrap();
    let e = p.send(ProducerRecord::new("t", "v")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Broker(ErrorCode::AuthenticationFailed), "{e}");
    assert_eq!(e.persistence(), Persistence::NotPersisted);
    let _ = p.close(Duration::from_secs(5)).await;
    // The right password works, with each mechanism.
    for builder in [
        sasl_producer(&b).sasl_scram_sha512("bob", BOB_PASSWORD),
        sasl_producer(&b).sasl_scram_sha256("alice", ALICE_PASSWORD),
        sasl_producer(&b).sasl_plain("alice", ALICE_PASSWORD),
    ] {
        let p = builder.build().unwrap();
        p.send(ProducerRecord::new("t", "v")).await.unwrap();
        p.close(Duration::from_secs(5)).await.unwrap();
    }
}

#[tokio::test]
async fn the_acl_applies_to_a_producer_authenticated_with_sasl() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl.toml");
    std::fs::write(&acl, "[[allow]]\nprincipal = \"alice\"\ntopics = [\"orders\"]\npermissions = [\"write\"]\n")
        .unwrap();
    let (b, _files) = sasl_broker(|c| c.acl_file = Some(acl.clone())).await;
    let alice = sasl_producer(&b).sasl_scram_sha256("alice", ALICE_PASSWORD).build().unwrap();
    alice.send(ProducerRecord::new("orders", "ok")).await.unwrap();
    let e = alice.send(ProducerRecord::new("payments", "no")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Broker(ErrorCode::AuthorizationFailed), "{e}");
    // bob may write nowhere: not even a producer id.
    let bob = sasl_producer(&b).sasl_plain("bob", BOB_PASSWORD).build().unwrap();
    let e = bob.send(ProducerRecord::new("orders", "no")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Broker(ErrorCode::AuthorizationFailed), "{e}");
    let _ = alice.close(Duration::from_secs(5)).await;
    let _ = bob.close(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn the_builder_wants_a_certificate_or_sasl_but_not_both() {
    let (b, _files) = sasl_broker(|_| {}).await;
    let neither = sasl_producer(&b).build().unwrap_err();
    assert_eq!(neither.kind(), ErrorKind::Config);
    assert!(neither.to_string().contains("no client certificate and no SASL credentials"), "{neither}");
    let both = producer(&b, "alice").sasl_plain("alice", ALICE_PASSWORD).build().unwrap_err();
    assert!(both.to_string().contains("both configured"), "{both}");
    let bad_user = sasl_producer(&b).sasl_plain("", "pw").build().unwrap_err();
    assert_eq!(bad_user.kind(), ErrorKind::Config);
}
