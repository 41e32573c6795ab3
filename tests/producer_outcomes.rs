//! Every future resolves and every status tells the truth, against a real broker: user code
//! that panics, a close racing a sender that waits for buffer memory, a fenced producer, a
//! refused certificate that is rotated, delivery timeouts, and the transport settings
//! (`connections_per_broker`, `streams_per_connection`) and partitioners driven through
//! the producer.
//!
//! Waits are deadlines polled generously: nothing here asserts how long something took.

mod common;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use qwire::producer::partitioner::{kafka_key_partition, PartitionerError};
use qwire::producer::{Backoff, ErrorKind, PartitionStrategy, Partitioner, Persistence, ProducerRecord, TlsConfig};
use qwire::protocol::{Acks, Compression, RecordBatch};

/// Fails the test if `f` does not finish within `secs` seconds (a hang, not slowness).
async fn within<T>(secs: u64, what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f).await.unwrap_or_else(|_| panic!("{what}: no answer in {secs} s"))
}

fn fast() -> Backoff {
    Backoff { base: Duration::from_millis(20), max: Duration::from_millis(100), jitter: 0.2 }
}

#[tokio::test]
async fn a_sender_waiting_for_buffer_memory_when_close_runs_gets_an_answer() {
    let mut b = TestBroker::start().await;
    b.client("alice").await.create_topic("full", 1).await.unwrap();
    let p = producer(&b, "alice")
        .buffer_memory(8 * 1024)
        .batch_size(1024)
        .max_record_size(1024)
        .max_block(Duration::from_secs(60))
        .build()
        .unwrap();
    assert_eq!(p.partitions_for("full").await.unwrap(), 1);
    b.stop().await;
    let mut pending = Vec::new();
    while let Ok(f) = p.try_send(ProducerRecord::new("full", vec![1u8; 500])) {
        pending.push(f);
        assert!(pending.len() < 100, "buffer memory never filled");
    }
    // This sender waits for memory; close then fails the queued records, which frees it.
    let waiter = tokio::spawn({
        let p = p.clone();
        async move {
            match p.enqueue(ProducerRecord::new("full", vec![2u8; 500])).await {
                Ok(f) => f.await.map(|_| ()),
                Err(e) => Err(e.error),
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let closed = p.close(Duration::from_millis(50)).await;
    let r = within(30, "the waiting sender", waiter).await.unwrap();
    assert_eq!(r.unwrap_err().kind(), ErrorKind::Closed);
    for f in pending {
        assert_eq!(within(30, "a queued record", f).await.unwrap_err().kind(), ErrorKind::Closed);
    }
    let e = closed.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed, "close reports that records were not delivered: {e}");
    // Asking again gets the same answer, not a clean `Ok`.
    let again = within(30, "a second close", p.close(Duration::from_secs(1))).await.unwrap_err();
    assert_eq!(again.to_string(), e.to_string());
    assert_eq!(within(30, "a flush after close", p.flush()).await.unwrap_err().to_string(), e.to_string());
}

#[tokio::test]
async fn a_sender_waiting_for_buffer_memory_is_refused_once_close_is_called_even_if_memory_frees_up() {
    let mut b = TestBroker::start().await;
    b.client("alice").await.create_topic("gate", 1).await.unwrap();
    let p = producer(&b, "alice")
        .buffer_memory(8 * 1024)
        .batch_size(1024)
        .max_record_size(1024)
        .reconnect_backoff(fast())
        .circuit_breaker_threshold(u32::MAX)
        .build()
        .unwrap();
    assert_eq!(p.partitions_for("gate").await.unwrap(), 1);
    b.stop().await;
    let mut pending = Vec::new();
    while let Ok(f) = p.try_send(ProducerRecord::new("gate", vec![1u8; 500])) {
        pending.push(f);
        assert!(pending.len() < 100, "buffer memory never filled");
    }
    // A sender starts waiting for memory (polled once: it is queued on the semaphore).
    let waiter = p.enqueue(ProducerRecord::new("gate", vec![2u8; 500]));
    tokio::pin!(waiter);
    std::future::poll_fn(|cx| {
        assert!(Future::poll(waiter.as_mut(), cx).is_pending(), "buffer memory is full");
        std::task::Poll::Ready(())
    })
    .await;
    // close() is called while it waits, with time enough to deliver everything queued.
    let closing = tokio::spawn({
        let p = p.clone();
        async move { p.close(Duration::from_secs(120)).await }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while p.try_send(ProducerRecord::new("gate", "probe")).map_err(|e| e.error.kind()).err() != Some(ErrorKind::Closed)
    {
        assert!(Instant::now() < deadline, "close() never stopped accepting records");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The broker comes back: the queued records go out, memory frees up, and the waiting
    // sender wakes after close(): it is refused, not enqueued.
    b.restart_broker().await;
    let e = within(60, "the waiting sender", waiter).await.unwrap_err();
    assert_eq!(e.error.kind(), ErrorKind::Closed, "{}", e.error);
    for f in pending {
        within(60, "a queued record", f).await.unwrap();
    }
    within(60, "close", closing).await.unwrap().unwrap();
    let mut c = b.client("alice").await;
    let stored = c.fetch_all("gate", 0, 0).await.unwrap();
    assert!(stored.iter().all(|r| r.value.as_deref() != Some(&[2u8; 500][..])), "the refused record is stored");
}

#[tokio::test]
async fn a_panicking_callback_neither_stops_the_producer_nor_loses_other_outcomes() {
    let b = TestBroker::start().await;
    let p = producer(&b, "alice").linger(Duration::ZERO).build().unwrap();
    p.send_with_callback(ProducerRecord::new("cbp", "boom"), |_| panic!("a user callback panics")).await.unwrap();
    let md = within(30, "a send after the panic", p.send(ProducerRecord::new("cbp", "after"))).await.unwrap();
    assert_eq!(md.offset, Some(1));
    within(30, "flush", p.flush()).await.unwrap();
    within(30, "close", p.close(Duration::from_secs(5))).await.unwrap();
}

/// A partitioner whose hook panics: records go to partition 0.
#[derive(Debug)]
struct PanickyHook;

impl Partitioner for PanickyHook {
    fn partition(&self, _topic: &str, _key: Option<&[u8]>, _n: u32) -> Result<u32, PartitionerError> {
        Ok(0)
    }
    fn on_batch_sealed(&self, _topic: &str, _partition: u32, _n: u32) {
        panic!("a user partitioner hook panics");
    }
}

/// A partitioner that panics while choosing.
#[derive(Debug)]
struct PanickyChoice;

impl Partitioner for PanickyChoice {
    fn partition(&self, _topic: &str, _key: Option<&[u8]>, _n: u32) -> Result<u32, PartitionerError> {
        panic!("a user partitioner panics");
    }
}

#[tokio::test]
async fn a_panicking_partitioner_neither_stops_the_producer_nor_the_caller() {
    let b = TestBroker::start().await;
    let p = producer(&b, "alice")
        .partitioner(PartitionStrategy::Custom(Arc::new(PanickyHook)))
        .linger(Duration::ZERO)
        .build()
        .unwrap();
    for i in 0..3 {
        let md = within(30, "a send", p.send(ProducerRecord::new("hook", format!("h-{i}")))).await.unwrap();
        assert_eq!(md.offset, Some(i));
    }
    let p = producer(&b, "alice").partitioner(PartitionStrategy::Custom(Arc::new(PanickyChoice))).build().unwrap();
    let e = within(30, "a send", p.enqueue(ProducerRecord::new("hook", "x"))).await.unwrap_err();
    assert_eq!(e.error.kind(), ErrorKind::InvalidRecord, "{}", e.error);
    assert!(e.error.to_string().contains("partitioner panicked"), "{}", e.error);
    let md = within(30, "a send", p.send(ProducerRecord::new("hook", "y").partition(0))).await.unwrap();
    assert_eq!(md.offset, Some(3));
}

/// The producer id and epoch stamped on the first batch stored in `topic`-`partition`.
async fn stored_stamp(c: &mut qwire::client::Client, topic: &str, partition: u32) -> (i64, i16) {
    let f = c.fetch(topic, partition, 0, 1 << 20).await.unwrap();
    let h = *RecordBatch::split_all(f.batches).unwrap()[0].header();
    (h.producer.producer_id, h.producer.producer_epoch)
}

#[tokio::test]
async fn a_fenced_producer_fails_what_it_holds_and_refuses_new_records_at_once() {
    let b = TestBroker::start().await;
    let mut c = b.client("alice").await;
    c.create_topic("fence", 2).await.unwrap();
    let p = producer(&b, "alice").linger(Duration::ZERO).build().unwrap();
    p.send(ProducerRecord::new("fence", "mine").partition(0)).await.unwrap();
    // Another instance takes over the producer id: a new epoch, used on partition 0.
    let (id, epoch) = stored_stamp(&mut c, "fence", 0).await;
    let (id2, epoch2) = c.init_producer_id(id, epoch).await.unwrap();
    assert_eq!((id2, epoch2), (id, epoch + 1));
    let r = c.produce("fence", 0, Acks::All, batch("new", 1, stamp(id, epoch2, 0), Compression::None)).await.unwrap();
    assert_eq!(r.error, qwire::protocol::ErrorCode::None);
    // The old instance's next batch on partition 0 is refused: fenced, fatal.
    let e =
        within(30, "the fenced send", p.send(ProducerRecord::new("fence", "zombie").partition(0))).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Fenced, "{e}");
    assert!(e.is_fatal());
    assert_eq!(e.persistence(), Persistence::NotPersisted);
    // Everything after fails at once with the same error, the record handed back.
    let e = within(10, "a send after fencing", p.enqueue(ProducerRecord::new("fence", "late"))).await.unwrap_err();
    assert_eq!(e.error.kind(), ErrorKind::Fenced, "{}", e.error);
    assert_eq!(e.record.value.as_deref(), Some(&b"late"[..]));
    let e = p.try_send(ProducerRecord::new("fence", "late")).unwrap_err();
    assert_eq!(e.error.kind(), ErrorKind::Fenced);
    assert_eq!(within(10, "flush", p.flush()).await.unwrap_err().kind(), ErrorKind::Fenced);
    assert_eq!(within(10, "close", p.close(Duration::from_secs(1))).await.unwrap_err().kind(), ErrorKind::Fenced);
    let stored = values(&c.fetch_all("fence", 0, 0).await.unwrap());
    assert_eq!(stored, ["mine", "new-0"]);
}

#[tokio::test]
async fn a_zombie_cannot_write_a_partition_the_new_epoch_has_not_touched() {
    let b = TestBroker::start().await;
    let mut c = b.client("alice").await;
    c.create_topic("zombie", 2).await.unwrap();
    let p = producer(&b, "alice").linger(Duration::ZERO).build().unwrap();
    p.send(ProducerRecord::new("zombie", "mine").partition(0)).await.unwrap();
    let (id, epoch) = stored_stamp(&mut c, "zombie", 0).await;
    c.init_producer_id(id, epoch).await.unwrap();
    // Partition 1 has never seen the new epoch; the old one is still not current.
    let e =
        within(30, "the zombie send", p.send(ProducerRecord::new("zombie", "zombie").partition(1))).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Fenced, "{e}");
    assert!(c.fetch_all("zombie", 1, 0).await.unwrap().is_empty(), "nothing stored by the zombie");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_certificate_is_tried_again_after_the_recovery_time_with_the_files_read_again() {
    let b = TestBroker::start().await;
    let dir = tempfile::tempdir().unwrap();
    let copy = |from: &str, to: &str| std::fs::copy(b.certs.path().join(from), dir.path().join(to)).unwrap();
    copy("ca.crt", "ca.crt");
    copy("mallory.crt", "svc.crt");
    copy("mallory.key", "svc.key");
    let p = qwire::producer::Producer::builder()
        .bootstrap(b.addr().to_string())
        .tls(TlsConfig::from_dir(dir.path(), "svc").unwrap())
        .reconnect_backoff(fast())
        .circuit_breaker_recovery(Duration::from_millis(300))
        .max_block(Duration::from_secs(5))
        .build()
        .unwrap();
    let e = within(30, "the refused send", p.send(ProducerRecord::new("rot", "x"))).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Tls, "{e}");
    // The certificate is rotated on disk: the producer picks it up on its next attempt.
    copy("alice.crt", "svc.crt");
    copy("alice.key", "svc.key");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match within(30, "a send", p.send(ProducerRecord::new("rot", "y"))).await {
            Ok(md) => {
                assert_eq!(md.offset, Some(0));
                break;
            }
            Err(e) if Instant::now() < deadline => {
                assert!(matches!(e.kind(), ErrorKind::Tls | ErrorKind::Transport), "{e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the rotated certificate was never used: {e}"),
        }
    }
}

#[tokio::test]
async fn records_that_cannot_be_delivered_in_time_fail_with_delivery_timeout() {
    let mut b = TestBroker::start().await;
    let p = producer(&b, "alice")
        .linger(Duration::ZERO)
        .request_timeout(Duration::from_millis(500))
        .delivery_timeout(Duration::from_millis(1500))
        .reconnect_backoff(fast())
        .circuit_breaker_threshold(u32::MAX)
        .build()
        .unwrap();
    p.send(ProducerRecord::new("late", "first")).await.unwrap();
    b.stop().await;
    let e = within(30, "the late send", p.send(ProducerRecord::new("late", "second"))).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DeliveryTimeout, "{e}");
    assert!(e.is_retriable());
    assert!(e.to_string().contains("delivery timeout"), "{e}");
}

#[tokio::test]
async fn several_connections_per_broker_carry_every_partition_in_order() {
    let b = TestBroker::start().await;
    b.client("alice").await.create_topic("conns", 6).await.unwrap();
    let metrics = || b.handle.as_ref().unwrap().metrics();
    let before = metrics().connections_accepted;
    let p = producer(&b, "alice").connections_per_broker(3).linger(Duration::from_millis(1)).build().unwrap();
    let mut futures = Vec::new();
    for i in 0..600u32 {
        futures.push(p.enqueue(ProducerRecord::new("conns", format!("{i}")).partition(i % 6)).await.unwrap());
    }
    for (i, f) in futures.into_iter().enumerate() {
        let md = f.await.unwrap();
        assert_eq!(md.offset, Some(i as i64 / 6), "record {i}");
    }
    assert_eq!(metrics().connections_accepted - before, 3, "{:?}", metrics());
    p.close(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn streams_per_connection_sets_the_data_streams_opened() {
    let b = TestBroker::start().await;
    b.client("alice").await.create_topic("streams", 4).await.unwrap();
    let opened = || b.handle.as_ref().unwrap().metrics().streams_opened;
    let mut used = Vec::new();
    for streams in [1usize, 4] {
        let before = opened();
        let p = producer(&b, "alice").streams_per_connection(streams).linger(Duration::ZERO).build().unwrap();
        for part in 0..4 {
            p.send(ProducerRecord::new("streams", "s").partition(part)).await.unwrap();
        }
        p.close(Duration::from_secs(5)).await.unwrap();
        used.push(opened() - before);
    }
    // Same control requests either way; the difference is the data streams.
    assert_eq!(used[1] - used[0], 3, "streams opened with 1 and 4 data streams: {used:?}");
}

#[tokio::test]
async fn the_default_partitioner_hashes_keys_and_sticks_keyless_records_until_a_batch_is_sealed() {
    let b = TestBroker::start().await;
    b.client("alice").await.create_topic("dflt", 4).await.unwrap();
    for strategy in [PartitionStrategy::Default, PartitionStrategy::Sticky] {
        let p = producer(&b, "alice").partitioner(strategy.clone()).batch_size(2048).build().unwrap();
        let mut futures = Vec::new();
        for i in 0..400 {
            futures.push(p.enqueue(ProducerRecord::new("dflt", vec![b'x'; 100]).key(format!("k{i}"))).await.unwrap());
        }
        let keyed: Vec<u32> = {
            let mut v = Vec::new();
            for f in futures.drain(..) {
                v.push(f.await.unwrap().partition);
            }
            v
        };
        let sealed_before = p.metrics().avg_records_per_batch;
        assert!(sealed_before > 0.0);
        for i in 0..400 {
            futures.push(p.enqueue(ProducerRecord::new("dflt", vec![b'y'; 100])).await.unwrap());
            if i % 50 == 49 {
                // Let batches be sealed between bursts.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let mut keyless = Vec::new();
        for f in futures {
            keyless.push(f.await.unwrap().partition);
        }
        match strategy {
            PartitionStrategy::Default => {
                for (i, part) in keyed.iter().enumerate() {
                    assert_eq!(*part, kafka_key_partition(format!("k{i}").as_bytes(), 4), "key k{i}");
                }
            }
            _ => {
                let switches = keyed.windows(2).filter(|w| w[0] != w[1]).count();
                assert!(switches < 100, "sticky ignores keys: {switches} switches in 400 records");
            }
        }
        // Keyless: long runs on one partition, switching only after a seal, and more than
        // one partition used over many batches.
        let switches = keyless.windows(2).filter(|w| w[0] != w[1]).count();
        let distinct: std::collections::HashSet<_> = keyless.iter().collect();
        assert!(switches >= 1 && distinct.len() >= 2, "{strategy}: {keyless:?}");
        assert!(switches <= 400 / 10, "{strategy}: {switches} switches for batches of ~15 records");
        p.close(Duration::from_secs(5)).await.unwrap();
    }
}

#[tokio::test]
async fn a_principal_refused_a_producer_id_gets_its_records_failed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl.toml");
    // alice may read "r" and write nothing: no producer id for her.
    std::fs::write(
        &acl,
        "[[allow]]\nprincipal = \"alice\"\ntopics = [\"r\"]\npermissions = [\"read\"]\n\
         [[allow]]\nprincipal = \"bob\"\ntopics = [\"*\"]\npermissions = [\"admin\"]\n",
    )
    .unwrap();
    let b = TestBroker::start_with(|c| c.acl_file = Some(acl.clone())).await;
    b.client("bob").await.create_topic("r", 1).await.unwrap();
    let p = producer(&b, "alice").build().unwrap();
    let e = within(30, "a send without a producer id", p.send(ProducerRecord::new("r", "x"))).await.unwrap_err();
    assert_eq!(e.code(), Some(qwire::protocol::ErrorCode::AuthorizationFailed), "{e}");
    assert_eq!(e.persistence(), Persistence::NotPersisted);
    assert!(e.to_string().contains("refused a producer id"), "{e}");
}

#[test]
fn a_driver_dropped_before_its_first_poll_still_fails_new_records_at_once() {
    let dir = tempfile::tempdir().unwrap();
    qwire::transport::certs::generate_dev_certs(dir.path(), &["alice".into()], &[]).unwrap();
    let tls = TlsConfig::from_dir(dir.path(), "alice").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // build() spawns the driver; block_on returns before it is ever polled.
    let p = rt.block_on(async { qwire::producer::Producer::builder().bootstrap("127.0.0.1:1").tls(tls).build() });
    let p = p.unwrap();
    drop(rt); // the runtime shuts down: the driver task is dropped unpolled
    let e = p.try_send(ProducerRecord::new("t", "x")).unwrap_err();
    assert_eq!(e.error.kind(), ErrorKind::Closed, "{}", e.error);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let e = rt.block_on(async { within(30, "send", p.send(ProducerRecord::new("t", "y"))).await }).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
    let e = rt.block_on(async { within(30, "flush", p.flush()).await }).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
}
