//! `qwire users`: the credentials file of SASL PLAIN / SCRAM users (salted SCRAM data,
//! never a password), and how the CLI reads a password (never from a flag).

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};

use qwire::auth::scram::{ScramHash, DEFAULT_ITERATIONS, MAX_ITERATIONS, MIN_ITERATIONS};
use qwire::auth::server::credentials::{ScramCredential, UserStore};
use qwire::auth::{Mechanism, Secret};

use crate::clients::EXIT_INVALID;
use crate::Failure;

/// `qwire users` arguments.
#[derive(clap::Args)]
pub(crate) struct UsersArgs {
    #[command(subcommand)]
    command: UsersCommand,
}

/// A SCRAM mechanism a user's credential is made for.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub(crate) enum ScramMechanism {
    /// SCRAM-SHA-256 (RFC 7677).
    #[value(name = "SCRAM-SHA-256")]
    Sha256,
    /// SCRAM-SHA-512.
    #[value(name = "SCRAM-SHA-512")]
    Sha512,
}

impl ScramMechanism {
    fn hash(self) -> ScramHash {
        match self {
            ScramMechanism::Sha256 => ScramHash::Sha256,
            ScramMechanism::Sha512 => ScramHash::Sha512,
        }
    }
}

/// `qwire users` subcommands.
#[derive(clap::Subcommand)]
pub(crate) enum UsersCommand {
    /// Add a user, or change its password: reads the password from stdin (or the
    /// variable named by --password-env) and stores only salted SCRAM data. PLAIN logins
    /// are checked against the same data.
    #[command(after_help = "Examples:\n  \
        qwire users add alice --mechanism SCRAM-SHA-256 --file users.toml      (asks for the password)\n  \
        printf '%s\\n' \"$ALICE_PW\" | qwire users add alice --mechanism SCRAM-SHA-512 --file users.toml\n  \
        ALICE_PW=... qwire users add alice --mechanism SCRAM-SHA-256 --password-env ALICE_PW --file users.toml\n\
        A running broker reads the file again on SIGHUP.")]
    Add {
        /// User name: the principal the ACL sees.
        name: String,
        /// Mechanism(s) to store a credential for. Repeatable.
        #[arg(long = "mechanism", value_enum, default_values_t = vec![ScramMechanism::Sha256])]
        mechanisms: Vec<ScramMechanism>,
        /// The credentials file (created, mode 0600, if missing).
        #[arg(long)]
        file: PathBuf,
        /// Read the password from this environment variable instead of stdin.
        #[arg(long, value_name = "VAR")]
        password_env: Option<String>,
        /// PBKDF2 iterations (4096 to 1000000). PLAIN logins cost the broker this many.
        #[arg(long, default_value_t = DEFAULT_ITERATIONS)]
        iterations: u32,
    },
    /// Remove a user (all its credentials, or one mechanism's).
    #[command(after_help = "Example:\n  qwire users remove alice --file users.toml")]
    Remove {
        /// User name.
        name: String,
        /// Remove only this mechanism's credential.
        #[arg(long = "mechanism", value_enum)]
        mechanism: Option<ScramMechanism>,
        /// The credentials file.
        #[arg(long)]
        file: PathBuf,
    },
    /// List users with their mechanisms and iteration counts.
    #[command(after_help = "Example:\n  qwire users list --file users.toml")]
    List {
        /// The credentials file.
        #[arg(long)]
        file: PathBuf,
    },
}

fn invalid(message: impl Into<String>) -> Failure {
    Failure::new(EXIT_INVALID, message)
}

fn load(file: &Path, must_exist: bool) -> Result<UserStore, Failure> {
    let r = if must_exist { UserStore::load(file) } else { UserStore::load_or_empty(file) };
    r.map_err(invalid)
}

fn save(store: &UserStore, file: &Path) -> Result<(), Failure> {
    store.save(file).map_err(|e| Failure::new(1, format!("cannot write {}: {e}", file.display())))
}

/// Reads a password: from the environment variable `env` when given, else from stdin
/// (without echo when stdin is a terminal; otherwise its first line). Never from a flag,
/// which other users of the machine could read in the process list.
pub(crate) fn read_password(env: Option<&str>, prompt: &str) -> Result<Secret, Failure> {
    let password = match env {
        Some(var) => {
            std::env::var(var).map_err(|_| invalid(format!("environment variable {var} is not set (or not UTF-8)")))?
        }
        None if std::io::stdin().is_terminal() => {
            rpassword::prompt_password(prompt).map_err(|e| invalid(format!("cannot read the password: {e}")))?
        }
        None => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| invalid(format!("cannot read the password from stdin: {e}")))?;
            let trimmed = line.trim_end_matches(['\n', '\r']).len();
            line.truncate(trimmed);
            line
        }
    };
    let password = Secret::new(password);
    if password.is_empty() {
        let from = env.map_or("stdin".to_owned(), |v| format!("${v}"));
        return Err(invalid(format!("empty password (read from {from})")));
    }
    Ok(password)
}

/// Runs a `users` subcommand.
pub(crate) fn users(args: UsersArgs) -> Result<(), Failure> {
    match args.command {
        UsersCommand::Add { name, mut mechanisms, file, password_env, iterations } => {
            qwire::auth::scram::validate_username(&name).map_err(|e| invalid(e.to_string()))?;
            if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
                return Err(invalid(format!(
                    "--iterations must be between {MIN_ITERATIONS} and {MAX_ITERATIONS}, got {iterations}"
                )));
            }
            mechanisms.sort();
            mechanisms.dedup();
            let mut store = load(&file, false)?;
            let password = read_password(password_env.as_deref(), &format!("password for {name}: "))?;
            let mut names = Vec::new();
            let mut replaced = false;
            for m in &mechanisms {
                let cred = ScramCredential::derive(m.hash(), password.expose(), iterations);
                replaced |= store.upsert(&name, m.hash(), cred).map_err(invalid)?;
                names.push(m.hash().mechanism().name());
            }
            save(&store, &file)?;
            let verb = if replaced { "updated" } else { "added" };
            println!("{verb} user '{name}' ({}, {iterations} iterations) in {}", names.join(", "), file.display());
            Ok(())
        }
        UsersCommand::Remove { name, mechanism, file } => {
            let mut store = load(&file, true)?;
            let removed = store.remove(&name, mechanism.map(ScramMechanism::hash));
            if removed == 0 {
                let what = mechanism.map_or(String::new(), |m| format!(" with a {} credential", m.hash().mechanism()));
                return Err(invalid(format!("no user '{name}'{what} in {}", file.display())));
            }
            save(&store, &file)?;
            println!("removed {removed} credential(s) of user '{name}' from {}", file.display());
            Ok(())
        }
        UsersCommand::List { file } => {
            let store = load(&file, true)?;
            for u in store.list() {
                let mechs: Vec<String> =
                    u.mechanisms.iter().map(|(m, i): &(Mechanism, u32)| format!("{m} ({i} iterations)")).collect();
                println!("{}\t{}", u.name, mechs.join(", "));
            }
            Ok(())
        }
    }
}
