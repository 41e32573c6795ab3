//! Hostile or broken clients against an in-process broker: garbage after the handshake,
//! frames claiming huge lengths, many streams opened and left idle, a client that never
//! reads its responses, thousands of connections opened and dropped. Each time the broker
//! stays up, a well-behaved client keeps getting answers within a few seconds, and the
//! process's memory (VmRSS) stays within a generous bound. Also: every refused handshake
//! and ACL denial is logged by the broker and counted in its metrics.
//!
//! The tests of this file run one at a time (memory is measured for the whole process).
//! `QWIRE_SOAK=1` makes the connection churn ten times longer.

mod common;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use common::*;
use qwire::client::Client;
use qwire::protocol::frame::Produce;
use qwire::protocol::{Acks, Compression, ErrorCode, Frame, Payload, ProducerStamp};
use rand::RngCore;

/// Serialises the tests of this binary: each measures the memory of the whole process.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Resident memory of this process, in MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024.0
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// One acks=all produce from a well-behaved client; panics unless answered within 3 s.
async fn well_behaved(c: &mut Client, topic: &str) -> Duration {
    let t = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(3),
        c.produce(topic, 0, Acks::All, batch("good", 1, ProducerStamp::NONE, Compression::None)),
    )
    .await
    .expect("a well-behaved client is answered within 3 s")
    .unwrap();
    assert_eq!(r.error, ErrorCode::None, "{}", r.message);
    t.elapsed()
}

fn produce_frame(corr: u32, topic: &str, acks: Acks, value_len: usize) -> BytesMut {
    let mut out = BytesMut::new();
    Frame {
        correlation_id: corr,
        payload: Payload::Produce(Produce {
            topic: topic.into(),
            partition: 0,
            acks,
            timeout_ms: 0,
            batch: batch(&"x".repeat(value_len), 1, ProducerStamp::NONE, Compression::None),
        }),
    }
    .encode(&mut out);
    out
}

#[test]
fn garbage_after_the_handshake_gets_error_frames_and_disturbs_no_one() {
    let _serial = one_at_a_time();
    runtime().block_on(async {
        let b = TestBroker::start().await;
        let mut good = b.client("bob").await;
        well_behaved(&mut good, "g").await;
        let evil = b.client("alice").await;
        let mut tasks = Vec::new();
        for i in 0..32 {
            let (mut send, mut recv) = evil.connection().quinn().open_bi().await.unwrap();
            tasks.push(tokio::spawn(async move {
                let mut junk = vec![0u8; 64 * 1024];
                rand::thread_rng().fill_bytes(&mut junk);
                if i % 2 == 0 {
                    // Half the streams start with a plausible header, then junk.
                    junk[..4].copy_from_slice(&100u32.to_be_bytes());
                    junk[4] = 0x05;
                }
                let _ = send.write_all(&junk).await;
                let _ = send.finish();
                // The broker answers with an error frame and gives up on the stream.
                let answer = tokio::time::timeout(Duration::from_secs(5), recv.read_to_end(1 << 20)).await;
                matches!(answer, Ok(Ok(ref a)) if !a.is_empty()) || matches!(answer, Ok(Err(_)))
            }));
        }
        let answered = futures_all(tasks).await.into_iter().filter(|a| *a).count();
        assert_eq!(answered, 32, "every garbage stream got an error frame or a reset");
        let m = b.handle.as_ref().unwrap().metrics();
        assert!(m.bad_frames >= 32, "{m:?}");
        // The connection that sent garbage still works on a new stream, and so does the other.
        let mut evil = evil;
        assert_eq!(evil.metadata(&[]).await.unwrap().brokers.len(), 1);
        well_behaved(&mut good, "g").await;
    });
}

async fn futures_all<T: Send + 'static>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[test]
fn frames_claiming_huge_lengths_are_refused_and_partial_ones_stay_bounded() {
    let _serial = one_at_a_time();
    runtime().block_on(async {
        let b = TestBroker::start().await;
        let max_frame = b.config.max_frame_size;
        let mut good = b.client("bob").await;
        well_behaved(&mut good, "g").await;
        let evil = b.client("alice").await;
        // Lengths beyond the broker's limit: refused at once with FRAME_TOO_LARGE.
        for claimed in [u32::MAX, 0x8000_0000, max_frame + 1] {
            let mut s = evil.open_stream().await.unwrap();
            let mut raw = BytesMut::new();
            raw.put_u32(claimed);
            raw.put_u8(0x05);
            raw.put_u32(7);
            s.write_raw(&raw).await.unwrap();
            let f = tokio::time::timeout(Duration::from_secs(5), s.recv()).await.unwrap().unwrap().unwrap();
            assert!(matches!(f.payload, Payload::Error(ref e) if e.code == ErrorCode::FrameTooLarge), "{f:?}");
        }
        // Lengths within the limit whose bodies never complete, on many streams: the
        // broker buffers such frames only within its per-connection budget and answers
        // the others RESOURCE_LIMIT, throwing their bytes away as they come.
        let before = rss_mib();
        let streams = 24usize;
        let body = Bytes::from(vec![0u8; 1 << 20]);
        let mut writers = Vec::new();
        for _ in 0..streams {
            let (mut send, mut recv) = evil.connection().quinn().open_bi().await.unwrap();
            let body = body.clone();
            writers.push(tokio::spawn(async move {
                let mut head = BytesMut::new();
                head.put_u32(max_frame);
                head.put_u8(0x05);
                head.put_u32(1);
                send.write_all(&head).await.unwrap();
                // All but the last byte of the body.
                let mut left = max_frame as usize - 5 - 1;
                while left > 0 {
                    let n = left.min(body.len());
                    send.write_all(&body[..n]).await.unwrap();
                    left -= n;
                }
                let mut answer = vec![0u8; 9 + 2];
                let refused = tokio::time::timeout(Duration::from_secs(3), recv.read_exact(&mut answer)).await;
                let code = refused.ok().map(|_| u16::from_be_bytes([answer[9], answer[10]]));
                (code, send, recv)
            }));
        }
        let mut held = Vec::new();
        let mut refused = 0;
        for w in writers {
            let (code, send, recv) = w.await.unwrap();
            match code {
                None => {}
                Some(c) => {
                    assert_eq!(c, ErrorCode::ResourceLimit.as_u16());
                    refused += 1;
                }
            }
            held.push((send, recv));
        }
        let grown = rss_mib() - before;
        let latency = well_behaved(&mut good, "g").await;
        // The same connection still serves small requests on another stream.
        let mut evil = evil;
        assert_eq!(evil.metadata(&[]).await.unwrap().brokers.len(), 1);
        let budget = b.config.max_buffered_bytes_per_connection;
        println!(
            "{streams} streams each starting a {} MiB frame and never finishing it: {refused} refused \
             RESOURCE_LIMIT, RSS +{grown:.0} MiB (budget {} MiB per connection); a well-behaved produce took \
             {latency:?}",
            max_frame >> 20,
            budget >> 20
        );
        assert_eq!(streams - refused, (budget / (u64::from(max_frame) + 4)) as usize, "held within the budget");
        assert!(grown < 3.0 * (budget >> 20) as f64 + 64.0, "RSS grew {grown:.0} MiB");
        drop(held);
        // Complete large frames sent at once on many streams of one connection are served
        // or refused as retriable, never stuck.
        let mut calls = Vec::new();
        for i in 0..8u32 {
            let mut s = evil.open_stream().await.unwrap();
            calls.push(tokio::spawn(async move {
                let frame = produce_frame(i, "big", Acks::Leader, 6 << 20);
                s.write_raw(&frame).await.unwrap();
                let f = tokio::time::timeout(Duration::from_secs(20), s.recv()).await.expect("answered").unwrap();
                match f.unwrap().payload {
                    Payload::ProduceResult(r) => r.error,
                    Payload::Error(e) => e.code,
                    other => panic!("{other:?}"),
                }
            }));
        }
        let codes = futures_all(calls).await;
        println!("8 concurrent 6 MiB produce frames on one connection: {codes:?}");
        assert!(codes.iter().all(|c| matches!(c, ErrorCode::None | ErrorCode::ResourceLimit)), "{codes:?}");
        assert!(codes.contains(&ErrorCode::None));
        evil.close();
        well_behaved(&mut good, "g").await;
    });
}

#[test]
fn many_streams_opened_and_never_finished_cost_little_and_block_no_one() {
    let _serial = one_at_a_time();
    runtime().block_on(async {
        let b = TestBroker::start().await;
        let mut good = b.client("bob").await;
        well_behaved(&mut good, "g").await;
        let before = rss_mib();
        let limit = b.config.max_streams_per_connection as usize;
        let mut conns = Vec::new();
        let mut held = Vec::new();
        for _ in 0..4 {
            let evil = b.client("alice").await;
            // The Hello stream counts against the limit: open every other one. A stream is
            // only seen by the broker once it carries a byte: send half a header.
            for _ in 0..limit - 1 {
                let (mut send, recv) = evil.connection().quinn().open_bi().await.unwrap();
                send.write_all(&[0, 0]).await.unwrap();
                held.push((send, recv));
            }
            conns.push(evil);
        }
        // The broker counts a stream when it reads its first byte: poll for it.
        let deadline = Instant::now() + Duration::from_secs(30);
        while (b.handle.as_ref().unwrap().metrics().streams_opened as usize) < 4 * (limit - 1)
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let m = b.handle.as_ref().unwrap().metrics();
        assert!(m.streams_opened as usize >= 4 * (limit - 1), "{m:?}");
        // One more stream on a full connection waits for the stream limit (QUIC flow
        // control), it is not refused and does not grow anything.
        let extra = tokio::time::timeout(Duration::from_millis(300), conns[0].connection().quinn().open_bi()).await;
        assert!(extra.is_err(), "the connection's stream limit holds");
        let grown = rss_mib() - before;
        let latency = well_behaved(&mut good, "g").await;
        println!("{} idle streams over 4 connections: RSS +{grown:.1} MiB; a produce took {latency:?}", held.len());
        assert!(grown < 256.0, "RSS grew {grown:.0} MiB");
        drop(held);
        for c in &conns {
            c.close();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while b.handle.as_ref().unwrap().metrics().connections_open != 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(b.handle.as_ref().unwrap().metrics().connections_open, 1);
    });
}

#[test]
fn a_client_that_never_reads_its_responses_is_held_back_by_flow_control() {
    let _serial = one_at_a_time();
    runtime().block_on(async {
        let b = TestBroker::start().await;
        let mut good = b.client("bob").await;
        well_behaved(&mut good, "g").await;
        // A small receive window on the rude client so its unread responses fill it fast.
        let mut cfg = b.client_config("alice");
        cfg.tuning.stream_window = 64 * 1024;
        cfg.tuning.conn_window = 256 * 1024;
        let rude = Client::connect(&cfg).await.unwrap();
        let (mut send, recv) = rude.connection().quinn().open_bi().await.unwrap();
        let written = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let writer = {
            let written = written.clone();
            tokio::spawn(async move {
                let mut corr = 0u32;
                loop {
                    let mut chunk = BytesMut::new();
                    for _ in 0..64 {
                        corr += 1;
                        chunk.extend_from_slice(&produce_frame(corr, "rude", Acks::Leader, 100));
                    }
                    if send.write_all(&chunk).await.is_err() {
                        return;
                    }
                    written.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
            })
        };
        let before = rss_mib();
        // The writer runs until the broker stops reading its stream.
        let mut last = 0;
        let stalled_at = loop {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            let now = written.load(std::sync::atomic::Ordering::Relaxed);
            if now == last {
                break now;
            }
            assert!(now < 512 << 20, "the rude client wrote {now} bytes without being held back");
            last = now;
        };
        let appended = b.handle.as_ref().unwrap().metrics().batches_appended;
        let grown = rss_mib() - before;
        let latency = well_behaved(&mut good, "g").await;
        println!(
            "a client that never reads was held back after writing {:.1} MiB ({appended} batches appended); \
             RSS +{grown:.1} MiB; a well-behaved produce took {latency:?}",
            stalled_at as f64 / 1048576.0
        );
        assert!(grown < 256.0, "RSS grew {grown:.0} MiB");
        writer.abort();
        drop(recv);
        rude.close();
        well_behaved(&mut good, "g").await;
    });
}

#[test]
fn thousands_of_connections_opened_and_dropped_leave_the_broker_as_it_was() {
    let _serial = one_at_a_time();
    let per_kind = if soak() { 1000 } else { 100 };
    runtime().block_on(async {
        let b = TestBroker::start_with(|c| c.idle_timeout_secs = 2).await;
        let cfg = b.client_config("carol");
        // The well-behaved client keeps its connection alive under the short idle timeout.
        let mut good_cfg = b.client_config("bob");
        good_cfg.tuning.keep_alive = Some(Duration::from_millis(300));
        let mut good = Client::connect(&good_cfg).await.unwrap();
        well_behaved(&mut good, "g").await;
        let before = rss_mib();
        let mut growth = Vec::new();
        // Two rounds: the first also grows allocator arenas and thread pools; memory that
        // keeps growing in the second would be a leak.
        for round in 0..2 {
            let accepted_before = b.handle.as_ref().unwrap().metrics().connections_accepted;
            let churn = {
                let cfg = cfg.clone();
                tokio::spawn(async move {
                    for _ in 0..per_kind {
                        // Closed properly...
                        Client::connect(&cfg).await.unwrap().close();
                        // ...and abandoned: a client whose runtime vanished without a word,
                        // as a crashed process would. The broker notices by its idle timeout.
                        let cfg = cfg.clone();
                        tokio::task::spawn_blocking(move || abandon(&cfg)).await.unwrap();
                    }
                })
            };
            let mut worst = Duration::ZERO;
            while !churn.is_finished() {
                worst = worst.max(well_behaved(&mut good, "g").await);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            churn.await.unwrap();
            let m = b.handle.as_ref().unwrap().metrics();
            assert_eq!(m.connections_accepted - accepted_before, 2 * per_kind as u64, "{m:?}");
            // Abandoned connections are reaped by the idle timeout.
            let deadline = Instant::now() + Duration::from_secs(10);
            while b.handle.as_ref().unwrap().metrics().connections_open > 1 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let open = b.handle.as_ref().unwrap().metrics().connections_open;
            let grown = rss_mib() - before;
            growth.push(grown);
            println!(
                "round {round}: {} connections opened and dropped ({per_kind} abandoned): open now {open}, \
                 RSS +{grown:.1} MiB since the start, worst well-behaved produce {worst:?}",
                2 * per_kind
            );
            assert_eq!(open, 1, "only the well-behaved client is left");
            well_behaved(&mut good, "g").await;
        }
        assert!(growth[1] - growth[0] < 24.0, "memory keeps growing with connections: {growth:?} MiB");
    });
}

/// Connects on a private runtime, then drops the runtime before the connection: nothing
/// is sent to the broker (no CONNECTION_CLOSE).
fn abandon(cfg: &qwire::client::ConnectConfig) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let c = rt.block_on(Client::connect(cfg)).unwrap();
    drop(rt);
    drop(c);
}

// ---------------------------------------------------------------------------------------
// Security negatives: logged by the broker and counted
// ---------------------------------------------------------------------------------------

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Log lines written since `from` bytes.
    fn since(&self, from: usize) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()[from..]).into_owned()
    }

    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

#[test]
fn every_refusal_is_logged_by_the_broker_and_counted() {
    let _serial = one_at_a_time();
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // A current-thread runtime, so the broker's tasks log through this thread's subscriber.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let acl_dir = tempfile::tempdir().unwrap();
        let acl_path = acl_dir.path().join("acl.toml");
        std::fs::write(
            &acl_path,
            "[[allow]]\nprincipal = \"alice\"\ntopics = [\"*\"]\npermissions = [\"read\", \"write\", \"admin\"]\n\
             [[allow]]\nprincipal = \"bob\"\ntopics = [\"orders\"]\npermissions = [\"read\"]\n",
        )
        .unwrap();
        let b = TestBroker::start_with(|c| c.acl_file = Some(acl_path.clone())).await;
        let metrics = || b.handle.as_ref().unwrap().metrics();

        // Each refused handshake: the client gets a TLS error, the broker logs the remote
        // address and the reason, and counts it.
        let mut no_cert = b.client_config("alice");
        no_cert.identity = None;
        let alice = b.client_config("alice");
        let mut alpn = qwire::transport::tls::client_tls(alice.identity.as_ref(), &alice.ca).unwrap();
        alpn.alpn_protocols = vec![b"h3".to_vec()];
        let cases: Vec<(&str, quinn::ClientConfig, &[&str])> = vec![
            ("no client certificate", quic(&no_cert, None), &["handshake failed", "certificate"]),
            ("another CA", quic(&b.client_config("mallory"), None), &["handshake failed", "UnknownIssuer"]),
            ("expired", quic(&b.client_config("old"), None), &["handshake failed", "expired"]),
            ("wrong ALPN", quic(&alice, Some(alpn)), &["handshake failed", "protocol"]),
        ];
        for (what, config, expect) in cases {
            let failures = metrics().handshake_failures;
            let from = logs.len();
            let ep =
                qwire::transport::ClientEndpoint::new("127.0.0.1:0".parse().unwrap(), config, Duration::from_secs(5))
                    .unwrap();
            let port = ep.quinn().local_addr().unwrap().port();
            let err = ep.connect(b.addr(), "localhost", "x").await.unwrap_err();
            assert!(matches!(err, qwire::transport::TransportError::TlsRejected { .. }), "{what}: {err}");
            let deadline = Instant::now() + Duration::from_secs(5);
            while metrics().handshake_failures == failures && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(metrics().handshake_failures, failures + 1, "{what}: counted once");
            let line = logs
                .since(from)
                .lines()
                .find(|l| l.contains(&format!("127.0.0.1:{port}")) && l.contains("WARN"))
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("{what}: no broker warning naming the client:\n{}", logs.since(from)));
            println!("{what}: client saw \"{err}\"\n  broker logged: {line}");
            for e in expect {
                assert!(line.contains(e), "{what}: expected {e:?} in {line}");
            }
        }
        assert_eq!(metrics().connections_accepted, 0);

        // An ACL denial: a clear error frame, logged with principal and topic, counted.
        let mut bob = b.client("bob").await;
        let denied = metrics().authorization_failures;
        let from = logs.len();
        let r = bob.produce("orders", 0, Acks::Leader, batch("b", 1, ProducerStamp::NONE, Compression::None)).await;
        assert_eq!(r.unwrap().error, ErrorCode::AuthorizationFailed);
        let err = bob.create_topic("secret", 1).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::AuthorizationFailed));
        assert_eq!(metrics().authorization_failures, denied + 2);
        let log = logs.since(from);
        println!("ACL denials logged:\n{log}");
        assert!(log.contains("produce denied by ACL") && log.contains("principal=bob") && log.contains("topic=orders"));
        assert!(log.contains("request denied by ACL") && log.contains("secret"), "{log}");
        drop(b);
    });
    assert!(logs.text().contains("broker listening"));
}

fn quic(cfg: &qwire::client::ConnectConfig, tls: Option<rustls::ClientConfig>) -> quinn::ClientConfig {
    let tls = tls.unwrap_or_else(|| qwire::transport::tls::client_tls(cfg.identity.as_ref(), &cfg.ca).unwrap());
    qwire::transport::tls::quinn_client_config(tls, &cfg.tuning).unwrap()
}
