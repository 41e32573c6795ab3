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
