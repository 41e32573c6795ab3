//! `index.html` of a report: the figures as tables and the SVG plots as images. Plain
//! HTML with inline CSS, no script, nothing fetched from the network.

use std::fmt::Write;

use super::{Report, PLOTS};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn json_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "–".into(),
        serde_json::Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.3}").trim_end_matches('0').trim_end_matches('.').to_string(),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// `(name, value per report)` rows of the headline figures.
fn figures(reports: &[Report]) -> Vec<(&'static str, Vec<String>)> {
    let row = |name, f: &dyn Fn(&Report) -> String| (name, reports.iter().map(f).collect());
    let opt = |v: Option<f64>, digits: usize| v.map_or("–".into(), |v| format!("{v:.digits$}"));
    vec![
        row("records sent (measured)", &|r| r.summary.records.to_string()),
        row("records acknowledged", &|r| r.summary.acked.to_string()),
        row("records failed", &|r| r.summary.failed.to_string()),
        row("measured seconds", &|r| format!("{:.2}", r.summary.seconds)),
        row("records/sec", &|r| format!("{:.1}", r.summary.records_per_sec)),
        row("MB/sec", &|r| format!("{:.2}", r.summary.mb_per_sec)),
        row("avg latency, ms", &|r| format!("{:.2}", r.summary.latency_ms.avg)),
        row("p50 latency, ms", &|r| format!("{:.2}", r.summary.latency_ms.p50)),
        row("p95 latency, ms", &|r| format!("{:.2}", r.summary.latency_ms.p95)),
        row("p99 latency, ms", &|r| format!("{:.2}", r.summary.latency_ms.p99)),
        row("p99.9 latency, ms", &|r| format!("{:.2}", r.summary.latency_ms.p999)),
        row("max latency, ms", &|r| format!("{:.2}", r.summary.latency_ms.max)),
        row("raw QUIC stream, MB/sec", &|r| opt(r.summary.raw_mb_per_sec, 2)),
        row("qwire / raw", &|r| opt(r.summary.ratio, 3)),
        row("mode", &|r| r.summary.mode.clone()),
        row("peak RSS, MiB", &|r| format!("{:.0}", r.summary.peak_rss_mib)),
        row("first error", &|r| r.summary.first_error.clone().unwrap_or_else(|| "–".into())),
    ]
}

/// Rows from a JSON object per report (the union of keys, in the first report's order).
fn object_rows(
    reports: &[Report],
    get: impl Fn(&Report) -> &serde_json::Map<String, serde_json::Value>,
) -> Vec<(String, Vec<String>)> {
    let mut keys: Vec<String> = Vec::new();
    for r in reports {
        for k in get(r).keys() {
            if !keys.contains(k) {
                keys.push(k.clone());
            }
        }
    }
    keys.into_iter()
        .map(|k| {
            let vals = reports.iter().map(|r| get(r).get(&k).map_or("–".into(), json_text)).collect();
            (k, vals)
        })
        .collect()
}

fn table(out: &mut String, title: &str, reports: &[Report], rows: impl IntoIterator<Item = (String, Vec<String>)>) {
    let _ = write!(out, "<h2>{}</h2>\n<table>\n", esc(title));
    if reports.len() > 1 {
        out.push_str("<tr><th></th>");
        for r in reports {
            let _ = write!(out, "<th>{}</th>", esc(&r.label));
        }
        out.push_str("</tr>\n");
    }
    for (name, vals) in rows {
        // In a comparison, rows whose values differ are marked: that is where to look.
        let differs = reports.len() > 1 && vals.windows(2).any(|w| w[0] != w[1]);
        let _ = write!(out, "<tr{}><th>{}</th>", if differs { " class=\"differs\"" } else { "" }, esc(&name));
        for v in vals {
            let _ = write!(out, "<td>{}</td>", esc(&v));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em auto;max-width:1000px;color:#222}\
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd}\
table{border-collapse:collapse;font-size:.9em}th,td{padding:.25em .8em;border-bottom:1px solid #eee;text-align:left}\
td{font-variant-numeric:tabular-nums}tr.differs{background:#fff6d6}figure{margin:1.5em 0}\
img{max-width:100%;border:1px solid #eee}figcaption{color:#666;font-size:.9em}code{font-size:.85em}";

/// The page for one report or a comparison of several.
pub(super) fn page(reports: &[Report]) -> String {
    let title = if reports.len() == 1 {
        format!("qwire bench: {}", reports[0].label)
    } else {
        format!("qwire bench comparison: {}", reports.iter().map(|r| r.label.as_str()).collect::<Vec<_>>().join(" vs "))
    };
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{t}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{t}</h1>\n",
        t = esc(&title)
    );
    for r in reports {
        let _ = writeln!(
            out,
            "<p><b>{}</b>: qwire {}, {} (UTC), <code>{}</code></p>",
            esc(&r.label),
            esc(&r.qwire_version),
            esc(&r.created_utc),
            esc(&r.command.join(" "))
        );
    }
    table(&mut out, "Result", reports, figures(reports).into_iter().map(|(k, v)| (k.to_string(), v)));
    for (file, caption) in PLOTS {
        let _ = writeln!(
            out,
            "<figure><img src=\"{file}\" alt=\"{c}\" width=\"960\" height=\"420\"><figcaption>{c}</figcaption></figure>",
            c = esc(caption)
        );
    }
    table(&mut out, "Configuration", reports, object_rows(reports, |r| &r.summary.config));
    table(
        &mut out,
        "Producer metrics at the end (first producer)",
        reports,
        object_rows(reports, |r| &r.summary.producer),
    );
    let machine_rows: Vec<(String, Vec<String>)> = {
        let per: Vec<Vec<(&str, String)>> = reports.iter().map(|r| r.machine.rows()).collect();
        (0..per[0].len())
            .map(|i| (per[0][i].0.to_string(), per.iter().map(|rows| rows[i].1.clone()).collect()))
            .collect()
    };
    table(&mut out, "Machine", reports, machine_rows);
    out.push_str("<p>Figures from one machine at one time; compare runs made side by side (see PERF.md).</p>\n</body>\n</html>\n");
    out
}
