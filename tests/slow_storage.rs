//! The broker's budgets while its storage is slow: fsyncs are held per topic through
//! `BrokerConfig::syncer`, so requests pile up behind them deterministically, and the test
//! checks what the broker holds meanwhile (memory, budget charges, blocking threads) and
//! that it gives everything back. No root needed.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
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
    let frames =
        encode(&[produce(1, "a", Acks::All, minutes, one("a")), fetch, produce(3, "b", Acks::All, minutes, one("b"))]);
    send.write_all(&frames).await.unwrap();
    // The writer waits for A's fsync; behind it the fetch's (charged) answer and B's wait.
    wait_for(&b, "the three requests to be taken", |m| {
        m.batches_appended == 2 && m.fetch_requests == 1 && m.response_bytes_queued > 0
    })
    .await;
    // A becomes durable: the writer buffers A's and the fetch's answers, then must write
    // before waiting for B; the write fails (the client stopped the stream).
    gates.release("a");
    let m =
        wait_for(&b, "the charges of a stream whose client is gone to be given back", |m| m.response_bytes_queued == 0)
            .await;
    assert_eq!(m.fsyncs, 1, "B's fsync is still held: {m:?}");
    gates.release("b");
}

/// Finding 1 (regression): a produce frame's reservation from the connection's budget was
/// dropped as soon as the frame was decoded, while the batch then waited for its
/// partition's owner: with the partition busy, one connection could pin 256 streams × an
/// 8 MiB batch. Here the owner is stuck behind the fsync of an in-place cut (held), and
/// one connection pipelines 32 produces of 512 KiB on 32 streams against a 4 MiB budget:
/// the batches waiting for the owner keep their reservation, so most frames are refused
/// `RESOURCE_LIMIT`, and the bytes the broker holds stay within the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produces_waiting_for_a_busy_partition_keep_their_frame_budget() {
    let gates = Gates::default();
    let syncer = gates.syncer();
    let budget = 4u64 << 20;
    let b = TestBroker::start_with(move |c| {
        c.syncer = syncer;
        c.max_frame_size = 1 << 20;
        c.max_buffered_bytes_per_connection = budget;
    })
    .await;
    let mut c = b.client("alice").await;
    c.create_topic("c", 1).await.unwrap();
    // A failed group-commit fsync: the flusher then cuts the log back under the
    // partition's lock, and the cut's own fsync is held. Every append waits behind it.
    gates.hold("c");
    gates.fail_next("c", 1);
    let r = c.produce("c", 0, Acks::All, batch("lost", 1, ProducerStamp::NONE, Compression::None)).await.unwrap();
    assert_eq!(r.error, qwire::protocol::ErrorCode::StorageError, "{}", r.message);
    let deadline = Instant::now() + Duration::from_secs(30);
    while gates.entered("c") == 0 {
        assert!(Instant::now() < deadline, "the cut's fsync never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let streams = 32;
    let big = batch(&"x".repeat(512 << 10), 1, ProducerStamp::NONE, Compression::None);
    let refused = Arc::new(AtomicUsize::new(0));
    let before = b.handle.as_ref().unwrap().metrics().produce_requests;
    let settled = |m: &MetricsSnapshot| (m.produce_requests - before) as usize + refused.load(SeqCst);
    let mut held = Vec::new();
    // One stream after the other, each frame taken or refused before the next is sent.
    for i in 0..streams {
        let (mut send, mut recv) = c.connection().quinn().open_bi().await.unwrap();
        send.write_all(&encode(&[produce(i, "c", Acks::Leader, 0, big.clone())])).await.unwrap();
        let refused = refused.clone();
        held.push(tokio::spawn(async move {
            let mut buf = BytesMut::new();
            let answer = loop {
                if let Some(f) = Frame::decode(&mut buf, 1 << 24).unwrap() {
                    break f;
                }
                match recv.read_chunk(1 << 16, true).await.unwrap() {
                    Some(chunk) => buf.extend_from_slice(&chunk.bytes),
                    None => panic!("stream ended without an answer"),
                }
            };
            if let Payload::Error(e) = &answer.payload {
                assert_eq!(e.code, qwire::protocol::ErrorCode::ResourceLimit, "{}", e.message);
                refused.fetch_add(1, SeqCst);
            }
            drop(send);
            answer
        }));
        wait_for(&b, "the frame to be refused or taken", |m| settled(m) == i as usize + 1).await;
    }
    let m = b.handle.as_ref().unwrap().metrics();
    let taken = m.produce_requests - before;
    println!(
        "{streams} produces of 512 KiB against a busy partition: {taken} taken, the rest refused; \
         at most {} KiB of large frames held (budget {} KiB)",
        m.request_bytes_held_peak >> 10,
        budget >> 10
    );
    assert!(taken >= 1 && taken * (512 << 10) <= budget, "{taken} batches of 512 KiB held against a 4 MiB budget");
    assert!(m.request_bytes_held > 0 && m.request_bytes_held_peak <= budget, "{m:?}");
    // Once the owner is free again, the waiting batches are appended and their
    // reservations given back.
    gates.release("c");
    for h in held {
        let answer = h.await.unwrap();
        assert!(matches!(answer.payload, Payload::ProduceResult(_) | Payload::Error(_)), "{:?}", answer.payload.kind());
    }
    wait_for(&b, "every reservation to be given back", |m| m.request_bytes_held == 0).await;
}

/// Finding 2 (fetch): a fetch was charged only its `max_bytes`, which may be 1, although
/// each one holds a read (and a blocking thread) and its answer may be a whole batch. Now
/// a fetch is charged at least 64 KiB while it is served. Here 64 fetches with
/// `max_bytes` 1 wait on one connection for an offset whose fsync is held: against a 1 MiB
/// response budget, at most 16 are served at once and the rest wait for the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_is_charged_at_least_a_floor_whatever_max_bytes_it_asks() {
    let gates = Gates::default();
    let syncer = gates.syncer();
    let budget = 1u64 << 20;
    let b = TestBroker::start_with(move |c| {
        c.syncer = syncer;
        c.max_response_bytes_per_connection = budget;
    })
    .await;
    let mut c = b.client("alice").await;
    c.create_topic("t", 1).await.unwrap();
    gates.hold("t");
    let r = c.produce("t", 0, Acks::Leader, batch("tail", 1, ProducerStamp::NONE, Compression::None)).await.unwrap();
    assert_eq!(r.error, qwire::protocol::ErrorCode::None, "{}", r.message);
    // Stored, not durable: each fetch at offset 0 waits for the (held) group commit.
    let fetch = Frame {
        correlation_id: 1,
        payload: Payload::Fetch(Fetch { topic: "t".into(), partition: 0, offset: 0, max_bytes: 1 }),
    };
    let mut answers = Vec::new();
    for _ in 0..64 {
        let (mut send, mut recv) = c.connection().quinn().open_bi().await.unwrap();
        send.write_all(&encode(std::slice::from_ref(&fetch))).await.unwrap();
        // Finished: the broker finishes its side once the one answer is written.
        send.finish().unwrap();
        answers.push(tokio::spawn(async move { recv.read_to_end(1 << 20).await.unwrap().len() }));
    }
    let m = wait_for(&b, "a fetch to wait for the response budget", |m| m.response_budget_waits >= 1).await;
    assert!(m.response_bytes_queued_peak <= budget, "{m:?}");
    gates.release("t");
    for a in answers {
        assert!(a.await.unwrap() > 0);
    }
    let m = wait_for(&b, "every charge to be given back", |m| m.response_bytes_queued == 0).await;
    println!(
        "64 fetches of max_bytes 1 held at the tail: {} waited for the 1 MiB budget, at most {} KiB charged",
        m.response_budget_waits,
        m.response_bytes_queued_peak >> 10
    );
}
