//! Where records fail and handles get their answers: failing batches and queued records
//! (with the persistence each may claim), purge, flush and close.

use std::sync::atomic::Ordering;

use super::batches::BatchPayload;
use super::window::Slot;
use super::{Action, Core, FlushReply, Outcome, Tick};
use crate::producer::accumulator::{FlushPoint, QueuedRecord};
use crate::producer::error::{ErrorKind, Persistence, ProduceError};
use crate::producer::metrics::ProducerMetrics;

/// A `flush()` or `close()` waiting for the records it covers.
pub(crate) struct FlushWaiter {
    /// The records it covers: those enqueued before the call.
    pub upto: FlushPoint,
    pub reply: FlushReply,
    /// Covered records that failed, and the first error.
    pub failed: u64,
    pub first_error: Option<ProduceError>,
    /// A `close()` (its answer is kept for later calls).
    pub close: bool,
}

impl FlushWaiter {
    pub(crate) fn new(upto: FlushPoint, reply: FlushReply, close: bool) -> Self {
        FlushWaiter { upto, reply, failed: 0, first_error: None, close }
    }

    /// How many records of partition `(t, p)` it covers.
    fn limit(&self, t: u32, p: u32) -> u64 {
        self.upto.0.iter().find(|(ti, pi, _)| (*ti, *pi) == (t, p)).map_or(0, |x| x.2)
    }
}

impl Core {
    /// Records the failure of records `first..first + n` of partition `(t, p)` (numbered in
    /// the order they were taken from its queue) against the flushes that cover them.
    pub(crate) fn note_failures(&mut self, (t, p): (u32, u32), first: u64, n: u64, err: &ProduceError) {
        for f in &mut self.flushes {
            let covered = f.limit(t, p).min(first + n).saturating_sub(first);
            if covered > 0 {
                f.failed += covered;
                f.first_error.get_or_insert_with(|| err.clone());
            }
        }
    }

    /// Whether every record of partition `(t, p)` numbered below `n` has its outcome.
    fn done_up_to(&self, t: u32, p: u32, n: u64) -> bool {
        let Some(part) = self.topics.list.get(t as usize).and_then(|t| t.parts.get(p as usize)) else { return true };
        // Not yet taken from the queue; or carried over to the next batch (the last one taken).
        if part.popped < n || (part.carry.is_some() && part.popped - 1 < n) {
            return false;
        }
        // Batches are kept in the order their records were taken.
        part.window.iter().next().is_none_or(|s| s.payload.first_index >= n)
    }

    /// Fails every record of a batch; the persistence reported follows what is known.
    pub(crate) fn fail_slot(&mut self, s: Slot<BatchPayload>, err: ProduceError) {
        let persistence = match err.persistence() {
            Persistence::Persisted => Persistence::Persisted,
            _ if s.may_be_stored() => Persistence::PossiblyPersisted,
            p => p,
        };
        let err = err.with_persistence(persistence);
        s.payload.span.in_scope(|| tracing::debug!(error = %err, ?persistence, "batch failed"));
        self.acc.release(s.payload.memory);
        let n = s.payload.records.len() as u64;
        ProducerMetrics::add(&self.metrics.records_failed, n);
        self.metrics.in_flight_batches.fetch_sub(1, Ordering::Relaxed);
        self.note_failures(s.payload.partition, s.payload.first_index, n, &err);
        let records = s.payload.records.into_iter().map(|r| r.delivery).collect();
        self.outcomes.push_back(Outcome::Failed { records, error: err });
    }

    /// Fails records still in a partition's queue (never sealed).
    pub(crate) fn fail_queued(&mut self, tid: usize, p: usize, err: &ProduceError) -> usize {
        let q = self.topics.list[tid].queues.partitions[p].clone();
        let part = &mut self.topics.list[tid].parts[p];
        let first = part.popped - u64::from(part.carry.is_some());
        let mut failed: Vec<QueuedRecord> = part.carry.take().into_iter().collect();
        while let Some(r) = q.queue.pop() {
            q.counts.bytes.fetch_sub(r.size, Ordering::AcqRel);
            part.popped += 1;
            failed.push(r);
        }
        self.fail_records((tid as u32, p as u32), first, failed, err)
    }

    /// Fails records that never made it into a batch: records `first..` of partition
    /// `part`, in the order they were taken from its queue.
    fn fail_records(&mut self, part: (u32, u32), first: u64, records: Vec<QueuedRecord>, err: &ProduceError) -> usize {
        let n = records.len();
        if n == 0 {
            return 0;
        }
        let err = err.clone().with_persistence(Persistence::NotPersisted);
        let mut deliveries = Vec::with_capacity(n);
        for r in records {
            self.acc.release(r.charge);
            deliveries.push(r.delivery);
        }
        ProducerMetrics::add(&self.metrics.records_failed, n as u64);
        self.note_failures(part, first, n as u64, &err);
        self.outcomes.push_back(Outcome::Failed { records: deliveries, error: err });
        n
    }

    /// Fails every queued and pending record with `err` (close deadline, fatal error).
    pub(crate) fn fail_everything(&mut self, err: ProduceError) {
        for tid in 0..self.topics.list.len() {
            for p in 0..self.topics.list[tid].parts.len() {
                self.fail_queued(tid, p, &err);
                let slots = self.topics.list[tid].parts[p].window.drain_all();
                for s in slots {
                    self.fail_slot(s, err.clone());
                }
            }
        }
    }

    /// Purge: fail what has not been written yet (queued records and batches waiting
    /// to be sent for the first time).
    pub(crate) fn purge(&mut self, _now: Tick) -> usize {
        let err = ProduceError::new(ErrorKind::Closed, Persistence::NotPersisted, "record purged before it was sent");
        let mut n = 0;
        for tid in 0..self.topics.list.len() {
            for p in 0..self.topics.list[tid].parts.len() {
                n += self.fail_queued(tid, p, &err);
                // Never sent, so never numbered: the sequence has no gap.
                let gone = self.topics.list[tid].parts[p].window.take(|s| s.attempts == 0);
                for s in gone {
                    n += s.payload.records.len();
                    self.fail_slot(s, err.clone());
                }
            }
        }
        n
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.topics.list.iter().all(|t| {
            t.parts.iter().enumerate().all(|(i, p)| {
                p.window.is_empty()
                    && p.carry.is_none()
                    && t.queues.partitions[i].counts.bytes.load(Ordering::Acquire) == 0
            })
        })
    }

    /// Answers the flushes whose records all have their outcome.
    pub(crate) fn finish_flushes(&mut self) {
        let mut i = 0;
        while i < self.flushes.len() {
            let done = self.flushes[i].upto.0.iter().all(|&(t, p, n)| self.done_up_to(t, p, n));
            if done {
                let f = self.flushes.swap_remove(i);
                self.answer_flush(f);
            } else {
                i += 1;
            }
        }
    }

    pub(crate) fn answer_flush(&mut self, f: FlushWaiter) {
        let result = match (&self.fatal, f.first_error) {
            (Some(e), _) => Err(e.clone()),
            (None, None) => Ok(()),
            (None, Some(e)) => {
                let msg = format!("{} of the records it covered failed; the first: {}", f.failed, e.message());
                Err(ProduceError::new(e.kind(), e.persistence(), msg))
            }
        };
        if f.close && self.close_result.is_none() {
            self.close_result = Some(result.clone());
        }
        self.outcomes.push_back(Outcome::Flushed { reply: f.reply, result });
    }

    /// Everything delivered, or the close deadline passed (then what is left fails).
    pub(crate) fn finish_close(&mut self, now: Tick) {
        let Some(deadline) = self.closing else { return };
        let idle = self.is_idle();
        if !idle && now < deadline {
            return;
        }
        if !idle {
            let err = ProduceError::new(
                ErrorKind::Closed,
                Persistence::NotPersisted,
                "producer closed before the record was delivered",
            );
            self.fail_everything(err);
        }
        self.finish(now);
    }

    /// Answers everything still waiting and stops.
    pub(crate) fn finish(&mut self, now: Tick) {
        for f in std::mem::take(&mut self.flushes) {
            self.answer_flush(f);
        }
        let err = self.fatal.clone().unwrap_or_else(closed_error);
        for reply in self.topics.take_waiters(&self.acc) {
            self.outcomes.push_back(Outcome::Metadata { reply, result: Err(err.clone()) });
        }
        for conn in self.links.open_conns() {
            self.actions.push_back(Action::Close { conn, reason: "producer closed" });
        }
        self.links.shut_all(now);
        self.finished = true;
    }
}

/// The error for records refused because the producer is closed.
pub(crate) fn closed_error() -> ProduceError {
    ProduceError::new(ErrorKind::Closed, Persistence::NotPersisted, "producer closed")
}
