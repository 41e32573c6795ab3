//! What the client commands share (connection flags, connecting, error classes, output),
//! and `qwire consume`. `produce` and `topics` live in their own modules.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use clap::ValueEnum;
use qwire::client::{Client, ConnectConfig, DEFAULT_CONNECT_TIMEOUT};
use qwire::producer::{ErrorKind, ProduceError};
use qwire::protocol::frame::TopicMetadata;
use qwire::protocol::{ErrorCode, StoredRecord};
use qwire::transport::TransportError;

use crate::decode::SchemaView;
use crate::sasl_args::SaslArgs;
use crate::Failure;
use qwire::schema::SCHEMA_ID_HEADER;

/// Exit code: an error with no more specific class.
pub(crate) const EXIT_OTHER: u8 = 1;
/// Exit code: no broker answered.
pub(crate) const EXIT_UNREACHABLE: u8 = 3;
/// Exit code: the TLS handshake was refused (by either side).
pub(crate) const EXIT_TLS: u8 = 4;
/// Exit code: the broker's ACL denied the request.
pub(crate) const EXIT_NOT_AUTHORIZED: u8 = 5;
/// Exit code: the topic or partition does not exist.
pub(crate) const EXIT_UNKNOWN_TOPIC: u8 = 6;
/// Exit code: a record or frame is larger than a limit.
pub(crate) const EXIT_TOO_LARGE: u8 = 7;
/// Exit code: invalid input or configuration (flags, files, attributes, certificates).
pub(crate) const EXIT_INVALID: u8 = 8;
/// Exit code: SASL authentication was refused (or the broker failed to prove itself).
pub(crate) const EXIT_AUTHENTICATION: u8 = 9;

/// How the client commands reach and authenticate to the broker.
#[derive(clap::Args)]
pub(crate) struct ConnArgs {
    /// Broker address (host:port). Repeat it or separate with commas to give several; they
    /// are tried in order.
    #[arg(short = 's', long = "server", value_delimiter = ',', default_value = "127.0.0.1:7878")]
    pub(crate) servers: Vec<String>,
    /// Directory with ca.crt and the client's NAME.crt / NAME.key.
    #[arg(long, default_value = "certs")]
    pub(crate) certs: PathBuf,
    /// Client certificate name (its Common Name is the principal the ACL sees).
    #[arg(long, default_value = "client")]
    pub(crate) client: String,
    /// How long to wait for a broker to answer the QUIC + TLS handshake, in ms.
    #[arg(long, default_value_t = DEFAULT_CONNECT_TIMEOUT.as_millis() as u64)]
    pub(crate) connect_timeout_ms: u64,
    #[command(flatten)]
    pub(crate) sasl: SaslArgs,
}

impl ConnArgs {
    /// The connect timeout.
    pub(crate) fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

/// Output format of `consume`.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    /// `partition:offset key=K value [h:v,...]`
    Text,
    /// One JSON object per line: topic, partition, offset, timestamp, key, value, headers.
    Json,
}

/// Where `consume` starts reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StartAt {
    /// The first offset still stored (the partition's log start).
    Earliest,
    /// The partition's end: only records produced from now on.
    Latest,
    /// This offset in every partition read.
    Offset(i64),
}

impl std::str::FromStr for StartAt {
    type Err = String;
    fn from_str(s: &str) -> Result<StartAt, String> {
        match s {
            "earliest" => Ok(StartAt::Earliest),
            "latest" => Ok(StartAt::Latest),
            n => match n.parse::<i64>() {
                Ok(o) if o >= 0 => Ok(StartAt::Offset(o)),
                _ => Err(format!("'{s}' is not earliest, latest or an offset >= 0")),
            },
        }
    }
}

/// `qwire consume` arguments.
#[derive(clap::Args)]
pub(crate) struct ConsumeArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Topic.
    #[arg(short, long)]
    topic: String,
    /// Partition; every partition of the topic when omitted.
    #[arg(short, long)]
    partition: Option<u32>,
    /// Where to start: earliest (the first stored offset), latest (only new records) or an
    /// offset.
    #[arg(long, default_value = "earliest")]
    from: StartAt,
    /// Stop after this many records (default: read to the current end, or forever with
    /// --follow).
    #[arg(long)]
    count: Option<usize>,
    /// Keep polling for new records (round-robin over the partitions) until Ctrl-C.
    #[arg(short, long)]
    follow: bool,
    /// With --follow: how long to wait before polling again when nothing new arrived, in ms.
    #[arg(long, default_value_t = 200)]
    poll_ms: u64,
    /// Output format. JSON lines carry `schema_id` (from the `qwire.schema_id` header or
    /// Confluent's wire format; null when the record has none).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Decode values that carry a schema id with the registry's schema (Avro and Protobuf
    /// become JSON; JSON stays JSON), shown in place of the raw value.
    #[arg(long)]
    decode: bool,
}

/// Classifies a transport error: the codes `Failure::from` gives, plus invalid requests
/// (bad offsets, names, partition counts) as invalid input.
pub(crate) fn transport_failure(e: TransportError) -> Failure {
    match &e {
        TransportError::Broker {
            code:
                ErrorCode::OffsetOutOfRange
                | ErrorCode::InvalidTopicName
                | ErrorCode::InvalidPartitions
                | ErrorCode::InvalidRequest,
            ..
        } => Failure::new(EXIT_INVALID, e.to_string()),
        _ => Failure::from(e),
    }
}

/// The exit code for a producer error.
pub(crate) fn produce_exit_code(e: &ProduceError) -> u8 {
    match e.kind() {
        ErrorKind::Transport | ErrorKind::CircuitOpen => EXIT_UNREACHABLE,
        ErrorKind::Tls => EXIT_TLS,
        ErrorKind::Authentication => EXIT_AUTHENTICATION,
        ErrorKind::RecordTooLarge => EXIT_TOO_LARGE,
        ErrorKind::InvalidRecord => EXIT_UNKNOWN_TOPIC,
        ErrorKind::Config | ErrorKind::Schema => EXIT_INVALID,
        ErrorKind::Broker(code) => match code {
            ErrorCode::AuthorizationFailed => EXIT_NOT_AUTHORIZED,
            ErrorCode::UnknownTopicOrPartition => EXIT_UNKNOWN_TOPIC,
            ErrorCode::FrameTooLarge | ErrorCode::BatchTooLarge => EXIT_TOO_LARGE,
            ErrorCode::InvalidTopicName
            | ErrorCode::InvalidRequest
            | ErrorCode::SchemaRequired
            | ErrorCode::InvalidRecord => EXIT_INVALID,
            c if c.is_authentication() => EXIT_AUTHENTICATION,
            _ => EXIT_OTHER,
        },
        _ => EXIT_OTHER,
    }
}

/// Resolves `host:port`.
pub(crate) async fn resolve(server: &str) -> Result<std::net::SocketAddr, Failure> {
    let mut addrs = tokio::net::lookup_host(server)
        .await
        .map_err(|e| Failure::new(EXIT_UNREACHABLE, format!("cannot resolve '{server}': {e}")))?;
    addrs.next().ok_or_else(|| Failure::new(EXIT_UNREACHABLE, format!("'{server}' resolves to no address")))
}

/// Connects to the first server that answers. A refused certificate stops at once (it
/// would be refused by every broker of the cluster); otherwise every server is tried and
/// the failure names each.
pub(crate) async fn connect(conn: &ConnArgs) -> Result<Client, Failure> {
    Ok(connect_first(conn).await?.0)
}

/// [`connect`], also returning the `--server` entry that answered.
pub(crate) async fn connect_first(conn: &ConnArgs) -> Result<(Client, String), Failure> {
    let sasl = conn.sasl.credentials(false)?;
    let mut failures: Vec<Failure> = Vec::new();
    for server in &conn.servers {
        let addr = match resolve(server).await {
            Ok(a) => a,
            Err(f) => {
                failures.push(f);
                continue;
            }
        };
        let mut cfg = match &sasl {
            Some(creds) => {
                let ca = conn.sasl.ca_file(&conn.certs);
                ConnectConfig::with_sasl(addr, &ca, creds.clone())
                    .map_err(|e| Failure::new(EXIT_INVALID, format!("CA certificate {}: {e}", ca.display())))?
            }
            None => ConnectConfig::from_certs_dir(addr, &conn.certs, &conn.client)
                .map_err(|e| Failure::new(EXIT_INVALID, format!("client certificate '{}': {e}", conn.client)))?,
        };
        cfg.connect_timeout = conn.connect_timeout();
        match Client::connect(&cfg).await {
            Ok(c) => return Ok((c, server.clone())),
            Err(e @ TransportError::TlsRejected { .. }) => return Err(Failure::from(e)),
            Err(e) => failures.push(Failure::from(e)),
        }
    }
    match failures.len() {
        0 => Err(Failure::new(EXIT_INVALID, "no broker address given (-s/--server)")),
        1 => Err(failures.remove(0)),
        _ => Err(Failure::new(
            failures[0].code,
            failures.iter().map(|f| f.message.as_str()).collect::<Vec<_>>().join("; "),
        )),
    }
}

/// The topic's metadata, without creating it; when it is not visible, the reason the
/// broker gives for reading it (not authorized, or does not exist).
pub(crate) async fn topic_for_read(client: &mut Client, topic: &str) -> Result<TopicMetadata, Failure> {
    if let Some(t) = client.find_topic(topic).await.map_err(transport_failure)? {
        return Ok(t);
    }
    // Metadata hides topics the principal has no permission on; a fetch says why.
    match client.fetch(topic, 0, 0, 1).await {
        Err(e) => Err(transport_failure(e)),
        // Created in the meantime.
        Ok(_) => client.find_topic(topic).await.map_err(transport_failure)?.ok_or_else(|| {
            Failure::new(
                EXIT_UNKNOWN_TOPIC,
                format!("topic '{topic}' is not visible to principal '{}'", client.principal()),
            )
        }),
    }
}

/// Buffered stdout that reports a closed pipe (`| head`) instead of panicking.
pub(crate) struct Out {
    w: std::io::BufWriter<std::io::Stdout>,
}

impl Out {
    /// Buffered standard output.
    pub(crate) fn new() -> Out {
        Out { w: std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout()) }
    }

    /// Writes one line; `false` when the reader went away (stop quietly).
    pub(crate) fn line(&mut self, s: &str) -> Result<bool, Failure> {
        Self::check(writeln!(self.w, "{s}"))
    }

    /// Flushes; `false` when the reader went away.
    pub(crate) fn flush(&mut self) -> Result<bool, Failure> {
        Self::check(self.w.flush())
    }

    fn check(r: std::io::Result<()>) -> Result<bool, Failure> {
        match r {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
            Err(e) => Err(Failure::new(EXIT_OTHER, format!("writing to stdout: {e}"))),
        }
    }
}

/// Reads records and prints them.
pub(crate) async fn consume(args: ConsumeArgs) -> Result<(), Failure> {
    let mut client = connect(&args.conn).await?;
    let r = consume_with(&mut client, &args).await;
    client.close();
    r
}

/// A client connected to the broker with id `id` (from metadata's broker list), for
/// reading a partition it leads (in a cluster the partitions are led by several brokers).
async fn leader_client(
    conn: &ConnArgs,
    brokers: &[qwire::protocol::frame::BrokerInfo],
    id: u32,
) -> Result<Client, Failure> {
    let b = brokers.iter().find(|b| b.id == id).ok_or_else(|| {
        Failure::new(EXIT_UNREACHABLE, format!("the partition's leader, broker {id}, is not reachable now"))
    })?;
    let addr = resolve(&format!("{}:{}", b.host, b.port)).await?;
    let mut cfg = ConnectConfig::from_certs_dir(addr, &conn.certs, &conn.client)
        .map_err(|e| Failure::new(EXIT_INVALID, format!("client certificate '{}': {e}", conn.client)))?;
    cfg.connect_timeout = conn.connect_timeout();
    Client::connect(&cfg).await.map_err(Failure::from)
}

/// The body of [`consume`], on a connected client.
async fn consume_with(client: &mut Client, args: &ConsumeArgs) -> Result<(), Failure> {
    let topic = args.topic.as_str();
    let md = topic_for_read(client, topic).await?;
    // Each partition is read from its leader: the broker asked, or another one of a cluster.
    let me = client.connection().hello().broker_id;
    let brokers = client.metadata(&[]).await.map_err(transport_failure)?.brokers;
    let mut others: std::collections::HashMap<u32, Client> = std::collections::HashMap::new();
    for p in &md.partitions {
        if p.leader != me && !others.contains_key(&p.leader) {
            let mut c = leader_client(&args.conn, &brokers, p.leader).await?;
            // The leader's own numbers: the end offset is its high watermark.
            let _ = c.metadata(&[]).await;
            others.insert(p.leader, c);
        }
    }
    let mut md = md;
    for p in md.partitions.iter_mut() {
        if let Some(c) = others.get_mut(&p.leader) {
            if let Some(t) = c.find_topic(topic).await.map_err(transport_failure)? {
                if let Some(q) = t.partitions.iter().find(|q| q.partition == p.partition) {
                    *p = *q;
                }
            }
        }
    }
    let parts: Vec<_> = match args.partition {
        None => md.partitions.clone(),
        Some(p) => match md.partitions.iter().find(|x| x.partition == p) {
            Some(x) => vec![*x],
            None => {
                return Err(Failure::new(
                    EXIT_UNKNOWN_TOPIC,
                    format!("topic '{topic}' has {} partitions; partition {p} does not exist", md.partitions.len()),
                ))
            }
        },
    };
    let mut offsets: Vec<i64> = parts
        .iter()
        .map(|p| match args.from {
            StartAt::Earliest => p.log_start_offset,
            StartAt::Latest => p.end_offset,
            StartAt::Offset(o) => o,
        })
        .collect();
    let mut out = Out::new();
    let mut printed = 0usize;
    let full = |printed: usize| args.count.is_some_and(|c| printed >= c);
    if full(printed) {
        return Ok(());
    }
    // Without --follow, each partition is read to its current end, one after the other.
    let mut done = vec![false; parts.len()];
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    let mut decoder = crate::decode::Decoder::default();
    loop {
        let mut progressed = false;
        for (i, p) in parts.iter().enumerate() {
            while !done[i] {
                let reader = match others.get_mut(&p.leader) {
                    Some(c) => c,
                    None => &mut *client,
                };
                let fetch = reader.fetch_records(topic, p.partition, offsets[i], 1 << 20);
                let f = tokio::select! {
                    r = fetch => r.map_err(transport_failure)?,
                    _ = &mut ctrl_c => return out.flush().map(|_| ()),
                };
                for r in &f.records {
                    let view = decoder.view(client, r, args.decode).await;
                    if !out.line(&render(topic, p.partition, r, args.format, &view))? {
                        return Ok(());
                    }
                    printed += 1;
                    if full(printed) {
                        return out.flush().map(|_| ());
                    }
                }
                progressed |= f.next_offset != offsets[i];
                let at_end = f.next_offset >= f.high_watermark || f.next_offset == offsets[i];
                offsets[i] = f.next_offset;
                if !args.follow {
                    done[i] = at_end;
                } else {
                    // Round-robin: one fetch per partition per round.
                    break;
                }
            }
        }
        if !out.flush()? {
            return Ok(());
        }
        if !args.follow {
            return Ok(());
        }
        if !progressed {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(args.poll_ms)) => {}
                _ = &mut ctrl_c => return Ok(()),
            }
        }
    }
}

/// Puts a key/value/header as a UTF-8 string, or as `NAME_b64` when it is not UTF-8.
fn bytes_field(map: &mut serde_json::Map<String, serde_json::Value>, name: &str, b: &Option<bytes::Bytes>) {
    match b {
        None => {
            map.insert(name.into(), serde_json::Value::Null);
        }
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => {
                map.insert(name.into(), s.into());
            }
            Err(_) => {
                map.insert(format!("{name}_b64"), base64::engine::general_purpose::STANDARD.encode(b).into());
            }
        },
    }
}

/// One record as a line of text or JSON; `view` is its schema id and decoded value.
pub(crate) fn render(topic: &str, partition: u32, r: &StoredRecord, format: Format, view: &SchemaView) -> String {
    match format {
        Format::Text => {
            let show = |b: &Option<bytes::Bytes>| {
                b.as_ref().map_or("null".to_string(), |b| String::from_utf8_lossy(b).into_owned())
            };
            let headers: Vec<String> = r
                .headers
                .iter()
                .map(|h| match (h.key.as_str(), view.id) {
                    (SCHEMA_ID_HEADER, Some(id)) => format!("{}:{id}", h.key),
                    _ => format!("{}:{}", h.key, show(&h.value)),
                })
                .collect();
            let value = match &view.decoded {
                Some(Ok(v)) => v.to_string(),
                Some(Err(e)) => format!("{} (not decoded: {e})", show(&r.value)),
                None => show(&r.value),
            };
            let schema = view.id.map_or(String::new(), |id| format!(" schema_id={id}"));
            format!(
                "{partition}:{} key={}{schema} {value}{}",
                r.offset,
                show(&r.key),
                if headers.is_empty() { String::new() } else { format!(" [{}]", headers.join(",")) }
            )
        }
        Format::Json => {
            let mut m = serde_json::Map::new();
            m.insert("topic".into(), topic.into());
            m.insert("partition".into(), partition.into());
            m.insert("offset".into(), r.offset.into());
            m.insert("timestamp".into(), r.timestamp.into());
            bytes_field(&mut m, "key", &r.key);
            match &view.decoded {
                Some(Ok(v)) => {
                    m.insert("value".into(), v.clone());
                }
                Some(Err(e)) => {
                    bytes_field(&mut m, "value", &r.value);
                    m.insert("decode_error".into(), e.as_str().into());
                }
                None => bytes_field(&mut m, "value", &r.value),
            }
            m.insert("schema_id".into(), view.id.map_or(serde_json::Value::Null, Into::into));
            let mut h = serde_json::Map::new();
            for header in &r.headers {
                match (header.key.as_str(), view.id) {
                    // The id header's 4 bytes, shown as the number they hold.
                    (SCHEMA_ID_HEADER, Some(id)) => {
                        h.insert(header.key.clone(), id.to_string().into());
                    }
                    _ => bytes_field(&mut h, &header.key, &header.value),
                }
            }
            m.insert("headers".into(), h.into());
            serde_json::Value::Object(m).to_string()
        }
    }
}
