//! `qwire broker --http ADDR [--http-plaintext]` and `--log-format json` as a user runs
//! them (HTTPS itself is tested against the library in tests/admin.rs).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::BrokerProcess;

fn free_tcp_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// A plain HTTP/1.1 GET; returns whatever came back.
fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn broker_serves_health_ready_and_metrics_and_logs_json() {
    let http = free_tcp_port();
    let mut b = BrokerProcess::new("");
    b.extra_args =
        vec!["--http".into(), http.to_string(), "--http-plaintext".into(), "--log-format".into(), "json".into()];
    b.start();
    let ready = get(http, "/ready");
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    assert!(ready.contains(r#""ready":true"#), "{ready}");
    assert!(get(http, "/health").contains(r#""status":"ok""#));
    let metrics = get(http, "/metrics");
    assert!(metrics.contains("# TYPE qwire_broker_connections_open gauge"), "{metrics}");
    // Every log line on stderr is a JSON object.
    let logs = b.stderr();
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.iter().any(|l| l.contains("broker listening")), "{logs}");
    for l in lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["level"].is_string() && v["fields"]["message"].is_string(), "{l}");
    }
}

#[test]
fn https_is_the_default_and_plaintext_stays_on_loopback() {
    let http = free_tcp_port();
    let mut b = BrokerProcess::new("");
    b.extra_args = vec!["--http".into(), http.to_string()];
    b.start();
    let answer = get(http, "/health");
    assert!(!answer.contains("HTTP/1.1 200"), "plain HTTP answered on the HTTPS listener: {answer}");

    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_qwire"))
        .args(["broker", "--listen", "127.0.0.1:0", "--http", "0.0.0.0:0", "--http-plaintext", "--certs"])
        .arg(b.certs.path())
        .arg("--data-dir")
        .arg(tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(8));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("only allowed on a loopback address"), "{err}");
}
