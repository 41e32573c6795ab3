//! `qwire bench`: flags and printing; the harness is `crate::bench`, the live display
//! `crate::progress`, the HTML report `crate::report`.

use std::path::PathBuf;
use std::sync::Arc;

use crate::bench::{self, BenchConfig, BenchReport, ExternalBroker, PayloadKind, Stats};
use qwire::protocol::{Acks, Compression};

use crate::Failure;

/// `qwire bench` arguments.
#[derive(clap::Args)]
pub(crate) struct BenchArgs {
    /// External broker (host:port); without it an embedded broker runs on loopback with
    /// fresh mTLS certificates and a temporary data directory.
    #[arg(long)]
    broker: Option<String>,
    /// With --broker: directory with ca.crt and the client certificate.
    #[arg(long, default_value = "certs")]
    certs: PathBuf,
    /// With --broker: client certificate name.
    #[arg(long, default_value = "client")]
    client: String,
    /// Topic (created with --partitions if missing).
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Records to send after warm-up.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Run for this many seconds instead of a record count.
    #[arg(long)]
    duration: Option<f64>,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    record_size: usize,
    /// Value content: random (incompressible), text or json (compressible).
    #[arg(long, default_value = "random")]
    payload: PayloadKind,
    /// Distinct keys (0: records have no key).
    #[arg(long, default_value_t = 0)]
    key_space: u64,
    /// Partitions.
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    /// Independent producer instances.
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Records per second over all producers (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Acknowledgements: none, leader or all.
    #[arg(long, default_value = "leader")]
    acks: Acks,
    /// Turn idempotence off.
    #[arg(long)]
    no_idempotence: bool,
    /// Compression: none, gzip, snappy, lz4, zstd.
    #[arg(long, default_value = "none")]
    compression: Compression,
    /// Linger in milliseconds.
    #[arg(long, default_value_t = 5.0)]
    linger_ms: f64,
    /// Batch size in bytes.
    #[arg(long, default_value_t = 256 * 1024)]
    batch_size: usize,
    /// In-flight batches per partition (≤ 5 with idempotence).
    #[arg(long, default_value_t = 5)]
    max_in_flight: usize,
    /// Producer buffer memory in MiB.
    #[arg(long, default_value_t = 64)]
    buffer_mib: usize,
    /// Warm-up seconds (not measured).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Embedded broker does all protocol work but skips the disk append.
    #[arg(long)]
    sink: bool,
    /// Also push the same bytes over a raw quinn stream (same TLS) and report the ratio.
    #[arg(long)]
    compare_raw: bool,
    /// QUIC MTU discovery upper bound (1452 fits Ethernet; loopback allows more).
    #[arg(long, default_value_t = 1452)]
    mtu: u16,
    /// Data streams per connection.
    #[arg(long, default_value_t = 8)]
    streams: usize,
    /// Before the run, write and delete this many MiB in the embedded broker's data
    /// directory so the log reuses page-cache pages (see PERF.md: on this VM the first
    /// touch of a page is several times slower than a reuse).
    #[arg(long, default_value_t = 0)]
    prewarm_mib: usize,
    /// Send through a loopback relay that forwards at most this many MB/s to the broker
    /// (a slow broker: the producer's memory then stays within its buffer; PERF.md).
    #[arg(long)]
    link_mbps: Option<f64>,
    /// Validate every record against a JSON Schema registered under `{topic}-value`
    /// before it is queued (the producer's schema path). Needs `--payload json-object`;
    /// run once with and once without it to measure what validation costs.
    #[arg(long)]
    schema_validation: bool,
    /// Worker threads of the producers' runtime (1: one single-threaded runtime; the
    /// embedded broker always has its own thread).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Print a JSON summary as the last line.
    #[arg(long)]
    json: bool,
    /// Also run against a local cluster of N brokers (N ≥ 2; an etcd from PATH and N
    /// `qwire broker` processes, replication factor min(3, N), min in-sync 2): acks=all on
    /// the cluster against acks=all on a single node in the same run, then the failover
    /// time over --failover-kills leader SIGKILLs. Needs a build with `--features cluster`.
    #[arg(long, value_name = "N")]
    cluster: Option<usize>,
    /// With --cluster: leader SIGKILLs to time (0: no failover measurement).
    #[arg(long, default_value_t = 10)]
    failover_kills: usize,
    #[command(flatten)]
    report: crate::report::ReportArgs,
}

fn config(a: BenchArgs) -> (BenchConfig, bool, usize, crate::report::ReportArgs) {
    let a = BenchArgs { cluster: None, ..a };
    let broker = a.broker.map(|addr| ExternalBroker { addr, certs: a.certs, client: a.client });
    let cfg = BenchConfig {
        broker,
        topic: a.topic,
        records: a.records,
        duration_secs: a.duration,
        record_size: a.record_size,
        payload: a.payload,
        key_space: a.key_space,
        partitions: a.partitions,
        producers: a.producers,
        rate: a.rate,
        acks: a.acks,
        idempotence: !a.no_idempotence,
        compression: a.compression,
        linger_ms: a.linger_ms,
        batch_size: a.batch_size,
        max_in_flight: a.max_in_flight,
        buffer_memory: a.buffer_mib << 20,
        warmup_secs: a.warmup,
        sink: a.sink,
        compare_raw: a.compare_raw,
        mtu: a.mtu,
        streams_per_connection: a.streams,
        prewarm_mib: a.prewarm_mib,
        link_mbps: a.link_mbps,
        schema_validation: a.schema_validation,
    };
    (cfg, a.json, a.threads, a.report)
}

/// Runs the benchmark and prints kafka-producer-perf-test style lines.
pub(crate) fn run(args: BenchArgs) -> Result<(), Failure> {
    if let Some(n) = args.cluster {
        let kills = args.failover_kills;
        let (cfg, json, threads, _) = config(args);
        return run_cluster(cfg, n, kills, json, threads);
    }
    let (cfg, json, threads, report_args) = config(args);
    if cfg.schema_validation && cfg.payload != PayloadKind::JsonObject {
        return Err(Failure::new(
            8,
            "--schema-validation needs --payload json-object (values valid against the bench schema)",
        ));
    }
    if !report_args.compare.is_empty() {
        let page = crate::report::compare(&report_args).map_err(|e| Failure::new(8, e))?;
        println!("comparison written to {}", page.display());
        return Ok(());
    }
    let machine = crate::report::Machine::detect();
    let stats = Arc::new(Stats::default());
    let report = bench::producer_runtime(threads).block_on(async {
        let progress = crate::progress::Progress::spawn(stats.clone(), &cfg);
        let r = bench::run(cfg, stats.clone()).await;
        progress.finish();
        r
    });
    let report = report.map_err(|e| Failure::new(1, format!("bench failed: {e}")))?;
    print_report(&report, json);
    if report_args.report.is_some() {
        let page = crate::report::write_run(&report_args, &report, &machine).map_err(|e| Failure::new(1, e))?;
        println!("report written to {}", page.display());
    }
    if report.failed > 0 {
        return Err(Failure::new(
            1,
            format!(
                "{} records failed; first error: {}",
                report.failed,
                report.first_error.as_deref().unwrap_or("unknown")
            ),
        ));
    }
    Ok(())
}

fn print_report(r: &BenchReport, json: bool) {
    let l = &r.latency_ms;
    println!(
        "{} records sent, {:.1} records/sec ({:.2} MB/sec), {:.2} ms avg latency, {:.2} ms max latency, \
         {:.2} ms 50th, {:.2} ms 95th, {:.2} ms 99th, {:.2} ms 99.9th.",
        r.acked, r.records_per_sec, r.mb_per_sec, l.avg, l.max, l.p50, l.p95, l.p99, l.p999
    );
    if let (Some(raw), Some(ratio), Some(rtt)) = (r.raw_mb_per_sec, r.ratio, r.raw_rtt_us) {
        println!(
            "raw quinn stream, same bytes and TLS: {raw:.2} MB/sec; qwire/raw = {ratio:.3}; raw round trip p50 {} µs, p99 {} µs.",
            rtt.p50, rtt.p99
        );
    }
    if let Some(p) = r.raw_rtt_paced_us {
        println!("raw round trip paced like this run: p50 {} µs, p99 {} µs.", p.p50, p.p99);
    }
    let c = &r.cpu;
    match (c.broker_ns_per_record, c.broker_cores) {
        (Some(b), Some(bc)) => println!(
            "CPU per record: producer threads {:.0} ns ({:.2} cores), broker {b:.0} ns ({bc:.2} cores), whole process {:.0} ns.",
            c.producer_ns_per_record, c.producer_cores, c.process_ns_per_record
        ),
        _ => println!(
            "CPU per record: producer threads {:.0} ns ({:.2} cores), whole process {:.0} ns.",
            c.producer_ns_per_record, c.producer_cores, c.process_ns_per_record
        ),
    }
    let p = &r.producer;
    println!(
        "mode {}: {:.0} records/batch, {:.0} bytes/batch, compression ratio {:.2}, retries {}, peak RSS {:.0} MiB.",
        r.mode, p.avg_records_per_batch, p.avg_batch_bytes, p.compression_ratio, p.retries, r.peak_rss_mib
    );
    if let Some(mbps) = r.config.link_mbps {
        let buffer = (r.config.buffer_memory * r.config.producers) as f64 / (1 << 20) as f64;
        let within = r.peak_rss_mib <= buffer + 64.0;
        println!(
            "slow link {mbps} MB/s: peak RSS {:.0} MiB against buffer_memory {buffer:.0} MiB + 64 MiB: {}{}.",
            r.peak_rss_mib,
            if within { "within" } else { "EXCEEDED" },
            if r.mode == "external" { "" } else { " (includes the embedded broker: use --broker for the figure)" }
        );
    }
    if json {
        println!("{}", serde_json::to_string(r).expect("serialisable report"));
    }
}

/// `--cluster N`: single node vs cluster acks=all in one run, then the failover time.
fn run_cluster(cfg: BenchConfig, n: usize, kills: usize, json: bool, threads: usize) -> Result<(), Failure> {
    if n < 2 {
        return Err(Failure::new(8, "--cluster needs at least 2 brokers"));
    }
    if cfg.broker.is_some() {
        return Err(Failure::new(8, "--cluster starts its own brokers: drop --broker"));
    }
    let cfg = BenchConfig { acks: Acks::All, ..cfg };
    crate::runtime(threads).block_on(async {
        println!("single node, acks=all:");
        let single = bench::run(cfg.clone(), Arc::new(Stats::default()))
            .await
            .map_err(|e| Failure::new(1, format!("single-node run failed: {e}")))?;
        print_report(&single, false);
        let mut local =
            bench::cluster::LocalCluster::start(n).map_err(|e| Failure::new(1, format!("local cluster: {e}")))?;
        println!("cluster of {n} brokers (replication factor {}, min in-sync {}), acks=all:", n.min(3), n.min(2));
        let ccfg = BenchConfig { broker: Some(local.external()), ..cfg.clone() };
        let clustered = bench::run(ccfg, Arc::new(Stats::default()))
            .await
            .map_err(|e| Failure::new(1, format!("cluster run failed: {e}")))?;
        print_report(&clustered, false);
        let ratio = clustered.records_per_sec / single.records_per_sec.max(f64::MIN_POSITIVE);
        println!(
            "acks=all, cluster/single node: {:.1} / {:.1} records/sec = {ratio:.3} (goal >= 0.5)",
            clustered.records_per_sec, single.records_per_sec
        );
        let failover = if kills > 0 {
            let f = bench::cluster::measure_failover(&mut local, kills)
                .await
                .map_err(|e| Failure::new(1, format!("failover measurement failed: {e}")))?;
            println!(
                "failover over {} leader SIGKILLs: p50 {:.0} ms, max {:.0} ms (session TTL {} ms; goal < 2 x TTL = {} ms)",
                f.kills,
                f.p50_ms,
                f.max_ms,
                f.session_ttl_ms,
                2 * f.session_ttl_ms
            );
            Some(f)
        } else {
            None
        };
        if json {
            let doc = serde_json::json!({
                "single_node": single,
                "cluster": clustered,
                "brokers": n,
                "ratio": ratio,
                "failover": failover,
            });
            println!("{doc}");
        }
        Ok(())
    })
}
