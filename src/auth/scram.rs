//! SCRAM (RFC 5802) with SHA-256 (RFC 7677) and SHA-512: key derivation, the message
//! grammar, and the client's state machine.
//!
//! ```text
//! client-first  n,,n=<user>,r=<client nonce>
//! server-first  r=<client nonce + server nonce>,s=<base64 salt>,i=<iterations>
//! client-final  c=biws,r=<nonce>,p=<base64 ClientProof>
//! server-final  v=<base64 ServerSignature>
//! ```
//!
//! Channel binding is not used (`n,,`): the client has verified the broker's certificate,
//! so no one sits between them. Passwords are normalized with SASLprep (RFC 4013) when
//! they are valid SASLprep input, and used as their UTF-8 bytes otherwise (as PostgreSQL
//! does), identically by `qwire users add`, the client and the broker's PLAIN check.

use std::borrow::Cow;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::{digest, hmac, pbkdf2};
use zeroize::Zeroizing;

use super::{ct_eq, Mechanism};

/// Fewest PBKDF2 iterations accepted (RFC 7677 §4: at least 4096).
pub const MIN_ITERATIONS: u32 = 4096;
/// Most PBKDF2 iterations a client will compute: a bound on what a broker can make a
/// client spend (about a second at 1 M iterations of SHA-512 on a laptop core).
pub const MAX_ITERATIONS: u32 = 1_000_000;
/// Iterations `qwire users add` uses unless told otherwise: RFC 7677's minimum, which
/// is also what the broker spends on each PLAIN attempt.
pub const DEFAULT_ITERATIONS: u32 = MIN_ITERATIONS;
/// Random bytes in a nonce (before base64): 18 bytes = 24 characters.
const NONCE_BYTES: usize = 18;

/// The hash a SCRAM mechanism is built on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScramHash {
    /// SCRAM-SHA-256.
    Sha256,
    /// SCRAM-SHA-512.
    Sha512,
}

impl ScramHash {
    /// The SASL mechanism built on this hash.
    pub fn mechanism(self) -> Mechanism {
        match self {
            ScramHash::Sha256 => Mechanism::ScramSha256,
            ScramHash::Sha512 => Mechanism::ScramSha512,
        }
    }

    /// Bytes of this hash's output (and of every SCRAM key and proof).
    pub fn output_len(self) -> usize {
        match self {
            ScramHash::Sha256 => 32,
            ScramHash::Sha512 => 64,
        }
    }

    fn hmac_alg(self) -> hmac::Algorithm {
        match self {
            ScramHash::Sha256 => hmac::HMAC_SHA256,
            ScramHash::Sha512 => hmac::HMAC_SHA512,
        }
    }

    /// `Hi(password, salt, i)` of RFC 5802: PBKDF2 with this hash's HMAC.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Zeroizing<Vec<u8>> {
        let alg = match self {
            ScramHash::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            ScramHash::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        };
        let mut out = Zeroizing::new(vec![0u8; self.output_len()]);
        let iterations = std::num::NonZeroU32::new(iterations.max(1)).expect("at least one iteration");
        pbkdf2::derive(alg, iterations, salt, password, &mut out);
        out
    }

    /// `HMAC(key, msg)`.
    pub fn hmac(self, key: &[u8], msg: &[u8]) -> Vec<u8> {
        hmac::sign(&hmac::Key::new(self.hmac_alg(), key), msg).as_ref().to_vec()
    }

    /// `H(data)`.
    pub fn hash(self, data: &[u8]) -> Vec<u8> {
        let alg = match self {
            ScramHash::Sha256 => &digest::SHA256,
            ScramHash::Sha512 => &digest::SHA512,
        };
        digest::digest(alg, data).as_ref().to_vec()
    }

    /// ClientKey, StoredKey and ServerKey from a salted password.
    pub fn keys(self, salted_password: &[u8]) -> ScramKeys {
        let client_key = Zeroizing::new(self.hmac(salted_password, b"Client Key"));
        let stored_key = self.hash(&client_key);
        let server_key = self.hmac(salted_password, b"Server Key");
        ScramKeys { client_key, stored_key, server_key }
    }
}

/// The keys RFC 5802 §3 derives from a salted password.
pub struct ScramKeys {
    /// `HMAC(SaltedPassword, "Client Key")`: what a proof proves knowledge of.
    pub client_key: Zeroizing<Vec<u8>>,
    /// `H(ClientKey)`: what the broker stores to check proofs.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`: what the broker stores to sign its answer.
    pub server_key: Vec<u8>,
}

/// Why a SCRAM message was refused. Never carries a password or a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScramError {
    /// A message does not follow the RFC 5802 grammar.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// The server's nonce does not extend the client's, or a final message repeats a
    /// nonce other than the exchange's.
    #[error("SCRAM nonce mismatch")]
    NonceMismatch,
    /// The iteration count is outside what this client computes.
    #[error("SCRAM iteration count {0} outside {MIN_ITERATIONS}..={MAX_ITERATIONS}")]
    Iterations(u32),
    /// The server's signature does not prove it holds this user's credentials.
    #[error("the broker's SCRAM signature is wrong: it does not hold this user's credentials")]
    ServerSignature,
    /// The server ended the exchange with an `e=` error.
    #[error("the broker refused the SCRAM exchange: {0}")]
    ServerError(String),
    /// A message arrived that the exchange's state does not expect.
    #[error("SCRAM message out of order: {0}")]
    State(&'static str),
    /// The user name cannot be used (empty, or not stable under SASLprep).
    #[error("invalid SCRAM user name: {0}")]
    InvalidUsername(&'static str),
}

/// Normalizes a password: SASLprep when it applies, the UTF-8 bytes otherwise.
pub fn normalize_password(password: &str) -> Cow<'_, str> {
    stringprep::saslprep(password).unwrap_or(Cow::Borrowed(password))
}

/// Checks a user name: non-empty, at most 255 bytes, no control characters, and
/// unchanged by SASLprep (so that every party compares the same bytes).
pub fn validate_username(name: &str) -> Result<(), ScramError> {
    if name.is_empty() {
        return Err(ScramError::InvalidUsername("empty"));
    }
    if name.len() > 255 {
        return Err(ScramError::InvalidUsername("longer than 255 bytes"));
    }
    if name.chars().any(char::is_control) {
        return Err(ScramError::InvalidUsername("contains control characters"));
    }
    match stringprep::saslprep(name) {
        Ok(p) if p == name => Ok(()),
        _ => Err(ScramError::InvalidUsername("changed or refused by SASLprep (RFC 4013)")),
    }
}

/// `saslname` of RFC 5802: `,` as `=2C`, `=` as `=3D`.
pub fn escape_username(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

fn unescape_username(s: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i + 1..i + 3) {
            Some("2C") => out.push(','),
            Some("3D") => out.push('='),
            _ => return Err(ScramError::Malformed("bad '=' escape in user name")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A fresh random nonce: printable, no `,`.
pub(crate) fn random_nonce() -> String {
    let mut b = [0u8; NONCE_BYTES];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    B64.encode(b)
}

fn valid_nonce(n: &str) -> bool {
    !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// Splits `a=value` attributes; `value` may contain `=` but not `,`.
fn attributes(msg: &str) -> impl Iterator<Item = Result<(u8, &str), ScramError>> {
    msg.split(',').map(|part| {
        let b = part.as_bytes();
        if b.len() < 2 || b[1] != b'=' || !b[0].is_ascii_alphabetic() {
            return Err(ScramError::Malformed("attribute is not 'a=value'"));
        }
        Ok((b[0], &part[2..]))
    })
}

/// Takes the next attribute, which must be `name`.
fn expect<'a>(
    it: &mut impl Iterator<Item = Result<(u8, &'a str), ScramError>>,
    name: u8,
    what: &'static str,
) -> Result<&'a str, ScramError> {
    match it.next() {
        Some(Ok((n, v))) if n == name => Ok(v),
        Some(Err(e)) => Err(e),
        _ => Err(ScramError::Malformed(what)),
    }
}

fn utf8(msg: &[u8]) -> Result<&str, ScramError> {
    std::str::from_utf8(msg).map_err(|_| ScramError::Malformed("not UTF-8"))
}

/// A parsed client-first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    /// The GS2 header, including its trailing comma (`n,,`), as the client sent it.
    pub gs2_header: String,
    /// The authorization identity (`a=`), if any.
    pub authzid: Option<String>,
    /// The user name, unescaped.
    pub username: String,
    /// The client nonce.
    pub nonce: String,
    /// `client-first-message-bare`: everything after the GS2 header.
    pub bare: String,
}

impl ClientFirst {
    /// Parses a client-first message. Channel binding (`p=`) and extensions are refused.
    pub fn parse(msg: &[u8]) -> Result<ClientFirst, ScramError> {
        let msg = utf8(msg)?;
        let mut parts = msg.splitn(3, ',');
        let (cb, authz, bare) = match (parts.next(), parts.next(), parts.next()) {
            (Some(cb), Some(authz), Some(bare)) => (cb, authz, bare),
            _ => return Err(ScramError::Malformed("client-first has no GS2 header")),
        };
        match cb {
            "n" | "y" => {}
            _ if cb.starts_with("p=") => return Err(ScramError::Malformed("channel binding is not supported")),
            _ => return Err(ScramError::Malformed("bad GS2 channel-binding flag")),
        }
        let authzid = match authz {
            "" => None,
            a => Some(unescape_username(a.strip_prefix("a=").ok_or(ScramError::Malformed("bad GS2 authzid"))?)?),
        };
        let mut it = attributes(bare);
        if bare.starts_with("m=") {
            return Err(ScramError::Malformed("mandatory extensions are not supported"));
        }
        let username = unescape_username(expect(&mut it, b'n', "client-first lacks n=")?)?;
        let nonce = expect(&mut it, b'r', "client-first lacks r=")?;
        if !valid_nonce(nonce) {
            return Err(ScramError::Malformed("bad client nonce"));
        }
        if username.is_empty() {
            return Err(ScramError::Malformed("empty user name"));
        }
        // Optional extensions after r= are allowed by RFC 5802 and ignored.
        if let Some(Err(e)) = it.find(Result::is_err) {
            return Err(e);
        }
        Ok(ClientFirst {
            gs2_header: format!("{cb},{authz},"),
            authzid,
            username,
            nonce: nonce.to_owned(),
            bare: bare.to_owned(),
        })
    }
}

/// A parsed server-first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFirst {
    /// Client nonce followed by server nonce.
    pub nonce: String,
    /// The user's salt.
    pub salt: Vec<u8>,
    /// PBKDF2 iterations.
    pub iterations: u32,
}

impl ServerFirst {
    /// Formats `r=…,s=…,i=…`.
    pub fn format(nonce: &str, salt: &[u8], iterations: u32) -> String {
        format!("r={nonce},s={},i={iterations}", B64.encode(salt))
    }

    /// Parses a server-first message.
    pub fn parse(msg: &[u8]) -> Result<ServerFirst, ScramError> {
        let msg = utf8(msg)?;
        if let Some(e) = msg.strip_prefix("e=") {
            return Err(ScramError::ServerError(e.chars().take(64).collect()));
        }
        let mut it = attributes(msg);
        if msg.starts_with("m=") {
            return Err(ScramError::Malformed("mandatory extensions are not supported"));
        }
        let nonce = expect(&mut it, b'r', "server-first lacks r=")?;
        let salt = B64
            .decode(expect(&mut it, b's', "server-first lacks s=")?)
            .map_err(|_| ScramError::Malformed("salt is not base64"))?;
        let iterations = expect(&mut it, b'i', "server-first lacks i=")?
            .parse::<u32>()
            .map_err(|_| ScramError::Malformed("iteration count is not a number"))?;
        if !valid_nonce(nonce) || salt.is_empty() {
            return Err(ScramError::Malformed("bad nonce or empty salt"));
        }
        Ok(ServerFirst { nonce: nonce.to_owned(), salt, iterations })
    }
}

/// A parsed client-final message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFinal {
    /// The `c=` value, decoded: the GS2 header (plus channel binding data, unused here).
    pub channel_binding: Vec<u8>,
    /// The `r=` value.
    pub nonce: String,
    /// The decoded `p=` value.
    pub proof: Vec<u8>,
    /// `client-final-message-without-proof`.
    pub without_proof: String,
}

impl ClientFinal {
    /// Parses a client-final message; `p=` must be its last attribute.
    pub fn parse(msg: &[u8]) -> Result<ClientFinal, ScramError> {
        let msg = utf8(msg)?;
        let (without_proof, proof) =
            msg.rsplit_once(",p=").ok_or(ScramError::Malformed("client-final lacks p= at the end"))?;
        let mut it = attributes(without_proof);
        let channel_binding = B64
            .decode(expect(&mut it, b'c', "client-final lacks c=")?)
            .map_err(|_| ScramError::Malformed("c= is not base64"))?;
        let nonce = expect(&mut it, b'r', "client-final lacks r=")?;
        if let Some(Err(e)) = it.find(Result::is_err) {
            return Err(e);
        }
        let proof = B64.decode(proof).map_err(|_| ScramError::Malformed("proof is not base64"))?;
        Ok(ClientFinal { channel_binding, nonce: nonce.to_owned(), proof, without_proof: without_proof.to_owned() })
    }
}

/// The `AuthMessage` both sides sign.
pub fn auth_message(client_first_bare: &str, server_first: &str, client_final_without_proof: &str) -> String {
    format!("{client_first_bare},{server_first},{client_final_without_proof}")
}

/// `ClientProof = ClientKey XOR HMAC(StoredKey, AuthMessage)`.
pub fn client_proof(hash: ScramHash, keys: &ScramKeys, auth_message: &str) -> Vec<u8> {
    let signature = hash.hmac(&keys.stored_key, auth_message.as_bytes());
    keys.client_key.iter().zip(signature).map(|(k, s)| k ^ s).collect()
}

enum ClientState {
    Initial,
    FirstSent { bare: String },
    FinalSent { server_signature: Vec<u8> },
    Done,
}

/// The client side of one SCRAM exchange.
///
/// `client_first` → send; feed the server-first to `handle_server_first` → send the
/// client-final it returns; feed the server-final to `handle_server_final`, which checks
/// that the broker proved it holds the user's credentials. Any error ends the exchange.
pub struct ScramClient {
    hash: ScramHash,
    username: String,
    password: Zeroizing<String>,
    nonce: String,
    state: ClientState,
}

impl std::fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramClient")
            .field("hash", &self.hash)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl ScramClient {
    /// An exchange for `username` with a fresh random nonce.
    pub fn new(hash: ScramHash, username: &str, password: &str) -> Result<ScramClient, ScramError> {
        ScramClient::with_nonce(hash, username, password, random_nonce())
    }

    /// An exchange with a given client nonce (for test vectors).
    pub fn with_nonce(
        hash: ScramHash,
        username: &str,
        password: &str,
        nonce: String,
    ) -> Result<ScramClient, ScramError> {
        validate_username(username)?;
        if !valid_nonce(&nonce) {
            return Err(ScramError::Malformed("bad client nonce"));
        }
        Ok(ScramClient {
            hash,
            username: username.to_owned(),
            password: Zeroizing::new(normalize_password(password).into_owned()),
            nonce,
            state: ClientState::Initial,
        })
    }

    /// The client-first message.
    pub fn client_first(&mut self) -> String {
        let bare = format!("n={},r={}", escape_username(&self.username), self.nonce);
        let msg = format!("n,,{bare}");
        self.state = ClientState::FirstSent { bare };
        msg
    }

    /// Checks the server-first message and computes the client-final message.
    pub fn handle_server_first(&mut self, msg: &[u8]) -> Result<String, ScramError> {
        let ClientState::FirstSent { bare } = std::mem::replace(&mut self.state, ClientState::Done) else {
            return Err(ScramError::State("server-first before client-first"));
        };
        let first = ServerFirst::parse(msg)?;
        if !first.nonce.starts_with(&self.nonce) || first.nonce.len() == self.nonce.len() {
            return Err(ScramError::NonceMismatch);
        }
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&first.iterations) {
            return Err(ScramError::Iterations(first.iterations));
        }
        let salted = self.hash.salted_password(self.password.as_bytes(), &first.salt, first.iterations);
        let keys = self.hash.keys(&salted);
        let without_proof = format!("c={},r={}", B64.encode("n,,"), first.nonce);
        let server_first = utf8(msg)?;
        let auth = auth_message(&bare, server_first, &without_proof);
        let proof = client_proof(self.hash, &keys, &auth);
        let server_signature = self.hash.hmac(&keys.server_key, auth.as_bytes());
        self.state = ClientState::FinalSent { server_signature };
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks the server-final message: the broker must prove it holds the credentials.
    pub fn handle_server_final(&mut self, msg: &[u8]) -> Result<(), ScramError> {
        let ClientState::FinalSent { server_signature } = std::mem::replace(&mut self.state, ClientState::Done) else {
            return Err(ScramError::State("server-final before client-final"));
        };
        let msg = utf8(msg)?;
        if let Some(e) = msg.strip_prefix("e=") {
            return Err(ScramError::ServerError(e.chars().take(64).collect()));
        }
        let v = msg.strip_prefix("v=").ok_or(ScramError::Malformed("server-final lacks v="))?;
        let v = v.split(',').next().unwrap_or_default();
        let got = B64.decode(v).map_err(|_| ScramError::Malformed("server signature is not base64"))?;
        if ct_eq(&got, &server_signature) {
            Ok(())
        } else {
            Err(ScramError::ServerSignature)
        }
    }
}

#[cfg(test)]
#[path = "scram_tests.rs"]
mod tests;
