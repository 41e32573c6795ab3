//! The async shell around the core: the one task that owns the sockets (through the
//! connection tasks in `pool`), the timer, and the channels from the producer handles.
//! It feeds the core what happens (`handle_*`), then does what the core says
//! (`poll_transmit`, `poll_action`, `poll_outcome`) and sleeps until `poll_timeout` or
//! the next event. It decides nothing itself.
//!
//! User code (callbacks, the partitioner's hook) runs here, inside `catch_unwind`. If the
//! shell ends for any reason, including a panic or its task being dropped before it ever
//! ran (the runtime shut down), its drop guard closes the accumulator so that queued and
//! later records fail at once, and the core's deliveries report themselves as they are
//! dropped: no future is left waiting.

pub(crate) mod pool;

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::accumulator::{Accumulator, FlushPoint};
use super::clock::{Tick, WallClock, REBASE_EVERY};
use super::config::TlsConfig;
use super::core::{Action, ConnId, Core, FlushReply, HelloInfo, MetadataReply, Outcome};
use super::error::{ErrorKind, Persistence, ProduceError};
use super::partitioner::Partitioner;
use crate::transport::tls::{client_tls, quinn_client_config, QuicTuning};
use crate::transport::{BrokerConnection, ClientEndpoint, TransportError};
use pool::{ConnectSpec, Event, StreamHandle};

/// Requests from producer handles. Their channel is unbounded but bounded by construction:
/// every command but one kind has a caller waiting for its answer (`flush`, `close`,
/// `purge`, a `send` waiting for metadata: at most one per waiting call), and a `try_send`
/// to an unknown topic sends at most one request per topic until the driver answers it,
/// for at most `MAX_PENDING_TOPICS` topics (see `Accumulator::ask_metadata`).
pub(crate) enum Command {
    /// Resolve a topic's queues (`None`: just fetch them, nobody waits).
    Metadata { topic: Arc<str>, reply: Option<MetadataReply> },
    /// Seal everything now; answer when every record enqueued before `point` is done.
    Flush { point: FlushPoint, reply: FlushReply },
    /// Flush (up to `point`), then fail what is left at the deadline, then stop.
    Close { timeout: Duration, point: FlushPoint, reply: FlushReply },
    /// Fail every record not yet sent; answers how many.
    Purge { reply: oneshot::Sender<usize> },
}

/// How the shell ended, for `flush()`/`close()` calls made afterwards.
#[derive(Debug, Default)]
pub(crate) struct Ended(OnceLock<Result<(), ProduceError>>);

impl Ended {
    /// `None` while running; then what a later `flush()` or `close()` returns: `Ok` after a
    /// clean close, the first close's error after an unclean one, the fatal error, or
    /// why the driver stopped.
    pub(crate) fn get(&self) -> Option<Result<(), ProduceError>> {
        self.0.get().cloned()
    }
}

/// Builds the QUIC client configuration for `tls`.
pub(crate) fn quic_config(tls: &TlsConfig, tuning: &QuicTuning) -> Result<quinn::ClientConfig, String> {
    let rustls = client_tls(tls.identity.as_ref(), &tls.ca).map_err(|e| e.to_string())?;
    quinn_client_config(rustls, tuning).map_err(|e| e.to_string())
}

/// One open connection as the shell holds it.
struct Conn {
    connection: Arc<BrokerConnection>,
    streams: Vec<StreamHandle>,
}

/// The shell; see the module docs.
pub(crate) struct Shell {
    /// First field, so dropped first: made with the shell (before the driver task is
    /// spawned), it closes everything however the shell ends, even dropped unpolled when
    /// its runtime shuts down.
    guard: EndGuard,
    pub core: Core,
    pub acc: Arc<Accumulator>,
    pub partitioner: Arc<dyn Partitioner>,
    pub cmd_rx: mpsc::UnboundedReceiver<Command>,
    pub endpoint: ClientEndpoint,
    pub tls: TlsConfig,
    pub tuning: QuicTuning,
    pub wall: Arc<WallClock>,
    ev_tx: pool::Events,
    ev_rx: mpsc::Receiver<Event>,
    /// Events the shell makes itself (it never waits on its own bounded channel).
    local: std::collections::VecDeque<Event>,
    conns: HashMap<ConnId, Conn>,
    /// Client configuration read again after a refused certificate (used from then on).
    reloaded: pool::Reloaded,
    cmd_closed: bool,
}

/// Fails what is left when the shell ends, however it ends.
struct EndGuard {
    acc: Arc<Accumulator>,
    ended: Arc<Ended>,
    /// Set on a normal end: what later `flush()`/`close()` calls return
    /// (`Core::end_result`), and the fatal error records fail with, if any.
    outcome: Option<(Result<(), ProduceError>, Option<ProduceError>)>,
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        let (result, fatal) = self.outcome.take().unwrap_or_else(|| {
            let e = ProduceError::new(
                ErrorKind::Closed,
                Persistence::PossiblyPersisted,
                "the producer's driver stopped before the producer was closed (its runtime shut down, or a bug)",
            );
            (Err(e.clone()), Some(e))
        });
        let reason = fatal.unwrap_or_else(super::core::closed_error);
        let _ = self.ended.0.set(result);
        for r in self.acc.close(reason.clone()) {
            r.delivery.complete(Err(reason.clone().with_persistence(Persistence::NotPersisted)));
        }
    }
}

impl Shell {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        core: Core,
        acc: Arc<Accumulator>,
        partitioner: Arc<dyn Partitioner>,
        cmd_rx: mpsc::UnboundedReceiver<Command>,
        endpoint: ClientEndpoint,
        tls: TlsConfig,
        tuning: QuicTuning,
        wall: Arc<WallClock>,
        ended: Arc<Ended>,
    ) -> Self {
        let (ev_tx, ev_rx) = mpsc::channel(pool::EVENT_CAPACITY);
        Shell {
            guard: EndGuard { acc: acc.clone(), ended, outcome: None },
            core,
            acc,
            partitioner,
            cmd_rx,
            endpoint,
            tls,
            tuning,
            wall,
            ev_tx,
            ev_rx,
            local: std::collections::VecDeque::new(),
            conns: HashMap::new(),
            reloaded: Arc::new(Mutex::new(None)),
            cmd_closed: false,
        }
    }

    /// Runs until the core is finished (closed, fenced, or every handle dropped and
    /// everything delivered).
    pub(crate) async fn run(mut self) {
        let mut fatal = None;
        loop {
            while let Some(ev) = self.local.pop_front() {
                self.on_event(ev);
            }
            let now = Tick::now();
            self.core.handle_timeout(now);
            self.do_outputs(&mut fatal);
            if self.core.is_finished() {
                break;
            }
            if !self.local.is_empty() {
                continue;
            }
            // The same `now` as `handle_timeout`: a deadline that came due while the
            // outputs (user callbacks) ran fires at once instead of being dropped.
            let deadline = self.core.poll_timeout(now).map(|t| {
                let (at, wait) = (tokio::time::Instant::now(), t.saturating_duration_since(Tick::now()));
                at.checked_add(wait).unwrap_or_else(|| at + super::config::MAX_DURATION)
            });
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    biased;
                    cmd = self.cmd_rx.recv(), if !self.cmd_closed => self.on_command(cmd),
                    Some(ev) = self.ev_rx.recv() => self.on_event(ev),
                    _ = self.acc.wake.notified() => {}
                    _ = &mut sleep => {}
                    // The wall clock's base is refreshed while idle too; the core is not run
                    // for it (it has no heartbeat: see `Core::poll_timeout`).
                    _ = tokio::time::sleep(REBASE_EVERY) => {
                        self.wall.rebase_if_due(Tick::now());
                        continue;
                    }
                }
                break;
            }
            // Bounded catch-up on whatever else is waiting.
            for _ in 0..4096 {
                match self.ev_rx.try_recv() {
                    Ok(ev) => self.on_event(ev),
                    Err(_) => break,
                }
            }
            while !self.cmd_closed {
                match self.cmd_rx.try_recv() {
                    Ok(c) => self.on_command(Some(c)),
                    Err(_) => break,
                }
            }
            self.wall.rebase_if_due(Tick::now());
        }
        for (_, c) in self.conns.drain() {
            c.connection.close("producer closed");
        }
        self.guard.outcome = Some((self.core.end_result(), fatal));
    }

    fn on_command(&mut self, cmd: Option<Command>) {
        let now = Tick::now();
        match cmd {
            Some(Command::Metadata { topic, reply }) => self.core.handle_metadata_wanted(now, topic, reply),
            Some(Command::Flush { point, reply }) => self.core.handle_flush(now, point, reply),
            Some(Command::Close { timeout, point, reply }) => {
                self.core.handle_close(now, timeout, Some((point, reply)))
            }
            Some(Command::Purge { reply }) => self.core.handle_purge(now, reply),
            None => {
                // Every handle is gone: deliver what is queued, within the delivery
                // timeout, then stop (documented on `Producer`).
                self.cmd_closed = true;
                let timeout = self.core.config().delivery_timeout;
                self.core.handle_close(now, timeout, None);
            }
        }
    }

    fn on_event(&mut self, ev: Event) {
        let now = Tick::now();
        match ev {
            Event::Connected { conn, connection, streams } => {
                let h = connection.hello();
                let hello = HelloInfo {
                    broker_id: h.broker_id,
                    max_frame_size: h.max_frame_size as usize,
                    max_batch_bytes: h.max_batch_bytes as usize,
                    max_in_flight: usize::from(h.max_in_flight_per_partition),
                    per_partition_epochs: h.features & crate::protocol::frame::HelloOk::PER_PARTITION_EPOCHS != 0,
                };
                self.conns.insert(conn, Conn { connection, streams });
                self.core.handle_connected(now, conn, hello);
            }
            Event::ConnectFailed { conn, error } => self.core.handle_connect_failed(now, conn, error),
            Event::StreamOpened { stream, handle } => match self.conns.get_mut(&stream.conn) {
                Some(c) if stream.index < c.streams.len() => {
                    c.streams[stream.index] = handle;
                    self.core.handle_stream_opened(now, stream);
                }
                _ => {}
            },
            Event::StreamDown { stream, error } => match error {
                Some(e @ (TransportError::ConnectionLost { .. } | TransportError::TlsRejected { .. })) => {
                    self.core.handle_connection_lost(now, stream.conn, e)
                }
                Some(e) => self.core.handle_stream_lost(now, stream, e),
                None => {
                    let addr = self.conns.get(&stream.conn).map(|c| c.connection.addr());
                    let e = match addr {
                        Some(addr) => TransportError::StreamClosed {
                            addr,
                            detail: format!("broker finished data stream {}", stream.index),
                        },
                        None => return,
                    };
                    self.core.handle_stream_lost(now, stream, e)
                }
            },
            Event::Written { stream, frames } => self.core.handle_written(now, stream, frames),
            Event::Frame { stream, frame } => self.core.handle_response(now, stream, frame),
            Event::Control { tag, result } => self.core.handle_control(now, tag, result),
        }
    }

    fn do_outputs(&mut self, fatal: &mut Option<ProduceError>) {
        while let Some(t) = self.core.poll_transmit() {
            if let Some(s) = self.conns.get(&t.stream.conn).and_then(|c| c.streams.get(t.stream.index)) {
                // A closed channel means the writer is gone: its StreamDown event follows.
                let _ = s.tx.send((t.head, t.batch));
            }
        }
        while let Some(a) = self.core.poll_action() {
            self.do_action(a);
        }
        while let Some(o) = self.core.poll_outcome() {
            if let Outcome::Fatal(e) = &o {
                *fatal = Some(e.clone());
                // New records fail at once from now on, with this error.
                for r in self.acc.close(e.clone()) {
                    r.delivery.complete(Err(e.clone()));
                }
            }
            self.deliver(o);
        }
    }

    fn do_action(&mut self, a: Action) {
        match a {
            Action::Connect { conn, addr, streams, reload_tls } => {
                let tls = pool::Tls {
                    material: self.tls.clone(),
                    tuning: self.tuning.clone(),
                    reload: reload_tls,
                    current: self.reloaded.clone(),
                };
                let spec = ConnectSpec {
                    endpoint: self.endpoint.clone(),
                    tls,
                    addr,
                    server_name: self.tls.server_name.clone(),
                    client_id: self.core.config().client_id.clone(),
                    sasl: self.core.config().sasl.clone(),
                    conn,
                    streams,
                    connect_timeout: self.core.config().connect_timeout,
                };
                pool::spawn_connect(spec, self.ev_tx.clone());
            }
            Action::Call { tag, conn, request, timeout } => match self.conns.get(&conn) {
                Some(c) => pool::spawn_call(c.connection.clone(), request, tag, timeout, self.ev_tx.clone()),
                None => {
                    let addr = "0.0.0.0:0".parse().expect("literal");
                    let error = TransportError::StreamClosed { addr, detail: "connection gone".into() };
                    self.local.push_back(Event::Control { tag, result: Err(error) });
                }
            },
            Action::ResetStream { stream } => {
                if let Some(c) = self.conns.get_mut(&stream.conn) {
                    if let Some(s) = c.streams.get_mut(stream.index) {
                        s.reset();
                    }
                    let next = super::core::StreamId { gen: stream.gen + 1, ..stream };
                    pool::spawn_reopen(c.connection.clone(), next, self.ev_tx.clone());
                }
            }
            Action::Close { conn, reason } => {
                if let Some(c) = self.conns.remove(&conn) {
                    c.connection.close(reason);
                }
            }
        }
    }

    /// Completes deliveries and replies; calls the partitioner's hook for a sealed batch
    /// (a fatal outcome was already acted on by the driver loop).
    fn deliver(&mut self, o: Outcome) {
        if let Some(Outcome::Sealed { topic, partition, partitions }) = o.complete() {
            let p = &self.partitioner;
            if catch_unwind(AssertUnwindSafe(|| p.on_batch_sealed(&topic, partition, partitions))).is_err() {
                tracing::error!(%topic, partition, "the partitioner's on_batch_sealed panicked; the producer goes on");
            }
        }
    }
}
