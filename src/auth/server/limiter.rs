//! Failed authentication attempts per source address: a token bucket of failures.
//!
//! Each address may fail `burst` times in a row; a failure allowance comes back every
//! `refill_every`. An attempt takes an allowance when it starts and gives it back when it
//! succeeds, so attempts in progress count too (started together, at most `burst` pass). While an address has no allowance left, its new attempts are refused
//! (`AUTHENTICATION_THROTTLED`) before any credential is looked at, so a password-guessing
//! flood costs the broker almost nothing and learns nothing. Successful attempts and
//! connections that are already authenticated are not affected.
//!
//! IPv6 addresses count per /64 (one host usually holds a whole /64); IPv4-mapped IPv6
//! addresses count as their IPv4 address. The table is bounded: past `max_tracked`
//! addresses, those with a full allowance are forgotten first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Default failures allowed in a row per address.
pub const DEFAULT_BURST: u32 = 10;
/// Default time for one failure allowance to come back.
pub const DEFAULT_REFILL: Duration = Duration::from_secs(1);
/// Default most addresses tracked at once.
pub const DEFAULT_MAX_TRACKED: usize = 65_536;

/// Limiter settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimiterConfig {
    /// Failures allowed in a row (at least 1). Default 10.
    pub burst: u32,
    /// Time for one allowance to come back. Default 1 s.
    pub refill_every: Duration,
    /// Most addresses tracked. Default 65 536.
    pub max_tracked: usize,
}

impl Default for LimiterConfig {
    fn default() -> Self {
        LimiterConfig { burst: DEFAULT_BURST, refill_every: DEFAULT_REFILL, max_tracked: DEFAULT_MAX_TRACKED }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    allowance: u32,
    since: Instant,
}

/// Failure allowances per source address.
#[derive(Debug)]
pub struct FailureLimiter {
    config: LimiterConfig,
    buckets: HashMap<IpAddr, Bucket>,
}

/// The address an allowance is kept for: IPv6 per /64 (one host usually holds a whole
/// /64), IPv4-mapped IPv6 as its IPv4 address. Also the broker's per-source count of
/// connections waiting to authenticate.
pub(crate) fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut seg = v6.segments();
                seg[4..].fill(0);
                IpAddr::V6(seg.into())
            }
        },
    }
}

impl FailureLimiter {
    /// A limiter with `config` (a burst of 0 counts as 1).
    pub fn new(mut config: LimiterConfig) -> FailureLimiter {
        config.burst = config.burst.max(1);
        config.refill_every = config.refill_every.max(Duration::from_millis(1));
        FailureLimiter { config, buckets: HashMap::new() }
    }

    fn refill(config: &LimiterConfig, b: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(b.since);
        let periods = elapsed.as_nanos() / config.refill_every.as_nanos();
        if periods == 0 {
            return;
        }
        let back = u32::try_from(periods).unwrap_or(u32::MAX);
        b.allowance = b.allowance.saturating_add(back).min(config.burst);
        b.since = if b.allowance == config.burst { now } else { b.since + config.refill_every * back };
    }

    /// Whether `ip` may make an attempt now.
    pub fn allows(&mut self, ip: IpAddr, now: Instant) -> bool {
        let config = self.config;
        match self.buckets.get_mut(&key(ip)) {
            None => true,
            Some(b) => {
                Self::refill(&config, b, now);
                b.allowance > 0
            }
        }
    }

    /// Starts an attempt from `ip`: takes one allowance now, or refuses (`false`) when none
    /// is left. Taking it at the start, not when the attempt fails, is what bounds
    /// concurrent attempts: a thousand connections starting SCRAM at once from one address
    /// get `burst` of them through, not a thousand. A successful attempt gives its
    /// allowance back ([`FailureLimiter::give_back`]); a failed or abandoned one keeps it.
    pub fn try_begin(&mut self, ip: IpAddr, now: Instant) -> bool {
        if !self.allows(ip, now) {
            return false;
        }
        self.record_failure(ip, now);
        true
    }

    /// Returns the allowance an attempt from `ip` took, once it succeeded.
    pub fn give_back(&mut self, ip: IpAddr, now: Instant) {
        let config = self.config;
        if let Some(b) = self.buckets.get_mut(&key(ip)) {
            Self::refill(&config, b, now);
            b.allowance = (b.allowance + 1).min(config.burst);
        }
    }

    /// Counts a failed attempt from `ip`.
    pub fn record_failure(&mut self, ip: IpAddr, now: Instant) {
        let k = key(ip);
        if !self.buckets.contains_key(&k) && self.buckets.len() >= self.config.max_tracked {
            self.evict(now);
        }
        let config = self.config;
        let b = self.buckets.entry(k).or_insert(Bucket { allowance: config.burst, since: now });
        Self::refill(&config, b, now);
        b.allowance = b.allowance.saturating_sub(1);
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }

    fn evict(&mut self, now: Instant) {
        let config = self.config;
        self.buckets.retain(|_, b| {
            Self::refill(&config, b, now);
            b.allowance < config.burst
        });
        if self.buckets.len() >= config.max_tracked {
            // Every tracked address is still limited: forget the one closest to full.
            if let Some(k) = self.buckets.iter().max_by_key(|(_, b)| b.allowance).map(|(k, _)| *k) {
                self.buckets.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn limiter(burst: u32) -> FailureLimiter {
        FailureLimiter::new(LimiterConfig { burst, refill_every: Duration::from_secs(1), max_tracked: 4 })
    }

    #[test]
    fn an_address_is_throttled_after_its_burst_and_recovers_over_time() {
        let mut l = limiter(3);
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        for _ in 0..3 {
            assert!(l.allows(a, t0));
            l.record_failure(a, t0);
        }
        assert!(!l.allows(a, t0), "three failures used the burst");
        assert!(!l.allows(a, t0 + Duration::from_millis(999)));
        assert!(l.allows(a, t0 + Duration::from_secs(1)), "one allowance back after a second");
        l.record_failure(a, t0 + Duration::from_secs(1));
        assert!(!l.allows(a, t0 + Duration::from_millis(1500)));
        // Long quiet: back to the full burst, not more.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(l.allows(a, later));
            l.record_failure(a, later);
        }
        assert!(!l.allows(a, later));
    }

    /// Review finding: the allowance was checked at the start and taken at the failure, so
    /// attempts started together all passed the check.
    #[test]
    fn concurrent_attempts_each_take_an_allowance_at_their_start() {
        let mut l = limiter(3);
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        let started = (0..1000).filter(|_| l.try_begin(a, t0)).count();
        assert_eq!(started, 3, "the burst bounds attempts in progress, not only failures");
        // One succeeds: its allowance comes back, and one more attempt may start.
        l.give_back(a, t0);
        assert!(l.try_begin(a, t0));
        assert!(!l.try_begin(a, t0));
        // Successes never add beyond the burst.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..10 {
            assert!(l.try_begin(a, later));
            l.give_back(a, later);
        }
        assert_eq!((0..10).filter(|_| l.try_begin(a, later)).count(), 3);
    }

    #[test]
    fn other_addresses_are_not_affected() {
        let mut l = limiter(1);
        let t0 = Instant::now();
        l.record_failure(ip("192.0.2.1"), t0);
        assert!(!l.allows(ip("192.0.2.1"), t0));
        assert!(l.allows(ip("192.0.2.2"), t0));
        assert!(l.allows(ip("2001:db8::1"), t0));
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let mut l = limiter(2);
        let t0 = Instant::now();
        l.record_failure(ip("2001:db8:1:2::1"), t0);
        l.record_failure(ip("2001:db8:1:2:ffff::9"), t0);
        assert!(!l.allows(ip("2001:db8:1:2::77"), t0), "same /64");
        assert!(l.allows(ip("2001:db8:1:3::1"), t0), "another /64");
        l.record_failure(ip("::ffff:192.0.2.9"), t0);
        l.record_failure(ip("192.0.2.9"), t0);
        assert!(!l.allows(ip("192.0.2.9"), t0));
    }

    #[test]
    fn the_table_is_bounded() {
        let mut l = limiter(2);
        let t0 = Instant::now();
        for i in 0..100u8 {
            l.record_failure(IpAddr::from([10, 0, 0, i]), t0);
            assert!(l.tracked() <= 4);
        }
        // The newest address is tracked.
        l.record_failure(IpAddr::from([10, 0, 0, 99]), t0);
        assert!(!l.allows(IpAddr::from([10, 0, 0, 99]), t0));
        // Addresses back to a full allowance are the first to go.
        let later = t0 + Duration::from_secs(10);
        l.record_failure(IpAddr::from([10, 1, 0, 0]), later);
        assert_eq!(l.tracked(), 1);
    }
}
