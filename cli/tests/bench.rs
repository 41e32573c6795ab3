//! A short `qwire bench` run: the harness works end to end and its JSON is complete.
//! (Performance itself is measured by running the benchmark, never asserted in tests.)

mod common;

use std::process::Command;

fn bench(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_qwire")).arg("bench").args(args).arg("--json").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bench failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let last = stdout.lines().last().expect("output");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}"))
}

#[test]
fn a_short_bench_against_the_embedded_broker_acks_every_record() {
    let v = bench(&["--records", "5000", "--warmup", "0.2", "--partitions", "3", "--key-space", "50", "--compare-raw"]);
    assert_eq!(v["records"], 5000);
    assert_eq!(v["acked"], 5000);
    assert_eq!(v["failed"], 0);
    assert_eq!(v["mode"], "disk");
    assert!(v["records_per_sec"].as_f64().unwrap() > 0.0);
    let l = &v["latency_ms"];
    let q = |k: &str| l[k].as_f64().unwrap();
    assert!(q("p50") <= q("p95") && q("p95") <= q("p99") && q("p99") <= q("p999") && q("p999") <= q("max"), "{l}");
    assert!(q("avg") > 0.0, "{l}");
    assert!(v["raw_mb_per_sec"].as_f64().unwrap() > 0.0);
    assert!(v["ratio"].as_f64().unwrap() > 0.0);
    assert!(v["raw_rtt_us"]["p99"].as_u64().unwrap() > 0);
    assert_eq!(v["config"]["partitions"], 3);
}

#[test]
fn sink_mode_and_rate_limited_runs_report_their_mode() {
    let v = bench(&[
        "--records",
        "2000",
        "--warmup",
        "0",
        "--sink",
        "--rate",
        "20000",
        "--linger-ms",
        "0",
        "--acks",
        "all",
        "--compression",
        "zstd",
        "--payload",
        "json",
        "--record-size",
        "512",
    ]);
    assert_eq!(v["acked"], 2000);
    assert_eq!(v["mode"], "sink");
    assert_eq!(v["config"]["compression"], "zstd");
    assert!(v["producer"]["compression_ratio"].as_f64().unwrap() > 1.5, "json compresses");
}

/// A rate-limited run against a broker the test owns: the rate reached the harness, the
/// measured rate never exceeds it (pacing; a loaded machine may fall short of it, so no
/// lower bound is asserted), the latency figures are ordered, and every record is read
/// back from the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_run_keeps_its_rate_and_every_record_is_stored() {
    let b = common::TestBroker::start().await;
    let (addr, certs) = (b.addr().to_string(), b.certs.path().to_str().unwrap().to_owned());
    let v = tokio::task::spawn_blocking(move || {
        bench(&[
            "--broker",
            &addr,
            "--certs",
            &certs,
            "--client",
            "alice",
            "--topic",
            "paced",
            "--partitions",
            "2",
            "--records",
            "3000",
            "--rate",
            "1000",
            "--warmup",
            "0",
        ])
    })
    .await
    .unwrap();
    assert_eq!(v["mode"], "external");
    assert_eq!(v["acked"], 3000);
    assert_eq!(v["config"]["rate"], 1000, "the rate reached the harness");
    let rate = v["records_per_sec"].as_f64().unwrap();
    assert!(rate > 0.0 && rate <= 1000.0 * 1.05, "asked for 1000 records/s, measured {rate:.0}");
    let l = &v["latency_ms"];
    let q = |k: &str| l[k].as_f64().unwrap();
    assert!(q("p50") <= q("p95") && q("p95") <= q("p99") && q("p99") <= q("p999") && q("p999") <= q("max"), "{l}");
    assert!(q("avg") > 0.0 && q("max") > 0.0, "{l}");
    let mut c = b.client("alice").await;
    let stored = c.fetch_all("paced", 0, 0).await.unwrap().len() + c.fetch_all("paced", 1, 0).await.unwrap().len();
    assert_eq!(stored, 3000, "every record acknowledged is in the log");
}
