//! A short `qwire bench` run: the harness works end to end and its JSON is complete.
//! (Performance itself is measured by running the benchmark, never asserted in tests.)

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
    for k in ["avg", "p50", "p95", "p99", "p999", "max"] {
        assert!(v["latency_ms"][k].as_f64().unwrap() >= 0.0, "latency_ms.{k}");
    }
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
