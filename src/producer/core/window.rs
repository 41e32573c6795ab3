//! The in-flight window of one partition: every sealed, unacknowledged batch with its
//! sequence range, attempts and state. Pure bookkeeping (time comes in as a parameter);
//! the driver does the I/O.
//!
//! Invariants:
//! - batches are kept in sequence order; the ones in flight are always a prefix of the
//!   not-yet-acknowledged ones that are being (re)sent in order: a batch is only sent
//!   when every batch before it is in flight, so the broker sees sequences in order;
//! - at most `max_in_flight` batches are in flight;
//! - `maybe_persisted` is true while a batch was sent and no definite answer came back:
//!   only such a batch may be written despite a failure, so only it is reported
//!   "possibly persisted", and an epoch bump waits until none is left unresolved.

use std::collections::VecDeque;
use std::time::Duration;

use super::{StreamId, Tick};

use crate::protocol::batch::increment_sequence;

/// A batch's place in the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotState {
    /// Waiting to be (re)sent, not before `not_before`.
    Ready { not_before: Option<Tick> },
    /// Written to a stream; waiting for the answer.
    InFlight { correlation_id: u32, sent_at: Tick, stream: StreamId },
}

/// One batch in the window.
#[derive(Debug)]
pub(crate) struct Slot<T> {
    /// Producer-wide batch id, increasing in seal order.
    pub id: u64,
    /// Base sequence (-1 without idempotence).
    pub seq: i32,
    /// Records in the batch.
    pub records: u32,
    /// The batch bytes, deliveries and anything else the driver keeps.
    pub payload: T,
    /// Send attempts so far.
    pub attempts: u32,
    /// Where it stands.
    pub state: SlotState,
    /// When it was sealed (delivery timeout runs from the oldest record's enqueue,
    /// tracked by the driver in the payload).
    pub sealed_at: Tick,
    /// Sent without a definite answer yet.
    pub maybe_persisted: bool,
}

/// The window of one partition.
#[derive(Debug)]
pub(crate) struct Window<T> {
    slots: VecDeque<Slot<T>>,
    next_seq: i32,
    idempotent: bool,
    max_in_flight: usize,
    in_flight: usize,
}

impl<T> Window<T> {
    pub(crate) fn new(idempotent: bool, max_in_flight: usize) -> Self {
        Window { slots: VecDeque::new(), next_seq: 0, idempotent, max_in_flight, in_flight: 0 }
    }

    /// Batches not yet acknowledged or failed.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when nothing is pending.
    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Batches currently in flight.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Smallest batch id still pending (for flush).
    pub(crate) fn oldest_id(&self) -> Option<u64> {
        self.slots.iter().map(|s| s.id).min()
    }

    /// Adds a sealed batch; returns its base sequence (-1 without idempotence).
    pub(crate) fn push(&mut self, id: u64, records: u32, payload: T, now: Tick) -> i32 {
        let seq = if self.idempotent {
            let s = self.next_seq;
            self.next_seq = increment_sequence(self.next_seq, records as i32);
            s
        } else {
            -1
        };
        self.slots.push_back(Slot {
            id,
            seq,
            records,
            payload,
            attempts: 0,
            state: SlotState::Ready { not_before: None },
            sealed_at: now,
            maybe_persisted: false,
        });
        seq
    }

    /// The index of the next batch to send, if the window allows one now. While
    /// `draining` (before an epoch bump), only batches whose fate is unknown are resent.
    pub(crate) fn next_sendable(&self, now: Tick, draining: bool) -> Option<usize> {
        if self.in_flight >= self.max_in_flight {
            return None;
        }
        let (i, slot) = self.slots.iter().enumerate().find(|(_, s)| matches!(s.state, SlotState::Ready { .. }))?;
        // Everything before the first ready batch is in flight (ordering invariant).
        let SlotState::Ready { not_before } = slot.state else { unreachable!() };
        if not_before.is_some_and(|t| t > now) || (draining && !slot.maybe_persisted) {
            return None;
        }
        Some(i)
    }

    /// When the first batch waiting for a back-off may go (for the timer).
    pub(crate) fn next_ready_time(&self) -> Option<Tick> {
        match self.slots.iter().find(|s| matches!(s.state, SlotState::Ready { .. }))?.state {
            SlotState::Ready { not_before } => not_before,
            SlotState::InFlight { .. } => None,
        }
    }

    /// The slot at `i`.
    pub(crate) fn slot(&self, i: usize) -> &Slot<T> {
        &self.slots[i]
    }

    /// Mutable slot at `i`.
    pub(crate) fn slot_mut(&mut self, i: usize) -> &mut Slot<T> {
        &mut self.slots[i]
    }

    /// Records that the batch at `i` was written with `correlation_id` on `stream`.
    pub(crate) fn mark_sent(&mut self, i: usize, correlation_id: u32, stream: StreamId, now: Tick) {
        let s = &mut self.slots[i];
        debug_assert!(matches!(s.state, SlotState::Ready { .. }));
        s.state = SlotState::InFlight { correlation_id, sent_at: now, stream };
        s.attempts += 1;
        s.maybe_persisted = true;
        self.in_flight += 1;
    }

    fn position(&self, correlation_id: u32) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| matches!(s.state, SlotState::InFlight { correlation_id: c, .. } if c == correlation_id))
    }

    /// Removes and returns the in-flight batch answered by `correlation_id` (success, or
    /// a final failure decided by the caller).
    pub(crate) fn complete(&mut self, correlation_id: u32) -> Option<Slot<T>> {
        let i = self.position(correlation_id)?;
        self.in_flight -= 1;
        self.slots.remove(i)
    }

    /// Removes a batch that was never in flight (acks=none completes on write; expiry).
    pub(crate) fn remove(&mut self, i: usize) -> Slot<T> {
        let s = self.slots.remove(i).expect("index in range");
        if matches!(s.state, SlotState::InFlight { .. }) {
            self.in_flight -= 1;
        }
        s
    }

    /// A definite negative answer for the in-flight batch `correlation_id`: it was not
    /// written. It goes back to ready (resent after `backoff`).
    /// `appended` says the broker did append it but could not confirm (then its fate
    /// stays unknown).
    pub(crate) fn requeue_refused(
        &mut self,
        correlation_id: u32,
        backoff: Duration,
        now: Tick,
        appended: bool,
    ) -> bool {
        let Some(i) = self.position(correlation_id) else { return false };
        self.in_flight -= 1;
        let s = &mut self.slots[i];
        s.state = SlotState::Ready { not_before: Some(now + backoff) };
        s.maybe_persisted = appended;
        true
    }

    /// Index of the in-flight batch answered by `correlation_id`.
    pub(crate) fn index_of(&self, correlation_id: u32) -> Option<usize> {
        self.position(correlation_id)
    }

    /// The streams for which `lost` says yes are gone: their in-flight batches go back to
    /// ready with their fate unknown. Returns how many.
    pub(crate) fn connection_lost(&mut self, lost: impl Fn(StreamId) -> bool, backoff: Duration, now: Tick) -> usize {
        let mut n = 0;
        for s in self.slots.iter_mut() {
            if let SlotState::InFlight { stream, .. } = s.state {
                if lost(stream) {
                    s.state = SlotState::Ready { not_before: Some(now + backoff) };
                    n += 1;
                }
            }
        }
        self.in_flight -= n;
        n
    }

    /// Removes the in-flight batches sent on streams for which `lost` says yes (without
    /// idempotence they cannot be resent safely).
    pub(crate) fn take_in_flight(&mut self, lost: impl Fn(StreamId) -> bool) -> Vec<Slot<T>> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.slots.len() {
            if matches!(self.slots[i].state, SlotState::InFlight { stream, .. } if lost(stream)) {
                out.push(self.slots.remove(i).expect("index in range"));
                self.in_flight -= 1;
            } else {
                i += 1;
            }
        }
        out
    }

    /// The sequence the next pushed batch will get.
    pub(crate) fn next_seq(&self) -> i32 {
        if self.idempotent {
            self.next_seq
        } else {
            -1
        }
    }

    /// The stream and send time of the oldest in-flight batch (for request timeouts).
    pub(crate) fn oldest_in_flight(&self) -> Option<(StreamId, Tick)> {
        self.slots
            .iter()
            .filter_map(|s| match s.state {
                SlotState::InFlight { stream, sent_at, .. } => Some((stream, sent_at)),
                _ => None,
            })
            .min_by_key(|(_, t)| *t)
    }

    /// Removes ready batches for which `expired` says yes, oldest first.
    pub(crate) fn take_expired(&mut self, mut expired: impl FnMut(&Slot<T>) -> bool) -> Vec<Slot<T>> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.slots.len() {
            if matches!(self.slots[i].state, SlotState::Ready { .. }) && expired(&self.slots[i]) {
                out.push(self.slots.remove(i).expect("index in range"));
            } else {
                i += 1;
            }
        }
        out
    }

    /// Removes every batch (close / purge / fatal error).
    pub(crate) fn drain_all(&mut self) -> Vec<Slot<T>> {
        self.in_flight = 0;
        self.slots.drain(..).collect()
    }

    /// Whether a batch whose fate is unknown is waiting (an epoch bump must wait).
    pub(crate) fn has_unresolved(&self) -> bool {
        self.in_flight > 0 || self.slots.iter().any(|s| s.maybe_persisted)
    }

    /// After an epoch bump: sequences restart at 0 and every waiting batch gets a new
    /// base sequence in order. Returns `(index, new_seq)` for each, so the caller can
    /// rewrite the batch bytes.
    pub(crate) fn resequence(&mut self) -> Vec<(usize, i32)> {
        debug_assert_eq!(self.in_flight, 0);
        self.next_seq = 0;
        let mut out = Vec::with_capacity(self.slots.len());
        for (i, s) in self.slots.iter_mut().enumerate() {
            s.seq = self.next_seq;
            s.maybe_persisted = false;
            s.state = SlotState::Ready { not_before: None };
            self.next_seq = increment_sequence(self.next_seq, s.records as i32);
            out.push((i, s.seq));
        }
        out
    }

    /// Whether the batch answered by `correlation_id` is the first pending batch of the
    /// partition (an out-of-order answer for it is a real sequence problem; for a later
    /// batch it only echoes an earlier failure).
    pub(crate) fn is_first(&self, correlation_id: u32) -> bool {
        self.position(correlation_id) == Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Tick {
        Tick::now()
    }

    fn sid(gen: u64) -> StreamId {
        StreamId { conn: super::super::ConnId { link: 0, slot: 0, gen }, index: 0, gen: 0 }
    }

    #[test]
    fn sequences_follow_record_counts_and_sends_stop_at_max_in_flight() {
        let now = t0();
        let mut w = Window::new(true, 2);
        assert_eq!(w.push(1, 3, "a", now), 0);
        assert_eq!(w.push(2, 2, "b", now), 3);
        assert_eq!(w.push(3, 1, "c", now), 5);
        let i = w.next_sendable(now, false).unwrap();
        w.mark_sent(i, 10, sid(1), now);
        let i = w.next_sendable(now, false).unwrap();
        assert_eq!(i, 1);
        w.mark_sent(i, 11, sid(1), now);
        assert_eq!(w.next_sendable(now, false), None, "window full");
        let done = w.complete(10).unwrap();
        assert_eq!((done.payload, done.seq), ("a", 0));
        assert_eq!(w.next_sendable(now, false), Some(1), "c is next (index 1 after a left)");
    }

    #[test]
    fn a_refused_batch_is_resent_before_the_ones_behind_it() {
        let now = t0();
        let mut w = Window::new(true, 5);
        for id in 0..3 {
            w.push(id, 1, id, now);
        }
        for c in 0..3u32 {
            let i = w.next_sendable(now, false).unwrap();
            w.mark_sent(i, c, sid(1), now);
        }
        // Batch 0 refused (retriable); 1 and 2 come back out of order behind it.
        assert!(w.is_first(0));
        assert!(w.requeue_refused(0, Duration::from_millis(100), now, false));
        assert!(!w.is_first(1), "batch 1 is behind the refused batch");
        assert!(w.requeue_refused(1, Duration::ZERO, now, false));
        assert!(w.requeue_refused(2, Duration::ZERO, now, false));
        // Nothing goes before batch 0's back-off ends, then all in order.
        assert_eq!(w.next_sendable(now, false), None);
        let later = now + Duration::from_millis(150);
        let order: Vec<u64> = (0..3)
            .map(|c| {
                let i = w.next_sendable(later, false).unwrap();
                let id = w.slot(i).id;
                w.mark_sent(i, 10 + c, sid(2), later);
                id
            })
            .collect();
        assert_eq!(order, [0, 1, 2]);
        assert_eq!(w.slot(0).attempts, 2);
    }

    #[test]
    fn connection_loss_keeps_order_and_marks_fate_unknown() {
        let now = t0();
        let mut w = Window::new(true, 5);
        w.push(0, 1, (), now);
        w.push(1, 1, (), now);
        let i = w.next_sendable(now, false).unwrap();
        w.mark_sent(i, 1, sid(7), now);
        let i = w.next_sendable(now, false).unwrap();
        w.mark_sent(i, 2, sid(7), now);
        assert_eq!(w.connection_lost(|s| s == sid(7), Duration::ZERO, now), 2);
        assert_eq!(w.in_flight(), 0);
        assert!(w.has_unresolved());
        // While draining only unresolved batches may go, in order.
        assert_eq!(w.next_sendable(now, true), Some(0));
        w.push(2, 1, (), now);
        let i = w.next_sendable(now, true).unwrap();
        w.mark_sent(i, 3, sid(8), now);
        let i = w.next_sendable(now, true).unwrap();
        w.mark_sent(i, 4, sid(8), now);
        assert_eq!(w.next_sendable(now, true), None, "batch 2 was never sent: it waits for the bump");
    }

    #[test]
    fn resequencing_after_an_epoch_bump_starts_at_zero_in_order() {
        let now = t0();
        let mut w = Window::new(true, 5);
        w.push(0, 4, (), now);
        w.push(1, 2, (), now);
        let i = w.next_sendable(now, false).unwrap();
        w.mark_sent(i, 1, sid(1), now);
        w.requeue_refused(1, Duration::ZERO, now, false);
        assert_eq!(w.resequence(), vec![(0, 0), (1, 4)]);
        assert_eq!(w.push(2, 1, (), now), 6);
        assert!(!w.has_unresolved());
    }

    #[test]
    fn without_idempotence_no_sequences_are_assigned() {
        let now = t0();
        let mut w = Window::new(false, 1);
        assert_eq!(w.push(0, 5, (), now), -1);
        assert_eq!(w.push(1, 5, (), now), -1);
    }

    #[test]
    fn expiry_takes_only_ready_batches() {
        let now = t0();
        let mut w = Window::new(false, 1);
        w.push(0, 1, 0, now);
        w.push(1, 1, 1, now);
        let i = w.next_sendable(now, false).unwrap();
        w.mark_sent(i, 9, sid(1), now);
        let gone = w.take_expired(|_| true);
        assert_eq!(gone.iter().map(|s| s.payload).collect::<Vec<_>>(), [1]);
        assert_eq!(w.len(), 1);
        assert_eq!(w.oldest_in_flight().map(|(s, _)| s), Some(sid(1)));
    }
}
