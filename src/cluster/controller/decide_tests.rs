use super::*;
use crate::cluster::metadata::{BrokerRegistration, LiveBroker, Versioned};

/// A view with live brokers `(id, session)`.
fn view(live: &[(u32, i64)]) -> ClusterView {
    let mut v = ClusterView::default();
    for &(id, session) in live {
        let registration =
            BrokerRegistration { id, host: "127.0.0.1".into(), port: 7000 + id as u16, instance: format!("i{id}") };
        v.brokers.insert(id, LiveBroker { registration, session, lease: 100 + i64::from(id) });
    }
    v
}

fn state(replicas: &[u32], leader: Option<u32>, epoch: i32, isr: &[u32], session: i64) -> PartitionState {
    PartitionState {
        replicas: replicas.to_vec(),
        leader,
        leader_epoch: epoch,
        isr: isr.to_vec(),
        leader_session: session,
        partition_epoch: 7,
    }
}

fn with_partition(mut v: ClusterView, st: PartitionState, rev: i64) -> ClusterView {
    let spec = TopicSpec { partitions: 1, replication_factor: st.replicas.len() as u16, min_insync_replicas: 2 };
    v.topics.insert("t".into(), Versioned { value: spec, mod_revision: 1 });
    v.partitions.entry("t".into()).or_default().insert(0, Versioned { value: st, mod_revision: rev });
    v
}

const CLEAN: ControllerConfig = ControllerConfig { unclean_leader_election: false };

#[test]
fn new_topic_gets_replicas_first_as_leader_all_in_sync() {
    let mut v = view(&[(1, 11), (2, 12), (3, 13)]);
    let spec = TopicSpec { partitions: 3, replication_factor: 2, min_insync_replicas: 1 };
    v.topics.insert("orders".into(), Versioned { value: spec, mod_revision: 5 });
    let d = decide(&v, &CLEAN);
    assert_eq!(d.len(), 3);
    for (i, dec) in d.iter().enumerate() {
        let w = &dec.write;
        assert_eq!((w.partition, w.expected, &dec.reason), (i as u32, None, &Reason::Created));
        assert_eq!(w.state.replicas.len(), 2);
        assert_eq!(w.state.leader, Some(w.state.replicas[0]));
        assert_eq!(w.state.isr, w.state.replicas);
        assert_eq!(w.state.leader_epoch, 0);
        assert_eq!(w.state.leader_session, v.brokers[&w.state.replicas[0]].session);
    }
}

#[test]
fn too_few_live_brokers_assigns_nothing() {
    let mut v = view(&[(1, 11), (2, 12)]);
    let spec = TopicSpec { partitions: 1, replication_factor: 3, min_insync_replicas: 2 };
    v.topics.insert("t".into(), Versioned { value: spec, mod_revision: 5 });
    assert!(decide(&v, &CLEAN).is_empty());
}

#[test]
fn added_partitions_are_assigned_and_existing_ones_untouched() {
    let v = with_partition(view(&[(1, 11), (2, 12), (3, 13)]), state(&[1, 2, 3], Some(1), 4, &[1, 2, 3], 11), 20);
    let mut v = v;
    v.topics.get_mut("t").unwrap().value.partitions = 3;
    let d = decide(&v, &CLEAN);
    assert_eq!(d.iter().map(|d| d.write.partition).collect::<Vec<_>>(), vec![1, 2]);
    assert!(d.iter().all(|d| d.reason == Reason::Created));
}

#[test]
fn healthy_partition_needs_nothing() {
    let v = with_partition(view(&[(1, 11), (2, 12), (3, 13)]), state(&[1, 2, 3], Some(1), 4, &[1, 2, 3], 11), 20);
    assert!(decide(&v, &CLEAN).is_empty());
}

#[test]
fn dead_leader_is_replaced_from_the_isr_in_preference_order_with_a_new_epoch() {
    // Leader 1 is gone; 3 is in sync but 2 is not: 3 wins although 2 comes first.
    let v = with_partition(view(&[(2, 12), (3, 13)]), state(&[1, 2, 3], Some(1), 4, &[1, 3], 11), 20);
    let d = decide(&v, &CLEAN);
    assert_eq!(d.len(), 1);
    let w = &d[0].write;
    assert_eq!(w.expected, Some(20));
    assert_eq!(d[0].reason, Reason::LeaderElected { previous: Some(1) });
    assert_eq!((w.state.leader, w.state.leader_epoch, w.state.isr.clone()), (Some(3), 5, vec![3]));
    assert_eq!(w.state.leader_session, 13);
    assert_eq!(w.state.partition_epoch, 8);
    assert_eq!(w.state.replicas, vec![1, 2, 3]);
}

#[test]
fn restarted_leader_is_not_leader_any_more_and_may_be_elected_again_with_a_new_epoch() {
    // Broker 1 registered again (session 21, was elected with 11): never the same epoch.
    let v = with_partition(view(&[(1, 21), (2, 12)]), state(&[1, 2], Some(1), 4, &[1, 2], 11), 20);
    let d = decide(&v, &CLEAN);
    assert_eq!(d.len(), 1);
    let s = &d[0].write.state;
    assert_eq!((s.leader, s.leader_epoch, s.leader_session), (Some(1), 5, 21));
    assert_eq!(s.isr, vec![1, 2]);
}

#[test]
fn no_live_isr_member_leaves_the_partition_leaderless_keeping_the_isr() {
    // 3 is alive but out of sync: not elected without the unclean switch.
    let v = with_partition(view(&[(3, 13)]), state(&[1, 2, 3], Some(1), 4, &[1, 2], 11), 20);
    let d = decide(&v, &CLEAN);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].reason, Reason::NoLeader { previous: 1 });
    let s = &d[0].write.state;
    assert_eq!((s.leader, s.leader_epoch, s.isr.clone(), s.leader_session), (None, 5, vec![1, 2], 0));
    // Once leaderless, nothing more to write until an ISR member returns...
    let v2 = with_partition(view(&[(3, 13)]), s.clone(), 30);
    assert!(decide(&v2, &CLEAN).is_empty());
    // ...and then it is elected.
    let v3 = with_partition(view(&[(2, 22), (3, 13)]), s.clone(), 30);
    let d3 = decide(&v3, &CLEAN);
    let s3 = &d3[0].write.state;
    assert_eq!((s3.leader, s3.leader_epoch, s3.isr.clone()), (Some(2), 6, vec![2]));
}

#[test]
fn unclean_election_only_when_switched_on() {
    let v = with_partition(view(&[(3, 13)]), state(&[1, 2, 3], Some(1), 4, &[1, 2], 11), 20);
    let d = decide(&v, &ControllerConfig { unclean_leader_election: true });
    assert_eq!(d[0].reason, Reason::UncleanElection { previous: Some(1) });
    let s = &d[0].write.state;
    assert_eq!((s.leader, s.leader_epoch, s.isr.clone()), (Some(3), 5, vec![3]));
}

#[test]
fn dead_followers_leave_the_isr_without_an_epoch_bump() {
    let v = with_partition(view(&[(1, 11), (2, 12)]), state(&[1, 2, 3], Some(1), 4, &[1, 2, 3], 11), 20);
    let d = decide(&v, &CLEAN);
    assert_eq!(d[0].reason, Reason::IsrShrunk { removed: vec![3] });
    let s = &d[0].write.state;
    assert_eq!((s.leader, s.leader_epoch, s.isr.clone(), s.leader_session), (Some(1), 4, vec![1, 2], 11));
    // A returning follower is not put back by the controller: the leader does that once
    // it has caught up.
    let v2 = with_partition(view(&[(1, 11), (2, 12), (3, 23)]), s.clone(), 30);
    assert!(decide(&v2, &CLEAN).is_empty());
}
