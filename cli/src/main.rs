//! The `qwire` command: argument parsing and printing only; the work is in the library.

use std::net::SocketAddr;
use std::path::PathBuf;

/// mimalloc for the whole binary (see Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod admin;
mod bench;
mod bench_cmd;
mod broker_auth;
mod clients;
mod cluster;
mod decode;
mod jwt;
mod logging;
mod produce;
mod profile;
mod progress;
mod report;
mod sasl_args;
mod schema;
mod topics;
mod users;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use qwire::auth::client::SaslError;
use qwire::broker::{self, BrokerConfig, BrokerTls};
use qwire::protocol::ErrorCode;
use qwire::transport::TransportError;

/// qwire: a QUIC producer engine and broker with mutual TLS.
#[derive(Parser)]
#[command(name = "qwire", version, about, long_about = None, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Connection profile from the config file (`qwire config path`); client commands take
    /// --server, --certs, --client from it unless given as flags or QWIRE_* variables.
    #[arg(long, global = true, env = profile::PROFILE_ENV, value_name = "NAME")]
    profile: Option<String>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = logging::LogFormat::Text, env = "QWIRE_LOG_FORMAT")]
    log_format: logging::LogFormat,
}

const EXIT_CODES: &str = "Exit codes: 0 ok, 1 other error, 2 usage, 3 broker unreachable, 4 TLS handshake refused, \
5 not authorized (ACL), 6 unknown topic or partition, 7 record or frame too large, 8 invalid input or configuration, \
9 SASL authentication refused. `produce` exits with the code of its first failed record.";

/// `qwire broker --help` on `--acl`: the ACL file format.
const ACL_HELP: &str = "ACL file (TOML); without one every authenticated client may do everything.

The file is a list of [[allow]] rules, read at start-up (changes need a restart):

  [[allow]]
  principal = \"alice\"              # a client certificate's principal (its CN), or \"*\"
  topics = [\"orders\", \"logs.*\"]    # exact names, \"*\", or prefixes ending in \"*\"
  subjects = [\"orders-value\"]      # schema registry subjects, same patterns (optional)
  permissions = [\"read\", \"write\"]  # any of read, write, admin

Rules only grant; whatever no rule grants is denied. read: Fetch. write: Produce,
auto-creating the topic, and (write on any topic) getting a producer id. admin:
CreateTopic, a topic's schema policy. Metadata lists a topic to a principal holding
any permission on it. On subjects (protocol frames and the REST API alike): read fetches
schemas and checks compatibility, write registers, admin sets compatibility levels and
deletes; the registry-wide level needs subjects = [\"*\"].
An empty file (no [[allow]] rule) denies everything. An unknown key or permission
is an error and the broker does not start.";

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
    #[command(after_help = "Examples:\n  qwire broker --listen 127.0.0.1:7878 --data-dir data --certs certs\n  \
        qwire broker --broker-id 1 --metadata etcd://127.0.0.1:2379/qwire --listen 127.0.0.1:7001 --data-dir d1 --certs certs")]
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
        #[arg(long, long_help = ACL_HELP)]
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
        #[command(flatten)]
        admin: admin::AdminArgs,
        #[command(flatten)]
        auth: broker_auth::BrokerAuthArgs,
        #[command(flatten)]
        cluster: cluster::BrokerClusterArgs,
    },
    /// Read records of a topic (one partition or all), optionally following new ones.
    #[command(
        after_help = "Example:\n  qwire consume -s 127.0.0.1:7878 --certs certs --client alice -t orders --format json"
    )]
    Consume(clients::ConsumeArgs),
    /// Produce records: a message (N times), a file, or one record per line of a file or stdin.
    #[command(after_help = "Examples:\n  \
        qwire produce -s 127.0.0.1:7878 --certs certs --client alice -t orders -m 'order {i}' -k 'customer-{i}' \
        -a source:cli,region:eu -c 10\n  \
        seq 1 1000 | qwire produce -s 127.0.0.1:7878 --certs certs --client alice -t numbers --lines - --quiet")]
    Produce(produce::ProduceArgs),
    /// The broker's schema registry: register, get, versions, list, check, delete, config.
    #[command(
        after_help = "Example:\n  qwire schema register orders-value --type json_schema --file order.json -s 127.0.0.1:7878 --certs certs --client alice"
    )]
    Schema(schema::SchemaArgs),
    /// Create, list and describe topics.
    #[command(after_help = "Example:\n  qwire topics describe orders -s 127.0.0.1:7878 --certs certs --client alice")]
    Topics(topics::TopicsArgs),
    /// Describe the cluster: controller and brokers.
    Cluster(cluster::ClusterArgs),
    /// Benchmark harness: produce a workload against an embedded or external broker.
    Bench(bench_cmd::BenchArgs),
    /// Where connection settings come from: the config file's path, the settings in force.
    Config(profile::ConfigArgs),
    /// Print shell completions (e.g. `qwire completions bash > ~/.local/share/bash-completion/completions/qwire`).
    Completions {
        /// Shell.
        shell: clap_complete::Shell,
    },
    /// Manage the SASL users file (salted SCRAM credentials; no passwords).
    #[command(after_help = "Example:\n  qwire users add alice --mechanism SCRAM-SHA-256 --file users.toml")]
    Users(users::UsersArgs),
    /// Development token issuer for OAUTHBEARER: a signing key, its JWKS, signed JWTs.
    #[command(after_help = "Example:\n  qwire jwt keygen --out jwt && qwire jwt token --subject alice > alice.jwt")]
    Jwt(jwt::JwtArgs),
}

/// A failure with the exit code that classifies it.
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(code: u8, message: impl Into<String>) -> Failure {
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
                c if c.is_authentication() => clients::EXIT_AUTHENTICATION,
                _ => 1,
            },
            TransportError::Sasl { source: SaslError::InvalidCredentials(_) | SaslError::Token(_), .. } => {
                clients::EXIT_INVALID
            }
            TransportError::Sasl { .. } => clients::EXIT_AUTHENTICATION,
            _ => 1,
        };
        Failure::new(code, e.to_string())
    }
}

fn main() -> ExitCode {
    // Connection settings: flag > QWIRE_* environment > profile > default (see `profile`).
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let profile = match profile::load(&argv) {
        Ok(p) => p,
        Err(f) => {
            eprintln!("error: {}", f.message);
            return ExitCode::from(f.code);
        }
    };
    let matches = profile::apply(Cli::command(), profile.as_ref()).get_matches_from(argv);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // The broker logs what it does; client commands and the benchmark print their own
    // output and only show warnings.
    let default_filter = if matches!(cli.command, Command::Broker { .. }) { "info,quinn=warn" } else { "warn" };
    logging::init(cli.log_format, default_filter);
    let show = matches.subcommand_matches("config").and_then(|m| m.subcommand_matches("show"));
    match run(cli, show, profile.as_ref()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

pub(crate) fn runtime(threads: usize) -> tokio::runtime::Runtime {
    let mut b = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    b.enable_all().build().expect("tokio runtime")
}

fn run(cli: Cli, show: Option<&clap::ArgMatches>, profile: Option<&profile::Profile>) -> Result<(), Failure> {
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
        Command::Broker { listen, data_dir, certs, acl, config, sink, threads, admin, auth, cluster } => {
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
            cluster.apply(&mut cfg)?;
            auth.apply(&mut cfg.auth);
            cfg.validate().map_err(|e| Failure::new(8, e))?;
            let tls = BrokerTls::load(&certs).map_err(|e| Failure::new(8, e.to_string()))?;
            runtime(threads).block_on(async move {
                let admin = admin::start(&admin, &tls).await?;
                let handle = broker::start(cfg, tls).await.map_err(|e| Failure::new(8, e.to_string()))?;
                if let Some(a) = &admin {
                    a.broker_started(&handle);
                    // The schema registry's Confluent REST API, at the root paths its
                    // clients expect (/subjects, /schemas/ids/{id}, /config, ...).
                    a.merge(handle.schema_router());
                }
                println!("qwire broker listening on {}", handle.local_addr());
                broker_auth::reload_on_sighup(handle.credentials());
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
        Command::Consume(args) => runtime(1).block_on(clients::consume(args)),
        Command::Produce(args) => runtime(1).block_on(produce::produce(args)),
        Command::Topics(args) => runtime(1).block_on(topics::topics(args)),
        Command::Cluster(args) => runtime(1).block_on(cluster::cluster(args)),
        Command::Schema(args) => runtime(1).block_on(schema::schema(args)),
        Command::Bench(args) => bench_cmd::run(args),
        Command::Config(args) => profile::run(args, show, profile),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "qwire", &mut std::io::stdout());
            Ok(())
        }
        Command::Users(args) => users::users(args),
        Command::Jwt(args) => jwt::jwt(args),
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
