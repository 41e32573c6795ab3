//! The report's SVG plots (plotters' SVG backend; the text is rendered by the browser in
//! its sans-serif font, no font files needed). Every plot takes one report or several
//! (a comparison draws one series per report, in the same colour in every plot).

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::Report;

const SIZE: (u32, u32) = (960, 420);
const FONT: &str = "sans-serif";
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];
/// A named percentile of a latency summary.
type Pick = (&'static str, fn(&crate::bench::LatencyMs) -> f64);
/// Percentile series of a single run's latency plot.
const PERCENTILES: [Pick; 5] =
    [("p50", |l| l.p50), ("p95", |l| l.p95), ("p99", |l| l.p99), ("p99.9", |l| l.p999), ("max", |l| l.max)];

type Res = Result<String, String>;

fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

fn err(e: impl std::fmt::Display) -> String {
    format!("drawing a plot: {e}")
}

/// `1234567` → `1.23M`.
fn human(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 10.0 || a == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// A latency in ms, compactly (`0.12`, `3.4`, `250`).
fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}").trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// `x = 1 / (1 - q)` → the percentile it stands for (`100` → `99%`).
fn percentile_label(x: f64) -> String {
    if x <= 1.0 {
        return "0%".into();
    }
    let p = 100.0 * (1.0 - 1.0 / x);
    let s = format!("{p:.4}");
    format!("{}%", s.trim_end_matches('0').trim_end_matches('.'))
}

// Log latency axes step by powers of two: labels every ×2 stay readable whether the
// range spans one decade or five (plotters' base-10 axis labels 10, 20, … 90 crowded
// together or only the decades).

/// Bounds for a log axis holding `values` (positive ones), with some room.
fn log_bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) =
        values.filter(|v| *v > 0.0 && v.is_finite()).fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if hi <= 0.0 {
        (0.001, 1.0)
    } else {
        (lo / 1.5, hi * 1.5)
    }
}

fn legend<'a, 'b: 'a>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, impl CoordTranslate>,
    pos: SeriesLabelPosition,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .position(pos)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, 13))
        .draw()
        .map_err(err)
}

/// Records per second per interval, with each run's overall rate dashed.
pub(super) fn throughput(reports: &[Report]) -> Res {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let x_max = reports.iter().flat_map(|r| r.timeline.points.last()).map(|p| p.t).fold(1e-3, f64::max);
        let y_max = reports
            .iter()
            .flat_map(|r| r.timeline.points.iter().map(|p| p.records_per_sec).chain([r.summary.records_per_sec]))
            .fold(1.0, f64::max)
            * 1.1;
        let mut chart = ChartBuilder::on(&root)
            .caption("Throughput over time", (FONT, 20))
            .margin(14)
            .x_label_area_size(42)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("seconds since the measured phase began")
            .y_desc("records / s")
            .y_label_formatter(&|v| human(*v))
            .label_style((FONT, 13))
            .light_line_style(BLACK.mix(0.06))
            .draw()
            .map_err(err)?;
        for (i, r) in reports.iter().enumerate() {
            let c = color(i);
            let pts: Vec<(f64, f64)> = r.timeline.points.iter().map(|p| (p.t, p.records_per_sec)).collect();
            let label = format!(
                "{}: {} records/s ({:.2} MB/s) overall",
                r.label,
                human(r.summary.records_per_sec),
                r.summary.mb_per_sec
            );
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)).point_size(if pts.len() <= 40 {
                    3
                } else {
                    0
                }))
                .map_err(err)?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
            let avg = r.summary.records_per_sec;
            chart
                .draw_series(DashedLineSeries::new([(0.0, avg), (x_max, avg)], 6, 4, c.mix(0.6).stroke_width(1)))
                .map_err(err)?;
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Latency percentiles per interval, log scale: p50 … max for one run; p50 (thin) and
/// p99 (thick) per run in a comparison.
pub(super) fn latency(reports: &[Report]) -> Res {
    let single = reports.len() == 1;
    let shown: Vec<Pick> = if single { PERCENTILES.to_vec() } else { vec![PERCENTILES[0], PERCENTILES[2]] };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let x_max = reports.iter().flat_map(|r| r.timeline.points.last()).map(|p| p.t).fold(1e-3, f64::max);
        let (y_lo, y_hi) = log_bounds(reports.iter().flat_map(|r| {
            r.timeline.points.iter().filter_map(|p| p.latency_ms).flat_map(|l| shown.iter().map(move |(_, f)| f(&l)))
        }));
        let mut chart = ChartBuilder::on(&root)
            .caption("Latency over time (send → acknowledged)", (FONT, 20))
            .margin(14)
            .x_label_area_size(42)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..x_max, (y_lo..y_hi).log_scale().base(2.0))
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("seconds since the measured phase began")
            .y_desc("ms (log scale)")
            .y_labels(10)
            .y_label_formatter(&|v| ms(*v))
            .label_style((FONT, 13))
            .light_line_style(TRANSPARENT)
            .draw()
            .map_err(err)?;
        for (i, r) in reports.iter().enumerate() {
            for (k, (name, f)) in shown.iter().enumerate() {
                let (c, width) = if single { (color(k), 2) } else { (color(i), if k == 0 { 1 } else { 3 }) };
                let pts: Vec<(f64, f64)> =
                    r.timeline.points.iter().filter_map(|p| p.latency_ms.map(|l| (p.t, f(&l).max(y_lo)))).collect();
                let label = if single { (*name).to_string() } else { format!("{} {name}", r.label) };
                chart
                    .draw_series(LineSeries::new(pts, c.stroke_width(width)))
                    .map_err(err)?
                    .label(label)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(width)));
            }
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Latency by percentile over the whole run (HDR percentile plot): x is `1/(1-q)` on a
/// log scale, labelled as percentiles.
pub(super) fn distribution(reports: &[Report]) -> Res {
    // The last point (100 %) is drawn at the finest percentile the sample count resolves.
    let series: Vec<Vec<(f64, f64)>> = reports
        .iter()
        .map(|r| {
            let finest = (r.summary.acked.max(10)) as f64;
            r.latency_distribution
                .iter()
                .map(|p| {
                    let q = p.percentile / 100.0;
                    let x = if q >= 1.0 { finest } else { (1.0 / (1.0 - q)).min(finest) };
                    (x, p.latency_ms)
                })
                .collect()
        })
        .collect();
    let x_max = series.iter().flatten().map(|p| p.0).fold(10.0, f64::max);
    let (y_lo, y_hi) = log_bounds(series.iter().flatten().map(|p| p.1));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Latency by percentile (send → acknowledged)", (FONT, 20))
            .margin(14)
            .x_label_area_size(42)
            .y_label_area_size(70)
            .build_cartesian_2d((1f64..x_max).log_scale(), (y_lo..y_hi).log_scale().base(2.0))
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("ms (log scale)")
            .x_label_formatter(&|x| percentile_label(*x))
            .y_labels(10)
            .y_label_formatter(&|v| ms(*v))
            .label_style((FONT, 13))
            .light_line_style(TRANSPARENT)
            .draw()
            .map_err(err)?;
        for (i, (r, pts)) in reports.iter().zip(series).enumerate() {
            let c = color(i);
            let l = &r.summary.latency_ms;
            let label = format!("{}: p50 {} ms, p99 {} ms, p99.9 {} ms", r.label, ms(l.p50), ms(l.p99), ms(l.p999));
            chart
                .draw_series(LineSeries::new(pts, c.stroke_width(2)))
                .map_err(err)?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// MB/s per run as bars, each followed by its raw QUIC baseline (same bytes, same TLS,
/// one stream) when the run measured one.
pub(super) fn summary(reports: &[Report]) -> Res {
    let mut bars: Vec<(String, f64, RGBColor)> = Vec::new();
    for (i, r) in reports.iter().enumerate() {
        bars.push((r.label.clone(), r.summary.mb_per_sec, color(i)));
        if let Some(raw) = r.summary.raw_mb_per_sec {
            let name = if reports.len() == 1 { "raw QUIC stream".to_string() } else { format!("{} raw QUIC", r.label) };
            bars.push((name, raw, RGBColor(150, 150, 150)));
        }
    }
    let y_max = bars.iter().map(|b| b.1).fold(1.0, f64::max) * 1.15;
    let n = bars.len() as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Throughput (acknowledged value bytes)", (FONT, 20))
            .margin(14)
            .x_label_area_size(42)
            .y_label_area_size(70)
            // A discrete range is inclusive: 0..n-1 gives n segments.
            .build_cartesian_2d((0u32..n - 1).into_segmented(), 0f64..y_max)
            .map_err(err)?;
        let names: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .y_desc("MB / s")
            .x_labels(bars.len())
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => names.get(*i as usize).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .label_style((FONT, 13))
            .light_line_style(BLACK.mix(0.06))
            .draw()
            .map_err(err)?;
        for (i, (_, v, c)) in bars.iter().enumerate() {
            let i = i as u32;
            let mut rect =
                Rectangle::new([(SegmentValue::Exact(i), 0.0), (SegmentValue::Exact(i + 1), *v)], c.filled());
            rect.set_margin(0, 0, 18, 18);
            chart.draw_series([rect]).map_err(err)?;
            chart
                .draw_series([Text::new(
                    format!("{v:.1} MB/s"),
                    (SegmentValue::CenterOf(i), *v + y_max * 0.01),
                    TextStyle::from((FONT, 14)).pos(Pos::new(HPos::Center, VPos::Bottom)),
                )])
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(percentile_label(1.0), "0%");
        assert_eq!(percentile_label(2.0), "50%");
        assert_eq!(percentile_label(100.0), "99%");
        assert_eq!(percentile_label(1000.0), "99.9%");
        assert_eq!(percentile_label(10000.0), "99.99%");
        assert_eq!(human(250_883.0), "251k");
        assert_eq!(human(1_500_000.0), "1.50M");
        assert_eq!(ms(0.25), "0.25");
        assert_eq!(ms(12.34), "12.3");
    }
}
