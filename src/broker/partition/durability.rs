//! Where durability stands, as published by the flusher, and the rule that decides whether
//! a batch waiting for acks=all is durable, pending, or lost to a failure. Pure.

use std::collections::VecDeque;
use std::sync::Arc;

/// Cuts remembered for waiters from older generations. A waiter older than all of them
/// gets an error (its batch may have been cut): with cuts that rare, only a waiter stuck
/// behind this many failed fsyncs could see it.
const MAX_CUTS: usize = 64;

/// A cut made by in-place recovery: it started `generation` and cut the log to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cut {
    generation: u64,
    to: i64,
}

/// Where durability stands: everything below `end` of the current `generation` is
/// fsync'd.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Durability {
    /// Offsets below this are on stable storage.
    pub end: i64,
    /// Bumped by every in-place recovery (a cut back to the durable end).
    pub generation: u64,
    /// An fsync (or a write that could not be undone) failed: the log refuses writes and
    /// what is past `end` will be cut.
    pub failed: bool,
    /// Number of failures so far (failed fsyncs and recoveries that cut something).
    pub failures: u64,
    /// Message of the latest failure.
    pub last_error: Option<Arc<str>>,
    cuts: VecDeque<Cut>,
}

/// What [`Durability::verdict`] says about a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Durable: answer success.
    Durable,
    /// Not yet: wait for the next change.
    Pending,
    /// The log failed before the batch was durable; it will be cut.
    Failed,
    /// The batch was cut (the cut went to the given offset).
    Cut(i64),
}

impl Durability {
    /// Nothing failed, everything below `end` durable, generation 0.
    pub(super) fn new(end: i64) -> Durability {
        Durability { end, ..Durability::default() }
    }

    /// Whether the batch ending at `end`, appended in `generation`, is durable.
    pub(super) fn verdict(&self, end: i64, generation: u64) -> Verdict {
        if generation > self.generation {
            // Appended after a cut that is not published yet.
            return Verdict::Pending;
        }
        if generation < self.generation {
            // Cuts since its generation: it survived only if it lay below all of them
            // (a cut goes to the durable end, so it was durable then).
            let Some(oldest) = self.cuts.front() else { return Verdict::Cut(self.end) };
            if oldest.generation > generation + 1 {
                return Verdict::Cut(oldest.to);
            }
            let lowest = self.cuts.iter().filter(|c| c.generation > generation).map(|c| c.to).min();
            return match lowest {
                Some(to) if end > to => Verdict::Cut(to),
                _ => Verdict::Durable,
            };
        }
        if self.end >= end {
            Verdict::Durable
        } else if self.failed {
            Verdict::Failed
        } else {
            Verdict::Pending
        }
    }

    /// Records a failure: writes are refused until a cut.
    pub(super) fn fail(&mut self, message: String) {
        self.failed = true;
        self.failures += 1;
        self.last_error = Some(Arc::from(message));
    }

    /// Records an in-place recovery that cut the log to `to` and started `generation`.
    pub(super) fn cut(&mut self, to: i64, generation: u64) {
        self.end = to;
        self.generation = generation;
        self.failed = false;
        self.cuts.push_back(Cut { generation, to });
        while self.cuts.len() > MAX_CUTS {
            self.cuts.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_durable_only_in_its_own_generation_or_below_every_cut_since() {
        let mut d = Durability::new(0);
        assert_eq!(d.verdict(5, 0), Verdict::Pending);
        d.end = 5;
        assert_eq!(d.verdict(5, 0), Verdict::Durable);
        assert_eq!(d.verdict(9, 0), Verdict::Pending);
        d.fail("fsync failed".into());
        assert_eq!(d.verdict(9, 0), Verdict::Failed);
        assert_eq!(d.verdict(5, 0), Verdict::Durable);
        d.cut(5, 1);
        // Offsets 5..9 are reused by generation 1 and made durable: generation 0's batch
        // is still cut, generation 1's is durable.
        d.end = 12;
        assert_eq!(d.verdict(9, 0), Verdict::Cut(5));
        assert_eq!(d.verdict(5, 0), Verdict::Durable);
        assert_eq!(d.verdict(9, 1), Verdict::Durable);
        // A second cut below the first: the lowest cut since the batch's generation counts.
        d.fail("again".into());
        d.cut(3, 2);
        assert_eq!(d.verdict(5, 0), Verdict::Cut(3));
        assert_eq!(d.verdict(4, 1), Verdict::Cut(3));
        assert_eq!(d.verdict(3, 1), Verdict::Durable);
        // Not yet published generation: wait.
        assert_eq!(d.verdict(1, 3), Verdict::Pending);
    }

    #[test]
    fn a_waiter_older_than_every_remembered_cut_gets_an_error() {
        let mut d = Durability::new(10);
        for g in 1..=(MAX_CUTS as u64 + 2) {
            d.cut(10, g);
        }
        assert!(matches!(d.verdict(1, 0), Verdict::Cut(_)));
        assert_eq!(d.verdict(10, MAX_CUTS as u64), Verdict::Durable);
    }
}
