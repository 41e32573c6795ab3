//! Tests for `frame.rs`: byte vectors (the wire contract), round trips, bad input.
//!
//! The byte vectors are written by hand from the layout in `PROTOCOL.md` / the frame
//! docs, field by field; they are not captured encoder output. If one of them fails, the
//! encoder changed the wire format.

use super::*;
use proptest::prelude::*;

/// Parses a hex string; whitespace and `|` (used to separate fields) are ignored.
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| b.is_ascii_hexdigit()).collect();
    assert_eq!(digits.len() % 2, 0, "odd number of hex digits in {s:?}");
    digits.chunks(2).map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap()).collect()
}

fn encode(frame: &Frame) -> Vec<u8> {
    let mut buf = BytesMut::new();
    frame.encode(&mut buf);
    buf.to_vec()
}

fn frame(correlation_id: u32, payload: Payload) -> Frame {
    Frame { correlation_id, payload }
}

/// Asserts that `f` encodes to exactly `want`, that `encoded_len` agrees, and that
/// decoding `want` followed by other bytes gives `f` back and leaves those bytes alone.
fn assert_vector(f: &Frame, want: &[u8]) {
    assert_eq!(encode(f), want, "encoding of {f:?}");
    assert_eq!(f.encoded_len(), want.len(), "encoded_len of {f:?}");
    let trailer = [0xde, 0xad, 0xbe, 0xef];
    let mut buf = BytesMut::from(want);
    buf.extend_from_slice(&trailer);
    assert_eq!(Frame::decode(&mut buf, MAX_FRAME_SIZE).unwrap().as_ref(), Some(f));
    assert_eq!(&buf[..], &trailer[..], "decode must consume exactly the frame");
}

/// Builds a raw frame from its parts, with a correct length prefix.
fn raw_frame(kind: u8, correlation_id: u32, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(FRAME_HEADER_LEN + body.len());
    v.extend_from_slice(&((MIN_FRAME_LENGTH + body.len()) as u32).to_be_bytes());
    v.push(kind);
    v.extend_from_slice(&correlation_id.to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// A small valid frame appended after bad ones to prove the stream resumes.
fn sentinel() -> Frame {
    frame(0xcafe_f00d, Payload::Error(ErrorFrame { code: ErrorCode::None, message: "next".into() }))
}

/// Decodes `bytes` followed by the sentinel; expects a resumable error with the given
/// correlation id, then the sentinel.
fn decode_bad_then_sentinel(bytes: &[u8], correlation_id: u32) -> FrameError {
    let mut buf = BytesMut::from(bytes);
    buf.extend_from_slice(&encode(&sentinel()));
    let err = Frame::decode(&mut buf, MAX_FRAME_SIZE).expect_err("bad frame must be rejected");
    assert!(err.resumable, "{err}");
    assert_eq!(err.correlation_id, Some(correlation_id));
    assert_eq!(Frame::decode(&mut buf, MAX_FRAME_SIZE).unwrap(), Some(sentinel()));
    assert!(buf.is_empty());
    err
}

// ---------------------------------------------------------------------------------------
// Byte vectors: one (or more) per frame kind.
// ---------------------------------------------------------------------------------------

fn hello() -> (Frame, Vec<u8>) {
    let f = frame(0x0102_0304, Payload::Hello(Hello { version: 1, client_id: "cli".into() }));
    // length 12 = 5 + version 2 + client_id (2 + 3)
    let b = hex("0000000c | 01 | 01020304 | 0001 | 0003 636c69");
    (f, b)
}

fn init_producer_id() -> (Frame, Vec<u8>) {
    let f = frame(7, Payload::InitProducerId(InitProducerId { producer_id: -1, producer_epoch: -1 }));
    // length 15 = 5 + producer_id 8 + producer_epoch 2
    let b = hex("0000000f | 02 | 00000007 | ffffffffffffffff | ffff");
    (f, b)
}

fn metadata() -> (Frame, Vec<u8>) {
    let f = frame(8, Payload::Metadata(Metadata { topics: vec!["a".into(), "bc".into()] }));
    // length 14 = 5 + count 2 + "a" (2 + 1) + "bc" (2 + 2)
    let b = hex("0000000e | 03 | 00000008 | 0002 | 0001 61 | 0002 6263");
    (f, b)
}

fn metadata_all() -> (Frame, Vec<u8>) {
    let f = frame(9, Payload::Metadata(Metadata { topics: vec![] }));
    let b = hex("00000007 | 03 | 00000009 | 0000");
    (f, b)
}

fn create_topic() -> (Frame, Vec<u8>) {
    let f = frame(9, Payload::CreateTopic(CreateTopic { topic: "t".into(), partitions: 3 }));
    // length 12 = 5 + "t" (2 + 1) + partitions 4
    let b = hex("0000000c | 04 | 00000009 | 0001 74 | 00000003");
    (f, b)
}

fn produce() -> (Frame, Vec<u8>) {
    let f = frame(
        10,
        Payload::Produce(Produce {
            topic: "t".into(),
            partition: 2,
            acks: Acks::Leader,
            timeout_ms: 1500,
            batch: Bytes::from_static(&[0xaa, 0xbb]),
        }),
    );
    // length 19 = 5 + "t" 3 + partition 4 + acks 1 + timeout 4 + batch 2 (opaque here)
    let b = hex("00000013 | 05 | 0000000a | 0001 74 | 00000002 | 01 | 000005dc | aabb");
    (f, b)
}

fn fetch() -> (Frame, Vec<u8>) {
    let f = frame(11, Payload::Fetch(Fetch { topic: "t".into(), partition: 0, offset: 42, max_bytes: 1 << 20 }));
    // length 24 = 5 + "t" 3 + partition 4 + offset 8 + max_bytes 4
    let b = hex("00000018 | 06 | 0000000b | 0001 74 | 00000000 | 000000000000002a | 00100000");
    (f, b)
}

fn hello_ok() -> (Frame, Vec<u8>) {
    let f = frame(
        0x0102_0304,
        Payload::HelloOk(HelloOk {
            version: 1,
            broker_id: 7,
            principal: "cn".into(),
            max_frame_size: 16 << 20,
            max_batch_bytes: 0x00ff_ffc0,
            max_fetch_bytes: 0x00ff_ffc0,
            max_in_flight_per_partition: 5,
            max_unfinished_frame_bytes: 32 << 20,
            max_response_bytes: 16 << 20,
            features: HelloOk::PER_PARTITION_EPOCHS,
        }),
    );
    // length 41 = 5 + version 2 + broker_id 4 + "cn" 4 + max_frame_size 4 + max_batch_bytes 4
    //   + max_fetch_bytes 4 + max_in_flight_per_partition 2 + max_unfinished_frame_bytes 4
    //   + max_response_bytes 4 + features 4
    let b = hex(
        "00000029 | 81 | 01020304 | 0001 | 00000007 | 0002 636e | 01000000 | 00ffffc0 | 00ffffc0 | 0005 | 02000000 \
         | 01000000 | 00000001",
    );
    (f, b)
}

fn init_producer_id_ok() -> (Frame, Vec<u8>) {
    let f =
        frame(7, Payload::InitProducerIdOk(InitProducerIdOk { producer_id: 0x0102_0304_0506_0708, producer_epoch: 3 }));
    let b = hex("0000000f | 82 | 00000007 | 0102030405060708 | 0003");
    (f, b)
}

fn metadata_ok() -> (Frame, Vec<u8>) {
    let f = frame(
        8,
        Payload::MetadataOk(MetadataOk {
            brokers: vec![BrokerInfo { id: 1, host: "h".into(), port: 7878 }],
            topics: vec![
                TopicMetadata {
                    name: "t".into(),
                    error: ErrorCode::None,
                    partitions: vec![PartitionMetadata {
                        partition: 0,
                        leader: 1,
                        log_start_offset: 0,
                        end_offset: 5,
                        size_bytes: 100,
                    }],
                },
                TopicMetadata { name: "x".into(), error: ErrorCode::UnknownTopicOrPartition, partitions: vec![] },
            ],
        }),
    );
    // body 63 = brokers (2 + 4 + 3 + 2) + topics (2 + [3 + 2 + 4 + 32] + [3 + 2 + 4])
    let b = hex("00000044 | 83 | 00000008 \
         | 0001 | 00000001 0001 68 1ec6 \
         | 0002 \
         | 0001 74 | 0000 | 00000001 \
         | 00000000 00000001 0000000000000000 0000000000000005 0000000000000064 \
         | 0001 78 | 0007 | 00000000");
    (f, b)
}

fn create_topic_ok() -> (Frame, Vec<u8>) {
    let f = frame(9, Payload::CreateTopicOk(CreateTopic { topic: "t".into(), partitions: 3 }));
    let b = hex("0000000c | 84 | 00000009 | 0001 74 | 00000003");
    (f, b)
}

fn produce_result_ok() -> (Frame, Vec<u8>) {
    let f = frame(
        10,
        Payload::ProduceResult(ProduceResult {
            error: ErrorCode::None,
            duplicate: true,
            base_offset: 100,
            log_append_time: 1_700_000_000_000,
            message: String::new(),
        }),
    );
    // length 26 = 5 + error 2 + flags 1 + base_offset 8 + log_append_time 8 + "" 2
    let b = hex("0000001a | 85 | 0000000a | 0000 | 01 | 0000000000000064 | 0000018bcfe56800 | 0000");
    (f, b)
}

fn produce_result_err() -> (Frame, Vec<u8>) {
    let f = frame(
        10,
        Payload::ProduceResult(ProduceResult {
            error: ErrorCode::OutOfOrderSequence,
            duplicate: false,
            base_offset: -1,
            log_append_time: -1,
            message: "seq".into(),
        }),
    );
    let b = hex("0000001d | 85 | 0000000a | 000c | 00 | ffffffffffffffff | ffffffffffffffff | 0003 736571");
    (f, b)
}

fn fetch_ok() -> (Frame, Vec<u8>) {
    let f = frame(
        11,
        Payload::FetchOk(FetchOk { high_watermark: 10, log_start_offset: 0, batches: Bytes::from_static(&[1, 2, 3]) }),
    );
    // length 24 = 5 + high_watermark 8 + log_start_offset 8 + batches 3 (opaque here)
    let b = hex("00000018 | 86 | 0000000b | 000000000000000a | 0000000000000000 | 010203");
    (f, b)
}

fn error_frame() -> (Frame, Vec<u8>) {
    let f = frame(12, Payload::Error(ErrorFrame { code: ErrorCode::UnknownTopicOrPartition, message: "no".into() }));
    // length 11 = 5 + code 2 + "no" (2 + 2)
    let b = hex("0000000b | ff | 0000000c | 0007 | 0002 6e6f");
    (f, b)
}

/// Every vector, covering every kind (the cluster kinds' vectors live in
/// `cluster_tests.rs`).
fn vectors() -> Vec<(Frame, Vec<u8>)> {
    let mut v = vec![
        hello(),
        init_producer_id(),
        metadata(),
        metadata_all(),
        create_topic(),
        produce(),
        fetch(),
        hello_ok(),
        init_producer_id_ok(),
        metadata_ok(),
        create_topic_ok(),
        produce_result_ok(),
        produce_result_err(),
        fetch_ok(),
        error_frame(),
    ];
    v.extend(crate::protocol::cluster::tests::vectors());
    v.extend(crate::protocol::sasl::tests::vectors());
    v.extend(crate::protocol::schema::tests::vectors());
    v
}

/// Kinds whose body ends with an opaque byte run (the batch bytes), so extra bytes at the
/// end are part of the payload rather than trailing garbage.
fn has_opaque_tail(kind: FrameKind) -> bool {
    matches!(kind, FrameKind::Produce | FrameKind::FetchOk | FrameKind::ReplicaFetchOk)
}

/// Kinds that later versions may extend by appending fields: a decoder ignores bytes after
/// the fields it knows.
fn is_extensible(kind: FrameKind) -> bool {
    kind == FrameKind::HelloOk
}

const ALL_KINDS: [FrameKind; 54] = [
    FrameKind::Hello,
    FrameKind::InitProducerId,
    FrameKind::Metadata,
    FrameKind::CreateTopic,
    FrameKind::Produce,
    FrameKind::Fetch,
    FrameKind::HelloOk,
    FrameKind::InitProducerIdOk,
    FrameKind::MetadataOk,
    FrameKind::CreateTopicOk,
    FrameKind::ProduceResult,
    FrameKind::FetchOk,
    FrameKind::Error,
    FrameKind::ReplicaFetch,
    FrameKind::OffsetForLeaderEpoch,
    FrameKind::DescribeCluster,
    FrameKind::DescribeTopics,
    FrameKind::CreateReplicatedTopic,
    FrameKind::AlterPartitions,
    FrameKind::ReplicaFetchOk,
    FrameKind::OffsetForLeaderEpochOk,
    FrameKind::DescribeClusterOk,
    FrameKind::DescribeTopicsOk,
    FrameKind::CreateReplicatedTopicOk,
    FrameKind::AlterPartitionsOk,
    FrameKind::NotLeader,
    FrameKind::SaslStart,
    FrameKind::SaslContinue,
    FrameKind::SaslStartOk,
    FrameKind::SaslContinueOk,
    FrameKind::SchemaRegister,
    FrameKind::SchemaLookup,
    FrameKind::SchemaGetById,
    FrameKind::SchemaGetVersion,
    FrameKind::SchemaListVersions,
    FrameKind::SchemaListSubjects,
    FrameKind::SchemaCheck,
    FrameKind::SchemaDelete,
    FrameKind::SchemaGetConfig,
    FrameKind::SchemaSetConfig,
    FrameKind::SetTopicSchemaPolicy,
    FrameKind::GetTopicSchemaPolicy,
    FrameKind::SchemaRegisterOk,
    FrameKind::SchemaLookupOk,
    FrameKind::SchemaById,
    FrameKind::SchemaVersion,
    FrameKind::SchemaVersions,
    FrameKind::SchemaSubjects,
    FrameKind::SchemaCheckOk,
    FrameKind::SchemaDeleted,
    FrameKind::SchemaConfig,
    FrameKind::SchemaConfigSet,
    FrameKind::TopicSchemaPolicySet,
    FrameKind::TopicSchemaPolicy,
];

#[test]
fn hello_vector() {
    let (f, b) = hello();
    assert_vector(&f, &b);
}

#[test]
fn init_producer_id_vector() {
    let (f, b) = init_producer_id();
    assert_vector(&f, &b);
}

#[test]
fn metadata_vectors() {
    let (f, b) = metadata();
    assert_vector(&f, &b);
    let (f, b) = metadata_all();
    assert_vector(&f, &b);
}

#[test]
fn create_topic_vector() {
    let (f, b) = create_topic();
    assert_vector(&f, &b);
}

#[test]
fn produce_vector() {
    let (f, b) = produce();
    assert_vector(&f, &b);
}

#[test]
fn fetch_vector() {
    let (f, b) = fetch();
    assert_vector(&f, &b);
}

#[test]
fn hello_ok_vector() {
    let (f, b) = hello_ok();
    assert_vector(&f, &b);
}

#[test]
fn init_producer_id_ok_vector() {
    let (f, b) = init_producer_id_ok();
    assert_vector(&f, &b);
}

#[test]
fn metadata_ok_vector() {
    let (f, b) = metadata_ok();
    assert_vector(&f, &b);
}

#[test]
fn create_topic_ok_vector() {
    let (f, b) = create_topic_ok();
    assert_vector(&f, &b);
}

#[test]
fn produce_result_vectors() {
    let (f, b) = produce_result_ok();
    assert_vector(&f, &b);
    let (f, b) = produce_result_err();
    assert_vector(&f, &b);
}

#[test]
fn fetch_ok_vector() {
    let (f, b) = fetch_ok();
    assert_vector(&f, &b);
}

#[test]
fn error_vector() {
    let (f, b) = error_frame();
    assert_vector(&f, &b);
}

/// The worked example in `PROTOCOL.md`: a `Produce` frame carrying a one-record batch.
/// The expected bytes (CRC included) were computed independently of this crate.
#[test]
fn protocol_md_worked_example() {
    use crate::protocol::batch::{BatchBuilder, ProducerStamp};
    use crate::protocol::{Compression, Header, Record};

    let mut b = BatchBuilder::new();
    b.push(&Record {
        timestamp: 1_700_000_000_000,
        key: Some(Bytes::from_static(b"k")),
        value: Some(Bytes::from_static(b"hello")),
        headers: vec![Header { key: "h".into(), value: Some(Bytes::from_static(b"v")) }],
    });
    let stamp = ProducerStamp { producer_id: 1000, producer_epoch: 0, base_sequence: 0 };
    let batch = b.seal(Compression::None, None, stamp);
    let f = frame(
        1,
        Payload::Produce(Produce { topic: "events".into(), partition: 0, acks: Acks::All, timeout_ms: 30_000, batch }),
    );
    let want = hex("00000060 | 05 | 00000001 | 0006 6576656e7473 | 00000000 | 02 | 00007530 \
         | 0000000000000000 | 0000003e | 01 | 0d1bc748 | 0000 | 00000000 \
         | 0000018bcfe56800 | 0000018bcfe56800 | 00000000000003e8 | 0000 | 00000000 | 00000001 \
         | 20 | 00 | 00 | 00 | 02 6b | 0a 68656c6c6f | 02 | 02 68 | 02 76");
    assert_eq!(want.len(), 100);
    assert_vector(&f, &want);
}

#[test]
fn vectors_cover_every_kind() {
    let covered: std::collections::HashSet<FrameKind> = vectors().iter().map(|(f, _)| f.payload.kind()).collect();
    for k in ALL_KINDS {
        assert!(covered.contains(&k), "no byte vector for {k:?}");
    }
    for (f, b) in vectors() {
        assert_eq!(b[4], f.payload.kind() as u8, "kind byte of {f:?}");
    }
}

#[test]
fn kind_bytes_are_the_documented_ones() {
    let want: [(FrameKind, u8); 30] = [
        (FrameKind::Hello, 0x01),
        (FrameKind::InitProducerId, 0x02),
        (FrameKind::Metadata, 0x03),
        (FrameKind::CreateTopic, 0x04),
        (FrameKind::Produce, 0x05),
        (FrameKind::Fetch, 0x06),
        (FrameKind::HelloOk, 0x81),
        (FrameKind::InitProducerIdOk, 0x82),
        (FrameKind::MetadataOk, 0x83),
        (FrameKind::CreateTopicOk, 0x84),
        (FrameKind::ProduceResult, 0x85),
        (FrameKind::FetchOk, 0x86),
        (FrameKind::Error, 0xff),
        (FrameKind::ReplicaFetch, 0x10),
        (FrameKind::OffsetForLeaderEpoch, 0x11),
        (FrameKind::DescribeCluster, 0x12),
        (FrameKind::DescribeTopics, 0x13),
        (FrameKind::CreateReplicatedTopic, 0x14),
        (FrameKind::AlterPartitions, 0x15),
        (FrameKind::ReplicaFetchOk, 0x90),
        (FrameKind::OffsetForLeaderEpochOk, 0x91),
        (FrameKind::DescribeClusterOk, 0x92),
        (FrameKind::DescribeTopicsOk, 0x93),
        (FrameKind::CreateReplicatedTopicOk, 0x94),
        (FrameKind::AlterPartitionsOk, 0x95),
        (FrameKind::NotLeader, 0x9f),
        (FrameKind::SaslStart, 0x30),
        (FrameKind::SaslContinue, 0x31),
        (FrameKind::SaslStartOk, 0xb0),
        (FrameKind::SaslContinueOk, 0xb1),
    ];
    for (k, v) in want {
        assert_eq!(k as u8, v);
        assert_eq!(FrameKind::from_u8(v).unwrap(), k);
    }
}

#[test]
fn acks_wire_values() {
    assert_eq!(Acks::None.as_u8(), 0);
    assert_eq!(Acks::Leader.as_u8(), 1);
    assert_eq!(Acks::All.as_u8(), 2);
    for v in 0..=255u8 {
        match Acks::from_u8(v) {
            Ok(a) => assert_eq!(a.as_u8(), v),
            Err(e) => {
                assert!(v > 2);
                assert_eq!(e, DecodeError::InvalidValue { field: "acks", value: v as i64 });
            }
        }
    }
}

#[test]
fn frame_head_peek_reads_the_fixed_part() {
    let (_, b) = produce();
    assert_eq!(FrameHead::peek(&b[..FRAME_HEADER_LEN - 1]).unwrap(), None);
    let head = FrameHead::peek(&b[..FRAME_HEADER_LEN]).unwrap().unwrap();
    assert_eq!(head, FrameHead { length: 19, kind: 0x05, correlation_id: 10 });
    assert_eq!(head.total_len(), b.len());
}

// ---------------------------------------------------------------------------------------
// Bad input.
// ---------------------------------------------------------------------------------------

#[test]
fn every_unknown_kind_is_rejected_and_skipped() {
    let mut known = 0;
    for kind in 0..=255u8 {
        if let Ok(k) = FrameKind::from_u8(kind) {
            assert_eq!(k as u8, kind);
            known += 1;
            continue;
        }
        let bytes = raw_frame(kind, 0x1122_3344, &[1, 2, 3]);
        let err = decode_bad_then_sentinel(&bytes, 0x1122_3344);
        assert_eq!(err.error, DecodeError::UnknownFrameKind { kind });
        assert_eq!(err.code(), ErrorCode::UnknownFrameKind);
        // Also with an empty body.
        let err = decode_bad_then_sentinel(&raw_frame(kind, 5, &[]), 5);
        assert_eq!(err.error, DecodeError::UnknownFrameKind { kind });
    }
    assert_eq!(known, ALL_KINDS.len());
}

#[test]
fn every_strict_prefix_needs_more_bytes() {
    for (f, b) in vectors() {
        for n in 0..b.len() {
            let mut buf = BytesMut::from(&b[..n]);
            assert_eq!(Frame::decode(&mut buf, MAX_FRAME_SIZE), Ok(None), "{f:?} cut at {n}");
            assert_eq!(&buf[..], &b[..n], "nothing may be consumed");
        }
    }
}

#[test]
fn length_below_five_is_fatal() {
    for len in 0..MIN_FRAME_LENGTH as u32 {
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0x01, 0, 0, 0, 9, 0, 0, 0]);
        let mut buf = BytesMut::from(&bytes[..]);
        let err = Frame::decode(&mut buf, MAX_FRAME_SIZE).unwrap_err();
        assert_eq!(
            err,
            FrameError {
                correlation_id: None,
                error: DecodeError::FrameTooShort { len: len as usize, min: MIN_FRAME_LENGTH },
                resumable: false,
            }
        );
        assert_eq!(err.code(), ErrorCode::MalformedFrame);
        assert_eq!(&buf[..], &bytes[..], "nothing may be consumed");
    }
}

#[test]
fn length_above_max_is_fatal_and_keeps_the_correlation_id() {
    let max = 64;
    // Only the header has arrived: the error must not wait for the body.
    let mut bytes = ((max + 1) as u32).to_be_bytes().to_vec();
    bytes.push(0x05);
    bytes.extend_from_slice(&0xabcd_0123u32.to_be_bytes());
    let mut buf = BytesMut::from(&bytes[..]);
    let err = Frame::decode(&mut buf, max).unwrap_err();
    assert_eq!(
        err,
        FrameError {
            correlation_id: Some(0xabcd_0123),
            error: DecodeError::FrameTooLarge { len: max + 1, max },
            resumable: false,
        }
    );
    assert_eq!(err.code(), ErrorCode::FrameTooLarge);
    assert_eq!(&buf[..], &bytes[..], "nothing may be consumed");

    // Unknown kinds are too large before they are unknown.
    bytes[4] = 0x7f;
    let err = Frame::decode(&mut BytesMut::from(&bytes[..]), max).unwrap_err();
    assert!(matches!(err.error, DecodeError::FrameTooLarge { .. }));
}

#[test]
fn length_equal_to_max_is_accepted() {
    let max = 64;
    // length = 5 + 2 (code) + 2 + message
    let message = "m".repeat(max - MIN_FRAME_LENGTH - 4);
    let f = frame(1, Payload::Error(ErrorFrame { code: ErrorCode::Unknown, message }));
    let bytes = encode(&f);
    assert_eq!(bytes.len(), 4 + max);
    assert_eq!(Frame::decode(&mut BytesMut::from(&bytes[..]), max).unwrap(), Some(f.clone()));
    let err = Frame::decode(&mut BytesMut::from(&bytes[..]), max - 1).unwrap_err();
    assert_eq!(err.error, DecodeError::FrameTooLarge { len: max, max: max - 1 });
}

#[test]
fn max_frame_is_capped_at_the_hard_limit() {
    let mut bytes = ((MAX_FRAME_SIZE + 1) as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(&[0x05, 0, 0, 0, 1]);
    let err = Frame::decode(&mut BytesMut::from(&bytes[..]), usize::MAX).unwrap_err();
    assert_eq!(err.error, DecodeError::FrameTooLarge { len: MAX_FRAME_SIZE + 1, max: MAX_FRAME_SIZE });
    assert!(!err.resumable);
}

#[test]
fn empty_body_is_malformed_for_every_kind() {
    // DescribeCluster is the one kind whose body is empty.
    for kind in ALL_KINDS.into_iter().filter(|k| *k != FrameKind::DescribeCluster) {
        let err = decode_bad_then_sentinel(&raw_frame(kind as u8, 77, &[]), 77);
        assert!(matches!(err.error, DecodeError::UnexpectedEof { .. }), "{kind:?}: {err}");
        assert_eq!(err.code(), ErrorCode::MalformedFrame);
    }
}

#[test]
fn short_body_is_malformed() {
    for (f, b) in vectors() {
        let kind = f.payload.kind();
        let body = &b[FRAME_HEADER_LEN..];
        // For opaque-tail kinds only the fixed part can be short.
        let fixed = match kind {
            FrameKind::Produce => body.len() - 2,
            FrameKind::FetchOk => body.len() - 3,
            FrameKind::ReplicaFetchOk => 28,
            _ => body.len(),
        };
        for cut in 0..fixed {
            let bytes = raw_frame(kind as u8, f.correlation_id, &body[..cut]);
            let err = decode_bad_then_sentinel(&bytes, f.correlation_id);
            assert!(matches!(err.error, DecodeError::UnexpectedEof { .. }), "{kind:?} cut {cut}: {err}");
            assert_eq!(err.code(), ErrorCode::MalformedFrame);
        }
    }
}

#[test]
fn trailing_bytes_in_a_body_are_rejected() {
    for (f, b) in vectors() {
        let kind = f.payload.kind();
        let mut body = b[FRAME_HEADER_LEN..].to_vec();
        body.push(0);
        let bytes = raw_frame(kind as u8, f.correlation_id, &body);
        if has_opaque_tail(kind) {
            // The batch bytes run to the end of the frame: the extra byte belongs to them.
            let got = Frame::decode(&mut BytesMut::from(&bytes[..]), MAX_FRAME_SIZE).unwrap().unwrap();
            assert_eq!(encode(&got), bytes);
            continue;
        }
        if is_extensible(kind) {
            // Fields a later version appended: ignored.
            let got = Frame::decode(&mut BytesMut::from(&bytes[..]), MAX_FRAME_SIZE).unwrap().unwrap();
            assert_eq!(got, f);
            continue;
        }
        let err = decode_bad_then_sentinel(&bytes, f.correlation_id);
        assert_eq!(err.error, DecodeError::TrailingBytes { what: "frame body", extra: 1 }, "{kind:?}");
        assert_eq!(err.code(), ErrorCode::MalformedFrame);
    }
}

#[test]
fn invalid_acks_are_rejected() {
    let (f, b) = produce();
    for acks in 3..=255u8 {
        let mut bytes = b.clone();
        bytes[FRAME_HEADER_LEN + 3 + 4] = acks;
        let err = decode_bad_then_sentinel(&bytes, f.correlation_id);
        assert_eq!(err.error, DecodeError::InvalidValue { field: "acks", value: acks as i64 });
    }
}

#[test]
fn invalid_error_codes_are_rejected() {
    let bad: [u16; 5] = [37, 999, 0x0100, 0x7fff, 0xffff];
    // (vector, offset of an error code inside the frame, the code the vector holds there)
    let sites = [
        (error_frame(), FRAME_HEADER_LEN, ErrorCode::UnknownTopicOrPartition),
        (produce_result_ok(), FRAME_HEADER_LEN, ErrorCode::None),
        // MetadataOk: broker count 2 + broker 9 + topic count 2 + name "t" 3
        (metadata_ok(), FRAME_HEADER_LEN + 2 + 9 + 2 + 3, ErrorCode::None),
    ];
    for ((f, b), at, holds) in sites {
        assert_eq!(&b[at..at + 2], &holds.as_u16().to_be_bytes()[..], "offset in {f:?}");
        for code in bad {
            let mut bytes = b.clone();
            bytes[at..at + 2].copy_from_slice(&code.to_be_bytes());
            let err = decode_bad_then_sentinel(&bytes, f.correlation_id);
            assert_eq!(err.error, DecodeError::InvalidValue { field: "error_code", value: code as i64 });
        }
    }
}

#[test]
fn invalid_produce_result_flags_are_rejected() {
    let (f, b) = produce_result_ok();
    for flags in 2..=255u8 {
        let mut bytes = b.clone();
        bytes[FRAME_HEADER_LEN + 2] = flags;
        let err = decode_bad_then_sentinel(&bytes, f.correlation_id);
        assert_eq!(err.error, DecodeError::InvalidValue { field: "flags", value: flags as i64 });
    }
}

#[test]
fn invalid_utf8_is_rejected() {
    let (f, b) = hello();
    let mut bytes = b.clone();
    bytes[FRAME_HEADER_LEN + 4] = 0xff; // first byte of "cli"
    let err = decode_bad_then_sentinel(&bytes, f.correlation_id);
    assert_eq!(err.error, DecodeError::InvalidUtf8 { field: "client_id" });
}

#[test]
fn huge_partition_count_fails_without_allocating() {
    // MetadataOk, no brokers, one topic "t" claiming u32::MAX partitions and holding none.
    let body = hex("0000 | 0001 | 0001 74 | 0000 | ffffffff");
    let err = decode_bad_then_sentinel(&raw_frame(0x83, 3, &body), 3);
    assert!(matches!(err.error, DecodeError::UnexpectedEof { field: "partitions", .. }), "{err}");
}

#[test]
fn long_strings_are_truncated_consistently() {
    // Strings longer than u16::MAX bytes are cut at a char boundary; encoded_len agrees.
    let message = "é".repeat(40_000); // 80 000 bytes
    let f = frame(1, Payload::Error(ErrorFrame { code: ErrorCode::Unknown, message }));
    let bytes = encode(&f);
    assert_eq!(bytes.len(), f.encoded_len());
    let got = Frame::decode(&mut BytesMut::from(&bytes[..]), MAX_FRAME_SIZE).unwrap().unwrap();
    let Payload::Error(e) = got.payload else { panic!("{got:?}") };
    assert_eq!(e.message.len(), 65_534);
    assert!(e.message.chars().all(|c| c == 'é'));
}

// ---------------------------------------------------------------------------------------
// Properties.
// ---------------------------------------------------------------------------------------

fn arb_string() -> impl Strategy<Value = String> {
    ".{0,24}"
}

fn arb_bytes() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..96).prop_map(Bytes::from)
}

fn arb_code() -> impl Strategy<Value = ErrorCode> {
    proptest::sample::select(ErrorCode::ALL.to_vec())
}

fn arb_acks() -> impl Strategy<Value = Acks> {
    prop_oneof![Just(Acks::None), Just(Acks::Leader), Just(Acks::All)]
}

fn arb_metadata_ok() -> impl Strategy<Value = MetadataOk> {
    let broker = (any::<u32>(), arb_string(), any::<u16>()).prop_map(|(id, host, port)| BrokerInfo { id, host, port });
    let partition = (any::<u32>(), any::<u32>(), any::<i64>(), any::<i64>(), any::<u64>()).prop_map(
        |(partition, leader, log_start_offset, end_offset, size_bytes)| PartitionMetadata {
            partition,
            leader,
            log_start_offset,
            end_offset,
            size_bytes,
        },
    );
    let topic = (arb_string(), arb_code(), proptest::collection::vec(partition, 0..4))
        .prop_map(|(name, error, partitions)| TopicMetadata { name, error, partitions });
    (proptest::collection::vec(broker, 0..4), proptest::collection::vec(topic, 0..4))
        .prop_map(|(brokers, topics)| MetadataOk { brokers, topics })
}

fn arb_payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        (any::<u16>(), arb_string()).prop_map(|(version, client_id)| Payload::Hello(Hello { version, client_id })),
        (any::<i64>(), any::<i16>()).prop_map(|(producer_id, producer_epoch)| {
            Payload::InitProducerId(InitProducerId { producer_id, producer_epoch })
        }),
        proptest::collection::vec(arb_string(), 0..6).prop_map(|topics| Payload::Metadata(Metadata { topics })),
        (arb_string(), any::<u32>())
            .prop_map(|(topic, partitions)| Payload::CreateTopic(CreateTopic { topic, partitions })),
        (arb_string(), any::<u32>(), arb_acks(), any::<u32>(), arb_bytes()).prop_map(
            |(topic, partition, acks, timeout_ms, batch)| {
                Payload::Produce(Produce { topic, partition, acks, timeout_ms, batch })
            }
        ),
        (arb_string(), any::<u32>(), any::<i64>(), any::<u32>()).prop_map(|(topic, partition, offset, max_bytes)| {
            Payload::Fetch(Fetch { topic, partition, offset, max_bytes })
        }),
        (
            (any::<u16>(), any::<u32>(), arb_string(), any::<u32>()),
            (any::<u32>(), any::<u32>(), any::<u16>(), any::<u32>(), any::<u32>(), any::<u32>())
        )
            .prop_map(
                |(
                    (version, broker_id, principal, max_frame_size),
                    (
                        max_batch_bytes,
                        max_fetch_bytes,
                        max_in_flight_per_partition,
                        max_unfinished,
                        max_response,
                        features,
                    ),
                )| {
                    Payload::HelloOk(HelloOk {
                        version,
                        broker_id,
                        principal,
                        max_frame_size,
                        max_batch_bytes,
                        max_fetch_bytes,
                        max_in_flight_per_partition,
                        max_unfinished_frame_bytes: max_unfinished,
                        max_response_bytes: max_response,
                        features,
                    })
                }
            ),
        (any::<i64>(), any::<i16>()).prop_map(|(producer_id, producer_epoch)| {
            Payload::InitProducerIdOk(InitProducerIdOk { producer_id, producer_epoch })
        }),
        arb_metadata_ok().prop_map(Payload::MetadataOk),
        (arb_string(), any::<u32>())
            .prop_map(|(topic, partitions)| Payload::CreateTopicOk(CreateTopic { topic, partitions })),
        (arb_code(), any::<bool>(), any::<i64>(), any::<i64>(), arb_string()).prop_map(
            |(error, duplicate, base_offset, log_append_time, message)| {
                Payload::ProduceResult(ProduceResult { error, duplicate, base_offset, log_append_time, message })
            }
        ),
        (any::<i64>(), any::<i64>(), arb_bytes()).prop_map(|(high_watermark, log_start_offset, batches)| {
            Payload::FetchOk(FetchOk { high_watermark, log_start_offset, batches })
        }),
        (arb_code(), arb_string()).prop_map(|(code, message)| Payload::Error(ErrorFrame { code, message })),
        crate::protocol::cluster::tests::arb_cluster_payload().prop_map(Payload::Cluster),
    ]
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    (any::<u32>(), arb_payload()).prop_map(|(correlation_id, payload)| Frame { correlation_id, payload })
}

proptest! {
    #[test]
    fn frames_round_trip_back_to_back(a in arb_frame(), b in arb_frame()) {
        let mut buf = BytesMut::new();
        a.encode(&mut buf);
        prop_assert_eq!(buf.len(), a.encoded_len());
        b.encode(&mut buf);
        prop_assert_eq!(buf.len(), a.encoded_len() + b.encoded_len());
        let second = buf[a.encoded_len()..].to_vec();

        let got_a = Frame::decode(&mut buf, MAX_FRAME_SIZE).unwrap();
        prop_assert_eq!(got_a.as_ref(), Some(&a));
        prop_assert_eq!(&buf[..], &second[..]);
        let got_b = Frame::decode(&mut buf, MAX_FRAME_SIZE).unwrap();
        prop_assert_eq!(got_b.as_ref(), Some(&b));
        prop_assert!(buf.is_empty());
        prop_assert_eq!(Frame::decode(&mut buf, MAX_FRAME_SIZE).unwrap(), None);
    }

    #[test]
    fn produce_head_plus_batch_equals_encode(
        correlation_id in any::<u32>(),
        topic in arb_string(),
        partition in any::<u32>(),
        acks in arb_acks(),
        timeout_ms in any::<u32>(),
        batch in arb_bytes(),
    ) {
        let f = Frame {
            correlation_id,
            payload: Payload::Produce(Produce { topic: topic.clone(), partition, acks, timeout_ms, batch: batch.clone() }),
        };
        let mut buf = BytesMut::new();
        encode_produce_head(&mut buf, correlation_id, &topic, partition, acks, timeout_ms, batch.len());
        buf.extend_from_slice(&batch);
        prop_assert_eq!(&buf[..], &encode(&f)[..]);
    }

    #[test]
    fn fetch_ok_head_plus_batches_equals_encode(
        correlation_id in any::<u32>(),
        high_watermark in any::<i64>(),
        log_start_offset in any::<i64>(),
        batches in arb_bytes(),
    ) {
        let f = Frame {
            correlation_id,
            payload: Payload::FetchOk(FetchOk { high_watermark, log_start_offset, batches: batches.clone() }),
        };
        let mut buf = BytesMut::new();
        encode_fetch_ok_head(&mut buf, correlation_id, high_watermark, log_start_offset, batches.len());
        buf.extend_from_slice(&batches);
        prop_assert_eq!(&buf[..], &encode(&f)[..]);
    }

    #[test]
    fn length_prefix_matches_the_frame(f in arb_frame()) {
        let bytes = encode(&f);
        let head = FrameHead::peek(&bytes).unwrap().unwrap();
        prop_assert_eq!(head.total_len(), bytes.len());
        prop_assert_eq!(head.kind, f.payload.kind() as u8);
        prop_assert_eq!(head.correlation_id, f.correlation_id);
    }

    #[test]
    fn strict_prefixes_of_any_frame_need_more(f in arb_frame(), cut in any::<prop::sample::Index>()) {
        let bytes = encode(&f);
        let n = cut.index(bytes.len());
        let mut buf = BytesMut::from(&bytes[..n]);
        prop_assert_eq!(Frame::decode(&mut buf, MAX_FRAME_SIZE), Ok(None));
        prop_assert_eq!(&buf[..], &bytes[..n]);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        data in proptest::collection::vec(any::<u8>(), 0..2048),
        max in 0usize..512,
    ) {
        decode_all(&data, max)?;
    }

    #[test]
    fn corrupted_frames_never_panic(
        frames in proptest::collection::vec(arb_frame(), 1..4),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
    ) {
        let mut data = Vec::new();
        for f in &frames {
            data.extend_from_slice(&encode(f));
        }
        for (at, v) in flips {
            let i = at.index(data.len());
            data[i] = v;
        }
        decode_all(&data, 4096)?;
    }
}

/// Decodes frames from `data` until more bytes are needed or framing is lost, checking
/// that every step either consumes bytes or stops.
fn decode_all(data: &[u8], max: usize) -> Result<(), TestCaseError> {
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.len();
        match Frame::decode(&mut buf, max) {
            Ok(None) => {
                prop_assert_eq!(buf.len(), before);
                return Ok(());
            }
            Ok(Some(f)) => {
                // The encoding is canonical: a decoded frame re-encodes to the same bytes
                // (for an extensible kind, to the bytes of the fields it knows: the bytes a
                // later version appends are ignored).
                let used = before - buf.len();
                prop_assert!(used <= max.min(MAX_FRAME_SIZE) + 4);
                let start = data.len() - before;
                let again = encode(&f);
                if is_extensible(f.payload.kind()) && again.len() < used {
                    // The length prefix counts the appended bytes; the rest must match.
                    prop_assert_eq!(&again[4..], &data[start + 4..start + again.len()]);
                } else {
                    prop_assert_eq!(&again[..], &data[start..start + used]);
                }
            }
            Err(e) if e.resumable => {
                prop_assert!(buf.len() < before, "resumable error consumed nothing: {}", e);
                prop_assert!(e.correlation_id.is_some());
            }
            Err(_) => {
                prop_assert_eq!(buf.len(), before);
                return Ok(());
            }
        }
    }
}
