//! The broker's detailed telemetry, next to the plain counters of
//! [`BrokerMetrics`]: produce requests by acks level and
//! answered error code, latency histograms, counters per partition, and guards that keep
//! gauges right when a request, stream or reservation ends any way it can.
//!
//! Everything here is exported by the admin listener's `/metrics` (see
//! `admin::metrics::BrokerCollector`); names and units are listed in README.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

use super::metrics::BrokerMetrics;
use crate::prometheus::{ACKS, ERROR, LATENCY_BUCKETS_SECONDS};
use crate::protocol::{Acks, ErrorCode};

/// Labels of a produce request: its acks level and the error code it was answered with
/// (`NONE` for success; for acks=none, the code it would have been answered with).
pub(crate) type ProduceLabels = [(&'static str, &'static str); 2];

/// Labelled counters and latency histograms.
#[derive(Debug)]
pub struct Detail {
    /// Produce requests by acks level and answered error code.
    pub(crate) produce: Family<ProduceLabels, Counter>,
    /// A produce's append: the batch check, the wait for the partition's owner and the
    /// write (or the dedup answer).
    pub(crate) append_latency: Histogram,
    /// One group-commit round's fsyncs.
    pub(crate) fsync_latency: Histogram,
    /// An acks=all answer's wait, from the append to the group commit that made the
    /// batch durable (or the failure).
    pub(crate) group_commit_wait: Histogram,
}

fn latency() -> Histogram {
    Histogram::new(LATENCY_BUCKETS_SECONDS)
}

impl Default for Detail {
    fn default() -> Self {
        Detail {
            produce: Family::default(),
            append_latency: latency(),
            fsync_latency: latency(),
            group_commit_wait: latency(),
        }
    }
}

/// The label value of an acks level.
pub(crate) fn acks_label(acks: Acks) -> &'static str {
    match acks {
        Acks::None => "none",
        Acks::Leader => "leader",
        Acks::All => "all",
    }
}

impl Detail {
    /// Counts one produce request answered with `code`.
    pub(crate) fn produced(&self, acks: Acks, code: ErrorCode) {
        self.produce.get_or_create(&[(ACKS, acks_label(acks)), (ERROR, code.name())]).inc();
    }
}

/// Seconds since `start`, for a histogram.
pub(crate) fn seconds_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

/// What was appended to and read from one partition, counted by the request layer.
#[derive(Debug, Default)]
pub struct PartitionCounters {
    /// Batches appended.
    pub batches: AtomicU64,
    /// Records appended.
    pub records: AtomicU64,
    /// Batch bytes appended (as received).
    pub bytes: AtomicU64,
    /// Retried batches answered from the dedup state.
    pub duplicates: AtomicU64,
    /// Batch bytes served by fetches.
    pub fetch_bytes: AtomicU64,
}

impl PartitionCounters {
    /// Counts an appended batch.
    pub(crate) fn appended(&self, records: u64, bytes: u64) {
        self.batches.fetch_add(1, Relaxed);
        self.records.fetch_add(records, Relaxed);
        self.bytes.fetch_add(bytes, Relaxed);
    }
}

/// Adds `n` to a gauge of [`BrokerMetrics`] and takes it off again when dropped.
pub(crate) struct GaugeGuard {
    metrics: Arc<BrokerMetrics>,
    gauge: fn(&BrokerMetrics) -> &AtomicU64,
    n: u64,
}

impl GaugeGuard {
    /// Adds `n` to `gauge` until the guard is dropped.
    pub(crate) fn new(metrics: &Arc<BrokerMetrics>, gauge: fn(&BrokerMetrics) -> &AtomicU64, n: u64) -> GaugeGuard {
        gauge(metrics).fetch_add(n, Relaxed);
        GaugeGuard { metrics: metrics.clone(), gauge, n }
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        (self.gauge)(&self.metrics).fetch_sub(self.n, Relaxed);
    }
}

impl std::fmt::Debug for GaugeGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GaugeGuard").field("n", &self.n).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gauge_guard_gives_back_what_it_took() {
        let m = Arc::new(BrokerMetrics::default());
        let a = GaugeGuard::new(&m, |m| &m.requests_in_flight, 1);
        let b = GaugeGuard::new(&m, |m| &m.requests_in_flight, 1);
        assert_eq!(m.requests_in_flight.load(Relaxed), 2);
        drop(a);
        assert_eq!(m.requests_in_flight.load(Relaxed), 1);
        drop(b);
        assert_eq!(m.requests_in_flight.load(Relaxed), 0);
    }
}
