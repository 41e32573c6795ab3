//! The producer id and epoch: getting one from the broker, bumping the epoch when a
//! partition's sequence broke, and fencing.

use super::{ControlKind, Core, Outcome, Tick};
use crate::producer::error::{ErrorKind, Persistence, ProduceError};
use crate::producer::metrics::ProducerMetrics;
use crate::protocol::frame::InitProducerId;
use crate::protocol::Payload;
use crate::transport::TransportError;

/// Producer id state for idempotence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PidState {
    /// Idempotence is off.
    Off,
    /// No id yet; `requested` while an InitProducerId is out.
    Missing { requested: bool },
    /// Ready to stamp batches.
    Ready { id: i64, epoch: i16 },
    /// A sequence broke: drain unresolved batches, then bump.
    Bumping { id: i64, epoch: i16, requested: bool },
    /// Fenced by a newer producer: fatal.
    Fenced,
}

/// The producer id and what is being asked for it.
#[derive(Debug)]
pub(crate) struct ProducerId {
    /// Where it stands.
    pub state: PidState,
    /// Not before this may another InitProducerId go out (after a failure).
    retry_at: Option<Tick>,
}

impl ProducerId {
    pub(crate) fn new(idempotent: bool) -> Self {
        let state = if idempotent { PidState::Missing { requested: false } } else { PidState::Off };
        ProducerId { state, retry_at: None }
    }

    /// When the next InitProducerId may go out, if waiting for that.
    pub(crate) fn retry_at(&self) -> Option<Tick> {
        match self.state {
            PidState::Missing { requested: false } | PidState::Bumping { requested: false, .. } => self.retry_at,
            _ => None,
        }
    }
}

impl Core {
    /// A partition's sequence is broken: bump the epoch once nothing is unresolved.
    pub(crate) fn request_bump(&mut self) {
        if let PidState::Ready { id, epoch } = self.pid.state {
            self.pid.state = PidState::Bumping { id, epoch, requested: false };
        }
    }

    pub(crate) fn maybe_request_pid(&mut self, now: Tick) {
        if self.pid.retry_at.is_some_and(|t| now < t) {
            return;
        }
        let payload = match self.pid.state {
            PidState::Missing { requested: false } => InitProducerId { producer_id: -1, producer_epoch: -1 },
            PidState::Bumping { id, epoch, requested: false } => {
                let unresolved =
                    self.topics.list.iter().flat_map(|t| t.parts.iter()).any(|p| p.window.has_unresolved());
                if unresolved {
                    return;
                }
                InitProducerId { producer_id: id, producer_epoch: epoch }
            }
            _ => return,
        };
        if self.call(now, None, Payload::InitProducerId(payload), ControlKind::InitPid) {
            match &mut self.pid.state {
                PidState::Missing { requested } | PidState::Bumping { requested, .. } => *requested = true,
                _ => {}
            }
        }
    }

    pub(crate) fn on_init_pid(&mut self, now: Tick, result: Result<Payload, TransportError>) {
        match result {
            Ok(Payload::InitProducerIdOk(ok)) => {
                let bumped = matches!(self.pid.state, PidState::Bumping { .. });
                self.pid.state = PidState::Ready { id: ok.producer_id, epoch: ok.producer_epoch };
                tracing::info!(producer_id = ok.producer_id, epoch = ok.producer_epoch, bumped, "producer id ready");
                if bumped {
                    ProducerMetrics::add(&self.metrics.epoch_bumps, 1);
                    for t in &mut self.topics.list {
                        for p in &mut t.parts {
                            // New epoch: sequences restart at 0; batches are restamped at send.
                            p.window.resequence();
                        }
                    }
                }
            }
            other => {
                let refused = matches!(&other, Err(TransportError::Broker { code, .. }) if !code.is_retriable());
                let msg = match other {
                    Ok(p) => format!("unexpected answer {:?}", p.kind()),
                    Err(e) => e.to_string(),
                };
                tracing::warn!(error = %msg, "InitProducerId failed; retrying");
                let unit = self.jitter();
                self.pid.retry_at = Some(now + self.cfg.retry_backoff.delay(1, unit));
                match &mut self.pid.state {
                    PidState::Missing { requested } => *requested = false,
                    PidState::Bumping { id, epoch, requested } => {
                        *requested = false;
                        if refused {
                            // The broker does not know this id (its state was lost): take a
                            // fresh one; the waiting batches are resequenced all the same.
                            (*id, *epoch) = (-1, -1);
                        }
                    }
                    _ => {}
                }
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
