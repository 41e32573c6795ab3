//! The ceiling: the same bytes pushed over one raw quinn stream with the same mTLS setup
//! (no qwire framing, storage or acknowledgements beyond one at the end), and the raw
//! request/response round trip on a long-lived stream. Both sides run exactly as the
//! benchmark's producer and broker do: the server on its own thread and runtime.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;

use qwire::transport::certs::{load_certs, Identity};
use qwire::transport::tls::{client_tls, quinn_client_config, quinn_server_config, server_tls, QuicTuning};

/// What the raw baseline measured.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct RawResult {
    /// Payload bytes pushed.
    pub bytes: u64,
    /// Seconds from the first write to the server's final acknowledgement.
    pub seconds: f64,
    /// Throughput in MB/s (10^6 bytes).
    pub mb_per_sec: f64,
    /// Round trip of a 64-byte request and an 8-byte reply, median, µs.
    pub rtt_p50_us: u64,
    /// Round trip, 99th percentile, µs.
    pub rtt_p99_us: u64,
    /// With a pace: the same round trip with that gap between requests (both sides go
    /// idle in between, as in a rate-limited run): (p50, p99) µs.
    pub paced_rtt_us: Option<(u64, u64)>,
}

const RTT_REQUEST: usize = 64;
const RTT_REPLY: usize = 8;

/// Runs a raw sink server and pushes `bytes` in `chunk`-sized writes, then measures
/// `rtt_samples` back-to-back round trips and, with `pace`, as many with that gap
/// between requests. `certs` is a `qwire certs` directory with client `client`.
pub async fn run(
    certs: &Path,
    client: &str,
    bytes: u64,
    chunk: usize,
    rtt_samples: usize,
    pace: Option<Duration>,
    tuning: &QuicTuning,
) -> Result<RawResult, String> {
    let server = RawServer::start(certs, tuning)?;
    let identity = Identity::load(certs, client).map_err(|e| e.to_string())?;
    let ca = load_certs(&certs.join("ca.crt")).map_err(|e| e.to_string())?;
    let cfg = quinn_client_config(client_tls(Some(&identity), &ca).map_err(|e| e.to_string())?, tuning)
        .map_err(|e| e.to_string())?;
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("literal")).map_err(|e| e.to_string())?;
    endpoint.set_default_client_config(cfg);
    let conn = endpoint
        .connect(server.addr, "localhost")
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| format!("raw connect: {e}"))?;

    // Round trips first, on a quiet connection, then the bulk transfer.
    let (mut rtt_send, mut rtt_recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let hist = round_trips(&mut rtt_send, &mut rtt_recv, rtt_samples, None).await?;
    let paced = match pace {
        Some(gap) => {
            let h = round_trips(&mut rtt_send, &mut rtt_recv, rtt_samples.min(2000), Some(gap)).await?;
            Some((h.value_at_quantile(0.5), h.value_at_quantile(0.99)))
        }
        None => None,
    };
    // Bulk: one stream, large writes, one acknowledgement at the end.
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let block = Bytes::from(vec![0x5a; chunk]);
    let started = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk as u64) as usize;
        send.write_chunk(block.slice(..n)).await.map_err(|e| e.to_string())?;
        left -= n as u64;
    }
    send.finish().map_err(|e| e.to_string())?;
    let mut ack = [0u8; 8];
    recv.read_exact(&mut ack).await.map_err(|e| format!("raw ack: {e}"))?;
    let seconds = started.elapsed().as_secs_f64();
    let got = u64::from_be_bytes(ack);
    if got != bytes {
        return Err(format!("raw server received {got} of {bytes} bytes"));
    }

    let _ = rtt_send.finish();
    conn.close(0u8.into(), b"done");
    endpoint.wait_idle().await;
    drop(server);
    Ok(RawResult {
        bytes,
        seconds,
        mb_per_sec: bytes as f64 / seconds / 1e6,
        rtt_p50_us: hist.value_at_quantile(0.5),
        rtt_p99_us: hist.value_at_quantile(0.99),
        paced_rtt_us: paced,
    })
}

async fn round_trips(
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    samples: usize,
    gap: Option<Duration>,
) -> Result<Histogram<u64>, String> {
    let req = [0x11u8; RTT_REQUEST];
    let mut reply = [0u8; RTT_REPLY];
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let warmup = samples / 10;
    for i in 0..samples + warmup {
        if let Some(g) = gap {
            tokio::time::sleep(g).await;
        }
        let t = Instant::now();
        send.write_all(&req).await.map_err(|e| e.to_string())?;
        recv.read_exact(&mut reply).await.map_err(|e| e.to_string())?;
        if i >= warmup {
            let _ = hist.record((t.elapsed().as_micros() as u64).max(1));
        }
    }
    Ok(hist)
}

struct RawServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RawServer {
    fn start(certs: &Path, tuning: &QuicTuning) -> Result<RawServer, String> {
        let identity = Identity::load(certs, "broker").map_err(|e| e.to_string())?;
        let ca = load_certs(&certs.join("ca.crt")).map_err(|e| e.to_string())?;
        let cfg = quinn_server_config(server_tls(&identity, &ca).map_err(|e| e.to_string())?, tuning)
            .map_err(|e| e.to_string())?;
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("qwire-raw-sink".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                rt.block_on(async move {
                    let endpoint = match quinn::Endpoint::server(cfg, "127.0.0.1:0".parse().expect("literal")) {
                        Ok(e) => e,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    let _ = ready_tx.send(endpoint.local_addr().map_err(|e| e.to_string()));
                    let serve = async {
                        while let Some(inc) = endpoint.accept().await {
                            let Ok(conn) = inc.await else { continue };
                            tokio::spawn(async move {
                                // The client opens the round-trip stream first, then the
                                // bulk stream.
                                let mut first = true;
                                while let Ok((send, recv)) = conn.accept_bi().await {
                                    if first {
                                        tokio::spawn(echo(send, recv));
                                        first = false;
                                    } else {
                                        tokio::spawn(sink(send, recv));
                                    }
                                }
                            });
                        }
                    };
                    tokio::select! {
                        _ = serve => {}
                        _ = stop_rx => {}
                    }
                    endpoint.close(0u8.into(), b"done");
                    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
                })
            })
            .map_err(|e| e.to_string())?;
        let addr = ready_rx.recv().map_err(|_| "raw server thread died".to_string())??;
        Ok(RawServer { addr, stop: Some(stop_tx), thread: Some(thread) })
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn sink(mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let mut total: u64 = 0;
    while let Ok(Some(c)) = recv.read_chunk(usize::MAX, false).await {
        total += c.bytes.len() as u64;
    }
    let _ = send.write_all(&total.to_be_bytes()).await;
    let _ = send.finish();
}

async fn echo(mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let mut req = [0u8; RTT_REQUEST];
    while recv.read_exact(&mut req).await.is_ok() {
        if send.write_all(&[0u8; RTT_REPLY]).await.is_err() {
            return;
        }
    }
    let _ = send.finish();
}
