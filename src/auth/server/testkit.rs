//! Test signing keys and token builders for the JWT and session tests.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{self, KeyPair};
use serde_json::{json, Value};

/// A fixed "now" for deterministic claims checks: 2023-11-14T22:13:20Z.
pub(crate) const NOW_MS: u64 = 1_700_000_000_000;
pub(crate) const NOW_S: u64 = NOW_MS / 1000;
pub(crate) const ISSUER: &str = "https://idp.example";
pub(crate) const AUDIENCE: &str = "qwire";

/// A private key that signs tokens, and its public JWK.
pub(crate) struct TestKey {
    pub(crate) alg: Algorithm,
    pub(crate) encoding: EncodingKey,
    pub(crate) jwk: Value,
}

pub(crate) fn rsa_key(kid: &str) -> TestKey {
    let b64: String = include_str!("../../../tests/fixtures/jwt_rsa_test_key.der.b64").split_whitespace().collect();
    let der = STANDARD.decode(b64).expect("fixture is base64");
    let pair = signature::RsaKeyPair::from_der(&der).expect("fixture is a PKCS#1 RSA key");
    let parts = signature::RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
    TestKey {
        alg: Algorithm::RS256,
        encoding: EncodingKey::from_rsa_der(&der),
        jwk: json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
            "n": URL_SAFE_NO_PAD.encode(&parts.n), "e": URL_SAFE_NO_PAD.encode(&parts.e)}),
    }
}

pub(crate) fn ec_key(kid: &str) -> TestKey {
    let rng = SystemRandom::new();
    let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
    let pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
    let pair = signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
    let point = pair.public_key().as_ref();
    assert_eq!((point.len(), point[0]), (65, 4), "uncompressed P-256 point");
    TestKey {
        alg: Algorithm::ES256,
        encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
        jwk: json!({"kty": "EC", "kid": kid, "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..])}),
    }
}

pub(crate) fn ed_key(kid: &str) -> TestKey {
    let pkcs8 = signature::Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    let pair = signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    TestKey {
        alg: Algorithm::EdDSA,
        encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
        jwk: json!({"kty": "OKP", "kid": kid, "crv": "Ed25519", "alg": "EdDSA",
            "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref())}),
    }
}

pub(crate) fn jwks(keys: &[&TestKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

/// Claims valid at [`NOW_MS`] for an hour, for `sub`.
pub(crate) fn claims(sub: &str) -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": NOW_S, "exp": NOW_S + 3600})
}

/// Signs `claims` with `key`, naming its kid.
pub(crate) fn sign(key: &TestKey, claims: &Value) -> String {
    let mut header = Header::new(key.alg);
    header.kid = key.jwk.get("kid").and_then(Value::as_str).map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
}

/// A token with any header, signed with nothing (`alg: none`) or with an HMAC secret.
pub(crate) fn raw_token(header: &Value, claims: &Value, hmac_secret: Option<&[u8]>) -> String {
    let msg = format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let sig = match hmac_secret {
        None => String::new(),
        Some(secret) => URL_SAFE_NO_PAD
            .encode(ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret), msg.as_bytes())),
    };
    format!("{msg}.{sig}")
}
