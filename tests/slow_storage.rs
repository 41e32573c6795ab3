//! The broker's budgets while its storage is slow: fsyncs are held per topic through
//! `BrokerConfig::syncer`, so requests pile up behind them deterministically, and the test
//! checks what the broker holds meanwhile (memory, budget charges, blocking threads) and
//! that it gives everything back. No root needed.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use qwire::broker::disk::{SyncKind, Syncer};
use qwire::broker::metrics::MetricsSnapshot;
use qwire::protocol::frame::{Fetch, Produce};
use qwire::protocol::{Acks, Compression, Frame, Payload, ProducerStamp};

/// fsyncs held or failed by key: the topic of a segment file, or `producer_ids` for the
/// producer-id files.
#[derive(Clone, Default)]
struct Gates(Arc<GateState>);

#[derive(Default)]
struct GateState {
    held: Mutex<HashSet<String>>,
    opened: Condvar,
    fail_next: Mutex<HashMap<String, usize>>,
    entered: Mutex<HashMap<String, usize>>,
}

fn key_of(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    if name.starts_with("producer_ids") {
        return Some("producer_ids".into());
    }
    if path.extension()? != "log" {
        return None;
    }
    // DATA/topics/TOPIC/PARTITION/BASE.log
    Some(path.parent()?.parent()?.file_name()?.to_str()?.to_owned())
}

impl Gates {
    fn syncer(&self) -> Syncer {
        let g = self.0.clone();
        Syncer::with_hook(move |path, kind| {
            let Some(key) = key_of(path) else { return Ok(()) };
            if kind == SyncKind::Dir {
                return Ok(());
            }
            if let Some(n) = g.fail_next.lock().unwrap().get_mut(&key).filter(|n| **n > 0) {
                *n -= 1;
                return Err(std::io::Error::other("injected fsync failure"));
            }
            *g.entered.lock().unwrap().entry(key.clone()).or_default() += 1;
            let mut held = g.held.lock().unwrap();
            // Never hang a test for good.
            let deadline = Instant::now() + Duration::from_secs(120);
            while held.contains(&key) && Instant::now() < deadline {
                held = g.opened.wait_timeout(held, Duration::from_millis(100)).unwrap().0;
            }
            Ok(())
        })
    }

    fn hold(&self, key: &str) {
        self.0.held.lock().unwrap().insert(key.into());
    }

    fn release(&self, key: &str) {
        self.0.held.lock().unwrap().remove(key);
        self.0.opened.notify_all();
    }

    fn fail_next(&self, key: &str, n: usize) {
        self.0.fail_next.lock().unwrap().insert(key.into(), n);
    }

    fn entered(&self, key: &str) -> usize {
        self.0.entered.lock().unwrap().get(key).copied().unwrap_or(0)
    }
}

impl Drop for Gates {
    fn drop(&mut self) {
        // The last handle (the test's) releases everything, so no broker thread stays held.
        if Arc::strong_count(&self.0) == 2 {
            self.0.held.lock().unwrap().clear();
            self.0.opened.notify_all();
        }
    }
}

/// Polls `cond` on the broker's metrics until it holds (60 s at most).
async fn wait_for(b: &TestBroker, what: &str, cond: impl Fn(&MetricsSnapshot) -> bool) -> MetricsSnapshot {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = b.handle.as_ref().unwrap().metrics();
        if cond(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {m:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn encode(frames: &[Frame]) -> BytesMut {
    let mut out = BytesMut::new();
    for f in frames {
        f.encode(&mut out);
    }
    out
}

fn produce(corr: u32, topic: &str, acks: Acks, timeout_ms: u32, batch: bytes::Bytes) -> Frame {
    Frame {
        correlation_id: corr,
        payload: Payload::Produce(Produce { topic: topic.into(), partition: 0, acks, timeout_ms, batch }),
    }
}

/// Finding 7 (writer): after a write failed because the client was gone, the stream's
/// writer still waited for the next acks=all batch to become durable (up to the produce
/// timeout) while holding the budget charges of the responses it had buffered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_whose_client_is_gone_gives_its_charges_back_without_waiting_for_an_fsync() {
    let gates = Gates::default();
    let syncer = gates.syncer();
    let b = TestBroker::start_with(move |c| c.syncer = syncer).await;
    let mut c = b.client("alice").await;
    for t in ["a", "b", "e"] {
        c.create_topic(t, 1).await.unwrap();
    }
    gates.hold("a");
    gates.hold("b");
    let (mut send, mut recv) = c.connection().quinn().open_bi().await.unwrap();
    // The client will read nothing on this stream: the broker's first write fails.
    recv.stop(0u32.into()).unwrap();
    let minutes = 120_000;
    let one = |tag| batch(tag, 1, ProducerStamp::NONE, Compression::None);
    let fetch = Frame {
        correlation_id: 2,
        payload: Payload::Fetch(Fetch { topic: "e".into(), partition: 0, offset: 0, max_bytes: 1 << 20 }),
    };
    let frames = encode(&[produce(1, "a", Acks::All, minutes, one("a")), fetch, produce(3, "b", Acks::All, minutes, one("b"))]);
    send.write_all(&frames).await.unwrap();
    // The writer waits for A's fsync; behind it the fetch's (charged) answer and B's wait.
    wait_for(&b, "the three requests to be taken", |m| {
        m.batches_appended == 2 && m.fetch_requests == 1 && m.response_bytes_queued > 0
    })
    .await;
    // A becomes durable: the writer buffers A's and the fetch's answers, then must write
    // before waiting for B; the write fails (the client stopped the stream).
    gates.release("a");
    let m = wait_for(&b, "the charges of a stream whose client is gone to be given back", |m| {
        m.response_bytes_queued == 0
    })
    .await;
    assert_eq!(m.fsyncs, 1, "B's fsync is still held: {m:?}");
    gates.release("b");
}
