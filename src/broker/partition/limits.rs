//! Broker-wide bounds on the storage work that runs on tokio's blocking pool, shared by
//! every partition (they share one [`IoLimits`] through their [`PartitionConfig`]):
//!
//! - **batch checks** ([`CheckSlots`]): checking a produced batch decompresses its records
//!   (up to 32 MiB each). Each partition's owner checks one batch at a time, but many
//!   partitions' owners run at once; without a bound, a client producing to many
//!   partitions could make the broker hold a decompressed batch per blocking thread (up to
//!   512 of them). An owner takes a slot around each check, blocking its own thread (never
//!   the runtime) while the slots are taken.
//! - **reads** ([`IoLimits::reads`]): a fetch reads the log on the blocking pool; each read
//!   waits (asynchronously) for a permit first, so many fetches at once queue instead of
//!   occupying the pool and holding their batches in memory together.
//!
//! [`PartitionConfig`]: super::PartitionConfig

use std::sync::{Arc, Condvar, Mutex};

use tokio::sync::Semaphore;

/// Default most blocking reads at once, over all partitions: enough to keep a disk busy,
/// few enough that their buffers (up to `max_fetch_bytes` each) stay small.
pub const DEFAULT_CONCURRENT_READS: usize = 32;

/// The number of CPUs (at least 2): the default most batch checks at once. A check is CPU
/// work; more at once than cores only holds more decompressed batches.
pub fn default_concurrent_checks() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().max(2))
}

/// Broker-wide bounds on blocking storage work; clones share the bounds.
#[derive(Debug, Clone)]
pub struct IoLimits {
    /// Batch checks at once.
    pub checks: CheckSlots,
    /// Log reads at once (one permit each).
    pub reads: Arc<Semaphore>,
}

impl IoLimits {
    /// At most `checks` batch checks and `reads` log reads at once (each at least 1).
    pub fn new(checks: usize, reads: usize) -> IoLimits {
        IoLimits { checks: CheckSlots::new(checks), reads: Arc::new(Semaphore::new(reads.max(1))) }
    }
}

impl Default for IoLimits {
    /// [`default_concurrent_checks`] checks and [`DEFAULT_CONCURRENT_READS`] reads.
    fn default() -> Self {
        IoLimits::new(default_concurrent_checks(), DEFAULT_CONCURRENT_READS)
    }
}

/// A counting semaphore for blocking threads: the slots for batch checks.
#[derive(Debug, Clone)]
pub struct CheckSlots(Arc<Slots>);

#[derive(Debug)]
struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

/// A taken check slot; given back when dropped.
#[derive(Debug)]
pub(super) struct CheckSlot<'a>(&'a Slots);

impl CheckSlots {
    /// `n` slots (at least 1).
    pub fn new(n: usize) -> CheckSlots {
        CheckSlots(Arc::new(Slots { free: Mutex::new(n.max(1)), freed: Condvar::new() }))
    }

    /// Takes a slot, blocking the calling thread until one is free. Call it only off the
    /// async runtime (the partition's owner runs on the blocking pool).
    pub(super) fn take(&self) -> CheckSlot<'_> {
        let s = &*self.0;
        let mut free = s.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = s.freed.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        CheckSlot(s)
    }
}

impl Drop for CheckSlot<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    use std::time::{Duration, Instant};

    use bytes::Bytes;

    use crate::broker::metrics::BrokerMetrics;
    use crate::broker::partition::{AppendError, Partition, PartitionConfig};
    use crate::protocol::{BatchBuilder, BatchHeader, Compression, ErrorCode, ProducerStamp, Record};

    static INSIDE: AtomicUsize = AtomicUsize::new(0);
    static MOST: AtomicUsize = AtomicUsize::new(0);

    /// A batch check that stays inside until three are inside at once (or half a second
    /// has passed), recording the most inside at once.
    fn slow_check(batch: &Bytes) -> Result<BatchHeader, AppendError> {
        let now = INSIDE.fetch_add(1, SeqCst) + 1;
        MOST.fetch_max(now, SeqCst);
        let deadline = Instant::now() + Duration::from_millis(500);
        while INSIDE.load(SeqCst) < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        INSIDE.fetch_sub(1, SeqCst);
        crate::protocol::batch::check_batch(batch)
            .ok()
            .flatten()
            .ok_or_else(|| AppendError { code: ErrorCode::CorruptBatch, message: "not a batch".into() })
    }

    /// Checking a batch decompresses it (up to 32 MiB): the owners of many partitions
    /// used to check at once, one per blocking thread, without a bound.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batch_checks_of_every_partition_share_one_broker_wide_bound() {
        let cfg = PartitionConfig { limits: IoLimits::new(1, 4), ..PartitionConfig::default() };
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let partitions: Vec<Arc<Partition>> = dirs
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let metrics = Arc::new(BrokerMetrics::default());
                Arc::new(Partition::open(d.path(), Arc::from("t"), i as u32, cfg.clone(), metrics).unwrap().0)
            })
            .collect();
        let mut b = BatchBuilder::new();
        b.push(&Record { timestamp: 1, key: None, value: Some(Bytes::from_static(b"v")), headers: vec![] });
        let batch = b.seal(Compression::None, None, ProducerStamp::NONE);
        let appends = partitions.iter().map(|p| {
            let (p, batch) = (p.clone(), batch.clone());
            tokio::spawn(async move { p.append(batch, 0, false, slow_check, None).await })
        });
        for a in appends.collect::<Vec<_>>() {
            a.await.unwrap().unwrap();
        }
        assert_eq!(MOST.load(SeqCst), 1, "batch checks ran beside each other beyond the bound");
    }

    /// Each fetch started a blocking read at once: many fetches occupied the blocking
    /// pool and held their batches together.
    #[tokio::test]
    async fn a_log_read_waits_for_a_broker_wide_read_slot() {
        let cfg = PartitionConfig { limits: IoLimits::new(2, 1), ..PartitionConfig::default() };
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(BrokerMetrics::default());
        let p = Arc::new(Partition::open(dir.path(), Arc::from("t"), 0, cfg.clone(), metrics).unwrap().0);
        let mut b = BatchBuilder::new();
        b.push(&Record { timestamp: 1, key: None, value: Some(Bytes::from_static(b"v")), headers: vec![] });
        let check = |b: &Bytes| {
            crate::protocol::batch::check_batch(b)
                .ok()
                .flatten()
                .ok_or_else(|| AppendError { code: ErrorCode::CorruptBatch, message: "not a batch".into() })
        };
        p.append(b.seal(Compression::None, None, ProducerStamp::NONE), 0, false, check, None).await.unwrap();
        p.flush_blocking().unwrap();
        let slot = cfg.limits.reads.clone().acquire_owned().await.unwrap();
        let read = tokio::spawn({
            let p = p.clone();
            async move { p.read(0, 1 << 20, Duration::ZERO).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!read.is_finished(), "read without a slot");
        drop(slot);
        assert!(!read.await.unwrap().unwrap().batches.is_empty());
    }

    #[test]
    fn check_slots_bound_how_many_threads_hold_one_at_once() {
        let slots = CheckSlots::new(2);
        let (inside, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let (slots, inside, most) = (slots.clone(), inside.clone(), most.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let _slot = slots.take();
                        let now = inside.fetch_add(1, SeqCst) + 1;
                        most.fetch_max(now, SeqCst);
                        std::thread::yield_now();
                        inside.fetch_sub(1, SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(most.load(SeqCst) <= 2);
        assert_eq!(*slots.0.free.lock().unwrap(), 2, "every slot given back");
    }
}
