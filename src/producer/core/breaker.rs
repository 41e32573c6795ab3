//! The per-broker circuit breaker: after `threshold` consecutive connection failures (or a
//! refused certificate) the breaker opens and batches for that broker fail fast; after
//! `recovery` it half-opens and allows exactly one trial connection; the trial's success
//! closes it, its failure opens it again for another `recovery`. A connection lost soon
//! after it opened counts as a failure too, and the count only starts over once a
//! connection proved stable (`links` decides both), so a broker that accepts and then
//! drops every connection opens it like an unreachable one.
//!
//! Pure: time comes in as a parameter.

use std::time::Duration;

use super::Tick;
use crate::producer::clock::later;

/// Where the breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BreakerState {
    /// Connections are attempted normally.
    Closed,
    /// Failing fast until `until`.
    Open { until: Tick },
    /// One trial connection may be made (`trial`: it has been started).
    HalfOpen { trial: bool },
}

/// A circuit breaker for one broker.
#[derive(Debug, Clone)]
pub(crate) struct Breaker {
    threshold: u32,
    recovery: Duration,
    failures: u32,
    state: BreakerState,
}

impl Breaker {
    /// A closed breaker that opens after `threshold` consecutive failures and stays open
    /// for `recovery`.
    pub(crate) fn new(threshold: u32, recovery: Duration) -> Self {
        Breaker { threshold: threshold.max(1), recovery, failures: 0, state: BreakerState::Closed }
    }

    /// Where it stands at `now` (an open breaker whose time is up reads as half-open).
    pub(crate) fn state(&self, now: Tick) -> BreakerState {
        match self.state {
            BreakerState::Open { until } if now >= until => BreakerState::HalfOpen { trial: false },
            s => s,
        }
    }

    /// Consecutive failures so far.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }

    /// True while failing fast: batches for this broker fail instead of waiting.
    pub(crate) fn is_open(&self, now: Tick) -> bool {
        matches!(self.state(now), BreakerState::Open { .. })
    }

    /// Asks to start a connection attempt at `now`. Closed: yes. Open: no. Half-open: yes
    /// for the first (trial) attempt only, until that trial ends.
    pub(crate) fn try_attempt(&mut self, now: Tick) -> bool {
        match self.state(now) {
            BreakerState::Closed => true,
            BreakerState::Open { .. } | BreakerState::HalfOpen { trial: true } => false,
            BreakerState::HalfOpen { trial: false } => {
                self.state = BreakerState::HalfOpen { trial: true };
                true
            }
        }
    }

    /// A connection attempt succeeded and proved stable: the breaker closes, the count
    /// starts over.
    #[cfg(test)]
    pub(crate) fn on_success(&mut self) {
        self.on_connected();
        self.on_stable();
    }

    /// A connection opened: the breaker closes (batches stop failing fast), but the count
    /// of consecutive failures stays until the connection proves stable: if it is lost
    /// at once, that counts as one more failure (and a failed trial reopens it).
    pub(crate) fn on_connected(&mut self) {
        self.state = BreakerState::Closed;
    }

    /// A connection stayed up long enough to be called healthy: the count starts over.
    pub(crate) fn on_stable(&mut self) {
        self.failures = 0;
    }

    /// A connection attempt failed at `now`. Returns true if the breaker (re)opened.
    pub(crate) fn on_failure(&mut self, now: Tick) -> bool {
        self.failures = self.failures.saturating_add(1);
        let reopen = match self.state(now) {
            BreakerState::HalfOpen { .. } => true,
            BreakerState::Closed => self.failures >= self.threshold,
            BreakerState::Open { .. } => false,
        };
        if reopen {
            self.open(now);
        }
        reopen
    }

    /// Opens at once (a refusal that retrying soon cannot heal, e.g. a refused certificate).
    pub(crate) fn open(&mut self, now: Tick) {
        self.state = BreakerState::Open { until: later(now, self.recovery) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECOVERY: Duration = Duration::from_secs(10);

    #[test]
    fn it_opens_after_the_threshold_and_fails_fast_inside_the_recovery_window() {
        let t0 = Tick::now();
        let mut b = Breaker::new(3, RECOVERY);
        assert!(!b.on_failure(t0));
        assert!(!b.on_failure(t0));
        assert!(b.try_attempt(t0), "closed below the threshold");
        assert!(b.on_failure(t0), "the third failure opens it");
        for dt in [0, 1, 5, 9] {
            let t = t0 + Duration::from_secs(dt);
            assert!(b.is_open(t), "open {dt} s in");
            assert!(!b.try_attempt(t), "no attempt {dt} s in");
        }
        assert_eq!(b.state(t0), BreakerState::Open { until: t0 + RECOVERY });
    }

    #[test]
    fn after_the_recovery_time_exactly_one_trial_connection_is_allowed() {
        let t0 = Tick::now();
        let mut b = Breaker::new(1, RECOVERY);
        b.on_failure(t0);
        let later = t0 + RECOVERY;
        assert!(!b.is_open(later), "half-open: batches wait for the trial instead of failing");
        assert!(b.try_attempt(later), "the trial");
        assert!(!b.try_attempt(later), "a second attempt while the trial runs");
        assert!(!b.try_attempt(later + Duration::from_secs(1)));
        b.on_success();
        assert_eq!(b.state(later), BreakerState::Closed);
        assert_eq!(b.failures(), 0);
        assert!(b.try_attempt(later) && b.try_attempt(later), "closed: every slot connects");
    }

    #[test]
    fn a_failed_trial_reopens_it_for_another_recovery_time() {
        let t0 = Tick::now();
        let mut b = Breaker::new(5, RECOVERY);
        b.open(t0);
        let t1 = t0 + RECOVERY + Duration::from_secs(1);
        assert!(b.try_attempt(t1));
        assert!(b.on_failure(t1), "a failed trial reopens at once, whatever the threshold");
        assert!(b.is_open(t1 + RECOVERY - Duration::from_millis(1)));
        assert!(!b.try_attempt(t1 + Duration::from_secs(5)));
        assert!(b.try_attempt(t1 + RECOVERY), "the next trial after another recovery time");
    }
}
