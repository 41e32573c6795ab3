//! Tests for `cluster.rs`: byte vectors written by hand from PROTOCOL.md §21, round trips
//! and bad input. The generic frame tests (`frame_tests.rs`) also run every vector here
//! through their prefix, short-body and trailing-byte checks.

use super::*;
use crate::protocol::frame::{Frame, Payload, FRAME_HEADER_LEN, MAX_FRAME_SIZE};
use proptest::prelude::*;

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| b.is_ascii_hexdigit()).collect();
    digits.chunks(2).map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap()).collect()
}

fn frame(correlation_id: u32, p: ClusterPayload) -> Frame {
    Frame { correlation_id, payload: Payload::Cluster(p) }
}

/// A minimal valid stored batch (57-byte header, empty records section is not valid for
/// `check_batch` but the framing only needs the length): base offset 7, batch_length 45.
fn tiny_batch() -> Vec<u8> {
    let mut b = hex("0000000000000007 | 0000002d | 01");
    b.resize(57, 0xaa);
    b
}

/// Every cluster vector: (frame, bytes).
pub(crate) fn vectors() -> Vec<(Frame, Vec<u8>)> {
    let rf = ReplicaFetch {
        replica_id: 2,
        topic: "t".into(),
        partition: 1,
        leader_epoch: 5,
        fetch_offset: 100,
        durable_offset: 90,
        max_bytes: 0x0010_0000,
        max_wait_ms: 500,
    };
    // 4 + 3 + 4 + 4 + 8 + 8 + 4 + 4 = 39 → length 44
    let rf_bytes = hex("0000002c | 10 | 00000001 | 00000002 | 0001 74 | 00000001 | 00000005 \
                        | 0000000000000064 | 000000000000005a | 00100000 | 000001f4");
    let mut records = BytesMut::new();
    ReplicaFetchOk::push_batch(&mut records, 5, &tiny_batch());
    let rfo = ReplicaFetchOk {
        leader_epoch: 5,
        high_watermark: 90,
        log_start_offset: 0,
        log_end_offset: 110,
        records: records.freeze(),
    };
    let mut rfo_bytes = hex("0000005e | 90 | 00000002 | 00000005 | 000000000000005a | 0000000000000000 \
                             | 000000000000006e | 00000005");
    rfo_bytes.extend_from_slice(&tiny_batch());
    let ofe =
        OffsetForLeaderEpoch { replica_id: 3, topic: "t".into(), partition: 0, current_leader_epoch: 6, epoch: 4 };
    let ofe_bytes = hex("00000018 | 11 | 00000003 | 00000003 | 0001 74 | 00000000 | 00000006 | 00000004");
    let ofeo = OffsetForLeaderEpochOk { leader_epoch: 4, end_offset: 1234 };
    let ofeo_bytes = hex("00000011 | 91 | 00000004 | 00000004 | 00000000000004d2");
    let dc_bytes = hex("00000005 | 12 | 00000005");
    let dco = DescribeClusterOk {
        controller: 1,
        brokers: vec![
            ClusterBroker { id: 1, host: "h".into(), port: 7001, alive: true },
            ClusterBroker { id: 3, host: String::new(), port: 0, alive: false },
        ],
    };
    let dco_bytes = hex("0000001e | 92 | 00000006 | 00000001 | 0002 | 00000001 0001 68 1b59 01 \
                         | 00000003 0000 0000 00");
    let dt = DescribeTopics { topics: vec!["a".into()] };
    let dt_bytes = hex("0000000a | 13 | 00000007 | 0001 | 0001 61");
    let dto = DescribeTopicsOk {
        topics: vec![TopicReplicas {
            name: "a".into(),
            error: ErrorCode::None,
            replication_factor: 3,
            min_insync_replicas: 2,
            partitions: vec![PartitionReplicas {
                partition: 0,
                leader: 2,
                leader_epoch: 9,
                replicas: vec![2, 3, 1],
                isr: vec![2, 3],
            }],
        }],
    };
    // 2 + (3 + 2 + 2 + 2 + 4) + (4 + 4 + 4 + (2 + 12) + (2 + 8)) = 15 + 36 = 51 → length 56
    let dto_bytes = hex("00000038 | 93 | 00000008 | 0001 | 0001 61 | 0000 | 0003 | 0002 | 00000001 \
                         | 00000000 | 00000002 | 00000009 | 0003 00000002 00000003 00000001 | 0002 00000002 00000003");
    let crt = CreateReplicatedTopic { topic: "a".into(), partitions: 6, replication_factor: 3, min_insync_replicas: 2 };
    let crt_bytes = hex("00000010 | 14 | 00000009 | 0001 61 | 00000006 | 0003 | 0002");
    let crt_ok_bytes = hex("00000010 | 94 | 00000009 | 0001 61 | 00000006 | 0003 | 0002");
    let ap = AlterPartitions { topic: "a".into(), partitions: 8 };
    let ap_bytes = hex("0000000c | 15 | 0000000a | 0001 61 | 00000008");
    let ap_ok_bytes = hex("0000000c | 95 | 0000000a | 0001 61 | 00000008");
    let nl = NotLeader {
        error: ErrorCode::NotLeader,
        topic: "t".into(),
        partition: 2,
        leader: 3,
        leader_epoch: 7,
        host: "h".into(),
        port: 7003,
    };
    // 2 + 3 + 4 + 4 + 4 + 3 + 2 = 22 → length 27
    let nl_bytes = hex("0000001b | 9f | 0000000b | 001e | 0001 74 | 00000002 | 00000003 | 00000007 | 0001 68 | 1b5b");
    vec![
        (frame(1, ClusterPayload::ReplicaFetch(rf)), rf_bytes),
        (frame(2, ClusterPayload::ReplicaFetchOk(rfo)), rfo_bytes),
        (frame(3, ClusterPayload::OffsetForLeaderEpoch(ofe)), ofe_bytes),
        (frame(4, ClusterPayload::OffsetForLeaderEpochOk(ofeo)), ofeo_bytes),
        (frame(5, ClusterPayload::DescribeCluster), dc_bytes),
        (frame(6, ClusterPayload::DescribeClusterOk(dco)), dco_bytes),
        (frame(7, ClusterPayload::DescribeTopics(dt)), dt_bytes),
        (frame(8, ClusterPayload::DescribeTopicsOk(dto)), dto_bytes),
        (frame(9, ClusterPayload::CreateReplicatedTopic(crt.clone())), crt_bytes),
        (frame(9, ClusterPayload::CreateReplicatedTopicOk(crt)), crt_ok_bytes),
        (frame(10, ClusterPayload::AlterPartitions(ap.clone())), ap_bytes),
        (frame(10, ClusterPayload::AlterPartitionsOk(ap)), ap_ok_bytes),
        (frame(11, ClusterPayload::NotLeader(nl)), nl_bytes),
    ]
}

#[test]
fn cluster_vectors_encode_and_decode_exactly() {
    for (f, want) in vectors() {
        let mut buf = BytesMut::new();
        f.encode(&mut buf);
        assert_eq!(&buf[..], &want[..], "encoding of {f:?}");
        assert_eq!(f.encoded_len(), want.len(), "encoded_len of {f:?}");
        let mut input = BytesMut::from(&want[..]);
        input.extend_from_slice(&[1, 2, 3]);
        assert_eq!(Frame::decode(&mut input, MAX_FRAME_SIZE).unwrap().as_ref(), Some(&f));
        assert_eq!(&input[..], &[1, 2, 3]);
        assert!(f.payload.kind().is_cluster());
    }
}

#[test]
fn replica_fetch_ok_splits_into_epoch_tagged_batches() {
    let mut records = BytesMut::new();
    let a = tiny_batch();
    let mut b = tiny_batch();
    b.extend_from_slice(&[0xbb; 10]);
    b[8..12].copy_from_slice(&55u32.to_be_bytes());
    ReplicaFetchOk::push_batch(&mut records, 3, &a);
    ReplicaFetchOk::push_batch(&mut records, 4, &b);
    let ok = ReplicaFetchOk {
        leader_epoch: 4,
        high_watermark: 0,
        log_start_offset: 0,
        log_end_offset: 0,
        records: records.freeze(),
    };
    let got = ok.batches().unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].leader_epoch, &got[0].batch[..]), (3, &a[..]));
    assert_eq!((got[1].leader_epoch, &got[1].batch[..]), (4, &b[..]));
    let empty = ReplicaFetchOk { records: Bytes::new(), ..ok.clone() };
    assert_eq!(empty.batches().unwrap(), vec![]);
}

#[test]
fn replica_fetch_ok_with_broken_framing_is_an_error_not_a_panic() {
    let whole = {
        let mut r = BytesMut::new();
        ReplicaFetchOk::push_batch(&mut r, 1, &tiny_batch());
        r.freeze()
    };
    let base = ReplicaFetchOk {
        leader_epoch: 1,
        high_watermark: 0,
        log_start_offset: 0,
        log_end_offset: 0,
        records: Bytes::new(),
    };
    // Every strict prefix of a valid entry is an error.
    for cut in 1..whole.len() {
        let r = ReplicaFetchOk { records: whole.slice(..cut), ..base.clone() };
        assert!(matches!(r.batches(), Err(DecodeError::UnexpectedEof { .. })), "cut {cut}");
    }
    // A batch_length below the header size.
    let mut bad = whole.to_vec();
    bad[4 + 8..4 + 12].copy_from_slice(&10u32.to_be_bytes());
    let r = ReplicaFetchOk { records: Bytes::from(bad), ..base.clone() };
    assert_eq!(r.batches(), Err(DecodeError::InvalidValue { field: "batch_length", value: 10 }));
    // A batch_length far beyond the data.
    let mut huge = whole.to_vec();
    huge[4 + 8..4 + 12].copy_from_slice(&u32::MAX.to_be_bytes());
    let r = ReplicaFetchOk { records: Bytes::from(huge), ..base };
    assert!(matches!(r.batches(), Err(DecodeError::UnexpectedEof { field: "batch", .. })));
}

fn decode_body(kind: FrameKind, body: &[u8]) -> Result<ClusterPayload, DecodeError> {
    ClusterPayload::decode(kind, Bytes::copy_from_slice(body))
}

#[test]
fn alive_flag_other_than_zero_or_one_is_rejected() {
    let (_, b) = vectors().into_iter().find(|(f, _)| f.payload.kind() == FrameKind::DescribeClusterOk).unwrap();
    let body = &b[FRAME_HEADER_LEN..];
    // controller 4 + count 2 + id 4 + host "h" 3 + port 2 = offset 15 of the first flag.
    assert_eq!(body[15], 1);
    for v in 2..=255u8 {
        let mut x = body.to_vec();
        x[15] = v;
        assert_eq!(
            decode_body(FrameKind::DescribeClusterOk, &x),
            Err(DecodeError::InvalidValue { field: "alive", value: i64::from(v) })
        );
    }
}

#[test]
fn counts_larger_than_the_body_fail_without_allocating() {
    // DescribeTopicsOk claiming 2^32-1 partitions in a few bytes.
    let body = hex("0001 | 0001 61 | 0000 | 0003 | 0002 | ffffffff | 00");
    assert!(matches!(
        decode_body(FrameKind::DescribeTopicsOk, &body),
        Err(DecodeError::UnexpectedEof { field: "partitions", .. })
    ));
    // A replica list claiming 65535 ids.
    let body = hex("0001 | 0001 61 | 0000 | 0003 | 0002 | 00000001 | 00000000 00000002 00000009 | ffff 00000001");
    assert!(matches!(
        decode_body(FrameKind::DescribeTopicsOk, &body),
        Err(DecodeError::UnexpectedEof { field: "replicas", .. })
    ));
    // 65535 topics in a few bytes.
    let body = hex("ffff | 0001 61");
    assert!(decode_body(FrameKind::DescribeTopicsOk, &body).is_err());
}

#[test]
fn not_leader_and_describe_topics_reject_unknown_error_codes() {
    let (_, b) = vectors().into_iter().find(|(f, _)| f.payload.kind() == FrameKind::NotLeader).unwrap();
    let mut body = b[FRAME_HEADER_LEN..].to_vec();
    body[0..2].copy_from_slice(&999u16.to_be_bytes());
    assert_eq!(
        decode_body(FrameKind::NotLeader, &body),
        Err(DecodeError::InvalidValue { field: "error_code", value: 999 })
    );
}

#[test]
fn a_non_cluster_kind_is_refused_by_the_cluster_decoder() {
    assert_eq!(decode_body(FrameKind::Hello, &[]), Err(DecodeError::UnknownFrameKind { kind: 0x01 }));
    assert!(!FrameKind::Produce.is_cluster());
    assert!(FrameKind::NotLeader.is_cluster());
}

fn arb_string() -> impl Strategy<Value = String> {
    ".{0,12}"
}

fn arb_ids() -> impl Strategy<Value = Vec<u32>> {
    proptest::collection::vec(any::<u32>(), 0..5)
}

fn arb_code() -> impl Strategy<Value = ErrorCode> {
    proptest::sample::select(ErrorCode::ALL.to_vec())
}

/// Any cluster payload (used by `frame_tests.rs`' round-trip properties too).
pub(crate) fn arb_cluster_payload() -> impl Strategy<Value = ClusterPayload> {
    let partition = (any::<u32>(), any::<i32>(), any::<i32>(), arb_ids(), arb_ids()).prop_map(
        |(partition, leader, leader_epoch, replicas, isr)| PartitionReplicas {
            partition,
            leader,
            leader_epoch,
            replicas,
            isr,
        },
    );
    let topic = (arb_string(), arb_code(), any::<u16>(), any::<u16>(), proptest::collection::vec(partition, 0..3))
        .prop_map(|(name, error, replication_factor, min_insync_replicas, partitions)| TopicReplicas {
            name,
            error,
            replication_factor,
            min_insync_replicas,
            partitions,
        });
    let broker = (any::<u32>(), arb_string(), any::<u16>(), any::<bool>())
        .prop_map(|(id, host, port, alive)| ClusterBroker { id, host, port, alive });
    let records = proptest::collection::vec(any::<u8>(), 0..80).prop_map(Bytes::from);
    prop_oneof![
        (
            any::<u32>(),
            arb_string(),
            any::<u32>(),
            any::<i32>(),
            any::<i64>(),
            any::<i64>(),
            any::<u32>(),
            any::<u32>()
        )
            .prop_map(
                |(replica_id, topic, partition, leader_epoch, fetch_offset, durable_offset, max_bytes, max_wait_ms)| {
                    ClusterPayload::ReplicaFetch(ReplicaFetch {
                        replica_id,
                        topic,
                        partition,
                        leader_epoch,
                        fetch_offset,
                        durable_offset,
                        max_bytes,
                        max_wait_ms,
                    })
                }
            ),
        (any::<u32>(), arb_string(), any::<u32>(), any::<i32>(), any::<i32>()).prop_map(
            |(replica_id, topic, partition, current_leader_epoch, epoch)| {
                ClusterPayload::OffsetForLeaderEpoch(OffsetForLeaderEpoch {
                    replica_id,
                    topic,
                    partition,
                    current_leader_epoch,
                    epoch,
                })
            }
        ),
        Just(ClusterPayload::DescribeCluster),
        proptest::collection::vec(arb_string(), 0..4)
            .prop_map(|topics| ClusterPayload::DescribeTopics(DescribeTopics { topics })),
        (arb_string(), any::<u32>(), any::<u16>(), any::<u16>()).prop_map(
            |(topic, partitions, replication_factor, min_insync_replicas)| {
                ClusterPayload::CreateReplicatedTopic(CreateReplicatedTopic {
                    topic,
                    partitions,
                    replication_factor,
                    min_insync_replicas,
                })
            }
        ),
        (arb_string(), any::<u32>())
            .prop_map(|(topic, partitions)| ClusterPayload::AlterPartitions(AlterPartitions { topic, partitions })),
        (any::<i32>(), any::<i64>(), any::<i64>(), any::<i64>(), records).prop_map(
            |(leader_epoch, high_watermark, log_start_offset, log_end_offset, records)| {
                ClusterPayload::ReplicaFetchOk(ReplicaFetchOk {
                    leader_epoch,
                    high_watermark,
                    log_start_offset,
                    log_end_offset,
                    records,
                })
            }
        ),
        (any::<i32>(), any::<i64>()).prop_map(|(leader_epoch, end_offset)| ClusterPayload::OffsetForLeaderEpochOk(
            OffsetForLeaderEpochOk { leader_epoch, end_offset }
        )),
        (any::<i32>(), proptest::collection::vec(broker, 0..4)).prop_map(|(controller, brokers)| {
            ClusterPayload::DescribeClusterOk(DescribeClusterOk { controller, brokers })
        }),
        proptest::collection::vec(topic, 0..3)
            .prop_map(|topics| ClusterPayload::DescribeTopicsOk(DescribeTopicsOk { topics })),
        (arb_string(), any::<u32>(), any::<u16>(), any::<u16>()).prop_map(
            |(topic, partitions, replication_factor, min_insync_replicas)| {
                ClusterPayload::CreateReplicatedTopicOk(CreateReplicatedTopic {
                    topic,
                    partitions,
                    replication_factor,
                    min_insync_replicas,
                })
            }
        ),
        (arb_string(), any::<u32>())
            .prop_map(|(topic, partitions)| ClusterPayload::AlterPartitionsOk(AlterPartitions { topic, partitions })),
        (arb_code(), arb_string(), any::<u32>(), any::<i32>(), any::<i32>(), arb_string(), any::<u16>()).prop_map(
            |(error, topic, partition, leader, leader_epoch, host, port)| {
                ClusterPayload::NotLeader(NotLeader { error, topic, partition, leader, leader_epoch, host, port })
            }
        ),
    ]
}

proptest! {
    #[test]
    fn cluster_payloads_round_trip(p in arb_cluster_payload(), cid in any::<u32>()) {
        let f = frame(cid, p);
        let mut buf = BytesMut::new();
        f.encode(&mut buf);
        prop_assert_eq!(buf.len(), f.encoded_len());
        prop_assert_eq!(Frame::decode(&mut buf, MAX_FRAME_SIZE).unwrap(), Some(f));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn epoch_batches_round_trip(entries in proptest::collection::vec((any::<i32>(), 0usize..40), 0..5)) {
        let mut records = BytesMut::new();
        let mut want = Vec::new();
        for (epoch, extra) in entries {
            let mut b = tiny_batch();
            b.extend(std::iter::repeat_n(0xcc, extra));
            let len = (b.len() - 12) as u32;
            b[8..12].copy_from_slice(&len.to_be_bytes());
            ReplicaFetchOk::push_batch(&mut records, epoch, &b);
            want.push(EpochBatch { leader_epoch: epoch, batch: Bytes::from(b) });
        }
        let ok = ReplicaFetchOk { leader_epoch: 0, high_watermark: 0, log_start_offset: 0, log_end_offset: 0, records: records.freeze() };
        prop_assert_eq!(ok.batches().unwrap(), want);
    }
}
