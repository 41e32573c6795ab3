//! Batch buffers given back once their batch is acknowledged, for the next batches to
//! reuse (issue 15): otherwise every sealed batch (256 KiB in the benchmark) takes a fresh
//! allocation, whose pages may be new to the process.
//!
//! A buffer is kept only if nothing else holds it any more (`Bytes::try_into_mut`: QUIC
//! may still hold a batch it has not seen acknowledged; then it is simply dropped), and at
//! most [`MAX_SPARE`] are kept. Spare buffers are not charged against buffer memory: they
//! hold at most `MAX_SPARE` × 1.25 × the largest batch.

use bytes::{Bytes, BytesMut};

/// Most buffers kept.
pub(crate) const MAX_SPARE: usize = 4;

/// The spare buffers (the driver owns them; no lock).
#[derive(Debug, Default)]
pub(crate) struct SpareBuffers {
    bufs: Vec<BytesMut>,
}

impl SpareBuffers {
    /// Keeps the bytes of an acknowledged batch if nothing else holds them and there is
    /// room.
    pub(crate) fn give(&mut self, bytes: Bytes) {
        if self.bufs.len() < MAX_SPARE {
            if let Ok(b) = bytes.try_into_mut() {
                self.bufs.push(b);
            }
        }
    }

    /// A buffer with room for `need` bytes and at most a quarter more: a batch keeps its
    /// buffer until it is acknowledged, and buffer memory is charged for the records, so
    /// a much larger buffer would hold memory nobody is charged for (`seal` copies a
    /// batch out of a buffer more than a quarter too large anyway). When none fits and
    /// the spares are full, the oldest is dropped so that the spares follow the batch
    /// sizes in use.
    pub(crate) fn take(&mut self, need: usize) -> Option<BytesMut> {
        let fits = |cap: usize| cap >= need && cap <= need + need / 4;
        match self.bufs.iter().position(|b| fits(b.capacity())) {
            Some(i) => Some(self.bufs.swap_remove(i)),
            None => {
                if self.bufs.len() == MAX_SPARE {
                    self.bufs.remove(0);
                }
                None
            }
        }
    }

    /// Buffers kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.bufs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(cap: usize) -> Bytes {
        let mut b = BytesMut::with_capacity(cap);
        b.extend_from_slice(&vec![7u8; cap]);
        b.freeze()
    }

    #[test]
    fn only_unshared_buffers_are_kept_and_only_fitting_ones_reused() {
        let mut s = SpareBuffers::default();
        let shared = sealed(1000);
        let held = shared.clone();
        s.give(shared);
        assert_eq!(s.len(), 0, "still held elsewhere (QUIC has not released it)");
        drop(held);
        s.give(sealed(1000));
        assert_eq!(s.len(), 1);
        assert!(s.take(2000).is_none(), "too small");
        assert!(s.take(500).is_none(), "more than a quarter too large");
        let b = s.take(900).expect("fits");
        assert!(b.capacity() >= 900);
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn at_most_max_spare_are_kept_and_misfits_make_way() {
        let mut s = SpareBuffers::default();
        for _ in 0..MAX_SPARE + 3 {
            s.give(sealed(100));
        }
        assert_eq!(s.len(), MAX_SPARE);
        assert!(s.take(10_000).is_none());
        assert_eq!(s.len(), MAX_SPARE - 1, "the oldest misfit was dropped");
        s.give(sealed(10_000));
        assert!(s.take(10_000).is_some());
    }
}
