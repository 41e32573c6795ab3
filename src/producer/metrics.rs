//! Producer metrics: counters and rates, batch shape, buffer and in-flight gauges, and
//! latency histograms split into queue time → send → round trip.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Percentiles of one latency histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Samples recorded.
    pub count: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest sample.
    pub max_us: u64,
}

impl LatencySummary {
    fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: h.len(),
            mean_us: h.mean(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

/// A point-in-time view of a producer's metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MetricsSnapshot {
    /// Records acknowledged (or written, with acks=none).
    pub records_sent: u64,
    /// Batch bytes written to streams (after compression), retries included.
    pub bytes_sent: u64,
    /// Batches acknowledged.
    pub batches_sent: u64,
    /// Batch resend attempts.
    pub retries: u64,
    /// Resent batches the broker recognised as already stored (answered from its dedup
    /// state with their original offsets).
    pub duplicates: u64,
    /// Records that failed.
    pub records_failed: u64,
    /// Epoch bumps after sequence errors.
    pub epoch_bumps: u64,
    /// Connections established (reconnects included).
    pub connects: u64,
    /// Mean records per sealed batch.
    pub avg_records_per_batch: f64,
    /// Mean sealed batch size in bytes (as sent).
    pub avg_batch_bytes: f64,
    /// Uncompressed / compressed bytes over all sealed batches (1.0 without compression).
    pub compression_ratio: f64,
    /// Buffer memory not in use, in bytes.
    pub buffer_available: u64,
    /// Batches sealed but not yet acknowledged or failed.
    pub in_flight_batches: u64,
    /// Enqueue → batch sealed, per record.
    pub queue_time: LatencySummary,
    /// Batch sealed → written to its stream (the write completed), per attempt.
    pub send_time: LatencySummary,
    /// Written → acknowledged, per batch.
    pub round_trip: LatencySummary,
    /// Enqueue → acknowledged, per record (what `send().await` waits for).
    pub record_latency: LatencySummary,
}

pub(crate) struct Histograms {
    pub queue: Histogram<u64>,
    pub send: Histogram<u64>,
    pub rtt: Histogram<u64>,
    pub record: Histogram<u64>,
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Live metrics: atomics written by the driver, histograms behind a mutex that only the
/// driver and `metrics()` take (never on the enqueue path).
pub(crate) struct ProducerMetrics {
    pub records_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub batches_sent: AtomicU64,
    pub batches_sealed: AtomicU64,
    pub records_sealed: AtomicU64,
    pub sealed_bytes: AtomicU64,
    pub uncompressed_bytes: AtomicU64,
    pub retries: AtomicU64,
    pub duplicates: AtomicU64,
    pub records_failed: AtomicU64,
    pub epoch_bumps: AtomicU64,
    pub connects: AtomicU64,
    pub in_flight_batches: AtomicU64,
    pub histograms: Mutex<Histograms>,
}

impl Default for ProducerMetrics {
    fn default() -> Self {
        ProducerMetrics {
            records_sent: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            batches_sent: AtomicU64::new(0),
            batches_sealed: AtomicU64::new(0),
            records_sealed: AtomicU64::new(0),
            sealed_bytes: AtomicU64::new(0),
            uncompressed_bytes: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            records_failed: AtomicU64::new(0),
            epoch_bumps: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            in_flight_batches: AtomicU64::new(0),
            histograms: Mutex::new(Histograms { queue: hist(), send: hist(), rtt: hist(), record: hist() }),
        }
    }
}

pub(crate) fn us(d: Duration) -> u64 {
    (d.as_micros() as u64).max(1)
}

impl ProducerMetrics {
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }

    pub(crate) fn histograms(&self) -> std::sync::MutexGuard<'_, Histograms> {
        self.histograms.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn snapshot(&self, buffer_available: usize) -> MetricsSnapshot {
        let g = |c: &AtomicU64| c.load(Relaxed);
        let sealed = g(&self.batches_sealed).max(1) as f64;
        let sealed_bytes = g(&self.sealed_bytes);
        let h = self.histograms();
        MetricsSnapshot {
            records_sent: g(&self.records_sent),
            bytes_sent: g(&self.bytes_sent),
            batches_sent: g(&self.batches_sent),
            retries: g(&self.retries),
            duplicates: g(&self.duplicates),
            records_failed: g(&self.records_failed),
            epoch_bumps: g(&self.epoch_bumps),
            connects: g(&self.connects),
            avg_records_per_batch: g(&self.records_sealed) as f64 / sealed,
            avg_batch_bytes: sealed_bytes as f64 / sealed,
            compression_ratio: if sealed_bytes == 0 {
                1.0
            } else {
                g(&self.uncompressed_bytes) as f64 / sealed_bytes as f64
            },
            buffer_available: buffer_available as u64,
            in_flight_batches: g(&self.in_flight_batches),
            queue_time: LatencySummary::of(&h.queue),
            send_time: LatencySummary::of(&h.send),
            round_trip: LatencySummary::of(&h.rtt),
            record_latency: LatencySummary::of(&h.record),
        }
    }
}
