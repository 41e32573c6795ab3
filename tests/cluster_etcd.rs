//! The metadata layer on a real etcd, beyond the store contract (`cluster_store.rs`): the
//! controller loop electing leaders when brokers die, and what happens when etcd itself
//! is unreachable or restarts. Needs `--features cluster` and `etcd` on PATH.
#![cfg(feature = "cluster")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::etcd::Etcd;
use qwire::cluster::controller::{run_controller, ControllerConfig};
use qwire::cluster::metadata::{
    spawn_view_watcher, BrokerRegistration, ClusterView, Metadata, Session, SessionStatus, TopicSpec,
};
use qwire::cluster::store::{EtcdConfig, EtcdStore, MetaStore, StoreError, Txn};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

const TTL: Duration = Duration::from_secs(2);
const PATIENCE: Duration = Duration::from_secs(40);

async fn connect(e: &Etcd) -> Arc<dyn MetaStore> {
    Arc::new(EtcdStore::connect(&EtcdConfig::new(vec![e.endpoint.clone()])).await.unwrap())
}

fn registration(id: u32) -> BrokerRegistration {
    BrokerRegistration { id, host: "127.0.0.1".into(), port: 7000 + id as u16, instance: format!("dir-{id}") }
}

/// A broker as far as metadata goes: a session, a view, a controller loop.
struct FakeBroker {
    session: Arc<Session>,
    controller: JoinHandle<()>,
    _shutdown: watch::Sender<bool>,
}

async fn start_broker(store: Arc<dyn MetaStore>, prefix: &str, id: u32) -> FakeBroker {
    let meta = Metadata::new(store.clone(), prefix);
    let session = Arc::new(meta.register(registration(id), TTL).await.unwrap());
    let view = spawn_view_watcher(store, meta.keys().clone());
    let (tx, rx) = watch::channel(false);
    let controller = tokio::spawn(run_controller(meta, session.clone(), view, ControllerConfig::default(), rx));
    FakeBroker { session, controller, _shutdown: tx }
}

impl FakeBroker {
    /// Dies like a SIGKILLed process: no more keep-alives, no resignation.
    fn crash(self) {
        self.controller.abort();
        drop(self.session);
    }
}

async fn wait_view(
    rx: &mut watch::Receiver<Arc<ClusterView>>,
    what: &str,
    f: impl Fn(&ClusterView) -> bool,
) -> Arc<ClusterView> {
    let got = timeout(PATIENCE, rx.wait_for(|v| f(v))).await.map(|r| r.map(|v| v.clone()));
    match got {
        Ok(Ok(v)) => v,
        _ => panic!("timed out waiting for: {what}\nview: {:#?}", rx.borrow()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_assigns_partitions_and_fails_over_from_the_isr() {
    let etcd = Etcd::shared();
    let prefix = Etcd::prefix("failover");
    let store = connect(etcd).await;
    let meta = Metadata::new(store.clone(), &prefix);
    let mut brokers = Vec::new();
    for id in 1..=3 {
        brokers.push(Some(start_broker(store.clone(), &prefix, id).await));
    }
    let mut view = spawn_view_watcher(store.clone(), meta.keys().clone());
    wait_view(&mut view, "three brokers and a controller", |v| v.brokers.len() == 3 && v.controller().is_some()).await;
    meta.create_topic("orders", TopicSpec { partitions: 3, replication_factor: 3, min_insync_replicas: 2 })
        .await
        .unwrap();
    let v =
        wait_view(&mut view, "partitions assigned", |v| v.partitions.get("orders").is_some_and(|p| p.len() == 3)).await;
    let p0 = v.partition("orders", 0).unwrap().value.clone();
    assert_eq!((p0.leader_epoch, p0.isr.len(), p0.replicas.len()), (0, 3, 3));
    let leaders: Vec<u32> = (0..3).map(|p| v.partition("orders", p).unwrap().value.leader.unwrap()).collect();
    let mut distinct = leaders.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "leaders spread over the brokers: {leaders:?}");

    // The leader of partition 0 dies. Its lease expires; a new leader comes from the ISR
    // with the next epoch, and the dead broker leaves every ISR.
    let victim = p0.leader.unwrap();
    brokers[victim as usize - 1].take().unwrap().crash();
    let v = wait_view(&mut view, "partition 0 failed over", |v| {
        let s = &v.partition("orders", 0).unwrap().value;
        s.leader.is_some_and(|l| l != victim)
    })
    .await;
    let s = &v.partition("orders", 0).unwrap().value;
    assert_eq!(s.leader_epoch, 1);
    assert!(p0.isr.contains(&s.leader.unwrap()));
    let v = wait_view(&mut view, "victim out of every ISR", |v| {
        (0..3).all(|p| !v.partition("orders", p).unwrap().value.isr.contains(&victim))
    })
    .await;
    for p in 0..3 {
        let s = &v.partition("orders", p).unwrap().value;
        assert_ne!(s.leader, Some(victim));
        assert_eq!(s.isr.len(), 2, "partition {p}: {s:?}");
        assert!(v.is_live_session(s.leader.unwrap(), s.leader_session));
    }
    assert_ne!(v.controller(), Some(victim));

    // It returns as a new session: it is a follower now, not back in the ISR by itself
    // (its leader adds it once it has caught up), and the leaders stay where they are.
    brokers[victim as usize - 1] = Some(start_broker(store.clone(), &prefix, victim).await);
    let v = wait_view(&mut view, "victim registered again", |v| v.brokers.contains_key(&victim)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = view.borrow().clone();
    for p in 0..3 {
        assert_eq!(after.partition("orders", p).unwrap().value, v.partition("orders", p).unwrap().value);
    }
    for b in brokers.into_iter().flatten() {
        b.crash();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_leader_is_elected_again_only_with_a_new_epoch() {
    let etcd = Etcd::shared();
    let prefix = Etcd::prefix("restart-leader");
    let store = connect(etcd).await;
    let meta = Metadata::new(store.clone(), &prefix);
    let one = start_broker(store.clone(), &prefix, 1).await;
    let mut view = spawn_view_watcher(store.clone(), meta.keys().clone());
    meta.create_topic("solo", TopicSpec { partitions: 1, replication_factor: 1, min_insync_replicas: 1 })
        .await
        .unwrap();
    let v = wait_view(&mut view, "assigned", |v| v.partition("solo", 0).is_some()).await;
    assert_eq!(v.partition("solo", 0).unwrap().value.leader_epoch, 0);
    // The same data directory registers again (restart after a crash) before the old
    // lease expired: the registration is replaced and the partition re-elected at epoch 1.
    let old_session = one.session.revision();
    one.crash();
    let again = start_broker(store.clone(), &prefix, 1).await;
    assert_ne!(again.session.revision(), old_session);
    let v = wait_view(&mut view, "re-elected with a new epoch", |v| {
        v.partition("solo", 0).unwrap().value.leader_session == again.session.revision()
    })
    .await;
    let s = &v.partition("solo", 0).unwrap().value;
    assert_eq!((s.leader, s.leader_epoch), (Some(1), 1));
    again.crash();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_etcd_at_start_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("127.0.0.1:{port}");
    let mut cfg = EtcdConfig::new(vec![endpoint.clone()]);
    cfg.connect_timeout = Duration::from_secs(1);
    cfg.request_timeout = Duration::from_secs(2);
    let err = timeout(PATIENCE, EtcdStore::connect(&cfg)).await.expect("connect must not hang").unwrap_err();
    assert!(err.is_retriable(), "{err}");
    assert!(err.to_string().contains(&endpoint), "the error names the endpoint: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_etcd_is_unreachable_calls_fail_clearly_sessions_end_and_nothing_repeats() {
    let etcd = Etcd::start();
    let store = connect(&etcd).await;
    let prefix = "/outage";
    let meta = Metadata::new(store.clone(), prefix);
    let mut view = spawn_view_watcher(store.clone(), meta.keys().clone());
    let session = meta.register(registration(1), TTL).await.unwrap();
    let first = meta.allocate_producer_ids(100).await.unwrap();
    meta.create_topic("kept", TopicSpec { partitions: 1, replication_factor: 1, min_insync_replicas: 1 })
        .await
        .unwrap();
    wait_view(&mut view, "topic visible", |v| v.topics.contains_key("kept") && v.stale_since.is_none()).await;

    etcd.pause();
    // Every call returns an error that says what happened, none hangs, and none is taken
    // for a success.
    let w = timeout(PATIENCE, store.txn(Txn::new().put("/outage/x", "1"))).await.expect("txn must not hang");
    match w {
        Err(e @ StoreError::Unavailable { .. }) => {
            assert!(e.outcome_unknown());
            assert!(e.to_string().contains(&etcd.endpoint), "{e}");
        }
        other => panic!("write during an outage: {other:?}"),
    }
    let ids = timeout(PATIENCE, meta.allocate_producer_ids(100)).await.expect("allocation must not hang");
    assert!(ids.is_err(), "{ids:?}");
    // The session cannot be renewed: by its own clock it ends within its TTL, so nothing
    // is done on its authority after etcd may have expired it.
    let mut st = session.subscribe();
    timeout(PATIENCE, st.wait_for(|s| matches!(s, SessionStatus::Lost { .. }))).await.unwrap().unwrap();
    assert!(!session.holds_at(Instant::now()));
    wait_view(&mut view, "view marked stale", |v| v.stale_since.is_some()).await;

    etcd.resume();
    // The view recovers; metadata written before the outage is intact; the expired
    // registration is gone and the broker can register again.
    wait_view(&mut view, "view current again", |v| v.stale_since.is_none() && v.topics.contains_key("kept")).await;
    wait_view(&mut view, "old registration expired", |v| !v.brokers.contains_key(&1)).await;
    let again = meta.register(registration(1), TTL).await.unwrap();
    assert!(again.holds_at(Instant::now()));
    let next = meta.allocate_producer_ids(100).await.unwrap();
    assert!(next.start >= first.end, "producer ids repeated after an outage: {first:?} then {next:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_survives_an_etcd_restart_and_the_view_reconnects() {
    let mut etcd = Etcd::start();
    let store = connect(&etcd).await;
    let meta = Metadata::new(store.clone(), "/restart");
    let mut view = spawn_view_watcher(store.clone(), meta.keys().clone());
    meta.create_topic("durable", TopicSpec { partitions: 4, replication_factor: 1, min_insync_replicas: 1 })
        .await
        .unwrap();
    wait_view(&mut view, "topic visible", |v| v.topics.contains_key("durable")).await;
    etcd.restart();
    // The client reconnects by itself; the first calls may still fail while it does.
    let deadline = Instant::now() + PATIENCE;
    while let Err(e) =
        meta.create_topic("after", TopicSpec { partitions: 1, replication_factor: 1, min_insync_replicas: 1 }).await
    {
        assert!(Instant::now() < deadline, "etcd calls still failing after its restart: {e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let v = wait_view(&mut view, "both topics after the restart", |v| {
        v.stale_since.is_none() && v.topics.contains_key("durable") && v.topics.contains_key("after")
    })
    .await;
    assert_eq!(v.topics["durable"].value.partitions, 4);
}
