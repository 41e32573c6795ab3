//! Cluster mode with real processes: an etcd and three `qwire broker`s on loopback
//! (CLUSTER.md). Needs `--features cluster` (the broker binary must support
//! `--metadata`) and `etcd` on PATH.
#![cfg(feature = "cluster")]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::cluster::Cluster;
use common::{batch, stamp};
use qwire::client::Client;
use qwire::protocol::{Acks, Compression, ErrorCode, ProducerStamp};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// A client connected to the current leader of `topic`/`partition`.
async fn leader_client(c: &mut Cluster, topic: &str, partition: u32) -> (u32, Client) {
    loop {
        let leader = c.leader(topic, partition).await;
        let i = c.index_of(leader);
        if let Ok(client) = Client::connect(&c.client_config(i, "alice")).await {
            return (leader, client);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends `b` acks=all to the leader until it is acknowledged (following leader changes);
/// returns the base offset and whether it was a duplicate.
async fn produce_until_acked(c: &mut Cluster, topic: &str, b: Bytes) -> (i64, bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        assert!(std::time::Instant::now() < deadline, "batch never acknowledged");
        let (_, mut client) = leader_client(c, topic, 0).await;
        match client.produce(topic, 0, Acks::All, b.clone()).await {
            Ok(r) if r.error == ErrorCode::None => return (r.base_offset, r.duplicate),
            Ok(r) => eprintln!("produce answered {}: {}", r.error, r.message),
            Err(e) => eprintln!("produce failed: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops every node and checks that all replicas hold the same batches, byte for byte.
fn assert_replicas_identical(c: &mut Cluster, topic: &str, partition: u32) -> Vec<Bytes> {
    for i in 0..c.nodes.len() {
        c.stop(i);
    }
    let logs: Vec<Vec<Bytes>> = (0..c.nodes.len()).map(|i| c.stored_batches(i, topic, partition)).collect();
    for (i, l) in logs.iter().enumerate().skip(1) {
        assert_eq!(
            l.len(),
            logs[0].len(),
            "replica {} has {} batches, replica 1 has {}",
            i + 1,
            l.len(),
            logs[0].len()
        );
        assert!(l == &logs[0], "replica {} differs from replica 1", i + 1);
    }
    logs.into_iter().next().unwrap()
}

#[test]
fn followers_down_shrink_the_isr_then_acks_all_is_refused_and_they_catch_up_on_return() {
    rt().block_on(async {
        let mut c = Cluster::start(3);
        let mut admin = c.any_client("alice").await;
        admin.create_replicated_topic("f", 1, 3, 2).await.unwrap();
        c.wait_for("all in sync", "f", |d| d.partitions.len() == 1 && d.partitions[0].isr.len() == 3).await;
        let leader = c.leader("f", 0).await;
        let followers: Vec<u32> = (1..=3).filter(|&b| b != leader).collect();
        let none = ProducerStamp::NONE;
        let mut sent = 0;
        for _ in 0..5 {
            produce_until_acked(&mut c, "f", batch("a", 10, none, Compression::None)).await;
            sent += 10;
        }
        // One follower dies: the in-sync set shrinks, acks=all continues.
        c.kill(c.index_of(followers[0]));
        c.wait_for("isr shrunk to 2", "f", |d| d.partitions[0].isr.len() == 2).await;
        for _ in 0..5 {
            produce_until_acked(&mut c, "f", batch("b", 10, none, Compression::None)).await;
            sent += 10;
        }
        // The second one dies too: below min.insync.replicas acks=all is refused, nothing
        // is appended, the high watermark stays.
        c.kill(c.index_of(followers[1]));
        c.wait_for("isr is the leader alone", "f", |d| d.partitions[0].isr == vec![leader]).await;
        let (_, mut lc) = leader_client(&mut c, "f", 0).await;
        let end_before = lc.fetch("f", 0, 0, 1).await.unwrap().high_watermark;
        for _ in 0..3 {
            let r = lc.produce("f", 0, Acks::All, batch("refused", 10, none, Compression::None)).await.unwrap();
            assert_eq!(r.error, ErrorCode::NotEnoughReplicas, "{}", r.message);
            assert_eq!(r.base_offset, -1, "refused before the append");
            assert!(r.error.is_retriable());
        }
        let meta = lc.metadata(&["f"]).await.unwrap();
        assert_eq!(meta.topics[0].partitions[0].end_offset, end_before, "nothing appended");
        assert_eq!(end_before, sent);
        lc.close();
        // They return: they truncate, catch up and rejoin the in-sync set.
        c.start_node(c.index_of(followers[0]));
        c.start_node(c.index_of(followers[1]));
        c.wait_for("all back in sync", "f", |d| d.partitions[0].isr.len() == 3).await;
        let (_, dup) = produce_until_acked(&mut c, "f", batch("c", 10, none, Compression::None)).await;
        assert!(!dup);
        sent += 10;
        // A member that left and rejoined meanwhile has everything up to the high watermark.
        c.wait_for("all in sync after the last batch", "f", |d| d.partitions[0].isr.len() == 3).await;
        let batches = assert_replicas_identical(&mut c, "f", 0);
        let records: i64 =
            batches.iter().map(|b| qwire::protocol::BatchHeader::parse(b).unwrap().unwrap().record_count as i64).sum();
        assert_eq!(records, sent, "every acknowledged record on every replica, nothing refused");
    });
}

#[test]
fn a_killed_leader_fails_over_within_the_isr_and_retries_are_duplicates_on_the_new_leader() {
    rt().block_on(async {
        let mut c = Cluster::start(3);
        let mut admin = c.any_client("alice").await;
        admin.create_replicated_topic("k", 1, 3, 2).await.unwrap();
        c.wait_for("all in sync", "k", |d| d.partitions.len() == 1 && d.partitions[0].isr.len() == 3).await;
        let (pid, epoch) = admin.init_producer_id(-1, -1).await.unwrap();
        admin.close();
        let mut seq = 0;
        let mut acked = Vec::new();
        for round in 0..3 {
            for _ in 0..4 {
                let b = batch(&format!("r{round}"), 5, stamp(pid, epoch, seq), Compression::None);
                let (off, dup) = produce_until_acked(&mut c, "k", b.clone()).await;
                assert!(!dup);
                acked.push((b, off));
                seq += 5;
            }
            // Kill the leader; the controller elects another in-sync replica at the next epoch.
            let before = c.describe("k").await.partitions[0].clone();
            let old = before.leader as u32;
            c.kill(c.index_of(old));
            let after = c
                .wait_for("a new leader", "k", |d| d.partitions[0].leader >= 0 && d.partitions[0].leader as u32 != old)
                .await;
            let p = &after.partitions[0];
            assert!(
                before.isr.contains(&(p.leader as u32)),
                "the new leader {} was in sync {:?}",
                p.leader,
                before.isr
            );
            assert!(p.leader_epoch > before.leader_epoch);
            // The producer's retry of an acknowledged batch is a duplicate on the new leader,
            // with its original offset.
            let (b, off) = acked.last().unwrap().clone();
            let (again, dup) = produce_until_acked(&mut c, "k", b).await;
            assert_eq!((again, dup), (off, true));
            c.start_node(c.index_of(old));
            c.wait_for("the old leader back in sync", "k", |d| d.partitions[0].isr.len() == 3).await;
        }
        let batches = assert_replicas_identical(&mut c, "k", 0);
        assert_eq!(batches.len(), acked.len(), "each acknowledged batch exactly once");
        for (stored, (sent, off)) in batches.iter().zip(&acked) {
            let h = qwire::protocol::BatchHeader::parse(stored).unwrap().unwrap();
            assert_eq!(h.base_offset, *off);
            assert_eq!(&stored[12..], &sent[12..], "the batch as produced");
        }
    });
}

/// Sends one acks=all batch straight to a broker's real address (not through its relay);
/// `Ok(true)` when it was acknowledged.
async fn produce_direct(c: &Cluster, i: usize, topic: &str, b: Bytes) -> Result<bool, String> {
    let mut client = Client::connect(&c.client_config(i, "alice")).await.map_err(|e| e.to_string())?;
    let r = client.produce(topic, 0, Acks::All, b).await.map_err(|e| e.to_string());
    client.close();
    r.map(|r| r.error == ErrorCode::None)
}

#[test]
fn a_leader_cut_off_from_followers_and_etcd_acknowledges_nothing_and_truncates_when_it_returns() {
    rt().block_on(async {
        let (mut c, cuts) = Cluster::start_partitionable(3).await;
        let mut admin = c.any_client("alice").await;
        admin.create_replicated_topic("p", 1, 3, 2).await.unwrap();
        admin.close();
        c.wait_for("all in sync", "p", |d| d.partitions.len() == 1 && d.partitions[0].isr.len() == 3).await;
        let none = ProducerStamp::NONE;
        for _ in 0..5 {
            produce_until_acked(&mut c, "p", batch("before", 10, none, Compression::None)).await;
        }
        let old = c.leader("p", 0).await;
        let oi = c.index_of(old);
        let epoch_before = c.describe("p").await.partitions[0].leader_epoch;
        // Cut the leader off from its followers and from etcd. A client that still reaches
        // it directly gets no acknowledgement for acks=all: its followers stop fetching,
        // and its session runs out.
        cuts[oi].set(true);
        let started = std::time::Instant::now();
        let mut attempts = 0;
        while started.elapsed() < Duration::from_millis(3 * common::cluster::TTL_MS) {
            attempts += 1;
            let acked = produce_direct(&c, oi, "p", batch("cut", 10, none, Compression::None)).await;
            assert!(!matches!(acked, Ok(true)), "the cut-off leader acknowledged an acks=all batch");
        }
        assert!(attempts > 0);
        // Another in-sync replica leads now, at a later epoch, and acknowledges.
        let d = c
            .wait_for("a new leader", "p", |d| d.partitions[0].leader >= 0 && d.partitions[0].leader as u32 != old)
            .await;
        assert!(d.partitions[0].leader_epoch > epoch_before);
        for _ in 0..5 {
            produce_until_acked(&mut c, "p", batch("after", 10, none, Compression::None)).await;
        }
        // Healed: the old leader returns as a follower, cuts the tail it appended alone,
        // catches up and rejoins the in-sync set.
        cuts[oi].set(false);
        c.wait_for("the old leader back in sync", "p", |d| d.partitions[0].isr.len() == 3).await;
        let batches = assert_replicas_identical(&mut c, "p", 0);
        // The fault fired: the cut-off leader had appended batches of its own, and cut them.
        assert!(c.log(oi).contains("replica log truncated"), "the old leader never truncated:\n{}", c.log(oi));
        let values: Vec<String> = batches
            .iter()
            .flat_map(|b| {
                qwire::protocol::RecordBatch::from_bytes(b.clone()).unwrap().records(1 << 20).unwrap().into_iter().map(
                    |r| String::from_utf8(r.value.unwrap().to_vec()).unwrap().split('-').next().unwrap().to_owned(),
                )
            })
            .collect();
        assert!(!values.iter().any(|v| v == "cut"), "a batch appended only by the cut-off leader survived");
        assert_eq!(values.iter().filter(|v| *v == "before").count(), 50);
        assert_eq!(values.iter().filter(|v| *v == "after").count(), 50);
        drop(cuts);
    });
}

#[test]
fn a_frozen_controller_is_replaced_and_none_of_its_writes_land_when_it_wakes() {
    rt().block_on(async {
        let mut c = Cluster::start(3);
        let mut admin = c.any_client("alice").await;
        admin.create_replicated_topic("ctl", 3, 3, 2).await.unwrap();
        admin.close();
        c.wait_for("all assigned, all in sync", "ctl", |d| {
            d.partitions.len() == 3 && d.partitions.iter().all(|p| p.isr.len() == 3)
        })
        .await;
        let controller = loop {
            let mut a = c.any_client("alice").await;
            let d = a.describe_cluster().await.unwrap();
            a.close();
            if d.controller >= 0 {
                break d.controller as u32;
            }
        };
        let ci = c.index_of(controller);
        // Freeze the controller past its session TTL: another broker becomes controller,
        // and the partitions the frozen broker led get new leaders from the ISR.
        c.pause(ci);
        let after = c
            .wait_for("the frozen broker leads nothing", "ctl", |d| {
                d.partitions.iter().all(|p| p.leader >= 0 && p.leader as u32 != controller)
            })
            .await;
        let new_controller = loop {
            let mut a = None;
            for i in (0..3).filter(|&i| i != ci) {
                if let Ok(cl) = Client::connect(&c.client_config(i, "alice")).await {
                    a = Some(cl);
                    break;
                }
            }
            let mut a = a.expect("a live broker");
            let d = a.describe_cluster().await;
            a.close();
            if let Ok(d) = d {
                if d.controller >= 0 && d.controller as u32 != controller {
                    break d.controller as u32;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_ne!(new_controller, controller);
        // Wake it: it acted as controller until it froze and may try to write what its old
        // view asks for; every such write is fenced by its lost election. The leaders and
        // epochs the new controller wrote stay.
        c.resume(ci);
        tokio::time::sleep(Duration::from_millis(3 * common::cluster::TTL_MS)).await;
        let later =
            c.wait_for("the woken broker back in sync", "ctl", |d| d.partitions.iter().all(|p| p.isr.len() == 3)).await;
        for (a, b) in after.partitions.iter().zip(&later.partitions) {
            assert_eq!(
                (a.leader, a.leader_epoch),
                (b.leader, b.leader_epoch),
                "partition {} changed hands",
                a.partition
            );
        }
        // And the data path works on every partition.
        for p in 0..3u32 {
            let leader = c.leader("ctl", p).await;
            let mut cl = Client::connect(&c.client_config(c.index_of(leader), "alice")).await.unwrap();
            let r =
                cl.produce("ctl", p, Acks::All, batch("x", 3, ProducerStamp::NONE, Compression::None)).await.unwrap();
            assert_eq!(r.error, ErrorCode::None, "{}", r.message);
            cl.close();
        }
    });
}

#[test]
fn while_etcd_is_down_leaders_serve_only_within_their_lease_and_nothing_is_lost_when_it_returns() {
    rt().block_on(async {
        let mut c = Cluster::start(3);
        let mut admin = c.any_client("alice").await;
        admin.create_replicated_topic("e", 1, 3, 2).await.unwrap();
        admin.close();
        c.wait_for("all in sync", "e", |d| d.partitions.len() == 1 && d.partitions[0].isr.len() == 3).await;
        let none = ProducerStamp::NONE;
        let mut acked = 0;
        for _ in 0..3 {
            produce_until_acked(&mut c, "e", batch("up", 10, none, Compression::None)).await;
            acked += 10;
        }
        let leader = c.leader("e", 0).await;
        let li = c.index_of(leader);
        let epoch_before = c.describe("e").await.partitions[0].leader_epoch;
        // etcd stops answering. Within its lease the leader still serves; once the lease
        // can no longer be certain, it stops leading: nothing is acknowledged on authority
        // it may have lost. Every acknowledgement given is kept.
        c.etcd.pause();
        let started = std::time::Instant::now();
        let mut during = 0;
        let mut refused_at = None;
        while started.elapsed() < Duration::from_millis(4 * common::cluster::TTL_MS) {
            match produce_direct(&c, li, "e", batch("down", 10, none, Compression::None)).await {
                Ok(true) => {
                    assert!(
                        refused_at.is_none(),
                        "acknowledged again after refusing: the lease came back without etcd"
                    );
                    during += 10;
                }
                Ok(false) | Err(_) => {
                    refused_at.get_or_insert(started.elapsed());
                }
            }
        }
        let refused_at = refused_at.expect("the leader kept serving without its lease");
        assert!(refused_at < Duration::from_millis(3 * common::cluster::TTL_MS), "served for {refused_at:?}");
        acked += during;
        c.etcd.resume();
        // The state from before the pause also reads "a leader, all in sync": wait for the
        // election that follows the lost sessions (a later epoch).
        let settled = |d: &qwire::protocol::cluster::TopicReplicas| {
            d.partitions[0].leader >= 0 && d.partitions[0].isr.len() == 3 && d.partitions[0].leader_epoch > epoch_before
        };
        c.wait_for("a new leader and all in sync again", "e", settled).await;
        produce_until_acked(&mut c, "e", batch("back", 10, none, Compression::None)).await;
        acked += 10;
        // The last batch may have been acknowledged by two in-sync replicas while the third
        // was rejoining: it rejoins only once it has everything up to the high watermark.
        c.wait_for("all in sync after the last batch", "e", settled).await;
        let batches = assert_replicas_identical(&mut c, "e", 0);
        let records: i64 =
            batches.iter().map(|b| qwire::protocol::BatchHeader::parse(b).unwrap().unwrap().record_count as i64).sum();
        assert!(records >= acked, "acknowledged {acked} records, {records} stored");
    });
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The producer, idempotent with acks=all, rides through repeated SIGKILLs of the current
/// leader of a partition: every acknowledged record is on every replica exactly once, in
/// order, at its acknowledged offset; failures report a status the logs agree with.
/// `QWIRE_SOAK=1` runs the long version (`QWIRE_SOAK_RECORDS`, `QWIRE_SOAK_KILLS`).
#[test]
fn producer_rides_through_leader_sigkills_losing_and_duplicating_nothing() {
    let (records, kills, secs) = if common::soak() {
        (env_or("QWIRE_SOAK_RECORDS", 1_000_000), env_or("QWIRE_SOAK_KILLS", 50), env_or("QWIRE_SOAK_SECS", 600))
    } else {
        (6_000, 3, 8)
    };
    rt().block_on(async {
        let started = std::time::Instant::now();
        let partitions = 3;
        let c = std::sync::Arc::new(tokio::sync::Mutex::new(Cluster::start(3)));
        {
            let mut g = c.lock().await;
            let mut admin = g.any_client("alice").await;
            admin.create_replicated_topic("sk", partitions, 3, 2).await.unwrap();
            admin.close();
            g.wait_for("all in sync", "sk", |d| d.partitions.len() == 3 && d.partitions.iter().all(|p| p.isr.len() == 3))
                .await;
        }
        let p = {
            let g = c.lock().await;
            common::fault_tolerant(g.producer("alice")).acks(Acks::All).idempotence(true).build().unwrap()
        };
        let over = Duration::from_secs(secs as u64);
        // Kills on progress: the leader of a rotating partition, restarted after a pause.
        let killer = {
            let c = c.clone();
            tokio::spawn(async move {
                let mut done = 0;
                let slot = over / (kills as u32 + 1);
                for k in 0..kills {
                    tokio::time::sleep(slot).await;
                    let mut g = c.lock().await;
                    let leader = g.leader("sk", (k % partitions as usize) as u32).await;
                    let i = g.index_of(leader);
                    g.kill(i);
                    drop(g);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    let mut g = c.lock().await;
                    tokio::task::block_in_place(|| g.start_node(i));
                    done += 1;
                }
                done
            })
        };
        let mut ledger = common::Ledger::new("sk", partitions);
        ledger.produce(&p, records, over, 32).await;
        let killed = killer.await.unwrap();
        let m = p.metrics();
        let _ = p.close(Duration::from_secs(30)).await;
        let mut g = c.lock().await;
        g.wait_for("all back in sync", "sk", |d| d.partitions.iter().all(|p| p.isr.len() == 3)).await;
        let stored = g.stop_and_compare("sk", partitions);
        let v = ledger.verify_records(stored);
        println!(
            "cluster sigkill: {records} records over {partitions} partitions, {killed} leader kills, {:?} in all\n  {v:?}\n  producer: retries {}",
            started.elapsed(),
            m.retries
        );
        if v.failed_not_persisted + v.failed_possibly_persisted + v.failed_persisted > 0 {
            println!("  first failures: {:#?}", ledger.failures(5));
        }
        v.assert_exactly_once();
        assert_eq!(killed, kills);
        assert_eq!(v.acked, records, "with unlimited retries and a long delivery timeout every record is acked");
        assert!(m.retries > 0, "the kills hit records in flight: {m:?}");
    });
}

/// The same producer code, unchanged, against a single broker and against a cluster.
#[test]
fn the_same_producer_code_works_against_a_single_broker_and_a_cluster() {
    async fn workload(p: qwire::producer::Producer) -> Vec<(u32, i64)> {
        let mut out = Vec::new();
        for i in 0..200u32 {
            let r = qwire::producer::ProducerRecord::new("same", format!("v{i}")).key(format!("k{}", i % 7));
            let md = p.send(r).await.expect("acknowledged");
            out.push((md.partition, md.offset.expect("an offset with acks=all")));
        }
        let _ = p.close(Duration::from_secs(10)).await;
        out
    }
    rt().block_on(async {
        let single = common::BrokerProcess::new("");
        let mut single = single;
        single.start();
        let mut admin = Client::connect(&single.client_config("alice")).await.unwrap();
        admin.create_topic("same", 4).await.unwrap();
        admin.close();
        let a = workload(single.producer("alice").acks(Acks::All).build().unwrap()).await;
        let mut c = Cluster::start(3);
        let mut admin = c.any_client("alice").await;
        admin.create_replicated_topic("same", 4, 3, 2).await.unwrap();
        admin.close();
        c.wait_for("assigned", "same", |d| d.partitions.len() == 4 && d.partitions.iter().all(|p| p.leader >= 0)).await;
        let b = workload(c.producer("alice").acks(Acks::All).build().unwrap()).await;
        // Same keys → same partitions, offsets counting from 0 per partition in both.
        assert_eq!(a, b);
        let leaders: std::collections::BTreeSet<i32> =
            c.describe("same").await.partitions.iter().map(|p| p.leader).collect();
        assert!(leaders.len() > 1, "partitions are led by several brokers: {leaders:?}");
    });
}

/// `qwire topics alter` adds partitions; a running producer picks them up from metadata.
#[test]
fn added_partitions_are_assigned_and_a_running_producer_picks_them_up() {
    rt().block_on(async {
        let mut c = Cluster::start(3);
        let mut admin = c.any_client("alice").await;
        admin.create_replicated_topic("grow", 2, 2, 1).await.unwrap();
        c.wait_for("assigned", "grow", |d| d.partitions.len() == 2 && d.partitions.iter().all(|p| p.leader >= 0)).await;
        let p = c.producer("alice").acks(Acks::All).metadata_max_age(Duration::from_millis(300)).build().unwrap();
        assert_eq!(p.partitions_for("grow").await.unwrap(), 2);
        p.send(qwire::producer::ProducerRecord::new("grow", "before").partition(1)).await.unwrap();
        // The CLI's path: AlterPartitions to any broker.
        let bin = env!("CARGO_BIN_EXE_qwire");
        let out = std::process::Command::new(bin)
            .args(["topics", "alter", "grow", "--partitions", "5", "-s", &c.nodes[2].addr.to_string()])
            .arg("--certs")
            .arg(c.certs.path())
            .args(["--client", "alice"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "topic 'grow' has 5 partitions");
        admin.alter_partitions("grow", 5).await.expect("the same count again is a no-op");
        let shrink = admin.alter_partitions("grow", 3).await.unwrap_err();
        assert_eq!(shrink.code(), Some(ErrorCode::InvalidPartitions));
        admin.close();
        let d = c
            .wait_for("new partitions led", "grow", |d| {
                d.partitions.len() == 5 && d.partitions.iter().all(|p| p.leader >= 0)
            })
            .await;
        assert!(d.partitions.iter().all(|p| p.replicas.len() == 2));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while p.partitions_for("grow").await.unwrap() < 5 {
            assert!(std::time::Instant::now() < deadline, "the producer never saw the new partitions");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let md = p.send(qwire::producer::ProducerRecord::new("grow", "after").partition(4)).await.unwrap();
        assert_eq!((md.partition, md.offset), (4, Some(0)));
        p.close(Duration::from_secs(10)).await.unwrap();
    });
}
