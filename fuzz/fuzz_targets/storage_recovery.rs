//! Writes the input as partition log files and opens them with `PartitionLog::open`, the
//! broker's crash recovery. Must never panic; when the open succeeds, every offset of the
//! log must be readable or reported corrupt, an append must continue at the end offset,
//! and reopening must keep exactly what is there (recovery never cuts data it accepted).
//!
//! The first input byte chooses the layout:
//! - bit 0: fix up the CRC of every batch found by walking the lengths;
//! - bit 1: also make the base offsets contiguous (so recovery gets past the offset check);
//! - bit 2: the data is an older, sealed segment followed by an empty newest segment;
//! - bit 3: the next two bytes give the length of an `.index` file cut from the front;
//! - bits 4-7: segment size (0 → 1 batch per segment, else `n * 256` bytes), which also
//!   sets the index interval.

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use qwire::broker::log::{LogConfig, PartitionLog};
use qwire::protocol::batch::{BatchHeader, BATCH_HEADER_LEN};
use qwire::protocol::{BatchBuilder, Compression, ProducerStamp, Record};

fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
        base.join(format!("qwire-fuzz-recovery-{}", std::process::id()))
    })
}

fn segment_name(base: i64, suffix: &str) -> String {
    format!("{base:020}{suffix}")
}

/// Walks `batch_length` fields and rewrites CRCs (and, with `offsets`, base offsets)
/// so recovery sees structurally plausible batches. Returns the offset after the last one.
fn fix_up(log: &mut [u8], offsets: bool) -> i64 {
    let mut pos = 0usize;
    let mut next = 0i64;
    while log.len() - pos >= BATCH_HEADER_LEN {
        let len = u32::from_be_bytes(log[pos + 8..pos + 12].try_into().unwrap()) as usize;
        let total = 12 + len;
        if len < BATCH_HEADER_LEN - 12 || total > log.len() - pos {
            break;
        }
        if offsets {
            log[pos..pos + 8].copy_from_slice(&next.to_be_bytes());
        }
        let delta = u32::from_be_bytes(log[pos + 19..pos + 23].try_into().unwrap());
        next = next.saturating_add(i64::from(delta) + 1);
        let crc = crc32c::crc32c(&log[pos + 17..pos + total]);
        log[pos + 13..pos + 17].copy_from_slice(&crc.to_be_bytes());
        pos += total;
    }
    next
}

fn valid_batch() -> (bytes::Bytes, BatchHeader) {
    let mut b = BatchBuilder::new();
    for i in 0..3 {
        b.push(&Record {
            timestamp: 1_700_000_000_000 + i,
            key: Some(bytes::Bytes::from_static(b"k")),
            value: Some(bytes::Bytes::from(vec![i as u8; 30])),
            headers: vec![],
        });
    }
    let bytes = b.seal(Compression::None, None, ProducerStamp::NONE);
    let h = BatchHeader::parse(&bytes).unwrap().unwrap();
    (bytes, h)
}

/// Reads every offset from start to end; returns whether the whole log was readable.
fn read_through(log: &PartitionLog) -> bool {
    let (start, end) = (log.log_start_offset(), log.end_offset());
    let mut offset = start;
    while offset < end {
        let got = match log.read(offset, 4096) {
            Ok(b) => b,
            Err(_) => return false,
        };
        assert!(!got.is_empty(), "empty read at {offset} inside [{start}, {end})");
        let mut pos = 0;
        let mut last = offset;
        while pos < got.len() {
            let h = BatchHeader::parse(&got[pos..]).unwrap().expect("whole batches");
            assert!(pos + h.total_len() <= got.len(), "read returned a partial batch");
            qwire::protocol::batch::check_batch(&got[pos..pos + h.total_len()])
                .expect("a served batch passes its CRC")
                .expect("whole");
            last = h.last_offset();
            pos += h.total_len();
        }
        assert!(last >= offset, "read at {offset} returned batches ending at {last}");
        offset = last + 1;
    }
    true
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let dir = scratch();
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let (index, rest) = if mode & 8 != 0 && rest.len() >= 2 {
        let n = (usize::from(rest[0]) << 8 | usize::from(rest[1])).min(rest.len() - 2);
        (Some(&rest[2..2 + n]), &rest[2 + n..])
    } else {
        (None, rest)
    };
    let mut log_bytes = rest.to_vec();
    let next = if mode & 1 != 0 { fix_up(&mut log_bytes, mode & 2 != 0) } else { 0 };
    std::fs::write(dir.join(segment_name(0, ".log")), &log_bytes).unwrap();
    if let Some(index) = index {
        std::fs::write(dir.join(segment_name(0, ".index")), index).unwrap();
    }
    if mode & 4 != 0 && next > 0 {
        std::fs::write(dir.join(segment_name(next, ".log")), b"").unwrap();
    }
    let size_bits = u64::from(mode >> 4);
    let config = LogConfig {
        segment_bytes: size_bits * 256,
        index_interval_bytes: (size_bits as u32) * 64,
        ..LogConfig::default()
    };
    let Ok((mut log, _report)) = PartitionLog::open(dir, config.clone()) else { return };
    let readable = read_through(&log);
    let end = log.end_offset();
    let (batch, header) = valid_batch();
    let Ok(info) = log.append(&batch, &header) else { return };
    assert_eq!(info.base_offset, end);
    assert_eq!(log.end_offset(), end + 3);
    if log.flush().is_err() {
        return;
    }
    let start = log.log_start_offset();
    drop(log);
    let (log, report) = PartitionLog::open(dir, config).expect("reopening what recovery accepted");
    assert_eq!(report.truncated_bytes, 0, "recovery cut data it accepted before: {report:?}");
    assert_eq!((log.log_start_offset(), log.end_offset()), (start, end + 3));
    let got = log.read(end, 1 << 20).expect("the appended batch is readable");
    assert_eq!(&got[8..], &batch[8..], "the appended batch reads back as written");
    if readable {
        assert!(read_through(&log));
    }
});
