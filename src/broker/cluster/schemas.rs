//! The schema registry of a cluster broker: its event log lives in the metadata store
//! (`kv/schemas/log/<seq>`, [`KvRegistryStore`](crate::schema::registry::kv_store::KvRegistryStore)),
//! shared by every broker, and a watch applies other brokers' entries as they land — so
//! a topic's schema policy set through one broker applies on every leader promptly, not
//! only after that broker's next registry request (which also catches up by itself).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::NodeInner;
use crate::schema::Registry;

/// The metadata-store namespace that holds the registry's log.
pub(crate) const SCHEMAS_NAMESPACE: &str = "schemas";

/// Keeps `registry` applying the shared log's new entries until `shutdown`.
pub(crate) fn spawn_refresher(node: &NodeInner, registry: Arc<Registry>, mut shutdown: watch::Receiver<bool>) {
    let ns = node.meta.kv(SCHEMAS_NAMESPACE);
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(200);
        loop {
            // The store's revision now (a listing past every log key is empty), then catch
            // up, then watch from the next revision: no entry falls between the two.
            let watched = async {
                let (_, rev) = ns.list_from("log/", "log/~").await?;
                registry.refresh().await.map_err(|e| e.to_string())?;
                let rx = ns.watch(rev + 1).await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(rx)
            };
            let started = tokio::select! {
                r = watched => Some(r),
                _ = shutdown.wait_for(|s| *s) => None,
            };
            let mut rx = match started {
                None => return,
                Some(Ok(rx)) => rx,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "schema registry watch not started; retrying");
                    let stopped = tokio::select! {
                        _ = tokio::time::sleep(backoff) => false,
                        _ = shutdown.wait_for(|s| *s) => true,
                    };
                    if stopped {
                        return;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            backoff = Duration::from_millis(200);
            loop {
                let events = tokio::select! {
                    e = rx.recv() => Some(e),
                    _ = shutdown.wait_for(|s| *s) => None,
                };
                let Some(events) = events else { return };
                match events {
                    Some(Ok(_)) => {
                        if let Err(e) = registry.refresh().await {
                            tracing::warn!(error = %e, "schema registry refresh failed; the next request catches up");
                        }
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "schema registry watch ended; watching again");
                        break;
                    }
                    None => break,
                }
            }
        }
    });
}
