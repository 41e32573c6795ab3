//! A follower's copy of a leader's partition: verbatim appends keep offsets and dedup
//! state; truncation cuts a tail and makes dedup forget it.

use std::path::Path;

use super::*;
use crate::broker::metrics::BrokerMetrics;
use crate::broker::partition::{OpenReport, PartitionConfig};
use crate::protocol::{BatchBuilder, Compression, ProducerStamp, Record, RecordBatch};

fn open(dir: &Path) -> (Arc<Partition>, OpenReport) {
    let (p, r) =
        Partition::open(dir, Arc::from("t"), 0, PartitionConfig::default(), Arc::new(BrokerMetrics::default()))
            .unwrap();
    (Arc::new(p), r)
}

fn batch(n: u32, seq: i32) -> Bytes {
    let mut b = BatchBuilder::new();
    for i in 0..n {
        b.push(&Record {
            timestamp: i64::from(i),
            key: None,
            value: Some(Bytes::from(format!("v{seq}-{i}"))),
            headers: vec![],
        });
    }
    b.seal(Compression::None, None, ProducerStamp { producer_id: 9, producer_epoch: 0, base_sequence: seq })
}

fn check(b: &Bytes) -> Result<BatchHeader, AppendError> {
    check_replica_batch(b)
}

/// Every stored batch, as bytes, from offset 0 to the end (fsync'd or not).
async fn stored(p: &Arc<Partition>) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let f = p.read_for_replica(offset, 1 << 20).await.unwrap();
        if f.batches.is_empty() {
            return out;
        }
        for b in RecordBatch::split_all(f.batches).unwrap() {
            offset = b.header().last_offset() + 1;
            out.push(b.as_bytes().clone());
        }
    }
}

#[tokio::test]
async fn a_follower_copies_batches_verbatim_and_answers_retries_as_duplicates() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (leader, _) = open(ld.path());
    let (follower, _) = open(fd.path());
    let batches = [batch(3, 0), batch(2, 3), batch(4, 5)];
    for b in &batches {
        leader.append(b.clone(), now_ms(), false, check, None).await.unwrap();
    }
    for b in stored(&leader).await {
        let a = follower.append_replica(b).await.unwrap();
        assert!(!a.duplicate);
    }
    assert_eq!(stored(&follower).await, stored(&leader).await, "the follower's log is the leader's, byte for byte");
    assert_eq!(follower.log_end(), 9);
    // The follower, once leader, recognises a producer's retry with its original offset.
    let retry = follower.append(batches[1].clone(), now_ms(), false, check, None).await.unwrap();
    assert_eq!((retry.duplicate, retry.base_offset), (true, 3));
    // And takes the next batch in sequence.
    let next = follower.append(batch(1, 9), now_ms(), false, check, None).await.unwrap();
    assert_eq!((next.duplicate, next.base_offset), (false, 9));
}

#[tokio::test]
async fn a_replicated_batch_must_start_at_the_replicas_end_and_be_intact() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (leader, _) = open(ld.path());
    let (follower, _) = open(fd.path());
    leader.append(batch(3, 0), now_ms(), false, check, None).await.unwrap();
    leader.append(batch(2, 3), now_ms(), false, check, None).await.unwrap();
    let all = stored(&leader).await;
    // Skipping the first batch leaves a gap: refused, nothing written.
    let e = follower.append_replica(all[1].clone()).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidRequest);
    assert_eq!(follower.log_end(), 0);
    let mut bad = all[0].to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert_eq!(follower.append_replica(Bytes::from(bad)).await.unwrap_err().code, ErrorCode::CorruptBatch);
    assert_eq!(follower.log_end(), 0);
}

#[tokio::test]
async fn truncation_cuts_the_tail_and_dedup_forgets_it() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = open(dir.path());
    let batches = [batch(3, 0), batch(2, 3), batch(4, 5)];
    for b in &batches {
        p.append(b.clone(), now_ms(), false, check, None).await.unwrap();
    }
    assert_eq!(p.truncate(9).await.unwrap(), 0, "nothing past the end to cut");
    assert_eq!(p.truncate(3).await.unwrap(), 6);
    assert_eq!(p.log_end(), 3);
    assert_eq!(stored(&p).await.len(), 1);
    // The cut batch is appended again, at the same offset, not answered from dedup state
    // that pointed at offsets the log no longer has.
    let again = p.append(batches[1].clone(), now_ms(), false, check, None).await.unwrap();
    assert_eq!((again.duplicate, again.base_offset), (false, 3));
    assert!(p.append(batches[0].clone(), now_ms(), false, check, None).await.unwrap().duplicate);
    // The cut survives a restart.
    drop(p);
    let (p, _) = open(dir.path());
    assert_eq!(p.log_end(), 5);
}
