//! `GET /metrics`: the admin listener's Prometheus registry and the collector that
//! exports the broker at scrape time: its counters and gauges, the labelled counters and
//! latency histograms of [`Detail`](crate::broker::telemetry::Detail), and one series per
//! partition read from the topic registry.
//!
//! A per-partition gauge is one entry of `PARTITION_GAUGES`; the cluster's high
//! watermark, in-sync replica count and replication lag are read from its replicas.

use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, RwLock, Weak};

use arc_swap::ArcSwapOption;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::{Registry, Unit};

use crate::broker::context::Shared;
use crate::broker::metrics::BrokerMetrics;
use crate::broker::partition::Partition;
use crate::broker::server::BrokerHandle;
use crate::broker::telemetry::PartitionCounters;
use crate::prometheus::{MetricWriter, PARTITION, REASON, RESULT, TOPIC};

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

/// A gauge with one series per partition (labels `topic`, `partition`): name (with its
/// unit), help, and how to read it from the partition. Read at scrape time, lock-free.
pub(crate) type PartitionGauge = (&'static str, &'static str, fn(&Partition) -> f64);

/// Every per-partition gauge (the cluster's replication gauges are written after them,
/// from the cluster node's replicas).
pub(crate) const PARTITION_GAUGES: &[PartitionGauge] = &[
    ("qwire_broker_end_offset", "The log end offset: the next offset to be assigned.", |p| {
        p.metadata(0).end_offset as f64
    }),
    ("qwire_broker_durable_end_offset", "Offsets below it are fsync'd and served to consumers.", |p| {
        p.durable_end() as f64
    }),
    ("qwire_broker_log_start_offset", "The first offset still stored (retention moves it).", |p| {
        p.metadata(0).log_start_offset as f64
    }),
    ("qwire_broker_log_size_bytes", "Bytes of the partition's log segments on disk.", |p| {
        p.metadata(0).size_bytes as f64
    }),
];

/// A counter with one series per partition, read from its [`PartitionCounters`].
type PartitionCounter = (&'static str, &'static str, Option<Unit>, fn(&PartitionCounters) -> u64);

fn partition_counters() -> [PartitionCounter; 5] {
    [
        ("qwire_broker_batches_appended", "Record batches appended.", None, |c| c.batches.load(Relaxed)),
        ("qwire_broker_records_appended", "Records appended.", None, |c| c.records.load(Relaxed)),
        ("qwire_broker_appended", "Record batch bytes appended (as received, compressed).", Some(Unit::Bytes), |c| {
            c.bytes.load(Relaxed)
        }),
        (
            "qwire_broker_duplicate_batches",
            "Retried batches answered from the idempotence state with their original offsets, not appended again.",
            None,
            |c| c.duplicates.load(Relaxed),
        ),
        ("qwire_broker_fetch", "Record batch bytes served by fetches.", Some(Unit::Bytes), |c| {
            c.fetch_bytes.load(Relaxed)
        }),
    ]
}

/// What the collector reads: the counters, and the broker's state while it runs.
#[derive(Debug)]
struct Source {
    metrics: Arc<BrokerMetrics>,
    shared: Weak<Shared>,
}

/// Exports the broker once attached; before that only `qwire_broker_build_info`.
#[derive(Debug, Clone, Default)]
pub(crate) struct BrokerCollector {
    source: Arc<ArcSwapOption<Source>>,
}

impl BrokerCollector {
    /// Reads this broker from now on (a restarted broker in the same process replaces
    /// the previous one).
    pub(crate) fn attach(&self, broker: &BrokerHandle) {
        self.source.store(Some(Arc::new(Source { metrics: broker.live_metrics(), shared: broker.shared() })));
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
        let Some(src) = self.source.load_full() else { return Ok(()) };
        let m = &src.metrics;
        let s = m.snapshot();
        let g = |v: u64| v as f64;

        // Connections and streams.
        w.counter(
            "qwire_broker_connections_accepted",
            "Connections whose TLS handshake completed.",
            None,
            s.connections_accepted,
        )?;
        w.counter_family(
            "qwire_broker_connections_refused",
            "Connections refused, by reason: connection_limit (max_connections), handshake_limit (max_handshakes \
             in progress), handshake_failed (certificate refused, wrong ALPN, no usable principal), \
             handshake_timeout.",
            None,
            [
                ([(REASON, "connection_limit")], s.connections_refused),
                ([(REASON, "handshake_limit")], s.handshakes_refused),
                ([(REASON, "handshake_failed")], s.handshake_failures),
                ([(REASON, "handshake_timeout")], s.handshake_timeouts),
            ],
        )?;
        w.counter(
            "qwire_broker_handshakes_retried",
            "QUIC Retry packets sent (address validation under load).",
            None,
            s.handshakes_retried,
        )?;
        w.gauge(
            "qwire_broker_connections_open",
            "Connections open (handshaking included).",
            None,
            g(s.connections_open),
        )?;
        w.counter("qwire_broker_streams_opened", "Bidirectional streams opened by clients.", None, s.streams_opened)?;
        w.gauge("qwire_broker_streams_open", "Streams being served.", None, g(s.streams_open))?;
        w.counter(
            "qwire_broker_streams_stalled",
            "Streams reset because their client took no response bytes for the stall timeout.",
            None,
            s.streams_stalled,
        )?;
        w.gauge(
            "qwire_broker_requests_in_flight",
            "Requests read and not yet answered (acks=all answers waiting for their group commit included).",
            None,
            g(s.requests_in_flight),
        )?;
        w.gauge(
            "qwire_broker_frame_reserved",
            "Bytes reserved for large frames being received, over all connections.",
            Some(Unit::Bytes),
            g(s.frame_bytes_reserved),
        )?;
        w.gauge(
            "qwire_broker_response_queued",
            "Bytes of responses charged to the response budgets and not yet handed to QUIC.",
            Some(Unit::Bytes),
            g(s.response_bytes_queued),
        )?;
        w.gauge(
            "qwire_broker_response_queued_peak",
            "The most response bytes queued at once since start.",
            Some(Unit::Bytes),
            g(s.response_bytes_queued_peak),
        )?;
        w.counter(
            "qwire_broker_response_budget_waits",
            "Responses that waited for room in a response budget.",
            None,
            s.response_budget_waits,
        )?;
        w.counter(
            "qwire_broker_bad_frames",
            "Frames that could not be decoded (garbage, bad lengths, unknown kinds).",
            None,
            s.bad_frames,
        )?;
        w.counter(
            "qwire_broker_authorization_failures",
            "Requests refused by the ACL.",
            None,
            s.authorization_failures,
        )?;

        // Schema registry.
        w.counter(
            "qwire_broker_schema_policy_warnings",
            "Records stored on a warn topic without a schema id registered under the topic's subject.",
            None,
            s.schema_policy_warnings,
        )?;
        w.counter(
            "qwire_broker_schema_policy_refusals",
            "Batches refused by an enforce topic's schema policy.",
            None,
            s.schema_policy_refusals,
        )?;
        w.counter("qwire_broker_schema_requests", "Schema registry frames served.", None, s.schema_requests)?;

        // Produce, storage.
        w.metric(
            "qwire_broker_produce_requests",
            "Produce requests by acks level and the error code answered (NONE: success; for acks=none, the code it \
             would have been answered with).",
            None,
            &m.detail.produce,
        )?;
        w.counter(
            "qwire_broker_corrupt_batches",
            "Batches refused for a bad CRC or structure.",
            None,
            s.corrupt_batches,
        )?;
        w.metric(
            "qwire_broker_append_latency",
            "A produce's append: batch check, wait for the partition's owner, write (or dedup answer).",
            Some(Unit::Seconds),
            &m.detail.append_latency,
        )?;
        w.metric(
            "qwire_broker_fsync_latency",
            "The fsyncs of one group-commit round.",
            Some(Unit::Seconds),
            &m.detail.fsync_latency,
        )?;
        w.metric(
            "qwire_broker_group_commit_wait",
            "An acks=all answer's wait from its append to the group commit that made it durable (or failed).",
            Some(Unit::Seconds),
            &m.detail.group_commit_wait,
        )?;
        w.counter("qwire_broker_fsyncs", "Group-commit rounds that fsync'd.", None, s.fsyncs)?;
        w.counter(
            "qwire_broker_fsync_failures",
            "Group-commit rounds whose fsync failed (the partition then refuses writes until recovered).",
            None,
            s.fsync_failures,
        )?;
        w.counter(
            "qwire_broker_offsets_cut",
            "Offsets cut by in-place recovery after a failed write or fsync (never acknowledged as durable).",
            None,
            s.offsets_cut,
        )?;
        w.counter("qwire_broker_segment_rolls", "Log segment rolls.", None, s.segment_rolls)?;
        w.counter(
            "qwire_broker_producers_expired",
            "Idempotent producers whose dedup state expired.",
            None,
            s.producers_expired,
        )?;
        w.counter("qwire_broker_fetch_requests", "Fetch requests served.", None, s.fetch_requests)?;

        w.counter_family(
            "qwire_broker_sasl_authentications",
            "SASL authentications of connections without a client certificate, by result: success (first \
             authentication), reauthentication, failure (credentials refused), throttled (refused unchecked: too \
             many failures from the address).",
            None,
            [
                ([(RESULT, "success")], s.sasl_authentications),
                ([(RESULT, "reauthentication")], s.sasl_reauthentications),
                ([(RESULT, "failure")], s.sasl_failures),
                ([(RESULT, "throttled")], s.sasl_throttled),
            ],
        )?;
        w.counter(
            "qwire_broker_unauthenticated_requests",
            "Requests refused AUTHENTICATION_REQUIRED: sent by a certificate-less connection before it authenticated.",
            None,
            s.sasl_unauthenticated_requests,
        )?;
        w.counter_family(
            "qwire_broker_sasl_connections_closed",
            "Certificate-less connections closed by the broker, by reason: deadline (not authenticated in time), \
             expired (session ended without re-authentication), refused (too many not yet authenticated).",
            None,
            [
                ([(REASON, "deadline")], s.sasl_deadline_closes),
                ([(REASON, "expired")], s.sasl_sessions_expired),
                ([(REASON, "refused")], s.sasl_unauthenticated_refused),
            ],
        )?;

        // Broker state: topics, partitions, producer ids.
        let Some(shared) = src.shared.upgrade() else { return Ok(()) };
        let topics = shared.registry.list();
        w.gauge("qwire_broker_topics", "Topics.", None, topics.len() as f64)?;
        w.gauge(
            "qwire_broker_producer_ids",
            "Producer ids issued and remembered (idempotent producers).",
            None,
            shared.producer_ids.len() as f64,
        )?;
        // Labels: two label sets, `[topic]` and `[partition]`, encoded together.
        type Labels<'a> = ([(&'static str, &'a str); 1], [(&'static str, u32); 1]);
        let partitions: Vec<(Labels<'_>, &Arc<Partition>)> = topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (([(TOPIC, &*t.name)], [(PARTITION, p.index())]), p)))
            .collect();
        for (name, help, unit, read) in partition_counters() {
            w.counter_family(name, help, unit, partitions.iter().map(|(l, p)| (*l, read(&p.counters))))?;
        }
        for (name, help, read) in PARTITION_GAUGES {
            w.gauge_family(name, help, None, partitions.iter().map(|(l, p)| (*l, read(p))))?;
        }
        if let Some(node) = &shared.cluster {
            encode_replication(&mut w, node)?;
        }
        Ok(())
    }
}

/// The cluster's per-partition gauges: the high watermark of every local replica, and on
/// the partitions this broker leads, the in-sync set's size and the replication lag.
fn encode_replication(w: &mut MetricWriter<'_>, node: &crate::broker::cluster::NodeInner) -> fmt::Result {
    let mut replicas = node.all_replicas();
    replicas.sort_by(|a, b| (&a.topic, a.index).cmp(&(&b.topic, b.index)));
    type Labels<'a> = ([(&'static str, &'a str); 1], [(&'static str, u32); 1]);
    fn labels(r: &crate::broker::cluster::replica::Replica) -> Labels<'_> {
        ([(TOPIC, &*r.topic)], [(PARTITION, r.index)])
    }
    w.gauge_family(
        "qwire_broker_high_watermark",
        "Offsets below it are on every in-sync replica's disk (as this replica knows it); consumers read up to it.",
        None,
        replicas.iter().map(|r| (labels(r), r.high_watermark() as f64)),
    )?;
    let led: Vec<_> = replicas.iter().filter_map(|r| r.leader_gauges().map(|g| (r, g))).collect();
    w.gauge_family(
        "qwire_broker_in_sync_replicas",
        "Replicas in the partition's in-sync set, the leader included (partitions this broker leads).",
        None,
        led.iter().map(|(r, (isr, _))| (labels(r), *isr as f64)),
    )?;
    w.gauge_family(
        "qwire_broker_replication_lag_offsets",
        "The leader's log end minus the slowest in-sync follower's fetch offset (partitions this broker leads).",
        None,
        led.iter().map(|(r, (_, lag))| (labels(r), *lag as f64)),
    )
}
