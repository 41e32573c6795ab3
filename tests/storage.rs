//! The broker's storage under an injected fsync (`BrokerConfig::syncer`): a segment roll
//! never stalls the async runtime, acks=all times out while an fsync is held, and a
//! failed fsync is answered `STORAGE_ERROR` and retried into the log exactly once. No
//! root needed (cli/tests/faults.rs makes real disks fail, as root).

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::*;
use qwire::broker::disk::{SyncKind, Syncer};
use qwire::client::{Client, ConnectConfig};
use qwire::producer::Backoff;
use qwire::protocol::frame::Produce;
use qwire::protocol::{Acks, Compression, ErrorCode, Payload, ProducerStamp};

/// Segment fsyncs that can be held (a closed gate) or failed.
#[derive(Clone, Default)]
struct Faults(Arc<FaultState>);

#[derive(Default)]
struct FaultState {
    closed: Mutex<bool>,
    opened: Condvar,
    fail_next: AtomicUsize,
    entered: AtomicUsize,
    baseline: AtomicUsize,
}

impl Faults {
    fn syncer(&self) -> Syncer {
        let f = self.0.clone();
        Syncer::with_hook(move |path, kind| {
            // Segment files only (`producer_ids.log` is the producer-id allocator's).
            let segment = path.extension().is_some_and(|e| e == "log")
                && !path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("producer_ids"));
            if kind != SyncKind::Data || !segment {
                return Ok(());
            }
            f.entered.fetch_add(1, SeqCst);
            let mut closed = f.closed.lock().unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            while *closed && Instant::now() < deadline {
                closed = f.opened.wait_timeout(closed, Duration::from_millis(100)).unwrap().0;
            }
            drop(closed);
            if f.fail_next.load(SeqCst) > 0 {
                f.fail_next.fetch_sub(1, SeqCst);
                return Err(std::io::Error::other("injected fsync failure"));
            }
            Ok(())
        })
    }

    fn close(&self) {
        *self.0.closed.lock().unwrap() = true;
        self.0.baseline.store(self.0.entered.load(SeqCst), SeqCst);
    }

    fn fail_next(&self, n: usize) {
        self.0.fail_next.store(n, SeqCst);
    }

    fn open(&self) {
        *self.0.closed.lock().unwrap() = false;
        self.0.opened.notify_all();
    }

    /// Waits (up to 30 s) until a segment fsync has started since the gate closed.
    fn wait_entered(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.0.entered.load(SeqCst) <= self.0.baseline.load(SeqCst) {
            assert!(Instant::now() < deadline, "no segment fsync started");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// A broker alone on a single-threaded runtime on its own thread, as `qwire bench` and a
/// small deployment run it: anything that blocks that thread stalls every connection.
struct BrokerThread {
    addr: std::net::SocketAddr,
    certs: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BrokerThread {
    fn start(tweak: impl FnOnce(&mut qwire::broker::BrokerConfig) + Send + 'static) -> BrokerThread {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let mut b = TestBroker::start_with(tweak).await;
                tx.send((b.addr(), b.certs.path().to_path_buf())).unwrap();
                let _ = stopped.await;
                b.stop().await;
            });
        });
        let (addr, certs) = rx.recv().unwrap();
        BrokerThread { addr, certs, stop: Some(stop), thread: Some(thread) }
    }

    fn client_config(&self) -> ConnectConfig {
        ConnectConfig::from_certs_dir(self.addr, &self.certs, "alice").unwrap()
    }
}

impl Drop for BrokerThread {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn big_batch(tag: &str) -> bytes::Bytes {
    let mut b = qwire::protocol::BatchBuilder::new();
    for i in 0..4 {
        b.push(&qwire::protocol::Record {
            timestamp: 1,
            key: None,
            value: Some(bytes::Bytes::from(format!("{tag}-{i}-{}", "x".repeat(1200)))),
            headers: vec![],
        });
    }
    b.seal(Compression::None, None, ProducerStamp::NONE)
}

/// Finding 3: a segment roll's fsync ran in the request path, on the broker's runtime
/// thread: with acks=leader, every connection stalled until it returned (measured 0.4 s
/// per 256 MiB segment). Here the fsync is held: the producer that rolls and another
/// client are still answered.
#[test]
fn a_held_roll_fsync_stalls_neither_the_producer_that_rolled_nor_another_client() {
    let faults = Faults::default();
    let syncer = faults.syncer();
    let broker = BrokerThread::start(move |c| {
        c.segment_bytes = 4096;
        c.syncer = syncer;
    });
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut a = Client::connect(&broker.client_config()).await.unwrap();
        let mut b = Client::connect(&broker.client_config()).await.unwrap();
        a.create_topic("rolls", 1).await.unwrap();
        b.create_topic("other", 1).await.unwrap();
        faults.close();
        // Each batch is about 5 KB: every produce after the first rolls a segment.
        let within = Duration::from_secs(10);
        for i in 0..4 {
            let r = tokio::time::timeout(within, a.produce("rolls", 0, Acks::Leader, big_batch(&format!("r{i}"))))
                .await
                .unwrap_or_else(|_| panic!("produce {i} (a roll) was not answered while the roll's fsync was held"))
                .unwrap();
            assert_eq!(r.error, ErrorCode::None, "{}", r.message);
        }
        let f = faults.clone();
        tokio::task::spawn_blocking(move || f.wait_entered()).await.unwrap();
        // The fsync is held now; another connection is served meanwhile.
        let other = b.produce("other", 0, Acks::Leader, batch("o", 2, ProducerStamp::NONE, Compression::None));
        let r = tokio::time::timeout(within, other).await.expect("another client stalled behind a roll fsync").unwrap();
        assert_eq!(r.error, ErrorCode::None);
        tokio::time::timeout(within, b.metadata(&["rolls"])).await.expect("metadata stalled").unwrap();
        faults.open();
        // Once the fsyncs are through, everything is readable.
        let got = a.fetch_all("rolls", 0, 0).await.unwrap();
        assert_eq!(got.len(), 16);
    });
}

/// Test audit: the REQUEST_TIMED_OUT branch of the acks=all wait.
#[tokio::test]
async fn an_acks_all_produce_whose_fsync_is_held_times_out_and_keeps_its_offset() {
    let faults = Faults::default();
    let syncer = faults.syncer();
    let b = TestBroker::start_with(move |c| c.syncer = syncer).await;
    let mut c = b.client("alice").await;
    c.create_topic("slow", 1).await.unwrap();
    faults.close();
    let mut s = c.open_stream().await.unwrap();
    let answer = s
        .call(Payload::Produce(Produce {
            topic: "slow".into(),
            partition: 0,
            acks: Acks::All,
            timeout_ms: 300,
            batch: batch("t", 3, ProducerStamp::NONE, Compression::None),
        }))
        .await
        .unwrap();
    let Payload::ProduceResult(r) = answer else { panic!("{answer:?}") };
    assert_eq!(r.error, ErrorCode::RequestTimedOut, "{}", r.message);
    // Appended, not known durable: the offset is kept ("may be stored").
    assert_eq!(r.base_offset, 0);
    assert!(r.message.contains("fsync"), "{}", r.message);
    faults.open();
    assert_eq!(values(&c.fetch_all("slow", 0, 0).await.unwrap()), ["t-0", "t-1", "t-2"]);
}

/// Test audit: one failed group-commit fsync under an idempotent acks=all producer: the
/// batches it covered are answered STORAGE_ERROR, the partition cuts them and takes
/// writes again, and every record lands exactly once, at the offset its ack names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_is_retried_into_the_log_exactly_once() {
    let faults = Faults::default();
    let syncer = faults.syncer();
    let b = TestBroker::start_with(move |c| c.syncer = syncer).await;
    b.client("alice").await.create_topic("flaky", 2).await.unwrap();
    faults.fail_next(1);
    let p = producer(&b, "alice")
        .retry_backoff(Backoff { base: Duration::from_millis(50), max: Duration::from_millis(300), jitter: 0.2 })
        .build()
        .unwrap();
    let mut ledger = Ledger::new("flaky", 2);
    ledger.produce(&p, 400, Duration::from_millis(500), 50).await;
    let m = p.metrics();
    let _ = p.close(Duration::from_secs(10)).await;
    let v = ledger.verify(&mut b.client("alice").await).await;
    let bm = b.handle.as_ref().unwrap().metrics();
    println!(
        "{v:?}\n  producer retries {}; broker fsync failures {} offsets cut {}",
        m.retries, bm.fsync_failures, bm.offsets_cut
    );
    v.assert_exactly_once();
    assert_eq!(v.acked, 400);
    assert_eq!(bm.fsync_failures, 1);
    assert!(m.retries > 0, "the failure was never seen by the producer");
}
