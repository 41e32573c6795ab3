//! `qwire produce`: records from the command line, a file or stdin, through the producer
//! engine (pipelined: records are enqueued while earlier ones are still in flight).

use std::io::BufRead;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::ValueEnum;
use qwire::producer::{DeliveryFuture, ErrorKind, ProduceError, Producer, ProducerRecord, TlsConfig};
use qwire::protocol::{Acks, Compression, ErrorCode};
use tokio::sync::mpsc;

use crate::clients::{
    connect_first, produce_exit_code, transport_failure, ConnArgs, Out, EXIT_INVALID, EXIT_NOT_AUTHORIZED,
    EXIT_UNKNOWN_TOPIC,
};
use crate::Failure;

/// `--acks` values.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum AcksArg {
    /// Fire and forget: no answer, no offsets (turns idempotence off).
    None,
    /// Acknowledged once appended to the leader's log (page cache).
    Leader,
    /// Acknowledged once fsync'd (the default).
    All,
}

/// `--compression` values.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum CompressionArg {
    /// No compression.
    None,
    /// LZ4.
    Lz4,
    /// Zstandard.
    Zstd,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
}

impl CompressionArg {
    /// The protocol's codec.
    fn codec(self) -> Compression {
        match self {
            CompressionArg::None => Compression::None,
            CompressionArg::Lz4 => Compression::Lz4,
            CompressionArg::Zstd => Compression::Zstd,
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Snappy => Compression::Snappy,
        }
    }
}

/// `qwire produce` arguments.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("payload").required(true).args(["message", "file", "lines"])))]
pub(crate) struct ProduceArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Topic.
    #[arg(short, long)]
    topic: String,
    /// The record value; `{i}` is replaced by the record's sequence number (0..count-1).
    #[arg(short, long)]
    message: Option<String>,
    /// Send this file's whole content as one record.
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    /// Send one record per line of this file, or of stdin with `-`.
    #[arg(long, value_name = "PATH|-", conflicts_with = "count")]
    lines: Option<PathBuf>,
    /// Record key (the default partitioner hashes it); `{i}` is replaced as in --message.
    #[arg(short, long)]
    key: Option<String>,
    /// Record headers as key:value pairs separated by commas; repeatable.
    #[arg(short, long, value_name = "K:V,K2:V2")]
    attributes: Vec<String>,
    /// Send the message (or file) this many times.
    #[arg(short, long, default_value_t = 1)]
    count: u64,
    /// Pause between records, in ms (0: as fast as possible).
    #[arg(short, long, value_name = "MS", default_value_t = 0)]
    interval: u64,
    /// Create the topic with this many partitions if it does not exist.
    #[arg(short, long, value_name = "N")]
    partitions: Option<u32>,
    /// Send every record to this partition (default: by key hash, sticky without a key).
    #[arg(long, value_name = "P")]
    partition: Option<u32>,
    /// Acknowledgement level [default: all, with idempotence; none turns idempotence off].
    #[arg(long, value_enum)]
    acks: Option<AcksArg>,
    /// acks=all with idempotence: each record stored exactly once, fsync'd (the default,
    /// spelled out).
    #[arg(long, conflicts_with = "acks")]
    reliable: bool,
    /// Per-batch compression.
    #[arg(long, value_enum, default_value_t = CompressionArg::None)]
    compression: CompressionArg,
    /// How long a batch may wait for more records, in ms.
    #[arg(long, value_name = "MS", default_value_t = qwire::producer::config::DEFAULT_LINGER.as_millis() as u64)]
    linger_ms: u64,
    /// Seal a batch at this many bytes.
    #[arg(long, value_name = "BYTES", default_value_t = qwire::producer::config::DEFAULT_BATCH_SIZE)]
    batch_size: usize,
    /// Refuse records larger than this many bytes (encoded).
    #[arg(long, value_name = "BYTES", default_value_t = qwire::producer::config::DEFAULT_MAX_RECORD_SIZE)]
    max_record_size: usize,
    /// Print only a summary line instead of one line per record.
    #[arg(short, long)]
    quiet: bool,
}

/// Parses `-a` values: `key:value` pairs separated by commas (the value may contain `:`).
pub(crate) fn parse_attributes(specs: &[String]) -> Result<Vec<(String, Bytes)>, Failure> {
    let mut out = Vec::new();
    for spec in specs {
        for item in spec.split(',') {
            match item.split_once(':') {
                Some((k, v)) if !k.trim().is_empty() => out.push((k.trim().to_string(), Bytes::from(v.to_string()))),
                _ => {
                    return Err(Failure::new(
                        EXIT_INVALID,
                        format!(
                            "invalid attribute '{item}' in --attributes \"{spec}\": expected key:value pairs \
                             separated by commas, e.g. -a \"source:web,region:eu\""
                        ),
                    ))
                }
            }
        }
    }
    Ok(out)
}

/// A value or key, with `{i}` substituted when it contains one.
#[derive(Clone)]
enum Template {
    Plain(Bytes),
    Indexed(String),
}

impl Template {
    /// A template of `s`.
    fn new(s: String) -> Template {
        if s.contains("{i}") {
            Template::Indexed(s)
        } else {
            Template::Plain(Bytes::from(s))
        }
    }

    /// The bytes for record `i`.
    fn at(&self, i: u64) -> Bytes {
        match self {
            Template::Plain(b) => b.clone(),
            Template::Indexed(s) => Bytes::from(s.replace("{i}", &i.to_string())),
        }
    }
}

/// Where record values come from.
enum Source {
    /// The same value (or template) `count` times.
    Repeat { value: Template, count: u64 },
    /// One value per line, read on a thread (stdin may block).
    Lines { rx: mpsc::Receiver<std::io::Result<Bytes>>, name: String },
}

impl Source {
    /// The source the flags name; `--lines` starts its reader thread.
    fn open(args: &ProduceArgs) -> Result<Source, Failure> {
        if let Some(m) = &args.message {
            return Ok(Source::Repeat { value: Template::new(m.clone()), count: args.count });
        }
        if let Some(path) = &args.file {
            let b = std::fs::read(path)
                .map_err(|e| Failure::new(EXIT_INVALID, format!("cannot read --file {}: {e}", path.display())))?;
            return Ok(Source::Repeat { value: Template::Plain(Bytes::from(b)), count: args.count });
        }
        let path = args.lines.as_ref().expect("clap requires one of --message, --file, --lines");
        let (reader, name): (Box<dyn BufRead + Send>, String) = if path.as_os_str() == "-" {
            (Box::new(std::io::BufReader::new(std::io::stdin())), "stdin".into())
        } else {
            let f = std::fs::File::open(path)
                .map_err(|e| Failure::new(EXIT_INVALID, format!("cannot read --lines {}: {e}", path.display())))?;
            (Box::new(std::io::BufReader::new(f)), path.display().to_string())
        };
        let (tx, rx) = mpsc::channel(1024);
        std::thread::spawn(move || read_lines(reader, tx));
        Ok(Source::Lines { rx, name })
    }

    /// The value of record `i`, or `None` at the end.
    async fn next(&mut self, i: u64) -> Result<Option<Bytes>, Failure> {
        match self {
            Source::Repeat { value, count } => Ok((i < *count).then(|| value.at(i))),
            Source::Lines { rx, name } => match rx.recv().await {
                None => Ok(None),
                Some(Ok(b)) => Ok(Some(b)),
                Some(Err(e)) => Err(Failure::new(EXIT_INVALID, format!("reading {name}: {e}"))),
            },
        }
    }
}

/// Sends each line (without its `\n` or `\r\n`) until EOF, an error, or the receiver is gone.
fn read_lines(mut r: Box<dyn BufRead + Send>, tx: mpsc::Sender<std::io::Result<Bytes>>) {
    loop {
        let mut buf = Vec::new();
        match r.read_until(b'\n', &mut buf) {
            Ok(0) => return,
            Ok(_) => {
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                    if buf.last() == Some(&b'\r') {
                        buf.pop();
                    }
                }
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
    }
}

/// A record's outcome, in the order records were handed to the producer.
enum Pending {
    /// Enqueued; resolves with the broker's answer.
    Sent(DeliveryFuture),
    /// Refused before it entered the producer.
    Refused(ProduceError),
}

/// What the reporter saw.
#[derive(Default)]
struct Report {
    sent: u64,
    failed: u64,
    first_failure: Option<(u64, ProduceError)>,
}

/// Whether a failure concerns only its own record (the others may go on) rather than the
/// topic, the principal or the connection (the rest would fail the same way).
fn per_record(e: &ProduceError) -> bool {
    matches!(e.kind(), ErrorKind::RecordTooLarge | ErrorKind::InvalidRecord)
}

/// Awaits outcomes in order, printing one line per record, and raises `abort` on a
/// failure that will not heal by sending more.
async fn report(
    mut rx: mpsc::Receiver<(u64, Pending)>,
    quiet: bool,
    abort: Arc<AtomicBool>,
) -> Result<Report, Failure> {
    let mut out = Out::new();
    let mut printing = !quiet;
    let mut rep = Report::default();
    while let Some((i, pending)) = rx.recv().await {
        let outcome = match pending {
            Pending::Sent(f) => f.await,
            Pending::Refused(e) => Err(e),
        };
        let line = match outcome {
            Ok(md) => {
                rep.sent += 1;
                match md.offset {
                    Some(o) => format!("sent {i}: partition {} offset {o}", md.partition),
                    None => format!("sent {i}: partition {} (acks=none: no offset)", md.partition),
                }
            }
            Err(e) => {
                rep.failed += 1;
                if !per_record(&e) {
                    abort.store(true, Ordering::Release);
                }
                let line = format!("failed {i}: {e}");
                rep.first_failure.get_or_insert((i, e));
                line
            }
        };
        if printing {
            printing = out.line(&line)?;
            if printing && rx.is_empty() {
                printing = out.flush()?;
            }
        }
    }
    out.flush()?;
    Ok(rep)
}

/// Connects once with the plain client to fail fast and clearly (unreachable broker,
/// refused certificate, ACL, unknown topic), creates the topic if asked, and checks an
/// explicit partition. Returns the server that answered.
async fn preflight(args: &ProduceArgs) -> Result<String, Failure> {
    let (mut client, server) = connect_first(&args.conn).await?;
    let r = preflight_with(&mut client, args).await;
    client.close();
    r.map(|_| server)
}

/// The body of [`preflight`]; returns the partition count.
async fn preflight_with(client: &mut qwire::client::Client, args: &ProduceArgs) -> Result<u32, Failure> {
    let topic = args.topic.as_str();
    if let Some(n) = args.partitions {
        match client.create_topic(topic, n).await {
            Ok(_) => {}
            Err(e) if e.code() == Some(ErrorCode::TopicAlreadyExists) => {}
            Err(e) => return Err(transport_failure(e)),
        }
    }
    // Names the topic: the broker auto-creates it here if it may (as a send would).
    let md = client.metadata(&[topic]).await.map_err(transport_failure)?;
    let t = md.topics.into_iter().find(|t| t.name == topic);
    let principal = client.principal().to_string();
    let t = match t {
        Some(t) if t.error == ErrorCode::None => t,
        Some(t) if t.error == ErrorCode::AuthorizationFailed => {
            return Err(Failure::new(
                EXIT_NOT_AUTHORIZED,
                format!(
                    "principal '{principal}' may not write topic '{topic}' \
                     (the broker's ACL grants it no permission on this topic)"
                ),
            ))
        }
        Some(t) if t.error == ErrorCode::UnknownTopicOrPartition => {
            return Err(Failure::new(
                EXIT_UNKNOWN_TOPIC,
                format!(
                    "topic '{topic}' does not exist and the broker does not create topics automatically: \
                     create it with `qwire topics create {topic} --partitions N` or pass -p/--partitions N"
                ),
            ))
        }
        Some(t) => {
            let code = if t.error == ErrorCode::InvalidTopicName { EXIT_INVALID } else { crate::clients::EXIT_OTHER };
            return Err(Failure::new(code, format!("topic '{topic}': the broker answered {}", t.error)));
        }
        None => {
            return Err(Failure::new(
                EXIT_UNKNOWN_TOPIC,
                format!("the broker returned no metadata for topic '{topic}'"),
            ))
        }
    };
    let n = t.partitions.len() as u32;
    if let Some(want) = args.partitions {
        if want != n {
            eprintln!("note: topic '{topic}' already exists with {n} partitions (not {want})");
        }
    }
    if let Some(p) = args.partition {
        if p >= n {
            return Err(Failure::new(
                EXIT_UNKNOWN_TOPIC,
                format!("topic '{topic}' has {n} partitions; partition {p} does not exist"),
            ));
        }
    }
    Ok(n)
}

/// Produces the records and prints where each landed.
pub(crate) async fn produce(args: ProduceArgs) -> Result<(), Failure> {
    // Everything the user typed is checked before any connection is made.
    let headers = parse_attributes(&args.attributes)?;
    let key = args.key.clone().map(Template::new);
    let (acks, idempotence) = match (args.reliable, args.acks) {
        (true, _) | (false, None | Some(AcksArg::All)) => (Acks::All, true),
        (false, Some(AcksArg::Leader)) => (Acks::Leader, true),
        (false, Some(AcksArg::None)) => (Acks::None, false),
    };
    let tls = TlsConfig::from_dir(&args.conn.certs, &args.conn.client)
        .map_err(|e| Failure::new(EXIT_INVALID, format!("client certificate '{}': {e}", args.conn.client)))?;
    let base = Producer::builder()
        .tls(tls)
        .client_id(format!("qwire-cli-{}", args.conn.client))
        .acks(acks)
        .idempotence(idempotence)
        .compression(args.compression.codec())
        .linger(Duration::from_millis(args.linger_ms))
        .batch_size(args.batch_size)
        .max_record_size(args.max_record_size)
        .connect_timeout(args.conn.connect_timeout());
    let with_servers = |servers: Vec<&String>| servers.into_iter().fold(base.clone(), |b, s| b.bootstrap(s.clone()));
    with_servers(args.conn.servers.iter().collect())
        .config()
        .validate()
        .map_err(|e| Failure::new(EXIT_INVALID, e.message().to_string()))?;
    let mut source = Source::open(&args)?;

    let answered = preflight(&args).await?;
    // The server that answered goes first: the producer maps a one-broker cluster's
    // partitions to its first bootstrap link without a broker id, even an unreachable one.
    let builder =
        with_servers(std::iter::once(&answered).chain(args.conn.servers.iter().filter(|s| **s != answered)).collect());
    let producer = builder.build().map_err(|e| Failure::new(produce_exit_code(&e), e.message().to_string()))?;

    let started = Instant::now();
    let abort = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel(16 * 1024);
    let reporter = tokio::spawn(report(rx, args.quiet, abort.clone()));
    let topic: Arc<str> = Arc::from(args.topic.as_str());
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    let mut i = 0u64;
    let mut stopped = None;
    let mut read_error = None;
    loop {
        if abort.load(Ordering::Acquire) {
            stopped = Some("stopped after a failure that the remaining records would hit too");
            break;
        }
        if i > 0 && args.interval > 0 {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(args.interval)) => {}
                _ = &mut ctrl_c => { stopped = Some("interrupted"); break; }
            }
        }
        let value = tokio::select! {
            biased;
            _ = &mut ctrl_c => { stopped = Some("interrupted"); break; }
            v = source.next(i) => v,
        };
        let value = match value {
            Ok(Some(v)) => v,
            Ok(None) => break,
            Err(f) => {
                read_error = Some(f);
                break;
            }
        };
        let mut record = ProducerRecord::new(topic.clone(), value);
        record.key = key.as_ref().map(|k| k.at(i));
        record.partition = args.partition;
        for (k, v) in &headers {
            record = record.header(k.clone(), v.clone());
        }
        let pending = match producer.enqueue(record).await {
            Ok(f) => Pending::Sent(f),
            Err(e) => Pending::Refused(e.error),
        };
        if tx.send((i, pending)).await.is_err() {
            break;
        }
        i += 1;
    }
    drop(tx);
    let rep = reporter.await.map_err(|e| Failure::new(crate::clients::EXIT_OTHER, format!("reporter task: {e}")))?;
    // Every record's outcome was reported above; close only repeats failures.
    let _ = producer.close(Duration::from_secs(10)).await;
    let rep = rep?;
    let secs = started.elapsed().as_secs_f64();
    let mut summary = format!(
        "sent {} of {} records to '{}' in {secs:.3} s ({:.0} records/s)",
        rep.sent,
        i,
        args.topic,
        rep.sent as f64 / secs.max(1e-9)
    );
    if let Some(why) = stopped {
        summary.push_str(&format!("; {why}"));
        if let Source::Repeat { count, .. } = source {
            summary.push_str(&format!(", {} not attempted", count - i));
        }
    }
    let mut out = Out::new();
    out.line(&summary)?;
    out.flush()?;
    if let Some(f) = read_error {
        return Err(f);
    }
    match rep.first_failure {
        None => Ok(()),
        Some((idx, e)) if rep.failed == 1 => {
            Err(Failure::new(produce_exit_code(&e), format!("record {idx} failed: {e}")))
        }
        Some((idx, e)) => Err(Failure::new(
            produce_exit_code(&e),
            format!("{} of {i} records failed; the first was record {idx}: {e}", rep.failed),
        )),
    }
}
