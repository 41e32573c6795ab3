//! The record accumulator: per-partition lock-free queues that `send` pushes into and the
//! driver drains into batches.
//!
//! Enqueue never takes a lock shared across partitions: the topic table is read through
//! an `ArcSwap` (one atomic load), the record is pushed onto its partition's
//! `crossbeam_queue::SegQueue`, and the partition's byte count is a padded atomic. The
//! driver is woken only when a partition goes from empty to non-empty (its linger clock
//! starts) or crosses `batch_size` (a batch is ready).
//!
//! Invariant: a record is pushed before its bytes are added to `counts.bytes`, and the
//! driver pops a record before subtracting its bytes, so `counts.bytes > 0` whenever a
//! record may be waiting, and a partition that was announced ready stays findable.
//!
//! Flush points: each partition counts the records ever pushed to it (`counts.pushed`,
//! counted *before* the push), and the driver counts the records it popped. A record whose
//! `send` returned before `flush()` was called was counted before the flush read the
//! counts, and so was every record ahead of it in the queue (each was counted before it
//! was pushed, and pushed before it): the first `pushed` records popped from a partition
//! include every record enqueued before the flush ([`FlushPoint`]).
//!
//! Closing (the driver ends): no record may be left in a queue nobody drains. A pusher
//! pushes, adds its bytes to `counts.bytes` (SeqCst), then reads `closed` (SeqCst); the
//! driver sets `closed` (SeqCst), then reads each `counts.bytes` (SeqCst) and drains. In the
//! single total order of those SeqCst operations either the driver's read comes after the
//! pusher's add (the driver sees the record and fails it) or the pusher's read of `closed`
//! comes after the driver's store (the pusher drains and fails it itself). Both may drain
//! the same queue: each record is popped once.
//!
//! Buffer memory is charged per record as its encoded size plus [`RECORD_OVERHEAD`], the
//! memory a queued record costs beyond its bytes (the queued record, its delivery and the
//! bookkeeping that follows it into an in-flight batch).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;
use crossbeam_queue::SegQueue;
use crossbeam_utils::CachePadded;
use rustc_hash::FxHashMap;
use tokio::sync::{Notify, Semaphore};

use super::clock::Tick;
use super::delivery::Delivery;
use super::error::ProduceError;
use bytes::Bytes;

use crate::protocol::Record;

/// Buffer memory charged per record on top of its encoded size. While queued a record costs
/// its queue slot (~160 bytes: the record's fields, its delivery handle, sizes, enqueue
/// time) and its delivery's shared state (a oneshot, ~100 bytes, or a boxed callback);
/// once sealed, its entry in the batch's record list (~40 bytes) and the delivery's state.
/// The larger of the two, rounded.
pub const RECORD_OVERHEAD: usize = 256;

/// A record waiting in a partition queue.
pub(crate) struct QueuedRecord {
    pub record: Record,
    /// Its encoded size estimate (what counts towards `batch_size`).
    pub size: usize,
    /// Bytes charged against buffer memory (size plus overhead).
    pub charge: usize,
    pub delivery: Delivery,
    pub enqueued: Tick,
}

/// One partition's queue.
#[derive(Default)]
pub(crate) struct PartitionQueue {
    pub queue: SegQueue<QueuedRecord>,
    /// Both change with every push: one cache line.
    pub counts: CachePadded<QueueCounts>,
}

/// A partition queue's counters.
#[derive(Default)]
pub(crate) struct QueueCounts {
    /// Encoded bytes queued (see the module docs' invariant).
    pub bytes: AtomicUsize,
    /// Records ever pushed (see the module docs on flush points).
    pub pushed: AtomicU64,
}

/// Most topics waiting for metadata at once: beyond that a `try_send` to yet another
/// unknown topic is refused without asking (and the core refuses a `send`'s request).
pub(crate) const MAX_PENDING_TOPICS: usize = 1024;

/// What a `try_send` to an unknown topic should do about its metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MetadataAsk {
    /// Ask the driver (nobody asked for this topic since its last answer).
    Ask,
    /// A request for it is pending already: nothing to send.
    Pending,
    /// [`MAX_PENDING_TOPICS`] topics are pending: refuse the record.
    Full,
}

/// Records enqueued before a `flush()`/`close()` call: (topic id, partition, how many of
/// the partition's records, counted from its first), for every partition that had any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FlushPoint(pub Vec<(u32, u32, u64)>);

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
    /// Set once when the driver ends; see the module docs.
    closed: CachePadded<AtomicBool>,
    /// Why it ended (the error queued and later records get).
    close_reason: OnceLock<ProduceError>,
    /// Topics a `try_send` asked the driver for and that have no answer yet: one request
    /// per topic is enough, so a `try_send` loop on an unknown topic sends one command, not
    /// one per call (the command channel is bounded by this). Only the slow path (an
    /// unknown topic) takes the lock.
    metadata_wanted: Mutex<HashSet<Arc<str>>>,
}

impl Accumulator {
    pub(crate) fn new(buffer_memory: usize, batch_size: usize) -> Self {
        Accumulator {
            topics: ArcSwap::from_pointee(FxHashMap::default()),
            ready: SegQueue::new(),
            wake: Notify::new(),
            memory: Semaphore::new(buffer_memory),
            batch_size,
            closed: CachePadded::new(AtomicBool::new(false)),
            close_reason: OnceLock::new(),
            metadata_wanted: Mutex::new(HashSet::new()),
        }
    }

    /// A `try_send` found no queues for `topic`: whether to ask the driver for them.
    pub(crate) fn ask_metadata(&self, topic: &Arc<str>) -> MetadataAsk {
        let mut wanted = self.metadata_wanted.lock().unwrap_or_else(|p| p.into_inner());
        if wanted.contains(topic) {
            MetadataAsk::Pending
        } else if wanted.len() >= MAX_PENDING_TOPICS {
            MetadataAsk::Full
        } else {
            wanted.insert(topic.clone());
            MetadataAsk::Ask
        }
    }

    /// The driver settled `topic`'s metadata request (answered, failed, or refused): the
    /// next `try_send` to it may ask again.
    pub(crate) fn metadata_settled(&self, topic: &str) {
        self.metadata_wanted.lock().unwrap_or_else(|p| p.into_inner()).remove(topic);
    }

    /// Every metadata request is settled (the driver is stopping).
    pub(crate) fn metadata_settled_all(&self) {
        self.metadata_wanted.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// The error records get once the driver has ended, if it has.
    pub(crate) fn closed(&self) -> Option<ProduceError> {
        if self.closed.load(Ordering::Acquire) {
            self.close_reason.get().cloned()
        } else {
            None
        }
    }

    /// The driver ends: from now on every record pushed fails with `reason`, waiters for
    /// buffer memory are woken with an error, and the records still queued are returned
    /// for the caller to fail.
    pub(crate) fn close(&self, reason: ProduceError) -> Vec<QueuedRecord> {
        let _ = self.close_reason.set(reason);
        self.closed.store(true, Ordering::SeqCst);
        self.memory.close();
        let mut out = Vec::new();
        for t in self.topics.load().values() {
            for q in &t.partitions {
                out.extend(Self::drain(q));
            }
        }
        out
    }

    fn drain(q: &PartitionQueue) -> Vec<QueuedRecord> {
        let mut out = Vec::new();
        if q.counts.bytes.load(Ordering::SeqCst) > 0 {
            while let Some(r) = q.queue.pop() {
                q.counts.bytes.fetch_sub(r.size, Ordering::AcqRel);
                out.push(r);
            }
        }
        out
    }

    /// The flush point now: how many records each partition has been given so far.
    pub(crate) fn flush_point(&self) -> FlushPoint {
        let mut out = Vec::new();
        for t in self.topics.load().values() {
            for (p, q) in t.partitions.iter().enumerate() {
                let n = q.counts.pushed.load(Ordering::SeqCst);
                if n > 0 {
                    out.push((t.id, p as u32, n));
                }
            }
        }
        FlushPoint(out)
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

    /// Appends a record to its partition's queue and wakes the driver when needed. If the
    /// driver has ended, the record (and anything else left in the queue) fails at once.
    pub(crate) fn push(&self, topic: &TopicQueues, partition: u32, rec: QueuedRecord) {
        let q = &topic.partitions[partition as usize];
        let size = rec.size;
        // Counted before it is pushed (see the module docs on flush points).
        q.counts.pushed.fetch_add(1, Ordering::SeqCst);
        q.queue.push(rec);
        let before = q.counts.bytes.fetch_add(size, Ordering::SeqCst);
        if self.closed.load(Ordering::SeqCst) {
            let err = self.close_reason.get().cloned().unwrap_or_else(super::delivery::stopped_error);
            for r in Self::drain(q) {
                r.delivery.complete(Err(err.clone().with_persistence(super::error::Persistence::NotPersisted)));
            }
            return;
        }
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
            charge: n,
            delivery: Delivery::callback(Box::new(|_| {})),
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
        assert_eq!(t.partitions[1].counts.bytes.load(Ordering::Relaxed), 160);
        assert!(acc.topic("t").is_some() && acc.topic("u").is_none());
    }

    #[test]
    fn records_pushed_after_close_fail_at_once_and_queued_ones_are_handed_back() {
        let acc = Accumulator::new(1 << 20, 100);
        let t = Arc::new(TopicQueues { id: 0, name: "t".into(), partitions: vec![Arc::default()] });
        acc.publish(t.clone());
        acc.push(&t, 0, rec(10));
        let err = ProduceError::new(
            super::super::error::ErrorKind::Fenced,
            super::super::error::Persistence::NotPersisted,
            "x",
        );
        let left = acc.close(err);
        assert_eq!(left.len(), 1);
        assert_eq!(acc.closed().unwrap().kind(), super::super::error::ErrorKind::Fenced);
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let mut r = rec(5);
        r.delivery = Delivery::future(tx);
        acc.push(&t, 0, r);
        assert_eq!(rx.try_recv().unwrap().unwrap_err().kind(), super::super::error::ErrorKind::Fenced);
        assert_eq!(t.partitions[0].counts.bytes.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_topic_is_asked_for_once_until_the_driver_settles_it() {
        let acc = Accumulator::new(1 << 20, 100);
        let t: Arc<str> = "t".into();
        assert_eq!(acc.ask_metadata(&t), MetadataAsk::Ask);
        for _ in 0..1000 {
            assert_eq!(acc.ask_metadata(&t), MetadataAsk::Pending, "one request per topic");
        }
        acc.metadata_settled("t");
        assert_eq!(acc.ask_metadata(&t), MetadataAsk::Ask, "asked again after the answer");
        for i in 1..MAX_PENDING_TOPICS {
            assert_eq!(acc.ask_metadata(&format!("t{i}").into()), MetadataAsk::Ask);
        }
        assert_eq!(acc.ask_metadata(&"one-more".into()), MetadataAsk::Full);
        acc.metadata_settled_all();
        assert_eq!(acc.ask_metadata(&"one-more".into()), MetadataAsk::Ask);
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
