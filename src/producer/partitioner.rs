//! Partitioners: choose the partition of a record that names none.
//!
//! The producer calls [`Partitioner::partition`] on the enqueue hot path, from many
//! threads at once, so every implementation here is `Send + Sync`, lock-free (atomics
//! only) and allocation-free (an error allocates its message; the happy path never does).
//!
//! | strategy | with a key | without a key |
//! |---|---|---|
//! | [`DefaultPartitioner`] | [`kafka_key_partition`] | sticky (KIP-480) |
//! | [`KeyHashPartitioner`] | [`kafka_key_partition`] | [`PartitionerError::KeyRequired`] |
//! | [`RoundRobinPartitioner`] | ignored: 0, 1, 2, … per topic | 0, 1, 2, … per topic |
//! | [`StickyPartitioner`] | ignored: sticky | sticky |
//!
//! Keyed placement is byte-for-byte Kafka's (`murmur2`, then `toPositive`, then `% n`),
//! so a key lands on the same partition number as with a Kafka Java client.
//!
//! # Sticky partitioning
//!
//! As in Kafka ≥ 2.4 (KIP-480), keyless records of a topic all go to one partition until
//! the producer seals a batch for that partition ([`Partitioner::on_batch_sealed`]); the
//! partitioner then moves the topic to another partition chosen at random. Records thus
//! fill few, large batches instead of many small ones spread over every partition.
//!
//! # Per-topic state without a lock
//!
//! Sticky and round-robin state is kept per topic in a fixed table of
//! [`TOPIC_SLOTS`] atomics indexed by a hash of the topic name, each padded to its own
//! cache line so that topics used from different cores do not contend. No map, no lock,
//! no allocation. Two topics whose names hash to the same slot share their state: they
//! stick to (the same partition number modulo their partition counts) and switch
//! together, or interleave one round-robin counter. Either way every partition returned
//! is valid and load still spreads; only the per-topic independence is lost for that pair.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// Chooses the partition for a record that has no explicit partition.
pub trait Partitioner: Send + Sync + fmt::Debug {
    /// Returns a partition in `0..partition_count` for a record of `topic` with the given
    /// key (if any), or an error (e.g. [`KeyHashPartitioner`] without a key, or
    /// `partition_count == 0`).
    fn partition(&self, topic: &str, key: Option<&[u8]>, partition_count: u32) -> Result<u32, PartitionerError>;

    /// Called by the producer when it seals a batch for (`topic`, `partition`) of a topic
    /// with `partition_count` partitions: sticky partitioners switch partition here.
    /// The default does nothing.
    fn on_batch_sealed(&self, _topic: &str, _partition: u32, _partition_count: u32) {}
}

/// Why a partitioner could not choose a partition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartitionerError {
    /// The partitioner places records by key, and the record has none.
    #[error("topic `{topic}`: the key-hash partitioner requires a record key")]
    KeyRequired {
        /// Topic of the rejected record.
        topic: String,
    },
    /// The topic was reported with zero partitions.
    #[error("topic `{topic}` has no partitions")]
    NoPartitions {
        /// Topic of the rejected record.
        topic: String,
    },
}

/// Kafka's 32-bit murmur2 hash, exactly as `org.apache.kafka.common.utils.Utils.murmur2`
/// (seed `0x9747b28c`), including its signed result.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    // Java's `int` arithmetic wraps; `>>>` is a logical shift, hence u32 throughout.
    // `seed ^ length` uses the length truncated to a Java int, as Java's array length is.
    let mut h = SEED ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    // Java's fall-through `switch (length % 4)`.
    let tail = chunks.remainder();
    if tail.len() == 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner gives `key` among `partition_count`
/// partitions: `(murmur2(key) & 0x7fffffff) % partition_count` (Kafka's `toPositive`).
///
/// # Panics
///
/// If `partition_count` is 0.
pub fn kafka_key_partition(key: &[u8], partition_count: u32) -> u32 {
    ((murmur2(key) & 0x7fff_ffff) as u32) % partition_count
}

/// Number of per-topic state slots in sticky and round-robin partitioners (a power of
/// two). Topics hashing to the same slot share state; see the module docs.
pub const TOPIC_SLOTS: usize = 64;

/// Pads and aligns a value to 128 bytes, the false-sharing granule of x86-64 (adjacent
/// line prefetch) and recent aarch64, as `crossbeam_utils::CachePadded` does there.
#[repr(align(128))]
struct Padded<T>(T);

/// Slot of `topic` in a `TOPIC_SLOTS` table.
fn topic_slot(topic: &str) -> usize {
    (murmur2(topic.as_bytes()) as u32 as usize) & (TOPIC_SLOTS - 1)
}

fn check_count(topic: &str, partition_count: u32) -> Result<(), PartitionerError> {
    if partition_count == 0 {
        return Err(PartitionerError::NoPartitions { topic: topic.to_owned() });
    }
    Ok(())
}

/// Sticky value of a slot that no topic has used yet. Never a valid partition: the
/// largest partition of a `u32` count is `u32::MAX - 1`.
const UNSET: u32 = u32::MAX;

/// Lock-free per-topic sticky partitions, shared by [`StickyPartitioner`] and
/// [`DefaultPartitioner`].
///
/// Invariants:
/// - a slot holds `UNSET` or a partition chosen for some partition count; it goes from
///   `UNSET` to a partition once and never back;
/// - the sticky partition of a topic with `n` partitions is `slot % n`, so a slot set
///   for a larger count (by a colliding topic, or before the topic shrank) still yields a
///   valid partition without a write;
/// - all accesses are `Relaxed`: a slot publishes nothing but its own value, and every
///   value it may hold is acceptable to every reader.
struct StickyState {
    slots: [Padded<AtomicU32>; TOPIC_SLOTS],
    /// splitmix64 state; advanced with `fetch_add`, so concurrent draws never repeat.
    rng: Padded<AtomicU64>,
}

impl StickyState {
    fn new(seed: u64) -> Self {
        StickyState { slots: std::array::from_fn(|_| Padded(AtomicU32::new(UNSET))), rng: Padded(AtomicU64::new(seed)) }
    }

    /// Uniform-enough value in `0..n` (`n >= 1`), lock-free and allocation-free.
    fn random_below(&self, n: u32) -> u32 {
        // splitmix64 (Steele, Lea, Flood 2014): a Weyl sequence step, then a mixer.
        let mut z = self.rng.0.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // Lemire's multiply-shift reduction of the top 32 bits: result < n.
        (((z >> 32) * u64::from(n)) >> 32) as u32
    }

    fn partition(&self, topic: &str, n: u32) -> u32 {
        let slot = &self.slots[topic_slot(topic)].0;
        let current = slot.load(Ordering::Relaxed);
        if current != UNSET {
            return current % n;
        }
        // First use of this slot: pick at random so that producers do not all start on
        // the same partition. If another thread got there first, adopt its choice.
        let pick = self.random_below(n);
        match slot.compare_exchange(UNSET, pick, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => pick,
            // The slot never returns to UNSET, so `winner` is a partition.
            Err(winner) => winner % n,
        }
    }

    fn on_batch_sealed(&self, topic: &str, sealed: u32, n: u32) {
        if n <= 1 {
            return; // nowhere else to go
        }
        let slot = &self.slots[topic_slot(topic)].0;
        let current = slot.load(Ordering::Relaxed);
        if current == UNSET || current % n != sealed {
            return; // not sticking to the sealed partition (already switched, or keyed batch)
        }
        // A different partition, uniformly among the other n - 1. u64: p + offset may
        // exceed u32::MAX for huge n.
        let offset = 1 + u64::from(self.random_below(n - 1));
        let next = ((u64::from(sealed) + offset) % u64::from(n)) as u32;
        // Failure means another thread moved the slot since our load: the switch we wanted
        // happened already. (If the slot went away from and back to `current` in between,
        // we switch once more than needed; that only shortens one sticky stint.)
        let _ = slot.compare_exchange(current, next, Ordering::Relaxed, Ordering::Relaxed);
    }
}

impl fmt::Debug for StickyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let used = self.slots.iter().filter(|s| s.0.load(Ordering::Relaxed) != UNSET).count();
        f.debug_struct("StickyState").field("slots_used", &used).finish_non_exhaustive()
    }
}

/// Kafka's default: keyed records by [`kafka_key_partition`], keyless records sticky
/// (KIP-480): one partition per topic until a batch for it is sealed, then another one
/// at random.
#[derive(Debug)]
pub struct DefaultPartitioner {
    sticky: StickyState,
}

impl DefaultPartitioner {
    /// A partitioner whose sticky choices are seeded at random.
    pub fn new() -> Self {
        Self::with_seed(rand::random())
    }

    /// A partitioner whose sticky choices follow `seed` (reproducible tests and benches).
    pub fn with_seed(seed: u64) -> Self {
        DefaultPartitioner { sticky: StickyState::new(seed) }
    }
}

impl Default for DefaultPartitioner {
    fn default() -> Self {
        Self::new()
    }
}

impl Partitioner for DefaultPartitioner {
    fn partition(&self, topic: &str, key: Option<&[u8]>, partition_count: u32) -> Result<u32, PartitionerError> {
        check_count(topic, partition_count)?;
        Ok(match key {
            Some(key) => kafka_key_partition(key, partition_count),
            None => self.sticky.partition(topic, partition_count),
        })
    }

    fn on_batch_sealed(&self, topic: &str, partition: u32, partition_count: u32) {
        self.sticky.on_batch_sealed(topic, partition, partition_count);
    }
}

/// Keyed records by [`kafka_key_partition`]; a record without a key is rejected with
/// [`PartitionerError::KeyRequired`]. Stateless.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyHashPartitioner;

impl Partitioner for KeyHashPartitioner {
    fn partition(&self, topic: &str, key: Option<&[u8]>, partition_count: u32) -> Result<u32, PartitionerError> {
        check_count(topic, partition_count)?;
        match key {
            Some(key) => Ok(kafka_key_partition(key, partition_count)),
            None => Err(PartitionerError::KeyRequired { topic: topic.to_owned() }),
        }
    }
}

/// Ignores keys and cycles `0, 1, 2, …, n-1, 0, …` per topic.
///
/// Counters are per topic slot (see the module docs): topics sharing a slot interleave
/// one counter, so each still spreads over all partitions but no longer in strict order.
/// Counters are 64-bit, so the wrap-around skew of `counter % n` never occurs in practice.
pub struct RoundRobinPartitioner {
    counters: [Padded<AtomicU64>; TOPIC_SLOTS],
}

impl RoundRobinPartitioner {
    /// A partitioner whose every topic starts at partition 0.
    pub fn new() -> Self {
        RoundRobinPartitioner { counters: std::array::from_fn(|_| Padded(AtomicU64::new(0))) }
    }
}

impl Default for RoundRobinPartitioner {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for RoundRobinPartitioner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoundRobinPartitioner").finish_non_exhaustive()
    }
}

impl Partitioner for RoundRobinPartitioner {
    fn partition(&self, topic: &str, _key: Option<&[u8]>, partition_count: u32) -> Result<u32, PartitionerError> {
        check_count(topic, partition_count)?;
        // Relaxed: the counter orders nothing else; fetch_add alone makes each call take a
        // distinct ticket.
        let ticket = self.counters[topic_slot(topic)].0.fetch_add(1, Ordering::Relaxed);
        Ok((ticket % u64::from(partition_count)) as u32)
    }
}

/// Ignores keys; every record is placed sticky (as keyless records in
/// [`DefaultPartitioner`]).
#[derive(Debug)]
pub struct StickyPartitioner {
    sticky: StickyState,
}

impl StickyPartitioner {
    /// A partitioner whose sticky choices are seeded at random.
    pub fn new() -> Self {
        Self::with_seed(rand::random())
    }

    /// A partitioner whose sticky choices follow `seed` (reproducible tests and benches).
    pub fn with_seed(seed: u64) -> Self {
        StickyPartitioner { sticky: StickyState::new(seed) }
    }
}

impl Default for StickyPartitioner {
    fn default() -> Self {
        Self::new()
    }
}

impl Partitioner for StickyPartitioner {
    fn partition(&self, topic: &str, _key: Option<&[u8]>, partition_count: u32) -> Result<u32, PartitionerError> {
        check_count(topic, partition_count)?;
        Ok(self.sticky.partition(topic, partition_count))
    }

    fn on_batch_sealed(&self, topic: &str, partition: u32, partition_count: u32) {
        self.sticky.on_batch_sealed(topic, partition, partition_count);
    }
}

/// Which partitioner a producer uses; the configuration-facing form of [`Partitioner`].
///
/// Parses from (and displays as) `default`, `key-hash`, `round-robin`, `sticky`;
/// `Custom` displays as `custom` and cannot be parsed.
#[derive(Debug, Clone, Default)]
pub enum PartitionStrategy {
    /// [`DefaultPartitioner`]: key hash, sticky without a key.
    #[default]
    Default,
    /// [`KeyHashPartitioner`]: key hash, key required.
    KeyHash,
    /// [`RoundRobinPartitioner`]: cycle through partitions, ignoring keys.
    RoundRobin,
    /// [`StickyPartitioner`]: sticky, ignoring keys.
    Sticky,
    /// A user-supplied partitioner, shared as is by [`PartitionStrategy::build`].
    Custom(Arc<dyn Partitioner>),
}

impl PartitionStrategy {
    /// Names accepted by [`FromStr`], in declaration order.
    pub const NAMES: [&'static str; 4] = ["default", "key-hash", "round-robin", "sticky"];

    /// A partitioner for this strategy: a fresh one (fresh sticky and round-robin state)
    /// for the built-in strategies, the shared one for `Custom`.
    pub fn build(&self) -> Arc<dyn Partitioner> {
        match self {
            PartitionStrategy::Default => Arc::new(DefaultPartitioner::new()),
            PartitionStrategy::KeyHash => Arc::new(KeyHashPartitioner),
            PartitionStrategy::RoundRobin => Arc::new(RoundRobinPartitioner::new()),
            PartitionStrategy::Sticky => Arc::new(StickyPartitioner::new()),
            PartitionStrategy::Custom(partitioner) => Arc::clone(partitioner),
        }
    }

    /// The strategy's name: one of [`Self::NAMES`], or `custom`.
    pub fn name(&self) -> &'static str {
        match self {
            PartitionStrategy::Default => "default",
            PartitionStrategy::KeyHash => "key-hash",
            PartitionStrategy::RoundRobin => "round-robin",
            PartitionStrategy::Sticky => "sticky",
            PartitionStrategy::Custom(_) => "custom",
        }
    }
}

impl fmt::Display for PartitionStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A string that names no built-in partition strategy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown partition strategy `{input}`: expected one of default, key-hash, round-robin, sticky")]
pub struct ParsePartitionStrategyError {
    /// The rejected input.
    pub input: String,
}

impl FromStr for PartitionStrategy {
    type Err = ParsePartitionStrategyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "default" => Ok(PartitionStrategy::Default),
            "key-hash" => Ok(PartitionStrategy::KeyHash),
            "round-robin" => Ok(PartitionStrategy::RoundRobin),
            "sticky" => Ok(PartitionStrategy::Sticky),
            _ => Err(ParsePartitionStrategyError { input: s.to_owned() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Kafka's `UtilsTest.testMurmur2` vectors.
    const KAFKA_VECTORS: [(&[u8], i32); 6] = [
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"a-little-bit-longer-string", -1486304829),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        (b"abc", 479470107), // Kafka writes this one as new byte[] {'a', 'b', 'c'}
    ];

    fn sticky_kinds() -> Vec<Arc<dyn Partitioner>> {
        vec![Arc::new(StickyPartitioner::with_seed(1)), Arc::new(DefaultPartitioner::with_seed(2))]
    }

    #[test]
    fn murmur2_matches_kafka_vectors() {
        for (input, expected) in KAFKA_VECTORS {
            assert_eq!(murmur2(input), expected, "murmur2({:?})", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn kafka_key_partition_matches_to_positive_mod() {
        for (input, hash) in KAFKA_VECTORS {
            let expected = ((hash & 0x7fff_ffff) % 10) as u32;
            assert_eq!(kafka_key_partition(input, 10), expected);
            assert_eq!(DefaultPartitioner::new().partition("t", Some(input), 10), Ok(expected));
            assert_eq!(KeyHashPartitioner.partition("t", Some(input), 10), Ok(expected));
        }
    }

    #[test]
    fn same_key_same_partition() {
        let default = DefaultPartitioner::new();
        for key in [&b"user-42"[..], b"", b"k"] {
            let first = default.partition("orders", Some(key), 12).unwrap();
            for _ in 0..100 {
                assert_eq!(default.partition("orders", Some(key), 12), Ok(first));
                // Sealing batches must not move keyed records.
                default.on_batch_sealed("orders", first, 12);
                assert_eq!(KeyHashPartitioner.partition("other", Some(key), 12), Ok(first));
            }
        }
    }

    #[test]
    fn keys_spread_evenly() {
        let mut rng = StdRng::seed_from_u64(0x5eed);
        let mut counts = [0u32; 8];
        for _ in 0..10_000 {
            let key: [u8; 16] = rng.gen();
            counts[kafka_key_partition(&key, 8) as usize] += 1;
        }
        for (p, &c) in counts.iter().enumerate() {
            assert!((800..=1700).contains(&c), "partition {p} got {c} of 10000 keys: {counts:?}");
        }
    }

    #[test]
    fn key_hash_requires_key() {
        assert_eq!(
            KeyHashPartitioner.partition("payments", None, 4),
            Err(PartitionerError::KeyRequired { topic: "payments".into() })
        );
        let msg = KeyHashPartitioner.partition("payments", None, 4).unwrap_err().to_string();
        assert!(msg.contains("payments") && msg.contains("key"), "{msg}");
    }

    #[test]
    fn zero_partitions_is_an_error_for_every_kind() {
        let all: [Arc<dyn Partitioner>; 4] = [
            Arc::new(DefaultPartitioner::new()),
            Arc::new(KeyHashPartitioner),
            Arc::new(RoundRobinPartitioner::new()),
            Arc::new(StickyPartitioner::new()),
        ];
        for p in all {
            assert_eq!(p.partition("t", Some(b"k"), 0), Err(PartitionerError::NoPartitions { topic: "t".into() }));
            p.on_batch_sealed("t", 0, 0); // must not panic
        }
    }

    #[test]
    fn round_robin_cycles_all_partitions_evenly() {
        let rr = RoundRobinPartitioner::new();
        let picks: Vec<u32> = (0..10).map(|_| rr.partition("t", Some(b"ignored"), 5).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]);
        let mut counts = [0u32; 7];
        for _ in 0..7 * 1000 {
            counts[rr.partition("u", None, 7).unwrap() as usize] += 1;
        }
        assert_eq!(counts, [1000; 7]);
    }

    #[test]
    fn round_robin_is_per_topic() {
        let rr = RoundRobinPartitioner::new();
        let (a, b) = ("topic-a", "topic-b");
        assert_ne!(topic_slot(a), topic_slot(b), "test topics must not collide");
        // Interleaving two topics must not make either skip partitions.
        for i in 0..8 {
            assert_eq!(rr.partition(a, None, 2), Ok(i % 2));
            assert_eq!(rr.partition(b, None, 2), Ok(i % 2));
        }
    }

    #[test]
    fn sticky_stays_until_its_batch_is_sealed() {
        for p in sticky_kinds() {
            let first = p.partition("t", None, 6).unwrap();
            assert!(first < 6);
            for _ in 0..100 {
                assert_eq!(p.partition("t", None, 6), Ok(first));
            }
            // Sealing some other partition's batch does not move it.
            p.on_batch_sealed("t", (first + 1) % 6, 6);
            assert_eq!(p.partition("t", None, 6), Ok(first));
            // Sealing its own batch does, to a different partition that then sticks.
            p.on_batch_sealed("t", first, 6);
            let second = p.partition("t", None, 6).unwrap();
            assert!(second < 6 && second != first, "{p:?}: {first} -> {second}");
            for _ in 0..100 {
                assert_eq!(p.partition("t", None, 6), Ok(second));
            }
        }
    }

    #[test]
    fn sticky_with_one_partition_is_always_zero() {
        for p in sticky_kinds() {
            for _ in 0..100 {
                assert_eq!(p.partition("solo", None, 1), Ok(0));
                p.on_batch_sealed("solo", 0, 1);
            }
        }
    }

    #[test]
    fn sticky_uses_every_partition_over_many_seals() {
        for p in sticky_kinds() {
            let mut seen = [0u32; 8];
            let mut previous = None;
            for _ in 0..2000 {
                let current = p.partition("t", None, 8).unwrap();
                assert_ne!(Some(current), previous, "a seal must switch partition");
                seen[current as usize] += 1;
                p.on_batch_sealed("t", current, 8);
                previous = Some(current);
            }
            assert!(seen.iter().all(|&c| c > 100), "{p:?}: {seen:?}");
        }
    }

    #[test]
    fn sticky_is_per_topic() {
        let p = StickyPartitioner::with_seed(7);
        let (a, b) = ("topic-a", "topic-b");
        assert_ne!(topic_slot(a), topic_slot(b));
        let pa = p.partition(a, None, 1000).unwrap();
        let pb = p.partition(b, None, 1000).unwrap();
        p.on_batch_sealed(a, pa, 1000);
        assert_ne!(p.partition(a, None, 1000), Ok(pa));
        assert_eq!(p.partition(b, None, 1000), Ok(pb), "sealing topic a must not move topic b");
    }

    #[test]
    fn sticky_ignores_keys() {
        let p = StickyPartitioner::with_seed(3);
        let first = p.partition("t", Some(b"x"), 16).unwrap();
        for i in 0..100u32 {
            assert_eq!(p.partition("t", Some(&i.to_le_bytes()), 16), Ok(first));
        }
    }

    #[test]
    fn concurrent_calls_return_valid_partitions() {
        const N: u32 = 7;
        let all: [Arc<dyn Partitioner>; 4] = [
            Arc::new(DefaultPartitioner::new()),
            Arc::new(KeyHashPartitioner),
            Arc::new(RoundRobinPartitioner::new()),
            Arc::new(StickyPartitioner::new()),
        ];
        for partitioner in all {
            let threads: Vec<_> = (0..4u32)
                .map(|t| {
                    let partitioner = Arc::clone(&partitioner);
                    std::thread::spawn(move || {
                        let topics = ["a", "b", "c"];
                        for i in 0..100_000u32 {
                            let topic = topics[(i % 3) as usize];
                            let key = (i ^ t).to_le_bytes();
                            let p = partitioner.partition(topic, Some(&key), N).unwrap();
                            assert!(p < N, "{partitioner:?} returned {p}");
                            if i % 64 == 0 {
                                partitioner.on_batch_sealed(topic, p, N);
                            }
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
        }
    }

    #[test]
    fn strategy_parses_the_four_names() {
        let expected = ["DefaultPartitioner", "KeyHashPartitioner", "RoundRobinPartitioner", "StickyPartitioner"];
        for (name, type_name) in PartitionStrategy::NAMES.into_iter().zip(expected) {
            let strategy: PartitionStrategy = name.parse().unwrap();
            assert_eq!(strategy.to_string(), name);
            let built = strategy.build();
            assert!(format!("{built:?}").starts_with(type_name), "{name} built {built:?}");
            assert!(built.partition("t", Some(b"k"), 3).unwrap() < 3);
        }
        assert_eq!(PartitionStrategy::default().name(), "default");
    }

    #[test]
    fn strategy_rejects_other_names() {
        for bad in ["", "Default", "keyhash", "key_hash", "roundrobin", " sticky", "random"] {
            let err = bad.parse::<PartitionStrategy>().unwrap_err();
            assert_eq!(err, ParsePartitionStrategyError { input: bad.to_owned() });
            let msg = err.to_string();
            assert!(msg.contains(&format!("`{bad}`")), "{msg}");
            for name in PartitionStrategy::NAMES {
                assert!(msg.contains(name), "{msg}");
            }
        }
    }

    #[test]
    fn custom_strategy_shares_the_given_partitioner() {
        let custom: Arc<dyn Partitioner> = Arc::new(RoundRobinPartitioner::new());
        let strategy = PartitionStrategy::Custom(Arc::clone(&custom));
        assert_eq!(strategy.name(), "custom");
        let built = strategy.build();
        assert!(Arc::ptr_eq(&built, &custom));
        assert_eq!(built.partition("t", None, 4), Ok(0));
        assert_eq!(custom.partition("t", None, 4), Ok(1), "state is shared, not copied");
    }

    proptest! {
        #[test]
        fn every_partitioner_returns_a_valid_partition(
            topic in ".{0,40}",
            key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
            n in 1u32..=u32::MAX,
            sealed in any::<u32>(),
        ) {
            let all: [Box<dyn Partitioner>; 4] = [
                Box::new(DefaultPartitioner::new()),
                Box::new(KeyHashPartitioner),
                Box::new(RoundRobinPartitioner::new()),
                Box::new(StickyPartitioner::new()),
            ];
            for p in &all {
                match p.partition(&topic, key.as_deref(), n) {
                    Ok(partition) => prop_assert!(partition < n),
                    Err(e) => prop_assert_eq!(e, PartitionerError::KeyRequired { topic: topic.clone() }),
                }
                p.on_batch_sealed(&topic, sealed % n, n);
                if let Ok(partition) = p.partition(&topic, key.as_deref(), n) {
                    prop_assert!(partition < n);
                }
            }
        }
    }
}
