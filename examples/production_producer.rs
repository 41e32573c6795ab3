//! A service-shaped producer: several worker tasks share one producer, metrics are
//! logged every few seconds, and Ctrl-C shuts down gracefully (workers stop, the producer
//! flushes and closes, failures are counted by persistence status).
//!
//! ```sh
//! cargo run --release -- broker --certs certs --data-dir /tmp/qwire-data
//! cargo run --release --example production_producer      # Ctrl-C to stop
//! ```
//! `QWIRE_WORKERS` (default 4) and `QWIRE_RATE` (records/s per worker, default 1000).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use qwire::producer::{Persistence, Producer, ProducerRecord, TlsConfig};
use qwire::protocol::Compression;
use tokio::sync::watch;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

#[derive(Default)]
struct Outcomes {
    ok: AtomicU64,
    not_persisted: AtomicU64,
    maybe_persisted: AtomicU64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let workers: usize = env("QWIRE_WORKERS", "4").parse()?;
    let rate: u64 = env("QWIRE_RATE", "1000").parse()?;
    let producer = Producer::builder()
        .bootstrap(env("QWIRE_BROKER", "127.0.0.1:7878"))
        .tls(TlsConfig::from_dir(env("QWIRE_CERTS", "certs").as_ref(), &env("QWIRE_CLIENT", "client"))?)
        .client_id("orders-service")
        .compression(Compression::Zstd)
        .delivery_timeout(Duration::from_secs(60))
        .build()?;
    let outcomes = Arc::new(Outcomes::default());
    let (stop_tx, stop_rx) = watch::channel(false);

    let mut tasks = Vec::new();
    for w in 0..workers {
        let (producer, outcomes, mut stop) = (producer.clone(), outcomes.clone(), stop_rx.clone());
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
            let mut n = 0u64;
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    _ = tick.tick() => {}
                }
                let record = ProducerRecord::new("orders", format!("{{\"worker\":{w},\"n\":{n}}}"))
                    .key(format!("customer-{}", n % 100));
                let outcomes = outcomes.clone();
                let sent = producer
                    .send_with_callback(record, move |r| {
                        let c = match r {
                            Ok(_) => &outcomes.ok,
                            Err(e) if e.persistence() == Persistence::NotPersisted => &outcomes.not_persisted,
                            Err(_) => &outcomes.maybe_persisted,
                        };
                        c.fetch_add(1, Ordering::Relaxed);
                    })
                    .await;
                if let Err(e) = sent {
                    eprintln!("worker {w}: {e}");
                }
                n += 1;
            }
        }));
    }

    let reporter = {
        let (producer, outcomes) = (producer.clone(), outcomes.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            every.tick().await;
            loop {
                every.tick().await;
                let m = producer.metrics();
                println!(
                    "acked {} | failed {} | in flight {} batches | buffer free {} KiB | record p50 {} µs p99 {} µs | ratio {:.2}",
                    outcomes.ok.load(Ordering::Relaxed),
                    m.records_failed,
                    m.in_flight_batches,
                    m.buffer_available / 1024,
                    m.record_latency.p50_us,
                    m.record_latency.p99_us,
                    m.compression_ratio
                );
            }
        })
    };

    tokio::signal::ctrl_c().await?;
    println!("shutting down: stopping workers, flushing");
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    reporter.abort();
    producer.close(Duration::from_secs(10)).await?;
    println!(
        "done: {} acked, {} failed (not persisted), {} failed (possibly persisted)",
        outcomes.ok.load(Ordering::Relaxed),
        outcomes.not_persisted.load(Ordering::Relaxed),
        outcomes.maybe_persisted.load(Ordering::Relaxed)
    );
    Ok(())
}
