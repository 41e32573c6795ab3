//! The findings of issue 10, each as a script against the core.

use std::time::Duration;

use super::*;
use crate::protocol::{ProducerStamp, RecordBatch};

fn stamp(r: &Request) -> ProducerStamp {
    RecordBatch::from_bytes(r.batch.clone()).unwrap().header().producer
}

/// The request timeout plus the margin the core gives the broker's own timeout.
fn request_deadline(cfg: &ProducerConfig) -> Duration {
    cfg.request_timeout + crate::producer::core::timeouts::margin(cfg.request_timeout)
}

/// The only stream with a request waiting.
fn only_stream(s: &Sim) -> StreamId {
    let b = s.busy_streams();
    assert_eq!(b.len(), 1, "{b:?}");
    b[0]
}

// --- 1. "maybe persisted" accumulates -------------------------------------------------

#[test]
fn a_stored_batch_refused_on_resend_before_the_dedup_check_is_reported_possibly_persisted() {
    for code in [ErrorCode::AuthorizationFailed, ErrorCode::ResourceLimit] {
        let cfg = ProducerConfig { retries: 1, ..config() };
        let mut s = Sim::ready(cfg, "t", 1);
        let id = s.send("t", 0, 1)[0];
        s.step();
        let st = only_stream(&s);
        s.process(st, Answer::Lost); // stored; the answer never comes
        s.lose(st.conn);
        s.advance(Duration::from_millis(200));
        s.accept_connects();
        s.step();
        // The resend is refused before the broker looks at sequences.
        let st = only_stream(&s);
        s.process(st, Answer::Refuse(code));
        s.advance(Duration::from_millis(500));
        let r = s.outcome(id).unwrap_or_else(|| panic!("{code}: the batch failed for good"));
        assert_eq!(status(&r), Some((ErrorKind::Broker(code), Persistence::PossiblyPersisted)), "{code}");
        s.check();
    }
}

#[test]
fn a_batch_that_may_be_stored_is_not_renumbered_into_a_new_epoch() {
    let mut s = Sim::ready(config(), "t", 2);
    let a = s.send("t", 0, 1);
    s.step();
    let st0 = only_stream(&s);
    s.process(st0, Answer::Lost); // A stored, answer lost
    s.lose(st0.conn);
    s.advance(Duration::from_millis(60));
    s.accept_connects();
    // Partition 1's first batch is answered OUT_OF_ORDER_SEQUENCE: an epoch bump is needed.
    let b = s.send("t", 1, 1);
    s.step();
    let p1 = s.written.last().unwrap().0;
    s.process(p1, Answer::Refuse(ErrorCode::OutOfOrderSequence));
    // A's resend is refused before the dedup check, then goes through.
    s.advance(Duration::from_millis(200));
    for st in s.busy_streams() {
        if s.streams[&st].front().unwrap().partition == 0 {
            s.process(st, Answer::Refuse(ErrorCode::ResourceLimit));
        }
    }
    s.settle(400);
    s.check();
    for id in a.iter().chain(&b) {
        assert!(s.outcome(*id).unwrap().is_ok(), "record {id}: {:?}", s.outcome(*id));
    }
}

// --- 3. control requests time out; metadata waiters are bounded -------------------------

#[test]
fn an_unanswered_init_producer_id_is_asked_again_after_the_request_timeout() {
    let cfg = config();
    let deadline = request_deadline(&cfg);
    let mut s = Sim::new(cfg);
    s.topics.insert("t".into(), 1);
    s.step();
    s.accept_connects();
    s.step();
    let pid_calls = |s: &Sim| s.calls.iter().filter(|c| matches!(c.2, Payload::InitProducerId(_))).count();
    assert_eq!(pid_calls(&s), 1);
    s.calls.retain(|c| !matches!(c.2, Payload::InitProducerId(_))); // never answered
    s.advance(deadline + Duration::from_millis(1));
    s.advance(Duration::from_secs(1));
    assert_eq!(pid_calls(&s), 1, "asked again");
    let (tx, _rx) = tokio::sync::oneshot::channel();
    s.core.handle_metadata_wanted(s.now, "t".into(), Some(tx));
    s.settle_control();
    let id = s.send("t", 0, 1)[0];
    s.settle(50);
    assert!(s.outcome(id).unwrap().is_ok());
}

#[test]
fn a_metadata_request_that_failed_retriably_is_asked_again() {
    let mut s = Sim::new(config());
    s.topics.insert("t".into(), 1);
    s.step();
    s.accept_connects();
    s.settle_control();
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    s.core.handle_metadata_wanted(s.now, "t".into(), Some(tx));
    s.step();
    let (tag, _, req) = s.calls.pop_front().expect("a metadata request");
    assert!(matches!(req, Payload::Metadata(_)));
    s.core.handle_control(s.now, tag, Err(broker_error(ErrorCode::ResourceLimit)));
    s.collect();
    s.advance(Duration::from_secs(2));
    assert!(s.calls.iter().any(|c| matches!(c.2, Payload::Metadata(_))), "asked again: {:?}", s.calls);
    s.settle_control();
    assert!(rx.try_recv().unwrap().is_ok());
}

#[test]
fn a_metadata_request_without_answer_times_out_and_is_asked_again() {
    let cfg = config();
    let deadline = request_deadline(&cfg);
    let mut s = Sim::new(cfg);
    s.topics.insert("t".into(), 1);
    s.step();
    s.accept_connects();
    s.settle_control();
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    s.core.handle_metadata_wanted(s.now, "t".into(), Some(tx));
    s.step();
    assert!(s.calls.pop_front().is_some(), "never answered");
    s.advance(deadline + Duration::from_secs(2));
    s.advance(Duration::from_secs(1));
    s.settle_control();
    assert!(rx.try_recv().unwrap().is_ok());
}

#[test]
fn try_send_to_unknown_topics_keeps_what_the_core_holds_bounded() {
    let mut s = Sim::new(config());
    s.step();
    s.accept_connects();
    s.settle_control();
    for i in 0..20_000 {
        s.core.handle_metadata_wanted(s.now, format!("nope-{i}").into(), None);
        // A send() that gave up waiting (max_block) leaves a closed reply behind.
        let (tx, rx) = tokio::sync::oneshot::channel();
        drop(rx);
        s.core.handle_metadata_wanted(s.now, "gone".into(), Some(tx));
    }
    s.step();
    let held: usize = s.core.topics.waiters.values().map(Vec::len).sum();
    assert!(held <= 64, "{held} replies held for handles that stopped waiting");
    assert!(s.core.topics.waiters.len() <= crate::producer::core::metadata::MAX_PENDING_TOPICS + 1);
    assert!(s.calls.len() <= 4, "{} metadata requests in flight", s.calls.len());
}

// --- 4. request timeouts: the broker's answer first, one stream at a time ----------------

#[test]
fn the_broker_gets_to_answer_request_timed_out_before_the_producer_gives_up() {
    let cfg = config();
    let timeout = cfg.request_timeout;
    let mut s = Sim::ready(cfg, "t", 1);
    s.auto_written = false;
    let id = s.send("t", 0, 1)[0];
    s.step();
    let st = only_stream(&s);
    // The request sits in the stream's send buffer for a while before it is written.
    s.advance(Duration::from_secs(5));
    s.core.handle_written(s.now, st, 1);
    s.auto_written = true;
    // The broker times out the fsync wait after `timeout` and says so.
    s.advance(timeout - Duration::from_millis(1));
    s.advance(Duration::from_millis(1));
    assert!(s.closes.is_empty() && s.resets.is_empty(), "the producer gave up first");
    s.process(st, Answer::TimedOutAfterAppend);
    s.settle(50);
    assert!(s.outcome(id).unwrap().is_ok());
    s.check();
    assert!(s.closes.is_empty() && s.resets.is_empty());
    assert_eq!(s.broker.duplicates, 1, "the retry was answered from the dedup state");
}

#[test]
fn an_unanswered_request_resets_its_stream_and_leaves_other_partitions_alone() {
    let cfg = config();
    let deadline = request_deadline(&cfg);
    let mut s = Sim::ready(cfg, "t", 2);
    let a = s.send("t", 0, 1)[0];
    let b = s.send("t", 1, 1)[0];
    s.step();
    let streams = s.busy_streams();
    assert_eq!(streams.len(), 2, "two partitions, two streams");
    let (s0, s1) = (streams[0], streams[1]);
    s.advance(deadline + Duration::from_millis(10));
    assert_eq!(s.resets.len() + s.closes.len(), 2, "both requests timed out: {:?} {:?}", s.resets, s.closes);
    assert!(s.closes.is_empty(), "no connection closed");
    // A stuck stream on partition 0 only.
    let mut s = Sim::ready(config(), "t", 2);
    let a2 = s.send("t", 0, 1)[0];
    s.step();
    s.advance(deadline / 2);
    let b2 = s.send("t", 1, 1)[0];
    s.step();
    s.advance(deadline / 2 + Duration::from_millis(10));
    assert_eq!(s.resets.len(), 1, "partition 0's stream reset");
    assert!(s.closes.is_empty());
    let reset = s.resets[0];
    let p1 = s.busy_streams().into_iter().find(|x| x.index != reset.index).expect("partition 1's request waits");
    s.process(p1, Answer::Normal);
    assert!(s.outcome(b2).unwrap().is_ok(), "partition 1's in-flight batch was not disturbed");
    s.settle(50);
    assert!(s.outcome(a2).unwrap().is_ok());
    s.check();
    let _ = (a, b, s0, s1);
}

// --- 5. epoch bumps drain per partition ----------------------------------------------------

/// Partition 0 holds a batch refused before the dedup check (A) ahead of one whose fate
/// is unknown (B); partition 1 needs an epoch bump.
fn refused_ahead_of_unresolved(s: &mut Sim) -> Vec<u64> {
    let mut ids = s.send("t", 0, 1);
    s.step();
    ids.extend(s.send("t", 0, 1));
    s.step();
    let st = only_stream(s);
    s.process(st, Answer::Refuse(ErrorCode::ResourceLimit)); // A: not stored
    s.process(st, Answer::Lost); // B: out of order behind A, the answer lost
    s.lose(st.conn);
    s.advance(Duration::from_millis(60));
    s.accept_connects();
    ids.extend(s.send("t", 1, 1));
    s.step();
    let p1 = s.busy_streams().into_iter().find(|x| s.streams[x].front().unwrap().partition == 1).unwrap();
    s.process(p1, Answer::Refuse(ErrorCode::OutOfOrderSequence));
    ids
}

#[test]
fn a_refused_batch_ahead_of_an_unresolved_one_does_not_stall_the_epoch_bump() {
    let mut s = Sim::ready(config(), "t", 2);
    let ids = refused_ahead_of_unresolved(&mut s);
    // Well within the 120 s delivery timeout, everything is through.
    s.settle(300);
    for id in ids {
        assert!(s.outcome(id).unwrap().is_ok(), "record {id}: {:?}", s.outcome(id));
    }
    assert_eq!(s.core.metrics.epoch_bumps.load(std::sync::atomic::Ordering::Relaxed), 1);
    s.check();
}

#[test]
fn with_per_partition_epochs_a_bump_does_not_wait_for_other_partitions() {
    let mut s = Sim::with_rule(config(), EpochRule::DedupFirst);
    s.per_partition_epochs = true;
    s.topics.insert("t".into(), 2);
    s.start("t");
    let a = s.send("t", 0, 1)[0];
    s.step();
    let p0 = only_stream(&s); // partition 0's batch stays unanswered for now
    let b = s.send("t", 1, 1)[0];
    s.step();
    let p1 = s.busy_streams().into_iter().find(|x| *x != p0).unwrap();
    s.process(p1, Answer::Refuse(ErrorCode::OutOfOrderSequence));
    s.settle_control();
    s.step();
    // Partition 1 restarted in the new epoch while partition 0's batch is still out.
    let (_, again) = s.written.iter().rev().find(|(_, r)| r.partition == 1).unwrap().clone();
    assert_eq!((stamp(&again).producer_epoch, stamp(&again).base_sequence), (1, 0), "partition 1 resent in epoch 1");
    assert_eq!(s.streams[&p0].len(), 1, "partition 0's old-epoch batch is still in flight");
    s.settle(100);
    assert!(s.outcome(a).unwrap().is_ok() && s.outcome(b).unwrap().is_ok());
    s.check();
}

// --- 7. the broker's frame limit ------------------------------------------------------------

#[test]
fn batches_are_clamped_to_the_frame_limit_the_broker_announced() {
    let cfg = ProducerConfig { batch_size: 64 * 1024, ..config() };
    let mut s = Sim::new(cfg);
    s.max_frame = 2048;
    s.topics.insert("t".into(), 1);
    s.start("t");
    let ids = s.send_sized("t", 0, 100, 100);
    s.settle(100);
    for (_, r) in &s.written {
        let frame_len = r.batch.len() + 64;
        assert!(frame_len <= 2048, "a frame of about {frame_len} bytes");
    }
    assert!(ids.iter().all(|id| s.outcome(*id).unwrap().is_ok()));
    s.check();
}

#[test]
fn a_batch_refused_as_too_large_is_split_and_resent() {
    for code in [ErrorCode::BatchTooLarge, ErrorCode::FrameTooLarge] {
        let cfg = ProducerConfig { batch_size: 64 * 1024, ..config() };
        let mut s = Sim::ready(cfg, "t", 1);
        let ids = s.send_sized("t", 0, 40, 100);
        s.step();
        let st = only_stream(&s);
        s.process(st, Answer::Refuse(code));
        s.settle(100);
        assert!(s.written.len() >= 3, "{code}: the batch went out again in parts");
        for id in &ids {
            assert!(s.outcome(*id).unwrap().is_ok(), "{code}: record {id}: {:?}", s.outcome(*id));
        }
        s.check();
    }
    // One record that is too large on its own fails as such.
    let mut s = Sim::ready(config(), "t", 1);
    let id = s.send_sized("t", 0, 1, 500)[0];
    s.step();
    let st = only_stream(&s);
    s.process(st, Answer::Refuse(ErrorCode::BatchTooLarge));
    s.step();
    let r = s.outcome(id).expect("failed");
    assert_eq!(status(&r), Some((ErrorKind::RecordTooLarge, Persistence::NotPersisted)));
}

// --- 8. no partial batches sealed into a full window ------------------------------------

#[test]
fn linger_does_not_seal_a_partial_batch_into_a_full_window() {
    let cfg = ProducerConfig { max_in_flight: 1, linger: Duration::from_millis(5), ..config() };
    let mut s = Sim::ready(cfg, "t", 1);
    s.send("t", 0, 1);
    s.step(); // the linger clock starts
    s.advance(Duration::from_millis(10));
    assert_eq!(s.written.len(), 1);
    for _ in 0..5 {
        s.send("t", 0, 1);
        s.advance(Duration::from_millis(10));
    }
    let part = &s.core.topics.list[0].parts[0];
    assert_eq!(part.window.len(), 1, "only the in-flight batch: the rest waits in the queue");
    s.settle(100);
    assert_eq!(s.written.len(), 2, "the five records went out as one batch");
    s.check();
}

// --- 9. every partition to its own leader --------------------------------------------------

#[test]
fn each_partition_goes_to_its_leader_and_moves_when_the_metadata_says_so() {
    let cfg = ProducerConfig {
        bootstrap: vec!["b0:1".into(), "b1:1".into()],
        metadata_max_age: Duration::from_secs(10),
        ..config()
    };
    let mut s = Sim::new(cfg);
    s.topics.insert("t".into(), 2);
    s.leaders.insert(("t".into(), 1), 1);
    s.start("t");
    s.send("t", 0, 1);
    s.send("t", 1, 1);
    s.settle(50);
    let link_of = |s: &Sim, p: u32| -> Vec<usize> {
        s.written.iter().filter(|(_, r)| r.partition == p).map(|(st, _)| st.conn.link).collect()
    };
    assert_eq!(link_of(&s, 0), [0]);
    assert_eq!(link_of(&s, 1), [1], "partition 1 to its own leader");
    // Partition 1 moves to broker 0.
    s.leaders.insert(("t".into(), 1), 0);
    s.advance(Duration::from_secs(11));
    s.settle_control();
    s.send("t", 1, 1);
    s.settle(50);
    assert_eq!(link_of(&s, 1), [1, 0], "after the refresh partition 1 goes to broker 0");
    s.check();
}

#[test]
fn not_leader_naming_the_new_leader_moves_the_partition_at_once_and_the_retry_lands_once() {
    let cfg = ProducerConfig {
        bootstrap: vec!["b0:1".into(), "b1:1".into()],
        metadata_max_age: Duration::from_secs(3600),
        ..config()
    };
    let mut s = Sim::new(cfg);
    s.topics.insert("t".into(), 1);
    s.start("t");
    let ids = s.send("t", 0, 3);
    s.step();
    let link_of = |s: &Sim| -> Vec<usize> { s.written.iter().map(|(st, _)| st.conn.link).collect() };
    // Broker 0 lost the leadership to broker 1 and says so (KIP-951): the producer goes
    // there without waiting for a metadata refresh, with the same id and sequence.
    s.leaders.insert(("t".into(), 0), 1);
    let first = s.busy_streams()[0];
    let req = s.process(first, Answer::NotLeader(Some(1))).expect("a request");
    s.settle(50);
    let written = link_of(&s);
    assert_eq!(written.first(), Some(&0));
    assert!(written[1..].iter().all(|&l| l == 1), "every retry to the named leader: {written:?}");
    let retry = &s.written.last().unwrap().1;
    let (a, b) = (
        *crate::protocol::RecordBatch::from_bytes(req.batch.clone()).unwrap().header(),
        *crate::protocol::RecordBatch::from_bytes(retry.batch.clone()).unwrap().header(),
    );
    assert_eq!(a.producer, b.producer, "same producer id, epoch and sequence");
    for id in ids {
        assert!(s.outcome(id).expect("an outcome").is_ok());
    }
    s.check();
}

#[test]
fn not_leader_without_a_leader_retries_after_a_metadata_refresh() {
    let cfg = ProducerConfig {
        bootstrap: vec!["b0:1".into(), "b1:1".into()],
        metadata_max_age: Duration::from_secs(3600),
        ..config()
    };
    let mut s = Sim::new(cfg);
    s.topics.insert("t".into(), 1);
    s.start("t");
    let ids = s.send("t", 0, 2);
    s.step();
    s.leaders.insert(("t".into(), 0), 1);
    let first = s.busy_streams()[0];
    s.process(first, Answer::NotLeader(None));
    // No leader named: the metadata refresh the answer asks for finds broker 1 (a retry
    // before the refresh answers may still go to broker 0, which refuses it again).
    for _ in 0..20 {
        s.advance(Duration::from_millis(50));
        s.settle_control();
        while let Some(&st) = s.busy_streams().first() {
            let how = if st.conn.link == 0 { Answer::NotLeader(None) } else { Answer::Normal };
            s.process(st, how);
        }
    }
    assert_eq!(s.written.last().map(|(st, _)| st.conn.link), Some(1), "{:?}", s.written);
    for id in ids {
        assert!(s.outcome(id).expect("an outcome").is_ok());
    }
    s.check();
}

// --- 10. delivery timeout in flight; the send latency ------------------------------------

#[test]
fn an_in_flight_batch_fails_at_the_delivery_timeout() {
    let cfg = ProducerConfig { request_timeout: Duration::from_secs(100), ..config() };
    let mut s = Sim::ready(cfg, "t", 1);
    let id = s.send("t", 0, 1)[0];
    s.step();
    for _ in 0..121 {
        s.advance(Duration::from_secs(1));
        s.accept_connects();
    }
    let r = s.outcome(id).expect("an outcome at the delivery timeout, in flight or not");
    assert_eq!(status(&r), Some((ErrorKind::DeliveryTimeout, Persistence::PossiblyPersisted)));
}

#[test]
fn the_send_latency_runs_from_sealing_to_the_write() {
    let mut s = Sim::ready(config(), "t", 1);
    s.auto_written = false;
    s.send("t", 0, 1);
    s.step();
    let st = only_stream(&s);
    assert_eq!(s.core.metrics.histograms().send.len(), 0, "not written yet");
    s.advance(Duration::from_millis(7));
    s.core.handle_written(s.now, st, 1);
    let h = s.core.metrics.histograms();
    assert_eq!(h.send.len(), 1);
    assert!(h.send.max() >= 7_000, "{} µs", h.send.max());
}

// --- the timer ---------------------------------------------------------------------------

#[test]
fn nothing_that_waits_for_an_event_makes_the_timer_fire_at_once() {
    // A full window past its linger, and a batch waiting for a connection that is down.
    let cfg = ProducerConfig { max_in_flight: 1, linger: Duration::from_millis(5), ..config() };
    let mut s = Sim::ready(cfg, "t", 1);
    s.send("t", 0, 1);
    s.step();
    s.advance(Duration::from_millis(10));
    s.send("t", 0, 1);
    s.step();
    s.advance(Duration::from_millis(10));
    let next = s.core.poll_timeout(s.now).expect("a timer");
    assert!(next > s.now, "the timer would fire at once");
    let st = only_stream(&s);
    s.lose(st.conn);
    s.advance(Duration::from_millis(500));
    let next = s.core.poll_timeout(s.now).expect("a timer");
    assert!(next > s.now, "the timer would fire at once while the link is down");
}

// --- the circuit breaker inside the core ------------------------------------------------

#[test]
fn an_open_breaker_fails_fast_then_allows_one_trial_connection() {
    let cfg = ProducerConfig {
        connections_per_broker: 2,
        circuit_breaker_threshold: 2,
        circuit_breaker_recovery: Duration::from_secs(10),
        ..config()
    };
    let recovery = cfg.circuit_breaker_recovery;
    let mut s = Sim::ready(cfg, "t", 1);
    let unreachable =
        || TransportError::Unreachable { addr: "127.0.0.1:1".parse().unwrap(), timeout: Duration::from_secs(1) };
    // Both connections break; reconnecting fails until the breaker opens.
    for conn in s.core.links.open_conns() {
        s.lose(conn);
    }
    let id = s.send("t", 0, 1)[0];
    for _ in 0..4 {
        s.advance(Duration::from_millis(300));
        s.fail_connects(unreachable);
    }
    s.step();
    let r = s.outcome(id).unwrap_or_else(|| panic!("failed fast, not at the delivery timeout\n{}", s.dump()));
    assert_eq!(status(&r), Some((ErrorKind::CircuitOpen, Persistence::NotPersisted)));
    // Inside the recovery window: no attempt at all, and new records fail at once.
    s.advance(recovery / 2);
    assert!(s.connects.is_empty(), "no connection attempt while open");
    let id = s.send("t", 0, 1)[0];
    s.step();
    assert_eq!(s.outcome(id).map(|r| status(&r).map(|x| x.0)), Some(Some(ErrorKind::CircuitOpen)));
    // After it: exactly one trial; it fails, and the breaker opens again.
    s.advance(recovery);
    assert_eq!(s.connects.len(), 1, "one trial connection: {:?}", s.connects);
    s.fail_connects(unreachable);
    s.advance(Duration::from_secs(1));
    assert!(s.connects.is_empty(), "a failed trial reopens the breaker");
    // The next trial succeeds: the breaker closes and every slot connects.
    s.advance(recovery);
    assert_eq!(s.connects.len(), 1);
    s.accept_connects();
    s.advance(Duration::from_secs(1));
    s.accept_connects();
    let id = s.send("t", 0, 1)[0];
    s.settle(50);
    assert!(s.outcome(id).unwrap().is_ok());
}

// --- review of issue 10: durations far in the future ------------------------------------

#[test]
fn a_close_without_deadline_and_huge_timeouts_do_not_overflow_the_clock() {
    let huge = Duration::MAX;
    let cfg = ProducerConfig {
        delivery_timeout: huge,
        request_timeout: huge / 2,
        linger: Duration::from_secs(u64::MAX / 4),
        metadata_max_age: huge,
        circuit_breaker_recovery: huge,
        ..config()
    };
    let mut s = Sim::ready(cfg, "t", 1);
    let id = s.send("t", 0, 1)[0];
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    s.core.handle_close(s.now, Duration::MAX, Some((s.acc.flush_point(), tx)));
    s.step();
    assert!(s.core.poll_timeout(s.now).is_none_or(|t| t > s.now));
    s.settle(50);
    assert!(s.outcome(id).unwrap().is_ok());
    assert!(rx.try_recv().unwrap().is_ok(), "the close answered once everything was delivered");
    assert!(s.core.is_finished());
}

// --- review of issue 10: timers fire on time ----------------------------------------------

#[test]
fn a_deadline_after_the_last_run_is_never_dropped_however_late_the_timer_is_asked_for() {
    let cfg = ProducerConfig { linger: Duration::from_millis(5), ..config() };
    let mut s = Sim::ready(cfg, "t", 1);
    s.send("t", 0, 1);
    let t0 = s.now;
    s.step(); // the linger clock starts at t0
              // The shell ran user callbacks after `handle_timeout(t0)` and asks for the timer later.
    let next = s.core.poll_timeout(t0 + Duration::from_millis(10)).expect("the linger timer");
    assert!(next <= t0 + Duration::from_millis(5), "the linger deadline was dropped: {:?} late", next - t0);
}

#[test]
fn a_metadata_request_that_failed_is_asked_again_by_its_own_timer() {
    let cfg = config();
    let retry = cfg.retry_backoff.delay(1, 0.5);
    let mut s = Sim::new(cfg);
    s.step();
    s.accept_connects();
    s.settle_control();
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    s.core.handle_metadata_wanted(s.now, "t".into(), Some(tx));
    s.step();
    let (tag, _, _) = s.calls.pop_front().expect("a metadata request");
    s.core.handle_control(s.now, tag, Err(broker_error(ErrorCode::ResourceLimit)));
    s.collect();
    let failed = s.now;
    s.topics.insert("t".into(), 1);
    // Time moves only as far as the core's timers say.
    while s.calls.is_empty() {
        assert!(s.next_timer(), "no timer although a metadata request is due");
        assert!(s.now - failed <= retry, "asked again {:?} after the failure; due after {retry:?}", s.now - failed);
    }
    s.settle_control();
    assert!(rx.try_recv().unwrap().is_ok());
}

// --- review of issue 10: a batch past its deadline is never sent ----------------------------

#[test]
fn a_batch_whose_delivery_timeout_passed_is_expired_not_sent() {
    let cfg = config();
    let dt = cfg.delivery_timeout;
    let mut s = Sim::ready(cfg, "t", 1);
    let conn = s.core.links.open_conns()[0];
    s.lose(conn);
    let id = s.send("t", 0, 1)[0];
    s.step(); // sealed; no connection to send it on
    s.advance(Duration::from_millis(100)); // a reconnect starts (and hangs)
    assert_eq!(s.connects.len(), 1);
    let written = s.written.len();
    // The connection comes up exactly when the batch's delivery timeout passes.
    s.now += dt - Duration::from_millis(100);
    s.accept_connects();
    s.step();
    let r = s.outcome(id).expect("expired");
    assert_eq!(status(&r), Some((ErrorKind::DeliveryTimeout, Persistence::NotPersisted)), "{r:?}");
    assert_eq!(s.written.len(), written, "a batch past its deadline went out");
    assert_eq!(s.core.metrics.epoch_bumps.load(std::sync::atomic::Ordering::Relaxed), 0);
    s.settle(50);
    // No epoch bump (a metadata refresh is expected: the lost connection asks for one, as
    // in a cluster the partitions it led may have moved).
    assert!(
        s.calls.iter().all(|(_, _, p)| matches!(p, Payload::Metadata(_)))
            && s.core.pid.bump == crate::producer::core::producer_id::Bump::None,
        "{:?}",
        s.calls
    );
}

// --- review of issue 10: the breaker and a broker with a live connection ---------------------

#[test]
fn failing_extra_connections_do_not_fail_traffic_on_a_live_one() {
    let cfg = ProducerConfig {
        connections_per_broker: 2,
        streams_per_connection: 1,
        circuit_breaker_threshold: 2,
        ..config()
    };
    let mut s = Sim::ready(cfg, "t", 2);
    let conns = s.core.links.open_conns();
    assert_eq!(conns.len(), 2);
    // Slot 1's connection drops; the broker refuses every new one (at max_connections).
    s.lose(conns[1]);
    let refused = || TransportError::Broker {
        addr: "127.0.0.1:1".parse().unwrap(),
        code: ErrorCode::ResourceLimit,
        message: "max_connections".into(),
    };
    for _ in 0..6 {
        s.advance(Duration::from_millis(300));
        s.fail_connects(refused);
    }
    // Both partitions still get through: partition 0 on its own slot, partition 1 over the
    // live slot while its own is down.
    let ids: Vec<u64> = s.send("t", 0, 2).into_iter().chain(s.send("t", 1, 2)).collect();
    for _ in 0..5 {
        s.step();
        s.process_all();
        s.advance(Duration::from_millis(300));
        s.fail_connects(refused);
    }
    for id in ids {
        assert!(s.outcome(id).is_some_and(|r| r.is_ok()), "record {id}: {:?}\n{}", s.outcome(id), s.dump());
    }
    s.check();
}

// --- review of issue 10: one broker refusing us does not fail metadata ------------------

#[test]
fn metadata_waits_for_a_broker_that_accepts_us_when_another_refused_the_certificate() {
    let cfg = ProducerConfig { bootstrap: vec!["b0:1".into(), "b1:1".into()], ..config() };
    let mut s = Sim::new(cfg);
    s.brokers[1].id = 0; // one broker, reachable under two names
    s.topics.insert("t".into(), 1);
    s.step();
    let refused = || TransportError::TlsRejected {
        addr: "127.0.0.1:1".parse().unwrap(),
        by: crate::transport::Refuser::Broker,
        alert: Some(42),
        detail: "certificate refused".into(),
    };
    // b0 refuses the certificate; b1's attempt is still running.
    let pending: Vec<_> = s.connects.drain(..).collect();
    for (conn, addr) in &pending {
        if addr == "b0:1" {
            s.core.handle_connect_failed(s.now, *conn, refused());
            s.collect();
        }
    }
    s.connects.extend(pending.into_iter().filter(|(_, a)| a != "b0:1"));
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    s.core.handle_metadata_wanted(s.now, "t".into(), Some(tx));
    s.collect();
    assert!(rx.try_recv().is_err(), "failed although b1 may still answer");
    s.accept_connects();
    s.settle_control();
    assert!(rx.try_recv().expect("answered").is_ok());
    let id = s.send("t", 0, 1)[0];
    s.settle(50);
    assert!(s.outcome(id).unwrap().is_ok());
}

// --- review of issue 10: bounded work while a breaker is open ---------------------------

#[test]
fn an_open_breaker_is_handled_once_per_broker_per_round_not_once_per_partition() {
    let cfg = ProducerConfig { circuit_breaker_threshold: 1, metadata_max_age: Duration::from_secs(10), ..config() };
    let mut s = Sim::new(cfg);
    s.brokers.push(SimBroker { name: "b1:1".into(), id: 1 });
    s.topics.insert("t".into(), 64);
    s.start("t");
    for p in 0..64 {
        s.send("t", p, 1);
    }
    s.step(); // every partition has a batch in flight to b0, unanswered
              // Every partition moves to b1, which cannot be reached: its breaker opens.
    for p in 0..64 {
        s.leaders.insert(("t".into(), p), 1);
    }
    s.advance(Duration::from_secs(11));
    while s.answer_call() {}
    s.step();
    let unreachable =
        || TransportError::Unreachable { addr: "127.0.0.1:1".parse().unwrap(), timeout: Duration::from_secs(1) };
    s.fail_connects(unreachable);
    assert!(s.core.links.list[1].failing_fast(s.now), "{}", s.dump());
    s.core.fail_link_calls = 0;
    s.step();
    assert!(s.core.fail_link_calls <= 1, "{} passes over every partition in one round", s.core.fail_link_calls);
}

// --- review of issue 10: a broker that accepts, then drops, connections ---------------------

#[test]
fn a_broker_that_drops_every_connection_at_once_is_backed_off_and_breaks_the_circuit() {
    let cfg = ProducerConfig { circuit_breaker_threshold: 4, ..config() };
    let recovery = cfg.circuit_breaker_recovery;
    let mut s = Sim::ready(cfg, "t", 1);
    let mut attempts = vec![s.now];
    for _ in 0..3 {
        let conn = s.core.links.open_conns()[0];
        s.lose(conn); // just after HelloOk
        while s.connects.is_empty() {
            assert!(s.next_timer(), "no reconnect timer");
        }
        attempts.push(s.now);
        s.accept_connects();
    }
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.windows(2).all(|g| g[1] > g[0]), "the back-off does not grow: {gaps:?}");
    let conn = s.core.links.open_conns()[0];
    s.lose(conn);
    // The fourth quick loss in a row opened the breaker: records fail fast, and nothing is
    // attempted inside the recovery window.
    let id = s.send("t", 0, 1)[0];
    s.step();
    let r = s.outcome(id).unwrap_or_else(|| panic!("waits instead of failing fast\n{}", s.dump()));
    assert_eq!(status(&r).map(|x| x.0), Some(ErrorKind::CircuitOpen), "{r:?}");
    s.advance(recovery / 2);
    assert!(s.connects.is_empty());
}

// --- review of issue 10: a request that never gets written still times out ------------------

#[test]
fn a_request_stuck_before_its_write_completes_resets_the_stream_at_the_request_timeout() {
    let cfg = config();
    let deadline = request_deadline(&cfg);
    let mut s = Sim::ready(cfg, "t", 1);
    s.auto_written = false; // the stream is blocked (flow control): the write never completes
    let id = s.send("t", 0, 1)[0];
    s.step();
    let st = only_stream(&s);
    while s.resets.is_empty() {
        assert!(s.next_timer(), "no timer for the request");
        assert!(s.now - s.written_at(0) <= deadline, "not reset by {:?}", s.now - s.written_at(0));
    }
    assert_eq!(s.resets, [st]);
    assert!(s.outcome(id).is_none(), "resent, not failed");
    s.auto_written = true;
    s.settle(50);
    assert!(s.outcome(id).unwrap().is_ok());
}

// --- review of issue 10: connection attempts have a deadline; hostile offsets ------------

#[test]
fn a_connection_attempt_that_never_ends_fails_at_the_connect_timeout() {
    let cfg = config();
    let allowance = cfg.connect_timeout + crate::producer::core::timeouts::margin(cfg.connect_timeout);
    let mut s = Sim::ready(cfg, "t", 1);
    let conn = s.core.links.open_conns()[0];
    s.lose(conn);
    while s.connects.is_empty() {
        assert!(s.next_timer(), "no reconnect timer");
    }
    let started = s.now;
    let failures = s.core.links.list[0].slots[0].failures;
    s.connects.clear(); // the attempt hangs (DNS, handshake, or streams never opened)
    while s.connects.is_empty() {
        assert!(s.next_timer(), "no timer: the hung attempt is never given up");
        assert!(s.now - started <= allowance + Duration::from_secs(1), "{:?}", s.now - started);
    }
    assert_eq!(s.core.links.list[0].slots[0].failures, failures + 1, "counted as a failed attempt");
    s.accept_connects();
    let id = s.send("t", 0, 1)[0];
    s.settle(50);
    assert!(s.outcome(id).unwrap().is_ok());
}

#[test]
fn an_acknowledgement_whose_offsets_overflow_is_a_protocol_error() {
    let mut s = Sim::ready(config(), "t", 1);
    let ids = s.send("t", 0, 2);
    s.step();
    let st = only_stream(&s);
    let req = s.streams.get_mut(&st).unwrap().pop_front().unwrap();
    let answer = ProduceResult {
        error: ErrorCode::None,
        duplicate: false,
        base_offset: i64::MAX,
        log_append_time: -1,
        message: String::new(),
    };
    s.core.handle_response(s.now, st, Frame { correlation_id: req.corr, payload: Payload::ProduceResult(answer) });
    s.collect();
    assert!(ids.iter().all(|id| s.outcome(*id).is_none()), "acked at offsets past i64::MAX");
    assert_eq!(s.resets, [st], "the stream is given up");
    s.settle(50);
    assert!(ids.iter().all(|id| s.outcome(*id).unwrap().is_ok()));
    s.check();
}

// --- review of issue 10: flush and close cover what was enqueued before the call ---------

#[test]
fn a_flush_covers_the_records_enqueued_before_the_call_only() {
    let mut s = Sim::ready(ProducerConfig { linger: Duration::from_secs(5), ..config() }, "t", 2);
    let before = s.send("t", 0, 1)[0];
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    s.core.handle_flush(s.now, s.acc.flush_point(), tx);
    // Enqueued after the call (before the driver's next round): not the flush's business.
    let after = s.send("t", 1, 1)[0];
    s.step();
    let p0 = s.busy_streams().into_iter().find(|st| s.streams[st][0].partition == 0).unwrap();
    s.process(p0, Answer::Normal);
    s.step();
    assert!(s.outcome(before).unwrap().is_ok());
    assert!(s.outcome(after).is_none(), "partition 1's request is still unanswered");
    assert!(rx.try_recv().expect("answered without waiting for the later record").is_ok());
}

#[test]
fn after_an_unclean_close_the_core_keeps_the_close_error() {
    let mut s = Sim::ready(config(), "t", 1);
    let id = s.send("t", 0, 1)[0];
    s.step(); // in flight, never answered
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    s.core.handle_close(s.now, Duration::from_millis(10), Some((s.acc.flush_point(), tx)));
    s.advance(Duration::from_millis(20));
    assert!(s.core.is_finished());
    let e = rx.try_recv().unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed);
    assert_eq!(status(&s.outcome(id).unwrap()).map(|x| x.0), Some(ErrorKind::Closed));
    assert_eq!(s.core.end_result().unwrap_err().to_string(), e.to_string(), "later close/flush calls get it");
}

#[test]
fn a_topic_asked_for_by_try_send_can_be_asked_for_again_once_answered() {
    let mut s = Sim::new(config());
    s.topics.insert("t".into(), 1);
    s.step();
    s.accept_connects();
    s.settle_control();
    for topic in ["nope", "t"] {
        let name: Arc<str> = topic.into();
        assert_eq!(s.acc.ask_metadata(&name), crate::producer::accumulator::MetadataAsk::Ask);
        s.core.handle_metadata_wanted(s.now, name.clone(), None);
        assert_eq!(s.acc.ask_metadata(&name), crate::producer::accumulator::MetadataAsk::Pending);
        s.settle_control();
        // Answered (an unknown topic, or the queues): a later try_send may ask again.
        assert_eq!(s.acc.ask_metadata(&name), crate::producer::accumulator::MetadataAsk::Ask, "{topic}");
        s.acc.metadata_settled(topic);
    }
}
