//! Connections from this broker to the others (followers to their leaders): one QUIC
//! connection per peer with the same mTLS as clients (the broker's own certificate, whose
//! principal needs the `cluster` permission under an ACL), one stream per partition being
//! followed. A connection that fails is dropped and made again on the next use.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::client::{Client, ConnectConfig};
use crate::transport::{FrameStream, TransportError};

/// The pool.
pub(crate) struct Peers {
    template: ConnectConfig,
    conns: Mutex<HashMap<u32, (String, Arc<Client>)>>,
}

impl Peers {
    /// Peers reached with `template`'s TLS settings (its address is replaced per peer).
    pub(crate) fn new(template: ConnectConfig) -> Peers {
        Peers { template, conns: Mutex::new(HashMap::new()) }
    }

    /// A new stream to broker `id` at `address` (`host:port`), connecting first if needed.
    pub(crate) async fn stream(&self, id: u32, address: &str) -> Result<FrameStream, TransportError> {
        let client = self.client(id, address).await?;
        match client.open_stream().await {
            Ok(s) => Ok(s),
            Err(e) => {
                self.forget(id).await;
                Err(e)
            }
        }
    }

    async fn client(&self, id: u32, address: &str) -> Result<Arc<Client>, TransportError> {
        let mut conns = self.conns.lock().await;
        if let Some((addr, c)) = conns.get(&id) {
            if addr == address && c.connection().quinn().close_reason().is_none() {
                return Ok(c.clone());
            }
        }
        let addr = resolve(address).await?;
        let cfg = ConnectConfig { addr, ..self.template.clone() };
        let client = Arc::new(Client::connect(&cfg).await?);
        conns.insert(id, (address.to_owned(), client.clone()));
        Ok(client)
    }

    /// Drops the connection to `id` (after an error on it).
    pub(crate) async fn forget(&self, id: u32) {
        if let Some((_, c)) = self.conns.lock().await.remove(&id) {
            c.close();
        }
    }

    /// Closes every connection (shutdown).
    pub(crate) async fn close_all(&self) {
        for (_, (_, c)) in self.conns.lock().await.drain() {
            c.close();
        }
    }
}

async fn resolve(address: &str) -> Result<SocketAddr, TransportError> {
    let fail = |reason: String| TransportError::Connect {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        reason: format!("cannot resolve broker address '{address}': {reason}"),
    };
    let mut addrs = tokio::net::lookup_host(address).await.map_err(|e| fail(e.to_string()))?;
    addrs.next().ok_or_else(|| fail("no address".into()))
}
