//! A cluster for process tests: one etcd (private to the test) and N `qwire broker`
//! processes on loopback ports chosen by the OS, sharing one dev CA, each with its own
//! data directory kept across SIGKILLs and restarts.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use qwire::client::{Client, ConnectConfig};
use qwire::protocol::cluster::TopicReplicas;

use super::etcd::Etcd;
use super::Certs;

/// Broker settings the cluster tests use: a short session TTL (fast failover) and lag.
pub const TTL_MS: u64 = 2000;

/// One broker process.
pub struct Node {
    pub id: u32,
    pub addr: SocketAddr,
    /// The address it advertises (other brokers and producers reach it there): a UDP
    /// relay in front of `addr` for partitionable clusters.
    pub advertise: Option<SocketAddr>,
    /// Its own path to etcd (a TCP relay) for partitionable clusters.
    pub etcd_relay: Option<SocketAddr>,
    pub data: tempfile::TempDir,
    logs: tempfile::TempDir,
    child: Option<Child>,
    /// Successful starts.
    pub starts: u32,
    /// Its admin listener (`--http` among the extra arguments), from its start-up line.
    pub admin: Option<SocketAddr>,
}

/// The cluster.
pub struct Cluster {
    pub etcd: Etcd,
    pub certs: Certs,
    pub prefix: String,
    pub nodes: Vec<Node>,
    /// Extra `qwire broker` arguments for every node.
    pub extra_args: Vec<String>,
}

fn free_udp_port() -> SocketAddr {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap()
}

impl Cluster {
    /// An etcd and `n` brokers (ids 1..=n), all started.
    pub fn start(n: usize) -> Cluster {
        Self::start_with(n, &[])
    }

    /// [`Cluster::start`] with extra broker arguments.
    pub fn start_with(n: usize, extra: &[&str]) -> Cluster {
        let etcd = Etcd::start();
        let nodes = (1..=n as u32)
            .map(|id| Node {
                id,
                addr: free_udp_port(),
                advertise: None,
                etcd_relay: None,
                data: tempfile::tempdir().unwrap(),
                logs: tempfile::tempdir().unwrap(),
                child: None,
                starts: 0,
                admin: None,
            })
            .collect();
        let mut c = Cluster {
            etcd,
            certs: Certs::new(),
            prefix: format!("/qwire-cluster-{}", std::process::id()),
            nodes,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
        };
        for i in 0..n {
            c.start_node(i);
        }
        c.wait_registered();
        c
    }

    /// Waits until every running node's view lists every running node (a broker's view
    /// follows etcd by a watch: right after a start it may not list the others yet).
    pub fn wait_registered(&mut self) {
        let up: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.running(i)).collect();
        let want: Vec<u32> = up.iter().map(|&i| self.nodes[i].id).collect();
        let configs: Vec<(u32, ConnectConfig)> =
            up.iter().map(|&i| (self.nodes[i].id, self.client_config(i, "alice"))).collect();
        // On a thread of its own: callers may be inside a runtime already.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            for (id, cfg) in configs {
                loop {
                    let seen = rt.block_on(async {
                        let mut c = Client::connect(&cfg).await.ok()?;
                        let d = c.describe_cluster().await.ok();
                        c.close();
                        d
                    });
                    let alive: Vec<u32> =
                        seen.map(|d| d.brokers.iter().filter(|b| b.alive).map(|b| b.id).collect()).unwrap_or_default();
                    if want.iter().all(|w| alive.contains(w)) {
                        break;
                    }
                    assert!(Instant::now() < deadline, "broker {id} never saw every broker: {alive:?}");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        })
        .join()
        .expect("every broker sees every broker");
    }

    /// A cluster whose nodes can each be cut off from the others and from etcd: every
    /// node advertises a UDP relay in front of it (followers and producers reach it only
    /// through the relay; a test client may still talk to its real address) and reaches
    /// etcd through a TCP relay of its own. Call inside a multi-threaded runtime.
    pub async fn start_partitionable(n: usize) -> (Cluster, Vec<Cut>) {
        let mut c = Cluster {
            etcd: Etcd::start(),
            certs: Certs::new(),
            prefix: format!("/qwire-cluster-{}", std::process::id()),
            nodes: Vec::new(),
            extra_args: Vec::new(),
        };
        let mut cuts = Vec::new();
        for id in 1..=n as u32 {
            let addr = free_udp_port();
            let udp = super::relay::Relay::start(addr).await;
            let tcp = TcpRelay::start(c.etcd.endpoint.parse().unwrap()).await;
            c.nodes.push(Node {
                id,
                addr,
                advertise: Some(udp.addr()),
                etcd_relay: Some(tcp.addr),
                data: tempfile::tempdir().unwrap(),
                logs: tempfile::tempdir().unwrap(),
                child: None,
                starts: 0,
                admin: None,
            });
            cuts.push(Cut { udp, tcp });
        }
        for i in 0..n {
            tokio::task::block_in_place(|| c.start_node(i));
        }
        tokio::task::block_in_place(|| c.wait_registered());
        (c, cuts)
    }

    /// `etcd://...` of this cluster.
    pub fn metadata_url(&self) -> String {
        format!("etcd://{}{}", self.etcd.endpoint, self.prefix)
    }

    /// Starts node `i` (again) and waits for its `listening` line.
    pub fn start_node(&mut self, i: usize) {
        let url = match self.nodes[i].etcd_relay {
            Some(r) => format!("etcd://{r}{}", self.prefix),
            None => self.metadata_url(),
        };
        let certs = self.certs.path().to_path_buf();
        let extra = self.extra_args.clone();
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "node {} already running", node.id);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match node.try_start(&url, &certs, &extra) {
                Ok(child) => {
                    node.child = Some(child);
                    node.starts += 1;
                    return;
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("broker {} start failed, retrying: {e}", node.id);
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("broker {} did not start: {e}\n{}", node.id, node.log()),
            }
        }
    }

    /// SIGKILLs node `i` (no shutdown, no final fsync, no lease revocation).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops node `i` gracefully (SIGTERM; it leaves the cluster and fsyncs).
    pub fn stop(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes node `i` (SIGSTOP): it keeps its sockets but does nothing, as a process in
    /// a long pause would; its session lease expires meanwhile.
    pub fn pause(&self, i: usize) {
        self.signal(i, "-STOP");
    }

    /// Unfreezes node `i` (SIGCONT).
    pub fn resume(&self, i: usize) {
        self.signal(i, "-CONT");
    }

    fn signal(&self, i: usize, sig: &str) {
        let pid = self.nodes[i].child.as_ref().expect("running").id();
        let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
    }

    /// Whether node `i` runs.
    pub fn running(&mut self, i: usize) -> bool {
        self.nodes[i].child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Index of the node with broker id `id`.
    pub fn index_of(&self, id: u32) -> usize {
        self.nodes.iter().position(|n| n.id == id).expect("a broker of this cluster")
    }

    /// `host:port` of every node, comma-separated (a producer's bootstrap list).
    pub fn bootstrap(&self) -> String {
        self.nodes.iter().map(|n| n.addr.to_string()).collect::<Vec<_>>().join(",")
    }

    pub fn client_config(&self, i: usize, name: &str) -> ConnectConfig {
        let mut c = self.certs.client(self.nodes[i].addr, name);
        c.connect_timeout = Duration::from_secs(2);
        c
    }

    /// A client connected to the first node that answers.
    pub async fn any_client(&mut self, name: &str) -> Client {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            for i in 0..self.nodes.len() {
                if !self.running(i) {
                    continue;
                }
                if let Ok(c) = Client::connect(&self.client_config(i, name)).await {
                    return c;
                }
            }
            assert!(Instant::now() < deadline, "no broker of the cluster answers");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A producer builder bootstrapping from every node.
    pub fn producer(&self, client: &str) -> qwire::producer::ProducerBuilder {
        let mut b = qwire::producer::Producer::builder();
        for n in &self.nodes {
            b = b.bootstrap(n.advertise.unwrap_or(n.addr).to_string());
        }
        b.tls(qwire::producer::TlsConfig::from_dir(self.certs.path(), client).unwrap())
    }

    /// Stops every node, checks that every replica of each partition holds the same
    /// batches, byte for byte, and returns each partition's records.
    pub fn stop_and_compare(&mut self, topic: &str, partitions: u32) -> Vec<Vec<qwire::protocol::StoredRecord>> {
        for i in 0..self.nodes.len() {
            self.stop(i);
        }
        let mut out = Vec::new();
        for p in 0..partitions {
            let logs: Vec<Vec<Bytes>> = (0..self.nodes.len()).map(|i| self.stored_batches(i, topic, p)).collect();
            for (i, l) in logs.iter().enumerate().skip(1) {
                assert!(
                    l == &logs[0],
                    "partition {p}: replica {} differs from replica 1 ({} and {} batches)",
                    i + 1,
                    l.len(),
                    logs[0].len()
                );
            }
            let records = logs[0]
                .iter()
                .flat_map(|b| qwire::protocol::RecordBatch::from_bytes(b.clone()).unwrap().records(64 << 20).unwrap())
                .collect();
            out.push(records);
        }
        out
    }

    /// The topic's replication state, as the first broker that answers describes it (a
    /// broker cut off from etcd refuses: its view may be stale).
    pub async fn describe(&mut self, topic: &str) -> TopicReplicas {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            for i in 0..self.nodes.len() {
                if !self.running(i) {
                    continue;
                }
                let Ok(mut c) = Client::connect(&self.client_config(i, "alice")).await else { continue };
                let d = c.describe_topics(&[topic]).await;
                c.close();
                if let Ok(mut d) = d {
                    return d.remove(0);
                }
            }
            assert!(Instant::now() < deadline, "no broker of the cluster describes '{topic}'");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls the topic's description until `f` holds (60 s at most).
    pub async fn wait_for(&mut self, what: &str, topic: &str, f: impl Fn(&TopicReplicas) -> bool) -> TopicReplicas {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let d = self.describe(topic).await;
            if f(&d) {
                return d;
            }
            assert!(Instant::now() < deadline, "timed out waiting for: {what}\nlast: {d:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The leader of a partition (waiting until it has one).
    pub async fn leader(&mut self, topic: &str, partition: u32) -> u32 {
        let d = self
            .wait_for("a leader", topic, |d| d.partitions.iter().any(|p| p.partition == partition && p.leader >= 0))
            .await;
        d.partitions.iter().find(|p| p.partition == partition).unwrap().leader as u32
    }

    /// Every stored batch of a partition in node `i`'s data directory, as bytes. Only on
    /// a stopped node (opening the log checks and may repair it).
    pub fn stored_batches(&mut self, i: usize, topic: &str, partition: u32) -> Vec<Bytes> {
        assert!(!self.running(i), "read a replica's log only while its broker is stopped");
        read_log(&self.nodes[i].data.path().join("topics").join(topic).join(partition.to_string()))
    }

    /// Node `i`'s log (stderr).
    pub fn log(&self, i: usize) -> String {
        self.nodes[i].log()
    }
}

/// Every batch of the partition log in `dir`.
pub fn read_log(dir: &Path) -> Vec<Bytes> {
    use qwire::broker::log::{LogConfig, PartitionLog};
    let (log, _) = PartitionLog::open(dir, LogConfig::default()).expect("open a replica's log");
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.end_offset() {
        let data = log.read(offset, 1 << 20).expect("read");
        for b in qwire::protocol::RecordBatch::split_all(data).expect("whole batches") {
            offset = b.header().last_offset() + 1;
            out.push(b.as_bytes().clone());
        }
    }
    out
}

impl Node {
    fn log(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("stderr.log")).unwrap_or_default()
    }

    fn try_start(&mut self, url: &str, certs: &PathBuf, extra: &[String]) -> Result<Child, String> {
        let bin = env!("CARGO_BIN_EXE_qwire");
        let stderr =
            std::fs::OpenOptions::new().create(true).append(true).open(self.logs.path().join("stderr.log")).unwrap();
        let mut child = Command::new(bin)
            .arg("broker")
            .args(["--broker-id", &self.id.to_string(), "--metadata", url])
            .args(["--listen", &self.addr.to_string()])
            .arg("--data-dir")
            .arg(self.data.path())
            .arg("--certs")
            .arg(certs)
            .args(["--session-ttl-ms", &TTL_MS.to_string(), "--replica-lag-max-ms", "4000"])
            .args(self.advertise.iter().flat_map(|a| ["--advertise".to_string(), a.to_string()]))
            .args(extra)
            .env("RUST_LOG", "info,quinn=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .map_err(|e| format!("spawn {bin}: {e}"))?;
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(line) if line.contains("qwire broker listening on") => return Ok(child),
                Ok(line) if line.starts_with("qwire admin listening on ") => {
                    // "qwire admin listening on http://ADDR (...)".
                    let url = line["qwire admin listening on ".len()..].split(' ').next().unwrap_or("");
                    self.admin = url.split("://").nth(1).and_then(|a| a.parse().ok());
                }
                Ok(_) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Err(format!("broker exited with {status}"));
                    }
                    if Instant::now() > deadline {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err("no 'listening' line within 30 s".into());
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().map_err(|e| e.to_string())?;
                    return Err(format!("broker exited with {status}"));
                }
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// The two relays that can cut one node off: its advertised UDP path and its etcd path.
pub struct Cut {
    pub udp: super::relay::Relay,
    pub tcp: TcpRelay,
}

impl Cut {
    /// Cuts (or heals) the node's paths to the other brokers, producers and etcd.
    pub fn set(&self, cut: bool) {
        self.udp.cut(cut);
        self.tcp.cut(cut);
    }
}

/// A TCP relay (etcd's gRPC connections) that can be cut: existing connections are
/// closed and new ones refused until healed.
pub struct TcpRelay {
    pub addr: SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl TcpRelay {
    pub async fn start(upstream: SocketAddr) -> TcpRelay {
        use std::sync::atomic::Ordering::SeqCst;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> = Default::default();
        let (c2, k2) = (cut.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                if c2.load(SeqCst) {
                    continue;
                }
                let task = tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
                k2.lock().unwrap().push(task.abort_handle());
            }
        });
        TcpRelay { addr, cut, conns, accept }
    }

    /// Cuts (closing every connection) or heals.
    pub fn cut(&self, on: bool) {
        self.cut.store(on, std::sync::atomic::Ordering::SeqCst);
        if on {
            for c in self.conns.lock().unwrap().drain(..) {
                c.abort();
            }
        }
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.accept.abort();
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}
