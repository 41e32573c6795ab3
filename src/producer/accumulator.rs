//! The record accumulator: per-partition lock-free queues that `send` pushes into and the
//! driver drains into batches.
//!
//! Enqueue never takes a lock shared across partitions: the topic table is read through
//! an `ArcSwap` (one atomic load), the record is pushed onto its partition's
//! `crossbeam_queue::SegQueue`, and the partition's byte count is a padded atomic. The
//! driver is woken only when a partition goes from empty to non-empty (its linger clock
//! starts) or crosses `batch_size` (a batch is ready).
//!
//! Invariant: a record is pushed before its bytes are added to `queued_bytes`, and the
//! driver pops a record before subtracting its bytes, so `queued_bytes > 0` whenever a
//! record may be waiting, and a partition that was announced ready stays findable.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use crossbeam_queue::SegQueue;
use crossbeam_utils::CachePadded;
use rustc_hash::FxHashMap;
use tokio::sync::{oneshot, Notify, Semaphore};

use super::clock::Tick;
use super::error::ProduceError;
use super::record::RecordMetadata;
use bytes::Bytes;

use crate::protocol::Record;

/// A completion callback.
pub type Callback = Box<dyn FnOnce(Result<RecordMetadata, ProduceError>) + Send + 'static>;

/// One record's outcome.
pub(crate) type Outcome = Result<RecordMetadata, ProduceError>;

/// Results of a batch send, one per record in the order given.
pub(crate) struct BatchResults {
    /// Outcomes so far and how many are still missing.
    slots: Mutex<(Vec<Option<Outcome>>, usize)>,
    done: Option<Mutex<Option<oneshot::Sender<Vec<Outcome>>>>>,
}

impl BatchResults {
    pub(crate) fn new(n: usize) -> (Arc<Self>, oneshot::Receiver<Vec<Outcome>>) {
        let (tx, rx) = oneshot::channel();
        let me =
            BatchResults { slots: Mutex::new(((0..n).map(|_| None).collect(), n)), done: Some(Mutex::new(Some(tx))) };
        (Arc::new(me), rx)
    }

    fn set(&self, i: usize, r: Result<RecordMetadata, ProduceError>) {
        let mut g = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if g.0[i].is_none() {
            g.0[i] = Some(r);
            g.1 -= 1;
        }
        if g.1 == 0 {
            let results = std::mem::take(&mut g.0).into_iter().map(|r| r.expect("all set")).collect();
            drop(g);
            if let Some(tx) = self.done.as_ref().and_then(|m| m.lock().unwrap_or_else(|p| p.into_inner()).take()) {
                let _ = tx.send(results);
            }
        }
    }
}

/// Where a record's outcome goes.
pub(crate) enum Delivery {
    /// A `send`/`enqueue` future.
    Future(oneshot::Sender<Result<RecordMetadata, ProduceError>>),
    /// A user callback (called on the driver task: keep it short).
    Callback(Callback),
    /// One slot of a batch send.
    Batch(Arc<BatchResults>, usize),
}

impl Delivery {
    /// Delivers the outcome exactly once.
    pub(crate) fn complete(self, r: Result<RecordMetadata, ProduceError>) {
        match self {
            Delivery::Future(tx) => {
                let _ = tx.send(r);
            }
            Delivery::Callback(cb) => cb(r),
            Delivery::Batch(b, i) => b.set(i, r),
        }
    }
}

/// A record waiting in a partition queue.
pub(crate) struct QueuedRecord {
    pub record: Record,
    /// Bytes charged against buffer memory (its encoded size estimate).
    pub size: usize,
    pub delivery: Delivery,
    pub enqueued: Tick,
}

/// One partition's queue.
#[derive(Default)]
pub(crate) struct PartitionQueue {
    pub queue: SegQueue<QueuedRecord>,
    pub queued_bytes: CachePadded<AtomicUsize>,
}

/// A topic's queues, published through the topic table.
pub(crate) struct TopicQueues {
    /// Index of this topic in the driver's tables.
    pub id: u32,
    pub name: Arc<str>,
    pub partitions: Vec<Arc<PartitionQueue>>,
}

/// The state shared by producer handles and the driver.
pub(crate) struct Accumulator {
    topics: ArcSwap<FxHashMap<Arc<str>, Arc<TopicQueues>>>,
    /// Partitions that need the driver's attention: (topic id, partition).
    pub ready: SegQueue<(u32, u32)>,
    /// Wakes the driver.
    pub wake: Notify,
    /// Buffer memory, in bytes.
    pub memory: Semaphore,
    batch_size: usize,
}

impl Accumulator {
    pub(crate) fn new(buffer_memory: usize, batch_size: usize) -> Self {
        Accumulator {
            topics: ArcSwap::from_pointee(FxHashMap::default()),
            ready: SegQueue::new(),
            wake: Notify::new(),
            memory: Semaphore::new(buffer_memory),
            batch_size,
        }
    }

    /// The topic's queues, if its metadata is known.
    pub(crate) fn topic(&self, name: &str) -> Option<Arc<TopicQueues>> {
        self.topics.load().get(name).cloned()
    }

    /// Publishes (or replaces) a topic's queues. Only the driver calls this.
    pub(crate) fn publish(&self, t: Arc<TopicQueues>) {
        self.topics.rcu(|m| {
            let mut m = FxHashMap::clone(m);
            m.insert(t.name.clone(), t.clone());
            m
        });
    }

    /// Appends a record to its partition's queue and wakes the driver when needed.
    pub(crate) fn push(&self, topic: &TopicQueues, partition: u32, rec: QueuedRecord) {
        let q = &topic.partitions[partition as usize];
        let size = rec.size;
        q.queue.push(rec);
        let before = q.queued_bytes.fetch_add(size, Ordering::AcqRel);
        if before == 0 || (before < self.batch_size && before + size >= self.batch_size) {
            self.ready.push((topic.id, partition));
            self.wake.notify_one();
        }
    }

    /// Gives buffer memory back.
    pub(crate) fn release(&self, bytes: usize) {
        if bytes > 0 {
            self.memory.add_permits(bytes);
        }
    }
}

/// Encoded-size estimate charged for a record: its body plus varint and header overhead.
pub(crate) fn record_size(key: Option<&Bytes>, value: Option<&Bytes>, headers: &[crate::protocol::Header]) -> usize {
    let k = key.map_or(0, |k| k.len());
    let v = value.map_or(0, |v| v.len());
    let h: usize = headers.iter().map(|h| h.key.len() + h.value.as_ref().map_or(0, |v| v.len()) + 10).sum();
    k + v + h + 21
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: usize) -> QueuedRecord {
        QueuedRecord {
            record: Record { timestamp: 0, key: None, value: Some(Bytes::from(vec![0; n])), headers: vec![] },
            size: n,
            delivery: Delivery::Callback(Box::new(|_| {})),
            enqueued: Tick::now(),
        }
    }

    #[test]
    fn the_driver_is_told_on_first_record_and_on_crossing_batch_size_only() {
        let acc = Accumulator::new(1 << 20, 100);
        let t = Arc::new(TopicQueues { id: 3, name: "t".into(), partitions: vec![Arc::default(), Arc::default()] });
        acc.publish(t.clone());
        acc.push(&t, 1, rec(40));
        acc.push(&t, 1, rec(40));
        assert_eq!(acc.ready.len(), 1, "second record neither first nor crossing");
        acc.push(&t, 1, rec(40));
        assert_eq!(acc.ready.len(), 2, "crossed batch_size");
        acc.push(&t, 1, rec(40));
        assert_eq!(acc.ready.len(), 2);
        assert_eq!(acc.ready.pop(), Some((3, 1)));
        assert_eq!(t.partitions[1].queued_bytes.load(Ordering::Relaxed), 160);
        assert!(acc.topic("t").is_some() && acc.topic("u").is_none());
    }

    #[test]
    fn batch_results_resolve_once_all_slots_are_set() {
        let (b, mut rx) = BatchResults::new(2);
        Delivery::Batch(b.clone(), 1).complete(Err(ProduceError::new(
            super::super::error::ErrorKind::Closed,
            super::super::error::Persistence::NotPersisted,
            "x",
        )));
        assert!(rx.try_recv().is_err());
        Delivery::Batch(b, 0).complete(Ok(RecordMetadata {
            topic: "t".into(),
            partition: 0,
            offset: Some(1),
            timestamp: 0,
        }));
        let r = rx.try_recv().unwrap();
        assert!(r[0].is_ok() && r[1].is_err());
    }

    #[test]
    fn concurrent_pushes_keep_per_thread_order_within_a_partition() {
        let acc = Arc::new(Accumulator::new(1 << 30, 1 << 20));
        let t = Arc::new(TopicQueues { id: 0, name: "t".into(), partitions: vec![Arc::default()] });
        let handles: Vec<_> = (0..4)
            .map(|th| {
                let (acc, t) = (acc.clone(), t.clone());
                std::thread::spawn(move || {
                    for i in 0..10_000i64 {
                        let mut r = rec(1);
                        r.record.timestamp = th * 1_000_000 + i;
                        acc.push(&t, 0, r);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let mut last = [-1i64; 4];
        let mut n = 0;
        while let Some(r) = t.partitions[0].queue.pop() {
            let (th, i) = ((r.record.timestamp / 1_000_000) as usize, r.record.timestamp % 1_000_000);
            assert!(i > last[th], "thread {th} reordered");
            last[th] = i;
            n += 1;
        }
        assert_eq!(n, 40_000);
    }
}
