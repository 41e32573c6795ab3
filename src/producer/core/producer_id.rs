//! The producer id and epoch: getting one from the broker, bumping the epoch when a
//! partition's sequence broke in a way renumbering cannot repair, and fencing.
//!
//! Two ways to bump (see `window` for what a partition does meanwhile):
//! - **global** (any broker): once some partition needs a new epoch, no partition numbers
//!   new batches; each one resends only what it must settle; when every partition is
//!   drained the epoch is bumped and every partition restarts at sequence 0;
//! - **per partition** (a broker that announces it resolves old-epoch batches by its dedup
//!   state first, Kafka's KIP-360 behaviour): the bump is asked for at once; each partition
//!   keeps settling its batches in the epoch it numbered them in, and restarts at 0 in the
//!   new epoch when it is drained. Other partitions are not held up.

use super::window::Resync;
use super::{ControlKind, Core, Outcome, Tick};
use crate::producer::clock::later;
use crate::producer::error::{ErrorKind, Persistence, ProduceError};
use crate::producer::metrics::ProducerMetrics;
use crate::protocol::frame::InitProducerId;
use crate::protocol::{ErrorCode, Payload};
use crate::transport::TransportError;

/// Producer id state for idempotence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PidState {
    /// Idempotence is off.
    Off,
    /// No id yet.
    Missing,
    /// Batches are numbered in this id and epoch.
    Ready { id: i64, epoch: i16 },
    /// Fenced by a newer producer: fatal.
    Fenced,
}

/// Whether a new epoch is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bump {
    /// No.
    None,
    /// Yes, for partitions numbered in this epoch; not asked for yet.
    Wanted { epoch: i16 },
    /// Asked for.
    Requested,
}

/// The producer id and what is being asked for it.
#[derive(Debug)]
pub(crate) struct ProducerId {
    /// Where it stands.
    pub state: PidState,
    /// A bump in progress.
    pub bump: Bump,
    /// An InitProducerId is out (for a new id or a bump).
    requested: bool,
    /// Not before this may another InitProducerId go out (after a failure).
    retry_at: Option<Tick>,
    /// The broker refused to give an id (e.g. no write permission): records that need one
    /// fail with this until it gives one.
    pub refused: Option<ProduceError>,
    /// Ask for a new id instead of bumping (the broker no longer knows ours).
    pub fresh_id: bool,
    /// A bump from this epoch was asked for and its answer has not arrived: the broker
    /// may already have moved on, and refuse our batches of this epoch as old.
    pub bump_from: Option<i16>,
    /// A bump request went unanswered (timed out, connection lost): the broker may have
    /// done it. A refusal of the retry then does not mean fencing (see `on_init_pid`).
    bump_unknown: bool,
}

impl ProducerId {
    pub(crate) fn new(idempotent: bool) -> Self {
        let state = if idempotent { PidState::Missing } else { PidState::Off };
        ProducerId {
            state,
            bump: Bump::None,
            requested: false,
            retry_at: None,
            refused: None,
            fresh_id: false,
            bump_from: None,
            bump_unknown: false,
        }
    }

    /// The current id and epoch, if any.
    pub(crate) fn current(&self) -> Option<(i64, i16)> {
        match self.state {
            PidState::Ready { id, epoch } => Some((id, epoch)),
            _ => None,
        }
    }

    /// When the next InitProducerId may go out, if waiting for that.
    pub(crate) fn retry_at(&self) -> Option<Tick> {
        (!self.requested).then_some(self.retry_at).flatten()
    }
}

impl Core {
    /// Whether partitions number batches per partition epoch (see the module docs):
    /// every broker connected so far announced it.
    pub(crate) fn per_partition_epochs(&self) -> bool {
        let known: Vec<bool> =
            self.links.list.iter().filter(|l| l.max_frame.is_some()).map(|l| l.per_partition_epochs).collect();
        !known.is_empty() && known.iter().all(|b| *b)
    }

    /// Whether no partition may number a new batch now (the window's `hold`), besides
    /// what each window decides for itself.
    pub(crate) fn hold_all(&self) -> bool {
        match self.pid.state {
            PidState::Off => false,
            PidState::Ready { .. } => self.pid.bump != Bump::None && !self.per_partition_epochs(),
            PidState::Missing | PidState::Fenced => true,
        }
    }

    /// Lets every drained window repair or restart its numbering, and notes the windows
    /// that need a new epoch.
    pub(crate) fn resync_windows(&mut self) {
        let current = self.pid.current();
        if current.is_none() {
            return;
        }
        for t in &mut self.topics.list {
            for p in &mut t.parts {
                if let Resync::NewEpoch { epoch, .. } = p.window.resync(current) {
                    if self.pid.bump == Bump::None {
                        self.pid.bump = Bump::Wanted { epoch };
                    }
                }
            }
        }
    }

    /// Asks for a producer id, or for the bump, when it is time.
    pub(crate) fn maybe_request_pid(&mut self, now: Tick) {
        if self.pid.requested || self.pid.retry_at.is_some_and(|t| now < t) {
            return;
        }
        let payload = match (self.pid.state, self.pid.bump) {
            (PidState::Missing, _) => InitProducerId { producer_id: -1, producer_epoch: -1 },
            (PidState::Ready { id, epoch }, Bump::Wanted { epoch: wanted }) => {
                if wanted < epoch {
                    // Already past it (per partition): the window restarts by itself.
                    self.pid.bump = Bump::None;
                    return;
                }
                if !self.per_partition_epochs() {
                    let drained = self.topics.list.iter().flat_map(|t| t.parts.iter()).all(|p| p.window.is_drained());
                    if !drained {
                        return;
                    }
                }
                if self.pid.fresh_id {
                    InitProducerId { producer_id: -1, producer_epoch: -1 }
                } else {
                    InitProducerId { producer_id: id, producer_epoch: epoch }
                }
            }
            _ => return,
        };
        if self.call(now, None, Payload::InitProducerId(payload), ControlKind::InitPid) {
            self.pid.requested = true;
            if payload.producer_id >= 0 {
                self.pid.bump_from = Some(payload.producer_epoch);
            }
            if matches!(self.pid.bump, Bump::Wanted { .. }) {
                self.pid.bump = Bump::Requested;
            }
        }
    }

    pub(crate) fn on_init_pid(&mut self, now: Tick, result: Result<Payload, TransportError>) {
        self.pid.requested = false;
        if self.pid.state == PidState::Fenced {
            return;
        }
        match result {
            Ok(Payload::InitProducerIdOk(ok)) => {
                let bumped = self.pid.bump == Bump::Requested;
                self.pid.state = PidState::Ready { id: ok.producer_id, epoch: ok.producer_epoch };
                self.pid.bump = Bump::None;
                self.pid.refused = None;
                self.pid.fresh_id = false;
                self.pid.retry_at = None;
                self.pid.bump_from = None;
                self.pid.bump_unknown = false;
                tracing::info!(producer_id = ok.producer_id, epoch = ok.producer_epoch, bumped, "producer id ready");
                if bumped {
                    ProducerMetrics::add(&self.metrics.epoch_bumps, 1);
                }
                // Drained windows restart in the new epoch now; the others when drained.
                self.resync_windows();
            }
            other => {
                let refusal = match &other {
                    Err(TransportError::Broker { code, .. }) if !code.is_retriable() => Some(*code),
                    _ => None,
                };
                let msg = match other {
                    Ok(p) => format!("unexpected answer {:?} to InitProducerId", p.kind()),
                    Err(e) => e.to_string(),
                };
                tracing::warn!(error = %msg, "InitProducerId failed; retrying");
                let unit = self.jitter();
                let mut wait = self.cfg.retry_backoff.delay(1, unit);
                if self.pid.bump == Bump::Requested {
                    self.pid.bump = Bump::Wanted { epoch: self.pid.current().map_or(0, |c| c.1) };
                }
                match refusal {
                    // Our earlier bump may have been done with its answer lost (a broker
                    // that refuses a repeated bump): take a fresh id. Windows restart in
                    // it as they drain.
                    Some(ErrorCode::InvalidProducerEpoch) if self.pid.bump_unknown => self.pid.fresh_id = true,
                    // Another producer bumped our id past us.
                    Some(ErrorCode::InvalidProducerEpoch) => {
                        self.fence(now, format!("the broker refused to bump the epoch: {msg}"));
                        return;
                    }
                    // The broker does not know this id any more (its state was lost, or it
                    // forgot it): a fresh one; windows restart in it as they drain.
                    Some(ErrorCode::InvalidRequest | ErrorCode::InvalidProducerId) if self.pid.current().is_some() => {
                        self.pid.fresh_id = true
                    }
                    Some(code) => {
                        // Refused (e.g. no write permission): records that need an id fail
                        // at once until the broker gives one; ask again after a while.
                        let err = ProduceError::new(
                            ErrorKind::Broker(code),
                            Persistence::NotPersisted,
                            format!("the broker refused a producer id: {msg}"),
                        );
                        self.pid.refused = Some(err);
                        wait = self.cfg.circuit_breaker_recovery;
                    }
                    None => self.pid.bump_unknown |= self.pid.bump_from.is_some(),
                }
                self.pid.retry_at = Some(later(now, wait));
            }
        }
    }

    /// A newer producer with our id took over: fail everything, refuse everything.
    pub(crate) fn fence(&mut self, now: Tick, message: String) {
        tracing::error!(%message, "producer fenced; failing everything");
        let err = ProduceError::new(ErrorKind::Fenced, Persistence::NotPersisted, message);
        self.pid.state = PidState::Fenced;
        self.fatal = Some(err.clone());
        self.outcomes.push_back(Outcome::Fatal(err.clone()));
        self.fail_everything(err);
        self.finish(now);
    }
}
