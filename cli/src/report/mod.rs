//! `qwire bench --report DIR`: `report.json` (every figure of the run, the settings, the
//! machine, the timeline and the latency distribution) and `index.html` with SVG plots
//! drawn by plotters; `--compare A.json B.json ...` plots several reports side by side.
//!
//! The page needs no network and runs no script: plain HTML, inline CSS and `<img>`
//! elements pointing at the SVG files beside it. A single run is rendered from the
//! `report.json` just written, the same way a comparison is, so the page shows exactly
//! what the file holds.

mod html;
mod machine;
mod plots;

use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::bench::timeline::Timeline;
use crate::bench::{BenchReport, LatencyMs};
pub(crate) use machine::Machine;

/// Version of the `report.json` layout.
pub(crate) const FORMAT: u32 = 1;

/// The report flags of `qwire bench`.
#[derive(clap::Args, Debug, Clone, Default)]
pub(crate) struct ReportArgs {
    /// Write DIR/report.json and DIR/index.html (with SVG plots: throughput and latency
    /// over time, latency distribution) for this run; with --compare, the comparison.
    #[arg(long, value_name = "DIR")]
    pub(crate) report: Option<PathBuf>,
    /// This run's name in the report and in comparisons [default: the report directory's
    /// name].
    #[arg(long, requires = "report")]
    pub(crate) label: Option<String>,
    /// Do not run: plot two or more report.json files side by side into --report DIR.
    #[arg(long, num_args = 2.., value_name = "REPORT_JSON", requires = "report")]
    pub(crate) compare: Vec<PathBuf>,
}

/// One point of the latency distribution (an HDR percentile plot).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub(crate) struct PercentilePoint {
    /// Percentile, 0 to 100.
    pub(crate) percentile: f64,
    /// Latency at that percentile, ms.
    pub(crate) latency_ms: f64,
}

/// The figures of a run as `report.json` holds them (read back for rendering).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Summary {
    pub(crate) records: u64,
    pub(crate) acked: u64,
    pub(crate) failed: u64,
    pub(crate) seconds: f64,
    pub(crate) records_per_sec: f64,
    pub(crate) mb_per_sec: f64,
    pub(crate) latency_ms: LatencyMs,
    pub(crate) mode: String,
    pub(crate) raw_mb_per_sec: Option<f64>,
    pub(crate) ratio: Option<f64>,
    pub(crate) raw_rtt_us: Option<serde_json::Value>,
    pub(crate) raw_rtt_paced_us: Option<serde_json::Value>,
    pub(crate) peak_rss_mib: f64,
    pub(crate) producer: serde_json::Map<String, serde_json::Value>,
    pub(crate) first_error: Option<String>,
    pub(crate) config: serde_json::Map<String, serde_json::Value>,
}

/// `report.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Report {
    /// [`FORMAT`].
    pub(crate) format: u32,
    /// The run's name.
    pub(crate) label: String,
    /// When the run ended, RFC 3339 UTC.
    pub(crate) created_utc: String,
    /// qwire version that ran it.
    pub(crate) qwire_version: String,
    /// The command line.
    pub(crate) command: Vec<String>,
    /// The machine.
    pub(crate) machine: Machine,
    /// Every figure `qwire bench` prints, the producer's metrics and the settings.
    pub(crate) summary: Summary,
    /// Throughput and latency per interval.
    pub(crate) timeline: Timeline,
    /// Latency by percentile over the whole measured phase.
    pub(crate) latency_distribution: Vec<PercentilePoint>,
}

#[derive(Serialize)]
struct ReportOut<'a> {
    format: u32,
    label: &'a str,
    created_utc: String,
    qwire_version: &'static str,
    command: Vec<String>,
    machine: &'a Machine,
    summary: &'a BenchReport,
    timeline: &'a Timeline,
    latency_distribution: Vec<PercentilePoint>,
}

/// The HDR percentile distribution of a histogram of microseconds: points at
/// exponentially finer percentiles up to the largest sample.
pub(crate) fn distribution(h: &Histogram<u64>) -> Vec<PercentilePoint> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<PercentilePoint> = h
        .iter_quantiles(5)
        .map(|v| PercentilePoint {
            percentile: v.quantile_iterated_to() * 100.0,
            latency_ms: h.highest_equivalent(v.value_iterated_to()) as f64 / 1000.0,
        })
        .collect();
    out.dedup_by(|a, b| a.percentile == b.percentile);
    out
}

fn label_for(args: &ReportArgs, dir: &Path) -> String {
    args.label.clone().unwrap_or_else(|| {
        dir.canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "qwire bench".into())
    })
}

fn now_utc() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "unknown".into())
}

/// Writes `report.json`, the plots and `index.html` for a finished run. Returns the
/// page's path.
pub(crate) fn write_run(args: &ReportArgs, run: &BenchReport, machine: &Machine) -> Result<PathBuf, String> {
    let dir = args.report.as_deref().ok_or("no report directory")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let label = label_for(args, dir);
    let out = ReportOut {
        format: FORMAT,
        label: &label,
        created_utc: now_utc(),
        qwire_version: env!("CARGO_PKG_VERSION"),
        command: std::env::args().collect(),
        machine,
        summary: run,
        timeline: &run.timeline,
        latency_distribution: distribution(&run.latencies),
    };
    let json = serde_json::to_string_pretty(&out).map_err(|e| format!("report.json: {e}"))?;
    let path = dir.join("report.json");
    std::fs::write(&path, json).map_err(|e| format!("{}: {e}", path.display()))?;
    // Render from the file just written, like a comparison.
    let report = read(&path)?;
    render(dir, &[report])
}

/// Reads a `report.json`.
pub(crate) fn read(path: &Path) -> Result<Report, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let r: Report =
        serde_json::from_str(&text).map_err(|e| format!("{}: not a qwire bench report.json: {e}", path.display()))?;
    if r.format != FORMAT {
        return Err(format!("{}: report format {} (this qwire reads {FORMAT})", path.display(), r.format));
    }
    Ok(r)
}

/// `--compare`: reads the reports and renders them side by side into `--report DIR`.
pub(crate) fn compare(args: &ReportArgs) -> Result<PathBuf, String> {
    let dir = args.report.as_deref().ok_or("--compare needs --report DIR")?;
    let mut reports = args.compare.iter().map(|p| read(p)).collect::<Result<Vec<_>, _>>()?;
    // Same labels (two runs in directories of the same name) get a number each.
    for i in 0..reports.len() {
        if reports.iter().filter(|r| r.label == reports[i].label).count() > 1 {
            reports[i].label = format!("{} #{}", reports[i].label, i + 1);
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    render(dir, &reports)
}

/// Files of a rendered report, relative to its directory.
pub(crate) const PLOTS: [(&str, &str); 4] = [
    ("throughput.svg", "Throughput over time"),
    ("latency.svg", "Latency percentiles over time"),
    ("distribution.svg", "Latency distribution (HDR percentile plot)"),
    ("summary.svg", "Throughput, with the raw QUIC baseline where measured"),
];

fn render(dir: &Path, reports: &[Report]) -> Result<PathBuf, String> {
    let svgs = [
        plots::throughput(reports)?,
        plots::latency(reports)?,
        plots::distribution(reports)?,
        plots::summary(reports)?,
    ];
    for ((name, _), svg) in PLOTS.iter().zip(svgs) {
        let p = dir.join(name);
        std::fs::write(&p, svg).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    let page = dir.join("index.html");
    std::fs::write(&page, html::page(reports)).map_err(|e| format!("{}: {e}", page.display()))?;
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_reaches_the_largest_sample() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for us in 1..=10_000u64 {
            h.record(us).unwrap();
        }
        let d = distribution(&h);
        assert!(d.len() > 20, "{}", d.len());
        assert!(d.windows(2).all(|w| w[0].percentile < w[1].percentile && w[0].latency_ms <= w[1].latency_ms));
        let last = d.last().unwrap();
        assert_eq!(last.percentile, 100.0);
        assert!((last.latency_ms - 10.0).abs() < 0.01, "{last:?}");
        let median = d.iter().find(|p| p.percentile >= 50.0).unwrap();
        assert!((median.latency_ms - 5.0).abs() < 0.01, "{median:?}");
        assert!(distribution(&Histogram::<u64>::new(3).unwrap()).is_empty());
    }
}
