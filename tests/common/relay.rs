//! A loopback UDP relay between QUIC clients and a broker that the test controls: it can
//! drop (a share of all datagrams, or only of the large ones), delay with jitter,
//! duplicate and reorder datagrams, cut the path entirely for a while, and rebind (give
//! every client a new source port towards the broker, as a NAT rebinding would).
//!
//! Each client address gets its own upstream socket, so the broker sees one peer per
//! client. Datagrams are forwarded in both directions with the same faults.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What the relay does to datagrams. The default forwards everything untouched.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Percentage (0–100) of datagrams dropped.
    pub drop_pct: f64,
    /// Only datagrams of at least this many bytes are dropped (0: all). With bulk data on
    /// one stream and small records on another, this puts the loss on the bulk stream.
    pub drop_min_size: usize,
    /// Fixed delay added to every datagram.
    pub delay: Duration,
    /// Random extra delay, uniform in `[0, jitter)`: datagrams may overtake each other.
    pub jitter: Duration,
    /// Percentage of datagrams sent twice.
    pub duplicate_pct: f64,
    /// Percentage of datagrams held back by `reorder_delay`, so later ones overtake them.
    pub reorder_pct: f64,
    /// How long a reordered datagram is held back.
    pub reorder_delay: Duration,
    /// Drop everything (the path is cut).
    pub cut: bool,
}

/// Counters of what the relay did.
#[derive(Debug, Default)]
pub struct RelayStats {
    pub forwarded: AtomicU64,
    pub dropped: AtomicU64,
    pub duplicated: AtomicU64,
    pub reordered: AtomicU64,
    pub rebinds: AtomicU64,
    /// The newest rebind generation whose upstream socket has received a datagram from
    /// the broker: equal to `rebinds` once the broker answers on the path made by the
    /// latest rebind (the older sockets are closed by then).
    pub replied_generation: AtomicU64,
}

impl RelayStats {
    pub fn summary(&self) -> String {
        format!(
            "forwarded {} dropped {} duplicated {} reordered {} rebinds {}",
            self.forwarded.load(Relaxed),
            self.dropped.load(Relaxed),
            self.duplicated.load(Relaxed),
            self.reordered.load(Relaxed),
            self.rebinds.load(Relaxed)
        )
    }
}

/// Sends datagrams at their due time, in due-time order (equal times keep arrival order),
/// so a constant delay never reorders anything; only jitter and `reorder_pct` do.
struct DelayLine {
    tx: mpsc::UnboundedSender<(Instant, Vec<u8>)>,
    task: JoinHandle<()>,
}

enum Out {
    /// To the broker, from this client's upstream socket.
    Broker(Arc<UdpSocket>),
    /// To a client, from the relay's front socket.
    Client(Arc<UdpSocket>, SocketAddr),
}

impl Out {
    async fn send(&self, p: &[u8]) {
        let _ = match self {
            Out::Broker(s) => s.send(p).await,
            Out::Client(s, to) => s.send_to(p, to).await,
        };
    }
}

impl DelayLine {
    fn new(out: Out) -> DelayLine {
        let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
        let task = tokio::spawn(async move {
            let mut heap: BinaryHeap<Reverse<(Instant, u64, Vec<u8>)>> = BinaryHeap::new();
            let mut seq = 0u64;
            let mut open = true;
            loop {
                let next = heap.peek().map(|Reverse((t, _, _))| *t);
                if !open && next.is_none() {
                    return;
                }
                tokio::select! {
                    m = rx.recv(), if open => match m {
                        Some((due, p)) => {
                            seq += 1;
                            heap.push(Reverse((due, seq, p)));
                        }
                        None => open = false,
                    },
                    _ = sleep_until_opt(next) => {
                        let now = Instant::now();
                        while heap.peek().is_some_and(|Reverse((t, _, _))| *t <= now) {
                            let Reverse((_, _, p)) = heap.pop().unwrap();
                            out.send(&p).await;
                        }
                    }
                }
            }
        });
        DelayLine { tx, task }
    }

    fn push(&self, delay: Duration, p: Vec<u8>) {
        let _ = self.tx.send((Instant::now() + delay, p));
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

struct Upstream {
    generation: u64,
    /// Client to broker.
    up: DelayLine,
    /// Broker to client.
    down_task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.up.task.abort();
        self.down_task.abort();
    }
}

struct Shared {
    faults: Mutex<Faults>,
    stats: RelayStats,
    generation: AtomicU64,
}

/// A running relay; stops when dropped.
pub struct Relay {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Relay {
    /// Starts a relay on 127.0.0.1 in front of `broker`.
    pub async fn start(broker: SocketAddr) -> Relay {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = front.local_addr().unwrap();
        let shared = Arc::new(Shared {
            faults: Mutex::new(Faults::default()),
            stats: RelayStats::default(),
            generation: 0.into(),
        });
        let task = tokio::spawn(front_loop(front, broker, shared.clone()));
        Relay { addr, shared, task }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the faults.
    pub fn set(&self, faults: Faults) {
        *self.shared.faults.lock().unwrap() = faults;
    }

    /// Changes the faults in place.
    pub fn update(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.shared.faults.lock().unwrap());
    }

    /// Cuts the path (`true`) or restores it.
    pub fn cut(&self, on: bool) {
        self.update(|f| f.cut = on);
    }

    /// From the next datagram on, every client reaches the broker from a new source port.
    pub fn rebind(&self) {
        self.shared.generation.fetch_add(1, Relaxed);
        self.shared.stats.rebinds.fetch_add(1, Relaxed);
    }

    pub fn stats(&self) -> &RelayStats {
        &self.shared.stats
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn front_loop(front: Arc<UdpSocket>, broker: SocketAddr, shared: Arc<Shared>) {
    // Dropping the map (when this task is aborted) stops every upstream's tasks.
    let mut upstreams: HashMap<SocketAddr, Upstream> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, client)) = front.recv_from(&mut buf).await else { continue };
        let generation = shared.generation.load(Relaxed);
        if upstreams.get(&client).is_none_or(|u| u.generation != generation) {
            let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
            socket.connect(broker).await.unwrap();
            let down = DelayLine::new(Out::Client(front.clone(), client));
            let down_task = tokio::spawn(back_loop(socket.clone(), down, shared.clone(), generation));
            let up = DelayLine::new(Out::Broker(socket));
            upstreams.insert(client, Upstream { generation, up, down_task });
        }
        for delay in plan(&shared, n) {
            upstreams[&client].up.push(delay, buf[..n].to_vec());
        }
    }
}

async fn back_loop(upstream: Arc<UdpSocket>, down: DelayLine, shared: Arc<Shared>, generation: u64) {
    // Stops the delay line's task when this one is aborted.
    struct Stop(JoinHandle<()>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _stop = Stop(down.task);
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok(n) = upstream.recv(&mut buf).await else {
            // ICMP errors surface here (e.g. the broker is gone): keep listening.
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        };
        shared.stats.replied_generation.fetch_max(generation, Relaxed);
        for delay in plan(&shared, n) {
            let _ = down.tx.send((Instant::now() + delay, buf[..n].to_vec()));
        }
    }
}

/// Applies the faults to one datagram of `len` bytes: the delays of the copies to send
/// (none: dropped).
fn plan(shared: &Shared, len: usize) -> Vec<Duration> {
    let faults = shared.faults.lock().unwrap().clone();
    let mut rng = rand::thread_rng();
    let droppable = len >= faults.drop_min_size;
    if faults.cut || (droppable && rng.gen::<f64>() * 100.0 < faults.drop_pct) {
        shared.stats.dropped.fetch_add(1, Relaxed);
        return Vec::new();
    }
    let copies = if rng.gen::<f64>() * 100.0 < faults.duplicate_pct {
        shared.stats.duplicated.fetch_add(1, Relaxed);
        2
    } else {
        1
    };
    (0..copies)
        .map(|_| {
            let mut delay = faults.delay;
            if !faults.jitter.is_zero() {
                delay += faults.jitter.mul_f64(rng.gen::<f64>());
            }
            if rng.gen::<f64>() * 100.0 < faults.reorder_pct {
                shared.stats.reordered.fetch_add(1, Relaxed);
                delay += faults.reorder_delay;
            }
            shared.stats.forwarded.fetch_add(1, Relaxed);
            delay
        })
        .collect()
}
