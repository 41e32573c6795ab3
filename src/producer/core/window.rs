//! One partition's in-flight window: every sealed, unacknowledged batch with its
//! sequence number, attempts, state, and what is known about whether it is stored. Pure
//! bookkeeping (time comes in as a parameter); the core does the rest.
//!
//! Invariants:
//! - batches are kept in seal order; the ones in flight are always a prefix of the
//!   not-yet-acknowledged ones: a batch is sent only when every batch before it is in
//!   flight, so the broker sees sequences in order; in-flight batches all travel on one
//!   stream (a partition that moves waits until its in-flight batches are answered);
//! - at most `max_in_flight` batches are in flight and, with idempotence, at most
//!   `max_in_flight` numbered batches are unacknowledged (in flight or waiting to be resent):
//!   the broker remembers that many per partition, so the oldest unacknowledged batch is
//!   always still recognised as a duplicate when it is resent;
//! - a batch gets its sequence number when it is first sent, in order, in the window's
//!   current *numbering* (a producer id and epoch); a batch removed without being
//!   acknowledged (failed, expired, purged, split) after it was numbered *breaks* the
//!   numbering: batches after it would arrive out of order;
//! - `maybe_persisted` accumulates over attempts: an attempt that went out and got no
//!   answer (or an "appended, not confirmed" answer) sets it; a refusal given before the
//!   broker's dedup lookup leaves it as it was; only an answer given after the lookup
//!   (acknowledged, duplicate, out of order, unknown producer) settles it. An attempt whose
//!   answer never came (its stream broke or was reset) may still be processed later, after
//!   any answer to a later attempt: such a batch stays "may be stored" until it is
//!   acknowledged (`unanswered`). A batch that may be stored is never renumbered, split or
//!   reported "not persisted";
//! - while the numbering is broken (or the core holds it, e.g. for an epoch bump), no new
//!   batch is numbered; the batches up to the last one whose fate is unknown are resent, in
//!   order, until the broker has settled each of them. Then the window is *drained*: a
//!   break where nothing that may be stored was lost is repaired by renumbering from the
//!   sequence after the last acknowledged batch; otherwise the partition needs a new epoch.

use std::collections::VecDeque;
use std::time::Duration;

use super::{StreamId, Tick};
use crate::producer::clock::later;
use crate::protocol::batch::increment_sequence;

/// A batch's place in the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotState {
    /// Waiting to be (re)sent, not before `not_before`.
    Ready { not_before: Option<Tick> },
    /// Handed to `stream` at `handed_at`; `written_at` once the shell reports it written.
    InFlight { correlation_id: u32, stream: StreamId, handed_at: Tick, written_at: Option<Tick> },
}

/// How an attempt ended, for `maybe_persisted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// Refused before the dedup lookup: this attempt stored nothing; earlier ones may have.
    NotStored,
    /// Settled by an answer given after the dedup lookup: not stored, by any attempt.
    Settled,
    /// Appended but not confirmed (e.g. REQUEST_TIMED_OUT with an offset).
    Appended,
}

/// One batch in the window.
#[derive(Debug)]
pub(crate) struct Slot<T> {
    /// Producer-wide batch id, increasing in seal order (the halves of a split batch share it).
    pub id: u64,
    /// Base sequence in the window's numbering; `None` until first sent.
    pub seq: Option<i32>,
    /// Records in the batch.
    pub records: u32,
    /// The batch bytes, deliveries and anything else the core keeps.
    pub payload: T,
    /// Send attempts so far.
    pub attempts: u32,
    /// Where it stands.
    pub state: SlotState,
    /// When it was sealed.
    pub sealed_at: Tick,
    /// Some attempt may have stored it (see the module docs).
    pub maybe_persisted: bool,
    /// Some attempt went out and its answer never came (its stream broke or was reset):
    /// the broker may have read it and may still append it, after any later answer. Only
    /// an acknowledgement settles such a batch.
    pub unanswered: bool,
}

impl<T> Slot<T> {
    /// Whether it may be in the log: an earlier attempt may have stored it, or it is in
    /// flight now.
    pub(crate) fn may_be_stored(&self) -> bool {
        self.maybe_persisted || matches!(self.state, SlotState::InFlight { .. })
    }
}

/// Why a window's numbering is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Break {
    /// Batches were removed, none of which can be stored: renumber the rest from the
    /// sequence after the last acknowledged batch.
    Renumber,
    /// The broker's sequence state is not what the window believes (a batch that may be
    /// stored was given up, or the broker answered out of order): a new epoch is needed.
    NewEpoch,
}

/// What a drained window needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resync {
    /// Nothing: it can number batches (or it is still draining).
    Nothing,
    /// It needs a new epoch (or producer id): numbered under `(id, epoch)`.
    NewEpoch { id: i64, epoch: i16 },
}

/// The window of one partition.
#[derive(Debug)]
pub(crate) struct Window<T> {
    slots: VecDeque<Slot<T>>,
    idempotent: bool,
    /// `max_in_flight` as configured, and as in force (the broker may remember fewer).
    configured_in_flight: usize,
    max_in_flight: usize,
    in_flight: usize,
    /// Producer id and epoch the sequence numbers belong to.
    numbering: Option<(i64, i16)>,
    next_seq: i32,
    /// The sequence after the last acknowledged batch (what the broker expects next).
    acked_next: i32,
    broken: Option<Break>,
    /// The lowest sequence known not to be stored: no batch numbered after it can be
    /// stored either (the broker appends sequences contiguously), until the batch holding
    /// it is sent again.
    unstored_from: Option<i32>,
    /// Sequences of batches that left the window and are (or may be) stored, numbered after
    /// the oldest numbered batch still in it: they occupy the broker's dedup memory too.
    stored_ahead: Vec<i32>,
}

/// Whether sequence `a` comes at or after `b` (sequences wrap at `i32::MAX`).
fn seq_ge(a: i32, b: i32) -> bool {
    (i64::from(a) - i64::from(b)).rem_euclid(1 << 31) < (1 << 30)
}

impl<T> Window<T> {
    pub(crate) fn new(idempotent: bool, max_in_flight: usize) -> Self {
        Window {
            slots: VecDeque::new(),
            idempotent,
            configured_in_flight: max_in_flight,
            max_in_flight,
            in_flight: 0,
            numbering: None,
            next_seq: 0,
            acked_next: 0,
            broken: None,
            unstored_from: None,
            stored_ahead: Vec::new(),
        }
    }

    /// The broker remembers `n` batches per partition: with idempotence no more may be
    /// unacknowledged (at most the configured `max_in_flight` either way).
    pub(crate) fn cap_in_flight(&mut self, n: usize) {
        if self.idempotent {
            self.max_in_flight = self.configured_in_flight.min(n.max(1));
        }
    }

    /// Batches not yet acknowledged or failed.
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

    /// The producer id and epoch of the current numbering.
    pub(crate) fn numbering(&self) -> Option<(i64, i16)> {
        self.numbering
    }

    /// Whether the numbering is broken.
    #[cfg(test)]
    pub(crate) fn broken(&self) -> Option<Break> {
        self.broken
    }

    /// Adds a sealed batch (numbered when first sent).
    pub(crate) fn push(&mut self, id: u64, records: u32, payload: T, now: Tick) {
        self.slots.push_back(Slot {
            id,
            seq: None,
            records,
            payload,
            attempts: 0,
            state: SlotState::Ready { not_before: None },
            sealed_at: now,
            maybe_persisted: false,
            unanswered: false,
        });
    }

    fn last_unresolved(&self) -> Option<usize> {
        self.slots.iter().rposition(|s| s.maybe_persisted)
    }

    /// The index of the next batch to send on `stream`, if the window allows one now.
    /// `hold`: no batch may get a new number (no producer id yet, an epoch bump, a stale
    /// numbering); batches already numbered up to the last unresolved one still go.
    pub(crate) fn next_sendable(&self, now: Tick, stream: StreamId, hold: bool) -> Option<usize> {
        if self.in_flight >= self.max_in_flight {
            return None;
        }
        let i = self.slots.iter().position(|s| matches!(s.state, SlotState::Ready { .. }))?;
        let slot = &self.slots[i];
        // Everything before the first ready batch is in flight (ordering invariant), and on
        // one stream: a partition that moved waits for the old stream's answers.
        if i > 0 && !matches!(self.slots[0].state, SlotState::InFlight { stream: s, .. } if s == stream) {
            return None;
        }
        let SlotState::Ready { not_before } = slot.state else { unreachable!("found ready") };
        if not_before.is_some_and(|t| t > now) {
            return None;
        }
        if !self.idempotent {
            return Some(i);
        }
        let draining = hold || self.broken.is_some();
        match slot.seq {
            Some(_) if !draining => Some(i),
            // Draining: only what must be settled, in order.
            Some(_) => self.last_unresolved().is_some_and(|last| i <= last).then_some(i),
            None if draining => None,
            // The broker remembers `max_in_flight` batches per partition: the oldest one not
            // acknowledged must stay among them, or its retry is no longer recognised.
            None if self.slots.iter().filter(|s| s.seq.is_some()).count() + self.stored_ahead.len()
                >= self.max_in_flight =>
            {
                None
            }
            None => Some(i),
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

    /// Records that the batch at `i` was handed to `stream` with `correlation_id` at
    /// `now`, numbering it first if needed (in `numbering`, the producer's current id and
    /// epoch). Returns the (producer id, epoch, base sequence) to stamp it with, if
    /// idempotent.
    pub(crate) fn mark_sent(
        &mut self,
        i: usize,
        correlation_id: u32,
        stream: StreamId,
        numbering: Option<(i64, i16)>,
        now: Tick,
    ) -> Option<(i64, i16, i32)> {
        let stamp = if self.idempotent {
            if self.slots[i].seq.is_none() {
                let n = numbering.expect("an idempotent batch is numbered with a producer id");
                if self.numbering != Some(n) {
                    debug_assert!(self.slots.iter().all(|s| s.seq.is_none()), "renumbering a numbered window");
                    self.numbering = Some(n);
                    self.next_seq = 0;
                    self.acked_next = 0;
                }
                self.slots[i].seq = Some(self.next_seq);
                self.next_seq = increment_sequence(self.next_seq, self.slots[i].records as i32);
            }
            let (id, epoch) = self.numbering.expect("numbered");
            let seq = self.slots[i].seq.expect("numbered");
            if self.unstored_from == Some(seq) {
                // This attempt may fill the gap: later batches may be stored from now on.
                self.unstored_from = None;
            }
            Some((id, epoch, seq))
        } else {
            None
        };
        let s = &mut self.slots[i];
        debug_assert!(matches!(s.state, SlotState::Ready { .. }));
        s.state = SlotState::InFlight { correlation_id, stream, handed_at: now, written_at: None };
        s.attempts += 1;
        self.in_flight += 1;
        stamp
    }

    fn position(&self, correlation_id: u32) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| matches!(s.state, SlotState::InFlight { correlation_id: c, .. } if c == correlation_id))
    }

    /// Index of the in-flight batch answered by `correlation_id`.
    pub(crate) fn index_of(&self, correlation_id: u32) -> Option<usize> {
        self.position(correlation_id)
    }

    /// The shell wrote the request `correlation_id` at `now`: its request timer starts.
    pub(crate) fn written(&mut self, correlation_id: u32, now: Tick) -> Option<&mut Slot<T>> {
        let i = self.position(correlation_id)?;
        let s = &mut self.slots[i];
        if let SlotState::InFlight { written_at, .. } = &mut s.state {
            written_at.get_or_insert(now);
        }
        Some(s)
    }

    /// The in-flight batch `correlation_id` is acknowledged: removes and returns it.
    pub(crate) fn ack(&mut self, correlation_id: u32) -> Option<Slot<T>> {
        let i = self.position(correlation_id)?;
        self.in_flight -= 1;
        let s = self.slots.remove(i).expect("index in range");
        if let Some(seq) = s.seq {
            // Acks may come out of order (a batch refused after it was appended is resent
            // behind the ones that followed it): keep the furthest.
            let end = increment_sequence(seq, s.records as i32);
            if seq_ge(end, self.acked_next) {
                self.acked_next = end;
            }
            self.note_gone(seq, true);
        }
        Some(s)
    }

    /// A negative answer for the in-flight batch `correlation_id`: it goes back to ready
    /// (resent after `backoff`), with what the attempt says about its persistence.
    pub(crate) fn refused(&mut self, correlation_id: u32, backoff: Duration, now: Tick, attempt: Attempt) -> bool {
        let Some(i) = self.position(correlation_id) else { return false };
        self.in_flight -= 1;
        let s = &mut self.slots[i];
        s.state = SlotState::Ready { not_before: Some(later(now, backoff)) };
        match attempt {
            Attempt::NotStored => {}
            // Not stored so far; an attempt still on its way may be appended yet.
            Attempt::Settled => s.maybe_persisted = s.unanswered,
            Attempt::Appended => s.maybe_persisted = true,
        }
        if let (false, Some(seq)) = (s.maybe_persisted, s.seq) {
            self.mark_unstored(seq);
        }
        true
    }

    /// Sequence `seq` is known not to be stored: neither is anything numbered after it.
    fn mark_unstored(&mut self, seq: i32) {
        if !self.unstored_from.is_some_and(|u| seq_ge(seq, u)) {
            self.unstored_from = Some(seq);
        }
        let u = self.unstored_from.expect("set above");
        for s in self.slots.iter_mut() {
            if s.seq.is_some_and(|q| seq_ge(q, u)) && matches!(s.state, SlotState::Ready { .. }) && !s.unanswered {
                s.maybe_persisted = false;
            }
        }
    }

    /// The broker's sequence state is not what this window believes (an out-of-order or
    /// unknown-producer answer for its first batch).
    pub(crate) fn sequence_broken(&mut self) {
        self.broken = Some(Break::NewEpoch);
    }

    /// Notes that `s` left the window without an acknowledgement.
    fn note_removed(&mut self, s: &Slot<T>) {
        let Some(seq) = s.seq.filter(|_| self.idempotent) else { return };
        self.note_gone(seq, s.may_be_stored());
        let b = if s.may_be_stored() { Break::NewEpoch } else { Break::Renumber };
        self.broken = self.broken.max(Some(b));
        if b == Break::Renumber {
            self.mark_unstored(seq);
        }
    }

    /// Removes the in-flight batch `correlation_id` to fail it (a final refusal).
    #[cfg(test)]
    pub(crate) fn remove_failed(&mut self, correlation_id: u32) -> Option<Slot<T>> {
        let i = self.position(correlation_id)?;
        self.in_flight -= 1;
        let mut s = self.slots.remove(i).expect("index in range");
        s.state = SlotState::Ready { not_before: None };
        self.note_removed(&s);
        Some(s)
    }

    /// Removes the ready batch at `i` to fail it.
    pub(crate) fn remove_at(&mut self, i: usize) -> Slot<T> {
        let s = self.slots.remove(i).expect("index in range");
        debug_assert!(matches!(s.state, SlotState::Ready { .. }));
        self.note_removed(&s);
        s
    }

    /// Replaces the ready batch at `i` by `parts` (its records split), which are numbered
    /// when sent.
    pub(crate) fn split(&mut self, i: usize, parts: Vec<(u32, T)>, now: Tick) {
        let old = self.slots.remove(i).expect("index in range");
        debug_assert!(matches!(old.state, SlotState::Ready { .. }) && !old.maybe_persisted);
        self.note_removed(&old);
        for (k, (records, payload)) in parts.into_iter().enumerate() {
            let slot = Slot {
                id: old.id,
                seq: None,
                records,
                payload,
                attempts: old.attempts,
                state: SlotState::Ready { not_before: None },
                sealed_at: now,
                maybe_persisted: false,
                unanswered: false,
            };
            self.slots.insert(i + k, slot);
        }
        // Numbered batches behind the split one keep their numbers until the window is
        // drained, then everything is renumbered (the break above).
    }

    /// The streams for which `lost` says yes are gone: their in-flight batches go back to
    /// ready with their fate unknown. Returns how many.
    pub(crate) fn lost(&mut self, lost: impl Fn(StreamId) -> bool, backoff: Duration, now: Tick) -> usize {
        let mut n = 0;
        for i in 0..self.slots.len() {
            if let SlotState::InFlight { stream, .. } = self.slots[i].state {
                if lost(stream) {
                    // Even behind a sequence known not to be stored: that one may be sent
                    // again and appended, and this attempt after it.
                    let s = &mut self.slots[i];
                    s.state = SlotState::Ready { not_before: Some(later(now, backoff)) };
                    s.maybe_persisted = true;
                    s.unanswered = true;
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
        self.take(|s| matches!(s.state, SlotState::InFlight { stream, .. } if lost(stream)))
    }

    /// Removes every batch, in flight or not, for which `expired` says yes.
    pub(crate) fn take(&mut self, mut expired: impl FnMut(&Slot<T>) -> bool) -> Vec<Slot<T>> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.slots.len() {
            if expired(&self.slots[i]) {
                let s = self.slots.remove(i).expect("index in range");
                if matches!(s.state, SlotState::InFlight { .. }) {
                    self.in_flight -= 1;
                }
                self.note_removed(&s);
                out.push(s);
            } else {
                i += 1;
            }
        }
        out
    }

    /// Removes every batch (close deadline, fatal error).
    pub(crate) fn drain_all(&mut self) -> Vec<Slot<T>> {
        self.in_flight = 0;
        self.slots.drain(..).collect()
    }

    /// Nothing in flight and nothing whose fate is unknown.
    pub(crate) fn is_drained(&self) -> bool {
        self.in_flight == 0 && !self.slots.iter().any(|s| s.maybe_persisted)
    }

    /// Repairs what a drained window can repair by itself and says what else it needs,
    /// given the producer's `current` id and epoch. A numbering older than `current` is
    /// restarted at 0 in `current` when drained (per-partition epochs).
    pub(crate) fn resync(&mut self, current: Option<(i64, i16)>) -> Resync {
        if !self.idempotent || !self.is_drained() {
            return Resync::Nothing;
        }
        match (self.broken, self.numbering) {
            (Some(Break::Renumber), _) => {
                self.unnumber();
                self.next_seq = self.acked_next;
                self.broken = None;
                Resync::Nothing
            }
            (Some(Break::NewEpoch), Some(n)) if Some(n) == current => Resync::NewEpoch { id: n.0, epoch: n.1 },
            (Some(Break::NewEpoch), _) | (None, Some(_)) if current.is_some() && self.numbering != current => {
                self.restart(current.expect("checked"));
                Resync::Nothing
            }
            _ => Resync::Nothing,
        }
    }

    /// A new epoch (or producer id): every batch is numbered again from 0 in it. Only a
    /// drained window may restart.
    pub(crate) fn restart(&mut self, numbering: (i64, i16)) {
        debug_assert!(self.is_drained());
        self.unnumber();
        self.numbering = Some(numbering);
        self.next_seq = 0;
        self.acked_next = 0;
        self.broken = None;
    }

    fn unnumber(&mut self) {
        for s in self.slots.iter_mut() {
            s.seq = None;
        }
        self.unstored_from = None;
        self.stored_ahead.clear();
    }

    /// Batch `seq` left the window (stored, or maybe): keeps `stored_ahead` to the ones
    /// after the oldest numbered batch still here.
    fn note_gone(&mut self, seq: i32, stored: bool) {
        if stored {
            self.stored_ahead.push(seq);
        }
        match self.slots.iter().find_map(|s| s.seq) {
            Some(oldest) => self.stored_ahead.retain(|q| *q != oldest && seq_ge(*q, oldest)),
            None => self.stored_ahead.clear(),
        }
    }

    /// The in-flight batches: (correlation id, stream, when its request timer started).
    /// The timer starts when the shell reports the request written; until then, when it
    /// was handed to the shell (a write that never completes, on a stream blocked by flow
    /// control, is a stuck stream too).
    pub(crate) fn in_flight_batches(&self) -> impl Iterator<Item = (u32, StreamId, Tick)> + '_ {
        self.slots.iter().filter_map(|s| match s.state {
            SlotState::InFlight { correlation_id, stream, handed_at, written_at } => {
                Some((correlation_id, stream, written_at.unwrap_or(handed_at)))
            }
            _ => None,
        })
    }

    /// When the first batch waiting for a back-off may go (for the timer).
    pub(crate) fn next_ready_time(&self) -> Option<Tick> {
        match self.slots.iter().find(|s| matches!(s.state, SlotState::Ready { .. }))?.state {
            SlotState::Ready { not_before } => not_before,
            SlotState::InFlight { .. } => None,
        }
    }

    /// Whether the answer for `correlation_id` belongs to the first pending batch (an
    /// out-of-order answer for it is a real sequence problem; for a later batch it only
    /// echoes an earlier failure).
    pub(crate) fn is_first(&self, correlation_id: u32) -> bool {
        self.position(correlation_id) == Some(0)
    }

    /// The slots, oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Slot<T>> {
        self.slots.iter()
    }
}
