//! The credentials file: salted SCRAM data per user and mechanism, never a password.
//!
//! ```toml
//! # qwire users: salted SCRAM credentials (RFC 5802). No password is stored here.
//! [[user]]
//! name = "alice"
//! mechanism = "SCRAM-SHA-256"
//! iterations = 4096
//! salt = "base64"
//! stored_key = "base64"
//! server_key = "base64"
//! ```
//!
//! Written by `qwire users add|remove`, read by the broker (`--users FILE`), which reads
//! it again on SIGHUP. A file with any other key (a `password`, say) is refused. The stored
//! and server keys let no one log in (a SCRAM proof needs the client key, which only the
//! password gives), but they are what a password-guessing attack would start from: keep
//! the file readable by the broker only (`qwire users` writes it with mode 0600).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::auth::scram::{normalize_password, validate_username, ScramHash, MAX_ITERATIONS, MIN_ITERATIONS};
use crate::auth::Mechanism;

/// Salt bytes `qwire users add` draws (RFC 5802 leaves the size open; 16 is common).
pub const SALT_BYTES: usize = 16;

/// One user's SCRAM data for one mechanism.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredential {
    /// The salt.
    pub salt: Vec<u8>,
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// `H(ClientKey)`.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: Vec<u8>,
}

impl fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredential").field("iterations", &self.iterations).finish_non_exhaustive()
    }
}

impl ScramCredential {
    /// Derives the credential for `password` with a fresh random salt.
    pub fn derive(hash: ScramHash, password: &str, iterations: u32) -> ScramCredential {
        let mut salt = vec![0u8; SALT_BYTES];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut salt);
        ScramCredential::derive_with_salt(hash, password, salt, iterations)
    }

    /// Derives the credential for `password` with a given salt.
    pub fn derive_with_salt(hash: ScramHash, password: &str, salt: Vec<u8>, iterations: u32) -> ScramCredential {
        let salted = hash.salted_password(normalize_password(password).as_bytes(), &salt, iterations);
        let keys = hash.keys(&salted);
        ScramCredential { salt, iterations, stored_key: keys.stored_key, server_key: keys.server_key }
    }
}

/// A user as `qwire users list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSummary {
    /// User name (the principal).
    pub name: String,
    /// Mechanisms with credentials, and their iteration counts.
    pub mechanisms: Vec<(Mechanism, u32)>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    mechanism: String,
    iterations: u32,
    salt: String,
    stored_key: String,
    server_key: String,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileModel {
    #[serde(default)]
    user: Vec<Entry>,
}

/// The users of a credentials file, by name and mechanism.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserStore {
    users: BTreeMap<String, BTreeMap<ScramHash, ScramCredential>>,
}

const HEADER: &str = "# qwire users: salted SCRAM credentials (RFC 5802). No password is stored here.\n\
# Managed with `qwire users add|remove|list`; the broker reads it with --users and again on SIGHUP.\n\n";

impl UserStore {
    /// Parses a credentials file's text. Every entry is checked; the first bad one is
    /// named in the error.
    pub fn parse(text: &str) -> Result<UserStore, String> {
        let model: FileModel = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut store = UserStore::default();
        for (i, e) in model.user.into_iter().enumerate() {
            let at = |what: &str| format!("user entry {} ('{}'): {what}", i + 1, e.name);
            validate_username(&e.name).map_err(|err| at(&err.to_string()))?;
            let hash = Mechanism::from_name(&e.mechanism)
                .and_then(Mechanism::scram_hash)
                .ok_or_else(|| at(&format!("mechanism '{}' is not SCRAM-SHA-256 or SCRAM-SHA-512", e.mechanism)))?;
            if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&e.iterations) {
                return Err(at(&format!("iterations {} outside {MIN_ITERATIONS}..={MAX_ITERATIONS}", e.iterations)));
            }
            let decode = |field: &str, v: &str| B64.decode(v).map_err(|_| at(&format!("{field} is not base64")));
            let salt = decode("salt", &e.salt)?;
            let stored_key = decode("stored_key", &e.stored_key)?;
            let server_key = decode("server_key", &e.server_key)?;
            if salt.is_empty() {
                return Err(at("empty salt"));
            }
            if stored_key.len() != hash.output_len() || server_key.len() != hash.output_len() {
                return Err(at(&format!("keys must be {} bytes for {}", hash.output_len(), e.mechanism)));
            }
            let cred = ScramCredential { salt, iterations: e.iterations, stored_key, server_key };
            if store.users.entry(e.name.clone()).or_default().insert(hash, cred).is_some() {
                return Err(at(&format!("a second {} entry for this user", e.mechanism)));
            }
        }
        Ok(store)
    }

    /// Reads a credentials file; a missing file is an error (the broker was told to use it).
    pub fn load(path: &Path) -> Result<UserStore, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        UserStore::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Reads a credentials file, or an empty store when it does not exist yet (for
    /// `qwire users add` on a new file).
    pub fn load_or_empty(path: &Path) -> Result<UserStore, String> {
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(UserStore::default()),
            _ => UserStore::load(path),
        }
    }

    /// The file's text.
    pub fn to_toml(&self) -> String {
        let user = self
            .users
            .iter()
            .flat_map(|(name, creds)| {
                creds.iter().map(move |(hash, c)| Entry {
                    name: name.clone(),
                    mechanism: hash.mechanism().name().to_owned(),
                    iterations: c.iterations,
                    salt: B64.encode(&c.salt),
                    stored_key: B64.encode(&c.stored_key),
                    server_key: B64.encode(&c.server_key),
                })
            })
            .collect();
        let body = toml::to_string(&FileModel { user }).expect("the users model serializes");
        format!("{HEADER}{body}")
    }

    /// Writes the file atomically (temporary file, fsync, rename, fsync of the directory),
    /// readable and writable by its owner only.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        crate::broker::disk::write_atomic(path, self.to_toml().as_bytes(), 0o600, &crate::broker::disk::Syncer::os())
    }

    /// The credential of `name` for `hash`.
    pub fn get(&self, name: &str, hash: ScramHash) -> Option<&ScramCredential> {
        self.users.get(name)?.get(&hash)
    }

    /// The credential PLAIN checks a password against: SHA-256's if the user has one,
    /// else SHA-512's.
    pub fn plain_credential(&self, name: &str) -> Option<(ScramHash, &ScramCredential)> {
        let creds = self.users.get(name)?;
        creds.iter().next().map(|(h, c)| (*h, c))
    }

    /// Adds or replaces `name`'s credential for `hash`. Returns whether it replaced one.
    pub fn upsert(&mut self, name: &str, hash: ScramHash, cred: ScramCredential) -> Result<bool, String> {
        validate_username(name).map_err(|e| e.to_string())?;
        Ok(self.users.entry(name.to_owned()).or_default().insert(hash, cred).is_some())
    }

    /// Removes `name` (only its `hash` credential when given). Returns how many
    /// credentials went.
    pub fn remove(&mut self, name: &str, hash: Option<ScramHash>) -> usize {
        let Some(creds) = self.users.get_mut(name) else { return 0 };
        let removed = match hash {
            Some(h) => usize::from(creds.remove(&h).is_some()),
            None => std::mem::take(creds).len(),
        };
        if creds.is_empty() {
            self.users.remove(name);
        }
        removed
    }

    /// Every user, sorted by name.
    pub fn list(&self) -> Vec<UserSummary> {
        self.users
            .iter()
            .map(|(name, creds)| UserSummary {
                name: name.clone(),
                mechanisms: creds.iter().map(|(h, c)| (h.mechanism(), c.iterations)).collect(),
            })
            .collect()
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether there is no user.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The hash PLAIN checks an unknown user with: the one most users' PLAIN checks use
    /// (SHA-256 when tied or empty), so that its cost reveals nothing.
    pub fn decoy_plain_hash(&self) -> ScramHash {
        let sha512 = self.users.values().filter(|m| !m.contains_key(&ScramHash::Sha256)).count();
        if sha512 * 2 > self.users.len() {
            ScramHash::Sha512
        } else {
            ScramHash::Sha256
        }
    }

    /// The iteration count an unknown user appears to have for `hash`: the most common
    /// count among the real users (so that it reveals nothing), else the default.
    pub fn decoy_iterations(&self, hash: ScramHash) -> u32 {
        let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
        for c in self.users.values().filter_map(|m| m.get(&hash)) {
            *counts.entry(c.iterations).or_default() += 1;
        }
        counts.into_iter().max_by_key(|(i, n)| (*n, *i)).map_or(crate::auth::scram::DEFAULT_ITERATIONS, |(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> UserStore {
        let mut s = UserStore::default();
        s.upsert("alice", ScramHash::Sha256, ScramCredential::derive(ScramHash::Sha256, "pw-a", 4096)).unwrap();
        s.upsert("alice", ScramHash::Sha512, ScramCredential::derive(ScramHash::Sha512, "pw-a", 8192)).unwrap();
        s.upsert("o'brien \"x\"", ScramHash::Sha512, ScramCredential::derive(ScramHash::Sha512, "pw-b", 4096)).unwrap();
        s
    }

    #[test]
    fn the_file_round_trips_and_holds_no_password() {
        let s = store();
        let text = s.to_toml();
        assert!(text.starts_with("# qwire users"));
        assert!(!text.contains("pw-a") && !text.contains("pw-b"), "{text}");
        assert_eq!(UserStore::parse(&text).unwrap(), s);
        let names: Vec<_> = s.list().into_iter().map(|u| (u.name, u.mechanisms)).collect();
        assert_eq!(
            names,
            vec![
                ("alice".into(), vec![(Mechanism::ScramSha256, 4096), (Mechanism::ScramSha512, 8192)]),
                ("o'brien \"x\"".into(), vec![(Mechanism::ScramSha512, 4096)]),
            ]
        );
    }

    #[test]
    fn save_is_atomic_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        assert!(UserStore::load_or_empty(&path).unwrap().is_empty());
        assert!(UserStore::load(&path).is_err());
        let s = store();
        s.save(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(UserStore::load(&path).unwrap(), s);
        assert!(!dir.path().join("users.tmp").exists());
    }

    #[test]
    fn remove_takes_one_mechanism_or_the_user() {
        let mut s = store();
        assert_eq!(s.remove("alice", Some(ScramHash::Sha512)), 1);
        assert!(s.get("alice", ScramHash::Sha512).is_none());
        assert!(s.get("alice", ScramHash::Sha256).is_some());
        assert_eq!(s.remove("alice", None), 1);
        assert_eq!(s.remove("alice", None), 0);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn bad_files_are_refused_with_the_entry_named() {
        let s = store();
        let good = s.to_toml();
        let cases = [
            (good.replace("stored_key =", "password = \"pw-a\"\nstored_key ="), "unknown field"),
            (good.replacen("SCRAM-SHA-256", "PLAIN", 1), "is not SCRAM"),
            (good.replacen("iterations = 4096", "iterations = 100", 1), "iterations 100"),
            (good.replacen("salt = \"", "salt = \"*", 1), "salt is not base64"),
            (good.replacen("name = \"alice\"", "name = \"\"", 1), "invalid SCRAM user name"),
            (format!("{good}\n{}", good.split("[[user]]").nth(1).map(|e| format!("[[user]]{e}")).unwrap()), "a second"),
        ];
        for (text, want) in cases {
            let err = UserStore::parse(&text).unwrap_err();
            assert!(err.contains(want), "{err} should say {want}");
        }
        // A stored key of the wrong length for the mechanism.
        let short = good.replacen(
            &format!("stored_key = \"{}\"", B64.encode(&s.get("alice", ScramHash::Sha256).unwrap().stored_key)),
            &format!("stored_key = \"{}\"", B64.encode([0u8; 16])),
            1,
        );
        assert!(UserStore::parse(&short).unwrap_err().contains("keys must be 32 bytes"));
        assert!(UserStore::parse("").unwrap().is_empty());
    }

    #[test]
    fn decoys_take_the_most_common_iteration_count() {
        let mut s = UserStore::default();
        assert_eq!(s.decoy_iterations(ScramHash::Sha256), 4096);
        for (n, i) in [("a", 10_000), ("b", 10_000), ("c", 4096)] {
            s.upsert(n, ScramHash::Sha256, ScramCredential::derive(ScramHash::Sha256, "p", i)).unwrap();
        }
        assert_eq!(s.decoy_iterations(ScramHash::Sha256), 10_000);
        assert_eq!(s.decoy_iterations(ScramHash::Sha512), 4096);
        assert_eq!(s.decoy_plain_hash(), ScramHash::Sha256);
        for n in ["d", "e", "f", "g"] {
            s.upsert(n, ScramHash::Sha512, ScramCredential::derive(ScramHash::Sha512, "p", 4096)).unwrap();
        }
        assert_eq!(s.decoy_plain_hash(), ScramHash::Sha512, "most PLAIN checks are SHA-512 ones");
    }

    #[test]
    fn credentials_do_not_print_keys() {
        let c = ScramCredential::derive_with_salt(ScramHash::Sha256, "pw", vec![1; 16], 4096);
        let shown = format!("{c:?}");
        assert!(!shown.contains("stored_key") && !shown.contains("salt"), "{shown}");
    }
}
