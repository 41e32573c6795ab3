//! Tests for `session.rs`: whole exchanges driven by the client's state machine, the
//! certificate rule, throttling, re-authentication and expiry.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::*;
use crate::auth::client::{Next, SaslCredentials, Session};
use crate::auth::scram::ScramHash;
use crate::auth::server::credentials::{ScramCredential, UserStore};
use crate::auth::server::jwt::{JwtPolicy, JwtVerifier};
use crate::auth::server::testkit::*;
use crate::auth::token::StaticToken;
use crate::auth::Secret;

fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
}

fn users() -> UserStore {
    let mut u = UserStore::default();
    u.upsert("alice", ScramHash::Sha256, ScramCredential::derive(ScramHash::Sha256, "alice-pw", 4096)).unwrap();
    u.upsert("alice", ScramHash::Sha512, ScramCredential::derive(ScramHash::Sha512, "alice-pw", 4096)).unwrap();
    u.upsert("bob", ScramHash::Sha256, ScramCredential::derive(ScramHash::Sha256, "bob-pw", 4096)).unwrap();
    u
}

fn service(key: Option<&TestKey>, settings: AuthSettings) -> AuthService {
    let jwt = key.map(|k| JwtVerifier::from_jwks(&jwks(&[k]), JwtPolicy::new(ISSUER, AUDIENCE)).unwrap());
    AuthService::new(Some(users()), jwt, b"decoy secret", settings)
}

fn at(instant: Instant, unix_ms: u64) -> Now {
    Now { instant, unix_ms }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn token(t: &str) -> SaslCredentials {
    SaslCredentials::token(Arc::new(StaticToken(Secret::new(t))))
}

/// Runs a whole exchange of `creds` on `conn`.
fn authenticate(
    conn: &mut ConnectionAuth,
    svc: &AuthService,
    creds: SaslCredentials,
    now: Now,
) -> Result<Session, Refusal> {
    let mut ex = block(creds.begin()).unwrap();
    let mut step = conn.handle_start(svc, &ex.start(), now)?;
    loop {
        match ex.step(&step).expect("the client accepts the broker's steps") {
            Next::Continue(c) => step = conn.handle_continue(svc, &c, now)?,
            Next::Done(s) => return Ok(s),
        }
    }
}

#[test]
fn every_mechanism_authenticates() {
    let ed = ed_key("k");
    let svc = service(Some(&ed), AuthSettings::default());
    assert_eq!(
        svc.mechanisms(),
        [Mechanism::ScramSha512, Mechanism::ScramSha256, Mechanism::Plain, Mechanism::OAuthBearer]
    );
    let now = at(Instant::now(), NOW_MS);
    for creds in [
        SaslCredentials::scram(ScramHash::Sha256, "alice", "alice-pw"),
        SaslCredentials::scram(ScramHash::Sha512, "alice", "alice-pw"),
        SaslCredentials::plain("alice", "alice-pw"),
    ] {
        let mut conn = ConnectionAuth::unauthenticated(ip("127.0.0.1"));
        assert_eq!(conn.principal(), None);
        let s = authenticate(&mut conn, &svc, creds, now).unwrap();
        assert_eq!(s, Session { principal: "alice".into(), lifetime: None });
        assert_eq!(conn.principal(), Some("alice"));
        assert_eq!(conn.expires_at(), None, "PLAIN and SCRAM sessions do not expire by default");
    }
    let mut conn = ConnectionAuth::unauthenticated(ip("127.0.0.1"));
    let s = authenticate(&mut conn, &svc, token(&sign(&ed, &claims("svc-a"))), now).unwrap();
    assert_eq!(s, Session { principal: "svc-a".into(), lifetime: Some(Duration::from_secs(3600)) });
    assert_eq!(conn.mechanism(), Some(Mechanism::OAuthBearer));
    assert_eq!(conn.expires_at(), Some(now.instant + Duration::from_secs(3600)));
}

#[test]
fn wrong_password_unknown_user_and_bad_token_get_the_same_answer() {
    let ed = ed_key("k");
    let svc = service(Some(&ed), AuthSettings::default());
    let now = at(Instant::now(), NOW_MS);
    let mut expired = claims("alice");
    expired["exp"] = json!(NOW_S - 600);
    let mut answers = Vec::new();
    for creds in [
        SaslCredentials::scram(ScramHash::Sha256, "alice", "wrong"),
        SaslCredentials::scram(ScramHash::Sha256, "nobody", "alice-pw"),
        SaslCredentials::plain("alice", "wrong"),
        SaslCredentials::plain("nobody", "alice-pw"),
        token(&sign(&ed, &expired)),
    ] {
        let mut conn = ConnectionAuth::unauthenticated(ip("127.0.0.1"));
        let r = authenticate(&mut conn, &svc, creds, now).unwrap_err();
        assert_eq!(conn.principal(), None);
        answers.push((r.code, r.message));
    }
    assert!(
        answers.iter().all(|a| *a == (ErrorCode::AuthenticationFailed, "authentication failed".to_owned())),
        "{answers:?}"
    );
}

#[test]
fn a_certificate_connection_refuses_sasl() {
    let svc = service(None, AuthSettings::default());
    let mut conn = ConnectionAuth::by_certificate("cert-alice", ip("127.0.0.1"));
    let r =
        authenticate(&mut conn, &svc, SaslCredentials::plain("bob", "bob-pw"), at(Instant::now(), NOW_MS)).unwrap_err();
    assert_eq!(r.code, ErrorCode::IllegalSaslState);
    assert!(r.message.contains("client certificate"));
    assert_eq!(conn.principal(), Some("cert-alice"), "the certificate's principal stays");
    assert!(conn.is_certificate());
}

#[test]
fn mechanisms_not_offered_are_refused_with_the_list() {
    let svc = service(None, AuthSettings::default());
    let mut conn = ConnectionAuth::unauthenticated(ip("127.0.0.1"));
    let now = at(Instant::now(), NOW_MS);
    let r = authenticate(&mut conn, &svc, token("a.b.c"), now).unwrap_err();
    assert_eq!(r.code, ErrorCode::UnsupportedSaslMechanism);
    assert!(r.message.ends_with("enabled: SCRAM-SHA-512, SCRAM-SHA-256, PLAIN"), "{}", r.message);
    let start = SaslStart { mechanism: "GSSAPI".into(), data: Bytes::new() };
    assert_eq!(conn.handle_start(&svc, &start, now).unwrap_err().code, ErrorCode::UnsupportedSaslMechanism);
    let none = AuthService::new(None, None, b"s", AuthSettings::default());
    let r = ConnectionAuth::unauthenticated(ip("127.0.0.1")).handle_start(&none, &start, now).unwrap_err();
    assert!(r.message.ends_with("enabled: none"), "{}", r.message);
}

#[test]
fn continue_without_an_exchange_is_a_state_error() {
    let svc = service(None, AuthSettings::default());
    let mut conn = ConnectionAuth::unauthenticated(ip("127.0.0.1"));
    let now = at(Instant::now(), NOW_MS);
    let cont = SaslContinue { data: Bytes::from_static(b"c=biws,r=x,p=AAAA") };
    assert_eq!(conn.handle_continue(&svc, &cont, now).unwrap_err().code, ErrorCode::IllegalSaslState);
    // After a failed final message the exchange is gone: replaying it is a state error too.
    let mut ex = block(SaslCredentials::scram(ScramHash::Sha256, "alice", "wrong").begin()).unwrap();
    let step = conn.handle_start(&svc, &ex.start(), now).unwrap();
    let Next::Continue(last) = ex.step(&step).unwrap() else { panic!("SCRAM continues") };
    assert_eq!(conn.handle_continue(&svc, &last, now).unwrap_err().code, ErrorCode::AuthenticationFailed);
    assert_eq!(conn.handle_continue(&svc, &last, now).unwrap_err().code, ErrorCode::IllegalSaslState);
}

#[test]
fn failures_are_throttled_per_address_and_authenticated_connections_are_not() {
    let limiter =
        super::super::limiter::LimiterConfig { burst: 3, refill_every: Duration::from_secs(60), max_tracked: 16 };
    let svc = service(None, AuthSettings { limiter, max_session: Some(Duration::from_secs(600)) });
    let now = at(Instant::now(), NOW_MS);
    // An authenticated connection from the attacker's own address.
    let mut good = ConnectionAuth::unauthenticated(ip("10.0.0.1"));
    authenticate(&mut good, &svc, SaslCredentials::plain("bob", "bob-pw"), now).unwrap();
    for _ in 0..3 {
        let mut c = ConnectionAuth::unauthenticated(ip("10.0.0.1"));
        let r = authenticate(&mut c, &svc, SaslCredentials::plain("alice", "guess"), now).unwrap_err();
        assert_eq!(r.code, ErrorCode::AuthenticationFailed);
    }
    // Now even the right password is refused from that address, before it is checked.
    for creds in
        [SaslCredentials::plain("alice", "alice-pw"), SaslCredentials::scram(ScramHash::Sha256, "alice", "alice-pw")]
    {
        let mut c = ConnectionAuth::unauthenticated(ip("10.0.0.1"));
        let r = authenticate(&mut c, &svc, creds, now).unwrap_err();
        assert_eq!(r.code, ErrorCode::AuthenticationThrottled);
        assert!(!r.is_credential_failure());
    }
    // Another address is not affected.
    let mut other = ConnectionAuth::unauthenticated(ip("10.0.0.2"));
    authenticate(&mut other, &svc, SaslCredentials::plain("alice", "alice-pw"), now).unwrap();
    // The authenticated connection keeps its session and may re-authenticate.
    assert_eq!(good.principal(), Some("bob"));
    authenticate(&mut good, &svc, SaslCredentials::plain("bob", "bob-pw"), now).unwrap();
    // An allowance comes back with time.
    let later = at(now.instant + Duration::from_secs(60), NOW_MS + 60_000);
    let mut c = ConnectionAuth::unauthenticated(ip("10.0.0.1"));
    authenticate(&mut c, &svc, SaslCredentials::plain("alice", "alice-pw"), later).unwrap();
}

#[test]
fn reauthentication_extends_the_session_for_the_same_principal_only() {
    let ed = ed_key("k");
    let svc = service(Some(&ed), AuthSettings::default());
    let t0 = Instant::now();
    let mut conn = ConnectionAuth::unauthenticated(ip("127.0.0.1"));
    let mut short = claims("svc-a");
    short["exp"] = json!(NOW_S + 10);
    let s = authenticate(&mut conn, &svc, token(&sign(&ed, &short)), at(t0, NOW_MS)).unwrap();
    assert_eq!(s.lifetime, Some(Duration::from_secs(10)));

    // At 9 s: a fresh token for the same principal: a new expiry.
    let t9 = at(t0 + Duration::from_secs(9), NOW_MS + 9000);
    let s = authenticate(&mut conn, &svc, token(&sign(&ed, &claims("svc-a"))), t9).unwrap();
    assert_eq!(s.lifetime, Some(Duration::from_millis(3_600_000 - 9000)));
    let expiry = conn.expires_at().unwrap();
    assert_eq!(expiry, t9.instant + Duration::from_millis(3_600_000 - 9000));

    // Another principal, a bad token, another mechanism: refused; the session runs on.
    let t10 = at(t0 + Duration::from_secs(10), NOW_MS + 10_000);
    for creds in [
        token(&sign(&ed, &claims("svc-b"))),
        token(&sign(&ed_key("k"), &claims("svc-a"))),
        SaslCredentials::plain("alice", "alice-pw"),
    ] {
        assert_eq!(authenticate(&mut conn, &svc, creds, t10).unwrap_err().code, ErrorCode::AuthenticationFailed);
        assert_eq!((conn.principal(), conn.expires_at()), (Some("svc-a"), Some(expiry)));
    }
    // After expiry, the broker closes the connection; a late re-authentication is refused.
    let late = at(expiry, NOW_MS + 3_600_000);
    assert!(conn.is_expired(late.instant));
    let r = authenticate(&mut conn, &svc, token(&sign(&ed, &claims("svc-a"))), late).unwrap_err();
    assert_eq!(r.code, ErrorCode::SessionExpired);
}

#[test]
fn max_session_bounds_every_mechanism() {
    let ed = ed_key("k");
    let svc = service(Some(&ed), AuthSettings { max_session: Some(Duration::from_secs(60)), ..Default::default() });
    let now = at(Instant::now(), NOW_MS);
    let mut conn = ConnectionAuth::unauthenticated(ip("127.0.0.1"));
    let s = authenticate(&mut conn, &svc, SaslCredentials::scram(ScramHash::Sha512, "alice", "alice-pw"), now).unwrap();
    assert_eq!(s.lifetime, Some(Duration::from_secs(60)));
    let mut conn = ConnectionAuth::unauthenticated(ip("127.0.0.1"));
    let s = authenticate(&mut conn, &svc, token(&sign(&ed, &claims("svc"))), now).unwrap();
    assert_eq!(s.lifetime, Some(Duration::from_secs(60)), "the shorter of token and cap");
}

#[test]
fn replaced_credentials_apply_to_new_exchanges() {
    let svc = service(None, AuthSettings::default());
    let now = at(Instant::now(), NOW_MS);
    let mut established = ConnectionAuth::unauthenticated(ip("127.0.0.1"));
    authenticate(&mut established, &svc, SaslCredentials::plain("bob", "bob-pw"), now).unwrap();
    let mut next = UserStore::default();
    next.upsert("carol", ScramHash::Sha256, ScramCredential::derive(ScramHash::Sha256, "carol-pw", 4096)).unwrap();
    svc.replace_users(next);
    let mut c = ConnectionAuth::unauthenticated(ip("127.0.0.2"));
    authenticate(&mut c, &svc, SaslCredentials::scram(ScramHash::Sha256, "carol", "carol-pw"), now).unwrap();
    let mut c = ConnectionAuth::unauthenticated(ip("127.0.0.3"));
    assert!(authenticate(&mut c, &svc, SaslCredentials::plain("bob", "bob-pw"), now).is_err());
    assert_eq!(established.principal(), Some("bob"), "an established session is not cut");
}

#[test]
fn oauthbearer_messages_follow_rfc7628() {
    let ok: [(&[u8], Option<&str>, &str); 4] = [
        (b"n,,\x01auth=Bearer abc\x01\x01", None, "abc"),
        (b"n,a=svc,\x01auth=bearer abc\x01\x01", Some("svc"), "abc"),
        (b"y,,\x01host=broker\x01auth=Bearer abc\x01port=7878\x01\x01", None, "abc"),
        (b"n,,\x01auth=Bearer a.b.c\x01\x01", None, "a.b.c"),
    ];
    for (msg, authz, tok) in ok {
        assert_eq!(parse_oauthbearer(msg).unwrap(), (authz, tok));
    }
    for bad in [
        &b""[..],
        b"n,,",
        b"n,,\x01auth=Bearer abc\x01",
        b"n,,\x01\x01",
        b"n,,\x01auth=Basic abc\x01\x01",
        b"n,,\x01auth=Bearer \x01\x01",
        b"n,,\x01auth=Bearer a\x01auth=Bearer b\x01\x01",
        b"p=x,,\x01auth=Bearer abc\x01\x01",
        b"n,b=x,\x01auth=Bearer abc\x01\x01",
        b"n,,\x01noequals\x01\x01",
        b"n,,\x01k1=v\x01\x01",
    ] {
        assert_eq!(parse_oauthbearer(bad).unwrap_err().code, ErrorCode::AuthenticationFailed, "{bad:?}");
    }
}

#[test]
fn an_authzid_naming_another_principal_is_refused() {
    let ed = ed_key("k");
    let svc = service(Some(&ed), AuthSettings::default());
    let t = sign(&ed, &claims("svc-a"));
    let now = at(Instant::now(), NOW_MS);
    for (authz, ok) in [("svc-a", true), ("admin", false)] {
        let mut conn = ConnectionAuth::unauthenticated(ip("127.0.0.1"));
        let start = SaslStart {
            mechanism: "OAUTHBEARER".into(),
            data: Bytes::from(format!("n,a={authz},\x01auth=Bearer {t}\x01\x01")),
        };
        assert_eq!(conn.handle_start(&svc, &start, now).is_ok(), ok, "{authz}");
    }
}

proptest::proptest! {
    /// Whatever an unauthenticated client sends, the broker answers with a step or a
    /// refusal, never a panic, and never authenticates it.
    #[test]
    fn arbitrary_client_messages_never_panic_or_authenticate(
        mech in proptest::sample::select(vec!["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]),
        first in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        last in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
    ) {
        thread_local! {
            // No throttling here: every case must reach the parsers.
            static SVC: AuthService = service(Some(&ed_key("k")), AuthSettings {
                limiter: super::super::limiter::LimiterConfig { burst: u32::MAX, ..Default::default() },
                max_session: None,
            });
        }
        SVC.with(|svc| {
            let now = at(Instant::now(), NOW_MS);
            let mut conn = ConnectionAuth::unauthenticated(ip("127.0.0.1"));
            let start = SaslStart { mechanism: mech.into(), data: Bytes::from(first) };
            if let Ok(step) = conn.handle_start(svc, &start, now) {
                proptest::prop_assert!(!step.complete);
                let r = conn.handle_continue(svc, &SaslContinue { data: Bytes::from(last) }, now);
                proptest::prop_assert!(r.is_err());
            }
            proptest::prop_assert_eq!(conn.principal(), None);
            Ok(())
        })?;
    }
}

/// Review finding: the allowance was checked when an attempt started and taken only when it
/// failed, so SCRAM exchanges started together from one address all got to guess: a burst
/// of 3 let 50 first messages through. Now each start takes an allowance.
#[test]
fn scram_attempts_started_together_are_bounded_by_the_burst() {
    let limiter =
        super::super::limiter::LimiterConfig { burst: 3, refill_every: Duration::from_secs(60), max_tracked: 16 };
    let svc = service(None, AuthSettings { limiter, max_session: None });
    let now = at(Instant::now(), NOW_MS);
    let start = SaslStart {
        mechanism: "SCRAM-SHA-256".into(),
        data: Bytes::from_static(b"n,,n=alice,r=fyko+d2lbbFgONRv9qkxdawL"),
    };
    let mut started = 0;
    for _ in 0..50 {
        let mut c = ConnectionAuth::unauthenticated(ip("10.0.0.1"));
        match c.handle_start(&svc, &start, now) {
            Ok(_) => started += 1,
            Err(r) => assert_eq!(r.code, ErrorCode::AuthenticationThrottled),
        }
    }
    assert_eq!(started, 3);
    // Successful logins give their allowance back: a full burst later, still allowed.
    let other = ip("10.0.0.9");
    for _ in 0..10 {
        let mut c = ConnectionAuth::unauthenticated(other);
        authenticate(&mut c, &svc, SaslCredentials::scram(ScramHash::Sha256, "alice", "alice-pw"), now).unwrap();
    }
}
