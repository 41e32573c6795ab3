//! Feeds arbitrary bytes to `Frame::decode` as a stream: decode until more bytes are
//! needed or framing is lost. Must never panic, must always make progress, and every
//! decoded frame must re-encode to exactly the bytes it was decoded from.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use qwire::protocol::Frame;

const MAX_FRAME: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.len();
        let start = data.len() - before;
        match Frame::decode(&mut buf, MAX_FRAME) {
            Ok(None) => {
                assert_eq!(buf.len(), before, "Ok(None) must consume nothing");
                break;
            }
            Ok(Some(frame)) => {
                let used = before - buf.len();
                assert_eq!(frame.encoded_len(), used);
                let mut out = BytesMut::new();
                frame.encode(&mut out);
                assert_eq!(&out[..], &data[start..start + used], "encoding is not canonical");
            }
            Err(e) if e.resumable => {
                assert!(buf.len() < before, "resumable error consumed nothing")
            }
            Err(_) => {
                assert_eq!(buf.len(), before, "fatal error must consume nothing");
                break;
            }
        }
    }
});
