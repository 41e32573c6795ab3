//! The `qwire` binary driven as a user would, against a real broker on 127.0.0.1:0:
//! produce / consume / topics, and every error a user is likely to hit, with its exit code
//! and its message.
//!
//! The broker runs on the test's multi-threaded runtime while the test thread blocks on
//! the child process.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A `qwire` command with logging quietened (errors still go to stderr).
fn qwire(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_qwire"));
    c.args(args).env("RUST_LOG", "error");
    c
}

/// Connection flags for `client` against broker `b`.
fn conn(b: &TestBroker, client: &str) -> Vec<String> {
    conn_at(&b.addr().to_string(), b.certs.path(), client, 5000)
}

/// Connection flags with a connect timeout (ms).
fn conn_at(addr: &str, certs: &Path, client: &str, timeout_ms: u32) -> Vec<String> {
    let timeout = timeout_ms.to_string();
    ["-s", addr, "--certs", certs.to_str().unwrap(), "--client", client, "--connect-timeout-ms", &timeout]
        .map(String::from)
        .to_vec()
}

/// Runs `qwire <cmd> <conn> <args>` and returns its output.
fn run(cmd: &[&str], conn: &[String], args: &[&str]) -> Output {
    run_with_stdin(cmd, conn, args, None)
}

/// [`run`], feeding `stdin` (closed after writing) when given.
fn run_with_stdin(cmd: &[&str], conn: &[String], args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut all: Vec<&str> = cmd.to_vec();
    all.extend(conn.iter().map(String::as_str));
    all.extend_from_slice(args);
    let mut c = qwire(&all);
    c.stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = c.spawn().expect("spawn qwire");
    if let Some(input) = stdin {
        let mut s = child.stdin.take().unwrap();
        s.write_all(input).unwrap();
    }
    child.wait_with_output().unwrap()
}

/// Stdout as text.
fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// Stderr as text.
fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// Asserts success and returns stdout.
#[track_caller]
fn ok(o: Output) -> String {
    assert!(o.status.success(), "exit {:?}\nstdout:\n{}\nstderr:\n{}", o.status.code(), stdout(&o), stderr(&o));
    stdout(&o)
}

/// Asserts exit `code` and that stderr says each of `needles` (on one `error:` line);
/// returns stderr.
#[track_caller]
fn fails(o: Output, code: i32, needles: &[&str]) -> String {
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(code), "stdout:\n{}\nstderr:\n{err}", stdout(&o));
    let line = err.lines().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("no error line in:\n{err}"));
    for n in needles {
        assert!(line.contains(n), "error line should mention {n:?}: {line}");
    }
    err
}

/// `sent I: partition P offset O` lines as (I, P, O).
fn sent_lines(out: &str) -> Vec<(u64, u32, i64)> {
    out.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("sent ")?;
            let (i, rest) = rest.split_once(": partition ")?;
            let (p, o) = rest.split_once(" offset ")?;
            Some((i.parse().ok()?, p.parse().ok()?, o.parse().ok()?))
        })
        .collect()
}

/// Parses one JSON object per line.
fn json_lines(out: &str) -> Vec<Value> {
    out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// A port on 127.0.0.1 where nothing listens (bound, then released).
fn dead_addr() -> String {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_with_key_attributes_and_count_then_consume_back_as_json() {
    let b = TestBroker::start().await;
    let c = conn(&b, "alice");
    let out = ok(run(
        &["produce"],
        &c,
        &["-t", "orders", "-p", "3", "-m", "order {i}", "-k", "customer-{i}", "-a", "source:cli,region:eu", "-c", "6"],
    ));
    let sent = sent_lines(&out);
    assert_eq!(sent.len(), 6, "{out}");
    assert_eq!(sent.iter().map(|s| s.0).collect::<Vec<_>>(), [0, 1, 2, 3, 4, 5]);
    assert!(out.lines().last().unwrap().starts_with("sent 6 of 6 records to 'orders'"), "{out}");

    let records = json_lines(&ok(run(&["consume"], &c, &["-t", "orders", "--format", "json"])));
    assert_eq!(records.len(), 6);
    for (i, p, o) in sent {
        let r = records
            .iter()
            .find(|r| r["partition"] == p && r["offset"] == o)
            .unwrap_or_else(|| panic!("record {i} at {p}/{o} not consumed: {records:?}"));
        assert_eq!(r["topic"], "orders");
        assert_eq!(r["value"], format!("order {i}"));
        assert_eq!(r["key"], format!("customer-{i}"));
        assert_eq!(r["headers"], serde_json::json!({"source": "cli", "region": "eu"}));
    }
    // The same key always lands on the same partition (key hash).
    let again = sent_lines(&ok(run(&["produce"], &c, &["-t", "orders", "-m", "again", "-k", "customer-4"])));
    let first = records.iter().find(|r| r["key"] == "customer-4").unwrap();
    assert_eq!(again[0].1 as u64, first["partition"].as_u64().unwrap());

    // One partition, from an offset, a count; text shows key, value and headers.
    let p = first["partition"].as_u64().unwrap().to_string();
    let text = ok(run(&["consume"], &c, &["-t", "orders", "-p", &p, "--from", "0", "--count", "1"]));
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("key=customer-") && text.contains("[source:cli,region:eu]"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_lines_from_stdin_explicit_partition_acks_and_compression() {
    let b = TestBroker::start().await;
    let c = conn(&b, "alice");
    ok(run(&["topics", "create"], &c, &["lines", "--partitions", "2"]));
    let out = ok(run_with_stdin(
        &["produce"],
        &c,
        &["-t", "lines", "--lines", "-", "--partition", "1", "--compression", "zstd", "--acks", "leader"],
        Some(b"alpha\nbeta\r\n\ngamma"),
    ));
    assert_eq!(sent_lines(&out), [(0, 1, 0), (1, 1, 1), (2, 1, 2), (3, 1, 3)], "{out}");
    let values: Vec<Value> = json_lines(&ok(run(&["consume"], &c, &["-t", "lines", "-p", "1", "--format", "json"])))
        .into_iter()
        .map(|r| r["value"].clone())
        .collect();
    assert_eq!(values, ["alpha", "beta", "", "gamma"]);

    // acks=none: no offsets to print, idempotence turned off so the builder accepts it.
    let out =
        ok(run(&["produce"], &c, &["-t", "lines", "--partition", "0", "-m", "x{i}", "-c", "3", "--acks", "none"]));
    assert_eq!(out.matches("(acks=none: no offset)").count(), 3, "{out}");
    let out =
        ok(run(&["produce"], &c, &["-t", "lines", "--partition", "0", "-m", "r", "--reliable", "--linger-ms", "0"]));
    assert_eq!(sent_lines(&out), [(0, 0, 3)], "{out}");
    let text = ok(run(&["consume"], &c, &["-t", "lines", "-p", "0"]));
    assert_eq!(text, "0:0 key=null x0\n0:1 key=null x1\n0:2 key=null x2\n0:3 key=null r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_pipelined_produce_of_many_records_prints_one_summary_line() {
    let b = TestBroker::start().await;
    let c = conn(&b, "alice");
    let out = ok(run(&["produce"], &c, &["-t", "bulk", "-m", "record {i}", "-c", "50000", "-i", "0", "--quiet"]));
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.starts_with("sent 50000 of 50000 records to 'bulk' in "), "{out}");
    // Pipelined: the records went out in batches, not one acks=all round trip each.
    let m = b.handle.as_ref().unwrap().metrics();
    assert!(m.batches_appended * 20 < 50_000, "{} batches for 50000 records", m.batches_appended);
    let describe = ok(run(&["topics", "describe"], &c, &["bulk"]));
    let row: Vec<&str> = describe.lines().nth(2).unwrap().split_whitespace().collect();
    assert_eq!(row[..4], ["0", "0", "0", "50000"], "{describe}");
    let last = ok(run(&["consume"], &c, &["-t", "bulk", "--from", "49999"]));
    assert_eq!(last, "0:49999 key=null record 49999\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_create_list_and_describe() {
    let b = TestBroker::start().await;
    let c = conn(&b, "alice");
    assert_eq!(ok(run(&["topics", "list"], &c, &[])), "");
    assert_eq!(
        ok(run(&["topics", "create"], &c, &["payments", "--partitions", "3"])),
        "created topic 'payments' with 3 partitions\n"
    );
    ok(run(&["topics", "create"], &c, &["audit"]));
    fails(run(&["topics", "create"], &c, &["payments", "-p", "2"]), 1, &["TOPIC_ALREADY_EXISTS", "payments"]);
    ok(run(&["topics", "create"], &c, &["payments", "-p", "2", "--if-not-exists"]));
    fails(run(&["topics", "create"], &c, &["bad name"]), 8, &["INVALID_TOPIC_NAME"]);
    assert_eq!(ok(run(&["topics", "list"], &c, &[])), "audit partitions=1\npayments partitions=3\n");

    ok(run(&["produce"], &c, &["-t", "payments", "--partition", "2", "-m", "p{i}", "-c", "4", "-q"]));
    let d = ok(run(&["topics", "describe"], &c, &["payments"]));
    let lines: Vec<&str> = d.lines().collect();
    assert_eq!(lines[0], "topic 'payments': 3 partitions");
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["partition", "leader", "log_start", "end_offset", "size_bytes"]
    );
    assert_eq!(lines.len(), 5, "{d}");
    let row = |p: usize| lines[2 + p].split_whitespace().map(|s| s.parse::<u64>().unwrap()).collect::<Vec<_>>();
    assert_eq!(row(0), [0, 0, 0, 0, 0]);
    let r2 = row(2);
    assert_eq!(r2[..4], [2, 0, 0, 4]);
    assert!(r2[4] > 0, "size on disk: {d}");
    // Describing does not create.
    fails(run(&["topics", "describe"], &c, &["nope"]), 6, &["'nope' not found", "principal 'alice'"]);
    assert!(!ok(run(&["topics", "list"], &c, &[])).contains("nope"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_follow_reads_new_records_on_every_partition_until_interrupted() {
    let b = TestBroker::start().await;
    let c = conn(&b, "alice");
    ok(run(&["produce"], &c, &["-t", "live", "-p", "2", "-m", "old", "-q"]));
    let mut args: Vec<String> = vec!["consume".into()];
    args.extend(c.iter().cloned());
    args.extend(
        ["-t", "live", "--follow", "--from", "latest", "--poll-ms", "20", "--format", "json"].map(String::from),
    );
    let mut child = qwire(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Polling (fetching) means the consumer has taken its 'latest' offsets.
    let fetches = || b.handle.as_ref().unwrap().metrics().fetch_requests;
    let before = fetches();
    let deadline = Instant::now() + Duration::from_secs(10);
    while fetches() < before + 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    for p in ["0", "1"] {
        ok(run(&["produce"], &c, &["-t", "live", "--partition", p, "-m", &format!("new on {p}"), "-q"]));
    }
    // Read until both records arrived, then Ctrl-C.
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = Vec::new();
        for l in std::io::BufReader::new(stdout).lines() {
            lines.push(l.unwrap());
            if lines.len() == 2 {
                break;
            }
        }
        lines
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    let lines = reader.join().unwrap();
    let mut values: Vec<String> =
        json_lines(&lines.join("\n")).iter().map(|r| r["value"].as_str().unwrap().to_string()).collect();
    values.sort();
    assert_eq!(values, ["new on 0", "new on 1"], "the old record is before 'latest'");
    assert_eq!(exit.code(), Some(0), "Ctrl-C ends --follow cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_is_named_with_exit_code_3() {
    let certs = Certs::new();
    let addr = dead_addr();
    let c = conn_at(&addr, certs.path(), "alice", 300);
    // The message names the connect timeout in force: the short one given.
    let msg = format!("no broker answered at {addr} within 300ms");
    fails(run(&["produce"], &c, &["-t", "x", "-m", "hi"]), 3, &[&msg, "is a broker listening there?"]);
    fails(run(&["consume"], &c, &["-t", "x"]), 3, &[&msg]);
    fails(run(&["topics", "list"], &c, &[]), 3, &[&msg]);
    // Several servers: each is tried and named.
    let other = dead_addr();
    let c = conn_at(&format!("{addr},{other}"), certs.path(), "alice", 300);
    fails(run(&["produce"], &c, &["-t", "x", "-m", "hi"]), 3, &[&addr, &other]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_list_uses_the_first_broker_that_answers() {
    let b = TestBroker::start().await;
    let servers = format!("{},{}", dead_addr(), b.addr());
    let c = conn_at(&servers, b.certs.path(), "alice", 300);
    let out = ok(run(&["produce"], &c, &["-t", "multi", "-m", "m"]));
    assert_eq!(sent_lines(&out), [(0, 0, 0)], "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_certificates_say_who_refused_and_why_with_exit_code_4() {
    let b = TestBroker::start().await;
    let mallory = conn(&b, "mallory");
    let unknown_ca = ["refused by the broker", "not signed by a CA the broker trusts"];
    fails(run(&["produce"], &mallory, &["-t", "orders", "-m", "hi"]), 4, &unknown_ca);
    fails(run(&["consume"], &mallory, &["-t", "orders"]), 4, &unknown_ca);
    fails(run(&["topics", "list"], &conn(&b, "old"), &[]), 4, &["refused by the broker", "expired"]);
    fails(run(&["produce"], &conn(&b, "old"), &["-t", "orders", "-m", "hi"]), 4, &["expired"]);
    // A broker certificate from another CA is refused by the client.
    let other = Certs::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(other.path().join("ca.crt"), dir.path().join("ca.crt")).unwrap();
    for f in ["alice.crt", "alice.key"] {
        std::fs::copy(b.certs.path().join(f), dir.path().join(f)).unwrap();
    }
    let c = conn_at(&b.addr().to_string(), dir.path(), "alice", 5000);
    fails(run(&["topics", "list"], &c, &[]), 4, &["refused by the client"]);
    // A missing client certificate is a configuration error, named.
    fails(run(&["produce"], &conn(&b, "nobody"), &["-t", "orders", "-m", "hi"]), 8, &["nobody.crt"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_denials_name_principal_topic_and_permission_with_exit_code_5() {
    let acl_dir = tempfile::tempdir().unwrap();
    let acl = acl_dir.path().join("acl.toml");
    std::fs::write(
        &acl,
        r#"
        [[allow]]
        principal = "alice"
        topics = ["orders*"]
        permissions = ["read", "write", "admin"]
        [[allow]]
        principal = "bob"
        topics = ["orders"]
        permissions = ["read"]
        "#,
    )
    .unwrap();
    let b = TestBroker::start_with(|c| c.acl_file = Some(acl.clone())).await;
    ok(run(&["topics", "create"], &conn(&b, "alice"), &["orders", "-p", "2"]));
    ok(run(&["produce"], &conn(&b, "alice"), &["-t", "orders", "-m", "a"]));

    let bob = conn(&b, "bob");
    let err = fails(
        run(&["produce"], &bob, &["-t", "orders", "-m", "b{i}", "-c", "3"]),
        5,
        // An idempotent producer (the default) first needs a producer id, which takes write
        // permission on some topic: bob has none, so his records fail on that refusal.
        &["principal 'bob' may not write any topic", "not persisted"],
    );
    assert!(err.contains("record 0"), "says which record: {err}");
    fails(run(&["topics", "create"], &bob, &["orders-2"]), 5, &["principal 'bob' may not admin topic 'orders-2'"]);
    assert_eq!(json_lines(&ok(run(&["consume"], &bob, &["-t", "orders", "--format", "json"]))).len(), 1);
    assert_eq!(ok(run(&["topics", "list"], &bob, &[])), "orders partitions=2\n");

    let carol = conn(&b, "carol");
    fails(
        run(&["produce"], &carol, &["-t", "orders", "-m", "c"]),
        5,
        &["principal 'carol' may not write topic 'orders'"],
    );
    fails(run(&["consume"], &carol, &["-t", "orders"]), 5, &["principal 'carol' may not read topic 'orders'"]);
    assert_eq!(ok(run(&["topics", "list"], &carol, &[])), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_topics_with_auto_create_off_exit_with_code_6() {
    let b = TestBroker::start_with(|c| c.auto_create_topics = false).await;
    let c = conn(&b, "alice");
    fails(
        run(&["produce"], &c, &["-t", "ghost", "-m", "boo"]),
        6,
        &["topic 'ghost' does not exist", "does not create topics automatically", "--partitions"],
    );
    fails(run(&["consume"], &c, &["-t", "ghost"]), 6, &["topic 'ghost' does not exist"]);
    fails(run(&["topics", "describe"], &c, &["ghost"]), 6, &["'ghost' not found"]);
    // -p creates it; then an explicit partition outside it is refused before sending.
    let out = ok(run(&["produce"], &c, &["-t", "ghost", "-p", "2", "-m", "boo"]));
    assert_eq!(sent_lines(&out).len(), 1, "{out}");
    fails(
        run(&["produce"], &c, &["-t", "ghost", "--partition", "5", "-m", "x"]),
        6,
        &["has 2 partitions; partition 5"],
    );
    fails(run(&["consume"], &c, &["-t", "ghost", "-p", "2"]), 6, &["has 2 partitions; partition 2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_too_large_give_size_and_limit_with_exit_code_7() {
    let b = TestBroker::start_with(|c| c.max_frame_size = 64 * 1024).await;
    let c = conn(&b, "alice");
    let big = "x".repeat(3000);
    fails(
        run(&["produce"], &c, &["-t", "sizes", "-m", &big, "--max-record-size", "1000"]),
        7,
        &["record 0 failed", "exceeds max_record_size 1000", "bytes"],
    );
    // Larger than the broker's frame limit (from its HelloOk): refused before it is sent,
    // naming the limit.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.bin");
    std::fs::write(&file, vec![7u8; 200_000]).unwrap();
    fails(
        run(&["produce"], &c, &["-t", "sizes", "--file", file.to_str().unwrap()]),
        7,
        &["a record of 200", "exceeds the largest batch the broker accepts", "not persisted"],
    );
    // Only the large line fails; the others are sent, and the index is named.
    let input = format!("small\n{big}\nsmall again\n");
    let o = run_with_stdin(
        &["produce"],
        &c,
        &["-t", "sizes", "--lines", "-", "--max-record-size", "1000"],
        Some(input.as_bytes()),
    );
    let out = stdout(&o);
    fails(o, 7, &["record 1 failed", "exceeds max_record_size 1000"]);
    assert_eq!(sent_lines(&out).iter().map(|s| s.0).collect::<Vec<_>>(), [0, 2], "{out}");
    assert!(out.contains("failed 1: record of "), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_input_is_refused_before_connecting_with_exit_code_8() {
    let certs = Certs::new();
    // Nothing listens: the input check must come first.
    let c = conn_at(&dead_addr(), certs.path(), "alice", 300);
    for (attrs, bad) in [("source:web,oops", "'oops'"), (":v", "':v'"), ("a:b,", "''")] {
        fails(
            run(&["produce"], &c, &["-t", "x", "-m", "hi", "-a", attrs]),
            8,
            &["invalid attribute", bad, "expected key:value"],
        );
    }
    fails(run(&["produce"], &c, &["-t", "x", "--file", "/nonexistent/file"]), 8, &["cannot read --file"]);
    fails(run(&["produce"], &c, &["-t", "x", "-m", "m", "--batch-size", "0"]), 8, &["batch_size"]);
    fails(run(&["consume"], &c, &["-t", "x", "--from", "soon"]), 2, &["earliest, latest or an offset"]);
    // Usage errors are clap's (2): no payload, conflicting flags.
    assert_eq!(run(&["produce"], &c, &["-t", "x"]).status.code(), Some(2));
    assert_eq!(run(&["produce"], &c, &["-t", "x", "-m", "m", "--reliable", "--acks", "none"]).status.code(), Some(2));
}

#[test]
fn every_command_has_help_with_an_example() {
    for cmd in [
        &["produce"][..],
        &["consume"],
        &["topics"],
        &["topics", "create"],
        &["topics", "list"],
        &["topics", "describe"],
    ] {
        let mut args = cmd.to_vec();
        args.push("--help");
        let o = qwire(&args).output().unwrap();
        let help = ok(o);
        assert!(help.contains("Example"), "{cmd:?} --help has no example:\n{help}");
        assert!(help.contains("qwire "), "{cmd:?}");
    }
    let top = ok(qwire(&["--help"]).output().unwrap());
    assert!(top.contains("3 broker unreachable") && top.contains("8 invalid input"), "{top}");
}

#[test]
fn broker_help_documents_the_acl_file_format() {
    let help = ok(qwire(&["broker", "--help"]).output().unwrap());
    for needle in ["[[allow]]", "principal = ", "topics = ", "permissions = ", "read, write, admin", "An empty file"] {
        assert!(help.contains(needle), "`qwire broker --help` does not say {needle:?}:\n{help}");
    }
}
