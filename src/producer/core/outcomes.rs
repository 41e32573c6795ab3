//! Where records fail and handles get their answers: failing batches and queued records
//! (with the persistence each may claim), purge, flush and close.

use std::sync::atomic::Ordering;

use super::batches::BatchPayload;
use super::window::Slot;
use super::{Action, Core, FlushReply, Outcome, Tick};
use crate::producer::accumulator::QueuedRecord;
use crate::producer::error::{ErrorKind, Persistence, ProduceError};
use crate::producer::metrics::ProducerMetrics;

/// A `flush()` or `close()` waiting for the records it covers.
pub(crate) struct FlushWaiter {
    /// Batches with an id below this are covered; `None` until the flush has sealed.
    pub target: Option<u64>,
    pub reply: FlushReply,
    /// Covered records that failed, and the first error.
    pub failed: u64,
    pub first_error: Option<ProduceError>,
}

impl Core {
    /// Records a record failure against the flushes that cover it (batch `id`, or `None`
    /// for a record that was still queued).
    pub(crate) fn note_failures(&mut self, id: Option<u64>, n: u64, err: &ProduceError) {
        for f in &mut self.flushes {
            let covered = match (f.target, id) {
                (None, _) => true,
                (Some(t), Some(id)) => id < t,
                (Some(_), None) => false,
            };
            if covered {
                f.failed += n;
                f.first_error.get_or_insert_with(|| err.clone());
            }
        }
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
        self.note_failures(Some(s.id), n, &err);
        let records = s.payload.records.into_iter().map(|r| r.delivery).collect();
        self.outcomes.push_back(Outcome::Failed { records, error: err });
    }

    /// Fails records still in a partition's queue (never sealed).
    pub(crate) fn fail_queued(&mut self, tid: usize, p: usize, err: &ProduceError) -> usize {
        let q = self.topics.list[tid].queues.partitions[p].clone();
        let mut failed: Vec<QueuedRecord> = self.topics.list[tid].parts[p].carry.take().into_iter().collect();
        while let Some(r) = q.queue.pop() {
            q.queued_bytes.fetch_sub(r.size, Ordering::AcqRel);
            failed.push(r);
        }
        self.fail_records(failed, err)
    }

    /// Fails records that never made it into a batch.
    pub(crate) fn fail_records(&mut self, records: Vec<QueuedRecord>, err: &ProduceError) -> usize {
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
        self.note_failures(None, n as u64, &err);
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
                    && t.queues.partitions[i].queued_bytes.load(Ordering::Acquire) == 0
            })
        })
    }

    pub(crate) fn finish_flushes(&mut self) {
        if self.flushes.is_empty() {
            return;
        }
        let oldest = self.topics.list.iter().flat_map(|t| t.parts.iter()).filter_map(|p| p.window.oldest_id()).min();
        let mut i = 0;
        while i < self.flushes.len() {
            let done = self.flushes[i].target.is_some_and(|t| oldest.is_none_or(|o| o >= t));
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
        for reply in self.topics.take_waiters() {
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
