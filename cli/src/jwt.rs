//! `qwire jwt`: a development token issuer, so OAUTHBEARER can be tried without an
//! identity provider (like `qwire certs` for certificates; development only).

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use qwire::auth::server::dev_issuer::{DevIssuer, TokenRequest};

use crate::clients::EXIT_INVALID;
use crate::Failure;

/// `qwire jwt` arguments.
#[derive(clap::Args)]
pub(crate) struct JwtArgs {
    #[command(subcommand)]
    command: JwtCommand,
}

/// `qwire jwt` subcommands.
#[derive(clap::Subcommand)]
pub(crate) enum JwtCommand {
    /// Create an Ed25519 signing key (jwt-signing.key, mode 0600) and its JWKS (jwks.json).
    #[command(after_help = "Example:\n  qwire jwt keygen --out jwt\n  \
        qwire broker --client-auth optional --jwt-jwks jwt/jwks.json --jwt-issuer dev --jwt-audience qwire")]
    Keygen {
        /// Output directory.
        #[arg(long, default_value = "jwt")]
        out: PathBuf,
    },
    /// Print a signed token (EdDSA) for a subject.
    #[command(after_help = "Example:\n  qwire jwt token --key jwt/jwt-signing.key --subject alice > alice.jwt")]
    Token {
        /// The signing key written by `qwire jwt keygen`.
        #[arg(long, default_value = "jwt/jwt-signing.key")]
        key: PathBuf,
        /// `iss` claim.
        #[arg(long, default_value = "dev")]
        issuer: String,
        /// `aud` claim.
        #[arg(long, default_value = "qwire")]
        audience: String,
        /// `sub` claim: the principal, unless the broker reads another claim.
        #[arg(long)]
        subject: String,
        /// Seconds from now until the token expires.
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
        /// Extra string claim NAME=VALUE (e.g. email=alice@example.com). Repeatable.
        #[arg(long = "claim", value_name = "NAME=VALUE")]
        claims: Vec<String>,
    },
}

fn invalid(message: impl Into<String>) -> Failure {
    Failure::new(EXIT_INVALID, message)
}

/// Runs a `jwt` subcommand.
pub(crate) fn jwt(args: JwtArgs) -> Result<(), Failure> {
    match args.command {
        JwtCommand::Keygen { out } => {
            let issuer = DevIssuer::generate().map_err(|e| Failure::new(1, e))?;
            let (key, jwks) =
                issuer.save(&out).map_err(|e| Failure::new(1, format!("cannot write into {}: {e}", out.display())))?;
            println!("wrote {}", key.display());
            println!("wrote {}", jwks.display());
            println!("This key is for development only.");
            Ok(())
        }
        JwtCommand::Token { key, issuer, audience, subject, ttl_secs, claims } => {
            let signer = DevIssuer::load(&key).map_err(invalid)?;
            let mut extra = serde_json::Map::new();
            for c in claims {
                let (k, v) = c.split_once('=').ok_or_else(|| invalid(format!("--claim {c:?} is not NAME=VALUE")))?;
                extra.insert(k.to_owned(), serde_json::Value::String(v.to_owned()));
            }
            let req = TokenRequest { issuer, audience, subject, ttl: Duration::from_secs(ttl_secs), extra };
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let token = signer.sign(&req, now).map_err(|e| Failure::new(1, e))?;
            println!("{}", token.expose());
            Ok(())
        }
    }
}
