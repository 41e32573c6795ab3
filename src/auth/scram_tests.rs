//! Tests for `scram.rs`: RFC 7677's test vector from the client's side, and every way a
//! server message can be wrong.

use super::*;

const USER: &str = "user";
const PASSWORD: &str = "pencil";
const CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
const CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
const SERVER_FIRST: &str = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
const CLIENT_FINAL: &str =
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

fn rfc_client() -> ScramClient {
    ScramClient::with_nonce(ScramHash::Sha256, USER, PASSWORD, CLIENT_NONCE.into()).unwrap()
}

#[test]
fn rfc7677_vector_client_side() {
    let mut c = rfc_client();
    assert_eq!(c.client_first(), CLIENT_FIRST);
    assert_eq!(c.handle_server_first(SERVER_FIRST.as_bytes()).unwrap(), CLIENT_FINAL);
    c.handle_server_final(SERVER_FINAL.as_bytes()).unwrap();
}

#[test]
fn a_forged_server_signature_is_refused() {
    let mut c = rfc_client();
    c.client_first();
    c.handle_server_first(SERVER_FIRST.as_bytes()).unwrap();
    let forged = "v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    assert_eq!(c.handle_server_final(forged.as_bytes()), Err(ScramError::ServerSignature));
    // The exchange is over: the right answer is no longer accepted either.
    assert!(matches!(c.handle_server_final(SERVER_FINAL.as_bytes()), Err(ScramError::State(_))));
}

#[test]
fn a_server_nonce_that_does_not_extend_ours_is_refused() {
    for bad in [
        "r=someoneElsesNonce123,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        // Exactly the client nonce: the server added nothing.
        "r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
    ] {
        let mut c = rfc_client();
        c.client_first();
        assert_eq!(c.handle_server_first(bad.as_bytes()), Err(ScramError::NonceMismatch), "{bad}");
    }
}

#[test]
fn iteration_counts_outside_the_bounds_are_refused() {
    for (i, ok) in [(4095u32, false), (4096, true), (MAX_ITERATIONS, true), (MAX_ITERATIONS + 1, false), (0, false)] {
        let mut c = ScramClient::with_nonce(ScramHash::Sha256, USER, PASSWORD, "abc".into()).unwrap();
        c.client_first();
        // Cheap to check: the bound is tested before any PBKDF2 work, except for the
        // accepted counts, which do the work (1 M iterations takes a moment).
        if ok && i > 10_000 {
            continue;
        }
        let r = c.handle_server_first(format!("r=abcdef,s=c2FsdA==,i={i}").as_bytes());
        assert_eq!(r.is_ok(), ok, "i={i}: {r:?}");
        if !ok {
            assert_eq!(r, Err(ScramError::Iterations(i)));
        }
    }
}

#[test]
fn malformed_server_messages_are_refused() {
    for bad in [
        "",
        "x",
        "s=W22ZaJ0SNY7soEsUEjb6gQ==,r=rOprNGfwEbeRWgbNEkqOabc,i=4096",
        "r=rOprNGfwEbeRWgbNEkqOabc,s=***,i=4096",
        "r=rOprNGfwEbeRWgbNEkqOabc,s=,i=4096",
        "r=rOprNGfwEbeRWgbNEkqOabc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=many",
        "r=rOprNGfwEbeRWgbNEkqOabc,s=W22ZaJ0SNY7soEsUEjb6gQ==",
        "m=ext,r=rOprNGfwEbeRWgbNEkqOabc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
    ] {
        let mut c = rfc_client();
        c.client_first();
        assert!(matches!(c.handle_server_first(bad.as_bytes()), Err(ScramError::Malformed(_))), "{bad:?}");
    }
    let mut c = rfc_client();
    c.client_first();
    assert!(matches!(c.handle_server_first(&[0xff, 0xfe]), Err(ScramError::Malformed("not UTF-8"))));
    let mut c = rfc_client();
    c.client_first();
    assert_eq!(c.handle_server_first(b"e=unknown-user"), Err(ScramError::ServerError("unknown-user".into())));
}

#[test]
fn messages_out_of_order_are_refused() {
    let mut c = rfc_client();
    assert!(matches!(c.handle_server_first(SERVER_FIRST.as_bytes()), Err(ScramError::State(_))));
    let mut c = rfc_client();
    c.client_first();
    assert!(matches!(c.handle_server_final(SERVER_FINAL.as_bytes()), Err(ScramError::State(_))));
}

#[test]
fn user_names_are_escaped_and_validated() {
    assert_eq!(escape_username("a,b=c"), "a=2Cb=3Dc");
    assert_eq!(unescape_username("a=2Cb=3Dc").unwrap(), "a,b=c");
    assert!(unescape_username("a=2").is_err());
    assert!(unescape_username("a=41").is_err());
    let mut c = ScramClient::with_nonce(ScramHash::Sha512, "a,b=c", "pw", "n".into()).unwrap();
    assert_eq!(c.client_first(), "n,,n=a=2Cb=3Dc,r=n");
    assert!(validate_username("").is_err());
    assert!(validate_username("tab\there").is_err());
    assert!(validate_username(&"x".repeat(256)).is_err());
    // U+00AD SOFT HYPHEN is mapped to nothing by SASLprep: ambiguous, refused.
    assert!(validate_username("al\u{00ad}ice").is_err());
    assert!(validate_username("alice@example.com").is_ok());
    assert!(validate_username("łukasz").is_ok());
}

#[test]
fn passwords_are_saslprepped_when_possible() {
    // RFC 4013 examples: SOFT HYPHEN maps to nothing, U+00AA (ª) NFKC-normalizes to "a".
    assert_eq!(normalize_password("I\u{00AD}X"), "IX");
    assert_eq!(normalize_password("\u{00AA}"), "a");
    // A prohibited character (U+0007): used as is rather than refused.
    assert_eq!(normalize_password("\u{0007}"), "\u{0007}");
}

#[test]
fn client_first_grammar() {
    let f = ClientFirst::parse(CLIENT_FIRST.as_bytes()).unwrap();
    assert_eq!(f.gs2_header, "n,,");
    assert_eq!(f.username, "user");
    assert_eq!(f.nonce, CLIENT_NONCE);
    assert_eq!(f.bare, "n=user,r=rOprNGfwEbeRWgbNEkqO");
    assert_eq!(f.authzid, None);
    let f = ClientFirst::parse(b"y,a=us=2Cer,n=us=2Cer,r=abc,x=ext").unwrap();
    assert_eq!(f.authzid.as_deref(), Some("us,er"));
    assert_eq!(f.gs2_header, "y,a=us=2Cer,");
    for bad in [
        "p=tls-exporter,,n=user,r=abc",
        "q,,n=user,r=abc",
        "n,,m=ext,n=user,r=abc",
        "n,,n=user",
        "n,,r=abc,n=user",
        "n,,n=,r=abc",
        "n,,n=user,r=a,bc",
        "n,,n=user,r=",
        "n,x,n=user,r=abc",
        "n,,n=us=er,r=abc",
        "n,,",
    ] {
        assert!(ClientFirst::parse(bad.as_bytes()).is_err(), "{bad:?}");
    }
}

#[test]
fn client_final_grammar() {
    let f = ClientFinal::parse(CLIENT_FINAL.as_bytes()).unwrap();
    assert_eq!(f.channel_binding, b"n,,");
    assert_eq!(f.nonce, "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
    assert_eq!(f.proof.len(), 32);
    assert_eq!(f.without_proof, "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
    for bad in ["c=biws,r=abc", "r=abc,c=biws,p=AAAA", "c=***,r=abc,p=AAAA", "c=biws,r=abc,p=***", "c=biws,p=AAAA"] {
        assert!(ClientFinal::parse(bad.as_bytes()).is_err(), "{bad:?}");
    }
}

#[test]
fn sha512_keys_have_sha512_lengths() {
    let salted = ScramHash::Sha512.salted_password(b"pw", b"salt", 4096);
    assert_eq!(salted.len(), 64);
    let k = ScramHash::Sha512.keys(&salted);
    assert_eq!((k.client_key.len(), k.stored_key.len(), k.server_key.len()), (64, 64, 64));
}
