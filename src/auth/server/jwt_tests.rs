//! Tests for `jwt.rs`: each algorithm verifies; every bad token is refused with the
//! generic failure; JWKS files with unusable keys.

use serde_json::json;

use super::*;
use crate::auth::server::testkit::*;
use crate::protocol::ErrorCode;

fn verifier(keys: &[&TestKey]) -> JwtVerifier {
    JwtVerifier::from_jwks(&jwks(keys), JwtPolicy::new(ISSUER, AUDIENCE)).unwrap()
}

#[track_caller]
fn refused(v: &JwtVerifier, token: &str, now_ms: u64, reason_has: &str) {
    let r = v.verify(token, now_ms).expect_err("the token must be refused");
    assert_eq!(r.code, ErrorCode::AuthenticationFailed);
    assert_eq!(r.message, "authentication failed", "one generic message for every failure");
    assert!(r.reason.contains(reason_has), "reason {:?} should mention {reason_has:?}", r.reason);
    assert!(token.is_empty() || (!r.message.contains(token) && !r.reason.contains(token)));
}

#[test]
fn rs256_es256_and_eddsa_tokens_verify() {
    let (rsa, ec, ed) = (rsa_key("r1"), ec_key("e1"), ed_key("d1"));
    let v = verifier(&[&rsa, &ec, &ed]);
    assert_eq!(v.key_count(), 3);
    for key in [&rsa, &ec, &ed] {
        let t = sign(key, &claims("alice"));
        assert_eq!(v.verify(&t, NOW_MS).unwrap(), VerifiedToken { principal: "alice".into(), lifetime_ms: 3_600_000 });
    }
    // Without a kid, each key of the token's alg is tried.
    let mut header = jsonwebtoken::Header::new(Algorithm::EdDSA);
    header.kid = None;
    let t = jsonwebtoken::encode(&header, &claims("bob"), &ed.encoding).unwrap();
    assert_eq!(v.verify(&t, NOW_MS).unwrap().principal, "bob");
}

#[test]
fn expired_and_not_yet_valid_tokens_are_refused_outside_the_skew() {
    let ed = ed_key("d1");
    let v = verifier(&[&ed]);
    let mut c = claims("alice");
    c["exp"] = json!(NOW_S - 31);
    refused(&v, &sign(&ed, &c), NOW_MS, "expired");
    // Inside the 30 s skew: accepted, with the shortest session.
    c["exp"] = json!(NOW_S - 29);
    assert_eq!(v.verify(&sign(&ed, &c), NOW_MS).unwrap().lifetime_ms, MIN_SESSION.as_millis() as u64);
    // Expiry exactly now + 1.5 s: a 1.5 s session.
    c["exp"] = json!(NOW_S as f64 + 1.5);
    assert_eq!(v.verify(&sign(&ed, &c), NOW_MS).unwrap().lifetime_ms, 1500);

    let mut c = claims("alice");
    c["nbf"] = json!(NOW_S + 31);
    refused(&v, &sign(&ed, &c), NOW_MS, "not valid yet");
    c["nbf"] = json!(NOW_S + 29);
    assert!(v.verify(&sign(&ed, &c), NOW_MS).is_ok());
    c["nbf"] = json!("soon");
    refused(&v, &sign(&ed, &c), NOW_MS, "nbf");

    let mut c = claims("alice");
    c.as_object_mut().unwrap().remove("exp");
    refused(&v, &sign(&ed, &c), NOW_MS, "no numeric exp");
}

#[test]
fn wrong_audience_or_issuer_is_refused() {
    let ec = ec_key("e1");
    let v = verifier(&[&ec]);
    let mut c = claims("alice");
    c["aud"] = json!("another-service");
    refused(&v, &sign(&ec, &c), NOW_MS, "audience");
    c["aud"] = json!(["another-service", AUDIENCE]);
    assert!(v.verify(&sign(&ec, &c), NOW_MS).is_ok(), "an audience array holding ours");
    c["aud"] = json!(["another-service"]);
    refused(&v, &sign(&ec, &c), NOW_MS, "audience");
    c.as_object_mut().unwrap().remove("aud");
    refused(&v, &sign(&ec, &c), NOW_MS, "audience");

    let mut c = claims("alice");
    c["iss"] = json!("https://evil.example");
    refused(&v, &sign(&ec, &c), NOW_MS, "issuer");
    c.as_object_mut().unwrap().remove("iss");
    refused(&v, &sign(&ec, &c), NOW_MS, "issuer");
}

#[test]
fn badly_signed_tokens_are_refused() {
    let (ed, other) = (ed_key("d1"), ed_key("d1"));
    let v = verifier(&[&ed]);
    // Signed by a key that is not in the JWKS (same kid).
    refused(&v, &sign(&other, &claims("alice")), NOW_MS, "signature");
    // A valid token whose payload was changed.
    let good = sign(&ed, &claims("alice"));
    let parts: Vec<&str> = good.split('.').collect();
    let forged_payload = URL_SAFE_NO_PAD.encode(claims("admin").to_string());
    refused(&v, &format!("{}.{forged_payload}.{}", parts[0], parts[2]), NOW_MS, "signature");
    // A truncated signature, garbage, an empty string.
    refused(&v, &good[..good.len() - 4], NOW_MS, "signature");
    refused(&v, "not-a-token", NOW_MS, "header");
    refused(&v, "", NOW_MS, "header");
    // A kid the JWKS does not hold.
    let mut stranger = ed_key("unknown-kid");
    stranger.encoding = ed.encoding.clone();
    refused(&v, &sign(&stranger, &claims("alice")), NOW_MS, "signature");
}

#[test]
fn alg_none_and_hmac_tokens_are_refused() {
    let rsa = rsa_key("r1");
    let v = verifier(&[&rsa]);
    let c = claims("alice");
    refused(&v, &raw_token(&json!({"alg": "none", "typ": "JWT"}), &c, None), NOW_MS, "header");
    refused(&v, &raw_token(&json!({"alg": "None"}), &c, None), NOW_MS, "header");
    // The classic confusion: HS256 "signed" with the RSA public key as the HMAC secret.
    let public = serde_json::to_vec(&rsa.jwk).unwrap();
    for secret in [&public[..], rsa.jwk["n"].as_str().unwrap().as_bytes()] {
        let t = raw_token(&json!({"alg": "HS256", "kid": "r1"}), &c, Some(secret));
        refused(&v, &t, NOW_MS, "alg is not");
    }
    // An ES256 token where only an RSA key exists.
    let ec = ec_key("r1");
    refused(&v, &sign(&ec, &c), NOW_MS, "signature");
}

#[test]
fn the_principal_comes_from_sub_or_the_configured_claim() {
    let ed = ed_key("d1");
    let mut policy = JwtPolicy::new(ISSUER, AUDIENCE);
    policy.principal_claim = "email".into();
    let v = JwtVerifier::from_jwks(&jwks(&[&ed]), policy).unwrap();
    let mut c = claims("subject-123");
    refused(&v, &sign(&ed, &c), NOW_MS, "principal claim");
    c["email"] = json!("alice@example.com");
    assert_eq!(v.verify(&sign(&ed, &c), NOW_MS).unwrap().principal, "alice@example.com");
    for bad in [json!(""), json!(42), json!("a\nb")] {
        c["email"] = bad;
        refused(&v, &sign(&ed, &c), NOW_MS, "principal claim");
    }
}

#[test]
fn unusable_jwks_keys_are_left_out_and_named() {
    let ed = ed_key("d1");
    let doc = json!({"keys": [
        {"kty": "oct", "kid": "h1", "k": "c2VjcmV0"},
        {"kty": "EC", "kid": "p384", "crv": "P-384", "x": "AAAA", "y": "AAAA"},
        {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
        {"kty": "RSA", "kid": "ps", "alg": "PS256", "n": "AQAB", "e": "AQAB"},
        {"kty": "XYZ"},
        ed.jwk.clone(),
    ]});
    let v = JwtVerifier::from_jwks(&doc.to_string(), JwtPolicy::new(ISSUER, AUDIENCE)).unwrap();
    assert_eq!(v.key_count(), 1);
    let skipped = v.skipped().join("\n");
    for want in [
        "key 0: a symmetric (oct) key",
        "key 1: curve P384",
        "key 2: \"use\" is not \"sig\"",
        "key 3: alg PS256",
        "key 4: not a supported JWK",
    ] {
        assert!(skipped.contains(want), "{skipped}\nshould contain {want}");
    }
    // The oct key is never used, even for an HS256 token signed with its secret.
    let t = raw_token(&json!({"alg": "HS256", "kid": "h1"}), &claims("alice"), Some(b"secret"));
    refused(&v, &t, NOW_MS, "alg is not");
    assert!(v.verify(&sign(&ed, &claims("alice")), NOW_MS).is_ok());

    let only_bad = json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}).to_string();
    assert!(JwtVerifier::from_jwks(&only_bad, JwtPolicy::new(ISSUER, AUDIENCE)).unwrap_err().contains("no usable"));
    assert!(JwtVerifier::from_jwks("{}", JwtPolicy::new(ISSUER, AUDIENCE)).unwrap_err().contains("keys"));
    assert!(JwtVerifier::from_jwks("nope", JwtPolicy::new(ISSUER, AUDIENCE)).unwrap_err().contains("not JSON"));
    assert!(JwtVerifier::from_jwks(&jwks(&[&ed]), JwtPolicy::new("", AUDIENCE)).is_err());
}

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
