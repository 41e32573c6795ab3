//! One client stream: read pipelined request frames, act on each, write the responses
//! in request order.
//!
//! A reader loop decodes frames and dispatches them; each produces a [`Pending`]
//! response that goes, in order, through a bounded channel to a writer task. acks=all
//! responses wait in the writer for the partition's group commit, so the reader keeps
//! appending while an fsync runs. A client that stops reading responses fills the
//! channel, which stops the reader, which stops QUIC flow control: memory stays bounded.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use tokio::sync::mpsc;

use super::acl::Permission;
use super::metrics::{add, inc};
use super::partition::Partition;
use super::server::ConnCtx;
use crate::protocol::frame::{
    BrokerInfo, CreateTopic, ErrorFrame, Fetch, FetchOk, FrameHead, HelloOk, InitProducerIdOk, Metadata, MetadataOk,
    Produce, ProduceResult, TopicMetadata,
};
use crate::protocol::{Acks, ErrorCode, Frame, Payload, RecordBatch, PROTOCOL_VERSION};

/// Responses queued per stream before the reader stops reading.
const RESPONSE_QUEUE: usize = 1024;
/// Coalesce at most this many response bytes into one stream write.
const WRITE_COALESCE: usize = 64 * 1024;
/// Frames up to this size are read without a reservation from the connection's
/// [`ConnCtx::frame_budget`].
const UNRESERVED_FRAME: usize = 64 * 1024;
/// Largest decompressed records section the broker accepts when validating a batch.
pub const MAX_DECOMPRESSED: usize = 32 * 1024 * 1024;
/// Application error code used when the broker stops reading a stream whose framing
/// is lost.
pub const STOP_BAD_FRAMING: u32 = 1;

/// A response waiting its turn on the stream.
pub(crate) enum Pending {
    /// Ready to write.
    Ready(Frame),
    /// A produce answered once the partition is durable up to `end`.
    Durable { partition: Arc<Partition>, end: i64, timeout: Duration, correlation_id: u32, result: ProduceResult },
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn frame(correlation_id: u32, payload: Payload) -> Option<Pending> {
    Some(Pending::Ready(Frame { correlation_id, payload }))
}

fn error(correlation_id: u32, code: ErrorCode, message: impl Into<String>) -> Option<Pending> {
    frame(correlation_id, Payload::Error(ErrorFrame { code, message: message.into() }))
}

/// Serves one bidirectional stream until the client finishes it, framing is lost, the
/// connection drops or the broker shuts down.
pub(crate) async fn serve_stream(ctx: Arc<ConnCtx>, send: quinn::SendStream, mut recv: quinn::RecvStream) {
    inc(&ctx.shared.metrics.streams_opened);
    let (tx, rx) = mpsc::channel::<Pending>(RESPONSE_QUEUE);
    let writer = tokio::spawn(write_responses(send, rx));
    let mut shutdown = ctx.shared.shutdown.clone();
    let max_frame = ctx.shared.config.max_frame_size as usize;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    // The connection's budget held for the large frame being received, if any.
    let mut reserved: Option<tokio::sync::OwnedSemaphorePermit> = None;
    // Bytes of a refused frame still to be read and thrown away.
    let mut skip = 0usize;
    'read: loop {
        loop {
            match Frame::decode(&mut buf, max_frame) {
                Ok(Some(f)) => {
                    reserved = None;
                    if let Some(p) = dispatch(&ctx, f) {
                        if tx.send(p).await.is_err() {
                            break 'read;
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    reserved = None;
                    inc(&ctx.shared.metrics.bad_frames);
                    tracing::warn!(remote = %ctx.remote, principal = %ctx.principal, error = %e, "bad frame");
                    let p = error(e.correlation_id.unwrap_or(0), e.code(), e.error.to_string());
                    if tx.send(p.expect("error frame")).await.is_err() || !e.resumable {
                        let _ = recv.stop(STOP_BAD_FRAMING.into());
                        break 'read;
                    }
                }
            }
        }
        // A large frame has begun: take its whole size from the connection's budget before
        // reading its body, so the unfinished frames of one connection stay bounded. When
        // the budget is used up, the frame is answered RESOURCE_LIMIT (retriable) and its
        // body is read and thrown away: waiting instead would leave its bytes unread in
        // QUIC's connection-wide receive window, which could starve the very frames that
        // hold the budget.
        if reserved.is_none() && skip == 0 {
            if let Ok(Some(head)) = FrameHead::peek(&buf) {
                let need = head.total_len();
                if need > UNRESERVED_FRAME && need > buf.len() && head.length <= max_frame {
                    // As the semaphore was sized (see `serve_connection`).
                    let budget = ctx.shared.config.max_buffered_bytes_per_connection.clamp(1, u64::from(u32::MAX));
                    let permits = (need as u64).min(budget) as u32;
                    match ctx.frame_budget.clone().try_acquire_many_owned(permits) {
                        Ok(p) => reserved = Some(p),
                        Err(_) => {
                            skip = need - buf.len();
                            buf.clear();
                            tracing::debug!(remote = %ctx.remote, principal = %ctx.principal, frame_bytes = need,
                                "frame refused: the connection's budget for unfinished frames is used up");
                            let msg = format!(
                                "this connection already holds {budget} bytes of unfinished frames; retry later"
                            );
                            let p = error(head.correlation_id, ErrorCode::ResourceLimit, msg).expect("error frame");
                            if tx.send(p).await.is_err() {
                                break 'read;
                            }
                        }
                    }
                }
            }
        }
        let chunk = tokio::select! {
            biased;
            r = recv.read_chunk(usize::MAX, true) => r,
            _ = shutdown.wait_for(|s| *s) => break 'read,
        };
        match chunk {
            Ok(Some(c)) => {
                let thrown = skip.min(c.bytes.len());
                skip -= thrown;
                buf.extend_from_slice(&c.bytes[thrown..]);
            }
            Ok(None) => {
                if !buf.is_empty() || skip > 0 {
                    inc(&ctx.shared.metrics.bad_frames);
                    tracing::warn!(remote = %ctx.remote, pending = buf.len(), "stream finished inside a frame");
                    let _ = tx
                        .send(Pending::Ready(Frame {
                            correlation_id: 0,
                            payload: Payload::Error(ErrorFrame {
                                code: ErrorCode::MalformedFrame,
                                message: format!("stream finished inside a frame ({} bytes pending)", buf.len()),
                            }),
                        }))
                        .await;
                }
                break;
            }
            Err(e) => {
                tracing::debug!(remote = %ctx.remote, error = %e, "stream read ended");
                break;
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}

async fn write_responses(mut send: quinn::SendStream, mut rx: mpsc::Receiver<Pending>) {
    let mut out = BytesMut::with_capacity(16 * 1024);
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(p) = next.take() {
            match p {
                Pending::Ready(f) => f.encode(&mut out),
                Pending::Durable { partition, end, timeout, correlation_id, mut result } => {
                    if partition.durable_end() < end && !out.is_empty() {
                        // Do not hold finished responses back behind an fsync.
                        if send.write_all(&out).await.is_err() {
                            return;
                        }
                        out.clear();
                    }
                    match tokio::time::timeout(timeout, partition.wait_durable(end)).await {
                        Ok(Ok(())) => {}
                        // The batch was appended but is not confirmed durable: the error
                        // keeps its base offset so the client knows it may be stored.
                        Ok(Err(msg)) => {
                            result = ProduceResult {
                                error: ErrorCode::StorageError,
                                duplicate: false,
                                log_append_time: -1,
                                message: msg,
                                ..result
                            }
                        }
                        Err(_) => {
                            result = ProduceResult {
                                error: ErrorCode::RequestTimedOut,
                                duplicate: false,
                                log_append_time: -1,
                                message: format!("batch appended but not fsync'd within {timeout:?}"),
                                ..result
                            }
                        }
                    }
                    Frame { correlation_id, payload: Payload::ProduceResult(result) }.encode(&mut out);
                }
            }
            if out.len() >= WRITE_COALESCE {
                break;
            }
            next = rx.try_recv().ok();
        }
        if send.write_all(&out).await.is_err() {
            return;
        }
        out.clear();
    }
    let _ = send.finish();
}

fn dispatch(ctx: &ConnCtx, f: Frame) -> Option<Pending> {
    let corr = f.correlation_id;
    match f.payload {
        Payload::Produce(p) => produce(ctx, corr, p),
        Payload::Hello(h) => {
            if h.version != PROTOCOL_VERSION {
                return error(
                    corr,
                    ErrorCode::UnsupportedVersion,
                    format!("protocol version {} not supported; this broker speaks {PROTOCOL_VERSION}", h.version),
                );
            }
            tracing::debug!(remote = %ctx.remote, principal = %ctx.principal, client_id = %h.client_id, "hello");
            frame(
                corr,
                Payload::HelloOk(HelloOk {
                    version: PROTOCOL_VERSION,
                    broker_id: ctx.shared.config.broker_id,
                    principal: ctx.principal.to_string(),
                    max_frame_size: ctx.shared.config.max_frame_size,
                }),
            )
        }
        Payload::InitProducerId(req) => match ctx.shared.producer_ids.init(req.producer_id, req.producer_epoch) {
            Ok((producer_id, producer_epoch)) => {
                tracing::info!(principal = %ctx.principal, producer_id, producer_epoch, "producer id issued");
                frame(corr, Payload::InitProducerIdOk(InitProducerIdOk { producer_id, producer_epoch }))
            }
            Err((code, msg)) => error(corr, code, msg),
        },
        Payload::Metadata(m) => frame(corr, Payload::MetadataOk(metadata(ctx, m))),
        Payload::CreateTopic(c) => create_topic(ctx, corr, c),
        Payload::Fetch(req) => fetch(ctx, corr, req),
        other => {
            inc(&ctx.shared.metrics.bad_frames);
            error(corr, ErrorCode::InvalidRequest, format!("{:?} is a response kind, not a request", other.kind()))
        }
    }
}

fn denied(ctx: &ConnCtx, corr: u32, topic: &str, perm: Permission) -> Option<Pending> {
    inc(&ctx.shared.metrics.authorization_failures);
    tracing::warn!(principal = %ctx.principal, topic, permission = %perm, "request denied by ACL");
    error(corr, ErrorCode::AuthorizationFailed, format!("principal '{}' may not {perm} topic '{topic}'", ctx.principal))
}

fn produce(ctx: &ConnCtx, corr: u32, p: Produce) -> Option<Pending> {
    let shared = &ctx.shared;
    inc(&shared.metrics.produce_requests);
    let fail = |code: ErrorCode, message: String| {
        inc(&shared.metrics.produce_errors);
        tracing::debug!(principal = %ctx.principal, topic = %p.topic, partition = p.partition, %code, %message, "produce refused");
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
    let topic = match shared.topic_for_write(&p.topic) {
        Ok(t) => t,
        Err(e) => return fail(e.code, e.message),
    };
    let Some(partition) = topic.partitions.get(p.partition as usize) else {
        return fail(
            ErrorCode::UnknownTopicOrPartition,
            format!("topic '{}' has {} partitions; {} does not exist", p.topic, topic.partitions.len(), p.partition),
        );
    };
    // One pass checks structure and CRC; then the records are walked once, because the
    // log stores batches without decoding them and a header that lied about its record
    // count would move offsets arbitrarily.
    let batch =
        match RecordBatch::from_bytes(p.batch.clone()).and_then(|b| b.validate_records(MAX_DECOMPRESSED).map(|_| b)) {
            Ok(b) => b,
            Err(e) => {
                inc(&shared.metrics.corrupt_batches);
                return fail(ErrorCode::CorruptBatch, e.to_string());
            }
        };
    let header = *batch.header();
    let now = now_ms();
    let appended = match partition.append(&p.batch, &header, now, shared.config.sink) {
        Ok(a) => a,
        Err(e) => return fail(e.code, e.message),
    };
    if appended.duplicate {
        inc(&shared.metrics.duplicates);
    } else {
        inc(&shared.metrics.batches_appended);
        add(&shared.metrics.records_appended, u64::from(header.record_count));
        add(&shared.metrics.bytes_appended, p.batch.len() as u64);
    }
    let result = ProduceResult {
        error: ErrorCode::None,
        duplicate: appended.duplicate,
        base_offset: appended.base_offset,
        log_append_time: appended.append_time,
        message: String::new(),
    };
    match p.acks {
        Acks::None => None,
        Acks::Leader => frame(corr, Payload::ProduceResult(result)),
        Acks::All if shared.config.sink => frame(corr, Payload::ProduceResult(result)),
        Acks::All => {
            let ms = if p.timeout_ms == 0 { shared.config.default_produce_timeout_ms } else { p.timeout_ms };
            Some(Pending::Durable {
                partition: partition.clone(),
                end: appended.end_offset,
                timeout: Duration::from_millis(u64::from(ms)),
                correlation_id: corr,
                result,
            })
        }
    }
}

fn metadata(ctx: &ConnCtx, m: Metadata) -> MetadataOk {
    let shared = &ctx.shared;
    let describe = |t: &super::topics::Topic| TopicMetadata {
        name: t.name.to_string(),
        error: ErrorCode::None,
        partitions: t.partitions.iter().map(|p| p.metadata(shared.config.broker_id)).collect(),
    };
    let topics = if m.topics.is_empty() {
        shared
            .registry
            .list()
            .iter()
            .filter(|t| shared.acl.sees(&ctx.principal, &t.name))
            .map(|t| describe(t))
            .collect()
    } else {
        m.topics
            .iter()
            .map(|name| {
                if !shared.acl.sees(&ctx.principal, name) {
                    inc(&shared.metrics.authorization_failures);
                    return TopicMetadata {
                        name: name.clone(),
                        error: ErrorCode::AuthorizationFailed,
                        partitions: vec![],
                    };
                }
                let found = if shared.acl.allows(&ctx.principal, name, Permission::Write) {
                    shared.topic_for_write(name).map_err(|e| e.code)
                } else {
                    shared.registry.get(name).ok_or(ErrorCode::UnknownTopicOrPartition)
                };
                match found {
                    Ok(t) => describe(&t),
                    Err(code) => TopicMetadata { name: name.clone(), error: code, partitions: vec![] },
                }
            })
            .collect()
    };
    MetadataOk {
        brokers: vec![BrokerInfo {
            id: shared.config.broker_id,
            host: shared.config.advertised_host.clone().unwrap_or_else(|| shared.local_addr.ip().to_string()),
            port: shared.local_addr.port(),
        }],
        topics,
    }
}

fn create_topic(ctx: &ConnCtx, corr: u32, c: CreateTopic) -> Option<Pending> {
    if !ctx.shared.acl.allows(&ctx.principal, &c.topic, Permission::Admin) {
        return denied(ctx, corr, &c.topic, Permission::Admin);
    }
    match ctx.shared.registry.create(&c.topic, c.partitions) {
        Ok(t) => frame(
            corr,
            Payload::CreateTopicOk(CreateTopic { topic: t.name.to_string(), partitions: t.partitions.len() as u32 }),
        ),
        Err(e) => error(corr, e.code, e.message),
    }
}

fn fetch(ctx: &ConnCtx, corr: u32, req: Fetch) -> Option<Pending> {
    inc(&ctx.shared.metrics.fetch_requests);
    if !ctx.shared.acl.allows(&ctx.principal, &req.topic, Permission::Read) {
        return denied(ctx, corr, &req.topic, Permission::Read);
    }
    let Some(topic) = ctx.shared.registry.get(&req.topic) else {
        return error(corr, ErrorCode::UnknownTopicOrPartition, format!("topic '{}' does not exist", req.topic));
    };
    let Some(partition) = topic.partitions.get(req.partition as usize) else {
        return error(
            corr,
            ErrorCode::UnknownTopicOrPartition,
            format!(
                "topic '{}' has {} partitions; {} does not exist",
                req.topic,
                topic.partitions.len(),
                req.partition
            ),
        );
    };
    // Leave room for the frame header and the two offsets.
    let limit = (ctx.shared.config.max_frame_size as usize).saturating_sub(64);
    let max_bytes = (req.max_bytes as usize).clamp(1, limit);
    match partition.read(req.offset, max_bytes) {
        Ok((batches, high_watermark, log_start_offset)) if batches.len() <= limit => {
            frame(corr, Payload::FetchOk(FetchOk { high_watermark, log_start_offset, batches }))
        }
        Ok((batches, ..)) => {
            error(corr, ErrorCode::Unknown, format!("stored batch of {} bytes exceeds the frame limit", batches.len()))
        }
        Err(super::log::LogError::OffsetOutOfRange { requested, start, end }) => {
            error(corr, ErrorCode::OffsetOutOfRange, format!("offset {requested} is outside [{start}, {end}]"))
        }
        Err(e @ super::log::LogError::Corrupt { .. }) => {
            tracing::error!(topic = %req.topic, partition = req.partition, error = %e, "stored data failed its check");
            error(corr, ErrorCode::CorruptStoredData, e.to_string())
        }
        Err(e) => error(corr, ErrorCode::StorageError, e.to_string()),
    }
}
