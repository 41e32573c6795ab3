//! The broker's cluster node (`qwire broker --metadata etcd://...`): its session in the
//! metadata store, the controller loop, and the reconciler that turns the cluster view
//! into local roles — leading (with a [`replica::Replica`]'s replica set), following (a
//! [`follower`] task), or waiting. CLUSTER.md describes the design.
//!
//! - [`replica`]: one partition's replication state on this broker;
//! - [`follower`]: the follower task (KIP-101 truncation, then fetch, append, fsync);
//! - [`peers`]: connections to the other brokers;
//! - [`producer_ids`]: producer ids issued and checked cluster-wide;
//! - [`schemas`]: the schema registry's shared log kept applied;
//! - `topics`: creating and growing topics in the metadata store, and the local topic.

pub(crate) mod follower;
pub(crate) mod peers;
pub(crate) mod producer_ids;
pub(crate) mod replica;
pub(crate) mod schemas;
mod topics;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use self::peers::Peers;
use self::replica::Replica;
use super::topics::TopicRegistry;
use crate::client::ConnectConfig;
use crate::cluster::config::ClusterConfig;
use crate::cluster::controller::{run_controller, ControllerConfig};
use crate::cluster::metadata::{
    spawn_view_watcher, BrokerRegistration, ClusterView, MetaError, Metadata, Session, SessionStatus,
};
use crate::cluster::replica_set::ReplicaConfig;
use crate::cluster::roles::{roles, Role};
use crate::cluster::store::MetaStore;
use crate::transport::certs::Identity;
use crate::transport::tls::QuicTuning;
use rustls_pki_types::CertificateDer;

/// How often the leader re-evaluates its in-sync sets.
const ISR_TICK: Duration = Duration::from_millis(200);

/// A broker's cluster membership.
pub(crate) struct NodeInner {
    pub(crate) config: ClusterConfig,
    pub(crate) me: u32,
    pub(crate) meta: Metadata,
    registration: BrokerRegistration,
    session: Mutex<Arc<Session>>,
    pub(crate) view: watch::Receiver<Arc<ClusterView>>,
    replicas: RwLock<HashMap<(String, u32), Arc<Replica>>>,
    pub(crate) peers: Peers,
    pub(crate) max_fetch_bytes: u32,
    /// Producer ids issued by any broker of the cluster.
    pub(crate) producer_ids: producer_ids::ClusterProducerIds,
}

/// The metadata store named by the configuration.
async fn store_for(config: &ClusterConfig) -> Result<Arc<dyn MetaStore>, String> {
    #[cfg(feature = "cluster")]
    {
        use crate::cluster::store::{EtcdConfig, EtcdStore};
        let store = EtcdStore::connect(&EtcdConfig::new(config.metadata.endpoints.clone()))
            .await
            .map_err(|e| format!("cannot reach the metadata store {}: {e}", config.metadata))?;
        Ok(Arc::new(store) as Arc<dyn MetaStore>)
    }
    #[cfg(not(feature = "cluster"))]
    {
        Err(format!(
            "{} needs cluster support: build qwire with `--features cluster` (see CLUSTER.md)",
            config.metadata
        ))
    }
}

/// The random id of this data directory (`DATA_DIR/cluster-instance`), created once.
fn instance_id(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join("cluster-instance");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
        Ok(_) | Err(_) => {
            let mut id = [0u8; 16];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
            let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
            crate::broker::disk::write_atomic(
                &path,
                format!("{id}\n").as_bytes(),
                0o644,
                &crate::broker::disk::Syncer::os(),
            )?;
            Ok(id)
        }
    }
}

impl NodeInner {
    /// Connects to the metadata store and registers this broker.
    pub(crate) async fn start(
        config: ClusterConfig,
        data_dir: &Path,
        local_addr: SocketAddr,
        identity: &Identity,
        ca: &[CertificateDer<'static>],
        max_fetch_bytes: u32,
    ) -> Result<Arc<NodeInner>, String> {
        config.validate()?;
        let store = store_for(&config).await?;
        let meta = Metadata::new(store.clone(), &config.metadata.prefix);
        let instance = instance_id(data_dir).map_err(|e| format!("cluster instance id: {e}"))?;
        let (host, port) = match &config.advertise {
            Some(a) => {
                let (h, p) = a.rsplit_once(':').expect("validated");
                (h.trim_matches(|c| c == '[' || c == ']').to_owned(), p.parse().expect("validated"))
            }
            None if local_addr.ip().is_unspecified() => {
                return Err(format!(
                    "listening on {local_addr}: give --advertise HOST:PORT so other brokers can reach this one"
                ))
            }
            None => (local_addr.ip().to_string(), local_addr.port()),
        };
        let registration = BrokerRegistration { id: config.broker_id, host, port, instance };
        let session = meta.register(registration.clone(), config.session_ttl).await.map_err(|e| e.to_string())?;
        tracing::info!(broker = config.broker_id, store = %config.metadata, address = %registration.address(), "registered in the cluster");
        let view = spawn_view_watcher(store, meta.keys().clone());
        let template = ConnectConfig {
            addr: local_addr,
            server_name: config.peer_server_name.clone(),
            identity: Some(identity.clone()),
            ca: ca.to_vec(),
            client_id: format!("qwire-broker-{}", config.broker_id),
            connect_timeout: Duration::from_secs(5),
            tuning: QuicTuning { keep_alive: Some(Duration::from_secs(1)), ..QuicTuning::default() },
            // Brokers authenticate to each other with their certificates (principal: the
            // broker certificate's name, which needs the ACL's `cluster` permission).
            sasl: None,
        };
        Ok(Arc::new(NodeInner {
            me: config.broker_id,
            config,
            producer_ids: producer_ids::ClusterProducerIds::new(meta.clone()),
            meta,
            registration,
            session: Mutex::new(Arc::new(session)),
            view,
            replicas: RwLock::new(HashMap::new()),
            peers: Peers::new(template),
            max_fetch_bytes,
        }))
    }

    /// The current session.
    pub(crate) fn session(&self) -> Arc<Session> {
        self.session.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether this broker may act as a leader right now: its session certainly holds.
    pub(crate) fn session_holds(&self) -> bool {
        self.session().holds_at(tokio::time::Instant::now())
    }

    /// Whether this broker has a current view of the cluster: the view is not stale, the
    /// session holds, and the view lists this broker under that session (readiness).
    pub(crate) fn view_current(&self) -> bool {
        let session = self.session();
        let view = self.view.borrow();
        view.stale_since.is_none()
            && session.holds_at(tokio::time::Instant::now())
            && view.is_live_session(self.me, session.revision())
    }

    /// The current view.
    pub(crate) fn view(&self) -> Arc<ClusterView> {
        self.view.borrow().clone()
    }

    /// `host:port` of a registered broker.
    pub(crate) fn address_of(&self, broker: u32) -> Option<String> {
        self.view.borrow().brokers.get(&broker).map(|b| b.registration.address())
    }

    /// The replication state of a local partition, if this broker holds a replica.
    pub(crate) fn replica(&self, topic: &str, partition: u32) -> Option<Arc<Replica>> {
        self.replicas.read().unwrap_or_else(|p| p.into_inner()).get(&(topic.to_owned(), partition)).cloned()
    }

    fn replica_config(&self, view: &ClusterView, topic: &str) -> ReplicaConfig {
        let min = view.topics.get(topic).map_or(1, |t| t.value.min_insync_replicas.max(1));
        ReplicaConfig { min_insync: usize::from(min), lag_max: self.config.replica_lag_max }
    }

    /// Starts the node's tasks: controller, reconciler, in-sync maintenance; they end
    /// when `shutdown` turns true.
    pub(crate) fn run(self: &Arc<Self>, registry: Arc<TopicRegistry>, shutdown: watch::Receiver<bool>) {
        tokio::spawn(supervise(self.clone(), registry, shutdown.clone()));
        tokio::spawn(isr_loop(self.clone(), shutdown));
    }

    /// Leaves the cluster at shutdown: stops following, revokes the session (its
    /// partitions fail over at once instead of after the TTL).
    pub(crate) async fn leave(&self) {
        for r in self.all_replicas() {
            stop_follower(&r);
            r.become_waiting(-1);
        }
        self.peers.close_all().await;
        let session = self.session();
        if let Err(e) = self.meta.store().revoke_lease(session.lease()).await {
            tracing::warn!(error = %e, "could not revoke the session at shutdown; it expires after its TTL");
        }
    }

    /// Every local replica (`/metrics` reads them).
    pub(crate) fn all_replicas(&self) -> Vec<Arc<Replica>> {
        self.replicas.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// The local replica of a partition, opened (and its log created) on first use.
    async fn ensure_replica(
        self: &Arc<Self>,
        registry: &Arc<TopicRegistry>,
        topic: &str,
        partition: u32,
        partitions: u32,
    ) -> Result<Arc<Replica>, String> {
        if let Some(r) = self.replica(topic, partition) {
            return Ok(r);
        }
        let (reg, name) = (registry.clone(), topic.to_owned());
        let replica = tokio::task::spawn_blocking(move || {
            let t = reg.ensure(&name, partitions).map_err(|e| e.message)?;
            let p =
                t.partitions.get(partition as usize).cloned().ok_or_else(|| format!("{name}-{partition} missing"))?;
            let dir = reg.partition_dir(&name, partition);
            Replica::open(t.name.clone(), partition, p, &dir).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())??;
        let replica = Arc::new(replica);
        spawn_durability_forwarder(&replica);
        let mut map = self.replicas.write().unwrap_or_else(|p| p.into_inner());
        Ok(map.entry((topic.to_owned(), partition)).or_insert(replica).clone())
    }
}

/// Forwards the partition's durable end to its replica state (the leader's high
/// watermark needs it) for as long as the replica exists.
fn spawn_durability_forwarder(replica: &Arc<Replica>) {
    let weak = Arc::downgrade(replica);
    let mut rx = replica.partition.subscribe_durable();
    tokio::spawn(async move {
        loop {
            let end = rx.borrow_and_update().end;
            match weak.upgrade() {
                Some(r) => r.on_durable(end),
                None => return,
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    });
}

fn stop_follower(r: &Replica) {
    if let Some((_, _, h)) = r.follower.lock().unwrap_or_else(|p| p.into_inner()).take() {
        h.abort();
    }
}

/// Keeps the session (registering again after it is lost), the controller and the
/// reconciler running until shutdown.
async fn supervise(node: Arc<NodeInner>, registry: Arc<TopicRegistry>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let session = node.session();
        let (stop_tx, stop_rx) = watch::channel(false);
        let controller = tokio::spawn(run_controller(
            node.meta.clone(),
            session.clone(),
            node.view.clone(),
            ControllerConfig { unclean_leader_election: node.config.unclean_leader_election },
            stop_rx,
        ));
        let stopping = tokio::select! {
            _ = reconcile(&node, &registry, &session) => false,
            _ = shutdown.wait_for(|s| *s) => true,
        };
        if stopping {
            let _ = stop_tx.send(true);
            let _ = controller.await;
            return;
        }
        // The session was lost: stop acting on it.
        let _ = stop_tx.send(true);
        controller.abort();
        for r in node.all_replicas() {
            stop_follower(&r);
            r.become_waiting(-1);
        }
        tracing::error!(
            broker = node.me,
            "cluster session lost: this broker leads and follows nothing until it registers again"
        );
        // Register again (the old registration expires with its lease).
        let mut backoff = Duration::from_millis(200);
        loop {
            if *shutdown.borrow() {
                return;
            }
            match node.meta.register(node.registration.clone(), node.config.session_ttl).await {
                Ok(s) => {
                    *node.session.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(s);
                    tracing::info!(broker = node.me, "registered again with a new session");
                    break;
                }
                Err(e) => {
                    if !matches!(e, MetaError::DuplicateBroker { .. }) {
                        tracing::warn!(broker = node.me, error = %e, "registering again failed; retrying");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

/// Applies the view's roles to the local replicas until the session is lost.
async fn reconcile(node: &Arc<NodeInner>, registry: &Arc<TopicRegistry>, session: &Arc<Session>) {
    let mut view_rx = node.view.clone();
    let mut status = session.subscribe();
    loop {
        if matches!(&*status.borrow_and_update(), SessionStatus::Lost { .. }) {
            return;
        }
        let view = view_rx.borrow_and_update().clone();
        // On a stale view, keep the roles as they are: a leader serves while its session
        // holds (CLUSTER.md, "etcd unreachable").
        if view.stale_since.is_none() {
            apply_roles(node, registry, session, &view).await;
        }
        tokio::select! {
            _ = view_rx.changed() => {}
            _ = status.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn apply_roles(node: &Arc<NodeInner>, registry: &Arc<TopicRegistry>, session: &Arc<Session>, view: &ClusterView) {
    let mine = roles(view, node.me, session.revision());
    for ((topic, p), role) in &mine {
        let partitions = view.topics.get(topic).map_or(p + 1, |t| t.value.partitions.max(p + 1));
        let replica = match node.ensure_replica(registry, topic, *p, partitions).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(topic, partition = p, error = %e, "cannot open the local replica");
                continue;
            }
        };
        let state = view.partition(topic, *p).cloned().expect("a role comes from a state");
        match role {
            Role::Leader { epoch } => {
                if replica.leader_epoch() == Some(*epoch) {
                    replica.on_state(state);
                    continue;
                }
                stop_follower(&replica);
                let hw = replica.high_watermark();
                let (r, cfg, me) = (replica.clone(), node.replica_config(view, topic), node.me);
                let res = tokio::task::spawn_blocking(move || r.become_leader(me, state, cfg, hw)).await;
                if let Err(e) = res.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string())) {
                    tracing::error!(topic, partition = p, error = %e, "cannot take the leadership");
                    replica.become_waiting(*epoch);
                }
            }
            Role::Follower { leader, epoch, .. } => {
                let mut f = replica.follower.lock().unwrap_or_else(|p| p.into_inner());
                if matches!(&*f, Some((l, e, _)) if l == leader && e == epoch) {
                    continue;
                }
                if let Some((_, _, h)) = f.take() {
                    h.abort();
                }
                replica.become_follower(*leader, *epoch);
                let task = tokio::spawn(follower::follow(node.clone(), replica.clone(), *leader, *epoch));
                *f = Some((*leader, *epoch, task.abort_handle()));
            }
            Role::Waiting { epoch } => {
                stop_follower(&replica);
                if replica.role_summary() != (None, *epoch) || replica.leader_epoch().is_some() {
                    replica.become_waiting(*epoch);
                }
            }
        }
    }
    // Replicas this broker no longer holds (none today: assignments are fixed).
    for r in node.all_replicas() {
        if !mine.contains_key(&(r.topic.to_string(), r.index)) {
            stop_follower(&r);
            if r.leader_epoch().is_some() {
                r.become_waiting(-1);
            }
        }
    }
}

/// Writes the leaders' in-sync changes (shrink laggards, add caught-up replicas).
async fn isr_loop(node: Arc<NodeInner>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(ISR_TICK) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        if !node.session_holds() {
            continue;
        }
        for r in node.all_replicas() {
            if let Some(state) = r.needs_abdication() {
                let session = node.session();
                match node.meta.abdicate(&session, &r.topic, r.index, &state).await {
                    Ok(_) => {
                        tracing::warn!(topic = %r.topic, partition = r.index, epoch = state.value.leader_epoch,
                            "leadership given up: the log was cut after a failed fsync; a new epoch follows");
                        r.become_waiting(state.value.leader_epoch + 1);
                    }
                    Err(e) => {
                        tracing::warn!(topic = %r.topic, partition = r.index, error = %e, "giving up the leadership failed; retrying")
                    }
                }
                continue;
            }
            let Some((state, isr)) = r.take_isr_proposal() else { continue };
            let session = node.session();
            match node.meta.write_isr(&session, &r.topic, r.index, &state, isr.clone()).await {
                Ok(written) => {
                    tracing::info!(topic = %r.topic, partition = r.index, from = ?state.value.isr, to = ?isr, "in-sync replicas changed");
                    r.on_state(written);
                }
                Err(e) => {
                    tracing::debug!(topic = %r.topic, partition = r.index, error = %e, "in-sync change not written");
                    r.isr_proposal_failed();
                }
            }
        }
    }
}
