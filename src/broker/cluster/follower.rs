//! The follower task of one partition: truncate to what the leader's epoch history
//! allows (KIP-101), then fetch the leader's batches from the log end, append them
//! verbatim, fsync, and report the fsync'd end in the next fetch.

use std::sync::Arc;
use std::time::Duration;

use super::replica::Replica;
use super::NodeInner;
use crate::cluster::epochs::{follower_truncation, TruncationStep, UNDEFINED_EPOCH};
use crate::protocol::cluster::{ClusterPayload, OffsetForLeaderEpoch, ReplicaFetch};
use crate::protocol::{BatchHeader, Payload};
use crate::transport::FrameStream;

/// Follows `leader` at `epoch` until aborted (the node aborts it when the role changes);
/// failures are retried with back-off.
pub(crate) async fn follow(node: Arc<NodeInner>, replica: Arc<Replica>, leader: u32, epoch: i32) {
    let mut backoff = Duration::from_millis(50);
    loop {
        match follow_once(&node, &replica, leader, epoch).await {
            Ok(()) => backoff = Duration::from_millis(50),
            Err(e) => {
                tracing::debug!(topic = %replica.topic, partition = replica.index, leader, epoch, error = %e,
                    "following the leader failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

async fn call(stream: &mut FrameStream, p: ClusterPayload) -> Result<ClusterPayload, String> {
    match stream.call(Payload::Cluster(p)).await.map_err(|e| e.to_string())? {
        Payload::Cluster(ClusterPayload::NotLeader(n)) => {
            Err(format!("leader answered {} (its leader {} at epoch {})", n.error, n.leader, n.leader_epoch))
        }
        Payload::Cluster(c) => Ok(c),
        other => Err(format!("unexpected answer {:?}", other.kind())),
    }
}

async fn follow_once(node: &Arc<NodeInner>, replica: &Arc<Replica>, leader: u32, epoch: i32) -> Result<(), String> {
    let address = node.address_of(leader).ok_or_else(|| format!("leader {leader} is not registered"))?;
    let mut stream = match node.peers.stream(leader, &address).await {
        Ok(s) => s,
        Err(e) => {
            node.peers.forget(leader).await;
            return Err(e.to_string());
        }
    };
    let topic = replica.topic.to_string();
    let partition = replica.index;
    // Truncation: cut what the leader's history does not have.
    let mut ask = replica.latest_epoch();
    while ask != UNDEFINED_EPOCH {
        let req = OffsetForLeaderEpoch {
            replica_id: node.me,
            topic: topic.clone(),
            partition,
            current_leader_epoch: epoch,
            epoch: ask,
        };
        let ClusterPayload::OffsetForLeaderEpochOk(ans) =
            call(&mut stream, ClusterPayload::OffsetForLeaderEpoch(req)).await?
        else {
            return Err("unexpected answer to OffsetForLeaderEpoch".into());
        };
        let step =
            follower_truncation(&replica.epochs(), replica.partition.log_end(), (ans.leader_epoch, ans.end_offset));
        let (to, next) = match step {
            TruncationStep::Done { truncate_to } => (truncate_to, None),
            TruncationStep::AskAgain { truncate_to, epoch } => (truncate_to, Some(epoch)),
        };
        truncate(replica, to).await?;
        match next {
            Some(e) => ask = e,
            None => break,
        }
    }
    // Fetch loop.
    loop {
        let offset = replica.partition.log_end();
        let durable = replica.partition.durable_end().min(offset);
        let req = ReplicaFetch {
            replica_id: node.me,
            topic: topic.clone(),
            partition,
            leader_epoch: epoch,
            fetch_offset: offset,
            durable_offset: durable,
            max_bytes: node.max_fetch_bytes,
            max_wait_ms: node.config.replica_fetch_wait.as_millis() as u32,
        };
        let ClusterPayload::ReplicaFetchOk(ok) = call(&mut stream, ClusterPayload::ReplicaFetch(req)).await? else {
            return Err("unexpected answer to ReplicaFetch".into());
        };
        let batches = ok.batches().map_err(|e| format!("leader's answer does not split into batches: {e}"))?;
        let mut last = None;
        for b in batches {
            let header = BatchHeader::parse(&b.batch)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "a replicated batch shorter than its header".to_string())?;
            let r = replica.clone();
            let (e, base) = (b.leader_epoch, header.base_offset);
            tokio::task::spawn_blocking(move || r.record_epoch(e, base))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("recording leader epoch {}: {e}", b.leader_epoch))?;
            let appended = replica.partition.append_replica(b.batch).await.map_err(|e| e.message)?;
            last = Some(appended);
        }
        replica.set_follower_hw(ok.high_watermark);
        if let Some(a) = last {
            // Report the fsync'd end in the next fetch: acks=all waits for it.
            let wait = replica.partition.wait_durable(a.end_offset, a.generation);
            match tokio::time::timeout(Duration::from_secs(10), wait).await {
                Ok(Ok(())) | Err(_) => {}
                Ok(Err(e)) => return Err(e),
            }
        }
    }
}

async fn truncate(replica: &Arc<Replica>, to: i64) -> Result<(), String> {
    if to >= replica.partition.log_end() {
        return Ok(());
    }
    replica.partition.truncate(to).await.map_err(|e| e.to_string())?;
    let r = replica.clone();
    tokio::task::spawn_blocking(move || r.truncate_epochs(to))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}
