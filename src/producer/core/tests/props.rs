//! Property: for any interleaving of sends, answers (normal, refused before the dedup
//! lookup, appended but unconfirmed, lost), connection and stream losses, control requests
//! answered or dropped, and time jumps, every record gets exactly one outcome, no record
//! is acknowledged unless stored exactly once at the acknowledged offset, no record is
//! stored twice (under two sequence numbers), "not persisted" records are absent, and each
//! partition's log keeps send order. Runs in the default `cargo test`.

use std::time::Duration;

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
enum Op {
    Send { partition: u32, n: usize },
    Step,
    Process { pick: usize, how: Answer },
    LoseConnection { pick: usize },
    LoseStream { pick: usize },
    Advance { ms: u64 },
    Connects { accept: bool },
    Calls { answer: bool },
    Flush,
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        8 => Just(Answer::Normal),
        2 => Just(Answer::Lost),
        1 => Just(Answer::TimedOutAfterAppend),
        1 => Just(Answer::Refuse(ErrorCode::ResourceLimit)),
        1 => Just(Answer::Refuse(ErrorCode::CorruptBatch)),
        1 => Just(Answer::Refuse(ErrorCode::StorageError)),
        1 => Just(Answer::Refuse(ErrorCode::UnknownTopicOrPartition)),
        1 => Just(Answer::Refuse(ErrorCode::AuthorizationFailed)),
        1 => Just(Answer::Refuse(ErrorCode::BatchTooLarge)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u32..3, 1usize..4).prop_map(|(partition, n)| Op::Send { partition, n }),
        3 => Just(Op::Step),
        8 => (any::<usize>(), answer()).prop_map(|(pick, how)| Op::Process { pick, how }),
        1 => any::<usize>().prop_map(|pick| Op::LoseConnection { pick }),
        1 => any::<usize>().prop_map(|pick| Op::LoseStream { pick }),
        3 => prop_oneof![Just(1u64), Just(60), Just(250), Just(1500), Just(4000)].prop_map(|ms| Op::Advance { ms }),
        2 => any::<bool>().prop_map(|accept| Op::Connects { accept }),
        2 => prop_oneof![4 => Just(true), 1 => Just(false)].prop_map(|answer| Op::Calls { answer }),
        1 => Just(Op::Flush),
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
}

/// Connection and frame settings a case runs with.
#[derive(Debug, Clone, Copy)]
struct Shape {
    connections: usize,
    streams: usize,
    /// The frame limit the broker announces (small: batches are clamped and split).
    max_frame: usize,
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        3 => Just(Shape { connections: 1, streams: 8, max_frame: crate::protocol::MAX_FRAME_SIZE }),
        1 => Just(Shape { connections: 2, streams: 1, max_frame: crate::protocol::MAX_FRAME_SIZE }),
        1 => Just(Shape { connections: 1, streams: 2, max_frame: 300 }),
    ]
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![
        Just(Mode {
            idempotent: true,
            per_partition_epochs: false,
            rule: EpochRule::PerPartition,
            strict_bumps: false
        }),
        Just(Mode { idempotent: true, per_partition_epochs: false, rule: EpochRule::Strict, strict_bumps: true }),
        Just(Mode { idempotent: true, per_partition_epochs: false, rule: EpochRule::DedupFirst, strict_bumps: false }),
        Just(Mode { idempotent: true, per_partition_epochs: true, rule: EpochRule::DedupFirst, strict_bumps: false }),
        // The issue-9 broker: per-partition epochs announced, repeated bumps refused.
        Just(Mode { idempotent: true, per_partition_epochs: true, rule: EpochRule::DedupFirst, strict_bumps: true }),
        Just(Mode { idempotent: true, per_partition_epochs: true, rule: EpochRule::PerPartition, strict_bumps: false }),
        Just(Mode {
            idempotent: false,
            per_partition_epochs: false,
            rule: EpochRule::PerPartition,
            strict_bumps: false
        }),
    ]
}

fn run(mode: Mode, ops: &[Op]) {
    run_shaped(mode, Shape { connections: 1, streams: 8, max_frame: crate::protocol::MAX_FRAME_SIZE }, ops)
}

fn run_shaped(mode: Mode, shape: Shape, ops: &[Op]) {
    let fixed = |ms| crate::producer::config::Backoff {
        base: Duration::from_millis(ms),
        max: Duration::from_millis(ms * 4),
        jitter: 0.0,
    };
    let cfg = ProducerConfig {
        idempotence: mode.idempotent,
        max_in_flight: if mode.idempotent { 5 } else { 1 },
        batch_size: 256,
        linger: Duration::from_millis(1),
        request_timeout: Duration::from_secs(2),
        delivery_timeout: Duration::from_secs(8),
        retry_backoff: fixed(50),
        reconnect_backoff: fixed(20),
        connections_per_broker: shape.connections,
        streams_per_connection: shape.streams,
        ..config()
    };
    let mut s = Sim::with_rule(cfg, mode.rule);
    s.broker.strict_bumps = mode.strict_bumps;
    s.per_partition_epochs = mode.per_partition_epochs;
    s.max_frame = shape.max_frame;
    // Flushes: records enqueued before each, and where its result goes.
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
            Op::LoseConnection { pick } => {
                let conns = s.conns();
                if !conns.is_empty() {
                    s.lose(conns[pick % conns.len()]);
                }
            }
            Op::LoseStream { pick } => {
                let busy = s.busy_streams();
                if !busy.is_empty() {
                    let st = busy[pick % busy.len()];
                    s.streams.remove(&st);
                    let addr = "127.0.0.1:1".parse().unwrap();
                    let e = TransportError::StreamClosed { addr, detail: "scripted".into() };
                    s.core.handle_stream_lost(s.now, st, e);
                    s.collect();
                }
            }
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
            Op::Flush => {
                // As the shell does: the command, then the decisions due (nothing between).
                let pending: Vec<u64> = (0..s.sent.len() as u64).filter(|id| s.outcome(*id).is_none()).collect();
                let (tx, rx) = tokio::sync::oneshot::channel();
                s.core.handle_flush(s.now, tx);
                s.step();
                flushes.push((pending, rx));
            }
        }
    }
    // Quiet network from here on: everything resolves within the delivery timeout.
    s.settle(2_000);
    s.check();
    assert_eq!(s.outcomes.lock().unwrap().len(), s.sent.len(), "every record has exactly one outcome");
    // A flush is Ok exactly when every record still waiting when it was called was
    // acknowledged.
    for (pending, mut rx) in flushes {
        let result = rx.try_recv().expect("every flush was answered");
        let all_acked = pending.iter().all(|id| s.outcome(*id).is_some_and(|r| r.is_ok()));
        assert_eq!(result.is_ok(), all_acked, "flush covering {pending:?}: {result:?}");
    }
    assert!(s.core.is_idle());
    assert_eq!(s.acc.memory.available_permits(), s.core.config().buffer_memory, "all buffer memory was given back");
}

proptest! {
    // QWIRE_PROPTEST_CASES=5000 for a longer search.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("QWIRE_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(128),
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
    let pp2 = Mode { idempotent: true, per_partition_epochs: true, rule: EpochRule::DedupFirst, strict_bumps: false };
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
    let global =
        Mode { idempotent: true, per_partition_epochs: false, rule: EpochRule::PerPartition, strict_bumps: false };
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
            LoseConnection { pick: 0 },
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
            LoseStream { pick: 0 },
            Advance { ms: 250 },
            Process { pick: 3506253662756431380, how: Answer::Normal },
            Process { pick: 6366704508107926172, how: Answer::Normal },
            Process { pick: 5952152619460209578, how: Answer::Refuse(ErrorCode::BatchTooLarge) },
            Send { partition: 0, n: 1 },
        ],
    );
    let pp = Mode { idempotent: true, per_partition_epochs: true, rule: EpochRule::DedupFirst, strict_bumps: false };
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
            LoseStream { pick: 0 },
            Advance { ms: 1 },
            Process { pick: 0, how: Answer::Normal },
            Send { partition: 0, n: 1 },
        ],
    );
}

#[test]
fn regression_acked_twice() {
    use Op::*;
    let global =
        Mode { idempotent: true, per_partition_epochs: false, rule: EpochRule::PerPartition, strict_bumps: false };
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
