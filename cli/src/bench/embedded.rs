//! A broker for the benchmark, on loopback with freshly generated mTLS certificates and
//! a temporary data directory, running on its own thread with its own single-threaded
//! runtime (one runtime per side measured fastest; see NOTES in the design docs).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;

use tokio::sync::watch;

use qwire::broker::{self, metrics, BrokerConfig, BrokerTls};
use qwire::transport::certs::generate_dev_certs;

/// Name of the client certificate generated for the benchmark.
pub const BENCH_CLIENT: &str = "bench";

/// A broker running on its own thread; stopped gracefully on drop.
pub struct EmbeddedBroker {
    addr: SocketAddr,
    certs: tempfile::TempDir,
    _data: tempfile::TempDir,
    stop: Option<watch::Sender<bool>>,
    thread: Option<JoinHandle<metrics::MetricsSnapshot>>,
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl EmbeddedBroker {
    /// Generates certificates (CA, broker, client [`BENCH_CLIENT`]), starts a broker on
    /// `127.0.0.1:0` and waits until it listens. `tweak` adjusts the configuration.
    /// With `prewarm_mib` > 0, that many MiB are first written to a scratch file in the
    /// data directory and deleted, so the log's writes land on page-cache pages the
    /// machine has touched before (on some VMs the first touch of a page is several
    /// times slower than a reuse).
    pub fn start(tweak: impl FnOnce(&mut BrokerConfig), prewarm_mib: usize) -> Result<EmbeddedBroker, String> {
        let certs = tempfile::Builder::new().prefix("qwire-bench-certs").tempdir().map_err(|e| e.to_string())?;
        let data = tempfile::Builder::new().prefix("qwire-bench-data").tempdir().map_err(|e| e.to_string())?;
        if prewarm_mib > 0 {
            prewarm(data.path(), prewarm_mib).map_err(|e| format!("prewarming the page cache: {e}"))?;
        }
        generate_dev_certs(certs.path(), &[BENCH_CLIENT.to_string()], &[]).map_err(|e| e.to_string())?;
        let tls = BrokerTls::load(certs.path()).map_err(|e| e.to_string())?;
        let mut config = BrokerConfig {
            listen: "127.0.0.1:0".parse().expect("literal"),
            data_dir: data.path().to_path_buf(),
            ..BrokerConfig::default()
        };
        tweak(&mut config);
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("qwire-bench-broker".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                rt.block_on(async move {
                    let handle = match broker::start(config, tls).await {
                        Ok(h) => h,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.to_string()));
                            return metrics::MetricsSnapshot::default();
                        }
                    };
                    let _ = ready_tx.send(Ok(handle.local_addr()));
                    let _ = stop_rx.wait_for(|s| *s).await;
                    let m = handle.metrics();
                    handle.shutdown().await;
                    m
                })
            })
            .map_err(|e| e.to_string())?;
        let addr = ready_rx.recv().map_err(|_| "broker thread died".to_string())??;
        Ok(EmbeddedBroker { addr, certs, _data: data, stop: Some(stop_tx), thread: Some(thread) })
    }

    /// Where the broker listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The directory holding `ca.crt` and the client certificate.
    pub fn certs_dir(&self) -> &Path {
        self.certs.path()
    }

    fn stop_inner(&mut self) -> metrics::MetricsSnapshot {
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or_default()
    }
}

fn prewarm(dir: &Path, mib: usize) -> std::io::Result<()> {
    use std::io::Write;
    let path = dir.join("prewarm.tmp");
    let mut f = std::fs::File::create(&path)?;
    let block = vec![0x5au8; 1 << 20];
    for _ in 0..mib {
        f.write_all(&block)?;
    }
    drop(f);
    std::fs::remove_file(path)
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        self.stop_inner();
    }
}
