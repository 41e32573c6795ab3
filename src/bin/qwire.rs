//! The `qwire` command: argument parsing and printing only; the work is in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use base64::Engine;
use clap::{Parser, Subcommand, ValueEnum};
use qwire::broker::{self, BrokerConfig, BrokerTls};
use qwire::client::{Client, ConnectConfig};
use qwire::protocol::{ErrorCode, StoredRecord};
use qwire::transport::TransportError;

/// qwire: a QUIC producer engine and broker with mutual TLS.
#[derive(Parser)]
#[command(name = "qwire", version, about, long_about = None, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const EXIT_CODES: &str = "Exit codes: 0 ok, 1 other error, 2 usage, 3 broker unreachable, 4 TLS handshake refused, \
5 not authorized (ACL), 6 unknown topic or partition, 7 record or frame too large, 8 invalid input or configuration";

#[derive(Subcommand)]
enum Command {
    /// Generate a development CA, a broker certificate and client certificates.
    #[command(after_help = "Example:\n  qwire certs --out certs --client alice --client bob")]
    Certs {
        /// Output directory; an existing ca.crt/ca.key there is reused.
        #[arg(long, default_value = "certs")]
        out: PathBuf,
        /// Client certificate to create (its name becomes the CN, the principal). Repeatable.
        #[arg(long = "client", default_values_t = vec!["client".to_string()])]
        clients: Vec<String>,
        /// Extra subject alternative names for the broker certificate. Repeatable.
        #[arg(long = "san")]
        sans: Vec<String>,
    },
    /// Run a broker.
    #[command(after_help = "Example:\n  qwire broker --listen 127.0.0.1:7878 --data-dir data --certs certs")]
    Broker {
        /// UDP address to listen on [default: 127.0.0.1:7878].
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Data directory [default: qwire-data].
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Directory with ca.crt, broker.crt, broker.key.
        #[arg(long, default_value = "certs")]
        certs: PathBuf,
        /// ACL file (TOML); without one every authenticated client may do everything.
        #[arg(long)]
        acl: Option<PathBuf>,
        /// Broker config file (TOML); flags override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Benchmark mode: skip the disk append (acks are not durable).
        #[arg(long)]
        sink: bool,
        /// Worker threads; 1 runs a single-threaded runtime (fastest for few connections).
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// Read records of a topic partition.
    #[command(
        after_help = "Example:\n  qwire consume -s 127.0.0.1:7878 --certs certs --client alice -t orders --format json"
    )]
    Consume {
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
    },
    /// Benchmark harness (arrives with the benchmark issue).
    Bench,
}

#[derive(clap::Args)]
struct ConnArgs {
    /// Broker address (host:port).
    #[arg(short = 's', long = "server", default_value = "127.0.0.1:7878")]
    server: String,
    /// Directory with ca.crt and the client's NAME.crt / NAME.key.
    #[arg(long, default_value = "certs")]
    certs: PathBuf,
    /// Client certificate name.
    #[arg(long, default_value = "client")]
    client: String,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

/// A failure with the exit code that classifies it.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure { code, message: message.into() }
    }
}

impl From<TransportError> for Failure {
    fn from(e: TransportError) -> Failure {
        let code = match &e {
            TransportError::Unreachable { .. } | TransportError::Connect { .. } => 3,
            TransportError::TlsRejected { .. } => 4,
            TransportError::Broker { code, .. } => match code {
                ErrorCode::AuthorizationFailed => 5,
                ErrorCode::UnknownTopicOrPartition => 6,
                ErrorCode::FrameTooLarge | ErrorCode::BatchTooLarge => 7,
                _ => 1,
            },
            _ => 1,
        };
        Failure::new(code, e.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,quinn=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn runtime(threads: usize) -> tokio::runtime::Runtime {
    let mut b = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    b.enable_all().build().expect("tokio runtime")
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Certs { out, clients, sans } => {
            let written = qwire::transport::certs::generate_dev_certs(&out, &clients, &sans)
                .map_err(|e| Failure::new(1, e.to_string()))?;
            for p in written {
                println!("wrote {}", p.display());
            }
            println!("These certificates are for development only.");
            Ok(())
        }
        Command::Broker { listen, data_dir, certs, acl, config, sink, threads } => {
            let mut cfg = match config {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .map_err(|e| Failure::new(8, format!("{}: {e}", path.display())))?;
                    BrokerConfig::from_toml(&text).map_err(|e| Failure::new(8, format!("{}: {e}", path.display())))?
                }
                None => BrokerConfig::default(),
            };
            if let Some(l) = listen {
                cfg.listen = l;
            }
            if let Some(d) = data_dir {
                cfg.data_dir = d;
            }
            if acl.is_some() {
                cfg.acl_file = acl;
            }
            cfg.sink |= sink;
            let tls = BrokerTls::load(&certs).map_err(|e| Failure::new(8, e.to_string()))?;
            runtime(threads).block_on(async move {
                let handle = broker::start(cfg, tls).await.map_err(|e| Failure::new(8, e.to_string()))?;
                println!("qwire broker listening on {}", handle.local_addr());
                let stop = handle.shutdown_sender();
                tokio::spawn(async move {
                    wait_for_signal().await;
                    eprintln!("shutting down");
                    let _ = stop.send(true);
                });
                handle.wait().await;
                Ok(())
            })
        }
        Command::Consume { conn, topic, partition, from, count, format } => runtime(1).block_on(async move {
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
        }),
        Command::Bench => {
            println!("qwire bench: not yet implemented (arrives with the producer engine and benchmark issues)");
            Ok(())
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn resolve(server: &str) -> Result<SocketAddr, Failure> {
    let mut addrs = tokio::net::lookup_host(server)
        .await
        .map_err(|e| Failure::new(3, format!("cannot resolve '{server}': {e}")))?;
    addrs.next().ok_or_else(|| Failure::new(3, format!("'{server}' resolves to no address")))
}

async fn connect(conn: &ConnArgs) -> Result<Client, Failure> {
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

fn render(topic: &str, partition: u32, r: &StoredRecord, format: Format) -> String {
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
