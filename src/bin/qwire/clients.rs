//! Client commands: `consume` (and, with the CLI issue, `produce` and `topics`).

use std::net::SocketAddr;
use std::path::PathBuf;

use base64::Engine;
use clap::ValueEnum;
use qwire::client::{Client, ConnectConfig};
use qwire::protocol::StoredRecord;

use crate::Failure;

#[derive(clap::Args)]
pub(crate) struct ConnArgs {
    /// Broker address (host:port).
    #[arg(short = 's', long = "server", default_value = "127.0.0.1:7878")]
    pub(crate) server: String,
    /// Directory with ca.crt and the client's NAME.crt / NAME.key.
    #[arg(long, default_value = "certs")]
    pub(crate) certs: PathBuf,
    /// Client certificate name.
    #[arg(long, default_value = "client")]
    pub(crate) client: String,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    Text,
    Json,
}

/// `qwire consume` arguments.
#[derive(clap::Args)]
pub(crate) struct ConsumeArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Topic.
    #[arg(short, long)]
    topic: String,
    /// Partition.
    #[arg(short, long, default_value_t = 0)]
    partition: u32,
    /// First offset to read.
    #[arg(long, default_value_t = 0)]
    from: i64,
    /// Stop after this many records (default: read to the current end).
    #[arg(long)]
    count: Option<usize>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// Reads records and prints them.
pub(crate) async fn consume(args: ConsumeArgs) -> Result<(), Failure> {
    let ConsumeArgs { conn, topic, partition, from, count, format } = args;
    let mut client = connect(&conn).await?;
    let mut offset = from;
    let mut printed = 0usize;
    loop {
        let f = client.fetch_records(&topic, partition, offset, 1 << 20).await?;
        for r in &f.records {
            if count.is_some_and(|c| printed >= c) {
                return Ok(());
            }
            println!("{}", render(&topic, partition, r, format));
            printed += 1;
        }
        if f.next_offset >= f.high_watermark || f.next_offset == offset || count.is_some_and(|c| printed >= c) {
            client.close();
            return Ok(());
        }
        offset = f.next_offset;
    }
}

pub(crate) async fn resolve(server: &str) -> Result<SocketAddr, Failure> {
    let mut addrs = tokio::net::lookup_host(server)
        .await
        .map_err(|e| Failure::new(3, format!("cannot resolve '{server}': {e}")))?;
    addrs.next().ok_or_else(|| Failure::new(3, format!("'{server}' resolves to no address")))
}

pub(crate) async fn connect(conn: &ConnArgs) -> Result<Client, Failure> {
    let addr = resolve(&conn.server).await?;
    let cfg =
        ConnectConfig::from_certs_dir(addr, &conn.certs, &conn.client).map_err(|e| Failure::new(8, e.to_string()))?;
    Ok(Client::connect(&cfg).await?)
}

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

pub(crate) fn render(topic: &str, partition: u32, r: &StoredRecord, format: Format) -> String {
    match format {
        Format::Text => {
            let show = |b: &Option<bytes::Bytes>| {
                b.as_ref().map_or("null".to_string(), |b| String::from_utf8_lossy(b).into_owned())
            };
            let headers: Vec<String> = r.headers.iter().map(|h| format!("{}:{}", h.key, show(&h.value))).collect();
            format!(
                "{partition}:{} key={} {}{}",
                r.offset,
                show(&r.key),
                show(&r.value),
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
            bytes_field(&mut m, "value", &r.value);
            let mut h = serde_json::Map::new();
            for header in &r.headers {
                bytes_field(&mut h, &header.key, &header.value);
            }
            m.insert("headers".into(), h.into());
            serde_json::Value::Object(m).to_string()
        }
    }
}
