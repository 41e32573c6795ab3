//! The producer engine against a real broker over QUIC + mTLS.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use qwire::producer::{ErrorKind, PartitionStrategy, Persistence, ProducerRecord};
use qwire::protocol::{Acks, Compression, ErrorCode};

fn seq_of(v: &str) -> usize {
    v.rsplit('-').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn records_land_in_order_per_partition_with_contiguous_offsets() {
    let b = TestBroker::start().await;
    let mut admin = b.client("alice").await;
    admin.create_topic("orders", 4).await.unwrap();
    let p = producer(&b, "alice").linger(Duration::from_millis(2)).build().unwrap();
    let mut futures = Vec::new();
    for i in 0..2000 {
        let r = ProducerRecord::new("orders", format!("v-{i}")).key(format!("k{}", i % 37));
        futures.push(p.enqueue(r).await.unwrap());
    }
    let mut per_partition: HashMap<u32, Vec<i64>> = HashMap::new();
    for f in futures {
        let md = f.await.unwrap();
        per_partition.entry(md.partition).or_default().push(md.offset.unwrap());
    }
    assert_eq!(per_partition.len(), 4, "37 keys spread over 4 partitions");
    for (part, offsets) in &per_partition {
        assert_eq!(offsets, &(0..offsets.len() as i64).collect::<Vec<_>>(), "partition {part}");
        let stored = admin.fetch_all("orders", *part, 0).await.unwrap();
        assert_eq!(stored.len(), offsets.len());
        let seq: Vec<usize> = values(&stored).iter().map(|v| seq_of(v)).collect();
        assert!(seq.windows(2).all(|w| w[0] < w[1]), "partition {part} out of order");
    }
    let m = p.metrics();
    assert_eq!(m.records_sent, 2000);
    assert!(m.avg_records_per_batch > 1.0, "records were batched: {m:?}");
    assert_eq!(m.record_latency.count, 2000);
    p.close(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn a_full_buffer_makes_send_wait_then_hands_the_record_back() {
    let mut b = TestBroker::start().await;
    b.client("alice").await.create_topic("slow", 1).await.unwrap();
    let p = producer(&b, "alice")
        .buffer_memory(8 * 1024)
        .batch_size(1024)
        .max_record_size(1024)
        .max_block(Duration::from_millis(300))
        .build()
        .unwrap();
    assert_eq!(p.partitions_for("slow").await.unwrap(), 1);
    // Nothing can drain: the broker is gone.
    b.stop().await;
    let mut pending = Vec::new();
    let err = loop {
        match p.try_send(ProducerRecord::new("slow", vec![7u8; 500])) {
            Ok(f) => pending.push(f),
            Err(e) => break e,
        }
        assert!(pending.len() < 100, "buffer memory never filled");
    };
    assert_eq!(err.error.kind(), ErrorKind::BufferFull);
    assert_eq!(err.record.value.as_deref(), Some(&[7u8; 500][..]), "the record is handed back");
    let started = Instant::now();
    let err = p.enqueue(ProducerRecord::new("slow", vec![8u8; 500]).key("k")).await.unwrap_err();
    let waited = started.elapsed();
    assert_eq!(err.error.kind(), ErrorKind::BufferFull);
    assert_eq!(err.error.persistence(), Persistence::NotPersisted);
    assert_eq!(err.record.key.as_deref(), Some(&b"k"[..]));
    assert!(waited >= Duration::from_millis(250), "send waited for max_block, not {waited:?}");
    assert_eq!(p.close(Duration::from_millis(50)).await.unwrap_err().kind(), ErrorKind::Closed);
    for f in pending {
        let e = f.await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
    }
}

#[tokio::test]
async fn flush_cuts_linger_short() {
    let b = TestBroker::start().await;
    // An hour of linger: without flush nothing would go out during the test.
    let p = producer(&b, "alice")
        .linger(Duration::from_secs(3600))
        .delivery_timeout(Duration::from_secs(7200))
        .build()
        .unwrap();
    let mut f = p.enqueue(ProducerRecord::new("lazy", "x")).await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), p.flush()).await.expect("flush did not wait for linger").unwrap();
    // When flush returns, the record it covered already has its outcome.
    let md = tokio::time::timeout(Duration::ZERO, &mut f).await.expect("resolved before flush returned").unwrap();
    assert_eq!(md.offset, Some(0));
}

#[tokio::test]
async fn close_fails_what_cannot_be_delivered_with_a_clear_error() {
    let mut b = TestBroker::start().await;
    let p = producer(&b, "alice").build().unwrap();
    p.send(ProducerRecord::new("c", "first")).await.unwrap();
    b.stop().await;
    let pending: Vec<_> = futures_of(&p, "c", 5).await;
    assert_eq!(p.close(Duration::from_millis(200)).await.unwrap_err().kind(), ErrorKind::Closed);
    let mut failed = Vec::new();
    for f in pending {
        let e = f.await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Closed);
        assert!(e.to_string().contains("closed before the record was delivered"), "{e}");
        failed.push(e.persistence());
    }
    // What each status claims is checked against the log.
    b.restart_broker().await;
    let stored = values(&b.client("alice").await.fetch_all("c", 0, 0).await.unwrap());
    assert_eq!(stored[0], "first");
    for (i, status) in failed.iter().enumerate() {
        let here = stored.contains(&format!("r-{i}"));
        match status {
            Persistence::NotPersisted => assert!(!here, "r-{i} said not persisted but is stored"),
            Persistence::PossiblyPersisted => {}
            Persistence::Persisted => assert!(here, "r-{i} said persisted but is absent"),
        }
    }
    // After close, sends are refused with the record handed back.
    let e = p.enqueue(ProducerRecord::new("c", "late")).await.unwrap_err();
    assert_eq!(e.error.kind(), ErrorKind::Closed);
    assert_eq!(e.record.value.as_deref(), Some(&b"late"[..]));
}

async fn futures_of(p: &qwire::producer::Producer, topic: &str, n: usize) -> Vec<qwire::producer::DeliveryFuture> {
    let mut v = Vec::new();
    for i in 0..n {
        v.push(p.enqueue(ProducerRecord::new(topic, format!("r-{i}"))).await.unwrap());
    }
    v
}

#[tokio::test]
async fn purge_fails_queued_records_immediately() {
    let b = TestBroker::start().await;
    let p = producer(&b, "alice").linger(Duration::from_secs(30)).build().unwrap();
    assert_eq!(p.partitions_for("p").await.unwrap(), 1);
    let pending = futures_of(&p, "p", 10).await;
    assert_eq!(p.purge().await, 10);
    for f in pending {
        let e = f.await.unwrap_err();
        assert_eq!((e.kind(), e.persistence()), (ErrorKind::Closed, Persistence::NotPersisted));
    }
    // The producer keeps working after a purge.
    let f = p.enqueue(ProducerRecord::new("p", "after")).await.unwrap();
    p.flush().await.unwrap();
    assert_eq!(f.await.unwrap().offset, Some(0));
}

#[tokio::test]
async fn partitioners_spread_and_stick_as_documented() {
    let b = TestBroker::start().await;
    b.client("alice").await.create_topic("parts", 6).await.unwrap();
    // Key hash: a key always lands on the same partition; keys spread over all six.
    let p = producer(&b, "alice").partitioner(PartitionStrategy::KeyHash).linger(Duration::ZERO).build().unwrap();
    let mut by_key: HashMap<String, u32> = HashMap::new();
    for i in 0..600 {
        let key = format!("user-{}", i % 60);
        let md = p.send(ProducerRecord::new("parts", "v").key(key.clone())).await.unwrap();
        assert_eq!(*by_key.entry(key).or_insert(md.partition), md.partition);
        assert_eq!(
            md.partition,
            qwire::producer::partitioner::kafka_key_partition(format!("user-{}", i % 60).as_bytes(), 6)
        );
    }
    let used: std::collections::HashSet<_> = by_key.values().collect();
    assert_eq!(used.len(), 6);
    let e = p.enqueue(ProducerRecord::new("parts", "no key")).await.unwrap_err();
    assert_eq!(e.error.kind(), ErrorKind::InvalidRecord);
    // Round robin: even spread.
    let p = producer(&b, "alice").partitioner(PartitionStrategy::RoundRobin).linger(Duration::ZERO).build().unwrap();
    let mut counts = [0usize; 6];
    for _ in 0..600 {
        counts[p.send(ProducerRecord::new("parts", "v")).await.unwrap().partition as usize] += 1;
    }
    assert_eq!(counts, [100; 6]);
    // Explicit partition wins; an out-of-range one is refused with the record back.
    let md = p.send(ProducerRecord::new("parts", "v").partition(4)).await.unwrap();
    assert_eq!(md.partition, 4);
    let e = p.enqueue(ProducerRecord::new("parts", "v").partition(9)).await.unwrap_err();
    assert!(e.to_string().contains("partition 9 does not exist"), "{e}");
}

#[tokio::test]
async fn every_codec_round_trips_through_the_producer_and_fetch() {
    let b = TestBroker::start().await;
    let mut c = b.client("alice").await;
    for codec in Compression::ALL {
        let topic = format!("z-{codec}");
        let p = producer(&b, "alice").compression(codec).linger(Duration::from_millis(20)).build().unwrap();
        let text = "the quick brown fox jumps over the lazy dog ".repeat(8);
        let futures: Vec<_> = {
            let mut v = Vec::new();
            for i in 0..200 {
                let r = ProducerRecord::new(topic.as_str(), format!("{text}-{i}")).header("codec", codec.name());
                v.push(p.enqueue(r).await.unwrap());
            }
            v
        };
        for f in futures {
            f.await.unwrap();
        }
        let got = c.fetch_all(&topic, 0, 0).await.unwrap();
        assert_eq!(got.len(), 200, "{codec}");
        assert_eq!(seq_of(&values(&got)[199]), 199);
        assert_eq!(got[0].headers[0].value.as_deref(), Some(codec.name().as_bytes()));
        if codec != Compression::None {
            assert!(
                p.metrics().compression_ratio > 2.0,
                "{codec} compressed text: {:?}",
                p.metrics().compression_ratio
            );
        }
    }
}

#[tokio::test]
async fn acks_none_returns_without_an_offset_and_the_records_arrive() {
    let b = TestBroker::start().await;
    let p = producer(&b, "alice").acks(Acks::None).idempotence(false).build().unwrap();
    for i in 0..50 {
        let md = p.send(ProducerRecord::new("fire", format!("f-{i}"))).await.unwrap();
        assert_eq!(md.offset, None);
    }
    p.flush().await.unwrap();
    let mut c = b.client("alice").await;
    // acks=none: nothing confirms arrival, so poll until the broker has all of them.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = c.fetch_all("fire", 0, 0).await.map(|v| v.len()).unwrap_or(0);
        if n == 50 || Instant::now() > deadline {
            assert_eq!(n, 50);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_denied_topic_and_a_refused_certificate_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl.toml");
    std::fs::write(
        &acl,
        "[[allow]]\nprincipal = \"alice\"\ntopics = [\"mine\"]\npermissions = [\"write\", \"read\"]\n",
    )
    .unwrap();
    let b = TestBroker::start_with(|c| c.acl_file = Some(acl.clone())).await;
    let p = producer(&b, "alice").build().unwrap();
    p.send(ProducerRecord::new("mine", "ok")).await.unwrap();
    let e = p.send(ProducerRecord::new("theirs", "no")).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::AuthorizationFailed), "{e}");
    assert!(e.to_string().contains("not authorized for topic 'theirs'"), "{e}");
    assert!(!e.is_retriable());

    let bad = producer(&b, "mallory").build().unwrap();
    let e = bad.send(ProducerRecord::new("mine", "x")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Tls, "{e}");
    assert!(e.to_string().contains("not signed by a CA the broker trusts"), "{e}");
}

#[tokio::test]
async fn callbacks_fire_exactly_once_per_record() {
    let b = TestBroker::start().await;
    let p = producer(&b, "alice").build().unwrap();
    let fired = Arc::new(AtomicUsize::new(0));
    let offsets = Arc::new(std::sync::Mutex::new(Vec::new()));
    for i in 0..300 {
        let (fired, offsets) = (fired.clone(), offsets.clone());
        p.send_with_callback(ProducerRecord::new("cb", format!("c-{i}")), move |r| {
            fired.fetch_add(1, Ordering::SeqCst);
            offsets.lock().unwrap().push(r.unwrap().offset.unwrap());
        })
        .await
        .unwrap();
    }
    p.flush().await.unwrap();
    assert_eq!(fired.load(Ordering::SeqCst), 300);
    let mut o = offsets.lock().unwrap().clone();
    o.sort();
    assert_eq!(o, (0..300).collect::<Vec<i64>>());
}

#[tokio::test]
async fn batch_send_reports_each_record_in_order() {
    let b = TestBroker::start().await;
    let p = producer(&b, "alice").max_record_size(1024).build().unwrap();
    let mut records: Vec<_> = (0..100).map(|i| ProducerRecord::new("bulk", format!("b-{i}"))).collect();
    records.insert(50, ProducerRecord::new("bulk", vec![0u8; 4096]));
    let results = p.send_batch(records).await.await;
    assert_eq!(results.len(), 101);
    assert_eq!(results[50].as_ref().unwrap_err().kind(), ErrorKind::RecordTooLarge);
    let offsets: Vec<i64> = results.iter().filter_map(|r| r.as_ref().ok()).map(|m| m.offset.unwrap()).collect();
    assert_eq!(offsets, (0..100).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_wrappers_work_from_plain_threads() {
    let b = TestBroker::start().await;
    let p = producer(&b, "alice").build().unwrap();
    let p2 = p.clone();
    let md = tokio::task::spawn_blocking(move || {
        let md = p2.send_blocking(ProducerRecord::new("sync", "from a thread")).unwrap();
        p2.flush_blocking().unwrap();
        md
    })
    .await
    .unwrap();
    assert_eq!(md.offset, Some(0));
}

#[tokio::test]
async fn invalid_configurations_are_refused_at_build() {
    let b = TestBroker::start().await;
    let e = producer(&b, "alice").max_in_flight(6).build().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(e.to_string().contains("max_in_flight 6 exceeds 5"), "{e}");
    let e = producer(&b, "alice").acks(Acks::None).build().unwrap_err();
    assert!(e.to_string().contains("idempotence needs acknowledgements"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_breaker_fails_fast_then_half_opens_and_recovers() {
    let mut b = TestBroker::start().await;
    let fast =
        qwire::producer::Backoff { base: Duration::from_millis(10), max: Duration::from_millis(20), jitter: 0.0 };
    let p = producer(&b, "alice")
        .circuit_breaker_threshold(2)
        .circuit_breaker_recovery(Duration::from_millis(500))
        .reconnect_backoff(fast)
        .connect_timeout(Duration::from_millis(200))
        .linger(Duration::ZERO)
        .build()
        .unwrap();
    p.send(ProducerRecord::new("cb", "before")).await.unwrap();
    b.stop().await;
    // While the broker is down the breaker opens and waiting records fail fast: with
    // CircuitOpen, not DeliveryTimeout (the default 120 s delivery timeout is in force).
    let e = p.send(ProducerRecord::new("cb", "during")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::CircuitOpen, "{e}");
    assert!(e.to_string().contains("circuit breaker open"), "{e}");
    // The broker comes back; after the recovery time a trial connection closes the breaker.
    b.restart_broker().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match p.send(ProducerRecord::new("cb", "after")).await {
            Ok(md) => {
                assert!(md.offset.is_some());
                break;
            }
            Err(e) if Instant::now() < deadline => {
                assert_eq!(e.kind(), ErrorKind::CircuitOpen, "{e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("never recovered: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_lost_producer_state_triggers_an_epoch_bump_not_a_failure() {
    let mut b = TestBroker::start().await;
    let p = producer(&b, "alice").linger(Duration::ZERO).build().unwrap();
    for i in 0..10 {
        p.send(ProducerRecord::new("st", format!("a-{i}"))).await.unwrap();
    }
    // The broker comes back with an empty data directory: it knows nothing of this
    // producer, and the next batch (sequence 10) is answered UNKNOWN_PRODUCER_ID.
    b.stop().await;
    for e in std::fs::read_dir(b.data_dir()).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            std::fs::remove_dir_all(path).unwrap();
        } else {
            std::fs::remove_file(path).unwrap();
        }
    }
    b.restart_broker().await;
    for i in 0..10 {
        let md = p.send(ProducerRecord::new("st", format!("b-{i}"))).await.unwrap();
        assert_eq!(md.offset, Some(i));
    }
    assert!(p.metrics().epoch_bumps >= 1, "{:?}", p.metrics());
    let mut c = b.client("alice").await;
    assert_eq!(values(&c.fetch_all("st", 0, 0).await.unwrap()), (0..10).map(|i| format!("b-{i}")).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_dead_first_bootstrap_broker_does_not_capture_the_partitions() {
    let b = TestBroker::start().await;
    // A loopback port with nothing listening, listed first.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    // One failed attempt opens the dead broker's breaker: a record routed to it would fail
    // fast with CircuitOpen, so an acknowledgement proves it went to the live broker.
    let p = qwire::producer::Producer::builder()
        .bootstrap(dead.to_string())
        .bootstrap(b.addr().to_string())
        .tls(qwire::producer::TlsConfig::from_dir(b.certs.path(), "alice").unwrap())
        .connect_timeout(Duration::from_millis(300))
        .circuit_breaker_threshold(1)
        .build()
        .unwrap();
    let md =
        tokio::time::timeout(Duration::from_secs(60), p.send(ProducerRecord::new("two", "x"))).await.unwrap().unwrap();
    assert_eq!(md.offset, Some(0), "routed to the live broker");
}

#[tokio::test]
async fn dropping_the_producer_still_delivers_what_was_queued() {
    let b = TestBroker::start().await;
    let p = producer(&b, "alice").linger(Duration::from_millis(50)).build().unwrap();
    let mut pending = Vec::new();
    for i in 0..100 {
        pending.push(p.enqueue(ProducerRecord::new("dropped", format!("d-{i}"))).await.unwrap());
    }
    // No flush, no close: the driver keeps going until what was queued is delivered.
    drop(p);
    for (i, f) in pending.into_iter().enumerate() {
        assert_eq!(f.await.unwrap().offset, Some(i as i64));
    }
    let mut c = b.client("alice").await;
    assert_eq!(c.fetch_all("dropped", 0, 0).await.unwrap().len(), 100);
}
