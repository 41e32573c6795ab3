//! Idempotent-producer state per partition: where a duplicate is detected and an
//! out-of-order sequence refused.
//!
//! Pure bookkeeping (no I/O): for each producer id the broker remembers its current epoch
//! and the last [`MAX_CACHED_BATCHES`] batches' sequence ranges and offsets. The state
//! is rebuilt from the log's batch headers on restart, so dedup survives a restart.

use std::collections::{HashMap, VecDeque};

use crate::protocol::batch::increment_sequence;
use crate::protocol::{BatchHeader, ErrorCode};

/// How many batches per (producer, partition) are remembered: the most a producer may
/// have in flight per partition.
pub const MAX_CACHED_BATCHES: usize = 5;

/// A remembered batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    /// Sequence of the first record.
    pub first_seq: i32,
    /// Sequence of the last record.
    pub last_seq: i32,
    /// Offset assigned to the first record.
    pub base_offset: i64,
    /// Offset of the last record.
    pub last_offset: i64,
    /// Broker time of the append (ms).
    pub append_time: i64,
}

#[derive(Debug, Clone)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchMeta>,
}

/// What to do with an incoming batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Append it (not idempotent, or the next sequence).
    Append,
    /// A retry of a batch already stored: answer success with its original offset.
    Duplicate(BatchMeta),
    /// Refuse it with this code and message.
    Reject(ErrorCode, String),
}

/// Producer state for one partition.
#[derive(Debug, Default, Clone)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
}

impl ProducerStates {
    /// Decides what to do with a batch whose header is `h` (base offset not yet assigned).
    pub fn check(&self, h: &BatchHeader) -> SequenceCheck {
        if !h.is_idempotent() {
            return SequenceCheck::Append;
        }
        let (pid, epoch, seq) = (h.producer.producer_id, h.producer.producer_epoch, h.producer.base_sequence);
        if epoch < 0 || seq < 0 {
            return SequenceCheck::Reject(
                ErrorCode::InvalidRequest,
                format!("producer {pid}: epoch {epoch} and base sequence {seq} must not be negative"),
            );
        }
        let Some(entry) = self.producers.get(&pid) else {
            return if seq == 0 {
                SequenceCheck::Append
            } else {
                SequenceCheck::Reject(
                    ErrorCode::UnknownProducerId,
                    format!("no state for producer {pid} on this partition and sequence {seq} is not 0"),
                )
            };
        };
        if epoch < entry.epoch {
            return SequenceCheck::Reject(
                ErrorCode::InvalidProducerEpoch,
                format!("producer {pid} epoch {epoch} is older than the current epoch {}", entry.epoch),
            );
        }
        if epoch > entry.epoch {
            return if seq == 0 {
                SequenceCheck::Append
            } else {
                SequenceCheck::Reject(
                    ErrorCode::OutOfOrderSequence,
                    format!("producer {pid} new epoch {epoch} must start at sequence 0, got {seq}"),
                )
            };
        }
        let last_seq = h.last_sequence();
        if let Some(b) = entry.batches.iter().find(|b| b.first_seq == seq && b.last_seq == last_seq) {
            return SequenceCheck::Duplicate(*b);
        }
        match entry.batches.back() {
            None if seq == 0 => SequenceCheck::Append,
            None => SequenceCheck::Reject(
                ErrorCode::UnknownProducerId,
                format!("no batches remembered for producer {pid} epoch {epoch}; sequence {seq} is not 0"),
            ),
            Some(last) if seq == increment_sequence(last.last_seq, 1) => SequenceCheck::Append,
            Some(last) => SequenceCheck::Reject(
                ErrorCode::OutOfOrderSequence,
                format!(
                    "producer {pid} epoch {epoch}: expected sequence {}, got {seq}",
                    increment_sequence(last.last_seq, 1)
                ),
            ),
        }
    }

    /// Records a batch that was appended with its base offset assigned.
    pub fn record(&mut self, h: &BatchHeader, append_time: i64) {
        if !h.is_idempotent() {
            return;
        }
        let entry = self
            .producers
            .entry(h.producer.producer_id)
            .or_insert_with(|| ProducerEntry { epoch: h.producer.producer_epoch, batches: VecDeque::new() });
        if h.producer.producer_epoch > entry.epoch {
            entry.epoch = h.producer.producer_epoch;
            entry.batches.clear();
        }
        entry.batches.push_back(BatchMeta {
            first_seq: h.producer.base_sequence,
            last_seq: h.last_sequence(),
            base_offset: h.base_offset,
            last_offset: h.last_offset(),
            append_time,
        });
        while entry.batches.len() > MAX_CACHED_BATCHES {
            entry.batches.pop_front();
        }
    }

    /// Number of producers with state on this partition.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// True when no producer has state here.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{BatchBuilder, Compression, ProducerStamp, Record};

    fn header(pid: i64, epoch: i16, seq: i32, records: u32, base_offset: i64) -> BatchHeader {
        let mut b = BatchBuilder::new();
        for _ in 0..records {
            b.push(&Record { timestamp: 1, key: None, value: None, headers: vec![] });
        }
        let bytes = b.seal(
            Compression::None,
            None,
            ProducerStamp { producer_id: pid, producer_epoch: epoch, base_sequence: seq },
        );
        let mut h = BatchHeader::parse(&bytes).unwrap().unwrap();
        h.base_offset = base_offset;
        h
    }

    #[test]
    fn in_order_batches_append_and_retries_are_duplicates_with_original_offsets() {
        let mut s = ProducerStates::default();
        let mut offset = 0;
        for i in 0..8 {
            let h = header(1, 0, i * 3, 3, offset);
            assert_eq!(s.check(&h), SequenceCheck::Append, "batch {i}");
            s.record(&h, 100 + i as i64);
            offset += 3;
        }
        // The last five batches (sequences 9..23) are remembered.
        let SequenceCheck::Duplicate(meta) = s.check(&header(1, 0, 9, 3, -1)) else { panic!("not a duplicate") };
        assert_eq!((meta.base_offset, meta.last_offset, meta.append_time), (9, 11, 103));
        // Older than the window: out of order, never silently re-appended.
        assert!(matches!(s.check(&header(1, 0, 6, 3, -1)), SequenceCheck::Reject(ErrorCode::OutOfOrderSequence, _)));
    }

    #[test]
    fn gaps_epochs_and_unknown_producers() {
        let mut s = ProducerStates::default();
        let h = header(7, 2, 0, 1, 0);
        s.record(&h, 0);
        assert!(matches!(s.check(&header(7, 2, 5, 1, -1)), SequenceCheck::Reject(ErrorCode::OutOfOrderSequence, _)));
        assert!(matches!(s.check(&header(7, 1, 1, 1, -1)), SequenceCheck::Reject(ErrorCode::InvalidProducerEpoch, _)));
        assert!(matches!(s.check(&header(7, 3, 4, 1, -1)), SequenceCheck::Reject(ErrorCode::OutOfOrderSequence, _)));
        assert_eq!(s.check(&header(7, 3, 0, 1, -1)), SequenceCheck::Append);
        assert!(matches!(s.check(&header(8, 0, 3, 1, -1)), SequenceCheck::Reject(ErrorCode::UnknownProducerId, _)));
        assert_eq!(s.check(&header(8, 0, 0, 1, -1)), SequenceCheck::Append);
        // A new epoch resets the remembered batches.
        s.record(&header(7, 3, 0, 1, 1), 0);
        assert_eq!(s.check(&header(7, 3, 1, 1, -1)), SequenceCheck::Append);
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        let mut s = ProducerStates::default();
        let mut first = header(3, 0, 0, 1, 0);
        first.producer.base_sequence = 0;
        s.record(&first, 0);
        // Jump the remembered sequence near the top by recording a batch there directly.
        let top = header(3, 0, i32::MAX - 1, 2, 1);
        s.producers.get_mut(&3).unwrap().batches.clear();
        s.record(&top, 0);
        assert_eq!(s.check(&header(3, 0, 0, 1, -1)), SequenceCheck::Append);
    }

    #[test]
    fn non_idempotent_batches_are_always_appended() {
        let s = ProducerStates::default();
        let h = header(-1, -1, -1, 4, 0);
        assert_eq!(s.check(&h), SequenceCheck::Append);
    }
}
