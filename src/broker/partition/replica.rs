//! What a partition does as a replica in a cluster (CLUSTER.md, "replication"): append a
//! leader's batches verbatim (same offsets, producer ids, epochs and sequences), cut a
//! tail that its new leader does not have (KIP-101), and read up to the end for a
//! follower's fetch.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::owner::{owner_gone, Job};
use super::{now_ms, task_failed, AppendError, Appended, Fetched, Partition, State};
use crate::broker::log::{LogError, ReadBound};
use crate::protocol::batch::check_batch;
use crate::protocol::{BatchHeader, ErrorCode};

/// The check of a batch a follower received: structure and CRC (the leader validated the
/// records when it accepted them).
pub(super) fn check_replica_batch(batch: &Bytes) -> Result<BatchHeader, AppendError> {
    let corrupt = |message: String| AppendError { code: ErrorCode::CorruptBatch, message };
    match check_batch(batch) {
        Ok(Some(h)) if h.total_len() == batch.len() => Ok(h),
        Ok(Some(h)) => {
            Err(corrupt(format!("{} bytes after a batch of {}", batch.len() - h.total_len(), h.total_len())))
        }
        Ok(None) => Err(corrupt(format!("a replicated batch of {} bytes is incomplete", batch.len()))),
        Err(e) => Err(corrupt(format!("a replicated batch is corrupt: {e}"))),
    }
}

impl Partition {
    /// Appends a batch exactly as the leader stored it: its `base_offset` must be this
    /// log's end (a follower fetches from its end, so anything else is a bug or a stale
    /// answer and is refused). Producer state records it as the leader did, so this
    /// replica answers a producer's retry as a duplicate if it becomes leader.
    pub async fn append_replica(self: &Arc<Self>, batch: Bytes) -> Result<Appended, AppendError> {
        let (reply, rx) = oneshot::channel();
        self.submit(Job::Replica { batch, reply });
        rx.await.unwrap_or_else(|_| Err(owner_gone()))
    }

    pub(super) fn append_replica_locked(
        &self,
        st: &mut State,
        batch: &[u8],
        header: &BatchHeader,
    ) -> Result<(Appended, bool), AppendError> {
        let end = st.log.end_offset();
        if header.base_offset != end {
            return Err(AppendError {
                code: ErrorCode::InvalidRequest,
                message: format!(
                    "{}-{}: a replicated batch at offset {} does not start at this replica's end {end}",
                    self.topic, self.index, header.base_offset
                ),
            });
        }
        let (base_offset, rolled) = self.write_to_log(st, batch, header)?;
        let now = now_ms();
        st.producers.record(header, now);
        let a = Appended {
            base_offset,
            end_offset: header.last_offset() + 1,
            append_time: now,
            duplicate: false,
            generation: st.generation,
        };
        Ok((a, rolled))
    }

    /// Cuts the log to `to` (a batch boundary) when it is longer: the tail is removed and
    /// fsync'd away, the log reopened, producer state rebuilt from what remains, and a new
    /// generation started (a waiter for a cut batch gets an error). Returns how many
    /// offsets were cut. Blocking: run it off the runtime.
    pub fn truncate_blocking(&self, to: i64) -> Result<i64, LogError> {
        let _turn = self.round_turn();
        let mut st = self.lock();
        let old_end = st.log.end_offset();
        if to >= old_end {
            return Ok(0);
        }
        st.log.cut_to(to)?;
        let (end, generation, cut) = self.reopen_after_cut(&mut st, old_end)?;
        self.durable.send_modify(|d| d.cut(end, generation));
        tracing::info!(topic = %self.topic, partition = self.index, from = old_end, to = end,
            "replica log truncated to its leader's history");
        Ok(cut)
    }

    /// [`Partition::truncate_blocking`] on the blocking pool.
    pub async fn truncate(self: &Arc<Self>, to: i64) -> Result<i64, LogError> {
        let p = Arc::clone(self);
        tokio::task::spawn_blocking(move || p.truncate_blocking(to))
            .await
            .unwrap_or_else(|e| Err(task_failed("truncate task", e)))
    }

    /// Whole batches from `offset` up to the log end, fsync'd or not: what a leader sends
    /// its followers (their copies are acknowledged by their own fsyncs). On the blocking
    /// pool, outside the partition lock.
    pub async fn read_for_replica(self: &Arc<Self>, offset: i64, max_bytes: usize) -> Result<Fetched, LogError> {
        let p = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let (plan, high_watermark, durable_end, log_start_offset) = {
                let st = p.lock();
                let plan = st.log.read_plan(offset, max_bytes, ReadBound::End)?;
                (plan, st.log.end_offset(), st.log.durable_offset(), st.log.log_start_offset())
            };
            let batches = match plan {
                Some(plan) => plan.read()?,
                None => Bytes::new(),
            };
            Ok(Fetched { batches, high_watermark, durable_end, log_start_offset })
        })
        .await
        .unwrap_or_else(|e| Err(task_failed("read task", e)))
    }

    /// The log end (next offset), lock-free.
    pub fn log_end(&self) -> i64 {
        self.shape.end.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Asks the flusher for a group commit now (a follower after appending).
    pub fn request_sync(&self) {
        self.sync_wanted.notify_one();
    }

    /// Subscribes to durability changes (a follower reports its fsync'd end; a leader's
    /// high watermark follows its own).
    pub fn subscribe_durable(&self) -> tokio::sync::watch::Receiver<super::Durability> {
        self.durable.subscribe()
    }
}

#[cfg(test)]
#[path = "replica_tests.rs"]
mod tests;
