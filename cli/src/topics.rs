//! `qwire topics`: create, alter (partitions, schema validation), list and describe topics.

use qwire::protocol::ErrorCode;
use qwire::schema::SchemaPolicy;

use crate::clients::{connect, transport_failure, ConnArgs, Out, EXIT_UNKNOWN_TOPIC};
use crate::cluster::OutputFormat;
use crate::Failure;

/// `qwire topics` arguments.
#[derive(clap::Args)]
pub(crate) struct TopicsArgs {
    #[command(subcommand)]
    command: TopicsCommand,
}

/// `qwire topics` subcommands.
#[derive(clap::Subcommand)]
pub(crate) enum TopicsCommand {
    /// Create a topic (needs the admin permission on it).
    #[command(
        after_help = "Example:\n  qwire topics create orders --partitions 3 -s 127.0.0.1:7878 --certs certs --client alice"
    )]
    Create {
        #[command(flatten)]
        conn: ConnArgs,
        /// Topic name: 1-249 characters of [A-Za-z0-9._-].
        topic: String,
        /// Partition count.
        #[arg(short, long, default_value_t = 1)]
        partitions: u32,
        /// Succeed when the topic already exists (whatever its partition count).
        #[arg(long)]
        if_not_exists: bool,
        /// Replicas per partition (cluster mode; a single broker takes only 1).
        #[arg(long)]
        replication_factor: Option<u16>,
        /// In-sync replicas an acks=all produce needs (1 to the replication factor).
        #[arg(long)]
        min_insync_replicas: Option<u16>,
        #[command(flatten)]
        schema: SchemaPolicyArgs,
    },
    /// Change a topic: add partitions (a topic never loses partitions; producers pick them
    /// up at their next metadata refresh) and/or set its schema validation policy (needs
    /// admin on the topic).
    #[command(
        after_help = "Examples:\n  qwire topics alter orders --partitions 6 -s 127.0.0.1:7878 --certs certs --client alice\n  qwire topics alter orders --schema-validation enforce -s 127.0.0.1:7878 --certs certs --client alice"
    )]
    Alter {
        #[command(flatten)]
        conn: ConnArgs,
        /// Topic name.
        topic: String,
        /// The new partition count (only grows).
        #[arg(short, long)]
        partitions: Option<u32>,
        #[command(flatten)]
        schema: SchemaPolicyArgs,
    },
    /// List the topics this principal may see, one per line with its partition count.
    #[command(after_help = "Example:\n  qwire topics list -s 127.0.0.1:7878 --certs certs --client alice")]
    List {
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Per partition: leader, leader epoch, replicas, in-sync replicas; in text also the
    /// log start offset, end offset (high watermark) and size on disk known to the broker asked.
    #[command(
        after_help = "Example:\n  qwire topics describe orders --format json -s 127.0.0.1:7878 --certs certs --client alice"
    )]
    Describe {
        #[command(flatten)]
        conn: ConnArgs,
        /// Topic name.
        topic: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
}

/// A topic's schema validation policy flags.
#[derive(clap::Args)]
pub(crate) struct SchemaPolicyArgs {
    /// Schema validation: none (store anything), warn (store, but log and count records
    /// without a schema id registered under `{topic}-value`), enforce (refuse them).
    #[arg(long, value_name = "none|warn|enforce")]
    schema_validation: Option<SchemaPolicy>,
    /// Under enforce, the broker also validates each value against its schema (costs CPU
    /// on the broker; off by default).
    #[arg(long, requires = "schema_validation")]
    validate_payload: bool,
}

impl SchemaPolicyArgs {
    /// Applies the policy when one was given.
    async fn apply(&self, client: &mut qwire::client::Client, topic: &str, out: &mut Out) -> Result<(), Failure> {
        let Some(policy) = self.schema_validation else { return Ok(()) };
        let (p, v) =
            client.set_topic_schema_policy(topic, policy, self.validate_payload).await.map_err(transport_failure)?;
        let payload = if v { " (with payload validation)" } else { "" };
        out.line(&format!("topic '{topic}' schema validation: {p}{payload}"))?;
        Ok(())
    }
}

/// Runs a `topics` subcommand.
pub(crate) async fn topics(args: TopicsArgs) -> Result<(), Failure> {
    let conn = match &args.command {
        TopicsCommand::Create { conn, .. }
        | TopicsCommand::Alter { conn, .. }
        | TopicsCommand::List { conn }
        | TopicsCommand::Describe { conn, .. } => conn,
    };
    let mut client = connect(conn).await?;
    let r = run(&mut client, args.command).await;
    client.close();
    r
}

/// Runs one subcommand on a connected client.
async fn run(client: &mut qwire::client::Client, command: TopicsCommand) -> Result<(), Failure> {
    let mut out = Out::new();
    match command {
        TopicsCommand::Alter { topic, partitions, schema, .. } => {
            if partitions.is_none() && schema.schema_validation.is_none() {
                return Err(Failure::new(
                    crate::clients::EXIT_INVALID,
                    "nothing to change: give --partitions and/or --schema-validation",
                ));
            }
            if let Some(partitions) = partitions {
                let n = client.alter_partitions(&topic, partitions).await.map_err(transport_failure)?;
                out.line(&format!("topic '{topic}' has {n} partitions"))?;
            }
            schema.apply(client, &topic, &mut out).await?;
        }
        TopicsCommand::Create {
            topic,
            partitions,
            if_not_exists,
            replication_factor,
            min_insync_replicas,
            schema,
            ..
        } => {
            let created = if replication_factor.is_some() || min_insync_replicas.is_some() {
                let rf = replication_factor.unwrap_or(1);
                let min = min_insync_replicas.unwrap_or(1);
                client.create_replicated_topic(&topic, partitions, rf, min).await.map(|c| {
                    format!(
                        "created topic '{topic}' with {} partitions, replication factor {}, min in-sync replicas {}",
                        c.partitions, c.replication_factor, c.min_insync_replicas
                    )
                })
            } else {
                client
                    .create_topic(&topic, partitions)
                    .await
                    .map(|n| format!("created topic '{topic}' with {n} partitions"))
            };
            match created {
                Ok(line) => {
                    out.line(&line)?;
                }
                Err(e) if if_not_exists && e.code() == Some(ErrorCode::TopicAlreadyExists) => {
                    out.line(&format!("topic '{topic}' already exists"))?;
                }
                Err(e) => return Err(transport_failure(e)),
            }
            schema.apply(client, &topic, &mut out).await?;
        }
        TopicsCommand::List { .. } => {
            let mut topics = client.list_topics().await.map_err(transport_failure)?;
            topics.sort_by(|a, b| a.name.cmp(&b.name));
            for t in topics {
                out.line(&format!("{} partitions={}", t.name, t.partitions.len()))?;
            }
        }
        TopicsCommand::Describe { topic, format: OutputFormat::Json, .. } => {
            let replicas = client.describe_topics(&[topic.as_str()]).await.map_err(transport_failure)?;
            let t = replicas.into_iter().find(|t| t.name == topic && t.error == ErrorCode::None).ok_or_else(|| {
                Failure::new(
                    EXIT_UNKNOWN_TOPIC,
                    format!(
                        "topic '{topic}' not found: it does not exist, or principal '{}' has no permission on it",
                        client.principal()
                    ),
                )
            })?;
            let partitions: Vec<serde_json::Value> = t
                .partitions
                .iter()
                .map(|p| {
                    let leader = if p.leader < 0 { serde_json::Value::Null } else { serde_json::json!(p.leader) };
                    serde_json::json!({
                        "partition": p.partition,
                        "leader": leader,
                        "leader_epoch": p.leader_epoch,
                        "replicas": p.replicas,
                        "isr": p.isr,
                    })
                })
                .collect();
            let doc = serde_json::json!({
                "topic": t.name,
                "replication_factor": t.replication_factor,
                "min_insync_replicas": t.min_insync_replicas,
                "partitions": partitions,
            });
            out.line(&doc.to_string())?;
        }
        TopicsCommand::Describe { topic, .. } => {
            let Some(t) = client.find_topic(&topic).await.map_err(transport_failure)? else {
                return Err(Failure::new(
                    EXIT_UNKNOWN_TOPIC,
                    format!(
                        "topic '{topic}' not found: it does not exist, or principal '{}' has no permission on it",
                        client.principal()
                    ),
                ));
            };
            let rows: Vec<[String; 5]> = t
                .partitions
                .iter()
                .map(|p| {
                    [
                        p.partition.to_string(),
                        p.leader.to_string(),
                        p.log_start_offset.to_string(),
                        p.end_offset.to_string(),
                        p.size_bytes.to_string(),
                    ]
                })
                .collect();
            let head = ["partition", "leader", "log_start", "end_offset", "size_bytes"];
            let width: Vec<usize> =
                (0..5).map(|c| rows.iter().map(|r| r[c].len()).chain([head[c].len()]).max().unwrap_or(0)).collect();
            let fmt = |cells: [&str; 5]| {
                cells.iter().zip(&width).map(|(c, w)| format!("{c:>w$}")).collect::<Vec<_>>().join("  ")
            };
            out.line(&format!("topic '{}': {} partitions", t.name, t.partitions.len()))?;
            out.line(&fmt(head))?;
            for r in &rows {
                out.line(&fmt([&r[0], &r[1], &r[2], &r[3], &r[4]]))?;
            }
        }
    }
    out.flush()?;
    Ok(())
}
