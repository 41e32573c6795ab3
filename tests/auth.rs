//! Authentication against a real broker (in-process, QUIC on 127.0.0.1): each SASL
//! mechanism, every refusal a client can meet, the certificate-and-SASL rule, the ACL
//! for SASL principals, and `required` mode refusing certificate-less clients.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::auth::*;
use common::*;
use qwire::auth::client::{SaslCredentials, SaslError};
use qwire::auth::scram::{ScramClient, ScramHash};
use qwire::auth::token::StaticToken;
use qwire::auth::Secret;
use qwire::client::{Client, ConnectConfig};
use qwire::protocol::frame::{Metadata, Produce};
use qwire::protocol::sasl::{SaslContinue, SaslPayload, SaslStart, SaslStep};
use qwire::protocol::{Acks, Compression, ErrorCode, Payload, ProducerStamp};
use qwire::transport::{BrokerConnection, FrameStream, TransportError};
use serde_json::json;

async fn sasl_broker(tweak: impl FnOnce(&mut qwire::broker::BrokerConfig)) -> (TestBroker, AuthFiles) {
    let files = AuthFiles::new();
    let config = files.config();
    let b = TestBroker::start_with(|c| {
        c.auth = config;
        tweak(c);
    })
    .await;
    (b, files)
}

fn sasl_config(b: &TestBroker, creds: SaslCredentials) -> ConnectConfig {
    ConnectConfig::with_sasl(b.addr(), &b.certs.path().join("ca.crt"), creds).unwrap()
}

fn token(t: Secret) -> SaslCredentials {
    SaslCredentials::token(Arc::new(StaticToken(t)))
}

/// A connection without a certificate that has done `Hello` and nothing else.
async fn bare_connection(b: &TestBroker) -> BrokerConnection {
    let cfg = ConnectConfig { sasl: None, ..sasl_config(b, SaslCredentials::plain("x", "y")) };
    cfg.endpoint().unwrap().connect(cfg.addr, &cfg.server_name, "bare").await.unwrap()
}

#[track_caller]
fn refused(r: Result<Client, TransportError>, code: ErrorCode) -> String {
    match r {
        Err(TransportError::Broker { code: c, message, .. }) if c == code => message,
        Err(e) => panic!("expected {code}, got {e}"),
        Ok(_) => panic!("expected {code}, the connection was accepted"),
    }
}

#[tokio::test]
async fn every_mechanism_authenticates_and_its_principal_produces() {
    let (b, files) = sasl_broker(|_| {}).await;
    let cases = [
        (SaslCredentials::scram(ScramHash::Sha256, "alice", ALICE_PASSWORD), "alice"),
        (SaslCredentials::scram(ScramHash::Sha512, "bob", BOB_PASSWORD), "bob"),
        (SaslCredentials::plain("alice", ALICE_PASSWORD), "alice"),
        (SaslCredentials::plain("bob", BOB_PASSWORD), "bob"),
        (token(files.token("svc-orders", Duration::from_secs(600))), "svc-orders"),
    ];
    for (i, (creds, principal)) in cases.into_iter().enumerate() {
        let mechanism = creds.mechanism();
        let mut c = Client::connect(&sasl_config(&b, creds)).await.unwrap_or_else(|e| panic!("{mechanism}: {e}"));
        assert_eq!(c.principal(), principal);
        let r = c.produce("t", 0, Acks::All, batch(&format!("m{i}"), 3, ProducerStamp::NONE, Compression::None)).await;
        assert_eq!(r.unwrap().error, ErrorCode::None, "{mechanism}");
        c.close();
    }
    let mut c = b.client("alice").await;
    assert_eq!(c.fetch_all("t", 0, 0).await.unwrap().len(), 15);
    let m = b.handle.as_ref().unwrap().metrics();
    assert_eq!((m.sasl_authentications, m.sasl_failures), (5, 0));
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_user_get_the_same_answer() {
    let (b, files) = sasl_broker(|_| {}).await;
    let mut answers = Vec::new();
    for creds in [
        SaslCredentials::scram(ScramHash::Sha256, "alice", BOB_PASSWORD),
        SaslCredentials::scram(ScramHash::Sha256, "nobody", ALICE_PASSWORD),
        SaslCredentials::scram(ScramHash::Sha512, "bob", ALICE_PASSWORD),
        SaslCredentials::scram(ScramHash::Sha512, "nobody", BOB_PASSWORD),
        // bob has no SCRAM-SHA-256 credential: like an unknown user.
        SaslCredentials::scram(ScramHash::Sha256, "bob", BOB_PASSWORD),
        SaslCredentials::plain("alice", BOB_PASSWORD),
        SaslCredentials::plain("nobody", ALICE_PASSWORD),
    ] {
        answers.push(refused(Client::connect(&sasl_config(&b, creds)).await, ErrorCode::AuthenticationFailed));
    }
    assert!(answers.iter().all(|a| a == "authentication failed"), "{answers:?}");
    // The users still log in with the right passwords.
    Client::connect(&sasl_config(&b, SaslCredentials::plain("alice", ALICE_PASSWORD))).await.unwrap();
    drop(files);
    assert_eq!(b.handle.as_ref().unwrap().metrics().sasl_failures, 7);
}

#[tokio::test]
async fn every_bad_token_is_refused_with_the_same_answer() {
    let (b, files) = sasl_broker(|_| {}).await;
    let hour = Duration::from_secs(3600);
    let other_issuer = AuthFiles::new();
    let now = now_s();
    let jwk = std::fs::read(&files.jwks).unwrap();
    let bad = [
        ("expired", files.token_with("svc", hour, ISSUER, AUDIENCE, &[("exp", json!(now - 120))])),
        ("not yet valid", files.token_with("svc", hour, ISSUER, AUDIENCE, &[("nbf", json!(now + 600))])),
        ("wrong audience", files.token_with("svc", hour, ISSUER, "someone-else", &[])),
        ("wrong issuer", files.token_with("svc", hour, "https://evil.test", AUDIENCE, &[])),
        ("signed by a key not in the JWKS", other_issuer.token("svc", hour)),
        ("alg none", raw_token(json!({"alg": "none", "typ": "JWT"}), valid_claims("svc"), None)),
        ("HS256 keyed with the public JWKS", raw_token(json!({"alg": "HS256"}), valid_claims("svc"), Some(&jwk))),
        ("no principal claim", files.token_with("svc", hour, ISSUER, AUDIENCE, &[("sub", json!(""))])),
    ];
    for (what, t) in bad {
        let message = refused(Client::connect(&sasl_config(&b, token(t))).await, ErrorCode::AuthenticationFailed);
        assert_eq!(message, "authentication failed", "{what}");
    }
    Client::connect(&sasl_config(&b, token(files.token("svc", hour)))).await.unwrap();
}

/// SCRAM by hand on a raw stream, to replay messages.
async fn scram_start(stream: &mut FrameStream, first: &str) -> Result<SaslStep, TransportError> {
    let start = SaslStart { mechanism: "SCRAM-SHA-256".into(), data: Bytes::from(first.to_owned()) };
    match stream.call(Payload::Sasl(SaslPayload::Start(start))).await? {
        Payload::Sasl(SaslPayload::StartOk(s)) => Ok(s),
        other => panic!("unexpected {other:?}"),
    }
}

async fn scram_continue(stream: &mut FrameStream, last: &str) -> Result<SaslStep, TransportError> {
    let cont = SaslContinue { data: Bytes::from(last.to_owned()) };
    match stream.call(Payload::Sasl(SaslPayload::Continue(cont))).await? {
        Payload::Sasl(SaslPayload::ContinueOk(s)) => Ok(s),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn a_replayed_scram_final_message_is_refused() {
    let (b, _files) = sasl_broker(|_| {}).await;
    // A genuine exchange, recorded.
    let mut conn = bare_connection(&b).await;
    let mut client = ScramClient::new(ScramHash::Sha256, "alice", ALICE_PASSWORD).unwrap();
    let first = client.client_first();
    let server_first = scram_start(conn.control(), &first).await.unwrap();
    let last = client.handle_server_first(&server_first.data).unwrap();
    let done = scram_continue(conn.control(), &last).await.unwrap();
    client.handle_server_final(&done.data).unwrap();
    assert_eq!((done.complete, done.principal.as_str()), (true, "alice"));
    // The same final message again on that connection: no exchange is in progress.
    let e = scram_continue(conn.control(), &last).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::IllegalSaslState));
    // Both recorded messages replayed on a new connection: the broker's new nonce is not
    // in the old final message.
    let mut replay = bare_connection(&b).await;
    let fresh = scram_start(replay.control(), &first).await.unwrap();
    assert_ne!(fresh.data, server_first.data, "a fresh server nonce");
    let e = scram_continue(replay.control(), &last).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::AuthenticationFailed));
    // And that connection is still not authenticated.
    let e = replay.control().call(Payload::Metadata(Metadata { topics: vec![] })).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::AuthenticationRequired));
}

#[tokio::test]
async fn nothing_but_hello_and_sasl_is_served_before_authentication() {
    let (b, _files) = sasl_broker(|_| {}).await;
    let mut conn = bare_connection(&b).await;
    assert_eq!(conn.hello().principal, "", "HelloOk names no principal: authenticate");
    let e = conn.control().call(Payload::Metadata(Metadata { topics: vec![] })).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::AuthenticationRequired));
    let produce = Payload::Produce(Produce {
        topic: "t".into(),
        partition: 0,
        acks: Acks::All,
        timeout_ms: 0,
        batch: batch("x", 1, ProducerStamp::NONE, Compression::None),
    });
    match conn.control().call(produce.clone()).await.unwrap() {
        Payload::ProduceResult(r) => assert_eq!(r.error, ErrorCode::AuthenticationRequired),
        other => panic!("{other:?}"),
    }
    // Another stream of the same connection is no different.
    let mut other = conn.open_stream().await.unwrap();
    let e = other.call(Payload::Metadata(Metadata { topics: vec![] })).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::AuthenticationRequired));
    // Authenticated, the same requests are served.
    conn.authenticate(Some(&SaslCredentials::plain("bob", BOB_PASSWORD))).await.unwrap();
    assert_eq!(conn.hello().principal, "bob");
    match conn.control().call(produce).await.unwrap() {
        Payload::ProduceResult(r) => assert_eq!(r.error, ErrorCode::None),
        other => panic!("{other:?}"),
    }
    other.call(Payload::Metadata(Metadata { topics: vec![] })).await.unwrap();
    let mut c = b.client("alice").await;
    assert_eq!(values(&c.fetch_all("t", 0, 0).await.unwrap()), ["x-0"], "the refused produce stored nothing");
    assert_eq!(b.handle.as_ref().unwrap().metrics().sasl_unauthenticated_requests, 3);
}

#[tokio::test]
async fn a_connection_that_does_not_authenticate_in_time_is_closed() {
    let (b, _files) = sasl_broker(|c| c.auth.auth_timeout_ms = 300).await;
    let conn = bare_connection(&b).await;
    let reason = tokio::time::timeout(Duration::from_secs(10), conn.quinn().closed()).await.unwrap();
    match reason {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(u64::from(close.error_code), 52);
            assert_eq!(&close.reason[..], b"authentication required");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(b.handle.as_ref().unwrap().metrics().sasl_deadline_closes, 1);
    // An authenticated connection is not closed by the deadline.
    let c = Client::connect(&sasl_config(&b, SaslCredentials::plain("bob", BOB_PASSWORD))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(c.connection().quinn().close_reason().is_none());
}

#[tokio::test]
async fn a_certificate_wins_over_sasl() {
    let (b, _files) = sasl_broker(|_| {}).await;
    // The library refuses to be configured with both.
    let both = ConnectConfig { sasl: Some(SaslCredentials::plain("bob", BOB_PASSWORD)), ..b.client_config("alice") };
    match Client::connect(&both).await {
        Err(TransportError::Sasl { source: SaslError::InvalidCredentials(m), .. }) => {
            assert!(m.contains("both configured"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    // A client with a certificate that sends SASL anyway: refused, and still alice.
    let mut conn = b.client("alice").await;
    let start = SaslStart { mechanism: "PLAIN".into(), data: Bytes::from(format!("\0bob\0{BOB_PASSWORD}")) };
    let mut stream = conn.open_stream().await.unwrap();
    let e = stream.call(Payload::Sasl(SaslPayload::Start(start))).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::IllegalSaslState));
    assert_eq!(conn.principal(), "alice");
    let r = conn.produce("t", 0, Acks::All, batch("c", 1, ProducerStamp::NONE, Compression::None)).await.unwrap();
    assert_eq!(r.error, ErrorCode::None);
    // A SASL client without credentials is told what is missing.
    let none = ConnectConfig { sasl: None, ..sasl_config(&b, SaslCredentials::plain("x", "y")) };
    match Client::connect(&none).await {
        Err(TransportError::Sasl { source: SaslError::Required, .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn required_mode_refuses_every_certificate_less_client() {
    let files = AuthFiles::new();
    let b = TestBroker::start().await;
    for creds in [
        SaslCredentials::plain("alice", ALICE_PASSWORD),
        SaslCredentials::scram(ScramHash::Sha256, "alice", ALICE_PASSWORD),
        SaslCredentials::scram(ScramHash::Sha512, "bob", BOB_PASSWORD),
        token(files.token("svc", Duration::from_secs(600))),
    ] {
        match Client::connect(&sasl_config(&b, creds)).await {
            Err(TransportError::TlsRejected { alert: Some(116), .. }) => {}
            Err(e) => panic!("expected certificate_required, got {e}"),
            Ok(_) => panic!("a certificate-less client was let in"),
        }
    }
    // And a broker cannot be started with SASL credentials but certificates required.
    let mut cfg = files.config();
    cfg.client_auth = qwire::broker::ClientAuth::Required;
    let err = qwire::broker::start(
        qwire::broker::BrokerConfig { auth: cfg, listen: "127.0.0.1:0".parse().unwrap(), ..b.config.clone() },
        qwire::broker::BrokerTls::load(b.certs.path()).unwrap(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("needs client auth 'optional'"), "{err}");
}

async fn produce(c: &mut Client, topic: &str) -> ErrorCode {
    let batch = batch("v", 1, ProducerStamp::NONE, Compression::None);
    c.produce(topic, 0, Acks::All, batch).await.unwrap().error
}

#[tokio::test]
async fn the_acl_sees_sasl_principals_by_name() {
    let acl_dir = tempfile::tempdir().unwrap();
    let acl = acl_dir.path().join("acl.toml");
    std::fs::write(
        &acl,
        "[[allow]]\nprincipal = \"alice\"\ntopics = [\"orders\"]\npermissions = [\"write\", \"read\"]\n\n\
         [[allow]]\nprincipal = \"svc-reports\"\ntopics = [\"reports\"]\npermissions = [\"write\"]\n",
    )
    .unwrap();
    let (b, files) = sasl_broker(|c| c.acl_file = Some(acl.clone())).await;
    // alice by SCRAM, PLAIN and certificate: the same rule applies.
    let mut scram =
        Client::connect(&sasl_config(&b, SaslCredentials::scram(ScramHash::Sha512, "alice", ALICE_PASSWORD)))
            .await
            .unwrap();
    let mut plain = Client::connect(&sasl_config(&b, SaslCredentials::plain("alice", ALICE_PASSWORD))).await.unwrap();
    let mut cert = b.client("alice").await;
    for c in [&mut scram, &mut plain, &mut cert] {
        assert_eq!(produce(c, "orders").await, ErrorCode::None);
        assert_eq!(produce(c, "reports").await, ErrorCode::AuthorizationFailed);
    }
    // bob (SCRAM) has no rule; the token principal only its own topic.
    let mut bob = Client::connect(&sasl_config(&b, SaslCredentials::plain("bob", BOB_PASSWORD))).await.unwrap();
    assert_eq!(produce(&mut bob, "orders").await, ErrorCode::AuthorizationFailed);
    let mut svc =
        Client::connect(&sasl_config(&b, token(files.token("svc-reports", Duration::from_secs(600))))).await.unwrap();
    assert_eq!(produce(&mut svc, "reports").await, ErrorCode::None);
    assert_eq!(produce(&mut svc, "orders").await, ErrorCode::AuthorizationFailed);
    assert_eq!(b.handle.as_ref().unwrap().metrics().authorization_failures, 5);
}

#[tokio::test]
async fn reloaded_credentials_apply_to_new_logins_and_a_bad_file_changes_nothing() {
    let (b, files) = sasl_broker(|_| {}).await;
    let carol = || sasl_config(&b, SaslCredentials::scram(ScramHash::Sha256, "carol", "carol-pw-1234"));
    refused(Client::connect(&carol()).await, ErrorCode::AuthenticationFailed);
    let established = Client::connect(&sasl_config(&b, SaslCredentials::plain("bob", BOB_PASSWORD))).await.unwrap();
    files.add_user("carol", "carol-pw-1234");
    let reloader = b.handle.as_ref().unwrap().credentials();
    assert_eq!(reloader.reload().unwrap(), "3 users, 1 JWKS keys");
    Client::connect(&carol()).await.unwrap();
    // A users file that no longer parses: refused, the previous users stay in force.
    std::fs::write(&files.users, "[[user]]\nname = \"carol\"\npassword = \"oops\"\n").unwrap();
    let e = reloader.reload().unwrap_err();
    assert!(e.contains("password"), "{e}");
    Client::connect(&carol()).await.unwrap();
    assert!(established.connection().quinn().close_reason().is_none(), "an established session is not cut");
}

/// Review finding: in `optional` mode a peer that completes TLS without a certificate and
/// never authenticates held a connection slot until the 10 s deadline; ~100 such
/// handshakes a second from one host kept all 1024 slots taken. Now at most
/// `max_unauthenticated_per_source` of them wait from one address; more are closed at once
/// with code 54, and a connection leaves the count when it authenticates.
#[tokio::test]
async fn connections_waiting_to_authenticate_are_bounded_per_source_address() {
    let (b, _files) = sasl_broker(|c| c.auth.max_unauthenticated_per_source = 3).await;
    let refused_count = || b.handle.as_ref().unwrap().metrics().sasl_unauthenticated_refused;
    let waiting = [bare_connection(&b).await, bare_connection(&b).await, bare_connection(&b).await];
    // A fourth from the same address is closed right after its handshake.
    let cfg = ConnectConfig { sasl: None, ..sasl_config(&b, SaslCredentials::plain("x", "y")) };
    let fourth = cfg.endpoint().unwrap().connect(cfg.addr, &cfg.server_name, "bare").await;
    if let Ok(c) = fourth {
        match tokio::time::timeout(Duration::from_secs(10), c.quinn().closed()).await.unwrap() {
            quinn::ConnectionError::ApplicationClosed(close) => assert_eq!(u64::from(close.error_code), 54),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(refused_count(), 1);
    // So is a SASL client from that address while three are waiting...
    assert!(Client::connect(&sasl_config(&b, SaslCredentials::plain("bob", BOB_PASSWORD))).await.is_err());
    assert_eq!(refused_count(), 2);
    // ...but a certificate client is not counted at all.
    let mut cert = b.client("alice").await;
    cert.create_topic("t", 1).await.unwrap();
    // One of the waiting ones leaves: a SASL client gets in, and once authenticated it no
    // longer counts, so another connection may wait.
    let [w1, w2, w3] = waiting;
    w1.quinn().close(0u8.into(), b"bye");
    drop(w1);
    let bob = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match Client::connect(&sasl_config(&b, SaslCredentials::plain("bob", BOB_PASSWORD))).await {
                Ok(c) => break c,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await
    .expect("a place freed by a closed connection");
    let w4 = bare_connection(&b).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(w4.quinn().close_reason().is_none(), "the authenticated client still counted");
    assert!(bob.connection().quinn().close_reason().is_none());
    drop((w2, w3, w4));
}
