//! `Produce`: check the batch, dedup an idempotent retry, append, and answer at the
//! requested acks level.

use std::time::Duration;

use bytes::Bytes;

use super::{cluster, frame, now_ms};
use crate::broker::acl::Permission;
use crate::broker::cluster::replica::{Commit, Refusal};
use crate::broker::context::ConnCtx;
use crate::broker::metrics::{add, inc};
use crate::broker::partition::AppendError;
use crate::broker::telemetry::seconds_since;
use crate::broker::writer::Pending;
use crate::protocol::frame::{Produce, ProduceResult};
use crate::protocol::{Acks, BatchHeader, ErrorCode, Frame, Payload, RecordBatch};

/// Largest decompressed records section the broker accepts when validating a batch.
pub(crate) const MAX_DECOMPRESSED: usize = 32 * 1024 * 1024;

/// Appends the batch and answers `ProduceResult` (at once, or after the group commit
/// for acks=all); nothing for acks=0.
pub(super) async fn produce(ctx: &ConnCtx, corr: u32, p: Produce) -> Option<Pending> {
    let shared = &ctx.shared;
    inc(&shared.metrics.produce_requests);
    let fail = |code: ErrorCode, message: String| {
        inc(&shared.metrics.produce_errors);
        shared.metrics.detail.produced(p.acks, code);
        tracing::debug!(%code, reason = %message, "produce refused");
        if p.acks == Acks::None {
            return None;
        }
        frame(
            corr,
            Payload::ProduceResult(ProduceResult {
                error: code,
                duplicate: false,
                base_offset: -1,
                log_append_time: -1,
                message,
            }),
        )
    };
    if !shared.acl.allows(&ctx.principal, &p.topic, Permission::Write) {
        inc(&shared.metrics.authorization_failures);
        tracing::warn!(principal = %ctx.principal, topic = %p.topic, "produce denied by ACL");
        return fail(
            ErrorCode::AuthorizationFailed,
            format!("principal '{}' may not write topic '{}'", ctx.principal, p.topic),
        );
    }
    let topic = match shared.topic_for_write(&p.topic).await {
        Ok(t) => t,
        Err(e) => return fail(e.code, e.message),
    };
    let Some(partition) = topic.partitions.get(p.partition as usize) else {
        return fail(
            ErrorCode::UnknownTopicOrPartition,
            format!("topic '{}' has {} partitions; {} does not exist", p.topic, topic.partitions.len(), p.partition),
        );
    };
    // In a cluster, only the partition's leader appends (its session certain), and
    // acks=all needs enough in-sync replicas before anything is written.
    let leader = match &shared.cluster {
        Some(node) => match cluster::leading(node, corr, &p.topic, p.partition) {
            Ok((replica, _)) => match replica.check_produce(p.acks == Acks::All) {
                Ok(epoch) => Some((replica, epoch)),
                Err(Refusal::NotLeader) => {
                    inc(&shared.metrics.produce_errors);
                    shared.metrics.detail.produced(p.acks, ErrorCode::NotLeader);
                    let f = cluster::not_leader_frame(node, corr, &p.topic, p.partition, ErrorCode::NotLeader);
                    return (p.acks != Acks::None).then_some(Pending::Ready(f));
                }
                Err(Refusal::NotEnough(e)) => return fail(ErrorCode::NotEnoughReplicas, e.to_string()),
            },
            Err(f) => {
                inc(&shared.metrics.produce_errors);
                shared.metrics.detail.produced(p.acks, ErrorCode::NotLeader);
                return (p.acks != Acks::None).then_some(Pending::Ready(f));
            }
        },
        None => None,
    };
    let limit = shared.config.batch_limit() as usize;
    if p.batch.len() > limit {
        return fail(
            ErrorCode::BatchTooLarge,
            format!("batch of {} bytes exceeds this broker's max_batch_bytes ({limit})", p.batch.len()),
        );
    }
    // The topic's schema policy (none, warn, enforce): refused batches are never looked up
    // for dedup nor appended.
    if let Err((code, message)) = super::schema::check_policy(ctx, &p.topic, &p.batch).await {
        return fail(code, message);
    }
    let now = now_ms();
    // An idempotent batch must carry an id issued to this principal, at an epoch no newer
    // than its current one: otherwise a client could stamp the id the broker will issue
    // next, and its batches would later be taken for that producer's. The header is read
    // here without its CRC (cheap); `check_batch` verifies the CRC on the partition's
    // owner, so a batch whose header lied is refused there as corrupt.
    let header = BatchHeader::parse(&p.batch);
    if let Ok(Some(h)) = &header {
        // The request's span (see `requests::dispatch`) carries what people search by.
        let span = tracing::Span::current();
        span.record("producer_id", h.producer.producer_id);
        span.record("producer_epoch", h.producer.producer_epoch);
        span.record("sequence", h.producer.base_sequence);
        span.record("records", h.record_count);
    }
    let fence = match header {
        Ok(Some(header)) if header.is_idempotent() => {
            let stamp = header.producer;
            let checked = match &shared.cluster {
                Some(node) => {
                    node.producer_ids.check_stamp(&ctx.principal, stamp.producer_id, stamp.producer_epoch).await
                }
                None => shared.producer_ids.check_stamp(&ctx.principal, stamp.producer_id, stamp.producer_epoch, now),
            };
            match checked {
                Ok(current) => Some(current),
                Err((code, message)) => return fail(code, message),
            }
        }
        _ => None,
    };
    // The check (which decodes the records) and the append run on the partition's
    // owner, off the async runtime; the next frame is read once the batch is appended.
    // With a fence, an older epoch gets the dedup lookup first (a remembered retry is a
    // duplicate), then INVALID_PRODUCER_EPOCH: per-partition epochs (HelloOk feature bit).
    let batch_len = p.batch.len() as u64;
    let started = std::time::Instant::now();
    let appended = partition.append(p.batch.clone(), now, shared.config.sink, check_batch, fence).await;
    shared.metrics.detail.append_latency.observe(seconds_since(started));
    let appended = match appended {
        Ok(a) => a,
        Err(e) => {
            if e.code == ErrorCode::CorruptBatch {
                inc(&shared.metrics.corrupt_batches);
            }
            return fail(e.code, e.message);
        }
    };
    if let Some((replica, _)) = &leader {
        replica.on_appended(appended.end_offset);
    }
    if appended.duplicate {
        inc(&shared.metrics.duplicates);
        inc(&partition.counters.duplicates);
    } else {
        let records = (appended.end_offset - appended.base_offset) as u64;
        inc(&shared.metrics.batches_appended);
        add(&shared.metrics.records_appended, records);
        add(&shared.metrics.bytes_appended, batch_len);
        partition.counters.appended(records, batch_len);
    }
    tracing::Span::current().record("base_offset", appended.base_offset);
    tracing::debug!(duplicate = appended.duplicate, end_offset = appended.end_offset, "produce appended");
    let result = ProduceResult {
        error: ErrorCode::None,
        duplicate: appended.duplicate,
        base_offset: appended.base_offset,
        log_append_time: appended.append_time,
        message: String::new(),
    };
    match p.acks {
        Acks::None => {
            shared.metrics.detail.produced(p.acks, ErrorCode::None);
            None
        }
        Acks::Leader => {
            shared.metrics.detail.produced(p.acks, ErrorCode::None);
            frame(corr, Payload::ProduceResult(result))
        }
        Acks::All if shared.config.sink => {
            shared.metrics.detail.produced(p.acks, ErrorCode::None);
            frame(corr, Payload::ProduceResult(result))
        }
        Acks::All if leader.is_some() => {
            let (replica, epoch) = leader.expect("checked");
            let ms = if p.timeout_ms == 0 { shared.config.default_produce_timeout_ms } else { p.timeout_ms };
            let node = shared.cluster.clone().expect("a leader exists only in cluster mode");
            let metrics = shared.metrics.clone();
            let (end, generation) = (appended.end_offset, appended.generation);
            let (topic, partition) = (p.topic.clone(), p.partition);
            Some(Pending::Later(Box::pin(async move {
                let timeout = Duration::from_millis(u64::from(ms));
                let failed = |error: ErrorCode, message: String| ProduceResult { error, message, ..result.clone() };
                let started = std::time::Instant::now();
                let committed = replica.wait_committed(end, generation, epoch, timeout).await;
                metrics.detail.group_commit_wait.observe(seconds_since(started));
                let result = match committed {
                    Commit::Committed => result.clone(),
                    Commit::NotLeader => {
                        metrics.detail.produced(Acks::All, ErrorCode::NotLeader);
                        return cluster::not_leader_frame(&node, corr, &topic, partition, ErrorCode::NotLeader);
                    }
                    Commit::NotEnough(m) => failed(ErrorCode::NotEnoughReplicasAfterAppend, m),
                    Commit::Failed(m) => failed(ErrorCode::StorageError, m),
                    Commit::TimedOut => failed(
                        ErrorCode::RequestTimedOut,
                        format!("not replicated to every in-sync replica within {ms} ms"),
                    ),
                };
                metrics.detail.produced(Acks::All, result.error);
                Frame { correlation_id: corr, payload: Payload::ProduceResult(result) }
            })))
        }
        // Counted by the writer once the group commit answered.
        Acks::All => {
            let ms = if p.timeout_ms == 0 { shared.config.default_produce_timeout_ms } else { p.timeout_ms };
            Some(Pending::Durable {
                partition: partition.clone(),
                end: appended.end_offset,
                generation: appended.generation,
                timeout: Duration::from_millis(u64::from(ms)),
                correlation_id: corr,
                result,
            })
        }
    }
}

/// What a produced batch must pass before it is appended: one pass checks structure and
/// CRC; then the records are walked once, because the log stores batches without decoding
/// them and a header that lied about its record count would move offsets arbitrarily.
fn check_batch(batch: &Bytes) -> Result<BatchHeader, AppendError> {
    RecordBatch::from_bytes(batch.clone())
        .and_then(|b| b.validate_records(MAX_DECOMPRESSED).map(|_| *b.header()))
        .map_err(|e| AppendError { code: ErrorCode::CorruptBatch, message: e.to_string() })
}
