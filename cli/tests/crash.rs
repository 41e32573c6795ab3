//! Broker crashes: the broker runs as a separate `qwire broker` process that the test
//! SIGKILLs while an idempotent acks=all producer writes records with unique ids, then
//! restarts on the same data directory and port. Each kill waits for progress (records
//! acknowledged since the last restart) and for batches in flight, so every kill hits work
//! in flight. At the end every partition is read back: everything acked is there exactly
//! once at its acked offset, in send order, and every failure's persistence status agrees
//! with the log.
//!
//! Short version in the default run (3 kills); `QWIRE_SOAK=1` runs the long one
//! (`QWIRE_SOAK_RECORDS`, `QWIRE_SOAK_KILLS` and `QWIRE_SOAK_SECS` override its size).

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use qwire::client::Client;
use qwire::producer::{Backoff, Producer};
use rand::Rng;

/// Waits (on a plain thread) until `p` has acknowledged `acked` records in all and has
/// batches in flight, or `limit` passes. Returns whether it got there.
fn wait_for_progress(p: &Producer, acked: u64, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let m = p.metrics();
        if m.records_sent >= acked && m.in_flight_batches > 0 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Segments small enough that kills also land around segment rolls.
const BROKER_CONFIG: &str = "segment_bytes = 262144\nindex_interval_bytes = 4096\n";

#[test]
fn sigkilled_broker_loses_nothing_acked_and_duplicates_nothing() {
    let (records, kills, secs) = if soak() {
        (env_or("QWIRE_SOAK_RECORDS", 400_000), env_or("QWIRE_SOAK_KILLS", 40), env_or("QWIRE_SOAK_SECS", 240))
    } else {
        (12_000, 3, 6)
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(run(records, kills, Duration::from_secs(secs as u64)));
}

async fn run(records: usize, kills: usize, over: Duration) {
    let started = Instant::now();
    let broker = Arc::new(Mutex::new(BrokerProcess::new(BROKER_CONFIG)));
    broker.lock().unwrap().start();
    let cfg = broker.lock().unwrap().client_config("alice");
    let partitions = 4;
    Client::connect(&cfg).await.unwrap().create_topic("crash", partitions).await.unwrap();

    let p = fault_tolerant(broker.lock().unwrap().producer("alice")).build().unwrap();

    // Kills spread over the sending period, each once the producer has acknowledged its
    // share since the last restart and has batches in flight.
    let killer = {
        let (broker, p) = (broker.clone(), p.clone());
        std::thread::spawn(move || {
            let mut rng = rand::thread_rng();
            let share = records as u64 / (kills as u64 + 1);
            let mut downtime = Duration::ZERO;
            let mut hit = 0;
            for k in 0..kills as u64 {
                let target = share * (k + 1);
                hit += usize::from(wait_for_progress(&p, target, Duration::from_secs(120)));
                let mut b = broker.lock().unwrap();
                b.kill();
                let down = Instant::now();
                std::thread::sleep(Duration::from_millis(rng.gen_range(0..300)));
                b.start();
                downtime += down.elapsed();
            }
            (downtime, hit)
        })
    };

    let mut ledger = Ledger::new("crash", partitions);
    ledger.produce(&p, records, over, 64).await;
    let (downtime, hit) = tokio::task::spawn_blocking(move || killer.join().unwrap()).await.unwrap();
    let m = p.metrics();
    p.close(Duration::from_secs(30)).await.unwrap();

    let mut c = Client::connect(&cfg).await.unwrap();
    let v = ledger.verify(&mut c).await;
    let starts = broker.lock().unwrap().starts;
    println!(
        "crash: {records} records over {partitions} partitions, {kills} SIGKILLs ({} starts, {downtime:?} down), \
         {:?} in all\n  {v:?}\n  producer: retries {} epoch bumps {} connects {}",
        starts,
        started.elapsed(),
        m.retries,
        m.epoch_bumps,
        m.connects
    );
    if v.failed_not_persisted + v.failed_possibly_persisted + v.failed_persisted > 0 {
        println!("  first failures: {:#?}", ledger.failures(5));
    }
    v.assert_exactly_once();
    assert_eq!(starts as usize, kills + 1);
    assert_eq!(hit, kills, "every kill came after progress, with batches in flight");
    assert_eq!(v.acked, records, "with unlimited retries and a long delivery timeout every record is acked");
    // Each kill broke a connection that had carried acknowledged records since the last
    // restart, so each one cost a reconnect, and batches in flight were sent again.
    assert!(m.connects > kills as u64, "a reconnect per kill: {m:?}");
    assert!(m.retries >= 1, "batches in flight at a kill were resent: {m:?}");
}

/// Restarts with batches in flight, by SIGKILL (a graceful stop would answer what it has
/// read first, and dedup might never run): until the broker has answered a resent batch
/// from its dedup state at least once, then every record is there exactly once, in order.
#[test]
fn sigkill_restarts_with_batches_in_flight_are_deduplicated_not_duplicated() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let broker = Arc::new(Mutex::new(BrokerProcess::new(BROKER_CONFIG)));
        broker.lock().unwrap().start();
        let cfg = broker.lock().unwrap().client_config("alice");
        Client::connect(&cfg).await.unwrap().create_topic("dedup", 3).await.unwrap();
        let p = fault_tolerant(broker.lock().unwrap().producer("alice")).batch_size(2048).build().unwrap();
        let total = 30_000;
        let killer = {
            let (broker, p) = (broker.clone(), p.clone());
            std::thread::spawn(move || {
                // Kill with batches in flight until a resent batch was answered as a
                // duplicate (the fsync'd-or-written but unanswered batch is resent), at most
                // ten times.
                let mut kills = 0;
                while p.metrics().duplicates == 0 && kills < 10 {
                    let target = p.metrics().records_sent + 500;
                    if !wait_for_progress(&p, target, Duration::from_secs(120)) {
                        break;
                    }
                    let mut b = broker.lock().unwrap();
                    b.kill();
                    b.start();
                    kills += 1;
                    drop(b);
                    // Wait for the resends to be answered before deciding to kill again.
                    wait_for_progress(&p, p.metrics().records_sent + 200, Duration::from_secs(120));
                }
                kills
            })
        };
        let mut ledger = Ledger::new("dedup", 3);
        ledger.produce(&p, total, Duration::from_secs(8), 32).await;
        let kills = tokio::task::spawn_blocking(move || killer.join().unwrap()).await.unwrap();
        let m = p.metrics();
        p.close(Duration::from_secs(30)).await.unwrap();
        let v = ledger.verify(&mut Client::connect(&cfg).await.unwrap()).await;
        println!("dedup: {kills} SIGKILLs, {v:?}\n  producer: retries {} duplicates {}", m.retries, m.duplicates);
        v.assert_exactly_once();
        assert_eq!(v.acked, total);
        assert!(kills >= 1);
        assert!(m.duplicates >= 1, "a resent batch was answered from the dedup state: {m:?}");
    });
}

/// Records that cannot be delivered while the broker is down fail with a persistence
/// status the log agrees with: "not persisted" ones are absent; "possibly persisted" ones
/// may be there, once. Records sent after the restart are acked, in order.
#[test]
fn records_failed_across_a_kill_report_a_status_the_log_agrees_with() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let mut broker = BrokerProcess::new(BROKER_CONFIG);
        broker.start();
        let cfg = broker.client_config("alice");
        Client::connect(&cfg).await.unwrap().create_topic("expire", 3).await.unwrap();
        let fast = Backoff { base: Duration::from_millis(20), max: Duration::from_millis(100), jitter: 0.2 };
        let p = broker
            .producer("alice")
            .batch_size(2048)
            .linger(Duration::from_millis(2))
            .retry_backoff(fast)
            .reconnect_backoff(fast)
            .circuit_breaker_threshold(u32::MAX)
            .connect_timeout(Duration::from_millis(500))
            .idle_timeout(Duration::from_millis(800))
            .keep_alive(Duration::from_millis(200))
            .request_timeout(Duration::from_millis(700))
            .delivery_timeout(Duration::from_millis(1500))
            .max_block(Duration::from_secs(30))
            .build()
            .unwrap();
        let mut ledger = Ledger::new("expire", 3);
        ledger.produce(&p, 3000, Duration::from_secs(1), 32).await;
        // Kill with records in flight, stay down past the delivery timeout while more are
        // sent, then come back.
        let sending = {
            let p = p.clone();
            let mut l = Ledger { topic: "expire".into(), partitions: 3, sent: std::mem::take(&mut ledger.sent) };
            tokio::spawn(async move {
                l.produce(&p, 6000, Duration::from_secs(4), 32).await;
                l
            })
        };
        // Kill once records flow again, with batches in flight (their fate is then unknown).
        let target = p.metrics().records_sent + 300;
        let progressed = {
            let p = p.clone();
            tokio::task::spawn_blocking(move || wait_for_progress(&p, target, Duration::from_secs(60))).await.unwrap()
        };
        assert!(progressed, "records flowed before the kill");
        broker.kill();
        // Down past the delivery timeout: what was in flight expires "possibly persisted".
        tokio::time::sleep(Duration::from_millis(2500)).await;
        broker.start();
        let mut ledger = sending.await.unwrap();
        ledger.produce(&p, 2000, Duration::from_millis(500), 32).await;
        let m = p.metrics();
        // Some records failed during the outage: close reports it.
        let _ = p.close(Duration::from_secs(10)).await;
        let v = ledger.verify(&mut Client::connect(&cfg).await.unwrap()).await;
        println!("expire: {v:?}\n  producer: epoch bumps {} retries {}", m.epoch_bumps, m.retries);
        v.assert_exactly_once();
        assert!(v.failed_not_persisted + v.failed_possibly_persisted > 0, "the outage failed some records: {v:?}");
        // Batches in flight at the kill expired with their fate unknown: their partitions
        // could only go on in a new epoch.
        assert!(v.failed_possibly_persisted > 0, "batches in flight at the kill expired: {v:?}");
        assert!(m.epoch_bumps >= 1, "an epoch bump after the expired in-flight batches: {m:?}");
        assert!(v.acked >= 3000, "at least everything sent before the kill: {v:?}");
        // The last records, sent after the restart, all made it.
        assert!(ledger.sent[ledger.sent.len() - 2000..].iter().all(|(_, o)| matches!(o, Some(Ok(_)))));
    });
}

/// A producer with the default timeouts delivers again promptly after its broker is
/// SIGKILLed and restarted at once: the restarted broker keeps its stateless-reset and
/// connection-id keys in the data directory, so it resets the old connection and the
/// producer reconnects instead of waiting out its 30 s idle timeout (what happened before
/// the keys were persisted: 30.1 s).
#[test]
fn a_producer_with_default_timeouts_reconnects_at_once_after_a_sigkill() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let mut broker = BrokerProcess::new("");
        broker.start();
        let p = broker.producer("alice").linger(Duration::ZERO).build().unwrap();
        p.send(qwire::producer::ProducerRecord::new("t", "before")).await.unwrap();
        broker.kill();
        broker.start();
        let t = Instant::now();
        p.send(qwire::producer::ProducerRecord::new("t", "after")).await.unwrap();
        let took = t.elapsed();
        println!("default timeouts: first ack {took:?} after the broker was back");
        // Behaviour, not speed: far below the idle timeout means the reset was honoured.
        assert!(took < Duration::from_secs(10), "waited {took:?}: the old connection was not reset");
        assert_eq!(p.metrics().connects, 2);
    });
}
