//! Property: for any interleaving of sends, answers (normal, refused before the dedup
//! lookup, appended but unconfirmed, lost), connection and stream losses (with requests the
//! broker had read landing late, after their resends were answered), control requests
//! answered or dropped, writes reported several at once, fencing, a registry that forgets
//! the producer id, idle producer state that expires, leaders that move between two
//! brokers, purge, close and time jumps, in several producer/broker modes (acks=none and
//! exhausted retries among them):
//! - every record gets exactly one outcome; none is acknowledged unless stored exactly
//!   once at the acknowledged offset; none is stored twice (under two sequence numbers or
//!   epochs); "not persisted" records are absent; "possibly persisted" ones were carried by
//!   a request that got no answer (or an "appended, not confirmed" one); each partition's
//!   log keeps send order; a flush or close is `Ok` exactly when what it covered was
//!   acknowledged;
//! - no record is sent renumbered or in another epoch while a request carrying it may
//!   still land (checked on every request written);
//! - after the faults, the network goes quiet and time moves only as far as the core's own
//!   timers say (so a deadline the core forgot is a stall, not a late decision): everything
//!   resolves, and records sent then are all acknowledged.
//!
//! Runs in the default `cargo test` with 5000 cases (about 25 s in a dev build on a loaded
//! 2-core machine); `QWIRE_PROPTEST_CASES` sets another count, `PROPTEST_RNG_SEED` a seed.

use std::time::Duration;

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
enum Op {
    Send {
        partition: u32,
        n: usize,
    },
    Step,
    Process {
        pick: usize,
        how: Answer,
    },
    /// The connection breaks after the broker read the first `read` waiting requests of each
    /// of its streams: those may still be processed later (`Land`).
    LoseConnection {
        pick: usize,
        read: usize,
    },
    /// One stream breaks, likewise.
    LoseStream {
        pick: usize,
        read: usize,
    },
    /// A request the broker had read from a broken stream is processed now.
    Land {
        pick: usize,
    },
    Advance {
        ms: u64,
    },
    Connects {
        accept: bool,
    },
    Calls {
        answer: bool,
    },
    /// The shell reports what it wrote on a stream, several requests in one event.
    Written {
        pick: usize,
    },
    Flush,
    Purge,
    Close {
        ms: u64,
    },
    /// Another producer takes the producer id over (the registry's epoch moves on).
    Fence,
    /// The broker's registry forgets the producer id.
    ForgetProducer,
    /// An idle partition's producer state expires at the broker.
    LoseState {
        partition: u32,
    },
    /// The partition's leader moves to the other broker (two-broker shapes).
    MoveLeader {
        partition: u32,
    },
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        16 => Just(Answer::Normal),
        4 => Just(Answer::Lost),
        2 => Just(Answer::TimedOutAfterAppend),
        2 => Just(Answer::Refuse(ErrorCode::ResourceLimit)),
        2 => Just(Answer::Refuse(ErrorCode::CorruptBatch)),
        2 => Just(Answer::Refuse(ErrorCode::StorageError)),
        2 => Just(Answer::Refuse(ErrorCode::UnknownTopicOrPartition)),
        2 => Just(Answer::Refuse(ErrorCode::AuthorizationFailed)),
        2 => Just(Answer::Refuse(ErrorCode::BatchTooLarge)),
        1 => Just(Answer::Refuse(ErrorCode::InvalidProducerId)),
        1 => Just(Answer::Refuse(ErrorCode::NotLeader)),
    ]
}

fn read() -> impl Strategy<Value = usize> {
    prop_oneof![2 => Just(0usize), 1 => Just(1), 1 => Just(usize::MAX)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        40 => (0u32..3, 1usize..4).prop_map(|(partition, n)| Op::Send { partition, n }),
        30 => Just(Op::Step),
        80 => (any::<usize>(), answer()).prop_map(|(pick, how)| Op::Process { pick, how }),
        10 => (any::<usize>(), read()).prop_map(|(pick, read)| Op::LoseConnection { pick, read }),
        10 => (any::<usize>(), read()).prop_map(|(pick, read)| Op::LoseStream { pick, read }),
        15 => any::<usize>().prop_map(|pick| Op::Land { pick }),
        30 => prop_oneof![Just(1u64), Just(60), Just(250), Just(1500), Just(4000)].prop_map(|ms| Op::Advance { ms }),
        20 => any::<bool>().prop_map(|accept| Op::Connects { accept }),
        20 => prop_oneof![4 => Just(true), 1 => Just(false)].prop_map(|answer| Op::Calls { answer }),
        15 => any::<usize>().prop_map(|pick| Op::Written { pick }),
        10 => Just(Op::Flush),
        2 => Just(Op::Purge),
        1 => prop_oneof![Just(0u64), Just(500), Just(10_000)].prop_map(|ms| Op::Close { ms }),
        1 => Just(Op::Fence),
        1 => Just(Op::ForgetProducer),
        2 => (0u32..3).prop_map(|partition| Op::LoseState { partition }),
        4 => (0u32..3).prop_map(|partition| Op::MoveLeader { partition }),
    ]
}

/// The producer and broker settings a case runs with.
#[derive(Debug, Clone, Copy)]
struct Mode {
    idempotent: bool,
    per_partition_epochs: bool,
    rule: EpochRule,
    /// The broker refuses a repeated bump (issue 9's broker).
    strict_bumps: bool,
    /// acks=none (not idempotent): nothing is answered.
    acks_none: bool,
}

const GLOBAL: Mode = Mode {
    idempotent: true,
    per_partition_epochs: false,
    rule: EpochRule::PerPartition,
    strict_bumps: false,
    acks_none: false,
};
const PP: Mode = Mode {
    idempotent: true,
    per_partition_epochs: true,
    rule: EpochRule::DedupFirst,
    strict_bumps: false,
    acks_none: false,
};

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![
        Just(GLOBAL),
        Just(Mode { rule: EpochRule::Strict, strict_bumps: true, ..GLOBAL }),
        Just(Mode { rule: EpochRule::DedupFirst, ..GLOBAL }),
        Just(PP),
        // The issue-9 broker: per-partition epochs announced, repeated bumps refused.
        Just(Mode { strict_bumps: true, ..PP }),
        Just(Mode { rule: EpochRule::PerPartition, ..PP }),
        Just(Mode { idempotent: false, ..GLOBAL }),
        Just(Mode { idempotent: false, acks_none: true, ..GLOBAL }),
    ]
}

/// Connection, broker and shell settings a case runs with.
#[derive(Debug, Clone, Copy)]
struct Shape {
    connections: usize,
    streams: usize,
    /// The frame limit the broker announces (small: batches are clamped and split).
    max_frame: usize,
    /// Two brokers (partitions led by either, NOT_LEADER from the other), or one.
    brokers: usize,
    /// Writes reported one by one at once, or several at a time when the test says.
    auto_written: bool,
    /// A stream the producer resets leaves what the broker read of it in limbo.
    limbo_on_reset: bool,
    /// Retries per batch.
    retries: u32,
}

const ONE: Shape = Shape {
    connections: 1,
    streams: 8,
    max_frame: crate::protocol::MAX_FRAME_SIZE,
    brokers: 1,
    auto_written: true,
    limbo_on_reset: false,
    retries: u32::MAX,
};

fn shape() -> impl Strategy<Value = Shape> {
    let base = prop_oneof![
        3 => Just(ONE),
        1 => Just(Shape { connections: 2, streams: 1, ..ONE }),
        1 => Just(Shape { streams: 2, max_frame: 300, ..ONE }),
        2 => Just(Shape { brokers: 2, streams: 2, ..ONE }),
    ];
    (base, any::<bool>(), any::<bool>(), prop_oneof![3 => Just(u32::MAX), 1 => Just(1u32)])
        .prop_map(|(s, auto_written, limbo_on_reset, retries)| Shape { auto_written, limbo_on_reset, retries, ..s })
}

fn run(mode: Mode, ops: &[Op]) {
    run_shaped(mode, ONE, ops)
}

/// Runs until `done`, with a quiet network: connections accepted, control requests and
/// produce requests answered normally, writes reported; time moves only to the core's
/// next timer. Panics on a stall (nothing to do, no timer) or if it never ends.
fn quiet(s: &mut Sim, what: &str, done: impl Fn(&Sim) -> bool) {
    for _ in 0..20_000 {
        if done(s) {
            return;
        }
        let before = (s.written.len(), s.outcomes.lock().unwrap().len(), s.calls.len(), s.connects.len());
        s.step();
        s.report_all_written();
        s.accept_connects();
        let mut progressed = false;
        while s.answer_call() {
            progressed = true;
        }
        progressed |= s.process_all() > 0;
        let after = (s.written.len(), s.outcomes.lock().unwrap().len(), s.calls.len(), s.connects.len());
        if progressed || after != before || done(s) {
            continue;
        }
        assert!(
            s.next_timer(),
            "{what}: stalled (nothing to do, no timer): {} of {} records have an outcome, ended {}\n{}",
            s.outcomes.lock().unwrap().len(),
            s.sent.len(),
            s.ended,
            s.dump()
        );
    }
    panic!("{what}: not done in 20 000 rounds\n{}", s.dump());
}

fn run_shaped(mode: Mode, shape: Shape, ops: &[Op]) {
    // QWIRE_PROP_LOG=FILE: the case being run (to find one that hangs).
    if let Ok(path) = std::env::var("QWIRE_PROP_LOG") {
        std::fs::write(path, format!("{mode:?}\n{shape:?}\n{ops:?}\n")).unwrap();
    }
    let fixed = |ms| crate::producer::config::Backoff {
        base: Duration::from_millis(ms),
        max: Duration::from_millis(ms * 4),
        jitter: 0.0,
    };
    let bootstrap = (0..shape.brokers).map(|i| format!("b{i}:1")).collect();
    let cfg = ProducerConfig {
        bootstrap,
        idempotence: mode.idempotent,
        acks: if mode.acks_none { crate::protocol::Acks::None } else { crate::protocol::Acks::All },
        max_in_flight: if mode.idempotent { 5 } else { 1 },
        batch_size: 256,
        linger: Duration::from_millis(1),
        request_timeout: Duration::from_secs(2),
        delivery_timeout: Duration::from_secs(8),
        retry_backoff: fixed(50),
        reconnect_backoff: fixed(20),
        connections_per_broker: shape.connections,
        streams_per_connection: shape.streams,
        retries: shape.retries,
        ..config()
    };
    let mut s = Sim::with_rule(cfg, mode.rule);
    s.broker.strict_bumps = mode.strict_bumps;
    s.per_partition_epochs = mode.per_partition_epochs;
    s.max_frame = shape.max_frame;
    s.auto_written = shape.auto_written;
    s.limbo_on_reset = shape.limbo_on_reset;
    s.strict_leaders = shape.brokers > 1;
    if shape.brokers > 1 {
        s.leaders.insert(("t".into(), 2), 1);
    }
    // Flushes and closes: records enqueued before each, and where its result goes.
    let mut flushes = Vec::new();
    s.topics.insert("t".into(), 3);
    s.start("t");
    for op in ops {
        match op.clone() {
            Op::Send { partition, n } => {
                s.send_sized("t", partition, n, 40);
            }
            Op::Step => s.step(),
            Op::Process { pick, how } => {
                let busy = s.busy_streams();
                if !busy.is_empty() {
                    s.process(busy[pick % busy.len()], how);
                }
            }
            Op::LoseConnection { pick, read } => {
                let conns = s.conns();
                if !conns.is_empty() {
                    s.lose_after_reading(conns[pick % conns.len()], read);
                }
            }
            Op::LoseStream { pick, read } => {
                let busy = s.busy_streams();
                if !busy.is_empty() {
                    let st = busy[pick % busy.len()];
                    s.drop_stream(st, read);
                    let addr = "127.0.0.1:1".parse().unwrap();
                    let e = TransportError::StreamClosed { addr, detail: "scripted".into() };
                    s.core.handle_stream_lost(s.now, st, e);
                    s.collect();
                }
            }
            Op::Land { pick } => s.land(pick),
            Op::Advance { ms } => s.advance(Duration::from_millis(ms)),
            Op::Connects { accept } => {
                if accept {
                    s.accept_connects();
                } else {
                    let addr = "127.0.0.1:1".parse().unwrap();
                    s.fail_connects(|| TransportError::Unreachable { addr, timeout: Duration::from_secs(1) });
                }
            }
            Op::Calls { answer } => {
                if answer {
                    while s.answer_call() {}
                } else {
                    s.calls.clear();
                }
            }
            Op::Written { pick } => {
                let mut streams: Vec<StreamId> = s.unwritten.keys().copied().collect();
                streams.sort_by_key(|s| (s.conn.link, s.conn.slot, s.conn.gen, s.index, s.gen));
                if !streams.is_empty() {
                    s.report_written(streams[pick % streams.len()]);
                }
            }
            // After the end the shell no longer takes commands (they get `end_result`).
            Op::Flush | Op::Close { .. } | Op::Purge if s.ended => {}
            Op::Flush => {
                // As the shell does: the command, then the decisions due (nothing between).
                let pending: Vec<u64> = (0..s.sent.len() as u64).filter(|id| s.outcome(*id).is_none()).collect();
                let (tx, rx) = tokio::sync::oneshot::channel();
                s.core.handle_flush(s.now, s.acc.flush_point(), tx);
                s.step();
                flushes.push((pending, rx));
            }
            Op::Close { ms } => {
                let pending: Vec<u64> = (0..s.sent.len() as u64).filter(|id| s.outcome(*id).is_none()).collect();
                let (tx, rx) = tokio::sync::oneshot::channel();
                s.core.handle_close(s.now, Duration::from_millis(ms), Some((s.acc.flush_point(), tx)));
                s.step();
                flushes.push((pending, rx));
            }
            Op::Purge => {
                let (tx, _rx) = tokio::sync::oneshot::channel();
                s.core.handle_purge(s.now, tx);
                s.step();
            }
            Op::Fence => {
                if let Some((pid, _)) = s.core.pid.current() {
                    s.broker.fence(pid);
                }
            }
            Op::ForgetProducer => {
                if let Some((pid, _)) = s.core.pid.current() {
                    s.broker.forget(pid);
                }
            }
            Op::LoseState { partition } => {
                // Only an idle producer's state expires: nothing of it in flight or on its way.
                let busy = s
                    .streams
                    .values()
                    .chain(s.limbo.iter().map(|(_, q)| q))
                    .flatten()
                    .any(|r| r.partition == partition);
                let idle = s.core.topics.list[0].parts[partition as usize].window.is_empty();
                if idle && !busy {
                    s.broker.lose_state("t", partition);
                }
            }
            Op::MoveLeader { partition } => {
                if s.brokers.len() > 1 {
                    let key = ("t".to_string(), partition);
                    let now = s.leaders.get(&key).copied().unwrap_or(0);
                    s.leaders.insert(key, 1 - now);
                }
            }
        }
    }
    // The faults end: what the broker had read lands; a stream on which the broker dropped
    // an answer (its next answer would not match) is reset by the broker; then the network
    // is quiet.
    s.land_all();
    let mut desynced: Vec<StreamId> = s.desynced.iter().copied().collect();
    desynced.sort_by_key(|s| (s.conn.link, s.conn.slot, s.conn.gen, s.index, s.gen));
    for st in desynced {
        s.drop_stream(st, 0);
        let addr = "127.0.0.1:1".parse().unwrap();
        let e = TransportError::StreamClosed { addr, detail: "reset by the broker".into() };
        s.core.handle_stream_lost(s.now, st, e);
        s.collect();
    }
    quiet(&mut s, "after the faults", |s| {
        s.outcomes.lock().unwrap().len() >= s.sent.len() && (s.ended || (s.core.is_idle() && s.core.flushes.is_empty()))
    });
    s.check();
    assert_eq!(s.outcomes.lock().unwrap().len(), s.sent.len(), "every record has exactly one outcome");
    // A flush (or close) is Ok exactly when every record still waiting when it was called
    // was acknowledged, unless the producer was fenced meanwhile (then it says so, as
    // documented).
    for (pending, mut rx) in flushes {
        let result = rx.try_recv().expect("every flush and close was answered");
        let all_acked = pending.iter().all(|id| s.outcome(*id).is_some_and(|r| r.is_ok()));
        match &result {
            Err(e) if all_acked => assert!(
                e.is_fatal() && s.fatal.is_some(),
                "flush covering {pending:?}, all acknowledged, failed: {e:?}"
            ),
            _ => assert_eq!(result.is_ok(), all_acked, "flush covering {pending:?}: {result:?}"),
        }
    }
    if s.ended {
        return;
    }
    assert!(s.core.is_idle());
    assert_eq!(s.acc.memory.available_permits(), s.core.config().buffer_memory, "all buffer memory was given back");
    // Records sent after the faults are all acknowledged, in the quiet network. A breaker
    // the faults opened fails them fast (not persisted) until its recovery time has passed
    // and a trial connection succeeded: then they go.
    let recovery = s.core.config().circuit_breaker_recovery;
    let fenced_before = s.fatal.is_some();
    let mut fresh: Vec<u64> = Vec::new();
    for round in 0..3 {
        fresh = (0..3).flat_map(|p| s.send_sized("t", p, 2, 40)).collect();
        quiet(&mut s, "records sent after the faults", |s| fresh.iter().all(|id| s.outcome(*id).is_some()));
        let open = |r: RecordOutcome| {
            r.is_err_and(|e| e.kind() == ErrorKind::CircuitOpen && e.persistence() == Persistence::NotPersisted)
        };
        if round == 2 || !fresh.iter().any(|id| open(s.outcome(*id).unwrap())) {
            break;
        }
        s.advance(recovery);
    }
    for id in &fresh {
        let r = s.outcome(*id).unwrap();
        // Fenced (another producer took the id over, possibly found out only now): fatal,
        // nothing more is delivered.
        let fenced = s.fatal.is_some() && r.as_ref().is_err_and(|e| e.is_fatal());
        assert!(r.is_ok() || fenced, "record {id}, sent after the faults: {r:?}\n{}", s.dump());
    }
    if fenced_before {
        assert!(fresh.iter().all(|id| s.outcome(*id).is_some_and(|r| r.is_err())), "sent after a fence: refused");
    }
    s.check();
}

proptest! {
    // QWIRE_PROPTEST_CASES=N for another count.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("QWIRE_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(5000),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_interleaving_gives_every_record_one_true_outcome(
        mode in mode(),
        shape in shape(),
        ops in prop::collection::vec(op(), 1..160),
    ) {
        run_shaped(mode, shape, &ops);
    }
}

/// Cases proptest once found, kept as plain tests.
#[test]
fn regressions() {
    use Op::*;
    let pp2 = Mode { acks_none: false, ..PP };
    run(
        pp2,
        &[
            Send { partition: 0, n: 1 },
            Advance { ms: 4000 },
            Advance { ms: 4000 },
            Advance { ms: 4000 },
            Calls { answer: true },
            Send { partition: 1, n: 2 },
            Process { pick: 0, how: Answer::Normal },
            Send { partition: 1, n: 3 },
            Step,
            Process { pick: 0, how: Answer::Normal },
            Flush,
        ],
    );
    let global = Mode { acks_none: false, ..GLOBAL };
    run(
        global,
        &[
            Send { partition: 0, n: 1 },
            Send { partition: 0, n: 1 },
            Send { partition: 1, n: 1 },
            Send { partition: 0, n: 1 },
            Send { partition: 0, n: 1 },
            Advance { ms: 1 },
            Send { partition: 0, n: 1 },
            Send { partition: 0, n: 1 },
            Advance { ms: 1 },
            Send { partition: 2, n: 1 },
            Process { pick: 5343725240613868712, how: Answer::Normal },
            Process { pick: 0, how: Answer::Lost },
            Flush,
            Process { pick: 0, how: Answer::Normal },
            Send { partition: 1, n: 2 },
            Flush,
            Step,
            Process { pick: 2993596856600143169, how: Answer::Normal },
            Send { partition: 2, n: 3 },
            Send { partition: 2, n: 1 },
            Process { pick: 0, how: Answer::TimedOutAfterAppend },
            Send { partition: 1, n: 1 },
            Send { partition: 1, n: 1 },
            Advance { ms: 1 },
            Advance { ms: 1 },
            Send { partition: 0, n: 1 },
            Send { partition: 0, n: 1 },
            Advance { ms: 60 },
            Process { pick: 3684256181840124175, how: Answer::Refuse(ErrorCode::BatchTooLarge) },
            Process { pick: 3668357506526201737, how: Answer::Normal },
            Process { pick: 0, how: Answer::TimedOutAfterAppend },
            Process { pick: 0, how: Answer::TimedOutAfterAppend },
            Process { pick: 0, how: Answer::Normal },
            Flush,
            Process { pick: 0, how: Answer::Normal },
            Send { partition: 1, n: 2 },
            Send { partition: 1, n: 2 },
            Process { pick: 0, how: Answer::Normal },
            Process { pick: 0, how: Answer::Normal },
            Send { partition: 1, n: 3 },
            Process { pick: 0, how: Answer::Normal },
            Advance { ms: 60 },
            Advance { ms: 60 },
            Process { pick: 0, how: Answer::TimedOutAfterAppend },
        ],
    );
    run(
        global,
        &[
            Send { partition: 2, n: 1 },
            Send { partition: 0, n: 1 },
            Send { partition: 2, n: 1 },
            Send { partition: 2, n: 1 },
            Send { partition: 1, n: 3 },
            Send { partition: 1, n: 2 },
            Step,
            LoseConnection { pick: 0, read: 0 },
            Send { partition: 0, n: 1 },
            Advance { ms: 60 },
            Connects { accept: true },
            Send { partition: 1, n: 1 },
            Advance { ms: 1 },
            Process { pick: 12921284514328203348, how: Answer::Refuse(ErrorCode::BatchTooLarge) },
            Process { pick: 6943850783938645760, how: Answer::TimedOutAfterAppend },
            Step,
            Process { pick: 2850508659284899371, how: Answer::Normal },
            Process { pick: 12277955341101343042, how: Answer::Normal },
            Send { partition: 1, n: 1 },
            LoseStream { pick: 0, read: 0 },
            Advance { ms: 250 },
            Process { pick: 3506253662756431380, how: Answer::Normal },
            Process { pick: 6366704508107926172, how: Answer::Normal },
            Process { pick: 5952152619460209578, how: Answer::Refuse(ErrorCode::BatchTooLarge) },
            Send { partition: 0, n: 1 },
        ],
    );
    let pp = Mode { acks_none: false, ..PP };
    run(
        pp,
        &[
            Send { partition: 0, n: 1 },
            Send { partition: 2, n: 1 },
            Send { partition: 2, n: 1 },
            Send { partition: 2, n: 1 },
            Advance { ms: 1500 },
            Advance { ms: 1500 },
            Advance { ms: 4000 },
            Advance { ms: 1500 },
            Advance { ms: 4000 },
            Calls { answer: true },
            Send { partition: 2, n: 1 },
            Send { partition: 2, n: 1 },
            Send { partition: 0, n: 1 },
            Send { partition: 0, n: 1 },
            Send { partition: 0, n: 1 },
            Process { pick: 2762275319970776915, how: Answer::Normal },
            Send { partition: 0, n: 1 },
            Send { partition: 1, n: 1 },
            Advance { ms: 1 },
            LoseStream { pick: 0, read: 0 },
            Advance { ms: 1 },
            Process { pick: 0, how: Answer::Normal },
            Send { partition: 0, n: 1 },
        ],
    );
}

#[test]
fn regression_acked_twice() {
    use Op::*;
    let global = Mode { acks_none: false, ..GLOBAL };
    run(
        global,
        &[
            Send { partition: 0, n: 1 },
            Send { partition: 0, n: 1 },
            Send { partition: 1, n: 1 },
            Send { partition: 0, n: 1 },
            Send { partition: 0, n: 1 },
            Advance { ms: 1 },
            Send { partition: 0, n: 1 },
            Send { partition: 0, n: 1 },
            Advance { ms: 1 },
            Send { partition: 2, n: 1 },
            Process { pick: 5343725240613868712, how: Answer::Normal },
            Process { pick: 0, how: Answer::Lost },
            Flush,
            Process { pick: 0, how: Answer::Normal },
            Send { partition: 1, n: 2 },
            Flush,
            Step,
            Process { pick: 2993596856600143169, how: Answer::Normal },
            Send { partition: 2, n: 3 },
            Send { partition: 2, n: 1 },
            Process { pick: 0, how: Answer::TimedOutAfterAppend },
            Send { partition: 1, n: 1 },
            Send { partition: 1, n: 1 },
            Advance { ms: 1 },
            Advance { ms: 1 },
            Send { partition: 0, n: 1 },
            Send { partition: 0, n: 1 },
            Advance { ms: 60 },
            Process { pick: 3684256181840124175, how: Answer::Refuse(ErrorCode::BatchTooLarge) },
            Process { pick: 3668357506526201737, how: Answer::Normal },
            Process { pick: 0, how: Answer::TimedOutAfterAppend },
            Process { pick: 0, how: Answer::TimedOutAfterAppend },
            Process { pick: 0, how: Answer::Normal },
            Flush,
            Process { pick: 0, how: Answer::Normal },
            Send { partition: 1, n: 2 },
            Send { partition: 1, n: 2 },
            Process { pick: 0, how: Answer::Normal },
            Process { pick: 0, how: Answer::Normal },
            Send { partition: 1, n: 3 },
            Process { pick: 0, how: Answer::Normal },
            Advance { ms: 60 },
            Advance { ms: 60 },
            Process { pick: 0, how: Answer::TimedOutAfterAppend },
        ],
    );
}

/// An attempt read by the broker on a stream that was then reset lands after its resend
/// was answered "unknown producer": it was renumbered in a new epoch and stored twice.
#[test]
fn regression_late_landing_after_a_settling_answer() {
    use Op::*;
    run_shaped(
        Mode { per_partition_epochs: true, rule: EpochRule::PerPartition, ..PP },
        Shape { brokers: 2, streams: 2, auto_written: false, limbo_on_reset: true, ..ONE },
        &[
            Send { partition: 0, n: 1 },
            Send { partition: 0, n: 1 },
            Send { partition: 0, n: 1 },
            Send { partition: 0, n: 1 },
            Send { partition: 0, n: 1 },
            Send { partition: 0, n: 1 },
            Send { partition: 0, n: 1 },
            Send { partition: 0, n: 1 },
            Flush,
            Send { partition: 2, n: 1 },
            Advance { ms: 4000 },
            LoseStream { pick: 0, read: 0 },
            Send { partition: 2, n: 1 },
            Advance { ms: 60 },
            Advance { ms: 4000 },
            Advance { ms: 60 },
            Process { pick: 0, how: Answer::Normal },
        ],
    );
}

/// A partition draining up to a batch whose lost attempt may still land: the batches
/// before it, answered "unknown producer", are resent after a back-off (a tight loop
/// before: the quiet phase never ended).
#[test]
fn regression_draining_up_to_an_unanswered_batch_backs_off() {
    use Op::*;
    run_shaped(
        Mode {
            idempotent: true,
            per_partition_epochs: false,
            rule: EpochRule::PerPartition,
            strict_bumps: false,
            acks_none: false,
        },
        Shape {
            connections: 1,
            streams: 8,
            max_frame: 16777216,
            brokers: 1,
            auto_written: false,
            limbo_on_reset: false,
            retries: 4294967295,
        },
        &[
            Send { partition: 2, n: 3 },
            Advance { ms: 4000 },
            Send { partition: 0, n: 1 },
            Send { partition: 2, n: 2 },
            Process { pick: 15930901505945443111, how: Answer::Lost },
            Send { partition: 1, n: 3 },
            Advance { ms: 250 },
            Land { pick: 4902070712304193492 },
            Process { pick: 13356565220771968027, how: Answer::TimedOutAfterAppend },
            Process { pick: 17035103134386536539, how: Answer::Normal },
            Send { partition: 0, n: 2 },
            Process { pick: 14121921424637285009, how: Answer::Normal },
            Land { pick: 1733415715476471084 },
            Advance { ms: 4000 },
            Calls { answer: true },
            Calls { answer: true },
            Process { pick: 34078443841039286, how: Answer::Normal },
            Process { pick: 14501432721936716701, how: Answer::Lost },
            Send { partition: 0, n: 3 },
            Send { partition: 0, n: 1 },
            Send { partition: 0, n: 3 },
            Connects { accept: false },
            Process { pick: 488043452950124789, how: Answer::Refuse(ErrorCode::UnknownTopicOrPartition) },
            Calls { answer: true },
            Process { pick: 14029757237458078199, how: Answer::Normal },
            Process { pick: 13441747239021914166, how: Answer::Normal },
            Send { partition: 2, n: 2 },
            Process { pick: 12249950711284439415, how: Answer::Refuse(ErrorCode::ResourceLimit) },
            Connects { accept: false },
            Written { pick: 2748996367141879203 },
            Written { pick: 5705610262774981154 },
            Process { pick: 6787901554970152975, how: Answer::Normal },
            LoseStream { pick: 3092856573220067419, read: 1 },
            Process { pick: 18278842614136005056, how: Answer::Refuse(ErrorCode::ResourceLimit) },
            Calls { answer: false },
            Advance { ms: 250 },
            Step,
            Step,
            Process { pick: 9201722812566704129, how: Answer::Normal },
            Process { pick: 9481501230504326767, how: Answer::Normal },
            Process { pick: 3810470063670881021, how: Answer::Refuse(ErrorCode::InvalidProducerId) },
            Written { pick: 6301754109139165490 },
            Land { pick: 3252279642198271916 },
            Send { partition: 0, n: 1 },
            Connects { accept: true },
            Step,
            Process { pick: 10563908074645321828, how: Answer::Normal },
            Advance { ms: 1500 },
            Connects { accept: true },
            Advance { ms: 1500 },
            Land { pick: 3840213968867649429 },
            Connects { accept: true },
            Land { pick: 5322170222780039540 },
            Connects { accept: false },
            Advance { ms: 60 },
            Process { pick: 10283100666117282150, how: Answer::Refuse(ErrorCode::CorruptBatch) },
            Advance { ms: 250 },
            Calls { answer: true },
        ],
    );
}
