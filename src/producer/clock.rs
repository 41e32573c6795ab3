//! One cheap clock read per record.
//!
//! `quanta` reads the TSC (a few ns) where `clock_gettime` costs ~30 ns on the VMs this was
//! measured on; a record needs both a monotonic instant (queue time, latency, delivery
//! timeout) and a wall-clock timestamp, so both come from the same read: the timestamp is
//! a wall-clock base plus the TSC time elapsed since it. The driver rebases every
//! [`REBASE_EVERY`] so NTP adjustments are followed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

/// A monotonic instant from the TSC.
pub(crate) type Tick = quanta::Instant;

/// How far ahead a deadline that "never" comes is put: about a century. [`later`] never
/// goes further, so every deadline the producer computes is representable.
pub(crate) const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `t + d` without overflow: a deadline beyond what a `Tick` holds (a `Duration::MAX`
/// timeout, say) becomes the furthest representable one within [`NEVER`] of `t`, which is
/// never reached in practice. `Tick + Duration` panics instead.
pub(crate) fn later(t: Tick, d: Duration) -> Tick {
    let mut d = d.min(NEVER);
    loop {
        if let Some(x) = t.checked_add(d) {
            return x;
        }
        d /= 2;
    }
}

/// How often the wall-clock base is refreshed.
pub(crate) const REBASE_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone, Copy)]
struct Base {
    tick: Tick,
    ms: i64,
}

/// Wall-clock milliseconds for TSC instants.
pub(crate) struct WallClock {
    base: ArcSwap<Base>,
}

fn wall_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl WallClock {
    pub(crate) fn new() -> Self {
        WallClock { base: ArcSwap::from_pointee(Base { tick: Tick::now(), ms: wall_ms() }) }
    }

    /// The wall-clock time (ms since the Unix epoch) at `t`.
    pub(crate) fn ms_at(&self, t: Tick) -> i64 {
        let b = self.base.load();
        b.ms + t.saturating_duration_since(b.tick).as_millis() as i64
    }

    /// Takes a new base if the current one is older than [`REBASE_EVERY`].
    pub(crate) fn rebase_if_due(&self, now: Tick) {
        if now.saturating_duration_since(self.base.load().tick) >= REBASE_EVERY {
            self.base.store(std::sync::Arc::new(Base { tick: Tick::now(), ms: wall_ms() }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_never_overflows() {
        let t = Tick::now();
        assert_eq!(later(t, Duration::from_secs(5)), t + Duration::from_secs(5));
        let far = later(t, Duration::MAX);
        assert!(far > t + Duration::from_secs(50 * 365 * 24 * 3600));
        assert!(later(far, Duration::MAX) >= far, "from a far instant too");
    }

    #[test]
    fn timestamps_follow_the_wall_clock() {
        let c = WallClock::new();
        let t = Tick::now();
        assert!((c.ms_at(t) - wall_ms()).abs() < 50);
        std::thread::sleep(Duration::from_millis(20));
        let t2 = Tick::now();
        assert!(c.ms_at(t2) - c.ms_at(t) >= 19);
    }
}
