//! Prometheus export of producer metrics (cargo feature `prometheus`).
//!
//! A linking service registers one [`ProducerCollector`] with its `prometheus-client`
//! registry and adds its producers to it; every scrape reads each producer's
//! [`Producer::metrics`] snapshot and its latency histograms. Names, units, label names
//! and latency buckets follow [`crate::prometheus`], as the broker's `/metrics` does;
//! every series carries the producer's `client_id` label (give each producer a distinct
//! client id).
//!
//! ```no_run
//! # fn f(producer: &qwire::producer::Producer) {
//! use qwire::prometheus::prometheus_client::registry::Registry;
//! use qwire::producer::prometheus::ProducerCollector;
//! let mut registry = Registry::default();
//! let collector = ProducerCollector::new();
//! collector.add(producer).expect("distinct client ids");
//! registry.register_collector(Box::new(collector.clone()));
//! let text = qwire::prometheus::encode(&registry); // serve with Content-Type qwire::prometheus::CONTENT_TYPE
//! # }
//! ```
//!
//! The collector holds producers weakly: a dropped producer's series disappear.

use std::fmt;
use std::sync::{Arc, Mutex, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Unit;

use super::{Inner, Producer};
use crate::prometheus::{hdr_buckets, MetricWriter, CLIENT_ID};

/// Exports the metrics of any number of producers, labelled by client id. Cheap to
/// clone; clones share the producer list.
#[derive(Clone, Default)]
pub struct ProducerCollector {
    producers: Arc<Mutex<Vec<Exported>>>,
}

/// A producer's client id and a weak reference to its engine.
type Exported = (Arc<str>, Weak<Inner>);

impl fmt::Debug for ProducerCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProducerCollector").field("client_ids", &self.client_ids()).finish()
    }
}

/// [`ProducerCollector::add`] refused a producer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a live producer with client id '{0}' is already exported; series are labelled by client id")]
pub struct DuplicateClientId(pub String);

impl ProducerCollector {
    /// A collector with no producers.
    pub fn new() -> ProducerCollector {
        ProducerCollector::default()
    }

    /// Exports `producer` from now on, until it is dropped.
    pub fn add(&self, producer: &Producer) -> Result<(), DuplicateClientId> {
        let id = producer.inner.cfg.client_id.as_str();
        let mut list = self.producers.lock().unwrap_or_else(|p| p.into_inner());
        list.retain(|(_, w)| w.strong_count() > 0);
        if list.iter().any(|(c, _)| &**c == id) {
            return Err(DuplicateClientId(id.to_owned()));
        }
        list.push((Arc::from(id), Arc::downgrade(&producer.inner)));
        Ok(())
    }

    /// Client ids of the live producers exported.
    pub fn client_ids(&self) -> Vec<String> {
        let list = self.producers.lock().unwrap_or_else(|p| p.into_inner());
        list.iter().filter(|(_, w)| w.strong_count() > 0).map(|(c, _)| c.to_string()).collect()
    }

    fn live(&self) -> Vec<(Arc<str>, Producer)> {
        let list = self.producers.lock().unwrap_or_else(|p| p.into_inner());
        list.iter().filter_map(|(c, w)| w.upgrade().map(|inner| (c.clone(), Producer { inner }))).collect()
    }
}

impl Producer {
    /// A [`ProducerCollector`] exporting this producer.
    pub fn prometheus_collector(&self) -> ProducerCollector {
        let c = ProducerCollector::new();
        c.add(self).expect("a new collector holds no producer");
        c
    }
}

type Label = [(&'static str, Arc<str>); 1];

impl Collector for ProducerCollector {
    fn encode(&self, enc: DescriptorEncoder) -> fmt::Result {
        let producers = self.live();
        if producers.is_empty() {
            return Ok(());
        }
        let snaps: Vec<(Label, super::MetricsSnapshot)> =
            producers.iter().map(|(id, p)| ([(CLIENT_ID, id.clone())], p.metrics())).collect();
        let mut w = MetricWriter::new(enc);
        let counter = |w: &mut MetricWriter<'_>,
                       name: &str,
                       help: &str,
                       unit: Option<Unit>,
                       f: fn(&super::MetricsSnapshot) -> u64| {
            w.counter_family(name, help, unit, snaps.iter().map(|(l, s)| (l.clone(), f(s))))
        };
        counter(
            &mut w,
            "qwire_producer_records_sent",
            "Records acknowledged by the broker (or written, with acks=none).",
            None,
            |s| s.records_sent,
        )?;
        counter(
            &mut w,
            "qwire_producer_records_failed",
            "Records that failed (reported to the caller as errors).",
            None,
            |s| s.records_failed,
        )?;
        counter(&mut w, "qwire_producer_batches_sent", "Record batches acknowledged.", None, |s| s.batches_sent)?;
        counter(
            &mut w,
            "qwire_producer_sent",
            "Record batch bytes written to streams (compressed, retries included).",
            Some(Unit::Bytes),
            |s| s.bytes_sent,
        )?;
        counter(&mut w, "qwire_producer_retries", "Batch resend attempts.", None, |s| s.retries)?;
        counter(
            &mut w,
            "qwire_producer_duplicates",
            "Resent batches the broker recognised as already stored.",
            None,
            |s| s.duplicates,
        )?;
        counter(&mut w, "qwire_producer_epoch_bumps", "Producer epoch bumps after sequence errors.", None, |s| {
            s.epoch_bumps
        })?;
        counter(
            &mut w,
            "qwire_producer_connects",
            "Connections established to brokers (reconnects included).",
            None,
            |s| s.connects,
        )?;
        let gauge = |w: &mut MetricWriter<'_>,
                     name: &str,
                     help: &str,
                     unit: Option<Unit>,
                     f: fn(&super::MetricsSnapshot) -> f64| {
            w.gauge_family(name, help, unit, snaps.iter().map(|(l, s)| (l.clone(), f(s))))
        };
        gauge(&mut w, "qwire_producer_buffer_available", "Buffer memory not in use.", Some(Unit::Bytes), |s| {
            s.buffer_available as f64
        })?;
        gauge(
            &mut w,
            "qwire_producer_in_flight_batches",
            "Batches sealed but not yet acknowledged or failed.",
            None,
            |s| s.in_flight_batches as f64,
        )?;
        gauge(&mut w, "qwire_producer_batch_records_avg", "Mean records per sealed batch since start.", None, |s| {
            s.avg_records_per_batch
        })?;
        gauge(
            &mut w,
            "qwire_producer_batch_size_avg",
            "Mean sealed batch size (as sent) since start.",
            Some(Unit::Bytes),
            |s| s.avg_batch_bytes,
        )?;
        gauge(
            &mut w,
            "qwire_producer_compression",
            "Uncompressed / compressed bytes over all sealed batches (1 without compression).",
            Some(Unit::Ratios),
            |s| s.compression_ratio,
        )?;

        // Latency histograms from the live HDR histograms (microseconds).
        type Pick = fn(&super::metrics::Histograms) -> &hdrhistogram::Histogram<u64>;
        let latencies: [(&str, &str, Pick); 4] = [
            ("qwire_producer_queue_time", "Per record: enqueued until its batch is sealed.", |h| &h.queue),
            ("qwire_producer_send_time", "Per batch: sealed until written to its stream.", |h| &h.send),
            ("qwire_producer_round_trip", "Per batch: written until acknowledged.", |h| &h.rtt),
            (
                "qwire_producer_record_latency",
                "Per record: enqueued until acknowledged (what send().await waits for).",
                |h| &h.record,
            ),
        ];
        for (name, help, pick) in latencies {
            let series: Vec<_> = producers
                .iter()
                .map(|(id, p)| ([(CLIENT_ID, id.clone())], hdr_buckets(pick(&p.inner.metrics.histograms()))))
                .collect();
            w.histogram_family(name, help, series)?;
        }
        Ok(())
    }
}
