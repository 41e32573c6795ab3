//! Where batches are sealed and sent: the accumulator's queues are drained into record
//! batches when a partition has `batch_size` bytes, when its linger expires, or on
//! flush/close; the windows then release batches to their partition's stream in order.

use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};

use super::producer_id::PidState;
use super::window::Slot;
use super::{Core, Outcome, Tick, Transmit};
use crate::producer::delivery::Delivery;
use crate::producer::metrics::{us, ProducerMetrics};
use crate::protocol::batch::restamp;
use crate::protocol::frame::encode_produce_head;
use crate::protocol::{Acks, BatchBuilder, ProducerStamp};

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
    /// When the batch was last handed to a stream.
    pub written_at: Option<Tick>,
}

impl Core {
    /// Takes note of partitions the accumulator announced.
    pub(crate) fn collect_ready(&mut self, now: Tick) {
        while let Some((tid, p)) = self.acc.ready.pop() {
            let Some(part) = self.topics.list.get_mut(tid as usize).and_then(|t| t.parts.get_mut(p as usize)) else {
                continue;
            };
            part.since.get_or_insert(now);
            if !part.active {
                part.active = true;
                self.topics.active.push((tid, p));
            }
        }
    }

    /// Seals every batch that is due.
    pub(crate) fn seal(&mut self, now: Tick, flush_all: bool) {
        let batch_size = self.cfg.batch_size;
        let mut i = 0;
        while i < self.topics.active.len() {
            let (tid, p) = self.topics.active[i];
            let (t, pu) = (tid as usize, p as usize);
            loop {
                let part = &self.topics.list[t].parts[pu];
                let q = &self.topics.list[t].queues.partitions[pu];
                let queued = q.queued_bytes.load(Ordering::Acquire) + part.carry.as_ref().map_or(0, |c| c.size);
                if queued == 0 {
                    break;
                }
                let due = flush_all
                    || queued >= batch_size
                    || part.since.is_none_or(|s| now.saturating_duration_since(s) >= self.cfg.linger);
                if !due || !self.seal_one(t, pu, now) {
                    break;
                }
            }
            let empty = self.topics.list[t].queues.partitions[pu].queued_bytes.load(Ordering::Acquire) == 0;
            let part = &mut self.topics.list[t].parts[pu];
            if part.carry.is_none() && empty {
                part.active = false;
                part.since = None;
                self.topics.active.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// Seals one batch of partition `(t, p)`. Returns false if no record was there.
    fn seal_one(&mut self, t: usize, p: usize, now: Tick) -> bool {
        let batch_size = self.cfg.batch_size;
        let queue = self.topics.list[t].queues.partitions[p].clone();
        let part = &mut self.topics.list[t].parts[p];
        let mut builder = BatchBuilder::with_capacity(batch_size.min(1 << 20));
        let queued = queue.queued_bytes.load(Ordering::Relaxed);
        let mut records = Vec::with_capacity((queued.min(batch_size) / 64).max(8));
        let mut memory = 0;
        let mut first_enqueued = now;
        loop {
            let rec = match part.carry.take() {
                Some(r) => r,
                None => match queue.queue.pop() {
                    Some(r) => {
                        queue.queued_bytes.fetch_sub(r.size, Ordering::AcqRel);
                        r
                    }
                    None => break,
                },
            };
            if !builder.is_empty() && builder.size_bytes() + builder.record_size(&rec.record) > batch_size {
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
        // The remainder's linger starts now.
        part.since = Some(now);
        let uncompressed = builder.size_bytes();
        let count = builder.len();
        let id = self.next_batch_id;
        self.next_batch_id += 1;
        let stamp = match self.pid.state {
            PidState::Ready { id, epoch } => {
                ProducerStamp { producer_id: id, producer_epoch: epoch, base_sequence: part.window.next_seq() }
            }
            _ => ProducerStamp::NONE,
        };
        let bytes = builder.seal(self.cfg.compression, self.cfg.compression_level, stamp);
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
        let payload = BatchPayload { bytes, stamp, records, memory, first_enqueued, written_at: None };
        part.window.push(id, count, payload, now);
        let topic = self.topics.list[t].queues.name.clone();
        let partitions = self.topics.list[t].parts.len() as u32;
        self.outcomes.push_back(Outcome::Sealed { topic, partition: p as u32, partitions });
        true
    }

    /// Hands every batch the windows release to its partition's stream.
    pub(crate) fn send(&mut self, now: Tick) {
        let (pid, draining) = match self.pid.state {
            PidState::Off => (None, false),
            PidState::Ready { id, epoch } => (Some((id, epoch)), false),
            PidState::Bumping { id, epoch, requested: false } => (Some((id, epoch)), true),
            // No id yet, a bump in progress, or fenced: nothing goes out.
            _ => return,
        };
        let acks = self.cfg.acks;
        let timeout_ms = self.cfg.request_timeout.as_millis().min(u128::from(u32::MAX)) as u32;
        let mut head = BytesMut::with_capacity(4096);
        for t in 0..self.topics.list.len() {
            for p in 0..self.topics.list[t].parts.len() {
                if self.topics.list[t].parts[p].window.is_empty() {
                    continue;
                }
                let (link, stream) = (self.topics.list[t].parts[p].link, self.topics.list[t].parts[p].stream);
                if self.links.list[link].refused.is_some() || self.links.list[link].breaker.is_open(now) {
                    self.fail_link_pending(now, link);
                    continue;
                }
                let name = self.topics.list[t].queues.name.clone();
                let mut done = Vec::new();
                {
                    let Some((sid, st)) = self.links.stream(link, stream) else { continue };
                    let part = &mut self.topics.list[t].parts[p];
                    while let Some(i) = part.window.next_sendable(now, draining) {
                        let slot = part.window.slot_mut(i);
                        // Restamp when the producer id, epoch or sequence changed since sealing.
                        if let Some((id, epoch)) = pid {
                            let want =
                                ProducerStamp { producer_id: id, producer_epoch: epoch, base_sequence: slot.seq };
                            if slot.payload.stamp != want {
                                slot.payload.bytes = restamp(&slot.payload.bytes, want);
                                slot.payload.stamp = want;
                            }
                        }
                        let corr = self.next_corr;
                        self.next_corr = self.next_corr.wrapping_add(1).max(1);
                        head.clear();
                        encode_produce_head(
                            &mut head,
                            corr,
                            &name,
                            p as u32,
                            acks,
                            timeout_ms,
                            slot.payload.bytes.len(),
                        );
                        let batch = slot.payload.bytes.clone();
                        let (attempts, sealed_at) = (slot.attempts, slot.sealed_at);
                        slot.payload.written_at = Some(now);
                        let len = (head.len() + batch.len()) as u64;
                        self.transmits.push_back(Transmit { stream: sid, head: head.split().freeze(), batch });
                        ProducerMetrics::add(&self.metrics.bytes_sent, len);
                        if attempts > 0 {
                            ProducerMetrics::add(&self.metrics.retries, 1);
                        }
                        let _ = self.metrics.histograms().send.record(us(now.saturating_duration_since(sealed_at)));
                        let expected = super::links::Expected { corr, topic: t as u32, partition: p as u32 };
                        st.unwritten.push_back(expected);
                        if acks == Acks::None {
                            // Fire and forget: done once handed to the stream.
                            done.push(part.window.remove(i));
                        } else {
                            st.answers.push_back(expected);
                            part.window.mark_sent(i, corr, sid, now);
                        }
                    }
                }
                for s in done {
                    self.complete_ok(now, t, p as u32, s, None);
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
        self.outcomes.push_back(Outcome::Acked { topic, partition, base_offset, records: s.payload.records });
    }
}
