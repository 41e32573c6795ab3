//! Idempotent-producer state per partition: where a duplicate is detected and an
//! out-of-order sequence refused.
//!
//! Pure bookkeeping (no I/O): for each producer id the broker remembers its current epoch,
//! when it last appended, and the last [`MAX_CACHED_BATCHES`] batches' sequence ranges and
//! offsets. A producer idle for longer than the expiration is forgotten
//! ([`ProducerStates::expire`]), like Kafka's `producer.id.expiration.ms`. The state
//! survives restarts through a snapshot ([`ProducerStates::encode_snapshot`], taken at an
//! offset) plus the batch headers stored after that offset.

use std::collections::{HashMap, VecDeque};

use bytes::{Buf, BufMut};

use crate::protocol::batch::increment_sequence;
use crate::protocol::{BatchHeader, ErrorCode};

/// How many batches per (producer, partition) are remembered: the most a producer may
/// have in flight per partition.
pub const MAX_CACHED_BATCHES: usize = 5;

const SNAPSHOT_MAGIC: &[u8; 4] = b"QWPS";
const SNAPSHOT_VERSION: u16 = 1;

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

#[derive(Debug, Clone, PartialEq, Eq)]
struct ProducerEntry {
    epoch: i16,
    /// Broker time (ms) of the producer's latest append, for expiration.
    last_seen: i64,
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
#[derive(Debug, Default, Clone, PartialEq, Eq)]
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

    /// [`Self::check`] for a producer whose current epoch is `fence` (from the broker's
    /// producer-id registry; `None` when unknown or not idempotent): a batch from an older
    /// epoch is answered as a duplicate when it is a retry of one of the batches remembered
    /// for that epoch on this partition, and refused `INVALID_PRODUCER_EPOCH` otherwise,
    /// even when this partition has not seen the newer epoch yet (a producer that bumped
    /// its epoch resolves its old batches per partition; a zombie is fenced everywhere).
    pub fn check_fenced(&self, h: &BatchHeader, fence: Option<i16>) -> SequenceCheck {
        let Some(current) = fence.filter(|&c| h.is_idempotent() && h.producer.producer_epoch < c) else {
            return self.check(h);
        };
        let (pid, epoch) = (h.producer.producer_id, h.producer.producer_epoch);
        let (first, last) = (h.producer.base_sequence, h.last_sequence());
        let retry = self
            .producers
            .get(&pid)
            .filter(|e| e.epoch == epoch)
            .and_then(|e| e.batches.iter().find(|b| b.first_seq == first && b.last_seq == last));
        match retry {
            Some(b) => SequenceCheck::Duplicate(*b),
            None => SequenceCheck::Reject(
                ErrorCode::InvalidProducerEpoch,
                format!("producer {pid} epoch {epoch} is fenced: its current epoch is {current}"),
            ),
        }
    }

    /// Records a batch that was appended at broker time `append_time` (ms) with its base
    /// offset assigned.
    pub fn record(&mut self, h: &BatchHeader, append_time: i64) {
        self.record_seen(h, append_time, append_time);
    }

    /// Records a stored batch found when rebuilding the state: answers for its duplicates
    /// carry `append_time` (the batch's own timestamp stands in for the lost append time);
    /// the producer counts as seen at `seen_ms`, so a restart never expires it early.
    pub fn record_rebuilt(&mut self, h: &BatchHeader, seen_ms: i64) {
        self.record_seen(h, h.max_timestamp, seen_ms);
    }

    fn record_seen(&mut self, h: &BatchHeader, append_time: i64, seen_ms: i64) {
        if !h.is_idempotent() {
            return;
        }
        let entry = self.producers.entry(h.producer.producer_id).or_insert_with(|| ProducerEntry {
            epoch: h.producer.producer_epoch,
            last_seen: seen_ms,
            batches: VecDeque::new(),
        });
        entry.last_seen = entry.last_seen.max(seen_ms);
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

    /// Forgets every producer whose latest append is older than `cutoff_ms` (broker
    /// time); returns how many. A later batch from such a producer is treated like one
    /// from a producer never seen: sequence 0 starts afresh, another sequence is
    /// `UNKNOWN_PRODUCER_ID`.
    pub fn expire(&mut self, cutoff_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, e| e.last_seen >= cutoff_ms);
        before - self.producers.len()
    }

    /// The snapshot of this state as of log offset `offset` (every batch below it, none
    /// at or after it): magic `QWPS`, version, offset, producers sorted by id, CRC-32C.
    pub fn encode_snapshot(&self, offset: i64) -> Vec<u8> {
        let mut out = Vec::with_capacity(22 + self.producers.len() * 64);
        out.put_slice(SNAPSHOT_MAGIC);
        out.put_u16(SNAPSHOT_VERSION);
        out.put_i64(offset);
        out.put_u32(self.producers.len() as u32);
        let mut ids: Vec<_> = self.producers.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let e = &self.producers[&id];
            out.put_i64(id);
            out.put_i16(e.epoch);
            out.put_i64(e.last_seen);
            out.put_u8(e.batches.len() as u8);
            for b in &e.batches {
                out.put_i32(b.first_seq);
                out.put_i32(b.last_seq);
                out.put_i64(b.base_offset);
                out.put_i64(b.last_offset);
                out.put_i64(b.append_time);
            }
        }
        let crc = crc32c::crc32c(&out);
        out.put_u32(crc);
        out
    }

    /// Decodes [`Self::encode_snapshot`]'s output: the offset and the state.
    pub fn decode_snapshot(mut data: &[u8]) -> Result<(i64, ProducerStates), String> {
        if data.len() < SNAPSHOT_MAGIC.len() + 2 + 8 + 4 + 4 {
            return Err(format!("{} bytes is too short for a snapshot", data.len()));
        }
        let (body, crc) = data.split_at(data.len() - 4);
        let want = u32::from_be_bytes(crc.try_into().expect("4 bytes"));
        if crc32c::crc32c(body) != want {
            return Err("CRC mismatch".into());
        }
        data = body;
        if &data[..4] != SNAPSHOT_MAGIC {
            return Err("not a producer-state snapshot".into());
        }
        data.advance(4);
        let version = data.get_u16();
        if version != SNAPSHOT_VERSION {
            return Err(format!("unknown snapshot version {version}"));
        }
        let offset = data.get_i64();
        let count = data.get_u32();
        let short = || "truncated snapshot".to_string();
        let mut producers = HashMap::with_capacity((count as usize).min(1 << 16));
        for _ in 0..count {
            if data.remaining() < 19 {
                return Err(short());
            }
            let (id, epoch, last_seen, n) = (data.get_i64(), data.get_i16(), data.get_i64(), data.get_u8());
            if data.remaining() < usize::from(n) * 32 || usize::from(n) > MAX_CACHED_BATCHES {
                return Err(short());
            }
            let batches = (0..n)
                .map(|_| BatchMeta {
                    first_seq: data.get_i32(),
                    last_seq: data.get_i32(),
                    base_offset: data.get_i64(),
                    last_offset: data.get_i64(),
                    append_time: data.get_i64(),
                })
                .collect();
            producers.insert(id, ProducerEntry { epoch, last_seen, batches });
        }
        if data.has_remaining() {
            return Err(format!("{} bytes after the last producer", data.remaining()));
        }
        Ok((offset, ProducerStates { producers }))
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
    fn a_fenced_epoch_gets_its_remembered_retries_as_duplicates_and_nothing_else() {
        let mut s = ProducerStates::default();
        s.record(&header(4, 0, 0, 2, 10), 0);
        s.record(&header(4, 0, 2, 2, 12), 0);
        // The registry says epoch 1 is current; this partition has only seen epoch 0.
        let SequenceCheck::Duplicate(m) = s.check_fenced(&header(4, 0, 2, 2, -1), Some(1)) else { panic!() };
        assert_eq!(m.base_offset, 12);
        assert!(matches!(
            s.check_fenced(&header(4, 0, 4, 2, -1), Some(1)),
            SequenceCheck::Reject(ErrorCode::InvalidProducerEpoch, _)
        ));
        // The current epoch, or no fence, is the usual check.
        assert_eq!(s.check_fenced(&header(4, 1, 0, 1, -1), Some(1)), SequenceCheck::Append);
        assert_eq!(s.check_fenced(&header(4, 0, 4, 2, -1), None), SequenceCheck::Append);
        // Once the partition moved to the new epoch, the old epoch's batches are gone.
        s.record(&header(4, 1, 0, 1, 14), 0);
        assert!(matches!(
            s.check_fenced(&header(4, 0, 2, 2, -1), Some(1)),
            SequenceCheck::Reject(ErrorCode::InvalidProducerEpoch, _)
        ));
    }

    #[test]
    fn idle_producers_expire_and_start_afresh() {
        let mut s = ProducerStates::default();
        s.record(&header(1, 0, 0, 2, 0), 1_000);
        s.record(&header(2, 0, 0, 2, 2), 5_000);
        assert_eq!(s.expire(2_000), 1);
        assert_eq!(s.len(), 1);
        // Producer 1 is unknown again: sequence 0 starts afresh, another one is refused.
        assert_eq!(s.check(&header(1, 0, 0, 1, -1)), SequenceCheck::Append);
        assert!(matches!(s.check(&header(1, 0, 2, 1, -1)), SequenceCheck::Reject(ErrorCode::UnknownProducerId, _)));
        // Producer 2 still deduplicates.
        assert!(matches!(s.check(&header(2, 0, 0, 2, -1)), SequenceCheck::Duplicate(_)));
        // A rebuilt producer counts as seen at rebuild time, not at its batch timestamp.
        let mut r = ProducerStates::default();
        r.record_rebuilt(&header(3, 0, 0, 1, 0), 9_000);
        assert_eq!(r.expire(8_000), 0);
    }

    #[test]
    fn snapshots_round_trip_and_damage_is_refused() {
        let mut s = ProducerStates::default();
        for pid in 0..20 {
            for i in 0..7 {
                s.record(&header(pid, (pid % 3) as i16, i * 2, 2, pid * 100 + i64::from(i) * 2), 1000 + pid);
            }
        }
        let bytes = s.encode_snapshot(4242);
        assert_eq!(ProducerStates::decode_snapshot(&bytes).unwrap(), (4242, s.clone()));
        assert_eq!(bytes, s.clone().encode_snapshot(4242), "deterministic");
        assert_eq!(&bytes[..4], b"QWPS");
        for cut in [0, 10, bytes.len() - 1] {
            assert!(ProducerStates::decode_snapshot(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        flipped[30] ^= 1;
        assert_eq!(ProducerStates::decode_snapshot(&flipped).unwrap_err(), "CRC mismatch");
        let empty = ProducerStates::default().encode_snapshot(0);
        assert_eq!(ProducerStates::decode_snapshot(&empty).unwrap(), (0, ProducerStates::default()));
    }

    #[test]
    fn non_idempotent_batches_are_always_appended() {
        let s = ProducerStates::default();
        let h = header(-1, -1, -1, 4, 0);
        assert_eq!(s.check(&h), SequenceCheck::Append);
    }
}
