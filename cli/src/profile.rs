//! Where the client commands' connection settings come from, highest first: a flag, an
//! environment variable (`QWIRE_SERVER`, `QWIRE_CERTS`, `QWIRE_CLIENT`,
//! `QWIRE_CONNECT_TIMEOUT_MS`), a profile of the config file, the built-in default.
//!
//! The config file is `$QWIRE_CONFIG`, else `$XDG_CONFIG_HOME/qwire/config.toml`, else
//! `~/.config/qwire/config.toml`:
//!
//! ```toml
//! default_profile = "dev"          # used when neither --profile nor QWIRE_PROFILE names one
//!
//! [profiles.dev]
//! server = "127.0.0.1:7878"        # or a list: ["10.0.0.1:7878", "10.0.0.2:7878"]
//! certs = "certs"                  # relative paths are relative to this file's directory
//! client = "alice"
//! connect-timeout-ms = 5000
//! ```
//!
//! A profile works by becoming the default of those flags before the command line is
//! parsed, so clap's own order (flag > environment > default) gives the precedence and
//! `--help` shows the values in force. A setting added later (e.g. SASL credentials) is
//! one line in [`SETTINGS`].

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, Command};

use crate::clients::{ConnArgs, EXIT_INVALID};
use crate::Failure;

/// A connection setting: the long flag name (also its key in a profile) and its
/// environment variable.
pub(crate) struct Setting {
    pub(crate) key: &'static str,
    pub(crate) env: &'static str,
    /// Whether a profile may give a list (joined as several values).
    pub(crate) list: bool,
}

/// The settings that profiles and environment variables may give.
pub(crate) const SETTINGS: &[Setting] = &[
    Setting { key: "server", env: "QWIRE_SERVER", list: true },
    Setting { key: "certs", env: "QWIRE_CERTS", list: false },
    Setting { key: "client", env: "QWIRE_CLIENT", list: false },
    Setting { key: "connect-timeout-ms", env: "QWIRE_CONNECT_TIMEOUT_MS", list: false },
    // SASL (the password itself never: it comes from stdin or the variable named here).
    Setting { key: "sasl-mechanism", env: "QWIRE_SASL_MECHANISM", list: false },
    Setting { key: "username", env: "QWIRE_USERNAME", list: false },
    Setting { key: "password-env", env: "QWIRE_PASSWORD_ENV", list: false },
    Setting { key: "token-file", env: "QWIRE_TOKEN_FILE", list: false },
    Setting { key: "ca", env: "QWIRE_CA", list: false },
];

/// Top-level commands whose flags of those names are not client connection settings
/// (`broker --certs` is the broker's own certificate directory).
const NOT_CLIENT: &[&str] = &["broker", "certs", "completions"];

/// Environment variable naming the profile when `--profile` is absent.
pub(crate) const PROFILE_ENV: &str = "QWIRE_PROFILE";
/// Environment variable overriding the config file's location.
pub(crate) const CONFIG_ENV: &str = "QWIRE_CONFIG";

/// The config file's location (it need not exist).
pub(crate) fn config_path() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    var(CONFIG_ENV)
        .or_else(|| var("XDG_CONFIG_HOME").map(|d| d.join("qwire").join("config.toml")))
        .or_else(|| var("HOME").map(|h| h.join(".config").join("qwire").join("config.toml")))
}

/// A profile read from the config file.
#[derive(Debug, Clone)]
pub(crate) struct Profile {
    pub(crate) name: String,
    pub(crate) file: PathBuf,
    /// Setting key → value(s), paths already resolved.
    pub(crate) values: BTreeMap<&'static str, Vec<String>>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    default_profile: Option<String>,
    #[serde(default)]
    profiles: BTreeMap<String, toml::Table>,
}

fn invalid(msg: String) -> Failure {
    Failure::new(EXIT_INVALID, msg)
}

/// The profile to use: `--profile` (from `argv`), else `QWIRE_PROFILE`, else the file's
/// `default_profile`, else none.
pub(crate) fn load(argv: &[OsString]) -> Result<Option<Profile>, Failure> {
    let asked = profile_flag(argv).or_else(|| std::env::var(PROFILE_ENV).ok().filter(|s| !s.is_empty()));
    let Some(file) = config_path() else {
        return match asked {
            Some(name) => {
                Err(invalid(format!("profile '{name}': no config file (set HOME, XDG_CONFIG_HOME or {CONFIG_ENV})")))
            }
            None => Ok(None),
        };
    };
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return match asked {
                Some(name) => Err(invalid(format!(
                    "profile '{name}': the config file {} does not exist (`qwire config path` shows where it is looked for)",
                    file.display()
                ))),
                None => Ok(None),
            };
        }
        Err(e) => return Err(invalid(format!("{}: {e}", file.display()))),
    };
    let cfg: ConfigFile = toml::from_str(&text).map_err(|e| invalid(format!("{}: {e}", file.display())))?;
    let Some(name) = asked.or(cfg.default_profile.clone()) else { return Ok(None) };
    let Some(table) = cfg.profiles.get(&name) else {
        let known: Vec<&str> = cfg.profiles.keys().map(String::as_str).collect();
        return Err(invalid(format!("{}: no profile '{name}' (profiles: {})", file.display(), known.join(", "))));
    };
    let base = file.parent().unwrap_or(Path::new("."));
    let mut values = BTreeMap::new();
    for (key, value) in table {
        let Some(s) = SETTINGS.iter().find(|s| s.key == key) else {
            let known: Vec<&str> = SETTINGS.iter().map(|s| s.key).collect();
            return Err(invalid(format!(
                "{}: profile '{name}': unknown setting '{key}' (known: {})",
                file.display(),
                known.join(", ")
            )));
        };
        let bad = || invalid(format!("{}: profile '{name}': '{key}' must be {}", file.display(), kind(s)));
        let scalar = |v: &toml::Value| match v {
            toml::Value::String(x) => Some(x.clone()),
            toml::Value::Integer(i) => Some(i.to_string()),
            _ => None,
        };
        let mut vals: Vec<String> = match value {
            toml::Value::Array(items) if s.list => items.iter().map(scalar).collect::<Option<_>>().ok_or_else(bad)?,
            v => vec![scalar(v).ok_or_else(bad)?],
        };
        if vals.is_empty() {
            return Err(bad());
        }
        if s.key == "certs" {
            vals = vals.into_iter().map(|p| base.join(p).to_string_lossy().into_owned()).collect();
        }
        values.insert(s.key, vals);
    }
    Ok(Some(Profile { name, file, values }))
}

fn kind(s: &Setting) -> &'static str {
    if s.list {
        "a string or a list of strings"
    } else {
        "a string or an integer"
    }
}

/// `--profile NAME` or `--profile=NAME` before any `--`.
fn profile_flag(argv: &[OsString]) -> Option<String> {
    let mut it = argv.iter().skip(1).map(|a| a.to_string_lossy());
    while let Some(a) = it.next() {
        if a == "--" {
            break;
        }
        if a == "--profile" {
            return it.next().map(|s| s.into_owned());
        }
        if let Some(v) = a.strip_prefix("--profile=") {
            return Some(v.to_owned());
        }
    }
    None
}

/// The command with every client command's connection flags reading their environment
/// variable and defaulting to the profile's values.
pub(crate) fn apply(cmd: Command, profile: Option<&Profile>) -> Command {
    apply_at(cmd, profile, true)
}

fn apply_at(mut cmd: Command, profile: Option<&Profile>, top: bool) -> Command {
    let found: Vec<(String, &'static Setting)> = cmd
        .get_arguments()
        .filter_map(|a| {
            let long = a.get_long()?;
            SETTINGS.iter().find(|s| s.key == long).map(|s| (a.get_id().to_string(), s))
        })
        .collect();
    for (id, s) in found {
        cmd = cmd.mut_arg(id, |a| {
            let a = a.env(s.env);
            match profile.and_then(|p| p.values.get(s.key)) {
                Some(v) if v.len() == 1 => a.default_value(v[0].clone()),
                Some(v) => a.default_values(v.clone()),
                None => a,
            }
        });
    }
    let subs: Vec<String> = cmd
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .filter(|n| !(top && NOT_CLIENT.contains(&n.as_str())))
        .collect();
    for name in subs {
        cmd = cmd.mut_subcommand(name, |c| apply_at(c, profile, false));
    }
    cmd
}

/// `qwire config` arguments.
#[derive(clap::Args)]
pub(crate) struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(clap::Subcommand)]
enum ConfigCommand {
    /// Print the config file's path (profiles live there).
    Path,
    /// Show the connection settings in force and where each comes from.
    #[command(after_help = "Example:\n  QWIRE_CLIENT=bob qwire config show --profile dev")]
    Show {
        #[command(flatten)]
        conn: ConnArgs,
    },
}

/// Runs `qwire config`; `matches` are the `show` subcommand's (for the value sources).
pub(crate) fn run(args: ConfigArgs, matches: Option<&ArgMatches>, profile: Option<&Profile>) -> Result<(), Failure> {
    match args.command {
        ConfigCommand::Path => {
            let p = config_path()
                .ok_or_else(|| invalid(format!("no config location: set HOME, XDG_CONFIG_HOME or {CONFIG_ENV}")))?;
            let state = if p.exists() { "" } else { " (does not exist)" };
            println!("{}{state}", p.display());
            Ok(())
        }
        ConfigCommand::Show { conn } => {
            if let Some(p) = profile {
                println!("profile = {} ({})", p.name, p.file.display());
            }
            let shown = [
                ("server", conn.servers.join(",")),
                ("certs", conn.certs.display().to_string()),
                ("client", conn.client.clone()),
                ("connect-timeout-ms", conn.connect_timeout_ms.to_string()),
            ];
            for (key, value) in shown {
                println!("{key} = {value} ({})", source(key, matches, profile));
            }
            Ok(())
        }
    }
}

/// Where a setting's value came from.
fn source(key: &str, matches: Option<&ArgMatches>, profile: Option<&Profile>) -> String {
    let s = SETTINGS.iter().find(|s| s.key == key).expect("known setting");
    let id = match key {
        "server" => "servers",
        "connect-timeout-ms" => "connect_timeout_ms",
        k => k,
    };
    match matches.and_then(|m| m.value_source(id)) {
        Some(ValueSource::CommandLine) => "flag".into(),
        Some(ValueSource::EnvVariable) => format!("environment {}", s.env),
        _ => match profile.filter(|p| p.values.contains_key(key)) {
            Some(p) => format!("profile {}", p.name),
            None => "default".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_flag_is_found_before_the_end_of_options() {
        let argv = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(profile_flag(&argv(&["qwire", "topics", "list", "--profile", "dev"])), Some("dev".into()));
        assert_eq!(profile_flag(&argv(&["qwire", "--profile=prod", "consume"])), Some("prod".into()));
        assert_eq!(profile_flag(&argv(&["qwire", "produce", "--", "--profile", "x"])), None);
        assert_eq!(profile_flag(&argv(&["qwire", "produce"])), None);
    }
}
