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

// ---------------------------------------------------------------------------------------
// Producer ids: only issued ids, only by their principal, only at their current epoch
// ---------------------------------------------------------------------------------------

/// A broker whose ACL lets alice and carol write (carol only `other`) and bob only read.
async fn broker_with_writers() -> (TestBroker, tempfile::TempDir) {
    let acl = r#"
        [[allow]]
        principal = "alice"
        topics = ["*"]
        permissions = ["read", "write", "admin"]
        [[allow]]
        principal = "carol"
        topics = ["other"]
        permissions = ["read", "write"]
        [[allow]]
        principal = "bob"
        topics = ["*"]
        permissions = ["read"]
    "#;
    let acl_dir = tempfile::tempdir().unwrap();
    let acl_path = acl_dir.path().join("acl.toml");
    std::fs::write(&acl_path, acl).unwrap();
    (TestBroker::start_with(|c| c.acl_file = Some(acl_path.clone())).await, acl_dir)
}

#[tokio::test]
async fn a_stranger_stamping_the_next_producer_id_cannot_take_the_first_batch_of_its_owner() {
    let b = TestBroker::start().await;
    // The stranger guesses the id the broker will issue next (ids start at 0) and stamps
    // a batch with it, before anyone got that id.
    let mut stranger = b.client("carol").await;
    let r = stranger.produce("t", 0, Acks::All, batch("stolen", 1, stamp(0, 0, 0), Compression::None)).await.unwrap();
    assert_eq!(r.error, ErrorCode::InvalidProducerId, "{}", r.message);
    // The victim gets that id; its first batch is stored, not answered as a duplicate of
    // the stranger's.
    let mut victim = b.client("alice").await;
    let (pid, epoch) = victim.init_producer_id(-1, -1).await.unwrap();
    assert_eq!((pid, epoch), (0, 0));
    let r = victim.produce("t", 0, Acks::All, batch("mine", 1, stamp(pid, epoch, 0), Compression::None)).await.unwrap();
    assert_eq!((r.error, r.duplicate), (ErrorCode::None, false), "{}", r.message);
    assert_eq!(values(&victim.fetch_all("t", 0, 0).await.unwrap()), ["mine-0"]);
    // Now that it is issued, the stranger still may not use it: it belongs to alice.
    let r =
        stranger.produce("t", 0, Acks::All, batch("stolen", 1, stamp(pid, epoch, 1), Compression::None)).await.unwrap();
    assert_eq!(r.error, ErrorCode::InvalidProducerId, "{}", r.message);
    assert_eq!(values(&victim.fetch_all("t", 0, 0).await.unwrap()), ["mine-0"]);
}

#[tokio::test]
async fn init_producer_id_needs_write_permission_and_ids_stay_with_their_principal() {
    let (b, _acl) = broker_with_writers().await;
    let mut alice = b.client("alice").await;
    let (pid, epoch) = alice.init_producer_id(-1, -1).await.unwrap();
    // bob may only read: no id for him, and no bump of alice's.
    let mut bob = b.client("bob").await;
    let e = bob.init_producer_id(-1, -1).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::AuthorizationFailed), "{e}");
    let e = bob.init_producer_id(pid, epoch).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::AuthorizationFailed), "{e}");
    // carol may write a topic, so she gets her own id, but may not bump or stamp alice's.
    let mut carol = b.client("carol").await;
    let (carols, _) = carol.init_producer_id(-1, -1).await.unwrap();
    assert_ne!(carols, pid);
    let e = carol.init_producer_id(pid, epoch).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidProducerId), "{e}");
    let r =
        carol.produce("other", 0, Acks::Leader, batch("c", 1, stamp(pid, epoch, 0), Compression::None)).await.unwrap();
    assert_eq!(r.error, ErrorCode::InvalidProducerId, "{}", r.message);
    // alice's epoch was not moved by anyone else.
    assert_eq!(alice.init_producer_id(pid, epoch).await.unwrap(), (pid, epoch + 1));
}

#[tokio::test]
async fn a_bump_must_present_the_current_epoch_of_an_issued_id() {
    let b = TestBroker::start().await;
    let mut c = b.client("alice").await;
    let (pid, e0) = c.init_producer_id(-1, -1).await.unwrap();
    let (_, e1) = c.init_producer_id(pid, e0).await.unwrap();
    let (_, e2) = c.init_producer_id(pid, e1).await.unwrap();
    assert_eq!((e1, e2), (e0 + 1, e0 + 2));
    // An epoch two behind, one behind, or one never issued: refused, nothing bumped.
    for stale in [e0, e1, e2 + 1] {
        let e = c.init_producer_id(pid, stale).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::InvalidProducerEpoch), "epoch {stale}: {e}");
    }
    // An id reserved by the broker (ids are reserved in blocks) but never issued.
    let e = c.init_producer_id(pid + 1, 0).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidProducerId), "{e}");
    let r = c.produce("t", 0, Acks::Leader, batch("x", 1, stamp(pid + 1, 0, 0), Compression::None)).await.unwrap();
    assert_eq!(r.error, ErrorCode::InvalidProducerId, "{}", r.message);
    assert_eq!(c.init_producer_id(pid, e2).await.unwrap(), (pid, e2 + 1));
}

#[tokio::test]
async fn two_producers_sharing_an_id_fence_each_other_by_epoch() {
    let mut b = TestBroker::start().await;
    let mut a = b.client("alice").await;
    let mut other = b.client("alice").await;
    let (pid, e0) = a.init_producer_id(-1, -1).await.unwrap();
    let r = a.produce("t", 0, Acks::All, batch("a", 1, stamp(pid, e0, 0), Compression::None)).await.unwrap();
    assert_eq!(r.error, ErrorCode::None);
    // A second producer with the same id takes the next epoch.
    let (_, e1) = other.init_producer_id(pid, e0).await.unwrap();
    // The first is fenced everywhere at once, also on a partition the second never wrote.
    let r = a.produce("t", 0, Acks::All, batch("a", 1, stamp(pid, e0, 1), Compression::None)).await.unwrap();
    assert_eq!(r.error, ErrorCode::InvalidProducerEpoch, "{}", r.message);
    let r = a.produce("elsewhere", 0, Acks::All, batch("a", 1, stamp(pid, e0, 0), Compression::None)).await.unwrap();
    assert_eq!(r.error, ErrorCode::InvalidProducerEpoch, "{}", r.message);
    // Nor may it take the epoch back by bumping from its old one.
    let e = a.init_producer_id(pid, e0).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidProducerEpoch), "{e}");
    let r = other.produce("t", 0, Acks::All, batch("b", 1, stamp(pid, e1, 0), Compression::None)).await.unwrap();
    assert_eq!((r.error, r.base_offset), (ErrorCode::None, 1), "{}", r.message);
    // The epoch, the id and its owner survive a restart.
    b.stop().await;
    b.restart_broker().await;
    let mut other = b.client("alice").await;
    let r = other.produce("t", 0, Acks::All, batch("b", 1, stamp(pid, e1, 1), Compression::None)).await.unwrap();
    assert_eq!((r.error, r.base_offset), (ErrorCode::None, 2), "{}", r.message);
    let mut a = b.client("alice").await;
    let e = a.init_producer_id(pid, e0).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidProducerEpoch), "{e}");
    assert_eq!(values(&a.fetch_all("t", 0, 0).await.unwrap()), ["a-0", "b-0", "b-0"]);
}

#[tokio::test]
async fn after_an_epoch_bump_a_retry_of_a_remembered_old_batch_is_a_duplicate_and_nothing_else_of_the_old_epoch_lands()
{
    // Per-partition epochs (HelloOk feature bit 0): the partition's dedup lookup runs
    // before the epoch fence, so an old epoch's retry of a stored batch is answered with its
    // original offset instead of being refused (the producer may still be resolving it).
    let b = TestBroker::start().await;
    let mut a = b.client("alice").await;
    assert_ne!(a.connection().hello().features & qwire::protocol::frame::HelloOk::PER_PARTITION_EPOCHS, 0);
    let (pid, e0) = a.init_producer_id(-1, -1).await.unwrap();
    let first = batch("a", 2, stamp(pid, e0, 0), Compression::None);
    let r = a.produce("t", 0, Acks::All, first.clone()).await.unwrap();
    assert_eq!((r.error, r.base_offset), (ErrorCode::None, 0), "{}", r.message);
    let (_, e1) = a.init_producer_id(pid, e0).await.unwrap();
    assert!(e1 > e0);
    // The very batch again, under the old epoch: a duplicate with the original offset.
    let r = a.produce("t", 0, Acks::All, first).await.unwrap();
    assert_eq!((r.error, r.duplicate, r.base_offset), (ErrorCode::None, true, 0), "{}", r.message);
    // Anything new under the old epoch is fenced, here and on a partition the new epoch
    // never touched.
    let r = a.produce("t", 0, Acks::All, batch("a", 1, stamp(pid, e0, 2), Compression::None)).await.unwrap();
    assert_eq!(r.error, ErrorCode::InvalidProducerEpoch, "{}", r.message);
    let r = a.produce("u", 0, Acks::All, batch("a", 1, stamp(pid, e0, 0), Compression::None)).await.unwrap();
    assert_eq!(r.error, ErrorCode::InvalidProducerEpoch, "{}", r.message);
    // The new epoch starts at sequence 0 on the partition.
    let r = a.produce("t", 0, Acks::All, batch("b", 1, stamp(pid, e1, 0), Compression::None)).await.unwrap();
    assert_eq!((r.error, r.base_offset), (ErrorCode::None, 2), "{}", r.message);
    assert_eq!(values(&a.fetch_all("t", 0, 0).await.unwrap()), ["a-0", "a-1", "b-0"]);
}

#[tokio::test]
async fn a_certificate_from_another_qwire_certs_ca_is_refused_as_unknown_ca() {
    // Two `qwire certs` runs make two CAs; a client of the second is not known to a broker
    // of the first, and is told so (unknown_ca, QUIC 0x130), not a signature error.
    let b = TestBroker::start().await;
    let other = tempfile::tempdir().unwrap();
    qwire::transport::certs::generate_dev_certs(other.path(), &["alice".into()], &[]).unwrap();
    let mut cfg = b.client_config("alice");
    cfg.identity = Some(qwire::transport::certs::Identity::load(other.path(), "alice").unwrap());
    let err = Client::connect(&cfg).await.unwrap_err();
    assert!(matches!(err, TransportError::TlsRejected { by: Refuser::Broker, alert: Some(48), .. }), "{err}");
}

#[tokio::test]
async fn an_empty_acl_file_denies_everything() {
    let acl_dir = tempfile::tempdir().unwrap();
    let acl_path = acl_dir.path().join("acl.toml");
    std::fs::write(&acl_path, "# nothing allowed\n").unwrap();
    let b = TestBroker::start_with(|c| c.acl_file = Some(acl_path.clone())).await;
    // Hello needs no permission: the connection is made.
    let mut c = b.client("alice").await;
    let r = c.produce("t", 0, Acks::Leader, batch("a", 1, ProducerStamp::NONE, Compression::None)).await.unwrap();
    assert_eq!(r.error, ErrorCode::AuthorizationFailed);
    assert_eq!(c.init_producer_id(-1, -1).await.unwrap_err().code(), Some(ErrorCode::AuthorizationFailed));
    assert_eq!(c.create_topic("t", 1).await.unwrap_err().code(), Some(ErrorCode::AuthorizationFailed));
    assert_eq!(c.fetch("t", 0, 0, 1000).await.unwrap_err().code(), Some(ErrorCode::AuthorizationFailed));
    let md = c.metadata(&["t"]).await.unwrap();
    assert_eq!(md.topics[0].error, ErrorCode::AuthorizationFailed);
    assert!(c.list_topics().await.unwrap().is_empty());
}
