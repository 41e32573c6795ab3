//! The client commands' SASL flags: authentication without a client certificate, against
//! a broker run with `--client-auth optional`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use qwire::auth::client::SaslCredentials;
use qwire::auth::scram::ScramHash;
use qwire::auth::token::TokenFile;
use qwire::auth::Secret;

use crate::clients::EXIT_INVALID;
use crate::Failure;

/// A SASL mechanism on the command line.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum MechanismArg {
    /// User name and password, checked by the broker (inside TLS).
    #[value(name = "PLAIN")]
    Plain,
    /// SCRAM-SHA-256: the password never leaves the client.
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    /// SCRAM-SHA-512.
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
    /// A JWT bearer token (--token-file).
    #[value(name = "OAUTHBEARER")]
    OAuthBearer,
}

/// SASL flags (with any of them the client presents no certificate).
#[derive(clap::Args, Default)]
pub(crate) struct SaslArgs {
    /// Authenticate with SASL instead of a client certificate (the broker must run with
    /// --client-auth optional). PLAIN and SCRAM need --username; the password comes from
    /// --password-env or stdin. OAUTHBEARER needs --token-file (given alone, it implies
    /// OAUTHBEARER).
    #[arg(long, value_enum, value_name = "MECHANISM")]
    pub(crate) sasl_mechanism: Option<MechanismArg>,
    /// SASL user name (PLAIN, SCRAM).
    #[arg(long, value_name = "USER")]
    pub(crate) username: Option<String>,
    /// Read the SASL password from this environment variable (default: from stdin; never a
    /// flag).
    #[arg(long, value_name = "VAR")]
    pub(crate) password_env: Option<String>,
    /// A file holding a JWT (OAUTHBEARER); read again at every re-authentication, so a
    /// refreshed token is picked up.
    #[arg(long, value_name = "FILE")]
    pub(crate) token_file: Option<PathBuf>,
    /// CA certificate that signed the broker's certificate, when no client certificate
    /// directory is used [default: ca.crt in --certs].
    #[arg(long, value_name = "FILE")]
    pub(crate) ca: Option<PathBuf>,
}

fn invalid(message: impl Into<String>) -> Failure {
    Failure::new(EXIT_INVALID, message)
}

impl SaslArgs {
    /// Whether SASL is asked for (then no client certificate is used).
    pub(crate) fn in_use(&self) -> bool {
        self.sasl_mechanism.is_some() || self.token_file.is_some()
    }

    /// The CA file that verifies the broker: `--ca`, else `ca.crt` of `certs`.
    pub(crate) fn ca_file(&self, certs: &Path) -> PathBuf {
        self.ca.clone().unwrap_or_else(|| certs.join("ca.crt"))
    }

    /// The credentials, reading the password (once) when one is needed. `stdin_busy`: the
    /// command reads records from stdin, so the password cannot come from there.
    pub(crate) fn credentials(&self, stdin_busy: bool) -> Result<Option<SaslCredentials>, Failure> {
        if !self.in_use() {
            if self.username.is_some() || self.password_env.is_some() {
                return Err(invalid("--username and --password-env need --sasl-mechanism"));
            }
            return Ok(None);
        }
        let mechanism = self.sasl_mechanism.unwrap_or(MechanismArg::OAuthBearer);
        if mechanism == MechanismArg::OAuthBearer {
            let Some(file) = &self.token_file else {
                return Err(invalid("--sasl-mechanism OAUTHBEARER needs --token-file"));
            };
            if self.username.is_some() || self.password_env.is_some() {
                return Err(invalid(
                    "OAUTHBEARER takes no --username or --password-env: the token names the principal",
                ));
            }
            return Ok(Some(SaslCredentials::token(Arc::new(TokenFile(file.clone())))));
        }
        if self.token_file.is_some() {
            return Err(invalid("--token-file is for OAUTHBEARER"));
        }
        let Some(username) = self.username.clone() else {
            return Err(invalid("--sasl-mechanism PLAIN or SCRAM needs --username"));
        };
        if self.password_env.is_none() && stdin_busy {
            return Err(invalid("records are read from stdin, so the password cannot be: use --password-env"));
        }
        let password: Secret =
            crate::users::read_password(self.password_env.as_deref(), &format!("password for {username}: "))?;
        let creds = match mechanism {
            MechanismArg::Plain => SaslCredentials::plain(username, password),
            MechanismArg::ScramSha256 => SaslCredentials::scram(ScramHash::Sha256, username, password),
            MechanismArg::ScramSha512 => SaslCredentials::scram(ScramHash::Sha512, username, password),
            MechanismArg::OAuthBearer => unreachable!("handled above"),
        };
        creds.validate().map_err(|e| invalid(e.to_string()))?;
        Ok(Some(creds))
    }
}
