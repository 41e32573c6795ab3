//! Where a record's outcome goes: a `send`/`enqueue` future, a user callback, or one slot
//! of a `send_batch`.
//!
//! Every record gets exactly one outcome, whatever happens:
//! - [`Delivery::complete`] consumes the delivery, so nothing can report a record twice;
//! - a delivery dropped without an outcome (the driver ended, panicked, or dropped a batch
//!   by mistake) reports [`stopped_error`] from its `Drop`, so no future waits forever and
//!   no callback is silently skipped;
//! - a user callback runs inside `catch_unwind`: a panicking callback is logged and
//!   forgotten, it does not take the driver (and every other record) down with it;
//! - a `send_batch` whose slots are not all filled when the last slot is dropped reports
//!   the outcomes it already has and [`stopped_error`] for the others.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::error::{ErrorKind, Persistence, ProduceError};
use super::record::RecordMetadata;

/// A completion callback.
pub type Callback = Box<dyn FnOnce(Result<RecordMetadata, ProduceError>) + Send + 'static>;

/// One record's outcome.
pub(crate) type Outcome = Result<RecordMetadata, ProduceError>;

/// The outcome of a record whose delivery was dropped before it got one: the producer
/// stopped (or lost track of it), so it may have been written.
pub(crate) fn stopped_error() -> ProduceError {
    ProduceError::new(
        ErrorKind::Closed,
        Persistence::PossiblyPersisted,
        "the producer stopped before reporting this record",
    )
}

/// Results of a batch send, one per record in the order given.
pub(crate) struct BatchResults {
    /// Outcomes so far and how many are still missing.
    slots: Mutex<(Vec<Option<Outcome>>, usize)>,
    done: Mutex<Option<oneshot::Sender<Vec<Outcome>>>>,
}

impl BatchResults {
    pub(crate) fn new(n: usize) -> (Arc<Self>, oneshot::Receiver<Vec<Outcome>>) {
        let (tx, rx) = oneshot::channel();
        let me = BatchResults { slots: Mutex::new(((0..n).map(|_| None).collect(), n)), done: Mutex::new(Some(tx)) };
        (Arc::new(me), rx)
    }

    fn set(&self, i: usize, r: Outcome) {
        let mut g = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if g.0[i].is_none() {
            g.0[i] = Some(r);
            g.1 -= 1;
        }
        if g.1 == 0 {
            let results = std::mem::take(&mut g.0).into_iter().map(|r| r.expect("all set")).collect();
            drop(g);
            self.send(results);
        }
    }

    fn send(&self, results: Vec<Outcome>) {
        if let Some(tx) = self.done.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(results);
        }
    }
}

impl Drop for BatchResults {
    /// The last slot is gone: report what is known, and "stopped" for the rest.
    fn drop(&mut self) {
        let slots = std::mem::take(&mut self.slots.get_mut().unwrap_or_else(|p| p.into_inner()).0);
        if !slots.is_empty() {
            self.send(slots.into_iter().map(|r| r.unwrap_or_else(|| Err(stopped_error()))).collect());
        }
    }
}

enum Sink {
    Future(oneshot::Sender<Outcome>),
    Callback(Callback),
    Batch(Arc<BatchResults>, usize),
}

impl Sink {
    fn complete(self, r: Outcome) {
        match self {
            Sink::Future(tx) => {
                let _ = tx.send(r);
            }
            Sink::Callback(cb) => {
                if catch_unwind(AssertUnwindSafe(|| cb(r))).is_err() {
                    tracing::error!("a producer callback panicked; the producer goes on");
                }
            }
            Sink::Batch(b, i) => b.set(i, r),
        }
    }
}

/// Where one record's outcome goes; completes exactly once (see the module docs).
pub(crate) struct Delivery(Option<Sink>);

impl Delivery {
    /// Outcome to a `send`/`enqueue` future.
    pub(crate) fn future(tx: oneshot::Sender<Outcome>) -> Self {
        Delivery(Some(Sink::Future(tx)))
    }

    /// Outcome to a user callback.
    pub(crate) fn callback(cb: Callback) -> Self {
        Delivery(Some(Sink::Callback(cb)))
    }

    /// Outcome to slot `i` of a batch send.
    pub(crate) fn batch(results: Arc<BatchResults>, i: usize) -> Self {
        Delivery(Some(Sink::Batch(results, i)))
    }

    /// Drops it without an outcome: the record was refused before it was enqueued and the
    /// caller gets the error directly.
    pub(crate) fn disarm(mut self) {
        self.0 = None;
    }

    /// Delivers the outcome (user callbacks run here, panics caught).
    pub(crate) fn complete(mut self, r: Outcome) {
        if let Some(s) = self.0.take() {
            s.complete(r);
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if let Some(s) = self.0.take() {
            s.complete(Err(stopped_error()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(offset: i64) -> RecordMetadata {
        RecordMetadata { topic: "t".into(), partition: 0, offset: Some(offset), timestamp: 0 }
    }

    #[test]
    fn batch_results_resolve_once_all_slots_are_set() {
        let (b, mut rx) = BatchResults::new(2);
        Delivery::batch(b.clone(), 1).complete(Err(ProduceError::new(
            ErrorKind::Closed,
            Persistence::NotPersisted,
            "x",
        )));
        assert!(rx.try_recv().is_err());
        Delivery::batch(b, 0).complete(Ok(md(1)));
        let r = rx.try_recv().unwrap();
        assert!(r[0].is_ok() && r[1].is_err());
    }

    #[test]
    fn a_dropped_batch_keeps_the_outcomes_already_known() {
        let (b, mut rx) = BatchResults::new(3);
        Delivery::batch(b.clone(), 0).complete(Ok(md(7)));
        let lost = Delivery::batch(b.clone(), 1);
        let never = Delivery::batch(b.clone(), 2);
        drop(b);
        drop(lost);
        assert!(rx.try_recv().is_err(), "one slot still open");
        drop(never);
        let r = rx.try_recv().unwrap();
        assert_eq!(r[0].as_ref().unwrap().offset, Some(7), "the acked record stays acked");
        for e in &r[1..] {
            let e = e.as_ref().unwrap_err();
            assert_eq!((e.kind(), e.persistence()), (ErrorKind::Closed, Persistence::PossiblyPersisted));
        }
    }

    #[test]
    fn a_dropped_delivery_reports_and_a_panicking_callback_is_contained() {
        let (tx, mut rx) = oneshot::channel();
        drop(Delivery::future(tx));
        assert_eq!(rx.try_recv().unwrap().unwrap_err().kind(), ErrorKind::Closed);
        let called = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let c = called.clone();
        drop(Delivery::callback(Box::new(move |r| {
            c.store(r.is_err(), std::sync::atomic::Ordering::SeqCst);
            panic!("user code")
        })));
        assert!(called.load(std::sync::atomic::Ordering::SeqCst), "the callback ran with an error");
    }
}
