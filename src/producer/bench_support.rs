//! Hooks for the criterion benches in `benches/` (not a stable API).

use std::sync::Arc;

use super::accumulator::{Accumulator, PartitionQueue, QueuedRecord, TopicQueues};
use super::clock::Tick;
use super::core::window::Window;
use super::delivery::Delivery;
use crate::protocol::Record;

/// An accumulator with one topic of `partitions` partitions.
pub struct Queues {
    acc: Accumulator,
    topic: Arc<TopicQueues>,
}

impl Queues {
    /// A new accumulator.
    pub fn new(partitions: u32) -> Queues {
        let topic = Arc::new(TopicQueues {
            id: 0,
            name: "bench".into(),
            partitions: (0..partitions).map(|_| Arc::new(PartitionQueue::default())).collect(),
        });
        let acc = Accumulator::new(usize::MAX >> 4, 64 * 1024);
        acc.publish(topic.clone());
        Queues { acc, topic }
    }

    /// Enqueues like `send` does after partitioning (topic lookup included).
    pub fn push(&self, partition: u32, record: Record) {
        let t = self.acc.topic("bench").expect("published");
        let size = super::accumulator::record_size(record.key.as_ref(), record.value.as_ref(), &record.headers);
        let q = QueuedRecord {
            record,
            size,
            charge: size,
            delivery: Delivery::callback(Box::new(|_| {})),
            enqueued: Tick::now(),
        };
        self.acc.push(&t, partition, q);
    }

    /// Pops everything queued (as the driver does when sealing); returns the count.
    pub fn drain(&self) -> usize {
        let mut n = 0;
        while self.acc.ready.pop().is_some() {}
        for q in &self.topic.partitions {
            while let Some(r) = q.queue.pop() {
                q.counts.bytes.fetch_sub(r.size, std::sync::atomic::Ordering::AcqRel);
                r.delivery.complete(Err(super::core::closed_error()));
                n += 1;
            }
        }
        n
    }
}

/// One partition window's full cycle for `batches` batches: push, send, acknowledge
/// the oldest in-flight batch whenever five are in flight (as responses arrive in
/// order on a stream).
pub fn window_cycle(batches: u32) -> u64 {
    let now = Tick::now();
    let stream = super::core::StreamId { conn: super::core::ConnId { link: 0, slot: 0, gen: 1 }, index: 0, gen: 0 };
    let mut w = Window::new(true, 5);
    let mut in_flight = std::collections::VecDeque::new();
    let mut acked = 0u64;
    let mut corr = 0u32;
    for id in 0..batches {
        w.push(u64::from(id), 100, id, now);
        while let Some(i) = w.next_sendable(now, stream, false) {
            w.mark_sent(i, corr, stream, Some((1, 0)), now);
            in_flight.push_back(corr);
            corr += 1;
        }
        if in_flight.len() == 5 {
            let c = in_flight.pop_front().expect("five in flight");
            acked += u64::from(w.ack(c).expect("in flight").records);
        }
    }
    while let Some(c) = in_flight.pop_front() {
        acked += u64::from(w.ack(c).expect("in flight").records);
    }
    acked
}
