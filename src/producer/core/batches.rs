//! Where batches are sealed, sent and split: a partition's queue is drained into a record
//! batch when it holds a full batch, when its linger expires (unless its window is already
//! full: then the records wait and make a fuller batch), on flush/close, or when its oldest
//! record reaches the delivery timeout. A batch never exceeds `batch_size` nor the frame
//! limit the partition's broker announced. Windows then release batches to their
//! partition's stream, in order.

use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};

use super::window::Slot;
use super::{Core, Outcome, StreamId, Tick, Transmit};
use crate::producer::delivery::Delivery;
use crate::producer::error::{ErrorKind, Persistence, ProduceError};
use crate::producer::metrics::{us, ProducerMetrics};
use crate::protocol::batch::{restamp, BATCH_HEADER_LEN};
use crate::protocol::frame::encode_produce_head;
use crate::protocol::{Acks, BatchBuilder, ProducerStamp, Record, RecordBatch};

/// One record of a sealed batch: where its outcome goes.
pub(crate) struct RecordEntry {
    /// Its delivery.
    pub delivery: Delivery,
    /// Its timestamp (reported in its metadata).
    pub timestamp: i64,
    /// When it was enqueued.
    pub enqueued: Tick,
}

/// A sealed batch as the window keeps it.
pub(crate) struct BatchPayload {
    /// The sealed batch bytes, stamped with `stamp`.
    pub bytes: Bytes,
    /// The idempotence fields currently in `bytes`.
    pub stamp: ProducerStamp,
    /// Its records, in order.
    pub records: Vec<RecordEntry>,
    /// Buffer memory held.
    pub memory: usize,
    /// Enqueue time of the oldest record (delivery timeout runs from here).
    pub first_enqueued: Tick,
    /// Its partition: (topic index, partition).
    pub partition: (u32, u32),
    /// The number of its first record in its partition, counting records in the order they
    /// were taken from the queue (its records are numbered on from there).
    pub first_index: u64,
    /// When the batch was last written.
    pub written_at: Option<Tick>,
    /// The batch's lifecycle span (`debug`; see [`batch_span`]): its events (sealed, sent,
    /// retried, acknowledged, failed) carry what people search by.
    pub span: tracing::Span,
}

/// The span of one batch from seal to outcome: `topic`, `partition`, `batch_id`, `records`,
/// `bytes`, and, recorded at each send, `producer_id`, `producer_epoch`, `sequence`,
/// `correlation_id`, `attempt`. At `debug` level (`RUST_LOG=qwire=debug`); disabled it
/// costs one check per batch.
pub(crate) fn batch_span(topic: &str, partition: usize, batch_id: u64, records: u32, bytes: usize) -> tracing::Span {
    use tracing::field::Empty;
    tracing::debug_span!(
        "batch",
        topic,
        partition,
        batch_id,
        records,
        bytes,
        producer_id = Empty,
        producer_epoch = Empty,
        sequence = Empty,
        correlation_id = Empty,
        attempt = Empty,
    )
}

/// Bytes of a produce frame other than the batch, for `topic`: length, kind, correlation
/// id, topic, partition, acks, timeout. What `length` counts excludes its own 4 bytes.
pub(crate) fn frame_overhead(topic: &str) -> usize {
    1 + 4 + 2 + topic.len() + 4 + 1 + 4
}

impl Core {
    /// Takes note of partitions the accumulator announced.
    pub(crate) fn collect_ready(&mut self, now: Tick) {
        while let Some((tid, p)) = self.acc.ready.pop() {
            let Some(part) = self.topics.list.get_mut(tid as usize).and_then(|t| t.parts.get_mut(p as usize)) else {
                continue;
            };
            part.since.get_or_insert(now);
            part.oldest.get_or_insert(now);
            if !part.active {
                part.active = true;
                self.topics.active.push((tid, p));
            }
        }
    }

    /// The largest batch (sealed bytes) partition `(t, p)` may have: `batch_size`, and
    /// what fits the frame limit of its broker once known.
    pub(crate) fn batch_limit(&self, t: usize, p: usize) -> usize {
        let part = &self.topics.list[t].parts[p];
        let name = &self.topics.list[t].queues.name;
        match self.links.list.get(self.route(part)).and_then(|l| l.batch_limit(name)) {
            Some(max) => self.cfg.batch_size.min(max).max(BATCH_HEADER_LEN + 1),
            None => self.cfg.batch_size,
        }
    }

    /// Seals every batch that is due (`flush_all`: every partition, linger or not).
    pub(crate) fn seal(&mut self, now: Tick, flush_all: bool) {
        let mut i = 0;
        while i < self.topics.active.len() {
            let (tid, p) = self.topics.active[i];
            let (t, pu) = (tid as usize, p as usize);
            let limit = self.batch_limit(t, pu);
            loop {
                let part = &self.topics.list[t].parts[pu];
                let q = &self.topics.list[t].queues.partitions[pu];
                let queued = q.counts.bytes.load(Ordering::Acquire) + part.carry.as_ref().map_or(0, |c| c.size);
                if queued == 0 {
                    break;
                }
                let lingered = part.since.is_none_or(|s| now.saturating_duration_since(s) >= self.cfg.linger);
                let room = part.window.len() < self.cfg.max_in_flight;
                let expiring =
                    part.oldest.is_some_and(|o| now.saturating_duration_since(o) >= self.cfg.delivery_timeout);
                let due = flush_all || queued >= limit || (lingered && room) || expiring;
                if !due || !self.seal_one(t, pu, now, limit) {
                    break;
                }
            }
            let empty = self.topics.list[t].queues.partitions[pu].counts.bytes.load(Ordering::Acquire) == 0;
            let part = &mut self.topics.list[t].parts[pu];
            if part.carry.is_none() && empty {
                part.active = false;
                part.since = None;
                part.oldest = None;
                self.topics.active.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// Seals one batch of at most `limit` bytes from partition `(t, p)`. Returns false if
    /// no record was there.
    fn seal_one(&mut self, t: usize, p: usize, now: Tick, limit: usize) -> bool {
        let queue = self.topics.list[t].queues.partitions[p].clone();
        let topic_name = self.topics.list[t].queues.name.clone();
        let part = &mut self.topics.list[t].parts[p];
        // Sized for what is queued, not for a full batch: a batch holds its buffer until
        // it is acknowledged, and buffer memory is charged for the records, not capacity.
        let queued = queue.counts.bytes.load(Ordering::Relaxed) + part.carry.as_ref().map_or(0, |c| c.size);
        let mut builder = BatchBuilder::with_capacity(BATCH_HEADER_LEN + queued.min(limit));
        // The carried record is the last one taken.
        let first_index = part.popped - u64::from(part.carry.is_some());
        let mut records = Vec::new();
        let mut memory = 0;
        let mut first_enqueued = now;
        loop {
            let rec = match part.carry.take() {
                Some(r) => r,
                None => match queue.queue.pop() {
                    Some(r) => {
                        queue.counts.bytes.fetch_sub(r.size, Ordering::AcqRel);
                        part.popped += 1;
                        r
                    }
                    None => break,
                },
            };
            if !builder.is_empty() && builder.size_bytes() + builder.record_size(&rec.record) > limit {
                part.carry = Some(rec);
                break;
            }
            builder.push(&rec.record);
            memory += rec.charge;
            first_enqueued = first_enqueued.min(rec.enqueued);
            records.push(RecordEntry {
                delivery: rec.delivery,
                timestamp: rec.record.timestamp,
                enqueued: rec.enqueued,
            });
        }
        if builder.is_empty() {
            return false;
        }
        records.shrink_to_fit();
        // The remainder's linger starts now; its oldest record is the one carried over
        // (records still queued were enqueued after the ones taken).
        part.since = Some(now);
        part.oldest = Some(part.carry.as_ref().map_or(now, |c| c.enqueued));
        let uncompressed = builder.size_bytes();
        let count = builder.len();
        let id = self.next_batch_id;
        self.next_batch_id += 1;
        let bytes = builder.seal(self.cfg.compression, self.cfg.compression_level, ProducerStamp::NONE);
        {
            let mut h = self.metrics.histograms();
            for r in &records {
                let _ = h.queue.record(us(now.saturating_duration_since(r.enqueued)));
            }
        }
        ProducerMetrics::add(&self.metrics.batches_sealed, 1);
        ProducerMetrics::add(&self.metrics.records_sealed, u64::from(count));
        ProducerMetrics::add(&self.metrics.sealed_bytes, bytes.len() as u64);
        ProducerMetrics::add(&self.metrics.uncompressed_bytes, uncompressed as u64);
        self.metrics.in_flight_batches.fetch_add(1, Ordering::Relaxed);
        let stamp = ProducerStamp::NONE;
        let span = batch_span(&topic_name, p, id, count, bytes.len());
        span.in_scope(|| tracing::debug!(uncompressed_bytes = uncompressed, "batch sealed"));
        let payload = BatchPayload {
            bytes,
            stamp,
            records,
            memory,
            first_enqueued,
            partition: (t as u32, p as u32),
            first_index,
            written_at: None,
            span,
        };
        part.window.push(id, count, payload, now);
        let topic = self.topics.list[t].queues.name.clone();
        let partitions = self.topics.list[t].parts.len() as u32;
        self.outcomes.push_back(Outcome::Sealed { topic, partition: p as u32, partitions });
        true
    }

    /// Splits the batch at `i` of partition `(t, p)` in two halves (it was refused as too
    /// large and cannot be stored); a single record fails instead. Returns false if it
    /// failed.
    pub(crate) fn split_or_fail(&mut self, now: Tick, t: usize, p: usize, i: usize, why: String) -> bool {
        let slot = self.topics.list[t].parts[p].window.slot(i);
        let n = slot.records as usize;
        let halves = if n > 1 { self.encode_halves(&slot.payload.bytes, n / 2) } else { None };
        let Some([(a_count, a_bytes), (b_count, b_bytes)]) = halves else {
            let s = self.topics.list[t].parts[p].window.remove_at(i);
            self.fail_slot(s, ProduceError::new(ErrorKind::RecordTooLarge, Persistence::NotPersisted, why));
            return false;
        };
        tracing::info!(topic = %self.topics.list[t].queues.name, partition = p, records = n, %why, "batch split");
        let name = self.topics.list[t].queues.name.clone();
        let slot = self.topics.list[t].parts[p].window.slot_mut(i);
        let batch_id = slot.id;
        let mut first = std::mem::take(&mut slot.payload.records);
        let second = first.split_off(a_count as usize);
        let (memory, partition, first_index) = (slot.payload.memory, slot.payload.partition, slot.payload.first_index);
        let half = |records: Vec<RecordEntry>, bytes: Bytes, memory: usize, first_index: u64| BatchPayload {
            first_enqueued: records.iter().map(|r| r.enqueued).min().unwrap_or(now),
            span: batch_span(&name, p, batch_id, records.len() as u32, bytes.len()),
            bytes,
            stamp: ProducerStamp::NONE,
            records,
            memory,
            partition,
            first_index,
            written_at: None,
        };
        let a_memory = memory * a_count as usize / n;
        let parts = vec![
            (a_count, half(first, a_bytes, a_memory, first_index)),
            (b_count, half(second, b_bytes, memory - a_memory, first_index + u64::from(a_count))),
        ];
        self.metrics.in_flight_batches.fetch_add(1, Ordering::Relaxed);
        self.topics.list[t].parts[p].window.split(i, parts, now);
        true
    }

    /// The records of `bytes` re-encoded as two batches: the first `at`, and the rest.
    fn encode_halves(&self, bytes: &Bytes, at: usize) -> Option<[(u32, Bytes); 2]> {
        let batch = RecordBatch::from_bytes(bytes.clone()).ok()?;
        let records = batch.records(usize::MAX >> 1).ok()?;
        let encode = |rs: &[crate::protocol::StoredRecord]| {
            let mut b = BatchBuilder::new();
            for r in rs {
                let record = Record {
                    timestamp: r.timestamp,
                    key: r.key.clone(),
                    value: r.value.clone(),
                    headers: r.headers.clone(),
                };
                b.push(&record);
            }
            (rs.len() as u32, b.seal(self.cfg.compression, self.cfg.compression_level, ProducerStamp::NONE))
        };
        (at > 0 && at < records.len()).then(|| [encode(&records[..at]), encode(&records[at..])])
    }

    /// Hands every batch the windows release to its partition's stream.
    pub(crate) fn send(&mut self, now: Tick) {
        let hold_all = self.hold_all();
        let current = self.pid.current();
        let acks = self.cfg.acks;
        let timeout_ms = self.cfg.request_timeout.as_millis().min(u128::from(u32::MAX)) as u32;
        let mut head = BytesMut::with_capacity(4096);
        // Links that fail fast are handled once each, before the partitions (each pass
        // walks every partition): not once per partition.
        let failing: Vec<bool> = self.links.list.iter().map(|l| l.failing_fast(now)).collect();
        for (link, _) in failing.iter().enumerate().filter(|(_, f)| **f) {
            self.fail_link_pending(now, link);
        }
        for t in 0..self.topics.list.len() {
            for p in 0..self.topics.list[t].parts.len() {
                if self.topics.list[t].parts[p].window.is_empty() {
                    continue;
                }
                if self.topics.list[t].parts[p].stale_leader {
                    continue; // until the metadata says where it went
                }
                let link = self.route(&self.topics.list[t].parts[p]);
                if failing[link] {
                    // What is left is in flight (on another broker's stream): it waits.
                    continue;
                }
                if let Some(e) = self.pid.refused.clone() {
                    if current.is_none() {
                        self.fail_unsent(t, p, e);
                        continue;
                    }
                }
                let limit = self.links.list[link].batch_limit(&self.topics.list[t].queues.name);
                if let Some(n) = self.links.list[link].max_in_flight {
                    self.topics.list[t].parts[p].window.cap_in_flight(n);
                }
                let stream = self.topics.list[t].parts[p].stream;
                let name = self.topics.list[t].queues.name.clone();
                while let Some((sid, _)) = self.links.stream(link, stream) {
                    let part = &mut self.topics.list[t].parts[p];
                    let stale = part.window.numbering().is_some_and(|n| Some(n) != current);
                    let Some(i) = part.window.next_sendable(now, sid, hold_all || stale) else { break };
                    // `check_timeouts` ran first at this `now`: nothing past its deadline is left.
                    debug_assert!(
                        now.saturating_duration_since(part.window.slot(i).payload.first_enqueued)
                            < self.cfg.delivery_timeout
                    );
                    // Too large for this broker (its limit is smaller than when the batch
                    // was sealed): split it before it goes.
                    if let Some(limit) = limit {
                        let slot = part.window.slot(i);
                        if slot.payload.bytes.len() > limit && !slot.may_be_stored() {
                            let what = if slot.records == 1 { "a record" } else { "a batch" };
                            let why = format!(
                                "{name}-{p}: {what} of {} bytes exceeds the largest batch the broker accepts \
                                 ({limit} bytes)",
                                slot.payload.bytes.len(),
                            );
                            self.split_or_fail(now, t, p, i, why);
                            continue;
                        }
                    }
                    let corr = self.next_corr;
                    self.next_corr = self.next_corr.wrapping_add(1).max(1);
                    let stamp = part.window.mark_sent(i, corr, sid, current, now);
                    let slot = part.window.slot_mut(i);
                    // Restamp when the producer id, epoch or sequence changed since sealing.
                    let want = stamp.map_or(ProducerStamp::NONE, |(producer_id, producer_epoch, base_sequence)| {
                        ProducerStamp { producer_id, producer_epoch, base_sequence }
                    });
                    if slot.payload.stamp != want {
                        slot.payload.bytes = restamp(&slot.payload.bytes, want);
                        slot.payload.stamp = want;
                    }
                    let span = &slot.payload.span;
                    if !span.is_disabled() {
                        span.record("producer_id", want.producer_id);
                        span.record("producer_epoch", want.producer_epoch);
                        span.record("sequence", want.base_sequence);
                        span.record("correlation_id", corr);
                        span.record("attempt", slot.attempts);
                        span.in_scope(|| tracing::debug!("batch sent"));
                    }
                    head.clear();
                    encode_produce_head(&mut head, corr, &name, p as u32, acks, timeout_ms, slot.payload.bytes.len());
                    let batch = slot.payload.bytes.clone();
                    let len = (head.len() + batch.len()) as u64;
                    if slot.attempts > 1 {
                        ProducerMetrics::add(&self.metrics.retries, 1);
                    }
                    self.transmits.push_back(Transmit { stream: sid, head: head.split().freeze(), batch });
                    ProducerMetrics::add(&self.metrics.bytes_sent, len);
                    let expected = super::links::Expected { corr, topic: t as u32, partition: p as u32 };
                    let (_, st) = self.links.stream(link, stream).expect("checked above");
                    st.unwritten.push_back(expected);
                    if acks != Acks::None {
                        st.answers.push_back(expected);
                    }
                }
            }
        }
    }

    /// Fails the batches of partition `(t, p)` that were never sent.
    fn fail_unsent(&mut self, t: usize, p: usize, err: ProduceError) {
        let gone = self.topics.list[t].parts[p].window.take(|s| s.attempts == 0);
        for s in gone {
            self.fail_slot(s, err.clone());
        }
    }

    /// The shell wrote a request: its request timer starts; the send latency is recorded;
    /// with acks=none the batch is done.
    pub(crate) fn on_written(&mut self, now: Tick, stream: StreamId, frames: usize) {
        for _ in 0..frames {
            let Some(st) = self.links.stream_by_id(stream) else { return };
            let Some(e) = st.unwritten.pop_front() else { return };
            let (t, p) = (e.topic as usize, e.partition as usize);
            let Some(slot) = self.topics.list[t].parts[p].window.written(e.corr, now) else { continue };
            slot.payload.written_at = Some(now);
            let _ = self.metrics.histograms().send.record(us(now.saturating_duration_since(slot.sealed_at)));
            if self.cfg.acks == Acks::None {
                // Fire and forget: done once written.
                if let Some(s) = self.topics.list[t].parts[p].window.ack(e.corr) {
                    self.complete_ok(now, t, e.partition, s, None);
                }
            }
        }
    }

    /// Delivers success for every record of a batch.
    pub(crate) fn complete_ok(
        &mut self,
        now: Tick,
        t: usize,
        partition: u32,
        s: Slot<BatchPayload>,
        base_offset: Option<i64>,
    ) {
        let topic = self.topics.list[t].queues.name.clone();
        self.acc.release(s.payload.memory);
        self.metrics.in_flight_batches.fetch_sub(1, Ordering::Relaxed);
        ProducerMetrics::add(&self.metrics.batches_sent, 1);
        ProducerMetrics::add(&self.metrics.records_sent, s.payload.records.len() as u64);
        {
            let mut h = self.metrics.histograms();
            if let Some(w) = s.payload.written_at {
                let _ = h.rtt.record(us(now.saturating_duration_since(w)));
            }
            for r in &s.payload.records {
                let _ = h.record.record(us(now.saturating_duration_since(r.enqueued)));
            }
        }
        s.payload.span.in_scope(|| tracing::debug!(base_offset, "batch acknowledged"));
        self.outcomes.push_back(Outcome::Acked { topic, partition, base_offset, records: s.payload.records });
    }
}
