//! Tests for `client.rs`: the messages each mechanism sends and how broker steps that do
//! not fit the exchange are refused. Full exchanges against the broker's side are in
//! `server/tests.rs`.

use super::*;
use crate::auth::token::StaticToken;

fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
}

#[test]
fn plain_sends_rfc4616_message() {
    let mut c = block(SaslCredentials::plain("alice", "s3cret").begin()).unwrap();
    let start = c.start();
    assert_eq!(start.mechanism, "PLAIN");
    assert_eq!(&start.data[..], b"\0alice\0s3cret");
    let next = c.step(&SaslStep::done(Bytes::new(), "alice", 0)).unwrap();
    assert_eq!(next, Next::Done(Session { principal: "alice".into(), lifetime: None }));
    // The exchange is over.
    assert!(c.step(&SaslStep::done(Bytes::new(), "alice", 0)).is_err());
}

#[test]
fn oauthbearer_sends_rfc7628_initial_response() {
    let provider = Arc::new(StaticToken(Secret::new("aaa.bbb.ccc")));
    let mut c = block(SaslCredentials::token(provider).begin()).unwrap();
    let start = c.start();
    assert_eq!(start.mechanism, "OAUTHBEARER");
    assert_eq!(&start.data[..], b"n,,\x01auth=Bearer aaa.bbb.ccc\x01\x01");
    let next = c.step(&SaslStep::done(Bytes::new(), "svc", 60_000)).unwrap();
    assert_eq!(next, Next::Done(Session { principal: "svc".into(), lifetime: Some(Duration::from_secs(60)) }));
}

#[test]
fn tokens_with_foreign_characters_are_refused_before_sending() {
    for bad in ["", "a b", "a\x01b", "a,b", "é"] {
        assert!(oauthbearer_initial_response(bad).is_err(), "{bad:?}");
    }
    let huge = "a".repeat(MAX_SASL_DATA);
    assert!(oauthbearer_initial_response(&huge).is_err());
}

#[test]
fn one_message_mechanisms_refuse_challenges_and_missing_principals() {
    let mut c = block(SaslCredentials::plain("alice", "pw").begin()).unwrap();
    // A step before the client sent anything.
    assert!(c.step(&SaslStep::done(Bytes::new(), "alice", 0)).is_err());
    let mut c = block(SaslCredentials::plain("alice", "pw").begin()).unwrap();
    c.start();
    assert_eq!(
        c.step(&SaslStep::challenge(Bytes::from_static(b"more?"))),
        Err(SaslError::Unexpected("a challenge for a one-message mechanism"))
    );
    let mut c = block(SaslCredentials::plain("alice", "pw").begin()).unwrap();
    c.start();
    assert_eq!(
        c.step(&SaslStep::done(Bytes::new(), "", 0)),
        Err(SaslError::Unexpected("authenticated without a principal"))
    );
}

#[test]
fn scram_refuses_a_broker_that_skips_the_proof() {
    let mut c = block(SaslCredentials::scram(ScramHash::Sha256, "alice", "pw").begin()).unwrap();
    let start = c.start();
    assert_eq!(start.mechanism, "SCRAM-SHA-256");
    assert!(start.data.starts_with(b"n,,n=alice,r="));
    // "Authenticated" straight after client-first: the broker proved nothing.
    assert!(matches!(c.step(&SaslStep::done(Bytes::new(), "alice", 0)), Err(SaslError::Unexpected(_))));
}

#[test]
fn scram_refuses_a_server_final_without_a_valid_signature() {
    let mut c = block(SaslCredentials::scram(ScramHash::Sha512, "alice", "pw").begin()).unwrap();
    let start = c.start();
    let nonce = std::str::from_utf8(&start.data).unwrap().rsplit_once("r=").unwrap().1.to_owned();
    let first = format!("r={nonce}srv,s=c2FsdHNhbHQ=,i=4096");
    let Next::Continue(cont) = c.step(&SaslStep::challenge(Bytes::from(first))).unwrap() else {
        panic!("SCRAM needs a client-final")
    };
    assert!(cont.data.starts_with(format!("c=biws,r={nonce}srv,p=").as_bytes()));
    let forged = SaslStep::done(Bytes::from_static(b"v=AAAA"), "alice", 0);
    assert_eq!(c.step(&forged), Err(SaslError::Scram(ScramError::ServerSignature)));
}

#[test]
fn bad_credentials_are_refused_before_connecting() {
    assert!(SaslCredentials::plain("", "pw").validate().is_err());
    assert!(SaslCredentials::plain("alice", "").validate().is_err());
    assert!(SaslCredentials::scram(ScramHash::Sha256, "a\nb", "pw").validate().is_err());
    assert!(SaslCredentials::scram(ScramHash::Sha256, "alice", "pw").validate().is_ok());
    assert!(block(SaslCredentials::plain("alice", "").begin()).is_err());
}

#[test]
fn credentials_never_print_secrets() {
    let c = SaslCredentials::scram(ScramHash::Sha256, "alice", "hunter2");
    let shown = format!("{c:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    let mut ex = block(SaslCredentials::plain("alice", "hunter2").begin()).unwrap();
    assert!(!format!("{ex:?}").contains("hunter2"));
    ex.start();
    assert!(!format!("{ex:?}").contains("hunter2"));
}

#[test]
fn reauthentication_starts_between_85_and_95_percent() {
    let life = Duration::from_secs(100);
    assert_eq!(reauthenticate_after(life, 0.0), Duration::from_secs(85));
    assert_eq!(reauthenticate_after(life, 1.0), Duration::from_secs(95));
    assert_eq!(reauthenticate_after(life, 0.5), Duration::from_secs(90));
    assert_eq!(reauthenticate_after(life, 7.0), Duration::from_secs(95), "jitter is clamped");
}
