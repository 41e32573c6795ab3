//! SASL sessions against a real broker: re-authentication on a live connection with
//! records in flight, expiry without it, and a password-guessing flood throttled while an
//! authenticated client carries on.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::auth::*;
use common::*;
use qwire::auth::client::SaslCredentials;
use qwire::auth::scram::ScramHash;
use qwire::auth::token::{token_fn, TokenError};
use qwire::client::{Client, ConnectConfig};
use qwire::protocol::frame::Produce;
use qwire::protocol::{Acks, Compression, ErrorCode, Frame, Payload, ProducerStamp};
use qwire::transport::TransportError;

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

fn sasl_config(b: &TestBroker, creds: SaslCredentials) -> ConnectConfig {
    ConnectConfig::with_sasl(b.addr(), &b.certs.path().join("ca.crt"), creds).unwrap()
}

/// Tokens for `sub` that live `ttl`, freshly signed at each call; counts the calls.
fn fresh_tokens(files: &Arc<AuthFiles>, sub: &'static str, ttl: Duration) -> (SaslCredentials, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let (f, c) = (files.clone(), calls.clone());
    let provider = token_fn(move || {
        c.fetch_add(1, Ordering::SeqCst);
        let t = f.token(sub, ttl);
        async move { Ok(t) }
    });
    (SaslCredentials::token(provider), calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_reauthenticates_on_the_live_connection_with_records_in_flight() {
    let (b, files) = sasl_broker(|_| {}).await;
    let (creds, calls) = fresh_tokens(&files, "svc-a", Duration::from_secs(4));
    let c = Client::connect(&sasl_config(&b, creds)).await.unwrap();
    let lifetime = c.connection().sasl_session().unwrap().lifetime.unwrap();
    assert!(lifetime <= Duration::from_secs(4), "{lifetime:?}");
    // Pipelined produces on a data stream, for well past two session lifetimes: at every
    // re-authentication some are in flight.
    let stream = c.open_stream().await.unwrap();
    let (mut w, mut r) = stream.split();
    let batches = 400usize;
    let writer = tokio::spawn(async move {
        for i in 0..batches {
            let batch = batch(&format!("b{i}"), 5, ProducerStamp::NONE, Compression::None);
            let p =
                Payload::Produce(Produce { topic: "t".into(), partition: 0, acks: Acks::All, timeout_ms: 0, batch });
            w.send(&Frame { correlation_id: i as u32 + 1, payload: p }).await.unwrap();
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        w
    });
    let mut acked = 0;
    while acked < batches {
        let f = tokio::time::timeout(Duration::from_secs(30), r.recv()).await.unwrap().unwrap().unwrap();
        match f.payload {
            Payload::ProduceResult(pr) => assert_eq!(pr.error, ErrorCode::None, "batch {}", f.correlation_id),
            other => panic!("{other:?}"),
        }
        acked += 1;
    }
    writer.await.unwrap();
    let m = b.handle.as_ref().unwrap().metrics();
    assert!(m.sasl_reauthentications >= 1, "{m:?}");
    assert_eq!((m.sasl_sessions_expired, m.sasl_failures), (0, 0));
    assert!(calls.load(Ordering::SeqCst) >= 2, "a fresh token for each re-authentication");
    assert!(c.connection().quinn().close_reason().is_none(), "the connection lived through it");
    let mut reader = b.client("alice").await;
    let stored = reader.fetch_all("t", 0, 0).await.unwrap();
    assert_eq!(stored.len(), batches * 5, "every record once");
    let want: Vec<String> = (0..batches).flat_map(|i| (0..5).map(move |j| format!("b{i}-{j}"))).collect();
    assert_eq!(values(&stored), want, "every record once, in order");
}

#[tokio::test]
async fn a_session_that_is_not_reauthenticated_is_closed_at_its_expiry() {
    let (b, files) = sasl_broker(|_| {}).await;
    // One good token, then the provider fails: re-authentication cannot happen.
    let calls = Arc::new(AtomicU32::new(0));
    let (f, c) = (files.clone(), calls.clone());
    let provider = token_fn(move || {
        let first = c.fetch_add(1, Ordering::SeqCst) == 0;
        let t = f.token("svc-b", Duration::from_secs(2));
        async move {
            if first {
                Ok(t)
            } else {
                Err(TokenError("identity provider unreachable".into()))
            }
        }
    });
    let client = Client::connect(&sasl_config(&b, SaslCredentials::token(provider))).await.unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(20), client.connection().quinn().closed()).await.unwrap();
    match reason {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(u64::from(close.error_code), 55);
            assert_eq!(&close.reason[..], b"authentication session expired");
        }
        other => panic!("{other:?}"),
    }
    assert!(calls.load(Ordering::SeqCst) >= 2, "re-authentication was attempted");
    assert_eq!(b.handle.as_ref().unwrap().metrics().sasl_sessions_expired, 1);
}

#[tokio::test]
async fn max_session_applies_to_scram_and_scram_reauthenticates() {
    let (b, _files) = sasl_broker(|c| c.auth.max_session_secs = Some(2)).await;
    let creds = SaslCredentials::scram(ScramHash::Sha512, "bob", BOB_PASSWORD);
    let mut c = Client::connect(&sasl_config(&b, creds)).await.unwrap();
    assert_eq!(c.connection().sasl_session().unwrap().lifetime, Some(Duration::from_secs(2)));
    let deadline = Instant::now() + Duration::from_secs(30);
    while b.handle.as_ref().unwrap().metrics().sasl_reauthentications < 2 {
        assert!(Instant::now() < deadline, "no re-authentication");
        assert_eq!(produce(&mut c).await, ErrorCode::None);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(c.connection().quinn().close_reason().is_none());
}

async fn produce(c: &mut Client) -> ErrorCode {
    let batch = batch("v", 2, ProducerStamp::NONE, Compression::None);
    c.produce("flood", 0, Acks::All, batch).await.unwrap().error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_flood_is_throttled_and_an_authenticated_client_carries_on() {
    let (b, _files) = sasl_broker(|c| {
        c.auth.failure_burst = 5;
        c.auth.failure_refill_ms = 600_000;
    })
    .await;
    let mut alice =
        Client::connect(&sasl_config(&b, SaslCredentials::scram(ScramHash::Sha256, "alice", ALICE_PASSWORD)))
            .await
            .unwrap();
    let flood_cfg = sasl_config(&b, SaslCredentials::plain("alice", "guess"));
    let flood = tokio::spawn(async move {
        let (mut failed, mut throttled) = (0, 0);
        for i in 0..40 {
            let creds = if i % 2 == 0 {
                SaslCredentials::plain("alice", format!("guess-{i}").as_str())
            } else {
                SaslCredentials::scram(ScramHash::Sha256, "alice", format!("guess-{i}").as_str())
            };
            match Client::connect(&ConnectConfig { sasl: Some(creds), ..flood_cfg.clone() }).await {
                Err(TransportError::Broker { code: ErrorCode::AuthenticationFailed, .. }) => failed += 1,
                Err(TransportError::Broker { code: ErrorCode::AuthenticationThrottled, .. }) => throttled += 1,
                other => panic!("{other:?}"),
            }
        }
        (failed, throttled)
    });
    // Meanwhile the authenticated client's records all land.
    for _ in 0..100 {
        assert_eq!(produce(&mut alice).await, ErrorCode::None);
    }
    let (failed, throttled) = flood.await.unwrap();
    assert_eq!((failed, throttled), (5, 35), "five failures allowed, then every attempt refused unchecked");
    // Even the right password is refused from that address now (it is not even checked).
    let e = Client::connect(&sasl_config(&b, SaslCredentials::plain("alice", ALICE_PASSWORD))).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::AuthenticationThrottled));
    assert!(e.is_retriable());
    let m = b.handle.as_ref().unwrap().metrics();
    assert_eq!((m.sasl_failures, m.sasl_throttled), (5, 36));
    let mut reader = b.client("bob").await;
    assert_eq!(reader.fetch_all("flood", 0, 0).await.unwrap().len(), 200);
}
