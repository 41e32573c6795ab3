//! `GET /metrics`: the admin listener's Prometheus registry and the collector that
//! exports the broker's counters at scrape time.

use std::fmt;
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwapOption;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::{Registry, Unit};

use crate::broker::metrics::BrokerMetrics;
use crate::prometheus::{MetricWriter, REASON};

/// The registry `/metrics` renders. Cheap to clone; clones share it. Register metrics or
/// collectors at any time (before or after the listener starts) with
/// [`MetricsRegistry::with_registry`] or [`MetricsRegistry::register_collector`].
///
/// Names: start broker metrics with `qwire_broker_` and follow
/// [`crate::prometheus`]'s label names and units.
#[derive(Clone, Default)]
pub struct MetricsRegistry {
    inner: Arc<RwLock<Registry>>,
}

impl fmt::Debug for MetricsRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsRegistry").finish_non_exhaustive()
    }
}

impl MetricsRegistry {
    /// Runs `f` with the registry (e.g. `r.register(name, help, metric.clone())`).
    pub fn with_registry<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        f(&mut self.inner.write().unwrap_or_else(|p| p.into_inner()))
    }

    /// Adds a collector, asked for its metrics on every scrape.
    pub fn register_collector(&self, collector: impl Collector) {
        self.with_registry(|r| r.register_collector(Box::new(collector)));
    }

    /// The Prometheus text exposition of everything registered.
    pub fn encode(&self) -> String {
        crate::prometheus::encode(&self.inner.read().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Exports [`BrokerMetrics`] once a broker is attached; before that it exports only
/// `qwire_broker_build_info`.
#[derive(Debug, Clone, Default)]
pub(crate) struct BrokerCollector {
    source: Arc<ArcSwapOption<BrokerMetrics>>,
}

impl BrokerCollector {
    /// Reads these counters from now on (a restarted broker in the same process
    /// replaces the previous one).
    pub(crate) fn attach(&self, metrics: Arc<BrokerMetrics>) {
        self.source.store(Some(metrics));
    }
}

impl Collector for BrokerCollector {
    fn encode(&self, enc: DescriptorEncoder) -> fmt::Result {
        let mut w = MetricWriter::new(enc);
        w.gauge_family(
            "qwire_broker_build_info",
            "Always 1; the version label is the broker's crate version.",
            None,
            [([("version", env!("CARGO_PKG_VERSION"))], 1.0)],
        )?;
        let Some(m) = self.source.load_full() else { return Ok(()) };
        let s = m.snapshot();
        w.counter(
            "qwire_broker_connections_accepted",
            "Connections whose TLS handshake completed.",
            None,
            s.connections_accepted,
        )?;
        w.counter_family(
            "qwire_broker_connections_refused",
            "Connections refused, by reason: connection_limit (max_connections reached) or handshake (certificate \
             refused, wrong ALPN, timeout, no usable principal).",
            None,
            [([(REASON, "connection_limit")], s.connections_refused), ([(REASON, "handshake")], s.handshake_failures)],
        )?;
        w.gauge(
            "qwire_broker_connections_open",
            "Connections currently open (handshaking included).",
            None,
            s.connections_open as f64,
        )?;
        w.counter("qwire_broker_streams_opened", "Bidirectional streams opened by clients.", None, s.streams_opened)?;
        w.counter(
            "qwire_broker_bad_frames",
            "Frames that could not be decoded (garbage, bad lengths, unknown kinds).",
            None,
            s.bad_frames,
        )?;
        w.counter("qwire_broker_produce_requests", "Produce requests received.", None, s.produce_requests)?;
        w.counter("qwire_broker_produce_errors", "Produce requests answered with an error.", None, s.produce_errors)?;
        w.counter(
            "qwire_broker_batches_appended",
            "Record batches appended to a partition log.",
            None,
            s.batches_appended,
        )?;
        w.counter("qwire_broker_records_appended", "Records appended to a partition log.", None, s.records_appended)?;
        w.counter(
            "qwire_broker_appended",
            "Record batch bytes appended to a partition log (as received, compressed).",
            Some(Unit::Bytes),
            s.bytes_appended,
        )?;
        w.counter(
            "qwire_broker_duplicate_batches",
            "Retried batches answered from the idempotence state, not appended again.",
            None,
            s.duplicates,
        )?;
        w.counter(
            "qwire_broker_corrupt_batches",
            "Batches refused for a bad CRC or structure.",
            None,
            s.corrupt_batches,
        )?;
        w.counter(
            "qwire_broker_authorization_failures",
            "Requests refused by the ACL.",
            None,
            s.authorization_failures,
        )?;
        w.counter("qwire_broker_fetch_requests", "Fetch requests served.", None, s.fetch_requests)?;
        w.counter(
            "qwire_broker_fsyncs",
            "Group-commit rounds that fsync'd (each covers every batch appended before it).",
            None,
            s.fsyncs,
        )?;
        w.counter(
            "qwire_broker_fsync_failures",
            "Group-commit rounds whose fsync failed (the partition refuses writes until it has cut its log back).",
            None,
            s.fsync_failures,
        )?;
        w.counter(
            "qwire_broker_offsets_cut",
            "Offsets cut by in-place recovery after a failure (never acknowledged as durable, never served).",
            None,
            s.offsets_cut,
        )?;
        w.counter("qwire_broker_segment_rolls", "Log segments rolled.", None, s.segment_rolls)?;
        w.counter(
            "qwire_broker_producers_expired",
            "Idempotent producers whose dedup state was forgotten after producer_id_expiration_ms idle.",
            None,
            s.producers_expired,
        )
    }
}
