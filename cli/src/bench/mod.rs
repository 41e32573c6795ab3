//! The benchmark harness behind `qwire bench`: start (or reach) a broker, drive a
//! workload through one or more producers, measure per-record latency from `send` to
//! acknowledgement, and report in the shape of kafka-producer-perf-test plus JSON.
//!
//! With `compare_raw`, the same payload bytes are also pushed over a raw quinn stream
//! with the same TLS setup, so the producer's efficiency is a ratio measured on one
//! machine in one run.

pub mod cluster;
pub mod cpu;
pub mod embedded;
pub mod raw;
pub mod slow_link;
mod stats;
pub mod timeline;
mod workload;

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

pub use cpu::CpuReport;
use qwire::client::{Client, ConnectConfig};
use qwire::producer::{MetricsSnapshot, Producer, TlsConfig};
use qwire::protocol::{Acks, Compression, ErrorCode};
use qwire::transport::tls::QuicTuning;
pub use stats::Stats;
pub use workload::PayloadKind;

/// An external broker to benchmark instead of the embedded one.
#[derive(Debug, Clone, Serialize)]
pub struct ExternalBroker {
    /// `host:port`.
    pub addr: String,
    /// `qwire certs` directory.
    pub certs: PathBuf,
    /// Client certificate name.
    pub client: String,
}

/// The workload and producer settings of a run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchConfig {
    /// External broker; `None` starts an embedded one.
    pub broker: Option<ExternalBroker>,
    /// Topic to produce to.
    pub topic: String,
    /// Records to send (after warm-up), unless `duration_secs` is set.
    pub records: u64,
    /// Run for this long instead of a record count.
    pub duration_secs: Option<f64>,
    /// Value size in bytes.
    pub record_size: usize,
    /// Payload content.
    pub payload: PayloadKind,
    /// Distinct keys (0 = no keys).
    pub key_space: u64,
    /// Partitions of the topic (created if missing).
    pub partitions: u32,
    /// Independent producer instances.
    pub producers: usize,
    /// Records per second over all producers; 0 = unlimited.
    pub rate: u64,
    /// Acknowledgement level.
    #[serde(serialize_with = "as_text")]
    pub acks: Acks,
    /// Idempotence.
    pub idempotence: bool,
    /// Compression codec.
    #[serde(serialize_with = "as_text")]
    pub compression: Compression,
    /// Linger in ms.
    pub linger_ms: f64,
    /// Batch size in bytes.
    pub batch_size: usize,
    /// Max in-flight batches per partition.
    pub max_in_flight: usize,
    /// Buffer memory per producer in bytes.
    pub buffer_memory: usize,
    /// Warm-up seconds (records sent then are not measured).
    pub warmup_secs: f64,
    /// Embedded broker skips the disk append (protocol work only).
    pub sink: bool,
    /// Also measure a raw quinn stream with the same bytes.
    pub compare_raw: bool,
    /// QUIC MTU discovery upper bound (1452 = Ethernet).
    pub mtu: u16,
    /// Data streams per connection.
    pub streams_per_connection: usize,
    /// MiB written and deleted in the embedded broker's data directory before the run,
    /// so log writes reuse page-cache pages (0 = off).
    pub prewarm_mib: usize,
    /// Producers send through a relay that forwards at most this many MB/s (a slow broker).
    pub link_mbps: Option<f64>,
    /// Validate every record against a JSON Schema registered under `{topic}-value`
    /// before it is queued (the producer's record-level schema path; header placement).
    /// Needs the `json-object` payload.
    pub schema_validation: bool,
}

fn as_text<T: std::fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            broker: None,
            topic: "bench".into(),
            records: 1_000_000,
            duration_secs: None,
            record_size: 100,
            payload: PayloadKind::Random,
            key_space: 0,
            partitions: 1,
            producers: 1,
            rate: 0,
            acks: Acks::Leader,
            idempotence: true,
            compression: Compression::None,
            linger_ms: 5.0,
            batch_size: 256 * 1024,
            max_in_flight: 5,
            buffer_memory: 64 << 20,
            warmup_secs: 1.0,
            sink: false,
            compare_raw: false,
            mtu: 1452,
            streams_per_connection: 8,
            prewarm_mib: 0,
            link_mbps: None,
            schema_validation: false,
        }
    }
}

/// Latency summary in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct LatencyMs {
    /// Mean.
    pub avg: f64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

impl LatencyMs {
    /// Mean, percentiles and maximum of a histogram of microseconds (zeros when empty).
    pub fn of(h: &Histogram<u64>) -> LatencyMs {
        let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
        LatencyMs {
            avg: h.mean() / 1000.0,
            p50: q(0.5),
            p95: q(0.95),
            p99: q(0.99),
            p999: q(0.999),
            max: h.max() as f64 / 1000.0,
        }
    }
}

/// The outcome of a run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Records sent in the measured phase.
    pub records: u64,
    /// Of those, acknowledged.
    pub acked: u64,
    /// Records failed (any phase).
    pub failed: u64,
    /// Measured seconds (first measured send to last acknowledgement).
    pub seconds: f64,
    /// Acknowledged records per second.
    pub records_per_sec: f64,
    /// Acknowledged value bytes per second, in MB (10^6).
    pub mb_per_sec: f64,
    /// Per-record latency from `send` to acknowledgement.
    pub latency_ms: LatencyMs,
    /// `disk`, `sink` (embedded broker skipping the append) or `external`.
    pub mode: &'static str,
    /// Raw quinn throughput of the same bytes, MB/s (with `compare_raw`).
    pub raw_mb_per_sec: Option<f64>,
    /// `mb_per_sec / raw_mb_per_sec`.
    pub ratio: Option<f64>,
    /// Raw request/response round trip, back to back (with `compare_raw`).
    pub raw_rtt_us: Option<RawRtt>,
    /// Raw round trip paced like a rate-limited run (with `compare_raw` and `rate`).
    pub raw_rtt_paced_us: Option<RawRtt>,
    /// CPU time of the measured phase per acknowledged record: the producer threads' and
    /// the embedded broker's (see [`cpu`] for exactly what each covers).
    pub cpu: CpuReport,
    /// Peak resident memory of this process, MiB (includes an embedded broker).
    pub peak_rss_mib: f64,
    /// The first producer's metrics at the end.
    pub producer: MetricsSnapshot,
    /// First failure message, if any.
    pub first_error: Option<String>,
    /// The settings.
    pub config: BenchConfig,
    /// Throughput and latency per interval of the measured phase (in `report.json`, not
    /// in the `--json` summary line).
    #[serde(skip_serializing)]
    pub timeline: timeline::Timeline,
    /// Every measured latency (µs), for the percentile distribution.
    #[serde(skip_serializing)]
    pub latencies: Histogram<u64>,
}

/// Raw round-trip percentiles.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RawRtt {
    /// Median, µs.
    pub p50: u64,
    /// 99th percentile, µs.
    pub p99: u64,
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The producers' runtime: single-threaded with `threads` ≤ 1 (measured fastest on two
/// cores), else multi-threaded. Its threads are named [`cpu::PRODUCER_THREAD`] so that their
/// CPU time is counted as the producer's.
pub fn producer_runtime(threads: usize) -> tokio::runtime::Runtime {
    let mut b = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    b.thread_name(cpu::PRODUCER_THREAD).enable_all().build().expect("tokio runtime")
}

/// Runs the benchmark on the current tokio runtime (built by [`producer_runtime`], for the
/// CPU figures to mean what they say). `stats` is updated live.
pub async fn run(cfg: BenchConfig, stats: Arc<Stats>) -> Result<BenchReport, String> {
    if cfg.producers == 0 || cfg.record_size == 0 {
        return Err("producers and record size must be at least 1".into());
    }
    let embedded = match &cfg.broker {
        None => Some(embedded::EmbeddedBroker::start(
            |c| {
                c.sink = cfg.sink;
                c.default_partitions = cfg.partitions.max(1);
                c.max_partitions = c.max_partitions.max(cfg.partitions);
            },
            cfg.prewarm_mib,
        )?),
        Some(_) => None,
    };
    let (addr, certs, client) = match (&cfg.broker, &embedded) {
        (Some(ext), _) => (ext.addr.clone(), ext.certs.clone(), ext.client.clone()),
        (None, Some(e)) => (e.addr().to_string(), e.certs_dir().to_path_buf(), embedded::BENCH_CLIENT.to_string()),
        (None, None) => unreachable!("embedded broker started above"),
    };
    let sock: std::net::SocketAddr = tokio::net::lookup_host(&addr)
        .await
        .map_err(|e| format!("cannot resolve {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr} resolves to nothing"))?;

    // The topic, with the partition count asked for.
    let mut admin = Client::connect(&ConnectConfig::from_certs_dir(sock, &certs, &client).map_err(|e| e.to_string())?)
        .await
        .map_err(|e| e.to_string())?;
    match admin.create_topic(&cfg.topic, cfg.partitions).await {
        Ok(_) => {}
        Err(e) if e.code() == Some(ErrorCode::TopicAlreadyExists) => {
            let md = admin.metadata(&[&cfg.topic]).await.map_err(|e| e.to_string())?;
            let n = md.topics.first().map_or(0, |t| t.partitions.len());
            if n as u32 != cfg.partitions {
                return Err(format!("topic '{}' exists with {n} partitions, not {}", cfg.topic, cfg.partitions));
            }
        }
        Err(e) => return Err(e.to_string()),
    }
    // With --schema-validation: the schema the records are validated against.
    let subject = format!("{}-value", cfg.topic);
    if cfg.schema_validation {
        admin
            .register_schema(&subject, qwire::schema::SchemaType::Json, workload::BENCH_JSON_SCHEMA)
            .await
            .map_err(|e| format!("registering the bench schema: {e}"))?;
    }
    admin.close();

    // A slow broker: producers go through a bandwidth-limited relay.
    let link = match cfg.link_mbps {
        Some(mbps) => Some(slow_link::SlowLink::start(sock, mbps * 1e6).map_err(|e| format!("relay: {e}"))?),
        None => None,
    };
    let bootstrap = link.as_ref().map_or_else(|| addr.clone(), |l| l.addr().to_string());
    let tls = TlsConfig::from_dir(&certs, &client).map_err(|e| e.to_string())?;
    let mut producers = Vec::with_capacity(cfg.producers);
    for i in 0..cfg.producers {
        let p = Producer::builder()
            .bootstrap(bootstrap.clone())
            .tls(tls.clone())
            .client_id(format!("qwire-bench-{i}"))
            .acks(cfg.acks)
            .idempotence(cfg.idempotence && cfg.acks != Acks::None)
            .compression(cfg.compression)
            .linger(Duration::from_secs_f64(cfg.linger_ms.max(0.0) / 1000.0))
            .batch_size(cfg.batch_size)
            .max_in_flight(cfg.max_in_flight)
            .buffer_memory(cfg.buffer_memory.max(cfg.batch_size * 2))
            .max_record_size(cfg.batch_size.max(cfg.record_size + 1024))
            .streams_per_connection(cfg.streams_per_connection)
            .mtu_upper_bound(cfg.mtu);
        let p = if cfg.schema_validation { p.schema_subject_for(cfg.topic.clone(), subject.clone()) } else { p };
        let p = p.build().map_err(|e| e.to_string())?;
        p.partitions_for(&cfg.topic).await.map_err(|e| e.to_string())?;
        if cfg.schema_validation {
            p.resolve_schema(&subject).await.map_err(|e| e.to_string())?;
        }
        producers.push(p);
    }

    stats.target.store(if cfg.duration_secs.is_some() { 0 } else { cfg.records }, Relaxed);
    let plan = Arc::new(workload::Plan::new(&cfg));
    let sampler = timeline::Sampler::spawn(stats.clone(), cfg.record_size, timeline::interval_for(&cfg));
    let (started, cpu_start) = workload::drive(&cfg, plan, &producers, &stats).await;
    for p in &producers {
        // Failures are counted per record (stats.failed).
        let _ = p.flush().await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu_end = cpu::CpuSnapshot::take();
    let timeline = sampler.finish().await;
    let (sent, acked, failed) = (stats.sent.load(Relaxed), stats.acked(), stats.failed.load(Relaxed));
    let cpu = cpu::between(&cpu_start, &cpu_end, acked, seconds, embedded.is_some());
    let latencies = stats.latencies();
    let latency_ms = LatencyMs::of(&latencies);
    let producer = producers[0].metrics();
    for p in &producers {
        let _ = p.close(Duration::from_secs(10)).await;
    }
    let mb_per_sec = acked as f64 * cfg.record_size as f64 / seconds / 1e6;
    let raw = if cfg.compare_raw {
        let tuning = QuicTuning { mtu_upper_bound: cfg.mtu, ..QuicTuning::default() };
        let bytes = (acked * cfg.record_size as u64).clamp(64 << 20, 4 << 30);
        // Paced like the workload: the timer has millisecond resolution, so a rate-limited
        // run wakes about once per millisecond and both sides idle in between.
        let pace = (cfg.rate > 0).then(|| Duration::from_secs_f64(1.0 / cfg.rate as f64).max(Duration::from_millis(1)));
        Some(raw::run(&certs, &client, bytes, 64 * 1024, 5000, pace, &tuning).await?)
    } else {
        None
    };
    let mode = match (&cfg.broker, cfg.sink) {
        (Some(_), _) => "external",
        (None, true) => "sink",
        (None, false) => "disk",
    };
    if let Some(l) = link {
        let (f, d) = (l.stats().forwarded.load(Relaxed), l.stats().dropped.load(Relaxed));
        tracing::info!(forwarded = f, dropped = d, "slow link: datagrams towards the broker");
    }
    drop(embedded);
    let first_error = stats.first_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(BenchReport {
        records: sent,
        acked,
        failed,
        seconds,
        records_per_sec: acked as f64 / seconds,
        mb_per_sec,
        latency_ms,
        mode,
        raw_mb_per_sec: raw.map(|r| r.mb_per_sec),
        ratio: raw.map(|r| mb_per_sec / r.mb_per_sec),
        raw_rtt_us: raw.map(|r| RawRtt { p50: r.rtt_p50_us, p99: r.rtt_p99_us }),
        raw_rtt_paced_us: raw.and_then(|r| r.paced_rtt_us).map(|(p50, p99)| RawRtt { p50, p99 }),
        cpu,
        peak_rss_mib: peak_rss_mib(),
        producer,
        first_error,
        config: cfg,
        timeline,
        latencies,
    })
}
