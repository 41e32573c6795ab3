//! The scripted broker's state: what each partition stored (record ids at offsets) and
//! the idempotence rules of PROTOCOL.md §13, with the three ways a broker may treat a
//! batch from an older epoch than the producer id's current one.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

use crate::protocol::batch::increment_sequence;
use crate::protocol::frame::ProduceResult;
use crate::protocol::{ErrorCode, RecordBatch};

/// How a batch with an epoch older than the id's current one is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EpochRule {
    /// Per partition only (the broker before issue 9): an old epoch is fine on a partition
    /// that has not seen the new one.
    PerPartition,
    /// Refused as INVALID_PRODUCER_EPOCH before anything else, and a repeated bump is
    /// refused too (the broker of issue 9).
    Strict,
    /// Dedup lookup first, then INVALID_PRODUCER_EPOCH (the announced per-partition rule).
    DedupFirst,
}

#[derive(Debug, Default)]
struct ProducerEntry {
    epoch: i16,
    /// (first sequence, last sequence, base offset) of the last 5 batches.
    batches: VecDeque<(i32, i32, i64)>,
}

/// One partition.
#[derive(Debug, Default)]
pub(crate) struct PartLog {
    /// Record ids in offset order.
    pub records: Vec<u64>,
    producers: HashMap<i64, ProducerEntry>,
}

/// Every partition and the producer-id registry.
#[derive(Debug)]
pub(crate) struct BrokerModel {
    pub parts: HashMap<(String, u32), PartLog>,
    next_pid: i64,
    /// Current epoch per issued producer id.
    epochs: HashMap<i64, i16>,
    pub rule: EpochRule,
    /// A repeated bump (from the epoch before the current one) is refused, as the issue-9
    /// broker does, instead of answered again.
    pub strict_bumps: bool,
    /// Batches appended (not duplicates).
    pub appends: u64,
    /// Retries answered from the dedup state.
    pub duplicates: u64,
}

/// The ids carried by a batch (record values are decimal ids).
pub(crate) fn ids_of(batch: &Bytes) -> Vec<u64> {
    let b = RecordBatch::from_bytes(batch.clone()).expect("the core sends valid batches");
    b.records(1 << 24)
        .expect("records decode")
        .iter()
        .map(|r| {
            let v = std::str::from_utf8(r.value.as_deref().unwrap()).unwrap();
            v.split(':').next().unwrap().parse().unwrap()
        })
        .collect()
}

fn result(error: ErrorCode, base_offset: i64, duplicate: bool) -> ProduceResult {
    ProduceResult { error, duplicate, base_offset, log_append_time: -1, message: String::new() }
}

impl BrokerModel {
    pub(crate) fn new(rule: EpochRule) -> Self {
        BrokerModel {
            parts: HashMap::new(),
            next_pid: 1000,
            epochs: HashMap::new(),
            rule,
            strict_bumps: rule == EpochRule::Strict,
            appends: 0,
            duplicates: 0,
        }
    }

    /// Answers InitProducerId.
    pub(crate) fn init_producer_id(&mut self, id: i64, epoch: i16) -> Result<(i64, i16), ErrorCode> {
        if id < 0 {
            let id = self.next_pid;
            self.next_pid += 1;
            self.epochs.insert(id, 0);
            return Ok((id, 0));
        }
        // A bump from the current epoch; a retry of the last bump (its answer was lost)
        // gets the same answer, except from a strict broker; an older epoch is fenced.
        let strict = self.strict_bumps;
        match self.epochs.get_mut(&id) {
            Some(e) if epoch == *e => {
                *e += 1;
                Ok((id, *e))
            }
            Some(e) if !strict && epoch >= 0 && epoch + 1 == *e => Ok((id, *e)),
            Some(_) if epoch >= 0 => Err(ErrorCode::InvalidProducerEpoch),
            _ => Err(ErrorCode::InvalidRequest),
        }
    }

    /// Appends (or dedups, or refuses) `batch` on `topic`-`partition`.
    pub(crate) fn produce(&mut self, topic: &str, partition: u32, batch: &Bytes) -> ProduceResult {
        let b = RecordBatch::from_bytes(batch.clone()).expect("valid batch");
        let h = *b.header();
        let ids = ids_of(batch);
        let current = self.epochs.get(&h.producer.producer_id).copied();
        let log = self.parts.entry((topic.to_owned(), partition)).or_default();
        if !h.is_idempotent() {
            let base = log.records.len() as i64;
            log.records.extend(ids);
            self.appends += 1;
            return result(ErrorCode::None, base, false);
        }
        let (pid, epoch, seq) = (h.producer.producer_id, h.producer.producer_epoch, h.producer.base_sequence);
        let last = h.last_sequence();
        if current.is_none() && self.rule != EpochRule::PerPartition {
            // A registry that checks ids: this one was never issued, or was forgotten.
            return result(ErrorCode::InvalidProducerId, -1, false);
        }
        let stale = current.is_some_and(|c| epoch < c);
        if stale && self.rule == EpochRule::Strict {
            return result(ErrorCode::InvalidProducerEpoch, -1, false);
        }
        let entry = log.producers.get(&pid);
        if let Some(e) = entry {
            if e.epoch == epoch {
                if let Some(&(_, _, base)) = e.batches.iter().find(|b| b.0 == seq && b.1 == last) {
                    self.duplicates += 1;
                    return result(ErrorCode::None, base, true);
                }
            }
        }
        if stale && self.rule == EpochRule::DedupFirst {
            return result(ErrorCode::InvalidProducerEpoch, -1, false);
        }
        let ok = match entry {
            None if seq == 0 => Ok(()),
            None => Err(ErrorCode::UnknownProducerId),
            Some(e) if epoch < e.epoch => Err(ErrorCode::InvalidProducerEpoch),
            Some(e) if epoch > e.epoch => {
                if seq == 0 {
                    Ok(())
                } else {
                    Err(ErrorCode::OutOfOrderSequence)
                }
            }
            Some(e) => match e.batches.back() {
                None if seq == 0 => Ok(()),
                None => Err(ErrorCode::UnknownProducerId),
                Some(l) if seq == increment_sequence(l.1, 1) => Ok(()),
                Some(_) => Err(ErrorCode::OutOfOrderSequence),
            },
        };
        if let Err(code) = ok {
            return result(code, -1, false);
        }
        let base = log.records.len() as i64;
        log.records.extend(ids);
        self.appends += 1;
        let e = log.producers.entry(pid).or_default();
        if e.epoch != epoch {
            e.epoch = epoch;
            e.batches.clear();
        }
        e.batches.push_back((seq, last, base));
        if e.batches.len() > 5 {
            e.batches.pop_front();
        }
        result(ErrorCode::None, base, false)
    }

    /// Another producer takes `pid` over: the registry's epoch moves past the current one.
    pub(crate) fn fence(&mut self, pid: i64) {
        if let Some(e) = self.epochs.get_mut(&pid) {
            *e += 1;
        }
    }

    /// The registry forgets `pid` (a broker that lost its producer-id registry).
    pub(crate) fn forget(&mut self, pid: i64) {
        self.epochs.remove(&pid);
    }

    /// `topic`-`partition` forgets every producer's sequence state (an idle producer
    /// expired): the records stay.
    pub(crate) fn lose_state(&mut self, topic: &str, partition: u32) {
        if let Some(log) = self.parts.get_mut(&(topic.to_owned(), partition)) {
            log.producers.clear();
        }
    }

    /// Whether `batch`, read by the broker but not yet processed, may still be appended on
    /// `topic`-`partition` at some point, given the other requests still on their way
    /// (`limbo`) and whether the producer may still number batches in its epoch there
    /// (`producer_in_epoch`). Conservative: says yes unless the rules rule it out.
    pub(crate) fn could_land(
        &self,
        topic: &str,
        partition: u32,
        batch: &Bytes,
        limbo: &[Bytes],
        producer_in_epoch: bool,
    ) -> bool {
        let h = *RecordBatch::from_bytes(batch.clone()).expect("valid batch").header();
        if !h.is_idempotent() {
            return true;
        }
        let (pid, epoch, seq) = (h.producer.producer_id, h.producer.producer_epoch, h.producer.base_sequence);
        let current = self.epochs.get(&pid).copied();
        match self.rule {
            EpochRule::PerPartition => {}
            // The registry refuses an unknown id, and (before appending) an older epoch.
            _ if current.is_none_or(|c| epoch < c) => return false,
            _ => {}
        }
        let entry = self.parts.get(&(topic.to_owned(), partition)).and_then(|l| l.producers.get(&pid));
        // The sequence the partition would append next in `epoch`.
        let mut next = match entry {
            Some(e) if e.epoch > epoch => return false,
            Some(e) if e.epoch == epoch => e.batches.back().map_or(0, |b| increment_sequence(b.1, 1)),
            _ => 0,
        };
        if producer_in_epoch {
            // The producer may still send anything in this epoch: only what is behind the
            // partition's sequence cannot land.
            return entry.is_none_or(|e| e.epoch != epoch) || seq_ahead_or_at(seq, next);
        }
        // Otherwise only the other requests on their way can bring the sequence to it.
        let mut others: Vec<(i32, i32)> = limbo
            .iter()
            .filter_map(|b| {
                let o = *RecordBatch::from_bytes(b.clone()).ok()?.header();
                (o.producer.producer_id == pid && o.producer.producer_epoch == epoch)
                    .then(|| (o.producer.base_sequence, o.last_sequence()))
            })
            .collect();
        loop {
            if next == seq {
                return true;
            }
            let Some(i) = others.iter().position(|o| o.0 == next) else { return false };
            next = increment_sequence(others.swap_remove(i).1, 1);
        }
    }

    /// Where record `id` is stored: every (topic, partition, offset).
    pub(crate) fn places(&self) -> HashMap<u64, Vec<(String, u32, i64)>> {
        let mut out: HashMap<u64, Vec<(String, u32, i64)>> = HashMap::new();
        for ((t, p), log) in &self.parts {
            for (off, id) in log.records.iter().enumerate() {
                out.entry(*id).or_default().push((t.clone(), *p, off as i64));
            }
        }
        out
    }
}

/// Whether sequence `a` is at or after `b` (sequences wrap at `i32::MAX`).
fn seq_ahead_or_at(a: i32, b: i32) -> bool {
    (i64::from(a) - i64::from(b)).rem_euclid(1 << 31) < (1 << 30)
}
