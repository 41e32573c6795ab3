//! Mutual TLS and per-topic ACLs: `alice` (allowed to write `payments`) produces; `bob`
//! (read-only) is refused with an authorization error; a client whose certificate comes
//! from another CA is refused during the handshake.
//!
//! ```sh
//! cargo run --release -- broker --certs certs --data-dir /tmp/qwire-acl --acl examples/acl.toml
//! cargo run --example secure_mtls_producer
//! ```

use std::time::Duration;

use qwire::producer::{Producer, ProducerRecord, TlsConfig};
use qwire::transport::certs::{DevCa, LeafKind};

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let broker = env("QWIRE_BROKER", "127.0.0.1:7878");
    let certs = env("QWIRE_CERTS", "certs");
    let producer_for = |tls: TlsConfig| {
        Producer::builder().bootstrap(broker.clone()).tls(tls).max_block(Duration::from_secs(5)).build()
    };

    // alice: her certificate's CN is her principal, and the ACL lets her write.
    let alice = producer_for(TlsConfig::from_dir(certs.as_ref(), "alice")?)?;
    let md = alice.send(ProducerRecord::new("payments", "42.00 EUR").key("invoice-7")).await?;
    println!("alice: written to {}-{} at offset {:?}", md.topic, md.partition, md.offset);

    // bob: authenticated, but the ACL grants him only read.
    let bob = producer_for(TlsConfig::from_dir(certs.as_ref(), "bob")?)?;
    match bob.send(ProducerRecord::new("payments", "1.00 EUR")).await {
        Ok(_) => println!("bob: unexpectedly allowed (is the broker running with --acl examples/acl.toml?)"),
        Err(e) => println!("bob: refused as expected: {e} [code {:?}, retriable: {}]", e.code(), e.is_retriable()),
    }

    // A certificate from a CA the broker does not trust: refused in the TLS handshake.
    let rogue_ca = DevCa::generate("rogue CA", 1)?;
    let leaf = rogue_ca.issue(LeafKind::Client, "mallory", &[], 1)?;
    let dir = std::env::temp_dir().join(format!("qwire-rogue-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(format!("{certs}/ca.crt"), dir.join("ca.crt"))?;
    std::fs::write(dir.join("mallory.crt"), leaf.cert_pem)?;
    std::fs::write(dir.join("mallory.key"), leaf.key_pem)?;
    let mallory = producer_for(TlsConfig::from_dir(&dir, "mallory")?)?;
    match mallory.send(ProducerRecord::new("payments", "all of it")).await {
        Ok(_) => println!("mallory: unexpectedly allowed"),
        Err(e) => println!("mallory: refused as expected: {e}"),
    }
    std::fs::remove_dir_all(&dir)?;
    alice.close(Duration::from_secs(5)).await?;
    Ok(())
}
