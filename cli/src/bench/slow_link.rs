//! A bandwidth-limited loopback UDP relay for `qwire bench --link-mbps`: producers send
//! through it, and their datagrams reach the broker no faster than the given rate (a
//! shaper: a queue paced at the rate, whose tail is dropped beyond a quarter second of
//! data, so QUIC's congestion control settles on the rate as it would on a slow path).
//! Answers from the broker pass unshaped.
//!
//! It is how the benchmark shows what a slow broker does to the producer's memory: with
//! the broker slowed to a fraction of its speed, the producer's buffer fills, and its
//! resident memory must stay within `buffer_memory` plus a fixed overhead (PERF.md).
//! The relay runs on its own thread and runtime, so it does not compete with the
//! producers' runtime; its own memory is the bounded queue.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Datagrams the relay forwarded and dropped.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Datagrams forwarded towards the broker.
    pub forwarded: AtomicU64,
    /// Datagrams dropped because the queue was full.
    pub dropped: AtomicU64,
}

/// A running relay; stopped when dropped.
pub struct SlowLink {
    addr: SocketAddr,
    stats: Arc<LinkStats>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SlowLink {
    /// Starts a relay on 127.0.0.1 towards `upstream`, forwarding at most `bytes_per_sec`.
    pub fn start(upstream: SocketAddr, bytes_per_sec: f64) -> std::io::Result<SlowLink> {
        let front = std::net::UdpSocket::bind("127.0.0.1:0")?;
        front.set_nonblocking(true)?;
        let addr = front.local_addr()?;
        let stats = Arc::new(LinkStats::default());
        let (stop, stopped) = oneshot::channel();
        let st = stats.clone();
        let thread = std::thread::Builder::new().name("qwire-slow-link".into()).spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("relay runtime");
            rt.block_on(async move {
                let front = Arc::new(UdpSocket::from_std(front).expect("relay socket"));
                tokio::select! {
                    _ = relay(front, upstream, bytes_per_sec.max(1.0), st) => {}
                    _ = stopped => {}
                }
            });
        })?;
        Ok(SlowLink { addr, stats, stop: Some(stop), thread: Some(thread) })
    }

    /// Where producers connect instead of the broker.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What the relay did so far.
    pub fn stats(&self) -> &LinkStats {
        &self.stats
    }
}

impl Drop for SlowLink {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn relay(front: Arc<UdpSocket>, upstream: SocketAddr, rate: f64, stats: Arc<LinkStats>) {
    // At most a quarter second of data waits; beyond that the tail is dropped.
    let cap = (rate / 4.0).max(64.0 * 1024.0) as usize;
    let mut queue: VecDeque<(Arc<UdpSocket>, Vec<u8>)> = VecDeque::new();
    let mut queued = 0usize;
    let mut clients: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut next_send = Instant::now();
    let mut buf = vec![0u8; 65_536];
    loop {
        let due = next_send;
        tokio::select! {
            r = front.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                let up = match clients.get(&from) {
                    Some(s) => s.clone(),
                    None => match new_client(&front, from, upstream).await {
                        Some(s) => {
                            clients.insert(from, s.clone());
                            s
                        }
                        None => continue,
                    },
                };
                if queued + n > cap {
                    stats.dropped.fetch_add(1, Relaxed);
                    continue;
                }
                queued += n;
                queue.push_back((up, buf[..n].to_vec()));
            }
            _ = tokio::time::sleep_until(due), if !queue.is_empty() => {
                // Send everything due (the timer fires at most about once a millisecond).
                let now = Instant::now();
                next_send = next_send.max(now - Duration::from_millis(2));
                while next_send <= now {
                    let Some((up, d)) = queue.pop_front() else { break };
                    queued -= d.len();
                    let _ = up.send(&d).await;
                    stats.forwarded.fetch_add(1, Relaxed);
                    next_send += Duration::from_secs_f64(d.len() as f64 / rate);
                }
            }
        }
    }
}

/// A socket towards the broker for client `from`, whose answers go back through `front`.
async fn new_client(front: &Arc<UdpSocket>, from: SocketAddr, upstream: SocketAddr) -> Option<Arc<UdpSocket>> {
    let up = Arc::new(UdpSocket::bind("127.0.0.1:0").await.ok()?);
    up.connect(upstream).await.ok()?;
    let (back, front) = (up.clone(), front.clone());
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok(n) = back.recv(&mut buf).await {
            let _ = front.send_to(&buf[..n], from).await;
        }
    });
    Some(up)
}
