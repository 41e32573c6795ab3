//! SASL from the command line against a `qwire broker` process: logins with each
//! mechanism, refusals and their exit codes, SIGHUP reloading the users file, `required`
//! mode, and a broker log that holds none of the secrets used.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::auth::*;
use common::BrokerProcess;

/// `[auth]` of a broker config using `files`.
fn auth_toml(files: &AuthFiles) -> String {
    format!(
        "[auth]\nclient_auth = \"optional\"\nusers_file = \"{}\"\njwt_jwks = \"{}\"\njwt_issuer = \"{ISSUER}\"\n\
         jwt_audience = \"{AUDIENCE}\"\n",
        files.users.display(),
        files.jwks.display()
    )
}

/// Runs `qwire ARGS` with stdin and environment.
fn qwire(args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_qwire"));
    c.args(args).env("RUST_LOG", "error").envs(env.iter().copied());
    c.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    if let Some(input) = stdin {
        let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    }
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[track_caller]
fn ok(o: &Output) -> String {
    assert!(o.status.success(), "exit {:?}\n{}\n{}", o.status.code(), text(&o.stdout), text(&o.stderr));
    text(&o.stdout)
}

#[track_caller]
fn fails(o: &Output, code: i32, needle: &str) {
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "stdout: {}\nstderr: {err}", text(&o.stdout));
    assert!(err.contains(needle), "stderr should say {needle:?}:\n{err}");
}

/// Connection flags without a certificate: the broker's address and its CA.
fn sasl_conn(b: &BrokerProcess) -> Vec<String> {
    let ca = b.certs.path().join("ca.crt");
    vec!["-s".into(), b.addr.to_string(), "--ca".into(), ca.display().to_string()]
}

fn args<'a>(cmd: &[&'a str], conn: &'a [String], more: &[&'a str]) -> Vec<&'a str> {
    cmd.iter().copied().chain(conn.iter().map(String::as_str)).chain(more.iter().copied()).collect()
}

fn started(files: &AuthFiles, extra_toml: &str) -> BrokerProcess {
    let mut b = BrokerProcess::new(&format!("{}{extra_toml}", auth_toml(files)));
    b.env.push(("RUST_LOG".into(), "debug,quinn=info,rustls=info".into()));
    b.start();
    b
}

#[test]
fn each_mechanism_logs_in_from_the_command_line_and_refusals_say_why() {
    let files = AuthFiles::new();
    let b = started(&files, "");
    let conn = sasl_conn(&b);
    let pw = [("PW", ALICE_PASSWORD)];
    let out = ok(&qwire(
        &args(
            &["topics", "create", "orders"],
            &conn,
            &["--sasl-mechanism", "SCRAM-SHA-256", "--username", "alice", "--password-env", "PW"],
        ),
        None,
        &pw,
    ));
    assert!(out.contains("created topic 'orders'"), "{out}");
    // The password from stdin (PLAIN), SCRAM-SHA-512 for bob, a token file.
    let list = ok(&qwire(
        &args(&["topics", "list"], &conn, &["--sasl-mechanism", "PLAIN", "--username", "alice"]),
        Some(&format!("{ALICE_PASSWORD}\n")),
        &[],
    ));
    assert_eq!(list, "orders partitions=1\n");
    let bob = [("BPW", BOB_PASSWORD)];
    let sasl512 = ["--sasl-mechanism", "SCRAM-SHA-512", "--username", "bob", "--password-env", "BPW"];
    ok(&qwire(&args(&["topics", "describe", "orders"], &conn, &sasl512), None, &bob));
    let token = files.dir.path().join("svc.jwt");
    std::fs::write(&token, files.token("svc", Duration::from_secs(600)).expose()).unwrap();
    let t = token.to_str().unwrap();
    assert_eq!(ok(&qwire(&args(&["topics", "list"], &conn, &["--token-file", t]), None, &[])), list);
    ok(&qwire(
        &args(&["consume", "-t", "orders"], &conn, &["--token-file", t, "--sasl-mechanism", "OAUTHBEARER"]),
        None,
        &[],
    ));

    // Produce with SASL, then read it back with another mechanism.
    let out =
        ok(&qwire(&args(&["produce", "-t", "orders", "-m", "order {i}", "-c", "3"], &conn, &sasl512), None, &bob));
    assert!(out.contains("sent 3 of 3 records"), "{out}");
    let lines = ok(&qwire(
        &args(&["produce", "-t", "orders", "--lines", "-", "--token-file", t], &conn, &[]),
        Some("l1\nl2\n"),
        &[],
    ));
    assert!(lines.contains("sent 2 of 2 records"), "{lines}");
    let read =
        ok(&qwire(&args(&["consume", "-t", "orders", "--format", "json"], &conn, &["--token-file", t]), None, &[]));
    assert_eq!(read.lines().count(), 5, "{read}");
    // Records from stdin: the password cannot come from there too.
    fails(
        &qwire(
            &args(
                &["produce", "-t", "orders", "--lines", "-"],
                &conn,
                &["--sasl-mechanism", "PLAIN", "--username", "alice"],
            ),
            Some("x\n"),
            &[],
        ),
        8,
        "use --password-env",
    );
    // A wrong password when producing: exit code 9 too.
    fails(
        &qwire(&args(&["produce", "-t", "orders", "-m", "x"], &conn, &sasl512), None, &[("BPW", "wrong")]),
        9,
        "AUTHENTICATION_FAILED",
    );

    // A wrong password and an unknown user: the same answer, exit code 9.
    let wrong = [("PW", "not-the-password")];
    let scram = |user: &'static str| {
        args(
            &["topics", "list"],
            &conn,
            &["--sasl-mechanism", "SCRAM-SHA-256", "--username", user, "--password-env", "PW"],
        )
    };
    let said = "answered AUTHENTICATION_FAILED (50): authentication failed";
    fails(&qwire(&scram("alice"), None, &wrong), 9, said);
    fails(&qwire(&scram("nobody"), None, &wrong), 9, said);
    // An expired token.
    let expired =
        files.token_with("svc", Duration::from_secs(1), ISSUER, AUDIENCE, &[("exp", serde_json::json!(now_s() - 300))]);
    std::fs::write(&token, expired.expose()).unwrap();
    fails(&qwire(&args(&["topics", "list"], &conn, &["--token-file", t]), None, &[]), 9, said);
    // Flags that do not fit together, a missing token file, a missing CA.
    fails(&qwire(&args(&["topics", "list"], &conn, &["--sasl-mechanism", "PLAIN"]), None, &[]), 8, "needs --username");
    fails(
        &qwire(&args(&["topics", "list"], &conn, &["--sasl-mechanism", "OAUTHBEARER"]), None, &[]),
        8,
        "--token-file",
    );
    fails(&qwire(&args(&["topics", "list"], &conn, &["--username", "alice"]), None, &[]), 8, "need --sasl-mechanism");
    fails(
        &qwire(&args(&["topics", "list"], &conn, &["--token-file", "/nonexistent/t.jwt"]), None, &[]),
        8,
        "cannot read token file",
    );
    let no_ca = ["-s", &b.addr.to_string(), "--ca", "/nonexistent/ca.crt", "--token-file", t].map(String::from);
    fails(&qwire(&args(&["topics", "list"], &no_ca, &[]), None, &[]), 8, "CA certificate");
    // No --password flag exists.
    fails(&qwire(&args(&["topics", "list"], &conn, &["--password", "x"]), None, &[]), 2, "--password");
}

#[test]
fn sighup_reloads_the_users_file() {
    let files = AuthFiles::new();
    let b = started(&files, "");
    let conn = sasl_conn(&b);
    let login = || {
        qwire(
            &args(
                &["topics", "list"],
                &conn,
                &["--sasl-mechanism", "SCRAM-SHA-256", "--username", "carol", "--password-env", "PW"],
            ),
            None,
            &[("PW", "carol-Pa55word-93ac")],
        )
    };
    fails(&login(), 9, "authentication failed");
    ok(&qwire(
        &["users", "add", "carol", "--file", files.users.to_str().unwrap(), "--password-env", "PW"],
        None,
        &[("PW", "carol-Pa55word-93ac")],
    ));
    // SIGHUP is handled asynchronously: poll until the reload is logged.
    let hup =
        || assert!(Command::new("kill").args(["-HUP", &b.pid().unwrap().to_string()]).status().unwrap().success());
    hup();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !b.stderr().contains("SASL credentials reloaded") {
        assert!(Instant::now() < deadline, "no reload logged:\n{}", b.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    ok(&login());
    // A file that no longer parses: logged, and the users in force stay.
    std::fs::write(&files.users, "not toml [").unwrap();
    hup();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !b.stderr().contains("SASL credentials not reloaded") {
        assert!(Instant::now() < deadline, "no refusal logged:\n{}", b.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    ok(&login());
    let mut b = b;
    assert!(b.running(), "SIGHUP does not stop the broker");
}

#[test]
fn required_mode_refuses_certificate_less_clients_from_the_command_line() {
    let files = AuthFiles::new();
    let mut b = BrokerProcess::new("");
    b.start();
    let conn = sasl_conn(&b);
    let token = files.dir.path().join("t.jwt");
    std::fs::write(&token, files.token("svc", Duration::from_secs(600)).expose()).unwrap();
    for more in [
        vec!["--token-file", token.to_str().unwrap()],
        vec!["--sasl-mechanism", "PLAIN", "--username", "alice", "--password-env", "PW"],
        vec!["--sasl-mechanism", "SCRAM-SHA-512", "--username", "alice", "--password-env", "PW"],
    ] {
        let o = qwire(&args(&["topics", "list"], &conn, &more), None, &[("PW", ALICE_PASSWORD)]);
        fails(&o, 4, "certificate_required");
    }
    // The broker refuses to start with SASL credentials while certificates are required.
    let dir = tempfile::tempdir().unwrap();
    let bad = BrokerProcess::new(&auth_toml(&files).replace("optional", "required"));
    let o = qwire(
        &[
            "broker",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--certs",
            bad.certs.path().to_str().unwrap(),
            "--client-auth",
            "required",
            "--users",
            files.users.to_str().unwrap(),
        ],
        None,
        &[],
    );
    fails(&o, 8, "needs client auth 'optional'");
}

#[test]
fn the_broker_log_holds_no_secret() {
    let files = AuthFiles::new();
    let b = started(&files, "");
    let conn = sasl_conn(&b);
    let token = files.token("svc-logs", Duration::from_secs(600));
    let token_file = files.dir.path().join("svc.jwt");
    std::fs::write(&token_file, token.expose()).unwrap();
    let wrong = "wrong-Pa55word-5d0c1a77";
    let mut secrets =
        vec![ALICE_PASSWORD.to_owned(), BOB_PASSWORD.to_owned(), wrong.to_owned(), token.expose().to_owned()];
    // A token's signature alone, too.
    secrets.push(token.expose().rsplit('.').next().unwrap().to_owned());
    let run = |mech: &str, user: &str, pw: &str| {
        qwire(
            &args(&["topics", "list"], &conn, &["--sasl-mechanism", mech, "--username", user, "--password-env", "PW"]),
            None,
            &[("PW", pw)],
        )
    };
    for mech in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
        let user = if mech == "SCRAM-SHA-512" { "bob" } else { "alice" };
        let pw = if user == "bob" { BOB_PASSWORD } else { ALICE_PASSWORD };
        ok(&run(mech, user, pw));
        let o = run(mech, user, wrong);
        fails(&o, 9, "authentication failed");
        // A password typed as the user name must not reach the log either.
        let o = run(mech, wrong, pw);
        fails(&o, 9, "authentication failed");
        for s in &secrets {
            assert!(!text(&o.stderr).contains(s.as_str()), "the client's error shows a secret");
        }
    }
    ok(&qwire(&args(&["topics", "list"], &conn, &["--token-file", token_file.to_str().unwrap()]), None, &[]));
    let log = b.stderr();
    assert!(
        log.contains("authentication failed") && log.contains("authenticated"),
        "the log says what happened:\n{log}"
    );
    assert!(log.matches("authentication failed").count() >= 6);
    for s in &secrets {
        assert!(!log.contains(s.as_str()), "the broker log holds a secret ({} bytes):\n{log}", s.len());
    }
}
