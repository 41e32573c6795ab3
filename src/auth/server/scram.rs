//! The broker's side of SCRAM and of PLAIN, both checked against the salted SCRAM data of
//! the credentials file.
//!
//! An unknown user is answered exactly like a known one: a decoy salt (the same for the
//! same name every time, derived from a broker secret), the most common iteration count,
//! the same HMAC work, and at the end the same generic refusal as a wrong password.

use zeroize::Zeroizing;

use super::credentials::{ScramCredential, UserStore, SALT_BYTES};
use super::Refusal;
use crate::auth::ct_eq;
use crate::auth::scram::{
    auth_message, normalize_password, random_nonce, ClientFinal, ClientFirst, ScramHash, ServerFirst,
};

/// Derives decoy credentials for unknown users from a broker secret.
pub struct Decoys {
    secret: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Decoys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Decoys(***)")
    }
}

impl Decoys {
    /// Decoys keyed by `secret`. It must stay the same across broker restarts (or a
    /// prober could tell unknown users by their salt changing): the broker derives it from
    /// the secret it keeps in its data directory.
    pub fn new(secret: &[u8]) -> Decoys {
        Decoys { secret: Zeroizing::new(secret.to_vec()) }
    }

    /// The credential an unknown `name` appears to have.
    pub fn credential(&self, hash: ScramHash, name: &str, iterations: u32) -> ScramCredential {
        let derive = |label: &str| {
            let mut msg = Vec::with_capacity(label.len() + 1 + name.len());
            msg.extend_from_slice(label.as_bytes());
            msg.push(0);
            msg.extend_from_slice(name.as_bytes());
            hash.hmac(&self.secret, &msg)
        };
        let mut salt = derive(hash.mechanism().name());
        salt.truncate(SALT_BYTES);
        ScramCredential { salt, iterations, stored_key: derive("stored"), server_key: derive("server") }
    }
}

/// What the final message is checked against.
struct Pending {
    user: String,
    known: bool,
    cred: ScramCredential,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

enum State {
    AwaitFirst,
    AwaitFinal(Box<Pending>),
    Done,
}

/// The broker's side of one SCRAM exchange. Any message after a failure, or after the
/// exchange completed, is refused: a final message can be used once.
pub struct ScramServer {
    hash: ScramHash,
    state: State,
}

impl std::fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramServer").field("hash", &self.hash).finish_non_exhaustive()
    }
}

impl ScramServer {
    /// An exchange for `hash`.
    pub fn new(hash: ScramHash) -> ScramServer {
        ScramServer { hash, state: State::AwaitFirst }
    }

    /// The mechanism's hash.
    pub fn hash(&self) -> ScramHash {
        self.hash
    }

    /// Handles client-first; returns server-first. `server_nonce` is appended to the
    /// client's nonce (`None`: a fresh random one).
    pub fn handle_client_first(
        &mut self,
        msg: &[u8],
        users: &UserStore,
        decoys: &Decoys,
        server_nonce: Option<&str>,
    ) -> Result<String, Refusal> {
        if !matches!(std::mem::replace(&mut self.state, State::Done), State::AwaitFirst) {
            return Err(Refusal::failed("SCRAM client-first out of order"));
        }
        let first = ClientFirst::parse(msg).map_err(|_| Refusal::failed("malformed SCRAM client-first"))?;
        if first.authzid.as_ref().is_some_and(|a| *a != first.username) {
            return Err(Refusal::failed("SCRAM authorization identity differs from the user"));
        }
        let (known, cred) = match users.get(&first.username, self.hash) {
            Some(c) => (true, c.clone()),
            None => (false, decoys.credential(self.hash, &first.username, users.decoy_iterations(self.hash))),
        };
        let nonce = format!("{}{}", first.nonce, server_nonce.map_or_else(random_nonce, str::to_owned));
        let server_first = ServerFirst::format(&nonce, &cred.salt, cred.iterations);
        self.state = State::AwaitFinal(Box::new(Pending {
            user: first.username,
            known,
            cred,
            gs2_header: first.gs2_header,
            client_first_bare: first.bare,
            server_first: server_first.clone(),
            nonce,
        }));
        Ok(server_first)
    }

    /// Handles client-final; returns server-final and the authenticated user.
    pub fn handle_client_final(&mut self, msg: &[u8]) -> Result<(String, String), Refusal> {
        let State::AwaitFinal(pending) = std::mem::replace(&mut self.state, State::Done) else {
            return Err(Refusal::failed("SCRAM client-final out of order"));
        };
        let Pending { user, known, cred, gs2_header, client_first_bare, server_first, nonce } = *pending;
        let fail = |reason| Refusal::failed(reason).for_user(known.then(|| user.clone()));
        let last = ClientFinal::parse(msg).map_err(|_| fail("malformed SCRAM client-final"))?;
        if !ct_eq(last.nonce.as_bytes(), nonce.as_bytes()) {
            return Err(fail("SCRAM nonce mismatch (a replayed or forged final message)"));
        }
        if last.channel_binding != gs2_header.as_bytes() {
            return Err(fail("SCRAM channel binding differs from the GS2 header"));
        }
        let auth = auth_message(&client_first_bare, &server_first, &last.without_proof);
        // ClientKey = proof XOR HMAC(StoredKey, AuthMessage); valid when H(ClientKey) = StoredKey.
        let signature = self.hash.hmac(&cred.stored_key, auth.as_bytes());
        let mut proof = last.proof;
        proof.resize(signature.len(), 0);
        let client_key: Zeroizing<Vec<u8>> = Zeroizing::new(proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect());
        let proof_ok = ct_eq(&self.hash.hash(&client_key), &cred.stored_key);
        let server_signature = self.hash.hmac(&cred.server_key, auth.as_bytes());
        if !(proof_ok & known) {
            return Err(fail("wrong SCRAM proof or unknown user"));
        }
        use base64::Engine as _;
        let server_final = format!("v={}", base64::engine::general_purpose::STANDARD.encode(server_signature));
        Ok((server_final, user))
    }
}

/// Checks a PLAIN message (RFC 4616: `authzid NUL authcid NUL passwd`) against the
/// credentials file; returns the user. Costs one PBKDF2 at the user's iteration count,
/// known user or not.
pub fn verify_plain(msg: &[u8], users: &UserStore, decoys: &Decoys) -> Result<String, Refusal> {
    let malformed = || Refusal::failed("malformed PLAIN message");
    let text = std::str::from_utf8(msg).map_err(|_| malformed())?;
    let mut parts = text.split('\0');
    let (Some(authzid), Some(user), Some(password), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    if user.is_empty() || password.is_empty() || (!authzid.is_empty() && authzid != user) {
        return Err(malformed());
    }
    let (known, hash, cred) = match users.plain_credential(user) {
        Some((h, c)) => (true, h, c.clone()),
        None => {
            let h = users.decoy_plain_hash();
            (false, h, decoys.credential(h, user, users.decoy_iterations(h)))
        }
    };
    let salted = hash.salted_password(normalize_password(password).as_bytes(), &cred.salt, cred.iterations);
    let ok = ct_eq(&hash.keys(&salted).stored_key, &cred.stored_key);
    if ok & known {
        Ok(user.to_owned())
    } else {
        Err(Refusal::failed("wrong PLAIN password or unknown user").for_user(known.then(|| user.to_owned())))
    }
}
