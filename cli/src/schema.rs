//! `qwire schema`: the broker's schema registry (register, get, versions, list, check,
//! delete, config), over the registry's protocol frames.

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::ValueEnum;
use qwire::client::{Client, SchemaVersionInfo};
use qwire::protocol::ErrorCode;
use qwire::schema::{Compatibility, SchemaType};
use qwire::transport::TransportError;
use serde_json::json;

use crate::clients::{connect, transport_failure, ConnArgs, Out, EXIT_INVALID, EXIT_OTHER};
use crate::Failure;

/// Output format of the `schema` commands.
#[derive(Clone, Copy, Default, ValueEnum)]
pub(crate) enum OutFormat {
    /// Plain text for people.
    #[default]
    Text,
    /// One JSON document (Confluent's REST API shapes where one exists).
    Json,
}

/// `qwire schema` arguments.
#[derive(clap::Args)]
pub(crate) struct SchemaArgs {
    #[command(subcommand)]
    command: SchemaCommand,
}

/// `qwire schema` subcommands.
#[derive(clap::Subcommand)]
pub(crate) enum SchemaCommand {
    /// Register a schema under a subject (or find it there); prints its global id.
    #[command(
        after_help = "Example:\n  qwire schema register orders-value --type json_schema --file order.json --client alice"
    )]
    Register {
        #[command(flatten)]
        common: Common,
        /// Subject (by convention `{topic}-value`).
        subject: String,
        /// Schema type: json_schema, avro or protobuf.
        #[arg(long = "type")]
        schema_type: SchemaType,
        /// Schema file (`-` for standard input).
        #[arg(long)]
        file: PathBuf,
    },
    /// Show a subject's version (the latest by default), or a schema by id.
    #[command(after_help = "Examples:\n  qwire schema get orders-value --version 2\n  qwire schema get --id 7")]
    Get {
        #[command(flatten)]
        common: Common,
        /// Subject (omit with --id).
        #[arg(required_unless_present = "id")]
        subject: Option<String>,
        /// Version number (default: the latest).
        #[arg(long, conflicts_with = "id")]
        version: Option<u32>,
        /// A schema by its global id instead.
        #[arg(long)]
        id: Option<u32>,
        /// Also soft-deleted versions.
        #[arg(long)]
        deleted: bool,
    },
    /// A subject's version numbers.
    Versions {
        #[command(flatten)]
        common: Common,
        /// Subject.
        subject: String,
        /// Include soft-deleted versions.
        #[arg(long)]
        deleted: bool,
    },
    /// The subjects this principal may read.
    List {
        #[command(flatten)]
        common: Common,
        /// Include subjects whose versions are all soft-deleted.
        #[arg(long)]
        deleted: bool,
    },
    /// Check a schema against a subject under its compatibility level (against one version
    /// with --version). Exits 0 when compatible, 1 when not (the problems are printed).
    #[command(after_help = "Example:\n  qwire schema check orders-value --type json_schema --file order-v2.json")]
    Check {
        #[command(flatten)]
        common: Common,
        /// Subject.
        subject: String,
        /// Schema type: json_schema, avro or protobuf.
        #[arg(long = "type")]
        schema_type: SchemaType,
        /// Schema file (`-` for standard input).
        #[arg(long)]
        file: PathBuf,
        /// Check against this version only.
        #[arg(long)]
        version: Option<u32>,
    },
    /// Delete a subject (or one version): a soft delete, then --permanent to remove it.
    Delete {
        #[command(flatten)]
        common: Common,
        /// Subject.
        subject: String,
        /// One version only.
        #[arg(long)]
        version: Option<u32>,
        /// Remove for good (the subject or version must be soft-deleted first).
        #[arg(long)]
        permanent: bool,
    },
    /// Show or set a compatibility level: a subject's, or the global default without one.
    #[command(
        after_help = "Examples:\n  qwire schema config\n  qwire schema config orders-value --compatibility full_transitive"
    )]
    Config {
        #[command(flatten)]
        common: Common,
        /// Subject (omit for the global default).
        subject: Option<String>,
        /// Set this level: none, backward, backward_transitive, forward,
        /// forward_transitive, full, full_transitive.
        #[arg(long)]
        compatibility: Option<Compatibility>,
        /// Remove the subject's own level (it then follows the global default).
        #[arg(long, conflicts_with = "compatibility", requires = "subject")]
        remove: bool,
    },
}

/// Flags every `schema` subcommand takes.
#[derive(clap::Args)]
pub(crate) struct Common {
    #[command(flatten)]
    conn: ConnArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutFormat::Text)]
    format: OutFormat,
}

/// Reads a schema file (`-`: standard input).
pub(crate) fn read_schema(path: &Path) -> Result<String, Failure> {
    let mut text = String::new();
    let r = if path == Path::new("-") {
        std::io::stdin().read_to_string(&mut text).map(drop)
    } else {
        std::fs::read_to_string(path).map(|t| text = t)
    };
    r.map_err(|e| Failure::new(EXIT_INVALID, format!("{}: {e}", path.display())))?;
    Ok(text)
}

/// Registry errors: a bad schema or argument is invalid input; the rest as usual.
pub(crate) fn schema_failure(e: TransportError) -> Failure {
    match &e {
        TransportError::Broker {
            code:
                ErrorCode::InvalidSchema
                | ErrorCode::IncompatibleSchema
                | ErrorCode::SchemaInvalidArgument
                | ErrorCode::SchemaDeleteRefused,
            ..
        } => Failure::new(EXIT_INVALID, e.to_string()),
        _ => transport_failure(e),
    }
}

fn common(c: &SchemaCommand) -> &Common {
    match c {
        SchemaCommand::Register { common, .. }
        | SchemaCommand::Get { common, .. }
        | SchemaCommand::Versions { common, .. }
        | SchemaCommand::List { common, .. }
        | SchemaCommand::Check { common, .. }
        | SchemaCommand::Delete { common, .. }
        | SchemaCommand::Config { common, .. } => common,
    }
}

/// Runs a `schema` subcommand.
pub(crate) async fn schema(args: SchemaArgs) -> Result<(), Failure> {
    let mut client = connect(&common(&args.command).conn).await?;
    let format = common(&args.command).format;
    let r = run(&mut client, args.command, format).await;
    client.close();
    r
}

fn version_json(v: &SchemaVersionInfo) -> serde_json::Value {
    let mut j = json!({"subject": v.subject, "version": v.version, "id": v.id, "schemaType": v.schema_type, "schema": v.schema});
    if v.deleted {
        j["deleted"] = json!(true);
    }
    j
}

async fn run(client: &mut Client, command: SchemaCommand, format: OutFormat) -> Result<(), Failure> {
    let mut out = Out::new();
    let json = matches!(format, OutFormat::Json);
    match command {
        SchemaCommand::Register { subject, schema_type, file, .. } => {
            let text = read_schema(&file)?;
            let (id, version) = client.register_schema(&subject, schema_type, &text).await.map_err(schema_failure)?;
            out.line(&if json { json!({"id": id, "version": version}).to_string() } else { id.to_string() })?;
        }
        SchemaCommand::Get { subject, version, id: Some(id), .. } => {
            let _ = (subject, version);
            let (t, schema) = client.schema_by_id(id).await.map_err(schema_failure)?;
            if json {
                out.line(&json!({"id": id, "schemaType": t, "schema": schema}).to_string())?;
            } else {
                out.line(&format!("id={id} type={}", t.as_str().to_lowercase()))?;
                out.line(schema.trim_end())?;
            }
        }
        SchemaCommand::Get { subject, version, deleted, .. } => {
            let subject = subject.unwrap_or_default();
            let v = client.schema_version(&subject, version, deleted).await.map_err(schema_failure)?;
            if json {
                out.line(&version_json(&v).to_string())?;
            } else {
                let deleted = if v.deleted { " (deleted)" } else { "" };
                out.line(&format!(
                    "subject={} version={} id={} type={}{deleted}",
                    v.subject,
                    v.version,
                    v.id,
                    v.schema_type.as_str().to_lowercase()
                ))?;
                out.line(v.schema.trim_end())?;
            }
        }
        SchemaCommand::Versions { subject, deleted, .. } => {
            let versions = client.schema_versions(&subject, deleted).await.map_err(schema_failure)?;
            if json {
                out.line(&json!(versions).to_string())?;
            } else {
                for v in versions {
                    out.line(&v.to_string())?;
                }
            }
        }
        SchemaCommand::List { deleted, .. } => {
            let subjects = client.schema_subjects(deleted).await.map_err(schema_failure)?;
            if json {
                out.line(&json!(subjects).to_string())?;
            } else {
                for s in subjects {
                    out.line(&s)?;
                }
            }
        }
        SchemaCommand::Check { subject, schema_type, file, version, .. } => {
            let text = read_schema(&file)?;
            let (ok, messages) =
                client.check_schema(&subject, version, schema_type, &text).await.map_err(schema_failure)?;
            if json {
                out.line(&json!({"is_compatible": ok, "messages": messages}).to_string())?;
            } else {
                out.line(if ok { "compatible" } else { "incompatible" })?;
                for m in &messages {
                    out.line(&format!("  {m}"))?;
                }
            }
            if !ok {
                out.flush()?;
                return Err(Failure::new(EXIT_OTHER, format!("the schema is not compatible with subject '{subject}'")));
            }
        }
        SchemaCommand::Delete { subject, version, permanent, .. } => {
            let versions = client.delete_schema(&subject, version, permanent).await.map_err(schema_failure)?;
            if json {
                out.line(&json!(versions).to_string())?;
            } else {
                let how = if permanent { "permanently deleted" } else { "deleted" };
                let list = versions.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
                out.line(&format!("{how} {subject} version(s) {list}"))?;
            }
        }
        SchemaCommand::Config { subject, compatibility, remove, .. } => {
            let level = if remove {
                client.set_schema_compatibility(subject.as_deref(), None).await.map_err(schema_failure)?;
                client.schema_compatibility(None, false).await.map_err(schema_failure)?
            } else if let Some(level) = compatibility {
                client.set_schema_compatibility(subject.as_deref(), Some(level)).await.map_err(schema_failure)?;
                level
            } else {
                client.schema_compatibility(subject.as_deref(), true).await.map_err(schema_failure)?
            };
            out.line(&if json { json!({"compatibilityLevel": level}).to_string() } else { level.to_string() })?;
        }
    }
    out.flush()?;
    Ok(())
}
