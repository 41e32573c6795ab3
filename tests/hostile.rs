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

use std::future::Future;
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
        let deadline = Instant::now() + Duration::from_secs(30);
        while (b.handle.as_ref().unwrap().metrics().streams_opened as usize) < 4 * (limit - 1) {
            assert!(Instant::now() < deadline, "{:?}", b.handle.as_ref().unwrap().metrics());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // One more stream on a full connection waits for the stream limit: its first poll
        // finds no stream credit (the client holds `limit` streams, the broker's limit)...
        let quinn = conns[0].connection().quinn().clone();
        let mut extra = std::pin::pin!(quinn.open_bi());
        let first = std::future::poll_fn(|cx| std::task::Poll::Ready(extra.as_mut().poll(cx))).await;
        assert!(first.is_pending(), "a stream beyond the broker's limit was opened at once");
        let grown = rss_mib() - before;
        let latency = well_behaved(&mut good, "g").await;
        println!("{} idle streams over 4 connections: RSS +{grown:.1} MiB; a produce took {latency:?}", held.len());
        assert!(grown < 256.0, "RSS grew {grown:.0} MiB");
        // ...and is not refused: once streams of the connection end, the broker grants
        // credit and the waiting open completes. (quinn announces new stream credit once
        // more than an eighth of the limit is free: end that many.)
        let mut ended = Vec::new();
        for _ in 0..limit / 8 + 1 {
            let (mut send, recv) = held.remove(0);
            send.finish().unwrap();
            ended.push((send, recv));
        }
        let (mut s, _r) = tokio::time::timeout(Duration::from_secs(30), extra)
            .await
            .expect("the waiting stream opens once another ends")
            .unwrap();
        s.write_all(&[0, 0]).await.unwrap();
        drop(held);
        for c in &conns {
            c.close();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while b.handle.as_ref().unwrap().metrics().connections_open > 1 {
            assert!(Instant::now() < deadline, "{:?}", b.handle.as_ref().unwrap().metrics());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
        let frame_len = produce_frame(1, "rude", Acks::Leader, 100).len() as u64;
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
        // Proof that QUIC flow control holds the writer: its stack reports, with a
        // STREAM_DATA_BLOCKED frame, that it has data to send and no credit from the broker.
        let blocked = || rude.connection().quinn().stats().frame_tx.stream_data_blocked;
        let deadline = Instant::now() + Duration::from_secs(60);
        while blocked() == 0 {
            assert!(Instant::now() < deadline, "the rude client was never blocked by flow control");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let at_block = written.load(std::sync::atomic::Ordering::Relaxed);
        // What the broker took is bounded by its own buffers, not by time: responses queued
        // per stream (1024), responses the client's 64 KiB window and the writer's 64 KiB
        // coalescing buffer hold (about 30 bytes each), and what the broker's 8 MiB stream
        // window admits unread. (The broker may still be working through what it had
        // received when the client first reported being blocked, so both bounds are
        // checked against what it has appended by the end.)
        let held = 1024 + 2 * (64 * 1024 / 30 + 1) + 256;
        let latency = well_behaved(&mut good, "g").await;
        // Still held: the other client's produce moved nothing for the rude one.
        let m = b.handle.as_ref().unwrap().metrics();
        let appended = m.batches_appended;
        assert!(appended <= held + 1, "{appended} batches taken from a client that reads nothing: {m:?}");
        assert!(at_block <= (appended + 64) * frame_len + (8 << 20), "{at_block} bytes written, {appended} appended");
        let grown = rss_mib() - before;
        println!(
            "a client that never reads was blocked by flow control after writing {:.1} MiB ({appended} batches \
             appended, at most {held} possible); RSS +{grown:.1} MiB; a well-behaved produce took {latency:?}",
            at_block as f64 / 1048576.0
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

/// One connection pipelines `streams` × `per_stream` Fetch frames of a whole partition and
/// never reads a byte of the answers. Returns the rude client's streams (keep them open).
async fn never_reading_fetcher(
    b: &TestBroker,
    topic: &str,
    streams: usize,
    per_stream: usize,
) -> (Client, Vec<(quinn::SendStream, quinn::RecvStream)>) {
    let mut cfg = b.client_config("alice");
    // Small receive windows: the broker cannot push much into the client either.
    cfg.tuning.stream_window = 64 * 1024;
    cfg.tuning.conn_window = 256 * 1024;
    let rude = Client::connect(&cfg).await.unwrap();
    let mut held = Vec::new();
    for s in 0..streams {
        let (mut send, recv) = rude.connection().quinn().open_bi().await.unwrap();
        let mut frames = BytesMut::new();
        for i in 0..per_stream {
            Frame {
                correlation_id: (s * per_stream + i) as u32,
                payload: Payload::Fetch(qwire::protocol::frame::Fetch {
                    topic: topic.into(),
                    partition: 0,
                    offset: 0,
                    max_bytes: u32::MAX,
                }),
            }
            .encode(&mut frames);
        }
        send.write_all(&frames).await.unwrap();
        held.push((send, recv));
    }
    (rude, held)
}

#[test]
fn a_client_that_never_reads_its_fetches_holds_a_bounded_budget_and_slows_no_one() {
    let _serial = one_at_a_time();
    runtime().block_on(async {
        let b = TestBroker::start().await;
        let mut good = b.client("bob").await;
        // A partition holding 8 MiB in 1 MiB batches.
        for i in 0..8 {
            let r = good
                .produce("big", 0, Acks::Leader, batch(&"v".repeat(1 << 20), 1, ProducerStamp::NONE, Compression::None))
                .await
                .unwrap();
            assert_eq!(r.error, ErrorCode::None, "batch {i}: {}", r.message);
        }
        well_behaved(&mut good, "g").await;
        let before = rss_mib();
        let metrics = || b.handle.as_ref().unwrap().metrics();
        let fetches_before = metrics().fetch_requests;
        let (rude, held) = never_reading_fetcher(&b, "big", 4, 16).await;
        // The broker works through the rude client's requests until it is held back; the
        // other client probes all along and is always answered.
        let mut probes = 0;
        let mut last = (u64::MAX, 0);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let f = tokio::time::timeout(Duration::from_secs(10), good.fetch("big", 0, 0, 64 * 1024))
                .await
                .expect("another client's fetch is answered")
                .unwrap();
            assert!(!f.batches.is_empty());
            well_behaved(&mut good, "g").await;
            probes += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            let m = metrics();
            let rude_fetches = m.fetch_requests - fetches_before - probes;
            // Stable for 20 probes in a row: the broker has stopped taking the rude requests.
            if rude_fetches == last.0 {
                last.1 += 1;
            } else {
                last = (rude_fetches, 0);
            }
            if last.1 >= 20 || rude_fetches == 64 && last.1 >= 5 {
                break;
            }
            assert!(Instant::now() < deadline, "the broker kept taking requests for 60 s: {m:?}");
        }
        let grown = rss_mib() - before;
        let m = metrics();
        let budget = b.config.max_response_bytes_per_connection;
        println!(
            "a connection pipelining 4 x 16 whole-partition fetches (8 MiB each) and reading nothing: the broker \
             took {} of them, RSS +{grown:.0} MiB, at most {:.1} MiB of responses queued (budget {} MiB per \
             connection, {} waits); {probes} probes of another client all answered",
            last.0,
            m.response_bytes_queued_peak as f64 / 1048576.0,
            budget >> 20,
            m.response_budget_waits,
        );
        assert!(m.response_budget_waits >= 1, "the rude client was never held back: {m:?}");
        // The rude connection's budget plus the probes' small responses.
        assert!(m.response_bytes_queued_peak <= budget + (1 << 20), "{m:?}");
        assert!(last.0 < 64, "the broker took every request");
        assert!(grown < 128.0, "RSS grew {grown:.0} MiB");
        drop(held);
        rude.close();
        well_behaved(&mut good, "g").await;
        // Everything the rude client held is given back once it is gone.
        let deadline = Instant::now() + Duration::from_secs(30);
        while metrics().response_bytes_queued > 0 {
            assert!(Instant::now() < deadline, "responses still charged: {:?}", metrics());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

#[test]
fn never_reading_clients_together_hold_at_most_the_broker_budget_until_their_streams_stall() {
    let _serial = one_at_a_time();
    runtime().block_on(async {
        let b = TestBroker::start_with(|c| {
            c.max_response_bytes = 24 << 20;
            c.response_stall_timeout_secs = 2;
        })
        .await;
        let mut good = b.client("bob").await;
        for _ in 0..8 {
            let r = good
                .produce("big", 0, Acks::Leader, batch(&"v".repeat(1 << 20), 1, ProducerStamp::NONE, Compression::None))
                .await
                .unwrap();
            assert_eq!(r.error, ErrorCode::None, "{}", r.message);
        }
        let metrics = || b.handle.as_ref().unwrap().metrics();
        let before = rss_mib();
        let mut rude = Vec::new();
        for _ in 0..3 {
            rude.push(never_reading_fetcher(&b, "big", 4, 8).await);
        }
        // Three connections whose budgets (16 MiB each) add up to twice the broker's: the
        // broker-wide budget holds, and the streams that take nothing are reset after the
        // stall timeout, which gives the budget back to everyone else.
        let deadline = Instant::now() + Duration::from_secs(60);
        while metrics().streams_stalled < 4 {
            assert!(Instant::now() < deadline, "no stream was reset as stalled: {:?}", metrics());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let f = tokio::time::timeout(Duration::from_secs(30), good.fetch("big", 0, 0, u32::MAX))
            .await
            .expect("another client's fetch is answered")
            .unwrap();
        assert!(f.batches.len() > 4 << 20);
        let m = metrics();
        let grown = rss_mib() - before;
        println!(
            "3 connections x 4 streams x 8 whole-partition fetches, reading nothing: at most {:.1} MiB of \
             responses queued (broker budget {} MiB), {} streams reset as stalled, RSS +{grown:.0} MiB",
            m.response_bytes_queued_peak as f64 / 1048576.0,
            b.config.max_response_bytes >> 20,
            m.streams_stalled
        );
        assert!(m.response_bytes_queued_peak <= b.config.max_response_bytes + (1 << 20), "{m:?}");
        assert!(grown < 160.0, "RSS grew {grown:.0} MiB");
        // A reset stream is an error on that stream only: the rude connections still work.
        for (c, _) in &mut rude {
            assert_eq!(c.metadata(&[]).await.unwrap().brokers.len(), 1);
        }
        drop(rude);
    });
}

/// Sends `n` QUIC Initial packets (each a ClientHello of a new connection, offering no
/// client certificate) to `server` from one UDP socket, and never answers anything the
/// server sends back: abandoned handshakes.
fn abandoned_handshakes(server: std::net::SocketAddr, ca: &[rustls_pki_types::CertificateDer<'static>], n: usize) {
    let tls = qwire::transport::tls::client_tls(None, ca).unwrap();
    let config = qwire::transport::tls::quinn_client_config(tls, &Default::default()).unwrap();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut endpoint = quinn_proto::Endpoint::new(Arc::new(quinn_proto::EndpointConfig::default()), None, false, None);
    let mut buf = Vec::with_capacity(1500);
    for i in 0..n {
        if i % 50 == 49 {
            // Paced (about 500 a second), so that the broker's socket buffer takes them all.
            std::thread::sleep(Duration::from_millis(100));
        }
        let now = std::time::Instant::now();
        let (_, mut conn) = endpoint.connect(now, config.clone(), server, "localhost").unwrap();
        buf.clear();
        let t = conn.poll_transmit(now, 1, &mut buf).expect("an Initial to send");
        socket.send_to(&buf[..t.size], server).unwrap();
    }
}

#[test]
fn a_flood_of_abandoned_handshakes_does_not_lock_out_a_valid_client() {
    let _serial = one_at_a_time();
    runtime().block_on(async {
        let b = TestBroker::start().await;
        let metrics = || b.handle.as_ref().unwrap().metrics();
        let n = b.config.max_connections as usize + 76;
        let (addr, ca) = (b.addr(), b.client_config("alice").ca);
        tokio::task::spawn_blocking(move || abandoned_handshakes(addr, &ca, n)).await.unwrap();
        // Until the broker has seen most of them (loopback may drop a few datagrams).
        let deadline = Instant::now() + Duration::from_secs(30);
        let seen = |m: &qwire::broker::metrics::MetricsSnapshot| {
            m.handshakes_retried + m.connections_open + m.handshake_timeouts + m.handshakes_refused
        };
        while seen(&metrics()) < n as u64 / 2 {
            assert!(Instant::now() < deadline, "the broker did not see the flood: {:?}", metrics());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // A valid client gets in at its first try while the abandoned handshakes are held.
        let mut good = Client::connect(&b.client_config("bob")).await.expect("a valid client is not locked out");
        well_behaved(&mut good, "g").await;
        let m = metrics();
        println!(
            "{n} abandoned handshakes: {} held a slot, {} were sent a Retry, {} refused; a valid client got in",
            m.connections_open - 1,
            m.handshakes_retried,
            m.connections_refused + m.handshakes_refused
        );
        assert!(m.connections_open - 1 <= u64::from(b.config.max_handshakes), "{m:?}");
        assert!(m.handshakes_retried > 0, "{m:?}");
        assert_eq!(m.connections_refused, 0, "{m:?}");
        // The abandoned ones are dropped by the handshake timeout, not the idle timeout.
        let deadline = Instant::now() + Duration::from_secs(60);
        while metrics().connections_open > 1 {
            assert!(Instant::now() < deadline, "abandoned handshakes still hold slots: {:?}", metrics());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let after = metrics();
        assert!(after.handshake_timeouts >= m.connections_open - 1, "{after:?}");
        assert!(after.handshake_timeouts >= 1 && after.handshake_failures == 0, "{after:?}");
        well_behaved(&mut good, "g").await;
    });
}
