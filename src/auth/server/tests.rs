//! SCRAM and PLAIN on the broker's side: RFC 7677's vector, replayed and forged final
//! messages, wrong proofs, and unknown users answered exactly like wrong passwords.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use super::credentials::{ScramCredential, UserStore};
use super::scram::{verify_plain, Decoys, ScramServer};
use super::{Refusal, GENERIC_FAILURE};
use crate::auth::scram::{ScramClient, ScramHash};
use crate::protocol::ErrorCode;

const CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
const SERVER_FIRST: &str = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
const CLIENT_FINAL: &str =
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

fn rfc_users() -> UserStore {
    let mut users = UserStore::default();
    let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
    users
        .upsert("user", ScramHash::Sha256, ScramCredential::derive_with_salt(ScramHash::Sha256, "pencil", salt, 4096))
        .unwrap();
    users
}

fn users() -> UserStore {
    let mut users = UserStore::default();
    for (name, hash) in [("alice", ScramHash::Sha256), ("alice", ScramHash::Sha512), ("bob", ScramHash::Sha512)] {
        users.upsert(name, hash, ScramCredential::derive(hash, &format!("{name}-password"), 4096)).unwrap();
    }
    users
}

fn decoys() -> Decoys {
    Decoys::new(b"a stable broker secret for tests")
}

/// Runs a whole SCRAM exchange; returns the server's verdict on the client-final, and
/// the client-first and client-final messages the client sent.
fn exchange(
    hash: ScramHash,
    user: &str,
    password: &str,
    users: &UserStore,
) -> (Result<String, Refusal>, String, String) {
    let mut client = ScramClient::new(hash, user, password).unwrap();
    let mut server = ScramServer::new(hash);
    let first = client.client_first();
    let server_first = server.handle_client_first(first.as_bytes(), users, &decoys(), None).unwrap();
    let last = client.handle_server_first(server_first.as_bytes()).unwrap();
    let verdict = server.handle_client_final(last.as_bytes()).map(|(server_final, principal)| {
        client.handle_server_final(server_final.as_bytes()).expect("the broker proves it holds the credentials");
        principal
    });
    (verdict, first, last)
}

#[track_caller]
fn generic(r: &Refusal) {
    assert_eq!((r.code, r.message.as_str()), (ErrorCode::AuthenticationFailed, GENERIC_FAILURE));
}

#[test]
fn rfc7677_vector_server_side() {
    let mut server = ScramServer::new(ScramHash::Sha256);
    let first =
        server.handle_client_first(CLIENT_FIRST.as_bytes(), &rfc_users(), &decoys(), Some(SERVER_NONCE)).unwrap();
    assert_eq!(first, SERVER_FIRST);
    let (last, user) = server.handle_client_final(CLIENT_FINAL.as_bytes()).unwrap();
    assert_eq!((last.as_str(), user.as_str()), (SERVER_FINAL, "user"));
}

#[test]
fn scram_sha256_and_sha512_exchanges_succeed() {
    let users = users();
    assert_eq!(exchange(ScramHash::Sha256, "alice", "alice-password", &users).0.unwrap(), "alice");
    assert_eq!(exchange(ScramHash::Sha512, "alice", "alice-password", &users).0.unwrap(), "alice");
    assert_eq!(exchange(ScramHash::Sha512, "bob", "bob-password", &users).0.unwrap(), "bob");
}

#[test]
fn a_replayed_final_message_is_refused() {
    let users = rfc_users();
    // The same final message on the exchange that already used it.
    let mut server = ScramServer::new(ScramHash::Sha256);
    server.handle_client_first(CLIENT_FIRST.as_bytes(), &users, &decoys(), Some(SERVER_NONCE)).unwrap();
    server.handle_client_final(CLIENT_FINAL.as_bytes()).unwrap();
    generic(&server.handle_client_final(CLIENT_FINAL.as_bytes()).unwrap_err());
    // A captured first and final message replayed on a new exchange: the broker's new nonce
    // is not in the old final message.
    let mut server = ScramServer::new(ScramHash::Sha256);
    let first = server.handle_client_first(CLIENT_FIRST.as_bytes(), &users, &decoys(), None).unwrap();
    assert_ne!(first, SERVER_FIRST, "a fresh server nonce");
    let r = server.handle_client_final(CLIENT_FINAL.as_bytes()).unwrap_err();
    generic(&r);
    assert!(r.reason.contains("nonce mismatch"), "{}", r.reason);
    assert_eq!(r.user.as_deref(), Some("user"));
}

#[test]
fn forged_final_messages_are_refused() {
    let users = rfc_users();
    let forge = |msg: &str, why: &str| {
        let mut server = ScramServer::new(ScramHash::Sha256);
        server.handle_client_first(CLIENT_FIRST.as_bytes(), &users, &decoys(), Some(SERVER_NONCE)).unwrap();
        let r = server.handle_client_final(msg.as_bytes()).unwrap_err();
        generic(&r);
        assert!(r.reason.contains(why), "{msg}: {} should say {why}", r.reason);
    };
    // A wrong proof (one bit flipped), a short proof, an empty proof.
    forge(&CLIENT_FINAL.replace("p=dHzb", "p=dHzc"), "wrong SCRAM proof");
    forge(&CLIENT_FINAL.replace("=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", "=dHzbZapW"), "wrong SCRAM proof");
    forge(&CLIENT_FINAL.replace("p=dHzb", "p=*Hzb"), "malformed");
    forge("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=", "wrong SCRAM proof");
    // Channel binding that differs from the GS2 header ("y,," instead of "n,,").
    forge(&CLIENT_FINAL.replace("c=biws", "c=eSws"), "channel binding");
    // Another nonce: the client's alone, or the server part changed.
    forge(&CLIENT_FINAL.replace("%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0", ""), "nonce mismatch");
    forge(&CLIENT_FINAL.replace("hNlF$k0", "hNlF$k1"), "nonce mismatch");
    forge("garbage", "malformed");
}

#[test]
fn an_unknown_user_is_indistinguishable_from_a_wrong_password() {
    let users = users();
    let (wrong, _, _) = exchange(ScramHash::Sha256, "alice", "not-her-password", &users);
    let (unknown, _, _) = exchange(ScramHash::Sha256, "mallory", "whatever", &users);
    let (wrong, unknown) = (wrong.unwrap_err(), unknown.unwrap_err());
    generic(&wrong);
    generic(&unknown);
    assert_eq!(wrong.user.as_deref(), Some("alice"), "a known user is named in the log");
    assert_eq!(unknown.user, None, "an unknown name never reaches the log");

    // The server-first of an unknown user looks like a real one: same salt size, same
    // iteration count, and the same salt every time (a changing salt would give it away).
    let server_first = |name: &str, decoys: &Decoys| {
        let mut s = ScramServer::new(ScramHash::Sha256);
        let msg = format!("n,,n={name},r=abc");
        let first = s.handle_client_first(msg.as_bytes(), &users, decoys, Some("xyz")).unwrap();
        first.split(',').skip(1).map(str::to_owned).collect::<Vec<_>>()
    };
    let real = server_first("alice", &decoys());
    let fake = server_first("mallory", &decoys());
    assert_eq!(B64.decode(&real[0][2..]).unwrap().len(), B64.decode(&fake[0][2..]).unwrap().len());
    assert_eq!(real[1], fake[1], "same iteration count");
    assert_eq!(fake, server_first("mallory", &decoys()), "a stable decoy salt");
    assert_ne!(fake, server_first("trudy", &decoys()), "one decoy salt per name");
    assert_ne!(fake, server_first("mallory", &Decoys::new(b"another broker")), "keyed by the broker secret");
}

#[test]
fn plain_is_checked_against_the_scram_data() {
    let users = users();
    assert_eq!(verify_plain(b"\0alice\0alice-password", &users, &decoys()).unwrap(), "alice");
    assert_eq!(verify_plain(b"alice\0alice\0alice-password", &users, &decoys()).unwrap(), "alice");
    // bob has SCRAM-SHA-512 data only.
    assert_eq!(verify_plain(b"\0bob\0bob-password", &users, &decoys()).unwrap(), "bob");
    let wrong = verify_plain(b"\0alice\0bob-password", &users, &decoys()).unwrap_err();
    let unknown = verify_plain(b"\0mallory\0alice-password", &users, &decoys()).unwrap_err();
    generic(&wrong);
    generic(&unknown);
    assert_eq!((wrong.user.as_deref(), unknown.user), (Some("alice"), None));
    for bad in [
        &b""[..],
        b"\0alice",
        b"alice\0alice-password",
        b"\0\0alice-password",
        b"\0alice\0",
        b"\0alice\0alice-password\0",
        b"bob\0alice\0alice-password",
        b"\0al\xffice\0alice-password",
    ] {
        let r = verify_plain(bad, &users, &decoys()).unwrap_err();
        generic(&r);
        assert!(!format!("{r:?}").contains("alice-password"), "a refusal never holds the password");
    }
}
