use super::*;
use proptest::prelude::*;

fn cache(entries: &[(i32, i64)]) -> EpochCache {
    EpochCache::from_entries(entries.iter().map(|&(epoch, start_offset)| EpochEntry { epoch, start_offset }).collect())
        .unwrap()
}

/// The cache of a log given the epoch of each offset.
fn cache_of(log: &[i32]) -> EpochCache {
    let mut c = EpochCache::default();
    for (offset, &e) in log.iter().enumerate() {
        c.assign(e, offset as i64).unwrap();
    }
    c
}

/// Runs the follower side of KIP-101 against a leader to the end; returns the truncation
/// point and how many questions it took.
fn reconcile(leader: &EpochCache, leader_end: i64, follower: &EpochCache, follower_end: i64) -> (i64, usize) {
    let mut f = follower.clone();
    let mut end = follower_end;
    let mut epoch = f.latest_epoch();
    for round in 1..100 {
        if epoch == UNDEFINED_EPOCH {
            return (end, round - 1);
        }
        match follower_truncation(&f, end, leader.end_offset_for(epoch, leader_end)) {
            TruncationStep::Done { truncate_to } => return (truncate_to, round),
            TruncationStep::AskAgain { truncate_to, epoch: next } => {
                assert!(next < epoch, "epochs asked must strictly decrease");
                end = truncate_to;
                f.truncate_from_end(end);
                epoch = next;
            }
        }
    }
    panic!("no convergence");
}

#[test]
fn assign_only_grows_and_replaces_empty_entries() {
    let mut c = EpochCache::default();
    assert!(c.assign(0, 0).unwrap());
    assert!(!c.assign(0, 5).unwrap(), "the same epoch again is a no-op");
    assert!(c.assign(2, 10).unwrap());
    assert_eq!(c.assign(1, 12).unwrap_err().latest, 2);
    // A new epoch at the same start replaces an entry that never got a batch.
    assert!(c.assign(3, 10).unwrap());
    assert_eq!(c, cache(&[(0, 0), (3, 10)]));
    assert_eq!(
        (c.epoch_for(0), c.epoch_for(9), c.epoch_for(10), c.epoch_for(99)),
        (Some(0), Some(0), Some(3), Some(3))
    );
    assert_eq!(EpochCache::default().epoch_for(0), None);
}

#[test]
fn end_offset_for_answers_the_largest_epoch_not_above_the_question() {
    let c = cache(&[(1, 0), (2, 8), (4, 15)]);
    assert_eq!(c.end_offset_for(1, 30), (1, 8));
    assert_eq!(c.end_offset_for(2, 30), (2, 15));
    assert_eq!(c.end_offset_for(3, 30), (2, 15), "epoch 3 never led here: answer for 2");
    assert_eq!(c.end_offset_for(4, 30), (4, 30));
    assert_eq!(c.end_offset_for(9, 30), (4, 30));
    assert_eq!(c.end_offset_for(0, 30), (UNDEFINED_EPOCH, 0));
    assert_eq!(EpochCache::default().end_offset_for(3, 0), (UNDEFINED_EPOCH, UNDEFINED_OFFSET));
}

#[test]
fn kip_279_case_needs_a_second_question() {
    // Follower: epoch 1 on [0,10), epoch 3 on [10,20). Leader: 1 on [0,8), 2 on [8,15),
    // 4 from 15. Offsets 8 and 9 are epoch 1 on the follower but epoch 2 on the leader:
    // a single round would keep them (truncating to 10).
    let leader = cache(&[(1, 0), (2, 8), (4, 15)]);
    let follower = cache(&[(1, 0), (3, 10)]);
    assert_eq!(
        follower_truncation(&follower, 20, leader.end_offset_for(3, 30)),
        TruncationStep::AskAgain { truncate_to: 10, epoch: 1 }
    );
    assert_eq!(reconcile(&leader, 30, &follower, 20), (8, 2));
}

#[test]
fn old_leader_tail_in_its_own_epoch_is_cut() {
    // Old leader wrote epoch 3 up to 20; the new leader (epoch 4) had replicated up to 15.
    let new_leader = cache(&[(0, 0), (3, 5), (4, 15)]);
    let old = cache(&[(0, 0), (3, 5)]);
    assert_eq!(reconcile(&new_leader, 18, &old, 20), (15, 1));
    // A follower that is simply behind keeps everything.
    assert_eq!(reconcile(&new_leader, 18, &cache(&[(0, 0), (3, 5)]), 12), (12, 1));
}

#[test]
fn truncation_of_the_cache_follows_the_log() {
    let mut c = cache(&[(1, 0), (2, 8), (4, 15)]);
    assert!(!c.truncate_from_end(16));
    assert!(c.truncate_from_end(15));
    assert_eq!(c, cache(&[(1, 0), (2, 8)]));
    assert!(c.truncate_from_start(9));
    assert_eq!(c, cache(&[(2, 9)]));
    assert!(!c.truncate_from_start(9));
}

#[test]
fn file_round_trip_drops_entries_past_the_log_end_and_rejects_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let f = EpochFile::in_dir(dir.path());
    assert_eq!(f.load(0).unwrap(), EpochCache::default());
    let c = cache(&[(0, 0), (2, 100), (5, 200)]);
    f.store(&c).unwrap();
    assert_eq!(f.load(1000).unwrap(), c);
    // The log lost its tail in a crash: the epoch that started at 200 had no batch.
    assert_eq!(f.load(200).unwrap(), cache(&[(0, 0), (2, 100)]));
    for bad in [
        "nonsense\n",
        "qwire-leader-epochs 1\n3\n0 0\n",
        "qwire-leader-epochs 1\n2\n5 0\n2 10\n",
        "qwire-leader-epochs 1\n1\nx y\n",
    ] {
        std::fs::write(dir.path().join(EpochFile::NAME), bad).unwrap();
        assert!(f.load(1000).is_err(), "{bad:?} accepted");
    }
}

/// Two logs that agree on a prefix and then diverge the way leader changes make them
/// diverge: at most one side continues the prefix's last epoch, the tails' other epochs
/// are disjoint, and the leader's newest epoch is the largest of all.
fn diverged_logs() -> impl Strategy<Value = (Vec<i32>, Vec<i32>)> {
    (
        proptest::collection::vec(0..3i32, 0..12),
        proptest::collection::vec(0..4usize, 0..12),
        proptest::collection::vec(0..4usize, 0..12),
        0..3u8,
    )
        .prop_map(|(steps, lsteps, fsteps, who_continues)| {
            let mut prefix = Vec::new();
            let mut e = 0;
            for s in steps {
                e += s;
                prefix.push(e);
            }
            let p = prefix.last().copied().unwrap_or(0);
            // Follower tail epochs: p (if it continues) then odd epochs above p; leader
            // tail: p (if it continues) then even epochs above p. The leader's final epoch
            // (added by the test) is above every one of them.
            let next_of_parity = |e: i32, parity: i32| if (e + 1) % 2 == parity { e + 1 } else { e + 2 };
            let tail = |steps: Vec<usize>, parity: i32, continues: bool| {
                let mut out = Vec::new();
                let mut e = if continues { p } else { next_of_parity(p, parity) };
                for s in steps {
                    out.push(e);
                    if s == 0 {
                        e = next_of_parity(e, parity);
                    }
                }
                out
            };
            let mut f = prefix.clone();
            f.extend(tail(fsteps, 1, who_continues == 1));
            let mut l = prefix.clone();
            l.extend(tail(lsteps, 0, who_continues == 2));
            (l, f)
        })
}

proptest! {
    #[test]
    fn follower_truncates_exactly_to_the_longest_common_prefix((leader_log, follower_log) in diverged_logs()) {
        let common = leader_log.iter().zip(&follower_log).take_while(|(a, b)| a == b).count() as i64;
        let mut leader = cache_of(&leader_log);
        // The leader took over at an epoch above every other: its entry at its log end.
        let top = leader_log.iter().chain(&follower_log).max().copied().unwrap_or(0) + 1;
        leader.assign(top, leader_log.len() as i64).unwrap();
        let (to, _) = reconcile(&leader, leader_log.len() as i64, &cache_of(&follower_log), follower_log.len() as i64);
        prop_assert_eq!(to, common, "leader {:?} follower {:?}", leader_log, follower_log);
    }
}
