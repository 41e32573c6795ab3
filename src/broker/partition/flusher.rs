//! Group commit and recovery from a failed fsync: the flusher task, its sync rounds, the
//! in-place cut, and the final flush at shutdown.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use super::{now_ms, snapshot, Partition, State};
use crate::broker::log::{LogError, PartitionLog};
use crate::broker::metrics::{add, inc};

impl Partition {
    /// The group-commit loop: waits for sync requests (acks=all waiters, fetches at the
    /// durable end, segment rolls) and serves each with one round, until the partition is
    /// dropped. It sleeps until asked; only while the log is failed does it also wake
    /// about once a second to try to make it writable again. Between rounds it holds no
    /// strong reference to the partition, whose drop wakes it to end.
    pub fn spawn_flusher(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let wanted = Arc::clone(&self.sync_wanted);
        tokio::spawn(async move {
            loop {
                let failed = match weak.upgrade() {
                    Some(p) => p.is_failed(),
                    None => return,
                };
                // Every path that fails the log also asks for a round, so a healthy log
                // needs no timer.
                if failed {
                    tokio::select! {
                        _ = wanted.notified() => {}
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                } else {
                    wanted.notified().await;
                }
                let Some(p) = weak.upgrade() else { return };
                p.flusher_wakeups.fetch_add(1, Relaxed);
                if p.is_failed() {
                    p.try_recover().await;
                    continue;
                }
                let q = Arc::clone(&p);
                if let Ok(true) = tokio::task::spawn_blocking(move || q.sync_round()).await {
                    inc(&p.metrics.fsyncs);
                }
            }
        });
    }

    /// One group-commit round on the calling thread (blocking): plan under the lock,
    /// fsync outside it, publish the new durable end. Returns whether a round ran and
    /// succeeded (a failure is counted in `fsync_failures` and fails the log).
    pub fn sync_round(&self) -> bool {
        let _turn = self.round_turn();
        let (plan, snapshot, generation) = {
            let mut st = self.lock();
            let plan = st.log.sync_plan();
            let snapshot = if plan.as_ref().is_some_and(|p| p.includes_sealed()) { st.snapshot.take() } else { None };
            (plan, snapshot, st.generation)
        };
        let Some(plan) = plan else { return false };
        let started = std::time::Instant::now();
        let ran = plan.run();
        self.metrics.detail.fsync_latency.observe(crate::broker::telemetry::seconds_since(started));
        match ran {
            Ok(done) => {
                if let Some((offset, producers)) = snapshot {
                    // Cuts are made by this same task (`recover_blocking`), never between
                    // the plan and here, so the snapshot still matches the log.
                    snapshot::write(&self.dir, offset, &producers, &self.config.syncer);
                }
                let mut st = self.lock();
                if st.generation == generation {
                    st.log.synced(&done);
                    let end = st.log.durable_offset();
                    self.publish_shape(&st);
                    self.durable.send_modify(|d| d.end = d.end.max(end));
                }
                true
            }
            Err(e) => {
                self.fail_sync(e.to_string());
                false
            }
        }
    }

    pub(super) fn fail_sync(&self, msg: String) {
        // After a failed fsync the kernel may have dropped dirty pages: a later successful
        // fsync would prove nothing, so the log refuses writes until the flusher has cut
        // it back to what is known durable and reopened it (`recover_blocking`).
        self.lock().log.mark_failed("a failed group-commit fsync");
        inc(&self.metrics.fsync_failures);
        tracing::error!(topic = %self.topic, partition = self.index, error = %msg, "fsync failed");
        self.durable.send_modify(|d| d.fail(format!("fsync of {}-{} failed: {msg}", self.topic, self.index)));
        // The flusher recovers the log (it may be the caller: then it sees the failure
        // at its next turn anyway).
        self.sync_wanted.notify_one();
    }

    /// Makes a failed log writable again, if the disk now allows it: cuts it back to the
    /// durable end (what follows is in doubt after a failed write or fsync), fsyncs the
    /// cut, reopens the log (recovery re-checks the tail and rebuilds the index) and
    /// rebuilds producer state from it, so a producer's retry of a batch that was cut is
    /// appended again rather than answered as a duplicate of offsets that no longer
    /// exist. Starts a new generation: waiters for cut batches get an error even after
    /// later appends reuse the offsets. Blocking: run it off the runtime. Returns how
    /// many offsets were cut, or `None` when the log was not failed.
    pub fn recover_blocking(&self) -> Result<Option<i64>, LogError> {
        let _turn = self.round_turn();
        let mut st = self.lock();
        if !st.log.is_failed() {
            return Ok(None);
        }
        let old_end = st.log.end_offset();
        st.log.cut_to_durable()?;
        let (end, generation, cut) = self.reopen_after_cut(&mut st, old_end)?;
        // Published under the lock: no append of the new generation is answered before.
        self.durable.send_modify(|d| {
            d.cut(end, generation);
            if cut > 0 {
                d.failures += 1;
                d.last_error = Some(Arc::from(format!(
                    "{}-{}: offsets from {end} were cut after a write failure",
                    self.topic, self.index
                )));
            }
        });
        Ok(Some(cut))
    }

    /// After a cut of `st`'s log (from `old_end`): reopens it (recovery re-checks the tail
    /// and rebuilds the index), rebuilds producer state from it and starts a new
    /// generation, under the caller's lock. Returns the new end, the generation and how
    /// many offsets were cut; publishing the cut to waiters is the caller's.
    pub(super) fn reopen_after_cut(&self, st: &mut State, old_end: i64) -> Result<(i64, u64, i64), LogError> {
        let (log, _report) =
            PartitionLog::open_with(st.log.dir(), st.log.config().clone(), self.config.syncer.clone())?;
        let now = now_ms();
        // A snapshot taken past the cut is removed here, before anything is appended.
        let (producers, _) =
            snapshot::load(&log, now, self.config.producer_expiration, &self.config.syncer, &self.metrics)?;
        let end = log.end_offset();
        let generation = st.generation + 1;
        *st = State::new(log, producers, generation, now);
        self.publish_shape(st);
        let cut = old_end - end;
        add(&self.metrics.offsets_cut, cut.max(0) as u64);
        Ok((end, generation, cut))
    }

    async fn try_recover(self: &Arc<Self>) {
        let p = self.clone();
        match tokio::task::spawn_blocking(move || p.recover_blocking()).await {
            Ok(Ok(Some(cut))) => tracing::warn!(topic = %self.topic, partition = self.index, cut_offsets = cut,
                "partition writable again after a write failure; offsets that were not durable were cut"),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::debug!(topic = %self.topic, partition = self.index, error = %e,
                "partition still cannot recover from a write failure"),
            Err(e) => tracing::error!(topic = %self.topic, partition = self.index, error = %e, "recovery task failed"),
        }
    }

    /// fsyncs everything appended and writes a producer-state snapshot at the end, so
    /// the next open scans nothing (shutdown). Waits for a group-commit round in progress
    /// first, so that what it writes is what stays on disk. Blocking.
    pub fn flush_blocking(&self) -> Result<(), LogError> {
        let _turn = self.round_turn();
        let mut st = self.lock();
        st.log.flush()?;
        let end = st.log.end_offset();
        snapshot::write(st.log.dir(), end, &st.producers, &self.config.syncer);
        self.publish_shape(&st);
        self.durable.send_modify(|d| d.end = d.end.max(end));
        Ok(())
    }
}
