//! What a partition's leader knows about its followers, and the rules built on it: the
//! high watermark, when an acks=all batch is acknowledged, and when the in-sync set
//! should shrink or grow. Pure: time and progress come in as arguments.
//!
//! - A follower's **fetch offset** is its log end; its **durable offset** is what it has
//!   fsync'd (both reported in each replica fetch).
//! - The **high watermark** is the smallest durable offset over the leader and every
//!   in-sync follower. It advances only while the committed in-sync set has at least
//!   `min_insync` members (KIP-966), and never moves back while this leader leads.
//!   Consumers read up to it.
//! - **acks=all**: refused up front when the committed in-sync set is smaller than
//!   `min_insync`; otherwise acknowledged once the high watermark covers the batch — so
//!   the leader's fsync and every in-sync replica's fsync cover it (stronger than Kafka,
//!   whose followers acknowledge from memory).
//! - **Shrink**: a follower that has not been caught up (fetched up to the leader's log end
//!   as of its previous fetch) for `lag_max` leaves the in-sync set. **Expand**: a replica
//!   whose fetch offset has reached this leader's epoch start and whose durable offset has
//!   reached the high watermark joins it.
//! - While an in-sync change is being written to the metadata store, the rules use the
//!   larger of the old and new sets (Kafka's "maximal ISR", KIP-497): a member is never
//!   dropped from the acknowledgement rule before the store agrees, so the controller can
//!   never elect a replica that misses an acknowledged batch.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::cluster::metadata::PartitionState;

/// Settings of the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// In-sync replicas (the leader included) needed for acks=all and for the high
    /// watermark to advance.
    pub min_insync: usize,
    /// How long a follower may stay behind before it leaves the in-sync set.
    pub lag_max: Duration,
}

/// One follower's progress as the leader saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerProgress {
    /// The offset of its last fetch (its log end); -1 before its first fetch.
    pub fetch_offset: i64,
    /// Its fsync'd end; -1 before its first fetch.
    pub durable_offset: i64,
    /// When it was last caught up.
    pub last_caught_up: Instant,
    /// When it last fetched, and the leader's log end at that moment.
    last_fetch: Option<(Instant, i64)>,
}

/// Why acks=all cannot be accepted now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("in-sync replicas {isr:?} are fewer than min.insync.replicas {min}")]
pub struct NotEnoughReplicas {
    /// The committed in-sync set.
    pub isr: Vec<u32>,
    /// The minimum.
    pub min: usize,
}

/// A replica fetch this leader must refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchRefused {
    /// The broker holds no replica of this partition.
    #[error("broker {0} is not a replica of this partition")]
    NotReplica(u32),
    /// The fetch offset is past the leader's log end: the follower must truncate first.
    #[error("fetch offset {offset} is past the leader's log end {end}")]
    PastEnd {
        /// Offset asked for.
        offset: i64,
        /// The leader's log end.
        end: i64,
    },
}

/// The leader's side of one partition's replication.
#[derive(Debug, Clone)]
pub struct ReplicaSet {
    me: u32,
    epoch: i32,
    epoch_start: i64,
    replicas: Vec<u32>,
    isr: BTreeSet<u32>,
    pending: Option<BTreeSet<u32>>,
    followers: BTreeMap<u32, FollowerProgress>,
    leader_end: i64,
    leader_durable: i64,
    hw: i64,
    config: ReplicaConfig,
}

impl ReplicaSet {
    /// Starts leading `state` (which names `me` as leader) with the local log's end,
    /// durable end and high watermark. Followers get `lag_max` from `now` to show up.
    pub fn new(
        me: u32,
        state: &PartitionState,
        log_end: i64,
        durable: i64,
        hw: i64,
        now: Instant,
        config: ReplicaConfig,
    ) -> ReplicaSet {
        let followers = state
            .replicas
            .iter()
            .filter(|&&r| r != me)
            .map(|&r| {
                (r, FollowerProgress { fetch_offset: -1, durable_offset: -1, last_caught_up: now, last_fetch: None })
            })
            .collect();
        ReplicaSet {
            me,
            epoch: state.leader_epoch,
            epoch_start: log_end,
            replicas: state.replicas.clone(),
            isr: state.isr.iter().copied().collect(),
            pending: None,
            followers,
            leader_end: log_end,
            leader_durable: durable.min(log_end),
            hw: hw.min(durable).min(log_end),
            config,
        }
    }

    /// The leader epoch being served.
    pub fn epoch(&self) -> i32 {
        self.epoch
    }

    /// The log end when this leadership started: the start of its epoch.
    pub fn epoch_start(&self) -> i64 {
        self.epoch_start
    }

    /// The committed in-sync set.
    pub fn isr(&self) -> Vec<u32> {
        self.isr.iter().copied().collect()
    }

    /// The high watermark.
    pub fn high_watermark(&self) -> i64 {
        self.hw
    }

    /// Offsets the slowest in-sync follower has yet to fetch: the leader's log end minus
    /// the smallest fetch offset over the in-sync followers (0 when the leader is alone, or
    /// every in-sync follower has everything). A follower that has not fetched yet in this
    /// leadership counts from the start of the epoch.
    pub fn replication_lag(&self) -> i64 {
        let slowest = self
            .isr
            .iter()
            .filter(|id| **id != self.me)
            .map(|id| self.followers.get(id).map_or(self.epoch_start, |f| f.fetch_offset.max(self.epoch_start)))
            .min();
        slowest.map_or(0, |o| (self.leader_end - o).max(0))
    }

    /// A follower's progress.
    pub fn follower(&self, id: u32) -> Option<&FollowerProgress> {
        self.followers.get(&id)
    }

    /// Whether an acks=all produce may be appended now.
    pub fn check_acks_all(&self) -> Result<(), NotEnoughReplicas> {
        if self.isr.len() >= self.config.min_insync {
            Ok(())
        } else {
            Err(NotEnoughReplicas { isr: self.isr(), min: self.config.min_insync })
        }
    }

    /// Whether a batch ending (exclusive) at `end` is acknowledged for acks=all.
    pub fn is_committed(&self, end: i64) -> bool {
        self.hw >= end
    }

    /// The leader appended up to `end`.
    pub fn on_append(&mut self, end: i64) {
        self.leader_end = self.leader_end.max(end);
    }

    /// The leader's log is fsync'd up to `durable`. Returns whether the high watermark
    /// advanced.
    pub fn on_durable(&mut self, durable: i64) -> bool {
        self.leader_durable = self.leader_durable.max(durable.min(self.leader_end));
        self.advance()
    }

    /// A follower fetched from `fetch_offset` reporting `durable_offset` fsync'd. Returns
    /// whether the high watermark advanced.
    pub fn on_fetch(
        &mut self,
        now: Instant,
        follower: u32,
        fetch_offset: i64,
        durable_offset: i64,
    ) -> Result<bool, FetchRefused> {
        let end = self.leader_end;
        let p = self.followers.get_mut(&follower).ok_or(FetchRefused::NotReplica(follower))?;
        if fetch_offset > end {
            return Err(FetchRefused::PastEnd { offset: fetch_offset, end });
        }
        // Kafka's rule (Replica.updateFetchState): caught up now if it asked for the
        // current end; or caught up as of its previous fetch if it asked for at least the
        // end the leader had then.
        if fetch_offset >= end {
            p.last_caught_up = now;
        } else if let Some((t, end_then)) = p.last_fetch {
            if fetch_offset >= end_then {
                p.last_caught_up = p.last_caught_up.max(t);
            }
        }
        p.last_fetch = Some((now, end));
        p.fetch_offset = fetch_offset;
        // What it fsync'd beyond what it has asked past is not from this leader yet.
        p.durable_offset = p.durable_offset.max(durable_offset.min(fetch_offset));
        Ok(self.advance())
    }

    fn maximal_isr(&self) -> BTreeSet<u32> {
        match &self.pending {
            Some(p) => self.isr.union(p).copied().collect(),
            None => self.isr.clone(),
        }
    }

    fn advance(&mut self) -> bool {
        if self.isr.len() < self.config.min_insync {
            return false;
        }
        let mut candidate = self.leader_durable;
        for id in self.maximal_isr() {
            if id == self.me {
                continue;
            }
            let d = self.followers.get(&id).map_or(-1, |p| p.durable_offset);
            candidate = candidate.min(d);
        }
        if candidate > self.hw {
            self.hw = candidate;
            true
        } else {
            false
        }
    }

    /// The in-sync set this leader wants written now, if it differs from the committed
    /// one and no change is being written: laggards out, caught-up replicas in.
    pub fn isr_proposal(&self, now: Instant) -> Option<Vec<u32>> {
        if self.pending.is_some() {
            return None;
        }
        let mut next = self.isr.clone();
        next.insert(self.me);
        for (&id, p) in &self.followers {
            let lagging = now.saturating_duration_since(p.last_caught_up) > self.config.lag_max;
            if self.isr.contains(&id) {
                if lagging {
                    next.remove(&id);
                }
            } else if !lagging
                && p.fetch_offset >= self.epoch_start
                && p.durable_offset >= self.hw
                && self.replicas.contains(&id)
            {
                next.insert(id);
            }
        }
        (next != self.isr).then(|| next.into_iter().collect())
    }

    /// A proposal is being written.
    pub fn propose(&mut self, isr: &[u32]) {
        self.pending = Some(isr.iter().copied().collect());
    }

    /// The proposal was not written (conflict or store failure): the committed set stays.
    pub fn proposal_failed(&mut self) {
        self.pending = None;
        self.advance();
    }

    /// The store holds `state` (same leader and epoch). Adopts its in-sync set and clears
    /// a proposal it settles. Returns whether the high watermark advanced.
    pub fn on_state(&mut self, state: &PartitionState) -> bool {
        debug_assert_eq!((state.leader, state.leader_epoch), (Some(self.me), self.epoch));
        let isr: BTreeSet<u32> = state.isr.iter().copied().collect();
        if self.pending.as_ref() == Some(&isr) {
            self.pending = None;
        }
        self.isr = isr;
        self.advance()
    }
}

#[cfg(test)]
#[path = "replica_set_tests.rs"]
mod tests;
