//! The authentication tools driven as an operator would. `qwire users`: the credentials
//! file it writes holds no password, its credentials verify the password given, and a
//! password never comes from a flag. `qwire jwt`: its tokens verify against its JWKS.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use qwire::auth::scram::ScramHash;
use qwire::auth::server::credentials::UserStore;
use qwire::auth::server::scram::{verify_plain, Decoys};

/// Runs `qwire users ARGS` with `stdin` and extra environment variables.
fn users(args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
    qwire(&[&["users"], args].concat(), stdin, env)
}

/// Runs `qwire ARGS`.
fn qwire(args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_qwire"));
    c.args(args).env("RUST_LOG", "error");
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn qwire");
    if let Some(input) = stdin {
        // The command may exit before reading (a usage error): a broken pipe is fine.
        let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    }
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[track_caller]
fn ok(o: Output) -> String {
    assert!(o.status.success(), "exit {:?}\nstdout: {}\nstderr: {}", o.status.code(), text(&o.stdout), text(&o.stderr));
    text(&o.stdout)
}

#[track_caller]
fn fails(o: Output, code: i32, needle: &str) -> String {
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "stdout: {}\nstderr: {err}", text(&o.stdout));
    assert!(err.contains(needle), "stderr should say {needle:?}:\n{err}");
    err
}

fn plain_ok(file: &Path, user: &str, password: &str) -> bool {
    let store = UserStore::load(file).unwrap();
    verify_plain(format!("\0{user}\0{password}").as_bytes(), &store, &Decoys::new(b"test")).is_ok()
}

#[test]
fn add_list_update_and_remove_users() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.toml");
    let f = file.to_str().unwrap();

    // Password from stdin (one line), then from an environment variable.
    let out = ok(users(&["add", "alice", "--mechanism", "SCRAM-SHA-256", "--file", f], Some("correct horse\n"), &[]));
    assert_eq!(out, format!("added user 'alice' (SCRAM-SHA-256, 4096 iterations) in {f}\n"));
    let out = ok(users(
        &[
            "add",
            "bob",
            "--mechanism",
            "SCRAM-SHA-512",
            "--file",
            f,
            "--password-env",
            "BOB_PW",
            "--iterations",
            "8192",
        ],
        None,
        &[("BOB_PW", "battery staple")],
    ));
    assert!(out.starts_with("added user 'bob' (SCRAM-SHA-512, 8192 iterations)"), "{out}");

    // The file: mode 0600, salted data only, and it verifies the passwords given.
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let content = std::fs::read_to_string(&file).unwrap();
    assert!(!content.contains("correct horse") && !content.contains("battery staple"), "{content}");
    assert!(content.contains("stored_key") && content.contains("server_key") && content.contains("salt"));
    assert!(plain_ok(&file, "alice", "correct horse"));
    assert!(plain_ok(&file, "bob", "battery staple"));
    assert!(!plain_ok(&file, "alice", "battery staple"));

    let listed = ok(users(&["list", "--file", f], None, &[]));
    assert_eq!(listed, "alice\tSCRAM-SHA-256 (4096 iterations)\nbob\tSCRAM-SHA-512 (8192 iterations)\n");

    // A second mechanism for alice with a new password: both her credentials change.
    let out = ok(users(
        &["add", "alice", "--mechanism", "SCRAM-SHA-256", "--mechanism", "SCRAM-SHA-512", "--file", f],
        Some("new password\r\n"),
        &[],
    ));
    assert!(out.starts_with("updated user 'alice' (SCRAM-SHA-256, SCRAM-SHA-512,"), "{out}");
    assert!(plain_ok(&file, "alice", "new password"), "the CR LF of the line is not part of the password");
    assert!(!plain_ok(&file, "alice", "correct horse"));
    let store = UserStore::load(&file).unwrap();
    assert!(store.get("alice", ScramHash::Sha512).is_some());

    // Remove one mechanism, then the user; removing what is not there is an error.
    ok(users(&["remove", "alice", "--mechanism", "SCRAM-SHA-512", "--file", f], None, &[]));
    assert_eq!(
        ok(users(&["list", "--file", f], None, &[])),
        "alice\tSCRAM-SHA-256 (4096 iterations)\nbob\tSCRAM-SHA-512 (8192 iterations)\n"
    );
    let out = ok(users(&["remove", "alice", "--file", f], None, &[]));
    assert_eq!(out, format!("removed 1 credential(s) of user 'alice' from {f}\n"));
    fails(users(&["remove", "alice", "--file", f], None, &[]), 8, "no user 'alice'");
    fails(
        users(&["remove", "bob", "--mechanism", "SCRAM-SHA-256", "--file", f], None, &[]),
        8,
        "with a SCRAM-SHA-256 credential",
    );
    assert_eq!(ok(users(&["list", "--file", f], None, &[])), "bob\tSCRAM-SHA-512 (8192 iterations)\n");
}

#[test]
fn passwords_never_come_from_a_flag_and_bad_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.toml");
    let f = file.to_str().unwrap();
    // There is no --password flag.
    fails(users(&["add", "alice", "--password", "pw", "--file", f], None, &[]), 2, "--password");
    // Empty passwords, from stdin or the environment; a variable that is not set.
    fails(users(&["add", "alice", "--file", f], Some("\n"), &[]), 8, "empty password (read from stdin)");
    fails(users(&["add", "alice", "--file", f], None, &[]), 8, "empty password");
    fails(
        users(&["add", "alice", "--file", f, "--password-env", "NOPE_NOT_SET"], None, &[]),
        8,
        "NOPE_NOT_SET is not set",
    );
    fails(
        users(&["add", "alice", "--file", f, "--password-env", "EMPTY"], None, &[("EMPTY", "")]),
        8,
        "read from $EMPTY",
    );
    // PLAIN is not a credential type: PLAIN logins use the SCRAM data.
    fails(users(&["add", "alice", "--mechanism", "PLAIN", "--file", f], Some("pw\n"), &[]), 2, "SCRAM-SHA-256");
    fails(users(&["add", "alice", "--iterations", "1000", "--file", f], Some("pw\n"), &[]), 8, "--iterations");
    fails(users(&["add", "", "--file", f], Some("pw\n"), &[]), 8, "user name");
    fails(users(&["add", "a\u{ad}b", "--file", f], Some("pw\n"), &[]), 8, "SASLprep");
    assert!(!file.exists(), "nothing was written");
    // A missing or damaged file is reported by name; the damaged file is left alone.
    fails(users(&["list", "--file", f], None, &[]), 8, f);
    std::fs::write(&file, "[[user]]\nname = \"alice\"\npassword = \"pw\"\n").unwrap();
    fails(users(&["add", "bob", "--file", f], Some("pw\n"), &[]), 8, "unknown field `password`");
    assert!(std::fs::read_to_string(&file).unwrap().contains("password = \"pw\""));
}

#[test]
fn the_default_mechanism_is_scram_sha_256() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("u.toml");
    let f = file.to_str().unwrap();
    ok(users(&["add", "carol", "--file", f], Some("pw\n"), &[]));
    assert_eq!(ok(users(&["list", "--file", f], None, &[])), "carol\tSCRAM-SHA-256 (4096 iterations)\n");
}

#[test]
fn dev_tokens_verify_against_the_dev_jwks() {
    use qwire::auth::server::jwt::{JwtPolicy, JwtVerifier};
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("jwt");
    let o = out.to_str().unwrap();
    let said = ok(qwire(&["jwt", "keygen", "--out", o], None, &[]));
    assert!(said.contains("jwt-signing.key") && said.contains("jwks.json") && said.contains("development only"));
    let key = out.join("jwt-signing.key");
    let k = key.to_str().unwrap();
    let token =
        ok(qwire(&["jwt", "token", "--key", k, "--subject", "alice", "--claim", "email=a@example.com"], None, &[]));
    let token = token.trim();
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let v = JwtVerifier::load(&out.join("jwks.json"), JwtPolicy::new("dev", "qwire")).unwrap();
    let verified = v.verify(token, now_ms).unwrap();
    assert_eq!(verified.principal, "alice");
    assert!(verified.lifetime_ms > 3_500_000 && verified.lifetime_ms <= 3_600_000, "{}", verified.lifetime_ms);
    let mut policy = JwtPolicy::new("dev", "qwire");
    policy.principal_claim = "email".into();
    assert_eq!(
        JwtVerifier::load(&out.join("jwks.json"), policy).unwrap().verify(token, now_ms).unwrap().principal,
        "a@example.com"
    );
    // Another audience: refused by a broker that wants "qwire".
    let other = ok(qwire(&["jwt", "token", "--key", k, "--subject", "alice", "--audience", "else"], None, &[]));
    assert!(v.verify(other.trim(), now_ms).is_err());
    fails(
        qwire(&["jwt", "token", "--key", out.join("jwks.json").to_str().unwrap(), "--subject", "a"], None, &[]),
        8,
        "jwks.json",
    );
    fails(qwire(&["jwt", "token", "--key", k, "--subject", "a", "--claim", "novalue"], None, &[]), 8, "NAME=VALUE");
}
