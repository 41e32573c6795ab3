//! `qwire bench --cluster N`: a local cluster for the benchmark — an etcd (from PATH) and N
//! `qwire broker` processes on loopback with fresh certificates — and the failover
//! measurement: from a leader's SIGKILL to the first acknowledgement from its successor.

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use qwire::client::{Client, ConnectConfig};
use qwire::producer::{Producer, ProducerRecord, TlsConfig};
use qwire::protocol::Acks;
use qwire::transport::certs::generate_dev_certs;
use serde::Serialize;

use super::embedded::BENCH_CLIENT;
use super::ExternalBroker;

/// Session lease TTL of the benchmark's brokers (failover takes about one TTL).
pub const BENCH_TTL_MS: u64 = 2000;

/// A running local cluster; every process is killed when it is dropped.
pub struct LocalCluster {
    dir: tempfile::TempDir,
    etcd: Child,
    etcd_endpoint: String,
    brokers: Vec<LocalBroker>,
}

struct LocalBroker {
    id: u32,
    addr: SocketAddr,
    child: Option<Child>,
}

fn free_tcp_port() -> Result<u16, String> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| e.to_string())?
        .local_addr()
        .map_err(|e| e.to_string())?
        .port())
}

fn free_udp_addr() -> Result<SocketAddr, String> {
    std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?.local_addr().map_err(|e| e.to_string())
}

fn etcd_healthy(endpoint: &str) -> bool {
    let Ok(addr) = endpoint.parse::<SocketAddr>() else { return false };
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(300)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n").is_err() {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

impl LocalCluster {
    /// Starts etcd and `n` brokers (replication factor and min in-sync defaults
    /// `min(3, n)` and `min(2, n)`). Fails with a clear message without `etcd` on PATH.
    pub fn start(n: usize) -> Result<LocalCluster, String> {
        let dir = tempfile::Builder::new().prefix("qwire-bench-cluster").tempdir().map_err(|e| e.to_string())?;
        let certs = dir.path().join("certs");
        generate_dev_certs(&certs, &[BENCH_CLIENT.to_string()], &[]).map_err(|e| e.to_string())?;
        let (cport, pport) = (free_tcp_port()?, free_tcp_port()?);
        let (c, p) = (format!("http://127.0.0.1:{cport}"), format!("http://127.0.0.1:{pport}"));
        let etcd = Command::new("etcd")
            .args(["--name", "bench", "--data-dir"])
            .arg(dir.path().join("etcd"))
            .args(["--listen-client-urls", &c, "--advertise-client-urls", &c])
            .args(["--listen-peer-urls", &p, "--initial-advertise-peer-urls", &p])
            .args(["--initial-cluster", &format!("bench={p}"), "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start etcd ({e}): install it (apt-get install etcd-server) for --cluster"))?;
        let etcd_endpoint = format!("127.0.0.1:{cport}");
        let mut cluster = LocalCluster { dir, etcd, etcd_endpoint, brokers: Vec::new() };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !etcd_healthy(&cluster.etcd_endpoint) {
            if Instant::now() > deadline {
                return Err("etcd did not become healthy within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for id in 1..=n as u32 {
            cluster.brokers.push(LocalBroker { id, addr: free_udp_addr()?, child: None });
        }
        for i in 0..n {
            cluster.start_broker(i)?;
        }
        Ok(cluster)
    }

    fn certs(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    /// Starts broker `i` (again) and waits for it to listen.
    pub fn start_broker(&mut self, i: usize) -> Result<(), String> {
        let n = self.brokers.len();
        let (rf, min) = (n.min(3), n.min(2));
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let data = self.dir.path().join(format!("broker-{}", self.brokers[i].id));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("broker-{}.log", self.brokers[i].id)))
            .map_err(|e| e.to_string())?;
        let b = &mut self.brokers[i];
        let mut child = Command::new(exe)
            .arg("broker")
            .args(["--broker-id", &b.id.to_string()])
            .args(["--metadata", &format!("etcd://{}/bench", self.etcd_endpoint)])
            .args(["--listen", &b.addr.to_string()])
            .arg("--data-dir")
            .arg(&data)
            .arg("--certs")
            .arg(self.dir.path().join("certs"))
            .args(["--session-ttl-ms", &BENCH_TTL_MS.to_string()])
            .args(["--default-replication-factor", &rf.to_string(), "--default-min-insync-replicas", &min.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("cannot start a broker: {e}"))?;
        let stdout = child.stdout.take().expect("piped");
        let mut lines = std::io::BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                Some(Ok(l)) if l.contains("qwire broker listening on") => break,
                Some(Ok(_)) => {}
                _ => {
                    return Err(format!("broker {} exited before listening (see {})", b.id, self.dir.path().display()))
                }
            }
        }
        // Keep reading stdout so the broker never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        b.child = Some(child);
        Ok(())
    }

    /// SIGKILLs broker `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.brokers[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The cluster as a benchmark target (the producers learn the other brokers from the
    /// first one's metadata).
    pub fn external(&self) -> ExternalBroker {
        ExternalBroker { addr: self.brokers[0].addr.to_string(), certs: self.certs(), client: BENCH_CLIENT.into() }
    }

    fn client_config(&self, i: usize) -> Result<ConnectConfig, String> {
        ConnectConfig::from_certs_dir(self.brokers[i].addr, &self.certs(), BENCH_CLIENT).map_err(|e| e.to_string())
    }

    async fn any_client(&self) -> Result<Client, String> {
        for i in 0..self.brokers.len() {
            if self.brokers[i].child.is_none() {
                continue;
            }
            if let Ok(c) = Client::connect(&self.client_config(i)?).await {
                return Ok(c);
            }
        }
        Err("no broker of the local cluster answers".into())
    }

    /// Waits until partition 0 of `topic` has a leader and `isr` in-sync replicas;
    /// returns the leader.
    async fn settled(&self, topic: &str, isr: usize) -> Result<u32, String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(mut c) = self.any_client().await {
                let d = c.describe_topics(&[topic]).await;
                c.close();
                if let Ok(Some(p)) = d.map(|d| d.into_iter().next().and_then(|t| t.partitions.into_iter().next())) {
                    if p.leader >= 0 && p.isr.len() >= isr {
                        return Ok(p.leader as u32);
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(format!("{topic}: no leader with {isr} in-sync replicas within 60 s"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for i in 0..self.brokers.len() {
            self.kill(i);
        }
        let _ = self.etcd.kill();
        let _ = self.etcd.wait();
    }
}

/// What the failover measurement found.
#[derive(Debug, Clone, Serialize)]
pub struct FailoverReport {
    /// Leader kills measured.
    pub kills: usize,
    /// Milliseconds from each SIGKILL to the first acknowledgement of a record sent after it.
    pub times_ms: Vec<f64>,
    /// Median of `times_ms`.
    pub p50_ms: f64,
    /// Largest of `times_ms`.
    pub max_ms: f64,
    /// The brokers' session TTL (the goal: failover under 2 × TTL).
    pub session_ttl_ms: u64,
}

/// SIGKILLs the leader of a one-partition topic (replication factor 3, min in-sync 2)
/// `kills` times while an idempotent acks=all producer sends a record every 2 ms, and
/// times each failover. The killed broker is restarted and caught up before the next kill.
pub async fn measure_failover(cluster: &mut LocalCluster, kills: usize) -> Result<FailoverReport, String> {
    let topic = "bench-failover";
    let n = cluster.brokers.len();
    let mut c = cluster.any_client().await?;
    c.create_replicated_topic(topic, 1, n.min(3) as u16, n.min(2) as u16).await.map_err(|e| e.to_string())?;
    c.close();
    let tls = TlsConfig::from_dir(&cluster.certs(), BENCH_CLIENT).map_err(|e| e.to_string())?;
    let fast =
        qwire::producer::Backoff { base: Duration::from_millis(20), max: Duration::from_millis(200), jitter: 0.2 };
    let mut builder = Producer::builder();
    for b in &cluster.brokers {
        builder = builder.bootstrap(b.addr.to_string());
    }
    let producer = builder
        .tls(tls)
        .acks(Acks::All)
        .linger(Duration::ZERO)
        // A dead leader is noticed within about a second (keep-alives every 200 ms, idle
        // after 1 s); the producer then asks for fresh metadata or follows a NotLeader.
        .retry_backoff(fast)
        .reconnect_backoff(fast)
        .circuit_breaker_threshold(u32::MAX)
        .keep_alive(Duration::from_millis(200))
        .idle_timeout(Duration::from_secs(1))
        .connect_timeout(Duration::from_secs(1))
        .request_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let producer = Arc::new(producer);
    // (send time, ack time) of every acknowledged record.
    let acks: Arc<Mutex<Vec<(Instant, Instant)>>> = Arc::default();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let sender = {
        let (p, acks) = (producer.clone(), acks.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(2));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop_rx.changed() => return,
                }
                let (p, acks) = (p.clone(), acks.clone());
                tokio::spawn(async move {
                    let sent = Instant::now();
                    let r = ProducerRecord::new(topic, Bytes::from_static(b"failover-probe"));
                    if p.send(r).await.is_ok() {
                        acks.lock().unwrap_or_else(|p| p.into_inner()).push((sent, Instant::now()));
                    }
                });
            }
        })
    };
    let mut times = Vec::with_capacity(kills);
    for k in 0..kills {
        let leader = cluster.settled(topic, n.min(3)).await?;
        let i = cluster.brokers.iter().position(|b| b.id == leader).expect("a broker of the cluster");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let killed = Instant::now();
        cluster.kill(i);
        let deadline = killed + Duration::from_secs(60);
        let first = loop {
            let found = acks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter(|(s, _)| *s > killed)
                .map(|(_, a)| *a)
                .min();
            if let Some(a) = found {
                break a;
            }
            if Instant::now() > deadline {
                return Err(format!("kill {k}: no acknowledgement within 60 s of the leader's SIGKILL"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let ms = (first - killed).as_secs_f64() * 1000.0;
        eprintln!("failover {}: leader {leader} killed, first ack from its successor after {ms:.0} ms", k + 1);
        times.push(ms);
        cluster.start_broker(i)?;
    }
    let _ = stop_tx.send(true);
    let _ = sender.await;
    if let Ok(p) = Arc::try_unwrap(producer) {
        let _ = p.close(Duration::from_secs(10)).await;
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(FailoverReport {
        kills,
        p50_ms: sorted.get(sorted.len() / 2).copied().unwrap_or(0.0),
        max_ms: sorted.last().copied().unwrap_or(0.0),
        times_ms: times,
        session_ttl_ms: BENCH_TTL_MS,
    })
}
