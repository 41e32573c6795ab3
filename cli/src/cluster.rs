//! Cluster mode on the command line: the `qwire broker` flags that join a cluster, and
//! `qwire cluster describe`.

use std::time::Duration;

use qwire::broker::BrokerConfig;
use qwire::cluster::config::{ClusterConfig, MetadataUrl};

use crate::clients::{connect, transport_failure, ConnArgs, Out, EXIT_INVALID};
use crate::Failure;

/// `qwire broker` flags for cluster mode (CLUSTER.md).
#[derive(clap::Args, Debug, Default)]
pub(crate) struct BrokerClusterArgs {
    /// This broker's id, unique in the cluster (reported in metadata).
    #[arg(long)]
    broker_id: Option<u32>,
    /// Join a cluster whose metadata is in etcd: etcd://HOST:PORT[,HOST:PORT]/PREFIX.
    /// Needs a build with `--features cluster`.
    #[arg(long, value_name = "URL")]
    metadata: Option<String>,
    /// HOST:PORT clients and other brokers use to reach this broker [default: the listen address].
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Option<String>,
    /// Session lease TTL in ms: a dead broker's partitions fail over after about this long.
    #[arg(long, default_value_t = 6000)]
    session_ttl_ms: u64,
    /// A follower behind for longer than this (ms) leaves the in-sync replicas.
    #[arg(long, default_value_t = 10_000)]
    replica_lag_max_ms: u64,
    /// How long a leader holds a follower's fetch when it has nothing new (ms).
    #[arg(long, default_value_t = 500)]
    replica_fetch_wait_ms: u64,
    /// Replication factor of topics created without one (auto-created, plain CreateTopic).
    #[arg(long, default_value_t = 1)]
    default_replication_factor: u16,
    /// Min in-sync replicas of topics created without one.
    #[arg(long, default_value_t = 1)]
    default_min_insync_replicas: u16,
    /// Elect an out-of-sync replica when no in-sync one is alive (acknowledged records may
    /// be lost). Off by default.
    #[arg(long)]
    unclean_leader_election: bool,
    /// Name other brokers' certificates must carry (the peer TLS server name).
    #[arg(long, default_value = "localhost")]
    peer_server_name: String,
}

impl BrokerClusterArgs {
    /// Applies the flags to a broker configuration.
    pub(crate) fn apply(self, cfg: &mut BrokerConfig) -> Result<(), Failure> {
        if let Some(id) = self.broker_id {
            cfg.broker_id = id;
        }
        let Some(url) = self.metadata else {
            if self.advertise.is_some() {
                return Err(Failure::new(EXIT_INVALID, "--advertise is for cluster mode: give --metadata too"));
            }
            return Ok(());
        };
        let metadata: MetadataUrl = url.parse().map_err(|e: String| Failure::new(EXIT_INVALID, e))?;
        let id = self.broker_id.ok_or_else(|| Failure::new(EXIT_INVALID, "--metadata needs --broker-id N"))?;
        let c = ClusterConfig {
            advertise: self.advertise,
            session_ttl: Duration::from_millis(self.session_ttl_ms),
            replica_lag_max: Duration::from_millis(self.replica_lag_max_ms),
            replica_fetch_wait: Duration::from_millis(self.replica_fetch_wait_ms),
            default_replication_factor: self.default_replication_factor,
            default_min_insync_replicas: self.default_min_insync_replicas,
            unclean_leader_election: self.unclean_leader_election,
            peer_server_name: self.peer_server_name,
            ..ClusterConfig::new(id, metadata)
        };
        c.validate().map_err(|e| Failure::new(EXIT_INVALID, e))?;
        if c.unclean_leader_election {
            eprintln!("warning: unclean leader election is on: acknowledged records can be lost when an out-of-sync replica is elected");
        }
        cfg.cluster = Some(c);
        Ok(())
    }
}

/// `qwire cluster` arguments.
#[derive(clap::Args)]
pub(crate) struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCommand,
}

/// `qwire cluster` subcommands.
#[derive(clap::Subcommand)]
pub(crate) enum ClusterCommand {
    /// The controller and every broker (registered, or named as a replica but not registered).
    #[command(
        after_help = "Example:\n  qwire cluster describe --format json -s 127.0.0.1:7878 --certs certs --client alice"
    )]
    Describe {
        #[command(flatten)]
        conn: ConnArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
}

/// Output format of the describe commands.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum OutputFormat {
    /// A table.
    Text,
    /// One JSON document.
    Json,
}

/// Runs a `cluster` subcommand.
pub(crate) async fn cluster(args: ClusterArgs) -> Result<(), Failure> {
    let ClusterCommand::Describe { conn, format } = args.command;
    let mut client = connect(&conn).await?;
    let d = client.describe_cluster().await.map_err(transport_failure);
    client.close();
    let d = d?;
    let mut out = Out::new();
    match format {
        OutputFormat::Json => {
            let brokers: Vec<serde_json::Value> = d
                .brokers
                .iter()
                .map(|b| {
                    let address = if b.alive {
                        serde_json::json!(format!("{}:{}", b.host, b.port))
                    } else {
                        serde_json::Value::Null
                    };
                    serde_json::json!({"id": b.id, "address": address, "alive": b.alive})
                })
                .collect();
            let controller = if d.controller < 0 { serde_json::Value::Null } else { serde_json::json!(d.controller) };
            out.line(&serde_json::json!({"controller": controller, "brokers": brokers}).to_string())?;
        }
        OutputFormat::Text => {
            let c = if d.controller < 0 { "none".to_string() } else { d.controller.to_string() };
            out.line(&format!("controller: {c}"))?;
            for b in &d.brokers {
                let addr = if b.alive { format!("{}:{}", b.host, b.port) } else { "-".into() };
                out.line(&format!("broker {} {} {}", b.id, addr, if b.alive { "alive" } else { "down" }))?;
            }
        }
    }
    out.flush()?;
    Ok(())
}
