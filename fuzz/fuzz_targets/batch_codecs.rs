//! The record decoders behind each codec. The input (after one control byte) is used
//! three ways, for every codec:
//! - compressed with the codec, then decompressed: must give the input back;
//! - as a records section compressed with the codec inside a batch with a valid header and
//!   CRC (record count from the control byte): `validate_records` (what the broker runs
//!   before appending) and `records` (what a consumer runs) must not panic and must
//!   accept exactly the same batches;
//! - as already-compressed bytes handed to the decompressor: must not panic and must
//!   respect the output limit.

#![no_main]

use bytes::{BufMut, Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use qwire::protocol::{Compression, RecordBatch};

const LIMIT: usize = 1 << 20;

fn batch_with_section(codec: Compression, section: &[u8], record_count: u32) -> Bytes {
    let mut b = BytesMut::with_capacity(57 + section.len());
    b.put_i64(0); // base_offset
    b.put_u32((45 + section.len()) as u32); // batch_length
    b.put_u8(1); // magic
    b.put_u32(0); // crc, filled below
    b.put_u16(codec.id());
    b.put_u32(record_count.wrapping_sub(1));
    b.put_i64(1_700_000_000_000);
    b.put_i64(1_700_000_000_000);
    b.put_i64(-1);
    b.put_i16(-1);
    b.put_i32(-1);
    b.put_u32(record_count);
    b.put_slice(section);
    let crc = crc32c::crc32c(&b[17..]);
    b[13..17].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else { return };
    let record_count = u32::from(control % 64) + 1;
    for codec in Compression::ALL {
        let mut compressed = Vec::new();
        codec.compress(input, None, &mut compressed);
        let back = codec.decompress(&compressed, input.len().max(1)).expect("decompressing what we compressed");
        assert_eq!(back, input, "{} round trip", codec.name());

        let batch = batch_with_section(codec, &compressed, record_count);
        if let Ok(b) = RecordBatch::from_bytes(batch) {
            let validated = b.validate_records(LIMIT);
            let decoded = b.records(LIMIT);
            if let Ok(records) = &decoded {
                assert_eq!(records.len() as u32, record_count);
            }
            // The broker's pre-append check and the consumer's decoder agree.
            assert_eq!(validated.is_ok(), decoded.is_ok(), "validate_records {validated:?}, records {decoded:?}");
        }

        if let Ok(out) = codec.decompress(input, 4096) {
            assert!(out.len() <= 4096, "{} ignored the output limit", codec.name());
        }
    }
});
