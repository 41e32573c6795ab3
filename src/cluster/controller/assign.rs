//! Replica assignment for new partitions.
//!
//! Partition `p` of a topic gets `rf` consecutive brokers of the sorted live-broker ring,
//! starting at `(hash(topic) + p) mod n`: leaders (the first replica) rotate over every
//! broker, each broker holds about `partitions × rf / n` replicas, and topics start at
//! different brokers so that many one-partition topics do not all land on the lowest id.
//! Deterministic, so two controllers deciding the same view agree. Assignment is fixed
//! once written: there is no reassignment when brokers join later.

/// Replicas (first = preferred leader) for each of `partitions`, over `live` broker ids.
/// `rf` must be between 1 and `live.len()`.
pub fn assign_replicas(topic: &str, partitions: &[u32], rf: usize, live: &[u32]) -> Vec<Vec<u32>> {
    let mut ring = live.to_vec();
    ring.sort_unstable();
    ring.dedup();
    let n = ring.len();
    assert!(rf >= 1 && rf <= n, "replication factor {rf} with {n} live brokers");
    let start = crc32c::crc32c(topic.as_bytes()) as usize;
    partitions
        .iter()
        .map(|&p| (0..rf).map(|k| ring[(start.wrapping_add(p as usize).wrapping_add(k)) % n]).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn replicas_are_distinct_and_leaders_rotate_evenly() {
        let live = [3, 1, 2];
        let parts: Vec<u32> = (0..6).collect();
        let a = assign_replicas("orders", &parts, 3, &live);
        let mut leaders: BTreeMap<u32, usize> = BTreeMap::new();
        for r in &a {
            assert_eq!(r.len(), 3);
            let mut s = r.clone();
            s.sort_unstable();
            assert_eq!(s, vec![1, 2, 3], "replicas of a partition are distinct brokers");
            *leaders.entry(r[0]).or_default() += 1;
        }
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
        // Deterministic, and consistent when partitions are added later.
        assert_eq!(assign_replicas("orders", &[4, 5], 3, &live), a[4..].to_vec());
    }

    #[test]
    fn replication_factor_below_broker_count_spreads_replicas() {
        let live = [1, 2, 3, 4];
        let a = assign_replicas("t", &(0..8).collect::<Vec<_>>(), 2, &live);
        let mut count: BTreeMap<u32, usize> = BTreeMap::new();
        for r in &a {
            assert_ne!(r[0], r[1]);
            for b in r {
                *count.entry(*b).or_default() += 1;
            }
        }
        assert!(count.values().all(|&c| c == 4), "{count:?}");
    }
}
