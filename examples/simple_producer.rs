//! The smallest useful producer: send a few keyed records and print where they landed.
//!
//! ```sh
//! cargo run --release -- broker --certs certs --data-dir /tmp/qwire-data   # in one shell
//! cargo run --example simple_producer                                     # in another
//! ```
//! `QWIRE_BROKER` (default `127.0.0.1:7878`), `QWIRE_CERTS` (default `certs`) and
//! `QWIRE_CLIENT` (default `client`) choose the broker and the client certificate.

use std::time::Duration;

use qwire::producer::{Producer, ProducerRecord, TlsConfig};

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let certs = env("QWIRE_CERTS", "certs");
    let producer = Producer::builder()
        .bootstrap(env("QWIRE_BROKER", "127.0.0.1:7878"))
        .tls(TlsConfig::from_dir(certs.as_ref(), &env("QWIRE_CLIENT", "client"))?)
        .build()?;

    for i in 0..10 {
        let record = ProducerRecord::new("greetings", format!("hello #{i}"))
            .key(format!("user-{}", i % 3))
            .header("source", "simple_producer");
        let md = producer.send(record).await?;
        println!("record {i} -> {}-{} @ offset {:?}", md.topic, md.partition, md.offset);
    }
    producer.close(Duration::from_secs(5)).await?;
    Ok(())
}
