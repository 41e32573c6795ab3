//! Prometheus exposition shared by the broker's `/metrics` and the producer's exporter
//! (cargo feature `prometheus`; the `broker` feature turns it on).
//!
//! Both sides follow one scheme, so dashboards join them:
//! - names start with `qwire_broker_` or `qwire_producer_`, carry their unit
//!   (`_seconds`, `_bytes`) and counters end in `_total`;
//! - the same label names: [`TOPIC`], [`PARTITION`], [`CLIENT_ID`], [`ACKS`], [`ERROR`],
//!   [`REASON`];
//! - latency histograms use [`LATENCY_BUCKETS_SECONDS`] on both sides.
//!
//! Metrics that already live in atomics and HDR histograms are exported by a
//! [`Collector`](prometheus_client::collector::Collector) that reads them at scrape time
//! and writes them with a [`MetricWriter`]; nothing is counted twice.

use std::fmt;

use hdrhistogram::Histogram as Hdr;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

pub use prometheus_client;

/// Label: topic name.
pub const TOPIC: &str = "topic";
/// Label: partition number.
pub const PARTITION: &str = "partition";
/// Label: a producer's configured client id.
pub const CLIENT_ID: &str = "client_id";
/// Label: acknowledgement level (`none`, `leader`, `all`).
pub const ACKS: &str = "acks";
/// Label: a wire error code's name (`NOT_LEADER`, ...), as PROTOCOL.md spells it.
pub const ERROR: &str = "error";
/// Label: why something was refused.
pub const REASON: &str = "reason";
/// Label: how an attempt ended (`success`, `failure`, ...).
pub const RESULT: &str = "result";

/// Upper bounds (seconds) of every latency histogram: 50 µs to 30 s, roughly ×2.5 per
/// step, so loopback round trips (~100 µs) and slow fsyncs (~100 ms) both resolve.
pub const LATENCY_BUCKETS_SECONDS: [f64; 18] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0,
];

/// `Content-Type` of [`encode`]'s output (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Renders a registry in the Prometheus text format (0.0.4), HELP and TYPE lines included.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail; a collector returning an error is a bug there.
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, registry) {
        tracing::error!(error = %e, "a metrics collector failed to encode");
    }
    out
}

/// Writes metrics from values read at scrape time, inside a `Collector::encode`.
pub struct MetricWriter<'a> {
    enc: DescriptorEncoder<'a>,
}

impl fmt::Debug for MetricWriter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricWriter").finish_non_exhaustive()
    }
}

impl<'a> MetricWriter<'a> {
    /// Wraps the encoder a collector is given.
    pub fn new(enc: DescriptorEncoder<'a>) -> MetricWriter<'a> {
        MetricWriter { enc }
    }

    /// A counter (`_total` is appended to `name`, after the unit).
    pub fn counter(&mut self, name: &str, help: &str, unit: Option<Unit>, value: u64) -> fmt::Result {
        let m = self.enc.encode_descriptor(name, help, unit.as_ref(), MetricType::Counter)?;
        ConstCounter::new(value).encode(m)
    }

    /// A counter with one series per label set.
    pub fn counter_family<L: EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        series: impl IntoIterator<Item = (L, u64)>,
    ) -> fmt::Result {
        let mut m = self.enc.encode_descriptor(name, help, unit.as_ref(), MetricType::Counter)?;
        for (labels, value) in series {
            ConstCounter::new(value).encode(m.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// A gauge.
    pub fn gauge(&mut self, name: &str, help: &str, unit: Option<Unit>, value: f64) -> fmt::Result {
        let m = self.enc.encode_descriptor(name, help, unit.as_ref(), MetricType::Gauge)?;
        ConstGauge::new(value).encode(m)
    }

    /// A gauge with one series per label set.
    pub fn gauge_family<L: EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        series: impl IntoIterator<Item = (L, f64)>,
    ) -> fmt::Result {
        let mut m = self.enc.encode_descriptor(name, help, unit.as_ref(), MetricType::Gauge)?;
        for (labels, value) in series {
            ConstGauge::new(value).encode(m.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// Any prometheus-client metric (a `Family`, a `Histogram`, ...) under `name`.
    pub fn metric(&mut self, name: &str, help: &str, unit: Option<Unit>, metric: &impl EncodeMetric) -> fmt::Result {
        let m = self.enc.encode_descriptor(name, help, unit.as_ref(), metric.metric_type())?;
        metric.encode(m)
    }

    /// A latency histogram in seconds (`_seconds` is appended to `name`).
    pub fn latency_histogram(&mut self, name: &str, help: &str, h: &Buckets) -> fmt::Result {
        let mut m = self.enc.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
        m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(h.sum, h.count, &h.buckets, None)
    }

    /// A latency histogram in seconds with one series per label set.
    pub fn histogram_family<L: EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (L, Buckets)>,
    ) -> fmt::Result {
        let mut m = self.enc.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
        for (labels, h) in series {
            m.encode_family(&labels)?
                .encode_histogram::<prometheus_client::encoding::NoLabelSet>(h.sum, h.count, &h.buckets, None)?;
        }
        Ok(())
    }
}

/// A histogram ready to encode: observations bucketed over [`LATENCY_BUCKETS_SECONDS`].
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets {
    /// Sum of the observations, in seconds.
    pub sum: f64,
    /// Number of observations (the `+Inf` bucket).
    pub count: u64,
    /// `(upper bound in seconds, observations in this bucket only)`, not cumulative.
    pub buckets: Vec<(f64, u64)>,
}

/// Buckets an HDR histogram of microseconds over [`LATENCY_BUCKETS_SECONDS`]. Values above
/// the last bound are only in the count (the `+Inf` bucket). Bucket edges are exact to
/// the HDR histogram's precision (3 significant digits).
pub fn hdr_buckets(micros: &Hdr<u64>) -> Buckets {
    let count = micros.len();
    let sum = if count == 0 { 0.0 } else { micros.mean() * count as f64 / 1e6 };
    let mut below = 0;
    let buckets = LATENCY_BUCKETS_SECONDS
        .iter()
        .map(|&le| {
            let upto = if count == 0 { 0 } else { micros.count_between(0, (le * 1e6) as u64) };
            let in_bucket = upto.saturating_sub(below);
            below = below.max(upto);
            (le, in_bucket)
        })
        .collect();
    Buckets { sum, count, buckets }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hdr_buckets_place_each_sample_once() {
        let mut h = Hdr::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for us in [40, 90, 90, 2_000, 60_000_000] {
            h.record(us).unwrap();
        }
        let Buckets { sum, count, buckets } = hdr_buckets(&h);
        assert_eq!(count, 5);
        // HDR keeps 3 significant digits: the 60 s sample is within 0.1 %.
        assert!((sum - 60.002_22).abs() < 0.06, "sum {sum}");
        let by_le: std::collections::HashMap<String, u64> =
            buckets.iter().map(|(le, n)| (le.to_string(), *n)).collect();
        assert_eq!(by_le["0.00005"], 1);
        assert_eq!(by_le["0.0001"], 2);
        assert_eq!(by_le["0.0025"], 1);
        // 60 s is above the last bound: only the +Inf bucket (the count) holds it.
        assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), 4);
    }

    #[test]
    fn writer_output_is_prometheus_text() {
        #[derive(Debug)]
        struct C;
        impl prometheus_client::collector::Collector for C {
            fn encode(&self, enc: DescriptorEncoder) -> fmt::Result {
                let mut w = MetricWriter::new(enc);
                w.counter("qwire_test_appended", "Bytes appended.", Some(Unit::Bytes), 7)?;
                w.gauge_family("qwire_test_end_offset", "End offset.", None, [([(TOPIC, "t"), (PARTITION, "0")], 3.0)])
            }
        }
        let mut r = Registry::default();
        r.register_collector(Box::new(C));
        let text = encode(&r);
        assert!(text.contains("# HELP qwire_test_appended_bytes_total Bytes appended.\n"), "{text}");
        assert!(text.contains("# TYPE qwire_test_appended_bytes_total counter\n"), "{text}");
        assert!(text.contains("qwire_test_appended_bytes_total 7\n"), "{text}");
        assert!(text.contains("qwire_test_end_offset{topic=\"t\",partition=\"0\"} 3"), "{text}");
    }
}
