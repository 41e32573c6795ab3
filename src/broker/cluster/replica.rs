//! One partition's replication state on this broker: its role (leader, follower,
//! waiting), its leader-epoch history, and — while it leads — the [`ReplicaSet`] that
//! decides the high watermark and acks=all. Every change bumps a version on a `watch`, so
//! acks=all waiters and long-polling follower fetches re-check on change.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;

use crate::broker::partition::Partition;
use crate::cluster::epochs::{EpochCache, EpochFile, UNDEFINED_EPOCH};
use crate::cluster::metadata::{PartitionState, Versioned};
use crate::cluster::replica_set::{FetchRefused, NotEnoughReplicas, ReplicaConfig, ReplicaSet};
use crate::protocol::cluster::ReplicaFetchOk;
use crate::protocol::RecordBatch;

/// While leading.
#[derive(Debug)]
pub(crate) struct Leading {
    pub(crate) set: ReplicaSet,
    /// The partition state this leadership acts on (the base of in-sync changes).
    pub(crate) state: Versioned<PartitionState>,
    /// The partition's log generation when the leadership started: after an in-place cut
    /// (a failed fsync) the leader must not append again in this epoch.
    pub(crate) generation: u64,
    /// An in-sync change is being written.
    pub(crate) writing_isr: bool,
}

/// The role, as this broker acts on it.
#[derive(Debug)]
pub(crate) enum RoleState {
    Leader(Box<Leading>),
    Follower { leader: u32, epoch: i32, hw: i64 },
    Waiting { epoch: i32 },
}

/// Why a produce cannot be taken here now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Not the leader (or no longer in a usable generation).
    NotLeader,
    /// acks=all with too few in-sync replicas.
    NotEnough(NotEnoughReplicas),
}

/// How an acks=all wait ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Commit {
    /// The high watermark covers the batch.
    Committed,
    /// The leadership ended first.
    NotLeader,
    /// The in-sync set fell below the minimum first.
    NotEnough(String),
    /// The leader's own log failed or cut the batch.
    Failed(String),
    /// Time ran out.
    TimedOut,
}

/// One partition's replication state.
pub(crate) struct Replica {
    pub(crate) topic: Arc<str>,
    pub(crate) index: u32,
    pub(crate) partition: Arc<Partition>,
    epochs: Mutex<EpochCache>,
    epoch_file: EpochFile,
    role: Mutex<RoleState>,
    changed: watch::Sender<u64>,
    /// The follower task, with the leader and epoch it follows.
    pub(crate) follower: Mutex<Option<(u32, i32, tokio::task::AbortHandle)>>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Replica({}-{})", self.topic, self.index)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Replica {
    /// Opens the replication state of a local partition in `dir`: loads its epoch history
    /// (dropping entries at or past the log end). A log with data but no history (written
    /// before cluster mode) is taken as epoch 0 from its start. Blocking.
    pub(crate) fn open(
        topic: Arc<str>,
        index: u32,
        partition: Arc<Partition>,
        dir: &std::path::Path,
    ) -> std::io::Result<Replica> {
        let epoch_file = EpochFile::in_dir(dir);
        let end = partition.log_end();
        let mut cache = epoch_file.load(end)?;
        let start = partition.metadata(0).log_start_offset;
        if cache.entries().is_empty() && end > start {
            cache.assign(0, start).expect("an empty cache takes any epoch");
            epoch_file.store(&cache)?;
        }
        let replica = Replica {
            topic,
            index,
            partition,
            epochs: Mutex::new(cache),
            epoch_file,
            role: Mutex::new(RoleState::Waiting { epoch: UNDEFINED_EPOCH }),
            changed: watch::Sender::new(0),
            follower: Mutex::new(None),
        };
        Ok(replica)
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// A receiver woken on every change.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The role's epoch and whether this broker leads.
    pub(crate) fn leader_epoch(&self) -> Option<i32> {
        match &*lock(&self.role) {
            RoleState::Leader(l) => Some(l.set.epoch()),
            _ => None,
        }
    }

    /// The role in words, for logs.
    pub(crate) fn role_summary(&self) -> (Option<u32>, i32) {
        match &*lock(&self.role) {
            RoleState::Leader(l) => (None, l.set.epoch()),
            RoleState::Follower { leader, epoch, .. } => (Some(*leader), *epoch),
            RoleState::Waiting { epoch } => (None, *epoch),
        }
    }

    /// Takes the leadership of `state` (which names this broker at its epoch): records
    /// the epoch at the log end (fsync'd) before anything is served. Blocking.
    pub(crate) fn become_leader(
        &self,
        me: u32,
        state: Versioned<PartitionState>,
        config: ReplicaConfig,
        initial_hw: i64,
    ) -> std::io::Result<()> {
        let epoch = state.value.leader_epoch;
        let end = self.partition.log_end();
        {
            let mut cache = lock(&self.epochs);
            let changed = cache
                .assign(epoch, end)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
            if changed {
                self.epoch_file.store(&cache)?;
            }
        }
        let durability = self.partition.durability();
        let set = ReplicaSet::new(me, &state.value, end, durability.end, initial_hw, Instant::now(), config);
        let leading = Leading { set, state, generation: durability.generation, writing_isr: false };
        *lock(&self.role) = RoleState::Leader(Box::new(leading));
        tracing::info!(topic = %self.topic, partition = self.index, epoch, log_end = end, "leading");
        self.bump();
        Ok(())
    }

    /// Follows `leader` at `epoch` (the follower task does the fetching).
    pub(crate) fn become_follower(&self, leader: u32, epoch: i32) {
        let hw = self.high_watermark();
        *lock(&self.role) = RoleState::Follower { leader, epoch, hw };
        self.bump();
    }

    /// Neither leads nor follows.
    pub(crate) fn become_waiting(&self, epoch: i32) {
        *lock(&self.role) = RoleState::Waiting { epoch };
        self.bump();
    }

    /// For `/metrics`, while this broker leads: the in-sync set's size and the replication
    /// lag in offsets ([`ReplicaSet::replication_lag`](crate::cluster::replica_set::ReplicaSet::replication_lag)).
    pub(crate) fn leader_gauges(&self) -> Option<(usize, i64)> {
        match &*lock(&self.role) {
            RoleState::Leader(l) => Some((l.set.isr().len(), l.set.replication_lag())),
            _ => None,
        }
    }

    /// The high watermark as this broker knows it.
    pub(crate) fn high_watermark(&self) -> i64 {
        match &*lock(&self.role) {
            RoleState::Leader(l) => l.set.high_watermark(),
            RoleState::Follower { hw, .. } => *hw,
            RoleState::Waiting { .. } => 0,
        }
    }

    /// Whether a produce may be appended here now; the epoch it is appended in.
    pub(crate) fn check_produce(&self, acks_all: bool) -> Result<i32, Refusal> {
        let role = lock(&self.role);
        let RoleState::Leader(l) = &*role else { return Err(Refusal::NotLeader) };
        if self.partition.durability().generation != l.generation {
            return Err(Refusal::NotLeader);
        }
        if acks_all {
            l.set.check_acks_all().map_err(Refusal::NotEnough)?;
        }
        Ok(l.set.epoch())
    }

    /// The leader appended up to `end`.
    pub(crate) fn on_appended(&self, end: i64) {
        if let RoleState::Leader(l) = &mut *lock(&self.role) {
            l.set.on_append(end);
        }
        self.bump();
    }

    /// The local log is durable up to `end`.
    pub(crate) fn on_durable(&self, end: i64) {
        if let RoleState::Leader(l) = &mut *lock(&self.role) {
            l.set.on_durable(end);
        }
        self.bump();
    }

    /// A follower's fetch (leader side): records its progress. Returns the leader epoch
    /// and high watermark.
    pub(crate) fn on_fetch(&self, follower: u32, fetch_offset: i64, durable: i64) -> Result<(i32, i64), FetchRefused> {
        let mut role = lock(&self.role);
        let RoleState::Leader(l) = &mut *role else { return Err(FetchRefused::NotReplica(follower)) };
        l.set.on_fetch(Instant::now(), follower, fetch_offset, durable)?;
        let out = (l.set.epoch(), l.set.high_watermark());
        drop(role);
        self.bump();
        Ok(out)
    }

    /// The store holds `state` for this leadership's epoch: adopt its in-sync set.
    pub(crate) fn on_state(&self, state: Versioned<PartitionState>) {
        if let RoleState::Leader(l) = &mut *lock(&self.role) {
            if state.value.leader_epoch == l.set.epoch() && state.mod_revision > l.state.mod_revision {
                l.set.on_state(&state.value);
                l.state = state;
                l.writing_isr = false;
            }
        }
        self.bump();
    }

    /// The in-sync change to write now, with the state it is based on; marks it pending.
    pub(crate) fn take_isr_proposal(&self) -> Option<(Versioned<PartitionState>, Vec<u32>)> {
        let mut role = lock(&self.role);
        let RoleState::Leader(l) = &mut *role else { return None };
        if l.writing_isr {
            return None;
        }
        let isr = l.set.isr_proposal(Instant::now())?;
        l.set.propose(&isr);
        l.writing_isr = true;
        Some((l.state.clone(), isr))
    }

    /// When this broker leads but its log was cut in place since the leadership started
    /// (a failed fsync): the state to give up, fenced on. The leader must not append again
    /// in this epoch.
    pub(crate) fn needs_abdication(&self) -> Option<Versioned<PartitionState>> {
        match &*lock(&self.role) {
            RoleState::Leader(l) if self.partition.durability().generation != l.generation => Some(l.state.clone()),
            _ => None,
        }
    }

    /// The proposal was not written.
    pub(crate) fn isr_proposal_failed(&self) {
        if let RoleState::Leader(l) = &mut *lock(&self.role) {
            l.set.proposal_failed();
            l.writing_isr = false;
        }
        self.bump();
    }

    /// Waits until the batch ending at `end` (appended in `generation` at `epoch`) is
    /// committed: durable here in its generation, and covered by the high watermark.
    pub(crate) async fn wait_committed(&self, end: i64, generation: u64, epoch: i32, timeout: Duration) -> Commit {
        let deadline = tokio::time::Instant::now() + timeout;
        match tokio::time::timeout_at(deadline, self.partition.wait_durable(end, generation)).await {
            Err(_) => return Commit::TimedOut,
            Ok(Err(e)) => return Commit::Failed(e),
            Ok(Ok(())) => {}
        }
        let mut rx = self.subscribe();
        loop {
            {
                let _ = rx.borrow_and_update();
                let role = lock(&self.role);
                let RoleState::Leader(l) = &*role else { return Commit::NotLeader };
                if l.set.epoch() != epoch {
                    return Commit::NotLeader;
                }
                if l.set.is_committed(end) {
                    return Commit::Committed;
                }
                if let Err(e) = l.set.check_acks_all() {
                    return Commit::NotEnough(e.to_string());
                }
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Err(_) => return Commit::TimedOut,
                Ok(Err(_)) => return Commit::NotLeader,
                Ok(Ok(())) => {}
            }
        }
    }

    /// Waits (up to `max_wait`) until the log end passes `offset` or the role changes;
    /// a follower's long poll.
    pub(crate) async fn wait_for_data(&self, offset: i64, max_wait: Duration) {
        let mut rx = self.subscribe();
        let deadline = tokio::time::Instant::now() + max_wait;
        let hw_then = self.high_watermark();
        loop {
            let _ = rx.borrow_and_update();
            if self.partition.log_end() > offset || self.leader_epoch().is_none() || self.high_watermark() != hw_then {
                return;
            }
            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                return;
            }
        }
    }

    /// Waits until the high watermark reaches `offset` or the leadership ends (a
    /// consumer's fetch at the tail).
    pub(crate) async fn wait_high_watermark(&self, offset: i64) {
        let mut rx = self.subscribe();
        loop {
            let _ = rx.borrow_and_update();
            if self.high_watermark() >= offset || self.leader_epoch().is_none() {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// KIP-101: the largest epoch ≤ `epoch` here and where it ends in this log.
    pub(crate) fn end_offset_for(&self, epoch: i32) -> (i32, i64) {
        lock(&self.epochs).end_offset_for(epoch, self.partition.log_end())
    }

    /// The newest epoch of this log.
    pub(crate) fn latest_epoch(&self) -> i32 {
        lock(&self.epochs).latest_epoch()
    }

    /// A copy of the epoch history (for the follower's truncation).
    pub(crate) fn epochs(&self) -> EpochCache {
        lock(&self.epochs).clone()
    }

    /// The records section of a `ReplicaFetchOk`: each stored batch of `batches` preceded
    /// by the epoch that appended it.
    pub(crate) fn with_epochs(&self, batches: Bytes) -> Result<Bytes, crate::protocol::DecodeError> {
        let cache = lock(&self.epochs);
        let mut out = BytesMut::with_capacity(batches.len() + 64);
        for b in RecordBatch::split_all(batches)? {
            let epoch = cache.epoch_for(b.header().base_offset).unwrap_or(0);
            ReplicaFetchOk::push_batch(&mut out, epoch, b.as_bytes());
        }
        Ok(out.freeze())
    }

    /// Follower: records (fsync'd) that `epoch` starts at `offset`, if it is new, before
    /// the batch is appended. Blocking.
    pub(crate) fn record_epoch(&self, epoch: i32, offset: i64) -> std::io::Result<()> {
        let mut cache = lock(&self.epochs);
        if epoch <= cache.latest_epoch() {
            return Ok(());
        }
        cache.assign(epoch, offset).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
        self.epoch_file.store(&cache)
    }

    /// Follower: the log was cut to `to`; drop the epochs past it (fsync'd). Blocking.
    pub(crate) fn truncate_epochs(&self, to: i64) -> std::io::Result<()> {
        let mut cache = lock(&self.epochs);
        if cache.truncate_from_end(to) {
            self.epoch_file.store(&cache)?;
        }
        Ok(())
    }

    /// Follower: the leader's high watermark, bounded by this log's end.
    pub(crate) fn set_follower_hw(&self, leader_hw: i64) {
        if let RoleState::Follower { hw, .. } = &mut *lock(&self.role) {
            *hw = leader_hw.min(self.partition.log_end());
        }
    }
}
