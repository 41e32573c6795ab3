//! Bearer tokens for OAUTHBEARER: where a producer gets a fresh one each time it
//! authenticates, including every re-authentication before a session expires.
//!
//! A token provider is called once per authentication exchange, so a provider that
//! returns a newly issued token (read again from a file a sidecar refreshes, or fetched
//! from an identity provider) keeps a long-running producer connected across token
//! lifetimes.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use super::Secret;

/// The future a [`TokenProvider`] returns.
pub type TokenFuture<'a> = Pin<Box<dyn Future<Output = Result<Secret, TokenError>> + Send + 'a>>;

/// Why no token could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no bearer token: {0}")]
pub struct TokenError(pub String);

/// Supplies bearer tokens (JWTs). Called before every authentication exchange.
pub trait TokenProvider: Send + Sync + fmt::Debug {
    /// A token valid now. Should return a fresh one when the previous one is near expiry.
    fn token(&self) -> TokenFuture<'_>;
}

/// Always the same token: for short-lived programs and tests.
#[derive(Debug, Clone)]
pub struct StaticToken(pub Secret);

impl TokenProvider for StaticToken {
    fn token(&self) -> TokenFuture<'_> {
        let t = self.0.clone();
        Box::pin(async move { Ok(t) })
    }
}

/// A token read from a file each time one is needed (surrounding whitespace removed), so
/// that whatever refreshes the file (an agent, a sidecar, a cron job) is picked up at the
/// next re-authentication.
#[derive(Debug, Clone)]
pub struct TokenFile(pub PathBuf);

impl TokenProvider for TokenFile {
    fn token(&self) -> TokenFuture<'_> {
        Box::pin(async move {
            let text = tokio::fs::read_to_string(&self.0)
                .await
                .map_err(|e| TokenError(format!("cannot read token file {}: {e}", self.0.display())))?;
            let token = text.trim();
            if token.is_empty() {
                return Err(TokenError(format!("token file {} is empty", self.0.display())));
            }
            Ok(Secret::new(token))
        })
    }
}

/// A token provider from a closure returning a future: `token_fn(|| async { fetch().await })`.
pub fn token_fn<F, Fut>(f: F) -> Arc<dyn TokenProvider>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Secret, TokenError>> + Send + 'static,
{
    Arc::new(FnToken(f))
}

struct FnToken<F>(F);

impl<F> fmt::Debug for FnToken<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnToken")
    }
}

impl<F, Fut> TokenProvider for FnToken<F>
where
    F: Fn() -> Fut + Send + Sync,
    Fut: Future<Output = Result<Secret, TokenError>> + Send + 'static,
{
    fn token(&self) -> TokenFuture<'_> {
        Box::pin((self.0)())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn providers_give_tokens() {
        assert_eq!(StaticToken(Secret::new("t1")).token().await.unwrap().expose(), "t1");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let file = TokenFile(path.clone());
        assert!(file.token().await.unwrap_err().0.contains("cannot read token file"));
        std::fs::write(&path, "  \n").unwrap();
        assert!(file.token().await.unwrap_err().0.contains("is empty"));
        std::fs::write(&path, "abc.def.ghi\n").unwrap();
        assert_eq!(file.token().await.unwrap().expose(), "abc.def.ghi");
        std::fs::write(&path, "jkl.mno.pqr").unwrap();
        assert_eq!(file.token().await.unwrap().expose(), "jkl.mno.pqr", "the file is read again each time");

        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let p = token_fn(move || {
            let n = c.fetch_add(1, Ordering::Relaxed);
            async move { Ok(Secret::new(format!("token-{n}"))) }
        });
        assert_eq!(p.token().await.unwrap().expose(), "token-0");
        assert_eq!(p.token().await.unwrap().expose(), "token-1");
        assert_eq!(calls.load(Ordering::Relaxed), 2);
    }
}
