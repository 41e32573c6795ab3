//! The metadata store contract, run against both implementations: the embedded store of
//! single-node mode and (with `--features cluster`) a real etcd started for this test
//! binary. The same assertions on both is what lets the typed layer above be one piece of
//! code.
//!
//! Every test is generated twice by `both!`: `NAME::embedded` and `NAME::etcd`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use qwire::cluster::metadata::{
    BrokerRegistration, ClusterView, MetaError, Metadata, PartitionState, PartitionWrite, SessionStatus, TopicSpec,
};
use qwire::cluster::store::{Compare, EmbeddedStore, MetaStore, StoreError, Txn, WatchEvent};
use tokio::time::{sleep, timeout, Instant};

/// Lease TTL for tests: etcd rounds anything shorter up to its minimum (about 2 s).
const TTL: Duration = Duration::from_secs(2);
/// Generous bound for anything that should happen "soon" on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(30);

fn embedded() -> Arc<dyn MetaStore> {
    Arc::new(EmbeddedStore::in_memory())
}

#[cfg(feature = "cluster")]
async fn etcd() -> Arc<dyn MetaStore> {
    use qwire::cluster::store::{EtcdConfig, EtcdStore};
    let e = common::etcd::Etcd::shared();
    Arc::new(EtcdStore::connect(&EtcdConfig::new(vec![e.endpoint.clone()])).await.expect("connect to the test etcd"))
}

macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                super::$name(super::embedded(), &format!("/t/{}", stringify!($name))).await
            }

            #[cfg(feature = "cluster")]
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn etcd() {
                super::$name(super::etcd().await, &format!("/t/{}", stringify!($name))).await
            }
        }
    };
}

/// Polls `f` until it is true or PATIENCE runs out.
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

both!(txn_compares_and_revisions);
async fn txn_compares_and_revisions(s: Arc<dyn MetaStore>, p: &str) {
    let a = format!("{p}/a");
    let created = s.txn(Txn::new().when(Compare::Absent(a.clone())).put(a.clone(), "1")).await.unwrap();
    assert!(created.succeeded);
    // A second create-if-absent fails and writes nothing.
    let again = s.txn(Txn::new().when(Compare::Absent(a.clone())).put(a.clone(), "2")).await.unwrap();
    assert!(!again.succeeded);
    let kv = s.get(&a).await.unwrap().unwrap();
    assert_eq!(
        (kv.value.as_slice(), kv.create_revision, kv.mod_revision),
        (&b"1"[..], created.revision, created.revision)
    );
    // Compare-and-swap on the mod revision: the stale one loses.
    let w = s.txn(Txn::new().when(Compare::ModRevision(a.clone(), kv.mod_revision)).put(a.clone(), "3")).await.unwrap();
    assert!(w.succeeded && w.revision > created.revision);
    let stale =
        s.txn(Txn::new().when(Compare::ModRevision(a.clone(), kv.mod_revision)).put(a.clone(), "4")).await.unwrap();
    assert!(!stale.succeeded);
    let kv2 = s.get(&a).await.unwrap().unwrap();
    assert_eq!(
        (kv2.value.as_slice(), kv2.create_revision, kv2.mod_revision),
        (&b"3"[..], created.revision, w.revision)
    );
    // The create revision guards a key's identity across updates, not across re-creation.
    assert!(
        s.txn(Txn::new().when(Compare::CreateRevision(a.clone(), created.revision)).put(format!("{p}/b"), "x"))
            .await
            .unwrap()
            .succeeded
    );
    s.txn(Txn::new().delete(a.clone())).await.unwrap();
    s.txn(Txn::new().put(a.clone(), "5")).await.unwrap();
    assert!(
        !s.txn(Txn::new().when(Compare::CreateRevision(a.clone(), created.revision)).put(format!("{p}/b"), "y"))
            .await
            .unwrap()
            .succeeded
    );
    assert!(
        !s.txn(Txn::new().when(Compare::ModRevision(format!("{p}/missing"), 0)).put(format!("{p}/c"), "z"))
            .await
            .unwrap()
            .succeeded
    );
    // Listing is by prefix and in key order.
    let (kvs, rev) = s.list(&format!("{p}/")).await.unwrap();
    assert_eq!(kvs.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(), vec![a.as_str(), &format!("{p}/b")]);
    assert!(rev >= kvs.iter().map(|k| k.mod_revision).max().unwrap());
    assert!(s.list(&format!("{p}/zz")).await.unwrap().0.is_empty());
}

both!(leased_keys_vanish_when_the_lease_ends);
async fn leased_keys_vanish_when_the_lease_ends(s: Arc<dyn MetaStore>, p: &str) {
    let k = format!("{p}/eph");
    let lease = s.grant_lease(TTL).await.unwrap();
    assert!(s.txn(Txn::new().put_leased(k.clone(), "v", lease)).await.unwrap().succeeded);
    assert_eq!(s.get(&k).await.unwrap().unwrap().lease, lease);
    assert!(s.keep_alive(lease).await.unwrap() > Duration::ZERO);
    // No more keep-alives: the key goes with the lease.
    eventually("leased key to expire", || async { s.get(&k).await.unwrap().is_none() }).await;
    let after = s.keep_alive(lease).await;
    assert!(matches!(after, Err(StoreError::LeaseExpired { .. })), "{after:?}");
    assert!(matches!(s.txn(Txn::new().put_leased(k.clone(), "v", lease)).await, Err(StoreError::LeaseExpired { .. })));
    // Revocation deletes at once; revoking again is fine.
    let l2 = s.grant_lease(Duration::from_secs(60)).await.unwrap();
    s.txn(Txn::new().put_leased(k.clone(), "v2", l2)).await.unwrap();
    s.revoke_lease(l2).await.unwrap();
    assert!(s.get(&k).await.unwrap().is_none());
    s.revoke_lease(l2).await.unwrap();
}

both!(watch_delivers_every_change_in_order_from_a_revision);
async fn watch_delivers_every_change_in_order_from_a_revision(s: Arc<dyn MetaStore>, p: &str) {
    let first = s.txn(Txn::new().put(format!("{p}/w/1"), "a")).await.unwrap().revision;
    let mut rx = s.watch(&format!("{p}/w/"), first).await.unwrap();
    let lease = s.grant_lease(Duration::from_secs(60)).await.unwrap();
    s.txn(Txn::new().put(format!("{p}/w/2"), "b").put(format!("{p}/other"), "not watched")).await.unwrap();
    s.txn(Txn::new().put_leased(format!("{p}/w/3"), "c", lease)).await.unwrap();
    s.txn(Txn::new().delete(format!("{p}/w/1"))).await.unwrap();
    s.revoke_lease(lease).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 5 {
        let batch = timeout(PATIENCE, rx.recv()).await.expect("watch events").expect("watch open").unwrap();
        seen.extend(batch);
    }
    let summary: Vec<(String, &str)> = seen
        .iter()
        .map(|e| match e {
            WatchEvent::Put(kv) => (kv.key.clone(), "put"),
            WatchEvent::Delete { key, .. } => (key.clone(), "delete"),
        })
        .collect();
    let want = [("w/1", "put"), ("w/2", "put"), ("w/3", "put"), ("w/1", "delete"), ("w/3", "delete")];
    assert_eq!(summary, want.iter().map(|(k, t)| (format!("{p}/{k}"), *t)).collect::<Vec<_>>());
    assert!(seen.windows(2).all(|w| w[0].revision() < w[1].revision()));
}

both!(election_has_one_leader_and_fences_the_deposed_one);
async fn election_has_one_leader_and_fences_the_deposed_one(s: Arc<dyn MetaStore>, p: &str) {
    let name = format!("{p}/ctl");
    let l1 = s.grant_lease(Duration::from_secs(60)).await.unwrap();
    let l2 = s.grant_lease(Duration::from_secs(60)).await.unwrap();
    let first = timeout(PATIENCE, s.campaign(&name, b"1", l1)).await.unwrap().unwrap();
    let (leader, value) = s.election_leader(&name).await.unwrap().unwrap();
    assert_eq!((leader, value), (first.clone(), b"1".to_vec()));
    // The second candidate waits while the first leads.
    let s2 = s.clone();
    let name2 = name.clone();
    let second = tokio::spawn(async move { s2.campaign(&name2, b"2", l2).await });
    sleep(Duration::from_millis(500)).await;
    assert!(!second.is_finished(), "two leaders at once");
    let guarded = |rev: &str| Txn::new().when(first.guard()).put(format!("{p}/decision"), rev.to_owned());
    assert!(s.txn(guarded("by 1")).await.unwrap().succeeded);
    // The first leader's lease ends (it died): the second wins, and a late write of the
    // first is refused.
    s.revoke_lease(l1).await.unwrap();
    let won = timeout(PATIENCE, second).await.unwrap().unwrap().unwrap();
    assert_eq!(s.election_leader(&name).await.unwrap().unwrap().1, b"2".to_vec());
    assert!(!s.txn(guarded("late write by 1")).await.unwrap().succeeded);
    assert_eq!(s.get(&format!("{p}/decision")).await.unwrap().unwrap().value, b"by 1".to_vec());
    assert!(s.txn(Txn::new().when(won.guard()).put(format!("{p}/decision"), "by 2")).await.unwrap().succeeded);
    s.resign(&won).await.unwrap();
    assert!(s.election_leader(&name).await.unwrap().is_none());
}

fn registration(id: u32, instance: &str) -> BrokerRegistration {
    BrokerRegistration { id, host: "127.0.0.1".into(), port: 7000 + id as u16, instance: instance.into() }
}

both!(duplicate_broker_ids_are_refused_and_a_restart_replaces_its_own);
async fn duplicate_broker_ids_are_refused_and_a_restart_replaces_its_own(s: Arc<dyn MetaStore>, p: &str) {
    let meta = Metadata::new(s, p);
    let a = meta.register(registration(1, "dir-a"), TTL).await.unwrap();
    match meta.register(registration(1, "dir-b"), TTL).await {
        Err(MetaError::DuplicateBroker { id: 1, address }) => assert_eq!(address, "127.0.0.1:7001"),
        other => panic!("duplicate id accepted: {other:?}"),
    }
    let brokers = meta.brokers().await.unwrap();
    assert_eq!(brokers.len(), 1);
    assert_eq!(brokers[0].session, a.revision());
    // The same data directory registering again (a restart after a crash) replaces it;
    // the old session learns its lease is gone.
    let b = meta.register(registration(1, "dir-a"), TTL).await.unwrap();
    assert_ne!(b.revision(), a.revision());
    let mut st = a.subscribe();
    timeout(PATIENCE, st.wait_for(|s| matches!(s, SessionStatus::Lost { .. }))).await.unwrap().unwrap();
    assert_eq!(meta.brokers().await.unwrap()[0].session, b.revision());
    b.close().await.unwrap();
    assert!(meta.brokers().await.unwrap().is_empty());
}

both!(a_dropped_session_expires_and_leaves_the_view);
async fn a_dropped_session_expires_and_leaves_the_view(s: Arc<dyn MetaStore>, p: &str) {
    let meta = Metadata::new(s.clone(), p);
    let view = qwire::cluster::metadata::spawn_view_watcher(s, meta.keys().clone());
    let a = meta.register(registration(4, "x"), TTL).await.unwrap();
    let b = meta.register(registration(5, "y"), TTL).await.unwrap();
    let live = |v: &ClusterView| v.brokers.keys().copied().collect::<Vec<_>>();
    let mut rx = view.clone();
    timeout(PATIENCE, rx.wait_for(|v| live(v) == [4, 5])).await.unwrap().unwrap();
    // Kept alive past several TTLs...
    sleep(TTL * 2).await;
    assert!(a.holds_at(Instant::now()));
    assert_eq!(live(&rx.borrow()), [4, 5]);
    // ...until dropped (a crash): its registration expires.
    drop(a);
    timeout(PATIENCE, rx.wait_for(|v| live(v) == [5])).await.unwrap().unwrap();
    drop(b);
}

fn part(replicas: &[u32], leader: u32, epoch: i32, isr: &[u32], session: i64) -> PartitionState {
    PartitionState {
        replicas: replicas.to_vec(),
        leader: Some(leader),
        leader_epoch: epoch,
        isr: isr.to_vec(),
        leader_session: session,
        partition_epoch: 0,
    }
}

both!(partition_writes_are_fenced_by_controller_and_revision);
async fn partition_writes_are_fenced_by_controller_and_revision(s: Arc<dyn MetaStore>, p: &str) {
    let meta = Metadata::new(s, p);
    let one = Arc::new(meta.register(registration(1, "1"), Duration::from_secs(60)).await.unwrap());
    let two = Arc::new(meta.register(registration(2, "2"), Duration::from_secs(60)).await.unwrap());
    let ctl1 = meta.campaign(&one).await.unwrap();
    assert_eq!(meta.controller().await.unwrap(), Some(1));
    meta.create_topic("t", TopicSpec { partitions: 1, replication_factor: 2, min_insync_replicas: 2 }).await.unwrap();
    assert!(matches!(
        meta.create_topic("t", TopicSpec { partitions: 9, replication_factor: 1, min_insync_replicas: 1 }).await,
        Err(MetaError::TopicExists(_))
    ));
    let w = PartitionWrite {
        topic: "t".into(),
        partition: 0,
        expected: None,
        state: part(&[1, 2], 1, 0, &[1, 2], one.revision()),
    };
    let r0 = meta.write_partition(&ctl1, &w).await.unwrap();
    assert!(matches!(meta.write_partition(&ctl1, &w).await, Err(MetaError::Conflict { .. })), "created twice");
    // Leader 1 shrinks the ISR; a concurrent write based on the same revision loses.
    let current = meta.partitions("t").await.unwrap()[0].1.clone();
    assert_eq!(current.mod_revision, r0);
    let shrunk = meta.write_isr(&one, "t", 0, &current, vec![1]).await.unwrap();
    assert_eq!(shrunk.value.isr, vec![1]);
    assert!(matches!(meta.write_isr(&one, "t", 0, &current, vec![1, 2]).await, Err(MetaError::Conflict { .. })));
    // Broker 2 is not the leader: it cannot change the ISR.
    assert!(matches!(meta.write_isr(&two, "t", 0, &shrunk, vec![1, 2]).await, Err(MetaError::Conflict { .. })));
    // The controller's election ends (its lease is revoked: the broker died); broker 2
    // takes over; a write by the old controller is refused and nothing of it lands.
    let stale = PartitionWrite {
        expected: Some(shrunk.mod_revision),
        state: part(&[1, 2], 1, 1, &[1], one.revision()),
        ..w.clone()
    };
    let one = Arc::try_unwrap(one).unwrap();
    one.close().await.unwrap();
    let ctl2 = timeout(PATIENCE, meta.campaign(&two)).await.unwrap().unwrap();
    assert!(matches!(meta.write_partition(&ctl1, &stale).await, Err(MetaError::NotController)));
    let now = meta.partitions("t").await.unwrap()[0].1.clone();
    assert_eq!(now, shrunk, "the deposed controller's write must not land");
    let elect =
        PartitionWrite { expected: Some(now.mod_revision), state: part(&[1, 2], 2, 1, &[2], two.revision()), ..w };
    meta.write_partition(&ctl2, &elect).await.unwrap();
    assert_eq!(meta.partitions("t").await.unwrap()[0].1.value.leader, Some(2));
}

both!(producer_id_blocks_are_unique_across_brokers);
async fn producer_id_blocks_are_unique_across_brokers(s: Arc<dyn MetaStore>, p: &str) {
    let meta = Metadata::new(s, p);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let m = meta.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..25 {
                got.push(m.allocate_producer_ids(10).await.unwrap());
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_by_key(|r| r.start);
    assert_eq!(all.len(), 100);
    for w in all.windows(2) {
        assert_eq!(w[0].end, w[1].start, "blocks overlap or leave a gap: {w:?}");
    }
    assert_eq!((all[0].start, all[99].end), (0, 1000));
}

both!(topics_only_grow);
async fn topics_only_grow(s: Arc<dyn MetaStore>, p: &str) {
    let meta = Metadata::new(s, p);
    meta.create_topic("g", TopicSpec { partitions: 2, replication_factor: 1, min_insync_replicas: 1 }).await.unwrap();
    meta.add_partitions("g", 5).await.unwrap();
    meta.add_partitions("g", 5).await.unwrap();
    assert_eq!(meta.topic("g").await.unwrap().unwrap().value.partitions, 5);
    assert!(matches!(meta.add_partitions("g", 3).await, Err(MetaError::PartitionsCannotShrink { current: 5, .. })));
    assert!(matches!(meta.add_partitions("nope", 3).await, Err(MetaError::UnknownTopic(_))));
}

both!(the_generic_namespace_is_compare_and_swap);
async fn the_generic_namespace_is_compare_and_swap(s: Arc<dyn MetaStore>, p: &str) {
    use qwire::cluster::metadata::kv::{KvCondition, KvWrite};
    let meta = Metadata::new(s, p);
    let kv = meta.kv("schemas");
    let r1 = kv.create("ids/next", b"1".to_vec()).await.unwrap().unwrap();
    assert_eq!(kv.create("ids/next", b"9".to_vec()).await.unwrap(), None);
    let r2 = kv.compare_and_swap("ids/next", r1, b"2".to_vec()).await.unwrap().unwrap();
    assert_eq!(kv.compare_and_swap("ids/next", r1, b"3".to_vec()).await.unwrap(), None);
    // A multi-key commit: all or nothing.
    let ok = kv
        .commit(
            vec![KvCondition::Unchanged("ids/next".into(), r2), KvCondition::Absent("schema/2".into())],
            vec![KvWrite::Put("ids/next".into(), b"3".to_vec()), KvWrite::Put("schema/2".into(), b"{}".to_vec())],
        )
        .await
        .unwrap();
    assert!(ok.is_some());
    let refused = kv
        .commit(
            vec![KvCondition::Unchanged("ids/next".into(), r2)],
            vec![KvWrite::Put("schema/3".into(), b"{}".to_vec())],
        )
        .await
        .unwrap();
    assert_eq!(refused, None);
    let (items, _) = kv.list("").await.unwrap();
    let items: Vec<_> = items.into_iter().filter(|(k, _)| !k.starts_with("log/")).collect();
    assert_eq!(
        items.iter().map(|(k, v)| (k.as_str(), v.value.as_slice())).collect::<Vec<_>>(),
        vec![("ids/next", &b"3"[..]), ("schema/2", &b"{}"[..])]
    );
    // An ordered scan from a key: an append-only log keyed by zero-padded numbers.
    for seq in 0..5u64 {
        assert!(kv.create(&format!("log/{seq:020}"), vec![seq as u8]).await.unwrap().is_some());
    }
    assert_eq!(kv.create(&format!("log/{:020}", 3), vec![9]).await.unwrap(), None, "a log slot is written once");
    let (tail, _) = kv.list_from("log/", &format!("log/{:020}", 2)).await.unwrap();
    assert_eq!(tail.iter().map(|(_, v)| v.value[0]).collect::<Vec<_>>(), vec![2, 3, 4]);
    assert_eq!(kv.list_from("log/", "").await.unwrap().0.len(), 5);
    assert!(kv.list_from("log/", &format!("log/{:020}", 9)).await.unwrap().0.is_empty());
    let cur = kv.get("schema/2").await.unwrap().unwrap();
    assert_eq!(kv.delete_if_unchanged("schema/2", cur.mod_revision + 100).await.unwrap(), None);
    assert!(kv.delete_if_unchanged("schema/2", cur.mod_revision).await.unwrap().is_some());
    assert!(kv.get("schema/2").await.unwrap().is_none());
}
