use super::*;

const LAG: Duration = Duration::from_secs(10);

fn state(isr: &[u32]) -> PartitionState {
    PartitionState {
        replicas: vec![1, 2, 3],
        leader: Some(1),
        leader_epoch: 5,
        isr: isr.to_vec(),
        leader_session: 9,
        partition_epoch: 0,
    }
}

fn set(isr: &[u32], min: usize, now: Instant) -> ReplicaSet {
    ReplicaSet::new(1, &state(isr), 100, 100, 100, now, ReplicaConfig { min_insync: min, lag_max: LAG })
}

#[test]
fn acks_all_needs_every_in_sync_fsync_and_the_leaders() {
    let t0 = Instant::now();
    let mut r = set(&[1, 2, 3], 2, t0);
    assert!(r.check_acks_all().is_ok());
    r.on_append(110);
    assert!(!r.is_committed(110));
    // Follower 2 fetched everything and fsync'd it; follower 3 has it but not fsync'd.
    assert!(!r.on_fetch(t0, 2, 110, 110).unwrap());
    assert!(!r.on_fetch(t0, 3, 110, 100).unwrap());
    assert!(!r.is_committed(110), "the leader has not fsync'd yet");
    assert!(!r.on_durable(110), "follower 3 has not fsync'd yet");
    assert!(r.on_fetch(t0, 3, 110, 110).unwrap());
    assert!(r.is_committed(110));
    assert_eq!(r.high_watermark(), 110);
}

#[test]
fn a_follower_cannot_claim_more_durable_than_it_fetched() {
    let t0 = Instant::now();
    let mut r = set(&[1, 2], 2, t0);
    r.on_append(120);
    r.on_durable(120);
    r.on_fetch(t0, 2, 105, 500).unwrap();
    assert_eq!(r.high_watermark(), 105);
    assert_eq!(r.on_fetch(t0, 2, 121, 121), Err(FetchRefused::PastEnd { offset: 121, end: 120 }));
    assert_eq!(r.on_fetch(t0, 9, 0, 0), Err(FetchRefused::NotReplica(9)));
}

#[test]
fn below_min_insync_acks_all_is_refused_and_the_high_watermark_stops() {
    let t0 = Instant::now();
    let mut r = set(&[1], 2, t0);
    assert_eq!(r.check_acks_all(), Err(NotEnoughReplicas { isr: vec![1], min: 2 }));
    r.on_append(110);
    assert!(!r.on_durable(110), "KIP-966: no advance with the ISR below the minimum");
    assert_eq!(r.high_watermark(), 100);
    // Follower 2 catches up and is written back into the ISR: the HW moves again.
    r.on_fetch(t0, 2, 110, 110).unwrap();
    let proposal = r.isr_proposal(t0).unwrap();
    assert_eq!(proposal, vec![1, 2]);
    r.propose(&proposal);
    assert_eq!(r.isr_proposal(t0), None, "one change at a time");
    assert!(r.on_state(&state(&[1, 2])));
    assert_eq!(r.high_watermark(), 110);
    assert!(r.check_acks_all().is_ok());
}

#[test]
fn a_lagging_follower_is_proposed_out_but_counts_until_the_store_agrees() {
    let t0 = Instant::now();
    let mut r = set(&[1, 2, 3], 2, t0);
    r.on_append(110);
    r.on_durable(110);
    r.on_fetch(t0, 2, 110, 110).unwrap();
    // 3 never fetches. Before lag_max nothing changes.
    assert_eq!(r.isr_proposal(t0 + LAG / 2), None);
    let later = t0 + LAG + Duration::from_secs(1);
    r.on_fetch(later, 2, 110, 110).unwrap();
    let proposal = r.isr_proposal(later).unwrap();
    assert_eq!(proposal, vec![1, 2]);
    r.propose(&proposal);
    assert!(!r.is_committed(110), "3 still counts while the shrink is unwritten");
    r.proposal_failed();
    assert!(!r.is_committed(110));
    r.propose(&proposal);
    assert!(r.on_state(&state(&[1, 2])));
    assert!(r.is_committed(110));
}

#[test]
fn an_expansion_counts_the_new_member_before_it_is_written() {
    let t0 = Instant::now();
    let mut r = set(&[1, 2], 2, t0);
    r.on_append(110);
    r.on_durable(110);
    r.on_fetch(t0, 3, 110, 110).unwrap();
    r.on_fetch(t0, 2, 105, 105).unwrap();
    let p = r.isr_proposal(t0).unwrap();
    assert_eq!(p, vec![1, 2, 3]);
    r.propose(&p);
    r.on_append(120);
    r.on_durable(120);
    r.on_fetch(t0, 2, 120, 120).unwrap();
    assert_eq!(r.high_watermark(), 110, "3 (pending member) holds the HW at its durable offset");
}

#[test]
fn caught_up_as_of_the_previous_fetch_keeps_a_busy_follower_in_sync() {
    // Under constant load the follower never asks for the exact current end, but it asks
    // for at least the end the leader had at its previous fetch: it stays in sync.
    let t0 = Instant::now();
    let mut r = set(&[1, 2, 3], 2, t0);
    let mut end = 100;
    for i in 0..30u64 {
        let now = t0 + Duration::from_secs(i);
        let asked = end;
        end += 10;
        r.on_append(end);
        r.on_fetch(now, 2, asked, asked).unwrap();
        r.on_fetch(now, 3, asked, asked).unwrap();
    }
    assert_eq!(r.isr_proposal(t0 + Duration::from_secs(30)), None);
    // A follower that stops progressing falls out after lag_max.
    let stuck = r.follower(3).unwrap().fetch_offset;
    for i in 30..45u64 {
        let now = t0 + Duration::from_secs(i);
        let asked = end;
        end += 10;
        r.on_append(end);
        r.on_fetch(now, 2, asked, asked).unwrap();
        r.on_fetch(now, 3, stuck, stuck).unwrap();
    }
    assert_eq!(r.isr_proposal(t0 + Duration::from_secs(45)), Some(vec![1, 2]));
}

#[test]
fn a_returning_replica_joins_only_after_reaching_the_epoch_start_and_the_hw() {
    let t0 = Instant::now();
    let mut r = set(&[1, 2], 2, t0);
    r.on_append(150);
    r.on_durable(150);
    r.on_fetch(t0, 2, 150, 150).unwrap();
    assert_eq!(r.high_watermark(), 150);
    r.on_fetch(t0, 3, 90, 90).unwrap();
    assert_eq!(r.isr_proposal(t0), None, "behind the epoch start (100)");
    r.on_fetch(t0, 3, 140, 140).unwrap();
    assert_eq!(r.isr_proposal(t0), None, "behind the high watermark");
    r.on_fetch(t0, 3, 150, 150).unwrap();
    assert_eq!(r.isr_proposal(t0), Some(vec![1, 2, 3]));
}

#[test]
fn replication_lag_is_the_slowest_in_sync_followers_distance_from_the_log_end() {
    let t0 = Instant::now();
    let mut r = set(&[1, 2, 3], 2, t0);
    // Nobody fetched in this leadership yet: counted from the epoch start (100).
    assert_eq!(r.replication_lag(), 0);
    r.on_append(130);
    assert_eq!(r.replication_lag(), 30);
    r.on_fetch(t0, 2, 130, 130).unwrap();
    r.on_fetch(t0, 3, 120, 120).unwrap();
    assert_eq!(r.replication_lag(), 10, "follower 3 is 10 behind");
    r.on_fetch(t0, 3, 130, 130).unwrap();
    assert_eq!(r.replication_lag(), 0);
    // A leader alone has no lag.
    let mut alone = set(&[1], 1, t0);
    alone.on_append(150);
    assert_eq!(alone.replication_lag(), 0);
}
