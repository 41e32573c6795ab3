//! The partition's owner: appends and retention run as jobs, in arrival order, one task
//! at a time on tokio's blocking pool. The async runtime only queues a job and awaits its
//! `oneshot` answer.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::{AppendError, Appended, BatchCheck, Partition, State};
use crate::broker::log::LogError;
use crate::broker::metrics::{add, inc};
use crate::broker::producer_state::SequenceCheck;
use crate::protocol::{BatchHeader, ErrorCode};

/// Work for the owner.
pub(super) enum Job {
    Append {
        batch: Bytes,
        now_ms: i64,
        check: BatchCheck,
        fence: Option<i16>,
        reply: oneshot::Sender<Result<Appended, AppendError>>,
    },
    Retention {
        now_ms: i64,
        reply: oneshot::Sender<Result<usize, LogError>>,
    },
    /// A follower's verbatim append of a batch its leader stored (cluster mode).
    Replica {
        batch: Bytes,
        reply: oneshot::Sender<Result<Appended, AppendError>>,
    },
}

impl Job {
    /// The broker time the job was submitted with (`i64::MIN` for none).
    fn now_ms(&self) -> i64 {
        match self {
            Job::Append { now_ms, .. } | Job::Retention { now_ms, .. } => *now_ms,
            // A follower's append carries no time of its own: it does not move the
            // round's clock (idle producers expire on the leader's appends).
            Job::Replica { .. } => i64::MIN,
        }
    }
}

/// The queue, and whether a drain task is running.
#[derive(Default)]
pub(super) struct Jobs {
    queue: VecDeque<Job>,
    running: bool,
}

/// Clears `running` if a drain task unwinds, so the next job starts a new one.
struct Running<'a>(&'a Partition);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut q = self.0.jobs.lock().unwrap_or_else(|p| p.into_inner());
            q.running = false;
            q.queue.clear();
        }
    }
}

pub(super) fn owner_gone() -> AppendError {
    AppendError { code: ErrorCode::StorageError, message: "the partition's storage task failed".into() }
}

impl Partition {
    /// Checks `batch` with `check`, checks its sequence against producer state and
    /// appends it (or answers a duplicate with the original offsets), on the owner.
    /// `fence` is the current epoch of the batch's producer when the caller knows it: an
    /// older epoch gets only its remembered retries answered (as duplicates), anything
    /// else `INVALID_PRODUCER_EPOCH` ([`ProducerStates::check_fenced`]). With `sink`,
    /// nothing reaches the log (benchmark mode): offsets and producer state advance as if
    /// it had, inline.
    ///
    /// [`ProducerStates::check_fenced`]: crate::broker::producer_state::ProducerStates::check_fenced
    pub async fn append(
        self: &Arc<Self>,
        batch: Bytes,
        now_ms: i64,
        sink: bool,
        check: BatchCheck,
        fence: Option<i16>,
    ) -> Result<Appended, AppendError> {
        if sink {
            let header = check(&batch)?;
            let mut st = self.lock();
            let res = self.append_locked(&mut st, &batch, &header, now_ms, true, fence);
            self.publish_shape(&st);
            return res.map(|(a, _)| a);
        }
        let (reply, rx) = oneshot::channel();
        self.submit(Job::Append { batch, now_ms, check, fence, reply });
        rx.await.unwrap_or_else(|_| Err(owner_gone()))
    }

    /// Applies retention on the owner; returns how many segments were deleted.
    pub async fn apply_retention(self: &Arc<Self>, now_ms: i64) -> Result<usize, LogError> {
        let (reply, rx) = oneshot::channel();
        self.submit(Job::Retention { now_ms, reply });
        rx.await.unwrap_or_else(|_| {
            Err(LogError::Io {
                op: "retention",
                path: Default::default(),
                source: std::io::Error::other("the partition's storage task failed"),
            })
        })
    }

    pub(super) fn submit(self: &Arc<Self>, job: Job) {
        let mut q = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        q.queue.push_back(job);
        if !q.running {
            q.running = true;
            let p = Arc::clone(self);
            tokio::task::spawn_blocking(move || p.drain());
        }
    }

    /// Runs queued jobs until the queue is empty: each round takes every job queued so
    /// far, checks the batches outside the lock, then runs them under one lock.
    fn drain(&self) {
        let _running = Running(self);
        loop {
            let jobs: Vec<Job> = {
                let mut q = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
                if q.queue.is_empty() {
                    q.running = false;
                    return;
                }
                q.queue.drain(..).collect()
            };
            // The round's time is its jobs' (the latest of them), never the wall clock:
            // producers are recorded with the jobs' times and expire by the same clock.
            let round_ms = jobs.iter().map(Job::now_ms).max().unwrap_or(i64::MIN);
            // Decoding the records is the costly part: do it before taking the lock, in
            // one of the broker-wide check slots (it may decompress 32 MiB).
            let checked: Vec<(Job, Option<Result<BatchHeader, AppendError>>)> = jobs
                .into_iter()
                .map(|job| match &job {
                    Job::Append { batch, check, .. } => {
                        let header = {
                            let _slot = self.config.limits.checks.take();
                            check(batch)
                        };
                        (job, Some(header))
                    }
                    Job::Replica { batch, .. } => {
                        let header = super::replica::check_replica_batch(batch);
                        (job, Some(header))
                    }
                    Job::Retention { .. } => (job, None),
                })
                .collect();
            let mut answers = Vec::with_capacity(checked.len());
            let mut rolled = false;
            {
                let mut st = self.lock();
                for (job, header) in checked {
                    match job {
                        Job::Append { batch, now_ms, fence, reply, .. } => {
                            let res = header.expect("checked").and_then(|h| {
                                self.append_locked(&mut st, &batch, &h, now_ms, false, fence).map(|(a, r)| {
                                    rolled |= r;
                                    a
                                })
                            });
                            answers.push(Answer::Append(reply, res));
                        }
                        Job::Retention { now_ms, reply } => {
                            answers.push(Answer::Retention(reply, st.log.apply_retention(now_ms)));
                        }
                        Job::Replica { batch, reply } => {
                            let res = header.expect("checked").and_then(|h| {
                                self.append_replica_locked(&mut st, &batch, &h).map(|(a, r)| {
                                    rolled |= r;
                                    a
                                })
                            });
                            answers.push(Answer::Append(reply, res));
                        }
                    }
                }
                self.expire_idle(&mut st, round_ms);
                self.publish_shape(&st);
                if st.log.is_failed() && !self.durable.borrow().failed {
                    // A write that could not be undone: the flusher must cut the log.
                    self.durable.send_modify(|d| d.fail(format!("{}-{}: a write failed", self.topic, self.index)));
                    self.sync_wanted.notify_one();
                }
            }
            for answer in answers {
                match answer {
                    Answer::Append(reply, res) => drop(reply.send(res)),
                    Answer::Retention(reply, res) => drop(reply.send(res)),
                }
            }
            if rolled {
                // The sealed segment is fsync'd by the flusher, not here.
                self.sync_wanted.notify_one();
            }
        }
    }

    /// The sequence check and the append, under the lock. Returns whether a segment
    /// rolled.
    #[allow(clippy::too_many_arguments)]
    fn append_locked(
        &self,
        st: &mut State,
        batch: &[u8],
        header: &BatchHeader,
        now_ms: i64,
        sink: bool,
        fence: Option<i16>,
    ) -> Result<(Appended, bool), AppendError> {
        let generation = st.generation;
        match st.producers.check_fenced(header, fence) {
            SequenceCheck::Append => {}
            SequenceCheck::Duplicate(meta) => {
                let a = Appended {
                    base_offset: meta.base_offset,
                    end_offset: meta.last_offset + 1,
                    append_time: meta.append_time,
                    duplicate: true,
                    generation,
                };
                return Ok((a, false));
            }
            SequenceCheck::Reject(code, message) => return Err(AppendError { code, message }),
        }
        let (base_offset, rolled) = if sink {
            let base = st.sink_next;
            st.sink_next += i64::from(header.record_count);
            (base, false)
        } else {
            self.write_to_log(st, batch, header)?
        };
        let mut stored = *header;
        stored.base_offset = base_offset;
        st.producers.record(&stored, now_ms);
        let a = Appended {
            base_offset,
            end_offset: stored.last_offset() + 1,
            append_time: now_ms,
            duplicate: false,
            generation,
        };
        Ok((a, rolled))
    }

    /// Writes `batch` to the log, for a producer's append and a follower's alike. When a
    /// segment rolled, keeps producer state as of the new segment's base (this batch not
    /// yet recorded) for the snapshot the flusher writes with the roll's fsync, and counts
    /// the roll. Returns the batch's base offset and whether a segment rolled.
    pub(super) fn write_to_log(
        &self,
        st: &mut State,
        batch: &[u8],
        header: &BatchHeader,
    ) -> Result<(i64, bool), AppendError> {
        let info = st
            .log
            .append(batch, header)
            .map_err(|e| AppendError { code: ErrorCode::StorageError, message: e.to_string() })?;
        if info.rolled {
            st.snapshot = Some((info.base_offset, st.producers.clone()));
            inc(&self.metrics.segment_rolls);
        }
        Ok((info.base_offset, info.rolled))
    }

    /// Forgets producers idle longer than the expiration, at most every tenth of it.
    fn expire_idle(&self, st: &mut State, now_ms: i64) {
        if now_ms < st.next_expiry_ms {
            return;
        }
        let expiration = self.config.producer_expiration;
        let every = (expiration / 10).clamp(Duration::from_millis(1), Duration::from_secs(60));
        st.next_expiry_ms = now_ms.saturating_add(every.as_millis() as i64);
        let expired = st.producers.expire(now_ms.saturating_sub(expiration.as_millis() as i64));
        if expired > 0 {
            add(&self.metrics.producers_expired, expired as u64);
            tracing::debug!(topic = %self.topic, partition = self.index, expired, "idle producers expired");
        }
    }
}

enum Answer {
    Append(oneshot::Sender<Result<Appended, AppendError>>, Result<Appended, AppendError>),
    Retention(oneshot::Sender<Result<usize, LogError>>, Result<usize, LogError>),
}
