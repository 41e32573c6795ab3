//! `qwire produce`: records from the command line, a file or stdin, through the producer
//! engine (pipelined: records are enqueued while earlier ones are still in flight).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::ValueEnum;
use qwire::producer::{DeliveryFuture, ErrorKind, ProduceError, Producer, ProducerRecord, TlsConfig};
use qwire::protocol::{Acks, Compression, ErrorCode};
use qwire::schema::typed::{EncodedValue, SchemaBinding};
use qwire::schema::ParsedSchema;
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
    /// Validate every value against this subject's latest schema and attach its id
    /// (values are JSON; Avro and Protobuf values are encoded from it). An invalid value
    /// stops the command before it is sent (exit 8, one-line reason).
    #[arg(long, value_name = "SUBJECT")]
    schema_subject: Option<String>,
    /// Register this schema (or find it) under --schema-subject, default `{topic}-value`,
    /// then validate as --schema-subject does.
    #[arg(long, value_name = "PATH", requires = "schema_type")]
    schema_file: Option<PathBuf>,
    /// The type of --schema-file: json_schema, avro or protobuf.
    #[arg(long, value_name = "TYPE", requires = "schema_file")]
    schema_type: Option<qwire::schema::SchemaType>,
    /// Where the schema id goes: a `qwire.schema_id` header, or Confluent's wire format in
    /// front of the value (what Confluent deserializers read).
    #[arg(long, value_name = "header|confluent", default_value = "header")]
    schema_id_placement: qwire::schema::IdPlacement,
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
/// refused certificate, ACL, unknown topic), creates the topic if asked, checks an
/// explicit partition, and resolves the schema to validate with. Returns the server that
/// answered and the schema.
async fn preflight(args: &ProduceArgs) -> Result<(String, Option<SchemaBinding>), Failure> {
    let (mut client, server) = connect_first(&args.conn).await?;
    let r = preflight_with(&mut client, args).await;
    let binding = match r {
        Ok(_) => resolve_schema(&mut client, args).await,
        Err(f) => Err(f),
    };
    client.close();
    binding.map(|b| (server, b))
}

/// The schema `--schema-subject` / `--schema-file` name, registered if need be.
async fn resolve_schema(
    client: &mut qwire::client::Client,
    args: &ProduceArgs,
) -> Result<Option<SchemaBinding>, Failure> {
    let subject = args.schema_subject.clone().unwrap_or_else(|| format!("{}-value", args.topic));
    let (id, t, text) = match (&args.schema_file, args.schema_type) {
        (Some(path), Some(t)) => {
            let text = crate::schema::read_schema(path)?;
            let (id, _) = client.register_schema(&subject, t, &text).await.map_err(crate::schema::schema_failure)?;
            (id, t, text)
        }
        _ if args.schema_subject.is_some() => {
            let v = client.schema_version(&subject, None, false).await.map_err(crate::schema::schema_failure)?;
            (v.id, v.schema_type, v.schema)
        }
        _ => return Ok(None),
    };
    let parsed = ParsedSchema::parse(t, &text).map_err(|e| Failure::new(EXIT_INVALID, e.to_string()))?;
    SchemaBinding::new(id, Arc::new(parsed), args.schema_id_placement, None)
        .map(Some)
        .map_err(|e| Failure::new(EXIT_INVALID, e))
}

/// Validates (and, for Avro and Protobuf, encodes) a JSON value for the schema; the
/// header to attach comes back with it.
fn encode_value(binding: &SchemaBinding, value: &Bytes) -> Result<EncodedValue, String> {
    if matches!(**binding.parsed(), ParsedSchema::Json(_)) {
        // JSON stays as typed: checked, not re-serialised.
        return binding.check_payload(value).map_err(|e| e.to_string());
    }
    let json: serde_json::Value = serde_json::from_slice(value).map_err(|e| format!("value is not JSON: {e}"))?;
    binding.encode_json(&json).map_err(|e| e.to_string())
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
    let stdin_busy = [&args.file, &args.lines].iter().any(|f| f.as_deref() == Some(Path::new("-")));
    let sasl = args.conn.sasl.credentials(stdin_busy)?;
    let tls = match &sasl {
        Some(_) => {
            let ca = args.conn.sasl.ca_file(&args.conn.certs);
            TlsConfig::ca_file(&ca)
                .map_err(|e| Failure::new(EXIT_INVALID, format!("CA certificate {}: {e}", ca.display())))?
        }
        None => TlsConfig::from_dir(&args.conn.certs, &args.conn.client)
            .map_err(|e| Failure::new(EXIT_INVALID, format!("client certificate '{}': {e}", args.conn.client)))?,
    };
    let who = match &sasl {
        Some(c) => format!("sasl-{}", c.mechanism().name().to_ascii_lowercase()),
        None => args.conn.client.clone(),
    };
    let mut base = Producer::builder().tls(tls).client_id(format!("qwire-cli-{who}"));
    if let Some(creds) = sasl {
        base = base.sasl(creds);
    }
    let base = base
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

    let (answered, binding) = preflight(&args).await?;
    let mut invalid = None;
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
        let (value, schema_header) = match &binding {
            None => (value, None),
            Some(b) => match encode_value(b, &value) {
                Ok(EncodedValue { value, header }) => (value, header),
                Err(e) => {
                    invalid = Some(Failure::new(EXIT_INVALID, format!("record {i} not sent: {e}")));
                    stopped = Some("stopped at a value that does not match the schema");
                    break;
                }
            },
        };
        let mut record = ProducerRecord::new(topic.clone(), value);
        record.headers.extend(schema_header);
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
    if let Some(f) = read_error.or(invalid) {
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
