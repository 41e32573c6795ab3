//! Feeds arbitrary bytes to the record batch decoders: `RecordBatch::from_bytes` followed
//! by `records`, and `RecordBatch::split_all`. Must never panic.
//!
//! The CRC-32C makes random inputs almost always fail early; to reach the record decoder
//! the target also tries the input with its CRC fixed up (bytes 13..17 rewritten to the
//! CRC of bytes 17..end), the way a buggy or hostile peer could send it.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use qwire::protocol::RecordBatch;

const DECOMPRESS_LIMIT: usize = 1 << 20;

fn decode(bytes: Bytes) {
    if let Ok(batch) = RecordBatch::from_bytes(bytes.clone()) {
        let h = batch.header();
        let _ = (h.total_len(), h.is_idempotent());
        if let Ok(records) = batch.records(DECOMPRESS_LIMIT) {
            assert_eq!(records.len() as u64, u64::from(h.record_count));
        }
    }
    if let Ok(batches) = RecordBatch::split_all(bytes.clone()) {
        let total: usize = batches.iter().map(|b| b.as_bytes().len()).sum();
        assert_eq!(total, bytes.len());
    }
}

fuzz_target!(|data: &[u8]| {
    decode(Bytes::copy_from_slice(data));
    if data.len() >= 17 {
        let mut fixed = data.to_vec();
        let crc = crc32c(&fixed[17..]);
        fixed[13..17].copy_from_slice(&crc.to_be_bytes());
        decode(Bytes::from(fixed));
    }
});

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bitwise: slow but dependency-free.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82f6_3b78 } else { crc >> 1 };
        }
    }
    !crc
}
