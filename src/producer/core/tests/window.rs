//! The in-flight window on its own: numbering, settling, draining.

use crate::producer::core::window::*;
use crate::producer::core::{ConnId, StreamId, Tick};
use std::time::Duration;

fn sid(gen: u64) -> StreamId {
    StreamId { conn: ConnId { link: 0, slot: 0, gen }, index: 0, gen: 0 }
}

const N: Option<(i64, i16)> = Some((1, 0));

fn send(w: &mut Window<u64>, now: Tick, corr: u32, stream: StreamId) -> Option<i32> {
    let i = w.next_sendable(now, stream, false)?;
    w.mark_sent(i, corr, stream, N, now).map(|s| s.2)
}

#[test]
fn sequences_are_given_at_first_send_and_sends_stop_at_max_in_flight() {
    let now = Tick::now();
    let mut w = Window::new(true, 2);
    w.push(1, 3, 1, now);
    w.push(2, 2, 2, now);
    w.push(3, 1, 3, now);
    assert_eq!(send(&mut w, now, 10, sid(1)), Some(0));
    assert_eq!(send(&mut w, now, 11, sid(1)), Some(3));
    assert_eq!(send(&mut w, now, 12, sid(1)), None, "window full");
    let done = w.ack(10).unwrap();
    assert_eq!((done.payload, done.seq), (1, Some(0)));
    assert_eq!(send(&mut w, now, 12, sid(1)), Some(5));
}

#[test]
fn a_refused_batch_is_resent_before_the_ones_behind_it_and_keeps_its_number() {
    let now = Tick::now();
    let mut w = Window::new(true, 5);
    for id in 0..3 {
        w.push(id, 1, id, now);
        send(&mut w, now, id as u32, sid(1));
    }
    assert!(w.is_first(0));
    assert!(w.refused(0, Duration::from_millis(100), now, Attempt::NotStored));
    assert!(!w.is_first(1));
    assert!(w.refused(1, Duration::ZERO, now, Attempt::Settled));
    assert!(w.refused(2, Duration::ZERO, now, Attempt::Settled));
    assert_eq!(w.next_sendable(now, sid(2), false), None, "batch 0's back-off first");
    let later = now + Duration::from_millis(150);
    let seqs: Vec<_> = (0..3).map(|c| send(&mut w, later, 10 + c, sid(2)).unwrap()).collect();
    assert_eq!(seqs, [0, 1, 2]);
    assert_eq!(w.slot(0).attempts, 2);
}

#[test]
fn maybe_persisted_accumulates_until_an_answer_after_the_dedup_lookup() {
    let now = Tick::now();
    let mut w = Window::new(true, 5);
    w.push(0, 1, 0, now);
    send(&mut w, now, 1, sid(1));
    w.refused(1, Duration::ZERO, now, Attempt::Appended);
    assert!(w.slot(0).maybe_persisted);
    send(&mut w, now, 2, sid(2));
    w.refused(2, Duration::ZERO, now, Attempt::NotStored);
    assert!(w.slot(0).maybe_persisted, "a refusal before the lookup settles nothing");
    send(&mut w, now, 3, sid(2));
    w.refused(3, Duration::ZERO, now, Attempt::Settled);
    assert!(!w.slot(0).maybe_persisted);
}

#[test]
fn an_attempt_whose_answer_never_came_is_settled_only_by_an_acknowledgement() {
    let now = Tick::now();
    let mut w = Window::new(true, 5);
    w.push(0, 1, 0, now);
    send(&mut w, now, 1, sid(1));
    assert_eq!(w.lost(|s| s == sid(1), Duration::ZERO, now), 1);
    assert!(w.slot(0).maybe_persisted && w.slot(0).unanswered);
    // The broker may have read attempt 1 and append it after answering attempt 2.
    send(&mut w, now, 2, sid(2));
    w.refused(2, Duration::ZERO, now, Attempt::Settled);
    assert!(w.slot(0).maybe_persisted, "attempt 1 may still land");
    assert!(!w.is_drained());
    send(&mut w, now, 3, sid(2));
    assert!(w.ack(3).is_some());
    assert!(w.is_drained());
}

#[test]
fn a_break_drains_up_to_the_last_unresolved_batch_then_renumbers_or_asks_for_an_epoch() {
    let now = Tick::now();
    let mut w = Window::new(true, 5);
    for id in 0..4 {
        w.push(id, 2, id, now);
        send(&mut w, now, id as u32, sid(1));
    }
    // 2 and 3 settled out of order, then 0 and 1 lost with the connection.
    w.refused(2, Duration::ZERO, now, Attempt::Settled);
    w.refused(3, Duration::ZERO, now, Attempt::Settled);
    w.lost(|s| s == sid(1), Duration::ZERO, now);
    w.sequence_broken();
    // Draining: 0 and 1 go again (1 is the last unresolved), 2 and 3 wait.
    assert_eq!(send(&mut w, now, 10, sid(2)), Some(0));
    assert_eq!(send(&mut w, now, 11, sid(2)), Some(2));
    assert_eq!(w.next_sendable(now, sid(2), false), None);
    assert_eq!(w.resync(N), Resync::Nothing, "still in flight");
    w.ack(10);
    w.refused(11, Duration::ZERO, now, Attempt::Settled);
    assert!(!w.is_drained(), "1's lost attempt may still land: only an ack settles it");
    assert_eq!(send(&mut w, now, 12, sid(2)), Some(2));
    w.ack(12);
    assert!(w.is_drained());
    assert_eq!(w.resync(N), Resync::NewEpoch { id: 1, epoch: 0 });
    w.restart((1, 1));
    let seqs: Vec<_> = (0..2).map(|c| send(&mut w, now, 20 + c, sid(2)).unwrap()).collect();
    assert_eq!(seqs, [0, 2], "everything left, renumbered from 0 in the new epoch");
}

#[test]
fn removing_batches_that_cannot_be_stored_is_repaired_by_renumbering() {
    let now = Tick::now();
    let mut w = Window::new(true, 5);
    for id in 0..3 {
        w.push(id, 1, id, now);
    }
    send(&mut w, now, 1, sid(1));
    w.ack(1);
    send(&mut w, now, 2, sid(1));
    send(&mut w, now, 3, sid(1));
    // Batch 1 (seq 1) refused for good before the lookup; batch 2 (seq 2) behind it.
    let failed = w.remove_failed(2).unwrap();
    assert!(!failed.may_be_stored());
    assert_eq!(w.broken(), Some(Break::Renumber));
    w.refused(3, Duration::ZERO, now, Attempt::Settled);
    assert_eq!(w.resync(N), Resync::Nothing);
    assert_eq!(w.broken(), None);
    assert_eq!(send(&mut w, now, 4, sid(1)), Some(1), "renumbered from after the last ack");
}

#[test]
fn nothing_numbered_after_a_batch_known_not_stored_can_be_stored() {
    let now = Tick::now();
    let mut w = Window::new(true, 5);
    for id in 0..3 {
        w.push(id, 1, id, now);
        send(&mut w, now, id as u32, sid(1));
    }
    // 0 refused before the lookup on its first attempt: not stored, so neither are 1
    // and 2 so far. But their attempts were read by the broker and never answered: once 0
    // is sent again and appended, they may land behind it. They stay unresolved.
    w.refused(0, Duration::ZERO, now, Attempt::NotStored);
    w.lost(|s| s == sid(1), Duration::ZERO, now);
    assert!(!w.slot(0).maybe_persisted);
    assert!(w.slot(1).maybe_persisted && w.slot(2).maybe_persisted);
    assert!(!w.is_drained());
    // A batch answered after the lookup behind one known not stored is not stored.
    let mut w = Window::new(true, 5);
    for id in 0..2 {
        w.push(id, 1, id, now);
        send(&mut w, now, id as u32, sid(1));
    }
    w.refused(1, Duration::ZERO, now, Attempt::Appended);
    w.refused(0, Duration::ZERO, now, Attempt::NotStored);
    assert!(w.iter().all(|s| !s.maybe_persisted));
    assert!(w.is_drained());
}

#[test]
fn without_idempotence_no_sequences_are_assigned() {
    let now = Tick::now();
    let mut w = Window::new(false, 1);
    w.push(0, 5, 0, now);
    let i = w.next_sendable(now, sid(1), true).unwrap();
    assert_eq!(w.mark_sent(i, 1, sid(1), None, now), None);
}

#[test]
fn a_partition_that_moved_waits_for_the_old_streams_answers() {
    let now = Tick::now();
    let mut w = Window::new(true, 5);
    w.push(0, 1, 0, now);
    w.push(1, 1, 1, now);
    send(&mut w, now, 1, sid(1));
    assert_eq!(w.next_sendable(now, sid(2), false), None);
    assert_eq!(w.next_sendable(now, sid(1), false), Some(1));
}

#[test]
fn expiry_takes_in_flight_batches_too_and_breaks_the_numbering() {
    let now = Tick::now();
    let mut w = Window::new(true, 5);
    w.push(0, 1, 0, now);
    w.push(1, 1, 1, now);
    send(&mut w, now, 9, sid(1));
    let gone = w.take(|_| true);
    assert_eq!(gone.len(), 2);
    assert!(gone[0].may_be_stored() && !gone[1].may_be_stored());
    assert_eq!(w.in_flight(), 0);
    assert_eq!(w.broken(), Some(Break::NewEpoch));
}
