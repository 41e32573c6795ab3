//! mTLS and ACL: what is refused, and that the refusal is explained.

mod common;

use common::*;
use qwire::client::Client;
use qwire::protocol::{Acks, Compression, ErrorCode, ProducerStamp};
use qwire::transport::{Refuser, TransportError};

#[tokio::test]
async fn a_client_without_a_certificate_is_refused_with_certificate_required() {
    let b = TestBroker::start().await;
    let mut cfg = b.client_config("alice");
    cfg.identity = None;
    let err = Client::connect(&cfg).await.unwrap_err();
    match &err {
        TransportError::TlsRejected { by: Refuser::Broker, alert: Some(116), .. } => {}
        other => panic!("unexpected: {other}"),
    }
    assert!(err.to_string().contains("requires a client certificate"), "{err}");
    assert!(b.handle.as_ref().unwrap().metrics().handshake_failures >= 1);
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_as_unknown_ca() {
    let b = TestBroker::start().await;
    let err = b.try_client("mallory").await.unwrap_err();
    assert!(matches!(err, TransportError::TlsRejected { by: Refuser::Broker, alert: Some(48), .. }), "{err}");
    assert!(err.to_string().contains("not signed by a CA the broker trusts"), "{err}");
}

#[tokio::test]
async fn an_expired_certificate_is_refused_as_expired() {
    let b = TestBroker::start().await;
    let err = b.try_client("old").await.unwrap_err();
    assert!(matches!(err, TransportError::TlsRejected { by: Refuser::Broker, alert: Some(45), .. }), "{err}");
    assert!(err.to_string().contains("expired"), "{err}");
}

#[tokio::test]
async fn a_broker_certificate_from_an_unknown_ca_is_refused_by_the_client() {
    let b = TestBroker::start().await;
    let other = Certs::new();
    let mut cfg = b.client_config("alice");
    cfg.ca = qwire::transport::certs::load_certs(&other.path().join("ca.crt")).unwrap();
    let err = Client::connect(&cfg).await.unwrap_err();
    assert!(matches!(err, TransportError::TlsRejected { by: Refuser::Client, .. }), "{err}");
}

#[tokio::test]
async fn the_acl_denies_with_an_authorization_error_and_the_connection_survives() {
    let acl = r#"
        [[allow]]
        principal = "alice"
        topics = ["orders*"]
        permissions = ["read", "write", "admin"]
        [[allow]]
        principal = "bob"
        topics = ["orders"]
        permissions = ["read"]
    "#;
    let acl_dir = tempfile::tempdir().unwrap();
    let acl_path = acl_dir.path().join("acl.toml");
    std::fs::write(&acl_path, acl).unwrap();
    let b = TestBroker::start_with(|c| c.acl_file = Some(acl_path.clone())).await;
    let mut alice = b.client("alice").await;
    alice.create_topic("orders", 1).await.unwrap();
    let r =
        alice.produce("orders", 0, Acks::Leader, batch("a", 1, ProducerStamp::NONE, Compression::None)).await.unwrap();
    assert_eq!(r.error, ErrorCode::None);

    let mut bob = b.client("bob").await;
    let r =
        bob.produce("orders", 0, Acks::Leader, batch("b", 1, ProducerStamp::NONE, Compression::None)).await.unwrap();
    assert_eq!(r.error, ErrorCode::AuthorizationFailed);
    assert!(r.message.contains("'bob' may not write topic 'orders'"), "{}", r.message);
    let e = bob.create_topic("orders-2", 1).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::AuthorizationFailed), "{e}");
    // Bob may read what he is allowed to, on the same connection.
    assert_eq!(values(&bob.fetch_all("orders", 0, 0).await.unwrap()), ["a-0"]);

    let mut carol = b.client("carol").await;
    let e = carol.fetch("orders", 0, 0, 1000).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::AuthorizationFailed));
    let md = carol.metadata(&[]).await.unwrap();
    assert!(md.topics.is_empty(), "carol sees no topics: {md:?}");
    assert!(b.handle.as_ref().unwrap().metrics().authorization_failures >= 3);
}

#[tokio::test]
async fn a_client_speaking_another_alpn_is_refused() {
    let b = TestBroker::start().await;
    let cfg = b.client_config("alice");
    let mut tls = qwire::transport::tls::client_tls(cfg.identity.as_ref(), &cfg.ca).unwrap();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let quic = qwire::transport::tls::quinn_client_config(tls, &cfg.tuning).unwrap();
    let ep = qwire::transport::ClientEndpoint::new("127.0.0.1:0".parse().unwrap(), quic, cfg.connect_timeout).unwrap();
    let err = ep.connect(b.addr(), "localhost", "x").await.unwrap_err();
    assert!(matches!(err, TransportError::TlsRejected { by: Refuser::Broker, alert: Some(120), .. }), "{err}");
}
