//! The broker against real clients over QUIC with mTLS on 127.0.0.1:0.

mod common;

use bytes::{BufMut, BytesMut};
use common::*;
use qwire::protocol::frame::{Produce, ProduceResult};
use qwire::protocol::{Acks, Compression, ErrorCode, Frame, Payload, ProducerStamp};
use qwire::transport::TransportError;

#[tokio::test]
async fn produce_at_each_ack_level_gives_contiguous_offsets_and_fetch_returns_them() {
    let b = TestBroker::start().await;
    let mut c = b.client("alice").await;
    assert_eq!(c.principal(), "alice");
    assert_eq!(c.create_topic("orders", 2).await.unwrap(), 2);

    let r = c.produce("orders", 0, Acks::Leader, batch("a", 3, ProducerStamp::NONE, Compression::None)).await.unwrap();
    assert_eq!((r.error, r.base_offset, r.duplicate), (ErrorCode::None, 0, false));
    let r = c.produce("orders", 0, Acks::All, batch("b", 2, ProducerStamp::NONE, Compression::Lz4)).await.unwrap();
    assert_eq!((r.error, r.base_offset), (ErrorCode::None, 3));

    // acks=none: no response; a later acked request on the same stream proves ordering.
    let mut s = c.open_stream().await.unwrap();
    let none = Frame {
        correlation_id: 7,
        payload: Payload::Produce(Produce {
            topic: "orders".into(),
            partition: 0,
            acks: Acks::None,
            timeout_ms: 0,
            batch: batch("c", 1, ProducerStamp::NONE, Compression::None),
        }),
    };
    s.send(&none).await.unwrap();
    let after = s
        .call(Payload::Produce(Produce {
            topic: "orders".into(),
            partition: 0,
            acks: Acks::Leader,
            timeout_ms: 0,
            batch: batch("d", 1, ProducerStamp::NONE, Compression::None),
        }))
        .await
        .unwrap();
    let Payload::ProduceResult(after) = after else { panic!("{after:?}") };
    assert_eq!(after.base_offset, 6, "the acks=none batch took offset 5");

    let records = c.fetch_all("orders", 0, 0).await.unwrap();
    assert_eq!(values(&records), ["a-0", "a-1", "a-2", "b-0", "b-1", "c-0", "d-0"]);
    assert_eq!(records.iter().map(|r| r.offset).collect::<Vec<_>>(), (0..7).collect::<Vec<_>>());
    assert_eq!(records[0].key.as_deref(), Some(&b"k0"[..]));
    assert_eq!(records[1].headers[0].value.as_deref(), Some(&b"1"[..]));
    // Fetching from the middle of a batch skips the records before the offset.
    let mid = c.fetch_records("orders", 0, 4, 1 << 20).await.unwrap();
    assert_eq!(mid.records[0].offset, 4);
    // The other partition is untouched.
    assert!(c.fetch_all("orders", 1, 0).await.unwrap().is_empty());
}

#[tokio::test]
async fn every_codec_round_trips_through_the_broker() {
    let b = TestBroker::start().await;
    let mut c = b.client("alice").await;
    for codec in Compression::ALL {
        let topic = format!("codec-{codec}");
        let r = c.produce(&topic, 0, Acks::Leader, batch("v", 50, ProducerStamp::NONE, codec)).await.unwrap();
        assert_eq!(r.error, ErrorCode::None, "{codec}: {}", r.message);
        let got = c.fetch_all(&topic, 0, 0).await.unwrap();
        assert_eq!(got.len(), 50, "{codec}");
        assert_eq!(values(&got)[49], "v-49");
    }
}

#[tokio::test]
async fn a_retried_batch_gets_its_original_offset_and_a_gap_is_refused() {
    let b = TestBroker::start().await;
    let mut c = b.client("alice").await;
    let (pid, epoch) = c.init_producer_id(-1, -1).await.unwrap();
    let first = batch("x", 4, stamp(pid, epoch, 0), Compression::None);
    let r1 = c.produce("t", 0, Acks::All, first.clone()).await.unwrap();
    let r2 = c.produce("t", 0, Acks::Leader, batch("y", 2, stamp(pid, epoch, 4), Compression::None)).await.unwrap();
    assert_eq!((r1.base_offset, r2.base_offset), (0, 4));
    let retry = c.produce("t", 0, Acks::All, first).await.unwrap();
    assert_eq!((retry.error, retry.duplicate, retry.base_offset), (ErrorCode::None, true, 0));
    assert_eq!(retry.log_append_time, r1.log_append_time);
    // Sequence 9 after 5: a gap.
    let gap = c.produce("t", 0, Acks::Leader, batch("z", 1, stamp(pid, epoch, 9), Compression::None)).await.unwrap();
    assert_eq!(gap.error, ErrorCode::OutOfOrderSequence, "{}", gap.message);
    // An older epoch after a bump is fenced.
    let (_, epoch2) = c.init_producer_id(pid, epoch).await.unwrap();
    assert_eq!(epoch2, epoch + 1);
    let r = c.produce("t", 0, Acks::Leader, batch("n", 1, stamp(pid, epoch2, 0), Compression::None)).await.unwrap();
    assert_eq!((r.error, r.base_offset), (ErrorCode::None, 6));
    let fenced = c.produce("t", 0, Acks::Leader, batch("o", 1, stamp(pid, epoch, 6), Compression::None)).await.unwrap();
    assert_eq!(fenced.error, ErrorCode::InvalidProducerEpoch);
    // Nothing was stored twice.
    assert_eq!(values(&c.fetch_all("t", 0, 0).await.unwrap()), ["x-0", "x-1", "x-2", "x-3", "y-0", "y-1", "n-0"]);
}

#[tokio::test]
async fn a_bad_crc_is_refused_and_the_connection_stays_usable() {
    let b = TestBroker::start().await;
    let mut c = b.client("alice").await;
    let mut bad = batch("x", 2, ProducerStamp::NONE, Compression::None).to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 0x40;
    let r = c.produce("t", 0, Acks::Leader, bad.into()).await.unwrap();
    assert_eq!(r.error, ErrorCode::CorruptBatch);
    assert!(r.message.contains("CRC"), "{}", r.message);
    let ok = c.produce("t", 0, Acks::Leader, batch("y", 1, ProducerStamp::NONE, Compression::None)).await.unwrap();
    assert_eq!((ok.error, ok.base_offset), (ErrorCode::None, 0));
    let m = b.handle.as_ref().unwrap().metrics();
    assert_eq!(m.corrupt_batches, 1);
}

#[tokio::test]
async fn an_oversized_frame_closes_only_its_stream() {
    let b = TestBroker::start_with(|c| c.max_frame_size = 64 * 1024).await;
    let mut c = b.client("alice").await;
    let mut s = c.open_stream().await.unwrap();
    let mut raw = BytesMut::new();
    raw.put_u32(10_000_000);
    raw.put_u8(0x05);
    raw.put_u32(42);
    raw.put_slice(&[0u8; 100]);
    s.write_raw(&raw).await.unwrap();
    let f = s.recv().await.unwrap().expect("an error frame");
    assert_eq!(f.correlation_id, 42);
    let Payload::Error(e) = f.payload else { panic!("{f:?}") };
    assert_eq!(e.code, ErrorCode::FrameTooLarge);
    // The broker stopped reading that stream; the connection still serves others.
    let r = c.produce("t", 0, Acks::Leader, batch("ok", 1, ProducerStamp::NONE, Compression::None)).await.unwrap();
    assert_eq!(r.error, ErrorCode::None);
    // A batch larger than the frame limit through the normal path is refused the same way.
    let big = batch(&"x".repeat(100_000), 1, ProducerStamp::NONE, Compression::None);
    let mut s2 = c.open_stream().await.unwrap();
    let err = s2
        .call(Payload::Produce(Produce {
            topic: "t".into(),
            partition: 0,
            acks: Acks::Leader,
            timeout_ms: 0,
            batch: big,
        }))
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Broker { code: ErrorCode::FrameTooLarge, .. }), "{err}");
}

#[tokio::test]
async fn garbage_and_unknown_kinds_get_error_frames_and_do_not_disturb_another_client() {
    let b = TestBroker::start().await;
    let mut good = b.client("bob").await;
    let evil = b.client("alice").await;
    let mut s = evil.open_stream().await.unwrap();
    // An unknown kind with a valid length: error frame, the stream goes on.
    let mut raw = BytesMut::new();
    raw.put_u32(5 + 3);
    raw.put_u8(0x42);
    raw.put_u32(9);
    raw.put_slice(b"abc");
    s.write_raw(&raw).await.unwrap();
    let f = s.recv().await.unwrap().unwrap();
    assert_eq!(f.correlation_id, 9);
    assert!(matches!(f.payload, Payload::Error(ref e) if e.code == ErrorCode::UnknownFrameKind), "{f:?}");
    // A malformed body of a known kind: error frame, the stream goes on.
    let mut raw = BytesMut::new();
    raw.put_u32(5 + 1);
    raw.put_u8(0x01);
    raw.put_u32(10);
    raw.put_u8(0);
    s.write_raw(&raw).await.unwrap();
    let f = s.recv().await.unwrap().unwrap();
    assert!(matches!(f.payload, Payload::Error(ref e) if e.code == ErrorCode::MalformedFrame), "{f:?}");
    // Pure garbage (length < 5): framing lost, error frame then the stream ends.
    s.write_raw(&[0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef, 0x00, 0x11]).await.unwrap();
    let f = s.recv().await.unwrap().unwrap();
    assert!(matches!(f.payload, Payload::Error(ref e) if e.code == ErrorCode::MalformedFrame), "{f:?}");
    assert!(s.recv().await.unwrap().is_none(), "the broker finishes the stream after lost framing");
    // Meanwhile the other client works.
    let r = good.produce("t", 0, Acks::All, batch("fine", 1, ProducerStamp::NONE, Compression::None)).await.unwrap();
    assert_eq!(r.error, ErrorCode::None);
    assert!(b.handle.as_ref().unwrap().metrics().bad_frames >= 3);
}

#[tokio::test]
async fn restart_keeps_acked_batches_and_dedup_state() {
    let mut b = TestBroker::start().await;
    let mut c = b.client("alice").await;
    let (pid, epoch) = c.init_producer_id(-1, -1).await.unwrap();
    let mut batches = Vec::new();
    for i in 0..6 {
        let bt = batch(&format!("r{i}"), 3, stamp(pid, epoch, i * 3), Compression::Zstd);
        let r = c.produce("durable", 0, Acks::All, bt.clone()).await.unwrap();
        assert_eq!((r.error, r.base_offset), (ErrorCode::None, i as i64 * 3));
        batches.push(bt);
    }
    c.close();
    b.stop().await;
    b.restart_broker().await;
    let mut c = b.client("alice").await;
    // The last batch retried after the restart is recognised.
    let r = c.produce("durable", 0, Acks::All, batches[5].clone()).await.unwrap();
    assert_eq!((r.error, r.duplicate, r.base_offset), (ErrorCode::None, true, 15));
    // And the sequence continues.
    let r =
        c.produce("durable", 0, Acks::All, batch("next", 1, stamp(pid, epoch, 18), Compression::None)).await.unwrap();
    assert_eq!((r.error, r.base_offset), (ErrorCode::None, 18));
    let got = c.fetch_all("durable", 0, 0).await.unwrap();
    assert_eq!(got.len(), 19);
    assert_eq!(values(&got)[17], "r5-2");
    // A new producer id after restart never repeats the old one.
    assert_ne!(c.init_producer_id(-1, -1).await.unwrap().0, pid);
}

#[tokio::test]
async fn a_torn_tail_is_truncated_on_restart_and_appends_continue() {
    let mut b = TestBroker::start().await;
    let mut c = b.client("alice").await;
    for i in 0..3 {
        let r = c
            .produce("torn", 0, Acks::All, batch(&format!("b{i}"), 2, ProducerStamp::NONE, Compression::None))
            .await
            .unwrap();
        assert_eq!(r.error, ErrorCode::None);
    }
    c.close();
    b.stop().await;
    let seg_dir = b.data_dir().join("topics/torn/0");
    let seg = std::fs::read_dir(&seg_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "log"))
        .unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    // Cut the last batch in half, as a crash mid-write would.
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 10).unwrap();
    drop(f);
    b.restart_broker().await;
    let mut c = b.client("alice").await;
    let got = c.fetch_all("torn", 0, 0).await.unwrap();
    assert_eq!(values(&got), ["b0-0", "b0-1", "b1-0", "b1-1"]);
    let r = c.produce("torn", 0, Acks::All, batch("after", 1, ProducerStamp::NONE, Compression::None)).await.unwrap();
    assert_eq!(r.base_offset, 4);
    assert_eq!(values(&c.fetch_all("torn", 0, 0).await.unwrap()).last().unwrap(), "after-0");
}

#[tokio::test]
async fn unknown_topics_partitions_and_offsets_get_clear_errors() {
    let b = TestBroker::start_with(|c| c.auto_create_topics = false).await;
    let mut c = b.client("alice").await;
    let r = c.produce("nope", 0, Acks::Leader, batch("x", 1, ProducerStamp::NONE, Compression::None)).await.unwrap();
    assert_eq!(r.error, ErrorCode::UnknownTopicOrPartition);
    assert!(r.message.contains("auto-create is off"), "{}", r.message);
    c.create_topic("yes", 2).await.unwrap();
    let r = c.produce("yes", 5, Acks::Leader, batch("x", 1, ProducerStamp::NONE, Compression::None)).await.unwrap();
    assert_eq!(r.error, ErrorCode::UnknownTopicOrPartition);
    let e = c.create_topic("yes", 2).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::TopicAlreadyExists));
    let e = c.create_topic("bad/name", 1).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidTopicName));
    let e = c.create_topic("zero", 0).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidPartitions));
    let e = c.fetch("yes", 0, 5, 1000).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::OffsetOutOfRange), "{e}");
    let md = c.metadata(&["yes", "nope"]).await.unwrap();
    assert_eq!(md.topics[0].partitions.len(), 2);
    assert_eq!(md.topics[1].error, ErrorCode::UnknownTopicOrPartition);
}

#[tokio::test]
async fn graceful_shutdown_leaves_every_acked_record_readable() {
    let mut b = TestBroker::start().await;
    let mut c = b.client("alice").await;
    for i in 0..20 {
        let r = c
            .produce("g", 0, Acks::Leader, batch(&format!("g{i}"), 5, ProducerStamp::NONE, Compression::None))
            .await
            .unwrap();
        assert_eq!(r.error, ErrorCode::None);
    }
    b.stop().await;
    b.restart_broker().await;
    let mut c = b.client("alice").await;
    assert_eq!(c.fetch_all("g", 0, 0).await.unwrap().len(), 100);
}

#[tokio::test]
async fn responses_are_pipelined_in_request_order() {
    let b = TestBroker::start().await;
    let c = b.client("alice").await;
    let s = c.open_stream().await.unwrap();
    let (mut w, mut r) = s.split();
    let mut bytes = BytesMut::new();
    for i in 0..200u32 {
        let acks = if i % 2 == 0 { Acks::All } else { Acks::Leader };
        Frame {
            correlation_id: i,
            payload: Payload::Produce(Produce {
                topic: "pipe".into(),
                partition: 0,
                acks,
                timeout_ms: 0,
                batch: batch(&format!("p{i}"), 1, ProducerStamp::NONE, Compression::None),
            }),
        }
        .encode(&mut bytes);
    }
    w.write_raw(&bytes).await.unwrap();
    for i in 0..200u32 {
        let f = r.recv().await.unwrap().unwrap();
        assert_eq!(f.correlation_id, i);
        let Payload::ProduceResult(ProduceResult { error, base_offset, .. }) = f.payload else { panic!() };
        assert_eq!((error, base_offset), (ErrorCode::None, i as i64));
    }
}

#[tokio::test]
async fn a_batch_whose_header_lies_about_its_record_count_is_refused() {
    let b = TestBroker::start().await;
    let mut c = b.client("alice").await;
    let mut v = batch("x", 2, ProducerStamp::NONE, Compression::None).to_vec();
    // Claim a million records while holding two, with a valid CRC.
    v[19..23].copy_from_slice(&999_999u32.to_be_bytes());
    v[53..57].copy_from_slice(&1_000_000u32.to_be_bytes());
    let crc = crc32c::crc32c(&v[17..]);
    v[13..17].copy_from_slice(&crc.to_be_bytes());
    let r = c.produce("liar", 0, Acks::Leader, v.into()).await.unwrap();
    assert_eq!(r.error, ErrorCode::CorruptBatch);
    assert!(r.message.contains("claims 1000000 records but holds 2"), "{}", r.message);
    // The high watermark did not move.
    let ok = c.produce("liar", 0, Acks::Leader, batch("y", 1, ProducerStamp::NONE, Compression::None)).await.unwrap();
    assert_eq!(ok.base_offset, 0);
}

#[tokio::test]
async fn one_request_auto_creates_a_bounded_number_of_topics_and_the_broker_holds_at_most_max_topics() {
    let b = TestBroker::start_with(|c| {
        c.max_topics = 12;
        c.max_auto_create_per_request = 5;
    })
    .await;
    let mut c = b.client("alice").await;
    let names: Vec<String> = (0..40).map(|i| format!("auto-{i:02}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    // One Metadata request naming 40 missing topics creates 5; the rest are answered
    // RESOURCE_LIMIT (retriable: the next request creates the next ones).
    let md = c.metadata(&refs).await.unwrap();
    let created = md.topics.iter().filter(|t| t.error == ErrorCode::None).count();
    let limited = md.topics.iter().filter(|t| t.error == ErrorCode::ResourceLimit).count();
    assert_eq!((created, limited), (5, 35), "{md:?}");
    assert_eq!(c.list_topics().await.unwrap().len(), 5);
    let md = c.metadata(&refs).await.unwrap();
    assert_eq!(md.topics.iter().filter(|t| t.error == ErrorCode::None).count(), 10);
    // The broker-wide limit: 12 topics, then TOPIC_LIMIT_REACHED (not retriable) for
    // auto-create by metadata or produce, and for CreateTopic.
    let md = c.metadata(&refs).await.unwrap();
    assert_eq!(md.topics.iter().filter(|t| t.error == ErrorCode::None).count(), 12);
    assert!(md.topics.iter().any(|t| t.error == ErrorCode::TopicLimitReached), "{md:?}");
    let r =
        c.produce("one-more", 0, Acks::Leader, batch("x", 1, ProducerStamp::NONE, Compression::None)).await.unwrap();
    assert_eq!(r.error, ErrorCode::TopicLimitReached, "{}", r.message);
    let e = c.create_topic("one-more", 1).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::TopicLimitReached), "{e}");
    assert!(!ErrorCode::TopicLimitReached.is_retriable());
    assert_eq!(c.list_topics().await.unwrap().len(), 12);
    // Existing topics keep working.
    let r = c.produce("auto-00", 0, Acks::All, batch("x", 1, ProducerStamp::NONE, Compression::None)).await.unwrap();
    assert_eq!(r.error, ErrorCode::None, "{}", r.message);
}

/// A one-record batch of exactly `size` bytes.
fn batch_of_size(size: usize) -> bytes::Bytes {
    let mut value = size.saturating_sub(100);
    loop {
        let mut b = qwire::protocol::BatchBuilder::new();
        b.push(&qwire::protocol::Record {
            timestamp: 1,
            key: None,
            value: Some(bytes::Bytes::from(vec![b'v'; value])),
            headers: vec![],
        });
        let sealed = b.seal(Compression::None, None, ProducerStamp::NONE);
        match sealed.len().cmp(&size) {
            std::cmp::Ordering::Equal => return sealed,
            std::cmp::Ordering::Less => value += 1,
            std::cmp::Ordering::Greater => value -= 1,
        }
    }
}

#[tokio::test]
async fn every_batch_the_broker_stores_can_be_fetched_and_hello_ok_says_how_large_they_may_be() {
    let b = TestBroker::start_with(|c| c.max_frame_size = 1 << 20).await;
    let mut c = b.client("alice").await;
    let hello = c.connection().hello().clone();
    let limit = hello.max_batch_bytes as usize;
    assert_eq!(limit, b.config.batch_limit() as usize);
    assert!(hello.max_fetch_bytes as usize >= limit && hello.max_fetch_bytes <= hello.max_frame_size);
    assert_eq!(hello.max_in_flight_per_partition, 5);
    assert_eq!(u64::from(hello.max_unfinished_frame_bytes), b.config.max_buffered_bytes_per_connection);
    assert_eq!(u64::from(hello.max_response_bytes), b.config.max_response_bytes_per_connection);
    // A batch that fits a produce frame but is larger than the limit: refused, not stored
    // (it could never be fetched: a fetch response frame has more around its batches).
    let too_large = batch_of_size((hello.max_frame_size - 40) as usize);
    let r = c.produce("b", 0, Acks::All, too_large).await.unwrap();
    assert_eq!((r.error, r.base_offset), (ErrorCode::BatchTooLarge, -1), "{}", r.message);
    assert!(!ErrorCode::BatchTooLarge.is_retriable());
    // The largest allowed batch is stored, and fetched whole even when less is asked for.
    for _ in 0..3 {
        let r = c.produce("b", 0, Acks::All, batch_of_size(limit)).await.unwrap();
        assert_eq!(r.error, ErrorCode::None, "{}", r.message);
    }
    let f = c.fetch("b", 0, 1, 1).await.unwrap();
    assert_eq!(f.batches.len(), limit);
    // However much is asked for, a response stays within max_fetch_bytes.
    let f = c.fetch("b", 0, 0, u32::MAX).await.unwrap();
    assert!(!f.batches.is_empty() && f.batches.len() <= hello.max_fetch_bytes as usize, "{}", f.batches.len());
    assert_eq!(c.fetch_all("b", 0, 0).await.unwrap().len(), 3);
}

/// `batch` with its records section recompressed as a zstd frame whose header carries no
/// content size, the CRC fixed.
fn zstd_without_content_size(batch: &[u8]) -> bytes::Bytes {
    let section = &batch[57..];
    let mut z = zstd::bulk::Compressor::new(3).unwrap();
    z.set_parameter(zstd::stream::raw::CParameter::ContentSizeFlag(false)).unwrap();
    let compressed = z.compress(section).unwrap();
    assert!(matches!(zstd::zstd_safe::get_frame_content_size(&compressed), Ok(None)));
    let mut b = BytesMut::from(&batch[..57]);
    b[8..12].copy_from_slice(&((45 + compressed.len()) as u32).to_be_bytes());
    b[17..19].copy_from_slice(&4u16.to_be_bytes());
    b.put_slice(&compressed);
    let crc = crc32c::crc32c(&b[17..]);
    b[13..17].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

#[tokio::test]
async fn a_batch_that_can_never_be_stored_is_refused_as_not_retriable_and_the_stream_goes_on() {
    let b = TestBroker::start().await;
    let mut c = b.client("alice").await;
    let good = batch("g", 3, ProducerStamp::NONE, Compression::None);
    let mut bad_crc = BytesMut::from(&good[..]);
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 1;
    let mut trailing = BytesMut::from(&good[..]);
    trailing.put_u8(0);
    let cases = [
        ("a record byte changed after sealing (CRC mismatch)", bad_crc.freeze()),
        ("a byte after the batch", trailing.freeze()),
        ("a zstd frame without its content size", zstd_without_content_size(&good)),
    ];
    for (what, bytes) in cases {
        let r = c.produce("never", 0, Acks::All, bytes).await.unwrap();
        assert_eq!((r.error, r.base_offset), (ErrorCode::CorruptBatch, -1), "{what}: {}", r.message);
        // Resending the same bytes can only fail again (QUIC delivers them unaltered).
        assert!(!r.error.is_retriable(), "{what}");
    }
    let r = c.produce("never", 0, Acks::All, good).await.unwrap();
    assert_eq!((r.error, r.base_offset), (ErrorCode::None, 0), "{}", r.message);
    assert_eq!(c.fetch_all("never", 0, 0).await.unwrap().len(), 3);
}

#[tokio::test]
async fn unsupported_version_is_answered_and_the_stream_stays_usable() {
    let b = TestBroker::start().await;
    let c = b.client("alice").await;
    let mut s = c.open_stream().await.unwrap();
    let hello = |version, correlation_id| Frame {
        correlation_id,
        payload: Payload::Hello(qwire::protocol::frame::Hello { version, client_id: "v".into() }),
    };
    s.send(&hello(99, 1)).await.unwrap();
    let f = s.recv().await.unwrap().unwrap();
    assert!(matches!(f.payload, Payload::Error(ref e) if e.code == ErrorCode::UnsupportedVersion), "{f:?}");
    assert_eq!(f.correlation_id, 1);
    s.send(&hello(qwire::protocol::PROTOCOL_VERSION, 2)).await.unwrap();
    let f = s.recv().await.unwrap().unwrap();
    assert!(matches!(f.payload, Payload::HelloOk(_)), "{f:?}");
    assert_eq!(f.correlation_id, 2);
}

/// A batch stored while the broker allowed larger batches than it does now (its
/// `max_batch_bytes` was lowered across a restart): a fetch at it is answered
/// `BATCH_TOO_LARGE`, never a `FetchOk` holding more than the `max_fetch_bytes` HelloOk
/// announced (the broker used to check only the frame size); the smaller batches around
/// it are still served.
#[tokio::test]
async fn a_fetch_never_holds_more_than_max_fetch_bytes_even_for_a_batch_stored_under_a_larger_limit() {
    let mut b = TestBroker::start().await;
    let mut c = b.client("alice").await;
    for size in [2000, 100_000, 2000] {
        let r = c.produce("shrunk", 0, Acks::All, batch_of_size(size)).await.unwrap();
        assert_eq!(r.error, ErrorCode::None, "{}", r.message);
    }
    drop(c);
    b.stop().await;
    b.config.max_batch_bytes = 16 * 1024;
    b.restart_broker().await;
    let c = b.client("alice").await;
    assert_eq!(c.connection().hello().max_fetch_bytes, 16 * 1024);
    let mut s = c.open_stream().await.unwrap();
    let fetch = |offset| {
        Payload::Fetch(qwire::protocol::frame::Fetch {
            topic: "shrunk".into(),
            partition: 0,
            offset,
            max_bytes: u32::MAX,
        })
    };
    match s.call(fetch(0)).await.unwrap() {
        Payload::FetchOk(f) => assert_eq!(f.batches.len(), 2000, "only the small first batch fits"),
        other => panic!("{:?}", other.kind()),
    }
    match s.call(fetch(1)).await {
        Err(TransportError::Broker { code, message, .. }) => {
            assert_eq!(code, ErrorCode::BatchTooLarge, "{message}");
            assert!(message.contains("100000") && message.contains("larger limit"), "{message}");
        }
        Ok(Payload::FetchOk(f)) => panic!("a FetchOk of {} batch bytes to a client told 16 KiB", f.batches.len()),
        Ok(other) => panic!("{:?}", other.kind()),
        Err(e) => panic!("{e}"),
    }
    match s.call(fetch(2)).await.unwrap() {
        Payload::FetchOk(f) => assert_eq!(f.batches.len(), 2000),
        other => panic!("{:?}", other.kind()),
    }
}

/// Metadata was built whole and only then charged (capped at the budget), with no bound:
/// a request naming the same topics of many partitions again and again made the broker
/// build an answer many times its frame limit. Now it is charged first and bounded by the
/// frame limit: entries that do not fit are RESOURCE_LIMIT without partitions.
#[tokio::test]
async fn a_metadata_answer_is_bounded_by_the_frame_limit() {
    let frame_limit = 4096u32;
    let b = TestBroker::start_with(|c| c.max_frame_size = frame_limit).await;
    let mut c = b.client("alice").await;
    let names = ["m0", "m1", "m2", "m3"];
    for n in names {
        c.create_topic(n, 40).await.unwrap();
    }
    // 80 entries of 40 partitions: about 100 KiB if built whole.
    let asked: Vec<&str> = names.iter().copied().cycle().take(80).collect();
    let m = c.metadata(&asked).await.unwrap();
    let encoded = |m: &qwire::protocol::frame::MetadataOk| {
        Frame { correlation_id: 0, payload: Payload::MetadataOk(m.clone()) }.encoded_len()
    };
    assert!(encoded(&m) <= frame_limit as usize, "answer of {} bytes", encoded(&m));
    let described = m.topics.iter().filter(|t| t.error == ErrorCode::None).count();
    assert!((1..4).contains(&described), "{described} topics of 40 partitions in a 4 KiB answer");
    for t in &m.topics {
        match t.error {
            ErrorCode::None => assert_eq!(t.partitions.len(), 40),
            e => assert_eq!((e, t.partitions.len()), (ErrorCode::ResourceLimit, 0), "{}", t.name),
        }
    }
    // The listing too.
    let all = c.metadata(&[]).await.unwrap();
    assert!(encoded(&all) <= frame_limit as usize);
    assert_eq!(all.topics.len(), 4, "every topic is listed, described or not");
    // A small request is answered whole; every charge is given back.
    let one = c.metadata(&["m1"]).await.unwrap();
    assert_eq!((one.topics.len(), one.topics[0].partitions.len()), (1, 40));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while b.handle.as_ref().unwrap().metrics().response_bytes_queued != 0 {
        assert!(std::time::Instant::now() < deadline, "metadata charges were not given back");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
