//! `qwire bench --report DIR` and `--compare`: the report's JSON holds the figures the run
//! printed, its timeline accounts for every acknowledged record, and the HTML page
//! references SVG plots that exist, with no script and nothing from the network.

use std::path::Path;
use std::process::Command;

fn qwire(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_qwire")).args(args).output().unwrap()
}

fn ok(out: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// The numbers in a printed line, in order (`1234.5 records/sec (0.12 MB/sec)` → 1234.5, 0.12).
fn numbers(line: &str) -> Vec<String> {
    line.split_whitespace()
        .map(|w| w.trim_start_matches('(').trim_end_matches([',', ';', ')']).trim_end_matches('.'))
        .filter(|w| w.parse::<f64>().is_ok())
        .map(str::to_owned)
        .collect()
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Checks the page: every `src="..."` names an SVG file beside it; no script; nothing
/// loaded from elsewhere. Returns the SVG texts.
fn check_page(dir: &Path) -> Vec<String> {
    let html = std::fs::read_to_string(dir.join("index.html")).unwrap();
    assert!(!html.to_lowercase().contains("<script"), "the page has a script");
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http") && !html.contains("url("),
        "the page loads something"
    );
    let srcs: Vec<&str> = html.split("src=\"").skip(1).map(|s| s.split('"').next().unwrap()).collect();
    assert_eq!(srcs.len(), 4, "{srcs:?}");
    srcs.iter()
        .map(|src| {
            assert!(src.ends_with(".svg") && !src.contains('/'), "{src}");
            let svg = std::fs::read_to_string(dir.join(src)).unwrap_or_else(|e| panic!("{src}: {e}"));
            assert!(svg.trim_start().starts_with("<svg"), "{src} is not an SVG");
            assert!(svg.contains("</svg>"), "{src} is cut short");
            svg
        })
        .collect()
}

#[test]
fn a_report_holds_the_printed_figures_and_its_page_shows_existing_plots() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run-a");
    let out = qwire(&[
        "bench",
        "--records",
        "4000",
        "--warmup",
        "0.2",
        "--compare-raw",
        "--report",
        dir.to_str().unwrap(),
        "--label",
        "run A",
    ]);
    let stdout = ok(&out);
    // Not on a terminal: no progress bar, no interim lines, only the final ones.
    assert_eq!(stdout.matches("records sent").count(), 1, "{stdout}");
    assert!(
        !stdout.contains('\r') && !String::from_utf8_lossy(&out.stderr).contains('\r'),
        "progress drawn off a terminal"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.last().unwrap().starts_with("report written to "), "{stdout}");

    let r = read_json(&dir.join("report.json"));
    assert_eq!(r["format"], 1);
    assert_eq!(r["label"], "run A");
    let s = &r["summary"];
    let l = &s["latency_ms"];
    let f = |v: &serde_json::Value, d: usize| format!("{:.d$}", v.as_f64().unwrap());
    // "4000 records sent, R records/sec (M MB/sec), A ms avg latency, X ms max latency, P50 ms 50th, ..."
    let printed = numbers(lines[0]);
    let expected = vec![
        s["acked"].to_string(),
        f(&s["records_per_sec"], 1),
        f(&s["mb_per_sec"], 2),
        f(&l["avg"], 2),
        f(&l["max"], 2),
        f(&l["p50"], 2),
        f(&l["p95"], 2),
        f(&l["p99"], 2),
        f(&l["p999"], 2),
    ];
    assert_eq!(printed, expected, "line: {}", lines[0]);
    // "raw quinn stream, same bytes and TLS: RAW MB/sec; qwire/raw = RATIO; ..."
    let raw = numbers(lines[1]);
    assert_eq!(raw[..2], [f(&s["raw_mb_per_sec"], 2), f(&s["ratio"], 3)], "line: {}", lines[1]);
    assert_eq!(s["records"], 4000);
    assert_eq!(s["config"]["records"], 4000);
    assert!(s["producer"]["batches_sent"].as_u64().unwrap() > 0);
    assert!(r["machine"]["logical_cpus"].as_u64().unwrap() >= 1);
    assert!(r["command"].as_array().unwrap().iter().any(|a| a == "--report"));

    // Every acknowledged record is in exactly one interval of the timeline.
    let points = r["timeline"]["points"].as_array().unwrap();
    assert!(!points.is_empty());
    let sum: u64 = points.iter().map(|p| p["records"].as_u64().unwrap()).sum();
    assert_eq!(sum, s["acked"].as_u64().unwrap());
    let ts: Vec<f64> = points.iter().map(|p| p["t"].as_f64().unwrap()).collect();
    assert!(ts.windows(2).all(|w| w[0] < w[1]), "{ts:?}");
    // The distribution ends at the largest latency.
    let dist = r["latency_distribution"].as_array().unwrap();
    let last = dist.last().unwrap();
    assert_eq!(last["percentile"], 100.0);
    let (top, max) = (last["latency_ms"].as_f64().unwrap(), l["max"].as_f64().unwrap());
    assert!((top - max).abs() <= max * 0.002 + 0.002, "distribution ends at {top}, max is {max}");

    let svgs = check_page(&dir);
    assert!(svgs[0].contains("run A"), "the throughput plot names the run");
    assert!(svgs[3].contains("raw QUIC stream"), "the summary plot shows the raw baseline");
}

#[test]
fn compare_plots_reports_side_by_side_and_refuses_what_is_not_a_report() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (tmp.path().join("disk"), tmp.path().join("sink"), tmp.path().join("cmp"));
    ok(&qwire(&["bench", "--records", "2000", "--warmup", "0", "--report", a.to_str().unwrap()]));
    ok(&qwire(&["bench", "--records", "2000", "--warmup", "0", "--sink", "--report", b.to_str().unwrap()]));
    let (ja, jb) = (a.join("report.json"), b.join("report.json"));
    assert_eq!(read_json(&ja)["label"], "disk", "the label defaults to the directory's name");
    let out = ok(&qwire(&[
        "bench",
        "--compare",
        ja.to_str().unwrap(),
        jb.to_str().unwrap(),
        "--report",
        c.to_str().unwrap(),
    ]));
    assert!(out.contains("comparison written to"), "{out}");
    let html = std::fs::read_to_string(c.join("index.html")).unwrap();
    assert!(html.contains("disk vs sink"), "the title names both runs");
    for svg in check_page(&c) {
        assert!(svg.contains("disk") && svg.contains("sink"), "each plot shows both runs");
    }

    let junk = tmp.path().join("junk.json");
    std::fs::write(&junk, "{\"hello\": 1}").unwrap();
    let out =
        qwire(&["bench", "--compare", ja.to_str().unwrap(), junk.to_str().unwrap(), "--report", c.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(8));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("junk.json") && err.contains("not a qwire bench report.json"), "{err}");
    let one = qwire(&["bench", "--compare", ja.to_str().unwrap(), "--report", c.to_str().unwrap()]);
    assert_eq!(one.status.code(), Some(2), "one report is not a comparison");
}
