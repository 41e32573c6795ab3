//! The harness's live counters and latency histograms.
//!
//! Every acknowledged record's latency is recorded, but cheaply: completion callbacks run
//! on the producers' runtime threads, and each such thread writes its own [`Shard`] (found
//! through a thread-local, no reference count touched). A shard's lock is only ever
//! contended by the readers (the progress display, the timeline sampler, the end of the
//! run), a few times per second; the writer pays one uncontended lock and one histogram
//! write per record. The readers merge the shards.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use hdrhistogram::Histogram;

pub(crate) fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("bounds")
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One thread's figures. `interval` holds what was recorded since the timeline's last
/// sample; [`Stats::take_interval`] moves it into `total`.
struct Shard {
    acked: u64,
    interval: Histogram<u64>,
    total: Histogram<u64>,
    window_count: u64,
    window_sum_us: u64,
    window_max_us: u64,
}

impl Shard {
    fn new() -> Shard {
        Shard {
            acked: 0,
            interval: latency_histogram(),
            total: latency_histogram(),
            window_count: 0,
            window_sum_us: 0,
            window_max_us: 0,
        }
    }
}

thread_local! {
    /// This thread's shard of the [`Stats`] it last recorded into (keyed by its id).
    static SHARD: RefCell<Option<(u64, Arc<Mutex<Shard>>)>> = const { RefCell::new(None) };
}

/// Ids of [`Stats`] instances (a thread-local shard belongs to one of them).
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Live counters, readable while the run goes on (for progress output).
pub struct Stats {
    /// Records handed to producers (measured phase; generators add in steps of up to 256).
    pub sent: AtomicU64,
    /// Records failed (any phase).
    pub failed: AtomicU64,
    /// The total the run aims for (0 with a duration).
    pub target: AtomicU64,
    pub(super) measuring: AtomicBool,
    id: u64,
    shards: Mutex<Vec<Arc<Mutex<Shard>>>>,
    window_started: Mutex<Instant>,
    pub(super) first_error: Mutex<Option<String>>,
}

/// Latency and rate over the last reporting window.
#[derive(Debug, Clone, Copy)]
pub struct WindowStats {
    /// Records acknowledged in the window.
    pub records: u64,
    /// Window length.
    pub seconds: f64,
    /// Mean latency (ms).
    pub avg_ms: f64,
    /// Largest latency (ms).
    pub max_ms: f64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            target: AtomicU64::new(0),
            measuring: AtomicBool::new(false),
            id: NEXT_ID.fetch_add(1, Relaxed),
            shards: Mutex::new(Vec::new()),
            window_started: Mutex::new(Instant::now()),
            first_error: Mutex::new(None),
        }
    }
}

impl Stats {
    /// Counts one acknowledged record of the measured phase and its latency (µs), in the
    /// calling thread's shard.
    pub(crate) fn record_ack(&self, us: u64) {
        let key = self.id;
        SHARD.with(|cell| {
            let mut slot = cell.borrow_mut();
            if !matches!(&*slot, Some((k, _)) if *k == key) {
                let shard = Arc::new(Mutex::new(Shard::new()));
                lock(&self.shards).push(shard.clone());
                *slot = Some((key, shard));
            }
            let (_, shard) = slot.as_ref().expect("set above");
            let mut s = lock(shard);
            s.acked += 1;
            let _ = s.interval.record(us);
            s.window_count += 1;
            s.window_sum_us += us;
            s.window_max_us = s.window_max_us.max(us);
        });
    }

    fn each_shard(&self, mut f: impl FnMut(&mut Shard)) {
        for s in lock(&self.shards).iter() {
            f(&mut lock(s));
        }
    }

    /// Records acknowledged in the measured phase so far.
    pub fn acked(&self) -> u64 {
        let mut n = 0;
        self.each_shard(|s| n += s.acked);
        n
    }

    /// Takes the current window and starts a new one.
    pub fn take_window(&self) -> WindowStats {
        let (mut count, mut sum, mut max) = (0, 0, 0);
        let started = std::mem::replace(&mut *lock(&self.window_started), Instant::now());
        self.each_shard(|s| {
            count += std::mem::take(&mut s.window_count);
            sum += std::mem::take(&mut s.window_sum_us);
            max = max.max(std::mem::take(&mut s.window_max_us));
        });
        WindowStats {
            records: count,
            seconds: started.elapsed().as_secs_f64(),
            avg_ms: if count == 0 { 0.0 } else { sum as f64 / count as f64 / 1000.0 },
            max_ms: max as f64 / 1000.0,
        }
    }

    /// Takes the latencies (µs) recorded since the last call and starts afresh.
    pub fn take_interval(&self) -> Histogram<u64> {
        let mut out = latency_histogram();
        self.each_shard(|s| {
            out.add(&s.interval).expect("same bounds");
            s.total.add(&s.interval).expect("same bounds");
            s.interval.reset();
        });
        out
    }

    /// A copy of every measured latency so far (µs).
    pub fn latencies(&self) -> Histogram<u64> {
        let mut out = latency_histogram();
        self.each_shard(|s| {
            out.add(&s.total).expect("same bounds");
            out.add(&s.interval).expect("same bounds");
        });
        out
    }

    /// Whether warm-up is over.
    pub fn measuring(&self) -> bool {
        self.measuring.load(Relaxed)
    }

    pub(super) fn fail(&self, msg: String) {
        self.failed.fetch_add(1, Relaxed);
        let mut first = lock(&self.first_error);
        if first.is_none() {
            *first = Some(msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_of_several_threads_merge_and_intervals_move_to_the_total() {
        let stats = Arc::new(Stats::default());
        stats.record_ack(10);
        stats.record_ack(30);
        let other = stats.clone();
        std::thread::spawn(move || other.record_ack(1000)).join().unwrap();
        assert_eq!(stats.acked(), 3);
        let w = stats.take_window();
        assert_eq!(w.records, 3);
        assert_eq!(w.max_ms, 1.0);
        assert_eq!(stats.take_window().records, 0);
        let i = stats.take_interval();
        assert_eq!(i.len(), 3);
        assert_eq!(stats.take_interval().len(), 0);
        stats.record_ack(20);
        let all = stats.latencies();
        assert_eq!(all.len(), 4, "the total and the current interval");
        assert_eq!(all.max(), 1000);
        // A second Stats on the same thread gets its own shard.
        let fresh = Stats::default();
        fresh.record_ack(5);
        assert_eq!(fresh.acked(), 1);
        assert_eq!(stats.acked(), 4);
    }
}
